//! `recovery`: the paper's recovery measurements (§4.5) from runs of `ping` with a fault injected.
//! - Table 1: the cost of each recovery phase, from the monitor's `RESULT sandbox_recovered` /
//!   `sandbox_ready` lines and the peer's reply timeline.
//! - Fig 6: the host peer pings the sandbox that owns 10.0.0.2 at a fixed interval (the paper's 500 ms, scaled:
//!   `--interval-ms`, 50 by default); its NIC-sharing kernel panics after its 20th reply and is recovered
//!   locally (`--recovery restart`); per-sequence reply timeline and downtime, beside a full reboot: the
//!   emulator started afresh and booted to its first reply (a lower bound for a real reboot: no shutdown, no
//!   firmware POST). The other guest (10.0.0.3, another sandbox on the same NIC) is pinged throughout.
//! CSV + PNG under target/results/; the summary gives ratios (emulator times are not absolute).

use crate::peer::{self, GuestReport};
use crate::ping::{ping_run, PingOptions, PingRun};
use crate::{parse_result_line, plot, results_dir, BootOptions, Emulator, ResultLine};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryFigOptions {
    pub emulator: Emulator,
    pub cpus: u32,
    pub count: u32,
    pub interval_ms: u64,
    /// The fault comes after this many echo replies from the faulting guest.
    pub after_replies: u32,
}

impl Default for RecoveryFigOptions {
    fn default() -> Self {
        RecoveryFigOptions { emulator: Emulator::Qemu, cpus: 4, count: 120, interval_ms: 50, after_replies: 20 }
    }
}

fn monitor_lines(run: &PingRun, name: &str) -> Vec<ResultLine> {
    run.boot.lines.iter().filter_map(|l| parse_result_line(l)).filter(|r| r.name == name && r.from_monitor()).collect()
}

fn ping_opts(o: &RecoveryFigOptions, inject: bool) -> PingOptions {
    let boot = BootOptions {
        vt: true,
        emulator: o.emulator,
        cpus: o.cpus,
        echo: false,
        tcg_single: Some(true),
        recovery: inject.then(|| "restart".to_string()),
        ..BootOptions::default()
    };
    PingOptions {
        boot,
        guests: 2,
        sharers: 2,
        count: o.count,
        interval_ms: o.interval_ms,
        // The panic comes once the guest has taken its Nth echo request (while answering it, or just after).
        inject: inject.then(|| format!("panic 0 after_pings={}", o.after_replies)),
        ..PingOptions::default()
    }
}

/// Reply arrival in µs since the emulator started, for the first answered request.
fn first_reply_since_boot_us(run: &PingRun, g: &GuestReport) -> Option<u64> {
    let s = g.samples.iter().find(|s| s.rtt_us.is_some())?;
    Some(run.peer.ping_start_us + s.sent_us + s.rtt_us?)
}

/// Table 1 and Fig 6. Returns the summary text and the results directory.
pub fn recoveryfig(o: &RecoveryFigOptions) -> Result<(String, PathBuf), String> {
    let dir = results_dir()?;
    eprintln!("questv: recovery: local restart ({} pings at {} ms, panic after reply {})", o.count, o.interval_ms, o.after_replies);
    let local = ping_run(&ping_opts(o, true))?;
    eprintln!("questv: recovery: reboot (boot to first reply)");
    let reboot = ping_run(&ping_opts(o, false))?;
    let fail = |what: &str, run: &PingRun| format!("{what}:\n{}", run.result_lines().join("\n"));
    let rec = monitor_lines(&local, "sandbox_recovered");
    let ready = monitor_lines(&local, "sandbox_ready");
    let (Some(rec), Some(ready)) = (rec.first(), ready.first()) else { return Err(fail("the injected fault was not recovered", &local)) };
    let tsc_hz = local.boot.lines.iter().filter_map(|l| parse_result_line(l)).find(|r| r.name == "timer").and_then(|r| r.get_u64("tsc_hz")).ok_or("no tsc_hz in the run")?;
    let us = |cycles: u64| cycles as f64 * 1e6 / tsc_hz as f64;
    let faulted = local.peer.guests.iter().find(|g| g.ip.octets()[3] == 2).ok_or("no guest 10.0.0.2")?;
    let other = local.peer.guests.iter().find(|g| g.ip.octets()[3] == 3).ok_or("no guest 10.0.0.3")?;
    let outage = peer::longest_outage(&faulted.samples).ok_or_else(|| fail("no outage in the faulted guest's replies (the fault came too late, or it never came back)", &local))?;
    let reboot_us = reboot.peer.guests.iter().filter_map(|g| first_reply_since_boot_us(&reboot, g)).max().ok_or_else(|| fail("the rebooted guest never replied", &reboot))?;

    // Table 1: the phases of a local (sandbox-level) recovery.
    let monitor_total = rec.get_u64("total_cycles").unwrap_or(0);
    let ready_cycles = ready.get_u64("downtime_cycles").unwrap_or(0);
    let mut phases: Vec<(&str, f64)> = Vec::new();
    if let Some(c) = rec.get_u64("exit_to_monitor_cycles") {
        phases.push(("exit to monitor", us(c)));
    }
    for (key, name) in [
        ("quiesce_cycles", "APIC quiesce"),
        ("scrub_cycles", "memory scrub"),
        ("reload_cycles", "pristine image reload"),
        ("stage2_cycles", "second stage rebuild"),
        ("channels_cycles", "channel reset"),
        ("boot_info_cycles", "boot information"),
    ] {
        phases.push((name, us(rec.get_u64(key).unwrap_or(0))));
    }
    phases.push(("kernel re-boot (relaunch to in service)", us(ready_cycles.saturating_sub(monitor_total))));
    // From back in service to the first reply the peer saw (smoltcp resolving the peer again, the next ping).
    let network_us = (outage.downtime_us as f64 - us(ready_cycles)).max(0.0);
    phases.push(("network re-initialisation (to first reply)", network_us));
    let stem = format!("{}-{}cpus", o.emulator.name(), o.cpus);
    let mut csv = String::from("mode,phase,us\n");
    for (name, v) in &phases {
        csv.push_str(&format!("local_restart,{name},{v:.1}\n"));
    }
    std::fs::write(dir.join(format!("table1-{stem}.csv")), &csv).map_err(|e| e.to_string())?;
    let groups: Vec<String> = phases.iter().map(|(n, _)| n.to_string()).collect();
    let bars = [plot::Series { name: "local restart".into(), points: phases.iter().enumerate().map(|(i, (_, v))| (i as f64, *v / 1000.0)).collect() }];
    plot::bar_chart(&dir.join(format!("table1-{stem}.png")), &format!("Table 1: recovery phases, local restart ({})", o.emulator.name()), "ms", &groups, &bars)?;

    // Fig 6: reply timelines.
    let mut fig = String::from("run,guest,seq,sent_ms,replied,rtt_us\n");
    let mut lines = Vec::new();
    for (label, g, offset) in [("local", faulted, 0.0), ("local", other, 0.0)] {
        for s in &g.samples {
            fig.push_str(&format!("{label},{},{},{:.1},{},{}\n", g.ip, s.seq, s.sent_us as f64 / 1000.0 + offset, u8::from(s.rtt_us.is_some()), s.rtt_us.map_or(String::new(), |r| r.to_string())));
        }
    }
    let series = |name: String, g: &GuestReport, y: f64| plot::Series {
        name,
        points: g.samples.iter().filter(|s| s.rtt_us.is_some()).map(|s| (f64::from(s.seq), y)).collect(),
    };
    lines.push(series(format!("{} (faulted, local restart: down {:.0} ms)", faulted.ip, outage.downtime_us as f64 / 1000.0), faulted, 1.0));
    lines.push(series(format!("{} (other sandbox on the NIC)", other.ip), other, 2.0));
    std::fs::write(dir.join(format!("fig6-{stem}.csv")), &fig).map_err(|e| e.to_string())?;
    plot::line_chart(
        &dir.join(format!("fig6-{stem}.png")),
        &format!("Fig 6: echo replies per sequence number, {} ms interval; reboot to first reply: {:.0} ms ({})", o.interval_ms, reboot_us as f64 / 1000.0, o.emulator.name()),
        "sequence number",
        "replied (per guest)",
        false,
        false,
        &lines,
    )?;

    let mut text = String::new();
    for l in local.result_lines() {
        text.push_str(&l);
        text.push('\n');
    }
    for (name, v) in &phases {
        text.push_str(&format!("RESULT table1 mode=local_restart phase=\"{name}\" us={v:.1}\n"));
    }
    let others_lost = other.lost;
    text.push_str(&format!(
        "RESULT fig6 emulator={} interval_ms={} local_downtime_ms={:.1} lost={} first_lost_seq={} reboot_to_first_reply_ms={:.1} local_over_reboot={:.4} other_guest_lost={} csv={}\n",
        o.emulator.name(), o.interval_ms, outage.downtime_us as f64 / 1000.0, outage.lost, outage.first_lost_seq, reboot_us as f64 / 1000.0,
        outage.downtime_us as f64 / reboot_us.max(1) as f64, others_lost, dir.join(format!("fig6-{stem}.csv")).display()
    ));
    Ok((text, dir))
}
