//! User address spaces: layout, demand-grown stack, brk heap, copy-on-write fork, checked copies to and from
//! user memory, teardown. Pure logic over [`PhysMem`], so the COW and refcount rules are unit-tested on the host.
//!
//! Layout (lower canonical half; PML4 slot 0 is the kernel's identity map, shared by every address space and
//! never touched here):
//!   0x80_0000_0000 (512 GiB)   program segments (userland/user.ld links programs here), then the brk heap
//!   0x4000_0000_0000           anonymous mmap region, growing up
//!   STACK_TOP - STACK_MAX      stack, mapped on demand as it is touched, growing down to STACK_TOP
//!
//! Copy-on-write (docs/processes.md): every user page has a reference count kept by [`PhysMem`]. Fork marks
//! each writable page read-only + `COW` in both parent and child and takes a reference; a write fault on a COW
//! page copies it if others still reference it, or simply makes it writable again if it is the last reference.
//! Teardown drops one reference per mapped page; a page is freed when its count reaches zero.
#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;
use questv_arch::paging::{AddressSpace, MapError, PageFlags, TableMemory, ADDR_MASK, PAGE_SIZE};

pub const USER_BASE: u64 = 0x80_0000_0000;
pub const USER_END: u64 = 0x8000_0000_0000;
pub const MMAP_BASE: u64 = 0x4000_0000_0000;
pub const STACK_TOP: u64 = 0x7FFF_FFF0_0000;
pub const STACK_MAX: u64 = 8 << 20;
/// How far brk may grow past the end of the program.
pub const BRK_MAX: u64 = 16 << 30;
/// PML4 slots that belong to user space.
pub const USER_SLOTS: core::ops::Range<usize> = 1..256;

/// Physical memory as the user-space code needs it: page tables plus reference-counted user pages.
pub trait PhysMem: TableMemory {
    /// A zeroed page with reference count 1.
    fn alloc_page(&mut self) -> Option<u64>;
    /// One more reference to `pa`.
    fn share(&mut self, pa: u64);
    /// Drop a reference; the page is freed when none remain.
    fn release(&mut self, pa: u64);
    fn refs(&mut self, pa: u64) -> u32;
    fn page(&mut self, pa: u64) -> &mut [u8; PAGE_SIZE as usize];
    fn free_table(&mut self, pa: u64);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserError {
    /// Bad user address (EFAULT).
    Fault,
    /// Out of physical memory (ENOMEM).
    NoMemory,
}

impl From<MapError> for UserError {
    fn from(e: MapError) -> Self {
        match e {
            MapError::OutOfMemory => UserError::NoMemory,
            _ => UserError::Fault,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOutcome {
    Resolved,
    Segfault,
    OutOfMemory,
}

const USER_RW: PageFlags = PageFlags::USER.union(PageFlags::WRITABLE).union(PageFlags::NO_EXECUTE);

pub struct UserSpace {
    aspace: AddressSpace,
    pub brk_start: u64,
    pub brk: u64,
    pub mmap_next: u64,
}

fn entry_flags(e: u64) -> PageFlags {
    PageFlags::from_bits_truncate(e & !ADDR_MASK) - PageFlags::ACCESSED - PageFlags::DIRTY
}

fn in_stack(va: u64) -> bool {
    (STACK_TOP - STACK_MAX..STACK_TOP).contains(&va)
}

fn user_range_ok(va: u64, len: u64) -> bool {
    va >= USER_BASE && va.checked_add(len).is_some_and(|end| end <= USER_END)
}

impl UserSpace {
    /// An empty user space whose PML4 slot 0 is the kernel's (`kernel_slot0` is that PML4 entry).
    pub fn new<M: PhysMem>(mem: &mut M, kernel_slot0: u64) -> Result<UserSpace, UserError> {
        let aspace = AddressSpace::new(mem)?;
        mem.table(aspace.root())[0] = kernel_slot0;
        Ok(UserSpace { aspace, brk_start: USER_BASE, brk: USER_BASE, mmap_next: MMAP_BASE })
    }

    /// Physical address of the PML4 (for CR3).
    pub fn root(&self) -> u64 {
        self.aspace.root()
    }

    /// Map fresh zeroed pages over `[va, va+len)` (page aligned).
    pub fn map_zeroed<M: PhysMem>(&mut self, mem: &mut M, va: u64, len: u64, flags: PageFlags) -> Result<(), UserError> {
        if va % PAGE_SIZE != 0 || !user_range_ok(va, len) {
            return Err(UserError::Fault);
        }
        let mut v = va;
        while v < va + len {
            let pa = mem.alloc_page().ok_or(UserError::NoMemory)?;
            if let Err(e) = self.aspace.map_4k(mem, v, pa, flags | PageFlags::USER) {
                mem.release(pa);
                return Err(e.into());
            }
            v += PAGE_SIZE;
        }
        Ok(())
    }

    /// Map one page the caller filled (`pa` from `alloc_page`) at `va`.
    pub fn map_page<M: PhysMem>(&mut self, mem: &mut M, va: u64, pa: u64, flags: PageFlags) -> Result<(), UserError> {
        if !user_range_ok(va, PAGE_SIZE) {
            return Err(UserError::Fault);
        }
        self.aspace.map_4k(mem, va, pa, flags | PageFlags::USER).map_err(Into::into)
    }

    /// Unmap `[va, va+len)`, dropping a reference to each mapped page.
    pub fn unmap<M: PhysMem>(&mut self, mem: &mut M, va: u64, len: u64) -> Result<(), UserError> {
        if va % PAGE_SIZE != 0 || !user_range_ok(va, len) {
            return Err(UserError::Fault);
        }
        let mut v = va;
        while v < va + len {
            if let Some(pa) = self.aspace.unmap_4k(mem, v) {
                mem.release(pa);
            }
            v += PAGE_SIZE;
        }
        Ok(())
    }

    /// Copy-on-write duplicate. On failure the partial child is torn down and nothing leaks; the parent's
    /// pages may already be marked COW, which a later write fault resolves without copying.
    pub fn fork<M: PhysMem>(&self, mem: &mut M) -> Result<UserSpace, UserError> {
        let kernel_slot0 = mem.table(self.aspace.root())[0];
        let mut child = UserSpace::new(mem, kernel_slot0)?;
        child.brk_start = self.brk_start;
        child.brk = self.brk;
        child.mmap_next = self.mmap_next;
        for (va, e) in self.aspace.leaves(mem, USER_SLOTS) {
            let pa = e & ADDR_MASK;
            let mut flags = entry_flags(e);
            if flags.intersects(PageFlags::WRITABLE | PageFlags::COW) {
                flags = (flags - PageFlags::WRITABLE) | PageFlags::COW;
                if let Some(leaf) = self.aspace.leaf_mut(mem, va) {
                    *leaf = pa | flags.bits();
                }
            }
            if let Err(e) = child.aspace.map_4k(mem, va, pa, flags) {
                child.teardown(mem);
                return Err(e.into());
            }
            mem.share(pa);
        }
        Ok(child)
    }

    /// Resolve a page fault at `va` from user mode (or from a kernel copy on the user's behalf).
    pub fn handle_fault<M: PhysMem>(&mut self, mem: &mut M, va: u64, write: bool) -> FaultOutcome {
        if !user_range_ok(va, 1) {
            return FaultOutcome::Segfault;
        }
        let page = va & !(PAGE_SIZE - 1);
        let entry = self.aspace.leaf_mut(mem, page).map(|e| *e).unwrap_or(0);
        if entry & PageFlags::PRESENT.bits() == 0 {
            if in_stack(page) {
                return match self.map_zeroed(mem, page, PAGE_SIZE, USER_RW) {
                    Ok(()) => FaultOutcome::Resolved,
                    Err(UserError::NoMemory) => FaultOutcome::OutOfMemory,
                    Err(UserError::Fault) => FaultOutcome::Segfault,
                };
            }
            return FaultOutcome::Segfault;
        }
        let flags = entry_flags(entry);
        if !write || !flags.contains(PageFlags::COW) {
            // Present, and either a read (so a protection fault, e.g. NX or kernel page) or a write to a page
            // that is read-only for real.
            return FaultOutcome::Segfault;
        }
        let pa = entry & ADDR_MASK;
        let new_flags = (flags - PageFlags::COW) | PageFlags::WRITABLE;
        if mem.refs(pa) == 1 {
            *self.aspace.leaf_mut(mem, page).unwrap() = pa | new_flags.bits() | PageFlags::PRESENT.bits();
            return FaultOutcome::Resolved;
        }
        let Some(copy) = mem.alloc_page() else { return FaultOutcome::OutOfMemory };
        let src = *mem.page(pa);
        *mem.page(copy) = src;
        *self.aspace.leaf_mut(mem, page).unwrap() = copy | new_flags.bits() | PageFlags::PRESENT.bits();
        mem.release(pa);
        FaultOutcome::Resolved
    }

    /// The physical page behind user `va`, ready for the requested access (demand-maps the stack and breaks
    /// COW for writes). Fails for kernel or unmapped addresses.
    fn page_for<M: PhysMem>(&mut self, mem: &mut M, va: u64, write: bool) -> Result<u64, UserError> {
        if !user_range_ok(va, 1) {
            return Err(UserError::Fault);
        }
        for _ in 0..2 {
            if let Some(t) = self.aspace.translate(mem, va) {
                let ok = t.flags.contains(PageFlags::USER) && (!write || t.flags.contains(PageFlags::WRITABLE));
                if ok {
                    return Ok(t.phys & !(PAGE_SIZE - 1));
                }
            }
            match self.handle_fault(mem, va, write) {
                FaultOutcome::Resolved => {}
                FaultOutcome::Segfault => return Err(UserError::Fault),
                FaultOutcome::OutOfMemory => return Err(UserError::NoMemory),
            }
        }
        Err(UserError::Fault)
    }

    /// Split `[va, va+len)` into per-page pieces and hand each page, ready for the access, to
    /// `f(page, offset in page, offset in buffer, length)`.
    fn for_each_page<M: PhysMem>(&mut self, mem: &mut M, va: u64, len: usize, write: bool,
                                 mut f: impl FnMut(&mut M, u64, usize, usize, usize)) -> Result<(), UserError> {
        if !user_range_ok(va, len as u64) {
            return Err(UserError::Fault);
        }
        let mut done = 0;
        while done < len {
            let v = va + done as u64;
            let off = (v % PAGE_SIZE) as usize;
            let n = (PAGE_SIZE as usize - off).min(len - done);
            let pa = self.page_for(mem, v, write)?;
            f(mem, pa, off, done, n);
            done += n;
        }
        Ok(())
    }

    /// Visit the user range `[va, va+len)` page by page: `f(the process's bytes, offset in the range)`, each
    /// piece ready for the access (stack demand-mapped, COW broken for writes). Lets a caller copy between user
    /// memory and another buffer (a channel slot) with no bounce buffer in between.
    pub fn with_user_chunks<M: PhysMem>(&mut self, mem: &mut M, va: u64, len: usize, write: bool,
                                        mut f: impl FnMut(&mut [u8], usize)) -> Result<(), UserError> {
        self.for_each_page(mem, va, len, write, |m, pa, off, at, n| f(&mut m.page(pa)[off..off + n], at))
    }

    pub fn copy_to_user<M: PhysMem>(&mut self, mem: &mut M, va: u64, data: &[u8]) -> Result<(), UserError> {
        self.for_each_page(mem, va, data.len(), true, |m, pa, off, at, n| {
            m.page(pa)[off..off + n].copy_from_slice(&data[at..at + n])
        })
    }

    pub fn copy_from_user<M: PhysMem>(&mut self, mem: &mut M, va: u64, buf: &mut [u8]) -> Result<(), UserError> {
        let len = buf.len();
        self.for_each_page(mem, va, len, false, |m, pa, off, at, n| {
            buf[at..at + n].copy_from_slice(&m.page(pa)[off..off + n])
        })
    }

    /// A NUL-terminated user string of at most `max` bytes (longer, or not UTF-8, is EFAULT).
    pub fn read_str<M: PhysMem>(&mut self, mem: &mut M, va: u64, max: usize) -> Result<String, UserError> {
        let mut bytes = Vec::new();
        let mut b = [0u8; 1];
        for i in 0..max as u64 {
            self.copy_from_user(mem, va.checked_add(i).ok_or(UserError::Fault)?, &mut b)?;
            if b[0] == 0 {
                return String::from_utf8(bytes).map_err(|_| UserError::Fault);
            }
            bytes.push(b[0]);
        }
        Err(UserError::Fault)
    }

    /// Move the program break. Growing maps zeroed pages; shrinking unmaps. Returns the new break, or the old
    /// one if the request is invalid or memory ran out (Linux brk semantics).
    pub fn set_brk<M: PhysMem>(&mut self, mem: &mut M, new: u64) -> u64 {
        if new < self.brk_start || new > self.brk_start + BRK_MAX {
            return self.brk;
        }
        let old_top = self.brk.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let new_top = new.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        if new_top > old_top {
            if self.map_zeroed(mem, old_top, new_top - old_top, USER_RW).is_err() {
                // Undo the part that was mapped: the break stays where it was.
                let _ = self.unmap(mem, old_top, new_top - old_top);
                return self.brk;
            }
        } else if new_top < old_top {
            let _ = self.unmap(mem, new_top, old_top - new_top);
        }
        self.brk = new;
        self.brk
    }

    /// Free every user page reference and every user page table, and the PML4 (slot 0 is the kernel's).
    pub fn teardown<M: PhysMem>(self, mem: &mut M) {
        for (_, e) in self.aspace.leaves(mem, USER_SLOTS) {
            mem.release(e & ADDR_MASK);
        }
        for t in self.aspace.tables_under(mem, USER_SLOTS) {
            mem.free_table(t);
        }
        mem.free_table(self.aspace.root());
    }

    pub fn translate<M: PhysMem>(&self, mem: &mut M, va: u64) -> Option<(u64, PageFlags)> {
        self.aspace.translate(mem, va).map(|t| (t.phys, t.flags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Fake physical memory: tables and pages in maps, reference counts, an allocation budget.
    #[derive(Default)]
    struct FakeMem {
        tables: HashMap<u64, Box<[u64; 512]>>,
        pages: HashMap<u64, (u32, Box<[u8; 4096]>)>,
        next: u64,
        budget: Option<usize>,
    }

    impl FakeMem {
        fn take(&mut self) -> Option<u64> {
            if let Some(b) = self.budget.as_mut() {
                if *b == 0 {
                    return None;
                }
                *b -= 1;
            }
            self.next += PAGE_SIZE;
            Some(0x1000_0000 + self.next)
        }
    }

    impl TableMemory for FakeMem {
        fn alloc_table(&mut self) -> Option<u64> {
            let pa = self.take()?;
            self.tables.insert(pa, Box::new([0; 512]));
            Some(pa)
        }
        fn table(&mut self, pa: u64) -> &mut [u64; 512] {
            self.tables.get_mut(&pa).expect("not a table")
        }
    }

    impl PhysMem for FakeMem {
        fn alloc_page(&mut self) -> Option<u64> {
            let pa = self.take()?;
            self.pages.insert(pa, (1, Box::new([0; 4096])));
            Some(pa)
        }
        fn share(&mut self, pa: u64) {
            self.pages.get_mut(&pa).unwrap().0 += 1;
        }
        fn release(&mut self, pa: u64) {
            let p = self.pages.get_mut(&pa).unwrap();
            p.0 -= 1;
            if p.0 == 0 {
                self.pages.remove(&pa);
            }
        }
        fn refs(&mut self, pa: u64) -> u32 {
            self.pages[&pa].0
        }
        fn page(&mut self, pa: u64) -> &mut [u8; 4096] {
            &mut self.pages.get_mut(&pa).unwrap().1
        }
        fn free_table(&mut self, pa: u64) {
            self.tables.remove(&pa).expect("double table free");
        }
    }

    const KERNEL_SLOT0: u64 = 0xABC000 | 3;

    fn space(mem: &mut FakeMem) -> UserSpace {
        let mut s = UserSpace::new(mem, KERNEL_SLOT0).unwrap();
        s.map_zeroed(mem, USER_BASE, 3 * PAGE_SIZE, USER_RW).unwrap();
        s.copy_to_user(mem, USER_BASE, b"parent").unwrap();
        s
    }

    fn read(s: &mut UserSpace, mem: &mut FakeMem, va: u64, n: usize) -> Vec<u8> {
        let mut b = vec![0; n];
        s.copy_from_user(mem, va, &mut b).unwrap();
        b
    }

    #[test]
    fn fork_shares_then_copies_on_write() {
        let mut mem = FakeMem::default();
        let mut parent = space(&mut mem);
        let pages_before = mem.pages.len();
        let mut child = parent.fork(&mut mem).unwrap();
        // Fork copies no data page: every page now has two references and is read-only + COW in both.
        assert_eq!(mem.pages.len(), pages_before);
        let (pa, flags) = parent.translate(&mut mem, USER_BASE).unwrap();
        assert_eq!(mem.refs(pa), 2);
        assert!(flags.contains(PageFlags::COW) && !flags.contains(PageFlags::WRITABLE));
        assert_eq!(mem.table(child.root())[0], KERNEL_SLOT0);

        // The child writes: it gets its own copy; the parent still sees its data.
        assert_eq!(child.handle_fault(&mut mem, USER_BASE + 8, true), FaultOutcome::Resolved);
        child.copy_to_user(&mut mem, USER_BASE, b"child!").unwrap();
        assert_eq!(read(&mut parent, &mut mem, USER_BASE, 6), b"parent");
        assert_eq!(read(&mut child, &mut mem, USER_BASE, 6), b"child!");
        assert_eq!(mem.refs(pa), 1);
        // The parent, now the only owner, writes without a copy.
        let pages = mem.pages.len();
        assert_eq!(parent.handle_fault(&mut mem, USER_BASE, true), FaultOutcome::Resolved);
        assert_eq!(mem.pages.len(), pages);
        assert_eq!(parent.translate(&mut mem, USER_BASE).unwrap().0, pa);

        child.teardown(&mut mem);
        parent.teardown(&mut mem);
        assert!(mem.pages.is_empty(), "pages leaked");
        assert!(mem.tables.is_empty(), "tables leaked");
    }

    #[test]
    fn grandchildren_and_teardown_in_any_order() {
        let mut mem = FakeMem::default();
        let parent = space(&mut mem);
        let child = parent.fork(&mut mem).unwrap();
        let mut grandchild = child.fork(&mut mem).unwrap();
        let pa = grandchild.translate(&mut mem, USER_BASE).unwrap().0;
        assert_eq!(mem.refs(pa), 3);
        grandchild.copy_to_user(&mut mem, USER_BASE + 4096, b"x").unwrap();
        parent.teardown(&mut mem);
        assert_eq!(mem.refs(pa), 2);
        grandchild.teardown(&mut mem);
        child.teardown(&mut mem);
        assert!(mem.pages.is_empty() && mem.tables.is_empty());
    }

    #[test]
    fn fork_out_of_memory_rolls_back() {
        let mut mem = FakeMem::default();
        let mut parent = space(&mut mem);
        mem.budget = Some(2); // PML4 + PDPT, not enough for PD and PT
        assert_eq!(parent.fork(&mut mem).err(), Some(UserError::NoMemory));
        mem.budget = None;
        // No reference leaked; the parent still works and owns its pages alone.
        let pa = parent.translate(&mut mem, USER_BASE).unwrap().0;
        assert_eq!(mem.refs(pa), 1);
        parent.copy_to_user(&mut mem, USER_BASE, b"again").unwrap();
        parent.teardown(&mut mem);
        assert!(mem.pages.is_empty() && mem.tables.is_empty());
    }

    #[test]
    fn copy_on_write_out_of_memory_is_reported() {
        let mut mem = FakeMem::default();
        let parent = space(&mut mem);
        let mut child = parent.fork(&mut mem).unwrap();
        mem.budget = Some(0);
        assert_eq!(child.handle_fault(&mut mem, USER_BASE, true), FaultOutcome::OutOfMemory);
        assert_eq!(child.copy_to_user(&mut mem, USER_BASE, b"x"), Err(UserError::NoMemory));
        mem.budget = None;
        child.teardown(&mut mem);
        parent.teardown(&mut mem);
        assert!(mem.pages.is_empty() && mem.tables.is_empty());
    }

    #[test]
    fn bad_user_addresses_are_efault() {
        let mut mem = FakeMem::default();
        let mut s = space(&mut mem);
        let mut b = [0u8; 8];
        for va in [0, 0x1000, USER_BASE - 8, USER_BASE + 3 * PAGE_SIZE, USER_END - 4, u64::MAX - 3] {
            assert_eq!(s.copy_from_user(&mut mem, va, &mut b), Err(UserError::Fault), "va {va:#x}");
            assert_eq!(s.copy_to_user(&mut mem, va, &b), Err(UserError::Fault), "va {va:#x}");
        }
        // A copy straddling the end of the mapping fails too.
        assert_eq!(s.copy_from_user(&mut mem, USER_BASE + 3 * PAGE_SIZE - 4, &mut b), Err(UserError::Fault));
        // Read-only pages cannot be written through the kernel either.
        s.map_zeroed(&mut mem, USER_BASE + 16 * PAGE_SIZE, PAGE_SIZE, PageFlags::empty()).unwrap();
        assert_eq!(s.copy_to_user(&mut mem, USER_BASE + 16 * PAGE_SIZE, b"x"), Err(UserError::Fault));
        assert!(s.copy_from_user(&mut mem, USER_BASE + 16 * PAGE_SIZE, &mut b).is_ok());
        assert_eq!(s.handle_fault(&mut mem, USER_BASE + 16 * PAGE_SIZE, true), FaultOutcome::Segfault);
        assert_eq!(s.read_str(&mut mem, USER_BASE, 3), Err(UserError::Fault));
        assert_eq!(s.read_str(&mut mem, USER_BASE, 16).unwrap(), "parent");
        s.teardown(&mut mem);
    }

    #[test]
    fn stack_grows_on_demand_and_brk_moves() {
        let mut mem = FakeMem::default();
        let mut s = UserSpace::new(&mut mem, KERNEL_SLOT0).unwrap();
        assert_eq!(s.handle_fault(&mut mem, STACK_TOP - 8, true), FaultOutcome::Resolved);
        s.copy_to_user(&mut mem, STACK_TOP - 5000, b"deep").unwrap();
        assert_eq!(s.handle_fault(&mut mem, STACK_TOP - STACK_MAX - 8, true), FaultOutcome::Segfault);
        assert_eq!(s.handle_fault(&mut mem, STACK_TOP, false), FaultOutcome::Segfault);
        s.brk_start = USER_BASE + 0x10_0000;
        s.brk = s.brk_start;
        assert_eq!(s.set_brk(&mut mem, s.brk_start + 10_000), s.brk_start + 10_000);
        s.copy_to_user(&mut mem, s.brk_start + 9_999, b"z").unwrap();
        assert_eq!(s.set_brk(&mut mem, s.brk_start - 1), s.brk_start + 10_000);
        let pages = mem.pages.len();
        assert_eq!(s.set_brk(&mut mem, s.brk_start), s.brk_start);
        assert_eq!(mem.pages.len(), pages - 3);
        mem.budget = Some(1);
        let b = s.brk;
        assert_eq!(s.set_brk(&mut mem, b + 5 * PAGE_SIZE), b, "failed growth keeps the old break");
        mem.budget = None;
        s.teardown(&mut mem);
        assert!(mem.pages.is_empty() && mem.tables.is_empty());
    }
}
