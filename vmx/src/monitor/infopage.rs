//! The info page (`questv_abi::hypercall::info`): the first page of the shared region, mapped read-only into
//! every sandbox and written only here — its header, the channel directory, the channel reset counters, the
//! takeovers and the incarnations.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use questv_abi::hypercall::{info, SHARED_SIZE};

/// Host address of the shared region (its first page is the info page); set once by [`init`].
static SHARED_BASE: AtomicU64 = AtomicU64::new(0);

/// Zero the shared region at `base` and write the info page's header.
///
/// # Safety
/// [base, base + SHARED_SIZE) is the shared region, taken from the frame allocator for this purpose and used
/// by nothing yet (no sandbox runs).
pub(super) unsafe fn init(base: u64, sandboxes: u32) {
    SHARED_BASE.store(base, Ordering::SeqCst);
    let base = view();
    // SAFETY: the caller's contract: the shared region was just taken for this purpose.
    unsafe { core::ptr::write_bytes(base as *mut u8, 0, SHARED_SIZE as usize) };
    // SAFETY: the info page is the first page of the zeroed shared region.
    unsafe {
        core::ptr::write_volatile((base + info::MAGIC_OFFSET) as *mut u64, info::MAGIC);
        core::ptr::write_volatile((base + info::VERSION_OFFSET) as *mut u32, info::VERSION);
        core::ptr::write_volatile((base + info::SANDBOXES_OFFSET) as *mut u32, sandboxes);
    }
}

/// Where the monitor reaches the shared region (its physical address through the kernel's mapping).
fn view() -> u64 {
    questv_arch::paging::phys_to_virt(SHARED_BASE.load(Ordering::SeqCst))
}

/// A 32-bit counter of the info page, at `offset` from its start.
fn counter(offset: u64) -> &'static AtomicU32 {
    let shared = view();
    // SAFETY: the info page is monitor-initialised shared memory (`init` ran before any sandbox started);
    // callers keep `offset` within it, 4-byte aligned.
    unsafe { &*((shared + offset) as *const AtomicU32) }
}

/// Publish channel `i` (between sandboxes `a` and `b`, at `base`; 0: it has no memory now) in the channel
/// directory, then the count of entries (never shrinking: entries keep their index).
pub(super) fn publish_channel(i: u64, a: u32, b: u32, base: u64) {
    let shared = view();
    // SAFETY: the info page is monitor-initialised shared memory; the directory slot is within it (the caller
    // keeps `i` below MAX_CHANNELS).
    unsafe {
        let entry = (shared + info::CHANNEL_DIR_OFFSET + info::CHANNEL_DIR_ENTRY * i) as *mut u32;
        core::ptr::write_volatile(entry, a);
        core::ptr::write_volatile(entry.add(1), b);
        core::ptr::write_volatile(entry.add(2) as *mut u64, base);
    }
    counter(info::CHANNEL_COUNT_OFFSET).fetch_max(i as u32 + 1, Ordering::AcqRel);
}

/// Count a reset of channel `i` (its endpoints see the counter move).
pub(super) fn count_channel_reset(i: usize) {
    counter(info::CHANNEL_RESETS_OFFSET + 4 * i as u64).fetch_add(1, Ordering::Release);
}

/// `target` took over sharer `j`'s network service.
pub(super) fn publish_takeover(target: u32, j: usize) {
    if u64::from(target) < info::MAX_SANDBOXES {
        counter(info::TAKEOVERS_OFFSET + 4 * u64::from(target)).fetch_or(1 << j, Ordering::AcqRel);
    }
}

/// The shared NIC as the monitor programmed it: each sharer's identity (MAC as a u64, IPv4 as its four bytes in
/// network order), then the state that tells the sharers it is ready (written last).
pub(super) fn publish_nic(state: u32, identities: &[(u64, u32)]) {
    let shared = view();
    let n = identities.len().min(info::NIC_MAX_SHARERS as usize);
    for (j, &(mac, ip)) in identities.iter().take(n).enumerate() {
        // SAFETY: the info page is monitor-initialised shared memory; slot j < NIC_MAX_SHARERS lies within it
        // (the layout's assertion), 8- and 4-byte aligned.
        unsafe {
            core::ptr::write_volatile((shared + info::NIC_MACS_OFFSET + 8 * j as u64) as *mut u64, mac);
            core::ptr::write_volatile((shared + info::NIC_IPS_OFFSET + 4 * j as u64) as *mut u32, ip);
        }
    }
    counter(info::NIC_SHARERS_OFFSET).store(n as u32, Ordering::Release);
    counter(info::NIC_STATE_OFFSET).store(state, Ordering::Release);
}

/// `sandbox` now runs its incarnation `incarnation`.
pub(super) fn publish_incarnation(sandbox: u32, incarnation: u32) {
    if u64::from(sandbox) < info::MAX_SANDBOXES {
        counter(info::INCARNATIONS_OFFSET + 4 * u64::from(sandbox)).store(incarnation, Ordering::Release);
    }
}
