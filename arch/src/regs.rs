//! The 15 general-purpose registers as the interrupt stubs and the VM-exit stub save them (pushed RAX first, so
//! R15 is at the lowest address). Shared by the trap frame and the VMX monitor's guest register block.

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Gprs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
}
