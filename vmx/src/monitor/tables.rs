//! Monitor memory for control structures (second-stage tables, VMXON/VMCS or VMCB pages, permission maps, exit
//! stacks, channels), and the table pages of each sandbox's second stage: recorded so that a rebuild after a
//! recovery reuses them and the root stays the same, and so that later channel mappings come from them first.
//!
//! Lock order: `channels::CHANNELS`, then [`POOL`], then the tables, then the spares.

use super::layout::LOW_ALIAS;
use crate::backend;
use crate::stage2::{MemType, Perms, Stage2};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use questv_abi::hypercall as hc;
use questv_arch::paging::{phys_to_virt, TableMemory, PAGE_SIZE};
use questv_kernel::mm::kmem;
use questv_kernel::sync::IrqSpinlock;

/// Monitor memory for sandbox control structures, taken above [`LOW_ALIAS`]: a sandbox can then name their
/// real addresses, and touching one is a second-stage violation (below LOW_ALIAS the same guest-physical
/// address would only reach the sandbox's own memory).
pub(super) struct MonitorPool {
    next: u64,
    end: u64,
}

const POOL_BYTES: u64 = 4 << 20;

impl MonitorPool {
    pub(super) fn new() -> Result<MonitorPool, String> {
        let base = kmem::alloc_contiguous_from(POOL_BYTES / PAGE_SIZE, PAGE_SIZE, LOW_ALIAS)
            .ok_or("out of monitor memory for control structures")?;
        Ok(MonitorPool { next: base, end: base + POOL_BYTES })
    }

    /// `n` zeroed, contiguous pages.
    pub(super) fn pages(&mut self, n: u64) -> Result<u64, String> {
        if self.next + n * PAGE_SIZE > self.end {
            return Err(String::from("monitor pool exhausted"));
        }
        let p = self.next;
        self.next += n * PAGE_SIZE;
        // SAFETY: pool pages belong to the monitor (RAM, mapped at KERNEL_BASE + p).
        unsafe { core::ptr::write_bytes(phys_to_virt(p) as *mut u8, 0, (n * PAGE_SIZE) as usize) };
        Ok(p)
    }
}

impl TableMemory for MonitorPool {
    fn alloc_table(&mut self) -> Option<u64> {
        self.pages(1).ok()
    }
    fn table(&mut self, phys: u64) -> &mut [u64; 512] {
        // SAFETY: EPT table frames come from this pool and belong to the EPT being built.
        unsafe { kmem::phys_table(phys) }
    }
}

/// The monitor pool once the sandboxes are built (channels are allocated from it).
pub(super) static POOL: IrqSpinlock<Option<MonitorPool>> = IrqSpinlock::new(None);

/// Second-stage table pages of each sandbox, in allocation order (the root first): a rebuild after a
/// recovery reuses them in the same order, so the root — which the VMCS/VMCB names — stays the same.
static TABLES: IrqSpinlock<Vec<Vec<u64>>> = IrqSpinlock::new(Vec::new());
/// Table pages a rebuild no longer needed, per sandbox: channel mappings take them before the pool's (so
/// repeated recoveries do not drain the monitor pool). Taken after TABLES.
static SPARES: IrqSpinlock<Vec<Vec<u64>>> = IrqSpinlock::new(Vec::new());
/// Second-stage roots by sandbox.
static STAGE2_ROOTS: spin::Once<Vec<u64>> = spin::Once::new();

/// Table memory for one sandbox's second stage: reuses its old table pages (zeroed) before taking new ones
/// from the pool, and records every page it hands out.
pub(super) struct SandboxTables<'a> {
    pool: &'a mut MonitorPool,
    /// Old pages, in reverse allocation order (popped from the end).
    reuse: Vec<u64>,
    used: &'a mut Vec<u64>,
}

impl<'a> SandboxTables<'a> {
    /// Table memory for a first build: new pages only, recorded in `used`.
    pub(super) fn fresh(pool: &'a mut MonitorPool, used: &'a mut Vec<u64>) -> SandboxTables<'a> {
        SandboxTables { pool, reuse: Vec::new(), used }
    }
}

impl TableMemory for SandboxTables<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        let page = match self.reuse.pop() {
            Some(p) => {
                // SAFETY: a table page of this sandbox's second stage being rebuilt (its guest is not running).
                unsafe { core::ptr::write_bytes(phys_to_virt(p) as *mut u8, 0, PAGE_SIZE as usize) };
                p
            }
            None => self.pool.pages(1).ok()?,
        };
        self.used.push(page);
        Some(page)
    }
    fn table(&mut self, phys: u64) -> &mut [u64; 512] {
        // SAFETY: second-stage table frames come from monitor memory and belong to the table being built.
        unsafe { kmem::phys_table(phys) }
    }
}

/// After the first build: the pool, each sandbox's table pages (by sandbox) and its second-stage root.
pub(super) fn install(pool: MonitorPool, tables: Vec<Vec<u64>>, roots: Vec<u64>) {
    *SPARES.lock() = tables.iter().map(|_| Vec::new()).collect();
    *TABLES.lock() = tables;
    STAGE2_ROOTS.call_once(|| roots);
    *POOL.lock() = Some(pool);
}

/// Rebuild sandbox `sandbox`'s second stage in place: `build` gets table memory that hands out the old pages
/// first, in their allocation order, so the root comes out the same (checked). Pages no longer needed (the
/// channel mappings' tables) stay this sandbox's, as spares for later mappings.
pub(super) fn rebuild(pool: &mut MonitorPool, sandbox: u32, build: impl FnOnce(&mut SandboxTables) -> Result<Stage2, String>) -> Result<Stage2, String> {
    let mut reuse = core::mem::take(&mut TABLES.lock()[sandbox as usize]);
    reuse.reverse();
    let mut used = Vec::new();
    let mut tables = SandboxTables { pool, reuse, used: &mut used };
    let st2 = build(&mut tables)?;
    let left = core::mem::take(&mut tables.reuse);
    {
        let mut t = TABLES.lock();
        t[sandbox as usize] = used;
        SPARES.lock()[sandbox as usize].extend(left);
    }
    let root = STAGE2_ROOTS.get().map(|r| r[sandbox as usize]);
    if root != Some(st2.root()) {
        return Err(format!("second stage rebuilt at 0x{:x}, not at its root {:?}", st2.root(), root));
    }
    Ok(st2)
}

/// Map `bytes` of channel memory at `base` (its host address) into sandbox `e`'s second stage, read-write
/// (tables recorded as that sandbox's, spares first).
pub(super) fn map_channel(pool: &mut MonitorPool, e: u32, base: u64, bytes: u64) -> Result<(), i64> {
    let roots = STAGE2_ROOTS.get().ok_or(hc::ENOMEM)?;
    let format = backend::arch().stage2_format();
    let mut tables = TABLES.lock();
    let used = tables.get_mut(e as usize).ok_or(hc::EINVAL)?;
    let mut spares = SPARES.lock();
    let reuse = spares.get_mut(e as usize).map(core::mem::take).unwrap_or_default();
    let mut st2 = Stage2::from_root(roots[e as usize], format);
    let mut t = SandboxTables { pool, reuse, used };
    let r = st2.map_range(&mut t, base, base, bytes, Perms::RW, MemType::WriteBack, false).map_err(|_| hc::ENOMEM);
    if let Some(s) = spares.get_mut(e as usize) {
        *s = core::mem::take(&mut t.reuse);
    }
    r
}

/// Change the permissions of one 4 KiB page of sandbox `e`'s second stage (the NIC guard; the caller has
/// the core that runs `e` drop its cached translations).
pub(super) fn protect_page(e: u32, gpa: u64, perms: Perms) -> Result<(), String> {
    let roots = STAGE2_ROOTS.get().ok_or("no second stages yet")?;
    let &root = roots.get(e as usize).ok_or("no such sandbox")?;
    let mut pool = POOL.lock();
    let pool = pool.as_mut().ok_or("no monitor pool")?;
    Stage2::from_root(root, backend::arch().stage2_format()).protect(pool, gpa, perms).map_err(|e| format!("{e:?}"))
}

/// Remove the channel mapping of `bytes` at `base` from sandbox `e`'s second stage (its table pages stay;
/// the caller drops the cached translations of the core that runs `e`).
pub(super) fn unmap_channel(pool: &mut MonitorPool, e: u32, base: u64, bytes: u64) {
    let Some(roots) = STAGE2_ROOTS.get() else { return };
    let Some(&root) = roots.get(e as usize) else { return };
    let mut st2 = Stage2::from_root(root, backend::arch().stage2_format());
    for page in (base..base + bytes).step_by(PAGE_SIZE as usize) {
        st2.unmap_4k(pool, page);
    }
}
