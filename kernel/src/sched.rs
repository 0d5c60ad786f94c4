//! Per-core preemptive scheduler for kernel threads.
//!
//! Every switch happens in the trap path: the timer tick, the reschedule IPI and the voluntary yield trap all
//! arrive with a full [`TrapFrame`] (GPRs + FXSAVE) on the CPU's IST stack; switching threads means saving that
//! frame into the current thread and overwriting it with the next thread's. Nothing of a thread lives on the IST
//! stack after the handler returns, which is also why a dead thread's stack can be freed right there.
//! Each CPU has its own VCPUs (paper §3.4, `crate::vcpu`): threads run on VCPUs, VCPUs on the core. Each VCPU
//! keeps its threads' run queue (round-robin within it); the core's `VcpuSet` picks the VCPU (sporadic-server
//! budgets, rate-monotonic priorities, background when out of budget) and says when the next decision is due,
//! which is when the one-shot timer fires. Threads do not migrate unless asked to.

use crate::sync::IrqSpinlock;
use crate::vcpu::{self, Class, Level, Params, VcpuSet};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use questv_arch::percpu::{self, MAX_CPUS};
use questv_arch::trap::{self, TrapFrame};

pub const KERNEL_STACK_SIZE: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Runnable,
    Blocked,
    Dead,
}

pub struct Thread {
    pub id: u64,
    pub name: &'static str,
    frame: Box<TrapFrame>,
    state: State,
    /// None for a CPU's boot thread, which runs on the stack the CPU booted with.
    _stack: Option<Box<[u8]>>,
    /// Process this thread runs (0: a kernel thread).
    pub pid: u32,
    /// Linux thread id (the pid for a process's first thread; 0 for a kernel thread).
    pub tid: u32,
    /// Page-table root while this thread runs (0: the kernel's).
    pub cr3: u64,
    kstack_top: u64,
    /// A wake-up arrived while the thread was not blocked: its next block() returns at once.
    wake_pending: bool,
    /// Something for the thread's process to look at before it returns to user mode (a signal was posted):
    /// the return path checks this flag, so it costs nothing when no signal is about.
    attention: bool,
    /// Move to this CPU at the next switch.
    migrate_to: Option<u32>,
    /// Placed on its CPU by the program (sched_setaffinity): its new threads start there too.
    pinned: bool,
    /// The VCPU (on this thread's CPU) it runs on; fork and spawn inherit it.
    vcpu: u32,
    /// User thread-pointer bases (`arch_prctl`), loaded whenever the thread is switched to; fork inherits
    /// them, exec clears them.
    fs_base: u64,
    gs_base: u64,
    /// TSC cycles this thread has run (user and kernel), up to its last switch-in (`ran_since`).
    run_cycles: u64,
    /// The page-table root of the process this (dead) thread ended, still loaded: freed once the CPU has
    /// switched to the next thread's tables (one CR3 load at exit instead of two).
    retired_root: Option<u64>,
    ran_since: u64,
}

#[derive(Default, Clone, Copy, Debug)]
pub struct CpuStats {
    pub ticks: u64,
    pub switches: u64,
    /// Switches away from a runnable thread that did not yield (timer tick or reschedule IPI).
    pub preemptions: u64,
    pub yields: u64,
}

struct CpuSched {
    current: Option<Box<Thread>>,
    /// Ready threads per VCPU.
    ready: BTreeMap<u32, VecDeque<Box<Thread>>>,
    vcpus: VcpuSet,
    idle: Option<Box<Thread>>,
    dead: Vec<Box<Thread>>,
    blocked: Vec<Box<Thread>>,
    /// The idle thread is `current` (and so not in `idle`).
    idle_running: bool,
    stats: CpuStats,
}

static SCHED: [IrqSpinlock<Option<CpuSched>>; MAX_CPUS] = [const { IrqSpinlock::new(None) }; MAX_CPUS];
/// Each CPU's running thread's ids (tid << 32 | pid) and attention flag, mirrored out of its `CpuSched` (written
/// under that lock, read by the CPU itself without it): every system call asks for its pid, and every return
/// to user mode for the flag, so neither takes the scheduler's lock.
static RUNNING_IDS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Each CPU's running thread's scheduler id, mirrored the same way (never reused: a key for per-thread caches).
static RUNNING_THREAD: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static RUNNING_ATTENTION: [core::sync::atomic::AtomicBool; MAX_CPUS] = [const { core::sync::atomic::AtomicBool::new(false) }; MAX_CPUS];

fn mirror_running(cpu: usize, t: &Thread) {
    RUNNING_IDS[cpu].store(u64::from(t.tid) << 32 | u64::from(t.pid), Ordering::Relaxed);
    RUNNING_THREAD[cpu].store(t.id, Ordering::Relaxed);
    RUNNING_ATTENTION[cpu].store(t.attention, Ordering::Release);
}
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Why the scheduler was entered.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Tick,
    Yield,
    Reschedule,
}

fn thread_with(name: &'static str, frame: Box<TrapFrame>, stack: Option<Box<[u8]>>, pid: u32, cr3: u64) -> Box<Thread> {
    let kstack_top = stack.as_ref().map_or(0, |s| (s.as_ptr() as u64 + s.len() as u64) & !0xF);
    Box::new(Thread {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        name,
        frame,
        state: State::Runnable,
        _stack: stack,
        pid,
        tid: pid,
        cr3,
        kstack_top,
        wake_pending: false,
        attention: false,
        migrate_to: None,
        pinned: false,
        vcpu: DEFAULT_VCPU,
        fs_base: 0,
        gs_base: 0,
        run_cycles: 0,
        retired_root: None,
        ran_since: 0,
    })
}

fn new_thread(name: &'static str, entry: extern "C" fn(u64) -> !, arg: u64) -> Box<Thread> {
    let stack = alloc::vec![0u8; KERNEL_STACK_SIZE].into_boxed_slice();
    let top = stack.as_ptr() as u64 + KERNEL_STACK_SIZE as u64;
    thread_with(name, Box::new(TrapFrame::new_kernel_thread(entry as usize as u64, arg, top)), Some(stack), 0, 0)
}

/// Kernel stack of a user thread (syscalls run on it).
pub const USER_KSTACK_SIZE: usize = 32 * 1024;
/// Kernel stacks of dead user threads kept for the next ones (a fork+exit no longer allocates, zeroes and frees
/// 32 KiB each time); at most this many.
const SPARE_KSTACKS_MAX: usize = 16;
static SPARE_KSTACKS: IrqSpinlock<Vec<Box<[u8]>>> = IrqSpinlock::new(Vec::new());

/// A thread for process `pid` that starts in user mode with `frame` in address space `cr3`. Fails (instead of
/// aborting) when the kernel heap cannot hold its kernel stack.
/// It runs on the creating thread's VCPU (a forked child stays on its parent's).
pub fn new_user_thread(name: &'static str, frame: Box<TrapFrame>, pid: u32, cr3: u64) -> Option<Box<Thread>> {
    // A dead user thread's kernel stack if there is one (nothing needs a stack zeroed), else a new one.
    let stack = match SPARE_KSTACKS.lock().pop() {
        Some(s) => s,
        None => {
            let mut v: alloc::vec::Vec<u8> = alloc::vec::Vec::new();
            v.try_reserve_exact(USER_KSTACK_SIZE).ok()?;
            v.resize(USER_KSTACK_SIZE, 0);
            v.into_boxed_slice()
        }
    };
    let mut t = thread_with(name, frame, Some(stack), pid, cr3);
    t.vcpu = current_vcpu();
    let cpu = percpu::cpu_index() as usize;
    (t.fs_base, t.gs_base, t.pinned) =
        SCHED[cpu].lock().as_ref().and_then(|s| s.current.as_ref()).map_or((0, 0, false), |c| (c.fs_base, c.gs_base, c.pinned));
    Some(t)
}

/// Where a new thread of the running process starts: the least busy online CPU (ready threads plus a running
/// one), this one on a tie, so a process's threads run in parallel; this CPU if the caller was placed here
/// (sched_setaffinity) or runs on a VCPU of its own (a budget belongs to one CPU's VCPU set).
pub fn cpu_for_new_thread() -> u32 {
    let me = percpu::cpu_index();
    let (pinned, vcpu) = with_current(|t| (t.pinned, t.vcpu));
    if pinned || vcpu != DEFAULT_VCPU {
        return me;
    }
    let load = |cpu: u32| -> Option<usize> {
        let g = SCHED[cpu as usize].lock();
        let s = g.as_ref()?;
        Some(s.ready.values().map(|q| q.len()).sum::<usize>() + usize::from(!s.idle_running))
    };
    let mut best = (me, load(me).unwrap_or(usize::MAX));
    for cpu in 0..crate::smp::cpu_count() {
        if cpu == me || !crate::smp::is_online(cpu) {
            continue;
        }
        if let Some(l) = load(cpu) {
            if l < best.1 {
                best = (cpu, l);
            }
        }
    }
    best.0
}

impl Thread {
    /// Set the thread's FS base (its TLS pointer: `clone`'s CLONE_SETTLS) before it first runs.
    pub fn set_fs_base(&mut self, fs: u64) {
        self.fs_base = fs;
    }

    /// Set the thread's Linux thread id (a thread of an existing process: not its pid) before it first runs.
    pub fn set_tid(&mut self, tid: u32) {
        self.tid = tid;
    }
}

/// The default Main VCPU every CPU starts with: today's programs run on it unchanged (10 % at foreground
/// priority, the rest of the core in the background when nothing else wants it).
pub const DEFAULT_VCPU: u32 = 0;
pub const DEFAULT_VCPU_BUDGET_US: u64 = 10_000;
pub const DEFAULT_VCPU_PERIOD_US: u64 = 100_000;
/// Trace ring entries per CPU.
const TRACE_EVENTS: usize = 4096;

// The VCPU set's clock is microseconds since boot: exact utilizations and harmonic periods as the user wrote
// them, and ample resolution for budgets of 100 µs and up.
fn now_us(tsc: u64) -> u64 {
    crate::time::cycles_to_us(tsc)
}


impl CpuSched {
    fn push_ready(&mut self, mut t: Box<Thread>) {
        if self.vcpus.get(t.vcpu).is_none() {
            t.vcpu = DEFAULT_VCPU;
        }
        self.ready.entry(t.vcpu).or_default().push_back(t);
    }
}

/// Queue a ready-made thread on `cpu`.
pub fn enqueue(cpu: u32, t: Box<Thread>) -> u64 {
    let id = t.id;
    SCHED[cpu as usize].lock().as_mut().expect("enqueue on a CPU without a scheduler").push_ready(t);
    if cpu != percpu::cpu_index() {
        crate::smp::send_reschedule(cpu);
    }
    id
}

static KERNEL_CR3: AtomicU64 = AtomicU64::new(0);

pub fn set_kernel_cr3(cr3: u64) {
    KERNEL_CR3.store(cr3, Ordering::SeqCst);
}

pub fn kernel_cr3() -> u64 {
    KERNEL_CR3.load(Ordering::SeqCst)
}

fn with_current<R>(f: impl FnOnce(&mut Thread) -> R) -> R {
    let cpu = percpu::cpu_index() as usize;
    let mut g = SCHED[cpu].lock();
    f(g.as_mut().and_then(|s| s.current.as_mut()).expect("no current thread"))
}

/// The running thread's VCPU (the default one before the scheduler runs).
pub fn current_vcpu() -> u32 {
    let cpu = percpu::cpu_index() as usize;
    SCHED[cpu].lock().as_ref().and_then(|s| s.current.as_ref()).map_or(DEFAULT_VCPU, |t| t.vcpu)
}

/// Process id of the running thread (0 for kernel threads).
pub fn current_pid() -> u32 {
    RUNNING_IDS[percpu::cpu_index() as usize].load(Ordering::Relaxed) as u32
}

/// TSC cycles the running thread has run so far (CPU time: times, getrusage).
pub fn current_run_cycles() -> u64 {
    let now = questv_arch::cpu::rdtsc();
    with_current(|t| t.run_cycles + now.saturating_sub(t.ran_since))
}

/// TSC cycles thread `id` has run, wherever it is (None: no such thread).
pub fn run_cycles_of(id: u64) -> Option<u64> {
    let now = questv_arch::cpu::rdtsc();
    for cpu in 0..crate::smp::cpu_count() {
        let g = SCHED[cpu as usize].lock();
        let Some(s) = g.as_ref() else { continue };
        if let Some(t) = s.current.as_ref().filter(|t| t.id == id) {
            return Some(t.run_cycles + now.saturating_sub(t.ran_since));
        }
        let queued = s.blocked.iter().chain(s.ready.values().flat_map(|q| q.iter())).find(|t| t.id == id);
        if let Some(t) = queued {
            return Some(t.run_cycles);
        }
    }
    None
}

/// Linux thread id of the running thread.
pub fn current_tid() -> u32 {
    (RUNNING_IDS[percpu::cpu_index() as usize].load(Ordering::Relaxed) >> 32) as u32
}

/// The running thread takes thread id `tid` (execve by a thread that is not its process's first).
pub fn set_current_tid(tid: u32) {
    let cpu = percpu::cpu_index() as usize;
    with_current(|t| {
        t.tid = tid;
        mirror_running(cpu, t);
    });
}

pub fn current_id() -> u64 {
    RUNNING_THREAD[percpu::cpu_index() as usize].load(Ordering::Relaxed)
}

/// The running thread's user thread-pointer bases (FS, GS).
pub fn user_tls() -> (u64, u64) {
    with_current(|t| (t.fs_base, t.gs_base))
}

/// Set the running thread's user FS and/or GS base (canonical: the caller checks) and load them now.
pub fn set_user_tls(fs: Option<u64>, gs: Option<u64>) {
    let (f, g) = with_current(|t| {
        t.fs_base = fs.unwrap_or(t.fs_base);
        t.gs_base = gs.unwrap_or(t.gs_base);
        (t.fs_base, t.gs_base)
    });
    questv_arch::cpu::set_user_tls(f, g);
}

/// The running thread's process has ended and its tables' user half is freed: free `root` (still loaded
/// here; counted as free from now on) once this CPU has switched away from the thread, which must leave
/// ([`exit`]) without enabling interrupts first (a system call or a trap: it cannot move to another CPU).
pub fn retire_root(root: u64) {
    crate::mm::kmem::defer_free_frame();
    with_current(|t| t.retired_root = Some(root));
}

/// Change the running thread's address space (exec, exit) and load it.
pub fn set_current_cr3(cr3: u64) {
    with_current(|t| t.cr3 = cr3);
    let root = if cr3 == 0 { kernel_cr3() } else { cr3 };
    crate::smp::note_loaded_root(root);
    // SAFETY: every address space shares the kernel's PML4 slot 0, so the running kernel code stays mapped.
    unsafe { questv_arch::cpu::write_cr3(root) };
}

/// The running thread's own stack, `[start, end)` (None for a CPU's boot thread, which runs on the stack the
/// CPU booted with).
pub fn current_stack() -> Option<(u64, u64)> {
    with_current(|t| t._stack.as_ref().map(|s| (s.as_ptr() as u64, s.as_ptr() as u64 + s.len() as u64)))
}

/// Was the running thread placed on its CPU by the program (sched_setaffinity)?
pub fn current_pinned() -> bool {
    with_current(|t| t.pinned)
}

/// The running thread stays where it is, placed there by the program (its new threads start here too).
pub fn pin_current() {
    with_current(|t| t.pinned = true);
}

/// Ask to run on `cpu` from the next switch on (takes effect when the caller yields).
pub fn migrate_current(cpu: u32) {
    with_current(|t| {
        t.migrate_to = Some(cpu);
        t.pinned = true;
    });
    yield_now();
}

/// Sleep until [`wake`] is called for this thread (returns at once if a wake-up is already pending).
pub fn block() {
    let must_switch = with_current(|t| {
        if t.wake_pending {
            t.wake_pending = false;
            false
        } else {
            t.state = State::Blocked;
            true
        }
    });
    if must_switch {
        yield_now();
    }
}

/// Make thread `id` runnable again, wherever it is.
pub fn wake(id: u64) {
    rouse(id, false);
}

/// Ask thread `id` to look at its process's signals before it next returns to user mode: it is woken if
/// blocked (a wait it is in then ends or restarts), and a CPU running it is interrupted so it looks now.
pub fn poke(id: u64) {
    rouse(id, true);
}

/// Wake thread `id` wherever it is (blocked: made runnable, with an IPI to its CPU; about to block: told to
/// come straight back; running or ready: its next block returns at once), raising its attention flag if asked
/// (then a CPU running it is interrupted too, so it looks now).
fn rouse(id: u64, attention: bool) {
    for cpu in 0..crate::smp::cpu_count() {
        let mut g = SCHED[cpu as usize].lock();
        let Some(s) = g.as_mut() else { continue };
        if let Some(i) = s.blocked.iter().position(|t| t.id == id) {
            let mut t = s.blocked.swap_remove(i);
            t.attention |= attention;
            t.state = State::Runnable;
            s.push_ready(t);
            drop(g);
            if cpu != percpu::cpu_index() {
                crate::smp::send_reschedule(cpu);
            }
            return;
        }
        let running = s.current.as_ref().is_some_and(|t| t.id == id);
        let cur = s.current.as_mut().filter(|t| t.id == id);
        if let Some(t) = cur.or_else(|| s.ready.values_mut().flat_map(|q| q.iter_mut()).find(|t| t.id == id)) {
            if attention {
                t.attention = true;
                if running {
                    RUNNING_ATTENTION[cpu as usize].store(true, Ordering::Release);
                }
            }
            if t.state == State::Blocked {
                // Marked blocked but not switched away yet: it will park itself; let it come straight back.
                t.state = State::Runnable;
            } else {
                t.wake_pending = true;
            }
            drop(g);
            if attention && running && cpu != percpu::cpu_index() {
                crate::smp::send_reschedule(cpu);
            }
            return;
        }
    }
}

/// Take the running thread's attention flag (see [`poke`]).
pub fn take_attention() -> bool {
    let cpu = percpu::cpu_index() as usize;
    // The common case, nothing posted, without the lock. A poke from another CPU that lands right after
    // this read also interrupts this CPU (a reschedule IPI), whose return path looks again.
    if !RUNNING_ATTENTION[cpu].load(Ordering::Acquire) {
        return false;
    }
    with_current(|t| {
        RUNNING_ATTENTION[cpu].store(false, Ordering::Relaxed);
        core::mem::take(&mut t.attention)
    })
}

/// Is the running thread's attention flag up (a signal was posted since it last returned to user mode)?
pub fn attention_pending() -> bool {
    RUNNING_ATTENTION[percpu::cpu_index() as usize].load(Ordering::Acquire)
}

/// Raise the running thread's attention flag (its own signal state changed: a mask was lifted).
pub fn set_attention() {
    let cpu = percpu::cpu_index() as usize;
    with_current(|t| {
        t.attention = true;
        RUNNING_ATTENTION[cpu].store(true, Ordering::Release);
    });
}

/// Block the running thread from the trap path (a stopped process): `frame`, its user context, is saved and
/// the next thread's loaded; [`wake`] or [`poke`] makes it runnable again. Returns at once if a wake-up is
/// already pending.
pub fn block_in_trap(frame: &mut TrapFrame) {
    let must_switch = with_current(|t| {
        if core::mem::take(&mut t.wake_pending) {
            false
        } else {
            t.state = State::Blocked;
            true
        }
    });
    if must_switch {
        schedule(frame, Reason::Yield);
    }
}

extern "C" fn idle_loop(_: u64) -> ! {
    loop {
        // SAFETY: the scheduler is initialised on this CPU before any thread runs.
        unsafe { questv_arch::cpu::enable_interrupts_and_halt() };
    }
}

/// Make the calling context this CPU's boot thread and create its idle thread.
pub fn init_cpu() {
    let cpu = percpu::cpu_index() as usize;
    // The frame is filled in at the first switch away from it.
    let boot = thread_with("boot", Box::new(TrapFrame::new_kernel_thread(0, 0, 0)), None, 0, 0);
    let mut vcpus = VcpuSet::new(TRACE_EVENTS);
    let default = Params { class: Class::Main, budget: DEFAULT_VCPU_BUDGET_US, period: DEFAULT_VCPU_PERIOD_US };
    let id = vcpus.create(default).expect("the default VCPU fits an empty core");
    debug_assert_eq!(id, DEFAULT_VCPU);
    mirror_running(cpu, &boot);
    *SCHED[cpu].lock() = Some(CpuSched {
        current: Some(boot),
        ready: BTreeMap::new(),
        vcpus,
        idle: Some(new_thread("idle", idle_loop, 0)),
        dead: Vec::new(),
        blocked: Vec::new(),
        idle_running: false,
        stats: CpuStats::default(),
    });
}

/// Create a kernel thread on `cpu`; it starts as `entry(arg)` and must end with [`exit`].
pub fn spawn_on(cpu: u32, name: &'static str, entry: extern "C" fn(u64) -> !, arg: u64) -> u64 {
    let t = new_thread(name, entry, arg);
    let id = t.id;
    SCHED[cpu as usize].lock().as_mut().expect("spawn on a CPU without a scheduler").push_ready(t);
    if cpu != percpu::cpu_index() {
        crate::smp::send_reschedule(cpu);
    }
    id
}

/// End the current thread. Its stack is freed at the next switch on this CPU.
pub fn exit() -> ! {
    let cpu = percpu::cpu_index() as usize;
    if let Some(s) = SCHED[cpu].lock().as_mut() {
        if let Some(cur) = s.current.as_mut() {
            cur.state = State::Dead;
        }
    }
    loop {
        trap::yield_via_trap();
    }
}

/// End the current thread from an exception handler: switch `frame` to the next thread right away.
pub fn exit_from_trap(frame: &mut TrapFrame) {
    with_current(|t| t.state = State::Dead);
    schedule(frame, Reason::Yield);
}

/// Give up the CPU to the next ready thread (if any).
pub fn yield_now() {
    trap::yield_via_trap();
}

/// One turn of a polling wait in a system call (a sleep, console input): other threads run, and the timer
/// tick gets in even when this thread is the only one (system calls run with interrupts off), so timers fire
/// and signals arrive while it waits.
pub fn yield_while_waiting() {
    yield_now();
    // SAFETY: threads run only once the IDT and LAPIC are set up, and a system call's wait loop holds no lock.
    unsafe { questv_arch::cpu::interrupt_window() };
}

pub fn stats(cpu: u32) -> CpuStats {
    SCHED[cpu as usize].lock().as_ref().map(|s| s.stats).unwrap_or_default()
}

/// Called from the interrupt handler with the interrupted context's frame.
pub fn schedule(frame: &mut TrapFrame, reason: Reason) {
    let cpu = percpu::cpu_index() as usize;
    let now = questv_arch::cpu::rdtsc();
    // A deadline in microseconds, rounded up to the TSC so the interrupt never comes a hair early.
    let deadline = |us: Option<u64>| us.map_or(u64::MAX, |us| crate::time::us_to_cycles(us + 1));
    let mut guard = SCHED[cpu].lock();
    let Some(s) = guard.as_mut() else {
        drop(guard);
        crate::smp::arm_timer(now, u64::MAX);
        return;
    };
    // Threads that died before the previous switch: nobody runs on their stacks any more. A user thread's
    // stack is kept for the next user thread.
    for mut t in s.dead.drain(..) {
        if let Some(stack) = t._stack.take().filter(|st| st.len() == USER_KSTACK_SIZE && t.pid != 0) {
            let mut spare = SPARE_KSTACKS.lock();
            if spare.len() < SPARE_KSTACKS_MAX {
                spare.push(stack);
            }
        }
    }
    match reason {
        Reason::Tick => {
            s.stats.ticks += 1;
            s.vcpus.rotate_background();
        }
        Reason::Yield => s.stats.yields += 1,
        Reason::Reschedule => {}
    }
    let current_runnable =
        !s.idle_running && s.current.as_ref().is_some_and(|c| c.state == State::Runnable && c.migrate_to.is_none());
    let current_vcpu = s.current.as_ref().map(|c| c.vcpu);
    let decision = {
        let ready = &s.ready;
        let has_work = |v: u32| ready.get(&v).is_some_and(|q| !q.is_empty()) || (current_runnable && current_vcpu == Some(v));
        s.vcpus.schedule(now_us(now), &has_work)
    };
    let chosen = decision.run.map(|(v, _)| v);
    // Keep the current thread if its VCPU still runs and no sibling is waiting (or it was not a rotation).
    let keep_current = current_runnable
        && chosen == current_vcpu
        && (s.ready.get(&chosen.unwrap_or(u32::MAX)).is_none_or(|q| q.is_empty()) || reason == Reason::Reschedule);
    if keep_current {
        drop(guard);
        crate::smp::arm_timer(now, deadline(decision.next_event));
        return;
    }
    let mut cur = s.current.take().expect("no current thread");
    *cur.frame = *frame;
    let (cur_state_dead, cur_retired) = (cur.state == State::Dead, cur.retired_root.take());
    cur.run_cycles += now.saturating_sub(cur.ran_since);
    let mut migrant = None;
    if s.idle_running {
        s.idle = Some(cur);
    } else if cur.state == State::Dead {
        s.dead.push(cur);
    } else if cur.state == State::Blocked {
        s.blocked.push(cur);
    } else if let Some(target) = cur.migrate_to.take() {
        migrant = Some((target, cur));
    } else {
        // Involuntary switch: the timer, a reschedule IPI or a higher-priority VCPU took the CPU away.
        if reason != Reason::Yield {
            s.stats.preemptions += 1;
        }
        s.push_ready(cur);
    }
    let retired_root = if cur_state_dead { cur_retired } else { None };
    let next = chosen.and_then(|v| s.ready.get_mut(&v).and_then(|q| q.pop_front()));
    let (next, next_is_idle) = match next {
        Some(t) => (t, false),
        None => (s.idle.take().expect("idle thread missing"), true),
    };
    s.idle_running = next_is_idle;
    let mut next = next;
    next.ran_since = now;
    *frame = *next.frame;
    if next.pid != 0 {
        percpu::set_kernel_stack_top(next.kstack_top);
        questv_arch::cpu::set_user_tls(next.fs_base, next.gs_base);
        // Another thread of the same process keeps the loaded tables: every change to them reached this core's
        // TLB (made here, or pushed by a shootdown to each core with the root loaded), so it is current, and a
        // reload would only throw it away.
        if questv_arch::cpu::read_cr3() != next.cr3 {
            crate::smp::note_loaded_root(next.cr3);
            // SAFETY: a user address space shares the kernel's PML4 slot 0.
            unsafe { questv_arch::cpu::write_cr3(next.cr3) };
        }
    } else if questv_arch::cpu::read_cr3() != kernel_cr3() && kernel_cr3() != 0 {
        // Kernel threads run on the kernel's tables, so an exiting process's tables can be freed safely.
        crate::smp::note_loaded_root(kernel_cr3());
        // SAFETY: the kernel's own tables map everything the kernel uses.
        unsafe { questv_arch::cpu::write_cr3(kernel_cr3()) };
    }
    if let Some(root) = retired_root {
        // This CPU runs on other tables now, and no other CPU ever loaded these (their process has ended).
        debug_assert_ne!(questv_arch::cpu::read_cr3(), root);
        crate::mm::kmem::free_retired_root(root);
    }
    mirror_running(cpu, &next);
    s.current = Some(next);
    s.stats.switches += 1;
    drop(guard);
    crate::smp::arm_timer(now, deadline(decision.next_event));
    if let Some((target, t)) = migrant {
        enqueue(target, t);
    }
}

/// A VCPU system-call error: errno and, for refusals, the message the kernel logged.
#[derive(Debug)]
pub enum VcpuError {
    Invalid,
    Infeasible,
    NoSuchVcpu,
}

/// Shortest and longest period a VCPU may have (the timer's resolution, and a sanity bound).
pub const MIN_PERIOD_US: u64 = 100;
pub const MAX_PERIOD_US: u64 = 10_000_000;

fn check_times(budget_us: u64, period_us: u64) -> Result<(), VcpuError> {
    if !(MIN_PERIOD_US..=MAX_PERIOD_US).contains(&period_us) || budget_us == 0 || budget_us > period_us {
        log::warn!("vcpu: refused C={} us T={} us: need 0 < C <= T and {} us <= T <= {} us", budget_us, period_us, MIN_PERIOD_US, MAX_PERIOD_US);
        return Err(VcpuError::Invalid);
    }
    Ok(())
}

fn vcpu_error(e: vcpu::Error) -> VcpuError {
    log::warn!("vcpu: refused: {}", e);
    match e {
        vcpu::Error::Invalid(_) => VcpuError::Invalid,
        vcpu::Error::Infeasible(_) => VcpuError::Infeasible,
        vcpu::Error::NoSuchVcpu => VcpuError::NoSuchVcpu,
    }
}

fn with_vcpus<R>(f: impl FnOnce(&mut CpuSched) -> R) -> R {
    let cpu = percpu::cpu_index() as usize;
    let mut g = SCHED[cpu].lock();
    f(g.as_mut().expect("no scheduler on this CPU"))
}

/// Create a VCPU on this CPU (admission-controlled); returns its id.
pub fn vcpu_create(class: Class, budget_us: u64, period_us: u64) -> Result<u32, VcpuError> {
    check_times(budget_us, period_us)?;
    let p = Params { class, budget: budget_us, period: period_us };
    let r = with_vcpus(|s| s.vcpus.create(p));
    let id = r.map_err(vcpu_error)?;
    log::info!("vcpu {} on cpu {}: {} C={} us T={} us", id, percpu::cpu_index(), class.name(), budget_us, period_us);
    Ok(id)
}

/// Change a VCPU's budget and period (admission-controlled).
pub fn vcpu_set(id: u32, budget_us: u64, period_us: u64) -> Result<(), VcpuError> {
    check_times(budget_us, period_us)?;
    let now = now_us(questv_arch::cpu::rdtsc());
    with_vcpus(|s| s.vcpus.set_params(now, id, budget_us, period_us)).map_err(vcpu_error)
}

/// Move the calling thread (and the children it forks from now on) to VCPU `id` of this CPU.
pub fn vcpu_bind(id: u32) -> Result<(), VcpuError> {
    let ok = with_vcpus(|s| {
        if s.vcpus.get(id).is_none() {
            return false;
        }
        if let Some(t) = s.current.as_mut() {
            t.vcpu = id;
        }
        true
    });
    if !ok {
        return Err(VcpuError::NoSuchVcpu);
    }
    // Let the scheduler account the switch of VCPU at once.
    yield_now();
    Ok(())
}

/// A VCPU's parameters and accounting, times in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuInfo {
    pub class: u64,
    pub budget_us: u64,
    pub period_us: u64,
    pub foreground_us: u64,
    pub background_us: u64,
    pub capacity_us: u64,
    pub replenishments: u64,
    pub exhausted: u64,
    pub overrun_us: u64,
    pub switches_in: u64,
}

pub fn vcpu_info(id: u32) -> Result<VcpuInfo, VcpuError> {
    let now = now_us(questv_arch::cpu::rdtsc());
    with_vcpus(|s| {
        s.vcpus.account(now);
        let v = s.vcpus.get(id).ok_or(VcpuError::NoSuchVcpu)?;
        let (p, a) = (v.params(), v.accounting());
        Ok(VcpuInfo {
            class: match p.class {
                Class::Main => 0,
                Class::Io => 1,
            },
            budget_us: p.budget,
            period_us: p.period,
            foreground_us: a.foreground,
            background_us: a.background,
            capacity_us: a.capacity,
            replenishments: a.replenishments,
            exhausted: a.exhausted,
            overrun_us: a.overrun,
            switches_in: a.switches_in,
        })
    })
}

/// This CPU's scheduling trace as CSV (times in microseconds since boot), then emptied.
pub fn vcpu_trace_csv() -> alloc::string::String {
    let trace = with_vcpus(|s| core::mem::replace(&mut s.vcpus.trace, vcpu::trace::Trace::new(TRACE_EVENTS)));
    let mut out = alloc::string::String::from("time_us,event,vcpu,amount_us\n");
    for e in trace.events() {
        use core::fmt::Write;
        let v = if e.vcpu == vcpu::trace::IDLE { alloc::string::String::from("idle") } else { alloc::format!("{}", e.vcpu) };
        let _ = writeln!(out, "{},{},{},{}", e.at, e.kind.name(), v, e.amount);
    }
    if trace.dropped > 0 {
        log::info!("vcpu trace: {} older event(s) dropped", trace.dropped);
    }
    out
}

/// I/O VCPU `io` of CPU `cpu` runs at `period` (µs; a Main VCPU's, of any CPU; `None`: its own) from now on.
pub fn vcpu_inherit_on(cpu: u32, io: u32, period: Option<u64>) -> Result<(), VcpuError> {
    let now = now_us(questv_arch::cpu::rdtsc());
    let mut g = SCHED.get(cpu as usize).ok_or(VcpuError::NoSuchVcpu)?.lock();
    let s = g.as_mut().ok_or(VcpuError::NoSuchVcpu)?;
    s.vcpus.inherit_period(now, io, period).map_err(vcpu_error)
}

/// The period (µs) of the VCPU the calling thread runs on.
pub fn current_vcpu_period() -> u64 {
    let vcpu = current_vcpu();
    with_vcpus(|s| s.vcpus.get(vcpu).map_or(DEFAULT_VCPU_PERIOD_US, |v| v.params().period))
}

/// The level the running VCPU has now (for tests and reports).
pub fn vcpu_running() -> Option<(u32, Level)> {
    with_vcpus(|s| s.vcpus.running())
}
