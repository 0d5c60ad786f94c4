//! 4-level x86_64 page-table builder. Pure logic: the tables live in memory reached through
//! [`TableMemory`], which the kernel implements over its mapping of physical memory ([`KERNEL_BASE`]) and the host tests
//! implement over a `Vec`. Supports 4 KiB and 2 MiB leaves, mapping, unmapping and translation.
#![forbid(unsafe_code)]

use bitflags::bitflags;

pub const PAGE_SIZE: u64 = 4096;
pub const LARGE_PAGE_SIZE: u64 = 2 * 1024 * 1024;
/// Physical-address bits of a page-table entry.
pub const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// Where the kernel sees physical memory: physical address `p` is at virtual `KERNEL_BASE + p`, in PML4 slot
/// [`KERNEL_SLOT`] (the first slot of the upper half: 512 GiB of physical memory). The kernel image is linked
/// there too (kernel/image/linker.ld), so one offset converts both ways. The lower half is user space.
pub const KERNEL_BASE: u64 = 0xFFFF_8000_0000_0000;
/// The PML4 slot of [`KERNEL_BASE`], shared by the kernel's tables and every user address space.
pub const KERNEL_SLOT: usize = 256;
/// How much physical memory the kernel's slot can reach.
pub const KERNEL_SLOT_BYTES: u64 = 1 << 39;

/// The kernel's virtual address of physical address `pa`.
pub const fn phys_to_virt(pa: u64) -> u64 {
    KERNEL_BASE + pa
}

/// The physical address behind a kernel virtual address (the image, the heap, a frame: all of the kernel's
/// memory is in its slot). Panics on an address outside it, which would be a user or a wild address.
pub fn virt_to_phys(va: u64) -> u64 {
    assert!(
        (KERNEL_BASE..KERNEL_BASE + KERNEL_SLOT_BYTES).contains(&va),
        "virt_to_phys of 0x{va:x}, outside the kernel's mapping of physical memory"
    );
    va - KERNEL_BASE
}

bitflags! {
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct PageFlags: u64 {
        const PRESENT = 1;
        const WRITABLE = 1 << 1;
        const USER = 1 << 2;
        const WRITE_THROUGH = 1 << 3;
        const NO_CACHE = 1 << 4;
        const ACCESSED = 1 << 5;
        const DIRTY = 1 << 6;
        const HUGE = 1 << 7;
        const GLOBAL = 1 << 8;
        /// Software bit: page is shared copy-on-write (used by fork).
        const COW = 1 << 9;
        const NO_EXECUTE = 1 << 63;
    }
}

/// Where page tables live. `alloc_table` returns the physical address of a zeroed 4 KiB frame.
pub trait TableMemory {
    fn alloc_table(&mut self) -> Option<u64>;
    fn table(&mut self, phys: u64) -> &mut [u64; 512];
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum MapError {
    OutOfMemory,
    Misaligned { va: u64, pa: u64 },
    NonCanonical { va: u64 },
    AlreadyMapped { va: u64 },
    /// A 4 KiB mapping was requested inside an existing 2 MiB page, or vice versa.
    SizeConflict { va: u64 },
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Translation {
    pub phys: u64,
    pub flags: PageFlags,
    pub page_size: u64,
}

fn canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1_FFFF
}

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * level)) & 0x1FF) as usize
}

/// Flags given to intermediate tables: permissions are enforced at the leaves.
const TABLE_FLAGS: u64 = PageFlags::PRESENT.bits() | PageFlags::WRITABLE.bits() | PageFlags::USER.bits();

pub struct AddressSpace {
    root: u64,
    /// Every table this builder made below the root: (the level it translates — 2 a PDPT, 1 a PD, 0 a page
    /// table —, the first address it covers, its frame). A walk visits these instead of scanning all 512
    /// entries of every level down to them (a fork and an exit walk a small process's tables once each). None
    /// for a wrapped PML4, whose tables are found by scanning.
    tables: Option<alloc::vec::Vec<(u8, u64, u64)>>,
}

impl AddressSpace {
    pub fn new(mem: &mut impl TableMemory) -> Result<AddressSpace, MapError> {
        Ok(AddressSpace { root: mem.alloc_table().ok_or(MapError::OutOfMemory)?, tables: Some(alloc::vec::Vec::new()) })
    }

    /// Wrap an existing PML4.
    pub fn from_root(root: u64) -> AddressSpace {
        AddressSpace { root, tables: None }
    }

    pub fn root(&self) -> u64 {
        self.root
    }

    /// Walk down to the table at `stop_level` (0 = PT, 1 = PD) for `va`, creating tables as needed.
    fn walk_create(&mut self, mem: &mut impl TableMemory, va: u64, stop_level: u32) -> Result<u64, MapError> {
        let mut table = self.root;
        for level in (stop_level + 1..=3).rev() {
            let i = index(va, level);
            let entry = mem.table(table)[i];
            if entry & PageFlags::PRESENT.bits() == 0 {
                let new = mem.alloc_table().ok_or(MapError::OutOfMemory)?;
                mem.table(table)[i] = new | TABLE_FLAGS;
                if let Some(list) = self.tables.as_mut() {
                    // The new table translates level - 1 and covers 512 entries of that level's size.
                    let span = 1u64 << (12 + 9 * level);
                    list.push(((level - 1) as u8, va & !(span - 1) & 0x0000_FFFF_FFFF_FFFF, new));
                }
                table = new;
            } else if entry & PageFlags::HUGE.bits() != 0 {
                return Err(MapError::SizeConflict { va });
            } else {
                table = entry & ADDR_MASK;
            }
        }
        Ok(table)
    }

    pub fn map_4k(&mut self, mem: &mut impl TableMemory, va: u64, pa: u64, flags: PageFlags) -> Result<(), MapError> {
        if !canonical(va) {
            return Err(MapError::NonCanonical { va });
        }
        if va % PAGE_SIZE != 0 || pa % PAGE_SIZE != 0 {
            return Err(MapError::Misaligned { va, pa });
        }
        let pt = self.walk_create(mem, va, 0)?;
        let slot = &mut mem.table(pt)[index(va, 0)];
        if *slot & PageFlags::PRESENT.bits() != 0 {
            return Err(MapError::AlreadyMapped { va });
        }
        *slot = pa | (flags - PageFlags::HUGE).bits() | PageFlags::PRESENT.bits();
        Ok(())
    }

    pub fn map_2m(&mut self, mem: &mut impl TableMemory, va: u64, pa: u64, flags: PageFlags) -> Result<(), MapError> {
        if !canonical(va) {
            return Err(MapError::NonCanonical { va });
        }
        if va % LARGE_PAGE_SIZE != 0 || pa % LARGE_PAGE_SIZE != 0 {
            return Err(MapError::Misaligned { va, pa });
        }
        let pd = self.walk_create(mem, va, 1)?;
        let slot = &mut mem.table(pd)[index(va, 1)];
        if *slot & PageFlags::PRESENT.bits() != 0 {
            return Err(if *slot & PageFlags::HUGE.bits() != 0 {
                MapError::AlreadyMapped { va }
            } else {
                MapError::SizeConflict { va }
            });
        }
        *slot = pa | flags.bits() | (PageFlags::PRESENT | PageFlags::HUGE).bits();
        Ok(())
    }

    /// Map `[va, va+len)` to `[pa, pa+len)`, using 2 MiB pages where both sides are aligned and 4 KiB pages
    /// elsewhere. `len` is rounded up to a page.
    pub fn map_range(&mut self, mem: &mut impl TableMemory, va: u64, pa: u64, len: u64, flags: PageFlags) -> Result<(), MapError> {
        let end = va.checked_add(len.div_ceil(PAGE_SIZE) * PAGE_SIZE).ok_or(MapError::NonCanonical { va })?;
        let (mut v, mut p) = (va, pa);
        while v < end {
            if v % LARGE_PAGE_SIZE == 0 && p % LARGE_PAGE_SIZE == 0 && end - v >= LARGE_PAGE_SIZE {
                self.map_2m(mem, v, p, flags)?;
                v += LARGE_PAGE_SIZE;
                p += LARGE_PAGE_SIZE;
            } else {
                self.map_4k(mem, v, p, flags)?;
                v += PAGE_SIZE;
                p += PAGE_SIZE;
            }
        }
        Ok(())
    }

    /// Remove the 4 KiB mapping of `va`; returns the physical frame it mapped.
    pub fn unmap_4k(&mut self, mem: &mut impl TableMemory, va: u64) -> Option<u64> {
        let slot = self.leaf_mut(mem, va).filter(|e| **e & PageFlags::PRESENT.bits() != 0)?;
        let pa = *slot & ADDR_MASK;
        *slot = 0;
        Some(pa)
    }

    pub fn translate(&self, mem: &mut impl TableMemory, va: u64) -> Option<Translation> {
        if !canonical(va) {
            return None;
        }
        let mut table = self.root;
        for level in (0..=3).rev() {
            let entry = mem.table(table)[index(va, level)];
            if entry & PageFlags::PRESENT.bits() == 0 {
                return None;
            }
            let is_leaf = level == 0 || (entry & PageFlags::HUGE.bits() != 0 && level <= 2);
            if is_leaf {
                let page_size = 1u64 << (12 + 9 * level);
                let base = entry & ADDR_MASK & !(page_size - 1);
                let mut flags = PageFlags::from_bits_truncate(entry & !ADDR_MASK);
                if level > 0 {
                    flags -= PageFlags::HUGE;
                }
                return Some(Translation { phys: base + (va & (page_size - 1)), flags, page_size });
            }
            table = entry & ADDR_MASK;
        }
        None
    }

    /// The 4 KiB leaf entry mapping `va`, if the tables down to it exist (the entry may be non-present).
    pub fn leaf_mut<'m, M: TableMemory>(&self, mem: &'m mut M, va: u64) -> Option<&'m mut u64> {
        if !canonical(va) {
            return None;
        }
        let mut table = self.root;
        for level in (1..=3).rev() {
            let entry = mem.table(table)[index(va, level)];
            if entry & PageFlags::PRESENT.bits() == 0 || entry & PageFlags::HUGE.bits() != 0 {
                return None;
            }
            table = entry & ADDR_MASK;
        }
        Some(&mut mem.table(table)[index(va, 0)])
    }

    /// Walk the tables under the PML4 slots `pml4_slots`: `leaf(va, entry)` for every present 4 KiB leaf, then
    /// `table(frame)` for every table below the root, children before parents. 2 MiB leaves are skipped (user
    /// address spaces use 4 KiB pages only).
    /// Visit the tables under the PML4 slots `pml4_slots`: `leaf(mem, va, entry)` for every present 4 KiB leaf,
    /// then `table(mem, frame)` for every table below the root, children before parents (so `table` may free
    /// the frame: it is not read again).
    pub fn walk<M: TableMemory>(&self, mem: &mut M, pml4_slots: core::ops::Range<usize>, leaf: &mut impl FnMut(&mut M, u64, u64), table: &mut impl FnMut(&mut M, u64)) {
        if let Some(list) = &self.tables {
            return Self::walk_listed(list, mem, pml4_slots, leaf, table);
        }
        let p = PageFlags::PRESENT.bits();
        let h = PageFlags::HUGE.bits();
        let next = |e: u64| (e & p != 0 && e & h == 0).then_some(e & ADDR_MASK);
        for i4 in pml4_slots {
            let Some(pdpt) = next(mem.table(self.root)[i4]) else { continue };
            for i3 in 0..512 {
                let Some(pd) = next(mem.table(pdpt)[i3]) else { continue };
                for i2 in 0..512 {
                    let Some(pt) = next(mem.table(pd)[i2]) else { continue };
                    for i1 in 0..512 {
                        let e1 = mem.table(pt)[i1];
                        if e1 & p != 0 {
                            let va = ((i4 as u64) << 39) | ((i3 as u64) << 30) | ((i2 as u64) << 21) | ((i1 as u64) << 12);
                            leaf(mem, if va & (1 << 47) != 0 { va | 0xFFFF_0000_0000_0000 } else { va }, e1);
                        }
                    }
                    table(mem, pt);
                }
                table(mem, pd);
            }
            table(mem, pdpt);
        }
    }

    /// [`walk`](Self::walk) over the tables this builder made: the page tables' leaves in address order, then
    /// the page tables, the directories and the PDPTs (children before parents).
    fn walk_listed<M: TableMemory>(list: &[(u8, u64, u64)], mem: &mut M, pml4_slots: core::ops::Range<usize>, leaf: &mut impl FnMut(&mut M, u64, u64), table: &mut impl FnMut(&mut M, u64)) {
        let in_slots = |base: u64| pml4_slots.contains(&(((base >> 39) & 0x1FF) as usize));
        let mut pts: alloc::vec::Vec<(u64, u64)> = list.iter().filter(|t| t.0 == 0 && in_slots(t.1)).map(|t| (t.1, t.2)).collect();
        pts.sort_unstable();
        for &(base, pt) in &pts {
            for i1 in 0..512u64 {
                let e1 = mem.table(pt)[i1 as usize];
                if e1 & PageFlags::PRESENT.bits() != 0 {
                    let va = base + (i1 << 12);
                    leaf(mem, if va & (1 << 47) != 0 { va | 0xFFFF_0000_0000_0000 } else { va }, e1);
                }
            }
        }
        for level in 0..=2u8 {
            for &(_, _, frame) in list.iter().filter(|t| t.0 == level && in_slots(t.1)) {
                table(mem, frame);
            }
        }
    }

    /// Every present 4 KiB leaf `(va, entry)` under the PML4 slots `pml4_slots`.
    pub fn leaves(&self, mem: &mut impl TableMemory, pml4_slots: core::ops::Range<usize>) -> alloc::vec::Vec<(u64, u64)> {
        let mut out = alloc::vec::Vec::new();
        self.walk(mem, pml4_slots, &mut |_, va, e| out.push((va, e)), &mut |_, _| {});
        out
    }

    /// Table frames (not the root) under the PML4 slots `pml4_slots`, children before parents.
    pub fn tables_under(&self, mem: &mut impl TableMemory, pml4_slots: core::ops::Range<usize>) -> alloc::vec::Vec<u64> {
        let mut out = alloc::vec::Vec::new();
        self.walk(mem, pml4_slots, &mut |_, _, _| {}, &mut |_, t| out.push(t));
        out
    }

    /// Every table frame reachable from the root (including the root), for teardown and for checking that
    /// tables are never mapped where they should not be.
    pub fn table_frames(&self, mem: &mut impl TableMemory, out: &mut impl FnMut(u64)) {
        fn visit(mem: &mut impl TableMemory, table: u64, level: u32, out: &mut impl FnMut(u64)) {
            out(table);
            if level == 0 {
                return;
            }
            for i in 0..512 {
                let e = mem.table(table)[i];
                if e & PageFlags::PRESENT.bits() != 0 && e & PageFlags::HUGE.bits() == 0 {
                    visit(mem, e & ADDR_MASK, level - 1, out);
                }
            }
        }
        visit(mem, self.root, 3, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tables in a Vec; "physical" addresses start at 0x100_0000 so that 0 is never a valid table.
    struct VecMemory {
        tables: Vec<[u64; 512]>,
        limit: usize,
    }
    const BASE: u64 = 0x100_0000;
    impl TableMemory for VecMemory {
        fn alloc_table(&mut self) -> Option<u64> {
            if self.tables.len() >= self.limit {
                return None;
            }
            self.tables.push([0; 512]);
            Some(BASE + (self.tables.len() as u64 - 1) * PAGE_SIZE)
        }
        fn table(&mut self, phys: u64) -> &mut [u64; 512] {
            &mut self.tables[((phys - BASE) / PAGE_SIZE) as usize]
        }
    }
    fn mem() -> VecMemory {
        VecMemory { tables: Vec::new(), limit: 1000 }
    }

    #[test]
    fn map_and_translate_4k() {
        let mut m = mem();
        let mut a = AddressSpace::new(&mut m).unwrap();
        a.map_4k(&mut m, 0x40_0000_1000, 0x5000, PageFlags::WRITABLE | PageFlags::USER).unwrap();
        let t = a.translate(&mut m, 0x40_0000_1234).unwrap();
        assert_eq!(t.phys, 0x5234);
        assert_eq!(t.page_size, PAGE_SIZE);
        assert!(t.flags.contains(PageFlags::PRESENT | PageFlags::WRITABLE | PageFlags::USER));
        assert!(a.translate(&mut m, 0x40_0000_2000).is_none());
        // root + PDPT + PD + PT
        assert_eq!(m.tables.len(), 4);
    }

    #[test]
    fn large_pages_and_range_splitting() {
        let mut m = mem();
        let mut a = AddressSpace::new(&mut m).unwrap();
        // 1 MiB .. 5 MiB: 4K pages up to 2 MiB, one 2 MiB page, then 4K pages for the last 1 MiB.
        a.map_range(&mut m, 0x10_0000, 0x10_0000, 0x40_0000, PageFlags::WRITABLE).unwrap();
        assert_eq!(a.translate(&mut m, 0x10_0000).unwrap().page_size, PAGE_SIZE);
        let big = a.translate(&mut m, 0x30_0000).unwrap();
        assert_eq!(big.page_size, LARGE_PAGE_SIZE);
        assert_eq!(big.phys, 0x30_0000);
        assert!(!big.flags.contains(PageFlags::HUGE));
        assert_eq!(a.translate(&mut m, 0x4F_F000).unwrap().page_size, PAGE_SIZE);
        assert!(a.translate(&mut m, 0x50_0000).is_none());
        assert!(a.translate(&mut m, 0xF_F000).is_none());
    }

    #[test]
    fn errors() {
        let mut m = mem();
        let mut a = AddressSpace::new(&mut m).unwrap();
        assert_eq!(a.map_4k(&mut m, 0x1001, 0, PageFlags::empty()), Err(MapError::Misaligned { va: 0x1001, pa: 0 }));
        assert_eq!(
            a.map_4k(&mut m, 0x0000_8000_0000_0000, 0, PageFlags::empty()),
            Err(MapError::NonCanonical { va: 0x0000_8000_0000_0000 })
        );
        a.map_4k(&mut m, 0x1000, 0x1000, PageFlags::empty()).unwrap();
        assert_eq!(a.map_4k(&mut m, 0x1000, 0x2000, PageFlags::empty()), Err(MapError::AlreadyMapped { va: 0x1000 }));
        // A 2 MiB page where a page table already exists.
        assert_eq!(a.map_2m(&mut m, 0, 0, PageFlags::empty()), Err(MapError::SizeConflict { va: 0 }));
        a.map_2m(&mut m, 0x20_0000, 0x20_0000, PageFlags::empty()).unwrap();
        assert_eq!(a.map_4k(&mut m, 0x20_1000, 0, PageFlags::empty()), Err(MapError::SizeConflict { va: 0x20_1000 }));
        // Higher-half canonical addresses are fine.
        a.map_4k(&mut m, 0xFFFF_8000_0000_0000, 0x3000, PageFlags::empty()).unwrap();
        assert_eq!(a.translate(&mut m, 0xFFFF_8000_0000_0010).unwrap().phys, 0x3010);
    }

    #[test]
    fn out_of_memory_is_an_error_not_a_panic() {
        let mut m = VecMemory { tables: Vec::new(), limit: 3 };
        let mut a = AddressSpace::new(&mut m).unwrap();
        assert_eq!(a.map_4k(&mut m, 0x1000, 0x1000, PageFlags::empty()), Err(MapError::OutOfMemory));
    }

    #[test]
    fn unmap_and_table_frames() {
        let mut m = mem();
        let mut a = AddressSpace::new(&mut m).unwrap();
        a.map_4k(&mut m, 0x7000, 0x9000, PageFlags::WRITABLE).unwrap();
        assert_eq!(a.unmap_4k(&mut m, 0x7000), Some(0x9000));
        assert_eq!(a.unmap_4k(&mut m, 0x7000), None);
        assert!(a.translate(&mut m, 0x7000).is_none());
        let mut frames = Vec::new();
        a.table_frames(&mut m, &mut |f| frames.push(f));
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0], a.root());
    }

    #[test]
    fn listed_walk_matches_the_scanning_one() {
        let mut m = mem();
        let mut a = AddressSpace::new(&mut m).unwrap();
        // Out of address order, in three PML4 slots, two page tables in one directory.
        for va in [0x7fff_ffff_e000u64, 0x40_0000, 0x80_0000_0000, 0x40_1000, 0x60_0000] {
            a.map_4k(&mut m, va, 0x5000, PageFlags::USER).unwrap();
        }
        let scanning = AddressSpace::from_root(a.root());
        for slots in [0..256, 1..255] {
            assert_eq!(a.leaves(&mut m, slots.clone()), scanning.leaves(&mut m, slots.clone()), "leaves of {slots:?}");
            let (mut listed, mut scanned) = (a.tables_under(&mut m, slots.clone()), scanning.tables_under(&mut m, slots.clone()));
            // Children before parents in both: a page table's frame comes before its directory's.
            let pos = |v: &Vec<u64>, x: u64| v.iter().position(|&t| t == x).unwrap();
            if slots.contains(&0) {
                let pdpt = m.table(a.root())[0] & ADDR_MASK;
                let pd = m.table(pdpt)[0] & ADDR_MASK;
                let pt = m.table(pd)[2] & ADDR_MASK;
                assert!(pos(&listed, pt) < pos(&listed, pd) && pos(&listed, pd) < pos(&listed, pdpt));
            }
            listed.sort_unstable();
            scanned.sort_unstable();
            assert_eq!(listed, scanned, "tables of {slots:?}");
        }
    }

    #[test]
    fn leaves_and_tables_by_pml4_slot() {
        let mut m = mem();
        let mut a = AddressSpace::new(&mut m).unwrap();
        a.map_4k(&mut m, 0x1000, 0x1000, PageFlags::WRITABLE).unwrap(); // slot 0
        a.map_4k(&mut m, 0x80_0000_0000, 0x2000, PageFlags::USER).unwrap(); // slot 1
        a.map_4k(&mut m, 0x80_0020_3000, 0x3000, PageFlags::USER).unwrap(); // slot 1, another PT
        let l = a.leaves(&mut m, 1..256);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].0, 0x80_0000_0000);
        assert_eq!(l[1].0, 0x80_0020_3000);
        assert_eq!(l[1].1 & ADDR_MASK, 0x3000);
        // Two PTs, one PD, one PDPT under slot 1; nothing from slot 0.
        assert_eq!(a.tables_under(&mut m, 1..256).len(), 4);
        *a.leaf_mut(&mut m, 0x80_0000_0000).unwrap() = 0;
        assert!(a.translate(&mut m, 0x80_0000_0000).is_none());
        assert!(a.leaf_mut(&mut m, 0x100_0000_0000).is_none());
    }
}
