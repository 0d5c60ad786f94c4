//! Which hardware runs the monitor, chosen once at boot from CPUID, and the operations the policy performs on
//! the current exit, dispatched to that backend. The policy (kernel/src/vt/) is written once against this
//! module; `intel` (VMX + EPT) and `amd` (SVM + NPT) only translate.

use crate::stage2::Format;
use crate::{amd, intel};
use core::sync::atomic::{AtomicU8, Ordering};

pub use crate::exit::{set_exit_handler, ExitHandler, GuestRegs, GuestState, Verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Intel VMX with extended page tables.
    Vmx,
    /// AMD SVM with nested page tables.
    Svm,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Vmx => "vmx",
            Arch::Svm => "svm",
        }
    }

    pub fn stage2_format(self) -> Format {
        match self {
            Arch::Vmx => Format::Ept,
            Arch::Svm => Format::Npt,
        }
    }
}

/// What the VT build tells a user whose CPU (or emulator) can run neither backend.
pub const NEEDS_VIRT_MESSAGE: &str = "VT mode needs Intel VMX with EPT or AMD SVM with nested paging";

/// Why neither backend can run here (each backend's own reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable {
    pub vmx: intel::caps::Unavailable,
    pub svm: amd::caps::Unavailable,
}

/// The capabilities of the backend that will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caps {
    Vmx(intel::caps::VmxCaps),
    Svm(amd::caps::SvmCaps),
}

impl Caps {
    pub fn arch(&self) -> Arch {
        match self {
            Caps::Vmx(_) => Arch::Vmx,
            Caps::Svm(_) => Arch::Svm,
        }
    }
}

/// Pick the backend from the raw capabilities (pure): VMX if usable, else SVM.
pub fn choose(vmx: &intel::caps::RawCaps, svm: &amd::caps::RawCaps) -> Result<Caps, Unavailable> {
    match (intel::caps::evaluate(vmx), amd::caps::evaluate(svm)) {
        (Ok(c), _) => Ok(Caps::Vmx(c)),
        (_, Ok(c)) => Ok(Caps::Svm(c)),
        (Err(vmx), Err(svm)) => Err(Unavailable { vmx, svm }),
    }
}

const NONE: u8 = 0;
static ARCH: AtomicU8 = AtomicU8::new(NONE);

/// Detect and fix the backend for this boot (BSP, before any sandbox starts).
pub fn detect() -> Result<Caps, Unavailable> {
    let caps = choose(&intel::caps::read(), &amd::caps::read())?;
    ARCH.store(caps.arch() as u8 + 1, Ordering::SeqCst);
    Ok(caps)
}

/// The backend chosen by [`detect`].
pub fn arch() -> Arch {
    match ARCH.load(Ordering::Relaxed) {
        1 => Arch::Vmx,
        2 => Arch::Svm,
        _ => panic!("monitor backend used before detect()"),
    }
}

// Operations on the current exit. Only meaningful inside the exit handler on the exiting core (the VMX
// backend's VMCS is current there; the SVM backend's VMCB is this core's).

/// Resume after the instruction that caused this exit.
pub fn skip_instruction() {
    match arch() {
        // SAFETY: in the exit handler with this core's VMCS current.
        Arch::Vmx => unsafe { intel::vmcs::skip_instruction() },
        Arch::Svm => amd::vmcb::skip_instruction(),
    }
}

/// Move RIP on by `len` bytes (an instruction the monitor decoded and emulated).
pub fn advance_rip(len: u64) {
    match arch() {
        // SAFETY: in the exit handler with this core's VMCS current.
        Arch::Vmx => unsafe { intel::vmcs::advance_rip(len) },
        Arch::Svm => amd::vmcb::advance_rip(len),
    }
}

/// Resume the guest elsewhere: `rip`, `rsp`, `rflags`, nothing pending (the policy's component recovery).
pub fn redirect(rip: u64, rsp: u64, rflags: u64) {
    match arch() {
        // SAFETY: in the exit handler with this core's VMCS current.
        Arch::Vmx => unsafe { intel::vmcs::redirect(rip, rsp, rflags) },
        Arch::Svm => amd::vmcb::redirect(rip, rsp, rflags),
    }
}

/// Inject #UD at the next entry.
pub fn inject_ud() {
    match arch() {
        // SAFETY: in the exit handler with this core's VMCS current.
        Arch::Vmx => unsafe { intel::vmcs::inject_ud() },
        Arch::Svm => amd::vmcb::inject_exception(6, None),
    }
}

/// Inject #GP(0) at the next entry.
pub fn inject_gp() {
    match arch() {
        // SAFETY: in the exit handler with this core's VMCS current.
        Arch::Vmx => unsafe { intel::vmcs::inject_gp() },
        Arch::Svm => amd::vmcb::inject_exception(13, Some(0)),
    }
}

pub fn guest_cpl() -> u8 {
    match arch() {
        // SAFETY: in the exit handler with this core's VMCS current.
        Arch::Vmx => unsafe { intel::vmcs::guest_cpl() },
        Arch::Svm => amd::vmcb::guest_cpl(),
    }
}

pub fn guest_state() -> GuestState {
    match arch() {
        // SAFETY: in the exit handler with this core's VMCS current.
        Arch::Vmx => unsafe { intel::vmcs::guest_state() },
        Arch::Svm => amd::vmcb::guest_state(),
    }
}

/// Whether the saved guest state is evidently the monitor's own (its RIP inside the SVM run routine, which
/// no sandbox executes); VMX keeps host and guest state apart in the VMCS, so there it never is.
pub fn saved_state_is_monitors(rip: u64) -> bool {
    match arch() {
        Arch::Vmx => false,
        Arch::Svm => amd::vmcb::in_run_routine(rip),
    }
}

/// The backend's own name for a raw exit code (for reports of exits the policy has no kind for).
pub fn raw_exit_name(code: u64) -> &'static str {
    match arch() {
        Arch::Vmx => intel::vmcs::reason::name(code as u32),
        Arch::Svm => amd::vmcb::code::name(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmx_preferred_svm_otherwise() {
        let svm = amd::caps::RawCaps { ext_ecx: 1 << 2, vm_cr: 0, nasid: 16, features: 1 };
        let no_vmx = intel::caps::RawCaps::default();
        assert_eq!(choose(&no_vmx, &svm).map(|c| c.arch()), Ok(Arch::Svm));
        let none = choose(&no_vmx, &amd::caps::RawCaps::default()).unwrap_err();
        assert_eq!(none, Unavailable { vmx: intel::caps::Unavailable::NoVmx, svm: amd::caps::Unavailable::NoSvm });
        assert_eq!(Arch::Svm.stage2_format(), Format::Npt);
    }
}
