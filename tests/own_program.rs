//! A user's own program, from a file outside the repository to its output on both builds (README, "Run your
//! own program"): `questv cc` (C, warnings shown and not fatal), `questv new-program` (Rust), `boot --add`.
mod common;
use common::{boot, check_monitor_ended_run, Run};
use std::path::{Path, PathBuf};
use std::process::Command;

fn questv(args: &[&str], cwd: &Path) -> Run {
    common::questv_in(args, Some(cwd))
}

/// A scratch directory outside the repository, as a user's would be.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("questv-own-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const SQUARES: &str = r#"/* A user's program: one child per square, the parent sums their exit statuses. */
#include <questv/questv.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 3;
    int last = 0;               /* set but not used: gcc warns, the build goes on */
    long sum = 0;
    for (int i = 1; i <= n; i++) {
        pid_t pid = fork();
        if (pid == 0) exit(i * i);
        int status;
        waitpid(pid, &status, 0);
        sum += (status >> 8) & 0xff;
        last = i;
    }
    printf("RESULT squares n=%d sum=%ld sandbox=%d\n", n, sum, questv_sandbox());
    return 0;
}
"#;

#[test]
fn a_c_program_with_a_warning_runs_on_both_builds() {
    common::require("musl-gcc");
    let dir = scratch("c");
    std::fs::write(dir.join("squares.c"), SQUARES).unwrap();
    let c = questv(&["cc", "squares.c", "-o", "squares"], &dir);
    c.check(c.code == 0, "questv cc failed");
    c.check(c.stderr.contains("warning") && c.stderr.contains("-Wunused-but-set-variable"), "gcc's warning was not shown");
    let exe = dir.join("squares");
    let exe = exe.to_str().unwrap();
    let r = boot(&["--cpus", "2", "--add", exe, "--run", "squares 5"]);
    r.check(r.code == 0 && r.done_status() == Some(0), "the SMP run failed");
    let s = r.results("squares");
    r.check(s.len() == 1 && s[0].get_u64("sum") == Some(55) && s[0].get("sandbox") == Some("-1"), "wrong output on SMP");
    let r = common::vt("qemu", 2, &["--add", exe, "--run", "squares 5"]);
    r.check(r.code == 0, "the VT run failed");
    check_monitor_ended_run(&r, 2);
    for sb in 0..2 {
        let s = r.sandbox_results("squares", sb);
        r.check(s.len() == 1 && s[0].get_u64("sum") == Some(55) && s[0].get_u64("sandbox") == Some(u64::from(sb)), "wrong output in a sandbox");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cc_says_what_musl_lacks() {
    common::require("musl-gcc");
    let dir = scratch("lack");
    std::fs::write(dir.join("trace.c"), "#include <execinfo.h>\nint main(void) { return 0; }\n").unwrap();
    let r = questv(&["cc", "trace.c"], &dir);
    r.check(r.code == 1 && r.stderr.contains("neither musl nor questv has <execinfo.h>") && r.stderr.contains("<questv/chan.h>"), "missing header not named");
    std::fs::write(dir.join("ver.c"), "int main(void) { return gnu_get_libc_version() != 0; }\n").unwrap();
    let r = questv(&["cc", "ver.c"], &dir);
    r.check(r.code == 1 && r.stderr.contains("does not provide gnu_get_libc_version()"), "missing function not named");
    r.check(!dir.join("ver").exists(), "a failed compile left an executable");
    // What the hand-written C library lacked is there now: qsort, signals, stat, math, times, FILE*.
    std::fs::write(
        dir.join("rich.c"),
        "#include <math.h>\n#include <signal.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <sys/stat.h>\n#include <sys/times.h>\n#include <time.h>\n\
         static int cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }\n\
         static volatile sig_atomic_t got;\nstatic void on(int s) { got = s; }\n\
         int main(void) { int a[3] = {3, 1, 2}; qsort(a, 3, sizeof a[0], cmp); signal(SIGUSR1, on); raise(SIGUSR1);\n\
         struct tms t; clock_t c = times(&t); struct stat st; int f = fstat(1, &st);\n\
         printf(\"RESULT rich sorted=%d%d%d sig=%d sqrt=%.3f clock_ok=%d fstat=%d\\n\", a[0], a[1], a[2], got, sqrt(2.0), c != (clock_t)-1 && clock() != (clock_t)-1, f);\n\
         return 0; }\n",
    )
    .unwrap();
    let r = questv(&["cc", "rich.c", "-lm"], &dir);
    r.check(r.code == 0, "a program using qsort, signals, stat, math and times did not compile");
    let exe = dir.join("rich");
    let r = boot(&["--cpus", "2", "--add", exe.to_str().unwrap(), "--run", "rich"]);
    let l = r.results("rich");
    r.check(
        l.len() == 1 && l[0].get("sorted") == Some("123") && l[0].get("sig") == Some("10") && l[0].get("sqrt") == Some("1.414") && l[0].get("clock_ok") == Some("1") && l[0].get("fstat") == Some("0"),
        "the musl program's output is wrong on questv",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Garbage, a 32-bit and a dynamically linked Linux executable in the ramdisk: exec refuses each with ENOEXEC
/// and a message naming the file; the kernel logs why; nothing faults, on either build.
#[test]
fn a_file_that_cannot_run_is_refused() {
    common::require("gcc");
    let dir = scratch("bad");
    let garbage: Vec<u8> = (0..3000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(dir.join("garbage.bin"), garbage).unwrap();
    // A static Linux binary with its ELF class byte set to 32-bit (gcc here has no -m32 libraries).
    let linux = dir.join("linux-hello");
    questv::linux::compile_static(&questv::workspace_root().join("tests/data/linux/hello.c"), &linux).unwrap();
    let mut bytes = std::fs::read(&linux).unwrap();
    bytes[4] = 1; // EI_CLASS: ELFCLASS32
    std::fs::write(dir.join("linux-hello-32"), bytes).unwrap();
    // gcc's default: linked against the shared C library.
    let dynamic = dir.join("linux-hello-dynamic");
    let built = std::process::Command::new("gcc")
        .arg(questv::workspace_root().join("tests/data/linux/hello.c"))
        .arg("-o")
        .arg(&dynamic)
        .status()
        .unwrap();
    assert!(built.success(), "gcc could not build a dynamic hello");
    for (name, why) in [
        ("garbage.bin", "is not a well-formed ELF"),
        ("linux-hello-32", "linux-hello-32 is a 32-bit program: questv runs 64-bit x86-64 binaries"),
        ("linux-hello-dynamic", "linux-hello-dynamic is dynamically linked (needs /lib64/ld-linux-x86-64.so.2): questv runs static binaries"),
    ] {
        let path = dir.join(name);
        let r = boot(&["--cpus", "2", "--add", path.to_str().unwrap(), "--run", name]);
        r.check(r.done_status() == Some(126), "a refused exec must end with status 126");
        let e = r.results("exec_refused");
        r.check(e.len() == 1 && e[0].get("name") == Some(name) && e[0].get("error") == Some("-8"), "expected ENOEXEC for the file");
        r.check(r.stdout.contains(&format!("init: cannot run {name}: not a program questv can run")), "no clear message");
        r.check(r.stdout.contains(why), "the kernel did not say why");
        r.check(!r.stdout.contains("KERNEL PANIC") && !r.stdout.contains("EXCEPTION"), "a refused exec faulted");
    }
    let path = dir.join("garbage.bin");
    let r = common::vt("qemu", 2, &["--add", path.to_str().unwrap(), "--run", "garbage.bin"]);
    check_monitor_ended_run(&r, 2);
    r.check(r.sandbox_results("exec_refused", 0).len() == 1 && r.sandbox_results("exec_refused", 1).len() == 1, "VT: not refused in both sandboxes");
    r.check(common::status_of(&r, 0) == Some(126) && common::status_of(&r, 1) == Some(126), "VT: a refused exec must end each sandbox with status 126");
    // A program that does not exist is not "refused": status 127 and no exec_refused line.
    let r = boot(&["--cpus", "1", "--run", "no-such-program"]);
    r.check(r.done_status() == Some(127) && r.results("exec_refused").is_empty(), "a missing program must be 127, not a refusal");
    r.check(r.results("sandbox_fault").is_empty(), "VT: a refused exec faulted a sandbox");
    let r = boot(&["--add", "/nonexistent/x", "--run", "x"]);
    r.check(r.code == 2 && r.stderr.contains("no such file"), "a missing --add file must be a clear runner error");
    let clash = dir.join("forkwait");
    std::fs::copy(&path, &clash).unwrap();
    let r = boot(&["--add", clash.to_str().unwrap(), "--run", "forkwait"]);
    r.check(r.code == 2 && r.stderr.contains("already in the ramdisk"), "a file named like a built-in program must be refused");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rust_program_from_the_template_runs() {
    let dir = scratch("rust");
    let r = questv(&["new-program", "hello-rs", "--dir", dir.to_str().unwrap()], &dir);
    r.check(r.code == 0, "new-program failed");
    let krate = dir.join("hello-rs");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", krate.join("target"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .unwrap();
    assert!(out.status.success(), "the template did not build:\n{}", String::from_utf8_lossy(&out.stderr));
    let exe = krate.join("target").join(questv::KERNEL_TARGET).join("release/hello-rs");
    let r = boot(&["--cpus", "2", "--add", exe.to_str().unwrap(), "--run", "hello-rs x y"]);
    r.check(r.code == 0 && r.stdout.contains("hello from hello-rs") && r.stdout.contains("[\"x\", \"y\"]"), "the Rust program did not run");
    let s = r.results("hello_rs");
    r.check(s.len() == 1 && s[0].get_u64("child_status") == Some(7), "its child's status did not come back");
    let r = questv(&["new-program", "hello-rs", "--dir", dir.to_str().unwrap()], &dir);
    r.check(r.code == 2 && r.stderr.contains("not overwriting"), "new-program overwrote a directory");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Static Linux binaries built the way their users build them — `musl-gcc -static` and `gcc -static` (glibc),
/// no questv header — run unmodified on the SMP build and in every sandbox: the System V start, TLS, stdio,
/// fork (glibc's is `clone`), wait and exit all as on Linux.
#[test]
fn static_linux_binaries_run_unmodified_on_both_builds() {
    common::require("gcc");
    common::require("musl-gcc");
    let dir = scratch("linux-static");
    let src = questv::workspace_root().join("tests/data/linux/hello.c");
    let glibc = dir.join("hello-glibc");
    questv::linux::compile_static(&src, &glibc).unwrap();
    let musl = dir.join("hello-musl");
    let built = Command::new("musl-gcc").args(["-static", "-O2", "-o"]).arg(&musl).arg(&src).status().unwrap();
    assert!(built.success(), "musl-gcc could not build hello");
    // glibc's static-pie: ET_DYN with its own relocations, loaded at Linux's PIE base.
    let pie = dir.join("hello-static-pie");
    let built = Command::new("gcc").args(["-static-pie", "-O2", "-o"]).arg(&pie).arg(&src).status().unwrap();
    assert!(built.success(), "gcc could not build a static-pie hello");
    for (name, path) in [("hello-musl", &musl), ("hello-glibc", &glibc), ("hello-static-pie", &pie)] {
        let r = boot(&["--cpus", "2", "--add", path.to_str().unwrap(), "--run", name]);
        r.check(r.done_status() == Some(0), "a static Linux binary did not exit 0 on SMP");
        r.check(r.stdout.contains("hello from linux (child ") && r.stdout.contains("exited with 42)"), "no output on SMP");
        r.check(!r.stdout.contains("EXCEPTION") && !r.stdout.contains("killed by signal"), "it faulted on SMP");
        let r = common::vt("qemu", 2, &["--add", path.to_str().unwrap(), "--run", name]);
        check_monitor_ended_run(&r, 2);
        for sb in 0..2 {
            r.check(common::status_of(&r, sb) == Some(0), "a static Linux binary did not exit 0 in a sandbox");
            let said = format!("[s{sb}] hello from linux (child ");
            r.check(r.stdout.lines().any(|l| l.starts_with(&said) && l.ends_with("exited with 42)")), "no output in a sandbox");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--env NAME=VALUE` reaches the program's environment (init passes leading NAME=VALUE words to execve), on
/// both builds; a malformed one is refused by the runner before anything boots.
#[test]
fn the_environment_reaches_the_program() {
    common::require("musl-gcc");
    let dir = scratch("env");
    std::fs::write(
        dir.join("showenv.c"),
        "#include <stdio.h>\n#include <stdlib.h>\nint main(int argc, char **argv) {\n\
         printf(\"RESULT showenv greeting=%s level=%s unset=%d args=%d\\n\", getenv(\"GREETING\"), getenv(\"LEVEL\"), getenv(\"NOPE\") == 0, argc);\n\
         return 0; }\n",
    )
    .unwrap();
    let c = questv(&["cc", "showenv.c"], &dir);
    c.check(c.code == 0, "questv cc failed");
    let exe = dir.join("showenv");
    let exe = exe.to_str().unwrap();
    let args = ["--add", exe, "--env", "GREETING=hello", "--env", "LEVEL=3", "--run", "showenv a b"];
    let r = boot(&[&["--cpus", "2"][..], &args[..]].concat());
    let l = r.results("showenv");
    r.check(l.len() == 1 && l[0].get("greeting") == Some("hello") && l[0].get("level") == Some("3") && l[0].get("unset") == Some("1") && l[0].get("args") == Some("3"), "SMP: wrong environment");
    let r = common::vt("qemu", 2, &args);
    for sb in 0..2 {
        let l = r.sandbox_results("showenv", sb);
        r.check(l.len() == 1 && l[0].get("greeting") == Some("hello") && l[0].get("level") == Some("3"), "VT: wrong environment");
    }
    for bad in ["NOEQUALS", "1X=2", "X=a$b", "X=a b"] {
        let r = boot(&["--add", exe, "--env", bad, "--run", "showenv"]);
        r.check(r.code == 2 && r.stderr.contains("--env"), &format!("--env {bad:?} was not refused"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
