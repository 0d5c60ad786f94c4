//! SVM on one core (AMD APM Vol. 2 ch. 15): EFER.SVME and the host save area, a VMCB for a sandbox that starts
//! like a freshly booted multiboot2 kernel (32-bit protected mode, paging off, nested paging on), and the run
//! loop: VMRUN, decode the #VMEXIT into a neutral [`Exit`], let the policy handle it, resume.
//!
//! What is intercepted (the same set as the VMX backend's, docs/vt.md): CPUID, VMMCALL (hypercalls), nested
//! page faults, shutdown (triple fault), INIT, NMI, INVD, WBINVD, MONITOR, MWAIT, XSETBV, #DB and #AC (reflected),
//! every SVM instruction, every port without a grant (I/O permission map), every MSR off the allow list (MSR
//! permission map). Not intercepted: physical interrupts (V_INTR_MASKING off: they go straight through the
//! guest's IDT), HLT, CR accesses, RDTSC, INVLPG. An event whose delivery an exit interrupted (EXITINTINFO) is
//! delivered again at the next VMRUN unless the policy injects one.
//!
//! Differences from VMX the run loop absorbs: VMRUN saves and restores only RAX/RSP/RIP/RFLAGS and the control
//! registers, so the loop loads and stores the other guest GPRs itself and uses VMLOAD/VMSAVE for FS, GS, TR,
//! LDTR and the SYSCALL MSRs (the host's are VMSAVEd once and VMLOADed after every exit: the host's per-CPU
//! GS base lives there); GIF is 0 after every exit, so the loop sets it (STGI) once the guest state is saved,
//! which lets a pending NMI reach the host's handler; without NRIPS (QEMU TCG) the monitor advances RIP by the
//! known instruction lengths (CPUID, RDMSR/WRMSR, INVD, WBINVD 2 bytes, VMMCALL, MONITOR, MWAIT 3; IN/OUT from
//! EXITINFO2).

use super::caps::{SvmCaps, MSR_VM_HSAVE_PA};
use crate::exit::GuestState;
use crate::exit::{Exit, IoExit};
use crate::guest::Paging;
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use questv_arch::paging::phys_to_virt;
use questv_arch::{cpu, lapic, percpu};

/// VMCB offsets (APM Vol. 2 Appendix B).
pub mod off {
    pub const INTERCEPT_EXCEPTIONS: u64 = 0x008;
    pub const INTERCEPT_MISC1: u64 = 0x00C;
    pub const INTERCEPT_MISC2: u64 = 0x010;
    pub const IOPM_BASE: u64 = 0x040;
    pub const MSRPM_BASE: u64 = 0x048;
    pub const ASID: u64 = 0x058;
    pub const TLB_CONTROL: u64 = 0x05C;
    pub const INT_CTL: u64 = 0x060;
    pub const EXIT_CODE: u64 = 0x070;
    pub const EXIT_INFO1: u64 = 0x078;
    pub const EXIT_INFO2: u64 = 0x080;
    pub const NP_ENABLE: u64 = 0x090;
    pub const EXIT_INT_INFO: u64 = 0x088;
    pub const EVENT_INJ: u64 = 0x0A8;
    pub const N_CR3: u64 = 0x0B0;
    pub const NEXT_RIP: u64 = 0x0C8;
    /// Bit 0: the guest is in an interrupt shadow (after STI / MOV SS).
    pub const INT_SHADOW: u64 = 0x068;
    pub const ES: u64 = 0x400;
    pub const CS: u64 = 0x410;
    pub const SS: u64 = 0x420;
    pub const DS: u64 = 0x430;
    pub const FS: u64 = 0x440;
    pub const GS: u64 = 0x450;
    pub const GDTR: u64 = 0x460;
    pub const LDTR: u64 = 0x470;
    pub const IDTR: u64 = 0x480;
    pub const TR: u64 = 0x490;
    pub const CPL: u64 = 0x4CB;
    pub const EFER: u64 = 0x4D0;
    pub const CR4: u64 = 0x548;
    pub const CR3: u64 = 0x550;
    pub const CR0: u64 = 0x558;
    pub const DR7: u64 = 0x560;
    pub const DR6: u64 = 0x568;
    pub const RFLAGS: u64 = 0x570;
    pub const RIP: u64 = 0x578;
    pub const RSP: u64 = 0x5D8;
    pub const RAX: u64 = 0x5F8;
    /// STAR, LSTAR, CSTAR, SFMASK, KernelGsBase, SYSENTER_CS/ESP/EIP: eight u64 from here (VMLOAD/VMSAVE state).
    pub const STAR: u64 = 0x600;
    pub const CR2: u64 = 0x640;
    pub const G_PAT: u64 = 0x668;
}

/// Intercept bits (APM Vol. 2 §15.9–15.14, Table B-1).
pub mod intercept {
    pub const NMI: u32 = 1 << 1;
    pub const INIT: u32 = 1 << 3;
    pub const CPUID: u32 = 1 << 18;
    pub const INVD: u32 = 1 << 22;
    pub const INVLPGA: u32 = 1 << 26;
    pub const IOIO_PROT: u32 = 1 << 27;
    pub const MSR_PROT: u32 = 1 << 28;
    pub const SHUTDOWN: u32 = 1 << 31;
    /// The monitor's choice for word 3 (offset 0x0C).
    pub const MISC1: u32 = NMI | INIT | CPUID | INVD | INVLPGA | IOIO_PROT | MSR_PROT | SHUTDOWN;
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const WBINVD: u32 = 1 << 9;
    pub const MONITOR: u32 = 1 << 10;
    pub const MWAIT: u32 = 1 << 11;
    pub const MWAIT_ARMED: u32 = 1 << 12;
    pub const XSETBV: u32 = 1 << 13;
    /// Word 4 (offset 0x10): every SVM instruction (VMRUN must be intercepted for VMRUN to succeed at all), the
    /// cache flush and the monitor/wait instructions.
    pub const MISC2: u32 = VMRUN | VMMCALL | VMLOAD | VMSAVE | STGI | CLGI | SKINIT | WBINVD | MONITOR | MWAIT | MWAIT_ARMED | XSETBV;
    /// Exception intercepts (offset 0x08, one bit per vector): #DB and #AC, reflected (see the VMX backend's
    /// exception bitmap for why these two).
    pub const EXCEPTIONS: u32 = (1 << 1) | (1 << 17);
}

/// Exit codes (APM Vol. 2 Appendix C).
pub mod code {
    pub const EXCEPTION_BASE: u64 = 0x40;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const INIT: u64 = 0x63;
    pub const CPUID: u64 = 0x72;
    pub const INVD: u64 = 0x76;
    pub const HLT: u64 = 0x78;
    pub const INVLPGA: u64 = 0x7A;
    pub const IOIO: u64 = 0x7B;
    pub const MSR: u64 = 0x7C;
    pub const SHUTDOWN: u64 = 0x7F;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const SKINIT: u64 = 0x86;
    pub const WBINVD: u64 = 0x89;
    pub const MONITOR: u64 = 0x8A;
    pub const MWAIT: u64 = 0x8B;
    pub const MWAIT_ARMED: u64 = 0x8C;
    pub const XSETBV: u64 = 0x8D;
    pub const NPF: u64 = 0x400;
    /// VMRUN refused the guest state.
    pub const INVALID: u64 = u64::MAX;

    pub fn name(c: u64) -> &'static str {
        match c {
            0x00..=0x1F => "cr_access",
            0x20..=0x3F => "dr_access",
            0x40..=0x5F => "exception",
            INTR => "intr",
            NMI => "nmi",
            INIT => "init",
            CPUID => "cpuid",
            INVD => "invd",
            HLT => "hlt",
            IOIO => "ioio",
            MSR => "msr",
            SHUTDOWN => "shutdown",
            VMRUN..=SKINIT | INVLPGA | XSETBV => "svm_instruction",
            WBINVD => "wbinvd",
            MONITOR..=MWAIT_ARMED => "monitor_mwait",
            NPF => "npf",
            INVALID => "invalid",
            _ => "other",
        }
    }
}

/// Segment attributes in the VMCB's packed 12-bit form (descriptor bits 40–47 and 52–55).
const ATTR_CODE32: u16 = 0xC9B;
const ATTR_DATA32: u16 = 0xC93;
const ATTR_TSS32_BUSY: u16 = 0x08B;
/// Real mode: 16-bit code and data, and the 16-bit busy TSS a reset leaves in TR.
const ATTR_CODE16: u16 = 0x09B;
const ATTR_DATA16: u16 = 0x093;
const ATTR_TSS16_BUSY: u16 = 0x083;
const EFER_SVME: u64 = 1 << 12;

/// Everything needed to start one sandbox on this core.
#[derive(Clone, Copy, Debug)]
pub struct LaunchConfig {
    /// The guest's VMCB (4 KiB), the host save area VMRUN uses (VM_HSAVE_PA, 4 KiB), and a VMCB-format page
    /// for the host's VMSAVE state (FS/GS/TR/LDTR, SYSCALL MSRs).
    pub vmcb: u64,
    pub host_save_area: u64,
    pub host_state: u64,
    /// MSR permission map (8 KiB) and I/O permission map (12 KiB), shared read-only by every core.
    pub msrpm: u64,
    pub iopm: u64,
    /// Nested page table root.
    pub ncr3: u64,
    /// Guest-physical entry point (32-bit protected mode, paging off).
    pub entry: u32,
    pub rax: u32,
    pub rbx: u32,
    /// Start instead as an application processor after a start-up IPI: real mode at the core's start-up
    /// vector (`crate::backend::start_vector`).
    pub sipi: bool,
    pub asid: u32,
    pub caps: SvmCaps,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvmError {
    /// VMRUN refused the VMCB at the first entry (EXITCODE = VMEXIT_INVALID).
    LaunchFailed,
}

/// Per-core: the current VMCB, where RIP goes when the current exit's instruction is skipped, and whether
/// the CPU saves next RIP itself.
static VMCBS: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
static NEXT_RIP: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
static NRIPS: AtomicBool = AtomicBool::new(false);
/// Per core: the policy moved the guest elsewhere in this exit ([`redirect`]): an event it was delivering
/// belongs to the abandoned context and is not delivered again.
static REDIRECTED: [AtomicBool; percpu::MAX_CPUS] = [const { AtomicBool::new(false) }; percpu::MAX_CPUS];

fn vmcb() -> u64 {
    VMCBS[percpu::cpu_index() as usize].load(Ordering::Relaxed)
}

// SAFETY (all accessors below): `base` is the physical address of this core's VMCB (a monitor page, reached
// through the kernel's mapping of physical memory), or of a page being set up; offsets are within the page.
fn rd64(base: u64, o: u64) -> u64 {
    // SAFETY: see above.
    unsafe { core::ptr::read_volatile((phys_to_virt(base) + o) as *const u64) }
}
fn wr64(base: u64, o: u64, v: u64) {
    // SAFETY: see above.
    unsafe { core::ptr::write_volatile((phys_to_virt(base) + o) as *mut u64, v) }
}
fn wr32(base: u64, o: u64, v: u32) {
    // SAFETY: see above.
    unsafe { core::ptr::write_volatile((phys_to_virt(base) + o) as *mut u32, v) }
}
fn wr8(base: u64, o: u64, v: u8) {
    // SAFETY: see above.
    unsafe { core::ptr::write_volatile((phys_to_virt(base) + o) as *mut u8, v) }
}
fn rd8(base: u64, o: u64) -> u8 {
    // SAFETY: see above.
    unsafe { core::ptr::read_volatile((phys_to_virt(base) + o) as *const u8) }
}

fn set_segment(base: u64, seg: u64, selector: u16, attrib: u16, limit: u32, seg_base: u64) {
    // SAFETY: see above: the segment record (selector, attrib, limit, base) lies at seg..seg+16.
    let base = phys_to_virt(base);
    unsafe {
        core::ptr::write_volatile((base + seg) as *mut u16, selector);
        core::ptr::write_volatile((base + seg + 2) as *mut u16, attrib);
        core::ptr::write_volatile((base + seg + 4) as *mut u32, limit);
        core::ptr::write_volatile((base + seg + 8) as *mut u64, seg_base);
    }
}

/// Turn SVM on for this core.
///
/// # Safety
/// `host_save_area` is a zeroed, 4 KiB-aligned monitor page owned by this core for as long as SVM is on; SVM
/// support was checked (caps::evaluate).
pub unsafe fn enable(host_save_area: u64) {
    // SAFETY: the caller's contract; EFER.SVME may be set when CPUID reports SVM and VM_CR.SVMDIS is clear.
    unsafe {
        cpu::wrmsr(cpu::MSR_EFER, cpu::rdmsr(cpu::MSR_EFER) | EFER_SVME);
        cpu::wrmsr(MSR_VM_HSAVE_PA, host_save_area);
    }
}

fn setup(c: &LaunchConfig) {
    let v = c.vmcb;
    // Controls.
    wr32(v, off::INTERCEPT_EXCEPTIONS, intercept::EXCEPTIONS);
    wr32(v, off::INTERCEPT_MISC1, intercept::MISC1);
    wr32(v, off::INTERCEPT_MISC2, intercept::MISC2);
    wr64(v, off::IOPM_BASE, c.iopm);
    wr64(v, off::MSRPM_BASE, c.msrpm);
    wr32(v, off::ASID, c.asid);
    wr8(v, off::TLB_CONTROL, 1); // flush this ASID's translations at the first entry
    wr64(v, off::INT_CTL, 0); // no V_INTR_MASKING: physical interrupts go to the guest's IDT
    wr64(v, off::NP_ENABLE, 1);
    wr64(v, off::N_CR3, c.ncr3);
    wr64(v, off::EVENT_INJ, 0);
    // Guest state: as GRUB leaves a multiboot2 kernel — flat 32-bit protected mode, paging off. EFER.SVME must
    // be set in the guest (VMRUN checks it; VMMCALL is #UD without it).
    set_segment(v, off::CS, 0x08, ATTR_CODE32, 0xFFFF_FFFF, 0);
    for seg in [off::ES, off::SS, off::DS, off::FS, off::GS] {
        set_segment(v, seg, 0x10, ATTR_DATA32, 0xFFFF_FFFF, 0);
    }
    set_segment(v, off::GDTR, 0, 0, 0xFFFF, 0);
    set_segment(v, off::IDTR, 0, 0, 0, 0);
    set_segment(v, off::LDTR, 0, 0, 0, 0);
    set_segment(v, off::TR, 0, ATTR_TSS32_BUSY, 0x67, 0);
    wr8(v, off::CPL, 0);
    wr64(v, off::EFER, EFER_SVME);
    wr64(v, off::CR0, 0x31); // PE | ET | NE
    wr64(v, off::RIP, u64::from(c.entry));
    if c.sipi {
        // As a start-up IPI leaves an application processor (SDM §9.4.4, APM §16.7): real mode at
        // VECTOR:0000, data segments at 0 with 64 KiB limits, caches on.
        let vector = crate::backend::start_vector();
        set_segment(v, off::CS, u16::from(vector) << 8, ATTR_CODE16, 0xFFFF, u64::from(vector) << 12);
        for seg in [off::ES, off::SS, off::DS, off::FS, off::GS] {
            set_segment(v, seg, 0, ATTR_DATA16, 0xFFFF, 0);
        }
        set_segment(v, off::TR, 0, ATTR_TSS16_BUSY, 0xFFFF, 0);
        set_segment(v, off::IDTR, 0, 0, 0xFFFF, 0); // the real-mode vector table's limit
        wr64(v, off::CR0, 0x30); // ET | NE
        wr64(v, off::RIP, 0);
    }
    wr64(v, off::CR3, 0);
    wr64(v, off::CR4, 0);
    wr64(v, off::DR6, 0xFFFF_0FF0);
    wr64(v, off::DR7, 0x400);
    wr64(v, off::RFLAGS, 0x2);
    wr64(v, off::RSP, 0);
    wr64(v, off::RAX, u64::from(c.rax));
    // The SYSCALL/SYSENTER MSRs and KernelGsBase (loaded by VMLOAD at every entry) and CR2: zero, as at power-on,
    // so a relaunched sandbox does not start with its previous incarnation's values.
    for i in 0..8 {
        wr64(v, off::STAR + 8 * i, 0);
    }
    wr64(v, off::CR2, 0);
    wr64(v, off::G_PAT, 0x0007_0406_0007_0406); // the power-on default
}

// The guest's FXSAVE image between exits (the monitor's Rust code uses SSE).
use questv_arch::regs::FxArea;

extern "C" {
    /// Load the guest's GPRs and FPU state, VMLOAD + VMRUN its VMCB, and on #VMEXIT store them back and
    /// VMLOAD the host's state. Returns with GIF = 0.
    fn questv_svm_run(regs: *mut GuestRegs, vmcb: u64, host_state: u64, fx: *mut FxArea);
    /// The end of `questv_svm_run`'s code (a label, never called).
    static questv_svm_run_end: u8;
}

/// Whether `rip` lies in the monitor's VMRUN routine. A sandbox never runs it (it is monitor code, and its
/// CLGI/VMLOAD/VMRUN would exit as forbidden instructions before any later instruction ran), so a saved guest
/// RIP there means the "guest" state is the monitor's own — an emulator fault, not the sandbox's (docs/vt.md).
pub fn in_run_routine(rip: u64) -> bool {
    let start = questv_svm_run as *const () as u64;
    let end = core::ptr::addr_of!(questv_svm_run_end) as u64;
    (start..end).contains(&rip)
}

pub type GuestRegs = questv_arch::regs::Gprs;

/// Set up the VMCB and run the guest until the policy stops it. Returns only if the first VMRUN fails.
///
/// # Safety
/// SVM enabled on this core ([`enable`]); all addresses in `c` are physical addresses of owned monitor pages (RAM, so mapped);
/// interrupts are off and stay off in the host from now on.
pub unsafe fn launch(c: &LaunchConfig) -> SvmError {
    setup(c);
    let cpu_index = percpu::cpu_index() as usize;
    VMCBS[cpu_index].store(c.vmcb, Ordering::SeqCst);
    NRIPS.store(c.caps.next_rip_save, Ordering::Relaxed);
    // The host's FS/GS/TR/LDTR and SYSCALL MSRs, reloaded after every exit.
    // SAFETY: VMSAVE writes those fields into the host-state page, a monitor page owned by this core.
    unsafe { core::arch::asm!("vmsave rax", in("rax") c.host_state, options(nostack)) };
    let mut regs = GuestRegs { rax: u64::from(c.rax), rbx: u64::from(c.rbx), ..GuestRegs::default() };
    let mut fx = FxArea::initial();
    let mut first = true;
    // SAFETY: the monitor arms no breakpoints; DR0–DR3 are not in the VMCB (a guest sees the core's).
    unsafe { cpu::reset_debug_registers() };
    // The guest drives the core's local APIC directly (its LVTs, TPR, in-service bits are in no VMCS/VMCB):
    // what the previous incarnation left there must not reach the next.
    let _ = lapic::reset_for_guest();
    loop {
        wr64(c.vmcb, off::RAX, regs.rax);
        // SAFETY: the VMCB is complete and ours; the asm saves and restores every host register it touches.
        unsafe { questv_svm_run(&mut regs, c.vmcb, c.host_state, &mut fx) };
        regs.rax = rd64(c.vmcb, off::RAX);
        // SAFETY: guest state is saved and the host's reloaded; a pending NMI may now reach the host handler.
        unsafe { core::arch::asm!("stgi", options(nostack)) };
        // A flush asked for (first entry, or flush_stage2) has been done.
        wr8(c.vmcb, off::TLB_CONTROL, 0);
        if first {
            first = false;
            if rd64(c.vmcb, off::EXIT_CODE) == code::INVALID {
                return SvmError::LaunchFailed;
            }
        }
        // Any event injected for the last entry has been delivered (or, cut off, is in EXITINTINFO).
        wr64(c.vmcb, off::EVENT_INJ, 0);
        REDIRECTED[cpu_index].store(false, Ordering::Relaxed);
        let exit = decode_exit(c.vmcb);
        match crate::exit::handle(&mut regs, exit) {
            crate::exit::Verdict::Resume => reinject_interrupted_event(c.vmcb, cpu_index),
            // The policy stopped this sandbox: park the core (interrupts stay off).
            crate::exit::Verdict::Park => cpu::halt_forever(),
            crate::exit::Verdict::Relaunch => {
                // Launch state again (the VMCB's guest state, TLB flush of this ASID at the next entry), power-on
                // registers and FPU.
                setup(c);
                regs = GuestRegs { rax: u64::from(c.rax), rbx: u64::from(c.rbx), ..GuestRegs::default() };
                fx = FxArea::initial();
                // SAFETY: as before the first entry: no breakpoints of the monitor's.
                unsafe { cpu::reset_debug_registers() };
                // The guest drives the core's local APIC directly (its LVTs, TPR, in-service bits are in no VMCS/VMCB):
                // what the previous incarnation left there must not reach the next.
                let _ = lapic::reset_for_guest();
                first = true;
            }
        }
    }
}

/// If this exit interrupted the delivery of an event (EXITINTINFO valid) and the policy injects nothing itself,
/// deliver that event at the next VMRUN: otherwise it is lost (an interrupt never serviced).
fn reinject_interrupted_event(v: u64, cpu_index: usize) {
    if REDIRECTED[cpu_index].load(Ordering::Relaxed) || rd64(v, off::EVENT_INJ) & (1 << 31) != 0 {
        return;
    }
    if let Some(inj) = crate::exit::decode_svm_exitintinfo(rd64(v, off::EXIT_INT_INFO)).and_then(crate::exit::svm_eventinj) {
        wr64(v, off::EVENT_INJ, inj);
    }
}

/// Decode the VMCB's exit into the neutral vocabulary and note where RIP goes if the policy skips the
/// instruction.
fn decode_exit(v: u64) -> Exit {
    let c = rd64(v, off::EXIT_CODE);
    let info1 = rd64(v, off::EXIT_INFO1);
    let info2 = rd64(v, off::EXIT_INFO2);
    let rip = rd64(v, off::RIP);
    let next = |len: u64| if NRIPS.load(Ordering::Relaxed) { rd64(v, off::NEXT_RIP) } else { rip + len };
    let next_rip = match c {
        code::CPUID | code::MSR | code::INVD | code::WBINVD => next(2),
        code::VMMCALL | code::MONITOR..=code::MWAIT_ARMED => next(3),
        code::IOIO => info2,
        _ => rip,
    };
    NEXT_RIP[percpu::cpu_index() as usize].store(next_rip, Ordering::Relaxed);
    match c {
        code::CPUID => Exit::Cpuid,
        code::VMMCALL => Exit::Hypercall,
        code::IOIO => Exit::Io(decode_ioio(info1)),
        code::MSR => Exit::Msr { write: info1 & 1 != 0 },
        code::NMI => Exit::Nmi,
        code::INIT => Exit::InitSipi,
        code::INVD => Exit::Invd,
        code::WBINVD => Exit::Wbinvd,
        code::MONITOR..=code::MWAIT_ARMED => Exit::MonitorMwait,
        code::VMRUN..=code::SKINIT | code::INVLPGA | code::XSETBV => Exit::Forbidden,
        code::SHUTDOWN => Exit::Shutdown,
        code::NPF => Exit::MemoryViolation { gpa: info2, write: info1 & 2 != 0, fetch: info1 & 0x10 != 0, detail: info1 },
        code::INVALID => Exit::EntryFailed { detail: c },
        // EXITINFO1 holds the error code of exceptions that push one (#AC's is 0).
        0x40..=0x5F => {
            let vector = (c - code::EXCEPTION_BASE) as u8;
            let error_code = matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30).then_some(info1 as u32);
            Exit::Exception { vector, error_code, detail: info2 }
        }
        _ => Exit::Other { code: c, detail: info1 },
    }
}

/// EXITINFO1 of an IOIO intercept (APM Table 15-2): bit 0 IN, bit 2 string, bits 4–6 size, bits 16–31 port.
pub fn decode_ioio(info1: u64) -> IoExit {
    let size = if info1 & (1 << 4) != 0 {
        1
    } else if info1 & (1 << 5) != 0 {
        2
    } else {
        4
    };
    IoExit { port: (info1 >> 16) as u16, size, input: info1 & 1 != 0, string: info1 & (1 << 2) != 0 }
}

// Operations on the current exit (the backend dispatcher calls these on this core's VMCB).

pub fn skip_instruction() {
    wr64(vmcb(), off::RIP, NEXT_RIP[percpu::cpu_index() as usize].load(Ordering::Relaxed));
}

pub fn advance_rip(len: u64) {
    let v = vmcb();
    wr64(v, off::RIP, rd64(v, off::RIP) + len);
}

/// Resume the guest at `rip` with `rsp` and `rflags` instead of where it stopped (component recovery): no event
/// pending, no interrupt shadow.
pub fn redirect(rip: u64, rsp: u64, rflags: u64) {
    REDIRECTED[percpu::cpu_index() as usize].store(true, Ordering::Relaxed);
    let v = vmcb();
    wr64(v, off::RIP, rip);
    wr64(v, off::RSP, rsp);
    wr64(v, off::RFLAGS, rflags);
    wr64(v, off::EVENT_INJ, 0);
    wr64(v, off::INT_SHADOW, 0);
}

/// Inject a hardware exception at the next VMRUN (EVENTINJ: type 3; an error code only in protected mode).
/// Drop this guest's cached nested translations at the next entry (a mapping was removed).
pub fn flush_stage2() {
    wr8(vmcb(), off::TLB_CONTROL, 1);
}

pub fn inject_exception(vector: u8, error_code: Option<u32>) {
    let v = vmcb();
    let protected = rd64(v, off::CR0) & 1 != 0;
    let mut e = (1u64 << 31) | (3 << 8) | u64::from(vector);
    if let (Some(code), true) = (error_code, protected) {
        e |= (1 << 11) | (u64::from(code) << 32);
    }
    wr64(v, off::EVENT_INJ, e);
}

pub fn guest_cpl() -> u8 {
    rd8(vmcb(), off::CPL) & 3
}

pub fn guest_state() -> GuestState {
    let v = vmcb();
    GuestState {
        rip: rd64(v, off::RIP),
        rsp: rd64(v, off::RSP),
        paging: Paging { cr0: rd64(v, off::CR0), cr3: rd64(v, off::CR3), cr4: rd64(v, off::CR4), efer: rd64(v, off::EFER) },
    }
}

// The run step (System V: rdi = regs, rsi = VMCB, rdx = host-state page, rcx = FXSAVE area). Guest GPRs are
// read from and written back to the `Gprs` block (RAX and RSP live in the VMCB); the host's callee-saved
// registers are pushed, the rest are free by the calling convention. Field offsets: r15 0, r14 8, r13 16,
// r12 24, r11 32, r10 40, r9 48, r8 56, rbp 64, rdi 72, rsi 80, rdx 88, rcx 96, rbx 104, rax 112.
global_asm!(
    r#"
    .pushsection .text.questv_svm_run, "ax"
    .global questv_svm_run
questv_svm_run:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    push %rdx
    push %rcx
    push %rdi
    fxrstor64 (%rcx)
    mov %rsi, %rax
    clgi
    vmload %rax
    mov 0(%rdi), %r15
    mov 8(%rdi), %r14
    mov 16(%rdi), %r13
    mov 24(%rdi), %r12
    mov 32(%rdi), %r11
    mov 40(%rdi), %r10
    mov 48(%rdi), %r9
    mov 56(%rdi), %r8
    mov 64(%rdi), %rbp
    mov 80(%rdi), %rsi
    mov 88(%rdi), %rdx
    mov 96(%rdi), %rcx
    mov 104(%rdi), %rbx
    mov 72(%rdi), %rdi
    vmrun %rax
    vmsave %rax
    push %rdi
    mov 8(%rsp), %rdi
    popq 72(%rdi)
    mov %r15, 0(%rdi)
    mov %r14, 8(%rdi)
    mov %r13, 16(%rdi)
    mov %r12, 24(%rdi)
    mov %r11, 32(%rdi)
    mov %r10, 40(%rdi)
    mov %r9, 48(%rdi)
    mov %r8, 56(%rdi)
    mov %rbp, 64(%rdi)
    mov %rsi, 80(%rdi)
    mov %rdx, 88(%rdi)
    mov %rcx, 96(%rdi)
    mov %rbx, 104(%rdi)
    mov 8(%rsp), %rcx
    fxsave64 (%rcx)
    /* The host's SSE code expects the default MXCSR, not the guest's. */
    pushq $0x1F80
    ldmxcsr (%rsp)
    add $8, %rsp
    mov 16(%rsp), %rax
    vmload %rax
    add $24, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret
    .global questv_svm_run_end
questv_svm_run_end:
    .popsection
"#,
    options(att_syntax)
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_routine_is_recognised_by_its_addresses() {
        let start = questv_svm_run as *const () as u64;
        assert!(in_run_routine(start) && in_run_routine(start + 0x40), "inside questv_svm_run");
        assert!(!in_run_routine(start - 1) && !in_run_routine(0) && !in_run_routine(in_run_routine as *const () as u64));
    }

    #[test]
    fn ioio_exit_info() {
        // OUT dx, al to 0xCF9; IN eax, dx from 0xCFC; REP INSW from 0x1F0.
        assert_eq!(decode_ioio((0xCF9 << 16) | (1 << 4)), IoExit { port: 0xCF9, size: 1, input: false, string: false });
        assert_eq!(decode_ioio((0xCFC << 16) | (1 << 6) | 1), IoExit { port: 0xCFC, size: 4, input: true, string: false });
        assert_eq!(decode_ioio((0x1F0 << 16) | (1 << 5) | (1 << 3) | (1 << 2) | 1), IoExit { port: 0x1F0, size: 2, input: true, string: true });
    }

    #[test]
    fn intercepts_cover_every_svm_instruction() {
        use intercept::*;
        assert_eq!(MISC2 & (VMRUN | VMLOAD | VMSAVE | STGI | CLGI | SKINIT), VMRUN | VMLOAD | VMSAVE | STGI | CLGI | SKINIT);
        assert_ne!(MISC1 & NMI, 0);
        assert_eq!(MISC1 & 1, 0, "physical interrupts are not intercepted");
        assert_eq!(MISC1 & (1 << 24), 0, "HLT is not intercepted");
        assert_eq!(MISC2 & (WBINVD | MONITOR | MWAIT | MWAIT_ARMED), WBINVD | MONITOR | MWAIT | MWAIT_ARMED);
        assert_eq!(EXCEPTIONS, (1 << 1) | (1 << 17), "#DB and #AC, nothing else");
    }
}
