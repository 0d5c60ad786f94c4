//! A sequence service and its client, for stateful recovery (docs/recovery.md): endpoint 1 hands out
//! increasing numbers on request, endpoint 0 asks for N of them. The service checkpoints its next number with
//! the monitor (`state::save`) before every answer and loads it when it starts, so if its sandbox is recovered
//! the numbers carry on where they were: the client sees no reset. With `--stateless` the service starts from
//! 0 every time, and a client next to a recovered service does see one.
//!
//! Client: `RESULT seq role=client received=N resets=R max_gap=G peer_restarts=P` (a reset: a number not above
//! the last one). Service: `RESULT seq role=service incarnation=I start=S served=K`.
#![no_std]
#![no_main]

use questv_libc_shim::{chan, println, state};

questv_libc_shim::entry!(main);

const STOP: u64 = u64::MAX;
/// How long the client waits for an answer before asking again (a recovering service takes a fraction of a
/// second in QEMU; asking again is harmless: every answer is a fresh number).
const ANSWER_TIMEOUT_NS: u64 = 200_000_000;

fn main(args: &[&str]) -> i32 {
    let stateless = args.contains(&"--stateless");
    let rest: alloc_free::Args = alloc_free::Args::new(args);
    let Some(n) = questv_userland::arg_u64(rest.as_slice(), 1, 200) else {
        println!("usage: seq [N] [--stateless]");
        return 2;
    };
    let me = chan::endpoint();
    match me {
        0 => client(n),
        1 => service(stateless),
        _ => {
            println!("RESULT seq role=idle endpoint={}", me);
            0
        }
    }
}

fn client(n: u64) -> i32 {
    let h = chan::open(1);
    if h < 0 {
        println!("seq: open failed: error {}", h);
        return 1;
    }
    let (mut received, mut resets, mut max_gap, mut peer_restarts) = (0u64, 0u64, 0u64, 0u64);
    let mut last: Option<u64> = None;
    let mut buf = [0u8; 8];
    let mut failures = 0u64;
    while received < n {
        let s = chan::send(h, &0u64.to_le_bytes(), 0);
        if s == -chan::ECONNRESET {
            peer_restarts += 1;
            continue;
        }
        let r = chan::recv(h, &mut buf, ANSWER_TIMEOUT_NS, 0);
        if r == -chan::ECONNRESET {
            peer_restarts += 1;
            continue;
        }
        if r != 8 {
            // No answer in time (the service is being recovered): ask again.
            failures += 1;
            if failures > 600 {
                println!("seq: the service stopped answering after {} numbers", received);
                return 1;
            }
            continue;
        }
        failures = 0;
        let v = u64::from_le_bytes(buf);
        match last {
            Some(l) if v <= l => resets += 1,
            Some(l) => max_gap = max_gap.max(v - l),
            None => {}
        }
        last = Some(v);
        received += 1;
    }
    // Tell the service to finish (it may be busy answering a retried request: try a few times).
    for _ in 0..10 {
        if chan::send(h, &STOP.to_le_bytes(), 0) == 0 {
            break;
        }
    }
    println!("RESULT seq role=client received={} resets={} max_gap={} peer_restarts={} last={}", received, resets, max_gap, peer_restarts, last.unwrap_or(0));
    i32::from(resets != 0)
}

fn service(stateless: bool) -> i32 {
    let mut next = 0u64;
    if !stateless {
        let mut saved = [0u8; 8];
        if state::load(&mut saved) == 8 {
            next = u64::from_le_bytes(saved);
        }
    }
    let start = next;
    let h = chan::open(0);
    if h < 0 {
        println!("seq: open failed: error {}", h);
        return 1;
    }
    let mut buf = [0u8; 8];
    let mut served = 0u64;
    loop {
        let r = chan::recv(h, &mut buf, 60_000_000_000, 0);
        if r == -chan::ECONNRESET {
            continue;
        }
        if r != 8 {
            println!("seq: no request for a minute (error {})", r);
            return 1;
        }
        if u64::from_le_bytes(buf) == STOP {
            break;
        }
        // The checkpoint first: a number handed out is never handed out again, whatever happens next.
        if !stateless && state::save(&(next + 1).to_le_bytes()) != 0 {
            println!("seq: checkpoint refused");
            return 1;
        }
        let _ = chan::send(h, &next.to_le_bytes(), 0);
        next += 1;
        served += 1;
    }
    println!("RESULT seq role=service incarnation={} start={} served={}", state::incarnation(), start, served);
    0
}

/// Arguments without the flags (no allocator in user programs).
mod alloc_free {
    pub struct Args<'a> {
        items: [&'a str; 8],
        len: usize,
    }
    impl<'a> Args<'a> {
        pub fn new(args: &[&'a str]) -> Self {
            let mut a = Args { items: [""; 8], len: 0 };
            for &s in args.iter().filter(|s| !s.starts_with("--")) {
                if a.len < a.items.len() {
                    a.items[a.len] = s;
                    a.len += 1;
                }
            }
            a
        }
        pub fn as_slice(&self) -> &[&'a str] {
            &self.items[..self.len]
        }
    }
}
