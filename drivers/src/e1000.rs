//! Intel 8254x ("e1000", the 82540EM QEMU and Bochs emulate): registers, legacy RX/TX descriptors, and a ring
//! layout that several kernels can share (the VT build's shared NIC, paper §3.6).
//!
//! Written here: no maintained no_std e1000 crate exists. The pure parts — descriptor checks, ring arithmetic,
//! the reclaim rule for a receive ring read by several sandboxes, the DMA region layout — are host-tested; the
//! register window ([`Regs`]) and the descriptor memory ([`DescMem`]) are the only code that touches the device.
//!
//! Sharing model: one receive ring, one transmit ring and their buffers live in a DMA region mapped into every
//! sharer. Each sharer keeps its own receive cursor in the region's control block and reads every frame the NIC
//! writes (early demultiplexing decides which are its own); a descriptor goes back to the NIC only when every
//! live sharer's cursor has passed it ([`reclaim_tail`]). Transmission and the tail moves are serialised by a
//! spinlock in the control block. With one sharer this is an ordinary driver (the SMP build).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// PCI ids of the emulated 82540EM.
pub const VENDOR_INTEL: u16 = 0x8086;
pub const DEVICE_82540EM: u16 = 0x100E;
/// Other 8254x parts this driver's register subset fits (82545EM copper/fiber, 82543GC, 82541PI).
pub const DEVICES: [u16; 5] = [0x100E, 0x100F, 0x1011, 0x1004, 0x107C];

/// Register offsets in BAR 0 (the 82540EM's 128 KiB memory window).
pub mod reg {
    pub const CTRL: u32 = 0x0000;
    /// EEPROM read: START bit 0, DONE bit 4, word address bits 8–15, data bits 16–31 (82540EM).
    pub const EERD: u32 = 0x0014;
    pub const STATUS: u32 = 0x0008;
    pub const ICR: u32 = 0x00C0;
    pub const ITR: u32 = 0x00C4;
    pub const IMS: u32 = 0x00D0;
    pub const IMC: u32 = 0x00D8;
    pub const RCTL: u32 = 0x0100;
    pub const TCTL: u32 = 0x0400;
    pub const TIPG: u32 = 0x0410;
    pub const RDBAL: u32 = 0x2800;
    pub const RDBAH: u32 = 0x2804;
    pub const RDLEN: u32 = 0x2808;
    pub const RDH: u32 = 0x2810;
    pub const RDT: u32 = 0x2818;
    pub const RDTR: u32 = 0x2820;
    pub const TDBAL: u32 = 0x3800;
    pub const TDBAH: u32 = 0x3804;
    pub const TDLEN: u32 = 0x3808;
    pub const TDH: u32 = 0x3810;
    pub const TDT: u32 = 0x3818;
    pub const MTA: u32 = 0x5200;
    pub const RAL0: u32 = 0x5400;
    pub const RAH0: u32 = 0x5404;
    /// Size of the register window the driver may touch (BAR 0 of the 82540EM).
    pub const WINDOW: u64 = 128 << 10;
}

pub const CTRL_SLU: u32 = 1 << 6;
pub const CTRL_RST: u32 = 1 << 26;
pub const STATUS_LU: u32 = 1 << 1;

pub const RCTL_EN: u32 = 1 << 1;
pub const RCTL_BAM: u32 = 1 << 15;
/// Strip the Ethernet CRC, so descriptor lengths are frame lengths.
pub const RCTL_SECRC: u32 = 1 << 26;
// BSIZE 00 with BSEX 0 = 2048-byte buffers; LPE 0 = frames above 1522 bytes are dropped by the NIC.

pub const TCTL_EN: u32 = 1 << 1;
pub const TCTL_PSP: u32 = 1 << 3;
pub const TCTL_CT_SHIFT: u32 = 4;
pub const TCTL_COLD_SHIFT: u32 = 12;

/// Interrupt causes (ICR/IMS bits).
pub const INT_TXDW: u32 = 1 << 0;
pub const INT_LSC: u32 = 1 << 2;
pub const INT_RXDMT0: u32 = 1 << 4;
pub const INT_RXO: u32 = 1 << 6;
pub const INT_RXT0: u32 = 1 << 7;
/// What the driver asks for: receive timer, overrun, descriptors running low, link changes.
pub const INT_WANTED: u32 = INT_RXT0 | INT_RXO | INT_RXDMT0 | INT_LSC;

pub const RAH_AV: u32 = 1 << 31;
/// Receive-address registers: entry 0 holds the EEPROM's MAC after reset; the driver uses up to 16.
pub const RECEIVE_ADDRESSES: usize = 16;

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

/// Layout of the DMA region the NIC's rings and buffers live in (the same in every sharer: the region is
/// identity-mapped, so these offsets plus the base are the bus addresses the descriptors carry).
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
    /// STATE_*: the first sharer resets and programs the NIC, the others wait for READY.
    pub state: AtomicU32,
    /// Serialises transmission and receive-tail moves (a test-and-set lock).
    pub lock: AtomicU32,
    pub sharers: AtomicU32,
    /// Bit i: sharer i takes part in receive reclaim (a stopped sharer's bit is cleared so it cannot stall the
    /// ring).
    pub live: AtomicU32,
    /// The receive tail as last written to RDT.
    pub rx_tail: AtomicU32,
    /// Next transmit descriptor to fill.
    pub tx_next: AtomicU32,
    pub _pad: AtomicU32,
    /// Next receive descriptor each sharer will read.
    pub rx_cursor: [AtomicU32; MAX_SHARERS],
    /// Sharer i's MAC (low 48 bits, byte 0 first) and IPv4 address (network order as a u32 of the 4 bytes).
    pub macs: [AtomicU64; MAX_SHARERS],
    pub ips: [AtomicU32; MAX_SHARERS],
    /// Frames the transmit ring had no room for.
    pub tx_full: AtomicU64,
    /// Descriptors handed back to the NIC.
    pub rx_reclaimed: AtomicU64,
}

const _: () = assert!(core::mem::size_of::<Control>() <= 0x1000);

impl Control {
    /// Take the lock as sharer `owner` (the lock word holds owner + 1, so the monitor can break it if the
    /// owner's sandbox dies holding it).
    pub fn lock(&self, owner: usize) {
        let me = owner as u32 + 1;
        while self.lock.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
    }

    pub fn unlock(&self) {
        self.lock.store(0, Ordering::Release);
    }

    /// Sharer `index` died (its sandbox faulted): it leaves receive reclaim, so it cannot stall the ring for
    /// the others, and a lock it held is released. Returns whether it held the lock.
    pub fn leave(&self, index: usize) -> bool {
        if index >= MAX_SHARERS {
            return false;
        }
        self.live.fetch_and(!(1u32 << index), Ordering::AcqRel);
        self.lock.compare_exchange(index as u32 + 1, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// The live sharers' cursors.
    pub fn live_cursors(&self) -> impl Iterator<Item = u32> + '_ {
        let live = self.live.load(Ordering::Acquire);
        (0..MAX_SHARERS).filter(move |i| live & (1 << i) != 0).map(|i| self.rx_cursor[i].load(Ordering::Acquire))
    }
}

pub fn mac_to_u64(mac: [u8; 6]) -> u64 {
    let mut b = [0u8; 8];
    b[..6].copy_from_slice(&mac);
    u64::from_le_bytes(b)
}

pub fn mac_from_u64(v: u64) -> [u8; 6] {
    let b = v.to_le_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

const EERD_START: u32 = 1;
const EERD_DONE: u32 = 1 << 4;

/// The station address from EEPROM words 0–2 (little-endian byte pairs).
pub fn mac_from_eeprom(words: [u16; 3]) -> [u8; 6] {
    let [a, b] = words[0].to_le_bytes();
    let [c, d] = words[1].to_le_bytes();
    let [e, f] = words[2].to_le_bytes();
    [a, b, c, d, e, f]
}

/// RAL/RAH values for a MAC (address valid).
pub fn receive_address(mac: [u8; 6]) -> (u32, u32) {
    (
        u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
        u32::from(mac[4]) | u32::from(mac[5]) << 8 | RAH_AV,
    )
}

/// TCTL for full duplex: enable, pad short packets, collision threshold 15, collision distance 64.
pub const fn tctl_value() -> u32 {
    TCTL_EN | TCTL_PSP | (0x0F << TCTL_CT_SHIFT) | (0x40 << TCTL_COLD_SHIFT)
}

/// The register window of one NIC.
pub struct Regs {
    base: u64,
}

impl Regs {
    /// # Safety
    /// `base` is the identity-mapped, uncached address of an 8254x BAR 0 (128 KiB) the caller may program.
    pub const unsafe fn new(base: u64) -> Regs {
        Regs { base }
    }

    pub fn read(&self, offset: u32) -> u32 {
        debug_assert!(u64::from(offset) < reg::WINDOW && offset % 4 == 0);
        // SAFETY: inside the register window the constructor's contract names; aligned.
        unsafe { questv_arch::mmio::reg32(self.base + u64::from(offset % reg::WINDOW as u32 & !3)).read() }
    }

    pub fn write(&self, offset: u32, value: u32) {
        debug_assert!(u64::from(offset) < reg::WINDOW && offset % 4 == 0);
        // SAFETY: as in read().
        unsafe { questv_arch::mmio::reg32(self.base + u64::from(offset % reg::WINDOW as u32 & !3)).write(value) }
    }

    /// Full reset, then the MAC in RA[0] (what the EEPROM loaded) — read before anything else is programmed.
    pub fn reset(&self, spin: impl Fn()) -> Result<[u8; 6], &'static str> {
        self.write(reg::IMC, u32::MAX);
        self.write(reg::CTRL, self.read(reg::CTRL) | CTRL_RST);
        let mut tries = 0;
        while self.read(reg::CTRL) & CTRL_RST != 0 {
            tries += 1;
            if tries > 100_000 {
                return Err("the NIC did not come out of reset");
            }
            spin();
        }
        self.write(reg::IMC, u32::MAX);
        let _ = self.read(reg::ICR);
        // The EEPROM's words 0–2 are the station address. Real 82540EMs and QEMU also copy it into RA[0] at
        // reset, Bochs does not: the EEPROM is the source, RA[0] the fallback if the EEPROM does not answer.
        let mut words = [0u16; 3];
        let mut eeprom_ok = true;
        for (i, w) in words.iter_mut().enumerate() {
            match self.eeprom_word(i as u32, &spin) {
                Some(v) => *w = v,
                None => eeprom_ok = false,
            }
        }
        let mac = mac_from_eeprom(words);
        if eeprom_ok && mac != [0; 6] && mac[0] & 1 == 0 {
            return Ok(mac);
        }
        let (lo, hi) = (self.read(reg::RAL0), self.read(reg::RAH0));
        let b = lo.to_le_bytes();
        Ok([b[0], b[1], b[2], b[3], hi as u8, (hi >> 8) as u8])
    }

    /// One EEPROM word through EERD (None if the read never completes).
    fn eeprom_word(&self, address: u32, spin: &impl Fn()) -> Option<u16> {
        self.write(reg::EERD, (address << 8) | EERD_START);
        for _ in 0..10_000 {
            let v = self.read(reg::EERD);
            if v & EERD_DONE != 0 {
                return Some((v >> 16) as u16);
            }
            spin();
        }
        None
    }

    pub fn link_up(&self) -> bool {
        self.read(reg::STATUS) & STATUS_LU != 0
    }
}

/// Descriptor rings and buffers in the DMA region, read and written with volatile accesses (the NIC and the
/// other sharers change them behind the compiler's back).
pub struct DescMem {
    base: u64,
}

impl DescMem {
    /// # Safety
    /// `base` is the identity-mapped start of a DMA region of [`layout::REGION`] bytes laid out as in
    /// [`layout`], mapped read-write for as long as the value is used.
    pub const unsafe fn new(base: u64) -> DescMem {
        DescMem { base }
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn control(&self) -> &Control {
        // SAFETY: the control block lies at the region's start (constructor contract), is made only of atomics
        // (any bit pattern is valid), and is at most a page.
        unsafe { &*((self.base + layout::CONTROL) as *const Control) }
    }

    pub fn rx_buffer_addr(&self, i: u32) -> u64 {
        self.base + layout::RX_BUFS + u64::from(i % layout::RX_DESCS) * BUF_SIZE as u64
    }

    pub fn tx_buffer_addr(&self, i: u32) -> u64 {
        self.base + layout::TX_BUFS + u64::from(i % layout::TX_DESCS) * BUF_SIZE as u64
    }

    fn rx_desc_ptr(&self, i: u32) -> *mut RxDesc {
        (self.base + layout::RX_RING + u64::from(i % layout::RX_DESCS) * 16) as *mut RxDesc
    }

    fn tx_desc_ptr(&self, i: u32) -> *mut TxDesc {
        (self.base + layout::TX_RING + u64::from(i % layout::TX_DESCS) * 16) as *mut TxDesc
    }

    pub fn rx_desc(&self, i: u32) -> RxDesc {
        // SAFETY: index reduced modulo the ring; the ring is inside the region (constructor contract).
        unsafe { core::ptr::read_volatile(self.rx_desc_ptr(i)) }
    }

    pub fn set_rx_desc(&self, i: u32, d: RxDesc) {
        // SAFETY: as in rx_desc().
        unsafe { core::ptr::write_volatile(self.rx_desc_ptr(i), d) }
    }

    pub fn tx_desc(&self, i: u32) -> TxDesc {
        // SAFETY: as in rx_desc().
        unsafe { core::ptr::read_volatile(self.tx_desc_ptr(i)) }
    }

    pub fn set_tx_desc(&self, i: u32, d: TxDesc) {
        // SAFETY: as in rx_desc().
        unsafe { core::ptr::write_volatile(self.tx_desc_ptr(i), d) }
    }

    /// Copy `len` (≤ BUF_SIZE) bytes out of receive buffer `i`.
    pub fn read_rx_buffer(&self, i: u32, out: &mut [u8]) {
        let len = out.len().min(BUF_SIZE);
        // SAFETY: the buffer is BUF_SIZE bytes inside the region; len is clamped to it.
        unsafe { core::ptr::copy_nonoverlapping(self.rx_buffer_addr(i) as *const u8, out.as_mut_ptr(), len) }
    }

    /// Copy a frame (≤ BUF_SIZE) into transmit buffer `i`.
    pub fn write_tx_buffer(&self, i: u32, frame: &[u8]) {
        let len = frame.len().min(BUF_SIZE);
        // SAFETY: as in read_rx_buffer().
        unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), self.tx_buffer_addr(i) as *mut u8, len) }
    }
}

/// Why a frame was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxError {
    TooLong,
    TooShort,
    RingFull,
}

/// One sharer's view of a shared NIC: the register window, the DMA region and its own index.
pub struct SharedNic {
    pub regs: Regs,
    pub mem: DescMem,
    pub index: usize,
    pub variant: Variant,
}

impl SharedNic {
    /// Set the NIC up (the first sharer, or the only one): reset, receive addresses of every sharer, rings,
    /// receive/transmit on, interrupts unmasked. The control block's `sharers`/`macs` must be filled.
    pub fn initialise(&self, spin: impl Fn()) -> Result<[u8; 6], &'static str> {
        let c = self.mem.control();
        c.state.store(STATE_INITIALISING, Ordering::Release);
        let eeprom_mac = match self.regs.reset(&spin) {
            Ok(m) => m,
            Err(e) => {
                c.state.store(STATE_FAILED, Ordering::Release);
                return Err(e);
            }
        };
        let r = &self.regs;
        r.write(reg::CTRL, r.read(reg::CTRL) | CTRL_SLU);
        for i in 0..128 {
            r.write(reg::MTA + 4 * i, 0);
        }
        let sharers = (c.sharers.load(Ordering::Acquire) as usize).min(MAX_SHARERS);
        for slot in 0..RECEIVE_ADDRESSES {
            let (lo, hi) = match slot.checked_sub(1) {
                None => receive_address(eeprom_mac),
                Some(s) if s < sharers => {
                    // 0: this sharer uses the NIC's own address (the SMP build).
                    let m = c.macs[s].load(Ordering::Acquire);
                    if m == 0 {
                        c.macs[s].store(mac_to_u64(eeprom_mac), Ordering::Release);
                        receive_address(eeprom_mac)
                    } else {
                        receive_address(mac_from_u64(m))
                    }
                }
                Some(_) => (0, 0),
            };
            r.write(reg::RAL0 + 8 * slot as u32, lo);
            r.write(reg::RAH0 + 8 * slot as u32, hi);
        }
        for i in 0..layout::RX_DESCS {
            self.mem.set_rx_desc(i, RxDesc { addr: self.mem.rx_buffer_addr(i), ..RxDesc::default() });
        }
        for i in 0..layout::TX_DESCS {
            // DD set: free for the driver.
            self.mem.set_tx_desc(i, TxDesc { addr: self.mem.tx_buffer_addr(i), status: TX_DD, ..TxDesc::default() });
        }
        for i in 0..MAX_SHARERS {
            c.rx_cursor[i].store(0, Ordering::Release);
        }
        c.live.store((1u32 << sharers) - 1, Ordering::Release);
        c.tx_next.store(0, Ordering::Release);
        c.rx_tail.store(layout::RX_DESCS - 1, Ordering::Release);
        let ring = |off: u64| self.mem.base() + off;
        r.write(reg::RDBAL, ring(layout::RX_RING) as u32);
        r.write(reg::RDBAH, (ring(layout::RX_RING) >> 32) as u32);
        r.write(reg::RDLEN, layout::RX_DESCS * 16);
        r.write(reg::RDH, 0);
        r.write(reg::RDT, layout::RX_DESCS - 1);
        r.write(reg::RDTR, 0);
        r.write(reg::ITR, 0);
        r.write(reg::TDBAL, ring(layout::TX_RING) as u32);
        r.write(reg::TDBAH, (ring(layout::TX_RING) >> 32) as u32);
        r.write(reg::TDLEN, layout::TX_DESCS * 16);
        r.write(reg::TDH, 0);
        r.write(reg::TDT, 0);
        // IPGT 10, IPGR1 8, IPGR2 6 (the manual's values for copper).
        r.write(reg::TIPG, 10 | 8 << 10 | 6 << 20);
        r.write(reg::TCTL, tctl_value());
        r.write(reg::RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC);
        r.write(reg::IMS, INT_WANTED);
        c.magic.store(CONTROL_MAGIC, Ordering::Release);
        c.state.store(STATE_READY, Ordering::Release);
        Ok(eeprom_mac)
    }

    /// Read every frame the NIC has written past this sharer's cursor: `f(frame)` for whole frames, `bad(why)`
    /// for slots the driver refuses. Then give fully read descriptors back to the NIC. Returns frames seen.
    pub fn receive(&self, buf: &mut [u8; BUF_SIZE], mut f: impl FnMut(&[u8]), mut bad: impl FnMut(RxDrop)) -> u32 {
        let c = self.mem.control();
        let me = self.index.min(MAX_SHARERS - 1);
        let mut cursor = c.rx_cursor[me].load(Ordering::Acquire) % layout::RX_DESCS;
        let mut seen = 0;
        let limit = match self.variant {
            Variant::Fast => layout::RX_DESCS - 1,
            Variant::Conservative => CONSERVATIVE_BATCH,
        };
        // At most one lap: a misbehaving device cannot keep us here.
        for _ in 0..limit {
            // Never read into the tail the NIC has not been given (the spare descriptor at RDT).
            if cursor == c.rx_tail.load(Ordering::Acquire) % layout::RX_DESCS {
                break;
            }
            let d = self.mem.rx_desc(cursor);
            let verdict = match self.variant {
                Variant::Conservative if d.status & RX_DD != 0 && d.addr != self.mem.rx_buffer_addr(cursor) => {
                    // Put the slot's own buffer back; the frame (wherever the NIC put it) is lost.
                    self.mem.set_rx_desc(cursor, RxDesc { addr: self.mem.rx_buffer_addr(cursor), ..d });
                    RxSlot::Bad(RxDrop::ForeignBuffer)
                }
                _ => classify_rx(&d),
            };
            match verdict {
                RxSlot::Empty => break,
                RxSlot::Frame(len) => {
                    // The length is checked against the buffer size above; the copy reads only this slot.
                    self.mem.read_rx_buffer(cursor, &mut buf[..len]);
                    f(&buf[..len]);
                }
                RxSlot::Bad(why) => bad(why),
            }
            seen += 1;
            cursor = (cursor + 1) % layout::RX_DESCS;
        }
        if seen > 0 {
            c.rx_cursor[me].store(cursor, Ordering::Release);
            self.reclaim();
        }
        seen
    }

    /// Take part in receive reclaim again after this sharer's sandbox was recovered (the NIC is running: it
    /// is not re-initialised). Returns the cursor it resumes at.
    pub fn rejoin(&self) -> u32 {
        let c = self.mem.control();
        let me = self.index.min(MAX_SHARERS - 1);
        c.lock(self.index);
        let tail = c.rx_tail.load(Ordering::Acquire);
        let own = c.rx_cursor[me].load(Ordering::Acquire);
        let cursor = rejoin_cursor(tail, c.live_cursors(), own, layout::RX_DESCS);
        c.rx_cursor[me].store(cursor, Ordering::Release);
        c.live.fetch_or(1 << me, Ordering::AcqRel);
        c.unlock();
        cursor
    }

    /// Give back the descriptors every live sharer has read (under the control block's lock: RDT must only move
    /// forward).
    pub fn reclaim(&self) {
        let c = self.mem.control();
        c.lock(self.index);
        let tail = c.rx_tail.load(Ordering::Acquire);
        if let Some(new_tail) = reclaim_tail(tail, c.live_cursors(), layout::RX_DESCS) {
            let mut i = tail;
            while i != new_tail {
                self.mem.set_rx_desc(i, RxDesc { addr: self.mem.rx_buffer_addr(i), ..RxDesc::default() });
                i = (i + 1) % layout::RX_DESCS;
            }
            c.rx_tail.store(new_tail, Ordering::Release);
            c.rx_reclaimed.fetch_add(u64::from(ring_distance(tail, new_tail, layout::RX_DESCS)), Ordering::Relaxed);
            // Descriptor writes before the tail write that hands them over.
            core::sync::atomic::fence(Ordering::SeqCst);
            self.regs.write(reg::RDT, new_tail);
        }
        c.unlock();
    }

    /// Queue one frame (without CRC; the NIC appends it and pads short frames).
    pub fn transmit(&self, frame: &[u8]) -> Result<(), TxError> {
        if frame.len() > MAX_FRAME {
            return Err(TxError::TooLong);
        }
        if frame.len() < MIN_FRAME {
            return Err(TxError::TooShort);
        }
        let c = self.mem.control();
        c.lock(self.index);
        let i = c.tx_next.load(Ordering::Acquire) % layout::TX_DESCS;
        let d = self.mem.tx_desc(i);
        if d.status & TX_DD == 0 {
            c.tx_full.fetch_add(1, Ordering::Relaxed);
            c.unlock();
            return Err(TxError::RingFull);
        }
        self.mem.write_tx_buffer(i, frame);
        self.mem.set_tx_desc(
            i,
            TxDesc {
                addr: self.mem.tx_buffer_addr(i),
                length: frame.len() as u16,
                cmd: TX_CMD_EOP | TX_CMD_IFCS | TX_CMD_RS,
                ..TxDesc::default()
            },
        );
        let next = (i + 1) % layout::TX_DESCS;
        c.tx_next.store(next, Ordering::Release);
        core::sync::atomic::fence(Ordering::SeqCst);
        self.regs.write(reg::TDT, next);
        c.unlock();
        Ok(())
    }

    /// Read (and so clear) the interrupt causes; every sharer does it on every interrupt, so whichever reads
    /// first lowers the line and each still scans the ring itself.
    pub fn interrupt_causes(&self) -> u32 {
        self.regs.read(reg::ICR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rx(status: u8, errors: u8, length: u16) -> RxDesc {
        RxDesc { status, errors, length, ..RxDesc::default() }
    }

    #[test]
    fn descriptor_layouts_are_sixteen_bytes() {
        assert_eq!(core::mem::size_of::<RxDesc>(), 16);
        assert_eq!(core::mem::size_of::<TxDesc>(), 16);
    }

    #[test]
    fn receive_descriptors_are_judged_without_trusting_the_device() {
        assert_eq!(classify_rx(&rx(0, 0, 60)), RxSlot::Empty);
        assert_eq!(classify_rx(&rx(RX_DD | RX_EOP, 0, 60)), RxSlot::Frame(60));
        assert_eq!(classify_rx(&rx(RX_DD | RX_EOP, 0, 1514)), RxSlot::Frame(1514));
        assert_eq!(classify_rx(&rx(RX_DD, 0, 60)), RxSlot::Bad(RxDrop::Fragment));
        assert_eq!(classify_rx(&rx(RX_DD | RX_EOP, 1, 60)), RxSlot::Bad(RxDrop::DeviceError));
        // Checksum-offload error bits are ignored (offload is off).
        assert_eq!(classify_rx(&rx(RX_DD | RX_EOP, 0x20, 60)), RxSlot::Frame(60));
        for bad_len in [0u16, 13, 1515, 2048, 2049, u16::MAX] {
            assert_eq!(classify_rx(&rx(RX_DD | RX_EOP, 0, bad_len)), RxSlot::Bad(RxDrop::BadLength), "{bad_len}");
        }
        // Every possible status/errors/length combination is judged without panicking and never yields a
        // length beyond the buffer.
        for status in 0..=255u8 {
            for errors in [0u8, 1, 0x20, 0x80, 0xFF] {
                for len in [0u16, 14, 100, 1514, 1515, 4000, u16::MAX] {
                    if let RxSlot::Frame(l) = classify_rx(&rx(status, errors, len)) {
                        assert!(l <= BUF_SIZE && l >= MIN_FRAME);
                    }
                }
            }
        }
    }

    #[test]
    fn reclaim_keeps_one_descriptor_and_waits_for_the_slowest_sharer() {
        let n = 8;
        // Fresh ring: tail n-1, every cursor at 0 → nothing to give back.
        assert_eq!(reclaim_tail(7, [0u32].into_iter(), n), None);
        // One sharer read 3 frames (0, 1, 2): descriptors 7, 0, 1 go back, 2 is the spare.
        assert_eq!(reclaim_tail(7, [3u32].into_iter(), n), Some(2));
        // Two sharers: the one at 1 holds everything back but descriptor 7... tail 7, slowest at 1 → distance 2.
        assert_eq!(reclaim_tail(7, [5u32, 1].into_iter(), n), Some(0));
        // Slowest sharer right after the tail: nothing moves.
        assert_eq!(reclaim_tail(2, [3u32, 6].into_iter(), n), None);
        // No live sharer: nothing moves.
        assert_eq!(reclaim_tail(2, core::iter::empty(), n), None);
    }

    #[test]
    fn a_recovered_sharer_rejoins_at_the_reader_furthest_ahead() {
        let n = 16;
        // Tail 3; live readers at 5 and 9 (9 is further from the tail): resume at 9.
        assert_eq!(rejoin_cursor(3, [5u32, 9].into_iter(), 4, n), 9);
        // Wrapping: tail 14, readers at 15 and 2 (2 is 4 ahead): resume at 2.
        assert_eq!(rejoin_cursor(14, [15u32, 2].into_iter(), 0, n), 2);
        // Nobody live: its own cursor.
        assert_eq!(rejoin_cursor(3, core::iter::empty(), 7, n), 7);
    }

    #[test]
    fn a_dead_sharer_leaves_and_releases_its_lock() {
        let c = Control::default();
        c.live.store(0b111, Ordering::Relaxed);
        c.lock(1);
        assert!(!c.leave(2), "sharer 2 did not hold the lock");
        assert_eq!(c.live.load(Ordering::Relaxed), 0b011);
        assert!(c.leave(1), "sharer 1 held the lock");
        assert_eq!((c.live.load(Ordering::Relaxed), c.lock.load(Ordering::Relaxed)), (0b001, 0));
        assert!(!c.leave(MAX_SHARERS), "an out-of-range index is ignored");
    }

    /// A ring shared by several readers, driven by a simulated NIC: every frame is seen by every reader exactly
    /// once and in order, the NIC never writes a descriptor some reader has not read, and the ring never stalls
    /// while readers keep up.
    #[test]
    fn shared_receive_ring_simulation() {
        let n = 16u32;
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for readers in 1..=4usize {
            let mut slots: Vec<Option<u64>> = vec![None; n as usize]; // frame number written, None = empty
            let (mut head, mut tail) = (0u32, n - 1);
            let mut cursors = vec![0u32; readers];
            let mut next_frame = 0u64;
            let mut got: Vec<Vec<u64>> = vec![Vec::new(); readers];
            for _ in 0..20_000 {
                match rand() % (readers as u64 + 1) {
                    0 => {
                        // The NIC writes a frame if it owns a descriptor ([head, tail)).
                        if head != tail {
                            assert!(slots[head as usize].is_none(), "NIC overwrote an unread descriptor");
                            slots[head as usize] = Some(next_frame);
                            next_frame += 1;
                            head = (head + 1) % n;
                        }
                    }
                    r => {
                        let r = r as usize - 1;
                        // Reader r reads until an empty slot or the tail.
                        while cursors[r] != tail {
                            let Some(f) = slots[cursors[r] as usize] else { break };
                            got[r].push(f);
                            cursors[r] = (cursors[r] + 1) % n;
                        }
                        if let Some(t) = reclaim_tail(tail, cursors.iter().copied(), n) {
                            let mut i = tail;
                            while i != t {
                                slots[i as usize] = None;
                                i = (i + 1) % n;
                            }
                            tail = t;
                        }
                    }
                }
            }
            for g in &got {
                let expected: Vec<u64> = (0..g.len() as u64).collect();
                assert_eq!(g, &expected, "every reader sees every frame once, in order");
                assert!(g.len() as u64 + u64::from(n) >= next_frame, "a reader fell more than a ring behind");
            }
            assert!(next_frame > 1000, "the ring stalled ({readers} readers, {next_frame} frames)");
        }
    }

    /// The same ring with reader 0 dying and coming back again and again: while it is dead the others keep the
    /// ring moving; after it rejoins it reads strictly increasing, never-seen frames and never one the NIC
    /// owns; the NIC never overwrites a descriptor a live reader has not read.
    #[test]
    fn shared_receive_ring_survives_a_sharer_leaving_and_rejoining() {
        let n = 16u32;
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let readers = 3usize;
        let mut slots: Vec<Option<u64>> = vec![None; n as usize];
        let (mut head, mut tail) = (0u32, n - 1);
        let mut cursors = vec![0u32; readers];
        let mut live = vec![true; readers];
        let mut next_frame = 0u64;
        let mut got: Vec<Vec<u64>> = vec![Vec::new(); readers];
        let mut rejoins = 0;
        for step in 0..40_000u32 {
            if step % 997 == 500 {
                live[0] = !live[0];
                if live[0] {
                    let others = (1..readers).filter(|&r| live[r]).map(|r| cursors[r]);
                    cursors[0] = rejoin_cursor(tail, others, cursors[0], n);
                    rejoins += 1;
                }
            }
            match rand() % (readers as u64 + 1) {
                0 => {
                    if head != tail {
                        assert!(slots[head as usize].is_none(), "NIC overwrote a descriptor not given back");
                        slots[head as usize] = Some(next_frame);
                        next_frame += 1;
                        head = (head + 1) % n;
                    }
                }
                r => {
                    let r = r as usize - 1;
                    if !live[r] {
                        continue;
                    }
                    while cursors[r] != tail {
                        let Some(f) = slots[cursors[r] as usize] else { break };
                        assert!(got[r].last().is_none_or(|&l| f > l), "a reader saw a frame twice or out of order");
                        got[r].push(f);
                        cursors[r] = (cursors[r] + 1) % n;
                    }
                    let live_cursors = (0..readers).filter(|&r| live[r]).map(|r| cursors[r]);
                    if let Some(t) = reclaim_tail(tail, live_cursors, n) {
                        let mut i = tail;
                        while i != t {
                            slots[i as usize] = None;
                            i = (i + 1) % n;
                        }
                        tail = t;
                    }
                }
            }
        }
        assert!(rejoins >= 10 && next_frame > 5000, "the ring stalled or the reader never came back ({next_frame} frames)");
        for r in 1..readers {
            let expected: Vec<u64> = (0..got[r].len() as u64).collect();
            assert_eq!(got[r], expected, "a reader that never died must see every frame in order");
        }
    }

    #[test]
    fn eeprom_words_give_the_station_address() {
        // 52:54:00:12:34:56 as an 82540EM EEPROM stores it.
        assert_eq!(mac_from_eeprom([0x5452, 0x1200, 0x5634]), [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    }

    #[test]
    fn receive_address_encoding() {
        let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        assert_eq!(receive_address(mac), (0x1200_5452, 0x8000_5634));
        assert_eq!(mac_from_u64(mac_to_u64(mac)), mac);
    }

    #[test]
    fn layout_fits_the_region() {
        assert!(layout::END <= layout::REGION);
        assert_eq!(layout::TX_BUFS % 2048, 0x3000 % 2048);
    }
}
