//! Shared helpers for the boot tests: run the real `questv` runner binary and parse its output.
#![allow(dead_code)]

use questv::{parse_done_line, parse_result_line, ResultLine};
use std::process::Command;

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Every `RESULT name` line, the kernel's own and those relayed from sandboxes (`[sN] RESULT ...`).
    pub fn results(&self, name: &str) -> Vec<ResultLine> {
        self.stdout.lines().filter_map(parse_result_line).filter(|r| r.name == name).collect()
    }
    /// `RESULT name` lines the monitor (or the SMP kernel) printed itself: what a sandbox prints never counts.
    pub fn monitor_results(&self, name: &str) -> Vec<ResultLine> {
        self.results(name).into_iter().filter(|r| r.from_monitor()).collect()
    }
    /// `RESULT name` lines relayed from sandbox `n`.
    pub fn sandbox_results(&self, name: &str, n: u32) -> Vec<ResultLine> {
        self.results(name).into_iter().filter(|r| r.sandbox == Some(n)).collect()
    }
    pub fn done_status(&self) -> Option<i32> {
        self.stdout.lines().find_map(parse_done_line)
    }
    /// How many `QUESTV DONE` lines ended the run (the runner stops at the first; a second would be a bug).
    pub fn done_lines(&self) -> usize {
        self.stdout.lines().filter(|l| parse_done_line(l).is_some()).count()
    }
    /// Panic with the whole output, so a CI log shows what the guest printed.
    pub fn fail(&self, why: &str) -> ! {
        panic!("{why}\n--- exit code {} ---\n--- stdout ---\n{}\n--- stderr ---\n{}", self.code, self.stdout, self.stderr)
    }
    pub fn check(&self, ok: bool, why: &str) {
        if !ok {
            self.fail(why);
        }
    }
}

/// `before` and `after` present and equal, `leaked=0`: a check that fails on missing fields.
pub fn no_leak(f: &ResultLine) -> bool {
    matches!((f.get_u64("before"), f.get_u64("after"), f.get_u64("leaked")), (Some(b), Some(a), Some(0)) if a == b)
}

/// Fail (never skip) when the emulator tools are missing: CI must have installed them.
pub fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "{tool} is not installed: run .ci/run (it installs the Debian packages) or see README.md");
}

pub fn boot(args: &[&str]) -> Run {
    require("grub-mkrescue");
    let out = Command::new(env!("CARGO_BIN_EXE_questv"))
        .arg("boot")
        .args(args)
        .output()
        .expect("run questv");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
