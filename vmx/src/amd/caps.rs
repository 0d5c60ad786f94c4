//! SVM capability decoding (AMD APM Vol. 2 §15.4, CPUID Fn8000_000A). The decoding is pure; `read()` gathers
//! the raw values on the running CPU.

use questv_arch::cpu;

/// VM_CR: bit 4 (SVMDIS) set means firmware disabled SVM.
pub const MSR_VM_CR: u32 = 0xC001_0114;
pub const MSR_VM_HSAVE_PA: u32 = 0xC001_0117;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawCaps {
    /// CPUID Fn8000_0001 ECX (bit 2: SVM).
    pub ext_ecx: u32,
    pub vm_cr: u64,
    /// CPUID Fn8000_000A EBX (number of ASIDs) and EDX (features).
    pub nasid: u32,
    pub features: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    NoSvm,
    DisabledByFirmware,
    NoNestedPaging,
    NoAsids,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvmCaps {
    pub nasid: u32,
    /// The CPU saves the next RIP on instruction intercepts (NRIPS); without it the monitor knows the lengths.
    pub next_rip_save: bool,
}

const FEATURE_NP: u32 = 1 << 0;
const FEATURE_NRIPS: u32 = 1 << 3;

pub fn evaluate(raw: &RawCaps) -> Result<SvmCaps, Unavailable> {
    if raw.ext_ecx & (1 << 2) == 0 {
        return Err(Unavailable::NoSvm);
    }
    if raw.vm_cr & (1 << 4) != 0 {
        return Err(Unavailable::DisabledByFirmware);
    }
    if raw.features & FEATURE_NP == 0 {
        return Err(Unavailable::NoNestedPaging);
    }
    // ASID 0 is the host's; a guest needs at least one more.
    if raw.nasid < 2 {
        return Err(Unavailable::NoAsids);
    }
    Ok(SvmCaps { nasid: raw.nasid, next_rip_save: raw.features & FEATURE_NRIPS != 0 })
}

/// Read the raw values on this CPU; VM_CR and leaf 0x8000000A only when CPUID reports SVM.
pub fn read() -> RawCaps {
    let max_ext = cpu::cpuid(0x8000_0000, 0).eax;
    let ext_ecx = if max_ext >= 0x8000_0001 { cpu::cpuid(0x8000_0001, 0).ecx } else { 0 };
    let mut raw = RawCaps { ext_ecx, ..RawCaps::default() };
    if ext_ecx & (1 << 2) != 0 {
        // SAFETY: VM_CR exists on every CPU that reports SVM.
        raw.vm_cr = unsafe { cpu::rdmsr(MSR_VM_CR) };
        if max_ext >= 0x8000_000A {
            let l = cpu::cpuid(0x8000_000A, 0);
            raw.nasid = l.ebx;
            raw.features = l.edx;
        }
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capable() -> RawCaps {
        RawCaps { ext_ecx: 1 << 2, vm_cr: 0, nasid: 16, features: FEATURE_NP }
    }

    #[test]
    fn accepts_qemu_tcg_svm() {
        // What QEMU 7.2 TCG reports for `-cpu qemu64,+svm,+npt`: NPT, 16 ASIDs, no NRIPS.
        assert_eq!(evaluate(&capable()), Ok(SvmCaps { nasid: 16, next_rip_save: false }));
    }

    #[test]
    fn refuses_each_missing_capability() {
        assert_eq!(evaluate(&RawCaps { ext_ecx: 0, ..capable() }), Err(Unavailable::NoSvm));
        assert_eq!(evaluate(&RawCaps { vm_cr: 1 << 4, ..capable() }), Err(Unavailable::DisabledByFirmware));
        assert_eq!(evaluate(&RawCaps { features: FEATURE_NRIPS, ..capable() }), Err(Unavailable::NoNestedPaging));
        assert_eq!(evaluate(&RawCaps { nasid: 1, ..capable() }), Err(Unavailable::NoAsids));
    }
}
