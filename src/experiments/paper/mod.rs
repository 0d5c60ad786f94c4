//! `paper`: the paper's whole evaluation (§4: Table 1, Figs 6–11) in one command, with Linux 6.1 beside questv
//! where the paper had Linux, a progress display, CSV + PNG per figure and `target/results/report.md`.
//!
//! Each experiment is one of the runner's own (`recovery`, `compare`, `netfig`, `msgbench`, `fig10`) with the
//! sizes of [`Plan`]; Fig 7 adds Linux (the same `forkwait.c`, compiled statically against a four-line compat
//! header, timed with the TSC in the guest, one instance per vCPU pinned with `taskset`, in the same QEMU with
//! the same `-smp`, CPU model and TCG threading). The report states ratios measured in the same run, never
//! absolute emulator times, next to what the paper claims.
//!
//! The parts: [`figures`] (and [`fig7`], the largest) runs each experiment and turns its output into a [`Figure`] (ratios against the paper's
//! claims, a paragraph from the data); [`report`] writes `report.md`, the manifest and the README section. This
//! module holds the options, the [`Plan`] and the run with its progress display.
#![forbid(unsafe_code)]

pub mod fig7;
pub mod figures;
pub mod report;

pub use report::{check_figure, csv_split, manifest_csv, parse_csv, provenance, ratio_table, readme_with_results, report_md, Figure, Ratio};

use crate::experiments::fig10::Fig10Options;
use crate::experiments::netfig::{self, NetFigOptions};
use crate::experiments::recoveryfig::RecoveryFigOptions;
use crate::{results_dir, Emulator};
use fig7::fig7;
use figures::{fig10, fig11, fig8, fig9, table1_fig6};
use report::publish;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaperOptions {
    pub emulator: Emulator,
    pub quick: bool,
    /// Also copy the report and its figures to docs/results/ and rewrite README.md's Results section.
    pub publish: bool,
    /// Skip the Linux baselines (Figs 7 and 11), e.g. on a machine without apt.
    pub linux: bool,
}

impl Default for PaperOptions {
    fn default() -> Self {
        PaperOptions { emulator: Emulator::Qemu, quick: false, publish: false, linux: true }
    }
}

/// The sizes of every experiment. `--quick` is sized to finish in under 10 minutes on a 2-core host (QEMU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub fig7_cpus: u32,
    pub fig7_iterations: u32,
    pub net: NetFigOptions,
    pub msgbench_cpus: u32,
    pub msgbench_trials: u32,
    pub fig10: Fig10Options,
    pub recovery: RecoveryFigOptions,
}

impl Plan {
    pub fn new(o: &PaperOptions) -> Plan {
        let bochs = o.emulator == Emulator::Bochs;
        let mut recovery = RecoveryFigOptions { emulator: o.emulator, ..RecoveryFigOptions::default() };
        let mut net = NetFigOptions { emulator: o.emulator, linux: o.linux, ..NetFigOptions::default() };
        let mut fig10 = Fig10Options { emulator: o.emulator, ..Fig10Options::default() };
        let (mut fig7_cpus, mut fig7_iterations, mut msgbench_trials) = (4, 40_000, 5000);
        if bochs {
            // Bochs runs a few million instructions a second: two cores, as `recovery` does there.
            recovery.cpus = 2;
            net.cpus = 2;
        }
        if o.quick {
            (fig7_cpus, fig7_iterations, msgbench_trials) = (2, 2000, 300);
            net.count = 100;
            recovery.count = 60;
            (fig10.count, fig10.interval_ms, fig10.break_after) = (40, 250, 12);
        }
        Plan { fig7_cpus, fig7_iterations, net, msgbench_cpus: 2, msgbench_trials, fig10, recovery }
    }

    /// The steps in the order they run, with a first guess at their duration (seconds, QEMU on a 2-core host)
    /// that the progress display corrects as steps finish.
    pub fn steps(&self, o: &PaperOptions) -> Vec<Step> {
        let scale = if o.emulator == Emulator::Bochs { 8 } else { 1 };
        let q = o.quick;
        let linux = o.linux && o.emulator == Emulator::Qemu;
        [
            (StepId::Table1Fig6, "Table 1 + Fig 6: NIC driver recovery (driver switch, restart, remote, reboot)", if q { 45 } else { 70 }),
            (StepId::Fig7, "Fig 7: forkwait, SMP vs VT (trapped and passed-through APIC) vs Linux", if q { 50 + if linux { 20 } else { 0 } } else { 480 }),
            (StepId::Fig8, "Fig 8: NIC interrupts and round trips, SMP vs VT", if q { 30 } else { 60 }),
            (StepId::Fig9, "Fig 9: message passing, 3 VCPU set-ups x 2 builds", if q { 100 } else { 840 }),
            (StepId::Fig10, "Fig 10: sandbox isolation across a driver failure", if q { 25 } else { 35 }),
            (StepId::Fig11, "Fig 11: shared-NIC ping flood, with Linux", if q { 60 } else { 120 }),
        ]
        .into_iter()
        .map(|(id, title, s)| Step { id, title, estimate_s: s * scale })
        .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepId {
    Table1Fig6,
    Fig7,
    Fig8,
    Fig9,
    Fig10,
    Fig11,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub id: StepId,
    pub title: &'static str,
    pub estimate_s: u64,
}

/// Seconds left: the remaining steps' estimates, scaled by how the finished steps compared with theirs.
pub fn time_left(estimates: &[u64], finished: usize, finished_actual_s: f64, running_elapsed_s: f64) -> f64 {
    let done_est: u64 = estimates[..finished].iter().sum();
    let factor = if finished > 0 && done_est > 0 { (finished_actual_s / done_est as f64).clamp(0.25, 4.0) } else { 1.0 };
    let rest: u64 = estimates[finished..].iter().sum();
    (rest as f64 * factor - running_elapsed_s).max(0.0)
}

pub(super) fn mmss(s: f64) -> String {
    let s = s.max(0.0) as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

/// Run every experiment; returns the summary printed at the end and whether every one succeeded.
pub fn paper(o: &PaperOptions) -> Result<(String, bool), String> {
    let plan = Plan::new(o);
    let steps = plan.steps(o);
    let estimates: Vec<u64> = steps.iter().map(|s| s.estimate_s).collect();
    let dir = results_dir()?;
    let start = Instant::now();
    let mut finished_s = 0.0;
    let mut figs: Vec<Figure> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let n = steps.len();
    // A ticker: what runs, how long it has run, how long is left (every 30 s while a step is running).
    let current: Arc<Mutex<(usize, Instant, f64)>> = Arc::new(Mutex::new((0, Instant::now(), 0.0)));
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (current, stop, steps, estimates) = (current.clone(), stop.clone(), steps.clone(), estimates.clone());
        std::thread::spawn(move || {
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                if last.elapsed() < Duration::from_secs(30) {
                    continue;
                }
                last = Instant::now();
                let (i, t, done_s) = *current.lock().unwrap();
                let left = time_left(&estimates, i, done_s, t.elapsed().as_secs_f64());
                eprintln!("questv: paper [{}/{}] {} ... {} of about {}; about {} left in all", i + 1, steps.len(), steps[i].title, mmss(t.elapsed().as_secs_f64()), mmss(steps[i].estimate_s as f64), mmss(left));
            }
        })
    };
    for (i, step) in steps.iter().enumerate() {
        *current.lock().unwrap() = (i, Instant::now(), finished_s);
        eprintln!(
            "questv: paper [{}/{n}] {} (about {}; {} elapsed, about {} left in all)",
            i + 1,
            step.title,
            mmss(step.estimate_s as f64),
            mmss(start.elapsed().as_secs_f64()),
            mmss(time_left(&estimates, i, finished_s, 0.0))
        );
        let t = Instant::now();
        let r = match step.id {
            StepId::Table1Fig6 => table1_fig6(&plan),
            StepId::Fig7 => fig7(o, &plan),
            StepId::Fig8 => fig8(&plan),
            StepId::Fig9 => fig9(o, &plan),
            StepId::Fig10 => fig10(&plan),
            StepId::Fig11 => fig11(&plan),
        };
        finished_s += t.elapsed().as_secs_f64();
        match r.and_then(|fs| {
            for f in &fs {
                check_figure(f)?;
            }
            Ok(fs)
        }) {
            Ok(fs) => {
                eprintln!("questv: paper [{}/{n}] done in {}", i + 1, mmss(t.elapsed().as_secs_f64()));
                figs.extend(fs);
            }
            Err(e) => {
                eprintln!("questv: paper [{}/{n}] FAILED after {}: {e}", i + 1, mmss(t.elapsed().as_secs_f64()));
                failures.push(format!("{}: {}", step.title, e.lines().next().unwrap_or("")));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    let prov = provenance(o, &plan);
    let report = report_md(&dir, &prov, &figs, start.elapsed().as_secs_f64());
    let report = if failures.is_empty() { report } else { format!("{report}\n## Failed\n\n{}\n", failures.iter().map(|f| format!("- {f}")).collect::<Vec<_>>().join("\n")) };
    let report_path = dir.join("report.md");
    std::fs::write(&report_path, &report).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("paper-manifest.csv"), manifest_csv(&figs)).map_err(|e| e.to_string())?;
    let mut text = ratio_table(&figs);
    for f in &figs {
        for r in &f.ratios {
            let agrees = r.agrees.map_or("na", |a| if a { "yes" } else { "no" });
            let _ = writeln!(text, "RESULT paper figure={} ratio={} value={:.4} agrees={agrees}", f.id, netfig::setup_id(&r.name), r.value);
        }
    }
    if o.publish && failures.is_empty() {
        let docs = publish(&dir, &figs, &report, &prov)?;
        let _ = writeln!(text, "published: {} and README.md's Results section", docs.display());
    }
    let _ = writeln!(text, "RESULT paper_done figures={} failed={} wall_s={:.0} report={}", figs.len(), failures.len(), start.elapsed().as_secs_f64(), report_path.display());
    Ok((text, failures.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_scales_by_what_finished_steps_took() {
        let e = [10, 20, 30];
        assert_eq!(time_left(&e, 0, 0.0, 0.0), 60.0);
        // The first step took twice its estimate: the rest will too.
        assert_eq!(time_left(&e, 1, 20.0, 0.0), 100.0);
        assert_eq!(time_left(&e, 1, 20.0, 30.0), 70.0);
        assert_eq!(time_left(&e, 3, 60.0, 0.0), 0.0);
    }

    #[test]
    fn quick_plan_is_smaller_and_bochs_uses_two_cores() {
        let full = Plan::new(&PaperOptions::default());
        let quick = Plan::new(&PaperOptions { quick: true, ..PaperOptions::default() });
        assert!(quick.fig7_iterations < full.fig7_iterations && quick.msgbench_trials < full.msgbench_trials);
        assert_eq!(full.fig7_iterations, 40_000, "the paper's iteration count");
        let est: u64 = quick.steps(&PaperOptions { quick: true, ..PaperOptions::default() }).iter().map(|s| s.estimate_s).sum();
        assert!(est < 600, "--quick must plan for under 10 minutes ({est} s)");
        let bochs = Plan::new(&PaperOptions { emulator: Emulator::Bochs, ..PaperOptions::default() });
        assert_eq!((bochs.recovery.cpus, bochs.net.cpus), (2, 2));
    }
}
