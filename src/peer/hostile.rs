//! Hostile frames: the kinds of garbage the peer interleaves with its pings, their deterministic randomness
//! (splitmix64), the frames of each kind, and the plan that spreads them between the rounds.
#![forbid(unsafe_code)]

use super::wire::*;
use std::net::Ipv4Addr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GarbageKind {
    /// An Ethernet frame of 1–13 bytes (shorter than a header).
    Runt,
    /// 1600–9000 bytes with a valid IPv4/ICMP echo request at the front.
    Oversize,
    /// A valid echo request whose IPv4 header checksum is wrong.
    BadIpChecksum,
    /// A valid echo request whose ICMP checksum is wrong.
    BadIcmpChecksum,
    /// Ethertype 0x88B5.
    UnknownEthertype,
    /// IPv4 protocol 253.
    UnknownIpProtocol,
    /// A broadcast burst of [`ARP_FLOOD_BURST`] requests for random 10.0.0.x from random MACs.
    ArpFlood,
    /// An echo request whose IPv4 total length exceeds the frame.
    TruncatedIp,
}

impl GarbageKind {
    pub const ALL: [GarbageKind; 8] = [
        GarbageKind::Runt,
        GarbageKind::Oversize,
        GarbageKind::BadIpChecksum,
        GarbageKind::BadIcmpChecksum,
        GarbageKind::UnknownEthertype,
        GarbageKind::UnknownIpProtocol,
        GarbageKind::ArpFlood,
        GarbageKind::TruncatedIp,
    ];

    /// The key in the `RESULT ping_garbage` line.
    pub fn name(&self) -> &'static str {
        match self {
            GarbageKind::Runt => "runt",
            GarbageKind::Oversize => "oversize",
            GarbageKind::BadIpChecksum => "bad_ip_checksum",
            GarbageKind::BadIcmpChecksum => "bad_icmp_checksum",
            GarbageKind::UnknownEthertype => "unknown_ethertype",
            GarbageKind::UnknownIpProtocol => "unknown_ip_protocol",
            GarbageKind::ArpFlood => "arp_flood",
            GarbageKind::TruncatedIp => "truncated_ip",
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Deterministic randomness for garbage (splitmix64)
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `lo..=hi` (modulo bias is irrelevant here); `lo` if the range is empty.
    pub(super) fn range(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo) as u64 + 1;
        lo + (self.next_u64() % span) as usize
    }

    pub(super) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// A locally administered unicast MAC that is not the peer's.
    pub(super) fn mac(&mut self) -> [u8; 6] {
        loop {
            let mut m = [0u8; 6];
            m.copy_from_slice(&self.next_u64().to_be_bytes()[..6]);
            m[0] = (m[0] & 0xfc) | 0x02;
            if m != PEER_MAC {
                return m;
            }
        }
    }

    /// A random 10.0.0.2..=10.0.0.254 not in `avoid`.
    pub(super) fn host(&mut self, avoid: &[Ipv4Addr]) -> Ipv4Addr {
        for _ in 0..64 {
            let ip = Ipv4Addr::new(10, 0, 0, self.range(2, 254) as u8);
            if !avoid.contains(&ip) {
                return ip;
            }
        }
        // Nearly every address is avoided: take the first free one.
        (2..=254u8)
            .map(|x| Ipv4Addr::new(10, 0, 0, x))
            .find(|ip| !avoid.contains(ip))
            .unwrap_or(Ipv4Addr::new(10, 0, 0, 254))
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Hostile frames
// ---------------------------------------------------------------------------------------------------------------

/// Offsets inside an Ethernet frame carrying IPv4 with a 20-byte header.
const IP_CHECKSUM_AT: usize = ETH_HEADER_LEN + 10;
const IP_TOTAL_LEN_AT: usize = ETH_HEADER_LEN + 2;
const ICMP_CHECKSUM_AT: usize = ETH_HEADER_LEN + IPV4_HEADER_LEN + 2;

/// Flip bits of a checksum so that it is wrong even in one's-complement terms (0x0000 and 0xFFFF are the same
/// sum, so never XOR with 0xFFFF).
fn break_checksum(frame: &mut [u8], at: usize, rng: &mut Rng) {
    if let Some(old) = be16(frame, at) {
        put_be16(frame, at, old ^ rng.range(1, 0xfffe) as u16);
    }
}

/// The frames of one hostile event of `kind` aimed at `target` (`avoid`: addresses an ARP flood must not claim as
/// its sender, lest it poison a guest's cache entry for the peer).
pub(super) fn garbage_frames(
    kind: GarbageKind,
    target_ip: Ipv4Addr,
    target_mac: [u8; 6],
    avoid: &[Ipv4Addr],
    rng: &mut Rng,
) -> Vec<Vec<u8>> {
    let seq = rng.next_u64() as u16;
    let echo_request = |rng: &mut Rng, payload_len: usize| {
        let icmp = build_icmp_echo(ICMP_ECHO_REQUEST, GARBAGE_IDENT, seq, &rng.bytes(payload_len));
        build_ipv4_frame(target_mac, PEER_MAC, PEER_IP, target_ip, IP_PROTO_ICMP, seq, &icmp)
    };
    match kind {
        GarbageKind::Runt => {
            let mut f = build_ethernet(target_mac, PEER_MAC, ETHERTYPE_IPV4, &[]);
            f.truncate(rng.range(1, ETH_HEADER_LEN - 1));
            vec![f]
        }
        GarbageKind::Oversize => {
            let len = rng.range(1600, 9000);
            vec![echo_request(rng, len - ETH_HEADER_LEN - IPV4_HEADER_LEN - ICMP_ECHO_HEADER_LEN)]
        }
        GarbageKind::BadIpChecksum => {
            let len = rng.range(8, 64);
            let mut f = echo_request(rng, len);
            break_checksum(&mut f, IP_CHECKSUM_AT, rng);
            vec![f]
        }
        GarbageKind::BadIcmpChecksum => {
            let len = rng.range(8, 64);
            let mut f = echo_request(rng, len);
            break_checksum(&mut f, ICMP_CHECKSUM_AT, rng);
            vec![f]
        }
        GarbageKind::UnknownEthertype => {
            let len = rng.range(46, 256);
            vec![build_ethernet(target_mac, PEER_MAC, ETHERTYPE_UNKNOWN, &rng.bytes(len))]
        }
        GarbageKind::UnknownIpProtocol => {
            let len = rng.range(8, 128);
            vec![build_ipv4_frame(target_mac, PEER_MAC, PEER_IP, target_ip, IP_PROTO_UNKNOWN, seq, &rng.bytes(len))]
        }
        GarbageKind::ArpFlood => (0..ARP_FLOOD_BURST)
            .map(|_| {
                let sender_mac = rng.mac();
                let sender_ip = rng.host(avoid);
                let target_ip = rng.host(&[PEER_IP]);
                ArpPacket::request(sender_mac, sender_ip, target_ip).to_frame()
            })
            .collect(),
        GarbageKind::TruncatedIp => {
            let len = rng.range(8, 64);
            let mut f = echo_request(rng, len);
            // Claim more than the frame holds (padding included); keep the header checksum right so that only the
            // length is wrong.
            let claimed = (f.len() - ETH_HEADER_LEN + rng.range(1, 1000)) as u16;
            put_be16(&mut f, IP_TOTAL_LEN_AT, claimed);
            put_be16(&mut f, IP_CHECKSUM_AT, 0);
            let checksum = f.get(ETH_HEADER_LEN..ETH_HEADER_LEN + IPV4_HEADER_LEN).map_or(0, internet_checksum);
            put_be16(&mut f, IP_CHECKSUM_AT, checksum);
            vec![f]
        }
    }
}

/// Which garbage goes out when: kinds cycle through a seed-shuffled order of all eight (so 8 or more events cover
/// every kind), spread evenly between the first and the last round.
#[derive(Debug, Clone)]
pub(super) struct GarbagePlan {
    order: [GarbageKind; 8],
    total: u32,
    next: u32,
    sent: [u32; 8],
}

impl GarbagePlan {
    pub(super) fn new(total: u32, rng: &mut Rng) -> Self {
        let mut order = GarbageKind::ALL;
        for i in (1..order.len()).rev() {
            order.swap(i, rng.range(0, i));
        }
        GarbagePlan { order, total, next: 0, sent: [0; 8] }
    }

    /// Offset from the first round of the next event, if any is left: event j at (j+1)/(total+1) of the span from
    /// the first round to the last.
    pub(super) fn next_due(&self, count: u32, interval: Duration) -> Option<Duration> {
        (self.next < self.total).then(|| {
            let span = u128::from(count.saturating_sub(1));
            scaled(interval, span * u128::from(self.next + 1), u128::from(self.total) + 1)
        })
    }

    /// The next event's frames, aimed at one of `targets` (resolved guests); counts it.
    pub(super) fn take(&mut self, targets: &[(Ipv4Addr, [u8; 6])], avoid: &[Ipv4Addr], rng: &mut Rng) -> Vec<Vec<u8>> {
        let slot = self.next as usize % self.order.len();
        let kind = self.order[slot];
        self.next += 1;
        if targets.is_empty() {
            return Vec::new();
        }
        let (ip, mac) = targets[rng.range(0, targets.len() - 1)];
        if let Some(i) = GarbageKind::ALL.iter().position(|k| *k == kind) {
            self.sent[i] += 1;
        }
        garbage_frames(kind, ip, mac, avoid, rng)
    }

    pub(super) fn report(&self) -> Vec<(GarbageKind, u32)> {
        GarbageKind::ALL.iter().copied().zip(self.sent.iter().copied()).collect()
    }
}

/// `d * num / den` without overflow (saturating at ~584 years).
pub(super) fn scaled(d: Duration, num: u128, den: u128) -> Duration {
    let nanos = d.as_nanos().saturating_mul(num) / den.max(1);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn peer_garbage_frames_have_their_defect() {
        let mut rng = Rng::new(7);
        let avoid = [GUEST_A, GUEST_B, PEER_IP];
        for _ in 0..20 {
            for kind in GarbageKind::ALL {
                let frames = garbage_frames(kind, GUEST_A, MAC_A, &avoid, &mut rng);
                let f = &frames[0];
                let ip = || parse_ipv4(&f[ETH_HEADER_LEN..]);
                match kind {
                    GarbageKind::Runt => assert!((1..=13).contains(&f.len()), "{}", f.len()),
                    GarbageKind::Oversize => {
                        assert!((1600..=9000).contains(&f.len()));
                        let ip = ip().unwrap();
                        assert!(ip.header_checksum_ok);
                        let icmp = parse_icmp_echo(ip.payload).unwrap();
                        assert!(icmp.checksum_ok && icmp.ident == GARBAGE_IDENT);
                    }
                    GarbageKind::BadIpChecksum => {
                        let ip = ip().unwrap();
                        assert!(!ip.header_checksum_ok);
                        assert!(parse_icmp_echo(ip.payload).unwrap().checksum_ok);
                    }
                    GarbageKind::BadIcmpChecksum => {
                        let ip = ip().unwrap();
                        assert!(ip.header_checksum_ok);
                        let icmp = parse_icmp_echo(ip.payload).unwrap();
                        assert!(!icmp.checksum_ok && icmp.ident == GARBAGE_IDENT);
                    }
                    GarbageKind::UnknownEthertype => {
                        assert_eq!(parse_ethernet(f).unwrap().ethertype, ETHERTYPE_UNKNOWN)
                    }
                    GarbageKind::UnknownIpProtocol => {
                        let ip = ip().unwrap();
                        assert!(ip.header_checksum_ok && ip.protocol == IP_PROTO_UNKNOWN);
                    }
                    GarbageKind::ArpFlood => {
                        assert_eq!(frames.len(), ARP_FLOOD_BURST);
                        for f in &frames {
                            let eth = parse_ethernet(f).unwrap();
                            assert_eq!(eth.dst, BROADCAST_MAC);
                            let arp = parse_arp(eth.payload).unwrap();
                            assert_eq!(arp.op, ARP_REQUEST);
                            assert_eq!(eth.src, arp.sender_mac);
                            assert!(is_unicast_mac(&arp.sender_mac) && arp.sender_mac != PEER_MAC);
                            assert!(!avoid.contains(&arp.sender_ip), "{}", arp.sender_ip);
                            assert_ne!(arp.target_ip, PEER_IP);
                            assert_eq!(arp.target_ip.octets()[..3], [10, 0, 0]);
                        }
                    }
                    GarbageKind::TruncatedIp => {
                        assert_eq!(ip(), None);
                        let claimed = usize::from(be16(f, IP_TOTAL_LEN_AT).unwrap());
                        assert!(claimed > f.len() - ETH_HEADER_LEN);
                        assert_eq!(internet_checksum(&f[ETH_HEADER_LEN..ETH_HEADER_LEN + 20]), 0);
                    }
                }
                if kind != GarbageKind::ArpFlood && kind != GarbageKind::Runt {
                    assert_eq!(parse_ethernet(f).unwrap().dst, MAC_A);
                }
            }
        }
        // Deterministic: the same seed gives the same frames and order.
        let mut a = Rng::new(5);
        let mut b = Rng::new(5);
        assert_eq!(GarbagePlan::new(10, &mut a).order, GarbagePlan::new(10, &mut b).order);
        assert_eq!(
            garbage_frames(GarbageKind::Oversize, GUEST_A, MAC_A, &avoid, &mut a),
            garbage_frames(GarbageKind::Oversize, GUEST_A, MAC_A, &avoid, &mut b)
        );
    }

    #[test]
    fn peer_garbage_plan_spreads_and_covers() {
        let mut rng = Rng::new(3);
        let mut plan = GarbagePlan::new(10, &mut rng);
        let interval = Duration::from_millis(10);
        let mut last = Duration::ZERO;
        let targets = [(GUEST_A, MAC_A)];
        while let Some(due) = plan.next_due(30, interval) {
            assert!(due > last && due < interval * 29, "{due:?}");
            last = due;
            let _ = plan.take(&targets, &[PEER_IP], &mut rng);
        }
        let sent = plan.report();
        assert_eq!(sent.iter().map(|(_, n)| n).sum::<u32>(), 10);
        assert!(sent.iter().all(|(_, n)| *n >= 1), "{sent:?}");
        assert_eq!(sent.iter().map(|(k, _)| *k).collect::<Vec<_>>(), GarbageKind::ALL.to_vec());
    }

}
