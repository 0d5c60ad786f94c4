//! The VT build in QEMU, on the AMD SVM backend (nested paging), and the attack suite: sandbox 0 attacks the
//! machine, the monitor or its peers while sandboxes 1–3 run forkwait; every attack must be contained
//! (docs/vt.md has the grant and exit tables). tests/vt_bochs.rs keeps what only the VMX backend shows.
mod common;
use common::{attack, check_monitor_ended_run, exits_of, memory_attack, no_leak, refused, status_of, stopped, vt, Run};

const QEMU: &str = "qemu";

/// Four sandboxes ran forkwait 200 cleanly: booted under their own numbers, no leak, status 0, nothing refused
/// or faulted, every line through the monitor's prefix. Returns the forkwait lines.
fn four_clean_sandboxes(r: &Run) {
    r.check(r.code == 0 && r.done_status() == Some(0), "VT run did not finish cleanly");
    check_monitor_ended_run(r, 4);
    let b = r.monitor_results("boot");
    r.check(b.len() == 1 && b[0].get("mode") == Some("vt") && b[0].get_u64("sandboxes") == Some(4), "expected RESULT boot mode=vt sandboxes=4");
    for s in 0..4 {
        let booted = r.sandbox_results("sandbox_boot", s);
        r.check(booted.len() == 1 && booted[0].get_u64("sandbox") == Some(u64::from(s)), "a sandbox did not boot (or claimed another's number)");
        let fw = r.sandbox_results("forkwait", s);
        r.check(fw.len() == 1 && fw[0].get_u64("iterations") == Some(200), "expected forkwait 200 in each of the 4 sandboxes");
        let frames = r.sandbox_results("frames", s);
        r.check(frames.len() == 1 && no_leak(&frames[0]), "frames leaked in a sandbox");
        r.check(status_of(r, u64::from(s)) == Some(0), "a sandbox failed");
    }
    r.check(r.monitor_results("sandbox_refused").is_empty() && r.results("sandbox_fault").is_empty(), "a well-behaved run had refusals or faults");
    r.check(!r.stdout.lines().any(|l| l.starts_with("RESULT forkwait")), "a sandbox printed without the monitor's prefix");
}

/// The default on QEMU (xAPIC, no x2APIC under TCG): the APIC page is trapped, so the only exits a sandbox
/// takes while it runs are its timer EOIs (checked and replayed); otherwise boot's CPUIDs and the console's
/// hypercalls.
#[test]
fn four_sandboxes_run_forkwait_on_svm() {
    let r = vt(QEMU, 4, &["--run", "forkwait 200"]);
    four_clean_sandboxes(&r);
    let m = r.monitor_results("monitor");
    r.check(m.len() == 1 && m[0].get("arch") == Some("svm") && m[0].get("apic") == Some("xapic_trapped"), "expected the SVM backend with a trapped xAPIC page");
    let vmcb = r.monitor_results("vmcb");
    r.check(vmcb.len() == 1 && vmcb[0].get("nested_paging") == Some("1"), "expected one RESULT vmcb line");
    for s in 0..4u64 {
        let e = exits_of(&r, s);
        r.check(e.is_some(), "no exit report");
        let e = e.unwrap();
        r.check(e.get("arch") == Some("svm"), "exit report names no backend");
        let known = ["cpuid", "hypercall", "apic_write"].iter().map(|k| e.get_u64(k).unwrap_or(0)).sum::<u64>();
        r.check(e.get_u64("total") == Some(known), "exits other than CPUID, hypercalls and APIC writes");
        let fw = &r.sandbox_results("forkwait", s as u32)[0];
        r.check(fw.get_u64("vmexits").is_some_and(|x| x <= e.get_u64("apic_write").unwrap_or(0)), "forkwait took exits beyond timer EOIs");
    }
}

/// The measured alternative (`--apic passthrough`): the APIC page writable, zero exits, and no IPI filtering
/// (so not the default; docs/vt.md).
#[test]
fn apic_passthrough_takes_no_exits() {
    let r = vt(QEMU, 4, &["--apic", "passthrough", "--run", "forkwait 200"]);
    four_clean_sandboxes(&r);
    let m = r.monitor_results("monitor");
    r.check(m.len() == 1 && m[0].get("apic") == Some("xapic_passthrough"), "passthrough not in force");
    for s in 0..4 {
        r.check(r.sandbox_results("forkwait", s)[0].get("vmexits") == Some("0"), "a sandbox took VM exits during forkwait");
        let e = exits_of(&r, u64::from(s)).unwrap();
        r.check(e.get_u64("total") == Some(e.get_u64("cpuid").unwrap_or(0) + e.get_u64("hypercall").unwrap_or(0)), "exits other than CPUID and hypercalls");
    }
}

/// The VT build under UEFI (OVMF): four sandboxes on SVM run forkwait with no exit in the loop (APIC page
/// passed through), and the default trapped page takes only timer EOIs, as under the BIOS.
#[test]
fn four_sandboxes_run_forkwait_under_uefi() {
    for (apic, zero) in [("passthrough", true), ("trap", false)] {
        let r = vt(QEMU, 4, &["--firmware", "uefi", "--apic", apic, "--run", "forkwait 200"]);
        four_clean_sandboxes(&r);
        r.check(r.monitor_results("boot")[0].get("firmware") == Some("uefi"), "the monitor did not see UEFI");
        let m = r.monitor_results("monitor");
        r.check(m.len() == 1 && m[0].get("apic") == Some(if zero { "xapic_passthrough" } else { "xapic_trapped" }), "the APIC mode asked for is not in force");
        for s in 0..4u32 {
            let fw = &r.sandbox_results("forkwait", s)[0];
            let e = exits_of(&r, u64::from(s)).unwrap();
            let known = ["cpuid", "hypercall", "apic_write"].iter().map(|k| e.get_u64(k).unwrap_or(0)).sum::<u64>();
            r.check(e.get_u64("total") == Some(known), "exits other than CPUID, hypercalls and APIC writes");
            let allowed = if zero { 0 } else { e.get_u64("apic_write").unwrap_or(0) };
            r.check(fw.get_u64("vmexits").is_some_and(|x| x <= allowed), "forkwait took VM exits under UEFI");
            r.check(!zero || fw.get("vmexits") == Some("0"), "passthrough: exits in the loop");
        }
    }
}

#[test]
fn attack_on_another_sandbox_is_contained() {
    memory_attack(QEMU, "peer");
}

#[test]
fn attack_on_the_monitor_is_contained() {
    memory_attack(QEMU, "monitor");
}

#[test]
fn attack_on_own_nested_page_tables_is_contained() {
    memory_attack(QEMU, "ept");
}

#[test]
fn attack_on_own_kernel_text_is_contained() {
    memory_attack(QEMU, "text");
}

/// RESTORE is a write the monitor does for the sandbox: aimed at the sandbox's own read-only kernel text it is
/// refused (EFAULT, the text unchanged), and the sandbox runs on.
#[test]
fn restore_over_own_kernel_text_is_refused() {
    let r = attack(QEMU, "restore-text", &[]);
    let a = r.sandbox_results("attack", 0);
    r.check(a.len() == 1 && a[0].get("outcome") == Some("refused"), "RESTORE over kernel text was not refused");
    r.check(r.stdout.contains("Err(14), text unchanged; into data: Ok(16)"), "the refusal, the untouched text and a working RESTORE");
    r.check(r.code == 0 && status_of(&r, 0) == Some(0), "sandbox 0 should survive and finish its program");
    r.check(r.monitor_results("sandbox_fault").is_empty(), "nothing faulted");
}

#[test]
fn virtualization_instructions_and_garbage_hypercalls_are_contained() {
    let r = attack(QEMU, "vmx", &[]);
    let a = r.sandbox_results("attack", 0);
    for kind in ["vmxoff", "svm_instructions"] {
        r.check(a.iter().any(|x| x.get("kind") == Some(kind) && x.get("outcome") == Some("ud")), &format!("{kind} did not raise #UD"));
    }
    r.check(a.iter().any(|x| x.get("kind") == Some("vmcall_garbage") && x.get("outcome") == Some("enosys")), "garbage hypercall not refused");
    r.check(r.code == 0 && status_of(&r, 0) == Some(0), "sandbox 0 should survive and finish forkwait too");
    r.check(exits_of(&r, 0).and_then(|e| e.get_u64("forbidden_instruction")) == Some(3), "CLGI, STGI and VMLOAD must each exit");
}

#[test]
fn reset_ports_stop_the_attacker() {
    let r = attack(QEMU, "port-reset", &[]);
    stopped(&r, "io");
    r.check(r.monitor_results("sandbox_fault")[0].get_u64("port") == Some(0xCF9), "the reset-control port write was not the one stopped");
}

#[test]
fn pci_config_space_is_trapped() {
    let r = attack(QEMU, "pci", &[]);
    refused(&r, "pci", "io");
    let pci = r.monitor_results("pci");
    r.check(pci.len() == 1 && pci[0].get_u64("functions").is_some_and(|n| n > 0), "the monitor did not scan PCI");
    let ports: Vec<u64> = r.monitor_results("sandbox_refused").iter().filter(|x| x.get("kind") == Some("io")).filter_map(|x| x.get_u64("port")).collect();
    r.check(ports.contains(&0xCF8) && ports.contains(&0xCFC), "config address/data ports not recorded");
}

#[test]
fn machine_msrs_are_refused_with_gp() {
    let r = attack(QEMU, "msr", &[]);
    refused(&r, "msr", "msr");
    let msrs: Vec<u64> = r.monitor_results("sandbox_refused").iter().filter(|x| x.get("kind") == Some("msr")).filter_map(|x| x.get_u64("msr")).collect();
    for m in [0x2FF, 0x1B, 0x401, 0x79, 0x10, 0x3A, 0x4000_0000, 0xC001_0000] {
        r.check(msrs.contains(&m), &format!("MSR 0x{m:x} not recorded as refused"));
    }
}

#[test]
fn nmi_ipis_are_refused() {
    let r = attack(QEMU, "icr-nmi", &[]);
    refused(&r, "icr-nmi", "icr");
}

#[test]
fn init_ipis_are_refused() {
    let r = attack(QEMU, "icr-init", &[]);
    refused(&r, "icr-init", "icr");
}

#[test]
fn stray_vectors_and_ipi_storms_are_refused() {
    let r = attack(QEMU, "icr-vector", &[]);
    refused(&r, "icr-vector", "icr");
    let icr: u64 = r.monitor_results("sandbox_refused").iter().filter(|x| x.get("kind") == Some("icr")).filter_map(|x| x.get_u64("count")).sum();
    r.check(icr >= 1004, "every refused IPI of the storm must be counted");
}

#[test]
fn a_panicking_sandbox_stops_alone() {
    let r = attack(QEMU, "panic", &[]);
    stopped(&r, "panic");
    r.check(r.stdout.lines().any(|l| l.starts_with("[s0] KERNEL PANIC")), "sandbox 0's panic message did not reach the console");
}

/// SVM has no preemption timer: the watchdog's tick is the PIT's NMI to every core.
#[test]
fn a_hung_sandbox_is_caught_by_the_watchdog() {
    // forkwait 1000 keeps each bystander up for many 52 ms watchdog periods: forkwait 100 (70 ms of host time)
    // could end before its first one (CI saw a bystander with none).
    let r = common::attack_beside(QEMU, "hang", &["--watchdog-ms", "500"], 1000);
    stopped(&r, "watchdog");
    let w = r.monitor_results("watchdog");
    r.check(w.len() == 1 && w[0].get_u64("ms") == Some(500) && w[0].get("mechanism") == Some("pit_nmi"), "watchdog not armed with the PIT NMI");
    r.check((1..4).all(|s| exits_of(&r, s).and_then(|e| e.get_u64("watchdog")).is_some_and(|n| n > 0)), "bystanders took no watchdog ticks");
}

#[test]
fn hypercalls_from_user_mode_are_refused() {
    let r = attack(QEMU, "user-vmcall", &[]);
    let a = r.sandbox_results("attack", 0);
    r.check(a.iter().any(|x| x.get("kind") == Some("user-vmcall") && x.get("outcome") == Some("refused")), "the user process's VMMCALL was not refused");
    let refusals = r.monitor_results("sandbox_refused");
    r.check(refusals.iter().any(|x| x.get_u64("sandbox") == Some(0) && x.get("kind") == Some("hypercall") && x.get_u64("cpl") == Some(3)), "the monitor did not record the CPL-3 hypercall");
    r.check(status_of(&r, 0) == Some(0) && r.monitor_results("sandbox_fault").is_empty(), "the forged DONE must not have reached the monitor");
}

#[test]
fn a_sandbox_cannot_forge_monitor_output() {
    let r = attack(QEMU, "forge", &[]);
    // The forged lines arrive, but only under sandbox 0's prefix.
    r.check(r.stdout.lines().any(|l| l == "[s0] QUESTV DONE status=0"), "the forged line should be visible, prefixed");
    r.check(r.stdout.lines().filter(|l| l.contains("QUESTV DONE")).all(|l| l.starts_with("[s0] ") || questv::parse_done_line(l).is_some()), "a forged DONE escaped the prefix");
    r.check(r.sandbox_results("sandbox_done", 0).len() == 1, "the forged sandbox_done line should be tagged as sandbox 0's");
    r.check(status_of(&r, 1) == Some(0), "sandbox 1's real result must come from the monitor");
    let com1 = r.monitor_results("sandbox_refused").into_iter().find(|x| x.get("kind") == Some("io") && x.get_u64("port") == Some(0x3F8));
    r.check(com1.is_some_and(|x| x.get_u64("count") == Some(22)), "direct COM1 writes were not all refused");
    r.check(r.code == 0, "sandbox 0 goes on to run forkwait after its attempt");
}

/// A sandbox's writes to its own APIC page that the rules refuse (its APIC id, an LVT entry delivering NMIs)
/// are dropped and counted, and it carries on.
#[test]
fn refused_apic_writes_are_counted() {
    let r = attack(QEMU, "apic", &[]);
    refused(&r, "apic", "apic");
    let offsets: Vec<u64> = r.monitor_results("sandbox_refused").iter().filter(|x| x.get("kind") == Some("apic")).filter_map(|x| x.get_u64("offset")).collect();
    r.check(offsets.contains(&0x20) && offsets.contains(&0x360), "APIC id and LINT1 writes not recorded as refused");
}

/// A #DB handler that returns into its own instruction breakpoint: without the #DB intercept the guest loops
/// with no exit (its timer still ticks, so the watchdog would not notice either) and the run never ends; with it,
/// every delivery exits, is reflected, and the monitor stops the sandbox after 1000 identical ones.
#[test]
fn a_debug_exception_loop_stops_the_attacker() {
    let r = attack(QEMU, "db-loop", &[]);
    check_exception_loop(&r, 1);
}

pub fn check_exception_loop(r: &Run, vector: u64) {
    stopped(r, "exception_loop");
    let f = &r.monitor_results("sandbox_fault")[0];
    r.check(f.get_u64("vector") == Some(vector) && f.get_u64("deliveries") == Some(1000), "the loop must be reported with its vector after 1000 deliveries");
    let e = exits_of(r, 0).unwrap();
    r.check(e.get_u64("exception") == Some(1000), "each delivery must have exited once, and reflected (not stopped) until the limit");
    for s in 1..4 {
        r.check(exits_of(r, s).unwrap().get_u64("exception").is_none(), "a bystander took exception exits");
    }
}

/// Registers no VMCS or VMCB holds (DR0–DR3; on VMX also MXCSR and the x87 control word; the local APIC's LVT
/// entries) are reset at every launch: a sandbox that leaves marks in them and panics comes back (`--recovery restart`) with power-on values.
#[test]
fn restart_leaves_no_debug_or_fpu_state_behind() {
    check_state_reset(QEMU);
}

pub fn check_state_reset(emulator: &str) {
    let r = common::vt(emulator, 2, &["--recovery", "restart", "--run", "ktest attack state-leak -- forkwait 50"]);
    r.check(r.code == 0 && r.done_status() == Some(0), "the run did not end cleanly after the restart");
    let a = r.sandbox_results("attack", 0);
    r.check(a.iter().any(|l| l.get("incarnation") == Some("0") && l.get("dr0") == Some("0x11110000")), "the first incarnation did not set its marks");
    let after: Vec<_> = a.iter().filter(|l| l.get("incarnation") == Some("1")).collect();
    r.check(after.len() == 1 && after[0].get("outcome") == Some("refused"), "the restarted sandbox found its predecessor's registers");
    // MXCSR's low six bits are sticky exception flags the kernel's own arithmetic sets; the rest is control.
    let mxcsr_control = after[0].get("mxcsr").and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok()).map(|v| v & !0x3F);
    r.check(after[0].get("dr0") == Some("0x0") && mxcsr_control == Some(0x1F80) && after[0].get("x87_cw") == Some("0x37f"), "not power-on values");
    // The first incarnation left the performance-counter and thermal LVT entries unmasked with its vectors; the
    // kernel's own APIC set-up does not touch those two, so only the monitor's reset brings them back masked.
    for lvt in ["lvt_perf", "lvt_thermal"] {
        r.check(after[0].get_u64(lvt).is_some_and(|v| v & (1 << 16) != 0), &format!("{lvt} not masked after the restart"));
    }
}

/// `ktest attack console-flood` (watchdog armed at 300 ms): sandbox 0 prints short lines as fast as the monitor
/// takes them for 2 s; in the middle of it sandbox 1 makes one 4 KiB write. Each sandbox's lines wait in its own
/// queue in the monitor and are drained in turns, so the bystander's write is not held up behind the flood
/// (its longest console exit stays short, its 64 lines come out whole and in order) and nobody is stopped.
#[test]
fn a_console_flood_delays_only_the_flooder() {
    let r = vt("qemu", 4, &["--watchdog-ms", "300", "--run", "ktest attack console-flood -- forkwait 100"]);
    check_monitor_ended_run(&r, 4);
    r.check(r.code == 0 && r.done_status() == Some(0), "the run did not end cleanly");
    r.check(r.monitor_results("sandbox_fault").is_empty(), "a sandbox was stopped under the flood");
    let flooder = r.sandbox_results("attack", 0);
    r.check(flooder.first().and_then(|l| l.get_u64("lines")).is_some_and(|n| n > 5000), "the flood was small");
    let prefix = "[s1] console-flood bystander line ";
    let seen: Vec<&str> = r.stdout.lines().filter_map(|l| l.strip_prefix(prefix)).collect();
    let in_order = seen.iter().enumerate().all(|(i, l)| l.starts_with(&format!("{i:02} ")));
    r.check(seen.len() == 64 && in_order, "the bystander's lines did not all come out, in order");
    let console = r.monitor_results("console");
    let of = |s: u64| console.iter().find(|l| l.get_u64("sandbox") == Some(s)).cloned().unwrap_or_else(|| r.fail("no console report"));
    r.check(of(1).get_u64("max_write_us").is_some_and(|us| us < 50_000), "the bystander waited behind the flood");
    for s in [2u32, 3] {
        let fw = r.sandbox_results("forkwait", s);
        r.check(fw.len() == 1 && fw[0].get_u64("iterations") == Some(100), "a bystander did not finish forkwait");
    }
}
