//! The ring registers sharers can reach, and how the monitor puts the rings right after one was rewritten.
//!
//! Sharers write the two tail pages of the register window directly (the fast path: RDT and TDT, no exit), and
//! 4 KiB pages cannot separate the tails from the rest of their page: each ring's base, length, head and
//! interrupt-delay registers. What the monitor programmed there is recorded ([`RingConfig`]) and compared
//! whenever someone looks (a sharer whose own cheap check fails asks the monitor; the monitor's own ticks);
//! a difference is put back, the rings are resynchronised ([`rx_resync`], [`tx_holes`]), and from then on writes
//! to the tail pages exit until the writer is caught ([`judge_tail_write`]) — see docs/vt.md, "NIC sharers".
#![forbid(unsafe_code)]

use super::{layout, reg};
use alloc::vec::Vec;

/// Registers of the two tail pages that only the monitor programs (base, length and delay of each ring, and
/// the 8254x's descriptor-control and packet-timer registers, which read as zero where not emulated).
pub const RING_CONFIG: [u32; 14] = [
    reg::RDBAL,
    reg::RDBAH,
    reg::RDLEN,
    reg::RDTR,
    reg::RXDCTL,
    reg::RADV,
    reg::RSRPD,
    reg::TDBAL,
    reg::TDBAH,
    reg::TDLEN,
    reg::TIDV,
    reg::TXDCTL,
    reg::TADV,
    reg::TSPMT,
];

/// The values of [`RING_CONFIG`], as the monitor left them after programming (or as read now).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    values: [u32; RING_CONFIG.len()],
}

impl RingConfig {
    pub fn read(read: impl Fn(u32) -> u32) -> RingConfig {
        RingConfig { values: RING_CONFIG.map(read) }
    }

    /// The registers whose value in `now` is not the recorded one: (offset, found, recorded).
    pub fn differences(&self, now: &RingConfig) -> Vec<(u32, u32, u32)> {
        RING_CONFIG
            .iter()
            .zip(self.values.iter().zip(now.values.iter()))
            .filter(|(_, (want, got))| want != got)
            .map(|(&offset, (&want, &got))| (offset, got, want))
            .collect()
    }
}

/// What any sharer can check itself, without the monitor's record: the bases and lengths the ring layout gives
/// for the DMA region at `dma_base`.
pub fn layout_ring_registers(dma_base: u64) -> [(u32, u32); 6] {
    let rx = dma_base + layout::RX_RING;
    let tx = dma_base + layout::TX_RING;
    [
        (reg::RDBAL, rx as u32),
        (reg::RDBAH, (rx >> 32) as u32),
        (reg::RDLEN, layout::RX_DESCS * 16),
        (reg::TDBAL, tx as u32),
        (reg::TDBAH, (tx >> 32) as u32),
        (reg::TDLEN, layout::TX_DESCS * 16),
    ]
}

/// The ring size a head or tail register indexes (None: not a cursor register).
pub fn cursor_ring(offset: u32) -> Option<u32> {
    match offset {
        reg::RDH | reg::RDT => Some(layout::RX_DESCS),
        reg::TDH | reg::TDT => Some(layout::TX_DESCS),
        _ => None,
    }
}

/// The first head or tail register that holds an index outside its ring: (offset, value).
pub fn cursor_out_of_range(read: impl Fn(u32) -> u32) -> Option<(u32, u32)> {
    [reg::RDH, reg::RDT, reg::TDH, reg::TDT].into_iter().map(|o| (o, read(o))).find(|&(o, v)| cursor_ring(o).is_some_and(|n| v >= n))
}

/// A write into the tail pages that exited (the pages are guarded after a rewrite was found).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TailWrite {
    /// A tail moved within its ring, as an honest driver does: the monitor performs it.
    Pass,
    /// Anything else — a base, length, head or delay register, a tail outside its ring, a partial write: the
    /// writer is the one who rewrites the rings.
    Tamper,
}

/// Judge a trapped write of `len` bytes of `value` at `offset` in the register window.
pub fn judge_tail_write(offset: u32, value: u32, len: u32) -> TailWrite {
    match (offset, len) {
        (reg::RDT, 4) if value < layout::RX_DESCS => TailWrite::Pass,
        (reg::TDT, 4) if value < layout::TX_DESCS => TailWrite::Pass,
        _ => TailWrite::Tamper,
    }
}

/// How to put the receive ring right after the NIC wrote through a rewritten base:
/// the frames it wrote went elsewhere, so slots it passed have no DD (a hole every sharer's cursor would stop
/// at for good), and slots it does own may carry a stale DD from the foreign writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RxResync {
    /// A new head, where the one found was outside the ring: the first slot after the tail without DD.
    pub head: Option<u32>,
    /// Slots the NIC passed without writing (between the tail and the head, no DD): marked skipped, so the
    /// sharers' cursors pass them ([`super::RxDrop::Skipped`]).
    pub holes: Vec<u32>,
    /// Slots the NIC owns (from the head to the tail) that carry DD: cleared, so no cursor reads a stale frame.
    pub stale: Vec<u32>,
    /// Frames to move back, (from, to): where the base had been moved `shift` descriptors into the ring, the
    /// frame meant for hole j lies in slot j + shift (its descriptor, its buffer). Moved, it is not lost.
    pub moves: Vec<(u32, u32)>,
}

/// The receive resync for `tail` (RDT) and `head` (RDH) on a ring of `n` (`dd(i)`: slot i's DD bit). The
/// software holds (tail, head) — written by the NIC, read or not yet — and the NIC owns [head, tail).
/// `shift`: how many descriptors into the ring the base had been moved, if it had (frames to move back).
pub fn rx_resync(tail: u32, head: u32, n: u32, shift: Option<u32>, dd: impl Fn(u32) -> bool) -> RxResync {
    let tail = tail % n;
    let mut r = RxResync::default();
    let head = if head < n {
        head
    } else {
        let first_free = (1..n).map(|k| (tail + k) % n).find(|&i| !dd(i)).unwrap_or(tail);
        r.head = Some(first_free);
        first_free
    };
    let mut i = (tail + 1) % n;
    while i != head && i != tail {
        if !dd(i) {
            r.holes.push(i);
        }
        i = (i + 1) % n;
    }
    while i != tail {
        if dd(i) {
            r.stale.push(i);
        }
        i = (i + 1) % n;
    }
    if let Some(shift) = shift.filter(|&s| s > 0 && s < n) {
        for &j in &r.holes {
            // Only within the ring (past its end the shifted descriptors were not slots), and only from a slot
            // the NIC owns (a software slot holds a frame of its own).
            if let Some(k) = j.checked_add(shift).filter(|&k| k < n && r.stale.contains(&k)) {
                r.moves.push((k, j));
            }
        }
        let moved: Vec<u32> = r.moves.iter().map(|&(_, to)| to).collect();
        r.holes.retain(|h| !moved.contains(h));
    }
    r
}

/// How many descriptors into its ring a base `found` lies past the `recorded` one (None: not a whole
/// number of descriptors forward).
pub fn base_shift(found: u32, recorded: u32) -> Option<u32> {
    let d = found.checked_sub(recorded)?;
    (d % 16 == 0).then_some(d / 16)
}

/// Transmit slots the NIC will not complete: outside its pending range [head, tail) yet without DD (it
/// passed them working through a rewritten base). Given DD, they are free again; their frames are lost.
pub fn tx_holes(head: u32, tail: u32, n: u32, dd: impl Fn(u32) -> bool) -> Vec<u32> {
    let (head, tail) = (head % n, tail % n);
    let pending = super::ring_distance(head, tail, n);
    (0..n).filter(|&i| super::ring_distance(head, i, n) >= pending && !dd(i)).collect()
}

/// A mark only the monitor writes into a receive descriptor the NIC skipped (in `special`, with DD and EOP
/// set and length 0: no NIC writes a zero-length frame).
pub const SKIPPED_MARK: u16 = 0x5351;

/// A sharer's watch over the rings it shares: when to look (cheap reads, no exit) and when what it saw is
/// worth an audit by the monitor (one exit) — registers not as the layout gives them at once; a hole at its
/// receive cursor only when seen at two looks in a row (a device may still be writing that descriptor back);
/// and at most one report per backoff, so a condition the monitor does not confirm costs little.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingWatch {
    next_look: u64,
    hole: Option<u32>,
    next_report: u64,
}

impl RingWatch {
    pub const fn new() -> RingWatch {
        RingWatch { next_look: 0, hole: None, next_report: 0 }
    }

    /// Whether to look now (then not again for `period`).
    pub fn due(&mut self, now: u64, period: u64) -> bool {
        if now < self.next_look {
            return false;
        }
        self.next_look = now.saturating_add(period);
        true
    }

    /// What a look found: `wrong` ring registers; `hole`: the cursor, if it stands at a hole. Whether to
    /// report it now.
    pub fn judge(&mut self, now: u64, wrong: bool, hole: Option<u32>, backoff: u64) -> bool {
        let hole_again = hole.is_some() && hole == self.hole;
        self.hole = hole;
        if (wrong || hole_again) && now >= self.next_report {
            self.next_report = now.saturating_add(backoff);
            self.hole = None;
            return true;
        }
        false
    }
}
