//! The in-memory file system every questv tree is made of (Linux's tmpfs is the model): directories, regular
//! files, symbolic links, device nodes and FIFOs, each an inode with permissions, owner, link count and times,
//! and a memory limit the whole tree shares. Pure logic, host-tested: names are resolved one component at a
//! time by the caller (`fs::vfs`), which also keeps open files alive through [`Tmpfs::open`]/[`Tmpfs::close`]
//! (an unlinked file lives on while it is open, as on Linux).
//!
//! Errors are Linux's, as negative errno values. Reads do not update access times (as a `noatime` mount).
#![forbid(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use questv_libc_shim::errno::*;

pub type Ino = u64;

/// Longest name of one directory entry (NAME_MAX).
pub const NAME_MAX: usize = 255;
/// Longest symbolic link target (PATH_MAX less its NUL).
pub const SYMLINK_MAX: usize = 4095;
/// What an inode costs the tree's memory besides its data (so that empty files and directories cannot be made
/// without limit).
const INODE_BYTES: u64 = 128;
/// What a directory entry costs besides its name.
const ENTRY_BYTES: u64 = 32;

/// renameat2 flags.
pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;
pub const RENAME_WHITEOUT: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    Fifo,
}

impl FileType {
    /// The S_IFMT bits of `st_mode`.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::Regular => 0o100000,
            FileType::Directory => 0o040000,
            FileType::Symlink => 0o120000,
            FileType::CharDevice => 0o020000,
            FileType::Fifo => 0o010000,
        }
    }

    /// `d_type` of a `linux_dirent64`.
    pub fn dirent_type(self) -> u8 {
        match self {
            FileType::Regular => 8,
            FileType::Directory => 4,
            FileType::Symlink => 10,
            FileType::CharDevice => 2,
            FileType::Fifo => 1,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: i64,
}

/// What `stat` reports of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub ino: Ino,
    pub kind: FileType,
    /// Permission bits (07777).
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Device number of a device node (Linux's encoding: major << 8 | minor for small numbers).
    pub rdev: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
}

impl Stat {
    /// `st_mode`: the type bits and the permission bits.
    pub fn mode(&self) -> u32 {
        self.kind.mode_bits() | self.perm
    }

    /// `st_blocks`: 512-byte blocks, counted by the page as tmpfs does.
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(4096) * 8
    }
}

/// A regular file's bytes: its own, or — until its first change — bytes that outlive the tree (a boot module's,
/// which the kernel keeps for good), shared rather than copied and not counted against the tree's limit.
enum Contents {
    Owned(Vec<u8>),
    Borrowed(&'static [u8]),
}

impl Contents {
    fn as_slice(&self) -> &[u8] {
        match self {
            Contents::Owned(v) => v,
            Contents::Borrowed(b) => b,
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Bytes counted against the tree's limit.
    fn counted(&self) -> u64 {
        match self {
            Contents::Owned(v) => v.len() as u64,
            Contents::Borrowed(_) => 0,
        }
    }

    /// The bytes as the file's own, to change: a borrowed file is copied first, if `room` allows. Returns the
    /// vector and how many bytes the copy added to the tree's count.
    fn owned(&mut self, room: u64) -> Result<(&mut Vec<u8>, u64), i64> {
        let mut added = 0;
        if let Contents::Borrowed(b) = *self {
            if b.len() as u64 > room {
                return Err(-ENOSPC);
            }
            let mut v = Vec::new();
            v.try_reserve(b.len()).map_err(|_| -ENOSPC)?;
            v.extend_from_slice(b);
            added = b.len() as u64;
            *self = Contents::Owned(v);
        }
        match self {
            Contents::Owned(v) => Ok((v, added)),
            Contents::Borrowed(_) => unreachable!("just made owned"),
        }
    }
}

enum Data {
    File(Contents),
    Dir { entries: BTreeMap<String, Ino>, parent: Ino },
    Symlink(String),
    Device(u64),
    Fifo,
}

struct Inode {
    kind: FileType,
    perm: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    /// Open files on it: it is freed when both this and `nlink` are zero.
    opens: u32,
    atime: Timespec,
    mtime: Timespec,
    ctime: Timespec,
    data: Data,
}

impl Inode {
    fn size(&self) -> u64 {
        match &self.data {
            Data::File(c) => c.len() as u64,
            Data::Symlink(t) => t.len() as u64,
            // As tmpfs: a directory's size grows with its entries.
            Data::Dir { entries, .. } => (entries.len() as u64 + 2) * 20,
            Data::Device(_) | Data::Fifo => 0,
        }
    }
}

/// A tree of inodes; the root directory is inode 1.
pub struct Tmpfs {
    nodes: BTreeMap<Ino, Inode>,
    next_ino: Ino,
    /// Bytes charged against `limit`: inodes, directory entries, file data, link targets.
    used: u64,
    limit: u64,
}

pub const ROOT: Ino = 1;

/// A name a new entry may have: not empty, not `.` or `..`, no `/`, at most NAME_MAX bytes.
fn check_new_name(name: &str) -> Result<(), i64> {
    if name.is_empty() {
        return Err(-ENOENT);
    }
    if name.len() > NAME_MAX {
        return Err(-ENAMETOOLONG);
    }
    if name == "." || name == ".." {
        return Err(-EEXIST);
    }
    if name.contains('/') || name.contains('\0') {
        return Err(-EINVAL);
    }
    Ok(())
}

impl Tmpfs {
    /// An empty tree (the root directory alone, mode 0755, owned by root) that may use up to `limit` bytes.
    pub fn new(limit: u64, now: Timespec) -> Tmpfs {
        let mut nodes = BTreeMap::new();
        nodes.insert(ROOT, Inode {
            kind: FileType::Directory,
            perm: 0o755,
            uid: 0,
            gid: 0,
            nlink: 2,
            opens: 0,
            atime: now,
            mtime: now,
            ctime: now,
            data: Data::Dir { entries: BTreeMap::new(), parent: ROOT },
        });
        Tmpfs { nodes, next_ino: ROOT + 1, used: INODE_BYTES, limit }
    }

    fn node(&self, ino: Ino) -> Result<&Inode, i64> {
        self.nodes.get(&ino).ok_or(-ENOENT)
    }

    fn node_mut(&mut self, ino: Ino) -> Result<&mut Inode, i64> {
        self.nodes.get_mut(&ino).ok_or(-ENOENT)
    }

    fn entries(&self, dir: Ino) -> Result<&BTreeMap<String, Ino>, i64> {
        match &self.node(dir)?.data {
            Data::Dir { entries, .. } => Ok(entries),
            _ => Err(-ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: Ino) -> Result<&mut BTreeMap<String, Ino>, i64> {
        match &mut self.node_mut(dir)?.data {
            Data::Dir { entries, .. } => Ok(entries),
            _ => Err(-ENOTDIR),
        }
    }

    fn parent(&self, dir: Ino) -> Result<Ino, i64> {
        match &self.node(dir)?.data {
            Data::Dir { parent, .. } => Ok(*parent),
            _ => Err(-ENOTDIR),
        }
    }

    fn charge(&mut self, bytes: u64) -> Result<(), i64> {
        let after = self.used.checked_add(bytes).ok_or(-ENOSPC)?;
        if after > self.limit {
            return Err(-ENOSPC);
        }
        self.used = after;
        Ok(())
    }

    fn refund(&mut self, bytes: u64) {
        self.used = self.used.saturating_sub(bytes);
    }

    pub fn kind(&self, ino: Ino) -> Result<FileType, i64> {
        Ok(self.node(ino)?.kind)
    }

    pub fn stat(&self, ino: Ino) -> Result<Stat, i64> {
        let n = self.node(ino)?;
        let rdev = if let Data::Device(r) = n.data { r } else { 0 };
        Ok(Stat {
            ino,
            kind: n.kind,
            perm: n.perm,
            nlink: n.nlink,
            uid: n.uid,
            gid: n.gid,
            size: n.size(),
            rdev,
            atime: n.atime,
            mtime: n.mtime,
            ctime: n.ctime,
        })
    }

    /// Bytes the tree may use and bytes it uses (statfs).
    pub fn usage(&self) -> (u64, u64) {
        (self.limit, self.used)
    }

    /// The entry `name` of directory `dir` (`.` and `..` included; `..` of the root is the root).
    pub fn lookup(&self, dir: Ino, name: &str) -> Result<Ino, i64> {
        let entries = self.entries(dir)?;
        if name.len() > NAME_MAX {
            return Err(-ENAMETOOLONG);
        }
        match name {
            "" => Err(-ENOENT),
            "." => Ok(dir),
            ".." => self.parent(dir),
            _ => entries.get(name).copied().ok_or(-ENOENT),
        }
    }

    /// Is `dir` a directory that still has a name (a removed directory accepts no new entries)?
    fn live_dir(&self, dir: Ino) -> Result<(), i64> {
        let n = self.node(dir)?;
        if n.kind != FileType::Directory {
            return Err(-ENOTDIR);
        }
        if n.nlink == 0 {
            return Err(-ENOENT);
        }
        Ok(())
    }

    /// A new inode named `name` in `dir`: a regular file, directory, device node (`rdev`) or FIFO (symbolic
    /// links: [`symlink`](Self::symlink)). EEXIST if the name is taken.
    #[allow(clippy::too_many_arguments)]
    pub fn create(&mut self, dir: Ino, name: &str, kind: FileType, perm: u32, uid: u32, gid: u32, rdev: u64, now: Timespec) -> Result<Ino, i64> {
        let data = match kind {
            FileType::Regular => Data::File(Contents::Owned(Vec::new())),
            FileType::Directory => Data::Dir { entries: BTreeMap::new(), parent: dir },
            FileType::CharDevice => Data::Device(rdev),
            FileType::Fifo => Data::Fifo,
            FileType::Symlink => return Err(-EINVAL),
        };
        self.add(dir, name, kind, perm, uid, gid, data, 0, now)
    }

    /// A symbolic link `name` in `dir` to `target` (not resolved: it may name nothing).
    pub fn symlink(&mut self, dir: Ino, name: &str, target: &str, uid: u32, gid: u32, now: Timespec) -> Result<Ino, i64> {
        if target.is_empty() {
            return Err(-ENOENT);
        }
        if target.len() > SYMLINK_MAX {
            return Err(-ENAMETOOLONG);
        }
        self.add(dir, name, FileType::Symlink, 0o777, uid, gid, Data::Symlink(target.to_string()), target.len() as u64, now)
    }

    #[allow(clippy::too_many_arguments)]
    fn add(&mut self, dir: Ino, name: &str, kind: FileType, perm: u32, uid: u32, gid: u32, data: Data, data_bytes: u64, now: Timespec) -> Result<Ino, i64> {
        self.live_dir(dir)?;
        if name == "." || name == ".." {
            return Err(-EEXIST);
        }
        check_new_name(name)?;
        if self.entries(dir)?.contains_key(name) {
            return Err(-EEXIST);
        }
        self.charge(INODE_BYTES + ENTRY_BYTES + name.len() as u64 + data_bytes)?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let is_dir = kind == FileType::Directory;
        self.nodes.insert(ino, Inode {
            kind,
            perm: perm & 0o7777,
            uid,
            gid,
            nlink: if is_dir { 2 } else { 1 },
            opens: 0,
            atime: now,
            mtime: now,
            ctime: now,
            data,
        });
        self.entries_mut(dir)?.insert(name.to_string(), ino);
        let d = self.node_mut(dir)?;
        if is_dir {
            d.nlink += 1;
        }
        d.mtime = now;
        d.ctime = now;
        Ok(ino)
    }

    /// A new name `name` in `dir` for the existing non-directory `ino` (link(2)).
    pub fn link(&mut self, ino: Ino, dir: Ino, name: &str, now: Timespec) -> Result<(), i64> {
        let n = self.node(ino)?;
        if n.kind == FileType::Directory {
            return Err(-EPERM);
        }
        if n.nlink == 0 {
            // An unlinked file that is only open (linkat of an O_TMPFILE aside, Linux refuses it).
            return Err(-ENOENT);
        }
        self.live_dir(dir)?;
        check_new_name(name)?;
        if self.entries(dir)?.contains_key(name) {
            return Err(-EEXIST);
        }
        self.charge(ENTRY_BYTES + name.len() as u64)?;
        self.entries_mut(dir)?.insert(name.to_string(), ino);
        let n = self.node_mut(ino)?;
        n.nlink += 1;
        n.ctime = now;
        let d = self.node_mut(dir)?;
        d.mtime = now;
        d.ctime = now;
        Ok(())
    }

    /// Remove the non-directory entry `name` of `dir` (unlink(2)).
    pub fn unlink(&mut self, dir: Ino, name: &str, now: Timespec) -> Result<(), i64> {
        let ino = self.lookup(dir, name)?;
        if self.kind(ino)? == FileType::Directory {
            return Err(-EISDIR);
        }
        self.remove_entry(dir, name, now)?;
        let n = self.node_mut(ino)?;
        n.nlink -= 1;
        n.ctime = now;
        self.maybe_free(ino);
        Ok(())
    }

    /// Remove the empty directory `name` of `dir` (rmdir(2)).
    pub fn rmdir(&mut self, dir: Ino, name: &str, now: Timespec) -> Result<(), i64> {
        match name {
            "." => return Err(-EINVAL),
            ".." => return Err(-ENOTEMPTY),
            _ => {}
        }
        let ino = self.lookup(dir, name)?;
        if self.kind(ino)? != FileType::Directory {
            return Err(-ENOTDIR);
        }
        if !self.entries(ino)?.is_empty() {
            return Err(-ENOTEMPTY);
        }
        self.remove_entry(dir, name, now)?;
        self.node_mut(dir)?.nlink -= 1;
        let n = self.node_mut(ino)?;
        n.nlink = 0;
        n.ctime = now;
        self.maybe_free(ino);
        Ok(())
    }

    fn remove_entry(&mut self, dir: Ino, name: &str, now: Timespec) -> Result<Ino, i64> {
        let ino = self.entries_mut(dir)?.remove(name).ok_or(-ENOENT)?;
        self.refund(ENTRY_BYTES + name.len() as u64);
        let d = self.node_mut(dir)?;
        d.mtime = now;
        d.ctime = now;
        Ok(ino)
    }

    fn maybe_free(&mut self, ino: Ino) {
        if let Some(n) = self.nodes.get(&ino) {
            if n.nlink == 0 && n.opens == 0 {
                let bytes = match &n.data {
                    Data::File(c) => c.counted(),
                    Data::Symlink(t) => t.len() as u64,
                    _ => 0,
                };
                self.nodes.remove(&ino);
                self.refund(INODE_BYTES + bytes);
            }
        }
    }

    /// An open file on `ino` keeps it alive after its last name is gone.
    pub fn open(&mut self, ino: Ino) -> Result<(), i64> {
        self.node_mut(ino)?.opens += 1;
        Ok(())
    }

    /// The open file on `ino` is closed: an inode with no name and no other open file is freed.
    pub fn close(&mut self, ino: Ino) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.opens = n.opens.saturating_sub(1);
        }
        self.maybe_free(ino);
    }

    /// Is `a` the directory `b` or one of its ancestors?
    fn is_ancestor(&self, a: Ino, b: Ino) -> bool {
        let mut d = b;
        loop {
            if d == a {
                return true;
            }
            match self.parent(d) {
                Ok(p) if p != d => d = p,
                _ => return false,
            }
        }
    }

    /// rename(2)/renameat2(2): move entry `oname` of `odir` to `nname` of `ndir`, replacing what is there
    /// (a directory only by an empty directory); RENAME_NOREPLACE refuses to replace, RENAME_EXCHANGE swaps
    /// the two entries.
    pub fn rename(&mut self, odir: Ino, oname: &str, ndir: Ino, nname: &str, flags: u32, now: Timespec) -> Result<(), i64> {
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT) != 0
            || flags & RENAME_WHITEOUT != 0
            || (flags & RENAME_NOREPLACE != 0 && flags & RENAME_EXCHANGE != 0)
        {
            return Err(-EINVAL);
        }
        for n in [oname, nname] {
            if n == "." || n == ".." {
                return Err(-EBUSY);
            }
        }
        self.live_dir(ndir)?;
        let src = self.lookup(odir, oname)?;
        check_new_name(nname)?;
        let dst = match self.lookup(ndir, nname) {
            Ok(d) => Some(d),
            Err(e) if e == -ENOENT => None,
            Err(e) => return Err(e),
        };
        let src_dir = self.kind(src)? == FileType::Directory;
        if flags & RENAME_EXCHANGE != 0 {
            let dst = dst.ok_or(-ENOENT)?;
            let dst_dir = self.kind(dst)? == FileType::Directory;
            if (src_dir && self.is_ancestor(src, ndir)) || (dst_dir && self.is_ancestor(dst, odir)) {
                return Err(-EINVAL);
            }
            if src == dst {
                return Ok(());
            }
            self.entries_mut(odir)?.insert(oname.to_string(), dst);
            self.entries_mut(ndir)?.insert(nname.to_string(), src);
            if odir != ndir && src_dir != dst_dir {
                // The directory of the two moves to the other parent.
                let (moved, from, to) = if src_dir { (src, odir, ndir) } else { (dst, ndir, odir) };
                self.reparent(moved, from, to)?;
            } else if odir != ndir && src_dir {
                // Two directories trade places: each parent loses one subdirectory and gains one.
                self.reparent(src, odir, ndir)?;
                self.reparent(dst, ndir, odir)?;
            }
            for (d, i) in [(odir, src), (ndir, dst)] {
                self.node_mut(i)?.ctime = now;
                let d = self.node_mut(d)?;
                d.mtime = now;
                d.ctime = now;
            }
            return Ok(());
        }
        if src_dir && self.is_ancestor(src, ndir) {
            return Err(-EINVAL);
        }
        if let Some(dst) = dst {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(-EEXIST);
            }
            if dst == src {
                // Two names of one file (or a name onto itself): nothing to do.
                return Ok(());
            }
            let dst_dir = self.kind(dst)? == FileType::Directory;
            match (src_dir, dst_dir) {
                (true, false) => return Err(-ENOTDIR),
                (false, true) => return Err(-EISDIR),
                (true, true) if !self.entries(dst)?.is_empty() => return Err(-ENOTEMPTY),
                _ => {}
            }
            if dst_dir {
                self.rmdir(ndir, nname, now)?;
            } else {
                self.unlink(ndir, nname, now)?;
            }
        }
        // Room for the new name first, so that running out of space changes nothing.
        self.charge(ENTRY_BYTES + nname.len() as u64)?;
        self.remove_entry(odir, oname, now)?;
        self.entries_mut(ndir)?.insert(nname.to_string(), src);
        if src_dir && odir != ndir {
            self.reparent(src, odir, ndir)?;
        }
        self.node_mut(src)?.ctime = now;
        let d = self.node_mut(ndir)?;
        d.mtime = now;
        d.ctime = now;
        Ok(())
    }

    /// Directory `dir` moved from `from` to `to`: its `..` and both parents' link counts follow.
    fn reparent(&mut self, dir: Ino, from: Ino, to: Ino) -> Result<(), i64> {
        if let Data::Dir { parent, .. } = &mut self.node_mut(dir)?.data {
            *parent = to;
        }
        self.node_mut(from)?.nlink -= 1;
        self.node_mut(to)?.nlink += 1;
        Ok(())
    }

    /// Bytes of regular file `ino` from `offset` into `buf`; the count read (0 at or past the end).
    pub fn read(&self, ino: Ino, offset: u64, buf: &mut [u8]) -> Result<usize, i64> {
        match &self.node(ino)?.data {
            Data::File(c) => {
                let b = c.as_slice();
                let Ok(start) = usize::try_from(offset) else { return Ok(0) };
                if start >= b.len() {
                    return Ok(0);
                }
                let n = buf.len().min(b.len() - start);
                buf[..n].copy_from_slice(&b[start..start + n]);
                Ok(n)
            }
            Data::Dir { .. } => Err(-EISDIR),
            _ => Err(-EINVAL),
        }
    }

    /// Write `data` into regular file `ino` at `offset` (a gap before it reads as zeroes). As much as the tree's
    /// limit allows is written: the count, or ENOSPC if not one byte fits.
    pub fn write(&mut self, ino: Ino, offset: u64, data: &[u8], now: Timespec) -> Result<usize, i64> {
        let room = self.limit.saturating_sub(self.used);
        let n = self.node_mut(ino)?;
        let Data::File(c) = &mut n.data else {
            return Err(if n.kind == FileType::Directory { -EISDIR } else { -EINVAL });
        };
        if data.is_empty() {
            return Ok(0);
        }
        let start = usize::try_from(offset).map_err(|_| -EFBIG)?;
        let wanted_end = start.checked_add(data.len()).ok_or(-EFBIG)?;
        let (b, copied) = c.owned(room)?;
        let room = room - copied;
        let old_len = b.len();
        // The file may grow by `room` bytes at most: past that only what lies before the limit is written.
        let end = wanted_end.min((old_len as u64).saturating_add(room).try_into().unwrap_or(usize::MAX));
        if end <= start {
            self.used += copied;
            return Err(-ENOSPC);
        }
        if end > old_len {
            if b.try_reserve(end - old_len).is_err() {
                self.used += copied;
                return Err(-ENOSPC);
            }
            b.resize(end, 0);
        }
        b[start..end].copy_from_slice(&data[..end - start]);
        let growth = (b.len() - old_len) as u64;
        n.mtime = now;
        n.ctime = now;
        self.used += copied + growth;
        Ok(end - start)
    }

    /// truncate(2): regular file `ino` becomes `len` bytes long (zeroes when it grows).
    pub fn truncate(&mut self, ino: Ino, len: u64, now: Timespec) -> Result<(), i64> {
        let room = self.limit.saturating_sub(self.used);
        let n = self.node_mut(ino)?;
        let Data::File(c) = &mut n.data else {
            return Err(if n.kind == FileType::Directory { -EISDIR } else { -EINVAL });
        };
        let new_len = usize::try_from(len).map_err(|_| -EFBIG)?;
        if let Contents::Borrowed(b) = *c {
            if new_len <= b.len() {
                // Shorter (or the same): still the shared bytes, nothing copied.
                *c = Contents::Borrowed(&b[..new_len]);
                n.mtime = now;
                n.ctime = now;
                return Ok(());
            }
        }
        let (b, copied) = c.owned(room)?;
        let room = room - copied;
        let old_len = b.len();
        if new_len > old_len {
            if (new_len - old_len) as u64 > room || b.try_reserve(new_len - old_len).is_err() {
                self.used += copied;
                return Err(-ENOSPC);
            }
        }
        b.resize(new_len, 0);
        if new_len < old_len {
            b.shrink_to_fit();
        }
        n.mtime = now;
        n.ctime = now;
        self.used += copied;
        if new_len >= old_len {
            self.used += (new_len - old_len) as u64;
        } else {
            self.used -= (old_len - new_len) as u64;
        }
        Ok(())
    }

    /// Regular file `ino` (empty) holds `bytes`, which outlive the tree (a boot module's): shared, not copied,
    /// not counted against the limit until the file's first change copies them.
    pub fn set_borrowed(&mut self, ino: Ino, bytes: &'static [u8]) -> Result<(), i64> {
        let n = self.node_mut(ino)?;
        match &mut n.data {
            Data::File(c) if c.len() == 0 => {
                *c = Contents::Borrowed(bytes);
                Ok(())
            }
            Data::File(_) => Err(-EBUSY),
            _ => Err(-EINVAL),
        }
    }

    /// The target of symbolic link `ino`.
    pub fn readlink(&self, ino: Ino) -> Result<&str, i64> {
        match &self.node(ino)?.data {
            Data::Symlink(t) => Ok(t),
            _ => Err(-EINVAL),
        }
    }

    /// The device number of device node `ino`.
    pub fn rdev(&self, ino: Ino) -> Result<u64, i64> {
        match self.node(ino)?.data {
            Data::Device(r) => Ok(r),
            _ => Err(-ENODEV),
        }
    }

    /// The entries of directory `dir` in a stable order, `.` and `..` first: (name, inode, type).
    pub fn read_dir(&self, dir: Ino) -> Result<Vec<(String, Ino, FileType)>, i64> {
        let entries = self.entries(dir)?;
        let mut out = Vec::with_capacity(entries.len() + 2);
        out.push((".".to_string(), dir, FileType::Directory));
        out.push(("..".to_string(), self.parent(dir)?, FileType::Directory));
        for (name, &ino) in entries {
            out.push((name.clone(), ino, self.kind(ino)?));
        }
        Ok(out)
    }

    /// chmod(2): the permission bits (07777) of `ino`.
    pub fn set_perm(&mut self, ino: Ino, perm: u32, now: Timespec) -> Result<(), i64> {
        let n = self.node_mut(ino)?;
        n.perm = perm & 0o7777;
        n.ctime = now;
        Ok(())
    }

    /// chown(2): owner and group (None: unchanged).
    pub fn set_owner(&mut self, ino: Ino, uid: Option<u32>, gid: Option<u32>, now: Timespec) -> Result<(), i64> {
        let n = self.node_mut(ino)?;
        if let Some(u) = uid {
            n.uid = u;
        }
        if let Some(g) = gid {
            n.gid = g;
        }
        n.ctime = now;
        Ok(())
    }

    /// utimensat(2): access and modification times (None: unchanged); the change time becomes `now`.
    pub fn set_times(&mut self, ino: Ino, atime: Option<Timespec>, mtime: Option<Timespec>, now: Timespec) -> Result<(), i64> {
        let n = self.node_mut(ino)?;
        if let Some(a) = atime {
            n.atime = a;
        }
        if let Some(m) = mtime {
            n.mtime = m;
        }
        n.ctime = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timespec = Timespec { sec: 100, nsec: 0 };
    const T1: Timespec = Timespec { sec: 200, nsec: 5 };

    fn fs() -> Tmpfs {
        Tmpfs::new(1 << 20, T0)
    }

    fn file(fs: &mut Tmpfs, dir: Ino, name: &str) -> Ino {
        fs.create(dir, name, FileType::Regular, 0o644, 0, 0, 0, T0).unwrap()
    }

    fn dir(fs: &mut Tmpfs, parent: Ino, name: &str) -> Ino {
        fs.create(parent, name, FileType::Directory, 0o755, 0, 0, 0, T0).unwrap()
    }

    fn names(fs: &Tmpfs, d: Ino) -> Vec<String> {
        fs.read_dir(d).unwrap().into_iter().map(|e| e.0).collect()
    }

    #[test]
    fn create_lookup_stat_and_the_errors_of_names() {
        let mut f = fs();
        let d = dir(&mut f, ROOT, "etc");
        let x = file(&mut f, d, "passwd");
        assert_eq!(f.lookup(ROOT, "etc"), Ok(d));
        assert_eq!(f.lookup(d, "passwd"), Ok(x));
        assert_eq!(f.lookup(d, "."), Ok(d));
        assert_eq!(f.lookup(d, ".."), Ok(ROOT));
        assert_eq!(f.lookup(ROOT, ".."), Ok(ROOT));
        assert_eq!(f.lookup(d, "nope"), Err(-ENOENT));
        assert_eq!(f.lookup(x, "a"), Err(-ENOTDIR));
        assert_eq!(f.lookup(d, &"n".repeat(256)), Err(-ENAMETOOLONG));
        assert_eq!(f.create(d, "passwd", FileType::Regular, 0o600, 0, 0, 0, T0), Err(-EEXIST));
        assert_eq!(f.create(d, ".", FileType::Directory, 0o700, 0, 0, 0, T0), Err(-EEXIST));
        assert_eq!(f.create(d, &"n".repeat(256), FileType::Regular, 0o600, 0, 0, 0, T0), Err(-ENAMETOOLONG));
        assert!(f.create(d, &"n".repeat(255), FileType::Regular, 0o600, 0, 0, 0, T0).is_ok());
        assert_eq!(f.create(x, "a", FileType::Regular, 0o600, 0, 0, 0, T0), Err(-ENOTDIR));
        let st = f.stat(x).unwrap();
        assert_eq!((st.mode(), st.nlink, st.size, st.kind), (0o100644, 1, 0, FileType::Regular));
        // A directory: two links, plus one per subdirectory.
        assert_eq!(f.stat(ROOT).unwrap().nlink, 3);
        assert_eq!(f.stat(d).unwrap().mode(), 0o040755);
        assert_eq!(names(&f, d)[..2], [".", ".."]);
    }

    #[test]
    fn read_write_truncate_and_holes() {
        let mut f = fs();
        let x = file(&mut f, ROOT, "f");
        assert_eq!(f.write(x, 0, b"hello", T1), Ok(5));
        assert_eq!(f.write(x, 10, b"world", T1), Ok(5));
        let mut b = [0xffu8; 32];
        assert_eq!(f.read(x, 0, &mut b), Ok(15));
        assert_eq!(&b[..15], b"hello\0\0\0\0\0world");
        assert_eq!(f.read(x, 15, &mut b), Ok(0));
        assert_eq!(f.read(x, u64::MAX, &mut b), Ok(0));
        assert_eq!(f.stat(x).unwrap().mtime, T1);
        f.truncate(x, 3, T1).unwrap();
        assert_eq!(f.read(x, 0, &mut b), Ok(3));
        f.truncate(x, 6, T1).unwrap();
        assert_eq!(f.read(x, 0, &mut b), Ok(6));
        assert_eq!(&b[..6], b"hel\0\0\0");
        assert_eq!(f.read(ROOT, 0, &mut b), Err(-EISDIR));
        assert_eq!(f.write(ROOT, 0, b"x", T1), Err(-EISDIR));
        assert_eq!(f.truncate(ROOT, 0, T1), Err(-EISDIR));
    }

    #[test]
    fn the_memory_limit_gives_enospc_and_partial_writes_and_loses_nothing() {
        let mut f = Tmpfs::new(4096, T0);
        let x = file(&mut f, ROOT, "big");
        let (_, used) = f.usage();
        let room = (4096 - used) as usize;
        let data = alloc::vec![7u8; room + 100];
        assert_eq!(f.write(x, 0, &data, T1), Ok(room), "a write that does not fit writes what does");
        assert_eq!(f.write(x, room as u64, b"more", T1), Err(-ENOSPC));
        assert_eq!(f.create(ROOT, "other", FileType::Regular, 0o644, 0, 0, 0, T1), Err(-ENOSPC));
        assert_eq!(f.truncate(x, room as u64 + 1, T1), Err(-ENOSPC));
        // Overwriting in place needs no room; what was written is intact.
        assert_eq!(f.write(x, 0, b"abc", T1), Ok(3));
        let mut b = [0u8; 4];
        f.read(x, 0, &mut b).unwrap();
        assert_eq!(&b, b"abc\x07");
        // Freeing space makes room again, and the accounting comes back to where it started.
        f.unlink(ROOT, "big", T1).unwrap();
        assert_eq!(f.usage().1, INODE_BYTES);
        assert!(f.create(ROOT, "other", FileType::Regular, 0o644, 0, 0, 0, T1).is_ok());
    }

    #[test]
    fn links_unlink_and_files_that_live_while_open() {
        let mut f = fs();
        let d = dir(&mut f, ROOT, "d");
        let x = file(&mut f, ROOT, "a");
        f.write(x, 0, b"data", T0).unwrap();
        f.link(x, d, "b", T1).unwrap();
        assert_eq!(f.stat(x).unwrap().nlink, 2);
        assert_eq!(f.stat(x).unwrap().ctime, T1);
        assert_eq!(f.link(d, ROOT, "dlink", T1), Err(-EPERM));
        assert_eq!(f.link(x, d, "b", T1), Err(-EEXIST));
        assert_eq!(f.unlink(ROOT, "d", T1), Err(-EISDIR));
        f.unlink(ROOT, "a", T1).unwrap();
        assert_eq!(f.lookup(d, "b"), Ok(x));
        f.open(x).unwrap();
        f.unlink(d, "b", T1).unwrap();
        // No name left, but open: still readable.
        let mut b = [0u8; 4];
        assert_eq!(f.read(x, 0, &mut b), Ok(4));
        assert_eq!(f.stat(x).unwrap().nlink, 0);
        f.close(x);
        assert_eq!(f.stat(x), Err(-ENOENT));
        assert_eq!(f.unlink(ROOT, "a", T1), Err(-ENOENT));
    }

    #[test]
    fn rmdir_rules() {
        let mut f = fs();
        let d = dir(&mut f, ROOT, "d");
        file(&mut f, d, "x");
        assert_eq!(f.rmdir(ROOT, "d", T1), Err(-ENOTEMPTY));
        assert_eq!(f.rmdir(d, "x", T1), Err(-ENOTDIR));
        assert_eq!(f.rmdir(d, ".", T1), Err(-EINVAL));
        assert_eq!(f.rmdir(d, "..", T1), Err(-ENOTEMPTY));
        f.unlink(d, "x", T1).unwrap();
        f.open(d).unwrap();
        f.rmdir(ROOT, "d", T1).unwrap();
        assert_eq!(f.stat(ROOT).unwrap().nlink, 2);
        // A removed directory still open takes no new entries.
        assert_eq!(f.create(d, "y", FileType::Regular, 0o644, 0, 0, 0, T1), Err(-ENOENT));
        f.close(d);
        assert_eq!(f.stat(d), Err(-ENOENT));
    }

    #[test]
    fn rename_moves_replaces_and_refuses_as_linux_does() {
        let mut f = fs();
        let a = dir(&mut f, ROOT, "a");
        let b = dir(&mut f, ROOT, "b");
        let sub = dir(&mut f, a, "sub");
        let x = file(&mut f, a, "x");
        let y = file(&mut f, b, "y");
        // A file over a file: the old one is gone.
        f.rename(a, "x", b, "y", 0, T1).unwrap();
        assert_eq!(f.lookup(b, "y"), Ok(x));
        assert_eq!(f.stat(y), Err(-ENOENT));
        assert_eq!(f.lookup(a, "x"), Err(-ENOENT));
        // A directory into another: `..` and both link counts follow.
        f.rename(a, "sub", b, "sub2", 0, T1).unwrap();
        assert_eq!(f.lookup(sub, ".."), Ok(b));
        assert_eq!((f.stat(a).unwrap().nlink, f.stat(b).unwrap().nlink), (2, 3));
        // Into its own subtree: EINVAL; onto itself: nothing happens.
        assert_eq!(f.rename(ROOT, "b", sub, "b", 0, T1), Err(-EINVAL));
        assert_eq!(f.rename(b, "sub2", b, "sub2", 0, T1), Ok(()));
        // Directory over a file, file over a directory, directory over a non-empty directory.
        let z = file(&mut f, ROOT, "z");
        assert_eq!(f.rename(b, "sub2", ROOT, "z", 0, T1), Err(-ENOTDIR));
        assert_eq!(f.rename(ROOT, "z", b, "sub2", 0, T1), Err(-EISDIR));
        assert_eq!(f.rename(ROOT, "a", ROOT, "b", 0, T1), Err(-ENOTEMPTY));
        // Over an empty directory: replaced.
        f.rename(ROOT, "b", ROOT, "a", 0, T1).unwrap();
        assert_eq!(f.lookup(ROOT, "a"), Ok(b));
        assert_eq!(f.stat(a), Err(-ENOENT));
        assert_eq!(f.stat(ROOT).unwrap().nlink, 3);
        assert_eq!(f.rename(ROOT, "a", ROOT, "z", RENAME_NOREPLACE, T1), Err(-EEXIST));
        assert_eq!(f.rename(ROOT, "nothing", ROOT, "q", 0, T1), Err(-ENOENT));
        assert_eq!(f.rename(ROOT, "z", ROOT, ".", 0, T1), Err(-EBUSY));
        assert_eq!(f.rename(ROOT, "z", ROOT, "q", RENAME_WHITEOUT, T1), Err(-EINVAL));
        // Exchange a file and a directory in different parents.
        assert_eq!(f.rename(ROOT, "z", b, "sub2", RENAME_EXCHANGE, T1), Ok(()));
        assert_eq!((f.lookup(ROOT, "z"), f.lookup(b, "sub2")), (Ok(sub), Ok(z)));
        assert_eq!(f.lookup(sub, ".."), Ok(ROOT));
        assert_eq!((f.stat(ROOT).unwrap().nlink, f.stat(b).unwrap().nlink), (4, 2));
        assert_eq!(f.rename(ROOT, "z", ROOT, "none", RENAME_EXCHANGE, T1), Err(-ENOENT));
    }

    #[test]
    fn exchanging_two_directories_keeps_link_counts() {
        let mut f = fs();
        let p = dir(&mut f, ROOT, "p");
        let q = dir(&mut f, ROOT, "q");
        let a = dir(&mut f, p, "a");
        let b = dir(&mut f, q, "b");
        f.rename(p, "a", q, "b", RENAME_EXCHANGE, T1).unwrap();
        assert_eq!((f.lookup(p, "a"), f.lookup(q, "b")), (Ok(b), Ok(a)));
        assert_eq!((f.lookup(a, ".."), f.lookup(b, "..")), (Ok(q), Ok(p)));
        assert_eq!((f.stat(p).unwrap().nlink, f.stat(q).unwrap().nlink), (3, 3));
        // One inside the other: refused.
        let inner = dir(&mut f, a, "inner");
        assert_eq!(f.rename(q, "b", a, "inner", RENAME_EXCHANGE, T1), Err(-EINVAL));
        let _ = inner;
    }

    #[test]
    fn symlinks_devices_and_attributes() {
        let mut f = fs();
        let l = f.symlink(ROOT, "l", "/etc/passwd", 0, 0, T0).unwrap();
        assert_eq!(f.readlink(l), Ok("/etc/passwd"));
        assert_eq!(f.stat(l).unwrap().mode(), 0o120777);
        assert_eq!(f.stat(l).unwrap().size, 11);
        assert_eq!(f.symlink(ROOT, "e", "", 0, 0, T0), Err(-ENOENT));
        assert_eq!(f.symlink(ROOT, "long", &"x".repeat(4096), 0, 0, T0), Err(-ENAMETOOLONG));
        assert_eq!(f.readlink(ROOT), Err(-EINVAL));
        let c = f.create(ROOT, "null", FileType::CharDevice, 0o666, 0, 0, (1 << 8) | 3, T0).unwrap();
        assert_eq!((f.rdev(c), f.stat(c).unwrap().mode()), (Ok(0x103), 0o020666));
        assert_eq!(f.read(c, 0, &mut [0u8; 1]), Err(-EINVAL));
        f.set_perm(c, 0o100640, T1).unwrap();
        assert_eq!(f.stat(c).unwrap().perm, 0o640);
        f.set_owner(c, Some(1000), None, T1).unwrap();
        assert_eq!((f.stat(c).unwrap().uid, f.stat(c).unwrap().gid), (1000, 0));
        f.set_times(c, Some(T1), None, Timespec { sec: 300, nsec: 0 }).unwrap();
        let st = f.stat(c).unwrap();
        assert_eq!((st.atime, st.mtime, st.ctime.sec), (T1, T0, 300));
        let fifo = f.create(ROOT, "fifo", FileType::Fifo, 0o600, 0, 0, 0, T0).unwrap();
        assert_eq!(f.stat(fifo).unwrap().mode(), 0o010600);
        assert_eq!(f.create(ROOT, "s", FileType::Symlink, 0o777, 0, 0, 0, T0), Err(-EINVAL));
        assert_eq!(f.read_dir(ROOT).unwrap().iter().find(|e| e.0 == "l").map(|e| e.2.dirent_type()), Some(10));
    }

    #[test]
    fn a_borrowed_file_is_shared_until_its_first_change_and_then_counted() {
        static MODULE: [u8; 1000] = [7u8; 1000];
        let mut fs = Tmpfs::new(4096, T0);
        let ino = fs.create(ROOT, "prog", FileType::Regular, 0o755, 0, 0, 0, T0).unwrap();
        let base = fs.usage().1;
        fs.set_borrowed(ino, &MODULE).unwrap();
        assert_eq!(fs.usage().1, base, "shared bytes are not counted");
        let mut buf = [0u8; 8];
        assert_eq!(fs.read(ino, 996, &mut buf), Ok(4));
        assert_eq!(&buf[..4], &[7; 4]);
        assert_eq!(fs.set_borrowed(ino, &MODULE), Err(-EBUSY), "only an empty file");
        // Shrinking keeps sharing.
        fs.truncate(ino, 900, T0).unwrap();
        assert_eq!((fs.usage().1, fs.stat(ino).unwrap().size), (base, 900));
        // The first write copies (and counts) the bytes; the module is untouched.
        assert_eq!(fs.write(ino, 0, b"ab", T0), Ok(2));
        assert_eq!(fs.usage().1, base + 900);
        assert_eq!(fs.read(ino, 0, &mut buf), Ok(8));
        assert_eq!(&buf, b"ab\x07\x07\x07\x07\x07\x07");
        assert_eq!(MODULE[0], 7);
        // A copy that does not fit is ENOSPC and loses nothing.
        let big = fs.create(ROOT, "big", FileType::Regular, 0o644, 0, 0, 0, T0).unwrap();
        static LARGE: [u8; 8192] = [1u8; 8192];
        fs.set_borrowed(big, &LARGE).unwrap();
        assert_eq!(fs.write(big, 0, b"x", T0), Err(-ENOSPC));
        assert_eq!(fs.truncate(big, 9000, T0), Err(-ENOSPC));
        assert_eq!(fs.read(big, 8191, &mut buf), Ok(1));
        // Unlinking a shared file refunds only what was counted.
        let used = fs.usage().1;
        fs.unlink(ROOT, "big", T0).unwrap();
        assert!(fs.usage().1 < used && fs.usage().1 >= base + 900);
    }
}
