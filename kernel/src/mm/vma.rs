//! The mappings of a user address space as Linux's `mmap(2)`, `munmap(2)` and `mprotect(2)` describe them: a
//! sorted set of page-aligned areas, each with its protection and kind, split when part of one is unmapped or
//! re-protected and merged with a neighbour that matches. Where a new mapping goes follows Linux: a free hint
//! is taken as is, otherwise the highest free range below the mmap base (top-down); `MAP_FIXED` replaces what
//! it overlaps, `MAP_FIXED_NOREPLACE` fails with EEXIST. Pure bookkeeping: the page tables follow the ranges
//! this returns (`uspace`), and demand paging asks [`VmaMap::find`] whether a fault is inside a mapping.
#![forbid(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

const PAGE: u64 = 4096;

pub const PROT_READ: u32 = 1;
pub const PROT_WRITE: u32 = 2;
pub const PROT_EXEC: u32 = 4;

/// What backs an area (what a fault in it maps, and what fork does with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Private anonymous memory: zero-filled on first touch, copied on write after fork.
    Private,
    /// Shared anonymous memory: parent and children see the same pages.
    Shared,
    /// The program's own segments (loaded at exec, never filled on demand: there is no file to read again).
    Image,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
    pub kind: Kind,
}

/// How `mmap` may place a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// `addr` is only a hint (0: none).
    Hint(u64),
    /// MAP_FIXED: exactly there, replacing whatever it overlaps.
    Fixed(u64),
    /// MAP_FIXED_NOREPLACE: exactly there, or EEXIST.
    FixedNoReplace(u64),
}

/// Linux's errors for these calls (positive values; callers negate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmaError {
    /// EINVAL: misaligned address, zero length, bad protection.
    Invalid,
    /// ENOMEM: no room, outside the address space, or (mprotect) part of the range not mapped.
    NoMemory,
    /// EEXIST: MAP_FIXED_NOREPLACE over an existing mapping.
    Exists,
    /// EFAULT: mremap of a range that is not (wholly) one mapping.
    Fault,
}

impl VmaError {
    pub fn errno(self) -> i64 {
        match self {
            VmaError::Invalid => 22,
            VmaError::NoMemory => 12,
            VmaError::Exists => 17,
            VmaError::Fault => 14,
        }
    }
}

/// The areas of one address space, between `lo` (the lowest address a mapping may take: Linux's
/// `mmap_min_addr`) and `hi` (the end of user space); top-down placement starts below `base`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmaMap {
    areas: BTreeMap<u64, Vma>,
    lo: u64,
    hi: u64,
    base: u64,
}

/// A length rounded up to pages (None: zero, or so large it wraps).
pub fn page_len(len: u64) -> Option<u64> {
    if len == 0 {
        return None;
    }
    len.checked_add(PAGE - 1).map(|l| l & !(PAGE - 1))
}

impl VmaMap {
    pub fn new(lo: u64, hi: u64, base: u64) -> VmaMap {
        VmaMap { areas: BTreeMap::new(), lo, hi, base: base.min(hi) }
    }

    pub fn areas(&self) -> impl Iterator<Item = &Vma> {
        self.areas.values()
    }

    /// The area holding `addr`.
    pub fn find(&self, addr: u64) -> Option<&Vma> {
        self.areas.range(..=addr).next_back().map(|(_, v)| v).filter(|v| addr < v.end)
    }

    /// The area holding `addr`, or else the gap it lies in: `(start, end, area)` with `addr` in `[start, end)`
    /// and every address of that range in the same area (or in none). A walk in address order asks again
    /// only once it leaves the range.
    pub fn area_or_gap(&self, addr: u64) -> (u64, u64, Option<&Vma>) {
        let before = self.areas.range(..=addr).next_back().map(|(_, v)| v);
        match before {
            Some(v) if addr < v.end => (v.start, v.end, Some(v)),
            _ => {
                let start = before.map_or(0, |v| v.end);
                let end = self.areas.range(addr..).next().map_or(u64::MAX, |(&s, _)| s);
                (start, end, None)
            }
        }
    }

    /// Whether no area overlaps [start, end).
    pub fn is_free(&self, start: u64, end: u64) -> bool {
        let before = self.areas.range(..end).next_back().map(|(_, v)| v);
        before.is_none_or(|v| v.end <= start)
    }

    /// The highest free range of `len` bytes ending at or below `top` and not below `lo`.
    fn top_down(&self, len: u64, top: u64) -> Option<u64> {
        let mut end = top.min(self.hi) & !(PAGE - 1);
        // Walk the areas below `end` downwards; each gap between them is a candidate.
        for v in self.areas.range(..end).rev().map(|(_, v)| v) {
            if v.end <= end && end - v.end >= len {
                return Some(end - len);
            }
            end = end.min(v.start);
        }
        (end >= self.lo.saturating_add(len)).then(|| end - len)
    }

    /// Where a mapping of `len` bytes goes (does not insert it). `len` is rounded to pages.
    pub fn place(&self, placement: Placement, len: u64) -> Result<u64, VmaError> {
        let len = page_len(len).ok_or(VmaError::Invalid)?;
        let fits = |a: u64| a >= self.lo && a.checked_add(len).is_some_and(|e| e <= self.hi);
        match placement {
            Placement::Fixed(a) | Placement::FixedNoReplace(a) if a % PAGE != 0 => Err(VmaError::Invalid),
            Placement::Fixed(a) => fits(a).then_some(a).ok_or(VmaError::NoMemory),
            Placement::FixedNoReplace(a) => {
                if !fits(a) {
                    Err(VmaError::NoMemory)
                } else if !self.is_free(a, a + len) {
                    Err(VmaError::Exists)
                } else {
                    Ok(a)
                }
            }
            Placement::Hint(h) => {
                let h = h & !(PAGE - 1);
                if h != 0 && fits(h) && self.is_free(h, h + len) {
                    return Ok(h);
                }
                self.top_down(len, self.base).or_else(|| self.top_down(len, self.hi)).ok_or(VmaError::NoMemory)
            }
        }
    }

    /// Map [start, start + len) (rounded to pages) with `prot` and `kind`, replacing whatever it overlaps (as
    /// MAP_FIXED does; `place` has already refused what must not be replaced). Returns the replaced ranges,
    /// whose pages the caller unmaps.
    pub fn map(&mut self, start: u64, len: u64, prot: u32, kind: Kind) -> Result<Vec<(u64, u64)>, VmaError> {
        let len = page_len(len).ok_or(VmaError::Invalid)?;
        if prot & !(PROT_READ | PROT_WRITE | PROT_EXEC) != 0 {
            return Err(VmaError::Invalid);
        }
        let end = start.checked_add(len).filter(|&e| start % PAGE == 0 && start >= self.lo && e <= self.hi).ok_or(VmaError::NoMemory)?;
        let replaced = self.unmap(start, len)?;
        self.areas.insert(start, Vma { start, end, prot, kind });
        self.merge_around(start);
        Ok(replaced)
    }

    /// Remove [start, start + len) from every area it overlaps (splitting those it cuts). Returns the ranges
    /// that were mapped (a range with nothing mapped is not an error, as in Linux).
    pub fn unmap(&mut self, start: u64, len: u64) -> Result<Vec<(u64, u64)>, VmaError> {
        if start % PAGE != 0 {
            return Err(VmaError::Invalid);
        }
        let len = page_len(len).ok_or(VmaError::Invalid)?;
        let end = start.checked_add(len).ok_or(VmaError::Invalid)?;
        let mut removed = Vec::new();
        for v in self.overlapping(start, end) {
            self.areas.remove(&v.start);
            if v.start < start {
                self.areas.insert(v.start, Vma { end: start, ..v });
            }
            if v.end > end {
                self.areas.insert(end, Vma { start: end, ..v });
            }
            removed.push((v.start.max(start), v.end.min(end)));
        }
        Ok(removed)
    }

    /// Change the protection of [start, start + len). ENOMEM if any part of it is not mapped (then nothing
    /// changes). Returns the ranges changed with their old protection.
    pub fn protect(&mut self, start: u64, len: u64, prot: u32) -> Result<Vec<(u64, u64, u32)>, VmaError> {
        if start % PAGE != 0 || prot & !(PROT_READ | PROT_WRITE | PROT_EXEC) != 0 {
            return Err(VmaError::Invalid);
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let len = page_len(len).ok_or(VmaError::NoMemory)?;
        let end = start.checked_add(len).ok_or(VmaError::NoMemory)?;
        let parts = self.overlapping(start, end);
        // Covered without a gap?
        let mut at = start;
        for v in &parts {
            if v.start > at {
                return Err(VmaError::NoMemory);
            }
            at = v.end;
        }
        if at < end {
            return Err(VmaError::NoMemory);
        }
        let mut changed = Vec::new();
        for v in parts {
            let (s, e) = (v.start.max(start), v.end.min(end));
            self.areas.remove(&v.start);
            if v.start < s {
                self.areas.insert(v.start, Vma { end: s, ..v });
            }
            self.areas.insert(s, Vma { start: s, end: e, prot, ..v });
            if v.end > e {
                self.areas.insert(e, Vma { start: e, ..v });
            }
            changed.push((s, e, v.prot));
        }
        self.merge_range(start, end);
        Ok(changed)
    }

    fn overlapping(&self, start: u64, end: u64) -> Vec<Vma> {
        let first = self.areas.range(..=start).next_back().map(|(&k, _)| k).unwrap_or(start);
        self.areas.range(first..end).map(|(_, v)| *v).filter(|v| v.end > start && v.start < end).collect()
    }

    /// Merge every area touching [start, end] with its matching neighbours.
    fn merge_range(&mut self, start: u64, end: u64) {
        let keys: Vec<u64> = self.areas.range(..=end).rev().take_while(|(_, v)| v.end >= start).map(|(&k, _)| k).collect();
        for k in keys {
            if self.areas.contains_key(&k) {
                self.merge_around(k);
            }
        }
    }

    /// Merge the area at or just below `addr` with its neighbours where they touch and match.
    fn merge_around(&mut self, addr: u64) {
        let Some(mut cur) = self.areas.range(..=addr).next_back().map(|(_, v)| *v) else { return };
        if let Some(prev) = self.areas.range(..cur.start).next_back().map(|(_, v)| *v) {
            if prev.end == cur.start && prev.prot == cur.prot && prev.kind == cur.kind {
                self.areas.remove(&cur.start);
                cur = Vma { start: prev.start, ..cur };
                self.areas.insert(prev.start, cur);
            }
        }
        if let Some(next) = self.areas.get(&cur.end).copied() {
            if next.prot == cur.prot && next.kind == cur.kind {
                self.areas.remove(&next.start);
                self.areas.insert(cur.start, Vma { end: next.end, ..cur });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_or_gap_covers_the_address_and_nothing_else() {
        let mut m = VmaMap::new(0x1_0000, 0x8000_0000_0000, 0x7000_0000_0000);
        m.map(0x40_0000, 0x2000, PROT_READ, Kind::Image).unwrap();
        m.map(0x50_0000, 0x1000, PROT_READ | PROT_WRITE, Kind::Shared).unwrap();
        assert_eq!(m.area_or_gap(0x40_1fff).0..m.area_or_gap(0x40_1fff).1, 0x40_0000..0x40_2000);
        assert_eq!(m.area_or_gap(0x40_1fff).2.map(|v| v.kind), Some(Kind::Image));
        let (s, e, a) = m.area_or_gap(0x40_2000);
        assert_eq!((s, e, a.is_none()), (0x40_2000, 0x50_0000, true));
        let (s, e, a) = m.area_or_gap(0x10);
        assert_eq!((s, e, a.is_none()), (0, 0x40_0000, true));
        let (s, e, a) = m.area_or_gap(0x7fff_0000_0000);
        assert_eq!((s, e, a.is_none()), (0x50_1000, u64::MAX, true));
        for addr in (0..0x60_0000).step_by(0x800) {
            let (s, e, a) = m.area_or_gap(addr);
            assert!(s <= addr && addr < e);
            assert_eq!(a.copied(), m.find(addr).copied());
        }
    }

    const LO: u64 = 0x10000;
    const HI: u64 = 0x7fff_ffff_f000;
    const BASE: u64 = 0x7f00_0000_0000;
    const RW: u32 = PROT_READ | PROT_WRITE;

    fn map() -> VmaMap {
        VmaMap::new(LO, HI, BASE)
    }

    fn spans(m: &VmaMap) -> Vec<(u64, u64, u32)> {
        m.areas().map(|v| (v.start, v.end, v.prot)).collect()
    }

    #[test]
    fn placement_is_top_down_below_the_base_unless_a_hint_is_free() {
        let mut m = map();
        let a = m.place(Placement::Hint(0), 3 * PAGE).unwrap();
        assert_eq!(a, BASE - 3 * PAGE);
        m.map(a, 3 * PAGE, RW, Kind::Private).unwrap();
        let b = m.place(Placement::Hint(0), 5000).unwrap();
        assert_eq!(b, a - 2 * PAGE, "the next one goes just below, its length rounded up");
        // A free hint is taken (rounded down to its page); a taken one is not.
        assert_eq!(m.place(Placement::Hint(0x1234_5678), PAGE).unwrap(), 0x1234_5000);
        assert_eq!(m.place(Placement::Hint(a + PAGE), PAGE).unwrap(), a - PAGE);
        // Below the lowest address, or past the end: not a usable hint.
        assert_eq!(m.place(Placement::Hint(0x1000), PAGE).unwrap(), a - PAGE);
        assert_eq!(m.place(Placement::Hint(HI), PAGE).unwrap(), a - PAGE);
    }

    #[test]
    fn fixed_mappings_replace_and_noreplace_refuses() {
        let mut m = map();
        m.map(0x40_0000, 4 * PAGE, RW, Kind::Private).unwrap();
        assert_eq!(m.place(Placement::FixedNoReplace(0x40_1000), PAGE), Err(VmaError::Exists));
        assert_eq!(m.place(Placement::FixedNoReplace(0x40_4000), PAGE), Ok(0x40_4000));
        assert_eq!(m.place(Placement::Fixed(0x40_1001), PAGE), Err(VmaError::Invalid));
        assert_eq!(m.place(Placement::Fixed(HI), PAGE), Err(VmaError::NoMemory));
        assert_eq!(m.place(Placement::Fixed(0), PAGE), Err(VmaError::NoMemory), "below mmap_min_addr");
        let replaced = m.map(0x40_1000, 2 * PAGE, PROT_READ, Kind::Private).unwrap();
        assert_eq!(replaced, vec![(0x40_1000, 0x40_3000)]);
        assert_eq!(spans(&m), vec![(0x40_0000, 0x40_1000, RW), (0x40_1000, 0x40_3000, PROT_READ), (0x40_3000, 0x40_4000, RW)]);
    }

    #[test]
    fn unmap_splits_and_an_unmapped_range_is_fine() {
        let mut m = map();
        m.map(0x40_0000, 8 * PAGE, RW, Kind::Private).unwrap();
        assert_eq!(m.unmap(0x40_2000, 2 * PAGE).unwrap(), vec![(0x40_2000, 0x40_4000)]);
        assert_eq!(spans(&m), vec![(0x40_0000, 0x40_2000, RW), (0x40_4000, 0x40_8000, RW)]);
        assert!(m.find(0x40_2fff).is_none());
        assert!(m.find(0x40_4000).is_some());
        assert_eq!(m.unmap(0x50_0000, PAGE).unwrap(), vec![]);
        assert_eq!(m.unmap(0x40_0001, PAGE), Err(VmaError::Invalid));
        assert_eq!(m.unmap(0x40_0000, 0), Err(VmaError::Invalid));
        // One call across both pieces and the hole between.
        assert_eq!(m.unmap(0x40_1000, 0x6000).unwrap(), vec![(0x40_1000, 0x40_2000), (0x40_4000, 0x40_7000)]);
        assert_eq!(spans(&m), vec![(0x40_0000, 0x40_1000, RW), (0x40_7000, 0x40_8000, RW)]);
    }

    #[test]
    fn mprotect_needs_the_whole_range_mapped_and_merges_back() {
        let mut m = map();
        m.map(0x40_0000, 4 * PAGE, RW, Kind::Private).unwrap();
        assert_eq!(m.protect(0x40_1000, PAGE, PROT_READ).unwrap(), vec![(0x40_1000, 0x40_2000, RW)]);
        assert_eq!(spans(&m).len(), 3);
        m.protect(0x40_1000, PAGE, RW).unwrap();
        assert_eq!(spans(&m), vec![(0x40_0000, 0x40_4000, RW)], "equal neighbours merge again");
        assert_eq!(m.protect(0x40_3000, 2 * PAGE, PROT_READ), Err(VmaError::NoMemory), "runs past the mapping");
        assert_eq!(spans(&m), vec![(0x40_0000, 0x40_4000, RW)], "nothing changed");
        assert_eq!(m.protect(0x40_0000, PAGE, 8), Err(VmaError::Invalid));
        assert_eq!(m.protect(0x40_0000, 0, PROT_READ), Ok(vec![]));
    }

    #[test]
    fn absurd_lengths_are_refused_not_wrapped() {
        let m = map();
        assert_eq!(m.place(Placement::Hint(0), 0), Err(VmaError::Invalid));
        assert_eq!(m.place(Placement::Hint(0), u64::MAX), Err(VmaError::Invalid));
        assert_eq!(m.place(Placement::Hint(0), 1 << 50), Err(VmaError::NoMemory));
        assert_eq!(m.place(Placement::Fixed(0x40_0000), u64::MAX - PAGE), Err(VmaError::NoMemory));
        let mut m = map();
        assert_eq!(m.map(0x40_0000, u64::MAX - 0x1000, RW, Kind::Private), Err(VmaError::NoMemory));
    }

    #[test]
    fn the_free_space_is_searched_around_existing_areas() {
        let mut m = VmaMap::new(LO, 0x10_0000, 0x10_0000);
        m.map(0xF_0000, 0x1_0000, RW, Kind::Private).unwrap();
        m.map(0xD_0000, 0x1_0000, RW, Kind::Shared).unwrap();
        // Gap between them: [0xE_0000, 0xF_0000).
        assert_eq!(m.place(Placement::Hint(0), 0x1_0000).unwrap(), 0xE_0000);
        assert_eq!(m.place(Placement::Hint(0), 0x2_0000).unwrap(), 0xB_0000);
        assert_eq!(m.place(Placement::Hint(0), 0x10_0000), Err(VmaError::NoMemory));
        assert_eq!(m.find(0xD_8000).map(|v| v.kind), Some(Kind::Shared));
    }

    #[test]
    fn random_operations_match_a_page_by_page_model() {
        // 64 pages; each page's protection in the model (None: unmapped).
        const N: u64 = 64;
        let lo = 0x10_0000;
        let mut m = VmaMap::new(lo, lo + N * PAGE, lo + N * PAGE);
        let mut model: Vec<Option<u32>> = vec![None; N as usize];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let (a, n, prot) = (next() % N, 1 + next() % 8, (next() % 8) as u32);
            let (start, len) = (lo + a * PAGE, n * PAGE);
            let range = a as usize..(a + n).min(N) as usize;
            match next() % 3 {
                0 => {
                    let r = m.map(start, len, prot, Kind::Private);
                    if a + n <= N {
                        assert!(r.is_ok());
                        model[range].iter_mut().for_each(|p| *p = Some(prot));
                    } else {
                        assert_eq!(r, Err(VmaError::NoMemory));
                    }
                }
                1 => {
                    m.unmap(start, len).unwrap();
                    model[range].iter_mut().for_each(|p| *p = None);
                }
                _ => {
                    let whole = a + n <= N && model[range.clone()].iter().all(Option::is_some);
                    let r = m.protect(start, len, prot);
                    assert_eq!(r.is_ok(), whole);
                    if whole {
                        model[range].iter_mut().for_each(|p| *p = Some(prot));
                    }
                }
            }
            // Same pages, sorted, disjoint, and merged (no two touching areas alike).
            for (i, p) in model.iter().enumerate() {
                assert_eq!(m.find(lo + i as u64 * PAGE).map(|v| v.prot), *p);
            }
            let v: Vec<&Vma> = m.areas().collect();
            for w in v.windows(2) {
                assert!(w[0].end <= w[1].start);
                assert!(!(w[0].end == w[1].start && w[0].prot == w[1].prot && w[0].kind == w[1].kind), "{w:?} not merged");
            }
        }
    }
}
