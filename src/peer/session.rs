//! A peer session: the configuration, the UDP socket to the emulator's backend, a receiving thread that stamps
//! frames as they arrive, and the main loop that keeps the schedule (resolve, ping with interleaved garbage,
//! drain).
#![forbid(unsafe_code)]

use super::hostile::{scaled, GarbagePlan, Rng};
use super::report::PeerReport;
use super::state::{micros, GuestState, PeerState};
use super::wire::*;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often an unresolved guest is asked for its MAC.
const ARP_RETRY: Duration = Duration::from_millis(200);
/// Longest the main loop sleeps without looking at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(10);
/// Read timeout of the receiving thread: how long it may take to notice that the run is over.
const RECV_POLL: Duration = Duration::from_millis(20);
/// Largest UDP payload, so no datagram is ever truncated.
const MAX_DATAGRAM: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer binds 127.0.0.1:bind_port (the emulator's port + 1); 0 = any free port.
    pub bind_port: u16,
    /// Frames go to 127.0.0.1:emulator_port.
    pub emulator_port: u16,
    pub guests: Vec<Ipv4Addr>,
    /// Echo requests per guest.
    pub count: u32,
    /// Between successive rounds (one echo request to each guest per round), scheduled from the first round.
    pub interval: Duration,
    /// ICMP payload bytes, [`MIN_PING_SIZE`]..=[`MAX_PING_SIZE`].
    pub size: usize,
    /// Hostile frames (events: an ARP flood burst counts once) spread between the rounds; 0 = none.
    pub garbage: u32,
    /// Seeds the choice of garbage kinds, targets and contents.
    pub seed: u64,
    /// Give up resolving a guest this long after the start (guests may take a minute to boot in Bochs).
    pub arp_timeout: Duration,
    /// After the last request, wait at most this long for stragglers.
    pub reply_timeout: Duration,
}

impl PeerConfig {
    /// The usual pairing (bind `emulator_port + 1`) with default experiment parameters: 100 pings of 56 bytes every
    /// 10 ms, no garbage, 120 s to resolve, 2 s for stragglers.
    pub fn new(emulator_port: u16, guests: Vec<Ipv4Addr>) -> Self {
        PeerConfig {
            bind_port: emulator_port.saturating_add(1),
            emulator_port,
            guests,
            count: 100,
            interval: Duration::from_millis(10),
            size: 56,
            garbage: 0,
            seed: 1,
            arp_timeout: Duration::from_secs(120),
            reply_timeout: Duration::from_secs(2),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The run: a receiving thread stamps frames as they arrive; the main loop keeps the schedule
// ---------------------------------------------------------------------------------------------------------------

/// Errors that do not end the run: timeouts, signals, and ICMP "port unreachable" echoes while the emulator is not
/// listening yet.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
    )
}

fn send_frame(sock: &UdpSocket, dest: SocketAddr, frame: &[u8]) -> io::Result<()> {
    match sock.send_to(frame, dest) {
        Ok(_) => Ok(()),
        Err(e) if transient(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

type Received = io::Result<(Vec<u8>, Instant)>;

/// Blocking receive on its own thread so each frame is stamped the moment it arrives (a socket read timeout is
/// rounded to kernel ticks, too coarse both for RTTs and for the schedule).
fn receive_loop(sock: UdpSocket, tx: mpsc::Sender<Received>, done: &AtomicBool) {
    if let Err(e) = sock.set_read_timeout(Some(RECV_POLL)) {
        let _ = tx.send(Err(e));
        return;
    }
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !done.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let at = Instant::now();
                let frame = buf.get(..n).unwrap_or_default().to_vec();
                if tx.send(Ok((frame, at))).is_err() {
                    return;
                }
            }
            Err(e) if transient(&e) => {}
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Resolve,
    Ping,
    Drain,
}

/// Exchange frames with the guests behind 127.0.0.1:`emulator_port` until the pings are done (see the module
/// docs), or `stop` becomes true (then the report covers what happened so far).
pub fn run_peer(cfg: &PeerConfig, stop: &AtomicBool) -> io::Result<PeerReport> {
    if !(MIN_PING_SIZE..=MAX_PING_SIZE).contains(&cfg.size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("ping size {} outside {MIN_PING_SIZE}..={MAX_PING_SIZE}", cfg.size),
        ));
    }
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, cfg.bind_port))?;
    let dest = SocketAddr::from((Ipv4Addr::LOCALHOST, cfg.emulator_port));
    let recv_sock = sock.try_clone()?;
    let start = Instant::now();
    let mut state = PeerState::new(&cfg.guests, cfg.size);
    let mut rng = Rng::new(cfg.seed);
    let mut garbage = GarbagePlan::new(cfg.garbage, &mut rng);
    let done = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    let result = std::thread::scope(|scope| {
        scope.spawn(|| receive_loop(recv_sock, tx, &done));
        let result = drive(cfg, stop, start, &sock, dest, &rx, &mut state, &mut garbage, &mut rng);
        done.store(true, Ordering::Relaxed); // lets the receiver (joined by the scope) finish
        result
    });
    result.map(|()| state.report(garbage.report()))
}

/// What the main loop works with: the configuration, the clock's origin and where frames go.
struct Link<'a> {
    cfg: &'a PeerConfig,
    start: Instant,
    sock: &'a UdpSocket,
    dest: SocketAddr,
}

impl Link<'_> {
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        send_frame(self.sock, self.dest, frame)
    }
}

/// Where the main loop is: its phase and the schedule's anchors (all since the start).
struct Schedule {
    phase: Phase,
    /// The first round.
    t0: Duration,
    next_round: u32,
    drain_until: Duration,
}

/// What a phase's step leaves the main loop to do.
enum Next {
    /// Wait for frames until then.
    Wait(Duration),
    /// The phase changed or something was sent: look again at once.
    Again,
    Done,
}

/// The main loop: do whatever is due, then wait for a frame until the next thing is due.
#[allow(clippy::too_many_arguments)]
fn drive(
    cfg: &PeerConfig,
    stop: &AtomicBool,
    start: Instant,
    sock: &UdpSocket,
    dest: SocketAddr,
    rx: &mpsc::Receiver<Received>,
    state: &mut PeerState,
    garbage: &mut GarbagePlan,
    rng: &mut Rng,
) -> io::Result<()> {
    // Addresses an ARP flood must not pretend to be: the peer's and the guests' own.
    let mut avoid = cfg.guests.clone();
    avoid.push(PEER_IP);
    let link = Link { cfg, start, sock, dest };
    let mut s = Schedule { phase: Phase::Resolve, t0: Duration::ZERO, next_round: 0, drain_until: Duration::ZERO };
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let now = start.elapsed();
        let next = match s.phase {
            Phase::Resolve => resolve_step(&link, now, state, &mut s)?,
            Phase::Ping => ping_step(&link, now, state, garbage, rng, &avoid, &mut s)?,
            Phase::Drain => drain_step(now, state, &s),
        };
        let wake = match next {
            Next::Wait(wake) => wake,
            Next::Again => continue,
            Next::Done => return Ok(()),
        };
        receive_until(&link, wake, rx, state)?;
    }
}

/// Resolve: ask every unresolved guest for its MAC (giving up at the ARP timeout); once none is pending, start
/// pinging, or end the run if nobody answered.
fn resolve_step(link: &Link, now: Duration, state: &mut PeerState, s: &mut Schedule) -> io::Result<Next> {
    let cfg = link.cfg;
    let mut wake = now + ARP_RETRY;
    let mut pending = false;
    for g in state.guests.iter_mut().filter(|g| g.mac.is_none() && !g.gave_up) {
        if now >= cfg.arp_timeout {
            g.gave_up = true;
            continue;
        }
        pending = true;
        if now >= g.next_arp {
            link.send(&ArpPacket::request(PEER_MAC, PEER_IP, g.ip).to_frame())?;
            g.next_arp = now + ARP_RETRY;
        }
        wake = wake.min(g.next_arp).min(cfg.arp_timeout);
    }
    if !pending {
        if state.guests.iter().all(|g| g.mac.is_none()) {
            return Ok(Next::Done); // nobody to ping
        }
        s.phase = Phase::Ping;
        s.t0 = link.start.elapsed();
        state.ping_start_us = micros(s.t0);
        return Ok(Next::Again);
    }
    Ok(Next::Wait(wake))
}

/// Ping: send the round or the garbage event that is due (whichever comes first); when neither is left, drain.
fn ping_step(link: &Link, now: Duration, state: &mut PeerState, garbage: &mut GarbagePlan, rng: &mut Rng, avoid: &[Ipv4Addr], s: &mut Schedule) -> io::Result<Next> {
    let cfg = link.cfg;
    // Rounds and garbage are scheduled from t0, never from "now", so lateness does not accumulate.
    let round_due = (s.next_round < cfg.count)
        .then(|| s.t0.saturating_add(scaled(cfg.interval, u128::from(s.next_round), 1)));
    let garbage_due = garbage.next_due(cfg.count, cfg.interval).map(|d| s.t0.saturating_add(d));
    let (due, is_round) = match (round_due, garbage_due) {
        (Some(r), Some(g)) if g < r => (g, false),
        (Some(r), _) => (r, true),
        (None, Some(g)) => (g, false),
        (None, None) => {
            s.phase = Phase::Drain;
            s.drain_until = now.saturating_add(cfg.reply_timeout);
            return Ok(Next::Again);
        }
    };
    if due <= now {
        if is_round {
            for index in 0..state.guests.len() {
                if let Some(frame) = state.echo_request(index, link.start.elapsed(), s.t0) {
                    link.send(&frame)?;
                }
            }
            s.next_round += 1;
        } else {
            for frame in garbage.take(&state.resolved(), avoid, rng) {
                link.send(&frame)?;
            }
        }
        return Ok(Next::Again);
    }
    Ok(Next::Wait(due))
}

/// Drain: wait for stragglers until every request is answered or the reply timeout passes.
fn drain_step(now: Duration, state: &PeerState, s: &Schedule) -> Next {
    if now >= s.drain_until || state.guests.iter().all(GuestState::all_answered) {
        return Next::Done;
    }
    Next::Wait(s.drain_until)
}

/// Wait for a frame until `wake` (at most [`STOP_POLL`]), handle it and send its answer, if any.
fn receive_until(link: &Link, wake: Duration, rx: &mpsc::Receiver<Received>, state: &mut PeerState) -> io::Result<()> {
    let wait = wake.saturating_sub(link.start.elapsed()).min(STOP_POLL);
    match rx.recv_timeout(wait) {
        Ok(Ok((frame, at))) => {
            if let Some(reply) = state.handle_frame(&frame, at.saturating_duration_since(link.start)) {
                link.send(&reply)?;
            }
        }
        Ok(Err(e)) => return Err(e),
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            return Err(io::Error::other("peer: receiving thread ended"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::report::samples_csv;
    use super::super::result_lines;
    use super::*;
    use std::sync::Arc;

    #[test]
    fn peer_rejects_bad_size_and_honours_stop() {
        let stop = AtomicBool::new(false);
        let mut cfg = PeerConfig::new(0, vec![GUEST_A]);
        cfg.bind_port = 0;
        cfg.size = 7;
        assert_eq!(run_peer(&cfg, &stop).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        cfg.size = MAX_PING_SIZE + 1;
        assert!(run_peer(&cfg, &stop).is_err());
        // Nobody answers ARP; a set stop flag ends the run at once instead of after arp_timeout.
        cfg.size = MAX_PING_SIZE;
        cfg.emulator_port = 9; // discard: nothing listens on loopback
        stop.store(true, Ordering::Relaxed);
        let began = Instant::now();
        let r = run_peer(&cfg, &stop).unwrap();
        assert!(began.elapsed() < Duration::from_secs(5));
        assert_eq!((r.guests.len(), r.guests[0].sent, r.guests[0].mac), (1, 0, None));
    }

    #[derive(Debug, Default)]
    struct FakeGuestLog {
        peer_arp_replies: u32,
        echo_requests: u32,
        dropped_on_purpose: u32,
        oversize_dropped: u32,
        invalid_dropped: u32,
    }

    /// What a correct little guest stack does with one frame: answer ARP for its addresses, answer valid echo
    /// requests (except every 10th to the second host), drop everything malformed.
    fn guest_respond(frame: &[u8], hosts: &[(Ipv4Addr, [u8; 6]); 2], log: &mut FakeGuestLog) -> Option<Vec<u8>> {
        if frame.len() > ETH_MAX_FRAME_LEN {
            log.oversize_dropped += 1; // an e1000 without long-packet mode drops these
            return None;
        }
        let eth = parse_ethernet(frame)?;
        match eth.ethertype {
            ETHERTYPE_ARP => {
                let arp = parse_arp(eth.payload)?;
                if arp.op == ARP_REPLY && arp.sender_ip == PEER_IP && arp.sender_mac == PEER_MAC {
                    log.peer_arp_replies += 1;
                    return None;
                }
                let (_, mac) = hosts.iter().find(|(ip, _)| *ip == arp.target_ip && arp.op == ARP_REQUEST)?;
                Some(arp.reply_to(*mac).to_frame())
            }
            ETHERTYPE_IPV4 => {
                let Some(ip) = parse_ipv4(eth.payload).filter(|ip| ip.header_checksum_ok) else {
                    log.invalid_dropped += 1;
                    return None;
                };
                if ip.protocol != IP_PROTO_ICMP {
                    return None;
                }
                let icmp = parse_icmp_echo(ip.payload)?;
                if !icmp.checksum_ok {
                    log.invalid_dropped += 1;
                    return None;
                }
                let host = hosts.iter().position(|(hip, hmac)| *hip == ip.dst && *hmac == eth.dst)?;
                if icmp.icmp_type != ICMP_ECHO_REQUEST {
                    return None;
                }
                log.echo_requests += 1;
                if host == 1 && icmp.seq % 10 == 9 {
                    log.dropped_on_purpose += 1;
                    return None;
                }
                let reply = build_icmp_echo(ICMP_ECHO_REPLY, icmp.ident, icmp.seq, icmp.payload);
                Some(build_ipv4_frame(eth.src, hosts[host].1, ip.dst, ip.src, IP_PROTO_ICMP, 0, &reply))
            }
            _ => None,
        }
    }

    /// Plays the emulator's side of the wire until `done`.
    fn fake_guest(sock: UdpSocket, hosts: [(Ipv4Addr, [u8; 6]); 2], done: Arc<AtomicBool>) -> FakeGuestLog {
        sock.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        let mut log = FakeGuestLog::default();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut greeted = false;
        while !done.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
            if !greeted {
                // Like smoltcp after its cache entry expired: ask for the peer. And some traffic it must ignore.
                greeted = true;
                sock.send_to(&ArpPacket::request(hosts[0].1, hosts[0].0, PEER_IP).to_frame(), from).unwrap();
                sock.send_to(&build_ethernet(BROADCAST_MAC, hosts[0].1, 0x86dd, &[0x60; 40]), from).unwrap();
            }
            if let Some(reply) = guest_respond(&buf[..n], &hosts, &mut log) {
                sock.send_to(&reply, from).unwrap();
            }
        }
        log
    }

    #[test]
    fn peer_loopback_two_guests() {
        let guest_sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let emulator_port = guest_sock.local_addr().unwrap().port();
        let done = Arc::new(AtomicBool::new(false));
        let guest = {
            let done = done.clone();
            std::thread::spawn(move || fake_guest(guest_sock, [(GUEST_A, MAC_A), (GUEST_B, MAC_B)], done))
        };
        let silent = Ipv4Addr::new(10, 0, 0, 9); // never answers ARP
        let cfg = PeerConfig {
            bind_port: 0,
            emulator_port,
            guests: vec![GUEST_A, GUEST_B, silent],
            count: 30,
            interval: Duration::from_millis(5),
            size: 64,
            garbage: 10,
            seed: 42,
            arp_timeout: Duration::from_millis(300),
            reply_timeout: Duration::from_millis(200),
        };
        let stop = AtomicBool::new(false);
        let report = run_peer(&cfg, &stop).unwrap();
        done.store(true, Ordering::Relaxed);
        let log = guest.join().unwrap();

        let [a, b, c] = &report.guests[..] else { panic!("{report:?}") };
        assert_eq!((a.mac, a.sent, a.received, a.lost, a.dup, a.bad), (Some(MAC_A), 30, 30, 0, 0, 0), "{a:?}");
        assert_eq!((b.mac, b.sent, b.received, b.lost, b.dup, b.bad), (Some(MAC_B), 30, 27, 3, 0, 0), "{b:?}");
        assert_eq!((c.mac, c.sent, c.samples.len()), (None, 0, 0));
        let lost: Vec<u16> = b.samples.iter().filter(|s| s.rtt_us.is_none()).map(|s| s.seq).collect();
        assert_eq!(lost, [9, 19, 29]);
        for g in [a, b] {
            assert_eq!(g.samples.len(), 30);
            for (r, s) in g.samples.iter().enumerate() {
                assert_eq!(s.seq as usize, r);
                assert!(s.sent_us >= r as u64 * 5000, "round {r} sent early: {s:?}");
            }
            let (min, med, p99) = (g.rtt_min_us().unwrap(), g.rtt_median_us().unwrap(), g.rtt_p99_us().unwrap());
            assert!(min <= med && med <= p99, "{min} {med} {p99}");
        }
        assert_eq!(report.garbage_total(), 10);
        assert!(report.garbage_sent.iter().all(|(_, n)| *n >= 1), "{:?}", report.garbage_sent);
        assert_eq!(report.garbage_replies, 0);
        assert!(report.arp_requests_answered >= 1 && log.peer_arp_replies >= 1);
        assert!(report.frames_ignored >= 1, "the IPv6 frame");
        assert_eq!(log.dropped_on_purpose, 3);
        assert_eq!(log.echo_requests, 60);
        assert!(log.oversize_dropped >= 1 && log.invalid_dropped >= 3, "{log:?}");
        let lines = result_lines(&report);
        assert_eq!(lines.len(), 4);
        assert!(lines[1].starts_with("RESULT ping guest=10.0.0.3 sent=30 received=27 lost=3 dup=0 "), "{}", lines[1]);
        assert!(lines[3].starts_with("RESULT ping_garbage sent=10 "), "{}", lines[3]);
        assert_eq!(samples_csv(&report).lines().count(), 1 + 60);
    }
}
