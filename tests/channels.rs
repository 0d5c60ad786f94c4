//! Channels: 100 000 messages between two endpoints in both builds (QEMU; VT on the SVM backend), a third
//! sandbox touching the channel pages, and the benchmark's output shape (and its exit cost on both backends).
mod common;
use common::{boot, exits_of, no_leak, periodic_exits, require, vt, Run};

fn check_msgtest(r: &Run, vt: bool) {
    r.check(r.code == 0 && r.done_status() == Some(0), "messaging run failed");
    let m = r.results("msgtest");
    let rx = m.iter().find(|x| x.get("role") == Some("receiver"));
    let tx = m.iter().find(|x| x.get("role") == Some("sender"));
    r.check(rx.is_some() && tx.is_some(), "no sender/receiver results");
    let (rx, tx) = (rx.unwrap(), tx.unwrap());
    r.check(rx.get_u64("received") == Some(100_000), "not every message arrived");
    for k in ["lost", "dup", "corrupt"] {
        r.check(rx.get_u64(k) == Some(0), k);
    }
    r.check(tx.get_u64("send_failures") == Some(0) && tx.get("ack") == Some("1"), "sender saw failures");
    if vt {
        // Steady messaging takes no exits beyond the periodic ones (timer EOIs on a trapped xAPIC page).
        for (x, s) in [(rx, 1), (tx, 0)] {
            let e = exits_of(r, s);
            r.check(e.is_some(), "no exit report");
            r.check(x.get_u64("vmexits").is_some_and(|n| n <= periodic_exits(e.as_ref().unwrap())), "VM exits during steady messaging");
        }
    }
    let frames = r.results("frames");
    r.check(!frames.is_empty() && frames.iter().all(no_leak), "frames leaked (or no leak check ran)");
}

#[test]
fn hundred_thousand_messages_smp() {
    require("qemu-system-x86_64");
    let r = boot(&["--emulator", "qemu", "--cpus", "2", "--timeout", "300", "--run", "percpu msgtest 100000"]);
    check_msgtest(&r, false);
}

#[test]
fn hundred_thousand_messages_between_sandboxes() {
    let r = vt("qemu", 2, &["--run", "msgtest 100000"]);
    check_msgtest(&r, true);
}

#[test]
fn third_sandbox_cannot_touch_a_channel() {
    let r = vt("qemu", 4, &["--run", "ktest attack channel -- msgtest 2000"]);
    let f = r.monitor_results("sandbox_fault");
    r.check(f.len() == 1 && f[0].get_u64("sandbox") == Some(2) && f[0].get("reason") == Some("memory_violation"), "sandbox 2's access not reported");
    let m = r.results("msgtest");
    let rx = m.iter().find(|x| x.get("role") == Some("receiver"));
    r.check(rx.is_some_and(|x| x.get_u64("received") == Some(2000) && x.get_u64("corrupt") == Some(0)), "the endpoints were disturbed");
    let done = r.monitor_results("sandbox_done");
    r.check(done.len() == 4, "expected the monitor's sandbox_done for all four sandboxes");
    r.check(done.iter().filter(|d| d.get_u64("sandbox") != Some(2)).all(|d| d.get("status") == Some("0")), "a bystander failed");
}

#[test]
fn benchmark_reports_every_size_and_mode() {
    require("qemu-system-x86_64");
    let r = boot(&["--emulator", "qemu", "--cpus", "2", "--timeout", "300", "--run", "percpu msgbench 50"]);
    r.check(r.code == 0, "msgbench failed");
    let b = r.results("msgbench");
    r.check(b.len() == 22, "expected 11 sizes x 2 modes");
    for size in (2..=12).map(|p| 1u64 << p) {
        for mode in ["polled", "ipi"] {
            let row = b.iter().find(|x| x.get_u64("size") == Some(size) && x.get("mode") == Some(mode));
            r.check(row.is_some_and(|x| x.get_u64("rtt_cycles").unwrap_or(0) > 0 && x.get_u64("one_way_cycles").unwrap_or(0) > 0), "missing row");
        }
    }
}

/// VT on VMX (x2APIC): a notified message costs exactly one exit (the ICR write the monitor checks and
/// forwards; the EOI is an MSR write that does not exit); polled messaging costs none.
#[test]
fn notified_messages_cost_one_exit_each_between_sandboxes() {
    let r = vt("bochs", 2, &["--run", "msgbench 50"]);
    r.check(r.code == 0 && r.done_status() == Some(0), "msgbench failed");
    let b = r.results("msgbench");
    r.check(b.len() == 22, "expected 11 sizes x 2 modes");
    for row in &b {
        let (exits, notified) = (row.get("rtt_vmexits").and_then(|v| v.parse::<i64>().ok()), row.get_u64("rtt_notified"));
        match row.get("mode") {
            Some("polled") => r.check(exits == Some(0) && notified == Some(0), "polled messaging took exits"),
            Some("ipi") => r.check(notified == Some(50) && exits == Some(50), "expected one exit per notified message"),
            _ => r.fail("bad mode"),
        }
    }
    r.check(r.monitor_results("sandbox_refused").is_empty(), "channel notifications were refused");
}

/// VT on SVM (trapped xAPIC page): a notified message costs the sender its ICR write and, for the reply's
/// interrupt, an EOI (each checked and replayed by the monitor): at least one exit each, and polled messaging
/// none beyond timer EOIs.
#[test]
fn notified_messages_exit_on_the_trapped_apic() {
    let r = vt("qemu", 2, &["--run", "msgbench 50"]);
    r.check(r.code == 0 && r.done_status() == Some(0), "msgbench failed");
    let b = r.results("msgbench");
    r.check(b.len() == 22, "expected 11 sizes x 2 modes");
    let ticks = exits_of(&r, 0).map(|e| periodic_exits(&e)).unwrap_or(0);
    for row in &b {
        let (exits, notified) = (row.get("rtt_vmexits").and_then(|v| v.parse::<u64>().ok()), row.get_u64("rtt_notified"));
        match row.get("mode") {
            Some("polled") => r.check(notified == Some(0) && exits.is_some_and(|e| e <= ticks), "polled messaging took exits beyond timer EOIs"),
            Some("ipi") => r.check(notified == Some(50) && exits.is_some_and(|e| e >= 50), "a notified message must exit (the ICR write is checked)"),
            _ => r.fail("bad mode"),
        }
    }
    r.check(r.monitor_results("sandbox_refused").is_empty(), "channel notifications were refused");
}
