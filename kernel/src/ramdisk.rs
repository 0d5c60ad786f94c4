//! The initial ramdisk: programs GRUB loaded as multiboot2 modules (`module2 /boot/bin/NAME NAME`), found by
//! name. The modules' memory is reserved from the frame allocator at boot and never freed.
#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;

static FILES: spin::Once<Vec<(String, &'static [u8])>> = spin::Once::new();

/// Record the modules (name = module command line).
pub fn init(files: Vec<(String, &'static [u8])>) {
    FILES.call_once(|| files);
}

pub fn find(name: &str) -> Option<&'static [u8]> {
    FILES.get()?.iter().find(|(n, _)| n == name).map(|(_, b)| *b)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    FILES.get().into_iter().flatten().map(|(n, _)| n.as_str())
}

/// Every file: (name, bytes).
pub fn files() -> impl Iterator<Item = (&'static str, &'static [u8])> {
    FILES.get().into_iter().flatten().map(|(n, b)| (n.as_str(), *b))
}
