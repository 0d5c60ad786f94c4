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

/// A table an [`AddressSpace`] made below its root.
#[derive(Clone, Copy, Debug)]
struct Made {
    /// The level it translates: 2 a PDPT, 1 a page directory, 0 a page table.
    level: u8,
    /// The first (lower-half, non-sign-extended) address it covers.
    base: u64,
    frame: u64,
    /// Every entry ever made present in it is in `first..=last` (`first > last`: none yet). Entries are made
    /// present only by this builder; they may be cleared behind its back (unmapping), so the range is an
    /// over-approximation that never shrinks.
    first: u16,
    last: u16,
}

impl Made {
    fn mark(&mut self, i: usize) {
        self.first = self.first.min(i as u16);
        self.last = self.last.max(i as u16);
    }

    fn used(&self) -> core::ops::RangeInclusive<usize> {
        self.first as usize..=self.last as usize
    }
}

pub struct AddressSpace {
    root: u64,
    /// Every table this builder made below the root, with the range of entries it ever filled. A walk visits
    /// these and their used entries instead of scanning all 512 entries of every level (a fork and an exit
    /// walk a small process's few entries, not thousands). None for a wrapped PML4, whose tables are found
    /// by scanning.
    tables: Option<alloc::vec::Vec<Made>>,
    /// Where in `tables` the last looked-up table was (consecutive maps mostly fill one page table).
    hint: usize,
}

impl AddressSpace {
    pub fn new(mem: &mut impl TableMemory) -> Result<AddressSpace, MapError> {
        // A small process has about eight tables (two PDPTs, directories and page tables for its image and stack).
        let tables = alloc::vec::Vec::with_capacity(8);
        Ok(AddressSpace { root: mem.alloc_table().ok_or(MapError::OutOfMemory)?, tables: Some(tables), hint: 0 })
    }

    /// Wrap an existing PML4.
    pub fn from_root(root: u64) -> AddressSpace {
        AddressSpace { root, tables: None, hint: 0 }
    }

    pub fn root(&self) -> u64 {
        self.root
    }

    /// Record that entry `i` of table `frame` was made present (nothing for the root or a wrapped PML4).
    fn mark(&mut self, frame: u64, i: usize) {
        let Some(list) = self.tables.as_mut() else { return };
        if frame == self.root {
            return;
        }
        let at = if list.get(self.hint).is_some_and(|t| t.frame == frame) {
            self.hint
        } else {
            let Some(at) = list.iter().position(|t| t.frame == frame) else { return };
            self.hint = at;
            at
        };
        list[at].mark(i);
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
                self.mark(table, i);
                if let Some(list) = self.tables.as_mut() {
                    // The new table translates level - 1 and covers 512 entries of that level's size.
                    let span = 1u64 << (12 + 9 * level);
                    let base = va & !(span - 1) & 0x0000_FFFF_FFFF_FFFF;
                    list.push(Made { level: (level - 1) as u8, base, frame: new, first: 511, last: 0 });
                    self.hint = list.len() - 1;
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
        self.mark(pt, index(va, 0));
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
        self.mark(pd, index(va, 1));
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

    /// The 4 KiB leaf entry mapping `va`, if the tables down to it exist (the entry may be non-present). Callers
    /// change present entries or clear them; a non-present entry is made present with [`map_4k`](Self::map_4k),
    /// which records it for the walks.
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

    /// Visit the tables under the PML4 slots `pml4_slots`: `leaf(mem, va, entry)` for every present 4 KiB leaf,
    /// then `table(mem, frame)` for every table below the root, children before parents (so `table` may free
    /// the frame: it is not read again). 2 MiB leaves are skipped (user address spaces use 4 KiB pages only).
    pub fn walk<M: TableMemory>(&self, mem: &mut M, pml4_slots: core::ops::Range<usize>, leaf: &mut impl FnMut(&mut M, u64, u64), table: &mut impl FnMut(&mut M, u64)) {
        if let Some(list) = &self.tables {
            return Self::walk_listed(list, mem, pml4_slots, false, leaf, table);
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

    /// [`walk`](Self::walk) over the tables this builder made and their used entries: the page tables' leaves
    /// (in the order the tables were made), then the page tables, the directories and the PDPTs (children before parents). With
    /// `clear`, every entry visited is zeroed first, so each table handed to `table` is all zeroes.
    fn walk_listed<M: TableMemory>(list: &[Made], mem: &mut M, pml4_slots: core::ops::Range<usize>, clear: bool, leaf: &mut impl FnMut(&mut M, u64, u64), table: &mut impl FnMut(&mut M, u64)) {
        let in_slots = |base: u64| pml4_slots.contains(&index(base, 3));
        for pt in list.iter().filter(|t| t.level == 0 && in_slots(t.base)) {
            for i1 in pt.used() {
                let slot = &mut mem.table(pt.frame)[i1];
                let e1 = *slot;
                if clear {
                    *slot = 0;
                }
                if e1 & PageFlags::PRESENT.bits() != 0 {
                    let va = pt.base + ((i1 as u64) << 12);
                    leaf(mem, if va & (1 << 47) != 0 { va | 0xFFFF_0000_0000_0000 } else { va }, e1);
                }
            }
        }
        for level in 0..=2u8 {
            for t in list.iter().filter(|t| t.level == level && in_slots(t.base)) {
                if clear && t.first <= t.last {
                    mem.table(t.frame)[t.used()].fill(0);
                }
                table(mem, t.frame);
            }
        }
    }

    /// Take apart the tables under the PML4 slots `pml4_slots`: as [`walk`](Self::walk), but each entry is
    /// cleared as it is visited, the root's entries for those slots too, so every frame handed to `table` is
    /// a zeroed table (reusable without zeroing it again). A wrapped PML4's tables are scanned and handed over
    /// as they are.
    pub fn dismantle<M: TableMemory>(&mut self, mem: &mut M, pml4_slots: core::ops::Range<usize>, leaf: &mut impl FnMut(&mut M, u64, u64), table: &mut impl FnMut(&mut M, u64)) {
        let Some(list) = self.tables.take() else {
            return self.walk(mem, pml4_slots, leaf, table);
        };
        Self::walk_listed(&list, mem, pml4_slots.clone(), true, leaf, table);
        // The root's entries for those slots: the ones that point at a PDPT made here.
        for t in list.iter().filter(|t| t.level == 2 && pml4_slots.contains(&index(t.base, 3))) {
            mem.table(self.root)[index(t.base, 3)] = 0;
        }
        self.tables = Some(list.into_iter().filter(|t| !pml4_slots.contains(&index(t.base, 3))).collect());
    }

    /// A copy of the tables under the PML4 slots `pml4_slots` into `child` (an empty space), for fork:
    /// `leaf(mem, va, &mut entry)` sees each present 4 KiB leaf of this space, may change it, and returns the
    /// child's entry for `va` (0: none). Each page table is copied entry by entry into a table of the child's,
    /// with no walk from the root per page. On running out of memory the child holds what was copied (tear it
    /// down) and this space's entries seen so far stay as `leaf` left them.
    pub fn fork_into<M: TableMemory>(&self, mem: &mut M, child: &mut AddressSpace, pml4_slots: core::ops::Range<usize>, leaf: &mut impl FnMut(&mut M, u64, &mut u64) -> u64) -> Result<(), MapError> {
        let Some(list) = &self.tables else {
            let mut failed = None;
            self.walk(mem, pml4_slots, &mut |m, va, e| {
                let mut e = e;
                let c = leaf(m, va, &mut e);
                if let Some(slot) = self.leaf_mut(m, va) {
                    *slot = e;
                }
                if c != 0 && failed.is_none() {
                    failed = child.map_4k(m, va, c & ADDR_MASK, PageFlags::from_bits_truncate(c & !ADDR_MASK)).err();
                }
            }, &mut |_, _| {});
            return failed.map_or(Ok(()), Err);
        };
        for pt in list.iter().filter(|t| t.level == 0 && pml4_slots.contains(&index(t.base, 3))) {
            if pt.first > pt.last {
                continue;
            }
            let child_pt = child.walk_create(mem, pt.base, 0)?;
            for i in pt.used() {
                let mut e = mem.table(pt.frame)[i];
                if e & PageFlags::PRESENT.bits() == 0 {
                    continue;
                }
                let va = pt.base + ((i as u64) << 12);
                let c = leaf(mem, if va & (1 << 47) != 0 { va | 0xFFFF_0000_0000_0000 } else { va }, &mut e);
                mem.table(pt.frame)[i] = e;
                if c != 0 {
                    mem.table(child_pt)[i] = c;
                    child.mark(child_pt, i);
                }
            }
        }
        Ok(())
    }

    /// Every present 4 KiB leaf `(va, entry)` under the PML4 slots `pml4_slots`, in address order (what the
    /// tests compare walks with).
    #[cfg(test)]
    pub fn leaves(&self, mem: &mut impl TableMemory, pml4_slots: core::ops::Range<usize>) -> alloc::vec::Vec<(u64, u64)> {
        let mut out = alloc::vec::Vec::new();
        self.walk(mem, pml4_slots, &mut |_, va, e| out.push((va, e)), &mut |_, _| {});
        out.sort_unstable();
        out
    }

    /// Table frames (not the root) under the PML4 slots `pml4_slots`, children before parents.
    #[cfg(test)]
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

    /// Maps in three PML4 slots, out of order, one entry later cleared behind the builder's back.
    fn scattered(m: &mut VecMemory) -> AddressSpace {
        let mut a = AddressSpace::new(m).unwrap();
        for (n, va) in [0x7fff_ffff_e000u64, 0x40_0000, 0x80_0000_0000, 0x40_1000, 0x60_0000, 0x41_f000].into_iter().enumerate() {
            a.map_4k(m, va, 0x10_0000 + n as u64 * PAGE_SIZE, PageFlags::USER | PageFlags::WRITABLE).unwrap();
        }
        *a.leaf_mut(m, 0x40_1000).unwrap() = 0;
        a
    }

    #[test]
    fn used_ranges_cover_every_entry_made_present() {
        let mut m = mem();
        let a = scattered(&mut m);
        let scanning = AddressSpace::from_root(a.root());
        assert_eq!(a.leaves(&mut m, 0..256), scanning.leaves(&mut m, 0..256));
        // The page table of 0x40_0000 had entries 0, 1 and 31 filled: its range is 0..=31 (1 since cleared).
        let pt = a.tables.as_ref().unwrap().iter().find(|t| t.level == 0 && t.base == 0x40_0000).copied().unwrap();
        assert_eq!(pt.used(), 0..=31);
    }

    #[test]
    fn fork_into_copies_every_leaf_through_the_callback() {
        let mut m = mem();
        let a = scattered(&mut m);
        let before = a.leaves(&mut m, 0..256);
        let mut child = AddressSpace::new(&mut m).unwrap();
        let mut seen = Vec::new();
        // Parent entries lose WRITABLE; the child gets the same frame, read-only; 0x60_0000 is not copied.
        a.fork_into(&mut m, &mut child, 0..256, &mut |_, va, e| {
            seen.push(va);
            *e &= !PageFlags::WRITABLE.bits();
            if va == 0x60_0000 { 0 } else { *e }
        })
        .unwrap();
        seen.sort_unstable();
        assert_eq!(seen, before.iter().map(|l| l.0).collect::<Vec<_>>());
        let ro = |l: &(u64, u64)| (l.0, l.1 & !PageFlags::WRITABLE.bits());
        assert_eq!(a.leaves(&mut m, 0..256), before.iter().map(ro).collect::<Vec<_>>());
        let expected: Vec<_> = before.iter().map(ro).filter(|l| l.0 != 0x60_0000).collect();
        assert_eq!(child.leaves(&mut m, 0..256), expected);
        // The child's tables are listed with their ranges: the scanning walk agrees with the listed one.
        assert_eq!(AddressSpace::from_root(child.root()).leaves(&mut m, 0..256), expected);
        // Slots restrict the copy.
        let mut upper_only = AddressSpace::new(&mut m).unwrap();
        a.fork_into(&mut m, &mut upper_only, 1..256, &mut |_, _, e| *e).unwrap();
        assert_eq!(upper_only.leaves(&mut m, 0..256).iter().map(|l| l.0).collect::<Vec<_>>(), vec![0x80_0000_0000, 0x7fff_ffff_e000]);
    }

    #[test]
    fn fork_into_out_of_memory_is_an_error() {
        let mut m = mem();
        let a = scattered(&mut m);
        m.limit = m.tables.len() + 3;
        let mut child = AddressSpace::new(&mut m).unwrap();
        assert_eq!(a.fork_into(&mut m, &mut child, 0..256, &mut |_, _, e| *e), Err(MapError::OutOfMemory));
    }

    #[test]
    fn dismantle_hands_back_zeroed_tables_children_first() {
        let mut m = mem();
        let mut a = scattered(&mut m);
        let root = a.root();
        let mut leaves = Vec::new();
        let mut freed = Vec::new();
        a.dismantle(&mut m, 0..256, &mut |_, va, _| leaves.push(va), &mut |m, t| {
            assert!(m.table(t).iter().all(|&e| e == 0), "table 0x{t:x} handed back with entries");
            freed.push(t);
        });
        assert_eq!(leaves.len(), 5);
        // root + 3 PDPTs... : every table but the root, each once.
        assert_eq!(freed.len(), m.tables.len() - 1);
        assert!(m.table(root).iter().all(|&e| e == 0));
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
