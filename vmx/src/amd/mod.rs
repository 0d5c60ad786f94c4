//! The AMD backend: SVM with nested paging. Capability checks (`caps`) and the VMCB, run loop and exit
//! decoding (`vmcb`), which turns each #VMEXIT into the neutral [`crate::exit::Exit`].

pub mod caps;
pub mod vmcb;
