//! `faults`: the fault-injection campaign (docs/recovery.md). One VT boot with every sandbox on
//! `--recovery restart` and the watchdog on: `ktest campaign N SEED` injects N faults of random kinds (kernel
//! panic, invalid opcode, wild write outside the sandbox, write to its own kernel text, triple fault, hang, the
//! machine's reset port) into random target sandboxes (2 and up), one after another, while sandboxes 0 and 1
//! exchange sequence-numbered channel messages and every sandbox runs forkwait. The run is judged from the
//! monitor's lines: each injected fault detected (`sandbox_fault`), recovered (`sandbox_ready`), nothing
//! escaping to another sandbox, no channel message between the bystanders lost.

use crate::{boot, parse_result_line, plot, results_dir, BootOptions, Emulator, Outcome, ResultLine};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultsOptions {
    pub emulator: Emulator,
    pub cpus: u32,
    pub count: u32,
    pub seed: u64,
}

impl Default for FaultsOptions {
    fn default() -> Self {
        FaultsOptions { emulator: Emulator::Qemu, cpus: 4, count: 20, seed: 1 }
    }
}

/// What the campaign's lines say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Campaign {
    /// (index, sandbox, kind) of each fault a target announced before injecting it.
    pub injected: Vec<(u64, u64, String)>,
    /// Monitor fault reports (sandbox, reason, action).
    pub detected: Vec<(u64, String, String)>,
    /// Downtime of each recovery, fault to back in service (µs).
    pub downtimes_us: Vec<u64>,
    /// Faults the monitor reported in a sandbox no fault was injected into, stops, or bystander failures.
    pub escaped: u64,
    pub lost_messages: u64,
    pub messages: u64,
    pub bystander_vmexits: Vec<u64>,
    pub ended_cleanly: bool,
}

/// Judge a campaign run from its output lines.
pub fn judge(lines: &[String], outcome: &Outcome, cpus: u32) -> Campaign {
    let results: Vec<ResultLine> = lines.iter().filter_map(|l| parse_result_line(l)).collect();
    let mut c = Campaign { ended_cleanly: *outcome == Outcome::Done(0), ..Campaign::default() };
    for r in &results {
        match r.name.as_str() {
            "campaign_fault" if !r.from_monitor() => {
                c.injected.push((r.get_u64("index").unwrap_or(0), r.get_u64("sandbox").unwrap_or(0), r.get("kind").unwrap_or("?").to_string()))
            }
            "sandbox_fault" if r.from_monitor() => {
                let s = r.get_u64("sandbox").unwrap_or(u64::MAX);
                let action = r.get("action").unwrap_or("?").to_string();
                // A target is only ever restarted (a stop means recovery failed); whose fault it was is
                // checked against the injections below.
                if action != "restart" {
                    c.escaped += 1;
                }
                c.detected.push((s, r.get("reason").unwrap_or("?").to_string(), action));
            }
            "sandbox_ready" if r.from_monitor() => c.downtimes_us.push(r.get_u64("downtime_us").unwrap_or(0)),
            "campaign_traffic" if !r.from_monitor() => {
                c.bystander_vmexits.push(r.get_u64("vmexits").unwrap_or(0));
                if r.get("role") == Some("receiver") {
                    c.messages = r.get_u64("received").unwrap_or(0);
                    c.lost_messages = ["lost", "dup", "corrupt"].iter().map(|k| r.get_u64(k).unwrap_or(u64::MAX / 4)).sum();
                }
            }
            _ => {}
        }
    }
    // Each detection must be the injected fault, in the sandbox it was injected into and in order; a fault in
    // any other sandbox, or one more than was injected, escaped.
    for (i, d) in c.detected.iter().enumerate() {
        if c.injected.get(i).is_none_or(|inj| inj.1 != d.0) {
            c.escaped += 1;
        }
    }
    // Both bystanders must have reported and exchanged messages, and every sandbox ended with status 0.
    let done_ok = results.iter().filter(|r| r.name == "sandbox_done" && r.from_monitor() && r.get("status") == Some("0")).count();
    if c.bystander_vmexits.len() != 2 || done_ok != cpus as usize || c.messages == 0 {
        c.escaped += 1;
    }
    c
}

fn median(v: &[u64]) -> u64 {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.get(s.len() / 2).copied().unwrap_or(0)
}

/// Run the campaign; returns the summary and whether it passed.
pub fn faults(o: &FaultsOptions) -> Result<(String, bool), String> {
    if o.cpus < 3 {
        return Err("the campaign needs at least 3 sandboxes (--cpus 3): two bystanders and a target".into());
    }
    // Budget: a fault every few seconds at worst (a target waits 2.2 s after each of its boots).
    let per_fault = if o.emulator == Emulator::Bochs { 30 } else { 6 };
    let opts = BootOptions {
        vt: true,
        emulator: o.emulator,
        cpus: o.cpus,
        recovery: Some("restart".into()),
        watchdog_ms: Some(300),
        echo: false,
        timeout: Some(180 + u64::from(o.count) * per_fault),
        run: Some(format!("ktest campaign {} {} -- forkwait 100000000", o.count, o.seed)),
        ..BootOptions::default()
    };
    eprintln!("questv: faults: {} faults, seed {}, {} sandboxes ({})", o.count, o.seed, o.cpus, o.emulator.name());
    let report = boot(&opts)?;
    let c = judge(&report.lines, &report.outcome, o.cpus);
    let dir = results_dir()?;
    let stem = format!("faults-{}-{}cpus-n{}-seed{}", o.emulator.name(), o.cpus, o.count, o.seed);
    let mut csv = String::from("index,sandbox,kind,reason,action,downtime_us\n");
    for (i, (idx, s, kind)) in c.injected.iter().enumerate() {
        let (reason, action) = c.detected.get(i).map_or(("", ""), |d| (d.1.as_str(), d.2.as_str()));
        let down = c.downtimes_us.get(i).map_or(String::new(), |d| d.to_string());
        csv.push_str(&format!("{idx},{s},{kind},{reason},{action},{down}\n"));
    }
    std::fs::write(dir.join(format!("{stem}.csv")), &csv).map_err(|e| e.to_string())?;
    let points: Vec<(f64, f64)> = c.downtimes_us.iter().enumerate().map(|(i, &d)| (i as f64, d as f64 / 1000.0)).collect();
    if points.len() >= 2 {
        plot::line_chart(
            &dir.join(format!("{stem}.png")),
            &format!("Fault campaign: downtime per recovered fault ({} faults, seed {}, {})", o.count, o.seed, o.emulator.name()),
            "fault",
            "downtime (ms)",
            false,
            false,
            &[plot::Series { name: "fault to back in service".into(), points }],
        )?;
    }
    let detected_injected = c.detected.iter().filter(|d| d.0 >= 2).count().min(c.injected.len());
    let recovered = c.downtimes_us.len().min(c.injected.len());
    let ok = c.ended_cleanly && c.injected.len() == o.count as usize && detected_injected == c.injected.len() && recovered == c.injected.len() && c.escaped == 0 && c.lost_messages == 0;
    let mut kinds: Vec<String> = c.injected.iter().map(|i| i.2.clone()).collect();
    kinds.sort();
    kinds.dedup();
    let text = format!(
        "RESULT faults injected={} detected={} recovered={} escaped={} lost_messages={} messages={} downtime_ms_median={:.1} downtime_ms_max={:.1} kinds={} bystander_vmexits={} seed={} emulator={} csv={}\n",
        c.injected.len(), detected_injected, recovered, c.escaped, c.lost_messages, c.messages,
        median(&c.downtimes_us) as f64 / 1000.0, c.downtimes_us.iter().max().copied().unwrap_or(0) as f64 / 1000.0,
        kinds.join(","), c.bystander_vmexits.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","), o.seed, o.emulator.name(),
        dir.join(format!("{stem}.csv")).display()
    );
    if !ok {
        let tail: Vec<&String> = report.lines.iter().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
        eprintln!("questv: faults: the campaign did not pass ({:?}); last lines:", report.outcome);
        for l in tail {
            eprintln!("  {l}");
        }
    }
    Ok((text, ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn faults_campaign_judged_from_the_monitor_lines() {
        let good = lines(&[
            "[s2] RESULT campaign_fault index=0 sandbox=2 kind=wild",
            "RESULT sandbox_fault sandbox=2 reason=memory_violation action=restart",
            "RESULT sandbox_ready sandbox=2 incarnation=1 downtime_us=300000",
            "[s0] RESULT campaign_traffic sandbox=0 role=sender sent=10 vmexits=0",
            "[s1] RESULT campaign_traffic sandbox=1 role=receiver received=10 lost=0 dup=0 corrupt=0 vmexits=0",
            "RESULT sandbox_done sandbox=0 status=0",
            "RESULT sandbox_done sandbox=1 status=0",
            "RESULT sandbox_done sandbox=2 status=0",
        ]);
        let c = judge(&good, &Outcome::Done(0), 3);
        assert_eq!((c.injected.len(), c.detected.len(), c.downtimes_us.len(), c.escaped, c.lost_messages), (1, 1, 1, 0, 0));
        // A bystander fault, a stop, a lost message or a missing report each count against the run.
        let mut bad = good.clone();
        bad.push("RESULT sandbox_fault sandbox=0 reason=panic action=restart".into());
        assert_eq!(judge(&bad, &Outcome::Done(0), 3).escaped, 1);
        // The fault showing up in another target than the one injected into is an escape too.
        let mut moved = good.clone();
        moved[1] = "RESULT sandbox_fault sandbox=3 reason=memory_violation action=restart".into();
        assert_eq!(judge(&moved, &Outcome::Done(0), 4).escaped, 2, "wrong sandbox, and one sandbox_done short");
        let mut silent = good.clone();
        silent[4] = "[s1] RESULT campaign_traffic sandbox=1 role=receiver received=0 lost=0 dup=0 corrupt=0 vmexits=0".into();
        assert_eq!(judge(&silent, &Outcome::Done(0), 3).escaped, 1, "bystanders that exchanged nothing prove nothing");
        let mut stopped = good.clone();
        stopped[1] = "RESULT sandbox_fault sandbox=2 reason=panic action=stopped crash_loop=3".into();
        assert_eq!(judge(&stopped, &Outcome::Done(0), 3).escaped, 1);
        let mut lost = good.clone();
        lost[4] = "[s1] RESULT campaign_traffic sandbox=1 role=receiver received=9 lost=1 dup=0 corrupt=0 vmexits=0".into();
        assert_eq!(judge(&lost, &Outcome::Done(0), 3).lost_messages, 1);
        assert_eq!(judge(&good[..6], &Outcome::Done(0), 3).escaped, 1, "a sandbox that never finished");
        // A sandbox cannot forge the monitor's lines: a relayed `sandbox_fault` is ignored.
        let mut forged = good.clone();
        forged.push("[s2] RESULT sandbox_fault sandbox=0 reason=panic action=restart".into());
        assert_eq!(judge(&forged, &Outcome::Done(0), 3).escaped, 0);
    }
}
