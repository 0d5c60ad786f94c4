//! The monitor's boot arguments for one sandbox kernel, carried on that kernel's command line as `key=value`
//! words (readable in the boot log). The monitor writes them with [`SandboxArgs`]'s `Display`; the kernel's
//! command-line parser hands every word to [`SandboxArgs::accept`]. One list of keys serves both, so the two
//! sides cannot disagree.

use core::fmt;

/// The NIC role of a sandbox that shares the e1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NicArgs {
    /// The NIC's register window (guest-physical, mapped by the monitor).
    pub mmio: u64,
    /// The shared DMA region (descriptor rings and buffers).
    pub dma: u64,
    /// This sandbox's sharer index (the monitor programmed the NIC before any sandbox ran).
    pub index: u64,
    /// The sharers' lock claims: one page per sharer, sharer j's at `claims + j * 4096` (this sandbox's own
    /// writable, the others' read-only).
    pub claims: u64,
}

/// Monitor addresses (host-physical) an attack test aims at: the next sandbox's slice, this sandbox's VMCS or
/// VMCB, its second-stage root. Given only to runs the test layer declared attack tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttackTargets {
    pub peer: u64,
    pub vmcs: u64,
    pub stage2: u64,
}

/// What the monitor tells sandbox `sandbox` at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxArgs<'a> {
    pub sandbox: u32,
    /// Guest-physical address of the shared region.
    pub shared: u64,
    /// Timer rates measured by the monitor (sandboxes must not all drive the one PIT at once).
    pub tsc_hz: u64,
    pub lapic_hz: u64,
    /// How many times this sandbox has been recovered (0 = first boot; not written then).
    pub incarnation: u32,
    /// The wall clock: nanoseconds since the Unix epoch at TSC 0, as the monitor read the RTC (0: unknown).
    pub wall_ns: u64,
    /// Its recovery policy's name; `None`: not recovered (then the kernel keeps no checkpoints).
    pub recovery: Option<&'a str>,
    /// The APIC ids of its other cores, comma-separated (a sandbox on several cores; its kernel starts them
    /// with INIT and start-up IPIs, which the monitor emulates).
    pub other_cores: Option<&'a str>,
    pub nic: Option<NicArgs>,
    pub attack: Option<AttackTargets>,
}

impl<'a> SandboxArgs<'a> {
    /// The APIC ids of the sandbox's other cores (checked numbers: the parser refuses anything else).
    pub fn other_core_apic_ids(&self) -> impl Iterator<Item = u32> + 'a {
        self.other_cores.unwrap_or("").split(',').filter_map(|w| number(w).and_then(|n| u32::try_from(n).ok()))
    }
}

/// A boot argument whose value is not what its key needs (the word as written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadArg<'a>(pub &'a str);

/// Every key the monitor writes for a sandbox. `recovery` is shared with the monitor's own command line
/// (where it lists a policy per sandbox), so the kernel's parser also keeps it.
pub const KEYS: [&str; 15] =
    ["sandbox", "shared", "tsc_hz", "lapic_hz", "wall_ns", "incarnation", "recovery", "other_cores", "nic_mmio", "nic_dma", "nic_index", "nic_claims", "peer", "vmcs", "ept"];

/// A number as the command line writes it: decimal, or hexadecimal with `0x`.
pub fn number(v: &str) -> Option<u64> {
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

impl fmt::Display for SandboxArgs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sandbox={} shared=0x{:x} tsc_hz={} lapic_hz={}", self.sandbox, self.shared, self.tsc_hz, self.lapic_hz)?;
        if self.wall_ns != 0 {
            write!(f, " wall_ns={}", self.wall_ns)?;
        }
        if self.incarnation > 0 {
            write!(f, " incarnation={}", self.incarnation)?;
        }
        if let Some(policy) = self.recovery {
            write!(f, " recovery={policy}")?;
        }
        if let Some(cores) = self.other_cores {
            write!(f, " other_cores={cores}")?;
        }
        if let Some(n) = self.nic {
            write!(f, " nic_mmio=0x{:x} nic_dma=0x{:x} nic_index={} nic_claims=0x{:x}", n.mmio, n.dma, n.index, n.claims)?;
        }
        if let Some(a) = self.attack {
            write!(f, " peer=0x{:x} vmcs=0x{:x} ept=0x{:x}", a.peer, a.vmcs, a.stage2)?;
        }
        Ok(())
    }
}

/// Collects the boot arguments word by word; [`finish`](Self::finish) says whether this kernel is a sandbox.
#[derive(Debug, Default, Clone, Copy)]
pub struct SandboxArgsParser<'a> {
    sandbox: Option<u32>,
    shared: Option<u64>,
    tsc_hz: Option<u64>,
    lapic_hz: Option<u64>,
    wall_ns: u64,
    incarnation: u32,
    recovery: Option<&'a str>,
    other_cores: Option<&'a str>,
    nic_mmio: Option<u64>,
    nic_dma: Option<u64>,
    nic_index: Option<u64>,
    nic_claims: Option<u64>,
    peer: Option<u64>,
    vmcs: Option<u64>,
    ept: Option<u64>,
}

impl<'a> SandboxArgsParser<'a> {
    /// Take `key=value` if it is a boot argument: `Ok(true)`; `Ok(false)` for any other key.
    pub fn accept(&mut self, key: &str, value: &'a str, word: &'a str) -> Result<bool, BadArg<'a>> {
        let num = || number(value).ok_or(BadArg(word));
        match key {
            "sandbox" => self.sandbox = Some(u32::try_from(num()?).map_err(|_| BadArg(word))?),
            "shared" => self.shared = Some(num()?),
            "tsc_hz" => self.tsc_hz = Some(num()?),
            "lapic_hz" => self.lapic_hz = Some(num()?),
            "wall_ns" => self.wall_ns = num()?,
            "incarnation" => self.incarnation = u32::try_from(num()?).map_err(|_| BadArg(word))?,
            "recovery" => self.recovery = Some(value),
            "other_cores" => {
                if value.is_empty() || value.split(',').any(|w| number(w).and_then(|n| u32::try_from(n).ok()).is_none()) {
                    return Err(BadArg(word));
                }
                self.other_cores = Some(value);
            }
            "nic_mmio" => self.nic_mmio = Some(num()?),
            "nic_dma" => self.nic_dma = Some(num()?),
            "nic_index" => self.nic_index = Some(num()?),
            "nic_claims" => self.nic_claims = Some(num()?),
            "peer" => self.peer = Some(num()?),
            "vmcs" => self.vmcs = Some(num()?),
            "ept" => self.ept = Some(num()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The sandbox's arguments, if `sandbox=` was given. Parts the monitor always writes together come as one
    /// (a NIC role needs its window, region, index and lock claims); missing timer rates are 0 (the kernel then
    /// calibrates itself); a policy of `none` is no policy.
    pub fn finish(self) -> Option<SandboxArgs<'a>> {
        let nic = match (self.nic_mmio, self.nic_dma, self.nic_index, self.nic_claims) {
            (Some(mmio), Some(dma), Some(index), Some(claims)) => Some(NicArgs { mmio, dma, index, claims }),
            _ => None,
        };
        let attack = match (self.peer, self.vmcs, self.ept) {
            (Some(peer), Some(vmcs), Some(stage2)) => Some(AttackTargets { peer, vmcs, stage2 }),
            _ => None,
        };
        Some(SandboxArgs {
            sandbox: self.sandbox?,
            shared: self.shared.unwrap_or(0),
            tsc_hz: self.tsc_hz.unwrap_or(0),
            lapic_hz: self.lapic_hz.unwrap_or(0),
            wall_ns: self.wall_ns,
            incarnation: self.incarnation,
            recovery: self.recovery.filter(|r| *r != "none"),
            other_cores: self.other_cores,
            nic,
            attack,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Option<SandboxArgs<'_>>, BadArg<'_>> {
        let mut p = SandboxArgsParser::default();
        for word in line.split_whitespace() {
            let (k, v) = word.split_once('=').unwrap();
            assert!(p.accept(k, v, word)?, "{word} is a boot argument");
        }
        Ok(p.finish())
    }

    #[test]
    fn every_field_round_trips() {
        let full = SandboxArgs {
            sandbox: 3,
            shared: 0xE000_0000,
            tsc_hz: 2_000_000_000,
            lapic_hz: 1_000_000_000,
            wall_ns: 1_796_296_278_000_000_000,
            incarnation: 7,
            recovery: Some("driver"),
            other_cores: Some("2,3"),
            nic: Some(NicArgs { mmio: 0xFEBC_0000, dma: 0x200_0000, index: 2, claims: 0x300_0000 }),
            attack: Some(AttackTargets { peer: 0x1_0000_0000, vmcs: 0x3000, stage2: 0x4000 }),
        };
        let line = std::format!("{full}");
        assert_eq!(parse(&line), Ok(Some(full)));
        // Every key is written once, and only the keys listed.
        let keys: std::vec::Vec<&str> = line.split(' ').map(|w| w.split_once('=').unwrap().0).collect();
        assert_eq!(keys, KEYS);
        assert_eq!(full.other_core_apic_ids().collect::<std::vec::Vec<_>>(), [2, 3]);
        let minimal = SandboxArgs { incarnation: 0, wall_ns: 0, recovery: None, other_cores: None, nic: None, attack: None, ..full };
        assert_eq!(minimal.other_core_apic_ids().count(), 0);
        assert_eq!(parse(&std::format!("{minimal}")), Ok(Some(minimal)));
    }

    #[test]
    fn other_keys_are_not_taken_and_bad_values_are_named() {
        let mut p = SandboxArgsParser::default();
        assert_eq!(p.accept("mode", "vt", "mode=vt"), Ok(false));
        assert_eq!(p.accept("sandbox", "x", "sandbox=x"), Err(BadArg("sandbox=x")));
        assert_eq!(p.accept("sandbox", "99999999999", "sandbox=99999999999"), Err(BadArg("sandbox=99999999999")));
        assert_eq!(p.accept("incarnation", "-1", "incarnation=-1"), Err(BadArg("incarnation=-1")));
        assert_eq!(p.accept("other_cores", "2,x", "other_cores=2,x"), Err(BadArg("other_cores=2,x")));
        assert_eq!(p.accept("other_cores", "", "other_cores="), Err(BadArg("other_cores=")));
        assert_eq!(p.finish(), None, "no sandbox= given: not a sandbox");
        assert_eq!(parse("sandbox=1 recovery=none").unwrap().unwrap().recovery, None);
        assert_eq!(number("0x1f"), Some(31));
        assert_eq!(number("12"), Some(12));
    }
}
