//! The questv kernel: one codebase that boots as a plain SMP kernel or (feature `vt`) as a per-core sandbox
//! kernel under the VMX monitor. Pure logic (memory map, frame allocator, command line) is host-tested; the
//! rest is built only into the bootable image (`image` feature).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod cmdline;
pub mod elf;
pub mod bootinfo;
pub mod channel;
pub mod mm;
pub mod net;
pub mod vcpu;
pub mod recovery;

#[cfg(feature = "image")]
pub mod console;
#[cfg(feature = "image")]
pub mod sync;
#[cfg(feature = "image")]
pub mod sched;
#[cfg(feature = "image")]
pub mod smp;
#[cfg(feature = "image")]
pub mod boot;
#[cfg(feature = "image")]
pub mod hooks;
#[cfg(feature = "image")]
pub mod ktest;
#[cfg(feature = "image")]
pub mod machine;
#[cfg(feature = "image")]
pub mod acpi_handler;
#[cfg(feature = "image")]
pub mod proc;
#[cfg(feature = "image")]
pub mod ramdisk;
#[cfg(feature = "image")]
pub mod sandbox;
#[cfg(feature = "image")]
pub mod syscall;
#[cfg(all(feature = "image", feature = "vt"))]
pub mod vt;
