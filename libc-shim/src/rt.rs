//! Runtime for Rust user programs: `_start`, argument decoding, a heap on `brk`, the panic handler, and the
//! libc memory symbols precompiled `core` expects (the same source as the kernel's, arch/src/rt.rs).

#[path = "../../arch/src/rt.rs"]
mod memfuncs;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

core::arch::global_asm!(
    ".section .text.start, \"ax\"",
    ".global _start",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {start}",
    "ud2",
    start = sym rust_start,
);

extern "Rust" {
    fn questv_main(args: &[&str]) -> i32;
}

const MAX_ARGS: usize = 64;

extern "C" fn rust_start(sp: *const u64) -> ! {
    // SAFETY: the kernel put argc, then argc pointers to NUL-terminated strings, at the initial stack pointer.
    let argc = (unsafe { *sp } as usize).min(MAX_ARGS);
    let mut args: [&str; MAX_ARGS] = [""; MAX_ARGS];
    for (i, slot) in args.iter_mut().enumerate().take(argc) {
        // SAFETY: see above; each string lies in the stack page(s) the kernel filled.
        let p = unsafe { *sp.add(1 + i) } as *const u8;
        let mut n = 0;
        // SAFETY: NUL-terminated (kernel-written).
        while unsafe { *p.add(n) } != 0 {
            n += 1;
        }
        // SAFETY: n bytes are readable; the kernel copied them from valid UTF-8 strings.
        *slot = core::str::from_utf8(unsafe { core::slice::from_raw_parts(p, n) }).unwrap_or("?");
    }
    // SAFETY: provided by the program through `entry!`.
    let code = unsafe { questv_main(&args[..argc]) };
    crate::exit(code)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    crate::println!("panic: {}", info);
    crate::exit(101)
}

/// Heap: linked_list_allocator over memory obtained from `brk`, extended as needed.
struct BrkHeap(spin::Mutex<(linked_list_allocator::Heap, bool)>);

const GROW: usize = 256 * 1024;

// SAFETY: the heap hands out disjoint blocks; the mutex serialises every access.
unsafe impl GlobalAlloc for BrkHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut g = self.0.lock();
        let (heap, started) = &mut *g;
        loop {
            if let Ok(p) = heap.allocate_first_fit(layout) {
                return p.as_ptr();
            }
            let want = (layout.size() + layout.align() + GROW).next_multiple_of(4096);
            let old = crate::brk(0);
            let new = crate::brk(old + want as u64);
            if new < old + want as u64 {
                return core::ptr::null_mut();
            }
            if *started {
                // SAFETY: [old, new) was just added to the program break, directly after the heap's top.
                unsafe { heap.extend(want) };
            } else {
                // SAFETY: fresh memory from brk, owned by the heap from now on.
                unsafe { heap.init(old as *mut u8, want) };
                *started = true;
            }
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: GlobalAlloc contract.
        unsafe { self.0.lock().0.deallocate(NonNull::new_unchecked(ptr), layout) }
    }
}

#[global_allocator]
static HEAP: BrkHeap = BrkHeap(spin::Mutex::new((linked_list_allocator::Heap::empty(), false)));
