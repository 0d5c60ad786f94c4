//! A sandbox's console lines waiting for the UART (docs/vt.md, "Console"): a bounded byte ring of complete
//! lines, each stored as a two-byte length and its bytes. The monitor drains the sandboxes' queues in turns,
//! so one sandbox's flood fills only its own queue and delays only its own lines. Host-tested.
#![forbid(unsafe_code)]

/// Bytes one sandbox may have waiting.
pub const CAPACITY: usize = 8192;
/// Longest line stored (longer ones are cut where the monitor's line buffer ends).
pub const LINE_MAX: usize = 160;

pub struct LineQueue {
    buf: [u8; CAPACITY],
    head: usize,
    len: usize,
    lines: usize,
}

impl Default for LineQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl LineQueue {
    pub const fn new() -> LineQueue {
        LineQueue { buf: [0; CAPACITY], head: 0, len: 0, lines: 0 }
    }

    pub fn free(&self) -> usize {
        CAPACITY - self.len
    }

    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Whether `bytes` of console input surely fit (every byte a line of its own at worst, plus the line
    /// being assembled).
    pub fn has_room_for(&self, bytes: usize) -> bool {
        self.free() >= bytes.saturating_mul(3) + LINE_MAX + 2
    }

    fn put(&mut self, b: u8) {
        self.buf[(self.head + self.len) % CAPACITY] = b;
        self.len += 1;
    }

    fn take(&mut self) -> u8 {
        let b = self.buf[self.head];
        self.head = (self.head + 1) % CAPACITY;
        self.len -= 1;
        b
    }

    /// Queue one line (at most LINE_MAX bytes kept); false if it does not fit (nothing is stored).
    pub fn push(&mut self, line: &[u8]) -> bool {
        let line = &line[..line.len().min(LINE_MAX)];
        if self.free() < line.len() + 2 {
            return false;
        }
        let [lo, hi] = (line.len() as u16).to_le_bytes();
        self.put(lo);
        self.put(hi);
        for &b in line {
            self.put(b);
        }
        self.lines += 1;
        true
    }

    /// The oldest line, copied into `out` (LINE_MAX bytes); its length.
    pub fn pop(&mut self, out: &mut [u8; LINE_MAX]) -> Option<usize> {
        if self.lines == 0 {
            return None;
        }
        let n = usize::from(u16::from_le_bytes([self.take(), self.take()]));
        for slot in out.iter_mut().take(n) {
            *slot = self.take();
        }
        self.lines -= 1;
        Some(n)
    }
}

/// How many of the other sandboxes' lines one drain may print after the caller's own are out: a bystander that
/// finds the UART free prints its own lines, one of each other sandbox's between two of its own (their turns),
/// and at most this many more — never a flooder's whole queue.
pub const OTHERS_PER_DRAIN: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn line(q: &mut LineQueue) -> Option<std::vec::Vec<u8>> {
        let mut out = [0u8; LINE_MAX];
        q.pop(&mut out).map(|n| out[..n].to_vec())
    }

    #[test]
    fn lines_come_out_in_order_across_the_wrap() {
        let mut q = LineQueue::new();
        for round in 0..200u32 {
            let a = std::format!("line {round} {}", "x".repeat((round % 150) as usize));
            assert!(q.push(a.as_bytes()));
            assert!(q.push(b""));
            assert_eq!(line(&mut q).as_deref(), Some(a.as_bytes()));
            assert_eq!(line(&mut q).as_deref(), Some(&b""[..]));
        }
        assert_eq!((q.lines(), q.free()), (0, CAPACITY));
        assert_eq!(line(&mut q), None);
    }

    #[test]
    fn a_full_queue_refuses_and_keeps_what_it_has() {
        let mut q = LineQueue::new();
        let mut n = 0;
        while q.push(&[b'a'; 100]) {
            n += 1;
        }
        assert_eq!(n, CAPACITY / 102);
        assert!(!q.has_room_for(1));
        assert_eq!(q.lines(), n);
        assert_eq!(line(&mut q).map(|l| l.len()), Some(100));
        assert!(q.push(&[b'b'; 100]), "room again after a pop");
        // A long line is cut at LINE_MAX.
        let mut q = LineQueue::new();
        assert!(q.push(&[b'c'; 500]));
        assert_eq!(line(&mut q).map(|l| l.len()), Some(LINE_MAX));
        assert!(q.has_room_for(512));
    }
}
