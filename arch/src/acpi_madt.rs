//! Machine topology from ACPI: the `acpi` crate finds and validates the RSDT/XSDT and the MADT, and this module
//! turns the MADT entries into what the kernel needs (CPU APIC ids, I/O APICs, ISA overrides). Pure logic over
//! an [`acpi::AcpiHandler`], so it runs on the host against captured table bytes.
//!
//! We use the MADT entry iterator rather than `acpi::PlatformInfo`: in acpi 5.x the latter needs the nightly
//! `allocator_api` feature, which the stable toolchain this kernel builds on does not have.

use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables};
use alloc::vec::Vec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoApicInfo {
    pub id: u8,
    pub address: u32,
    pub gsi_base: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsaOverride {
    pub isa_irq: u8,
    pub gsi: u32,
    pub active_low: bool,
    pub level_triggered: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub local_apic_address: u64,
    /// APIC ids of usable CPUs, in MADT order (the BSP is whichever one is running the kernel).
    pub cpu_apic_ids: Vec<u32>,
    pub io_apics: Vec<IoApicInfo>,
    pub isa_overrides: Vec<IsaOverride>,
    pub has_legacy_pics: bool,
    /// DMA remapping units (ACPI DMAR), if the firmware lists any (filled by the caller: [`dma_remapping`]).
    pub dmar: Option<crate::acpi_dmar::Dmar>,
}

impl Topology {
    /// GSI an ISA IRQ arrives on, with its polarity/trigger (identity mapping unless overridden).
    pub fn isa_irq(&self, irq: u8) -> IsaOverride {
        self.isa_overrides.iter().copied().find(|o| o.isa_irq == irq).unwrap_or(IsaOverride {
            isa_irq: irq,
            gsi: u32::from(irq),
            active_low: false,
            level_triggered: false,
        })
    }
}

#[derive(Debug)]
pub enum TopologyError {
    Tables(acpi::AcpiError),
    NoMadt(acpi::AcpiError),
    NoCpus,
    NoIoApic,
}

impl core::fmt::Display for TopologyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TopologyError::Tables(e) => write!(f, "ACPI root tables unusable ({:?})", e),
            TopologyError::NoMadt(e) => write!(f, "no usable ACPI MADT ({:?}); MP-table fallback not implemented", e),
            TopologyError::NoCpus => write!(f, "ACPI MADT lists no enabled CPU"),
            TopologyError::NoIoApic => write!(f, "ACPI MADT lists no I/O APIC"),
        }
    }
}

/// Where the root table is: an RSDT (ACPI 1.0, revision 0) or XSDT (revision ≥ 2) physical address.
#[derive(Debug, Clone, Copy)]
pub struct RootTable {
    pub revision: u8,
    pub address: usize,
}

pub fn open_tables<H: AcpiHandler>(handler: H, root: RootTable) -> Result<AcpiTables<H>, TopologyError> {
    // SAFETY: the address comes from a checksummed RSDP (multiboot2 tag or BIOS scan); the crate validates the
    // root table's signature and checksum before using it.
    unsafe { AcpiTables::from_rsdt(handler, root.revision, root.address) }.map_err(TopologyError::Tables)
}

const MADT_ENTRY_ENABLED: u32 = 1;
const MADT_ENTRY_ONLINE_CAPABLE: u32 = 2;

pub fn topology<H: AcpiHandler>(tables: &AcpiTables<H>) -> Result<Topology, TopologyError> {
    let madt = tables.find_table::<Madt>().map_err(TopologyError::NoMadt)?;
    let madt_ref = madt.get();
    let mut topo = Topology {
        local_apic_address: u64::from(madt_ref.local_apic_address),
        cpu_apic_ids: Vec::new(),
        io_apics: Vec::new(),
        isa_overrides: Vec::new(),
        has_legacy_pics: madt_ref.supports_8259(),
        dmar: None,
    };
    for entry in madt_ref.entries() {
        match entry {
            MadtEntry::LocalApic(e) => {
                let flags = e.flags;
                if flags & (MADT_ENTRY_ENABLED | MADT_ENTRY_ONLINE_CAPABLE) != 0 {
                    topo.cpu_apic_ids.push(u32::from(e.apic_id));
                }
            }
            MadtEntry::LocalX2Apic(e) => {
                let (flags, id) = (e.flags, e.x2apic_id);
                if flags & (MADT_ENTRY_ENABLED | MADT_ENTRY_ONLINE_CAPABLE) != 0 && !topo.cpu_apic_ids.contains(&id) {
                    topo.cpu_apic_ids.push(id);
                }
            }
            MadtEntry::IoApic(e) => topo.io_apics.push(IoApicInfo {
                id: e.io_apic_id,
                address: e.io_apic_address,
                gsi_base: e.global_system_interrupt_base,
            }),
            MadtEntry::InterruptSourceOverride(e) => {
                let flags = e.flags;
                // MPS INTI flags: polarity bits 0-1 (3 = active low), trigger bits 2-3 (3 = level).
                topo.isa_overrides.push(IsaOverride {
                    isa_irq: e.irq,
                    gsi: e.global_system_interrupt,
                    active_low: flags & 0b11 == 0b11,
                    level_triggered: (flags >> 2) & 0b11 == 0b11,
                });
            }
            MadtEntry::LocalApicAddressOverride(e) => topo.local_apic_address = e.local_apic_address,
            _ => {}
        }
    }
    if topo.cpu_apic_ids.is_empty() {
        return Err(TopologyError::NoCpus);
    }
    if topo.io_apics.is_empty() {
        return Err(TopologyError::NoIoApic);
    }
    Ok(topo)
}

/// The DMAR table's fixed part, for the `acpi` crate to find and checksum (the remapping structures follow it).
#[repr(C, packed)]
struct DmarTable {
    header: acpi::sdt::SdtHeader,
    host_address_width: u8,
    flags: u8,
    reserved: [u8; 10],
}

// SAFETY: `DmarTable` is the DMAR's first 48 bytes exactly as the VT-d specification lays them out (the SDT
// header, then three fields); the crate maps the whole table, its header's length.
unsafe impl acpi::AcpiTable for DmarTable {
    const SIGNATURE: acpi::sdt::Signature = acpi::sdt::Signature::DMAR;

    fn header(&self) -> &acpi::sdt::SdtHeader {
        &self.header
    }
}

/// The machine's DMA remapping units (Intel VT-d), from ACPI's DMAR table: `None` without one (no IOMMU, or
/// one this kernel does not drive), an error for a table it cannot read.
pub fn dma_remapping<H: AcpiHandler>(tables: &AcpiTables<H>) -> Option<Result<crate::acpi_dmar::Dmar, crate::acpi_dmar::DmarError>> {
    let mapping = tables.find_table::<DmarTable>().ok()?;
    let len = mapping.region_length().min(mapping.get().header.length as usize);
    // SAFETY: the crate mapped `region_length` bytes at `virtual_start` for this table and validated its
    // checksum over `header.length` bytes; we read no further than the smaller of the two.
    let bytes = unsafe { core::slice::from_raw_parts(mapping.virtual_start().as_ptr() as *const u8, len) };
    Some(crate::acpi_dmar::parse(bytes))
}
