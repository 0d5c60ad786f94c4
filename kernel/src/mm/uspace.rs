//! User address spaces: layout, demand-grown stack, brk heap, copy-on-write fork, checked copies to and from
//! user memory, teardown. Pure logic over [`PhysMem`], so the COW and refcount rules are unit-tested on the host.
//!
//! Layout: the lower canonical half, as on Linux (the kernel is in the upper half: PML4 slot 256, shared by
//! every address space and never touched here):
//!   USER_BASE (64 KiB)         the lowest address a program may map (Linux's default `mmap_min_addr`), so a
//!                              null pointer faults in the kernel and in user space alike
//!   0x40_0000 and up           program segments, where static x86-64 binaries are linked (userland/user.ld
//!                              links questv's own programs there too), then the brk heap
//!   below MMAP_TOP             anonymous mmap areas, placed top-down (`vma`), filled on first touch
//!   STACK_TOP - STACK_MAX      stack, mapped on demand as it is touched, growing down to STACK_TOP
//!
//! Copy-on-write (docs/processes.md): every user page has a reference count kept by [`PhysMem`]. Fork marks
//! each writable page read-only + `COW` in both parent and child and takes a reference; a write fault on a COW
//! page copies it if others still reference it, or simply makes it writable again if it is the last reference.
//! Teardown drops one reference per mapped page; a page is freed when its count reaches zero.
#![forbid(unsafe_code)]

use super::vma::{Kind, Placement, VmaError, VmaMap, PROT_EXEC, PROT_READ, PROT_WRITE};
use alloc::string::String;
use alloc::vec::Vec;
use questv_arch::paging::{AddressSpace, MapError, PageFlags, TableMemory, ADDR_MASK, KERNEL_SLOT, PAGE_SIZE};

pub const USER_BASE: u64 = 0x1_0000;
pub const USER_END: u64 = 0x8000_0000_0000;
pub const STACK_TOP: u64 = 0x7FFF_FFF0_0000;
pub const STACK_MAX: u64 = 8 << 20;
/// How far brk may grow past the end of the program.
pub const BRK_MAX: u64 = 16 << 30;
/// PML4 slots that belong to user space: the lower half.
pub const USER_SLOTS: core::ops::Range<usize> = 0..KERNEL_SLOT;

/// Physical memory as the user-space code needs it: page tables plus reference-counted user pages.
pub trait PhysMem: TableMemory {
    /// A zeroed page with reference count 1.
    fn alloc_page(&mut self) -> Option<u64>;
    /// A page with reference count 1 holding a copy of page `src` (a copy-on-write break: not zeroed first).
    fn alloc_page_copy(&mut self, src: u64) -> Option<u64>;
    /// One more reference to `pa`.
    fn share(&mut self, pa: u64);
    /// Drop a reference; the page is freed when none remain.
    fn release(&mut self, pa: u64);
    fn refs(&mut self, pa: u64) -> u32;
    fn page(&mut self, pa: u64) -> &mut [u8; PAGE_SIZE as usize];
    fn free_table(&mut self, pa: u64);
    /// A table frame left all zeroes: it may be reused as a table without clearing it.
    fn free_zeroed_table(&mut self, pa: u64) {
        self.free_table(pa);
    }
    /// Entries of the address space with root `root` were removed, downgraded or pointed at other frames
    /// (just those of `pages`, or any): make every CPU that may cache them drop them, this one included, before
    /// any frame they named is released (threads of one process run on several cores).
    fn tlb_shootdown(&mut self, _root: u64, _pages: Option<&[u64]>) {}
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
    /// The areas `mmap` made (and the program image, so a hint or MAP_FIXED_NOREPLACE sees it): what a fault
    /// there maps, with which protection, and what fork shares instead of copying.
    pub vmas: VmaMap,
}

/// Where `mmap` places mappings: below the stack's reserve, top-down (as Linux's default layout).
pub const MMAP_TOP: u64 = STACK_TOP - STACK_MAX - (1 << 30);

/// The page-table flags for a protection. PROT_NONE keeps the page present but not user-accessible, so its
/// contents survive until the protection is given back (x86 has no write-only or execute-only pages: any
/// access right implies read).
fn prot_flags(prot: u32) -> PageFlags {
    let mut f = PageFlags::empty();
    if prot & (PROT_READ | PROT_WRITE | PROT_EXEC) != 0 {
        f |= PageFlags::USER;
    }
    if prot & PROT_WRITE != 0 {
        f |= PageFlags::WRITABLE;
    }
    if prot & PROT_EXEC == 0 {
        f |= PageFlags::NO_EXECUTE;
    }
    f
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
    /// An empty user space whose PML4 slot [`KERNEL_SLOT`] is the kernel's (`kernel_slot` is that PML4 entry).
    pub fn new<M: PhysMem>(mem: &mut M, kernel_slot: u64) -> Result<UserSpace, UserError> {
        let aspace = AddressSpace::new(mem)?;
        mem.table(aspace.root())[KERNEL_SLOT] = kernel_slot;
        Ok(UserSpace { aspace, brk_start: USER_BASE, brk: USER_BASE, vmas: VmaMap::new(USER_BASE, MMAP_TOP, MMAP_TOP) })
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

    /// Unmap `[va, va+len)`, dropping a reference to each mapped page (after every CPU has forgotten them).
    pub fn unmap<M: PhysMem>(&mut self, mem: &mut M, va: u64, len: u64) -> Result<(), UserError> {
        if va % PAGE_SIZE != 0 || !user_range_ok(va, len) {
            return Err(UserError::Fault);
        }
        let mut freed = Vec::new();
        let mut v = va;
        while v < va + len {
            if let Some(pa) = self.aspace.unmap_4k(mem, v) {
                freed.push(pa);
            }
            v += PAGE_SIZE;
        }
        if !freed.is_empty() {
            mem.tlb_shootdown(self.root(), None);
        }
        for pa in freed {
            mem.release(pa);
        }
        Ok(())
    }

    /// Copy-on-write duplicate. On failure the partial child is torn down and nothing leaks; the parent's
    /// pages may already be marked COW, which a later write fault resolves without copying.
    pub fn fork<M: PhysMem>(&self, mem: &mut M) -> Result<UserSpace, UserError> {
        self.fork_copying(mem, &[])
    }

    /// [`fork`](Self::fork), with the private writable pages holding `eager` copied for the child at once
    /// instead of shared copy-on-write: the pages both sides are about to write (the parent's stack where
    /// it stands, its thread block), which would otherwise cost each side a fault, one of them a copy anyway.
    pub fn fork_copying<M: PhysMem>(&self, mem: &mut M, eager: &[u64]) -> Result<UserSpace, UserError> {
        let kernel_slot = mem.table(self.aspace.root())[KERNEL_SLOT];
        let mut child = UserSpace::new(mem, kernel_slot)?;
        child.brk_start = self.brk_start;
        child.brk = self.brk;
        child.vmas = self.vmas.clone();
        // One pass over the parent's page tables, each copied into one of the child's. The area (or the gap
        // between areas) of the last leaf is kept: consecutive leaves are mostly in one.
        let mut area: Option<(u64, u64, bool)> = None;
        // The pages made read-only here (up to the number worth flushing one by one).
        let mut downgraded = [0u64; 32];
        let mut n_downgraded = 0;
        let mut out_of_memory = false;
        let copied = self.aspace.fork_into(mem, &mut child.aspace, USER_SLOTS, &mut |m, va, e| {
            let pa = *e & ADDR_MASK;
            let mut flags = entry_flags(*e);
            if flags.contains(PageFlags::WRITABLE) && eager.iter().any(|&p| p & !(PAGE_SIZE - 1) == va) && !self.vmas.find(va).is_some_and(|v| v.kind == Kind::Shared) {
                // The child's own copy now; the parent keeps its page as it is (writable, no flush needed).
                match m.alloc_page_copy(pa) {
                    Some(copy) => return copy | flags.bits() | PageFlags::PRESENT.bits(),
                    None => out_of_memory = true,
                }
            }
            let shared = match area {
                Some((start, end, shared)) if (start..end).contains(&va) => shared,
                _ => {
                    let (start, end, found) = self.vmas.area_or_gap(va);
                    let shared = found.is_some_and(|v| v.kind == Kind::Shared);
                    area = Some((start, end, shared));
                    shared
                }
            };
            // Shared memory stays shared (same page, same rights); everything else writable becomes COW.
            if !shared && flags.intersects(PageFlags::WRITABLE | PageFlags::COW) {
                if flags.contains(PageFlags::WRITABLE) {
                    if let Some(slot) = downgraded.get_mut(n_downgraded) {
                        *slot = va;
                    }
                    n_downgraded += 1;
                }
                flags = (flags - PageFlags::WRITABLE) | PageFlags::COW;
                *e = pa | flags.bits() | PageFlags::PRESENT.bits();
            }
            m.share(pa);
            *e
        });
        // Neither the parent nor its other threads may keep writing through entries that are read-only + COW now.
        mem.tlb_shootdown(self.root(), downgraded.get(..n_downgraded).map(|d| d as &[u64]));
        if let Err(e) = copied {
            child.teardown(mem);
            return Err(e.into());
        }
        if out_of_memory {
            child.teardown(mem);
            return Err(UserError::NoMemory);
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
        let area = self.vmas.find(page).copied();
        if entry & PageFlags::PRESENT.bits() == 0 {
            let flags = match area {
                // An mmap area is filled on first touch, if the access is one its protection allows.
                Some(v) if v.kind == Kind::Image || v.prot & (PROT_READ | PROT_WRITE | PROT_EXEC) == 0 || (write && v.prot & PROT_WRITE == 0) => {
                    return FaultOutcome::Segfault;
                }
                Some(v) => prot_flags(v.prot),
                None if in_stack(page) => USER_RW,
                None => return FaultOutcome::Segfault,
            };
            return match self.map_zeroed(mem, page, PAGE_SIZE, flags) {
                Ok(()) => FaultOutcome::Resolved,
                Err(UserError::NoMemory) => FaultOutcome::OutOfMemory,
                Err(UserError::Fault) => FaultOutcome::Segfault,
            };
        }
        let flags = entry_flags(entry);
        if write && flags.contains(PageFlags::USER | PageFlags::WRITABLE) {
            // Already writable: a stale read-only TLB entry (a kernel copy broke COW or the page changed on
            // another path since); the caller's invlpg is all it takes.
            return FaultOutcome::Resolved;
        }
        let writable_area = area.is_none_or(|v| v.prot & PROT_WRITE != 0);
        if !write || !flags.contains(PageFlags::COW) || !writable_area || !flags.contains(PageFlags::USER) {
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
        let Some(copy) = mem.alloc_page_copy(pa) else { return FaultOutcome::OutOfMemory };
        *self.aspace.leaf_mut(mem, page).unwrap() = copy | new_flags.bits() | PageFlags::PRESENT.bits();
        // Other threads' CPUs must not read the old frame through a stale entry while this one writes the copy.
        mem.tlb_shootdown(self.root(), Some(&[page]));
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

    /// `mmap` of anonymous memory: place it (a hint, MAP_FIXED, MAP_FIXED_NOREPLACE), record the area and
    /// drop whatever pages it replaces; its own pages come on first touch. Returns the address.
    pub fn mmap_anonymous<M: PhysMem>(&mut self, mem: &mut M, placement: Placement, len: u64, prot: u32, kind: Kind) -> Result<u64, VmaError> {
        // The brk heap is not an area, but it is taken: a hint never lands in its reserve, and
        // MAP_FIXED_NOREPLACE does not replace it.
        let heap = self.brk_start..self.brk_start + BRK_MAX;
        let heap_now = self.brk_start..self.brk.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let end = |a: u64| a.saturating_add(len);
        let placement = match placement {
            Placement::Hint(h) if h < heap.end && end(h) > heap.start => Placement::Hint(0),
            Placement::FixedNoReplace(a) if a < heap_now.end && end(a) > heap_now.start => return Err(VmaError::Exists),
            p => p,
        };
        let addr = self.vmas.place(placement, len)?;
        let len = super::vma::page_len(len).ok_or(VmaError::Invalid)?;
        self.vmas.map(addr, len, prot, kind)?;
        // Whatever was mapped there before (an area, or pages the areas do not describe) is replaced.
        let _ = self.unmap(mem, addr, len);
        if kind == Kind::Shared {
            // Shared memory gets its pages now: a page first touched after a fork must be the same page in
            // parent and child, and there is no object behind the area to find it by.
            if let Err(e) = self.map_zeroed(mem, addr, len, prot_flags(prot)) {
                let _ = self.unmap(mem, addr, len);
                let _ = self.vmas.unmap(addr, len);
                return Err(if e == UserError::NoMemory { VmaError::NoMemory } else { VmaError::Invalid });
            }
            if prot & (PROT_READ | PROT_WRITE | PROT_EXEC) == 0 {
                // map_zeroed makes pages user-accessible; PROT_NONE takes that back.
                self.mprotect(mem, addr, len, prot)?;
            }
        }
        Ok(addr)
    }

    /// `munmap`: the areas and their pages in [addr, addr + len).
    pub fn munmap<M: PhysMem>(&mut self, mem: &mut M, addr: u64, len: u64) -> Result<(), VmaError> {
        let len = super::vma::page_len(len).ok_or(VmaError::Invalid)?;
        if addr % PAGE_SIZE != 0 || !user_range_ok(addr, len) {
            return Err(VmaError::Invalid);
        }
        self.vmas.unmap(addr, len)?;
        let _ = self.unmap(mem, addr, len);
        Ok(())
    }

    /// `mprotect`: the areas' protection, and that of their pages already present (a COW page stays
    /// read-only until its write fault copies it).
    pub fn mprotect<M: PhysMem>(&mut self, mem: &mut M, addr: u64, len: u64, prot: u32) -> Result<(), VmaError> {
        if addr % PAGE_SIZE != 0 {
            return Err(VmaError::Invalid);
        }
        if len != 0 && !user_range_ok(addr, len) {
            return Err(VmaError::NoMemory);
        }
        for (start, end, _) in self.vmas.protect(addr, len, prot)? {
            let mut va = start;
            while va < end {
                if let Some(leaf) = self.aspace.leaf_mut(mem, va) {
                    if *leaf & PageFlags::PRESENT.bits() != 0 {
                        let old = entry_flags(*leaf);
                        let mut f = prot_flags(prot) | (old & PageFlags::COW);
                        if old.contains(PageFlags::COW) {
                            f -= PageFlags::WRITABLE;
                        }
                        *leaf = (*leaf & ADDR_MASK) | f.bits() | PageFlags::PRESENT.bits();
                    }
                }
                va += PAGE_SIZE;
            }
        }
        mem.tlb_shootdown(self.root(), None);
        Ok(())
    }

    /// `mremap(old, old_len, new_len, flags, new_addr)` (MREMAP_MAYMOVE 1, MREMAP_FIXED 2) of one area:
    /// shrinking unmaps the tail; growing extends in place when the pages after it are free, else (with
    /// MAYMOVE) moves the area — its page-table entries, not its data — to a new place, or to `new_addr` with
    /// FIXED (replacing what is there). Returns the address. Errors as Linux: EINVAL (misaligned, zero new
    /// length, unknown flags, FIXED without MAYMOVE, a FIXED range overlapping the old one), EFAULT (the old
    /// range is not within one mapping), ENOMEM (no room, or growing in place impossible without MAYMOVE).
    pub fn mremap<M: PhysMem>(&mut self, mem: &mut M, old: u64, old_len: u64, new_len: u64, flags: u64, new_addr: u64) -> Result<u64, VmaError> {
        const MAYMOVE: u64 = 1;
        const FIXED: u64 = 2;
        if old % PAGE_SIZE != 0 || flags & !(MAYMOVE | FIXED) != 0 || (flags & FIXED != 0 && flags & MAYMOVE == 0) {
            return Err(VmaError::Invalid);
        }
        let new_len = super::vma::page_len(new_len).ok_or(VmaError::Invalid)?;
        // An old length of 0 duplicates shared mappings on Linux; questv does not (EINVAL, as for private ones).
        let old_len = super::vma::page_len(old_len).ok_or(VmaError::Invalid)?;
        let area = *self.vmas.find(old).ok_or(VmaError::Fault)?;
        let old_end = old.checked_add(old_len).ok_or(VmaError::Fault)?;
        if old_end > area.end {
            return Err(VmaError::Fault);
        }
        if flags & FIXED != 0 {
            let end = new_addr.checked_add(new_len).ok_or(VmaError::Invalid)?;
            if new_addr % PAGE_SIZE != 0 || (new_addr < old_end && old < end) {
                return Err(VmaError::Invalid);
            }
            if !user_range_ok(new_addr, new_len) {
                return Err(VmaError::NoMemory);
            }
            return self.move_area(mem, area, old, old_len, new_len, Placement::Fixed(new_addr));
        }
        if new_len <= old_len {
            if new_len < old_len {
                self.munmap(mem, old + new_len, old_len - new_len)?;
            }
            return Ok(old);
        }
        let grow_end = old.checked_add(new_len).ok_or(VmaError::NoMemory)?;
        let heap = self.brk_start..self.brk_start + BRK_MAX;
        let in_place = old_end == area.end
            && grow_end <= MMAP_TOP
            && self.vmas.is_free(old_end, grow_end)
            && !(old_end < heap.end && grow_end > heap.start);
        if in_place {
            self.vmas.map(old_end, grow_end - old_end, area.prot, area.kind)?;
            if area.kind == Kind::Shared {
                if let Err(e) = self.map_zeroed(mem, old_end, grow_end - old_end, prot_flags(area.prot)) {
                    let _ = self.unmap(mem, old_end, grow_end - old_end);
                    let _ = self.vmas.unmap(old_end, grow_end - old_end);
                    return Err(if e == UserError::NoMemory { VmaError::NoMemory } else { VmaError::Invalid });
                }
            }
            return Ok(old);
        }
        if flags & MAYMOVE == 0 {
            return Err(VmaError::NoMemory);
        }
        self.move_area(mem, area, old, old_len, new_len, Placement::Hint(0))
    }

    /// mremap's move: a new area of `new_len` where `placement` puts it, with the old range's pages (up to
    /// `new_len`) moved there entry by entry; the rest of the old range is unmapped; growth beyond the old
    /// length is filled on demand (shared memory: at once).
    fn move_area<M: PhysMem>(&mut self, mem: &mut M, area: super::vma::Vma, old: u64, old_len: u64, new_len: u64, placement: Placement) -> Result<u64, VmaError> {
        let to = match placement {
            Placement::Fixed(a) => a,
            p => {
                // Not over the heap's reserve (as mmap's hints).
                let heap = self.brk_start..self.brk_start + BRK_MAX;
                let a = self.vmas.place(p, new_len)?;
                if a < heap.end && a + new_len > heap.start {
                    return Err(VmaError::NoMemory);
                }
                a
            }
        };
        if let Placement::Fixed(a) = placement {
            self.munmap(mem, a, new_len)?;
        }
        let moved = old_len.min(new_len);
        // Move the entries; on running out of memory for page tables, put back what moved.
        let mut done = 0;
        while done < moved {
            let from = old + done;
            let entry = self.aspace.leaf_mut(mem, from).map(|e| *e).unwrap_or(0);
            if entry & PageFlags::PRESENT.bits() != 0 {
                if self.aspace.map_4k(mem, to + done, entry & ADDR_MASK, entry_flags(entry) - PageFlags::PRESENT).is_err() {
                    let mut back = 0;
                    while back < done {
                        if let Some(e) = self.aspace.leaf_mut(mem, to + back).map(|e| core::mem::take(e)) {
                            if e & PageFlags::PRESENT.bits() != 0 {
                                let _ = self.aspace.map_4k(mem, old + back, e & ADDR_MASK, entry_flags(e) - PageFlags::PRESENT);
                            }
                        }
                        back += PAGE_SIZE;
                    }
                    return Err(VmaError::NoMemory);
                }
                if let Some(e) = self.aspace.leaf_mut(mem, from) {
                    *e = 0;
                }
            }
            done += PAGE_SIZE;
        }
        // The old entries are gone: no CPU may keep using them.
        mem.tlb_shootdown(self.root(), None);
        let _ = self.vmas.unmap(old, old_len);
        let _ = self.unmap(mem, old, old_len);
        self.vmas.map(to, new_len, area.prot, area.kind)?;
        if area.kind == Kind::Shared && new_len > old_len {
            let _ = self.map_zeroed(mem, to + old_len, new_len - old_len, prot_flags(area.prot));
        }
        Ok(to)
    }

    /// `madvise(MADV_DONTNEED)` on private anonymous memory: its pages go; the next touch reads zeros (the
    /// program image and shared memory keep theirs).
    pub fn dont_need<M: PhysMem>(&mut self, mem: &mut M, addr: u64, len: u64) -> Result<(), VmaError> {
        let len = super::vma::page_len(len).ok_or(VmaError::Invalid)?;
        if addr % PAGE_SIZE != 0 || !user_range_ok(addr, len) {
            return Err(VmaError::Invalid);
        }
        let mut va = addr;
        while va < addr + len {
            if self.vmas.find(va).is_some_and(|v| v.kind == Kind::Private) {
                let _ = self.unmap(mem, va, PAGE_SIZE);
            }
            va += PAGE_SIZE;
        }
        Ok(())
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

    /// Free every user page reference and every user page table, and the PML4.
    pub fn teardown<M: PhysMem>(self, mem: &mut M) {
        let root = self.retire(mem);
        mem.table(root)[KERNEL_SLOT] = 0;
        mem.free_zeroed_table(root);
    }

    /// Free every user page reference and every user page table but keep the PML4, which may still be loaded
    /// on this CPU (an exiting process's last thread runs on it until its CPU switches away): returns it, with
    /// only the kernel's slot left, to be freed once no CPU runs on it (`kmem::free_retired_root`).
    pub fn retire<M: PhysMem>(mut self, mem: &mut M) -> u64 {
        // One pass: each page table's pages are released before the table is freed (the walk visits a table
        // after everything under it, and never again); the tables come back zeroed, ready for reuse.
        self.aspace.dismantle(mem, USER_SLOTS, &mut |m, _, e| m.release(e & ADDR_MASK), &mut |m, t| m.free_zeroed_table(t));
        self.aspace.root()
    }

    /// The space's size as /proc reports it: bytes of its areas and heap (VmSize), and pages present (RSS).
    pub fn sizes<M: PhysMem>(&self, mem: &mut M) -> (u64, u64) {
        let areas: u64 = self.vmas.areas().map(|v| v.end - v.start).sum();
        let mut present = 0;
        self.aspace.walk(mem, USER_SLOTS, &mut |_, _, _| present += 1, &mut |_, _| {});
        (areas + (self.brk - self.brk_start), present)
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
        fn alloc_page_copy(&mut self, src: u64) -> Option<u64> {
            let copy = self.pages[&src].1.clone();
            let pa = self.take()?;
            self.pages.insert(pa, (1, copy));
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
        fn free_zeroed_table(&mut self, pa: u64) {
            assert!(self.tables[&pa].iter().all(|&e| e == 0), "table 0x{pa:x} freed as zeroed with entries in it");
            self.free_table(pa);
        }
    }

    const KERNEL_ENTRY: u64 = 0xABC000 | 3;

    fn space(mem: &mut FakeMem) -> UserSpace {
        let mut s = UserSpace::new(mem, KERNEL_ENTRY).unwrap();
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
    fn mremap_shrinks_grows_in_place_and_moves_pages_not_data() {
        let mut mem = FakeMem::default();
        let mut s = UserSpace::new(&mut mem, KERNEL_ENTRY).unwrap();
        let a = s.mmap_anonymous(&mut mem, Placement::Hint(0), 4 * PAGE_SIZE, PROT_READ | PROT_WRITE, Kind::Private).unwrap();
        for i in 0..4 {
            assert_eq!(s.handle_fault(&mut mem, a + i * PAGE_SIZE, true), FaultOutcome::Resolved);
            s.copy_to_user(&mut mem, a + i * PAGE_SIZE, &[b'a' + i as u8]).unwrap();
        }
        // Shrink: the tail goes, the address stays.
        assert_eq!(s.mremap(&mut mem, a, 4 * PAGE_SIZE, 2 * PAGE_SIZE, 0, 0), Ok(a));
        assert!(s.vmas.find(a + 2 * PAGE_SIZE).is_none() && s.translate(&mut mem, a + 2 * PAGE_SIZE).is_none());
        // Grow in place: the pages after it are free again.
        assert_eq!(s.mremap(&mut mem, a, 2 * PAGE_SIZE, 3 * PAGE_SIZE, 0, 0), Ok(a));
        assert_eq!(s.vmas.find(a + 2 * PAGE_SIZE).map(|v| v.end), Some(a + 3 * PAGE_SIZE));
        // Blocked by a neighbour: ENOMEM without MAYMOVE; moved with it, the same frames at the new place.
        s.mmap_anonymous(&mut mem, Placement::Fixed(a + 3 * PAGE_SIZE), PAGE_SIZE, PROT_READ, Kind::Private).unwrap();
        assert_eq!(s.mremap(&mut mem, a, 3 * PAGE_SIZE, 8 * PAGE_SIZE, 0, 0), Err(VmaError::NoMemory));
        let frame = s.translate(&mut mem, a + PAGE_SIZE).unwrap().0;
        let pages = mem.pages.len();
        let b = s.mremap(&mut mem, a, 3 * PAGE_SIZE, 8 * PAGE_SIZE, 1, 0).unwrap();
        assert_ne!(b, a);
        assert_eq!(mem.pages.len(), pages, "a move copies no page");
        assert_eq!(s.translate(&mut mem, b + PAGE_SIZE).unwrap().0, frame);
        assert_eq!(read(&mut s, &mut mem, b + PAGE_SIZE, 1), b"b");
        assert!(s.vmas.find(a).is_none() && s.translate(&mut mem, a).is_none(), "the old place is gone");
        assert_eq!(s.vmas.find(b + 7 * PAGE_SIZE).map(|v| v.prot), Some(PROT_READ | PROT_WRITE));
        // MREMAP_FIXED to a chosen place; overlapping the old range is EINVAL.
        let fixed = MMAP_TOP - 64 * PAGE_SIZE;
        assert_eq!(s.mremap(&mut mem, b, PAGE_SIZE, PAGE_SIZE, 3, b), Err(VmaError::Invalid));
        assert_eq!(s.mremap(&mut mem, b, PAGE_SIZE, PAGE_SIZE, 3, fixed), Ok(fixed));
        assert_eq!(read(&mut s, &mut mem, fixed, 1), b"a");
        // Errors: not mapped (EFAULT), bad flags or FIXED without MAYMOVE (EINVAL), zero length (EINVAL).
        assert_eq!(s.mremap(&mut mem, a, PAGE_SIZE, PAGE_SIZE, 0, 0), Err(VmaError::Fault));
        assert_eq!(s.mremap(&mut mem, fixed, PAGE_SIZE, PAGE_SIZE, 8, 0), Err(VmaError::Invalid));
        assert_eq!(s.mremap(&mut mem, fixed, PAGE_SIZE, PAGE_SIZE, 2, 0), Err(VmaError::Invalid));
        assert_eq!(s.mremap(&mut mem, fixed, PAGE_SIZE, 0, 0, 0), Err(VmaError::Invalid));
        s.teardown(&mut mem);
        assert!(mem.pages.is_empty() && mem.tables.is_empty(), "leaked");
    }

    #[test]
    fn fork_copies_eager_pages_at_once_and_leaves_the_parents_writable() {
        let mut mem = FakeMem::default();
        let mut parent = space(&mut mem);
        let child_space = parent.fork_copying(&mut mem, &[USER_BASE + PAGE_SIZE + 8]).unwrap();
        let mut child = child_space;
        // The eager page: a private copy for the child, the parent's still writable (not COW).
        let (ppa, pflags) = parent.translate(&mut mem, USER_BASE + PAGE_SIZE).unwrap();
        let (cpa, cflags) = child.translate(&mut mem, USER_BASE + PAGE_SIZE).unwrap();
        assert_ne!(ppa, cpa);
        assert!(pflags.contains(PageFlags::WRITABLE) && !pflags.contains(PageFlags::COW));
        assert!(cflags.contains(PageFlags::WRITABLE) && !cflags.contains(PageFlags::COW));
        assert_eq!((mem.refs(ppa & !(PAGE_SIZE - 1)), mem.refs(cpa & !(PAGE_SIZE - 1))), (1, 1));
        // The others: shared copy-on-write as before.
        let (p0, f0) = parent.translate(&mut mem, USER_BASE).unwrap();
        assert!(f0.contains(PageFlags::COW) && mem.refs(p0 & !(PAGE_SIZE - 1)) == 2);
        assert_eq!(read(&mut child, &mut mem, USER_BASE, 6), b"parent");
        child.copy_to_user(&mut mem, USER_BASE + PAGE_SIZE, b"child").unwrap();
        parent.copy_to_user(&mut mem, USER_BASE + PAGE_SIZE, b"PARENT").unwrap();
        assert_eq!(read(&mut child, &mut mem, USER_BASE + PAGE_SIZE, 5), b"child");
        child.teardown(&mut mem);
        parent.teardown(&mut mem);
        assert!(mem.pages.is_empty() && mem.tables.is_empty(), "leaked");
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
        assert_eq!(mem.table(child.root())[KERNEL_SLOT], KERNEL_ENTRY);

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
        let mut s = UserSpace::new(&mut mem, KERNEL_ENTRY).unwrap();
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

    #[test]
    fn anonymous_mappings_fill_on_first_touch_with_their_protection() {
        use crate::mm::vma::{Kind, Placement, VmaError, PROT_READ, PROT_WRITE};
        let mut mem = FakeMem::default();
        let mut s = space(&mut mem);
        let a = s.mmap_anonymous(&mut mem, Placement::Hint(0), 3 * PAGE_SIZE, PROT_READ | PROT_WRITE, Kind::Private).unwrap();
        assert_eq!(a, MMAP_TOP - 3 * PAGE_SIZE);
        assert!(s.translate(&mut mem, a).is_none(), "nothing mapped before the first touch");
        s.copy_to_user(&mut mem, a + 5000, b"demand").unwrap();
        assert_eq!(read(&mut s, &mut mem, a + 5000, 6), b"demand");
        assert!(s.translate(&mut mem, a).is_none(), "only the touched page");
        // Read-only: readable (zeros), not writable, even by the kernel on the process's behalf.
        let r = s.mmap_anonymous(&mut mem, Placement::Hint(0), PAGE_SIZE, PROT_READ, Kind::Private).unwrap();
        assert_eq!(read(&mut s, &mut mem, r, 4), [0; 4]);
        assert_eq!(s.copy_to_user(&mut mem, r, b"x"), Err(UserError::Fault));
        assert_eq!(s.handle_fault(&mut mem, r, true), FaultOutcome::Segfault);
        // mprotect to PROT_NONE keeps the contents, out of reach; back to RW they are there.
        s.mprotect(&mut mem, a + 4096, 4096, 0).unwrap();
        let mut b = [0u8; 6];
        assert_eq!(s.copy_from_user(&mut mem, a + 5000, &mut b), Err(UserError::Fault));
        assert_eq!(s.handle_fault(&mut mem, a + 5000, false), FaultOutcome::Segfault);
        s.mprotect(&mut mem, a + 4096, 4096, PROT_READ | PROT_WRITE).unwrap();
        assert_eq!(read(&mut s, &mut mem, a + 5000, 6), b"demand");
        // munmap: gone, and a fault there is a segfault.
        s.munmap(&mut mem, a, 3 * PAGE_SIZE).unwrap();
        assert_eq!(s.handle_fault(&mut mem, a + 5000, false), FaultOutcome::Segfault);
        assert_eq!(s.munmap(&mut mem, a + 1, PAGE_SIZE), Err(VmaError::Invalid));
        // MAP_FIXED_NOREPLACE over the heap, or over an area: EEXIST.
        (s.brk_start, s.brk) = (USER_BASE + 0x10000, USER_BASE + 0x10000);
        assert_eq!(s.set_brk(&mut mem, USER_BASE + 0x13000), USER_BASE + 0x13000);
        assert_eq!(s.mmap_anonymous(&mut mem, Placement::FixedNoReplace(USER_BASE + 0x12000), PAGE_SIZE, PROT_READ, Kind::Private), Err(VmaError::Exists));
        assert_eq!(s.mmap_anonymous(&mut mem, Placement::FixedNoReplace(r), PAGE_SIZE, PROT_READ, Kind::Private), Err(VmaError::Exists));
        // A hint inside the heap's reserve is not taken.
        let h = s.mmap_anonymous(&mut mem, Placement::Hint(USER_BASE + 0x20000), PAGE_SIZE, PROT_READ, Kind::Private).unwrap();
        assert!(h > s.brk_start + BRK_MAX);
        s.teardown(&mut mem);
        assert_eq!(mem.pages.len(), 0, "every page freed");
    }

    #[test]
    fn fork_shares_shared_memory_and_copies_private() {
        use crate::mm::vma::{Kind, Placement, PROT_READ, PROT_WRITE};
        let mut mem = FakeMem::default();
        let mut parent = space(&mut mem);
        let rw = PROT_READ | PROT_WRITE;
        let sh = parent.mmap_anonymous(&mut mem, Placement::Hint(0), PAGE_SIZE, rw, Kind::Shared).unwrap();
        let pr = parent.mmap_anonymous(&mut mem, Placement::Hint(0), PAGE_SIZE, rw, Kind::Private).unwrap();
        parent.copy_to_user(&mut mem, sh, b"shared").unwrap();
        parent.copy_to_user(&mut mem, pr, b"privat").unwrap();
        let mut child = parent.fork(&mut mem).unwrap();
        child.copy_to_user(&mut mem, sh, b"SHARED").unwrap();
        child.copy_to_user(&mut mem, pr, b"PRIVAT").unwrap();
        assert_eq!(read(&mut parent, &mut mem, sh, 6), b"SHARED", "the parent sees the child's write to shared memory");
        assert_eq!(read(&mut parent, &mut mem, pr, 6), b"privat", "but not to private memory");
        child.teardown(&mut mem);
        parent.teardown(&mut mem);
        assert_eq!(mem.pages.len(), 0);
    }
}
