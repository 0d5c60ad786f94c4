//! Channels (paper §3.3): pairwise shared pages allocated by the monitor on first open and mapped into exactly
//! the two sandboxes' second stages; wiped and marked reset when one end is recovered.

use super::*;

/// A channel the monitor set up. Masks: bit 0 = endpoint a, bit 1 = endpoint b.
pub(super) struct ChannelRecord {
    pub(super) a: u32,
    pub(super) b: u32,
    /// Host address (= guest-physical in both endpoints).
    pub(super) base: u64,
    /// Endpoints that opened it (in their current incarnation).
    pub(super) opened: u8,
    /// Endpoints whose second stage maps it.
    pub(super) mapped: u8,
}

/// Channels by directory index.
pub(super) static CHANNELS: questv_kernel::sync::IrqSpinlock<Vec<ChannelRecord>> = questv_kernel::sync::IrqSpinlock::new(Vec::new());
pub(super) static SHARED_BASE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Map channel memory at `base` into sandbox `e`'s second stage (tables recorded as that sandbox's).
pub(super) fn map_channel(pool: &mut MonitorPool, e: u32, base: u64) -> Result<(), i64> {
    let roots = STAGE2_ROOTS.get().ok_or(hc::ENOMEM)?;
    let format = backend::arch().stage2_format();
    let mut tables = TABLES.lock();
    let used = tables.get_mut(e as usize).ok_or(hc::EINVAL)?;
    let mut spares = SPARES.lock();
    let reuse = spares.get_mut(e as usize).map(core::mem::take).unwrap_or_default();
    let mut st2 = Stage2::from_root(roots[e as usize], format);
    let bytes = questv_kernel::channel::endpoint::CHANNEL_BYTES;
    let mut t = SandboxTables { pool, reuse, used };
    let r = st2.map_range(&mut t, base, base, bytes, Perms::RW, MemType::WriteBack, false).map_err(|_| hc::ENOMEM);
    if let Some(s) = spares.get_mut(e as usize) {
        *s = core::mem::take(&mut t.reuse);
    }
    r
}

/// Channel between `me` and `peer`: allocated on first open from monitor memory and mapped, at its host
/// address, into exactly those two sandboxes' second-stage tables (adding mappings needs no invalidation).
/// After `me` was recovered its rebuilt second stage lacks the channel: re-opening maps it again.
/// Returns its address.
pub(super) fn channel_open(me: u32, peer: u32) -> Result<u64, i64> {
    let n = SANDBOXES.load(Ordering::SeqCst);
    if peer >= n || peer == me {
        return Err(hc::EINVAL);
    }
    let key = (me.min(peer), me.max(peer));
    let mut chans = CHANNELS.lock();
    let my_bit = if me == key.0 { 1 } else { 2 };
    if let Some(c) = chans.iter_mut().find(|c| (c.a, c.b) == key) {
        if c.mapped & my_bit == 0 {
            let mut pool = POOL.lock();
            map_channel(pool.as_mut().ok_or(hc::ENOMEM)?, me, c.base)?;
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
    let pages = questv_kernel::channel::endpoint::CHANNEL_BYTES / PAGE_SIZE;
    let base = pool.pages(pages).map_err(|_| hc::ENOMEM)?;
    for e in [key.0, key.1] {
        map_channel(pool, e, base)?;
    }
    // Publish in the info page's channel directory.
    let shared = SHARED_BASE.load(Ordering::SeqCst);
    let i = chans.len() as u64;
    // SAFETY: the info page is monitor-initialised shared memory; the directory slot is within it.
    unsafe {
        let entry = (shared + info::CHANNEL_DIR_OFFSET + info::CHANNEL_DIR_ENTRY * i) as *mut u32;
        core::ptr::write_volatile(entry, key.0);
        core::ptr::write_volatile(entry.add(1), key.1);
        core::ptr::write_volatile(entry.add(2) as *mut u64, base);
        (*((shared + info::CHANNEL_COUNT_OFFSET) as *const core::sync::atomic::AtomicU32)).store(i as u32 + 1, Ordering::Release);
    }
    chans.push(ChannelRecord { a: key.0, b: key.1, base, opened: my_bit, mapped: 3 });
    log::info!("channel {}<->{} at 0x{:x} ({} pages)", key.0, key.1, base, pages);
    Ok(base)
}

/// Does sandbox `a` have a channel with the sandbox on the core whose APIC id is `apic` (`both_open`: opened by
/// both ends)?
pub(super) fn has_channel_to_apic(a: u32, apic: u32, both_open: bool) -> bool {
    let n = SANDBOXES.load(Ordering::SeqCst);
    let Some(b) = (0..n).find(|&b| smp::apic_id(b) == apic) else { return false };
    let key = (a.min(b), a.max(b));
    // Only once both ends opened it: a sandbox cannot make itself a notifier of a peer that never agreed.
    CHANNELS.lock().iter().any(|c| (c.a, c.b) == key && (c.opened == 3 || !both_open))
}

/// Wipe every channel of `sandbox` and publish the resets (the peers' endpoints, and the sandbox's own if it
/// runs on, see the counter move and report the reset once). With `unmap` (a restart: the rebuilt second stage
/// lacks them) the sandbox also has to open them again. Returns how many there were. Lock order: CHANNELS first.
pub(super) fn reset_channels(chans: &mut [ChannelRecord], sandbox: u32, unmap: bool) -> u32 {
    let shared = SHARED_BASE.load(Ordering::SeqCst);
    let mut n = 0;
    for (i, c) in chans.iter_mut().enumerate().filter(|(_, c)| c.a == sandbox || c.b == sandbox) {
        if unmap {
            let bit = if c.a == sandbox { 1 } else { 2 };
            c.opened &= !bit;
            c.mapped &= !bit;
        }
        // SAFETY: channel memory is monitor memory of this channel; the peer may race with the wipe, which its
        // ring checks (sequence and checksum) turn into an error, never into a wrong message.
        unsafe {
            core::ptr::write_bytes(c.base as *mut u8, 0, questv_kernel::channel::endpoint::CHANNEL_BYTES as usize);
            let counter = &*((shared + info::CHANNEL_RESETS_OFFSET + 4 * i as u64) as *const AtomicU32);
            counter.fetch_add(1, Ordering::Release);
        }
        n += 1;
    }
    n
}
