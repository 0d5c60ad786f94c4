//! Fault injection for recovery: `ktest inject` (one fault into one sandbox, on a trigger) and `ktest campaign`
//! (many random faults, while two bystanders exchange channel messages).

use core::sync::atomic::Ordering;
use questv_arch::cpu;
use questv_kernel::{kprintln, result, sched, time};
use crate::util::{forbidden_write, write_own_text};

/// When an injected fault fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
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
pub(crate) fn inject(kind: &str, target: u32, trigger: Trigger, then: Option<&str>) -> i32 {
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
pub(crate) fn driver_fault(code: u32) {
    if code == crate::attack_nic::HOLD_LOCK {
        crate::attack_nic::hold_the_lock();
    }
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
        "text" => write_own_text(questv_arch::paging::virt_to_phys(inject_now as *const () as u64)),
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
                core::ptr::write_bytes(questv_arch::paging::phys_to_virt(base) as *mut u8, 0xA5, questv_kernel::channel::endpoint::CHANNEL_BYTES as usize);
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
pub(crate) fn campaign(n: u64, seed: u64, then: Option<&str>) -> i32 {
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
    questv_kernel::sandbox::count()
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
                // A target is faulted again only 2.2 s after its boot (booted, in service, traffic flowing again).
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
