//! Who the NIC's bottom half works for (paper §3.4, "I/O VCPUs ... inherit the priority of the Main VCPU"):
//! the threads blocked waiting on the network, each with the period of the Main VCPU it runs on and the
//! deadline of its wait. The driver's I/O VCPU runs at the period [`Waiters::inherited_period`] names: the
//! shortest among the waiters (rate-monotonic: the most urgent one), or its own when nobody waits.
//!
//! A bottom half does not know whose frame it is handling before it has read it, so with several waiters the
//! I/O VCPU takes the most urgent one's priority (as a priority-inheritance protocol would), not the one the
//! next frame belongs to.
#![forbid(unsafe_code)]

/// Waiters kept at most (more are refused: the system call returns EAGAIN).
pub const MAX_WAITERS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiter {
    /// The waiting thread's id.
    pub thread: u64,
    /// The period of its Main VCPU (µs).
    pub period: u64,
    /// When its wait times out (TSC).
    pub deadline: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

#[derive(Clone, Debug, Default)]
pub struct Waiters {
    slots: [Option<Waiter>; MAX_WAITERS],
}

impl Waiters {
    pub const fn new() -> Self {
        Waiters { slots: [None; MAX_WAITERS] }
    }

    /// Register `w` (a thread already waiting is updated in place).
    pub fn add(&mut self, w: Waiter) -> Result<(), Full> {
        let slot = match self.slots.iter().position(|s| s.is_some_and(|s| s.thread == w.thread)) {
            Some(i) => i,
            None => self.slots.iter().position(Option::is_none).ok_or(Full)?,
        };
        self.slots[slot] = Some(w);
        Ok(())
    }

    /// The thread's wait ended; false if it was not waiting.
    pub fn remove(&mut self, thread: u64) -> bool {
        match self.slots.iter_mut().find(|s| s.is_some_and(|s| s.thread == thread)) {
            Some(s) => {
                *s = None;
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The period the bottom half runs at: the most urgent waiter's, or `None` (its own) with no waiter.
    pub fn inherited_period(&self) -> Option<u64> {
        self.slots.iter().flatten().map(|w| w.period).min()
    }

    /// Threads to wake at `now`: all of them once the stop marker came (`stopped`), else those whose time is up.
    pub fn due(&self, now: u64, stopped: bool) -> impl Iterator<Item = u64> + '_ {
        self.slots.iter().flatten().filter(move |w| stopped || now >= w.deadline).map(|w| w.thread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(thread: u64, period: u64, deadline: u64) -> Waiter {
        Waiter { thread, period, deadline }
    }

    #[test]
    fn the_most_urgent_waiter_sets_the_period() {
        let mut ws = Waiters::new();
        assert_eq!(ws.inherited_period(), None, "nobody waits: the I/O VCPU's own period");
        ws.add(w(1, 40_000, 100)).unwrap();
        assert_eq!(ws.inherited_period(), Some(40_000), "a low-priority waiter lowers the bottom half too");
        ws.add(w(2, 5_000, 100)).unwrap();
        assert_eq!(ws.inherited_period(), Some(5_000));
        assert!(ws.remove(2));
        assert_eq!(ws.inherited_period(), Some(40_000), "the urgent one left: back to the other's");
        assert!(!ws.remove(2), "not waiting twice");
        assert!(ws.remove(1));
        assert_eq!((ws.inherited_period(), ws.len()), (None, 0));
    }

    #[test]
    fn a_thread_waits_once_and_the_table_is_bounded() {
        let mut ws = Waiters::new();
        ws.add(w(7, 10_000, 50)).unwrap();
        ws.add(w(7, 20_000, 60)).unwrap();
        assert_eq!((ws.len(), ws.inherited_period()), (1, Some(20_000)), "a second wait replaces the first");
        for t in 0..MAX_WAITERS as u64 - 1 {
            ws.add(w(100 + t, 1_000, 0)).unwrap();
        }
        assert_eq!(ws.add(w(999, 1_000, 0)), Err(Full));
        assert_eq!(ws.len(), MAX_WAITERS);
    }

    #[test]
    fn due_waiters_are_the_expired_ones_or_all_after_the_stop() {
        let mut ws = Waiters::new();
        ws.add(w(1, 5_000, 100)).unwrap();
        ws.add(w(2, 5_000, 200)).unwrap();
        assert_eq!(ws.due(99, false).count(), 0);
        assert_eq!(ws.due(150, false).collect::<alloc::vec::Vec<_>>(), [1]);
        assert_eq!(ws.due(0, true).count(), 2);
    }
}
