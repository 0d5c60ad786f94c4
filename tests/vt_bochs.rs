//! The VT build on the Intel VMX backend, in Bochs (QEMU's TCG has no VMX): what only VMX shows. The attack
//! suite runs on SVM in QEMU (tests/vt.rs); here: zero exits with x2APIC (EOIs are MSR writes that never
//! exit), the VMCS controls, the VMX-preemption-timer watchdog, the x2APIC ICR filter and EPT containment.
mod common;
use common::{attack, check_monitor_ended_run, exits_of, memory_attack, refused, status_of, stopped, vt};

const BOCHS: &str = "bochs";

#[test]
fn four_sandboxes_run_forkwait_without_vm_exits() {
    let r = vt(BOCHS, 4, &["--run", "forkwait 200"]);
    r.check(r.code == 0 && r.done_status() == Some(0), "VT run did not finish cleanly");
    check_monitor_ended_run(&r, 4);
    let m = r.monitor_results("monitor");
    r.check(m.len() == 1 && m[0].get("arch") == Some("vmx") && m[0].get("apic") == Some("x2apic"), "expected the VMX backend with x2APIC");
    let vmcs = r.monitor_results("vmcs");
    r.check(vmcs.len() == 1 && ["pin", "proc", "proc2", "exit", "entry"].iter().all(|k| vmcs[0].get_u64(k).is_some()), "expected one RESULT vmcs line");
    // NMI exiting (pin bit 3) and virtual NMIs (5); I/O bitmaps (proc bit 25), MSR bitmaps (28); no HLT or
    // unconditional I/O exiting.
    let (pin, proc) = (vmcs[0].get_u64("pin").unwrap(), vmcs[0].get_u64("proc").unwrap());
    r.check(pin & (1 << 3) != 0 && pin & (1 << 5) != 0 && pin & (1 << 6) == 0, "NMI exiting/virtual NMIs on, watchdog off");
    r.check(proc & (1 << 25) != 0 && proc & (1 << 28) != 0 && proc & ((1 << 7) | (1 << 24)) == 0, "I/O and MSR bitmaps on");
    for s in 0..4u32 {
        let fw = r.sandbox_results("forkwait", s);
        r.check(fw.len() == 1 && fw[0].get_u64("iterations") == Some(200), "expected forkwait 200 in each of the 4 sandboxes");
        r.check(fw[0].get("vmexits") == Some("0"), "a sandbox took VM exits during forkwait");
        r.check(status_of(&r, u64::from(s)) == Some(0), "a sandbox failed");
        // Only the architecturally unavoidable CPUIDs (boot) and hypercalls (the console is a hypercall per line).
        let e = exits_of(&r, u64::from(s)).unwrap();
        r.check(e.get("arch") == Some("vmx"), "exit report names no backend");
        r.check(e.get_u64("total") == Some(e.get_u64("cpuid").unwrap_or(0) + e.get_u64("hypercall").unwrap_or(0)), "exits other than CPUID and hypercalls");
    }
    r.check(r.monitor_results("sandbox_refused").is_empty() && r.results("sandbox_fault").is_empty(), "a well-behaved run had refusals or faults");
}

#[test]
fn attack_on_own_ept_tables_is_contained() {
    memory_attack(BOCHS, "ept");
}

#[test]
fn x2apic_nmi_ipis_are_refused() {
    let r = attack(BOCHS, "icr-nmi", &[]);
    refused(&r, "icr-nmi", "icr");
}

#[test]
fn a_hung_sandbox_is_caught_by_the_preemption_timer_watchdog() {
    let r = attack(BOCHS, "hang", &["--watchdog-ms", "500"]);
    stopped(&r, "watchdog");
    let w = r.monitor_results("watchdog");
    r.check(w.len() == 1 && w[0].get("mechanism") == Some("preemption_timer") && w[0].get_u64("timer_value").is_some_and(|v| v > 0), "watchdog not armed");
    let vmcs = r.monitor_results("vmcs");
    r.check(vmcs.len() == 1 && vmcs[0].get_u64("pin").is_some_and(|p| p & (1 << 6) != 0), "preemption timer not enabled");
}
