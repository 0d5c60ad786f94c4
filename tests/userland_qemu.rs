//! User programs on the SMP build in QEMU -smp 4: forkwait (C and Rust), a C program on musl, the syscall torture test,
//! one forkwait per CPU in parallel. Every run must give back every physical frame (init checks and reports).
mod common;
use common::{boot, require, Run};

fn run(cmd: &str) -> Run {
    require("qemu-system-x86_64");
    boot(&["--emulator", "qemu", "--cpus", "4", "--timeout", "300", "--run", cmd])
}

fn no_leak(r: &Run) {
    let f = r.results("frames");
    r.check(f.len() == 1, "expected one RESULT frames line from init");
    r.check(f[0].get_u64("before").is_some() && f[0].get("before") == f[0].get("after"), "physical frames leaked");
}

fn forkwait(cmd: &str, lang: &str) {
    let r = run(&format!("{cmd} 1000"));
    r.check(r.code == 0 && r.done_status() == Some(0), "forkwait did not finish cleanly");
    let fw = r.results("forkwait");
    r.check(fw.len() == 1, "expected one RESULT forkwait line");
    r.check(fw[0].get_u64("iterations") == Some(1000), "wrong iteration count");
    r.check(fw[0].get("lang") == Some(lang), "wrong language tag");
    r.check(fw[0].get_u64("cycles_per_iter").is_some_and(|c| c > 0), "no cycle count");
    no_leak(&r);
}

#[test]
fn forkwait_c() {
    forkwait("forkwait", "c");
}

#[test]
fn forkwait_rust() {
    forkwait("forkwait-rs", "rust");
}

#[test]
fn forkwait_in_parallel_on_every_cpu() {
    let r = run("percpu forkwait 200");
    r.check(r.code == 0, "parallel forkwait failed");
    let mut cpus: Vec<u64> = r.results("forkwait").iter().filter_map(|f| f.get_u64("cpu")).collect();
    cpus.sort();
    r.check(cpus == vec![0, 1, 2, 3], "expected one forkwait instance on each of the 4 CPUs");
    no_leak(&r);
}

#[test]
fn a_c_program_on_musl_works() {
    let r = run("hello one two");
    r.check(r.code == 0, "hello failed");
    let h = r.results("hello");
    r.check(h.len() == 1, "no RESULT hello line");
    for k in ["fmt_ok", "heap_ok", "clock_ok"] {
        r.check(h[0].get(k) == Some("1"), k);
    }
    r.check(h[0].get_u64("args") == Some(3), "argv not passed");
    r.check(r.stdout.contains("hello from C: argc=3 argv0=hello pid=2 ppid=1"), "getpid/getppid/argv wrong");
    no_leak(&r);
}

#[test]
fn syscall_torture() {
    let r = run("torture 7 10000");
    r.check(r.code == 0, "torture reported failures or the kernel died");
    let t = r.results("torture");
    r.check(t.len() == 1 && t[0].get_u64("failed") == Some(0) && t[0].get_u64("checks").unwrap_or(0) > 50, "torture checks failed");
    let rnd = r.results("torture_random");
    r.check(rnd.len() == 1 && rnd[0].get_u64("calls") == Some(10_000), "random syscalls did not all complete");
    // The wall clock comes from the RTC, which QEMU sets to the host's time.
    let host = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let time = r.results("torture_time");
    let real = time.first().and_then(|t| t.get("realtime_s")).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    r.check((real - host).abs() < 600, &format!("CLOCK_REALTIME {real} is not the host's {host}"));
    let oom = r.results("torture_oom");
    r.check(oom.len() == 1, "no RESULT torture_oom line");
    r.check(matches!(oom[0].get("fork_error"), Some("-12") | Some("-11")), "fork did not fail with ENOMEM/EAGAIN");
    r.check(oom[0].get("recovered") == Some("1"), "fork did not work again after memory was released");
    r.check(oom[0].get_u64("eaten_mib").unwrap_or(0) > 100, "memory was not really exhausted");
    // Faulting children were killed, the kernel was not.
    r.check(r.stdout.contains("killed by signal 11") && r.stdout.contains("killed by signal 4"), "faulting children not reported");
    r.check(!r.stdout.contains("KERNEL PANIC"), "kernel panicked");
    no_leak(&r);
}
