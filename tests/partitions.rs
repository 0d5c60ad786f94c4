//! Partition files (`--config`, docs/partitions.md): a wrong file is refused before anything is built, with
//! the file's line and column; the examples boot and do what their comments say; a parked core stays parked
//! (and the sandbox beside it gets the file's VCPUs); a NIC sharer takes the file's IP and MAC;
//! a listed channel works and an unlisted one is refused and counted by the monitor; a sandbox on two cores
//! runs a forkwait on each, and a fault on its second core recovers it whole while the others go on; each
//! sandbox is judged by its own watchdog.
mod common;
use common::{status_of, vt};
use std::path::PathBuf;

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/partitions").join(name).display().to_string()
}

/// A file of the test's own, under target/tmp.
fn file(name: &str, text: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}-{}.toml", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn a_wrong_file_is_refused_with_its_lines_and_columns_before_any_build() {
    let bad = file("bad", "[[sandbox]]\nname = \"a\"\ncpus = [0, 5]\nrun = \"nosuch 1\"\n\n[[sandbox]]\nname = \"b\"\ncpus = [0]\n");
    let r = common::questv(&["boot", "--vt", "--cpus", "2", "--config", &bad]);
    r.check(r.code == 2, "a wrong partition file must end the runner with status 2");
    for want in [
        format!("{bad}:3:12: core 5 does not exist: the machine has 2"),
        "hint: boot with --cpus 6".to_string(),
        format!("{bad}:4:7: unknown program \"nosuch\""),
        format!("{bad}:8:9: core 0 is already sandbox \"a\"'s"),
    ] {
        r.check(r.stderr.contains(&want), &format!("missing {want:?}"));
    }
    r.check(!r.stdout.contains("RESULT boot"), "nothing may boot");
    // The SMP build has no sandboxes to lay out.
    let r = common::questv(&["boot", "--cpus", "2", "--config", &example("parked.toml")]);
    r.check(r.code == 2 && r.stderr.contains("add --vt"), "--config without --vt is refused");
}

#[test]
fn a_core_no_sandbox_names_stays_parked() {
    let r = vt("qemu", 2, &["--config", &example("parked.toml")]);
    r.check(r.code == 0, "parked.toml must run to the end with status 0");
    let parked: Vec<u64> = r.monitor_results("sandbox_parked").iter().filter_map(|p| p.get_u64("sandbox")).collect();
    r.check(parked == vec![0], "core 0 is parked");
    r.check(r.sandbox_results("sandbox_boot", 0).is_empty(), "no sandbox boots on core 0");
    r.check(r.sandbox_results("forkwait", 1).len() == 1 && status_of(&r, 1) == Some(0), "the worker on core 1 runs forkwait");
    let created = r.sandbox_results("vcpus_created", 1);
    r.check(created.len() == 1 && created[0].get("ids") == Some("1,2"), "the file's two VCPUs are created before the program");
    r.check(r.monitor_results("partition").first().and_then(|p| p.get("cores").map(String::from)) == Some("parked,worker".into()), "the monitor reports the layout");
}

/// asymmetric.toml: three sandboxes, three programs, one of them on two cores (a forkwait on each at once);
/// the listed channel carries msgtest's messages. Then the same two msgtest sandboxes with no channel listed:
/// each open is refused (EPERM) and counted.
#[test]
fn listed_channels_work_and_unlisted_ones_are_refused_and_counted() {
    let r = vt("qemu", 4, &["--config", &example("asymmetric.toml")]);
    r.check(r.code == 0, "asymmetric.toml must run to the end with status 0");
    let rx = r.sandbox_results("msgtest", 1);
    r.check(rx.len() == 1 && rx[0].get_u64("received") == Some(2000) && rx[0].get_u64("lost") == Some(0), "the receiver gets all 2000 messages");
    let mut cpus: Vec<u64> = r.sandbox_results("forkwait", 2).iter().filter_map(|f| f.get_u64("cpu")).collect();
    cpus.sort();
    r.check(cpus == vec![0, 1], "compute runs a forkwait on each of its two cores");
    r.check(r.monitor_results("sandbox_core").first().and_then(|c| c.get_u64("sandbox")) == Some(2), "core 3 is sandbox 2's");
    r.check(r.sandbox_results("sandbox_boot", 2).first().and_then(|b| b.get_u64("cpus")) == Some(2), "compute's kernel runs on two CPUs");
    // Its own memory size: a 64 MiB slice (less the kernel's image), the others an even share of the rest.
    let mem = |s: u32| r.sandbox_results("sandbox_boot", s).first().and_then(|b| b.get_u64("mem_mib"));
    r.check(mem(2).is_some_and(|m| m > 32 && m <= 64) && mem(0).is_some_and(|m| m > 64) && mem(0) == mem(1), "compute has its 64 MiB, the others more");
    r.check(r.monitor_results("sandbox_refused").is_empty(), "nothing is refused when the channel is listed");

    let none = file("nochan", "[[sandbox]]\nname = \"a\"\ncpus = [0]\nrun = \"msgtest 100\"\n\n[[sandbox]]\nname = \"b\"\ncpus = [1]\nrun = \"msgtest 100\"\n");
    let r = vt("qemu", 2, &["--config", &none]);
    for (s, peer) in [(0u64, 1u64), (1, 0)] {
        let refused = r.monitor_results("sandbox_refused");
        let mine = refused.iter().find(|x| x.get_u64("sandbox") == Some(s) && x.get("kind") == Some("channel"));
        r.check(mine.is_some_and(|x| x.get_u64("peer") == Some(peer) && x.get_u64("count") == Some(1)), &format!("sandbox {s}'s channel to {peer} refused and counted once"));
        r.check(status_of(&r, s) == Some(1), "msgtest fails without its channel");
    }
}

/// A fault on the second core of a two-core sandbox (its kernel text written from there while its first core
/// computes): the monitor stops both cores, restarts the sandbox from its pristine image, and both come back
/// (a forkwait on each); the one-core sandbox beside it goes on undisturbed.
#[test]
fn a_fault_on_the_second_core_recovers_the_whole_sandbox() {
    let layout = file(
        "wide",
        "[[sandbox]]\nname = \"bystander\"\ncpus = [0]\nrun = \"ktest attack second-core -- forkwait 1000\"\n\n[[sandbox]]\nname = \"wide\"\ncpus = [1, 2]\nrecovery = \"restart\"\nrun = \"ktest attack second-core -- percpu forkwait 100\"\n",
    );
    let r = vt("qemu", 3, &["--config", &layout]);
    r.check(r.code == 0, "the run must end with status 0");
    let faults = r.monitor_results("sandbox_fault");
    r.check(faults.len() == 1, "one fault");
    let f = &faults[0];
    r.check(f.get_u64("sandbox") == Some(1) && f.get_u64("core") == Some(2) && f.get("reason") == Some("memory_violation") && f.get("action") == Some("restart"), "sandbox 1 faults on core 2 and is restarted");
    let stopped = r.monitor_results("sandbox_cores_stopped");
    r.check(stopped.len() == 1 && stopped[0].get_u64("cores") == Some(1) && stopped[0].get_u64("by_core") == Some(2), "its first core was stopped too");
    r.check(r.monitor_results("sandbox_ready").iter().any(|x| x.get_u64("sandbox") == Some(1) && x.get_u64("incarnation") == Some(1)), "it is back in service");
    let starts: Vec<u64> = r.monitor_results("sandbox_core_start").iter().filter_map(|x| x.get_u64("core")).collect();
    r.check(starts == vec![2, 2], "its second core starts at both incarnations");
    let mut cpus: Vec<u64> = r.sandbox_results("forkwait", 1).iter().filter_map(|x| x.get_u64("cpu")).collect();
    cpus.sort();
    r.check(cpus == vec![0, 1], "the recovered sandbox runs a forkwait on each of its cores");
    r.check(r.sandbox_results("attack", 1).is_empty(), "its first core never ran past the fault");
    r.check(r.sandbox_results("forkwait", 0).len() == 1 && status_of(&r, 0) == Some(0), "the bystander goes on and finishes");
    r.check(r.sandbox_results("sandbox_boot", 0).len() == 1, "the bystander was never restarted");
}

/// A sandbox's own watchdog, and a core's own heartbeat: the two-core sandbox whose second core hangs
/// (interrupts off, `ktest attack second-core-hang`) while its first keeps ticking is stopped whole after its
/// 300 ms; the other sandbox, which has no watchdog, runs to its end.
#[test]
fn each_sandbox_is_judged_by_its_own_watchdog_and_each_core_by_its_own_heartbeat() {
    let layout = file(
        "watchdog",
        "[[sandbox]]\nname = \"hangs\"\ncpus = [0, 1]\nwatchdog_ms = 300\nrun = \"ktest attack second-core-hang\"\n\n[[sandbox]]\nname = \"works\"\ncpus = [2]\nrun = \"ktest attack second-core-hang -- forkwait 300\"\n",
    );
    let r = vt("qemu", 3, &["--config", &layout]);
    let own = r.monitor_results("watchdog_sandbox");
    r.check(own.len() == 1 && own[0].get_u64("sandbox") == Some(0) && own[0].get_u64("ms") == Some(300), "sandbox 0 has its own 300 ms");
    r.check(r.monitor_results("watchdog").first().and_then(|w| w.get_u64("ms")) == Some(300), "the monitor's tick runs at 300 ms");
    let faults = r.monitor_results("sandbox_fault");
    r.check(faults.len() == 1 && faults[0].get_u64("sandbox") == Some(0) && faults[0].get("reason") == Some("watchdog") && faults[0].get_u64("core") == Some(1), "the hung core is caught by its own heartbeat");
    let stopped = r.monitor_results("sandbox_cores_stopped");
    r.check(stopped.len() == 1 && stopped[0].get_u64("cores") == Some(1) && stopped[0].get_u64("unresponsive") == Some(0), "its ticking first core is stopped with it");
    r.check(r.sandbox_results("attack", 0).is_empty(), "its first core never ran past the hang");
    r.check(r.sandbox_results("forkwait", 2).len() == 1 && status_of(&r, 2) == Some(0), "the other runs to its end");
}

/// network.toml under `ping`: the NIC's only sharer answers at the address and MAC the file gives it.
#[test]
fn a_network_service_sandbox_answers_at_the_files_address() {
    common::require("qemu-system-x86_64");
    let r = common::questv(&["ping", "--vt", "--cpus", "2", "--config", &example("network.toml"), "--count", "20"]);
    let ping = r.results("ping");
    r.check(ping.len() == 1, "one pinged guest");
    r.check(ping[0].get("guest") == Some("10.0.0.9") && ping[0].get("mac") == Some("02:51:56:00:00:09"), "the file's IP and MAC");
    r.check(ping[0].get_u64("received") == Some(20) && ping[0].get_u64("lost") == Some(0), "every ping answered");
    r.check(r.code == 0, "ping ends with status 0");
}
