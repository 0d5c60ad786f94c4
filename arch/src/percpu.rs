//! Per-CPU identification through the GS base: GS points at a small header holding this CPU's dense index
//! (0 = BSP) and APIC id. The kernel keeps its own per-CPU state in arrays indexed by that index.

use crate::cpu;

pub const MAX_CPUS: usize = 64;

#[repr(C)]
pub struct CpuHeader {
    self_ptr: u64,
    pub cpu_index: u32,
    pub apic_id: u32,
    /// Offset 16: the SYSCALL entry parks the user RSP here.
    user_rsp_scratch: u64,
    /// Offset 24: top of the running thread's kernel stack (SYSCALL entry switches to it).
    kernel_stack_top: u64,
}

static mut HEADERS: [CpuHeader; MAX_CPUS] = {
    const EMPTY: CpuHeader = CpuHeader { self_ptr: 0, cpu_index: 0, apic_id: 0, user_rsp_scratch: 0, kernel_stack_top: 0 };
    [EMPTY; MAX_CPUS]
};

/// Point GS at CPU `index`'s header. Must be the first thing a CPU does in long mode.
///
/// # Safety
/// Each index must be installed by exactly one CPU, once.
pub unsafe fn install(index: u32, apic_id: u32) {
    assert!((index as usize) < MAX_CPUS);
    // SAFETY: each CPU writes only its own slot (caller guarantee), before anyone reads it.
    unsafe {
        let h = &raw mut HEADERS[index as usize];
        (*h).self_ptr = h as u64;
        (*h).cpu_index = index;
        (*h).apic_id = apic_id;
        cpu::wrmsr(cpu::MSR_GS_BASE, h as u64);
        // User mode runs with GS base 0; SWAPGS exchanges the two on every kernel entry and exit.
        cpu::wrmsr(cpu::MSR_KERNEL_GS_BASE, 0);
    }
}

/// Set the kernel stack the SYSCALL entry of this CPU switches to (the running thread's).
pub fn set_kernel_stack_top(top: u64) {
    // SAFETY: GS points at this CPU's header (see install); offset 24 is kernel_stack_top.
    unsafe { core::arch::asm!("mov gs:[24], {}", in(reg) top, options(nostack, preserves_flags)) };
}

/// Dense index of the executing CPU (0 = bootstrap processor).
#[inline]
pub fn cpu_index() -> u32 {
    let v: u32;
    // SAFETY: GS points at this CPU's CpuHeader from the first instructions of its Rust entry (install()).
    unsafe { core::arch::asm!("mov {:e}, gs:[8]", out(reg) v, options(readonly, nostack, preserves_flags)) };
    v
}
