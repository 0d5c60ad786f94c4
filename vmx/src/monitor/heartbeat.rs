//! A sandbox's heartbeat word (its kernel bumps it every timer tick, at `HEARTBEAT_GPA` in its own slice), read
//! by the watchdog on the sandbox's core and by the NIC lock's judge from another.

use super::layout::host_view;
use super::state::state;
use questv_abi::hypercall as hc;

/// The heartbeat of the sandbox whose slice starts at `host_base`.
pub(super) fn heartbeat_in(host_base: u64) -> u64 {
    let hb_host = host_view(host_base, hc::HEARTBEAT_GPA);
    // SAFETY: the heartbeat page is inside that sandbox's slice, which the monitor reaches through its mapping of physical memory; a u64 there is
    // always readable (the sandbox may change it at any time).
    unsafe { core::ptr::read_volatile(hb_host as *const u64) }
}

/// The heartbeat of the sandbox's CPU `cpu` (its kernel's numbering: 0 is its first core).
pub(super) fn cpu_heartbeat_in(host_base: u64, cpu: u32) -> u64 {
    let hb_host = host_view(host_base, hc::CPU_HEARTBEAT_GPA + 8 * u64::from(cpu.min(63)));
    // SAFETY: as for heartbeat_in: inside the sandbox's heartbeat page.
    unsafe { core::ptr::read_volatile(hb_host as *const u64) }
}

/// `sandbox`'s heartbeat, read from any core.
pub(super) fn heartbeat_of(sandbox: u32) -> u64 {
    let base = state(sandbox).host_base;
    heartbeat_in(base)
}
