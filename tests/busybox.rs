//! Debian's static busybox (fetched once with the Linux baseline, target/linux-cache) running shell scripts on
//! the SMP build and in every sandbox: pipelines, files in /tmp, a tar of a tree and back, many processes,
//! a background job killed. The script prints one `RESULT bb name=... value=...` line per check; the values
//! are compared here.
mod common;
use common::{boot, check_monitor_ended_run, Run};
use std::path::PathBuf;

/// Each check: a name and a shell command printing one word, and the word expected.
const CHECKS: &[(&str, &str, &str)] = &[
    ("sort", "busybox seq 1 20000 | busybox sort -rn | busybox head -1", "20000"),
    ("md5", "echo hello > /tmp/f && busybox md5sum /tmp/f | busybox cut -d' ' -f1", "b1946ac92492d2347c6235b4d2611184"),
    ("find", "busybox mkdir -p /tmp/a/b/c && echo x > /tmp/a/b/c/file && busybox find /tmp/a | busybox wc -l", "4"),
    ("tar", "cd /tmp && busybox tar cf t.tar a && busybox rm -rf a && busybox tar xf t.tar && busybox cat a/b/c/file", "x"),
    ("procs", "i=0; while [ $i -lt 200 ]; do busybox true; i=$((i+1)); done; echo $i", "200"),
    ("kill", "busybox sleep 5 & p=$!; kill $p; wait $p; echo $?", "143"),
    ("sigpipe", "busybox yes | busybox head -2 | busybox wc -l", "2"),
    ("redirect", "echo one > /tmp/r; echo two >> /tmp/r; busybox wc -l < /tmp/r", "2"),
    ("ls", "busybox ls /bin | busybox grep -c '^busybox$'", "1"),
    ("exe", "busybox readlink /proc/self/exe", "/bin/busybox"),
    ("stdin", "echo piped | busybox cat /dev/stdin", "piped"),
    ("meminfo", "busybox grep -c '^MemTotal:' /proc/meminfo", "1"),
    ("ps", "busybox ps -o pid,comm | busybox grep -c ' init$'", "1"),
];

/// Debian's busybox, fetched once per test run (the tests of this file run in parallel).
fn busybox() -> PathBuf {
    static BUSYBOX: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUSYBOX
        .get_or_init(|| {
            let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("linux-cache");
            questv::linux::fetch(&cache).unwrap_or_else(|e| panic!("fetching busybox: {e}")).1
        })
        .clone()
}

/// The script (as a file for the initramfs: `--run` carries no quotes).
fn script() -> PathBuf {
    let mut s = String::new();
    for (name, cmd, _) in CHECKS {
        s.push_str(&format!("v=$({cmd})\necho \"RESULT bb name={name} value=$v\"\n"));
    }
    s.push_str("echo RESULT bb name=end value=end\n");
    let path = std::env::temp_dir().join(format!("questv-bb-{}.sh", std::process::id()));
    std::fs::write(&path, s).unwrap();
    path
}

fn check(r: &Run, sandbox: Option<u32>) {
    let rows: Vec<_> = r.results("bb").into_iter().filter(|l| sandbox.is_none_or(|n| l.sandbox == Some(n))).collect();
    for (name, _, want) in CHECKS {
        let got = rows.iter().find(|l| l.get("name") == Some(name)).and_then(|l| l.get("value"));
        r.check(got == Some(want), &format!("busybox check {name}: expected {want}, got {got:?} (sandbox {sandbox:?})"));
    }
}

#[test]
fn busybox_scripts_run_on_smp() {
    let (bb, sh) = (busybox(), script());
    let r = boot(&["--cpus", "2", "--timeout", "300", "--add", bb.to_str().unwrap(), "--add", sh.to_str().unwrap(), "--run", &format!("busybox sh /bin/{}", sh.file_name().unwrap().to_str().unwrap())]);
    r.check(r.code == 0 && r.done_status() == Some(0), "the SMP run failed");
    check(&r, None);
    let frames = r.results("frames");
    r.check(frames.len() == 1 && common::no_leak(&frames[0]), "frames leaked");
}

#[test]
fn busybox_scripts_run_in_every_sandbox() {
    let (bb, sh) = (busybox(), script());
    let r = common::vt("qemu", 2, &["--add", bb.to_str().unwrap(), "--add", sh.to_str().unwrap(), "--run", &format!("busybox sh /bin/{}", sh.file_name().unwrap().to_str().unwrap())]);
    r.check(r.code == 0, "the VT run failed");
    check_monitor_ended_run(&r, 2);
    for n in 0..2 {
        check(&r, Some(n));
    }
}

/// `--run` with shell syntax grub.cfg cannot carry (quotes, `$`, pipes, a backslash) goes into the initramfs as a
/// script run by busybox's `sh`, which the runner adds; busybox's applets are links in /bin.
#[test]
fn run_carries_any_shell_text() {
    let run = r#"sh -c 'w=$(echo "a  b" | wc -w); echo "RESULT shtext words=$w math=$((5*2)) esc=a\\b path=$(readlink /bin/ls)"'"#;
    let r = boot(&["--cpus", "2", "--run", run]);
    r.check(r.code == 0 && r.done_status() == Some(0), "the run failed");
    let l = r.results("shtext");
    r.check(l.len() == 1, "no RESULT shtext line");
    r.check(l[0].get("words") == Some("2") && l[0].get("math") == Some("10") && l[0].get("esc") == Some("a\\b") && l[0].get("path") == Some("busybox"), "the shell text was not run as written");
}
