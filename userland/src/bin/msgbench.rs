//! Channel benchmark (paper Figure 9): message sizes 4 B .. 4 KiB, round trip and one-way cost in cycles,
//! polled and IPI-notified. Endpoint 0 is the client, endpoint 1 echoes; run as `percpu msgbench T [VCPU]` (SMP)
//! or `msgbench T [VCPU]` (VT, one per sandbox). Prints `RESULT msgbench build=.. size=.. mode=.. trials=..
//! rtt_cycles=.. one_way_cycles=.. vcpu=..`.
//!
//! VCPU (docs/scheduling.md, paper §4.4): `none` (default) leaves both endpoints on the default VCPU with the core
//! to themselves. `hi` and `lo` put each endpoint on a Main VCPU and a CPU-bound competitor beside it on another,
//! so the endpoint gets what its VCPU guarantees and no more than its share of background time:
//!   hi: endpoint 50 % (5 ms / 10 ms, the core's highest priority), competitor 40 % (40 ms / 100 ms);
//!   lo: endpoint 40 % (40 ms / 100 ms), competitor 50 % (5 ms / 10 ms, above the endpoint).
#![no_std]
#![no_main]

use questv_libc_shim::{self as sys, chan, println, vcpu};

questv_libc_shim::entry!(main);

const ECHO: u8 = b'E';
const STREAM: u8 = b'S';
const ACK: u8 = b'A';
const QUIT: u8 = b'Q';
const TIMEOUT: u64 = 120_000_000_000;

/// A VCPU set-up: (endpoint budget, period), (competitor budget, period), in microseconds.
type VcpuSetup = ((u64, u64), (u64, u64));
const HI: VcpuSetup = ((5_000, 10_000), (40_000, 100_000));
const LO: VcpuSetup = ((40_000, 100_000), (5_000, 10_000));

fn main(args: &[&str]) -> i32 {
    let usage = || {
        println!("usage: msgbench [TRIALS [none|hi|lo]]");
        2
    };
    let Some(trials) = questv_userland::arg_u64(args, 1, 5000) else {
        return usage();
    };
    let (vcpu_name, setup) = match args.get(2).copied() {
        None | Some("none") => ("none", None),
        Some("hi") => ("hi", Some(HI)),
        Some("lo") => ("lo", Some(LO)),
        Some(_) => return usage(),
    };
    let me = chan::endpoint();
    if !(0..=1).contains(&me) {
        return 0;
    }
    let competitor = match setup {
        Some(s) => match start_competitor(s) {
            Ok(c) => Some(c),
            Err(e) => {
                println!("msgbench: VCPU set-up {} failed: error {}", vcpu_name, e);
                return 1;
            }
        },
        None => None,
    };
    let status = bench(me, trials, vcpu_name);
    if let Some(c) = competitor {
        stop_competitor(c);
    }
    status
}

/// A CPU-bound child on its own VCPU; the parent binds itself to the endpoint's VCPU. Returns (pid, VCPU).
fn start_competitor(((eb, ep), (cb, cp)): VcpuSetup) -> Result<(i64, u32), i64> {
    let endpoint_vcpu = vcpu::create(vcpu::MAIN, eb, ep);
    if endpoint_vcpu < 0 {
        return Err(endpoint_vcpu);
    }
    let competitor_vcpu = vcpu::create(vcpu::MAIN, cb, cp);
    if competitor_vcpu < 0 {
        return Err(competitor_vcpu);
    }
    let competitor_vcpu = competitor_vcpu as u32;
    let pid = sys::fork();
    if pid == 0 {
        if vcpu::bind(competitor_vcpu) < 0 {
            sys::exit(1);
        }
        // Spin until the parent signals the end by lowering this VCPU's budget (no signals in questv yet; the
        // VCPU is a kernel object both can see).
        loop {
            for _ in 0..10_000 {
                core::hint::spin_loop();
            }
            match vcpu::info(competitor_vcpu) {
                Ok(i) if i.budget_us == cb => {}
                _ => sys::exit(0),
            }
        }
    }
    if pid < 0 {
        return Err(pid);
    }
    let r = vcpu::bind(endpoint_vcpu as u32);
    if r < 0 {
        return Err(r);
    }
    Ok((pid, competitor_vcpu))
}

fn stop_competitor((pid, competitor_vcpu): (i64, u32)) {
    if let Ok(i) = vcpu::info(competitor_vcpu) {
        // A smaller budget is always admitted.
        vcpu::set(competitor_vcpu, i.budget_us / 2, i.period_us);
    }
    sys::waitpid(pid, 0);
}

fn bench(me: i64, trials: u64, vcpu_name: &str) -> i32 {
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
                QUIT => {
                    // Polled (no IPI): the client leaves, closing the channel, only after reading this, so
                    // every notification this side sent reached the monitor while the channel was open.
                    chan::send(h, &[QUIT, 0], 0);
                    return 0;
                }
                _ => {}
            }
        }
    }
    let build = if sys::sandbox().is_some() { "vt" } else { "smp" };
    // Where a small message's cycles go: a system call that does nothing, and a receive that finds the ring
    // empty (argument checks, handle lookup, ring check), before the peer has been sent anything.
    const N: u64 = 2000;
    let t0 = sys::cycles();
    for _ in 0..N {
        sys::getpid();
    }
    let null_syscall = (sys::cycles() - t0) / N;
    let t0 = sys::cycles();
    for _ in 0..N {
        chan::recv(h, &mut buf[..4], 0, 0);
    }
    let recv_empty = (sys::cycles() - t0) / N;
    println!("RESULT msgcost build={} null_syscall_cycles={} recv_empty_cycles={} vcpu={}", build, null_syscall, recv_empty, vcpu_name);
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
                "RESULT msgbench build={} size={} mode={} trials={} rtt_cycles={} one_way_cycles={} rtt_vmexits={} rtt_notified={} vcpu={}",
                build, size, mode, trials, rtt, one_way, vmexits, if flags != 0 { trials } else { 0 }, vcpu_name
            );
            size *= 2;
        }
    }
    // Wait for the server's unnotified goodbye before closing: its last notification (the ACK above) may
    // still be on its way to the monitor when the ACK's bytes are already in the ring, and a notification to
    // a closed channel is refused.
    chan::send(h, &[QUIT, 0], 0);
    chan::recv(h, &mut buf, TIMEOUT, 0);
    0
}
