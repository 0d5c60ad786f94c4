//! init (pid 1): runs the command it was given (the runner's `--run`), reaps it, checks that every physical
//! frame came back, and reports `QUESTV DONE status=N`. `init percpu PROG ARGS` runs one instance of the
//! command pinned to each online CPU, in parallel. Leading `NAME=VALUE` words are the program's environment
//! (as in a shell; the runner's `--env`). Orphans handed to init are reaped on the way, without ending the run.
#![no_std]
#![no_main]

extern crate alloc;
use alloc::vec::Vec;
use questv_libc_shim::{self as sys, println, wait};

questv_libc_shim::entry!(main);

/// Fork a child that (optionally moves to `cpu` and) execs `cmd` with environment `env`; returns its pid.
fn spawn(cmd: &[&str], env: &[&str], cpu: Option<u32>) -> i64 {
    let pid = sys::fork();
    if pid == 0 {
        if let Some(c) = cpu {
            let r = sys::set_cpu(c);
            if r < 0 {
                println!("init: cannot move to cpu {}: error {}", c, r);
                sys::exit(126);
            }
        }
        // A bare name is a program of /bin (where the kernel puts the ramdisk's programs), as a shell's PATH
        // search would find it.
        let mut path = alloc::string::String::new();
        if !cmd[0].contains('/') {
            path.push_str("/bin/");
        }
        path.push_str(cmd[0]);
        let r = sys::execve_env(&path, cmd, env);
        let why = match -r {
            sys::errno::ENOENT => "no such program in /bin (boot --add PATH puts one there)",
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

/// A `NAME=VALUE` word (an environment assignment, as a shell reads one).
fn is_assignment(w: &str) -> bool {
    w.split_once('=').is_some_and(|(n, _)| n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

fn run(cmd: &[&str]) -> i32 {
    let env_words = cmd.iter().take_while(|w| is_assignment(w)).count();
    let (env, cmd) = cmd.split_at(env_words);
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
        let pid = spawn(cmd, env, c);
        if pid < 0 {
            println!("init: fork failed: error {}", pid);
            return 1;
        }
        pids.push(pid);
    }
    let mut status = 0;
    let mut left = pids.len();
    while left > 0 {
        let (pid, st) = sys::waitpid(-1, 0);
        if pid < 0 {
            println!("init: waitpid failed: error {}", pid);
            return 1;
        }
        // An orphan re-parented to init is reaped here too; only the command's own processes end the run.
        if !pids.contains(&pid) {
            continue;
        }
        left -= 1;
        let s = wait::shell_status(st);
        if s != 0 && status == 0 {
            status = s;
        }
    }
    let after = sys::free_frames();
    println!("RESULT frames before={} after={} leaked={} instances={}", before, after, before - after, pids.len());
    status
}
