//! A process's file descriptors: small numbers naming open files, the lowest free one given out first, with
//! the close-on-exec flag kept per descriptor (not per open file: `dup` does not copy it), a limit
//! (RLIMIT_NOFILE: EMFILE beyond it), copied as a whole by fork. Generic over what an open file is, so the
//! rules are host-tested; the kernel stores shared open files (`Arc`), so `dup`ed descriptors and a forked
//! child's share one file offset, as on Linux.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use questv_libc_shim::errno::{EBADF, EINVAL, EMFILE};

/// RLIMIT_NOFILE's usual soft value on Linux.
pub const DEFAULT_LIMIT: usize = 1024;
/// The most a process may raise it to (Linux's fs.nr_open default).
pub const MAX_LIMIT: usize = 1 << 20;

#[derive(Clone, Debug)]
pub struct FdTable<F> {
    slots: Vec<Option<(F, bool)>>,
    limit: usize,
}

impl<F: Clone> Default for FdTable<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Clone> FdTable<F> {
    pub fn new() -> Self {
        FdTable { slots: Vec::new(), limit: DEFAULT_LIMIT }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Change the limit (setrlimit/prlimit): descriptors already open above it stay.
    pub fn set_limit(&mut self, limit: usize) -> Result<(), i64> {
        if limit > MAX_LIMIT {
            return Err(-EINVAL);
        }
        self.limit = limit;
        Ok(())
    }

    fn slot(&self, fd: i64) -> Option<&(F, bool)> {
        usize::try_from(fd).ok().and_then(|i| self.slots.get(i)).and_then(Option::as_ref)
    }

    /// The open file behind `fd` (EBADF if none).
    pub fn get(&self, fd: i64) -> Result<&F, i64> {
        self.slot(fd).map(|s| &s.0).ok_or(-EBADF)
    }

    pub fn cloexec(&self, fd: i64) -> Result<bool, i64> {
        self.slot(fd).map(|s| s.1).ok_or(-EBADF)
    }

    pub fn set_cloexec(&mut self, fd: i64, on: bool) -> Result<(), i64> {
        let slot = usize::try_from(fd).ok().and_then(|i| self.slots.get_mut(i)).and_then(Option::as_mut).ok_or(-EBADF)?;
        slot.1 = on;
        Ok(())
    }

    /// Install `file` at the lowest free descriptor not below `min` (open, dup, F_DUPFD).
    pub fn insert(&mut self, file: F, cloexec: bool, min: usize) -> Result<i64, i64> {
        if min >= self.limit {
            return Err(-EINVAL);
        }
        let free = (min..self.slots.len()).find(|&i| self.slots[i].is_none()).unwrap_or(self.slots.len().max(min));
        if free >= self.limit {
            return Err(-EMFILE);
        }
        if free >= self.slots.len() {
            self.slots.resize(free + 1, None);
        }
        self.slots[free] = Some((file, cloexec));
        Ok(free as i64)
    }

    /// Put `file` at descriptor `fd` (dup2, dup3), returning what was open there (the caller closes it).
    pub fn insert_at(&mut self, fd: i64, file: F, cloexec: bool) -> Result<Option<F>, i64> {
        let i = usize::try_from(fd).map_err(|_| -EBADF)?;
        if i >= self.limit {
            return Err(-EBADF);
        }
        if i >= self.slots.len() {
            self.slots.resize(i + 1, None);
        }
        Ok(self.slots[i].replace((file, cloexec)).map(|s| s.0))
    }

    /// Close `fd`: the open file it held (the caller drops it), or EBADF.
    pub fn remove(&mut self, fd: i64) -> Result<F, i64> {
        let i = usize::try_from(fd).map_err(|_| -EBADF)?;
        let f = self.slots.get_mut(i).and_then(Option::take).map(|s| s.0).ok_or(-EBADF)?;
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
        Ok(f)
    }

    /// execve: every close-on-exec descriptor is closed; their files are returned for the caller to drop.
    pub fn take_cloexec(&mut self) -> Vec<F> {
        let mut out = Vec::new();
        for s in self.slots.iter_mut() {
            if s.as_ref().is_some_and(|s| s.1) {
                out.extend(s.take().map(|s| s.0));
            }
        }
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
        out
    }

    /// Every descriptor closed (exit): the files, to drop.
    pub fn take_all(&mut self) -> Vec<F> {
        core::mem::take(&mut self.slots).into_iter().flatten().map(|s| s.0).collect()
    }

    /// The open descriptors in order, with their files.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &F)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| (i as i64, &s.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_first_and_the_limit() {
        let mut t: FdTable<&str> = FdTable::new();
        assert_eq!(t.insert("in", false, 0), Ok(0));
        assert_eq!(t.insert("out", false, 0), Ok(1));
        assert_eq!(t.insert("err", true, 0), Ok(2));
        assert_eq!(t.remove(1), Ok("out"));
        assert_eq!(t.insert("x", false, 0), Ok(1));
        assert_eq!(t.insert("y", false, 10), Ok(10), "F_DUPFD's minimum");
        assert_eq!(t.insert("z", false, 3), Ok(3));
        assert_eq!(t.get(10), Ok(&"y"));
        assert_eq!(t.get(4), Err(-EBADF));
        assert_eq!(t.get(-1), Err(-EBADF));
        assert_eq!(t.remove(4), Err(-EBADF));
        t.set_limit(11).unwrap();
        for _ in 4..10 {
            t.insert("f", false, 0).unwrap();
        }
        assert_eq!(t.insert("over", false, 0), Err(-EMFILE));
        assert_eq!(t.insert("over", false, 11), Err(-EINVAL));
        assert_eq!(t.set_limit(MAX_LIMIT + 1), Err(-EINVAL));
    }

    #[test]
    fn dup2_replaces_and_cloexec_is_per_descriptor() {
        let mut t: FdTable<&str> = FdTable::new();
        t.insert("a", true, 0).unwrap();
        t.insert("b", false, 0).unwrap();
        assert_eq!(t.insert_at(1, "a", false), Ok(Some("b")));
        assert_eq!(t.insert_at(7, "a", true), Ok(None));
        assert_eq!((t.cloexec(0), t.cloexec(1), t.cloexec(7)), (Ok(true), Ok(false), Ok(true)));
        assert_eq!(t.insert_at(DEFAULT_LIMIT as i64, "a", false), Err(-EBADF));
        assert_eq!(t.insert_at(-3, "a", false), Err(-EBADF));
        t.set_cloexec(1, true).unwrap();
        assert_eq!(t.set_cloexec(5, true), Err(-EBADF));
        let mut closed = t.take_cloexec();
        closed.sort();
        assert_eq!(closed, ["a", "a", "a"]);
        assert_eq!(t.iter().count(), 0);
    }

    #[test]
    fn fork_copies_and_exit_takes_everything() {
        let mut t: FdTable<u32> = FdTable::new();
        t.insert(1, false, 0).unwrap();
        t.insert(2, true, 5).unwrap();
        let child = t.clone();
        assert_eq!(child.iter().collect::<Vec<_>>(), [(0, &1), (5, &2)]);
        assert_eq!(t.take_all(), [1, 2]);
        assert_eq!(t.get(0), Err(-EBADF));
        assert_eq!(child.get(5), Ok(&2));
    }
}
