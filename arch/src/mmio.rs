//! Memory-mapped device registers, accessed through the `volatile` crate (every access is one volatile load or
//! store of the register's width; the compiler may neither elide nor merge them).

use core::ptr::NonNull;
use volatile::VolatilePtr;

/// The 32-bit register at `addr`.
///
/// # Safety
/// `addr` is the identity-mapped, uncached, 4-byte-aligned address of a device register the caller owns.
pub unsafe fn reg32(addr: u64) -> VolatilePtr<'static, u32> {
    // SAFETY: the caller guarantees a valid, aligned, mapped register address (never null).
    unsafe { VolatilePtr::new(NonNull::new_unchecked(addr as *mut u32)) }
}
