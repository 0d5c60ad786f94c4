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
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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

/// The core enters its guest (launch or relaunch, which drop its cached translations anyway): a stop or
/// flush asked of its previous run is void.
pub(super) fn entering(core: u32) {
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
/// it starts.
pub(super) fn startup_ipi(core: u32, vector: u8) -> bool {
    if RUNNING[core as usize].load(Ordering::SeqCst) || START[core as usize].load(Ordering::SeqCst) {
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
/// cores in their guest.
pub(super) fn flush_others(sandbox: u32, me: u32) {
    for c in other_cores(sandbox).into_iter().chain(core::iter::once(sandbox)).filter(|&c| c != me) {
        FLUSH[c as usize].store(true, Ordering::SeqCst);
        let deadline = cpu::rdtsc() + time::ms_to_cycles(2000);
        while FLUSH[c as usize].load(Ordering::SeqCst) && IN_GUEST[c as usize].load(Ordering::SeqCst) {
            if cpu::rdtsc() > deadline {
                result!("sandbox_core_unresponsive", "sandbox={} core={} waiting_for=flush", sandbox, c);
                break;
            }
            kick(c);
            let next = cpu::rdtsc() + time::us_to_cycles(1000);
            while FLUSH[c as usize].load(Ordering::SeqCst) && IN_GUEST[c as usize].load(Ordering::SeqCst) && cpu::rdtsc() < next {
                core::hint::spin_loop();
            }
        }
    }
}

/// Bring every other core of `sandbox` out of its guest (`me` is the caller's core) and wait until each has
/// left: the flag, then an NMI (which exits) every millisecond until the core says it stopped — an NMI that
/// arrives while the core is in the monitor reaches no guest, so it is sent again. Returns how many cores
/// were stopped.
pub(super) fn stop_others(sandbox: u32, me: u32) -> u32 {
    let mut stopped = 0;
    for c in other_cores(sandbox).into_iter().chain(core::iter::once(sandbox)).filter(|&c| c != me) {
        // A start-up IPI not yet taken no longer counts: the sandbox it was for is going away.
        START[c as usize].store(false, Ordering::SeqCst);
        if !RUNNING[c as usize].load(Ordering::SeqCst) {
            continue;
        }
        STOP[c as usize].store(true, Ordering::SeqCst);
        let deadline = cpu::rdtsc() + time::ms_to_cycles(2000);
        while RUNNING[c as usize].load(Ordering::SeqCst) {
            if cpu::rdtsc() > deadline {
                result!("sandbox_core_unresponsive", "sandbox={} core={}", sandbox, c);
                break;
            }
            kick(c);
            let next = cpu::rdtsc() + time::us_to_cycles(1000);
            while RUNNING[c as usize].load(Ordering::SeqCst) && cpu::rdtsc() < next {
                core::hint::spin_loop();
            }
        }
        stopped += 1;
    }
    stopped
}
