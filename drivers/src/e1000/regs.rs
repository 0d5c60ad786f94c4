//! The 8254x register window: offsets and bits, the MAC address registers and EEPROM, and [`Regs`], the only
//! code that reads or writes them.

pub const VENDOR_INTEL: u16 = 0x8086;
pub const DEVICE_82540EM: u16 = 0x100E;
/// Other 8254x parts this driver's register subset fits (82545EM copper/fiber, 82543GC, 82541PI).
pub const DEVICES: [u16; 5] = [0x100E, 0x100F, 0x1011, 0x1004, 0x107C];

/// Register offsets in BAR 0 (the 82540EM's 128 KiB memory window).
pub mod reg {
    pub const CTRL: u32 = 0x0000;
    /// EEPROM read: START bit 0, DONE bit 4, word address bits 8–15, data bits 16–31 (82540EM).
    pub const EERD: u32 = 0x0014;
    pub const STATUS: u32 = 0x0008;
    /// EEPROM bit-bang interface (clock, chip select, data in/out).
    pub const EECD: u32 = 0x0010;
    pub const CTRL_EXT: u32 = 0x0018;
    /// PHY access (MDI control).
    pub const MDIC: u32 = 0x0020;
    pub const ICR: u32 = 0x00C0;
    /// Interrupt cause set: raises the causes written (an interrupt if unmasked).
    pub const ICS: u32 = 0x00C8;
    pub const ITR: u32 = 0x00C4;
    pub const IMS: u32 = 0x00D0;
    pub const IMC: u32 = 0x00D8;
    pub const RCTL: u32 = 0x0100;
    pub const TCTL: u32 = 0x0400;
    pub const TIPG: u32 = 0x0410;
    pub const RDBAL: u32 = 0x2800;
    pub const RDBAH: u32 = 0x2804;
    pub const RDLEN: u32 = 0x2808;
    pub const RDH: u32 = 0x2810;
    pub const RDT: u32 = 0x2818;
    pub const RDTR: u32 = 0x2820;
    pub const RXDCTL: u32 = 0x2828;
    pub const RADV: u32 = 0x282C;
    pub const RSRPD: u32 = 0x2C00;
    pub const TDBAL: u32 = 0x3800;
    pub const TDBAH: u32 = 0x3804;
    pub const TDLEN: u32 = 0x3808;
    pub const TDH: u32 = 0x3810;
    pub const TDT: u32 = 0x3818;
    pub const TIDV: u32 = 0x3820;
    pub const TXDCTL: u32 = 0x3828;
    pub const TADV: u32 = 0x382C;
    pub const TSPMT: u32 = 0x3830;
    pub const MTA: u32 = 0x5200;
    pub const RAL0: u32 = 0x5400;
    pub const RAH0: u32 = 0x5404;
    /// Size of the register window the driver may touch (BAR 0 of the 82540EM).
    pub const WINDOW: u64 = 128 << 10;
}

/// The pages of the register window a sharer writes directly, the fast path: the receive tail's (RDT) and the
/// transmit tail's (TDT). Every other page holds device-wide registers (reset and link control, EEPROM and PHY
/// access, interrupt cause set and masks, receive and transmit control, the address filters), which only the
/// monitor programs: sharers see them read-only. The two pages also hold their ring's base, length and head,
/// which 4 KiB pages cannot separate from the tails: the monitor audits those ([`RING_CONFIG`]) and guards the
/// pages once one was rewritten (docs/vt.md, "NIC sharers").
pub const SHARER_WRITABLE_PAGES: [u32; 2] = [0x2000, 0x3000];

/// Whether a sharer may write the register at `offset` in the window directly.
pub fn sharer_may_write(offset: u32) -> bool {
    SHARER_WRITABLE_PAGES.contains(&(offset & !0xFFF))
}

/// The register at `offset`, for reports (a name from the 8254x manual, or the page it lies in).
pub fn register_name(offset: u32) -> &'static str {
    match offset & !3 {
        reg::CTRL => "CTRL",
        reg::STATUS => "STATUS",
        reg::EECD => "EECD",
        reg::EERD => "EERD",
        reg::CTRL_EXT => "CTRL_EXT",
        reg::MDIC => "MDIC",
        reg::ICR => "ICR",
        reg::ITR => "ITR",
        reg::ICS => "ICS",
        reg::IMS => "IMS",
        reg::IMC => "IMC",
        reg::RCTL => "RCTL",
        reg::TCTL => "TCTL",
        reg::TIPG => "TIPG",
        reg::RDBAL => "RDBAL",
        reg::RDBAH => "RDBAH",
        reg::RDLEN => "RDLEN",
        reg::RDH => "RDH",
        reg::RDT => "RDT",
        reg::RDTR => "RDTR",
        reg::RXDCTL => "RXDCTL",
        reg::RADV => "RADV",
        reg::RSRPD => "RSRPD",
        reg::TDBAL => "TDBAL",
        reg::TDBAH => "TDBAH",
        reg::TDLEN => "TDLEN",
        reg::TDH => "TDH",
        reg::TDT => "TDT",
        reg::TIDV => "TIDV",
        reg::TXDCTL => "TXDCTL",
        reg::TADV => "TADV",
        reg::TSPMT => "TSPMT",
        o if (reg::MTA..reg::MTA + 512).contains(&o) => "MTA",
        o if (reg::RAL0..reg::RAL0 + 8 * RECEIVE_ADDRESSES as u32).contains(&o) => if o % 8 == 0 { "RAL" } else { "RAH" },
        o if (0x4000..0x5000).contains(&o) => "statistics",
        _ => "other",
    }
}

pub const CTRL_SLU: u32 = 1 << 6;
pub const CTRL_RST: u32 = 1 << 26;
pub const STATUS_LU: u32 = 1 << 1;

pub const RCTL_EN: u32 = 1 << 1;
pub const RCTL_BAM: u32 = 1 << 15;
/// Strip the Ethernet CRC, so descriptor lengths are frame lengths.
pub const RCTL_SECRC: u32 = 1 << 26;
// BSIZE 00 with BSEX 0 = 2048-byte buffers; LPE 0 = frames above 1522 bytes are dropped by the NIC.

pub const TCTL_EN: u32 = 1 << 1;
pub const TCTL_PSP: u32 = 1 << 3;
pub const TCTL_CT_SHIFT: u32 = 4;
pub const TCTL_COLD_SHIFT: u32 = 12;

/// Interrupt causes (ICR/IMS bits).
pub const INT_TXDW: u32 = 1 << 0;
pub const INT_LSC: u32 = 1 << 2;
pub const INT_RXDMT0: u32 = 1 << 4;
pub const INT_RXO: u32 = 1 << 6;
pub const INT_RXT0: u32 = 1 << 7;
/// What the driver asks for: receive timer, overrun, descriptors running low, link changes.
pub const INT_WANTED: u32 = INT_RXT0 | INT_RXO | INT_RXDMT0 | INT_LSC;

pub const RAH_AV: u32 = 1 << 31;
/// Receive-address registers: entry 0 holds the EEPROM's MAC after reset; the driver uses up to 16.
pub const RECEIVE_ADDRESSES: usize = 16;

pub fn mac_to_u64(mac: [u8; 6]) -> u64 {
    let mut b = [0u8; 8];
    b[..6].copy_from_slice(&mac);
    u64::from_le_bytes(b)
}

pub fn mac_from_u64(v: u64) -> [u8; 6] {
    let b = v.to_le_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

const EERD_START: u32 = 1;
const EERD_DONE: u32 = 1 << 4;

/// The station address from EEPROM words 0–2 (little-endian byte pairs).
pub fn mac_from_eeprom(words: [u16; 3]) -> [u8; 6] {
    let [a, b] = words[0].to_le_bytes();
    let [c, d] = words[1].to_le_bytes();
    let [e, f] = words[2].to_le_bytes();
    [a, b, c, d, e, f]
}

/// RAL/RAH values for a MAC (address valid).
pub fn receive_address(mac: [u8; 6]) -> (u32, u32) {
    (
        u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
        u32::from(mac[4]) | u32::from(mac[5]) << 8 | RAH_AV,
    )
}

/// TCTL for full duplex: enable, pad short packets, collision threshold 15, collision distance 64.
pub const fn tctl_value() -> u32 {
    TCTL_EN | TCTL_PSP | (0x0F << TCTL_CT_SHIFT) | (0x40 << TCTL_COLD_SHIFT)
}

/// The register window of one NIC.
pub struct Regs {
    base: u64,
}

impl Regs {
    /// # Safety
    /// `base` is the physical, uncached address of an 8254x BAR 0 (128 KiB) the caller may program.
    pub const unsafe fn new(base: u64) -> Regs {
        Regs { base }
    }

    pub fn read(&self, offset: u32) -> u32 {
        debug_assert!(u64::from(offset) < reg::WINDOW && offset % 4 == 0);
        // SAFETY: inside the register window the constructor's contract names; aligned.
        unsafe { questv_arch::mmio::reg32(self.base + u64::from(offset % reg::WINDOW as u32 & !3)).read() }
    }

    pub fn write(&self, offset: u32, value: u32) {
        debug_assert!(u64::from(offset) < reg::WINDOW && offset % 4 == 0);
        // SAFETY: as in read().
        unsafe { questv_arch::mmio::reg32(self.base + u64::from(offset % reg::WINDOW as u32 & !3)).write(value) }
    }

    /// Full reset, then the MAC in RA[0] (what the EEPROM loaded) — read before anything else is programmed.
    pub fn reset(&self, spin: impl Fn()) -> Result<[u8; 6], &'static str> {
        self.write(reg::IMC, u32::MAX);
        self.write(reg::CTRL, self.read(reg::CTRL) | CTRL_RST);
        let mut tries = 0;
        while self.read(reg::CTRL) & CTRL_RST != 0 {
            tries += 1;
            if tries > 100_000 {
                return Err("the NIC did not come out of reset");
            }
            spin();
        }
        self.write(reg::IMC, u32::MAX);
        let _ = self.read(reg::ICR);
        // The EEPROM's words 0–2 are the station address. Real 82540EMs and QEMU also copy it into RA[0] at
        // reset, Bochs does not: the EEPROM is the source, RA[0] the fallback if the EEPROM does not answer.
        let mut words = [0u16; 3];
        let mut eeprom_ok = true;
        for (i, w) in words.iter_mut().enumerate() {
            match self.eeprom_word(i as u32, &spin) {
                Some(v) => *w = v,
                None => eeprom_ok = false,
            }
        }
        let mac = mac_from_eeprom(words);
        if eeprom_ok && mac != [0; 6] && mac[0] & 1 == 0 {
            return Ok(mac);
        }
        let (lo, hi) = (self.read(reg::RAL0), self.read(reg::RAH0));
        let b = lo.to_le_bytes();
        Ok([b[0], b[1], b[2], b[3], hi as u8, (hi >> 8) as u8])
    }

    /// One EEPROM word through EERD (None if the read never completes).
    fn eeprom_word(&self, address: u32, spin: &impl Fn()) -> Option<u16> {
        self.write(reg::EERD, (address << 8) | EERD_START);
        for _ in 0..10_000 {
            let v = self.read(reg::EERD);
            if v & EERD_DONE != 0 {
                return Some((v >> 16) as u16);
            }
            spin();
        }
        None
    }

    pub fn link_up(&self) -> bool {
        self.read(reg::STATUS) & STATUS_LU != 0
    }
}
