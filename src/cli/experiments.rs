//! The experiments' own option parsers: `ping` (over the shared boot options), `netfig`, `recovery`, `fig10`,
//! `faults` and `paper`.
#![forbid(unsafe_code)]

use super::boot::{parse_boot_options, Value};
use super::{faults, fig10, netfig, paper, parse_emulator, ping, recoveryfig, Cli, USAGE};
use crate::emulator::Emulator;
use crate::options::BootOptions;

/// `ping`: the shared boot options (2 CPUs by default) and the peer's; no `--gdb`.
pub(super) fn parse_ping(args: &[String]) -> Result<Cli, String> {
    let mut p = ping::PingOptions::default();
    let o = parse_boot_options(args, BootOptions { cpus: 2, ..BootOptions::default() }, |a, value| match a {
        "--guests" | "--sharers" | "--count" | "--interval-ms" | "--size" | "--garbage" | "--seed" => {
            ping_number(&mut p, a, value)?;
            Ok(true)
        }
        "--inject" => {
            p.inject = Some(value("--inject")?);
            Ok(true)
        }
        _ => Ok(false),
    })?;
    if o.gdb {
        return Err("ping does not take --gdb".into());
    }
    // QUESTV_ECHO=1 shows the guest's serial output while the peer runs (debugging a run that hangs).
    p.boot = BootOptions { echo: std::env::var_os("QUESTV_ECHO").is_some(), ..o };
    Ok(Cli::Ping(p))
}

/// One of `ping`'s numeric options, clamped to what the peer supports.
fn ping_number(p: &mut ping::PingOptions, name: &str, value: &mut Value) -> Result<(), String> {
    let v: u64 = value(name)?.parse().map_err(|_| format!("{name} needs a number"))?;
    match name {
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
    Ok(())
}

pub(super) fn parse_faults(args: &[String]) -> Result<Cli, String> {
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

pub(super) fn parse_recoveryfig(args: &[String]) -> Result<Cli, String> {
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

pub(super) fn parse_netfig(args: &[String]) -> Result<Cli, String> {
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
            "--iommu" => {
                o.iommu = Some(match value("--iommu")?.as_str() {
                    "none" => false,
                    "vtd" => true,
                    other => return Err(format!("--iommu needs none or vtd, not {other:?}")),
                })
            }
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    Ok(Cli::NetFig(o))
}

pub(super) fn parse_fig10(args: &[String]) -> Result<Cli, String> {
    let mut o = fig10::Fig10Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--emulator" => o.emulator = parse_emulator(it.next().map(String::as_str))?,
            "--quick" => (o.count, o.interval_ms, o.break_after) = (40, 250, 12),
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    Ok(Cli::Fig10(o))
}

pub(super) fn parse_paper(args: &[String]) -> Result<Cli, String> {
    let mut o = paper::PaperOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--emulator" => o.emulator = parse_emulator(it.next().map(String::as_str))?,
            "--quick" => o.quick = true,
            "--publish" => o.publish = true,
            "--no-linux" => o.linux = false,
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    Ok(Cli::Paper(o))
}
