//! Local APIC: x2APIC (MSR interface) when the CPU offers it, xAPIC (MMIO) otherwise. The mode is chosen
//! once on the BSP and used by every CPU.
//!
//! Written here rather than taken from the `x2apic` crate: that crate pulls in the `x86_64` crate's types,
//! owns the vector layout and the timer set-up, and hides the raw ICR access that INIT/SIPI bring-up, NMI
//! broadcast and (later) the VMX monitor's EPT-protected APIC need.

use crate::cpu;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const REG_ID: u32 = 0x20;
const REG_VERSION: u32 = 0x30;
const REG_TPR: u32 = 0x80;
const REG_EOI: u32 = 0xB0;
const REG_SVR: u32 = 0xF0;
const REG_ESR: u32 = 0x280;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
const REG_LVT_CMCI: u32 = 0x2F0;
const REG_LVT_TIMER: u32 = 0x320;
const REG_LVT_THERMAL: u32 = 0x330;
const REG_LVT_PERF: u32 = 0x340;
const REG_LVT_LINT0: u32 = 0x350;
const REG_LVT_LINT1: u32 = 0x360;
const REG_LVT_ERROR: u32 = 0x370;
const REG_TIMER_INITIAL: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3E0;

pub const VECTOR_SPURIOUS: u8 = 0xFF;
pub const VECTOR_ERROR: u8 = 0xFE;

const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;

static X2APIC: AtomicBool = AtomicBool::new(false);
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0xFEE0_0000);

pub fn is_x2apic() -> bool {
    X2APIC.load(Ordering::Relaxed)
}

/// Physical base of the xAPIC MMIO page (to map it uncached).
pub fn xapic_base() -> u64 {
    XAPIC_BASE.load(Ordering::Relaxed)
}

/// Choose the APIC mode for the whole machine (BSP, before any CPU enables its LAPIC).
pub fn select_mode(madt_lapic_address: u64) {
    X2APIC.store(cpu::has_x2apic(), Ordering::SeqCst);
    XAPIC_BASE.store(madt_lapic_address, Ordering::SeqCst);
}

fn read(reg: u32) -> u32 {
    if is_x2apic() {
        // SAFETY: x2APIC mode is enabled on this CPU before any register access; MSR 0x800 + reg/16 exists.
        unsafe { cpu::rdmsr(0x800 + (reg >> 4)) as u32 }
    } else {
        // SAFETY: the xAPIC page is mapped uncached; reg is a valid register offset.
        unsafe { crate::mmio::reg32(xapic_base() + u64::from(reg)).read() }
    }
}

fn write(reg: u32, value: u32) {
    if is_x2apic() {
        // SAFETY: as in read().
        unsafe { cpu::wrmsr(0x800 + (reg >> 4), u64::from(value)) }
    } else {
        // SAFETY: as in read().
        unsafe { crate::mmio::reg32(xapic_base() + u64::from(reg)).write(value) }
    }
}

/// Write a register by its xAPIC offset (the monitor replays a sandbox's checked xAPIC writes with it).
pub fn write_register(reg: u32, value: u32) {
    write(reg, value);
}

/// Read a register by its xAPIC offset.
pub fn read_register(reg: u32) -> u32 {
    read(reg)
}

/// The LVT registers this core's APIC has (version register bits 16–23: the highest LVT index; SDM §11.4.8):
/// timer, LINT0, LINT1 and error always, the performance-counter entry from index 4, thermal from 5, CMCI
/// from 6 (writing an entry the APIC lacks faults in x2APIC mode).
fn present_lvts() -> impl Iterator<Item = u32> {
    let max = (read(REG_VERSION) >> 16) & 0xFF;
    [(REG_LVT_TIMER, 0), (REG_LVT_LINT0, 0), (REG_LVT_LINT1, 0), (REG_LVT_ERROR, 0), (REG_LVT_PERF, 4), (REG_LVT_THERMAL, 5), (REG_LVT_CMCI, 6)]
        .into_iter()
        .filter(move |&(_, needs)| max >= needs)
        .map(|(reg, _)| reg)
}

/// Whether this core's APIC has the LVT entry at xAPIC offset `reg`.
pub fn has_lvt(reg: u32) -> bool {
    present_lvts().any(|r| r == reg)
}

/// Put this core's APIC in its power-on state as far as software can, for the next guest on it: every LVT
/// entry masked with vector 0 (their reset value), the timer stopped, TPR 0, every in-service interrupt
/// acknowledged, the error status cleared. Pending requests (IRR) cannot be withdrawn by software (only INIT
/// clears them): one that is pending is delivered to the next guest once it enables interrupts. Leaves SVR,
/// the logical destination and ICR as they are (the monitor's). Returns how many were in service.
pub fn reset_for_guest() -> u32 {
    for reg in present_lvts() {
        write(reg, 1 << 16);
    }
    write(REG_TIMER_INITIAL, 0);
    write(REG_TPR, 0);
    let in_service = eoi_all_in_service();
    // ESR: a write arms the update, the second clears what it latched.
    write(REG_ESR, 0);
    write(REG_ESR, 0);
    in_service
}

/// Enable this CPU's local APIC in the selected mode, mask LINT0/LINT1 and the timer, accept all priorities.
pub fn enable() {
    // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC (we only run on such CPUs). Written only if it
    // changes: under the VT monitor the core is already in x2APIC mode and APIC_BASE writes exit.
    unsafe {
        let old = cpu::rdmsr(cpu::MSR_APIC_BASE);
        let mut base = old | APIC_BASE_ENABLE;
        if is_x2apic() {
            base |= APIC_BASE_X2APIC;
        }
        if base != old {
            cpu::wrmsr(cpu::MSR_APIC_BASE, base);
        }
    }
    write(REG_SVR, 0x100 | u32::from(VECTOR_SPURIOUS));
    write(REG_TPR, 0);
    write(REG_LVT_LINT0, 1 << 16);
    write(REG_LVT_LINT1, 1 << 16);
    write(REG_LVT_TIMER, 1 << 16);
    write(REG_LVT_ERROR, u32::from(VECTOR_ERROR));
    write(REG_ESR, 0);
    eoi();
}

/// xAPIC only: the flat logical-destination model with logical id `bit_mask` (one bit per core), so an I/O APIC
/// entry with a logical destination reaches exactly the cores whose bits it names. x2APIC derives LDR from the
/// APIC id (read-only): see [`logical_id`].
pub fn set_flat_logical_id(bit_mask: u8) {
    if !is_x2apic() {
        write(0xE0, 0xFFFF_FFFF);
        write(0xD0, u32::from(bit_mask) << 24);
    }
}

/// The logical id as the APIC reports it (xAPIC: LDR bits 24–31; x2APIC: the 32-bit LDR).
pub fn logical_id() -> u32 {
    let v = read(0xD0);
    if is_x2apic() {
        v
    } else {
        v >> 24
    }
}

pub fn id() -> u32 {
    let v = read(REG_ID);
    if is_x2apic() {
        v
    } else {
        v >> 24
    }
}

#[inline]
pub fn eoi() {
    write(REG_EOI, 0);
}

/// Acknowledge every interrupt in service on this core (a recovered sandbox's kernel died with some
/// unacknowledged; each EOI retires the highest-priority one). Returns how many there were.
pub fn eoi_all_in_service() -> u32 {
    let mut n = 0;
    // At most 256 vectors can be in service; each EOI clears one ISR bit.
    while n < 256 && (0..8u32).any(|i| read(0x100 + 0x10 * i) != 0) {
        eoi();
        n += 1;
    }
    n
}

pub fn error_status() -> u32 {
    write(REG_ESR, 0);
    read(REG_ESR)
}

const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_TRIGGER_LEVEL: u32 = 1 << 15;
const DELIVERY_FIXED: u32 = 0 << 8;
const DELIVERY_NMI: u32 = 4 << 8;
const DELIVERY_INIT: u32 = 5 << 8;
const DELIVERY_STARTUP: u32 = 6 << 8;
const SHORTHAND_ALL_BUT_SELF: u32 = 3 << 18;

/// xAPIC: the ICR high value each CPU last wrote (the register keeps it), so an IPI to the same destination
/// needs only the ICR low write: one MMIO write, and one exit under a monitor that traps the APIC page.
static ICR_HIGH: [core::sync::atomic::AtomicU32; crate::percpu::MAX_CPUS] =
    [const { core::sync::atomic::AtomicU32::new(u32::MAX) }; crate::percpu::MAX_CPUS];

fn send_icr(dest_apic_id: u32, low: u32) {
    if is_x2apic() {
        // SAFETY: the x2APIC ICR is a single 64-bit MSR; writing it sends the IPI.
        unsafe { cpu::wrmsr(0x830, (u64::from(dest_apic_id) << 32) | u64::from(low)) };
    } else {
        cpu::without_interrupts(|| {
            let high = dest_apic_id << 24;
            let last = &ICR_HIGH[crate::percpu::cpu_index() as usize];
            if last.load(Ordering::Relaxed) != high {
                write(REG_ICR_HIGH, high);
                last.store(high, Ordering::Relaxed);
            }
            write(REG_ICR_LOW, low);
            while read(REG_ICR_LOW) & ICR_DELIVERY_PENDING != 0 {
                cpu::pause();
            }
        });
    }
}

/// Fixed-delivery IPI with `vector` to the CPU whose APIC id is `dest_apic_id`.
pub fn send_ipi(dest_apic_id: u32, vector: u8) {
    send_icr(dest_apic_id, DELIVERY_FIXED | ICR_LEVEL_ASSERT | u32::from(vector));
}

/// NMI to the CPU whose APIC id is `dest_apic_id` (monitor to monitor: an NMI exits from the guest there).
/// ICR high is always written: a guest with a passed-through APIC page may have changed it since.
pub fn send_nmi(dest_apic_id: u32) {
    ICR_HIGH[crate::percpu::cpu_index() as usize].store(u32::MAX, Ordering::Relaxed);
    send_icr(dest_apic_id, DELIVERY_NMI | ICR_LEVEL_ASSERT);
}

/// NMI to every CPU but this one (used by panic to stop the machine).
pub fn send_nmi_all_but_self() {
    send_icr(0, DELIVERY_NMI | ICR_LEVEL_ASSERT | SHORTHAND_ALL_BUT_SELF);
}

/// INIT-SIPI-SIPI sequence (Intel SDM Vol. 3 §8.4.4.1) starting `dest_apic_id` at physical `start_page << 12`,
/// with the SDM's waits between the steps timed by `delay_us` (a monitor that emulates the sequence needs none).
pub fn start_ap(dest_apic_id: u32, start_page: u8, delay_us: fn(u32)) {
    send_icr(dest_apic_id, DELIVERY_INIT | ICR_LEVEL_ASSERT | ICR_TRIGGER_LEVEL);
    delay_us(200);
    if !is_x2apic() {
        // INIT level de-assert, required by older xAPICs and harmless on newer ones.
        send_icr(dest_apic_id, DELIVERY_INIT | ICR_TRIGGER_LEVEL);
    }
    delay_us(10_000);
    for _ in 0..2 {
        send_icr(dest_apic_id, DELIVERY_STARTUP | ICR_LEVEL_ASSERT | u32::from(start_page));
        delay_us(200);
    }
}

/// Divide-by-16 for the timer: calibration and the periodic tick use the same divider.
const TIMER_DIVIDE_16: u32 = 0b0011;

/// Start the timer counting down from its maximum, masked (used for calibration).
pub fn timer_start_free_running() {
    write(REG_TIMER_DIVIDE, TIMER_DIVIDE_16);
    write(REG_LVT_TIMER, 1 << 16);
    write(REG_TIMER_INITIAL, u32::MAX);
}

pub fn timer_current() -> u32 {
    read(REG_TIMER_CURRENT)
}

pub fn timer_stop() {
    write(REG_LVT_TIMER, 1 << 16);
    write(REG_TIMER_INITIAL, 0);
}

/// One timer interrupt on `vector` after `ticks` timer counts (at the divide-by-16 rate); the scheduler
/// re-arms it at every decision (budget exhaustion, replenishment or the next tick, whichever is first).
pub fn timer_oneshot(vector: u8, ticks: u32) {
    write(REG_LVT_TIMER, u32::from(vector));
    write(REG_TIMER_INITIAL, ticks.max(1));
}

/// Set the timer's divider (once per CPU, before [`timer_oneshot`]).
pub fn timer_init_divider() {
    write(REG_TIMER_DIVIDE, TIMER_DIVIDE_16);
}

