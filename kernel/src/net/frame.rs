//! Early demultiplexing (paper §3.6): before a received frame reaches the network stack, each kernel sharing
//! the NIC decides from the headers alone whether the frame is its own, someone else's, or garbage. Pure,
//! host-tested, never panics on any input.
#![forbid(unsafe_code)]

/// Who this kernel is on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub mac: [u8; 6],
    pub ip: [u8; 4],
}

/// What to do with a received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// For this kernel's stack.
    Mine,
    /// Well-formed, but addressed to another sharer (or nobody here): dropped without a count of garbage.
    NotMine,
    /// The host peer's end-of-run marker: an echo request to us with [`STOP_ID`] and [`STOP_PAYLOAD`].
    Stop,
    /// Malformed or unsupported: dropped and counted by reason.
    Drop(DropReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    Runt,
    Oversize,
    UnknownEthertype,
    BadArp,
    BadIpHeader,
    BadIpChecksum,
    IpFragment,
    UnknownIpProtocol,
    BadIcmp,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        DropReason::Runt,
        DropReason::Oversize,
        DropReason::UnknownEthertype,
        DropReason::BadArp,
        DropReason::BadIpHeader,
        DropReason::BadIpChecksum,
        DropReason::IpFragment,
        DropReason::UnknownIpProtocol,
        DropReason::BadIcmp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::Oversize => "oversize",
            DropReason::UnknownEthertype => "ethertype",
            DropReason::BadArp => "bad_arp",
            DropReason::BadIpHeader => "bad_ip",
            DropReason::BadIpChecksum => "ip_checksum",
            DropReason::IpFragment => "fragment",
            DropReason::UnknownIpProtocol => "ip_protocol",
            DropReason::BadIcmp => "icmp",
        }
    }

    pub fn index(self) -> usize {
        DropReason::ALL.iter().position(|&r| r == self).unwrap_or(0)
    }
}

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const BROADCAST: [u8; 6] = [0xFF; 6];
const ETH_HEADER: usize = 14;
/// Largest frame accepted: header + 1500-byte MTU.
pub const MAX_FRAME: usize = 1514;
/// The stop marker's ICMP identifier ("Qp") and payload prefix.
pub const STOP_ID: u16 = 0x5170;
pub const STOP_PAYLOAD: &[u8] = b"QUESTV-STOP";

/// The Internet checksum (RFC 1071) of `data`, as it would be stored in the header.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Judge a received Ethernet frame (no FCS) for `me`.
pub fn classify(frame: &[u8], me: &Identity) -> Verdict {
    if frame.len() < ETH_HEADER {
        return Verdict::Drop(DropReason::Runt);
    }
    if frame.len() > MAX_FRAME {
        return Verdict::Drop(DropReason::Oversize);
    }
    let dst: [u8; 6] = [frame[0], frame[1], frame[2], frame[3], frame[4], frame[5]];
    let to_me = dst == me.mac;
    if !to_me && dst != BROADCAST {
        return Verdict::NotMine;
    }
    let payload = &frame[ETH_HEADER..];
    match be16(frame, 12) {
        ETHERTYPE_ARP => {
            // Ethernet/IPv4 ARP: htype 1, ptype 0x0800, hlen 6, plen 4, 28 bytes.
            if payload.len() < 28 || be16(payload, 0) != 1 || be16(payload, 2) != ETHERTYPE_IPV4 || payload[4] != 6 || payload[5] != 4 {
                return Verdict::Drop(DropReason::BadArp);
            }
            let op = be16(payload, 6);
            if op != 1 && op != 2 {
                return Verdict::Drop(DropReason::BadArp);
            }
            // Broadcast ARP reaches every sharer; only the owner of the target address takes it.
            if payload[24..28] == me.ip {
                Verdict::Mine
            } else {
                Verdict::NotMine
            }
        }
        ETHERTYPE_IPV4 => {
            if payload.len() < 20 || payload[0] >> 4 != 4 {
                return Verdict::Drop(DropReason::BadIpHeader);
            }
            let ihl = usize::from(payload[0] & 0xF) * 4;
            let total = usize::from(be16(payload, 2));
            if ihl < 20 || total < ihl || total > payload.len() {
                return Verdict::Drop(DropReason::BadIpHeader);
            }
            if internet_checksum(&payload[..ihl]) != 0 {
                return Verdict::Drop(DropReason::BadIpChecksum);
            }
            if payload[16..20] != me.ip {
                return Verdict::NotMine;
            }
            // More-fragments flag or a fragment offset: the stack does no reassembly.
            if be16(payload, 6) & 0x3FFF != 0 {
                return Verdict::Drop(DropReason::IpFragment);
            }
            if payload[9] != 1 {
                return Verdict::Drop(DropReason::UnknownIpProtocol);
            }
            let icmp = &payload[ihl..total];
            if icmp.len() < 8 || internet_checksum(icmp) != 0 {
                return Verdict::Drop(DropReason::BadIcmp);
            }
            if icmp[0] == 8 && be16(icmp, 4) == STOP_ID && icmp[8..].starts_with(STOP_PAYLOAD) {
                return Verdict::Stop;
            }
            Verdict::Mine
        }
        _ => Verdict::Drop(DropReason::UnknownEthertype),
    }
}

/// The peers this stack talked to (IPv4 → MAC), learned from the frames it accepted: the network service's
/// state that stateful recovery keeps in the monitor (smoltcp learns a neighbour only from ARP, so a recovered
/// stack would otherwise lose its first reply to each peer to an ARP round trip).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Neighbors {
    pub entries: alloc::vec::Vec<([u8; 4], [u8; 6])>,
}

impl Neighbors {
    pub const MAX: usize = 16;
    const ENTRY: usize = 10;

    /// Note the sender of an accepted IPv4 frame. Returns true if the table changed (time to checkpoint).
    pub fn learn(&mut self, frame: &[u8]) -> bool {
        if frame.len() < ETH_HEADER + 20 || be16(frame, 12) != ETHERTYPE_IPV4 {
            return false;
        }
        let mac = [frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]];
        let ip = [frame[26], frame[27], frame[28], frame[29]];
        if mac[0] & 1 != 0 {
            return false; // never a multicast/broadcast source
        }
        if let Some((_, m)) = self.entries.iter_mut().find(|(i, _)| *i == ip) {
            let changed = *m != mac;
            *m = mac;
            return changed;
        }
        if self.entries.len() < Self::MAX {
            self.entries.push((ip, mac));
            return true;
        }
        false
    }

    pub fn encode(&self) -> alloc::vec::Vec<u8> {
        let mut out = alloc::vec::Vec::with_capacity(self.entries.len() * Self::ENTRY);
        for (ip, mac) in &self.entries {
            out.extend_from_slice(ip);
            out.extend_from_slice(mac);
        }
        out
    }

    /// From a checkpoint; a damaged one (wrong length, too many entries) gives an empty table.
    pub fn decode(bytes: &[u8]) -> Neighbors {
        if bytes.len() % Self::ENTRY != 0 || bytes.len() / Self::ENTRY > Self::MAX {
            return Neighbors::default();
        }
        let entries = bytes
            .chunks_exact(Self::ENTRY)
            .map(|c| ([c[0], c[1], c[2], c[3]], [c[4], c[5], c[6], c[7], c[8], c[9]]))
            .filter(|(_, mac)| mac[0] & 1 == 0)
            .collect();
        Neighbors { entries }
    }
}

/// An ARP reply from `peer` (IPv4, MAC) to `me`: fed to a recovered stack so it knows the peer again.
pub fn arp_reply_frame(peer: ([u8; 4], [u8; 6]), me: &Identity) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&me.mac);
    f[6..12].copy_from_slice(&peer.1);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&2u16.to_be_bytes()); // reply
    f[22..28].copy_from_slice(&peer.1);
    f[28..32].copy_from_slice(&peer.0);
    f[32..38].copy_from_slice(&me.mac);
    f[38..42].copy_from_slice(&me.ip);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Identity = Identity { mac: [0x02, 0x51, 0, 0, 0, 1], ip: [10, 0, 0, 3] };
    const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn eth(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn ipv4(dst: [u8; 4], protocol: u8, body: &[u8]) -> Vec<u8> {
        let total = (20 + body.len()) as u16;
        let mut h = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, protocol, 0, 0, 10, 0, 0, 1];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&dst);
        let c = internet_checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn echo(id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
        let mut m = vec![8, 0, 0, 0];
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(data);
        let c = internet_checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        m
    }

    fn arp(op: u16, target_ip: [u8; 4]) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4];
        a.extend_from_slice(&op.to_be_bytes());
        a.extend_from_slice(&PEER_MAC);
        a.extend_from_slice(&[10, 0, 0, 1]);
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&target_ip);
        a
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is ddf2 (checksum = its complement).
        assert_eq!(internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
        let h = ipv4([10, 0, 0, 3], 1, &[]);
        assert_eq!(internet_checksum(&h[..20]), 0, "a header with its checksum sums to zero");
    }

    #[test]
    fn own_pings_and_arp_are_mine_others_are_not() {
        let ping = eth(ME.mac, ETHERTYPE_IPV4, &ipv4(ME.ip, 1, &echo(0x5100, 1, &[0xAB; 56])));
        assert_eq!(classify(&ping, &ME), Verdict::Mine);
        let other_ip = eth(ME.mac, ETHERTYPE_IPV4, &ipv4([10, 0, 0, 2], 1, &echo(0x5100, 1, &[0; 8])));
        assert_eq!(classify(&other_ip, &ME), Verdict::NotMine);
        let other_mac = eth([2, 0x51, 0, 0, 0, 0], ETHERTYPE_IPV4, &ipv4(ME.ip, 1, &echo(1, 1, &[])));
        assert_eq!(classify(&other_mac, &ME), Verdict::NotMine);
        assert_eq!(classify(&eth(BROADCAST, ETHERTYPE_ARP, &arp(1, ME.ip)), &ME), Verdict::Mine);
        assert_eq!(classify(&eth(BROADCAST, ETHERTYPE_ARP, &arp(1, [10, 0, 0, 2])), &ME), Verdict::NotMine);
        assert_eq!(classify(&eth(ME.mac, ETHERTYPE_ARP, &arp(2, ME.ip)), &ME), Verdict::Mine);
        let stop = eth(ME.mac, ETHERTYPE_IPV4, &ipv4(ME.ip, 1, &echo(STOP_ID, 0, STOP_PAYLOAD)));
        assert_eq!(classify(&stop, &ME), Verdict::Stop);
        // The stop marker for another sharer is not ours.
        let stop_other = eth(BROADCAST, ETHERTYPE_IPV4, &ipv4([10, 0, 0, 2], 1, &echo(STOP_ID, 0, STOP_PAYLOAD)));
        assert_eq!(classify(&stop_other, &ME), Verdict::NotMine);
    }

    #[test]
    fn garbage_is_dropped_by_reason() {
        let d = |f: &[u8]| match classify(f, &ME) {
            Verdict::Drop(r) => Some(r),
            _ => None,
        };
        assert_eq!(d(&ME.mac[..5]), Some(DropReason::Runt));
        assert_eq!(d(&eth(ME.mac, ETHERTYPE_IPV4, &[0u8; 1600])), Some(DropReason::Oversize));
        assert_eq!(d(&eth(ME.mac, 0x88B5, &[0; 46])), Some(DropReason::UnknownEthertype));
        assert_eq!(d(&eth(BROADCAST, ETHERTYPE_ARP, &[0; 10])), Some(DropReason::BadArp));
        let mut bad_op = arp(7, ME.ip);
        bad_op[6..8].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(d(&eth(BROADCAST, ETHERTYPE_ARP, &bad_op)), Some(DropReason::BadArp));
        let mut ip = ipv4(ME.ip, 1, &echo(1, 1, &[1, 2, 3]));
        ip[10] ^= 0xFF;
        assert_eq!(d(&eth(ME.mac, ETHERTYPE_IPV4, &ip)), Some(DropReason::BadIpChecksum));
        let mut truncated = ipv4(ME.ip, 1, &echo(1, 1, &[0; 100]));
        truncated.truncate(60);
        assert_eq!(d(&eth(ME.mac, ETHERTYPE_IPV4, &truncated)), Some(DropReason::BadIpHeader));
        assert_eq!(d(&eth(ME.mac, ETHERTYPE_IPV4, &ipv4(ME.ip, 253, &[0; 8]))), Some(DropReason::UnknownIpProtocol));
        let mut icmp = echo(1, 1, &[5; 20]);
        icmp[2] ^= 1;
        assert_eq!(d(&eth(ME.mac, ETHERTYPE_IPV4, &ipv4(ME.ip, 1, &icmp))), Some(DropReason::BadIcmp));
        let mut frag = ipv4(ME.ip, 1, &echo(1, 1, &[]));
        frag[6] = 0x20; // more fragments
        let c = internet_checksum(&{
            let mut h = frag[..20].to_vec();
            h[10] = 0;
            h[11] = 0;
            h
        });
        frag[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(d(&eth(ME.mac, ETHERTYPE_IPV4, &frag)), Some(DropReason::IpFragment));
    }

    #[test]
    fn no_input_panics() {
        let valid = [
            eth(ME.mac, ETHERTYPE_IPV4, &ipv4(ME.ip, 1, &echo(0x5100, 1, &[7; 64]))),
            eth(BROADCAST, ETHERTYPE_ARP, &arp(1, ME.ip)),
        ];
        for f in &valid {
            for n in 0..=f.len() {
                let _ = classify(&f[..n], &ME);
            }
        }
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 1600) as usize;
            let mut f: Vec<u8> = (0..len).map(|i| (x >> (i % 56)) as u8).collect();
            if f.len() >= 14 {
                f[..6].copy_from_slice(&ME.mac);
                f[12..14].copy_from_slice(&if x & 1 == 0 { ETHERTYPE_IPV4 } else { ETHERTYPE_ARP }.to_be_bytes());
            }
            let _ = classify(&f, &ME);
        }
        assert!(DropReason::ALL.iter().enumerate().all(|(i, r)| r.index() == i));
    }

    #[test]
    fn neighbors_are_learned_checkpointed_and_replayed() {
        let me = Identity { mac: [2, 0x51, 0x56, 0, 0, 0], ip: [10, 0, 0, 2] };
        let peer = ([10, 0, 0, 1], [0x52, 0x54, 0, 0xAA, 0xBB, 0xCC]);
        let mut frame = [0u8; 60];
        frame[6..12].copy_from_slice(&peer.1);
        frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        frame[26..30].copy_from_slice(&peer.0);
        let mut n = Neighbors::default();
        assert!(n.learn(&frame), "a new peer changes the table");
        assert!(!n.learn(&frame), "the same peer again does not");
        let back = Neighbors::decode(&n.encode());
        assert_eq!(back, n);
        assert_eq!(Neighbors::decode(&[1, 2, 3]), Neighbors::default(), "a damaged checkpoint is dropped");
        // The replayed ARP reply is one the demultiplexer accepts as ours.
        assert_eq!(classify(&arp_reply_frame(back.entries[0], &me), &me), Verdict::Mine);
        // Broadcast sources are never learned.
        frame[6] = 0xFF;
        frame[26] = 9;
        assert!(!n.learn(&frame));
    }
}
