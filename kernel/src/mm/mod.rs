//! Memory management: pure allocators and map handling (host-tested), plus the kernel's physical memory,
//! heap and page tables in the image build.
pub mod frame;
pub mod memmap;
pub mod size_class;
pub mod uspace;
pub mod vma;
#[cfg(feature = "image")]
pub mod kmem;
