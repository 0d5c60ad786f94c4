//! The monitor's channel table (paper §3.3; docs/vt.md, "Channels"): who asked for which channel, which have
//! memory, which ends map it and when that memory may be freed — pure logic, host-tested. The mechanics
//! (allocating, mapping, wiping, the info page's directory) are `monitor/channels.rs`'.
//!
//! - Memory only by consent: a channel gets memory (mapped into both ends) only once both ends opened it; a
//!   one-sided open is a request that costs nothing.
//! - Freed when nobody maps it: a close unmaps it from the closer, a restart from the restarted sandbox; the
//!   last end to go frees it.
//! - A quota: at most `quota` channels with memory per sandbox.
//! - A close revokes the peer's right to notify (notifications need both ends open).
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use questv_abi::hypercall as hc;

/// One sandbox pair's channel. Bit masks: bit 0 = endpoint `a` (the lower number), bit 1 = `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    pub a: u32,
    pub b: u32,
    /// Its memory (host address = guest-physical address in both ends), once both ends opened it.
    pub base: Option<u64>,
    /// Ends that hold it open (in their current incarnation).
    opened: u8,
    /// Ends whose second stage maps its memory.
    mapped: u8,
}

impl Channel {
    fn bit(&self, sandbox: u32) -> u8 {
        if sandbox == self.a {
            1
        } else {
            2
        }
    }
    fn has(&self, sandbox: u32) -> bool {
        self.a == sandbox || self.b == sandbox
    }
    /// Both ends hold it open (so either may notify the other).
    pub fn both_open(&self) -> bool {
        self.opened == 3
    }
}

/// What an open asks the monitor to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenStep {
    /// The peer has not opened it: the request is noted, nothing is allocated (the caller gets EAGAIN).
    Pending,
    /// Both ends want it and it has no memory: allocate, map into both, then [`ChannelTable::allocated`].
    Allocate { index: usize },
    /// It has memory the caller's second stage lacks (after the caller's restart or close): map it there, then
    /// [`ChannelTable::mapped`].
    Map { index: usize, base: u64 },
    /// Mapped already: its address.
    Ready { base: u64 },
}

/// What a close or a restart leaves to the monitor: unmap the memory from that sandbox (a close: its
/// own second stage; a restart rebuilds it anyway), and free it when no end maps it any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Release {
    pub index: usize,
    pub unmap: Option<u64>,
    pub free: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct ChannelTable {
    /// By directory index (a pair keeps its index for good, so the info page's reset counter stays its own).
    chans: Vec<Channel>,
    /// Channels with memory a sandbox may have at once.
    quota: u32,
    capacity: usize,
}

/// Channels with memory a sandbox may have at once unless the monitor is told otherwise.
pub const DEFAULT_QUOTA: u32 = 8;

impl ChannelTable {
    /// A table of at most `capacity` pairs (the info page's directory size), `quota` channels per sandbox.
    pub const fn new(capacity: usize, quota: u32) -> ChannelTable {
        ChannelTable { chans: Vec::new(), quota, capacity }
    }

    pub fn channels(&self) -> &[Channel] {
        &self.chans
    }

    pub fn get(&self, index: usize) -> Option<&Channel> {
        self.chans.get(index)
    }

    fn find(&self, x: u32, y: u32) -> Option<usize> {
        let key = (x.min(y), x.max(y));
        self.chans.iter().position(|c| (c.a, c.b) == key)
    }

    /// Channels with memory that `sandbox` is an end of.
    pub fn with_memory(&self, sandbox: u32) -> u32 {
        self.chans.iter().filter(|c| c.has(sandbox) && c.base.is_some()).count() as u32
    }

    /// `me` opens its channel with `peer` (both valid, distinct sandbox numbers: the caller checks).
    pub fn open(&mut self, me: u32, peer: u32) -> Result<OpenStep, i64> {
        let index = match self.find(me, peer) {
            Some(i) => i,
            None if self.chans.len() < self.capacity => {
                self.chans.push(Channel { a: me.min(peer), b: me.max(peer), base: None, opened: 0, mapped: 0 });
                self.chans.len() - 1
            }
            None => return Err(hc::ENOMEM),
        };
        let c = self.chans[index];
        let bit = c.bit(me);
        if c.opened | bit == 3 && c.base.is_none() && (self.with_memory(c.a) >= self.quota || self.with_memory(c.b) >= self.quota) {
            // Either end at its quota: refused, and this end's request is not kept.
            return Err(hc::EDQUOT);
        }
        let c = &mut self.chans[index];
        c.opened |= bit;
        Ok(match c.base {
            _ if c.opened != 3 => OpenStep::Pending,
            None => OpenStep::Allocate { index },
            Some(base) if c.mapped & bit == 0 => OpenStep::Map { index, base },
            Some(base) => OpenStep::Ready { base },
        })
    }

    /// The memory allocated for `index` (after [`OpenStep::Allocate`]) is mapped into both ends.
    pub fn allocated(&mut self, index: usize, base: u64) {
        let c = &mut self.chans[index];
        c.base = Some(base);
        c.mapped = 3;
    }

    /// `sandbox`'s second stage now maps `index` (after [`OpenStep::Map`]).
    pub fn mapped(&mut self, index: usize, sandbox: u32) {
        let c = &mut self.chans[index];
        c.mapped |= c.bit(sandbox);
    }

    /// `me` closes its channel with `peer`: the peer may no longer notify it; its memory leaves `me`'s second
    /// stage, and is freed if the peer does not map it either. EBADF if `me` does not hold it open.
    pub fn close(&mut self, me: u32, peer: u32) -> Result<Release, i64> {
        let index = self.find(me, peer).ok_or(hc::EBADF)?;
        let c = &self.chans[index];
        if me == peer || c.opened & c.bit(me) == 0 {
            return Err(hc::EBADF);
        }
        Ok(self.release(index, me))
    }

    fn release(&mut self, index: usize, sandbox: u32) -> Release {
        let c = &mut self.chans[index];
        let bit = c.bit(sandbox);
        c.opened &= !bit;
        let unmap = if c.mapped & bit != 0 { c.base } else { None };
        c.mapped &= !bit;
        let free = if c.mapped == 0 { c.base.take() } else { None };
        Release { index, unmap, free }
    }

    /// `sandbox` is being restarted (its second stage is rebuilt without any channel): every channel of it
    /// loses this end; the ones nobody maps any more are freed. Returns one release per channel of it.
    pub fn restart(&mut self, sandbox: u32) -> Vec<Release> {
        let mine: Vec<usize> = (0..self.chans.len()).filter(|&i| self.chans[i].has(sandbox)).collect();
        mine.into_iter().map(|i| self.release(i, sandbox)).collect()
    }

    /// May `from` notify `to`? Only over a channel both ends hold open.
    pub fn may_notify(&self, from: u32, to: u32) -> bool {
        self.find(from, to).is_some_and(|i| from != to && self.chans[i].both_open())
    }

    /// Is there a channel between them at all (opened by either end)?
    pub fn requested(&self, from: u32, to: u32) -> bool {
        self.find(from, to).is_some_and(|i| from != to && self.chans[i].opened != 0)
    }
}

/// Notification coalescing: at most one channel notification pending per destination. `sent` is the
/// monitor's count of notifications delivered to a sandbox, `acknowledged` the count its own interrupt handler
/// keeps in its memory (which no sender can write). A notification is sent only when every earlier one was
/// taken; otherwise it is dropped — the earlier one's handler has not run yet, and the receiver checks its
/// rings after it runs, so it finds the message this one announced. A receiver that never acknowledges only
/// stops its own notifications; one that acknowledges too much only gets more of them.
pub fn notify_now(sent: u64, acknowledged: u64) -> bool {
    sent <= acknowledged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_memory_comes_only_when_both_ends_opened() {
        let mut t = ChannelTable::new(16, 8);
        assert_eq!(t.open(0, 1), Ok(OpenStep::Pending));
        assert_eq!(t.open(0, 1), Ok(OpenStep::Pending), "asking again allocates nothing either");
        assert_eq!(t.with_memory(0), 0);
        assert!(!t.may_notify(0, 1) && !t.may_notify(1, 0) && t.requested(1, 0));
        assert_eq!(t.open(1, 0), Ok(OpenStep::Allocate { index: 0 }));
        t.allocated(0, 0x10_0000);
        assert_eq!(t.open(0, 1), Ok(OpenStep::Ready { base: 0x10_0000 }));
        assert!(t.may_notify(0, 1) && t.may_notify(1, 0) && !t.may_notify(0, 0));
        assert_eq!(t.with_memory(1), 1);
    }

    #[test]
    fn channel_close_revokes_notification_and_the_last_end_frees() {
        let mut t = ChannelTable::new(16, 8);
        t.open(0, 1).unwrap();
        t.open(1, 0).unwrap();
        t.allocated(0, 0x4000);
        assert_eq!(t.close(1, 0), Ok(Release { index: 0, unmap: Some(0x4000), free: None }));
        assert!(!t.may_notify(0, 1), "a closed end cannot be notified");
        assert_eq!(t.close(1, 0), Err(hc::EBADF), "closed twice");
        assert_eq!(t.close(2, 0), Err(hc::EBADF), "never opened");
        // Re-opening maps the memory the other end still holds.
        assert_eq!(t.open(1, 0), Ok(OpenStep::Map { index: 0, base: 0x4000 }));
        t.mapped(0, 1);
        assert_eq!(t.close(0, 1), Ok(Release { index: 0, unmap: Some(0x4000), free: None }));
        assert_eq!(t.close(1, 0), Ok(Release { index: 0, unmap: Some(0x4000), free: Some(0x4000) }));
        assert_eq!(t.with_memory(0), 0);
        // Both again: fresh memory.
        t.open(0, 1).unwrap();
        assert_eq!(t.open(1, 0), Ok(OpenStep::Allocate { index: 0 }));
    }

    #[test]
    fn channel_restart_drops_the_restarted_end_and_frees_what_nobody_maps() {
        let mut t = ChannelTable::new(16, 8);
        for (x, y, base) in [(0, 1, 0x1000), (0, 2, 0x2000)] {
            t.open(x, y).unwrap();
            let OpenStep::Allocate { index } = t.open(y, x).unwrap() else { panic!() };
            t.allocated(index, base);
        }
        t.close(2, 0).unwrap();
        t.open(3, 0).unwrap(); // a request only
        let r = t.restart(0);
        assert_eq!(r, [Release { index: 0, unmap: Some(0x1000), free: None }, Release { index: 1, unmap: Some(0x2000), free: Some(0x2000) }, Release { index: 2, unmap: None, free: None }]);
        assert!(!t.may_notify(1, 0));
        // The restarted sandbox opens again and gets the memory its peer kept.
        assert_eq!(t.open(0, 1), Ok(OpenStep::Map { index: 0, base: 0x1000 }));
    }

    #[test]
    fn channel_quota_bounds_memory_per_sandbox() {
        let mut t = ChannelTable::new(16, 2);
        for peer in 1..=2 {
            t.open(0, peer).unwrap();
            let OpenStep::Allocate { index } = t.open(peer, 0).unwrap() else { panic!() };
            t.allocated(index, 0x1000 * u64::from(peer));
        }
        t.open(3, 0).unwrap();
        assert_eq!(t.open(0, 3), Err(hc::EDQUOT), "sandbox 0 is at its quota");
        assert_eq!(t.with_memory(0), 2);
        // A close frees room.
        t.close(0, 1).unwrap();
        t.close(1, 0).unwrap();
        assert_eq!(t.open(0, 3), Ok(OpenStep::Allocate { index: 2 }));
    }

    #[test]
    fn channel_table_is_bounded() {
        let mut t = ChannelTable::new(2, 8);
        t.open(0, 1).unwrap();
        t.open(0, 2).unwrap();
        assert_eq!(t.open(0, 3), Err(hc::ENOMEM));
        assert_eq!(t.channels().len(), 2);
    }

    #[test]
    fn channel_notifications_coalesce_to_one_pending() {
        assert!(notify_now(0, 0));
        assert!(!notify_now(1, 0), "the first is still pending");
        assert!(notify_now(1, 1));
        assert!(notify_now(1, 5), "a receiver over-acknowledging only gets more");
    }
}
