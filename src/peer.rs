//! Host network peer for the `ping` experiments.
//!
//! The emulated e1000's backend is a pair of loopback UDP ports, one raw Ethernet II frame (no FCS) per
//! datagram: QEMU (`-netdev dgram,...,local.port=P,remote.port=P+1`) and Bochs (`ethmod=socket, ethdev=P`) bind
//! 127.0.0.1:P and send every guest frame to 127.0.0.1:P+1. The peer binds P+1 and sends to P, so it sits on the
//! same "wire" as the guests: it resolves them by ARP, pings them on a fixed schedule, interleaves hostile frames
//! and reports loss, duplicates and round-trip times.
//!
//! Guests run smoltcp, which never learns a neighbour's MAC from IP traffic: so the peer answers ARP for
//! [`PEER_IP`] and learns each guest's MAC from ARP alone.
//!
//! The frame helpers (Internet checksum, Ethernet II, ARP, IPv4, ICMP echo) are pure; the parsers never panic,
//! whatever the input.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------------------------
// Addressing and protocol constants
// ---------------------------------------------------------------------------------------------------------------

pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Locally administered, unicast.
pub const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// IEEE 802 "local experimental" ethertype: nothing implements it, so a guest must drop it.
pub const ETHERTYPE_UNKNOWN: u16 = 0x88B5;
pub const IP_PROTO_ICMP: u8 = 1;
/// Reserved for experimentation (RFC 3692): a guest must drop it (or answer "protocol unreachable").
pub const IP_PROTO_UNKNOWN: u8 = 253;

pub const ETH_HEADER_LEN: usize = 14;
/// Shortest Ethernet frame without its FCS (64 bytes on the wire); [`build_ethernet`] pads to it.
pub const ETH_MIN_FRAME_LEN: usize = 60;
/// Longest untagged frame without FCS (1500-byte MTU); longer ones are "oversize" for an e1000 without LPE.
pub const ETH_MAX_FRAME_LEN: usize = 1514;
pub const ARP_LEN: usize = 28;
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;
pub const IPV4_HEADER_LEN: usize = 20;
pub const ICMP_ECHO_HEADER_LEN: usize = 8;
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;

/// ICMP payload bounds: the payload starts with an 8-byte send timestamp, and a request must fit a 1500-byte MTU
/// unfragmented (1500 - 20 IPv4 - 8 ICMP).
pub const MIN_PING_SIZE: usize = 8;
pub const MAX_PING_SIZE: usize = 1472;
/// Guest `i` is pinged with ICMP identifier `PING_IDENT_BASE + i`.
pub const PING_IDENT_BASE: u16 = 0x5100;
/// Identifier of the echo requests inside hostile frames, so that a reply to one (which a correct guest never
/// sends) cannot be mistaken for a ping reply; such replies are counted in [`PeerReport::garbage_replies`].
pub const GARBAGE_IDENT: u16 = 0xBAD0;
/// ARP requests per [`GarbageKind::ArpFlood`] burst.
pub const ARP_FLOOD_BURST: usize = 32;

/// How often an unresolved guest is asked for its MAC.
const ARP_RETRY: Duration = Duration::from_millis(200);
/// Longest the main loop sleeps without looking at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(10);
/// Read timeout of the receiving thread: how long it may take to notice that the run is over.
const RECV_POLL: Duration = Duration::from_millis(20);
/// Largest UDP payload, so no datagram is ever truncated.
const MAX_DATAGRAM: usize = 65_536;

// ---------------------------------------------------------------------------------------------------------------
// Byte helpers (bounds-checked: `None` past the end, never a panic)
// ---------------------------------------------------------------------------------------------------------------

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let bytes: [u8; 2] = b.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(u16::from_be_bytes(bytes))
}

fn mac_at(b: &[u8], at: usize) -> Option<[u8; 6]> {
    b.get(at..at.checked_add(6)?)?.try_into().ok()
}

fn ipv4_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let octets: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(Ipv4Addr::from(octets))
}

/// Overwrite a big-endian u16 in place; a no-op past the end.
fn put_be16(b: &mut [u8], at: usize, value: u16) {
    if let Some(dst) = b.get_mut(at..at + 2) {
        dst.copy_from_slice(&value.to_be_bytes());
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A MAC a host may have: not multicast/broadcast (I/G bit clear), not all zeros.
pub fn is_unicast_mac(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 0 && *mac != [0; 6]
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

// ---------------------------------------------------------------------------------------------------------------
// Internet checksum (RFC 1071)
// ---------------------------------------------------------------------------------------------------------------

/// One's-complement of the one's-complement sum of `data` as big-endian 16-bit words (an odd last byte is padded
/// with a zero). Over a header that contains its own correct checksum the result is 0.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

// ---------------------------------------------------------------------------------------------------------------
// Ethernet II
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<'a> {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: u16,
    /// Everything after the header, including any padding up to the 60-byte minimum.
    pub payload: &'a [u8],
}

pub fn parse_ethernet(frame: &[u8]) -> Option<EthernetFrame<'_>> {
    Some(EthernetFrame {
        dst: mac_at(frame, 0)?,
        src: mac_at(frame, 6)?,
        ethertype: be16(frame, 12)?,
        payload: frame.get(ETH_HEADER_LEN..)?,
    })
}

/// An Ethernet II frame without FCS, zero-padded to [`ETH_MIN_FRAME_LEN`] as a real NIC would (a receiving e1000
/// model need not accept runts).
pub fn build_ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity((ETH_HEADER_LEN + payload.len()).max(ETH_MIN_FRAME_LEN));
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    if f.len() < ETH_MIN_FRAME_LEN {
        f.resize(ETH_MIN_FRAME_LEN, 0);
    }
    f
}

// ---------------------------------------------------------------------------------------------------------------
// ARP (IPv4 over Ethernet, RFC 826)
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket {
    /// [`ARP_REQUEST`] or [`ARP_REPLY`] (other values parse, the peer ignores them).
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

impl ArpPacket {
    /// "Who has `target_ip`? Tell `sender_ip`."
    pub fn request(sender_mac: [u8; 6], sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Self {
        ArpPacket { op: ARP_REQUEST, sender_mac, sender_ip, target_mac: [0; 6], target_ip }
    }

    /// The answer to this request from the owner of `target_ip`, whose MAC is `my_mac`.
    pub fn reply_to(&self, my_mac: [u8; 6]) -> Self {
        ArpPacket {
            op: ARP_REPLY,
            sender_mac: my_mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }

    pub fn to_bytes(&self) -> [u8; ARP_LEN] {
        let mut b = [0u8; ARP_LEN];
        b[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
        b[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        b[4] = 6;
        b[5] = 4;
        b[6..8].copy_from_slice(&self.op.to_be_bytes());
        b[8..14].copy_from_slice(&self.sender_mac);
        b[14..18].copy_from_slice(&self.sender_ip.octets());
        b[18..24].copy_from_slice(&self.target_mac);
        b[24..28].copy_from_slice(&self.target_ip.octets());
        b
    }

    /// In an Ethernet frame from `sender_mac`: requests are broadcast, everything else goes to `target_mac`.
    pub fn to_frame(&self) -> Vec<u8> {
        let dst = if self.op == ARP_REQUEST { BROADCAST_MAC } else { self.target_mac };
        build_ethernet(dst, self.sender_mac, ETHERTYPE_ARP, &self.to_bytes())
    }
}

/// Parse the ARP payload of an Ethernet frame; `None` unless it is Ethernet/IPv4 ARP and complete.
pub fn parse_arp(data: &[u8]) -> Option<ArpPacket> {
    let shape_ok = be16(data, 0)? == 1 && be16(data, 2)? == ETHERTYPE_IPV4 && *data.get(4)? == 6 && *data.get(5)? == 4;
    if !shape_ok {
        return None;
    }
    Some(ArpPacket {
        op: be16(data, 6)?,
        sender_mac: mac_at(data, 8)?,
        sender_ip: ipv4_at(data, 14)?,
        target_mac: mac_at(data, 18)?,
        target_ip: ipv4_at(data, 24)?,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// IPv4
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub ident: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// In 8-byte units.
    pub fragment_offset: u16,
    pub header_checksum_ok: bool,
    /// The bytes after the header (options skipped) up to the total length: Ethernet padding is not included.
    pub payload: &'a [u8],
}

impl Ipv4Packet<'_> {
    pub fn is_fragment(&self) -> bool {
        self.more_fragments || self.fragment_offset != 0
    }
}

/// Parse an IPv4 packet; `None` if it is not version 4, the IHL is below 5, or the header or the total length do
/// not fit in `data` (a truncated packet). A wrong header checksum still parses (see `header_checksum_ok`).
pub fn parse_ipv4(data: &[u8]) -> Option<Ipv4Packet<'_>> {
    let version_ihl = *data.first()?;
    if version_ihl >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    let total_len = usize::from(be16(data, 2)?);
    if header_len < IPV4_HEADER_LEN || total_len < header_len || total_len > data.len() {
        return None;
    }
    let flags_fragment = be16(data, 6)?;
    Some(Ipv4Packet {
        src: ipv4_at(data, 12)?,
        dst: ipv4_at(data, 16)?,
        protocol: *data.get(9)?,
        ttl: *data.get(8)?,
        ident: be16(data, 4)?,
        dont_fragment: flags_fragment & 0x4000 != 0,
        more_fragments: flags_fragment & 0x2000 != 0,
        fragment_offset: flags_fragment & 0x1fff,
        header_checksum_ok: internet_checksum(data.get(..header_len)?) == 0,
        payload: data.get(header_len..total_len)?,
    })
}

/// An IPv4 packet with a 20-byte header: TTL 64, DF set, correct header checksum. (A payload longer than 65515
/// bytes cannot be described: its total length saturates at 65535.)
pub fn build_ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, ident: u16, payload: &[u8]) -> Vec<u8> {
    let total_len = u16::try_from(IPV4_HEADER_LEN + payload.len()).unwrap_or(u16::MAX);
    let mut p = Vec::with_capacity(IPV4_HEADER_LEN + payload.len());
    p.push(0x45); // version 4, IHL 5
    p.push(0); // DSCP/ECN
    p.extend_from_slice(&total_len.to_be_bytes());
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&0x4000u16.to_be_bytes()); // DF, offset 0
    p.push(64);
    p.push(protocol);
    p.extend_from_slice(&[0, 0]); // checksum, filled below
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let checksum = internet_checksum(&p);
    put_be16(&mut p, 10, checksum);
    p.extend_from_slice(payload);
    p
}

/// Ethernet + IPv4 in one go.
pub fn build_ipv4_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    protocol: u8,
    ident: u16,
    payload: &[u8],
) -> Vec<u8> {
    build_ethernet(dst_mac, src_mac, ETHERTYPE_IPV4, &build_ipv4(src_ip, dst_ip, protocol, ident, payload))
}

// ---------------------------------------------------------------------------------------------------------------
// ICMP echo
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpEcho<'a> {
    /// [`ICMP_ECHO_REQUEST`] or [`ICMP_ECHO_REPLY`].
    pub icmp_type: u8,
    pub ident: u16,
    pub seq: u16,
    pub checksum_ok: bool,
    pub payload: &'a [u8],
}

/// Parse an ICMP message (the IPv4 payload); `None` unless it is a complete echo request or reply with code 0.
/// A wrong checksum still parses (see `checksum_ok`).
pub fn parse_icmp_echo(data: &[u8]) -> Option<IcmpEcho<'_>> {
    let icmp_type = *data.first()?;
    if !matches!(icmp_type, ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY) || *data.get(1)? != 0 {
        return None;
    }
    Some(IcmpEcho {
        icmp_type,
        ident: be16(data, 4)?,
        seq: be16(data, 6)?,
        checksum_ok: internet_checksum(data) == 0,
        payload: data.get(ICMP_ECHO_HEADER_LEN..)?,
    })
}

pub fn build_icmp_echo(icmp_type: u8, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(ICMP_ECHO_HEADER_LEN + payload.len());
    m.push(icmp_type);
    m.push(0); // code
    m.extend_from_slice(&[0, 0]); // checksum, filled below
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(payload);
    let checksum = internet_checksum(&m);
    put_be16(&mut m, 2, checksum);
    m
}

/// The ping payload: the send time (µs since the first round) as 8 big-endian bytes, then byte `i` = `i as u8`.
pub fn echo_payload(sent_us: u64, size: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let stamp = sent_us.to_be_bytes();
    let n = size.min(stamp.len());
    p[..n].copy_from_slice(&stamp[..n]);
    p
}

fn echo_payload_matches(payload: &[u8], sent_us: u64, size: usize) -> bool {
    let stamp = sent_us.to_be_bytes();
    payload.len() == size && payload.iter().enumerate().all(|(i, &b)| b == stamp.get(i).copied().unwrap_or(i as u8))
}

// ---------------------------------------------------------------------------------------------------------------
// Configuration and reports
// ---------------------------------------------------------------------------------------------------------------

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub seq: u16,
    /// Since the peer started pinging (the first round).
    pub sent_us: u64,
    /// `None` when no good reply came.
    pub rtt_us: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestReport {
    pub ip: Ipv4Addr,
    /// `None` when the guest never answered ARP within the timeout (then nothing was sent to it).
    pub mac: Option<[u8; 6]>,
    pub sent: u32,
    /// Requests with at least one good reply.
    pub received: u32,
    /// `sent - received`.
    pub lost: u32,
    /// Further good replies to an already answered request.
    pub dup: u32,
    /// Replies with a wrong payload, or to a sequence number never sent (they do not count as received).
    pub bad: u32,
    /// One per request sent, in sequence order.
    pub samples: Vec<Sample>,
}

impl GuestReport {
    fn sorted_rtts(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.samples.iter().filter_map(|s| s.rtt_us).collect();
        v.sort_unstable();
        v
    }

    pub fn rtt_min_us(&self) -> Option<u64> {
        self.samples.iter().filter_map(|s| s.rtt_us).min()
    }

    pub fn rtt_median_us(&self) -> Option<u64> {
        self.rtt_percentile_us(50)
    }

    pub fn rtt_p99_us(&self) -> Option<u64> {
        self.rtt_percentile_us(99)
    }

    /// Nearest-rank percentile: the smallest RTT with at least `pct`% of the samples at or below it.
    pub fn rtt_percentile_us(&self, pct: u32) -> Option<u64> {
        nearest_rank(&self.sorted_rtts(), pct)
    }
}

/// Nearest-rank percentile of sorted values (`pct` 0 gives the minimum, 100 or more the maximum).
pub fn nearest_rank(sorted: &[u64], pct: u32) -> Option<u64> {
    let pct = pct.min(100) as usize;
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    /// In the order of `PeerConfig::guests`.
    pub guests: Vec<GuestReport>,
    /// Every kind, in [`GarbageKind::ALL`] order, with how many were sent.
    pub garbage_sent: Vec<(GarbageKind, u32)>,
    pub arp_requests_answered: u32,
    pub frames_received: u64,
    /// Received frames the peer had no use for (not addressed to it, unknown ethertype, bad checksum, ...).
    pub frames_ignored: u64,
    /// Echo replies to hostile frames (identifier [`GARBAGE_IDENT`]): a correct guest sends none.
    pub garbage_replies: u32,
    /// When pinging began (ARP resolved for every guest), in µs since the peer started — with the emulator,
    /// so `ping_start_us` + a sample's `sent_us` is since boot began.
    pub ping_start_us: u64,
}

impl PeerReport {
    pub fn garbage_total(&self) -> u32 {
        self.garbage_sent.iter().map(|(_, n)| n).sum()
    }
}

/// One `RESULT ping ...` line per guest, then `RESULT ping_garbage ...` if any garbage was sent.
pub fn result_lines(r: &PeerReport) -> Vec<String> {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let mut lines: Vec<String> = r
        .guests
        .iter()
        .map(|g| {
            format!(
                "RESULT ping guest={} sent={} received={} lost={} dup={} rtt_us_min={} rtt_us_median={} rtt_us_p99={} \
                 max_gap_us={} bad={} mac={}",
                g.ip,
                g.sent,
                g.received,
                g.lost,
                g.dup,
                opt(g.rtt_min_us()),
                opt(g.rtt_median_us()),
                opt(g.rtt_p99_us()),
                opt(max_reply_gap_us(&g.samples)),
                g.bad,
                g.mac.as_ref().map_or_else(|| "-".to_string(), format_mac),
            )
        })
        .collect();
    let total = r.garbage_total();
    if total > 0 {
        let mut line = format!("RESULT ping_garbage sent={total}");
        for (kind, n) in &r.garbage_sent {
            line.push_str(&format!(" {}={n}", kind.name()));
        }
        line.push_str(&format!(" replies={}", r.garbage_replies));
        lines.push(line);
    }
    lines
}

/// `guest,seq,sent_us,rtt_us`, one row per request (an empty `rtt_us` when it was lost).
/// The longest outage in a guest's reply timeline: the longest run of unanswered requests, and the time
/// from the last reply before it to the first reply after it (reply arrival times, `sent + rtt`). `None` when
/// nothing was lost, or the run never ended (no reply came back after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    pub first_lost_seq: u16,
    pub lost: u32,
    pub downtime_us: u64,
}

pub fn longest_outage(samples: &[Sample]) -> Option<Outage> {
    let mut best: Option<(usize, usize)> = None; // [start, end) of the lost run
    let mut i = 0;
    while i < samples.len() {
        if samples[i].rtt_us.is_none() {
            let start = i;
            while i < samples.len() && samples[i].rtt_us.is_none() {
                i += 1;
            }
            if best.is_none_or(|(a, b)| i - start > b - a) {
                best = Some((start, i));
            }
        } else {
            i += 1;
        }
    }
    let (start, end) = best?;
    let after = samples.get(end)?;
    let arrive = |s: &Sample| s.sent_us + s.rtt_us.unwrap_or(0);
    // With no reply before the run (it started with the first ping), the outage starts at the first request.
    let from = if start > 0 { arrive(&samples[start - 1]) } else { samples[start].sent_us };
    Some(Outage { first_lost_seq: samples[start].seq, lost: (end - start) as u32, downtime_us: arrive(after).saturating_sub(from) })
}

/// The longest silence between two consecutive replies, by arrival time (late replies count where they
/// arrived): what a client of the guest saw of an outage, lost or merely delayed requests alike. None with
/// fewer than two replies.
pub fn max_reply_gap_us(samples: &[Sample]) -> Option<u64> {
    let mut arrivals: Vec<u64> = samples.iter().filter_map(|s| Some(s.sent_us + s.rtt_us?)).collect();
    arrivals.sort_unstable();
    arrivals.windows(2).map(|w| w[1] - w[0]).max()
}

pub fn samples_csv(r: &PeerReport) -> String {
    let mut csv = String::from("guest,seq,sent_us,rtt_us\n");
    for g in &r.guests {
        for s in &g.samples {
            let rtt = s.rtt_us.map(|v| v.to_string()).unwrap_or_default();
            csv.push_str(&format!("{},{},{},{}\n", g.ip, s.seq, s.sent_us, rtt));
        }
    }
    csv
}

// ---------------------------------------------------------------------------------------------------------------
// Deterministic randomness for garbage (splitmix64)
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `lo..=hi` (modulo bias is irrelevant here); `lo` if the range is empty.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo) as u64 + 1;
        lo + (self.next_u64() % span) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// A locally administered unicast MAC that is not the peer's.
    fn mac(&mut self) -> [u8; 6] {
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
    fn host(&mut self, avoid: &[Ipv4Addr]) -> Ipv4Addr {
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
fn garbage_frames(
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
struct GarbagePlan {
    order: [GarbageKind; 8],
    total: u32,
    next: u32,
    sent: [u32; 8],
}

impl GarbagePlan {
    fn new(total: u32, rng: &mut Rng) -> Self {
        let mut order = GarbageKind::ALL;
        for i in (1..order.len()).rev() {
            order.swap(i, rng.range(0, i));
        }
        GarbagePlan { order, total, next: 0, sent: [0; 8] }
    }

    /// Offset from the first round of the next event, if any is left: event j at (j+1)/(total+1) of the span from
    /// the first round to the last.
    fn next_due(&self, count: u32, interval: Duration) -> Option<Duration> {
        (self.next < self.total).then(|| {
            let span = u128::from(count.saturating_sub(1));
            scaled(interval, span * u128::from(self.next + 1), u128::from(self.total) + 1)
        })
    }

    /// The next event's frames, aimed at one of `targets` (resolved guests); counts it.
    fn take(&mut self, targets: &[(Ipv4Addr, [u8; 6])], avoid: &[Ipv4Addr], rng: &mut Rng) -> Vec<Vec<u8>> {
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

    fn report(&self) -> Vec<(GarbageKind, u32)> {
        GarbageKind::ALL.iter().copied().zip(self.sent.iter().copied()).collect()
    }
}

/// `d * num / den` without overflow (saturating at ~584 years).
fn scaled(d: Duration, num: u128, den: u128) -> Duration {
    let nanos = d.as_nanos().saturating_mul(num) / den.max(1);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------------------------------------------------------
// Peer state: everything but the socket, so frame handling is testable on its own
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct PingRecord {
    /// Since the start of the run (the clock replies are stamped with).
    sent_at: Duration,
    /// Since the first round (what the payload carries).
    sent_us: u64,
    rtt: Option<Duration>,
}

#[derive(Debug, Clone)]
struct GuestState {
    ip: Ipv4Addr,
    ident: u16,
    mac: Option<[u8; 6]>,
    /// ARP timed out: never pinged, and its MAC is no longer learned (the report says "unresolved").
    gave_up: bool,
    next_arp: Duration,
    /// Index = round = sequence number (mod 2^16).
    pings: Vec<PingRecord>,
    received: u32,
    dup: u32,
    bad: u32,
}

impl GuestState {
    /// The request a reply with sequence number `seq` answers: the latest one sent with that number.
    fn ping_index(&self, seq: u16) -> Option<usize> {
        let last = self.pings.len().checked_sub(1)?;
        let back = usize::from((last as u16).wrapping_sub(seq));
        last.checked_sub(back)
    }

    fn all_answered(&self) -> bool {
        self.pings.iter().all(|p| p.rtt.is_some())
    }
}

enum Handled {
    Ignored,
    Used,
    Reply(Vec<u8>),
}

#[derive(Debug, Clone)]
struct PeerState {
    guests: Vec<GuestState>,
    size: usize,
    arp_requests_answered: u32,
    frames_received: u64,
    frames_ignored: u64,
    garbage_replies: u32,
    /// When pinging began (every guest resolved), since the peer started.
    ping_start_us: u64,
}

impl PeerState {
    fn new(guests: &[Ipv4Addr], size: usize) -> Self {
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
    fn handle_frame(&mut self, frame: &[u8], now: Duration) -> Option<Vec<u8>> {
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
    fn echo_request(&mut self, index: usize, now: Duration, t0: Duration) -> Option<Vec<u8>> {
        let size = self.size;
        let g = self.guests.get_mut(index)?;
        let mac = g.mac?;
        let seq = g.pings.len() as u16;
        let sent_us = micros(now.saturating_sub(t0));
        let icmp = build_icmp_echo(ICMP_ECHO_REQUEST, g.ident, seq, &echo_payload(sent_us, size));
        g.pings.push(PingRecord { sent_at: now, sent_us, rtt: None });
        Some(build_ipv4_frame(mac, PEER_MAC, PEER_IP, g.ip, IP_PROTO_ICMP, seq, &icmp))
    }

    fn resolved(&self) -> Vec<(Ipv4Addr, [u8; 6])> {
        self.guests.iter().filter_map(|g| Some((g.ip, g.mac?))).collect()
    }

    fn report(&self, garbage_sent: Vec<(GarbageKind, u32)>) -> PeerReport {
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
    let mut phase = Phase::Resolve;
    let mut t0 = Duration::ZERO; // first round, since start
    let mut next_round: u32 = 0;
    let mut drain_until = Duration::ZERO;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let now = start.elapsed();
        let wake = match phase {
            Phase::Resolve => {
                let mut wake = now + ARP_RETRY;
                let mut pending = false;
                for g in state.guests.iter_mut().filter(|g| g.mac.is_none() && !g.gave_up) {
                    if now >= cfg.arp_timeout {
                        g.gave_up = true;
                        continue;
                    }
                    pending = true;
                    if now >= g.next_arp {
                        send_frame(sock, dest, &ArpPacket::request(PEER_MAC, PEER_IP, g.ip).to_frame())?;
                        g.next_arp = now + ARP_RETRY;
                    }
                    wake = wake.min(g.next_arp).min(cfg.arp_timeout);
                }
                if !pending {
                    if state.guests.iter().all(|g| g.mac.is_none()) {
                        return Ok(()); // nobody to ping
                    }
                    phase = Phase::Ping;
                    t0 = start.elapsed();
                    state.ping_start_us = micros(t0);
                    continue;
                }
                wake
            }
            Phase::Ping => {
                // Rounds and garbage are scheduled from t0, never from "now", so lateness does not accumulate.
                let round_due = (next_round < cfg.count)
                    .then(|| t0.saturating_add(scaled(cfg.interval, u128::from(next_round), 1)));
                let garbage_due = garbage.next_due(cfg.count, cfg.interval).map(|d| t0.saturating_add(d));
                let (due, is_round) = match (round_due, garbage_due) {
                    (Some(r), Some(g)) if g < r => (g, false),
                    (Some(r), _) => (r, true),
                    (None, Some(g)) => (g, false),
                    (None, None) => {
                        phase = Phase::Drain;
                        drain_until = now.saturating_add(cfg.reply_timeout);
                        continue;
                    }
                };
                if due <= now {
                    if is_round {
                        for index in 0..state.guests.len() {
                            if let Some(frame) = state.echo_request(index, start.elapsed(), t0) {
                                send_frame(sock, dest, &frame)?;
                            }
                        }
                        next_round += 1;
                    } else {
                        for frame in garbage.take(&state.resolved(), &avoid, rng) {
                            send_frame(sock, dest, &frame)?;
                        }
                    }
                    continue;
                }
                due
            }
            Phase::Drain => {
                if now >= drain_until || state.guests.iter().all(GuestState::all_answered) {
                    return Ok(());
                }
                drain_until
            }
        };
        let wait = wake.saturating_sub(start.elapsed()).min(STOP_POLL);
        match rx.recv_timeout(wait) {
            Ok(Ok((frame, at))) => {
                if let Some(reply) = state.handle_frame(&frame, at.saturating_duration_since(start)) {
                    send_frame(sock, dest, &reply)?;
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(io::Error::other("peer: receiving thread ended"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const GUEST_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const GUEST_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    const MAC_A: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x02];
    const MAC_B: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x03];

    fn echo_frame(icmp_type: u8, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let icmp = build_icmp_echo(icmp_type, ident, seq, payload);
        build_ipv4_frame(MAC_A, PEER_MAC, PEER_IP, GUEST_A, IP_PROTO_ICMP, 7, &icmp)
    }

    /// The reply guest A would send to a request frame built by the peer.
    fn reply_from_a(ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let icmp = build_icmp_echo(ICMP_ECHO_REPLY, ident, seq, payload);
        build_ipv4_frame(PEER_MAC, MAC_A, GUEST_A, PEER_IP, IP_PROTO_ICMP, 9, &icmp)
    }

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
    fn peer_checksum_rfc1071() {
        // RFC 1071 section 3 example: the sum of these words is 0xddf2, so the checksum is !0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), 0x220d);
        // With the checksum appended, the total verifies to zero.
        let mut with = data.to_vec();
        with.extend_from_slice(&0x220du16.to_be_bytes());
        assert_eq!(internet_checksum(&with), 0);
        // An odd trailing byte counts as the high byte of a word.
        assert_eq!(internet_checksum(&[0x12]), !0x1200);
        assert_eq!(internet_checksum(&[]), 0xffff);
        // A known IPv4 header (Wikipedia's example): checksum 0xb861.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&header), 0xb861);
        header[10..12].copy_from_slice(&[0xb8, 0x61]);
        assert_eq!(internet_checksum(&header), 0);
    }

    #[test]
    fn peer_ethernet_round_trip() {
        let f = build_ethernet(MAC_A, PEER_MAC, 0x1234, &[1, 2, 3]);
        assert_eq!(f.len(), ETH_MIN_FRAME_LEN, "short frames are padded");
        let e = parse_ethernet(&f).unwrap();
        assert_eq!((e.dst, e.src, e.ethertype), (MAC_A, PEER_MAC, 0x1234));
        assert_eq!(&e.payload[..3], &[1, 2, 3]);
        assert!(e.payload[3..].iter().all(|&b| b == 0));
        let big = build_ethernet(MAC_A, PEER_MAC, 0x1234, &[7; 100]);
        assert_eq!(big.len(), 114);
        assert_eq!(parse_ethernet(&big).unwrap().payload, &[7; 100][..]);
        assert_eq!(parse_ethernet(&f[..13]), None);
        assert_eq!(parse_ethernet(&f[..14]).unwrap().payload, &[] as &[u8]);
        assert_eq!(format_mac(&MAC_A), "52:54:00:12:34:02");
        assert!(is_unicast_mac(&PEER_MAC) && !is_unicast_mac(&BROADCAST_MAC) && !is_unicast_mac(&[0; 6]));
    }

    #[test]
    fn peer_arp_round_trip() {
        let req = ArpPacket::request(PEER_MAC, PEER_IP, GUEST_A);
        let frame = req.to_frame();
        let eth = parse_ethernet(&frame).unwrap();
        assert_eq!((eth.dst, eth.src, eth.ethertype), (BROADCAST_MAC, PEER_MAC, ETHERTYPE_ARP));
        assert_eq!(parse_arp(eth.payload), Some(req));
        let reply = req.reply_to(MAC_A);
        assert_eq!(
            reply,
            ArpPacket {
                op: ARP_REPLY,
                sender_mac: MAC_A,
                sender_ip: GUEST_A,
                target_mac: PEER_MAC,
                target_ip: PEER_IP
            }
        );
        let frame = reply.to_frame();
        let eth = parse_ethernet(&frame).unwrap();
        assert_eq!((eth.dst, eth.src), (PEER_MAC, MAC_A));
        assert_eq!(parse_arp(eth.payload), Some(reply));
        // Not Ethernet/IPv4 ARP, or incomplete.
        let mut bytes = reply.to_bytes();
        assert_eq!(parse_arp(&bytes[..27]), None);
        bytes[5] = 16;
        assert_eq!(parse_arp(&bytes), None);
    }

    #[test]
    fn peer_ipv4_icmp_round_trip() {
        let payload = echo_payload(0x0102_0304_0506_0708, 56);
        assert_eq!(&payload[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(payload[8], 8);
        assert_eq!(payload[55], 55);
        assert!(echo_payload_matches(&payload, 0x0102_0304_0506_0708, 56));
        assert!(!echo_payload_matches(&payload, 0x0102_0304_0506_0709, 56));
        assert!(!echo_payload_matches(&payload[..55], 0x0102_0304_0506_0708, 56));

        let frame = echo_frame(ICMP_ECHO_REQUEST, 0x5100, 42, &payload);
        let eth = parse_ethernet(&frame).unwrap();
        assert_eq!(eth.ethertype, ETHERTYPE_IPV4);
        let ip = parse_ipv4(eth.payload).unwrap();
        assert_eq!((ip.src, ip.dst, ip.protocol, ip.ttl, ip.ident), (PEER_IP, GUEST_A, IP_PROTO_ICMP, 64, 7));
        assert!(ip.dont_fragment && !ip.is_fragment() && ip.header_checksum_ok);
        assert_eq!(ip.payload.len(), ICMP_ECHO_HEADER_LEN + 56);
        let icmp = parse_icmp_echo(ip.payload).unwrap();
        assert_eq!((icmp.icmp_type, icmp.ident, icmp.seq, icmp.checksum_ok), (ICMP_ECHO_REQUEST, 0x5100, 42, true));
        assert_eq!(icmp.payload, &payload[..]);

        // A minimal echo gets padded to 60 bytes, and the padding is not part of the IPv4 payload.
        let frame = echo_frame(ICMP_ECHO_REPLY, 1, 2, &[]);
        assert_eq!(frame.len(), ETH_MIN_FRAME_LEN);
        let ip = parse_ipv4(&frame[ETH_HEADER_LEN..]).unwrap();
        assert_eq!(ip.payload.len(), ICMP_ECHO_HEADER_LEN);
        assert!(parse_icmp_echo(ip.payload).unwrap().checksum_ok);

        // Options (IHL 6) are skipped.
        let mut with_options = build_ipv4(PEER_IP, GUEST_A, 99, 0, &[0xaa; 4]);
        with_options.splice(20..20, [1, 1, 1, 0]); // NOP NOP NOP EOL
        with_options[0] = 0x46;
        put_be16(&mut with_options, 2, 28);
        put_be16(&mut with_options, 10, 0);
        let c = internet_checksum(&with_options[..24]);
        put_be16(&mut with_options, 10, c);
        let ip = parse_ipv4(&with_options).unwrap();
        assert!(ip.header_checksum_ok);
        assert_eq!(ip.payload, &[0xaa; 4][..]);
    }

    #[test]
    fn peer_ipv4_rejects_bad_lengths() {
        let good = build_ipv4(PEER_IP, GUEST_A, IP_PROTO_ICMP, 0, &[0; 8]);
        assert!(parse_ipv4(&good).is_some());
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = good.clone();
            f(&mut p);
            parse_ipv4(&p).map(|ip| (ip.header_checksum_ok, ip.is_fragment()))
        };
        assert_eq!(with(&|p| p[0] = 0x65), None, "version 6");
        assert_eq!(with(&|p| p[0] = 0x44), None, "IHL 4");
        assert_eq!(with(&|p| p[0] = 0x4f), None, "IHL 15 > total length");
        assert_eq!(with(&|p| put_be16(p, 2, 29)), None, "total length past the end");
        assert_eq!(with(&|p| put_be16(p, 2, 19)), None, "total length shorter than the header");
        assert_eq!(parse_ipv4(&good[..19]), None);
        assert_eq!(with(&|p| p[10] ^= 1), Some((false, false)), "bad checksum still parses");
        assert_eq!(with(&|p| put_be16(p, 6, 0x2000)), Some((false, true)), "more fragments");
        assert_eq!(with(&|_| {}), Some((true, false)));
        // ICMP: not an echo, nonzero code, short.
        let echo = build_icmp_echo(ICMP_ECHO_REQUEST, 1, 1, &[]);
        assert!(parse_icmp_echo(&echo).is_some());
        assert_eq!(parse_icmp_echo(&echo[..7]), None);
        assert_eq!(parse_icmp_echo(&[3, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(parse_icmp_echo(&[8, 1, 0, 0, 0, 0, 0, 0]), None);
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

    fn report_with(rtts: &[Option<u64>]) -> GuestReport {
        let samples: Vec<Sample> = rtts
            .iter()
            .enumerate()
            .map(|(i, &rtt_us)| Sample { seq: i as u16, sent_us: i as u64 * 1000, rtt_us })
            .collect();
        let received = rtts.iter().filter(|r| r.is_some()).count() as u32;
        GuestReport {
            ip: GUEST_A,
            mac: Some(MAC_A),
            sent: rtts.len() as u32,
            received,
            lost: rtts.len() as u32 - received,
            dup: 0,
            bad: 0,
            samples,
        }
    }

    #[test]
    fn peer_percentiles() {
        let g = report_with(&[Some(5), Some(1), Some(3), None, Some(2), Some(4)]);
        assert_eq!((g.rtt_min_us(), g.rtt_median_us(), g.rtt_p99_us()), (Some(1), Some(3), Some(5)));
        let hundred: Vec<Option<u64>> = (1..=100).rev().map(Some).collect();
        let g = report_with(&hundred);
        assert_eq!((g.rtt_min_us(), g.rtt_median_us(), g.rtt_p99_us()), (Some(1), Some(50), Some(99)));
        assert_eq!(g.rtt_percentile_us(100), Some(100));
        assert_eq!(g.rtt_percentile_us(0), Some(1));
        let one = report_with(&[Some(7)]);
        assert_eq!((one.rtt_min_us(), one.rtt_median_us(), one.rtt_p99_us()), (Some(7), Some(7), Some(7)));
        let none = report_with(&[None, None]);
        assert_eq!((none.rtt_min_us(), none.rtt_median_us(), none.rtt_p99_us()), (None, None, None));
        assert_eq!(nearest_rank(&[], 50), None);
    }

    fn sample_report() -> PeerReport {
        let mut unresolved = report_with(&[]);
        unresolved.ip = GUEST_B;
        unresolved.mac = None;
        PeerReport {
            guests: vec![report_with(&[Some(120), None, Some(80)]), unresolved],
            garbage_sent: GarbageKind::ALL
                .iter()
                .map(|&k| (k, if k == GarbageKind::ArpFlood { 2 } else { 1 }))
                .collect(),
            arp_requests_answered: 1,
            frames_received: 10,
            frames_ignored: 2,
            garbage_replies: 0,
            ping_start_us: 0,
        }
    }

    #[test]
    fn peer_result_line_format() {
        let r = sample_report();
        assert_eq!(
            result_lines(&r),
            vec![
                "RESULT ping guest=10.0.0.2 sent=3 received=2 lost=1 dup=0 rtt_us_min=80 rtt_us_median=80 \
                 rtt_us_p99=120 max_gap_us=1960 bad=0 mac=52:54:00:12:34:02",
                "RESULT ping guest=10.0.0.3 sent=0 received=0 lost=0 dup=0 rtt_us_min=- rtt_us_median=- rtt_us_p99=- \
                 max_gap_us=- bad=0 mac=-",
                "RESULT ping_garbage sent=9 runt=1 oversize=1 bad_ip_checksum=1 bad_icmp_checksum=1 \
                 unknown_ethertype=1 unknown_ip_protocol=1 arp_flood=2 truncated_ip=1 replies=0",
            ]
        );
        let mut quiet = r.clone();
        quiet.garbage_sent.iter_mut().for_each(|(_, n)| *n = 0);
        assert_eq!(result_lines(&quiet).len(), 2, "no garbage line without garbage");
    }

    #[test]
    fn peer_longest_outage_is_measured_between_replies() {
        let s = |seq: u16, sent_us: u64, rtt: Option<u64>| Sample { seq, sent_us, rtt_us: rtt };
        let timeline = [s(0, 0, Some(100)), s(1, 1000, None), s(2, 2000, Some(50)), s(3, 3000, None), s(4, 4000, None), s(5, 5000, Some(300)), s(6, 6000, Some(10))];
        // The two-request gap (3, 4): from the reply to 2 (2050) to the reply to 5 (5300).
        assert_eq!(longest_outage(&timeline), Some(Outage { first_lost_seq: 3, lost: 2, downtime_us: 3250 }));
        assert_eq!(longest_outage(&timeline[..1]), None, "nothing lost");
        assert_eq!(longest_outage(&timeline[..5]), None, "the outage never ended");
    }

    #[test]
    fn peer_reply_gap_counts_late_replies_where_they_arrived() {
        let s = |seq: u16, sent_us: u64, rtt: Option<u64>| Sample { seq, sent_us, rtt_us: rtt };
        // Replies at 100, 1100; then requests 2 and 3 answered late, both arriving at 5000; then 5100.
        let t = [s(0, 0, Some(100)), s(1, 1000, Some(100)), s(2, 2000, Some(3000)), s(3, 3000, Some(2000)), s(4, 5000, Some(100))];
        assert_eq!(max_reply_gap_us(&t), Some(3900));
        assert_eq!(max_reply_gap_us(&t[..1]), None);
    }

    #[test]
    fn peer_samples_csv_format() {
        assert_eq!(
            samples_csv(&sample_report()),
            "guest,seq,sent_us,rtt_us\n10.0.0.2,0,0,120\n10.0.0.2,1,1000,\n10.0.0.2,2,2000,80\n"
        );
    }

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
