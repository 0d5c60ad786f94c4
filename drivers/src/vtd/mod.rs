//! An Intel VT-d DMA remapping unit (legacy translation mode): its register page, the enabling sequence (root
//! table, global invalidations, translation on) and the fault-recording registers. The table formats are in
//! [`tables`]; which device gets which domain is the caller's policy (the monitor).

pub mod tables;

use tables::{Capability, FaultRecord};
use questv_arch::paging::phys_to_virt;

mod reg {
    pub const CAP: u64 = 0x08;
    pub const ECAP: u64 = 0x10;
    pub const GCMD: u64 = 0x18;
    pub const GSTS: u64 = 0x1C;
    pub const RTADDR: u64 = 0x20;
    pub const CCMD: u64 = 0x28;
    pub const FSTS: u64 = 0x34;
    pub const FECTL: u64 = 0x38;
    pub const FEDATA: u64 = 0x3C;
    pub const FEADDR: u64 = 0x40;
    pub const FEUADDR: u64 = 0x44;
}

const GCMD_TE: u32 = 1 << 31;
const GCMD_SRTP: u32 = 1 << 30;
const GCMD_WBF: u32 = 1 << 27;
/// The one-shot command bits of GSTS that must not be written back as commands.
const GSTS_ONE_SHOT: u32 = GCMD_SRTP | GCMD_WBF | 1 << 29 | 1 << 24;
/// FSTS: primary pending fault, fault overflow.
const FSTS_PPF: u32 = 1 << 1;
const FSTS_PFO: u32 = 1 << 0;
/// FECTL: interrupt mask.
const FECTL_IM: u32 = 1 << 31;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VtdError {
    /// The unit offers neither 3- nor 4-level second-level tables.
    NoUsableWidth,
    /// A command the unit did not acknowledge (register offset).
    Timeout(u64),
}

impl core::fmt::Display for VtdError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VtdError::NoUsableWidth => write!(f, "the remapping unit offers no 39- or 48-bit table format"),
            VtdError::Timeout(r) => write!(f, "the remapping unit did not complete the command at register 0x{r:x}"),
        }
    }
}

pub struct Vtd {
    base: u64,
    pub cap: Capability,
}

impl Vtd {
    /// # Safety
    /// `base` is the physical, uncached address of a VT-d unit's 4 KiB register page (from the DMAR
    /// table) that only the caller programs.
    pub unsafe fn new(base: u64) -> Vtd {
        let mut v = Vtd { base, cap: Capability::decode(0, 0) };
        v.cap = Capability::decode(v.read64(reg::CAP), v.read64(reg::ECAP));
        v
    }

    fn read32(&self, off: u64) -> u32 {
        // SAFETY: an aligned register inside the page `new`'s contract names.
        unsafe { questv_arch::mmio::reg32(self.base + (off & 0xFFC)).read() }
    }

    fn write32(&self, off: u64, v: u32) {
        // SAFETY: as in read32.
        unsafe { questv_arch::mmio::reg32(self.base + (off & 0xFFC)).write(v) }
    }

    /// 64-bit registers as two 32-bit accesses, low half first (the unit acts on the write of the high half).
    fn read64(&self, off: u64) -> u64 {
        u64::from(self.read32(off)) | u64::from(self.read32(off + 4)) << 32
    }

    fn write64(&self, off: u64, v: u64) {
        self.write32(off, v as u32);
        self.write32(off + 4, (v >> 32) as u32);
    }

    fn wait(&self, off: u64, done: impl Fn(u64) -> bool) -> Result<(), VtdError> {
        for _ in 0..10_000_000u32 {
            if done(self.read64(off)) {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(VtdError::Timeout(off))
    }

    /// Issue global command `bit` (keeping the persistent ones set) and wait for its status bit.
    fn command(&self, bit: u32) -> Result<(), VtdError> {
        let keep = self.read32(reg::GSTS) & !GSTS_ONE_SHOT;
        self.write32(reg::GCMD, keep | bit);
        self.wait(reg::GSTS, |s| s as u32 & bit != 0)
    }

    pub fn translation_enabled(&self) -> bool {
        self.read32(reg::GSTS) & GCMD_TE != 0
    }

    /// Point the unit at `root_table` (legacy mode), invalidate its context cache and IOTLB globally, and turn
    /// translation on: from then on a device reaches only what its context entry maps, and a device without a
    /// present context entry reaches nothing.
    pub fn enable(&self, root_table: u64) -> Result<(), VtdError> {
        self.cap.levels().ok_or(VtdError::NoUsableWidth)?;
        // Fault events are polled (mask the interrupt; the records stay).
        self.write32(reg::FECTL, FECTL_IM);
        self.write64(reg::RTADDR, root_table & !0xFFF);
        self.command(GCMD_SRTP)?;
        self.invalidate()?;
        self.command(GCMD_TE)
    }

    /// Global context-cache and IOTLB invalidation (after any change to the tables).
    pub fn invalidate(&self) -> Result<(), VtdError> {
        if self.cap.write_buffer_flush {
            let keep = self.read32(reg::GSTS) & !GSTS_ONE_SHOT;
            self.write32(reg::GCMD, keep | GCMD_WBF);
            self.wait(reg::GSTS, |s| s as u32 & GCMD_WBF == 0)?;
        }
        // CCMD: ICC (bit 63), CIRG = 01 global.
        self.write64(reg::CCMD, 1 << 63 | 1 << 61);
        self.wait(reg::CCMD, |v| v & (1 << 63) == 0)?;
        // IOTLB_REG: IVT (bit 63), IIRG = 01 global, drain reads and writes.
        let iotlb = self.cap.iotlb_offset + 8;
        self.write64(iotlb, 1 << 63 | 1 << 60 | 1 << 49 | 1 << 48);
        self.wait(iotlb, |v| v & (1 << 63) == 0)
    }

    /// Route fault events to an MSI (`address`, `data`) and unmask them; polling keeps working.
    pub fn set_fault_event(&self, address: u64, data: u32) {
        self.write32(reg::FEDATA, data);
        self.write32(reg::FEADDR, address as u32);
        self.write32(reg::FEUADDR, (address >> 32) as u32);
        self.write32(reg::FECTL, 0);
    }

    /// Take the faults recorded since the last call (each record cleared as it is read), and whether the unit
    /// dropped some because its records were full.
    pub fn take_faults(&self, out: &mut alloc::vec::Vec<FaultRecord>) -> bool {
        let fsts = self.read32(reg::FSTS);
        if fsts & (FSTS_PPF | FSTS_PFO) == 0 {
            return false;
        }
        for i in 0..u64::from(self.cap.fault_records) {
            let off = self.cap.fault_records_offset + 16 * i;
            let (low, high) = (self.read64(off), self.read64(off + 8));
            if let Some(f) = FaultRecord::decode(low, high) {
                out.push(f);
                // F is write-1-to-clear, in the record's last dword.
                self.write32(off + 12, 1 << 31);
            }
        }
        let overflow = fsts & FSTS_PFO != 0;
        // PFO is write-1-to-clear; PPF clears with the records.
        self.write32(reg::FSTS, fsts & FSTS_PFO);
        overflow
    }
}

/// Table pages in the kernel's memory (a frame's physical address is what the unit reads; the kernel writes it
/// through its mapping of physical memory), taken from `alloc` (which hands out 4 KiB frames no one else uses)
/// and zeroed here.
pub struct KernelPages<F: FnMut() -> Option<u64>> {
    alloc: F,
    pub allocated: u32,
}

impl<F: FnMut() -> Option<u64>> KernelPages<F> {
    /// # Safety
    /// Every frame `alloc` returns is RAM, writable, page-aligned and the caller's alone for as
    /// long as the unit uses the tables built in it.
    pub unsafe fn new(alloc: F) -> Self {
        KernelPages { alloc, allocated: 0 }
    }

    /// Store a 16-byte root or context entry at `index` of the table page `table`.
    pub fn write_wide(&mut self, table: u64, index: u64, (low, high): (u64, u64)) {
        let at = (phys_to_virt(table) + 16 * (index % 256)) as *mut u64;
        // SAFETY: `table` is a page from `alloc` (the constructor's contract); the slot lies inside it.
        unsafe {
            core::ptr::write_volatile(at, low);
            core::ptr::write_volatile(at.add(1), high);
        }
    }
}

impl<F: FnMut() -> Option<u64>> tables::TablePages for KernelPages<F> {
    fn alloc(&mut self) -> Option<u64> {
        let p = (self.alloc)()?;
        // SAFETY: a fresh frame from `alloc`, ours alone (the constructor's contract).
        unsafe { core::ptr::write_bytes(phys_to_virt(p) as *mut u8, 0, tables::PAGE as usize) };
        self.allocated += 1;
        Some(p)
    }

    fn read(&self, table: u64, index: u64) -> u64 {
        // SAFETY: as in alloc: `table` came from it; 512 eight-byte entries per page.
        unsafe { core::ptr::read_volatile((phys_to_virt(table) + 8 * (index % 512)) as *const u64) }
    }

    fn write(&mut self, table: u64, index: u64, entry: u64) {
        // SAFETY: as in read.
        unsafe { core::ptr::write_volatile((phys_to_virt(table) + 8 * (index % 512)) as *mut u64, entry) }
    }
}
