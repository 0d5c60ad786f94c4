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

/// One row of a comparison: a workload on a core (SMP: CPU, VT: sandbox) with its cycles per iteration in each
/// build.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareRow {
    pub core: u64,
    /// The RESULT line's name and its `mode`, if it has one (`pipebench pingpong`).
    pub workload: String,
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

/// What a RESULT line measured: its name, and its `mode` when it has one.
fn workload(r: &ResultLine) -> String {
    match r.get("mode") {
        Some(m) => format!("{} {m}", r.name),
        None => r.name.clone(),
    }
}

/// The lines with `cycles_per_iter`, each with its core (`key`: SMP `cpu`, VT `sandbox`) and its place among
/// that core's lines of the same workload.
fn cycles_lines(lines: &[String], key: &str) -> Vec<(u64, String, usize, ResultLine)> {
    let mut out: Vec<(u64, String, usize, ResultLine)> = Vec::new();
    for r in lines.iter().filter_map(|l| parse_result_line(l)).filter(|r| r.get("cycles_per_iter").is_some()) {
        let Some(core) = r.get_u64(key) else { continue };
        let w = workload(&r);
        let k = out.iter().filter(|(c, x, _, _)| *c == core && *x == w).count();
        out.push((core, w, k, r));
    }
    out
}

/// Pair the workload's result lines of the two runs: SMP lines are keyed by `cpu`, VT lines by `sandbox`
/// (sandbox N runs on core N); a program that measures several things is paired thing by thing (the k-th
/// line of a workload on a core with the k-th of the same workload on that core).
pub fn compare_rows(smp: &[String], vt: &[String]) -> Vec<CompareRow> {
    let vt_lines = cycles_lines(vt, "sandbox");
    let mut rows: Vec<CompareRow> = cycles_lines(smp, "cpu")
        .into_iter()
        .filter_map(|(core, w, k, s)| {
            let (_, _, _, v) = vt_lines.iter().find(|(c, x, j, _)| *c == core && *x == w && *j == k)?;
            Some(CompareRow {
                core,
                workload: w,
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
    let mut t = String::from("core  workload              smp_cycles_per_iter  vt_cycles_per_iter  vt/smp  vt_exits_during_run\n");
    for r in rows {
        t.push_str(&format!(
            "{:>4}  {:<20}  {:>19}  {:>18}  {:>6.3}  {:>19}\n",
            r.core, r.workload, r.smp_cycles_per_iter, r.vt_cycles_per_iter, r.ratio(), r.vt_exits
        ));
    }
    t
}

pub fn compare_csv(rows: &[CompareRow]) -> String {
    let mut c = String::from("core,workload,smp_cycles_per_iter,vt_cycles_per_iter,vt_over_smp,vt_exits_during_run\n");
    for r in rows {
        c.push_str(&format!("{},{},{},{},{:.4},{}\n", r.core, r.workload, r.smp_cycles_per_iter, r.vt_cycles_per_iter, r.ratio(), r.vt_exits));
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
    // (The default layout: a partition file is `compare --config`'s third run, not these.)
    let smp_opts = BootOptions { vt: false, run: Some(format!("percpu {run}")), echo: false, partition: None, config: None, ..o.clone() };
    let vt_opts = BootOptions { vt: true, run: Some(run.to_string()), echo: false, partition: None, config: None, ..o.clone() };
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

/// One instance of the compared program on one system: `timeit`'s report (guest wall time from fork to reap,
/// the shell's exit status) and the program's own RESULT lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The core (SMP, Linux) or sandbox (VT) it ran on.
    pub instance: u64,
    pub status: i64,
    pub wall_us: u64,
    /// Its RESULT lines as printed (without `timeit`'s ` instance=N` and a sandbox's `[sN] ` prefix).
    pub results: Vec<String>,
}

/// The instances in one run's serial lines: `RESULT instance instance=N status=S wall_us=U ...` lines, each with
/// the RESULT lines `timeit` tagged `instance=N`. Sorted by instance.
pub fn instances<S: AsRef<str>>(lines: &[S]) -> Vec<Instance> {
    let parsed: Vec<(ResultLine, &str)> = lines
        .iter()
        .filter_map(|l| {
            let l = l.as_ref();
            let r = parse_result_line(l)?;
            Some((r, crate::protocol::split_sandbox_prefix(l.trim_end()).1))
        })
        .collect();
    let mut out: Vec<Instance> = parsed
        .iter()
        .filter(|(r, _)| r.name == "instance")
        .filter_map(|(r, _)| {
            let instance = r.get_u64("instance")?;
            let results = parsed
                .iter()
                .filter(|(o, _)| o.name != "instance" && o.get_u64("instance") == Some(instance))
                .map(|(_, text)| text.strip_suffix(&format!(" instance={instance}")).unwrap_or(text).to_string())
                .collect();
            Some(Instance { instance, status: r.get("status")?.parse().ok()?, wall_us: r.get_u64("wall_us")?, results })
        })
        .collect();
    out.sort_by_key(|i| i.instance);
    out
}

/// The per-instance table: each system's wall time (ms) and status per instance, the ratios to the first
/// system, then each instance's own RESULT lines.
pub fn instance_table(systems: &[(String, Vec<Instance>)]) -> String {
    let mut t = String::from("instance");
    for (name, _) in systems {
        t.push_str(&format!("  {name:>12}_ms  status"));
    }
    for (name, _) in systems.iter().skip(1) {
        t.push_str(&format!("  {name}/{}", systems[0].0));
    }
    t.push('\n');
    let Some((_, first)) = systems.first() else { return t };
    for base in first {
        t.push_str(&format!("{:>8}", base.instance));
        let row: Vec<Option<&Instance>> = systems.iter().map(|(_, v)| v.iter().find(|i| i.instance == base.instance)).collect();
        for i in &row {
            match i {
                Some(i) => t.push_str(&format!("  {:>15.1}  {:>6}", i.wall_us as f64 / 1000.0, i.status)),
                None => t.push_str(&format!("  {:>15}  {:>6}", "-", "-")),
            }
        }
        for i in row.iter().skip(1) {
            match i {
                Some(i) => t.push_str(&format!("  {:>9.3}", i.wall_us as f64 / base.wall_us.max(1) as f64)),
                None => t.push_str("  -"),
            }
        }
        t.push('\n');
    }
    for (name, v) in systems {
        for i in v.iter().filter(|i| !i.results.is_empty()) {
            t.push_str(&format!("{name} instance {}:\n", i.instance));
            for r in &i.results {
                t.push_str(&format!("  {r}\n"));
            }
        }
    }
    t
}

pub fn instance_csv(systems: &[(String, Vec<Instance>)]) -> String {
    let mut c = String::from("system,instance,wall_us,status,result_lines\n");
    for (name, v) in systems {
        for i in v {
            c.push_str(&format!("{name},{},{},{},{}\n", i.instance, i.wall_us, i.status, i.results.len()));
        }
    }
    c
}

/// A command's leading `NAME=VALUE` words (`--env`, which init takes as the environment) and the rest.
fn split_env(run: &str) -> (String, String) {
    let words: Vec<&str> = run.split_whitespace().collect();
    let k = words.iter().take_while(|w| w.contains('=') && !w.starts_with('=')).count();
    (words[..k].join(" "), words[k..].join(" "))
}

/// `run` with `wrapper` put in front of its program (after any `NAME=VALUE` words).
fn with_timeit(run: &str, wrapper: &str) -> String {
    match split_env(run) {
        (env, prog) if env.is_empty() => format!("{wrapper} {prog}"),
        (env, prog) => format!("{env} {wrapper} {prog}"),
    }
}

/// The static binaries Linux gets: every `--add` file, `timeit`, and the program `--run` names when it is one of
/// the userland's C programs (musl; the Rust programs speak questv's own calls only in part and are not
/// offered). A program that is neither is refused before any boot.
fn linux_programs(o: &BootOptions, name: &str) -> Result<Vec<(String, PathBuf)>, String> {
    let mut progs: Vec<(String, PathBuf)> = o.add.iter().filter_map(|p| Some((p.file_name()?.to_str()?.to_string(), p.clone()))).collect();
    progs.push(("timeit".into(), crate::image::user_c_program("timeit")));
    if o.run_script.is_some() {
        // A script may call any of them, as it can on questv (where they are all in /bin).
        for c in crate::image::user_c_program_names()? {
            if !progs.iter().any(|(n, _)| *n == c) {
                progs.push((c.clone(), crate::image::user_c_program(&c)));
            }
        }
    } else if !progs.iter().any(|(n, _)| n == name) {
        let c = crate::image::user_c_program(name);
        if !c.is_file() {
            return Err(format!("compare --linux runs a static Linux binary: {name:?} is neither a file given with --add nor one of the C programs (userland/c)"));
        }
        progs.push((name.to_string(), c));
    }
    Ok(progs)
}

/// The workload once per vCPU on Linux 6.1 in QEMU (same CPU model, vCPUs, memory and clock as questv's runs),
/// each instance under `timeit`, pinned to its vCPU with `taskset`. Returns its serial lines and the kernel
/// version.
fn run_linux(o: &BootOptions, run: &str) -> Result<(Vec<String>, String), String> {
    let (_, prog) = split_env(run);
    let name = prog.split_whitespace().next().ok_or("empty --run")?;
    let mut progs = linux_programs(o, name)?;
    let cache = crate::workspace_root().join("target").join("linux-cache");
    // A shell script (`--run` with shell syntax) goes in as a file, as it does into questv's initramfs.
    let (run, script) = match &o.run_script {
        Some(text) => {
            let path = crate::workspace_root().join("target").join(format!("compare-run-{}.sh", std::process::id()));
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            progs.push(("questv-run".into(), path.clone()));
            ("sh /bin/questv-run".to_string(), Some(path))
        }
        None => (run.to_string(), None),
    };
    // `--env` words: through busybox's env, so that timeit and the program see them.
    let (env, prog) = split_env(&run);
    let timed = if env.is_empty() { format!("/bin/timeit {prog}") } else { format!("env {env} /bin/timeit {prog}") };
    let cmd = format!("for c in $(seq 0 {}); do taskset -c $c {timed} & done; wait", o.cpus - 1);
    let guest = crate::linux::build_initrd(&cache, None, &progs, &cmd, false);
    if let Some(p) = script {
        let _ = std::fs::remove_file(p);
    }
    let guest = guest?;
    let mut qemu = crate::linux::qemu_args_on(&guest, "tcg,thread=single", crate::QEMU_CPU_MODEL, o.cpus, o.mem_mib.max(512), None);
    if o.icount {
        qemu.extend(["-icount".to_string(), crate::ICOUNT.to_string()]);
    }
    eprintln!("questv: compare: booting Linux {} (QEMU)", guest.version);
    let timeout = std::time::Duration::from_secs(o.timeout.unwrap_or(o.timeout_secs() * 10));
    let r = crate::linux::run_qemu(&qemu, timeout, Some("LINUX DONE"))?;
    let lines: Vec<String> = r.lines.iter().map(|(_, l)| l.clone()).collect();
    let reported = instances(&lines).len();
    if reported != o.cpus as usize {
        return Err(format!("Linux reported {reported} instances, expected {}:\n{}{}", o.cpus, r.text(), r.stderr));
    }
    Ok((lines, guest.version))
}

/// Another system's cycles beside the SMP/VT rows (Linux's, or the VT build laid out by a partition file):
/// its result lines keyed by core (`cycles_lines`), paired with each row's core and workload as `compare_rows`
/// pairs them. Returns the table (`name` heads its columns), and the chart's points; appends the CSV rows.
fn third_system_rows(rows: &[CompareRow], lines: &[(u64, String, usize, ResultLine)], name: &str, csv: &mut String) -> (String, Vec<(f64, f64)>) {
    let mut out = format!("core  workload              {name}_cycles_per_iter  {name}/smp  {name}/vt\n");
    let mut points = Vec::new();
    let mut seen: Vec<(u64, String)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let k = seen.iter().filter(|(c, w)| *c == r.core && *w == r.workload).count();
        seen.push((r.core, r.workload.clone()));
        let Some(x) = lines.iter().find(|(c, w, j, _)| *c == r.core && *w == r.workload && *j == k).and_then(|(_, _, _, l)| l.get_u64("cycles_per_iter")) else { continue };
        csv.push_str(&format!("{name}_core_{},{},{x},,,\n", r.core, r.workload));
        out.push_str(&format!(
            "{:>4}  {:<20}  {:>w$}  {:>w2$.3}  {:>w3$.3}\n",
            r.core,
            r.workload,
            x,
            x as f64 / r.smp_cycles_per_iter.max(1) as f64,
            x as f64 / r.vt_cycles_per_iter.max(1) as f64,
            w = name.len() + 16,
            w2 = name.len() + 4,
            w3 = name.len() + 3
        ));
        points.push((i as f64, x as f64));
    }
    (out, points)
}

/// The third system of `compare --config`: the partition file's stem (`vt-asymmetric`).
fn file_system_name(o: &BootOptions) -> String {
    let stem = o.config.as_deref().and_then(|p| p.file_stem()).and_then(|s| s.to_str()).unwrap_or("file");
    format!("vt-{}", stem.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect::<String>())
}

/// The file's layout with every sandbox's `run` replaced by `run` under `timeit`, once per core of the sandbox.
fn timed_everywhere(p: &crate::partitions::Partitions, run: &str) -> crate::partitions::Partitions {
    let mut p = p.clone();
    for s in &mut p.sandboxes {
        s.run = Some(if s.cpus.len() > 1 {
            let cores: Vec<String> = s.cpus.iter().map(|c| c.to_string()).collect();
            format!("TIMEIT_CORES={} {}", cores.join(","), with_timeit(run, "percpu timeit"))
        } else {
            with_timeit(run, "timeit")
        });
    }
    p
}

/// `compare --config`: the VT build laid out by the partition file, every sandbox running the program under
/// `timeit` — once per core of the sandbox (`percpu`), with the machine's core numbers in `TIMEIT_CORES` so
/// that each instance is numbered by its core. Returns the run's lines.
fn run_partition(o: &BootOptions, p: &crate::partitions::Partitions, run: &str) -> Result<Vec<String>, String> {
    let p = timed_everywhere(p, run);
    let expected: usize = p.sandboxes.iter().map(|s| s.cpus.len()).sum();
    let opts = BootOptions {
        vt: true,
        run: Some(with_timeit(run, "timeit")),
        echo: false,
        partition: Some(p),
        timeout: Some(o.timeout.unwrap_or(o.timeout_secs() * 10)),
        tcg_single: Some(o.tcg_single.unwrap_or(true)),
        ..o.clone()
    };
    eprintln!("questv: compare: booting the vt build laid out by {}", o.config.as_deref().map_or(String::new(), |c| c.display().to_string()));
    let r = boot(&opts)?;
    if r.outcome != Outcome::Done(0) {
        return Err(format!("the run laid out by the file ended with {:?}", r.outcome));
    }
    let got = instances(&r.lines).len();
    if got != expected {
        return Err(format!("the run laid out by the file reported {got} instances, expected {expected} (one per core of its sandboxes)"));
    }
    Ok(r.lines)
}

/// `compare`: the program once per core in the SMP build (`percpu timeit PROG`), once per sandbox in the VT build
/// and with `linux` once per vCPU on Linux 6.1, each instance under `timeit` (wall time, status, its RESULT
/// lines); with more than one core also alone on the SMP build (the scaling baseline). A program that prints
/// `cycles_per_iter` (forkwait and the other benchmarks) also gets the cycles table. Prints the tables, writes
/// CSVs and a bar chart under target/results/, returns the main CSV's path.
pub fn compare(o: &BootOptions, linux: bool) -> Result<(String, PathBuf), String> {
    let run = o.run.clone().unwrap_or_else(|| "forkwait 2000".into());
    // Checked before any boot: a program Linux cannot be given is an error of the command line.
    if linux {
        linux_programs(o, split_env(&run).1.split_whitespace().next().unwrap_or(""))?;
    }
    let timed = with_timeit(&run, "timeit");
    let reports = run_both(o, &timed)?;
    let mut systems = vec![("smp".to_string(), instances(&reports[0].lines)), ("vt".to_string(), instances(&reports[1].lines))];
    for (name, v) in &systems {
        if v.len() != o.cpus as usize {
            return Err(format!("the {name} build reported {} instances, expected {}", v.len(), o.cpus));
        }
    }
    let rows = compare_rows(&reports[0].lines, &reports[1].lines);
    let cycles = !rows.is_empty();
    let file_run = match &o.partition {
        Some(p) => Some(run_partition(o, p, &run)?),
        None => None,
    };
    if let Some(lines) = &file_run {
        systems.push((file_system_name(o), instances(lines)));
    }
    let linux_run = if linux { Some(run_linux(o, &run)?) } else { None };
    if let Some((lines, _)) = &linux_run {
        systems.push(("linux".to_string(), instances(lines)));
    }
    let one = if o.cpus > 1 {
        let opts = BootOptions { vt: false, run: Some(timed.clone()), echo: false, timeout: Some(o.timeout.unwrap_or(o.timeout_secs() * 10)), tcg_single: Some(o.tcg_single.unwrap_or(true)), ..o.clone() };
        eprintln!("questv: compare: booting the smp build with one instance (the scaling baseline)");
        let r = boot(&opts)?;
        if r.outcome != Outcome::Done(0) {
            return Err(format!("the one-instance run ended with {:?}", r.outcome));
        }
        let alone = instances(&r.lines).into_iter().next().ok_or("the one-instance run reported no instance")?;
        Some((alone, one_instance_cycles(&r.lines)))
    } else {
        None
    };
    let dir = results_dir()?;
    // A script is named by its text (its command is always `sh /etc/questv-run`).
    let what = o.run_script.as_deref().unwrap_or(&run);
    let name: String = what.chars().take(60).map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let stem = format!("compare-{}-{}cpus-{}", o.emulator.name(), o.cpus, name);
    let mut table = instance_table(&systems);
    let mut instance_csv = instance_csv(&systems);
    if let Some((alone, _)) = &one {
        instance_csv.push_str(&format!("smp_alone,{},{},{},{}\n", alone.instance, alone.wall_us, alone.status, alone.results.len()));
        table.push_str(&format!("alone (SMP, one instance): {:.1} ms, status {}\n", alone.wall_us as f64 / 1000.0, alone.status));
    }
    let instances_path = dir.join(format!("{stem}-instances.csv"));
    std::fs::write(&instances_path, &instance_csv).map_err(|e| e.to_string())?;
    table.push_str(&format!("instances: {}\n", instances_path.display()));
    let png = dir.join(format!("{stem}.png"));
    if !cycles {
        // Wall time per instance and system.
        let groups: Vec<String> = systems[0].1.iter().map(|i| format!("instance {}", i.instance)).collect();
        let series = systems
            .iter()
            .map(|(n, v)| plot::Series { name: n.clone(), points: v.iter().enumerate().map(|(k, i)| (k as f64, i.wall_us as f64 / 1000.0)).collect() })
            .collect::<Vec<_>>();
        plot::bar_chart(&png, &format!("{run}: wall time per instance, {} with {} cores", o.emulator.name(), o.cpus), "milliseconds (guest clock)", &groups, &series)?;
        table.push_str(&format!("figure: {}\n", png.display()));
        return Ok((table, instances_path));
    }
    let path = dir.join(format!("{stem}.csv"));
    let mut csv = compare_csv(&rows);
    table.push_str(&compare_table(&rows));
    let mut groups: Vec<String> = rows.iter().map(|r| format!("core {} {}", r.core, r.workload)).collect();
    let mut series = vec![
        plot::Series { name: format!("SMP, {} instances at once", rows.len()), points: rows.iter().enumerate().map(|(i, r)| (i as f64, r.smp_cycles_per_iter as f64)).collect() },
        plot::Series { name: format!("Quest-V (VT), {} sandboxes at once", rows.len()), points: rows.iter().enumerate().map(|(i, r)| (i as f64, r.vt_cycles_per_iter as f64)).collect() },
    ];
    if let Some((lines, version)) = &linux_run {
        let (out, points) = third_system_rows(&rows, &cycles_lines(lines, "cpu"), "linux", &mut csv);
        table.push_str(&format!("Linux {version}, the same binary, one instance per vCPU:\n{out}"));
        series.push(plot::Series { name: format!("Linux {version}, {} instances at once", rows.len()), points });
    }
    if let Some(lines) = &file_run {
        let name = file_system_name(o);
        let (out, points) = third_system_rows(&rows, &cycles_lines(lines, "instance"), &name, &mut csv);
        table.push_str(&format!("VT laid out by {} (each sandbox's instances on its own cores):\n{out}", o.config.as_deref().map_or(String::new(), |p| p.display().to_string())));
        series.push(plot::Series { name: format!("Quest-V (VT), laid out by {name}"), points });
    }
    if let Some((_, Some(one))) = one {
        csv.push_str(&format!("one_instance,,{one},,,\n"));
        table.push_str(&scaling_table(&rows, one));
        groups.push("one instance alone".into());
        series.push(plot::Series { name: "SMP, one instance alone".into(), points: vec![(rows.len() as f64, one as f64)] });
    }
    std::fs::write(&path, csv).map_err(|e| e.to_string())?;
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
        assert_eq!(rows[0].workload, "forkwait");
        assert!((rows[0].ratio() - 1.5).abs() < 1e-9);
        assert_eq!((rows[1].core, rows[1].vt_exits), (1, 0));
        let csv = compare_csv(&rows);
        assert!(csv.starts_with("core,workload,smp_cycles_per_iter,vt_cycles_per_iter,vt_over_smp,vt_exits_during_run\n0,forkwait,8,12,1.5000,2\n"));
        assert!(compare_table(&rows).lines().count() == 3);
        assert_eq!(one_instance_cycles(&s(&["noise", "RESULT forkwait iterations=10 cycles=70 cycles_per_iter=7 cpu=0"])), Some(7));
        assert_eq!(one_instance_cycles(&s(&["RESULT frames before=1 after=1"])), None);
        // Mean per instance: SMP (8+10)/2 = 9, VT (12+9)/2 = 10.5, over one instance of 6.
        assert!(scaling_table(&rows, 6).contains("smp_per_instance/one=1.500 vt_per_sandbox/one=1.750"));
        // A third system (Linux: by cpu) paired by core, its columns headed by its name.
        let linux = cycles_lines(&s(&["RESULT forkwait iterations=10 cycles=160 cycles_per_iter=16 lang=c cpu=0 sandbox=-1 vmexits=-1"]), "cpu");
        let mut csv = String::new();
        let (out, points) = third_system_rows(&rows, &linux, "linux", &mut csv);
        assert_eq!(out, "core  workload              linux_cycles_per_iter  linux/smp  linux/vt\n   0  forkwait                                 16      2.000     1.333\n");
        assert_eq!((csv.as_str(), points), ("linux_core_0,forkwait,16,,,\n", vec![(0.0, 16.0)]));
    }

    #[test]
    fn a_program_measuring_several_things_is_paired_thing_by_thing() {
        let smp = s(&[
            "RESULT pipebench mode=pingpong cycles_per_iter=10 cpu=0",
            "RESULT pipebench mode=stream cycles_per_iter=100 cpu=0",
            "RESULT pipebench mode=pingpong cycles_per_iter=20 cpu=0",
        ]);
        let vt = s(&[
            "[s0] RESULT pipebench mode=stream cycles_per_iter=110 cpu=0 sandbox=0",
            "[s0] RESULT pipebench mode=pingpong cycles_per_iter=11 cpu=0 sandbox=0",
            "[s0] RESULT pipebench mode=pingpong cycles_per_iter=22 cpu=0 sandbox=0",
        ]);
        let rows = compare_rows(&smp, &vt);
        let got: Vec<(&str, u64, u64)> = rows.iter().map(|r| (r.workload.as_str(), r.smp_cycles_per_iter, r.vt_cycles_per_iter)).collect();
        assert_eq!(got, vec![("pipebench pingpong", 10, 11), ("pipebench stream", 100, 110), ("pipebench pingpong", 20, 22)]);
    }

    #[test]
    fn timeit_goes_after_the_environment() {
        assert_eq!(with_timeit("forkwait 10", "timeit"), "timeit forkwait 10");
        assert_eq!(with_timeit("A=1 B=x forkwait 10", "timeit"), "A=1 B=x timeit forkwait 10");
        assert_eq!(split_env("A=1 prog a=b"), ("A=1".to_string(), "prog a=b".to_string()));
    }

    #[test]
    fn a_partition_file_runs_the_program_once_per_core_numbered_by_core() {
        let m = crate::partitions::Machine { cpus: 4, mem_mib: 1024, programs: vec!["forkwait".into(), "msgtest".into()] };
        let text = "[[sandbox]]\nname = \"one\"\ncpus = [0]\nrun = \"msgtest 5\"\n\n[[sandbox]]\nname = \"wide\"\ncpus = [3, 1]\n";
        let p = timed_everywhere(&crate::partitions::check(text, &m).unwrap(), "A=1 forkwait 100");
        let runs: Vec<&str> = p.sandboxes.iter().map(|s| s.run.as_deref().unwrap()).collect();
        assert_eq!(runs, ["A=1 timeit forkwait 100", "TIMEIT_CORES=1,3 A=1 percpu timeit forkwait 100"]);
        let o = BootOptions { config: Some(PathBuf::from("examples/partitions/two-core.toml")), ..BootOptions::default() };
        assert_eq!(file_system_name(&o), "vt-two-core");
    }

    #[test]
    fn instances_gather_timeits_reports_and_their_result_lines() {
        // SMP: two instances at once, lines interleaved; one program line has no instance tag (not timeit's).
        let smp = s(&[
            "RESULT md5 digest=abc instance=1",
            "RESULT md5 digest=abc instance=0",
            "RESULT instance instance=1 status=0 wall_us=2500 result_lines=1",
            "RESULT stray x=1",
            "RESULT instance instance=0 status=3 wall_us=2000 result_lines=1",
        ]);
        let vt = s(&["[s1] RESULT instance instance=1 status=0 wall_us=5000 result_lines=0", "[s0] RESULT md5 digest=abc instance=0", "[s0] RESULT instance instance=0 status=0 wall_us=3000 result_lines=1"]);
        let a = instances(&smp);
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].instance, a[0].status, a[0].wall_us), (0, 3, 2000));
        assert_eq!(a[0].results, vec!["RESULT md5 digest=abc".to_string()]);
        let b = instances(&vt);
        assert_eq!((b[1].instance, b[1].wall_us, b[1].results.len()), (1, 5000, 0));
        assert_eq!(b[0].results, vec!["RESULT md5 digest=abc".to_string()]);
        let systems = vec![("smp".to_string(), a), ("vt".to_string(), b)];
        let t = instance_table(&systems);
        let row0 = t.lines().nth(1).unwrap();
        assert!(row0.contains("2.0") && row0.contains("3.0") && row0.contains("1.500"), "{t}");
        assert!(t.contains("vt instance 0:\n  RESULT md5 digest=abc\n"), "{t}");
        assert_eq!(instance_csv(&systems).lines().nth(1), Some("smp,0,2000,3,1"));
        assert!(instances(&s(&["RESULT instance instance=0 status=x wall_us=1"])).is_empty(), "a malformed report is no instance");
    }
}
