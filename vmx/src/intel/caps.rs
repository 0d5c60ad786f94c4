//! VMX capability decoding (Intel SDM Vol. 3 Appendix A). The decoding is pure; `read()` gathers the raw values
//! on the running CPU.

use questv_arch::cpu;

use x86::msr::{IA32_FEATURE_CONTROL, IA32_VMX_BASIC, IA32_VMX_EPT_VPID_CAP, IA32_VMX_PROCBASED_CTLS, IA32_VMX_PROCBASED_CTLS2};

/// What the VT build tells a user whose CPU (or emulator) cannot run it.
pub const NEEDS_VMX_MESSAGE: &str = "VT mode needs VMX with EPT; use --emulator bochs";

#[derive(Debug, Clone, Copy, Default)]
pub struct RawCaps {
    pub cpuid1_ecx: u32,
    pub feature_control: u64,
    pub vmx_basic: u64,
    pub procbased_ctls: u64,
    pub procbased_ctls2: u64,
    pub ept_vpid_cap: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    NoVmx,
    DisabledByFirmware,
    NoSecondaryControls,
    NoEpt,
    NoUnrestrictedGuest,
    NoWriteBackEpt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmxCaps {
    pub vmcs_revision: u32,
    pub vpid: bool,
    pub ept_2mb_pages: bool,
}

const PROCBASED_ACTIVATE_SECONDARY: u64 = 1 << 31;
const SECONDARY_EPT: u64 = 1 << 1;
const SECONDARY_VPID: u64 = 1 << 5;
const SECONDARY_UNRESTRICTED: u64 = 1 << 7;
const EPT_CAP_WB: u64 = 1 << 14;
const EPT_CAP_2MB: u64 = 1 << 16;

/// Decide whether the CPU described by `raw` can run the monitor. Control MSRs report allowed-1 settings in
/// their high 32 bits.
pub fn evaluate(raw: &RawCaps) -> Result<VmxCaps, Unavailable> {
    if raw.cpuid1_ecx & (1 << 5) == 0 {
        return Err(Unavailable::NoVmx);
    }
    // Locked (bit 0) with VMXON-outside-SMX (bit 2) clear: firmware disabled VMX until reset.
    if raw.feature_control & 1 != 0 && raw.feature_control & (1 << 2) == 0 {
        return Err(Unavailable::DisabledByFirmware);
    }
    if (raw.procbased_ctls >> 32) & PROCBASED_ACTIVATE_SECONDARY == 0 {
        return Err(Unavailable::NoSecondaryControls);
    }
    let allowed2 = raw.procbased_ctls2 >> 32;
    if allowed2 & SECONDARY_EPT == 0 {
        return Err(Unavailable::NoEpt);
    }
    if allowed2 & SECONDARY_UNRESTRICTED == 0 {
        return Err(Unavailable::NoUnrestrictedGuest);
    }
    if raw.ept_vpid_cap & EPT_CAP_WB == 0 {
        return Err(Unavailable::NoWriteBackEpt);
    }
    Ok(VmxCaps {
        vmcs_revision: (raw.vmx_basic & 0x7FFF_FFFF) as u32,
        vpid: allowed2 & SECONDARY_VPID != 0,
        ept_2mb_pages: raw.ept_vpid_cap & EPT_CAP_2MB != 0,
    })
}

/// Read the raw capability values on the running CPU. The VMX MSRs are read only when CPUID reports VMX
/// (reading them otherwise raises #GP).
pub fn read() -> RawCaps {
    let mut raw = RawCaps { cpuid1_ecx: cpu::cpuid(1, 0).ecx, ..RawCaps::default() };
    if raw.cpuid1_ecx & (1 << 5) != 0 {
        // SAFETY: CPUID.1:ECX.VMX is set, so IA32_FEATURE_CONTROL and the IA32_VMX_* MSRs exist. The secondary
        // and EPT MSRs exist only when the corresponding allowed-1 bits are set, which we check first.
        unsafe {
            raw.feature_control = cpu::rdmsr(IA32_FEATURE_CONTROL);
            raw.vmx_basic = cpu::rdmsr(IA32_VMX_BASIC);
            raw.procbased_ctls = cpu::rdmsr(IA32_VMX_PROCBASED_CTLS);
            if (raw.procbased_ctls >> 32) & PROCBASED_ACTIVATE_SECONDARY != 0 {
                raw.procbased_ctls2 = cpu::rdmsr(IA32_VMX_PROCBASED_CTLS2);
                if (raw.procbased_ctls2 >> 32) & (SECONDARY_EPT | SECONDARY_VPID) != 0 {
                    raw.ept_vpid_cap = cpu::rdmsr(IA32_VMX_EPT_VPID_CAP);
                }
            }
        }
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capable() -> RawCaps {
        RawCaps {
            cpuid1_ecx: 1 << 5,
            feature_control: 0b101,
            vmx_basic: 0x00DA_0400_0000_0004,
            procbased_ctls: PROCBASED_ACTIVATE_SECONDARY << 32,
            procbased_ctls2: (SECONDARY_EPT | SECONDARY_UNRESTRICTED | SECONDARY_VPID) << 32,
            ept_vpid_cap: EPT_CAP_WB | EPT_CAP_2MB,
        }
    }

    #[test]
    fn accepts_a_capable_cpu() {
        let caps = evaluate(&capable()).unwrap();
        assert_eq!(caps.vmcs_revision, 4);
        assert!(caps.vpid && caps.ept_2mb_pages);
    }

    #[test]
    fn refuses_each_missing_capability() {
        let mut r = capable();
        r.cpuid1_ecx = 0;
        assert_eq!(evaluate(&r), Err(Unavailable::NoVmx));
        let mut r = capable();
        r.feature_control = 0b001;
        assert_eq!(evaluate(&r), Err(Unavailable::DisabledByFirmware));
        let mut r = capable();
        r.procbased_ctls = 0;
        assert_eq!(evaluate(&r), Err(Unavailable::NoSecondaryControls));
        let mut r = capable();
        r.procbased_ctls2 = SECONDARY_UNRESTRICTED << 32;
        assert_eq!(evaluate(&r), Err(Unavailable::NoEpt));
        let mut r = capable();
        r.procbased_ctls2 = SECONDARY_EPT << 32;
        assert_eq!(evaluate(&r), Err(Unavailable::NoUnrestrictedGuest));
        let mut r = capable();
        r.ept_vpid_cap = EPT_CAP_2MB;
        assert_eq!(evaluate(&r), Err(Unavailable::NoWriteBackEpt));
    }

    #[test]
    fn allowed0_bits_do_not_count_as_support() {
        let mut r = capable();
        // Bit set only in the low (allowed-0) half: the control may be 0, not that it may be 1.
        r.procbased_ctls2 = SECONDARY_EPT | SECONDARY_UNRESTRICTED;
        assert_eq!(evaluate(&r), Err(Unavailable::NoEpt));
    }
}
