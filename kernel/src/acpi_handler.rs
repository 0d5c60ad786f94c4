//! `acpi::AcpiHandler` for the kernel: physical memory is identity mapped, so mapping is the identity.

use acpi::{AcpiHandler, PhysicalMapping};
use core::ptr::NonNull;

#[derive(Clone, Copy)]
pub struct IdentityMapped;

impl AcpiHandler for IdentityMapped {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        // SAFETY: all physical memory below the identity-map limit is mapped at the same virtual address;
        // ACPI tables live in RAM/firmware regions inside it. The acpi crate validates what it reads.
        unsafe {
            PhysicalMapping::new(
                physical_address,
                NonNull::new(physical_address as *mut T).expect("ACPI table at physical address 0"),
                size,
                size,
                *self,
            )
        }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}
