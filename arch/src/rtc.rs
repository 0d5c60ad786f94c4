//! The CMOS real-time clock (ports 0x70/0x71): read once at boot for the wall clock (`kernel::time`). In the
//! VT build only the monitor reads it (sandboxes have no ports) and hands the result to each sandbox.

use crate::cpu::{inb, outb};

const INDEX: u16 = 0x70;
const DATA: u16 = 0x71;
/// Registers of seconds, minutes, hours, day of month, month, year.
const TIME_REGS: [u8; 6] = [0x00, 0x02, 0x04, 0x07, 0x08, 0x09];

fn read(reg: u8) -> u8 {
    // SAFETY: the CMOS index/data pair belongs to the kernel that owns the machine (the SMP kernel, or the
    // monitor before any sandbox runs: sandboxes have no ports); selecting a register and reading it changes
    // nothing (index bit 7, the NMI mask, stays clear as firmware leaves it).
    unsafe {
        outb(INDEX, reg);
        inb(DATA)
    }
}

fn update_in_progress() -> bool {
    read(0x0A) & 0x80 != 0
}

/// The raw clock registers and status register B, read twice outside an update until two reads agree
/// (an update in between would tear the value). None if the clock never settles (no RTC).
pub fn read_raw() -> Option<([u8; 6], u8)> {
    let sample = || {
        for _ in 0..100_000 {
            if !update_in_progress() {
                return Some(TIME_REGS.map(read));
            }
            core::hint::spin_loop();
        }
        None
    };
    let mut last = sample()?;
    for _ in 0..5 {
        let now = sample()?;
        if now == last {
            return Some((now, read(0x0B)));
        }
        last = now;
    }
    None
}
