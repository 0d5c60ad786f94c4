//! The cores of a sandbox on several cores (a partition file's `cpus = [2, 3]`): which sandbox each core runs,
//! how its other cores start, and how they stop together. A sandbox is numbered by its first core; a core
//! alone in its sandbox is that sandbox, and none of this changes anything for it.
//!
//! Start: the sandbox's kernel starts its other cores as the SMP kernel starts application processors, with
//! INIT and start-up IPIs, which the monitor checks (only to the sandbox's own cores) and emulates — an SVM
//! core has no wait-for-SIPI state, so the monitor's thread on such a core waits for the start-up IPI and then
//! launches the core in real mode at the page it names, under the sandbox's second stage.
//!
//! Stop: a fault on any core stops or recovers the whole sandbox. The core that handles the fault asks the
//! others to leave their guest (a flag and an NMI, which exits) and waits until each has; they wait in root
//! mode until their sandbox starts them again (the first core after a restart; the others at the new kernel's
//! start-up IPIs) or is done for good.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use questv_arch::percpu::MAX_CPUS;
use questv_arch::{cpu, lapic};
use questv_kernel::{result, smp, time};

/// The sandbox (its first core) each core runs.
static OWNER: [AtomicU32; MAX_CPUS] = {
    let mut a = [const { AtomicU32::new(0) }; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        a[i] = AtomicU32::new(i as u32);
        i += 1;
    }
    a
};
/// The core is in its guest (or about to enter it): set at its launch and start, cleared when it stops.
static RUNNING: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Its sandbox asks the core to leave its guest.
static STOP: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// A start-up IPI came for the (waiting) core; its vector is the backend's.
static START: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// The core runs its guest (not in an exit, not waiting): cleared at every exit, set just before it resumes.
static IN_GUEST: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// The core is to drop its cached second-stage translations before it runs its guest again.
static FLUSH: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Per core of a sandbox on several cores, for the watchdog: its CPU's own heartbeat as last seen, the TSC
/// when it last moved (0: not yet seen), and the TSC of the last check.
static CORE_HEARTBEAT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static CORE_PROGRESS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static CORE_CHECK: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// NMIs the monitor sent the core (to stop it or have it flush) not yet seen as an exit.
static NMIS_SENT: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// A core of the sandbox is handling a fault of it (the others only stop).
static HANDLING_FAULT: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Core `core` runs sandbox `first` (set before any launch).
pub(super) fn set_owner(core: u32, first: u32) {
    OWNER[core as usize].store(first, Ordering::SeqCst);
}

/// The sandbox core `core` runs.
pub(super) fn sandbox_of(core: u32) -> u32 {
    OWNER[core as usize].load(Ordering::Relaxed)
}

/// The cores of `sandbox` other than its first, in order.
pub(super) fn other_cores(sandbox: u32) -> Vec<u32> {
    (0..smp::cpu_count().min(MAX_CPUS as u32)).filter(|&c| c != sandbox && sandbox_of(c) == sandbox).collect()
}

/// The sandbox kernel's number for its core `core`: 0 for its first core, k for the k-th of the others (the
/// order its kernel starts them in, the order of `other_cores`).
pub(super) fn cpu_in_sandbox(sandbox: u32, core: u32) -> u32 {
    if core == sandbox {
        return 0;
    }
    other_cores(sandbox).iter().position(|&c| c == core).map_or(0, |k| k as u32 + 1)
}

/// The watchdog's judgement of one core of a sandbox on several cores, on that core's exit at `now`: `hb`
/// is its CPU's own heartbeat, `limit` the sandbox's watchdog limit, `stall` the SVM rule for a core that did
/// not run (0: none). Returns the cycles it has been silent for if that exceeds the limit (ten limits before
/// its first tick).
pub(super) fn core_silent(core: u32, hb: u64, now: u64, limit: u64, stall: u64) -> Option<u64> {
    let c = core as usize;
    let last_check = CORE_CHECK[c].swap(now, Ordering::SeqCst);
    if stall != 0 && last_check != 0 && now.saturating_sub(last_check) > stall {
        // The core itself did not run for two watchdog ticks (an emulator stall): silence counts from here.
        CORE_PROGRESS[c].store(now, Ordering::SeqCst);
        return None;
    }
    if hb != CORE_HEARTBEAT[c].load(Ordering::SeqCst) || CORE_PROGRESS[c].load(Ordering::SeqCst) == 0 {
        CORE_HEARTBEAT[c].store(hb, Ordering::SeqCst);
        CORE_PROGRESS[c].store(now, Ordering::SeqCst);
        return None;
    }
    let silent = now.saturating_sub(CORE_PROGRESS[c].load(Ordering::SeqCst));
    let allowed = if hb == 0 { limit.saturating_mul(10) } else { limit };
    (silent > allowed).then_some(silent)
}

/// Time `core` spent in the monitor (not its guest's) does not count as its silence.
pub(super) fn credit_core(core: u32, spent: u64, now: u64) {
    let c = core as usize;
    let p = CORE_PROGRESS[c].load(Ordering::SeqCst);
    if p != 0 {
        CORE_PROGRESS[c].store(p.saturating_add(spent).min(now), Ordering::SeqCst);
    }
}

/// Does `sandbox` run on several cores?
pub(super) fn several(sandbox: u32) -> bool {
    (0..smp::cpu_count().min(MAX_CPUS as u32)).any(|c| c != sandbox && sandbox_of(c) == sandbox)
}

/// The core with APIC id `apic`.
pub(super) fn core_of_apic(apic: u32) -> Option<u32> {
    (0..smp::cpu_count().min(MAX_CPUS as u32)).find(|&c| smp::apic_id(c) == apic)
}

/// Is the core with APIC id `apic` another core of `sandbox` than `me`?
pub(super) fn is_sibling(sandbox: u32, me: u32, apic: u32) -> bool {
    core_of_apic(apic).is_some_and(|c| c != me && sandbox_of(c) == sandbox)
}

/// Is `core` running its guest (launched, not stopped)?
pub(super) fn running(core: u32) -> bool {
    RUNNING[core as usize].load(Ordering::SeqCst)
}

/// The core enters its guest (launch or relaunch, which drop its cached translations anyway): a stop or
/// flush asked of its previous run is void.
pub(super) fn entering(core: u32) {
    CORE_PROGRESS[core as usize].store(0, Ordering::SeqCst);
    CORE_HEARTBEAT[core as usize].store(0, Ordering::SeqCst);
    CORE_CHECK[core as usize].store(0, Ordering::SeqCst);
    STOP[core as usize].store(false, Ordering::SeqCst);
    FLUSH[core as usize].store(false, Ordering::SeqCst);
    RUNNING[core as usize].store(true, Ordering::SeqCst);
    IN_GUEST[core as usize].store(true, Ordering::SeqCst);
}

/// The core left its guest and waits (or parks): whoever stops the sandbox need not wait for it.
pub(super) fn left(core: u32) {
    RUNNING[core as usize].store(false, Ordering::SeqCst);
}

/// A start-up IPI from the sandbox to its core `core`: the core starts in real mode at page `vector`, unless it
/// runs already (a running core ignores start-up IPIs, as the second of the SDM's pair is). Returns whether
/// it starts. Refused while the sandbox is being stopped (a fault handled on one of its cores).
pub(super) fn startup_ipi(core: u32, vector: u8) -> bool {
    let sandbox = sandbox_of(core);
    if RUNNING[core as usize].load(Ordering::SeqCst) || START[core as usize].load(Ordering::SeqCst) || handling(sandbox) {
        return false;
    }
    crate::backend::set_start_vector(core, vector);
    START[core as usize].store(true, Ordering::SeqCst);
    true
}

/// Did a start-up IPI come for `core` (asked once)?
pub(super) fn take_start(core: u32) -> bool {
    START[core as usize].swap(false, Ordering::SeqCst)
}

/// Has the core's sandbox asked it to leave its guest (asked once)?
pub(super) fn take_stop(core: u32) -> bool {
    STOP[core as usize].swap(false, Ordering::SeqCst)
}

/// The first core of a sandbox to handle a fault of it claims the handling (true); another core that faults
/// meanwhile only stops (false). Always true for a sandbox on one core.
pub(super) fn claim_fault(sandbox: u32) -> bool {
    !HANDLING_FAULT[sandbox as usize].swap(true, Ordering::SeqCst)
}

/// The fault is handled (its sandbox resumes, is relaunched, or is done): start-up IPIs count again.
pub(super) fn fault_handled(sandbox: u32) {
    HANDLING_FAULT[sandbox as usize].store(false, Ordering::SeqCst);
}

/// Bring core `c` out of its guest (an NMI exits).
fn kick(c: u32) {
    NMIS_SENT[c as usize].fetch_add(1, Ordering::SeqCst);
    lapic::send_nmi(smp::apic_id(c));
}

/// Was an NMI exit on `core` one the monitor sent (to stop it or have it flush), not one the sandbox aimed at
/// itself? (An NMI that reached the core in the monitor never exits: the count may stay ahead by those.)
pub(super) fn nmi_was_ours(core: u32) -> bool {
    NMIS_SENT[core as usize].fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

/// An exit on `core` begins: it is in the monitor, and flushes now if another core of its sandbox asked.
pub(super) fn exit_began(core: u32) {
    IN_GUEST[core as usize].store(false, Ordering::SeqCst);
    if FLUSH[core as usize].swap(false, Ordering::SeqCst) {
        crate::backend::flush_stage2();
    }
}

/// The core resumes its guest: published first, then a flush asked meanwhile is done (a core asking after the
/// publication waits for this core to flush; one asking before it is seen here).
pub(super) fn resuming(core: u32) {
    IN_GUEST[core as usize].store(true, Ordering::SeqCst);
    if FLUSH[core as usize].swap(false, Ordering::SeqCst) {
        crate::backend::flush_stage2();
    }
}

/// The caller (on core `me`) removed a mapping from `sandbox`'s second stage and flushed its own core: every
/// other core of the sandbox flushes before it runs its guest again, and one in its guest now is brought out
/// (an NMI every millisecond) before this returns, so none keeps reaching memory the sandbox no longer has (a
/// closed channel's, given to another pair next). A core in the monitor flushes before it resumes; one
/// waiting to be started flushes at its launch anyway. Safe under the monitor's locks: it waits only for
/// cores in their guest. Returns false if a core in its guest did not flush within 2 s (the caller must not
/// hand the unmapped memory to anyone else).
pub(super) fn flush_others(sandbox: u32, me: u32) -> bool {
    let mut all = true;
    for c in cores_but(sandbox, me) {
        FLUSH[c as usize].store(true, Ordering::SeqCst);
        if !kick_until(c, || FLUSH[c as usize].load(Ordering::SeqCst) && IN_GUEST[c as usize].load(Ordering::SeqCst)) {
            result!("sandbox_core_unresponsive", "sandbox={} core={} waiting_for=flush", sandbox, c);
            all = false;
        }
    }
    all
}

/// The cores of `sandbox` other than `me`.
fn cores_but(sandbox: u32, me: u32) -> Vec<u32> {
    other_cores(sandbox).into_iter().chain(core::iter::once(sandbox)).filter(|&c| c != me).collect()
}

/// NMI core `c` every millisecond while `pending()` (an NMI that reaches it in the monitor exits nothing, so
/// it is sent again), for at most 2 s. Returns whether `pending` ended.
fn kick_until(c: u32, pending: impl Fn() -> bool) -> bool {
    let deadline = cpu::rdtsc() + time::ms_to_cycles(2000);
    while pending() {
        if cpu::rdtsc() > deadline {
            return false;
        }
        kick(c);
        let next = cpu::rdtsc() + time::us_to_cycles(1000);
        while pending() && cpu::rdtsc() < next {
            core::hint::spin_loop();
        }
    }
    true
}

/// Is a fault (or the end) of `sandbox` being handled by one of its cores?
pub(super) fn handling(sandbox: u32) -> bool {
    HANDLING_FAULT[sandbox as usize].load(Ordering::SeqCst)
}

/// Bring every other core of `sandbox` out of its guest (`me` is the caller's core) and wait until each has
/// left: the flag, then an NMI (which exits) every millisecond until the core says it stopped — an NMI that
/// arrives while the core is in the monitor reaches no guest, so it is sent again. Start-up IPIs not yet taken
/// are void once all have stopped (the sandbox they were for is going away). Returns (cores stopped, cores
/// that did not stop within 2 s: still in their guest).
pub(super) fn stop_others(sandbox: u32, me: u32) -> (u32, u32) {
    let (mut stopped, mut unresponsive) = (0, 0);
    let others = cores_but(sandbox, me);
    for &c in &others {
        if !RUNNING[c as usize].load(Ordering::SeqCst) {
            continue;
        }
        STOP[c as usize].store(true, Ordering::SeqCst);
        if kick_until(c, || RUNNING[c as usize].load(Ordering::SeqCst)) {
            stopped += 1;
        } else {
            result!("sandbox_core_unresponsive", "sandbox={} core={}", sandbox, c);
            unresponsive += 1;
        }
    }
    for &c in &others {
        START[c as usize].store(false, Ordering::SeqCst);
    }
    (stopped, unresponsive)
}
