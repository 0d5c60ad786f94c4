//! Signals as Linux implements POSIX (signal(7), sigaction(2)): dispositions, masks, pending sets and queues,
//! the choice of what a delivery does, the restart rule for interrupted system calls, and the x86-64 signal
//! frame (`struct rt_sigframe`: return address, `ucontext`, `siginfo`, FXSAVE state) that delivery writes on
//! the user's stack and `rt_sigreturn` reads back. Pure bookkeeping, host-tested; the process table holds one
//! [`SignalState`] per process and the kernel does the copies and the waking.
#![forbid(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use questv_arch::regs::{FxArea, Gprs};

/// The user context a signal interrupts and rt_sigreturn puts back: what the trap frame holds of it (the kernel
/// copies between the two), kept here so the frame logic is host-tested.
#[derive(Clone, Copy, Debug)]
pub struct UserContext {
    pub gprs: Gprs,
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub cs: u64,
    pub ss: u64,
    /// The FXSAVE image (x87/MMX/SSE).
    pub fx: [u8; 512],
}

/// Signals are 1..=64 (the kernel's `_NSIG`).
pub const NSIG: u32 = 64;
pub const SIGHUP: u32 = 1;
pub const SIGINT: u32 = 2;
pub const SIGQUIT: u32 = 3;
pub const SIGILL: u32 = 4;
pub const SIGTRAP: u32 = 5;
pub const SIGABRT: u32 = 6;
pub const SIGBUS: u32 = 7;
pub const SIGFPE: u32 = 8;
pub const SIGKILL: u32 = 9;
pub const SIGUSR1: u32 = 10;
pub const SIGSEGV: u32 = 11;
pub const SIGUSR2: u32 = 12;
pub const SIGPIPE: u32 = 13;
pub const SIGALRM: u32 = 14;
pub const SIGTERM: u32 = 15;
pub const SIGCHLD: u32 = 17;
pub const SIGCONT: u32 = 18;
pub const SIGSTOP: u32 = 19;
pub const SIGTSTP: u32 = 20;
pub const SIGTTIN: u32 = 21;
pub const SIGTTOU: u32 = 22;
pub const SIGURG: u32 = 23;
pub const SIGXCPU: u32 = 24;
pub const SIGXFSZ: u32 = 25;
pub const SIGWINCH: u32 = 28;
pub const SIGSYS: u32 = 31;
/// The first real-time signal (the kernel's; C libraries keep 32–34 for themselves).
pub const SIGRTMIN: u32 = 32;

pub const SIG_DFL: u64 = 0;
pub const SIG_IGN: u64 = 1;

pub const SA_NOCLDSTOP: u64 = 0x1;
pub const SA_NOCLDWAIT: u64 = 0x2;
pub const SA_SIGINFO: u64 = 0x4;
pub const SA_RESTORER: u64 = 0x0400_0000;
pub const SA_ONSTACK: u64 = 0x0800_0000;
pub const SA_RESTART: u64 = 0x1000_0000;
pub const SA_NODEFER: u64 = 0x4000_0000;
pub const SA_RESETHAND: u64 = 0x8000_0000;

pub const SIG_BLOCK: u64 = 0;
pub const SIG_UNBLOCK: u64 = 1;
pub const SIG_SETMASK: u64 = 2;

// si_code values.
pub const SI_USER: i32 = 0;
pub const SI_KERNEL: i32 = 0x80;
pub const SI_TKILL: i32 = -6;
pub const CLD_EXITED: i32 = 1;
pub const CLD_KILLED: i32 = 2;
pub const CLD_DUMPED: i32 = 3;
pub const CLD_STOPPED: i32 = 5;
pub const CLD_CONTINUED: i32 = 6;
pub const SEGV_MAPERR: i32 = 1;
pub const SEGV_ACCERR: i32 = 2;
pub const ILL_ILLOPN: i32 = 2;
pub const FPE_INTDIV: i32 = 1;
pub const FPE_FLTINV: i32 = 7;
pub const TRAP_BRKPT: i32 = 1;

// sigaltstack(2).
pub const SS_ONSTACK: i32 = 1;
pub const SS_DISABLE: i32 = 2;
pub const SS_AUTODISARM: i32 = 1 << 31;
pub const MINSIGSTKSZ: u64 = 2048;

/// Linux's internal "restart this system call" returns: never seen by user space; delivery turns them into a
/// restart or EINTR ([`restart_rule`]).
pub const ERESTARTSYS: i64 = 512;
pub const ERESTARTNOINTR: i64 = 513;
pub const ERESTARTNOHAND: i64 = 514;

/// Queued real-time signals per process beyond which `kill` of one fails with EAGAIN (RLIMIT_SIGPENDING).
pub const MAX_QUEUED: usize = 64;

const EINVAL: i64 = 22;
const EPERM: i64 = 1;
const ENOMEM: i64 = 12;

/// A set of signals: bit `sig - 1` (the kernel's 8-byte `sigset_t`).
pub type SigSet = u64;

pub const fn bit(sig: u32) -> SigSet {
    1 << (sig - 1)
}

/// SIGKILL and SIGSTOP: never blocked, caught or ignored.
pub const UNBLOCKABLE: SigSet = bit(SIGKILL) | bit(SIGSTOP);
/// Signals a fault raises: taken before any other pending signal, as Linux does.
const SYNCHRONOUS: SigSet = bit(SIGSEGV) | bit(SIGBUS) | bit(SIGILL) | bit(SIGTRAP) | bit(SIGFPE) | bit(SIGSYS);
pub const STOP_SIGNALS: SigSet = bit(SIGSTOP) | bit(SIGTSTP) | bit(SIGTTIN) | bit(SIGTTOU);

pub fn valid(sig: u64) -> bool {
    (1..=u64::from(NSIG)).contains(&sig)
}

/// What a signal does when its disposition is SIG_DFL (signal(7)'s table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultAction {
    Terminate,
    /// Terminate "with a core dump": no core is written (RLIMIT_CORE is 0), so the wait status is the same as
    /// Terminate's, as on Linux when no dump is made.
    Core,
    Ignore,
    Stop,
    Continue,
}

pub fn default_action(sig: u32) -> DefaultAction {
    match sig {
        SIGQUIT | SIGILL | SIGTRAP | SIGABRT | SIGBUS | SIGFPE | SIGSEGV | SIGXCPU | SIGXFSZ | SIGSYS => DefaultAction::Core,
        SIGCHLD | SIGURG | SIGWINCH => DefaultAction::Ignore,
        SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU => DefaultAction::Stop,
        SIGCONT => DefaultAction::Continue,
        _ => DefaultAction::Terminate,
    }
}

/// The kernel's `struct sigaction` on x86-64: handler, flags, restorer, mask (32 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Action {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: SigSet,
}

impl Action {
    pub fn from_bytes(b: &[u8; 32]) -> Action {
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        Action { handler: w(0), flags: w(1), restorer: w(2), mask: w(3) }
    }
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for (i, w) in [self.handler, self.flags, self.restorer, self.mask].into_iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        b
    }
}

/// Who sent a signal, or why the kernel did: the union of `siginfo_t` this kernel fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// kill, tgkill, tkill (SI_USER, SI_TKILL) and the kernel's own (SI_KERNEL): the sender's pid and uid.
    Sender { pid: u32, uid: u32 },
    /// SIGCHLD: the child, and its exit code or the signal that ended, stopped or continued it.
    Child { pid: u32, uid: u32, status: i32 },
    /// A fault: the address it concerned.
    Fault { addr: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigInfo {
    pub signo: u32,
    pub code: i32,
    pub detail: Detail,
}

impl SigInfo {
    pub fn user(signo: u32, code: i32, pid: u32) -> SigInfo {
        SigInfo { signo, code, detail: Detail::Sender { pid, uid: 0 } }
    }
    pub fn kernel(signo: u32) -> SigInfo {
        SigInfo { signo, code: SI_KERNEL, detail: Detail::Sender { pid: 0, uid: 0 } }
    }
    pub fn fault(signo: u32, code: i32, addr: u64) -> SigInfo {
        SigInfo { signo, code, detail: Detail::Fault { addr } }
    }

    /// `siginfo_t` (128 bytes): signo, errno, code, then the union at offset 16.
    pub fn to_bytes(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[0..4].copy_from_slice(&self.signo.to_le_bytes());
        b[8..12].copy_from_slice(&self.code.to_le_bytes());
        match self.detail {
            Detail::Sender { pid, uid } => {
                b[16..20].copy_from_slice(&pid.to_le_bytes());
                b[20..24].copy_from_slice(&uid.to_le_bytes());
            }
            Detail::Child { pid, uid, status } => {
                b[16..20].copy_from_slice(&pid.to_le_bytes());
                b[20..24].copy_from_slice(&uid.to_le_bytes());
                b[24..28].copy_from_slice(&status.to_le_bytes());
            }
            Detail::Fault { addr } => b[16..24].copy_from_slice(&addr.to_le_bytes()),
        }
        b
    }
}

/// The alternate signal stack (sigaltstack(2)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AltStack {
    pub sp: u64,
    pub size: u64,
    /// SS_AUTODISARM, if asked for; SS_DISABLE when there is none.
    pub flags: i32,
}

impl AltStack {
    pub const NONE: AltStack = AltStack { sp: 0, size: 0, flags: SS_DISABLE };

    fn enabled(&self) -> bool {
        self.flags & SS_DISABLE == 0 && self.size != 0
    }
    /// Is `sp` on this stack (Linux counts the top as outside, the base inside)?
    pub fn contains(&self, sp: u64) -> bool {
        self.enabled() && sp > self.sp && sp - self.sp <= self.size
    }
    /// `stack_t` (ss_sp, ss_flags, ss_size) as sigaltstack reports it and `uc_stack` holds it.
    pub fn to_bytes(&self, current_sp: u64) -> [u8; 24] {
        let flags = if !self.enabled() {
            SS_DISABLE
        } else if self.contains(current_sp) {
            SS_ONSTACK | (self.flags & SS_AUTODISARM)
        } else {
            self.flags & SS_AUTODISARM
        };
        let mut b = [0u8; 24];
        b[0..8].copy_from_slice(&self.sp.to_le_bytes());
        b[8..12].copy_from_slice(&flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.size.to_le_bytes());
        b
    }
    pub fn from_bytes(b: &[u8; 24]) -> (u64, i32, u64) {
        let sp = u64::from_le_bytes(b[0..8].try_into().unwrap());
        let flags = i32::from_le_bytes(b[8..12].try_into().unwrap());
        let size = u64::from_le_bytes(b[16..24].try_into().unwrap());
        (sp, flags, size)
    }
}

/// sigaltstack(2)'s checks for a new stack (`current_sp`: the caller's). EPERM while running on the stack,
/// EINVAL for unknown flags, ENOMEM for one smaller than MINSIGSTKSZ.
pub fn set_altstack(old: &AltStack, current_sp: u64, sp: u64, flags: i32, size: u64) -> Result<AltStack, i64> {
    if old.contains(current_sp) {
        return Err(-EPERM);
    }
    let mode = flags & !SS_AUTODISARM;
    if mode != 0 && mode != SS_DISABLE && mode != SS_ONSTACK {
        return Err(-EINVAL);
    }
    if mode == SS_DISABLE {
        return Ok(AltStack::NONE);
    }
    if size < MINSIGSTKSZ {
        return Err(-ENOMEM);
    }
    Ok(AltStack { sp, size, flags: flags & SS_AUTODISARM })
}

/// What happened to a posted signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Posted {
    /// Pending now (or merged with the same standard signal already pending).
    Pending,
    /// Ignored and not blocked: dropped at once, as Linux drops it.
    Discarded,
    /// A real-time signal beyond the queue's limit.
    QueueFull,
}

/// What delivering one signal means for the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Run the handler with this action; `restore_mask` goes into the frame for rt_sigreturn.
    Handler { action: Action, restore_mask: SigSet },
    Ignore,
    Terminate,
    Core,
    Stop,
    Continue,
}

/// One thread's part of the signal state: its blocked mask, its alternate stack, and the mask to restore
/// after a temporary one (sigsuspend, sigtimedwait).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadSignals {
    pub blocked: SigSet,
    pub altstack: AltStack,
    /// The mask in force before sigsuspend replaced it: the next handler's frame restores it, or, with no
    /// handler run, the call puts it back itself.
    pub saved_mask: Option<SigSet>,
}

impl Default for ThreadSignals {
    fn default() -> Self {
        ThreadSignals { blocked: 0, altstack: AltStack::NONE, saved_mask: None }
    }
}

/// One process's signals: dispositions (shared by its threads), what is pending — each signal sent either to
/// the process (kill: any thread not blocking it takes it) or to one thread (tgkill, a fault) — and each
/// thread's mask and alternate stack, by thread id.
#[derive(Clone, Debug)]
pub struct SignalState {
    /// Shared copy-on-write: fork shares them, the first change copies (and the process entry stays small, so
    /// the process table moves it cheaply).
    actions: Arc<[Action; NSIG as usize]>,
    /// What is pending, each with the thread it was sent to (None: the process). Linux keeps the two sets
    /// apart, so one standard signal may be pending once in each.
    pending: Vec<(Option<u32>, SigInfo)>,
    threads: BTreeMap<u32, ThreadSignals>,
}

impl SignalState {
    /// A new process whose one thread is `tid`.
    pub fn new(tid: u32) -> SignalState {
        let mut threads = BTreeMap::new();
        threads.insert(tid, ThreadSignals::default());
        SignalState { actions: Arc::new([Action::default(); NSIG as usize]), pending: Vec::new(), threads }
    }

    /// A child forked by thread `tid`: the same dispositions, that thread's mask and alternate stack for its
    /// one thread `child`, nothing pending.
    pub fn forked(&self, tid: u32, child: u32) -> SignalState {
        let mut threads = BTreeMap::new();
        threads.insert(child, ThreadSignals { saved_mask: None, ..self.thread(tid) });
        SignalState { actions: self.actions.clone(), pending: Vec::new(), threads }
    }

    /// Thread `tid` starts thread `new` in the process (clone with CLONE_THREAD): the same mask, no alternate
    /// stack (Linux clears it for a thread sharing the address space), nothing pending.
    pub fn add_thread(&mut self, tid: u32, new: u32) {
        let blocked = self.thread(tid).blocked;
        self.threads.insert(new, ThreadSignals { blocked, ..ThreadSignals::default() });
    }

    /// Thread `tid` is gone: its own pending signals go with it.
    pub fn remove_thread(&mut self, tid: u32) {
        self.threads.remove(&tid);
        self.pending.retain(|(t, _)| *t != Some(tid));
    }

    /// Thread `old` takes the id `new` (the thread that called execve becomes the process's leader).
    pub fn rename_thread(&mut self, old: u32, new: u32) {
        if let Some(th) = self.threads.remove(&old) {
            self.threads.insert(new, th);
            for (t, _) in self.pending.iter_mut() {
                if *t == Some(old) {
                    *t = Some(new);
                }
            }
        }
    }

    /// Thread `tid`'s part (all defaults for a thread the state does not know).
    pub fn thread(&self, tid: u32) -> ThreadSignals {
        self.threads.get(&tid).copied().unwrap_or_default()
    }

    /// Thread `tid`'s part, to change it.
    pub fn thread_mut(&mut self, tid: u32) -> &mut ThreadSignals {
        self.threads.entry(tid).or_default()
    }

    pub fn blocked(&self, tid: u32) -> SigSet {
        self.thread(tid).blocked
    }

    /// execve by thread `tid` (by then the only one): caught signals go back to their default (ignored ones
    /// stay ignored); the mask and what is pending are kept; the alternate stack is gone with the old memory.
    pub fn exec(&mut self, tid: u32) {
        let ignored = Action { handler: SIG_IGN, ..Action::default() };
        if self.actions.iter().all(|a| *a == Action::default() || *a == ignored) {
            // Nothing caught and nothing to reset (the common exec after fork): keep the shared table.
            self.thread_mut(tid).altstack = AltStack::NONE;
            return;
        }
        for a in Arc::make_mut(&mut self.actions).iter_mut() {
            let ignored = a.handler == SIG_IGN;
            *a = Action::default();
            if ignored {
                a.handler = SIG_IGN;
            }
        }
        self.thread_mut(tid).altstack = AltStack::NONE;
    }

    pub fn action(&self, sig: u32) -> Action {
        self.actions[(sig - 1) as usize]
    }

    /// rt_sigaction: returns the old action; EINVAL for a bad number or for changing SIGKILL or SIGSTOP.
    /// Setting a signal to be ignored discards it if pending (POSIX).
    pub fn set_action(&mut self, sig: u64, new: Option<Action>) -> Result<Action, i64> {
        if !valid(sig) {
            return Err(-EINVAL);
        }
        let sig = sig as u32;
        let old = self.action(sig);
        if let Some(mut a) = new {
            if UNBLOCKABLE & bit(sig) != 0 {
                return Err(-EINVAL);
            }
            a.mask &= !UNBLOCKABLE;
            Arc::make_mut(&mut self.actions)[(sig - 1) as usize] = a;
            if self.ignores(sig) {
                self.pending.retain(|(_, p)| p.signo != sig);
            }
        }
        Ok(old)
    }

    /// Is `sig` ignored, explicitly or by default?
    pub fn ignores(&self, sig: u32) -> bool {
        match self.action(sig).handler {
            SIG_IGN => true,
            SIG_DFL => default_action(sig) == DefaultAction::Ignore,
            _ => false,
        }
    }

    /// rt_sigprocmask for thread `tid`: apply `how` with `set`; returns the old mask. SIGKILL and SIGSTOP
    /// are silently kept out.
    pub fn change_mask(&mut self, tid: u32, how: u64, set: SigSet) -> Result<SigSet, i64> {
        let th = self.thread_mut(tid);
        let old = th.blocked;
        th.blocked = match how {
            SIG_BLOCK => old | set,
            SIG_UNBLOCK => old & !set,
            SIG_SETMASK => set,
            _ => return Err(-EINVAL),
        } & !UNBLOCKABLE;
        Ok(old)
    }

    pub fn set_mask(&mut self, tid: u32, set: SigSet) {
        self.thread_mut(tid).blocked = set & !UNBLOCKABLE;
    }

    /// What is pending for thread `tid`: its own signals and the process's.
    pub fn pending_set(&self, tid: u32) -> SigSet {
        self.pending.iter().filter(|(t, _)| t.is_none_or(|t| t == tid)).fold(0, |s, (_, p)| s | bit(p.signo))
    }

    /// Is a signal pending for thread `tid` that it does not block (so its wait should end and its return to
    /// user mode deliver it)?
    pub fn deliverable(&self, tid: u32) -> bool {
        self.pending_set(tid) & !self.blocked(tid) != 0
    }

    /// The thread that should take a signal `sig` sent to the process: the first not blocking it (None: all
    /// block it, and it waits pending).
    pub fn taker(&self, sig: u32) -> Option<u32> {
        self.threads.iter().find(|(_, th)| th.blocked & bit(sig) == 0).map(|(&t, _)| t)
    }

    /// The process's thread ids.
    pub fn thread_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.threads.keys().copied()
    }

    /// Post a signal to the process (`to` None: kill) or to one of its threads (tgkill, tkill). Standard
    /// signals (below SIGRTMIN) are pending at most once per set (a second is merged with the first);
    /// real-time ones queue, up to [`MAX_QUEUED`]. A stop signal cancels a pending SIGCONT and SIGCONT
    /// cancels pending stop signals (the caller continues a stopped process). An ignored signal nobody
    /// blocks is discarded.
    pub fn post_to(&mut self, to: Option<u32>, info: SigInfo) -> Posted {
        let sig = info.signo;
        if sig == SIGCONT {
            self.pending.retain(|(_, p)| STOP_SIGNALS & bit(p.signo) == 0);
        } else if STOP_SIGNALS & bit(sig) != 0 {
            self.pending.retain(|(_, p)| p.signo != SIGCONT);
        }
        let blocked = match to {
            Some(t) => self.blocked(t) & bit(sig) != 0,
            None => self.taker(sig).is_none() && !self.threads.is_empty(),
        };
        if self.ignores(sig) && !blocked {
            return Posted::Discarded;
        }
        if sig < SIGRTMIN {
            if self.pending.iter().all(|&(t, p)| p.signo != sig || t != to) {
                self.pending.push((to, info));
            }
            return Posted::Pending;
        }
        if self.pending.len() >= MAX_QUEUED {
            return Posted::QueueFull;
        }
        self.pending.push((to, info));
        Posted::Pending
    }

    /// Post to the process (kill); see [`post_to`](Self::post_to).
    pub fn post(&mut self, info: SigInfo) -> Posted {
        self.post_to(None, info)
    }

    /// A fault's signal must reach thread `tid`: if it is blocked or ignored, Linux unblocks it and resets it
    /// to its default action (which ends the process) before posting it.
    pub fn force(&mut self, tid: u32, info: SigInfo) {
        let sig = info.signo;
        let a = self.action(sig);
        if self.blocked(tid) & bit(sig) != 0 || a.handler == SIG_IGN {
            Arc::make_mut(&mut self.actions)[(sig - 1) as usize].handler = SIG_DFL;
            self.thread_mut(tid).blocked &= !bit(sig);
        }
        self.pending.retain(|(t, p)| p.signo != sig || *t != Some(tid));
        self.pending.push((Some(tid), info));
    }

    /// Take the next signal thread `tid` should handle: a fault's first, then the lowest number; the oldest
    /// of a real-time signal's queue.
    pub fn take_deliverable(&mut self, tid: u32) -> Option<SigInfo> {
        self.take_from(tid, !self.blocked(tid))
    }

    /// Take the next signal of `set` pending for thread `tid` (sigtimedwait, or delivery with `!blocked`).
    pub fn take_from(&mut self, tid: u32, set: SigSet) -> Option<SigInfo> {
        let ready = self.pending_set(tid) & set;
        if ready == 0 {
            return None;
        }
        let pick = if ready & SYNCHRONOUS != 0 { ready & SYNCHRONOUS } else { ready };
        let sig = pick.trailing_zeros() + 1;
        // The thread's own first, as Linux dequeues them.
        let i = self
            .pending
            .iter()
            .position(|&(t, p)| t == Some(tid) && p.signo == sig)
            .or_else(|| self.pending.iter().position(|&(t, p)| t.is_none() && p.signo == sig))?;
        Some(self.pending.remove(i).1)
    }

    /// Decide what delivering `info` to thread `tid` does and update the state for it: a handler blocks its
    /// own signal (unless SA_NODEFER) and its `sa_mask` while it runs, and SA_RESETHAND returns the
    /// disposition to the default.
    pub fn deliver(&mut self, tid: u32, info: &SigInfo) -> Delivery {
        let sig = info.signo;
        let a = self.action(sig);
        match a.handler {
            SIG_IGN => Delivery::Ignore,
            SIG_DFL => match default_action(sig) {
                DefaultAction::Terminate => Delivery::Terminate,
                DefaultAction::Core => Delivery::Core,
                DefaultAction::Ignore => Delivery::Ignore,
                DefaultAction::Stop => Delivery::Stop,
                DefaultAction::Continue => Delivery::Continue,
            },
            _ => {
                let th = self.thread_mut(tid);
                let restore_mask = th.saved_mask.take().unwrap_or(th.blocked);
                let mut block = a.mask;
                if a.flags & SA_NODEFER == 0 {
                    block |= bit(sig);
                }
                th.blocked = (th.blocked | block) & !UNBLOCKABLE;
                if a.flags & SA_RESETHAND != 0 {
                    Arc::make_mut(&mut self.actions)[(sig - 1) as usize] = Action::default();
                }
                Delivery::Handler { action: a, restore_mask }
            }
        }
    }

    /// Does the parent's SIGCHLD disposition ask for children to be reaped at once (SIG_IGN or SA_NOCLDWAIT)?
    pub fn reaps_children(&self) -> bool {
        let a = self.action(SIGCHLD);
        a.handler == SIG_IGN || a.flags & SA_NOCLDWAIT != 0
    }

    /// Does the parent want SIGCHLD when a child stops or continues (no SA_NOCLDSTOP)?
    pub fn wants_stop_notices(&self) -> bool {
        self.action(SIGCHLD).flags & SA_NOCLDSTOP == 0
    }
}

/// What becomes of a system call a signal interrupted (its return was one of the ERESTART codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Run the call again (the instruction pointer goes back over `syscall`).
    Again,
    /// Fail with EINTR.
    Eintr,
}

/// Linux's rule: with a handler about to run, ERESTARTSYS restarts only under SA_RESTART, ERESTARTNOHAND is
/// EINTR, ERESTARTNOINTR always restarts; with no handler run (the signal was ignored, stopped and
/// continued the process), every ERESTART code restarts. `None`: the return was not a restart code.
pub fn restart_rule(ret: i64, handler_flags: Option<u64>) -> Option<Restart> {
    let code = -ret;
    if !(ERESTARTSYS..=ERESTARTNOHAND).contains(&code) {
        return None;
    }
    Some(match handler_flags {
        None => Restart::Again,
        Some(_) if code == ERESTARTNOINTR => Restart::Again,
        Some(flags) if code == ERESTARTSYS && flags & SA_RESTART != 0 => Restart::Again,
        Some(_) => Restart::Eintr,
    })
}

// ---------------------------------------------------------------------------------------------------------
// The signal frame.

/// `struct ucontext` at frame+8: uc_flags, uc_link, uc_stack (24 bytes), uc_mcontext (`struct sigcontext`,
/// 256 bytes), uc_sigmask.
const UC: usize = 8;
const UC_STACK: usize = UC + 16;
const MCONTEXT: usize = UC + 40;
const UC_SIGMASK: usize = MCONTEXT + 256;
/// `siginfo_t` follows the ucontext.
const SIGINFO: usize = UC_SIGMASK + 8;
/// sizeof(struct rt_sigframe).
pub const FRAME_SIZE: usize = SIGINFO + 128;
/// The FXSAVE image, 64-byte aligned above the frame, as Linux lays out its `fpstate`.
const FPSTATE_SIZE: u64 = 512;
/// The red zone below a user stack pointer that a handler's frame must not overwrite.
const RED_ZONE: u64 = 128;
/// uc_flags: the frame holds SS (UC_SIGCONTEXT_SS) and rt_sigreturn restores it as saved (UC_STRICT_RESTORE_SS).
const UC_FLAGS: u64 = 0x2 | 0x4;

/// The flags rt_sigreturn takes from the saved context (Linux's FIX_EFLAGS: AC OF DF TF SF ZF AF PF CF RF);
/// IF, IOPL and the rest stay the kernel's.
const FIX_EFLAGS: u64 = 0x4_0000 | 0x800 | 0x400 | 0x100 | 0x80 | 0x40 | 0x10 | 0x4 | 0x1 | 0x1_0000;
const RFLAGS_CLEAR_FOR_HANDLER: u64 = 0x400 | 0x100 | 0x1_0000; // DF, TF, RF

/// `struct sigcontext` general registers in order: r8–r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags.
fn mcontext_words(f: &UserContext) -> [u64; 18] {
    let g = &f.gprs;
    [g.r8, g.r9, g.r10, g.r11, g.r12, g.r13, g.r14, g.r15, g.rdi, g.rsi, g.rbp, g.rbx, g.rdx, g.rax, g.rcx, f.rsp, f.rip, f.rflags]
}

/// A frame to write at `addr` and the registers that enter the handler.
#[derive(Clone)]
pub struct Frame {
    /// Where the frame goes (the handler's stack pointer: 8 mod 16, as after a call).
    pub addr: u64,
    pub bytes: Vec<u8>,
    /// Where the FXSAVE image goes, and the image.
    pub fpstate_addr: u64,
}

/// Why a frame cannot be built: the stack it would go on is not usable (Linux then forces SIGSEGV).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadStack;

/// Build the frame for a handler of `info` interrupting `frame`, and turn `frame` into the handler's entry.
/// `fault` carries (trap number, error code, CR2) when a fault raised the signal.
pub fn setup_frame(frame: &mut UserContext, info: &SigInfo, action: &Action, restore_mask: SigSet, alt: &mut AltStack, fault: Option<(u64, u64, u64)>) -> Result<Frame, BadStack> {
    let user_sp = frame.rsp;
    let on_alt = alt.contains(user_sp);
    let uc_stack = alt.to_bytes(user_sp);
    let mut sp = if action.flags & SA_ONSTACK != 0 && alt.enabled() && !on_alt {
        let top = alt.sp.wrapping_add(alt.size);
        if alt.flags & SS_AUTODISARM != 0 {
            *alt = AltStack::NONE;
        }
        top
    } else {
        user_sp.wrapping_sub(RED_ZONE)
    };
    if action.flags & SA_RESTORER == 0 || action.restorer == 0 {
        // x86-64 has no kernel-provided return path: Linux refuses to build the frame.
        return Err(BadStack);
    }
    sp = sp.checked_sub(FPSTATE_SIZE).ok_or(BadStack)? & !63;
    let fpstate_addr = sp;
    let addr = (sp.checked_sub(FRAME_SIZE as u64).ok_or(BadStack)? & !15).wrapping_sub(8);
    if on_alt && !alt.contains(addr) {
        // Overflowing the alternate stack.
        return Err(BadStack);
    }
    let mut b = alloc::vec![0u8; (fpstate_addr - addr) as usize + FPSTATE_SIZE as usize];
    let put = |b: &mut Vec<u8>, at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    put(&mut b, 0, &action.restorer.to_le_bytes());
    put(&mut b, UC, &UC_FLAGS.to_le_bytes());
    put(&mut b, UC_STACK, &uc_stack);
    for (i, w) in mcontext_words(frame).iter().enumerate() {
        put(&mut b, MCONTEXT + i * 8, &w.to_le_bytes());
    }
    // cs, gs, fs, ss as 16-bit fields.
    put(&mut b, MCONTEXT + 144, &(frame.cs as u16).to_le_bytes());
    put(&mut b, MCONTEXT + 150, &(frame.ss as u16).to_le_bytes());
    let (trapno, err, cr2) = fault.unwrap_or((0, 0, 0));
    put(&mut b, MCONTEXT + 152, &err.to_le_bytes());
    put(&mut b, MCONTEXT + 160, &trapno.to_le_bytes());
    put(&mut b, MCONTEXT + 168, &restore_mask.to_le_bytes()); // oldmask
    put(&mut b, MCONTEXT + 176, &cr2.to_le_bytes());
    put(&mut b, MCONTEXT + 184, &fpstate_addr.to_le_bytes());
    put(&mut b, UC_SIGMASK, &restore_mask.to_le_bytes());
    put(&mut b, SIGINFO, &info.to_bytes());
    let fp_at = (fpstate_addr - addr) as usize;
    put(&mut b, fp_at, &frame.fx);

    // The handler: handler(sig, &info, &uc) on the new stack, a fresh FPU state, DF/TF/RF clear.
    frame.gprs.rdi = u64::from(info.signo);
    frame.gprs.rsi = addr + SIGINFO as u64;
    frame.gprs.rdx = addr + UC as u64;
    frame.gprs.rax = 0;
    frame.rsp = addr;
    frame.rip = action.handler;
    frame.rflags &= !RFLAGS_CLEAR_FOR_HANDLER;
    frame.fx = FxArea::initial().0;
    Ok(Frame { addr, bytes: b, fpstate_addr })
}

/// The bytes rt_sigreturn reads: the ucontext, from the handler's `rsp` (its `ret` popped the return address).
pub const UCONTEXT_SIZE: usize = SIGINFO - UC;

/// What rt_sigreturn restores besides the registers it writes into the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restored {
    pub mask: SigSet,
    /// Where the FXSAVE image is (0: none, the FPU starts fresh).
    pub fpstate: u64,
    /// uc_stack: the alternate stack to put back (sp, flags, size).
    pub altstack: (u64, i32, u64),
}

/// Is `v` a lower-half (user) canonical address? IRETQ to a non-canonical RIP or RSP faults in the kernel.
fn user_canonical(v: u64) -> bool {
    v < 0x0000_8000_0000_0000
}

/// rt_sigreturn: load `uc` (the [`UCONTEXT_SIZE`] bytes at the handler's stack pointer) into `frame`. The
/// segment selectors and the privileged flags stay the kernel's. Err when the saved RIP or RSP could not be
/// returned to (Linux's IRET would fault: the process gets SIGSEGV).
pub fn restore_frame(frame: &mut UserContext, uc: &[u8]) -> Result<Restored, BadStack> {
    let w = |at: usize| u64::from_le_bytes(uc[at..at + 8].try_into().unwrap());
    let m = MCONTEXT - UC;
    let r: [u64; 18] = core::array::from_fn(|i| w(m + i * 8));
    let (rsp, rip) = (r[15], r[16]);
    if !user_canonical(rip) || !user_canonical(rsp) {
        return Err(BadStack);
    }
    let g = &mut frame.gprs;
    [g.r8, g.r9, g.r10, g.r11, g.r12, g.r13, g.r14, g.r15, g.rdi, g.rsi, g.rbp, g.rbx, g.rdx, g.rax, g.rcx] =
        core::array::from_fn(|i| r[i]);
    frame.rsp = rsp;
    frame.rip = rip;
    frame.rflags = (frame.rflags & !FIX_EFLAGS) | (r[17] & FIX_EFLAGS);
    let stack: [u8; 24] = uc[UC_STACK - UC..UC_STACK - UC + 24].try_into().unwrap();
    Ok(Restored { mask: w(UC_SIGMASK - UC) & !UNBLOCKABLE, fpstate: w(m + 184), altstack: AltStack::from_bytes(&stack) })
}

/// An FXSAVE image from user memory made safe to load: MXCSR's reserved bits (those `mxcsr_mask` does not
/// allow; FXRSTOR faults on them) cleared.
pub fn sanitize_fx(fx: &mut [u8; 512], mxcsr_mask: u32) {
    let mask = if mxcsr_mask == 0 { 0xFFBF } else { mxcsr_mask };
    let mxcsr = u32::from_le_bytes(fx[24..28].try_into().unwrap()) & mask;
    fx[24..28].copy_from_slice(&mxcsr.to_le_bytes());
    // The MXCSR_MASK field itself is ignored by FXRSTOR; reserved bytes are left as they came.
}

/// The wait status (wait4) of a process ended by `sig`.
pub fn killed_status(sig: u32) -> i32 {
    sig as i32 & 0x7F
}

/// The wait status of a process stopped by `sig` (WIFSTOPPED), and of one continued (WIFCONTINUED).
pub fn stopped_status(sig: u32) -> i32 {
    0x7F | ((sig as i32) << 8)
}
pub const CONTINUED_STATUS: i32 = 0xFFFF;

#[cfg(test)]
mod tests {
    /// The thread the single-threaded tests run as.
    const T: u32 = 7;

    use super::*;

    fn handler(addr: u64, flags: u64) -> Action {
        Action { handler: addr, flags: flags | SA_RESTORER, restorer: 0x40_1000, mask: 0 }
    }

    #[test]
    fn actions_round_trip_and_refuse_kill_and_stop() {
        let mut s = SignalState::new(T);
        let a = Action { handler: 0x40_2000, flags: SA_SIGINFO | SA_RESTORER, restorer: 0x40_1000, mask: bit(SIGUSR2) | bit(SIGKILL) };
        assert_eq!(Action::from_bytes(&a.to_bytes()), a);
        assert_eq!(s.set_action(u64::from(SIGUSR1), Some(a)), Ok(Action::default()));
        assert_eq!(s.action(SIGUSR1).mask, bit(SIGUSR2), "SIGKILL cannot be in sa_mask");
        assert_eq!(s.set_action(u64::from(SIGKILL), Some(a)), Err(-EINVAL));
        assert_eq!(s.set_action(u64::from(SIGSTOP), Some(a)), Err(-EINVAL));
        assert_eq!(s.set_action(u64::from(SIGKILL), None), Ok(Action::default()), "querying SIGKILL is fine");
        assert_eq!(s.set_action(0, None), Err(-EINVAL));
        assert_eq!(s.set_action(65, None), Err(-EINVAL));
    }

    #[test]
    fn masks_keep_kill_and_stop_out_and_refuse_bad_how() {
        let mut s = SignalState::new(T);
        assert_eq!(s.change_mask(T, SIG_BLOCK, bit(SIGUSR1) | bit(SIGKILL) | bit(SIGSTOP)), Ok(0));
        assert_eq!(s.blocked(T), bit(SIGUSR1));
        assert_eq!(s.change_mask(T, SIG_UNBLOCK, bit(SIGUSR1)), Ok(bit(SIGUSR1)));
        assert_eq!(s.change_mask(T, SIG_SETMASK, !0), Ok(0));
        assert_eq!(s.blocked(T), !UNBLOCKABLE);
        assert_eq!(s.change_mask(T, 3, 0), Err(-EINVAL));
    }

    #[test]
    fn standard_signals_merge_realtime_ones_queue() {
        let mut s = SignalState::new(T);
        s.set_mask(T, bit(SIGUSR1) | bit(SIGRTMIN + 2));
        assert_eq!(s.post(SigInfo::user(SIGUSR1, SI_USER, 7)), Posted::Pending);
        assert_eq!(s.post(SigInfo::user(SIGUSR1, SI_USER, 8)), Posted::Pending);
        for _ in 0..3 {
            s.post(SigInfo::user(SIGRTMIN + 2, SI_USER, 9));
        }
        assert!(!s.deliverable(T));
        assert_eq!(s.pending_set(T), bit(SIGUSR1) | bit(SIGRTMIN + 2));
        s.set_mask(T, 0);
        let first = s.take_deliverable(T).unwrap();
        assert_eq!((first.signo, first.detail), (SIGUSR1, Detail::Sender { pid: 7, uid: 0 }), "the first sender's info is kept");
        assert!((0..3).all(|_| s.take_deliverable(T).map(|i| i.signo) == Some(SIGRTMIN + 2)));
        assert_eq!(s.take_deliverable(T), None);
        for _ in 0..MAX_QUEUED {
            s.post(SigInfo::user(SIGRTMIN, SI_USER, 1));
        }
        assert_eq!(s.post(SigInfo::user(SIGRTMIN, SI_USER, 1)), Posted::QueueFull);
    }

    #[test]
    fn faults_go_first_then_lowest_numbers() {
        let mut s = SignalState::new(T);
        s.set_action(u64::from(SIGUSR1), Some(handler(0x1000, 0))).unwrap();
        s.set_action(u64::from(SIGHUP), Some(handler(0x1000, 0))).unwrap();
        s.post(SigInfo::user(SIGUSR1, SI_USER, 1));
        s.post(SigInfo::user(SIGHUP, SI_USER, 1));
        s.post(SigInfo::fault(SIGSEGV, SEGV_MAPERR, 0x10));
        let order: Vec<u32> = core::iter::from_fn(|| s.take_deliverable(T).map(|i| i.signo)).collect();
        assert_eq!(order, [SIGSEGV, SIGHUP, SIGUSR1]);
    }

    #[test]
    fn ignored_signals_are_dropped_unless_blocked() {
        let mut s = SignalState::new(T);
        assert_eq!(s.post(SigInfo::user(SIGCHLD, SI_USER, 1)), Posted::Discarded, "SIGCHLD is ignored by default");
        s.set_action(u64::from(SIGTERM), Some(Action { handler: SIG_IGN, ..Action::default() })).unwrap();
        assert_eq!(s.post(SigInfo::user(SIGTERM, SI_USER, 1)), Posted::Discarded);
        s.set_mask(T, bit(SIGTERM));
        assert_eq!(s.post(SigInfo::user(SIGTERM, SI_USER, 1)), Posted::Pending, "a blocked signal stays pending");
        s.set_action(u64::from(SIGTERM), Some(Action { handler: SIG_IGN, ..Action::default() })).unwrap();
        assert_eq!(s.pending_set(T), 0, "setting SIG_IGN discards it");
    }

    #[test]
    fn the_thread_and_the_process_each_hold_a_standard_signal_once() {
        let mut s = SignalState::new(T);
        s.set_mask(T, bit(SIGUSR1));
        s.post(SigInfo::user(SIGUSR1, SI_USER, 1));
        s.post(SigInfo::user(SIGUSR1, SI_USER, 1));
        s.post_to(Some(T), SigInfo::user(SIGUSR1, SI_TKILL, 2));
        s.post_to(Some(T), SigInfo::user(SIGUSR1, SI_TKILL, 2));
        s.set_mask(T, 0);
        let codes: Vec<i32> = core::iter::from_fn(|| s.take_deliverable(T).map(|i| i.code)).collect();
        assert_eq!(codes, [SI_TKILL, SI_USER], "two deliveries, the thread's first");
    }

    #[test]
    fn stop_and_continue_cancel_each_other() {
        let mut s = SignalState::new(T);
        s.set_mask(T, bit(SIGTSTP) | bit(SIGCONT));
        s.post(SigInfo::user(SIGTSTP, SI_USER, 1));
        s.post(SigInfo::user(SIGCONT, SI_USER, 1));
        assert_eq!(s.pending_set(T), bit(SIGCONT));
        s.post(SigInfo::user(SIGTSTP, SI_USER, 1));
        assert_eq!(s.pending_set(T), bit(SIGTSTP));
    }

    #[test]
    fn a_forced_fault_signal_is_unblocked_and_defaulted() {
        let mut s = SignalState::new(T);
        s.set_action(u64::from(SIGSEGV), Some(Action { handler: SIG_IGN, ..Action::default() })).unwrap();
        s.set_mask(T, bit(SIGSEGV));
        s.force(T, SigInfo::fault(SIGSEGV, SEGV_MAPERR, 0));
        let i = s.take_deliverable(T).unwrap();
        assert_eq!(s.deliver(T, &i), Delivery::Core);
        // A caught fault signal keeps its handler.
        let mut s = SignalState::new(T);
        s.set_action(u64::from(SIGSEGV), Some(handler(0x2000, 0))).unwrap();
        s.force(T, SigInfo::fault(SIGSEGV, SEGV_ACCERR, 0));
        let i = s.take_deliverable(T).unwrap();
        assert!(matches!(s.deliver(T, &i), Delivery::Handler { .. }));
    }

    #[test]
    fn delivery_blocks_the_signal_and_sa_mask_and_resethand_resets() {
        let mut s = SignalState::new(T);
        s.set_mask(T, bit(SIGHUP));
        let mut a = handler(0x3000, SA_RESETHAND);
        a.mask = bit(SIGUSR2);
        s.set_action(u64::from(SIGUSR1), Some(a)).unwrap();
        let d = s.deliver(T, &SigInfo::user(SIGUSR1, SI_USER, 1));
        assert_eq!(d, Delivery::Handler { action: a, restore_mask: bit(SIGHUP) });
        assert_eq!(s.blocked(T), bit(SIGHUP) | bit(SIGUSR1) | bit(SIGUSR2));
        assert_eq!(s.action(SIGUSR1), Action::default(), "SA_RESETHAND");
        s.set_mask(T, 0);
        s.set_action(u64::from(SIGUSR1), Some(handler(0x3000, SA_NODEFER))).unwrap();
        s.deliver(T, &SigInfo::user(SIGUSR1, SI_USER, 1));
        assert_eq!(s.blocked(T), 0, "SA_NODEFER leaves the signal unblocked");
        // sigsuspend's saved mask goes into the frame, once.
        s.thread_mut(T).saved_mask = Some(bit(SIGINT));
        let d = s.deliver(T, &SigInfo::user(SIGUSR1, SI_USER, 1));
        assert!(matches!(d, Delivery::Handler { restore_mask, .. } if restore_mask == bit(SIGINT)));
        assert_eq!(s.thread(T).saved_mask, None);
    }

    #[test]
    fn default_actions_follow_signal_7() {
        let mut s = SignalState::new(T);
        let d = |s: &mut SignalState, sig| s.deliver(T, &SigInfo::user(sig, SI_USER, 1));
        assert_eq!(d(&mut s, SIGTERM), Delivery::Terminate);
        assert_eq!(d(&mut s, SIGRTMIN + 5), Delivery::Terminate);
        assert_eq!(d(&mut s, SIGSEGV), Delivery::Core);
        assert_eq!(d(&mut s, SIGABRT), Delivery::Core);
        assert_eq!(d(&mut s, SIGWINCH), Delivery::Ignore);
        assert_eq!(d(&mut s, SIGTSTP), Delivery::Stop);
        assert_eq!(d(&mut s, SIGCONT), Delivery::Continue);
    }

    #[test]
    fn fork_keeps_dispositions_exec_resets_handlers_only() {
        let mut s = SignalState::new(T);
        s.set_action(u64::from(SIGUSR1), Some(handler(0x3000, 0))).unwrap();
        s.set_action(u64::from(SIGTERM), Some(Action { handler: SIG_IGN, ..Action::default() })).unwrap();
        s.set_mask(T, bit(SIGUSR2));
        s.post(SigInfo::user(SIGUSR2, SI_USER, 1));
        s.thread_mut(T).altstack = AltStack { sp: 0x1000, size: 8192, flags: 0 };
        let c = s.forked(T, T + 1);
        assert_eq!((c.action(SIGUSR1), c.blocked(T + 1), c.pending_set(T + 1), c.thread(T + 1).altstack), (s.action(SIGUSR1), bit(SIGUSR2), 0, s.thread(T).altstack));
        s.exec(T);
        assert_eq!(s.action(SIGUSR1), Action::default());
        assert_eq!(s.action(SIGTERM).handler, SIG_IGN);
        assert_eq!((s.blocked(T), s.pending_set(T), s.thread(T).altstack), (bit(SIGUSR2), bit(SIGUSR2), AltStack::NONE));
    }

    #[test]
    fn restart_rule_is_linuxs() {
        assert_eq!(restart_rule(-ERESTARTSYS, Some(SA_RESTART)), Some(Restart::Again));
        assert_eq!(restart_rule(-ERESTARTSYS, Some(0)), Some(Restart::Eintr));
        assert_eq!(restart_rule(-ERESTARTNOHAND, Some(SA_RESTART)), Some(Restart::Eintr));
        assert_eq!(restart_rule(-ERESTARTNOINTR, Some(0)), Some(Restart::Again));
        assert_eq!(restart_rule(-ERESTARTNOHAND, None), Some(Restart::Again));
        assert_eq!(restart_rule(-4, None), None);
        assert_eq!(restart_rule(5, Some(0)), None);
    }

    #[test]
    fn altstack_checks() {
        let none = AltStack::NONE;
        assert_eq!(set_altstack(&none, 0x7000, 0x1000, 0, 1024), Err(-ENOMEM));
        assert_eq!(set_altstack(&none, 0x7000, 0x1000, 5, 8192), Err(-EINVAL));
        let alt = set_altstack(&none, 0x7000, 0x1000, 0, 8192).unwrap();
        assert!(alt.contains(0x2000) && !alt.contains(0x1000) && alt.contains(0x3000) && !alt.contains(0x3001));
        assert_eq!(set_altstack(&alt, 0x2000, 0x1000, 0, 8192), Err(-EPERM), "not while on it");
        assert_eq!(set_altstack(&alt, 0x7000, 0, SS_DISABLE, 0), Ok(AltStack::NONE));
        let b = alt.to_bytes(0x2000);
        assert_eq!(AltStack::from_bytes(&b), (0x1000, SS_ONSTACK, 8192));
        assert_eq!(AltStack::from_bytes(&AltStack::NONE.to_bytes(0)).1, SS_DISABLE);
    }

    fn user_frame() -> UserContext {
        let mut f = UserContext { gprs: Gprs::default(), rip: 0x40_1234, rsp: 0x7fff_0000_1000, rflags: 0x202, cs: 0x23, ss: 0x1b, fx: FxArea::initial().0 };
        f.gprs.rax = 11;
        f.gprs.rbx = 22;
        f.gprs.r15 = 33;
        f.rflags = 0x202 | 0x400 | 0x1; // DF and CF set by the program
        f.fx[24..28].copy_from_slice(&0x3F80u32.to_le_bytes()); // round toward zero
        f
    }

    #[test]
    fn a_frame_holds_the_context_and_sigreturn_restores_it() {
        let mut f = user_frame();
        let before = f;
        let info = SigInfo::user(SIGUSR1, SI_USER, 42);
        let a = handler(0x40_5000, SA_SIGINFO);
        let mut alt = AltStack::NONE;
        let fr = setup_frame(&mut f, &info, &a, bit(SIGHUP), &mut alt, None).unwrap();
        // The handler's entry: ABI stack alignment, below the red zone, arguments, fresh FPU, DF clear.
        assert_eq!(fr.addr % 16, 8);
        assert!(fr.addr + FRAME_SIZE as u64 <= before.rsp - RED_ZONE);
        assert_eq!(fr.fpstate_addr % 64, 0);
        assert!(fr.fpstate_addr >= fr.addr + FRAME_SIZE as u64);
        assert_eq!((f.rip, f.rsp, f.gprs.rdi, f.gprs.rsi, f.gprs.rdx), (0x40_5000, fr.addr, 10, fr.addr + SIGINFO as u64, fr.addr + 8));
        assert_eq!(f.rflags & 0x400, 0);
        assert_eq!(f.fx[24..28], FxArea::initial().0[24..28]);
        // The bytes: return address, siginfo, the glibc REG_* slots, the mask.
        let b = &fr.bytes;
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        assert_eq!(word(0), a.restorer);
        assert_eq!(b[SIGINFO..SIGINFO + 128], info.to_bytes());
        assert_eq!(word(MCONTEXT + 16 * 8), 0x40_1234, "REG_RIP is gregs[16]");
        assert_eq!(word(MCONTEXT + 13 * 8), 11, "REG_RAX is gregs[13]");
        assert_eq!(word(MCONTEXT + 184), fr.fpstate_addr);
        assert_eq!(word(UC_SIGMASK), bit(SIGHUP));
        let fp = (fr.fpstate_addr - fr.addr) as usize;
        assert_eq!(b[fp + 24..fp + 28], 0x3F80u32.to_le_bytes());
        // The handler returns: rsp is past the return address.
        f.rsp = fr.addr + 8;
        f.gprs.rax = 999;
        let r = restore_frame(&mut f, &b[UC..UC + UCONTEXT_SIZE]).unwrap();
        assert_eq!((f.rip, f.rsp, f.gprs.rax, f.gprs.rbx, f.gprs.r15, f.rflags), (before.rip, before.rsp, 11, 22, 33, before.rflags));
        assert_eq!(r, Restored { mask: bit(SIGHUP), fpstate: fr.fpstate_addr, altstack: (0, SS_DISABLE, 0) });
    }

    #[test]
    fn sigreturn_keeps_privileged_flags_and_refuses_kernel_addresses() {
        let mut f = user_frame();
        let mut alt = AltStack::NONE;
        let fr = setup_frame(&mut f, &SigInfo::kernel(SIGALRM), &handler(0x40_5000, 0), 0, &mut alt, None).unwrap();
        let mut uc = fr.bytes[UC..UC + UCONTEXT_SIZE].to_vec();
        let eflags_at = MCONTEXT - UC + 17 * 8;
        uc[eflags_at..eflags_at + 8].copy_from_slice(&(0x3000u64 | 0x200 | 0x40).to_le_bytes()); // IOPL 3, IF, ZF
        f.rflags = 0x202;
        restore_frame(&mut f, &uc).unwrap();
        assert_eq!(f.rflags, 0x202 | 0x40, "IOPL from user memory ignored, ZF taken");
        let rip_at = MCONTEXT - UC + 16 * 8;
        uc[rip_at..rip_at + 8].copy_from_slice(&0xffff_8000_0000_1000u64.to_le_bytes());
        assert_eq!(restore_frame(&mut f, &uc), Err(BadStack));
        uc[rip_at..rip_at + 8].copy_from_slice(&0x0000_9000_0000_0000u64.to_le_bytes());
        assert_eq!(restore_frame(&mut f, &uc), Err(BadStack), "non-canonical");
    }

    #[test]
    fn onstack_handlers_use_the_alternate_stack_and_no_restorer_is_refused() {
        let mut f = user_frame();
        let mut alt = AltStack { sp: 0x50_0000, size: 0x4000, flags: SS_AUTODISARM };
        let fr = setup_frame(&mut f, &SigInfo::kernel(SIGSEGV), &handler(0x40_5000, SA_ONSTACK), 0, &mut alt, Some((14, 6, 0x10))).unwrap();
        assert!(fr.addr > 0x50_0000 && fr.addr < 0x50_4000);
        assert_eq!(alt, AltStack::NONE, "SS_AUTODISARM disarms it while the handler runs");
        let uc_stack: [u8; 24] = fr.bytes[UC_STACK..UC_STACK + 24].try_into().unwrap();
        assert_eq!(AltStack::from_bytes(&uc_stack), (0x50_0000, SS_AUTODISARM, 0x4000), "uc_stack keeps it for sigreturn");
        let word = |at: usize| u64::from_le_bytes(fr.bytes[at..at + 8].try_into().unwrap());
        assert_eq!((word(MCONTEXT + 160), word(MCONTEXT + 152), word(MCONTEXT + 176)), (14, 6, 0x10), "trapno, err, cr2");
        // Already on a tiny alternate stack: overflow is refused.
        let mut f = user_frame();
        f.rsp = 0x60_0100;
        let mut alt = AltStack { sp: 0x60_0000, size: 0x800, flags: 0 };
        assert!(setup_frame(&mut f, &SigInfo::kernel(SIGSEGV), &handler(0x40_5000, SA_ONSTACK), 0, &mut alt, None).is_err());
        let mut f = user_frame();
        let no_restorer = Action { handler: 0x40_5000, flags: 0, restorer: 0, mask: 0 };
        assert!(setup_frame(&mut f, &SigInfo::kernel(SIGUSR1), &no_restorer, 0, &mut AltStack { ..AltStack::NONE }, None).is_err());
    }

    #[test]
    fn siginfo_layouts() {
        let b = SigInfo { signo: SIGCHLD, code: CLD_EXITED, detail: Detail::Child { pid: 5, uid: 0, status: 42 } }.to_bytes();
        assert_eq!((b[0], b[8], b[16], b[24]), (17, 1, 5, 42));
        let b = SigInfo::fault(SIGSEGV, SEGV_ACCERR, 0xdead_beef).to_bytes();
        assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 0xdead_beef);
        let b = SigInfo::user(SIGUSR1, SI_TKILL, 9).to_bytes();
        assert_eq!(i32::from_le_bytes(b[8..12].try_into().unwrap()), -6);
        assert_eq!((stopped_status(SIGSTOP), killed_status(SIGTERM)), (0x137F, 15));
    }

    #[test]
    fn mxcsr_reserved_bits_are_cleared() {
        let mut fx = FxArea::initial().0;
        fx[24..28].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        sanitize_fx(&mut fx, 0xFFFF);
        assert_eq!(u32::from_le_bytes(fx[24..28].try_into().unwrap()), 0xFFFF);
        sanitize_fx(&mut fx, 0);
        assert_eq!(u32::from_le_bytes(fx[24..28].try_into().unwrap()), 0xFFBF);
    }
}
