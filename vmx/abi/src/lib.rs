//! The one contract between a sandbox kernel and its monitor; the kernel and the monitor both import this
//! crate and nothing else defines these numbers, addresses or keys:
//!
//! - `hypercall`: hypercall numbers, arguments and errors, the guest-physical addresses both sides agree on,
//!   and the layout of the shared info page;
//! - `boot`: the boot arguments the monitor gives each sandbox kernel on its command line, typed, with the one
//!   encoder (the monitor's) and the one parser (the kernel's).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod boot;
pub mod hypercall;
