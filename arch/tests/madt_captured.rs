//! MADT handling on ACPI tables captured from real firmware (`ktest acpidump` on QEMU and Bochs): the root
//! table, every listed table's header and the whole MADT, replayed at their original physical addresses.

use acpi::{AcpiHandler, PhysicalMapping};
use questv_arch::acpi_madt::{open_tables, topology, IoApicInfo, RootTable, TopologyError};
use std::ptr::NonNull;
use std::rc::Rc;

#[derive(Clone)]
struct Captured(Rc<Vec<(usize, Vec<u8>)>>);

impl AcpiHandler for Captured {
    unsafe fn map_physical_region<T>(&self, pa: usize, size: usize) -> PhysicalMapping<Self, T> {
        let (base, bytes) = self
            .0
            .iter()
            .find(|(base, bytes)| pa >= *base && pa + size <= base + bytes.len())
            .unwrap_or_else(|| panic!("table read outside the captured bytes: 0x{pa:x}+{size}"));
        let ptr = bytes[pa - base..].as_ptr() as *mut T;
        // SAFETY: the region lies inside a live captured buffer (held by the Rc in the handler).
        unsafe { PhysicalMapping::new(pa, NonNull::new(ptr).unwrap(), size, size, self.clone()) }
    }
    fn unmap_physical_region<T>(_: &PhysicalMapping<Self, T>) {}
}

fn load(text: &str) -> (Captured, RootTable, Vec<(usize, Vec<u8>)>) {
    let mut chunks = Vec::new();
    let mut root = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("ACPIDUMP addr=0x") {
            let (addr, hex) = rest.split_once(" hex=").unwrap();
            let bytes = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            chunks.push((usize::from_str_radix(addr, 16).unwrap(), bytes));
        } else if let Some(rest) = line.strip_prefix("RESULT acpidump root=0x") {
            let (addr, rev) = rest.split_once(" revision=").unwrap();
            root = Some(RootTable { address: usize::from_str_radix(addr, 16).unwrap(), revision: rev.parse().unwrap() });
        }
    }
    (Captured(Rc::new(chunks.clone())), root.expect("no root line"), chunks)
}

#[test]
fn qemu_four_cpus() {
    let (h, root, _) = load(include_str!("data/qemu-smp4-acpi.txt"));
    let tables = open_tables(h, root).unwrap();
    let t = topology(&tables).unwrap();
    assert_eq!(t.cpu_apic_ids, vec![0, 1, 2, 3]);
    assert_eq!(t.local_apic_address, 0xFEE0_0000);
    assert_eq!(t.io_apics, vec![IoApicInfo { id: 0, address: 0xFEC0_0000, gsi_base: 0 }]);
    assert!(t.has_legacy_pics);
    // The PIT (ISA IRQ 0) arrives on GSI 2 on PC chipsets; IRQ 4 (COM1) is identity mapped.
    assert_eq!(t.isa_irq(0).gsi, 2);
    assert_eq!(t.isa_irq(4).gsi, 4);
    // PCI interrupts (ISA 9 for SCI on QEMU) are level triggered, active high per the override.
    assert!(t.isa_irq(9).level_triggered);
}

#[test]
fn bochs_two_cpus() {
    let (h, root, _) = load(include_str!("data/bochs-smp2-acpi.txt"));
    let t = topology(&open_tables(h, root).unwrap()).unwrap();
    assert_eq!(t.cpu_apic_ids, vec![0, 1]);
    assert_eq!(t.io_apics.len(), 1);
    assert_eq!(t.io_apics[0].address, 0xFEC0_0000);
}

#[test]
fn corrupted_madt_is_refused() {
    let (_, root, mut chunks) = load(include_str!("data/qemu-smp4-acpi.txt"));
    let madt = chunks.iter_mut().find(|(_, b)| b.len() > 36 && &b[..4] == b"APIC").unwrap();
    madt.1[44] ^= 0xFF; // first entry byte: checksum no longer matches
    let tables = open_tables(Captured(Rc::new(chunks)), root).unwrap();
    assert!(matches!(topology(&tables), Err(TopologyError::NoMadt(_))));
}

#[test]
fn corrupted_root_table_is_refused() {
    let (_, root, mut chunks) = load(include_str!("data/qemu-smp4-acpi.txt"));
    let r = chunks.iter_mut().find(|(a, _)| *a == root.address).unwrap();
    r.1[0] = b'X';
    assert!(matches!(open_tables(Captured(Rc::new(chunks)), root), Err(TopologyError::Tables(_))));
}
