//! Kernel side of channels: open/send/receive/close over the mailbox rings, the same API in both builds.
//!
//! - SMP build: endpoints are cores; the kernel allocates a channel's pages itself and both endpoints' processes
//!   reach them through this kernel.
//! - VT build: endpoints are sandboxes; `open` asks the monitor (hypercall) for the channel, which allocates it
//!   in monitor memory once both ends asked, and maps it into exactly the two endpoints' second stages (at its
//!   host address); the first to ask waits (without exits) until the info page lists the channel. `close`
//!   tells the monitor, which stops the peer's notifications and frees the memory once neither end maps it.
//!
//! Notification is polling, or an IPI to the peer core's local APIC (VT: the ICR write exits and the monitor
//! checks it, one exit per notified message; polling takes none). A
//! receive always has a timeout, so a dead or broken peer cannot hang the other side.

use super::ring::{Ring, RingError, SLOT_PAYLOAD};
use crate::sync::IrqSpinlock;
use crate::{sched, smp};
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use questv_arch::{cpu, lapic, percpu};
use questv_libc_shim::errno::*;

/// Vector of channel notification IPIs (handled by a plain EOI: it only wakes a halted receiver). In the VT
/// build it is the only vector the monitor lets a sandbox send to another core.
pub const VECTOR_CHANNEL: u8 = questv_abi::hypercall::CHANNEL_NOTIFY_VECTOR;
/// Bytes of one channel: two rings, one per direction.
pub const CHANNEL_BYTES: u64 = (2 * Ring::SIZE as u64).div_ceil(4096) * 4096;
pub const ETIMEDOUT: i64 = 110;
/// The peer sandbox was recovered and the channel wiped: reported once per handle, then it works again.
pub const ECONNRESET: i64 = 104;
pub const EIO: i64 = 5;
const SEND_TIMEOUT_NS: u64 = 2_000_000_000;
/// How long `open` waits for the peer to open its end (VT).
const OPEN_TIMEOUT_NS: u64 = 30_000_000_000;

#[derive(Clone, Copy)]
struct Channel {
    /// Process that opened it (its handles are closed when it exits).
    owner: u32,
    me: u32,
    peer: u32,
    base: u64,
    peer_apic: u32,
    open: bool,
    /// VT: the monitor's reset counter for this channel and the value this handle last saw.
    resets: Option<&'static core::sync::atomic::AtomicU32>,
    resets_seen: u32,
}

static CHANNELS: IrqSpinlock<Vec<Channel>> = IrqSpinlock::new(Vec::new());
/// SMP build: channel memory by endpoint pair (a, b, address, open handles), shared by both endpoints (they run
/// on this one kernel) and freed when the last handle closes.
static SMP_MEMORY: IrqSpinlock<Vec<(u32, u32, u64, u32)>> = IrqSpinlock::new(Vec::new());

/// This kernel's endpoint: its sandbox (VT) or the calling core (SMP).
pub fn my_endpoint() -> u32 {
    crate::sandbox::id().unwrap_or_else(percpu::cpu_index)
}

/// The ring at physical address `addr` of channel memory.
fn ring_at(addr: u64) -> &'static Ring {
    // SAFETY: channel memory is page aligned, zero-initialised (a valid empty ring), RAM (mapped at KERNEL_BASE +
    // its address) and stays allocated while the channel exists; Ring is Sync and only uses atomics and
    // slot-owned payload bytes.
    unsafe { &*(questv_arch::paging::phys_to_virt(addr) as *const Ring) }
}

/// (transmit, receive) rings: ring 0 carries the lower endpoint's messages, ring 1 the higher one's.
fn rings(c: &Channel) -> (&'static Ring, &'static Ring) {
    let (r0, r1) = (ring_at(c.base), ring_at(c.base + Ring::SIZE as u64));
    if c.me < c.peer {
        (r0, r1)
    } else {
        (r1, r0)
    }
}

fn smp_channel(me: u32, peer: u32) -> Result<(u64, u32), i64> {
    if peer >= smp::cpu_count() || !smp::is_online(peer) {
        return Err(-EINVAL);
    }
    let key = (me.min(peer), me.max(peer));
    let mut mem = SMP_MEMORY.lock();
    if let Some(e) = mem.iter_mut().find(|e| (e.0, e.1) == key) {
        e.3 += 1;
        return Ok((e.2, smp::apic_id(peer)));
    }
    let base = crate::mm::kmem::alloc_contiguous(CHANNEL_BYTES / 4096, 4096, u64::MAX).ok_or(-ENOMEM)?;
    // SAFETY: freshly allocated frames, mapped, owned by this channel.
    unsafe { core::ptr::write_bytes(questv_arch::paging::phys_to_virt(base) as *mut u8, 0, CHANNEL_BYTES as usize) };
    mem.push((key.0, key.1, base, 1));
    Ok((base, smp::apic_id(peer)))
}

/// VT: the channel's address from the monitor; until the peer opened its end too, wait (yielding, no exits)
/// for the info page to list it, then ask again. ETIMEDOUT if the peer never does.
fn sandbox_channel(me: u32, peer: u32) -> Result<u64, i64> {
    let deadline = cpu::rdtsc().saturating_add(crate::time::ns_to_cycles(OPEN_TIMEOUT_NS));
    loop {
        match crate::sandbox::channel_open(peer) {
            Err(e) if e == -EAGAIN => {}
            r => return r,
        }
        while !crate::sandbox::channel_listed(me, peer) {
            if cpu::rdtsc() >= deadline {
                // Withdraw the request: a peer that opens later must not find this end waiting.
                let _ = crate::sandbox::channel_close(peer);
                return Err(-ETIMEDOUT);
            }
            sched::yield_now();
            cpu::pause();
        }
    }
}

/// Open (or join) the channel between this endpoint and `peer`; returns a handle.
pub fn open(peer: u32) -> Result<u32, i64> {
    let me = my_endpoint();
    if peer == me {
        return Err(-EINVAL);
    }
    if let Some(i) = CHANNELS.lock().iter().position(|c| c.open && c.me == me && c.peer == peer) {
        return Ok(i as u32);
    }
    let (base, peer_apic) = if crate::sandbox::id().is_some() {
        (sandbox_channel(me, peer)?, crate::sandbox::peer_apic(peer)?)
    } else {
        smp_channel(me, peer)?
    };
    let resets = crate::sandbox::channel_resets(base);
    let resets_seen = resets.map_or(0, |r| r.load(Ordering::Acquire));
    let mut chans = CHANNELS.lock();
    chans.push(Channel { owner: sched::current_pid(), me, peer, base, peer_apic, open: true, resets, resets_seen });
    Ok(chans.len() as u32 - 1)
}

fn get(h: u32) -> Result<Channel, i64> {
    let mut chans = CHANNELS.lock();
    let c = chans.get_mut(h as usize).filter(|c| c.open).ok_or(-EBADF)?;
    // The monitor wiped the channel (the peer was recovered): say so once; the empty rings work from here on.
    if let Some(r) = c.resets {
        let now = r.load(Ordering::Acquire);
        if now != c.resets_seen {
            c.resets_seen = now;
            return Err(-ECONNRESET);
        }
    }
    Ok(*c)
}

/// Send a `len`-byte message that `fill` writes straight into the ring slot (the system call copies from user
/// memory). Waits up to SEND_TIMEOUT_NS for a free slot without holding anything; a failing `fill` sends nothing.
pub fn send_with(h: u32, len: usize, notify: bool, fill: impl FnOnce(&mut [u8]) -> Result<(), i64>) -> Result<(), i64> {
    let c = get(h)?;
    if len > SLOT_PAYLOAD {
        return Err(-EINVAL);
    }
    let (tx, _) = rings(&c);
    if !tx.has_space() {
        let deadline = cpu::rdtsc() + crate::time::ns_to_cycles(SEND_TIMEOUT_NS);
        while !tx.has_space() {
            if cpu::rdtsc() >= deadline {
                return Err(-ETIMEDOUT);
            }
            // Interrupts are off: a TLB shootdown another core of this process waits for is done here.
            crate::smp::service_tlb_requests();
            cpu::pause();
        }
    }
    match tx.send_with(len, fill) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        // Only this kernel's endpoint produces on this ring: the slot checked free above is still free.
        Err(_) => return Err(-EIO),
    }
    if notify {
        lapic::send_ipi(c.peer_apic, VECTOR_CHANNEL);
    }
    Ok(())
}

pub fn send(h: u32, data: &[u8], notify: bool) -> Result<(), i64> {
    send_with(h, data.len(), notify, |slot| {
        slot.copy_from_slice(data);
        Ok(())
    })
}

/// Receive one message within `timeout_ns` through `deliver`, which copies it out and returns the checksum of
/// what it delivered (`ring::Hasher`); if it fails the message stays queued. With `wait_ipi` the core halts
/// between checks (woken by the sender's notification IPI or any interrupt) instead of spinning.
pub fn recv_with(h: u32, timeout_ns: u64, wait_ipi: bool, mut deliver: impl FnMut(&[u8]) -> Result<u32, i64>) -> Result<usize, i64> {
    let c = get(h)?;
    let (_, rx) = rings(&c);
    let mut deadline = None;
    let mut spins = 0u32;
    loop {
        if rx.has_message() {
            match rx.recv_with(&mut deliver) {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) => return Err(e),
                Err(RingError::Empty) => {}
                Err(_) => return Err(-EIO),
            }
        }
        // The deadline is computed on the first miss only: a message already waiting costs no clock work.
        let now = cpu::rdtsc();
        let deadline = *deadline.get_or_insert_with(|| now.saturating_add(crate::time::ns_to_cycles(timeout_ns)));
        if now >= deadline {
            return Err(-ETIMEDOUT);
        }
        if wait_ipi {
            // SAFETY: the IDT and LAPIC are set up; the notification (or the next tick) ends the halt. The
            // timer may switch threads here, which is fine: this thread's syscall frame is saved.
            unsafe { cpu::enable_interrupts_and_halt() };
            cpu::disable_interrupts();
        } else {
            // Interrupts are off: a TLB shootdown another core of this process waits for is done here.
            crate::smp::service_tlb_requests();
            cpu::pause();
            spins += 1;
            if spins % 4096 == 0 {
                // Let other threads on this core run while we poll a slow peer.
                sched::yield_now();
            }
        }
    }
}

/// Receive into `buf` (kernel callers); see `recv_with`.
pub fn recv(h: u32, buf: &mut [u8], timeout_ns: u64, wait_ipi: bool) -> Result<usize, i64> {
    recv_with(h, timeout_ns, wait_ipi, |payload| {
        let dst = buf.get_mut(..payload.len()).ok_or(-EINVAL)?;
        dst.copy_from_slice(payload);
        Ok(super::ring::checksum(dst))
    })
}

pub fn close(h: u32) -> Result<(), i64> {
    let c = {
        let mut chans = CHANNELS.lock();
        let c = chans.get_mut(h as usize).filter(|c| c.open).ok_or(-EBADF)?;
        c.open = false;
        *c
    };
    if crate::sandbox::id().is_some() {
        // VT: the monitor revokes the peer's notifications and unmaps (and, if the peer closed too, frees) it.
        return crate::sandbox::channel_close(c.peer);
    }
    {
        // SMP: the last handle frees the channel's pages.
        let key = (c.me.min(c.peer), c.me.max(c.peer));
        let mut mem = SMP_MEMORY.lock();
        if let Some(i) = mem.iter().position(|e| (e.0, e.1) == key) {
            mem[i].3 -= 1;
            if mem[i].3 == 0 {
                let (_, _, base, _) = mem.swap_remove(i);
                for p in 0..CHANNEL_BYTES / 4096 {
                    crate::mm::kmem::free_frame(base + p * 4096);
                }
            }
        }
    }
    Ok(())
}

/// Close every channel handle of an exiting process.
pub fn close_all_of(pid: u32) {
    let handles: Vec<u32> =
        CHANNELS.lock().iter().enumerate().filter(|(_, c)| c.open && c.owner == pid).map(|(i, _)| i as u32).collect();
    for h in handles {
        let _ = close(h);
    }
}
