//! Per-core preemptive scheduler for kernel threads.
//!
//! Every switch happens in the trap path: the timer tick, the reschedule IPI and the voluntary yield trap all
//! arrive with a full [`TrapFrame`] (GPRs + FXSAVE) on the CPU's IST stack; switching threads means saving that
//! frame into the current thread and overwriting it with the next thread's. Nothing of a thread lives on the IST
//! stack after the handler returns, which is also why a dead thread's stack can be freed right there.
//! Each CPU has its own run queue; threads do not migrate.

use crate::sync::IrqSpinlock;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use questv_arch::percpu::{self, MAX_CPUS};
use questv_arch::trap::{self, TrapFrame};

pub const KERNEL_STACK_SIZE: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Runnable,
    Dead,
}

pub struct Thread {
    pub id: u64,
    pub name: &'static str,
    frame: Box<TrapFrame>,
    state: State,
    /// None for a CPU's boot thread, which runs on the stack the CPU booted with.
    _stack: Option<Box<[u8]>>,
}

#[derive(Default, Clone, Copy, Debug)]
pub struct CpuStats {
    pub ticks: u64,
    pub switches: u64,
    pub preemptions: u64,
    pub yields: u64,
}

struct CpuSched {
    current: Option<Box<Thread>>,
    ready: VecDeque<Box<Thread>>,
    idle: Option<Box<Thread>>,
    dead: Vec<Box<Thread>>,
    /// The idle thread is `current` (and so not in `idle`).
    idle_running: bool,
    stats: CpuStats,
}

static SCHED: [IrqSpinlock<Option<CpuSched>>; MAX_CPUS] = [const { IrqSpinlock::new(None) }; MAX_CPUS];
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Why the scheduler was entered.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Tick,
    Yield,
    Reschedule,
}

fn new_thread(name: &'static str, entry: extern "C" fn(u64) -> !, arg: u64) -> Box<Thread> {
    let stack = alloc::vec![0u8; KERNEL_STACK_SIZE].into_boxed_slice();
    let top = stack.as_ptr() as u64 + KERNEL_STACK_SIZE as u64;
    Box::new(Thread {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        name,
        frame: Box::new(TrapFrame::new_kernel_thread(entry as usize as u64, arg, top)),
        state: State::Runnable,
        _stack: Some(stack),
    })
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
    let boot = Box::new(Thread {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        name: "boot",
        // Filled in at the first switch away from it.
        frame: Box::new(TrapFrame::new_kernel_thread(0, 0, 0)),
        state: State::Runnable,
        _stack: None,
    });
    *SCHED[cpu].lock() = Some(CpuSched {
        current: Some(boot),
        ready: VecDeque::new(),
        idle: Some(new_thread("idle", idle_loop, 0)),
        dead: Vec::new(),
        idle_running: false,
        stats: CpuStats::default(),
    });
}

/// Create a kernel thread on `cpu`; it starts as `entry(arg)` and must end with [`exit`].
pub fn spawn_on(cpu: u32, name: &'static str, entry: extern "C" fn(u64) -> !, arg: u64) -> u64 {
    let t = new_thread(name, entry, arg);
    let id = t.id;
    SCHED[cpu as usize].lock().as_mut().expect("spawn on a CPU without a scheduler").ready.push_back(t);
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

/// Give up the CPU to the next ready thread (if any).
pub fn yield_now() {
    trap::yield_via_trap();
}

pub fn stats(cpu: u32) -> CpuStats {
    SCHED[cpu as usize].lock().as_ref().map(|s| s.stats).unwrap_or_default()
}

/// Called from the interrupt handler with the interrupted context's frame.
pub fn schedule(frame: &mut TrapFrame, reason: Reason) {
    let cpu = percpu::cpu_index() as usize;
    let mut guard = SCHED[cpu].lock();
    let Some(s) = guard.as_mut() else { return };
    // Threads that died before the previous switch: nobody runs on their stacks any more.
    s.dead.clear();
    match reason {
        Reason::Tick => s.stats.ticks += 1,
        Reason::Yield => s.stats.yields += 1,
        Reason::Reschedule => {}
    }
    let current_runnable = s.current.as_ref().is_some_and(|c| c.state == State::Runnable);
    let (next, next_is_idle) = match s.ready.pop_front() {
        Some(t) => (t, false),
        None if current_runnable => return,
        None => (s.idle.take().expect("idle thread missing"), true),
    };
    let mut cur = s.current.take().expect("no current thread");
    *cur.frame = *frame;
    if s.idle_running {
        s.idle = Some(cur);
    } else if cur.state == State::Dead {
        s.dead.push(cur);
    } else {
        if reason == Reason::Tick {
            s.stats.preemptions += 1;
        }
        s.ready.push_back(cur);
    }
    s.idle_running = next_is_idle;
    *frame = *next.frame;
    s.current = Some(next);
    s.stats.switches += 1;
}
