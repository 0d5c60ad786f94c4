//! Physical frame allocator: one bit per 4 KiB frame (1 = free) over a caller-provided bitmap, so it works
//! before the heap exists. Supports single frames, contiguous runs (DMA, heap, VMX regions) and detects
//! double frees and frees of frames it never owned.
#![forbid(unsafe_code)]

use super::memmap::{Region, PAGE};

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum FrameError {
    Misaligned(u64),
    OutOfRange(u64),
    DoubleFree(u64),
}

pub struct FrameAllocator<'a> {
    bits: &'a mut [u64],
    /// Frames the bitmap can describe.
    capacity: u64,
    free: u64,
    total: u64,
    /// Word index where the next single-frame search starts.
    hint: usize,
}

impl<'a> FrameAllocator<'a> {
    /// An allocator owning nothing; `bits` limits the highest frame it can manage.
    pub fn new(bits: &'a mut [u64]) -> FrameAllocator<'a> {
        bits.fill(0);
        let capacity = bits.len() as u64 * 64;
        FrameAllocator { bits, capacity, free: 0, total: 0, hint: 0 }
    }

    /// Hand whole frames inside `r` to the allocator. Frames beyond the bitmap are ignored; returns the
    /// number of frames added.
    pub fn add_region(&mut self, r: Region) -> u64 {
        let first = r.start.div_ceil(PAGE);
        let last = (r.end / PAGE).min(self.capacity);
        let mut added = 0;
        for f in first..last {
            if !self.is_free(f) {
                self.set(f, true);
                added += 1;
            }
        }
        self.free += added;
        self.total += added;
        added
    }

    fn is_free(&self, frame: u64) -> bool {
        self.bits[(frame / 64) as usize] & (1 << (frame % 64)) != 0
    }

    fn set(&mut self, frame: u64, free: bool) {
        let w = &mut self.bits[(frame / 64) as usize];
        if free {
            *w |= 1 << (frame % 64);
        } else {
            *w &= !(1 << (frame % 64));
        }
    }

    pub fn free_frames(&self) -> u64 {
        self.free
    }

    pub fn total_frames(&self) -> u64 {
        self.total
    }

    /// Allocate one frame; returns its physical address.
    pub fn alloc(&mut self) -> Option<u64> {
        let words = self.bits.len();
        for k in 0..words {
            let i = (self.hint + k) % words;
            let w = self.bits[i];
            if w != 0 {
                let frame = i as u64 * 64 + u64::from(w.trailing_zeros());
                self.set(frame, false);
                self.free -= 1;
                self.hint = i;
                return Some(frame * PAGE);
            }
        }
        None
    }

    /// Allocate up to `out.len()` frames into `out` (one bitmap scan for the whole batch, for per-CPU frame
    /// caches); returns how many were allocated, fewer only when memory runs out.
    pub fn alloc_batch(&mut self, out: &mut [u64]) -> usize {
        let words = self.bits.len();
        let mut n = 0;
        for k in 0..words {
            if n == out.len() {
                break;
            }
            let i = (self.hint + k) % words;
            let mut w = self.bits[i];
            while w != 0 && n < out.len() {
                let bit = w.trailing_zeros();
                w &= w - 1;
                out[n] = (i as u64 * 64 + u64::from(bit)) * PAGE;
                n += 1;
            }
            self.bits[i] = w;
            self.hint = i;
        }
        self.free -= n as u64;
        n
    }

    /// Return every frame of `frames` (checked as by [`free`](Self::free)); stops at the first bad one.
    pub fn free_batch(&mut self, frames: &[u64]) -> Result<(), FrameError> {
        frames.iter().try_for_each(|&pa| self.free(pa))
    }

    /// Allocate `count` physically contiguous frames whose start is a multiple of `align` bytes (a power of two
    /// ≥ 4 KiB) and whose end is at or below `limit` (e.g. 4 GiB for 32-bit devices).
    pub fn alloc_contiguous(&mut self, count: u64, align: u64, limit: u64) -> Option<u64> {
        self.alloc_contiguous_from(count, align, 0, limit)
    }

    /// As [`alloc_contiguous`](Self::alloc_contiguous), starting at or above physical address `from`.
    pub fn alloc_contiguous_from(&mut self, count: u64, align: u64, from: u64, limit: u64) -> Option<u64> {
        if count == 0 || !align.is_power_of_two() || align < PAGE {
            return None;
        }
        let step = align / PAGE;
        let last = (limit / PAGE).min(self.capacity);
        let mut start = (from / PAGE).div_ceil(step) * step;
        while start + count <= last {
            match (start..start + count).rev().find(|&f| !self.is_free(f)) {
                None => {
                    for f in start..start + count {
                        self.set(f, false);
                    }
                    self.free -= count;
                    return Some(start * PAGE);
                }
                // Skip past the busy frame to the next aligned candidate.
                Some(busy) => start = (busy + 1).div_ceil(step) * step,
            }
        }
        None
    }

    /// Runs of free frames at least `min_frames` long, as byte regions (for carving sandbox slices).
    pub fn free_runs(&self, min_frames: u64) -> alloc::vec::Vec<Region> {
        let mut out = alloc::vec::Vec::new();
        let mut start = None;
        for f in 0..=self.capacity {
            let free = f < self.capacity && self.is_free(f);
            match (free, start) {
                (true, None) => start = Some(f),
                (false, Some(s)) => {
                    if f - s >= min_frames {
                        out.push(Region::new(s * PAGE, f * PAGE));
                    }
                    start = None;
                }
                _ => {}
            }
        }
        out
    }

    /// Take every frame of `r` (all must be free) out of the allocator.
    pub fn take_range(&mut self, r: Region) -> Result<(), FrameError> {
        let (first, last) = (r.start / PAGE, r.end.div_ceil(PAGE));
        if last > self.capacity {
            return Err(FrameError::OutOfRange(r.end));
        }
        if let Some(f) = (first..last).find(|&f| !self.is_free(f)) {
            return Err(FrameError::DoubleFree(f * PAGE));
        }
        for f in first..last {
            self.set(f, false);
        }
        self.free -= last - first;
        Ok(())
    }

    /// Return a frame. Refuses misaligned addresses, frames outside the bitmap and double frees.
    pub fn free(&mut self, pa: u64) -> Result<(), FrameError> {
        if pa % PAGE != 0 {
            return Err(FrameError::Misaligned(pa));
        }
        let f = pa / PAGE;
        if f >= self.capacity {
            return Err(FrameError::OutOfRange(pa));
        }
        if self.is_free(f) {
            return Err(FrameError::DoubleFree(pa));
        }
        self.set(f, true);
        self.free += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_roundtrip_and_counts() {
        let mut bits = vec![0u64; 16];
        let mut fa = FrameAllocator::new(&mut bits);
        assert_eq!(fa.add_region(Region::new(0x1000, 0x5000)), 4);
        assert_eq!(fa.free_frames(), 4);
        let a: Vec<u64> = (0..4).map(|_| fa.alloc().unwrap()).collect();
        assert_eq!(a, vec![0x1000, 0x2000, 0x3000, 0x4000]);
        assert_eq!(fa.alloc(), None);
        fa.free(0x3000).unwrap();
        assert_eq!(fa.free_frames(), 1);
        assert_eq!(fa.alloc(), Some(0x3000));
        assert_eq!(fa.total_frames(), 4);
    }

    #[test]
    fn batches_allocate_in_order_and_count() {
        let mut bits = vec![0u64; 4];
        let mut fa = FrameAllocator::new(&mut bits);
        // 70 frames: the batch crosses a bitmap word.
        fa.add_region(Region::new(60 * PAGE, 130 * PAGE));
        let mut out = [0u64; 32];
        assert_eq!(fa.alloc_batch(&mut out[..8]), 8);
        assert_eq!(out[..8].to_vec(), (60..68).map(|f| f * PAGE).collect::<Vec<_>>());
        assert_eq!(fa.free_frames(), 62);
        let mut rest = [0u64; 80];
        assert_eq!(fa.alloc_batch(&mut rest), 62, "a short batch when memory runs out");
        assert_eq!(fa.free_frames(), 0);
        assert_eq!(fa.alloc(), None);
        assert_eq!(fa.alloc_batch(&mut out), 0);
        fa.free_batch(&rest[..62]).unwrap();
        fa.free_batch(&out[..8]).unwrap();
        assert_eq!(fa.free_frames(), 70);
        assert_eq!(fa.free_batch(&[61 * PAGE]), Err(FrameError::DoubleFree(61 * PAGE)));
        // A batch with a bad frame frees the good ones before it and reports the bad one.
        let a = fa.alloc().unwrap();
        assert_eq!(fa.free_batch(&[a, 0x123]), Err(FrameError::Misaligned(0x123)));
        assert_eq!(fa.free_frames(), 70);
    }

    #[test]
    fn refuses_bad_frees() {
        let mut bits = vec![0u64; 1];
        let mut fa = FrameAllocator::new(&mut bits);
        fa.add_region(Region::new(0, 0x10000));
        assert_eq!(fa.free(0x1234), Err(FrameError::Misaligned(0x1234)));
        assert_eq!(fa.free(0x2000), Err(FrameError::DoubleFree(0x2000)));
        assert_eq!(fa.free(64 * 0x1000), Err(FrameError::OutOfRange(64 * 0x1000)));
        assert_eq!(fa.free_frames(), 16);
    }

    #[test]
    fn partial_pages_and_regions_beyond_bitmap() {
        let mut bits = vec![0u64; 1]; // 64 frames = 256 KiB
        let mut fa = FrameAllocator::new(&mut bits);
        // 0x800..0x2800 contains exactly one whole frame (0x1000..0x2000).
        assert_eq!(fa.add_region(Region::new(0x800, 0x2800)), 1);
        assert_eq!(fa.add_region(Region::new(0x3E000, 0x100000)), 2);
        // Adding the same range again adds nothing.
        assert_eq!(fa.add_region(Region::new(0x3E000, 0x40000)), 0);
        assert_eq!(fa.free_frames(), 3);
    }

    #[test]
    fn free_runs_and_taking_ranges() {
        let mut bits = vec![0u64; 4];
        let mut fa = FrameAllocator::new(&mut bits);
        fa.add_region(Region::new(0x10000, 0x40000));
        fa.add_region(Region::new(0x80000, 0x81000));
        assert_eq!(fa.free_runs(2), vec![Region::new(0x10000, 0x40000)]);
        assert_eq!(fa.free_runs(1).len(), 2);
        fa.take_range(Region::new(0x20000, 0x30000)).unwrap();
        assert_eq!(fa.free_frames(), 0x30 - 0x10 + 1);
        assert_eq!(fa.free_runs(1), vec![Region::new(0x10000, 0x20000), Region::new(0x30000, 0x40000), Region::new(0x80000, 0x81000)]);
        assert_eq!(fa.take_range(Region::new(0x1F000, 0x21000)), Err(FrameError::DoubleFree(0x20000)));
        assert_eq!(fa.free_frames(), 0x21, "a refused take changes nothing");
    }

    #[test]
    fn contiguous_aligned_and_limited() {
        let mut bits = vec![0u64; 8];
        let mut fa = FrameAllocator::new(&mut bits);
        fa.add_region(Region::new(0x1000, 0x80000));
        // Break the run at frame 0x10.
        let _ = fa.alloc_contiguous(1, PAGE, u64::MAX).unwrap();
        assert_eq!(fa.alloc_contiguous(16, 0x10000, u64::MAX), Some(0x10000));
        assert_eq!(fa.alloc_contiguous(16, 0x10000, u64::MAX), Some(0x20000));
        assert_eq!(fa.alloc_contiguous(16, 0x10000, 0x30000), None);
        assert_eq!(fa.alloc_contiguous(0, PAGE, u64::MAX), None);
        assert_eq!(fa.alloc_contiguous_from(4, PAGE, 0x40000, u64::MAX), Some(0x40000));
        assert_eq!(fa.alloc_contiguous_from(4, 0x10000, 0x40001, u64::MAX), Some(0x50000));
        assert_eq!(fa.alloc_contiguous(1, 3000, u64::MAX), None);
        let before = fa.free_frames();
        assert_eq!(fa.alloc_contiguous(1000, PAGE, u64::MAX), None);
        assert_eq!(fa.free_frames(), before);
    }
}
