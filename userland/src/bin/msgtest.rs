//! Channel correctness test: endpoint 0 sends N messages (sizes 12 B .. 4 KiB, each carrying its sequence
//! number and a checksum of its body) to endpoint 1, which checks for loss, duplication and corruption.
//! Endpoints are sandboxes (VT) or cores (SMP: run it as `percpu msgtest N`); other endpoints idle.
#![no_std]
#![no_main]

use questv_libc_shim::{self as sys, chan, println};

questv_libc_shim::entry!(main);

fn body_byte(seq: u64, k: usize) -> u8 {
    (seq as u8).wrapping_mul(31).wrapping_add(k as u8)
}

fn fnv(data: &[u8]) -> u32 {
    data.iter().fold(0x811C_9DC5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

fn main(args: &[&str]) -> i32 {
    let Some(n) = questv_userland::arg_u64(args, 1, 100_000) else {
        println!("usage: msgtest [MESSAGES]");
        return 2;
    };
    let me = chan::endpoint();
    if !(0..=1).contains(&me) {
        println!("RESULT msgtest endpoint={} role=idle", me);
        return 0;
    }
    let h = chan::open(1 - me as u32);
    if h < 0 {
        println!("msgtest: open failed: error {}", h);
        return 1;
    }
    let exits_before = sys::vmexits();
    let mut buf = [0u8; 4096];
    if me == 0 {
        let mut failures = 0u64;
        for seq in 0..n {
            let len = 12 + (seq * 7 % 4085) as usize;
            buf[..8].copy_from_slice(&seq.to_le_bytes());
            for k in 12..len {
                buf[k] = body_byte(seq, k);
            }
            let sum = fnv(&buf[12..len]);
            buf[8..12].copy_from_slice(&sum.to_le_bytes());
            // The peer may still be booting: retry a few send timeouts before giving up.
            let mut tries = 0;
            while chan::send(h, &buf[..len], 0) < 0 {
                tries += 1;
                if tries == 10 {
                    failures += 1;
                    break;
                }
            }
        }
        let r = chan::recv(h, &mut buf, 60_000_000_000, 0);
        let vmexits = if exits_before < 0 { -1 } else { sys::vmexits() - exits_before - 1 };
        println!("RESULT msgtest endpoint=0 role=sender sent={} send_failures={} ack={} vmexits={}", n, failures, u8::from(r == 8), vmexits);
        return if failures == 0 && r == 8 { 0 } else { 1 };
    }
    let (mut received, mut lost, mut dup, mut corrupt, mut expected) = (0u64, 0u64, 0u64, 0u64, 0u64);
    while expected < n {
        let r = chan::recv(h, &mut buf, 30_000_000_000, 0);
        if r < 0 {
            println!("msgtest: receive failed after {} messages: error {}", received, r);
            break;
        }
        let len = r as usize;
        received += 1;
        if len < 12 {
            corrupt += 1;
            continue;
        }
        let seq = u64::from_le_bytes(buf[..8].try_into().unwrap());
        let sum = u32::from_le_bytes(buf[8..12].try_into().unwrap());
        let body_ok = len == 12 + (seq * 7 % 4085) as usize
            && fnv(&buf[12..len]) == sum
            && buf[12..len].iter().enumerate().all(|(i, &b)| b == body_byte(seq, i + 12));
        if !body_ok {
            corrupt += 1;
        }
        if seq < expected {
            dup += 1;
        } else {
            lost += seq - expected;
            expected = seq + 1;
        }
    }
    lost += n - expected;
    let vmexits = if exits_before < 0 { -1 } else { sys::vmexits() - exits_before - 1 };
    chan::send(h, &received.to_le_bytes(), 0);
    println!(
        "RESULT msgtest endpoint=1 role=receiver received={} lost={} dup={} corrupt={} vmexits={}",
        received, lost, dup, corrupt, vmexits
    );
    if received == n && lost == 0 && dup == 0 && corrupt == 0 { 0 } else { 1 }
}
