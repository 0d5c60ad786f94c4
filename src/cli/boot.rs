//! The shared boot options (every boot-like command takes them) and the boot-like commands' own parsers: `boot`,
//! `image`, `compare`, `msgbench` (and `ping`'s boot part, in [`super::experiments`]).
#![forbid(unsafe_code)]

use super::{choose, parse_emulator, Cli, USAGE};
use crate::experiments::msgbench::MSGBENCH_VCPUS;
use crate::host::workspace_root;
use crate::image::MAX_ADDED_FILES;
use crate::options::{BootOptions, Firmware};
use crate::usercc;
use std::path::PathBuf;

/// An option's value, taken from the command line: `Err("NAME needs a value")` at its end.
pub(super) type Value<'v> = dyn FnMut(&str) -> Result<String, String> + 'v;

/// Parse a boot-like command's options: each is one of the shared boot options or one `extra` takes (it gets the
/// option and its value source, and says whether it was its own); anything else is unknown.
pub(super) fn parse_boot_options(
    args: &[String],
    mut o: BootOptions,
    mut extra: impl FnMut(&str, &mut Value) -> Result<bool, String>,
) -> Result<BootOptions, String> {
    let mut it = args.iter();
    let mut env: Vec<String> = Vec::new();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        if a == "--env" {
            env.push(env_assignment(&value("--env")?)?);
            continue;
        }
        if !boot_option(&mut o, a, &mut value)? && !extra(a, &mut value)? {
            return Err(format!("unknown option {a:?}\n{USAGE}"));
        }
    }
    if !env.is_empty() {
        // init takes leading NAME=VALUE words as the program's environment (as a shell does).
        let run = o.run.take().ok_or("--env needs --run (the program the environment is for)")?;
        o.run = Some(format!("{} {run}", env.join(" ")));
    }
    if o.icount && o.tcg_single == Some(false) {
        return Err("--clock icount runs the vCPUs on one host thread; it does not go with --tcg multi".into());
    }
    if let Some(path) = o.config.clone() {
        apply_config(&mut o, &path)?;
    }
    Ok(o)
}

/// `--config FILE`: check the partition file against the machine the options describe (before anything is
/// built) and take its settings: each problem with its line and column, and the run refused (status 2).
fn apply_config(o: &mut BootOptions, path: &std::path::Path) -> Result<(), String> {
    if !o.vt {
        return Err(format!("--config {}: a partition file lays out the VT build's sandboxes; add --vt", path.display()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
    let root = crate::workspace_root();
    let toml = std::fs::read_to_string(root.join("userland/Cargo.toml")).map_err(|e| e.to_string())?;
    let mut programs = crate::image::bin_names(&toml);
    programs.extend(crate::image::user_c_program_names()?);
    programs.extend(o.add.iter().filter_map(|p| p.file_name()?.to_str().map(String::from)));
    programs.push("busybox".into());
    programs.extend(crate::linux::APPLETS.iter().map(|a| a.to_string()));
    // The kernel's own tests (`ktest ...`) run as a sandbox's command too.
    programs.push("ktest".into());
    let machine = crate::partitions::Machine { cpus: o.cpus, mem_mib: u64::from(o.mem_mib), programs };
    let p = crate::partitions::check(&text, &machine).map_err(|problems| {
        let mut e = format!("--config {}: {} problem{}:", path.display(), problems.len(), if problems.len() == 1 { "" } else { "s" });
        for pr in problems {
            e.push_str(&format!("\n{}:{pr}", path.display()));
        }
        e
    })?;
    let missing: Vec<&str> = p.sandboxes.iter().filter(|s| s.run.is_none()).map(|s| s.name.as_str()).collect();
    // (`shell` gives them its shell.)
    if !missing.is_empty() && o.run.is_none() && !o.interactive {
        return Err(format!("--config {}: sandbox{} {} ha{} no run and there is no --run for {}", path.display(),
            if missing.len() == 1 { "" } else { "es" }, missing.join(", "), if missing.len() == 1 { "s" } else { "ve" }, if missing.len() == 1 { "it" } else { "them" }));
    }
    if p.recovery_list(o.cpus).split(',').any(|x| x != "none") {
        o.recovery = Some(p.recovery_list(o.cpus));
    }
    if let Some(w) = p.watchdog_ms {
        o.watchdog_ms = Some(u32::try_from(w).map_err(|_| format!("--config {}: watchdog_ms = {w} is too large", path.display()))?);
    }
    o.partition = Some(p);
    Ok(())
}

/// `--env NAME=VALUE`: a C identifier, `=`, and a value without blanks or the characters grub.cfg cannot carry.
fn env_assignment(a: &str) -> Result<String, String> {
    let (name, value) = a.split_once('=').ok_or_else(|| format!("--env {a:?}: expected NAME=VALUE"))?;
    let name_ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !name_ok {
        return Err(format!("--env {a:?}: a name is a letter or '_', then letters, digits and '_'"));
    }
    if value.contains(|c: char| c.is_whitespace() || ['"', '\\', '$', '\''].contains(&c)) {
        return Err(format!("--env {a:?}: a value may not contain blanks, quotes, '\\' or '$' (it goes into grub.cfg)"));
    }
    Ok(a.to_string())
}

/// One shared boot option `a` into `o`; `Ok(false)` if `a` is not one.
fn boot_option(o: &mut BootOptions, a: &str, value: &mut Value) -> Result<bool, String> {
    match a {
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
            if r.contains(['"', '\\', '$', '\n', '\r', '\'', '|', '&', ';', '<', '>', '(', ')', '`', '*', '?']) {
                // Shell text grub.cfg cannot carry (or that needs a shell): a script in the initramfs, run by
                // busybox's sh (which the runner adds).
                o.run_script = Some(r);
                o.run = Some(RUN_SCRIPT_COMMAND.into());
            } else {
                o.run = Some(r);
            }
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
        "--nic-port" => o.nic_port = Some(value("--nic-port")?.parse().map_err(|_| "--nic-port needs a UDP port".to_string())?),
        "--nic-sharers" => o.nic_sharers = value("--nic-sharers")?.parse().map_err(|_| "--nic-sharers needs a number".to_string())?,
        "--recovery" => o.recovery = Some(value("--recovery")?),
        "--crash-loop" => o.crash_loop = Some(value("--crash-loop")?),
        "--watchdog-ms" => o.watchdog_ms = Some(value("--watchdog-ms")?.parse().map_err(|_| "--watchdog-ms needs milliseconds".to_string())?),
        "--timeout" => o.timeout = Some(value("--timeout")?.parse().map_err(|_| "--timeout needs seconds".to_string())?),
        "--media" => {
            o.usb_stick = choose("boot medium", &value("--media")?, &[("cdrom", false), ("usb", true)])?
        }
        "--clock" => o.icount = choose("guest clock", &value("--clock")?, &[("host", false), ("icount", true)])?,
        "--iommu" => o.iommu = Some(choose("IOMMU", &value("--iommu")?, &[("none", false), ("vtd", true)])?),
        "--add" => add_file(o, PathBuf::from(value("--add")?))?,
        "--config" => o.config = Some(PathBuf::from(value("--config")?)),
        "--root" => {
            let d = PathBuf::from(value("--root")?);
            if !d.is_dir() {
                return Err(format!("--root {}: not a directory", d.display()));
            }
            o.root = Some(d);
        }
        "--mem" => {
            o.mem_mib = value("--mem")?.parse().map_err(|_| "--mem needs MiB".to_string())?;
            if o.mem_mib < 64 {
                return Err("--mem must be at least 64 MiB".into());
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// `--add PATH`: its file name becomes its ramdisk name.
fn add_file(o: &mut BootOptions, p: PathBuf) -> Result<(), String> {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !usercc::valid_program_name(name) {
        return Err(format!("--add {}: the file name {name:?} becomes its ramdisk name: letters, digits, '-', '_', '.', and not percpu, kernel or ktest*", p.display()));
    }
    if o.add.len() >= MAX_ADDED_FILES {
        return Err(format!("--add: at most {MAX_ADDED_FILES} files (the kernel reserves a fixed number of boot modules)"));
    }
    o.add.push(p);
    Ok(())
}

/// What init runs for a `--run` kept as a script: the shell, on the script the initramfs holds.
pub const RUN_SCRIPT_COMMAND: &str = "sh /etc/questv-run";

/// `boot`: the shared options only.
pub(super) fn parse_boot(args: &[String]) -> Result<Cli, String> {
    Ok(Cli::Boot(parse_boot_options(args, BootOptions::default(), |_, _| Ok(false))?))
}

/// `shell`: an interactive busybox `sh` on the console; with `--vt` one in every sandbox, the monitor routing
/// what is typed to one of them at a time (Ctrl-A three times switches).
pub(super) fn parse_shell(args: &[String]) -> Result<Cli, String> {
    let o = parse_boot_options(args, BootOptions { interactive: true, ..BootOptions::default() }, |_, _| Ok(false))?;
    if o.emulator == crate::Emulator::Bochs {
        return Err("shell runs under QEMU (its serial console is the terminal); Bochs has no such console here".into());
    }
    if o.run.is_some() {
        return Err("shell runs the shell; use boot --run for a command".into());
    }
    Ok(Cli::Shell(BootOptions { interactive: true, run: Some("busybox sh".into()), ..o }))
}

/// `image`: the shared options and `--out PATH` (default target/questv-MODE.iso).
pub(super) fn parse_image(args: &[String]) -> Result<Cli, String> {
    let mut out = PathBuf::new();
    let o = parse_boot_options(args, BootOptions::default(), |a, value| match a {
        "--out" => {
            out = PathBuf::from(value("--out")?);
            Ok(true)
        }
        _ => Ok(false),
    })?;
    if o.gdb || o.nic_port.is_some() {
        return Err("image writes a bootable ISO; --gdb and --nic-port are for boot".into());
    }
    let out = if out.as_os_str().is_empty() { workspace_root().join("target").join(format!("questv-{}.iso", o.mode())) } else { out };
    Ok(Cli::Image(o, out))
}

/// `compare`, and with `msgbench` set `msgbench`, which also takes `--vcpu` (default `none`, duplicates dropped).
pub(super) fn parse_compare(args: &[String], msgbench: bool) -> Result<Cli, String> {
    let mut vcpus: Vec<&'static str> = Vec::new();
    let mut linux = false;
    // `compare --config FILE`: a third run, the VT build laid out by the file (checked here, as `boot` would).
    let mut config = None;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" && !msgbench {
            config = Some(PathBuf::from(it.next().ok_or("--config needs a value")?));
        } else {
            rest.push(a.clone());
        }
    }
    let args = &rest[..];
    let mut o = parse_boot_options(args, BootOptions::default(), |a, value| match a {
        "--linux" if !msgbench => {
            linux = true;
            Ok(true)
        }
        "--vcpu" if msgbench => {
            for v in value("--vcpu")?.split(',') {
                match v {
                    "all" => vcpus.extend(MSGBENCH_VCPUS),
                    v => vcpus.push(MSGBENCH_VCPUS.into_iter().find(|m| *m == v).ok_or_else(|| format!("unknown VCPU set-up {v:?} (none, hi, lo or all)"))?),
                }
            }
            Ok(true)
        }
        _ => Ok(false),
    })?;
    if o.vt || o.gdb {
        return Err("compare/msgbench boot both builds themselves; --vt and --gdb do not apply".into());
    }
    if vcpus.is_empty() {
        vcpus.push("none");
    }
    let mut seen = Vec::new();
    vcpus.retain(|v| if seen.contains(v) { false } else { seen.push(*v); true });
    if linux && o.emulator != crate::Emulator::Qemu {
        return Err("compare --linux runs Linux in QEMU only".into());
    }
    if let Some(path) = config {
        let mut v = BootOptions { vt: true, run: Some(o.run.clone().unwrap_or_else(|| "forkwait 2000".into())), ..o.clone() };
        apply_config(&mut v, &path)?;
        if v.partition.as_ref().is_some_and(|p| p.sandboxes.iter().any(|s| s.nic)) {
            return Err(format!("--config {}: compare runs no network (nic = true)", path.display()));
        }
        o.config = Some(path);
        o.partition = v.partition;
    }
    Ok(if msgbench { Cli::MsgBench(o, vcpus) } else { Cli::Compare(o, linux) })
}
