//! Networking: one e1000 NIC, owned by one kernel (SMP build) or shared by several sandboxes (VT build, paper
//! §3.6), with smoltcp answering ARP and ICMP echo. `frame` (early demultiplexing) and the address plan below
//! are pure and host-tested; `device` (finding and claiming the NIC, the DMA region) and `stack` (the driver
//! loop, interrupts, statistics) run only in the image.

pub mod frame;

#[cfg(feature = "image")]
pub mod device;
#[cfg(feature = "image")]
pub mod stack;

/// The host peer's subnet: 10.0.0.0/24, peer at 10.0.0.1 (src/peer.rs), guests from 10.0.0.2 on.
pub const SUBNET_PREFIX: u8 = 24;
pub const FIRST_GUEST_IP: [u8; 4] = [10, 0, 0, 2];

/// Vector of the NIC's interrupt (edge triggered from the I/O APIC).
pub const VECTOR_NIC: u8 = 0x40;

/// Sharer `j`'s IPv4 address: 10.0.0.(2 + j).
pub fn sharer_ip(j: usize) -> [u8; 4] {
    let [a, b, c, d] = FIRST_GUEST_IP;
    [a, b, c, d.wrapping_add(j as u8)]
}

/// Sharer `j`'s virtual MAC in the VT build: locally administered 02:51:56:00:00:jj. (The SMP build uses the
/// NIC's own address from its EEPROM.)
pub fn sharer_mac(j: usize) -> [u8; 6] {
    [0x02, 0x51, 0x56, 0x00, 0x00, j as u8]
}

/// Parse a sharer list `0,1,3` (sandbox numbers, at most `max`, each below `sandboxes`, no repeats).
pub fn parse_sharers(list: &str, sandboxes: u32, max: usize) -> Result<alloc::vec::Vec<u32>, alloc::string::String> {
    use alloc::format;
    let mut out = alloc::vec::Vec::new();
    for w in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let n: u32 = w.parse().map_err(|_| format!("nic={list}: {w:?} is not a sandbox number"))?;
        if n >= sandboxes {
            return Err(format!("nic={list}: sandbox {n} does not exist ({sandboxes} sandboxes)"));
        }
        if out.contains(&n) {
            return Err(format!("nic={list}: sandbox {n} listed twice"));
        }
        out.push(n);
    }
    if out.len() > max {
        return Err(format!("nic={list}: at most {max} sandboxes can share the NIC"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharer_addresses_are_distinct() {
        assert_eq!(sharer_ip(0), [10, 0, 0, 2]);
        assert_eq!(sharer_ip(3), [10, 0, 0, 5]);
        assert_ne!(sharer_mac(0), sharer_mac(1));
        assert_eq!(sharer_mac(0)[0] & 0x03, 0x02, "locally administered unicast");
    }

    #[test]
    fn sharer_lists_are_checked() {
        assert_eq!(parse_sharers("0,1", 4, 8), Ok(alloc::vec![0, 1]));
        assert_eq!(parse_sharers("", 4, 8), Ok(alloc::vec![]));
        assert!(parse_sharers("0,4", 4, 8).unwrap_err().contains("does not exist"));
        assert!(parse_sharers("1,1", 4, 8).unwrap_err().contains("twice"));
        assert!(parse_sharers("x", 4, 8).unwrap_err().contains("not a sandbox number"));
        assert!(parse_sharers("0,1,2", 4, 2).unwrap_err().contains("at most"));
    }
}
