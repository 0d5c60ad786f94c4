//! Intel VT-d structures in legacy translation mode (specification §9): the root and context entries that pick
//! a device's domain, the second-level page tables that translate its DMA addresses, the capability fields the
//! driver needs, and the fault-recording format. Pure (no register access), host-tested.
#![forbid(unsafe_code)]

pub const PAGE: u64 = 4096;
/// 512 eight-byte entries per second-level table; root and context tables have 256 sixteen-byte entries.
const ENTRIES: u64 = 512;
const READ: u64 = 1 << 0;
const WRITE: u64 = 1 << 1;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// The fields of CAP_REG and ECAP_REG this driver uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// Supported adjusted guest address widths (bit 1: 39-bit, 3-level tables; bit 2: 48-bit, 4-level).
    pub sagaw: u8,
    /// Offset of the first fault-recording register (bytes from the register base).
    pub fault_records_offset: u64,
    pub fault_records: u32,
    /// Offset of the IOTLB invalidation registers (IVA_REG; IOTLB_REG is 8 bytes further).
    pub iotlb_offset: u64,
    /// Caching mode: not-present entries may be cached, so every change needs an invalidation.
    pub caching_mode: bool,
    /// The write buffer must be flushed before tables change take effect.
    pub write_buffer_flush: bool,
}

impl Capability {
    pub fn decode(cap: u64, ecap: u64) -> Capability {
        Capability {
            sagaw: ((cap >> 8) & 0x1F) as u8,
            fault_records_offset: ((cap >> 24) & 0x3FF) * 16,
            fault_records: ((cap >> 40) & 0xFF) as u32 + 1,
            iotlb_offset: ((ecap >> 8) & 0x3FF) * 16,
            caching_mode: cap & (1 << 7) != 0,
            write_buffer_flush: cap & (1 << 4) != 0,
        }
    }

    /// Table levels to use (3 or 4) and the context entry's address-width code, or `None` if neither is offered.
    pub fn levels(&self) -> Option<(u32, u64)> {
        if self.sagaw & 0b010 != 0 {
            Some((3, 1))
        } else if self.sagaw & 0b100 != 0 {
            Some((4, 2))
        } else {
            None
        }
    }
}

/// Root entry for one bus: present, pointing at that bus's context table. (low, high) quadwords.
pub fn root_entry(context_table: u64) -> (u64, u64) {
    (context_table & ADDR_MASK | 1, 0)
}

/// Context entry for one device: present, untranslated requests through the second-level table at `root`,
/// address width `aw` (from [`Capability::levels`]), domain `domain`. Fault reporting stays on.
pub fn context_entry(root: u64, aw: u64, domain: u16) -> (u64, u64) {
    (root & ADDR_MASK | 1, aw & 0b111 | u64::from(domain) << 8)
}

/// Index of the 16-byte slot for `devfn` in a context table (`bus` in the root table the same way).
pub fn devfn(dev: u8, func: u8) -> u64 {
    u64::from(dev & 0x1F) << 3 | u64::from(func & 7)
}

/// Where second-level tables live while they are built: page allocation and 8-byte entry access by physical
/// address (the kernel reaches it through its mapping of physical memory; the host tests use an arena).
pub trait TablePages {
    /// A zeroed page.
    fn alloc(&mut self) -> Option<u64>;
    fn read(&self, table: u64, index: u64) -> u64;
    fn write(&mut self, table: u64, index: u64, entry: u64);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    OutOfPages,
    /// Not page-aligned, empty, or beyond what `levels` tables translate.
    BadRange,
}

/// Map `[start, start + len)` to itself (DMA address = physical address) in the second-level table at `root`,
/// 4 KiB pages, readable and (if `writable`) writable. Everything else stays unmapped: a DMA there faults.
pub fn map_identity(pages: &mut impl TablePages, root: u64, levels: u32, start: u64, len: u64, writable: bool) -> Result<u64, MapError> {
    let limit = 1u64 << (12 + 9 * levels);
    if start % PAGE != 0 || len == 0 || len % PAGE != 0 || start.checked_add(len).is_none_or(|end| end > limit) {
        return Err(MapError::BadRange);
    }
    let leaf = if writable { READ | WRITE } else { READ };
    let mut mapped = 0;
    let mut addr = start;
    while addr < start + len {
        let mut table = root;
        for level in (2..=levels).rev() {
            let index = (addr >> (12 + 9 * (level - 1))) % ENTRIES;
            let e = pages.read(table, index);
            table = if e & (READ | WRITE) != 0 {
                e & ADDR_MASK
            } else {
                let next = pages.alloc().ok_or(MapError::OutOfPages)?;
                // Non-leaf entries grant both: the leaf decides.
                pages.write(table, index, next | READ | WRITE);
                next
            };
        }
        pages.write(table, (addr >> 12) % ENTRIES, addr & ADDR_MASK | leaf);
        mapped += 1;
        addr += PAGE;
    }
    Ok(mapped)
}

/// Walk the second-level table: the physical address `dma` reaches and whether it may be written, or `None`.
pub fn translate(pages: &impl TablePages, root: u64, levels: u32, dma: u64) -> Option<(u64, bool)> {
    let mut table = root;
    for level in (1..=levels).rev() {
        let e = pages.read(table, (dma >> (12 + 9 * (level - 1))) % ENTRIES);
        if e & (READ | WRITE) == 0 {
            return None;
        }
        if level == 1 {
            return Some((e & ADDR_MASK | dma & (PAGE - 1), e & WRITE != 0));
        }
        table = e & ADDR_MASK;
    }
    None
}

/// One fault-recording register (128 bits), decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// The page the device tried to reach.
    pub address: u64,
    /// Requester id: bus << 8 | device << 3 | function.
    pub source: u16,
    /// Fault reason (specification appendix A: 0x02 context entry not present, 0x05 write to a read-only
    /// page, 0x06 read of a not-present page, ...).
    pub reason: u8,
    pub write: bool,
}

impl FaultRecord {
    /// From the register's (low, high) quadwords; `None` unless its F bit (bit 127) says it holds a fault.
    pub fn decode(low: u64, high: u64) -> Option<FaultRecord> {
        if high & (1 << 63) == 0 {
            return None;
        }
        // T (bit 126): 0 a write request, 1 a read.
        Some(FaultRecord { address: low & !(PAGE - 1), source: high as u16, reason: (high >> 32) as u8, write: high & (1 << 62) == 0 })
    }

    pub fn bdf(&self) -> (u8, u8, u8) {
        ((self.source >> 8) as u8, ((self.source >> 3) & 0x1F) as u8, (self.source & 7) as u8)
    }

    pub fn reason_name(&self) -> &'static str {
        match self.reason {
            0x01 => "root_not_present",
            0x02 => "context_not_present",
            0x03 => "context_invalid",
            0x04 => "address_beyond_width",
            0x05 => "write_not_permitted",
            0x06 => "read_not_permitted",
            0x07 => "table_entry_unreadable",
            _ => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Pages in a map: physical address → 512 entries.
    #[derive(Default)]
    struct Arena {
        pages: BTreeMap<u64, Vec<u64>>,
        next: u64,
        budget: usize,
    }

    impl TablePages for Arena {
        fn alloc(&mut self) -> Option<u64> {
            if self.pages.len() >= self.budget {
                return None;
            }
            self.next += PAGE;
            self.pages.insert(self.next, vec![0; 512]);
            Some(self.next)
        }
        fn read(&self, table: u64, index: u64) -> u64 {
            self.pages[&table][index as usize]
        }
        fn write(&mut self, table: u64, index: u64, entry: u64) {
            self.pages.get_mut(&table).unwrap()[index as usize] = entry;
        }
    }

    fn arena() -> (Arena, u64) {
        let mut a = Arena { next: 0x10_0000, budget: 64, ..Arena::default() };
        let root = a.alloc().unwrap();
        (a, root)
    }

    #[test]
    fn capability_fields() {
        // QEMU 7.2's VT-d (aw-bits 39): SAGAW 39-bit, FRO 0x220 / 16, one fault register, IRO 0x200 / 16.
        let cap = 0x00d2_0082_2260_0000u64 | 0b010 << 8;
        let c = Capability::decode(cap, 0xf0_0000 | 0x20 << 8);
        assert_eq!(c.sagaw & 0b010, 0b010);
        assert_eq!(c.levels(), Some((3, 1)));
        assert_eq!(c.fault_records_offset, ((cap >> 24) & 0x3FF) * 16);
        assert_eq!(c.iotlb_offset, 0x200);
        assert_eq!(Capability::decode(0b100 << 8, 0).levels(), Some((4, 2)));
        assert_eq!(Capability::decode(0, 0).levels(), None);
    }

    #[test]
    fn exactly_the_region_is_mapped() {
        for levels in [3, 4] {
            let (mut a, root) = arena();
            let (start, len) = (0x560_0000, 1 << 20);
            assert_eq!(map_identity(&mut a, root, levels, start, len, true), Ok(256));
            assert_eq!(translate(&a, root, levels, start), Some((start, true)));
            assert_eq!(translate(&a, root, levels, start + len - 1), Some((start + len - 1, true)));
            assert_eq!(translate(&a, root, levels, start - 1), None, "the page below");
            assert_eq!(translate(&a, root, levels, start + len), None, "the page above");
            assert_eq!(translate(&a, root, levels, 0), None);
            assert_eq!(translate(&a, root, levels, 0xfee0_0000), None, "the APIC page");
        }
    }

    #[test]
    fn read_only_regions_and_bad_ranges() {
        let (mut a, root) = arena();
        map_identity(&mut a, root, 3, 0x20_0000, PAGE, false).unwrap();
        assert_eq!(translate(&a, root, 3, 0x20_0010), Some((0x20_0010, false)));
        assert_eq!(map_identity(&mut a, root, 3, 0x20_0001, PAGE, true), Err(MapError::BadRange));
        assert_eq!(map_identity(&mut a, root, 3, 0, 0, true), Err(MapError::BadRange));
        assert_eq!(map_identity(&mut a, root, 3, 1 << 39, PAGE, true), Err(MapError::BadRange), "beyond 39 bits");
        let (mut small, root) = arena();
        small.budget = 2;
        assert_eq!(map_identity(&mut small, root, 3, 0, PAGE, true), Err(MapError::OutOfPages));
    }

    #[test]
    fn entries_and_fault_records() {
        assert_eq!(root_entry(0x1234_5000), (0x1234_5001, 0));
        assert_eq!(context_entry(0xABC_D000, 1, 7), (0xABC_D001, 1 | 7 << 8));
        assert_eq!(devfn(2, 0), 16);
        assert_eq!(FaultRecord::decode(0x5000, 0), None, "F clear: no fault");
        // A read (T = 1) of page 0x7654_3000 by 00:02.0, reason 0x06.
        let f = FaultRecord::decode(0x7654_3210, 1 << 63 | 1 << 62 | 0x06 << 32 | 0x10).unwrap();
        assert_eq!((f.address, f.bdf(), f.write, f.reason_name()), (0x7654_3000, (0, 2, 0), false, "read_not_permitted"));
        let w = FaultRecord::decode(0x1000, 1 << 63 | 0x05 << 32 | 0x10).unwrap();
        assert!(w.write);
    }
}
