//! DMA isolation: what a device a sandbox drives may reach. Second-stage tables confine the CPU; a device
//! programmed by a sandbox (the shared NIC's descriptors hold physical addresses) bypasses them, so the
//! monitor puts every device behind the IOMMU the firmware lists (Intel VT-d, ACPI DMAR) with a domain that
//! maps exactly the memory granted for DMA — the NIC's DMA region — and nothing for any other device, before
//! any sandbox runs. Each access the unit blocks is reported as `RESULT dma_fault` (found when the monitor
//! next looks: an NMI exit or a console hypercall). Without an IOMMU (Bochs, the default QEMU machine)
//! nothing confines DMA, and the boot line says so.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use questv_arch::acpi_madt::Topology;
use questv_drivers::vtd::tables::{self as vt, TablePages};
use questv_drivers::vtd::{KernelPages, Vtd};
use questv_kernel::mm::kmem;
use questv_kernel::result;

/// A device's DMA window: identity mapped, read/write.
#[derive(Clone, Copy, Debug)]
pub(super) struct DmaGrant {
    pub(super) bdf: (u8, u8, u8),
    pub(super) start: u64,
    pub(super) len: u64,
}

/// The domain id of every granted device (one domain: they share the one region).
const DOMAIN: u16 = 1;

static UNIT: spin::Once<spin::Mutex<Vtd>> = spin::Once::new();

/// Put the machine's devices behind its IOMMU: `grants` reach their windows, everything else reaches nothing.
/// No IOMMU is not an error (the report says DMA is unconfined); an IOMMU that cannot be set up is.
pub(super) fn confine(topology: &Topology, grants: &[DmaGrant]) -> Result<(), String> {
    let Some(dmar) = topology.dmar.as_ref() else {
        log::warn!("no IOMMU (no ACPI DMAR table): devices a sandbox drives can reach all memory by DMA");
        result!("iommu", "kind=none dma_isolation=off devices={}", grants.len());
        return Ok(());
    };
    // One unit for everything: the one covering the granted device, or the catch-all.
    let unit = match grants.first() {
        Some(g) => dmar.unit_for(g.bdf),
        None => dmar.units.iter().find(|u| u.include_pci_all).or(dmar.units.first()),
    };
    let Some(unit) = unit else {
        log::warn!("the DMAR table lists no remapping unit for the granted devices: DMA is not confined");
        result!("iommu", "kind=none dma_isolation=off devices={} dmar_units={}", grants.len(), dmar.units.len());
        return Ok(());
    };
    if dmar.units.len() > 1 {
        log::warn!("iommu: {} remapping units; only the one at 0x{:x} is programmed (devices behind the others are not confined)", dmar.units.len(), unit.register_base);
    }
    // SAFETY: the register page comes from the firmware's DMAR table and lies in the uncached 3–4 GiB identity
    // map; the monitor programs it alone (no sandbox's second stage maps it).
    let vtd = unsafe { Vtd::new(unit.register_base) };
    let (levels, aw) = vtd.cap.levels().ok_or_else(|| String::from("iommu: the unit offers no usable table format"))?;
    // SAFETY: frames from the kernel's allocator, identity mapped and taken for good (the unit uses them for
    // the whole run); sandboxes' second stages never map monitor memory.
    let mut pages = unsafe { KernelPages::new(kmem::alloc_frame) };
    let oom = || String::from("iommu: out of memory for its tables");
    let root = pages.alloc().ok_or_else(oom)?;
    let mut context_tables: Vec<(u8, u64)> = Vec::new();
    let mut mapped = 0;
    let second_level = pages.alloc().ok_or_else(oom)?;
    for g in grants {
        mapped += vt::map_identity(&mut pages, second_level, levels, g.start, g.len, true).map_err(|e| format!("iommu: mapping 0x{:x}+0x{:x}: {e:?}", g.start, g.len))?;
        let ctx = match context_tables.iter().find(|(bus, _)| *bus == g.bdf.0) {
            Some(&(_, t)) => t,
            None => {
                let t = pages.alloc().ok_or_else(oom)?;
                pages.write_wide(root, u64::from(g.bdf.0), vt::root_entry(t));
                context_tables.push((g.bdf.0, t));
                t
            }
        };
        pages.write_wide(ctx, vt::devfn(g.bdf.1, g.bdf.2), vt::context_entry(second_level, aw, DOMAIN));
    }
    vtd.enable(root).map_err(|e| format!("iommu: {e}"))?;
    let devices: Vec<String> = grants.iter().map(|g| format!("{:02x}:{:02x}.{}", g.bdf.0, g.bdf.1, g.bdf.2)).collect();
    result!(
        "iommu",
        "kind=vtd dma_isolation=on unit=0x{:x} levels={} devices={} mapped_pages={} window={} table_pages={}",
        unit.register_base, levels, if devices.is_empty() { String::from("none") } else { devices.join(",") }, mapped,
        grants.iter().map(|g| format!("0x{:x}+0x{:x}", g.start, g.len)).collect::<Vec<_>>().join(","), pages.allocated
    );
    UNIT.call_once(|| spin::Mutex::new(vtd));
    Ok(())
}

/// Report the accesses the IOMMU blocked since the last look. Cheap without a unit or without faults (one
/// register read).
pub(super) fn report_faults() -> usize {
    let Some(unit) = UNIT.get() else { return 0 };
    let mut faults = Vec::new();
    let overflow = match unit.try_lock() {
        Some(u) => u.take_faults(&mut faults),
        None => return 0, // another monitor is reporting them
    };
    for f in &faults {
        let (b, d, func) = f.bdf();
        result!(
            "dma_fault",
            "device={:02x}:{:02x}.{} addr=0x{:x} access={} reason={} reason_code=0x{:02x}",
            b, d, func, f.address, if f.write { "write" } else { "read" }, f.reason_name(), f.reason
        );
    }
    if overflow {
        result!("dma_fault", "overflow=1 (the unit dropped faults: its records were full)");
    }
    faults.len() + usize::from(overflow)
}
