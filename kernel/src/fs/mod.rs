//! Files: the in-memory tree (`tmpfs`) with `/proc` generated on demand (`vfs`), descriptors (`fdtable`),
//! pipes (`pipe`) and the terminal's line discipline (`tty`) are pure logic, host-tested; the kernel's tree,
//! open files and the file system calls (`files`, `sys`) are built into the image.
pub mod cpio;
pub mod fdtable;
pub mod pipe;
pub mod tmpfs;
pub mod tty;
pub mod vfs;

#[cfg(feature = "image")]
pub mod files;
#[cfg(feature = "image")]
pub mod sys;
#[cfg(feature = "image")]
pub mod terminal;
