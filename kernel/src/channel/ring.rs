//! The mailbox protocol of a channel direction: a single-producer, single-consumer ring of fixed slots in
//! shared memory. Each slot starts with a cache-line header (status, length, sequence number, checksum) followed
//! by up to 4 KiB of payload. Pure logic, host-tested (including two threads hammering one ring).
//!
//! Protocol: the producer claims slot `p % SLOTS` only if its status is EMPTY, marks it WRITING, copies the
//! payload, fills length/sequence/checksum and publishes it with status FULL (release). The consumer takes slot
//! `c % SLOTS` only when FULL (acquire), checks the sequence number and checksum — a torn or stale write is
//! reported, and the slot is still consumed so the channel recovers — copies, and releases it as EMPTY. A
//! producer that dies mid-write leaves WRITING behind: the consumer sees nothing (and times out), never garbage.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub const SLOT_PAYLOAD: usize = 4096;
pub const SLOTS: usize = 8;

pub const EMPTY: u32 = 0;
pub const WRITING: u32 = 1;
pub const FULL: u32 = 2;

#[repr(C, align(64))]
pub struct SlotHeader {
    pub status: AtomicU32,
    pub len: AtomicU32,
    pub seq: AtomicU64,
    pub checksum: AtomicU32,
}

#[repr(C, align(64))]
pub struct Slot {
    pub header: SlotHeader,
    payload: UnsafeCell<[u8; SLOT_PAYLOAD]>,
}

#[repr(C, align(64))]
pub struct Position(pub AtomicU64);

/// One direction of a channel, laid out in shared memory (all-zero bytes are a valid empty ring).
#[repr(C)]
pub struct Ring {
    producer: Position,
    consumer: Position,
    slots: [Slot; SLOTS],
}

// SAFETY: payload bytes are only touched by the side that owns the slot according to its status word (the
// producer between EMPTY and FULL, the consumer between FULL and EMPTY), with acquire/release ordering on the
// status transitions, so no byte is accessed concurrently.
unsafe impl Sync for Ring {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    Full,
    Empty,
    TooBig,
    /// The slot held a message with the wrong sequence number or checksum (torn or stale write); it was dropped.
    Torn { expected_seq: u64, found_seq: u64 },
}

/// FNV-1a over the payload.
pub fn checksum(data: &[u8]) -> u32 {
    data.iter().fold(0x811C_9DC5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

impl Ring {
    pub const SIZE: usize = core::mem::size_of::<Ring>();

    /// Send one message (producer side only).
    pub fn send(&self, data: &[u8]) -> Result<(), RingError> {
        if data.len() > SLOT_PAYLOAD {
            return Err(RingError::TooBig);
        }
        let p = self.producer.0.load(Ordering::Relaxed);
        let slot = &self.slots[(p % SLOTS as u64) as usize];
        if slot.header.status.load(Ordering::Acquire) != EMPTY {
            return Err(RingError::Full);
        }
        slot.header.status.store(WRITING, Ordering::Relaxed);
        // SAFETY: the slot is EMPTY, so the consumer does not touch it until we publish FULL below.
        unsafe { (&mut *slot.payload.get())[..data.len()].copy_from_slice(data) };
        slot.header.len.store(data.len() as u32, Ordering::Relaxed);
        slot.header.seq.store(p, Ordering::Relaxed);
        slot.header.checksum.store(checksum(data), Ordering::Relaxed);
        slot.header.status.store(FULL, Ordering::Release);
        self.producer.0.store(p + 1, Ordering::Release);
        Ok(())
    }

    /// Receive one message into `buf` (consumer side only); returns its length.
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, RingError> {
        let c = self.consumer.0.load(Ordering::Relaxed);
        let slot = &self.slots[(c % SLOTS as u64) as usize];
        if slot.header.status.load(Ordering::Acquire) != FULL {
            return Err(RingError::Empty);
        }
        let len = slot.header.len.load(Ordering::Relaxed) as usize;
        let seq = slot.header.seq.load(Ordering::Relaxed);
        let sum = slot.header.checksum.load(Ordering::Relaxed);
        let result = if len > SLOT_PAYLOAD || len > buf.len() || seq != c {
            Err(RingError::Torn { expected_seq: c, found_seq: seq })
        } else {
            // SAFETY: the slot is FULL, so the producer does not touch it until we release it below.
            let payload = unsafe { &(&*slot.payload.get())[..len] };
            buf[..len].copy_from_slice(payload);
            if checksum(&buf[..len]) == sum {
                Ok(len)
            } else {
                Err(RingError::Torn { expected_seq: c, found_seq: seq })
            }
        };
        slot.header.status.store(EMPTY, Ordering::Release);
        self.consumer.0.store(c + 1, Ordering::Release);
        result
    }

    /// Messages sent and not yet received.
    pub fn pending(&self) -> u64 {
        self.producer.0.load(Ordering::Acquire) - self.consumer.0.load(Ordering::Acquire)
    }

    #[cfg(test)]
    fn slot(&self, i: usize) -> &Slot {
        &self.slots[i]
    }

    #[cfg(test)]
    fn corrupt_payload(&self, i: usize) {
        // SAFETY (test only): no concurrent access in the single-threaded tests that call this.
        unsafe { (&mut *self.slots[i].payload.get())[0] ^= 0xFF };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ring() -> Box<Ring> {
        // All-zero memory is an empty ring, as fresh shared pages are.
        let layout = std::alloc::Layout::new::<Ring>();
        // SAFETY (test): zeroed allocation of the right layout; all fields are valid when zero.
        unsafe { Box::from_raw(std::alloc::alloc_zeroed(layout) as *mut Ring) }
    }

    #[test]
    fn layout_is_cache_line_sized() {
        assert_eq!(core::mem::size_of::<SlotHeader>(), 64);
        assert_eq!(core::mem::size_of::<Slot>(), 64 + SLOT_PAYLOAD);
        assert_eq!(Ring::SIZE, 128 + SLOTS * (64 + SLOT_PAYLOAD));
    }

    #[test]
    fn empty_full_and_wrap_around() {
        let r = ring();
        let mut buf = [0u8; SLOT_PAYLOAD];
        assert_eq!(r.recv(&mut buf), Err(RingError::Empty));
        for round in 0..5u64 {
            for i in 0..SLOTS as u64 {
                r.send(&(round * 100 + i).to_le_bytes()).unwrap();
            }
            assert_eq!(r.send(b"x"), Err(RingError::Full));
            assert_eq!(r.pending(), SLOTS as u64);
            for i in 0..SLOTS as u64 {
                assert_eq!(r.recv(&mut buf), Ok(8));
                assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), round * 100 + i);
            }
            assert_eq!(r.recv(&mut buf), Err(RingError::Empty));
        }
    }

    #[test]
    fn sizes_up_to_4k() {
        let r = ring();
        let mut buf = [0u8; SLOT_PAYLOAD];
        let big = vec![0xA5u8; SLOT_PAYLOAD];
        r.send(&big).unwrap();
        r.send(&[]).unwrap();
        assert_eq!(r.send(&vec![0u8; SLOT_PAYLOAD + 1]), Err(RingError::TooBig));
        assert_eq!(r.recv(&mut buf), Ok(SLOT_PAYLOAD));
        assert!(buf.iter().all(|&b| b == 0xA5));
        assert_eq!(r.recv(&mut buf), Ok(0));
        // A receive buffer too small for the message: reported, and the slot is not left stuck.
        r.send(&[1; 100]).unwrap();
        assert!(matches!(r.recv(&mut buf[..10]), Err(RingError::Torn { .. })));
        r.send(&[2; 10]).unwrap();
        assert_eq!(r.recv(&mut buf), Ok(10));
    }

    #[test]
    fn torn_and_half_written_messages() {
        let r = ring();
        let mut buf = [0u8; SLOT_PAYLOAD];
        r.send(b"hello").unwrap();
        r.corrupt_payload(0);
        assert_eq!(r.recv(&mut buf), Err(RingError::Torn { expected_seq: 0, found_seq: 0 }));
        // The channel carries on after a torn message.
        r.send(b"again").unwrap();
        assert_eq!(r.recv(&mut buf), Ok(5));
        // A stale sequence number (e.g. a replayed slot) is caught too.
        r.send(b"x").unwrap();
        r.slot(2).header.seq.store(99, Ordering::Relaxed);
        assert_eq!(r.recv(&mut buf), Err(RingError::Torn { expected_seq: 2, found_seq: 99 }));
        // A writer that died half-way (status WRITING) exposes nothing.
        r.slot(3).header.status.store(WRITING, Ordering::Relaxed);
        assert_eq!(r.recv(&mut buf), Err(RingError::Empty));
    }

    #[test]
    fn two_threads_hammering() {
        const N: u64 = 200_000;
        let r: Arc<Box<Ring>> = Arc::new(ring());
        let tx = Arc::clone(&r);
        let producer = std::thread::spawn(move || {
            let mut msg = [0u8; 64];
            for i in 0..N {
                let len = 8 + (i % 57) as usize;
                msg[..8].copy_from_slice(&i.to_le_bytes());
                for (k, b) in msg[8..len].iter_mut().enumerate() {
                    *b = (i as u8).wrapping_add(k as u8);
                }
                while tx.send(&msg[..len]) == Err(RingError::Full) {
                    std::hint::spin_loop();
                }
            }
        });
        let mut buf = [0u8; SLOT_PAYLOAD];
        let mut next = 0u64;
        while next < N {
            match r.recv(&mut buf) {
                Ok(len) => {
                    assert_eq!(len, 8 + (next % 57) as usize);
                    assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), next, "lost or duplicated");
                    for (k, &b) in buf[8..len].iter().enumerate() {
                        assert_eq!(b, (next as u8).wrapping_add(k as u8), "corrupted");
                    }
                    next += 1;
                }
                Err(RingError::Empty) => std::hint::spin_loop(),
                Err(e) => panic!("{e:?} at {next}"),
            }
        }
        producer.join().unwrap();
        assert_eq!(r.recv(&mut buf), Err(RingError::Empty));
    }
}
