//! Channel benchmark (paper Figure 9): message sizes 4 B .. 4 KiB, round trip and one-way cost in cycles,
//! polled and IPI-notified. Endpoint 0 is the client, endpoint 1 echoes; run as `percpu msgbench T` (SMP) or
//! `msgbench T` (VT, one per sandbox). Prints `RESULT msgbench build=.. size=.. mode=.. trials=.. rtt_cycles=..
//! one_way_cycles=..`.
#![no_std]
#![no_main]

use questv_libc_shim::{self as sys, chan, println};

questv_libc_shim::entry!(main);

const ECHO: u8 = b'E';
const STREAM: u8 = b'S';
const ACK: u8 = b'A';
const QUIT: u8 = b'Q';
const TIMEOUT: u64 = 120_000_000_000;

fn main(args: &[&str]) -> i32 {
    let Some(trials) = questv_userland::arg_u64(args, 1, 5000) else {
        println!("usage: msgbench [TRIALS]");
        return 2;
    };
    let me = chan::endpoint();
    if !(0..=1).contains(&me) {
        return 0;
    }
    let h = chan::open(1 - me as u32);
    if h < 0 {
        println!("msgbench: open failed: error {}", h);
        return 1;
    }
    let mut buf = [0u8; 4096];
    if me == 1 {
        // Echo server: wait the way the client's last message asked for (byte 1: 1 = IPI).
        let mut flags = 0;
        loop {
            let r = chan::recv(h, &mut buf, TIMEOUT, flags);
            if r < 1 {
                println!("msgbench: server receive failed: error {}", r);
                return 1;
            }
            flags = u64::from(r > 1 && buf[1] == 1);
            match buf[0] {
                ECHO => {
                    chan::send(h, &buf[..r as usize], flags);
                }
                ACK => {
                    chan::send(h, &[ACK, flags as u8], flags);
                }
                QUIT => return 0,
                _ => {}
            }
        }
    }
    let build = if sys::sandbox().is_some() { "vt" } else { "smp" };
    for (mode, flags) in [("polled", 0u64), ("ipi", chan::NOTIFY)] {
        let mut size = 4usize;
        while size <= 4096 {
            buf[..size].fill(0x5A);
            buf[1] = flags as u8;
            let round_trip = |buf: &mut [u8; 4096]| {
                buf[0] = ECHO;
                buf[1] = flags as u8;
                chan::send(h, &buf[..size], flags);
                chan::recv(h, buf, TIMEOUT, flags)
            };
            for _ in 0..trials.min(100) {
                round_trip(&mut buf);
            }
            let exits_before = sys::vmexits();
            let t0 = sys::cycles();
            for _ in 0..trials {
                if round_trip(&mut buf) < 0 {
                    println!("msgbench: round trip failed");
                    return 1;
                }
            }
            let rtt = (sys::cycles() - t0) / trials;
            // VT: this endpoint's exits during the round trips (minus the second query's own); each round trip
            // sends one message, notified in `ipi` mode (an ICR write the monitor checks). -1 on SMP.
            let vmexits = if exits_before < 0 { -1 } else { sys::vmexits() - exits_before - 1 };
            let t0 = sys::cycles();
            for _ in 0..trials {
                buf[0] = STREAM;
                buf[1] = flags as u8;
                while chan::send(h, &buf[..size], flags) < 0 {}
            }
            chan::send(h, &[ACK, flags as u8], flags);
            chan::recv(h, &mut buf, TIMEOUT, flags);
            let one_way = (sys::cycles() - t0) / trials;
            println!(
                "RESULT msgbench build={} size={} mode={} trials={} rtt_cycles={} one_way_cycles={} rtt_vmexits={} rtt_notified={}",
                build, size, mode, trials, rtt, one_way, vmexits, if flags != 0 { trials } else { 0 }
            );
            size *= 2;
        }
    }
    chan::send(h, &[QUIT, 0], 0);
    0
}
