//! Reading an initramfs: the "new ASCII" cpio format (newc, magic `070701`) Linux unpacks at boot and the
//! runner writes (`--root DIR`, busybox's applet links). Per entry a 110-byte header of thirteen 8-digit hex
//! fields, the NUL-terminated name padded to 4 bytes, the data padded to 4 bytes; `TRAILER!!!` ends the
//! archive. Pure logic, host-tested: a malformed archive is an error naming what is wrong and where.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    Regular,
    Symlink,
    CharDevice,
    /// Hard links to an earlier entry, FIFOs, sockets, block devices: skipped by the unpacker.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The path, without a leading "./" or "/".
    pub name: &'a str,
    pub kind: EntryKind,
    /// Permission bits (07777).
    pub perm: u32,
    /// A file's contents; a symbolic link's target.
    pub data: &'a [u8],
    /// A device's (major, minor).
    pub rdev: (u32, u32),
}

/// Every entry of `archive` up to its trailer, or the first problem (with its byte offset).
pub fn parse(archive: &[u8]) -> Result<Vec<Entry<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        let header = archive.get(at..at + 110).ok_or_else(|| format!("cpio: truncated header at byte {at} (no TRAILER!!! entry)"))?;
        if &header[..6] != b"070701" {
            return Err(format!("cpio: bad magic at byte {at} (not a newc archive)"));
        }
        let field = |i: usize| -> Result<u32, String> {
            let s = core::str::from_utf8(&header[6 + i * 8..14 + i * 8]).map_err(|_| format!("cpio: non-hex header field at byte {at}"))?;
            u32::from_str_radix(s, 16).map_err(|_| format!("cpio: non-hex header field {s:?} at byte {at}"))
        };
        let (mode, filesize, rmaj, rmin, namesize) = (field(1)?, field(6)? as usize, field(9)?, field(10)?, field(11)? as usize);
        if namesize == 0 || namesize > 4096 {
            return Err(format!("cpio: name size {namesize} at byte {at}"));
        }
        let name_bytes = archive.get(at + 110..at + 110 + namesize).ok_or_else(|| format!("cpio: truncated name at byte {at}"))?;
        if name_bytes[namesize - 1] != 0 {
            return Err(format!("cpio: name not NUL-terminated at byte {at}"));
        }
        let name = core::str::from_utf8(&name_bytes[..namesize - 1]).map_err(|_| format!("cpio: name is not UTF-8 at byte {at}"))?;
        let data_at = (at + 110 + namesize).next_multiple_of(4);
        let data = archive.get(data_at..data_at + filesize).ok_or_else(|| format!("cpio: {name}: {filesize} bytes of data run past the end of the archive"))?;
        if name == "TRAILER!!!" {
            return Ok(out);
        }
        let kind = match mode & 0o170000 {
            0o040000 => EntryKind::Directory,
            0o100000 => EntryKind::Regular,
            0o120000 => EntryKind::Symlink,
            0o020000 => EntryKind::CharDevice,
            _ => EntryKind::Other,
        };
        let name = name.trim_start_matches("./").trim_start_matches('/');
        if name.split('/').any(|c| c == "..") {
            return Err(format!("cpio: {name}: a path with \"..\" would leave the tree"));
        }
        if !name.is_empty() && name != "." {
            out.push(Entry { name, kind, perm: mode & 0o7777, data, rdev: (rmaj, rmin) });
        }
        at = (data_at + filesize).next_multiple_of(4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A newc archive as the runner writes it (the same layout, built here independently).
    fn archive(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        let put = |name: &str, mode: u32, data: &[u8], b: &mut Vec<u8>| {
            b.extend_from_slice(b"070701");
            for f in [1, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0] {
                b.extend_from_slice(format!("{f:08x}").as_bytes());
            }
            b.extend_from_slice(name.as_bytes());
            b.push(0);
            while b.len() % 4 != 0 {
                b.push(0);
            }
            b.extend_from_slice(data);
            while b.len() % 4 != 0 {
                b.push(0);
            }
        };
        for (n, m, d) in entries {
            put(n, *m, d, &mut b);
        }
        put("TRAILER!!!", 0, &[], &mut b);
        b
    }

    #[test]
    fn entries_come_out_with_kinds_modes_and_data() {
        let a = archive(&[(".", 0o040755, b""), ("etc", 0o040755, b""), ("etc/motd", 0o100644, b"hello\n"), ("./bin/sh", 0o120777, b"busybox")]);
        let e = parse(&a).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!((e[0].name, e[0].kind, e[0].perm), ("etc", EntryKind::Directory, 0o755));
        assert_eq!((e[1].name, e[1].kind, e[1].data), ("etc/motd", EntryKind::Regular, &b"hello\n"[..]));
        assert_eq!((e[2].name, e[2].kind, e[2].data), ("bin/sh", EntryKind::Symlink, &b"busybox"[..]));
    }

    #[test]
    fn malformed_archives_are_refused_with_the_reason() {
        let good = archive(&[("f", 0o100644, b"data")]);
        assert!(parse(&good[..good.len() - 20]).unwrap_err().contains("truncated"));
        let mut bad_magic = good.clone();
        bad_magic[0] = b'1';
        assert!(parse(&bad_magic).unwrap_err().contains("magic"));
        let mut bad_hex = good.clone();
        bad_hex[60] = b'z';
        assert!(parse(&bad_hex).unwrap_err().contains("non-hex"));
        let mut too_big = good.clone();
        too_big[6 + 6 * 8..14 + 6 * 8].copy_from_slice(b"00ffffff");
        assert!(parse(&too_big).unwrap_err().contains("past the end"));
        assert!(parse(&archive(&[("../etc/passwd", 0o100644, b"x")])).unwrap_err().contains(".."));
        assert!(parse(b"").unwrap_err().contains("truncated"));
    }
}
