//! The kernel's clock: the TSC rate measured at boot (or given by the monitor) and the conversions between
//! cycles and wall-clock units that every timeout, sleep and report uses.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// The rate conversions assume until the TSC is calibrated: no conversion divides by zero, and an early
/// timeout is not zero cycles long. Every TSC the kernel runs on (hardware, QEMU, Bochs) is faster.
const FLOOR_HZ: u64 = 1_000_000;

/// Record the calibrated rate (the BSP, once, before the other CPUs start).
pub fn set_tsc_hz(hz: u64) {
    TSC_HZ.store(hz, Ordering::SeqCst);
}

/// TSC cycles per second.
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed).max(FLOOR_HZ)
}

fn scale(value: u64, mul: u64, div: u64) -> u64 {
    u64::try_from(u128::from(value) * u128::from(mul) / u128::from(div)).unwrap_or(u64::MAX)
}

pub fn ns_to_cycles(ns: u64) -> u64 {
    scale(ns, tsc_hz(), 1_000_000_000)
}

pub fn us_to_cycles(us: u64) -> u64 {
    scale(us, tsc_hz(), 1_000_000)
}

pub fn ms_to_cycles(ms: u64) -> u64 {
    scale(ms, tsc_hz(), 1_000)
}

pub fn cycles_to_ns(cycles: u64) -> u64 {
    scale(cycles, 1_000_000_000, tsc_hz())
}

pub fn cycles_to_us(cycles: u64) -> u64 {
    scale(cycles, 1_000_000, tsc_hz())
}

pub fn cycles_to_ms(cycles: u64) -> u64 {
    scale(cycles, 1_000, tsc_hz())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_use_the_calibrated_rate_and_never_divide_by_zero() {
        // One test, because the rate is global.
        assert_eq!(tsc_hz(), FLOOR_HZ, "uncalibrated: the floor");
        assert_eq!(ms_to_cycles(1), 1_000);
        set_tsc_hz(2_500_000_000);
        assert_eq!(ns_to_cycles(1_000), 2_500);
        assert_eq!(us_to_cycles(3), 7_500);
        assert_eq!(ms_to_cycles(2), 5_000_000);
        assert_eq!(cycles_to_ns(2_500), 1_000);
        assert_eq!(cycles_to_us(7_500), 3);
        assert_eq!(cycles_to_ms(5_000_000), 2);
        // No overflow at the extremes: u128 intermediate, saturating result.
        assert_eq!(us_to_cycles(u64::MAX), u64::MAX);
        assert_eq!(ns_to_cycles(u64::MAX), u64::MAX);
        assert_eq!(cycles_to_ns(u64::MAX), u64::MAX / 5 * 2);
        set_tsc_hz(0);
    }
}
