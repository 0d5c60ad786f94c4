//! The questv monitor (paper §3.1–3.3): the only VMX-/SVM-root code, above the kernel whose services it
//! uses (Cargo: arch ← kernel ← vmx ← image). One policy over two hardware backends:
//!
//! - pure, host-tested parts every backend shares: the access policy (`policy`), memory partitioning
//!   (`partition`), second-stage tables in EPT or NPT format (`stage2`), the neutral exit vocabulary (`exit`),
//!   guest page walks / MMIO instruction decoding (`guest`), recovery decisions (`recovery`) and the boot
//!   information it builds for each sandbox (`bootinfo`);
//! - the backends, which set up and enter guests and translate exits: `intel` (VMX + EPT) and `amd`
//!   (SVM + NPT), chosen at boot from CPUID by `backend`, which also dispatches the per-exit operations;
//! - the policy that runs the machine (`monitor`, feature `monitor`): layout, launch, hypercalls, faults,
//!   grants, channels, the shared NIC, written once against `backend`; see docs/vt.md.
//!
//! The hypercall ABI and the boot arguments both sides agree on are the `questv-abi` crate.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod amd;
pub mod backend;
pub mod bootinfo;
pub mod channel_table;
pub mod console_input;
pub mod console_queue;
pub mod exit;
pub mod guest;
pub mod intel;
#[cfg(feature = "monitor")]
pub mod monitor;
pub mod partition;
pub mod partition_spec;
pub mod policy;
pub mod recovery;
pub mod stage2;
