//! questv device drivers. Register access is the only unsafe code here.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod e1000;
pub mod pci;
pub mod serial;
pub mod vtd;
