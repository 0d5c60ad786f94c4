//! The shared NIC (docs/network.md): which sandboxes the monitor grants the e1000 to, who drives it, and the
//! hand-over between sharers when one fails (remote recovery, monitor to monitor).

use super::infopage;
use super::state::{bit, in_service};
use crate::recovery as rec;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use questv_drivers::e1000::{snapshot, Claim, StuckJudge, Stuck, MAX_SHARERS};
use questv_abi::hypercall as hc;
use questv_arch::paging::phys_to_virt;
use questv_arch::acpi_madt::Topology;
use questv_arch::{cpu, lapic, percpu};
use questv_kernel::time::{self, cycles_to_us};
use questv_kernel::{result, smp};

/// The shared NIC: which sandboxes share it (sharer j = `sharers[j]`) and where it is.
pub(super) struct NicGrant {
    sharers: Vec<u32>,
    pub(super) nic: questv_kernel::net::device::Claimed,
    /// Its I/O APIC entry (for re-routing after a remote recovery) and whether it uses logical delivery.
    ioapic: questv_arch::ioapic::IoApic,
    pin: u32,
    active_low: bool,
    logical: bool,
    /// The logical destination now (one bit per sandbox core that still receives it).
    mask: AtomicU32,
    /// The sharers' lock claims: one page per sharer (sharer j's at `claims + j * 4096`), writable only by its
    /// owner, read-only to the other sharers; no device can reach them (they are outside the DMA region).
    pub(super) claims: u64,
}

/// Per sharer, the monitor's view of its lock claim as waiters report it ([`lock_stuck`]).
static LOCK_JUDGES: [spin::Mutex<StuckJudge>; MAX_SHARERS] = [const { spin::Mutex::new(StuckJudge::new()) }; MAX_SHARERS];
/// Per sandbox: faulted for keeping the NIC lock (held ms + 1; 0: not asked), taken by its own core at its
/// next exit (an NMI makes one).
static LOCK_FAULT: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];

static NIC_GRANT: spin::Once<Option<NicGrant>> = spin::Once::new();
/// Sandboxes whose NIC role moved to another sandbox (remote recovery): they are relaunched without it.
static NIC_MOVED: AtomicU64 = AtomicU64::new(0);
/// Remote recovery, monitor to monitor: per target core, the sharers (bit j) it is asked to take over, and
/// those it has (its acknowledgement).
static TAKEOVER_REQUEST: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
static TAKEOVER_ACK: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
/// The I/O APIC's index/data pair is not reentrant: one monitor at a time reprograms it after boot.
static IOAPIC_LOCK: spin::Mutex<()> = spin::Mutex::new(());

impl NicGrant {
    pub(super) fn sharer_count(&self) -> usize {
        self.sharers.len()
    }
}

/// The grant for this run (none: no sandbox shares the NIC).
pub(super) fn install(grant: Option<NicGrant>) {
    NIC_GRANT.call_once(|| grant);
}

pub(super) fn nic_grant() -> Option<&'static NicGrant> {
    NIC_GRANT.get().and_then(Option::as_ref)
}

/// Which sharer `sandbox` is (and the grant), if it still holds a NIC role.
pub(super) fn nic_role(sandbox: u32) -> Option<(usize, &'static NicGrant)> {
    if NIC_MOVED.load(Ordering::Acquire) & bit(sandbox) != 0 {
        return None;
    }
    nic_grant().and_then(|g| g.sharers.iter().position(|&x| x == sandbox).map(|j| (j, g)))
}

/// The offset in the NIC's register window of `gpa`, if `sandbox` is a sharer and `gpa` lies in the window.
pub(super) fn nic_register(sandbox: u32, gpa: u64) -> Option<u32> {
    let (_, g) = nic_role(sandbox)?;
    let offset = gpa.checked_sub(g.nic.mmio)?;
    (offset < questv_drivers::e1000::reg::WINDOW).then_some(offset as u32)
}

/// Claim the e1000 for the sandboxes in `list` (paper §3.6): each gets a virtual MAC and an IPv4 address (filled
/// into the DMA region's control block for [`program`], which publishes them in the info page), and the I/O
/// APIC delivers the NIC's interrupt to exactly their cores (fixed, logical destination, edge triggered) — straight into the guests, no exit. The second-stage mappings and the
/// command-line arguments follow in `prepare`.
pub(super) fn grant_nic(pci: &mut impl questv_drivers::pci::ConfigSpace, list: &str, device_mac: bool, sandboxes: u32, topology: &Topology) -> Result<NicGrant, String> {
    let sharers = questv_kernel::net::parse_sharers(list, sandboxes, questv_drivers::e1000::MAX_SHARERS)?;
    if sharers.is_empty() {
        return Err(format!("nic={list}: no sandbox named"));
    }
    // The guard of the tail pages flushes one core per sharer (docs/partitions.md): a sharer runs on one core,
    // and a core of another sandbox is no sharer at all.
    if let Some(&s) = sharers.iter().find(|&&s| super::state::partition().is_some_and(|p| p.owner(s) != s || !p.members(s).is_empty())) {
        return Err(format!("nic={list}: core {s} is not the only core of a sandbox: a NIC sharer runs on one core"));
    }
    // A partition file may give a sharer its own address and MAC (checked by the runner and here: unique).
    let given = |j: usize| super::state::partition().and_then(|p| p.sandbox(sharers[j]));
    let ids: Vec<(u64, [u8; 4])> = (0..sharers.len())
        // MAC 0: `program` fills in the NIC's EEPROM address for everyone.
        .map(|j| {
            let mac = given(j).and_then(|s| s.mac).unwrap_or(questv_kernel::net::sharer_mac(j));
            let ip = given(j).and_then(|s| s.ip).unwrap_or(questv_kernel::net::sharer_ip(j));
            (if device_mac { 0 } else { questv_drivers::e1000::mac_to_u64(mac) }, ip)
        })
        .collect();
    for (j, a) in ids.iter().enumerate() {
        if ids[..j].iter().any(|b| b.1 == a.1 || (a.0 != 0 && b.0 == a.0)) {
            return Err(format!("nic: sharer {j} has the address or MAC of another sharer"));
        }
    }
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
    // Above the VT build's low alias, as the DMA region: guest-physical = host-physical in every sharer.
    let claims = questv_kernel::mm::kmem::alloc_contiguous_from(MAX_SHARERS as u64, 4096, 16 << 20)
        .ok_or_else(|| String::from("nic: no memory for the lock claims"))?;
    // SAFETY: the pages were just allocated for the claims (RAM, mapped); no sandbox runs yet.
    unsafe { core::ptr::write_bytes(phys_to_virt(claims) as *mut u8, 0, MAX_SHARERS * 4096) };
    Ok(NicGrant { sharers, nic, ioapic, pin, active_low, logical, mask: AtomicU32::new(mask), claims })
}

/// Program the NIC (reset, the sharers' receive addresses, rings, receive and transmit on) before any sandbox
/// runs, and publish what the sharers need — their identities and the NIC's state — in the info page, which
/// they can read and not write. No sharer ever touches a device-wide register (`build` maps them read-only), so
/// none can reset, stop or reprogram the NIC under the others, nor rewrite another's identity. A NIC that does
/// not come out of reset is reported and marked failed: the sandboxes still run, their drivers say so.
pub(super) fn program() {
    let Some(g) = nic_grant() else { return };
    let nic = monitor_view(g);
    let t0 = cpu::rdtsc();
    let programmed = nic.initialise(core::hint::spin_loop);
    let control = nic.mem.control();
    let identities: Vec<(u64, u32)> =
        (0..g.sharers.len()).map(|j| (control.macs[j].load(Ordering::Acquire), control.ips[j].load(Ordering::Acquire))).collect();
    let state = if programmed.is_ok() { hc::info::NIC_READY } else { hc::info::NIC_FAILED };
    infopage::publish_nic(state, &identities);
    match programmed {
        Ok(mac) => result!(
            "nic_programmed",
            "by=monitor ok=1 eeprom_mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} sharers={} link={} cycles={}",
            mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], identities.len(), u8::from(nic.regs.link_up()), cpu::rdtsc() - t0
        ),
        Err(e) => result!("nic_programmed", "by=monitor ok=0 error={:?}", e),
    }
}

/// Report what the IOMMU blocked; after a blocked access, put every descriptor's address back to its own
/// buffer, so a descriptor aimed elsewhere does not keep faulting for everyone. (Which sharer aimed it cannot be
/// known: every sharer writes the shared rings, docs/vt.md.)
pub(super) fn check_dma() {
    if super::iommu::report_faults() == 0 {
        return;
    }
    if let Some(g) = nic_grant() {
        let (rx, tx) = monitor_view(g).repair_descriptors();
        result!("nic_repaired", "after=dma_fault repaired_rx={} repaired_tx={}", rx, tx);
    }
}

/// The monitor's own view of the NIC: its window and DMA region (the lock claims of the control block are never
/// used: the monitor takes no lock, it only programs the device before the sharers run and repairs addresses).
pub(super) fn monitor_view(g: &NicGrant) -> questv_drivers::e1000::SharedNic {
    // SAFETY: the register window and the DMA region were claimed for this NIC by `grant_nic` (the window in the
    // uncached 3-4 GiB device range, the region in kernel memory, both mapped) and stay the monitor's.
    unsafe {
        questv_drivers::e1000::SharedNic::new(
            questv_drivers::e1000::Regs::new(g.nic.mmio),
            questv_drivers::e1000::DescMem::new(g.nic.dma, questv_arch::paging::KERNEL_BASE),
            0,
            questv_drivers::e1000::Variant::Fast,
        )
    }
}

/// Remote recovery: the sharer `sandbox` is, and the next healthy sharer its service goes to (in service and
/// still holding a NIC role itself).
pub(super) fn takeover_target(sandbox: u32) -> Option<(usize, u32)> {
    let (j, grant) = nic_role(sandbox)?;
    let healthy = |s: u32| s != sandbox && in_service(s) && nic_role(s).is_some();
    rec::pick_takeover(sandbox, &grant.sharers, healthy).map(|t| (j, t))
}

/// Remote recovery, on the faulted sandbox's core: ask `target`'s monitor (by NMI, through a mailbox) to take
/// over sharer `j`'s network service, and wait for its acknowledgement (the IPI round trip of Table 1). From
/// now on the faulted sandbox is relaunched without the NIC.
pub(super) fn hand_over(sandbox: u32, j: usize, target: u32) -> bool {
    NIC_MOVED.fetch_or(bit(sandbox), Ordering::AcqRel);
    let t0 = cpu::rdtsc();
    let want = bit(j as u32);
    TAKEOVER_ACK[target as usize].fetch_and(!want, Ordering::AcqRel);
    TAKEOVER_REQUEST[target as usize].fetch_or(want, Ordering::AcqRel);
    let hz = time::tsc_hz();
    let mut nmis = 0;
    // An NMI that reaches the target core while it is in root mode (handling an exit of its own) is not an
    // exit: send again every millisecond until acknowledged, for at most half a second.
    let acked = loop {
        lapic::send_nmi(smp::apic_id(target));
        nmis += 1;
        let until = cpu::rdtsc() + hz / 1000;
        while cpu::rdtsc() < until && TAKEOVER_ACK[target as usize].load(Ordering::Acquire) & want == 0 {
            core::hint::spin_loop();
        }
        if TAKEOVER_ACK[target as usize].load(Ordering::Acquire) & want != 0 {
            break true;
        }
        if cpu::rdtsc() - t0 > hz / 2 {
            // Withdraw the request; if the target took it after all in the meantime, it stands.
            let withdrawn = TAKEOVER_REQUEST[target as usize].fetch_and(!want, Ordering::AcqRel) & want != 0;
            break !withdrawn;
        }
    };
    let round_trip = cpu::rdtsc() - t0;
    if !acked {
        // Nobody took the service: the sandbox keeps its NIC role and is restarted with it.
        NIC_MOVED.fetch_and(!bit(sandbox), Ordering::AcqRel);
    }
    result!(
        "sandbox_takeover",
        "sandbox={} sharer={} target={} acked={} ipi_round_trip_cycles={} ipi_round_trip_us={} nmis={}",
        sandbox, j, target, u8::from(acked), if acked { round_trip } else { 0 }, if acked { cycles_to_us(round_trip) } else { 0 }, nmis
    );
    acked
}

/// Has `target`'s monitor been asked (by NMI) to take over a sharer's service?
pub(super) fn takeover_requested(target: u32) -> bool {
    TAKEOVER_REQUEST[target as usize].load(Ordering::Acquire) != 0
}

/// On `target`'s core, in its NMI exit: take over every sharer it was asked to.
pub(super) fn serve_takeovers(target: u32) {
    let wanted = TAKEOVER_REQUEST[target as usize].swap(0, Ordering::AcqRel);
    for j in (0..64).filter(|j| wanted & (1u64 << j) != 0) {
        take_over(target, j);
    }
}

/// Remote recovery, on the target's core (its NMI exit): route the NIC's interrupt away from the faulted
/// sandbox (the target already receives it), publish the takeover in the info page, and tell the target's
/// kernel with a self-IPI of the takeover vector, which reaches the guest directly.
fn take_over(target: u32, j: usize) {
    let t0 = cpu::rdtsc();
    let Some(g) = nic_grant() else { return };
    let Some(&faulted) = g.sharers.get(j) else { return };
    if nic_role(target).is_none() {
        // This sandbox no longer holds the NIC itself (it handed its own role over): it cannot serve another.
        return;
    }
    if g.logical {
        let id = if lapic::is_x2apic() { smp::apic_id(faulted) } else { faulted };
        let _io = IOAPIC_LOCK.lock();
        let mask = g.mask.fetch_and(!(1u32.checked_shl(id).unwrap_or(0)), Ordering::AcqRel) & !(1u32.checked_shl(id).unwrap_or(0));
        g.ioapic.route_logical(g.pin, questv_kernel::net::VECTOR_NIC, mask as u8, false, g.active_low);
    }
    infopage::publish_takeover(target, j);
    lapic::send_ipi(lapic::id(), hc::TAKEOVER_VECTOR);
    let t1 = cpu::rdtsc();
    TAKEOVER_ACK[target as usize].fetch_or(bit(j as u32), Ordering::AcqRel);
    result!("sandbox_takeover_done", "target={} sharer={} faulted={} reroute_cycles={} logical_dest=0x{:02x}", target, j, faulted, t1 - t0, g.mask.load(Ordering::Acquire));
}

/// A faulted NIC sharer leaves the shared ring (its frozen cursor would stall it for the others) and a lock
/// claim it died holding (or waiting with) is cleared.
pub(super) fn leave_nic(sandbox: u32) {
    if let Some((j, g)) = nic_role(sandbox) {
        let nic = monitor_view(g);
        nic.mem.control().leave(j);
        let held = clear_claim(claim_of(g, j));
        LOCK_JUDGES[j].lock().reset();
        let (repaired_rx, repaired_tx, drained) = fence(&nic);
        result!(
            "nic_leave",
            "sandbox={} sharer={} lock_released={} repaired_rx={} repaired_tx={} tx_drained={}",
            sandbox, j, u8::from(held), repaired_rx, repaired_tx, u8::from(drained)
        );
    }
}

/// Before a faulted sharer's memory is scrubbed and reloaded (or its driver switched), fence the NIC: every
/// descriptor it may have aimed elsewhere goes back to its own buffer, so no later DMA lands in (or reads from)
/// memory outside the region — the restarted slice included, where there is no IOMMU — and what the NIC was
/// already given to send is let out (at most 10 ms). The other sharers keep using the rings meanwhile: they
/// only ever write the same own-buffer addresses.
fn fence(nic: &questv_drivers::e1000::SharedNic) -> (u32, u32, bool) {
    let (rx, tx) = nic.repair_descriptors();
    let until = cpu::rdtsc() + time::ms_to_cycles(10);
    while !nic.transmit_drained() && cpu::rdtsc() < until {
        core::hint::spin_loop();
    }
    (rx, tx, nic.transmit_drained())
}

fn claim_of(g: &NicGrant, j: usize) -> &'static Claim {
    // SAFETY: j < MAX_SHARERS (callers pass a sharer index); the claim pages are monitor memory allocated in
    // grant_nic for good (RAM, mapped); a claim is made of atomics only.
    unsafe { &*((phys_to_virt(g.claims) + 4096 * j.min(MAX_SHARERS - 1) as u64) as *const Claim) }
}

/// Clear a claim (the lock is free of it); whether it held or wanted the lock.
fn clear_claim(c: &Claim) -> bool {
    let was = snapshot(c) != (0, 0);
    c.number.store(0, Ordering::SeqCst);
    c.choosing.store(0, Ordering::SeqCst);
    was
}

/// `NIC_LOCK_STUCK(holder)` from sharer `caller`'s sandbox: judge the holder's claim as the monitor sees it
/// (`StuckJudge`: the same claim for a bound while the holder ran). A holder found keeping the lock has its
/// claim cleared (the waiters go on) and is faulted on its own core at its next exit.
pub(super) fn lock_stuck(caller: u32, holder: u64) -> Result<u64, i64> {
    let (me, g) = nic_role(caller).ok_or(hc::EPERM)?;
    let h = usize::try_from(holder).ok().filter(|&h| h < g.sharers.len() && h != me).ok_or(hc::EINVAL)?;
    let target = g.sharers[h];
    if nic_role(target).is_none() {
        return Ok(0); // its role moved away: its claim was cleared when it left
    }
    let pending = LOCK_FAULT[target as usize].load(Ordering::Acquire) != 0;
    let claim = claim_of(g, h);
    let seen = snapshot(claim);
    let bound = time::ms_to_cycles(hc::NIC_LOCK_BOUND_MS);
    let verdict = LOCK_JUDGES[h].lock().observe(seen, super::heartbeat::heartbeat_of(target), cpu::rdtsc(), bound);
    if let Stuck::Faulted { held } = verdict {
        clear_claim(claim);
        let ms = time::cycles_to_ms(held);
        LOCK_FAULT[target as usize].store(ms + 1, Ordering::Release);
        result!("nic_lock_stuck", "sandbox={} sharer={} choosing={} ticket={} held_ms={} reported_by={}", target, h, seen.0, seen.1, ms, caller);
    }
    if pending || verdict != Stuck::Wait {
        // Its core takes the fault at its next exit; an NMI makes one now (again at each report until taken:
        // one reaching the core in root mode is not an exit).
        lapic::send_nmi(smp::apic_id(target));
    }
    Ok(0)
}

/// Was `sandbox` found keeping the NIC lock? (taken once: the held time in ms)
pub(super) fn take_lock_fault(sandbox: u32) -> Option<u64> {
    match LOCK_FAULT[sandbox as usize].swap(0, Ordering::AcqRel) {
        0 => None,
        v => Some(v - 1),
    }
}
