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
//!
//! The parts: [`wire`] (addressing, checksums, the frame formats), [`report`] (what a run measured and its
//! `RESULT` lines), [`hostile`] (the garbage frames and when they go out), `state` (frame handling without a
//! socket) and [`session`] (the run: the socket, the receiving thread and the schedule).
#![forbid(unsafe_code)]

pub mod hostile;
pub mod report;
pub mod session;
mod state;
pub mod wire;

pub use hostile::GarbageKind;
pub use report::*;
pub use session::{run_peer, PeerConfig};
pub use wire::*;

/// Addresses and frames the tests of every part share.
#[cfg(test)]
mod fixtures {
    use super::wire::*;
    use std::net::Ipv4Addr;

    pub(super) const GUEST_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    pub(super) const GUEST_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    pub(super) const MAC_A: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x02];
    pub(super) const MAC_B: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x03];

    pub(super) fn echo_frame(icmp_type: u8, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let icmp = build_icmp_echo(icmp_type, ident, seq, payload);
        build_ipv4_frame(MAC_A, PEER_MAC, PEER_IP, GUEST_A, IP_PROTO_ICMP, 7, &icmp)
    }

    /// The reply guest A would send to a request frame built by the peer.
    pub(super) fn reply_from_a(ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let icmp = build_icmp_echo(ICMP_ECHO_REPLY, ident, seq, payload);
        build_ipv4_frame(PEER_MAC, MAC_A, GUEST_A, PEER_IP, IP_PROTO_ICMP, 9, &icmp)
    }

}
