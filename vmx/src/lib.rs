//! The questv VMX monitor (paper §3.1–3.3). In this issue only the capability check exists: it decides whether
//! this CPU can host sandboxes (VMX, not locked off by firmware, EPT and unrestricted guest). VMXON, VMCS set-up,
//! EPT construction and the exit handler arrive with the VT issue (#4).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod caps;
