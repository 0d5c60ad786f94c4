//! Size classes for the kernel heap's small blocks (kmem keeps freed blocks of a class on a list, so a fork's
//! few dozen small allocations are not each a first-fit search of the heap). Pure, host-tested.
#![forbid(unsafe_code)]

use core::alloc::Layout;

/// Classes: 16, 32, .. 1024 bytes (a thread's saved registers, FPU state included, are 688).
pub const CLASSES: usize = 7;
pub const SMALLEST_CLASS: usize = 16;
/// Freed blocks a class keeps at most (1 MiB for the largest class); more go back to the heap.
pub const CLASS_KEEP: usize = 1024;

/// The size class of `layout`, if it is small: blocks of class `c` are `SMALLEST_CLASS << c` bytes, aligned
/// to 16 (so any alignment up to 16 is met).
pub fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > SMALLEST_CLASS << (CLASSES - 1) || layout.align() > SMALLEST_CLASS {
        return None;
    }
    Some(layout.size().max(SMALLEST_CLASS).next_power_of_two().trailing_zeros() as usize - SMALLEST_CLASS.trailing_zeros() as usize)
}

/// The layout every block of class `class` is allocated with.
pub fn class_layout(class: usize) -> Layout {
    // Sizes and alignment are powers of two below 4 KiB: always a valid layout.
    Layout::from_size_align(SMALLEST_CLASS << class, SMALLEST_CLASS).expect("size class layout")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_layouts_fall_in_power_of_two_classes() {
        let l = |size, align| Layout::from_size_align(size, align).unwrap();
        assert_eq!(class_of(l(1, 1)), Some(0));
        assert_eq!(class_of(l(16, 8)), Some(0));
        assert_eq!(class_of(l(17, 8)), Some(1));
        assert_eq!(class_of(l(688, 16)), Some(6));
        assert_eq!(class_of(l(512, 16)), Some(5));
        assert_eq!(class_of(l(1025, 8)), None);
        assert_eq!(class_of(l(64, 32)), None, "alignment above 16 is the heap's");
        for size in 1..=1024 {
            let c = class_of(l(size, 8)).unwrap();
            // The smallest class that holds it, and a block big enough for the free list's link.
            assert!(class_layout(c).size() >= size && (c == 0 || class_layout(c - 1).size() < size));
            assert!(class_layout(c).size() >= core::mem::size_of::<usize>() && class_layout(c).align() >= 8);
        }
    }
}
