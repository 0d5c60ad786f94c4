//! Extended page tables (Intel SDM Vol. 3 §29.3): the guest-physical → host-physical map of one sandbox.
//! Pure logic over [`TableMemory`] (host-tested): 4 KiB granularity with optional 2 MiB leaves, read/write/
//! execute permissions and a memory type per mapping, translation, protection changes, and the facts the
//! monitor must be able to check (which host frames a sandbox can reach, which frames hold its tables).
//!
//! The entry layout differs from ordinary page tables (R/W/X in bits 0–2, memory type in bits 3–5, no
//! present bit), so this is a separate walker rather than a mode of `arch::paging`.

use alloc::vec::Vec;
use questv_arch::paging::TableMemory;

pub const PAGE: u64 = 4096;
pub const LARGE: u64 = 2 << 20;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
const PERM_MASK: u64 = 0b111;
const MT_SHIFT: u64 = 3;
const LARGE_BIT: u64 = 1 << 7;
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

    fn bits(self) -> u64 {
        u64::from(self.read) | (u64::from(self.write) << 1) | (u64::from(self.exec) << 2)
    }
    fn from_bits(b: u64) -> Perms {
        Perms { read: b & 1 != 0, write: b & 2 != 0, exec: b & 4 != 0 }
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
    fn from_bits(b: u64) -> Option<MemType> {
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
pub enum EptError {
    OutOfMemory,
    Misaligned { gpa: u64, hpa: u64 },
    OutOfRange { gpa: u64 },
    AlreadyMapped { gpa: u64 },
    SizeConflict { gpa: u64 },
    /// Write-only or write+execute-without-read entries are misconfigurations (SDM §29.3.3.1).
    BadPermissions,
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

fn present(e: u64) -> bool {
    e & PERM_MASK != 0
}

pub struct Ept {
    root: u64,
}

impl Ept {
    pub fn new(mem: &mut impl TableMemory) -> Result<Ept, EptError> {
        Ok(Ept { root: mem.alloc_table().ok_or(EptError::OutOfMemory)? })
    }

    /// Wrap an existing EPT (to add mappings later, e.g. a channel).
    pub fn from_root(root: u64) -> Ept {
        Ept { root }
    }

    pub fn root(&self) -> u64 {
        self.root
    }

    /// The EPT pointer for the VMCS: write-back paging-structure accesses, 4-level walk, no A/D flags.
    pub fn eptp(&self) -> u64 {
        self.root | (3 << 3) | MemType::WriteBack as u64
    }

    fn check(gpa: u64, hpa: u64, align: u64, perms: Perms) -> Result<(), EptError> {
        if gpa % align != 0 || hpa % align != 0 {
            return Err(EptError::Misaligned { gpa, hpa });
        }
        if gpa.checked_add(align).is_none_or(|e| e > GPA_LIMIT) {
            return Err(EptError::OutOfRange { gpa });
        }
        if (perms.write && !perms.read) || perms.bits() == 0 {
            return Err(EptError::BadPermissions);
        }
        Ok(())
    }

    /// Walk to the table at `stop` (0 = PT, 1 = PD), creating intermediate tables (which carry RWX: the
    /// leaves decide).
    fn walk_create(&mut self, mem: &mut impl TableMemory, gpa: u64, stop: u32) -> Result<u64, EptError> {
        let mut table = self.root;
        for level in (stop + 1..=3).rev() {
            let i = index(gpa, level);
            let e = mem.table(table)[i];
            if !present(e) {
                let new = mem.alloc_table().ok_or(EptError::OutOfMemory)?;
                mem.table(table)[i] = new | PERM_MASK;
                table = new;
            } else if e & LARGE_BIT != 0 {
                return Err(EptError::SizeConflict { gpa });
            } else {
                table = e & ADDR_MASK;
            }
        }
        Ok(table)
    }

    pub fn map_4k(&mut self, mem: &mut impl TableMemory, gpa: u64, hpa: u64, perms: Perms, mt: MemType) -> Result<(), EptError> {
        Self::check(gpa, hpa, PAGE, perms)?;
        let pt = self.walk_create(mem, gpa, 0)?;
        let slot = &mut mem.table(pt)[index(gpa, 0)];
        if present(*slot) {
            return Err(EptError::AlreadyMapped { gpa });
        }
        *slot = hpa | perms.bits() | ((mt as u64) << MT_SHIFT);
        Ok(())
    }

    pub fn map_2m(&mut self, mem: &mut impl TableMemory, gpa: u64, hpa: u64, perms: Perms, mt: MemType) -> Result<(), EptError> {
        Self::check(gpa, hpa, LARGE, perms)?;
        let pd = self.walk_create(mem, gpa, 1)?;
        let slot = &mut mem.table(pd)[index(gpa, 1)];
        if present(*slot) {
            return Err(if *slot & LARGE_BIT != 0 { EptError::AlreadyMapped { gpa } } else { EptError::SizeConflict { gpa } });
        }
        *slot = hpa | perms.bits() | ((mt as u64) << MT_SHIFT) | LARGE_BIT;
        Ok(())
    }

    /// Map `[gpa, gpa+len)` → `[hpa, hpa+len)` (len rounded up to 4 KiB), with 2 MiB leaves where both sides
    /// are aligned and `allow_large`.
    pub fn map_range(&mut self, mem: &mut impl TableMemory, gpa: u64, hpa: u64, len: u64, perms: Perms, mt: MemType, allow_large: bool) -> Result<(), EptError> {
        let end = gpa.checked_add(len.div_ceil(PAGE) * PAGE).ok_or(EptError::OutOfRange { gpa })?;
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
            if !present(e) || e & LARGE_BIT != 0 {
                return None;
            }
            table = e & ADDR_MASK;
        }
        Some(&mut mem.table(table)[index(gpa, 0)])
    }

    /// Change the permissions of a 4 KiB mapping (e.g. the sandbox's kernel text read-only).
    pub fn protect(&mut self, mem: &mut impl TableMemory, gpa: u64, perms: Perms) -> Result<(), EptError> {
        Self::check(gpa & !(PAGE - 1), 0, PAGE, perms)?;
        let e = self.leaf_4k(mem, gpa).filter(|e| present(**e)).ok_or(EptError::NotMapped { gpa })?;
        *e = (*e & !PERM_MASK) | perms.bits();
        Ok(())
    }

    /// Remove a 4 KiB mapping; returns the host frame.
    pub fn unmap_4k(&mut self, mem: &mut impl TableMemory, gpa: u64) -> Option<u64> {
        let e = self.leaf_4k(mem, gpa).filter(|e| present(**e))?;
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
            if !present(e) {
                return None;
            }
            if level == 0 || (level == 1 && e & LARGE_BIT != 0) {
                let size = 1u64 << (12 + 9 * level);
                return Some(Mapping {
                    hpa: (e & ADDR_MASK & !(size - 1)) + (gpa & (size - 1)),
                    perms: Perms::from_bits(e),
                    mem_type: MemType::from_bits((e >> MT_SHIFT) & 7)?,
                    page_size: size,
                });
            }
            table = e & ADDR_MASK;
        }
        None
    }

    /// Visit every leaf: `(gpa, hpa, size)`; and every table frame (root included).
    fn walk(&self, mem: &mut impl TableMemory, leaf: &mut impl FnMut(u64, u64, u64), table: &mut impl FnMut(u64)) {
        fn visit(mem: &mut impl TableMemory, t: u64, level: u32, base: u64, leaf: &mut impl FnMut(u64, u64, u64), table: &mut impl FnMut(u64)) {
            table(t);
            let entries = *mem.table(t);
            for (i, &e) in entries.iter().enumerate() {
                if !present(e) {
                    continue;
                }
                let gpa = base | ((i as u64) << (12 + 9 * level));
                if level == 0 || (level == 1 && e & LARGE_BIT != 0) {
                    leaf(gpa, e & ADDR_MASK, 1 << (12 + 9 * level));
                } else {
                    visit(mem, e & ADDR_MASK, level - 1, gpa, leaf, table);
                }
            }
        }
        visit(mem, self.root, 3, 0, leaf, table);
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
        let mut e = Ept::new(&mut m).unwrap();
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
        let mut e = Ept::new(&mut m).unwrap();
        e.map_range(&mut m, 0, 0x1000_0000, 6 << 20, Perms::RWX, MemType::WriteBack, true).unwrap();
        assert_eq!(e.translate(&mut m, 0x30_0000).unwrap().page_size, LARGE);
        assert_eq!(e.translate(&mut m, 0x30_0000).unwrap().hpa, 0x1030_0000);
        let mut e2 = Ept::new(&mut m).unwrap();
        e2.map_range(&mut m, 0x1000, 0x2000_1000, 3 << 20, Perms::RW, MemType::Uncacheable, true).unwrap();
        assert_eq!(e2.translate(&mut m, 0x20_0000).unwrap().page_size, PAGE, "misaligned start: no 2 MiB leaves");
        let mut e3 = Ept::new(&mut m).unwrap();
        e3.map_range(&mut m, 0, 0, 4 << 20, Perms::RW, MemType::WriteBack, false).unwrap();
        assert_eq!(e3.translate(&mut m, 0x20_0000).unwrap().page_size, PAGE);
    }

    #[test]
    fn permissions_protect_and_unmap() {
        let mut m = mem(0x7000_0000);
        let mut e = Ept::new(&mut m).unwrap();
        e.map_range(&mut m, 0x10_0000, 0x5010_0000, 0x4000, Perms::RWX, MemType::WriteBack, false).unwrap();
        e.protect(&mut m, 0x10_1000, Perms::RX).unwrap();
        assert_eq!(e.translate(&mut m, 0x10_1000).unwrap().perms, Perms::RX);
        assert_eq!(e.translate(&mut m, 0x10_2000).unwrap().perms, Perms::RWX);
        assert_eq!(e.protect(&mut m, 0x20_0000, Perms::R), Err(EptError::NotMapped { gpa: 0x20_0000 }));
        assert_eq!(e.unmap_4k(&mut m, 0x10_3000), Some(0x5010_3000));
        assert!(e.translate(&mut m, 0x10_3000).is_none());
        // Misconfigurations are refused.
        let w_only = Perms { read: false, write: true, exec: false };
        assert_eq!(e.map_4k(&mut m, 0x9000, 0x9000, w_only, MemType::WriteBack), Err(EptError::BadPermissions));
        let none = Perms { read: false, write: false, exec: false };
        assert_eq!(e.map_4k(&mut m, 0x9000, 0x9000, none, MemType::WriteBack), Err(EptError::BadPermissions));
    }

    #[test]
    fn errors() {
        let mut m = mem(0x7000_0000);
        let mut e = Ept::new(&mut m).unwrap();
        assert_eq!(e.map_4k(&mut m, 0x1001, 0, Perms::R, MemType::WriteBack), Err(EptError::Misaligned { gpa: 0x1001, hpa: 0 }));
        assert_eq!(e.map_4k(&mut m, GPA_LIMIT, 0, Perms::R, MemType::WriteBack), Err(EptError::OutOfRange { gpa: GPA_LIMIT }));
        e.map_4k(&mut m, 0x20_0000, 0, Perms::R, MemType::WriteBack).unwrap();
        assert_eq!(e.map_4k(&mut m, 0x20_0000, 0, Perms::R, MemType::WriteBack), Err(EptError::AlreadyMapped { gpa: 0x20_0000 }));
        assert_eq!(e.map_2m(&mut m, 0x20_0000, 0, Perms::R, MemType::WriteBack), Err(EptError::SizeConflict { gpa: 0x20_0000 }));
        let mut small = VecMem { tables: Vec::new(), base: 0x7000_0000, limit: 2 };
        let mut e = Ept::new(&mut small).unwrap();
        assert_eq!(e.map_4k(&mut small, 0, 0, Perms::R, MemType::WriteBack), Err(EptError::OutOfMemory));
    }

    #[test]
    fn sandboxes_are_disjoint_and_tables_unreachable() {
        // Four sandboxes, 64 MiB each, from one table arena: no host range shared, no table frame mapped.
        let mut m = mem(0x100_0000);
        let slice = 64 << 20;
        let epts: Vec<Ept> = (0..4u64)
            .map(|i| {
                let mut e = Ept::new(&mut m).unwrap();
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
}
