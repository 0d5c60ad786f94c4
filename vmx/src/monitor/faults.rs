//! Faults and recovery (paper §3.7, docs/recovery.md): a faulting, hanging or attacking sandbox is reported and
//! stopped or recovered by its policy — its driver switched, itself restarted from the pristine image, or its
//! NIC service handed to another sandbox (`nic`) — while the others carry on.
#![forbid(unsafe_code)]

use super::build::{build_stage2, fill_slice, scrub_slice, write_boot_info, BUILD};
use super::channels::{reset_channels, CHANNELS};
use super::console::{flush_console, input_gone, report_exits};
use super::cores;
use super::infopage;
use super::nic::{hand_over, leave_nic, takeover_target};
use super::state::{clear_in_service, sandbox_finished, state, watchdog_limit};
use super::tables::{self, POOL};
use crate::backend;
use crate::recovery::{Component, CrashLoopRule, Decision, Policy};
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use questv_arch::{cpu, lapic, percpu};
use questv_kernel::result;
use questv_kernel::time::{self, cycles_to_us};

/// Status a stopped sandbox is reported with (as a shell reports a process killed by SIGKILL).
const STATUS_STOPPED: i32 = 128 + 9;

/// The crash-loop rule from the command line (set once at start; None: `crash_loop=off`).
static CRASH_LOOP: spin::Once<Option<CrashLoopRule>> = spin::Once::new();

/// Set the crash-loop rule: (faults recovered within a window, the window in ms), None for off.
pub(super) fn set_crash_loop(rule: Option<(u32, u64)>) {
    CRASH_LOOP.call_once(|| rule.map(|(limit, ms)| CrashLoopRule { window_cycles: time::ms_to_cycles(ms), limit }));
}

fn crash_loop_rule() -> Option<CrashLoopRule> {
    CRASH_LOOP.get().copied().flatten()
}

/// TSC at the start of the exit being handled, per core (the recovery's first timestamp).
static EXIT_TSC: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
/// Set by a recovery: the exit handler relaunches the sandbox instead of parking its core.
static RELAUNCH: [AtomicBool; percpu::MAX_CPUS] = [const { AtomicBool::new(false) }; percpu::MAX_CPUS];

/// An exit on `core` begins now (its time stamp starts a recovery's timeline).
pub(super) fn exit_started(core: u32) {
    EXIT_TSC[core as usize].store(cpu::rdtsc(), Ordering::Relaxed);
}

/// An exit on `core` of `sandbox` ends and it resumes: the time it spent in the monitor (waiting for the UART
/// behind another sandbox's output, say) was not its own, so its watchdog window does not count it.
pub(super) fn exit_finished(core: u32, sandbox: u32) {
    let now = cpu::rdtsc();
    let spent = now.saturating_sub(EXIT_TSC[core as usize].load(Ordering::Relaxed));
    cores::credit_core(core, spent, now);
    let mut st = state(sandbox);
    if st.progress_tsc != 0 {
        st.progress_tsc = st.progress_tsc.saturating_add(spent).min(now);
    }
}

/// Was the sandbox whose first core is `core` recovered, so that the core relaunches it (asked once)?
pub(super) fn take_relaunch(core: u32) -> bool {
    RELAUNCH[core as usize].swap(false, Ordering::SeqCst)
}

/// A sandbox faulted: one `RESULT sandbox_fault` line (reason, details, what happens next), its exit report,
/// then recovery under its policy — or it is stopped for good. `guest_tsc`: the guest's own time stamp of the
/// fault when it reported one (the panic hypercall), for the exit-to-monitor phase.
pub(super) fn fault(sandbox: u32, reason: &str, details: core::fmt::Arguments, guest_tsc: Option<u64>) -> bool {
    let core = percpu::cpu_index();
    // On a sandbox on several cores, one core handles a fault (or its end); another faulting meanwhile only
    // stops, and says so.
    if !cores::claim_fault(sandbox) {
        result!("sandbox_core_fault", "sandbox={} core={} reason={} {} handled_by=another_core", sandbox, core, reason, details);
        return false;
    }
    let resumes = handle_fault(sandbox, core, reason, details, guest_tsc);
    cores::fault_handled(sandbox);
    resumes
}

fn handle_fault(sandbox: u32, core: u32, reason: &str, details: core::fmt::Arguments, guest_tsc: Option<u64>) -> bool {
    flush_console(sandbox);
    clear_in_service(sandbox);
    // A state the CPU refuses to enter is the monitor's problem, not the guest's: relaunching would refuse again.
    let recoverable = reason != "entry_failed";
    let t_exit = EXIT_TSC[core as usize].load(Ordering::Relaxed);
    let g = backend::guest_state();
    // `monitor_state=1`: the saved RIP is in the monitor's run routine, so the "guest" state is the monitor's
    // own, as when an emulator reports an exit from host context (docs/vt.md). Addresses alone cannot tell
    // otherwise: every sandbox runs the same image at the same guest-physical addresses as the monitor.
    let monitor_state = backend::saved_state_is_monitors(g.rip);
    let (policy, incarnation, mut decision, component) = {
        let mut st = state(sandbox);
        let d = if st.policy != Policy::None && recoverable { Some(st.history.on_fault(t_exit, crash_loop_rule())) } else { None };
        // Component level: only a fault on the component's own stack is the component's.
        let c = st.component.filter(|c| st.policy == Policy::Driver && c.owns(g.rsp));
        (st.policy, st.history.incarnation, d, c)
    };
    // The whole sandbox stops (a driver switch excepted: its processes run on): its other cores leave their
    // guest before anything of it is torn down. One that does not would run on in a slice being rebuilt: the
    // sandbox is then stopped for good instead of restarted (it stays in its own slice, which is never reused).
    let mut stopped = None;
    if !(decision == Some(Decision::Recover) && component.is_some()) && cores::several(sandbox) {
        let (n, unresponsive) = cores::stop_others(sandbox, core);
        if unresponsive > 0 {
            decision = None;
        }
        stopped = Some((n, unresponsive));
    }
    // Remote: a sharer's service goes to the next healthy sharer.
    let takeover = match (policy, decision) {
        (Policy::Remote, Some(Decision::Recover)) => takeover_target(sandbox),
        _ => None,
    };
    let action = action_name(decision, component.is_some(), takeover);
    result!(
        "sandbox_fault",
        "sandbox={} reason={} {} rip=0x{:x} rsp=0x{:x} cr3=0x{:x} monitor_state={} incarnation={} policy={} action={} core={}",
        sandbox, reason, details, g.rip, g.rsp, g.paging.cr3, u8::from(monitor_state), incarnation, policy.name(), action, core
    );
    if let Some((n, unresponsive)) = stopped {
        result!("sandbox_cores_stopped", "sandbox={} cores={} unresponsive={} by_core={}", sandbox, n, unresponsive, core);
    }
    report_exits(sandbox);
    leave_nic(sandbox);
    recover(sandbox, decision, component, takeover, t_exit, guest_tsc)
}

/// Carry out the decision: switch the driver (the sandbox resumes), or hand its NIC service over and restart
/// it (relaunched), or stop it. Returns whether the sandbox resumes.
fn recover(sandbox: u32, decision: Option<Decision>, component: Option<Component>, takeover: Option<(usize, u32)>, t_exit: u64, guest_tsc: Option<u64>) -> bool {
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
                // Before the relaunch: this core (if another of the sandbox's) is out of its guest, and the
                // new kernel's start-up IPIs count — none may find the sandbox still being stopped.
                let core = percpu::cpu_index();
                if core != sandbox {
                    cores::left(core);
                }
                cores::fault_handled(sandbox);
                RELAUNCH[sandbox as usize].store(true, Ordering::SeqCst);
                return false;
            }
            Err(e) => result!("sandbox_recovery_failed", "sandbox={} error=\"{}\"", sandbox, e),
        }
    }
    sandbox_finished(sandbox, STATUS_STOPPED);
    input_gone(sandbox);
    false
}

/// What happens next, for the `RESULT sandbox_fault` line.
fn action_name(decision: Option<Decision>, component: bool, takeover: Option<(usize, u32)>) -> String {
    match (decision, component, takeover) {
        (Some(Decision::Recover), true, _) => String::from("driver_switch"),
        (Some(Decision::Recover), false, Some((_, t))) => format!("remote target={t}"),
        (Some(Decision::Recover), false, None) => String::from("restart"),
        (Some(Decision::CrashLoop { faults }), _, _) => format!("stopped crash_loop={faults}"),
        (None, _, _) => String::from("stopped"),
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
    // CHANNELS, POOL, tables: the lock order of channel_open.
    let mut chans = CHANNELS.lock();
    let mut pool_guard = POOL.lock();
    let pool = pool_guard.as_mut().ok_or("no monitor pool")?;
    // In its own table pages: the root stays the one the VMCS/VMCB names.
    let st2 = tables::rebuild(pool, sandbox, |t| build_stage2(s, &read_only, b.shared_start, t))?;
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
        st.last_check_tsc = 0;
        // Reported with the incarnation's exits (console::report_exits), counted afresh.
        st.stalls = 0;
        st.icr_high = 0;
        st.line_len = 0;
        st.recovering_since = t_exit;
        // The new kernel registers its component again (if it has one): the old one's stack is gone.
        st.component = None;
        st.history.incarnation
    };
    infopage::publish_incarnation(sandbox, incarnation);
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

/// Watchdog: has the sandbox's heartbeat moved within the limit — and, on a sandbox of several cores, this
/// core's own (one core hung with interrupts off while another ticks)? Checked on every exit (a sandbox that
/// only makes hypercalls is checked as well as one that never exits, which the watchdog's timer interrupts).
/// Returns the cycles of silence that broke the limit.
pub(super) fn watchdog_expired(sandbox: u32, core: u32) -> Option<u64> {
    let limit = watchdog_limit(sandbox);
    if limit == 0 {
        return None;
    }
    if cores::several(sandbox) {
        let base = state(sandbox).host_base;
        let hb = super::heartbeat::cpu_heartbeat_in(base, cores::cpu_in_sandbox(sandbox, core));
        if let Some(silent) = cores::core_silent(core, hb, cpu::rdtsc(), limit, super::state::stall_cycles()) {
            return Some(silent);
        }
    }
    sandbox_silent(sandbox, limit)
}

/// The sandbox-wide heartbeat's judgement (any of its cores' ticks moves it).
fn sandbox_silent(sandbox: u32, limit: u64) -> Option<u64> {
    let now = cpu::rdtsc();
    let mut st = state(sandbox);
    let last_check = core::mem::replace(&mut st.last_check_tsc, now);
    let stall = super::state::stall_cycles();
    if stall != 0 && last_check != 0 && now.saturating_sub(last_check) > stall {
        // No exit on this core for two watchdog ticks, though a hung guest exits at every one: the core did not
        // run (single-threaded TCG ran another vCPU — a monitor scrubbing a slice — for that long). Silence
        // counts from here, not from before the stall.
        st.stalls += 1;
        st.progress_tsc = now;
        return None;
    }
    let hb = super::heartbeat::heartbeat_in(st.host_base);
    if hb != st.heartbeat || st.progress_tsc == 0 {
        st.heartbeat = hb;
        st.progress_tsc = now;
        return None;
    }
    // Until the first tick (early boot) allow ten periods.
    let allowed = if hb == 0 { limit * 10 } else { limit };
    let silent = now.saturating_sub(st.progress_tsc);
    (silent > allowed).then_some(silent)
}
