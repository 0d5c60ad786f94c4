//! Thin wrappers around privileged x86_64 instructions: port I/O, MSRs, control registers, CPUID, TSC,
//! interrupt flag. Every function here is a single instruction (or a tiny fixed sequence).

use core::arch::asm;

pub const MSR_APIC_BASE: u32 = 0x1B;
pub const MSR_EFER: u32 = 0xC000_0080;
pub const MSR_FS_BASE: u32 = 0xC000_0100;
pub const MSR_GS_BASE: u32 = 0xC000_0101;
pub const MSR_KERNEL_GS_BASE: u32 = 0xC000_0102;

/// # Safety
/// Port I/O can reconfigure hardware; the caller must own the device behind `port`.
#[inline]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: caller guarantees the port write is meaningful for the device it owns.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) }
}

/// # Safety
/// See [`outb`].
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: caller guarantees reading this port has no harmful side effect.
    unsafe { asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags)) };
    value
}

/// # Safety
/// See [`outb`].
#[inline]
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: caller owns the device.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags)) }
}

/// # Safety
/// See [`outb`].
#[inline]
pub unsafe fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: caller owns the device.
    unsafe { asm!("in eax, dx", out("eax") value, in("dx") port, options(nomem, nostack, preserves_flags)) };
    value
}

/// # Safety
/// Reading an MSR that does not exist raises #GP.
#[inline]
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: caller guarantees the MSR exists on this CPU.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// # Safety
/// Writing an MSR changes CPU behaviour; the caller must know the consequences.
#[inline]
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: caller guarantees the MSR and value are valid.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    }
}

/// Load a user thread's thread-pointer bases (`arch_prctl(ARCH_SET_FS/GS)`): FS directly, and GS into
/// IA32_KERNEL_GS_BASE, which holds the user's GS base whenever the kernel runs (SWAPGS at every entry from
/// user mode). Safe to call from kernel code: the kernel addresses nothing through FS or the user GS base.
pub fn set_user_tls(fs: u64, gs: u64) {
    // SAFETY: both MSRs exist on every x86-64 CPU and take any canonical address (callers check that: a
    // non-canonical value would #GP here); only user mode sees their effect.
    unsafe {
        wrmsr(MSR_FS_BASE, fs);
        wrmsr(MSR_KERNEL_GS_BASE, gs);
    }
}

/// Whether `addr` is canonical (bits 63..47 all equal), as FS/GS bases and user pointers must be.
pub fn is_canonical(addr: u64) -> bool {
    let top = addr >> 47;
    top == 0 || top == 0x1_FFFF
}

#[derive(Clone, Copy, Debug)]
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

#[inline]
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    CpuidResult { eax: r.eax, ebx: r.ebx, ecx: r.ecx, edx: r.edx }
}

/// Does this CPU support x2APIC mode (CPUID.01H:ECX[21])?
pub fn has_x2apic() -> bool {
    cpuid(1, 0).ecx & (1 << 21) != 0
}

/// Initial APIC id as reported by CPUID (8 bits; good enough to identify a CPU before its LAPIC is set up).
pub fn initial_apic_id() -> u32 {
    cpuid(1, 0).ebx >> 24
}

/// Zero `len` bytes at `addr` with `rep stosq` (the monitor scrubs a whole sandbox slice with it: several times
/// faster than a byte-wise memset under emulation). `addr` and `len` must be multiples of 8.
///
/// # Safety
/// `[addr, addr + len)` (virtual addresses) is mapped, writable memory the caller owns.
pub unsafe fn zero_qwords(addr: u64, len: u64) {
    debug_assert!(addr % 8 == 0 && len % 8 == 0);
    // SAFETY: the caller's contract; DF is clear in Rust code (the ABI requires it).
    unsafe {
        core::arch::asm!("rep stosq", inout("rdi") addr => _, inout("rcx") len / 8 => _, in("rax") 0u64, options(nostack));
    }
}

/// The current stack pointer.
#[inline(always)]
pub fn stack_pointer() -> u64 {
    let rsp: u64;
    // SAFETY: reads a register.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    rsp
}

#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is unprivileged unless CR4.TSD is set, which we never set.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// DR0–DR3 (the four breakpoint addresses). The VMCS and VMCB hold DR7 (and the VMCB DR6) but not these: a
/// guest sees whatever the core last held.
pub fn debug_addresses() -> [u64; 4] {
    let (a, b, c, d): (u64, u64, u64, u64);
    // SAFETY: reading debug registers at CPL 0 (all kernel code) has no side effects.
    unsafe {
        asm!("mov {}, dr0", "mov {}, dr1", "mov {}, dr2", "mov {}, dr3", out(reg) a, out(reg) b, out(reg) c, out(reg) d,
             options(nomem, nostack, preserves_flags));
    }
    [a, b, c, d]
}

/// Set DR0–DR3 (no breakpoint is armed unless DR7 enables it).
///
/// # Safety
/// CPL 0; the caller knows what DR7 arms (a breakpoint on the addresses it sets would fire).
pub unsafe fn set_debug_addresses(v: [u64; 4]) {
    // SAFETY: the caller's contract.
    unsafe {
        asm!("mov dr0, {}", "mov dr1, {}", "mov dr2, {}", "mov dr3, {}", in(reg) v[0], in(reg) v[1], in(reg) v[2], in(reg) v[3],
             options(nomem, nostack, preserves_flags));
    }
}

/// Power-on debug state on this core: DR0–DR3 zero, DR6 its reset value (DR7 is the VMCS's/VMCB's).
///
/// # Safety
/// CPL 0; no breakpoint of the caller's own is in use (the monitor uses none).
pub unsafe fn reset_debug_registers() {
    // SAFETY: the caller's contract; zero addresses with DR7's enables as they are.
    unsafe {
        set_debug_addresses([0; 4]);
        asm!("mov dr6, {}", in(reg) 0xFFFF_0FF0u64, options(nomem, nostack, preserves_flags));
    }
}

/// MXCSR and the x87 control word.
pub fn fpu_controls() -> (u32, u16) {
    let mut mxcsr = 0u32;
    let mut cw = 0u16;
    // SAFETY: stores into our two locals.
    unsafe { asm!("stmxcsr [{}]", "fnstcw [{}]", in(reg) &mut mxcsr, in(reg) &mut cw, options(nostack, preserves_flags)) };
    (mxcsr, cw)
}

#[inline]
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

#[inline]
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// # Safety
/// `pml4` must be the physical address of a valid PML4 that maps the currently executing code and stack.
#[inline]
pub unsafe fn write_cr3(pml4: u64) {
    // SAFETY: caller guarantees the new address space maps everything in use.
    unsafe { asm!("mov cr3, {}", in(reg) pml4, options(nostack, preserves_flags)) }
}

/// Drop this CPU's TLB entry for `va` (all non-global entries if `va` is not canonical, where INVLPG would
/// fault).
#[inline]
pub fn flush_tlb_page(va: u64) {
    let canonical = va < 0x0000_8000_0000_0000 || va >= 0xFFFF_8000_0000_0000;
    if canonical {
        // SAFETY: a canonical address; INVLPG only drops a TLB entry.
        unsafe { invlpg(va) }
    } else {
        flush_tlb();
    }
}

/// Drop this CPU's non-global TLB entries (CR3 reloaded with its own value: nothing else changes).
#[inline]
pub fn flush_tlb() {
    // SAFETY: the address space stays the one in use.
    unsafe { write_cr3(read_cr3()) }
}

#[inline]
pub fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

#[inline]
pub fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// # Safety
/// Changing CR4 changes paging/SSE/VMX behaviour.
#[inline]
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: caller guarantees the value is valid for this CPU.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags)) }
}

#[inline]
pub fn interrupts_enabled() -> bool {
    let flags: u64;
    // SAFETY: reading RFLAGS has no side effects.
    unsafe { asm!("pushfq", "pop {}", out(reg) flags, options(preserves_flags)) };
    flags & (1 << 9) != 0
}

#[inline]
pub fn disable_interrupts() {
    // SAFETY: masking interrupts cannot break memory safety.
    unsafe { asm!("cli", options(nomem, nostack)) }
}

/// # Safety
/// Interrupt handlers (IDT, stacks) must be set up before interrupts are enabled.
#[inline]
pub unsafe fn enable_interrupts() {
    // SAFETY: caller guarantees the IDT is ready.
    unsafe { asm!("sti", options(nomem, nostack)) }
}

/// Enable interrupts and halt atomically (STI's one-instruction shadow covers HLT), so a wakeup interrupt
/// arriving between the two cannot be lost.
///
/// # Safety
/// As [`enable_interrupts`].
#[inline]
pub unsafe fn enable_interrupts_and_halt() {
    // SAFETY: caller guarantees the IDT is ready.
    unsafe { asm!("sti; hlt", options(nomem, nostack)) }
}

/// Let interrupts that are pending in, then mask them again (STI, one instruction, CLI): a kernel loop that
/// runs with interrupts off so its data stays consistent can still take the timer tick while it waits.
///
/// # Safety
/// As [`enable_interrupts`]; and the caller holds no lock an interrupt handler takes.
#[inline]
pub unsafe fn interrupt_window() {
    // SAFETY: caller guarantees the IDT is ready and no handler's lock is held.
    unsafe { asm!("sti", "nop", "cli", options(nomem, nostack)) }
}

#[inline]
pub fn halt() {
    // SAFETY: HLT only waits for the next interrupt.
    unsafe { asm!("hlt", options(nomem, nostack, preserves_flags)) }
}

/// Stop this CPU for good: interrupts off, halt forever (NMIs return to the halt).
pub fn halt_forever() -> ! {
    disable_interrupts();
    loop {
        halt();
    }
}

#[inline]
pub fn pause() {
    core::hint::spin_loop();
}

/// Run `f` with interrupts disabled, restoring the previous interrupt flag afterwards.
#[inline]
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    let was_enabled = interrupts_enabled();
    if was_enabled {
        disable_interrupts();
    }
    let r = f();
    if was_enabled {
        // SAFETY: interrupts were enabled on entry, so the IDT is set up.
        unsafe { enable_interrupts() };
    }
    r
}

/// # Safety
/// `addr` must be a canonical address; flushing a TLB entry is otherwise harmless.
#[inline]
pub unsafe fn invlpg(addr: u64) {
    // SAFETY: caller guarantees the address is canonical.
    unsafe { asm!("invlpg [{}]", in(reg) addr, options(nostack, preserves_flags)) }
}

/// Busy-wait roughly `us` microseconds using the legacy PIT-independent port 0x80 delay (~1 µs per access).
/// Only used for INIT/SIPI spacing before the LAPIC timer is calibrated.
pub fn io_delay_us(us: u32) {
    for _ in 0..us {
        // SAFETY: port 0x80 is the POST diagnostic port; writes are harmless and take ~1 µs.
        unsafe { outb(0x80, 0) };
    }
}

/// Is this an AMD (or Hygon) CPU, whose hypercall instruction is VMMCALL rather than VMCALL? Decided once
/// from the CPUID vendor (one CPUID exit under the monitor), so the same image runs on either.
pub fn is_amd() -> bool {
    static VENDOR: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);
    match VENDOR.load(core::sync::atomic::Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let v = cpuid(0, 0);
            // "AuthenticAMD" / "HygonGenuine": EBX holds the first four bytes.
            let amd = v.ebx == u32::from_le_bytes(*b"Auth") || v.ebx == u32::from_le_bytes(*b"Hygo");
            VENDOR.store(if amd { 2 } else { 1 }, core::sync::atomic::Ordering::Relaxed);
            amd
        }
    }
}

/// Hypercall to the monitor (VT sandboxes only): number in RAX, arguments in RBX and RCX; returns RAX (ABI:
/// vmx/src/hypercall.rs). VMCALL on Intel, VMMCALL on AMD.
pub fn vmcall(nr: u64, arg1: u64, arg2: u64) -> u64 {
    let ret: u64;
    // SAFETY: the instruction exits to the monitor, which handles it and resumes (or stops this sandbox).
    // Outside a guest it raises #UD, which the kernel reports; RBX is reserved by LLVM, so it is swapped by hand.
    unsafe {
        if is_amd() {
            core::arch::asm!("xchg {a}, rbx", "vmmcall", "xchg {a}, rbx", a = inout(reg) arg1 => _,
                             inlateout("rax") nr => ret, inout("rcx") arg2 => _);
        } else {
            core::arch::asm!("xchg {a}, rbx", "vmcall", "xchg {a}, rbx", a = inout(reg) arg1 => _,
                             inlateout("rax") nr => ret, inout("rcx") arg2 => _);
        }
    }
    ret
}
