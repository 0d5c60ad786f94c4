//! The VT build's monitor policy (paper §3.1–3.3), written once for both hardware backends: after the SMP
//! bring-up, carve one memory slice per core, load a pristine copy of this kernel into each slice, give each
//! its own second-stage table (EPT or NPT), and launch it as that core's sandbox. The root-mode mechanics
//! (VMX: VMXON/VMCS; SVM: VMCB/VMRUN) and the translation of exits into `questv_vmx::exit::Exit` are the
//! `vmx` crate's backends; this module decides layout and policy: what the sandboxes see and may touch (deny
//! by default: `questv_vmx::policy`), what a hypercall does (ABI: `questv_vmx::hypercall`), and what happens
//! to a sandbox that faults, hangs or attacks (it is stopped and reported; the others carry on). docs/vt.md
//! has the grant and exit tables.

use crate::bootinfo::{self, Module};
use crate::mm::kmem;
use crate::mm::memmap::Region;
use crate::{kprintln, result, sched, smp};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use questv_arch::paging::PAGE_SIZE;
use questv_arch::acpi_madt::Topology;
use questv_arch::{cpu, lapic, percpu};
use questv_vmx::amd::vmcb;
use crate::recovery::{self as rec, Component, CrashLoopRule, Decision, History, Policy};
use questv_vmx::backend::{self, Arch, Caps, GuestRegs, Verdict};
use questv_vmx::exit::{Exit, ExitKind, IoExit};
use questv_vmx::guest::{self, Source};
use questv_vmx::hypercall::{self as hc, info, SHARED_GPA, SHARED_SIZE};
use questv_vmx::intel::vmcs;
use questv_vmx::partition::{self, Plan};
use questv_vmx::policy::{self, Access, ApicWriteVerdict, PortVerdict, RefusalKind, Refusals};
use questv_vmx::stage2::{MemType, Perms, Stage2};

const GUEST_MODULES_FROM_TOP: u64 = 16 << 20;
const GUEST_MBI_FROM_TOP: u64 = 64 << 10;
/// Guest-physical layout of a sandbox (paper §3.2): the first 16 MiB of its slice appear at guest-physical 0
/// (the kernel is linked at 1 MiB), the rest of the slice at its own host address. Every other guest-physical
/// address — the monitor, the other slices, every EPT table — is simply absent, so touching it is an EPT
/// violation rather than silent aliasing.
pub const LOW_ALIAS: u64 = 16 << 20;

/// Host address behind guest-physical `gpa` of the slice at `host_base`.
fn host_of(host_base: u64, gpa: u64) -> u64 {
    if gpa < LOW_ALIAS {
        host_base + gpa
    } else {
        gpa
    }
}

/// What each core launches: the backend's configuration for its sandbox.
#[derive(Clone, Copy)]
enum Launch {
    Vmx(vmcs::LaunchConfig),
    Svm(vmcb::LaunchConfig),
}

static LAUNCH: spin::Once<Vec<Launch>> = spin::Once::new();
/// Second-stage roots by sandbox (channels are mapped into them after launch).
static STAGE2_ROOTS: spin::Once<Vec<u64>> = spin::Once::new();

/// How sandboxes reach their local APIC. x2APIC: MSRs, ICR writes intercepted by the MSR map. xAPIC: the APIC
/// page is mapped read-only and every write exits and is checked and replayed (the ICR shares its page with
/// EOI, so filtering IPIs costs an exit per EOI), or, only when asked for (`apic=passthrough`, to measure
/// that cost), mapped writable with no filtering at all.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ApicAccess {
    X2apic,
    XapicTrapped,
    XapicPassthrough,
}

impl ApicAccess {
    fn name(self) -> &'static str {
        match self {
            ApicAccess::X2apic => "x2apic",
            ApicAccess::XapicTrapped => "xapic_trapped",
            ApicAccess::XapicPassthrough => "xapic_passthrough",
        }
    }
}

static APIC_ACCESS: spin::Once<ApicAccess> = spin::Once::new();
/// Guest-physical address of the xAPIC page (the sandboxes use the architectural default).
const XAPIC_GPA: u64 = 0xFEE0_0000;
/// SVM watchdog: NMIs from the PIT arrive periodically (they count as `watchdog` exits).
static WATCHDOG_NMI: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// Monitor memory for control structures and channels (see MonitorPool).
static POOL: crate::sync::IrqSpinlock<Option<MonitorPool>> = crate::sync::IrqSpinlock::new(None);
/// A channel the monitor set up. Masks: bit 0 = endpoint a, bit 1 = endpoint b.
struct ChannelRecord {
    a: u32,
    b: u32,
    /// Host address (= guest-physical in both endpoints).
    base: u64,
    /// Endpoints that opened it (in their current incarnation).
    opened: u8,
    /// Endpoints whose second stage maps it.
    mapped: u8,
}

/// Channels by directory index.
static CHANNELS: crate::sync::IrqSpinlock<Vec<ChannelRecord>> = crate::sync::IrqSpinlock::new(Vec::new());
static SHARED_BASE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Monitor memory for sandbox control structures (second-stage tables, VMXON/VMCS or VMCB pages, permission
/// maps, exit stacks),
/// taken above [`LOW_ALIAS`]: a sandbox can then name their real addresses, and touching one is an EPT
/// violation (below LOW_ALIAS the same guest-physical address would only reach the sandbox's own memory).
struct MonitorPool {
    next: u64,
    end: u64,
}

const POOL_BYTES: u64 = 4 << 20;

impl MonitorPool {
    fn new() -> Result<MonitorPool, String> {
        let base = kmem::alloc_contiguous_from(POOL_BYTES / PAGE_SIZE, PAGE_SIZE, LOW_ALIAS)
            .ok_or("out of monitor memory for control structures")?;
        Ok(MonitorPool { next: base, end: base + POOL_BYTES })
    }
    fn pages(&mut self, n: u64) -> Result<u64, String> {
        if self.next + n * PAGE_SIZE > self.end {
            return Err(String::from("monitor pool exhausted"));
        }
        let p = self.next;
        self.next += n * PAGE_SIZE;
        // SAFETY: pool pages belong to the monitor and are identity mapped.
        unsafe { core::ptr::write_bytes(p as *mut u8, 0, (n * PAGE_SIZE) as usize) };
        Ok(p)
    }
}

impl questv_arch::paging::TableMemory for MonitorPool {
    fn alloc_table(&mut self) -> Option<u64> {
        self.pages(1).ok()
    }
    fn table(&mut self, phys: u64) -> &mut [u64; 512] {
        // SAFETY: EPT table frames come from this pool and belong to the EPT being built.
        unsafe { kmem::phys_table(phys) }
    }
}
static FINISHED: AtomicU32 = AtomicU32::new(0);
static WORST_STATUS: AtomicI32 = AtomicI32::new(0);
static SANDBOXES: AtomicU32 = AtomicU32::new(0);

/// Status a stopped sandbox is reported with (as a shell reports a process killed by SIGKILL).
const STATUS_STOPPED: i32 = 128 + 9;

/// What the monitor keeps per sandbox (touched only by that sandbox's core, in its exit handler).
struct Sandbox {
    host_base: u64,
    size: u64,
    refusals: Refusals,
    /// Exits by kind (`RESULT vmexits`).
    exits: [u64; ExitKind::COUNT],
    /// xAPIC: the last value written to ICR high (the destination of the next ICR low write).
    icr_high: u32,
    /// Console bytes of the line being assembled (printed with the `[sN]` prefix at its newline).
    line: [u8; 160],
    line_len: usize,
    /// Watchdog: last heartbeat value seen and the TSC when it last changed.
    heartbeat: u64,
    progress_tsc: u64,
    /// What to do when it faults, and its incarnations so far.
    policy: Policy,
    history: History,
    /// TSC of the fault that started the recovery in progress (0: none), for `RESULT sandbox_ready`.
    recovering_since: u64,
    /// Its recoverable component (the NIC driver), if it registered one.
    component: Option<Component>,
    /// Stateful recovery: the state its services last checkpointed, per slot (kept outside the sandbox).
    checkpoints: [Vec<u8>; hc::CHECKPOINT_SLOTS as usize],
    /// Guest-physical page ranges of its kernel's read-only segments (read-only in its second stage too; the
    /// monitor refuses to write them on its behalf).
    read_only: Vec<(u64, u64)>,
}

static STATE: spin::Once<Vec<spin::Mutex<Sandbox>>> = spin::Once::new();
/// Watchdog limit in TSC cycles (0: off) and the VMX-preemption timer value that goes with it.
static WATCHDOG_CYCLES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn state(sandbox: u32) -> spin::MutexGuard<'static, Sandbox> {
    STATE.get().expect("no sandboxes")[sandbox as usize].lock()
}

/// Load the kernel ELF's segments at their physical addresses inside the slice starting at `host_base`.
/// Returns the entry point and the page ranges of the read-only segments (text, rodata) with their
/// permissions, which the EPT enforces (paper §3.7: a sandbox cannot patch its own kernel text).
fn load_kernel(elf: &[u8], host_base: u64, slice: u64) -> Result<(u32, Vec<(u64, u64, Perms)>), String> {
    let e = goblin::elf::Elf::parse(elf).map_err(|e| format!("kernel module is not an ELF: {e}"))?;
    let mut read_only = Vec::new();
    for ph in e.program_headers.iter().filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD) {
        ph.p_paddr.checked_add(ph.p_memsz).filter(|&end| end <= slice.min(LOW_ALIAS)).ok_or("kernel segment outside the slice's low part")?;
        let file = elf.get(ph.p_offset as usize..(ph.p_offset + ph.p_filesz) as usize).ok_or("kernel segment beyond file")?;
        // SAFETY: the destination lies inside this sandbox's slice, which the monitor owns and nothing uses yet.
        unsafe {
            let dst = (host_base + ph.p_paddr) as *mut u8;
            core::ptr::copy_nonoverlapping(file.as_ptr(), dst, file.len());
            core::ptr::write_bytes(dst.add(file.len()), 0, (ph.p_memsz - ph.p_filesz) as usize);
        }
        if !ph.is_write() {
            // Whole pages only: a page shared with a writable segment stays writable.
            let start = ph.p_paddr.div_ceil(PAGE_SIZE) * PAGE_SIZE;
            let end = (ph.p_paddr + ph.p_memsz) / PAGE_SIZE * PAGE_SIZE;
            let perms = if ph.is_executable() { Perms::RX } else { Perms::R };
            if end > start {
                read_only.push((start, end, perms));
            }
        }
    }
    let entry = u32::try_from(e.header.e_entry).map_err(|_| String::from("kernel entry above 4 GiB"))?;
    Ok((entry, read_only))
}

/// Copy `data` to guest-physical `gpa` of the slice at `host_base` (within one of its two parts).
fn put(host_base: u64, gpa: u64, data: &[u8]) {
    // SAFETY: callers keep [gpa, gpa + len) inside the slice's guest-physical ranges.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), host_of(host_base, gpa) as *mut u8, data.len()) };
}

/// Host address of the guest-physical range [gpa, gpa + len) of sandbox memory, if it lies wholly inside one
/// of the slice's two parts (never in the shared region, a channel or anything else).
fn slice_range(host_base: u64, size: u64, gpa: u64, len: u64) -> Option<u64> {
    let end = gpa.checked_add(len)?;
    let high = host_base + LOW_ALIAS..host_base + size;
    if end <= LOW_ALIAS || (gpa >= high.start && end <= high.end) {
        Some(host_of(host_base, gpa))
    } else {
        None
    }
}

/// Per-machine permission maps in the backend's format, built from the policy (shared read-only by all cores).
#[derive(Clone, Copy)]
struct PermissionMaps {
    msr: u64,
    io: u64,
}

fn permission_maps(arch: Arch, pool: &mut MonitorPool) -> Result<PermissionMaps, String> {
    // SAFETY (block): freshly allocated, zeroed, contiguous monitor pages, in no second-stage table.
    Ok(match arch {
        Arch::Vmx => {
            let (msr, io) = (pool.pages(1)?, pool.pages(2)?);
            unsafe {
                policy::build_msr_bitmap(&mut *(msr as *mut [u8; 4096]));
                policy::build_io_bitmaps(&mut *(io as *mut [u8; 4096]), &mut *((io + PAGE_SIZE) as *mut [u8; 4096]), policy::GRANTED_PORTS);
            }
            PermissionMaps { msr, io }
        }
        Arch::Svm => {
            let (msr, io) = (pool.pages(2)?, pool.pages(3)?);
            unsafe {
                policy::build_msr_permission_map(&mut *(msr as *mut [u8; 8192]));
                policy::build_io_permission_map(&mut *(io as *mut [u8; 12288]), policy::GRANTED_PORTS);
            }
            PermissionMaps { msr, io }
        }
    })
}

/// Backend settings fixed for the whole run.
#[derive(Clone, Copy)]
struct RunSettings {
    caps: Caps,
    /// VMX only: the checked controls and the preemption timer start value (watchdog).
    vmx_controls: Option<vmcs::Controls>,
    preemption_timer: Option<u32>,
}

/// Second-stage table pages of each sandbox, in allocation order (the root first): a rebuild after a
/// recovery reuses them in the same order, so the root — which the VMCS/VMCB names — stays the same. Lock
/// order: CHANNELS, then POOL, then TABLES.
static TABLES: crate::sync::IrqSpinlock<Vec<Vec<u64>>> = crate::sync::IrqSpinlock::new(Vec::new());
/// Table pages a rebuild no longer needed, per sandbox: channel mappings take them before the pool's (so
/// repeated recoveries do not drain the monitor pool). Taken after TABLES.
static SPARES: crate::sync::IrqSpinlock<Vec<Vec<u64>>> = crate::sync::IrqSpinlock::new(Vec::new());

/// Table memory for one sandbox's second stage: reuses its old table pages (zeroed) before taking new ones
/// from the pool, and records every page it hands out.
struct SandboxTables<'a> {
    pool: &'a mut MonitorPool,
    /// Old pages, in reverse allocation order (popped from the end).
    reuse: Vec<u64>,
    used: &'a mut Vec<u64>,
}

impl questv_arch::paging::TableMemory for SandboxTables<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        let page = match self.reuse.pop() {
            Some(p) => {
                // SAFETY: a table page of this sandbox's second stage being rebuilt (its guest is not running).
                unsafe { core::ptr::write_bytes(p as *mut u8, 0, PAGE_SIZE as usize) };
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

/// What every (re)build of a sandbox needs, fixed at the first one.
struct BuildInfo {
    slices: Vec<partition::Slice>,
    shared_start: u64,
    run: Option<String>,
    /// Control block (VMCS/VMCB) per sandbox: the `monitor` attack's target.
    control_pages: Vec<u64>,
    attack_test: bool,
}

static BUILD: spin::Once<BuildInfo> = spin::Once::new();

/// Zero the whole slice.
fn scrub_slice(s: &partition::Slice) {
    // SAFETY: the slice was taken from the frame allocator for this sandbox (page aligned), whose guest is not
    // running.
    unsafe { cpu::zero_qwords(s.host_base, s.size) };
}

/// Load the pristine kernel and the ramdisk into a scrubbed slice. Returns the entry point, the read-only
/// kernel ranges and the modules.
fn fill_slice(s: &partition::Slice) -> Result<(u32, Vec<(u64, u64, Perms)>, Vec<Module<'static>>), String> {
    let kernel = crate::ramdisk::find("kernel").ok_or("no `kernel` module: the runner loads the image twice in VT mode")?;
    let (entry, read_only) = load_kernel(kernel, s.host_base, s.size)?;
    let top = s.host_base + s.size; // guest-physical end of the slice (its high part is identity mapped)
    // The ramdisk, minus the kernel itself.
    let mut gpa = top - GUEST_MODULES_FROM_TOP;
    let mut modules = Vec::new();
    for name in crate::ramdisk::names().filter(|n| *n != "kernel") {
        let bytes = crate::ramdisk::find(name).unwrap();
        if gpa + bytes.len() as u64 > top - GUEST_MBI_FROM_TOP {
            return Err(String::from("ramdisk too large for the sandbox module area"));
        }
        put(s.host_base, gpa, bytes);
        modules.push(Module { start: gpa as u32, end: (gpa + bytes.len() as u64) as u32, name });
        gpa = (gpa + bytes.len() as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    }
    Ok((entry, read_only, modules))
}

/// Build the sandbox's second stage into `tables`: the slice at guest-physical 0 (4 KiB pages below LOW_ALIAS
/// so kernel text and rodata can be read-only), the shared region at SHARED_GPA, on xAPIC machines the APIC
/// page, for a NIC sharer the NIC's window and DMA region. Nothing else: not the monitor, not the other slices,
/// not any table (all allocated from monitor memory). Channels are mapped when opened.
fn build_stage2(s: &partition::Slice, read_only: &[(u64, u64, Perms)], shared_start: u64, m: &mut SandboxTables) -> Result<Stage2, String> {
    let arch = backend::arch();
    let apic = *APIC_ACCESS.get().expect("APIC access chosen");
    let err = |e| format!("{} table: {e:?}", arch.name());
    let mut st2 = Stage2::new(m, arch.stage2_format()).map_err(err)?;
    st2.map_range(m, 0, s.host_base, LOW_ALIAS, Perms::RWX, MemType::WriteBack, false).map_err(err)?;
    for &(start, end, perms) in read_only {
        for page in (start..end).step_by(PAGE_SIZE as usize) {
            st2.protect(m, page, perms).map_err(err)?;
        }
    }
    let high = s.host_base + LOW_ALIAS;
    st2.map_range(m, high, high, s.size - LOW_ALIAS, Perms::RWX, MemType::WriteBack, true).map_err(err)?;
    // Read-only: only the monitor writes the info page (a writable region would let any two sandboxes talk
    // outside the channel policy, or rewrite the directory the others read).
    st2.map_range(m, SHARED_GPA, shared_start, SHARED_SIZE, Perms::R, MemType::WriteBack, false).map_err(err)?;
    match apic {
        ApicAccess::X2apic => {}
        ApicAccess::XapicTrapped => st2.map_4k(m, XAPIC_GPA, lapic::xapic_base(), Perms::R, MemType::Uncacheable).map_err(err)?,
        ApicAccess::XapicPassthrough => st2.map_4k(m, XAPIC_GPA, lapic::xapic_base(), Perms::RW, MemType::Uncacheable).map_err(err)?,
    }
    // A sharer of the NIC: its register window (uncached) and the DMA region (write-back), both at their host
    // addresses, since descriptors carry bus addresses. Only the sharers have them.
    if let Some((_, g)) = nic_role(s.sandbox) {
        let window = questv_drivers::e1000::reg::WINDOW;
        let region = questv_drivers::e1000::layout::REGION;
        st2.map_range(m, g.nic.mmio, g.nic.mmio, window, Perms::RW, MemType::Uncacheable, false).map_err(err)?;
        st2.map_range(m, g.nic.dma, g.nic.dma, region, Perms::RW, MemType::WriteBack, false).map_err(err)?;
    }
    Ok(st2)
}

/// The sandbox kernel's command line and boot information, written into its slice. Returns the boot
/// information's guest-physical address.
fn write_boot_info(s: &partition::Slice, b: &BuildInfo, modules: &[Module], stage2_root: u64, incarnation: u32) -> u64 {
    let tsc = smp::TSC_HZ.load(Ordering::SeqCst);
    let lapic_hz = smp::lapic_timer_hz();
    let top = s.host_base + s.size;
    // The heartbeat page (HEARTBEAT_GPA) lies in the reserved 0x9F000–0x100000 hole.
    let memory = [
        (0, 0x9F000, bootinfo::MEMORY_AVAILABLE),
        (0x9F000, 0x10_0000 - 0x9F000, bootinfo::MEMORY_RESERVED),
        (0x10_0000, LOW_ALIAS - 0x10_0000, bootinfo::MEMORY_AVAILABLE),
        (s.host_base + LOW_ALIAS, s.size - LOW_ALIAS, bootinfo::MEMORY_AVAILABLE),
    ];
    let mbi_gpa = top - GUEST_MBI_FROM_TOP;
    let mut cmdline = format!("mode=vt sandbox={} shared=0x{:x} tsc_hz={} lapic_hz={}", s.sandbox, SHARED_GPA, tsc, lapic_hz);
    if incarnation > 0 {
        cmdline.push_str(&format!(" incarnation={incarnation}"));
    }
    // Its own policy (the kernel checkpoints its services' state only if it is recovered at all).
    let policy = STATE.get().map_or(Policy::None, |st| st[s.sandbox as usize].lock().policy);
    if policy != Policy::None {
        cmdline.push_str(&format!(" recovery={}", policy.name()));
    }
    if let Some((j, g)) = nic_role(s.sandbox) {
        // After a recovery the NIC is up already: only the first boot of the first sharer initialises it.
        let init = j == 0 && incarnation == 0;
        cmdline.push_str(&format!(" nic_mmio=0x{:x} nic_dma=0x{:x} nic_index={} nic_init={}", g.nic.mmio, g.nic.dma, j, u8::from(init)));
    }
    if b.attack_test {
        // Targets for the attack hook: the next sandbox's slice, this sandbox's control block (monitor
        // memory), its second-stage root.
        let peer = b.slices[(s.sandbox as usize + 1) % b.slices.len()].host_base;
        cmdline.push_str(&format!(" peer=0x{:x} vmcs=0x{:x} ept=0x{:x}", peer, b.control_pages[s.sandbox as usize], stage2_root));
    }
    if let Some(r) = &b.run {
        cmdline.push_str(" run=");
        cmdline.push_str(r);
    }
    let mbi = bootinfo::build(&cmdline, &memory, modules);
    put(s.host_base, mbi_gpa, &mbi);
    mbi_gpa
}

fn prepare(plan: &Plan, run: Option<&str>, settings: RunSettings) -> Result<Vec<Launch>, String> {
    let arch = settings.caps.arch();
    let mut configs = Vec::new();
    let mut pool = MonitorPool::new()?;
    let mut roots = Vec::new();
    let maps = permission_maps(arch, &mut pool)?;
    let mut control_pages = Vec::new();
    for _ in &plan.slices {
        control_pages.push(pool.pages(1)?);
    }
    let build = BuildInfo {
        slices: plan.slices.clone(),
        shared_start: plan.shared.start,
        run: run.map(String::from),
        control_pages,
        // The attack test hook gets monitor addresses to aim at; no other run sees them.
        attack_test: run.is_some_and(|r| r.trim_start().starts_with("ktest attack")),
    };
    let mut all_tables = Vec::new();
    for s in &plan.slices {
        scrub_slice(s);
        let (entry, read_only, modules) = fill_slice(s)?;
        state(s.sandbox).read_only = read_only.iter().map(|r| (r.0, r.1)).collect();
        let mut used = Vec::new();
        let st2 = build_stage2(s, &read_only, plan.shared.start, &mut SandboxTables { pool: &mut pool, reuse: Vec::new(), used: &mut used })?;
        all_tables.push(used);
        let mbi_gpa = write_boot_info(s, &build, &modules, st2.root(), 0);
        let control_page = build.control_pages[s.sandbox as usize];
        roots.push(st2.root());
        let (rax, rbx) = (0x36D7_6289, mbi_gpa as u32);
        configs.push(match settings.caps {
            Caps::Vmx(_) => {
                let stack = pool.pages(4)?;
                Launch::Vmx(vmcs::LaunchConfig {
                    vmxon: pool.pages(1)?,
                    vmcs: control_page,
                    msr_bitmap: maps.msr,
                    io_bitmap_a: maps.io,
                    io_bitmap_b: maps.io + PAGE_SIZE,
                    eptp: st2.eptp(),
                    entry,
                    rax,
                    rbx,
                    host_stack_top: stack + 4 * PAGE_SIZE,
                    host_tr_base: 0,
                    controls: settings.vmx_controls.expect("VMX controls"),
                    preemption_timer: settings.preemption_timer,
                })
            }
            Caps::Svm(caps) => Launch::Svm(vmcb::LaunchConfig {
                vmcb: control_page,
                host_save_area: pool.pages(1)?,
                host_state: pool.pages(1)?,
                msrpm: maps.msr,
                iopm: maps.io,
                ncr3: st2.root(),
                entry,
                rax,
                rbx,
                // Every core has its own TLB; one guest per core needs one ASID.
                asid: 1,
                caps,
            }),
        });
        log::info!(
            "sandbox {}: {} MiB at host 0x{:x}, entry 0x{:x}, {} module(s), {} read-only kernel page(s)",
            s.sandbox, s.size >> 20, s.host_base, entry, modules.len(),
            read_only.iter().map(|r| (r.1 - r.0) / PAGE_SIZE).sum::<u64>()
        );
    }
    *SPARES.lock() = all_tables.iter().map(|_| Vec::new()).collect();
    *TABLES.lock() = all_tables;
    BUILD.call_once(|| build);
    STAGE2_ROOTS.call_once(|| roots);
    *POOL.lock() = Some(pool);
    Ok(configs)
}

/// Map channel memory at `base` into sandbox `e`'s second stage (tables recorded as that sandbox's).
fn map_channel(pool: &mut MonitorPool, e: u32, base: u64) -> Result<(), i64> {
    let roots = STAGE2_ROOTS.get().ok_or(hc::ENOMEM)?;
    let format = backend::arch().stage2_format();
    let mut tables = TABLES.lock();
    let used = tables.get_mut(e as usize).ok_or(hc::EINVAL)?;
    let mut spares = SPARES.lock();
    let reuse = spares.get_mut(e as usize).map(core::mem::take).unwrap_or_default();
    let mut st2 = Stage2::from_root(roots[e as usize], format);
    let bytes = crate::channel::endpoint::CHANNEL_BYTES;
    let mut t = SandboxTables { pool, reuse, used };
    let r = st2.map_range(&mut t, base, base, bytes, Perms::RW, MemType::WriteBack, false).map_err(|_| hc::ENOMEM);
    if let Some(s) = spares.get_mut(e as usize) {
        *s = core::mem::take(&mut t.reuse);
    }
    r
}

/// Channel between `me` and `peer`: allocated on first open from monitor memory and mapped, at its host
/// address, into exactly those two sandboxes' second-stage tables (adding mappings needs no invalidation).
/// After `me` was recovered its rebuilt second stage lacks the channel: re-opening maps it again.
/// Returns its address.
fn channel_open(me: u32, peer: u32) -> Result<u64, i64> {
    let n = SANDBOXES.load(Ordering::SeqCst);
    if peer >= n || peer == me {
        return Err(hc::EINVAL);
    }
    let key = (me.min(peer), me.max(peer));
    let mut chans = CHANNELS.lock();
    let my_bit = if me == key.0 { 1 } else { 2 };
    if let Some(c) = chans.iter_mut().find(|c| (c.a, c.b) == key) {
        if c.mapped & my_bit == 0 {
            let mut pool = POOL.lock();
            map_channel(pool.as_mut().ok_or(hc::ENOMEM)?, me, c.base)?;
            c.mapped |= my_bit;
        }
        c.opened |= my_bit;
        return Ok(c.base);
    }
    if chans.len() as u64 >= info::MAX_CHANNELS {
        return Err(hc::ENOMEM);
    }
    let mut pool = POOL.lock();
    let pool = pool.as_mut().ok_or(hc::ENOMEM)?;
    let pages = crate::channel::endpoint::CHANNEL_BYTES / PAGE_SIZE;
    let base = pool.pages(pages).map_err(|_| hc::ENOMEM)?;
    for e in [key.0, key.1] {
        map_channel(pool, e, base)?;
    }
    // Publish in the info page's channel directory.
    let shared = SHARED_BASE.load(Ordering::SeqCst);
    let i = chans.len() as u64;
    // SAFETY: the info page is monitor-initialised shared memory; the directory slot is within it.
    unsafe {
        let entry = (shared + info::CHANNEL_DIR_OFFSET + info::CHANNEL_DIR_ENTRY * i) as *mut u32;
        core::ptr::write_volatile(entry, key.0);
        core::ptr::write_volatile(entry.add(1), key.1);
        core::ptr::write_volatile(entry.add(2) as *mut u64, base);
        (*((shared + info::CHANNEL_COUNT_OFFSET) as *const core::sync::atomic::AtomicU32)).store(i as u32 + 1, Ordering::Release);
    }
    chans.push(ChannelRecord { a: key.0, b: key.1, base, opened: my_bit, mapped: 3 });
    log::info!("channel {}<->{} at 0x{:x} ({} pages)", key.0, key.1, base, pages);
    Ok(base)
}

/// Does sandbox `a` have a channel with the sandbox on the core whose APIC id is `apic` (`both_open`: opened by
/// both ends)?
fn has_channel_to_apic(a: u32, apic: u32, both_open: bool) -> bool {
    let n = SANDBOXES.load(Ordering::SeqCst);
    let Some(b) = (0..n).find(|&b| smp::apic_id(b) == apic) else { return false };
    let key = (a.min(b), a.max(b));
    // Only once both ends opened it: a sandbox cannot make itself a notifier of a peer that never agreed.
    CHANNELS.lock().iter().any(|c| (c.a, c.b) == key && (c.opened == 3 || !both_open))
}

/// Enter root mode on the calling core and launch its sandbox. Returns only on failure.
fn launch_here() -> ! {
    let cpu_index = percpu::cpu_index();
    cpu::disable_interrupts();
    lapic::timer_stop();
    // The logical id the shared NIC's I/O APIC entry names (xAPIC; x2APIC derives it from the APIC id).
    if cpu_index < 8 {
        lapic::set_flat_logical_id(1 << cpu_index);
    }
    let launch = LAUNCH.get().expect("no launch plan")[cpu_index as usize];
    let error = match launch {
        Launch::Vmx(mut cfg) => {
            cfg.host_tr_base = smp::tss_base();
            // SAFETY: vmxon/vmcs/bitmap pages are monitor frames (the bitmaps shared read-only by all cores);
            // capabilities and controls were checked; interrupts are off and stay off in VMX root.
            let err = unsafe {
                match vmcs::enable(cfg.vmxon) {
                    Ok(()) => vmcs::launch(&cfg),
                    Err(e) => e,
                }
            };
            format!("{err:?}")
        }
        Launch::Svm(cfg) => {
            // SAFETY: the VMCB, host save area and maps are monitor frames; SVM was checked; interrupts are
            // off and stay off in the host.
            let err = unsafe {
                vmcb::enable(cfg.host_save_area);
                vmcb::launch(&cfg)
            };
            format!("{err:?}")
        }
    };
    kprintln!("RESULT sandbox_fault sandbox={} reason=launch_failed error={}", cpu_index, error);
    sandbox_finished(cpu_index, 126);
    cpu::halt_forever()
}

extern "C" fn launch_thread(_: u64) -> ! {
    launch_here()
}

/// `RESULT vmexits` and one `RESULT sandbox_refused` line per refused (kind, port/MSR/reason).
fn report_exits(sandbox: u32) {
    let (exits, refusals) = {
        let st = state(sandbox);
        (st.exits, st.refusals.clone())
    };
    let mut line = String::new();
    for k in ExitKind::ALL.iter().filter(|k| exits[k.index()] > 0) {
        line.push_str(&format!(" {}={}", k.name(), exits[k.index()]));
    }
    result!("vmexits", "sandbox={} arch={} total={}{}", sandbox, backend::arch().name(), exits.iter().sum::<u64>(), line);
    for (kind, code, count) in refusals.iter() {
        let what = match kind {
            RefusalKind::Io => format!("port=0x{code:x}"),
            RefusalKind::Msr => format!("msr=0x{code:x}"),
            RefusalKind::Icr => format!("what={}", policy::IcrRefusal::name_of_code(code)),
            RefusalKind::Hypercall => format!("cpl={code}"),
            RefusalKind::Nmi => String::from("vector=2"),
            RefusalKind::Apic => format!("offset=0x{code:x}"),
        };
        result!("sandbox_refused", "sandbox={} kind={} {} count={}", sandbox, kind.name(), what, count);
    }
    if refusals.overflow > 0 {
        result!("sandbox_refused", "sandbox={} kind=other count={}", sandbox, refusals.overflow);
    }
}

fn sandbox_finished(sandbox: u32, status: i32) {
    IN_SERVICE.fetch_and(!bit(sandbox), Ordering::AcqRel);
    WORST_STATUS.fetch_max(status, Ordering::SeqCst);
    result!("sandbox_done", "sandbox={} status={}", sandbox, status);
    if FINISHED.fetch_add(1, Ordering::SeqCst) + 1 == SANDBOXES.load(Ordering::SeqCst) {
        crate::machine::finish(WORST_STATUS.load(Ordering::SeqCst));
    }
}

/// Faults soon after a (re)launch that end the restarts: 3 within 2 s each.
fn crash_loop_rule() -> CrashLoopRule {
    CrashLoopRule { quick_cycles: 2 * smp::TSC_HZ.load(Ordering::Relaxed).max(1), limit: 3 }
}

/// TSC at the start of the exit being handled, per core (the recovery's first timestamp).
static EXIT_TSC: [core::sync::atomic::AtomicU64; percpu::MAX_CPUS] = [const { core::sync::atomic::AtomicU64::new(0) }; percpu::MAX_CPUS];
/// Set by a recovery: the exit handler relaunches the sandbox instead of parking its core.
static RELAUNCH: [core::sync::atomic::AtomicBool; percpu::MAX_CPUS] = [const { core::sync::atomic::AtomicBool::new(false) }; percpu::MAX_CPUS];

/// A sandbox faulted: one `RESULT sandbox_fault` line (reason, details, what happens next), its exit report,
/// then recovery under its policy — or it is stopped for good. `guest_tsc`: the guest's own time stamp of the
/// fault when it reported one (the panic hypercall), for the exit-to-monitor phase.
fn fault(sandbox: u32, reason: &str, details: core::fmt::Arguments, guest_tsc: Option<u64>) -> bool {
    flush_console(sandbox);
    IN_SERVICE.fetch_and(!bit(sandbox), Ordering::AcqRel);
    // A state the CPU refuses to enter is the monitor's problem, not the guest's: relaunching would refuse again.
    let recoverable = reason != "entry_failed";
    let t_exit = EXIT_TSC[sandbox as usize].load(Ordering::Relaxed);
    let g = backend::guest_state();
    // `stack_outside=1`: the saved stack pointer is not in the sandbox's memory, as when an emulator reports
    // an exit with the monitor's own state (docs/vt.md). (The guest's CR3 cannot tell: every sandbox runs the
    // same image, so its page tables sit at the same guest-physical address as the monitor's.)
    let (policy, incarnation, decision, component, stack_outside) = {
        let mut st = state(sandbox);
        let stack_outside = slice_range(st.host_base, st.size, g.rsp.wrapping_sub(8), 8).is_none();
        let d = if st.policy != Policy::None && recoverable { Some(st.history.on_fault(t_exit, crash_loop_rule())) } else { None };
        // Component level: only a fault on the component's own stack is the component's.
        let c = st.component.filter(|c| st.policy == Policy::Driver && c.owns(g.rsp));
        (st.policy, st.history.incarnation, d, c, stack_outside)
    };
    // Remote: a sharer's service goes to the next healthy sharer.
    let takeover = match (policy, decision, nic_role(sandbox)) {
        (Policy::Remote, Some(Decision::Recover), Some((j, grant))) => {
            let healthy = |s: u32| s != sandbox && IN_SERVICE.load(Ordering::Acquire) & bit(s) != 0 && nic_role(s).is_some();
            rec::pick_takeover(sandbox, &grant.sharers, healthy).map(|t| (j, t))
        }
        _ => None,
    };
    let action = match (decision, component, takeover) {
        (Some(Decision::Recover), Some(_), _) => String::from("driver_switch"),
        (Some(Decision::Recover), None, Some((_, t))) => format!("remote target={t}"),
        (Some(Decision::Recover), None, None) => String::from("restart"),
        (Some(Decision::CrashLoop { quick_faults }), _, _) => format!("stopped crash_loop={quick_faults}"),
        (None, _, _) => String::from("stopped"),
    };
    result!(
        "sandbox_fault",
        "sandbox={} reason={} {} rip=0x{:x} rsp=0x{:x} cr3=0x{:x} stack_outside={} incarnation={} policy={} action={}",
        sandbox, reason, details, g.rip, g.rsp, g.paging.cr3, u8::from(stack_outside), incarnation, policy.name(), action
    );
    report_exits(sandbox);
    leave_nic(sandbox);
    if let (Some(Decision::Recover), Some(c)) = (decision, component) {
        switch_driver(sandbox, c, t_exit, guest_tsc);
        return true;
    }
    if let Some((j, target)) = takeover {
        let _ = hand_over(sandbox, j, target);
    }
    if decision == Some(Decision::Recover) {
        match restart_sandbox(sandbox, t_exit, guest_tsc) {
            Ok(()) => {
                RELAUNCH[sandbox as usize].store(true, Ordering::SeqCst);
                return false;
            }
            Err(e) => result!("sandbox_recovery_failed", "sandbox={} error=\"{}\"", sandbox, e),
        }
    }
    sandbox_finished(sandbox, STATUS_STOPPED);
    false
}

/// Remote recovery, on the faulted sandbox's core: ask `target`'s monitor (by NMI, through a mailbox) to take
/// over sharer `j`'s network service, and wait for its acknowledgement (the IPI round trip of Table 1). From
/// now on the faulted sandbox is relaunched without the NIC.
fn hand_over(sandbox: u32, j: usize, target: u32) -> bool {
    NIC_MOVED.fetch_or(bit(sandbox), Ordering::AcqRel);
    let t0 = cpu::rdtsc();
    let want = bit(j as u32);
    TAKEOVER_ACK[target as usize].fetch_and(!want, Ordering::AcqRel);
    TAKEOVER_REQUEST[target as usize].fetch_or(want, Ordering::AcqRel);
    let hz = smp::TSC_HZ.load(Ordering::Relaxed).max(1);
    let mut nmis = 0;
    // An NMI that reaches the target core while it is in root mode (handling an exit of its own) is not an
    // exit: send again every millisecond until acknowledged, for at most half a second.
    let acked = loop {
        lapic::send_nmi(smp::apic_id(target));
        nmis += 1;
        let until = cpu::rdtsc() + hz / 1000;
        while cpu::rdtsc() < until && TAKEOVER_ACK[target as usize].load(Ordering::Acquire) & want == 0 {
            core::hint::spin_loop();
        }
        if TAKEOVER_ACK[target as usize].load(Ordering::Acquire) & want != 0 {
            break true;
        }
        if cpu::rdtsc() - t0 > hz / 2 {
            // Withdraw the request; if the target took it after all in the meantime, it stands.
            let withdrawn = TAKEOVER_REQUEST[target as usize].fetch_and(!want, Ordering::AcqRel) & want != 0;
            break !withdrawn;
        }
    };
    let round_trip = cpu::rdtsc() - t0;
    if !acked {
        // Nobody took the service: the sandbox keeps its NIC role and is restarted with it.
        NIC_MOVED.fetch_and(!bit(sandbox), Ordering::AcqRel);
    }
    result!(
        "sandbox_takeover",
        "sandbox={} sharer={} target={} acked={} ipi_round_trip_cycles={} ipi_round_trip_us={} nmis={}",
        sandbox, j, target, u8::from(acked), if acked { round_trip } else { 0 }, if acked { cycles_to_us(round_trip) } else { 0 }, nmis
    );
    acked
}

/// Remote recovery, on the target's core (its NMI exit): route the NIC's interrupt away from the faulted
/// sandbox (the target already receives it), publish the takeover in the info page, and tell the target's
/// kernel with a self-IPI of the takeover vector, which reaches the guest directly.
fn take_over(target: u32, j: usize) {
    let t0 = cpu::rdtsc();
    let Some(g) = nic_grant() else { return };
    let Some(&faulted) = g.sharers.get(j) else { return };
    if nic_role(target).is_none() {
        // This sandbox no longer holds the NIC itself (it handed its own role over): it cannot serve another.
        return;
    }
    if g.logical {
        let id = if lapic::is_x2apic() { smp::apic_id(faulted) } else { faulted };
        let _io = IOAPIC_LOCK.lock();
        let mask = g.mask.fetch_and(!(1u32.checked_shl(id).unwrap_or(0)), Ordering::AcqRel) & !(1u32.checked_shl(id).unwrap_or(0));
        g.ioapic.route_logical(g.pin, crate::net::VECTOR_NIC, mask as u8, false, g.active_low);
    }
    let shared = SHARED_BASE.load(Ordering::SeqCst);
    if u64::from(target) < info::MAX_SANDBOXES {
        // SAFETY: the info page is monitor-initialised shared memory; the slot is within it.
        unsafe { (*((shared + info::TAKEOVERS_OFFSET + 4 * u64::from(target)) as *const AtomicU32)).fetch_or(1 << j, Ordering::AcqRel) };
    }
    lapic::send_ipi(lapic::id(), hc::TAKEOVER_VECTOR);
    let t1 = cpu::rdtsc();
    TAKEOVER_ACK[target as usize].fetch_or(bit(j as u32), Ordering::AcqRel);
    result!("sandbox_takeover_done", "target={} sharer={} faulted={} reroute_cycles={} logical_dest=0x{:02x}", target, j, faulted, t1 - t0, g.mask.load(Ordering::Acquire));
}

/// A faulted NIC sharer leaves the shared ring (its frozen cursor would stall it for the others) and a control
/// lock it died holding is released.
fn leave_nic(sandbox: u32) {
    if let Some((j, g)) = nic_role(sandbox) {
        // SAFETY: the DMA region is monitor-claimed memory (identity mapped here); its control block is made of
        // atomics only.
        let control = unsafe { &*(g.nic.dma as *const questv_drivers::e1000::Control) };
        let held = control.leave(j);
        result!("nic_leave", "sandbox={} sharer={} lock_released={}", sandbox, j, u8::from(held));
    }
}

fn stop(sandbox: u32, reason: &str, details: core::fmt::Arguments) -> bool {
    fault(sandbox, reason, details, None)
}

fn cycles_to_us(c: u64) -> u64 {
    c.saturating_mul(1_000_000) / smp::TSC_HZ.load(Ordering::Relaxed).max(1)
}

/// Wipe every channel of `sandbox` and publish the resets (the peers' endpoints, and the sandbox's own if it
/// runs on, see the counter move and report the reset once). With `unmap` (a restart: the rebuilt second stage
/// lacks them) the sandbox also has to open them again. Returns how many there were. Lock order: CHANNELS first.
fn reset_channels(chans: &mut [ChannelRecord], sandbox: u32, unmap: bool) -> u32 {
    let shared = SHARED_BASE.load(Ordering::SeqCst);
    let mut n = 0;
    for (i, c) in chans.iter_mut().enumerate().filter(|(_, c)| c.a == sandbox || c.b == sandbox) {
        if unmap {
            let bit = if c.a == sandbox { 1 } else { 2 };
            c.opened &= !bit;
            c.mapped &= !bit;
        }
        // SAFETY: channel memory is monitor memory of this channel; the peer may race with the wipe, which its
        // ring checks (sequence and checksum) turn into an error, never into a wrong message.
        unsafe {
            core::ptr::write_bytes(c.base as *mut u8, 0, crate::channel::endpoint::CHANNEL_BYTES as usize);
            let counter = &*((shared + info::CHANNEL_RESETS_OFFSET + 4 * i as u64) as *const AtomicU32);
            counter.fetch_add(1, Ordering::Release);
        }
        n += 1;
    }
    n
}

/// Component-level local recovery (the paper's driver switch, §3.7): the fault was on the NIC driver thread's
/// stack. Its channels are wiped and marked reset (a broken driver may have scribbled on them: paper Fig 5,
/// step 4), and the sandbox resumes at the component's recovery entry on a fresh stack, which brings the
/// network service back up on the alternative (conservative) driver with the same IP and MAC. Processes and
/// everything else in the sandbox run on.
fn switch_driver(sandbox: u32, c: Component, t_exit: u64, guest_tsc: Option<u64>) {
    let t0 = cpu::rdtsc();
    // The fault may have come in an interrupt handler on the driver's stack: its EOI never came.
    let _ = lapic::eoi_all_in_service();
    let channels_reset = reset_channels(&mut CHANNELS.lock(), sandbox, false);
    let t_channels = cpu::rdtsc();
    // Interrupts off: the entry enables them once its state is consistent.
    backend::redirect(c.entry, c.fresh_rsp(), 0x2);
    let switches = {
        let mut st = state(sandbox);
        st.history.on_component_recovery(t_channels);
        st.recovering_since = t_exit;
        st.line_len = 0;
        st.history.component_recoveries
    };
    let t_done = cpu::rdtsc();
    let exit_cycles = guest_tsc.map(|g| format!("{}", t_exit.saturating_sub(g))).unwrap_or_else(|| String::from("na"));
    result!(
        "sandbox_recovered",
        "sandbox={} mode=driver switches={} exit_to_monitor_cycles={} decide_cycles={} channels_cycles={} switch_cycles={} total_cycles={} total_us={} channels_reset={}",
        sandbox, switches, exit_cycles, t0.saturating_sub(t_exit), t_channels - t0, t_done - t_channels, t_done - t_exit,
        cycles_to_us(t_done - t_exit), channels_reset
    );
}

/// Sandbox-level local recovery (paper §3.7, docs/recovery.md), on the faulted sandbox's own core in root mode:
/// its core's APIC quiesced, its slice scrubbed and reloaded from the pristine image, its second stage rebuilt
/// in place (same table pages, same root; channel mappings dropped), its channels wiped and marked reset so
/// peers see a clean restart, its new incarnation published. The caller relaunches it.
fn restart_sandbox(sandbox: u32, t_exit: u64, guest_tsc: Option<u64>) -> Result<(), String> {
    let b = BUILD.get().ok_or("no build information")?;
    let s = b.slices.get(sandbox as usize).ok_or("no such sandbox")?;
    let t0 = cpu::rdtsc();
    lapic::timer_stop();
    let in_service = lapic::eoi_all_in_service();
    let t_quiesced = cpu::rdtsc();
    scrub_slice(s);
    let t_scrubbed = cpu::rdtsc();
    // The entry point and the boot information's place do not change: the backend relaunches with the
    // configuration it has.
    let (_entry, read_only, modules) = fill_slice(s)?;
    state(sandbox).read_only = read_only.iter().map(|r| (r.0, r.1)).collect();
    let t_reloaded = cpu::rdtsc();
    // CHANNELS, POOL, TABLES: the lock order of channel_open.
    let mut chans = CHANNELS.lock();
    let mut pool_guard = POOL.lock();
    let pool = pool_guard.as_mut().ok_or("no monitor pool")?;
    let mut reuse = core::mem::take(&mut TABLES.lock()[sandbox as usize]);
    reuse.reverse();
    let mut used = Vec::new();
    let mut tables = SandboxTables { pool, reuse, used: &mut used };
    let st2 = build_stage2(s, &read_only, b.shared_start, &mut tables)?;
    // Pages no longer needed (the channel mappings' tables) stay this sandbox's, as spares for later mappings.
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
    let t_stage2 = cpu::rdtsc();
    // Channels: both rings wiped (whatever the dead kernel left half-written is gone), the reset published; the
    // peer's endpoint sees the counter move and reports the reset once.
    let channels_reset = reset_channels(&mut chans, sandbox, true);
    drop(pool_guard);
    drop(chans);
    let t_channels = cpu::rdtsc();
    let incarnation = {
        let mut st = state(sandbox);
        st.history.on_relaunch(t_channels);
        st.heartbeat = 0;
        st.progress_tsc = 0;
        st.icr_high = 0;
        st.line_len = 0;
        st.recovering_since = t_exit;
        // The new kernel registers its component again (if it has one): the old one's stack is gone.
        st.component = None;
        st.history.incarnation
    };
    let shared = SHARED_BASE.load(Ordering::SeqCst);
    if u64::from(sandbox) < info::MAX_SANDBOXES {
        // SAFETY: the info page is monitor-initialised shared memory; the slot is within it.
        unsafe { (*((shared + info::INCARNATIONS_OFFSET + 4 * u64::from(sandbox)) as *const AtomicU32)).store(incarnation, Ordering::Release) };
    }
    write_boot_info(s, b, &modules, st2.root(), incarnation);
    let t_done = cpu::rdtsc();
    let exit_cycles = guest_tsc.map(|g| format!("{}", t_exit.saturating_sub(g))).unwrap_or_else(|| String::from("na"));
    result!(
        "sandbox_recovered",
        "sandbox={} mode=restart incarnation={} exit_to_monitor_cycles={} quiesce_cycles={} scrub_cycles={} reload_cycles={} stage2_cycles={} channels_cycles={} boot_info_cycles={} total_cycles={} total_us={} channels_reset={} in_service_acked={} slice_mib={}",
        sandbox, incarnation, exit_cycles, t_quiesced - t0, t_scrubbed - t_quiesced, t_reloaded - t_scrubbed, t_stage2 - t_reloaded,
        t_channels - t_stage2, t_done - t_channels, t_done - t_exit, cycles_to_us(t_done - t_exit), channels_reset, in_service, s.size >> 20
    );
    Ok(())
}

/// Count a refused access; the first of its kind gets a log line.
fn refuse(sandbox: u32, kind: RefusalKind, code: u64) {
    if state(sandbox).refusals.record(kind, code) {
        match kind {
            RefusalKind::Icr => log::warn!("sandbox {}: refused an IPI ({})", sandbox, policy::IcrRefusal::name_of_code(code)),
            RefusalKind::Apic => log::warn!("sandbox {}: refused an APIC write at offset 0x{:x}", sandbox, code),
            _ => log::warn!("sandbox {}: refused {} 0x{:x}", sandbox, kind.name(), code),
        }
    }
}

use backend::{inject_gp, inject_ud, skip_instruction};

/// Print the sandbox's console bytes: complete lines with its `[sN]` prefix; control characters and non-ASCII
/// bytes become `?`, so nothing a sandbox prints can start an unprefixed line (only the monitor says
/// `QUESTV DONE`).
fn console_bytes(sandbox: u32, bytes: &[u8]) {
    let mut st = state(sandbox);
    for &b in bytes {
        let stored = match b {
            b'\n' => {
                emit_line(sandbox, &mut st);
                continue;
            }
            b'\r' => continue,
            b'\t' | 0x20..=0x7E => b,
            _ => b'?',
        };
        if st.line_len == st.line.len() {
            emit_line(sandbox, &mut st);
        }
        let n = st.line_len;
        st.line[n] = stored;
        st.line_len += 1;
    }
}

fn emit_line(sandbox: u32, st: &mut Sandbox) {
    // Only printable ASCII is ever stored.
    let text = core::str::from_utf8(&st.line[..st.line_len]).unwrap_or("?");
    kprintln!("[s{}] {}", sandbox, text);
    st.line_len = 0;
}

fn flush_console(sandbox: u32) {
    let mut st = state(sandbox);
    if st.line_len > 0 {
        emit_line(sandbox, &mut st);
    }
}

/// BOOTED: a recovered sandbox is back in service (`RESULT sandbox_ready`, with the downtime since its fault).
/// Returns its incarnation.
fn booted(sandbox: u32) -> u64 {
    IN_SERVICE.fetch_or(bit(sandbox), Ordering::AcqRel);
    let (since, incarnation) = {
        let mut st = state(sandbox);
        (core::mem::take(&mut st.recovering_since), st.history.incarnation)
    };
    if since != 0 {
        let down = cpu::rdtsc().saturating_sub(since);
        result!("sandbox_ready", "sandbox={} incarnation={} downtime_cycles={} downtime_us={}", sandbox, incarnation, down, cycles_to_us(down));
    }
    u64::from(incarnation)
}

/// COMPONENT: the sandbox's recoverable component (entry point, stack), checked to lie in its own memory.
fn register_component(sandbox: u32, gpa: u64, len: u64) -> Result<u64, i64> {
    if len != hc::COMPONENT_BYTES {
        return Err(hc::EINVAL);
    }
    let mut st = state(sandbox);
    let (base, size) = (st.host_base, st.size);
    let host = slice_range(base, size, gpa, len).ok_or(hc::EFAULT)?;
    // SAFETY: 24 bytes inside this sandbox's slice (identity mapped); it is stopped in this exit.
    let words: [u64; 3] = unsafe { core::ptr::read_unaligned(host as *const [u64; 3]) };
    let c = Component::parse(words, |a, l| slice_range(base, size, a, l).is_some()).ok_or(hc::EINVAL)?;
    st.component = Some(c);
    Ok(0)
}

/// CHECKPOINT: keep a copy of a service's state (slot in the high half of `arg`), outside the sandbox.
fn checkpoint(sandbox: u32, gpa: u64, arg: u64) -> Result<u64, i64> {
    let (slot, len) = hc::checkpoint_split(arg);
    if len > hc::CHECKPOINT_MAX || slot >= hc::CHECKPOINT_SLOTS {
        return Err(hc::EINVAL);
    }
    let mut st = state(sandbox);
    let host = slice_range(st.host_base, st.size, gpa, len).ok_or(hc::EFAULT)?;
    // SAFETY: [host, host + len) is inside this sandbox's slice (identity mapped); it is stopped in this exit.
    let bytes = unsafe { core::slice::from_raw_parts(host as *const u8, len as usize) };
    let kept = &mut st.checkpoints[slot as usize];
    kept.clear();
    kept.extend_from_slice(bytes);
    Ok(len)
}

/// RESTORE: a slot's last checkpoint back into the sandbox's memory (at most `len` bytes); its length, 0 if none.
/// The destination must be memory the sandbox could write itself: not its read-only kernel text or rodata.
fn restore(sandbox: u32, gpa: u64, arg: u64) -> Result<u64, i64> {
    let (slot, len) = hc::checkpoint_split(arg);
    if slot >= hc::CHECKPOINT_SLOTS {
        return Err(hc::EINVAL);
    }
    let st = state(sandbox);
    let kept = &st.checkpoints[slot as usize];
    let n = (kept.len() as u64).min(len);
    let host = slice_range(st.host_base, st.size, gpa, n).ok_or(hc::EFAULT)?;
    if partition::overlaps_any(&st.read_only, gpa, n) {
        return Err(hc::EFAULT);
    }
    // SAFETY: as in `checkpoint`; the destination is the sandbox's own memory.
    unsafe { core::ptr::copy_nonoverlapping(kept.as_ptr(), host as *mut u8, n as usize) };
    Ok(kept.len() as u64)
}

/// CONSOLE_WRITE: the bytes must lie in the sandbox's own memory.
fn console_write(sandbox: u32, gpa: u64, len: u64) -> Result<u64, i64> {
    if len > hc::CONSOLE_MAX {
        return Err(hc::EINVAL);
    }
    let (base, size) = {
        let st = state(sandbox);
        (st.host_base, st.size)
    };
    let host = slice_range(base, size, gpa, len).ok_or(hc::EFAULT)?;
    // SAFETY: [host, host + len) is inside this sandbox's slice, identity mapped in the monitor; the sandbox is
    // stopped in this exit, so the bytes do not change under us.
    let bytes = unsafe { core::slice::from_raw_parts(host as *const u8, len as usize) };
    console_bytes(sandbox, bytes);
    Ok(len)
}

/// Watchdog: has the sandbox's heartbeat moved within the limit? Checked on every exit (a sandbox that only
/// makes hypercalls is checked as well as one that never exits, which the preemption timer interrupts).
fn watchdog_expired(sandbox: u32) -> bool {
    let limit = WATCHDOG_CYCLES.load(Ordering::Relaxed);
    if limit == 0 {
        return false;
    }
    let now = cpu::rdtsc();
    let mut st = state(sandbox);
    let hb_host = host_of(st.host_base, hc::HEARTBEAT_GPA);
    // SAFETY: the heartbeat page is inside this sandbox's slice, identity mapped in the monitor.
    let hb = unsafe { core::ptr::read_volatile(hb_host as *const u64) };
    if hb != st.heartbeat || st.progress_tsc == 0 {
        st.heartbeat = hb;
        st.progress_tsc = now;
        return false;
    }
    // Until the first tick (early boot) allow ten periods.
    let allowed = if hb == 0 { limit * 10 } else { limit };
    now - st.progress_tsc > allowed
}

fn hypercall(sandbox: u32, regs: &mut GuestRegs) -> bool {
    let cpl = backend::guest_cpl();
    if cpl != 0 {
        // A user process may not talk to the monitor: #UD, as if the instruction did not exist for it.
        refuse(sandbox, RefusalKind::Hypercall, u64::from(cpl));
        inject_ud();
        return true;
    }
    let result = match regs.rax {
        hc::DONE => {
            flush_console(sandbox);
            report_exits(sandbox);
            sandbox_finished(sandbox, regs.rbx as i32);
            return false;
        }
        hc::FAULT => {
            let kind = if regs.rbx == hc::FAULT_PANIC { "panic" } else { "fault" };
            // RCX: the guest's TSC at the fault (the same counter as the monitor's on this core).
            let guest_tsc = Some(regs.rcx).filter(|&t| t != 0 && t <= cpu::rdtsc());
            return fault(sandbox, kind, format_args!("guest_tsc={}", regs.rcx), guest_tsc);
        }
        hc::BOOTED => Ok(booted(sandbox)),
        hc::COMPONENT => register_component(sandbox, regs.rbx, regs.rcx),
        hc::CHECKPOINT => checkpoint(sandbox, regs.rbx, regs.rcx),
        hc::RESTORE => restore(sandbox, regs.rbx, regs.rcx),
        hc::EXIT_COUNT => Ok(state(sandbox).exits.iter().sum()),
        hc::CHANNEL_OPEN => channel_open(sandbox, regs.rbx as u32),
        hc::PEER_APIC => {
            let peer = regs.rbx as u32;
            if peer < SANDBOXES.load(Ordering::SeqCst) { Ok(u64::from(smp::apic_id(peer))) } else { Err(hc::EINVAL) }
        }
        hc::REPORT_EXITS => {
            report_exits(sandbox);
            Ok(0)
        }
        hc::CONSOLE_WRITE => console_write(sandbox, regs.rbx, regs.rcx),
        _ => Err(hc::ENOSYS),
    };
    regs.rax = hc::encode(result);
    skip_instruction();
    true
}

fn port_io(sandbox: u32, regs: &mut GuestRegs, io: IoExit) -> bool {
    let out_value = regs.rax & ((1u64 << (8 * u32::from(io.size))) - 1);
    match policy::classify_port(io.port, io.size, !io.input, policy::GRANTED_PORTS) {
        // Granted ports do not exit (their permission bits are clear).
        PortVerdict::Granted => {}
        PortVerdict::Hostile => {
            return stop(sandbox, "io", format_args!("port=0x{:x} value=0x{:x}", io.port, out_value));
        }
        PortVerdict::Refused => {
            refuse(sandbox, RefusalKind::Io, u64::from(io.port));
            if io.string {
                // INS/OUTS would need the guest's segments and paging: refused outright.
                inject_gp();
                return true;
            }
            if io.input {
                let mask = policy::refused_in_value(io.size);
                // A 32-bit IN zero-extends into RAX; 8- and 16-bit ones keep the rest.
                regs.rax = if io.size == 4 { mask } else { (regs.rax & !mask) | mask };
            }
        }
    }
    skip_instruction();
    true
}

/// What became of an IPI a sandbox asked for (x2APIC ICR write or xAPIC ICR low write).
enum IpiOutcome {
    Sent,
    /// To a channel peer that has not opened the channel yet: dropped (the message is in the ring), counted.
    Dropped,
    /// Refused and counted: the sandbox gets #GP.
    Refused,
}

/// Check an ICR value (x2APIC layout) against the IPI rules and send it from this core if allowed.
fn checked_ipi(sandbox: u32, icr: u64) -> IpiOutcome {
    let own = smp::apic_id(sandbox);
    match policy::check_icr(icr, own, hc::CHANNEL_NOTIFY_VECTOR, |apic| has_channel_to_apic(sandbox, apic, true)) {
        Ok(ipi) => {
            lapic::send_ipi(ipi.dest_apic, ipi.vector);
            IpiOutcome::Sent
        }
        Err(why @ policy::IcrRefusal::Destination(apic)) if has_channel_to_apic(sandbox, apic, false) => {
            refuse(sandbox, RefusalKind::Icr, why.code());
            IpiOutcome::Dropped
        }
        Err(why) => {
            refuse(sandbox, RefusalKind::Icr, why.code());
            IpiOutcome::Refused
        }
    }
}

fn msr_access(sandbox: u32, regs: &mut GuestRegs, write: bool) -> bool {
    let msr = regs.rcx as u32;
    let value = (regs.rdx << 32) | (regs.rax & 0xFFFF_FFFF);
    if write && msr == policy::MSR_X2APIC_ICR {
        match checked_ipi(sandbox, value) {
            IpiOutcome::Sent | IpiOutcome::Dropped => skip_instruction(),
            IpiOutcome::Refused => inject_gp(),
        }
        return true;
    }
    // SAFETY: reading APIC_BASE has no side effects.
    if write && msr == policy::MSR_APIC_BASE && value == unsafe { cpu::rdmsr(policy::MSR_APIC_BASE) } {
        skip_instruction(); // a write that changes nothing
        return true;
    }
    let access = if write { Access::Write } else { Access::Read };
    debug_assert!(!policy::msr_passthrough(msr, access) || policy::msr_bitmap_bit(msr, access).is_none());
    refuse(sandbox, RefusalKind::Msr, u64::from(msr));
    inject_gp();
    true
}

/// Is `gpa` in the xAPIC page a trapped-APIC sandbox sees?
fn is_apic_page(gpa: u64) -> bool {
    APIC_ACCESS.get() == Some(&ApicAccess::XapicTrapped) && gpa & !(PAGE_SIZE - 1) == XAPIC_GPA
}

/// Read `buf.len()` bytes at guest-virtual `gva` through the sandbox's own page tables (its memory only).
fn read_guest_virtual(sandbox: u32, paging: &guest::Paging, gva: u64, buf: &mut [u8]) -> bool {
    let (base, size) = {
        let st = state(sandbox);
        (st.host_base, st.size)
    };
    let read_u64 = |gpa: u64| {
        // SAFETY: slice_range keeps the 8 bytes inside this sandbox's slice (identity mapped in the monitor).
        slice_range(base, size, gpa, 8).map(|h| unsafe { core::ptr::read_volatile(h as *const u64) })
    };
    for (i, b) in buf.iter_mut().enumerate() {
        let Some(gpa) = guest::translate(paging, gva + i as u64, read_u64) else { return false };
        let Some(host) = slice_range(base, size, gpa, 1) else { return false };
        // SAFETY: inside this sandbox's slice, identity mapped in the monitor; the sandbox is stopped in this exit.
        *b = unsafe { core::ptr::read_volatile(host as *const u8) };
    }
    true
}

/// A write to the trapped xAPIC page: decode the instruction, check the write, replay it on this core's APIC
/// (or send the checked IPI), and move the guest past it.
fn apic_write(sandbox: u32, regs: &mut GuestRegs, gpa: u64) -> bool {
    let gs = backend::guest_state();
    let mut bytes = [0u8; 15];
    if !read_guest_virtual(sandbox, &gs.paging, gs.rip, &mut bytes) {
        return stop(sandbox, "apic_write", format_args!("gpa=0x{:x} instruction=unreadable", gpa));
    }
    let w = match guest::decode_write(&bytes, gs.paging.long_mode()) {
        Ok(w) => w,
        Err(e) => return stop(sandbox, "apic_write", format_args!("gpa=0x{:x} instruction={:?}", gpa, e)),
    };
    let reg = |n: u8| -> u64 {
        match n {
            0 => regs.rax,
            1 => regs.rcx,
            2 => regs.rdx,
            3 => regs.rbx,
            4 => gs.rsp,
            5 => regs.rbp,
            6 => regs.rsi,
            7 => regs.rdi,
            8 => regs.r8,
            9 => regs.r9,
            10 => regs.r10,
            11 => regs.r11,
            12 => regs.r12,
            13 => regs.r13,
            14 => regs.r14,
            _ => regs.r15,
        }
    };
    let value = match w.source {
        Source::Reg(n) => reg(n),
        Source::HighByte(n) => reg(n) >> 8,
        Source::Imm(v) => v,
    } as u32;
    let offset = (gpa & (PAGE_SIZE - 1)) as u32;
    match policy::classify_xapic_write(offset, w.size, value) {
        ApicWriteVerdict::Replay => lapic::write_register(offset, value),
        ApicWriteVerdict::IcrHigh => state(sandbox).icr_high = value,
        ApicWriteVerdict::IcrLow => {
            let high = state(sandbox).icr_high;
            if let IpiOutcome::Refused = checked_ipi(sandbox, policy::xapic_icr(high, value)) {
                // As for a refused x2APIC ICR write: #GP at the instruction.
                inject_gp();
                return true;
            }
        }
        ApicWriteVerdict::Refused => refuse(sandbox, RefusalKind::Apic, u64::from(offset)),
    }
    backend::advance_rip(u64::from(w.len));
    true
}

fn cpuid(regs: &mut GuestRegs) {
    let (leaf, sub) = (regs.rax as u32, regs.rcx as u32);
    let c = cpu::cpuid(leaf, sub);
    let (mut ecx, mut edx) = (c.ecx, c.edx);
    match leaf {
        1 => {
            ecx &= !(1 << 5); // no VMX inside a sandbox
            ecx &= !((1 << 26) | (1 << 27)); // no XSAVE: XSETBV is refused
            ecx |= 1 << 31; // running under a hypervisor
        }
        0x8000_0001 => ecx &= !(1 << 2), // no SVM inside a sandbox
        0x8000_000A => (ecx, edx) = (0, 0),
        _ => {}
    }
    let (eax, ebx) = if leaf == 0x8000_000A { (0, 0) } else { (c.eax, c.ebx) };
    (regs.rax, regs.rbx, regs.rcx, regs.rdx) = (u64::from(eax), u64::from(ebx), u64::from(ecx), u64::from(edx));
}

/// The kind an exit is counted as.
fn exit_kind(exit: &Exit) -> ExitKind {
    match *exit {
        Exit::MemoryViolation { gpa, write: true, .. } if is_apic_page(gpa) => ExitKind::ApicWrite,
        Exit::Nmi if WATCHDOG_NMI.load(Ordering::Relaxed) => ExitKind::Watchdog,
        ref e => e.kind(),
    }
}

/// The monitor's exit policy (runs in root mode on the exiting core): resume, park, or — after a recovery —
/// relaunch.
fn on_exit(regs: &mut GuestRegs, exit: Exit) -> Verdict {
    let sandbox = percpu::cpu_index();
    EXIT_TSC[sandbox as usize].store(cpu::rdtsc(), Ordering::Relaxed);
    if handle_exit(regs, exit) {
        Verdict::Resume
    } else if RELAUNCH[sandbox as usize].swap(false, Ordering::SeqCst) {
        Verdict::Relaunch
    } else {
        Verdict::Park
    }
}

/// Handle one exit; false: the sandbox does not resume (stopped, or recovered and to be relaunched).
fn handle_exit(regs: &mut GuestRegs, exit: Exit) -> bool {
    let sandbox = percpu::cpu_index();
    if questv_arch::trap::HALT_ALL.load(Ordering::SeqCst) {
        return false; // the monitor is stopping the machine (its NMI brought this core out of the guest)
    }
    state(sandbox).exits[exit_kind(&exit).index()] += 1;
    if watchdog_expired(sandbox) {
        let silent_ms = (cpu::rdtsc() - state(sandbox).progress_tsc) * 1000 / smp::TSC_HZ.load(Ordering::Relaxed).max(1);
        return stop(sandbox, "watchdog", format_args!("silent_ms={} exit={}", silent_ms, exit_kind(&exit).name()));
    }
    match exit {
        Exit::Cpuid => {
            cpuid(regs);
            skip_instruction();
            true
        }
        Exit::Hypercall => hypercall(sandbox, regs),
        Exit::Io(io) => port_io(sandbox, regs, io),
        Exit::Msr { write } => msr_access(sandbox, regs, write),
        // The watchdog check above ran; the timer restarts at the next entry.
        Exit::Timer => true,
        Exit::Nmi if TAKEOVER_REQUEST[sandbox as usize].load(Ordering::Acquire) != 0 => {
            let wanted = TAKEOVER_REQUEST[sandbox as usize].swap(0, Ordering::AcqRel);
            for j in (0..64).filter(|j| wanted & (1u64 << j) != 0) {
                take_over(sandbox, j);
            }
            true
        }
        Exit::Nmi => {
            // With the SVM watchdog on, the PIT's NMIs are the monitor's own tick. Otherwise not one the monitor
            // sent (that one sets HALT_ALL): dropped and counted, not logged each time (on x2APIC machines a
            // sandbox can aim NMIs at itself through its LVT entries).
            if !WATCHDOG_NMI.load(Ordering::Relaxed) {
                refuse(sandbox, RefusalKind::Nmi, 2);
            }
            true
        }
        Exit::Exception { info } => stop(sandbox, "exception", format_args!("info=0x{:x}", info)),
        Exit::InitSipi => true, // cannot come from a sandbox (IPIs filtered); ignored
        // INVD would drop dirty lines of memory others share; the caches are coherent, so it is a no-op.
        Exit::Invd => {
            skip_instruction();
            true
        }
        Exit::Forbidden => {
            inject_ud();
            true
        }
        Exit::MemoryViolation { gpa, write: true, .. } if is_apic_page(gpa) => apic_write(sandbox, regs, gpa),
        Exit::MemoryViolation { gpa, write, fetch, detail } => {
            let access = if fetch { "fetch" } else if write { "write" } else { "read" };
            stop(sandbox, "memory_violation", format_args!("gpa=0x{:x} access={} detail=0x{:x}", gpa, access, detail))
        }
        Exit::Shutdown => stop(sandbox, "shutdown", format_args!("triple_fault=1")),
        Exit::EntryFailed { detail } => stop(sandbox, "entry_failed", format_args!("detail=0x{:x}", detail)),
        Exit::Other { code, detail } => {
            stop(sandbox, backend::raw_exit_name(code), format_args!("exit_code=0x{:x} detail=0x{:x}", code, detail))
        }
    }
}

/// What the monitor is asked to do (from the kernel command line and the firmware tables).
pub struct MonitorOptions<'a> {
    pub run: Option<&'a str>,
    pub slice_mib: Option<u64>,
    pub watchdog_ms: Option<u64>,
    pub apic_passthrough: bool,
    /// `nic=0,1`: the sandboxes sharing the e1000.
    pub nic_sharers: Option<&'a str>,
    /// `nic_mac=device`: every sharer uses the NIC's own MAC (told apart by IPv4 address only).
    pub nic_device_mac: bool,
    /// `recovery=restart|none` (all sandboxes) or one entry per sandbox.
    pub recovery: Option<&'a str>,
    pub topology: &'a Topology,
    /// What booted the machine ("bios" or "uefi"), for the boot report.
    pub firmware: &'static str,
}

/// The shared NIC: which sandboxes share it (sharer j = `sharers[j]`) and where it is.
struct NicGrant {
    sharers: Vec<u32>,
    nic: crate::net::device::Claimed,
    /// Its I/O APIC entry (for re-routing after a remote recovery) and whether it uses logical delivery.
    ioapic: questv_arch::ioapic::IoApic,
    pin: u32,
    active_low: bool,
    logical: bool,
    /// The logical destination now (one bit per sandbox core that still receives it).
    mask: AtomicU32,
}

/// Sandboxes whose NIC role moved to another sandbox (remote recovery): they are relaunched without it.
static NIC_MOVED: AtomicU64 = AtomicU64::new(0);
/// Remote recovery, monitor to monitor: per target core, the sharers (bit j) it is asked to take over, and
/// those it has (its acknowledgement).
static TAKEOVER_REQUEST: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
static TAKEOVER_ACK: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
/// Sandboxes running and in service (bit = sandbox): set at BOOTED, cleared when one faults, finishes or is
/// stopped. A takeover target must be one of them (never one that is itself recovering).
static IN_SERVICE: AtomicU64 = AtomicU64::new(0);
/// The I/O APIC's index/data pair is not reentrant: one monitor at a time reprograms it after boot.
static IOAPIC_LOCK: spin::Mutex<()> = spin::Mutex::new(());

fn bit(sandbox: u32) -> u64 {
    1u64.checked_shl(sandbox).unwrap_or(0)
}

fn nic_role(sandbox: u32) -> Option<(usize, &'static NicGrant)> {
    if NIC_MOVED.load(Ordering::Acquire) & bit(sandbox) != 0 {
        return None;
    }
    nic_grant().and_then(|g| g.sharers.iter().position(|&x| x == sandbox).map(|j| (j, g)))
}

static NIC_GRANT: spin::Once<Option<NicGrant>> = spin::Once::new();

fn nic_grant() -> Option<&'static NicGrant> {
    NIC_GRANT.get().and_then(Option::as_ref)
}

/// Claim the e1000 for the sandboxes in `list` (paper §3.6): each gets a virtual MAC and an IPv4 address in the
/// DMA region's control block, and the I/O APIC delivers the NIC's interrupt to exactly their cores (fixed,
/// logical destination, edge triggered) — straight into the guests, no exit. The second-stage mappings and the
/// command-line arguments follow in `prepare`.
fn grant_nic(pci: &mut impl questv_drivers::pci::ConfigSpace, list: &str, device_mac: bool, sandboxes: u32, topology: &Topology) -> Result<NicGrant, String> {
    let sharers = crate::net::parse_sharers(list, sandboxes, questv_drivers::e1000::MAX_SHARERS)?;
    if sharers.is_empty() {
        return Err(format!("nic={list}: no sandbox named"));
    }
    let ids: Vec<(u64, [u8; 4])> = (0..sharers.len())
        // MAC 0: the initialising sharer fills in the NIC's EEPROM address for everyone.
        .map(|j| (if device_mac { 0 } else { questv_drivers::e1000::mac_to_u64(crate::net::sharer_mac(j)) }, crate::net::sharer_ip(j)))
        .collect();
    let nic = crate::net::device::claim(pci, &ids)?;
    // Logical ids: xAPIC flat, bit = core index (set in launch_here); x2APIC cluster 0, bit = APIC id (fixed by
    // the hardware; the I/O APIC's 8-bit destination reaches cluster 0 only).
    let mut mask = 0u32;
    for &s in &sharers {
        let bit = if lapic::is_x2apic() { smp::apic_id(s) } else { s };
        if bit >= 8 {
            return Err(format!("nic: sandbox {s} (APIC id {}) is beyond the 8 logical ids an I/O APIC entry can name", smp::apic_id(s)));
        }
        mask |= 1 << bit;
    }
    let (gsi, active_low) = crate::net::device::line_to_gsi(topology, nic.irq_line);
    let (ioapic, pin) = crate::net::device::ioapic_for(topology, gsi)?;
    // An x2APIC LDR is derived from the APIC id and never 0; Bochs 2.7 leaves it 0 when x2APIC mode is turned
    // on (fixed in later Bochs), so no logical destination ever matches. There the interrupt goes to every core
    // (physical broadcast) and the sandboxes that do not share the NIC acknowledge it and ignore it.
    let ldr_broken = lapic::is_x2apic() && lapic::logical_id() == 0;
    let logical = !ldr_broken;
    let delivery = if ldr_broken {
        ioapic.route(pin, crate::net::VECTOR_NIC, 0xFF, false, active_low);
        "physical_broadcast"
    } else {
        ioapic.route_logical(pin, crate::net::VECTOR_NIC, mask as u8, false, active_low);
        "logical"
    };
    result!(
        "nic",
        "mode=vt bdf={:02x}:{:02x}.{} device=0x{:04x} mmio=0x{:x} dma=0x{:x} irq_line={} gsi={} delivery={} logical_dest=0x{:02x} sharers={}",
        nic.bdf.0, nic.bdf.1, nic.bdf.2, nic.device_id, nic.mmio, nic.dma, nic.irq_line, gsi, delivery, mask,
        sharers.iter().map(|s| format!("{s}")).collect::<Vec<_>>().join(",")
    );
    Ok(NicGrant { sharers, nic, ioapic, pin, active_low, logical, mask: AtomicU32::new(mask) })
}

/// Arm the SVM watchdog: the PIT's IRQ 0 routed through the I/O APIC as an NMI to every core, at half the
/// watchdog period (at least 19 Hz: the PIT's divisor is 16 bits). Returns the tick period in microseconds.
fn arm_watchdog_nmi(topology: &Topology, watchdog_ms: u64) -> Result<u64, String> {
    let irq0 = topology.isa_irq(0);
    let io = topology
        .io_apics
        .iter()
        .find(|io| irq0.gsi >= io.gsi_base && irq0.gsi < io.gsi_base + 24)
        .ok_or("no I/O APIC for the PIT's interrupt")?;
    // SAFETY: address from the MADT, inside the uncached identity mapping; only the monitor programs it.
    let ioapic = unsafe { questv_arch::ioapic::IoApic::new(u64::from(io.address), io.id, io.gsi_base) };
    ioapic.route_nmi_broadcast(irq0.gsi - io.gsi_base, irq0.active_low);
    WATCHDOG_NMI.store(true, Ordering::SeqCst);
    Ok(questv_arch::timer::pit_periodic((2000 / watchdog_ms.max(1)).max(19)))
}

/// Run the monitor: plan, prepare and launch one sandbox per online core. Returns a status only if VT
/// cannot start at all.
pub fn run_monitor(opts: &MonitorOptions) -> i32 {
    let caps = match backend::detect() {
        Ok(c) => c,
        Err(e) => {
            kprintln!("{} ({:?})", backend::NEEDS_VIRT_MESSAGE, e);
            return 3;
        }
    };
    let arch = caps.arch();
    let apic = if lapic::is_x2apic() {
        ApicAccess::X2apic
    } else if opts.apic_passthrough {
        ApicAccess::XapicPassthrough
    } else {
        ApicAccess::XapicTrapped
    };
    APIC_ACCESS.call_once(|| apic);
    if apic == ApicAccess::XapicPassthrough {
        log::warn!("apic=passthrough: sandboxes write their APIC directly; IPIs are NOT filtered (measurement only)");
    }
    let watchdog_ms = opts.watchdog_ms.unwrap_or(0);
    let tsc_hz = smp::TSC_HZ.load(Ordering::SeqCst);
    let watchdog_cycles = tsc_hz / 1000 * watchdog_ms;
    let mut settings = RunSettings { caps, vmx_controls: None, preemption_timer: None };
    match caps {
        Caps::Vmx(_) => {
            let controls = match vmcs::controls(watchdog_ms > 0) {
                Ok(c) => c,
                Err(e) => {
                    kprintln!("VT: this CPU cannot run the monitor's VMCS controls: {:?}", e);
                    return 3;
                }
            };
            result!("vmcs", "pin=0x{:x} proc=0x{:x} proc2=0x{:x} exit=0x{:x} entry=0x{:x}", controls.pin, controls.proc, controls.proc2, controls.exit, controls.entry);
            settings.vmx_controls = Some(controls);
            settings.preemption_timer = (watchdog_ms > 0).then(|| (watchdog_cycles >> vmcs::preemption_timer_rate()).clamp(1, u64::from(u32::MAX)) as u32);
        }
        Caps::Svm(c) => {
            result!("vmcb", "intercepts=0x{:08x}_{:08x} nested_paging=1 asids={} next_rip_save={}", vmcb::intercept::MISC2, vmcb::intercept::MISC1, c.nasid, u8::from(c.next_rip_save));
        }
    }
    result!("monitor", "arch={} apic={}", arch.name(), apic.name());
    WATCHDOG_CYCLES.store(watchdog_cycles, Ordering::SeqCst);

    // DMA: no sandbox owns a device yet, so no function keeps bus mastering.
    // SAFETY: the monitor is the only user of the PCI configuration ports (never granted to a sandbox) and
    // runs this on the BSP before any sandbox starts.
    let mut pci = unsafe { questv_drivers::pci::PortConfigSpace::new() };
    let grant = match opts.nic_sharers {
        Some(list) => match grant_nic(&mut pci, list, opts.nic_device_mac, smp::cpus_online(), opts.topology) {
            Ok(g) => Some(g),
            Err(e) => {
                kprintln!("VT: {}", e);
                return 3;
            }
        },
        None => None,
    };
    let owned: Vec<(u8, u8, u8)> = grant.iter().map(|g| g.nic.bdf).collect();
    NIC_GRANT.call_once(|| grant);
    let (functions, cleared) = questv_drivers::pci::disable_bus_mastering_except(&mut pci, &owned);
    result!("pci", "functions={} bus_master_cleared={}", functions, cleared);

    let n = smp::cpus_online();
    let runs = kmem::free_runs(partition::ALIGN);
    let free: Vec<partition::Region> = runs.iter().map(|r| partition::Region { start: r.start, end: r.end }).collect();
    // Keep 16 MiB for the monitor itself (second-stage tables, control blocks, stacks).
    let reserve = 16 << 20;
    let mut free = free;
    if let Some(last) = free.iter_mut().max_by_key(|r| r.end - r.start) {
        last.start = (last.start + reserve).min(last.end);
    }
    let plan = match partition::plan(&free, n, opts.slice_mib.map(|m| m << 20), SHARED_SIZE) {
        Ok(p) => p,
        Err(e) => {
            kprintln!("VT: cannot partition memory: {}", e);
            return 3;
        }
    };
    for s in &plan.slices {
        kmem::take_range(Region::new(s.host_base, s.host_base + s.size)).expect("planned slice not free");
    }
    kmem::take_range(Region::new(plan.shared.start, plan.shared.end)).expect("planned shared region not free");
    // SAFETY: the shared region was just taken for this purpose.
    unsafe { core::ptr::write_bytes(plan.shared.start as *mut u8, 0, SHARED_SIZE as usize) };
    SHARED_BASE.store(plan.shared.start, Ordering::SeqCst);
    // SAFETY: the info page is the first page of the zeroed shared region.
    unsafe {
        core::ptr::write_volatile((plan.shared.start + info::MAGIC_OFFSET) as *mut u64, info::MAGIC);
        core::ptr::write_volatile((plan.shared.start + info::VERSION_OFFSET) as *mut u32, info::VERSION);
        core::ptr::write_volatile((plan.shared.start + info::SANDBOXES_OFFSET) as *mut u32, n);
    }
    let policies = match crate::recovery::parse_policies(opts.recovery, n) {
        Ok(p) => p,
        Err(e) => {
            kprintln!("VT: {}", e);
            return 3;
        }
    };
    result!("recovery", "policies={}", policies.iter().map(|p| p.name()).collect::<Vec<_>>().join(","));
    STATE.call_once(|| {
        plan.slices
            .iter()
            .map(|s| {
                spin::Mutex::new(Sandbox {
                    host_base: s.host_base,
                    size: s.size,
                    refusals: Refusals::new(),
                    exits: [0; ExitKind::COUNT],
                    icr_high: 0,
                    line: [0; 160],
                    line_len: 0,
                    heartbeat: 0,
                    progress_tsc: 0,
                    policy: policies[s.sandbox as usize],
                    history: History::default(),
                    recovering_since: 0,
                    checkpoints: Default::default(),
                    component: None,
                    read_only: Vec::new(),
                })
            })
            .collect()
    });
    let configs = match prepare(&plan, opts.run, settings) {
        Ok(c) => c,
        Err(e) => {
            kprintln!("VT: {}", e);
            return 3;
        }
    };
    LAUNCH.call_once(|| configs);
    SANDBOXES.store(n, Ordering::SeqCst);
    backend::set_exit_handler(on_exit);
    questv_arch::trap::IGNORE_STRAY_NMIS.store(true, Ordering::SeqCst);
    // The watchdog: the VMX-preemption timer (armed in each VMCS), or on SVM, which has none, the PIT's NMI.
    match (arch, watchdog_ms) {
        (_, 0) => result!("watchdog", "ms=0 mechanism=off"),
        (Arch::Vmx, _) => result!("watchdog", "ms={} mechanism=preemption_timer timer_value={}", watchdog_ms, settings.preemption_timer.unwrap_or(0)),
        (Arch::Svm, _) => match arm_watchdog_nmi(opts.topology, watchdog_ms) {
            Ok(period_us) => result!("watchdog", "ms={} mechanism=pit_nmi period_us={}", watchdog_ms, period_us),
            Err(e) => {
                kprintln!("VT: cannot arm the watchdog: {}", e);
                return 3;
            }
        },
    }
    result!("boot", "cpus_online={} mode=vt sandboxes={} slice_mib={} role=monitor firmware={}", n, n, plan.slices[0].size >> 20, opts.firmware);
    for c in 1..n {
        sched::spawn_on(c, "launch", launch_thread, 0);
    }
    launch_here()
}
