//! Try the VCPU scheduler (docs/scheduling.md) from `--run`:
//!   vcpu share [PCT_A PCT_B MS PERIOD_MS]
//!                                two CPU-bound children on Main VCPUs of PCT_A % and PCT_B % (period 50 ms) on
//!                                this core, the parent busy on the default VCPU (10 %); each child measures
//!                                the share of the core it got. `RESULT vcpu_share vcpu=.. pct=.. share_pct=..`
//!   vcpu refuse                  sets above the rate-monotonic bound and bad parameters are refused:
//!                                `RESULT vcpu_refused case=.. errno=..`
//!   vcpu trace [MS]              a short run on a 20 % VCPU, then the scheduler's trace as CSV lines
//!                                prefixed `CSV vcpu-trace `
//!   vcpu netwait [PHASE_MS]      I/O priority inheritance (under `questv ping`): once pings flow, a child on a
//!                                5 ms Main VCPU ("hi"), then one on a 40 ms VCPU ("lo"), then both wait on the
//!                                network for PHASE_MS each, while a CPU-bound child spins on a 20 ms VCPU
//!                                ("med"); after each phase the trace as lines prefixed `CSV vcpu-netwait-PHASE `
//!                                and `RESULT vcpu_netwait phase=..`; then it serves until the stop marker
//!   vcpu info                    the default VCPU's accounting
#![no_std]
#![no_main]

use questv_libc_shim::{self as sys, errno, net, println, vcpu};

questv_libc_shim::entry!(main);

const PERIOD_US: u64 = 50_000;
/// A gap between two clock reads longer than this means another process ran (VCPU budgets here are whole
/// milliseconds); shorter ones are this process's own interrupts and VM exits, charged to it like the kernel does.
const GAP_NS: u64 = 1_000_000;

fn main(args: &[&str]) -> i32 {
    match args.get(1).copied() {
        Some("share") => share(args),
        Some("refuse") => refuse(),
        Some("trace") => trace(args),
        Some("netwait") => netwait(args),
        Some("info") | None => {
            print_info(vcpu::DEFAULT);
            0
        }
        Some(other) => {
            println!("vcpu: unknown command {:?} (share, refuse, trace, netwait, info)", other);
            2
        }
    }
}

fn print_info(id: u32) {
    match vcpu::info(id) {
        Ok(i) => println!(
            "RESULT vcpu_info vcpu={} class={} budget_us={} period_us={} foreground_us={} background_us={} capacity_us={} replenishments={} exhausted={} overrun_us={} switches_in={}",
            id, if i.class == vcpu::IO { "io" } else { "main" }, i.budget_us, i.period_us, i.foreground_us,
            i.background_us, i.capacity_us, i.replenishments, i.exhausted, i.overrun_us, i.switches_in
        ),
        Err(e) => println!("vcpu: info {} failed: error {}", id, e),
    }
}

/// Spin until `end_ns`; returns the nanoseconds this process itself ran (time between close TSC reads).
fn spin_until(end_ns: u64) -> u64 {
    let mut mine = 0;
    let mut last = sys::clock_monotonic_ns();
    while last < end_ns {
        let now = sys::clock_monotonic_ns();
        let d = now - last;
        if d < GAP_NS {
            mine += d;
        }
        last = now;
    }
    mine
}

fn share(args: &[&str]) -> i32 {
    let arg = |i, d| questv_userland::arg_u64(args, i, d);
    let (Some(pa), Some(pb), Some(ms), Some(period_ms)) = (arg(2, 30), arg(3, 60), arg(4, 3000), arg(5, PERIOD_US / 1000)) else {
        println!("usage: vcpu share [PCT_A PCT_B MS PERIOD_MS]");
        return 2;
    };
    let period_us = period_ms * 1000;
    let mut ids = [0u32; 2];
    for (k, pct) in [pa, pb].into_iter().enumerate() {
        let id = vcpu::create(vcpu::MAIN, pct * period_us / 100, period_us);
        if id < 0 {
            println!("vcpu: cannot create a {} % VCPU: error {}", pct, id);
            return 1;
        }
        ids[k] = id as u32;
    }
    let start = sys::clock_monotonic_ns();
    let end = start + ms * 1_000_000;
    let mut pids = [0i64; 2];
    for k in 0..2 {
        let pid = sys::fork();
        if pid == 0 {
            if vcpu::bind(ids[k]) < 0 {
                println!("vcpu: bind failed");
                sys::exit(1);
            }
            let used = |i: vcpu::Info| i.foreground_us + i.background_us;
            let (t0, i0) = (sys::clock_monotonic_ns(), vcpu::info(ids[k]).unwrap_or_default());
            let mine = spin_until(end);
            let (t1, i1) = (sys::clock_monotonic_ns(), vcpu::info(ids[k]).unwrap_or_default());
            let wall = t1 - start;
            let pct = [pa, pb][k];
            // Shares in hundredths of a percent: what the scheduler charged this VCPU (its only process) over
            // the interval, and what the process saw between its own clock reads (host load makes that one
            // undercount: a descheduled emulator thread looks like another process running).
            let share = (used(i1) - used(i0)) * 1000 * 10_000 / (t1 - t0).max(1);
            let seen = mine * 10_000 / wall.max(1);
            println!(
                "RESULT vcpu_share vcpu={} pct={} share_pct={}.{:02} seen_pct={}.{:02} ran_us={} wall_us={}",
                ids[k], pct, share / 100, share % 100, seen / 100, seen % 100, mine / 1000, wall / 1000
            );
            print_info(ids[k]);
            sys::exit(0);
        }
        if pid < 0 {
            println!("vcpu: fork failed: error {}", pid);
            return 1;
        }
        pids[k] = pid;
    }
    // Keep the default VCPU busy too, so no time is left for the background.
    let mine = spin_until(end);
    let wall = sys::clock_monotonic_ns() - start;
    let share = mine * 10_000 / wall.max(1);
    println!("RESULT vcpu_share vcpu={} pct=default share_pct={}.{:02} ran_us={} wall_us={}", vcpu::DEFAULT, share / 100, share % 100, mine / 1000, wall / 1000);
    let mut status = 0;
    for pid in pids {
        let (r, st) = sys::waitpid(pid, 0);
        if r != pid || sys::wait::shell_status(st) != 0 {
            status = 1;
        }
    }
    print_info(vcpu::DEFAULT);
    status
}

fn refuse() -> i32 {
    let mut failures = 0;
    let mut case = |name: &str, r: i64, want: i64| {
        println!("RESULT vcpu_refused case={} errno={} expected={}", name, -r, want);
        if r != -want {
            failures += 1;
        }
    };
    // 10 % default + 50 % (T 10 ms) + 40 % (T 15 ms): 100 % on two harmonic chains, above 82.8 %.
    let half = vcpu::create(vcpu::MAIN, 5_000, 10_000);
    if half < 0 {
        println!("vcpu: a 50 % VCPU was refused: error {}", half);
        return 1;
    }
    case("above_bound", vcpu::create(vcpu::MAIN, 6_000, 15_000), errno::EBUSY);
    case("above_full_harmonic", vcpu::create(vcpu::MAIN, 5_000, 10_000), errno::EBUSY);
    case("zero_budget", vcpu::create(vcpu::MAIN, 0, 10_000), errno::EINVAL);
    case("budget_above_period", vcpu::create(vcpu::MAIN, 20_000, 10_000), errno::EINVAL);
    case("bad_class", vcpu::create(7, 1_000, 10_000), errno::EINVAL);
    case("raise_above_bound", vcpu::set(half as u32, 9_500, 10_000), errno::EBUSY);
    case("bind_missing", vcpu::bind(999), errno::ESRCH);
    // Still feasible after the refusals: 40 % more on the same harmonic chain fits (10 + 50 + 40 = 100 %).
    let fits = vcpu::create(vcpu::MAIN, 4_000, 10_000);
    println!("RESULT vcpu_admitted case=fills_harmonic_chain id={}", fits);
    if fits < 0 {
        failures += 1;
    }
    i32::from(failures > 0)
}

fn trace(args: &[&str]) -> i32 {
    let ms = questv_userland::arg_u64(args, 2, 200).unwrap_or(200);
    let id = vcpu::create(vcpu::MAIN, 2_000, PERIOD_US);
    if id < 0 {
        println!("vcpu: cannot create a 20 % VCPU: error {}", id);
        return 1;
    }
    let end = sys::clock_monotonic_ns() + ms * 1_000_000;
    let pid = sys::fork();
    if pid == 0 {
        vcpu::bind(id as u32);
        spin_until(end);
        sys::exit(0);
    }
    spin_until(end);
    sys::waitpid(pid, 0);
    let mut buf = [0u8; 65536];
    let n = vcpu::trace(&mut buf);
    if n < 0 {
        println!("vcpu: trace failed: error {}", n);
        return 1;
    }
    let text = core::str::from_utf8(&buf[..n as usize]).unwrap_or("");
    let mut lines = 0;
    for l in text.lines() {
        println!("CSV vcpu-trace {}", l);
        lines += 1;
    }
    println!("RESULT vcpu_trace lines={}", lines);
    0
}

/// Copy this CPU's trace out (and clear it); print it as `CSV vcpu-netwait-PHASE` lines unless `phase` is
/// empty. Returns the rows.
fn dump_trace(buf: &mut [u8], phase: &str) -> Result<usize, i64> {
    let n = vcpu::trace(buf);
    if n < 0 {
        return Err(n);
    }
    let text = core::str::from_utf8(&buf[..n as usize]).unwrap_or("");
    let mut rows = 0;
    for l in text.lines() {
        if !phase.is_empty() {
            println!("CSV vcpu-netwait-{} {}", phase, l);
        }
        rows += 1;
    }
    Ok(rows)
}

/// Wait until the NIC is up and the host peer's pings arrive (`rx_mine` grows); false after `secs`.
fn pings_flowing(secs: u64) -> bool {
    let end = sys::clock_monotonic_ns() + secs * 1_000_000_000;
    let mut first: Option<u64> = None;
    while sys::clock_monotonic_ns() < end {
        if let Ok(i) = net::info() {
            if i.up != 0 {
                let f = *first.get_or_insert(i.rx_mine);
                if i.rx_mine >= f + 3 {
                    return true;
                }
            }
        }
        sys::nanosleep(20_000_000);
    }
    false
}

fn netwait(args: &[&str]) -> i32 {
    let Some(phase_ms) = questv_userland::arg_u64(args, 2, 400) else {
        println!("usage: vcpu netwait [PHASE_MS]");
        return 2;
    };
    if !pings_flowing(300) {
        println!("RESULT vcpu_netwait pings=0");
        return 1;
    }
    let Some(io) = (0..32).find(|&id| vcpu::info(id).is_ok_and(|i| i.class == vcpu::IO)) else {
        println!("vcpu: the NIC driver has no I/O VCPU");
        return 1;
    };
    // Rate-monotonic order: hi (5 ms) < I/O's own (10 ms) < med (20 ms) < lo (40 ms) < default (100 ms).
    let (hi, lo, med) = (vcpu::create(vcpu::MAIN, 250, 5_000), vcpu::create(vcpu::MAIN, 1_000, 40_000), vcpu::create(vcpu::MAIN, 4_000, 20_000));
    if hi < 0 || lo < 0 || med < 0 {
        println!("vcpu: cannot create the VCPUs: {} {} {}", hi, lo, med);
        return 1;
    }
    let (hi, lo, med) = (hi as u32, lo as u32, med as u32);
    let io_period = vcpu::info(io).map_or(0, |i| i.period_us);
    println!("RESULT vcpu_netwait_setup io={} io_period_us={} hi={} lo={} med={} phase_ms={}", io, io_period, hi, lo, med, phase_ms);
    let spinner = sys::fork();
    if spinner == 0 {
        vcpu::bind(med);
        spin_until(sys::clock_monotonic_ns() + (3 * phase_ms + 1_000) * 1_000_000);
        sys::exit(0);
    }
    let mut buf = [0u8; 65536];
    let mut failures = 0;
    for (phase, waiters) in [("hi", &[hi][..]), ("lo", &[lo][..]), ("both", &[hi, lo][..])] {
        let _ = dump_trace(&mut buf, "");
        let before = vcpu::info(io).unwrap_or_default();
        let mut pids = [0i64; 2];
        for (k, &v) in waiters.iter().enumerate() {
            let pid = sys::fork();
            if pid == 0 {
                vcpu::bind(v);
                // 0: the wait timed out, as it should; 1: the stop marker came first (the phase was cut short).
                sys::exit(match net::wait_stop(phase_ms) {
                    0 => 0,
                    1 => 3,
                    _ => 1,
                });
            }
            pids[k] = pid;
        }
        let mut statuses = [0i32; 2];
        for k in 0..waiters.len() {
            statuses[k] = sys::wait::shell_status(sys::waitpid(pids[k], 0).1);
        }
        let after = vcpu::info(io).unwrap_or_default();
        let rows = dump_trace(&mut buf, phase).unwrap_or(0);
        println!(
            "RESULT vcpu_netwait phase={} waiters={} status={},{} io_activations={} io_used_us={} trace_rows={}",
            phase, waiters.len(), statuses[0], statuses[1], after.replenishments - before.replenishments,
            after.foreground_us - before.foreground_us, rows
        );
        failures += statuses[..waiters.len()].iter().filter(|&&s| s != 0).count();
    }
    sys::waitpid(spinner, 0);
    // Serve until the peer's end marker, as netserve does. In waits of a minute: on QEMU's instruction-counting
    // clock an idle guest's time leaps to its next timer, so a long wait can time out long before the peer is
    // done; the runner's own timeout bounds the whole run.
    let mut stopped = 0;
    for _ in 0..1_000 {
        stopped = net::wait_stop(60_000);
        if stopped != 0 {
            break;
        }
    }
    println!("RESULT vcpu_netwait_end stopped={} failures={}", stopped, failures);
    i32::from(stopped != 1 || failures > 0)
}

