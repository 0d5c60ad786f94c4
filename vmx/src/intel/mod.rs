//! The Intel backend: VMX root operation with extended page tables. Capability checks (`caps`), the checked
//! controls (`controls`), the exit reasons (`reason`), and the VMCS, launch and exit path (`vmcs`), which
//! decodes each exit into the neutral [`crate::exit::Exit`]. The backend's error type is here, shared by
//! `controls` and `vmcs`.

pub mod caps;
pub mod controls;
pub mod reason;
pub mod vmcs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmxError {
    VmxonFailed,
    VmclearFailed,
    VmptrldFailed,
    VmwriteFailed(u32),
    /// VMLAUNCH failed; the VM-instruction error number (SDM §31.4).
    LaunchFailed(u64),
    /// A control the monitor needs is not offered by this CPU (control name, wanted bits, what it allows).
    ControlRefused { control: &'static str, wanted: u32, got: u32 },
    /// The CPU forces on a control bit that would cause exits the monitor does not handle.
    ControlForced { control: &'static str, forced: u32 },
}

impl VmxError {
    /// A number for an `entry_failed` report: the VM-instruction error where there is one.
    pub fn detail(&self) -> u64 {
        match *self {
            VmxError::LaunchFailed(e) => e,
            VmxError::VmwriteFailed(f) => u64::from(f),
            _ => u64::MAX,
        }
    }
}
