//! PCI configuration space through configuration mechanism #1 (address port 0xCF8, data port 0xCFC): address
//! encoding, decoding of the common header, a brute-force bus scan and bus-master control. The scan and the
//! register logic are written over the [`ConfigSpace`] trait and host-tested on a fake configuration space;
//! [`PortConfigSpace`] is the only part that touches ports. Written here rather than taken from a crate: the
//! maintained no_std one, `pci_types`, decodes headers over its own `&self` access trait but has neither a
//! port-I/O backend nor a scan, which is most of this file; the rest is a few shifts.

use alloc::vec::Vec;
use questv_arch::cpu::{inl, outl};

/// Configuration mechanism #1: the dword written here selects bus/device/function/register.
pub const CONFIG_ADDRESS: u16 = 0xCF8;
/// Configuration mechanism #1: the selected configuration dword is read and written here.
pub const CONFIG_DATA: u16 = 0xCFC;

/// Vendor id read back for a function that does not exist (the bus returns all ones).
pub const VENDOR_NONE: u16 = 0xFFFF;
/// Offset of the command (low 16 bits) / status (high 16 bits) dword.
pub const COMMAND_OFFSET: u8 = 0x04;
/// Command register: Bus Master Enable (the function may initiate DMA).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Class code of bridges (host, ISA, PCI-to-PCI, ...).
pub const CLASS_BRIDGE: u8 = 0x06;
/// Header-type byte: bit 7 says the device implements functions 1–7.
pub const HEADER_MULTI_FUNCTION: u8 = 0x80;

pub const MAX_DEVICE: u8 = 32;
pub const MAX_FUNCTION: u8 = 8;

/// The CONFIG_ADDRESS dword for a register: enable bit 31, bus in 23:16, device in 15:11, function in 10:8,
/// dword-aligned offset in 7:2. Out-of-range device/function numbers are masked to their fields (5 and 3 bits)
/// so they can never spill into a neighbouring field; the low two offset bits are cleared.
pub const fn config_address(bus: u8, device: u8, function: u8, offset: u8) -> u32 {
    0x8000_0000
        | (bus as u32) << 16
        | ((device & 0x1F) as u32) << 11
        | ((function & 0x07) as u32) << 8
        | (offset & 0xFC) as u32
}

/// The first 16 bytes of a function's configuration space (common to all header types), decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub vendor_id: u16,
    pub device_id: u16,
    pub command: u16,
    pub status: u16,
    pub revision: u8,
    pub prog_if: u8,
    pub subclass: u8,
    pub class: u8,
    pub cache_line_size: u8,
    pub latency_timer: u8,
    /// Header layout (0: endpoint, 1: PCI-to-PCI bridge, 2: CardBus bridge), multi-function bit removed.
    pub header_type: u8,
    /// Bit 7 of the header-type byte: functions 1–7 may exist (meaningful on function 0).
    pub multi_function: bool,
    pub bist: u8,
}

impl Header {
    /// Decode configuration dwords 0x00, 0x04, 0x08 and 0x0C (as read, little-endian fields).
    pub const fn decode(dwords: [u32; 4]) -> Header {
        let [d0, d1, d2, d3] = dwords;
        Header {
            vendor_id: d0 as u16,
            device_id: (d0 >> 16) as u16,
            command: d1 as u16,
            status: (d1 >> 16) as u16,
            revision: d2 as u8,
            prog_if: (d2 >> 8) as u8,
            subclass: (d2 >> 16) as u8,
            class: (d2 >> 24) as u8,
            cache_line_size: d3 as u8,
            latency_timer: (d3 >> 8) as u8,
            header_type: (d3 >> 16) as u8 & !HEADER_MULTI_FUNCTION,
            multi_function: (d3 >> 16) as u8 & HEADER_MULTI_FUNCTION != 0,
            bist: (d3 >> 24) as u8,
        }
    }

    /// Class 0x06: host, ISA, PCI-to-PCI and other bridges.
    pub const fn is_bridge(&self) -> bool {
        self.class == CLASS_BRIDGE
    }

    /// Bus Master Enable as it was when the header was read.
    pub const fn bus_master(&self) -> bool {
        self.command & COMMAND_BUS_MASTER != 0
    }
}

/// One present function found by [`scan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
    pub header: Header,
}

impl Function {
    /// (bus, device, function), the form [`disable_bus_mastering_except`] takes.
    pub const fn bdf(&self) -> (u8, u8, u8) {
        (self.bus, self.device, self.function)
    }
}

impl core::fmt::Display for Function {
    /// `bb:dd.f vvvv:dddd class cc.ss.pp`, the usual lspci-like form.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let h = &self.header;
        write!(
            f,
            "{:02x}:{:02x}.{} {:04x}:{:04x} class {:02x}.{:02x}.{:02x}",
            self.bus, self.device, self.function, h.vendor_id, h.device_id, h.class, h.subclass, h.prog_if
        )
    }
}

/// Dword access to configuration space. `offset` is a byte offset; implementations use it dword-aligned.
pub trait ConfigSpace {
    fn read32(&mut self, bus: u8, dev: u8, func: u8, offset: u8) -> u32;
    fn write32(&mut self, bus: u8, dev: u8, func: u8, offset: u8, value: u32);
}

/// The decoded header of one function, or `None` if it is absent (vendor id 0xFFFF). Reads dword 0 only for
/// an absent function, four dwords otherwise.
pub fn read_header(cs: &mut impl ConfigSpace, bus: u8, dev: u8, func: u8) -> Option<Header> {
    let d0 = cs.read32(bus, dev, func, 0x00);
    if d0 as u16 == VENDOR_NONE {
        return None;
    }
    let d1 = cs.read32(bus, dev, func, 0x04);
    let d2 = cs.read32(bus, dev, func, 0x08);
    let d3 = cs.read32(bus, dev, func, 0x0C);
    Some(Header::decode([d0, d1, d2, d3]))
}

/// Every present function, by brute force over buses 0–255 and devices 0–31, in bus/device/function order.
/// Function 0 is probed first; functions 1–7 only when function 0 is present and has the multi-function bit
/// (single-function devices may decode every function number as function 0, so probing them would list
/// phantom copies).
pub fn scan(cs: &mut impl ConfigSpace) -> Vec<Function> {
    let mut found = Vec::new();
    for bus in 0..=u8::MAX {
        for device in 0..MAX_DEVICE {
            let Some(header) = read_header(cs, bus, device, 0) else { continue };
            found.push(Function { bus, device, function: 0, header });
            if !header.multi_function {
                continue;
            }
            for function in 1..MAX_FUNCTION {
                if let Some(header) = read_header(cs, bus, device, function) {
                    found.push(Function { bus, device, function, header });
                }
            }
        }
    }
    found
}

/// Clear Bus Master Enable in `f`'s command register; returns whether it had been set (nothing is written if
/// not). The register is re-read rather than taken from `f.header`. The status register shares the dword and
/// its error bits are write-1-to-clear, so the write carries zeros in the upper half: status is left as is.
pub fn clear_bus_master(cs: &mut impl ConfigSpace, f: &Function) -> bool {
    let command = cs.read32(f.bus, f.device, f.function, COMMAND_OFFSET) as u16;
    if command & COMMAND_BUS_MASTER == 0 {
        return false;
    }
    cs.write32(f.bus, f.device, f.function, COMMAND_OFFSET, u32::from(command & !COMMAND_BUS_MASTER));
    true
}

/// Scan, then clear Bus Master Enable on every function except bridges (class 0x06: they forward their
/// secondary side's DMA, and host bridges may misbehave) and the `owned` (bus, device, function) triples.
/// Returns (functions found by the scan, functions whose bus mastering was switched off).
pub fn disable_bus_mastering_except(cs: &mut impl ConfigSpace, owned: &[(u8, u8, u8)]) -> (usize, usize) {
    let functions = scan(cs);
    let mut cleared = 0;
    for f in &functions {
        if f.header.is_bridge() || owned.contains(&f.bdf()) {
            continue;
        }
        if clear_bus_master(cs, f) {
            cleared += 1;
        }
    }
    (functions.len(), cleared)
}

/// Command register: the function answers memory-space accesses (its MMIO BARs).
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Offset of BAR 0 in a type-0 header.
pub const BAR0_OFFSET: u8 = 0x10;
/// Offset of the interrupt line (byte 0) / pin (byte 1) dword.
pub const INTERRUPT_OFFSET: u8 = 0x3C;

/// A decoded base address register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bar {
    /// Memory space at this (bus) address; `wide`: a 64-bit BAR that also used the next register.
    Memory { address: u64, prefetchable: bool, wide: bool },
    Io { port: u16 },
    /// Not implemented or not assigned (reads as zero).
    None,
}

/// Decode BAR `index` (0–5) of a type-0 function without sizing it (no writes: sizing would briefly move a
/// live device's window).
pub fn read_bar(cs: &mut impl ConfigSpace, f: &Function, index: u8) -> Bar {
    if index > 5 {
        return Bar::None;
    }
    let off = BAR0_OFFSET + 4 * index;
    let low = cs.read32(f.bus, f.device, f.function, off);
    if low & 1 == 1 {
        let port = (low & 0xFFFC) as u16;
        return if port == 0 { Bar::None } else { Bar::Io { port } };
    }
    let wide = (low >> 1) & 3 == 2;
    let high = if wide && index < 5 { cs.read32(f.bus, f.device, f.function, off + 4) } else { 0 };
    let address = u64::from(high) << 32 | u64::from(low & !0xF);
    if address == 0 {
        return Bar::None;
    }
    Bar::Memory { address, prefetchable: low & 8 != 0, wide }
}

/// The interrupt line the firmware assigned (0xFF: none) and the pin (0: none, 1–4: INTA–INTD).
pub fn interrupt_line(cs: &mut impl ConfigSpace, f: &Function) -> (u8, u8) {
    let v = cs.read32(f.bus, f.device, f.function, INTERRUPT_OFFSET);
    (v as u8, (v >> 8) as u8)
}

/// Turn on memory decoding and bus mastering (the device may now DMA); status bits are left alone.
pub fn enable_memory_and_bus_master(cs: &mut impl ConfigSpace, f: &Function) {
    let command = cs.read32(f.bus, f.device, f.function, COMMAND_OFFSET) as u16;
    cs.write32(f.bus, f.device, f.function, COMMAND_OFFSET, u32::from(command | COMMAND_MEMORY | COMMAND_BUS_MASTER));
}

/// The first function with one of these (vendor, device) ids.
pub fn find(cs: &mut impl ConfigSpace, ids: &[(u16, u16)]) -> Option<Function> {
    scan(cs).into_iter().find(|f| ids.contains(&(f.header.vendor_id, f.header.device_id)))
}

/// Configuration space through ports 0xCF8/0xCFC. Each access is an address write followed by a data access;
/// `&mut self` keeps one instance's pairs from interleaving.
pub struct PortConfigSpace {
    _private: (),
}

impl PortConfigSpace {
    /// # Safety
    /// The caller must be the only code using ports 0xCF8–0xCFF while this value is used (in questv: the
    /// kernel on bare metal, or the VMX monitor, which never grants them to a sandbox), and no other
    /// `PortConfigSpace` may be used concurrently: the address/data pair is not atomic.
    pub const unsafe fn new() -> Self {
        PortConfigSpace { _private: () }
    }
}

impl ConfigSpace for PortConfigSpace {
    fn read32(&mut self, bus: u8, dev: u8, func: u8, offset: u8) -> u32 {
        // SAFETY: the constructor's contract gives us exclusive use of the configuration ports; selecting a
        // register and reading it has no side effect on the function beyond the read itself.
        unsafe {
            outl(CONFIG_ADDRESS, config_address(bus, dev, func, offset));
            inl(CONFIG_DATA)
        }
    }

    fn write32(&mut self, bus: u8, dev: u8, func: u8, offset: u8, value: u32) {
        // SAFETY: exclusive use of the configuration ports (constructor's contract); what the value does to the
        // function is the caller's choice, as for any configuration write.
        unsafe {
            outl(CONFIG_ADDRESS, config_address(bus, dev, func, offset));
            outl(CONFIG_DATA, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    type Bdf = (u8, u8, u8);

    /// Configuration space of a few functions (256 bytes each); absent functions read all ones. Counts reads
    /// per function and logs writes. The status half of dword 0x04 is write-1-to-clear, as on hardware.
    #[derive(Default)]
    struct FakeConfigSpace {
        functions: HashMap<Bdf, [u32; 64]>,
        reads: HashMap<Bdf, usize>,
        writes: Vec<(Bdf, u8, u32)>,
    }

    impl FakeConfigSpace {
        #[allow(clippy::too_many_arguments)]
        fn add(&mut self, bdf: Bdf, vendor: u16, device: u16, command: u16, status: u16, class: [u8; 4], header_type: u8) {
            let [class, subclass, prog_if, revision] = class;
            let mut regs = [0u32; 64];
            regs[0] = u32::from(device) << 16 | u32::from(vendor);
            regs[1] = u32::from(status) << 16 | u32::from(command);
            regs[2] = u32::from_le_bytes([revision, prog_if, subclass, class]);
            regs[3] = u32::from(header_type) << 16;
            self.functions.insert(bdf, regs);
        }

        fn dword(&self, bdf: Bdf, offset: u8) -> u32 {
            self.functions[&bdf][usize::from(offset / 4)]
        }

        fn reads_of(&self, bdf: Bdf) -> usize {
            self.reads.get(&bdf).copied().unwrap_or(0)
        }

        /// QEMU's i440FX machine with an e1000, plus a PCI-to-PCI bridge and a device behind it on bus 1.
        /// Bus masters (command bit 2): the host bridge, the IDE controller, the e1000 and the bus-1 device.
        fn qemu_like() -> FakeConfigSpace {
            let mut cs = FakeConfigSpace::default();
            cs.add((0, 0, 0), 0x8086, 0x1237, 0x0107, 0x0000, [0x06, 0x00, 0x00, 0x02], 0x00); // host bridge
            cs.add((0, 1, 0), 0x8086, 0x7000, 0x0103, 0x0200, [0x06, 0x01, 0x00, 0x00], 0x80); // PIIX3 ISA, multi-fn
            cs.add((0, 1, 1), 0x8086, 0x7010, 0x0107, 0x0280, [0x01, 0x01, 0x80, 0x00], 0x00); // IDE
            cs.add((0, 1, 3), 0x8086, 0x7113, 0x0103, 0x0280, [0x06, 0x80, 0x00, 0x03], 0x00); // ACPI (other bridge)
            cs.add((0, 2, 0), 0x1234, 0x1111, 0x0103, 0x0000, [0x03, 0x00, 0x00, 0x02], 0x00); // VGA
            cs.add((0, 3, 0), 0x8086, 0x100E, 0x0107, 0x0000, [0x02, 0x00, 0x00, 0x03], 0x00); // e1000
            cs.add((0, 4, 0), 0x1B36, 0x0001, 0x0107, 0x0010, [0x06, 0x04, 0x00, 0x00], 0x01); // PCI-PCI bridge
            cs.add((1, 0, 0), 0x8086, 0x10D3, 0x0106, 0x0010, [0x02, 0x00, 0x00, 0x00], 0x00); // e1000e behind it
            cs
        }
    }

    impl ConfigSpace for FakeConfigSpace {
        fn read32(&mut self, bus: u8, dev: u8, func: u8, offset: u8) -> u32 {
            assert!(dev < 32 && func < 8 && offset.is_multiple_of(4), "bad access {bus}:{dev}.{func}+{offset:#x}");
            *self.reads.entry((bus, dev, func)).or_default() += 1;
            match self.functions.get(&(bus, dev, func)) {
                Some(regs) => regs[usize::from(offset / 4)],
                None => u32::MAX,
            }
        }

        fn write32(&mut self, bus: u8, dev: u8, func: u8, offset: u8, value: u32) {
            assert!(dev < 32 && func < 8 && offset.is_multiple_of(4), "bad access {bus}:{dev}.{func}+{offset:#x}");
            self.writes.push(((bus, dev, func), offset, value));
            let Some(regs) = self.functions.get_mut(&(bus, dev, func)) else { return };
            let reg = &mut regs[usize::from(offset / 4)];
            if offset == COMMAND_OFFSET {
                let status = ((*reg >> 16) as u16) & !((value >> 16) as u16); // write 1 to clear
                *reg = u32::from(status) << 16 | (value & 0xFFFF);
            } else {
                *reg = value;
            }
        }
    }

    #[test]
    fn bars_and_interrupt_line_are_decoded() {
        let mut cs = FakeConfigSpace::default();
        cs.add((0, 3, 0), 0x8086, 0x100E, 0x0003, 0, [0x02, 0x00, 0x00, 0x03], 0);
        {
            let regs = cs.functions.get_mut(&(0, 3, 0)).unwrap();
            regs[4] = 0xFEBC_0000; // BAR0: 32-bit memory
            regs[5] = 0x0000_C001; // BAR1: I/O at 0xC000
            regs[6] = 0xE000_000C; // BAR2: 64-bit prefetchable, high dword in BAR3
            regs[7] = 0x0000_0001;
            regs[15] = 0x0000_010B; // line 11, pin INTA
        }
        let f = scan(&mut cs)[0];
        assert_eq!(read_bar(&mut cs, &f, 0), Bar::Memory { address: 0xFEBC_0000, prefetchable: false, wide: false });
        assert_eq!(read_bar(&mut cs, &f, 1), Bar::Io { port: 0xC000 });
        assert_eq!(read_bar(&mut cs, &f, 2), Bar::Memory { address: 0x1_E000_0000, prefetchable: true, wide: true });
        assert_eq!(read_bar(&mut cs, &f, 4), Bar::None);
        assert_eq!(read_bar(&mut cs, &f, 9), Bar::None);
        assert_eq!(interrupt_line(&mut cs, &f), (11, 1));
        assert_eq!(find(&mut cs, &[(0x8086, 0x100E)]).map(|f| f.bdf()), Some((0, 3, 0)));
        assert_eq!(find(&mut cs, &[(0x8086, 0x10D3)]), None);
        enable_memory_and_bus_master(&mut cs, &f);
        assert_eq!(cs.dword((0, 3, 0), COMMAND_OFFSET) & 0x7, 0x7);
    }

    #[test]
    fn config_address_encoding() {
        assert_eq!(config_address(0, 0, 0, 0), 0x8000_0000);
        assert_eq!(config_address(0, 1, 0, 0x04), 0x8000_0804); // what ktest's pci attack writes by hand
        assert_eq!(config_address(1, 2, 3, 0x10), 0x8000_0000 | 1 << 16 | 2 << 11 | 3 << 8 | 0x10);
        assert_eq!(config_address(255, 31, 7, 0xFC), 0x80FF_FFFC);
        // Offsets are dword-aligned.
        assert_eq!(config_address(0, 0, 0, 0x13), 0x8000_0010);
        assert_eq!(config_address(0, 0, 0, 0xFF), 0x8000_00FC);
        // Out-of-range device/function stay inside their fields.
        assert_eq!(config_address(0, 32, 8, 0), 0x8000_0000);
        assert_eq!(config_address(0, 0xFF, 0xFF, 0) & 0xFFFF_0000, 0x8000_0000);
        const _: () = assert!(config_address(0, 3, 0, 0) == 0x8000_1800);
    }

    #[test]
    fn header_decoding() {
        // QEMU's e1000: 8086:100e, command 0x0107, status 0x0000, class 02.00.00, revision 3, header type 0.
        let h = Header::decode([0x100E_8086, 0x0000_0107, 0x0200_0003, 0x0000_0010]);
        assert_eq!(h.vendor_id, 0x8086);
        assert_eq!(h.device_id, 0x100E);
        assert_eq!(h.command, 0x0107);
        assert_eq!(h.status, 0x0000);
        assert_eq!((h.class, h.subclass, h.prog_if, h.revision), (0x02, 0x00, 0x00, 0x03));
        assert_eq!(h.cache_line_size, 0x10);
        assert_eq!((h.header_type, h.multi_function), (0, false));
        assert!(h.bus_master());
        assert!(!h.is_bridge());

        // PIIX3 ISA bridge: multi-function bit separated from the layout; BIST and latency decoded.
        let h = Header::decode([0x7000_8086, 0x0200_0003, 0x0601_0000, 0x7780_4000]);
        assert_eq!((h.class, h.subclass), (0x06, 0x01));
        assert_eq!(h.status, 0x0200);
        assert_eq!((h.header_type, h.multi_function), (0, true));
        assert_eq!((h.latency_timer, h.bist), (0x40, 0x77));
        assert!(h.is_bridge());
        assert!(!h.bus_master());

        // Multi-function PCI-to-PCI bridge: header type byte 0x81.
        let h = Header::decode([0x0001_1B36, 0, 0x0604_0000, 0x0081_0000]);
        assert_eq!((h.header_type, h.multi_function), (1, true));
        assert!(h.is_bridge());
    }

    #[test]
    fn scan_finds_multifunction_device_and_skips_absent() {
        let mut cs = FakeConfigSpace::qemu_like();
        let found = scan(&mut cs);
        let bdfs: Vec<Bdf> = found.iter().map(Function::bdf).collect();
        assert_eq!(bdfs, [(0, 0, 0), (0, 1, 0), (0, 1, 1), (0, 1, 3), (0, 2, 0), (0, 3, 0), (0, 4, 0), (1, 0, 0)]);
        assert_eq!(found[2].header.device_id, 0x7010);
        assert_eq!(found[7].header.device_id, 0x10D3);
        assert_eq!(found[6].header.header_type, 1);
        // Every function of the multi-function device was probed, the absent ones (2, 4–7) once each.
        for func in [2, 4, 5, 6, 7] {
            assert_eq!(cs.reads_of((0, 1, func)), 1, "function {func}");
        }
        // Absent devices: one read of function 0, none of the others.
        assert_eq!(cs.reads_of((0, 5, 0)), 1);
        assert_eq!(cs.reads_of((255, 31, 0)), 1);
        assert_eq!(cs.reads_of((0, 5, 1)), 0);
        // Present functions: the 16-byte header, nothing more; scanning writes nothing.
        assert_eq!(cs.reads_of((0, 3, 0)), 4);
        assert!(cs.writes.is_empty());
        // Total: one read per (bus, device) slot, one per probed function 1–7 of the multi-function device,
        // three more per present function.
        assert_eq!(cs.reads.values().sum::<usize>(), 256 * 32 + 7 + 3 * 8);
        assert_eq!(found[5].to_string(), "00:03.0 8086:100e class 02.00.00");
    }

    #[test]
    fn scan_does_not_probe_functions_of_single_function_device() {
        let mut cs = FakeConfigSpace::default();
        cs.add((0, 3, 0), 0x8086, 0x100E, 0x0107, 0, [0x02, 0x00, 0x00, 0x03], 0x00);
        // A device that ignores the function number answers on 1–7 as well: those must not be listed.
        for func in 1..8 {
            cs.add((0, 3, func), 0x8086, 0x100E, 0x0107, 0, [0x02, 0x00, 0x00, 0x03], 0x00);
        }
        let found = scan(&mut cs);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].bdf(), (0, 3, 0));
        assert_eq!(cs.reads_of((0, 3, 0)), 4);
        for func in 1..8 {
            assert_eq!(cs.reads_of((0, 3, func)), 0, "function {func} probed");
        }
        assert_eq!(cs.reads.values().sum::<usize>(), 256 * 32 + 3);
    }

    #[test]
    fn empty_bus_scans_to_nothing() {
        let mut cs = FakeConfigSpace::default();
        assert!(scan(&mut cs).is_empty());
        assert_eq!(disable_bus_mastering_except(&mut cs, &[]), (0, 0));
        assert!(cs.writes.is_empty());
    }

    #[test]
    fn clear_bus_master_keeps_other_command_bits_and_writes_zero_status() {
        let mut cs = FakeConfigSpace::default();
        // Command: I/O, memory, bus master, SERR#, INTx disable. Status: every W1C error bit set plus
        // capabilities list (read-only), i.e. ones that a naive read-modify-write would clear.
        cs.add((0, 3, 0), 0x8086, 0x100E, 0x0507, 0xF910, [0x02, 0x00, 0x00, 0x03], 0x00);
        let f = scan(&mut cs)[0];
        assert!(clear_bus_master(&mut cs, &f));
        assert_eq!(cs.writes, [((0, 3, 0), COMMAND_OFFSET, 0x0000_0503)]);
        assert_eq!(cs.dword((0, 3, 0), COMMAND_OFFSET), 0xF910_0503); // status untouched

        // Already clear: reported as such, nothing written. `f.header` is stale; the register is re-read.
        assert!(!clear_bus_master(&mut cs, &f));
        assert_eq!(cs.writes.len(), 1);
    }

    #[test]
    fn disable_bus_mastering_except_skips_bridges_and_owned() {
        let mut cs = FakeConfigSpace::qemu_like();
        let owned = [(0, 3, 0)]; // the e1000 belongs to a sandbox
        assert_eq!(disable_bus_mastering_except(&mut cs, &owned), (8, 2));
        let written: Vec<Bdf> = cs.writes.iter().map(|w| w.0).collect();
        assert_eq!(written, [(0, 1, 1), (1, 0, 0)]);
        assert!(cs.writes.iter().all(|w| w.1 == COMMAND_OFFSET && w.2 >> 16 == 0));
        assert_eq!(cs.dword((0, 1, 1), COMMAND_OFFSET), 0x0280_0103);
        assert_eq!(cs.dword((1, 0, 0), COMMAND_OFFSET), 0x0010_0102);
        // Bridges and the owned function keep bus mastering.
        for bdf in [(0, 0, 0), (0, 4, 0), (0, 3, 0)] {
            assert_eq!(cs.dword(bdf, COMMAND_OFFSET) as u16 & COMMAND_BUS_MASTER, COMMAND_BUS_MASTER, "{bdf:?}");
        }
        // A second pass finds nothing left to clear.
        cs.writes.clear();
        assert_eq!(disable_bus_mastering_except(&mut cs, &owned), (8, 0));
        assert!(cs.writes.is_empty());
    }
}
