//! VMX root operation on one core: VMXON, VMCS set-up for a sandbox that starts like a freshly booted
//! multiboot2 kernel (32-bit protected mode, paging off: unrestricted guest), VMLAUNCH, and the VM-exit path.
//!
//! What exits (paper §3.3, "minimal exits"): CPUID (architectural), VMCALL (hypercalls), EPT violations and
//! misconfigurations, triple faults, INIT/SIPI, and VMX instructions the guest tries. Not exiting: external
//! interrupts, NMIs, HLT, port I/O, every MSR (all-zero MSR bitmap), CR3 loads/stores, RDTSC, INVLPG.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use questv_arch::{cpu, percpu};

pub mod field {
    pub const GUEST_ES_SEL: u32 = 0x800;
    pub const GUEST_CS_SEL: u32 = 0x802;
    pub const GUEST_SS_SEL: u32 = 0x804;
    pub const GUEST_DS_SEL: u32 = 0x806;
    pub const GUEST_FS_SEL: u32 = 0x808;
    pub const GUEST_GS_SEL: u32 = 0x80A;
    pub const GUEST_LDTR_SEL: u32 = 0x80C;
    pub const GUEST_TR_SEL: u32 = 0x80E;
    pub const HOST_ES_SEL: u32 = 0xC00;
    pub const HOST_CS_SEL: u32 = 0xC02;
    pub const HOST_SS_SEL: u32 = 0xC04;
    pub const HOST_DS_SEL: u32 = 0xC06;
    pub const HOST_FS_SEL: u32 = 0xC08;
    pub const HOST_GS_SEL: u32 = 0xC0A;
    pub const HOST_TR_SEL: u32 = 0xC0C;
    pub const MSR_BITMAP: u32 = 0x2004;
    pub const EPT_POINTER: u32 = 0x201A;
    pub const GUEST_PHYSICAL_ADDRESS: u32 = 0x2400;
    pub const VMCS_LINK_POINTER: u32 = 0x2800;
    pub const GUEST_EFER: u32 = 0x2806;
    pub const HOST_EFER: u32 = 0x2C02;
    pub const PIN_CONTROLS: u32 = 0x4000;
    pub const PROC_CONTROLS: u32 = 0x4002;
    pub const EXCEPTION_BITMAP: u32 = 0x4004;
    pub const CR3_TARGET_COUNT: u32 = 0x400A;
    pub const EXIT_CONTROLS: u32 = 0x400C;
    pub const EXIT_MSR_STORE_COUNT: u32 = 0x400E;
    pub const EXIT_MSR_LOAD_COUNT: u32 = 0x4010;
    pub const ENTRY_CONTROLS: u32 = 0x4012;
    pub const ENTRY_MSR_LOAD_COUNT: u32 = 0x4014;
    pub const ENTRY_INTERRUPTION_INFO: u32 = 0x4016;
    pub const PROC_CONTROLS2: u32 = 0x401E;
    pub const VM_INSTRUCTION_ERROR: u32 = 0x4400;
    pub const EXIT_REASON: u32 = 0x4402;
    pub const EXIT_INSTRUCTION_LEN: u32 = 0x440C;
    pub const GUEST_ES_LIMIT: u32 = 0x4800;
    pub const GUEST_LDTR_LIMIT: u32 = 0x480C;
    pub const GUEST_TR_LIMIT: u32 = 0x480E;
    pub const GUEST_GDTR_LIMIT: u32 = 0x4810;
    pub const GUEST_IDTR_LIMIT: u32 = 0x4812;
    pub const GUEST_ES_AR: u32 = 0x4814;
    pub const GUEST_CS_AR: u32 = 0x4816;
    pub const GUEST_LDTR_AR: u32 = 0x4820;
    pub const GUEST_TR_AR: u32 = 0x4822;
    pub const GUEST_INTERRUPTIBILITY: u32 = 0x4824;
    pub const GUEST_ACTIVITY: u32 = 0x4826;
    pub const GUEST_SYSENTER_CS: u32 = 0x482A;
    pub const HOST_SYSENTER_CS: u32 = 0x4C00;
    pub const CR0_MASK: u32 = 0x6000;
    pub const CR4_MASK: u32 = 0x6002;
    pub const CR0_SHADOW: u32 = 0x6004;
    pub const CR4_SHADOW: u32 = 0x6006;
    pub const EXIT_QUALIFICATION: u32 = 0x6400;
    pub const GUEST_CR0: u32 = 0x6800;
    pub const GUEST_CR3: u32 = 0x6802;
    pub const GUEST_CR4: u32 = 0x6804;
    pub const GUEST_ES_BASE: u32 = 0x6806;
    pub const GUEST_LDTR_BASE: u32 = 0x6812;
    pub const GUEST_TR_BASE: u32 = 0x6814;
    pub const GUEST_GDTR_BASE: u32 = 0x6816;
    pub const GUEST_IDTR_BASE: u32 = 0x6818;
    pub const GUEST_DR7: u32 = 0x681A;
    pub const GUEST_RSP: u32 = 0x681C;
    pub const GUEST_RIP: u32 = 0x681E;
    pub const GUEST_RFLAGS: u32 = 0x6820;
    pub const GUEST_PENDING_DBG: u32 = 0x6822;
    pub const GUEST_SYSENTER_ESP: u32 = 0x6824;
    pub const GUEST_SYSENTER_EIP: u32 = 0x6826;
    pub const HOST_CR0: u32 = 0x6C00;
    pub const HOST_CR3: u32 = 0x6C02;
    pub const HOST_CR4: u32 = 0x6C04;
    pub const HOST_FS_BASE: u32 = 0x6C06;
    pub const HOST_GS_BASE: u32 = 0x6C08;
    pub const HOST_TR_BASE: u32 = 0x6C0A;
    pub const HOST_GDTR_BASE: u32 = 0x6C0C;
    pub const HOST_IDTR_BASE: u32 = 0x6C0E;
    pub const HOST_SYSENTER_ESP: u32 = 0x6C10;
    pub const HOST_SYSENTER_EIP: u32 = 0x6C12;
    pub const HOST_RSP: u32 = 0x6C14;
    pub const HOST_RIP: u32 = 0x6C16;
}
use field::*;

pub mod reason {
    pub const TRIPLE_FAULT: u32 = 2;
    pub const INIT: u32 = 3;
    pub const SIPI: u32 = 4;
    pub const CPUID: u32 = 10;
    pub const HLT: u32 = 12;
    pub const VMCALL: u32 = 18;
    pub const VMCLEAR: u32 = 19;
    pub const VMXOFF: u32 = 26;
    pub const VMXON: u32 = 27;
    pub const EPT_VIOLATION: u32 = 48;
    pub const EPT_MISCONFIG: u32 = 49;
    pub const INVEPT: u32 = 50;
    pub const INVVPID: u32 = 53;
    pub const COUNT: usize = 70;

    pub fn name(r: u32) -> &'static str {
        match r {
            0 => "exception_nmi",
            1 => "external_interrupt",
            2 => "triple_fault",
            3 => "init",
            4 => "sipi",
            7 => "interrupt_window",
            10 => "cpuid",
            12 => "hlt",
            14 => "invlpg",
            16 => "rdtsc",
            18 => "vmcall",
            19..=27 => "vmx_instruction",
            28 => "cr_access",
            30 => "io",
            31 => "rdmsr",
            32 => "wrmsr",
            33 => "invalid_guest_state",
            48 => "ept_violation",
            49 => "ept_misconfig",
            50 | 53 => "vmx_instruction",
            _ => "other",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum VmxError {
    VmxonFailed,
    VmclearFailed,
    VmptrldFailed,
    VmwriteFailed(u32),
    /// VMLAUNCH failed; the VM-instruction error number (SDM §31.4).
    LaunchFailed(u64),
}

/// Guest general-purpose registers as the exit stub saves them (RSP/RIP live in the VMCS): the same layout as
/// the trap frame's.
pub type GuestRegs = questv_arch::regs::Gprs;

/// # Safety
/// VMX root operation with a current VMCS.
pub unsafe fn vmread(f: u32) -> u64 {
    let v: u64;
    // SAFETY: caller guarantees a current VMCS; reading an unsupported field only sets the flags.
    unsafe { asm!("vmread {}, {}", out(reg) v, in(reg) u64::from(f), options(nostack)) };
    v
}

/// # Safety
/// VMX root operation with a current VMCS; the value must be valid for the field.
pub unsafe fn vmwrite(f: u32, v: u64) -> Result<(), VmxError> {
    let ok: u8;
    // SAFETY: caller guarantees a current VMCS. Failure is reported through CF/ZF.
    unsafe { asm!("vmwrite {}, {}", "setna {}", in(reg) u64::from(f), in(reg) v, out(reg_byte) ok, options(nostack)) };
    if ok != 0 {
        Err(VmxError::VmwriteFailed(f))
    } else {
        Ok(())
    }
}

const MSR_VMX_BASIC: u32 = 0x480;
const MSR_VMX_CR0_FIXED0: u32 = 0x486;
const MSR_VMX_CR0_FIXED1: u32 = 0x487;
const MSR_VMX_CR4_FIXED0: u32 = 0x488;
const MSR_VMX_CR4_FIXED1: u32 = 0x489;
const CR4_VMXE: u64 = 1 << 13;

/// Adjust a control value to what the capability MSR allows (bits 0–31: must be 1; 32–63: may be 1).
fn adjust(msr: u32, want: u32) -> u32 {
    // SAFETY: only called after the capability check confirmed VMX (the MSRs exist).
    let cap = unsafe { cpu::rdmsr(msr) };
    (want | cap as u32) & (cap >> 32) as u32
}

fn control_msrs() -> (u32, u32, u32, u32) {
    // SAFETY: VMX present (checked by the caller of enable()).
    let basic = unsafe { cpu::rdmsr(MSR_VMX_BASIC) };
    if basic & (1 << 55) != 0 {
        (0x48D, 0x48E, 0x48F, 0x490)
    } else {
        (0x481, 0x482, 0x483, 0x484)
    }
}

pub fn vmcs_revision() -> u32 {
    // SAFETY: VMX present.
    (unsafe { cpu::rdmsr(MSR_VMX_BASIC) } & 0x7FFF_FFFF) as u32
}

/// Enter VMX root operation on this core.
///
/// # Safety
/// `vmxon_region` is the physical (= virtual, identity mapped) address of a zeroed, 4 KiB-aligned page owned by
/// this core for as long as VMX is on; VMX support was checked (caps::evaluate).
pub unsafe fn enable(vmxon_region: u64) -> Result<(), VmxError> {
    // SAFETY: IA32_FEATURE_CONTROL exists on VMX CPUs; if firmware left it unlocked we enable VMXON outside SMX
    // and lock it (a locked MSR with the bit clear was refused by caps::evaluate).
    unsafe {
        let fc = cpu::rdmsr(0x3A);
        if fc & 1 == 0 {
            cpu::wrmsr(0x3A, fc | 1 | (1 << 2));
        }
        let cr0 = (cpu::read_cr0() | cpu::rdmsr(MSR_VMX_CR0_FIXED0)) & cpu::rdmsr(MSR_VMX_CR0_FIXED1);
        asm!("mov cr0, {}", in(reg) cr0, options(nostack));
        let cr4 = (cpu::read_cr4() | CR4_VMXE | cpu::rdmsr(MSR_VMX_CR4_FIXED0)) & cpu::rdmsr(MSR_VMX_CR4_FIXED1);
        cpu::write_cr4(cr4);
        core::ptr::write_volatile(vmxon_region as *mut u32, vmcs_revision());
        let fail: u8;
        asm!("vmxon [{}]", "setna {}", in(reg) &vmxon_region, out(reg_byte) fail, options(nostack));
        if fail != 0 {
            return Err(VmxError::VmxonFailed);
        }
    }
    Ok(())
}

/// Everything needed to start one sandbox on this core.
#[derive(Clone, Copy, Debug)]
pub struct LaunchConfig {
    pub vmxon: u64,
    pub vmcs: u64,
    pub msr_bitmap: u64,
    pub eptp: u64,
    /// Guest-physical entry point (32-bit protected mode, paging off).
    pub entry: u32,
    pub rax: u32,
    pub rbx: u32,
    /// Top of this core's monitor stack (VM exits run on it).
    pub host_stack_top: u64,
    pub host_tr_base: u64,
}

extern "C" {
    fn questv_vmexit_entry();
}

/// Set up the VMCS and launch the guest. Returns only if VMLAUNCH fails.
///
/// # Safety
/// VMX root operation on this core (enable()); all addresses in `c` are identity-mapped, owned pages;
/// interrupts are off and stay off in the host from now on.
pub unsafe fn launch(c: &LaunchConfig) -> VmxError {
    // SAFETY: the caller's contract (VMX root, owned identity-mapped pages) is setup's.
    match unsafe { setup(c) } {
        Ok(()) => {}
        Err(e) => return e,
    }
    let fail: u8;
    // SAFETY: the VMCS is current and complete; on success control never returns here.
    unsafe {
        // RBX is reserved by LLVM: load it by hand and restore it if VMLAUNCH fails (POP keeps the flags).
        asm!(
            "push rbx",
            "mov rbx, {b}",
            "vmlaunch",
            "pop rbx",
            "setna {fail}",
            b = in(reg) u64::from(c.rbx),
            fail = out(reg_byte) fail,
            in("rax") u64::from(c.rax),
        );
    }
    let _ = fail;
    // SAFETY: the VMCS is current; the error field explains the failure.
    VmxError::LaunchFailed(unsafe { vmread(VM_INSTRUCTION_ERROR) })
}

/// # Safety
/// As for [`launch`].
unsafe fn setup(c: &LaunchConfig) -> Result<(), VmxError> {
    let (pin_msr, proc_msr, exit_msr, entry_msr) = control_msrs();
    // SAFETY: VMX root; the VMCS page is ours.
    unsafe {
        core::ptr::write_volatile(c.vmcs as *mut u32, vmcs_revision());
        let mut fail: u8;
        asm!("vmclear [{}]", "setna {}", in(reg) &c.vmcs, out(reg_byte) fail, options(nostack));
        if fail != 0 {
            return Err(VmxError::VmclearFailed);
        }
        asm!("vmptrld [{}]", "setna {}", in(reg) &c.vmcs, out(reg_byte) fail, options(nostack));
        if fail != 0 {
            return Err(VmxError::VmptrldFailed);
        }

        // Controls.
        vmwrite(PIN_CONTROLS, u64::from(adjust(pin_msr, 0)))?;
        let proc = (1 << 28) | (1 << 31); // use MSR bitmaps, activate secondary controls
        vmwrite(PROC_CONTROLS, u64::from(adjust(proc_msr, proc)))?;
        let proc2 = (1 << 1) | (1 << 7); // enable EPT, unrestricted guest
        vmwrite(PROC_CONTROLS2, u64::from(adjust(0x48B, proc2)))?;
        let exit = (1 << 9) | (1 << 20) | (1 << 21); // 64-bit host, save/load IA32_EFER
        vmwrite(EXIT_CONTROLS, u64::from(adjust(exit_msr, exit)))?;
        let entry = 1 << 15; // load IA32_EFER
        vmwrite(ENTRY_CONTROLS, u64::from(adjust(entry_msr, entry)))?;
        vmwrite(EXCEPTION_BITMAP, 0)?;
        vmwrite(CR3_TARGET_COUNT, 0)?;
        vmwrite(EXIT_MSR_STORE_COUNT, 0)?;
        vmwrite(EXIT_MSR_LOAD_COUNT, 0)?;
        vmwrite(ENTRY_MSR_LOAD_COUNT, 0)?;
        vmwrite(ENTRY_INTERRUPTION_INFO, 0)?;
        vmwrite(MSR_BITMAP, c.msr_bitmap)?;
        vmwrite(EPT_POINTER, c.eptp)?;
        // The guest owns CR0/CR4 except CR4.VMXE, which it must neither see nor clear.
        vmwrite(CR0_MASK, 0)?;
        vmwrite(CR4_MASK, CR4_VMXE)?;
        vmwrite(CR0_SHADOW, 0)?;
        vmwrite(CR4_SHADOW, 0)?;
        vmwrite(VMCS_LINK_POINTER, u64::MAX)?;

        // Host state: this core as it is now; exits land in questv_vmexit_entry on the monitor stack.
        vmwrite(HOST_CR0, cpu::read_cr0())?;
        vmwrite(HOST_CR3, cpu::read_cr3())?;
        vmwrite(HOST_CR4, cpu::read_cr4())?;
        vmwrite(HOST_CS_SEL, u64::from(questv_arch::gdt::KERNEL_CS))?;
        for f in [HOST_SS_SEL, HOST_DS_SEL, HOST_ES_SEL] {
            vmwrite(f, u64::from(questv_arch::gdt::KERNEL_DS))?;
        }
        vmwrite(HOST_FS_SEL, 0)?;
        vmwrite(HOST_GS_SEL, 0)?;
        vmwrite(HOST_TR_SEL, u64::from(questv_arch::gdt::TSS_SEL))?;
        vmwrite(HOST_FS_BASE, 0)?;
        vmwrite(HOST_GS_BASE, cpu::rdmsr(cpu::MSR_GS_BASE))?;
        vmwrite(HOST_TR_BASE, c.host_tr_base)?;
        let mut gdtr = [0u8; 10];
        let mut idtr = [0u8; 10];
        asm!("sgdt [{}]", in(reg) gdtr.as_mut_ptr(), options(nostack));
        asm!("sidt [{}]", in(reg) idtr.as_mut_ptr(), options(nostack));
        vmwrite(HOST_GDTR_BASE, u64::from_le_bytes(gdtr[2..10].try_into().unwrap()))?;
        vmwrite(HOST_IDTR_BASE, u64::from_le_bytes(idtr[2..10].try_into().unwrap()))?;
        vmwrite(HOST_SYSENTER_CS, 0)?;
        vmwrite(HOST_SYSENTER_ESP, 0)?;
        vmwrite(HOST_SYSENTER_EIP, 0)?;
        vmwrite(HOST_EFER, cpu::rdmsr(cpu::MSR_EFER))?;
        vmwrite(HOST_RSP, c.host_stack_top & !0xF)?;
        vmwrite(HOST_RIP, questv_vmexit_entry as *const () as u64)?;

        // Guest state: as GRUB leaves a multiboot2 kernel — flat 32-bit protected mode, paging off.
        let cr0 = 0x31; // PE | ET | NE
        vmwrite(GUEST_CR0, cr0)?;
        vmwrite(GUEST_CR3, 0)?;
        vmwrite(GUEST_CR4, CR4_VMXE)?;
        vmwrite(GUEST_EFER, 0)?;
        vmwrite(GUEST_DR7, 0x400)?;
        vmwrite(GUEST_RSP, 0)?;
        vmwrite(GUEST_RIP, u64::from(c.entry))?;
        vmwrite(GUEST_RFLAGS, 0x2)?;
        vmwrite(GUEST_CS_SEL, 0x08)?;
        vmwrite(GUEST_CS_AR, 0xC09B)?;
        // ES, SS, DS, FS, GS: flat data (field encodings are 2 apart, CS included).
        for i in 0..6u32 {
            if i == 1 {
                continue;
            }
            vmwrite(GUEST_ES_SEL + 2 * i, 0x10)?;
            vmwrite(GUEST_ES_AR + 2 * i, 0xC093)?;
        }
        for i in 0..6u32 {
            vmwrite(GUEST_ES_LIMIT + 2 * i, 0xFFFF_FFFF)?;
            vmwrite(GUEST_ES_BASE + 2 * i, 0)?;
        }
        vmwrite(GUEST_LDTR_SEL, 0)?;
        vmwrite(GUEST_LDTR_AR, 1 << 16)?; // unusable
        vmwrite(GUEST_LDTR_LIMIT, 0)?;
        vmwrite(GUEST_LDTR_BASE, 0)?;
        vmwrite(GUEST_TR_SEL, 0)?;
        vmwrite(GUEST_TR_AR, 0x8B)?; // busy 32-bit TSS, present
        vmwrite(GUEST_TR_LIMIT, 0x67)?;
        vmwrite(GUEST_TR_BASE, 0)?;
        vmwrite(GUEST_GDTR_BASE, 0)?;
        vmwrite(GUEST_GDTR_LIMIT, 0xFFFF)?;
        vmwrite(GUEST_IDTR_BASE, 0)?;
        vmwrite(GUEST_IDTR_LIMIT, 0)?;
        vmwrite(GUEST_INTERRUPTIBILITY, 0)?;
        vmwrite(GUEST_ACTIVITY, 0)?;
        vmwrite(GUEST_PENDING_DBG, 0)?;
        vmwrite(GUEST_SYSENTER_CS, 0)?;
        vmwrite(GUEST_SYSENTER_ESP, 0)?;
        vmwrite(GUEST_SYSENTER_EIP, 0)?;
    }
    Ok(())
}

// VM exit: save the guest GPRs and its FPU/SSE state (the handler is Rust on precompiled core, which uses
// SSE), call the handler, and resume unless it asks to stop this sandbox.
global_asm!(
    r#"
    .global questv_vmexit_entry
questv_vmexit_entry:
"#,
    questv_arch::push_gprs_asm!(),
    r#"    sub $520, %rsp
    fxsave64 (%rsp)
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
"#,
    options(att_syntax)
);

/// The monitor's exit policy: returns true to resume the guest, false to stop this sandbox for good.
pub type ExitHandler = fn(&mut GuestRegs, u32) -> bool;
static HANDLER: AtomicUsize = AtomicUsize::new(0);
/// Exits per core and reason.
static EXITS: [[AtomicU64; reason::COUNT]; percpu::MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; reason::COUNT] }; percpu::MAX_CPUS];

pub fn set_exit_handler(h: ExitHandler) {
    HANDLER.store(h as usize, Ordering::SeqCst);
}

/// (reason, count) of every reason that occurred on `cpu`.
pub fn exit_counts(cpu: u32) -> impl Iterator<Item = (u32, u64)> {
    EXITS[cpu as usize]
        .iter()
        .enumerate()
        .map(|(r, c)| (r as u32, c.load(Ordering::Relaxed)))
        .filter(|&(_, c)| c > 0)
}

#[no_mangle]
extern "C" fn questv_vmexit(regs: &mut GuestRegs) -> u64 {
    // SAFETY: we are in the VM-exit path: VMX root with this core's VMCS current.
    let r = (unsafe { vmread(EXIT_REASON) } & 0xFFFF) as u32;
    if (r as usize) < reason::COUNT {
        EXITS[percpu::cpu_index() as usize][r as usize].fetch_add(1, Ordering::Relaxed);
    }
    let h = HANDLER.load(Ordering::SeqCst);
    if h == 0 {
        return 1;
    }
    // SAFETY: only ever stores an ExitHandler.
    let f: ExitHandler = unsafe { core::mem::transmute::<usize, ExitHandler>(h) };
    u64::from(!f(regs, r))
}

#[no_mangle]
extern "C" fn questv_vmresume_failed() -> ! {
    // SAFETY: VMX root with a current VMCS.
    let err = unsafe { vmread(VM_INSTRUCTION_ERROR) };
    panic!("VMRESUME failed: VM-instruction error {}", err);
}

/// Skip the instruction that caused the current exit.
///
/// # Safety
/// In the VM-exit handler.
pub unsafe fn skip_instruction() {
    // SAFETY: caller is in the exit handler with the VMCS current.
    unsafe {
        let rip = vmread(GUEST_RIP);
        let len = vmread(EXIT_INSTRUCTION_LEN);
        let _ = vmwrite(GUEST_RIP, rip + len);
    }
}

/// Inject #UD into the guest at the next entry (for VMX instructions it may not use).
///
/// # Safety
/// In the VM-exit handler.
pub unsafe fn inject_ud() {
    // SAFETY: caller is in the exit handler; valid, hardware exception 6 without error code.
    unsafe {
        let _ = vmwrite(ENTRY_INTERRUPTION_INFO, (1 << 31) | (3 << 8) | 6);
    }
}
