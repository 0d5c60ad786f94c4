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
