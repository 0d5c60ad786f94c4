//! `msgbench` (paper Fig 9): the channel benchmark in both builds, once per VCPU set-up; its CSV and series.
#![forbid(unsafe_code)]

use super::compare::run_both;
use crate::host::results_dir;
use crate::options::BootOptions;
use crate::plot;
use crate::protocol::results;
use std::path::PathBuf;

/// msgbench's VCPU set-ups (userland/src/bin/msgbench.rs), in the order `--vcpu all` runs them.
pub const MSGBENCH_VCPUS: [&str; 3] = ["none", "hi", "lo"];

/// `RESULT msgbench` lines as CSV rows (build, vcpu, size, mode, trials, rtt_cycles, one_way_cycles, exits).
pub fn msgbench_csv(lines: &[String]) -> (String, usize) {
    let mut csv = String::from("build,vcpu,size,mode,trials,rtt_cycles,one_way_cycles,rtt_vmexits,vmexits_per_notified_msg\n");
    let mut n = 0;
    for r in results(lines, "msgbench") {
        let f = |k| r.get(k).unwrap_or("");
        // VT ipi mode: the exits the sender's notified messages cost (SMP: -1, polled: no notified messages).
        let per_msg = match (r.get("rtt_vmexits").and_then(|v| v.parse::<i64>().ok()), r.get_u64("rtt_notified")) {
            (Some(e), Some(m)) if e >= 0 && m > 0 => format!("{:.3}", e as f64 / m as f64),
            _ => String::new(),
        };
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            f("build"), r.get("vcpu").unwrap_or("none"), f("size"), f("mode"), f("trials"), f("rtt_cycles"),
            f("one_way_cycles"), f("rtt_vmexits"), per_msg
        ));
        n += 1;
    }
    (csv, n)
}

/// Fig 9's series from msgbench lines: round-trip cycles against message size, one series per build and VCPU
/// set-up, for one notification mode (`polled` or `ipi`).
pub fn msgbench_series(lines: &[String], mode: &str) -> Vec<plot::Series> {
    let mut series: Vec<plot::Series> = Vec::new();
    for r in results(lines, "msgbench").filter(|r| r.get("mode") == Some(mode)) {
        let (Some(build), Some(size), Some(rtt)) = (r.get("build"), r.get_u64("size"), r.get_u64("rtt_cycles")) else {
            continue;
        };
        let name = format!("{} {}", if build == "vt" { "Quest-V (VT)" } else { "SMP" }, match r.get("vcpu").unwrap_or("none") {
            "hi" => "Hi (50 % VCPUs)",
            "lo" => "Low (40 % VCPUs)",
            _ => "no VCPUs",
        });
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push((size as f64, rtt as f64)),
            None => series.push(plot::Series { name, points: vec![(size as f64, rtt as f64)] }),
        }
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series
}

/// `msgbench` (paper Fig 9): the channel benchmark between endpoints 0 and 1 in both builds (same emulator), once
/// per VCPU set-up; one CSV and a PNG per notification mode under target/results/.
pub fn msgbench(o: &BootOptions, vcpus: &[&str]) -> Result<(String, PathBuf), String> {
    let trials = o.run.clone().unwrap_or_else(|| "5000".into());
    let trials = trials.trim();
    if trials.parse::<u64>().is_err() {
        return Err(format!("--run gives msgbench's trials per size, a number (got {trials:?})"));
    }
    let mut all: Vec<String> = Vec::new();
    for v in vcpus {
        eprintln!("questv: msgbench: VCPU set-up {v}");
        for r in run_both(o, &format!("msgbench {trials} {v}"))? {
            all.extend(r.lines);
        }
    }
    let (csv, n) = msgbench_csv(&all);
    let expected = 2 * 2 * 11 * vcpus.len();
    if n != expected {
        return Err(format!("expected {expected} RESULT msgbench lines (2 builds x 2 modes x 11 sizes x {} VCPU set-ups), got {n}", vcpus.len()));
    }
    let stem = format!("msgbench-{}-{}trials-{}", o.emulator.name(), trials, vcpus.join("-"));
    let dir = results_dir()?;
    let path = dir.join(format!("{stem}.csv"));
    std::fs::write(&path, &csv).map_err(|e| e.to_string())?;
    for mode in ["polled", "ipi"] {
        let png = dir.join(format!("{stem}-{mode}.png"));
        let title = format!("Fig 9: {mode} message round trip, {} ({} trials per size)", o.emulator.name(), trials);
        plot::line_chart(&png, &title, "message size (bytes)", "round trip (cycles, log scale)", true, true, &msgbench_series(&all, mode))?;
        eprintln!("questv: msgbench: figure {}", png.display());
    }
    Ok((csv, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn msgbench_csv_and_series() {
        let (csv, n) = msgbench_csv(&s(&[
            "[s0] RESULT msgbench build=vt size=4 mode=ipi trials=10 rtt_cycles=5 one_way_cycles=3 rtt_vmexits=10 rtt_notified=10",
            "RESULT msgbench build=smp size=4 mode=polled trials=10 rtt_cycles=5 one_way_cycles=3 rtt_vmexits=-1 rtt_notified=0 vcpu=hi",
            "x",
        ]));
        assert_eq!(n, 2);
        assert_eq!(
            csv,
            "build,vcpu,size,mode,trials,rtt_cycles,one_way_cycles,rtt_vmexits,vmexits_per_notified_msg\nvt,none,4,ipi,10,5,3,10,1.000\nsmp,hi,4,polled,10,5,3,-1,\n"
        );
        let series = msgbench_series(&s(&[
            "RESULT msgbench build=smp size=8 mode=polled trials=10 rtt_cycles=7 one_way_cycles=3 vcpu=lo",
            "RESULT msgbench build=smp size=4 mode=polled trials=10 rtt_cycles=5 one_way_cycles=3 vcpu=lo",
            "RESULT msgbench build=smp size=4 mode=ipi trials=10 rtt_cycles=9 one_way_cycles=3 vcpu=lo",
            "[s1] RESULT msgbench build=vt size=4 mode=polled trials=10 rtt_cycles=6 one_way_cycles=3 vcpu=hi",
        ]), "polled");
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].points, vec![(4.0, 5.0), (8.0, 7.0)]);
        assert!(series[1].name.contains("VT") && series[1].name.contains("Hi"));
    }
}
