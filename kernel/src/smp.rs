//! Multiprocessor support: interrupt vectors, the interrupt handler, inter-processor interrupts and AP
//! bring-up (INIT-SIPI-SIPI through the real-mode trampoline).

use crate::sched::{self, Reason};
use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use questv_arch::percpu::{self, MAX_CPUS};
use questv_arch::trap::{TrapFrame, VECTOR_YIELD};
use questv_arch::{cpu, gdt, lapic, trap};

pub const VECTOR_TIMER: u8 = 0x20;
pub const VECTOR_RESCHEDULE: u8 = 0xF0;
/// Test IPI: the receiver counts it (see ktest / the boot self-test).
pub const VECTOR_PING: u8 = 0xF1;
pub const TICK_HZ: u64 = 100;

static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static ONLINE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static PINGS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static CPU_COUNT: AtomicU32 = AtomicU32::new(1);
static TIMER_COUNT: AtomicU32 = AtomicU32::new(0);
pub static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TSS_BASE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// TSC instant the one-shot timer of each CPU is armed for (0: it has fired or was never armed).
static TIMER_ARMED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// TSC cycles between two ticks.
pub fn tick_tsc() -> u64 {
    TSC_HZ.load(Ordering::Relaxed).max(1_000_000) / TICK_HZ
}

/// Have this CPU's timer interrupt at TSC instant `deadline` (at the latest one tick from now). A timer
/// already armed for an earlier instant is left alone: that interrupt re-arms it, and each programming is a
/// register write (a VM exit under a trapping monitor).
pub fn arm_timer(now: u64, deadline: u64) {
    let cpu = percpu::cpu_index() as usize;
    let deadline = deadline.clamp(now + 1, now + tick_tsc());
    let armed = TIMER_ARMED[cpu].load(Ordering::Relaxed);
    if armed > now && armed <= deadline {
        return;
    }
    let tsc_hz = u128::from(TSC_HZ.load(Ordering::Relaxed).max(1));
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

fn interrupt_handler(frame: &mut TrapFrame) {
    let vector = frame.vector as u8;
    match vector {
        VECTOR_TIMER => {
            TIMER_ARMED[percpu::cpu_index() as usize].store(0, Ordering::Relaxed);
            lapic::eoi();
            crate::sandbox::heartbeat();
            crate::net::stack::tick();
            sched::schedule(frame, Reason::Tick);
        }
        VECTOR_YIELD => sched::schedule(frame, Reason::Yield),
        _ if frame.vector == trap::VECTOR_SYSCALL => crate::syscall::dispatch(frame),
        VECTOR_RESCHEDULE => {
            lapic::eoi();
            sched::schedule(frame, Reason::Reschedule);
        }
        crate::channel::endpoint::VECTOR_CHANNEL => lapic::eoi(),
        questv_abi::hypercall::TAKEOVER_VECTOR => {
            crate::net::stack::takeover_interrupt();
            sched::schedule(frame, Reason::Reschedule);
        }
        crate::net::VECTOR_NIC => {
            // The bottom half was just woken: let the scheduler pick it now rather than at the next tick.
            crate::net::stack::interrupt();
            sched::schedule(frame, Reason::Reschedule);
        }
        VECTOR_PING => {
            PINGS[percpu::cpu_index() as usize].fetch_add(1, Ordering::SeqCst);
            lapic::eoi();
        }
        lapic::VECTOR_SPURIOUS => {}
        lapic::VECTOR_ERROR => {
            log::warn!("local APIC error, ESR=0x{:x}", lapic::error_status());
            lapic::eoi();
        }
        v => {
            log::warn!("unexpected interrupt vector 0x{:x}", v);
            lapic::eoi();
        }
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

/// Per-CPU set-up shared by the BSP and the APs once descriptor tables are loaded: LAPIC, scheduler, timer.
fn init_this_cpu() {
    trap::init_syscall();
    lapic::enable();
    sched::init_cpu();
    lapic::timer_init_divider();
    lapic::timer_oneshot(VECTOR_TIMER, TIMER_COUNT.load(Ordering::SeqCst));
    ONLINE[percpu::cpu_index() as usize].store(true, Ordering::SeqCst);
}

/// BSP: install the interrupt handler, calibrate the timer (or take the given rates: VT sandboxes get them
/// from the monitor rather than all driving the one PIT at once), start ticking.
pub fn init_bsp(bsp_apic_id: u32, given: Option<questv_arch::timer::Calibration>) {
    APIC_IDS[0].store(bsp_apic_id, Ordering::SeqCst);
    trap::set_interrupt_handler(interrupt_handler);
    trap::set_exception_hook(crate::proc::user_exception);
    let cal = given.unwrap_or_else(questv_arch::timer::calibrate);
    TSC_HZ.store(cal.tsc_hz, Ordering::SeqCst);
    TIMER_COUNT.store((cal.lapic_hz / TICK_HZ) as u32, Ordering::SeqCst);
    crate::result!("timer", "lapic_hz={} tsc_hz={} tick_hz={}", cal.lapic_hz * 16, cal.tsc_hz, TICK_HZ);
    init_this_cpu();
}

extern "C" fn ap_entry(cpu_index: u64) -> ! {
    // SAFETY: each AP installs its own index exactly once, first thing.
    unsafe { percpu::install(cpu_index as u32, APIC_IDS[cpu_index as usize].load(Ordering::SeqCst)) };
    load_descriptor_tables();
    init_this_cpu();
    log::debug!("online, APIC id {}", lapic::id());
    // Nothing more for the boot context to do: leave the CPU to its threads (the idle thread halts it when
    // none is ready). Staying around as a halting thread would put every local wake-up behind the next tick.
    sched::exit()
}

/// Start every CPU in `apic_ids` except the BSP, one at a time. Returns how many came online.
pub fn start_aps(apic_ids: &[u32], bsp_apic_id: u32, cr3: u64, trampoline: u64) -> u32 {
    let mut started = 0;
    for &apic_id in apic_ids.iter().filter(|&&id| id != bsp_apic_id) {
        let index = CPU_COUNT.load(Ordering::SeqCst);
        if index as usize >= MAX_CPUS {
            log::warn!("more than {} CPUs; APIC id {} left offline", MAX_CPUS, apic_id);
            break;
        }
        APIC_IDS[index as usize].store(apic_id, Ordering::SeqCst);
        CPU_COUNT.store(index + 1, Ordering::SeqCst);
        let stack: &'static mut [u8] = Box::leak(alloc::vec![0u8; sched::KERNEL_STACK_SIZE].into_boxed_slice());
        // The System V ABI wants a 16-byte aligned stack at the call; a byte vector guarantees no alignment.
        let top = (stack.as_ptr() as u64 + stack.len() as u64) & !0xF;
        // SAFETY: the trampoline page is free in the memory map and never handed out (the frame allocator keeps the low 1 MiB; the page is picked below 640 KiB), cr3 is the kernel's PML4 below 4 GiB, and the
        // previous AP finished reading the parameters (we waited for it to come online).
        unsafe {
            questv_arch::boot::install_ap_trampoline(trampoline, cr3, top, ap_entry, u64::from(index));
        }
        lapic::start_ap(apic_id, (trampoline >> 12) as u8);
        let deadline = cpu::rdtsc() + TSC_HZ.load(Ordering::SeqCst).max(1_000_000) * 2;
        while !ONLINE[index as usize].load(Ordering::SeqCst) && cpu::rdtsc() < deadline {
            cpu::pause();
        }
        if ONLINE[index as usize].load(Ordering::SeqCst) {
            started += 1;
        } else {
            // It may only be slow, and still reading the trampoline's parameters: writing the next CPU's over
            // them would start two CPUs on one stack. Leave the rest offline instead.
            let left = apic_ids.iter().filter(|&&id| id != bsp_apic_id).count() as u32 - started - 1;
            log::error!("CPU with APIC id {} did not come online in 2 s; {} more CPU(s) left offline", apic_id, left);
            break;
        }
    }
    started
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
