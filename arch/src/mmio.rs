//! Memory-mapped device registers, accessed through the `volatile` crate (every access is one volatile load or
//! store of the register's width; the compiler may neither elide nor merge them).

use core::ptr::NonNull;
use volatile::VolatilePtr;

/// The 32-bit register at physical address `addr`, reached through the kernel's mapping of physical memory
/// (uncached there: `kmem::build_kernel_tables` maps 3–4 GiB so).
///
/// # Safety
/// `addr` is the uncached, 4-byte-aligned physical address of a device register the caller owns.
pub unsafe fn reg32(addr: u64) -> VolatilePtr<'static, u32> {
    // SAFETY: the caller guarantees a valid, aligned register address; its mapping is never null.
    unsafe { VolatilePtr::new(NonNull::new_unchecked(crate::paging::phys_to_virt(addr) as *mut u32)) }
}
