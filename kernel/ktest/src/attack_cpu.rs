//! `ktest attack` kinds aimed at the core itself rather than at memory: exception delivery loops (`db-loop`,
//! `ac-loop`), the x2APIC LVT entries (`x2apic-lvt`), and the local APIC state a restarted sandbox must not
//! inherit (part of `state-leak`). Each loop is endless in the guest by construction, whatever the emulator does
//! with the hardware corner cases: only the monitor can end it.

use crate::fixup::{expect, raised, EXPECTED_FIXUP};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use questv_arch::paging::{AddressSpace, PageFlags, ADDR_MASK, PAGE_SIZE};
use questv_arch::{cpu, gdt, lapic, trap};
use questv_kernel::mm::kmem::{self, KernelMem};
use questv_kernel::{kprintln, result};

/// `second-core`: a kernel thread on this sandbox's last core writes the kernel's own text (read-only in the
/// second stage: an exit the monitor treats as a fault), while this core computes on; `hang`: the thread spins
/// with interrupts off instead (the other core keeps ticking: only that core's own heartbeat stops). The
/// monitor must stop the whole sandbox — this core included — so this never returns unless it failed to.
pub(crate) fn fault_on_last_core(hang: bool) -> i32 {
    let last = questv_kernel::smp::cpus_online() - 1;
    let what = if hang { "hangs" } else { "faults" };
    kprintln!("ktest attack: sandbox {} {} on its core {} while core 0 runs on", questv_kernel::sandbox::id().unwrap_or(0), what, last);
    extern "C" fn faulter(_: u64) -> ! {
        crate::util::write_own_text(questv_arch::paging::virt_to_phys(fault_on_last_core as *const () as u64));
        // Only if the second stage let the write through.
        kprintln!("ktest attack second-core: the text write on core {} was not stopped", questv_arch::percpu::cpu_index());
        questv_kernel::sched::exit()
    }
    extern "C" fn hanger(_: u64) -> ! {
        cpu::disable_interrupts();
        loop {
            core::hint::spin_loop();
        }
    }
    questv_kernel::sched::spawn_on(last, "faulter", if hang { hanger } else { faulter }, 0);
    let mut spins = 0u64;
    let end = cpu::rdtsc() + questv_kernel::time::ms_to_cycles(20_000);
    while cpu::rdtsc() < end {
        spins = spins.wrapping_add(1);
        core::hint::spin_loop();
    }
    result!("attack", "kind=second-core outcome=not_contained spins={}", spins);
    1
}

/// Set while `db-loop` runs: the kernel's exception hook then returns from every #DB to where it came from.
static DB_STORM: AtomicBool = AtomicBool::new(false);

/// Kernel exception hook (called before the fixups): during `db-loop`, a #DB is "handled" by returning to the
/// instruction it came from with RF clear, so the instruction breakpoint there fires again, forever.
pub(crate) fn storm_hook(frame: &mut trap::TrapFrame) -> bool {
    frame.vector == 1 && DB_STORM.load(Ordering::SeqCst)
}

/// An instruction breakpoint (DR0, DR7.L0, execute) on an instruction, and a #DB handler that returns into it:
/// the guest takes #DB at the same place, in the same state, with nothing else happening, for ever. Interrupts
/// stay on, so its timer keeps ticking and its heartbeat moving (the watchdog sees nothing wrong).
pub(crate) fn db_loop() -> i32 {
    kprintln!("ktest attack: sandbox 0 returns from every #DB into its instruction breakpoint");
    DB_STORM.store(true, Ordering::SeqCst);
    // SAFETY: deliberate: DR0 names label 2 and DR7 arms it as an execute breakpoint (L0, RW0 = LEN0 = 0; bit
    // 10 reads as 1); the #DB it raises is returned from by storm_hook. Only if it never fires does the code
    // go on, and then it disarms the breakpoint.
    unsafe {
        core::arch::asm!(
            "lea {t}, [rip + 2f]",
            "mov dr0, {t}",
            "mov {t}, 0x401",
            "mov dr7, {t}",
            "2: nop",
            "mov {t}, 0x400",
            "mov dr7, {t}",
            t = out(reg) _,
            options(nostack),
        );
    }
    DB_STORM.store(false, Ordering::SeqCst);
    result!("attack", "kind=db-loop outcome=no_breakpoint");
    1
}

/// Where `ac-loop` maps its user code and stack (an empty PML4 slot of the kernel's address space).
const AC_USER_VA: u64 = 0x4000_0000_0000;
const CR0_AM: u64 = 1 << 18;
const RFLAGS_AC: u64 = 1 << 18;

/// Kernel RSP saved by `questv_ac_enter_user`, for `questv_ac_user_return`.
#[no_mangle]
static QUESTV_AC_KERNEL_RSP: AtomicU64 = AtomicU64::new(0);

extern "C" {
    /// Enter CPL 3 at `rip` with `rsp` and `rflags`; returns when the user code executes INT3 (gate 3 is then
    /// `questv_ac_user_return`).
    fn questv_ac_enter_user(rip: u64, rsp: u64, rflags: u64);
    fn questv_ac_user_return();
    /// A hostile #AC handler: drop the error code and return to the faulting instruction, which faults again.
    fn questv_ac_storm();
}

// The ring-3 round trip of `ac-loop`. enter: callee-saved registers and RSP kept, an IRETQ frame to user mode
// (interrupts off: no timer interrupt lands in the kernel with a user frame and no process behind it).
// return: reached through gate 3 (INT3 from user mode, on the exception IST stack), abandons that frame and
// resumes the kernel where it left, with its data segments back.
core::arch::global_asm!(
    r#"
    .pushsection .text.questv_ac_enter_user, "ax"
    .global questv_ac_enter_user
questv_ac_enter_user:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov [rip + QUESTV_AC_KERNEL_RSP], rsp
    push {user_ds}
    push rsi
    push rdx
    push {user_cs}
    push rdi
    iretq

    .global questv_ac_user_return
questv_ac_user_return:
    mov rsp, [rip + QUESTV_AC_KERNEL_RSP]
    mov ax, {kernel_ds}
    mov ds, ax
    mov es, ax
    mov ss, ax
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

    .global questv_ac_storm
questv_ac_storm:
    add rsp, 8
    iretq
    .popsection
"#,
    user_ds = const gdt::USER_DS,
    user_cs = const gdt::USER_CS,
    kernel_ds = const gdt::KERNEL_DS,
);

/// The user code: a 4-byte load from RSP + 1 (misaligned), then INT3 (back to the kernel if no #AC came).
const AC_USER_CODE: [u8; 5] = [0x8B, 0x44, 0x24, 0x01, 0xCC];

/// Alignment checking on (CR0.AM, RFLAGS.AC) and a misaligned load at CPL 3, with an #AC handler that returns
/// to the load: #AC at the same place, in the same state, for ever. An emulator that does not check alignment
/// (QEMU's TCG) completes the load; the code then comes back and says so.
pub(crate) fn ac_loop() -> i32 {
    let (Some(code), Some(stack)) = (kmem::alloc_frame(), kmem::alloc_frame()) else {
        kprintln!("ktest attack ac-loop: no memory");
        return 2;
    };
    // SAFETY: two fresh frames of ours (RAM, mapped): the user code, and a zeroed stack page.
    unsafe {
        core::ptr::copy_nonoverlapping(AC_USER_CODE.as_ptr(), questv_arch::paging::phys_to_virt(code) as *mut u8, AC_USER_CODE.len());
        core::ptr::write_bytes(questv_arch::paging::phys_to_virt(stack) as *mut u8, 0, PAGE_SIZE as usize);
    }
    let mut space = AddressSpace::from_root(cpu::read_cr3() & ADDR_MASK);
    let mapped = space.map_4k(&mut KernelMem, AC_USER_VA, code, PageFlags::USER).is_ok()
        && space.map_4k(&mut KernelMem, AC_USER_VA + PAGE_SIZE, stack, PageFlags::USER | PageFlags::WRITABLE | PageFlags::NO_EXECUTE).is_ok();
    if !mapped {
        kprintln!("ktest attack ac-loop: could not map the user pages");
        return 2;
    }
    kprintln!("ktest attack: sandbox 0 turns on alignment checking and returns from every #AC into the misaligned load");
    cpu::disable_interrupts();
    // SAFETY: deliberate: gate 17 becomes the hostile handler and gate 3 the way back (DPL 3, so INT3 from user
    // mode reaches it); interrupts are off, so no other entry runs meanwhile; both gates are restored below if
    // control comes back. CR0.AM only enables alignment checks at CPL 3.
    let ac_gate = unsafe { trap::replace_gate(17, questv_ac_storm as *const () as u64, 0) };
    // SAFETY: as above.
    let bp_gate = unsafe { trap::replace_gate(3, questv_ac_user_return as *const () as u64, 3) };
    let cr0 = cpu::read_cr0();
    // SAFETY: as above: CR0 with AM set.
    unsafe {
        core::arch::asm!("mov cr0, {}", in(reg) cr0 | CR0_AM, options(nostack));
        questv_ac_enter_user(AC_USER_VA, AC_USER_VA + 2 * PAGE_SIZE - 16, 0x2 | RFLAGS_AC);
        core::arch::asm!("mov cr0, {}", in(reg) cr0, options(nostack));
        trap::restore_gate(3, bp_gate);
        trap::restore_gate(17, ac_gate);
        cpu::enable_interrupts();
    }
    // The load completed without #AC: this CPU does not check alignment.
    result!("attack", "kind=ac-loop outcome=no_alignment_check");
    0
}

/// x2APIC LVT writes the monitor must refuse (NMI, SMI, INIT or ExtINT delivery on LINT0/1, the performance
/// counter, thermal, CMCI and error entries) and one it must carry out (LINT0 masked, with a vector).
pub(crate) fn x2apic_lvt() -> i32 {
    if !lapic::is_x2apic() {
        kprintln!("ktest attack x2apic-lvt: only meaningful with x2APIC");
        return 2;
    }
    const NMI: u64 = 4 << 8;
    let hostile = [(0x835u32, 7u64 << 8), (0x836, NMI), (0x834, NMI), (0x833, 2 << 8), (0x82F, 5 << 8), (0x837, NMI | 0xFE)];
    let mut ok = true;
    for (msr, value) in hostile {
        let before = read_msr(msr);
        let gp = lvt_write_faults(msr, value);
        let after = read_msr(msr);
        // Refused: dropped (the entry unchanged, or absent). A #GP would be the CPU's own refusal; either way the
        // delivery mode written must not be in force.
        let contained = after.map_or(true, |a| (a >> 8) & 7 != (value >> 8) & 7 || a & (1 << 16) != 0);
        kprintln!("ktest attack: x2APIC MSR 0x{:x} <- 0x{:x}: before {:x?}, after {:x?}, #GP {}", msr, value, before, after, gp);
        ok &= contained;
    }
    // A masked entry is the kernel's to set: replayed.
    let masked = (1 << 16) | 0x41;
    let gp = lvt_write_faults(0x835, masked);
    let lint0 = read_msr(0x835);
    kprintln!("ktest attack: x2APIC LINT0 <- 0x{:x}: 0x{:x?}, #GP {}", masked, lint0, gp);
    ok &= !gp && lint0 == Some(masked);
    // SAFETY: LINT0 back to masked with vector 0, as the kernel's enable() leaves it.
    unsafe { cpu::wrmsr(0x835, 1 << 16) };
    result!("attack", "kind=x2apic-lvt outcome={}", if ok { "refused" } else { "not_contained" });
    i32::from(!ok)
}

/// RDMSR that may #GP (an LVT the APIC does not have): None then.
fn read_msr(msr: u32) -> Option<u64> {
    expect(13);
    let (lo, hi): (u32, u32);
    // SAFETY: an x2APIC register read; a #GP resumes at label 2 through the fixup (EAX/EDX then hold what
    // the sequence set first).
    unsafe {
        core::arch::asm!(
            "xor eax, eax", "xor edx, edx", "lea {r}, [rip + 2f]", "mov [{slot}], {r}", "rdmsr", "2:",
            r = out(reg) _, slot = in(reg) EXPECTED_FIXUP.as_ptr(), in("ecx") msr, out("eax") lo, out("edx") hi,
        );
    }
    if raised() {
        None
    } else {
        Some((u64::from(hi) << 32) | u64::from(lo))
    }
}

/// WRMSR that may #GP; true if it did.
fn lvt_write_faults(msr: u32, value: u64) -> bool {
    expect(13);
    // SAFETY: deliberate LVT write (the attack); a #GP resumes at label 2 through the fixup.
    unsafe {
        core::arch::asm!(
            "lea {r}, [rip + 2f]", "mov [{slot}], {r}", "wrmsr", "2:",
            r = out(reg) _, slot = in(reg) EXPECTED_FIXUP.as_ptr(), in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
        );
    }
    raised()
}

/// LVT entries the kernel's own APIC set-up does not rewrite (so what a restarted kernel finds there is what the
/// monitor left): the performance-counter and thermal entries, with fixed-delivery vectors of ours.
const LAPIC_MARKS: [(u32, u32); 2] = [(0x340, 0x44), (0x330, 0x45)];

/// `state-leak`, first incarnation: leave unmasked LVT entries behind (fixed delivery: the monitor's rules
/// allow them, so they reach the core's APIC).
pub(crate) fn leave_lapic_marks() {
    for (reg, vector) in LAPIC_MARKS {
        lapic::write_register(reg, vector);
    }
}

/// `state-leak`, restarted incarnation: the LVT values found (performance counter, thermal) and whether either
/// is still a mark (power-on: masked, vector 0).
pub(crate) fn lapic_marks_found() -> ([u32; 2], bool) {
    let found = LAPIC_MARKS.map(|(reg, _)| lapic::read_register(reg));
    let leaked = found.iter().zip(LAPIC_MARKS).any(|(&v, (_, mark))| v & (1 << 16) == 0 && v & 0xFF == mark);
    (found, leaked)
}
