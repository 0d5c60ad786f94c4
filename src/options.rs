//! What one boot is: [`BootOptions`] (build, emulator, machine, ramdisk additions) and the kernel command line
//! they give.
#![forbid(unsafe_code)]

use crate::emulator::Emulator;
use std::path::PathBuf;

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
    /// VT: the monitor's crash-loop rule (`LIMIT/WINDOW_MS` or `off`; the monitor's default otherwise).
    pub crash_loop: Option<String>,
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
    /// host peer's side, src/peer/). The SMP kernel brings it up with `net=on`.
    pub nic_port: Option<u16>,
    /// VT: how many sandboxes (0..K-1) share the NIC (`nic=0,..,K-1` for the monitor).
    pub nic_sharers: u32,
    /// QEMU's firmware: SeaBIOS (the default) or OVMF (UEFI). The image is the same hybrid ISO either way.
    pub firmware: Firmware,
    /// QEMU: boot the image as a USB stick (raw disk) instead of a CD.
    pub usb_stick: bool,
    /// Files put into the ramdisk under their file names (`--add PATH`): the user's own programs and data.
    pub add: Vec<PathBuf>,
    /// `--root DIR`: a directory tree copied into the guest's file tree (through the initramfs).
    pub root: Option<PathBuf>,
    /// A `--run` with shell syntax grub.cfg cannot carry: put in the initramfs as /etc/questv-run and run by
    /// `sh` (`run` is then `sh /etc/questv-run`).
    pub run_script: Option<String>,
    /// QEMU: the guest's clocks (TSC, APIC timer) follow instructions executed (`-icount`), not host time, so a
    /// loaded host cannot steal time from whatever the guest was running (tests that measure CPU shares).
    pub icount: bool,
    /// The console is the host terminal's (`questv shell`): its input goes to the guest, its output is not
    /// collected, and the run ends when the guest stops.
    pub interactive: bool,
    /// QEMU: the q35 machine with an Intel VT-d IOMMU (`-device intel-iommu`), which the monitor programs to
    /// confine the NIC's DMA; off: the i440FX `pc` machine, no IOMMU. None: on for the VT build (the monitor
    /// confines DMA wherever there is an IOMMU), off for the SMP build (nothing would program it).
    pub iommu: Option<bool>,
    /// `--config FILE`: the VT build's partitions, checked (docs/partitions.md).
    pub config: Option<PathBuf>,
    pub partition: Option<crate::partitions::Partitions>,
}

impl BootOptions {
    /// Whether QEMU gets the q35 machine with VT-d (see `iommu`).
    pub fn wants_iommu(&self) -> bool {
        self.emulator == Emulator::Qemu && self.iommu.unwrap_or(self.vt)
    }
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

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions { vt: false, emulator: Emulator::Qemu, cpus: 1, run: None, timeout: None, gdb: false, mem_mib: 512, slice_mib: None, watchdog_ms: None, recovery: None, crash_loop: None, apic_passthrough: false, echo: true, tcg_single: None, nic_port: None, nic_sharers: 1, firmware: Firmware::Bios, usb_stick: false, add: Vec::new(), root: None, run_script: None, icount: false, interactive: false, iommu: None, config: None, partition: None }
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
        if let Some(c) = &self.crash_loop {
            a.push_str(&format!(" crash_loop={c}"));
        }
        if self.apic_passthrough {
            a.push_str(" apic=passthrough");
        }
        if self.nic_port.is_some() {
            if self.vt {
                // A partition file names the sharers (`nic = true`); otherwise the first `nic_sharers` sandboxes.
                let list: Vec<String> = match &self.partition {
                    Some(p) => p.nic_sharers().iter().map(|c| c.to_string()).collect(),
                    None => (0..self.nic_sharers.max(1)).map(|i| i.to_string()).collect(),
                };
                if !list.is_empty() {
                    a.push_str(&format!(" nic={}", list.join(",")));
                }
                // Bochs' socket backend passes on only frames to the configured MAC (and broadcast): the
                // sharers share that MAC and are told apart by IPv4 address (docs/network.md).
                if self.emulator == Emulator::Bochs {
                    a.push_str(" nic_mac=device");
                }
            } else {
                a.push_str(" net=on");
            }
        }
        if self.interactive {
            a.push_str(" console=input");
        }

        if let Some(r) = &self.run {
            a.push_str(&format!(" run={r}"));
        }
        a
    }
}
