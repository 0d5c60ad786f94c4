//! netserve: keep the network interface serving (the kernel's driver thread answers ARP and pings) until the
//! host peer sends its end-of-run marker or SECS pass, then print what the interface saw:
//! `RESULT net sandbox=.. ip=.. irqs=.. rx_slots=.. rx_mine=.. ... vmexits=..` (vmexits: during the serving,
//! VT only; -1 on the SMP build). Exit status 0 if the interface was up and the marker came, 1 otherwise.
#![no_std]
#![no_main]

use questv_libc_shim::{self as sys, net, println};

questv_libc_shim::entry!(main);

fn main(args: &[&str]) -> i32 {
    let Some(secs) = questv_userland::arg_u64(args, 1, 300) else {
        println!("usage: netserve [SECS]");
        return 2;
    };
    // No NIC given to this kernel (a VT sandbox that does not share it): nothing to serve.
    if net::info().err() == Some(-sys::errno::ENODEV) {
        println!("RESULT net sandbox={} nic=none", sys::sandbox().map_or(-1, i64::from));
        return 0;
    }
    // The driver thread may still be bringing the NIC up: give it a few seconds.
    let mut up = false;
    for _ in 0..100 {
        if net::info().is_ok_and(|i| i.up != 0) {
            up = true;
            break;
        }
        sys::nanosleep(50_000_000);
    }
    if !up {
        println!("RESULT net sandbox={} up=0", sys::sandbox().map_or(-1, i64::from));
        return 1;
    }
    println!("RESULT net_serving sandbox={} secs={}", sys::sandbox().map_or(-1, i64::from), secs);
    let exits_before = sys::vmexits();
    let stopped = net::wait_stop(secs * 1000);
    let vmexits = if exits_before < 0 { -1 } else { sys::vmexits() - exits_before - 1 };
    let Ok(i) = net::info() else {
        println!("netserve: net info failed");
        return 1;
    };
    let ip = (i.ip as u32).to_be_bytes();
    println!(
        "RESULT net sandbox={} ip={}.{}.{}.{} irqs={} rx_slots={} rx_mine={} rx_not_mine={} rx_bad_slot={} rx_queue_full={} tx={} tx_errors={} polls={} stop={} vmexits={}",
        sys::sandbox().map_or(-1, i64::from), ip[0], ip[1], ip[2], ip[3], i.irqs, i.rx_slots, i.rx_mine,
        i.rx_not_mine, i.rx_bad_slot, i.rx_queue_full, i.tx_frames, i.tx_errors, i.polls, i.stop_seen, vmexits
    );
    let d = i.drops;
    println!(
        "RESULT net_drops sandbox={} total={} {}={} {}={} {}={} {}={} {}={} {}={} {}={} {}={} {}={}",
        sys::sandbox().map_or(-1, i64::from), d.iter().sum::<u64>(),
        net::DROP_NAMES[0], d[0], net::DROP_NAMES[1], d[1], net::DROP_NAMES[2], d[2], net::DROP_NAMES[3], d[3],
        net::DROP_NAMES[4], d[4], net::DROP_NAMES[5], d[5], net::DROP_NAMES[6], d[6], net::DROP_NAMES[7], d[7],
        net::DROP_NAMES[8], d[8]
    );
    let c = i.irqs_per_cpu;
    println!(
        "RESULT net_irqs sandbox={} cpu0={} cpu1={} cpu2={} cpu3={} cpu4={} cpu5={} cpu6={} cpu7={}",
        sys::sandbox().map_or(-1, i64::from), c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
    );
    if stopped == 1 {
        0
    } else {
        1
    }
}
