//! VMX root operation on one core: VMXON, VMCS set-up for a sandbox that starts like a freshly booted
//! multiboot2 kernel (32-bit protected mode, paging off: unrestricted guest), VMLAUNCH, and the VM-exit path.
//!
//! What exits (paper §3.3 "minimal exits", hardened deny-by-default, docs/vt.md): CPUID (architectural),
//! VMCALL (hypercalls), EPT violations and misconfigurations, triple faults, INIT/SIPI, VMX instructions, NMIs,
//! every port without a grant (I/O bitmaps), every MSR off the allow list (MSR bitmap: ICR and APIC_BASE
//! writes among them), the VMX-preemption timer when the watchdog is on, #DB and #AC (exception bitmap,
//! reflected), WBINVD, MONITOR and MWAIT, and the unconditional ones (INVD, XSETBV, GETSEC). Not exiting:
//! external interrupts, HLT, CR3 loads/stores, RDTSC, INVLPG, allowed MSRs. An event whose delivery an exit
//! interrupted (IDT-vectoring information) is delivered again at the next entry unless the policy injects one.

use super::controls::{Controls, EXCEPTION_BITMAP};
use super::reason::{self, decode_io_qualification};
use super::VmxError;
use crate::exit::Exit;
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, Ordering};
use questv_arch::{cpu, lapic};
use questv_arch::percpu::{self, MAX_CPUS};

/// VMCS field encodings: the `x86` crate's tables (`control`, `guest`, `host`, `ro`).
pub use x86::vmx::vmcs::{control, guest, host, ro};
use x86::msr::{IA32_FEATURE_CONTROL, IA32_PAT, IA32_VMX_BASIC, IA32_VMX_CR0_FIXED0, IA32_VMX_CR0_FIXED1, IA32_VMX_CR4_FIXED0, IA32_VMX_CR4_FIXED1};

/// Guest general-purpose registers as the exit stub saves them (RSP/RIP live in the VMCS): the same layout as
/// the trap frame's.
pub type GuestRegs = questv_arch::regs::Gprs;

/// # Safety
/// VMX root operation with a current VMCS.
pub unsafe fn vmread(f: u32) -> u64 {
    // SAFETY: caller guarantees a current VMCS; reading an unsupported field only fails (read as 0).
    unsafe { x86::bits64::vmx::vmread(f) }.unwrap_or(0)
}

/// # Safety
/// VMX root operation with a current VMCS; the value must be valid for the field.
pub unsafe fn vmwrite(f: u32, v: u64) -> Result<(), VmxError> {
    // SAFETY: caller guarantees a current VMCS and a valid value; failure is reported, not raised.
    unsafe { x86::bits64::vmx::vmwrite(f, v) }.map_err(|_| VmxError::VmwriteFailed(f))
}

const CR4_VMXE: u64 = 1 << 13;

pub fn vmcs_revision() -> u32 {
    // SAFETY: VMX present.
    (unsafe { cpu::rdmsr(IA32_VMX_BASIC) } & 0x7FFF_FFFF) as u32
}

/// Enter VMX root operation on this core.
///
/// # Safety
/// `vmxon_region` is the physical address of a zeroed, 4 KiB-aligned page (RAM, so mapped at KERNEL_BASE) owned by
/// this core for as long as VMX is on; VMX support was checked (caps::evaluate).
pub unsafe fn enable(vmxon_region: u64) -> Result<(), VmxError> {
    // SAFETY: IA32_FEATURE_CONTROL exists on VMX CPUs; if firmware left it unlocked we enable VMXON outside SMX
    // and lock it (a locked MSR with the bit clear was refused by caps::evaluate).
    unsafe {
        let fc = cpu::rdmsr(IA32_FEATURE_CONTROL);
        if fc & 1 == 0 {
            cpu::wrmsr(IA32_FEATURE_CONTROL, fc | 1 | (1 << 2));
        }
        let cr0 = (cpu::read_cr0() | cpu::rdmsr(IA32_VMX_CR0_FIXED0)) & cpu::rdmsr(IA32_VMX_CR0_FIXED1);
        asm!("mov cr0, {}", in(reg) cr0, options(nostack));
        let cr4 = (cpu::read_cr4() | CR4_VMXE | cpu::rdmsr(IA32_VMX_CR4_FIXED0)) & cpu::rdmsr(IA32_VMX_CR4_FIXED1);
        cpu::write_cr4(cr4);
        core::ptr::write_volatile(questv_arch::paging::phys_to_virt(vmxon_region) as *mut u32, vmcs_revision());
        x86::bits64::vmx::vmxon(vmxon_region).map_err(|_| VmxError::VmxonFailed)?;
    }
    Ok(())
}

/// Everything needed to start one sandbox on this core.
#[derive(Clone, Copy, Debug)]
pub struct LaunchConfig {
    pub vmxon: u64,
    pub vmcs: u64,
    pub msr_bitmap: u64,
    /// I/O bitmaps A (ports 0–0x7FFF) and B (0x8000–0xFFFF).
    pub io_bitmap_a: u64,
    pub io_bitmap_b: u64,
    pub eptp: u64,
    /// Guest-physical entry point (32-bit protected mode, paging off).
    pub entry: u32,
    pub rax: u32,
    pub rbx: u32,
    /// Start instead as an application processor after a start-up IPI: real mode at the core's start-up
    /// vector (`crate::backend::start_vector`; an unrestricted guest may run in real mode).
    pub sipi: bool,
    /// Top of this core's monitor stack (VM exits run on it).
    pub host_stack_top: u64,
    pub host_tr_base: u64,
    /// Checked controls ([`super::controls::controls`]).
    pub controls: Controls,
    /// VMX-preemption timer start value at every entry (the watchdog period), if armed.
    pub preemption_timer: Option<u32>,
}

extern "C" {
    fn questv_vmexit_entry();
}

/// Set up the VMCS and launch the guest. Returns only if VMLAUNCH fails.
///
/// # Safety
/// VMX root operation on this core (enable()); all addresses in `c` are physical addresses of owned pages (RAM, so mapped);
/// interrupts are off and stay off in the host from now on.
pub unsafe fn launch(c: &LaunchConfig) -> VmxError {
    *LAUNCHED[percpu::cpu_index() as usize].lock() = Some(*c);
    // SAFETY: the caller's contract (VMX root, owned pages) is setup's.
    match unsafe { setup(c) } {
        Ok(()) => {}
        Err(e) => return e,
    }
    // The guest sees these registers directly (the VMCS does not hold them): zero them, as at power-on, so a
    // sandbox starts with neither the monitor's values nor its previous incarnation's. Once this core launches
    // its sandbox the monitor runs no user code and takes no SYSCALL or SWAPGS, so it needs none of them.
    for msr in [x86::msr::IA32_STAR, x86::msr::IA32_LSTAR, x86::msr::IA32_CSTAR, x86::msr::IA32_FMASK, x86::msr::IA32_KERNEL_GSBASE] {
        // SAFETY: architectural MSRs of a 64-bit CPU; zero is a valid value for each (see above).
        unsafe { cpu::wrmsr(msr, 0) };
    }
    // SAFETY: CR2 only reports page-fault addresses; the host takes none between here and the entry.
    unsafe { asm!("mov cr2, {}", in(reg) 0u64, options(nostack, preserves_flags)) };
    // SAFETY: the monitor arms no breakpoints; DR0–DR3 and DR6 are not in the VMCS, so without this a relaunched
    // sandbox would start with its previous incarnation's.
    unsafe { cpu::reset_debug_registers() };
    // The guest drives the core's local APIC directly (its LVTs, TPR, in-service bits are in no VMCS/VMCB):
    // what the previous incarnation left there must not reach the next.
    let _ = lapic::reset_for_guest();
    let fail: u8;
    let fail_word: u64;
    // SAFETY: the VMCS is current and complete; on success control never returns here.
    unsafe {
        // RBX is reserved by LLVM: load it by hand and restore it if VMLAUNCH fails (POP keeps the flags).
        // Every other register the guest starts with is zeroed (GPRs, RBP, XMM): nothing of the monitor's state
        // reaches the sandbox.
        asm!(
            "push rbx",
            "push rbp",
            "mov rbx, {b}",
            "xor ebp, ebp",
            "xor ecx, ecx",
            "xor edx, edx",
            "xor esi, esi",
            "xor edi, edi",
            "xor r8d, r8d",
            "xor r9d, r9d",
            "xor r10d, r10d",
            "xor r11d, r11d",
            "xor r12d, r12d",
            "xor r13d, r13d",
            "xor r14d, r14d",
            "xor r15d, r15d",
            "xorps xmm0, xmm0", "xorps xmm1, xmm1", "xorps xmm2, xmm2", "xorps xmm3, xmm3",
            "xorps xmm4, xmm4", "xorps xmm5, xmm5", "xorps xmm6, xmm6", "xorps xmm7, xmm7",
            "xorps xmm8, xmm8", "xorps xmm9, xmm9", "xorps xmm10, xmm10", "xorps xmm11, xmm11",
            "xorps xmm12, xmm12", "xorps xmm13, xmm13", "xorps xmm14, xmm14", "xorps xmm15, xmm15",
            // x87 and MXCSR at their power-on values (the VMCS holds neither).
            "fninit",
            "ldmxcsr [rip + questv_default_mxcsr]",
            "vmlaunch",
            "pop rbp",
            "pop rbx",
            "setna al",
            b = in(reg) u64::from(c.rbx),
            inout("rax") u64::from(c.rax) => fail_word,
            out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _, out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _, out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
        );
        fail = fail_word as u8;
    }
    let _ = fail;
    // SAFETY: the VMCS is current; the error field explains the failure.
    VmxError::LaunchFailed(unsafe { vmread(ro::VM_INSTRUCTION_ERROR) })
}

/// # Safety
/// As for [`launch`].
unsafe fn setup(c: &LaunchConfig) -> Result<(), VmxError> {
    // SAFETY: VMX root; the VMCS page is ours; each step writes the now current VMCS.
    unsafe {
        core::ptr::write_volatile(questv_arch::paging::phys_to_virt(c.vmcs) as *mut u32, vmcs_revision());
        x86::bits64::vmx::vmclear(c.vmcs).map_err(|_| VmxError::VmclearFailed)?;
        x86::bits64::vmx::vmptrld(c.vmcs).map_err(|_| VmxError::VmptrldFailed)?;
        write_controls(c)?;
        write_host_state(c)?;
        write_guest_state(c)
    }
}

/// The controls (checked by `controls::controls()`), the permission maps and the EPT.
///
/// # Safety
/// VMX root with `c`'s VMCS current.
unsafe fn write_controls(c: &LaunchConfig) -> Result<(), VmxError> {
    let k = c.controls;
    // SAFETY: the caller's contract; every value is valid for its field.
    unsafe {
        vmwrite(control::PINBASED_EXEC_CONTROLS, u64::from(k.pin))?;
        vmwrite(control::PRIMARY_PROCBASED_EXEC_CONTROLS, u64::from(k.proc))?;
        vmwrite(control::SECONDARY_PROCBASED_EXEC_CONTROLS, u64::from(k.proc2))?;
        vmwrite(control::VMEXIT_CONTROLS, u64::from(k.exit))?;
        vmwrite(control::VMENTRY_CONTROLS, u64::from(k.entry))?;
        if let Some(t) = c.preemption_timer {
            vmwrite(guest::VMX_PREEMPTION_TIMER_VALUE, u64::from(t))?;
        }
        vmwrite(control::IO_BITMAP_A_ADDR_FULL, c.io_bitmap_a)?;
        vmwrite(control::IO_BITMAP_B_ADDR_FULL, c.io_bitmap_b)?;
        vmwrite(control::EXCEPTION_BITMAP, u64::from(EXCEPTION_BITMAP))?;
        vmwrite(control::CR3_TARGET_COUNT, 0)?;
        vmwrite(control::VMEXIT_MSR_STORE_COUNT, 0)?;
        vmwrite(control::VMEXIT_MSR_LOAD_COUNT, 0)?;
        vmwrite(control::VMENTRY_MSR_LOAD_COUNT, 0)?;
        vmwrite(control::VMENTRY_INTERRUPTION_INFO_FIELD, 0)?;
        vmwrite(control::MSR_BITMAPS_ADDR_FULL, c.msr_bitmap)?;
        vmwrite(control::EPTP_FULL, c.eptp)?;
        // The guest owns CR0/CR4 except CR4.VMXE, which it must neither see nor clear.
        vmwrite(control::CR0_GUEST_HOST_MASK, 0)?;
        vmwrite(control::CR4_GUEST_HOST_MASK, CR4_VMXE)?;
        vmwrite(control::CR0_READ_SHADOW, 0)?;
        vmwrite(control::CR4_READ_SHADOW, 0)?;
        vmwrite(guest::LINK_PTR_FULL, u64::MAX)?;
    }
    Ok(())
}

/// Host state: this core as it is now; exits land in questv_vmexit_entry on the monitor stack.
///
/// # Safety
/// As for [`write_controls`]; `c.host_stack_top` and `c.host_tr_base` are this core's.
unsafe fn write_host_state(c: &LaunchConfig) -> Result<(), VmxError> {
    // SAFETY: the caller's contract; SGDT/SIDT store 10 bytes into the buffers given.
    unsafe {
        vmwrite(host::CR0, cpu::read_cr0())?;
        vmwrite(host::CR3, cpu::read_cr3())?;
        vmwrite(host::CR4, cpu::read_cr4())?;
        vmwrite(host::CS_SELECTOR, u64::from(questv_arch::gdt::KERNEL_CS))?;
        for f in [host::SS_SELECTOR, host::DS_SELECTOR, host::ES_SELECTOR] {
            vmwrite(f, u64::from(questv_arch::gdt::KERNEL_DS))?;
        }
        vmwrite(host::FS_SELECTOR, 0)?;
        vmwrite(host::GS_SELECTOR, 0)?;
        vmwrite(host::TR_SELECTOR, u64::from(questv_arch::gdt::TSS_SEL))?;
        vmwrite(host::FS_BASE, 0)?;
        vmwrite(host::GS_BASE, cpu::rdmsr(cpu::MSR_GS_BASE))?;
        vmwrite(host::TR_BASE, c.host_tr_base)?;
        let mut gdtr = [0u8; 10];
        let mut idtr = [0u8; 10];
        asm!("sgdt [{}]", in(reg) gdtr.as_mut_ptr(), options(nostack));
        asm!("sidt [{}]", in(reg) idtr.as_mut_ptr(), options(nostack));
        vmwrite(host::GDTR_BASE, u64::from_le_bytes(gdtr[2..10].try_into().unwrap()))?;
        vmwrite(host::IDTR_BASE, u64::from_le_bytes(idtr[2..10].try_into().unwrap()))?;
        vmwrite(host::IA32_SYSENTER_CS, 0)?;
        vmwrite(host::IA32_SYSENTER_ESP, 0)?;
        vmwrite(host::IA32_SYSENTER_EIP, 0)?;
        vmwrite(host::IA32_EFER_FULL, cpu::rdmsr(cpu::MSR_EFER))?;
        vmwrite(host::IA32_PAT_FULL, cpu::rdmsr(IA32_PAT))?;
        vmwrite(host::RSP, c.host_stack_top & !0xF)?;
        vmwrite(host::RIP, questv_vmexit_entry as *const () as u64)?;
    }
    Ok(())
}

/// Guest state: as GRUB leaves a multiboot2 kernel — flat 32-bit protected mode, paging off.
///
/// # Safety
/// As for [`write_controls`].
unsafe fn write_guest_state(c: &LaunchConfig) -> Result<(), VmxError> {
    // SAFETY: the caller's contract; every value is valid for its field (an unrestricted guest).
    unsafe {
        let cr0 = 0x31; // PE | ET | NE
        vmwrite(guest::CR0, cr0)?;
        vmwrite(guest::CR3, 0)?;
        vmwrite(guest::CR4, CR4_VMXE)?;
        vmwrite(guest::IA32_EFER_FULL, 0)?;
        vmwrite(guest::IA32_PAT_FULL, 0x0007_0406_0007_0406)?; // the power-on default
        vmwrite(guest::DR7, 0x400)?;
        vmwrite(guest::IA32_DEBUGCTL_FULL, 0)?; // loaded at entry with DR7 (entry control "load debug controls")
        vmwrite(guest::RSP, 0)?;
        vmwrite(guest::RIP, u64::from(c.entry))?;
        vmwrite(guest::RFLAGS, 0x2)?;
        vmwrite(guest::CS_SELECTOR, 0x08)?;
        vmwrite(guest::CS_ACCESS_RIGHTS, 0xC09B)?;
        // ES, SS, DS, FS, GS: flat data (field encodings are 2 apart, CS included).
        for i in 0..6u32 {
            if i == 1 {
                continue;
            }
            vmwrite(guest::ES_SELECTOR + 2 * i, 0x10)?;
            vmwrite(guest::ES_ACCESS_RIGHTS + 2 * i, 0xC093)?;
        }
        for i in 0..6u32 {
            vmwrite(guest::ES_LIMIT + 2 * i, 0xFFFF_FFFF)?;
            vmwrite(guest::ES_BASE + 2 * i, 0)?;
        }
        vmwrite(guest::LDTR_SELECTOR, 0)?;
        vmwrite(guest::LDTR_ACCESS_RIGHTS, 1 << 16)?; // unusable
        vmwrite(guest::LDTR_LIMIT, 0)?;
        vmwrite(guest::LDTR_BASE, 0)?;
        vmwrite(guest::TR_SELECTOR, 0)?;
        vmwrite(guest::TR_ACCESS_RIGHTS, 0x8B)?; // busy 32-bit TSS, present
        vmwrite(guest::TR_LIMIT, 0x67)?;
        vmwrite(guest::TR_BASE, 0)?;
        vmwrite(guest::GDTR_BASE, 0)?;
        vmwrite(guest::GDTR_LIMIT, 0xFFFF)?;
        vmwrite(guest::IDTR_BASE, 0)?;
        vmwrite(guest::IDTR_LIMIT, 0)?;
        if c.sipi {
            // As a start-up IPI leaves an application processor (SDM §9.4.4): real mode at VECTOR:0000, data
            // segments at 0 with 64 KiB limits (SDM §26.3.1.2: real-mode segments of an unrestricted guest).
            let vector = u64::from(crate::backend::start_vector());
            vmwrite(guest::CR0, 0x30)?; // ET | NE
            vmwrite(guest::RIP, 0)?;
            vmwrite(guest::CS_SELECTOR, vector << 8)?;
            vmwrite(guest::CS_BASE, vector << 12)?;
            vmwrite(guest::CS_ACCESS_RIGHTS, 0x9B)?;
            vmwrite(guest::IDTR_LIMIT, 0xFFFF)?; // the real-mode vector table's limit
            for i in 0..6u32 {
                if i != 1 {
                    vmwrite(guest::ES_SELECTOR + 2 * i, 0)?;
                    vmwrite(guest::ES_ACCESS_RIGHTS + 2 * i, 0x93)?;
                }
                vmwrite(guest::ES_LIMIT + 2 * i, 0xFFFF)?;
            }
        }
        vmwrite(guest::INTERRUPTIBILITY_STATE, 0)?;
        vmwrite(guest::ACTIVITY_STATE, 0)?;
        vmwrite(guest::PENDING_DBG_EXCEPTIONS, 0)?;
        vmwrite(guest::IA32_SYSENTER_CS, 0)?;
        vmwrite(guest::IA32_SYSENTER_ESP, 0)?;
        vmwrite(guest::IA32_SYSENTER_EIP, 0)?;
    }
    Ok(())
}

// VM exit: save the guest GPRs and its FPU/SSE state (the handler is Rust on precompiled core, which uses
// SSE), run the handler with the power-on x87 and MXCSR settings (not the guest's rounding and exception
// masks), restore the guest's, and resume unless it asks to stop this sandbox.
global_asm!(
    r#"
    .pushsection .text.questv_vmexit_entry, "ax"
    .global questv_vmexit_entry
questv_vmexit_entry:
"#,
    questv_arch::push_gprs_asm!(),
    r#"    sub $520, %rsp
    fxsave64 (%rsp)
    fninit
    ldmxcsr questv_default_mxcsr(%rip)
    lea 520(%rsp), %rdi
    call questv_vmexit
    fxrstor64 (%rsp)
    add $520, %rsp
    test %rax, %rax
    jnz 2f
"#,
    questv_arch::pop_gprs_asm!(),
    r#"    vmresume
    call questv_vmresume_failed
2:  cli
    hlt
    jmp 2b
    .popsection
"#,
    options(att_syntax)
);

/// Per core: the policy moved the guest elsewhere in this exit ([`redirect`]), so an event it was delivering
/// belongs to the abandoned context and is not delivered again.
static REDIRECTED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

#[no_mangle]
extern "C" fn questv_vmexit(regs: &mut GuestRegs) -> u64 {
    REDIRECTED[percpu::cpu_index() as usize].store(false, Ordering::Relaxed);
    // SAFETY: we are in the VM-exit path: VMX root with this core's VMCS current.
    let exit = unsafe { decode_exit() };
    match crate::exit::handle(regs, exit) {
        crate::exit::Verdict::Resume => {
            // SAFETY: as above.
            unsafe { reinject_interrupted_event() };
            0
        }
        crate::exit::Verdict::Park => 1,
        crate::exit::Verdict::Relaunch => {
            // SAFETY: VMX root on this core, whose launch configuration is recorded; the policy rebuilt the
            // sandbox's memory and EPT in place.
            let err = unsafe { relaunch() };
            // Only a failed VMLAUNCH comes back: the policy hears of it, the core parks.
            let _ = crate::exit::handle(&mut GuestRegs::default(), Exit::EntryFailed { detail: err.detail() });
            1
        }
    }
}

/// Each core's launch configuration, for [`relaunch`].
static LAUNCHED: [spin::Mutex<Option<LaunchConfig>>; MAX_CPUS] = [const { spin::Mutex::new(None) }; MAX_CPUS];

/// Start this core's sandbox again from its launch state: the EPT's cached translations are dropped (its
/// entries were rewritten in place), the VMCS is set up afresh and VMLAUNCHed. The exit path's frames are
/// abandoned: the next exit starts again at the top of the monitor stack. Returns only on failure.
///
/// # Safety
/// VMX root on this core, after [`launch`] ran here.
unsafe fn relaunch() -> VmxError {
    let Some(c) = *LAUNCHED[percpu::cpu_index() as usize].lock() else { return VmxError::LaunchFailed(0) };
    // SAFETY: VMX root (the caller's contract); the capability MSR exists since EPT is in use.
    if let Err(e) = unsafe { invept(c.eptp) } {
        return e;
    }
    // SAFETY: the caller's contract is launch's.
    unsafe { launch(&c) }
}

/// Drop this core's cached EPT translations (a mapping was removed).
///
/// # Safety
/// VMX root on this core, after [`launch`] ran here.
pub unsafe fn flush_stage2() -> Result<(), VmxError> {
    let Some(c) = *LAUNCHED[percpu::cpu_index() as usize].lock() else { return Err(VmxError::LaunchFailed(0)) };
    // SAFETY: the caller's contract; EPT is in use.
    unsafe { invept(c.eptp) }
}

/// IA32_VMX_EPT_VPID_CAP: INVEPT supported (bit 20), single-context (25), all-context (26).
const EPT_CAP_INVEPT: u64 = 1 << 20;
const EPT_CAP_INVEPT_SINGLE: u64 = 1 << 25;
const EPT_CAP_INVEPT_ALL: u64 = 1 << 26;

/// Drop the cached translations of `eptp` (single-context INVEPT, or all-context where only that is offered).
///
/// # Safety
/// VMX root, EPT in use.
unsafe fn invept(eptp: u64) -> Result<(), VmxError> {
    // SAFETY: the caller's contract: EPT is in use, so IA32_VMX_EPT_VPID_CAP exists.
    let cap = unsafe { cpu::rdmsr(x86::msr::IA32_VMX_EPT_VPID_CAP) };
    let kind = if cap & EPT_CAP_INVEPT == 0 {
        return Err(VmxError::ControlRefused { control: "INVEPT", wanted: 1, got: 0 });
    } else if cap & EPT_CAP_INVEPT_SINGLE != 0 {
        1u64
    } else if cap & EPT_CAP_INVEPT_ALL != 0 {
        2
    } else {
        return Err(VmxError::ControlRefused { control: "INVEPT type", wanted: 1, got: 0 });
    };
    let descriptor: [u64; 2] = [eptp, 0];
    let failed: u8;
    // SAFETY: the caller's contract; the descriptor is a valid 16-byte memory operand; the type is supported.
    unsafe {
        asm!("invept {t}, [{d}]", "setna {f}", t = in(reg) kind, d = in(reg) descriptor.as_ptr(), f = out(reg_byte) failed, options(nostack));
    }
    if failed != 0 {
        return Err(VmxError::ControlRefused { control: "INVEPT failed", wanted: 1, got: 0 });
    }
    Ok(())
}

/// The current exit in the backend-neutral vocabulary.
///
/// # Safety
/// In the VM-exit handler (VMX root, this core's VMCS current).
unsafe fn decode_exit() -> Exit {
    // SAFETY: the caller's contract: a current VMCS whose exit fields are valid.
    unsafe {
        let r = (vmread(ro::EXIT_REASON) & 0xFFFF) as u32;
        let qual = vmread(ro::EXIT_QUALIFICATION);
        match r {
            reason::EXCEPTION_NMI => {
                let info = vmread(ro::VMEXIT_INTERRUPTION_INFO);
                if (info >> 8) & 7 == 2 {
                    Exit::Nmi
                } else {
                    let error_code = (info & (1 << 11) != 0).then(|| vmread(ro::VMEXIT_INTERRUPTION_ERR_CODE) as u32);
                    Exit::Exception { vector: info as u8, error_code, detail: qual }
                }
            }
            reason::TRIPLE_FAULT => Exit::Shutdown,
            reason::INIT | reason::SIPI => Exit::InitSipi,
            reason::CPUID => Exit::Cpuid,
            reason::VMCALL => Exit::Hypercall,
            reason::IO => Exit::Io(decode_io_qualification(qual)),
            reason::RDMSR => Exit::Msr { write: false },
            reason::WRMSR => Exit::Msr { write: true },
            reason::INVD => Exit::Invd,
            reason::WBINVD => Exit::Wbinvd,
            reason::MONITOR | reason::MWAIT => Exit::MonitorMwait,
            reason::XSETBV | reason::GETSEC | 19..=27 | reason::INVEPT | reason::INVVPID => Exit::Forbidden,
            reason::EPT_VIOLATION => Exit::MemoryViolation {
                gpa: vmread(ro::GUEST_PHYSICAL_ADDR_FULL),
                write: qual & 2 != 0,
                fetch: qual & 4 != 0,
                detail: qual,
            },
            reason::PREEMPTION_TIMER => Exit::Timer,
            _ => Exit::Other { code: u64::from(r), detail: qual },
        }
    }
}

#[no_mangle]
extern "C" fn questv_vmresume_failed() {
    // A guest state the CPU refuses to enter stops this sandbox, never the monitor: the policy hears of it as
    // `EntryFailed`, then the stub parks the core.
    // SAFETY: VMRESUME failed with this core's VMCS current: the error field explains why.
    let detail = unsafe { vmread(ro::VM_INSTRUCTION_ERROR) };
    let _ = crate::exit::handle(&mut GuestRegs::default(), Exit::EntryFailed { detail });
}

/// If this exit interrupted the delivery of an event (IDT-vectoring information valid) and the policy injects
/// nothing itself, deliver that event at the next entry: otherwise it is lost (an interrupt never serviced).
/// An exit clears the valid bit of the entry field, so a set bit here is the policy's own injection.
///
/// # Safety
/// In the VM-exit handler.
unsafe fn reinject_interrupted_event() {
    // SAFETY: caller is in the exit handler with the VMCS current; the values come from the CPU's own
    // vectoring fields, re-encoded for the entry (crate::exit::vmx_entry_info).
    unsafe {
        if REDIRECTED[percpu::cpu_index() as usize].load(Ordering::Relaxed) || vmread(control::VMENTRY_INTERRUPTION_INFO_FIELD) & (1 << 31) != 0 {
            return;
        }
        let vectoring = vmread(ro::IDT_VECTORING_INFO) as u32;
        let Some(ev) = crate::exit::decode_vmx_vectoring(vectoring, vmread(ro::IDT_VECTORING_ERR_CODE) as u32) else { return };
        let (info, needs_len) = crate::exit::vmx_entry_info(ev);
        if let Some(code) = ev.error_code {
            let _ = vmwrite(control::VMENTRY_EXCEPTION_ERR_CODE, u64::from(code));
        }
        if needs_len {
            let _ = vmwrite(control::VMENTRY_INSTRUCTION_LEN, vmread(ro::VMEXIT_INSTRUCTION_LEN));
        }
        let _ = vmwrite(control::VMENTRY_INTERRUPTION_INFO_FIELD, u64::from(info));
    }
}

/// DR6's bits a #DB reports (B0–B3, BD, BS; SDM Table 28-1: the exit qualification holds them, in DR6's
/// positions, because a #DB that exits does not write DR6).
const DR6_REPORTED: u64 = 0x600F;

/// Deliver the exception of this exception exit to the guest as the CPU would have without the intercept: the
/// same vector, type and error code (and instruction length for INT1/INT3/INTO). For a #DB the CPU left DR6
/// alone (the exit qualification holds its bits): the monitor sets them in DR6, which the guest reads directly.
///
/// # Safety
/// In the VM-exit handler, for an exception-or-NMI exit.
pub unsafe fn reflect_exception() {
    // SAFETY: caller is in the exit handler of an exception exit with the VMCS current; DR6 belongs to the guest
    // (the monitor arms no breakpoints); the entry fields get what the exit fields reported.
    unsafe {
        let info = vmread(ro::VMEXIT_INTERRUPTION_INFO);
        let (vector, kind) = (info & 0xFF, (info >> 8) & 7);
        if vector == 1 && kind == 3 {
            let dr6: u64;
            asm!("mov {}, dr6", out(reg) dr6, options(nomem, nostack, preserves_flags));
            let dr6 = dr6 | (vmread(ro::EXIT_QUALIFICATION) & DR6_REPORTED);
            asm!("mov dr6, {}", in(reg) dr6, options(nomem, nostack, preserves_flags));
        }
        // Bit 12: the fault came in an IRET that unblocked NMIs; re-establish the blocking (SDM §27.2.3).
        if info & (1 << 12) != 0 && vector != 8 {
            let _ = vmwrite(guest::INTERRUPTIBILITY_STATE, vmread(guest::INTERRUPTIBILITY_STATE) | (1 << 3));
        }
        if info & (1 << 11) != 0 {
            let _ = vmwrite(control::VMENTRY_EXCEPTION_ERR_CODE, vmread(ro::VMEXIT_INTERRUPTION_ERR_CODE));
        }
        if (4..=6).contains(&kind) {
            let _ = vmwrite(control::VMENTRY_INSTRUCTION_LEN, vmread(ro::VMEXIT_INSTRUCTION_LEN));
        }
        let _ = vmwrite(control::VMENTRY_INTERRUPTION_INFO_FIELD, info & 0x8000_0FFF);
    }
}

/// Skip the instruction that caused the current exit.
///
/// # Safety
/// In the VM-exit handler.
pub unsafe fn skip_instruction() {
    // SAFETY: caller is in the exit handler with the VMCS current.
    unsafe {
        let rip = vmread(guest::RIP);
        let len = vmread(ro::VMEXIT_INSTRUCTION_LEN);
        let _ = vmwrite(guest::RIP, rip + len);
    }
}

/// Inject #UD into the guest at the next entry (for VMX instructions it may not use).
///
/// # Safety
/// In the VM-exit handler.
pub unsafe fn inject_ud() {
    // SAFETY: caller is in the exit handler; valid, hardware exception 6 without error code.
    unsafe {
        let _ = vmwrite(control::VMENTRY_INTERRUPTION_INFO_FIELD, (1 << 31) | (3 << 8) | 6);
    }
}

/// Inject #GP(0) into the guest at the next entry (a refused RDMSR/WRMSR or string I/O).
///
/// # Safety
/// In the VM-exit handler.
pub unsafe fn inject_gp() {
    // SAFETY: caller is in the exit handler; hardware exception 13. An error code may only be delivered in
    // protected mode (SDM §27.2.1.3: with CR0.PE = 0 the entry would fail), and an unrestricted guest can be in
    // real mode.
    unsafe {
        let protected = vmread(guest::CR0) & 1 != 0;
        let _ = vmwrite(control::VMENTRY_EXCEPTION_ERR_CODE, 0);
        let _ = vmwrite(control::VMENTRY_INTERRUPTION_INFO_FIELD, (1 << 31) | (u64::from(protected) << 11) | (3 << 8) | 13);
    }
}

/// Move the guest's RIP on by `len` bytes (an instruction the monitor emulated; EPT violations report no
/// instruction length).
///
/// # Safety
/// In the VM-exit handler.
pub unsafe fn advance_rip(len: u64) {
    // SAFETY: caller is in the exit handler with the VMCS current.
    unsafe {
        let _ = vmwrite(guest::RIP, vmread(guest::RIP) + len);
    }
}

/// Resume the guest at `rip` with `rsp` and `rflags` (component recovery): no event pending, no blocking.
///
/// # Safety
/// In the VM-exit handler.
pub unsafe fn redirect(rip: u64, rsp: u64, rflags: u64) {
    REDIRECTED[percpu::cpu_index() as usize].store(true, Ordering::Relaxed);
    // SAFETY: caller is in the exit handler with the VMCS current.
    unsafe {
        let _ = vmwrite(guest::RIP, rip);
        let _ = vmwrite(guest::RSP, rsp);
        let _ = vmwrite(guest::RFLAGS, rflags);
        let _ = vmwrite(control::VMENTRY_INTERRUPTION_INFO_FIELD, 0);
        let _ = vmwrite(guest::INTERRUPTIBILITY_STATE, 0);
        // Active, not halted: the guest may have faulted out of HLT.
        let _ = vmwrite(guest::ACTIVITY_STATE, 0);
    }
}

/// The guest's RIP, RSP and paging controls.
///
/// # Safety
/// In the VM-exit handler.
pub unsafe fn guest_state() -> crate::exit::GuestState {
    // SAFETY: caller is in the exit handler with the VMCS current.
    unsafe {
        crate::exit::GuestState {
            rip: vmread(guest::RIP),
            rsp: vmread(guest::RSP),
            paging: crate::guest::Paging {
                cr0: vmread(guest::CR0),
                cr3: vmread(guest::CR3),
                cr4: vmread(guest::CR4),
                efer: vmread(guest::IA32_EFER_FULL),
            },
        }
    }
}

/// The guest's current privilege level (SS.DPL, SDM §24.4.1).
///
/// # Safety
/// In the VM-exit handler.
pub unsafe fn guest_cpl() -> u8 {
    // SAFETY: caller is in the exit handler with the VMCS current.
    ((unsafe { vmread(guest::SS_ACCESS_RIGHTS) } >> 5) & 3) as u8
}

// MXCSR's power-on value (all exceptions masked, round to nearest), loaded by the exit path and at launch.
global_asm!(
    r#"
    .pushsection .rodata.questv_default_mxcsr, "a"
    .balign 4
    .global questv_default_mxcsr
questv_default_mxcsr:
    .long 0x1F80
    .popsection
"#,
    options(att_syntax)
);
