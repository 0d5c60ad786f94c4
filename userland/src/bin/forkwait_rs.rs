//! forkwait in Rust: the paper's Listing 1 (fork a child that exits at once, wait for it; N times).
#![no_std]
#![no_main]

use questv_libc_shim::{self as sys, println};

questv_libc_shim::entry!(main);

fn main(args: &[&str]) -> i32 {
    let Some(n) = questv_userland::arg_u64(args, 1, 40000) else {
        println!("usage: forkwait-rs [ITERATIONS]");
        return 2;
    };
    let exits_before = sys::vmexits();
    let start = sys::cycles();
    for _ in 0..n {
        let pid = sys::fork();
        if pid == 0 {
            sys::exit(0);
        } else if pid < 0 {
            println!("forkwait-rs: fork failed: error {}", pid);
            sys::exit(1);
        } else {
            sys::waitpid(pid, 0);
        }
    }
    let cycles = sys::cycles() - start;
    // VT: exits during the loop = the difference minus the second query's own exit; -1 on the SMP build.
    let vmexits = if exits_before < 0 { -1 } else { sys::vmexits() - exits_before - 1 };
    println!(
        "RESULT forkwait iterations={} cycles={} cycles_per_iter={} lang=rust cpu={} sandbox={} vmexits={}",
        n, cycles, cycles / n.max(1), sys::getcpu(), sys::sandbox().map_or(-1, i64::from), vmexits
    );
    0
}
