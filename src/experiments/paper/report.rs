//! The paper report's parts: [`Figure`] and [`Ratio`], reading CSVs back, checking a figure's files, the
//! provenance, the ratio table, `report.md`, the manifest, and publishing to docs/results/ and README.md.
#![forbid(unsafe_code)]

use super::{mmss, PaperOptions, Plan};
use crate::{workspace_root, Emulator};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One figure (or table) of the report.
#[derive(Debug, Clone, Default)]
pub struct Figure {
    pub id: &'static str,
    pub title: String,
    pub csv: Vec<PathBuf>,
    pub png: Vec<PathBuf>,
    /// The series the figure must contain (checked against its CSV by the test and by [`check_figure`]).
    pub series: Vec<String>,
    pub ratios: Vec<Ratio>,
    pub paragraph: String,
}

/// One measured ratio beside the paper's claim for it; `agrees` is `None` where the paper has nothing to hold
/// it against (a mechanism it did not measure, or a system that cannot run here).
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    pub name: String,
    pub value: f64,
    pub claim: String,
    pub agrees: Option<bool>,
}

pub(super) fn ratio(name: impl Into<String>, value: f64, claim: &str, agrees: Option<bool>) -> Ratio {
    Ratio { name: name.into(), value, claim: claim.into(), agrees }
}

/// A CSV line split into fields (`"..."` quoting with `""` for a quote, as [`crate::csv_field`] writes).
pub fn csv_split(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// A CSV file as header + rows; every row must have the header's width.
pub fn parse_csv(text: &str) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = csv_split(lines.next().ok_or("empty CSV")?);
    let mut rows = Vec::new();
    for (i, l) in lines.enumerate() {
        let r = csv_split(l);
        if r.len() != header.len() {
            return Err(format!("row {} has {} fields, the header {}: {l:?}", i + 2, r.len(), header.len()));
        }
        rows.push(r);
    }
    Ok((header, rows))
}

/// Every series named in `fig.series` appears in the first column of one of its CSVs; PNGs are PNGs.
pub fn check_figure(fig: &Figure) -> Result<(), String> {
    let mut first_col: Vec<String> = Vec::new();
    for c in &fig.csv {
        let text = std::fs::read_to_string(c).map_err(|e| format!("{}: {e}", c.display()))?;
        let (_, rows) = parse_csv(&text).map_err(|e| format!("{}: {e}", c.display()))?;
        if rows.is_empty() {
            return Err(format!("{}: no rows", c.display()));
        }
        first_col.extend(rows.into_iter().map(|r| r[0].clone()));
    }
    for s in &fig.series {
        if !first_col.iter().any(|c| c == s) {
            return Err(format!("{}: series {s:?} missing from {:?}", fig.id, fig.csv));
        }
    }
    for p in &fig.png {
        let b = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if !b.starts_with(b"\x89PNG\r\n\x1a\n") || b.len() < 1000 {
            return Err(format!("{}: not a PNG figure", p.display()));
        }
    }
    Ok(())
}

fn rel(dir: &Path, p: &Path) -> String {
    p.strip_prefix(dir).unwrap_or(p).display().to_string()
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

fn host_cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// Where and how the run happened, for the report's head (every input that shapes a number).
pub fn provenance(o: &PaperOptions, plan: &Plan) -> Vec<(String, String)> {
    let emulator = match o.emulator {
        Emulator::Qemu => first_line("qemu-system-x86_64", &["--version"]),
        Emulator::Bochs => "Bochs 2.7 (Debian)".into(),
    };
    vec![
        ("questv commit".into(), first_line("git", &["-C", &workspace_root().display().to_string(), "describe", "--always", "--dirty"])),
        ("emulator".into(), emulator),
        ("emulated CPU".into(), o.emulator.cpu_model().into()),
        ("host CPU".into(), format!("{} ({} threads)", host_cpu(), std::thread::available_parallelism().map_or(0, |n| n.get()))),
        ("mode".into(), if o.quick { "--quick".into() } else { "full".into() }),
        ("seeds".into(), format!("ping payload seed {} (every ping run); no other randomness", crate::ping::PingOptions::default().seed)),
        ("sizes".into(), format!(
            "forkwait {} x {} cores; Fig 8 {} pings at 3 ms on {} cores; Fig 11 {} pings at {} ms; msgbench {} trials per size; Fig 10 {} pings at {} ms; recovery {} pings at {} ms on {} cores",
            plan.fig7_iterations, plan.fig7_cpus, plan.net.count, plan.net.cpus, plan.net.count, plan.net.flood_interval_ms, plan.msgbench_trials,
            plan.fig10.count, plan.fig10.interval_ms, plan.recovery.count, plan.recovery.interval_ms, plan.recovery.cpus
        )),
    ]
}

/// The ratio table (markdown), shared by the report and the README.
pub fn ratio_table(figs: &[Figure]) -> String {
    let mut t = String::from("| figure | ratio | measured | the paper | agrees |\n|---|---|---|---|---|\n");
    for f in figs {
        for r in &f.ratios {
            let agrees = match r.agrees {
                Some(true) => "yes",
                Some(false) => "no",
                None => "n/a",
            };
            let _ = writeln!(t, "| {} | {} | {:.3} | {} | {agrees} |", f.id, r.name, r.value, r.claim);
        }
    }
    t
}

/// `report.md`: the provenance, the ratio table, then every figure with its paragraph. Figures are linked
/// relative to `dir` (the report's own directory).
pub fn report_md(dir: &Path, prov: &[(String, String)], figs: &[Figure], elapsed_s: f64) -> String {
    let mut r = String::from("# questv: the Quest-V paper's evaluation, reproduced\n\n");
    r.push_str("Generated by `cargo run --release -- paper` (do not edit: rerun it). Emulators make absolute times meaningless, so every number below is a ratio of two measurements taken in the same run.\n\n");
    for (k, v) in prov {
        let _ = writeln!(r, "- {k}: {v}");
    }
    let _ = writeln!(r, "- wall time: {}\n", mmss(elapsed_s));
    r.push_str("## Ratios\n\n");
    r.push_str(&ratio_table(figs));
    for f in figs {
        let _ = writeln!(r, "\n## {}\n", f.title);
        for p in &f.png {
            let _ = writeln!(r, "![{}]({})\n", f.id, rel(dir, p));
        }
        let _ = writeln!(r, "{}\n", f.paragraph);
        let csvs: Vec<String> = f.csv.iter().map(|c| format!("[{}]({})", rel(dir, c), rel(dir, c))).collect();
        let _ = writeln!(r, "Data: {}", csvs.join(", "));
    }
    r
}

/// The manifest a test (or a script) reads: one line per file, `figure,kind,path,series` (series `;`-joined).
pub fn manifest_csv(figs: &[Figure]) -> String {
    let mut m = String::from("figure,kind,path,series\n");
    for f in figs {
        for c in &f.csv {
            let _ = writeln!(m, "{},csv,{},{}", f.id, crate::csv_field(&c.display().to_string()), crate::csv_field(&f.series.join(";")));
        }
        for p in &f.png {
            let _ = writeln!(m, "{},png,{},", f.id, crate::csv_field(&p.display().to_string()));
        }
    }
    m
}

const README_BEGIN: &str = "<!-- paper-results:begin (written by `questv paper --publish`) -->";
const README_END: &str = "<!-- paper-results:end -->";

/// README.md with the Results section's generated part replaced (or appended, markers and all).
pub fn readme_with_results(readme: &str, body: &str) -> String {
    let block = format!("{README_BEGIN}\n{body}{README_END}");
    match (readme.find(README_BEGIN), readme.find(README_END)) {
        (Some(a), Some(b)) if b > a => format!("{}{block}{}", &readme[..a], &readme[b + README_END.len()..]),
        _ => format!("{}\n## Results\n\n{block}\n", readme.trim_end()),
    }
}

pub(super) fn publish(dir: &Path, figs: &[Figure], report: &str, prov: &[(String, String)]) -> Result<PathBuf, String> {
    let root = workspace_root();
    let docs = root.join("docs").join("results");
    let _ = std::fs::remove_dir_all(&docs);
    std::fs::create_dir_all(&docs).map_err(|e| format!("{}: {e}", docs.display()))?;
    for f in figs {
        for p in f.png.iter().chain(&f.csv) {
            let name = p.file_name().ok_or("no file name")?;
            std::fs::copy(p, docs.join(name)).map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    std::fs::write(docs.join("report.md"), report.replace(&format!("{}/", dir.display()), "")).map_err(|e| e.to_string())?;
    let mut body = String::from("Regenerated by `cargo run --release -- paper --publish` (full report: [docs/results/report.md](docs/results/report.md)). ");
    let get = |k: &str| prov.iter().find(|p| p.0 == k).map_or("?", |p| p.1.as_str()).to_string();
    let _ = writeln!(body, "Run: {} on {}, emulated CPU `{}`, host {}, {}.\n", get("mode"), get("emulator"), get("emulated CPU"), get("host CPU"), get("questv commit"));
    body.push_str(&ratio_table(figs));
    body.push('\n');
    for f in figs {
        if let Some(p) = f.png.first() {
            let _ = writeln!(body, "![{}](docs/results/{})", f.title, p.file_name().and_then(|n| n.to_str()).unwrap_or(""));
        }
    }
    let readme_path = root.join("README.md");
    let readme = std::fs::read_to_string(&readme_path).map_err(|e| e.to_string())?;
    std::fs::write(&readme_path, readme_with_results(&readme, &body)).map_err(|e| e.to_string())?;
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_round_trip() {
        let fields = ["VT, one guest", "plain", "say \"hi\"", ""];
        let line = fields.iter().map(|f| crate::csv_field(f)).collect::<Vec<_>>().join(",");
        assert_eq!(csv_split(&line), fields);
        assert!(parse_csv("a,b\n1,2\n3\n").is_err());
        assert_eq!(parse_csv("a,b\n\"x,y\",2\n").unwrap().1, vec![vec!["x,y".to_string(), "2".into()]]);
    }

    #[test]
    fn readme_section_is_replaced_or_appended() {
        let once = readme_with_results("# x\n\ntext\n", "A\n");
        assert!(once.contains("## Results") && once.contains(README_BEGIN) && once.contains("A\n"));
        let twice = readme_with_results(&once, "B\n");
        assert!(twice.contains("B\n") && !twice.contains("A\n"));
        assert_eq!(twice.matches("## Results").count(), 1);
    }

    #[test]
    fn report_links_figures_relative_to_its_directory() {
        let dir = Path::new("/r");
        let f = Figure { id: "fig7", title: "Fig 7".into(), csv: vec!["/r/a.csv".into()], png: vec!["/r/a.png".into()], ratios: vec![ratio("VT / SMP", 1.01, "about 1", Some(true))], paragraph: "p".into(), ..Figure::default() };
        let r = report_md(dir, &[("emulator".into(), "QEMU".into())], &[f], 61.0);
        assert!(r.contains("![fig7](a.png)") && r.contains("| fig7 | VT / SMP | 1.010 | about 1 | yes |") && r.contains("wall time: 1:01"));
    }
}
