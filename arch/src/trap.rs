//! Interrupt descriptor table, entry stubs and the trap frame.
//!
//! Each vector has a stub that pushes a uniform frame (error code or 0, vector, all GPRs, then the 512-byte
//! FXSAVE image) on its IST stack and calls [`questv_trap_dispatch`]. The FXSAVE happens before any Rust code
//! runs because the precompiled `core` freely uses SSE registers. Context switches are done by copying whole
//! frames (see kernel/src/sched.rs), so the IST stacks hold nothing once a handler returns.

use crate::cpu;
use crate::gdt;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Once;

core::arch::global_asm!(r#"
    .pushsection .text.traps, "ax"
    .code64
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119,120,121,122,123,124,125,126,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159,160,161,162,163,164,165,166,167,168,169,170,171,172,173,174,175,176,177,178,179,180,181,182,183,184,185,186,187,188,189,190,191,192,193,194,195,196,197,198,199,200,201,202,203,204,205,206,207,208,209,210,211,212,213,214,215,216,217,218,219,220,221,222,223,224,225,226,227,228,229,230,231,232,233,234,235,236,237,238,239,240,241,242,243,244,245,246,247,248,249,250,251,252,253,254,255
    .balign 16
trap_stub_\n:
    .if (\n == 8) || (\n == 10) || (\n == 11) || (\n == 12) || (\n == 13) || (\n == 14) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
    .else
    push $0
    .endif
    push $\n
    jmp trap_common
    .endr

trap_common:
    /* Entered from user mode (CS.RPL = 3, at 24(%rsp)): switch to the kernel's GS base. */
    testb $3, 24(%rsp)
    jz 1f
    swapgs
1:
"#,
    crate::push_gprs_asm!(),
    r#"    sub $512, %rsp
    fxsave64 (%rsp)
    mov %rsp, %rdi
    cld
    call questv_trap_dispatch
    fxrstor64 (%rsp)
    add $512, %rsp
"#,
    crate::pop_gprs_asm!(),
    r#"    /* Returning to user mode (the frame may be another thread's after a switch): restore the user GS base. */
    testb $3, 24(%rsp)
    jz 2f
    swapgs
2:
    add $16, %rsp
    iretq

    /* SYSCALL entry: build the same frame an interrupt from user mode would (vector 0x100, no IST: the
       thread's own kernel stack, from the per-CPU header at %gs:24), then share trap_common. Interrupts are
       masked by IA32_FMASK until the handler chooses to enable them. */
    .global syscall_entry
syscall_entry:
    swapgs
    mov %rsp, %gs:16
    mov %gs:24, %rsp
    and $-16, %rsp                  /* fxsave64 in trap_common needs the frame 16-byte aligned */
    pushq $0x1b
    pushq %gs:16
    push %r11
    pushq $0x23
    push %rcx
    pushq $0
    pushq $0x100
    swapgs                          /* trap_common swaps again: the frame's CS is a user selector */
    jmp trap_common

    .section .rodata.traps, "a"
    .balign 8
    .global trap_stub_table
trap_stub_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119,120,121,122,123,124,125,126,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159,160,161,162,163,164,165,166,167,168,169,170,171,172,173,174,175,176,177,178,179,180,181,182,183,184,185,186,187,188,189,190,191,192,193,194,195,196,197,198,199,200,201,202,203,204,205,206,207,208,209,210,211,212,213,214,215,216,217,218,219,220,221,222,223,224,225,226,227,228,229,230,231,232,233,234,235,236,237,238,239,240,241,242,243,244,245,246,247,248,249,250,251,252,253,254,255
    .quad trap_stub_\n
    .endr
    .popsection"#, options(att_syntax));

pub use crate::regs::FxArea;

/// Register state of an interrupted context, exactly as the entry stub lays it out on the stack.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TrapFrame {
    pub fx: FxArea,
    pub gprs: crate::regs::Gprs,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 512 + 22 * 8);

impl TrapFrame {
    /// A frame that, when "returned to", starts a kernel thread at `entry(arg)` on `stack_top` with
    /// interrupts enabled.
    pub fn new_kernel_thread(entry: u64, arg: u64, stack_top: u64) -> TrapFrame {
        TrapFrame {
            fx: FxArea::initial(),
            gprs: crate::regs::Gprs { rdi: arg, ..Default::default() },
            vector: 0,
            error_code: 0,
            rip: entry,
            cs: u64::from(gdt::KERNEL_CS),
            rflags: 0x202,
            // The SysV ABI expects RSP ≡ 8 (mod 16) at function entry, as if a return address had been pushed.
            rsp: (stack_top & !0xF) - 8,
            ss: u64::from(gdt::KERNEL_DS),
        }
    }

    pub fn from_user(&self) -> bool {
        self.cs & 3 == 3
    }

    /// A frame entering user mode at `entry` with stack `rsp` and interrupts enabled.
    pub fn new_user(entry: u64, rsp: u64) -> TrapFrame {
        TrapFrame {
            rip: entry,
            rsp,
            cs: u64::from(gdt::USER_CS),
            ss: u64::from(gdt::USER_DS),
            rflags: 0x202,
            ..TrapFrame::new_kernel_thread(0, 0, 0)
        }
    }
}

pub const VECTOR_NMI: u8 = 2;
pub const VECTOR_DOUBLE_FAULT: u8 = 8;
pub const VECTOR_PAGE_FAULT: u8 = 14;
pub const VECTOR_MACHINE_CHECK: u8 = 18;
/// First vector available for IRQs and IPIs.
pub const FIRST_INTERRUPT_VECTOR: u8 = 32;

pub fn exception_name(vector: u64) -> (&'static str, &'static str) {
    match vector {
        0 => ("DE", "divide error"),
        1 => ("DB", "debug"),
        2 => ("NMI", "non-maskable interrupt"),
        3 => ("BP", "breakpoint"),
        4 => ("OF", "overflow"),
        5 => ("BR", "bound range exceeded"),
        6 => ("UD", "invalid opcode"),
        7 => ("NM", "device not available"),
        8 => ("DF", "double fault"),
        10 => ("TS", "invalid TSS"),
        11 => ("NP", "segment not present"),
        12 => ("SS", "stack-segment fault"),
        13 => ("GP", "general protection"),
        14 => ("PF", "page fault"),
        16 => ("MF", "x87 floating-point"),
        17 => ("AC", "alignment check"),
        18 => ("MC", "machine check"),
        19 => ("XM", "SIMD floating-point"),
        20 => ("VE", "virtualization exception"),
        21 => ("CP", "control protection"),
        _ => ("??", "reserved exception"),
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    _reserved: u32,
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static mut IDT: Idt = Idt([Gate { offset_low: 0, selector: 0, ist: 0, type_attr: 0, offset_mid: 0, offset_high: 0, _reserved: 0 }; 256]);

extern "C" {
    static trap_stub_table: [u64; 256];
}

/// Pseudo-vector the SYSCALL entry puts in its frame.
pub const VECTOR_SYSCALL: u64 = 0x100;

extern "C" {
    fn syscall_entry();
}

/// Enable SYSCALL on this CPU: entry point, segment bases, and the RFLAGS bits cleared on entry
/// (IF, TF, DF, AC). SYSRET is never used (we return with IRETQ), but STAR is set consistently.
pub fn init_syscall() {
    // SAFETY: these MSRs exist on every x86_64 CPU; the entry stub is set up above.
    unsafe {
        let efer = cpu::rdmsr(cpu::MSR_EFER);
        cpu::wrmsr(cpu::MSR_EFER, efer | 1);
        cpu::wrmsr(0xC000_0081, (0x10u64 << 48) | (u64::from(gdt::KERNEL_CS) << 32));
        cpu::wrmsr(0xC000_0082, syscall_entry as *const () as u64);
        cpu::wrmsr(0xC000_0084, 0x4_0700);
    }
}

/// Vector used by [`yield_via_trap`]; callable from ring 0 only.
pub const VECTOR_YIELD: u8 = 0x81;

/// Build the shared IDT (done once, on the BSP).
pub fn init_idt() {
    for v in 0..256usize {
        // SAFETY: trap_stub_table is a 256-entry table of stub addresses emitted by the assembly above.
        let addr = unsafe { trap_stub_table[v] };
        let ist = match v as u8 {
            VECTOR_DOUBLE_FAULT => gdt::IST_DOUBLE_FAULT,
            VECTOR_NMI => gdt::IST_NMI,
            VECTOR_MACHINE_CHECK => gdt::IST_MACHINE_CHECK,
            0..=31 => gdt::IST_EXCEPTION,
            _ => gdt::IST_INTERRUPT,
        };
        let gate = Gate {
            offset_low: addr as u16,
            selector: gdt::KERNEL_CS,
            ist,
            // Present, 64-bit interrupt gate (IF cleared on entry), DPL 0 but for the breakpoint and overflow
            // traps, which user code raises itself with INT3 / INTO (as on Linux: SIGTRAP, not #GP).
            type_attr: if v == 3 || v == 4 { 0xEE } else { 0x8E },
            offset_mid: (addr >> 16) as u16,
            offset_high: (addr >> 32) as u32,
            _reserved: 0,
        };
        // SAFETY: the IDT is written only here, on the BSP, before any other CPU loads it.
        unsafe { (*(&raw mut IDT)).0[v] = gate };
    }
}

/// A gate as it was before [`replace_gate`], for [`restore_gate`].
#[derive(Clone, Copy)]
pub struct SavedGate(Gate);

/// Point vector `vector` at `handler` (same selector and IST stack as before), reachable from privilege `dpl`
/// and up (3: INT n from user mode), and return the gate it replaces. For test hooks that need an entry of
/// their own (the attack suite's hostile handlers).
///
/// # Safety
/// `handler` is an interrupt entry point that copes with the frame the CPU pushes for this vector; the IDT is
/// shared by every CPU of this kernel, so no other CPU may take this vector meanwhile.
pub unsafe fn replace_gate(vector: u8, handler: u64, dpl: u8) -> SavedGate {
    // SAFETY: the caller's contract; one 16-byte entry of the IDT, written in place.
    unsafe {
        let slot = &mut (*(&raw mut IDT)).0[usize::from(vector)];
        let old = *slot;
        *slot = Gate {
            offset_low: handler as u16,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            type_attr: 0x8E | ((dpl & 3) << 5),
            ..old
        };
        SavedGate(old)
    }
}

/// Put back a gate [`replace_gate`] replaced.
///
/// # Safety
/// As for [`replace_gate`].
pub unsafe fn restore_gate(vector: u8, saved: SavedGate) {
    // SAFETY: the caller's contract.
    unsafe { (*(&raw mut IDT)).0[usize::from(vector)] = saved.0 };
}

/// Load the IDT on the current CPU.
pub fn load_idt() {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let ptr = Pointer { limit: (core::mem::size_of::<Idt>() - 1) as u16, base: (&raw const IDT) as u64 };
    // SAFETY: IDT is a static, fully initialised table.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags)) };
}

/// Handler for everything that is not an unhandled exception: IRQs, IPIs, the yield trap and exceptions the
/// kernel wants to see first (returns `true` if it handled the exception).
pub type InterruptHandler = fn(&mut TrapFrame);
pub type ExceptionHook = fn(&mut TrapFrame) -> bool;

// Set-once slots the kernel fills at start-up (later calls are ignored): the trap path calls up through them
// without naming the kernel.
static INTERRUPT_HANDLER: Once<InterruptHandler> = Once::new();
static EXCEPTION_HOOK: Once<ExceptionHook> = Once::new();
/// Set when a CPU panicked: an NMI then parks every other CPU.
pub static HALT_ALL: AtomicBool = AtomicBool::new(false);
/// Set by the VT monitor: an NMI that is not the halt signal is dropped, not fatal (a stopped sandbox's core
/// parks in VMX root with that sandbox's LAPIC settings, and platform NMIs may arrive there).
pub static IGNORE_STRAY_NMIS: AtomicBool = AtomicBool::new(false);

pub fn set_interrupt_handler(h: InterruptHandler) {
    INTERRUPT_HANDLER.call_once(|| h);
}

pub fn set_exception_hook(h: ExceptionHook) {
    EXCEPTION_HOOK.call_once(|| h);
}

/// Printer for the exception dump; set by the kernel to its console.
pub type DumpWriter = fn(core::fmt::Arguments);
static DUMP_WRITER: Once<DumpWriter> = Once::new();

pub fn set_dump_writer(w: DumpWriter) {
    DUMP_WRITER.call_once(|| w);
}

fn dump(args: core::fmt::Arguments) {
    if let Some(write) = DUMP_WRITER.get() {
        write(args);
    }
}

/// Print a readable exception dump for `frame`.
pub fn dump_exception(frame: &TrapFrame, cpu_index: u32) {
    let (mnemonic, name) = exception_name(frame.vector);
    let cr2 = cpu::read_cr2();
    dump(format_args!(
        "EXCEPTION #{} ({}) vector={} error=0x{:x} on cpu {}{}\n",
        mnemonic, name, frame.vector, frame.error_code, cpu_index,
        if frame.from_user() { " in user mode" } else { " in kernel mode" }
    ));
    if frame.vector == u64::from(VECTOR_PAGE_FAULT) {
        let e = frame.error_code;
        dump(format_args!(
            "  CR2=0x{:016x} ({}, {}, {}{}{})\n",
            cr2,
            if e & 1 != 0 { "protection violation" } else { "page not present" },
            if e & 2 != 0 { "write" } else { "read" },
            if e & 4 != 0 { "user" } else { "supervisor" },
            if e & 16 != 0 { ", instruction fetch" } else { "" },
            if e & 8 != 0 { ", reserved bit set" } else { "" },
        ));
    }
    dump(format_args!(
        "  RIP=0x{:016x} CS=0x{:x} RFLAGS=0x{:x} RSP=0x{:016x} SS=0x{:x}\n",
        frame.rip, frame.cs, frame.rflags, frame.rsp, frame.ss
    ));
    let r = &frame.gprs;
    dump(format_args!(
        "  RAX={:016x} RBX={:016x} RCX={:016x} RDX={:016x}\n  RSI={:016x} RDI={:016x} RBP={:016x} R8 ={:016x}\n  R9 ={:016x} R10={:016x} R11={:016x} R12={:016x}\n  R13={:016x} R14={:016x} R15={:016x} CR3={:016x}\n",
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.r8,
        r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, cpu::read_cr3()
    ));
    dump(format_args!(
        "RESULT exception vector={} name={} error=0x{:x} rip=0x{:x} cr2=0x{:x} cpu={} user={}\n",
        frame.vector, mnemonic, frame.error_code, frame.rip, cr2, cpu_index, u8::from(frame.from_user())
    ));
}

/// Called by the entry stubs with the frame they built. Exceptions the kernel's hook does not claim are
/// fatal: dump and panic (which halts all CPUs).
#[no_mangle]
extern "C" fn questv_trap_dispatch(frame: &mut TrapFrame) {
    let vector = frame.vector;
    if vector == u64::from(VECTOR_NMI) && HALT_ALL.load(Ordering::SeqCst) {
        cpu::halt_forever();
    }
    if vector == u64::from(VECTOR_NMI) && IGNORE_STRAY_NMIS.load(Ordering::SeqCst) {
        return;
    }
    if vector < u64::from(FIRST_INTERRUPT_VECTOR) {
        if EXCEPTION_HOOK.get().is_some_and(|hook| hook(frame)) {
            return;
        }
        let cpu_index = crate::percpu::cpu_index();
        dump_exception(frame, cpu_index);
        let (mnemonic, name) = exception_name(vector);
        panic!("unhandled exception #{} ({}) at rip=0x{:x}", mnemonic, name, frame.rip);
    }
    if let Some(handle) = INTERRUPT_HANDLER.get() {
        handle(frame);
    }
}

/// Enter the scheduler through the trap path (`int 0x81`), so voluntary and preemptive switches share one
/// frame format.
#[inline]
pub fn yield_via_trap() {
    // SAFETY: vector 0x81 is installed by init_idt and handled by the kernel's interrupt handler.
    unsafe { core::arch::asm!("int 0x81") };
}
