//! Copies between the kernel and the running process's memory through its live mapping (the lower half of the
//! loaded page tables), as Linux's uaccess does: one `rep movs` that may fault. A page fault on the copy
//! instruction is the kernel's to settle ([`fixup`]): it resolves the fault (copy-on-write, a page filled on
//! first touch) and the copy resumes where it stopped, or it sends the copy to its failure exit. The callers
//! check that the range is user space first: the copy never reaches the kernel's half.
//!
//! The kernel writes user pages only with CR0.WP set (boot.rs), so a read-only page (shared copy-on-write)
//! faults here as it would in user mode.

core::arch::global_asm!(
    r#"
    .pushsection .text.questv_user_copy, "ax"
    .global questv_user_copy
    /* rdi = destination, rsi = source, rdx = bytes; eax = 0 when all were copied, 1 after an unresolved fault. */
questv_user_copy:
    mov %rdx, %rcx
    shr $3, %rcx
    .global questv_user_copy_quads
questv_user_copy_quads:
    rep movsq
    mov %rdx, %rcx
    and $7, %rcx
    .global questv_user_copy_bytes
questv_user_copy_bytes:
    rep movsb
    xor %eax, %eax
    ret
    .global questv_user_copy_failed
questv_user_copy_failed:
    mov $1, %eax
    ret
    .popsection
"#,
    options(att_syntax)
);

unsafe extern "C" {
    fn questv_user_copy(dst: *mut u8, src: *const u8, len: usize) -> u32;
    static questv_user_copy_quads: u8;
    static questv_user_copy_bytes: u8;
    static questv_user_copy_failed: u8;
}

/// The end of user space: the lower half.
const USER_END: u64 = 0x0000_8000_0000_0000;

fn in_user_space(addr: u64, len: usize) -> bool {
    addr.checked_add(len as u64).is_some_and(|end| end <= USER_END)
}

/// Copy user memory at `src` of the running process into `dst`. Err if the range is not user space or a
/// page fault on it could not be resolved (`dst` is then partly written). The caller holds no lock the
/// page-fault path takes (the process's address space, the process table): a fault waits for them.
pub fn copy_from_user(dst: &mut [u8], src: u64) -> Result<(), ()> {
    if !in_user_space(src, dst.len()) {
        return Err(());
    }
    // SAFETY: `dst` is valid for its length; `src` lies in the lower half (user memory, mapped or not: a fault
    // there is resolved or sent to the failure exit by the kernel's exception hook); DF is clear (SysV ABI); the
    // routine clobbers only rcx, rdi, rsi and rax, as a C function may.
    if unsafe { questv_user_copy(dst.as_mut_ptr(), src as *const u8, dst.len()) } == 0 { Ok(()) } else { Err(()) }
}

/// Copy `src` into user memory at `dst` of the running process; as [`copy_from_user`].
pub fn copy_to_user(dst: u64, src: &[u8]) -> Result<(), ()> {
    if !in_user_space(dst, src.len()) {
        return Err(());
    }
    // SAFETY: as in copy_from_user, with the roles swapped.
    if unsafe { questv_user_copy(dst as *mut u8, src.as_ptr(), src.len()) } == 0 { Ok(()) } else { Err(()) }
}

/// If `rip` is the user-copy instruction, where a fault there that cannot be resolved continues: the copy's
/// failure exit.
pub fn fixup(rip: u64) -> Option<u64> {
    let at = |s: &u8| s as *const u8 as u64;
    // SAFETY: only the symbols' addresses are taken.
    let (quads, bytes, failed) = unsafe { (at(&questv_user_copy_quads), at(&questv_user_copy_bytes), at(&questv_user_copy_failed)) };
    (rip == quads || rip == bytes).then_some(failed)
}
