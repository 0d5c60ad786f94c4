//! `questv paper --quick`: every figure of the paper's evaluation and the report, from one command. The test
//! checks what a reader gets: the files exist, every CSV parses (quoted fields, one width), every PNG is a PNG,
//! every figure has the series the paper's figure has (Linux beside questv in Figs 7 and 11), and the report
//! embeds every figure and states a ratio for each.
mod common;
use questv::paper::parse_csv;
use std::collections::BTreeMap;

/// The series each figure must contain: (figure, CSV column, values).
const EXPECTED: &[(&str, &str, &[&str])] = &[
    ("table1", "mode", &["local_driver_switch", "local_restart", "remote"]),
    ("fig6", "run", &["local_driver_switch", "local_restart", "remote"]),
    ("fig7", "system", &["smp", "vt", "vt_passthrough", "linux"]),
    ("fig8", "build", &["smp", "vt"]),
    ("fig9", "build", &["smp", "vt"]),
    ("fig9", "vcpu", &["none", "hi", "lo"]),
    ("fig9", "mode", &["polled", "ipi"]),
    ("fig10", "series", &["messages_sandbox0", "messages_sandbox2", "messages_sandbox3", "icmp_replies_sandbox0"]),
    ("fig11", "setup", &["No VT (SMP)", "VT, one guest", "VT, two guests sharing the NIC: guest 1", "VT, two guests sharing the NIC: guest 2", "Linux 6.1 (Debian + busybox)"]),
];

#[test]
fn paper_quick_writes_every_figure_and_the_report() {
    common::require("qemu-system-x86_64");
    common::require("grub-mkrescue");
    let t = std::time::Instant::now();
    let r = common::questv(&["paper", "--quick"]);
    r.check(r.code == 0, "paper --quick failed");
    r.check(t.elapsed().as_secs() < 600, "paper --quick took 10 minutes or more");
    r.check(r.stderr.contains("questv: paper [6/6]") && r.stderr.contains("left in all"), "no progress display");
    let done = r.results("paper_done");
    r.check(done.len() == 1 && done[0].get_u64("failed") == Some(0) && done[0].get_u64("figures") == Some(7), "expected 7 figures, none failed");

    let results = questv::workspace_root().join("target/results");
    let manifest = std::fs::read_to_string(results.join("paper-manifest.csv")).expect("paper-manifest.csv");
    let (_, rows) = parse_csv(&manifest).unwrap_or_else(|e| r.fail(&format!("manifest: {e}")));
    let mut csvs: BTreeMap<String, Vec<(Vec<String>, Vec<Vec<String>>)>> = BTreeMap::new();
    let mut pngs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in &rows {
        let (fig, kind, path) = (&row[0], &row[1], &row[2]);
        let bytes = std::fs::read(path).unwrap_or_else(|e| r.fail(&format!("{path}: {e}")));
        match kind.as_str() {
            "csv" => {
                let parsed = parse_csv(&String::from_utf8_lossy(&bytes)).unwrap_or_else(|e| r.fail(&format!("{path}: {e}")));
                r.check(!parsed.1.is_empty(), &format!("{path}: no rows"));
                csvs.entry(fig.clone()).or_default().push(parsed);
            }
            "png" => {
                r.check(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 5000, &format!("{path}: not a drawn PNG"));
                pngs.entry(fig.clone()).or_default().push(std::path::Path::new(path).file_name().unwrap().to_string_lossy().into());
            }
            k => r.fail(&format!("unknown manifest kind {k}")),
        }
    }
    for (fig, column, values) in EXPECTED {
        let tables = csvs.get(*fig).unwrap_or_else(|| r.fail(&format!("{fig}: no CSV")));
        r.check(pngs.get(*fig).is_some_and(|p| !p.is_empty()), &format!("{fig}: no PNG"));
        let seen: Vec<&String> = tables
            .iter()
            .filter_map(|(h, rows)| h.iter().position(|c| c == column).map(|i| rows.iter().map(move |row| &row[i])))
            .flatten()
            .collect();
        for v in *values {
            r.check(seen.iter().any(|s| s == v), &format!("{fig}: series {column}={v} missing"));
        }
    }
    let report = std::fs::read_to_string(results.join("report.md")).expect("report.md");
    for (fig, files) in &pngs {
        for f in files {
            r.check(report.contains(&format!("]({f})")), &format!("report.md does not embed {fig}'s {f}"));
        }
        r.check(report.lines().any(|l| l.starts_with(&format!("| {fig} |"))), &format!("report.md has no ratio for {fig}"));
    }
    for k in ["emulated CPU: qemu64,+svm,+npt", "seeds:", "mode: --quick", "| fig7 | Linux / SMP cycles per iteration |", "| fig11 | linux_6.1_debian_busybox: median RTT / No VT |"] {
        r.check(report.contains(k), &format!("report.md does not say {k:?}"));
    }
    // Ratios, not times: every row has a finite measured value and a verdict; the machine-readable lines agree.
    let rows: Vec<&str> = report.lines().filter(|l| (l.starts_with("| fig") || l.starts_with("| table")) && !l.starts_with("| figure |")).collect();
    for l in &rows {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        let v: f64 = cells.get(3).and_then(|c| c.parse().ok()).unwrap_or(f64::NAN);
        r.check(v.is_finite() && v >= 0.0, &format!("bad ratio row {l:?}"));
        r.check(cells.get(5).is_some_and(|a| ["yes", "no", "n/a"].contains(a)), &format!("no verdict in {l:?}"));
    }
    let lines = r.results("paper");
    r.check(lines.len() == rows.len() && lines.iter().all(|p| p.get("agrees").is_some()), "RESULT paper lines do not match the report's table");
    // The functional claim must hold (timings are the benchmark's business, not the test's): the driver switch
    // is online (its downtime a small fraction of a reboot, with a 5x margin). Fig 10's isolation is checked where
    // it is functional (tests/recovery.rs: bystanders' channels untouched, messages after the fault); its dip
    // ratios read one-second message counts, which a quick run has too few of to judge a lumpy receiver by, so
    // here they only have to be there, with a verdict.
    let fig = |name: &str, ratio: &str| lines.iter().find(|p| p.get("figure") == Some(name) && p.get("ratio") == Some(ratio)).cloned();
    r.check(fig("fig6", "local_driver_switch_downtime_reboot").is_some_and(|p| p.get("agrees") == Some("yes")), "fig6 local_driver_switch_downtime_reboot does not agree with the paper");
    for ratio in ["only_sandbox_0_dipped_1_yes", "lowest_bystander_lowest_second_after_the_fault_lowest_before"] {
        r.check(fig("fig10", ratio).is_some_and(|p| matches!(p.get("agrees"), Some("yes" | "no"))), &format!("fig10 {ratio} missing or without a verdict"));
    }
}
