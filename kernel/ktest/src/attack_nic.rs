//! `ktest attack nic-*`: a NIC sharer turns on the device and on the other sharers. The DMA attack needs an
//! IOMMU to refuse it; the register attacks (reset, stop, reprogram, raise interrupts) meet a window the
//! monitor maps read-only but for the two ring tails; the identity attack rewrites what a sharer used to read
//! its addresses from, and the info page that holds them now; the lock attack keeps the sharers' lock; the
//! ring attack rewrites what the tail pages hold besides the tails.

use crate::util::pause_ms;
use core::sync::atomic::Ordering;
use questv_drivers::e1000::{self, layout, reg, snapshot, Claims, SharedNic, TxDesc};
use questv_kernel::net::stack::{config, shared_nic, STATS};
use questv_kernel::{kprintln, result};

/// This sandbox's view of the shared NIC, once its driver is up (waiting at most ~10 s); None: it has none.
fn own_nic(kind: &str) -> Option<SharedNic> {
    let mut cfg = None;
    for _ in 0..500 {
        cfg = config().filter(|_| STATS.up.load(Ordering::Acquire));
        if cfg.is_some() {
            break;
        }
        pause_ms(20);
    }
    let Some(cfg) = cfg else {
        kprintln!("ktest attack {}: this sandbox drives no NIC", kind);
        return None;
    };
    // The sandbox's own view of the NIC it was granted as a sharer; what it writes there is the attack.
    Some(shared_nic(cfg, e1000::Variant::Fast))
}

/// The NIC as a weapon: queue transmit descriptors whose buffers are `targets` (another sandbox's memory, the
/// monitor's), so the device reads them by DMA and sends them out. The CPU-side tables never see it; only an
/// IOMMU can refuse it (the monitor reports each blocked read as `RESULT dma_fault`). The attacker cannot tell
/// from here whether it worked: it reports what it queued and goes on (the test reads the monitor's lines).
pub(crate) fn nic_dma(targets: &[(&str, u64)]) -> i32 {
    let Some(nic) = own_nic("nic-dma") else { return 2 };
    let c = nic.mem.control();
    for &(name, addr) in targets {
        nic.lock();
        let i = c.tx_next.load(core::sync::atomic::Ordering::Acquire) % layout::TX_DESCS;
        nic.mem.set_tx_desc(i, TxDesc { addr: addr & !0xFFF, length: 256, cmd: e1000::TX_CMD_EOP | e1000::TX_CMD_IFCS | e1000::TX_CMD_RS, ..TxDesc::default() });
        let next = (i + 1) % layout::TX_DESCS;
        c.tx_next.store(next, core::sync::atomic::Ordering::Release);
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        nic.regs.write(reg::TDT, next);
        nic.unlock();
        // The device works through the descriptor either way (with the IOMMU its read is refused).
        let mut done = false;
        for _ in 0..200 {
            if nic.mem.tx_desc(i).status & e1000::TX_DD != 0 {
                done = true;
                break;
            }
            pause_ms(5);
        }
        result!("attack", "kind=nic-dma target={} addr=0x{:x} descriptor={} processed={}", name, addr & !0xFFF, i, u8::from(done));
    }
    0
}

/// Every device-wide register a sharer could use against the others, written as a hostile driver would: reset
/// the device, stop reception and transmission, mask every interrupt, bit-bang the EEPROM, reset the PHY, and
/// clear the next sharer's receive address (its frames would no longer be accepted). Each write must be
/// dropped (the monitor reports it); the registers read back unchanged, and the sharer goes on serving.
pub(crate) fn nic_reset() -> i32 {
    let Some(nic) = own_nic("nic-reset") else { return 2 };
    let r = &nic.regs;
    let peer_ra = reg::RAL0 + 8 * (nic.index as u32 + 2);
    let watched = [reg::CTRL, reg::RCTL, reg::TCTL, peer_ra, peer_ra + 4];
    let before = watched.map(|o| r.read(o));
    let writes: [(u32, u32); 9] = [
        (reg::CTRL, before[0] | e1000::CTRL_RST),
        (reg::RCTL, 0),
        (reg::TCTL, 0),
        (reg::IMC, u32::MAX),
        (reg::EECD, 0x0F),
        // MDIC: write (op 01) PHY 1 register 0 with its reset bit.
        (reg::MDIC, 1 << 26 | 1 << 21 | 0x8000),
        (reg::ITR, 0xFFFF),
        (peer_ra, 0),
        (peer_ra + 4, 0),
    ];
    for (offset, value) in writes {
        kprintln!("ktest attack nic-reset: {} <- 0x{:x}", e1000::register_name(offset), value);
        r.write(offset, value);
    }
    pause_ms(50);
    let after = watched.map(|o| r.read(o));
    // CTRL's self-clearing reset bit aside, nothing may have moved.
    let unchanged = before.iter().zip(after.iter()).all(|(b, a)| b & !e1000::CTRL_RST == a & !e1000::CTRL_RST);
    result!(
        "attack",
        "kind=nic-reset writes={} ctrl=0x{:x} rctl=0x{:x} tctl=0x{:x} peer_rah=0x{:x} outcome={}",
        writes.len(), after[0], after[1], after[2], after[4], if unchanged { "refused" } else { "not_contained" }
    );
    i32::from(!unchanged)
}

/// Writes of the interrupt cause set register in a loop: each would raise the NIC's interrupt on every
/// sharer's core. Refused, they raise nothing: this sharer counts its own NIC interrupts across the storm.
pub(crate) const STORM_WRITES: u32 = 20_000;

pub(crate) fn nic_storm() -> i32 {
    let Some(nic) = own_nic("nic-storm") else { return 2 };
    let irqs_before = STATS.irqs.load(Ordering::Relaxed);
    let t0 = questv_arch::cpu::rdtsc();
    for _ in 0..STORM_WRITES {
        nic.regs.write(reg::ICS, e1000::INT_RXT0);
    }
    let us = questv_kernel::time::cycles_to_us(questv_arch::cpu::rdtsc() - t0);
    pause_ms(20);
    let raised = STATS.irqs.load(Ordering::Relaxed) - irqs_before;
    // A contained storm raises only what the pings did meanwhile; an effective one, one per write.
    let contained = raised < u64::from(STORM_WRITES / 10);
    result!(
        "attack",
        "kind=nic-storm writes={} own_irqs_during={} us={} outcome={}",
        STORM_WRITES, raised, us, if contained { "refused" } else { "not_contained" }
    );
    i32::from(!contained)
}

/// Rewrite every sharer's identity where sharers used to read it (the DMA region's control block, which every
/// sharer can write: now unused in a sandbox), mark the NIC failed there, then try the info page that holds
/// the identities now — a write the second stage refuses, which stops or recovers this sandbox. Its next
/// incarnation (and a sharer taking over its service) must come up with the monitor's addresses, not these.
pub(crate) fn nic_identity() -> i32 {
    if questv_kernel::sandbox::incarnation() > 0 {
        return 0;
    }
    let Some(nic) = own_nic("nic-identity") else { return 2 };
    let c = nic.mem.control();
    let peer = (nic.index + 1) % e1000::MAX_SHARERS;
    let (peer_mac, peer_ip) = (c.macs[peer].load(Ordering::Acquire), c.ips[peer].load(Ordering::Acquire));
    for j in 0..e1000::MAX_SHARERS {
        // Everyone becomes the next sharer: a restarted or taking-over driver that believed this would answer
        // for it.
        c.macs[j].store(peer_mac, Ordering::Release);
        c.ips[j].store(peer_ip, Ordering::Release);
    }
    c.state.store(e1000::STATE_FAILED, Ordering::Release);
    result!("attack", "kind=nic-identity control_rewritten=1 ip=0x{:08x}", peer_ip);
    let Some(shared) = questv_kernel::sandbox::shared_region() else { return 2 };
    let target = shared + questv_abi::hypercall::info::NIC_IPS_OFFSET + 4 * nic.index as u64;
    kprintln!("ktest attack nic-identity: writing this sharer's IP in the info page at 0x{:x}", target);
    // SAFETY: deliberate: with CR0.WP cleared the kernel's own read-only mapping does not stop the write; the
    // second stage must (it stops or recovers this sandbox).
    unsafe {
        core::arch::asm!("mov {0}, cr0", "and {0}, {1}", "mov cr0, {0}", out(reg) _, in(reg) !(1u64 << 16));
        core::ptr::write_volatile(target as *mut u32, peer_ip);
    }
    result!("attack", "kind=nic-identity outcome=not_contained");
    1
}

/// The driver-fault code that makes the driver thread keep the NIC lock (`ktest attack nic-lock`): above every
/// fault kind's code.
pub(crate) const HOLD_LOCK: u32 = 0x100;

/// A sharer that takes the lock over the shared rings and keeps it, its kernel otherwise alive (timer ticks,
/// heartbeat): asked of its own driver thread, so nothing of this sharer gives the lock back. The other
/// sharers wait, report it to their monitors after the bound, and the monitor that sees the same claim held
/// for the bound faults this sandbox (its policy follows) and clears the claim. The next incarnation serves.
pub(crate) fn nic_lock() -> i32 {
    attack_once_pings_flow("nic-lock", ask_driver_to_hold)
}

/// An attack a first incarnation makes from its own thread once pings flow (the restarted one serves): 2 if
/// this sandbox drives no NIC.
fn attack_once_pings_flow(kind: &'static str, attack: extern "C" fn(u64) -> !) -> i32 {
    if questv_kernel::sandbox::incarnation() > 0 {
        return 0;
    }
    if own_nic(kind).is_none() {
        return 2;
    }
    questv_kernel::sched::spawn_on(0, kind, attack, 0);
    0
}

/// Wait until this sharer has seen `n` echo requests.
fn wait_for_pings(n: u64) {
    while STATS.rx_icmp.load(Ordering::Acquire) < n {
        pause_ms(1);
    }
}

/// Once pings flow (the 30th echo request), ask the driver thread to keep the lock.
extern "C" fn ask_driver_to_hold(_: u64) -> ! {
    wait_for_pings(LOCK_AFTER_PINGS);
    questv_kernel::net::stack::INJECT_DRIVER_FAULT.store(HOLD_LOCK, Ordering::SeqCst);
    questv_kernel::net::stack::poke();
    questv_kernel::sched::exit()
}

const LOCK_AFTER_PINGS: u64 = 30;

/// On the driver thread: take the lock and never give it back.
pub(crate) fn hold_the_lock() -> ! {
    let nic = own_nic("nic-lock").unwrap_or_else(|| questv_kernel::sched::exit());
    nic.lock();
    let (_, ticket) = snapshot(nic.claims.claim(nic.index));
    result!("attack", "kind=nic-lock holding=1 sharer={} ticket={}", nic.index, ticket);
    loop {
        pause_ms(100);
    }
}

/// A sharer aims every receive descriptor at another sandbox's memory and every transmit descriptor at the
/// monitor's, then faults at once (`--recovery restart`): before its restart the monitor must fence the NIC —
/// every address back to its own buffer — or the next frames would be written where the attacker aimed them
/// (behind an IOMMU: refused, and the frames lost for every sharer). The next incarnation serves.
pub(crate) fn nic_fence(peer: u64, monitor: u64) -> i32 {
    if questv_kernel::sandbox::incarnation() > 0 {
        return 0;
    }
    let Some(nic) = own_nic("nic-fence") else { return 2 };
    for i in 0..layout::RX_DESCS {
        nic.mem.set_rx_addr(i, peer & !0xFFF);
    }
    for i in 0..layout::TX_DESCS {
        nic.mem.set_tx_addr(i, monitor & !0xFFF);
    }
    result!("attack", "kind=nic-fence aimed_rx={} aimed_tx={} peer=0x{:x} monitor=0x{:x}", layout::RX_DESCS, layout::TX_DESCS, peer & !0xFFF, monitor & !0xFFF);
    panic!("ktest attack nic-fence: descriptors aimed elsewhere, then a fault");
}

/// A sharer rewrites what the two writable pages of the window hold besides the tails: once pings flow, the
/// receive ring's base, moved 64 descriptors into the ring (the NIC then writes frames through the wrong
/// descriptors and passes slots every sharer's cursor would stop at for good). That write cannot exit (the
/// pages are the fast path); the monitor's audit — asked by a sharer whose look at the registers fails, or at
/// its own tick — puts the base back, resynchronises the rings and guards the pages. The attacker then
/// rewrites the transmit ring's base: that write exits, names it, and stops it (`--recovery restart`: its next
/// incarnation serves).
pub(crate) fn nic_ring() -> i32 {
    attack_once_pings_flow("nic-ring", rewrite_ring_bases)
}

const RING_AFTER_PINGS: u64 = 30;

extern "C" fn rewrite_ring_bases(_: u64) -> ! {
    wait_for_pings(RING_AFTER_PINGS);
    let Some(nic) = own_nic("nic-ring") else { questv_kernel::sched::exit() };
    let r = &nic.regs;
    let (rdbal, tdbal) = (r.read(reg::RDBAL), r.read(reg::TDBAL));
    r.write(reg::RDBAL, rdbal + 64 * 16);
    result!("attack", "kind=nic-ring rewrote=RDBAL from=0x{:x} to=0x{:x}", rdbal, rdbal + 64 * 16);
    let t0 = questv_arch::cpu::rdtsc();
    let mut waited = 0;
    while r.read(reg::RDBAL) != rdbal && waited < 3000 {
        pause_ms(1);
        waited += 1;
    }
    let restored = r.read(reg::RDBAL) == rdbal;
    result!("attack", "kind=nic-ring restored_seen={} after_ms={}", u8::from(restored), questv_kernel::time::cycles_to_ms(questv_arch::cpu::rdtsc() - t0));
    // Now the pages are guarded: this write must exit and stop this sandbox.
    r.write(reg::TDBAL, tdbal + 32 * 16);
    pause_ms(20);
    let moved = r.read(reg::TDBAL) != tdbal;
    // Still here: the write was not caught. Put the base back so the rest of the run is not garbled.
    r.write(reg::TDBAL, tdbal);
    result!("attack", "kind=nic-ring rewrote=TDBAL took_effect={} outcome=not_contained", u8::from(moved));
    questv_kernel::sched::exit()
}
