//! `ping`: boot a build with an e1000 on a loopback UDP backend, play the host peer (src/peer/) against the
//! guests' addresses, end the guests' `netserve` with the stop marker, and put the peer's view (losses, RTTs)
//! beside the guests' (interrupts per CPU/sandbox, frames, drops, VM exits). The figures (paper Figs 8 and 11)
//! are runs of this with different set-ups.
#![forbid(unsafe_code)]

use crate::peer::{self, PeerConfig, PeerReport};
use crate::{boot, parse_result_line, BootOptions, BootReport, Emulator, Outcome, ResultLine};
use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingOptions {
    pub boot: BootOptions,
    /// Guests pinged: 10.0.0.2 .. 10.0.0.(1+K) (SMP: only 1 exists).
    pub guests: u32,
    /// VT: sandboxes sharing the NIC (at least `guests`; more means interrupts to sandboxes nobody pings).
    pub sharers: u32,
    pub count: u32,
    pub interval_ms: u64,
    pub size: usize,
    pub garbage: u32,
    pub seed: u64,
    /// VT fault injection during the run: `KIND SANDBOX [after_pings=N|after_ms=MS]` (`ktest inject`), with
    /// the monitor's `--recovery` policy deciding what follows.
    pub inject: Option<String>,
    /// The program the guests run instead of `netserve SECS` (it must end on its own).
    pub program: Option<String>,
}

impl Default for PingOptions {
    fn default() -> Self {
        PingOptions { boot: BootOptions { cpus: 2, ..BootOptions::default() }, guests: 1, sharers: 0, count: 100, interval_ms: 10, size: 56, garbage: 0, seed: 1, inject: None, program: None }
    }
}

/// The guest's side of one kernel (SMP kernel or sandbox): from `RESULT net`, `net_irqs`, `net_drops`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GuestSide {
    /// -1: the SMP kernel.
    pub sandbox: i64,
    pub ip: String,
    pub irqs: u64,
    pub irqs_per_cpu: Vec<u64>,
    pub rx_mine: u64,
    pub rx_not_mine: u64,
    pub tx: u64,
    pub drops: u64,
    pub vmexits: i64,
}

/// What the guests printed about their interfaces.
pub fn guest_sides(lines: &[String]) -> Vec<GuestSide> {
    let results: Vec<ResultLine> = lines.iter().filter_map(|l| parse_result_line(l)).collect();
    let sandbox_of = |r: &ResultLine| r.get("sandbox").and_then(|s| s.parse::<i64>().ok()).unwrap_or(-1);
    let mut out = Vec::new();
    for r in results.iter().filter(|r| r.name == "net" && r.get("ip").is_some()) {
        let sb = sandbox_of(r);
        let mut g = GuestSide {
            sandbox: sb,
            ip: r.get("ip").unwrap_or("").to_string(),
            irqs: r.get_u64("irqs").unwrap_or(0),
            rx_mine: r.get_u64("rx_mine").unwrap_or(0),
            rx_not_mine: r.get_u64("rx_not_mine").unwrap_or(0),
            tx: r.get_u64("tx").unwrap_or(0),
            vmexits: r.get("vmexits").and_then(|v| v.parse().ok()).unwrap_or(-1),
            ..GuestSide::default()
        };
        if let Some(i) = results.iter().find(|x| x.name == "net_irqs" && sandbox_of(x) == sb) {
            g.irqs_per_cpu = (0..8).map(|c| i.get_u64(&format!("cpu{c}")).unwrap_or(0)).collect();
        }
        if let Some(d) = results.iter().find(|x| x.name == "net_drops" && sandbox_of(x) == sb) {
            g.drops = d.get_u64("total").unwrap_or(0);
        }
        out.push(g);
    }
    out.sort_by_key(|g| g.sandbox);
    out
}

/// A UDP port P with P and P+1 free on 127.0.0.1 (the emulator binds P, the peer P+1).
pub fn free_port_pair() -> Result<u16, String> {
    for _ in 0..200 {
        let probe = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let p = probe.local_addr().map_err(|e| e.to_string())?.port();
        if p >= 65000 {
            continue;
        }
        if UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return Ok(p);
        }
    }
    Err("no free pair of UDP ports on 127.0.0.1".into())
}

/// The stop marker (frame::STOP_ID / STOP_PAYLOAD in the kernel): an echo request the guest's demultiplexer
/// recognises, which ends `netserve`. Sent a few times: Bochs takes one frame per millisecond at most.
/// Every sharer gets one, pinged or not (to the broadcast MAC: the demultiplexer matches the IP).
fn send_stop(port: u16, sharers: &[Ipv4Addr]) {
    let Ok(sock) = UdpSocket::bind(("127.0.0.1", port + 1)).or_else(|_| UdpSocket::bind("127.0.0.1:0")) else { return };
    for _ in 0..5 {
        for &ip in sharers {
            let icmp = peer::build_icmp_echo(peer::ICMP_ECHO_REQUEST, 0x5170, 0, b"QUESTV-STOP");
            let f = peer::build_ipv4_frame(peer::BROADCAST_MAC, peer::PEER_MAC, peer::PEER_IP, ip, peer::IP_PROTO_ICMP, 0x5170, &icmp);
            let _ = sock.send_to(&f, ("127.0.0.1", port));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub struct PingRun {
    pub peer: PeerReport,
    pub boot: BootReport,
    pub guests: Vec<GuestSide>,
    pub options: PingOptions,
}

impl PingRun {
    /// Every pinged guest answered every request, the run ended cleanly.
    pub fn all_answered(&self) -> bool {
        self.boot.outcome == Outcome::Done(0)
            && !self.peer.guests.is_empty()
            && self.peer.guests.iter().all(|g| g.sent == self.options.count && g.received == g.sent && g.dup == 0 && g.bad == 0)
    }

    /// The run's RESULT lines (peer and guests), as printed.
    pub fn result_lines(&self) -> Vec<String> {
        let mut out = peer::result_lines(&self.peer);
        // The longest outage per guest (a recovery in the run shows up here).
        for g in &self.peer.guests {
            if let Some(o) = peer::longest_outage(&g.samples) {
                out.push(format!("RESULT ping_outage guest={} first_lost_seq={} lost={} downtime_us={}", g.ip, o.first_lost_seq, o.lost, o.downtime_us));
            }
        }
        // The NIC as the kernel (SMP) or the monitor (VT) set it up (and what confines its DMA), and the
        // sandboxes without one; faults, blocked DMA and recoveries the monitor reported.
        for l in &self.boot.lines {
            match parse_result_line(l) {
                Some(r) if ["nic", "nic_programmed", "iommu", "dma_fault", "nic_write_refused", "sandbox_refused", "nic_lock_stuck", "nic_repaired", "nic_rings_repaired", "nic_guard", "nic_ring_tamper", "vmexits"].contains(&r.name.as_str()) && r.from_monitor() => out.push(l.clone()),
                // What an attacking guest (`--run "ktest attack .."`) says it did, and each driver's start (its
                // identity on the shared NIC, per incarnation).
                Some(r) if ["attack", "net_up"].contains(&r.name.as_str()) && !r.from_monitor() => out.push(l.clone()),
                Some(r) if ["sandbox_fault", "sandbox_recovered", "sandbox_ready", "nic_leave", "sandbox_takeover", "sandbox_takeover_done"].contains(&r.name.as_str()) && r.from_monitor() => out.push(l.clone()),
                Some(r) if r.name == "net" && r.get("nic") == Some("none") => {
                    out.push(format!("RESULT ping_guest sandbox={} nic=none", r.get("sandbox").unwrap_or("?")))
                }
                _ => {}
            }
        }
        for g in &self.guests {
            let per_cpu: Vec<String> = g.irqs_per_cpu.iter().enumerate().filter(|(_, &n)| n > 0).map(|(c, n)| format!("cpu{c}:{n}")).collect();
            out.push(format!(
                "RESULT ping_guest sandbox={} ip={} irqs={} irqs_per_cpu={} rx_mine={} rx_not_mine={} tx={} drops={} vmexits={}",
                g.sandbox, g.ip, g.irqs, if per_cpu.is_empty() { "-".into() } else { per_cpu.join(",") }, g.rx_mine, g.rx_not_mine, g.tx, g.drops, g.vmexits
            ));
        }
        out
    }

    pub fn tag(&self) -> String {
        let o = &self.options;
        format!("ping-{}-{}-{}cpus-{}g-{}x{}ms", o.boot.emulator.name(), o.boot.mode(), o.boot.cpus, o.guests, o.count, o.interval_ms)
    }
}

/// Boot and ping. The guest runs `netserve` until the stop marker comes.
pub fn ping_run(o: &PingOptions) -> Result<PingRun, String> {
    let port = free_port_pair()?;
    let guests = if o.boot.vt { o.guests.max(1) } else { 1 };
    let sharers = if o.boot.vt { o.sharers.max(guests) } else { 1 };
    if o.boot.vt && sharers > o.boot.cpus {
        return Err(format!("--guests/--sharers {sharers} needs as many sandboxes (--cpus {})", o.boot.cpus));
    }
    let slow = o.boot.emulator == Emulator::Bochs;
    let arp_timeout = Duration::from_secs(if slow { 900 } else { 240 });
    let serve_secs = arp_timeout.as_secs() + (u64::from(o.count) * o.interval_ms) / 1000 + 120;
    let boot_opts = BootOptions {
        nic_port: Some(port),
        nic_sharers: sharers,
        run: Some({
            // `--run` (or a figure's own program) instead of netserve; it must serve until the stop marker too.
            let program = o.program.clone().or_else(|| o.boot.run.clone()).unwrap_or_else(|| format!("netserve {serve_secs}"));
            match &o.inject {
                Some(i) => format!("ktest inject {i} -- {program}"),
                None => program,
            }
        }),
        timeout: Some(o.boot.timeout.unwrap_or(serve_secs + 120)),
        ..o.boot.clone()
    };
    // Sharer j's address: a partition file's, else 10.0.0.2 + j (the monitor's choice).
    let ip_of = |j: usize| o.boot.partition.as_ref().map_or(crate::partitions::default_sharer_ip(j), |p| p.sharer_ip(j));
    let ips: Vec<Ipv4Addr> = (0..guests as usize).map(|i| Ipv4Addr::from(ip_of(i))).collect();
    let cfg = PeerConfig {
        count: o.count,
        interval: Duration::from_millis(o.interval_ms),
        size: o.size,
        garbage: o.garbage,
        seed: o.seed,
        arp_timeout,
        reply_timeout: Duration::from_secs(if slow { 10 } else { 3 }),
        ..PeerConfig::new(port, ips)
    };
    let all_sharers = o.boot.partition.as_ref().map_or(sharers as usize, |p| p.nic_sharers().len());
    let stop_to: Vec<Ipv4Addr> = (0..all_sharers).map(|j| Ipv4Addr::from(ip_of(j))).collect();
    let booting = std::thread::spawn(move || boot(&boot_opts));
    let stop = AtomicBool::new(false);
    let peer_report = peer::run_peer(&cfg, &stop).map_err(|e| format!("host peer: {e}"));
    send_stop(port, &stop_to);
    let boot_report = booting.join().map_err(|_| "the boot thread panicked".to_string())??;
    let peer_report = peer_report?;
    let guests = guest_sides(&boot_report.lines);
    Ok(PingRun { peer: peer_report, boot: boot_report, guests, options: o.clone() })
}

/// `ping` as a command: run, print, write the samples CSV. Returns the printed text and the CSV path.
pub fn ping(o: &PingOptions) -> Result<(String, PathBuf, bool), String> {
    let run = ping_run(o)?;
    let mut text = run.result_lines().join("\n");
    text.push('\n');
    let dir = crate::results_dir()?;
    let path = dir.join(format!("{}.csv", run.tag()));
    std::fs::write(&path, peer::samples_csv(&run.peer)).map_err(|e| format!("{}: {e}", path.display()))?;
    // The whole serial log beside the samples, for a run worth a closer look.
    let log = dir.join(format!("{}.log", run.tag()));
    std::fs::write(&log, run.boot.lines.join("\n")).map_err(|e| format!("{}: {e}", log.display()))?;
    if run.boot.outcome != Outcome::Done(0) {
        let tail: Vec<&str> = run.boot.lines.iter().rev().take(15).map(String::as_str).collect::<Vec<_>>().into_iter().rev().collect();
        text.push_str(&format!("guest run ended with {:?}; last lines:\n{}\n", run.boot.outcome, tail.join("\n")));
    }
    let ok = run.all_answered();
    Ok((text, path, ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_sides_are_read_from_the_net_lines() {
        let lines: Vec<String> = [
            "[s0] RESULT net sandbox=0 ip=10.0.0.2 irqs=177 rx_slots=269 rx_mine=133 rx_not_mine=135 rx_bad_slot=0 rx_queue_full=0 tx=133 tx_errors=0 polls=285 stop=1 vmexits=0",
            "[s0] RESULT net_drops sandbox=0 total=7 runt=7",
            "[s0] RESULT net_irqs sandbox=0 cpu0=177 cpu1=0 cpu2=0 cpu3=0 cpu4=0 cpu5=0 cpu6=0 cpu7=0",
            "[s2] RESULT net sandbox=2 nic=none",
            "RESULT net sandbox=-1 ip=10.0.0.2 irqs=5 rx_mine=4 rx_not_mine=0 tx=4 vmexits=-1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let g = guest_sides(&lines);
        assert_eq!(g.len(), 2, "the sandbox without a NIC is not a guest");
        assert_eq!((g[0].sandbox, g[0].irqs, g[0].drops, g[0].vmexits), (-1, 5, 0, -1));
        assert_eq!((g[1].sandbox, g[1].irqs, g[1].rx_not_mine, g[1].drops, g[1].vmexits), (0, 177, 135, 7, 0));
        assert_eq!(g[1].irqs_per_cpu[0], 177);
    }

    #[test]
    fn port_pairs_are_free() {
        let p = free_port_pair().unwrap();
        UdpSocket::bind(("127.0.0.1", p)).unwrap();
        UdpSocket::bind(("127.0.0.1", p + 1)).unwrap();
    }
}
