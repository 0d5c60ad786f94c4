//! What the monitor keeps for the whole run: the per-sandbox table (each entry touched only by that sandbox's
//! core, in its exit handler, and by the BSP before launch), the choices fixed at start-up (APIC access,
//! watchdog), and the run's bookkeeping (how many sandboxes, which are in service, how they finished).
#![forbid(unsafe_code)]

use crate::exit::ExitKind;
use crate::partition::Slice;
use crate::policy::Refusals;
use crate::recovery::{Component, History, Policy};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use questv_abi::hypercall as hc;
use questv_kernel::result;

/// What a sandbox's console did: lines queued, writes refused for a full queue (`-EAGAIN`: it retries), lines
/// of other sandboxes its exits printed, and its longest console write (cycles in the monitor).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ConsoleStats {
    pub(super) lines: u64,
    pub(super) deferred: u64,
    pub(super) printed_for_others: u64,
    pub(super) max_write_cycles: u64,
}

/// What the monitor keeps per sandbox.
pub(super) struct Sandbox {
    pub(super) host_base: u64,
    pub(super) size: u64,
    pub(super) refusals: Refusals,
    /// Exits by kind (`RESULT vmexits`).
    pub(super) exits: [u64; ExitKind::COUNT],
    /// xAPIC: the last value written to ICR high (the destination of the next ICR low write).
    pub(super) icr_high: u32,
    /// Console bytes of the line being assembled (printed with the `[sN]` prefix at its newline).
    pub(super) line: [u8; 160],
    pub(super) line_len: usize,
    /// Its complete lines waiting for the UART, and what its console did (`RESULT console`).
    pub(super) console: alloc::boxed::Box<crate::console_queue::LineQueue>,
    pub(super) console_stats: ConsoleStats,
    /// Watchdog: last heartbeat value seen and the TSC when it last changed.
    pub(super) heartbeat: u64,
    pub(super) progress_tsc: u64,
    /// TSC of the last watchdog check (any exit) on its core, and how many checks found the core itself had
    /// not run for longer than [`stall_cycles`] (an emulator stall, not the guest's silence).
    pub(super) last_check_tsc: u64,
    pub(super) stalls: u64,
    /// What to do when it faults, and its incarnations so far.
    pub(super) policy: Policy,
    pub(super) history: History,
    /// TSC of the fault that started the recovery in progress (0: none), for `RESULT sandbox_ready`.
    pub(super) recovering_since: u64,
    /// Its recoverable component (the NIC driver), if it registered one.
    pub(super) component: Option<Component>,
    /// Stateful recovery: the state its services last checkpointed, per slot (kept outside the sandbox).
    pub(super) checkpoints: [Vec<u8>; hc::CHECKPOINT_SLOTS as usize],
    /// Guest-physical page ranges of its kernel's read-only segments (read-only in its second stage too; the
    /// monitor refuses to write them on its behalf).
    pub(super) read_only: Vec<(u64, u64)>,
}

impl Sandbox {
    fn new(slice: &Slice, policy: Policy) -> Sandbox {
        Sandbox {
            host_base: slice.host_base,
            size: slice.size,
            refusals: Refusals::new(),
            exits: [0; ExitKind::COUNT],
            icr_high: 0,
            line: [0; 160],
            line_len: 0,
            console: alloc::boxed::Box::new(crate::console_queue::LineQueue::new()),
            console_stats: ConsoleStats::default(),
            heartbeat: 0,
            progress_tsc: 0,
            last_check_tsc: 0,
            stalls: 0,
            policy,
            history: History::default(),
            recovering_since: 0,
            checkpoints: Default::default(),
            component: None,
            read_only: Vec::new(),
        }
    }
}

static STATE: spin::Once<Vec<spin::Mutex<Sandbox>>> = spin::Once::new();

/// Set up the table: one entry per planned slice, with its recovery policy.
pub(super) fn init_sandboxes(slices: &[Slice], policies: &[Policy]) {
    STATE.call_once(|| slices.iter().map(|s| spin::Mutex::new(Sandbox::new(s, policies[s.sandbox as usize]))).collect());
}

pub(super) fn state(sandbox: u32) -> spin::MutexGuard<'static, Sandbox> {
    STATE.get().expect("no sandboxes")[sandbox as usize].lock()
}

/// A sandbox's recovery policy (none before the table is set up).
pub(super) fn policy_of(sandbox: u32) -> Policy {
    STATE.get().map_or(Policy::None, |st| st[sandbox as usize].lock().policy)
}

/// How sandboxes reach their local APIC. x2APIC: MSRs, ICR writes intercepted by the MSR map. xAPIC: the APIC
/// page is mapped read-only and every write exits and is checked and replayed (the ICR shares its page with
/// EOI, so filtering IPIs costs an exit per EOI), or, only when asked for (`apic=passthrough`, to measure
/// that cost), mapped writable with no filtering at all.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum ApicAccess {
    X2apic,
    XapicTrapped,
    XapicPassthrough,
}

impl ApicAccess {
    pub(super) fn name(self) -> &'static str {
        match self {
            ApicAccess::X2apic => "x2apic",
            ApicAccess::XapicTrapped => "xapic_trapped",
            ApicAccess::XapicPassthrough => "xapic_passthrough",
        }
    }
}

static APIC_ACCESS: spin::Once<ApicAccess> = spin::Once::new();

pub(super) fn set_apic_access(apic: ApicAccess) {
    APIC_ACCESS.call_once(|| apic);
}

/// The APIC access chosen at start-up (none before).
pub(super) fn apic_access() -> Option<ApicAccess> {
    APIC_ACCESS.get().copied()
}

/// SVM watchdog: NMIs from the PIT arrive periodically (they count as `watchdog` exits).
static WATCHDOG_NMI: AtomicBool = AtomicBool::new(false);

pub(super) fn set_watchdog_nmi() {
    WATCHDOG_NMI.store(true, Ordering::SeqCst);
}

pub(super) fn watchdog_nmi() -> bool {
    WATCHDOG_NMI.load(Ordering::Relaxed)
}

/// Watchdog limit in TSC cycles (0: off).
static WATCHDOG_CYCLES: AtomicU64 = AtomicU64::new(0);

pub(super) fn set_watchdog_cycles(cycles: u64) {
    WATCHDOG_CYCLES.store(cycles, Ordering::SeqCst);
}

pub(super) fn watchdog_cycles() -> u64 {
    WATCHDOG_CYCLES.load(Ordering::Relaxed)
}

/// A sandbox's own watchdog limit in TSC cycles (a partition file's per-sandbox `watchdog_ms`; 0: the
/// machine-wide one).
static WATCHDOG_OWN: [AtomicU64; questv_arch::percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; questv_arch::percpu::MAX_CPUS];

pub(super) fn set_watchdog_own(sandbox: u32, cycles: u64) {
    WATCHDOG_OWN[sandbox as usize].store(cycles, Ordering::SeqCst);
}

/// The watchdog limit of `sandbox`: its own, else the machine-wide one (0: off).
pub(super) fn watchdog_limit(sandbox: u32) -> u64 {
    match WATCHDOG_OWN[sandbox as usize].load(Ordering::Relaxed) {
        0 => watchdog_cycles(),
        own => own,
    }
}

/// SVM watchdog: a gap longer than this between two exits of one core means the core did not run (0: no
/// such rule: the VMX preemption timer counts guest time only).
static STALL_CYCLES: AtomicU64 = AtomicU64::new(0);

pub(super) fn set_stall_cycles(cycles: u64) {
    STALL_CYCLES.store(cycles, Ordering::SeqCst);
}

pub(super) fn stall_cycles() -> u64 {
    STALL_CYCLES.load(Ordering::Relaxed)
}

static SANDBOXES: AtomicU32 = AtomicU32::new(0);

pub(super) fn set_sandboxes(n: u32) {
    SANDBOXES.store(n, Ordering::SeqCst);
}

/// How many sandboxes run (0 before launch).
pub(super) fn sandboxes() -> u32 {
    SANDBOXES.load(Ordering::SeqCst)
}

pub(super) fn bit(sandbox: u32) -> u64 {
    1u64.checked_shl(sandbox).unwrap_or(0)
}

/// Sandboxes running and in service (bit = sandbox): set at BOOTED, cleared when one faults, finishes or is
/// stopped. A takeover target must be one of them (never one that is itself recovering).
static IN_SERVICE: AtomicU64 = AtomicU64::new(0);

pub(super) fn set_in_service(sandbox: u32) {
    IN_SERVICE.fetch_or(bit(sandbox), Ordering::AcqRel);
}

pub(super) fn clear_in_service(sandbox: u32) {
    IN_SERVICE.fetch_and(!bit(sandbox), Ordering::AcqRel);
}

pub(super) fn in_service(sandbox: u32) -> bool {
    IN_SERVICE.load(Ordering::Acquire) & bit(sandbox) != 0
}

/// The partition description (`--config`), if the run has one.
static PARTITION: spin::Once<crate::partition_spec::Spec> = spin::Once::new();

pub(super) fn set_partition(spec: crate::partition_spec::Spec) {
    PARTITION.call_once(|| spec);
}

pub(super) fn partition() -> Option<&'static crate::partition_spec::Spec> {
    PARTITION.get()
}

/// A core the partition leaves without a sandbox: counted as finished from the start (`RESULT sandbox_parked`).
pub(super) fn sandbox_parked(sandbox: u32) {
    result!("sandbox_parked", "sandbox={}", sandbox);
    FINISHED.fetch_add(1, Ordering::SeqCst);
}

static FINISHED: AtomicU32 = AtomicU32::new(0);
/// Sandboxes done for good (bit = sandbox).
static DONE: AtomicU64 = AtomicU64::new(0);

/// Is `sandbox` done for good (its cores park)?
pub(super) fn is_done(sandbox: u32) -> bool {
    DONE.load(Ordering::Acquire) & bit(sandbox) != 0
}

/// Another core of a sandbox on several cores: counted as finished from the start, as a parked core is (the
/// sandbox finishes once, by its first core's number).
pub(super) fn sandbox_core(core: u32, sandbox: u32) {
    result!("sandbox_core", "core={} sandbox={}", core, sandbox);
    FINISHED.fetch_add(1, Ordering::SeqCst);
}
static WORST_STATUS: AtomicI32 = AtomicI32::new(0);

/// A sandbox is done for good (`RESULT sandbox_done`, counted once); the last one to finish ends the machine
/// with the worst status.
pub(super) fn sandbox_finished(sandbox: u32, status: i32) {
    clear_in_service(sandbox);
    if DONE.fetch_or(bit(sandbox), Ordering::AcqRel) & bit(sandbox) != 0 {
        return; // once only
    }
    WORST_STATUS.fetch_max(status, Ordering::SeqCst);
    result!("sandbox_done", "sandbox={} status={}", sandbox, status);
    if FINISHED.fetch_add(1, Ordering::SeqCst) + 1 == SANDBOXES.load(Ordering::SeqCst) {
        questv_kernel::machine::finish(WORST_STATUS.load(Ordering::SeqCst));
    }
}
