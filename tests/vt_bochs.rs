//! The VT build: per-core sandbox kernels under the VMX monitor, in Bochs (QEMU has no VMX).
mod common;
use common::{boot, require, Run};

fn bochs_vt(args: &[&str]) -> Run {
    require("bochs");
    boot(&[&["--vt", "--emulator", "bochs", "--cpus", "4", "--timeout", "600"], args].concat())
}

#[test]
fn four_sandboxes_run_forkwait_without_vm_exits() {
    let r = bochs_vt(&["--run", "forkwait 200"]);
    r.check(r.code == 0 && r.done_status() == Some(0), "VT run did not finish cleanly");
    let b = r.results("boot");
    r.check(b.len() == 1 && b[0].get("mode") == Some("vt") && b[0].get_u64("sandboxes") == Some(4), "expected RESULT boot mode=vt sandboxes=4");
    let booted: Vec<u64> = r.results("sandbox_boot").iter().filter_map(|s| s.get_u64("sandbox")).collect();
    r.check(booted.len() == 4, "not every sandbox booted");
    let fw = r.results("forkwait");
    let mut sandboxes: Vec<u64> = fw.iter().filter_map(|f| f.get_u64("sandbox")).collect();
    sandboxes.sort();
    r.check(sandboxes == vec![0, 1, 2, 3], "expected forkwait in each of the 4 sandboxes");
    for f in &fw {
        r.check(f.get_u64("iterations") == Some(200), "wrong iteration count");
        r.check(f.get("vmexits") == Some("0"), "a sandbox took VM exits during forkwait");
    }
    let frames = r.results("frames");
    r.check(frames.len() == 4 && frames.iter().all(|f| f.get("before") == f.get("after")), "frames leaked in a sandbox");
    // Per-sandbox exit report: only the architecturally unavoidable CPUIDs (boot) and hypercalls.
    let exits = r.results("vmexits");
    r.check(exits.len() == 4, "expected one RESULT vmexits line per sandbox");
    for e in &exits {
        let total = e.get_u64("total").unwrap_or(u64::MAX);
        let cpuid = e.get_u64("cpuid").unwrap_or(0);
        let vmcall = e.get_u64("vmcall").unwrap_or(0);
        r.check(total == cpuid + vmcall, "exits other than CPUID and VMCALL");
    }
    r.check(r.results("sandbox_done").iter().all(|d| d.get("status") == Some("0")), "a sandbox failed");
}

#[test]
fn vt_needs_vmx_and_says_so_under_qemu() {
    require("qemu-system-x86_64");
    let r = boot(&["--vt", "--emulator", "qemu", "--cpus", "2", "--timeout", "120"]);
    r.check(r.code != 0, "VT mode must fail without VMX");
    r.check(r.stdout.contains("VT mode needs VMX with EPT; use --emulator bochs"), "no clear message");
}

/// Sandbox 0 attacks (kernel-mode test hook); the others run forkwait and must not notice.
fn attack(kind: &str) -> Run {
    let r = bochs_vt(&["--run", &format!("ktest attack {kind} -- forkwait 100")]);
    let others: Vec<u64> = r
        .results("forkwait")
        .iter()
        .filter(|f| f.get_u64("iterations") == Some(100) && f.get("vmexits") == Some("0"))
        .filter_map(|f| f.get_u64("sandbox"))
        .filter(|&s| s != 0)
        .collect();
    r.check(others.len() == 3, "sandboxes 1-3 did not all finish forkwait");
    let done = r.results("sandbox_done");
    r.check(done.iter().filter(|d| d.get_u64("sandbox") != Some(0)).all(|d| d.get("status") == Some("0")), "a bystander sandbox failed");
    r.check(r.done_status().is_some(), "the monitor did not report QUESTV DONE");
    r.check(!r.stdout.contains("not_contained"), "an attack was not contained");
    r
}

fn memory_attack(kind: &str) {
    let r = attack(kind);
    let f = r.results("sandbox_fault");
    r.check(f.len() == 1, "expected exactly one sandbox fault");
    r.check(f[0].get_u64("sandbox") == Some(0) && f[0].get("reason") == Some("ept_violation"), "fault not reported as sandbox 0's EPT violation");
    // The faulting guest-physical address is the one sandbox 0 attacked.
    let target = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("ktest attack: sandbox 0 writes to host-physical 0x"))
        .and_then(|t| t.split_whitespace().next())
        .map(|t| t.to_string())
        .unwrap_or_default();
    r.check(f[0].get_u64("gpa") == u64::from_str_radix(&target, 16).ok(), "fault address is not the attacked address");
    r.check(r.code == 1, "the run must report sandbox 0's failure");
}

#[test]
fn attack_on_another_sandbox_is_contained() {
    memory_attack("peer");
}

#[test]
fn attack_on_the_monitor_is_contained() {
    memory_attack("monitor");
}

#[test]
fn attack_on_own_ept_tables_is_contained() {
    memory_attack("ept");
}

#[test]
fn vmx_instructions_and_garbage_hypercalls_are_contained() {
    let r = attack("vmx");
    let a = r.results("attack");
    r.check(a.iter().any(|x| x.get("kind") == Some("vmxoff") && x.get("outcome") == Some("ud")), "VMXOFF did not raise #UD");
    r.check(a.iter().any(|x| x.get("kind") == Some("vmcall_garbage") && x.get("outcome") == Some("enosys")), "garbage hypercall not refused");
    r.check(r.code == 0, "sandbox 0 should survive and finish forkwait too");
}
