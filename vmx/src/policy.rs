//! What a sandbox may touch: deny by default, grant by need (docs/vt.md has the table). Pure and host-tested;
//! the monitor (`crate::monitor`) applies it on exits and the VMCS set-up builds the bitmaps from it.
//!
//! - MSRs: a fixed allow list passes through without an exit; every other MSR (and every MSR outside the
//!   bitmap's two ranges) exits and is refused with #GP, except the two the monitor checks: x2APIC ICR writes
//!   ([`check_icr`]) and IA32_APIC_BASE writes that change nothing.
//! - Port I/O: every port exits unless granted; refused INs read all-ones, refused OUTs are dropped, and OUTs
//!   to ports that can only be hostile (reset, SMI) stop the sandbox.
//! - IPIs: fixed delivery, physical destination, no shorthand; a vector ≥ 32 to itself, or the channel vector
//!   to a core it has a channel with.
#![forbid(unsafe_code)]

use core::ops::RangeInclusive;

pub use x86::msr::{
    IA32_APIC_BASE as MSR_APIC_BASE, IA32_CSTAR as MSR_CSTAR, IA32_EFER as MSR_EFER, IA32_FMASK as MSR_FMASK,
    IA32_FS_BASE as MSR_FS_BASE, IA32_GS_BASE as MSR_GS_BASE, IA32_KERNEL_GSBASE as MSR_KERNEL_GS_BASE,
    IA32_LSTAR as MSR_LSTAR, IA32_MTRR_DEF_TYPE as MSR_MTRR_DEF_TYPE, IA32_PAT as MSR_PAT, IA32_STAR as MSR_STAR,
    IA32_TIME_STAMP_COUNTER as MSR_TSC, IA32_TSC_AUX as MSR_TSC_AUX, IA32_TSC_DEADLINE as MSR_TSC_DEADLINE,
    IA32_X2APIC_ICR as MSR_X2APIC_ICR,
};
/// The x2APIC register range (SDM §11.12.1.2).
pub const MSR_X2APIC_FIRST: u32 = 0x800;
pub const MSR_X2APIC_LAST: u32 = 0x8FF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// MSRs a sandbox kernel reads or writes directly (no exit). Everything a 64-bit kernel needs for its own
/// core: EFER (VM entry/exit load and save it), SYSCALL MSRs, segment bases, TSC_AUX, its x2APIC (minus ICR
/// writes), TSC deadline, PAT (saved and loaded across exits). Reading APIC_BASE and the TSC is harmless;
/// writing them is not (relocating/disabling the APIC, moving the TSC the monitor's watchdog counts with).
pub fn msr_passthrough(msr: u32, access: Access) -> bool {
    match msr {
        MSR_EFER | MSR_STAR | MSR_LSTAR | MSR_CSTAR | MSR_FMASK => true,
        MSR_FS_BASE | MSR_GS_BASE | MSR_KERNEL_GS_BASE | MSR_TSC_AUX => true,
        MSR_PAT | MSR_TSC_DEADLINE => true,
        MSR_X2APIC_ICR => access == Access::Read,
        // LVT entries other than the timer's are checked like their xAPIC twins ([`classify_x2apic_write`]).
        m if X2APIC_CHECKED_LVTS.contains(&m) => access == Access::Read,
        MSR_X2APIC_FIRST..=MSR_X2APIC_LAST => true,
        MSR_APIC_BASE | MSR_TSC => access == Access::Read,
        _ => false,
    }
}

/// Position of `msr`'s bit in the VMX MSR bitmap page (SDM §25.6.9): read-low at byte 0, read-high at 1024,
/// write-low at 2048, write-high at 3072. `None` for MSRs outside both ranges (those always exit).
pub fn msr_bitmap_bit(msr: u32, access: Access) -> Option<(usize, u8)> {
    let (base, index) = match msr {
        0..=0x1FFF => (0, msr),
        0xC000_0000..=0xC000_1FFF => (1024, msr - 0xC000_0000),
        _ => return None,
    };
    let base = base + if access == Access::Write { 2048 } else { 0 };
    Some((base + (index / 8) as usize, (index % 8) as u8))
}

/// Deny-by-default MSR bitmap: every bit set (exit), cleared for [`msr_passthrough`].
pub fn build_msr_bitmap(page: &mut [u8; 4096]) {
    page.fill(0xFF);
    for access in [Access::Read, Access::Write] {
        for msr in (0..=0x1FFFu32).chain(0xC000_0000..=0xC000_1FFF) {
            if msr_passthrough(msr, access) {
                let (byte, bit) = msr_bitmap_bit(msr, access).unwrap();
                page[byte] &= !(1 << bit);
            }
        }
    }
}

/// Position of `msr`'s read bit in the AMD MSR permission map (APM Vol. 2 §15.11: two bits per MSR, read then
/// write; MSRs 0–0x1FFF at byte 0, 0xC000_0000–0xC000_1FFF at 0x800, 0xC001_0000–0xC001_1FFF at 0x1000).
/// `None` for MSRs outside the three ranges (those always exit).
pub fn msrpm_bit(msr: u32, access: Access) -> Option<(usize, u8)> {
    let (base, index) = match msr {
        0..=0x1FFF => (0, msr),
        0xC000_0000..=0xC000_1FFF => (0x800, msr - 0xC000_0000),
        0xC001_0000..=0xC001_1FFF => (0x1000, msr - 0xC001_0000),
        _ => return None,
    };
    let bit = 2 * (index % 4) + u32::from(access == Access::Write);
    Some((base + (index / 4) as usize, bit as u8))
}

/// Deny-by-default MSR permission map (8 KiB, SVM): every bit set (intercept), cleared for [`msr_passthrough`].
pub fn build_msr_permission_map(map: &mut [u8; 8192]) {
    map.fill(0xFF);
    for access in [Access::Read, Access::Write] {
        for msr in (0..=0x1FFFu32).chain(0xC000_0000..=0xC000_1FFF).chain(0xC001_0000..=0xC001_1FFF) {
            if msr_passthrough(msr, access) {
                let (byte, bit) = msrpm_bit(msr, access).unwrap();
                map[byte] &= !(1 << bit);
            }
        }
    }
}

/// Deny-by-default I/O permission map (12 KiB, SVM: one bit per port, and the bits past 0xFFFF that a
/// multi-byte access at the top reaches): every bit set except granted ports.
pub fn build_io_permission_map(map: &mut [u8; 12288], granted: &[RangeInclusive<u16>]) {
    map.fill(0xFF);
    for r in granted {
        for port in r.clone() {
            map[usize::from(port) / 8] &= !(1 << (port % 8));
        }
    }
}

/// Ports granted to a sandbox. None: the console is the monitor's (hypercall), and the one shared device, the
/// e1000, is driven through its memory-mapped registers.
pub const GRANTED_PORTS: &[RangeInclusive<u16>] = &[];

/// Deny-by-default I/O bitmaps A (ports 0–0x7FFF) and B (0x8000–0xFFFF): every bit set except granted ports.
pub fn build_io_bitmaps(a: &mut [u8; 4096], b: &mut [u8; 4096], granted: &[RangeInclusive<u16>]) {
    a.fill(0xFF);
    b.fill(0xFF);
    for r in granted {
        for port in r.clone() {
            let page = if port < 0x8000 { &mut *a } else { &mut *b };
            let i = (port & 0x7FFF) as usize;
            page[i / 8] &= !(1 << (i % 8));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortVerdict {
    Granted,
    /// IN reads all-ones, OUT is dropped; counted.
    Refused,
    /// Only an attack would do this: the sandbox is stopped.
    Hostile,
}

/// Ports whose writes reset the machine or enter SMM: 0xCF9 (reset control), 0x92 (system control port A,
/// bit 0 = fast reset), 0x64 (keyboard controller commands, 0xFE = pulse reset), 0xB2/0xB3 (APM/SMI).
pub const HOSTILE_OUT_PORTS: &[u16] = &[0x64, 0x92, 0xB2, 0xB3, 0xCF9];

/// Verdict on an access of `size` bytes at `port` (an access is granted only if every byte is).
pub fn classify_port(port: u16, size: u8, write: bool, granted: &[RangeInclusive<u16>]) -> PortVerdict {
    let last = port.saturating_add(u16::from(size.max(1)) - 1);
    if (port..=last).all(|p| granted.iter().any(|r| r.contains(&p))) {
        return PortVerdict::Granted;
    }
    // A dword at 0xCF8 is the PCI configuration address register, not the reset control byte at 0xCF9.
    let covers_hostile = (port..=last).any(|p| HOSTILE_OUT_PORTS.contains(&p)) && !(port == 0xCF8 && size == 4);
    if write && covers_hostile {
        PortVerdict::Hostile
    } else {
        PortVerdict::Refused
    }
}

/// The value a refused IN of `size` bytes reads (all ones, like a port nobody decodes).
pub fn refused_in_value(size: u8) -> u64 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    }
}

/// An IPI the monitor will send on the sandbox's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipi {
    pub dest_apic: u32,
    pub vector: u8,
    pub kind: IpiKind,
}

/// What an accepted IPI asks for. INIT and start-up go only to the other cores of the sender's own sandbox
/// (the monitor starts them: it emulates the two, since an SVM guest has no wait-for-SIPI state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpiKind {
    Fixed,
    /// INIT (level assert); `deassert`: the xAPIC's INIT level de-assert, which does nothing.
    Init { deassert: bool },
    /// Start-up at the real-mode page `vector` (the vector field).
    Startup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcrRefusal {
    /// NMI, INIT, SIPI, SMI, lowest priority...: only fixed delivery is allowed.
    DeliveryMode(u8),
    LogicalDestination,
    Shorthand(u8),
    /// Exception vectors (0–31) or a vector the target does not accept.
    Vector(u8),
    /// A core this sandbox has no channel to.
    Destination(u32),
    /// Reserved bits set.
    Reserved,
}

impl IcrRefusal {
    /// A small number per kind (the refusal counters' key).
    pub fn code(self) -> u64 {
        match self {
            IcrRefusal::DeliveryMode(_) => 0,
            IcrRefusal::LogicalDestination => 1,
            IcrRefusal::Shorthand(_) => 2,
            IcrRefusal::Vector(_) => 3,
            IcrRefusal::Destination(_) => 4,
            IcrRefusal::Reserved => 5,
        }
    }

    /// Name of the kind with [`code`](Self::code) `c`.
    pub fn name_of_code(c: u64) -> &'static str {
        ["delivery_mode", "logical_destination", "shorthand", "vector", "destination", "reserved_bits"].get(c as usize).copied().unwrap_or("?")
    }

    pub fn name(self) -> &'static str {
        match self {
            IcrRefusal::DeliveryMode(_) => "delivery_mode",
            IcrRefusal::LogicalDestination => "logical_destination",
            IcrRefusal::Shorthand(_) => "shorthand",
            IcrRefusal::Vector(_) => "vector",
            IcrRefusal::Destination(_) => "destination",
            IcrRefusal::Reserved => "reserved_bits",
        }
    }
}

/// Validate an x2APIC ICR value (SDM §11.12.9: destination in bits 32–63, vector 0–7, delivery mode 8–10,
/// destination mode 11, level 14, trigger 15, shorthand 18–19). `own_apic` is the sending core;
/// `sibling(apic)` says whether that core is another core of the sender's own sandbox (any fixed vector, INIT
/// and start-up allowed); `channel_peer(apic)` whether the sandbox has a channel to the core (only
/// `accepted_vector`).
pub fn check_icr(value: u64, own_apic: u32, accepted_vector: u8, sibling: impl Fn(u32) -> bool, channel_peer: impl Fn(u32) -> bool) -> Result<Ipi, IcrRefusal> {
    let low = value as u32;
    let dest = (value >> 32) as u32;
    let vector = low as u8;
    let mode = ((low >> 8) & 7) as u8;
    let shorthand = ((low >> 18) & 3) as u8;
    // Bits 12 (delivery status, read-only), 13, 16–17 and 20–31 are reserved in x2APIC mode.
    if low & 0xFFF3_3000 != 0 {
        return Err(IcrRefusal::Reserved);
    }
    if low & (1 << 11) != 0 {
        return Err(IcrRefusal::LogicalDestination);
    }
    if shorthand != 0 {
        return Err(IcrRefusal::Shorthand(shorthand));
    }
    let kind = match mode {
        0 => IpiKind::Fixed,
        5 => IpiKind::Init { deassert: low & (1 << 14) == 0 },
        6 => IpiKind::Startup,
        _ => return Err(IcrRefusal::DeliveryMode(mode)),
    };
    if kind != IpiKind::Fixed {
        return if dest != own_apic && sibling(dest) { Ok(Ipi { dest_apic: dest, vector, kind }) } else { Err(IcrRefusal::DeliveryMode(mode)) };
    }
    if vector < 32 {
        return Err(IcrRefusal::Vector(vector));
    }
    if dest == own_apic || sibling(dest) {
        return Ok(Ipi { dest_apic: dest, vector, kind });
    }
    if vector != accepted_vector {
        return Err(IcrRefusal::Vector(vector));
    }
    if !channel_peer(dest) {
        return Err(IcrRefusal::Destination(dest));
    }
    Ok(Ipi { dest_apic: dest, vector, kind })
}

/// The ICR value the monitor writes for an accepted IPI: fixed, physical, edge, asserted, no shorthand.
pub fn icr_value(ipi: Ipi) -> u64 {
    (u64::from(ipi.dest_apic) << 32) | (1 << 14) | u64::from(ipi.vector)
}

/// The xAPIC ICR value as an x2APIC one (destination APIC id in bits 32–63), so [`check_icr`] serves both
/// modes: `high` is what the sandbox last wrote to ICR high (destination in bits 24–31), `low` the ICR low
/// write that sends.
pub fn xapic_icr(high: u32, low: u32) -> u64 {
    (u64::from(high >> 24) << 32) | u64::from(low)
}

/// xAPIC register offsets (SDM Table 11-1) the policy names.
pub mod xapic {
    pub const ID: u32 = 0x20;
    pub const TPR: u32 = 0x80;
    pub const EOI: u32 = 0xB0;
    pub const LDR: u32 = 0xD0;
    pub const DFR: u32 = 0xE0;
    pub const SVR: u32 = 0xF0;
    pub const ESR: u32 = 0x280;
    pub const ICR_LOW: u32 = 0x300;
    pub const ICR_HIGH: u32 = 0x310;
    pub const LVT_CMCI: u32 = 0x2F0;
    pub const LVT_TIMER: u32 = 0x320;
    pub const LVT_THERMAL: u32 = 0x330;
    pub const LVT_PERF: u32 = 0x340;
    pub const LVT_LINT0: u32 = 0x350;
    pub const LVT_LINT1: u32 = 0x360;
    pub const LVT_ERROR: u32 = 0x370;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_DIVIDE: u32 = 0x3E0;
}

/// What the monitor does with a sandbox's write to its (trapped) xAPIC page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApicWriteVerdict {
    /// Write the value to the core's APIC as it is (EOI, TPR, timer, masked or fixed LVT entries, ...).
    Replay,
    /// Remember it as the destination of the next ICR low write; nothing is sent yet.
    IcrHigh,
    /// An IPI: check it with [`check_icr`] (after [`xapic_icr`]).
    IcrLow,
    /// Dropped and counted (the register's offset is the refusal code).
    Refused,
}

/// Rules for xAPIC register writes. Only aligned 32-bit writes to registers a kernel programs for its own
/// core are replayed; LVT entries must be masked or use fixed delivery (an NMI, SMI, INIT or ExtINT entry
/// would let the sandbox raise what the monitor keeps for itself); the APIC id is not the sandbox's to change;
/// the logical destination registers (LDR/DFR) belong to the monitor; everything else (read-only and reserved
/// registers) is refused.
pub fn classify_xapic_write(offset: u32, size: u8, value: u32) -> ApicWriteVerdict {
    use xapic::*;
    if size != 4 || offset % 16 != 0 {
        return ApicWriteVerdict::Refused;
    }
    let lvt_ok = value & (1 << 16) != 0 || (value >> 8) & 7 == 0;
    match offset {
        // LDR/DFR are not replayed: the monitor sets each core's logical id, which picks the sandboxes a shared
        // device's interrupt reaches (a sandbox taking another's id would get its interrupts).
        TPR | EOI | SVR | ESR | TIMER_INITIAL | TIMER_DIVIDE => ApicWriteVerdict::Replay,
        // The timer entry has no delivery-mode field (bits 8–10 reserved): they must be clear.
        LVT_TIMER if (value >> 8) & 7 == 0 => ApicWriteVerdict::Replay,
        // CMCI (0x2F0) is not among them: a sandbox has no machine-check banks (their MSRs are refused), and a
        // core without the entry would fault when the monitor replayed it.
        LVT_THERMAL | LVT_PERF | LVT_LINT0 | LVT_LINT1 | LVT_ERROR if lvt_ok => ApicWriteVerdict::Replay,
        ICR_HIGH => ApicWriteVerdict::IcrHigh,
        ICR_LOW => ApicWriteVerdict::IcrLow,
        _ => ApicWriteVerdict::Refused,
    }
}

/// x2APIC LVT registers whose writes exit (CMCI, thermal, performance counter, LINT0, LINT1, error): each
/// could deliver an NMI, SMI, INIT or ExtINT. The timer entry (0x832) is not among them: the kernel rewrites it at
/// every scheduling decision, and in x2APIC mode its delivery-mode bits are reserved (a WRMSR setting them
/// raises #GP in the CPU itself), so it cannot raise anything but a fixed interrupt.
pub const X2APIC_CHECKED_LVTS: [u32; 6] = [0x82F, 0x833, 0x834, 0x835, 0x836, 0x837];

/// The xAPIC offset of an x2APIC register MSR (SDM §11.12.1.2: MSR 0x800 + offset / 16).
pub fn x2apic_offset(msr: u32) -> u32 {
    (msr - MSR_X2APIC_FIRST) << 4
}

/// Rules for a trapped x2APIC register write: those of the same register's xAPIC write (upper 32 bits must
/// be zero, as in the CPU's own check).
pub fn classify_x2apic_write(msr: u32, value: u64) -> ApicWriteVerdict {
    if !(MSR_X2APIC_FIRST..=MSR_X2APIC_LAST).contains(&msr) || value >> 32 != 0 {
        return ApicWriteVerdict::Refused;
    }
    classify_xapic_write(x2apic_offset(msr), 4, value as u32)
}

/// Consecutive exits for the same intercepted exception with the guest in exactly the same state (vector,
/// RIP, RSP, CR3 and every GPR) before the monitor calls it a delivery loop: nothing the guest does between two
/// of them changes anything, so it would take them forever (the class of CVE-2015-5307 and CVE-2015-8104). A
/// program that takes the exception in a loop of its own changes some register (a counter, a pointer) on the
/// way round, so it is never counted. One thousand: tens of milliseconds on hardware, seconds in Bochs.
pub const EXCEPTION_LOOP_LIMIT: u32 = 1000;

/// What the loop detector compares: the vector, then RIP, RSP, CR3 and the fifteen GPRs.
pub type ExceptionSnapshot = [u64; 19];

/// Detects exception delivery loops (one per sandbox).
#[derive(Debug, Clone, Copy)]
pub struct ExceptionLoop {
    last: ExceptionSnapshot,
    count: u32,
}

impl Default for ExceptionLoop {
    fn default() -> Self {
        Self::new()
    }
}

impl ExceptionLoop {
    pub const fn new() -> ExceptionLoop {
        ExceptionLoop { last: [0; 19], count: 0 }
    }

    /// One more intercepted exception in state `s`; returns how many in a row had exactly this state.
    pub fn observe(&mut self, s: &ExceptionSnapshot) -> u32 {
        if self.count > 0 && self.last == *s {
            self.count = self.count.saturating_add(1);
        } else {
            self.last = *s;
            self.count = 1;
        }
        self.count
    }

    /// Forget the history (the sandbox is relaunched).
    pub fn reset(&mut self) {
        self.count = 0;
    }
}

/// What a refusal was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    Io,
    Msr,
    Icr,
    Hypercall,
    /// An NMI arrived while the sandbox ran (it can aim one at itself through its own LVT entries).
    Nmi,
    /// A write to the xAPIC page the rules refuse (code: the register offset).
    Apic,
    /// A NIC sharer's write to a device-wide register (code: its offset in the register window).
    NicRegister,
    /// A channel the partition file does not list (code: the peer).
    Channel,
}

impl RefusalKind {
    pub fn name(self) -> &'static str {
        match self {
            RefusalKind::Io => "io",
            RefusalKind::Msr => "msr",
            RefusalKind::Icr => "icr",
            RefusalKind::Hypercall => "hypercall",
            RefusalKind::Nmi => "nmi",
            RefusalKind::Apic => "apic",
            RefusalKind::NicRegister => "nic_register",
            RefusalKind::Channel => "channel",
        }
    }
}

/// Counts of refused accesses by (kind, port/MSR/destination), fixed capacity (no allocation in the exit
/// path). Keys beyond the capacity are folded into one overflow count, so a sandbox probing every port
/// cannot grow monitor memory.
#[derive(Debug, Clone)]
pub struct Refusals {
    entries: [(RefusalKind, u64, u64); Refusals::CAPACITY],
    len: usize,
    pub overflow: u64,
}

impl Default for Refusals {
    fn default() -> Self {
        Self::new()
    }
}

impl Refusals {
    pub const CAPACITY: usize = 32;

    pub const fn new() -> Refusals {
        Refusals { entries: [(RefusalKind::Io, 0, 0); Refusals::CAPACITY], len: 0, overflow: 0 }
    }

    /// Count one refusal; returns true if it is the first of its key (worth a log line).
    pub fn record(&mut self, kind: RefusalKind, code: u64) -> bool {
        if let Some(e) = self.entries[..self.len].iter_mut().find(|e| e.0 == kind && e.1 == code) {
            e.2 += 1;
            return false;
        }
        if self.len == Self::CAPACITY {
            self.overflow += 1;
            return false;
        }
        self.entries[self.len] = (kind, code, 1);
        self.len += 1;
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = (RefusalKind, u64, u64)> + '_ {
        self.entries[..self.len].iter().copied()
    }

    pub fn total(&self) -> u64 {
        self.iter().map(|e| e.2).sum::<u64>() + self.overflow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bit(page: &[u8; 4096], msr: u32, a: Access) -> bool {
        let (byte, b) = msr_bitmap_bit(msr, a).unwrap();
        page[byte] & (1 << b) != 0
    }

    #[test]
    fn msr_bitmap_denies_by_default() {
        let mut p = [0u8; 4096];
        build_msr_bitmap(&mut p);
        // Denied: MTRRs, machine-check banks, microcode, power, feature control, VMX capability MSRs.
        for msr in [MSR_MTRR_DEF_TYPE, 0x200, 0x250, 0x400, 0x401, 0x79, 0x8B, 0x199, 0x1A0, 0x3A, 0x480] {
            assert!(bit(&p, msr, Access::Read) && bit(&p, msr, Access::Write), "0x{msr:x} must exit");
        }
        // ICR and APIC_BASE writes exit; reads do not.
        assert!(bit(&p, MSR_X2APIC_ICR, Access::Write) && !bit(&p, MSR_X2APIC_ICR, Access::Read));
        assert!(bit(&p, MSR_APIC_BASE, Access::Write) && !bit(&p, MSR_APIC_BASE, Access::Read));
        assert!(bit(&p, MSR_TSC, Access::Write));
        // LVT writes other than the timer's exit (checked); reads do not.
        for msr in X2APIC_CHECKED_LVTS {
            assert!(bit(&p, msr, Access::Write) && !bit(&p, msr, Access::Read), "0x{msr:x}: writes exit, reads pass");
        }
        // What a kernel needs passes through.
        for msr in [MSR_EFER, MSR_STAR, MSR_LSTAR, MSR_FMASK, MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE, MSR_TSC_AUX, MSR_PAT, MSR_TSC_DEADLINE, 0x80B, 0x808, 0x832, 0x838, 0x83F] {
            assert!(!bit(&p, msr, Access::Read) && !bit(&p, msr, Access::Write), "0x{msr:x} must pass");
        }
        // Exactly the allow list is clear.
        let clear: usize = p.iter().map(|b| b.count_zeros() as usize).sum();
        let expected = (0..=0x1FFFu32)
            .chain(0xC000_0000..=0xC000_1FFF)
            .map(|m| usize::from(msr_passthrough(m, Access::Read)) + usize::from(msr_passthrough(m, Access::Write)))
            .sum::<usize>();
        assert_eq!(clear, expected);
    }

    #[test]
    fn msr_bitmap_layout() {
        assert_eq!(msr_bitmap_bit(0, Access::Read), Some((0, 0)));
        assert_eq!(msr_bitmap_bit(0x830, Access::Write), Some((2048 + 0x106, 0)));
        assert_eq!(msr_bitmap_bit(0xC000_0080, Access::Read), Some((1024 + 16, 0)));
        assert_eq!(msr_bitmap_bit(0xC000_0082, Access::Write), Some((3072 + 16, 2)));
        assert_eq!(msr_bitmap_bit(0x2000, Access::Read), None);
        assert_eq!(msr_bitmap_bit(0x4000_0000, Access::Write), None);
        assert_eq!(msr_bitmap_bit(0xC000_2000, Access::Read), None);
    }

    #[test]
    fn io_bitmaps_deny_by_default_and_grant_ranges() {
        let (mut a, mut b) = ([0u8; 4096], [0u8; 4096]);
        build_io_bitmaps(&mut a, &mut b, &[]);
        assert!(a.iter().chain(b.iter()).all(|&x| x == 0xFF));
        build_io_bitmaps(&mut a, &mut b, &[0x3F8..=0x3FF, 0xC000..=0xC03F]);
        assert_eq!(a[0x3F8 / 8], 0x00);
        assert_eq!(a[0x3F0 / 8], 0xFF);
        assert_eq!(b[0x4000 / 8..0x4040 / 8].iter().filter(|&&x| x == 0).count(), 8);
        assert_eq!(a.iter().chain(b.iter()).map(|x| x.count_zeros()).sum::<u32>(), 8 + 64);
    }

    #[test]
    fn ports_classified() {
        let g: &[RangeInclusive<u16>] = &[0x3F8..=0x3FF];
        assert_eq!(classify_port(0x3F8, 1, true, g), PortVerdict::Granted);
        assert_eq!(classify_port(0x3FE, 4, false, g), PortVerdict::Refused); // straddles the grant
        assert_eq!(classify_port(0xCF9, 1, true, g), PortVerdict::Hostile);
        assert_eq!(classify_port(0xCF9, 1, false, g), PortVerdict::Refused);
        // A dword OUT at 0xCF8 is a PCI config address (refused, not hostile); a word there reaches 0xCF9.
        assert_eq!(classify_port(0xCF8, 4, true, g), PortVerdict::Refused);
        assert_eq!(classify_port(0xCF8, 2, true, g), PortVerdict::Hostile);
        for p in [0x64, 0x92, 0xB2] {
            assert_eq!(classify_port(p, 1, true, g), PortVerdict::Hostile);
            assert_eq!(classify_port(p, 1, false, g), PortVerdict::Refused);
        }
        assert_eq!(classify_port(0x60, 1, true, g), PortVerdict::Refused);
        assert_eq!(classify_port(0xFFFF, 4, false, g), PortVerdict::Refused); // no overflow at the top
    }

    #[test]
    fn icr_rules() {
        let peer = |apic: u32| apic == 1;
        let none = |_: u32| false;
        let v = CHANNEL_VECTOR;
        let fixed = |dest_apic, vector| Ok(Ipi { dest_apic, vector, kind: IpiKind::Fixed });
        assert_eq!(check_icr((1 << 32) | (1 << 14) | u64::from(v), 0, v, none, peer), fixed(1, v));
        assert_eq!(check_icr(u64::from(v), 0, v, none, peer), fixed(0, v));
        assert_eq!(check_icr(0xF1, 0, v, none, peer), fixed(0, 0xF1)); // self, any vector ≥ 32
        assert_eq!(check_icr((1 << 32) | (4 << 8), 0, v, none, peer), Err(IcrRefusal::DeliveryMode(4))); // NMI
        assert_eq!(check_icr((1 << 32) | (5 << 8) | (1 << 14) | (1 << 15), 0, v, none, peer), Err(IcrRefusal::DeliveryMode(5))); // INIT
        assert_eq!(check_icr((1 << 32) | (6 << 8) | 0x08, 0, v, none, peer), Err(IcrRefusal::DeliveryMode(6))); // SIPI
        assert_eq!(check_icr((2 << 8) | (1 << 14), 0, v, none, peer), Err(IcrRefusal::DeliveryMode(2))); // SMI
        assert_eq!(check_icr((1 << 32) | (1 << 11) | u64::from(v), 0, v, none, peer), Err(IcrRefusal::LogicalDestination));
        assert_eq!(check_icr((3 << 18) | u64::from(v), 0, v, none, peer), Err(IcrRefusal::Shorthand(3)));
        assert_eq!(check_icr((2 << 18) | u64::from(v), 0, v, none, peer), Err(IcrRefusal::Shorthand(2)));
        assert_eq!(check_icr((1 << 32) | 14, 0, v, none, peer), Err(IcrRefusal::Vector(14)));
        assert_eq!(check_icr(14, 0, v, none, peer), Err(IcrRefusal::Vector(14))); // not even to itself
        assert_eq!(check_icr((1 << 32) | 0x40, 0, v, none, peer), Err(IcrRefusal::Vector(0x40)));
        assert_eq!(check_icr((2 << 32) | u64::from(v), 0, v, none, peer), Err(IcrRefusal::Destination(2)));
        assert_eq!(check_icr((1 << 32) | (1 << 12) | u64::from(v), 0, v, none, peer), Err(IcrRefusal::Reserved));
        for r in [IcrRefusal::DeliveryMode(4), IcrRefusal::LogicalDestination, IcrRefusal::Shorthand(1), IcrRefusal::Vector(3), IcrRefusal::Destination(9), IcrRefusal::Reserved] {
            assert_eq!(IcrRefusal::name_of_code(r.code()), r.name());
        }
        assert_eq!(icr_value(Ipi { dest_apic: 3, vector: v, kind: IpiKind::Fixed }), (3 << 32) | (1 << 14) | u64::from(v));
    }

    #[test]
    fn a_sandbox_starts_and_interrupts_its_own_cores_only() {
        // Sender on APIC 0; APIC 2 is another core of its sandbox, APIC 1 a channel peer.
        let sibling = |apic: u32| apic == 2;
        let peer = |apic: u32| apic == 1;
        let v = CHANNEL_VECTOR;
        let init = (5 << 8) | (1 << 14) | (1 << 15);
        assert_eq!(check_icr((2 << 32) | init, 0, v, sibling, peer), Ok(Ipi { dest_apic: 2, vector: 0, kind: IpiKind::Init { deassert: false } }));
        assert_eq!(check_icr((2 << 32) | (5 << 8) | (1 << 15), 0, v, sibling, peer), Ok(Ipi { dest_apic: 2, vector: 0, kind: IpiKind::Init { deassert: true } }));
        assert_eq!(check_icr((2 << 32) | (6 << 8) | (1 << 14) | 0x08, 0, v, sibling, peer), Ok(Ipi { dest_apic: 2, vector: 8, kind: IpiKind::Startup }));
        // Not to a channel peer, not to itself, not by shorthand.
        assert_eq!(check_icr((1 << 32) | init, 0, v, sibling, peer), Err(IcrRefusal::DeliveryMode(5)));
        assert_eq!(check_icr(init, 0, v, |_| true, peer), Err(IcrRefusal::DeliveryMode(5)));
        assert_eq!(check_icr((3 << 18) | (6 << 8) | 0x08, 0, v, sibling, peer), Err(IcrRefusal::Shorthand(3)));
        // Any fixed vector to a sibling (TLB shootdown, reschedule); still no NMI.
        assert_eq!(check_icr((2 << 32) | 0xF3, 0, v, sibling, peer), Ok(Ipi { dest_apic: 2, vector: 0xF3, kind: IpiKind::Fixed }));
        assert_eq!(check_icr((2 << 32) | (4 << 8), 0, v, sibling, peer), Err(IcrRefusal::DeliveryMode(4)));
        assert_eq!(check_icr((2 << 32) | 14, 0, v, sibling, peer), Err(IcrRefusal::Vector(14)));
    }

    const CHANNEL_VECTOR: u8 = questv_abi::hypercall::CHANNEL_NOTIFY_VECTOR;

    #[test]
    fn refusals_count_and_stay_bounded() {
        let mut r = Refusals::new();
        assert!(r.record(RefusalKind::Io, 0xCF8));
        assert!(!r.record(RefusalKind::Io, 0xCF8));
        assert!(r.record(RefusalKind::Msr, 0xCF8));
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(RefusalKind::Io, 0xCF8, 2), (RefusalKind::Msr, 0xCF8, 1)]);
        for p in 0..1000 {
            r.record(RefusalKind::Io, 0x1000 + p);
        }
        assert_eq!(r.iter().count(), Refusals::CAPACITY);
        assert_eq!(r.total(), 1003);
        assert_eq!(r.overflow, 1000 - (Refusals::CAPACITY as u64 - 2));
    }

    #[test]
    fn msr_permission_map_matches_the_allow_list() {
        let mut m = [0u8; 8192];
        build_msr_permission_map(&mut m);
        let bit = |msr: u32, a: Access| {
            let (byte, b) = msrpm_bit(msr, a).unwrap();
            m[byte] & (1 << b) != 0
        };
        assert_eq!(msrpm_bit(0, Access::Read), Some((0, 0)));
        assert_eq!(msrpm_bit(0, Access::Write), Some((0, 1)));
        assert_eq!(msrpm_bit(0x1B, Access::Write), Some((6, 7)));
        assert_eq!(msrpm_bit(0xC000_0080, Access::Read), Some((0x800 + 0x20, 0)));
        assert_eq!(msrpm_bit(0xC001_0117, Access::Write), Some((0x1000 + 0x45, 7)));
        assert_eq!(msrpm_bit(0x4000_0000, Access::Read), None);
        assert!(bit(0x1B, Access::Write) && !bit(0x1B, Access::Read), "APIC_BASE: read only");
        assert!(bit(MSR_X2APIC_ICR, Access::Write) && !bit(MSR_X2APIC_ICR, Access::Read));
        // VM_HSAVE_PA, VM_CR, the SVM lock key: the monitor's.
        for msr in [0xC001_0117, 0xC001_0114, 0xC001_0118, MSR_MTRR_DEF_TYPE, 0x79, 0x10] {
            assert!(bit(msr, Access::Write), "0x{msr:x} write must be intercepted");
        }
        for msr in [MSR_EFER, MSR_LSTAR, MSR_GS_BASE, MSR_KERNEL_GS_BASE, MSR_PAT] {
            assert!(!bit(msr, Access::Read) && !bit(msr, Access::Write), "0x{msr:x} must pass");
        }
        let clear: usize = m.iter().map(|b| b.count_zeros() as usize).sum();
        let expected = (0..=0x1FFFu32)
            .chain(0xC000_0000..=0xC000_1FFF)
            .map(|m| usize::from(msr_passthrough(m, Access::Read)) + usize::from(msr_passthrough(m, Access::Write)))
            .sum::<usize>();
        assert_eq!(clear, expected);
    }

    #[test]
    fn io_permission_map_denies_by_default() {
        let mut m = [0u8; 12288];
        build_io_permission_map(&mut m, &[0x3F8..=0x3FF, 0xFFF8..=0xFFFF]);
        assert_eq!(m[0x3F8 / 8], 0);
        assert_eq!(m[0xFFF8 / 8], 0);
        assert_eq!(m[0x2000], 0xFF, "bits past port 0xFFFF stay set");
        assert_eq!(m.iter().map(|x| x.count_zeros()).sum::<u32>(), 16);
    }

    #[test]
    fn xapic_writes_classified() {
        use xapic::*;
        assert_eq!(classify_xapic_write(EOI, 4, 0), ApicWriteVerdict::Replay);
        assert_eq!(classify_xapic_write(SVR, 4, 0x1FF), ApicWriteVerdict::Replay);
        assert_eq!(classify_xapic_write(LVT_TIMER, 4, (1 << 17) | 0x20), ApicWriteVerdict::Replay);
        assert_eq!(classify_xapic_write(LVT_TIMER, 4, (4 << 8) | 0x20), ApicWriteVerdict::Refused);
        assert_eq!(classify_xapic_write(LVT_LINT0, 4, 1 << 16), ApicWriteVerdict::Replay, "masked");
        assert_eq!(classify_xapic_write(LVT_LINT1, 4, 4 << 8), ApicWriteVerdict::Refused, "NMI to itself");
        assert_eq!(classify_xapic_write(LVT_LINT0, 4, 7 << 8), ApicWriteVerdict::Refused, "ExtINT");
        assert_eq!(classify_xapic_write(LVT_ERROR, 4, 0xFE), ApicWriteVerdict::Replay);
        assert_eq!(classify_xapic_write(LDR, 4, 1 << 24), ApicWriteVerdict::Refused, "logical ids are the monitor's");
        assert_eq!(classify_xapic_write(DFR, 4, u32::MAX), ApicWriteVerdict::Refused);
        assert_eq!(classify_xapic_write(ICR_HIGH, 4, 1 << 24), ApicWriteVerdict::IcrHigh);
        assert_eq!(classify_xapic_write(ICR_LOW, 4, 0x40F2), ApicWriteVerdict::IcrLow);
        assert_eq!(classify_xapic_write(ID, 4, 5 << 24), ApicWriteVerdict::Refused);
        assert_eq!(classify_xapic_write(0x390, 4, 0), ApicWriteVerdict::Refused, "current count is read-only");
        assert_eq!(classify_xapic_write(EOI, 1, 0), ApicWriteVerdict::Refused, "byte write");
        assert_eq!(classify_xapic_write(EOI + 4, 4, 0), ApicWriteVerdict::Refused, "unaligned");
        // ICR halves combine into the x2APIC form check_icr reads.
        assert_eq!(xapic_icr(3 << 24, 0x40F2), (3 << 32) | 0x40F2);
        let peer = |apic: u32| apic == 1;
        assert_eq!(check_icr(xapic_icr(0xFF << 24, 0x40F2), 0, CHANNEL_VECTOR, |_| false, peer), Err(IcrRefusal::Destination(0xFF)), "xAPIC broadcast");
    }

    #[test]
    fn x2apic_lvt_writes_follow_the_xapic_rules() {
        // The same verdict as the xAPIC register at MSR offset * 16, for every LVT the monitor traps.
        for msr in X2APIC_CHECKED_LVTS {
            for value in [1 << 16, 0x40, 4 << 8, 2 << 8, 5 << 8, 7 << 8, (4 << 8) | (1 << 16), 0xFE] {
                assert_eq!(classify_x2apic_write(msr, u64::from(value)), classify_xapic_write(x2apic_offset(msr), 4, value), "0x{msr:x} <- 0x{value:x}");
            }
        }
        use xapic::*;
        assert_eq!(x2apic_offset(0x835), LVT_LINT0);
        assert_eq!(x2apic_offset(0x82F), LVT_CMCI);
        assert_eq!(classify_x2apic_write(0x836, 4 << 8), ApicWriteVerdict::Refused, "LINT1 as NMI");
        assert_eq!(classify_x2apic_write(0x834, 2 << 8), ApicWriteVerdict::Refused, "PMI as SMI");
        assert_eq!(classify_x2apic_write(0x833, 5 << 8), ApicWriteVerdict::Refused, "thermal as INIT");
        assert_eq!(classify_x2apic_write(0x82F, 0x40), ApicWriteVerdict::Refused, "CMCI, even fixed (as on the xAPIC page)");
        assert_eq!(classify_x2apic_write(0x834, 0x44), ApicWriteVerdict::Replay, "PMI, fixed");
        assert_eq!(classify_x2apic_write(0x835, 1 << 16), ApicWriteVerdict::Replay, "masked");
        assert_eq!(classify_x2apic_write(0x837, 0xFE), ApicWriteVerdict::Replay, "error, fixed");
        assert_eq!(classify_x2apic_write(0x835, 1 << 32), ApicWriteVerdict::Refused, "reserved upper half");
        assert_eq!(classify_x2apic_write(0x1B, 0), ApicWriteVerdict::Refused, "not an APIC register");
    }

    #[test]
    fn exception_loops_are_identical_states_in_a_row() {
        let mut l = ExceptionLoop::new();
        let mut s: ExceptionSnapshot = [0; 19];
        s[0] = 1;
        s[1] = 0x10_0000;
        for i in 1..=EXCEPTION_LOOP_LIMIT {
            assert_eq!(l.observe(&s), i);
        }
        // A register that changes on the way round (a loop counter) is progress: the count starts again.
        let mut t = s;
        t[5] = 7;
        assert_eq!(l.observe(&t), 1);
        assert_eq!(l.observe(&s), 1);
        assert_eq!(l.observe(&s), 2);
        // Another vector at the same place is another exception.
        let mut ac = s;
        ac[0] = 17;
        assert_eq!(l.observe(&ac), 1);
        l.reset();
        assert_eq!(l.observe(&ac), 1, "a relaunched sandbox starts afresh");
        // The all-zero state is not mistaken for history on the first observation.
        let mut z = ExceptionLoop::new();
        assert_eq!(z.observe(&[0; 19]), 1);
    }
}
