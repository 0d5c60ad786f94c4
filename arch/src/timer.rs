//! Legacy timers used only at boot: the 8259 PICs are remapped and masked (we use the APICs), and PIT
//! channel 2 provides a known 10 ms interval to calibrate the LAPIC timer and the TSC.

use crate::{cpu, lapic};

const PIT_HZ: u64 = 1_193_182;
const CALIBRATION_MS: u64 = 10;

/// Remap the 8259 PICs away from the exception vectors and mask every line.
pub fn disable_legacy_pic() {
    // SAFETY: the PICs exist on every PC-compatible machine; remapping to 0x20/0x28 and masking all lines
    // keeps them from ever delivering an interrupt.
    unsafe {
        let mut pics = pic8259::ChainedPics::new(0x20, 0x28);
        pics.initialize();
        pics.write_masks(0xFF, 0xFF);
    }
}

/// Program PIT channel 0 as a rate generator (mode 2) at about `hz` interrupts per second (at least 19 Hz:
/// the divisor is 16 bits). Returns the period actually programmed, in microseconds.
pub fn pit_periodic(hz: u64) -> u64 {
    let divisor = (PIT_HZ / hz.max(1)).clamp(1, 0xFFFF);
    // SAFETY: ports 0x40/0x43 are PIT channel 0 and the mode register; only the monitor programs the PIT.
    unsafe {
        cpu::outb(0x43, 0b0011_0100); // channel 0, lobyte/hibyte, mode 2, binary
        cpu::outb(0x40, divisor as u8);
        cpu::outb(0x40, (divisor >> 8) as u8);
    }
    divisor * 1_000_000 / PIT_HZ
}

#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    /// LAPIC timer counts per second at divide-by-16.
    pub lapic_hz: u64,
    pub tsc_hz: u64,
}

/// Measure the LAPIC timer and TSC rates against a 10 ms PIT channel-2 one-shot. Interrupts must be off.
pub fn calibrate() -> Calibration {
    let count = (PIT_HZ * CALIBRATION_MS / 1000) as u16;
    // SAFETY: ports 0x61/0x42/0x43 are the PC speaker gate and PIT; we use channel 2 with the speaker off.
    unsafe {
        let gate = cpu::inb(0x61);
        cpu::outb(0x61, (gate & !0x02) | 0x01); // gate on, speaker off
        cpu::outb(0x43, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count)
        cpu::outb(0x42, count as u8);
        cpu::outb(0x42, (count >> 8) as u8);
        // Restart the count: a rising edge on the gate reloads channel 2.
        let g = cpu::inb(0x61) & !0x01;
        cpu::outb(0x61, g);
        cpu::outb(0x61, g | 0x01);
    }
    lapic::timer_start_free_running();
    let tsc_start = cpu::rdtsc();
    // SAFETY: reading port 0x61 has no side effects; bit 5 is PIT channel 2's output.
    while unsafe { cpu::inb(0x61) } & 0x20 == 0 {
        cpu::pause();
    }
    let lapic_elapsed = u64::from(u32::MAX - lapic::timer_current());
    let tsc_elapsed = cpu::rdtsc() - tsc_start;
    lapic::timer_stop();
    Calibration {
        lapic_hz: lapic_elapsed * 1000 / CALIBRATION_MS,
        tsc_hz: tsc_elapsed * 1000 / CALIBRATION_MS,
    }
}
