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
    /// An intercepted exception (VMX: exception bitmap; SVM: exception intercepts): #DB and #AC, which the
    /// monitor reflects into the guest. `error_code` as the CPU would push it; `detail`: VMX exit qualification
    /// (for #DB the DR6 bits the CPU did not write), SVM EXITINFO2.
    Exception { vector: u8, error_code: Option<u32>, detail: u64 },
    /// A guest-physical access the second-stage table does not allow (EPT violation / misconfiguration, NPF).
    MemoryViolation { gpa: u64, write: bool, fetch: bool, detail: u64 },
    /// The monitor's own periodic exit (VMX-preemption timer).
    Timer,
    /// INIT or SIPI signal (cannot come from a sandbox when IPIs are filtered; ignored).
    InitSipi,
    Invd,
    /// WBINVD (VMX: WBINVD exiting; SVM: WBINVD intercept).
    Wbinvd,
    /// MONITOR or MWAIT (VMX: MONITOR/MWAIT exiting; SVM: their intercepts).
    MonitorMwait,
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
    Wbinvd,
    MonitorMwait,
    Forbidden,
    Shutdown,
    EntryFailed,
    Other,
}

impl ExitKind {
    pub const COUNT: usize = 18;
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
        ExitKind::Wbinvd,
        ExitKind::MonitorMwait,
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
            ExitKind::Wbinvd => "wbinvd",
            ExitKind::MonitorMwait => "monitor_mwait",
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
            Exit::Wbinvd => ExitKind::Wbinvd,
            Exit::MonitorMwait => ExitKind::MonitorMwait,
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

/// How an event was being delivered when an exit interrupted it (VMX IDT-vectoring information, SVM
/// EXITINTINFO), in the VMX numbering of types (SVM has 0, 2, 3 and 4 of them, with the same meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    External,
    Nmi,
    HardwareException,
    /// INT n.
    SoftwareInterrupt,
    /// INT1 (ICEBP), VMX only.
    PrivilegedSoftwareException,
    /// INT3, INTO, VMX only.
    SoftwareException,
}

/// An event whose delivery a VM exit interrupted: the CPU did not deliver it, so unless the monitor
/// re-injects it at the next entry it is lost (an interrupt never serviced, an exception never raised).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingEvent {
    pub vector: u8,
    pub kind: EventType,
    pub error_code: Option<u32>,
}

const EVENT_VALID: u64 = 1 << 31;
const EVENT_HAS_ERROR: u64 = 1 << 11;

fn event_type(t: u64) -> Option<EventType> {
    Some(match t {
        0 => EventType::External,
        2 => EventType::Nmi,
        3 => EventType::HardwareException,
        4 => EventType::SoftwareInterrupt,
        5 => EventType::PrivilegedSoftwareException,
        6 => EventType::SoftwareException,
        _ => return None,
    })
}

fn type_code(k: EventType) -> u64 {
    match k {
        EventType::External => 0,
        EventType::Nmi => 2,
        EventType::HardwareException => 3,
        EventType::SoftwareInterrupt => 4,
        EventType::PrivilegedSoftwareException => 5,
        EventType::SoftwareException => 6,
    }
}

/// VMX IDT-vectoring information (SDM §24.9.3) and its error-code field: the interrupted event, if any.
pub fn decode_vmx_vectoring(info: u32, error_code: u32) -> Option<PendingEvent> {
    let info = u64::from(info);
    if info & EVENT_VALID == 0 {
        return None;
    }
    let kind = event_type((info >> 8) & 7)?;
    Some(PendingEvent { vector: info as u8, kind, error_code: (info & EVENT_HAS_ERROR != 0).then_some(error_code) })
}

/// The VM-entry interruption-information value (SDM §24.8.3) that delivers `ev` again, and whether the entry
/// also needs the instruction length (software interrupts and exceptions push the address after the
/// instruction). Bit 12 (undefined in the vectoring field) and bits 13–30 are reserved here: left clear.
pub fn vmx_entry_info(ev: PendingEvent) -> (u32, bool) {
    let mut v = EVENT_VALID | (type_code(ev.kind) << 8) | u64::from(ev.vector);
    if ev.error_code.is_some() {
        v |= EVENT_HAS_ERROR;
    }
    let needs_len = matches!(ev.kind, EventType::SoftwareInterrupt | EventType::PrivilegedSoftwareException | EventType::SoftwareException);
    (v as u32, needs_len)
}

/// SVM EXITINTINFO (APM Vol. 2 §15.7.2: vector 0–7, type 8–10, error code valid 11, valid 31, error code
/// 32–63): the interrupted event, if any.
pub fn decode_svm_exitintinfo(v: u64) -> Option<PendingEvent> {
    if v & EVENT_VALID == 0 {
        return None;
    }
    let kind = match (v >> 8) & 7 {
        t @ (0 | 2 | 3 | 4) => event_type(t)?,
        _ => return None,
    };
    Some(PendingEvent { vector: v as u8, kind, error_code: (v & EVENT_HAS_ERROR != 0).then_some((v >> 32) as u32) })
}

/// The EVENTINJ value that delivers `ev` again. None for INT n: without next-RIP saving the monitor does not
/// know the instruction's length, and the guest's RIP still points at it, so the instruction runs again
/// instead (as an interrupted INT n does on hardware that re-executes it).
pub fn svm_eventinj(ev: PendingEvent) -> Option<u64> {
    if !matches!(ev.kind, EventType::External | EventType::Nmi | EventType::HardwareException) {
        return None;
    }
    let mut v = EVENT_VALID | (type_code(ev.kind) << 8) | u64::from(ev.vector);
    if let Some(e) = ev.error_code {
        v |= EVENT_HAS_ERROR | (u64::from(e) << 32);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmx_vectoring_information_is_re_injected_as_it_was() {
        assert_eq!(decode_vmx_vectoring(0x20, 0), None, "not valid");
        // A timer interrupt (vector 0x20, external) cut off by an EPT violation on the guest's stack.
        let ext = decode_vmx_vectoring(0x8000_0020, 0xdead).unwrap();
        assert_eq!(ext, PendingEvent { vector: 0x20, kind: EventType::External, error_code: None });
        assert_eq!(vmx_entry_info(ext), (0x8000_0020, false));
        // #PF with its error code; bit 12 (undefined in the vectoring field) is dropped.
        let pf = decode_vmx_vectoring(0x8000_1B0E, 2).unwrap();
        assert_eq!(pf, PendingEvent { vector: 14, kind: EventType::HardwareException, error_code: Some(2) });
        assert_eq!(vmx_entry_info(pf), (0x8000_0B0E, false));
        // INT 0x80 needs the instruction length at entry; an NMI does not.
        let int = decode_vmx_vectoring(0x8000_0480, 0).unwrap();
        assert_eq!(vmx_entry_info(int), (0x8000_0480, true));
        assert_eq!(vmx_entry_info(decode_vmx_vectoring(0x8000_0202, 0).unwrap()), (0x8000_0202, false));
        assert_eq!(decode_vmx_vectoring(0x8000_0720, 0), None, "type 7 (other event) is not re-injected");
    }

    #[test]
    fn svm_exitintinfo_is_re_injected_except_int_n() {
        assert_eq!(decode_svm_exitintinfo(0x20), None);
        let ext = decode_svm_exitintinfo(0x8000_0030).unwrap();
        assert_eq!(ext, PendingEvent { vector: 0x30, kind: EventType::External, error_code: None });
        assert_eq!(svm_eventinj(ext), Some(0x8000_0030));
        // #GP(0x18): the error code travels in the high half.
        let gp = decode_svm_exitintinfo((0x18 << 32) | 0x8000_0B0D).unwrap();
        assert_eq!(gp.error_code, Some(0x18));
        assert_eq!(svm_eventinj(gp), Some((0x18 << 32) | 0x8000_0B0D));
        // INT n runs again instead (its RIP still points at the instruction).
        assert_eq!(svm_eventinj(decode_svm_exitintinfo(0x8000_0480).unwrap()), None);
        assert_eq!(decode_svm_exitintinfo(0x8000_0580), None, "types 5-7 are reserved on SVM");
    }

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
