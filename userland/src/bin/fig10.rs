//! The paper's Fig 10 workload (docs/recovery.md): sandbox 1 sends a message every 50 ms on private channels to
//! sandboxes 0, 2 and 3, which drain their channel every 100, 800 and 1000 ms; the host peer pings sandbox 0
//! meanwhile (its network service is the kernel's, not this program's). Each receiver prints, per second, how
//! many good messages it got, how many were damaged (wrong check word: a broken driver scribbled on the
//! channel) and whether the channel was reset (the monitor wiped and restored it after a recovery):
//! `RESULT fig10_rx sandbox=S second=K got=N corrupt=C resets=R end_cycles=T`.
#![no_std]
#![no_main]

use questv_libc_shim::{self as sys, chan, println};

questv_libc_shim::entry!(main);

const SEND_EVERY_MS: u64 = 50;
const CHECK: u64 = 0x5EC0_4D10_F16E_0A0A;

fn main(args: &[&str]) -> i32 {
    let Some(secs) = questv_userland::arg_u64(args, 1, 20) else {
        println!("usage: fig10 [SECONDS]");
        return 2;
    };
    let me = chan::endpoint();
    println!("RESULT fig10_start sandbox={} cycles={}", me, sys::cycles());
    match me {
        1 => sender(secs),
        0 | 2 | 3 => receiver(me as u32, secs, [100, 0, 800, 1000][me as usize]),
        _ => 0,
    }
}

fn sender(secs: u64) -> i32 {
    let peers = [0u32, 2, 3];
    let mut handles = [0i64; 3];
    for (h, &p) in handles.iter_mut().zip(&peers) {
        *h = chan::open(p);
        if *h < 0 {
            println!("fig10: open to {} failed: error {}", p, *h);
            return 1;
        }
    }
    let start = sys::clock_monotonic_ns();
    let (mut seq, mut failures, mut resets) = (0u64, 0u64, 0u64);
    while sys::clock_monotonic_ns() - start < secs * 1_000_000_000 {
        let mut msg = [0u8; 16];
        msg[..8].copy_from_slice(&seq.to_le_bytes());
        msg[8..].copy_from_slice(&(seq ^ CHECK).to_le_bytes());
        for &h in &handles {
            match chan::send(h, &msg, 0) {
                0 => {}
                r if r == -chan::ECONNRESET => resets += 1,
                _ => failures += 1,
            }
        }
        seq += 1;
        sys::nanosleep(SEND_EVERY_MS * 1_000_000);
    }
    println!("RESULT fig10_tx sandbox=1 sent={} failures={} resets={}", seq, failures, resets);
    0
}

fn receiver(me: u32, secs: u64, every_ms: u64) -> i32 {
    let h = chan::open(1);
    if h < 0 {
        println!("fig10: open to 1 failed: error {}", h);
        return 1;
    }
    let start = sys::clock_monotonic_ns();
    let mut second = 0u64;
    let (mut got, mut corrupt, mut resets) = (0u64, 0u64, 0u64);
    let mut buf = [0u8; 64];
    loop {
        let now = sys::clock_monotonic_ns() - start;
        // Drain what is queued.
        loop {
            let r = chan::recv(h, &mut buf, 0, 0);
            if r == -chan::ECONNRESET {
                resets += 1;
                continue;
            }
            if r < 0 {
                break;
            }
            let ok = r == 16 && u64::from_le_bytes(buf[..8].try_into().unwrap()) ^ CHECK == u64::from_le_bytes(buf[8..16].try_into().unwrap());
            if ok {
                got += 1;
            } else {
                corrupt += 1;
            }
        }
        while now >= (second + 1) * 1_000_000_000 {
            println!("RESULT fig10_rx sandbox={} second={} got={} corrupt={} resets={} end_cycles={}", me, second, got, corrupt, resets, sys::cycles());
            (got, corrupt, resets) = (0, 0, 0);
            second += 1;
        }
        if second >= secs {
            return 0;
        }
        sys::nanosleep(every_ms * 1_000_000);
    }
}
