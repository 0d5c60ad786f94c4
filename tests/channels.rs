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

/// `ktest attack peer-ipi-flood`: sandbox 0 writes the notification IPI to sandbox 1 as fast as the monitor
/// takes the writes, for longer than sandbox 1 watches. While the channel is open the monitor delivers at most
/// one pending notification (the rest are counted as coalesced); once sandbox 1 closes the channel
/// (`CHANNEL_CLOSE`) it delivers none. With the watchdog armed nobody is stopped, and the bystanders finish.
#[test]
fn a_notification_flood_is_coalesced_and_ended_by_closing_the_channel() {
    let r = vt("qemu", 4, &["--watchdog-ms", "300", "--run", "ktest attack peer-ipi-flood -- forkwait 100"]);
    common::check_monitor_ended_run(&r, 4);
    r.check(r.code == 0 && r.done_status() == Some(0), "the run did not end cleanly");
    r.check(r.monitor_results("sandbox_fault").is_empty(), "a sandbox was stopped under the flood");
    let a = r.sandbox_results("attack", 0);
    let sent = a.first().and_then(|l| l.get_u64("sent")).unwrap_or_else(|| r.fail("no attacker report"));
    r.check(sent > 1000, "the attacker sent few notifications");
    let v = r.sandbox_results("attack", 1);
    let v = v.first().unwrap_or_else(|| r.fail("no victim report"));
    r.check(v.get("outcome") == Some("refused") && v.get_u64("taken_closed") == Some(0), "notifications reached the victim after it closed the channel");
    let taken = v.get_u64("taken_open").unwrap_or(0) + v.get_u64("taken_closing").unwrap_or(0);
    let coalesced = r.monitor_results("notifications_coalesced");
    let coalesced = coalesced.iter().find(|l| l.get_u64("sandbox") == Some(0)).and_then(|l| l.get_u64("count")).unwrap_or(0);
    r.check(coalesced > 0 && taken + coalesced <= sent, "the monitor did not coalesce the flood");
    // After the close the attacker's notifications are dropped as to a peer that has not opened the channel.
    let refused = r.monitor_results("sandbox_refused");
    r.check(refused.iter().any(|l| l.get_u64("sandbox") == Some(0) && l.get("kind") == Some("icr")), "the dropped notifications were not counted");
    for s in [2u32, 3] {
        let fw = r.sandbox_results("forkwait", s);
        r.check(fw.len() == 1 && fw[0].get_u64("iterations") == Some(100), "a bystander did not finish forkwait");
    }
}

/// `ktest attack channel-exhaust`: sandbox 2 asks for a channel with every other sandbox, none of which
/// agrees, and opens and closes one request a thousand times, while 0 and 1 exchange messages. Nothing it asks
/// for gets memory or a mapping (every open says EAGAIN; the directory lists none of its channels); 0 and 1
/// lose nothing.
#[test]
fn channels_nobody_agreed_to_get_no_memory() {
    let r = vt("qemu", 4, &["--run", "ktest attack channel-exhaust -- msgtest 2000"]);
    common::check_monitor_ended_run(&r, 4);
    let a = r.sandbox_results("attack", 2);
    r.check(a.len() == 1 && a[0].get("outcome") == Some("refused"), "sandbox 2 got channel memory nobody agreed to");
    r.check(a[0].get_u64("pending") == Some(3) && a[0].get_u64("churn_bad") == Some(0), "the requests were not kept as requests");
    let m = r.results("msgtest");
    let rx = m.iter().find(|x| x.get("role") == Some("receiver"));
    r.check(rx.is_some_and(|x| x.get_u64("received") == Some(2000) && x.get_u64("corrupt") == Some(0)), "the endpoints were disturbed");
    r.check(r.monitor_results("sandbox_fault").is_empty(), "a sandbox faulted");
}
