//! Commands the kernel runs itself (before userland exists, and as kernel-mode test hooks afterwards):
//! the boot self-test (scheduler on every CPU, IPIs between all CPUs) and `ktest ...` commands that fault
//! on purpose or dump firmware tables.
#![no_std]

extern crate alloc;

use questv_kernel::{cmdline, kprintln};

use questv_kernel::hooks::STATUS_NOT_FOUND;

mod attack;
mod attack_chan;
mod attack_console;
mod attack_cpu;
mod attack_nic;
mod fault;
mod fixup;
mod inject;
mod selftest;
mod util;

use attack::attack;
use fault::{acpidump, fault};
use fixup::kernel_fixup;
use inject::{campaign, driver_fault, inject, Trigger};
use selftest::boot_selftest;

/// Install this test layer into the product's hooks (the image's entry point does, before the kernel starts).
pub fn install() {
    questv_kernel::hooks::install(questv_kernel::hooks::TestLayer {
        run: |cmd| cmd.map_or_else(boot_selftest, run_command),
        // The db-loop storm first (it resumes where it was), then the expected-exception fixups.
        kernel_exception: |frame| attack_cpu::storm_hook(frame) || kernel_fixup(frame),
        driver_fault,
        wants_attack_targets: |run| run.is_some_and(|r| r.trim_start().starts_with("ktest attack")),
    });
}

fn run_command(cmd: &str) -> i32 {
    let (prog, mut args) = cmdline::split_command(cmd);
    match prog {
        "ktest" => match (args.next(), args.next()) {
            (Some("attack"), Some(kind)) => {
                let rest = cmd.split_once(" -- ").map(|(_, r)| r.trim());
                attack(kind, rest)
            }
            (Some("inject"), Some(kind)) => {
                let target = args.next().and_then(|a| a.parse::<u32>().ok());
                let trigger = match args.next() {
                    None | Some("--") => Some(Trigger::Soon),
                    Some(t) => match t.split_once('=') {
                        Some(("after_pings", n)) => n.parse().ok().map(Trigger::AfterPings),
                        Some(("after_ms", n)) => n.parse().ok().map(Trigger::AfterMs),
                        _ => None,
                    },
                };
                let rest = cmd.split_once(" -- ").map(|(_, r)| r.trim());
                match (target, trigger) {
                    (Some(t), Some(trigger)) => inject(kind, t, trigger, rest),
                    _ => {
                        kprintln!("usage: ktest inject KIND SANDBOX [after_pings=N|after_ms=MS] [-- PROG ARGS]");
                        2
                    }
                }
            }
            (Some("campaign"), Some(n)) => {
                let seed = args.next().and_then(|a| a.parse::<u64>().ok()).unwrap_or(1);
                let rest = cmd.split_once(" -- ").map(|(_, r)| r.trim());
                match n.parse::<u64>() {
                    Ok(n) if n > 0 && n < 1 << 31 => campaign(n, seed, rest),
                    _ => {
                        kprintln!("usage: ktest campaign N [SEED] [-- PROG ARGS]");
                        2
                    }
                }
            }
            (Some("fault"), Some(kind)) => fault(kind),
            (Some("selftest"), None) => boot_selftest(),
            (Some("panic"), None) => panic!("panic requested by `ktest panic`"),
            (Some("acpidump"), None) => acpidump(),
            _ => {
                kprintln!("usage: ktest fault page|null|ud|gp|de|ap-page | ktest selftest | ktest panic | ktest acpidump | ktest campaign N [SEED] [-- PROG ARGS] | ktest inject [always-][driver-]panic|ud|wild|text|triple|hang|reset|wipe SANDBOX [after_pings=N|after_ms=MS] [-- PROG ARGS] | ktest attack KIND [-- PROG ARGS] (KIND: peer|monitor|ept|text|restore-text|vmx|channel|port-reset|pci|msr|icr-nmi|icr-init|icr-vector|apic|panic|hang|user-vmcall|forge|state-leak|nic-dma|nic-reset|nic-storm|nic-identity|nic-lock|nic-ring|nic-fence|console-flood|db-loop|ac-loop|x2apic-lvt)");
                2
            }
        },
        _ => {
            kprintln!("{}: no such program", prog);
            STATUS_NOT_FOUND
        }
    }
}

