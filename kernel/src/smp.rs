//! The CPU table and what every layer asks of it: which CPUs are online and their APIC ids, the kernel's
//! interrupt vectors, inter-processor interrupts, the per-CPU one-shot timer. A bottom layer: it calls
//! nothing above it (the vector dispatcher is `irq`, CPU bring-up is `boot`).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use questv_arch::percpu::{self, MAX_CPUS};
use questv_arch::{gdt, lapic, trap};

/// Above every other interrupt vector (the channel notification's included): a flood of any other interrupt,
/// such as notifications a hostile peer sends, cannot starve the tick (the highest pending vector is delivered
/// first).
pub const VECTOR_TIMER: u8 = 0xFD;
pub const VECTOR_RESCHEDULE: u8 = 0xF0;
/// Test IPI: the receiver counts it (see ktest / the boot self-test).
pub const VECTOR_PING: u8 = 0xF1;
/// TLB shootdown: the receiver flushes its TLB and says so (`tlb_shootdown`).
pub const VECTOR_TLB: u8 = 0xF3;
pub const TICK_HZ: u64 = 100;

pub(crate) static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
pub(crate) static ONLINE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
pub(crate) static PINGS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
pub(crate) static CPU_COUNT: AtomicU32 = AtomicU32::new(1);
pub(crate) static TIMER_COUNT: AtomicU32 = AtomicU32::new(0);
static TSS_BASE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// TSC instant the one-shot timer of each CPU is armed for (0: it has fired or was never armed).
pub(crate) static TIMER_ARMED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// The page-table root each CPU has loaded (its CR3), published before the load: a change to an address space
/// is pushed to exactly the CPUs that may cache it.
static LOADED_ROOT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// TLB flushes asked of each CPU, and the last request it has carried out.
static TLB_ASKED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static TLB_DONE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// This CPU is about to load page-table root `root` into CR3 (call before the load).
pub fn note_loaded_root(root: u64) {
    LOADED_ROOT[percpu::cpu_index() as usize].store(root, Ordering::SeqCst);
}

/// Carry out a TLB flush another CPU asked of this one, if any. The shootdown IPI calls it, and so does every
/// wait that may hold one up with interrupts off: a contended lock's spin (`sync`), a shootdown's own wait.
pub fn service_tlb_requests() {
    let cpu = percpu::cpu_index() as usize;
    let asked = TLB_ASKED[cpu].load(Ordering::Acquire);
    if TLB_DONE[cpu].load(Ordering::Relaxed) < asked {
        questv_arch::cpu::flush_tlb();
        TLB_DONE[cpu].store(asked, Ordering::Release);
    }
}

/// The caller changed address space `root`'s page tables (removed or downgraded entries, or pointed one at
/// another frame): every other CPU that has `root` loaded flushes its TLB before this returns, so none keeps
/// using a stale entry (threads of one process run on several cores); the caller's own CPU is its business.
/// Waiting,
/// it carries out flushes asked of its own CPU, so two CPUs shooting at each other both go on.
pub fn tlb_shootdown(root: u64) {
    // The page-table writes before the loads of LOADED_ROOT: a CPU that publishes `root` after this reads
    // loads CR3 after the writes too, and walks the new tables.
    core::sync::atomic::fence(Ordering::SeqCst);
    const _: () = assert!(MAX_CPUS <= 64, "the CPUs asked are a u64 bit set");
    let me = percpu::cpu_index();
    let mut asked: u64 = 0;
    for c in 0..cpu_count().min(MAX_CPUS as u32) {
        if c != me && is_online(c) && LOADED_ROOT[c as usize].load(Ordering::SeqCst) == root {
            asked |= 1 << c;
        }
    }
    if asked == 0 {
        // The common case (a process with one thread): nobody else to ask.
        return;
    }
    let mut tickets = [0u64; MAX_CPUS];
    let mut each = asked;
    while each != 0 {
        let c = each.trailing_zeros() as usize;
        tickets[c] = TLB_ASKED[c].fetch_add(1, Ordering::SeqCst) + 1;
        send_ipi(c as u32, VECTOR_TLB);
        each &= each - 1;
    }
    while asked != 0 {
        let c = asked.trailing_zeros() as usize;
        while TLB_DONE[c].load(Ordering::Acquire) < tickets[c] {
            service_tlb_requests();
            core::hint::spin_loop();
        }
        asked &= asked - 1;
    }
}

/// TSC cycles between two ticks.
pub fn tick_tsc() -> u64 {
    crate::time::tsc_hz() / TICK_HZ
}

/// Have this CPU's timer interrupt at TSC instant `deadline` (at the latest one tick from now). A timer
/// already armed for an earlier instant is left alone: that interrupt re-arms it, and each programming is a
/// register write (a VM exit under a trapping monitor). So is one whose instant has passed but whose interrupt
/// has not been taken yet (interrupts are off in the kernel): programming it again restarts its countdown, and
/// a sandbox making system calls back to back (forkwait) could keep restarting it until its heartbeat stopped
/// (false watchdog faults in the recovery campaign, 2 runs of 4; none in 5 since). Only a timer overdue by
/// many ticks, whose interrupt must have been lost, is programmed again.
pub fn arm_timer(now: u64, deadline: u64) {
    const LOST_AFTER_TICKS: u64 = 10;
    let cpu = percpu::cpu_index() as usize;
    let deadline = deadline.clamp(now + 1, now + tick_tsc());
    let armed = TIMER_ARMED[cpu].load(Ordering::Relaxed);
    let overdue = armed != 0 && armed <= now;
    if armed != 0 && armed <= deadline && !(overdue && now - armed > LOST_AFTER_TICKS * tick_tsc()) {
        return;
    }
    let tsc_hz = u128::from(crate::time::tsc_hz());
    let counts = (u128::from(deadline - now) * u128::from(lapic_timer_hz()) / tsc_hz).clamp(1, u128::from(u32::MAX));
    TIMER_ARMED[cpu].store(deadline, Ordering::Relaxed);
    lapic::timer_oneshot(VECTOR_TIMER, counts as u32);
}

/// LAPIC timer counts per second (at the divide-by-16 rate the kernel uses).
pub fn lapic_timer_hz() -> u64 {
    u64::from(TIMER_COUNT.load(Ordering::SeqCst)) * TICK_HZ
}

/// Address of this CPU's TSS (the VMX monitor's host state needs it).
pub fn tss_base() -> u64 {
    TSS_BASE[percpu::cpu_index() as usize].load(Ordering::SeqCst)
}

pub fn cpus_online() -> u32 {
    (0..CPU_COUNT.load(Ordering::SeqCst) as usize).filter(|&i| ONLINE[i].load(Ordering::SeqCst)).count() as u32
}

pub fn cpu_count() -> u32 {
    CPU_COUNT.load(Ordering::SeqCst)
}

pub fn is_online(cpu: u32) -> bool {
    ONLINE[cpu as usize].load(Ordering::SeqCst)
}

pub fn pings_received(cpu: u32) -> u64 {
    PINGS[cpu as usize].load(Ordering::SeqCst)
}

pub fn apic_id(cpu: u32) -> u32 {
    APIC_IDS[cpu as usize].load(Ordering::SeqCst)
}

pub fn send_ipi(cpu: u32, vector: u8) {
    lapic::send_ipi(APIC_IDS[cpu as usize].load(Ordering::SeqCst), vector);
}

pub fn send_reschedule(cpu: u32) {
    if is_online(cpu) {
        send_ipi(cpu, VECTOR_RESCHEDULE);
    }
}

/// This CPU's GDT, TSS (IST stacks) and the shared IDT. Needs the heap.
pub fn load_descriptor_tables() {
    let tables = gdt::CpuTables::new();
    TSS_BASE[percpu::cpu_index() as usize].store(&tables.tss as *const gdt::Tss as u64, Ordering::SeqCst);
    // SAFETY: the tables are leaked ('static) and never moved.
    unsafe { tables.load() };
    trap::load_idt();
}

/// Stop every other CPU (panic path).
pub fn halt_others() {
    trap::HALT_ALL.store(true, Ordering::SeqCst);
    if lapic_ready() {
        lapic::send_nmi_all_but_self();
    }
}

fn lapic_ready() -> bool {
    ONLINE[0].load(Ordering::SeqCst)
}
