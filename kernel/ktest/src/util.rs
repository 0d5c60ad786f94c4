//! What several tests share: time, deliberate stray writes, the first channel in the directory.

use core::sync::atomic::Ordering;
use questv_arch::cpu;
use questv_arch::paging::phys_to_virt;
use questv_kernel::{sched, time};

pub(crate) fn seconds(n: u64) -> u64 {
    time::tsc_hz() * n
}

/// Let the scheduler run others for about `ms` milliseconds.
pub(crate) fn pause_ms(ms: u64) {
    let end = cpu::rdtsc() + time::ms_to_cycles(ms);
    while cpu::rdtsc() < end {
        sched::yield_now();
    }
}


/// A write the second stage must stop: guest-physical `addr` lies outside this sandbox's memory (or is
/// read-only in it), so the write (through the kernel's mapping of physical memory) exits to the monitor,
/// which stops or recovers the sandbox.
pub(crate) fn forbidden_write(addr: u64) {
    // SAFETY: deliberate; nothing of this sandbox is at `addr`, or the write never happens.
    unsafe { core::ptr::write_volatile(phys_to_virt(addr) as *mut u64, 0xBAD0_BAD0_BAD0_BAD0) };
}

/// Write this kernel's own text at guest-physical `at` the way a compromised kernel would: its own page
/// tables map text read-only, so it first clears CR0.WP. The EPT/NPT is the layer that must still hold.
pub(crate) fn write_own_text(at: u64) {
    let at = phys_to_virt(at);
    // SAFETY: deliberate: with WP cleared only the second stage stops the write, which stops this sandbox.
    unsafe {
        core::arch::asm!("mov {0}, cr0", "and {0}, {1}", "mov cr0, {0}", out(reg) _, in(reg) !(1u64 << 16));
        core::ptr::write_volatile(at as *mut u8, 0xCC);
    }
}

/// The first channel listed in the shared info page's directory (waiting up to ~10 s for one to appear).
pub(crate) fn channel_target() -> Option<u64> {
    use questv_abi::hypercall::info;
    let shared = questv_kernel::sandbox::shared_region()?;
    let deadline = cpu::rdtsc() + seconds(10);
    // SAFETY: the shared region is mapped for every sandbox; the directory layout is the ABI's (`info`).
    unsafe {
        let count = &*((shared + info::CHANNEL_COUNT_OFFSET) as *const core::sync::atomic::AtomicU32);
        while count.load(Ordering::Acquire) == 0 {
            if cpu::rdtsc() > deadline {
                return None;
            }
            sched::yield_now();
        }
        Some(core::ptr::read_volatile((shared + info::CHANNEL_DIR_OFFSET + 8) as *const u64))
    }
}
