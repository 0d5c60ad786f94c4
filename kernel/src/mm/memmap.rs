//! Physical memory map handling: turn the firmware's (possibly unsorted, overlapping) memory map plus the
//! ranges the kernel must keep (its image, the boot information, the low 1 MiB) into a sorted list of usable,
//! page-aligned regions. Pure logic without allocation: it runs before the heap exists.
#![forbid(unsafe_code)]

pub const PAGE: u64 = 4096;
pub const MAX_REGIONS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    /// Exclusive.
    pub end: u64,
}

impl Region {
    pub const fn new(start: u64, end: u64) -> Region {
        Region { start, end }
    }
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    pub start: u64,
    pub len: u64,
    pub usable: bool,
}

/// A fixed-capacity, sorted, non-overlapping list of regions.
#[derive(Clone)]
pub struct RegionList {
    regions: [Region; MAX_REGIONS],
    len: usize,
    /// Set when regions had to be dropped for lack of capacity (memory is lost, never invented).
    pub truncated: bool,
}

impl core::fmt::Debug for RegionList {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl Default for RegionList {
    fn default() -> Self {
        RegionList { regions: [Region::new(0, 0); MAX_REGIONS], len: 0, truncated: false }
    }
}

impl RegionList {
    pub fn as_slice(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    pub fn total(&self) -> u64 {
        self.as_slice().iter().map(Region::len).sum()
    }

    /// Insert keeping the list sorted and merging overlapping or touching regions.
    fn add(&mut self, r: Region) {
        if r.is_empty() {
            return;
        }
        let mut merged = r;
        let mut out = RegionList::default();
        let mut placed = false;
        for &x in self.as_slice() {
            if x.end < merged.start {
                out.push(x);
            } else if x.start > merged.end {
                if !placed {
                    out.push(merged);
                    placed = true;
                }
                out.push(x);
            } else {
                merged = Region::new(merged.start.min(x.start), merged.end.max(x.end));
            }
        }
        if !placed {
            out.push(merged);
        }
        out.truncated |= self.truncated;
        *self = out;
    }

    fn push(&mut self, r: Region) {
        if self.len == MAX_REGIONS {
            self.truncated = true;
            return;
        }
        self.regions[self.len] = r;
        self.len += 1;
    }

    /// Remove `r` from every region (splitting where needed).
    fn subtract(&mut self, r: Region) {
        if r.is_empty() {
            return;
        }
        let mut out = RegionList { truncated: self.truncated, ..RegionList::default() };
        for &x in self.as_slice() {
            if x.end <= r.start || x.start >= r.end {
                out.push(x);
                continue;
            }
            if x.start < r.start {
                out.push(Region::new(x.start, r.start));
            }
            if x.end > r.end {
                out.push(Region::new(r.end, x.end));
            }
        }
        *self = out;
    }
}

fn align_up(x: u64) -> u64 {
    x.saturating_add(PAGE - 1) & !(PAGE - 1)
}
fn align_down(x: u64) -> u64 {
    x & !(PAGE - 1)
}

/// Usable RAM: usable areas shrunk to whole pages, minus every non-usable area (firmware reservations win
/// over overlapping "usable" claims) and minus `keep` (grown to whole pages).
pub fn usable_regions(areas: &[Area], keep: &[Region]) -> RegionList {
    let mut list = RegionList::default();
    for a in areas.iter().filter(|a| a.usable) {
        let end = a.start.saturating_add(a.len);
        list.add(Region::new(align_up(a.start), align_down(end)));
    }
    for a in areas.iter().filter(|a| !a.usable) {
        list.subtract(Region::new(align_down(a.start), align_up(a.start.saturating_add(a.len))));
    }
    for k in keep {
        list.subtract(Region::new(align_down(k.start), align_up(k.end)));
    }
    // Sub-page leftovers are impossible after alignment, but drop empty regions defensively.
    let mut out = RegionList { truncated: list.truncated, ..RegionList::default() };
    for &r in list.as_slice() {
        if r.len() >= PAGE {
            out.push(r);
        }
    }
    out
}

/// End of the highest usable area: how far the kernel's mapping of RAM must reach. (Reserved areas can
/// sit far above RAM, e.g. QEMU's HyperTransport hole at 1 TiB, and are not RAM.)
pub fn highest_address(areas: &[Area]) -> u64 {
    areas.iter().filter(|a| a.usable).map(|a| a.start.saturating_add(a.len)).max().unwrap_or(0)
}

/// The page the AP start-up trampoline goes to: the lowest page above page 0 and below `limit` (0xA0000: the
/// SIPI vector is the page number, and vectors 0xA0-0xBF are reserved) that the memory map calls usable and
/// nothing in `keep` (boot information, modules) overlaps. Lowest rather than highest: BIOSes that
/// under-report the EBDA put it just below 640 KiB. Under a BIOS that is 0x1000; under UEFI whatever the
/// firmware left free after ExitBootServices. `None`: no such page (the kernel then runs on the BSP alone).
pub fn pick_trampoline(areas: &[Area], keep: &[Region], limit: u64) -> Option<u64> {
    let free = usable_regions(areas, keep);
    free.as_slice()
        .iter()
        .map(|r| r.start.max(PAGE))
        .find(|&page| free.as_slice().iter().any(|r| r.start <= page && page + PAGE <= r.end) && page + PAGE <= limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trampoline_page_comes_from_the_map() {
        // SeaBIOS: 0..0x9FC00 usable (EBDA above).
        let bios = [usable(0, 0x9FC00), reserved(0x9FC00, 0x400), reserved(0xF0000, 0x10000), usable(0x100000, 0x1000_0000)];
        const LIMIT: u64 = 0xA0000;
        assert_eq!(pick_trampoline(&bios, &[], LIMIT), Some(0x1000));
        // The boot information sitting in that page pushes it up.
        assert_eq!(pick_trampoline(&bios, &[Region::new(0x1000, 0x1800)], LIMIT), Some(0x2000));
        // A UEFI-like map: low memory mostly taken by the firmware, one free hole.
        let uefi = [reserved(0, 0x8000), usable(0x8000, 0x2000), reserved(0xA000, 0x96000), usable(0x100000, 0x800000)];
        assert_eq!(pick_trampoline(&uefi, &[], LIMIT), Some(0x8000));
        // Only page 0 free, nothing below the limit, or free memory only from 640 KiB up: no trampoline.
        assert_eq!(pick_trampoline(&[usable(0, 0x1000), usable(0x100000, 0x1000)], &[], LIMIT), None);
        assert_eq!(pick_trampoline(&[usable(0x100000, 0x100000)], &[], LIMIT), None);
        assert_eq!(pick_trampoline(&[usable(0xA0000, 0x20000)], &[], LIMIT), None);
        // Unaligned usable bytes are not a page.
        assert_eq!(pick_trampoline(&[usable(0x2800, 0x1000)], &[], LIMIT), None);
    }

    fn usable(start: u64, len: u64) -> Area {
        Area { start, len, usable: true }
    }
    fn reserved(start: u64, len: u64) -> Area {
        Area { start, len, usable: false }
    }

    /// The map QEMU's SeaBIOS reports for -m 512M.
    fn qemu_map() -> Vec<Area> {
        vec![
            usable(0, 0x9FC00),
            reserved(0x9FC00, 0x400),
            reserved(0xF0000, 0x10000),
            usable(0x100000, 0x1FEE0000),
            reserved(0x1FFE0000, 0x20000),
            reserved(0xFFFC0000, 0x40000),
            reserved(0xFD_0000_0000, 0x3_0000_0000),
        ]
    }

    #[test]
    fn qemu_map_minus_kernel_and_low_memory() {
        let keep = [Region::new(0, 0x100000), Region::new(0x100000, 0x2345_67)];
        let l = usable_regions(&qemu_map(), &keep);
        assert_eq!(l.as_slice(), &[Region::new(0x235000, 0x1FFE0000)]);
        assert!(!l.truncated);
        assert_eq!(highest_address(&qemu_map()), 0x1FFE0000);
    }

    #[test]
    fn unsorted_overlapping_and_unaligned() {
        let areas = [usable(0x300000, 0x100000), usable(0x100800, 0x200000), usable(0x380000, 0x100000)];
        let l = usable_regions(&areas, &[]);
        // 0x100800 rounds up to 0x101000; the three overlapping/touching areas merge.
        assert_eq!(l.as_slice(), &[Region::new(0x101000, 0x480000)]);
    }

    #[test]
    fn firmware_reservation_wins_and_splits() {
        let areas = [usable(0x100000, 0x400000), reserved(0x200100, 0x10)];
        let l = usable_regions(&areas, &[Region::new(0x400000, 0x401000)]);
        assert_eq!(
            l.as_slice(),
            &[Region::new(0x100000, 0x200000), Region::new(0x201000, 0x400000), Region::new(0x401000, 0x500000)]
        );
        assert_eq!(l.total(), 0x100000 + 0x1FF000 + 0xFF000);
    }

    #[test]
    fn degenerate_inputs() {
        assert!(usable_regions(&[], &[]).as_slice().is_empty());
        // Smaller than a page once aligned: nothing usable.
        assert!(usable_regions(&[usable(0x1001, 0xFFE)], &[]).as_slice().is_empty());
        // Length overflowing the address space saturates instead of wrapping.
        let l = usable_regions(&[usable(0xFFFF_FFFF_FFFF_0000, u64::MAX)], &[]);
        assert_eq!(l.as_slice(), &[Region::new(0xFFFF_FFFF_FFFF_0000, 0xFFFF_FFFF_FFFF_F000)]);
    }

    #[test]
    fn too_many_regions_is_reported_not_invented() {
        let areas: Vec<Area> = (0..200).map(|i| usable(i * 0x10000, 0x1000)).collect();
        let l = usable_regions(&areas, &[]);
        assert_eq!(l.as_slice().len(), MAX_REGIONS);
        assert!(l.truncated);
    }
}
