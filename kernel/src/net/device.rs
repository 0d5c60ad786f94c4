//! Finding and claiming the NIC: PCI lookup, BAR 0, interrupt line, memory decoding and bus mastering, and the
//! DMA region its rings live in (filled with the sharers' addresses). Done by the SMP kernel for itself, or by
//! the VT monitor for the sandboxes that share the NIC; a sandbox never touches PCI configuration space.

use alloc::format;
use alloc::string::String;
use core::sync::atomic::Ordering;
use questv_drivers::e1000::{self, layout, Control};
use questv_drivers::pci::{self, Bar, ConfigSpace};

/// A claimed NIC.
#[derive(Clone, Copy, Debug)]
pub struct Claimed {
    pub bdf: (u8, u8, u8),
    pub device_id: u16,
    /// BAR 0 (the register window), physical; uncached in the kernel's tables (3–4 GiB).
    pub mmio: u64,
    /// The interrupt line the firmware assigned (an I/O APIC input: PCI lines are not ISA-overridden).
    pub irq_line: u8,
    /// The DMA region ([`layout::REGION`] bytes, zeroed, control block filled).
    pub dma: u64,
}

/// Find the first e1000 and claim it for `sharers` (their MAC — 0 = the NIC's own EEPROM address — and IPv4
/// address). `cs` must be the only user of configuration space while this runs.
pub fn claim(cs: &mut impl ConfigSpace, sharers: &[(u64, [u8; 4])]) -> Result<Claimed, String> {
    let ids: alloc::vec::Vec<(u16, u16)> = e1000::DEVICES.iter().map(|&d| (e1000::VENDOR_INTEL, d)).collect();
    let f = pci::find(cs, &ids).ok_or_else(|| String::from("no e1000 (8086:100e or a relative) on the PCI bus"))?;
    let mmio = match pci::read_bar(cs, &f, 0) {
        Bar::Memory { address, .. } => address,
        other => return Err(format!("e1000 at {f}: BAR 0 is {other:?}, not a memory window")),
    };
    // The kernel maps 3–4 GiB uncached for devices; a window elsewhere would be cached or unmapped.
    if !(0xC000_0000..=0x1_0000_0000 - e1000::reg::WINDOW).contains(&mmio) {
        return Err(format!("e1000 at {f}: BAR 0 at 0x{mmio:x} is outside the 3-4 GiB device window"));
    }
    let (line, pin) = pci::interrupt_line(cs, &f);
    if pin == 0 || line == 0 || line >= 24 {
        return Err(format!("e1000 at {f}: no usable interrupt line (line {line}, pin {pin})"));
    }
    if sharers.is_empty() || sharers.len() > e1000::MAX_SHARERS {
        return Err(format!("e1000: {} sharer(s) requested, 1..={} possible", sharers.len(), e1000::MAX_SHARERS));
    }
    // Above the VT build's low alias (16 MiB): there guest-physical = host-physical, as DMA needs.
    let dma = crate::mm::kmem::alloc_contiguous_from(layout::REGION / 4096, 4096, 16 << 20)
        .ok_or_else(|| String::from("e1000: no memory for the DMA region"))?;
    let dma_at = questv_arch::paging::phys_to_virt(dma);
    // SAFETY: the frames were just allocated for this region (RAM, mapped at KERNEL_BASE + dma).
    unsafe { core::ptr::write_bytes(dma_at as *mut u8, 0, layout::REGION as usize) };
    // SAFETY: the control block is at the start of the zeroed region; it is made of atomics only.
    let control = unsafe { &*(dma_at as *const Control) };
    control.sharers.store(sharers.len() as u32, Ordering::Release);
    for (i, &(mac, ip)) in sharers.iter().enumerate() {
        control.macs[i].store(mac, Ordering::Release);
        control.ips[i].store(u32::from_be_bytes(ip), Ordering::Release);
    }
    pci::enable_memory_and_bus_master(cs, &f);
    log::info!("e1000 {f}: registers at 0x{mmio:x}, interrupt line {line}, DMA region at 0x{dma:x}, {} sharer(s)", sharers.len());
    Ok(Claimed { bdf: f.bdf(), device_id: f.header.device_id, mmio, irq_line: line, dma })
}

/// Where an interrupt line arrives: the I/O APIC input (GSI) and its polarity/trigger from the MADT's overrides
/// (PCI lines normally have none: active high as QEMU's and Bochs' PIIX deliver them).
pub fn line_to_gsi(topo: &questv_arch::acpi_madt::Topology, line: u8) -> (u32, bool) {
    match topo.isa_overrides.iter().find(|o| o.isa_irq == line) {
        Some(o) => (o.gsi, o.active_low),
        None => (u32::from(line), false),
    }
}

/// The I/O APIC serving `gsi` and the input number on it.
pub fn ioapic_for(topo: &questv_arch::acpi_madt::Topology, gsi: u32) -> Result<(questv_arch::ioapic::IoApic, u32), String> {
    for io in &topo.io_apics {
        // SAFETY: address from the MADT, inside the uncached 3–4 GiB of the kernel's mapping.
        let ioapic = unsafe { questv_arch::ioapic::IoApic::new(u64::from(io.address), io.id, io.gsi_base) };
        if gsi >= io.gsi_base && gsi < io.gsi_base + ioapic.input_count() {
            return Ok((ioapic, gsi - io.gsi_base));
        }
    }
    Err(format!("no I/O APIC input for GSI {gsi}"))
}

/// The SMP build ("Quest" in the paper's Fig 8): claim the NIC for this kernel, deliver its interrupt to the
/// BSP (edge triggered, as Quest-V does: every sharer reads the cause register, so the line always drops),
/// start the driver thread.
pub fn bring_up_smp(topo: &questv_arch::acpi_madt::Topology) -> Result<(), String> {
    // SAFETY: boot on the BSP after the APs started; nothing else in the SMP kernel uses configuration space.
    let mut pci = unsafe { pci::PortConfigSpace::new() };
    let c = claim(&mut pci, &[(0, super::sharer_ip(0))])?;
    let (gsi, active_low) = line_to_gsi(topo, c.irq_line);
    let (ioapic, pin) = ioapic_for(topo, gsi)?;
    let bsp = questv_arch::lapic::id();
    let dest = u8::try_from(bsp).map_err(|_| format!("BSP APIC id {bsp} does not fit an I/O APIC destination"))?;
    ioapic.route(pin, super::VECTOR_NIC, dest, false, active_low);
    crate::result!("nic", "mode=smp bdf={:02x}:{:02x}.{} device=0x{:04x} mmio=0x{:x} irq_line={} gsi={} dest=cpu0", c.bdf.0, c.bdf.1, c.bdf.2, c.device_id, c.mmio, c.irq_line, gsi);
    super::stack::start(super::stack::Config { mmio: c.mmio, dma: c.dma, index: 0, initialise: true, claims: 0 });
    Ok(())
}
