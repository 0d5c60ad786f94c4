//! The kernel's file tree (one per kernel: each sandbox has its own) and open files: regular files and
//! directories of the tree, devices (`/dev/console`, `null`, `zero`, `full`, `random`, `urandom`, `tty`) and
//! pipes. A process's descriptors, working directory and umask are an [`FsState`] the process table keeps
//! (shared by its threads, copied by fork); the system calls that use them are in `fs::sys`.
//!
//! Locks: the tree's lock and a process's `FsState` lock are never held while waiting (a pipe or the console),
//! and neither is taken by the page-fault path, so user memory may be copied under them.

use super::fdtable::FdTable;
use super::pipe::Pipe;
use super::tmpfs::{FileType, Ino, Timespec, Tmpfs};
use super::vfs::{GenId, Generated, Node, Vfs};
use crate::sync::IrqSpinlock;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use questv_libc_shim::errno::*;

/// How much memory a kernel's file tree may use (ENOSPC beyond): half the kernel heap it lives in, so a full
/// tree never starves the kernel's own allocations.
pub fn tree_limit() -> u64 {
    (crate::mm::kmem::heap_bytes() / 2) as u64
}

static TREE: IrqSpinlock<Option<Vfs>> = IrqSpinlock::new(None);

/// The generated file system (`/proc`), provided by the process table (set once at boot).
static GENERATED: spin::Once<&'static (dyn Generated + Sync)> = spin::Once::new();
/// Whether the calling thread has a signal to take (a blocking read or write then ends with ERESTARTSYS);
/// set once by the process layer.
static INTERRUPTED: spin::Once<fn() -> bool> = spin::Once::new();

/// No generated file system: every lookup in it fails (before the process table provides one).
struct NoGenerated;
impl Generated for NoGenerated {
    fn lookup(&self, _: GenId, _: &str) -> Result<GenId, i64> {
        Err(-ENOENT)
    }
    fn parent(&self, _: GenId) -> Option<GenId> {
        None
    }
    fn kind(&self, _: GenId) -> Result<FileType, i64> {
        Err(-ENOENT)
    }
    fn readlink(&self, _: GenId) -> Result<String, i64> {
        Err(-ENOENT)
    }
    fn contents(&self, _: GenId) -> Result<Vec<u8>, i64> {
        Err(-ENOENT)
    }
    fn entries(&self, _: GenId) -> Result<Vec<(String, GenId, FileType)>, i64> {
        Err(-ENOENT)
    }
}

pub fn generated() -> &'static (dyn Generated + Sync) {
    GENERATED.get().copied().unwrap_or(&NoGenerated)
}

pub fn set_generated(g: &'static (dyn Generated + Sync)) {
    GENERATED.call_once(|| g);
}

/// The open file behind a process's descriptor (set once by the process layer: /proc/PID/fd/N).
static FD_OPENER: spin::Once<fn(u32, i64) -> Option<File>> = spin::Once::new();

pub fn set_fd_opener(f: fn(u32, i64) -> Option<File>) {
    FD_OPENER.call_once(|| f);
}

pub(super) fn open_file_of(pid: u32, fd: i64) -> Option<File> {
    FD_OPENER.get().and_then(|f| f(pid, fd))
}

pub fn set_interrupt_check(f: fn() -> bool) {
    INTERRUPTED.call_once(|| f);
}

pub(super) fn interrupted() -> bool {
    INTERRUPTED.get().is_some_and(|f| f())
}

/// The tree, locked.
pub fn with_tree<R>(f: impl FnOnce(&mut Vfs) -> R) -> R {
    let mut g = TREE.lock();
    f(g.as_mut().expect("file tree used before fs::files::init"))
}

/// The wall clock as inode times.
pub fn now() -> Timespec {
    let ns = crate::time::realtime_ns(questv_arch::cpu::rdtsc()).unwrap_or(0);
    Timespec { sec: (ns / 1_000_000_000) as i64, nsec: (ns % 1_000_000_000) as i64 }
}

/// Character devices: (major, minor) as Linux numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Null,
    Zero,
    Full,
    Random,
    Urandom,
    /// The controlling terminal (`/dev/tty`): the console here.
    Tty,
    Console,
}

impl Device {
    pub const ALL: [(Device, &'static str, u32, u32, u32); 7] = [
        (Device::Null, "null", 1, 3, 0o666),
        (Device::Zero, "zero", 1, 5, 0o666),
        (Device::Full, "full", 1, 7, 0o666),
        (Device::Random, "random", 1, 8, 0o666),
        (Device::Urandom, "urandom", 1, 9, 0o666),
        (Device::Tty, "tty", 5, 0, 0o666),
        (Device::Console, "console", 5, 1, 0o600),
    ];

    pub fn rdev(self) -> u64 {
        let (_, _, major, minor, _) = Self::ALL.iter().find(|d| d.0 == self).copied().unwrap_or((self, "", 0, 0, 0));
        crate::linux_abi::makedev(u64::from(major), u64::from(minor))
    }

    pub fn from_rdev(rdev: u64) -> Option<Device> {
        Self::ALL.iter().find(|d| crate::linux_abi::makedev(u64::from(d.2), u64::from(d.3)) == rdev).map(|d| d.0)
    }

    /// A terminal (isatty, TCGETS).
    pub fn is_terminal(self) -> bool {
        matches!(self, Device::Console | Device::Tty)
    }
}

/// A pipe shared by its two ends, with the threads waiting on it.
pub struct PipeShared {
    pub pipe: IrqSpinlock<Pipe>,
    waiters: IrqSpinlock<Vec<u64>>,
}

impl PipeShared {
    pub fn new() -> Arc<PipeShared> {
        Arc::new(PipeShared { pipe: IrqSpinlock::new(Pipe::new()), waiters: IrqSpinlock::new(Vec::new()) })
    }

    /// The calling thread will block until the pipe changes (registered before the caller looks again, so a
    /// change in between wakes it).
    pub fn wait_here(&self) {
        let me = crate::sched::current_id();
        let mut w = self.waiters.lock();
        if !w.contains(&me) {
            w.push(me);
        }
    }

    /// The pipe changed: every waiter looks again.
    pub fn wake_all(&self) {
        let woken = core::mem::take(&mut *self.waiters.lock());
        for id in woken {
            crate::sched::wake(id);
        }
    }
}

pub enum Kind {
    /// A regular file of the tree.
    Inode(Ino),
    /// A directory (getdents, fchdir, openat's base).
    Dir(Node),
    Device(Device),
    PipeRead(Arc<PipeShared>),
    PipeWrite(Arc<PipeShared>),
    /// A file of the generated tree, its contents made when it was opened.
    Generated(Vec<u8>),
}

/// open(2) flags questv keeps per open file (the access mode and the status flags F_GETFL reports).
pub const O_ACCMODE: u32 = 3;
pub const O_RDONLY: u32 = 0;
pub const O_WRONLY: u32 = 1;
pub const O_RDWR: u32 = 2;
pub const O_CREAT: u32 = 0o100;
pub const O_EXCL: u32 = 0o200;
pub const O_NOCTTY: u32 = 0o400;
pub const O_TRUNC: u32 = 0o1000;
pub const O_APPEND: u32 = 0o2000;
pub const O_NONBLOCK: u32 = 0o4000;
pub const O_DSYNC: u32 = 0o10000;
pub const O_ASYNC: u32 = 0o20000;
pub const O_DIRECT: u32 = 0o40000;
pub const O_LARGEFILE: u32 = 0o100000;
pub const O_DIRECTORY: u32 = 0o200000;
pub const O_NOFOLLOW: u32 = 0o400000;
pub const O_NOATIME: u32 = 0o1000000;
pub const O_CLOEXEC: u32 = 0o2000000;
pub const O_SYNC: u32 = 0o4010000;
pub const O_PATH: u32 = 0o10000000;
pub const O_TMPFILE: u32 = 0o20200000;
/// The status flags F_SETFL may change.
pub const SETFL_MASK: u32 = O_APPEND | O_NONBLOCK | O_ASYNC | O_DIRECT | O_NOATIME;

/// An open file description: shared by `dup`ed descriptors and across fork (one offset, one set of status
/// flags), closed when the last descriptor on it goes.
pub struct OpenFile {
    pub kind: Kind,
    /// Access mode and status flags (O_APPEND, O_NONBLOCK, ...).
    pub flags: AtomicU32,
    pub offset: IrqSpinlock<u64>,
    /// The path it was opened by (what /proc/PID/fd shows).
    pub path: String,
}

impl OpenFile {
    pub fn new(kind: Kind, flags: u32, path: String) -> Arc<OpenFile> {
        Arc::new(OpenFile { kind, flags: AtomicU32::new(flags & !(O_CLOEXEC | O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY)), offset: IrqSpinlock::new(0), path })
    }

    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Relaxed)
    }

    pub fn readable(&self) -> bool {
        self.flags() & O_ACCMODE != O_WRONLY && self.flags() & O_PATH == 0
    }

    pub fn writable(&self) -> bool {
        matches!(self.flags() & O_ACCMODE, O_WRONLY | O_RDWR) && self.flags() & O_PATH == 0
    }

    pub fn nonblocking(&self) -> bool {
        self.flags() & O_NONBLOCK != 0
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        match &self.kind {
            Kind::Inode(ino) | Kind::Dir(Node::Tmp(ino)) => {
                let ino = *ino;
                if let Some(v) = TREE.lock().as_mut() {
                    v.tmp.close(ino);
                }
            }
            Kind::PipeRead(p) => {
                p.pipe.lock().readers -= 1;
                p.wake_all();
            }
            Kind::PipeWrite(p) => {
                p.pipe.lock().writers -= 1;
                p.wake_all();
            }
            _ => {}
        }
    }
}

pub type File = Arc<OpenFile>;

/// A process's view of the file system: its descriptors, working directory and file-creation mask.
#[derive(Clone)]
pub struct FsState {
    pub files: FdTable<File>,
    pub cwd: Node,
    /// The working directory's path when it was set (what /proc/PID/cwd shows).
    pub cwd_path: String,
    pub umask: u32,
}

impl FsState {
    /// init's: descriptors 0, 1 and 2 on the console, `/` as the working directory, umask 022.
    pub fn for_init() -> FsState {
        let mut files = FdTable::new();
        let console = OpenFile::new(Kind::Device(Device::Console), O_RDWR, String::from("/dev/console"));
        for _ in 0..3 {
            let _ = files.insert(console.clone(), false, 0);
        }
        FsState { files, cwd: Node::Tmp(super::tmpfs::ROOT), cwd_path: String::from("/"), umask: 0o022 }
    }
}

/// Build the tree at boot: `/bin` with the programs (mode 0755), `/dev` with the devices, `/tmp` (1777),
/// `/proc` (the generated file system's mount point), `/etc`, `/root`, `/home`.
pub fn init<'a>(programs: impl Iterator<Item = (&'a str, &'static [u8])>) {
    let t = now();
    let mut fs = Tmpfs::new(tree_limit(), t);
    let root = super::tmpfs::ROOT;
    let mk = |fs: &mut Tmpfs, name: &str, perm: u32| fs.create(root, name, FileType::Directory, perm, 0, 0, 0, t).expect("a fresh tree has room");
    let bin = mk(&mut fs, "bin", 0o755);
    let dev = mk(&mut fs, "dev", 0o755);
    let etc = mk(&mut fs, "etc", 0o755);
    // Everyone is root: the one user and group, so that programs can name them.
    for (name, text) in [("passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("group", "root:x:0:\n"), ("hostname", "questv\n")] {
        if let Ok(ino) = fs.create(etc, name, FileType::Regular, 0o644, 0, 0, 0, t) {
            let _ = fs.write(ino, 0, text.as_bytes(), t);
        }
    }
    mk(&mut fs, "home", 0o755);
    let proc_dir = mk(&mut fs, "proc", 0o555);
    mk(&mut fs, "root", 0o700);
    mk(&mut fs, "tmp", 0o1777);
    for (dev_kind, name, _, _, perm) in Device::ALL {
        let _ = fs.create(dev, name, FileType::CharDevice, perm, 0, 0, dev_kind.rdev(), t);
    }
    let _ = fs.symlink(dev, "stdin", "/proc/self/fd/0", 0, 0, t);
    let _ = fs.symlink(dev, "stdout", "/proc/self/fd/1", 0, 0, t);
    let _ = fs.symlink(dev, "stderr", "/proc/self/fd/2", 0, 0, t);
    let _ = fs.symlink(dev, "fd", "/proc/self/fd", 0, 0, t);
    let mut initramfs = None;
    for (name, bytes) in programs {
        if name == INITRAMFS {
            initramfs = Some(bytes);
            continue;
        }
        // The module's bytes stay where the boot loader put them (kept for good): the file shares them.
        match fs.create(bin, name, FileType::Regular, 0o755, 0, 0, 0, t).and_then(|ino| fs.set_borrowed(ino, bytes)) {
            Ok(()) => {}
            Err(e) => log::error!("file tree: cannot make /bin/{name}: error {e}"),
        }
    }
    if let Some(archive) = initramfs {
        unpack(&mut fs, archive, t);
    }
    let mut vfs = Vfs::new(fs);
    let _ = vfs.mount_generated(proc_dir);
    *TREE.lock() = Some(vfs);
}

/// The boot module the runner's initramfs comes as (a newc cpio: `--root DIR`, busybox's applet links).
pub const INITRAMFS: &str = "initramfs.cpio";

/// Add the initramfs's entries to the tree (missing parent directories made 0755; an existing entry of the
/// same name is replaced, so a file given with `--root` wins over a program of the same name). A malformed
/// archive or a full tree is reported on the console; what was unpacked stays.
fn unpack(fs: &mut Tmpfs, archive: &'static [u8], t: Timespec) {
    let entries = match super::cpio::parse(archive) {
        Ok(e) => e,
        Err(e) => return log::error!("initramfs refused: {e}"),
    };
    let root = super::tmpfs::ROOT;
    let mut count = 0;
    for e in entries {
        let (dir_path, name) = e.name.rsplit_once('/').unwrap_or(("", e.name));
        let mut dir = root;
        let mut ok = true;
        for part in dir_path.split('/').filter(|p| !p.is_empty()) {
            dir = match fs.lookup(dir, part) {
                Ok(d) if fs.kind(d) == Ok(FileType::Directory) => d,
                Ok(_) => {
                    ok = false;
                    break;
                }
                Err(_) => match fs.create(dir, part, FileType::Directory, 0o755, 0, 0, 0, t) {
                    Ok(d) => d,
                    Err(_) => {
                        ok = false;
                        break;
                    }
                },
            };
        }
        if !ok {
            log::error!("initramfs: {}: a parent is not a directory", e.name);
            continue;
        }
        use super::cpio::EntryKind;
        if e.kind != EntryKind::Directory {
            // Replace what is there (a program of the same name), not a directory.
            if fs.lookup(dir, name).is_ok_and(|i| fs.kind(i) != Ok(FileType::Directory)) {
                let _ = fs.unlink(dir, name, t);
            }
        }
        let made = match e.kind {
            EntryKind::Directory => match fs.lookup(dir, name) {
                Ok(d) => fs.set_perm(d, e.perm, t),
                Err(_) => fs.create(dir, name, FileType::Directory, e.perm, 0, 0, 0, t).map(|_| ()),
            },
            // Shared with the archive (a boot module, kept for good), as the programs are.
            EntryKind::Regular => fs.create(dir, name, FileType::Regular, e.perm, 0, 0, 0, t).and_then(|i| fs.set_borrowed(i, e.data)),
            EntryKind::Symlink => match core::str::from_utf8(e.data) {
                Ok(target) => fs.symlink(dir, name, target, 0, 0, t).map(|_| ()),
                Err(_) => Err(-EINVAL),
            },
            EntryKind::CharDevice => fs.create(dir, name, FileType::CharDevice, e.perm, 0, 0, crate::linux_abi::makedev(u64::from(e.rdev.0), u64::from(e.rdev.1)), t).map(|_| ()),
            EntryKind::Other => Ok(()),
        };
        match made {
            Ok(()) => count += 1,
            Err(err) => log::error!("initramfs: {}: error {err}", e.name),
        }
    }
    log::info!("initramfs: {count} entries");
}

/// The contents of the regular file `path` (resolved from the root, links followed) and its permission bits:
/// what execve loads.
pub fn read_whole(cwd: Node, path: &str) -> Result<(Vec<u8>, u32), i64> {
    with_tree(|v| {
        let g = generated();
        let node = v.resolve(g, cwd, path, true)?;
        let Node::Tmp(ino) = node else { return Err(-EACCES) };
        let st = v.tmp.stat(ino)?;
        match st.kind {
            FileType::Regular => {}
            FileType::Directory => return Err(-EACCES),
            _ => return Err(-EACCES),
        }
        let mut data = Vec::new();
        data.try_reserve_exact(st.size as usize).map_err(|_| -ENOMEM)?;
        data.resize(st.size as usize, 0);
        let n = v.tmp.read(ino, 0, &mut data)?;
        data.truncate(n);
        Ok((data, st.perm))
    })
}
