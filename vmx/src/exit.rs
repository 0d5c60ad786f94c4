//! One vocabulary for VM exits, whichever hardware took them. A backend (`intel::vmcs`, `amd::vmcb`) decodes
//! its exit reason and qualification into an [`Exit`]; the monitor's policy sees only that. Exit accounting
//! (`RESULT vmexits`) is by [`ExitKind`], so the same names appear on VMX and SVM. The backends import only
//! this module: the policy's [`Verdict`] and the set-once slot through which they reach it ([`handle`]).
#![forbid(unsafe_code)]

use crate::guest::Paging;
use spin::Once;

pub type GuestRegs = questv_arch::regs::Gprs;

/// An I/O instruction exit, decoded (VMX: exit qualification; SVM: EXITINFO1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoExit {
    pub port: u16,
    /// Access width in bytes: 1, 2 or 4.
    pub size: u8,
    pub input: bool,
    /// INS/OUTS.
    pub string: bool,
}

/// What the guest did that brought the core back to the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Cpuid,
    /// VMCALL (Intel) or VMMCALL (AMD).
    Hypercall,
    Io(IoExit),
    Msr { write: bool },
    /// A non-maskable interrupt arrived while the guest ran (the monitor's own, or one the guest aimed at itself).
    Nmi,
    /// An exception the guest could not deliver to itself (VMX: exception-or-NMI exit for a non-NMI vector).
    Exception { info: u64 },
    /// A guest-physical access the second-stage table does not allow (EPT violation / misconfiguration, NPF).
    MemoryViolation { gpa: u64, write: bool, fetch: bool, detail: u64 },
    /// The monitor's own periodic exit (VMX-preemption timer).
    Timer,
    /// INIT or SIPI signal (cannot come from a sandbox when IPIs are filtered; ignored).
    InitSipi,
    Invd,
    /// A virtualization or otherwise forbidden instruction (VMX/SVM instructions, XSETBV, GETSEC, ...): #UD.
    Forbidden,
    /// Triple fault (VMX) or shutdown (SVM).
    Shutdown,
    /// The processor refused to enter the guest (VMX: VMRESUME failed; SVM: VMEXIT_INVALID).
    EntryFailed { detail: u64 },
    /// Anything else: the backend's raw code, reported by name when it stops the sandbox.
    Other { code: u64, detail: u64 },
}

/// The names exits are counted and reported by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Cpuid,
    Hypercall,
    Io,
    Rdmsr,
    Wrmsr,
    /// A trapped write to the local APIC page (xAPIC mode: the monitor checks and replays it).
    ApicWrite,
    Nmi,
    Exception,
    MemoryViolation,
    /// The watchdog's periodic exit (VMX-preemption timer, or the monitor's watchdog NMI on SVM).
    Watchdog,
    InitSipi,
    Invd,
    Forbidden,
    Shutdown,
    EntryFailed,
    Other,
}

impl ExitKind {
    pub const COUNT: usize = 16;
    pub const ALL: [ExitKind; ExitKind::COUNT] = [
        ExitKind::Cpuid,
        ExitKind::Hypercall,
        ExitKind::Io,
        ExitKind::Rdmsr,
        ExitKind::Wrmsr,
        ExitKind::ApicWrite,
        ExitKind::Nmi,
        ExitKind::Exception,
        ExitKind::MemoryViolation,
        ExitKind::Watchdog,
        ExitKind::InitSipi,
        ExitKind::Invd,
        ExitKind::Forbidden,
        ExitKind::Shutdown,
        ExitKind::EntryFailed,
        ExitKind::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ExitKind::Cpuid => "cpuid",
            ExitKind::Hypercall => "hypercall",
            ExitKind::Io => "io",
            ExitKind::Rdmsr => "rdmsr",
            ExitKind::Wrmsr => "wrmsr",
            ExitKind::ApicWrite => "apic_write",
            ExitKind::Nmi => "nmi",
            ExitKind::Exception => "exception",
            ExitKind::MemoryViolation => "memory_violation",
            ExitKind::Watchdog => "watchdog",
            ExitKind::InitSipi => "init_sipi",
            ExitKind::Invd => "invd",
            ExitKind::Forbidden => "forbidden_instruction",
            ExitKind::Shutdown => "shutdown",
            ExitKind::EntryFailed => "entry_failed",
            ExitKind::Other => "other",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl Exit {
    /// The kind this exit counts as (an APIC-page write is told apart by the policy, which knows the page).
    pub fn kind(&self) -> ExitKind {
        match self {
            Exit::Cpuid => ExitKind::Cpuid,
            Exit::Hypercall => ExitKind::Hypercall,
            Exit::Io(_) => ExitKind::Io,
            Exit::Msr { write: false } => ExitKind::Rdmsr,
            Exit::Msr { write: true } => ExitKind::Wrmsr,
            Exit::Nmi => ExitKind::Nmi,
            Exit::Exception { .. } => ExitKind::Exception,
            Exit::MemoryViolation { .. } => ExitKind::MemoryViolation,
            Exit::Timer => ExitKind::Watchdog,
            Exit::InitSipi => ExitKind::InitSipi,
            Exit::Invd => ExitKind::Invd,
            Exit::Forbidden => ExitKind::Forbidden,
            Exit::Shutdown => ExitKind::Shutdown,
            Exit::EntryFailed { .. } => ExitKind::EntryFailed,
            Exit::Other { .. } => ExitKind::Other,
        }
    }
}

/// What the policy decided about an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Resume the guest where it is.
    Resume,
    /// Stop this sandbox for good: the core parks.
    Park,
    /// Start the sandbox afresh from the launch state (its memory and second-stage table were rebuilt in place
    /// by the policy: same root, so the backend only flushes the translations and re-enters at the entry point).
    Relaunch,
}

/// The monitor's exit policy.
pub type ExitHandler = fn(&mut GuestRegs, Exit) -> Verdict;
static HANDLER: Once<ExitHandler> = Once::new();

/// Install the policy (once; later calls are ignored).
pub fn set_exit_handler(h: ExitHandler) {
    HANDLER.call_once(|| h);
}

/// Called by a backend's exit path with the decoded exit (no policy installed: park).
pub(crate) fn handle(regs: &mut GuestRegs, exit: Exit) -> Verdict {
    HANDLER.get().map_or(Verdict::Park, |policy| policy(regs, exit))
}

/// Guest registers the VMCS/VMCB holds (the GPRs are in [`GuestRegs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuestState {
    pub rip: u64,
    pub rsp: u64,
    pub paging: Paging,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_listed_once_in_index_order_with_distinct_names() {
        for (i, k) in ExitKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
        let mut names: alloc::vec::Vec<&str> = ExitKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ExitKind::COUNT);
    }
}
