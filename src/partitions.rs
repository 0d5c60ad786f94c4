//! The partition file (`--config FILE`, docs/partitions.md): the VT build's sandboxes laid out in TOML, checked
//! before anything is built. Every problem is reported with the file's line and column and a hint; the runner
//! exits with status 2 when there is one. What passes becomes the monitor's partition description (a boot
//! module, `questv_vmx::partition_spec`), which the monitor checks again against the machine it finds.
#![forbid(unsafe_code)]

use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    watchdog_ms: Option<Spanned<u64>>,
    #[serde(default)]
    channels: Vec<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    sandbox: Vec<Spanned<SandboxToml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxToml {
    name: Spanned<String>,
    cpus: Spanned<Vec<Spanned<u32>>>,
    #[serde(default)]
    memory_mib: Option<Spanned<u64>>,
    #[serde(default)]
    run: Option<Spanned<String>>,
    #[serde(default)]
    recovery: Option<Spanned<String>>,
    #[serde(default)]
    console_input: Option<Spanned<bool>>,
    #[serde(default)]
    nic: Option<Spanned<bool>>,
    #[serde(default)]
    ip: Option<Spanned<String>>,
    #[serde(default)]
    mac: Option<Spanned<String>>,
    #[serde(default)]
    vcpus: Vec<Spanned<VcpuToml>>,
    #[serde(default)]
    watchdog_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VcpuToml {
    class: Spanned<String>,
    budget_us: Spanned<u64>,
    period_us: Spanned<u64>,
}

/// One problem in a partition file: where, what, and what to do about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)?;
        if !self.hint.is_empty() {
            write!(f, "\n  hint: {}", self.hint)?;
        }
        Ok(())
    }
}

/// What the file is checked against: the machine the runner will boot, and the programs it will carry.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpus: u32,
    pub mem_mib: u64,
    /// Programs in the image's /bin (the ramdisk's, `--add`ed files, busybox applets when busybox is there).
    pub programs: Vec<String>,
}

/// The monitor keeps this much of the machine's memory for itself (second-stage tables, stacks), besides what the
/// kernel image and firmware take: a file may give the sandboxes the rest.
pub const MONITOR_RESERVE_MIB: u64 = 64;

/// The periods the kernel's VCPUs take (`sched::MIN_PERIOD_US`, `MAX_PERIOD_US`).
pub const VCPU_MIN_PERIOD_US: u64 = 100;
pub const VCPU_MAX_PERIOD_US: u64 = 10_000_000;

/// Recovery policies a sandbox may name (docs/recovery.md).
pub const POLICIES: [&str; 4] = ["none", "restart", "driver", "remote"];

/// A VCPU a sandbox creates at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vcpu {
    pub class: String,
    pub budget_us: u64,
    pub period_us: u64,
}

/// One sandbox of a checked file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub name: String,
    pub cpus: Vec<u32>,
    pub memory_mib: Option<u64>,
    pub run: Option<String>,
    pub recovery: String,
    pub console_input: bool,
    pub nic: bool,
    /// The NIC sharer's IPv4 address and MAC (`None`: the monitor's choice, docs/network.md).
    pub ip: Option<[u8; 4]>,
    pub mac: Option<[u8; 6]>,
    pub vcpus: Vec<Vcpu>,
    /// Its own watchdog period (`None`: the file's top-level one, if any).
    pub watchdog_ms: Option<u64>,
}

/// A checked partition file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitions {
    pub watchdog_ms: Option<u64>,
    pub sandboxes: Vec<Sandbox>,
    /// Channel pairs, as sandbox indexes into `sandboxes`.
    pub channels: Vec<(usize, usize)>,
}

/// NIC sharer `j`'s address when no file gives one: 10.0.0.2 + j, as the monitor chooses it
/// (`questv_kernel::net::sharer_ip`).
pub fn default_sharer_ip(j: usize) -> [u8; 4] {
    [10, 0, 0, 2 + j as u8]
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

struct Problems<'a> {
    text: &'a str,
    list: Vec<Problem>,
}

impl Problems<'_> {
    fn add(&mut self, span: Range<usize>, message: impl Into<String>, hint: impl Into<String>) {
        let (line, column) = line_column(self.text, span.start);
        self.list.push(Problem { line, column, message: message.into(), hint: hint.into() });
    }
}

/// Rate-monotonic bound for `n` tasks (Liu and Layland): n (2^(1/n) - 1).
pub fn rate_monotonic_bound(n: usize) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let n = n as f64;
    n * (2f64.powf(1.0 / n) - 1.0)
}

/// Parse and check a partition file against `machine`; every problem found, in file order.
pub fn check(text: &str, machine: &Machine) -> Result<Partitions, Vec<Problem>> {
    let mut p = Problems { text, list: Vec::new() };
    let file: FileToml = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim_end().to_string();
            let hint = if message.contains("unknown field `channels`") || message.contains("unknown field `watchdog_ms`") {
                "in TOML a key after a [[sandbox]] header belongs to that sandbox: put channels and watchdog_ms before the first [[sandbox]]"
            } else {
                "see docs/partitions.md for every key and its type"
            };
            p.add(span, message, hint);
            return Err(p.list);
        }
    };
    if file.sandbox.is_empty() {
        p.add(0..0, "no sandbox: the file names none", "add a [[sandbox]] table with a name and cpus (docs/partitions.md)");
    }
    let names: Vec<String> = file.sandbox.iter().map(|s| s.get_ref().name.get_ref().clone()).collect();
    let mut used_cores: Vec<(u32, String)> = Vec::new();
    let mut used_ids: Vec<(String, String)> = Vec::new();
    let mut memory_total = 0u64;
    let mut sandboxes = Vec::new();
    for (i, s) in file.sandbox.iter().enumerate() {
        let s = s.get_ref();
        let name = s.name.get_ref();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            p.add(s.name.span(), format!("sandbox name {name:?} is not a plain word"), "use letters, digits, `_` and `-`");
        }
        if names[..i].contains(name) {
            p.add(s.name.span(), format!("sandbox name {name:?} is used twice"), "give every sandbox its own name");
        }
        // In order: the first (lowest) core is the one the sandbox starts on and is numbered by.
        let mut cpus: Vec<u32> = s.cpus.get_ref().iter().map(|c| *c.get_ref()).collect();
        cpus.sort();
        cpus.dedup();
        if cpus.is_empty() {
            p.add(s.cpus.span(), format!("sandbox {name:?} has no cores"), "cpus = [0] gives it core 0");
        }
        for c in s.cpus.get_ref() {
            let core = *c.get_ref();
            if core >= machine.cpus {
                p.add(c.span(), format!("core {core} does not exist: the machine has {} (cores 0-{})", machine.cpus, machine.cpus - 1), format!("boot with --cpus {} or name another core", core + 1));
            } else if let Some((_, owner)) = used_cores.iter().find(|(k, _)| *k == core) {
                p.add(c.span(), format!("core {core} is already sandbox {owner:?}'s"), "a core belongs to one sandbox only");
            } else {
                used_cores.push((core, name.clone()));
            }
        }
        if let Some(m) = &s.memory_mib {
            let mib = *m.get_ref();
            if mib < 32 {
                p.add(m.span(), format!("memory_mib = {mib} is too small for a sandbox kernel"), "give it at least 32 MiB");
            }
            memory_total += mib;
        }
        if let Some(run) = &s.run {
            let text = run.get_ref();
            match text.split_whitespace().next() {
                None => p.add(run.span(), "run is empty", "name a program of /bin, e.g. run = \"forkwait 1000\""),
                Some(prog) => {
                    let prog = if prog == "percpu" { text.split_whitespace().nth(1).unwrap_or("") } else { prog };
                    let name = prog.rsplit('/').next().unwrap_or(prog);
                    if !machine.programs.iter().any(|x| x == name) {
                        p.add(run.span(), format!("unknown program {prog:?}: not in the image's /bin"), format!("give it with --add PATH; the image has {}", short_list(&machine.programs)));
                    }
                    if text.contains(['"', '\\', '$', '\'', '|', '&', ';', '<', '>', '(', ')', '`', '*', '?']) {
                        p.add(run.span(), "run holds shell syntax: a sandbox's run is a program and its arguments", "put the script in a file (--add) and run it with sh FILE");
                    }
                }
            }
        }
        let recovery = match &s.recovery {
            Some(r) if !POLICIES.contains(&r.get_ref().as_str()) => {
                p.add(r.span(), format!("unknown recovery policy {:?}", r.get_ref()), format!("one of {}", POLICIES.join(", ")));
                String::from("none")
            }
            Some(r) => r.get_ref().clone(),
            None => String::from("none"),
        };
        let nic = s.nic.as_ref().is_some_and(|n| *n.get_ref());
        if nic && cpus.len() > 1 {
            // The monitor's guard of the NIC's tail pages flushes one core per sharer (docs/partitions.md).
            let span = s.nic.as_ref().map_or(0..0, |n| n.span());
            p.add(span, format!("nic = true on sandbox {name:?}, which has {} cores: a NIC sharer runs on one core so far", cpus.len()), "give the network service its own one-core sandbox");
        }
        if let Some(r) = &s.recovery {
            if (recovery == "driver" || recovery == "remote") && !nic {
                p.add(r.span(), format!("recovery = {recovery:?} recovers the network service: sandbox {name:?} does not share the NIC"), "add nic = true, or use restart");
            }
        }
        let mut ip = None;
        if let Some(v) = &s.ip {
            match parse_ip(v.get_ref()) {
                Some(a) if a[..3] == [10, 0, 0] && (2..=254).contains(&a[3]) => ip = Some(a),
                Some(_) => p.add(v.span(), format!("ip = {:?} is outside the guests' network", v.get_ref()), "10.0.0.2 to 10.0.0.254 (10.0.0.1 is the host's end, docs/network.md)"),
                None => p.add(v.span(), format!("ip = {:?} is not an IPv4 address", v.get_ref()), "four numbers, e.g. \"10.0.0.7\""),
            }
        }
        let mut mac = None;
        if let Some(v) = &s.mac {
            match parse_mac(v.get_ref()) {
                Some(m) if crate::peer::wire::is_unicast_mac(&m) => mac = Some(m),
                Some(_) => p.add(v.span(), format!("mac = {:?} is a multicast or zero address", v.get_ref()), "a unicast address, e.g. \"02:51:56:00:00:07\" (locally administered)"),
                None => p.add(v.span(), format!("mac = {:?} is not a MAC address", v.get_ref()), "six hex bytes with colons, e.g. \"02:51:56:00:00:07\""),
            }
        }
        for (key, v) in [("ip", &s.ip), ("mac", &s.mac)] {
            let Some(v) = v else { continue };
            if !nic {
                p.add(v.span(), format!("{key} without the NIC: sandbox {name:?} does not share it"), "add nic = true");
            }
            let text = v.get_ref().to_ascii_lowercase();
            if let Some((_, owner)) = used_ids.iter().find(|(t, _)| *t == text) {
                p.add(v.span(), format!("{key} {:?} is already sandbox {owner:?}'s", v.get_ref()), "every sharer needs its own address");
            }
            used_ids.push((text, name.clone()));
        }
        let mut vcpus = Vec::new();
        for v in &s.vcpus {
            let v = v.get_ref();
            let class = v.class.get_ref();
            if class != "main" && class != "io" {
                p.add(v.class.span(), format!("unknown VCPU class {class:?}"), "main (budgeted, rate-monotonic) or io");
            }
            let (b, t) = (*v.budget_us.get_ref(), *v.period_us.get_ref());
            if t == 0 || b == 0 || b > t {
                p.add(v.budget_us.span(), format!("budget_us = {b} with period_us = {t}: a budget must be above 0 and at most its period"), "e.g. budget_us = 2000, period_us = 10000");
            } else if !(VCPU_MIN_PERIOD_US..=VCPU_MAX_PERIOD_US).contains(&t) {
                p.add(v.period_us.span(), format!("period_us = {t}: the kernel takes periods from {VCPU_MIN_PERIOD_US} us to {VCPU_MAX_PERIOD_US} us"), "e.g. period_us = 10000");
            }
            vcpus.push(Vcpu { class: class.clone(), budget_us: b, period_us: t });
        }
        let main: Vec<&Vcpu> = vcpus.iter().filter(|v| v.class == "main" && v.period_us > 0).collect();
        let utilization: f64 = main.iter().map(|v| v.budget_us as f64 / v.period_us as f64).sum();
        let bound = rate_monotonic_bound(main.len());
        if !main.is_empty() && utilization > bound + 1e-9 {
            let span = s.vcpus.first().map_or(0..0, |v| v.span());
            p.add(span, format!("sandbox {name:?}'s main VCPUs use {:.3} of the core, above the rate-monotonic bound {:.3} for {}", utilization, bound, main.len()), "lower a budget or lengthen a period");
        }
        let watchdog_ms = s.watchdog_ms.as_ref().map(|w| (*w.get_ref(), w.span()));
        if let Some((ms, span)) = watchdog_ms.clone() {
            if !(50..=600_000).contains(&ms) {
                p.add(span, format!("watchdog_ms = {ms}: a sandbox's watchdog period is 50 ms to 600 s"), "the silence after which the monitor calls the sandbox hung");
            }
        }
        sandboxes.push(Sandbox {
            name: name.clone(),
            cpus,
            memory_mib: s.memory_mib.as_ref().map(|m| *m.get_ref()),
            run: s.run.as_ref().map(|r| r.get_ref().clone()),
            recovery,
            console_input: s.console_input.as_ref().is_none_or(|c| *c.get_ref()),
            nic,
            ip,
            mac,
            vcpus,
            watchdog_ms: watchdog_ms.map(|(ms, _)| ms),
        });
    }
    let available = machine.mem_mib.saturating_sub(MONITOR_RESERVE_MIB);
    if memory_total > available {
        let span = file.sandbox.iter().filter_map(|s| s.get_ref().memory_mib.as_ref()).last().map_or(0..0, |m| m.span());
        p.add(span, format!("the sandboxes ask for {memory_total} MiB: the machine has {} MiB, {available} of them for sandboxes", machine.mem_mib), format!("boot with --mem {} or give less", memory_total + MONITOR_RESERVE_MIB));
    }
    let mut channels = Vec::new();
    for c in &file.channels {
        let ends = c.get_ref();
        if ends.len() != 2 {
            p.add(c.span(), format!("a channel joins two sandboxes: this one names {}", ends.len()), "channels = [[\"control\", \"logger\"]]");
            continue;
        }
        let mut idx = Vec::new();
        for e in ends {
            match names.iter().position(|n| n == e.get_ref()) {
                Some(i) => idx.push(i),
                None => p.add(e.span(), format!("channel to unknown sandbox {:?}", e.get_ref()), format!("the sandboxes are {}", short_list(&names))),
            }
        }
        if idx.len() == 2 {
            if idx[0] == idx[1] {
                p.add(c.span(), format!("a channel from sandbox {:?} to itself", names[idx[0]]), "a channel joins two different sandboxes");
            } else if channels.iter().any(|&(a, b)| (a, b) == (idx[0], idx[1]) || (b, a) == (idx[0], idx[1])) {
                p.add(c.span(), "this channel is listed twice", "list each pair once (a channel goes both ways)");
            } else {
                channels.push((idx[0], idx[1]));
            }
        }
    }
    if p.list.is_empty() {
        Ok(Partitions { watchdog_ms: file.watchdog_ms.map(|w| *w.get_ref()), sandboxes, channels })
    } else {
        p.list.sort_by_key(|x| (x.line, x.column));
        Err(p.list)
    }
}

fn parse_ip(text: &str) -> Option<[u8; 4]> {
    text.parse::<std::net::Ipv4Addr>().ok().map(|a| a.octets())
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = text.split(':').map(|p| if p.len() == 2 { u8::from_str_radix(p, 16).ok() } else { None }).collect::<Option<_>>()?;
    parts.try_into().ok()
}

fn short_list(items: &[String]) -> String {
    if items.len() <= 12 {
        items.join(", ")
    } else {
        format!("{}, ... ({} in all)", items[..12].join(", "), items.len())
    }
}

impl Partitions {
    /// The sandbox on core `core`, if one names it.
    pub fn on_core(&self, core: u32) -> Option<&Sandbox> {
        self.sandboxes.iter().find(|s| s.cpus.contains(&core))
    }

    /// The monitor's partition description (`questv_vmx::partition_spec`): one line per core of the machine —
    /// its sandbox, or `parked` — and one per channel, naming sandboxes by their core.
    pub fn spec(&self, cpus: u32) -> String {
        let mut out = String::new();
        for core in 0..cpus {
            match self.on_core(core) {
                Some(s) if s.cpus[0] != core => out.push_str(&format!("member {core} of={}\n", s.cpus[0])),
                Some(s) => {
                    out.push_str(&format!("sandbox {core} name={} recovery={} input={}", s.name, s.recovery, u8::from(s.console_input)));
                    if let Some(m) = s.memory_mib {
                        out.push_str(&format!(" memory_mib={m}"));
                    }
                    if let Some(w) = s.watchdog_ms {
                        out.push_str(&format!(" watchdog_ms={w}"));
                    }
                    if let Some(a) = s.ip {
                        out.push_str(&format!(" ip={}", std::net::Ipv4Addr::from(a)));
                    }
                    if let Some(m) = s.mac {
                        out.push_str(&format!(" mac={}", crate::peer::wire::format_mac(&m)));
                    }
                    if !s.vcpus.is_empty() {
                        let list: Vec<String> = s.vcpus.iter().map(|v| format!("{}:{}:{}", v.class, v.budget_us, v.period_us)).collect();
                        out.push_str(&format!(" vcpus={}", list.join(",")));
                    }
                    if let Some(r) = &s.run {
                        out.push_str(&format!(" run={r}"));
                    }
                    out.push('\n');
                }
                None => out.push_str(&format!("parked {core}\n")),
            }
        }
        for &(a, b) in &self.channels {
            out.push_str(&format!("channel {} {}\n", self.sandboxes[a].cpus[0], self.sandboxes[b].cpus[0]));
        }
        out
    }

    /// `recovery=P0,P1,..` for the monitor's command line: one policy per core (parked cores: none).
    pub fn recovery_list(&self, cpus: u32) -> String {
        (0..cpus).map(|c| self.on_core(c).map_or("none", |s| s.recovery.as_str())).collect::<Vec<_>>().join(",")
    }

    /// The cores of the sandboxes that share the NIC (`nic=..` on the monitor's command line), in core order:
    /// sharer j is the j-th.
    pub fn nic_sharers(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.sandboxes.iter().filter(|s| s.nic).map(|s| s.cpus[0]).collect();
        v.sort();
        v
    }

    /// The IPv4 address of NIC sharer `j`: the file's, or the monitor's default.
    pub fn sharer_ip(&self, j: usize) -> [u8; 4] {
        self.nic_sharers().get(j).and_then(|&c| self.on_core(c)).and_then(|s| s.ip).unwrap_or(default_sharer_ip(j))
    }

}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine { cpus: 4, mem_mib: 1024, programs: ["forkwait", "msgtest", "netserve", "sh", "busybox"].iter().map(|s| s.to_string()).collect() }
    }

    fn problems(text: &str) -> Vec<String> {
        check(text, &machine()).err().unwrap_or_default().iter().map(|p| p.to_string()).collect()
    }

    const PAPER: &str = r#"
# The paper's layout: four one-core sandboxes.
channels = [["s0", "s1"]]
watchdog_ms = 500

[[sandbox]]
name = "s0"
cpus = [0]
run = "forkwait 1000"

[[sandbox]]
name = "s1"
cpus = [1]
run = "msgtest 100"
recovery = "restart"
watchdog_ms = 200

[[sandbox]]
name = "s2"
cpus = [2]
vcpus = [{ class = "main", budget_us = 2000, period_us = 10000 }, { class = "io", budget_us = 500, period_us = 10000 }]

[[sandbox]]
name = "s3"
cpus = [3]
nic = true
ip = "10.0.0.9"
mac = "02:AA:00:00:00:09"
recovery = "remote"
console_input = false
"#;

    #[test]
    fn a_good_file_becomes_the_monitors_description() {
        let p = check(PAPER, &machine()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.sandboxes.len(), 4);
        assert_eq!(p.watchdog_ms, Some(500));
        assert_eq!(p.channels, vec![(0, 1)]);
        assert_eq!(p.recovery_list(4), "none,restart,none,remote");
        assert_eq!(p.nic_sharers(), vec![3]);
        assert_eq!((p.sharer_ip(0), p.sharer_ip(1)), ([10, 0, 0, 9], [10, 0, 0, 3]));
        assert_eq!(
            p.spec(4),
            "sandbox 0 name=s0 recovery=none input=1 run=forkwait 1000\nsandbox 1 name=s1 recovery=restart input=1 watchdog_ms=200 run=msgtest 100\nsandbox 2 name=s2 recovery=none input=1 vcpus=main:2000:10000,io:500:10000\nsandbox 3 name=s3 recovery=remote input=0 ip=10.0.0.9 mac=02:aa:00:00:00:09\nchannel 0 1\n"
        );
        // A core no sandbox names is parked.
        let two = "[[sandbox]]\nname = \"a\"\ncpus = [1]\n";
        assert_eq!(check(two, &machine()).unwrap().spec(3), "parked 0\nsandbox 1 name=a recovery=none input=1\nparked 2\n");
    }

    #[test]
    fn a_sandbox_on_several_cores_is_numbered_by_its_lowest() {
        let text = "channels = [[\"wide\", \"one\"]]\n[[sandbox]]\nname = \"one\"\ncpus = [0]\n\n[[sandbox]]\nname = \"wide\"\ncpus = [3, 1]\nrun = \"percpu forkwait 10\"\n";
        let p = check(text, &machine()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.sandboxes[1].cpus, vec![1, 3]);
        assert_eq!(p.spec(4), "sandbox 0 name=one recovery=none input=1\nsandbox 1 name=wide recovery=none input=1 run=percpu forkwait 10\nparked 2\nmember 3 of=1\nchannel 1 0\n");
        let got = problems("[[sandbox]]\nname = \"a\"\ncpus = [1, 1]\nnic = true\n");
        assert!(got.iter().any(|p| p.starts_with("3:12: core 1 is already sandbox \"a\"'s")), "{got:#?}");
        let got = problems("[[sandbox]]\nname = \"a\"\ncpus = [1]\nwatchdog_ms = 5\n");
        assert!(got.iter().any(|p| p.starts_with("4:15: watchdog_ms = 5: a sandbox's watchdog period is 50 ms to 600 s")), "{got:#?}");
        let got = problems("[[sandbox]]\nname = \"a\"\ncpus = [1, 2]\nnic = true\n");
        assert!(got.iter().any(|p| p.starts_with("4:7: nic = true on sandbox \"a\", which has 2 cores")), "{got:#?}");
    }

    #[test]
    fn every_problem_names_its_line_and_column() {
        let text = "[[sandbox]]\nname = \"a\"\ncpus = [0, 5]\n\n[[sandbox]]\nname = \"a\"\ncpus = [0]\nrun = \"nosuch 3\"\nrecovery = \"sometimes\"\n";
        let got = problems(text);
        assert!(got.iter().any(|p| p.starts_with("3:12: core 5 does not exist: the machine has 4") && p.contains("hint: boot with --cpus 6")), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("6:8: sandbox name \"a\" is used twice")), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("7:9: core 0 is already sandbox \"a\"'s")), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("8:7: unknown program \"nosuch\"") && p.contains("--add PATH")), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("9:12: unknown recovery policy \"sometimes\"") && p.contains("none, restart, driver, remote")), "{got:#?}");
    }

    #[test]
    fn syntax_types_and_unknown_keys_are_problems_too() {
        let got = problems("[[sandbox]]\nname = \"a\"\ncpus = 0\n");
        assert!(got[0].starts_with("3:8: invalid type"), "{got:#?}");
        let got = problems("[[sandbox]]\nname = \"a\"\ncpus = [0]\ncolour = \"red\"\n");
        assert!(got[0].starts_with("4:1: unknown field `colour`"), "{got:#?}");
        let got = problems("[[sandbox]\n");
        assert!(got[0].starts_with("1:"), "{got:#?}");
        let got = problems("[[sandbox]]\nname = \"a\"\ncpus = [0]\nchannels = []\n");
        assert!(got[0].contains("unknown field `channels`") && got[0].contains("before the first [[sandbox]]"), "{got:#?}");
        assert_eq!(problems("")[0], "1:1: no sandbox: the file names none\n  hint: add a [[sandbox]] table with a name and cpus (docs/partitions.md)");
    }

    #[test]
    fn channels_memory_nic_and_vcpus_are_checked() {
        let text = "channels = [[\"a\", \"ghost\"], [\"a\", \"a\"], [\"a\", \"b\"], [\"b\", \"a\"]]\n\n[[sandbox]]\nname = \"a\"\ncpus = [0]\nmemory_mib = 600\nrecovery = \"remote\"\n\n[[sandbox]]\nname = \"b\"\ncpus = [1]\nmemory_mib = 600\nvcpus = [{ class = \"main\", budget_us = 600, period_us = 1000 }, { class = \"main\", budget_us = 300, period_us = 1000 }, { class = \"io\", budget_us = 1, period_us = 50 }]\n";
        let got = problems(text);
        assert!(got.iter().any(|p| p.starts_with("1:19: channel to unknown sandbox \"ghost\"") && p.contains("the sandboxes are a, b")), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("1:29: a channel from sandbox \"a\" to itself")), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("1:53: this channel is listed twice")), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("7:12: recovery = \"remote\" recovers the network service")), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("12:14: the sandboxes ask for 1200 MiB: the machine has 1024 MiB, 960 of them") && p.contains("--mem 1264")), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("13:163: period_us = 50: the kernel takes periods from 100 us")), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("13:10: sandbox \"b\"'s main VCPUs use 0.900 of the core, above the rate-monotonic bound 0.828 for 2")), "{got:#?}");
    }

    #[test]
    fn addresses_are_checked() {
        let text = "[[sandbox]]\nname = \"a\"\ncpus = [0]\nnic = true\nip = \"10.0.0.1\"\nmac = \"03:00:00:00:00:01\"\n\n[[sandbox]]\nname = \"b\"\ncpus = [1]\nip = \"10.0.0.7\"\nmac = \"zz\"\n\n[[sandbox]]\nname = \"c\"\ncpus = [2]\nnic = true\nip = \"10.0.0.7\"\n";
        let got = problems(text);
        assert!(got.iter().any(|p| p.starts_with("5:6: ip = \"10.0.0.1\" is outside the guests' network")), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("6:7: mac = \"03:00:00:00:00:01\" is a multicast")), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("11:6: ip without the NIC: sandbox \"b\"")), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("12:7: mac = \"zz\" is not a MAC address")), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("18:6: ip \"10.0.0.7\" is already sandbox \"b\"'s")), "{got:#?}");
    }

    #[test]
    fn the_rate_monotonic_bound() {
        assert!((rate_monotonic_bound(1) - 1.0).abs() < 1e-12);
        assert!((rate_monotonic_bound(2) - 0.8284).abs() < 1e-4);
        assert!((rate_monotonic_bound(1000) - std::f64::consts::LN_2).abs() < 1e-3);
    }
}
