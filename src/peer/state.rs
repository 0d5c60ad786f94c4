//! A peer session's state: everything but the socket (ARP learning, matching echo replies to requests, the
//! counters), so frame handling is testable on its own.
#![forbid(unsafe_code)]

use super::hostile::GarbageKind;
use super::report::{GuestReport, PeerReport, Sample};
use super::wire::*;
use std::net::Ipv4Addr;
use std::time::Duration;

pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------------------------
// Peer state: everything but the socket, so frame handling is testable on its own
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub(super) struct PingRecord {
    /// Since the start of the run (the clock replies are stamped with).
    pub(super) sent_at: Duration,
    /// Since the first round (what the payload carries).
    pub(super) sent_us: u64,
    pub(super) rtt: Option<Duration>,
}

#[derive(Debug, Clone)]
pub(super) struct GuestState {
    pub(super) ip: Ipv4Addr,
    pub(super) ident: u16,
    pub(super) mac: Option<[u8; 6]>,
    /// ARP timed out: never pinged, and its MAC is no longer learned (the report says "unresolved").
    pub(super) gave_up: bool,
    pub(super) next_arp: Duration,
    /// Index = round = sequence number (mod 2^16).
    pub(super) pings: Vec<PingRecord>,
    pub(super) received: u32,
    pub(super) dup: u32,
    pub(super) bad: u32,
}

impl GuestState {
    /// The request a reply with sequence number `seq` answers: the latest one sent with that number.
    pub(super) fn ping_index(&self, seq: u16) -> Option<usize> {
        let last = self.pings.len().checked_sub(1)?;
        let back = usize::from((last as u16).wrapping_sub(seq));
        last.checked_sub(back)
    }

    pub(super) fn all_answered(&self) -> bool {
        self.pings.iter().all(|p| p.rtt.is_some())
    }
}

enum Handled {
    Ignored,
    Used,
    Reply(Vec<u8>),
}

#[derive(Debug, Clone)]
pub(super) struct PeerState {
    pub(super) guests: Vec<GuestState>,
    pub(super) size: usize,
    pub(super) arp_requests_answered: u32,
    pub(super) frames_received: u64,
    pub(super) frames_ignored: u64,
    pub(super) garbage_replies: u32,
    /// When pinging began (every guest resolved), since the peer started.
    pub(super) ping_start_us: u64,
}

impl PeerState {
    pub(super) fn new(guests: &[Ipv4Addr], size: usize) -> Self {
        let guests = guests
            .iter()
            .enumerate()
            .map(|(i, &ip)| GuestState {
                ip,
                ident: PING_IDENT_BASE.wrapping_add(i as u16),
                mac: None,
                gave_up: false,
                next_arp: Duration::ZERO,
                pings: Vec::new(),
                received: 0,
                dup: 0,
                bad: 0,
            })
            .collect();
        PeerState { guests, size, arp_requests_answered: 0, frames_received: 0, frames_ignored: 0, garbage_replies: 0, ping_start_us: 0 }
    }

    /// Account for one received frame (stamped `now` since the start); returns a frame to send back, if any.
    pub(super) fn handle_frame(&mut self, frame: &[u8], now: Duration) -> Option<Vec<u8>> {
        self.frames_received += 1;
        match self.dispatch(frame, now) {
            Handled::Ignored => {
                self.frames_ignored += 1;
                None
            }
            Handled::Used => None,
            Handled::Reply(f) => Some(f),
        }
    }

    fn dispatch(&mut self, frame: &[u8], now: Duration) -> Handled {
        let Some(eth) = parse_ethernet(frame) else { return Handled::Ignored };
        if eth.dst != PEER_MAC && eth.dst != BROADCAST_MAC {
            return Handled::Ignored; // e.g. a guest's answer to an ARP flood request
        }
        match eth.ethertype {
            ETHERTYPE_ARP => self.on_arp(eth.payload),
            ETHERTYPE_IPV4 => self.on_ipv4(eth.payload, now),
            _ => Handled::Ignored,
        }
    }

    fn on_arp(&mut self, payload: &[u8]) -> Handled {
        let Some(arp) = parse_arp(payload) else { return Handled::Ignored };
        if !is_unicast_mac(&arp.sender_mac) {
            return Handled::Ignored;
        }
        let mut handled = Handled::Ignored;
        // Any ARP from a guest (reply to us, gratuitous, or its own request) tells us its MAC.
        if let Some(g) = self.guests.iter_mut().find(|g| g.ip == arp.sender_ip && !g.gave_up) {
            g.mac = Some(arp.sender_mac);
            handled = Handled::Used;
        }
        if arp.op == ARP_REQUEST && arp.target_ip == PEER_IP {
            self.arp_requests_answered += 1;
            handled = Handled::Reply(arp.reply_to(PEER_MAC).to_frame());
        }
        handled
    }

    fn on_ipv4(&mut self, payload: &[u8], now: Duration) -> Handled {
        let Some(ip) = parse_ipv4(payload) else { return Handled::Ignored };
        if !ip.header_checksum_ok || ip.dst != PEER_IP || ip.is_fragment() || ip.protocol != IP_PROTO_ICMP {
            return Handled::Ignored;
        }
        let Some(icmp) = parse_icmp_echo(ip.payload) else { return Handled::Ignored };
        if !icmp.checksum_ok || icmp.icmp_type != ICMP_ECHO_REPLY {
            return Handled::Ignored;
        }
        let size = self.size;
        let Some(g) = self.guests.iter_mut().find(|g| g.ip == ip.src) else { return Handled::Ignored };
        if icmp.ident == GARBAGE_IDENT {
            self.garbage_replies += 1;
            return Handled::Used;
        }
        if icmp.ident != g.ident {
            return Handled::Ignored;
        }
        let Some(index) = g.ping_index(icmp.seq) else {
            g.bad += 1; // a reply to a request never sent
            return Handled::Used;
        };
        let ping = &mut g.pings[index];
        if !echo_payload_matches(icmp.payload, ping.sent_us, size) {
            g.bad += 1;
        } else if ping.rtt.is_some() {
            g.dup += 1;
        } else {
            ping.rtt = Some(now.saturating_sub(ping.sent_at));
            g.received += 1;
        }
        Handled::Used
    }

    /// Record and build the next echo request to guest `index` (`None` if it is unresolved).
    pub(super) fn echo_request(&mut self, index: usize, now: Duration, t0: Duration) -> Option<Vec<u8>> {
        let size = self.size;
        let g = self.guests.get_mut(index)?;
        let mac = g.mac?;
        let seq = g.pings.len() as u16;
        let sent_us = micros(now.saturating_sub(t0));
        let icmp = build_icmp_echo(ICMP_ECHO_REQUEST, g.ident, seq, &echo_payload(sent_us, size));
        g.pings.push(PingRecord { sent_at: now, sent_us, rtt: None });
        Some(build_ipv4_frame(mac, PEER_MAC, PEER_IP, g.ip, IP_PROTO_ICMP, seq, &icmp))
    }

    pub(super) fn resolved(&self) -> Vec<(Ipv4Addr, [u8; 6])> {
        self.guests.iter().filter_map(|g| Some((g.ip, g.mac?))).collect()
    }

    pub(super) fn report(&self, garbage_sent: Vec<(GarbageKind, u32)>) -> PeerReport {
        let guests = self
            .guests
            .iter()
            .map(|g| {
                let sent = u32::try_from(g.pings.len()).unwrap_or(u32::MAX);
                GuestReport {
                    ip: g.ip,
                    mac: g.mac,
                    sent,
                    received: g.received,
                    lost: sent.saturating_sub(g.received),
                    dup: g.dup,
                    bad: g.bad,
                    samples: g
                        .pings
                        .iter()
                        .enumerate()
                        .map(|(i, p)| Sample { seq: i as u16, sent_us: p.sent_us, rtt_us: p.rtt.map(micros) })
                        .collect(),
                }
            })
            .collect();
        PeerReport {
            guests,
            garbage_sent,
            arp_requests_answered: self.arp_requests_answered,
            frames_received: self.frames_received,
            frames_ignored: self.frames_ignored,
            garbage_replies: self.garbage_replies,
            ping_start_us: self.ping_start_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::hostile::{garbage_frames, Rng};
    use super::*;

    /// Every parser, as deep as the bytes allow; the peer's frame handler too.
    fn parse_everything(frame: &[u8], state: &mut PeerState) {
        if let Some(eth) = parse_ethernet(frame) {
            let _ = parse_arp(eth.payload);
            if let Some(ip) = parse_ipv4(eth.payload) {
                let _ = parse_icmp_echo(ip.payload);
            }
            let _ = parse_icmp_echo(eth.payload);
        }
        let _ = parse_arp(frame);
        let _ = parse_ipv4(frame);
        let _ = parse_icmp_echo(frame);
        let _ = state.handle_frame(frame, Duration::from_millis(1));
    }

    #[test]
    fn peer_parsers_never_panic() {
        let mut state = PeerState::new(&[GUEST_A, GUEST_B], 56);
        state.guests[0].mac = Some(MAC_A);
        let mut rng = Rng::new(99);
        let mut frames = vec![
            ArpPacket::request(MAC_A, GUEST_A, PEER_IP).to_frame(),
            ArpPacket::request(PEER_MAC, PEER_IP, GUEST_A).reply_to(MAC_A).to_frame(),
            echo_frame(ICMP_ECHO_REQUEST, 0x5100, 0, &echo_payload(5, 56)),
            reply_from_a(0x5100, 0, &echo_payload(5, 56)),
        ];
        for kind in GarbageKind::ALL {
            frames.extend(garbage_frames(kind, GUEST_A, MAC_A, &[PEER_IP], &mut rng));
        }
        for f in &frames {
            for len in 0..=f.len().min(200) {
                parse_everything(&f[..len], &mut state);
            }
            // Every single-byte corruption of the headers.
            for at in 0..f.len().min(64) {
                for flip in [0x01, 0x0f, 0x80, 0xff] {
                    let mut g = f.clone();
                    g[at] ^= flip;
                    parse_everything(&g, &mut state);
                }
            }
        }
        // Random bytes, then random bytes behind plausible headers (so the deeper parsers get exercised).
        for i in 0..3000 {
            let len = rng.range(0, 120);
            let mut f = rng.bytes(len);
            if i % 3 > 0 && f.len() >= 15 {
                f[..6].copy_from_slice(&PEER_MAC);
                f[12..14].copy_from_slice(&(if i % 3 == 1 { ETHERTYPE_IPV4 } else { ETHERTYPE_ARP }).to_be_bytes());
                f[14] = 0x40 | (f[14] & 0x0f);
            }
            parse_everything(&f, &mut state);
        }
        assert!(state.frames_received > 3000);
    }

    #[test]
    fn peer_state_matches_replies() {
        let mut s = PeerState::new(&[GUEST_A, GUEST_B], 16);
        // Learning A's MAC from a gratuitous ARP, and answering its request for the peer.
        let reply = s.handle_frame(&ArpPacket::request(MAC_A, GUEST_A, PEER_IP).to_frame(), Duration::ZERO).unwrap();
        let arp = parse_arp(parse_ethernet(&reply).unwrap().payload).unwrap();
        assert_eq!(arp, ArpPacket::request(MAC_A, GUEST_A, PEER_IP).reply_to(PEER_MAC));
        assert_eq!((s.guests[0].mac, s.arp_requests_answered), (Some(MAC_A), 1));
        // ARP for someone else from a stranger: nothing to do.
        assert!(s
            .handle_frame(
                &ArpPacket::request([2, 9, 9, 9, 9, 9], Ipv4Addr::new(10, 0, 0, 77), GUEST_A).to_frame(),
                Duration::ZERO
            )
            .is_none());
        assert_eq!(s.frames_ignored, 1);

        let t0 = Duration::from_millis(100);
        let req0 = s.echo_request(0, t0, t0).unwrap();
        let req1 = s.echo_request(0, t0 + Duration::from_millis(10), t0).unwrap();
        assert!(s.echo_request(1, t0, t0).is_none(), "B is unresolved");
        let payload_of = |f: &[u8]| {
            let ip = parse_ipv4(&f[ETH_HEADER_LEN..]).unwrap();
            parse_icmp_echo(ip.payload).unwrap().payload.to_vec()
        };
        let (p0, p1) = (payload_of(&req0), payload_of(&req1));
        assert_eq!(&p1[..8], &10_000u64.to_be_bytes());

        let at = |ms| t0 + Duration::from_millis(ms);
        s.handle_frame(&reply_from_a(0x5100, 0, &p0), at(3));
        s.handle_frame(&reply_from_a(0x5100, 0, &p0), at(4)); // dup
        s.handle_frame(&reply_from_a(0x5100, 1, &p0), at(12)); // wrong payload for seq 1
        s.handle_frame(&reply_from_a(0x5100, 5, &p0), at(12)); // never sent
        s.handle_frame(&reply_from_a(0x5101, 1, &p1), at(12)); // someone else's identifier
        s.handle_frame(&reply_from_a(GARBAGE_IDENT, 1, &p1), at(12));
        let r = s.report(Vec::new());
        let a = &r.guests[0];
        assert_eq!((a.sent, a.received, a.lost, a.dup, a.bad), (2, 1, 1, 1, 2));
        assert_eq!(a.samples[0], Sample { seq: 0, sent_us: 0, rtt_us: Some(3000) });
        assert_eq!(a.samples[1], Sample { seq: 1, sent_us: 10_000, rtt_us: None });
        assert_eq!(r.garbage_replies, 1);
        assert_eq!(r.frames_ignored, 2);
        s.handle_frame(&reply_from_a(0x5100, 1, &p1), at(15));
        assert!(s.guests[0].all_answered());
        assert_eq!(s.report(Vec::new()).guests[0].samples[1].rtt_us, Some(5000));
        let b = &r.guests[1];
        assert_eq!((b.mac, b.sent, b.samples.len()), (None, 0, 0));
    }

    #[test]
    fn peer_sequence_wraps() {
        let mut g = PeerState::new(&[GUEST_A], 8).guests.remove(0);
        assert_eq!(g.ping_index(0), None);
        for _ in 0..70_000 {
            g.pings.push(PingRecord { sent_at: Duration::ZERO, sent_us: 0, rtt: None });
        }
        assert_eq!(g.ping_index(69_999u32 as u16), Some(69_999));
        assert_eq!(g.ping_index(0), Some(65_536));
        assert_eq!(g.ping_index(4463), Some(4463 + 65_536)); // the latest one with that number
        assert_eq!(g.ping_index(4464), Some(4464));
    }
}
