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
    pub fn results(&self, name: &str) -> Vec<ResultLine> {
        self.stdout.lines().filter_map(parse_result_line).filter(|r| r.name == name).collect()
    }
    pub fn done_status(&self) -> Option<i32> {
        self.stdout.lines().find_map(parse_done_line)
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
