//! The device as a sharer drives it: the descriptor memory ([`DescMem`]) and [`SharedNic`] (bring-up,
//! receive, transmit) over the shared rings.

use super::regs::{
    mac_from_u64, mac_to_u64, receive_address, reg, tctl_value, Regs, CTRL_SLU, INT_WANTED, RCTL_BAM,
    RCTL_EN, RCTL_SECRC, RECEIVE_ADDRESSES,
};
use super::audit::{base_shift, cursor_out_of_range, layout_ring_registers, rx_resync, tx_holes, RingConfig, SKIPPED_MARK};
use alloc::vec::Vec;
use super::ring::{
    classify_rx, layout, reclaim_tail, rejoin_cursor, ring_distance, Control, RxDesc, RxDrop, RxSlot, TxDesc, Variant,
    BUF_SIZE, CONSERVATIVE_BATCH, CONTROL_MAGIC, MAX_FRAME, MAX_SHARERS, MIN_FRAME, RX_DD, RX_EOP, STATE_FAILED,
    STATE_INITIALISING, STATE_READY, TX_CMD_EOP, TX_CMD_IFCS, TX_CMD_RS, TX_DD,
};
use super::lock::{acquire, release, Claim, Claims};
use core::sync::atomic::Ordering;

/// Descriptor rings and buffers in the DMA region, read and written with volatile accesses (the NIC and the
/// other sharers change them behind the compiler's back).
pub struct DescMem {
    /// The region's address as the NIC and the ring registers name it (physical).
    base: u64,
    /// Added to an address of the region to reach it from this CPU (the kernel's KERNEL_BASE; 0 in host tests,
    /// where the "physical" address is a buffer's own).
    cpu_offset: u64,
}

impl DescMem {
    /// # Safety
    /// `base` is the (physical) start of a DMA region of [`layout::REGION`] bytes laid out as in [`layout`],
    /// mapped read-write at `base + cpu_offset` for as long as the value is used.
    pub const unsafe fn new(base: u64, cpu_offset: u64) -> DescMem {
        DescMem { base, cpu_offset }
    }

    /// The region's physical address (what descriptors and the ring registers hold).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Where this CPU reads and writes the region's address `addr`.
    fn cpu(&self, addr: u64) -> u64 {
        addr + self.cpu_offset
    }

    pub fn control(&self) -> &Control {
        // SAFETY: the control block lies at the region's start (constructor contract), is made only of atomics
        // (any bit pattern is valid), and is at most a page.
        unsafe { &*(self.cpu(self.base + layout::CONTROL) as *const Control) }
    }

    pub fn rx_buffer_addr(&self, i: u32) -> u64 {
        self.base + layout::RX_BUFS + u64::from(i % layout::RX_DESCS) * BUF_SIZE as u64
    }

    pub fn tx_buffer_addr(&self, i: u32) -> u64 {
        self.base + layout::TX_BUFS + u64::from(i % layout::TX_DESCS) * BUF_SIZE as u64
    }

    fn rx_desc_ptr(&self, i: u32) -> *mut RxDesc {
        self.cpu(self.base + layout::RX_RING + u64::from(i % layout::RX_DESCS) * 16) as *mut RxDesc
    }

    fn tx_desc_ptr(&self, i: u32) -> *mut TxDesc {
        self.cpu(self.base + layout::TX_RING + u64::from(i % layout::TX_DESCS) * 16) as *mut TxDesc
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

    /// Rewrite only the buffer address of receive descriptor `i` (the NIC may be writing its status: the rest
    /// of the descriptor is left alone).
    pub fn set_rx_addr(&self, i: u32, addr: u64) {
        // SAFETY: as in rx_desc(); the address is the descriptor's first, 8-byte aligned field.
        unsafe { core::ptr::write_volatile(self.rx_desc_ptr(i) as *mut u64, addr) }
    }

    /// Rewrite only the buffer address of transmit descriptor `i`.
    pub fn set_tx_addr(&self, i: u32, addr: u64) {
        // SAFETY: as in set_rx_addr().
        unsafe { core::ptr::write_volatile(self.tx_desc_ptr(i) as *mut u64, addr) }
    }

    /// Copy `len` (≤ BUF_SIZE) bytes out of receive buffer `i`.
    pub fn read_rx_buffer(&self, i: u32, out: &mut [u8]) {
        let len = out.len().min(BUF_SIZE);
        // SAFETY: the buffer is BUF_SIZE bytes inside the region; len is clamped to it.
        unsafe { core::ptr::copy_nonoverlapping(self.cpu(self.rx_buffer_addr(i)) as *const u8, out.as_mut_ptr(), len) }
    }

    /// Copy a frame (≤ BUF_SIZE) into transmit buffer `i`.
    /// Put a frame into receive slot `i`'s buffer (the monitor moving a frame the NIC wrote elsewhere).
    pub fn write_rx_frame(&self, i: u32, frame: &[u8]) {
        let len = frame.len().min(BUF_SIZE);
        // SAFETY: as in read_rx_buffer(): the slot's buffer lies in the region and holds BUF_SIZE bytes.
        unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), self.cpu(self.rx_buffer_addr(i)) as *mut u8, len) }
    }

    pub fn write_tx_buffer(&self, i: u32, frame: &[u8]) {
        let len = frame.len().min(BUF_SIZE);
        // SAFETY: as in read_rx_buffer().
        unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), self.cpu(self.tx_buffer_addr(i)) as *mut u8, len) }
    }
}

/// Why a frame was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxError {
    TooLong,
    TooShort,
    RingFull,
}

/// Where the sharers' lock claims are: `count` of them, `stride` bytes apart from `base` (in a sandbox one page
/// per sharer, given by the monitor; in the SMP build and the monitor the control block's array).
#[derive(Clone, Copy, Debug)]
pub struct ClaimTable {
    base: u64,
    stride: u64,
    count: usize,
}

impl ClaimTable {
    /// # Safety
    /// The `count` claims at `base + stride * j` are mapped readable (the caller's own writable) for as long as
    /// the table is used; `base` and `stride` keep each claim 8-byte aligned.
    pub const unsafe fn new(base: u64, stride: u64, count: usize) -> ClaimTable {
        ClaimTable { base, stride, count }
    }
}

impl Claims for ClaimTable {
    fn count(&self) -> usize {
        self.count
    }

    fn claim(&self, j: usize) -> &Claim {
        let j = j.min(self.count.saturating_sub(1));
        // SAFETY: j < count (clamped), so the claim is one the constructor's contract maps; a claim is made of
        // atomics only (any bit pattern is valid, others may change it).
        unsafe { &*((self.base + self.stride * j as u64) as *const Claim) }
    }
}

/// What a waiter does about a holder that keeps the lock: after `bound` cycles on the same holder,
/// `report(holder)` (in a sandbox: a hypercall asking the monitor to judge it), again every quarter bound.
#[derive(Clone, Copy, Debug)]
pub struct LockWatch {
    pub bound: u64,
    pub report: fn(usize),
}

/// What [`SharedNic::resync_rings`] found and put right.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RingRepair {
    /// Registers of [`RING_CONFIG`] found rewritten: (offset, found, put back).
    pub restored: Vec<(u32, u32, u32)>,
    /// Heads and tails put back inside their rings.
    pub cursors: u32,
    pub rx_holes: u32,
    /// Frames moved back from where a moved base had put them.
    pub rx_moved: u32,
    pub rx_stale: u32,
    pub tx_freed: u32,
    /// Descriptor buffer addresses put back to their own slot's.
    pub addresses: u32,
}

impl RingRepair {
    /// Whether anything was found wrong.
    pub fn found_anything(&self) -> bool {
        !self.restored.is_empty() || self.cursors + self.rx_holes + self.rx_moved + self.rx_stale + self.tx_freed + self.addresses > 0
    }
}

/// One sharer's view of a shared NIC: the register window, the DMA region, its own index and the lock claims.
pub struct SharedNic {
    pub regs: Regs,
    pub mem: DescMem,
    pub index: usize,
    pub variant: Variant,
    pub claims: ClaimTable,
    pub watch: Option<LockWatch>,
}

impl SharedNic {
    /// A sharer whose lock claims are the control block's (the SMP build's only sharer, or the monitor).
    pub fn new(regs: Regs, mem: DescMem, index: usize, variant: Variant) -> SharedNic {
        let c = mem.control();
        let base = core::ptr::from_ref(&c.claims) as u64;
        // SAFETY: the control block's claims array lies in the DMA region the DescMem contract maps read-write.
        let claims = unsafe { ClaimTable::new(base, core::mem::size_of::<Claim>() as u64, MAX_SHARERS) };
        SharedNic { regs, mem, index, variant, claims, watch: None }
    }

    /// Take the lock over the shared rings.
    pub fn lock(&self) {
        let mut waiting: Option<(usize, u64)> = None; // (holder, next report)
        acquire(&self.claims, self.index, |j| {
            core::hint::spin_loop();
            let Some(w) = self.watch else { return };
            let now = questv_arch::cpu::rdtsc();
            match waiting {
                Some((h, next)) if h == j => {
                    if now >= next {
                        (w.report)(j);
                        waiting = Some((j, now + w.bound / 4));
                    }
                }
                _ => waiting = Some((j, now + w.bound)),
            }
        });
    }

    pub fn unlock(&self) {
        release(&self.claims, self.index);
    }

    /// Set the NIC up (the SMP kernel, or the VT monitor before any sharer runs): reset, receive addresses of every sharer, rings,
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
        self.lock();
        let tail = c.rx_tail.load(Ordering::Acquire);
        let own = c.rx_cursor[me].load(Ordering::Acquire);
        let cursor = rejoin_cursor(tail, c.live_cursors(), own, layout::RX_DESCS);
        c.rx_cursor[me].store(cursor, Ordering::Release);
        c.live.fetch_or(1 << me, Ordering::AcqRel);
        self.unlock();
        cursor
    }

    /// Give back the descriptors every live sharer has read (under the control block's lock: RDT must only move
    /// forward).
    pub fn reclaim(&self) {
        let c = self.mem.control();
        self.lock();
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
        self.unlock();
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
        self.lock();
        let i = c.tx_next.load(Ordering::Acquire) % layout::TX_DESCS;
        let d = self.mem.tx_desc(i);
        if d.status & TX_DD == 0 {
            c.tx_full.fetch_add(1, Ordering::Relaxed);
            self.unlock();
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
        self.unlock();
        Ok(())
    }

    /// Put every descriptor's buffer address back to its own slot's buffer: a sharer may have aimed some
    /// elsewhere (another sandbox's memory, the monitor's), for the NIC to read or write by DMA. Only the address
    /// is rewritten (the NIC may be writing a descriptor's status meanwhile). Returns (receive, transmit)
    /// descriptors repaired.
    pub fn repair_descriptors(&self) -> (u32, u32) {
        let mut rx = 0;
        for i in 0..layout::RX_DESCS {
            let own = self.mem.rx_buffer_addr(i);
            if self.mem.rx_desc(i).addr != own {
                self.mem.set_rx_addr(i, own);
                rx += 1;
            }
        }
        let mut tx = 0;
        for i in 0..layout::TX_DESCS {
            let own = self.mem.tx_buffer_addr(i);
            if self.mem.tx_desc(i).addr != own {
                self.mem.set_tx_addr(i, own);
                tx += 1;
            }
        }
        (rx, tx)
    }

    /// A sharer's own cheap look at the ring registers it can reach (no exit: the window is readable): bases
    /// and lengths as the layout gives them, heads and tails inside their rings. The first one found otherwise
    /// (offset, value) is for the monitor to judge ([`SharedNic::resync_rings`] there).
    pub fn ring_registers_wrong(&self) -> Option<(u32, u32)> {
        let r = &self.regs;
        layout_ring_registers(self.mem.base())
            .into_iter()
            .find(|&(o, want)| r.read(o) != want)
            .map(|(o, _)| (o, r.read(o)))
            .or_else(|| cursor_out_of_range(|o| r.read(o)))
    }

    /// Whether this sharer's receive cursor stands at a slot the NIC has passed without writing it (a hole:
    /// the NIC wrote that frame elsewhere). The caller looks twice, some time apart, before it believes it.
    pub fn rx_cursor_at_hole(&self) -> bool {
        let c = self.mem.control();
        let me = self.index.min(MAX_SHARERS - 1);
        let n = layout::RX_DESCS;
        let (cursor, tail, head) = (c.rx_cursor[me].load(Ordering::Acquire) % n, c.rx_tail.load(Ordering::Acquire) % n, self.regs.read(reg::RDH));
        head < n && self.mem.rx_desc(cursor).status & RX_DD == 0 && ring_distance(tail, cursor, n) < ring_distance(tail, head, n)
    }

    /// The monitor puts the rings right after a sharer rewrote what it can reach of them: every register of
    /// [`RING_CONFIG`] back to `recorded`, heads and tails back inside their rings (tails from the control
    /// block), the receive slots the NIC skipped marked and the stale ones it owns cleared, the transmit slots
    /// it will never complete freed. Both units keep running (stopping reception costs more than the races:
    /// QEMU's e1000 refuses frames for a second after any RCTL write). The races are benign: the NIC only
    /// moves its head forward, so a slot between the tail and the head read is the software's; a slot given
    /// back meanwhile is rewritten by the NIC before any cursor can reach it; and a frame the NIC writes at the
    /// head just as its stale DD is cleared becomes a hole, which the next audit marks.
    pub fn resync_rings(&self, recorded: &RingConfig) -> RingRepair {
        let r = &self.regs;
        let c = self.mem.control();
        let restored = recorded.differences(&RingConfig::read(|o| r.read(o)));
        for &(offset, _, want) in &restored {
            r.write(offset, want);
        }
        let mut cursors = 0;
        let (rxn, txn) = (layout::RX_DESCS, layout::TX_DESCS);
        if r.read(reg::RDT) >= rxn {
            r.write(reg::RDT, c.rx_tail.load(Ordering::Acquire) % rxn);
            cursors += 1;
        }
        if r.read(reg::TDT) >= txn {
            r.write(reg::TDT, c.tx_next.load(Ordering::Acquire) % txn);
            cursors += 1;
        }
        if r.read(reg::TDH) >= txn {
            r.write(reg::TDH, r.read(reg::TDT));
            cursors += 1;
        }
        let shift = restored.iter().find(|&&(o, _, _)| o == reg::RDBAL).and_then(|&(_, found, want)| base_shift(found, want));
        let rx = rx_resync(r.read(reg::RDT), r.read(reg::RDH), rxn, shift, |i| self.mem.rx_desc(i).status & RX_DD != 0);
        for &(from, to) in &rx.moves {
            let d = self.mem.rx_desc(from);
            let mut frame = [0u8; BUF_SIZE];
            let len = usize::from(d.length).min(BUF_SIZE);
            self.mem.read_rx_buffer(from, &mut frame[..len]);
            self.mem.write_rx_frame(to, &frame[..len]);
            // Descriptor last: the cursors take the slot once its DD shows.
            core::sync::atomic::fence(Ordering::SeqCst);
            self.mem.set_rx_desc(to, RxDesc { addr: self.mem.rx_buffer_addr(to), ..d });
        }
        // A moved frame's old slot is stale like the rest (it is the NIC's).
        if let Some(head) = rx.head {
            r.write(reg::RDH, head);
            cursors += 1;
        }
        let mark_skipped = |i: u32| {
            let skipped = RxDesc { addr: self.mem.rx_buffer_addr(i), status: RX_DD | RX_EOP, special: SKIPPED_MARK, ..RxDesc::default() };
            self.mem.set_rx_desc(i, skipped);
        };
        rx.holes.iter().copied().for_each(mark_skipped);
        for &i in &rx.stale {
            self.mem.set_rx_desc(i, RxDesc { addr: self.mem.rx_buffer_addr(i), ..RxDesc::default() });
        }
        // A frame the NIC wrote at its head just as that slot's stale DD was cleared left a hole: mark what
        // holes there are now (no shift, no stale slots: those were the first look's).
        let again = rx_resync(r.read(reg::RDT), r.read(reg::RDH), rxn, None, |i| self.mem.rx_desc(i).status & RX_DD != 0);
        again.holes.iter().copied().for_each(mark_skipped);
        let tx = tx_holes(r.read(reg::TDH), r.read(reg::TDT), txn, |i| self.mem.tx_desc(i).status & TX_DD != 0);
        for &i in &tx {
            self.mem.set_tx_desc(i, TxDesc { addr: self.mem.tx_buffer_addr(i), status: TX_DD, ..TxDesc::default() });
        }
        let (addr_rx, addr_tx) = self.repair_descriptors();
        RingRepair { restored, cursors, rx_holes: (rx.holes.len() + again.holes.len()) as u32, rx_moved: rx.moves.len() as u32, rx_stale: rx.stale.len() as u32, tx_freed: tx.len() as u32, addresses: addr_rx + addr_tx }
    }

    /// Whether the NIC has sent everything it was given (its transmit head has reached the tail).
    pub fn transmit_drained(&self) -> bool {
        self.regs.read(reg::TDH) == self.regs.read(reg::TDT)
    }

    /// Read (and so clear) the interrupt causes; every sharer does it on every interrupt, so whichever reads
    /// first lowers the line and each still scans the ring itself.
    pub fn interrupt_causes(&self) -> u32 {
        self.regs.read(reg::ICR)
    }
}
