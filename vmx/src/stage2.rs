//! Second-stage translation: the guest-physical → host-physical map of one sandbox, in either hardware
//! format: Intel EPT (SDM Vol. 3 §29.3) or AMD nested page tables (APM Vol. 2 §15.25). Pure logic over
//! [`TableMemory`] (host-tested): 4 KiB granularity with optional 2 MiB leaves, read/write/execute
//! permissions and a memory type per mapping, translation, protection changes, and the facts the monitor must
//! be able to check (which host frames a sandbox can reach, which frames hold its tables).
//!
//! Both formats are 4-level radix trees with 2 MiB leaves at level 1; only the entry encoding differs:
//! - EPT: R/W/X in bits 0–2 (no present bit), memory type in bits 3–5, large page bit 7.
//! - NPT: an ordinary long-mode page-table entry: P, R/W, U/S (must be 1: nested walks are user accesses),
//!   PWT/PCD for the memory type, PS bit 7, NX bit 63 (effective only with the host's EFER.NXE).
//!
//! A table is always walked in the format it was created with ([`Format`]); the two never mix.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use questv_arch::paging::TableMemory;

pub const PAGE: u64 = 4096;
pub const LARGE: u64 = 2 << 20;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
const EPT_PERM_MASK: u64 = 0b111;
const EPT_MT_SHIFT: u64 = 3;
const LARGE_BIT: u64 = 1 << 7;
const NPT_PRESENT: u64 = 1 << 0;
const NPT_WRITE: u64 = 1 << 1;
const NPT_USER: u64 = 1 << 2;
const NPT_PWT: u64 = 1 << 3;
const NPT_PCD: u64 = 1 << 4;
const NPT_NX: u64 = 1 << 63;

/// The entry encoding of a second-stage table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Intel extended page tables.
    Ept,
    /// AMD nested page tables.
    Npt,
}
/// Guest-physical addresses the 4-level EPT covers (48 bits).
pub const GPA_LIMIT: u64 = 1 << 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Perms {
    pub const RWX: Perms = Perms { read: true, write: true, exec: true };
    pub const RW: Perms = Perms { read: true, write: true, exec: false };
    pub const RX: Perms = Perms { read: true, write: false, exec: true };
    pub const R: Perms = Perms { read: true, write: false, exec: false };

    fn ept_bits(self) -> u64 {
        u64::from(self.read) | (u64::from(self.write) << 1) | (u64::from(self.exec) << 2)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemType {
    Uncacheable = 0,
    WriteCombining = 1,
    WriteThrough = 4,
    WriteProtected = 5,
    WriteBack = 6,
}

impl MemType {
    fn from_ept_bits(b: u64) -> Option<MemType> {
        Some(match b {
            0 => MemType::Uncacheable,
            1 => MemType::WriteCombining,
            4 => MemType::WriteThrough,
            5 => MemType::WriteProtected,
            6 => MemType::WriteBack,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage2Error {
    OutOfMemory,
    Misaligned { gpa: u64, hpa: u64 },
    OutOfRange { gpa: u64 },
    AlreadyMapped { gpa: u64 },
    SizeConflict { gpa: u64 },
    /// Write-only or write+execute-without-read entries are misconfigurations (SDM §29.3.3.1); nested page
    /// tables cannot express them either (present means readable).
    BadPermissions,
    /// The memory type has no encoding in this format (NPT leaves choose WB, WT or UC through PWT/PCD).
    BadMemType,
    NotMapped { gpa: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub hpa: u64,
    pub perms: Perms,
    pub mem_type: MemType,
    pub page_size: u64,
}

fn index(gpa: u64, level: u32) -> usize {
    ((gpa >> (12 + 9 * level)) & 0x1FF) as usize
}

impl Format {
    fn present(self, e: u64) -> bool {
        match self {
            Format::Ept => e & EPT_PERM_MASK != 0,
            Format::Npt => e & NPT_PRESENT != 0,
        }
    }

    /// A non-leaf entry pointing at `table` (all rights: the leaves decide).
    fn table_entry(self, table: u64) -> u64 {
        match self {
            Format::Ept => table | EPT_PERM_MASK,
            Format::Npt => table | NPT_PRESENT | NPT_WRITE | NPT_USER,
        }
    }

    fn leaf(self, hpa: u64, perms: Perms, mt: MemType, large: bool) -> Result<u64, Stage2Error> {
        let large = if large { LARGE_BIT } else { 0 };
        Ok(match self {
            Format::Ept => hpa | perms.ept_bits() | ((mt as u64) << EPT_MT_SHIFT) | large,
            Format::Npt => {
                if !perms.read {
                    return Err(Stage2Error::BadPermissions);
                }
                let cache = match mt {
                    MemType::WriteBack => 0,
                    MemType::WriteThrough => NPT_PWT,
                    MemType::Uncacheable => NPT_PCD | NPT_PWT,
                    _ => return Err(Stage2Error::BadMemType),
                };
                let w = if perms.write { NPT_WRITE } else { 0 };
                let nx = if perms.exec { 0 } else { NPT_NX };
                hpa | NPT_PRESENT | NPT_USER | w | cache | nx | large
            }
        })
    }

    fn perms(self, e: u64) -> Perms {
        match self {
            Format::Ept => Perms { read: e & 1 != 0, write: e & 2 != 0, exec: e & 4 != 0 },
            Format::Npt => Perms { read: e & NPT_PRESENT != 0, write: e & NPT_WRITE != 0, exec: e & NPT_NX == 0 },
        }
    }

    fn mem_type(self, e: u64) -> Option<MemType> {
        match self {
            Format::Ept => MemType::from_ept_bits((e >> EPT_MT_SHIFT) & 7),
            Format::Npt => Some(match (e & NPT_PCD != 0, e & NPT_PWT != 0) {
                (false, false) => MemType::WriteBack,
                (false, true) => MemType::WriteThrough,
                (true, _) => MemType::Uncacheable,
            }),
        }
    }

    /// `e` with its permissions replaced by `perms`.
    fn with_perms(self, e: u64, perms: Perms) -> u64 {
        match self {
            Format::Ept => (e & !EPT_PERM_MASK) | perms.ept_bits(),
            Format::Npt => {
                let e = (e & !(NPT_WRITE | NPT_NX)) | if perms.write { NPT_WRITE } else { 0 };
                if perms.exec { e } else { e | NPT_NX }
            }
        }
    }
}

/// One sandbox's second-stage table, in the [`Format`] it was created with.
pub struct Stage2 {
    root: u64,
    format: Format,
}

impl Stage2 {
    pub fn new(mem: &mut impl TableMemory, format: Format) -> Result<Stage2, Stage2Error> {
        Ok(Stage2 { root: mem.alloc_table().ok_or(Stage2Error::OutOfMemory)?, format })
    }

    /// Wrap an existing table (to add mappings later, e.g. a channel).
    pub fn from_root(root: u64, format: Format) -> Stage2 {
        Stage2 { root, format }
    }

    pub fn root(&self) -> u64 {
        self.root
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The EPT pointer for the VMCS: write-back paging-structure accesses, 4-level walk, no A/D flags.
    pub fn eptp(&self) -> u64 {
        self.root | (3 << 3) | MemType::WriteBack as u64
    }

    fn present(&self, e: u64) -> bool {
        self.format.present(e)
    }

    fn check(gpa: u64, hpa: u64, align: u64, perms: Perms) -> Result<(), Stage2Error> {
        if gpa % align != 0 || hpa % align != 0 {
            return Err(Stage2Error::Misaligned { gpa, hpa });
        }
        if gpa.checked_add(align).is_none_or(|e| e > GPA_LIMIT) {
            return Err(Stage2Error::OutOfRange { gpa });
        }
        if (perms.write && !perms.read) || perms.ept_bits() == 0 {
            return Err(Stage2Error::BadPermissions);
        }
        Ok(())
    }

    /// Walk to the table at `stop` (0 = PT, 1 = PD), creating intermediate tables (which carry RWX: the
    /// leaves decide).
    fn walk_create(&mut self, mem: &mut impl TableMemory, gpa: u64, stop: u32) -> Result<u64, Stage2Error> {
        let mut table = self.root;
        for level in (stop + 1..=3).rev() {
            let i = index(gpa, level);
            let e = mem.table(table)[i];
            if !self.present(e) {
                let new = mem.alloc_table().ok_or(Stage2Error::OutOfMemory)?;
                mem.table(table)[i] = self.format.table_entry(new);
                table = new;
            } else if e & LARGE_BIT != 0 {
                return Err(Stage2Error::SizeConflict { gpa });
            } else {
                table = e & ADDR_MASK;
            }
        }
        Ok(table)
    }

    pub fn map_4k(&mut self, mem: &mut impl TableMemory, gpa: u64, hpa: u64, perms: Perms, mt: MemType) -> Result<(), Stage2Error> {
        Self::check(gpa, hpa, PAGE, perms)?;
        let entry = self.format.leaf(hpa, perms, mt, false)?;
        let pt = self.walk_create(mem, gpa, 0)?;
        let format = self.format;
        let slot = &mut mem.table(pt)[index(gpa, 0)];
        if format.present(*slot) {
            return Err(Stage2Error::AlreadyMapped { gpa });
        }
        *slot = entry;
        Ok(())
    }

    pub fn map_2m(&mut self, mem: &mut impl TableMemory, gpa: u64, hpa: u64, perms: Perms, mt: MemType) -> Result<(), Stage2Error> {
        Self::check(gpa, hpa, LARGE, perms)?;
        let entry = self.format.leaf(hpa, perms, mt, true)?;
        let pd = self.walk_create(mem, gpa, 1)?;
        let format = self.format;
        let slot = &mut mem.table(pd)[index(gpa, 1)];
        if format.present(*slot) {
            return Err(if *slot & LARGE_BIT != 0 { Stage2Error::AlreadyMapped { gpa } } else { Stage2Error::SizeConflict { gpa } });
        }
        *slot = entry;
        Ok(())
    }

    /// Map `[gpa, gpa+len)` → `[hpa, hpa+len)` (len rounded up to 4 KiB), with 2 MiB leaves where both sides
    /// are aligned and `allow_large`.
    pub fn map_range(&mut self, mem: &mut impl TableMemory, gpa: u64, hpa: u64, len: u64, perms: Perms, mt: MemType, allow_large: bool) -> Result<(), Stage2Error> {
        let end = gpa.checked_add(len.div_ceil(PAGE) * PAGE).ok_or(Stage2Error::OutOfRange { gpa })?;
        let (mut g, mut h) = (gpa, hpa);
        while g < end {
            if allow_large && g % LARGE == 0 && h % LARGE == 0 && end - g >= LARGE {
                self.map_2m(mem, g, h, perms, mt)?;
                g += LARGE;
                h += LARGE;
            } else {
                self.map_4k(mem, g, h, perms, mt)?;
                g += PAGE;
                h += PAGE;
            }
        }
        Ok(())
    }

    /// The leaf entry for a 4 KiB-mapped `gpa`.
    fn leaf_4k<'m, M: TableMemory>(&self, mem: &'m mut M, gpa: u64) -> Option<&'m mut u64> {
        let mut table = self.root;
        for level in (1..=3).rev() {
            let e = mem.table(table)[index(gpa, level)];
            if !self.present(e) || e & LARGE_BIT != 0 {
                return None;
            }
            table = e & ADDR_MASK;
        }
        Some(&mut mem.table(table)[index(gpa, 0)])
    }

    /// Change the permissions of a 4 KiB mapping (e.g. the sandbox's kernel text read-only).
    pub fn protect(&mut self, mem: &mut impl TableMemory, gpa: u64, perms: Perms) -> Result<(), Stage2Error> {
        Self::check(gpa & !(PAGE - 1), 0, PAGE, perms)?;
        let format = self.format;
        let e = self.leaf_4k(mem, gpa).filter(|e| format.present(**e)).ok_or(Stage2Error::NotMapped { gpa })?;
        *e = format.with_perms(*e, perms);
        Ok(())
    }

    /// Remove a 4 KiB mapping; returns the host frame.
    pub fn unmap_4k(&mut self, mem: &mut impl TableMemory, gpa: u64) -> Option<u64> {
        let format = self.format;
        let e = self.leaf_4k(mem, gpa).filter(|e| format.present(**e))?;
        let hpa = *e & ADDR_MASK;
        *e = 0;
        Some(hpa)
    }

    pub fn translate(&self, mem: &mut impl TableMemory, gpa: u64) -> Option<Mapping> {
        if gpa >= GPA_LIMIT {
            return None;
        }
        let mut table = self.root;
        for level in (0..=3).rev() {
            let e = mem.table(table)[index(gpa, level)];
            if !self.present(e) {
                return None;
            }
            if level == 0 || (level == 1 && e & LARGE_BIT != 0) {
                let size = 1u64 << (12 + 9 * level);
                return Some(Mapping {
                    hpa: (e & ADDR_MASK & !(size - 1)) + (gpa & (size - 1)),
                    perms: self.format.perms(e),
                    mem_type: self.format.mem_type(e)?,
                    page_size: size,
                });
            }
            table = e & ADDR_MASK;
        }
        None
    }

    /// Visit every leaf: `(gpa, hpa, size)`; and every table frame (root included).
    fn walk(&self, mem: &mut impl TableMemory, leaf: &mut impl FnMut(u64, u64, u64), table: &mut impl FnMut(u64)) {
        fn visit(f: Format, mem: &mut impl TableMemory, t: u64, level: u32, base: u64, leaf: &mut impl FnMut(u64, u64, u64), table: &mut impl FnMut(u64)) {
            table(t);
            let entries = *mem.table(t);
            for (i, &e) in entries.iter().enumerate() {
                if !f.present(e) {
                    continue;
                }
                let gpa = base | ((i as u64) << (12 + 9 * level));
                if level == 0 || (level == 1 && e & LARGE_BIT != 0) {
                    leaf(gpa, e & ADDR_MASK, 1 << (12 + 9 * level));
                } else {
                    visit(f, mem, e & ADDR_MASK, level - 1, gpa, leaf, table);
                }
            }
        }
        visit(self.format, mem, self.root, 3, 0, leaf, table);
    }

    /// Host-physical ranges `(start, end)` the sandbox can reach, merged and sorted.
    pub fn host_ranges(&self, mem: &mut impl TableMemory) -> Vec<(u64, u64)> {
        let mut r: Vec<(u64, u64)> = Vec::new();
        self.walk(mem, &mut |_, hpa, size| r.push((hpa, hpa + size)), &mut |_| {});
        r.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (s, e) in r {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        merged
    }

    /// Frames holding this EPT's tables (which no EPT may map).
    pub fn table_frames(&self, mem: &mut impl TableMemory) -> Vec<u64> {
        let mut v = Vec::new();
        self.walk(mem, &mut |_, _, _| {}, &mut |t| v.push(t));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct VecMem {
        tables: Vec<[u64; 512]>,
        base: u64,
        limit: usize,
    }
    impl TableMemory for VecMem {
        fn alloc_table(&mut self) -> Option<u64> {
            if self.tables.len() == self.limit {
                return None;
            }
            self.tables.push([0; 512]);
            Some(self.base + (self.tables.len() as u64 - 1) * PAGE)
        }
        fn table(&mut self, pa: u64) -> &mut [u64; 512] {
            &mut self.tables[((pa - self.base) / PAGE) as usize]
        }
    }
    fn mem(base: u64) -> VecMem {
        VecMem { tables: Vec::new(), base, limit: 4096 }
    }

    #[test]
    fn maps_translates_and_encodes() {
        let mut m = mem(0x7000_0000);
        let mut e = Stage2::new(&mut m, Format::Ept).unwrap();
        e.map_4k(&mut m, 0x1000, 0x4000_1000, Perms::RX, MemType::WriteBack).unwrap();
        let t = e.translate(&mut m, 0x1234).unwrap();
        assert_eq!((t.hpa, t.perms, t.mem_type, t.page_size), (0x4000_1234, Perms::RX, MemType::WriteBack, PAGE));
        assert!(e.translate(&mut m, 0x2000).is_none());
        // Leaf encoding: R|X, memory type 6 in bits 3-5.
        let pt = m.tables.len() - 1;
        assert_eq!(m.tables[pt][1], 0x4000_1000 | 0b101 | (6 << 3));
        // EPTP: root, 4-level walk (3 << 3), write-back (6).
        assert_eq!(e.eptp(), e.root() | 0x1E);
    }

    #[test]
    fn ranges_use_large_pages_only_when_allowed_and_aligned() {
        let mut m = mem(0x7000_0000);
        let mut e = Stage2::new(&mut m, Format::Ept).unwrap();
        e.map_range(&mut m, 0, 0x1000_0000, 6 << 20, Perms::RWX, MemType::WriteBack, true).unwrap();
        assert_eq!(e.translate(&mut m, 0x30_0000).unwrap().page_size, LARGE);
        assert_eq!(e.translate(&mut m, 0x30_0000).unwrap().hpa, 0x1030_0000);
        let mut e2 = Stage2::new(&mut m, Format::Ept).unwrap();
        e2.map_range(&mut m, 0x1000, 0x2000_1000, 3 << 20, Perms::RW, MemType::Uncacheable, true).unwrap();
        assert_eq!(e2.translate(&mut m, 0x20_0000).unwrap().page_size, PAGE, "misaligned start: no 2 MiB leaves");
        let mut e3 = Stage2::new(&mut m, Format::Ept).unwrap();
        e3.map_range(&mut m, 0, 0, 4 << 20, Perms::RW, MemType::WriteBack, false).unwrap();
        assert_eq!(e3.translate(&mut m, 0x20_0000).unwrap().page_size, PAGE);
    }

    #[test]
    fn permissions_protect_and_unmap() {
        let mut m = mem(0x7000_0000);
        let mut e = Stage2::new(&mut m, Format::Ept).unwrap();
        e.map_range(&mut m, 0x10_0000, 0x5010_0000, 0x4000, Perms::RWX, MemType::WriteBack, false).unwrap();
        e.protect(&mut m, 0x10_1000, Perms::RX).unwrap();
        assert_eq!(e.translate(&mut m, 0x10_1000).unwrap().perms, Perms::RX);
        assert_eq!(e.translate(&mut m, 0x10_2000).unwrap().perms, Perms::RWX);
        assert_eq!(e.protect(&mut m, 0x20_0000, Perms::R), Err(Stage2Error::NotMapped { gpa: 0x20_0000 }));
        assert_eq!(e.unmap_4k(&mut m, 0x10_3000), Some(0x5010_3000));
        assert!(e.translate(&mut m, 0x10_3000).is_none());
        // Misconfigurations are refused.
        let w_only = Perms { read: false, write: true, exec: false };
        assert_eq!(e.map_4k(&mut m, 0x9000, 0x9000, w_only, MemType::WriteBack), Err(Stage2Error::BadPermissions));
        let none = Perms { read: false, write: false, exec: false };
        assert_eq!(e.map_4k(&mut m, 0x9000, 0x9000, none, MemType::WriteBack), Err(Stage2Error::BadPermissions));
    }

    #[test]
    fn errors() {
        let mut m = mem(0x7000_0000);
        let mut e = Stage2::new(&mut m, Format::Ept).unwrap();
        assert_eq!(e.map_4k(&mut m, 0x1001, 0, Perms::R, MemType::WriteBack), Err(Stage2Error::Misaligned { gpa: 0x1001, hpa: 0 }));
        assert_eq!(e.map_4k(&mut m, GPA_LIMIT, 0, Perms::R, MemType::WriteBack), Err(Stage2Error::OutOfRange { gpa: GPA_LIMIT }));
        e.map_4k(&mut m, 0x20_0000, 0, Perms::R, MemType::WriteBack).unwrap();
        assert_eq!(e.map_4k(&mut m, 0x20_0000, 0, Perms::R, MemType::WriteBack), Err(Stage2Error::AlreadyMapped { gpa: 0x20_0000 }));
        assert_eq!(e.map_2m(&mut m, 0x20_0000, 0, Perms::R, MemType::WriteBack), Err(Stage2Error::SizeConflict { gpa: 0x20_0000 }));
        let mut small = VecMem { tables: Vec::new(), base: 0x7000_0000, limit: 2 };
        let mut e = Stage2::new(&mut small, Format::Ept).unwrap();
        assert_eq!(e.map_4k(&mut small, 0, 0, Perms::R, MemType::WriteBack), Err(Stage2Error::OutOfMemory));
    }

    #[test]
    fn sandboxes_are_disjoint_and_tables_unreachable() {
        // Four sandboxes, 64 MiB each, from one table arena: no host range shared, no table frame mapped.
        let mut m = mem(0x100_0000);
        let slice = 64 << 20;
        let epts: Vec<Stage2> = (0..4u64)
            .map(|i| {
                let mut e = Stage2::new(&mut m, Format::Ept).unwrap();
                e.map_range(&mut m, 0, 0x1000_0000 + i * slice, slice, Perms::RWX, MemType::WriteBack, false).unwrap();
                e
            })
            .collect();
        let ranges: Vec<Vec<(u64, u64)>> = epts.iter().map(|e| e.host_ranges(&mut m)).collect();
        for (i, r) in ranges.iter().enumerate() {
            assert_eq!(r, &vec![(0x1000_0000 + i as u64 * slice, 0x1000_0000 + (i as u64 + 1) * slice)]);
        }
        for i in 0..4 {
            for j in 0..4 {
                if i != j {
                    for a in &ranges[i] {
                        for b in &ranges[j] {
                            assert!(a.1 <= b.0 || b.1 <= a.0, "sandboxes {i} and {j} overlap");
                        }
                    }
                }
            }
        }
        let tables: Vec<u64> = epts.iter().flat_map(|e| e.table_frames(&mut m)).collect();
        assert_eq!(tables.len(), 4 * (1 + 1 + 1 + 32), "root, PDPT, PD, 32 PTs per 64 MiB sandbox");
        for r in &ranges {
            for &t in &tables {
                assert!(r.iter().all(|&(s, e)| t < s || t >= e), "table frame 0x{t:x} reachable");
            }
        }
    }

    #[test]
    fn nested_page_table_entries() {
        let mut m = mem(0x7000_0000);
        let mut n = Stage2::new(&mut m, Format::Npt).unwrap();
        n.map_4k(&mut m, 0x1000, 0x4000_1000, Perms::RX, MemType::WriteBack).unwrap();
        n.map_4k(&mut m, 0xFEE0_0000, 0xFEE0_0000, Perms::R, MemType::Uncacheable).unwrap();
        n.map_range(&mut m, 0x20_0000, 0x5000_0000, 2 << 20, Perms::RWX, MemType::WriteBack, true).unwrap();
        // Intermediate entries: P | RW | US.
        assert_eq!(m.tables[0][0] & 0xFFF, 0b111);
        // Leaves: P | US, no RW for read-only, NX unless executable, PCD|PWT for uncached, PS for 2 MiB.
        let t = n.translate(&mut m, 0x1234).unwrap();
        assert_eq!((t.hpa, t.perms, t.mem_type), (0x4000_1234, Perms::RX, MemType::WriteBack));
        assert!(m.tables.iter().any(|t| t[1] == 0x4000_1000 | 0b101), "RX leaf: P | US, no RW, no NX");
        let apic = n.translate(&mut m, 0xFEE0_0300).unwrap();
        assert_eq!((apic.perms, apic.mem_type), (Perms::R, MemType::Uncacheable));
        let big = n.translate(&mut m, 0x30_0000).unwrap();
        assert_eq!((big.page_size, big.perms, big.hpa), (LARGE, Perms::RWX, 0x5010_0000));
        n.protect(&mut m, 0x1000, Perms::R).unwrap();
        assert_eq!(n.translate(&mut m, 0x1000).unwrap().perms, Perms::R);
        n.protect(&mut m, 0x1000, Perms::RWX).unwrap();
        assert_eq!(n.translate(&mut m, 0x1000).unwrap().perms, Perms::RWX);
        assert_eq!(n.map_4k(&mut m, 0x9000, 0, Perms::R, MemType::WriteCombining), Err(Stage2Error::BadMemType));
        assert_eq!(n.host_ranges(&mut m).len(), 3);
    }
}
