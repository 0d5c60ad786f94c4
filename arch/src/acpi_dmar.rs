//! DMA remapping hardware from ACPI's DMAR table (Intel VT-d specification, chapter 8): the remapping units
//! (DRHD structures) with their register pages and the devices each covers, and the reserved regions (RMRR)
//! firmware asks to keep mapped. Pure parsing of the table's bytes (the `acpi` crate finds and checksums the
//! table: `acpi_madt::dma_remapping`), so it runs on the host against captured tables.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

/// Bytes before the first remapping structure: the 36-byte SDT header, host address width, flags, 10 reserved.
pub const HEADER_LEN: usize = 48;
const DRHD: u16 = 0;
const RMRR: u16 = 1;
/// DRHD flags bit 0: the unit covers every PCI device of its segment not claimed by another unit.
const INCLUDE_PCI_ALL: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceScope {
    /// 1 PCI endpoint, 2 PCI sub-hierarchy, 3 I/O APIC, 4 HPET, 5 ACPI namespace device.
    pub kind: u8,
    pub enumeration_id: u8,
    pub start_bus: u8,
    /// (device, function) hops from `start_bus`.
    pub path: Vec<(u8, u8)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemappingUnit {
    pub segment: u16,
    /// Physical address of its 4 KiB register page.
    pub register_base: u64,
    pub include_pci_all: bool,
    pub scopes: Vec<DeviceScope>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservedRegion {
    pub segment: u16,
    pub base: u64,
    /// Inclusive.
    pub limit: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dmar {
    /// DMA addresses are this many bits wide.
    pub host_address_width: u8,
    pub flags: u8,
    pub units: Vec<RemappingUnit>,
    pub reserved: Vec<ReservedRegion>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarError {
    /// Shorter than its header, or than its own length field says.
    Truncated,
    /// A remapping structure whose length is too small or runs past the table (at this offset).
    BadStructure(usize),
}

impl core::fmt::Display for DmarError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DmarError::Truncated => write!(f, "DMAR table truncated"),
            DmarError::BadStructure(at) => write!(f, "DMAR remapping structure at offset {at} is malformed"),
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Parse a whole DMAR table (header included). Unknown structure types are skipped; a malformed one is an
/// error, never a read past the end.
pub fn parse(table: &[u8]) -> Result<Dmar, DmarError> {
    if table.len() < HEADER_LEN {
        return Err(DmarError::Truncated);
    }
    let len = u32::from_le_bytes([table[4], table[5], table[6], table[7]]) as usize;
    if len < HEADER_LEN || len > table.len() {
        return Err(DmarError::Truncated);
    }
    let t = &table[..len];
    let mut dmar = Dmar { host_address_width: t[36].saturating_add(1), flags: t[37], units: Vec::new(), reserved: Vec::new() };
    let mut at = HEADER_LEN;
    while at < len {
        if at + 4 > len {
            return Err(DmarError::BadStructure(at));
        }
        let (kind, slen) = (u16_at(t, at), u16_at(t, at + 2) as usize);
        if slen < 4 || at + slen > len {
            return Err(DmarError::BadStructure(at));
        }
        let s = &t[at..at + slen];
        match kind {
            DRHD => {
                if slen < 16 {
                    return Err(DmarError::BadStructure(at));
                }
                let scopes = scopes(&s[16..]).ok_or(DmarError::BadStructure(at))?;
                dmar.units.push(RemappingUnit { segment: u16_at(s, 6), register_base: u64_at(s, 8), include_pci_all: s[4] & INCLUDE_PCI_ALL != 0, scopes });
            }
            RMRR => {
                if slen < 24 {
                    return Err(DmarError::BadStructure(at));
                }
                dmar.reserved.push(ReservedRegion { segment: u16_at(s, 6), base: u64_at(s, 8), limit: u64_at(s, 16) });
            }
            _ => {}
        }
        at += slen;
    }
    Ok(dmar)
}

/// Device scope entries: type, length, 2 reserved, enumeration id, start bus, then (device, function) pairs.
fn scopes(mut b: &[u8]) -> Option<Vec<DeviceScope>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let len = usize::from(*b.get(1)?);
        if len < 6 || len > b.len() || (len - 6) % 2 != 0 {
            return None;
        }
        let path = b[6..len].chunks_exact(2).map(|p| (p[0], p[1])).collect();
        out.push(DeviceScope { kind: b[0], enumeration_id: b[4], start_bus: b[5], path });
        b = &b[len..];
    }
    Some(out)
}

impl Dmar {
    /// The unit that translates PCI device `bdf` of segment 0: one naming it (as an endpoint directly on its
    /// start bus) first, else the segment's catch-all unit.
    pub fn unit_for(&self, bdf: (u8, u8, u8)) -> Option<&RemappingUnit> {
        let (bus, dev, func) = bdf;
        let names = |u: &&RemappingUnit| u.segment == 0 && u.scopes.iter().any(|s| s.kind == 1 && s.start_bus == bus && s.path == [(dev, func)]);
        self.units.iter().find(names).or_else(|| self.units.iter().find(|u| u.segment == 0 && u.include_pci_all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DMAR table: header (HAW 38 → 39 bits), then `structures`.
    fn table(structures: &[Vec<u8>]) -> Vec<u8> {
        let mut t = vec![0u8; HEADER_LEN];
        t[..4].copy_from_slice(b"DMAR");
        t[36] = 38;
        t[37] = 1;
        for s in structures {
            t.extend_from_slice(s);
        }
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        t
    }

    fn drhd(flags: u8, base: u64, scopes: &[u8]) -> Vec<u8> {
        let mut s = vec![0u8; 16];
        s[2..4].copy_from_slice(&((16 + scopes.len()) as u16).to_le_bytes());
        s[4] = flags;
        s[8..16].copy_from_slice(&base.to_le_bytes());
        s.extend_from_slice(scopes);
        s
    }

    #[test]
    fn qemu_style_catch_all_unit() {
        // QEMU's q35 with intel-iommu: one unit at 0xfed90000 covering every PCI device (INCLUDE_PCI_ALL).
        let d = parse(&table(&[drhd(1, 0xfed9_0000, &[])])).unwrap();
        assert_eq!((d.host_address_width, d.units.len()), (39, 1));
        assert_eq!(d.unit_for((0, 2, 0)).map(|u| u.register_base), Some(0xfed9_0000));
    }

    #[test]
    fn a_unit_naming_the_device_comes_before_the_catch_all() {
        // Unit A names endpoint 00:02.0; unit B catches everything else.
        let scope = [1u8, 8, 0, 0, 0, 0, 2, 0];
        let d = parse(&table(&[drhd(1, 0xB000, &[]), drhd(0, 0xA000, &scope)])).unwrap();
        assert_eq!(d.units[1].scopes, [DeviceScope { kind: 1, enumeration_id: 0, start_bus: 0, path: vec![(2, 0)] }]);
        assert_eq!(d.unit_for((0, 2, 0)).unwrap().register_base, 0xA000);
        assert_eq!(d.unit_for((0, 3, 0)).unwrap().register_base, 0xB000);
        let no_catch_all = parse(&table(&[drhd(0, 0xA000, &scope)])).unwrap();
        assert_eq!(no_catch_all.unit_for((0, 3, 0)), None, "a device no unit covers is not translated");
    }

    #[test]
    fn reserved_regions_and_unknown_structures() {
        let mut rmrr = vec![0u8; 24];
        rmrr[0] = 1;
        rmrr[2] = 24;
        rmrr[8..16].copy_from_slice(&0xE0000u64.to_le_bytes());
        rmrr[16..24].copy_from_slice(&0xEFFFFu64.to_le_bytes());
        let atsr = vec![2u8, 0, 8, 0, 0, 0, 0, 0];
        let d = parse(&table(&[drhd(1, 0xfed9_0000, &[]), rmrr, atsr])).unwrap();
        assert_eq!(d.reserved, [ReservedRegion { segment: 0, base: 0xE0000, limit: 0xEFFFF }]);
        assert_eq!(d.units.len(), 1);
    }

    #[test]
    fn malformed_tables_are_errors() {
        assert_eq!(parse(&[0u8; 20]), Err(DmarError::Truncated));
        let mut t = table(&[drhd(1, 0xfed9_0000, &[])]);
        t[4] = 200; // length beyond the bytes
        assert_eq!(parse(&t), Err(DmarError::Truncated));
        let mut bad = drhd(1, 0xfed9_0000, &[]);
        bad[2] = 2; // structure length below its own header
        assert_eq!(parse(&table(&[bad])), Err(DmarError::BadStructure(HEADER_LEN)));
        let bad_scope = drhd(0, 0xA000, &[1, 7, 0, 0, 0, 0, 2]); // odd path length
        assert_eq!(parse(&table(&[bad_scope])), Err(DmarError::BadStructure(HEADER_LEN)));
        let zero_scope = drhd(0, 0xA000, &[1, 0, 0, 0, 0, 0]); // length 0 would loop forever
        assert_eq!(parse(&table(&[zero_scope])), Err(DmarError::BadStructure(HEADER_LEN)));
    }
}
