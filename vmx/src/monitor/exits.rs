//! What each exit means (docs/vt.md, the exit table): hypercalls, refused port/MSR/APIC accesses, IPIs checked
//! against the channel policy, CPUID, the console. The backend has already translated the exit into
//! `crate::exit::Exit`; nothing here depends on VMX or SVM.

use super::*;

/// Count a refused access; the first of its kind gets a log line.
pub(super) fn refuse(sandbox: u32, kind: RefusalKind, code: u64) {
    if state(sandbox).refusals.record(kind, code) {
        match kind {
            RefusalKind::Icr => log::warn!("sandbox {}: refused an IPI ({})", sandbox, policy::IcrRefusal::name_of_code(code)),
            RefusalKind::Apic => log::warn!("sandbox {}: refused an APIC write at offset 0x{:x}", sandbox, code),
            _ => log::warn!("sandbox {}: refused {} 0x{:x}", sandbox, kind.name(), code),
        }
    }
}

/// Print the sandbox's console bytes: complete lines with its `[sN]` prefix; control characters and non-ASCII
/// bytes become `?`, so nothing a sandbox prints can start an unprefixed line (only the monitor says
/// `QUESTV DONE`).
pub(super) fn console_bytes(sandbox: u32, bytes: &[u8]) {
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

pub(super) fn emit_line(sandbox: u32, st: &mut Sandbox) {
    // Only printable ASCII is ever stored.
    let text = core::str::from_utf8(&st.line[..st.line_len]).unwrap_or("?");
    kprintln!("[s{}] {}", sandbox, text);
    st.line_len = 0;
}

pub(super) fn flush_console(sandbox: u32) {
    let mut st = state(sandbox);
    if st.line_len > 0 {
        emit_line(sandbox, &mut st);
    }
}

/// CONSOLE_WRITE: the bytes must lie in the sandbox's own memory.
pub(super) fn console_write(sandbox: u32, gpa: u64, len: u64) -> Result<u64, i64> {
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

pub(super) fn hypercall(sandbox: u32, regs: &mut GuestRegs) -> bool {
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

pub(super) fn port_io(sandbox: u32, regs: &mut GuestRegs, io: IoExit) -> bool {
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
pub(super) enum IpiOutcome {
    Sent,
    /// To a channel peer that has not opened the channel yet: dropped (the message is in the ring), counted.
    Dropped,
    /// Refused and counted: the sandbox gets #GP.
    Refused,
}

/// Check an ICR value (x2APIC layout) against the IPI rules and send it from this core if allowed.
pub(super) fn checked_ipi(sandbox: u32, icr: u64) -> IpiOutcome {
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

pub(super) fn msr_access(sandbox: u32, regs: &mut GuestRegs, write: bool) -> bool {
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
pub(super) fn is_apic_page(gpa: u64) -> bool {
    APIC_ACCESS.get() == Some(&ApicAccess::XapicTrapped) && gpa & !(PAGE_SIZE - 1) == XAPIC_GPA
}

/// Read `buf.len()` bytes at guest-virtual `gva` through the sandbox's own page tables (its memory only).
pub(super) fn read_guest_virtual(sandbox: u32, paging: &guest::Paging, gva: u64, buf: &mut [u8]) -> bool {
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
pub(super) fn apic_write(sandbox: u32, regs: &mut GuestRegs, gpa: u64) -> bool {
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

pub(super) fn cpuid(regs: &mut GuestRegs) {
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
pub(super) fn exit_kind(exit: &Exit) -> ExitKind {
    match *exit {
        Exit::MemoryViolation { gpa, write: true, .. } if is_apic_page(gpa) => ExitKind::ApicWrite,
        Exit::Nmi if WATCHDOG_NMI.load(Ordering::Relaxed) => ExitKind::Watchdog,
        ref e => e.kind(),
    }
}

/// The monitor's exit policy (runs in root mode on the exiting core): resume, park, or — after a recovery —
/// relaunch.
pub(super) fn on_exit(regs: &mut GuestRegs, exit: Exit) -> Verdict {
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
pub(super) fn handle_exit(regs: &mut GuestRegs, exit: Exit) -> bool {
    let sandbox = percpu::cpu_index();
    if questv_arch::trap::HALT_ALL.load(Ordering::SeqCst) {
        return false; // the monitor is stopping the machine (its NMI brought this core out of the guest)
    }
    state(sandbox).exits[exit_kind(&exit).index()] += 1;
    if watchdog_expired(sandbox) {
        let silent_ms = time::cycles_to_ms(cpu::rdtsc() - state(sandbox).progress_tsc);
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
