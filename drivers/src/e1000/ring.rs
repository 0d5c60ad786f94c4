//! The pure parts: legacy RX/TX descriptors and their checks, ring arithmetic with the reclaim rule for a ring
//! several sharers read, and the DMA region's layout and control block. Host-tested.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Legacy receive descriptor (16 bytes), written by the NIC.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxDesc {
    pub addr: u64,
    pub length: u16,
    pub checksum: u16,
    pub status: u8,
    pub errors: u8,
    pub special: u16,
}

/// Legacy transmit descriptor (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxDesc {
    pub addr: u64,
    pub length: u16,
    pub cso: u8,
    pub cmd: u8,
    pub status: u8,
    pub css: u8,
    pub special: u16,
}

pub const RX_DD: u8 = 1 << 0;
pub const RX_EOP: u8 = 1 << 1;
pub const TX_CMD_EOP: u8 = 1 << 0;
pub const TX_CMD_IFCS: u8 = 1 << 1;
pub const TX_CMD_RS: u8 = 1 << 3;
pub const TX_DD: u8 = 1 << 0;

/// Receive and transmit buffer size (RCTL.BSIZE = 2048).
pub const BUF_SIZE: usize = 2048;
/// Largest frame the driver sends or accepts (Ethernet header + 1500 bytes; no VLAN tag, no CRC).
pub const MAX_FRAME: usize = 1514;
/// Smallest frame: an Ethernet header.
pub const MIN_FRAME: usize = 14;

/// What one receive descriptor holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxSlot {
    /// Not written by the NIC yet (DD clear): stop here.
    Empty,
    /// A whole frame of this many bytes in the slot's buffer.
    Frame(usize),
    /// Written, but not a frame the driver takes; the slot is consumed and counted.
    Bad(RxDrop),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxDrop {
    /// The NIC flagged an error (CRC, symbol, sequence, RX data errors).
    DeviceError,
    /// Part of a frame spread over several descriptors (cannot happen with LPE off; refused, not trusted).
    Fragment,
    /// Length 0, shorter than an Ethernet header, or longer than the buffer / a maximal frame.
    BadLength,
    /// (Conservative driver) the descriptor's buffer address is not the one this slot was given: someone —
    /// a broken sharer, or this driver before it was switched — rewrote it; refused and repaired.
    ForeignBuffer,
    /// The NIC passed this slot without writing it (it wrote through a rewritten ring base); the monitor
    /// marked it ([`SKIPPED_MARK`]) when it put the ring right, so the cursors go on.
    Skipped,
}

/// Which driver implementation runs (the paper's driver switch, §3.7): the fast one trusts the ring's shared
/// state within the bounds every slot is checked against; the conservative one, switched to after the fast one
/// faulted, also re-checks every descriptor's buffer address and repairs what it finds rewritten, and reads at
/// most [`CONSERVATIVE_BATCH`] descriptors per pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Fast,
    Conservative,
}

pub const CONSERVATIVE_BATCH: u32 = 16;

/// Judge a receive descriptor as read from DMA memory. Never trusts the device: a length beyond the buffer or
/// a missing end-of-packet bit is a dropped slot, not a read past the buffer.
pub fn classify_rx(d: &RxDesc) -> RxSlot {
    if d.status & RX_DD == 0 {
        return RxSlot::Empty;
    }
    if d.special == super::SKIPPED_MARK && d.length == 0 {
        return RxSlot::Bad(RxDrop::Skipped);
    }
    if d.status & RX_EOP == 0 {
        return RxSlot::Bad(RxDrop::Fragment);
    }
    // Errors byte: CE, SE, SEQ, CXE, RXE (bits 0, 1, 2, 4, 7); IPE/TCPE (5, 6) only with checksum offload on.
    if d.errors & 0x97 != 0 {
        return RxSlot::Bad(RxDrop::DeviceError);
    }
    let len = usize::from(d.length);
    if !(MIN_FRAME..=MAX_FRAME.min(BUF_SIZE)).contains(&len) {
        return RxSlot::Bad(RxDrop::BadLength);
    }
    RxSlot::Frame(len)
}

/// Descriptors from `from` up to (not including) `to` on a ring of `n`.
pub const fn ring_distance(from: u32, to: u32, n: u32) -> u32 {
    (to + n - from) % n
}

/// The receive tail after the sharers' progress. The NIC owns descriptors [RDH, RDT); the software holds
/// [RDT, RDH), of which [RDT, m) has been read by every live sharer, m being the cursor furthest behind
/// (measured from the current tail). Everything before m goes back except one descriptor: RDT == RDH would
/// mean an empty ring to the NIC, so the new tail is m − 1. Returns `None` when nothing can be given back.
/// `cursors` holds the live sharers' cursors; with none, nothing moves.
pub fn reclaim_tail(tail: u32, cursors: impl Iterator<Item = u32>, n: u32) -> Option<u32> {
    let behind = cursors.map(|c| ring_distance(tail, c % n, n)).min()?;
    // The slowest sharer stands at tail + behind; the new tail is one before it.
    if behind <= 1 {
        return None;
    }
    Some((tail + behind - 1) % n)
}

/// Where a sharer that comes back (its sandbox recovered) resumes reading: at the live sharer furthest ahead
/// (measured from the tail) — everything before it is old, and some of it may already be back with the NIC —
/// or, with no live sharer, at its own old cursor (nothing moved the ring since it stopped).
pub fn rejoin_cursor(tail: u32, live: impl Iterator<Item = u32>, own: u32, n: u32) -> u32 {
    live.max_by_key(|&c| ring_distance(tail, c % n, n)).map_or(own % n, |c| c % n)
}

/// Layout of the DMA region the NIC's rings and buffers live in (the same in every sharer: the region's
/// guest-physical address is its host-physical one, so these offsets plus the base are the bus addresses the
/// descriptors carry).
pub mod layout {
    pub const CONTROL: u64 = 0;
    pub const RX_RING: u64 = 0x1000;
    pub const TX_RING: u64 = 0x2000;
    pub const RX_DESCS: u32 = 128;
    pub const TX_DESCS: u32 = 64;
    pub const RX_BUFS: u64 = 0x3000;
    pub const TX_BUFS: u64 = RX_BUFS + RX_DESCS as u64 * super::BUF_SIZE as u64;
    /// Bytes the layout uses; the region is this, rounded up to 1 MiB.
    pub const END: u64 = TX_BUFS + TX_DESCS as u64 * super::BUF_SIZE as u64;
    pub const REGION: u64 = 1 << 20;
    const _: () = assert!(END <= REGION);
    const _: () = assert!(RX_DESCS as u64 * 16 <= TX_RING - RX_RING && TX_DESCS as u64 * 16 <= RX_BUFS - TX_RING);
}

/// Most sharers of one NIC (receive-address registers 1–15 hold their MACs; entry 0 stays the EEPROM's).
pub const MAX_SHARERS: usize = 8;

/// Magic of an initialised control block ("QNIC").
pub const CONTROL_MAGIC: u32 = 0x4349_4E51;
pub const STATE_UNSET: u32 = 0;
pub const STATE_INITIALISING: u32 = 1;
pub const STATE_READY: u32 = 2;
pub const STATE_FAILED: u32 = 3;

/// The control block at the start of the DMA region, in memory every sharer sees. Written by whoever sets the
/// NIC up (the monitor fills `sharers`, `macs`, `ips` before any sandbox starts; the SMP kernel fills them for
/// itself); the rest is the sharers' synchronisation.
#[repr(C)]
#[derive(Default)]
pub struct Control {
    pub magic: AtomicU32,
    /// STATE_*: whoever programs the NIC (the SMP kernel; in the VT build the monitor, which tells the sharers
    /// through the info page instead) sets READY.
    pub state: AtomicU32,
    pub sharers: AtomicU32,
    /// Bit i: sharer i takes part in receive reclaim (a stopped sharer's bit is cleared so it cannot stall the
    /// ring).
    pub live: AtomicU32,
    /// The receive tail as last written to RDT.
    pub rx_tail: AtomicU32,
    /// Next transmit descriptor to fill.
    pub tx_next: AtomicU32,
    /// Next receive descriptor each sharer will read.
    pub rx_cursor: [AtomicU32; MAX_SHARERS],
    /// Sharer i's MAC (low 48 bits, byte 0 first) and IPv4 address (network order as a u32 of the 4 bytes).
    pub macs: [AtomicU64; MAX_SHARERS],
    pub ips: [AtomicU32; MAX_SHARERS],
    /// Frames the transmit ring had no room for.
    pub tx_full: AtomicU64,
    /// Descriptors handed back to the NIC.
    pub rx_reclaimed: AtomicU64,
    /// The lock's claims where no monitor gives each sharer a page of its own (the SMP build: one sharer).
    pub claims: [super::lock::Claim; MAX_SHARERS],
}

const _: () = assert!(core::mem::size_of::<Control>() <= 0x1000);

impl Control {
    /// Sharer `index` died (its sandbox faulted): it leaves receive reclaim, so it cannot stall the ring for
    /// the others (its lock claim is released by whoever can write it: the monitor).
    pub fn leave(&self, index: usize) {
        if index < MAX_SHARERS {
            self.live.fetch_and(!(1u32 << index), Ordering::AcqRel);
        }
    }

    /// The live sharers' cursors.
    pub fn live_cursors(&self) -> impl Iterator<Item = u32> + '_ {
        let live = self.live.load(Ordering::Acquire);
        (0..MAX_SHARERS).filter(move |i| live & (1 << i) != 0).map(|i| self.rx_cursor[i].load(Ordering::Acquire))
    }
}
