//! `compare`: the same workload once per core in the SMP build and once per sandbox in the VT build, in the same
//! emulator, with the one-instance scaling baseline, and with `--linux` once per vCPU on Linux 6.1 in the same
//! QEMU (the same static binary); `run_both` is shared with `msgbench` and `paper`.
#![forbid(unsafe_code)]

use crate::emulator::{boot, BootReport};
use crate::host::results_dir;
use crate::options::BootOptions;
use crate::plot;
use crate::protocol::{parse_result_line, Outcome, ResultLine};
use std::path::PathBuf;

/// One row of a comparison: a core (SMP: CPU, VT: sandbox) with its cycles per iteration in each build.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareRow {
    pub core: u64,
    pub smp_cycles_per_iter: u64,
    pub vt_cycles_per_iter: u64,
    /// VM exits the sandbox took during its run of the workload.
    pub vt_exits: i64,
}

impl CompareRow {
    pub fn ratio(&self) -> f64 {
        self.vt_cycles_per_iter as f64 / self.smp_cycles_per_iter.max(1) as f64
    }
}

/// Pair the workload's result lines of the two runs: SMP lines are keyed by `cpu`, VT lines by `sandbox`
/// (sandbox N runs on core N).
pub fn compare_rows(smp: &[String], vt: &[String]) -> Vec<CompareRow> {
    let smp_rows: Vec<ResultLine> = smp.iter().filter_map(|l| parse_result_line(l)).filter(|r| r.get("cycles_per_iter").is_some()).collect();
    let vt_rows: Vec<ResultLine> = vt.iter().filter_map(|l| parse_result_line(l)).filter(|r| r.get("cycles_per_iter").is_some()).collect();
    let mut rows: Vec<CompareRow> = smp_rows
        .iter()
        .filter_map(|s| {
            let core = s.get_u64("cpu")?;
            let v = vt_rows.iter().find(|v| v.get_u64("sandbox") == Some(core))?;
            Some(CompareRow {
                core,
                smp_cycles_per_iter: s.get_u64("cycles_per_iter")?,
                vt_cycles_per_iter: v.get_u64("cycles_per_iter")?,
                vt_exits: v.get("vmexits").and_then(|x| x.parse().ok()).unwrap_or(-1),
            })
        })
        .collect();
    rows.sort_by_key(|r| r.core);
    rows
}

pub fn compare_table(rows: &[CompareRow]) -> String {
    let mut t = String::from("core  smp_cycles_per_iter  vt_cycles_per_iter  vt/smp  vt_exits_during_run\n");
    for r in rows {
        t.push_str(&format!(
            "{:>4}  {:>19}  {:>18}  {:>6.3}  {:>19}\n",
            r.core, r.smp_cycles_per_iter, r.vt_cycles_per_iter, r.ratio(), r.vt_exits
        ));
    }
    t
}

pub fn compare_csv(rows: &[CompareRow]) -> String {
    let mut c = String::from("core,smp_cycles_per_iter,vt_cycles_per_iter,vt_over_smp,vt_exits_during_run\n");
    for r in rows {
        c.push_str(&format!("{},{},{},{:.4},{}\n", r.core, r.smp_cycles_per_iter, r.vt_cycles_per_iter, r.ratio(), r.vt_exits));
    }
    c
}

/// Boot the SMP build with `percpu RUN` (one instance per core) and the VT build with `RUN` (one per sandbox) in
/// the same emulator; both must end with status 0.
pub(crate) fn run_both(o: &BootOptions, run: &str) -> Result<Vec<BootReport>, String> {
    // Benchmarks run long in an emulator (forkwait 40000 on 4 TCG vCPUs: minutes): a longer default limit.
    let o = &BootOptions {
        timeout: Some(o.timeout.unwrap_or(o.timeout_secs() * 10)),
        // Both builds on the same TCG threading, so the cycle counts compare.
        tcg_single: Some(o.tcg_single.unwrap_or(true)),
        ..o.clone()
    };
    let smp_opts = BootOptions { vt: false, run: Some(format!("percpu {run}")), echo: false, ..o.clone() };
    let vt_opts = BootOptions { vt: true, run: Some(run.to_string()), echo: false, ..o.clone() };
    let mut reports = Vec::new();
    for opts in [&smp_opts, &vt_opts] {
        eprintln!("questv: compare: booting the {} build ({})", opts.mode(), opts.emulator.name());
        let r = boot(opts)?;
        if r.outcome != Outcome::Done(0) {
            let tail: Vec<&String> = r.lines.iter().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
            return Err(format!("{} run ended with {:?}; last lines:\n{}", opts.mode(), r.outcome,
                tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")));
        }
        eprintln!("questv: compare: {} build: {:.1} s", opts.mode(), r.wall_time.as_secs_f64());
        reports.push(r);
    }
    Ok(reports)
}

/// The one-instance baseline of a comparison: the workload's cycles per iteration when it runs alone on CPU 0 of
/// the same machine (SMP build, the other cores idle).
pub fn one_instance_cycles(lines: &[String]) -> Option<u64> {
    lines.iter().filter_map(|l| parse_result_line(l)).find_map(|r| r.get_u64("cycles_per_iter"))
}

/// The scaling summary: mean per-instance cost of each build over the one-instance cost.
pub fn scaling_table(rows: &[CompareRow], one: u64) -> String {
    let n = rows.len().max(1) as f64;
    let smp = rows.iter().map(|r| r.smp_cycles_per_iter as f64).sum::<f64>() / n;
    let vt = rows.iter().map(|r| r.vt_cycles_per_iter as f64).sum::<f64>() / n;
    let one = one.max(1) as f64;
    format!(
        "one instance alone (SMP, CPU 0): {one:.0} cycles/iter\nscaling: smp_per_instance/one={:.3} vt_per_sandbox/one={:.3}\n",
        smp / one,
        vt / one
    )
}

/// The static binary `--run` names, for Linux: a file given with `--add`, else one of the userland's C programs
/// (musl). The Rust programs speak questv's own calls only in part and are not offered.
fn linux_program(o: &BootOptions, name: &str) -> Result<PathBuf, String> {
    if let Some(p) = o.add.iter().find(|p| p.file_name().is_some_and(|f| f == name)) {
        return Ok(p.clone());
    }
    let c = crate::image::user_c_program(name);
    if c.is_file() {
        return Ok(c);
    }
    Err(format!("compare --linux runs a static Linux binary: {name:?} is neither a file given with --add nor one of the C programs (userland/c)"))
}

/// The workload once per vCPU on Linux 6.1 in QEMU (same CPU model, vCPUs, memory and clock as questv's runs),
/// each instance pinned to its vCPU with `taskset`. Returns its RESULT lines with `cycles_per_iter`, keyed by
/// `cpu`, and the kernel version.
fn run_linux(o: &BootOptions, run: &str) -> Result<(Vec<ResultLine>, String), String> {
    let mut words = run.split_whitespace();
    let name = words.next().ok_or("empty --run")?;
    let args: Vec<&str> = words.collect();
    let exe = linux_program(o, name)?;
    let cache = crate::workspace_root().join("target").join("linux-cache");
    let cmd = format!("for c in $(seq 0 {}); do taskset -c $c /bin/{name} {} & done; wait", o.cpus - 1, args.join(" "));
    let guest = crate::linux::build_initrd(&cache, None, &[(name.to_string(), exe)], &cmd, false)?;
    let mut qemu = crate::linux::qemu_args_on(&guest, "tcg,thread=single", crate::QEMU_CPU_MODEL, o.cpus, o.mem_mib.max(512), None);
    if o.icount {
        qemu.extend(["-icount".to_string(), crate::ICOUNT.to_string()]);
    }
    eprintln!("questv: compare: booting Linux {} (QEMU)", guest.version);
    let timeout = std::time::Duration::from_secs(o.timeout.unwrap_or(o.timeout_secs() * 10));
    let r = crate::linux::run_qemu(&qemu, timeout, Some("LINUX DONE"))?;
    let rows: Vec<ResultLine> = r.lines.iter().filter_map(|(_, l)| parse_result_line(l)).filter(|l| l.get("cycles_per_iter").is_some()).collect();
    if rows.len() != o.cpus as usize {
        return Err(format!("Linux printed {} results with cycles_per_iter, expected {}:\n{}{}", rows.len(), o.cpus, r.text(), r.stderr));
    }
    Ok((rows, guest.version))
}

/// `compare`: the workload once per core in the SMP build (`percpu PROG`) and once per sandbox in the VT build,
/// in the same emulator, plus (with more than one core) the workload alone on the SMP build as the scaling
/// baseline, and with `linux` once per vCPU on Linux 6.1. Prints the table, writes a CSV and a bar chart under
/// target/results/, returns the CSV path.
pub fn compare(o: &BootOptions, linux: bool) -> Result<(String, PathBuf), String> {
    let run = o.run.clone().unwrap_or_else(|| "forkwait 2000".into());
    // Checked before any boot: a program Linux cannot be given is an error of the command line.
    if linux {
        linux_program(o, run.split_whitespace().next().unwrap_or(""))?;
    }
    let reports = run_both(o, &run)?;
    let rows = compare_rows(&reports[0].lines, &reports[1].lines);
    if rows.len() != o.cpus as usize {
        return Err(format!("expected results from {} cores in both builds, matched {}", o.cpus, rows.len()));
    }
    let linux_rows = if linux { Some(run_linux(o, &run)?) } else { None };
    let one = if o.cpus > 1 {
        let opts = BootOptions { vt: false, run: Some(run.clone()), echo: false, timeout: Some(o.timeout.unwrap_or(o.timeout_secs() * 10)), tcg_single: Some(o.tcg_single.unwrap_or(true)), ..o.clone() };
        eprintln!("questv: compare: booting the smp build with one instance (the scaling baseline)");
        let r = boot(&opts)?;
        if r.outcome != Outcome::Done(0) {
            return Err(format!("the one-instance run ended with {:?}", r.outcome));
        }
        Some(one_instance_cycles(&r.lines).ok_or("the one-instance run printed no cycles_per_iter")?)
    } else {
        None
    };
    let dir = results_dir()?;
    let name: String = run.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let stem = format!("compare-{}-{}cpus-{}", o.emulator.name(), o.cpus, name);
    let path = dir.join(format!("{stem}.csv"));
    let mut csv = compare_csv(&rows);
    let mut table = compare_table(&rows);
    let mut groups: Vec<String> = rows.iter().map(|r| format!("core {}", r.core)).collect();
    let mut series = vec![
        plot::Series { name: format!("SMP, {} instances at once", rows.len()), points: rows.iter().enumerate().map(|(i, r)| (i as f64, r.smp_cycles_per_iter as f64)).collect() },
        plot::Series { name: format!("Quest-V (VT), {} sandboxes at once", rows.len()), points: rows.iter().enumerate().map(|(i, r)| (i as f64, r.vt_cycles_per_iter as f64)).collect() },
    ];
    if let Some((lrows, version)) = &linux_rows {
        let mut lines = String::from("core  linux_cycles_per_iter  linux/smp  linux/vt\n");
        let mut points = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            let Some(l) = lrows.iter().find(|l| l.get_u64("cpu") == Some(r.core)).and_then(|l| l.get_u64("cycles_per_iter")) else { continue };
            csv.push_str(&format!("linux_core_{},{l},,,\n", r.core));
            lines.push_str(&format!(
                "{:>4}  {:>21}  {:>9.3}  {:>8.3}\n",
                r.core,
                l,
                l as f64 / r.smp_cycles_per_iter.max(1) as f64,
                l as f64 / r.vt_cycles_per_iter.max(1) as f64
            ));
            points.push((i as f64, l as f64));
        }
        table.push_str(&format!("Linux {version}, the same binary, one instance per vCPU:\n{lines}"));
        series.push(plot::Series { name: format!("Linux {version}, {} instances at once", rows.len()), points });
    }
    if let Some(one) = one {
        csv.push_str(&format!("one_instance,{one},,,\n"));
        table.push_str(&scaling_table(&rows, one));
        groups.push("one instance alone".into());
        series.push(plot::Series { name: "SMP, one instance alone".into(), points: vec![(rows.len() as f64, one as f64)] });
    }
    std::fs::write(&path, csv).map_err(|e| e.to_string())?;
    let png = dir.join(format!("{stem}.png"));
    let title = format!("{run}: cycles per iteration, {} with {} cores", o.emulator.name(), o.cpus);
    plot::bar_chart(&png, &title, "cycles per iteration", &groups, &series)?;
    table.push_str(&format!("figure: {}\n", png.display()));
    Ok((table, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn comparison_pairs_cores() {
        let smp = s(&[
            "RESULT forkwait iterations=10 cycles=100 cycles_per_iter=10 lang=c cpu=1 sandbox=-1 vmexits=-1",
            "RESULT forkwait iterations=10 cycles=80 cycles_per_iter=8 lang=c cpu=0 sandbox=-1 vmexits=-1",
            "RESULT frames before=1 after=1",
        ]);
        let vt = s(&[
            "RESULT forkwait iterations=10 cycles=90 cycles_per_iter=9 lang=c cpu=0 sandbox=1 vmexits=0",
            "RESULT forkwait iterations=10 cycles=120 cycles_per_iter=12 lang=c cpu=0 sandbox=0 vmexits=2",
        ]);
        let rows = compare_rows(&smp, &vt);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].core, rows[0].smp_cycles_per_iter, rows[0].vt_cycles_per_iter, rows[0].vt_exits), (0, 8, 12, 2));
        assert!((rows[0].ratio() - 1.5).abs() < 1e-9);
        assert_eq!((rows[1].core, rows[1].vt_exits), (1, 0));
        let csv = compare_csv(&rows);
        assert!(csv.starts_with("core,smp_cycles_per_iter,vt_cycles_per_iter,vt_over_smp,vt_exits_during_run\n0,8,12,1.5000,2\n"));
        assert!(compare_table(&rows).lines().count() == 3);
        assert_eq!(one_instance_cycles(&s(&["noise", "RESULT forkwait iterations=10 cycles=70 cycles_per_iter=7 cpu=0"])), Some(7));
        assert_eq!(one_instance_cycles(&s(&["RESULT frames before=1 after=1"])), None);
        // Mean per instance: SMP (8+10)/2 = 9, VT (12+9)/2 = 10.5, over one instance of 6.
        assert!(scaling_table(&rows, 6).contains("smp_per_instance/one=1.500 vt_per_sandbox/one=1.750"));
    }
}
