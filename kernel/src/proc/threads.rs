//! Threads of a process: clone with CLONE_THREAD, thread exit and exit_group, set_tid_address, and futex(2).
//! Threads share their process's address space, dispositions and process-directed signals; each has its own
//! thread id (from the pid space), mask, alternate stack, TLS base and clear-child-tid word. A new thread
//! starts on the least busy core (the creator's if it was placed with sched_setaffinity), so a process's
//! threads run in parallel; a change to their shared page tables reaches every core that has them loaded
//! (`smp::tlb_shootdown`).
//!
//! Leaving: a thread that calls exit leaves alone (its clear-child-tid word is zeroed and its futex woken,
//! which is how pthread_join waits); the last one to leave ends the process. exit_group, a fatal signal and
//! execve mark every other thread doomed and post it SIGKILL, so it leaves at its next return to user mode,
//! from a wait too.

#![forbid(unsafe_code)]

use super::table::{alloc_pid, current_space, release_tid, with_space, ThreadEntry, TABLE};
use crate::futex::{self, Key, Queue};
use crate::sched;
use crate::signal::{SigInfo, SIGKILL};
use crate::sync::IrqSpinlock;
use alloc::boxed::Box;
use alloc::vec::Vec;
use questv_arch::trap::TrapFrame;
use questv_arch::cpu;
use questv_libc_shim::errno::*;

static FUTEXES: IrqSpinlock<Queue> = IrqSpinlock::new(Queue::new());

/// clone(CLONE_VM | CLONE_SIGHAND | CLONE_THREAD, ...): a new thread of the caller's process, starting where
/// the caller returns with RAX 0 on `stack` (if given) and FS base `tls` (CLONE_SETTLS). Returns its id.
pub fn spawn_thread(frame: &TrapFrame, stack: Option<u64>, tls: Option<u64>, parent_tid: Option<u64>, child_tid: Option<u64>, clear_tid: Option<u64>) -> i64 {
    let (pid, me) = (sched::current_pid(), sched::current_tid());
    let (tid, root) = {
        let mut t = TABLE.lock();
        let Some(root) = t.procs.get(&pid).filter(|p| p.group_exit.is_none()).and_then(|p| p.space.lock().as_ref().map(|s| s.root())) else {
            return -ESRCH;
        };
        let Some(tid) = alloc_pid(&mut t, Some(pid)) else { return -EAGAIN };
        (tid, root)
    };
    // Made once, on the heap, where the thread keeps it.
    let mut child_frame = Box::new(*frame);
    child_frame.gprs.rax = 0;
    if let Some(sp) = stack {
        child_frame.rsp = sp;
    }
    let Some(mut thread) = sched::new_user_thread("thread", child_frame, pid, root) else {
        release_tid(&mut TABLE.lock(), tid);
        return -ENOMEM;
    };
    thread.set_tid(tid);
    if let Some(fs) = tls {
        thread.set_fs_base(fs);
    }
    // The ids are written before the thread can run, as Linux does (pthread_create reads them at once).
    let id = tid.to_le_bytes();
    for at in [parent_tid, child_tid].into_iter().flatten() {
        let _ = with_space(|s, m| s.copy_to_user(m, at, &id));
    }
    {
        let mut t = TABLE.lock();
        let Some(p) = t.procs.get_mut(&pid).filter(|p| p.group_exit.is_none()) else {
            // The process is ending: the thread never runs.
            release_tid(&mut t, tid);
            return -ESRCH;
        };
        p.threads.insert(tid, ThreadEntry { sched: thread.id, clear_tid: clear_tid.unwrap_or(0), doomed: false });
        p.sig.add_thread(me, tid);
    }
    sched::enqueue(sched::cpu_for_new_thread(), thread);
    i64::from(tid)
}

/// set_tid_address(2): the caller's clear-child-tid word; returns its thread id.
pub fn set_tid_address(addr: u64) -> i64 {
    let (pid, tid) = (sched::current_pid(), sched::current_tid());
    if let Some(th) = TABLE.lock().procs.get_mut(&pid).and_then(|p| p.threads.get_mut(&tid)) {
        th.clear_tid = addr;
    }
    i64::from(tid)
}

/// Mark every thread of process `pid` but `except` doomed and post it SIGKILL (so a wait it sits in ends);
/// returns their scheduler ids to poke once the table lock is dropped.
pub(super) fn doom_others(t: &mut super::table::Table, pid: u32, except: u32) -> Vec<u64> {
    let Some(p) = t.procs.get_mut(&pid) else { return Vec::new() };
    let mut pokes = Vec::new();
    let others: Vec<u32> = p.threads.keys().copied().filter(|&tid| tid != except).collect();
    for tid in others {
        if let Some(th) = p.threads.get_mut(&tid) {
            th.doomed = true;
            pokes.push(th.sched);
        }
        p.sig.post_to(Some(tid), SigInfo::kernel(SIGKILL));
    }
    p.stopped = false;
    pokes
}

/// Is the calling thread doomed (it must leave before returning to user mode)?
pub(super) fn doomed() -> bool {
    let (pid, tid) = (sched::current_pid(), sched::current_tid());
    TABLE.lock().procs.get(&pid).and_then(|p| p.threads.get(&tid)).is_none_or(|th| th.doomed)
}

/// The calling thread leaves its process. If it was the last, this returns the status the process ends with
/// (the group's if one was set, else `wait_status`), for the caller to end it (`proc::exit_current`); the
/// caller then leaves the CPU either way.
#[must_use]
pub(super) fn leave(wait_status: i32) -> Option<i32> {
    let (pid, tid) = (sched::current_pid(), sched::current_tid());
    let ran = sched::current_run_cycles();
    let (clear_tid, last, status) = {
        let mut t = TABLE.lock();
        let Some(p) = t.procs.get_mut(&pid) else { return None };
        p.cpu_self += ran;
        let clear_tid = p.threads.remove(&tid).map_or(0, |th| th.clear_tid);
        p.sig.remove_thread(tid);
        let last = p.threads.is_empty();
        let status = p.group_exit.unwrap_or(wait_status);
        if tid != pid {
            release_tid(&mut t, tid);
        }
        (clear_tid, last, status)
    };
    if last {
        return Some(status);
    }
    if clear_tid != 0 {
        // CLONE_CHILD_CLEARTID: zero the word and wake one waiter (pthread_join), as Linux's mm_release.
        // A word that cannot be written is ignored, as there.
        if with_space(|s, m| s.copy_to_user(m, clear_tid, &0u32.to_le_bytes())).is_some_and(|r| r.is_ok()) {
            if let Some(space) = current_space() {
                wake_threads(FUTEXES.lock().wake((space_id(&space), clear_tid), 1, futex::FUTEX_BITSET_MATCH_ANY));
            }
        }
    }
    // Run on the kernel's tables from here: the process's may be freed by its last thread at any time.
    sched::set_current_cr3(0);
    None
}

/// exit_group(2), and a signal whose action ends the process: the whole process ends with `wait_status`
/// (the first such status wins); the other threads are doomed and this one leaves ([`leave`]'s result).
#[must_use]
pub(super) fn exit_group(wait_status: i32) -> Option<i32> {
    let (pid, tid) = (sched::current_pid(), sched::current_tid());
    let pokes = {
        let mut t = TABLE.lock();
        match t.procs.get_mut(&pid) {
            Some(p) => {
                p.group_exit.get_or_insert(wait_status);
                doom_others(&mut t, pid, tid)
            }
            None => Vec::new(),
        }
    };
    for th in pokes {
        sched::poke(th);
    }
    leave(wait_status)
}

/// execve in a process with several threads: the others leave first (Linux's de_thread), and the caller
/// takes the process's id as its thread id. Returns EAGAIN-free: it waits for them.
pub(super) fn become_only_thread() {
    let (pid, tid) = (sched::current_pid(), sched::current_tid());
    let pokes = doom_others(&mut TABLE.lock(), pid, tid);
    for th in pokes {
        sched::poke(th);
    }
    // They run on this core: yield until the last has left.
    while TABLE.lock().procs.get(&pid).is_some_and(|p| p.threads.len() > 1) {
        sched::yield_now();
    }
    if tid != pid {
        let mut t = TABLE.lock();
        if let Some(p) = t.procs.get_mut(&pid) {
            if let Some(th) = p.threads.remove(&tid) {
                p.threads.insert(pid, th);
            }
            p.sig.rename_thread(tid, pid);
        }
        release_tid(&mut t, tid);
        drop(t);
        sched::set_current_tid(pid);
    }
}

fn space_id(space: &super::table::SpaceLock) -> usize {
    alloc::sync::Arc::as_ptr(space) as usize
}

fn wake_threads(threads: Vec<u64>) -> i64 {
    let n = threads.len();
    for th in threads {
        sched::wake(th);
    }
    n as i64
}

/// The calling process's futex key for `uaddr` (EINVAL unless 4-byte aligned).
fn key(uaddr: u64) -> Result<Key, i64> {
    if uaddr % 4 != 0 {
        return Err(-EINVAL);
    }
    let space = current_space().ok_or(-ESRCH)?;
    Ok((space_id(&space), uaddr))
}

fn read_word(uaddr: u64) -> Result<u32, i64> {
    let mut b = [0u8; 4];
    match with_space(|s, m| s.copy_from_user(m, uaddr, &mut b)) {
        Some(Ok(())) => Ok(u32::from_le_bytes(b)),
        Some(Err(e)) => Err(e.into()),
        None => Err(-ESRCH),
    }
}

/// futex(2): WAIT, WAKE, REQUEUE, CMP_REQUEUE, WAKE_OP, WAIT_BITSET and WAKE_BITSET, private or not
/// (the same here: see `crate::futex`). The PI and robust-requeue operations are ENOSYS.
pub fn futex(uaddr: u64, op: u64, val: u64, timeout: u64, uaddr2: u64, val3: u64) -> i64 {
    let op = op as u32;
    let cmd = op & !(futex::FUTEX_PRIVATE_FLAG | futex::FUTEX_CLOCK_REALTIME);
    let (val, val3) = (val as u32, val3 as u32);
    if op & futex::FUTEX_CLOCK_REALTIME != 0 && cmd != futex::FUTEX_WAIT_BITSET && cmd != futex::FUTEX_WAIT {
        return -ENOSYS;
    }
    let r = (|| match cmd {
        futex::FUTEX_WAIT => wait(uaddr, val, timeout, false, op & futex::FUTEX_CLOCK_REALTIME != 0, futex::FUTEX_BITSET_MATCH_ANY),
        futex::FUTEX_WAIT_BITSET => {
            if val3 == 0 {
                return Err(-EINVAL);
            }
            wait(uaddr, val, timeout, true, op & futex::FUTEX_CLOCK_REALTIME != 0, val3)
        }
        futex::FUTEX_WAKE | futex::FUTEX_WAKE_BITSET => {
            let bits = if cmd == futex::FUTEX_WAKE { futex::FUTEX_BITSET_MATCH_ANY } else { val3 };
            if bits == 0 {
                return Err(-EINVAL);
            }
            let k = key(uaddr)?;
            Ok(wake_threads(FUTEXES.lock().wake(k, val, bits)))
        }
        futex::FUTEX_REQUEUE | futex::FUTEX_CMP_REQUEUE => {
            // The fourth argument is a count here, not a timeout pointer.
            let n_requeue = timeout as u32;
            if (val as i32) < 0 || (n_requeue as i32) < 0 {
                return Err(-EINVAL);
            }
            let (from, to) = (key(uaddr)?, key(uaddr2)?);
            let mut q = FUTEXES.lock();
            if cmd == futex::FUTEX_CMP_REQUEUE && read_word(uaddr)? != val3 {
                return Err(-EAGAIN);
            }
            let (woken, moved) = q.requeue(from, to, val, n_requeue);
            drop(q);
            // Both return the woken and the requeued together (Linux's futex_requeue counts both).
            Ok(wake_threads(woken) + i64::from(moved))
        }
        futex::FUTEX_WAKE_OP => {
            let (k1, k2) = (key(uaddr)?, key(uaddr2)?);
            let mut q = FUTEXES.lock();
            // Read, operate and write the second word under the futex lock (Linux does it atomically).
            let outcome = with_space(|s, m| {
                let mut b = [0u8; 4];
                s.copy_from_user(m, uaddr2, &mut b)?;
                let old = u32::from_le_bytes(b);
                let Some((new, holds)) = futex::wake_op(val3, old) else { return Ok(None) };
                s.copy_to_user(m, uaddr2, &new.to_le_bytes())?;
                Ok::<_, crate::mm::uspace::UserError>(Some(holds))
            })
            .ok_or(-ESRCH)?
            .map_err(i64::from)?;
            let Some(holds) = outcome else { return Err(-ENOSYS) };
            let mut woken = q.wake(k1, val, futex::FUTEX_BITSET_MATCH_ANY);
            if holds {
                woken.extend(q.wake(k2, timeout as u32, futex::FUTEX_BITSET_MATCH_ANY));
            }
            drop(q);
            Ok(wake_threads(woken))
        }
        _ => Err(-ENOSYS),
    })();
    r.unwrap_or_else(|e| e)
}

/// Wait on `uaddr` while it holds `expected`. `timeout`: a relative timespec (FUTEX_WAIT) or an absolute one
/// on the monotonic or (CLOCK_REALTIME) wall clock (FUTEX_WAIT_BITSET); 0: none.
fn wait(uaddr: u64, expected: u32, timeout: u64, absolute: bool, realtime: bool, bitset: u32) -> Result<i64, i64> {
    let k = key(uaddr)?;
    let deadline = if timeout == 0 {
        None
    } else {
        let ns = super::signals::read_timespec_ns(timeout)?;
        let now = cpu::rdtsc();
        let rel = if absolute {
            let clock_now = if realtime { crate::time::realtime_ns(now).unwrap_or_else(|| crate::time::cycles_to_ns(now)) } else { crate::time::cycles_to_ns(now) };
            ns.saturating_sub(u128::from(clock_now))
        } else {
            ns
        };
        Some(u128::from(now) + rel * u128::from(crate::time::tsc_hz()) / 1_000_000_000)
    };
    let me = sched::current_id();
    {
        // Compare and enqueue under the futex lock: a waker that changed the word and woke after our read
        // finds us queued.
        let mut q = FUTEXES.lock();
        if read_word(uaddr)? != expected {
            return Err(-EAGAIN);
        }
        q.wait(k, bitset, me);
    }
    loop {
        if !FUTEXES.lock().is_waiting(me) {
            return Ok(0);
        }
        let interrupted = sched::attention_pending() && super::signals::signal_pending();
        let expired = deadline.is_some_and(|d| u128::from(cpu::rdtsc()) >= d);
        if interrupted || expired {
            if !FUTEXES.lock().cancel(me) {
                return Ok(0);
            }
            // Linux: an untimed wait restarts after a handler (ERESTARTSYS); a timed one is EINTR then.
            return Err(if expired {
                -ETIMEDOUT
            } else if deadline.is_none() {
                -crate::signal::ERESTARTSYS
            } else {
                -crate::signal::ERESTARTNOHAND
            });
        }
        if deadline.is_some() {
            // Timed: poll the clock, yielding the core (as nanosleep does).
            sched::yield_while_waiting();
        } else {
            sched::block();
        }
    }
}

/// Forget the futex waiters of a process whose address space is going away.
pub(super) fn forget_space(space: &super::table::SpaceLock) {
    FUTEXES.lock().forget_space(space_id(space));
}
