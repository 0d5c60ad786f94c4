//! `ktest attack` kinds aimed at the channel machinery: a peer flooding another with notifications
//! (`peer-ipi-flood`, which the victim ends by closing the channel) and a sandbox asking for channels nobody
//! agreed to (`channel-exhaust`). Both report what they saw; the tests compare that with the monitor's counts.
#![forbid(unsafe_code)]

use questv_arch::{cpu, lapic};
use questv_kernel::channel::endpoint::{self, VECTOR_CHANNEL};
use questv_kernel::{kprintln, result, sandbox, time};
use crate::util::pause_ms;

/// The victim holds the channel open this long under the flood, then closes it and watches this long more.
const OPEN_MS: u64 = 1500;
const CLOSED_MS: u64 = 2000;
/// The attacker floods for longer than the victim watches.
const FLOOD_MS: u64 = OPEN_MS + CLOSED_MS + 1000;

/// Sandbox 0: open the channel with sandbox 1 (which agrees), then write the notification IPI to it as fast as
/// the monitor takes the writes.
pub(crate) fn flood_attacker() -> i32 {
    if let Err(e) = endpoint::open(1) {
        kprintln!("ktest attack peer-ipi-flood: sandbox 1 never opened the channel ({e})");
        return 2;
    }
    let Ok(apic) = sandbox::peer_apic(1) else { return 2 };
    let end = cpu::rdtsc() + time::ms_to_cycles(FLOOD_MS);
    let mut sent = 0u64;
    while cpu::rdtsc() < end {
        lapic::send_ipi(apic, VECTOR_CHANNEL);
        sent += 1;
    }
    result!("attack", "kind=peer-ipi-flood role=attacker sent={} ms={}", sent, FLOOD_MS);
    0
}

/// Sandbox 1: open the channel, count the notifications taken while it is open under the flood, close it,
/// count again. After the close the monitor must deliver none.
pub(crate) fn flood_victim() -> i32 {
    let h = match endpoint::open(0) {
        Ok(h) => h,
        Err(e) => {
            kprintln!("ktest attack peer-ipi-flood: cannot open the channel to 0 ({e})");
            return 2;
        }
    };
    let t0 = sandbox::notifications_taken();
    pause_ms(OPEN_MS);
    let t1 = sandbox::notifications_taken();
    let closed = endpoint::close(h).is_ok();
    let t2 = sandbox::notifications_taken();
    pause_ms(CLOSED_MS);
    let t3 = sandbox::notifications_taken();
    let ok = closed && t3 == t2;
    result!(
        "attack",
        "kind=peer-ipi-flood role=victim taken_open={} taken_closing={} taken_closed={} closed={} outcome={}",
        t1 - t0, t2 - t1, t3 - t2, u8::from(closed), if ok { "refused" } else { "not_contained" }
    );
    i32::from(!ok)
}

/// Sandbox 2: ask for a channel with every other sandbox (none of them agrees), then open and close one
/// request a thousand times. Nothing may get memory or a mapping: every open must say "not yet" (EAGAIN), no
/// channel of its shows up in the directory, and every close of a request succeeds.
pub(crate) fn channel_exhaust() -> i32 {
    const EAGAIN: i64 = 11;
    const CHURN: u32 = 1000;
    let me = sandbox::id().unwrap_or(0);
    let n = sandbox::count();
    let mut pending = 0;
    let mut granted = 0;
    for peer in (0..n).filter(|&p| p != me) {
        match sandbox::channel_open(peer) {
            Err(e) if e == -EAGAIN => pending += 1,
            Ok(addr) => {
                kprintln!("ktest attack channel-exhaust: sandbox {me} got channel memory with {peer} at 0x{addr:x} unasked");
                granted += 1;
            }
            Err(e) => kprintln!("ktest attack channel-exhaust: open({peer}) = {e}"),
        }
    }
    let mut churn_bad = 0;
    for _ in 0..CHURN {
        let opened = matches!(sandbox::channel_open(1), Err(e) if e == -EAGAIN);
        let closed = sandbox::channel_close(1).is_ok();
        churn_bad += u32::from(!(opened && closed));
    }
    let listed = (0..n).filter(|&p| p != me && sandbox::channel_listed(me, p)).count();
    let ok = granted == 0 && listed == 0 && churn_bad == 0 && pending == n - 1;
    result!(
        "attack",
        "kind=channel-exhaust pending={} granted={} listed={} churn={} churn_bad={} outcome={}",
        pending, granted, listed, CHURN, churn_bad, if ok { "refused" } else { "not_contained" }
    );
    i32::from(!ok)
}
