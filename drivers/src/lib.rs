//! questv device drivers. Register access is the only unsafe code here.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod serial;
