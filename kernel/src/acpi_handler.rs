//! `acpi::AcpiHandler` for the kernel (all physical memory is mapped at `KERNEL_BASE + p`, so mapping is an
//! addition), and the
//! `ktest acpidump` hex dump of the tables boot found.

use acpi::{AcpiHandler, PhysicalMapping};
use crate::kprintln;
use core::ptr::NonNull;
use questv_arch::acpi_madt::RootTable;
use questv_arch::paging::phys_to_virt;

#[derive(Clone, Copy)]
pub struct DirectMapped;

impl AcpiHandler for DirectMapped {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        // SAFETY: all physical memory is mapped at KERNEL_BASE + its address; ACPI tables live in RAM/firmware
        // regions inside it. The acpi crate validates what it reads.
        unsafe {
            PhysicalMapping::new(
                physical_address,
                NonNull::new(phys_to_virt(physical_address as u64) as *mut T).expect("ACPI table at physical address 0"),
                size,
                size,
                *self,
            )
        }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

static ACPI_ROOT: spin::Once<RootTable> = spin::Once::new();

/// The root table boot validated (for the dump).
pub fn set_root(root: RootTable) {
    ACPI_ROOT.call_once(|| root);
}

/// Print the ACPI root table, the header of every table it lists and the whole MADT as hex lines
/// (`ACPIDUMP addr=0x... hex=...`), the input of the host tests' captured tables.
pub fn dump() {
    let Some(root) = ACPI_ROOT.get() else { return };
    let at = |pa: usize| phys_to_virt(pa as u64) as usize;
    let dump = |pa: usize, whole: bool| {
        // SAFETY: ACPI tables are mapped (DirectMapped); the header's length field is at offset 4.
        let len = if whole { (unsafe { core::ptr::read_unaligned((at(pa) + 4) as *const u32) }) as usize } else { 36 };
        crate::kprint!("ACPIDUMP addr=0x{:x} hex=", pa);
        for i in 0..len {
            // SAFETY: within the table (length from its own header, or the fixed header size).
            crate::kprint!("{:02x}", unsafe { core::ptr::read_volatile((at(pa) + i) as *const u8) });
        }
        kprintln!("");
    };
    dump(root.address, true);
    // SAFETY: the root table was validated at boot.
    let root_len = (unsafe { core::ptr::read_unaligned((at(root.address) + 4) as *const u32) }) as usize;
    let entry_size = if root.revision == 0 { 4 } else { 8 };
    for i in 0..(root_len - 36) / entry_size {
        let entry = at(root.address) + 36 + i * entry_size;
        // SAFETY: entries follow the header inside the validated root table.
        let pa = unsafe {
            if entry_size == 4 { core::ptr::read_unaligned(entry as *const u32) as usize } else { core::ptr::read_unaligned(entry as *const u64) as usize }
        };
        // SAFETY: signature of a listed table (mapped).
        let sig = unsafe { core::ptr::read_unaligned(at(pa) as *const [u8; 4]) };
        dump(pa, &sig == b"APIC");
    }
    kprintln!("RESULT acpidump root=0x{:x} revision={}", root.address, root.revision);
}

