//! The VT build's monitor side (paper §3.1–3.3): after the SMP bring-up, carve one memory slice per core, load
//! a pristine copy of this kernel into each slice, give each its own EPT, and launch it as that core's
//! sandbox. The VMX-root mechanics (VMXON, VMCS, exits) are in the `vmx` crate; this module decides layout and
//! policy: what the sandboxes see, what a hypercall does, and what happens to a sandbox that faults (it is
//! stopped and reported; the others carry on).

use crate::bootinfo::{self, Module};
use crate::mm::kmem;
use crate::mm::memmap::Region;
use crate::{kprintln, result, sched, smp};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use questv_arch::paging::PAGE_SIZE;
use questv_arch::{cpu, lapic, percpu};
use questv_vmx::ept::{Ept, MemType, Perms};
use questv_vmx::partition::{self, Plan};
use questv_vmx::vmcs::{self, reason, GuestRegs, LaunchConfig};

/// Where every sandbox sees the shared region (inside the 3–4 GiB range its own page tables map uncached).
pub const SHARED_GPA: u64 = 0xE000_0000;
pub const SHARED_SIZE: u64 = 2 << 20;
/// Hypercalls (VMCALL with the number in RAX).
pub const HC_DONE: u64 = 1;
pub const HC_REPORT_EXITS: u64 = 2;
/// Returns this sandbox's VM exits so far (this call included) in RAX.
pub const HC_EXIT_COUNT: u64 = 3;

const GUEST_MODULES_FROM_TOP: u64 = 8 << 20;
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

static LAUNCH: spin::Once<Vec<LaunchConfig>> = spin::Once::new();
/// EPT roots by sandbox (channels are mapped into them after launch).
static EPT_ROOTS: spin::Once<Vec<u64>> = spin::Once::new();
/// Monitor memory for control structures and channels (see MonitorPool).
static POOL: crate::sync::IrqSpinlock<Option<MonitorPool>> = crate::sync::IrqSpinlock::new(None);
/// Channels: (endpoint a, endpoint b, host address). Guarded by the POOL lock's critical sections.
static CHANNELS: crate::sync::IrqSpinlock<Vec<(u32, u32, u64)>> = crate::sync::IrqSpinlock::new(Vec::new());
static SHARED_BASE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The shared region's first page (paper §3.5's info page): console lock word at 0 (kernel/src/console.rs),
/// then magic, version, sandbox count, a boot barrier, and the channel directory.
pub mod info {
    pub const MAGIC_OFFSET: u64 = 8;
    pub const MAGIC: u64 = u64::from_le_bytes(*b"QUESTVSH");
    pub const VERSION_OFFSET: u64 = 16;
    pub const VERSION: u32 = 1;
    pub const SANDBOXES_OFFSET: u64 = 20;
    pub const BARRIER_OFFSET: u64 = 24;
    pub const CHANNEL_COUNT_OFFSET: u64 = 32;
    /// Directory entries: (endpoint a u32, endpoint b u32, address u64), 16 bytes each.
    pub const CHANNEL_DIR_OFFSET: u64 = 64;
    pub const MAX_CHANNELS: u64 = 128;
}

/// Monitor memory for sandbox control structures (EPT tables, VMXON/VMCS pages, MSR bitmaps, exit stacks),
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
            .ok_or("out of monitor memory for VMX structures")?;
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

/// Load the kernel ELF's segments at their physical addresses inside the slice starting at `host_base`.
fn load_kernel(elf: &[u8], host_base: u64, slice: u64) -> Result<u32, String> {
    let e = goblin::elf::Elf::parse(elf).map_err(|e| format!("kernel module is not an ELF: {e}"))?;
    for ph in e.program_headers.iter().filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD) {
        let end = ph.p_paddr.checked_add(ph.p_memsz).filter(|&end| end <= slice.min(LOW_ALIAS)).ok_or("kernel segment outside the slice's low part")?;
        let file = elf.get(ph.p_offset as usize..(ph.p_offset + ph.p_filesz) as usize).ok_or("kernel segment beyond file")?;
        let _ = end;
        // SAFETY: the destination lies inside this sandbox's slice, which the monitor owns and nothing uses yet.
        unsafe {
            let dst = (host_base + ph.p_paddr) as *mut u8;
            core::ptr::copy_nonoverlapping(file.as_ptr(), dst, file.len());
            core::ptr::write_bytes(dst.add(file.len()), 0, (ph.p_memsz - ph.p_filesz) as usize);
        }
    }
    u32::try_from(e.header.e_entry).map_err(|_| String::from("kernel entry above 4 GiB"))
}

/// Copy `data` to guest-physical `gpa` of the slice at `host_base` (within one of its two parts).
fn put(host_base: u64, gpa: u64, data: &[u8]) {
    // SAFETY: callers keep [gpa, gpa + len) inside the slice's guest-physical ranges.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), host_of(host_base, gpa) as *mut u8, data.len()) };
}

fn prepare(plan: &Plan, run: Option<&str>) -> Result<Vec<LaunchConfig>, String> {
    let kernel = crate::ramdisk::find("kernel").ok_or("no `kernel` module: the runner loads the image twice in VT mode")?;
    let tsc = smp::TSC_HZ.load(Ordering::SeqCst);
    let lapic_hz = smp::lapic_timer_hz();
    let mut configs = Vec::new();
    let mut pool = MonitorPool::new()?;
    let mut roots = Vec::new();
    for s in &plan.slices {
        // SAFETY: the slice was taken from the frame allocator for this sandbox.
        unsafe { core::ptr::write_bytes(s.host_base as *mut u8, 0, s.size as usize) };
        let entry = load_kernel(kernel, s.host_base, s.size)?;
        let top = s.host_base + s.size; // guest-physical end of the slice (its high part is identity mapped)
        // The ramdisk, minus the kernel itself.
        let mut gpa = top - GUEST_MODULES_FROM_TOP;
        let mut mods = Vec::new();
        for name in crate::ramdisk::names().filter(|n| *n != "kernel") {
            let bytes = crate::ramdisk::find(name).unwrap();
            if gpa + bytes.len() as u64 > top - GUEST_MBI_FROM_TOP {
                return Err(String::from("ramdisk too large for the sandbox module area"));
            }
            put(s.host_base, gpa, bytes);
            mods.push((gpa as u32, (gpa + bytes.len() as u64) as u32, name));
            gpa = (gpa + bytes.len() as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        }
        let modules: Vec<Module> = mods.iter().map(|&(start, end, name)| Module { start, end, name }).collect();
        let mut cmdline = format!(
            "mode=vt sandbox={} shared=0x{:x} tsc_hz={} lapic_hz={}",
            s.sandbox, SHARED_GPA, tsc, lapic_hz
        );
        if let Some(r) = run {
            cmdline.push_str(" run=");
            cmdline.push_str(r);
        }
        // Addresses the attack test hook aims at: the next sandbox's slice, this sandbox's VMCS (monitor
        // memory) and its EPT root.
        let peer = plan.slices[(s.sandbox as usize + 1) % plan.slices.len()].host_base;
        let vmcs_page = pool.pages(1)?;
        let memory = [
            (0, 0x9F000, bootinfo::MEMORY_AVAILABLE),
            (0x9F000, 0x10_0000 - 0x9F000, bootinfo::MEMORY_RESERVED),
            (0x10_0000, LOW_ALIAS - 0x10_0000, bootinfo::MEMORY_AVAILABLE),
            (s.host_base + LOW_ALIAS, s.size - LOW_ALIAS, bootinfo::MEMORY_AVAILABLE),
        ];
        let mbi_gpa = top - GUEST_MBI_FROM_TOP;

        // EPT: the slice at guest-physical 0, the shared region at SHARED_GPA. Nothing else: not the monitor,
        // not the other slices, not any EPT table (all allocated from monitor memory).
        let m = &mut pool;
        let mut ept = Ept::new(m).map_err(|e| format!("EPT: {e:?}"))?;
        ept.map_range(m, 0, s.host_base, LOW_ALIAS, Perms::RWX, MemType::WriteBack, true).map_err(|e| format!("EPT: {e:?}"))?;
        let high = s.host_base + LOW_ALIAS;
        ept.map_range(m, high, high, s.size - LOW_ALIAS, Perms::RWX, MemType::WriteBack, true)
            .map_err(|e| format!("EPT: {e:?}"))?;
        ept.map_range(m, SHARED_GPA, plan.shared.start, SHARED_SIZE, Perms::RW, MemType::WriteBack, false)
            .map_err(|e| format!("EPT: {e:?}"))?;
        cmdline = cmdline.replacen(" run=", &format!(" peer=0x{:x} vmcs=0x{:x} ept=0x{:x} run=", peer, vmcs_page, ept.root()), 1);
        if run.is_none() {
            cmdline.push_str(&format!(" peer=0x{:x} vmcs=0x{:x} ept=0x{:x}", peer, vmcs_page, ept.root()));
        }
        let mbi = bootinfo::build(&cmdline, &memory, &modules);
        put(s.host_base, mbi_gpa, &mbi);
        roots.push(ept.root());
        let stack = pool.pages(4)?;
        configs.push(LaunchConfig {
            vmxon: pool.pages(1)?,
            vmcs: vmcs_page,
            msr_bitmap: pool.pages(1)?,
            eptp: ept.eptp(),
            entry,
            rax: 0x36D7_6289,
            rbx: mbi_gpa as u32,
            host_stack_top: stack + 4 * PAGE_SIZE,
            host_tr_base: 0,
        });
        log::info!(
            "sandbox {}: {} MiB at host 0x{:x}, entry 0x{:x}, {} module(s)",
            s.sandbox, s.size >> 20, s.host_base, entry, modules.len()
        );
    }
    EPT_ROOTS.call_once(|| roots);
    *POOL.lock() = Some(pool);
    Ok(configs)
}

/// Channel between `me` and `peer`: allocated on first open from monitor memory and mapped, at its host
/// address, into exactly those two sandboxes' EPTs (adding mappings needs no invalidation). Returns its address.
fn channel_open(me: u32, peer: u32) -> Result<u64, i64> {
    let n = SANDBOXES.load(Ordering::SeqCst);
    if peer >= n || peer == me {
        return Err(-22);
    }
    let key = (me.min(peer), me.max(peer));
    let mut chans = CHANNELS.lock();
    if let Some(&(_, _, base)) = chans.iter().find(|c| (c.0, c.1) == key) {
        return Ok(base);
    }
    if chans.len() as u64 >= info::MAX_CHANNELS {
        return Err(-12);
    }
    let mut pool = POOL.lock();
    let pool = pool.as_mut().ok_or(-12i64)?;
    let pages = crate::channel::endpoint::CHANNEL_BYTES / PAGE_SIZE;
    let base = pool.pages(pages).map_err(|_| -12i64)?;
    let roots = EPT_ROOTS.get().ok_or(-12i64)?;
    for e in [key.0, key.1] {
        let mut ept = Ept::from_root(roots[e as usize]);
        ept.map_range(pool, base, base, pages * PAGE_SIZE, Perms::RW, MemType::WriteBack, false).map_err(|_| -12i64)?;
    }
    // Publish in the info page's channel directory.
    let shared = SHARED_BASE.load(Ordering::SeqCst);
    let i = chans.len() as u64;
    // SAFETY: the info page is monitor-initialised shared memory; the directory slot is within it.
    unsafe {
        let entry = (shared + info::CHANNEL_DIR_OFFSET + 16 * i) as *mut u32;
        core::ptr::write_volatile(entry, key.0);
        core::ptr::write_volatile(entry.add(1), key.1);
        core::ptr::write_volatile(entry.add(2) as *mut u64, base);
        (*((shared + info::CHANNEL_COUNT_OFFSET) as *const core::sync::atomic::AtomicU32)).store(i as u32 + 1, Ordering::Release);
    }
    chans.push((key.0, key.1, base));
    log::info!("channel {}<->{} at 0x{:x} ({} pages)", key.0, key.1, base, pages);
    Ok(base)
}

/// Enter VMX root on the calling core and launch its sandbox. Returns only on failure.
fn launch_here() -> ! {
    let cpu_index = percpu::cpu_index();
    cpu::disable_interrupts();
    lapic::timer_stop();
    let mut cfg = LAUNCH.get().expect("no launch plan")[cpu_index as usize];
    cfg.host_tr_base = smp::tss_base();
    // SAFETY: vmxon/vmcs/msr-bitmap pages are zeroed frames owned by this core; capabilities were checked;
    // interrupts are off and stay off in VMX root.
    let err = unsafe {
        match vmcs::enable(cfg.vmxon) {
            Ok(()) => vmcs::launch(&cfg),
            Err(e) => e,
        }
    };
    kprintln!("RESULT sandbox_fault sandbox={} reason=launch_failed error={:?}", cpu_index, err);
    sandbox_finished(cpu_index, 126);
    cpu::halt_forever()
}

extern "C" fn launch_thread(_: u64) -> ! {
    launch_here()
}

fn report_exits(sandbox: u32) {
    let mut line = String::new();
    let mut total = 0;
    for (r, n) in vmcs::exit_counts(sandbox) {
        total += n;
        line.push_str(&format!(" {}={}", reason::name(r), n));
    }
    result!("vmexits", "sandbox={} total={}{}", sandbox, total, line);
}

fn sandbox_finished(sandbox: u32, status: i32) {
    WORST_STATUS.fetch_max(status, Ordering::SeqCst);
    result!("sandbox_done", "sandbox={} status={}", sandbox, status);
    if FINISHED.fetch_add(1, Ordering::SeqCst) + 1 == SANDBOXES.load(Ordering::SeqCst) {
        crate::boot::finish(WORST_STATUS.load(Ordering::SeqCst));
    }
}

fn skip_instruction() {
    // SAFETY: only called from on_exit, i.e. in the VM-exit handler with this core's VMCS current.
    unsafe { vmcs::skip_instruction() }
}

/// The monitor's exit policy (runs in VMX root on the exiting core).
fn on_exit(regs: &mut GuestRegs, r: u32) -> bool {
    let sandbox = percpu::cpu_index();
    match r {
        reason::CPUID => {
            let c = cpu::cpuid(regs.rax as u32, regs.rcx as u32);
            let mut ecx = c.ecx;
            if regs.rax as u32 == 1 {
                ecx &= !(1 << 5); // no VMX inside a sandbox
                ecx |= 1 << 31; // running under a hypervisor
            }
            (regs.rax, regs.rbx, regs.rcx, regs.rdx) = (u64::from(c.eax), u64::from(c.ebx), u64::from(ecx), u64::from(c.edx));
            skip_instruction();
            true
        }
        reason::VMCALL => match regs.rax {
            HC_DONE => {
                report_exits(sandbox);
                sandbox_finished(sandbox, regs.rbx as i32);
                false
            }
            HC_EXIT_COUNT => {
                regs.rax = vmcs::exit_counts(sandbox).map(|(_, n)| n).sum();
                skip_instruction();
                true
            }
            crate::boot::HC_CHANNEL_OPEN => {
                regs.rax = match channel_open(sandbox, regs.rbx as u32) {
                    Ok(base) => base,
                    Err(e) => e as u64,
                };
                skip_instruction();
                true
            }
            crate::boot::HC_PEER_APIC => {
                let peer = regs.rbx as u32;
                regs.rax = if peer < SANDBOXES.load(Ordering::SeqCst) { u64::from(smp::apic_id(peer)) } else { (-22i64) as u64 };
                skip_instruction();
                true
            }
            HC_REPORT_EXITS => {
                report_exits(sandbox);
                regs.rax = 0;
                skip_instruction();
                true
            }
            _ => {
                regs.rax = (-38i64) as u64; // ENOSYS
                skip_instruction();
                true
            }
        },
        reason::INIT | reason::SIPI => true, // another sandbox tried to reset this core: ignored
        19..=27 | reason::INVEPT | reason::INVVPID => {
            // SAFETY: in the VM-exit handler with this core's VMCS current.
            unsafe { vmcs::inject_ud() };
            true
        }
        _ => {
            // SAFETY: in the VM-exit handler with this core's VMCS current.
            let (gpa, qual, rip) = unsafe {
                (vmcs::vmread(vmcs::field::GUEST_PHYSICAL_ADDRESS), vmcs::vmread(vmcs::field::EXIT_QUALIFICATION), vmcs::vmread(vmcs::field::GUEST_RIP))
            };
            result!(
                "sandbox_fault",
                "sandbox={} reason={} gpa=0x{:x} qualification=0x{:x} rip=0x{:x} action=stopped",
                sandbox, reason::name(r), gpa, qual, rip
            );
            report_exits(sandbox);
            sandbox_finished(sandbox, 128 + 9);
            false
        }
    }
}

/// Run the monitor: plan, prepare and launch one sandbox per online core. Returns a status only if VT
/// cannot start at all.
pub fn run_monitor(run: Option<&str>, slice_mib: Option<u64>) -> i32 {
    if let Err(e) = questv_vmx::caps::evaluate(&questv_vmx::caps::read()) {
        kprintln!("{} ({:?})", questv_vmx::caps::NEEDS_VMX_MESSAGE, e);
        return 3;
    }
    let n = smp::cpus_online();
    let runs = kmem::free_runs(partition::ALIGN);
    let free: Vec<partition::Region> = runs.iter().map(|r| partition::Region { start: r.start, end: r.end }).collect();
    // Keep 16 MiB for the monitor itself (EPT tables, VMCS pages, stacks).
    let reserve = 16 << 20;
    let mut free = free;
    if let Some(last) = free.iter_mut().max_by_key(|r| r.end - r.start) {
        last.start = (last.start + reserve).min(last.end);
    }
    let plan = match partition::plan(&free, n, slice_mib.map(|m| m << 20), SHARED_SIZE) {
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
    // SAFETY: the shared region was just taken for this purpose; zero it (its first word is the console lock).
    unsafe { core::ptr::write_bytes(plan.shared.start as *mut u8, 0, SHARED_SIZE as usize) };
    crate::console::set_shared_lock(plan.shared.start);
    SHARED_BASE.store(plan.shared.start, Ordering::SeqCst);
    // SAFETY: the info page is the first page of the zeroed shared region.
    unsafe {
        core::ptr::write_volatile((plan.shared.start + info::MAGIC_OFFSET) as *mut u64, info::MAGIC);
        core::ptr::write_volatile((plan.shared.start + info::VERSION_OFFSET) as *mut u32, info::VERSION);
        core::ptr::write_volatile((plan.shared.start + info::SANDBOXES_OFFSET) as *mut u32, n);
    }
    let configs = match prepare(&plan, run) {
        Ok(c) => c,
        Err(e) => {
            kprintln!("VT: {}", e);
            return 3;
        }
    };
    LAUNCH.call_once(|| configs);
    SANDBOXES.store(n, Ordering::SeqCst);
    vmcs::set_exit_handler(on_exit);
    result!("boot", "cpus_online={} mode=vt sandboxes={} slice_mib={} role=monitor", n, n, plan.slices[0].size >> 20);
    for c in 1..n {
        sched::spawn_on(c, "launch", launch_thread, 0);
    }
    launch_here()
}
