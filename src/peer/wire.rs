//! The peer's wire: its addresses and the protocol constants, bounds-checked byte helpers, the Internet checksum,
//! Ethernet II, ARP, IPv4 and ICMP echo (pure; the parsers never panic, whatever the input).
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;

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
/// sends) cannot be mistaken for a ping reply; such replies are counted in [`PeerReport::garbage_replies`](super::PeerReport::garbage_replies).
pub const GARBAGE_IDENT: u16 = 0xBAD0;
/// ARP requests per [`GarbageKind::ArpFlood`](super::GarbageKind::ArpFlood) burst.
pub const ARP_FLOOD_BURST: usize = 32;

// ---------------------------------------------------------------------------------------------------------------
// Byte helpers (bounds-checked: `None` past the end, never a panic)
// ---------------------------------------------------------------------------------------------------------------

pub(super) fn be16(b: &[u8], at: usize) -> Option<u16> {
    let bytes: [u8; 2] = b.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(u16::from_be_bytes(bytes))
}

pub(super) fn mac_at(b: &[u8], at: usize) -> Option<[u8; 6]> {
    b.get(at..at.checked_add(6)?)?.try_into().ok()
}

pub(super) fn ipv4_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let octets: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(Ipv4Addr::from(octets))
}

/// Overwrite a big-endian u16 in place; a no-op past the end.
pub(super) fn put_be16(b: &mut [u8], at: usize, value: u16) {
    if let Some(dst) = b.get_mut(at..at + 2) {
        dst.copy_from_slice(&value.to_be_bytes());
    }
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

pub(super) fn echo_payload_matches(payload: &[u8], sent_us: u64, size: usize) -> bool {
    let stamp = sent_us.to_be_bytes();
    payload.len() == size && payload.iter().enumerate().all(|(i, &b)| b == stamp.get(i).copied().unwrap_or(i as u8))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

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
}
