//! Per-CPU identification through the GS base: GS points at a small header holding this CPU's dense index
//! (0 = BSP) and APIC id. The kernel keeps its own per-CPU state in arrays indexed by that index.

use crate::cpu;

pub const MAX_CPUS: usize = 64;

#[repr(C)]
pub struct CpuHeader {
    self_ptr: u64,
    pub cpu_index: u32,
    pub apic_id: u32,
}

static mut HEADERS: [CpuHeader; MAX_CPUS] = {
    const EMPTY: CpuHeader = CpuHeader { self_ptr: 0, cpu_index: 0, apic_id: 0 };
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
    }
}

/// Dense index of the executing CPU (0 = bootstrap processor).
#[inline]
pub fn cpu_index() -> u32 {
    let v: u32;
    // SAFETY: GS points at this CPU's CpuHeader from the first instructions of its Rust entry (install()).
    unsafe { core::arch::asm!("mov {:e}, gs:[8]", out(reg) v, options(readonly, nostack, preserves_flags)) };
    v
}
