//! The partition description the monitor reads (the `partition` boot module, written by the runner from a
//! checked partition file: docs/partitions.md). One line per core of the machine the file was checked for —
//! `sandbox CORE name=NAME recovery=POLICY input=0|1 [memory_mib=N] [watchdog_ms=N] [ip=A.B.C.D] [mac=XX:..] [vcpus=LIST]
//! [run=PROGRAM ARGS]`, `member CORE of=CORE` (another core of the sandbox on the named core, which is its
//! first) or `parked CORE` — and one per
//! channel the sandboxes may open, `channel CORE CORE`. The monitor checks it again against the machine it
//! finds (`check`) and refuses to launch anything if it does not fit. Host-tested.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    pub name: String,
    pub recovery: String,
    /// Takes console input (with `console=input`).
    pub input: bool,
    /// Its memory, MiB (`None`: an even share).
    pub memory_mib: Option<u64>,
    /// VCPUs it creates at start, as the kernel's `vcpus=` option takes them (`main:2000:10000,...`).
    pub vcpus: Option<String>,
    /// As a NIC sharer: its IPv4 address and MAC (`None`: the monitor's choice).
    pub ip: Option<[u8; 4]>,
    pub mac: Option<[u8; 6]>,
    /// Its own watchdog period, ms (`None`: the machine-wide one).
    pub watchdog_ms: Option<u64>,
    pub run: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Core {
    Sandbox(SandboxSpec),
    /// Another core of the sandbox whose first core is the one named (a sandbox is numbered by that core).
    Member(u32),
    Parked,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Spec {
    /// Indexed by core.
    pub cores: Vec<Core>,
    pub channels: Vec<(u32, u32)>,
}

impl Spec {
    pub fn sandbox(&self, core: u32) -> Option<&SandboxSpec> {
        match self.cores.get(core as usize) {
            Some(Core::Sandbox(s)) => Some(s),
            _ => None,
        }
    }

    pub fn parked(&self, core: u32) -> bool {
        matches!(self.cores.get(core as usize), Some(Core::Parked))
    }

    /// The sandbox core `core` belongs to (its first core's number; a core of no sandbox is its own).
    pub fn owner(&self, core: u32) -> u32 {
        match self.cores.get(core as usize) {
            Some(Core::Member(first)) => *first,
            _ => core,
        }
    }

    /// The other cores of the sandbox on `first`, in order.
    pub fn members(&self, first: u32) -> Vec<u32> {
        (0..self.cores.len() as u32).filter(|&c| matches!(self.cores[c as usize], Core::Member(f) if f == first)).collect()
    }

    /// May sandboxes `a` and `b` open a channel between them?
    pub fn channel_allowed(&self, a: u32, b: u32) -> bool {
        self.channels.iter().any(|&(x, y)| (x, y) == (a, b) || (y, x) == (a, b))
    }
}

/// `N` bytes written in `radix`, separated by `sep` (an IPv4 address, a MAC).
fn parse_octets<const N: usize>(text: &str, sep: char, radix: u32) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    let mut parts = text.split(sep);
    for slot in out.iter_mut() {
        *slot = u8::from_str_radix(parts.next()?, radix).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Parse the description; the first malformed line is the error (with its number).
pub fn parse(text: &str) -> Result<Spec, String> {
    let mut spec = Spec::default();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let core = |s: &str| -> Result<u32, String> { s.parse().map_err(|_| format!("line {n}: {s:?} is not a core number")) };
        match word {
            "parked" | "sandbox" | "member" => {
                let (c, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
                let c = core(c)?;
                if c as usize != spec.cores.len() {
                    return Err(format!("line {n}: core {c} out of order (expected core {})", spec.cores.len()));
                }
                if word == "parked" {
                    spec.cores.push(Core::Parked);
                    continue;
                }
                if word == "member" {
                    let first = rest.trim().strip_prefix("of=").ok_or_else(|| format!("line {n}: member {c} names no first core (of=CORE)"))?;
                    let first = core(first)?;
                    if !matches!(spec.cores.get(first as usize), Some(Core::Sandbox(_))) {
                        return Err(format!("line {n}: member {c} of={first}: core {first} is not an earlier sandbox's first core"));
                    }
                    spec.cores.push(Core::Member(first));
                    continue;
                }
                let mut s = SandboxSpec { name: String::new(), recovery: "none".to_string(), input: true, memory_mib: None, vcpus: None, ip: None, mac: None, watchdog_ms: None, run: None };
                while !rest.is_empty() {
                    if let Some(r) = rest.strip_prefix("run=") {
                        s.run = Some(r.trim().to_string()).filter(|r| !r.is_empty());
                        break;
                    }
                    let (kv, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    rest = tail.trim_start();
                    match kv.split_once('=') {
                        Some(("name", v)) => s.name = v.to_string(),
                        Some(("recovery", v)) => s.recovery = v.to_string(),
                        Some(("input", "0")) => s.input = false,
                        Some(("input", "1")) => s.input = true,
                        Some(("vcpus", v)) => s.vcpus = Some(v.to_string()),
                        Some(("ip", v)) => s.ip = Some(parse_octets::<4>(v, '.', 10).ok_or_else(|| format!("line {n}: ip={v:?} is not an IPv4 address"))?),
                        Some(("mac", v)) => s.mac = Some(parse_octets::<6>(v, ':', 16).ok_or_else(|| format!("line {n}: mac={v:?} is not a MAC address"))?),
                        Some(("watchdog_ms", v)) => s.watchdog_ms = Some(v.parse().map_err(|_| format!("line {n}: watchdog_ms={v:?} is not a number"))?),
                        Some(("memory_mib", v)) => s.memory_mib = Some(v.parse().map_err(|_| format!("line {n}: memory_mib={v:?} is not a number"))?),
                        _ => return Err(format!("line {n}: unknown setting {kv:?}")),
                    }
                }
                if s.name.is_empty() {
                    return Err(format!("line {n}: sandbox {c} has no name"));
                }
                spec.cores.push(Core::Sandbox(s));
            }
            "channel" => {
                let (a, b) = rest.split_once(' ').ok_or_else(|| format!("line {n}: a channel names two cores"))?;
                spec.channels.push((core(a)?, core(b.trim())?));
            }
            _ => return Err(format!("line {n}: unknown entry {word:?}")),
        }
    }
    Ok(spec)
}

/// What in the description does not fit a machine with `cpus` cores online: one line per problem (empty: it
/// fits).
pub fn check(spec: &Spec, cpus: u32) -> Vec<String> {
    let mut problems = Vec::new();
    for (core, c) in spec.cores.iter().enumerate().skip(cpus as usize) {
        match c {
            Core::Sandbox(s) => problems.push(format!("sandbox {} is on core {core}: the machine has {cpus} cores online", s.name)),
            Core::Member(first) => {
                let name = spec.sandbox(*first).map_or("?", |s| s.name.as_str());
                problems.push(format!("sandbox {name} is on core {core}: the machine has {cpus} cores online"));
            }
            Core::Parked => {}
        }
    }
    if (spec.cores.len() as u32) < cpus {
        problems.push(format!("the description covers {} cores: the machine has {cpus} online (the runner checked it for another machine)", spec.cores.len()));
    }
    if !spec.cores.iter().take(cpus as usize).any(|c| matches!(c, Core::Sandbox(_))) {
        problems.push(String::from("no sandbox on any core of this machine"));
    }
    for c in spec.cores.iter().take(cpus as usize) {
        if let Core::Sandbox(s) = c {
            if s.watchdog_ms == Some(0) {
                problems.push(format!("sandbox {}: watchdog_ms=0 (its own watchdog needs a period)", s.name));
            }
        }
    }
    for &(a, b) in &spec.channels {
        if spec.sandbox(a).is_none() || spec.sandbox(b).is_none() || a == b {
            problems.push(format!("channel {a} {b}: both ends must be sandboxes, and different ones"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_description_round_trips_what_the_runner_writes() {
        let text = "parked 0\nsandbox 1 name=ctl recovery=restart input=0 memory_mib=64 watchdog_ms=250 ip=10.0.0.9 mac=02:aa:00:00:00:09 vcpus=main:2000:10000 run=forkwait 100 extra\nsandbox 2 name=log recovery=none input=1\nchannel 1 2\n";
        let s = parse(text).unwrap();
        assert!(s.parked(0) && !s.parked(1));
        assert_eq!(s.sandbox(1), Some(&SandboxSpec { name: "ctl".into(), recovery: "restart".into(), input: false, memory_mib: Some(64), vcpus: Some("main:2000:10000".into()), ip: Some([10, 0, 0, 9]), mac: Some([2, 0xaa, 0, 0, 0, 9]), watchdog_ms: Some(250), run: Some("forkwait 100 extra".into()) }));
        assert_eq!(s.sandbox(2).unwrap().run, None);
        assert!(s.channel_allowed(2, 1) && s.channel_allowed(1, 2) && !s.channel_allowed(1, 0));
        assert!(check(&s, 3).is_empty());
    }

    #[test]
    fn a_sandbox_on_several_cores_is_numbered_by_its_first() {
        let s = parse("sandbox 0 name=a\nsandbox 1 name=wide\nmember 2 of=1\nmember 3 of=1\nchannel 0 1\n").unwrap();
        assert_eq!((s.owner(0), s.owner(1), s.owner(2), s.owner(3)), (0, 1, 1, 1));
        assert_eq!(s.members(1), vec![2, 3]);
        assert!(s.members(0).is_empty() && s.sandbox(2).is_none() && !s.parked(2));
        assert!(check(&s, 4).is_empty());
        assert_eq!(check(&s, 3)[0], "sandbox wide is on core 3: the machine has 3 cores online");
        assert_eq!(check(&parse("sandbox 0 name=a watchdog_ms=0\n").unwrap(), 1), vec!["sandbox a: watchdog_ms=0 (its own watchdog needs a period)".to_string()]);
        assert_eq!(parse("member 0 of=0\n"), Err("line 1: member 0 of=0: core 0 is not an earlier sandbox's first core".into()));
        assert_eq!(parse("sandbox 0 name=a\nmember 1 of=2\n"), Err("line 2: member 1 of=2: core 2 is not an earlier sandbox's first core".into()));
        assert_eq!(parse("sandbox 0 name=a\nmember 1\n"), Err("line 2: member 1 names no first core (of=CORE)".into()));
    }

    #[test]
    fn a_description_that_does_not_fit_the_machine_is_refused_line_by_line() {
        let s = parse("sandbox 0 name=a\nsandbox 1 name=b\nsandbox 2 name=c\nchannel 0 2\n").unwrap();
        let p = check(&s, 2);
        assert_eq!(p, vec!["sandbox c is on core 2: the machine has 2 cores online".to_string()]);
        let s = parse("sandbox 0 name=a\n").unwrap();
        assert_eq!(check(&s, 2).len(), 1, "core 1 not covered");
        let s = parse("parked 0\nsandbox 1 name=a\n").unwrap();
        assert_eq!(check(&s, 1), vec!["sandbox a is on core 1: the machine has 1 cores online".to_string(), "no sandbox on any core of this machine".to_string()]);
        let s = parse("sandbox 0 name=a\nparked 1\nchannel 0 1\n").unwrap();
        assert_eq!(check(&s, 2).len(), 1);
    }

    #[test]
    fn malformed_lines_are_named() {
        assert_eq!(parse("sandbox 1 name=a\n"), Err("line 1: core 1 out of order (expected core 0)".into()));
        assert_eq!(parse("sandbox 0 name=a colour=red\n"), Err("line 1: unknown setting \"colour=red\"".into()));
        assert_eq!(parse("sandbox 0 recovery=none\n"), Err("line 1: sandbox 0 has no name".into()));
        assert_eq!(parse("sandbox x name=a\n"), Err("line 1: \"x\" is not a core number".into()));
        assert_eq!(parse("sandbox 0 name=a\nchannel 0\n"), Err("line 2: a channel names two cores".into()));
        assert_eq!(parse("bogus\n"), Err("line 1: unknown entry \"bogus\"".into()));
        assert_eq!(parse("sandbox 0 name=a ip=10.0.0\n"), Err("line 1: ip=\"10.0.0\" is not an IPv4 address".into()));
        assert_eq!(parse("sandbox 0 name=a mac=02:00:00:00:00:00:01\n"), Err("line 1: mac=\"02:00:00:00:00:00:01\" is not a MAC address".into()));
    }
}
