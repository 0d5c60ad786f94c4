//! Boot assembly: the multiboot2 header, the 32-bit entry GRUB jumps to, the switch to long mode, and the
//! real-mode trampoline application processors start in. Linked only into the kernel image (`bare`).
//!
//! Memory layout (see kernel/image/linker.ld): the image is loaded at 1 MiB physical and linked in the upper
//! half, at [`crate::paging::KERNEL_BASE`] + its physical address; only the `.boot` section (this header and the
//! 32-bit entry code, which runs before paging) is linked where it is loaded, and refers to everything else by
//! `symbol - KERNEL_BASE`. The boot page tables map the first 4 GiB with 2 MiB pages twice, at 0 (the code
//! running while paging comes on) and at KERNEL_BASE (everything after the jump to the upper half), until the
//! kernel builds its own tables, which keep only the upper half.

use core::arch::global_asm;

/// Where the AP trampoline may go: a page-aligned page below 640 KiB (the SIPI vector is its page number;
/// vectors 0xA0-0xBF are reserved), not page 0. The kernel picks one the memory map says is free
/// (`mm::memmap::pick_trampoline`): under UEFI the firmware's own use of low memory varies, so no address is
/// assumed.
pub const AP_TRAMPOLINE_LIMIT: u64 = 0xA_0000;

global_asm!(
    r#"
    .set MB2_MAGIC, 0xE85250D6
    .set MB2_BOOT_MAGIC, 0x36d76289
    .set CR4_BITS, (1 << 5) | (1 << 9) | (1 << 10)   /* PAE | OSFXSR | OSXMMEXCPT */
    .set EFER_BITS, (1 << 8) | (1 << 11)             /* LME | NXE */
    .set KERNEL_BASE, 0xFFFF800000000000             /* paging::KERNEL_BASE */

    .pushsection .multiboot2, "a"
    .balign 8
mb2_header_start:
    .long MB2_MAGIC
    .long 0                                  /* architecture: i386 protected mode */
    .long mb2_header_end - mb2_header_start
    .long 0x100000000 - (MB2_MAGIC + (mb2_header_end - mb2_header_start))
    .short 0                                 /* end tag */
    .short 0
    .long 8
mb2_header_end:

    .section .text.boot32, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    mov %eax, %ebp                           /* multiboot2 magic */
    mov %ebx, %esi                           /* multiboot2 information (physical) */

    /* Zero .bss ourselves rather than trusting every loader to do it. */
    mov $(__bss_start - KERNEL_BASE), %edi
    mov $(__bss_end - KERNEL_BASE), %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    mov $(boot_stack_top - KERNEL_BASE), %esp

    cmp $MB2_BOOT_MAGIC, %ebp
    jne .Lno_multiboot

    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb .Lno_long_mode
    mov $0x80000001, %eax
    cpuid
    test $(1 << 29), %edx
    jz .Lno_long_mode
    test $(1 << 20), %edx
    jz .Lno_nx

    /* PML4[0] and PML4[256] -> PDPT; PDPT[0..4] -> 4 page directories of 2 MiB pages: 0..4 GiB, mapped at 0
       and at KERNEL_BASE. */
    mov $(boot_pdpt - KERNEL_BASE), %eax
    or $3, %eax
    mov %eax, (boot_pml4 - KERNEL_BASE)
    mov %eax, (boot_pml4 - KERNEL_BASE + 256 * 8)
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $12, %eax
    add $(boot_pd - KERNEL_BASE), %eax
    or $3, %eax
    mov %eax, (boot_pdpt - KERNEL_BASE)(,%ecx,8)
    inc %ecx
    cmp $4, %ecx
    jne 1b
    xor %ecx, %ecx
2:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax                           /* present | writable | 2 MiB page */
    mov %eax, (boot_pd - KERNEL_BASE)(,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 2b

    mov $(boot_pml4 - KERNEL_BASE), %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $CR4_BITS, %eax
    mov %eax, %cr4
    mov $0xC0000080, %ecx
    rdmsr
    or $EFER_BITS, %eax
    wrmsr
    mov %cr0, %eax
    and $~(1 << 2), %eax                     /* EM off: SSE instructions must not trap */
    or $((1 << 31) | (1 << 16) | (1 << 5) | (1 << 1) | 1), %eax  /* PG | WP | NE | MP | PE */
    mov %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x18, $.Llong_mode

.Lno_multiboot:
    mov $msg_no_multiboot, %ebx
    jmp .Lfail32
.Lno_long_mode:
    mov $msg_no_long_mode, %ebx
    jmp .Lfail32
.Lno_nx:
    mov $msg_no_nx, %ebx
.Lfail32:
    /* Print the NUL-terminated string at %ebx on COM1 (polled) and halt. */
    movb (%ebx), %al
    test %al, %al
    jz 4f
    mov $0x3fd, %dx
3:  inb %dx, %al
    test $0x20, %al
    jz 3b
    movb (%ebx), %al
    mov $0x3f8, %dx
    outb %al, %dx
    inc %ebx
    jmp .Lfail32
4:  cli
    hlt
    jmp 4b

    .code64
.Llong_mode:
    movabs $.Lupper_half, %rax               /* on to the addresses the rest of the kernel is linked at */
    jmp *%rax

    .section .text.boot, "ax"
.Lupper_half:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    lea boot_stack_top(%rip), %rsp
    xor %ebp, %ebp
    mov %esi, %edi                           /* arg 0: multiboot2 information physical address */
    call questv_bsp_entry
5:  cli
    hlt
    jmp 5b

    /* ---- AP trampoline: copied to a free page below 640 KiB (the kernel picks it from the memory map), entered
       in real mode at BASE:0 by SIPI. Position independent: BASE comes from %cs; the three absolute pointers
       (the GDT's base, the two far-jump targets) are patched by install_ap_trampoline. ---- */
    .balign 16
    .code16
    .global ap_trampoline_start
ap_trampoline_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    movzwl %ax, %ebx
    shl $4, %ebx                             /* %ebx = BASE, kept through 32- and 64-bit code */
    lgdtl (ap_gdt_ptr - ap_trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl *(ap_pm_ptr - ap_trampoline_start)

    .code32
ap_pm:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $CR4_BITS, %eax
    mov %eax, %cr4
    mov (ap_param_cr3 - ap_trampoline_start)(%ebx), %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $EFER_BITS, %eax
    wrmsr
    mov %cr0, %eax
    and $~(1 << 2), %eax
    or $((1 << 31) | (1 << 16) | (1 << 5) | (1 << 1) | 1), %eax
    mov %eax, %cr0
    ljmp *(ap_lm_ptr - ap_trampoline_start)(%ebx)

    .code64
ap_lm:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    mov %ebx, %ebx                           /* zero-extend BASE */
    mov (ap_param_stack - ap_trampoline_start)(%rbx), %rsp
    mov (ap_param_cpu - ap_trampoline_start)(%rbx), %rdi
    mov (ap_param_entry - ap_trampoline_start)(%rbx), %rax
    xor %ebp, %ebp
    call *%rax
6:  cli
    hlt
    jmp 6b

    .balign 8
    .global ap_gdt
ap_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF                 /* 0x08: 32-bit code */
    .quad 0x00CF92000000FFFF                 /* 0x10: data */
    .quad 0x00AF9A000000FFFF                 /* 0x18: 64-bit code */
    .global ap_gdt_ptr, ap_pm_ptr, ap_lm_ptr, ap_pm, ap_lm
ap_gdt_ptr:
    .short 31
    .long 0                                  /* BASE + ap_gdt (patched) */
    .balign 8
ap_pm_ptr:
    .long 0                                  /* BASE + ap_pm (patched) */
    .short 0x08
    .balign 8
ap_lm_ptr:
    .long 0                                  /* BASE + ap_lm (patched) */
    .short 0x18
    .balign 8
    .global ap_param_cr3, ap_param_stack, ap_param_entry, ap_param_cpu
ap_param_cr3:   .quad 0
ap_param_stack: .quad 0
ap_param_entry: .quad 0
ap_param_cpu:   .quad 0
    .global ap_trampoline_end
ap_trampoline_end:

    .section .rodata.boot32, "a"
    .balign 8
    /* Accessed bits preset: the CPU would otherwise write them when loading a selector, and this table is
       read-only (in a VT sandbox the EPT maps kernel rodata without write). */
boot_gdt:
    .quad 0
    .quad 0x00CF9B000000FFFF
    .quad 0x00CF93000000FFFF
    .quad 0x00AF9B000000FFFF
boot_gdt_ptr:
    .short 31
    .long boot_gdt
msg_no_multiboot: .asciz "questv: not booted by a multiboot2 loader\r\n"
msg_no_long_mode: .asciz "questv: this CPU has no 64-bit long mode\r\n"
msg_no_nx:        .asciz "questv: this CPU has no NX (no-execute) support\r\n"

    .section .bss.boot, "aw", @nobits
    .balign 4096
    .global boot_pml4
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pd:   .skip 4096 * 4
    .balign 16
boot_stack: .skip 64 * 1024
    .global boot_stack_top
boot_stack_top:
    .popsection
"#,
    options(att_syntax)
);

extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_gdt: u8;
    static ap_gdt_ptr: u8;
    static ap_pm_ptr: u8;
    static ap_lm_ptr: u8;
    static ap_pm: u8;
    static ap_lm: u8;
    static ap_param_cr3: u8;
    static ap_param_stack: u8;
    static ap_param_entry: u8;
    static ap_param_cpu: u8;
}

/// Copy the AP trampoline to the page at `base` and fill its parameter block. After this, a SIPI with vector
/// `base >> 12` starts a CPU that enters `entry(cpu_index)` in long mode on `stack_top`.
///
/// # Safety
/// The page at `base` (page aligned, below [`AP_TRAMPOLINE_LIMIT`], not page 0) must be reserved for this
/// purpose (mapped at its own address, writable and executable, in `cr3`; unused), `cr3` must be below 4 GiB and map the kernel,
/// and no AP may be running the trampoline concurrently.
pub unsafe fn install_ap_trampoline(base: u64, cr3: u64, stack_top: u64, entry: extern "C" fn(u64) -> !, cpu_index: u64) {
    // Linker symbols inside the kernel image; only their addresses are taken.
    let start = &raw const ap_trampoline_start as u64;
    let off = |sym: *const u8| sym as u64 - start;
    let len = off(&raw const ap_trampoline_end) as usize;
    assert!(len < 4096, "AP trampoline larger than a page");
    assert!(base % 4096 == 0 && base != 0 && base < AP_TRAMPOLINE_LIMIT, "AP trampoline page {base:#x} not below 640 KiB");
    assert!(cr3 < (1 << 32), "AP page tables must be below 4 GiB");
    let page = crate::paging::phys_to_virt(base) as *mut u8;
    // SAFETY: caller reserved the trampoline page; the source is our own image; every offset is inside the
    // copied `len` bytes (the symbols lie between start and end).
    unsafe {
        core::ptr::copy_nonoverlapping(start as *const u8, page, len);
        let at = |sym: *const u8| page.add(off(sym) as usize);
        // The far pointers and the GDT pointer are 32-bit linear addresses: BASE < 1 MiB keeps them in range.
        core::ptr::write_unaligned(at(&raw const ap_gdt_ptr).add(2) as *mut u32, (base + off(&raw const ap_gdt)) as u32);
        core::ptr::write_unaligned(at(&raw const ap_pm_ptr) as *mut u32, (base + off(&raw const ap_pm)) as u32);
        core::ptr::write_unaligned(at(&raw const ap_lm_ptr) as *mut u32, (base + off(&raw const ap_lm)) as u32);
        core::ptr::write_volatile(at(&raw const ap_param_cr3) as *mut u64, cr3);
        core::ptr::write_volatile(at(&raw const ap_param_stack) as *mut u64, stack_top);
        core::ptr::write_volatile(at(&raw const ap_param_entry) as *mut u64, entry as usize as u64);
        core::ptr::write_volatile(at(&raw const ap_param_cpu) as *mut u64, cpu_index);
    }
}

/// Physical address of the boot PML4 (0..4 GiB at 0 and at KERNEL_BASE) built by the 32-bit entry code.
pub fn boot_pml4_phys() -> u64 {
    extern "C" {
        static boot_pml4: u8;
    }
    // Only the address of the linker symbol is taken.
    crate::paging::virt_to_phys(&raw const boot_pml4 as u64)
}
