//! The initial process stack of the System V x86-64 ABI (§3.4.1), as Linux builds it at `execve` and static
//! musl and glibc read it: from `sp` up, argc, the argv pointers and a NULL, the envp pointers and a NULL, the
//! auxiliary vector (type/value pairs ending with AT_NULL); above those, the strings they point to and the 16
//! random bytes of AT_RANDOM. `sp` is 16-byte aligned. Pure: it returns the bytes and where they go.
#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;

/// Auxiliary vector types (Linux `include/uapi/linux/auxvec.h`, x86-64).
pub mod at {
    pub const NULL: u64 = 0;
    pub const PHDR: u64 = 3;
    pub const PHENT: u64 = 4;
    pub const PHNUM: u64 = 5;
    pub const PAGESZ: u64 = 6;
    pub const BASE: u64 = 7;
    pub const FLAGS: u64 = 8;
    pub const ENTRY: u64 = 9;
    pub const UID: u64 = 11;
    pub const EUID: u64 = 12;
    pub const GID: u64 = 13;
    pub const EGID: u64 = 14;
    pub const PLATFORM: u64 = 15;
    pub const HWCAP: u64 = 16;
    pub const CLKTCK: u64 = 17;
    pub const SECURE: u64 = 23;
    pub const RANDOM: u64 = 25;
    pub const HWCAP2: u64 = 26;
    pub const EXECFN: u64 = 31;
}

/// Linux's limit on one argument or environment string (MAX_ARG_STRLEN, 32 pages).
pub const MAX_ARG_STRLEN: usize = 32 * 4096;
/// questv's limit on all of them together (Linux allows a quarter of the stack limit: 2 MiB for 8 MiB).
pub const MAX_ARG_TOTAL: usize = 256 << 10;

/// What the new program is told about itself.
#[derive(Clone, Debug)]
pub struct StartInfo<'a> {
    pub argv: &'a [String],
    pub envp: &'a [String],
    /// The path it was started by (AT_EXECFN).
    pub execfn: &'a str,
    /// Where its program headers are in memory, their size and number (AT_PHDR/PHENT/PHNUM): static musl and
    /// glibc find their TLS segment through them.
    pub phdr: u64,
    pub phent: u64,
    pub phnum: u64,
    pub entry: u64,
    /// The interpreter's base (0: a static program has none).
    pub base: u64,
    /// CPUID leaf 1 EDX, as Linux reports it in AT_HWCAP.
    pub hwcap: u64,
    pub clktck: u64,
    pub random: [u8; 16],
}

/// Why the stack cannot be built (both are E2BIG for `execve`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackError {
    ArgumentTooLong,
    ArgumentsTooLarge,
}

/// Lay out the stack for `info` below `top`. Returns `sp` and the bytes of [sp, top).
pub fn build<'a>(top: u64, info: &StartInfo<'a>) -> Result<(u64, Vec<u8>), StackError> {
    let strings = info.argv.iter().chain(info.envp.iter());
    if strings.clone().any(|s| s.len() + 1 > MAX_ARG_STRLEN) {
        return Err(StackError::ArgumentTooLong);
    }
    let total: usize = strings.map(|s| s.len() + 1).sum::<usize>() + info.execfn.len() + 1;
    if total > MAX_ARG_TOTAL {
        return Err(StackError::ArgumentsTooLarge);
    }
    // The string area, filled downwards from the top (a NULL word at the very top, as Linux leaves it):
    // (address, bytes without their zero terminator, which the zeroed buffer supplies).
    let mut placed: Vec<(u64, &[u8])> = Vec::new();
    let mut cursor = top - 8;
    let mut put_str = |s: &'a str| -> u64 {
        cursor -= s.len() as u64 + 1;
        placed.push((cursor, s.as_bytes()));
        cursor
    };
    let execfn = put_str(info.execfn);
    let mut envs: Vec<u64> = info.envp.iter().rev().map(|s| put_str(s.as_str())).collect();
    envs.reverse();
    let mut args: Vec<u64> = info.argv.iter().rev().map(|s| put_str(s.as_str())).collect();
    args.reverse();
    let platform = put_str("x86_64");
    let mut cursor = placed.last().map_or(top - 8, |&(a, _)| a);
    cursor &= !0xF;
    cursor -= 16;
    let random = cursor;

    let auxv: [(u64, u64); 19] = [
        (at::PHDR, info.phdr),
        (at::PHENT, info.phent),
        (at::PHNUM, info.phnum),
        (at::PAGESZ, 4096),
        (at::BASE, info.base),
        (at::FLAGS, 0),
        (at::ENTRY, info.entry),
        (at::UID, 0),
        (at::EUID, 0),
        (at::GID, 0),
        (at::EGID, 0),
        (at::SECURE, 0),
        (at::HWCAP, info.hwcap),
        (at::HWCAP2, 0),
        (at::CLKTCK, info.clktck),
        (at::RANDOM, random),
        (at::PLATFORM, platform),
        (at::EXECFN, execfn),
        (at::NULL, 0),
    ];
    let mut words: Vec<u64> = Vec::with_capacity(3 + args.len() + envs.len() + 2 * auxv.len());
    words.push(args.len() as u64);
    words.extend_from_slice(&args);
    words.push(0);
    words.extend_from_slice(&envs);
    words.push(0);
    for (k, v) in auxv {
        words.push(k);
        words.push(v);
    }
    let sp = (random - words.len() as u64 * 8) & !0xF;
    let mut out = alloc::vec![0u8; (top - sp) as usize];
    let at = |addr: u64| (addr - sp) as usize;
    for (i, w) in words.iter().enumerate() {
        out[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
    }
    out[at(random)..at(random) + 16].copy_from_slice(&info.random);
    for (addr, bytes) in placed {
        out[at(addr)..at(addr) + bytes.len()].copy_from_slice(bytes);
    }
    Ok((sp, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn word(stack: &[u8], sp: u64, addr: u64) -> u64 {
        let i = (addr - sp) as usize;
        u64::from_le_bytes(stack[i..i + 8].try_into().unwrap())
    }

    fn c_str(stack: &[u8], sp: u64, addr: u64) -> String {
        let i = (addr - sp) as usize;
        let end = stack[i..].iter().position(|&b| b == 0).unwrap();
        String::from_utf8(stack[i..i + end].to_vec()).unwrap()
    }

    fn info<'a>(argv: &'a [String], envp: &'a [String]) -> StartInfo<'a> {
        StartInfo { argv, envp, execfn: "/bin/prog", phdr: 0x400040, phent: 56, phnum: 9, entry: 0x401000, base: 0, hwcap: 0x178bfbff, clktck: 100, random: [7; 16] }
    }

    #[test]
    fn the_stack_reads_as_the_abi_says() {
        let argv = ["prog".to_string(), "-n".to_string(), "3".to_string()];
        let envp = ["HOME=/".to_string(), "TERM=vt100".to_string()];
        let top = 0x7fff_ffff_f000;
        let (sp, s) = build(top, &info(&argv, &envp)).unwrap();
        assert_eq!(sp % 16, 0);
        assert_eq!(sp + s.len() as u64, top);
        assert_eq!(word(&s, sp, sp), 3);
        let arg = |i: u64| c_str(&s, sp, word(&s, sp, sp + 8 + 8 * i));
        assert_eq!((arg(0), arg(1), arg(2)), ("prog".into(), "-n".into(), "3".into()));
        assert_eq!(word(&s, sp, sp + 8 * 4), 0, "argv ends with NULL");
        let env = |i: u64| c_str(&s, sp, word(&s, sp, sp + 8 * 5 + 8 * i));
        assert_eq!((env(0), env(1)), ("HOME=/".into(), "TERM=vt100".into()));
        assert_eq!(word(&s, sp, sp + 8 * 7), 0, "envp ends with NULL");
        // The auxiliary vector, to AT_NULL.
        let mut aux = alloc::collections::BTreeMap::new();
        let mut p = sp + 8 * 8;
        loop {
            let (k, v) = (word(&s, sp, p), word(&s, sp, p + 8));
            p += 16;
            if k == at::NULL {
                break;
            }
            aux.insert(k, v);
        }
        assert_eq!(aux[&at::PHDR], 0x400040);
        assert_eq!(aux[&at::PHNUM], 9);
        assert_eq!(aux[&at::PAGESZ], 4096);
        assert_eq!(aux[&at::ENTRY], 0x401000);
        assert_eq!(aux[&at::CLKTCK], 100);
        assert_eq!(aux[&at::SECURE], 0);
        assert_eq!(c_str(&s, sp, aux[&at::EXECFN]), "/bin/prog");
        assert_eq!(c_str(&s, sp, aux[&at::PLATFORM]), "x86_64");
        let r = aux[&at::RANDOM];
        assert_eq!(&s[(r - sp) as usize..(r - sp) as usize + 16], &[7; 16]);
        // Everything lies inside [sp, top).
        for v in [aux[&at::EXECFN], aux[&at::PLATFORM], r] {
            assert!(v >= sp && v < top);
        }
    }

    #[test]
    fn no_arguments_and_no_environment() {
        let (sp, s) = build(0x8000_0000, &info(&[], &[])).unwrap();
        assert_eq!(word(&s, sp, sp), 0);
        assert_eq!(word(&s, sp, sp + 8), 0);
        assert_eq!(word(&s, sp, sp + 16), 0);
        assert_eq!(word(&s, sp, sp + 24), at::PHDR);
    }

    #[test]
    fn oversized_arguments_are_refused() {
        let long = ["x".repeat(MAX_ARG_STRLEN)];
        assert_eq!(build(0x8000_0000, &info(&long, &[])).unwrap_err(), StackError::ArgumentTooLong);
        let many: Vec<String> = (0..100).map(|_| "y".repeat(4000)).collect();
        assert_eq!(build(0x8000_0000, &info(&many, &[])).unwrap_err(), StackError::ArgumentsTooLarge);
    }
}
