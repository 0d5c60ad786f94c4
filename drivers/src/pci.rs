//! PCI configuration space through configuration mechanism #1 (address port 0xCF8, data port 0xCFC): a
//! brute-force scan and the bus-master switch the VT monitor turns off on devices no sandbox owns. The scan and
//! header decoding are written over [`ConfigSpace`] and host-tested on a fake configuration space.
//!
//! Written here: the crates that exist (`pci_types`, `pci-driver`) model access through an ECAM/`ConfigRegionAccess`
//! trait and an `std`-leaning driver stack respectively; port-based access plus a scan is ~100 lines.

use alloc::vec::Vec;

pub const CONFIG_ADDRESS: u16 = 0xCF8;
pub const CONFIG_DATA: u16 = 0xCFC;
/// Command register bit 2: the function may master the bus (DMA).
pub const COMMAND_BUS_MASTER: u32 = 1 << 2;

/// The mechanism-#1 address of a dword of configuration space (offset rounded down to a dword).
pub const fn config_address(bus: u8, device: u8, function: u8, offset: u8) -> u32 {
    (1 << 31) | ((bus as u32) << 16) | (((device & 0x1F) as u32) << 11) | (((function & 7) as u32) << 8) | ((offset & 0xFC) as u32)
}

/// Access to configuration space, dword-wise.
pub trait ConfigSpace {
    fn read32(&mut self, bus: u8, device: u8, function: u8, offset: u8) -> u32;
    fn write32(&mut self, bus: u8, device: u8, function: u8, offset: u8, value: u32);
}

/// The first 16 bytes of a function's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub vendor: u16,
    pub device: u16,
    pub command: u16,
    pub status: u16,
    pub revision: u8,
    pub prog_if: u8,
    pub subclass: u8,
    pub class: u8,
    /// Header layout (0 = device, 1 = PCI-PCI bridge, 2 = CardBus bridge), without the multi-function bit.
    pub header_type: u8,
    pub multi_function: bool,
}

impl Header {
    pub fn decode(d: [u32; 4]) -> Header {
        Header {
            vendor: d[0] as u16,
            device: (d[0] >> 16) as u16,
            command: d[1] as u16,
            status: (d[1] >> 16) as u16,
            revision: d[2] as u8,
            prog_if: (d[2] >> 8) as u8,
            subclass: (d[2] >> 16) as u8,
            class: (d[2] >> 24) as u8,
            header_type: ((d[3] >> 16) as u8) & 0x7F,
            multi_function: (d[3] >> 16) & 0x80 != 0,
        }
    }

    pub fn is_bridge(&self) -> bool {
        self.class == 0x06
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Function {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
    pub header: Header,
}

fn header(cs: &mut impl ConfigSpace, bus: u8, device: u8, function: u8) -> Option<Header> {
    let id = cs.read32(bus, device, function, 0);
    if id as u16 == 0xFFFF {
        return None;
    }
    let mut d = [id, 0, 0, 0];
    for (i, slot) in d.iter_mut().enumerate().skip(1) {
        *slot = cs.read32(bus, device, function, (i * 4) as u8);
    }
    Some(Header::decode(d))
}

/// Every present function on buses 0–255 (functions 1–7 only of multi-function devices).
pub fn scan(cs: &mut impl ConfigSpace) -> Vec<Function> {
    let mut found = Vec::new();
    for bus in 0..=255u8 {
        for device in 0..32u8 {
            let Some(h0) = header(cs, bus, device, 0) else { continue };
            found.push(Function { bus, device, function: 0, header: h0 });
            if h0.multi_function {
                for function in 1..8u8 {
                    if let Some(header) = header(cs, bus, device, function) {
                        found.push(Function { bus, device, function, header });
                    }
                }
            }
        }
    }
    found
}

/// Clear a function's Bus Master Enable; returns whether it was set. The status half of the dword is written as
/// zeros (its bits are write-1-to-clear).
pub fn clear_bus_master(cs: &mut impl ConfigSpace, f: &Function) -> bool {
    let command = cs.read32(f.bus, f.device, f.function, 4) & 0xFFFF;
    if command & COMMAND_BUS_MASTER == 0 {
        return false;
    }
    cs.write32(f.bus, f.device, f.function, 4, command & !COMMAND_BUS_MASTER);
    true
}

/// Turn off bus mastering on every function except bridges and `owned` (bus, device, function) — the devices
/// a sandbox is given. Returns (functions seen, bus masters cleared).
pub fn disable_bus_mastering_except(cs: &mut impl ConfigSpace, owned: &[(u8, u8, u8)]) -> (usize, usize) {
    let functions = scan(cs);
    let mut cleared = 0;
    for f in &functions {
        if f.header.is_bridge() || owned.contains(&(f.bus, f.device, f.function)) {
            continue;
        }
        if clear_bus_master(cs, f) {
            cleared += 1;
        }
    }
    (functions.len(), cleared)
}

/// Configuration space through ports 0xCF8/0xCFC.
pub struct PortConfigSpace {
    _private: (),
}

impl PortConfigSpace {
    /// # Safety
    /// The caller is the only code using ports 0xCF8–0xCFF (the SMP kernel, or the VT monitor, which never grants
    /// them to a sandbox), and runs with interrupts off or otherwise serialises address/data pairs.
    pub unsafe fn new() -> PortConfigSpace {
        PortConfigSpace { _private: () }
    }
}

impl ConfigSpace for PortConfigSpace {
    fn read32(&mut self, bus: u8, device: u8, function: u8, offset: u8) -> u32 {
        // SAFETY: we own the configuration ports (constructor contract); the address selects one dword.
        unsafe {
            questv_arch::cpu::outl(CONFIG_ADDRESS, config_address(bus, device, function, offset));
            questv_arch::cpu::inl(CONFIG_DATA)
        }
    }
    fn write32(&mut self, bus: u8, device: u8, function: u8, offset: u8, value: u32) {
        // SAFETY: as in read32; the caller chose the value for that register.
        unsafe {
            questv_arch::cpu::outl(CONFIG_ADDRESS, config_address(bus, device, function, offset));
            questv_arch::cpu::outl(CONFIG_DATA, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Dwords by (bus, device, function, offset); absent functions read all-ones.
    #[derive(Default)]
    struct Fake {
        regs: HashMap<(u8, u8, u8, u8), u32>,
        reads: HashMap<(u8, u8, u8), usize>,
        writes: Vec<((u8, u8, u8, u8), u32)>,
    }

    impl Fake {
        fn add(&mut self, bdf: (u8, u8, u8), vendor: u16, class: u8, header_type: u8, command: u16, status: u16) {
            let (b, d, f) = bdf;
            self.regs.insert((b, d, f, 0), u32::from(vendor) | (0x1234 << 16));
            self.regs.insert((b, d, f, 4), u32::from(command) | (u32::from(status) << 16));
            self.regs.insert((b, d, f, 8), u32::from(class) << 24 | 0x02);
            self.regs.insert((b, d, f, 12), u32::from(header_type) << 16);
        }
    }

    impl ConfigSpace for Fake {
        fn read32(&mut self, b: u8, d: u8, f: u8, o: u8) -> u32 {
            *self.reads.entry((b, d, f)).or_default() += 1;
            self.regs.get(&(b, d, f, o)).copied().unwrap_or(0xFFFF_FFFF)
        }
        fn write32(&mut self, b: u8, d: u8, f: u8, o: u8, v: u32) {
            self.writes.push(((b, d, f, o), v));
            self.regs.insert((b, d, f, o), v);
        }
    }

    #[test]
    fn address_encoding() {
        assert_eq!(config_address(0, 0, 0, 0), 0x8000_0000);
        assert_eq!(config_address(0, 1, 0, 4), 0x8000_0804);
        assert_eq!(config_address(0xFF, 31, 7, 0xFF), 0x80FF_FFFC);
        assert_eq!(config_address(1, 2, 3, 0x13), 0x8001_1310);
    }

    #[test]
    fn header_decoding() {
        let h = Header::decode([0x1237_8086, 0x0280_0007, 0x0601_0002, 0x0080_0000]);
        assert_eq!((h.vendor, h.device, h.command, h.status), (0x8086, 0x1237, 7, 0x0280));
        assert_eq!((h.class, h.subclass, h.prog_if, h.revision), (6, 1, 0, 2));
        assert!(h.multi_function && h.header_type == 0 && h.is_bridge());
    }

    #[test]
    fn scan_finds_functions_and_skips_absent_ones() {
        let mut cs = Fake::default();
        cs.add((0, 0, 0), 0x8086, 0x06, 0x00, 0x0006, 0); // host bridge, single function
        cs.add((0, 1, 0), 0x8086, 0x06, 0x80, 0x0007, 0); // ISA bridge, multi-function
        cs.add((0, 1, 1), 0x8086, 0x01, 0x00, 0x0005, 0); // IDE, bus master on
        cs.add((0, 1, 3), 0x8086, 0x06, 0x00, 0x0000, 0);
        cs.add((3, 4, 0), 0x10EC, 0x02, 0x00, 0x0007, 0); // NIC behind a bridge
        let found = scan(&mut cs);
        let bdfs: Vec<_> = found.iter().map(|f| (f.bus, f.device, f.function)).collect();
        assert_eq!(bdfs, vec![(0, 0, 0), (0, 1, 0), (0, 1, 1), (0, 1, 3), (3, 4, 0)]);
        // Functions 1–7 of the single-function device 0:0 were never probed.
        assert!((1..8).all(|f| !cs.reads.contains_key(&(0, 0, f))));
        // An absent device costs one read.
        assert_eq!(cs.reads.get(&(0, 2, 0)), Some(&1));
    }

    #[test]
    fn bus_master_cleared_without_touching_status_or_other_bits() {
        let mut cs = Fake::default();
        cs.add((0, 1, 0), 0x8086, 0x01, 0x00, 0x0007, 0xFFFF);
        let f = scan(&mut cs)[0];
        assert!(clear_bus_master(&mut cs, &f));
        assert_eq!(cs.writes, vec![((0, 1, 0, 4), 0x0003)]);
        assert!(!clear_bus_master(&mut cs, &f));
        assert_eq!(cs.writes.len(), 1);
    }

    #[test]
    fn everything_but_bridges_and_owned_functions_loses_bus_mastering() {
        let mut cs = Fake::default();
        cs.add((0, 0, 0), 0x8086, 0x06, 0x00, 0x0007, 0);
        cs.add((0, 1, 0), 0x8086, 0x01, 0x00, 0x0005, 0);
        cs.add((0, 2, 0), 0x8086, 0x02, 0x00, 0x0007, 0);
        cs.add((0, 3, 0), 0x8086, 0x03, 0x00, 0x0003, 0); // bus master already off
        assert_eq!(disable_bus_mastering_except(&mut cs, &[(0, 2, 0)]), (4, 1));
        assert_eq!(cs.writes, vec![((0, 1, 0, 4), 0x0001)]);
    }
}
