//! The runner's command line: [`Cli`], [`USAGE`] and [`parse_args`], which hands each command's options to that
//! command's own parser (boot-like commands in `boot`, the experiments in `experiments`, the user-program
//! tools in `programs`); the boot-like ones parse their options over the shared boot options.
#![forbid(unsafe_code)]

mod boot;
mod experiments;
mod programs;

use crate::emulator::Emulator;
use crate::experiments::{faults, fig10, netfig, paper, ping, recoveryfig};
use crate::options::BootOptions;
use crate::usercc;
use std::path::PathBuf;

pub enum Cli {
    Boot(BootOptions),
    /// An interactive shell on the console (busybox `sh`).
    Shell(BootOptions),
    /// Boot the SMP and the VT image with the same workload and compare (options as for boot; `vt` unused).
    /// The options, and `--linux` (also run it on Linux 6.1 in the same emulator).
    Compare(BootOptions, bool),
    /// The channel benchmark in both builds (`--run` gives the trials: default "5000"), once per VCPU set-up
    /// (`--vcpu`, msgbench's `none|hi|lo`).
    MsgBench(BootOptions, Vec<&'static str>),
    /// Boot with an e1000 on a UDP backend and ping the guests from the host peer.
    Ping(ping::PingOptions),
    /// The network figures (Figs 8 and 11).
    NetFig(netfig::NetFigOptions),
    Recovery(recoveryfig::RecoveryFigOptions),
    Fig10(fig10::Fig10Options),
    Faults(faults::FaultsOptions),
    /// The paper's whole evaluation (Table 1, Figs 6-11) and target/results/report.md.
    Paper(paper::PaperOptions),
    /// Build the hybrid ISO `boot` would boot and keep it (for a USB stick or another emulator).
    Image(BootOptions, PathBuf),
    /// Compile a C file with musl-gcc (static; questv's own headers on the include path) into an executable.
    Cc(usercc::CcOptions),
    /// Write a Rust user-program crate (NAME, directory).
    NewProgram(String, PathBuf),
    Help,
}

pub const USAGE: &str = "usage: questv boot [--vt] [--emulator qemu|bochs] [--cpus N] [--run \"PROG ARGS\"] \
[--timeout SECS] [--mem MIB] [--slice-mib MIB] [--watchdog-ms MS] [--recovery restart|none|P0,P1,..] [--crash-loop LIMIT/WINDOW_MS|off] [--apic trap|passthrough] [--tcg single|multi] [--clock host|icount] [--iommu none|vtd] [--firmware bios|uefi] [--media cdrom|usb] [--add PATH].. [--root DIR] [--env NAME=VALUE].. [--config FILE (with --vt)] [--gdb]\n       questv shell [--vt] [--cpus N] [--add PATH].. [--root DIR] [--mem MIB] [--config FILE]\n       questv image [--vt] [--run \"PROG ARGS\"] [--add PATH].. [--recovery ..] [--watchdog-ms MS] [--out PATH]\n       questv cc FILE.c [-o OUT] [GCC ARGS..]\n       questv new-program NAME [--dir DIR]\n       questv compare [--emulator qemu|bochs] [--cpus N] [--run \"PROG ARGS\"] [--add PATH].. [--linux] [--config FILE] [--timeout SECS] [--mem MIB] [--apic trap|passthrough] [--tcg single|multi] [--clock host|icount]\n       questv ping [--vt] [--emulator qemu|bochs] [--cpus N] [--guests K] [--sharers S] [--count N] [--interval-ms MS] [--size B] [--garbage N] [--seed S] [--recovery restart|none] [--inject \"KIND SANDBOX [after_pings=N]\"] [--apic trap|passthrough] [--iommu none|vtd] [--timeout SECS]\n       questv netfig [--emulator qemu|bochs] [--cpus N] [--count N] [--interval-ms MS] [--quick] [--no-linux] [--iommu none|vtd]\n       questv recovery [--emulator qemu|bochs] [--cpus N] [--count N] [--interval-ms MS] [--after N] [--quick]\n       questv fig10 [--emulator qemu|bochs] [--quick]\n       questv faults [--emulator qemu|bochs] [--cpus N] [--count N] [--seed S]\n       questv paper [--emulator qemu|bochs] [--quick] [--no-linux] [--publish]\n       questv msgbench [--emulator qemu|bochs] [--cpus N] [--run TRIALS] [--vcpu none|hi|lo|all[,..]] [--timeout SECS] [--apic trap|passthrough] [--tcg single|multi] [--clock host|icount]";

/// Parse the runner's command line (without the program name).
pub fn parse_args(args: &[String]) -> Result<Cli, String> {
    let rest = args.get(1..).unwrap_or_default();
    match args.first().map(String::as_str) {
        Some("boot") => boot::parse_boot(rest),
        Some("shell") => boot::parse_shell(rest),
        Some("image") => boot::parse_image(rest),
        Some("compare") => boot::parse_compare(rest, false),
        Some("msgbench") => boot::parse_compare(rest, true),
        Some("ping") => experiments::parse_ping(rest),
        Some("netfig") => experiments::parse_netfig(rest),
        Some("recovery") => experiments::parse_recoveryfig(rest),
        Some("fig10") => experiments::parse_fig10(rest),
        Some("faults") => experiments::parse_faults(rest),
        Some("cc") => programs::parse_cc(rest),
        Some("new-program") => programs::parse_new_program(rest),
        Some("paper") => experiments::parse_paper(rest),
        Some("-h") | Some("--help") | Some("help") | None => Ok(Cli::Help),
        Some(other) => Err(format!("unknown command {other:?}\n{USAGE}")),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiments::msgbench::MSGBENCH_VCPUS;
    use crate::options::Firmware;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
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
        // Shell text goes to the initramfs as a script, run by sh.
        let Ok(Cli::Boot(o)) = a(&["boot", "--run", "sh -c 'echo \"$x\"'"]) else { panic!() };
        assert_eq!((o.run.as_deref(), o.run_script.as_deref()), (Some(boot::RUN_SCRIPT_COMMAND), Some("sh -c 'echo \"$x\"'")));
        let Ok(Cli::Boot(o)) = a(&["boot", "--run", "forkwait 10"]) else { panic!() };
        assert_eq!((o.run.as_deref(), o.run_script.as_deref()), (Some("forkwait 10"), None));
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
    fn compare_and_msgbench_args() {
        assert!(matches!(parse_args(&s(&["compare", "--emulator", "bochs", "--cpus", "4"])), Ok(Cli::Compare(_, false))));
        assert!(parse_args(&s(&["compare", "--vt"])).is_err());
        assert!(matches!(parse_args(&s(&["msgbench", "--cpus", "2"])), Ok(Cli::MsgBench(_, v)) if v == ["none"]));
        assert!(matches!(parse_args(&s(&["msgbench", "--vcpu", "hi,lo,hi"])), Ok(Cli::MsgBench(_, v)) if v == ["hi", "lo"]));
        assert!(matches!(parse_args(&s(&["msgbench", "--vcpu", "all"])), Ok(Cli::MsgBench(_, v)) if v == MSGBENCH_VCPUS));
        assert!(parse_args(&s(&["msgbench", "--vcpu", "mid"])).is_err());
        assert!(parse_args(&s(&["compare", "--vcpu", "hi"])).is_err());
        // --config: checked as boot checks it, kept for compare's third run (the default runs do not use it).
        let asym = crate::workspace_root().join("examples/partitions/asymmetric.toml").display().to_string();
        let ok = parse_args(&s(&["compare", "--cpus", "4", "--config", &asym]));
        assert!(matches!(&ok, Ok(Cli::Compare(o, false)) if !o.vt && o.partition.as_ref().is_some_and(|p| p.sandboxes[2].cpus == [2, 3])), "{:?}", ok.err());
        let too_few = parse_args(&s(&["compare", "--cpus", "2", "--config", &asym])).err().unwrap_or_default();
        assert!(too_few.contains("asymmetric.toml:") && too_few.contains("core 2 does not exist"), "{too_few}");
        assert!(parse_args(&s(&["msgbench", "--config", &asym])).is_err(), "msgbench lays out its own runs");
    }
}
