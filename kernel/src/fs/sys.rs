//! The file system calls, as Linux defines them (man 2 open, read, stat, getdents64, rename, ...): each takes
//! the calling process's [`FsState`] (from the process table, through the system-call layer) and returns the
//! result or a negative errno. Everyone is root (uid 0): permission bits are stored and reported, and only
//! execute permission is checked (as for root on Linux).

use super::files::*;
use super::tmpfs::{FileType, Stat as TStat, Timespec, NAME_MAX, ROOT};
use super::vfs::{Node, PATH_MAX};
use crate::linux_abi::{makedev, Stat};
use crate::sync::IrqSpinlock;
use alloc::string::String;
use alloc::vec::Vec;
use questv_libc_shim::errno::*;

pub const AT_FDCWD: i64 = -100;
pub const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
pub const AT_REMOVEDIR: u64 = 0x200;
pub const AT_SYMLINK_FOLLOW: u64 = 0x400;
pub const AT_NO_AUTOMOUNT: u64 = 0x800;
pub const AT_EMPTY_PATH: u64 = 0x1000;
pub const AT_EACCESS: u64 = 0x200;
/// The most one read or write moves (Linux's MAX_RW_COUNT is 2 GiB less a page; a bound keeps the kernel's
/// bounce buffer small, and a short count is what callers handle anyway).
pub const MAX_IO: usize = 1 << 20;

type St = IrqSpinlock<FsState>;

/// A path argument: EFAULT, ENAMETOOLONG, or ENOENT for an empty path (unless `empty_ok`). Paths that are
/// not UTF-8 name nothing here (ENOENT), as no name in the tree can hold such bytes.
fn path_arg(addr: u64, empty_ok: bool) -> Result<String, i64> {
    let bytes = crate::user::read_cstr(addr, PATH_MAX, -ENAMETOOLONG)?;
    if bytes.is_empty() && !empty_ok {
        return Err(-ENOENT);
    }
    String::from_utf8(bytes).map_err(|_| -ENOENT)
}

/// The directory a `*at` call's path is relative to.
fn base(st: &St, dirfd: i64) -> Result<Node, i64> {
    let s = st.lock();
    if dirfd as i32 == AT_FDCWD as i32 {
        return Ok(s.cwd);
    }
    match &s.files.get(dirfd)?.kind {
        Kind::Dir(n) => Ok(*n),
        _ => Err(-ENOTDIR),
    }
}

fn file(st: &St, fd: i64) -> Result<File, i64> {
    st.lock().files.get(fd).cloned()
}

fn result(r: Result<i64, i64>) -> i64 {
    r.unwrap_or_else(|e| e)
}

const TMP_DEV: u64 = makedev(0, 0x1a);
const PROC_DEV: u64 = makedev(0, 0x16);

fn tree_stat(t: &TStat) -> Stat {
    Stat {
        dev: TMP_DEV,
        ino: t.ino,
        nlink: u64::from(t.nlink),
        mode: t.mode(),
        uid: t.uid,
        gid: t.gid,
        rdev: t.rdev,
        size: t.size as i64,
        blksize: 4096,
        blocks: t.blocks() as i64,
        atime: (t.atime.sec, t.atime.nsec),
        mtime: (t.mtime.sec, t.mtime.nsec),
        ctime: (t.ctime.sec, t.ctime.nsec),
    }
}

/// What `stat` says of a node of the tree.
fn node_stat(n: Node) -> Result<Stat, i64> {
    match n {
        Node::Tmp(ino) => with_tree(|v| v.tmp.stat(ino)).map(|t| tree_stat(&t)),
        Node::Gen(id) => {
            let kind = generated().kind(id)?;
            let perm = match kind {
                FileType::Directory => 0o555,
                FileType::Symlink => 0o777,
                _ => 0o444,
            };
            let t = now();
            Ok(Stat {
                dev: PROC_DEV,
                ino: 0x1000 + id,
                nlink: if kind == FileType::Directory { 2 } else { 1 },
                mode: kind.mode_bits() | perm,
                blksize: 1024,
                atime: (t.sec, t.nsec),
                mtime: (t.sec, t.nsec),
                ctime: (t.sec, t.nsec),
                ..Stat::default()
            })
        }
    }
}

/// What `fstat` says of an open file.
fn file_stat(f: &OpenFile) -> Result<Stat, i64> {
    match &f.kind {
        Kind::Inode(ino) => node_stat(Node::Tmp(*ino)),
        Kind::Dir(n) => node_stat(*n),
        Kind::Device(Device::Console) => Ok(Stat::console()),
        Kind::Device(d) => {
            let t = now();
            Ok(Stat { dev: makedev(0, 5), ino: 4 + d.rdev(), nlink: 1, mode: FileType::CharDevice.mode_bits() | 0o666, rdev: d.rdev(), blksize: 4096, atime: (t.sec, t.nsec), mtime: (t.sec, t.nsec), ctime: (t.sec, t.nsec), ..Stat::default() })
        }
        Kind::PipeRead(p) | Kind::PipeWrite(p) => {
            let t = now();
            Ok(Stat { dev: makedev(0, 0xc), ino: (alloc::sync::Arc::as_ptr(p) as u64) >> 4, nlink: 1, mode: FileType::Fifo.mode_bits() | 0o600, blksize: 4096, atime: (t.sec, t.nsec), mtime: (t.sec, t.nsec), ctime: (t.sec, t.nsec), ..Stat::default() })
        }
        Kind::Generated(_) => {
            // As Linux's /proc files: size 0 whatever a read returns.
            let t = now();
            Ok(Stat { dev: PROC_DEV, ino: 0x10_0000, nlink: 1, mode: FileType::Regular.mode_bits() | 0o444, blksize: 1024, atime: (t.sec, t.nsec), mtime: (t.sec, t.nsec), ctime: (t.sec, t.nsec), ..Stat::default() })
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// open, close

/// openat(2).
pub fn openat(st: &St, dirfd: i64, path_addr: u64, flags: u64, mode: u64) -> i64 {
    result((|| {
        let flags = flags as u32;
        let path = path_arg(path_addr, false)?;
        let start = base(st, dirfd)?;
        if flags & O_TMPFILE == O_TMPFILE {
            // Unnamed temporary files are not made (docs/files.md).
            return Err(-EOPNOTSUPP_LINUX);
        }
        let umask = st.lock().umask;
        let g = generated();
        let t = now();
        let node = with_tree(|v| -> Result<Node, i64> {
            let found = if flags & O_CREAT != 0 {
                let p = v.resolve_parent(g, start, &path)?;
                if p.trailing_slash || p.name.is_empty() {
                    return Err(-EISDIR);
                }
                match v.lookup(g, p.dir, p.name) {
                    Ok(n) => {
                        if flags & O_EXCL != 0 {
                            return Err(-EEXIST);
                        }
                        // An existing symbolic link is followed (O_EXCL and O_NOFOLLOW aside).
                        if v.kind(g, n)? == FileType::Symlink {
                            if flags & O_NOFOLLOW != 0 {
                                return Err(-ELOOP);
                            }
                            v.resolve(g, p.dir, p.name, true)?
                        } else {
                            n
                        }
                    }
                    Err(e) if e == -ENOENT => {
                        let Node::Tmp(dir) = p.dir else { return Err(-EACCES) };
                        let ino = v.tmp.create(dir, p.name, FileType::Regular, (mode as u32) & !umask & 0o7777, 0, 0, 0, t)?;
                        Node::Tmp(ino)
                    }
                    Err(e) => return Err(e),
                }
            } else {
                let n = v.resolve(g, start, &path, flags & O_NOFOLLOW == 0)?;
                if flags & O_NOFOLLOW != 0 && v.kind(g, n)? == FileType::Symlink && flags & O_PATH == 0 {
                    return Err(-ELOOP);
                }
                n
            };
            Ok(found)
        })?;
        open_node(st, node, flags, path)
    })())
}

const EOPNOTSUPP_LINUX: i64 = 95;

/// Make the open file for `node` and give it a descriptor.
fn open_node(st: &St, node: Node, flags: u32, path: String) -> Result<i64, i64> {
    let g = generated();
    if let Node::Gen(id) = node {
        if let Some((pid, fd)) = g.open_file_link(id) {
            // /proc/PID/fd/N (and /dev/stdin...): that very open file, for an access it allows.
            let f = open_file_of(pid, fd).ok_or(-ENOENT)?;
            let writing = matches!(flags & O_ACCMODE, O_WRONLY | O_RDWR);
            let reading = flags & O_ACCMODE != O_WRONLY;
            if (writing && !f.writable()) || (reading && !f.readable()) {
                return Err(-EACCES);
            }
            return st.lock().files.insert(f, flags & O_CLOEXEC != 0, 0);
        }
    }
    let writing = matches!(flags & O_ACCMODE, O_WRONLY | O_RDWR);
    if flags & O_ACCMODE == 3 {
        return Err(-EINVAL);
    }
    let kind = match node {
        Node::Tmp(ino) => {
            let (ft, rdev) = with_tree(|v| -> Result<(FileType, u64), i64> {
                let s = v.tmp.stat(ino)?;
                Ok((s.kind, s.rdev))
            })?;
            match ft {
                FileType::Directory => {
                    if writing {
                        return Err(-EISDIR);
                    }
                    with_tree(|v| v.tmp.open(ino))?;
                    Kind::Dir(node)
                }
                _ if flags & O_DIRECTORY != 0 => return Err(-ENOTDIR),
                FileType::Regular => {
                    with_tree(|v| -> Result<(), i64> {
                        if flags & O_TRUNC != 0 && writing {
                            v.tmp.truncate(ino, 0, now())?;
                        }
                        v.tmp.open(ino)
                    })?;
                    Kind::Inode(ino)
                }
                FileType::CharDevice => Kind::Device(Device::from_rdev(rdev).ok_or(-ENXIO)?),
                FileType::Symlink => {
                    // Only O_PATH|O_NOFOLLOW gets here; questv does not hand out O_PATH descriptors on links.
                    return Err(-ELOOP);
                }
                FileType::Fifo => return Err(-ENXIO),
            }
        }
        Node::Gen(id) => match g.kind(id)? {
            FileType::Directory => {
                if writing {
                    return Err(-EISDIR);
                }
                Kind::Dir(node)
            }
            _ if flags & O_DIRECTORY != 0 => return Err(-ENOTDIR),
            _ if writing => return Err(-EACCES),
            _ => Kind::Generated(g.contents(id)?),
        },
    };
    let file = OpenFile::new(kind, flags, path);
    st.lock().files.insert(file, flags & O_CLOEXEC != 0, 0)
}

/// close(2).
pub fn close(st: &St, fd: i64) -> i64 {
    // The file is dropped (and a pipe's other end woken) after the descriptor table's lock is released.
    let removed = st.lock().files.remove(fd);
    match removed {
        Ok(f) => {
            drop(f);
            0
        }
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------------------
// read, write

/// Bytes from the pipe: waits while it is empty and has a writer.
fn pipe_read(f: &OpenFile, p: &PipeShared, buf: &mut [u8]) -> Result<usize, i64> {
    loop {
        p.wait_here();
        let r = p.pipe.lock().read(buf);
        match r {
            super::pipe::Read::Data(n) => {
                p.wake_all();
                return Ok(n);
            }
            super::pipe::Read::EndOfFile => return Ok(0),
            super::pipe::Read::Empty => {
                if f.nonblocking() {
                    return Err(-EAGAIN);
                }
                if interrupted() {
                    return Err(-crate::signal::ERESTARTSYS);
                }
                crate::sched::block();
            }
        }
    }
}

/// Bytes into the pipe: all of them, waiting for room (a write of at most PIPE_BUF bytes goes in whole).
/// EPIPE when no reader is left (the caller raises SIGPIPE); a signal after some bytes went in ends the
/// call with the count.
fn pipe_write(f: &OpenFile, p: &PipeShared, data: &[u8]) -> Result<usize, i64> {
    let mut done = 0;
    loop {
        p.wait_here();
        let r = p.pipe.lock().write(&data[done..], data.len());
        match r {
            super::pipe::Write::Wrote(n) => {
                done += n;
                p.wake_all();
                if done == data.len() {
                    return Ok(done);
                }
            }
            super::pipe::Write::Broken => return if done > 0 { Ok(done) } else { Err(-EPIPE) },
            super::pipe::Write::Full => {
                if f.nonblocking() {
                    return if done > 0 { Ok(done) } else { Err(-EAGAIN) };
                }
                if interrupted() {
                    return if done > 0 { Ok(done) } else { Err(-crate::signal::ERESTARTSYS) };
                }
                crate::sched::block();
            }
        }
    }
}

/// Read up to `len` bytes of `f` into user memory at `buf`; `at` for pread (the file offset untouched).
pub fn read_file(f: &OpenFile, buf: u64, len: usize, at: Option<u64>) -> Result<usize, i64> {
    if !f.readable() {
        return Err(-EBADF);
    }
    let len = len.min(MAX_IO);
    // A read that may wait (a pipe, the terminal) fails on a bad buffer first, as Linux's does; the probe
    // writes back the byte it read, so the buffer is unchanged.
    if len > 0 && matches!(f.kind, Kind::PipeRead(_) | Kind::Device(Device::Console | Device::Tty)) {
        let b: [u8; 1] = crate::user::read_array(buf)?;
        crate::user::write(buf, &b)?;
    }
    let data: Vec<u8> = match &f.kind {
        Kind::Inode(ino) => {
            let mut off = f.offset.lock();
            let pos = at.unwrap_or(*off);
            let mut data = alloc::vec![0u8; len];
            let n = with_tree(|v| v.tmp.read(*ino, pos, &mut data))?;
            data.truncate(n);
            crate::user::write(buf, &data)?;
            if at.is_none() {
                *off = pos + n as u64;
            }
            return Ok(n);
        }
        Kind::Dir(_) => return Err(-EISDIR),
        Kind::Generated(content) => {
            let mut off = f.offset.lock();
            let pos = at.unwrap_or(*off) as usize;
            let part = content.get(pos.min(content.len())..).unwrap_or(&[]);
            let n = part.len().min(len);
            crate::user::write(buf, &part[..n])?;
            if at.is_none() {
                *off = (pos + n) as u64;
            }
            return Ok(n);
        }
        Kind::Device(d) => {
            if at.is_some() && d.is_terminal() {
                return Err(-ESPIPE);
            }
            match d {
                Device::Null => Vec::new(),
                Device::Zero | Device::Full => alloc::vec![0u8; len],
                Device::Random | Device::Urandom => {
                    let mut v = alloc::vec![0u8; len];
                    for chunk in v.chunks_mut(16) {
                        let r = crate::entropy::random_bytes();
                        chunk.copy_from_slice(&r[..chunk.len()]);
                    }
                    v
                }
                Device::Console | Device::Tty => super::terminal::read(len, f.nonblocking())?,
            }
        }
        Kind::PipeRead(p) => {
            if at.is_some() {
                return Err(-ESPIPE);
            }
            let mut data = alloc::vec![0u8; len];
            let n = pipe_read(f, p, &mut data)?;
            data.truncate(n);
            data
        }
        Kind::PipeWrite(_) => return Err(-EBADF),
    };
    crate::user::write(buf, &data)?;
    Ok(data.len())
}

/// Write `len` bytes of user memory at `buf` to `f`; `at` for pwrite.
pub fn write_file(f: &OpenFile, buf: u64, len: usize, at: Option<u64>) -> Result<usize, i64> {
    if !f.writable() {
        return Err(-EBADF);
    }
    let len = len.min(MAX_IO);
    let mut data = alloc::vec![0u8; len];
    crate::user::read(buf, &mut data)?;
    write_data(f, &data, at)
}

/// Write `data` (already in the kernel) to `f` as one write: a terminal or a pipe takes it whole, so writev's
/// pieces do not interleave with another writer's.
fn write_data(f: &OpenFile, data: &[u8], at: Option<u64>) -> Result<usize, i64> {
    let len = data.len();
    if len == 0 {
        // Nothing to write is nothing done (no EPIPE, no SIGPIPE), as on Linux.
        return Ok(0);
    }
    match &f.kind {
        Kind::Inode(ino) => {
            let mut off = f.offset.lock();
            let t = now();
            with_tree(|v| -> Result<usize, i64> {
                // O_APPEND writes at the end (pwrite too, as Linux does).
                let pos = if f.flags() & O_APPEND != 0 { v.tmp.stat(*ino)?.size } else { at.unwrap_or(*off) };
                let n = v.tmp.write(*ino, pos, data, t)?;
                if at.is_none() || f.flags() & O_APPEND != 0 {
                    *off = pos + n as u64;
                }
                Ok(n)
            })
        }
        Kind::Device(d) => match d {
            Device::Full => Err(-ENOSPC),
            Device::Console | Device::Tty => {
                if at.is_some() {
                    return Err(-ESPIPE);
                }
                super::terminal::write(data);
                Ok(len)
            }
            _ => Ok(len),
        },
        Kind::PipeWrite(p) => {
            if at.is_some() {
                return Err(-ESPIPE);
            }
            pipe_write(f, p, data)
        }
        Kind::Dir(_) => Err(-EISDIR),
        Kind::PipeRead(_) | Kind::Generated(_) => Err(-EBADF),
    }
}

pub fn read(st: &St, fd: i64, buf: u64, len: u64) -> i64 {
    result(file(st, fd).and_then(|f| read_file(&f, buf, len as usize, None)).map(|n| n as i64))
}

pub fn write(st: &St, fd: i64, buf: u64, len: u64) -> i64 {
    result(file(st, fd).and_then(|f| write_file(&f, buf, len as usize, None)).map(|n| n as i64))
}

pub fn pread(st: &St, fd: i64, buf: u64, len: u64, at: i64) -> i64 {
    if at < 0 {
        return -EINVAL;
    }
    result(file(st, fd).and_then(|f| read_file(&f, buf, len as usize, Some(at as u64))).map(|n| n as i64))
}

pub fn pwrite(st: &St, fd: i64, buf: u64, len: u64, at: i64) -> i64 {
    if at < 0 {
        return -EINVAL;
    }
    result(file(st, fd).and_then(|f| write_file(&f, buf, len as usize, Some(at as u64))).map(|n| n as i64))
}

/// readv(2), writev(2): each piece in turn; a short piece ends the call (with the bytes moved so far).
pub fn vectored(st: &St, fd: i64, iov: u64, count: u64, writing: bool) -> i64 {
    result((|| {
        let f = file(st, fd)?;
        if count > crate::linux_abi::IOV_MAX {
            return Err(-EINVAL);
        }
        let mut raw = alloc::vec![0u8; count as usize * 16];
        crate::user::read(iov, &mut raw)?;
        let pieces = crate::linux_abi::parse_iovecs(&raw).map_err(|e| -e)?;
        if writing {
            if !f.writable() {
                return Err(-EBADF);
            }
            // Gathered and written at once (as Linux's writev is one write): a line printed as text + "\n"
            // pieces reaches the terminal whole. A piece that cannot be read ends the gathering.
            let mut data = Vec::new();
            for (base, len) in pieces {
                let take = (len as usize).min(MAX_IO - data.len());
                let at = data.len();
                data.resize(at + take, 0);
                if let Err(e) = crate::user::read(base, &mut data[at..]) {
                    data.truncate(at);
                    if data.is_empty() {
                        return Err(e);
                    }
                    break;
                }
                if data.len() == MAX_IO {
                    break;
                }
            }
            return write_data(&f, &data, None).map(|n| n as i64);
        }
        let mut done = 0usize;
        for (base, len) in pieces {
            if len == 0 {
                continue;
            }
            let r = read_file(&f, base, len as usize, None);
            match r {
                Ok(n) => {
                    done += n;
                    if (n as u64) < len {
                        break;
                    }
                }
                // Linux: an error after some bytes moved reports the bytes.
                Err(e) => return if done > 0 { Ok(done as i64) } else { Err(e) },
            }
        }
        Ok(done as i64)
    })())
}

/// lseek(2).
pub fn lseek(st: &St, fd: i64, offset: i64, whence: u64) -> i64 {
    const SEEK_SET: u64 = 0;
    const SEEK_CUR: u64 = 1;
    const SEEK_END: u64 = 2;
    result((|| {
        let f = file(st, fd)?;
        let size = match &f.kind {
            Kind::Inode(ino) => with_tree(|v| v.tmp.stat(*ino))?.size,
            Kind::Generated(c) => c.len() as u64,
            Kind::Dir(_) => 0,
            Kind::Device(d) if !d.is_terminal() => 0,
            _ => return Err(-ESPIPE),
        };
        let mut off = f.offset.lock();
        let from: i64 = match whence {
            SEEK_SET => 0,
            SEEK_CUR => *off as i64,
            SEEK_END => size as i64,
            _ => return Err(-EINVAL),
        };
        let new = from.checked_add(offset).ok_or(-EOVERFLOW)?;
        if new < 0 {
            return Err(-EINVAL);
        }
        *off = new as u64;
        Ok(new)
    })())
}

const EOVERFLOW: i64 = 75;

// ---------------------------------------------------------------------------------------------------------
// stat

pub fn fstat(st: &St, fd: i64, buf: u64) -> i64 {
    result((|| {
        let s = file_stat(&*file(st, fd)?)?;
        crate::user::write(buf, &s.to_bytes())?;
        Ok(0)
    })())
}

/// What a `*at` stat call names: the path (links followed unless AT_SYMLINK_NOFOLLOW), or with
/// AT_EMPTY_PATH and an empty path the descriptor itself.
fn stat_target(st: &St, dirfd: i64, path_addr: u64, flags: u64) -> Result<Stat, i64> {
    let path = path_arg(path_addr, flags & AT_EMPTY_PATH != 0)?;
    if path.is_empty() {
        if dirfd as i32 == AT_FDCWD as i32 {
            return node_stat(st.lock().cwd);
        }
        return file_stat(&*file(st, dirfd)?);
    }
    let start = base(st, dirfd)?;
    let node = with_tree(|v| v.resolve(generated(), start, &path, flags & AT_SYMLINK_NOFOLLOW == 0))?;
    node_stat(node)
}

/// newfstatat(2), stat(2), lstat(2).
pub fn newfstatat(st: &St, dirfd: i64, path: u64, buf: u64, flags: u64) -> i64 {
    if flags & !(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT) != 0 {
        return -EINVAL;
    }
    result(stat_target(st, dirfd, path, flags).and_then(|s| crate::user::write(buf, &s.to_bytes())).map(|()| 0))
}

/// statx(2): the basic statistics (STATX_BASIC_STATS), whatever the mask asks.
pub fn statx(st: &St, dirfd: i64, path: u64, flags: u64, mask: u64, buf: u64) -> i64 {
    const AT_STATX_SYNC_TYPE: u64 = 0x6000;
    const STATX_RESERVED: u64 = 0x8000_0000;
    if flags & !(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_STATX_SYNC_TYPE) != 0 || flags & AT_STATX_SYNC_TYPE == AT_STATX_SYNC_TYPE || mask & STATX_RESERVED != 0 {
        return -EINVAL;
    }
    result((|| {
        let s = stat_target(st, dirfd, path, flags)?;
        let mut b = [0u8; 256];
        let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        put(0, &0x7ffu32.to_le_bytes());
        put(4, &(s.blksize as u32).to_le_bytes());
        put(16, &(s.nlink as u32).to_le_bytes());
        put(20, &s.uid.to_le_bytes());
        put(24, &s.gid.to_le_bytes());
        put(28, &(s.mode as u16).to_le_bytes());
        put(32, &s.ino.to_le_bytes());
        put(40, &(s.size as u64).to_le_bytes());
        put(48, &(s.blocks as u64).to_le_bytes());
        for (at, t) in [(0x40, s.atime), (0x60, s.ctime), (0x70, s.mtime)] {
            put(at, &t.0.to_le_bytes());
            put(at + 8, &(t.1 as u32).to_le_bytes());
        }
        let (rmaj, rmin) = ((s.rdev >> 8) & 0xfff, (s.rdev & 0xff) | ((s.rdev >> 12) & !0xff));
        let (dmaj, dmin) = ((s.dev >> 8) & 0xfff, (s.dev & 0xff) | ((s.dev >> 12) & !0xff));
        put(0x80, &(rmaj as u32).to_le_bytes());
        put(0x84, &(rmin as u32).to_le_bytes());
        put(0x88, &(dmaj as u32).to_le_bytes());
        put(0x8c, &(dmin as u32).to_le_bytes());
        crate::user::write(buf, &b)?;
        Ok(0)
    })())
}

/// statfs(2) / fstatfs(2): the tree's size and use, in 4 KiB blocks, with tmpfs's magic number.
pub fn statfs_bytes() -> [u8; 120] {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    let (limit, used) = with_tree(|v| v.tmp.usage());
    let blocks = limit / 4096;
    let free = limit.saturating_sub(used) / 4096;
    let mut b = [0u8; 120];
    let words = [TMPFS_MAGIC, 4096, blocks, free, free, limit / 128, limit.saturating_sub(used) / 128, 0, NAME_MAX as u64, 4096, 0x20];
    for (i, w) in words.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    b
}

pub fn statfs(st: &St, path: u64, buf: u64) -> i64 {
    result((|| {
        stat_target(st, AT_FDCWD, path, 0)?;
        crate::user::write(buf, &statfs_bytes())?;
        Ok(0)
    })())
}

pub fn fstatfs(st: &St, fd: i64, buf: u64) -> i64 {
    result((|| {
        file(st, fd)?;
        crate::user::write(buf, &statfs_bytes())?;
        Ok(0)
    })())
}

// ---------------------------------------------------------------------------------------------------------
// directories

/// getdents64(2): entries from the directory's offset (an index into its listing), as many whole
/// `linux_dirent64` records as fit; EINVAL if not even one fits.
pub fn getdents64(st: &St, fd: i64, buf: u64, len: u64) -> i64 {
    result((|| {
        let f = file(st, fd)?;
        let Kind::Dir(node) = &f.kind else { return Err(-ENOTDIR) };
        let entries: Vec<(String, u64, u8)> = match *node {
            Node::Tmp(ino) => with_tree(|v| v.tmp.read_dir(ino))?.into_iter().map(|(n, i, k)| (n, i, k.dirent_type())).collect(),
            Node::Gen(id) => generated().entries(id)?.into_iter().map(|(n, i, k)| (n, 0x1000 + i, k.dirent_type())).collect(),
        };
        let mut off = f.offset.lock();
        let mut out = Vec::new();
        let mut i = *off as usize;
        while let Some((name, ino, kind)) = entries.get(i) {
            let reclen = (19 + name.len() + 1).div_ceil(8) * 8;
            if out.len() + reclen > len as usize {
                break;
            }
            out.extend_from_slice(&ino.to_le_bytes());
            out.extend_from_slice(&((i + 1) as i64).to_le_bytes());
            out.extend_from_slice(&(reclen as u16).to_le_bytes());
            out.push(*kind);
            out.extend_from_slice(name.as_bytes());
            out.resize(out.len() + (reclen - 19 - name.len()), 0);
            i += 1;
        }
        if out.is_empty() && i < entries.len() {
            return Err(-EINVAL);
        }
        crate::user::write(buf, &out)?;
        *off = i as u64;
        Ok(out.len() as i64)
    })())
}

/// mkdirat(2).
pub fn mkdirat(st: &St, dirfd: i64, path: u64, mode: u64) -> i64 {
    result((|| {
        let path = path_arg(path, false)?;
        let start = base(st, dirfd)?;
        let umask = st.lock().umask;
        with_tree(|v| {
            let p = v.resolve_parent(generated(), start, &path)?;
            if p.name.is_empty() || p.name == "." || p.name == ".." {
                return Err(-EEXIST);
            }
            let Node::Tmp(dir) = p.dir else { return Err(-EACCES) };
            v.tmp.create(dir, p.name, FileType::Directory, (mode as u32) & !umask & 0o7777, 0, 0, 0, now()).map(|_| 0)
        })
    })())
}

/// unlinkat(2) (AT_REMOVEDIR: rmdir).
pub fn unlinkat(st: &St, dirfd: i64, path: u64, flags: u64) -> i64 {
    if flags & !AT_REMOVEDIR != 0 {
        return -EINVAL;
    }
    result((|| {
        let path = path_arg(path, false)?;
        let start = base(st, dirfd)?;
        with_tree(|v| {
            let p = v.resolve_parent(generated(), start, &path)?;
            let Node::Tmp(dir) = p.dir else { return Err(-EACCES) };
            if flags & AT_REMOVEDIR != 0 {
                if p.name.is_empty() {
                    return Err(-EBUSY);
                }
                v.tmp.rmdir(dir, p.name, now()).map(|()| 0)
            } else {
                if p.name.is_empty() || p.name == "." || p.name == ".." {
                    return Err(-EISDIR);
                }
                let target = v.tmp.lookup(dir, p.name)?;
                if p.trailing_slash && v.tmp.kind(target)? != FileType::Directory {
                    return Err(-ENOTDIR);
                }
                v.tmp.unlink(dir, p.name, now()).map(|()| 0)
            }
        })
    })())
}

/// renameat2(2) (renameat, rename: flags 0).
pub fn renameat2(st: &St, olddirfd: i64, old: u64, newdirfd: i64, new: u64, flags: u64) -> i64 {
    result((|| {
        let (old, new) = (path_arg(old, false)?, path_arg(new, false)?);
        let (ostart, nstart) = (base(st, olddirfd)?, base(st, newdirfd)?);
        with_tree(|v| {
            let g = generated();
            let o = v.resolve_parent(g, ostart, &old)?;
            let n = v.resolve_parent(g, nstart, &new)?;
            let (Node::Tmp(od), Node::Tmp(nd)) = (o.dir, n.dir) else { return Err(-EXDEV) };
            if o.name.is_empty() || n.name.is_empty() {
                return Err(-EBUSY);
            }
            if o.trailing_slash || n.trailing_slash {
                if v.tmp.kind(v.tmp.lookup(od, o.name)?)? != FileType::Directory {
                    return Err(-ENOTDIR);
                }
            }
            v.tmp.rename(od, o.name, nd, n.name, flags as u32, now()).map(|()| 0)
        })
    })())
}

/// linkat(2).
pub fn linkat(st: &St, olddirfd: i64, old: u64, newdirfd: i64, new: u64, flags: u64) -> i64 {
    if flags & !(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH) != 0 {
        return -EINVAL;
    }
    result((|| {
        let (old, new) = (path_arg(old, false)?, path_arg(new, false)?);
        let (ostart, nstart) = (base(st, olddirfd)?, base(st, newdirfd)?);
        with_tree(|v| {
            let g = generated();
            let target = v.resolve(g, ostart, &old, flags & AT_SYMLINK_FOLLOW != 0)?;
            let n = v.resolve_parent(g, nstart, &new)?;
            let (Node::Tmp(ino), Node::Tmp(dir)) = (target, n.dir) else { return Err(-EXDEV) };
            if n.name.is_empty() || n.name == "." || n.name == ".." {
                return Err(-EEXIST);
            }
            v.tmp.link(ino, dir, n.name, now()).map(|()| 0)
        })
    })())
}

/// symlinkat(2).
pub fn symlinkat(st: &St, target: u64, newdirfd: i64, path: u64) -> i64 {
    result((|| {
        let target = path_arg(target, false)?;
        let path = path_arg(path, false)?;
        let start = base(st, newdirfd)?;
        with_tree(|v| {
            let p = v.resolve_parent(generated(), start, &path)?;
            let Node::Tmp(dir) = p.dir else { return Err(-EACCES) };
            if p.name.is_empty() || p.name == "." || p.name == ".." {
                return Err(-EEXIST);
            }
            v.tmp.symlink(dir, p.name, &target, 0, 0, now()).map(|_| 0)
        })
    })())
}

/// readlinkat(2): the target, truncated to the buffer (no NUL), EINVAL if not a link.
pub fn readlinkat(st: &St, dirfd: i64, path: u64, buf: u64, len: u64) -> i64 {
    if (len as i64) <= 0 {
        return -EINVAL;
    }
    result((|| {
        let path = path_arg(path, false)?;
        let start = base(st, dirfd)?;
        let target = with_tree(|v| -> Result<String, i64> {
            let g = generated();
            match v.resolve(g, start, &path, false)? {
                Node::Tmp(ino) => v.tmp.readlink(ino).map(String::from),
                Node::Gen(id) => g.readlink(id),
            }
        })?;
        let n = target.len().min(len as usize);
        crate::user::write(buf, &target.as_bytes()[..n])?;
        Ok(n as i64)
    })())
}

/// chdir(2).
pub fn chdir(st: &St, path: u64) -> i64 {
    result((|| {
        let path = path_arg(path, false)?;
        let start = st.lock().cwd;
        let (node, path) = with_tree(|v| -> Result<(Node, String), i64> {
            let g = generated();
            let n = v.resolve(g, start, &path, true)?;
            if v.kind(g, n)? != FileType::Directory {
                return Err(-ENOTDIR);
            }
            Ok((n, v.path_of(g, n).unwrap_or(path)))
        })?;
        let mut s = st.lock();
        s.cwd = node;
        s.cwd_path = path;
        Ok(0)
    })())
}

/// fchdir(2).
pub fn fchdir(st: &St, fd: i64) -> i64 {
    let (node, opened_as) = match st.lock().files.get(fd).map(|f| (&f.kind, f.path.clone())) {
        Ok((Kind::Dir(n), p)) => (*n, p),
        Ok(_) => return -ENOTDIR,
        Err(e) => return e,
    };
    let path = with_tree(|v| v.path_of(generated(), node)).unwrap_or(opened_as);
    let mut s = st.lock();
    s.cwd = node;
    s.cwd_path = path;
    0
}

/// getcwd(2): the path and its NUL; ERANGE if the buffer is too small, ENOENT if the directory was removed.
pub fn getcwd(st: &St, buf: u64, size: u64) -> i64 {
    result((|| {
        let cwd = st.lock().cwd;
        let path = with_tree(|v| -> Result<String, i64> {
            if let Node::Tmp(ino) = cwd {
                if ino != ROOT && v.tmp.stat(ino)?.nlink == 0 {
                    return Err(-ENOENT);
                }
            }
            v.path_of(generated(), cwd)
        })?;
        if path.len() + 1 > size as usize {
            return Err(-ERANGE);
        }
        let mut b = path.into_bytes();
        b.push(0);
        crate::user::write(buf, &b)?;
        Ok(b.len() as i64)
    })())
}

/// faccessat(2)/faccessat2(2)/access(2): existence, and for root every access but execution of a file
/// with no execute bit.
pub fn faccessat(st: &St, dirfd: i64, path: u64, mode: u64, flags: u64) -> i64 {
    if mode & !7 != 0 || flags & !(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return -EINVAL;
    }
    result((|| {
        let s = stat_target(st, dirfd, path, flags & (AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH))?;
        let is_dir = s.mode & 0o170000 == FileType::Directory.mode_bits();
        if mode & 1 != 0 && !is_dir && s.mode & 0o111 == 0 {
            return Err(-EACCES);
        }
        Ok(0)
    })())
}

/// fchmodat(2), chmod(2).
pub fn fchmodat(st: &St, dirfd: i64, path: u64, mode: u64) -> i64 {
    result((|| {
        let path = path_arg(path, false)?;
        let start = base(st, dirfd)?;
        with_tree(|v| match v.resolve(generated(), start, &path, true)? {
            Node::Tmp(ino) => v.tmp.set_perm(ino, mode as u32, now()).map(|()| 0),
            Node::Gen(_) => Err(-EPERM),
        })
    })())
}

/// fchmod(2).
pub fn fchmod(st: &St, fd: i64, mode: u64) -> i64 {
    result((|| {
        let f = file(st, fd)?;
        match &f.kind {
            Kind::Inode(ino) | Kind::Dir(Node::Tmp(ino)) => with_tree(|v| v.tmp.set_perm(*ino, mode as u32, now())).map(|()| 0),
            _ => Err(-EPERM),
        }
    })())
}

/// fchownat(2), chown(2), lchown(2): owner and group (-1: unchanged).
pub fn fchownat(st: &St, dirfd: i64, path: u64, uid: u64, gid: u64, flags: u64) -> i64 {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return -EINVAL;
    }
    result((|| {
        let path = path_arg(path, flags & AT_EMPTY_PATH != 0)?;
        let start = base(st, dirfd)?;
        let id = |x: u64| if x as u32 == u32::MAX { None } else { Some(x as u32) };
        with_tree(|v| match v.resolve(generated(), start, if path.is_empty() { "." } else { &path }, flags & AT_SYMLINK_NOFOLLOW == 0)? {
            Node::Tmp(ino) => v.tmp.set_owner(ino, id(uid), id(gid), now()).map(|()| 0),
            Node::Gen(_) => Err(-EPERM),
        })
    })())
}

/// umask(2): the new mask; returns the old.
pub fn umask(st: &St, mask: u64) -> i64 {
    let mut s = st.lock();
    let old = s.umask;
    s.umask = (mask as u32) & 0o777;
    i64::from(old)
}

/// truncate(2).
pub fn truncate(st: &St, path: u64, len: i64) -> i64 {
    if len < 0 {
        return -EINVAL;
    }
    result((|| {
        let path = path_arg(path, false)?;
        let start = st.lock().cwd;
        with_tree(|v| match v.resolve(generated(), start, &path, true)? {
            Node::Tmp(ino) => v.tmp.truncate(ino, len as u64, now()).map(|()| 0),
            Node::Gen(_) => Err(-EACCES),
        })
    })())
}

/// ftruncate(2).
pub fn ftruncate(st: &St, fd: i64, len: i64) -> i64 {
    if len < 0 {
        return -EINVAL;
    }
    result((|| {
        let f = file(st, fd)?;
        match &f.kind {
            Kind::Inode(ino) if f.writable() => with_tree(|v| v.tmp.truncate(*ino, len as u64, now())).map(|()| 0),
            Kind::Inode(_) => Err(-EINVAL),
            Kind::Dir(_) => Err(-EISDIR),
            _ => Err(-EINVAL),
        }
    })())
}

/// fsync(2), fdatasync(2): the tree is memory; nothing to write back.
pub fn fsync(st: &St, fd: i64) -> i64 {
    result(file(st, fd).map(|_| 0))
}

/// utimensat(2): NULL times set both to now; UTIME_NOW / UTIME_OMIT per field.
pub fn utimensat(st: &St, dirfd: i64, path: u64, times: u64, flags: u64) -> i64 {
    const UTIME_NOW: i64 = (1 << 30) - 1;
    const UTIME_OMIT: i64 = (1 << 30) - 2;
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return -EINVAL;
    }
    result((|| {
        let t = now();
        let (atime, mtime) = if times == 0 {
            (Some(t), Some(t))
        } else {
            let b: [u8; 32] = crate::user::read_array(times)?;
            let field = |o: usize| -> Result<Option<Timespec>, i64> {
                let sec = i64::from_le_bytes(b[o..o + 8].try_into().unwrap());
                let nsec = i64::from_le_bytes(b[o + 8..o + 16].try_into().unwrap());
                match nsec {
                    UTIME_NOW => Ok(Some(t)),
                    UTIME_OMIT => Ok(None),
                    0..=999_999_999 => Ok(Some(Timespec { sec, nsec })),
                    _ => Err(-EINVAL),
                }
            };
            (field(0)?, field(16)?)
        };
        // A NULL path (Linux allows it: futimens) means the descriptor.
        let node = if path == 0 {
            match &file(st, dirfd)?.kind {
                Kind::Inode(ino) => Node::Tmp(*ino),
                Kind::Dir(n) => *n,
                _ => return Ok(0),
            }
        } else {
            let p = path_arg(path, flags & AT_EMPTY_PATH != 0)?;
            let start = base(st, dirfd)?;
            with_tree(|v| v.resolve(generated(), start, if p.is_empty() { "." } else { &p }, flags & AT_SYMLINK_NOFOLLOW == 0))?
        };
        match node {
            Node::Tmp(ino) => with_tree(|v| v.tmp.set_times(ino, atime, mtime, t)).map(|()| 0),
            Node::Gen(_) => Err(-EPERM),
        }
    })())
}

// ---------------------------------------------------------------------------------------------------------
// descriptors

pub fn dup(st: &St, fd: i64) -> i64 {
    let mut s = st.lock();
    match s.files.get(fd).cloned() {
        Ok(f) => result(s.files.insert(f, false, 0)),
        Err(e) => e,
    }
}

/// dup3(2) (dup2: flags 0, and the same descriptor twice is that descriptor).
pub fn dup3(st: &St, old: i64, new: i64, flags: u64, is_dup2: bool) -> i64 {
    if flags & !u64::from(O_CLOEXEC) != 0 {
        return -EINVAL;
    }
    let replaced = {
        let mut s = st.lock();
        let f = match s.files.get(old).cloned() {
            Ok(f) => f,
            Err(e) => return e,
        };
        if old == new {
            return if is_dup2 { new } else { -EINVAL };
        }
        match s.files.insert_at(new, f, flags != 0) {
            Ok(r) => r,
            Err(e) => return e,
        }
    };
    drop(replaced);
    new
}

/// fcntl(2): F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD, F_SETFD, F_GETFL, F_SETFL; locks and the rest: EINVAL.
pub fn fcntl(st: &St, fd: i64, cmd: u64, arg: u64) -> i64 {
    const F_DUPFD: u64 = 0;
    const F_GETFD: u64 = 1;
    const F_SETFD: u64 = 2;
    const F_GETFL: u64 = 3;
    const F_SETFL: u64 = 4;
    const F_DUPFD_CLOEXEC: u64 = 1030;
    const FD_CLOEXEC: u64 = 1;
    let mut s = st.lock();
    let f = match s.files.get(fd).cloned() {
        Ok(f) => f,
        Err(e) => return e,
    };
    match cmd {
        F_DUPFD | F_DUPFD_CLOEXEC => {
            let min = arg as i64;
            if min < 0 || min as usize >= s.files.limit() {
                return -EINVAL;
            }
            result(s.files.insert(f, cmd == F_DUPFD_CLOEXEC, min as usize))
        }
        F_GETFD => result(s.files.cloexec(fd).map(|c| if c { FD_CLOEXEC as i64 } else { 0 })),
        F_SETFD => result(s.files.set_cloexec(fd, arg & FD_CLOEXEC != 0).map(|()| 0)),
        F_GETFL => i64::from(f.flags()),
        F_SETFL => {
            let keep = f.flags() & !SETFL_MASK;
            f.flags.store(keep | (arg as u32 & SETFL_MASK), core::sync::atomic::Ordering::Relaxed);
            0
        }
        _ => -EINVAL,
    }
}

/// pipe2(2) (pipe: flags 0): the read end, then the write end.
pub fn pipe2(st: &St, fds: u64, flags: u64) -> i64 {
    let flags = flags as u32;
    if flags & !(O_CLOEXEC | O_NONBLOCK | O_DIRECT) != 0 {
        return -EINVAL;
    }
    let p = PipeShared::new();
    let r = OpenFile::new(Kind::PipeRead(p.clone()), O_RDONLY | (flags & O_NONBLOCK), String::from("pipe"));
    let w = OpenFile::new(Kind::PipeWrite(p), O_WRONLY | (flags & O_NONBLOCK), String::from("pipe"));
    let cloexec = flags & O_CLOEXEC != 0;
    let (rfd, wfd) = {
        let mut s = st.lock();
        let rfd = match s.files.insert(r, cloexec, 0) {
            Ok(fd) => fd,
            Err(e) => return e,
        };
        match s.files.insert(w, cloexec, 0) {
            Ok(wfd) => (rfd, wfd),
            Err(e) => {
                let _ = s.files.remove(rfd);
                return e;
            }
        }
    };
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&(rfd as i32).to_le_bytes());
    b[4..].copy_from_slice(&(wfd as i32).to_le_bytes());
    if let Err(e) = crate::user::write(fds, &b) {
        let mut s = st.lock();
        let _ = s.files.remove(rfd);
        let _ = s.files.remove(wfd);
        return e;
    }
    0
}

/// ioctl(2): on the terminal, TCGETS/TCSETS/TCSETSW/TCSETSF (its line discipline's modes), TIOCGWINSZ/
/// TIOCSWINSZ, TIOCGPGRP/TIOCSPGRP (the foreground group), TIOCSCTTY/TIOCNOTTY (accepted: the console is
/// the controlling terminal of the one session that has one), TIOCGSID, TCFLSH, TCXONC/TCSBRK (accepted);
/// FIONREAD on the terminal, pipes and files; ENOTTY for anything else.
pub fn ioctl(st: &St, fd: i64, request: u64, arg: u64, session_of_caller: u32) -> i64 {
    use super::tty::{Termios, Winsize};
    const TCGETS: u64 = 0x5401;
    const TCSETS: u64 = 0x5402;
    const TCSETSW: u64 = 0x5403;
    const TCSETSF: u64 = 0x5404;
    const TCSBRK: u64 = 0x5409;
    const TCXONC: u64 = 0x540A;
    const TCFLSH: u64 = 0x540B;
    const TIOCSCTTY: u64 = 0x540E;
    const TIOCGPGRP: u64 = 0x540F;
    const TIOCSPGRP: u64 = 0x5410;
    const TIOCGWINSZ: u64 = 0x5413;
    const TIOCSWINSZ: u64 = 0x5414;
    const FIONREAD: u64 = 0x541B;
    const TIOCNOTTY: u64 = 0x5422;
    const TIOCGSID: u64 = 0x5429;
    result((|| {
        let f = file(st, fd)?;
        let terminal = matches!(f.kind, Kind::Device(d) if d.is_terminal());
        if request == FIONREAD {
            let n = match &f.kind {
                Kind::PipeRead(p) => p.pipe.lock().len() as u64,
                Kind::Inode(ino) => with_tree(|v| v.tmp.stat(*ino))?.size.saturating_sub(*f.offset.lock()),
                _ if terminal => super::terminal::available() as u64,
                _ => return Err(-ENOTTY),
            };
            crate::user::write(arg, &(n as i32).to_le_bytes())?;
            return Ok(0);
        }
        if !terminal {
            return Err(-ENOTTY);
        }
        let int = |v: u32| crate::user::write(arg, &v.to_le_bytes()).map(|()| 0);
        match request {
            TCGETS => crate::user::write(arg, &super::terminal::termios().to_bytes()).map(|()| 0),
            TCSETS | TCSETSW | TCSETSF => {
                let b: [u8; 36] = crate::user::read_array(arg)?;
                let t = Termios::from_bytes(&b).ok_or(-EINVAL)?;
                super::terminal::set_termios(t, request == TCSETSF);
                Ok(0)
            }
            TIOCGWINSZ => crate::user::write(arg, &super::terminal::winsize().to_bytes()).map(|()| 0),
            TIOCSWINSZ => {
                let b: [u8; 8] = crate::user::read_array(arg)?;
                super::terminal::set_winsize(Winsize::from_bytes(&b).ok_or(-EINVAL)?);
                Ok(0)
            }
            TIOCGPGRP => int(super::terminal::foreground()),
            TIOCSPGRP => {
                let g: [u8; 4] = crate::user::read_array(arg)?;
                let g = i32::from_le_bytes(g);
                if g <= 0 {
                    return Err(-EINVAL);
                }
                super::terminal::set_foreground(g as u32);
                Ok(0)
            }
            TIOCGSID => int(session_of_caller),
            TIOCSCTTY | TIOCNOTTY | TCSBRK | TCXONC => Ok(0),
            TCFLSH => {
                // 0: input, 1: output (nothing is queued), 2: both.
                match arg {
                    0 | 2 => super::terminal::flush_input(),
                    1 => {}
                    _ => return Err(-EINVAL),
                }
                Ok(0)
            }
            _ => Err(-ENOTTY),
        }
    })())
}

// ---------------------------------------------------------------------------------------------------------
// poll, select

pub const POLLIN: u16 = 0x1;
pub const POLLPRI: u16 = 0x2;
pub const POLLOUT: u16 = 0x4;
pub const POLLERR: u16 = 0x8;
pub const POLLHUP: u16 = 0x10;
pub const POLLNVAL: u16 = 0x20;
pub const POLLRDNORM: u16 = 0x40;
pub const POLLWRNORM: u16 = 0x100;

/// What a poll of `f` reports now (every event that holds; the caller masks with what was asked).
fn ready(f: &OpenFile) -> u16 {
    let rw = POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM;
    match &f.kind {
        Kind::Inode(_) | Kind::Dir(_) | Kind::Generated(_) => rw,
        Kind::Device(d) if d.is_terminal() => {
            POLLOUT | POLLWRNORM | if super::terminal::readable() { POLLIN | POLLRDNORM } else { 0 }
        }
        Kind::Device(_) => rw,
        Kind::PipeRead(p) => {
            let p = p.pipe.lock();
            (if p.readable() && !p.is_empty() { POLLIN | POLLRDNORM } else { 0 }) | if p.writers == 0 { POLLHUP } else { 0 }
        }
        Kind::PipeWrite(p) => {
            let p = p.pipe.lock();
            if p.readers == 0 {
                POLLERR
            } else if p.writable() {
                POLLOUT | POLLWRNORM
            } else {
                0
            }
        }
    }
}

/// Wait (other threads run) until `check` finds something, `deadline` (TSC) passes or a signal comes:
/// Ok(true) found, Ok(false) timed out, Err(EINTR).
fn wait_ready(deadline: Option<u64>, mut check: impl FnMut() -> Result<bool, i64>) -> Result<bool, i64> {
    loop {
        if check()? {
            return Ok(true);
        }
        if deadline.is_some_and(|d| questv_arch::cpu::rdtsc() >= d) {
            return Ok(false);
        }
        if interrupted() {
            // As Linux after a handler ran: poll and select are not restarted.
            return Err(-EINTR);
        }
        crate::sched::yield_while_waiting();
    }
}

/// A timeout in nanoseconds from now as a TSC deadline (None: wait without end).
fn deadline_after(ns: Option<u64>) -> Option<u64> {
    ns.map(|ns| questv_arch::cpu::rdtsc().saturating_add(crate::time::ns_to_cycles(ns)))
}

/// poll(2) (`timeout_ns` None: no timeout) and ppoll(2) (the signal mask argument is not applied: docs/files.md).
pub fn poll(st: &St, fds: u64, nfds: u64, timeout_ns: Option<u64>) -> i64 {
    result((|| {
        if nfds > st.lock().files.limit() as u64 {
            return Err(-EINVAL);
        }
        let mut raw = alloc::vec![0u8; nfds as usize * 8];
        crate::user::read(fds, &mut raw)?;
        let entries: Vec<(i32, u16)> = raw.chunks(8).map(|c| (i32::from_le_bytes(c[..4].try_into().unwrap()), u16::from_le_bytes(c[4..6].try_into().unwrap()))).collect();
        let mut revents = alloc::vec![0u16; entries.len()];
        let deadline = deadline_after(timeout_ns);
        let mut count = 0;
        wait_ready(deadline, || {
            count = 0;
            for (i, &(fd, events)) in entries.iter().enumerate() {
                revents[i] = if fd < 0 {
                    0
                } else {
                    match file(st, i64::from(fd)) {
                        Ok(f) => ready(&f) & (events | POLLERR | POLLHUP),
                        Err(_) => POLLNVAL,
                    }
                };
                count += usize::from(revents[i] != 0);
            }
            Ok(count > 0)
        })?;
        for (i, r) in revents.iter().enumerate() {
            raw[i * 8 + 6..i * 8 + 8].copy_from_slice(&r.to_le_bytes());
        }
        crate::user::write(fds, &raw)?;
        Ok(count as i64)
    })())
}

/// select(2) and pselect6(2): the three descriptor sets (NULL: none), rewritten to the ready ones; EBADF for
/// a descriptor in a set that is not open. (pselect6's signal mask is not applied: docs/files.md.)
pub fn select(st: &St, nfds: u64, sets: [u64; 3], timeout_ns: Option<u64>) -> i64 {
    result((|| {
        if nfds > 1024 {
            return Err(-EINVAL);
        }
        let bytes = (nfds as usize).div_ceil(64) * 8;
        let mut asked = [Vec::new(), Vec::new(), Vec::new()];
        for (k, &addr) in sets.iter().enumerate() {
            if addr != 0 {
                asked[k] = alloc::vec![0u8; bytes];
                crate::user::read(addr, &mut asked[k])?;
            }
        }
        let is_set = |set: &Vec<u8>, fd: usize| !set.is_empty() && set[fd / 8] & (1 << (fd % 8)) != 0;
        for fd in 0..nfds as usize {
            if asked.iter().any(|s| is_set(s, fd)) {
                file(st, fd as i64)?;
            }
        }
        let mut out = [alloc::vec![0u8; bytes], alloc::vec![0u8; bytes], alloc::vec![0u8; bytes]];
        let mut count = 0;
        wait_ready(deadline_after(timeout_ns), || {
            count = 0;
            for s in out.iter_mut() {
                s.iter_mut().for_each(|b| *b = 0);
            }
            for fd in 0..nfds as usize {
                if !asked.iter().any(|s| is_set(s, fd)) {
                    continue;
                }
                let r = ready(&*file(st, fd as i64)?);
                let hits = [r & (POLLIN | POLLHUP | POLLERR) != 0, r & (POLLOUT | POLLERR) != 0, r & POLLPRI != 0];
                for k in 0..3 {
                    if is_set(&asked[k], fd) && hits[k] {
                        out[k][fd / 8] |= 1 << (fd % 8);
                        count += 1;
                    }
                }
            }
            Ok(count > 0)
        })?;
        for (k, &addr) in sets.iter().enumerate() {
            if addr != 0 {
                crate::user::write(addr, &out[k])?;
            }
        }
        Ok(count as i64)
    })())
}
