//! `recovery`: the paper's recovery measurements (§4.5) from runs of `ping` with a fault injected.
//! - Table 1: the cost of each recovery phase, from the monitor's `RESULT sandbox_recovered` /
//!   `sandbox_ready` lines and the peer's reply timeline.
//! - Fig 6: the host peer pings the sandbox that owns 10.0.0.2 at a fixed interval (the paper's 500 ms, scaled:
//!   `--interval-ms`, 50 by default); after its 20th reply it faults and is recovered three ways: the driver
//!   switch (its NIC driver thread panics; `--recovery driver`), the local sandbox restart (its kernel panics;
//!   `restart`) and remote recovery (the other sharer takes the address over; `remote`); per-sequence reply
//!   timeline and downtime, beside a full reboot: the
//!   emulator started afresh and booted to its first reply (a lower bound for a real reboot: no shutdown, no
//!   firmware POST). The other guest (10.0.0.3, another sandbox on the same NIC) is pinged throughout.
//!
//! CSV + PNG under target/results/; the summary gives ratios (emulator times are not absolute).
#![forbid(unsafe_code)]

use crate::peer::{self, GuestReport};
use crate::experiments::ping::{ping_run, PingOptions, PingRun};
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

/// The recovery levels measured: the driver switch (component level) and the sandbox restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Driver,
    Restart,
    Remote,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Driver => "local_driver_switch",
            Level::Restart => "local_restart",
            Level::Remote => "remote",
        }
    }
}

fn ping_opts(o: &RecoveryFigOptions, level: Option<Level>) -> PingOptions {
    let boot = BootOptions {
        vt: true,
        emulator: o.emulator,
        cpus: o.cpus,
        echo: false,
        tcg_single: Some(true),
        recovery: level.map(|l| match l {
            Level::Driver => "driver".to_string(),
            Level::Restart => "restart".to_string(),
            Level::Remote => "remote".to_string(),
        }),
        ..BootOptions::default()
    };
    PingOptions {
        boot,
        guests: 2,
        sharers: 2,
        count: o.count,
        interval_ms: o.interval_ms,
        // The panic comes once the guest has taken its Nth echo request (while answering it, or just after):
        // in the driver's own thread for the driver switch, in the kernel for the restart.
        inject: level.map(|l| format!("{}panic 0 after_pings={}", if l == Level::Driver { "driver-" } else { "" }, o.after_replies)),
        ..PingOptions::default()
    }
}

/// One local recovery run: its phases (name, µs) and the faulted and the other guest's reports.
struct LocalRun {
    level: Level,
    run: PingRun,
    phases: Vec<(&'static str, f64)>,
    outage: peer::Outage,
    /// Fault to back in service, as the monitor measured it (µs).
    service_down_us: f64,
}

fn local_run(o: &RecoveryFigOptions, level: Level) -> Result<LocalRun, String> {
    eprintln!("questv: recovery: {} ({} pings at {} ms, panic after reply {})", level.name(), o.count, o.interval_ms, o.after_replies);
    let run = ping_run(&ping_opts(o, Some(level)))?;
    let fail = |what: &str, run: &PingRun| format!("{} {what}:\n{}", level.name(), run.result_lines().join("\n"));
    let rec = monitor_lines(&run, "sandbox_recovered");
    let ready = monitor_lines(&run, "sandbox_ready");
    let (Some(rec), Some(ready)) = (rec.first().cloned(), ready.first().cloned()) else { return Err(fail("the injected fault was not recovered", &run)) };
    // Remote: the faulted sandbox is healed by a restart, the service moved (sandbox_takeover).
    let expected = if level == Level::Driver { "driver" } else { "restart" };
    if rec.get("mode") != Some(expected) {
        return Err(fail("recovered at the wrong level", &run));
    }
    let takeover = monitor_lines(&run, "sandbox_takeover").first().cloned();
    let takeover_done = monitor_lines(&run, "sandbox_takeover_done").first().cloned();
    if level == Level::Remote && (takeover.is_none() || takeover_done.is_none()) {
        return Err(fail("no takeover by another sandbox", &run));
    }
    let tsc_hz = run.boot.lines.iter().filter_map(|l| parse_result_line(l)).find(|r| r.name == "timer").and_then(|r| r.get_u64("tsc_hz")).ok_or("no tsc_hz in the run")?;
    let us = |cycles: u64| cycles as f64 * 1e6 / tsc_hz as f64;
    let faulted = run.peer.guests.iter().find(|g| g.ip.octets()[3] == 2).ok_or("no guest 10.0.0.2")?;
    // What the peer saw: the longest silence between replies, less the ping interval (late replies count where
    // they arrived), and the requests never answered.
    let gap = peer::max_reply_gap_us(&faulted.samples).unwrap_or(0).saturating_sub(o.interval_ms * 1000);
    let lost = peer::longest_outage(&faulted.samples);
    let outage = peer::Outage {
        first_lost_seq: lost.map_or(o.after_replies as u16, |l| l.first_lost_seq),
        lost: lost.map_or(0, |l| l.lost),
        downtime_us: gap.max(lost.map_or(0, |l| l.downtime_us.saturating_sub(o.interval_ms * 1000))),
    };
    let monitor_total = rec.get_u64("total_cycles").unwrap_or(0);
    let ready_cycles = ready.get_u64("downtime_cycles").unwrap_or(0);
    let mut phases: Vec<(&'static str, f64)> = Vec::new();
    if let Some(c) = rec.get_u64("exit_to_monitor_cycles") {
        phases.push(("exit to monitor", us(c)));
    }
    if level == Level::Remote {
        let t = takeover.as_ref().and_then(|t| t.get_u64("ipi_round_trip_cycles")).unwrap_or(0);
        let r = takeover_done.as_ref().and_then(|t| t.get_u64("reroute_cycles")).unwrap_or(0);
        phases.push(("IPI round trip", us(t)));
        phases.push(("re-route + notice", us(r)));
        phases.push(("service back", (outage.downtime_us as f64).max(0.0)));
        return Ok(LocalRun { level, run, phases, outage, service_down_us: outage.downtime_us as f64 });
    }
    let keys: &[(&str, &'static str)] = match level {
        Level::Remote => &[],
        Level::Driver => &[("decide_cycles", "report + decide"), ("channels_cycles", "channel reset"), ("switch_cycles", "driver switch")],
        Level::Restart => &[
            ("quiesce_cycles", "APIC quiesce"),
            ("scrub_cycles", "memory scrub"),
            ("reload_cycles", "image reload"),
            ("stage2_cycles", "stage-2 rebuild"),
            ("channels_cycles", "channel reset"),
            ("boot_info_cycles", "boot information"),
        ],
    };
    for (key, name) in keys {
        phases.push((name, us(rec.get_u64(key).unwrap_or(0))));
    }
    let back = match level {
        Level::Driver => "driver re-init",
        Level::Restart | Level::Remote => "kernel re-boot",
    };
    phases.push((back, us(ready_cycles.saturating_sub(monitor_total))));
    // From back in service to the first reply the peer saw (the next ping's arrival, at most an interval).
    let network_us = (outage.downtime_us as f64 - us(ready_cycles)).max(0.0);
    phases.push(("network re-init", network_us));
    Ok(LocalRun { level, run, phases, outage, service_down_us: us(ready_cycles) })
}

/// A phase's label as one RESULT word: "driver switch (x)" → "driver_switch_x".
fn slug(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

/// Reply arrival in µs since the emulator started, for the first answered request.
fn first_reply_since_boot_us(run: &PingRun, g: &GuestReport) -> Option<u64> {
    let s = g.samples.iter().find(|s| s.rtt_us.is_some())?;
    Some(run.peer.ping_start_us + s.sent_us + s.rtt_us?)
}

/// Table 1 and Fig 6. Returns the summary text and the results directory.
pub fn recoveryfig(o: &RecoveryFigOptions) -> Result<(String, PathBuf), String> {
    let dir = results_dir()?;
    let locals = [local_run(o, Level::Driver)?, local_run(o, Level::Restart)?, local_run(o, Level::Remote)?];
    eprintln!("questv: recovery: reboot (boot to first reply)");
    let reboot = ping_run(&ping_opts(o, None))?;
    let reboot_us = reboot
        .peer
        .guests
        .iter()
        .filter_map(|g| first_reply_since_boot_us(&reboot, g))
        .max()
        .ok_or_else(|| format!("the rebooted guest never replied:\n{}", reboot.result_lines().join("\n")))?;

    let stem = format!("{}-{}cpus", o.emulator.name(), o.cpus);
    // Table 1.
    let mut csv = String::from("mode,phase,us\n");
    for l in &locals {
        for (name, v) in &l.phases {
            csv.push_str(&format!("{},{name},{v:.1}\n", l.level.name()));
        }
    }
    std::fs::write(dir.join(format!("table1-{stem}.csv")), &csv).map_err(|e| e.to_string())?;
    for l in &locals {
        let groups: Vec<String> = l.phases.iter().map(|(n, _)| n.to_string()).collect();
        let bars = [plot::Series { name: l.level.name().into(), points: l.phases.iter().enumerate().map(|(i, (_, v))| (i as f64, *v / 1000.0)).collect() }];
        plot::bar_chart(&dir.join(format!("table1-{}-{stem}.png", l.level.name())), &format!("Table 1: recovery phases, {} ({})", l.level.name(), o.emulator.name()), "ms", &groups, &bars)?;
    }

    // Fig 6: reply timelines of the faulted guest (and the other sharer in the restart run).
    let mut fig = String::from("run,guest,seq,sent_ms,replied,rtt_us\n");
    let mut lines = Vec::new();
    for (k, l) in locals.iter().enumerate() {
        for g in &l.run.peer.guests {
            for s in &g.samples {
                fig.push_str(&format!("{},{},{},{:.1},{},{}\n", l.level.name(), g.ip, s.seq, s.sent_us as f64 / 1000.0, u8::from(s.rtt_us.is_some()), s.rtt_us.map_or(String::new(), |r| r.to_string())));
            }
            let faulted = g.ip.octets()[3] == 2;
            let y = (2 * k + usize::from(!faulted) + 1) as f64;
            lines.push(plot::Series {
                name: format!("{} {}{}", l.level.name(), g.ip, if faulted { format!(" (faulted: down {:.0} ms)", l.outage.downtime_us as f64 / 1000.0) } else { " (other sharer)".into() }),
                points: g.samples.iter().filter(|s| s.rtt_us.is_some()).map(|s| (f64::from(s.seq), y)).collect(),
            });
        }
    }
    std::fs::write(dir.join(format!("fig6-{stem}.csv")), &fig).map_err(|e| e.to_string())?;
    plot::line_chart(
        &dir.join(format!("fig6-{stem}.png")),
        &format!("Fig 6: echo replies per sequence number, {} ms interval; reboot to first reply {:.0} ms ({})", o.interval_ms, reboot_us as f64 / 1000.0, o.emulator.name()),
        "sequence number",
        "replied (one row per guest and run)",
        false,
        false,
        &lines,
    )?;

    let mut text = String::new();
    for l in &locals {
        for line in l.run.result_lines() {
            text.push_str(&line);
            text.push('\n');
        }
        for (name, v) in &l.phases {
            text.push_str(&format!("RESULT table1 mode={} phase={} us={v:.1}\n", l.level.name(), slug(name)));
        }
    }
    for l in &locals {
        let other_lost = l.run.peer.guests.iter().filter(|g| g.ip.octets()[3] != 2).map(|g| g.lost).sum::<u32>();
        text.push_str(&format!(
            "RESULT fig6 emulator={} mode={} interval_ms={} ping_downtime_ms={:.1} lost={} service_downtime_ms={:.1} reboot_to_first_reply_ms={:.1} downtime_over_reboot={:.4} other_guest_lost={}\n",
            o.emulator.name(), l.level.name(), o.interval_ms, l.outage.downtime_us as f64 / 1000.0, l.outage.lost, l.service_down_us / 1000.0, reboot_us as f64 / 1000.0,
            (l.outage.downtime_us as f64).max(l.service_down_us) / reboot_us.max(1) as f64, other_lost
        ));
    }
    text.push_str(&format!("RESULT recovery_figures table1={} fig6={}\n", dir.join(format!("table1-{stem}.csv")).display(), dir.join(format!("fig6-{stem}.csv")).display()));
    Ok((text, dir))
}

#[cfg(test)]
mod tests {
    #[test]
    fn recovery_phase_labels_become_result_words() {
        assert_eq!(super::slug("driver re-init"), "driver_re_init");
        assert_eq!(super::slug("report + decide (x)"), "report_decide_x");
    }
}
