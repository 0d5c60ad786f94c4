//! The shared NIC (docs/network.md): which sandboxes the monitor grants the e1000 to, who drives it, and the
//! hand-over between sharers when one fails.

use super::*;

/// The shared NIC: which sandboxes share it (sharer j = `sharers[j]`) and where it is.
pub(super) struct NicGrant {
    pub(super) sharers: Vec<u32>,
    pub(super) nic: questv_kernel::net::device::Claimed,
    /// Its I/O APIC entry (for re-routing after a remote recovery) and whether it uses logical delivery.
    pub(super) ioapic: questv_arch::ioapic::IoApic,
    pub(super) pin: u32,
    pub(super) active_low: bool,
    pub(super) logical: bool,
    /// The logical destination now (one bit per sandbox core that still receives it).
    pub(super) mask: AtomicU32,
}

/// Sandboxes whose NIC role moved to another sandbox (remote recovery): they are relaunched without it.
pub(super) static NIC_MOVED: AtomicU64 = AtomicU64::new(0);
/// Remote recovery, monitor to monitor: per target core, the sharers (bit j) it is asked to take over, and
/// those it has (its acknowledgement).
pub(super) static TAKEOVER_REQUEST: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
pub(super) static TAKEOVER_ACK: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
/// Sandboxes running and in service (bit = sandbox): set at BOOTED, cleared when one faults, finishes or is
/// stopped. A takeover target must be one of them (never one that is itself recovering).
pub(super) static IN_SERVICE: AtomicU64 = AtomicU64::new(0);
/// The I/O APIC's index/data pair is not reentrant: one monitor at a time reprograms it after boot.
pub(super) static IOAPIC_LOCK: spin::Mutex<()> = spin::Mutex::new(());

pub(super) fn nic_role(sandbox: u32) -> Option<(usize, &'static NicGrant)> {
    if NIC_MOVED.load(Ordering::Acquire) & bit(sandbox) != 0 {
        return None;
    }
    nic_grant().and_then(|g| g.sharers.iter().position(|&x| x == sandbox).map(|j| (j, g)))
}

pub(super) static NIC_GRANT: spin::Once<Option<NicGrant>> = spin::Once::new();

pub(super) fn nic_grant() -> Option<&'static NicGrant> {
    NIC_GRANT.get().and_then(Option::as_ref)
}

/// Claim the e1000 for the sandboxes in `list` (paper §3.6): each gets a virtual MAC and an IPv4 address in the
/// DMA region's control block, and the I/O APIC delivers the NIC's interrupt to exactly their cores (fixed,
/// logical destination, edge triggered) — straight into the guests, no exit. The second-stage mappings and the
/// command-line arguments follow in `prepare`.
pub(super) fn grant_nic(pci: &mut impl questv_drivers::pci::ConfigSpace, list: &str, device_mac: bool, sandboxes: u32, topology: &Topology) -> Result<NicGrant, String> {
    let sharers = questv_kernel::net::parse_sharers(list, sandboxes, questv_drivers::e1000::MAX_SHARERS)?;
    if sharers.is_empty() {
        return Err(format!("nic={list}: no sandbox named"));
    }
    let ids: Vec<(u64, [u8; 4])> = (0..sharers.len())
        // MAC 0: the initialising sharer fills in the NIC's EEPROM address for everyone.
        .map(|j| (if device_mac { 0 } else { questv_drivers::e1000::mac_to_u64(questv_kernel::net::sharer_mac(j)) }, questv_kernel::net::sharer_ip(j)))
        .collect();
    let nic = questv_kernel::net::device::claim(pci, &ids)?;
    // Logical ids: xAPIC flat, bit = core index (set in launch_here); x2APIC cluster 0, bit = APIC id (fixed by
    // the hardware; the I/O APIC's 8-bit destination reaches cluster 0 only).
    let mut mask = 0u32;
    for &s in &sharers {
        let bit = if lapic::is_x2apic() { smp::apic_id(s) } else { s };
        if bit >= 8 {
            return Err(format!("nic: sandbox {s} (APIC id {}) is beyond the 8 logical ids an I/O APIC entry can name", smp::apic_id(s)));
        }
        mask |= 1 << bit;
    }
    let (gsi, active_low) = questv_kernel::net::device::line_to_gsi(topology, nic.irq_line);
    let (ioapic, pin) = questv_kernel::net::device::ioapic_for(topology, gsi)?;
    // An x2APIC LDR is derived from the APIC id and never 0; Bochs 2.7 leaves it 0 when x2APIC mode is turned
    // on (fixed in later Bochs), so no logical destination ever matches. There the interrupt goes to every core
    // (physical broadcast) and the sandboxes that do not share the NIC acknowledge it and ignore it.
    let ldr_broken = lapic::is_x2apic() && lapic::logical_id() == 0;
    let logical = !ldr_broken;
    let delivery = if ldr_broken {
        ioapic.route(pin, questv_kernel::net::VECTOR_NIC, 0xFF, false, active_low);
        "physical_broadcast"
    } else {
        ioapic.route_logical(pin, questv_kernel::net::VECTOR_NIC, mask as u8, false, active_low);
        "logical"
    };
    result!(
        "nic",
        "mode=vt bdf={:02x}:{:02x}.{} device=0x{:04x} mmio=0x{:x} dma=0x{:x} irq_line={} gsi={} delivery={} logical_dest=0x{:02x} sharers={}",
        nic.bdf.0, nic.bdf.1, nic.bdf.2, nic.device_id, nic.mmio, nic.dma, nic.irq_line, gsi, delivery, mask,
        sharers.iter().map(|s| format!("{s}")).collect::<Vec<_>>().join(",")
    );
    Ok(NicGrant { sharers, nic, ioapic, pin, active_low, logical, mask: AtomicU32::new(mask) })
}
