//! Rust API for questv user programs: system call wrappers, `print!`/`println!`, and (feature `rt`) the
//! runtime a program links with. The C ABI library for C programs lives in `include/` and `c/` beside this
//! crate and uses the same system call numbers ([`nr`]).
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

#[cfg(feature = "rt")]
mod rt;

use alloc::vec::Vec;
use core::arch::asm;

/// System call numbers (Linux x86_64 numbering; questv's own from 1000): the one definition the kernel's
/// dispatcher and Rust programs share. `include/questv/syscall.h` repeats them for C (a host test checks).
pub mod nr {
    // Files, directories, descriptors, pipes.
    pub const OPEN: u64 = 2;
    pub const CLOSE: u64 = 3;
    pub const LSEEK: u64 = 8;
    pub const PREAD64: u64 = 17;
    pub const PWRITE64: u64 = 18;
    pub const POLL: u64 = 7;
    pub const ACCESS: u64 = 21;
    pub const SELECT: u64 = 23;
    pub const PSELECT6: u64 = 270;
    pub const PPOLL: u64 = 271;
    pub const PIPE: u64 = 22;
    pub const DUP: u64 = 32;
    pub const DUP2: u64 = 33;
    pub const FCNTL: u64 = 72;
    pub const FSYNC: u64 = 74;
    pub const FDATASYNC: u64 = 75;
    pub const TRUNCATE: u64 = 76;
    pub const FTRUNCATE: u64 = 77;
    pub const GETCWD: u64 = 79;
    pub const CHDIR: u64 = 80;
    pub const FCHDIR: u64 = 81;
    pub const RENAME: u64 = 82;
    pub const MKDIR: u64 = 83;
    pub const RMDIR: u64 = 84;
    pub const CREAT: u64 = 85;
    pub const LINK: u64 = 86;
    pub const UNLINK: u64 = 87;
    pub const SYMLINK: u64 = 88;
    pub const READLINK: u64 = 89;
    pub const CHMOD: u64 = 90;
    pub const FCHMOD: u64 = 91;
    pub const CHOWN: u64 = 92;
    pub const FCHOWN: u64 = 93;
    pub const LCHOWN: u64 = 94;
    pub const UMASK: u64 = 95;
    pub const STATFS: u64 = 137;
    pub const FSTATFS: u64 = 138;
    pub const GETDENTS64: u64 = 217;
    pub const OPENAT: u64 = 257;
    pub const MKDIRAT: u64 = 258;
    pub const FCHOWNAT: u64 = 260;
    pub const UNLINKAT: u64 = 263;
    pub const RENAMEAT: u64 = 264;
    pub const LINKAT: u64 = 265;
    pub const SYMLINKAT: u64 = 266;
    pub const READLINKAT: u64 = 267;
    pub const FCHMODAT: u64 = 268;
    pub const FACCESSAT: u64 = 269;
    pub const UTIMENSAT: u64 = 280;
    pub const DUP3: u64 = 292;
    pub const PIPE2: u64 = 293;
    pub const RENAMEAT2: u64 = 316;
    pub const STATX: u64 = 332;
    pub const FACCESSAT2: u64 = 439;
    pub const EXIT_GROUP: u64 = 231;
    pub const READ: u64 = 0;
    pub const WRITE: u64 = 1;
    pub const MMAP: u64 = 9;
    pub const MUNMAP: u64 = 11;
    pub const MPROTECT: u64 = 10;
    pub const MADVISE: u64 = 28;
    pub const ARCH_PRCTL: u64 = 158;
    pub const IOCTL: u64 = 16;
    pub const READV: u64 = 19;
    pub const WRITEV: u64 = 20;
    pub const UNAME: u64 = 63;
    pub const GETUID: u64 = 102;
    pub const GETGID: u64 = 104;
    pub const GETEUID: u64 = 107;
    pub const GETEGID: u64 = 108;
    pub const GETTID: u64 = 186;
    pub const GETTIMEOFDAY: u64 = 96;
    pub const TIME: u64 = 201;
    pub const CLOCK_GETRES: u64 = 229;
    pub const SET_TID_ADDRESS: u64 = 218;
    pub const FUTEX: u64 = 202;
    pub const GETRUSAGE: u64 = 98;
    pub const TIMES: u64 = 100;
    pub const WAITID: u64 = 247;
    pub const GETRESUID: u64 = 118;
    pub const GETRESGID: u64 = 120;
    pub const SCHED_GETAFFINITY: u64 = 204;
    pub const MREMAP: u64 = 25;
    pub const BRK: u64 = 12;
    pub const SCHED_YIELD: u64 = 24;
    pub const NANOSLEEP: u64 = 35;
    pub const GETPID: u64 = 39;
    pub const CLONE: u64 = 56;
    pub const FORK: u64 = 57;
    pub const STAT: u64 = 4;
    pub const FSTAT: u64 = 5;
    pub const LSTAT: u64 = 6;
    pub const NEWFSTATAT: u64 = 262;
    pub const GETRLIMIT: u64 = 97;
    pub const SYSINFO: u64 = 99;
    pub const SET_ROBUST_LIST: u64 = 273;
    pub const PRLIMIT64: u64 = 302;
    pub const GETRANDOM: u64 = 318;
    pub const VFORK: u64 = 58;
    pub const EXECVE: u64 = 59;
    pub const EXIT: u64 = 60;
    pub const WAIT4: u64 = 61;
    pub const GETPPID: u64 = 110;
    pub const SCHED_SETAFFINITY: u64 = 203;
    pub const CLOCK_GETTIME: u64 = 228;
    pub const GETCPU: u64 = 309;
    pub const QUESTV_CYCLES: u64 = 1000;
    pub const QUESTV_FREE_FRAMES: u64 = 1001;
    pub const QUESTV_NCPUS: u64 = 1002;
    pub const QUESTV_SANDBOX: u64 = 1003;
    pub const QUESTV_VMEXITS: u64 = 1004;
    pub const CHAN_OPEN: u64 = 1010;
    pub const CHAN_SEND: u64 = 1011;
    pub const CHAN_RECV: u64 = 1012;
    pub const CHAN_CLOSE: u64 = 1013;
    pub const CHAN_ENDPOINT: u64 = 1014;
    pub const VCPU_CREATE: u64 = 1020;
    pub const VCPU_BIND: u64 = 1021;
    pub const VCPU_INFO: u64 = 1022;
    pub const VCPU_SET: u64 = 1023;
    pub const VCPU_TRACE: u64 = 1024;
    pub const NET_INFO: u64 = 1030;
    pub const NET_WAIT: u64 = 1031;
    pub const STATE_SAVE: u64 = 1040;
    pub const STATE_LOAD: u64 = 1041;
    pub const INCARNATION: u64 = 1042;
    // Signals, timers, process groups.
    pub const RT_SIGACTION: u64 = 13;
    pub const RT_SIGPROCMASK: u64 = 14;
    pub const RT_SIGRETURN: u64 = 15;
    pub const PAUSE: u64 = 34;
    pub const GETITIMER: u64 = 36;
    pub const ALARM: u64 = 37;
    pub const SETITIMER: u64 = 38;
    pub const KILL: u64 = 62;
    pub const SETPGID: u64 = 109;
    pub const GETPGRP: u64 = 111;
    pub const SETSID: u64 = 112;
    pub const GETPGID: u64 = 121;
    pub const GETSID: u64 = 124;
    pub const RT_SIGPENDING: u64 = 127;
    pub const RT_SIGTIMEDWAIT: u64 = 128;
    pub const RT_SIGSUSPEND: u64 = 130;
    pub const SIGALTSTACK: u64 = 131;
    pub const TKILL: u64 = 200;
    pub const CLOCK_NANOSLEEP: u64 = 230;
    pub const TGKILL: u64 = 234;
}

/// Error numbers (Linux values) the kernel returns negated. The kernel uses these very constants.
pub mod errno {
    pub const EPERM: i64 = 1;
    pub const ENOENT: i64 = 2;
    pub const ESRCH: i64 = 3;
    pub const EINTR: i64 = 4;
    pub const EIO: i64 = 5;
    pub const ENXIO: i64 = 6;
    pub const E2BIG: i64 = 7;
    pub const ENOEXEC: i64 = 8;
    pub const EBADF: i64 = 9;
    pub const ECHILD: i64 = 10;
    pub const EAGAIN: i64 = 11;
    pub const ENOMEM: i64 = 12;
    pub const EACCES: i64 = 13;
    pub const EFAULT: i64 = 14;
    pub const EBUSY: i64 = 16;
    pub const EEXIST: i64 = 17;
    pub const EXDEV: i64 = 18;
    pub const ENODEV: i64 = 19;
    pub const ENOTDIR: i64 = 20;
    pub const EISDIR: i64 = 21;
    pub const EINVAL: i64 = 22;
    pub const ENFILE: i64 = 23;
    pub const EMFILE: i64 = 24;
    pub const ENOTTY: i64 = 25;
    pub const EFBIG: i64 = 27;
    pub const ENOSPC: i64 = 28;
    pub const ESPIPE: i64 = 29;
    pub const EROFS: i64 = 30;
    pub const EMLINK: i64 = 31;
    pub const EPIPE: i64 = 32;
    pub const ERANGE: i64 = 34;
    pub const ENAMETOOLONG: i64 = 36;
    pub const ENOSYS: i64 = 38;
    pub const ENOTEMPTY: i64 = 39;
    pub const ELOOP: i64 = 40;
    pub const ETIMEDOUT: i64 = 110;
}

/// Raw system call with up to six arguments; returns the kernel's value (negative errno on failure).
#[inline]
pub fn syscall6(n: u64, a: [u64; 6]) -> i64 {
    let ret: i64;
    // SAFETY: SYSCALL clobbers rcx and r11; the kernel validates every argument, so no argument value can
    // break this process's memory safety except through the documented effects of the call.
    unsafe {
        asm!("syscall", inlateout("rax") n as i64 => ret, in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
             in("r10") a[3], in("r8") a[4], in("r9") a[5], lateout("rcx") _, lateout("r11") _,
             options(nostack));
    }
    ret
}

#[inline]
pub fn syscall(n: u64, a0: u64, a1: u64, a2: u64) -> i64 {
    syscall6(n, [a0, a1, a2, 0, 0, 0])
}

pub fn write(fd: u64, buf: &[u8]) -> i64 {
    syscall(nr::WRITE, fd, buf.as_ptr() as u64, buf.len() as u64)
}

pub fn read(fd: u64, buf: &mut [u8]) -> i64 {
    syscall(nr::READ, fd, buf.as_mut_ptr() as u64, buf.len() as u64)
}

pub fn exit(code: i32) -> ! {
    syscall(nr::EXIT, code as u64, 0, 0);
    unreachable!("exit returned")
}

pub fn fork() -> i64 {
    syscall(nr::FORK, 0, 0, 0)
}

pub fn getpid() -> i64 {
    syscall(nr::GETPID, 0, 0, 0)
}

pub fn getppid() -> i64 {
    syscall(nr::GETPPID, 0, 0, 0)
}

pub fn sched_yield() {
    syscall(nr::SCHED_YIELD, 0, 0, 0);
}

/// `waitpid(pid, options)` → (pid or -errno, wait status).
pub fn waitpid(pid: i64, options: u64) -> (i64, i32) {
    let mut status: i32 = 0;
    let r = syscall(nr::WAIT4, pid as u64, &mut status as *mut i32 as u64, options);
    (r, status)
}

pub const WNOHANG: u64 = 1;

pub mod wait {
    pub fn exited(st: i32) -> bool {
        st & 0x7F == 0
    }
    pub fn exit_status(st: i32) -> i32 {
        (st >> 8) & 0xFF
    }
    pub fn term_signal(st: i32) -> i32 {
        st & 0x7F
    }
    /// Shell-style status: the exit code, or 128 + signal.
    pub fn shell_status(st: i32) -> i32 {
        if exited(st) {
            exit_status(st)
        } else {
            128 + term_signal(st)
        }
    }
}

/// Replace this program with `path`, passing `args` (args[0] is the program name by convention).
pub fn execve(path: &str, args: &[&str]) -> i64 {
    execve_env(path, args, &[])
}

/// execve with an environment (`NAME=VALUE` strings).
pub fn execve_env(path: &str, args: &[&str], env: &[&str]) -> i64 {
    let c_strings = |list: &[&str]| -> Vec<Vec<u8>> {
        list.iter()
            .map(|a| {
                let mut v = Vec::from(a.as_bytes());
                v.push(0);
                v
            })
            .collect()
    };
    let mut cpath = Vec::from(path.as_bytes());
    cpath.push(0);
    let (args, env) = (c_strings(args), c_strings(env));
    let pointers = |strings: &[Vec<u8>]| -> Vec<u64> { strings.iter().map(|v| v.as_ptr() as u64).chain(core::iter::once(0)).collect() };
    let (argv, envp) = (pointers(&args), pointers(&env));
    syscall(nr::EXECVE, cpath.as_ptr() as u64, argv.as_ptr() as u64, envp.as_ptr() as u64)
}

pub fn cycles() -> u64 {
    syscall(nr::QUESTV_CYCLES, 0, 0, 0) as u64
}

pub fn free_frames() -> i64 {
    syscall(nr::QUESTV_FREE_FRAMES, 0, 0, 0)
}

/// The VT sandbox this program runs in, or None on the SMP build.
pub fn sandbox() -> Option<u32> {
    u32::try_from(syscall(nr::QUESTV_SANDBOX, 0, 0, 0)).ok()
}

/// VM exits of this sandbox so far (including this query's own), or a negative errno on the SMP build.
pub fn vmexits() -> i64 {
    syscall(nr::QUESTV_VMEXITS, 0, 0, 0)
}

/// Channels (docs/channels.md): endpoints are sandboxes (VT) or cores (SMP).
pub mod chan {
    use super::{nr, syscall, syscall6};
    /// Notify the peer with an IPI (send) / wait for one, halted, instead of polling (recv).
    pub const NOTIFY: u64 = 1;
    pub const ECONNRESET: i64 = 104;
    pub const ETIMEDOUT: i64 = 110;

    pub fn endpoint() -> i64 {
        syscall(nr::CHAN_ENDPOINT, 0, 0, 0)
    }
    pub fn open(peer: u32) -> i64 {
        syscall(nr::CHAN_OPEN, u64::from(peer), 0, 0)
    }
    pub fn send(h: i64, data: &[u8], flags: u64) -> i64 {
        syscall6(nr::CHAN_SEND, [h as u64, data.as_ptr() as u64, data.len() as u64, flags, 0, 0])
    }
    pub fn recv(h: i64, buf: &mut [u8], timeout_ns: u64, flags: u64) -> i64 {
        syscall6(nr::CHAN_RECV, [h as u64, buf.as_mut_ptr() as u64, buf.len() as u64, timeout_ns, flags, 0])
    }
    pub fn close(h: i64) -> i64 {
        syscall(nr::CHAN_CLOSE, h as u64, 0, 0)
    }
}

/// VCPUs (docs/scheduling.md): budgets and periods in microseconds, on the calling CPU (sandbox).
pub mod vcpu {
    use super::{nr, syscall, syscall6};
    /// Classes: a Main VCPU (sporadic server) or an I/O VCPU (fixed utilization, inherited priority).
    pub const MAIN: u64 = 0;
    pub const IO: u64 = 1;
    /// The VCPU every program starts on.
    pub const DEFAULT: u32 = 0;

    /// Parameters and accounting of one VCPU (`struct questv_vcpu_info` in C), times in microseconds.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Info {
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

    /// A new VCPU; its id, or -EINVAL (bad parameters) / -EBUSY (the core's set would be infeasible).
    pub fn create(class: u64, budget_us: u64, period_us: u64) -> i64 {
        syscall(nr::VCPU_CREATE, class, budget_us, period_us)
    }
    /// Run the calling process, and the children it forks from now on, on VCPU `id`.
    pub fn bind(id: u32) -> i64 {
        syscall(nr::VCPU_BIND, u64::from(id), 0, 0)
    }
    pub fn info(id: u32) -> Result<Info, i64> {
        let mut i = Info::default();
        let r = syscall(nr::VCPU_INFO, u64::from(id), &mut i as *mut Info as u64, 0);
        if r < 0 {
            Err(r)
        } else {
            Ok(i)
        }
    }
    /// Change a VCPU's budget and period (admission-controlled like `create`).
    pub fn set(id: u32, budget_us: u64, period_us: u64) -> i64 {
        syscall(nr::VCPU_SET, u64::from(id), budget_us, period_us)
    }
    /// Copy (and clear) this CPU's scheduling trace as CSV into `buf`; returns the bytes written.
    pub fn trace(buf: &mut [u8]) -> i64 {
        syscall6(nr::VCPU_TRACE, [buf.as_mut_ptr() as u64, buf.len() as u64, 0, 0, 0, 0])
    }
}

/// The kernel's network interface (docs/network.md): statistics and the wait for the host peer's end marker.
/// Stateful recovery (docs/recovery.md): a service hands its state to the monitor, which keeps it outside the
/// sandbox; after the sandbox is recovered the service's new incarnation loads it and carries on. In the SMP
/// build the state stays in the kernel (there is no recovery to survive).
pub mod state {
    use super::{nr, syscall};
    /// Most bytes one checkpoint keeps.
    pub const MAX: usize = 4096;

    /// Replace the kept state with `data` (at most [`MAX`] bytes): 0 or -errno.
    pub fn save(data: &[u8]) -> i64 {
        syscall(nr::STATE_SAVE, data.as_ptr() as u64, data.len() as u64, 0)
    }

    /// Copy the kept state into `buf`: its whole length (0: nothing kept), or -errno.
    pub fn load(buf: &mut [u8]) -> i64 {
        syscall(nr::STATE_LOAD, buf.as_mut_ptr() as u64, buf.len() as u64, 0)
    }

    /// How many times this sandbox has been recovered (0: first boot, and always in the SMP build).
    pub fn incarnation() -> i64 {
        syscall(nr::INCARNATION, 0, 0, 0)
    }
}

pub mod net {
    use super::{nr, syscall};
    /// Drop reasons of the early demultiplexer, in the order of [`Info::drops`].
    pub const DROP_NAMES: [&str; 9] =
        ["runt", "oversize", "ethertype", "bad_arp", "bad_ip", "ip_checksum", "fragment", "ip_protocol", "icmp"];

    /// `struct questv_net_info` in C: 32 words.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Info {
        pub up: u64,
        /// IPv4 address, the four bytes big-endian in the low 32 bits.
        pub ip: u64,
        /// MAC, byte 0 in the low byte.
        pub mac: u64,
        pub irqs: u64,
        /// Receive descriptors this kernel read (its own frames, others', garbage).
        pub rx_slots: u64,
        pub rx_mine: u64,
        pub rx_not_mine: u64,
        pub rx_bad_slot: u64,
        pub rx_queue_full: u64,
        pub tx_frames: u64,
        pub tx_errors: u64,
        pub polls: u64,
        pub stop_seen: u64,
        pub drops: [u64; 9],
        /// NIC interrupts taken by CPUs 0–7 of this kernel.
        pub irqs_per_cpu: [u64; 8],
        pub _reserved: [u64; 2],
    }

    pub fn info() -> Result<Info, i64> {
        let mut i = Info::default();
        let r = syscall(nr::NET_INFO, &mut i as *mut Info as u64, core::mem::size_of::<Info>() as u64, 0);
        if r < 0 {
            Err(r)
        } else {
            Ok(i)
        }
    }

    /// Block until the host peer's end-of-run marker arrives (1) or `timeout_ms` passes (0); -ENODEV without a NIC,
    /// -EAGAIN when 16 threads wait already. While the caller waits, the NIC driver's I/O VCPU runs at the
    /// priority of the caller's VCPU (or of a more urgent waiter's): docs/scheduling.md.
    pub fn wait_stop(timeout_ms: u64) -> i64 {
        syscall(nr::NET_WAIT, timeout_ms, 0, 0)
    }
}

pub fn ncpus() -> i64 {
    syscall(nr::QUESTV_NCPUS, 0, 0, 0)
}

/// Move the calling process to `cpu` (sched_setaffinity with a one-CPU mask).
pub fn set_cpu(cpu: u32) -> i64 {
    let mask: u64 = 1 << cpu;
    syscall(nr::SCHED_SETAFFINITY, 0, 8, &mask as *const u64 as u64)
}

pub fn getcpu() -> i64 {
    let mut c: u32 = 0;
    let r = syscall(nr::GETCPU, &mut c as *mut u32 as u64, 0, 0);
    if r < 0 {
        r
    } else {
        i64::from(c)
    }
}

pub fn brk(addr: u64) -> u64 {
    syscall(nr::BRK, addr, 0, 0) as u64
}

pub fn nanosleep(ns: u64) -> i64 {
    let ts = [(ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as i64];
    syscall(nr::NANOSLEEP, ts.as_ptr() as u64, 0, 0)
}

pub fn clock_monotonic_ns() -> u64 {
    let mut ts = [0i64; 2];
    syscall(nr::CLOCK_GETTIME, 1, ts.as_mut_ptr() as u64, 0);
    ts[0] as u64 * 1_000_000_000 + ts[1] as u64
}

/// Formatted output to fd 1, buffered so that one `println!` is one `write` (lines stay whole).
pub struct Stdout {
    buf: [u8; 512],
    len: usize,
}

impl Stdout {
    pub const fn new() -> Stdout {
        Stdout { buf: [0; 512], len: 0 }
    }
    pub fn flush(&mut self) {
        if self.len > 0 {
            write(1, &self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Default for Stdout {
    fn default() -> Self {
        Stdout::new()
    }
}

impl core::fmt::Write for Stdout {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

impl Drop for Stdout {
    fn drop(&mut self) {
        self.flush();
    }
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        let mut out = $crate::Stdout::new();
        let _ = core::fmt::Write::write_fmt(&mut out, format_args!($($arg)*));
    }};
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::print!("{}\n", format_args!($($arg)*)) };
}

/// Declare the program's entry: `questv_libc_shim::entry!(main);` with `fn main(args: &[&str]) -> i32`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        pub fn questv_main(args: &[&str]) -> i32 {
            $main(args)
        }
    };
}
