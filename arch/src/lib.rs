//! questv x86_64 architecture support. The only crate (besides vmx/ and drivers' register access) that touches
//! CPU, APIC and IOAPIC registers. Pure logic (page-table builder, MADT topology) compiles and is unit-tested
//! on the host; hardware modules are built for the kernel image.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod acpi_dmar;
pub mod acpi_madt;
pub mod paging;
pub mod regs;

pub mod cpu;
pub mod gdt;
pub mod ioapic;
pub mod lapic;
pub mod mmio;
pub mod percpu;
pub mod rtc;
pub mod timer;

#[cfg(feature = "bare")]
pub mod boot;
#[cfg(feature = "bare")]
pub mod rt;
#[cfg(feature = "bare")]
pub mod trap;
#[cfg(feature = "bare")]
pub mod uaccess;
