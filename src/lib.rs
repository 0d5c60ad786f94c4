//! questv host runner: builds kernel images, wraps them in a GRUB ISO, boots them headless in QEMU or Bochs,
//! streams the guest's serial console and judges the run from it.
//!
//! The guest speaks a small line protocol on COM1 (docs/architecture.md): `RESULT <name> key=value ...`,
//! `QUESTV DONE status=N`, `KERNEL PANIC ...`. Everything that interprets those lines is pure and unit-tested.

pub mod linux;
pub mod peer;
pub mod ping;
pub mod netfig;
pub mod recoveryfig;
pub mod faults;
pub mod plot;
pub mod paper;
pub mod usercc;
#[path = "cflags.rs"]
pub mod cflags;

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One `RESULT <name> key=value ...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultLine {
    pub name: String,
    pub fields: Vec<(String, String)>,
    /// Who printed it: `None` for the kernel itself (SMP kernel, VT monitor), `Some(n)` for VT sandbox n (the
    /// monitor prints sandbox output as `[sN] ...`).
    pub sandbox: Option<u32>,
}

impl ResultLine {
    /// Printed by the kernel itself (the VT monitor), not relayed from a sandbox.
    pub fn from_monitor(&self) -> bool {
        self.sandbox.is_none()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A field parsed as an integer (decimal, or hex with `0x`).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        let v = self.get(key)?;
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        }
    }
}

/// Split the VT monitor's `[sN] ` prefix off a line relayed from sandbox N.
pub fn split_sandbox_prefix(line: &str) -> (Option<u32>, &str) {
    if let Some(rest) = line.strip_prefix("[s") {
        if let Some((n, text)) = rest.split_once("] ") {
            if let Ok(n) = n.parse() {
                return (Some(n), text);
            }
        }
    }
    (None, line)
}

/// Parse a `RESULT` line, the kernel's own or relayed from a sandbox (`[sN] RESULT ...`); `None` for anything
/// else or a malformed one (no name, a token without `=`).
pub fn parse_result_line(line: &str) -> Option<ResultLine> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (sandbox, line) = split_sandbox_prefix(line);
    let rest = line.strip_prefix("RESULT ")?;
    let mut words = rest.split_whitespace();
    let name = words.next()?;
    if name.contains('=') {
        return None;
    }
    let mut fields = Vec::new();
    for w in words {
        let (k, v) = w.split_once('=')?;
        if k.is_empty() {
            return None;
        }
        fields.push((k.to_string(), v.to_string()));
    }
    Some(ResultLine { name: name.to_string(), fields, sandbox })
}

/// `QUESTV DONE status=N` → `Some(N)`. Only the kernel itself (the VT monitor) can end a run: a sandbox's line
/// arrives prefixed (`[s0] QUESTV DONE ...`) and is not a DONE line.
pub fn parse_done_line(line: &str) -> Option<i32> {
    line.trim_end_matches(['\r', '\n']).trim().strip_prefix("QUESTV DONE status=")?.trim().parse().ok()
}

pub fn is_panic_line(line: &str) -> bool {
    line.trim_start().starts_with("KERNEL PANIC")
}

/// All `RESULT` lines named `name` in `lines`.
pub fn results<'a>(lines: &'a [String], name: &'a str) -> impl Iterator<Item = ResultLine> + 'a {
    lines.iter().filter_map(|l| parse_result_line(l)).filter(move |r| r.name == name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The guest printed `QUESTV DONE status=N`.
    Done(i32),
    Panic,
    /// The emulator stopped (QEMU exits on a triple fault with -no-reboot; Bochs on its triple-fault panic)
    /// without the guest reporting.
    Reset,
    Timeout,
}

impl Outcome {
    /// The runner's exit code (README).
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Done(0) => 0,
            Outcome::Done(_) => 1,
            Outcome::Panic => 3,
            Outcome::Reset => 4,
            Outcome::Timeout => 5,
        }
    }
}

/// Judge a finished run from its serial lines. A panic wins over a later DONE line (a panicking kernel must
/// never count as success); DONE is otherwise final; with neither, the emulator's exit means reset.
pub fn judge(lines: &[String], emulator_exited: bool, timed_out: bool) -> Outcome {
    let mut done = None;
    for l in lines {
        if is_panic_line(l) {
            return Outcome::Panic;
        }
        if done.is_none() {
            done = parse_done_line(l);
        }
    }
    match done {
        Some(n) => Outcome::Done(n),
        None if timed_out => Outcome::Timeout,
        None if emulator_exited => Outcome::Reset,
        None => Outcome::Timeout,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emulator {
    Qemu,
    Bochs,
}

/// The CPU each emulator emulates (reports name it): QEMU's generic x86-64 with AMD SVM and nested paging (TCG
/// emulates both; the VT build needs them, the SMP build ignores them), Bochs' Skylake-X with VMX and EPT.
pub const QEMU_CPU_MODEL: &str = "qemu64,+svm,+npt";
/// `--clock icount`: QEMU's instruction-counting clock (deterministic guest time; see BootOptions::icount).
pub const ICOUNT: &str = "shift=3,sleep=off";
pub const BOCHS_CPU_MODEL: &str = "corei7_skylake_x";

impl Emulator {
    pub fn cpu_model(self) -> &'static str {
        match self {
            Emulator::Qemu => QEMU_CPU_MODEL,
            Emulator::Bochs => BOCHS_CPU_MODEL,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Emulator::Qemu => "qemu",
            Emulator::Bochs => "bochs",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOptions {
    pub vt: bool,
    pub emulator: Emulator,
    pub cpus: u32,
    pub run: Option<String>,
    pub timeout: Option<u64>,
    pub gdb: bool,
    pub mem_mib: u32,
    /// VT: sandbox slice size in MiB (the monitor's default otherwise).
    pub slice_mib: Option<u32>,
    /// VT: watchdog period in ms (VMX-preemption timer, or the PIT's NMI on SVM); `None`/0 = off.
    pub watchdog_ms: Option<u32>,
    /// VT: the monitor's recovery policy (`restart`/`none`, or one per sandbox: `restart,none,..`).
    pub recovery: Option<String>,
    /// VT on xAPIC machines (QEMU): map the APIC page writable into the sandboxes (no exits, no IPI filtering;
    /// for measuring what the default trapped page costs).
    pub apic_passthrough: bool,
    /// Print the guest's serial output as it arrives.
    pub echo: bool,
    /// QEMU: run the vCPUs on one host thread (`Some(true)`), one thread each (`Some(false)`), or the default:
    /// one thread for VT boots (QEMU 7.2's multi-threaded TCG occasionally corrupts an SVM guest's state
    /// around a nested-page-fault exit: docs/vt.md) and for `compare` (both builds alike), one per vCPU
    /// otherwise.
    pub tcg_single: Option<bool>,
    /// An e1000 whose frames go to/from UDP port P on 127.0.0.1 (the emulator binds P and sends to P+1: the
    /// host peer's side, src/peer.rs). The SMP kernel brings it up with `net=on`.
    pub nic_port: Option<u16>,
    /// VT: how many sandboxes (0..K-1) share the NIC (`nic=0,..,K-1` for the monitor).
    pub nic_sharers: u32,
    /// QEMU's firmware: SeaBIOS (the default) or OVMF (UEFI). The image is the same hybrid ISO either way.
    pub firmware: Firmware,
    /// QEMU: boot the image as a USB stick (raw disk) instead of a CD.
    pub usb_stick: bool,
    /// Files put into the ramdisk under their file names (`--add PATH`): the user's own programs and data.
    pub add: Vec<PathBuf>,
    /// QEMU: the guest's clocks (TSC, APIC timer) follow instructions executed (`-icount`), not host time, so a
    /// loaded host cannot steal time from whatever the guest was running (tests that measure CPU shares).
    pub icount: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Firmware {
    #[default]
    Bios,
    Uefi,
}

impl Firmware {
    pub fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        }
    }
}

/// OVMF from Debian's `ovmf` package: the code (read-only flash) and the variable store template (copied per
/// boot: the firmware writes its variables there).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions { vt: false, emulator: Emulator::Qemu, cpus: 1, run: None, timeout: None, gdb: false, mem_mib: 512, slice_mib: None, watchdog_ms: None, recovery: None, apic_passthrough: false, echo: true, tcg_single: None, nic_port: None, nic_sharers: 1, firmware: Firmware::Bios, usb_stick: false, add: Vec::new(), icount: false }
    }
}

impl BootOptions {
    pub fn mode(&self) -> &'static str {
        if self.vt {
            "vt"
        } else {
            "smp"
        }
    }

    pub fn timeout_secs(&self) -> u64 {
        self.timeout.unwrap_or(match self.emulator {
            Emulator::Qemu => 120,
            Emulator::Bochs => 900,
        })
    }

    /// The kernel command line for this boot.
    pub fn kernel_args(&self) -> String {
        let mut a = format!("mode={}", self.mode());
        if let Some(m) = self.slice_mib {
            a.push_str(&format!(" slice_mib={m}"));
        }
        if let Some(w) = self.watchdog_ms {
            a.push_str(&format!(" watchdog_ms={w}"));
        }
        if let Some(r) = &self.recovery {
            a.push_str(&format!(" recovery={r}"));
        }
        if self.apic_passthrough {
            a.push_str(" apic=passthrough");
        }
        if self.nic_port.is_some() {
            if self.vt {
                let list: Vec<String> = (0..self.nic_sharers.max(1)).map(|i| i.to_string()).collect();
                a.push_str(&format!(" nic={}", list.join(",")));
                // Bochs' socket backend passes on only frames to the configured MAC (and broadcast): the
                // sharers share that MAC and are told apart by IPv4 address (docs/network.md).
                if self.emulator == Emulator::Bochs {
                    a.push_str(" nic_mac=device");
                }
            } else {
                a.push_str(" net=on");
            }
        }
        if let Some(r) = &self.run {
            a.push_str(&format!(" run={r}"));
        }
        a
    }
}

pub enum Cli {
    Boot(BootOptions),
    /// Boot the SMP and the VT image with the same workload and compare (options as for boot; `vt` unused).
    Compare(BootOptions),
    /// The channel benchmark in both builds (`--run` gives the trials: default "5000"), once per VCPU set-up
    /// (`--vcpu`, msgbench's `none|hi|lo`).
    MsgBench(BootOptions, Vec<&'static str>),
    /// Boot with an e1000 on a UDP backend and ping the guests from the host peer.
    Ping(ping::PingOptions),
    /// The network figures (Figs 8 and 11).
    NetFig(netfig::NetFigOptions),
    Recovery(recoveryfig::RecoveryFigOptions),
    Fig10(recoveryfig::Fig10Options),
    Faults(faults::FaultsOptions),
    /// The paper's whole evaluation (Table 1, Figs 6-11) and target/results/report.md.
    Paper(paper::PaperOptions),
    /// Build the hybrid ISO `boot` would boot and keep it (for a USB stick or another emulator).
    Image(BootOptions, PathBuf),
    /// Compile a C file against the C shim into a questv executable.
    Cc(usercc::CcOptions),
    /// Write a Rust user-program crate (NAME, directory).
    NewProgram(String, PathBuf),
    Help,
}

pub const USAGE: &str = "usage: questv boot [--vt] [--emulator qemu|bochs] [--cpus N] [--run \"PROG ARGS\"] \
[--timeout SECS] [--mem MIB] [--slice-mib MIB] [--watchdog-ms MS] [--recovery restart|none|P0,P1,..] [--apic trap|passthrough] [--tcg single|multi] [--clock host|icount] [--firmware bios|uefi] [--media cdrom|usb] [--add PATH].. [--gdb]\n       questv image [--vt] [--run \"PROG ARGS\"] [--add PATH].. [--recovery ..] [--watchdog-ms MS] [--out PATH]\n       questv cc FILE.c [-o OUT] [GCC ARGS..]\n       questv new-program NAME [--dir DIR]\n       questv compare [--emulator qemu|bochs] [--cpus N] [--run \"PROG ARGS\"] [--timeout SECS] [--mem MIB] [--apic trap|passthrough] [--tcg single|multi] [--clock host|icount]\n       questv ping [--vt] [--emulator qemu|bochs] [--cpus N] [--guests K] [--sharers S] [--count N] [--interval-ms MS] [--size B] [--garbage N] [--seed S] [--recovery restart|none] [--inject \"KIND SANDBOX [after_pings=N]\"] [--apic trap|passthrough] [--timeout SECS]\n       questv netfig [--emulator qemu|bochs] [--cpus N] [--count N] [--interval-ms MS] [--quick] [--no-linux]\n       questv recovery [--emulator qemu|bochs] [--cpus N] [--count N] [--interval-ms MS] [--after N] [--quick]\n       questv fig10 [--emulator qemu|bochs] [--quick]\n       questv faults [--emulator qemu|bochs] [--cpus N] [--count N] [--seed S]\n       questv paper [--emulator qemu|bochs] [--quick] [--no-linux] [--publish]\n       questv msgbench [--emulator qemu|bochs] [--cpus N] [--run TRIALS] [--vcpu none|hi|lo|all[,..]] [--timeout SECS] [--apic trap|passthrough] [--tcg single|multi] [--clock host|icount]";

/// msgbench's VCPU set-ups (userland/src/bin/msgbench.rs), in the order `--vcpu all` runs them.
pub const MSGBENCH_VCPUS: [&str; 3] = ["none", "hi", "lo"];

/// `--emulator`'s value.
fn parse_emulator(v: Option<&str>) -> Result<Emulator, String> {
    let options = [("qemu", Emulator::Qemu), ("bochs", Emulator::Bochs)];
    match v {
        Some(v) => choose("emulator", v, &options),
        None => Err("unknown emulator None (qemu or bochs)".into()),
    }
}

/// An option's value among named choices: `unknown WHAT "v" (a or b)` otherwise.
fn choose<T: Copy>(what: &str, v: &str, options: &[(&str, T)]) -> Result<T, String> {
    options.iter().find(|(name, _)| *name == v).map(|(_, t)| *t).ok_or_else(|| {
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        format!("unknown {what} {v:?} ({})", names.join(" or "))
    })
}

/// A CSV field, quoted when it holds a comma, a quote or a newline.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Parse the runner's command line (without the program name).
pub fn parse_args(args: &[String]) -> Result<Cli, String> {
    let mut it = args.iter();
    let mut ping: Option<ping::PingOptions> = None;
    let mut image: Option<PathBuf> = None;
    let (compare, msgbench) = match it.next().map(String::as_str) {
        Some("boot") => (false, false),
        Some("image") => {
            image = Some(PathBuf::new());
            (false, false)
        }
        Some("compare") => (true, false),
        Some("msgbench") => (true, true),
        Some("ping") => {
            ping = Some(ping::PingOptions::default());
            (false, false)
        }
        Some("netfig") => return parse_netfig(&args[1..]),
        Some("recovery") => return parse_recoveryfig(&args[1..]),
        Some("fig10") => {
            let mut o = recoveryfig::Fig10Options::default();
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--emulator" => o.emulator = parse_emulator(it.next().map(String::as_str))?,
                    "--quick" => (o.count, o.interval_ms, o.break_after) = (40, 250, 12),
                    other => return Err(format!("unknown option {other:?}\n{USAGE}")),
                }
            }
            return Ok(Cli::Fig10(o));
        }
        Some("faults") => return parse_faults(&args[1..]),
        Some("cc") => {
            let mut o = usercc::CcOptions { src: PathBuf::new(), out: None, gcc_args: Vec::new() };
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "-o" => o.out = Some(PathBuf::from(it.next().ok_or("-o needs a path")?)),
                    a if a.starts_with("-o") => o.out = Some(PathBuf::from(&a[2..])),
                    a if a.ends_with(".c") && o.src.as_os_str().is_empty() => o.src = PathBuf::from(a),
                    a => o.gcc_args.push(a.to_string()),
                }
            }
            if o.src.as_os_str().is_empty() {
                return Err(format!("cc needs a .c file\n{USAGE}"));
            }
            return Ok(Cli::Cc(o));
        }
        Some("new-program") => {
            let mut it = args[1..].iter();
            let name = it.next().ok_or_else(|| format!("new-program needs a NAME\n{USAGE}"))?.clone();
            let mut dir = PathBuf::from(".");
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--dir" => dir = PathBuf::from(it.next().ok_or("--dir needs a path")?),
                    other => return Err(format!("unknown option {other:?}\n{USAGE}")),
                }
            }
            return Ok(Cli::NewProgram(name, dir));
        }
        Some("paper") => {
            let mut o = paper::PaperOptions::default();
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--emulator" => o.emulator = parse_emulator(it.next().map(String::as_str))?,
                    "--quick" => o.quick = true,
                    "--publish" => o.publish = true,
                    "--no-linux" => o.linux = false,
                    other => return Err(format!("unknown option {other:?}\n{USAGE}")),
                }
            }
            return Ok(Cli::Paper(o));
        }
        Some("-h") | Some("--help") | Some("help") | None => return Ok(Cli::Help),
        Some(other) => return Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    let mut o = BootOptions { cpus: if ping.is_some() { 2 } else { 1 }, ..BootOptions::default() };
    let mut vcpus: Vec<&'static str> = Vec::new();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        match a.as_str() {
            "--vt" => o.vt = true,
            "--gdb" => o.gdb = true,
            "--emulator" => {
                o.emulator = parse_emulator(Some(&value("--emulator")?))?
            }
            "--cpus" => {
                o.cpus = value("--cpus")?.parse().map_err(|_| "--cpus needs a number".to_string())?;
                if !(1..=64).contains(&o.cpus) {
                    return Err("--cpus must be between 1 and 64".into());
                }
            }
            "--run" => {
                let r = value("--run")?;
                if r.contains(['"', '\\', '$', '\n', '\r']) {
                    return Err("--run may not contain '\"', '\\', '$' or newlines (it goes into grub.cfg)".into());
                }
                o.run = Some(r);
            }
            "--slice-mib" => o.slice_mib = Some(value("--slice-mib")?.parse().map_err(|_| "--slice-mib needs MiB".to_string())?),
            "--apic" => {
                o.apic_passthrough = choose("APIC access", &value("--apic")?, &[("trap", false), ("passthrough", true)])?
            }
            "--firmware" => {
                o.firmware = choose("firmware", &value("--firmware")?, &[("bios", Firmware::Bios), ("uefi", Firmware::Uefi)])?
            }
            "--tcg" => {
                o.tcg_single = Some(choose("TCG threading", &value("--tcg")?, &[("single", true), ("multi", false)])?)
            }
            "--vcpu" if msgbench => {
                for v in value("--vcpu")?.split(',') {
                    match v {
                        "all" => vcpus.extend(MSGBENCH_VCPUS),
                        v => vcpus.push(MSGBENCH_VCPUS.into_iter().find(|m| *m == v).ok_or_else(|| format!("unknown VCPU set-up {v:?} (none, hi, lo or all)"))?),
                    }
                }
            }
            "--nic-port" => o.nic_port = Some(value("--nic-port")?.parse().map_err(|_| "--nic-port needs a UDP port".to_string())?),
            "--nic-sharers" => o.nic_sharers = value("--nic-sharers")?.parse().map_err(|_| "--nic-sharers needs a number".to_string())?,
            "--guests" | "--sharers" | "--count" | "--interval-ms" | "--size" | "--garbage" | "--seed" if ping.is_some() => {
                let name = a.clone();
                let v: u64 = value(&name)?.parse().map_err(|_| format!("{name} needs a number"))?;
                let p = ping.as_mut().unwrap();
                match name.as_str() {
                    "--guests" => p.guests = v.clamp(1, 8) as u32,
                    "--sharers" => p.sharers = v.min(8) as u32,
                    "--count" => p.count = v.clamp(1, 65_536) as u32,
                    "--interval-ms" => p.interval_ms = v.clamp(1, 60_000),
                    "--size" => {
                        if !(8..=1472).contains(&v) {
                            return Err("--size must be 8..=1472 bytes".into());
                        }
                        p.size = v as usize
                    }
                    "--garbage" => p.garbage = v.min(100_000) as u32,
                    _ => p.seed = v,
                }
            }
            "--recovery" => o.recovery = Some(value("--recovery")?),
            "--inject" if ping.is_some() => ping.as_mut().unwrap().inject = Some(value("--inject")?),
            "--watchdog-ms" => o.watchdog_ms = Some(value("--watchdog-ms")?.parse().map_err(|_| "--watchdog-ms needs milliseconds".to_string())?),
            "--timeout" => o.timeout = Some(value("--timeout")?.parse().map_err(|_| "--timeout needs seconds".to_string())?),
            "--media" => {
                o.usb_stick = choose("boot medium", &value("--media")?, &[("cdrom", false), ("usb", true)])?
            }
            "--clock" => o.icount = choose("guest clock", &value("--clock")?, &[("host", false), ("icount", true)])?,
            "--add" => {
                let p = PathBuf::from(value("--add")?);
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if !usercc::valid_program_name(name) {
                    return Err(format!("--add {}: the file name {name:?} becomes its ramdisk name: letters, digits, '-', '_', '.', and not percpu, kernel or ktest*", p.display()));
                }
                if o.add.len() >= MAX_ADDED_FILES {
                    return Err(format!("--add: at most {MAX_ADDED_FILES} files (the kernel reserves a fixed number of boot modules)"));
                }
                o.add.push(p);
            }
            "--out" if image.is_some() => image = Some(PathBuf::from(value("--out")?)),
            "--mem" => {
                o.mem_mib = value("--mem")?.parse().map_err(|_| "--mem needs MiB".to_string())?;
                if o.mem_mib < 64 {
                    return Err("--mem must be at least 64 MiB".into());
                }
            }
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    if o.icount && o.tcg_single == Some(false) {
        return Err("--clock icount runs the vCPUs on one host thread; it does not go with --tcg multi".into());
    }
    if let Some(mut p) = ping {
        if o.gdb {
            return Err("ping does not take --gdb".into());
        }
        // QUESTV_ECHO=1 shows the guest's serial output while the peer runs (debugging a run that hangs).
        p.boot = BootOptions { echo: std::env::var_os("QUESTV_ECHO").is_some(), ..o };
        return Ok(Cli::Ping(p));
    }
    if compare {
        if o.vt || o.gdb {
            return Err("compare/msgbench boot both builds themselves; --vt and --gdb do not apply".into());
        }
        if vcpus.is_empty() {
            vcpus.push("none");
        }
        let mut seen = Vec::new();
        vcpus.retain(|v| if seen.contains(v) { false } else { seen.push(*v); true });
        Ok(if msgbench { Cli::MsgBench(o, vcpus) } else { Cli::Compare(o) })
    } else if let Some(out) = image {
        if o.gdb || o.nic_port.is_some() {
            return Err("image writes a bootable ISO; --gdb and --nic-port are for boot".into());
        }
        let out = if out.as_os_str().is_empty() { workspace_root().join("target").join(format!("questv-{}.iso", o.mode())) } else { out };
        Ok(Cli::Image(o, out))
    } else {
        Ok(Cli::Boot(o))
    }
}

/// How many `--add` files a boot takes: the kernel keeps 64 boot modules (kernel/src/boot.rs), the project's own
/// programs and the VT kernel image take about 16.
pub const MAX_ADDED_FILES: usize = 32;

/// What goes into the ramdisk: the userland programs, the kernel itself for VT (the monitor loads a pristine
/// copy into every sandbox from it) and the user's `--add` files under their file names.
pub fn ramdisk_files(o: &BootOptions, kernel: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mut files = build_userland()?;
    if o.vt {
        files.push(("kernel".into(), kernel.to_path_buf()));
    }
    for p in &o.add {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
        if !p.is_file() {
            return Err(format!("--add {}: no such file", p.display()));
        }
        if files.iter().any(|(n, _)| *n == name) || name == "badelf" {
            return Err(format!("--add {}: {name:?} is already in the ramdisk (a built-in program): rename the file", p.display()));
        }
        files.push((name, p.clone()));
    }
    Ok(files)
}

/// `image`: the hybrid BIOS+UEFI ISO `boot` would boot, kept at `out` (write it raw to a USB stick:
/// docs/hardware.md). The command line in its grub.cfg is the one `boot` would pass.
pub fn image(o: &BootOptions, out: &Path) -> Result<PathBuf, String> {
    let kernel = build_kernel(o.vt)?;
    let programs = ramdisk_files(o, &kernel)?;
    let iso = make_iso(&kernel, &o.kernel_args(), &format!("image-{}-{}", o.mode(), std::process::id()), &programs)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::rename(&iso, out).or_else(|_| std::fs::copy(&iso, out).map(|_| ())).map_err(|e| format!("{}: {e}", out.display()))?;
    let _ = std::fs::remove_file(&iso);
    Ok(out.to_path_buf())
}

fn parse_faults(args: &[String]) -> Result<Cli, String> {
    let mut o = faults::FaultsOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        match a.as_str() {
            "--emulator" => {
                o.emulator = parse_emulator(Some(&value("--emulator")?))?
            }
            "--cpus" => o.cpus = value("--cpus")?.parse().ok().filter(|c| (3..=8).contains(c)).ok_or("--cpus needs 3..=8")?,
            "--count" => o.count = value("--count")?.parse().ok().filter(|c| (1..=100_000).contains(c)).ok_or("--count needs 1..=100000")?,
            "--seed" => o.seed = value("--seed")?.parse().map_err(|_| "--seed needs a number".to_string())?,
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    Ok(Cli::Faults(o))
}

fn parse_recoveryfig(args: &[String]) -> Result<Cli, String> {
    let mut o = recoveryfig::RecoveryFigOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        match a.as_str() {
            "--emulator" => {
                o.emulator = parse_emulator(Some(&value("--emulator")?))?;
                if o.emulator == Emulator::Bochs {
                    o.cpus = o.cpus.min(2);
                }
            }
            "--cpus" => o.cpus = value("--cpus")?.parse().ok().filter(|c| (2..=8).contains(c)).ok_or("--cpus needs 2..=8")?,
            "--count" => o.count = value("--count")?.parse().ok().filter(|c| (30..=65_536).contains(c)).ok_or("--count needs 30..=65536")?,
            "--interval-ms" => o.interval_ms = value("--interval-ms")?.parse().ok().filter(|c| (5..=2000).contains(c)).ok_or("--interval-ms needs 5..=2000")?,
            "--after" => o.after_replies = value("--after")?.parse().ok().filter(|c| (1..=1000).contains(c)).ok_or("--after needs 1..=1000")?,
            "--quick" => o.count = 60,
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    if o.after_replies + 10 >= o.count {
        return Err(format!("--after {} leaves too few pings after the fault (--count {})", o.after_replies, o.count));
    }
    Ok(Cli::Recovery(o))
}

fn parse_netfig(args: &[String]) -> Result<Cli, String> {
    let mut o = netfig::NetFigOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        match a.as_str() {
            "--emulator" => {
                o.emulator = parse_emulator(Some(&value("--emulator")?))?
            }
            "--cpus" => o.cpus = value("--cpus")?.parse().ok().filter(|c| (2..=8).contains(c)).ok_or("--cpus needs 2..=8")?,
            "--count" => o.count = value("--count")?.parse().ok().filter(|c| (10..=65_536).contains(c)).ok_or("--count needs 10..=65536")?,
            "--interval-ms" => o.flood_interval_ms = value("--interval-ms")?.parse().ok().filter(|c| (1..=1000).contains(c)).ok_or("--interval-ms needs 1..=1000")?,
            "--no-linux" => o.linux = false,
            "--quick" => o.count = 100,
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    Ok(Cli::NetFig(o))
}

/// One row of a comparison: a core (SMP: CPU, VT: sandbox) with its cycles per iteration in each build.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareRow {
    pub core: u64,
    pub smp_cycles_per_iter: u64,
    pub vt_cycles_per_iter: u64,
    /// VM exits the sandbox took during its run of the workload.
    pub vt_exits: i64,
}

impl CompareRow {
    pub fn ratio(&self) -> f64 {
        self.vt_cycles_per_iter as f64 / self.smp_cycles_per_iter.max(1) as f64
    }
}

/// Pair the workload's result lines of the two runs: SMP lines are keyed by `cpu`, VT lines by `sandbox`
/// (sandbox N runs on core N).
pub fn compare_rows(smp: &[String], vt: &[String]) -> Vec<CompareRow> {
    let smp_rows: Vec<ResultLine> = smp.iter().filter_map(|l| parse_result_line(l)).filter(|r| r.get("cycles_per_iter").is_some()).collect();
    let vt_rows: Vec<ResultLine> = vt.iter().filter_map(|l| parse_result_line(l)).filter(|r| r.get("cycles_per_iter").is_some()).collect();
    let mut rows: Vec<CompareRow> = smp_rows
        .iter()
        .filter_map(|s| {
            let core = s.get_u64("cpu")?;
            let v = vt_rows.iter().find(|v| v.get_u64("sandbox") == Some(core))?;
            Some(CompareRow {
                core,
                smp_cycles_per_iter: s.get_u64("cycles_per_iter")?,
                vt_cycles_per_iter: v.get_u64("cycles_per_iter")?,
                vt_exits: v.get("vmexits").and_then(|x| x.parse().ok()).unwrap_or(-1),
            })
        })
        .collect();
    rows.sort_by_key(|r| r.core);
    rows
}

pub fn compare_table(rows: &[CompareRow]) -> String {
    let mut t = String::from("core  smp_cycles_per_iter  vt_cycles_per_iter  vt/smp  vt_exits_during_run\n");
    for r in rows {
        t.push_str(&format!(
            "{:>4}  {:>19}  {:>18}  {:>6.3}  {:>19}\n",
            r.core, r.smp_cycles_per_iter, r.vt_cycles_per_iter, r.ratio(), r.vt_exits
        ));
    }
    t
}

pub fn compare_csv(rows: &[CompareRow]) -> String {
    let mut c = String::from("core,smp_cycles_per_iter,vt_cycles_per_iter,vt_over_smp,vt_exits_during_run\n");
    for r in rows {
        c.push_str(&format!("{},{},{},{:.4},{}\n", r.core, r.smp_cycles_per_iter, r.vt_cycles_per_iter, r.ratio(), r.vt_exits));
    }
    c
}

/// Boot the SMP build with `percpu RUN` (one instance per core) and the VT build with `RUN` (one per sandbox) in
/// the same emulator; both must end with status 0.
pub(crate) fn run_both(o: &BootOptions, run: &str) -> Result<Vec<BootReport>, String> {
    // Benchmarks run long in an emulator (forkwait 40000 on 4 TCG vCPUs: minutes): a longer default limit.
    let o = &BootOptions {
        timeout: Some(o.timeout.unwrap_or(o.timeout_secs() * 10)),
        // Both builds on the same TCG threading, so the cycle counts compare.
        tcg_single: Some(o.tcg_single.unwrap_or(true)),
        ..o.clone()
    };
    let smp_opts = BootOptions { vt: false, run: Some(format!("percpu {run}")), echo: false, ..o.clone() };
    let vt_opts = BootOptions { vt: true, run: Some(run.to_string()), echo: false, ..o.clone() };
    let mut reports = Vec::new();
    for opts in [&smp_opts, &vt_opts] {
        eprintln!("questv: compare: booting the {} build ({})", opts.mode(), opts.emulator.name());
        let r = boot(opts)?;
        if r.outcome != Outcome::Done(0) {
            let tail: Vec<&String> = r.lines.iter().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
            return Err(format!("{} run ended with {:?}; last lines:\n{}", opts.mode(), r.outcome,
                tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")));
        }
        eprintln!("questv: compare: {} build: {:.1} s", opts.mode(), r.wall_time.as_secs_f64());
        reports.push(r);
    }
    Ok(reports)
}

pub(crate) fn results_dir() -> Result<PathBuf, String> {
    let dir = workspace_root().join("target").join("results");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// The one-instance baseline of a comparison: the workload's cycles per iteration when it runs alone on CPU 0 of
/// the same machine (SMP build, the other cores idle).
pub fn one_instance_cycles(lines: &[String]) -> Option<u64> {
    lines.iter().filter_map(|l| parse_result_line(l)).find_map(|r| r.get_u64("cycles_per_iter"))
}

/// The scaling summary: mean per-instance cost of each build over the one-instance cost.
pub fn scaling_table(rows: &[CompareRow], one: u64) -> String {
    let n = rows.len().max(1) as f64;
    let smp = rows.iter().map(|r| r.smp_cycles_per_iter as f64).sum::<f64>() / n;
    let vt = rows.iter().map(|r| r.vt_cycles_per_iter as f64).sum::<f64>() / n;
    let one = one.max(1) as f64;
    format!(
        "one instance alone (SMP, CPU 0): {one:.0} cycles/iter\nscaling: smp_per_instance/one={:.3} vt_per_sandbox/one={:.3}\n",
        smp / one,
        vt / one
    )
}

/// `compare`: the workload once per core in the SMP build (`percpu PROG`) and once per sandbox in the VT build,
/// in the same emulator, plus (with more than one core) the workload alone on the SMP build as the scaling
/// baseline. Prints the table, writes a CSV and a bar chart under target/results/, returns the CSV path.
pub fn compare(o: &BootOptions) -> Result<(String, PathBuf), String> {
    let run = o.run.clone().unwrap_or_else(|| "forkwait 2000".into());
    let reports = run_both(o, &run)?;
    let rows = compare_rows(&reports[0].lines, &reports[1].lines);
    if rows.len() != o.cpus as usize {
        return Err(format!("expected results from {} cores in both builds, matched {}", o.cpus, rows.len()));
    }
    let one = if o.cpus > 1 {
        let opts = BootOptions { vt: false, run: Some(run.clone()), echo: false, timeout: Some(o.timeout.unwrap_or(o.timeout_secs() * 10)), tcg_single: Some(o.tcg_single.unwrap_or(true)), ..o.clone() };
        eprintln!("questv: compare: booting the smp build with one instance (the scaling baseline)");
        let r = boot(&opts)?;
        if r.outcome != Outcome::Done(0) {
            return Err(format!("the one-instance run ended with {:?}", r.outcome));
        }
        Some(one_instance_cycles(&r.lines).ok_or("the one-instance run printed no cycles_per_iter")?)
    } else {
        None
    };
    let dir = results_dir()?;
    let name: String = run.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let stem = format!("compare-{}-{}cpus-{}", o.emulator.name(), o.cpus, name);
    let path = dir.join(format!("{stem}.csv"));
    let mut csv = compare_csv(&rows);
    let mut table = compare_table(&rows);
    let mut groups: Vec<String> = rows.iter().map(|r| format!("core {}", r.core)).collect();
    let mut series = vec![
        plot::Series { name: format!("SMP, {} instances at once", rows.len()), points: rows.iter().enumerate().map(|(i, r)| (i as f64, r.smp_cycles_per_iter as f64)).collect() },
        plot::Series { name: format!("Quest-V (VT), {} sandboxes at once", rows.len()), points: rows.iter().enumerate().map(|(i, r)| (i as f64, r.vt_cycles_per_iter as f64)).collect() },
    ];
    if let Some(one) = one {
        csv.push_str(&format!("one_instance,{one},,,\n"));
        table.push_str(&scaling_table(&rows, one));
        groups.push("one instance alone".into());
        series.push(plot::Series { name: "SMP, one instance alone".into(), points: vec![(rows.len() as f64, one as f64)] });
    }
    std::fs::write(&path, csv).map_err(|e| e.to_string())?;
    let png = dir.join(format!("{stem}.png"));
    let title = format!("{run}: cycles per iteration, {} with {} cores", o.emulator.name(), o.cpus);
    plot::bar_chart(&png, &title, "cycles per iteration", &groups, &series)?;
    table.push_str(&format!("figure: {}\n", png.display()));
    Ok((table, path))
}

/// Rewrite grub.cfg: the `set questv_args=` line gets `args`, the `# @questv-modules@` line becomes one
/// `module2` line per ramdisk file.
pub fn grub_cfg_with_args(template: &str, args: &str, modules: &[String]) -> Result<String, String> {
    let (mut found_args, mut found_modules) = (false, false);
    let mut out: Vec<String> = Vec::new();
    for l in template.lines() {
        if l.trim_start().starts_with("set questv_args=") {
            found_args = true;
            out.push(format!("set questv_args=\"{args}\""));
        } else if l.trim_start().starts_with("# @questv-modules@") {
            found_modules = true;
            out.extend(modules.iter().map(|m| format!("    module2 /boot/bin/{m} {m}")));
        } else {
            out.push(l.to_string());
        }
    }
    if !found_args {
        return Err("grub/grub.cfg has no `set questv_args=` line".into());
    }
    if !found_modules && !modules.is_empty() {
        return Err("grub/grub.cfg has no `# @questv-modules@` line".into());
    }
    Ok(out.join("\n") + "\n")
}

/// Names of the `[[bin]]` targets in a Cargo.toml (the Rust user programs).
pub fn bin_names(cargo_toml: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bin = false;
    for l in cargo_toml.lines().map(str::trim) {
        if l.starts_with('[') {
            in_bin = l == "[[bin]]";
        } else if in_bin {
            if let Some(v) = l.strip_prefix("name").map(str::trim).and_then(|r| r.strip_prefix('=')) {
                names.push(v.trim().trim_matches('"').to_string());
            }
        }
    }
    names
}

/// A file that starts like an ELF but is garbage: the ramdisk carries it so tests can check that exec refuses
/// malformed programs.
pub fn bad_elf() -> Vec<u8> {
    let mut v = b"\x7fELF\x02\x01\x01".to_vec();
    v.extend((0..4089u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    v
}

/// Build the Rust user programs and collect them with the C ones (built by build.rs): (name, path).
pub fn build_userland() -> Result<Vec<(String, PathBuf)>, String> {
    let root = workspace_root();
    let target_dir = root.join("target").join("user");
    cargo_build(&["-p", "questv-userland", "--features", "user", "--config", "userland/build.toml"], &target_dir)
        .map_err(|e| format!("userland build failed ({e})"))?;
    let toml = std::fs::read_to_string(root.join("userland/Cargo.toml")).map_err(|e| e.to_string())?;
    let mut progs: Vec<(String, PathBuf)> =
        bin_names(&toml).into_iter().map(|n| (n.clone(), target_dir.join(KERNEL_TARGET).join("release").join(n))).collect();
    let c_dir = PathBuf::from(env!("QUESTV_USER_C_DIR"));
    let mut c: Vec<(String, PathBuf)> = std::fs::read_dir(&c_dir)
        .map_err(|e| format!("{}: {e}", c_dir.display()))?
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    c.sort();
    progs.extend(c);
    Ok(progs)
}

/// `cargo build --release --target <host> ARGS` into `target_dir`, with a clean flag environment.
fn cargo_build(args: &[&str], target_dir: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--release", "--target", KERNEL_TARGET])
        .args(args)
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET")
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(status.to_string())
    }
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub const KERNEL_TARGET: &str = env!("QUESTV_KERNEL_TARGET");

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Fail with one clear line naming the Debian packages if a tool is missing.
/// Err naming the Debian package that provides `path` if it is missing.
pub fn require_file(path: &str, package: &str) -> Result<(), String> {
    if Path::new(path).exists() {
        Ok(())
    } else {
        Err(format!("{path} is missing: install the Debian package {package} (sudo apt-get install {package})"))
    }
}

pub fn require_tool(tool: &str, packages: &str) -> Result<(), String> {
    if which(tool) {
        Ok(())
    } else {
        Err(format!("{tool} not found; install Debian packages: apt-get install {packages}"))
    }
}

/// Build the kernel image for the mode; returns the ELF path.
pub fn build_kernel(vt: bool) -> Result<PathBuf, String> {
    let root = workspace_root();
    let mode = if vt { "vt" } else { "smp" };
    let target_dir = root.join("target").join(format!("kernel-{mode}"));
    let features = if vt { "vt" } else { "" };
    cargo_build(&["-p", "questv-image", "--bin", "questv-kernel", "--features", features, "--config", "kernel/image/build.toml"], &target_dir)
        .map_err(|e| format!("kernel build failed ({e})"))?;
    Ok(target_dir.join(KERNEL_TARGET).join("release").join("questv-kernel"))
}

/// Stage the kernel, the user programs (plus the deliberately malformed `badelf`) and a grub.cfg carrying
/// `args`, and make a bootable ISO with grub-mkrescue.
pub fn make_iso(kernel: &Path, args: &str, tag: &str, programs: &[(String, PathBuf)]) -> Result<PathBuf, String> {
    require_tool("grub-mkrescue", "grub-pc-bin grub-common xorriso mtools")?;
    require_tool("xorriso", "xorriso")?;
    require_tool("mformat", "mtools")?;
    // One hybrid image for both firmwares: grub-mkrescue adds every platform installed under /usr/lib/grub.
    for (platform, package) in [("i386-pc", "grub-pc-bin"), ("x86_64-efi", "grub-efi-amd64-bin")] {
        require_file(&format!("/usr/lib/grub/{platform}/modinfo.sh"), package)?;
    }
    let root = workspace_root();
    let stage = root.join("target").join(format!("iso-{tag}"));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(stage.join("boot/grub")).map_err(|e| format!("{}: {e}", stage.display()))?;
    std::fs::copy(kernel, stage.join("boot/questv-kernel")).map_err(|e| format!("{}: {e}", kernel.display()))?;
    std::fs::create_dir_all(stage.join("boot/bin")).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    for (name, path) in programs {
        std::fs::copy(path, stage.join("boot/bin").join(name)).map_err(|e| format!("{}: {e}", path.display()))?;
        names.push(name.clone());
    }
    std::fs::write(stage.join("boot/bin/badelf"), bad_elf()).map_err(|e| e.to_string())?;
    names.push("badelf".into());
    let template = std::fs::read_to_string(root.join("grub/grub.cfg")).map_err(|e| format!("grub/grub.cfg: {e}"))?;
    std::fs::write(stage.join("boot/grub/grub.cfg"), grub_cfg_with_args(&template, args, &names)?)
        .map_err(|e| format!("grub.cfg: {e}"))?;
    let iso = root.join("target").join(format!("questv-{tag}.iso"));
    let out = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&iso)
        .arg(&stage)
        .output()
        .map_err(|e| format!("cannot run grub-mkrescue: {e}"))?;
    let _ = std::fs::remove_dir_all(&stage);
    if !out.status.success() {
        return Err(format!("grub-mkrescue failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(iso)
}

#[derive(Debug)]
pub struct BootReport {
    pub lines: Vec<String>,
    pub outcome: Outcome,
    pub wall_time: Duration,
}

impl BootReport {
    pub fn results<'a>(&'a self, name: &'a str) -> impl Iterator<Item = ResultLine> + 'a {
        results(&self.lines, name)
    }
}

/// The emulated e1000's own (EEPROM) address; the SMP kernel uses it, VT sandboxes have virtual ones.
pub const NIC_MAC: &str = "52:54:00:12:34:56";

/// Headless Bochs configuration (settings known to work with Debian's Bochs 2.7: ../shared/notes/platform.md).
pub fn bochsrc(iso: &Path, serial: &Path, log: &Path, cpus: u32, mem_mib: u32, nic_port: Option<u16>) -> String {
    // The e1000 on PCI slot 1 with the UDP socket backend (Bochs binds P, sends to P+1); real-time clock so the
    // peer's ping interval means something to the guest.
    let (nic, clock) = match nic_port {
        Some(p) => (
            format!("pci: enabled=1, chipset=i440fx, slot1=e1000\ne1000: enabled=1, mac={NIC_MAC}, ethmod=socket, ethdev={p}\n"),
            "realtime",
        ),
        None => (String::new(), "none"),
    };
    format!(
        "megs: {mem_mib}\n\
         cpu: model={BOCHS_CPU_MODEL}, count={cpus}, ips=50000000, reset_on_triple_fault=0\n\
         romimage: file=/usr/share/bochs/BIOS-bochs-latest\n\
         vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest\n\
         ata0-master: type=cdrom, path={iso}, status=inserted\n\
         boot: cdrom\n\
         display_library: rfb, options=\"timeout=0\"\n\
         com1: enabled=1, mode=file, dev={serial}\n\
         log: {log}\n\
         panic: action=fatal\n\
         error: action=report\n\
         info: action=ignore\n\
         sound: driver=dummy\n\
         speaker: enabled=0\n\
         clock: sync={clock}, time0=local\n{nic}",
        iso = iso.display(),
        serial = serial.display(),
        log = log.display(),
    )
}

/// Start the emulator; serial lines arrive on the returned channel.
fn start_emulator(o: &BootOptions, iso: &Path, tag: &str) -> Result<(Child, mpsc::Receiver<String>, Vec<PathBuf>), String> {
    let (tx, rx) = mpsc::channel();
    match o.emulator {
        Emulator::Qemu => {
            require_tool("qemu-system-x86_64", "qemu-system-x86")?;
            let mut scratch: Vec<PathBuf> = Vec::new();
            let mut cmd = Command::new("qemu-system-x86_64");
            // SVM with nested paging (TCG emulates it; the VT build's AMD backend needs it, the SMP build ignores it).
            let accel = if o.icount || o.tcg_single.unwrap_or(o.vt) { "tcg,thread=single" } else { "tcg,thread=multi" };
            cmd.args(["-machine", "pc", "-accel", accel, "-cpu", QEMU_CPU_MODEL, "-smp", &o.cpus.to_string()])
                .args(["-m", &o.mem_mib.to_string()]);
            if o.icount {
                // 2^3 ns of guest time per instruction; sleep=off lets an idle guest's time jump to its next timer.
                cmd.args(["-icount", ICOUNT]);
            }
            if o.usb_stick {
                // The hybrid ISO as a raw disk on a USB stick (xHCI), as `dd` would write it.
                cmd.args(["-device", "qemu-xhci", "-drive", &format!("if=none,id=stick,format=raw,file={}", iso.display())])
                    .args(["-device", "usb-storage,drive=stick,bootindex=0"]);
            } else {
                cmd.args(["-boot", "d", "-cdrom"]).arg(iso);
            }
            cmd.args(["-display", "none", "-vga", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot"])
                .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            if o.firmware == Firmware::Uefi {
                require_file(OVMF_CODE, "ovmf")?;
                require_file(OVMF_VARS, "ovmf")?;
                let vars = workspace_root().join("target").join(format!("ovmf-vars-{tag}.fd"));
                std::fs::copy(OVMF_VARS, &vars).map_err(|e| format!("{}: {e}", vars.display()))?;
                cmd.args(["-drive", &format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}")])
                    .args(["-drive", &format!("if=pflash,format=raw,unit=1,file={}", vars.display())]);
                scratch.push(vars);
            }
            if o.gdb {
                cmd.args(["-s", "-S"]);
            }
            if let Some(p) = o.nic_port {
                cmd.args([
                    "-netdev",
                    &format!("dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={p},remote.type=inet,remote.host=127.0.0.1,remote.port={}", p + 1),
                    "-device",
                    &format!("e1000,netdev=n0,mac={NIC_MAC}"),
                ]);
            }
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    for f in &scratch {
                        let _ = std::fs::remove_file(f);
                    }
                    return Err(format!("cannot start qemu-system-x86_64: {e}"));
                }
            };
            let stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stdout);
                let mut buf = Vec::new();
                while matches!(r.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                    if tx.send(String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string()).is_err() {
                        break;
                    }
                    buf.clear();
                }
            });
            Ok((child, rx, scratch))
        }
        Emulator::Bochs => {
            if o.firmware == Firmware::Uefi || o.usb_stick {
                return Err("--firmware uefi and --media usb need QEMU; Bochs boots the CD with its BIOS".into());
            }
            if o.icount {
                return Err("--clock icount is QEMU's; Bochs's clock already counts instructions (sync=none) unless a NIC is attached".into());
            }
            require_tool("bochs", "bochs bochsbios vgabios")?;
            let dir = workspace_root().join("target").join(format!("bochs-{tag}"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let (serial, log, rc, cfg) = (dir.join("serial.txt"), dir.join("bochs.log"), dir.join("rc"), dir.join("bochsrc"));
            std::fs::write(&serial, "").map_err(|e| e.to_string())?;
            std::fs::write(&rc, "c\n").map_err(|e| e.to_string())?;
            std::fs::write(&cfg, bochsrc(iso, &serial, &log, o.cpus, o.mem_mib, o.nic_port)).map_err(|e| e.to_string())?;
            let child = start_bochs(&dir, &cfg, &rc, &log)?;
            // Bochs writes COM1 to a file: follow it.
            let serial_path = serial.clone();
            std::thread::spawn(move || {
                let Ok(mut f) = std::fs::File::open(&serial_path) else { return };
                let mut pending = Vec::new();
                let mut pos = 0u64;
                loop {
                    let mut chunk = Vec::new();
                    if f.seek(SeekFrom::Start(pos)).is_ok() && f.read_to_end(&mut chunk).is_ok() {
                        pos += chunk.len() as u64;
                        pending.extend_from_slice(&chunk);
                        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                            let line: Vec<u8> = pending.drain(..=i).collect();
                            let s = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
                            if tx.send(s).is_err() {
                                return;
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            Ok((child, rx, vec![dir]))
        }
    }
}

/// TCP ports in LISTEN state within Bochs' RFB range (5900-5949), from /proc/net/tcp{,6}.
fn rfb_listeners() -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1).unwrap_or("");
            let state = f.nth(1).unwrap_or("");
            let port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()).unwrap_or(0);
            state == "0A" && (5900..=5949).contains(&port)
        })
        .count()
}

/// Start Bochs, one at a time. Bochs 2.7's RFB display binds its socket with SO_REUSEADDR, so two instances
/// starting together can bind the same port; the loser's listen() fails, its later binds fail on the
/// already-bound socket, and it exits with "RFB could not bind any port" before the BIOS runs. So the runner
/// holds a lock until the new instance's listener shows up, and retries a start that died that way.
fn start_bochs(dir: &Path, cfg: &Path, rc: &Path, log: &Path) -> Result<Child, String> {
    let lock_path = workspace_root().join("target").join("bochs-start.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock().map_err(|e| format!("{}: {e}", lock_path.display()))?;
    let mut why = String::new();
    for attempt in 1..=3 {
        let before = rfb_listeners();
        let out = std::fs::File::create(dir.join("bochs.out")).map_err(|e| e.to_string())?;
        let mut child = Command::new("bochs")
            .arg("-q")
            .arg("-f")
            .arg(cfg)
            .arg("-rc")
            .arg(rc)
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot start bochs: {e}"))?;
        let t = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let text = [log.to_path_buf(), dir.join("bochs.out")].iter().filter_map(|f| std::fs::read_to_string(f).ok()).collect::<String>();
                why = text.lines().rev().find(|l| l.contains("PANIC") || l.contains("rror")).unwrap_or("no message").to_string();
                eprintln!("questv: bochs exited at start ({status}, attempt {attempt}/3): {why}");
                break;
            }
            // Listening (or a host without /proc, or a starved one: give it a while): the next may start.
            if rfb_listeners() > before || t.elapsed() > Duration::from_secs(20) {
                let _ = lock.unlock();
                return Ok(child);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200 * attempt));
    }
    Err(format!("bochs did not start: {why}"))
}

/// Build, make the ISO, boot, stream and judge.
pub fn boot(o: &BootOptions) -> Result<BootReport, String> {
    if o.gdb && o.emulator == Emulator::Bochs {
        return Err("--gdb is supported with QEMU only".into());
    }
    // Check emulator tools before the (slow) build.
    match o.emulator {
        Emulator::Qemu => require_tool("qemu-system-x86_64", "qemu-system-x86")?,
        Emulator::Bochs => require_tool("bochs", "bochs bochsbios vgabios")?,
    }
    require_tool("grub-mkrescue", "grub-pc-bin grub-common xorriso mtools")?;
    let kernel = build_kernel(o.vt)?;
    let programs = ramdisk_files(o, &kernel)?;
    let tag = format!("{}-{}", o.mode(), std::process::id());
    let iso = make_iso(&kernel, &o.kernel_args(), &tag, &programs)?;
    if o.gdb {
        eprintln!(
            "questv: QEMU waits for gdb: gdb {} -ex 'target remote :1234'",
            kernel.display()
        );
    }
    let start = Instant::now();
    let (mut child, rx, scratch) = start_emulator(o, &iso, &tag)?;
    let deadline = if o.gdb { None } else { Some(start + Duration::from_secs(o.timeout_secs())) };
    let mut lines = Vec::new();
    let mut exited = false;
    let mut timed_out = false;
    let mut panic_seen: Option<Instant> = None;
    let echo = |l: &str| {
        if o.echo {
            println!("{l}");
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) => {
                echo(&l);
                let done = parse_done_line(&l).is_some();
                if is_panic_line(&l) && panic_seen.is_none() {
                    panic_seen = Some(Instant::now());
                }
                lines.push(l);
                if done && panic_seen.is_none() {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                exited = true;
                break;
            }
        }
        // Give a panicking kernel a moment to finish its dump.
        if panic_seen.is_some_and(|t| t.elapsed() > Duration::from_secs(1)) {
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            // Drain what the guest printed before the emulator exited.
            std::thread::sleep(Duration::from_millis(200));
            while let Ok(l) = rx.try_recv() {
                echo(&l);
                lines.push(l);
            }
            exited = true;
            break;
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            timed_out = true;
            break;
        }
    }
    let wall_time = start.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&iso);
    if judge(&lines, exited, timed_out) != Outcome::Reset || o.emulator != Emulator::Bochs {
        for d in scratch {
            let _ = if d.is_dir() { std::fs::remove_dir_all(d) } else { std::fs::remove_file(d) };
        }
    }
    let outcome = judge(&lines, exited, timed_out);
    Ok(BootReport { lines, outcome, wall_time })
}

/// `RESULT msgbench` lines as CSV rows (build, vcpu, size, mode, trials, rtt_cycles, one_way_cycles, exits).
pub fn msgbench_csv(lines: &[String]) -> (String, usize) {
    let mut csv = String::from("build,vcpu,size,mode,trials,rtt_cycles,one_way_cycles,rtt_vmexits,vmexits_per_notified_msg\n");
    let mut n = 0;
    for r in results(lines, "msgbench") {
        let f = |k| r.get(k).unwrap_or("");
        // VT ipi mode: the exits the sender's notified messages cost (SMP: -1, polled: no notified messages).
        let per_msg = match (r.get("rtt_vmexits").and_then(|v| v.parse::<i64>().ok()), r.get_u64("rtt_notified")) {
            (Some(e), Some(m)) if e >= 0 && m > 0 => format!("{:.3}", e as f64 / m as f64),
            _ => String::new(),
        };
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            f("build"), r.get("vcpu").unwrap_or("none"), f("size"), f("mode"), f("trials"), f("rtt_cycles"),
            f("one_way_cycles"), f("rtt_vmexits"), per_msg
        ));
        n += 1;
    }
    (csv, n)
}

/// Fig 9's series from msgbench lines: round-trip cycles against message size, one series per build and VCPU
/// set-up, for one notification mode (`polled` or `ipi`).
pub fn msgbench_series(lines: &[String], mode: &str) -> Vec<plot::Series> {
    let mut series: Vec<plot::Series> = Vec::new();
    for r in results(lines, "msgbench").filter(|r| r.get("mode") == Some(mode)) {
        let (Some(build), Some(size), Some(rtt)) = (r.get("build"), r.get_u64("size"), r.get_u64("rtt_cycles")) else {
            continue;
        };
        let name = format!("{} {}", if build == "vt" { "Quest-V (VT)" } else { "SMP" }, match r.get("vcpu").unwrap_or("none") {
            "hi" => "Hi (50 % VCPUs)",
            "lo" => "Low (40 % VCPUs)",
            _ => "no VCPUs",
        });
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push((size as f64, rtt as f64)),
            None => series.push(plot::Series { name, points: vec![(size as f64, rtt as f64)] }),
        }
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series
}

/// `msgbench` (paper Fig 9): the channel benchmark between endpoints 0 and 1 in both builds (same emulator), once
/// per VCPU set-up; one CSV and a PNG per notification mode under target/results/.
pub fn msgbench(o: &BootOptions, vcpus: &[&str]) -> Result<(String, PathBuf), String> {
    let trials = o.run.clone().unwrap_or_else(|| "5000".into());
    let trials = trials.trim();
    if trials.parse::<u64>().is_err() {
        return Err(format!("--run gives msgbench's trials per size, a number (got {trials:?})"));
    }
    let mut all: Vec<String> = Vec::new();
    for v in vcpus {
        eprintln!("questv: msgbench: VCPU set-up {v}");
        for r in run_both(o, &format!("msgbench {trials} {v}"))? {
            all.extend(r.lines);
        }
    }
    let (csv, n) = msgbench_csv(&all);
    let expected = 2 * 2 * 11 * vcpus.len();
    if n != expected {
        return Err(format!("expected {expected} RESULT msgbench lines (2 builds x 2 modes x 11 sizes x {} VCPU set-ups), got {n}", vcpus.len()));
    }
    let stem = format!("msgbench-{}-{}trials-{}", o.emulator.name(), trials, vcpus.join("-"));
    let dir = results_dir()?;
    let path = dir.join(format!("{stem}.csv"));
    std::fs::write(&path, &csv).map_err(|e| e.to_string())?;
    for mode in ["polled", "ipi"] {
        let png = dir.join(format!("{stem}-{mode}.png"));
        let title = format!("Fig 9: {mode} message round trip, {} ({} trials per size)", o.emulator.name(), trials);
        plot::line_chart(&png, &title, "message size (bytes)", "round trip (cycles, log scale)", true, true, &msgbench_series(&all, mode))?;
        eprintln!("questv: msgbench: figure {}", png.display());
    }
    Ok((csv, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn result_lines() {
        let r = parse_result_line("RESULT boot cpus_online=4 mode=smp\r\n").unwrap();
        assert_eq!(r.name, "boot");
        assert_eq!(r.get("cpus_online"), Some("4"));
        assert_eq!(r.get_u64("cpus_online"), Some(4));
        assert_eq!(r.get("mode"), Some("smp"));
        assert_eq!(r.get("missing"), None);
        let r = parse_result_line("RESULT exception vector=14 cr2=0x7fffdead0000").unwrap();
        assert_eq!(r.get_u64("cr2"), Some(0x7fff_dead_0000));
        assert_eq!(parse_result_line("RESULT empty").unwrap().fields, vec![]);
        assert!(r.from_monitor());
    }

    #[test]
    fn sandbox_lines_are_tagged_and_cannot_end_a_run() {
        let r = parse_result_line("[s2] RESULT forkwait iterations=10 sandbox=2").unwrap();
        assert_eq!((r.name.as_str(), r.sandbox, r.get_u64("iterations")), ("forkwait", Some(2), Some(10)));
        assert!(!r.from_monitor());
        assert_eq!(parse_result_line("[s0] RESULT sandbox_done sandbox=1 status=0").unwrap().sandbox, Some(0));
        assert_eq!(parse_result_line("[sx] RESULT a b=1"), None);
        assert_eq!(split_sandbox_prefix("[s12] text"), (Some(12), "text"));
        assert_eq!(split_sandbox_prefix("[cpu0 INFO ] x"), (None, "[cpu0 INFO ] x"));
        assert_eq!(parse_done_line("[s0] QUESTV DONE status=0"), None);
        assert_eq!(judge(&s(&["[s0] QUESTV DONE status=0"]), false, true), Outcome::Timeout);
        // A sandbox's panic is contained: it does not make the run a panic.
        assert_eq!(judge(&s(&["[s1] KERNEL PANIC on cpu 0", "QUESTV DONE status=137"]), false, false), Outcome::Done(137));
    }

    #[test]
    fn malformed_result_lines() {
        assert_eq!(parse_result_line("RESULT"), None);
        assert_eq!(parse_result_line("RESULT "), None);
        assert_eq!(parse_result_line("RESULT boot cpus_online"), None);
        assert_eq!(parse_result_line("RESULT boot =4"), None);
        assert_eq!(parse_result_line("RESULT a=b"), None);
        assert_eq!(parse_result_line("[cpu0] RESULT boot a=1"), None);
        assert_eq!(parse_result_line("RESULTS boot a=1"), None);
    }

    #[test]
    fn done_lines() {
        assert_eq!(parse_done_line("QUESTV DONE status=0\r"), Some(0));
        assert_eq!(parse_done_line("QUESTV DONE status=127"), Some(127));
        assert_eq!(parse_done_line("QUESTV DONE status=-1"), Some(-1));
        assert_eq!(parse_done_line("QUESTV DONE status="), None);
        assert_eq!(parse_done_line("QUESTV DONE"), None);
    }

    #[test]
    fn judging() {
        assert_eq!(judge(&s(&["x", "QUESTV DONE status=0"]), false, false), Outcome::Done(0));
        assert_eq!(judge(&s(&["QUESTV DONE status=3"]), true, false), Outcome::Done(3));
        // A panic is never success, even if a DONE line follows.
        assert_eq!(judge(&s(&["KERNEL PANIC on cpu 0", "QUESTV DONE status=0"]), false, false), Outcome::Panic);
        assert_eq!(judge(&s(&["booting"]), true, false), Outcome::Reset);
        assert_eq!(judge(&s(&["booting"]), false, true), Outcome::Timeout);
        assert_eq!(Outcome::Done(0).exit_code(), 0);
        assert_eq!(Outcome::Done(127).exit_code(), 1);
        assert_eq!(Outcome::Panic.exit_code(), 3);
        assert_eq!(Outcome::Reset.exit_code(), 4);
        assert_eq!(Outcome::Timeout.exit_code(), 5);
    }

    #[test]
    fn args() {
        let a = |v: &[&str]| parse_args(&s(v));
        let Ok(Cli::Boot(o)) = a(&["boot", "--cpus", "4", "--run", "ktest fault page", "--emulator", "bochs"]) else {
            panic!()
        };
        assert_eq!(o.cpus, 4);
        assert_eq!(o.emulator, Emulator::Bochs);
        assert_eq!(o.kernel_args(), "mode=smp run=ktest fault page");
        assert_eq!(o.timeout_secs(), 900);
        let Ok(Cli::Boot(o)) = a(&["boot", "--vt", "--slice-mib", "64", "--run", "x"]) else { panic!() };
        assert_eq!(o.kernel_args(), "mode=vt slice_mib=64 run=x");
        let Ok(Cli::Boot(o)) = a(&["boot", "--vt", "--watchdog-ms", "500", "--run", "x"]) else { panic!() };
        assert_eq!(o.kernel_args(), "mode=vt watchdog_ms=500 run=x");
        let Ok(Cli::Boot(o)) = a(&["boot", "--vt", "--recovery", "restart", "--run", "x"]) else { panic!() };
        assert_eq!(o.kernel_args(), "mode=vt recovery=restart run=x");
        assert!(a(&["boot", "--watchdog-ms", "x"]).is_err());
        assert!(a(&["boot", "--cpus", "0"]).is_err());
        assert!(a(&["boot", "--cpus"]).is_err());
        assert!(a(&["boot", "--run", "a\"b"]).is_err());
        assert!(a(&["boot", "--run", "$x"]).is_err());
        assert!(a(&["boot", "--bogus"]).is_err());
        assert!(a(&["frobnicate"]).is_err());
        assert!(matches!(a(&[]), Ok(Cli::Help)));
        let Ok(Cli::Boot(o)) = a(&["boot", "--firmware", "uefi", "--media", "usb"]) else { panic!() };
        assert_eq!((o.firmware, o.usb_stick), (Firmware::Uefi, true));
        assert!(a(&["boot", "--firmware", "coreboot"]).is_err() && a(&["boot", "--media", "floppy"]).is_err());
        assert!(matches!(a(&["boot", "--clock", "icount"]), Ok(Cli::Boot(o)) if o.icount));
        assert!(a(&["boot", "--clock", "icount", "--tcg", "multi"]).is_err() && a(&["boot", "--clock", "wall"]).is_err());
        let Ok(Cli::Image(o, out)) = a(&["image", "--vt", "--run", "forkwait 10", "--out", "/tmp/q.iso"]) else { panic!() };
        assert_eq!((o.kernel_args().as_str(), out), ("mode=vt run=forkwait 10", PathBuf::from("/tmp/q.iso")));
        assert!(matches!(a(&["image"]), Ok(Cli::Image(_, p)) if p.ends_with("target/questv-smp.iso")));
        assert!(a(&["boot", "--out", "x"]).is_err(), "--out is image's");
        assert!(matches!(a(&["paper", "--quick", "--no-linux"]), Ok(Cli::Paper(p)) if p.quick && !p.linux));
    }

    #[test]
    fn grub_cfg_rewrite() {
        let t = "set timeout=0\nset questv_args=\"mode=smp\"\nmenuentry x {\n    # @questv-modules@\n}\n";
        let out = grub_cfg_with_args(t, "mode=smp run=x 1", &["init".into(), "hello".into()]).unwrap();
        assert!(out.contains("set questv_args=\"mode=smp run=x 1\"\n"));
        assert!(out.contains("    module2 /boot/bin/init init\n    module2 /boot/bin/hello hello\n"));
        assert!(out.starts_with("set timeout=0\n"));
        assert!(grub_cfg_with_args("nothing", "x", &[]).is_err());
        assert!(grub_cfg_with_args("set questv_args=\"\"", "x", &["init".into()]).is_err());
        // The repository's own grub.cfg has both lines.
        let real = std::fs::read_to_string(workspace_root().join("grub/grub.cfg")).unwrap();
        assert!(grub_cfg_with_args(&real, "mode=smp", &["init".into()]).is_ok());
    }

    #[test]
    fn userland_bin_names() {
        let toml = std::fs::read_to_string(workspace_root().join("userland/Cargo.toml")).unwrap();
        let names = bin_names(&toml);
        for n in ["init", "forkwait-rs", "torture"] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        assert_eq!(bin_names("[package]\nname = \"x\"\n[[bin]]\nname = \"a\"\npath = \"p\"\n"), vec!["a"]);
    }

    #[test]
    fn comparison_pairs_cores() {
        let smp = s(&[
            "RESULT forkwait iterations=10 cycles=100 cycles_per_iter=10 lang=c cpu=1 sandbox=-1 vmexits=-1",
            "RESULT forkwait iterations=10 cycles=80 cycles_per_iter=8 lang=c cpu=0 sandbox=-1 vmexits=-1",
            "RESULT frames before=1 after=1",
        ]);
        let vt = s(&[
            "RESULT forkwait iterations=10 cycles=90 cycles_per_iter=9 lang=c cpu=0 sandbox=1 vmexits=0",
            "RESULT forkwait iterations=10 cycles=120 cycles_per_iter=12 lang=c cpu=0 sandbox=0 vmexits=2",
        ]);
        let rows = compare_rows(&smp, &vt);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].core, rows[0].smp_cycles_per_iter, rows[0].vt_cycles_per_iter, rows[0].vt_exits), (0, 8, 12, 2));
        assert!((rows[0].ratio() - 1.5).abs() < 1e-9);
        assert_eq!((rows[1].core, rows[1].vt_exits), (1, 0));
        let csv = compare_csv(&rows);
        assert!(csv.starts_with("core,smp_cycles_per_iter,vt_cycles_per_iter,vt_over_smp,vt_exits_during_run\n0,8,12,1.5000,2\n"));
        assert!(compare_table(&rows).lines().count() == 3);
        assert_eq!(one_instance_cycles(&s(&["noise", "RESULT forkwait iterations=10 cycles=70 cycles_per_iter=7 cpu=0"])), Some(7));
        assert_eq!(one_instance_cycles(&s(&["RESULT frames before=1 after=1"])), None);
        // Mean per instance: SMP (8+10)/2 = 9, VT (12+9)/2 = 10.5, over one instance of 6.
        assert!(scaling_table(&rows, 6).contains("smp_per_instance/one=1.500 vt_per_sandbox/one=1.750"));
        assert!(matches!(parse_args(&s(&["compare", "--emulator", "bochs", "--cpus", "4"])), Ok(Cli::Compare(_))));
        assert!(parse_args(&s(&["compare", "--vt"])).is_err());
        assert!(matches!(parse_args(&s(&["msgbench", "--cpus", "2"])), Ok(Cli::MsgBench(_, v)) if v == ["none"]));
        assert!(matches!(parse_args(&s(&["msgbench", "--vcpu", "hi,lo,hi"])), Ok(Cli::MsgBench(_, v)) if v == ["hi", "lo"]));
        assert!(matches!(parse_args(&s(&["msgbench", "--vcpu", "all"])), Ok(Cli::MsgBench(_, v)) if v == MSGBENCH_VCPUS));
        assert!(parse_args(&s(&["msgbench", "--vcpu", "mid"])).is_err());
        assert!(parse_args(&s(&["compare", "--vcpu", "hi"])).is_err());
        let (csv, n) = msgbench_csv(&s(&[
            "[s0] RESULT msgbench build=vt size=4 mode=ipi trials=10 rtt_cycles=5 one_way_cycles=3 rtt_vmexits=10 rtt_notified=10",
            "RESULT msgbench build=smp size=4 mode=polled trials=10 rtt_cycles=5 one_way_cycles=3 rtt_vmexits=-1 rtt_notified=0 vcpu=hi",
            "x",
        ]));
        assert_eq!(n, 2);
        assert_eq!(
            csv,
            "build,vcpu,size,mode,trials,rtt_cycles,one_way_cycles,rtt_vmexits,vmexits_per_notified_msg\nvt,none,4,ipi,10,5,3,10,1.000\nsmp,hi,4,polled,10,5,3,-1,\n"
        );
        let series = msgbench_series(&s(&[
            "RESULT msgbench build=smp size=8 mode=polled trials=10 rtt_cycles=7 one_way_cycles=3 vcpu=lo",
            "RESULT msgbench build=smp size=4 mode=polled trials=10 rtt_cycles=5 one_way_cycles=3 vcpu=lo",
            "RESULT msgbench build=smp size=4 mode=ipi trials=10 rtt_cycles=9 one_way_cycles=3 vcpu=lo",
            "[s1] RESULT msgbench build=vt size=4 mode=polled trials=10 rtt_cycles=6 one_way_cycles=3 vcpu=hi",
        ]), "polled");
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].points, vec![(4.0, 5.0), (8.0, 7.0)]);
        assert!(series[1].name.contains("VT") && series[1].name.contains("Hi"));
    }

    #[test]
    fn bochsrc_is_headless() {
        let rc = bochsrc(Path::new("/x.iso"), Path::new("/s"), Path::new("/l"), 4, 256, None);
        assert!(rc.contains("display_library: rfb"));
        assert!(rc.contains("count=4"));
        assert!(rc.contains("reset_on_triple_fault=0"));
        assert!(rc.contains("sound: driver=dummy"));
        assert!(rc.contains("megs: 256"));
    }
}
