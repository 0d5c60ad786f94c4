//! POSIX/Linux conformance suites: unmodified static binaries that check one area of the Linux ABI and print
//! `RESULT <check> name=.. ok=0|1` per check and `RESULT conformance suite=.. libc=.. passed=P failed=F` at the end.
//! The same binaries must pass on Linux 6.1 (the reference: Debian's kernel in QEMU, as Fig 7 boots it), on
//! questv's SMP build and in both sandboxes of its VT build.
//!
//! Suites: `signals` (tests/data/linux/signals.c, checks `sigcheck`), `threads` (tests/data/linux/threads.c,
//! checks `thrcheck`), `process` (tests/data/linux/process.c, checks `proccheck`: memory, time, identity,
//! limits, waiting, the console) and `files` (tests/data/linux/files.c, checks `filecheck`: open and paths,
//! reading and writing, stat, directories, links, descriptors, pipes, poll/select, devices), each built with
//! musl-gcc and with gcc (glibc), both `-static -O2`.
mod common;
use common::{check_monitor_ended_run, Run};
use questv::{linux, parse_result_line, ResultLine};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// A suite's binaries, built once per test process: (program name, path), musl first.
fn binaries(suite: &str) -> &'static [(String, PathBuf)] {
    static SIGNALS: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    static THREADS: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    static PROCESS: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    static FILES: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    let cell = match suite {
        "signals" => &SIGNALS,
        "threads" => &THREADS,
        "process" => &PROCESS,
        "files" => &FILES,
        other => panic!("no suite {other}"),
    };
    cell.get_or_init(|| build_suite(suite))
}

/// Build `tests/data/linux/<suite>.c` with musl-gcc and gcc into target/conformance/<suite>-<libc>. Each binary is
/// written under a temporary name and renamed, so concurrent test runs never see a half-written file.
fn build_suite(suite: &str) -> Vec<(String, PathBuf)> {
    common::require("gcc");
    common::require("musl-gcc");
    let root = questv::workspace_root();
    let src = root.join("tests/data/linux").join(format!("{suite}.c"));
    let dir = root.join("target").join("conformance");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let mut built = Vec::new();
    for libc in ["musl", "glibc"] {
        let name = format!("{suite}-{libc}");
        let out = dir.join(&name);
        let tmp = dir.join(format!("{name}.tmp{}", std::process::id()));
        if libc == "musl" {
            let o = Command::new("musl-gcc").args(["-static", "-O2", "-o"]).arg(&tmp).arg(&src).output().expect("run musl-gcc");
            assert!(o.status.success(), "musl-gcc -static -O2 {} failed:\n{}", src.display(), String::from_utf8_lossy(&o.stderr));
        } else {
            linux::compile_static(&src, &tmp).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::rename(&tmp, &out).unwrap_or_else(|e| panic!("cannot rename {}: {e}", tmp.display()));
        built.push((name, out));
    }
    built
}

/// What one run of `suite` must show in `rows` (the RESULT lines of one machine or one sandbox): a
/// `RESULT conformance suite=<suite> libc=<libc> ... failed=0` line for each of `libcs`, no check with `ok=0`,
/// and as many check lines as the summaries counted (each check reported exactly once).
fn check_suite(r: &Run, rows: &[ResultLine], suite: &str, check_name: &str, libcs: &[&str], place: &str) {
    let failed: Vec<String> = rows
        .iter()
        .filter(|l| l.name == check_name && l.get("ok") != Some("1"))
        .map(|l| format!("{}({})", l.get("name").unwrap_or("?"), l.get("why").unwrap_or("")))
        .collect();
    if !failed.is_empty() {
        r.fail(&format!("{place}: {} {suite} check(s) failed: {}", failed.len(), failed.join(" ")));
    }
    let mut counted = 0;
    for libc in libcs {
        let sums: Vec<&ResultLine> =
            rows.iter().filter(|l| l.name == "conformance" && l.get("suite") == Some(suite) && l.get("libc") == Some(libc)).collect();
        r.check(sums.len() == 1, &format!("{place}: expected one `RESULT conformance suite={suite} libc={libc}` line, got {}", sums.len()));
        let (passed, fails) = (sums[0].get_u64("passed"), sums[0].get_u64("failed"));
        r.check(fails == Some(0), &format!("{place}: the {libc} build reported failed={:?}", fails));
        r.check(passed.is_some_and(|p| p > 0), &format!("{place}: the {libc} build passed no checks"));
        counted += passed.unwrap_or(0);
    }
    let reported = rows.iter().filter(|l| l.name == check_name).count() as u64;
    r.check(reported == counted, &format!("{place}: {reported} check lines, but the summaries count {counted}"));
}

/// Linux 6.1 (Debian's kernel, fetched once into target/linux-cache as Fig 7 does) in QEMU, TCG on one host
/// thread, 2 vCPUs, running both builds of `suite` one after the other.
fn passes_on_linux(suite: &str, check_name: &str) {
    common::require("qemu-system-x86_64");
    let bins = binaries(suite);
    let cache = questv::workspace_root().join("target").join("linux-cache");
    let extra: Vec<(String, PathBuf)> = bins.to_vec();
    let cmd = bins.iter().map(|(n, _)| format!("{n}; s=$((s + $?))")).collect::<Vec<_>>().join("; ");
    let cmd = format!("s=0; {cmd}; exit $s");
    let guest = linux::build_initrd(&cache, None, &extra, &cmd, false).unwrap_or_else(|e| panic!("{e}"));
    let args = linux::qemu_args_on(&guest, "tcg,thread=single", questv::QEMU_CPU_MODEL, 2, 512, None);
    let run = linux::run_qemu(&args, Duration::from_secs(300), Some("LINUX DONE")).unwrap_or_else(|e| panic!("{e}"));
    let r = Run { code: if run.timed_out { -1 } else { 0 }, stdout: run.text(), stderr: run.stderr.clone() };
    r.check(!run.timed_out, "Linux did not finish the suite within 300 s");
    r.check(run.first("RESULT linux_boot").is_some_and(|(_, l)| l.contains("version=6.1")), "the guest is not Linux 6.1");
    let rows: Vec<ResultLine> = run.lines.iter().filter_map(|(_, l)| parse_result_line(l)).collect();
    check_suite(&r, &rows, suite, check_name, &["musl", "glibc"], &format!("Linux {}", guest.version));
    r.check(run.first("LINUX DONE").map(|(_, l)| l) == Some("LINUX DONE status=0"), "the suite's exit status on Linux was not 0");
}

/// One line per run for the log, so a failing test still shows how every build fared: the summaries and the
/// names of the failed checks.
fn summary(rows: &[ResultLine], check_name: &str) -> String {
    let sums: Vec<String> = rows
        .iter()
        .filter(|l| l.name == "conformance")
        .map(|l| format!("libc={} passed={} failed={}", l.get("libc").unwrap_or("?"), l.get("passed").unwrap_or("?"), l.get("failed").unwrap_or("?")))
        .collect();
    let failed: Vec<&str> = rows.iter().filter(|l| l.name == check_name && l.get("ok") != Some("1")).filter_map(|l| l.get("name")).collect();
    format!("{} [failed: {}]", if sums.is_empty() { "no summary".to_string() } else { sums.join(", ") }, failed.join(" "))
}

/// questv's SMP build on 2 CPUs, each build of `suite` in its own boot (both boot before either is judged).
fn passes_on_smp(suite: &str, check_name: &str) {
    let runs: Vec<(&str, Run)> = binaries(suite)
        .iter()
        .map(|(name, path)| (name.as_str(), common::boot(&["--cpus", "2", "--add", path.to_str().unwrap(), "--run", name])))
        .collect();
    let rows_of = |r: &Run| -> Vec<ResultLine> { r.stdout.lines().filter_map(parse_result_line).filter(|l| l.from_monitor()).collect() };
    for (name, r) in &runs {
        eprintln!("conformance: SMP, {name}: {}, QUESTV DONE status={:?}", summary(&rows_of(r), check_name), r.done_status());
    }
    for (name, r) in &runs {
        let libc = name.trim_start_matches(&format!("{suite}-"));
        check_suite(r, &rows_of(r), suite, check_name, &[libc], &format!("SMP, {name}"));
        r.check(r.done_status() == Some(0), &format!("{name} did not exit 0 on SMP"));
    }
}

/// questv's VT build on 2 CPUs: every sandbox runs `suite` and must pass it.
fn passes_in_sandboxes(suite: &str, check_name: &str) {
    let runs: Vec<(&str, Run)> = binaries(suite)
        .iter()
        .map(|(name, path)| (name.as_str(), common::vt("qemu", 2, &["--add", path.to_str().unwrap(), "--run", name])))
        .collect();
    let rows_of = |r: &Run, sb: u32| -> Vec<ResultLine> { r.stdout.lines().filter_map(parse_result_line).filter(|l| l.sandbox == Some(sb)).collect() };
    for (name, r) in &runs {
        for sb in 0..2u32 {
            eprintln!("conformance: sandbox {sb}, {name}: {}, status={:?}", summary(&rows_of(r, sb), check_name), common::status_of(r, u64::from(sb)));
        }
    }
    for (name, r) in &runs {
        check_monitor_ended_run(r, 2);
        let libc = name.trim_start_matches(&format!("{suite}-"));
        for sb in 0..2u32 {
            check_suite(r, &rows_of(r, sb), suite, check_name, &[libc], &format!("sandbox {sb}, {name}"));
            r.check(common::status_of(r, u64::from(sb)) == Some(0), &format!("{name} did not exit 0 in sandbox {sb}"));
        }
    }
}

#[test]
fn signals_pass_on_linux() {
    passes_on_linux("signals", "sigcheck");
}

#[test]
fn signals_pass_on_smp() {
    passes_on_smp("signals", "sigcheck");
}

#[test]
fn signals_pass_in_sandboxes() {
    passes_in_sandboxes("signals", "sigcheck");
}

#[test]
fn threads_pass_on_linux() {
    passes_on_linux("threads", "thrcheck");
}

#[test]
fn threads_pass_on_smp() {
    passes_on_smp("threads", "thrcheck");
}

#[test]
fn threads_pass_in_sandboxes() {
    passes_in_sandboxes("threads", "thrcheck");
}

#[test]
fn process_pass_on_linux() {
    passes_on_linux("process", "proccheck");
}

#[test]
fn process_pass_on_smp() {
    passes_on_smp("process", "proccheck");
}

#[test]
fn process_pass_in_sandboxes() {
    passes_in_sandboxes("process", "proccheck");
}

#[test]
fn files_pass_on_linux() {
    passes_on_linux("files", "filecheck");
}

#[test]
fn files_pass_on_smp() {
    passes_on_smp("files", "filecheck");
}

#[test]
fn files_pass_in_sandboxes() {
    passes_in_sandboxes("files", "filecheck");
}
