//! I/O APIC: indirect register access through IOREGSEL/IOWIN. Used to mask every input at boot and to route
//! device IRQs (GSIs) to a vector on a chosen CPU.

#[derive(Clone, Copy, Debug)]
pub struct IoApic {
    base: u64,
    pub id: u8,
    pub gsi_base: u32,
}

impl IoApic {
    /// # Safety
    /// `base` must be the physical, uncached MMIO address of an I/O APIC (from the MADT).
    pub unsafe fn new(base: u64, id: u8, gsi_base: u32) -> IoApic {
        IoApic { base, id, gsi_base }
    }

    fn read(&self, reg: u32) -> u32 {
        // SAFETY: base is a valid IOAPIC MMIO window (constructor contract): IOREGSEL at +0, IOWIN at +0x10.
        unsafe {
            crate::mmio::reg32(self.base).write(reg);
            crate::mmio::reg32(self.base + 0x10).read()
        }
    }

    fn write(&self, reg: u32, value: u32) {
        // SAFETY: as in read().
        unsafe {
            crate::mmio::reg32(self.base).write(reg);
            crate::mmio::reg32(self.base + 0x10).write(value);
        }
    }

    /// Number of redirection entries (inputs).
    pub fn input_count(&self) -> u32 {
        ((self.read(1) >> 16) & 0xFF) + 1
    }

    pub fn version(&self) -> u32 {
        self.read(1) & 0xFF
    }

    pub fn mask_all(&self) {
        for i in 0..self.input_count() {
            self.write(0x10 + 2 * i, 1 << 16);
            self.write(0x11 + 2 * i, 0);
        }
    }

    /// Route input `pin` to `vector` on the CPU with `dest_apic_id` (physical destination, fixed delivery).
    pub fn route(&self, pin: u32, vector: u8, dest_apic_id: u8, level_triggered: bool, active_low: bool) {
        let low = u32::from(vector) | (u32::from(active_low) << 13) | (u32::from(level_triggered) << 15);
        self.write(0x11 + 2 * pin, u32::from(dest_apic_id) << 24);
        self.write(0x10 + 2 * pin, low);
    }

    /// Route input `pin` to `vector` on every CPU whose logical APIC id (flat model: one bit per CPU) is in
    /// `logical_mask`: fixed delivery, logical destination. The VT monitor's shared-NIC interrupt.
    pub fn route_logical(&self, pin: u32, vector: u8, logical_mask: u8, level_triggered: bool, active_low: bool) {
        let low = u32::from(vector) | (1 << 11) | (u32::from(active_low) << 13) | (u32::from(level_triggered) << 15);
        self.write(0x11 + 2 * pin, u32::from(logical_mask) << 24);
        self.write(0x10 + 2 * pin, low);
    }

    /// The redirection entry of `pin` (low dword, high dword).
    pub fn entry(&self, pin: u32) -> (u32, u32) {
        (self.read(0x10 + 2 * pin), self.read(0x11 + 2 * pin))
    }

    /// Route input `pin` as an NMI to every CPU (edge triggered, physical destination 0xFF = broadcast). The
    /// SVM monitor's watchdog tick: an NMI reaches a core even while its guest keeps interrupts off.
    pub fn route_nmi_broadcast(&self, pin: u32, active_low: bool) {
        let low = (4 << 8) | (u32::from(active_low) << 13);
        self.write(0x11 + 2 * pin, 0xFF << 24);
        self.write(0x10 + 2 * pin, low);
    }

    pub fn mask(&self, pin: u32) {
        let low = self.read(0x10 + 2 * pin);
        self.write(0x10 + 2 * pin, low | (1 << 16));
    }
}
