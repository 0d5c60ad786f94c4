//! Boot the SMP kernel in QEMU and check what it reports.
mod common;
use common::{boot, require};

fn qemu(args: &[&str]) -> common::Run {
    require("qemu-system-x86_64");
    boot(&[&["--emulator", "qemu", "--timeout", "120"], args].concat())
}

fn check_boot(cpus: u32) {
    let r = qemu(&["--cpus", &cpus.to_string()]);
    r.check(r.code == 0, "boot did not succeed");
    r.check(r.done_status() == Some(0), "no QUESTV DONE status=0");
    let b = r.results("boot");
    r.check(b.len() == 1, "expected one RESULT boot line");
    r.check(b[0].get_u64("cpus_online") == Some(u64::from(cpus)), "wrong cpus_online");
    r.check(b[0].get("mode") == Some("smp"), "wrong mode");
    // The scheduler ran all its test threads on every CPU (which needs preemption: they never yield).
    let sched = r.results("sched");
    for c in 0..u64::from(cpus) {
        let line = sched.iter().find(|s| s.get_u64("cpu") == Some(c));
        r.check(line.is_some_and(|s| s.get_u64("threads_ran") == Some(3)), &format!("cpu {c}: threads did not all run"));
        r.check(line.is_some_and(|s| s.get_u64("preemptions").unwrap_or(0) > 0), &format!("cpu {c}: no preemption"));
    }
    let ipi = r.results("ipi");
    r.check(ipi.len() == 1, "expected one RESULT ipi line");
    let (sent, received) = (ipi[0].get_u64("sent").unwrap(), ipi[0].get_u64("received").unwrap());
    r.check(sent > 0 && sent == received, "IPIs lost");
    r.check(ipi[0].get_u64("targets") == Some(u64::from(cpus)), "IPI test did not reach every CPU");
}

#[test]
fn boots_on_one_cpu() {
    check_boot(1);
}

#[test]
fn boots_on_four_cpus() {
    check_boot(4);
}

fn check_exception(cpus: &str, kind: &str, vector: u64, mnemonic: &str) -> common::Run {
    let r = qemu(&["--cpus", cpus, "--run", &format!("ktest fault {kind}")]);
    r.check(r.code == 3, "a kernel exception must end the run with exit code 3 (panic)");
    let e = r.results("exception");
    r.check(e.len() == 1, "expected one RESULT exception line");
    r.check(e[0].get_u64("vector") == Some(vector), "wrong vector");
    r.check(e[0].get("rip").is_some() && e[0].get("cr2").is_some(), "dump lacks rip/cr2");
    r.check(r.stdout.contains(&format!("EXCEPTION #{mnemonic}")), "no readable exception line");
    r.check(r.stdout.contains("RIP=0x") && r.stdout.contains("RAX="), "no register dump");
    r.check(r.stdout.contains("KERNEL PANIC on cpu"), "no panic line");
    r.check(r.done_status().is_none(), "a panicking kernel must not report DONE");
    r
}

#[test]
fn page_fault_is_dumped_and_fails_the_run() {
    let r = check_exception("2", "page", 14, "PF");
    let e = &r.results("exception")[0];
    r.check(e.get_u64("cr2") == Some(0x7fff_dead_0000), "CR2 is not the faulting address");
    r.check(r.stdout.contains("page not present, write, supervisor"), "#PF error code not decoded");
}

#[test]
fn invalid_opcode_is_dumped_and_fails_the_run() {
    check_exception("1", "ud", 6, "UD");
}

#[test]
fn fault_on_an_application_processor_halts_the_machine() {
    let r = check_exception("2", "ap-page", 14, "PF");
    r.check(r.results("exception")[0].get_u64("cpu") == Some(1), "fault not reported on cpu 1");
}

#[test]
fn unknown_program_reports_status_127() {
    let r = qemu(&["--cpus", "1", "--run", "nosuchprogram"]);
    r.check(r.code == 1, "non-zero guest status must give exit code 1");
    r.check(r.done_status() == Some(127), "expected QUESTV DONE status=127");
}
