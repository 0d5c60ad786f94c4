//! The questv VMX monitor (paper §3.1–3.3): the only VMX-root code. Capability check, EPT builder, memory
//! partition planner and access policy (pure, host-tested), the hypercall ABI both sides share, and VMXON /
//! VMCS set-up / VMLAUNCH / the VM-exit path (`vmcs`). The policy decisions on exits (layout, hypercalls,
//! faults) are in the kernel's `vt` module; see docs/vt.md.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod caps;
pub mod ept;
pub mod hypercall;
pub mod partition;
pub mod policy;
pub mod vmcs;
