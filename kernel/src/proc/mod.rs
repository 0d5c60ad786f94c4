//! Processes: one user thread each, a copy-on-write address space, parent/child links, zombies until reaped.
//! Orphans are re-parented to init (pid 1). The process table (pids, parent links, states, waiters) is under one
//! interrupt-safe lock held only briefly; each address space has its own lock, so fork's copy, exit's teardown
//! and system calls' user copies of different processes run in parallel. User memory is reached only through
//! checked copies (mm::uspace), never by dereferencing user pointers.
//!
//! Lock order: the table lock may be held while taking a space lock, never the other way round.

use crate::elf;
use crate::mm::kmem::KernelMem;
use crate::mm::uspace::{PhysMem, UserSpace, STACK_TOP};
use crate::sched;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use questv_arch::paging::{PageFlags, TableMemory, PAGE_SIZE};
use questv_arch::trap::TrapFrame;
use questv_arch::{cpu, percpu};

pub use questv_libc_shim::errno;
use errno::*;

const MAX_ARGS: usize = 64;
const MAX_ARG_BYTES: usize = 8192;
pub const WNOHANG: u64 = 1;

mod signals;
pub mod procfs;
mod table;
mod threads;
pub use signals::{
    getitimer, getpgid, getsid, kill, pause, read_timespec_ns, rt_sigaction, rt_sigpending, rt_sigprocmask,
    raise_sigpipe, rt_sigreturn, rt_sigsuspend, rt_sigtimedwait, setitimer, setpgid, setsid, sigaltstack, signal_pending, tgkill,
    tick_timers, alarm,
};
pub use table::{current_fs, exists, process_count, with_space, INIT_PID, MAX_PROCS};
pub use threads::{futex, set_tid_address, spawn_thread};
use table::{alloc_pid, release_tid, space_lock, Process, SpaceLock, State, TABLE};

/// The kernel's PML4 entry for the upper half (all of physical memory and the image), shared into every user
/// address space.
fn kernel_slot() -> u64 {
    KernelMem.table(sched::kernel_cr3())[questv_arch::paging::KERNEL_SLOT]
}

/// AT_RANDOM's 16 bytes: the TSC stirred (xorshift), different at every exec; C libraries seed their stack
/// protector and pointer guard from them.
pub use crate::entropy::random_bytes;

/// Build an address space for ELF `bytes` with `argv` and `envp` on the System V start stack
/// (`startstack`). Returns (space, entry, rsp, argv address).
fn load_program(bytes: &[u8], argv: &[String], envp: &[String]) -> Result<(UserSpace, u64, u64, u64), i64> {
    let plan = elf::plan(bytes).map_err(|e| {
        log::warn!("exec refused: {} {}", argv.first().map(String::as_str).unwrap_or("(no name)"), e);
        -ENOEXEC
    })?;
    let mut mem = KernelMem;
    let mut space = UserSpace::new(&mut mem, kernel_slot())?;
    let result = (|| -> Result<(u64, u64), i64> {
        // One physical page per virtual page, filled from every segment that touches it (data and bss often
        // share a page); its permissions are the union of those segments'.
        let mut pages: BTreeMap<u64, (u64, bool, bool)> = BTreeMap::new();
        let fill = (|| -> Result<(), i64> {
            for seg in &plan.segments {
                let mut page = seg.vaddr & !(PAGE_SIZE - 1);
                while page < seg.vaddr + seg.mem_size {
                    let slot = match pages.get_mut(&page) {
                        Some(slot) => slot,
                        None => {
                            let pa = mem.alloc_page().ok_or(-ENOMEM)?;
                            pages.entry(page).or_insert((pa, false, false))
                        }
                    };
                    slot.1 |= seg.writable;
                    slot.2 |= seg.executable;
                    let pa = slot.0;
                    // File-backed bytes of this page: [max(page, vaddr), min(page + 4K, vaddr + filesz)).
                    let lo = page.max(seg.vaddr);
                    let hi = (page + PAGE_SIZE).min(seg.vaddr + seg.file_size);
                    if hi > lo {
                        let off = (seg.file_offset + (lo - seg.vaddr)) as usize;
                        let dst = (lo - page) as usize;
                        let n = (hi - lo) as usize;
                        mem.page(pa)[dst..dst + n].copy_from_slice(&bytes[off..off + n]);
                    }
                    page += PAGE_SIZE;
                }
            }
            Ok(())
        })();
        let mut pages = pages.into_iter();
        let mapped = fill.and_then(|()| {
            for (va, (pa, w, x)) in pages.by_ref() {
                let mut flags = PageFlags::empty();
                if w {
                    flags |= PageFlags::WRITABLE;
                }
                if !x {
                    flags |= PageFlags::NO_EXECUTE;
                }
                if let Err(e) = space.map_page(&mut mem, va, pa, flags) {
                    mem.release(pa);
                    return Err(e.into());
                }
                // The image is an area too, so mprotect works on it and no mmap hint lands on it.
                let prot = crate::mm::vma::PROT_READ | if w { crate::mm::vma::PROT_WRITE } else { 0 } | if x { crate::mm::vma::PROT_EXEC } else { 0 };
                let _ = space.vmas.map(va, PAGE_SIZE, prot, crate::mm::vma::Kind::Image);
            }
            Ok(())
        });
        if let Err(e) = mapped {
            // Pages not yet handed to the address space are ours to free.
            for (_, (pa, _, _)) in pages {
                mem.release(pa);
            }
            return Err(e);
        }
        space.brk_start = plan.image_end;
        space.brk = plan.image_end;
        let info = crate::startstack::StartInfo {
            argv,
            envp,
            execfn: argv.first().map_or("", String::as_str),
            phdr: plan.phdr,
            phent: u64::from(plan.phent),
            phnum: u64::from(plan.phnum),
            entry: plan.entry,
            base: 0,
            hwcap: u64::from(questv_arch::cpu::cpuid(1, 0).edx),
            clktck: 100,
            random: random_bytes(),
        };
        let (sp, stack) = crate::startstack::build(STACK_TOP, &info).map_err(|_| -E2BIG)?;
        space.copy_to_user(&mut mem, sp, &stack)?;
        Ok((sp, sp + 8))
    })();
    match result {
        Ok((sp, argv_addr)) => Ok((space, plan.entry, sp, argv_addr)),
        Err(e) => {
            space.teardown(&mut mem);
            Err(e)
        }
    }
}

fn user_frame(entry: u64, sp: u64, argc: usize, argv_addr: u64) -> TrapFrame {
    let mut f = TrapFrame::new_user(entry, sp);
    f.gprs.rdi = argc as u64;
    f.gprs.rsi = argv_addr;
    f
}

/// Start init (pid 1) from the ramdisk with `argv` on the BSP.
pub fn start_init(argv: Vec<String>) -> Result<(), &'static str> {
    // The file tree, now that the wall clock is known (its times start there).
    crate::fs::files::init(crate::ramdisk::files());
    // A blocking read or write on a pipe or the console ends for a signal (ERESTARTSYS, settled on return).
    crate::fs::files::set_interrupt_check(|| sched::attention_pending() && signal_pending());
    crate::fs::terminal::set_group_signaller(signals::signal_group);
    crate::fs::files::set_generated(&procfs::PROCFS);
    crate::fs::files::set_fd_opener(procfs::open_file_of);
    // The console is the controlling terminal of init's session, init's group in the foreground.
    crate::fs::terminal::set_foreground(INIT_PID);
    let bytes = crate::ramdisk::find("init").ok_or("no `init` program in the ramdisk")?;
    let (space, entry, sp, argv_addr) = load_program(bytes, &argv, &[]).map_err(|_| "cannot load init")?;
    let mut t = TABLE.lock();
    let pid = alloc_pid(&mut t, None).ok_or("process table full")?;
    let thread = sched::new_user_thread("init", Box::new(user_frame(entry, sp, argv.len(), argv_addr)), pid, space.root())
        .ok_or("out of memory for init's kernel stack")?;
    let mut p = Process::new(pid, 0, Arc::from("init"), space_lock(space), thread.id, pid, pid, crate::signal::SignalState::new(pid), crate::fs::files::FsState::for_init());
    p.cmdline = cmdline_bytes(&argv);
    p.exe = Arc::from("/bin/init");
    t.procs.insert(pid, p);
    drop(t);
    sched::enqueue(percpu::cpu_index(), thread);
    Ok(())
}

/// What `clone` asks of a new process beyond a copy of the caller (`fork` asks none of it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForkOptions {
    /// The child starts with this stack pointer (clone's `stack` argument, when not 0).
    pub stack: Option<u64>,
    /// CLONE_SETTLS: the child's FS base.
    pub tls: Option<u64>,
    /// CLONE_CHILD_SETTID: the child's id written here in the child's memory.
    pub child_tid: Option<u64>,
    /// CLONE_PARENT_SETTID: the child's id written here in the parent's memory.
    pub parent_tid: Option<u64>,
    /// CLONE_CHILD_CLEARTID: the child's clear-child-tid word (its exit zeroes it and wakes a futex there).
    pub clear_tid: Option<u64>,
}

pub fn fork(frame: &TrapFrame, opts: ForkOptions) -> i64 {
    let (ppid, me) = (sched::current_pid(), sched::current_tid());
    // The child's pid first (reserved in the thread-id map until the child is entered or the fork fails), so
    // its signal state is made once, under the same lock as the parent's is read.
    let (pid, name, parent_space, pgid, sid, sig, (parent_fs, cmdline, exe)) = {
        let mut t = TABLE.lock();
        let Some((name, space, pgid, sid, files, cmdline, exe)) = t.procs.get(&ppid).map(|p| (p.name.clone(), p.space.clone(), p.pgid, p.sid, p.fs.clone(), p.cmdline.clone(), p.exe.clone())) else {
            return -ESRCH;
        };
        let Some(pid) = alloc_pid(&mut t, None) else { return -EAGAIN };
        let sig = t.procs[&ppid].sig.forked(me, pid);
        (pid, name, space, pgid, sid, sig, (files, cmdline, exe))
    };
    // Copy under the parent's space lock alone: other processes fork, fault and exit meanwhile. (The parent's
    // writable pages become read-only + COW; the copy flushes the TLBs that cached them, this CPU's included.)
    // The pages parent and child write first — the stack where the parent stands and its thread block (the
    // TLS base) — are copied now rather than faulted on.
    let eager = [frame.rsp, sched::user_tls().0];
    let forked = parent_space.lock().as_ref().map(|s| s.fork_copying(&mut KernelMem, &eager));
    let space = match forked {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            release_tid(&mut TABLE.lock(), pid);
            return e.into();
        }
        None => {
            release_tid(&mut TABLE.lock(), pid);
            return -ESRCH;
        }
    };
    let root = space.root();
    let child_space = space_lock(space);
    let discard = |child_space: SpaceLock| {
        if let Some(s) = child_space.lock().take() {
            s.teardown(&mut KernelMem);
        }
    };
    // Made once, on the heap, where the thread keeps it.
    let mut child_frame = Box::new(*frame);
    child_frame.gprs.rax = 0;
    if let Some(sp) = opts.stack {
        child_frame.rsp = sp;
    }
    // As on Linux, a thread id that cannot be written is not an error of the call.
    let tid = (pid as u32).to_le_bytes();
    if let (Some(at), Some(space)) = (opts.child_tid, child_space.lock().as_mut()) {
        let _ = space.copy_to_user(&mut KernelMem, at, &tid);
    }
    let Some(mut thread) = sched::new_user_thread("user", child_frame, pid, root) else {
        discard(child_space);
        release_tid(&mut TABLE.lock(), pid);
        return -ENOMEM;
    };
    // In the table only once its thread exists, so a signal sent to it always has a thread to wake. (The pid
    // is reserved in the thread-id map meanwhile.)
    // The child's descriptors share the parent's open files (their offsets and status flags).
    let fs = parent_fs.lock().clone();
    let mut entry = Process::new(pid, ppid, name, child_space.clone(), thread.id, pgid, sid, sig, fs);
    (entry.cmdline, entry.exe) = (cmdline, exe);
    if let Some(th) = entry.threads.get_mut(&pid) {
        th.clear_tid = opts.clear_tid.unwrap_or(0);
    }
    TABLE.lock().procs.insert(pid, entry);
    if let Some(fs) = opts.tls {
        thread.set_fs_base(fs);
    }
    if let Some(at) = opts.parent_tid {
        let _ = with_space(|s, m| s.copy_to_user(m, at, &tid));
    }
    sched::enqueue(percpu::cpu_index(), thread);
    i64::from(pid)
}

/// exit(2): the calling thread leaves; the process ends with its last thread. The caller then leaves the
/// CPU (sched::exit).
pub fn exit_thread(wait_status: i32) {
    if let Some(status) = threads::leave(wait_status) {
        exit_current(status);
    }
}

/// exit_group(2): the whole process ends with `wait_status`. The caller then leaves the CPU (sched::exit).
pub fn exit_group(wait_status: i32) {
    if let Some(status) = threads::exit_group(wait_status) {
        exit_current(status);
    }
}

/// End the calling process, whose last thread the caller is, with `wait_status`: free its memory, wake its
/// parent, hand its children to init. The caller then leaves the CPU (sched::exit, or a switch from the
/// trap path).
fn exit_current(wait_status: i32) {
    let pid = sched::current_pid();
    crate::channel::endpoint::close_all_of(pid);
    let space = {
        let t = TABLE.lock();
        let Some(p) = t.procs.get(&pid) else { return };
        let space = p.space.lock().take();
        space
    };
    // Tear down with no lock held (the space is ours alone now), and before the parent can see the zombie, so
    // a parent that reaps us and counts free frames sees them all back. The root stays loaded until this CPU
    // switches to the next thread (saving a TLB flush), which frees it.
    if let Some(s) = space {
        if questv_arch::cpu::read_cr3() == s.root() {
            sched::retire_root(s.retire(&mut KernelMem));
        } else {
            s.teardown(&mut KernelMem);
        }
    }
    let (space_lock, fs) = TABLE.lock().procs.get(&pid).map(|p| (p.space.clone(), p.fs.clone())).unzip();
    if let Some(lock) = space_lock {
        threads::forget_space(&lock);
    }
    // Every descriptor closes (a pipe's other end sees end of file or EPIPE) before the parent hears of the end.
    if let Some(fs) = fs {
        let closed = fs.lock().files.take_all();
        drop(closed);
    }
    let mut wake = [None; 2];
    let mut poke = alloc::vec::Vec::new();
    {
        let mut t = TABLE.lock();
        release_tid(&mut t, pid);
        let Some(p) = t.procs.get_mut(&pid) else { return };
        p.state = State::Zombie(wait_status);
        p.itimer = None;
        let ppid = p.ppid;
        let mut orphan_zombie = false;
        for (_, c) in t.procs.iter_mut().filter(|(_, c)| c.ppid == pid) {
            c.ppid = INIT_PID;
            orphan_zombie |= matches!(c.state, State::Zombie(_));
        }
        if orphan_zombie {
            wake[0] = t.procs.get_mut(&INIT_PID).and_then(|i| i.waiter.take());
        }
        if let Some(parent) = t.procs.get_mut(&ppid) {
            wake[1] = parent.waiter.take();
            // A parent that ignores SIGCHLD (or asked SA_NOCLDWAIT) has its children reaped at once.
            let reap = parent.sig.reaps_children() && pid != INIT_PID;
            poke = signals::post_locked(parent, ppid, signals::child_info(pid, wait_status));
            if reap {
                t.procs.remove(&pid);
            }
        }
    }
    for w in wake.into_iter().flatten() {
        sched::wake(w);
    }
    signals::wake_and_poke(None, poke);
    if pid == INIT_PID {
        // init reports QUESTV DONE (or its sandbox status) itself when it exits normally; if it was killed,
        // the kernel reports for it.
        let code = if wait_status & 0x7F == 0 { (wait_status >> 8) & 0xFF } else { 128 + (wait_status & 0x7F) };
        crate::machine::shutdown(code, wait_status & 0x7F != 0);
    }
}

pub const WUNTRACED: u64 = 2;
pub const WCONTINUED: u64 = 8;
/// __WNOTHREAD, __WALL, __WCLONE: thread-selection flags. Threads are not waited for (they are not children:
/// CLONE_THREAD), so they change nothing.
const WTHREAD_FLAGS: u64 = 0x2000_0000 | 0x4000_0000 | 0x8000_0000;

/// What wait4 found for one child.
enum Reaped {
    /// Ended: its status, and the entry goes.
    Exited(u32, i32),
    /// Stopped or continued (WUNTRACED, WCONTINUED): the status; the entry stays.
    Changed(u32, i32),
}

/// CPU time of process `p`'s threads (those that left and those running), in TSC cycles.
fn cpu_of(p: &Process) -> u64 {
    p.cpu_self + p.threads.values().filter_map(|th| sched::run_cycles_of(th.sched)).sum::<u64>()
}

/// Linux's `struct rusage` (144 bytes) with CPU time `cycles`, all of it reported as user time (questv does
/// not split user from system time); the other fields 0.
fn rusage_bytes(cycles: u64) -> [u8; 144] {
    let ns = crate::time::cycles_to_ns(cycles);
    let mut b = [0u8; 144];
    b[..8].copy_from_slice(&((ns / 1_000_000_000) as i64).to_le_bytes());
    b[8..16].copy_from_slice(&(((ns % 1_000_000_000) / 1000) as i64).to_le_bytes());
    b
}

/// The calling process's CPU time so far, in TSC cycles.
pub fn process_cpu_cycles() -> Option<u64> {
    let me = sched::current_pid();
    TABLE.lock().procs.get(&me).map(cpu_of)
}

/// getrusage(2): RUSAGE_SELF (0), RUSAGE_CHILDREN (-1: the reaped ones), RUSAGE_THREAD (1).
pub fn getrusage(who: i64, addr: u64) -> i64 {
    let me = sched::current_pid();
    let cycles = match who {
        0 => TABLE.lock().procs.get(&me).map(cpu_of),
        -1 => TABLE.lock().procs.get(&me).map(|p| p.cpu_children),
        1 => Some(sched::current_run_cycles()),
        _ => return -EINVAL,
    };
    let Some(cycles) = cycles else { return -ESRCH };
    match with_space(|s, m| s.copy_to_user(m, addr, &rusage_bytes(cycles))) {
        Some(Ok(())) => 0,
        Some(Err(e)) => e.into(),
        None => -ESRCH,
    }
}

/// times(2): the process's and its reaped children's CPU time in clock ticks (100 per second; all of it as
/// user time), and the ticks since boot as the return value.
pub fn times(addr: u64) -> i64 {
    let me = sched::current_pid();
    let Some((own, children)) = TABLE.lock().procs.get(&me).map(|p| (cpu_of(p), p.cpu_children)) else { return -ESRCH };
    let ticks = |c: u64| (crate::time::cycles_to_ns(c) / 10_000_000) as i64;
    if addr != 0 {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&ticks(own).to_le_bytes());
        b[16..24].copy_from_slice(&ticks(children).to_le_bytes());
        match with_space(|s, m| s.copy_to_user(m, addr, &b)) {
            Some(Ok(())) => {}
            Some(Err(e)) => return e.into(),
            None => return -ESRCH,
        }
    }
    ticks(cpu::rdtsc())
}

/// What a wait asks for.
#[derive(Clone, Copy)]
struct Want {
    exited: bool,
    stopped: bool,
    continued: bool,
    /// Return at once when nothing is ready (WNOHANG).
    nohang: bool,
    /// Leave the child waitable (waitid's WNOWAIT).
    nowait: bool,
}

/// The common part of wait4 and waitid: find a child selected by `pid` (wait4's encoding: > 0 one child, -1
/// any, 0 the caller's group, < -1 group -pid) in a state `want` asks for, or block until one is. `report`
/// writes the result into the caller's memory under the locks (a failed copy leaves the child as it was).
/// Ok(None): WNOHANG and nothing ready.
fn wait_child(pid: i64, want: Want, mut report: impl FnMut(&mut UserSpace, u32, i32, u64) -> Result<(), i64>) -> Result<Option<u32>, i64> {
    let me = sched::current_pid();
    loop {
        {
            let mut t = TABLE.lock();
            let my_pgid = t.procs.get(&me).map_or(0, |p| p.pgid);
            let matches = |cpid: u32, c: &Process| {
                c.ppid == me
                    && match pid {
                        -1 => true,
                        0 => c.pgid == my_pgid,
                        p if p < -1 => i64::from(c.pgid) == -p,
                        p => p == i64::from(cpid),
                    }
            };
            if !t.procs.iter().any(|(&cpid, c)| matches(cpid, c)) {
                return Err(-ECHILD);
            }
            let found = t.procs.iter().find_map(|(&cpid, c)| match c.state {
                State::Zombie(st) if want.exited && matches(cpid, c) => Some(Reaped::Exited(cpid, st)),
                State::Running if matches(cpid, c) => match c.wait_report {
                    Some(st) if st == crate::signal::CONTINUED_STATUS && want.continued => Some(Reaped::Changed(cpid, st)),
                    Some(st) if st != crate::signal::CONTINUED_STATUS && want.stopped => Some(Reaped::Changed(cpid, st)),
                    _ => None,
                },
                _ => None,
            });
            if let Some(found) = found {
                let (cpid, st) = match found {
                    Reaped::Exited(c, s) | Reaped::Changed(c, s) => (c, s),
                };
                let child_cpu = t.procs.get(&cpid).map_or(0, |c| cpu_of(c) + c.cpu_children);
                {
                    // Under the table lock (order: table, then space), so a failed copy leaves the zombie.
                    let me_space = t.procs.get(&me).map(|p| p.space.clone()).ok_or(-ESRCH)?;
                    let mut guard = me_space.lock();
                    let space = guard.as_mut().ok_or(-ESRCH)?;
                    report(space, cpid, st, child_cpu)?;
                }
                if !want.nowait {
                    match found {
                        Reaped::Exited(..) => {
                            t.procs.remove(&cpid);
                            if let Some(p) = t.procs.get_mut(&me) {
                                p.cpu_children += child_cpu;
                            }
                        }
                        Reaped::Changed(..) => {
                            if let Some(c) = t.procs.get_mut(&cpid) {
                                c.wait_report = None;
                            }
                        }
                    }
                }
                return Ok(Some(cpid));
            }
            if want.nohang {
                return Ok(None);
            }
            let tid = sched::current_id();
            let Some(p) = t.procs.get_mut(&me) else { return Err(-ESRCH) };
            if p.sig.deliverable(sched::current_tid()) {
                // Interrupted: no wake-up is owed to this thread any more.
                p.waiter = None;
                return Err(-crate::signal::ERESTARTSYS);
            }
            p.waiter = Some(tid);
        }
        sched::block();
    }
}

pub fn wait4(pid: i64, status_addr: u64, options: u64, rusage_addr: u64) -> i64 {
    if options & !(WNOHANG | WUNTRACED | WCONTINUED | WTHREAD_FLAGS) != 0 {
        return -EINVAL;
    }
    if pid == i64::from(i32::MIN) {
        return -ESRCH;
    }
    let want = Want { exited: true, stopped: options & WUNTRACED != 0, continued: options & WCONTINUED != 0, nohang: options & WNOHANG != 0, nowait: false };
    let found = wait_child(pid, want, |space, _, st, cpu| {
        if status_addr != 0 {
            space.copy_to_user(&mut KernelMem, status_addr, &st.to_le_bytes())?;
        }
        if rusage_addr != 0 {
            space.copy_to_user(&mut KernelMem, rusage_addr, &rusage_bytes(cpu))?;
        }
        Ok(())
    });
    match found {
        Ok(Some(cpid)) => i64::from(cpid),
        Ok(None) => 0,
        Err(e) => e,
    }
}

pub const WEXITED: u64 = 4;
pub const WSTOPPED: u64 = 2;
pub const WNOWAIT: u64 = 0x0100_0000;

/// waitid(2): P_ALL (0), P_PID (1), P_PGID (2: 0 means the caller's group); WEXITED, WSTOPPED, WCONTINUED,
/// WNOHANG, WNOWAIT; the child's state as a SIGCHLD siginfo in `infop` (zeroed when WNOHANG finds nothing),
/// its CPU time in `rusage`. P_PIDFD: EINVAL (no pidfds).
pub fn waitid(idtype: u64, id: u64, infop: u64, options: u64, rusage_addr: u64) -> i64 {
    if options & !(WNOHANG | WEXITED | WSTOPPED | WCONTINUED | WNOWAIT | WTHREAD_FLAGS) != 0 || options & (WEXITED | WSTOPPED | WCONTINUED) == 0 {
        return -EINVAL;
    }
    let pid = match idtype {
        0 => -1,
        1 if id as u32 as i32 > 0 => i64::from(id as u32),
        2 if id as u32 as i32 >= 0 => -i64::from(id as u32),
        _ => return -EINVAL,
    };
    let want = Want { exited: options & WEXITED != 0, stopped: options & WSTOPPED != 0, continued: options & WCONTINUED != 0, nohang: options & WNOHANG != 0, nowait: options & WNOWAIT != 0 };
    let found = wait_child(pid, want, |space, cpid, st, cpu| {
        if infop != 0 {
            space.copy_to_user(&mut KernelMem, infop, &signals::wait_info(cpid, st).to_bytes())?;
        }
        if rusage_addr != 0 {
            space.copy_to_user(&mut KernelMem, rusage_addr, &rusage_bytes(cpu))?;
        }
        Ok(())
    });
    match found {
        Ok(Some(_)) => 0,
        Ok(None) => {
            if infop != 0 {
                if let Some(Err(e)) = with_space(|s, m| s.copy_to_user(m, infop, &[0u8; 128])) {
                    return e.into();
                }
            }
            0
        }
        Err(e) => e,
    }
}

pub fn getppid() -> i64 {
    let me = sched::current_pid();
    TABLE.lock().procs.get(&me).map_or(-ESRCH, |p| i64::from(p.ppid))
}

/// Replace the calling process's program. On success the frame is rewritten to enter the new program.
/// A NULL-terminated array of C strings at `addr` in user space (argv, envp; 0: none), counting their bytes
/// into `total` against the limits (E2BIG past them).
fn read_strings(s: &mut UserSpace, m: &mut KernelMem, addr: u64, total: &mut usize) -> Result<Vec<String>, i64> {
    let mut out = Vec::new();
    if addr == 0 {
        return Ok(out);
    }
    for i in 0..=MAX_ARGS as u64 {
        let mut w = [0u8; 8];
        s.copy_from_user(m, addr.checked_add(i * 8).ok_or(-EFAULT)?, &mut w)?;
        let p = u64::from_le_bytes(w);
        if p == 0 {
            break;
        }
        if i as usize == MAX_ARGS {
            return Err(-E2BIG);
        }
        let a = s.read_str(m, p, MAX_ARG_BYTES)?;
        *total += a.len() + 1;
        if *total > MAX_ARG_BYTES {
            return Err(-E2BIG);
        }
        out.push(a);
    }
    Ok(out)
}

pub fn execve(frame: &mut TrapFrame, path: u64, argv_addr: u64, envp_addr: u64) -> i64 {
    let read = || -> Result<(String, Vec<String>, Vec<String>), i64> {
        with_space(|s, m| {
            let path = s.read_str(m, path, 256)?;
            let mut total = 0;
            let args = read_strings(s, m, argv_addr, &mut total)?;
            let env = read_strings(s, m, envp_addr, &mut total)?;
            Ok((path, args, env))
        })
        .unwrap_or(Err(-ESRCH))
    };
    let (path, args, env) = match read() {
        Ok(v) => v,
        Err(e) => return e,
    };
    let (bytes, args) = match program_image(&path, args) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let name: Arc<str> = Arc::from(path.rsplit('/').next().unwrap_or(""));
    let exe_path = absolute_path(&path);
    let (space, entry, sp, uargv) = match load_program(&bytes, &args, &env) {
        Ok(v) => v,
        Err(e) => return e,
    };
    drop(bytes);
    // The point of no return: the other threads leave, and this one becomes the process's only thread.
    threads::become_only_thread();
    let root = space.root();
    let old = {
        let pid = sched::current_pid();
        let mut t = TABLE.lock();
        let Some(p) = t.procs.get_mut(&pid) else {
            drop(t);
            space.teardown(&mut KernelMem);
            return -ESRCH;
        };
        p.name = name;
        p.cmdline = cmdline_bytes(&args);
        p.exe = exe_path;
        p.sig.exec(pid);
        if let Some(th) = p.threads.get_mut(&pid) {
            th.clear_tid = 0;
        }
        let old = p.space.lock().replace(space);
        (old, p.fs.clone())
    };
    let (old, fs) = old;
    // Descriptors marked close-on-exec go now (their files closed outside the lock).
    let closed = fs.lock().files.take_cloexec();
    drop(closed);
    sched::set_current_cr3(root);
    // A new program starts without the old one's thread pointer.
    sched::set_user_tls(Some(0), Some(0));
    // The old space is ours alone now: no lock needed to free it.
    if let Some(old) = old {
        old.teardown(&mut KernelMem);
    }
    *frame = user_frame(entry, sp, args.len(), uargv);
    0
}

/// Arguments as /proc/PID/cmdline shows them: each followed by a NUL.
fn cmdline_bytes(args: &[String]) -> Arc<[u8]> {
    let mut b = Vec::new();
    for a in args {
        b.extend_from_slice(a.as_bytes());
        b.push(0);
    }
    Arc::from(b)
}

/// The file `path` names, every link resolved, as an absolute path (what /proc/PID/exe names).
fn absolute_path(path: &str) -> Arc<str> {
    let cwd = current_fs().map(|f| f.lock().cwd);
    let real = cwd.and_then(|c| crate::fs::files::with_tree(|v| v.real_path(crate::fs::files::generated(), c, path).ok()));
    Arc::from(real.unwrap_or_else(|| String::from(path)).as_str())
}

/// The ELF image execve runs for `path` and the arguments it gets: a `#!` script becomes its interpreter run
/// with the interpreter's optional argument, the script's path and the original arguments after argv[0]
/// (at most 4 interpreters deep, ELOOP beyond, as Linux). EACCES for a file nobody may execute.
fn program_image(path: &str, mut args: Vec<String>) -> Result<(Vec<u8>, Vec<String>), i64> {
    let cwd = current_fs().ok_or(-ESRCH)?.lock().cwd;
    let mut path = String::from(path);
    for _ in 0..5 {
        let (bytes, perm) = crate::fs::files::read_whole(cwd, &path)?;
        if perm & 0o111 == 0 {
            return Err(-EACCES);
        }
        let Some(line) = bytes.strip_prefix(b"#!") else { return Ok((bytes, args)) };
        // The interpreter line: up to the newline (Linux reads at most 255 bytes of it).
        let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len()).min(255)];
        let line = core::str::from_utf8(line).map_err(|_| -ENOEXEC)?.trim();
        let (interp, arg) = match line.split_once([' ', '\t']) {
            Some((i, a)) => (i, Some(a.trim())),
            None => (line, None),
        };
        if interp.is_empty() {
            return Err(-ENOEXEC);
        }
        let mut new_args = alloc::vec![String::from(interp)];
        new_args.extend(arg.filter(|a| !a.is_empty()).map(String::from));
        new_args.push(path.clone());
        new_args.extend(args.into_iter().skip(1));
        args = new_args;
        path = String::from(interp);
    }
    Err(-ELOOP)
}

/// Exception from user mode: resolve COW and stack faults, otherwise kill the process (never the kernel).
/// Returns false for kernel-mode exceptions (fatal, handled by the caller).
pub fn user_exception(frame: &mut TrapFrame) -> bool {
    if !frame.from_user() {
        if let Some(failed) = (frame.vector == 14).then(|| questv_arch::uaccess::fixup(frame.rip)).flatten() {
            // A system call copying to or from user memory touched a page that is not there yet (or is shared
            // copy-on-write): resolve it as the program's own access would be, or fail the copy (EFAULT).
            let (cr2, write) = (cpu::read_cr2(), frame.error_code & 2 != 0);
            if with_space(|s, m| s.handle_fault(m, cr2, write)) == Some(crate::mm::uspace::FaultOutcome::Resolved) {
                // SAFETY: cr2 is a canonical user address (the fault was resolved for it).
                unsafe { cpu::invlpg(cr2) };
            } else {
                frame.rip = failed;
            }
            return true;
        }
        return crate::hooks::kernel_exception(frame);
    }
    let cr2 = cpu::read_cr2();
    use crate::signal::*;
    let info = match frame.vector {
        14 => {
            let write = frame.error_code & 2 != 0;
            let outcome = with_space(|s, m| s.handle_fault(m, cr2, write));
            match outcome {
                Some(crate::mm::uspace::FaultOutcome::Resolved) => {
                    // SAFETY: cr2 is a canonical user address (the fault was resolved for it).
                    unsafe { cpu::invlpg(cr2) };
                    return true;
                }
                Some(crate::mm::uspace::FaultOutcome::OutOfMemory) => SigInfo::kernel(SIGKILL),
                // A present page, or a mapping whose protection forbids the access (PROT_NONE pages are not
                // present): SEGV_ACCERR; nothing mapped there: SEGV_MAPERR.
                _ => {
                    let mapped = frame.error_code & 1 != 0 || with_space(|s, _| s.vmas.find(cr2 & !(PAGE_SIZE - 1)).is_some()).unwrap_or(false);
                    SigInfo::fault(SIGSEGV, if mapped { SEGV_ACCERR } else { SEGV_MAPERR }, cr2)
                }
            }
        }
        0 => SigInfo::fault(SIGFPE, FPE_INTDIV, frame.rip),
        16 | 19 => SigInfo::fault(SIGFPE, FPE_FLTINV, frame.rip),
        6 => SigInfo::fault(SIGILL, ILL_ILLOPN, frame.rip),
        3 => SigInfo::fault(SIGTRAP, SI_KERNEL, 0),
        1 => SigInfo::fault(SIGTRAP, TRAP_BRKPT, frame.rip),
        10..=12 | 17 => SigInfo::fault(SIGBUS, SI_KERNEL, 0),
        _ => SigInfo::fault(SIGSEGV, SI_KERNEL, 0),
    };
    signals::force_fault(info);
    on_return_to_user(frame);
    true
}

/// The end of every trap that returns to user mode: deliver what the (possibly new) current thread's process
/// has pending — ending it, for a signal whose action is to terminate — and settle an interrupted system call.
pub fn on_return_to_user(frame: &mut TrapFrame) {
    while frame.from_user() && sched::take_attention() {
        if threads::doomed() {
            // Another thread ended the process or called execve.
            exit_thread(0);
            sched::exit_from_trap(frame);
            continue;
        }
        if let Some(sig) = signals::deliver_current(frame) {
            let pid = sched::current_pid();
            if frame.vector < 32 {
                // A fault's signal ended it: say where, as the kernel always has.
                questv_arch::trap::dump_exception(frame, percpu::cpu_index());
                crate::kprintln!("questv: process {} killed by signal {}", pid, sig);
            }
            exit_group(crate::signal::killed_status(sig));
            sched::exit_from_trap(frame);
        }
    }
    if frame.from_user() {
        signals::settle_syscall(frame, None);
    }
}

/// Start init with the command as its arguments; init runs it and reports `QUESTV DONE`, and the machine
/// stops when init exits (proc::exit_current → shutdown). Returns only if init cannot start.
pub fn run_command(cmd: &str) -> i32 {
    let mut argv = alloc::vec![alloc::string::String::from("init")];
    argv.extend(cmd.split_whitespace().map(alloc::string::String::from));
    let names: alloc::vec::Vec<&str> = crate::ramdisk::names().collect();
    log::info!("ramdisk: {:?}", names);
    match crate::proc::start_init(argv) {
        Ok(()) => loop {
            crate::sched::block();
        },
        Err(e) => {
            crate::kprintln!("{}", e);
            crate::hooks::STATUS_NOT_FOUND
        }
    }
}

