//! The Intel backend: VMX root operation with extended page tables. Capability checks (`caps`) and the VMCS,
//! launch and exit path (`vmcs`), which decodes each exit into the neutral [`crate::exit::Exit`].

pub mod caps;
pub mod vmcs;
