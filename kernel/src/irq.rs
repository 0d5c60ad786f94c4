//! The kernel's interrupt vectors, dispatched: the one place that maps a vector to the subsystem that handles
//! it (timer tick, system call, reschedule, channel notification, NIC, takeover, test IPI). A top layer: the
//! image's entry installs it into the trap path; nothing in the kernel names it.
#![forbid(unsafe_code)]

use crate::sched::{self, Reason};
use crate::smp::{PINGS, TIMER_ARMED, VECTOR_PING, VECTOR_RESCHEDULE, VECTOR_TIMER, VECTOR_TLB};
use core::sync::atomic::Ordering;
use questv_arch::trap::{TrapFrame, VECTOR_YIELD};
use questv_arch::{lapic, percpu, trap};

/// Route the trap path's interrupts and user-mode exceptions here (the image's entry, before bring-up).
pub fn install() {
    trap::set_interrupt_handler(interrupt_handler);
    trap::set_exception_hook(crate::proc::user_exception);
}

fn interrupt_handler(frame: &mut TrapFrame) {
    let vector = frame.vector as u8;
    match vector {
        VECTOR_TIMER => {
            TIMER_ARMED[percpu::cpu_index() as usize].store(0, Ordering::Relaxed);
            lapic::eoi();
            crate::sandbox::heartbeat();
            crate::net::stack::tick();
            crate::proc::tick_timers();
            // Typed input reaches the line discipline (and ^C its foreground group) even with no reader.
            crate::fs::terminal::poll_input();
            sched::schedule(frame, Reason::Tick);
        }
        VECTOR_YIELD => sched::schedule(frame, Reason::Yield),
        _ if frame.vector == trap::VECTOR_SYSCALL => crate::syscall::dispatch(frame),
        VECTOR_RESCHEDULE => {
            lapic::eoi();
            sched::schedule(frame, Reason::Reschedule);
        }
        crate::channel::endpoint::VECTOR_CHANNEL => {
            crate::sandbox::notification_taken();
            lapic::eoi();
        }
        questv_abi::hypercall::CONSOLE_INPUT_VECTOR => {
            // Typed input waits in the monitor: take it now (^C must not wait for a reader), wake the reader.
            lapic::eoi();
            crate::console::input_signalled();
            crate::fs::terminal::poll_input();
            sched::schedule(frame, Reason::Reschedule);
        }
        questv_abi::hypercall::TAKEOVER_VECTOR => {
            crate::net::stack::takeover_interrupt();
            sched::schedule(frame, Reason::Reschedule);
        }
        crate::net::VECTOR_NIC => {
            // The bottom half was just woken: let the scheduler pick it now rather than at the next tick.
            crate::net::stack::interrupt();
            sched::schedule(frame, Reason::Reschedule);
        }
        VECTOR_TLB => {
            crate::smp::service_tlb_requests();
            lapic::eoi();
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
    // Back to user mode: signals first (the frame may now be another thread's).
    crate::proc::on_return_to_user(frame);
}

