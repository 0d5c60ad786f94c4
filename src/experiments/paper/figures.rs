//! The paper's experiments, one function per table or figure: each runs the runner's own experiment with the
//! [`Plan`]'s sizes and returns its [`Figure`]s, with ratios against the paper's claims and a paragraph from the
//! data.
#![forbid(unsafe_code)]

use super::report::{parse_csv, ratio, Figure};
use super::{PaperOptions, Plan};
use crate::experiments::fig10 as fig10_run;
use crate::experiments::{netfig, recoveryfig};
use crate::{parse_result_line, results_dir, BootOptions, Emulator, ResultLine};
use std::fmt::Write as _;

fn results_of(text: &str, name: &str) -> Vec<ResultLine> {
    text.lines().filter_map(parse_result_line).filter(|r| r.name == name).collect()
}

fn get_f(r: &ResultLine, k: &str) -> Option<f64> {
    r.get(k).and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------------------------------------------
// the experiments

pub(super) fn table1_fig6(plan: &Plan) -> Result<Vec<Figure>, String> {
    let o = &plan.recovery;
    let (text, dir) = recoveryfig::recoveryfig(o)?;
    let stem = format!("{}-{}cpus", o.emulator.name(), o.cpus);
    let modes = ["local_driver_switch", "local_restart", "remote"];
    let mut t1 = Figure {
        id: "table1",
        title: "Table 1: phases of a fault recovery".into(),
        csv: vec![dir.join(format!("table1-{stem}.csv"))],
        png: modes.iter().map(|m| dir.join(format!("table1-{m}-{stem}.png"))).collect(),
        series: modes.iter().map(|m| m.to_string()).collect(),
        ..Figure::default()
    };
    let phases = results_of(&text, "table1");
    let mut para = String::new();
    for m in modes {
        let p: Vec<(String, f64)> = phases.iter().filter(|r| r.get("mode") == Some(m)).filter_map(|r| Some((r.get("phase")?.to_string(), get_f(r, "us")?))).collect();
        let total: f64 = p.iter().map(|x| x.1).sum();
        let Some((big, v)) = p.iter().max_by(|a, b| a.1.total_cmp(&b.1)).cloned() else { continue };
        // Re-initialisation: the driver's and the network's (`init` phases); remote recovery's is the service
        // coming back up on the other sandbox (`back`).
        let reinit: f64 = p.iter().filter(|x| x.0.contains("init") || x.0.contains("back")).map(|x| x.1).sum();
        let share = reinit / total.max(1e-9);
        // The paper measured the driver switch and remote recovery; a whole-sandbox restart is ours.
        let agrees = (m != "local_restart").then_some(share > 0.5);
        t1.ratios.push(ratio(format!("{m}: re-initialisation / total"), share, "re-initialisation dominates (driver 134 M + network 69 M of 203 M cycles)", agrees));
        let _ = write!(para, "{m}: {} phases, re-initialisation {:.0} % of the total, the largest `{big}` {:.0} %. ", p.len(), 100.0 * share, 100.0 * v / total.max(1e-9));
    }
    t1.paragraph = format!(
        "Measured by the monitor's and the sandbox's TSC stamps during one recovery of each kind (`questv recovery`, {} pings at {} ms, fault after reply {}). {para}The paper's Table 1 has VM exit/entry under 1 k cycles, the driver switch 12 k and re-initialisation 134 M: re-initialisation is the cost, which is what we see too.",
        o.count, o.interval_ms, o.after_replies
    );
    let mut f6 = Figure {
        id: "fig6",
        title: "Fig 6: NIC driver recovery against a reboot".into(),
        csv: vec![dir.join(format!("fig6-{stem}.csv"))],
        png: vec![dir.join(format!("fig6-{stem}.png"))],
        series: modes.iter().map(|m| m.to_string()).collect(),
        ..Figure::default()
    };
    let mut para = String::new();
    for r in results_of(&text, "fig6") {
        let (Some(m), Some(ratio)) = (r.get("mode"), get_f(&r, "downtime_over_reboot")) else { continue };
        f6.ratios.push(self::ratio(format!("{m}: downtime / reboot"), ratio, "online recovery \"much shorter\" than a reboot", Some(ratio < 0.2)));
        let _ = write!(para, "{m}: {} replies lost, downtime 1/{:.0} of a reboot. ", r.get("lost").unwrap_or("?"), 1.0 / ratio.max(1e-9));
    }
    f6.paragraph = format!("Pings at {} ms to the faulted guest while its NIC driver (or whole sandbox) fails and comes back, against rebooting the machine (boot to first reply). {para}The paper shows the same shape: local and remote recovery lose a few replies, a reboot many.", o.interval_ms);
    Ok(vec![t1, f6])
}

pub(super) fn fig8(plan: &Plan) -> Result<Vec<Figure>, String> {
    let o = &plan.net;
    let text = netfig::fig8(o)?;
    let dir = results_dir()?;
    let stem = format!("fig8-{}-{}cpus", o.emulator.name(), o.cpus);
    let mut f = Figure {
        id: "fig8",
        title: "Fig 8: interrupt distribution and handling".into(),
        csv: vec![dir.join(format!("{stem}-irqs.csv")), dir.join(format!("{stem}-rtt.csv"))],
        png: vec![dir.join(format!("{stem}-irqs.png")), dir.join(format!("{stem}-rtt.png"))],
        series: vec!["smp".into(), "vt".into()],
        ..Figure::default()
    };
    let r = results_of(&text, "fig8").into_iter().next().ok_or("fig 8 printed no summary")?;
    let vt_smp = get_f(&r, "rtt_median_vt_over_smp").ok_or("fig 8: no ratio")?;
    f.ratios.push(ratio("VT / SMP median round trip", vt_smp, "\"almost negligible\" difference", Some(vt_smp < 1.2)));
    let irq = std::fs::read_to_string(&f.csv[0]).map_err(|e| e.to_string())?;
    let (_, rows) = parse_csv(&irq)?;
    let per = |b: &str| rows.iter().filter(|r| r[0] == b).map(|r| r[2].parse::<u64>().unwrap_or(0)).collect::<Vec<_>>();
    let (smp, vt) = (per("smp"), per("vt"));
    let spread = vt.iter().filter(|&&n| n > 0).count();
    f.paragraph = format!(
        "{} pings at 3 ms from the host peer through the emulated e1000. SMP: the NIC's interrupt goes to CPU 0 ({smp:?} per core). VT: the I/O APIC broadcasts it to all {} sandboxes ({vt:?}; {spread} of {} took it) and early demultiplexing leaves one to answer, with no VM exit. Median round trip VT/SMP = {vt_smp:.2}. The paper measured the two within noise on hardware; under TCG the VT build's broadcast costs one interrupt per sandbox, which an emulator serialises, so the ratio here is an upper bound.",
        o.count, o.cpus, o.cpus
    );
    Ok(vec![f])
}

pub(super) fn fig9(o: &PaperOptions, plan: &Plan) -> Result<Vec<Figure>, String> {
    let boot = BootOptions { emulator: o.emulator, cpus: plan.msgbench_cpus, run: Some(plan.msgbench_trials.to_string()), echo: false, ..BootOptions::default() };
    let (csv, path) = crate::msgbench(&boot, &crate::MSGBENCH_VCPUS)?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
    let dir = results_dir()?;
    let mut f = Figure {
        id: "fig9",
        title: "Fig 9: message passing".into(),
        csv: vec![path.clone()],
        png: ["polled", "ipi"].iter().map(|m| dir.join(format!("{stem}-{m}.png"))).collect(),
        series: vec!["smp".into(), "vt".into()],
        ..Figure::default()
    };
    let (header, rows) = parse_csv(&csv)?;
    let col = |n: &str| header.iter().position(|h| h == n).ok_or(format!("msgbench CSV has no {n}"));
    let (b, v, sz, m, rtt) = (col("build")?, col("vcpu")?, col("size")?, col("mode")?, col("rtt_cycles")?);
    let rtt_of = |build: &str, vcpu: &str, mode: &str, size: &str| rows.iter().find(|r| r[b] == build && r[v] == vcpu && r[m] == mode && r[sz] == size).and_then(|r| r[rtt].parse::<f64>().ok());
    let sizes: Vec<String> = rows.iter().map(|r| r[sz].clone()).fold(Vec::new(), |mut a, s| { if !a.contains(&s) { a.push(s) } a });
    let (small, large) = (sizes.first().cloned().unwrap_or_default(), sizes.last().cloned().unwrap_or_default());
    let mut para = String::new();
    for mode in ["polled", "ipi"] {
        let ratios: Vec<f64> = sizes.iter().filter_map(|s| Some(rtt_of("vt", "none", mode, s)? / rtt_of("smp", "none", mode, s)?)).collect();
        let mean = ratios.iter().sum::<f64>() / ratios.len().max(1) as f64;
        f.ratios.push(ratio(format!("{mode}: VT / SMP round trip (mean over sizes)"), mean, "not reported (Quest-V only)", None));
        if let (Some(a), Some(z)) = (rtt_of("vt", "none", mode, &small), rtt_of("vt", "none", mode, &large)) {
            f.ratios.push(ratio(format!("{mode}: VT {large} B / {small} B round trip"), z / a, "grows with size", Some(z > a)));
        }
        if let (Some(hi), Some(lo)) = (rtt_of("vt", "hi", mode, &large), rtt_of("vt", "lo", mode, &large)) {
            f.ratios.push(ratio(format!("{mode}: VT Low (40 %) / Hi (50 %) VCPUs at {large} B"), lo / hi, "Low above Hi: VCPU parameters matter", Some(lo > hi)));
            let _ = write!(para, "{mode}: VT/SMP {mean:.2}, Low/Hi {:.2} at {large} B. ", lo / hi);
        }
    }
    f.paragraph = format!(
        "Round trips over a 4 KiB channel between endpoints in sandboxes (VT) or on two CPUs (SMP), {} trials per size from {small} to {large} B, busy-polled and with a notification IPI, with no VCPUs, with 50 % VCPUs (Hi) and with 40 % VCPUs (Low). {para}The paper shows cost growing with size and Low above Hi; both hold if the size and Low/Hi ratios above exceed 1.",
        plan.msgbench_trials
    );
    Ok(vec![f])
}

pub(super) fn fig10(plan: &Plan) -> Result<Vec<Figure>, String> {
    let o = &plan.fig10;
    let (text, ok) = fig10_run::fig10(o)?;
    let dir = results_dir()?;
    let stem = format!("fig10-{}", o.emulator.name());
    let mut f = Figure {
        id: "fig10",
        title: "Fig 10: sandbox isolation".into(),
        csv: vec![dir.join(format!("{stem}.csv"))],
        png: vec![dir.join(format!("{stem}.png"))],
        series: vec!["messages_sandbox0".into(), "messages_sandbox2".into(), "messages_sandbox3".into(), "icmp_replies_sandbox0".into()],
        ..Figure::default()
    };
    let mut para = String::new();
    for r in results_of(&text, "fig10") {
        let s = r.get("sandbox").unwrap_or("?");
        let _ = write!(para, "sandbox {s}: {} messages, {} corrupt, {} channel resets, {} after the fault. ", r.get("messages").unwrap_or("?"), r.get("corrupt").unwrap_or("?"), r.get("resets").unwrap_or("?"), r.get("messages_after_fault").unwrap_or("?"));
    }
    f.ratios.push(ratio("only sandbox 0 dipped (1 = yes)", if ok { 1.0 } else { 0.0 }, "only the faulted sandbox is interrupted", Some(ok)));
    f.paragraph = format!(
        "Sandbox 1 sends to 0, 2 and 3 over private channels; the host pings sandbox 0 every {} ms; after {} replies sandbox 0's NIC driver breaks, overwrites its channel with sandbox 1 and tries to wipe the other sandboxes (stopped by the second-stage tables). {para}The driver switch brings sandbox 0 back and the monitor restores its channel; {}.",
        o.interval_ms,
        o.break_after,
        if ok { "only sandbox 0 dipped, as in the paper" } else { "THE FIGURE DOES NOT SHOW WHAT THE PAPER CLAIMS" }
    );
    if !ok {
        return Err(format!("fig 10: isolation not shown:\n{text}"));
    }
    Ok(vec![f])
}

pub(super) fn fig11(plan: &Plan) -> Result<Vec<Figure>, String> {
    let o = &plan.net;
    let text = netfig::fig11(o)?;
    let dir = results_dir()?;
    let stem = format!("fig11-{}-{}cpus", o.emulator.name(), o.cpus);
    let mut f = Figure {
        id: "fig11",
        title: "Fig 11: shared driver performance".into(),
        csv: vec![dir.join(format!("{stem}.csv"))],
        png: vec![dir.join(format!("{stem}.png"))],
        series: vec!["No VT (SMP)".into(), "VT, one guest".into(), "VT, two guests sharing the NIC: guest 1".into(), "VT, two guests sharing the NIC: guest 2".into()],
        ..Figure::default()
    };
    let rows = results_of(&text, "fig11");
    let mut para = String::new();
    for r in &rows {
        let (Some(setup), Some(r_)) = (r.get("setup"), get_f(r, "median_over_no_vt")) else { continue };
        if setup == "no_vt_smp" {
            continue;
        }
        // Xen and VMware do not run here: only the Linux-against-Quest claim can be held against a number.
        let (claim, agrees) = match setup {
            s if s.starts_with("linux") => ("Linux about equal to Quest without VT", Some((0.67..1.5).contains(&r_))),
            s if s.contains("two_guests") => ("sharing costs something, less than under Xen/VMware", None),
            _ => ("one guest: overhead below Xen/VMware", None),
        };
        f.ratios.push(ratio(format!("{setup}: median RTT / No VT"), r_, claim, agrees));
        let _ = write!(para, "{setup} {r_:.2}; ");
    }
    if o.linux && o.emulator == Emulator::Qemu {
        if !rows.iter().any(|r| r.get("setup").is_some_and(|s| s.starts_with("linux"))) {
            return Err("fig 11: the Linux baseline did not run (see the line above)".into());
        }
        f.series.push("Linux 6.1 (Debian + busybox)".into());
    }
    f.paragraph = format!(
        "A flood of {} pings at {} ms per guest from the host peer. Median round trip over the No-VT (SMP) build: {para}The paper compares against Xen and VMware, which do not run here; Linux 6.1 on the same e1000 stands in as the no-virtualization baseline.",
        o.count, o.flood_interval_ms
    );
    Ok(vec![f])
}
