//! Signals for processes: the system calls (rt_sigaction, rt_sigprocmask, rt_sigreturn, kill/tkill/tgkill,
//! rt_sigpending, rt_sigsuspend, pause, rt_sigtimedwait, sigaltstack, alarm/setitimer/getitimer, the process
//! group and session calls), delivery on the way back to user mode, stop and continue, SIGCHLD, and faults as
//! signals. The bookkeeping is `crate::signal` (host-tested); this is where it meets the process table, user
//! memory and the scheduler.
//!
//! Delivery: posting a signal marks the process's thread (`sched::poke`): woken if blocked, interrupted if it
//! runs on another core. Every return to user mode (the end of the interrupt path, the exception hook) looks at
//! that flag and, when raised, delivers what is deliverable: a handler gets a frame on the user's stack, a
//! default action ends, stops or continues the process. A system call that a signal interrupted returns one of
//! Linux's ERESTART codes, settled here into a restart or EINTR by Linux's rule (`signal::restart_rule`).

#![forbid(unsafe_code)]

use super::table::{with_space, Itimer, Process, State, Table, INIT_PID, TABLE};
use crate::mm::kmem::KernelMem;
use crate::sched;
use crate::signal::{self, *};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use questv_arch::trap::{TrapFrame, VECTOR_SYSCALL};
use questv_arch::cpu;

use questv_libc_shim::errno::*;
const EINTR: i64 = 4;

/// `frame.error_code` of a system call frame holds its number (for a restart); this marks one that must not be
/// restarted (after rt_sigreturn, as Linux's orig_ax = -1).
pub const NO_RESTART: u64 = u64::MAX;

/// The earliest ITIMER_REAL expiry of any process (u64::MAX: none), so the tick looks at the table only when
/// one is due.
static NEXT_TIMER: AtomicU64 = AtomicU64::new(u64::MAX);

use crate::user::{read_array as read_user, write as write_user};

fn sigset_size_ok(size: u64) -> Result<(), i64> {
    if size == 8 {
        Ok(())
    } else {
        Err(-EINVAL)
    }
}

fn result(r: Result<i64, i64>) -> i64 {
    r.unwrap_or_else(|e| e)
}

// ---------------------------------------------------------------------------------------------------------
// Posting.

/// Threads (scheduler ids) to poke once the table lock is released.
pub(super) type Pokes = Vec<u64>;

/// Post `info` to process `p` (pid `pid`) under the table lock. Returns the threads to poke once the lock is
/// released (none: nothing to wake). SIGCONT and SIGKILL continue a stopped process, as Linux does when they
/// are sent, whatever their disposition.
pub(super) fn post_locked(p: &mut Process, pid: u32, info: SigInfo) -> Pokes {
    post_locked_to(p, pid, None, info)
}

/// [`post_locked`] to the process's pending set (`to` None: kill) or one thread's (tgkill, tkill). A
/// process-directed signal wakes the first thread not blocking it; SIGKILL, SIGCONT and the stop signals,
/// which act on the whole process, wake every thread.
fn post_locked_to(p: &mut Process, pid: u32, to: Option<u32>, info: SigInfo) -> Pokes {
    if p.state != State::Running {
        return Vec::new();
    }
    // init gets only the signals it has handlers for (signal(7)); a fault it takes is forced elsewhere.
    if pid == INIT_PID && p.sig.action(info.signo).handler == SIG_DFL {
        return Vec::new();
    }
    if (info.signo == SIGCONT || info.signo == SIGKILL) && p.stopped {
        p.stopped = false;
        if info.signo == SIGCONT {
            p.wait_report = Some(CONTINUED_STATUS);
        }
    }
    match p.sig.post_to(to, info) {
        Posted::Discarded | Posted::QueueFull if info.signo != SIGCONT => Vec::new(),
        _ if (STOP_SIGNALS | bit(SIGKILL) | bit(SIGCONT)) & bit(info.signo) != 0 => p.all_threads(),
        _ => to.or_else(|| p.sig.taker(info.signo)).and_then(|tid| p.sched_of(tid)).into_iter().collect(),
    }
}

/// The siginfo waitid reports for child `pid` in wait status `wait_status`: exited, killed, stopped or
/// continued.
pub(super) fn wait_info(pid: u32, wait_status: i32) -> SigInfo {
    if wait_status == CONTINUED_STATUS {
        return SigInfo { signo: SIGCHLD, code: CLD_CONTINUED, detail: Detail::Child { pid, uid: 0, status: SIGCONT as i32 } };
    }
    if wait_status & 0xFF == 0x7F {
        return SigInfo { signo: SIGCHLD, code: CLD_STOPPED, detail: Detail::Child { pid, uid: 0, status: (wait_status >> 8) & 0xFF } };
    }
    child_info(pid, wait_status)
}

/// The SIGCHLD a parent gets when child `pid` ends with `wait_status`.
pub(super) fn child_info(pid: u32, wait_status: i32) -> SigInfo {
    let (code, status) = if wait_status & 0x7F == 0 { (CLD_EXITED, (wait_status >> 8) & 0xFF) } else { (CLD_KILLED, wait_status & 0x7F) };
    SigInfo { signo: SIGCHLD, code, detail: Detail::Child { pid, uid: 0, status } }
}

/// Tell `ppid` that its child `pid` stopped or continued: its waiter is woken and, unless it asked
/// SA_NOCLDSTOP, it gets SIGCHLD. Returns (waiter to wake, threads to poke).
fn notify_parent(t: &mut Table, ppid: u32, info: SigInfo) -> (Option<u64>, Pokes) {
    let Some(parent) = t.procs.get_mut(&ppid) else { return (None, Vec::new()) };
    let waiter = parent.waiter.take();
    let poke = if parent.sig.wants_stop_notices() { post_locked(parent, ppid, info) } else { Vec::new() };
    (waiter, poke)
}

pub(super) fn wake_and_poke(wake: Option<u64>, pokes: Pokes) {
    if let Some(w) = wake {
        sched::wake(w);
    }
    for p in pokes {
        sched::poke(p);
    }
}

/// Post `info` to process `pid` (or its thread `to`) and wake it. Err(ESRCH) if there is no such process.
fn send_one(pid: u32, to: Option<u32>, info: SigInfo) -> Result<(), i64> {
    let mut t = TABLE.lock();
    let p = t.procs.get_mut(&pid).ok_or(-ESRCH)?;
    let was_stopped = p.stopped;
    let poke = if info.signo == 0 { Vec::new() } else { post_locked_to(p, pid, to, info) };
    let continued = was_stopped && !p.stopped;
    let ppid = p.ppid;
    let (waiter, parent_poke) = if continued && info.signo == SIGCONT {
        notify_parent(&mut t, ppid, SigInfo { signo: SIGCHLD, code: CLD_CONTINUED, detail: Detail::Child { pid, uid: 0, status: SIGCONT as i32 } })
    } else {
        (None, Vec::new())
    };
    drop(t);
    wake_and_poke(waiter, parent_poke);
    wake_and_poke(None, poke);
    Ok(())
}

/// kill(2): a process, the caller's group (0), every process but init and the caller (-1), or group -pid.
pub fn kill(pid: i64, sig: u64) -> i64 {
    if sig != 0 && !signal::valid(sig) {
        return -EINVAL;
    }
    let me = sched::current_pid();
    let info = SigInfo::user(sig as u32, SI_USER, me);
    if pid > 0 {
        let Ok(pid) = u32::try_from(pid) else { return -ESRCH };
        return result(send_one(pid, None, info).map(|()| 0));
    }
    if pid == i64::from(i32::MIN) {
        return -ESRCH;
    }
    let targets: alloc::vec::Vec<u32> = {
        let t = TABLE.lock();
        let my_pgid = t.procs.get(&me).map_or(0, |p| p.pgid);
        t.procs
            .iter()
            .filter(|(&p, c)| match pid {
                0 => c.pgid == my_pgid,
                -1 => p != INIT_PID && p != me,
                g => i64::from(c.pgid) == -g,
            })
            .map(|(&p, _)| p)
            .collect()
    };
    if targets.is_empty() {
        return -ESRCH;
    }
    for p in targets {
        let _ = send_one(p, None, info);
    }
    0
}

/// tgkill(2) / tkill(2) (`tgid` -1): one thread, of process `tgid` if given.
pub fn tgkill(tgid: i64, tid: i64, sig: u64) -> i64 {
    if tid <= 0 || tgid == 0 || tgid < -1 || (sig != 0 && !signal::valid(sig)) {
        return -EINVAL;
    }
    let Ok(tid) = u32::try_from(tid) else { return -ESRCH };
    let Some(pid) = TABLE.lock().tids.get(&tid).copied() else { return -ESRCH };
    if tgid > 0 && tgid != i64::from(pid) {
        return -ESRCH;
    }
    result(send_one(pid, Some(tid), SigInfo::user(sig as u32, SI_TKILL, sched::current_pid())).map(|()| 0))
}

// ---------------------------------------------------------------------------------------------------------
// Dispositions and masks.

/// Run `f` on the calling process's entry (the table locked) and the calling thread's id.
fn with_me<R>(f: impl FnOnce(&mut Process, u32) -> R) -> Result<R, i64> {
    let (me, tid) = (sched::current_pid(), sched::current_tid());
    let mut t = TABLE.lock();
    t.procs.get_mut(&me).map(|p| f(p, tid)).ok_or(-ESRCH)
}

/// Raise the caller's own attention if a signal became deliverable to it (a mask was lifted, one was posted).
fn recheck(p: &Process, tid: u32) {
    if p.sig.deliverable(tid) {
        sched::set_attention();
    }
}

pub fn rt_sigaction(sig: u64, act: u64, oact: u64, size: u64) -> i64 {
    result((|| {
        sigset_size_ok(size)?;
        let new = if act != 0 { Some(Action::from_bytes(&read_user::<32>(act)?)) } else { None };
        let old = with_me(|p, _| p.sig.set_action(sig, new))??;
        if oact != 0 {
            write_user(oact, &old.to_bytes())?;
        }
        Ok(0)
    })())
}

pub fn rt_sigprocmask(how: u64, set: u64, oset: u64, size: u64) -> i64 {
    result((|| {
        sigset_size_ok(size)?;
        let new = if set != 0 { Some(u64::from_le_bytes(read_user::<8>(set)?)) } else { None };
        let old = with_me(|p, tid| {
            let Some(new) = new else { return Ok(p.sig.blocked(tid)) };
            let old = p.sig.change_mask(tid, how, new)?;
            // A signal the new mask lets through is delivered on the way out (nothing pending: the usual case).
            let pending = p.sig.pending_set(tid);
            if pending != 0 && pending & !p.sig.blocked(tid) != 0 {
                sched::set_attention();
            }
            Ok::<u64, i64>(old)
        })??;
        if oset != 0 {
            write_user(oset, &old.to_le_bytes())?;
        }
        Ok(0)
    })())
}

/// rt_sigpending(2): the signals pending while blocked.
pub fn rt_sigpending(set: u64, size: u64) -> i64 {
    if size > 8 {
        return -EINVAL;
    }
    result((|| {
        let pending = with_me(|p, tid| p.sig.pending_set(tid) & p.sig.blocked(tid))?;
        write_user(set, &pending.to_le_bytes()[..size as usize])?;
        Ok(0)
    })())
}

/// Sleep until a signal is deliverable (a poke wakes the thread).
fn wait_for_signal() {
    while !with_me(|p, tid| p.sig.deliverable(tid)).unwrap_or(true) {
        sched::block();
    }
}

/// pause(2): until a handler has run (EINTR) or the process ends.
pub fn pause() -> i64 {
    wait_for_signal();
    -ERESTARTNOHAND
}

/// rt_sigsuspend(2): wait with `mask` in force; the old mask comes back when the handler returns.
pub fn rt_sigsuspend(mask: u64, size: u64) -> i64 {
    result((|| {
        sigset_size_ok(size)?;
        let mask = u64::from_le_bytes(read_user::<8>(mask)?);
        with_me(|p, tid| {
            let th = p.sig.thread_mut(tid);
            th.saved_mask = Some(th.blocked);
            p.sig.set_mask(tid, mask);
        })?;
        wait_for_signal();
        Err(-ERESTARTNOHAND)
    })())
}

/// A `struct timespec` from user memory, checked (EINVAL for a negative or out-of-range one); in nanoseconds.
pub fn read_timespec_ns(addr: u64) -> Result<u128, i64> {
    let b = read_user::<16>(addr)?;
    let sec = i64::from_le_bytes(b[..8].try_into().unwrap());
    let nsec = i64::from_le_bytes(b[8..].try_into().unwrap());
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(-EINVAL);
    }
    Ok(sec as u128 * 1_000_000_000 + nsec as u128)
}

fn ns_to_cycles(ns: u128) -> u128 {
    ns * u128::from(crate::time::tsc_hz()) / 1_000_000_000
}

fn cycles_to_ns(c: u64) -> u128 {
    u128::from(c) * 1_000_000_000 / u128::from(crate::time::tsc_hz().max(1))
}

/// rt_sigtimedwait(2): take a pending signal of `set` without running its handler; EAGAIN when `timeout`
/// (if any) passes first, EINTR when another signal is delivered.
pub fn rt_sigtimedwait(set: u64, info: u64, timeout: u64, size: u64) -> i64 {
    result((|| {
        sigset_size_ok(size)?;
        let set = u64::from_le_bytes(read_user::<8>(set)?) & !UNBLOCKABLE;
        let deadline = if timeout != 0 { Some(u128::from(cpu::rdtsc()) + ns_to_cycles(read_timespec_ns(timeout)?)) } else { None };
        loop {
            let (taken, interrupted) = with_me(|p, tid| match p.sig.take_from(tid, set) {
                Some(i) => (Some(i), false),
                None => (None, p.sig.deliverable(tid)),
            })?;
            if let Some(i) = taken {
                if info != 0 {
                    write_user(info, &i.to_bytes())?;
                }
                return Ok(i64::from(i.signo));
            }
            if interrupted {
                return Err(-EINTR);
            }
            if deadline.is_some_and(|d| u128::from(cpu::rdtsc()) >= d) {
                return Err(-EAGAIN);
            }
            // Waited-for signals are usually blocked, and a blocked one wakes no one: poll, yielding the CPU.
            sched::yield_while_waiting();
        }
    })())
}

/// sigaltstack(2). `user_sp`: the caller's stack pointer (whether it runs on the stack now).
pub fn sigaltstack(ss: u64, old: u64, user_sp: u64) -> i64 {
    result((|| {
        let new = if ss != 0 { Some(AltStack::from_bytes(&read_user::<24>(ss)?)) } else { None };
        let before = with_me(|p, tid| {
            let before = p.sig.thread(tid).altstack;
            if let Some((sp, flags, size)) = new {
                p.sig.thread_mut(tid).altstack = signal::set_altstack(&before, user_sp, sp, flags, size)?;
            }
            Ok::<AltStack, i64>(before)
        })??;
        if old != 0 {
            write_user(old, &before.to_bytes(user_sp))?;
        }
        Ok(0)
    })())
}

/// rt_sigreturn(2): back to the context the handler interrupted (its frame is at the handler's stack
/// pointer). A frame that cannot be read or returned to ends the process with SIGSEGV.
pub fn rt_sigreturn(frame: &mut TrapFrame) {
    frame.error_code = NO_RESTART;
    let mut uc = [0u8; signal::UCONTEXT_SIZE];
    let restored = match with_space(|s, m| s.copy_from_user(m, frame.rsp, &mut uc)) {
        Some(Ok(())) => {
            let mut ctx = to_context(frame);
            signal::restore_frame(&mut ctx, &uc).ok().map(|r| (ctx, r))
        }
        _ => None,
    };
    let Some((ctx, r)) = restored else {
        force_segv();
        return;
    };
    let mut fx = questv_arch::regs::FxArea::initial().0;
    if r.fpstate != 0 && with_space(|s, m| s.copy_from_user(m, r.fpstate, &mut fx)).and_then(Result::ok).is_none() {
        force_segv();
        return;
    }
    // The entry stub's FXSAVE wrote this CPU's MXCSR_MASK into the frame: the bits FXRSTOR accepts.
    let mxcsr_mask = u32::from_le_bytes(frame.fx.0[28..32].try_into().unwrap());
    signal::sanitize_fx(&mut fx, mxcsr_mask);
    from_context(frame, &ctx);
    frame.fx.0 = fx;
    let _ = with_me(|p, tid| {
        p.sig.set_mask(tid, r.mask);
        let (sp, flags, size) = r.altstack;
        // As Linux: a uc_stack that is not acceptable leaves the alternate stack as it is.
        if let Ok(a) = signal::set_altstack(&AltStack::NONE, 0, sp, flags, size) {
            p.sig.thread_mut(tid).altstack = a;
        }
        recheck(p, tid);
    });
}

fn force_segv() {
    let _ = with_me(|p, tid| {
        // The handler for SIGSEGV itself could not be set up: back to the default, or this would loop.
        if p.sig.action(SIGSEGV).handler > SIG_IGN {
            let _ = p.sig.set_action(u64::from(SIGSEGV), Some(Action::default()));
        }
        p.sig.force(tid, SigInfo::kernel(SIGSEGV));
    });
    sched::set_attention();
}

// ---------------------------------------------------------------------------------------------------------
// Delivery.

fn to_context(f: &TrapFrame) -> UserContext {
    UserContext { gprs: f.gprs, rip: f.rip, rsp: f.rsp, rflags: f.rflags, cs: f.cs, ss: f.ss, fx: f.fx.0 }
}

fn from_context(f: &mut TrapFrame, c: &UserContext) {
    f.gprs = c.gprs;
    f.rip = c.rip;
    f.rsp = c.rsp;
    f.rflags = c.rflags;
    f.fx.0 = c.fx;
}

/// Settle a system call's ERESTART return now that it is known whether a handler runs (`handler_flags`).
pub(super) fn settle_syscall(frame: &mut TrapFrame, handler_flags: Option<u64>) {
    if frame.vector != VECTOR_SYSCALL || frame.error_code == NO_RESTART {
        return;
    }
    match signal::restart_rule(frame.gprs.rax as i64, handler_flags) {
        Some(Restart::Again) => {
            // Back over the 2-byte SYSCALL instruction, with the call's number in RAX again.
            frame.rip -= 2;
            frame.gprs.rax = frame.error_code;
        }
        Some(Restart::Eintr) => frame.gprs.rax = (-EINTR) as u64,
        None => {}
    }
}

/// A fault from user mode raised `info`: it is forced (a blocked or ignored fault signal still ends the
/// process); the caller delivers it before the program runs again.
pub(super) fn force_fault(info: SigInfo) {
    let _ = with_me(|p, tid| {
        if info.signo == SIGKILL {
            p.sig.post(info);
        } else {
            p.sig.force(tid, info);
        }
    });
    sched::set_attention();
}

/// Deliver what is deliverable to the calling thread's process: handlers get their frames (several nest, as
/// on Linux), a stop parks the thread. Returns the signal whose default action ends the process, for the
/// caller to end it.
pub(super) fn deliver_current(frame: &mut TrapFrame) -> Option<u32> {
    let (pid, tid) = (sched::current_pid(), sched::current_tid());
    loop {
        let mut t = TABLE.lock();
        let p = t.procs.get_mut(&pid)?;
        if p.state != State::Running {
            return None;
        }
        if p.stopped && p.sig.pending_set(tid) & bit(SIGKILL) == 0 {
            drop(t);
            settle_syscall(frame, None);
            sched::block_in_trap(frame);
            return None;
        }
        let Some(info) = p.sig.take_deliverable(tid) else {
            // No handler ran after sigsuspend: its mask goes back now.
            if let Some(m) = p.sig.thread_mut(tid).saved_mask.take() {
                p.sig.set_mask(tid, m);
            }
            return None;
        };
        match p.sig.deliver(tid, &info) {
            Delivery::Ignore | Delivery::Continue => {}
            Delivery::Terminate | Delivery::Core => return Some(info.signo),
            Delivery::Stop => {
                p.stopped = true;
                p.wait_report = Some(signal::stopped_status(info.signo));
                let ppid = p.ppid;
                let notice = SigInfo { signo: SIGCHLD, code: CLD_STOPPED, detail: Detail::Child { pid, uid: 0, status: info.signo as i32 } };
                // The other threads stop too, at their next return to user mode.
                let mut others = p.all_threads();
                let me = sched::current_id();
                others.retain(|&th| th != me);
                let (waiter, poke) = notify_parent(&mut t, ppid, notice);
                drop(t);
                wake_and_poke(waiter, poke);
                wake_and_poke(None, others);
                settle_syscall(frame, None);
                sched::block_in_trap(frame);
                return None;
            }
            Delivery::Handler { action, restore_mask } => {
                settle_syscall(frame, Some(action.flags));
                let fault = (frame.vector < 32).then(|| (frame.vector, frame.error_code, if frame.vector == 14 { cpu::read_cr2() } else { 0 }));
                let mut ctx = to_context(frame);
                let mut altstack = p.sig.thread(tid).altstack;
                let built = signal::setup_frame(&mut ctx, &info, &action, restore_mask, &mut altstack, fault);
                p.sig.thread_mut(tid).altstack = altstack;
                let space = p.space.clone();
                let written = built.ok().and_then(|fr| {
                    let mut g = space.lock();
                    g.as_mut()?.copy_to_user(&mut KernelMem, fr.addr, &fr.bytes).ok()
                });
                if written.is_some() {
                    from_context(frame, &ctx);
                    // The handler's frame is not a system call to restart.
                    frame.error_code = NO_RESTART;
                } else {
                    // No room for the frame: SIGSEGV, with the default action if SIGSEGV was the one.
                    if info.signo == SIGSEGV {
                        let _ = p.sig.set_action(u64::from(SIGSEGV), Some(Action::default()));
                    }
                    p.sig.force(tid, SigInfo::kernel(SIGSEGV));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// ITIMER_REAL: alarm, setitimer, getitimer.

const ITIMER_REAL: u64 = 0;
const ITIMER_PROF: u64 = 2;

fn recompute_next(t: &Table) {
    let next = t.procs.values().filter_map(|p| p.itimer.map(|i| i.deadline)).min().unwrap_or(u64::MAX);
    NEXT_TIMER.store(next, Ordering::SeqCst);
}

/// Called at every timer tick: post SIGALRM to processes whose ITIMER_REAL expired, and reload the periodic
/// ones.
pub fn tick_timers() {
    let now = cpu::rdtsc();
    if now < NEXT_TIMER.load(Ordering::Relaxed) {
        return;
    }
    let mut pokes = alloc::vec::Vec::new();
    {
        let mut t = TABLE.lock();
        let due: alloc::vec::Vec<u32> = t.procs.iter().filter(|(_, p)| p.itimer.is_some_and(|i| i.deadline <= now)).map(|(&pid, _)| pid).collect();
        for pid in due {
            let Some(p) = t.procs.get_mut(&pid) else { continue };
            p.itimer = p.itimer.and_then(|i| (i.interval != 0).then(|| Itimer { deadline: (i.deadline + i.interval).max(now + 1), interval: i.interval }));
            pokes.extend(post_locked(p, pid, SigInfo::kernel(SIGALRM)));
        }
        recompute_next(&t);
    }
    for th in pokes {
        sched::poke(th);
    }
}

/// `struct itimerval`: interval, then value, each a timeval (sec, usec).
fn itimerval_bytes(value_ns: u128, interval_ns: u128) -> [u8; 32] {
    let mut b = [0u8; 32];
    for (i, ns) in [interval_ns, value_ns].into_iter().enumerate() {
        let sec = (ns / 1_000_000_000) as i64;
        let usec = ((ns % 1_000_000_000) / 1000) as i64;
        b[i * 16..i * 16 + 8].copy_from_slice(&sec.to_le_bytes());
        b[i * 16 + 8..i * 16 + 16].copy_from_slice(&usec.to_le_bytes());
    }
    b
}

/// The calling process's ITIMER_REAL as (value, interval) in nanoseconds, then replaced by `new` (value,
/// interval in ns; a zero value disarms).
fn swap_itimer(new: Option<(u128, u128)>) -> Result<(u128, u128), i64> {
    let now = cpu::rdtsc();
    let mut t = TABLE.lock();
    let me = sched::current_pid();
    let p = t.procs.get_mut(&me).ok_or(-ESRCH)?;
    let old = p.itimer.map_or((0, 0), |i| {
        // A timer due but not yet fired reads as 1 µs left, as Linux never reports an armed timer as zero.
        let left = cycles_to_ns(i.deadline.saturating_sub(now)).max(1000);
        (left, cycles_to_ns(i.interval))
    });
    if let Some((value, interval)) = new {
        p.itimer = (value != 0).then(|| Itimer {
            deadline: now.saturating_add(ns_to_cycles(value).min(u128::from(u64::MAX / 2)) as u64),
            interval: ns_to_cycles(interval).min(u128::from(u64::MAX / 2)) as u64,
        });
        recompute_next(&t);
    }
    Ok(old)
}

fn read_timeval_ns(b: &[u8]) -> Result<u128, i64> {
    let sec = i64::from_le_bytes(b[..8].try_into().unwrap());
    let usec = i64::from_le_bytes(b[8..16].try_into().unwrap());
    if sec < 0 || !(0..1_000_000).contains(&usec) {
        return Err(-EINVAL);
    }
    Ok(sec as u128 * 1_000_000_000 + usec as u128 * 1000)
}

fn itimer_which(which: u64) -> Result<(), i64> {
    match which {
        ITIMER_REAL => Ok(()),
        // ITIMER_VIRTUAL, ITIMER_PROF: no per-process CPU time is kept yet (the dispatcher names them once).
        1..=ITIMER_PROF => Err(-ENOSYS),
        _ => Err(-EINVAL),
    }
}

pub fn setitimer(which: u64, new: u64, old: u64) -> i64 {
    result((|| {
        itimer_which(which)?;
        // A NULL new value disarms, as Linux still allows.
        let (value, interval) = if new != 0 {
            let b = read_user::<32>(new)?;
            (read_timeval_ns(&b[16..])?, read_timeval_ns(&b[..16])?)
        } else {
            (0, 0)
        };
        let (ov, oi) = swap_itimer(Some((value, interval)))?;
        if old != 0 {
            write_user(old, &itimerval_bytes(ov, oi))?;
        }
        Ok(0)
    })())
}

pub fn getitimer(which: u64, cur: u64) -> i64 {
    result((|| {
        itimer_which(which)?;
        let (v, i) = swap_itimer(None)?;
        write_user(cur, &itimerval_bytes(v, i))?;
        Ok(0)
    })())
}

/// alarm(2): the seconds left of the previous alarm (rounded to the nearest, at least 1 if any was left).
pub fn alarm(secs: u64) -> i64 {
    let secs = u128::from(secs.min(u64::from(u32::MAX)));
    match swap_itimer(Some((secs * 1_000_000_000, 0))) {
        Ok((left, _)) if left == 0 => 0,
        Ok((left, _)) => ((left + 500_000_000) / 1_000_000_000).max(1) as i64,
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------------------
// Process groups and sessions.

fn target(t: &Table, pid: u64) -> Result<u32, i64> {
    let me = sched::current_pid();
    let pid = if pid == 0 { me } else { u32::try_from(pid).map_err(|_| -ESRCH)? };
    if t.procs.contains_key(&pid) {
        Ok(pid)
    } else {
        Err(-ESRCH)
    }
}

pub fn getpgid(pid: u64) -> i64 {
    let t = TABLE.lock();
    result(target(&t, pid).map(|p| i64::from(t.procs[&p].pgid)))
}

pub fn getsid(pid: u64) -> i64 {
    let t = TABLE.lock();
    result(target(&t, pid).map(|p| i64::from(t.procs[&p].sid)))
}

/// setpgid(2): the caller or one of its children, into a group of the same session (or a new one).
pub fn setpgid(pid: u64, pgid: u64) -> i64 {
    if pgid > i32::MAX as u64 {
        return -EINVAL;
    }
    let me = sched::current_pid();
    let mut t = TABLE.lock();
    result((|| {
        let pid = target(&t, pid)?;
        let (ppid, sid) = (t.procs[&pid].ppid, t.procs[&pid].sid);
        if pid != me && ppid != me {
            return Err(-ESRCH);
        }
        let my_sid = t.procs[&me].sid;
        if sid != my_sid || sid == pid {
            // Another session's process, or a session leader.
            return Err(-EPERM);
        }
        let pgid = if pgid == 0 { pid } else { pgid as u32 };
        if pgid != pid && !t.procs.values().any(|p| p.pgid == pgid && p.sid == sid) {
            return Err(-EPERM);
        }
        t.procs.get_mut(&pid).unwrap().pgid = pgid;
        Ok(0)
    })())
}

/// setsid(2): a new session and group led by the caller; EPERM if it already leads a group.
pub fn setsid() -> i64 {
    let me = sched::current_pid();
    let mut t = TABLE.lock();
    if t.procs.values().any(|p| p.pgid == me) {
        return -EPERM;
    }
    let Some(p) = t.procs.get_mut(&me) else { return -ESRCH };
    p.pgid = me;
    p.sid = me;
    i64::from(me)
}

/// Is a signal deliverable to the caller (so a wait should end with an ERESTART code)?
pub fn signal_pending() -> bool {
    with_me(|p, tid| p.sig.deliverable(tid)).unwrap_or(false)
}

/// A write found no reader: SIGPIPE to the writing thread (its default action ends the process).
pub fn raise_sigpipe() {
    let (pid, tid) = (sched::current_pid(), sched::current_tid());
    let _ = tgkill(i64::from(pid), i64::from(tid), u64::from(crate::signal::SIGPIPE));
}

/// A signal from the kernel to every process of group `pgrp` (the terminal's ^C, ^\ and ^Z).
pub fn signal_group(pgrp: u32, sig: u32) {
    let targets: Vec<u32> = TABLE.lock().procs.iter().filter(|(_, p)| p.pgid == pgrp && matches!(p.state, State::Running)).map(|(&pid, _)| pid).collect();
    for pid in targets {
        let _ = send_one(pid, None, SigInfo::kernel(sig));
    }
}
