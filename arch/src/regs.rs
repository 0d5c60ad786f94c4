//! The 15 general-purpose registers as the interrupt stubs and the VM-exit stub save them (pushed RAX first, so
//! R15 is at the lowest address). Shared by the trap frame and the VMX monitor's guest register block.
#![forbid(unsafe_code)]

/// FXSAVE image (x87/MMX/SSE state), 512 bytes, 16-byte aligned: in the trap frame, a signal frame, and the
/// monitor's copy of a guest's state between exits.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct FxArea(pub [u8; 512]);

impl FxArea {
    /// The power-on state a fresh thread, a signal handler and a launched guest start with: x87 control word
    /// 0x37F, MXCSR 0x1F80 (all exceptions masked).
    pub const fn initial() -> FxArea {
        let mut a = [0u8; 512];
        a[0] = 0x7F;
        a[1] = 0x03;
        a[24] = 0x80;
        a[25] = 0x1F;
        FxArea(a)
    }
}

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

/// AT&T assembly that pushes the general-purpose registers so that the stack then holds a [`Gprs`] (RAX pushed
/// first, R15 at the lowest address). Used by every entry stub whose saved registers are read as `Gprs`.
#[macro_export]
macro_rules! push_gprs_asm {
    () => {
        "push %rax\npush %rbx\npush %rcx\npush %rdx\npush %rsi\npush %rdi\npush %rbp\npush %r8\npush %r9\npush %r10\n\
         push %r11\npush %r12\npush %r13\npush %r14\npush %r15\n"
    };
}

/// The inverse of [`push_gprs_asm`].
#[macro_export]
macro_rules! pop_gprs_asm {
    () => {
        "pop %r15\npop %r14\npop %r13\npop %r12\npop %r11\npop %r10\npop %r9\npop %r8\npop %rbp\npop %rdi\n\
         pop %rsi\npop %rdx\npop %rcx\npop %rbx\npop %rax\n"
    };
}
