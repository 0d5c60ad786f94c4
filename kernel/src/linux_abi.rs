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
}
