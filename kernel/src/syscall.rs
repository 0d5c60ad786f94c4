//! System call dispatch. Numbers and semantics follow Linux x86_64 (static musl and glibc binaries run
//! unmodified), plus a few questv calls from 1000 up. Failures return negative errno values; every user
//! pointer goes through the checked copies in mm::uspace, so a bad pointer is EFAULT, never a kernel fault.
//! Handlers run with interrupts off and yield explicitly when they wait.

use crate::proc::{self, errno::*};
use crate::{sched, smp};
use alloc::vec;
use questv_arch::paging::PAGE_SIZE;
use questv_arch::trap::TrapFrame;
use questv_arch::{cpu, percpu};

use crate::channel::endpoint as chan;
use crate::fs::files::{O_CREAT, O_TRUNC, O_WRONLY};
use crate::fs::sys as fs;
use questv_libc_shim::nr;

const MAX_IO: u64 = 1 << 20;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_PRIVATE: u64 = 0x02;

/// System calls reported as not implemented so far (each once).
static REPORTED: crate::syscall_names::OnceSet = crate::syscall_names::OnceSet::new();

/// A call questv does not implement: -ENOSYS, and the first time, its name on the console, so a user knows
/// what their program needs.
fn not_implemented(nr: u64) -> i64 {
    if REPORTED.first(nr) {
        match crate::syscall_names::name(nr) {
            Some(name) => crate::kprintln!("syscall {} ({}) not implemented", name, nr),
            None => crate::kprintln!("syscall {} not implemented (no Linux x86-64 call has that number)", nr),
        }
    }
    -ENOSYS
}

/// A call questv implements only in part: -ENOSYS for the missing part, named once on the console.
fn not_implemented_detail(nr: u64, what: &str) -> i64 {
    if REPORTED.first(nr | 1 << 32) {
        crate::kprintln!("syscall {} ({}): {} not implemented", crate::syscall_names::name(nr).unwrap_or("?"), nr, what);
    }
    -ENOSYS
}

pub fn dispatch(frame: &mut TrapFrame) {
    let (a0, a1, a2, a3) = (frame.gprs.rdi, frame.gprs.rsi, frame.gprs.rdx, frame.gprs.r10);
    // Kept for a restart after a signal (the entry stub's error-code slot is free on a system call).
    frame.error_code = frame.gprs.rax;
    let ret: i64 = match frame.gprs.rax {
        nr::RT_SIGRETURN => {
            // Restores every register, RAX included: nothing to return.
            proc::rt_sigreturn(frame);
            return;
        }
        // Signal numbers and pids are C ints: the upper halves of their registers are not looked at.
        nr::RT_SIGACTION => proc::rt_sigaction(a0 & 0xFFFF_FFFF, a1, a2, a3),
        nr::RT_SIGPROCMASK => proc::rt_sigprocmask(a0 & 0xFFFF_FFFF, a1, a2, a3),
        nr::RT_SIGPENDING => proc::rt_sigpending(a0, a1),
        nr::RT_SIGSUSPEND => proc::rt_sigsuspend(a0, a1),
        nr::RT_SIGTIMEDWAIT => proc::rt_sigtimedwait(a0, a1, a2, a3),
        nr::SIGALTSTACK => proc::sigaltstack(a0, a1, frame.rsp),
        nr::PAUSE => proc::pause(),
        nr::KILL => proc::kill(a0 as i32 as i64, a1 & 0xFFFF_FFFF),
        nr::TKILL => proc::tgkill(-1, a0 as i32 as i64, a1 & 0xFFFF_FFFF),
        nr::TGKILL => proc::tgkill(a0 as i32 as i64, a1 as i32 as i64, a2 & 0xFFFF_FFFF),
        nr::ALARM => proc::alarm(a0 & 0xFFFF_FFFF),
        nr::SETITIMER | nr::GETITIMER if (1..=2).contains(&(a0 & 0xFFFF_FFFF)) => {
            not_implemented_detail(frame.gprs.rax, "ITIMER_VIRTUAL and ITIMER_PROF")
        }
        nr::SETITIMER => proc::setitimer(a0 & 0xFFFF_FFFF, a1, a2),
        nr::GETITIMER => proc::getitimer(a0 & 0xFFFF_FFFF, a1),
        nr::SETPGID => proc::setpgid(a0 & 0xFFFF_FFFF, a1 & 0xFFFF_FFFF),
        nr::GETPGID => proc::getpgid(a0 & 0xFFFF_FFFF),
        nr::GETPGRP => proc::getpgid(0),
        nr::SETSID => proc::setsid(),
        nr::GETSID => proc::getsid(a0 & 0xFFFF_FFFF),
        nr::CLOCK_NANOSLEEP => clock_nanosleep(a0, a1, a2, a3),
        nr::READ => with_fs(|f| fs::read(f, a0 as i32 as i64, a1, a2)),
        nr::WRITE => {
            let r = with_fs(|f| fs::write(f, a0 as i32 as i64, a1, a2));
            broken_pipe(r)
        }
        nr::MMAP => mmap(a0, a1, a2, a3, frame.gprs.r8, frame.gprs.r9),
        nr::MPROTECT => mprotect(a0, a1, a2),
        nr::MADVISE => madvise(a0, a1, a2),
        nr::MUNMAP => munmap(a0, a1),
        nr::MREMAP => mremap(a0, a1, a2, a3, frame.gprs.r8),
        nr::BRK => proc::with_space(|s, m| s.set_brk(m, if a0 == 0 { s.brk } else { a0 }) as i64).unwrap_or(-ESRCH),
        nr::SCHED_YIELD => {
            sched::yield_now();
            0
        }
        nr::NANOSLEEP => nanosleep(a0, a1),
        nr::GETPID => i64::from(sched::current_pid()),
        nr::GETPPID => proc::getppid(),
        nr::FORK | nr::VFORK => proc::fork(frame, proc::ForkOptions::default()),
        nr::CLONE => clone(frame, a0, a1, a2, a3, frame.gprs.r8),
        nr::EXECVE => proc::execve(frame, a0, a1, a2),
        nr::EXIT => {
            proc::exit_thread(((a0 & 0xFF) << 8) as i32);
            sched::exit()
        }
        nr::EXIT_GROUP => {
            proc::exit_group(((a0 & 0xFF) << 8) as i32);
            sched::exit()
        }
        nr::FUTEX => proc::futex(a0, a1, a2, a3, frame.gprs.r8, frame.gprs.r9),
        nr::WAIT4 => proc::wait4(a0 as i32 as i64, a1, a2 & 0xFFFF_FFFF, a3),
        nr::WAITID => proc::waitid(a0 & 0xFFFF_FFFF, a1 & 0xFFFF_FFFF, a2, a3 & 0xFFFF_FFFF, frame.gprs.r8),
        nr::GETRUSAGE => proc::getrusage(a0 as i32 as i64, a1),
        nr::TIMES => proc::times(a0),
        nr::SCHED_SETAFFINITY => set_affinity(a0, a1, a2),
        nr::CLOCK_GETTIME => clock_gettime(a0, a1),
        nr::CLOCK_GETRES => clock_getres(a0, a1),
        nr::GETTIMEOFDAY => gettimeofday(a0, a1),
        nr::TIME => time(a0),
        nr::GETCPU => getcpu(a0),
        nr::QUESTV_CYCLES => cpu::rdtsc() as i64,
        nr::QUESTV_FREE_FRAMES => crate::mm::kmem::free_frames() as i64,
        nr::QUESTV_NCPUS => i64::from(smp::cpus_online()),
        nr::QUESTV_SANDBOX => crate::sandbox::id().map_or(-1, i64::from),
        // VM exits of this sandbox so far, this query's own exit included; ENOSYS without a monitor.
        nr::QUESTV_VMEXITS => match crate::sandbox::id() {
            Some(_) => crate::sandbox::exit_count() as i64,
            None => -ENOSYS,
        },
        nr::CHAN_OPEN => u32::try_from(a0).map_or(-EINVAL, |p| chan::open(p).map_or_else(|e| e, i64::from)),
        nr::CHAN_SEND => chan_send(a0, a1, a2, a3),
        nr::CHAN_RECV => chan_recv(a0, a1, a2, a3, frame.gprs.r8),
        nr::CHAN_CLOSE => chan::close(a0 as u32).map_or_else(|e| e, |()| 0),
        nr::CHAN_ENDPOINT => i64::from(chan::my_endpoint()),
        nr::VCPU_CREATE => vcpu_create(a0, a1, a2),
        nr::VCPU_BIND => u32::try_from(a0).map_or(-EINVAL, |id| sched::vcpu_bind(id).map_or_else(vcpu_errno, |()| 0)),
        nr::VCPU_INFO => vcpu_info(a0, a1),
        nr::VCPU_SET => u32::try_from(a0).map_or(-EINVAL, |id| sched::vcpu_set(id, a1, a2).map_or_else(vcpu_errno, |()| 0)),
        nr::VCPU_TRACE => vcpu_trace(a0, a1),
        nr::NET_INFO => net_info(a0, a1),
        nr::NET_WAIT => {
            if crate::net::stack::STATS.up.load(core::sync::atomic::Ordering::Acquire) {
                crate::net::stack::wait_stop(a0.min(3_600_000)).map_or(-EAGAIN, i64::from)
            } else {
                -ENODEV
            }
        }
        nr::STATE_SAVE => state_save(a0, a1),
        nr::STATE_LOAD => state_load(a0, a1),
        nr::INCARNATION => i64::from(crate::sandbox::incarnation()),
        nr::ARCH_PRCTL => arch_prctl(a0, a1),
        nr::WRITEV => broken_pipe(with_fs(|f| fs::vectored(f, a0 as i32 as i64, a1, a2, true))),
        nr::READV => with_fs(|f| fs::vectored(f, a0 as i32 as i64, a1, a2, false)),
        nr::IOCTL => with_fs(|f| fs::ioctl(f, a0 as i32 as i64, a1 & 0xFFFF_FFFF, a2, proc::getsid(0).max(0) as u32)),
        nr::FSTAT => with_fs(|f| fs::fstat(f, a0 as i32 as i64, a1)),
        nr::OPEN => with_fs(|f| fs::openat(f, fs::AT_FDCWD, a0, a1 & 0xFFFF_FFFF, a2 & 0xFFFF_FFFF)),
        nr::CREAT => with_fs(|f| fs::openat(f, fs::AT_FDCWD, a0, u64::from(O_CREAT | O_WRONLY | O_TRUNC), a1 & 0xFFFF_FFFF)),
        nr::OPENAT => with_fs(|f| fs::openat(f, a0 as i32 as i64, a1, a2 & 0xFFFF_FFFF, a3 & 0xFFFF_FFFF)),
        nr::CLOSE => with_fs(|f| fs::close(f, a0 as i32 as i64)),
        nr::LSEEK => with_fs(|f| fs::lseek(f, a0 as i32 as i64, a1 as i64, a2 & 0xFFFF_FFFF)),
        nr::PREAD64 => with_fs(|f| fs::pread(f, a0 as i32 as i64, a1, a2, a3 as i64)),
        nr::PWRITE64 => broken_pipe(with_fs(|f| fs::pwrite(f, a0 as i32 as i64, a1, a2, a3 as i64))),
        nr::ACCESS => with_fs(|f| fs::faccessat(f, fs::AT_FDCWD, a0, a1 & 0xFFFF_FFFF, 0)),
        nr::FACCESSAT => with_fs(|f| fs::faccessat(f, a0 as i32 as i64, a1, a2 & 0xFFFF_FFFF, 0)),
        nr::FACCESSAT2 => with_fs(|f| fs::faccessat(f, a0 as i32 as i64, a1, a2 & 0xFFFF_FFFF, a3 & 0xFFFF_FFFF)),
        nr::PIPE => with_fs(|f| fs::pipe2(f, a0, 0)),
        nr::PIPE2 => with_fs(|f| fs::pipe2(f, a0, a1 & 0xFFFF_FFFF)),
        nr::DUP => with_fs(|f| fs::dup(f, a0 as i32 as i64)),
        nr::DUP2 => with_fs(|f| fs::dup3(f, a0 as i32 as i64, a1 as i32 as i64, 0, true)),
        nr::DUP3 => with_fs(|f| fs::dup3(f, a0 as i32 as i64, a1 as i32 as i64, a2 & 0xFFFF_FFFF, false)),
        nr::FCNTL => with_fs(|f| fs::fcntl(f, a0 as i32 as i64, a1 & 0xFFFF_FFFF, a2)),
        nr::FSYNC | nr::FDATASYNC => with_fs(|f| fs::fsync(f, a0 as i32 as i64)),
        nr::TRUNCATE => with_fs(|f| fs::truncate(f, a0, a1 as i64)),
        nr::FTRUNCATE => with_fs(|f| fs::ftruncate(f, a0 as i32 as i64, a1 as i64)),
        nr::GETCWD => with_fs(|f| fs::getcwd(f, a0, a1)),
        nr::CHDIR => with_fs(|f| fs::chdir(f, a0)),
        nr::FCHDIR => with_fs(|f| fs::fchdir(f, a0 as i32 as i64)),
        nr::RENAME => with_fs(|f| fs::renameat2(f, fs::AT_FDCWD, a0, fs::AT_FDCWD, a1, 0)),
        nr::RENAMEAT => with_fs(|f| fs::renameat2(f, a0 as i32 as i64, a1, a2 as i32 as i64, a3, 0)),
        nr::RENAMEAT2 => with_fs(|f| fs::renameat2(f, a0 as i32 as i64, a1, a2 as i32 as i64, a3, frame.gprs.r8 & 0xFFFF_FFFF)),
        nr::MKDIR => with_fs(|f| fs::mkdirat(f, fs::AT_FDCWD, a0, a1 & 0xFFFF_FFFF)),
        nr::MKDIRAT => with_fs(|f| fs::mkdirat(f, a0 as i32 as i64, a1, a2 & 0xFFFF_FFFF)),
        nr::RMDIR => with_fs(|f| fs::unlinkat(f, fs::AT_FDCWD, a0, fs::AT_REMOVEDIR)),
        nr::UNLINK => with_fs(|f| fs::unlinkat(f, fs::AT_FDCWD, a0, 0)),
        nr::UNLINKAT => with_fs(|f| fs::unlinkat(f, a0 as i32 as i64, a1, a2 & 0xFFFF_FFFF)),
        nr::LINK => with_fs(|f| fs::linkat(f, fs::AT_FDCWD, a0, fs::AT_FDCWD, a1, 0)),
        nr::LINKAT => with_fs(|f| fs::linkat(f, a0 as i32 as i64, a1, a2 as i32 as i64, a3, frame.gprs.r8 & 0xFFFF_FFFF)),
        nr::SYMLINK => with_fs(|f| fs::symlinkat(f, a0, fs::AT_FDCWD, a1)),
        nr::SYMLINKAT => with_fs(|f| fs::symlinkat(f, a0, a1 as i32 as i64, a2)),
        nr::READLINK => with_fs(|f| fs::readlinkat(f, fs::AT_FDCWD, a0, a1, a2)),
        nr::READLINKAT => with_fs(|f| fs::readlinkat(f, a0 as i32 as i64, a1, a2, a3)),
        nr::CHMOD => with_fs(|f| fs::fchmodat(f, fs::AT_FDCWD, a0, a1 & 0xFFFF_FFFF)),
        nr::FCHMODAT => with_fs(|f| fs::fchmodat(f, a0 as i32 as i64, a1, a2 & 0xFFFF_FFFF)),
        nr::FCHMOD => with_fs(|f| fs::fchmod(f, a0 as i32 as i64, a1 & 0xFFFF_FFFF)),
        nr::CHOWN => with_fs(|f| fs::fchownat(f, fs::AT_FDCWD, a0, a1, a2, 0)),
        nr::LCHOWN => with_fs(|f| fs::fchownat(f, fs::AT_FDCWD, a0, a1, a2, fs::AT_SYMLINK_NOFOLLOW)),
        nr::FCHOWNAT => with_fs(|f| fs::fchownat(f, a0 as i32 as i64, a1, a2, a3, frame.gprs.r8 & 0xFFFF_FFFF)),
        nr::UMASK => with_fs(|f| fs::umask(f, a0)),
        nr::STATFS => with_fs(|f| fs::statfs(f, a0, a1)),
        nr::FSTATFS => with_fs(|f| fs::fstatfs(f, a0 as i32 as i64, a1)),
        nr::POLL => with_fs(|f| fs::poll(f, a0, a1, if (a2 as i32) < 0 { None } else { Some((a2 as i32) as u64 * 1_000_000) })),
        nr::PPOLL => match fs_timespec(a2) {
            Ok(t) => with_fs(|f| fs::poll(f, a0, a1, t)),
            Err(e) => e,
        },
        nr::SELECT => match timeval_arg(frame.gprs.r8) {
            Ok(t) => with_fs(|f| fs::select(f, a0 & 0xFFFF_FFFF, [a1, a2, a3], t)),
            Err(e) => e,
        },
        nr::PSELECT6 => match fs_timespec(frame.gprs.r8) {
            Ok(t) => with_fs(|f| fs::select(f, a0 & 0xFFFF_FFFF, [a1, a2, a3], t)),
            Err(e) => e,
        },
        nr::GETDENTS64 => with_fs(|f| fs::getdents64(f, a0 as i32 as i64, a1, a2)),
        nr::UTIMENSAT => with_fs(|f| fs::utimensat(f, a0 as i32 as i64, a1, a2, a3 & 0xFFFF_FFFF)),
        nr::STATX => with_fs(|f| fs::statx(f, a0 as i32 as i64, a1, a2 & 0xFFFF_FFFF, a3 & 0xFFFF_FFFF, frame.gprs.r8)),
        nr::GETRANDOM => getrandom(a0, a1, a2),
        nr::SYSINFO => sysinfo(a0),
        nr::GETRLIMIT => prlimit64(0, a0, 0, a1),
        nr::PRLIMIT64 => prlimit64(a0, a1, a2, a3),
        // The robust-futex list is walked at a thread's exit on Linux to mark the futexes it held as their
        // owner died (FUTEX_OWNER_DIED). questv accepts the list and does not walk it yet: a robust mutex
        // whose owner died stays locked (docs/processes.md). Linux's size check is kept.
        nr::SET_ROBUST_LIST => if a1 == 24 { 0 } else { -EINVAL },
        nr::NEWFSTATAT => with_fs(|f| fs::newfstatat(f, a0 as i32 as i64, a1, a2, a3 & 0xFFFF_FFFF)),
        nr::STAT => with_fs(|f| fs::newfstatat(f, fs::AT_FDCWD, a0, a1, 0)),
        nr::LSTAT => with_fs(|f| fs::newfstatat(f, fs::AT_FDCWD, a0, a1, fs::AT_SYMLINK_NOFOLLOW)),
        nr::UNAME => uname(a0),
        // questv has one user: everyone is root (uid and gid 0), as in a container's first process.
        nr::GETUID | nr::GETGID | nr::GETEUID | nr::GETEGID => 0,
        nr::GETRESUID | nr::GETRESGID => getres_ids(a0, a1, a2),
        nr::SCHED_GETAFFINITY => get_affinity(a0 & 0xFFFF_FFFF, a1, a2),
        nr::GETTID => i64::from(sched::current_tid()),
        nr::SET_TID_ADDRESS => proc::set_tid_address(a0),
        other => not_implemented(other),
    };
    if crate::signal::restart_rule(ret, None).is_some() {
        // Interrupted by a signal: the return path must look at it (and settle the call) even if the
        // thread's attention was already taken.
        sched::set_attention();
    }
    frame.gprs.rax = ret as u64;
}

/// `clone` for a new process (fork's flag sets, glibc's and musl's included, and posix_spawn's) or a
/// thread (pthread_create's).
fn clone(frame: &TrapFrame, flags: u64, stack: u64, parent_tid: u64, child_tid: u64, tls: u64) -> i64 {
    use crate::linux_abi::{clone_request, CloneRefusal};
    match clone_request(flags, stack, parent_tid, child_tid, tls) {
        Ok(r) if r.thread => proc::spawn_thread(frame, r.stack, r.tls, r.parent_tid, r.child_tid, r.clear_tid),
        Ok(r) => proc::fork(frame, proc::ForkOptions { stack: r.stack, tls: r.tls, child_tid: r.child_tid, parent_tid: r.parent_tid, clear_tid: r.clear_tid }),
        Err(CloneRefusal::Invalid) => -EINVAL,
        Err(CloneRefusal::SharedMemory) => {
            log_once(&CLONE_VM_LOGGED, format_args!("syscall clone (56) with CLONE_VM but neither CLONE_THREAD nor CLONE_VFORK not implemented"));
            -ENOSYS
        }
        Err(CloneRefusal::Unsupported(bits)) => {
            log_once(&CLONE_FLAGS_LOGGED, format_args!("syscall clone (56) flags 0x{bits:x} not implemented"));
            -ENOSYS
        }
    }
}

static CLONE_VM_LOGGED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
static CLONE_FLAGS_LOGGED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Print `msg` on the console the first time only.
fn log_once(done: &core::sync::atomic::AtomicBool, msg: core::fmt::Arguments<'_>) {
    if !done.swap(true, core::sync::atomic::Ordering::Relaxed) {
        crate::kprintln!("{msg}");
    }
}

fn vcpu_errno(e: sched::VcpuError) -> i64 {
    match e {
        sched::VcpuError::Invalid => -EINVAL,
        sched::VcpuError::Infeasible => -EBUSY,
        sched::VcpuError::NoSuchVcpu => -ESRCH,
    }
}

fn vcpu_create(class: u64, budget_us: u64, period_us: u64) -> i64 {
    let class = match class {
        questv_libc_shim::vcpu::MAIN => crate::vcpu::Class::Main,
        questv_libc_shim::vcpu::IO => crate::vcpu::Class::Io,
        _ => return -EINVAL,
    };
    sched::vcpu_create(class, budget_us, period_us).map_or_else(vcpu_errno, i64::from)
}

fn vcpu_info(id: u64, buf: u64) -> i64 {
    let Ok(id) = u32::try_from(id) else { return -EINVAL };
    let i = match sched::vcpu_info(id) {
        Ok(i) => i,
        Err(e) => return vcpu_errno(e),
    };
    let words = [
        i.class, i.budget_us, i.period_us, i.foreground_us, i.background_us, i.capacity_us, i.replenishments,
        i.exhausted, i.overrun_us, i.switches_in,
    ];
    copy_words_to_user(buf, &words)
}

/// Copy a structure of 64-bit words (the layout the C and Rust APIs declare) to user memory: 0 or -errno.
fn copy_words_to_user(buf: u64, words: &[u64]) -> i64 {
    let b: alloc::vec::Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    match crate::user::write(buf, &b) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

/// SMP build: the kept state (no monitor to keep it outside the kernel).
static SMP_STATE: crate::sync::IrqSpinlock<alloc::vec::Vec<u8>> = crate::sync::IrqSpinlock::new(alloc::vec::Vec::new());

/// STATE_SAVE: the user's bytes go to the monitor's checkpoint slot (VT) or a kernel copy (SMP).
fn state_save(buf: u64, len: u64) -> i64 {
    if len > questv_libc_shim::state::MAX as u64 {
        return -EINVAL;
    }
    let mut data = alloc::vec![0u8; len as usize];
    if let Err(e) = crate::user::read(buf, &mut data) {
        return e;
    }
    if crate::sandbox::id().is_some() {
        crate::sandbox::checkpoint(questv_abi::hypercall::SLOT_USER, &data).map_or_else(|e| e, |()| 0)
    } else {
        *SMP_STATE.lock() = data;
        0
    }
}

/// STATE_LOAD: the kept bytes (at most `len`) to user memory; returns their whole length.
fn state_load(buf: u64, len: u64) -> i64 {
    let kept = if crate::sandbox::id().is_some() {
        let mut b = alloc::vec![0u8; questv_libc_shim::state::MAX];
        match crate::sandbox::restore(questv_abi::hypercall::SLOT_USER, &mut b) {
            Ok(n) => {
                b.truncate(n.min(b.len()));
                b
            }
            Err(e) => return e,
        }
    } else {
        SMP_STATE.lock().clone()
    };
    let n = kept.len().min(len.min(MAX_IO) as usize);
    match crate::user::write(buf, &kept[..n]) {
        Ok(()) => kept.len() as i64,
        Err(e) => e,
    }
}

fn net_info(buf: u64, len: u64) -> i64 {
    if !crate::net::stack::configured() {
        return -ENODEV;
    }
    let words = crate::net::stack::info();
    if len < (words.len() * 8) as u64 {
        return -EINVAL;
    }
    copy_words_to_user(buf, &words)
}

fn vcpu_trace(buf: u64, len: u64) -> i64 {
    let csv = sched::vcpu_trace_csv();
    // Whole lines only, so a short buffer still gets well-formed CSV.
    let mut n = csv.len().min(len.min(MAX_IO) as usize);
    if n < csv.len() {
        n = csv.as_bytes()[..n].iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
    }
    match crate::user::write(buf, &csv.as_bytes()[..n]) {
        Ok(()) => n as i64,
        Err(e) => e,
    }
}

/// mmap(2) flags questv reads (Linux values); the others (MAP_NORESERVE, MAP_STACK, MAP_POPULATE, ...) are
/// accepted and change nothing.
const MAP_SHARED: u64 = 0x01;
const MAP_TYPE: u64 = 0x03;
const MAP_FIXED: u64 = 0x10;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
const MADV_DONTNEED: u64 = 4;

/// getrandom(2): bytes from the TSC stirred through xorshift (`proc::random_bytes`), the same source as
/// AT_RANDOM; not cryptographic. Never blocks, so GRND_NONBLOCK changes nothing.
fn getrandom(buf: u64, len: u64, flags: u64) -> i64 {
    if !crate::linux_abi::getrandom_flags_ok(flags) {
        return -EINVAL;
    }
    let len = len.min(MAX_IO);
    let mut bytes = vec![0u8; len as usize];
    for chunk in bytes.chunks_mut(16) {
        let r = proc::random_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    match crate::user::write(buf, &bytes) {
        Ok(()) => len as i64,
        Err(e) => e,
    }
}

/// sysinfo(2): uptime, memory (the frame allocator's), the process count.
fn sysinfo(buf: u64) -> i64 {
    let uptime = crate::time::cycles_to_ns(cpu::rdtsc()) / 1_000_000_000;
    let free = crate::mm::kmem::free_frames() * PAGE_SIZE;
    let total = crate::mm::kmem::usable_bytes().max(free);
    let b = crate::linux_abi::sysinfo(uptime, total, free, proc::process_count() as u16);
    match crate::user::write(buf, &b) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

/// prlimit64(2) and getrlimit(2): the limits questv has (`linux_abi::rlimit`) for the caller (pid 0 or its
/// own) or any other process (they are the same for all). Changing a limit is not implemented yet: a new
/// limit equal to the current one is accepted, another one is ENOSYS, named once on the console.
fn prlimit64(pid: u64, resource: u64, new: u64, old: u64) -> i64 {
    if pid != 0 && !proc::exists(pid as u32) {
        return -ESRCH;
    }
    let Some(now) = crate::linux_abi::rlimit(resource, crate::mm::uspace::STACK_MAX, proc::MAX_PROCS as u64) else { return -EINVAL };
    if new != 0 {
        let mut b = [0u8; 16];
        if let Err(e) = crate::user::read(new, &mut b) {
            return e;
        }
        let (soft, hard) = (u64::from_le_bytes(b[..8].try_into().unwrap()), u64::from_le_bytes(b[8..].try_into().unwrap()));
        if soft > hard {
            return -EINVAL;
        }
        if (soft, hard) != now {
            log_once(&RLIMIT_LOGGED, format_args!("syscall prlimit64 (302) changing a limit not implemented"));
            return -ENOSYS;
        }
    }
    if old == 0 {
        return 0;
    }
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&now.0.to_le_bytes());
    b[8..].copy_from_slice(&now.1.to_le_bytes());
    match crate::user::write(old, &b) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

static RLIMIT_LOGGED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// uname(2). questv answers as the Linux ABI it implements (sysname "Linux", as other second
/// implementations do, so programs that check it run), with its own name as the node and in the release.
fn uname(buf: u64) -> i64 {
    let version = if crate::sandbox::id().is_some() { "#1 questv (sandbox)" } else { "#1 questv (smp)" };
    let u = crate::linux_abi::utsname(["Linux", "questv", "6.1.0-questv", version, "x86_64", "(none)"]);
    match crate::user::write(buf, &u) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

/// arch_prctl(2): the thread's FS and GS bases (where C libraries keep the thread pointer).
fn arch_prctl(code: u64, addr: u64) -> i64 {
    const ARCH_SET_GS: u64 = 0x1001;
    const ARCH_SET_FS: u64 = 0x1002;
    const ARCH_GET_FS: u64 = 0x1003;
    const ARCH_GET_GS: u64 = 0x1004;
    match code {
        ARCH_SET_FS | ARCH_SET_GS if !cpu::is_canonical(addr) || addr >= crate::mm::uspace::USER_END => -EPERM,
        ARCH_SET_FS => {
            sched::set_user_tls(Some(addr), None);
            0
        }
        ARCH_SET_GS => {
            sched::set_user_tls(None, Some(addr));
            0
        }
        ARCH_GET_FS | ARCH_GET_GS => {
            let (fs, gs) = sched::user_tls();
            let v = if code == ARCH_GET_FS { fs } else { gs };
            match crate::user::write(addr, &v.to_le_bytes()) {
                Ok(()) => 0,
                Err(e) => e,
            }
        }
        _ => -EINVAL,
    }
}

/// Drop this CPU's cached translations after mappings shrank (one thread per address space today).
fn mmap(addr: u64, len: u64, prot: u64, flags: u64, fd: u64, offset: u64) -> i64 {
    use crate::mm::vma::{Kind, Placement};
    let kind = match flags & MAP_TYPE {
        MAP_PRIVATE => Kind::Private,
        MAP_SHARED => Kind::Shared,
        _ => return -EINVAL,
    };
    if offset % PAGE_SIZE != 0 || prot > 7 {
        return -EINVAL;
    }
    if flags & MAP_ANONYMOUS == 0 {
        // No files yet: the console's descriptors cannot be mapped, every other one is not open.
        return if fd < 3 { -ENODEV } else { -EBADF };
    }
    let placement = if flags & MAP_FIXED_NOREPLACE != 0 {
        Placement::FixedNoReplace(addr)
    } else if flags & MAP_FIXED != 0 {
        Placement::Fixed(addr)
    } else {
        Placement::Hint(addr)
    };
    let r = proc::with_space(|s, m| s.mmap_anonymous(m, placement, len, prot as u32, kind)).unwrap_or(Err(crate::mm::vma::VmaError::NoMemory));
    match r {
        Ok(a) => a as i64,
        Err(e) => -e.errno(),
    }
}

fn munmap(addr: u64, len: u64) -> i64 {
    match proc::with_space(|s, m| s.munmap(m, addr, len)) {
        Some(Ok(())) => 0,
        Some(Err(e)) => -e.errno(),
        None => -ESRCH,
    }
}

fn mremap(old: u64, old_len: u64, new_len: u64, flags: u64, new_addr: u64) -> i64 {
    match proc::with_space(|s, m| s.mremap(m, old, old_len, new_len, flags, new_addr)) {
        Some(Ok(a)) => a as i64,
        Some(Err(e)) => -e.errno(),
        None => -ESRCH,
    }
}

fn mprotect(addr: u64, len: u64, prot: u64) -> i64 {
    if prot > 7 {
        return -EINVAL;
    }
    match proc::with_space(|s, m| s.mprotect(m, addr, len, prot as u32)) {
        Some(Ok(())) => 0,
        Some(Err(e)) => -e.errno(),
        None => -ESRCH,
    }
}

/// madvise(2): MADV_DONTNEED drops private anonymous pages; every other advice is accepted and changes
/// nothing (they are hints), after the argument checks Linux makes.
fn madvise(addr: u64, len: u64, advice: u64) -> i64 {
    if addr % PAGE_SIZE != 0 {
        return -EINVAL;
    }
    if advice != MADV_DONTNEED || len == 0 {
        return 0;
    }
    match proc::with_space(|s, m| s.dont_need(m, addr, len)) {
        Some(Ok(())) => 0,
        Some(Err(e)) => -e.errno(),
        None => -ESRCH,
    }
}

fn nanosleep(req: u64, rem: u64) -> i64 {
    match proc::read_timespec_ns(req) {
        Ok(ns) => sleep_until(u128::from(cpu::rdtsc()) + ns_to_cycles(ns), rem),
        Err(e) => e,
    }
}

fn ns_to_cycles(ns: u128) -> u128 {
    ns * u128::from(crate::time::tsc_hz()) / 1_000_000_000
}

/// Sleep (yielding) until the TSC reaches `deadline`. A deliverable signal ends it early: the time left goes
/// to `rem` (unless 0) and the call returns ERESTARTNOHAND, which is EINTR once the handler runs (nanosleep is
/// never restarted across a handler, SA_RESTART or not).
fn sleep_until(deadline: u128, rem: u64) -> i64 {
    loop {
        let now = u128::from(cpu::rdtsc());
        if now >= deadline {
            return 0;
        }
        if sched::attention_pending() && proc::signal_pending() {
            if rem != 0 {
                let left = (deadline - now) * 1_000_000_000 / u128::from(crate::time::tsc_hz().max(1));
                let r = put_timespec(rem, left as u64);
                if r < 0 {
                    return r;
                }
            }
            return -crate::signal::ERESTARTNOHAND;
        }
        sched::yield_while_waiting();
    }
}

/// clock_nanosleep(2): REALTIME, MONOTONIC, BOOTTIME or TAI; TIMER_ABSTIME for a deadline on that clock.
fn clock_nanosleep(clock: u64, flags: u64, req: u64, rem: u64) -> i64 {
    const TIMER_ABSTIME: u64 = 1;
    if !matches!(clock, 0 | 1 | 7 | 11) {
        // Partial: sleeping on PROCESS_CPUTIME_ID (which Linux allows) is EINVAL here; THREAD_CPUTIME_ID is EINVAL on Linux too.
        return -EINVAL;
    }
    let ns = match proc::read_timespec_ns(req) {
        Ok(ns) => ns,
        Err(e) => return e,
    };
    let now = cpu::rdtsc();
    if flags & TIMER_ABSTIME != 0 {
        let clock_now = u128::from(clock_ns(clock).unwrap_or(0));
        return sleep_until(u128::from(now) + ns_to_cycles(ns.saturating_sub(clock_now)), 0);
    }
    sleep_until(u128::from(now) + ns_to_cycles(ns), rem)
}

/// The clocks clock_gettime(2) knows: the wall clock (REALTIME, its COARSE variant, TAI without leap
/// seconds), time since boot (MONOTONIC, RAW, COARSE, BOOTTIME: questv does not suspend), and the CPU time of
/// the calling process (PROCESS_CPUTIME_ID) and thread (THREAD_CPUTIME_ID). Other clocks (other processes'
/// CPU-time clocks among them): EINVAL.
fn clock_ns(clock: u64) -> Option<u64> {
    let tsc = cpu::rdtsc();
    let since_boot = crate::time::cycles_to_ns(tsc);
    match clock {
        // Without a wall clock (no RTC date), REALTIME counts from boot.
        0 | 5 | 11 => Some(crate::time::realtime_ns(tsc).unwrap_or(since_boot)),
        1 | 4 | 6 | 7 => Some(since_boot),
        2 => proc::process_cpu_cycles().map(crate::time::cycles_to_ns),
        3 => Some(crate::time::cycles_to_ns(sched::current_run_cycles())),
        _ => None,
    }
}

fn put_timespec(ts: u64, ns: u64) -> i64 {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&((ns / 1_000_000_000) as i64).to_le_bytes());
    b[8..].copy_from_slice(&((ns % 1_000_000_000) as i64).to_le_bytes());
    match crate::user::write(ts, &b) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

fn clock_gettime(clock: u64, ts: u64) -> i64 {
    match clock_ns(clock) {
        Some(ns) => put_timespec(ts, ns),
        None => -EINVAL,
    }
}

/// clock_getres(2): every clock counts in TSC cycles, finer than a nanosecond; a NULL result is allowed.
fn clock_getres(clock: u64, ts: u64) -> i64 {
    match clock_ns(clock) {
        None => -EINVAL,
        Some(_) if ts == 0 => 0,
        Some(_) => put_timespec(ts, 1),
    }
}

/// gettimeofday(2): the wall clock in seconds and microseconds; the timezone (obsolete) reads as UTC.
fn gettimeofday(tv: u64, tz: u64) -> i64 {
    let ns = clock_ns(0).unwrap_or(0);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&((ns / 1_000_000_000) as i64).to_le_bytes());
    b[8..].copy_from_slice(&(((ns % 1_000_000_000) / 1000) as i64).to_le_bytes());
    for (addr, bytes) in [(tv, &b[..]), (tz, &[0u8; 8][..])] {
        if addr == 0 {
            continue;
        }
        if let Err(e) = crate::user::write(addr, bytes) {
            return e;
        }
    }
    0
}

/// time(2): seconds of the wall clock, also stored at `at` unless it is NULL.
fn time(at: u64) -> i64 {
    let secs = (clock_ns(0).unwrap_or(0) / 1_000_000_000) as i64;
    if at != 0 {
        if let Err(e) = crate::user::write(at, &secs.to_le_bytes()) {
            return e;
        }
    }
    secs
}

/// Linux sched_setaffinity: run the caller on the lowest online CPU of the mask.
fn set_affinity(pid: u64, size: u64, mask_addr: u64) -> i64 {
    if pid != 0 && pid != u64::from(sched::current_pid()) {
        return -ESRCH;
    }
    if size < 8 {
        return -EINVAL;
    }
    let mut b = [0u8; 8];
    if let Err(e) = crate::user::read(mask_addr, &mut b) {
        return e;
    }
    let mask = u64::from_le_bytes(b);
    let Some(target) = (0..smp::cpu_count().min(64)).find(|&c| mask & (1 << c) != 0 && smp::is_online(c)) else {
        return -EINVAL;
    };
    // Only the calling thread moves (affinity is per thread on Linux); it stays placed there.
    if target != percpu::cpu_index() {
        sched::migrate_current(target);
    } else {
        sched::pin_current();
    }
    0
}

/// getresuid(2) / getresgid(2): real, effective and saved ids, all 0 (one user).
fn getres_ids(r: u64, e: u64, saved: u64) -> i64 {
    for addr in [r, e, saved] {
        if let Err(e) = crate::user::write(addr, &0u32.to_le_bytes()) {
            return e;
        }
    }
    0
}

/// sched_getaffinity(2): the CPUs the caller may run on: its own CPU once sched_setaffinity placed it there,
/// else every online CPU of its kernel (glibc's and musl's `sysconf(_SC_NPROCESSORS_ONLN)` count them here).
/// Returns the bytes written (8), as the system call does; `EINVAL` for a size below 8 or not a multiple of 8,
/// `ESRCH` for another process that does not exist (another existing process is answered for as the caller).
fn get_affinity(pid: u64, size: u64, mask_addr: u64) -> i64 {
    if pid != 0 && !proc::exists(pid as u32) {
        return -ESRCH;
    }
    if size < 8 || size % 8 != 0 {
        return -EINVAL;
    }
    let mask = if sched::current_pinned() {
        1u64 << percpu::cpu_index()
    } else {
        (0..smp::cpu_count().min(64)).filter(|&c| smp::is_online(c)).fold(0u64, |m, c| m | 1 << c)
    };
    match crate::user::write(mask_addr, &mask.to_le_bytes()) {
        Ok(()) => 8,
        Err(e) => e,
    }
}

fn getcpu(cpu_addr: u64) -> i64 {
    if cpu_addr == 0 {
        return 0;
    }
    let c = percpu::cpu_index();
    match crate::user::write(cpu_addr, &c.to_le_bytes()) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

const CHAN_NOTIFY: u64 = 1;

fn chan_send(h: u64, buf: u64, len: u64, flags: u64) -> i64 {
    if len > crate::channel::ring::SLOT_PAYLOAD as u64 || h > u64::from(u32::MAX) {
        return -EINVAL;
    }
    // Straight from user memory into the ring slot; a bad buffer sends nothing.
    let fill = |slot: &mut [u8]| match proc::with_space(|s, m| s.copy_from_user(m, buf, slot)) {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(i64::from(e)),
        None => Err(-ESRCH),
    };
    chan::send_with(h as u32, len as usize, flags & CHAN_NOTIFY != 0, fill).map_or_else(|e| e, |()| len as i64)
}

fn chan_recv(h: u64, buf: u64, len: u64, timeout_ns: u64, flags: u64) -> i64 {
    if h > u64::from(u32::MAX) {
        return -EINVAL;
    }
    // Straight from the ring slot into user memory, checksumming what the process got. A message longer than
    // `len`, or a bad buffer, fails the call and leaves the message queued.
    let deliver = |payload: &[u8]| {
        if payload.len() as u64 > len {
            return Err(-EINVAL);
        }
        let mut sum = crate::channel::ring::Hasher::default();
        let copied = proc::with_space(|s, m| {
            s.with_user_chunks(m, buf, payload.len(), true, |dst, at| {
                dst.copy_from_slice(&payload[at..at + dst.len()]);
                sum.update(dst);
            })
        });
        match copied {
            Some(Ok(())) => Ok(sum.finish()),
            Some(Err(e)) => Err(i64::from(e)),
            None => Err(-ESRCH),
        }
    };
    chan::recv_with(h as u32, timeout_ns, flags & CHAN_NOTIFY != 0, deliver).map_or_else(|e| e, |n| n as i64)
}

/// Run a file system call with the calling process's descriptors and working directory.
fn with_fs(f: impl FnOnce(&crate::sync::IrqSpinlock<crate::fs::files::FsState>) -> i64) -> i64 {
    match proc::current_fs() {
        Some(st) => f(&st),
        None => -ESRCH,
    }
}

/// A write that found no reader (EPIPE) also raises SIGPIPE at the writing thread, as on Linux.
fn broken_pipe(r: i64) -> i64 {
    if r == -EPIPE {
        proc::raise_sigpipe();
    }
    r
}

/// A `struct timespec` timeout (NULL: none), in nanoseconds.
fn fs_timespec(addr: u64) -> Result<Option<u64>, i64> {
    timeout_arg(addr, 1)
}

/// select(2)'s `struct timeval` timeout (NULL: none), in nanoseconds.
fn timeval_arg(addr: u64) -> Result<Option<u64>, i64> {
    timeout_arg(addr, 1000)
}

/// A timeout of two 64-bit words, seconds and a fraction in units of `ns_per_unit` nanoseconds (timespec: 1,
/// timeval: 1000); EINVAL for a negative or out-of-range one.
fn timeout_arg(addr: u64, ns_per_unit: u64) -> Result<Option<u64>, i64> {
    if addr == 0 {
        return Ok(None);
    }
    let b: [u8; 16] = crate::user::read_array(addr)?;
    let (sec, frac) = (i64::from_le_bytes(b[..8].try_into().unwrap()), i64::from_le_bytes(b[8..].try_into().unwrap()));
    if sec < 0 || frac < 0 || frac as u64 >= 1_000_000_000 / ns_per_unit {
        return Err(-EINVAL);
    }
    Ok(Some((sec as u64).saturating_mul(1_000_000_000).saturating_add(frac as u64 * ns_per_unit)))
}
