//! Kernel command line (from GRUB): space-separated `key=value` options; `run=` takes the rest of the line so
//! the command to run may contain spaces (`mode=smp run=forkwait 1000`). The keys the monitor writes for a
//! sandbox kernel are the ABI's (`questv_abi::boot`): this parser hands them to it.
#![forbid(unsafe_code)]

use questv_abi::boot::{self, SandboxArgs, SandboxArgsParser};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options<'a> {
    pub mode: Option<&'a str>,
    pub log_level: LogLevel,
    pub run: Option<&'a str>,
    /// VT build: set when this kernel runs as a sandbox under the monitor (the monitor's boot arguments).
    pub sandbox: Option<SandboxArgs<'a>>,
    /// Sandbox slice size requested from the monitor, in MiB.
    pub slice_mib: Option<u64>,
    /// VT monitor: watchdog period in ms (VMX-preemption timer; 0 or absent = off).
    pub watchdog_ms: Option<u64>,
    /// VT monitor, xAPIC machines: `apic=passthrough` maps the APIC page writable into every sandbox (no exits,
    /// no IPI filtering: for measuring the trade-off only); the default traps writes and checks them.
    pub apic_passthrough: bool,
    /// SMP build: `net=on` brings up the e1000 (10.0.0.2/24, interrupts to CPU 0).
    pub net: bool,
    /// VT monitor: `nic=0,1` — the sandboxes that share the e1000 (checked by the monitor).
    pub nic_sharers: Option<&'a str>,
    /// VT monitor: `nic_mac=device` gives every sharer the NIC's own (EEPROM) MAC instead of a virtual one —
    /// for backends that deliver only frames addressed to that one MAC (Bochs' `ethmod=socket`); sharers are
    /// then told apart by IPv4 address alone.
    pub nic_device_mac: bool,
    /// VT monitor: `recovery=none|restart|driver|remote`, for all sandboxes or one entry per sandbox (docs/recovery.md).
    pub recovery: Option<&'a str>,
    /// VT monitor: `crash_loop=LIMIT/WINDOW_MS` or `off` (docs/recovery.md; checked by the monitor).
    pub crash_loop: Option<&'a str>,
    /// `console=input`: the console takes typed input (an interactive shell). In the VT build the monitor then
    /// routes the UART's input to the sandbox with the focus; the SMP kernel polls the UART in any case.
    pub console_input: bool,
    /// `vcpus=main:2000:10000,...`: VCPUs to create before the program starts (a partition file's `vcpus`).
    pub vcpus: Option<&'a str>,
    /// First option this parser did not understand (reported, not fatal: a typo must not brick a boot).
    pub unknown: Option<&'a str>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    BadLogLevel(&'a str),
    BadNumber(&'a str),
}

pub fn parse(line: &str) -> Result<Options<'_>, CmdlineError<'_>> {
    let mut opts = Options {
        mode: None,
        log_level: LogLevel::Info,
        run: None,
        sandbox: None,
        slice_mib: None,
        watchdog_ms: None,
        apic_passthrough: false,
        net: false,
        nic_sharers: None,
        nic_device_mac: false,
        recovery: None,
        crash_loop: None,
        console_input: false,
        vcpus: None,
        unknown: None,
    };
    let mut sandbox = SandboxArgsParser::default();
    let mut rest = line.trim();
    while !rest.is_empty() {
        if let Some(cmd) = rest.strip_prefix("run=") {
            let cmd = cmd.trim();
            opts.run = if cmd.is_empty() { None } else { Some(cmd) };
            break;
        }
        let (word, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        rest = tail.trim_start();
        if let Some((k, v)) = word.split_once('=') {
            if sandbox.accept(k, v, word).map_err(|boot::BadArg(w)| CmdlineError::BadNumber(w))? && k != "recovery" {
                continue;
            }
        }
        match word.split_once('=') {
            Some(("mode", v)) => opts.mode = Some(v),
            Some(("loglevel", v)) => {
                opts.log_level = match v {
                    "error" => LogLevel::Error,
                    "warn" => LogLevel::Warn,
                    "info" => LogLevel::Info,
                    "debug" => LogLevel::Debug,
                    "trace" => LogLevel::Trace,
                    _ => return Err(CmdlineError::BadLogLevel(v)),
                }
            }
            Some(("apic", "passthrough")) => opts.apic_passthrough = true,
            Some(("apic", "trap")) => opts.apic_passthrough = false,
            Some(("net", "on")) => opts.net = true,
            Some(("net", "off")) => opts.net = false,
            Some(("nic", v)) => opts.nic_sharers = Some(v),
            Some(("nic_mac", "device")) => opts.nic_device_mac = true,
            Some(("recovery", v)) => opts.recovery = Some(v),
            Some(("crash_loop", v)) => opts.crash_loop = Some(v),
            Some(("nic_mac", "virtual")) => opts.nic_device_mac = false,
            Some(("console", "input")) => opts.console_input = true,
            Some(("vcpus", v)) => opts.vcpus = Some(v),
            Some(("console", "output")) => opts.console_input = false,
            Some((k @ ("slice_mib" | "watchdog_ms"), v)) => {
                let n = boot::number(v).ok_or(CmdlineError::BadNumber(word))?;
                match k {
                    "watchdog_ms" => opts.watchdog_ms = Some(n),
                    _ => opts.slice_mib = Some(n),
                }
            }
            _ => {
                if opts.unknown.is_none() {
                    opts.unknown = Some(word);
                }
            }
        }
    }
    opts.sandbox = sandbox.finish();
    Ok(opts)
}

/// Split a command into program name and argument words.
pub fn split_command(cmd: &str) -> (&str, impl Iterator<Item = &str>) {
    let mut words = cmd.split_whitespace();
    let prog = words.next().unwrap_or("");
    (prog, words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options_and_run_rest() {
        let o = parse("mode=smp loglevel=debug run=forkwait  1000 x=y").unwrap();
        assert_eq!(o.mode, Some("smp"));
        assert_eq!(o.log_level, LogLevel::Debug);
        assert_eq!(o.run, Some("forkwait  1000 x=y"));
        assert_eq!(o.unknown, None);
    }

    #[test]
    fn defaults_and_unknown() {
        let o = parse("").unwrap();
        assert_eq!((o.mode, o.log_level, o.run, o.sandbox, o.unknown), (None, LogLevel::Info, None, None, None));
        let o = parse("  bogus mode=vt run=  ").unwrap();
        assert_eq!(o.unknown, Some("bogus"));
        assert_eq!(o.mode, Some("vt"));
        assert_eq!(o.run, None);
    }

    #[test]
    fn sandbox_options() {
        let o = parse("mode=vt sandbox=3 shared=0xe0000000 tsc_hz=50000000 lapic_hz=3125000 run=forkwait 5").unwrap();
        let s = o.sandbox.unwrap();
        assert_eq!((s.sandbox, s.shared, s.tsc_hz, s.lapic_hz), (3, 0xE000_0000, 50_000_000, 3_125_000));
        assert_eq!((o.run, o.unknown), (Some("forkwait 5"), None));
        assert_eq!(parse("sandbox=x"), Err(CmdlineError::BadNumber("sandbox=x")));
        assert_eq!(parse("sandbox=99999999999"), Err(CmdlineError::BadNumber("sandbox=99999999999")));
    }

    #[test]
    fn watchdog_period() {
        assert_eq!(parse("mode=vt watchdog_ms=500 run=x").unwrap().watchdog_ms, Some(500));
        assert_eq!(parse("mode=vt").unwrap().watchdog_ms, None);
        assert_eq!(parse("watchdog_ms=soon"), Err(CmdlineError::BadNumber("watchdog_ms=soon")));
    }

    #[test]
    fn apic_access() {
        assert!(parse("mode=vt apic=passthrough").unwrap().apic_passthrough);
        assert!(!parse("mode=vt apic=trap").unwrap().apic_passthrough);
        assert_eq!(parse("apic=open").unwrap().unknown, Some("apic=open"));
    }

    #[test]
    fn network_options() {
        assert!(parse("mode=smp net=on run=netserve").unwrap().net);
        assert!(!parse("mode=smp").unwrap().net);
        assert_eq!(parse("mode=vt nic=0,1 run=x").unwrap().nic_sharers, Some("0,1"));
        assert!(!parse("mode=vt nic=0,1").unwrap().nic_device_mac);
        assert!(parse("mode=vt nic=0,1 nic_mac=device").unwrap().nic_device_mac);
        let o = parse("mode=vt recovery=restart,none run=x").unwrap();
        assert_eq!((o.recovery, o.sandbox), (Some("restart,none"), None));
        let o = parse("mode=vt sandbox=2 recovery=restart incarnation=3 run=x").unwrap();
        assert_eq!((o.recovery, o.sandbox.unwrap().recovery, o.sandbox.unwrap().incarnation), (Some("restart"), Some("restart"), 3));
        assert!(parse("incarnation=-1").is_err());
        assert_eq!(parse("nic_mac=bogus").unwrap().unknown, Some("nic_mac=bogus"));
        let o = parse("mode=vt sandbox=1 nic_mmio=0xfebc0000 nic_dma=0x2000000 nic_index=1 nic_claims=0x3000000").unwrap();
        let nic = o.sandbox.unwrap().nic.unwrap();
        assert_eq!((nic.mmio, nic.dma, nic.index, nic.claims), (0xFEBC_0000, 0x200_0000, 1, 0x300_0000));
        assert_eq!(parse("nic_dma=here"), Err(CmdlineError::BadNumber("nic_dma=here")));
    }

    #[test]
    fn bad_log_level_is_an_error() {
        assert_eq!(parse("loglevel=loud"), Err(CmdlineError::BadLogLevel("loud")));
    }

    #[test]
    fn split() {
        let (p, args) = split_command("ktest fault  page");
        assert_eq!(p, "ktest");
        assert_eq!(args.collect::<Vec<_>>(), vec!["fault", "page"]);
        assert_eq!(split_command("").0, "");
    }
}
