//! Faults and recovery (paper §3.7, docs/recovery.md): a faulting, hanging or attacking sandbox is reported and
//! stopped or recovered by its policy — its driver switched, itself restarted from the pristine image, or its
//! NIC service handed to another sandbox — while the others carry on; checkpoints kept outside it.

use super::*;

/// Faults soon after a (re)launch that end the restarts: 3 within 2 s each.
pub(super) fn crash_loop_rule() -> CrashLoopRule {
    CrashLoopRule { quick_cycles: 2 * time::tsc_hz(), limit: 3 }
}

/// TSC at the start of the exit being handled, per core (the recovery's first timestamp).
pub(super) static EXIT_TSC: [core::sync::atomic::AtomicU64; percpu::MAX_CPUS] = [const { core::sync::atomic::AtomicU64::new(0) }; percpu::MAX_CPUS];
/// Set by a recovery: the exit handler relaunches the sandbox instead of parking its core.
pub(super) static RELAUNCH: [core::sync::atomic::AtomicBool; percpu::MAX_CPUS] = [const { core::sync::atomic::AtomicBool::new(false) }; percpu::MAX_CPUS];

/// A sandbox faulted: one `RESULT sandbox_fault` line (reason, details, what happens next), its exit report,
/// then recovery under its policy — or it is stopped for good. `guest_tsc`: the guest's own time stamp of the
/// fault when it reported one (the panic hypercall), for the exit-to-monitor phase.
pub(super) fn fault(sandbox: u32, reason: &str, details: core::fmt::Arguments, guest_tsc: Option<u64>) -> bool {
    flush_console(sandbox);
    IN_SERVICE.fetch_and(!bit(sandbox), Ordering::AcqRel);
    // A state the CPU refuses to enter is the monitor's problem, not the guest's: relaunching would refuse again.
    let recoverable = reason != "entry_failed";
    let t_exit = EXIT_TSC[sandbox as usize].load(Ordering::Relaxed);
    let g = backend::guest_state();
    // `monitor_state=1`: the saved RIP is in the monitor's run routine, so the "guest" state is the monitor's
    // own, as when an emulator reports an exit from host context (docs/vt.md). Addresses alone cannot tell
    // otherwise: every sandbox runs the same image at the same guest-physical addresses as the monitor.
    let monitor_state = backend::saved_state_is_monitors(g.rip);
    let (policy, incarnation, decision, component) = {
        let mut st = state(sandbox);
        let d = if st.policy != Policy::None && recoverable { Some(st.history.on_fault(t_exit, crash_loop_rule())) } else { None };
        // Component level: only a fault on the component's own stack is the component's.
        let c = st.component.filter(|c| st.policy == Policy::Driver && c.owns(g.rsp));
        (st.policy, st.history.incarnation, d, c)
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
        "sandbox={} reason={} {} rip=0x{:x} rsp=0x{:x} cr3=0x{:x} monitor_state={} incarnation={} policy={} action={}",
        sandbox, reason, details, g.rip, g.rsp, g.paging.cr3, u8::from(monitor_state), incarnation, policy.name(), action
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
pub(super) fn hand_over(sandbox: u32, j: usize, target: u32) -> bool {
    NIC_MOVED.fetch_or(bit(sandbox), Ordering::AcqRel);
    let t0 = cpu::rdtsc();
    let want = bit(j as u32);
    TAKEOVER_ACK[target as usize].fetch_and(!want, Ordering::AcqRel);
    TAKEOVER_REQUEST[target as usize].fetch_or(want, Ordering::AcqRel);
    let hz = time::tsc_hz();
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
pub(super) fn take_over(target: u32, j: usize) {
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
        g.ioapic.route_logical(g.pin, questv_kernel::net::VECTOR_NIC, mask as u8, false, g.active_low);
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
pub(super) fn leave_nic(sandbox: u32) {
    if let Some((j, g)) = nic_role(sandbox) {
        // SAFETY: the DMA region is monitor-claimed memory (identity mapped here); its control block is made of
        // atomics only.
        let control = unsafe { &*(g.nic.dma as *const questv_drivers::e1000::Control) };
        let held = control.leave(j);
        result!("nic_leave", "sandbox={} sharer={} lock_released={}", sandbox, j, u8::from(held));
    }
}

pub(super) fn stop(sandbox: u32, reason: &str, details: core::fmt::Arguments) -> bool {
    fault(sandbox, reason, details, None)
}

/// Component-level local recovery (the paper's driver switch, §3.7): the fault was on the NIC driver thread's
/// stack. Its channels are wiped and marked reset (a broken driver may have scribbled on them: paper Fig 5,
/// step 4), and the sandbox resumes at the component's recovery entry on a fresh stack, which brings the
/// network service back up on the alternative (conservative) driver with the same IP and MAC. Processes and
/// everything else in the sandbox run on.
pub(super) fn switch_driver(sandbox: u32, c: Component, t_exit: u64, guest_tsc: Option<u64>) {
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
pub(super) fn restart_sandbox(sandbox: u32, t_exit: u64, guest_tsc: Option<u64>) -> Result<(), String> {
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

/// BOOTED: a recovered sandbox is back in service (`RESULT sandbox_ready`, with the downtime since its fault).
/// Returns its incarnation.
pub(super) fn booted(sandbox: u32) -> u64 {
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
pub(super) fn register_component(sandbox: u32, gpa: u64, len: u64) -> Result<u64, i64> {
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
pub(super) fn checkpoint(sandbox: u32, gpa: u64, arg: u64) -> Result<u64, i64> {
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
pub(super) fn restore(sandbox: u32, gpa: u64, arg: u64) -> Result<u64, i64> {
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

/// Watchdog: has the sandbox's heartbeat moved within the limit? Checked on every exit (a sandbox that only
/// makes hypercalls is checked as well as one that never exits, which the preemption timer interrupts).
pub(super) fn watchdog_expired(sandbox: u32) -> bool {
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
