//! The file tree a process sees: the in-memory root file system ([`Tmpfs`]) with a generated file system
//! mounted on one of its directories (`/proc`, made on demand from the process table by the kernel through
//! [`Generated`]). Path resolution as Linux's: absolute or relative to a directory, `.` and `..` (which
//! leaves a mount at its root), symbolic links followed (at most 40 in one resolution: ELOOP), a trailing
//! slash asking for a directory, ENAMETOOLONG past PATH_MAX or NAME_MAX. Pure logic, host-tested.
#![forbid(unsafe_code)]

use super::tmpfs::{FileType, Ino, Tmpfs, NAME_MAX, ROOT};
use alloc::string::String;
use questv_libc_shim::errno::*;

/// Longest path, its NUL included (PATH_MAX).
pub const PATH_MAX: usize = 4096;
/// Symbolic links one resolution may follow (Linux's MAXSYMLINKS).
pub const MAX_SYMLINKS: u32 = 40;

/// A node of the generated file system, as its provider names them (an opaque id; 0 is its root).
pub type GenId = u64;

/// A node of the tree: an inode of the root file system or a node of the generated one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    Tmp(Ino),
    Gen(GenId),
}

/// A file system made on demand (`/proc`): the kernel answers from its own tables.
pub trait Generated {
    /// The entry `name` of directory `dir` (`.` and `..` are handled by the caller).
    fn lookup(&self, dir: GenId, name: &str) -> Result<GenId, i64>;
    /// The directory holding `node` (None for the root: `..` then leaves the mount).
    fn parent(&self, node: GenId) -> Option<GenId>;
    fn kind(&self, node: GenId) -> Result<FileType, i64>;
    fn readlink(&self, node: GenId) -> Result<String, i64>;
    /// A regular file's contents, made now.
    fn contents(&self, node: GenId) -> Result<alloc::vec::Vec<u8>, i64>;
    /// A directory's entries, `.` and `..` first (getdents).
    fn entries(&self, dir: GenId) -> Result<alloc::vec::Vec<(String, GenId, FileType)>, i64>;
    /// A link that names an open file rather than a path (/proc/PID/fd/N: process, descriptor). Resolution
    /// stops at it when it is the last component, and opening it opens that file.
    fn open_file_link(&self, _node: GenId) -> Option<(u32, i64)> {
        None
    }
}

/// The root file system and where the generated one is mounted.
pub struct Vfs {
    pub tmp: Tmpfs,
    /// The directory of `tmp` the generated file system covers.
    gen_mount: Option<Ino>,
}

/// A path's last component and the directory it is in, for calls that create or remove a name.
#[derive(Debug, PartialEq, Eq)]
pub struct Parent<'p> {
    pub dir: Node,
    /// The last component (`.` or `..` included: each call decides what they mean to it); empty only for the
    /// root itself (`/`).
    pub name: &'p str,
    /// The path ended in `/` (the named thing must be a directory).
    pub trailing_slash: bool,
}

impl Vfs {
    pub fn new(tmp: Tmpfs) -> Vfs {
        Vfs { tmp, gen_mount: None }
    }

    /// Mount the generated file system on directory `dir` of the root file system.
    pub fn mount_generated(&mut self, dir: Ino) -> Result<(), i64> {
        if self.tmp.kind(dir)? != FileType::Directory {
            return Err(-ENOTDIR);
        }
        self.gen_mount = Some(dir);
        Ok(())
    }

    pub fn root(&self) -> Node {
        Node::Tmp(ROOT)
    }

    pub fn kind(&self, g: &(impl Generated + ?Sized), n: Node) -> Result<FileType, i64> {
        match n {
            Node::Tmp(i) => self.tmp.kind(i),
            Node::Gen(id) => g.kind(id),
        }
    }

    /// One step: the entry `name` of directory `dir`, crossing into and out of the generated file system.
    pub fn lookup(&self, g: &(impl Generated + ?Sized), dir: Node, name: &str) -> Result<Node, i64> {
        if name.len() > NAME_MAX {
            return Err(-ENAMETOOLONG);
        }
        match dir {
            Node::Tmp(d) => {
                let found = self.tmp.lookup(d, name)?;
                // `.` of the mount point is the generated root too (its own inode is covered).
                if Some(found) == self.gen_mount && name != ".." {
                    return Ok(Node::Gen(0));
                }
                Ok(Node::Tmp(found))
            }
            Node::Gen(id) => {
                if g.kind(id)? != FileType::Directory {
                    return Err(-ENOTDIR);
                }
                match name {
                    "" => Err(-ENOENT),
                    "." => Ok(dir),
                    ".." => match g.parent(id) {
                        Some(p) => Ok(Node::Gen(p)),
                        None => {
                            let mount = self.gen_mount.ok_or(-ENOENT)?;
                            Ok(Node::Tmp(self.tmp.lookup(mount, "..")?))
                        }
                    },
                    _ => g.lookup(id, name).map(Node::Gen),
                }
            }
        }
    }

    fn readlink_node(&self, g: &(impl Generated + ?Sized), n: Node) -> Result<String, i64> {
        match n {
            Node::Tmp(i) => self.tmp.readlink(i).map(String::from),
            Node::Gen(id) => g.readlink(id),
        }
    }

    /// The node `path` names, relative to `cwd` unless absolute. The last component, if a symbolic link, is
    /// followed only with `follow` (or a trailing slash).
    pub fn resolve(&self, g: &(impl Generated + ?Sized), cwd: Node, path: &str, follow: bool) -> Result<Node, i64> {
        let mut links = 0;
        self.walk(g, cwd, path, follow, &mut links)
    }

    fn walk(&self, g: &(impl Generated + ?Sized), cwd: Node, path: &str, follow: bool, links: &mut u32) -> Result<Node, i64> {
        if path.is_empty() {
            return Err(-ENOENT);
        }
        if path.len() >= PATH_MAX {
            return Err(-ENAMETOOLONG);
        }
        let trailing_slash = path.ends_with('/');
        let mut cur = if path.starts_with('/') { self.root() } else { cwd };
        let mut parts = path.split('/').filter(|c| !c.is_empty()).peekable();
        while let Some(name) = parts.next() {
            let last = parts.peek().is_none();
            if self.kind(g, cur)? != FileType::Directory {
                return Err(-ENOTDIR);
            }
            let next = self.lookup(g, cur, name)?;
            let magic = matches!(next, Node::Gen(id) if g.open_file_link(id).is_some());
            if magic && last && (follow || trailing_slash) {
                cur = next;
            } else if self.kind(g, next)? == FileType::Symlink && (!last || follow || trailing_slash) {
                *links += 1;
                if *links > MAX_SYMLINKS {
                    return Err(-ELOOP);
                }
                let target = self.readlink_node(g, next)?;
                cur = self.walk(g, cur, &target, true, links)?;
            } else {
                cur = next;
            }
        }
        if trailing_slash && self.kind(g, cur)? != FileType::Directory {
            return Err(-ENOTDIR);
        }
        Ok(cur)
    }

    /// The directory `path`'s last component is in (every earlier component resolved, links followed) and
    /// that component, for the calls that make or remove names.
    pub fn resolve_parent<'p>(&self, g: &(impl Generated + ?Sized), cwd: Node, path: &'p str) -> Result<Parent<'p>, i64> {
        if path.is_empty() {
            return Err(-ENOENT);
        }
        if path.len() >= PATH_MAX {
            return Err(-ENAMETOOLONG);
        }
        let trimmed = path.trim_end_matches('/');
        let trailing_slash = trimmed.len() != path.len();
        if trimmed.is_empty() {
            // "/" (or "///"): the root, which has no name in a parent.
            return Ok(Parent { dir: self.root(), name: "", trailing_slash: true });
        }
        let (dir_path, name) = match trimmed.rfind('/') {
            Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
            None => ("", trimmed),
        };
        if name.len() > NAME_MAX {
            return Err(-ENAMETOOLONG);
        }
        let dir = if dir_path.is_empty() { cwd } else { self.resolve(g, cwd, dir_path, true)? };
        if self.kind(g, dir)? != FileType::Directory {
            return Err(-ENOTDIR);
        }
        Ok(Parent { dir, name, trailing_slash })
    }

    /// The absolute path `path` names with every symbolic link resolved (realpath(3); what /proc/PID/exe
    /// shows): the directory it is in, resolved, and its last component, followed while it is a link.
    pub fn real_path(&self, g: &(impl Generated + ?Sized), cwd: Node, path: &str) -> Result<String, i64> {
        let mut dir_start = cwd;
        let mut path = String::from(path);
        for _ in 0..=MAX_SYMLINKS {
            let p = self.resolve_parent(g, dir_start, &path)?;
            let node = self.lookup(g, p.dir, p.name)?;
            if self.kind(g, node)? == FileType::Symlink && !matches!(node, Node::Gen(id) if g.open_file_link(id).is_some()) {
                let (target, dir) = (self.readlink_node(g, node)?, p.dir);
                path = target;
                dir_start = dir;
                continue;
            }
            let dir = self.path_of(g, p.dir)?;
            return Ok(if p.name.is_empty() || p.name == "." {
                dir
            } else if dir == "/" {
                alloc::format!("/{}", p.name)
            } else {
                alloc::format!("{dir}/{}", p.name)
            });
        }
        Err(-ELOOP)
    }

    /// The absolute path of directory `dir` (getcwd), walking `..` up to the root.
    pub fn path_of(&self, g: &(impl Generated + ?Sized), dir: Node) -> Result<String, i64> {
        let mut names: alloc::vec::Vec<String> = alloc::vec::Vec::new();
        let mut cur = dir;
        for _ in 0..PATH_MAX {
            if cur == self.root() {
                let mut p = String::new();
                for n in names.iter().rev() {
                    p.push('/');
                    p.push_str(n);
                }
                if p.is_empty() {
                    p.push('/');
                }
                return Ok(p);
            }
            let parent = self.lookup(g, cur, "..")?;
            let name = self.name_in(g, parent, cur)?;
            names.push(name);
            cur = parent;
        }
        Err(-ENAMETOOLONG)
    }

    /// The name `child` has in directory `dir`.
    fn name_in(&self, g: &(impl Generated + ?Sized), dir: Node, child: Node) -> Result<String, i64> {
        match (dir, child) {
            (Node::Tmp(d), Node::Gen(0)) if self.gen_mount.is_some() => {
                let mount = self.gen_mount.unwrap_or(ROOT);
                self.tmp.read_dir(d)?.into_iter().skip(2).find(|e| e.1 == mount).map(|e| e.0).ok_or(-ENOENT)
            }
            (Node::Tmp(d), Node::Tmp(c)) => self.tmp.read_dir(d)?.into_iter().skip(2).find(|e| e.1 == c).map(|e| e.0).ok_or(-ENOENT),
            // Directories of the generated file system are not a process's working directory in practice;
            // their names are not looked up backwards.
            _ => {
                let _ = g;
                Err(-ENOENT)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::tmpfs::Timespec;
    use alloc::string::ToString;

    const T: Timespec = Timespec { sec: 1, nsec: 0 };

    /// A generated tree: 0 = root dir, 1 = "self" (a link to "7"), 7 = dir "7" with 8 = file "status".
    struct Fake;
    impl Generated for Fake {
        fn lookup(&self, dir: GenId, name: &str) -> Result<GenId, i64> {
            match (dir, name) {
                (0, "self") => Ok(1),
                (0, "7") => Ok(7),
                (7, "status") => Ok(8),
                _ => Err(-ENOENT),
            }
        }
        fn parent(&self, node: GenId) -> Option<GenId> {
            match node {
                0 => None,
                _ => Some(0),
            }
        }
        fn kind(&self, node: GenId) -> Result<FileType, i64> {
            match node {
                0 | 7 => Ok(FileType::Directory),
                1 => Ok(FileType::Symlink),
                8 => Ok(FileType::Regular),
                _ => Err(-ENOENT),
            }
        }
        fn readlink(&self, node: GenId) -> Result<String, i64> {
            if node == 1 { Ok("7".to_string()) } else { Err(-EINVAL) }
        }
        fn contents(&self, node: GenId) -> Result<alloc::vec::Vec<u8>, i64> {
            if node == 8 { Ok(b"State: R".to_vec()) } else { Err(-EINVAL) }
        }
        fn entries(&self, _: GenId) -> Result<alloc::vec::Vec<(String, GenId, FileType)>, i64> {
            Ok(alloc::vec::Vec::new())
        }
    }

    /// /bin/sh, /etc/, /tmp/, /proc (mounted), /lnk -> /etc, /loop -> /loop, /rel -> ../bin/sh, /etc/dangling -> /nope
    fn tree() -> (Vfs, Ino, Ino, Ino) {
        let mut t = Tmpfs::new(1 << 20, T);
        let bin = t.create(ROOT, "bin", FileType::Directory, 0o755, 0, 0, 0, T).unwrap();
        let sh = t.create(bin, "sh", FileType::Regular, 0o755, 0, 0, 0, T).unwrap();
        let etc = t.create(ROOT, "etc", FileType::Directory, 0o755, 0, 0, 0, T).unwrap();
        t.create(ROOT, "tmp", FileType::Directory, 0o1777, 0, 0, 0, T).unwrap();
        let proc_dir = t.create(ROOT, "proc", FileType::Directory, 0o555, 0, 0, 0, T).unwrap();
        t.symlink(ROOT, "lnk", "/etc", 0, 0, T).unwrap();
        t.symlink(ROOT, "loop", "/loop", 0, 0, T).unwrap();
        t.symlink(etc, "rel", "../bin/sh", 0, 0, T).unwrap();
        t.symlink(etc, "dangling", "/nope", 0, 0, T).unwrap();
        let mut v = Vfs::new(t);
        v.mount_generated(proc_dir).unwrap();
        (v, bin, sh, etc)
    }

    #[test]
    fn absolute_relative_dot_and_dotdot() {
        let (v, bin, sh, etc) = tree();
        let r = |cwd, p: &str| v.resolve(&Fake, cwd, p, true);
        assert_eq!(r(v.root(), "/bin/sh"), Ok(Node::Tmp(sh)));
        assert_eq!(r(Node::Tmp(bin), "sh"), Ok(Node::Tmp(sh)));
        assert_eq!(r(Node::Tmp(etc), "../bin/./sh"), Ok(Node::Tmp(sh)));
        assert_eq!(r(Node::Tmp(etc), "//bin//sh"), Ok(Node::Tmp(sh)));
        assert_eq!(r(v.root(), "/.."), Ok(v.root()));
        assert_eq!(r(v.root(), "/bin/sh/"), Err(-ENOTDIR));
        assert_eq!(r(v.root(), "/bin/sh/x"), Err(-ENOTDIR));
        assert_eq!(r(v.root(), "/bin/none"), Err(-ENOENT));
        assert_eq!(r(v.root(), ""), Err(-ENOENT));
        assert_eq!(r(v.root(), &"a/".repeat(2048)), Err(-ENAMETOOLONG));
        assert_eq!(r(v.root(), &"n".repeat(256)), Err(-ENAMETOOLONG));
    }

    #[test]
    fn symbolic_links_followed_or_not_and_loops() {
        let (v, _, sh, etc) = tree();
        let lnk = v.tmp.lookup(ROOT, "lnk").unwrap();
        assert_eq!(v.resolve(&Fake, v.root(), "/lnk", true), Ok(Node::Tmp(etc)));
        assert_eq!(v.resolve(&Fake, v.root(), "/lnk", false), Ok(Node::Tmp(lnk)));
        // A trailing slash follows even for lstat-like calls.
        assert_eq!(v.resolve(&Fake, v.root(), "/lnk/", false), Ok(Node::Tmp(etc)));
        // A relative target is resolved from the link's directory.
        assert_eq!(v.resolve(&Fake, v.root(), "/lnk/rel", true), Ok(Node::Tmp(sh)));
        assert_eq!(v.resolve(&Fake, v.root(), "/loop", true), Err(-ELOOP));
        assert_eq!(v.resolve(&Fake, v.root(), "/etc/dangling", true), Err(-ENOENT));
        assert!(v.resolve(&Fake, v.root(), "/etc/dangling", false).is_ok());
    }

    #[test]
    fn the_generated_mount_is_entered_and_left() {
        let (v, _, _, _) = tree();
        assert_eq!(v.resolve(&Fake, v.root(), "/proc", true), Ok(Node::Gen(0)));
        assert_eq!(v.resolve(&Fake, v.root(), "/proc/7/status", true), Ok(Node::Gen(8)));
        assert_eq!(v.resolve(&Fake, v.root(), "/proc/self/status", true), Ok(Node::Gen(8)));
        assert_eq!(v.resolve(&Fake, v.root(), "/proc/self", false), Ok(Node::Gen(1)));
        assert_eq!(v.resolve(&Fake, v.root(), "/proc/../bin", true), v.resolve(&Fake, v.root(), "/bin", true));
        assert_eq!(v.resolve(&Fake, v.root(), "/proc/7/status/x", true), Err(-ENOTDIR));
        assert_eq!(v.resolve(&Fake, v.root(), "/proc/9", true), Err(-ENOENT));
        assert_eq!(v.path_of(&Fake, Node::Gen(0)), Ok("/proc".to_string()));
    }

    #[test]
    fn parents_of_paths() {
        let (v, bin, _, etc) = tree();
        let p = v.resolve_parent(&Fake, Node::Tmp(etc), "../bin/new").unwrap();
        assert_eq!(p, Parent { dir: Node::Tmp(bin), name: "new", trailing_slash: false });
        let p = v.resolve_parent(&Fake, v.root(), "/lnk/sub/").unwrap();
        assert_eq!(p, Parent { dir: Node::Tmp(etc), name: "sub", trailing_slash: true });
        let p = v.resolve_parent(&Fake, Node::Tmp(bin), "x").unwrap();
        assert_eq!((p.dir, p.name), (Node::Tmp(bin), "x"));
        assert_eq!(v.resolve_parent(&Fake, v.root(), "/").unwrap().name, "");
        assert_eq!(v.resolve_parent(&Fake, v.root(), "/bin/sh/x"), Err(-ENOTDIR));
        assert_eq!(v.resolve_parent(&Fake, v.root(), "/none/x"), Err(-ENOENT));
        assert_eq!(v.resolve_parent(&Fake, v.root(), "/x/.."), Err(-ENOENT));
        assert_eq!(v.resolve_parent(&Fake, v.root(), "/bin/.").unwrap().name, ".");
    }

    #[test]
    fn real_paths_resolve_every_link() {
        let (v, _, _, _) = tree();
        assert_eq!(v.real_path(&Fake, v.root(), "/lnk/rel"), Ok("/bin/sh".to_string()));
        assert_eq!(v.real_path(&Fake, v.root(), "/bin/../bin/sh"), Ok("/bin/sh".to_string()));
        assert_eq!(v.real_path(&Fake, v.root(), "/loop"), Err(-ELOOP));
    }

    #[test]
    fn getcwd_paths() {
        let (v, bin, _, etc) = tree();
        assert_eq!(v.path_of(&Fake, v.root()), Ok("/".to_string()));
        assert_eq!(v.path_of(&Fake, Node::Tmp(bin)), Ok("/bin".to_string()));
        let mut v = v;
        let deep = v.tmp.create(etc, "deep", FileType::Directory, 0o755, 0, 0, 0, T).unwrap();
        assert_eq!(v.path_of(&Fake, Node::Tmp(deep)), Ok("/etc/deep".to_string()));
    }
}
