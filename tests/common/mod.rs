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

/// Run the `questv` runner with `args` (in the working directory `cwd`, if given).
pub fn questv_in(args: &[&str], cwd: Option<&std::path::Path>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_questv"));
    cmd.args(args);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let out = cmd.output().expect("run questv");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn questv(args: &[&str]) -> Run {
    questv_in(args, None)
}

pub fn boot(args: &[&str]) -> Run {
    require("grub-mkrescue");
    questv(&[&["boot"], args].concat())
}

/// The VT build in `emulator` ("qemu": AMD SVM backend; "bochs": Intel VMX backend) on `cpus` cores.
pub fn vt(emulator: &str, cpus: u32, args: &[&str]) -> Run {
    require(if emulator == "bochs" { "bochs" } else { "qemu-system-x86_64" });
    let timeout = if emulator == "bochs" { "600" } else { "180" };
    let cpus = cpus.to_string();
    boot(&[&["--vt", "--emulator", emulator, "--cpus", &cpus, "--timeout", timeout], args].concat())
}

/// The run ended the normal way: the monitor (never a sandbox) printed exactly one `QUESTV DONE`, and one
/// `RESULT sandbox_done` per sandbox.
pub fn check_monitor_ended_run(r: &Run, sandboxes: u64) {
    r.check(r.done_status().is_some() && r.done_lines() == 1, "the monitor must print QUESTV DONE exactly once");
    r.check(!r.stdout.lines().any(|l| l.starts_with("KERNEL PANIC")), "the monitor panicked");
    let mut done: Vec<u64> = r.monitor_results("sandbox_done").iter().filter_map(|d| d.get_u64("sandbox")).collect();
    done.sort();
    r.check(done == (0..sandboxes).collect::<Vec<_>>(), "expected one monitor RESULT sandbox_done per sandbox");
}

pub fn status_of(r: &Run, sandbox: u64) -> Option<i64> {
    let d = r.monitor_results("sandbox_done");
    d.iter().find(|d| d.get_u64("sandbox") == Some(sandbox)).and_then(|d| d.get("status")).and_then(|s| s.parse().ok())
}

/// The monitor's `RESULT vmexits` line for `sandbox`.
pub fn exits_of(r: &Run, sandbox: u64) -> Option<ResultLine> {
    r.monitor_results("vmexits").into_iter().find(|e| e.get_u64("sandbox") == Some(sandbox))
}

/// Exits a well-behaved sandbox may take while it runs (outside boot's CPUIDs and the console hypercalls): the
/// EOIs of its timer ticks when its xAPIC page is trapped, and the watchdog's periodic exits.
pub fn periodic_exits(e: &ResultLine) -> u64 {
    e.get_u64("apic_write").unwrap_or(0) + e.get_u64("watchdog").unwrap_or(0)
}

/// Sandbox 0 attacks (kernel-mode test hook); sandboxes 1–3 run forkwait 100 and must not notice: each reports
/// its loop with no exits beyond its periodic ones (timer EOIs on a trapped xAPIC, the watchdog's), leaks
/// nothing and ends with status 0; the machine never resets; only the monitor ends the run.
pub fn attack(emulator: &str, kind: &str, extra: &[&str]) -> Run {
    attack_beside(emulator, kind, extra, 100)
}

/// [`attack`] with bystanders running `forkwait iterations` (a longer run spans more of the monitors'
/// periodic events).
pub fn attack_beside(emulator: &str, kind: &str, extra: &[&str], iterations: u64) -> Run {
    let run = format!("ktest attack {kind} -- forkwait {iterations}");
    let r = vt(emulator, 4, &[extra, &["--run", &run]].concat());
    r.check(r.code == 0 || r.code == 1, "the machine reset, hung or the monitor panicked");
    check_monitor_ended_run(&r, 4);
    for s in 1..4u32 {
        let fw = r.sandbox_results("forkwait", s);
        r.check(fw.len() == 1 && fw[0].get_u64("iterations") == Some(iterations), "a bystander did not finish its forkwait");
        let e = exits_of(&r, u64::from(s));
        r.check(e.is_some(), "no exit report for a bystander");
        r.check(fw[0].get_u64("vmexits").is_some_and(|x| x <= periodic_exits(e.as_ref().unwrap())), "a bystander took VM exits during forkwait");
        let frames = r.sandbox_results("frames", s);
        r.check(frames.len() == 1 && no_leak(&frames[0]), "a bystander leaked frames");
        r.check(status_of(&r, u64::from(s)) == Some(0), "a bystander sandbox failed");
    }
    r.check(!r.stdout.contains("not_contained"), "an attack was not contained");
    r
}

/// The attack stopped sandbox 0 with `reason`; nothing else faulted.
pub fn stopped(r: &Run, reason: &str) {
    let f = r.monitor_results("sandbox_fault");
    r.check(f.len() == 1, "expected exactly one sandbox fault");
    r.check(f[0].get_u64("sandbox") == Some(0) && f[0].get("reason") == Some(reason) && f[0].get("action") == Some("stopped"), &format!("fault not reported as sandbox 0's {reason}"));
    r.check(status_of(r, 0) == Some(137), "sandbox 0 must be reported stopped (status 137)");
    r.check(r.code == 1, "the run must report sandbox 0's failure");
}

/// The attack was refused and recorded: sandbox 0 says so, the monitor counted it, and sandbox 0 went on to
/// finish forkwait itself.
pub fn refused(r: &Run, attack_kind: &str, refusal_kind: &str) {
    let a = r.sandbox_results("attack", 0);
    r.check(a.iter().any(|x| x.get("kind") == Some(attack_kind) && x.get("outcome") == Some("refused")), "sandbox 0 did not see its attack refused");
    let refusals = r.monitor_results("sandbox_refused");
    r.check(
        refusals.iter().any(|x| x.get_u64("sandbox") == Some(0) && x.get("kind") == Some(refusal_kind) && x.get_u64("count").is_some_and(|c| c > 0)),
        "the monitor did not record the refusal",
    );
    r.check(refusals.iter().all(|x| x.get_u64("sandbox") == Some(0)), "a bystander had refusals");
    r.check(r.monitor_results("sandbox_fault").is_empty(), "a refused attack must not stop anyone");
    r.check(r.sandbox_results("forkwait", 0).len() == 1 && status_of(r, 0) == Some(0), "sandbox 0 should survive and finish forkwait too");
    r.check(r.code == 0, "the run should succeed");
}

/// A memory attack: sandbox 0 is stopped for a second-stage violation at exactly the address it attacked.
pub fn memory_attack(emulator: &str, kind: &str) {
    let r = attack(emulator, kind, &[]);
    stopped(&r, "memory_violation");
    let target = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("[s0] ktest attack: sandbox 0 writes to host-physical 0x"))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| u64::from_str_radix(t, 16).ok());
    r.check(target.is_some(), "sandbox 0 did not say what it attacked");
    let f = &r.monitor_results("sandbox_fault")[0];
    r.check(f.get_u64("gpa") == target, "fault address is not the attacked address");
    r.check(f.get("access") == Some("write"), "the violation should be a write");
}

/// The `RESULT ping` line of guest `ip`.
pub fn ping_of(r: &Run, ip: &str) -> Option<ResultLine> {
    r.results("ping").into_iter().find(|g| g.get("guest") == Some(ip))
}

/// Guest `ip` lost no request, or the ones it lost were one outage that ended: every later request was
/// answered (`RESULT ping_outage` covers all of them; the runner prints it only for an outage a reply ended).
pub fn one_outage_that_ended(r: &Run, ip: &str) -> bool {
    let Some(lost) = ping_of(r, ip).and_then(|g| g.get_u64("lost")) else { return false };
    lost == 0 || r.results("ping_outage").iter().any(|o| o.get("guest") == Some(ip) && o.get_u64("lost") == Some(lost))
}

/// How much longer guest `faulted` went without a reply than guest `bystander` in the same run. A stall of the
/// whole emulator (a loaded host descheduling QEMU's threads; CI saw 265 ms) silences both alike and cancels
/// out: what is left is what the recovery itself cost the faulted guest's clients.
pub fn silence_beyond_bystander_us(r: &Run, faulted: &str, bystander: &str) -> Option<u64> {
    let gap = |ip: &str| ping_of(r, ip).and_then(|g| g.get_u64("max_gap_us"));
    Some(gap(faulted)?.saturating_sub(gap(bystander)?))
}
