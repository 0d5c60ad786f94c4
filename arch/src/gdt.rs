//! Per-CPU GDT and TSS with IST stacks.
//!
//! Every interrupt and exception runs on an IST stack, never on the interrupted stack: the precompiled
//! `core`/`alloc` we link against use the SysV red zone (128 bytes below RSP), which an interrupt pushing onto
//! the current stack would corrupt (see docs/build.md). Separate ISTs keep a fault inside an IRQ handler,
//! an NMI or a double fault from overwriting the frame of the context it interrupted.

use alloc::boxed::Box;
use core::arch::asm;

pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
/// User selectors, laid out for SYSRET (STAR[63:48] = 0x10: SS = 0x18|3, CS = 0x20|3).
pub const USER_DS: u16 = 0x18 | 3;
pub const USER_CS: u16 = 0x20 | 3;
pub const TSS_SEL: u16 = 0x28;

/// IST indices (1-based as in the IDT gate).
pub const IST_DOUBLE_FAULT: u8 = 1;
pub const IST_NMI: u8 = 2;
pub const IST_MACHINE_CHECK: u8 = 3;
pub const IST_EXCEPTION: u8 = 4;
pub const IST_INTERRUPT: u8 = 5;
const IST_COUNT: usize = 5;
pub const IST_STACK_SIZE: usize = 16 * 1024;

#[repr(C, packed(4))]
#[derive(Default)]
pub struct Tss {
    _reserved0: u32,
    pub rsp: [u64; 3],
    _reserved1: u64,
    pub ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    pub iomap_base: u16,
}

#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_SIZE]);

/// One CPU's descriptor tables. Leaked on creation: a CPU's GDT/TSS live as long as the CPU runs.
pub struct CpuTables {
    gdt: [u64; 7],
    pub tss: Tss,
}

fn tss_descriptor(tss: &Tss) -> (u64, u64) {
    let base = tss as *const Tss as u64;
    let limit = (core::mem::size_of::<Tss>() - 1) as u64;
    let low = (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (0x89 << 40) // present, type = available 64-bit TSS
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56);
    (low, base >> 32)
}

impl CpuTables {
    /// Allocate this CPU's GDT, TSS and IST stacks.
    pub fn new() -> &'static mut CpuTables {
        let tables = Box::leak(Box::new(CpuTables {
            gdt: [
                0,
                0x00AF_9A00_0000_FFFF, // 0x08 kernel code 64
                0x00CF_9200_0000_FFFF, // 0x10 kernel data
                0x00CF_F200_0000_FFFF, // 0x18 user data
                0x00AF_FA00_0000_FFFF, // 0x20 user code 64
                0,                     // 0x28 TSS (two slots)
                0,
            ],
            tss: Tss::default(),
        }));
        for i in 0..IST_COUNT {
            let stack: &'static mut IstStack = Box::leak(Box::new(IstStack([0; IST_STACK_SIZE])));
            tables.tss.ist[i] = stack.0.as_ptr() as u64 + IST_STACK_SIZE as u64;
        }
        tables.tss.iomap_base = core::mem::size_of::<Tss>() as u16; // no I/O bitmap
        let (lo, hi) = tss_descriptor(&tables.tss);
        tables.gdt[5] = lo;
        tables.gdt[6] = hi;
        tables
    }

    /// Load this GDT and TSS on the current CPU and reload the segment registers.
    ///
    /// # Safety
    /// `self` must stay alive and unmoved for as long as the CPU runs (it is leaked by [`CpuTables::new`]).
    pub unsafe fn load(&'static self) {
        #[repr(C, packed)]
        struct Pointer {
            limit: u16,
            base: u64,
        }
        let ptr = Pointer { limit: (core::mem::size_of_val(&self.gdt) - 1) as u16, base: self.gdt.as_ptr() as u64 };
        // SAFETY: the GDT is valid and 'static; selectors match the layout above; reloading CS uses a far return.
        unsafe {
            asm!(
                "lgdt [{ptr}]",
                "push {cs}",
                "lea {tmp}, [rip + 2f]",
                "push {tmp}",
                "retfq",
                "2:",
                "mov ds, {ds:x}",
                "mov es, {ds:x}",
                "mov ss, {ds:x}",
                "ltr {tss:x}",
                ptr = in(reg) &ptr,
                cs = in(reg) u64::from(KERNEL_CS),
                ds = in(reg) KERNEL_DS,
                tss = in(reg) TSS_SEL,
                // Written before `ds` and `tss` are read: an early clobber (`out`), never `lateout`, or it may share
                // their register.
                tmp = out(reg) _,
            );
        }
    }

    /// Kernel stack used when an interrupt or syscall arrives from user mode (TSS.RSP0).
    pub fn set_kernel_stack(&mut self, top: u64) {
        self.tss.rsp[0] = top;
    }
}
