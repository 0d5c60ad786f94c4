//! The VT build's monitor side (paper §3.1–3.3): after the SMP bring-up, carve one memory slice per core, load
//! a pristine copy of this kernel into each slice, give each its own EPT, and launch it as that core's
//! sandbox. The VMX-root mechanics (VMXON, VMCS, exits) are in the `vmx` crate; this module decides layout and
//! policy: what the sandboxes see and may touch (deny by default: `questv_vmx::policy`), what a hypercall
//! does (ABI: `questv_vmx::hypercall`), and what happens to a sandbox that faults, hangs or attacks (it is
//! stopped and reported; the others carry on). docs/vt.md has the grant and exit tables.

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
use questv_vmx::hypercall::{self as hc, info, SHARED_GPA, SHARED_SIZE};
use questv_vmx::partition::{self, Plan};
use questv_vmx::policy::{self, Access, PortVerdict, RefusalKind, Refusals};
use questv_vmx::vmcs::{self, reason, GuestRegs, LaunchConfig};

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
/// Channels: (endpoint a, endpoint b, host address, endpoints that opened it: bit 0 = a, bit 1 = b).
static CHANNELS: crate::sync::IrqSpinlock<Vec<(u32, u32, u64, u8)>> = crate::sync::IrqSpinlock::new(Vec::new());
static SHARED_BASE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

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

/// Status a stopped sandbox is reported with (as a shell reports a process killed by SIGKILL).
const STATUS_STOPPED: i32 = 128 + 9;

/// What the monitor keeps per sandbox (touched only by that sandbox's core, in its exit handler).
struct Sandbox {
    host_base: u64,
    size: u64,
    refusals: Refusals,
    /// Console bytes of the line being assembled (printed with the `[sN]` prefix at its newline).
    line: [u8; 160],
    line_len: usize,
    /// Watchdog: last heartbeat value seen and the TSC when it last changed.
    heartbeat: u64,
    progress_tsc: u64,
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

fn prepare(plan: &Plan, run: Option<&str>, controls: vmcs::Controls, preemption_timer: Option<u32>) -> Result<Vec<LaunchConfig>, String> {
    let kernel = crate::ramdisk::find("kernel").ok_or("no `kernel` module: the runner loads the image twice in VT mode")?;
    let tsc = smp::TSC_HZ.load(Ordering::SeqCst);
    let lapic_hz = smp::lapic_timer_hz();
    let mut configs = Vec::new();
    let mut pool = MonitorPool::new()?;
    let mut roots = Vec::new();
    // The attack test hook gets monitor addresses to aim at; no other run sees them.
    let attack_test = run.is_some_and(|r| r.trim_start().starts_with("ktest attack"));
    // One MSR bitmap and one pair of I/O bitmaps serve every sandbox (same grants; read-only to the CPU).
    let msr_bitmap = pool.pages(1)?;
    let io_bitmaps = pool.pages(2)?;
    // SAFETY: freshly allocated, zeroed monitor pages, in no EPT.
    unsafe {
        policy::build_msr_bitmap(&mut *(msr_bitmap as *mut [u8; 4096]));
        policy::build_io_bitmaps(&mut *(io_bitmaps as *mut [u8; 4096]), &mut *((io_bitmaps + PAGE_SIZE) as *mut [u8; 4096]), policy::GRANTED_PORTS);
    }
    for s in &plan.slices {
        // SAFETY: the slice was taken from the frame allocator for this sandbox.
        unsafe { core::ptr::write_bytes(s.host_base as *mut u8, 0, s.size as usize) };
        let (entry, read_only) = load_kernel(kernel, s.host_base, s.size)?;
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
        let vmcs_page = pool.pages(1)?;
        // The heartbeat page (HEARTBEAT_GPA) lies in the reserved 0x9F000–0x100000 hole.
        let memory = [
            (0, 0x9F000, bootinfo::MEMORY_AVAILABLE),
            (0x9F000, 0x10_0000 - 0x9F000, bootinfo::MEMORY_RESERVED),
            (0x10_0000, LOW_ALIAS - 0x10_0000, bootinfo::MEMORY_AVAILABLE),
            (s.host_base + LOW_ALIAS, s.size - LOW_ALIAS, bootinfo::MEMORY_AVAILABLE),
        ];
        let mbi_gpa = top - GUEST_MBI_FROM_TOP;

        // EPT: the slice at guest-physical 0 (4 KiB pages below LOW_ALIAS so kernel text and rodata can be
        // read-only), the shared region at SHARED_GPA. Nothing else: not the monitor, not the other slices,
        // not any EPT table (all allocated from monitor memory).
        let m = &mut pool;
        let ept_err = |e| format!("EPT: {e:?}");
        let mut ept = Ept::new(m).map_err(ept_err)?;
        ept.map_range(m, 0, s.host_base, LOW_ALIAS, Perms::RWX, MemType::WriteBack, false).map_err(ept_err)?;
        for &(start, end, perms) in &read_only {
            for page in (start..end).step_by(PAGE_SIZE as usize) {
                ept.protect(m, page, perms).map_err(ept_err)?;
            }
        }
        let high = s.host_base + LOW_ALIAS;
        ept.map_range(m, high, high, s.size - LOW_ALIAS, Perms::RWX, MemType::WriteBack, true).map_err(ept_err)?;
        // Read-only: only the monitor writes the info page (a writable region would let any two sandboxes talk
        // outside the channel policy, or rewrite the directory the others read).
        ept.map_range(m, SHARED_GPA, plan.shared.start, SHARED_SIZE, Perms::R, MemType::WriteBack, false).map_err(ept_err)?;

        let mut cmdline = format!("mode=vt sandbox={} shared=0x{:x} tsc_hz={} lapic_hz={}", s.sandbox, SHARED_GPA, tsc, lapic_hz);
        if attack_test {
            // Targets for the attack hook: the next sandbox's slice, this sandbox's VMCS (monitor memory), its
            // EPT root.
            let peer = plan.slices[(s.sandbox as usize + 1) % plan.slices.len()].host_base;
            cmdline.push_str(&format!(" peer=0x{:x} vmcs=0x{:x} ept=0x{:x}", peer, vmcs_page, ept.root()));
        }
        if let Some(r) = run {
            cmdline.push_str(" run=");
            cmdline.push_str(r);
        }
        let mbi = bootinfo::build(&cmdline, &memory, &modules);
        put(s.host_base, mbi_gpa, &mbi);
        roots.push(ept.root());
        let stack = pool.pages(4)?;
        configs.push(LaunchConfig {
            vmxon: pool.pages(1)?,
            vmcs: vmcs_page,
            msr_bitmap,
            io_bitmap_a: io_bitmaps,
            io_bitmap_b: io_bitmaps + PAGE_SIZE,
            eptp: ept.eptp(),
            entry,
            rax: 0x36D7_6289,
            rbx: mbi_gpa as u32,
            host_stack_top: stack + 4 * PAGE_SIZE,
            host_tr_base: 0,
            controls,
            preemption_timer,
        });
        log::info!(
            "sandbox {}: {} MiB at host 0x{:x}, entry 0x{:x}, {} module(s), {} read-only kernel page(s)",
            s.sandbox, s.size >> 20, s.host_base, entry, modules.len(),
            read_only.iter().map(|r| (r.1 - r.0) / PAGE_SIZE).sum::<u64>()
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
        return Err(hc::EINVAL);
    }
    let key = (me.min(peer), me.max(peer));
    let mut chans = CHANNELS.lock();
    let my_bit = if me == key.0 { 1 } else { 2 };
    if let Some(c) = chans.iter_mut().find(|c| (c.0, c.1) == key) {
        c.3 |= my_bit;
        return Ok(c.2);
    }
    if chans.len() as u64 >= info::MAX_CHANNELS {
        return Err(hc::ENOMEM);
    }
    let mut pool = POOL.lock();
    let pool = pool.as_mut().ok_or(hc::ENOMEM)?;
    let pages = crate::channel::endpoint::CHANNEL_BYTES / PAGE_SIZE;
    let base = pool.pages(pages).map_err(|_| hc::ENOMEM)?;
    let roots = EPT_ROOTS.get().ok_or(hc::ENOMEM)?;
    for e in [key.0, key.1] {
        let mut ept = Ept::from_root(roots[e as usize]);
        ept.map_range(pool, base, base, pages * PAGE_SIZE, Perms::RW, MemType::WriteBack, false).map_err(|_| hc::ENOMEM)?;
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
    chans.push((key.0, key.1, base, my_bit));
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
    CHANNELS.lock().iter().any(|c| (c.0, c.1) == key && (c.3 == 3 || !both_open))
}

/// Enter VMX root on the calling core and launch its sandbox. Returns only on failure.
fn launch_here() -> ! {
    let cpu_index = percpu::cpu_index();
    cpu::disable_interrupts();
    lapic::timer_stop();
    let mut cfg = LAUNCH.get().expect("no launch plan")[cpu_index as usize];
    cfg.host_tr_base = smp::tss_base();
    // SAFETY: vmxon/vmcs/bitmap pages are monitor frames (the bitmaps shared read-only by all cores);
    // capabilities and controls were checked; interrupts are off and stay off in VMX root.
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

/// `RESULT vmexits` and one `RESULT sandbox_refused` line per refused (kind, port/MSR/reason).
fn report_exits(sandbox: u32) {
    let mut line = String::new();
    let mut total = 0;
    for (r, n) in vmcs::exit_counts(sandbox) {
        total += n;
        line.push_str(&format!(" {}={}", reason::name(r), n));
    }
    result!("vmexits", "sandbox={} total={}{}", sandbox, total, line);
    let refusals = state(sandbox).refusals.clone();
    for (kind, code, count) in refusals.iter() {
        let what = match kind {
            RefusalKind::Io => format!("port=0x{code:x}"),
            RefusalKind::Msr => format!("msr=0x{code:x}"),
            RefusalKind::Icr => format!("what={}", policy::IcrRefusal::name_of_code(code)),
            RefusalKind::Hypercall => format!("cpl={code}"),
            RefusalKind::Nmi => String::from("vector=2"),
        };
        result!("sandbox_refused", "sandbox={} kind={} {} count={}", sandbox, kind.name(), what, count);
    }
    if refusals.overflow > 0 {
        result!("sandbox_refused", "sandbox={} kind=other count={}", sandbox, refusals.overflow);
    }
}

fn sandbox_finished(sandbox: u32, status: i32) {
    WORST_STATUS.fetch_max(status, Ordering::SeqCst);
    result!("sandbox_done", "sandbox={} status={}", sandbox, status);
    if FINISHED.fetch_add(1, Ordering::SeqCst) + 1 == SANDBOXES.load(Ordering::SeqCst) {
        crate::machine::finish(WORST_STATUS.load(Ordering::SeqCst));
    }
}

/// Stop `sandbox` for good: one `RESULT sandbox_fault` line (reason and details), its exit report, done.
fn stop(sandbox: u32, reason: &str, details: core::fmt::Arguments) -> bool {
    flush_console(sandbox);
    // SAFETY: in the VM-exit handler with this core's VMCS current.
    let rip = unsafe { vmcs::vmread(vmcs::guest::RIP) };
    result!("sandbox_fault", "sandbox={} reason={} {} rip=0x{:x} action=stopped", sandbox, reason, details, rip);
    report_exits(sandbox);
    sandbox_finished(sandbox, STATUS_STOPPED);
    false
}

/// Count a refused access; the first of its kind gets a log line.
fn refuse(sandbox: u32, kind: RefusalKind, code: u64) {
    if state(sandbox).refusals.record(kind, code) {
        match kind {
            RefusalKind::Icr => log::warn!("sandbox {}: refused an IPI ({})", sandbox, policy::IcrRefusal::name_of_code(code)),
            _ => log::warn!("sandbox {}: refused {} 0x{:x}", sandbox, kind.name(), code),
        }
    }
}

fn skip_instruction() {
    // SAFETY: only called from on_exit, i.e. in the VM-exit handler with this core's VMCS current.
    unsafe { vmcs::skip_instruction() }
}

fn inject_gp() {
    // SAFETY: in the VM-exit handler with this core's VMCS current.
    unsafe { vmcs::inject_gp() }
}

fn inject_ud() {
    // SAFETY: in the VM-exit handler with this core's VMCS current.
    unsafe { vmcs::inject_ud() }
}

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
    // SAFETY: in the VM-exit handler with this core's VMCS current.
    let cpl = unsafe { vmcs::guest_cpl() };
    if cpl != 0 {
        // A user process may not talk to the monitor: #UD, as if VMCALL did not exist for it.
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
            return stop(sandbox, kind, format_args!("detail=0x{:x}", regs.rcx));
        }
        hc::EXIT_COUNT => Ok(vmcs::exit_counts(sandbox).map(|(_, n)| n).sum()),
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

fn port_io(sandbox: u32, regs: &mut GuestRegs) -> bool {
    // SAFETY: in the VM-exit handler with this core's VMCS current.
    let io = vmcs::decode_io_qualification(unsafe { vmcs::vmread(vmcs::ro::EXIT_QUALIFICATION) });
    let out_value = regs.rax & ((1u64 << (8 * u32::from(io.size))) - 1);
    match policy::classify_port(io.port, io.size, !io.input, policy::GRANTED_PORTS) {
        // Granted ports do not exit (their bitmap bits are clear).
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

fn msr_access(sandbox: u32, regs: &mut GuestRegs, write: bool) -> bool {
    let msr = regs.rcx as u32;
    let value = (regs.rdx << 32) | (regs.rax & 0xFFFF_FFFF);
    if write && msr == policy::MSR_X2APIC_ICR {
        let own = smp::apic_id(sandbox);
        match policy::check_icr(value, own, hc::CHANNEL_NOTIFY_VECTOR, |apic| has_channel_to_apic(sandbox, apic, true)) {
            Ok(ipi) => {
                // SAFETY: a checked fixed IPI (to itself or a channel peer), sent from this core's x2APIC.
                unsafe { cpu::wrmsr(policy::MSR_X2APIC_ICR, policy::icr_value(ipi)) };
                skip_instruction();
            }
            Err(why @ policy::IcrRefusal::Destination(apic)) if has_channel_to_apic(sandbox, apic, false) => {
                // A channel the peer has not opened yet: the notification is dropped (the message itself is in
                // the ring; the receiver polls or takes the next one), not an error for the sender's kernel.
                refuse(sandbox, RefusalKind::Icr, why.code());
                skip_instruction();
            }
            Err(why) => {
                refuse(sandbox, RefusalKind::Icr, why.code());
                inject_gp();
            }
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

/// The monitor's exit policy (runs in VMX root on the exiting core). Returns false to stop the sandbox.
fn on_exit(regs: &mut GuestRegs, r: u32) -> bool {
    let sandbox = percpu::cpu_index();
    if questv_arch::trap::HALT_ALL.load(Ordering::SeqCst) {
        return false; // the monitor is stopping the machine (its NMI brought this core out of the guest)
    }
    if watchdog_expired(sandbox) {
        let silent_ms = (cpu::rdtsc() - state(sandbox).progress_tsc) * 1000 / smp::TSC_HZ.load(Ordering::Relaxed).max(1);
        return stop(sandbox, "watchdog", format_args!("silent_ms={} exit={}", silent_ms, reason::name(r)));
    }
    match r {
        reason::CPUID => {
            let c = cpu::cpuid(regs.rax as u32, regs.rcx as u32);
            let mut ecx = c.ecx;
            if regs.rax as u32 == 1 {
                ecx &= !(1 << 5); // no VMX inside a sandbox
                ecx &= !((1 << 26) | (1 << 27)); // no XSAVE: XSETBV is refused
                ecx |= 1 << 31; // running under a hypervisor
            }
            (regs.rax, regs.rbx, regs.rcx, regs.rdx) = (u64::from(c.eax), u64::from(c.ebx), u64::from(ecx), u64::from(c.edx));
            skip_instruction();
            true
        }
        reason::VMCALL => hypercall(sandbox, regs),
        reason::IO => port_io(sandbox, regs),
        reason::RDMSR => msr_access(sandbox, regs, false),
        reason::WRMSR => msr_access(sandbox, regs, true),
        // The watchdog check above ran; the timer restarts at the next entry.
        reason::PREEMPTION_TIMER => true,
        reason::EXCEPTION_NMI => {
            // SAFETY: in the VM-exit handler with this core's VMCS current.
            let info = unsafe { vmcs::vmread(vmcs::ro::VMEXIT_INTERRUPTION_INFO) };
            if (info >> 8) & 7 == 2 {
                // Not one the monitor sent (that one sets HALT_ALL): dropped and counted, not logged each time (a
                // sandbox can aim NMIs at itself through its LVT entries).
                refuse(sandbox, RefusalKind::Nmi, 2);
                true
            } else {
                stop(sandbox, "exception", format_args!("info=0x{:x}", info))
            }
        }
        reason::INIT | reason::SIPI => true, // cannot come from a sandbox (ICR filtered); ignored
        // INVD would drop dirty lines of memory others share; the caches are coherent, so it is a no-op.
        reason::INVD => {
            skip_instruction();
            true
        }
        reason::XSETBV | reason::GETSEC | 19..=27 | reason::INVEPT | reason::INVVPID => {
            inject_ud();
            true
        }
        reason::EPT_VIOLATION | reason::EPT_MISCONFIG => {
            // SAFETY: in the VM-exit handler with this core's VMCS current.
            let (gpa, qual) = unsafe { (vmcs::vmread(vmcs::ro::GUEST_PHYSICAL_ADDR_FULL), vmcs::vmread(vmcs::ro::EXIT_QUALIFICATION)) };
            stop(sandbox, reason::name(r), format_args!("gpa=0x{:x} qualification=0x{:x}", gpa, qual))
        }
        _ => {
            // SAFETY: in the VM-exit handler with this core's VMCS current.
            let qual = unsafe { vmcs::vmread(vmcs::ro::EXIT_QUALIFICATION) };
            stop(sandbox, reason::name(r), format_args!("exit_reason={} qualification=0x{:x}", r, qual))
        }
    }
}

/// Run the monitor: plan, prepare and launch one sandbox per online core. Returns a status only if VT
/// cannot start at all.
pub fn run_monitor(run: Option<&str>, slice_mib: Option<u64>, watchdog_ms: Option<u64>) -> i32 {
    if let Err(e) = questv_vmx::caps::evaluate(&questv_vmx::caps::read()) {
        kprintln!("{} ({:?})", questv_vmx::caps::NEEDS_VMX_MESSAGE, e);
        return 3;
    }
    if !lapic::is_x2apic() {
        // The xAPIC page is in no EPT, so ICR writes could not be checked: the monitor needs x2APIC.
        kprintln!("VT mode needs x2APIC (the monitor filters IPIs at the x2APIC ICR)");
        return 3;
    }
    let watchdog_ms = watchdog_ms.unwrap_or(0);
    let controls = match vmcs::controls(watchdog_ms > 0) {
        Ok(c) => c,
        Err(e) => {
            kprintln!("VT: this CPU cannot run the monitor's VMCS controls: {:?}", e);
            return 3;
        }
    };
    result!("vmcs", "pin=0x{:x} proc=0x{:x} proc2=0x{:x} exit=0x{:x} entry=0x{:x}", controls.pin, controls.proc, controls.proc2, controls.exit, controls.entry);
    let tsc_hz = smp::TSC_HZ.load(Ordering::SeqCst);
    let watchdog_cycles = tsc_hz / 1000 * watchdog_ms;
    let preemption_timer = (watchdog_ms > 0).then(|| (watchdog_cycles >> vmcs::preemption_timer_rate()).clamp(1, u64::from(u32::MAX)) as u32);
    WATCHDOG_CYCLES.store(watchdog_cycles, Ordering::SeqCst);
    // With the watchdog on, a sandbox that never exits otherwise takes one timer exit per period.
    result!("watchdog", "ms={} timer_value={}", watchdog_ms, preemption_timer.unwrap_or(0));

    // DMA: no sandbox owns a device yet, so no function keeps bus mastering.
    // SAFETY: the monitor is the only user of the PCI configuration ports (never granted to a sandbox) and
    // runs this on the BSP before any sandbox starts.
    let mut pci = unsafe { questv_drivers::pci::PortConfigSpace::new() };
    let (functions, cleared) = questv_drivers::pci::disable_bus_mastering_except(&mut pci, &[]);
    result!("pci", "functions={} bus_master_cleared={}", functions, cleared);

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
    // SAFETY: the shared region was just taken for this purpose.
    unsafe { core::ptr::write_bytes(plan.shared.start as *mut u8, 0, SHARED_SIZE as usize) };
    SHARED_BASE.store(plan.shared.start, Ordering::SeqCst);
    // SAFETY: the info page is the first page of the zeroed shared region.
    unsafe {
        core::ptr::write_volatile((plan.shared.start + info::MAGIC_OFFSET) as *mut u64, info::MAGIC);
        core::ptr::write_volatile((plan.shared.start + info::VERSION_OFFSET) as *mut u32, info::VERSION);
        core::ptr::write_volatile((plan.shared.start + info::SANDBOXES_OFFSET) as *mut u32, n);
    }
    STATE.call_once(|| {
        plan.slices
            .iter()
            .map(|s| {
                spin::Mutex::new(Sandbox {
                    host_base: s.host_base,
                    size: s.size,
                    refusals: Refusals::new(),
                    line: [0; 160],
                    line_len: 0,
                    heartbeat: 0,
                    progress_tsc: 0,
                })
            })
            .collect()
    });
    let configs = match prepare(&plan, run, controls, preemption_timer) {
        Ok(c) => c,
        Err(e) => {
            kprintln!("VT: {}", e);
            return 3;
        }
    };
    LAUNCH.call_once(|| configs);
    SANDBOXES.store(n, Ordering::SeqCst);
    vmcs::set_exit_handler(on_exit);
    questv_arch::trap::IGNORE_STRAY_NMIS.store(true, Ordering::SeqCst);
    result!("boot", "cpus_online={} mode=vt sandboxes={} slice_mib={} role=monitor", n, n, plan.slices[0].size >> 20);
    for c in 1..n {
        sched::spawn_on(c, "launch", launch_thread, 0);
    }
    launch_here()
}
