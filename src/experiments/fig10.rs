//! `fig10` (paper Fig 10): message reception and ICMP reply rates per sandbox across a driver failure in sandbox
//! 0 that damages its channel with sandbox 1 and tries to wipe the other sandboxes.
#![forbid(unsafe_code)]

use crate::experiments::ping::{ping_run, PingOptions};
use crate::{parse_result_line, plot, results_dir, BootOptions, Emulator, ResultLine};

/// Fig 10's set-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fig10Options {
    pub emulator: Emulator,
    /// Pings to sandbox 0 (at `interval_ms`); the workload runs a little longer.
    pub count: u32,
    pub interval_ms: u64,
    /// Sandbox 0's driver breaks after this many pings.
    pub break_after: u32,
}

impl Default for Fig10Options {
    fn default() -> Self {
        // The paper's 500 ms pings for 20 s, the driver breaking a third of the way in.
        Fig10Options { emulator: Emulator::Qemu, count: 40, interval_ms: 500, break_after: 12 }
    }
}

/// Rates per one-second bin of time since the fault (s), for (label, times in seconds relative to the fault).
fn per_second(times: &[(f64, u64)]) -> Vec<(f64, f64)> {
    let mut bins: std::collections::BTreeMap<i64, u64> = std::collections::BTreeMap::new();
    for &(t, n) in times {
        *bins.entry(t.floor() as i64).or_default() += n;
    }
    bins.into_iter().map(|(k, v)| (k as f64, v as f64)).collect()
}

/// Fig 10: message reception and ICMP reply rates per sandbox over time, across a driver failure in sandbox 0
/// that damages its channel with sandbox 1 and tries to wipe other sandboxes' memory (recovered by the driver
/// switch; the damaged channel is wiped and restored by the monitor). Returns the summary and whether the
/// figure shows what the paper claims (only sandbox 0 dips, and it recovers).
pub fn fig10(o: &Fig10Options) -> Result<(String, bool), String> {
    let dir = results_dir()?;
    let secs = o.count as u64 * o.interval_ms / 1000 + 8;
    let p = PingOptions {
        boot: BootOptions { vt: true, emulator: o.emulator, cpus: 4, echo: false, tcg_single: Some(true), recovery: Some("driver".into()), ..BootOptions::default() },
        guests: 1,
        sharers: 1,
        count: o.count,
        interval_ms: o.interval_ms,
        inject: Some(format!("driver-wipe 0 after_pings={}", o.break_after)),
        program: Some(format!("fig10 {secs}")),
        ..PingOptions::default()
    };
    eprintln!("questv: fig10: {} pings at {} ms to sandbox 0, its driver breaks after {}", o.count, o.interval_ms, o.break_after);
    let run = ping_run(&p)?;
    let results: Vec<ResultLine> = run.boot.lines.iter().filter_map(|l| parse_result_line(l)).collect();
    let fail = |what: &str| format!("fig10: {what}:\n{}", run.result_lines().join("\n"));
    let tsc_hz = results.iter().find(|r| r.name == "timer").and_then(|r| r.get_u64("tsc_hz")).ok_or("no tsc_hz")? as f64;
    let fault_tsc = results.iter().find(|r| r.name == "inject" && r.sandbox == Some(0) && r.get("tsc").is_some()).and_then(|r| r.get_u64("tsc")).ok_or_else(|| fail("the driver never broke"))?;
    let mut csv = String::from("series,second_since_fault,count\n");
    let mut series = Vec::new();
    let mut text = String::new();
    let mut ok = true;
    for s in [0u32, 2, 3] {
        let rx: Vec<&ResultLine> = results.iter().filter(|r| r.name == "fig10_rx" && r.sandbox == Some(s)).collect();
        if rx.is_empty() {
            return Err(fail(&format!("no reception report from sandbox {s}")));
        }
        let times: Vec<(f64, u64)> = rx.iter().map(|r| ((r.get_u64("end_cycles").unwrap_or(0) as f64 - fault_tsc as f64) / tsc_hz, r.get_u64("got").unwrap_or(0))).collect();
        let [got, corrupt, resets] = ["got", "corrupt", "resets"].map(|k| rx.iter().map(|r| r.get_u64(k).unwrap_or(0)).sum::<u64>());
        let after: u64 = times.iter().filter(|(t, _)| *t > 2.0).map(|(_, n)| n).sum();
        let pts = per_second(&times);
        for (t, v) in &pts {
            csv.push_str(&format!("messages_sandbox{s},{t},{v}\n"));
        }
        series.push(plot::Series { name: format!("sandbox {s}: messages from 1 per s"), points: pts });
        text.push_str(&format!("RESULT fig10 sandbox={s} messages={got} corrupt={corrupt} resets={resets} messages_after_fault={after}\n"));
        // Bystanders: untouched. Sandbox 0: its channel was restored and carries messages again.
        ok &= if s == 0 { resets >= 1 && after > 0 } else { corrupt == 0 && resets == 0 && after > 0 };
    }
    let g = run.peer.guests.first().ok_or_else(|| fail("no guest pinged"))?;
    // The fault comes after reply `break_after`: put the peer's timeline on the same axis.
    let fault_peer_us = g.samples.iter().filter(|s| s.rtt_us.is_some()).nth(o.break_after.saturating_sub(1) as usize).map(|s| s.sent_us + s.rtt_us.unwrap_or(0)).unwrap_or(0);
    let replies: Vec<(f64, u64)> = g.samples.iter().filter_map(|s| Some((((s.sent_us + s.rtt_us?) as f64 - fault_peer_us as f64) / 1e6, 1))).collect();
    let pts = per_second(&replies);
    for (t, v) in &pts {
        csv.push_str(&format!("icmp_replies_sandbox0,{t},{v}\n"));
    }
    series.push(plot::Series { name: "sandbox 0: ICMP replies per s".into(), points: pts });
    let replies_after = replies.iter().filter(|(t, _)| *t > 2.0).count();
    ok &= replies_after > 0;
    let stem = format!("fig10-{}", o.emulator.name());
    std::fs::write(dir.join(format!("{stem}.csv")), &csv).map_err(|e| e.to_string())?;
    plot::line_chart(&dir.join(format!("{stem}.png")), &format!("Fig 10: reception rates around sandbox 0's driver failure at t = 0 ({})", o.emulator.name()), "seconds since the fault", "per second", false, false, &series)?;
    for l in run.result_lines().iter().filter(|l| l.contains("sandbox_fault") || l.contains("sandbox_recovered") || l.contains("RESULT ping ")) {
        text.push_str(l);
        text.push('\n');
    }
    text.push_str(&format!("RESULT fig10_summary icmp_sent={} icmp_received={} replies_after_fault={} only_sandbox0_dipped={} csv={}\n", g.sent, g.received, replies_after, u8::from(ok), dir.join(format!("{stem}.csv")).display()));
    Ok((text, ok))
}
