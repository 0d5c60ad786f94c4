//! The sharers' lock over the shared rings (transmission and receive-tail moves): Lamport's bakery over one
//! claim per sharer, each in memory only its owner writes. In a sandbox each claim is a page the monitor maps
//! writable into its owner and read-only into the other sharers, so whoever keeps the lock is known for
//! certain — no sharer can take, break or fake another's claim — and a waiter can name the holder to the
//! monitor. A claim a hostile owner never gives back stops only that owner: the monitor faults it.
//!
//! Tickets saturate: a claim holding `u64::MAX` makes the next tickets tie at `u64::MAX`, which the bakery
//! breaks by sharer index as it breaks any tie, so a huge ticket cannot wrap anyone's ahead of the others.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// One sharer's claim: choosing its ticket, and the ticket (0: not waiting, not holding).
#[repr(C)]
#[derive(Default, Debug)]
pub struct Claim {
    pub choosing: AtomicU32,
    pub _pad: AtomicU32,
    pub number: AtomicU64,
}

/// What a claim says right now: (choosing, ticket).
pub fn snapshot(c: &Claim) -> (u32, u64) {
    (c.choosing.load(Ordering::SeqCst), c.number.load(Ordering::SeqCst))
}

/// The claims of every sharer of one NIC.
pub trait Claims {
    fn count(&self) -> usize;
    fn claim(&self, j: usize) -> &Claim;
}

impl<const N: usize> Claims for [Claim; N] {
    fn count(&self) -> usize {
        N
    }
    fn claim(&self, j: usize) -> &Claim {
        &self[j]
    }
}

/// Take the lock as sharer `me` (< `claims.count()`). `wait(j)` runs on every turn spent waiting for sharer
/// `j` (to pause, measure, and report a holder that keeps the lock too long).
pub fn acquire(claims: &impl Claims, me: usize, mut wait: impl FnMut(usize)) {
    let n = claims.count();
    let mine = claims.claim(me);
    mine.choosing.store(1, Ordering::SeqCst);
    let highest = (0..n).map(|j| claims.claim(j).number.load(Ordering::SeqCst)).max().unwrap_or(0);
    let ticket = highest.saturating_add(1);
    mine.number.store(ticket, Ordering::SeqCst);
    mine.choosing.store(0, Ordering::SeqCst);
    for j in (0..n).filter(|&j| j != me) {
        let other = claims.claim(j);
        while other.choosing.load(Ordering::SeqCst) != 0 {
            wait(j);
        }
        loop {
            let theirs = other.number.load(Ordering::SeqCst);
            // Ahead of us: a lower ticket, or the same one and a lower index.
            if theirs == 0 || (theirs, j) > (ticket, me) {
                break;
            }
            wait(j);
        }
    }
}

/// Give the lock back.
pub fn release(claims: &impl Claims, me: usize) {
    claims.claim(me).number.store(0, Ordering::SeqCst);
}

/// The monitor's judgement of a claim a waiter reports as kept too long. The holder is faulted only when the
/// monitor itself has seen the same claim for at least `bound` cycles while the holder's sandbox was running
/// (its heartbeat moved), so a waiter cannot get an honest sharer faulted by reporting it; a holder whose core
/// showed no sign of life (an emulator that stalled it, or a kernel hung with the lock) is given
/// [`SILENT_BOUNDS`] bounds before it is faulted all the same, so a silent holder cannot stall the others for
/// good where no watchdog is armed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StuckJudge {
    seen: Option<Sighting>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sighting {
    claim: (u32, u64),
    since: u64,
    heartbeat: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stuck {
    /// Nothing held (or the claim moved): the waiter goes on waiting.
    Wait,
    /// The holder kept the same claim, running, for `held` cycles: fault it.
    Faulted { held: u64 },
}

/// How many bounds a holder whose heartbeat did not move may keep the lock.
pub const SILENT_BOUNDS: u64 = 5;

impl StuckJudge {
    pub const fn new() -> StuckJudge {
        StuckJudge { seen: None }
    }

    pub fn observe(&mut self, claim: (u32, u64), heartbeat: u64, now: u64, bound: u64) -> Stuck {
        if claim == (0, 0) {
            self.seen = None;
            return Stuck::Wait;
        }
        match self.seen {
            Some(s) if s.claim == claim => {
                let held = now.saturating_sub(s.since);
                if (held >= bound && heartbeat != s.heartbeat) || held >= bound.saturating_mul(SILENT_BOUNDS) {
                    self.seen = None;
                    Stuck::Faulted { held }
                } else {
                    Stuck::Wait
                }
            }
            _ => {
                self.seen = Some(Sighting { claim, since: now, heartbeat });
                Stuck::Wait
            }
        }
    }

    /// The holder left (faulted, restarted): forget it.
    pub fn reset(&mut self) {
        self.seen = None;
    }
}
