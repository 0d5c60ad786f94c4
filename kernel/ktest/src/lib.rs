//! Commands the kernel runs itself (before userland exists, and as kernel-mode test hooks afterwards):
//! the boot self-test (scheduler on every CPU, IPIs between all CPUs) and `ktest ...` commands that fault
//! on purpose or dump firmware tables.
#![no_std]

extern crate alloc;

use questv_kernel::{cmdline, kprintln, result, sched, smp, time};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use questv_arch::percpu::MAX_CPUS;
use questv_arch::{cpu, lapic, percpu};

use questv_kernel::hooks::STATUS_NOT_FOUND;

/// Install this test layer into the product's hooks (the image's entry point does, before the kernel starts).
pub fn install() {
    questv_kernel::hooks::install(questv_kernel::hooks::TestLayer {
        run: |cmd| cmd.map_or_else(boot_selftest, run_command),
        kernel_exception: kernel_fixup,
        driver_fault,
        wants_attack_targets: |run| run.is_some_and(|r| r.trim_start().starts_with("ktest attack")),
    });
}

const THREADS_PER_CPU: u32 = 3;
static STARTED: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static RAN: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static FINISHED: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

fn seconds(n: u64) -> u64 {
    time::tsc_hz() * n
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

fn boot_selftest() -> i32 {
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

fn run_command(cmd: &str) -> i32 {
    let (prog, mut args) = cmdline::split_command(cmd);
    match prog {
        "ktest" => match (args.next(), args.next()) {
            (Some("attack"), Some(kind)) => {
                let rest = cmd.split_once(" -- ").map(|(_, r)| r.trim());
                attack(kind, rest)
            }
            (Some("inject"), Some(kind)) => {
                let target = args.next().and_then(|a| a.parse::<u32>().ok());
                let trigger = match args.next() {
                    None | Some("--") => Some(Trigger::Soon),
                    Some(t) => match t.split_once('=') {
                        Some(("after_pings", n)) => n.parse().ok().map(Trigger::AfterPings),
                        Some(("after_ms", n)) => n.parse().ok().map(Trigger::AfterMs),
                        _ => None,
                    },
                };
                let rest = cmd.split_once(" -- ").map(|(_, r)| r.trim());
                match (target, trigger) {
                    (Some(t), Some(trigger)) => inject(kind, t, trigger, rest),
                    _ => {
                        kprintln!("usage: ktest inject KIND SANDBOX [after_pings=N|after_ms=MS] [-- PROG ARGS]");
                        2
                    }
                }
            }
            (Some("campaign"), Some(n)) => {
                let seed = args.next().and_then(|a| a.parse::<u64>().ok()).unwrap_or(1);
                let rest = cmd.split_once(" -- ").map(|(_, r)| r.trim());
                match n.parse::<u64>() {
                    Ok(n) if n > 0 && n < 1 << 31 => campaign(n, seed, rest),
                    _ => {
                        kprintln!("usage: ktest campaign N [SEED] [-- PROG ARGS]");
                        2
                    }
                }
            }
            (Some("fault"), Some(kind)) => fault(kind),
            (Some("selftest"), None) => boot_selftest(),
            (Some("panic"), None) => panic!("panic requested by `ktest panic`"),
            (Some("acpidump"), None) => acpidump(),
            _ => {
                kprintln!("usage: ktest fault page|ud|gp|de|ap-page | ktest selftest | ktest panic | ktest acpidump | ktest campaign N [SEED] [-- PROG ARGS] | ktest inject [always-][driver-]panic|ud|wild|text|triple|hang|reset|wipe SANDBOX [after_pings=N|after_ms=MS] [-- PROG ARGS] | ktest attack KIND [-- PROG ARGS] (KIND: peer|monitor|ept|text|restore-text|vmx|channel|port-reset|pci|msr|icr-nmi|icr-init|icr-vector|apic|panic|hang|user-vmcall|forge)");
                2
            }
        },
        _ => {
            kprintln!("{}: no such program", prog);
            STATUS_NOT_FOUND
        }
    }
}

/// When an injected fault fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// A moment after the program starts (so the other sandboxes are running).
    Soon,
    /// After this sandbox's network stack took this many echo requests (Fig 6's "after the 20th reply": the
    /// fault comes while the Nth is being answered or just after).
    AfterPings(u64),
    /// This many milliseconds after the program starts.
    AfterMs(u64),
}

/// Fault-injection hook for recovery (VT): sandbox `target`, in its first incarnation only, faults with `kind`
/// when `trigger` fires; every other sandbox, and `target` once recovered, runs `then` (with a trigger other
/// than `Soon`, `target` runs it too, and the fault comes from a kernel thread beside it).
/// Kinds: `panic` (the kernel's panic path), `ud` (an invalid opcode in kernel mode), `wild` (a write outside
/// the sandbox's memory: an EPT/NPT violation), `text` (a write to its own kernel text with CR0.WP cleared),
/// `triple` (a triple fault), `hang` (interrupts off, spinning: the watchdog, needs `watchdog_ms`); with the
/// prefix `always-` in every incarnation.
fn inject(kind: &str, target: u32, trigger: Trigger, then: Option<&str>) -> i32 {
    let run_then = || then.map_or(0, questv_kernel::proc::run_command);
    let Some(sandbox) = questv_kernel::sandbox::id() else {
        kprintln!("ktest inject: only meaningful in a VT sandbox");
        return 2;
    };
    // `always-KIND`: in every incarnation (a crash loop, which the monitor must end).
    let (kind, always) = match kind.strip_prefix("always-") {
        Some(k) => (k, true),
        None => (kind, false),
    };
    // `driver-KIND`: the NIC driver's thread faults (component recovery), not the hook's.
    let (kind, in_driver) = match kind.strip_prefix("driver-") {
        Some(k) => (k, true),
        None => (kind, false),
    };
    if !FAULT_KINDS.contains(&kind) {
        kprintln!("ktest inject: unknown kind {:?} (one of {:?})", kind, FAULT_KINDS);
        return 2;
    }
    if sandbox != target || (questv_kernel::sandbox::incarnation() > 0 && !always) {
        return run_then();
    }
    let kind_index = FAULT_KINDS.iter().position(|&k| k == kind).unwrap_or(0) as u64 | (u64::from(in_driver) << 7);
    match trigger {
        Trigger::Soon => {
            wait_ms(250);
            inject_now(kind_index)
        }
        Trigger::AfterPings(n) => {
            sched::spawn_on(0, "inject", inject_thread, kind_index | (n << 8) | (1 << 63));
            run_then()
        }
        Trigger::AfterMs(ms) => {
            sched::spawn_on(0, "inject", inject_thread, kind_index | (ms << 8));
            run_then()
        }
    }
}

const FAULT_KINDS: [&str; 8] = ["panic", "ud", "wild", "text", "triple", "hang", "reset", "wipe"];

/// The fault-injection hook's request to the NIC driver thread (`driver-KIND`): it calls this with the kind
/// index + 1 on its own stack, so the fault is the driver's.
fn driver_fault(code: u32) {
    inject_now(u64::from(code.saturating_sub(1)));
}

fn wait_ms(ms: u64) {
    let until = cpu::rdtsc() + time::ms_to_cycles(ms);
    while cpu::rdtsc() < until {
        sched::yield_now();
    }
}

/// The deferred fault: arg = kind index | amount << 8 | (1 << 63 if the amount is echo requests, else ms).
extern "C" fn inject_thread(arg: u64) -> ! {
    let amount = (arg & !(1 << 63)) >> 8;
    if arg & (1 << 63) != 0 {
        while questv_kernel::net::stack::STATS.rx_icmp.load(Ordering::Acquire) < amount {
            wait_ms(1);
        }
    } else {
        wait_ms(amount);
    }
    inject_now(arg & 0xFF);
    sched::exit()
}

fn inject_now(kind_index: u64) -> i32 {
    if kind_index & (1 << 7) != 0 {
        // Hand it to the driver thread (it faults at its next pass, woken now).
        questv_kernel::net::stack::INJECT_DRIVER_FAULT.store((kind_index & 0x7F) as u32 + 1, Ordering::SeqCst);
        questv_kernel::net::stack::poke();
        return 0;
    }
    let sandbox = questv_kernel::sandbox::id().unwrap_or(0);
    let kind = FAULT_KINDS.get(kind_index as usize).copied().unwrap_or("panic");
    result!("inject", "sandbox={} kind={} tsc={}", sandbox, kind, cpu::rdtsc());
    match kind {
        "panic" => panic!("ktest inject: a sandbox kernel panics"),
        // SAFETY: deliberate: an invalid opcode in kernel mode, which the kernel's panic path reports.
        "ud" => unsafe { core::arch::asm!("ud2") },
        "wild" => forbidden_write(questv_kernel::mm::kmem::highest_address()),
        "text" => write_own_text(inject_now as *const () as u64),
        // SAFETY: deliberate: an empty IDT turns the breakpoint into a triple fault (a shutdown exit).
        "triple" => unsafe {
            let idt = [0u16; 5];
            core::arch::asm!("cli", "lidt [{}]", "int3", in(reg) idt.as_ptr());
        },
        // SAFETY: deliberate: the monitor refuses the machine's reset port and recovers or stops the sandbox.
        "reset" => unsafe { cpu::outb(0xCF9, 0x06) },
        // Paper Fig 10's broken driver: it scribbles over its channel with sandbox 1 (which it may write), then
        // tries to wipe the memory past its own (another sandbox's): that write is the violation.
        "wipe" => {
            let damaged = wipe_channel_with(1);
            result!("inject", "sandbox={} kind=wipe channel_damaged={}", sandbox, u8::from(damaged));
            forbidden_write(questv_kernel::mm::kmem::highest_address());
        }
        _ => {
            cpu::disable_interrupts();
            loop {
                core::hint::spin_loop();
            }
        }
    }
    result!("inject", "sandbox={} kind={} outcome=not_contained", sandbox, kind);
    1
}

/// Overwrite the channel this sandbox shares with `peer` (if the monitor lists one) with garbage.
fn wipe_channel_with(peer: u32) -> bool {
    use questv_abi::hypercall::info;
    let (Some(shared), Some(me)) = (questv_kernel::sandbox::shared_region(), questv_kernel::sandbox::id()) else { return false };
    let key = (me.min(peer), me.max(peer));
    // SAFETY: the directory is the monitor's read-only info page; a listed channel is mapped writable into
    // both its endpoints, this sandbox being one.
    unsafe {
        let count = core::ptr::read_volatile((shared + info::CHANNEL_COUNT_OFFSET) as *const u32);
        for i in 0..u64::from(count).min(info::MAX_CHANNELS) {
            let e = shared + info::CHANNEL_DIR_OFFSET + info::CHANNEL_DIR_ENTRY * i;
            let (a, b) = (core::ptr::read_volatile(e as *const u32), core::ptr::read_volatile((e + 4) as *const u32));
            if (a, b) == key {
                let base = core::ptr::read_volatile((e + 8) as *const u64);
                core::ptr::write_bytes(base as *mut u8, 0xA5, questv_kernel::channel::endpoint::CHANNEL_BYTES as usize);
                return true;
            }
        }
    }
    false
}

/// The fault-injection campaign (VT, `ktest campaign N SEED [-- PROG]`, docs/recovery.md): `N` faults, one
/// after another, of kinds and into target sandboxes (2 and up) drawn from `SEED`. Sandboxes 0 and 1 are
/// bystanders exchanging sequence-numbered channel messages the whole time; every sandbox runs `PROG` (say
/// `forkwait 1000000`) in the foreground. The campaign's progress is the sum of the sandboxes' incarnations in
/// the monitor's info page (each recovery adds one), so fault i + 1 comes only after fault i was recovered;
/// when it reaches N each sandbox reports and ends.
fn campaign(n: u64, seed: u64, then: Option<&str>) -> i32 {
    if questv_kernel::sandbox::id().is_none() {
        kprintln!("ktest campaign: only meaningful in a VT sandbox");
        return 2;
    }
    if sandbox_count() < 3 {
        kprintln!("ktest campaign: needs at least 3 sandboxes (two bystanders and a target)");
        return 2;
    }
    sched::spawn_on(0, "campaign", campaign_thread, (n << 32) | (seed & 0xFFFF_FFFF));
    then.map_or_else(
        || loop {
            sched::block();
        },
        questv_kernel::proc::run_command,
    )
}

fn sandbox_count() -> u32 {
    questv_kernel::sandbox::shared_region().map_or(0, |shared| {
        // SAFETY: the shared info page is mapped read-only in every sandbox; the layout is the ABI's.
        unsafe { core::ptr::read_volatile((shared + questv_abi::hypercall::info::SANDBOXES_OFFSET) as *const u32) }
    })
}

/// Faults recovered so far: the sum of every sandbox's incarnation.
fn recoveries() -> u64 {
    use questv_abi::hypercall::info;
    let Some(shared) = questv_kernel::sandbox::shared_region() else { return 0 };
    (0..u64::from(sandbox_count()).min(info::MAX_SANDBOXES))
        // SAFETY: as in sandbox_count; each slot is a u32 only the monitor writes.
        .map(|i| u64::from(unsafe { core::ptr::read_volatile((shared + info::INCARNATIONS_OFFSET + 4 * i) as *const u32) }))
        .sum()
}

const END_MARK: u64 = u64::MAX;

extern "C" fn campaign_thread(arg: u64) -> ! {
    let (n, seed) = (arg >> 32, arg & 0xFFFF_FFFF);
    let sandbox = questv_kernel::sandbox::id().unwrap_or(0);
    let started = cpu::rdtsc();
    let hz = time::tsc_hz();
    let exits_before = questv_kernel::sandbox::exit_count();
    match sandbox {
        0 | 1 => {
            let status = campaign_traffic(sandbox, n, exits_before);
            questv_kernel::sandbox::done(status)
        }
        _ => {
            let sandboxes = sandbox_count();
            loop {
                let done = recoveries();
                if done >= n {
                    result!("campaign_end", "sandbox={} incarnation={} recoveries={}", sandbox, questv_kernel::sandbox::incarnation(), done);
                    questv_kernel::sandbox::done(0)
                }
                let (target, kind) = questv_vmx::recovery::campaign_fault(seed, done, sandboxes, FAULT_KINDS.len());
                // Wait past the monitor's crash-loop window (faults within 2 s of a launch) after this boot.
                if target == sandbox && cpu::rdtsc() - started > hz * 22 / 10 {
                    result!("campaign_fault", "index={} sandbox={} kind={}", done, sandbox, FAULT_KINDS[kind]);
                    inject_now(kind as u64);
                }
                wait_ms(20);
            }
        }
    }
}

/// The bystanders' channel traffic: sandbox 0 sends sequence numbers to 1 as fast as the ring takes them
/// until the campaign is over, then an end mark with the count; 1 checks every number arrives once, in order.
fn campaign_traffic(sandbox: u32, n: u64, exits_before: u64) -> i32 {
    use questv_kernel::channel::endpoint;
    let h = match endpoint::open(1 - sandbox) {
        Ok(h) => h,
        Err(e) => {
            result!("campaign_traffic", "sandbox={} error=open_{}", sandbox, e);
            return 1;
        }
    };
    if sandbox == 0 {
        let mut seq = 0u64;
        let mut failures = 0u64;
        while recoveries() < n {
            for _ in 0..64 {
                match endpoint::send(h, &seq.to_le_bytes(), false) {
                    Ok(()) => seq += 1,
                    Err(_) => failures += 1,
                }
            }
            wait_ms(1);
        }
        let mut end = [0u8; 16];
        end[..8].copy_from_slice(&END_MARK.to_le_bytes());
        end[8..].copy_from_slice(&seq.to_le_bytes());
        let sent_end = (0..100).any(|_| endpoint::send(h, &end, false).is_ok());
        let exits = questv_kernel::sandbox::exit_count().saturating_sub(exits_before + 1);
        result!("campaign_traffic", "sandbox=0 role=sender sent={} send_failures={} end={} vmexits={}", seq, failures, u8::from(sent_end), exits);
        return i32::from(!sent_end);
    }
    let (mut expected, mut received, mut lost, mut dup, mut corrupt) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut buf = [0u8; 16];
    let mut deadline_misses = 0;
    let status = loop {
        let r = endpoint::recv(h, &mut buf, 1_000_000_000, false);
        if r.is_ok() {
            deadline_misses = 0;
        }
        match r {
            Ok(8) => {
                let seq = u64::from_le_bytes(buf[..8].try_into().unwrap());
                received += 1;
                if seq == expected {
                    expected += 1;
                } else if seq > expected {
                    lost += seq - expected;
                    expected = seq + 1;
                } else {
                    dup += 1;
                }
            }
            Ok(16) if u64::from_le_bytes(buf[..8].try_into().unwrap()) == END_MARK => {
                let sent = u64::from_le_bytes(buf[8..].try_into().unwrap());
                lost += sent.saturating_sub(expected);
                break 0;
            }
            Ok(_) => corrupt += 1,
            Err(_) => {
                // A quiet second is fine while faults are recovered; a minute of silence is not.
                deadline_misses += 1;
                if deadline_misses > 60 {
                    break 1;
                }
                continue;
            }
        }
    };
    let exits = questv_kernel::sandbox::exit_count().saturating_sub(exits_before + 1);
    result!("campaign_traffic", "sandbox=1 role=receiver received={} lost={} dup={} corrupt={} vmexits={}", received, lost, dup, corrupt, exits);
    if status == 0 && lost == 0 && dup == 0 && corrupt == 0 { 0 } else { 1 }
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
    questv_kernel::acpi_handler::dump();
    0
}

/// An exception the attack test expects in kernel mode: its vector, and the resume address the attacking
/// instruction sequence stores just before it runs (0: nothing expected).
static EXPECTED_VECTOR: AtomicU64 = AtomicU64::new(u64::MAX);
static EXPECTED_FIXUP: AtomicU64 = AtomicU64::new(0);
static EXPECTED_SEEN: AtomicBool = AtomicBool::new(false);

/// Kernel-mode exception hook for the attack test: an expected exception resumes at its fixup address.
fn kernel_fixup(frame: &mut questv_arch::trap::TrapFrame) -> bool {
    let fix = EXPECTED_FIXUP.load(Ordering::SeqCst);
    if fix != 0 && frame.vector == EXPECTED_VECTOR.load(Ordering::SeqCst) {
        EXPECTED_FIXUP.store(0, Ordering::SeqCst);
        frame.rip = fix;
        EXPECTED_SEEN.store(true, Ordering::SeqCst);
        return true;
    }
    false
}

fn expect(vector: u64) {
    EXPECTED_SEEN.store(false, Ordering::SeqCst);
    EXPECTED_VECTOR.store(vector, Ordering::SeqCst);
}

fn raised() -> bool {
    EXPECTED_FIXUP.store(0, Ordering::SeqCst);
    EXPECTED_SEEN.load(Ordering::SeqCst)
}

const GP: u64 = 13;
const UD: u64 = 6;

/// WRMSR the monitor should refuse with #GP; true if it did.
fn wrmsr_refused(msr: u32, value: u64) -> bool {
    expect(GP);
    // SAFETY: deliberate attack on the monitor's MSR policy: a refused WRMSR raises #GP, which kernel_fixup
    // turns into a jump to label 2 (the sequence stores that address first); an allowed one takes effect,
    // which is what the test is there to catch.
    unsafe {
        core::arch::asm!(
            "lea {r}, [rip + 2f]", "mov [{slot}], {r}", "wrmsr", "2:",
            r = out(reg) _, slot = in(reg) EXPECTED_FIXUP.as_ptr(),
            in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
        );
    }
    raised()
}

/// RDMSR the monitor should refuse with #GP; true if it did.
fn rdmsr_refused(msr: u32) -> bool {
    expect(GP);
    // SAFETY: deliberate: a refused RDMSR raises #GP, resumed at label 2 by kernel_fixup.
    unsafe {
        core::arch::asm!(
            "lea {r}, [rip + 2f]", "mov [{slot}], {r}", "rdmsr", "2:",
            r = out(reg) _, slot = in(reg) EXPECTED_FIXUP.as_ptr(),
            in("ecx") msr, out("eax") _, out("edx") _,
        );
    }
    raised()
}

/// An ICR write (x2APIC layout: destination in bits 32–63) the monitor should refuse with #GP; true if it did.
/// On xAPIC machines the destination goes to ICR high (a trapped write the monitor only remembers) and the
/// low half to ICR low, the write that sends.
fn icr_refused(value: u64) -> bool {
    if lapic::is_x2apic() {
        return wrmsr_refused(0x830, value);
    }
    let base = lapic::xapic_base();
    // SAFETY: deliberate: ICR high holds only the destination; the monitor checks at the ICR low write.
    unsafe { core::ptr::write_volatile((base + 0x310) as *mut u32, ((value >> 32) as u32) << 24) };
    expect(GP);
    // SAFETY: deliberate attack on the monitor's IPI policy: a refused ICR low write raises #GP, resumed at
    // label 2 by kernel_fixup; an allowed one sends the IPI, which the test is there to catch.
    unsafe {
        core::arch::asm!(
            "lea {r}, [rip + 2f]", "mov [{slot}], {r}", "mov dword ptr [{icr}], {v:e}", "2:",
            r = out(reg) _, slot = in(reg) EXPECTED_FIXUP.as_ptr(), icr = in(reg) base + 0x300, v = in(reg) value as u32,
        );
    }
    raised()
}

/// CLGI, STGI and VMLOAD in a sandbox: #UD (the monitor intercepts every SVM instruction; a VMX CPU has none).
fn svm_instructions_refused() -> bool {
    let mut all = true;
    for i in 0..3 {
        expect(UD);
        // SAFETY: deliberate: each instruction exits (SVM) or faults (VMX CPU); either way #UD, resumed at label 2.
        unsafe {
            match i {
                0 => core::arch::asm!("lea {r}, [rip + 2f]", "mov [{slot}], {r}", "clgi", "2:", r = out(reg) _, slot = in(reg) EXPECTED_FIXUP.as_ptr()),
                1 => core::arch::asm!("lea {r}, [rip + 2f]", "mov [{slot}], {r}", "stgi", "2:", r = out(reg) _, slot = in(reg) EXPECTED_FIXUP.as_ptr()),
                _ => core::arch::asm!("lea {r}, [rip + 2f]", "mov [{slot}], {r}", "vmload rax", "2:", r = out(reg) _, slot = in(reg) EXPECTED_FIXUP.as_ptr(), in("rax") 0x1000u64),
            }
        }
        all &= raised();
    }
    all
}

/// VMXOFF in a sandbox: the monitor must inject #UD.
fn vmxoff_refused() -> bool {
    expect(UD);
    // SAFETY: deliberate: in VMX non-root VMXOFF exits and the monitor injects #UD, resumed at label 2.
    unsafe {
        core::arch::asm!("lea {r}, [rip + 2f]", "mov [{slot}], {r}", "vmxoff", "2:",
                         r = out(reg) _, slot = in(reg) EXPECTED_FIXUP.as_ptr());
    }
    raised()
}

fn outcome(ok: bool) -> &'static str {
    if ok {
        "refused"
    } else {
        "not_contained"
    }
}

/// VT attack test hook (kernel mode; sandbox 0 attacks — sandbox 2 for `channel` — and the others run `then`).
/// Memory attacks (`peer`, `monitor`, `ept`, `channel`, `text`) must end in a reported EPT violation; `port-reset`
/// must stop the sandbox (`reason=io`), `panic` (`reason=panic`), `hang` (`reason=watchdog`, needs
/// `watchdog_ms`); `pci`, `msr`, `icr-*`, `vmx` must be refused (the attacker goes on to run `then` too);
/// `user-vmcall` runs the `uvmcall` program; `forge` prints fake monitor lines and writes COM1 directly.
fn attack(kind: &str, then: Option<&str>) -> i32 {
    let run_then = |status: i32| match then {
        Some(cmd) if status == 0 => questv_kernel::proc::run_command(cmd),
        _ => status,
    };
    let Some(sandbox) = questv_kernel::sandbox::id() else {
        kprintln!("ktest attack: only meaningful in a VT sandbox");
        return 2;
    };
    // The channel attack comes from a third sandbox (2) while sandboxes 0 and 1 use the channel.
    let attacker = if kind == "channel" { 2 } else { 0 };
    if sandbox != attacker {
        return run_then(0);
    }
    let t = questv_kernel::sandbox::attack_targets();
    let peer_apic = || questv_kernel::sandbox::peer_apic(1).unwrap_or(1);
    let refused = |name: &str, ok: bool| {
        result!("attack", "kind={} outcome={}", name, outcome(ok));
        run_then(if ok { 0 } else { 1 })
    };
    let target = match kind {
        "channel" => channel_target(),
        "peer" => t.map(|t| t.peer),
        "monitor" => t.map(|t| t.vmcs),
        "ept" => t.map(|t| t.stage2),
        "text" => Some(attack as *const () as u64),
        "vmx" => {
            let ud = vmxoff_refused();
            result!("attack", "kind=vmxoff outcome={}", if ud { "ud" } else { "not_contained" });
            let svm_ud = svm_instructions_refused();
            result!("attack", "kind=svm_instructions outcome={}", if svm_ud { "ud" } else { "not_contained" });
            let r = cpu::vmcall(0xDEAD_BEEF, 0x1234, 0) as i64;
            result!("attack", "kind=vmcall_garbage outcome={}", if r == -38 { "enosys" } else { "not_contained" });
            return run_then(if ud && svm_ud && r == -38 { 0 } else { 1 });
        }
        "port-reset" => {
            kprintln!("ktest attack: sandbox {} writes the reset ports (0xCF9, 0x64, 0x92)", sandbox);
            // SAFETY: deliberate: without the monitor's I/O bitmap any of these resets the machine.
            unsafe {
                cpu::outb(0xCF9, 0x06);
                cpu::outb(0x64, 0xFE);
                cpu::outb(0x92, 0x01);
            }
            result!("attack", "kind=port-reset outcome=not_contained");
            return 1;
        }
        "pci" => {
            // SAFETY (block): deliberate PCI configuration accesses (bus 0, device 0 and 1): read the IDs, try to
            // switch on bus mastering. Refused: reads see all-ones, writes are dropped.
            let (id, after) = unsafe {
                cpu::outl(0xCF8, 0x8000_0000);
                let id = cpu::inl(0xCFC);
                cpu::outl(0xCF8, 0x8000_0804);
                cpu::outl(0xCFC, 0x0000_0007);
                cpu::outl(0xCF8, 0x8000_0804);
                (id, cpu::inl(0xCFC))
            };
            kprintln!("ktest attack: PCI 00:00.0 id=0x{:08x}, 00:01.0 command after write=0x{:08x}", id, after);
            return refused("pci", id == u32::MAX && after == u32::MAX);
        }
        "msr" => {
            // SAFETY: reading APIC_BASE is allowed and harmless.
            let apic_base = unsafe { cpu::rdmsr(0x1B) };
            let checks = [
                ("mtrr_def_type", wrmsr_refused(0x2FF, 0)),
                ("apic_base_disable", wrmsr_refused(0x1B, apic_base & !(1 << 11))),
                ("mc0_status", wrmsr_refused(0x401, 0)),
                ("microcode_update", wrmsr_refused(0x79, 0)),
                ("tsc_write", wrmsr_refused(0x10, 0)),
                ("feature_control_read", rdmsr_refused(0x3A)),
                ("outside_bitmap_write", wrmsr_refused(0x4000_0000, 0)),
                ("outside_bitmap_read", rdmsr_refused(0xC001_0000)),
            ];
            for (name, ok) in checks {
                kprintln!("ktest attack: msr {}: {}", name, outcome(ok));
            }
            return refused("msr", checks.iter().all(|c| c.1));
        }
        "icr-nmi" => return refused("icr-nmi", icr_refused((u64::from(peer_apic()) << 32) | (4 << 8) | (1 << 14))),
        "icr-init" => {
            let init = (u64::from(peer_apic()) << 32) | (5 << 8) | (1 << 14) | (1 << 15);
            let all_but_self = (3 << 18) | (5 << 8) | (1 << 14);
            return refused("icr-init", icr_refused(init) && icr_refused(all_but_self));
        }
        "icr-vector" => {
            let p = u64::from(peer_apic()) << 32;
            let checks = [
                icr_refused(p | (1 << 14) | 14),                                   // exception vector
                icr_refused(p | (1 << 14) | 0x40),                                 // not the channel vector
                icr_refused(p | (1 << 14) | u64::from(questv_kernel::channel::endpoint::VECTOR_CHANNEL)), // no channel
                icr_refused((2 << 18) | (1 << 14) | 0x40),                         // broadcast
            ];
            // A storm of refused IPIs changes nothing either.
            let storm = (0..1000).all(|_| icr_refused(p | (1 << 14) | 0x40));
            return refused("icr-vector", checks.iter().all(|&c| c) && storm);
        }
        "apic" => {
            // xAPIC page writes the monitor must drop: the APIC id, and LINT1 set to deliver NMIs to this core.
            if lapic::is_x2apic() {
                kprintln!("ktest attack apic: only meaningful with a trapped xAPIC page");
                return 2;
            }
            let base = lapic::xapic_base();
            // SAFETY (block): deliberate writes to this core's own APIC registers; the monitor must drop them.
            let (id_before, id_after, lint1) = unsafe {
                let id = (base + 0x20) as *mut u32;
                let before = core::ptr::read_volatile(id);
                core::ptr::write_volatile(id, before ^ (0x0F << 24));
                core::ptr::write_volatile((base + 0x360) as *mut u32, 4 << 8);
                (before, core::ptr::read_volatile(id), core::ptr::read_volatile((base + 0x360) as *const u32))
            };
            kprintln!("ktest attack: APIC id 0x{:x} -> 0x{:x}, LINT1 0x{:x}", id_before, id_after, lint1);
            return refused("apic", id_after == id_before && (lint1 >> 8) & 7 != 4);
        }
        "panic" => panic!("ktest attack panic: a sandbox kernel panics"),
        "hang" => {
            kprintln!("ktest attack: sandbox {} spins with interrupts off", sandbox);
            cpu::disable_interrupts();
            loop {
                core::hint::spin_loop();
            }
        }
        "user-vmcall" => return questv_kernel::proc::run_command("uvmcall"),
        "restore-text" => {
            // Have the monitor do the write the second stage forbids: RESTORE a checkpoint over our own kernel
            // text. It must refuse with EFAULT and write nothing, and RESTORE into writable memory still works.
            use questv_abi::hypercall as hc;
            let text = attack as *const () as u64;
            let slot = hc::CHECKPOINT_SLOTS - 1;
            let junk = [0xCCu8; 16];
            let saved = questv_kernel::sandbox::checkpoint(slot, &junk).is_ok();
            // SAFETY: reading 8 bytes of this function's own code (mapped readable).
            let read_text = || unsafe { core::ptr::read_volatile(text as *const u64) };
            let before = read_text();
            let over_text = hc::decode(cpu::vmcall(hc::RESTORE, text, hc::checkpoint_arg(slot, junk.len() as u64)));
            let after = read_text();
            let mut buf = [0u8; 16];
            let into_data = questv_kernel::sandbox::restore(slot, &mut buf);
            kprintln!("ktest attack: RESTORE over text at 0x{:x}: {:?}, text {}; into data: {:?}", text, over_text, if before == after { "unchanged" } else { "CHANGED" }, into_data);
            return refused("restore-text", saved && over_text == Err(hc::EFAULT) && before == after && into_data == Ok(16) && buf == junk);
        }
        "forge" => {
            // Fake monitor lines through the console hypercall (the monitor prefixes them) and straight to
            // COM1 (its port is refused).
            kprintln!("QUESTV DONE status=0");
            kprintln!("RESULT sandbox_done sandbox=1 status=0");
            questv_kernel::console::write_bytes(b"partial\rQUESTV DONE status=0\n\x1b[2KQUESTV DONE status=0\n");
            for b in b"\nQUESTV DONE status=0\n" {
                // SAFETY: deliberate: COM1 belongs to the monitor; the write must be dropped.
                unsafe { cpu::outb(0x3F8, *b) };
            }
            result!("attack", "kind=forge outcome=attempted");
            return run_then(0);
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
    if kind == "text" {
        write_own_text(addr);
    } else {
        forbidden_write(addr);
    }
    result!("attack", "kind={} outcome=not_contained", kind);
    1
}

/// A write the second stage must stop: `addr` lies outside this sandbox's memory (or is read-only in it), so
/// the write exits to the monitor, which stops or recovers the sandbox.
fn forbidden_write(addr: u64) {
    // SAFETY: deliberate; nothing of this sandbox is at `addr`, or the write never happens.
    unsafe { core::ptr::write_volatile(addr as *mut u64, 0xBAD0_BAD0_BAD0_BAD0) };
}

/// Write this kernel's own text at `at` the way a compromised kernel would: its own page tables map text
/// read-only, so it first clears CR0.WP. The EPT/NPT is the layer that must still hold.
fn write_own_text(at: u64) {
    // SAFETY: deliberate: with WP cleared only the second stage stops the write, which stops this sandbox.
    unsafe {
        core::arch::asm!("mov {0}, cr0", "and {0}, {1}", "mov cr0, {0}", out(reg) _, in(reg) !(1u64 << 16));
        core::ptr::write_volatile(at as *mut u8, 0xCC);
    }
}

/// The first channel listed in the shared info page's directory (waiting up to ~10 s for one to appear).
fn channel_target() -> Option<u64> {
    use questv_abi::hypercall::info;
    let shared = questv_kernel::sandbox::shared_region()?;
    let deadline = cpu::rdtsc() + seconds(10);
    // SAFETY: the shared region is mapped for every sandbox; the directory layout is the ABI's (`info`).
    unsafe {
        let count = &*((shared + info::CHANNEL_COUNT_OFFSET) as *const core::sync::atomic::AtomicU32);
        while count.load(Ordering::Acquire) == 0 {
            if cpu::rdtsc() > deadline {
                return None;
            }
            sched::yield_now();
        }
        Some(core::ptr::read_volatile((shared + info::CHANNEL_DIR_OFFSET + 8) as *const u64))
    }
}
