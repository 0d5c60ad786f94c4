//! init (pid 1): runs the command it was given (the runner's `--run`), reaps it, checks that every physical
//! frame came back, and reports `QUESTV DONE status=N`. `init percpu PROG ARGS` runs one instance of the
//! command pinned to each online CPU, in parallel.
#![no_std]
#![no_main]

extern crate alloc;
use alloc::vec::Vec;
use questv_libc_shim::{self as sys, println, wait};

questv_libc_shim::entry!(main);

/// Fork a child that (optionally moves to `cpu` and) execs `cmd`; returns its pid.
fn spawn(cmd: &[&str], cpu: Option<u32>) -> i64 {
    let pid = sys::fork();
    if pid == 0 {
        if let Some(c) = cpu {
            let r = sys::set_cpu(c);
            if r < 0 {
                println!("init: cannot move to cpu {}: error {}", c, r);
                sys::exit(126);
            }
        }
        let r = sys::execve(cmd[0], cmd);
        let why = match -r {
            sys::errno::ENOENT => "no such program in the ramdisk (boot --add PATH puts one there)",
            sys::errno::ENOEXEC => "not a program questv can run (a static x86-64 ELF executable; the kernel's `exec refused` line says why)",
            _ => "exec failed",
        };
        println!("init: cannot run {}: {} (error {})", cmd[0], why, r);
        if -r == sys::errno::ENOEXEC {
            println!("RESULT exec_refused name={} error={}", cmd[0], r);
        }
        sys::exit(if r == -sys::errno::ENOENT { 127 } else { 126 });
    }
    pid
}

fn main(args: &[&str]) -> i32 {
    let status = run(&args[1.min(args.len())..]);
    // In a VT sandbox the monitor reports QUESTV DONE once every sandbox has finished.
    match sys::sandbox() {
        Some(s) => println!("RESULT sandbox_status sandbox={} status={}", s, status),
        None => println!("QUESTV DONE status={}", status),
    }
    status
}

fn run(cmd: &[&str]) -> i32 {
    if cmd.is_empty() {
        println!("init: no command");
        return 2;
    }
    let (cmd, cpus): (&[&str], Vec<Option<u32>>) = if cmd[0] == "percpu" {
        if cmd.len() < 2 {
            println!("usage: percpu PROG ARGS");
            return 2;
        }
        (&cmd[1..], (0..sys::ncpus() as u32).map(Some).collect())
    } else {
        (cmd, alloc::vec![None])
    };
    let before = sys::free_frames();
    let mut pids = Vec::new();
    for &c in &cpus {
        let pid = spawn(cmd, c);
        if pid < 0 {
            println!("init: fork failed: error {}", pid);
            return 1;
        }
        pids.push(pid);
    }
    let mut status = 0;
    for _ in &pids {
        let (pid, st) = sys::waitpid(-1, 0);
        if pid < 0 {
            println!("init: waitpid failed: error {}", pid);
            return 1;
        }
        let s = wait::shell_status(st);
        if s != 0 && status == 0 {
            status = s;
        }
    }
    let after = sys::free_frames();
    println!("RESULT frames before={} after={} leaked={} instances={}", before, after, before - after, pids.len());
    status
}
