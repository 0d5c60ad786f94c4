//! What a VM exit was (pure, host-tested): the basic exit reasons (SDM Appendix C) with their names, and the
//! exit qualification of an I/O instruction exit. Hand-written: the `x86` crate (0.52) has field encodings and
//! the VMX instructions but no exit-reason table.
#![forbid(unsafe_code)]

use crate::exit::IoExit;

pub const EXCEPTION_NMI: u32 = 0;
pub const TRIPLE_FAULT: u32 = 2;
pub const INIT: u32 = 3;
pub const SIPI: u32 = 4;
pub const CPUID: u32 = 10;
pub const GETSEC: u32 = 11;
pub const HLT: u32 = 12;
pub const INVD: u32 = 13;
pub const VMCALL: u32 = 18;
pub const VMCLEAR: u32 = 19;
pub const VMXOFF: u32 = 26;
pub const VMXON: u32 = 27;
pub const IO: u32 = 30;
pub const MWAIT: u32 = 36;
pub const MONITOR: u32 = 39;
pub const RDMSR: u32 = 31;
pub const WRMSR: u32 = 32;
pub const EPT_VIOLATION: u32 = 48;
pub const EPT_MISCONFIG: u32 = 49;
pub const INVEPT: u32 = 50;
pub const PREEMPTION_TIMER: u32 = 52;
pub const INVVPID: u32 = 53;
pub const WBINVD: u32 = 54;
pub const XSETBV: u32 = 55;

pub fn name(r: u32) -> &'static str {
    match r {
        0 => "exception_nmi",
        1 => "external_interrupt",
        2 => "triple_fault",
        3 => "init",
        4 => "sipi",
        7 => "interrupt_window",
        10 => "cpuid",
        11 => "getsec",
        12 => "hlt",
        13 => "invd",
        14 => "invlpg",
        16 => "rdtsc",
        18 => "vmcall",
        19..=27 => "vmx_instruction",
        28 => "cr_access",
        30 => "io",
        31 => "rdmsr",
        32 => "wrmsr",
        33 => "invalid_guest_state",
        36 => "mwait",
        39 => "monitor",
        48 => "ept_violation",
        49 => "ept_misconfig",
        50 | 53 => "vmx_instruction",
        52 => "preemption_timer",
        54 => "wbinvd",
        55 => "xsetbv",
        _ => "other",
    }
}

/// Decoded exit qualification of an I/O instruction exit (SDM Table 28-5).
pub fn decode_io_qualification(q: u64) -> IoExit {
    IoExit { port: (q >> 16) as u16, size: (q & 7) as u8 + 1, input: q & (1 << 3) != 0, string: q & (1 << 4) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_qualification() {
        // OUT dx, al to 0xCF9; IN eax, dx from 0xCFC; REP INSW from 0x1F0.
        assert_eq!(decode_io_qualification(0xCF9 << 16), IoExit { port: 0xCF9, size: 1, input: false, string: false });
        assert_eq!(decode_io_qualification((0xCFC << 16) | 8 | 3), IoExit { port: 0xCFC, size: 4, input: true, string: false });
        assert_eq!(decode_io_qualification((0x1F0 << 16) | 0x38 | 1), IoExit { port: 0x1F0, size: 2, input: true, string: true });
    }
}
