//! What each exit means (docs/vt.md, the exit table): hypercalls (`hypercalls`), refused port/MSR/APIC
//! accesses, IPIs checked against the channel policy, CPUID, faults and the watchdog (`faults`). The backend
//! has already translated the exit into `crate::exit::Exit`; nothing here depends on VMX or SVM.

use super::channels::{has_channel_to_apic, notification_due, with_channels};
use super::console::refuse;
use super::faults::{exit_finished, exit_started, stop, take_relaunch, watchdog_expired};
use super::hypercalls::hypercall;
use super::layout::{slice_range, XAPIC_GPA};
use super::nic::{nic_register, serve_takeovers, takeover_requested};
use super::state::{apic_access, is_done, state, watchdog_nmi, ApicAccess};
use super::cores;
use crate::backend::{self, inject_gp, inject_ud, skip_instruction, GuestRegs, Verdict};
use crate::exit::GuestState;
use crate::exit::{Exit, ExitKind, IoExit};
use crate::guest::{self, Source};
use crate::policy::{self, Access, ApicWriteVerdict, IpiKind, PortVerdict, RefusalKind};
use core::sync::atomic::Ordering;
use questv_abi::hypercall as hc;
use questv_arch::paging::PAGE_SIZE;
use questv_arch::{cpu, lapic, percpu};
use questv_kernel::{result, smp, time};
use spin::Mutex;

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
    /// The destination has not taken the previous notification yet: dropped (it will look at its rings after
    /// taking that one), counted as coalesced.
    Coalesced,
    /// Refused and counted: the sandbox gets #GP.
    Refused,
}

/// Check an ICR value (x2APIC layout) against the IPI rules and send it from this core if allowed: a fixed IPI
/// to the sandbox's own cores or a channel peer, or INIT and start-up to its own other cores (emulated:
/// `cores`).
fn checked_ipi(sandbox: u32, icr: u64) -> IpiOutcome {
    let me = percpu::cpu_index();
    let own = smp::apic_id(me);
    let sibling = |apic: u32| cores::is_sibling(sandbox, me, apic);
    // Checked and sent under the channel table's lock: a close on another core waits for a send in progress.
    with_channels(|chans| match policy::check_icr(icr, own, hc::CHANNEL_NOTIFY_VECTOR, sibling, |apic| has_channel_to_apic(chans, sandbox, apic, true)) {
        Ok(ipi) if ipi.kind == IpiKind::Startup => {
            if let Some(core) = cores::core_of_apic(ipi.dest_apic).filter(|_| !is_done(sandbox)) {
                if cores::startup_ipi(core, ipi.vector) {
                    result!("sandbox_core_start", "sandbox={} core={} page=0x{:x}", sandbox, core, u64::from(ipi.vector) << 12);
                }
            }
            IpiOutcome::Sent
        }
        // INIT: the core waits for its start-up IPI anyway (a running core is not reset: the sandbox restarts
        // as a whole).
        Ok(ipi) if matches!(ipi.kind, IpiKind::Init { .. }) => IpiOutcome::Sent,
        Ok(ipi) if ipi.dest_apic != own && !sibling(ipi.dest_apic) && !notification_due(sandbox, ipi.dest_apic) => IpiOutcome::Coalesced,
        // To its own core that is not in its guest (not started yet, or stopped): the monitor's own interrupt
        // table would take it. Dropped and counted.
        Ok(ipi) if sibling(ipi.dest_apic) && !cores::core_of_apic(ipi.dest_apic).is_some_and(cores::running) => {
            refuse(sandbox, RefusalKind::Icr, policy::IcrRefusal::Destination(ipi.dest_apic).code());
            IpiOutcome::Dropped
        }
        Ok(ipi) => {
            lapic::send_ipi(ipi.dest_apic, ipi.vector);
            IpiOutcome::Sent
        }
        Err(why @ policy::IcrRefusal::Destination(apic)) if has_channel_to_apic(chans, sandbox, apic, false) => {
            refuse(sandbox, RefusalKind::Icr, why.code());
            IpiOutcome::Dropped
        }
        Err(why) => {
            refuse(sandbox, RefusalKind::Icr, why.code());
            IpiOutcome::Refused
        }
    })
}

fn msr_access(sandbox: u32, regs: &mut GuestRegs, write: bool) -> bool {
    let msr = regs.rcx as u32;
    let value = (regs.rdx << 32) | (regs.rax & 0xFFFF_FFFF);
    if write && msr == policy::MSR_X2APIC_ICR {
        match checked_ipi(sandbox, value) {
            IpiOutcome::Sent | IpiOutcome::Dropped | IpiOutcome::Coalesced => skip_instruction(),
            IpiOutcome::Refused => inject_gp(),
        }
        return true;
    }
    if write && policy::X2APIC_CHECKED_LVTS.contains(&msr) {
        if !lapic::is_x2apic() || !lapic::has_lvt(policy::x2apic_offset(msr)) {
            inject_gp(); // no x2APIC, or no such entry: the CPU would have refused the MSR itself
            return true;
        }
        // The xAPIC page's rules: replayed on the core's APIC, or dropped and counted; either way done.
        match policy::classify_x2apic_write(msr, value) {
            ApicWriteVerdict::Replay => lapic::write_register(policy::x2apic_offset(msr), value as u32),
            _ => refuse(sandbox, RefusalKind::Apic, u64::from(policy::x2apic_offset(msr))),
        }
        skip_instruction();
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
    apic_access() == Some(ApicAccess::XapicTrapped) && gpa & !(PAGE_SIZE - 1) == XAPIC_GPA
}

/// Read `buf.len()` bytes at guest-virtual `gva` through the sandbox's own page tables (its memory only).
fn read_guest_virtual(sandbox: u32, paging: &guest::Paging, gva: u64, buf: &mut [u8]) -> bool {
    let (base, size) = {
        let st = state(sandbox);
        (st.host_base, st.size)
    };
    let read_u64 = |gpa: u64| {
        // SAFETY: slice_range keeps the 8 bytes inside this sandbox's slice (the monitor's view of it).
        slice_range(base, size, gpa, 8).map(|h| unsafe { core::ptr::read_volatile(h as *const u64) })
    };
    for (i, b) in buf.iter_mut().enumerate() {
        let Some(gpa) = guest::translate(paging, gva + i as u64, read_u64) else { return false };
        let Some(host) = slice_range(base, size, gpa, 1) else { return false };
        // SAFETY: inside this sandbox's slice (the monitor's view of it); the sandbox is stopped in this exit.
        *b = unsafe { core::ptr::read_volatile(host as *const u8) };
    }
    true
}

/// General-purpose register `n` (x86 encoding) of the guest; RSP from its saved state.
fn gpr(regs: &GuestRegs, rsp: u64, n: u8) -> u64 {
    match n {
        0 => regs.rax,
        1 => regs.rcx,
        2 => regs.rdx,
        3 => regs.rbx,
        4 => rsp,
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
}

/// The guest's write at RIP that exited on the trapped page at `gpa`: (value, size, instruction length).
/// Err(false): the instruction could not be read or decoded, and the sandbox was stopped (`what` names the page).
fn trapped_write(sandbox: u32, regs: &GuestRegs, gpa: u64, what: &str) -> Result<(u32, u8, u8), bool> {
    let gs = backend::guest_state();
    let mut bytes = [0u8; 15];
    if !read_guest_virtual(sandbox, &gs.paging, gs.rip, &mut bytes) {
        return Err(stop(sandbox, what, format_args!("gpa=0x{:x} instruction=unreadable", gpa)));
    }
    let w = match guest::decode_write(&bytes, gs.paging.long_mode()) {
        Ok(w) => w,
        Err(e) => return Err(stop(sandbox, what, format_args!("gpa=0x{:x} instruction={:?}", gpa, e))),
    };
    let reg = |n: u8| gpr(regs, gs.rsp, n);
    let value = match w.source {
        Source::Reg(n) => reg(n),
        Source::HighByte(n) => reg(n) >> 8,
        Source::Imm(v) => v,
    } as u32;
    Ok((value, w.size, w.len))
}

/// A write to the trapped xAPIC page: decode the instruction, check the write, replay it on this core's APIC
/// (or send the checked IPI), and move the guest past it.
fn apic_write(sandbox: u32, regs: &mut GuestRegs, gpa: u64) -> bool {
    let (value, size, len) = match trapped_write(sandbox, regs, gpa, "apic_write") {
        Ok(w) => w,
        Err(resumes) => return resumes,
    };
    let offset = (gpa & (PAGE_SIZE - 1)) as u32;
    match policy::classify_xapic_write(offset, size, value) {
        ApicWriteVerdict::Replay => lapic::write_register(offset, value),
        // ICR high is per core (a sandbox on several cores has one per core).
        ApicWriteVerdict::IcrHigh => state(percpu::cpu_index()).icr_high = value,
        ApicWriteVerdict::IcrLow => {
            let high = state(percpu::cpu_index()).icr_high;
            if let IpiOutcome::Refused = checked_ipi(sandbox, policy::xapic_icr(high, value)) {
                // As for a refused x2APIC ICR write: #GP at the instruction.
                inject_gp();
                return true;
            }
        }
        ApicWriteVerdict::Refused => refuse(sandbox, RefusalKind::Apic, u64::from(offset)),
    }
    backend::advance_rip(u64::from(len));
    true
}

/// A sharer's write to a device-wide register of the NIC (reset, receive/transmit control, EEPROM or PHY
/// access, interrupt cause set or masks, address filters: read-only in its second stage). The monitor
/// programmed the device for everyone; the write is dropped, counted and reported, and the sharer goes on.
/// A write into a tail page exits only while the monitor guards those pages (`nic_guard`): a tail move is
/// performed for the sharer, anything else stops it.
fn nic_register_write(sandbox: u32, regs: &mut GuestRegs, gpa: u64, offset: u32) -> bool {
    let (value, size, len) = match trapped_write(sandbox, regs, gpa, "nic_register_write") {
        Ok(w) => w,
        Err(resumes) => return resumes,
    };
    if questv_drivers::e1000::sharer_may_write(offset) {
        return match super::nic_guard::trapped_tail_write(sandbox, offset, value, u32::from(size)) {
            super::nic_guard::Trapped::Passed => {
                backend::advance_rip(u64::from(len));
                true
            }
            super::nic_guard::Trapped::Tamper => stop(
                sandbox,
                "nic_ring",
                format_args!("register={} value=0x{:x}", questv_drivers::e1000::register_name(offset), value),
            ),
        };
    }
    if state(sandbox).refusals.record(RefusalKind::NicRegister, u64::from(offset)) {
        questv_kernel::result!(
            "nic_write_refused",
            "sandbox={} register={} offset=0x{:x} value=0x{:x}",
            sandbox, questv_drivers::e1000::register_name(offset), offset, value
        );
    }
    backend::advance_rip(u64::from(len));
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
            ecx &= !(1 << 3); // no MONITOR/MWAIT: both are refused with #UD
            ecx |= 1 << 31; // running under a hypervisor
        }
        0x8000_0001 => ecx &= !(1 << 2), // no SVM inside a sandbox
        // Leaf 5 describes MONITOR/MWAIT, which a sandbox does not have.
        5 | 0x8000_000A => (ecx, edx) = (0, 0),
        _ => {}
    }
    let (eax, ebx) = if matches!(leaf, 5 | 0x8000_000A) { (0, 0) } else { (c.eax, c.ebx) };
    (regs.rax, regs.rbx, regs.rcx, regs.rdx) = (u64::from(eax), u64::from(ebx), u64::from(ecx), u64::from(edx));
}

/// The kind an exit is counted as (an x2APIC LVT write counts as an APIC write, as it does on a trapped page).
fn exit_kind(exit: &Exit, regs: &GuestRegs) -> ExitKind {
    match *exit {
        Exit::MemoryViolation { gpa, write: true, .. } if is_apic_page(gpa) => ExitKind::ApicWrite,
        Exit::Msr { write: true } if policy::X2APIC_CHECKED_LVTS.contains(&(regs.rcx as u32)) => ExitKind::ApicWrite,
        Exit::Nmi if watchdog_nmi() => ExitKind::Watchdog,
        ref e => e.kind(),
    }
}

/// Each core's exception-loop detector (only that core touches it).
static EXCEPTION_LOOPS: [Mutex<policy::ExceptionLoop>; percpu::MAX_CPUS] = [const { Mutex::new(policy::ExceptionLoop::new()) }; percpu::MAX_CPUS];

/// An intercepted #DB or #AC: reflected into the guest, unless the guest has taken it this many times in a row
/// in exactly the same state (a delivery loop: it would never get anywhere, and on hardware such a loop runs
/// inside the CPU without an exit), which stops the sandbox.
fn exception(sandbox: u32, regs: &GuestRegs, vector: u8, error_code: Option<u32>, detail: u64) -> bool {
    if !matches!(vector, 1 | 17) {
        return stop(sandbox, "exception", format_args!("vector={} detail=0x{:x}", vector, detail));
    }
    let g: GuestState = backend::guest_state();
    let r = regs;
    let snapshot = [
        u64::from(vector), g.rip, g.rsp, g.paging.cr3, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.r8, r.r9, r.r10,
        r.r11, r.r12, r.r13, r.r14, r.r15,
    ];
    let count = EXCEPTION_LOOPS[percpu::cpu_index() as usize].lock().observe(&snapshot);
    if count >= policy::EXCEPTION_LOOP_LIMIT {
        return stop(sandbox, "exception_loop", format_args!("vector={} deliveries={} detail=0x{:x}", vector, count, detail));
    }
    backend::reflect_exception(vector, error_code);
    true
}

/// The monitor's exit policy (runs in root mode on the exiting core): resume, park, or — after a recovery, or
/// for another core of its sandbox at its start-up IPI — relaunch.
pub(super) fn on_exit(regs: &mut GuestRegs, exit: Exit) -> Verdict {
    let core = percpu::cpu_index();
    let sandbox = cores::sandbox_of(core);
    exit_started(core);
    cores::exit_began(core);
    // A core its sandbox asked to stop (a fault on another of its cores) does not handle the exit.
    if !cores::take_stop(core) && handle_exit(sandbox, regs, exit) && !cores::take_stop(core) {
        exit_finished(core, sandbox);
        cores::resuming(core);
        return Verdict::Resume;
    }
    if take_relaunch(core) {
        EXCEPTION_LOOPS[core as usize].lock().reset();
        cores::entering(core);
        return Verdict::Relaunch;
    }
    if !cores::several(sandbox) {
        cores::left(core);
        return Verdict::Park;
    }
    wait_for_restart(core, sandbox)
}

/// A core of a sandbox on several cores left its guest: it waits here, in root mode, until the sandbox
/// starts it again (its first core after a restart, another at its start-up IPI), or parks when the sandbox
/// is done for good or the machine stops.
fn wait_for_restart(core: u32, sandbox: u32) -> Verdict {
    cores::left(core);
    loop {
        if questv_arch::trap::HALT_ALL.load(Ordering::SeqCst) {
            return Verdict::Park;
        }
        if is_done(sandbox) {
            return Verdict::Park;
        }
        if take_relaunch(core) || (core != sandbox && cores::take_start(core)) {
            EXCEPTION_LOOPS[core as usize].lock().reset();
            cores::entering(core);
            return Verdict::Relaunch;
        }
        core::hint::spin_loop();
    }
}

/// Handle one exit; false: the sandbox does not resume (stopped, or recovered and to be relaunched).
fn handle_exit(sandbox: u32, regs: &mut GuestRegs, exit: Exit) -> bool {
    if questv_arch::trap::HALT_ALL.load(Ordering::SeqCst) {
        return false; // the monitor is stopping the machine (its NMI brought this core out of the guest)
    }
    let kind = exit_kind(&exit, regs);
    state(sandbox).exits[kind.index()] += 1;
    super::console::drain_if_queued(sandbox);
    let flushed = super::nic_guard::take_flush(sandbox);
    if let Some(held_ms) = super::nic::take_lock_fault(sandbox) {
        return stop(sandbox, "nic_lock", format_args!("held_ms={} exit={}", held_ms, kind.name()));
    }
    if let Some(silent) = watchdog_expired(sandbox, percpu::cpu_index()) {
        return stop(sandbox, "watchdog", format_args!("silent_ms={} exit={}", time::cycles_to_ms(silent), kind.name()));
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
        // The watchdog check above ran; the timer restarts at the next entry. The monitor's own tick is also
        // when it audits the NIC's tail pages.
        Exit::Timer => {
            super::nic_guard::tick();
            true
        }
        Exit::Nmi => {
            // The monitor's own tick (the SVM watchdog) is also when it looks at what the IOMMU blocked and
            // audits the NIC's tail pages.
            super::nic::check_dma();
            if watchdog_nmi() {
                super::nic_guard::tick();
            }
            if takeover_requested(sandbox) {
                serve_takeovers(sandbox);
            } else if !watchdog_nmi() && !flushed && !cores::nmi_was_ours(percpu::cpu_index()) {
                // Not one the monitor sent (that one sets HALT_ALL): dropped and counted, not logged each time
                // (on x2APIC machines a sandbox can aim NMIs at itself through its LVT entries).
                refuse(sandbox, RefusalKind::Nmi, 2);
            }
            true
        }
        Exit::Exception { vector, error_code, detail } => exception(sandbox, regs, vector, error_code, detail),
        Exit::InitSipi => true, // cannot come from a sandbox (IPIs filtered); ignored
        // INVD would drop dirty lines of memory others share; the caches are coherent, so it is a no-op.
        // WBINVD likewise: the caches are coherent (no sandbox has a non-coherent device), and a flush of every
        // cache on the package would only slow the other sandboxes.
        Exit::Invd | Exit::Wbinvd => {
            skip_instruction();
            true
        }
        // CPUID says there is no MONITOR/MWAIT: a sandbox must not park its core where the watchdog's timer
        // may not reach it (deep C-states stop the VMX-preemption timer).
        Exit::MonitorMwait => {
            inject_ud();
            true
        }
        Exit::Forbidden => {
            inject_ud();
            true
        }
        Exit::MemoryViolation { gpa, write: true, .. } if is_apic_page(gpa) => apic_write(sandbox, regs, gpa),
        Exit::MemoryViolation { gpa, write, fetch, detail } => match nic_register(sandbox, gpa) {
            Some(offset) if write && !fetch => nic_register_write(sandbox, regs, gpa, offset),
            _ => {
                let access = if fetch { "fetch" } else if write { "write" } else { "read" };
                stop(sandbox, "memory_violation", format_args!("gpa=0x{:x} access={} detail=0x{:x}", gpa, access, detail))
            }
        },
        Exit::Shutdown => stop(sandbox, "shutdown", format_args!("triple_fault=1")),
        Exit::EntryFailed { detail } => stop(sandbox, "entry_failed", format_args!("detail=0x{:x}", detail)),
        Exit::Other { code, detail } => {
            stop(sandbox, backend::raw_exit_name(code), format_args!("exit_code=0x{:x} detail=0x{:x}", code, detail))
        }
    }
}
