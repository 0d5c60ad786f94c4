//! Channels (paper §3.3): pairwise shared pages allocated by the monitor on first open and mapped into exactly
//! the two sandboxes' second stages; wiped and marked reset when one end is recovered.

use super::infopage;
use super::state::sandboxes;
use super::tables::{map_channel, POOL};
use alloc::vec::Vec;
use questv_abi::hypercall::{self as hc, info};
use questv_arch::paging::PAGE_SIZE;
use questv_kernel::channel::endpoint::CHANNEL_BYTES;
use questv_kernel::smp;
use questv_kernel::sync::IrqSpinlock;

/// A channel the monitor set up. Masks: bit 0 = endpoint a, bit 1 = endpoint b.
pub(super) struct ChannelRecord {
    a: u32,
    b: u32,
    /// Host address (= guest-physical in both endpoints).
    base: u64,
    /// Endpoints that opened it (in their current incarnation).
    opened: u8,
    /// Endpoints whose second stage maps it.
    mapped: u8,
}

/// Channels by directory index. Lock order: CHANNELS first (see `tables`).
pub(super) static CHANNELS: IrqSpinlock<Vec<ChannelRecord>> = IrqSpinlock::new(Vec::new());

/// Channel between `me` and `peer`: allocated on first open from monitor memory and mapped, at its host
/// address, into exactly those two sandboxes' second-stage tables (adding mappings needs no invalidation).
/// After `me` was recovered its rebuilt second stage lacks the channel: re-opening maps it again.
/// Returns its address.
pub(super) fn channel_open(me: u32, peer: u32) -> Result<u64, i64> {
    let n = sandboxes();
    if peer >= n || peer == me {
        return Err(hc::EINVAL);
    }
    let key = (me.min(peer), me.max(peer));
    let mut chans = CHANNELS.lock();
    let my_bit = if me == key.0 { 1 } else { 2 };
    if let Some(c) = chans.iter_mut().find(|c| (c.a, c.b) == key) {
        if c.mapped & my_bit == 0 {
            let mut pool = POOL.lock();
            map_channel(pool.as_mut().ok_or(hc::ENOMEM)?, me, c.base, CHANNEL_BYTES)?;
            c.mapped |= my_bit;
        }
        c.opened |= my_bit;
        return Ok(c.base);
    }
    if chans.len() as u64 >= info::MAX_CHANNELS {
        return Err(hc::ENOMEM);
    }
    let mut pool = POOL.lock();
    let pool = pool.as_mut().ok_or(hc::ENOMEM)?;
    let pages = CHANNEL_BYTES / PAGE_SIZE;
    let base = pool.pages(pages).map_err(|_| hc::ENOMEM)?;
    for e in [key.0, key.1] {
        map_channel(pool, e, base, CHANNEL_BYTES)?;
    }
    // Publish in the info page's channel directory.
    infopage::publish_channel(chans.len() as u64, key.0, key.1, base);
    chans.push(ChannelRecord { a: key.0, b: key.1, base, opened: my_bit, mapped: 3 });
    log::info!("channel {}<->{} at 0x{:x} ({} pages)", key.0, key.1, base, pages);
    Ok(base)
}

/// Does sandbox `a` have a channel with the sandbox on the core whose APIC id is `apic` (`both_open`: opened by
/// both ends)?
pub(super) fn has_channel_to_apic(a: u32, apic: u32, both_open: bool) -> bool {
    let n = sandboxes();
    let Some(b) = (0..n).find(|&b| smp::apic_id(b) == apic) else { return false };
    let key = (a.min(b), a.max(b));
    // Only once both ends opened it: a sandbox cannot make itself a notifier of a peer that never agreed.
    CHANNELS.lock().iter().any(|c| (c.a, c.b) == key && (c.opened == 3 || !both_open))
}

/// Wipe every channel of `sandbox` and publish the resets (the peers' endpoints, and the sandbox's own if it
/// runs on, see the counter move and report the reset once). With `unmap` (a restart: the rebuilt second stage
/// lacks them) the sandbox also has to open them again. Returns how many there were. Lock order: CHANNELS first.
pub(super) fn reset_channels(chans: &mut [ChannelRecord], sandbox: u32, unmap: bool) -> u32 {
    let mut n = 0;
    for (i, c) in chans.iter_mut().enumerate().filter(|(_, c)| c.a == sandbox || c.b == sandbox) {
        if unmap {
            let bit = if c.a == sandbox { 1 } else { 2 };
            c.opened &= !bit;
            c.mapped &= !bit;
        }
        // SAFETY: channel memory is monitor memory of this channel; the peer may race with the wipe, which its
        // ring checks (sequence and checksum) turn into an error, never into a wrong message.
        unsafe { core::ptr::write_bytes(c.base as *mut u8, 0, CHANNEL_BYTES as usize) };
        infopage::count_channel_reset(i);
        n += 1;
    }
    n
}
