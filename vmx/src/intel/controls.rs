//! The VMX execution, exit and entry controls the monitor runs with (SDM §25.6–25.8): what it wants, adjusted
//! to what this CPU's capability MSRs allow, and checked — every wanted bit kept, no exit-causing bit forced on.

use super::VmxError;
use questv_arch::cpu;
use x86::msr::{
    IA32_VMX_BASIC, IA32_VMX_ENTRY_CTLS, IA32_VMX_EXIT_CTLS, IA32_VMX_MISC, IA32_VMX_PINBASED_CTLS, IA32_VMX_PROCBASED_CTLS,
    IA32_VMX_PROCBASED_CTLS2, IA32_VMX_TRUE_ENTRY_CTLS, IA32_VMX_TRUE_EXIT_CTLS, IA32_VMX_TRUE_PINBASED_CTLS,
    IA32_VMX_TRUE_PROCBASED_CTLS,
};

/// Adjust a control value to what the capability MSR allows (bits 0–31: must be 1; 32–63: may be 1).
pub fn adjust_value(cap: u64, want: u32) -> u32 {
    (want | cap as u32) & (cap >> 32) as u32
}

/// [`adjust_value`], then check: every wanted bit survived, and no bit in `exit_causing` was forced on.
pub fn check_control(control: &'static str, cap: u64, want: u32, exit_causing: u32) -> Result<u32, VmxError> {
    let got = adjust_value(cap, want);
    if got & want != want {
        return Err(VmxError::ControlRefused { control, wanted: want, got });
    }
    let forced = got & exit_causing & !want;
    if forced != 0 {
        return Err(VmxError::ControlForced { control, forced });
    }
    Ok(got)
}

fn adjust(control: &'static str, msr: u32, want: u32, exit_causing: u32) -> Result<u32, VmxError> {
    // SAFETY: only called after the capability check confirmed VMX (the MSRs exist).
    let cap = unsafe { cpu::rdmsr(msr) };
    check_control(control, cap, want, exit_causing)
}

/// Control bits (SDM §25.6, §25.7, §25.8).
pub mod ctl {
    pub const PIN_EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    pub const PIN_NMI_EXITING: u32 = 1 << 3;
    pub const PIN_VIRTUAL_NMIS: u32 = 1 << 5;
    pub const PIN_PREEMPTION_TIMER: u32 = 1 << 6;
    /// Interrupt/NMI window, HLT, INVLPG, MWAIT, RDPMC, RDTSC, CR3 load/store, CR8 load/store, MOV DR,
    /// unconditional I/O, monitor trap flag, MONITOR, PAUSE.
    pub const PROC_EXIT_CAUSING: u32 = (1 << 2) | (1 << 7) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12)
        | (1 << 15) | (1 << 16) | (1 << 19) | (1 << 20) | (1 << 22) | (1 << 23) | (1 << 24) | (1 << 27)
        | (1 << 29) | (1 << 30);
    pub const PROC_MWAIT_EXITING: u32 = 1 << 10;
    pub const PROC_MONITOR_EXITING: u32 = 1 << 29;
    pub const PROC_IO_BITMAPS: u32 = 1 << 25;
    pub const PROC_MSR_BITMAPS: u32 = 1 << 28;
    pub const PROC_SECONDARY: u32 = 1 << 31;
    pub const PROC2_EPT: u32 = 1 << 1;
    pub const PROC2_WBINVD_EXITING: u32 = 1 << 6;
    pub const PROC2_UNRESTRICTED: u32 = 1 << 7;
    /// Descriptor-table exiting, WBINVD exiting, PAUSE-loop exiting, RDRAND, RDSEED exiting.
    pub const PROC2_EXIT_CAUSING: u32 = (1 << 2) | (1 << 6) | (1 << 10) | (1 << 11) | (1 << 16);
    /// Save DR7 and IA32_DEBUGCTL into the VMCS at exit; the entry control loads them back: without the pair
    /// the CPU sets DR7 to 0x400 at every exit and the guest's breakpoints would vanish at its next exit.
    pub const EXIT_SAVE_DEBUG: u32 = 1 << 2;
    pub const EXIT_HOST_64BIT: u32 = 1 << 9;
    pub const EXIT_SAVE_PAT: u32 = 1 << 18;
    pub const EXIT_LOAD_PAT: u32 = 1 << 19;
    pub const EXIT_SAVE_EFER: u32 = 1 << 20;
    pub const EXIT_LOAD_EFER: u32 = 1 << 21;
    pub const ENTRY_LOAD_DEBUG: u32 = 1 << 2;
    pub const ENTRY_LOAD_PAT: u32 = 1 << 14;
    pub const ENTRY_LOAD_EFER: u32 = 1 << 15;
}

/// Exceptions that exit (exception bitmap): #DB and #AC, the two whose delivery can loop inside the CPU without
/// an exit (a data breakpoint on the #DB handler's stack, alignment checking on a misaligned stack); the
/// monitor reflects each into the guest and stops a sandbox that takes one endlessly in the same state.
pub const EXCEPTION_BITMAP: u32 = (1 << 1) | (1 << 17);

/// The control values in force (after adjustment), for the `RESULT vmcs` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Controls {
    pub pin: u32,
    pub proc: u32,
    pub proc2: u32,
    pub exit: u32,
    pub entry: u32,
}

/// Compute and check the controls on this CPU. `preemption_timer`: arm the VMX-preemption timer (watchdog).
pub fn controls(preemption_timer: bool) -> Result<Controls, VmxError> {
    use ctl::*;
    let (pin_msr, proc_msr, exit_msr, entry_msr) = control_msrs();
    let mut pin = PIN_NMI_EXITING | PIN_VIRTUAL_NMIS;
    if preemption_timer {
        pin |= PIN_PREEMPTION_TIMER;
    }
    Ok(Controls {
        pin: adjust("pin", pin_msr, pin, PIN_EXTERNAL_INTERRUPT_EXITING | PIN_PREEMPTION_TIMER)?,
        proc: adjust("proc", proc_msr, PROC_IO_BITMAPS | PROC_MSR_BITMAPS | PROC_SECONDARY | PROC_MWAIT_EXITING | PROC_MONITOR_EXITING, PROC_EXIT_CAUSING)?,
        proc2: adjust("proc2", IA32_VMX_PROCBASED_CTLS2, PROC2_EPT | PROC2_UNRESTRICTED | PROC2_WBINVD_EXITING, PROC2_EXIT_CAUSING)?,
        exit: adjust("exit", exit_msr, EXIT_SAVE_DEBUG | EXIT_HOST_64BIT | EXIT_SAVE_PAT | EXIT_LOAD_PAT | EXIT_SAVE_EFER | EXIT_LOAD_EFER, 0)?,
        entry: adjust("entry", entry_msr, ENTRY_LOAD_DEBUG | ENTRY_LOAD_PAT | ENTRY_LOAD_EFER, 0)?,
    })
}

/// Rate of the VMX-preemption timer: it counts down once every 2^rate TSC cycles (IA32_VMX_MISC[4:0]).
pub fn preemption_timer_rate() -> u32 {
    // SAFETY: VMX present (checked before the monitor starts).
    (unsafe { cpu::rdmsr(IA32_VMX_MISC) } & 0x1F) as u32
}

fn control_msrs() -> (u32, u32, u32, u32) {
    // SAFETY: VMX present (checked by the caller of enable()).
    let basic = unsafe { cpu::rdmsr(IA32_VMX_BASIC) };
    if basic & (1 << 55) != 0 {
        (IA32_VMX_TRUE_PINBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS, IA32_VMX_TRUE_EXIT_CTLS, IA32_VMX_TRUE_ENTRY_CTLS)
    } else {
        (IA32_VMX_PINBASED_CTLS, IA32_VMX_PROCBASED_CTLS, IA32_VMX_EXIT_CTLS, IA32_VMX_ENTRY_CTLS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_checked_after_adjustment() {
        // Allowed-1 in the high half, must-be-1 in the low half.
        let cap = (0xFFFF_FFFFu64 << 32) | 0x16;
        assert_eq!(check_control("pin", cap, 1 << 3, 1), Ok(0x16 | (1 << 3)));
        // A wanted bit the CPU does not allow.
        let no_nmi = (!(1u64 << 3) & 0xFFFF_FFFF) << 32;
        assert!(matches!(check_control("pin", no_nmi, 1 << 3, 0), Err(VmxError::ControlRefused { .. })));
        // An exit-causing bit forced to 1.
        let forced_hlt = (0xFFFF_FFFFu64 << 32) | (1 << 7);
        assert!(matches!(check_control("proc", forced_hlt, 1 << 28, ctl::PROC_EXIT_CAUSING), Err(VmxError::ControlForced { forced: 0x80, .. })));
    }
}
