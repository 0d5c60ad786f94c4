//! VCPU scheduling in the booted kernel (docs/scheduling.md): shares of CPU-bound processes on sporadic-server
//! VCPUs, admission control refusals, the trace. The scheduler's guarantees themselves are property-tested on
//! the host (kernel/src/vcpu/sim.rs).
mod common;
use common::*;

/// The share tests measure time: run them one at a time so they do not compete for the host's cores.
static TIMED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Each child's measured share of the core is within `tolerance` percentage points of its VCPU's utilization.
fn check_shares(r: &Run, tolerance: f64) {
    r.check(r.code == 0 && r.done_status() == Some(0), "vcpu share run failed");
    let shares = r.results("vcpu_share");
    let mut checked = 0;
    for s in &shares {
        let Some(pct) = s.get_u64("pct") else { continue }; // the parent's line says pct=default
        let share: f64 = s.get("share_pct").and_then(|v| v.parse().ok()).unwrap_or(-100.0);
        r.check((share - pct as f64).abs() <= tolerance, &format!("VCPU of {pct} % got {share} % of the core"));
        checked += 1;
    }
    r.check(checked == 2, "expected two measured children");
}

// The share tests run on QEMU's instruction-counting clock (`--clock icount`): on host time, a host thread
// descheduled while a child runs is time the guest's scheduler sees that child use, and CI's parallel tests
// made the shares drift by up to 10 points (24.8 % / 70.5 % once). Counted instructions are what the guest ran.
#[test]
fn vcpu_shares_30_and_60_percent_smp() {
    let _one_at_a_time = TIMED.lock().unwrap_or_else(|e| e.into_inner());
    let r = boot(&["--emulator", "qemu", "--cpus", "1", "--clock", "icount", "--run", "vcpu share 30 60 3000"]);
    check_shares(&r, 3.0);
}

#[test]
fn vcpu_shares_30_and_60_percent_in_a_sandbox() {
    // The same kernel code as a sandbox under the SVM monitor. Each timer programming and EOI is a trapped
    // APIC write here (two exits per timer interrupt), which the shares must absorb.
    let _one_at_a_time = TIMED.lock().unwrap_or_else(|e| e.into_inner());
    let r = vt("qemu", 1, &["--clock", "icount", "--run", "vcpu share 30 60 3000"]);
    check_shares(&r, 3.0);
}

#[test]
fn vcpu_sets_above_the_bound_are_refused() {
    let r = boot(&["--emulator", "qemu", "--cpus", "1", "--run", "vcpu refuse"]);
    r.check(r.code == 0 && r.done_status() == Some(0), "vcpu refuse run failed");
    let cases = r.results("vcpu_refused");
    r.check(cases.len() == 7, "expected 7 refusal cases");
    for c in &cases {
        r.check(c.get("errno") == c.get("expected"), &format!("case {:?} gave the wrong errno", c.get("case")));
    }
    r.check(
        r.stdout.contains("above the rate-monotonic bound 82.8426 % (2 harmonic chain(s))")
            && r.stdout.contains("utilization 40.0000 % requested"),
        "the refusal message names the bound and the requested utilization",
    );
    let admitted = r.results("vcpu_admitted");
    r.check(admitted.len() == 1 && admitted[0].get("id").is_some_and(|i| !i.starts_with('-')), "a feasible VCPU still fits after the refusals");
}

#[test]
fn vcpu_trace_dumps_charges_replenishments_and_switches() {
    let r = boot(&["--emulator", "qemu", "--cpus", "1", "--run", "vcpu trace 300"]);
    r.check(r.code == 0 && r.done_status() == Some(0), "vcpu trace run failed");
    let rows: Vec<Vec<&str>> = r
        .stdout
        .lines()
        .filter_map(|l| l.split_once("CSV vcpu-trace ").map(|(_, rest)| rest.trim().split(',').collect()))
        .collect();
    r.check(rows.first().is_some_and(|h| h == &["time_us", "event", "vcpu", "amount_us"]), "CSV header");
    let body = &rows[1..];
    r.check(body.iter().all(|f| f.len() == 4 && f[0].parse::<u64>().is_ok() && f[3].parse::<u64>().is_ok()), "every row parses");
    for kind in ["charge", "replenish", "switch", "exhaust"] {
        r.check(body.iter().any(|f| f[1] == kind), &format!("no {kind} event in the trace"));
    }
    // The 20 % VCPU (id 1, C = 2 ms) never gets more than its budget in one foreground charge.
    r.check(body.iter().filter(|f| f[1] == "charge" && f[2] == "1").all(|f| f[3].parse::<u64>().unwrap() <= 2_000 + 50), "charge above budget");
}

/// One phase's trace read for the NIC driver's I/O VCPU, per period it ran at (0: its own): how often the
/// core switched to it, how often that switch took the core from the spinning Main VCPU `med` while `med` was
/// charging foreground budget (a preemption), and the longest run (one activation: switch-in to switch-out)
/// among those that began at that period.
#[derive(Debug, Default, Clone, Copy)]
struct IoDispatch {
    switches: u64,
    preempted_med: u64,
    max_run_us: u64,
}

fn io_dispatch(rows: &[Vec<String>], io: &str, med: &str) -> std::collections::BTreeMap<u64, IoDispatch> {
    let mut by_period: std::collections::BTreeMap<u64, IoDispatch> = Default::default();
    let mut inherited = 0;
    let mut running = String::new();
    // The last thing `med`'s accounting said: "charge" (foreground), "background" or "exhaust".
    let mut med_last = "";
    // The I/O VCPU's run under way: the period it began at, what it has been charged.
    let mut io_run: Option<(u64, u64)> = None;
    for r in rows {
        let (event, vcpu, amount) = (r[1].as_str(), r[2].as_str(), r[3].parse::<u64>().unwrap_or(0));
        match event {
            "inherit" if vcpu == io => inherited = amount,
            "charge" | "background" | "exhaust" if vcpu == med => med_last = event,
            "charge" if vcpu == io => {
                if let Some((_, used)) = io_run.as_mut() {
                    *used += amount;
                }
            }
            "switch" => {
                if let Some((period, used)) = io_run.take() {
                    let d = by_period.entry(period).or_default();
                    d.max_run_us = d.max_run_us.max(used);
                }
                if vcpu == io {
                    let d = by_period.entry(inherited).or_default();
                    d.switches += 1;
                    if running == med && med_last == "charge" {
                        d.preempted_med += 1;
                    }
                    io_run = Some((inherited, 0));
                }
                running = vcpu.to_string();
            }
            _ => {}
        }
    }
    by_period
}

// I/O priority inheritance (paper §3.4): while a process waits on the network (NET_WAIT), the NIC driver's
// I/O VCPU runs at the period of that process's Main VCPU. A CPU-bound process on a 20 ms VCPU competes for
// the core while pings arrive every 5 ms: with a 5 ms waiter the bottom half preempts it; with a 40 ms waiter
// it never does (it runs once the 20 ms VCPU's budget is spent); with both waiting, the 5 ms one wins.
#[test]
fn io_vcpu_inherits_the_network_waiters_priority_smp() {
    check_io_inheritance(false);
}

#[test]
fn io_vcpu_inherits_the_network_waiters_priority_in_a_sandbox() {
    check_io_inheritance(true);
}

fn check_io_inheritance(vt: bool) {
    require("grub-mkrescue");
    require("qemu-system-x86_64");
    let o = questv::ping::PingOptions {
        boot: questv::BootOptions { vt, cpus: 1, echo: false, icount: true, ..Default::default() },
        // 12 s of pings: the three phases take 1.2 s of guest time, and a loaded host stretches that (on the
        // instruction-counting clock guest time is instructions run, not host seconds).
        count: 2400,
        interval_ms: 5,
        program: Some("vcpu netwait 400".into()),
        ..Default::default()
    };
    let run = questv::ping::ping_run(&o).unwrap_or_else(|e| panic!("ping run failed: {e}"));
    let r = Run { code: i32::from(!run.all_answered()), stdout: run.boot.lines.join("\n"), stderr: run.result_lines().join("\n") };
    r.check(run.all_answered(), "not every ping was answered, or the guest program failed");
    let setup = r.results("vcpu_netwait_setup");
    r.check(setup.len() == 1, "expected the setup line");
    let (io, med) = (setup[0].get("io").unwrap_or("?").to_string(), setup[0].get("med").unwrap_or("?").to_string());
    let phases = r.results("vcpu_netwait");
    r.check(phases.len() == 3 && phases.iter().all(|p| p.get("status") == Some("0,0")), "every waiter's wait must time out on its own (status 3: the peer's pings ran out first, cutting a phase short)");
    let rows = |phase: &str| -> Vec<Vec<String>> {
        let prefix = format!("CSV vcpu-netwait-{phase} ");
        r.stdout.lines().filter_map(|l| l.split_once(&prefix).map(|(_, rest)| rest.trim().split(',').map(str::to_string).collect::<Vec<_>>())).filter(|f| f.len() == 4 && f[0] != "time_us").collect()
    };
    let inherit_rows = |rows: &[Vec<String>]| -> Vec<u64> { rows.iter().filter(|f| f[1] == "inherit" && f[2] == io).map(|f| f[3].parse().unwrap()).collect() };

    let hi = rows("hi");
    r.check(inherit_rows(&hi) == [5_000, 0], "the hi phase: the I/O VCPU takes the 5 ms period, then its own back");
    let d = io_dispatch(&hi, &io, &med);
    eprintln!("io dispatch per inherited period (hi phase): {d:?}");
    let at5 = d.get(&5_000).copied().unwrap_or_default();
    r.check(at5.preempted_med > 0, &format!("at 5 ms the bottom half must preempt the 20 ms VCPU: {d:?}"));
    // An activation gets U (20 %) times the period it begins at: 1 ms at 5 ms (the timer may end it late).
    r.check(at5.max_run_us <= 1_000 + 300, &format!("an activation at 5 ms ran longer than 1 ms: {d:?}"));

    let lo = rows("lo");
    r.check(inherit_rows(&lo) == [40_000, 0], "the lo phase: the I/O VCPU takes the 40 ms period, then its own back");
    let d = io_dispatch(&lo, &io, &med);
    eprintln!("io dispatch per inherited period (lo phase): {d:?}");
    let at40 = d.get(&40_000).copied().unwrap_or_default();
    r.check(at40.switches > 0, &format!("the bottom half still runs at 40 ms: {d:?}"));
    r.check(at40.preempted_med == 0, &format!("at 40 ms the bottom half never preempts the 20 ms VCPU: {d:?}"));
    r.check(d.values().all(|x| x.max_run_us <= 8_000 + 300), &format!("no activation above U x 40 ms = 8 ms: {d:?}"));

    let both = rows("both");
    let inh = inherit_rows(&both);
    // Whichever child registers first, the 5 ms period is inherited while it waits, and the own one at the end.
    r.check(inh.contains(&5_000) && inh.last() == Some(&0), &format!("with both waiting the 5 ms waiter wins: {inh:?}"));
    let d = io_dispatch(&both, &io, &med);
    eprintln!("io dispatch per inherited period (both waiting): {d:?}");
    r.check(d.get(&5_000).is_some_and(|x| x.preempted_med > 0), &format!("both waiting: preemptions at 5 ms: {d:?}"));
}
