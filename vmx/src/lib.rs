//! The questv monitor (paper §3.1–3.3): the only VMX-/SVM-root code. One policy over two hardware backends:
//!
//! - pure, host-tested parts every backend shares: the hypercall ABI both sides import (`hypercall`), the
//!   access policy (`policy`), memory partitioning (`partition`), second-stage tables in EPT or NPT format
//!   (`stage2`), the neutral exit vocabulary (`exit`), and guest page walks / MMIO instruction decoding
//!   (`guest`);
//! - the backends, which set up and enter guests and translate exits: `intel` (VMX + EPT) and `amd`
//!   (SVM + NPT), chosen at boot from CPUID by `backend`, which also dispatches the per-exit operations.
//!
//! The decisions on exits (layout, hypercalls, faults, grants, channels) are the kernel's `vt` module, written
//! once against `backend`; see docs/vt.md.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod amd;
pub mod backend;
pub mod exit;
pub mod guest;
pub mod hypercall;
pub mod intel;
pub mod partition;
pub mod policy;
pub mod stage2;
