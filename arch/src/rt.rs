//! Symbols the host target's precompiled `core`/`alloc` expect from libc and the unwinder. The kernel is
//! linked without libc (see docs/build.md), so we provide them. The memory functions are written with
//! `rep movs`/`rep stos` so the compiler cannot turn them back into calls to themselves: eight bytes a step, then
//! the tail a byte a step (CPUs without fast `rep movsb`, and emulators that step string instructions one
//! iteration at a time, pay per step).

use core::arch::asm;

/// # Safety
/// Standard C `memcpy` contract: valid, non-overlapping regions of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: caller upholds the memcpy contract; DF is clear per the SysV ABI. The quadword pass leaves rdi/rsi
    // just past what it copied, where the byte pass continues.
    unsafe {
        asm!("rep movsq", "mov rcx, {tail}", "rep movsb", tail = in(reg) n % 8,
             inout("rcx") n / 8 => _, inout("rdi") dest => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// Standard C `memmove` contract: valid regions of `n` bytes, possibly overlapping.
#[no_mangle]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize + n) {
        // SAFETY: forward copy is correct when dest is below src or the regions do not overlap.
        return unsafe { memcpy(dest, src, n) };
    }
    // SAFETY: overlapping with dest above src: copy backwards with DF set, then clear it again.
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rcx") n => _, inout("rdi") dest.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
             options(nostack));
    }
    dest
}

/// # Safety
/// Standard C `memset` contract.
#[no_mangle]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    let byte = u64::from(c as u8);
    // SAFETY: caller upholds the memset contract; rax holds the byte in all eight lanes, al alone for the tail.
    unsafe {
        asm!("rep stosq", "mov rcx, {tail}", "rep stosb", tail = in(reg) n % 8,
             inout("rcx") n / 8 => _, inout("rdi") dest => _, in("rax") byte * 0x0101_0101_0101_0101,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// Standard C `memcmp` contract.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and the caller guarantees both regions hold n bytes. Volatile reads keep LLVM from
        // recognising this loop as a memcmp/bcmp idiom and calling us recursively.
        let (x, y) = unsafe { (core::ptr::read_volatile(a.add(i)), core::ptr::read_volatile(b.add(i))) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// Standard C `bcmp` contract.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// # Safety
/// Standard C `strlen` contract (referenced by some precompiled `core` paths).
#[no_mangle]
pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let mut n = 0;
    // SAFETY: caller passes a NUL-terminated string.
    while unsafe { core::ptr::read_volatile(s.add(n)) } != 0 {
        n += 1;
    }
    n
}

/// Referenced by precompiled code built with unwinding; with `panic = "abort"` it is never reached.
#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    panic!("_Unwind_Resume called in a panic=abort kernel");
}

/// Referenced by precompiled code built with unwinding; never called with `panic = "abort"`.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
