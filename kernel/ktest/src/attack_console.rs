//! `ktest attack console-flood`: sandbox 0 prints without pause; sandbox 1, a bystander, makes one large write
//! in the middle of it (with the watchdog armed). Each sandbox's lines wait in its own queue in the monitor,
//! drained in turns: the flood delays the flooder's output only, the bystander's write is not held up behind
//! it, and nobody is stopped.
#![forbid(unsafe_code)]

use crate::util::pause_ms;
use questv_arch::cpu;
use questv_kernel::{kprintln, result, time};

const FLOOD_MS: u64 = 2000;
pub(crate) const BYSTANDER_LINES: usize = 64;

/// Sandbox 0: 512-byte console writes of short lines, as fast as the monitor takes them, for FLOOD_MS.
pub(crate) fn flood() -> i32 {
    let chunk = [b"flood\n".as_slice(); 85].concat();
    let end = cpu::rdtsc() + time::ms_to_cycles(FLOOD_MS);
    let mut writes = 0u64;
    while cpu::rdtsc() < end {
        questv_kernel::sandbox::console_write(&chunk);
        writes += 1;
    }
    result!("attack", "kind=console-flood role=flooder writes={} lines={}", writes, writes * 85);
    0
}

/// Sandbox 1: once the flood is under way, one write of BYSTANDER_LINES numbered lines (4 KiB), timed.
pub(crate) fn bystander() -> i32 {
    pause_ms(500);
    let mut text = alloc::string::String::new();
    for i in 0..BYSTANDER_LINES {
        text.push_str(&alloc::format!("console-flood bystander line {i:02} {}\n", "b".repeat(28)));
    }
    let t0 = cpu::rdtsc();
    kprintln!("{}", text.trim_end());
    let us = time::cycles_to_us(cpu::rdtsc() - t0);
    result!("attack", "kind=console-flood role=bystander lines={} bytes={} write_us={}", BYSTANDER_LINES, text.len(), us);
    0
}
