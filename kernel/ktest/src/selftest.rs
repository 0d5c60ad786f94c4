//! The boot self-test: the scheduler on every CPU (timer preemption included) and IPIs between all CPUs.

use core::sync::atomic::{AtomicU32, Ordering};
use questv_arch::percpu::MAX_CPUS;
use questv_arch::{cpu, percpu};
use questv_kernel::{result, sched, smp};
use crate::util::seconds;

const THREADS_PER_CPU: u32 = 3;
static STARTED: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static RAN: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static FINISHED: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// A thread that spins (never yields) until every test thread on its CPU has started. On a single CPU this
/// completes only if the timer preempts the spinning threads; it counts as "ran" only then.
extern "C" fn spinning_thread(_: u64) -> ! {
    let cpu = percpu::cpu_index() as usize;
    STARTED[cpu].fetch_add(1, Ordering::SeqCst);
    let deadline = cpu::rdtsc() + seconds(20);
    while STARTED[cpu].load(Ordering::SeqCst) < THREADS_PER_CPU && cpu::rdtsc() < deadline {
        cpu::pause();
    }
    if STARTED[cpu].load(Ordering::SeqCst) >= THREADS_PER_CPU {
        RAN[cpu].fetch_add(1, Ordering::SeqCst);
    }
    FINISHED[cpu].fetch_add(1, Ordering::SeqCst);
    sched::exit()
}

/// Scheduler test on every online CPU; returns the number of CPUs where all threads ran.
fn sched_test() -> u32 {
    let n = smp::cpu_count();
    for c in (0..n).filter(|&c| smp::is_online(c)) {
        for _ in 0..THREADS_PER_CPU {
            sched::spawn_on(c, "spinner", spinning_thread, 0);
        }
    }
    let deadline = cpu::rdtsc() + seconds(60);
    while (0..n).any(|c| smp::is_online(c) && FINISHED[c as usize].load(Ordering::SeqCst) < THREADS_PER_CPU)
        && cpu::rdtsc() < deadline
    {
        sched::yield_now();
    }
    let mut good = 0;
    for c in (0..n).filter(|&c| smp::is_online(c)) {
        let s = sched::stats(c);
        let ran = RAN[c as usize].load(Ordering::SeqCst);
        result!("sched", "cpu={} threads_ran={} switches={} preemptions={} ticks={}", c, ran, s.switches, s.preemptions, s.ticks);
        if ran == THREADS_PER_CPU {
            good += 1;
        }
    }
    good
}

/// The BSP pings every online CPU (itself included) with fixed IPIs, one at a time: IPIs of one vector that
/// arrive while the previous is still pending merge in the IRR, so each ping waits for the one before.
fn ipi_test() -> bool {
    const PER_TARGET: u64 = 50;
    let n = smp::cpu_count();
    let online: alloc::vec::Vec<u32> = (0..n).filter(|&c| smp::is_online(c)).collect();
    let (mut sent, mut received) = (0u64, 0u64);
    let t0 = cpu::rdtsc();
    for _ in 0..PER_TARGET {
        for &c in &online {
            let before = smp::pings_received(c);
            smp::send_ipi(c, smp::VECTOR_PING);
            sent += 1;
            let deadline = cpu::rdtsc() + seconds(2);
            while smp::pings_received(c) == before && cpu::rdtsc() < deadline {
                cpu::pause();
            }
            received += smp::pings_received(c) - before;
        }
    }
    let cycles = (cpu::rdtsc() - t0) / sent.max(1);
    result!("ipi", "sent={} received={} targets={} cycles_per_ping={}", sent, received, online.len(), cycles);
    received == sent
}

pub(crate) fn boot_selftest() -> i32 {
    let expected = smp::cpus_online();
    let sched_ok = sched_test() == expected;
    let ipi_ok = ipi_test();
    let heap = questv_kernel::mm::kmem::heap_free_bytes();
    result!("memory", "free_frames={} heap_free_bytes={}", questv_kernel::mm::kmem::free_frames(), heap);
    if sched_ok && ipi_ok {
        0
    } else {
        log::error!("self-test failed: sched_ok={} ipi_ok={}", sched_ok, ipi_ok);
        1
    }
}
