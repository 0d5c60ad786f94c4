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

/// The slot checksum: FNV-1a's multiply-xor over the message's 8-byte words (little-endian; a last partial word
/// is zero-padded and the length folded in), streamed so that a message copied page by page hashes the same
/// whatever the split. Words rather than bytes: a 4 KiB message costs 512 steps, not 4096.
#[derive(Clone, Copy, Debug)]
pub struct Hasher {
    h: u64,
    partial: u64,
    partial_len: u32,
    len: u64,
}

const FNV64_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
const FNV64_PRIME: u64 = 0x0000_0100_0000_01B3;

impl Default for Hasher {
    fn default() -> Self {
        Hasher { h: FNV64_OFFSET, partial: 0, partial_len: 0, len: 0 }
    }
}

impl Hasher {
    fn word(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(FNV64_PRIME);
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        // Finish a word left partial by the previous piece.
        while self.partial_len != 0 && !data.is_empty() {
            self.partial |= u64::from(data[0]) << (8 * self.partial_len);
            self.partial_len += 1;
            data = &data[1..];
            if self.partial_len == 8 {
                let w = self.partial;
                self.word(w);
                (self.partial, self.partial_len) = (0, 0);
            }
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            self.word(u64::from_le_bytes(w.try_into().unwrap_or_default()));
        }
        for (i, &b) in words.remainder().iter().enumerate() {
            self.partial |= u64::from(b) << (8 * i);
            self.partial_len += 1;
        }
    }

    pub fn finish(mut self) -> u32 {
        if self.partial_len != 0 {
            let w = self.partial;
            self.word(w);
        }
        let len = self.len;
        self.word(len);
        (self.h ^ (self.h >> 32)) as u32
    }
}

pub fn checksum(data: &[u8]) -> u32 {
    let mut h = Hasher::default();
    h.update(data);
    h.finish()
}

impl Ring {
    pub const SIZE: usize = core::mem::size_of::<Ring>();

    /// Send one message (producer side only).
    pub fn send(&self, data: &[u8]) -> Result<(), RingError> {
        match self.send_with(data.len(), |slot| {
            slot.copy_from_slice(data);
            Ok::<(), core::convert::Infallible>(())
        }) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(never)) => match never {},
            Err(e) => Err(e),
        }
    }

    /// Whether the next slot is free for the producer (so `send_with` will not report `Full`).
    pub fn has_space(&self) -> bool {
        let p = self.producer.0.load(Ordering::Relaxed);
        self.slots[(p % SLOTS as u64) as usize].header.status.load(Ordering::Acquire) == EMPTY
    }

    /// Whether the next slot holds a published message for the consumer.
    pub fn has_message(&self) -> bool {
        let c = self.consumer.0.load(Ordering::Relaxed);
        self.slots[(c % SLOTS as u64) as usize].header.status.load(Ordering::Acquire) == FULL
    }

    /// Send a message of `len` bytes that `fill` writes straight into the slot (a kernel copies from user
    /// memory with no intermediate buffer). If `fill` fails, the slot is released unpublished and its error
    /// returned: nothing is sent.
    pub fn send_with<E>(&self, len: usize, fill: impl FnOnce(&mut [u8]) -> Result<(), E>) -> Result<Result<(), E>, RingError> {
        if len > SLOT_PAYLOAD {
            return Err(RingError::TooBig);
        }
        let p = self.producer.0.load(Ordering::Relaxed);
        let slot = &self.slots[(p % SLOTS as u64) as usize];
        if slot.header.status.load(Ordering::Acquire) != EMPTY {
            return Err(RingError::Full);
        }
        slot.header.status.store(WRITING, Ordering::Relaxed);
        // SAFETY: the slot is EMPTY, so the consumer does not touch it until we publish FULL below.
        let payload = unsafe { &mut (&mut *slot.payload.get())[..len] };
        if let Err(e) = fill(payload) {
            slot.header.status.store(EMPTY, Ordering::Release);
            return Ok(Err(e));
        }
        slot.header.len.store(len as u32, Ordering::Relaxed);
        slot.header.seq.store(p, Ordering::Relaxed);
        slot.header.checksum.store(checksum(payload), Ordering::Relaxed);
        slot.header.status.store(FULL, Ordering::Release);
        self.producer.0.store(p + 1, Ordering::Release);
        Ok(Ok(()))
    }

    /// Receive one message into `buf` (consumer side only); returns its length. A message longer than `buf` is
    /// reported as `TooBig` and stays in the ring.
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, RingError> {
        match self.recv_with(|payload| {
            let dst = buf.get_mut(..payload.len()).ok_or(RingError::TooBig)?;
            dst.copy_from_slice(payload);
            Ok(checksum(dst))
        }) {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) | Err(e) => Err(e),
        }
    }

    /// Receive one message through `deliver`, which copies the payload out and returns the checksum (`Hasher`) of
    /// the bytes it delivered — computed on its own copy, since a broken producer may still be writing the shared
    /// slot. A checksum or sequence mismatch consumes the slot and reports `Torn` (the channel carries on). If
    /// `deliver` fails, the message stays in the ring for the next receive and its error is returned.
    pub fn recv_with<E>(&self, deliver: impl FnOnce(&[u8]) -> Result<u32, E>) -> Result<Result<usize, E>, RingError> {
        let c = self.consumer.0.load(Ordering::Relaxed);
        let slot = &self.slots[(c % SLOTS as u64) as usize];
        if slot.header.status.load(Ordering::Acquire) != FULL {
            return Err(RingError::Empty);
        }
        let len = slot.header.len.load(Ordering::Relaxed) as usize;
        let seq = slot.header.seq.load(Ordering::Relaxed);
        let sum = slot.header.checksum.load(Ordering::Relaxed);
        let result = if len > SLOT_PAYLOAD || seq != c {
            Err(RingError::Torn { expected_seq: c, found_seq: seq })
        } else {
            // SAFETY: the slot is FULL, so the producer does not touch it until we release it below.
            let payload = unsafe { &(&*slot.payload.get())[..len] };
            match deliver(payload) {
                Ok(delivered) if delivered == sum => Ok(Ok(len)),
                Ok(_) => Err(RingError::Torn { expected_seq: c, found_seq: seq }),
                Err(e) => return Ok(Err(e)),
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
        // A receive buffer too small for the message: reported, and the message waits for a bigger one.
        r.send(&[1; 100]).unwrap();
        assert_eq!(r.recv(&mut buf[..10]), Err(RingError::TooBig));
        r.send(&[2; 10]).unwrap();
        assert_eq!(r.recv(&mut buf), Ok(100));
        assert_eq!(r.recv(&mut buf), Ok(10));
    }

    #[test]
    fn failed_fill_sends_nothing_and_failed_delivery_keeps_the_message() {
        let r = ring();
        let mut buf = [0u8; SLOT_PAYLOAD];
        assert!(r.has_space() && !r.has_message());
        assert_eq!(r.send_with(5, |_| Err("fault")), Ok(Err("fault")));
        assert!(!r.has_message() && r.has_space());
        assert_eq!(r.send_with(3, |d| { d.copy_from_slice(b"abc"); Ok::<(), ()>(()) }), Ok(Ok(())));
        assert!(r.has_message());
        assert_eq!(r.recv_with(|_| Err::<u32, _>("bad buffer")), Ok(Err("bad buffer")));
        assert_eq!(r.recv(&mut buf), Ok(3));
        assert_eq!(&buf[..3], b"abc");
        // A delivery whose bytes differ from what was sent is a torn message, and consumed.
        r.send(b"xyz").unwrap();
        assert_eq!(r.recv_with(|p| Ok::<u32, ()>(checksum(p) ^ 1)), Err(RingError::Torn { expected_seq: 1, found_seq: 1 }));
        assert!(!r.has_message());
    }

    #[test]
    fn checksum_does_not_depend_on_how_the_message_is_split() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        let whole = checksum(&data);
        for cut1 in [0, 1, 3, 7, 8, 9, 64, 100, 299] {
            for cut2 in [cut1, cut1 + 1, cut1 + 13, 300] {
                let cut2 = cut2.min(300);
                let mut h = Hasher::default();
                h.update(&data[..cut1]);
                h.update(&data[cut1..cut2]);
                h.update(&data[cut2..]);
                assert_eq!(h.finish(), whole, "split at {cut1}/{cut2}");
            }
        }
        // Every single-byte change, a trailing zero and truncation change it.
        for i in 0..data.len() {
            let mut d = data.clone();
            d[i] ^= 0x10;
            assert_ne!(checksum(&d), whole, "byte {i}");
        }
        let mut longer = data.clone();
        longer.push(0);
        assert_ne!(checksum(&longer), whole);
        assert_ne!(checksum(&data[..299]), whole);
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
