//! Byte layouts of Linux x86-64 structures that system calls read or fill (`struct iovec`, `struct utsname`,
//! `struct winsize`, the kernel's `struct termios`), with Linux's argument checks. Pure, host-tested; the
//! copies to and from user memory are the caller's.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

/// Linux's IOV_MAX (UIO_MAXIOV).
pub const IOV_MAX: u64 = 1024;

/// The (base, length) pairs of an iovec array read from user memory (`count` entries of 16 bytes). EINVAL
/// (as a positive errno) for more than IOV_MAX entries or lengths whose sum does not fit an `ssize_t`.
pub fn parse_iovecs(raw: &[u8]) -> Result<Vec<(u64, u64)>, i64> {
    if raw.len() as u64 > IOV_MAX * 16 || raw.len() % 16 != 0 {
        return Err(22);
    }
    let mut total: u64 = 0;
    let mut out = Vec::with_capacity(raw.len() / 16);
    for e in raw.chunks_exact(16) {
        let base = u64::from_le_bytes(e[..8].try_into().unwrap());
        let len = u64::from_le_bytes(e[8..].try_into().unwrap());
        total = total.checked_add(len).filter(|&t| t <= i64::MAX as u64).ok_or(22i64)?;
        out.push((base, len));
    }
    Ok(out)
}

/// `struct utsname`: six NUL-padded fields of 65 bytes (sysname, nodename, release, version, machine,
/// domainname). Longer strings are cut to 64 bytes.
pub fn utsname(fields: [&str; 6]) -> [u8; 390] {
    let mut out = [0u8; 390];
    for (i, f) in fields.iter().enumerate() {
        let b = f.as_bytes();
        let n = b.len().min(64);
        out[65 * i..65 * i + n].copy_from_slice(&b[..n]);
    }
    out
}

/// `struct winsize` (TIOCGWINSZ): rows, columns, then pixel sizes (0).
pub fn winsize(rows: u16, cols: u16) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..2].copy_from_slice(&rows.to_le_bytes());
    out[2..4].copy_from_slice(&cols.to_le_bytes());
    out
}

/// The kernel's `struct termios` (TCGETS: 4 flag words, c_line, 19 control characters = 36 bytes) for the
/// serial console as a terminal in its default (cooked) mode: ICRNL|IXON, OPOST|ONLCR, B38400|CS8|CREAD|HUPCL,
/// ISIG|ICANON|ECHO|ECHOE|ECHOK|IEXTEN|ECHOCTL|ECHOKE, and Linux's default control characters.
pub fn console_termios() -> [u8; 36] {
    const ICRNL: u32 = 0o400;
    const IXON: u32 = 0o2000;
    const OPOST: u32 = 0o1;
    const ONLCR: u32 = 0o4;
    const B38400: u32 = 0o17;
    const CS8: u32 = 0o60;
    const CREAD: u32 = 0o200;
    const HUPCL: u32 = 0o2000;
    const ISIG: u32 = 0o1;
    const ICANON: u32 = 0o2;
    const ECHO: u32 = 0o10;
    const ECHOE: u32 = 0o20;
    const ECHOK: u32 = 0o40;
    const ECHOCTL: u32 = 0o1000;
    const ECHOKE: u32 = 0o4000;
    const IEXTEN: u32 = 0o100000;
    let flags = [
        ICRNL | IXON,
        OPOST | ONLCR,
        B38400 | CS8 | CREAD | HUPCL,
        ISIG | ICANON | ECHO | ECHOE | ECHOK | ECHOCTL | ECHOKE | IEXTEN,
    ];
    let mut out = [0u8; 36];
    for (i, f) in flags.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&f.to_le_bytes());
    }
    // VINTR ^C, VQUIT ^\, VERASE DEL, VKILL ^U, VEOF ^D, VTIME 0, VMIN 1, VSWTC 0, VSTART ^Q, VSTOP ^S,
    // VSUSP ^Z, VEOL 0, VREPRINT ^R, VDISCARD ^O, VWERASE ^W, VLNEXT ^V, VEOL2 0.
    let cc: [u8; 17] = [3, 0x1c, 0x7f, 0x15, 4, 0, 1, 0, 0x11, 0x13, 0x1a, 0, 0x12, 0x0f, 0x17, 0x16, 0];
    out[17..17 + cc.len()].copy_from_slice(&cc);
    out
}

/// What `struct stat` (x86-64, 144 bytes) reports; times are seconds and nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: i64,
    pub blksize: i64,
    pub blocks: i64,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

pub const S_IFCHR: u32 = 0o020000;

/// A device number as glibc's `makedev` builds it (Linux's `new_encode_dev`).
pub const fn makedev(major: u64, minor: u64) -> u64 {
    (minor & 0xFF) | (major & 0xFFF) << 8 | (minor & !0xFF) << 12 | (major & !0xFFF) << 32
}

impl Stat {
    /// The console as `fstat` describes the descriptors open on it: the first serial port (`/dev/ttyS0`,
    /// character device 4:64), read-write for its owner, writable by the group, as Linux's serial console is.
    pub fn console() -> Stat {
        Stat { dev: makedev(0, 5), ino: 3, nlink: 1, mode: S_IFCHR | 0o620, rdev: makedev(4, 64), blksize: 1024, ..Stat::default() }
    }

    /// The 144-byte `struct stat`.
    pub fn to_bytes(&self) -> [u8; 144] {
        let mut b = [0u8; 144];
        let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        put(0, &self.dev.to_le_bytes());
        put(8, &self.ino.to_le_bytes());
        put(16, &self.nlink.to_le_bytes());
        put(24, &self.mode.to_le_bytes());
        put(28, &self.uid.to_le_bytes());
        put(32, &self.gid.to_le_bytes());
        put(40, &self.rdev.to_le_bytes());
        put(48, &self.size.to_le_bytes());
        put(56, &self.blksize.to_le_bytes());
        put(64, &self.blocks.to_le_bytes());
        for (i, t) in [self.atime, self.mtime, self.ctime].iter().enumerate() {
            put(72 + 16 * i, &t.0.to_le_bytes());
            put(80 + 16 * i, &t.1.to_le_bytes());
        }
        b
    }
}

/// `struct sysinfo` (x86-64, 112 bytes) from what the kernel knows: seconds since boot, memory in bytes
/// (`mem_unit` 1), no swap, the number of processes. questv keeps no load average: `loads` read 0.
pub fn sysinfo(uptime_s: u64, total_ram: u64, free_ram: u64, procs: u16) -> [u8; 112] {
    let mut b = [0u8; 112];
    b[..8].copy_from_slice(&uptime_s.to_le_bytes());
    b[32..40].copy_from_slice(&total_ram.to_le_bytes());
    b[40..48].copy_from_slice(&free_ram.to_le_bytes());
    b[80..82].copy_from_slice(&procs.to_le_bytes());
    b[104..108].copy_from_slice(&1u32.to_le_bytes());
    b
}

/// Resource limits (`RLIMIT_*`, asm-generic/resource.h) as questv has them: (soft, hard); `RLIM_INFINITY`
/// where nothing limits the resource. None for a resource number Linux does not have (EINVAL).
pub fn rlimit(resource: u64, stack_max: u64, max_procs: u64) -> Option<(u64, u64)> {
    const INF: u64 = u64::MAX;
    Some(match resource {
        // CPU, FSIZE, DATA: unlimited.
        0 | 1 | 2 => (INF, INF),
        // STACK: the stack area's fixed size.
        3 => (stack_max, stack_max),
        // CORE: no core dumps.
        4 => (0, 0),
        // RSS, AS, LOCKS, MEMLOCK (Linux's default 8 MiB), MSGQUEUE (Linux's default), NICE, RTPRIO, RTTIME.
        5 | 9 | 10 => (INF, INF),
        8 => (8 << 20, 8 << 20),
        12 => (819_200, 819_200),
        13 | 14 => (0, 0),
        15 => (INF, INF),
        // NPROC: the process table.
        6 => (max_procs, max_procs),
        // NOFILE: questv's descriptors are the console's three; Linux's default soft limit.
        7 => (1024, 1024),
        // SIGPENDING: no queued signals yet.
        11 => (0, 0),
        _ => return None,
    })
}

/// `getrandom` flags: GRND_NONBLOCK, GRND_RANDOM, GRND_INSECURE; Linux refuses others, and RANDOM with
/// INSECURE, with EINVAL.
pub fn getrandom_flags_ok(flags: u64) -> bool {
    flags & !7 == 0 && flags & 6 != 6
}

/// `clone` flags (linux/sched.h).
pub mod clone_flags {
    /// The low byte: the signal the parent gets when the child exits.
    pub const CSIGNAL: u64 = 0xFF;
    pub const VM: u64 = 0x100;
    pub const FS: u64 = 0x200;
    pub const FILES: u64 = 0x400;
    pub const SIGHAND: u64 = 0x800;
    pub const VFORK: u64 = 0x4000;
    pub const THREAD: u64 = 0x1_0000;
    pub const SYSVSEM: u64 = 0x4_0000;
    pub const SETTLS: u64 = 0x8_0000;
    pub const PARENT_SETTID: u64 = 0x10_0000;
    pub const CHILD_CLEARTID: u64 = 0x20_0000;
    pub const CHILD_SETTID: u64 = 0x100_0000;
    pub const IO: u64 = 0x8000_0000;
    /// Ignored by Linux since 2.6.
    pub const DETACHED: u64 = 0x40_0000;
}

/// What a `clone` call asks for, as far as questv can give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloneRequest {
    /// A thread of the caller's process (CLONE_VM | CLONE_SIGHAND | CLONE_THREAD), not a new process.
    pub thread: bool,
    pub stack: Option<u64>,
    pub tls: Option<u64>,
    pub parent_tid: Option<u64>,
    pub child_tid: Option<u64>,
    /// CLONE_CHILD_CLEARTID's address (Linux clears it and wakes a futex there when the child exits).
    pub clear_tid: Option<u64>,
}

/// Why a `clone` call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneRefusal {
    /// Linux refuses these combinations too (EINVAL).
    Invalid,
    /// A new process sharing the caller's memory without CLONE_VFORK, or a thread without its own
    /// signal-handler table: not implemented.
    SharedMemory,
    /// Flags questv has no counterpart for (namespaces, ptrace, pidfd, ...): not implemented.
    Unsupported(u64),
}

/// Check `clone(flags, stack, parent_tid, child_tid, tls)` (x86-64 argument order) the way Linux's
/// `copy_process` does, and say what questv makes of it. A thread is CLONE_VM | CLONE_SIGHAND | CLONE_THREAD
/// (what glibc's and musl's pthread_create ask). CLONE_FS, CLONE_FILES, CLONE_SYSVSEM and CLONE_IO are
/// accepted: questv processes have no file-system context, descriptor table or semaphores of their own yet, so
/// sharing them and copying them are the same. CLONE_VFORK is accepted as fork, with CLONE_VM too
/// (`posix_spawn`): the child gets a copy of the memory instead of the parent's, which a child that only
/// calls execve or _exit cannot tell apart (POSIX allows vfork to be fork).
pub fn clone_request(flags: u64, stack: u64, parent_tid: u64, child_tid: u64, tls: u64) -> Result<CloneRequest, CloneRefusal> {
    use clone_flags::*;
    if flags & THREAD != 0 && flags & SIGHAND == 0 || flags & SIGHAND != 0 && flags & VM == 0 {
        return Err(CloneRefusal::Invalid);
    }
    let thread = flags & THREAD != 0;
    if flags & VM != 0 && !thread && (flags & VFORK == 0 || flags & SIGHAND != 0) {
        return Err(CloneRefusal::SharedMemory);
    }
    // A thread's exit signal is ignored by Linux (its low byte must still be a valid signal or 0).
    let known = CSIGNAL | VM | FS | FILES | SIGHAND | THREAD | VFORK | SYSVSEM | SETTLS | PARENT_SETTID | CHILD_CLEARTID | CHILD_SETTID | IO | DETACHED;
    if flags & !known != 0 {
        return Err(CloneRefusal::Unsupported(flags & !known));
    }
    if flags & CSIGNAL > 64 {
        return Err(CloneRefusal::Invalid);
    }
    let when = |bit: u64, v: u64| (flags & bit != 0).then_some(v);
    Ok(CloneRequest {
        thread,
        stack: (stack != 0).then_some(stack),
        tls: when(SETTLS, tls),
        parent_tid: when(PARENT_SETTID, parent_tid),
        child_tid: when(CHILD_SETTID, child_tid),
        clear_tid: when(CHILD_CLEARTID, child_tid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iov(entries: &[(u64, u64)]) -> Vec<u8> {
        entries.iter().flat_map(|&(b, l)| b.to_le_bytes().into_iter().chain(l.to_le_bytes())).collect()
    }

    #[test]
    fn iovecs_are_checked_as_linux_checks_them() {
        assert_eq!(parse_iovecs(&iov(&[(0x1000, 5), (0x2000, 0), (0x3000, 7)])), Ok(vec![(0x1000, 5), (0x2000, 0), (0x3000, 7)]));
        assert_eq!(parse_iovecs(&[]), Ok(vec![]));
        assert_eq!(parse_iovecs(&iov(&[(0, u64::MAX)])), Err(22), "a length past ssize_t");
        assert_eq!(parse_iovecs(&iov(&[(0, i64::MAX as u64), (0, 1)])), Err(22), "a sum past ssize_t");
        let many = vec![(0u64, 1u64); 1025];
        assert_eq!(parse_iovecs(&iov(&many)), Err(22), "more than IOV_MAX");
        assert!(parse_iovecs(&iov(&many[..1024])).is_ok());
    }

    #[test]
    fn structures_have_linux_layouts() {
        let u = utsname(["Linux", "questv", "6.1.0-questv", "#1", "x86_64", "(none)"]);
        assert_eq!(&u[..6], b"Linux\0");
        assert_eq!(&u[65..72], b"questv\0");
        assert_eq!(&u[4 * 65..4 * 65 + 7], b"x86_64\0");
        let long = "x".repeat(100);
        let u = utsname([&long, "", "", "", "", ""]);
        assert_eq!(u[63], b'x');
        assert_eq!(u[64], 0, "a field keeps its terminator");
        assert_eq!(winsize(24, 80), [24, 0, 80, 0, 0, 0, 0, 0]);
        let t = console_termios();
        assert_eq!(u32::from_le_bytes(t[12..16].try_into().unwrap()) & 0o2, 0o2, "ICANON");
        assert_eq!(t[17], 3, "VINTR is ^C");
        assert_eq!(t[17 + 6], 1, "VMIN 1");
    }

    #[test]
    fn clone_flags_as_fork_glibc_and_musl_use_them() {
        use super::clone_flags::*;
        // glibc's fork: CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD, the child's tid pointer in child_tid.
        let r = clone_request(CHILD_SETTID | CHILD_CLEARTID | 17, 0, 0, 0x7000, 0).unwrap();
        assert_eq!(r, CloneRequest { thread: false, stack: None, tls: None, parent_tid: None, child_tid: Some(0x7000), clear_tid: Some(0x7000) });
        // musl's fork: plain SIGCHLD; a stack and a TLS are taken only when asked for.
        assert_eq!(clone_request(17, 0, 1, 2, 3).unwrap(), CloneRequest { thread: false, stack: None, tls: None, parent_tid: None, child_tid: None, clear_tid: None });
        let r = clone_request(SETTLS | PARENT_SETTID | 17, 0x9000, 0x10, 0x20, 0x30).unwrap();
        assert_eq!((r.stack, r.tls, r.parent_tid, r.child_tid), (Some(0x9000), Some(0x30), Some(0x10), None));
    }

    #[test]
    fn clone_flags_as_pthread_create_and_posix_spawn_use_them() {
        use super::clone_flags::*;
        // glibc 2.36's pthread_create (musl's adds CLONE_DETACHED).
        let f = VM | FS | FILES | SIGHAND | THREAD | SYSVSEM | SETTLS | PARENT_SETTID | CHILD_CLEARTID;
        let r = clone_request(f | DETACHED, 0x7f00, 0x10, 0x20, 0x30).unwrap();
        assert!(r.thread);
        assert_eq!((r.stack, r.tls, r.parent_tid, r.clear_tid, r.child_tid), (Some(0x7f00), Some(0x30), Some(0x10), Some(0x20), None));
        // posix_spawn: CLONE_VM | CLONE_VFORK | SIGCHLD with its own stack: a process.
        let r = clone_request(VM | VFORK | 17, 0x1000, 0, 0, 0).unwrap();
        assert!(!r.thread && r.stack == Some(0x1000));
    }

    #[test]
    fn clone_flag_combinations_linux_refuses_and_those_questv_lacks() {
        use super::clone_flags::*;
        assert_eq!(clone_request(THREAD, 0, 0, 0, 0), Err(CloneRefusal::Invalid));
        assert_eq!(clone_request(SIGHAND, 0, 0, 0, 0), Err(CloneRefusal::Invalid));
        assert_eq!(clone_request(VM | 17, 0x1000, 0, 0, 0), Err(CloneRefusal::SharedMemory), "shared memory, no vfork");
        assert_eq!(clone_request(VM | SIGHAND | 17, 0x1000, 0, 0, 0), Err(CloneRefusal::SharedMemory), "shared handlers, no thread");
        assert_eq!(clone_request(99, 0, 0, 0, 0), Err(CloneRefusal::Invalid), "exit signal past 64");
        // CLONE_NEWPID (0x20000000).
        assert_eq!(clone_request(0x2000_0000 | 17, 0, 0, 0, 0), Err(CloneRefusal::Unsupported(0x2000_0000)));
    }

    #[test]
    fn the_console_stats_as_a_character_device_in_linux_layout() {
        let b = Stat::console().to_bytes();
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()) & 0o170000, S_IFCHR);
        assert_eq!(word(40), 0x440, "rdev 4:64 as glibc's makedev encodes it");
        assert_eq!(word(16), 1);
        assert_eq!(makedev(136, 3), 0x8803);
        assert_eq!(makedev(1, 0x1234), 0x1_2001_34);
    }

    #[test]
    fn sysinfo_rlimits_and_getrandom_flags_as_linux_lays_them_out() {
        let b = sysinfo(42, 512 << 20, 100 << 20, 7);
        assert_eq!(u64::from_le_bytes(b[..8].try_into().unwrap()), 42);
        assert_eq!(u64::from_le_bytes(b[32..40].try_into().unwrap()), 512 << 20);
        assert_eq!(u16::from_le_bytes(b[80..82].try_into().unwrap()), 7);
        assert_eq!(u32::from_le_bytes(b[104..108].try_into().unwrap()), 1);
        assert_eq!(rlimit(3, 8 << 20, 1024), Some((8 << 20, 8 << 20)));
        assert_eq!(rlimit(6, 8 << 20, 1024), Some((1024, 1024)));
        assert_eq!(rlimit(16, 0, 0), None);
        assert!(getrandom_flags_ok(0) && getrandom_flags_ok(1) && getrandom_flags_ok(2) && getrandom_flags_ok(4) && getrandom_flags_ok(5));
        assert!(!getrandom_flags_ok(6) && !getrandom_flags_ok(8));
    }
}
