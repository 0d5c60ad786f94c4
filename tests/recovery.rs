//! Online recovery (docs/recovery.md) on the SVM backend in QEMU: a sandbox that faults is scrubbed, reloaded
//! from the pristine image and relaunched (`--recovery restart`) while the others run on undisturbed — no VM
//! exits in their loops, no lost channel messages — and a sandbox that faults again and again is stopped.
mod common;
use common::{check_monitor_ended_run, exits_of, no_leak, periodic_exits, status_of, vt, Run};
use questv::ResultLine;

const QEMU: &str = "qemu";

/// Sandbox `s` faulted once (`reason`) and was restarted: fault line, recovery line with its phases, back in
/// service, then its program ran to the end.
fn restarted_once(r: &Run, s: u64, reason: &str) -> ResultLine {
    let f = r.monitor_results("sandbox_fault");
    r.check(f.len() == 1, "expected exactly one sandbox fault");
    r.check(f[0].get_u64("sandbox") == Some(s) && f[0].get("reason") == Some(reason), "the fault was not the injected one");
    r.check(f[0].get("action") == Some("restart") && f[0].get("policy") == Some("restart"), "the faulted sandbox was not restarted");
    let rec = r.monitor_results("sandbox_recovered");
    r.check(rec.len() == 1 && rec[0].get_u64("sandbox") == Some(s) && rec[0].get_u64("incarnation") == Some(1), "expected one recovery to incarnation 1");
    for phase in ["scrub_cycles", "reload_cycles", "stage2_cycles", "channels_cycles", "total_cycles", "total_us"] {
        r.check(rec[0].get_u64(phase).is_some_and(|c| c > 0), "a recovery phase was not measured");
    }
    let ready = r.monitor_results("sandbox_ready");
    r.check(ready.len() == 1 && ready[0].get_u64("sandbox") == Some(s) && ready[0].get_u64("downtime_us").is_some_and(|d| d > 0), "the recovered sandbox did not report back in service");
    let boots = r.sandbox_results("sandbox_boot", s as u32);
    r.check(boots.len() == 2 && boots[1].get_u64("incarnation") == Some(1), "the recovered sandbox did not boot again as incarnation 1");
    r.check(status_of(r, s) == Some(0), "the recovered sandbox did not finish its program");
    rec[0].clone()
}

/// The sandboxes other than `faulted` ran forkwait 100 without noticing: their loop took no exits beyond their
/// periodic ones, nothing leaked, status 0.
fn bystanders_ran_forkwait(r: &Run, faulted: u32) {
    for s in (0..4u32).filter(|&s| s != faulted) {
        let fw = r.sandbox_results("forkwait", s);
        r.check(fw.len() == 1 && fw[0].get_u64("iterations") == Some(100), "a bystander did not finish forkwait 100");
        let e = exits_of(r, u64::from(s)).unwrap_or_else(|| r.fail("no exit report for a bystander"));
        r.check(fw[0].get_u64("vmexits").is_some_and(|x| x <= periodic_exits(&e)), "a bystander took VM exits during forkwait");
        let frames = r.sandbox_results("frames", s);
        r.check(frames.len() == 1 && no_leak(&frames[0]), "a bystander leaked frames");
        r.check(status_of(r, u64::from(s)) == Some(0), "a bystander failed");
    }
}

fn inject(kind: &str, sandbox: u32, then: &str, extra: &[&str]) -> Run {
    let run = format!("ktest inject {kind} {sandbox} -- {then}");
    let r = vt(QEMU, 4, &[&["--recovery", "restart"], extra, &["--run", &run]].concat());
    check_monitor_ended_run(&r, 4);
    r
}

#[test]
fn recovery_restarts_a_panicked_sandbox_while_the_others_run() {
    let r = inject("panic", 1, "forkwait 100", &[]);
    r.check(r.code == 0 && r.done_status() == Some(0), "the run did not end cleanly after the recovery");
    let rec = restarted_once(&r, 1, "panic");
    // The panic hypercall carries the guest's time stamp: the exit-to-monitor phase is measured.
    r.check(rec.get_u64("exit_to_monitor_cycles").is_some(), "no exit-to-monitor time for a panic");
    let fw = r.sandbox_results("forkwait", 1);
    r.check(fw.len() == 1 && fw[0].get_u64("iterations") == Some(100), "the recovered sandbox did not run forkwait");
    bystanders_ran_forkwait(&r, 1);
}

/// Every kind of fault the monitor detects ends in a restart: a wild write (NPT violation), an exception in
/// the kernel (its panic path), a write to its own kernel text, a triple fault, a hang (the watchdog).
#[test]
fn recovery_restarts_after_every_detected_fault_kind() {
    for (kind, reason, extra) in [
        ("wild", "memory_violation", &[][..]),
        ("ud", "panic", &[][..]),
        ("text", "memory_violation", &[][..]),
        ("triple", "shutdown", &[][..]),
        ("hang", "watchdog", &["--watchdog-ms", "300"][..]),
    ] {
        let r = inject(kind, 2, "forkwait 100", extra);
        r.check(r.code == 0 && r.done_status() == Some(0), "the run did not end cleanly after the recovery");
        restarted_once(&r, 2, reason);
        bystanders_ran_forkwait(&r, 2);
    }
}

/// A sandbox restarted next to a channel in use: the two endpoints (sandboxes 0 and 1) lose, duplicate and
/// corrupt nothing and take no exits; the restarted one (2) has no channel of its own and idles after.
#[test]
fn recovery_leaves_bystander_channels_whole() {
    let r = inject("wild", 2, "msgtest 3000", &["--apic", "passthrough"]);
    r.check(r.code == 0 && r.done_status() == Some(0), "the run did not end cleanly after the recovery");
    restarted_once(&r, 2, "memory_violation");
    let rx = r.sandbox_results("msgtest", 1);
    r.check(rx.len() == 1 && rx[0].get_u64("received") == Some(3000), "the receiver did not get every message");
    for k in ["lost", "dup", "corrupt"] {
        r.check(rx[0].get_u64(k) == Some(0), "messages were lost, duplicated or corrupted");
    }
    for s in 0..2u32 {
        let m = r.sandbox_results("msgtest", s);
        r.check(m.len() == 1 && m[0].get("vmexits") == Some("0"), "a channel endpoint took VM exits");
    }
}

/// A sandbox that faults every time it is relaunched is stopped by the crash-loop rule (default: three
/// recoveries within 60 s; the fourth fault stops it); the others finish.
#[test]
fn recovery_stops_a_crash_loop() {
    let r = inject("always-panic", 3, "forkwait 100", &[]);
    let f = r.monitor_results("sandbox_fault");
    r.check(f.len() == 4 && f.iter().all(|f| f.get_u64("sandbox") == Some(3)), "expected four faults of sandbox 3");
    r.check(f[..3].iter().all(|f| f.get("action") == Some("restart")), "the first three faults were not recovered");
    r.check(f[3].get("action") == Some("stopped") && f[3].get_u64("crash_loop") == Some(4), "the crash loop was not ended");
    r.check(status_of(&r, 3) == Some(137), "the looping sandbox should end stopped (137)");
    bystanders_ran_forkwait(&r, 3);
}

/// The campaign (`faults`): a dozen faults of random kinds into random targets, one after another; each one
/// detected and recovered, none escaping, no message between the bystanders lost.
#[test]
fn recovery_campaign_detects_and_recovers_every_fault() {
    common::require("qemu-system-x86_64");
    let r = common::questv(&["faults", "--count", "12", "--seed", "5"]);
    let f = r.results("faults");
    r.check(r.code == 0 && f.len() == 1, "the campaign failed");
    for (k, v) in [("injected", 12), ("detected", 12), ("recovered", 12), ("escaped", 0), ("lost_messages", 0)] {
        r.check(f[0].get_u64(k) == Some(v), "a campaign count is off");
    }
    r.check(f[0].get_u64("messages").is_some_and(|m| m > 1000), "the bystanders exchanged few messages");
}

/// Stateful recovery: the sequence service (sandbox 1) checkpoints its next number with the monitor; its
/// sandbox panics mid-stream and is restarted; the new incarnation carries on from the checkpoint and the
/// client (sandbox 0) sees no number twice and no reset. The same run without the checkpoint shows the reset
/// the client would otherwise see.
#[test]
fn recovery_stateful_service_resumes_from_its_checkpoint() {
    // The panic comes 0.4 s into the exchange: thousands of numbers handed out, many more to go (the
    // stateless service, without a hypercall per answer, is several times faster, so it is asked for more).
    let run = |flags: &str| {
        let n = if flags.is_empty() { 30_000 } else { 300_000 };
        let cmd = format!("ktest inject panic 1 after_ms=400 -- seq {n}{flags}");
        let r = vt(QEMU, 4, &["--recovery", "restart", "--apic", "passthrough", "--run", &cmd]);
        check_monitor_ended_run(&r, 4);
        r
    };
    let r = run("");
    r.check(r.code == 0 && r.done_status() == Some(0), "the stateful run did not end cleanly");
    restarted_once(&r, 1, "panic");
    let client = r.sandbox_results("seq", 0);
    r.check(client.len() == 1 && client[0].get_u64("received") == Some(30000), "the client did not get every number");
    r.check(client[0].get_u64("resets") == Some(0), "the client saw the service reset");
    r.check(client[0].get_u64("peer_restarts").is_some_and(|p| p >= 1), "the client never noticed the channel reset");
    r.check(client[0].get_u64("max_gap").is_some_and(|g| g <= 2), "numbers were skipped beyond the one in flight");
    let svc = r.sandbox_results("seq", 1);
    r.check(svc.len() == 1 && svc[0].get_u64("incarnation") == Some(1) && svc[0].get_u64("start").is_some_and(|s| s > 0), "the recovered service did not start from its checkpoint");

    let r = run(" --stateless");
    let client = r.sandbox_results("seq", 0);
    r.check(client.len() == 1 && client[0].get_u64("resets") == Some(1), "without the checkpoint the client should see exactly one reset");
}

/// Component-level recovery (the driver switch): sandbox 0's NIC driver thread writes outside the sandbox; the
/// monitor resumes the sandbox at the driver's recovery entry, the conservative driver rejoins the shared NIC
/// with the same address, the sandbox is not restarted (its program, netserve, runs on), the other guest
/// answers every ping and sandbox 0's own is back within 5 pings.
#[test]
fn recovery_driver_switch_keeps_the_sandbox_running() {
    common::require("qemu-system-x86_64");
    let r = common::questv(&["ping", "--vt", "--cpus", "4", "--guests", "2", "--count", "150", "--interval-ms", "20", "--recovery", "driver", "--inject", "driver-wild 0 after_pings=40"]);
    let lines = |name: &str| r.results(name);
    let f = lines("sandbox_fault");
    r.check(f.len() == 1 && f[0].get("action") == Some("driver_switch") && f[0].get("reason") == Some("memory_violation"), "expected one driver switch");
    let rec = lines("sandbox_recovered");
    r.check(rec.len() == 1 && rec[0].get("mode") == Some("driver") && rec[0].get_u64("switches") == Some(1), "expected one component recovery");
    let ready = lines("sandbox_ready");
    r.check(ready.len() == 1 && ready[0].get_u64("incarnation") == Some(0), "the sandbox was restarted instead of kept");
    let p = lines("ping");
    r.check(p.len() == 2, "expected both guests pinged");
    r.check(common::ping_of(&r, "10.0.0.3").is_some_and(|g| g.get_u64("lost") == Some(0)), "the other sharer lost pings");
    // A ping or two may be lost while the conservative driver comes up; the service must come back, within 5
    // pings beyond any stall the whole emulator had.
    r.check(common::one_outage_that_ended(&r, "10.0.0.2"), "the network service did not come back");
    let beyond = common::silence_beyond_bystander_us(&r, "10.0.0.2", "10.0.0.3");
    r.check(beyond.is_some_and(|us| us <= 100_000), "the driver switch took longer than 5 pings");
    r.check(p[0].get("mac") != p[1].get("mac") && p.iter().all(|g| g.get("mac").is_some_and(|m| m.starts_with("02:51:56"))), "a guest lost its virtual MAC");
}

/// Remote recovery: sandbox 0 (a NIC sharer) panics; its monitor asks sandbox 1's monitor by IPI to take its
/// network service over; sandbox 1 re-routes nothing to 0 any more, serves 10.0.0.2 with 0's MAC besides its
/// own address, and 0 is restarted without the NIC. Both addresses keep answering.
#[test]
fn recovery_remote_moves_the_service_to_another_sandbox() {
    common::require("qemu-system-x86_64");
    let r = common::questv(&["ping", "--vt", "--cpus", "4", "--guests", "2", "--count", "150", "--interval-ms", "20", "--recovery", "remote", "--inject", "panic 0 after_pings=40"]);
    let lines = |name: &str| r.results(name);
    let f = lines("sandbox_fault");
    r.check(f.len() == 1 && f[0].get("action") == Some("remote") && f[0].get_u64("target") == Some(1), "expected the service handed to sandbox 1");
    let t = lines("sandbox_takeover");
    r.check(t.len() == 1 && t[0].get("acked") == Some("1") && t[0].get_u64("ipi_round_trip_cycles").is_some_and(|c| c > 0), "the target's monitor did not acknowledge");
    let done = lines("sandbox_takeover_done");
    r.check(done.len() == 1 && done[0].get("logical_dest") == Some("0x02"), "the NIC's interrupt still reaches the faulted sandbox");
    r.check(lines("ping").len() == 2, "expected both guests pinged");
    r.check(common::ping_of(&r, "10.0.0.3").is_some_and(|g| g.get_u64("lost") == Some(0)), "the sandbox that took over lost its own pings");
    r.check(common::one_outage_that_ended(&r, "10.0.0.2"), "the taken-over address stopped answering");
    // 10 pings at most, beyond any stall the whole emulator had (the bystander's longest silence).
    let beyond = common::silence_beyond_bystander_us(&r, "10.0.0.2", "10.0.0.3");
    r.check(beyond.is_some_and(|us| us <= 200_000), "the takeover took longer than 10 pings");
    r.check(common::ping_of(&r, "10.0.0.2").is_some_and(|g| g.get("mac") == Some("02:51:56:00:00:00")), "the taken-over address changed its MAC");
    let healed = lines("ping_guest").into_iter().filter(|g| g.get("sandbox") == Some("0")).collect::<Vec<_>>();
    r.check(healed.len() == 1 && healed[0].get("nic") == Some("none"), "the healed sandbox came back with the NIC it handed over");
}

fn questv(args: &[&str]) -> Run {
    common::require("qemu-system-x86_64");
    common::questv(args)
}

/// Table 1 and Fig 6 from one command: every recovery level measured, its CSV rows and the PNGs written.
#[test]
fn recovery_table1_and_fig6_come_out_of_one_command() {
    let r = questv(&["recovery", "--quick"]);
    r.check(r.code == 0, "recovery --quick failed");
    let t1 = r.results("table1");
    for mode in ["local_driver_switch", "local_restart", "remote"] {
        r.check(t1.iter().any(|t| t.get("mode") == Some(mode)), "a recovery level is missing from Table 1");
    }
    let f6 = r.results("fig6");
    r.check(f6.len() == 3 && f6.iter().all(|f| f.get("other_guest_lost") == Some("0")), "the other sharer lost pings");
    r.check(f6.iter().all(|f| f.get("downtime_over_reboot").and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v < 0.2)), "a local recovery took a sizeable part of a reboot");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/results");
    for f in ["table1-qemu-4cpus.csv", "fig6-qemu-4cpus.csv", "fig6-qemu-4cpus.png", "table1-local_restart-qemu-4cpus.png", "table1-remote-qemu-4cpus.png"] {
        r.check(dir.join(f).metadata().is_ok_and(|m| m.len() > 100), "a Table 1 / Fig 6 file is missing");
    }
    let csv = std::fs::read_to_string(dir.join("table1-qemu-4cpus.csv")).unwrap();
    r.check(csv.lines().skip(1).all(|l| l.split(',').count() == 3 && l.rsplit(',').next().unwrap().parse::<f64>().is_ok()), "Table 1's CSV does not parse");
}

/// Fig 10: sandbox 0's driver breaks (scribbles over its channel with sandbox 1, then writes outside its
/// memory); the driver switch recovers it, the monitor restores the channel; sandboxes 2 and 3 never notice.
#[test]
fn recovery_fig10_only_the_broken_sandbox_notices() {
    let r = questv(&["fig10", "--quick"]);
    r.check(r.code == 0, "fig10 did not show what the paper claims");
    let f = r.results("fig10");
    r.check(f.len() == 3, "expected one line per receiving sandbox");
    for s in &f {
        let bystander = s.get("sandbox") != Some("0");
        r.check(!bystander || (s.get("corrupt") == Some("0") && s.get("resets") == Some("0")), "a bystander's channel was touched");
        r.check(bystander || s.get_u64("resets").is_some_and(|n| n >= 1), "sandbox 0's damaged channel was not restored");
        r.check(s.get_u64("messages_after_fault").is_some_and(|n| n > 0), "a sandbox got no messages after the fault");
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/results");
    r.check(dir.join("fig10-qemu.csv").is_file() && dir.join("fig10-qemu.png").is_file(), "Fig 10's files are missing");
}

/// A sandbox that faults 2.1 s after every launch (`ktest attack slow-crash-loop`) is stopped by the sliding
/// window (the default: 3 recoveries within 60 s, the 4th fault stops it), however late after each launch its
/// faults come; the others finish their work. A rule that only counted faults soon after a launch recovered it
/// for ever (this run then hit its timeout).
#[test]
fn recovery_stops_a_slow_crash_loop() {
    let r = vt(QEMU, 4, &["--recovery", "restart", "--run", "ktest attack slow-crash-loop -- forkwait 100"]);
    check_monitor_ended_run(&r, 4);
    r.check(r.monitor_results("recovery").first().and_then(|l| l.get("crash_loop")) == Some("3/60000"), "the monitor did not report its default rule");
    let f = r.monitor_results("sandbox_fault");
    r.check(f.len() == 4 && f.iter().all(|f| f.get_u64("sandbox") == Some(0) && f.get("reason") == Some("panic")), "expected four panics of sandbox 0");
    r.check(f[..3].iter().all(|f| f.get("action") == Some("restart")), "the first three faults were not recovered");
    r.check(f[3].get("action") == Some("stopped") && f[3].get_u64("crash_loop") == Some(4), "the slow crash loop was not ended");
    let boots = r.sandbox_results("sandbox_boot", 0);
    r.check(boots.len() == 4, "the looping sandbox should have booted four times");
    r.check(status_of(&r, 0) == Some(137), "the looping sandbox should end stopped (137)");
    bystanders_ran_forkwait(&r, 0);
}

/// `--crash-loop off` (what the fault campaign uses) recovers every fault; a bad rule is refused with a message.
#[test]
fn recovery_crash_loop_rule_is_configurable() {
    let r = inject("always-panic", 3, "forkwait 100", &["--crash-loop", "2/60000"]);
    let f = r.monitor_results("sandbox_fault");
    r.check(f.len() == 3 && f[2].get("action") == Some("stopped") && f[2].get_u64("crash_loop") == Some(3), "a 2/60000 rule should stop the third fault");
    bystanders_ran_forkwait(&r, 3);
}
