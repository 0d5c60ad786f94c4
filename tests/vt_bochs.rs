//! The VT build on the Intel VMX backend, in Bochs (QEMU's TCG has no VMX): what only VMX shows. The attack
//! suite runs on SVM in QEMU (tests/vt.rs); here, in three boots (Bochs is slow): the VMCS controls, zero exits
//! with x2APIC (EOIs are MSR writes that never exit), the x2APIC ICR filter, EPT violations decoded into the
//! policy's memory faults, and the VMX-preemption-timer watchdog.
mod common;
use common::{attack, exits_of, refused, stopped};

const BOCHS: &str = "bochs";

/// Sandbox 0 sends an NMI to sandbox 1's core through the x2APIC ICR (refused with #GP), then all four run
/// forkwait 100 with zero exits in the loop.
#[test]
fn vmx_sandboxes_take_no_exits_and_x2apic_ipis_are_filtered() {
    let r = attack(BOCHS, "icr-nmi", &[]);
    refused(&r, "icr-nmi", "icr");
    let m = r.monitor_results("monitor");
    r.check(m.len() == 1 && m[0].get("arch") == Some("vmx") && m[0].get("apic") == Some("x2apic"), "expected the VMX backend with x2APIC");
    let vmcs = r.monitor_results("vmcs");
    r.check(vmcs.len() == 1 && ["pin", "proc", "proc2", "exit", "entry"].iter().all(|k| vmcs[0].get_u64(k).is_some()), "expected one RESULT vmcs line");
    // NMI exiting (pin bit 3) and virtual NMIs (5); I/O bitmaps (proc bit 25), MSR bitmaps (28); no HLT or
    // unconditional I/O exiting; no preemption timer without the watchdog.
    let (pin, proc) = (vmcs[0].get_u64("pin").unwrap(), vmcs[0].get_u64("proc").unwrap());
    r.check(pin & (1 << 3) != 0 && pin & (1 << 5) != 0 && pin & (1 << 6) == 0, "NMI exiting/virtual NMIs on, watchdog off");
    r.check(proc & (1 << 25) != 0 && proc & (1 << 28) != 0 && proc & ((1 << 7) | (1 << 24)) == 0, "I/O and MSR bitmaps on");
    for s in 0..4u32 {
        let fw = r.sandbox_results("forkwait", s);
        r.check(fw.len() == 1 && fw[0].get("vmexits") == Some("0"), "a sandbox took VM exits during forkwait");
        let e = exits_of(&r, u64::from(s)).unwrap();
        r.check(e.get("arch") == Some("vmx"), "exit report names no backend");
        // Only boot's CPUIDs, the console's hypercalls, the APIC set-up's checked LVT writes (a handful, once)
        // and, for the attacker, its refused ICR write.
        let wrmsr = if s == 0 { e.get_u64("wrmsr").unwrap_or(0) } else { 0 };
        let lvt = e.get_u64("apic_write").unwrap_or(0);
        r.check(lvt <= 8, "more LVT writes than the kernel's APIC set-up makes");
        r.check(e.get_u64("total") == Some(e.get_u64("cpuid").unwrap_or(0) + e.get_u64("hypercall").unwrap_or(0) + lvt + wrmsr), "unexpected exits");
    }
}

/// The EPT violation exit becomes the policy's memory fault, at the attacked address.
#[test]
fn ept_violations_stop_the_attacker() {
    common::memory_attack(BOCHS, "ept");
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

/// The shared NIC on VMX: two sandboxes answer every ping on their own addresses (one MAC: Bochs' socket
/// backend passes only the configured one), the interrupt reaches both without an exit.
#[test]
fn vmx_sandboxes_share_the_nic() {
    common::require("bochs");
    let r = common::questv(&["ping", "--vt", "--emulator", "bochs", "--cpus", "2", "--guests", "2", "--count", "40"]);
    let lines = |name: &str| r.results(name);
    let p = lines("ping");
    r.check(r.code == 0 && p.len() == 2, "expected both guests pinged and the run to pass");
    for g in &p {
        r.check(g.get_u64("received") == Some(40) && g.get_u64("lost") == Some(0) && g.get_u64("dup") == Some(0), "pings were lost");
    }
    let nic = lines("nic");
    r.check(nic.len() == 1 && nic[0].get("mode") == Some("vt"), "expected the monitor's NIC grant");
    for s in lines("ping_guest") {
        r.check(s.get("vmexits") == Some("0"), "a sharer took VM exits while serving pings");
        r.check(s.get_u64("irqs").is_some_and(|n| n >= 40), "a sharer got few NIC interrupts");
    }
}

/// Recovery on VMX: a sandbox whose kernel writes outside its memory (an EPT violation) is scrubbed, reloaded
/// and relaunched (VMCLEAR, INVEPT, VMLAUNCH on its own core) and runs forkwait with zero exits afterwards.
#[test]
fn recovery_relaunches_a_sandbox_on_vmx() {
    let r = common::vt(BOCHS, 2, &["--recovery", "restart", "--run", "ktest inject wild 1 -- forkwait 50"]);
    r.check(r.code == 0 && r.done_status() == Some(0), "the run did not end cleanly after the recovery");
    let f = r.monitor_results("sandbox_fault");
    r.check(f.len() == 1 && f[0].get("reason") == Some("memory_violation") && f[0].get("action") == Some("restart"), "expected one recovered EPT violation");
    let rec = r.monitor_results("sandbox_recovered");
    r.check(rec.len() == 1 && rec[0].get_u64("sandbox") == Some(1) && rec[0].get_u64("incarnation") == Some(1), "expected sandbox 1 recovered");
    for s in 0..2u32 {
        let fw = r.sandbox_results("forkwait", s);
        r.check(fw.len() == 1 && fw[0].get("vmexits") == Some("0"), "forkwait did not run exit-free in a sandbox");
    }
}

/// The #DB and #AC delivery loops on VMX (Bochs checks alignment, unlike QEMU's TCG): each delivery exits (exception
/// bitmap), is reflected with its DR6 bits or error code, and after 1000 identical ones the attacker is stopped;
/// the bystanders run forkwait with no exit in the loop. Without the intercept both loops run in the guest with
/// no exit at all and the run never ends.
#[test]
fn debug_and_alignment_check_loops_stop_the_attacker_on_vmx() {
    for (kind, vector) in [("db-loop", 1), ("ac-loop", 17)] {
        let r = attack(BOCHS, kind, &[]);
        stopped(&r, "exception_loop");
        let f = &r.monitor_results("sandbox_fault")[0];
        r.check(f.get_u64("vector") == Some(vector) && f.get_u64("deliveries") == Some(1000), "the loop must be reported with its vector after 1000 deliveries");
        r.check(exits_of(&r, 0).and_then(|e| e.get_u64("exception")) == Some(1000), "each delivery exits once");
        for s in 1..4u32 {
            r.check(r.sandbox_results("forkwait", s)[0].get("vmexits") == Some("0"), "a bystander took exits in its loop");
        }
    }
}

/// x2APIC LVT writes follow the xAPIC page's rules: LINT0 as ExtINT, LINT1, the performance counter and error
/// entries as NMI, thermal as SMI, CMCI are dropped and counted (or #GP where the core has no such entry); a
/// masked LINT0 is replayed. The timer entry is not trapped (the kernel rewrites it constantly).
#[test]
fn x2apic_lvt_writes_are_filtered() {
    let r = attack(BOCHS, "x2apic-lvt", &[]);
    refused(&r, "x2apic-lvt", "apic");
    let offsets: Vec<u64> = r.monitor_results("sandbox_refused").iter().filter(|x| x.get("kind") == Some("apic")).filter_map(|x| x.get_u64("offset")).collect();
    for o in [0x350, 0x360, 0x340, 0x330, 0x370] {
        r.check(offsets.contains(&o), &format!("LVT write at 0x{o:x} not recorded as refused"));
    }
    r.check(r.stdout.contains("x2APIC LINT0 <- 0x10041: 0xSome(10041), #GP false"), "a masked LINT0 write must be replayed");
}

/// On VMX the monitor also resets MXCSR and the x87 control word at launch (the VMCS holds neither) and DR0–DR3
/// (nor these): a restarted sandbox finds none of its predecessor's marks.
#[test]
fn restart_leaves_no_debug_or_fpu_state_behind_on_vmx() {
    let r = common::vt(BOCHS, 2, &["--recovery", "restart", "--run", "ktest attack state-leak -- forkwait 50"]);
    r.check(r.code == 0 && r.done_status() == Some(0), "the run did not end cleanly after the restart");
    let a = r.sandbox_results("attack", 0);
    let after: Vec<_> = a.iter().filter(|l| l.get("incarnation") == Some("1")).collect();
    r.check(after.len() == 1 && after[0].get("outcome") == Some("refused"), "the restarted sandbox found its predecessor's registers");
    for lvt in ["lvt_perf", "lvt_thermal"] {
        r.check(after[0].get_u64(lvt).is_some_and(|v| v & (1 << 16) != 0), &format!("{lvt} not masked after the restart"));
    }
}
