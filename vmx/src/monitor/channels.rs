//! Channels (paper §3.3): pairwise shared pages the monitor allocates once both ends opened them and maps into
//! exactly those two sandboxes' second stages; wiped and marked reset when one end is recovered, unmapped from
//! an end that closes or restarts, freed when neither maps them. Who may do what is `crate::channel_table`'s;
//! this is the mechanics, and the notification check (at most one pending per destination).

use super::infopage;
use super::layout::host_view;
use super::state::{sandboxes, state};
use super::tables::{map_channel, unmap_channel, POOL};
use crate::channel_table::{self, ChannelTable, OpenStep, Release};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use questv_abi::hypercall::{self as hc, info};
use questv_arch::paging::PAGE_SIZE;
use questv_arch::percpu::MAX_CPUS;
use questv_kernel::channel::endpoint::CHANNEL_BYTES;
use questv_kernel::smp;
use questv_kernel::sync::IrqSpinlock;

/// The channel table (index = info page directory slot). Lock order: CHANNELS first (see `tables`).
pub(super) static CHANNELS: IrqSpinlock<ChannelTable> =
    IrqSpinlock::new(ChannelTable::new(info::MAX_CHANNELS as usize, channel_table::DEFAULT_QUOTA));
/// Freed channel memory (each block CHANNEL_BYTES), handed out again before the monitor pool's. Taken after
/// CHANNELS.
static FREE_MEMORY: IrqSpinlock<Vec<u64>> = IrqSpinlock::new(Vec::new());
/// Per destination sandbox: channel notifications the monitor delivered to it (this incarnation).
static NOTIFIED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Per sender: notifications dropped because the destination had not taken the previous one.
static COALESCED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// CHANNEL_OPEN from `me`: the channel's address once both ends asked (EAGAIN before); the second end's call
/// allocates the memory and maps it into both (adding mappings needs no invalidation). After a restart or a
/// close the caller's second stage lacks it: opening again maps it there.
pub(super) fn channel_open(me: u32, peer: u32) -> Result<u64, i64> {
    if peer >= sandboxes() || peer == me {
        return Err(hc::EINVAL);
    }
    let mut chans = CHANNELS.lock();
    match chans.open(me, peer)? {
        OpenStep::Pending => Err(hc::EAGAIN),
        OpenStep::Ready { base } => Ok(base),
        OpenStep::Map { index, base } => {
            let mut pool = POOL.lock();
            map_channel(pool.as_mut().ok_or(hc::ENOMEM)?, me, base, CHANNEL_BYTES)?;
            chans.mapped(index, me);
            Ok(base)
        }
        OpenStep::Allocate { index } => {
            let base = allocate()?;
            let mut pool = POOL.lock();
            let pool = pool.as_mut().ok_or(hc::ENOMEM)?;
            for e in [me, peer] {
                if let Err(err) = map_channel(pool, e, base, CHANNEL_BYTES) {
                    // Mapped into neither or only `me` (the first): undo that one and keep the memory.
                    if e != me {
                        unmap_channel(pool, me, base, CHANNEL_BYTES);
                    }
                    FREE_MEMORY.lock().push(base);
                    return Err(err);
                }
            }
            chans.allocated(index, base);
            infopage::publish_channel(index as u64, me.min(peer), me.max(peer), base);
            log::info!("channel {}<->{} at 0x{:x} ({} pages)", me.min(peer), me.max(peer), base, CHANNEL_BYTES / PAGE_SIZE);
            Ok(base)
        }
    }
}

/// Zeroed channel memory: freed blocks first, then the monitor pool.
fn allocate() -> Result<u64, i64> {
    if let Some(base) = FREE_MEMORY.lock().pop() {
        return Ok(base); // wiped when it was freed
    }
    let mut pool = POOL.lock();
    pool.as_mut().ok_or(hc::ENOMEM)?.pages(CHANNEL_BYTES / PAGE_SIZE).map_err(|_| hc::ENOMEM)
}

/// Channel memory a core may still reach through a stale translation (a core that did not flush in time):
/// never freed for reuse.
static QUARANTINE: spin::Mutex<Vec<u64>> = spin::Mutex::new(Vec::new());

/// CHANNEL_CLOSE from `me`: the peer may no longer notify it; the memory leaves `me`'s second stage (this
/// core's: its cached translations are dropped before `me` runs again) and is freed if the peer closed too.
pub(super) fn channel_close(me: u32, peer: u32) -> Result<u64, i64> {
    if peer >= sandboxes() {
        return Err(hc::EINVAL);
    }
    let mut chans = CHANNELS.lock();
    let r = chans.close(me, peer)?;
    if let Some(base) = r.unmap {
        let mut pool = POOL.lock();
        unmap_channel(pool.as_mut().ok_or(hc::ENOMEM)?, me, base, CHANNEL_BYTES);
        crate::backend::flush_stage2();
        if !super::cores::flush_others(me, questv_arch::percpu::cpu_index()) {
            // A core of `me` may still reach the memory: it is never handed to anyone again.
            QUARANTINE.lock().push(base);
        }
    }
    if let Some(base) = r.free {
        if QUARANTINE.lock().contains(&base) {
            infopage::publish_channel(r.index as u64, 0, 0, 0);
            questv_kernel::result!("channel_quarantined", "sandbox={} base=0x{:x}", me, base);
        } else {
            // SAFETY: channel memory is monitor memory of this channel, mapped in no second stage any more.
            unsafe { core::ptr::write_bytes(questv_arch::paging::phys_to_virt(base) as *mut u8, 0, CHANNEL_BYTES as usize) };
            free_memory(&chans, r, base);
        }
    }
    Ok(0)
}

/// A released channel's (wiped) memory that no end maps goes back to the free blocks and leaves the directory.
fn free_memory(chans: &ChannelTable, r: Release, base: u64) {
    let (a, b) = chans.get(r.index).map(|c| (c.a, c.b)).unwrap_or((0, 0));
    infopage::publish_channel(r.index as u64, a, b, 0);
    FREE_MEMORY.lock().push(base);
}

/// Run `f` with the channel table locked: a notification checked and sent inside cannot cross a close (which
/// takes the same lock), so none reaches an end after its close returned.
pub(super) fn with_channels<R>(f: impl FnOnce(&ChannelTable) -> R) -> R {
    f(&CHANNELS.lock())
}

/// May `from` notify the sandbox on the core with APIC id `apic` over a channel (`both_open`: opened by both
/// ends; else: requested by either)? `chans` is the locked table ([`with_channels`]).
pub(super) fn has_channel_to_apic(chans: &ChannelTable, from: u32, apic: u32, both_open: bool) -> bool {
    let Some(to) = (0..sandboxes()).find(|&b| smp::apic_id(b) == apic) else { return false };
    if both_open {
        chans.may_notify(from, to)
    } else {
        chans.requested(from, to)
    }
}

/// A checked channel notification from `from` to the core with APIC id `apic`: deliver it only if the
/// destination took every earlier one (`channel_table::notify_now`, reading its own acknowledgement count);
/// otherwise drop it and count it. Returns whether it is to be sent.
pub(super) fn notification_due(from: u32, apic: u32) -> bool {
    let Some(to) = (0..sandboxes()).find(|&b| smp::apic_id(b) == apic) else { return false };
    let ack_host = host_view(state(to).host_base, hc::NOTIFY_ACK_GPA);
    // SAFETY: NOTIFY_ACK_GPA lies in the destination's reserved heartbeat page, inside its slice (identity
    // mapped in the monitor); an aligned u64 its kernel updates atomically, read atomically here.
    let acknowledged = unsafe { (*(ack_host as *const AtomicU64)).load(Ordering::Acquire) };
    let sent = &NOTIFIED[to as usize];
    loop {
        let s = sent.load(Ordering::Acquire);
        if !channel_table::notify_now(s, acknowledged) {
            COALESCED[from as usize].fetch_add(1, Ordering::Relaxed);
            return false;
        }
        // Two senders racing for the same destination: one of them sends.
        if sent.compare_exchange(s, s + 1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return true;
        }
    }
}

/// Notifications `sandbox` sent that were dropped as coalesced (reported with its exits).
pub(super) fn coalesced(sandbox: u32) -> u64 {
    COALESCED[sandbox as usize].load(Ordering::Relaxed)
}

/// Wipe every channel of `sandbox` and publish the resets (the peers' endpoints, and the sandbox's own if it
/// runs on, see the counter move and report the reset once). With `restart` (its rebuilt second stage lacks
/// the channels) it also loses its end of each — it has to open them again — and what neither end maps any
/// more is freed; its notification count starts again (its new kernel counts from 0). Returns how many
/// channels there were. Lock order: CHANNELS first.
pub(super) fn reset_channels(chans: &mut ChannelTable, sandbox: u32, restart: bool) -> u32 {
    let mut n = 0;
    for (i, c) in chans.channels().iter().enumerate().filter(|(_, c)| c.a == sandbox || c.b == sandbox) {
        if let Some(base) = c.base {
            // SAFETY: channel memory is monitor memory of this channel; the peer may race with the wipe, which
            // its ring checks (sequence and checksum) turn into an error, never into a wrong message.
            unsafe { core::ptr::write_bytes(questv_arch::paging::phys_to_virt(base) as *mut u8, 0, CHANNEL_BYTES as usize) };
            infopage::count_channel_reset(i);
            n += 1;
        }
    }
    if restart {
        NOTIFIED[sandbox as usize].store(0, Ordering::Release);
        for r in chans.restart(sandbox) {
            if let Some(base) = r.free {
                free_memory(chans, r, base); // wiped above
            }
        }
    }
    n
}
