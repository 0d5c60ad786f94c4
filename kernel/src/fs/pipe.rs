//! A pipe's buffer and ends, as Linux's pipe(7) describes them: 64 KiB of capacity; a write of at most
//! PIPE_BUF bytes goes in whole or waits (never interleaved with another writer's), a larger one goes in as
//! room appears; reading an empty pipe with no writer left is end of file; writing with no reader left is
//! EPIPE (and SIGPIPE, which the caller sends). Pure logic; the kernel blocks and wakes around it.
#![forbid(unsafe_code)]

use alloc::collections::VecDeque;

pub const PIPE_BUF: usize = 4096;
pub const CAPACITY: usize = 65536;

#[derive(Debug)]
pub struct Pipe {
    data: VecDeque<u8>,
    pub readers: u32,
    pub writers: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Data(usize),
    /// Empty, and no writer left.
    EndOfFile,
    /// Empty; a writer may still write (block, or EAGAIN).
    Empty,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    /// This many bytes went in (all of an atomic write; for a larger one, what fitted).
    Wrote(usize),
    /// No room for it now (block, or EAGAIN).
    Full,
    /// No reader left: EPIPE and SIGPIPE.
    Broken,
}

impl Default for Pipe {
    fn default() -> Self {
        Self::new()
    }
}

impl Pipe {
    /// A pipe with one reader and one writer (pipe(2)'s two descriptors).
    pub fn new() -> Pipe {
        Pipe { data: VecDeque::new(), readers: 1, writers: 1 }
    }

    /// Bytes a read could take now (FIONREAD).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn read(&mut self, out: &mut [u8]) -> Read {
        if self.data.is_empty() {
            return if self.writers == 0 { Read::EndOfFile } else { Read::Empty };
        }
        let n = out.len().min(self.data.len());
        // Two slice copies (the ring's two halves), not a byte at a time.
        let (a, b) = self.data.as_slices();
        let k = n.min(a.len());
        out[..k].copy_from_slice(&a[..k]);
        out[k..n].copy_from_slice(&b[..n - k]);
        self.data.drain(..n);
        Read::Data(n)
    }

    /// Write `data`, the rest of a write of `total` bytes (PIPE_BUF atomicity is about the whole write).
    pub fn write(&mut self, data: &[u8], total: usize) -> Write {
        if self.readers == 0 {
            return Write::Broken;
        }
        let room = CAPACITY - self.data.len();
        if data.is_empty() {
            return Write::Wrote(0);
        }
        if (total <= PIPE_BUF && room < data.len()) || room == 0 {
            return Write::Full;
        }
        let n = room.min(data.len());
        self.data.extend(&data[..n]);
        Write::Wrote(n)
    }

    /// poll: a read would not block (data, or end of file).
    pub fn readable(&self) -> bool {
        !self.data.is_empty() || self.writers == 0
    }

    /// poll: a write of PIPE_BUF bytes would not block (or would fail: no reader).
    pub fn writable(&self) -> bool {
        self.readers == 0 || CAPACITY - self.data.len() >= PIPE_BUF
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_out_in_order_and_eof_follows_the_last_writer() {
        let mut p = Pipe::new();
        let mut b = [0u8; 8];
        assert_eq!(p.read(&mut b), Read::Empty);
        assert_eq!(p.write(b"hello", 5), Write::Wrote(5));
        assert_eq!(p.write(b" world", 6), Write::Wrote(6));
        assert_eq!(p.len(), 11);
        assert_eq!(p.read(&mut b), Read::Data(8));
        assert_eq!(&b, b"hello wo");
        p.writers = 0;
        assert_eq!(p.read(&mut b), Read::Data(3));
        assert_eq!(&b[..3], b"rld");
        assert_eq!(p.read(&mut b), Read::EndOfFile);
        assert!(p.readable());
    }

    #[test]
    fn small_writes_are_atomic_large_ones_are_not() {
        let mut p = Pipe::new();
        let big = alloc::vec![1u8; CAPACITY - 100];
        assert_eq!(p.write(&big, big.len()), Write::Wrote(CAPACITY - 100));
        assert!(!p.writable());
        // 200 bytes <= PIPE_BUF with 100 free: nothing goes in.
        assert_eq!(p.write(&[2u8; 200], 200), Write::Full);
        // The rest of a large write takes what room there is.
        assert_eq!(p.write(&[3u8; 200], 100_000), Write::Wrote(100));
        assert_eq!(p.write(&[3u8; 100], 100_000), Write::Full);
        let mut out = alloc::vec![0u8; CAPACITY];
        assert_eq!(p.read(&mut out), Read::Data(CAPACITY));
        assert_eq!(out[CAPACITY - 1], 3);
        assert!(p.writable());
    }

    #[test]
    fn no_reader_is_a_broken_pipe() {
        let mut p = Pipe::new();
        p.readers = 0;
        assert_eq!(p.write(b"x", 1), Write::Broken);
        assert!(p.writable(), "poll reports a write that would fail at once");
    }
}
