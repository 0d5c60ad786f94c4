//! System call torture test: bad pointers, bad numbers, waitpid on strangers, a hostile ELF, faulting children,
//! memory exhaustion and recovery, and thousands of random system calls. The kernel must answer each with an
//! error code (or kill only the offending process) and keep running. Prints `RESULT torture ...` lines; exits
//! 0 only if every check held.
#![no_std]
#![no_main]

use questv_libc_shim::errno::*;
use questv_libc_shim::{self as sys, nr, println, syscall, syscall6, wait};
use questv_userland::Rng;

questv_libc_shim::entry!(main);

struct Checks {
    run: u32,
    failed: u32,
}

impl Checks {
    fn check(&mut self, ok: bool, what: &str, got: i64) {
        self.run += 1;
        if !ok {
            self.failed += 1;
            println!("torture: FAILED {} (got {})", what, got);
        }
    }
    fn expect(&mut self, got: i64, want: i64, what: &str) {
        self.check(got == want, what, got);
    }
}

const PROT_READ: u64 = 1;
const PROT_WRITE: u64 = 2;
const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
const PAGE: u64 = 4096;

fn mmap(addr: u64, len: u64, prot: u64, flags: u64) -> i64 {
    syscall6(nr::MMAP, [addr, len, prot, flags, u64::MAX, 0])
}

/// Run `f` in a child and return how it ended (its wait status).
fn in_child(f: impl FnOnce()) -> i32 {
    let pid = sys::fork();
    if pid == 0 {
        f();
        sys::exit(0);
    }
    sys::waitpid(pid, 0).1
}

fn mappings(c: &mut Checks) {
    let (rw, anon) = (PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    c.expect(mmap(0, 0, rw, anon), -EINVAL, "mmap of length 0");
    c.expect(mmap(0, PAGE, rw, MAP_ANONYMOUS), -EINVAL, "mmap neither shared nor private");
    c.expect(mmap(0, PAGE, rw, MAP_SHARED | MAP_PRIVATE | MAP_ANONYMOUS), -EINVAL, "mmap both shared and private");
    c.expect(syscall6(nr::MMAP, [0, PAGE, rw, MAP_PRIVATE, 5, 0]), -EBADF, "mmap of a descriptor that is not open");
    c.expect(syscall6(nr::MMAP, [0, PAGE, rw, anon, u64::MAX, 123]), -EINVAL, "mmap with an unaligned offset");
    c.expect(mmap(0, u64::MAX, rw, anon), -EINVAL, "mmap of an absurd length");
    c.expect(mmap(0x1234, PAGE, rw, anon | MAP_FIXED), -EINVAL, "MAP_FIXED at an unaligned address");
    let a = mmap(0, 3 * PAGE, rw, anon);
    c.check(a > 0 && a as u64 % PAGE == 0, "mmap of three pages", a);
    if a <= 0 {
        return;
    }
    let a = a as u64;
    // SAFETY (these pointer accesses): [a, a + 3 pages) was just mapped read-write.
    unsafe { core::ptr::write_volatile((a + PAGE + 8) as *mut u64, 0x5151) };
    c.expect(unsafe { core::ptr::read_volatile((a + 2 * PAGE) as *const u64) } as i64, 0, "fresh anonymous memory reads zero");
    c.expect(mmap(a + PAGE, PAGE, rw, anon | MAP_FIXED_NOREPLACE), -17, "MAP_FIXED_NOREPLACE over a mapping (EEXIST)");
    c.expect(mmap(a, PAGE, rw, anon | MAP_FIXED), a as i64, "MAP_FIXED replaces a mapping");
    c.expect(unsafe { core::ptr::read_volatile((a + PAGE + 8) as *const u64) } as i64, 0x5151, "MAP_FIXED leaves its neighbours alone");
    // A hole in the middle: touching it is SIGSEGV; mprotect across it is ENOMEM.
    c.expect(syscall(nr::MUNMAP, a + PAGE, PAGE, 0), 0, "munmap of the middle page");
    c.expect(syscall(nr::MUNMAP, a + 1, PAGE, 0), -EINVAL, "munmap at an unaligned address");
    let st = in_child(|| unsafe { core::ptr::write_volatile((a + PAGE) as *mut u64, 1) });
    c.check(!wait::exited(st) && wait::term_signal(st) == 11, "a write into an unmapped hole is SIGSEGV", i64::from(st));
    c.expect(syscall(nr::MPROTECT, a, 3 * PAGE, PROT_READ), -ENOMEM, "mprotect across a hole (ENOMEM)");
    c.expect(syscall(nr::MPROTECT, a + 2 * PAGE, PAGE, PROT_READ), 0, "mprotect to read-only");
    let st = in_child(|| unsafe { core::ptr::write_volatile((a + 2 * PAGE) as *mut u64, 1) });
    c.check(!wait::exited(st) && wait::term_signal(st) == 11, "a write to read-only memory is SIGSEGV", i64::from(st));
    c.expect(syscall(nr::WRITE, 1, a + 2 * PAGE, 0), 0, "read-only memory is still readable by the kernel");
    c.expect(syscall(nr::CLOCK_GETTIME, 1, a + 2 * PAGE, 0), -EFAULT, "the kernel does not write read-only memory");
    c.expect(syscall(nr::MPROTECT, a + 2 * PAGE, PAGE, 0), 0, "mprotect to PROT_NONE");
    let st = in_child(|| {
        let _ = unsafe { core::ptr::read_volatile((a + 2 * PAGE) as *const u64) };
    });
    c.check(!wait::exited(st) && wait::term_signal(st) == 11, "a read of PROT_NONE memory is SIGSEGV", i64::from(st));
    c.expect(syscall(nr::MPROTECT, a + 1, PAGE, PROT_READ), -EINVAL, "mprotect at an unaligned address");
    // MADV_DONTNEED: private pages read zero again.
    unsafe { core::ptr::write_volatile(a as *mut u64, 77) };
    c.expect(syscall(nr::MADVISE, a, PAGE, 4), 0, "madvise(MADV_DONTNEED)");
    c.expect(unsafe { core::ptr::read_volatile(a as *const u64) } as i64, 0, "after MADV_DONTNEED the page reads zero");
    c.expect(syscall(nr::MUNMAP, a, 3 * PAGE, 0), 0, "munmap of the whole range (holes and all)");
    // Shared anonymous memory is shared with a child; private memory is not.
    let s = mmap(0, PAGE, rw, MAP_SHARED | MAP_ANONYMOUS);
    let p = mmap(0, PAGE, rw, anon);
    c.check(s > 0 && p > 0, "shared and private mappings", s.min(p));
    if s > 0 && p > 0 {
        let st = in_child(|| unsafe {
            core::ptr::write_volatile(s as *mut u64, 0xC41D);
            core::ptr::write_volatile(p as *mut u64, 0xC41D);
        });
        c.check(wait::exited(st), "the child wrote both", i64::from(st));
        c.expect(unsafe { core::ptr::read_volatile(s as *const u64) } as i64, 0xC41D, "the parent sees the child's write to shared memory");
        c.expect(unsafe { core::ptr::read_volatile(p as *const u64) } as i64, 0, "but not to private memory");
        syscall(nr::MUNMAP, s as u64, PAGE, 0);
        syscall(nr::MUNMAP, p as u64, PAGE, 0);
    }
    // A mapping far larger than memory succeeds: pages come on first touch.
    let free_before = syscall(nr::QUESTV_FREE_FRAMES, 0, 0, 0);
    let big = mmap(0, 64 << 30, rw, MAP_PRIVATE | MAP_ANONYMOUS);
    c.check(big > 0, "a 64 GiB anonymous mapping", big);
    if big > 0 {
        unsafe { core::ptr::write_volatile((big as u64 + (32 << 30)) as *mut u64, 1) };
        let used = free_before - syscall(nr::QUESTV_FREE_FRAMES, 0, 0, 0);
        c.check(used < 64, "touching one page of it takes a few frames, not 64 GiB", used);
        c.expect(syscall(nr::MUNMAP, big as u64, 64 << 30, 0), 0, "munmap of the large mapping");
    }
}

/// arch_prctl(2) and set_tid_address(2), as C libraries use them at start-up.
fn thread_pointer(c: &mut Checks) {
    const ARCH_SET_FS: u64 = 0x1002;
    const ARCH_GET_FS: u64 = 0x1003;
    let cell: u64 = 0x7157_7157;
    let at = &cell as *const u64 as u64;
    c.expect(syscall(nr::ARCH_PRCTL, ARCH_SET_FS, at, 0), 0, "arch_prctl(ARCH_SET_FS)");
    let via_fs: u64;
    // SAFETY: FS now points at `cell`, a live u64 on this stack.
    unsafe { core::arch::asm!("mov {}, fs:[0]", out(reg) via_fs, options(nostack, readonly)) };
    c.expect(via_fs as i64, 0x7157_7157, "a load through FS reads what FS points at");
    let mut got = 0u64;
    c.expect(syscall(nr::ARCH_PRCTL, ARCH_GET_FS, &mut got as *mut u64 as u64, 0), 0, "arch_prctl(ARCH_GET_FS)");
    c.expect(got as i64, at as i64, "ARCH_GET_FS returns what was set");
    // Across a switch (a child runs meanwhile) and into the child.
    let st = in_child(|| {
        let mut g = 0u64;
        syscall(nr::ARCH_PRCTL, ARCH_GET_FS, &mut g as *mut u64 as u64, 0);
        if g != at {
            sys::exit(3);
        }
    });
    c.check(wait::exited(st) && wait::exit_status(st) == 0, "a forked child inherits the FS base", i64::from(st));
    got = 0;
    syscall(nr::ARCH_PRCTL, ARCH_GET_FS, &mut got as *mut u64 as u64, 0);
    c.expect(got as i64, at as i64, "the FS base survives a switch to another process");
    c.expect(syscall(nr::ARCH_PRCTL, ARCH_SET_FS, 0x8000_0000_0000_0000, 0), -EPERM, "a non-canonical FS base (EPERM)");
    c.expect(syscall(nr::ARCH_PRCTL, 0x9999, 0, 0), -EINVAL, "an unknown arch_prctl code");
    c.expect(syscall(nr::ARCH_PRCTL, ARCH_GET_FS, 8, 0), -EFAULT, "ARCH_GET_FS to a bad pointer");
    c.expect(syscall(nr::ARCH_PRCTL, ARCH_SET_FS, 0, 0), 0, "FS base back to 0");
    c.expect(syscall(nr::SET_TID_ADDRESS, 0, 0, 0), sys::getpid(), "set_tid_address returns the caller's thread id");
}

/// writev/readv, ioctl on the console, uname and the identity calls.
fn console_calls(c: &mut Checks) {
    let (a, b) = (b"RESULT torture_writev ", b"pieces=2\n");
    let iov: [u64; 4] = [a.as_ptr() as u64, a.len() as u64, b.as_ptr() as u64, b.len() as u64];
    c.expect(syscall(nr::WRITEV, 1, iov.as_ptr() as u64, 2), (a.len() + b.len()) as i64, "writev of two pieces");
    c.expect(syscall(nr::WRITEV, 1, iov.as_ptr() as u64, 0), 0, "writev of nothing");
    c.expect(syscall(nr::WRITEV, 1, iov.as_ptr() as u64, 1025), -EINVAL, "writev of more than IOV_MAX pieces");
    c.expect(syscall(nr::WRITEV, 1, 8, 2), -EFAULT, "writev with a bad iovec array");
    c.expect(syscall(nr::WRITEV, 77, iov.as_ptr() as u64, 2), -EBADF, "writev to a descriptor that is not open");
    let huge: [u64; 4] = [a.as_ptr() as u64, u64::MAX / 2, b.as_ptr() as u64, u64::MAX / 2];
    c.expect(syscall(nr::WRITEV, 1, huge.as_ptr() as u64, 2), -EINVAL, "writev whose lengths overflow ssize_t");
    let mut ws = [0u16; 4];
    c.expect(syscall(nr::IOCTL, 1, 0x5413, ws.as_mut_ptr() as u64), 0, "ioctl(TIOCGWINSZ) on the console");
    c.check(ws[0] == 24 && ws[1] == 80, "the console is 24x80", i64::from(ws[0]));
    let mut termios = [0u8; 36];
    c.expect(syscall(nr::IOCTL, 0, 0x5401, termios.as_mut_ptr() as u64), 0, "ioctl(TCGETS) on the console");
    c.expect(syscall(nr::IOCTL, 1, 0x1234, 0), -25, "an unknown ioctl is ENOTTY");
    c.expect(syscall(nr::IOCTL, 7, 0x5401, termios.as_mut_ptr() as u64), -EBADF, "ioctl on a descriptor that is not open");
    c.expect(syscall(nr::IOCTL, 1, 0x5413, 8), -EFAULT, "TIOCGWINSZ to a bad pointer");
    let mut u = [0u8; 390];
    c.expect(syscall(nr::UNAME, u.as_mut_ptr() as u64, 0, 0), 0, "uname");
    c.check(&u[..6] == b"Linux\0" && &u[260..267] == b"x86_64\0", "uname names the ABI and the machine", i64::from(u[0]));
    c.expect(syscall(nr::UNAME, 8, 0, 0), -EFAULT, "uname to a bad pointer");
    c.expect(syscall(nr::GETUID, 0, 0, 0) | syscall(nr::GETEUID, 0, 0, 0) | syscall(nr::GETGID, 0, 0, 0) | syscall(nr::GETEGID, 0, 0, 0), 0, "uid and gid 0");
    c.expect(syscall(nr::GETTID, 0, 0, 0), sys::getpid(), "gettid is the pid of a one-thread process");
}

/// The clocks: the wall clock's three views agree, the monotonic one counts from boot, bad clocks and
/// pointers are refused. Prints the wall clock for the test to compare with the host's.
/// getrandom(2), sysinfo(2), prlimit64(2) and the stat calls on the console, as C libraries call them at
/// start-up (each check also holds on Linux).
fn identity_calls(c: &mut Checks) {
    let mut r = [0u8; 64];
    c.expect(syscall(nr::GETRANDOM, r.as_mut_ptr() as u64, 64, 0), 64, "getrandom of 64 bytes");
    c.check(r.iter().any(|&b| b != 0), "getrandom gave bytes", 0);
    c.expect(syscall(nr::GETRANDOM, r.as_mut_ptr() as u64, 8, 6), -EINVAL, "getrandom with GRND_RANDOM|GRND_INSECURE");
    c.expect(syscall(nr::GETRANDOM, 8, 8, 0), -EFAULT, "getrandom to a bad pointer");
    let mut si = [0u64; 14];
    c.expect(syscall(nr::SYSINFO, si.as_mut_ptr() as u64, 0, 0), 0, "sysinfo");
    c.check(si[4] > 0 && si[5] <= si[4] && (si[10] & 0xFFFF) >= 1, "sysinfo: RAM, free RAM, processes", si[4] as i64);
    c.expect(syscall(nr::SYSINFO, 8, 0, 0), -EFAULT, "sysinfo to a bad pointer");
    let mut lim = [0u64; 2];
    c.expect(syscall6(nr::PRLIMIT64, [0, 3, 0, lim.as_mut_ptr() as u64, 0, 0]), 0, "prlimit64(RLIMIT_STACK)");
    c.check(lim[0] >= 1 << 20 && lim[0] <= lim[1], "a stack limit of at least 1 MiB, soft <= hard", lim[0] as i64);
    c.expect(syscall6(nr::PRLIMIT64, [0, 99, 0, lim.as_mut_ptr() as u64, 0, 0]), -EINVAL, "prlimit64 of an unknown resource");
    c.expect(syscall6(nr::PRLIMIT64, [999_999, 3, 0, lim.as_mut_ptr() as u64, 0, 0]), -ESRCH, "prlimit64 of a process that does not exist");
    c.expect(syscall(nr::GETRLIMIT, 7, lim.as_mut_ptr() as u64, 0), 0, "getrlimit(RLIMIT_NOFILE)");
    c.expect(syscall(nr::GETRLIMIT, 7, 8, 0), -EFAULT, "getrlimit to a bad pointer");
    let mut st = [0u64; 18];
    c.expect(syscall(nr::FSTAT, 1, st.as_mut_ptr() as u64, 0), 0, "fstat of stdout");
    c.check((st[3] as u32) & 0o170000 == 0o020000, "stdout is a character device", st[3] as i64);
    c.expect(syscall(nr::FSTAT, 1_000, st.as_mut_ptr() as u64, 0), -EBADF, "fstat of a descriptor that is not open");
    c.expect(syscall(nr::FSTAT, 1, 8, 0), -EFAULT, "fstat to a bad pointer");
    let empty = b"\0";
    c.expect(syscall6(nr::NEWFSTATAT, [1, empty.as_ptr() as u64, st.as_mut_ptr() as u64, 0x1000, 0, 0]), 0, "newfstatat(AT_EMPTY_PATH)");
    c.expect(syscall6(nr::NEWFSTATAT, [1, empty.as_ptr() as u64, st.as_mut_ptr() as u64, 0, 0, 0]), -ENOENT, "newfstatat of an empty path");
    c.expect(syscall6(nr::NEWFSTATAT, [1, 8, st.as_mut_ptr() as u64, 0, 0, 0]), -EFAULT, "newfstatat of a bad path pointer");
    c.expect(syscall6(nr::NEWFSTATAT, [1, empty.as_ptr() as u64, st.as_mut_ptr() as u64, 0x8000_0000, 0, 0]), -EINVAL, "newfstatat with unknown flags");
    let missing = b"/no/such/file\0";
    c.expect(syscall(nr::STAT, missing.as_ptr() as u64, st.as_mut_ptr() as u64, 0), -ENOENT, "stat of a missing file");
}

fn clocks(c: &mut Checks) {
    let mut ts = [0i64; 2];
    c.expect(syscall(nr::CLOCK_GETTIME, 0, ts.as_mut_ptr() as u64, 0), 0, "clock_gettime(CLOCK_REALTIME)");
    let real = ts[0];
    let mut tv = [0i64; 2];
    c.expect(syscall(nr::GETTIMEOFDAY, tv.as_mut_ptr() as u64, 0, 0), 0, "gettimeofday");
    let t = syscall(nr::TIME, 0, 0, 0);
    c.check((tv[0] - real).abs() <= 1 && (t - real).abs() <= 1 && tv[1] < 1_000_000, "the wall clock's views agree", tv[0] - real);
    let mut stored = 0i64;
    c.expect(syscall(nr::TIME, &mut stored as *mut i64 as u64, 0, 0), stored, "time stores what it returns");
    c.expect(syscall(nr::CLOCK_GETTIME, 1, ts.as_mut_ptr() as u64, 0), 0, "clock_gettime(CLOCK_MONOTONIC)");
    let mono = ts[0];
    c.check(mono < real, "the monotonic clock counts from boot, the wall clock from 1970", mono);
    c.expect(syscall(nr::CLOCK_GETRES, 1, ts.as_mut_ptr() as u64, 0), 0, "clock_getres");
    c.check(ts[0] == 0 && ts[1] >= 1, "a resolution finer than a second", ts[1]);
    c.expect(syscall(nr::CLOCK_GETRES, 1, 0, 0), 0, "clock_getres with a NULL result");
    c.expect(syscall(nr::CLOCK_GETRES, 99, 0, 0), -EINVAL, "clock_getres of a bad clock");
    c.expect(syscall(nr::GETTIMEOFDAY, 8, 0, 0), -EFAULT, "gettimeofday to a bad pointer");
    println!("RESULT torture_time realtime_s={} monotonic_s={}", real, mono);
}

const IMPLEMENTED: [u64; 101] = [
    nr::READ, nr::WRITE, nr::MMAP, nr::MUNMAP, nr::BRK, nr::SCHED_YIELD, nr::NANOSLEEP, nr::GETPID, nr::FORK,
    nr::EXECVE, nr::EXIT, nr::WAIT4, nr::GETPPID, nr::SCHED_SETAFFINITY, nr::CLOCK_GETTIME, nr::GETCPU,
    nr::QUESTV_CYCLES, nr::QUESTV_FREE_FRAMES, nr::QUESTV_NCPUS, nr::QUESTV_SANDBOX, nr::QUESTV_VMEXITS,
    nr::SYSINFO, nr::PRLIMIT64, nr::GETRLIMIT, nr::SET_ROBUST_LIST, nr::FSTAT, nr::NEWFSTATAT,
    nr::STAT, nr::LSTAT,
    nr::RT_SIGACTION, nr::RT_SIGPROCMASK, nr::RT_SIGPENDING, nr::RT_SIGTIMEDWAIT, nr::SIGALTSTACK, nr::KILL,
    nr::TKILL, nr::TGKILL, nr::ALARM, nr::SETITIMER, nr::GETITIMER, nr::SETPGID, nr::GETPGID, nr::GETPGRP,
    nr::SETSID, nr::GETSID, nr::CLOCK_NANOSLEEP, nr::FUTEX, nr::SET_TID_ADDRESS, nr::GETTID,
    nr::WAITID, nr::GETRUSAGE, nr::TIMES, nr::GETRESUID, nr::GETRESGID, nr::SCHED_GETAFFINITY,
    // Files: paths are often real ones under /tmp/fz, descriptors 3 and up (`tame`).
    nr::OPEN, nr::OPENAT, nr::CREAT, nr::CLOSE, nr::LSEEK, nr::PREAD64, nr::PWRITE64, nr::ACCESS, nr::FACCESSAT,
    nr::PIPE2, nr::DUP, nr::DUP2, nr::DUP3, nr::FCNTL, nr::FSYNC, nr::TRUNCATE, nr::FTRUNCATE, nr::GETCWD,
    nr::CHDIR, nr::FCHDIR, nr::RENAME, nr::RENAMEAT2, nr::MKDIR, nr::MKDIRAT, nr::RMDIR, nr::UNLINK,
    nr::UNLINKAT, nr::LINK, nr::LINKAT, nr::SYMLINK, nr::SYMLINKAT, nr::READLINK, nr::READLINKAT, nr::CHMOD,
    nr::FCHMOD, nr::FCHMODAT, nr::UMASK, nr::GETDENTS64, nr::UTIMENSAT, nr::STATX, nr::STATFS, nr::FSTATFS,
    nr::POLL, nr::SELECT, nr::IOCTL, nr::WRITEV,
];

/// Real paths for the file calls (NUL-terminated): files, a directory, a link, a parent that is a file,
/// a missing parent, `..`.
const PATHS: [&[u8]; 9] = [
    b"/tmp/fz/a\0", b"/tmp/fz/b\0", b"/tmp/fz/d\0", b"/tmp/fz/d/x\0", b"/tmp/fz/l\0", b"/tmp/fz\0",
    b"/tmp/fz/../fz/a\0", b"/tmp/fz/a/x\0", b"/tmp/fz/none/x\0",
];
/// A zero timeout (timeval or timespec) for poll and select, so that a random call never waits.
static ZERO_TIME: [u64; 2] = [0, 0];

/// Keep a random call from ending, stalling or overwriting the fuzzer itself while its argument checks still
/// run: signals are only probed (signal 0, or a number past 64), dispositions only read or read from bad
/// addresses, timers only disarmed or read from bad addresses, waits for signals get a bad timeout (EFAULT,
/// never a wait; futex waits likewise; a channel receive waits 1 ms at most), and calls that fill as many bytes as asked (vcpu_trace, state_load) ask for at most the
/// scratch buffer's 512 bytes less the offset into it.
fn tame(n: u64, a: &mut [u64; 6], rng: &mut Rng) {
    let probe = |rng: &mut Rng| if rng.next() % 2 == 0 { 0 } else { 65 + rng.next() % 1000 };
    match n {
        nr::KILL | nr::TKILL => a[1] = probe(rng),
        nr::TGKILL => a[2] = probe(rng),
        nr::RT_SIGACTION | nr::SETITIMER => a[1] = if rng.next() % 2 == 0 { 0 } else { BAD[1 + (rng.next() % (BAD.len() as u64 - 1)) as usize] },
        nr::ALARM => a[0] = 0,
        nr::RT_SIGTIMEDWAIT => a[2] = BAD[1 + (rng.next() % (BAD.len() as u64 - 1)) as usize],
        nr::VCPU_TRACE | nr::STATE_LOAD => a[1] %= 504,
        // A futex wait gets a bad timeout (EFAULT before it could wait forever); for the requeue operations
        // the same argument is a count.
        nr::FUTEX => a[3] = BAD[1 + (rng.next() % (BAD.len() as u64 - 1)) as usize],
        // A channel receive waits up to its timeout for a message nobody sends: at most 1 ms here.
        nr::CHAN_RECV => a[3] %= 1_000_000,
        // Waits for descriptors never wait; pipes never block a writer (nobody reads them).
        nr::POLL => a[2] = 0,
        nr::PPOLL => a[2] = ZERO_TIME.as_ptr() as u64,
        nr::SELECT | nr::PSELECT6 => a[4] = ZERO_TIME.as_ptr() as u64,
        nr::PIPE2 => a[1] |= O_NONBLOCK,
        _ => {}
    }
    // Calls that fill as many bytes as asked get at most the scratch buffer (a file may have grown big).
    match n {
        nr::PREAD64 | nr::GETDENTS64 | nr::READLINK => a[2] %= 504,
        nr::READLINKAT => a[3] %= 504,
        nr::GETCWD => a[1] %= 504,
        nr::POLL => a[1] %= 63,
        _ => {}
    }
    // The console's descriptors (0-2) stay as they are (a random close, dup2 over them or TCSETS would take
    // the fuzzer's own output away): descriptor arguments are 3 and up.
    let fd = |x: u64| 3 + x % 29;
    match n {
        nr::CLOSE | nr::IOCTL | nr::FCNTL | nr::FTRUNCATE | nr::FCHMOD | nr::GETDENTS64 | nr::LSEEK | nr::PREAD64
        | nr::PWRITE64 | nr::FSYNC | nr::FDATASYNC | nr::FSTATFS | nr::FCHDIR | nr::DUP | nr::FCHOWN => a[0] = fd(a[0]),
        nr::DUP2 | nr::DUP3 => (a[0], a[1]) = (fd(a[0]), fd(a[1])),
        _ => {}
    }
    if n == nr::FCNTL && a[1] == 4 {
        a[2] |= O_NONBLOCK; // F_SETFL keeps pipes non-blocking
    }
    // Paths: half the time a real one (else whatever the argument was: random, small, bad, scratch).
    let path_args: &[usize] = match n {
        nr::OPEN | nr::CREAT | nr::ACCESS | nr::TRUNCATE | nr::CHDIR | nr::MKDIR | nr::RMDIR | nr::UNLINK | nr::READLINK
        | nr::CHMOD | nr::CHOWN | nr::LCHOWN | nr::STAT | nr::LSTAT | nr::STATFS => &[0],
        nr::RENAME | nr::LINK | nr::SYMLINK => &[0, 1],
        nr::OPENAT | nr::MKDIRAT | nr::UNLINKAT | nr::READLINKAT | nr::FCHMODAT | nr::FACCESSAT | nr::FACCESSAT2
        | nr::UTIMENSAT | nr::NEWFSTATAT | nr::STATX | nr::FCHOWNAT => &[1],
        nr::RENAMEAT | nr::RENAMEAT2 | nr::LINKAT => &[1, 3],
        nr::SYMLINKAT => &[0, 2],
        _ => &[],
    };
    for &i in path_args {
        if rng.next() % 2 == 0 {
            a[i] = PATHS[(rng.next() % PATHS.len() as u64) as usize].as_ptr() as u64;
        }
    }
    // The *at calls' directory: usually the working directory.
    if !path_args.is_empty() && n != nr::SYMLINKAT && path_args[0] == 1 && rng.next() % 2 == 0 {
        a[0] = AT_FDCWD;
        if matches!(n, nr::RENAMEAT | nr::RENAMEAT2 | nr::LINKAT) {
            a[2] = AT_FDCWD;
        }
    }
}

const O_NONBLOCK: u64 = 0o4000;
const AT_FDCWD: u64 = -100i64 as u64;

/// Addresses no process may hand to the kernel: null page, below the lowest mappable address (64 KiB), the
/// kernel image and its mapping of physical memory (upper half), non-canonical, the top of user space, the
/// last byte of the address space.
const BAD: [u64; 9] =
    [0, 1, 0xFFF, 0xF000, KERNEL_IMAGE, 0xFFFF_8000_4000_0000, 0x8000_0000_0000_0000, 0x7FFF_FFFF_FFF0, u64::MAX];
/// Where the kernel image is (KERNEL_BASE + 1 MiB): mapped, but never for user mode.
const KERNEL_IMAGE: u64 = 0xFFFF_8000_0010_0000;

fn main(args: &[&str]) -> i32 {
    let seed = questv_userland::arg_u64(args, 1, 42).unwrap_or(42);
    let random_calls = questv_userland::arg_u64(args, 2, 10_000).unwrap_or(10_000);
    let mut c = Checks { run: 0, failed: 0 };

    // 1. Invalid pointers: EFAULT, never a kernel fault.
    for &p in &BAD {
        c.expect(syscall(nr::WRITE, 1, p, 16), -EFAULT, "write from a bad pointer");
        c.expect(syscall(nr::READ, 0, p, 16), -EFAULT, "read into a bad pointer");
        c.expect(syscall(nr::CLOCK_GETTIME, 1, p, 0), -EFAULT, "clock_gettime to a bad pointer");
        c.expect(syscall(nr::NANOSLEEP, p, 0, 0), -EFAULT, "nanosleep from a bad pointer");
        c.expect(syscall(nr::EXECVE, p, 0, 0), -EFAULT, "execve with a bad path");
        c.expect(syscall(nr::SCHED_SETAFFINITY, 0, 8, p), -EFAULT, "sched_setaffinity with a bad mask");
        if p != 0 {
            // getcpu accepts NULL (Linux: "cpu may be NULL"), but no other bad pointer.
            c.expect(syscall(nr::GETCPU, p, 0, 0), -EFAULT, "getcpu to a bad pointer");
        }
    }
    // A buffer that starts valid and runs off the end of the stack.
    let local = [0u8; 8];
    // Buffer the random calls may point into (they write up to 390 bytes, uname's, past any of its first 8).
    let mut scratch = [0u8; 512];
    let scratch_ptr = scratch.as_mut_ptr() as u64;
    c.expect(syscall(nr::WRITE, 1, local.as_ptr() as u64, 1 << 40), -EFAULT, "write running off mapped memory");
    // execve with a valid path but a bad argv array.
    c.expect(syscall(nr::EXECVE, b"/bin/torture\0".as_ptr() as u64, 8, 0), -EFAULT, "execve with a bad argv");
    c.expect(syscall(nr::WRITE, 7, local.as_ptr() as u64, 1), -9, "write to a bad fd");
    c.expect(syscall(nr::NANOSLEEP, [0i64, 2_000_000_000].as_ptr() as u64, 0, 0), -EINVAL, "nanosleep nsec out of range");
    c.expect(syscall(nr::CLOCK_GETTIME, 99, local.as_ptr() as u64, 0), -EINVAL, "clock_gettime bad clock");

    // 2. Invalid system call numbers.
    for n in [335u64, 999, 1099, 4096, 1 << 32, u64::MAX] {
        c.expect(syscall(n, 1, 2, 3), -ENOSYS, "unknown system call number");
    }

    // 3. waitpid on processes that are not our children.
    c.expect(sys::waitpid(-1, 0).0, -ECHILD, "waitpid with no children");
    c.expect(sys::waitpid(1, 0).0, -ECHILD, "waitpid on init");
    c.expect(sys::waitpid(sys::getpid(), 0).0, -ECHILD, "waitpid on itself");
    c.expect(sys::waitpid(123_456, 0).0, -ECHILD, "waitpid on a nonexistent pid");
    c.expect(sys::waitpid(-1, 0x8000).0, -EINVAL, "waitpid with unknown options");

    // 4. Programs: missing, and a hostile ELF in the ramdisk.
    c.expect(sys::execve("no-such-program", &["x"]), -ENOENT, "execve of a missing program");
    c.expect(sys::execve("/bin/badelf", &["badelf"]), -8, "execve of a malformed ELF (ENOEXEC)");

    // 5. Faulting children are killed with a signal; we (and the kernel) carry on.
    // SAFETY (each closure): deliberate faults in a forked child; the kernel must kill only that child.
    let faults: [(fn() -> !, i32, &str); 4] = [
        (|| unsafe { core::ptr::write_volatile(8 as *mut u64, 1); sys::exit(0) }, 11, "null write"),
        (|| unsafe { core::ptr::write_volatile(KERNEL_IMAGE as *mut u64, 1); sys::exit(0) }, 11, "write to kernel memory"),
        (|| unsafe { core::arch::asm!("ud2"); sys::exit(0) }, 4, "invalid opcode"),
        (|| unsafe { core::arch::asm!("cli"); sys::exit(0) }, 11, "privileged instruction"),
    ];
    for (f, sig, what) in faults {
        let pid = sys::fork();
        if pid == 0 {
            f();
        }
        let (r, st) = sys::waitpid(pid, 0);
        c.check(r == pid && !wait::exited(st) && wait::term_signal(st) == sig, what, i64::from(st));
    }

    // 6. Exhaust memory with brk (touching every page), then fork until it fails; recover.
    let base = sys::brk(0);
    let mut top = base;
    const STEP: u64 = 4 << 20;
    loop {
        let new = sys::brk(top + STEP);
        if new != top + STEP {
            break;
        }
        let mut p = top;
        while p < new {
            // SAFETY: [top, new) was just added to our break.
            unsafe { core::ptr::write_volatile(p as *mut u8, 1) };
            p += 4096;
        }
        top = new;
    }
    let eaten_mib = (top - base) >> 20;
    let mut forked = 0u32;
    let fork_err = loop {
        let pid = sys::fork();
        if pid == 0 {
            sys::nanosleep(50_000_000);
            sys::exit(0);
        }
        if pid < 0 {
            break pid;
        }
        forked += 1;
        if forked > 2000 {
            break 0;
        }
    };
    c.check(fork_err == -ENOMEM || fork_err == -EAGAIN, "fork fails cleanly when memory is exhausted", fork_err);
    c.expect(sys::brk(base) as i64, base as i64, "brk shrinks back");
    // The sleeping children hold memory too (their kernel stacks and tables, which brk does not give back):
    // fork may have to wait for some of them to exit, up to a second (a loaded host slows them down). When the
    // process table filled first (EAGAIN: children that slept their 50 ms are zombies), a slot comes back only
    // when one is reaped.
    let mut pid = -ENOMEM;
    let mut reaped = 0;
    for _ in 0..50 {
        pid = sys::fork();
        if pid == 0 {
            sys::exit(7);
        }
        if pid != -ENOMEM && pid != -EAGAIN {
            break;
        }
        if pid == -EAGAIN && sys::waitpid(-1, sys::WNOHANG).0 > 0 {
            reaped += 1;
            continue;
        }
        sys::nanosleep(20_000_000);
    }
    c.check(pid > 0, "fork works again after memory or process slots are released", pid);
    loop {
        let (r, _) = sys::waitpid(-1, 0);
        if r < 0 {
            c.expect(r, -ECHILD, "reaped every child");
            break;
        }
        reaped += 1;
    }
    c.check(reaped == forked + 1, "every child reaped", i64::from(reaped));
    println!("RESULT torture_oom eaten_mib={} forks_until_failure={} fork_error={} recovered={}", eaten_mib, forked, fork_err, u8::from(pid > 0));

    // 7. Memory mappings, as mmap(2), munmap(2), mprotect(2) and madvise(2) describe them.
    mappings(&mut c);
    thread_pointer(&mut c);
    console_calls(&mut c);
    identity_calls(&mut c);
    clocks(&mut c);

    // 8. Random system calls with random arguments. Excluded: calls that end or replace the process, block
    // on the console, or rearrange our own memory (exit, fork, vfork, clone, execve, read, brk, munmap), or
    // write as many bytes as they are asked to (read, getrandom: a random length would overwrite our stack), or
    // wait for a signal or restore a random context (pause, rt_sigsuspend, rt_sigreturn, clock_nanosleep), or
    // throttle the fuzzer itself (vcpu_bind to, or vcpu_set of, a VCPU with a random budget: 100 us in 10 s
    // makes a million calls take days; the VCPU checks have their own tests); the other signal calls are
    // tamed (`tame`).
    let excluded = [nr::EXIT, nr::EXIT_GROUP, nr::FORK, nr::VFORK, nr::CLONE, nr::EXECVE, nr::READ, nr::GETRANDOM, nr::BRK, nr::MUNMAP, nr::MREMAP, nr::NANOSLEEP, nr::MPROTECT, nr::MADVISE, nr::READV, nr::PAUSE, nr::RT_SIGSUSPEND, nr::RT_SIGRETURN, nr::CLOCK_NANOSLEEP, nr::VCPU_BIND, nr::VCPU_SET, nr::PIPE];
    // A random write into a pipe whose reader a random close took is EPIPE, and SIGPIPE: ignored, as a
    // program that checks write's result does (the fuzzer's own dispositions are only read afterwards).
    let sig_ign: [u64; 4] = [1, 0, 0, 0];
    syscall6(nr::RT_SIGACTION, [13, sig_ign.as_ptr() as u64, 0, 8, 0, 0]);
    // Something for the file calls to find: /tmp/fz with two files, a directory, a link.
    for (call, path) in [(nr::MKDIR, &b"/tmp/fz\0"[..]), (nr::MKDIR, b"/tmp/fz/d\0")] {
        syscall(call, path.as_ptr() as u64, 0o755, 0);
    }
    for path in [&b"/tmp/fz/a\0"[..], b"/tmp/fz/b\0"] {
        let fd = syscall(nr::CREAT, path.as_ptr() as u64, 0o644, 0);
        if fd >= 0 {
            syscall(nr::WRITE, fd as u64, b"fuzz".as_ptr() as u64, 4);
            syscall(nr::CLOSE, fd as u64, 0, 0);
        }
    }
    syscall(nr::SYMLINK, b"a\0".as_ptr() as u64, b"/tmp/fz/l\0".as_ptr() as u64, 0);
    let mut rng = Rng::new(seed);
    let (mut ok, mut efault, mut enosys, mut einval, mut other) = (0u32, 0u32, 0u32, 0u32, 0u32);
    let mut done = 0;
    while done < random_calls {
        // Half the calls go to implemented system calls, so the argument checking really gets exercised.
        let n = match rng.next() % 4 {
            0 => rng.next(),
            1 => rng.next() % 1100,
            _ => IMPLEMENTED[(rng.next() % IMPLEMENTED.len() as u64) as usize],
        };
        if excluded.contains(&n) {
            continue;
        }
        let mut a = [0u64; 6];
        for x in a.iter_mut() {
            *x = match rng.next() % 4 {
                0 => rng.next(),
                1 => rng.next() % 64,
                2 => BAD[(rng.next() % BAD.len() as u64) as usize],
                _ => scratch_ptr + rng.next() % 8,
            };
        }
        tame(n, &mut a, &mut rng);
        if n == nr::WRITE || n == nr::WRITEV {
            a[0] = 3 + a[0] % 8; // not the console: random bytes there would garble the RESULT lines
        }
        if n == nr::MMAP {
            a[3] &= !(MAP_FIXED | MAP_FIXED_NOREPLACE); // never over our own stack or code
        }
        let r = syscall6(n, a);
        match r {
            r if r >= 0 => ok += 1,
            r if r == -EFAULT => efault += 1,
            r if r == -ENOSYS => enosys += 1,
            r if r == -EINVAL => einval += 1,
            _ => other += 1,
        }
        done += 1;
    }
    core::hint::black_box(&mut scratch);
    // Still alive and still correct afterwards.
    c.check(sys::getpid() > 1, "getpid after the random calls", sys::getpid());
    println!(
        "RESULT torture_random calls={} ok={} efault={} enosys={} einval={} other={} seed={}",
        done, ok, efault, enosys, einval, other, seed
    );
    println!("RESULT torture checks={} failed={}", c.run, c.failed);
    if c.failed == 0 { 0 } else { 1 }
}
