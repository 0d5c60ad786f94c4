//! Memory partitioning for the VT build: from the memory the monitor can give away, carve one private slice
//! per sandbox and a shared region (channels, issue #5), or refuse with a clear reason.
//!
//! Default slice size: everything left after the shared region, split evenly, rounded down to 2 MiB, capped at
//! [`DEFAULT_SLICE_CAP`]. Slices are 2 MiB aligned so the EPT can use large pages. The shared region is placed
//! at the highest suitable address (the paper puts it in high memory).
#![forbid(unsafe_code)]

use alloc::vec::Vec;

pub const ALIGN: u64 = 2 << 20;
/// Smallest slice a sandbox kernel boots in (image, heap, page tables, a few processes).
pub const MIN_SLICE: u64 = 32 << 20;
pub const DEFAULT_SLICE_CAP: u64 = 256 << 20;
pub const MAX_SANDBOXES: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub sandbox: u32,
    pub host_base: u64,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub slices: Vec<Slice>,
    pub shared: Region,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanError {
    NoSandboxes,
    TooManySandboxes(u32),
    SliceTooSmall { slice: u64 },
    /// Not enough contiguous free memory for `sandboxes` slices of `slice` bytes plus the shared region.
    NotEnoughMemory { sandboxes: u32, slice: u64, shared: u64 },
}

impl core::fmt::Display for PlanError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PlanError::NoSandboxes => write!(f, "no sandboxes requested"),
            PlanError::TooManySandboxes(n) => write!(f, "{n} sandboxes requested; at most {MAX_SANDBOXES}"),
            PlanError::SliceTooSmall { slice } => {
                write!(f, "slice of {} MiB is below the {} MiB a sandbox kernel needs", slice >> 20, MIN_SLICE >> 20)
            }
            PlanError::NotEnoughMemory { sandboxes, slice, shared } => write!(
                f,
                "not enough free memory for {sandboxes} slices of {} MiB plus {} MiB shared; give the machine more \
                 memory or ask for smaller slices",
                slice >> 20,
                shared >> 20
            ),
        }
    }
}

fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

/// Take `size` bytes, `ALIGN`-aligned, from the highest (`top`) or lowest free region that fits.
fn take(free: &mut Vec<Region>, size: u64, top: bool) -> Option<u64> {
    let order: Vec<usize> = if top { (0..free.len()).rev().collect() } else { (0..free.len()).collect() };
    for i in order {
        let r = free[i];
        let base = if top {
            let b = r.end.checked_sub(size)? / ALIGN * ALIGN;
            if b < r.start {
                continue;
            }
            b
        } else {
            let b = align_up(r.start);
            if b.checked_add(size).is_none_or(|e| e > r.end) {
                continue;
            }
            b
        };
        // Split the region around the allocation.
        free.remove(i);
        if base + size < r.end {
            free.insert(i, Region { start: base + size, end: r.end });
        }
        if r.start < base {
            free.insert(i, Region { start: r.start, end: base });
        }
        return Some(base);
    }
    None
}

/// Plan `sandboxes` slices (of `slice` bytes, or the default) and a `shared`-byte region from `free`
/// (sorted, non-overlapping regions the monitor does not need).
pub fn plan(free: &[Region], sandboxes: u32, slice: Option<u64>, shared: u64) -> Result<Plan, PlanError> {
    plan_sizes(free, &alloc::vec![slice; sandboxes as usize], shared)
}

/// Plan one slice per entry of `sizes` — its size in bytes, or `None` for an even share of what the sized ones
/// leave (at most [`DEFAULT_SLICE_CAP`]) — and a `shared`-byte region from `free`.
pub fn plan_sizes(free: &[Region], sizes: &[Option<u64>], shared: u64) -> Result<Plan, PlanError> {
    let sandboxes = sizes.len() as u32;
    if sandboxes == 0 {
        return Err(PlanError::NoSandboxes);
    }
    if sandboxes > MAX_SANDBOXES {
        return Err(PlanError::TooManySandboxes(sandboxes));
    }
    let shared = align_up(shared.max(ALIGN));
    let fixed: u64 = sizes.iter().flatten().map(|&s| align_up(s)).sum();
    let unsized_count = sizes.iter().filter(|s| s.is_none()).count() as u64;
    if unsized_count == 0 {
        return place(free, sizes.iter().map(|s| align_up(s.unwrap_or(0))), shared);
    }
    // Even split of the rest, shrunk step by step until the slices actually fit the regions (fragments make the
    // even split an upper bound only).
    let usable: u64 = free.iter().map(|r| (r.end / ALIGN * ALIGN).saturating_sub(align_up(r.start))).sum();
    let mut share = (usable.saturating_sub(shared).saturating_sub(fixed) / unsized_count / ALIGN * ALIGN).min(DEFAULT_SLICE_CAP);
    loop {
        match place(free, sizes.iter().map(|s| s.map_or(share, align_up)), shared) {
            Err(PlanError::NotEnoughMemory { .. }) if share > MIN_SLICE => share -= ALIGN,
            r => return r,
        }
    }
}

fn place(free: &[Region], sizes: impl Iterator<Item = u64> + Clone, shared: u64) -> Result<Plan, PlanError> {
    let sandboxes = sizes.clone().count() as u32;
    let largest = sizes.clone().max().unwrap_or(0);
    if let Some(slice) = sizes.clone().find(|&s| s < MIN_SLICE) {
        return Err(PlanError::SliceTooSmall { slice });
    }
    let err = PlanError::NotEnoughMemory { sandboxes, slice: largest, shared };
    let mut pool: Vec<Region> = free.to_vec();
    let shared_base = take(&mut pool, shared, true).ok_or(err)?;
    let mut slices = Vec::new();
    for (i, slice) in sizes.enumerate() {
        let base = take(&mut pool, slice, false).ok_or(err)?;
        slices.push(Slice { sandbox: i as u32, host_base: base, size: slice });
    }
    Ok(Plan { slices, shared: Region { start: shared_base, end: shared_base + shared } })
}

/// Whether guest-physical [start, start + len) touches any of the half-open `ranges` (a sandbox's read-only
/// kernel pages: the monitor must not write there on the sandbox's behalf, e.g. in RESTORE, since the second
/// stage keeps them read-only for the sandbox itself).
pub fn overlaps_any(ranges: &[(u64, u64)], start: u64, len: u64) -> bool {
    let end = start.saturating_add(len);
    len != 0 && ranges.iter().any(|&(s, e)| start < e && s < end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_any_is_half_open() {
        let text = [(0x10_0000, 0x20_0000), (0x30_0000, 0x30_1000)];
        assert!(!overlaps_any(&text, 0x0F_F000, 0x1000), "ends where the range starts");
        assert!(overlaps_any(&text, 0x0F_F000, 0x1001));
        assert!(!overlaps_any(&text, 0x20_0000, 0x10_0000), "starts where it ends");
        assert!(overlaps_any(&text, 0x30_0FFF, 1) && overlaps_any(&text, 0, u64::MAX));
        assert!(!overlaps_any(&text, 0x15_0000, 0), "an empty write touches nothing");
        assert!(!overlaps_any(&[], 0x10_0000, 0x1000));
    }

    const MIB: u64 = 1 << 20;

    fn disjoint(p: &Plan) {
        let mut all: Vec<(u64, u64)> = p.slices.iter().map(|s| (s.host_base, s.host_base + s.size)).collect();
        all.push((p.shared.start, p.shared.end));
        all.sort_unstable();
        for w in all.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap: {:?}", w);
        }
        for s in &p.slices {
            assert_eq!(s.host_base % ALIGN, 0);
        }
    }

    #[test]
    fn default_plan_for_four_sandboxes() {
        // What a 512 MiB Bochs machine leaves after the monitor: 100 MiB .. 510 MiB.
        let free = [Region { start: 100 * MIB, end: 510 * MIB }];
        let p = plan(&free, 4, None, 4 * MIB).unwrap();
        assert_eq!(p.slices.len(), 4);
        // (410 - 4) / 4 = 101.5 → 100 MiB (2 MiB multiple).
        assert!(p.slices.iter().all(|s| s.size == 100 * MIB));
        assert_eq!(p.shared, Region { start: 506 * MIB, end: 510 * MIB });
        disjoint(&p);
    }

    #[test]
    fn explicit_slices_across_holes() {
        let free = [Region { start: 0x10_0000, end: 300 * MIB }, Region { start: 4096 * MIB, end: 4600 * MIB }];
        let p = plan(&free, 6, Some(100 * MIB), 2 * MIB).unwrap();
        disjoint(&p);
        assert!(p.shared.start >= 4096 * MIB, "shared region goes high");
        let low = p.slices.iter().filter(|s| s.host_base < 4096 * MIB).count();
        assert_eq!(low, 2, "two 100 MiB slices fit below 300 MiB (2 MiB aligned start)");
    }

    #[test]
    fn default_shrinks_to_fit_fragmented_memory() {
        // 30 MiB of fragments plus one 400 MiB region: the even split (~107 MiB) does not fit 4 times into the
        // big region with the shared region; the default shrinks until it does.
        let free = [Region { start: 2 * MIB, end: 32 * MIB }, Region { start: 100 * MIB, end: 500 * MIB }];
        let p = plan(&free, 4, None, 2 * MIB).unwrap();
        disjoint(&p);
        assert!(p.slices[0].size <= 98 * MIB && p.slices[0].size >= 96 * MIB, "{}", p.slices[0].size / MIB);
    }

    #[test]
    fn refuses_impossible_configurations() {
        let free = [Region { start: 100 * MIB, end: 510 * MIB }];
        assert_eq!(plan(&free, 0, None, 0), Err(PlanError::NoSandboxes));
        assert_eq!(plan(&free, 65, None, 0), Err(PlanError::TooManySandboxes(65)));
        assert_eq!(plan(&free, 4, Some(8 * MIB), 0), Err(PlanError::SliceTooSmall { slice: 8 * MIB }));
        assert_eq!(plan(&free, 20, None, 0), Err(PlanError::SliceTooSmall { slice: 20 * MIB }));
        assert!(matches!(plan(&[Region { start: 0, end: 40 * MIB }], 2, None, 0), Err(PlanError::SliceTooSmall { .. }) | Err(PlanError::NotEnoughMemory { .. })));
        let e = plan(&free, 4, Some(128 * MIB), 2 * MIB).unwrap_err();
        assert_eq!(e, PlanError::NotEnoughMemory { sandboxes: 4, slice: 128 * MIB, shared: 2 * MIB });
        assert!(e.to_string().contains("not enough free memory for 4 slices of 128 MiB"));
        // Fragmented memory: enough in total, but no region holds a slice.
        let frag: Vec<Region> = (0..10).map(|i| Region { start: i * 64 * MIB, end: i * 64 * MIB + 40 * MIB }).collect();
        assert!(matches!(plan(&frag, 2, Some(48 * MIB), 2 * MIB), Err(PlanError::NotEnoughMemory { .. })));
    }

    #[test]
    fn slices_of_their_own_sizes_and_an_even_share_of_the_rest() {
        let free = [Region { start: 0x100_0000, end: 0x4100_0000 }]; // 1 GiB
        let p = plan_sizes(&free, &[Some(64 << 20), None, Some(MIN_SLICE), None], 2 << 20).unwrap();
        let sizes: Vec<u64> = p.slices.iter().map(|s| s.size >> 20).collect();
        assert_eq!(sizes[0], 64);
        assert_eq!(sizes[2], 32);
        // The rest (1024 - 2 - 64 - 32 = 926 MiB) split evenly, in 2 MiB steps, at most the cap.
        assert_eq!(sizes[1], sizes[3]);
        assert!(sizes[1] <= 256 && sizes[1] >= 200, "{sizes:?}");
        for (i, a) in p.slices.iter().enumerate() {
            assert_eq!(a.sandbox, i as u32);
            for b in &p.slices[i + 1..] {
                assert!(a.host_base + a.size <= b.host_base || b.host_base + b.size <= a.host_base, "slices overlap");
            }
        }
        assert_eq!(plan_sizes(&free, &[Some(16 << 20)], 2 << 20), Err(PlanError::SliceTooSmall { slice: 16 << 20 }));
        assert!(matches!(plan_sizes(&free, &[Some(2048 << 20)], 2 << 20), Err(PlanError::NotEnoughMemory { .. })));
        // The old interface is the special case.
        assert_eq!(plan(&free, 2, Some(64 << 20), 2 << 20), plan_sizes(&free, &[Some(64 << 20), Some(64 << 20)], 2 << 20));
    }
}
