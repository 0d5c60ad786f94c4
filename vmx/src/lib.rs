//! The questv VMX monitor (paper §3.1–3.3). Present so far: the capability check (VMX, not locked off by
//! firmware, EPT, unrestricted guest), the EPT builder and the memory partition planner, all host-tested.
//! VMXON, VMCS set-up, launch and the exit handler are the VT issue's (#4) remaining work.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod caps;
pub mod ept;
pub mod partition;
pub mod vmcs;
