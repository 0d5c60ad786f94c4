//! Commands the kernel runs itself (before userland exists, and as kernel-mode test hooks afterwards):
//! the boot self-test (scheduler on every CPU, IPIs between all CPUs) and `ktest ...` commands that fault
//! on purpose or dump firmware tables.

use crate::{cmdline, kprintln, result, sched, smp};
use core::sync::atomic::{AtomicU32, Ordering};
use questv_arch::percpu::MAX_CPUS;
use questv_arch::{cpu, percpu};

/// Exit status for an unknown program (as a shell would report it).
pub const STATUS_NOT_FOUND: i32 = 127;

const THREADS_PER_CPU: u32 = 3;
static STARTED: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static RAN: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static FINISHED: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

fn seconds(n: u64) -> u64 {
    smp::TSC_HZ.load(Ordering::SeqCst).max(1_000_000) * n
}

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

pub fn boot_selftest() -> i32 {
    let expected = smp::cpus_online();
    let sched_ok = sched_test() == expected;
    let ipi_ok = ipi_test();
    let heap = crate::mm::kmem::heap_free_bytes();
    result!("memory", "free_frames={} heap_free_bytes={}", crate::mm::kmem::free_frames(), heap);
    if sched_ok && ipi_ok {
        0
    } else {
        log::error!("self-test failed: sched_ok={} ipi_ok={}", sched_ok, ipi_ok);
        1
    }
}

pub fn run_command(cmd: &str) -> i32 {
    let (prog, mut args) = cmdline::split_command(cmd);
    match prog {
        "ktest" => match (args.next(), args.next()) {
            (Some("attack"), Some(kind)) => {
                let rest = cmd.split_once(" -- ").map(|(_, r)| r.trim());
                attack(kind, rest)
            }
            (Some("fault"), Some(kind)) => fault(kind),
            (Some("selftest"), None) => boot_selftest(),
            (Some("panic"), None) => panic!("panic requested by `ktest panic`"),
            (Some("acpidump"), None) => acpidump(),
            _ => {
                kprintln!("usage: ktest fault page|ud|gp|de|ap-page | ktest selftest | ktest panic | ktest acpidump | ktest attack peer|monitor|ept|vmx [-- PROG ARGS]");
                2
            }
        },
        _ => {
            kprintln!("{}: no such program", prog);
            STATUS_NOT_FOUND
        }
    }
}

/// Trigger an exception on purpose. Never returns normally: the exception handler dumps and panics.
fn fault(kind: &str) -> i32 {
    kprintln!("ktest: triggering {} fault", kind);
    match kind {
        // SAFETY (all arms): deliberately faulting accesses; the kernel's exception path reports and halts.
        "page" => unsafe { core::ptr::write_volatile(0x0000_7FFF_DEAD_0000 as *mut u64, 1) },
        "null" => unsafe { core::ptr::write_volatile(core::ptr::null_mut::<u64>().wrapping_add(2), 1) },
        "ud" => unsafe { core::arch::asm!("ud2") },
        // SAFETY: deliberate non-canonical access (#GP).
        "gp" => unsafe { core::ptr::read_volatile(0x8000_0000_0000_0000 as *const u64); },
        // SAFETY: deliberate division by zero (#DE); registers declared as clobbered.
        "de" => unsafe { core::arch::asm!("xor edx, edx", "xor eax, eax", "div ecx", in("ecx") 0, out("eax") _, out("edx") _) },
        "ap-page" => {
            if smp::cpus_online() < 2 {
                kprintln!("ktest fault ap-page needs at least 2 CPUs");
                return 2;
            }
            sched::spawn_on(1, "faulter", fault_on_ap, 0);
            loop {
                sched::yield_now();
            }
        }
        _ => {
            kprintln!("unknown fault kind {:?}", kind);
            return 2;
        }
    }
    kprintln!("ktest: fault {} did not trap", kind);
    1
}

extern "C" fn fault_on_ap(_: u64) -> ! {
    // SAFETY: deliberate fault (see `fault`).
    unsafe { core::ptr::write_volatile(0x0000_7FFF_DEAD_0000 as *mut u64, 1) };
    sched::exit()
}

/// Print the root ACPI table and the MADT as hex (captured for the host tests in arch/tests/data).
fn acpidump() -> i32 {
    kprintln!("ktest acpidump: see RESULT acpi lines");
    crate::boot::dump_acpi();
    0
}

/// Resume address for an instruction expected to raise #UD in kernel mode (0: none expected).
static UD_FIXUP: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
static UD_SEEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Kernel-mode exception hook for the attack test: an expected #UD resumes at its fixup address.
pub fn kernel_fixup(frame: &mut questv_arch::trap::TrapFrame) -> bool {
    let fix = UD_FIXUP.swap(0, Ordering::SeqCst);
    if frame.vector == 6 && fix != 0 {
        frame.rip = fix;
        UD_SEEN.store(true, Ordering::SeqCst);
        return true;
    }
    false
}

/// VT attack test hook (kernel mode, sandbox 0 only; the other sandboxes just run `then`):
/// `peer` writes into the next sandbox's slice, `monitor` into this sandbox's VMCS (monitor memory), `ept` into
/// its own EPT root; each must end in an EPT violation the monitor reports, stopping only this sandbox.
/// `vmx` executes VMXOFF (must raise #UD) and a garbage hypercall (must return ENOSYS), then runs `then`.
fn attack(kind: &str, then: Option<&str>) -> i32 {
    let run_then = |status: i32| match then {
        Some(cmd) if status == 0 => crate::boot::run_user_command(cmd),
        _ => status,
    };
    let Some(sandbox) = crate::boot::sandbox_id() else {
        kprintln!("ktest attack: only meaningful in a VT sandbox");
        return 2;
    };
    // The channel attack comes from a third sandbox (2) while sandboxes 0 and 1 use the channel.
    let attacker = if kind == "channel" { 2 } else { 0 };
    if sandbox != attacker {
        return run_then(0);
    }
    let t = crate::boot::attack_targets();
    let target = match kind {
        "channel" => channel_target(),
        "peer" => t.0,
        "monitor" => t.1,
        "ept" => t.2,
        "vmx" => {
            // VMXOFF: the monitor injects #UD; the fixup resumes after it.
            UD_SEEN.store(false, Ordering::SeqCst);
            // SAFETY: deliberate: in VMX non-root VMXOFF exits and the monitor injects #UD, which kernel_fixup
            // turns into a jump to label 2.
            unsafe {
                core::arch::asm!("lea {r}, [rip + 2f]", "mov [{f}], {r}", "vmxoff", "2:",
                                 r = out(reg) _, f = in(reg) UD_FIXUP.as_ptr());
            }
            let ud = UD_SEEN.load(Ordering::SeqCst);
            result!("attack", "kind=vmxoff outcome={}", if ud { "ud" } else { "not_contained" });
            let r = cpu::vmcall(0xDEAD_BEEF, 0x1234) as i64;
            result!("attack", "kind=vmcall_garbage outcome={}", if r == -38 { "enosys" } else { "not_contained" });
            return run_then(if ud && r == -38 { 0 } else { 1 });
        }
        _ => {
            kprintln!("ktest attack: unknown kind {:?}", kind);
            return 2;
        }
    };
    let Some(addr) = target else {
        kprintln!("ktest attack: the monitor gave no {} address", kind);
        return 2;
    };
    kprintln!("ktest attack: sandbox {} writes to host-physical 0x{:x} ({})", sandbox, addr, kind);
    // SAFETY: deliberate: the address is outside this sandbox's EPT, so the write must exit to the monitor.
    unsafe { core::ptr::write_volatile(addr as *mut u64, 0xBAD0_BAD0_BAD0_BAD0) };
    result!("attack", "kind={} outcome=not_contained", kind);
    1
}

/// The first channel listed in the shared info page's directory (waiting up to ~10 s for one to appear).
fn channel_target() -> Option<u64> {
    let shared = crate::boot::shared_region()?;
    let deadline = cpu::rdtsc() + seconds(10);
    // SAFETY: the shared region is mapped for every sandbox; the directory layout is the monitor's
    // (kernel/src/vt.rs, `info`): count at +32, entries of (u32, u32, u64) from +64.
    unsafe {
        let count = &*((shared + 32) as *const core::sync::atomic::AtomicU32);
        while count.load(Ordering::Acquire) == 0 {
            if cpu::rdtsc() > deadline {
                return None;
            }
            sched::yield_now();
        }
        Some(core::ptr::read_volatile((shared + 64 + 8) as *const u64))
    }
}
