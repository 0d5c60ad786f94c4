//! The VT build: per-core sandbox kernels under the VMX monitor, in Bochs (QEMU has no VMX), and the attack
//! suite: sandbox 0 attacks the machine, the monitor or its peers while sandboxes 1–3 run forkwait; every
//! attack must be contained (docs/vt.md has the grant and exit tables).
mod common;
use common::{boot, no_leak, require, Run};

fn bochs_vt(args: &[&str]) -> Run {
    require("bochs");
    boot(&[&["--vt", "--emulator", "bochs", "--cpus", "4", "--timeout", "600"], args].concat())
}

/// The run ended the normal way: the monitor (never a sandbox) printed exactly one `QUESTV DONE`, and one
/// `RESULT sandbox_done` per sandbox.
fn check_monitor_ended_run(r: &Run) {
    r.check(r.done_status().is_some() && r.done_lines() == 1, "the monitor must print QUESTV DONE exactly once");
    r.check(!r.stdout.lines().any(|l| l.starts_with("KERNEL PANIC")), "the monitor panicked");
    let mut done: Vec<u64> = r.monitor_results("sandbox_done").iter().filter_map(|d| d.get_u64("sandbox")).collect();
    done.sort();
    r.check(done == vec![0, 1, 2, 3], "expected one monitor RESULT sandbox_done per sandbox");
}

fn status_of(r: &Run, sandbox: u64) -> Option<i64> {
    let d = r.monitor_results("sandbox_done");
    d.iter().find(|d| d.get_u64("sandbox") == Some(sandbox)).and_then(|d| d.get("status")).and_then(|s| s.parse().ok())
}

#[test]
fn four_sandboxes_run_forkwait_without_vm_exits() {
    let r = bochs_vt(&["--run", "forkwait 200"]);
    r.check(r.code == 0 && r.done_status() == Some(0), "VT run did not finish cleanly");
    check_monitor_ended_run(&r);
    let b = r.monitor_results("boot");
    r.check(b.len() == 1 && b[0].get("mode") == Some("vt") && b[0].get_u64("sandboxes") == Some(4), "expected RESULT boot mode=vt sandboxes=4");
    let vmcs = r.monitor_results("vmcs");
    r.check(vmcs.len() == 1 && ["pin", "proc", "proc2", "exit", "entry"].iter().all(|k| vmcs[0].get_u64(k).is_some()), "expected one RESULT vmcs line");
    // NMI exiting (pin bit 3) and virtual NMIs (5); I/O bitmaps (proc bit 25), MSR bitmaps (28); no HLT or
    // unconditional I/O exiting.
    let (pin, proc) = (vmcs[0].get_u64("pin").unwrap(), vmcs[0].get_u64("proc").unwrap());
    r.check(pin & (1 << 3) != 0 && pin & (1 << 5) != 0 && pin & (1 << 6) == 0, "NMI exiting/virtual NMIs on, watchdog off");
    r.check(proc & (1 << 25) != 0 && proc & (1 << 28) != 0 && proc & ((1 << 7) | (1 << 24)) == 0, "I/O and MSR bitmaps on");
    for s in 0..4 {
        let booted = r.sandbox_results("sandbox_boot", s);
        r.check(booted.len() == 1 && booted[0].get_u64("sandbox") == Some(u64::from(s)), "a sandbox did not boot (or claimed another's number)");
        let fw = r.sandbox_results("forkwait", s);
        r.check(fw.len() == 1, "expected forkwait in each of the 4 sandboxes");
        r.check(fw[0].get_u64("iterations") == Some(200), "wrong iteration count");
        r.check(fw[0].get("vmexits") == Some("0"), "a sandbox took VM exits during forkwait");
        let frames = r.sandbox_results("frames", s);
        r.check(frames.len() == 1 && no_leak(&frames[0]), "frames leaked in a sandbox");
        r.check(status_of(&r, u64::from(s)) == Some(0), "a sandbox failed");
    }
    // Per-sandbox exit report: only the architecturally unavoidable CPUIDs (boot) and hypercalls (the
    // console is a hypercall per line), nothing refused, nothing faulted.
    let exits = r.monitor_results("vmexits");
    r.check(exits.len() == 4, "expected one RESULT vmexits line per sandbox");
    for e in &exits {
        let total = e.get_u64("total");
        let cpuid = e.get_u64("cpuid");
        let vmcall = e.get_u64("vmcall");
        r.check(total.is_some() && cpuid.is_some() && vmcall.is_some(), "vmexits line lacks total/cpuid/vmcall");
        r.check(total == Some(cpuid.unwrap() + vmcall.unwrap()), "exits other than CPUID and VMCALL");
    }
    r.check(r.monitor_results("sandbox_refused").is_empty() && r.results("sandbox_fault").is_empty(), "a well-behaved run had refusals or faults");
    // The console is the monitor's: every sandbox line arrives prefixed.
    r.check(!r.stdout.lines().any(|l| l.starts_with("RESULT forkwait")), "a sandbox printed without the monitor's prefix");
}

#[test]
fn vt_needs_vmx_and_says_so_under_qemu() {
    require("qemu-system-x86_64");
    let r = boot(&["--vt", "--emulator", "qemu", "--cpus", "2", "--timeout", "120"]);
    r.check(r.code != 0, "VT mode must fail without VMX");
    r.check(r.stdout.contains("VT mode needs VMX with EPT; use --emulator bochs"), "no clear message");
}

/// Sandbox 0 attacks (kernel-mode test hook); sandboxes 1–3 run forkwait 100 and must not notice: each reports
/// its loop with zero exits (with the watchdog on: no more exits than its preemption-timer exits), leaks
/// nothing and ends with status 0; the machine never resets; only the monitor ends the run.
fn attack(kind: &str, extra: &[&str]) -> Run {
    let run = format!("ktest attack {kind} -- forkwait 100");
    let r = bochs_vt(&[extra, &["--run", &run]].concat());
    r.check(r.code == 0 || r.code == 1, "the machine reset, hung or the monitor panicked");
    check_monitor_ended_run(&r);
    let exits = r.monitor_results("vmexits");
    for s in 1..4u32 {
        let fw = r.sandbox_results("forkwait", s);
        r.check(fw.len() == 1 && fw[0].get_u64("iterations") == Some(100), "a bystander did not finish forkwait 100");
        let timer_exits = exits
            .iter()
            .find(|e| e.get_u64("sandbox") == Some(u64::from(s)))
            .map(|e| e.get_u64("preemption_timer").unwrap_or(0));
        r.check(timer_exits.is_some(), "no exit report for a bystander");
        r.check(fw[0].get_u64("vmexits").is_some_and(|x| x <= timer_exits.unwrap()), "a bystander took VM exits during forkwait");
        let frames = r.sandbox_results("frames", s);
        r.check(frames.len() == 1 && no_leak(&frames[0]), "a bystander leaked frames");
        r.check(status_of(&r, u64::from(s)) == Some(0), "a bystander sandbox failed");
    }
    r.check(!r.stdout.contains("not_contained"), "an attack was not contained");
    r
}

/// The attack stopped sandbox 0 with `reason`; nothing else faulted.
fn stopped(r: &Run, reason: &str) {
    let f = r.monitor_results("sandbox_fault");
    r.check(f.len() == 1, "expected exactly one sandbox fault");
    r.check(f[0].get_u64("sandbox") == Some(0) && f[0].get("reason") == Some(reason) && f[0].get("action") == Some("stopped"), &format!("fault not reported as sandbox 0's {reason}"));
    r.check(status_of(r, 0) == Some(137), "sandbox 0 must be reported stopped (status 137)");
    r.check(r.code == 1, "the run must report sandbox 0's failure");
}

/// The attack was refused and recorded: sandbox 0 says so, the monitor counted it, and sandbox 0 went on to
/// finish forkwait itself.
fn refused(r: &Run, attack_kind: &str, refusal_kind: &str) {
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

fn memory_attack(kind: &str) {
    let r = attack(kind, &[]);
    stopped(&r, "ept_violation");
    // The faulting guest-physical address is the one sandbox 0 attacked.
    let target = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("[s0] ktest attack: sandbox 0 writes to host-physical 0x"))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| u64::from_str_radix(t, 16).ok());
    r.check(target.is_some(), "sandbox 0 did not say what it attacked");
    let f = &r.monitor_results("sandbox_fault")[0];
    r.check(f.get_u64("gpa") == target, "fault address is not the attacked address");
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
fn attack_on_own_kernel_text_is_contained() {
    memory_attack("text");
}

#[test]
fn vmx_instructions_and_garbage_hypercalls_are_contained() {
    let r = attack("vmx", &[]);
    let a = r.sandbox_results("attack", 0);
    r.check(a.iter().any(|x| x.get("kind") == Some("vmxoff") && x.get("outcome") == Some("ud")), "VMXOFF did not raise #UD");
    r.check(a.iter().any(|x| x.get("kind") == Some("vmcall_garbage") && x.get("outcome") == Some("enosys")), "garbage hypercall not refused");
    r.check(r.code == 0 && status_of(&r, 0) == Some(0), "sandbox 0 should survive and finish forkwait too");
}

#[test]
fn reset_ports_stop_the_attacker() {
    let r = attack("port-reset", &[]);
    stopped(&r, "io");
    r.check(r.monitor_results("sandbox_fault")[0].get_u64("port") == Some(0xCF9), "the reset-control port write was not the one stopped");
}

#[test]
fn pci_config_space_is_trapped() {
    let r = attack("pci", &[]);
    refused(&r, "pci", "io");
    let pci = r.monitor_results("pci");
    r.check(pci.len() == 1 && pci[0].get_u64("functions").is_some_and(|n| n > 0), "the monitor did not scan PCI");
    let ports: Vec<u64> = r.monitor_results("sandbox_refused").iter().filter(|x| x.get("kind") == Some("io")).filter_map(|x| x.get_u64("port")).collect();
    r.check(ports.contains(&0xCF8) && ports.contains(&0xCFC), "config address/data ports not recorded");
}

#[test]
fn machine_msrs_are_refused_with_gp() {
    let r = attack("msr", &[]);
    refused(&r, "msr", "msr");
    let msrs: Vec<u64> = r.monitor_results("sandbox_refused").iter().filter(|x| x.get("kind") == Some("msr")).filter_map(|x| x.get_u64("msr")).collect();
    for m in [0x2FF, 0x1B, 0x401, 0x79, 0x10, 0x3A, 0x4000_0000, 0xC001_0000] {
        r.check(msrs.contains(&m), &format!("MSR 0x{m:x} not recorded as refused"));
    }
}

#[test]
fn nmi_ipis_are_refused() {
    let r = attack("icr-nmi", &[]);
    refused(&r, "icr-nmi", "icr");
}

#[test]
fn init_ipis_are_refused() {
    let r = attack("icr-init", &[]);
    refused(&r, "icr-init", "icr");
}

#[test]
fn stray_vectors_and_ipi_storms_are_refused() {
    let r = attack("icr-vector", &[]);
    refused(&r, "icr-vector", "icr");
    let icr: u64 = r.monitor_results("sandbox_refused").iter().filter(|x| x.get("kind") == Some("icr")).filter_map(|x| x.get_u64("count")).sum();
    r.check(icr >= 1004, "every refused IPI of the storm must be counted");
}

#[test]
fn a_panicking_sandbox_stops_alone() {
    let r = attack("panic", &[]);
    stopped(&r, "panic");
    r.check(r.stdout.lines().any(|l| l.starts_with("[s0] KERNEL PANIC")), "sandbox 0's panic message did not reach the console");
}

#[test]
fn a_hung_sandbox_is_caught_by_the_watchdog() {
    let r = attack("hang", &["--watchdog-ms", "500"]);
    stopped(&r, "watchdog");
    let w = r.monitor_results("watchdog");
    r.check(w.len() == 1 && w[0].get_u64("ms") == Some(500) && w[0].get_u64("timer_value").is_some_and(|v| v > 0), "watchdog not armed");
    let vmcs = r.monitor_results("vmcs");
    r.check(vmcs.len() == 1 && vmcs[0].get_u64("pin").is_some_and(|p| p & (1 << 6) != 0), "preemption timer not enabled");
}

#[test]
fn hypercalls_from_user_mode_are_refused() {
    let r = attack("user-vmcall", &[]);
    let a = r.sandbox_results("attack", 0);
    r.check(a.iter().any(|x| x.get("kind") == Some("user-vmcall") && x.get("outcome") == Some("refused")), "the user process's VMCALL was not refused");
    let refusals = r.monitor_results("sandbox_refused");
    r.check(refusals.iter().any(|x| x.get_u64("sandbox") == Some(0) && x.get("kind") == Some("hypercall") && x.get_u64("cpl") == Some(3)), "the monitor did not record the CPL-3 hypercall");
    r.check(status_of(&r, 0) == Some(0) && r.monitor_results("sandbox_fault").is_empty(), "the forged DONE must not have reached the monitor");
}

#[test]
fn a_sandbox_cannot_forge_monitor_output() {
    let r = attack("forge", &[]);
    // The forged lines arrive, but only under sandbox 0's prefix.
    r.check(r.stdout.lines().any(|l| l == "[s0] QUESTV DONE status=0"), "the forged line should be visible, prefixed");
    r.check(r.stdout.lines().filter(|l| l.contains("QUESTV DONE")).all(|l| l.starts_with("[s0] ") || parse_is_monitor_done(l)), "a forged DONE escaped the prefix");
    r.check(r.sandbox_results("sandbox_done", 0).len() == 1, "the forged sandbox_done line should be tagged as sandbox 0's");
    r.check(status_of(&r, 1) == Some(0), "sandbox 1's real result must come from the monitor");
    let com1 = r.monitor_results("sandbox_refused").into_iter().find(|x| x.get("kind") == Some("io") && x.get_u64("port") == Some(0x3F8));
    r.check(com1.is_some_and(|x| x.get_u64("count") == Some(22)), "direct COM1 writes were not all refused");
    r.check(r.code == 0, "sandbox 0 goes on to run forkwait after its attempt");
}

fn parse_is_monitor_done(l: &str) -> bool {
    questv::parse_done_line(l).is_some()
}
