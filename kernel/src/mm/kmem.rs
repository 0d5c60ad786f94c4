//! The kernel's physical memory: the global frame allocator (fed from the multiboot2 memory map) with a small
//! per-CPU frame cache in front of it, the kernel heap (linked_list_allocator behind an interrupt-safe lock),
//! reference counts of user pages and the kernel's own page tables.

use super::frame::{FrameAllocator, FrameError};
use super::memmap::{self, Area, Region};
use super::size_class::{class_layout, class_of, CLASSES, CLASS_KEEP, SMALLEST_CLASS};
use crate::sync::IrqSpinlock;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use questv_arch::paging::{phys_to_virt, virt_to_phys, AddressSpace, PageFlags, TableMemory, KERNEL_BASE, LARGE_PAGE_SIZE, PAGE_SIZE};
use questv_arch::percpu::{self, MAX_CPUS};

/// Highest physical address the frame allocator manages (16 GiB; more RAM is reported and left unused).
pub const MAX_PHYS: u64 = 16 << 30;
const BITMAP_WORDS: usize = (MAX_PHYS / PAGE_SIZE / 64) as usize;

static mut FRAME_BITMAP: [u64; BITMAP_WORDS] = [0; BITMAP_WORDS];
static FRAMES: IrqSpinlock<Option<FrameAllocator<'static>>> = IrqSpinlock::new(None);

extern "C" {
    static __kernel_start: u8;
    static __rodata_start: u8;
    static __data_start: u8;
    static __kernel_end: u8;
}

/// The physical address of a linker symbol (the image is linked at KERNEL_BASE + its load address).
fn sym(s: &u8) -> u64 {
    virt_to_phys(s as *const u8 as u64)
}

#[derive(Debug, Clone, Copy)]
pub struct MemoryInfo {
    pub usable_bytes: u64,
    pub highest_address: u64,
    pub heap_bytes: u64,
    pub regions: usize,
}

/// How many regions (boot information + modules) `init` keeps out of the allocator.
pub const MAX_KEEP: usize = 64;

/// Build the frame allocator from the memory map, keeping `keep` (boot information, modules) and the kernel
/// image, then carve out the heap.
pub fn init(areas: &[Area], keep: &[Region]) -> MemoryInfo {
    // SAFETY: linker symbols; only addresses are taken.
    let (kstart, kend) = unsafe { (sym(&__kernel_start), sym(&__kernel_end)) };
    let mut reserved = [Region::new(0, 0); MAX_KEEP + 2];
    assert!(keep.len() <= MAX_KEEP, "more kept regions than the allocator reserves");
    // The low 1 MiB holds the BIOS data area, EBDA and the AP trampoline: never hand it out.
    reserved[0] = Region::new(0, 0x10_0000);
    reserved[1] = Region::new(kstart, kend);
    for (slot, k) in reserved[2..].iter_mut().zip(keep) {
        *slot = *k;
    }
    let usable = memmap::usable_regions(areas, &reserved);
    if usable.truncated {
        log::warn!("memory map has more than {} usable regions; the rest is ignored", memmap::MAX_REGIONS);
    }
    // SAFETY: the bitmap is used only through FRAMES from now on; init runs once on the BSP.
    let bits: &'static mut [u64] = unsafe { &mut *(&raw mut FRAME_BITMAP) };
    let mut fa = FrameAllocator::new(bits);
    for r in usable.as_slice() {
        fa.add_region(*r);
    }
    let highest = memmap::highest_address(areas);
    HIGHEST.store(highest, core::sync::atomic::Ordering::Relaxed);
    if highest > MAX_PHYS {
        log::warn!("RAM above {} GiB is not managed", MAX_PHYS >> 30);
    }
    let usable_bytes = fa.free_frames() * PAGE_SIZE;
    USABLE.store(usable_bytes, core::sync::atomic::Ordering::Relaxed);
    // Heap: a quarter of RAM, between 4 and 64 MiB.
    let heap_bytes = (usable_bytes / 4).clamp(4 << 20, 64 << 20) & !(LARGE_PAGE_SIZE - 1);
    let heap = fa
        .alloc_contiguous(heap_bytes / PAGE_SIZE, LARGE_PAGE_SIZE, 4 << 30)
        .expect("not enough contiguous memory for the kernel heap");
    *FRAMES.lock() = Some(fa);
    HEAP_BYTES.store(heap_bytes as usize, Ordering::Relaxed);
    // SAFETY: [heap, heap + heap_bytes) was just taken from the frame allocator, below 4 GiB: the boot tables
    // map it (the heap is used before the kernel's own tables exist), and so do the kernel's.
    unsafe { HEAP.0.lock().heap.init(phys_to_virt(heap) as *mut u8, heap_bytes as usize) };
    MemoryInfo { usable_bytes, highest_address: highest, heap_bytes, regions: usable.as_slice().len() }
}

static HIGHEST: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// The allocator's memory at boot, before the heap was taken from it.
static USABLE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Usable RAM at boot (what `sysinfo` reports as total).
pub fn usable_bytes() -> u64 {
    USABLE.load(core::sync::atomic::Ordering::Relaxed)
}

/// The end of the highest RAM area the boot loader reported (in a VT sandbox: the end of its own slice).
pub fn highest_address() -> u64 {
    HIGHEST.load(core::sync::atomic::Ordering::Relaxed)
}

/// Frames a CPU keeps for itself, so single-frame allocation and freeing (page tables, user pages: the fork,
/// fault and exit paths) rarely touch the global allocator's lock.
const CACHE_FRAMES: usize = 64;
/// Frames moved between a CPU's cache and the global allocator at once (refill when empty, drain when full).
const CACHE_BATCH: usize = 32;

/// Zeroed frames a CPU keeps apart (page tables handed back empty at exit), so the next page table or zeroed
/// page costs no clearing.
const CLEAN_FRAMES: usize = 32;

struct FrameCache {
    frames: [u64; CACHE_FRAMES],
    len: usize,
    /// Frames known to be all zeroes.
    clean: [u64; CLEAN_FRAMES],
    clean_len: usize,
    /// Frames this CPU will free at its next thread switch ([`defer_free_frame`]), counted as free already.
    deferred: usize,
}

impl FrameCache {
    fn held(&self) -> usize {
        self.len + self.clean_len + self.deferred
    }

    /// Keep a zeroed frame apart; false when there is no room.
    fn keep_clean(&mut self, pa: u64) -> bool {
        if self.clean_len == CLEAN_FRAMES {
            return false;
        }
        self.clean[self.clean_len] = pa;
        self.clean_len += 1;
        true
    }
}

/// One CPU's frame cache. The lock is only ever contended by [`drain_frame_caches`]; it also keeps the cache
/// consistent if its owner is interrupted or migrates between reading its CPU index and taking the lock.
#[repr(align(64))]
struct CpuFrameCache {
    cache: IrqSpinlock<FrameCache>,
    /// `cache.held()`, readable without the cache lock. Frames move between a cache and the global allocator only
    /// under `FRAMES`'s lock, so [`free_frames`] (which holds it) sees every frame in exactly one place.
    held: AtomicUsize,
}

static CACHES: [CpuFrameCache; MAX_CPUS] = [const {
    CpuFrameCache {
        cache: IrqSpinlock::new(FrameCache { frames: [0; CACHE_FRAMES], len: 0, clean: [0; CLEAN_FRAMES], clean_len: 0, deferred: 0 }),
        held: AtomicUsize::new(0),
    }
}; MAX_CPUS];

fn local_cache() -> &'static CpuFrameCache {
    &CACHES[percpu::cpu_index() as usize]
}

fn bad_free(e: FrameError) -> ! {
    panic!("bad frame free: {:?}", e)
}

/// A frame from this CPU's cache, refilled from the global allocator when empty; a clean frame when there is
/// nothing else. Returns the frame and whether it is known to be zeroed.
fn cached_alloc() -> Option<(u64, bool)> {
    let c = local_cache();
    let mut cache = c.cache.lock();
    if cache.len == 0 {
        let mut frames = FRAMES.lock();
        let n = frames.as_mut()?.alloc_batch(&mut cache.frames[..CACHE_BATCH]);
        cache.len = n;
    }
    let got = if cache.len > 0 {
        cache.len -= 1;
        (cache.frames[cache.len], false)
    } else if cache.clean_len > 0 {
        cache.clean_len -= 1;
        (cache.clean[cache.clean_len], true)
    } else {
        c.held.store(0, Ordering::Relaxed);
        return None;
    };
    c.held.store(cache.held(), Ordering::Relaxed);
    Some(got)
}

/// A zeroed frame from this CPU's clean frames.
fn clean_alloc() -> Option<u64> {
    let c = local_cache();
    let mut cache = c.cache.lock();
    if cache.clean_len == 0 {
        return None;
    }
    cache.clean_len -= 1;
    c.held.store(cache.held(), Ordering::Relaxed);
    Some(cache.clean[cache.clean_len])
}

/// Return every CPU's cached frames to the global allocator (before contiguous allocations and range
/// queries, which only see the bitmap, and before giving up for lack of memory).
fn drain_frame_caches() {
    for c in &CACHES {
        if c.held.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let mut cache = c.cache.lock();
        let (n, z) = (cache.len, cache.clean_len);
        let mut frames = FRAMES.lock();
        if let Some(fa) = frames.as_mut() {
            fa.free_batch(&cache.frames[..n]).unwrap_or_else(|e| bad_free(e));
            fa.free_batch(&cache.clean[..z]).unwrap_or_else(|e| bad_free(e));
            cache.len = 0;
            cache.clean_len = 0;
            c.held.store(0, Ordering::Relaxed);
        }
    }
}

/// A 4 KiB frame with whatever it held (for a caller that overwrites all of it).
fn alloc_frame_unzeroed() -> Option<(u64, bool)> {
    cached_alloc().or_else(|| {
        // This CPU's cache and the global allocator are empty; other CPUs' caches may still hold frames.
        drain_frame_caches();
        FRAMES.lock().as_mut()?.alloc().map(|pa| (pa, false))
    })
}

/// A zeroed 4 KiB frame.
pub fn alloc_frame() -> Option<u64> {
    if let Some(pa) = clean_alloc() {
        return Some(pa);
    }
    let (pa, zeroed) = alloc_frame_unzeroed()?;
    if !zeroed {
        // SAFETY: the frame is ours and mapped at KERNEL_BASE + pa.
        unsafe { core::ptr::write_bytes(phys_to_virt(pa) as *mut u8, 0, PAGE_SIZE as usize) };
    }
    Some(pa)
}

/// Return a frame the caller has left all zeroes (a page table it emptied): the next [`alloc_frame`] on
/// this CPU takes it without clearing it again.
pub fn free_zeroed_frame(pa: u64) {
    let c = local_cache();
    let mut cache = c.cache.lock();
    if pa % PAGE_SIZE != 0 || pa >= MAX_PHYS || cache.clean[..cache.clean_len].contains(&pa) || !cache.keep_clean(pa) {
        drop(cache);
        return free_frame(pa);
    }
    c.held.store(cache.held(), Ordering::Relaxed);
}

/// A frame still in use on this CPU until its next thread switch (an ended process's page-table root, still
/// loaded) counts as free from now on, so that whoever counts free frames meanwhile (a parent that reaped the
/// process) sees none missing. The caller frees it with [`free_deferred_frame`] on this CPU.
pub fn defer_free_frame() {
    let c = local_cache();
    let mut cache = c.cache.lock();
    cache.deferred += 1;
    c.held.store(cache.held(), Ordering::Relaxed);
}

/// Free the page-table root of an ended process ([`super::uspace::UserSpace::retire`]) announced by
/// [`defer_free_frame`] on this CPU, which runs on other tables now.
pub fn free_retired_root(root: u64) {
    // SAFETY: the root is ours alone: its process has ended and no CPU runs on it any more.
    let table = unsafe { phys_table(root) };
    table[questv_arch::paging::KERNEL_SLOT] = 0;
    free_deferred_frame(root);
}

/// Free a zeroed frame announced by [`defer_free_frame`] (the count of free frames does not change).
pub fn free_deferred_frame(pa: u64) {
    let c = local_cache();
    let mut cache = c.cache.lock();
    assert!(cache.deferred > 0, "free_deferred_frame(0x{pa:x}) without defer_free_frame");
    cache.deferred -= 1;
    if cache.keep_clean(pa) {
        c.held.store(cache.held(), Ordering::Relaxed);
        return;
    }
    // No room: the frame goes to the global allocator, whose count and ours change under its lock together.
    let mut frames = FRAMES.lock();
    if let Some(fa) = frames.as_mut() {
        fa.free_batch(&[pa]).unwrap_or_else(|e| bad_free(e));
    }
    c.held.store(cache.held(), Ordering::Relaxed);
}

/// Return a frame to this CPU's cache (the oldest half goes back to the global allocator when it is full).
/// Misaligned and out-of-range frees panic at once; a double free is caught here if the frame is still in this
/// CPU's cache, otherwise by the global allocator when the cache is drained.
pub fn free_frame(pa: u64) {
    if pa % PAGE_SIZE != 0 {
        bad_free(FrameError::Misaligned(pa));
    }
    if pa >= MAX_PHYS {
        bad_free(FrameError::OutOfRange(pa));
    }
    let c = local_cache();
    let mut cache = c.cache.lock();
    let len = cache.len;
    if cache.frames[..len].contains(&pa) || cache.clean[..cache.clean_len].contains(&pa) {
        bad_free(FrameError::DoubleFree(pa));
    }
    if len == CACHE_FRAMES {
        let mut frames = FRAMES.lock();
        let Some(fa) = frames.as_mut() else { return };
        fa.free_batch(&cache.frames[..CACHE_BATCH]).unwrap_or_else(|e| bad_free(e));
        cache.frames.copy_within(CACHE_BATCH.., 0);
        cache.len = CACHE_FRAMES - CACHE_BATCH;
    }
    let len = cache.len;
    cache.frames[len] = pa;
    cache.len = len + 1;
    c.held.store(cache.held(), Ordering::Relaxed);
}

pub fn alloc_contiguous(count: u64, align: u64, limit: u64) -> Option<u64> {
    FRAMES.lock().as_mut()?.alloc_contiguous(count, align, limit).or_else(|| {
        drain_frame_caches();
        FRAMES.lock().as_mut()?.alloc_contiguous(count, align, limit)
    })
}

/// Contiguous frames at or above `from`.
pub fn alloc_contiguous_from(count: u64, align: u64, from: u64) -> Option<u64> {
    FRAMES.lock().as_mut()?.alloc_contiguous_from(count, align, from, MAX_PHYS).or_else(|| {
        drain_frame_caches();
        FRAMES.lock().as_mut()?.alloc_contiguous_from(count, align, from, MAX_PHYS)
    })
}

/// Free runs of at least `min_bytes` (see FrameAllocator::free_runs), cached frames included.
pub fn free_runs(min_bytes: u64) -> alloc::vec::Vec<Region> {
    drain_frame_caches();
    FRAMES.lock().as_ref().map(|f| f.free_runs(min_bytes / PAGE_SIZE)).unwrap_or_default()
}

/// Take a whole range out of the allocator (for good: sandbox slices, the shared region).
pub fn take_range(r: Region) -> Result<(), FrameError> {
    drain_frame_caches();
    FRAMES.lock().as_mut().map_or(Ok(()), |f| f.take_range(r))
}

/// Free frames, the ones in per-CPU caches included.
pub fn free_frames() -> u64 {
    let frames = FRAMES.lock();
    let cached: usize = CACHES.iter().map(|c| c.held.load(Ordering::Relaxed)).sum();
    frames.as_ref().map_or(0, |f| f.free_frames() + cached as u64)
}

/// Build the kernel's page tables: physical memory at KERNEL_BASE + its address (PML4 slot 256, the slot every
/// user address space shares), with physical page 0 unmapped, kernel text read-only and executable, rodata
/// read-only, everything else read-write and non-executable, 3–4 GiB (LAPIC, IOAPIC, PCI MMIO) uncached; and
/// the AP trampoline page at its own (low) address as well, executable, since APs run it before they reach the
/// upper half. Nothing else is mapped low: the lower half is user space. Returns the PML4's physical address.
pub fn build_kernel_tables(highest_address: u64, trampoline: Option<u64>) -> u64 {
    let mut m = KernelMem;
    let mut a = AddressSpace::new(&mut m).expect("out of memory for page tables");
    // SAFETY: linker symbols; only addresses are taken.
    let (text0, ro0, data0, kend) =
        unsafe { (sym(&__kernel_start), sym(&__rodata_start), sym(&__data_start), sym(&__kernel_end)) };
    let rw = PageFlags::WRITABLE | PageFlags::NO_EXECUTE | PageFlags::GLOBAL;
    let mut map = |va: u64, end: u64, flags: PageFlags| {
        let start = va & !(PAGE_SIZE - 1);
        let end = end.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        if end > start {
            a.map_range(&mut m, KERNEL_BASE + start, start, end - start, flags).expect("kernel page tables");
        }
    };
    map(PAGE_SIZE, text0, rw);
    // Sections are 4 KiB aligned by the linker script, so each runs to the start of the next.
    map(text0, ro0, PageFlags::GLOBAL);
    map(ro0, data0, PageFlags::NO_EXECUTE | PageFlags::GLOBAL);
    map(data0, kend, rw);
    let mmio = 3u64 << 30;
    map(kend, mmio, rw);
    map(mmio, 4 << 30, rw | PageFlags::NO_CACHE | PageFlags::WRITE_THROUGH);
    if highest_address > 4 << 30 {
        map(4 << 30, highest_address.min(MAX_PHYS), rw);
    }
    if let Some(t) = trampoline {
        // Not GLOBAL: only the kernel's own tables have it, and a CPU switching to a user space must not keep it.
        a.map_range(&mut m, t, t, PAGE_SIZE, PageFlags::WRITABLE).expect("kernel page tables");
    }
    a.root()
}

/// Reference counts of user pages, indexed by frame number (fork shares pages copy-on-write). Atomic, so
/// sharing and releasing pages needs no lock: a count only changes through a space that holds a reference.
static PAGE_REFS: spin::Once<alloc::vec::Vec<AtomicU16>> = spin::Once::new();

pub fn init_page_refs(highest_address: u64) {
    let frames = (highest_address.min(MAX_PHYS) / PAGE_SIZE) as usize;
    PAGE_REFS.call_once(|| (0..frames).map(|_| AtomicU16::new(0)).collect());
}

fn page_refs(pa: u64) -> &'static AtomicU16 {
    &PAGE_REFS.get().expect("page reference counts used before init_page_refs")[(pa / PAGE_SIZE) as usize]
}

/// Physical memory as page tables (kernel and user) and reference-counted user pages: frames from the frame
/// allocator, reached through the kernel's mapping of physical memory.
pub struct KernelMem;

/// The page-table frame at `phys`, through the kernel's mapping of physical memory.
///
/// # Safety
/// `phys` must be a 4 KiB-aligned frame owned by a page table (or EPT) the caller is building or walking, with
/// no other live reference to it.
pub unsafe fn phys_table<'a>(phys: u64) -> &'a mut [u64; 512] {
    // SAFETY: caller's contract; all RAM is mapped at KERNEL_BASE + its address.
    unsafe { &mut *(phys_to_virt(phys) as *mut [u64; 512]) }
}

impl TableMemory for KernelMem {
    fn alloc_table(&mut self) -> Option<u64> {
        alloc_frame()
    }
    fn table(&mut self, phys: u64) -> &mut [u64; 512] {
        // SAFETY: table frames come from alloc_frame and belong to the table being walked.
        unsafe { phys_table(phys) }
    }
}

impl super::uspace::PhysMem for KernelMem {
    fn alloc_page(&mut self) -> Option<u64> {
        let pa = alloc_frame()?;
        // Nobody else knows the frame yet.
        page_refs(pa).store(1, Ordering::Relaxed);
        Some(pa)
    }
    fn alloc_page_copy(&mut self, src: u64) -> Option<u64> {
        let (pa, _) = alloc_frame_unzeroed()?;
        // SAFETY: `pa` is a fresh frame of ours, `src` a user page the caller holds a reference to (only read);
        // both are mapped at KERNEL_BASE + their address and are distinct frames.
        unsafe { core::ptr::copy_nonoverlapping(phys_to_virt(src) as *const u8, phys_to_virt(pa) as *mut u8, PAGE_SIZE as usize) };
        page_refs(pa).store(1, Ordering::Relaxed);
        Some(pa)
    }
    fn share(&mut self, pa: u64) {
        // Overflow is refused rather than wrapped (a wrapped count would free a page still mapped).
        page_refs(pa)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_add(1))
            .expect("page shared by more than 65535 address spaces");
    }
    fn release(&mut self, pa: u64) {
        // AcqRel: whoever drops the last reference (and frees or reuses the page) sees every earlier holder's
        // accesses to it as done.
        let before = page_refs(pa).fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0, "release of unreferenced page 0x{:x}", pa);
        if before == 1 {
            free_frame(pa);
        }
    }
    fn tlb_shootdown(&mut self, root: u64, pages: Option<&[u64]>) {
        if questv_arch::cpu::read_cr3() == root {
            match pages {
                // A few pages one by one (as Linux does up to 33): a full flush would also drop every kernel
                // translation, which the next instructions then walk the tables for again.
                Some(pages) if pages.len() <= 32 => pages.iter().for_each(|&va| questv_arch::cpu::flush_tlb_page(va)),
                _ => questv_arch::cpu::flush_tlb(),
            }
        }
        crate::smp::tlb_shootdown(root);
    }
    fn refs(&mut self, pa: u64) -> u32 {
        // Acquire pairs with release(): a COW fault that sees itself as the last holder may write the page.
        u32::from(page_refs(pa).load(Ordering::Acquire))
    }
    fn page(&mut self, pa: u64) -> &mut [u8; PAGE_SIZE as usize] {
        // SAFETY: user pages come from the frame allocator and are mapped at KERNEL_BASE + pa. The caller holds the lock of
        // the address space it reached `pa` through (proc.rs), and a process's own pages are written only under
        // that lock; a page shared copy-on-write is read-only in every space that maps it, so it is only read
        // (copied) here, never written, until a single reference is left.
        unsafe { &mut *(phys_to_virt(pa) as *mut [u8; PAGE_SIZE as usize]) }
    }
    fn free_table(&mut self, pa: u64) {
        free_frame(pa);
    }
    fn free_zeroed_table(&mut self, pa: u64) {
        free_zeroed_frame(pa);
    }
}

/// The heap and, in front of it, small freed blocks by size class: a block of a class is handed out again
/// from its list without a search (linked_list_allocator's first fit walks every hole before a fit, and a
/// fork allocates and frees a few dozen small blocks: map nodes, boxes, vectors).
struct Heap {
    heap: linked_list_allocator::Heap,
    /// Each class's freed blocks, linked through their first word (0: none).
    free: [usize; CLASSES],
    kept: [usize; CLASSES],
}

/// The global allocator: linked_list_allocator's heap with size classes in front, behind an interrupt-safe
/// lock (the scheduler frees dead threads' stacks from interrupt context).
pub struct KernelHeap(IrqSpinlock<Heap>);

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(IrqSpinlock::new(Heap { heap: linked_list_allocator::Heap::empty(), free: [0; CLASSES], kept: [0; CLASSES] }));

// SAFETY: allocation is serialised by the lock; the heap hands out disjoint blocks, and a block on a class list
// belongs to no one else until it is handed out again.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut h = self.0.lock();
        let Some(c) = class_of(layout) else {
            return h.heap.allocate_first_fit(layout).map_or(core::ptr::null_mut(), |p| p.as_ptr());
        };
        let head = h.free[c];
        if head != 0 {
            // SAFETY: `head` is a freed block of this class (at least 16 bytes, 16-aligned) whose first word
            // links the next one.
            h.free[c] = unsafe { *(head as *const usize) };
            h.kept[c] -= 1;
            return head as *mut u8;
        }
        h.heap.allocate_first_fit(class_layout(c)).map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let mut h = self.0.lock();
        match class_of(layout) {
            Some(c) if h.kept[c] < CLASS_KEEP => {
                // SAFETY: the block was allocated for this class (so it is `class_layout(c)` big and 16-aligned)
                // and is ours again: its first word can hold the list link.
                unsafe { *(ptr as *mut usize) = h.free[c] };
                h.free[c] = ptr as usize;
                h.kept[c] += 1;
            }
            // SAFETY: GlobalAlloc contract: ptr came from alloc with this layout (a small one with its class's).
            Some(c) => unsafe { h.heap.deallocate(NonNull::new_unchecked(ptr), class_layout(c)) },
            // SAFETY: as above.
            None => unsafe { h.heap.deallocate(NonNull::new_unchecked(ptr), layout) },
        }
    }
}

static HEAP_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The kernel heap's size.
pub fn heap_bytes() -> usize {
    HEAP_BYTES.load(Ordering::Relaxed)
}

/// Free heap bytes, the blocks kept by the size classes included.
pub fn heap_free_bytes() -> usize {
    let h = HEAP.0.lock();
    h.heap.free() + (0..CLASSES).map(|c| h.kept[c] * (SMALLEST_CLASS << c)).sum::<usize>()
}

