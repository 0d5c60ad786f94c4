//! The questv kernel: one mode-agnostic codebase that runs the plain SMP machine and, unchanged, each per-core
//! sandbox under the monitor (the `questv-vmx` crate, above this one). The bootable image is `kernel/image`.
//! Pure logic (memory map, frame allocator, command line, channels' rings, scheduling accounting, ELF checks)
//! is host-tested; the rest is built only into the image (`image` feature).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod cmdline;
pub mod elf;
pub mod entropy;
pub mod fs;
pub mod futex;
pub mod linux_abi;
pub mod signal;
pub mod startstack;
pub mod syscall_names;
pub mod channel;
pub mod mm;
pub mod net;
pub mod time;
pub mod vcpu;

#[cfg(feature = "image")]
pub mod console;
#[cfg(feature = "image")]
pub mod sync;
#[cfg(feature = "image")]
pub mod sched;
#[cfg(feature = "image")]
pub mod smp;
#[cfg(feature = "image")]
pub mod irq;
#[cfg(feature = "image")]
pub mod boot;
#[cfg(feature = "image")]
pub mod hooks;
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
#[cfg(feature = "image")]
pub mod user;
