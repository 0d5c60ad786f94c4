//! Futex bookkeeping (futex(2)): who waits on which word, and the wake and requeue rules. The system call
//! (`proc::futex`) reads the user word and blocks and wakes threads; this module only decides who is woken,
//! in the order they came (FIFO, as Linux's hash-bucket queues are for equal priorities).
//!
//! A key is (address space, user address): private futexes (what glibc's and musl's threads use) and
//! shared ones in private memory are the same thing there. A futex in MAP_SHARED memory shared by two
//! processes would need the physical page as its key: not done (see docs/processes.md).
#![forbid(unsafe_code)]

use alloc::vec::Vec;

/// futex(2) operations (the low 7 bits of `futex_op`) and flags.
pub const FUTEX_WAIT: u32 = 0;
pub const FUTEX_WAKE: u32 = 1;
pub const FUTEX_REQUEUE: u32 = 3;
pub const FUTEX_CMP_REQUEUE: u32 = 4;
pub const FUTEX_WAKE_OP: u32 = 5;
pub const FUTEX_WAIT_BITSET: u32 = 9;
pub const FUTEX_WAKE_BITSET: u32 = 10;
pub const FUTEX_PRIVATE_FLAG: u32 = 128;
pub const FUTEX_CLOCK_REALTIME: u32 = 256;
pub const FUTEX_BITSET_MATCH_ANY: u32 = u32::MAX;

/// Which word: the address space (an identity, not a pointer to follow) and the user address.
pub type Key = (usize, u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Waiter {
    key: Key,
    bitset: u32,
    /// The scheduler's id of the waiting thread.
    thread: u64,
}

/// Every waiting thread of one kernel, oldest first.
#[derive(Default, Debug)]
pub struct Queue {
    waiters: Vec<Waiter>,
}

impl Queue {
    pub const fn new() -> Queue {
        Queue { waiters: Vec::new() }
    }

    /// `thread` waits on `key` for a wake whose bitset meets `bitset` (never 0: the caller refuses it).
    pub fn wait(&mut self, key: Key, bitset: u32, thread: u64) {
        self.waiters.push(Waiter { key, bitset, thread });
    }

    /// Is `thread` still waiting (not woken yet)?
    pub fn is_waiting(&self, thread: u64) -> bool {
        self.waiters.iter().any(|w| w.thread == thread)
    }

    /// `thread` stops waiting (timeout, signal). Returns whether it was still waiting: false means a wake
    /// took it first, and the wait succeeded.
    pub fn cancel(&mut self, thread: u64) -> bool {
        let before = self.waiters.len();
        self.waiters.retain(|w| w.thread != thread);
        self.waiters.len() != before
    }

    /// Wake up to `n` waiters on `key` whose bitset meets `bitset`, oldest first; returns their threads.
    pub fn wake(&mut self, key: Key, n: u32, bitset: u32) -> Vec<u64> {
        let mut woken = Vec::new();
        self.waiters.retain(|w| {
            if woken.len() < n as usize && w.key == key && w.bitset & bitset != 0 {
                woken.push(w.thread);
                false
            } else {
                true
            }
        });
        woken
    }

    /// FUTEX_REQUEUE: wake up to `n_wake` waiters on `from`, then move up to `n_requeue` of the rest to
    /// `to`, keeping their order. Returns (the woken threads, how many moved).
    pub fn requeue(&mut self, from: Key, to: Key, n_wake: u32, n_requeue: u32) -> (Vec<u64>, u32) {
        let woken = self.wake(from, n_wake, FUTEX_BITSET_MATCH_ANY);
        let mut moved = 0;
        for w in self.waiters.iter_mut().filter(|w| w.key == from) {
            if moved == n_requeue {
                break;
            }
            w.key = to;
            moved += 1;
        }
        (woken, moved)
    }

    /// Forget every waiter in address space `space` (it is gone).
    pub fn forget_space(&mut self, space: usize) {
        self.waiters.retain(|w| w.key.0 != space);
    }

    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }
}

/// FUTEX_WAKE_OP's operation on the second word: (the new value, whether the comparison of its old value
/// holds). `encoded` is the call's `val3`: op (bits 28–30, bit 31: the argument is a shift count), cmp (24–27),
/// oparg (12–23), cmparg (0–11), both signed 12-bit. None for an unknown op or cmp (ENOSYS, as Linux).
pub fn wake_op(encoded: u32, old: u32) -> Option<(u32, bool)> {
    let sign12 = |v: u32| ((v << 20) as i32 >> 20) as u32;
    let op = (encoded >> 28) & 7;
    let cmp = (encoded >> 24) & 15;
    let mut oparg = sign12((encoded >> 12) & 0xFFF);
    let cmparg = sign12(encoded & 0xFFF);
    if encoded & (1 << 31) != 0 {
        // Linux takes a shift past 31 modulo 32 (after a warning).
        oparg = 1u32 << (oparg & 31);
    }
    let new = match op {
        0 => oparg,
        1 => old.wrapping_add(oparg),
        2 => old | oparg,
        3 => old & !oparg,
        4 => old ^ oparg,
        _ => return None,
    };
    let (o, c) = (old as i32, cmparg as i32);
    let holds = match cmp {
        0 => o == c,
        1 => o != c,
        2 => o < c,
        3 => o <= c,
        4 => o > c,
        5 => o >= c,
        _ => return None,
    };
    Some((new, holds))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Key = (1, 0x1000);
    const B: Key = (1, 0x2000);
    const OTHER_SPACE: Key = (2, 0x1000);

    #[test]
    fn wake_takes_the_oldest_waiters_of_that_word_only() {
        let mut q = Queue::new();
        q.wait(A, !0, 10);
        q.wait(OTHER_SPACE, !0, 11);
        q.wait(A, !0, 12);
        q.wait(A, !0, 13);
        assert_eq!(q.wake(A, 2, !0), vec![10, 12]);
        assert!(q.is_waiting(13) && q.is_waiting(11));
        assert_eq!(q.wake(A, 0, !0), Vec::<u64>::new(), "waking 0 wakes nobody");
        assert_eq!(q.wake(A, i32::MAX as u32, !0), vec![13]);
        assert_eq!(q.len(), 1, "the same address in another space is another futex");
    }

    #[test]
    fn bitsets_select_waiters() {
        let mut q = Queue::new();
        q.wait(A, 0b01, 1);
        q.wait(A, 0b10, 2);
        assert_eq!(q.wake(A, 5, 0b10), vec![2]);
        assert_eq!(q.wake(A, 5, 0b10), Vec::<u64>::new());
        assert_eq!(q.wake(A, 5, FUTEX_BITSET_MATCH_ANY), vec![1]);
    }

    #[test]
    fn requeue_wakes_then_moves_in_order() {
        let mut q = Queue::new();
        for t in 1..=5 {
            q.wait(A, !0, t);
        }
        let (woken, moved) = q.requeue(A, B, 1, 2);
        assert_eq!((woken, moved), (vec![1], 2));
        assert_eq!(q.wake(B, 10, !0), vec![2, 3]);
        assert_eq!(q.wake(A, 10, !0), vec![4, 5]);
    }

    #[test]
    fn a_cancelled_wait_is_told_whether_a_wake_came_first() {
        let mut q = Queue::new();
        q.wait(A, !0, 7);
        assert!(q.cancel(7), "still waiting: timed out or interrupted");
        q.wait(A, !0, 7);
        q.wake(A, 1, !0);
        assert!(!q.cancel(7), "woken before the cancel: the wait succeeded");
        q.wait(A, !0, 8);
        q.forget_space(1);
        assert!(q.is_empty());
    }

    #[test]
    fn wake_op_encodings_as_glibc_builds_them() {
        // FUTEX_OP(FUTEX_OP_SET, 0, FUTEX_OP_CMP_GT, 1): glibc's old condvar/mutex unlock.
        let enc = (0 << 28) | (4 << 24) | (0 << 12) | 1;
        assert_eq!(wake_op(enc, 2), Some((0, true)));
        assert_eq!(wake_op(enc, 1), Some((0, false)));
        // ADD -1 (12-bit signed), compare EQ 0.
        let enc = (1 << 28) | (0 << 24) | (0xFFF << 12);
        assert_eq!(wake_op(enc, 5), Some((4, false)));
        assert_eq!(wake_op(enc, 0), Some((u32::MAX, true)));
        // OPARG_SHIFT: OR (1 << 3).
        assert_eq!(wake_op((1 << 31) | (2 << 28) | (3 << 12), 0), Some((8, true)), "old 0 == cmparg 0");
        assert_eq!(wake_op(7 << 28, 0), None);
        assert_eq!(wake_op(9 << 24, 0), None);
    }
}
