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

/// Nanoseconds since the Unix epoch at TSC 0 (0: no wall clock known). Every core and every sandbox reads
/// the same TSC, so one value serves all: the BSP sets it from the RTC at boot, a sandbox from the monitor.
static WALL_AT_TSC0_NS: AtomicU64 = AtomicU64::new(0);

/// Record the wall clock: it was `unix_ns` when the TSC read `tsc`.
pub fn set_wall_clock(unix_ns: u64, tsc: u64) {
    WALL_AT_TSC0_NS.store(unix_ns.saturating_sub(cycles_to_ns(tsc)).max(1), Ordering::SeqCst);
}

/// Take the monitor's record (a sandbox; its value of [`wall_at_tsc0`]).
pub fn set_wall_at_tsc0(ns: u64) {
    WALL_AT_TSC0_NS.store(ns, Ordering::SeqCst);
}

/// Nanoseconds since the Unix epoch at TSC 0 (0: unknown).
pub fn wall_at_tsc0() -> u64 {
    WALL_AT_TSC0_NS.load(Ordering::Relaxed)
}

/// The wall clock at TSC `tsc`, in nanoseconds since the Unix epoch (None: no wall clock known).
pub fn realtime_ns(tsc: u64) -> Option<u64> {
    let base = wall_at_tsc0();
    (base != 0).then(|| base.saturating_add(cycles_to_ns(tsc)))
}

/// A date and time as the CMOS real-time clock holds it, already decoded to binary, 24-hour, full year.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcTime {
    pub year: u32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// The RTC's registers (seconds, minutes, hours, day of month, month, year: CMOS 0x00, 0x02, 0x04, 0x07,
/// 0x08, 0x09) as read, decoded per status register B (bit 2: binary, not BCD; bit 1: 24-hour, else bit 7 of
/// the hour is PM). The century is taken as 20 (no FADT century register is read).
pub fn decode_rtc(raw: [u8; 6], status_b: u8) -> RtcTime {
    let bin = |v: u8| if status_b & 0x04 != 0 { u32::from(v) } else { u32::from(v & 0x0F) + 10 * u32::from(v >> 4) };
    let pm = status_b & 0x02 == 0 && raw[2] & 0x80 != 0;
    let mut hour = bin(raw[2] & 0x7F);
    if status_b & 0x02 == 0 {
        // 12-hour clock: 12 AM is 0, 12 PM is 12.
        hour = hour % 12 + if pm { 12 } else { 0 };
    }
    RtcTime { year: 2000 + bin(raw[5]), month: bin(raw[4]), day: bin(raw[3]), hour, minute: bin(raw[1]), second: bin(raw[0]) }
}

/// Seconds since the Unix epoch (UTC) of a decoded RTC time; None for a date that cannot be (the RTC of an
/// unset machine, or a torn read).
pub fn unix_seconds(t: RtcTime) -> Option<u64> {
    if !(1..=12).contains(&t.month) || t.day == 0 || t.day > 31 || t.hour > 23 || t.minute > 59 || t.second > 60 || t.year < 1970 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), March-based years so the leap day comes last.
    let (y, m) = if t.month <= 2 { (i64::from(t.year) - 1, t.month + 9) } else { (i64::from(t.year), t.month - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * i64::from(m) + 2) / 5 + i64::from(t.day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + i64::from(t.hour) * 3600 + i64::from(t.minute) * 60 + i64::from(t.second)).ok()
}

#[cfg(test)]
mod wall_clock_tests {
    use super::*;

    fn t(year: u32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> RtcTime {
        RtcTime { year, month, day, hour, minute, second }
    }

    #[test]
    fn civil_dates_become_unix_seconds() {
        assert_eq!(unix_seconds(t(1970, 1, 1, 0, 0, 0)), Some(0));
        assert_eq!(unix_seconds(t(2000, 3, 1, 0, 0, 0)), Some(951_868_800));
        assert_eq!(unix_seconds(t(2024, 2, 29, 12, 0, 0)), Some(1_709_208_000), "a leap day");
        assert_eq!(unix_seconds(t(2026, 12, 3, 11, 11, 18)), Some(1_796_296_278));
        assert_eq!(unix_seconds(t(2038, 1, 19, 3, 14, 8)), Some(1 << 31), "past 32-bit time_t");
        assert_eq!(unix_seconds(t(2026, 13, 1, 0, 0, 0)), None);
        assert_eq!(unix_seconds(t(2026, 0, 1, 0, 0, 0)), None);
        assert_eq!(unix_seconds(t(2026, 1, 1, 24, 0, 0)), None);
    }

    #[test]
    fn rtc_registers_decode_in_each_mode() {
        // BCD, 24-hour: 2026-12-03 11:11:18.
        assert_eq!(decode_rtc([0x18, 0x11, 0x11, 0x03, 0x12, 0x26], 0x02), t(2026, 12, 3, 11, 11, 18));
        // Binary, 24-hour.
        assert_eq!(decode_rtc([18, 11, 23, 3, 12, 26], 0x06), t(2026, 12, 3, 23, 11, 18));
        // BCD, 12-hour: 11 PM, and 12 AM (midnight).
        assert_eq!(decode_rtc([0, 0, 0x80 | 0x11, 1, 1, 0x26], 0x00).hour, 23);
        assert_eq!(decode_rtc([0, 0, 0x12, 1, 1, 0x26], 0x00).hour, 0);
        assert_eq!(decode_rtc([0, 0, 0x80 | 0x12, 1, 1, 0x26], 0x00).hour, 12);
    }
}
