//! The process table: one entry per process (running or a zombie) under one interrupt-safe lock held only
//! briefly, and each process's address space behind its own lock. Shared by the process lifecycle (`proc`)
//! and its signals (`proc::signals`), which both reach it only through these items.
#![forbid(unsafe_code)]

use crate::mm::kmem::KernelMem;
use crate::mm::uspace::{UserError, UserSpace};
use crate::sched;
use crate::sync::IrqSpinlock;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use questv_arch::percpu::{self, MAX_CPUS};
use questv_libc_shim::errno::*;

pub const MAX_PROCS: usize = 1024;
/// Threads of all processes together (each process's first thread included).
pub const MAX_THREADS: usize = 4096;
pub const INIT_PID: u32 = 1;

/// ITIMER_REAL: the next expiry and the reload interval (0: one-shot), in TSC cycles.
#[derive(Clone, Copy, Debug)]
pub(super) struct Itimer {
    pub(super) deadline: u64,
    pub(super) interval: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum State {
    Running,
    /// Exited; holds the wait status (Linux encoding: exit code << 8, or the terminating signal).
    Zombie(i32),
}

/// A process's address space behind its own lock; `None` once the process has exited (torn down).
pub(super) type SpaceLock = Arc<IrqSpinlock<Option<UserSpace>>>;

pub(super) fn space_lock(space: UserSpace) -> SpaceLock {
    Arc::new(IrqSpinlock::new(Some(space)))
}

/// One thread of a process.
pub(super) struct ThreadEntry {
    /// The scheduler's id for it (to wake or poke it).
    pub(super) sched: u64,
    /// CLONE_CHILD_CLEARTID / set_tid_address: at the thread's exit 0 is written here and a futex waiter
    /// there woken (how pthread_join learns of it).
    pub(super) clear_tid: u64,
    /// Must leave at its next return to user mode (another thread called exit_group or execve, or the
    /// process was killed).
    pub(super) doomed: bool,
}

pub(super) struct Process {
    pub(super) ppid: u32,
    /// The program's name (the last component of the path it was executed by).
    pub(super) name: Arc<str>,
    /// Its arguments, each ended by a NUL (/proc/PID/cmdline), and the path it was executed by (/proc/PID/exe).
    pub(super) cmdline: Arc<[u8]>,
    pub(super) exe: Arc<str>,
    /// TSC when it was made (/proc/PID/stat's start time).
    pub(super) started: u64,
    /// Its descriptors, working directory and umask (shared by its threads, copied by fork).
    pub(super) fs: Arc<IrqSpinlock<crate::fs::files::FsState>>,
    pub(super) space: SpaceLock,
    pub(super) state: State,
    /// Thread blocked in wait4 for one of our children.
    pub(super) waiter: Option<u64>,
    /// Its threads by thread id (the first one's id is the pid; it may leave before the others).
    pub(super) threads: BTreeMap<u32, ThreadEntry>,
    /// The wait status the whole process ends with, once one thread called exit_group or a signal ended it.
    pub(super) group_exit: Option<i32>,
    /// Process group and session (setpgid, setsid; inherited by fork).
    pub(super) pgid: u32,
    pub(super) sid: u32,
    pub(super) sig: crate::signal::SignalState,
    /// Stopped by a stop signal until SIGCONT or SIGKILL.
    pub(super) stopped: bool,
    /// A stop or continue not yet reported to a wait4 with WUNTRACED / WCONTINUED (its wait status).
    pub(super) wait_report: Option<i32>,
    /// ITIMER_REAL (alarm, setitimer): the next expiry and the interval, in TSC cycles.
    pub(super) itimer: Option<Itimer>,
    /// CPU time (TSC cycles) of its threads that have left, and of its reaped children (and theirs).
    pub(super) cpu_self: u64,
    pub(super) cpu_children: u64,
}

impl Process {
    /// A process whose one thread has id `pid` and scheduler id `sched`; `sig` knows that thread as `pid`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(pid: u32, ppid: u32, name: Arc<str>, space: SpaceLock, sched: u64, pgid: u32, sid: u32, sig: crate::signal::SignalState, fs: crate::fs::files::FsState) -> Process {
        let mut threads = BTreeMap::new();
        threads.insert(pid, ThreadEntry { sched, clear_tid: 0, doomed: false });
        Process { ppid, cmdline: Arc::from(&b""[..]), exe: Arc::from(""), started: questv_arch::cpu::rdtsc(), name, fs: Arc::new(IrqSpinlock::new(fs)), space, state: State::Running, waiter: None, threads, group_exit: None, pgid, sid, sig, stopped: false, wait_report: None, itimer: None, cpu_self: 0, cpu_children: 0 }
    }

    /// The scheduler ids of all its threads.
    pub(super) fn all_threads(&self) -> alloc::vec::Vec<u64> {
        self.threads.values().map(|t| t.sched).collect()
    }

    /// The scheduler id of thread `tid`.
    pub(super) fn sched_of(&self, tid: u32) -> Option<u64> {
        self.threads.get(&tid).map(|t| t.sched)
    }
}

pub(super) struct Table {
    pub(super) procs: BTreeMap<u32, Process>,
    /// Every live thread's id and its process (pids and thread ids share one number space, as on Linux).
    pub(super) tids: BTreeMap<u32, u32>,
    pub(super) next_pid: u32,
}

pub(super) static TABLE: IrqSpinlock<Table> = IrqSpinlock::new(Table { procs: BTreeMap::new(), tids: BTreeMap::new(), next_pid: INIT_PID });

impl From<UserError> for i64 {
    fn from(e: UserError) -> i64 {
        match e {
            UserError::Fault => -EFAULT,
            UserError::NoMemory => -ENOMEM,
        }
    }
}

/// A number for a new process (`owner` None) or a new thread of process `owner`, not used by any process or
/// thread, and entered in `tids` at once (so it stays taken until [`release_tid`]); None when the table is
/// full.
pub(super) fn alloc_pid(t: &mut Table, owner: Option<u32>) -> Option<u32> {
    if (owner.is_none() && t.procs.len() >= MAX_PROCS) || t.tids.len() >= MAX_THREADS {
        return None;
    }
    loop {
        let pid = t.next_pid;
        t.next_pid = if t.next_pid >= 0x3FFF_FFFF { 2 } else { t.next_pid + 1 };
        if !t.procs.contains_key(&pid) && !t.tids.contains_key(&pid) {
            t.tids.insert(pid, owner.unwrap_or(pid));
            return Some(pid);
        }
    }
}

/// Thread id `tid` is free again (its thread left, or its creation failed).
pub(super) fn release_tid(t: &mut Table, tid: u32) {
    t.tids.remove(&tid);
}

/// Each CPU's last answer of [`current_space`], keyed by the scheduler id of the thread it was for. A
/// thread's process keeps one space lock for good (exec replaces what is inside it) and scheduler ids are never
/// reused, so an entry cannot go stale: every system call that touches user memory asks, and most then skip
/// the table.
static SPACE_CACHE: [IrqSpinlock<Option<(u64, SpaceLock)>>; MAX_CPUS] = [const { IrqSpinlock::new(None) }; MAX_CPUS];

/// The calling process's address-space lock (the table lock is held only to look it up).
pub(super) fn current_space() -> Option<SpaceLock> {
    let (cpu, thread) = (percpu::cpu_index() as usize, sched::current_id());
    if let Some((_, space)) = SPACE_CACHE[cpu].lock().as_ref().filter(|(id, _)| *id == thread) {
        return Some(space.clone());
    }
    let pid = sched::current_pid();
    let space = TABLE.lock().procs.get(&pid).map(|p| p.space.clone())?;
    // The entry it replaces may hold the last reference to an ended process's (empty) space lock: dropped
    // after the cache's lock is released.
    let old = SPACE_CACHE[cpu].lock().replace((thread, space.clone()));
    drop(old);
    Some(space)
}

/// The calling process's file-system state (descriptors, working directory, umask).
pub fn current_fs() -> Option<Arc<IrqSpinlock<crate::fs::files::FsState>>> {
    let pid = sched::current_pid();
    TABLE.lock().procs.get(&pid).map(|p| p.fs.clone())
}

/// Does process `pid` exist (running or a zombie)?
pub fn exists(pid: u32) -> bool {
    TABLE.lock().procs.contains_key(&pid)
}

/// How many processes there are (zombies included).
pub fn process_count() -> usize {
    TABLE.lock().procs.len()
}

/// Run `f` on the calling process's address space, holding only that space's lock.
pub fn with_space<R>(f: impl FnOnce(&mut UserSpace, &mut KernelMem) -> R) -> Option<R> {
    let space = current_space()?;
    let mut guard = space.lock();
    Some(f(guard.as_mut()?, &mut KernelMem))
}

