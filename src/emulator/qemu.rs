//! QEMU start-up: the command line for a boot (machine, TCG threading, clock, boot medium, firmware, gdb, NIC)
//! and the serial console from its stdout.
#![forbid(unsafe_code)]

use super::{ICOUNT, NIC_MAC, QEMU_CPU_MODEL};
use crate::host::{require_file, require_tool, workspace_root};
use crate::options::{BootOptions, Firmware};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;

/// OVMF from Debian's `ovmf` package: the code (read-only flash) and the variable store template (copied per
/// boot: the firmware writes its variables there).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Start QEMU for `o` on `iso`; its serial lines go to `tx`. Returns the child and the scratch files to remove
/// after the run (a per-boot OVMF variable store).
pub(super) fn start(o: &BootOptions, iso: &Path, tag: &str, tx: mpsc::Sender<String>) -> Result<(Child, Vec<PathBuf>), String> {
    require_tool("qemu-system-x86_64", "qemu-system-x86")?;
    let mut scratch: Vec<PathBuf> = Vec::new();
    let mut cmd = machine(o, iso);
    if o.firmware == Firmware::Uefi {
        scratch.push(uefi_firmware(&mut cmd, tag)?);
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
    if let Some(stdout) = child.stdout.take() {
        stream_stdout(stdout, tx);
    }
    Ok((child, scratch))
}

/// The machine, its vCPUs and memory, the guest clock and the boot medium; headless, the serial console on
/// stdout, no reboot on a triple fault.
fn machine(o: &BootOptions, iso: &Path) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    // SVM with nested paging (TCG emulates it; the VT build's AMD backend needs it, the SMP build ignores it).
    let accel = if o.icount || o.tcg_single.unwrap_or(o.vt) { "tcg,thread=single" } else { "tcg,thread=multi" };
    // An IOMMU needs the q35 machine; QEMU wants it created before the devices behind it.
    let machine = if o.wants_iommu() { "q35" } else { "pc" };
    cmd.args(["-machine", machine, "-accel", accel, "-cpu", QEMU_CPU_MODEL, "-smp", &o.cpus.to_string()])
        .args(["-m", &o.mem_mib.to_string()]);
    if o.wants_iommu() {
        cmd.args(["-device", "intel-iommu"]);
    }
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
    if o.interactive {
        // The host terminal is the console: raw (QEMU sets it so), ^C goes to the guest (signal=off).
        cmd.args(["-display", "none", "-vga", "none", "-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console"])
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit());
    } else {
        cmd.args(["-display", "none", "-vga", "none", "-serial", "stdio"]).stdin(Stdio::null()).stdout(Stdio::piped());
    }
    cmd.args(["-monitor", "none", "-no-reboot"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .stderr(Stdio::inherit());
    cmd
}

/// OVMF as the firmware, with a fresh copy of its variable store (returned: it is the boot's scratch file).
fn uefi_firmware(cmd: &mut Command, tag: &str) -> Result<PathBuf, String> {
    require_file(OVMF_CODE, "ovmf")?;
    require_file(OVMF_VARS, "ovmf")?;
    let vars = workspace_root().join("target").join(format!("ovmf-vars-{tag}.fd"));
    std::fs::copy(OVMF_VARS, &vars).map_err(|e| format!("{}: {e}", vars.display()))?;
    cmd.args(["-drive", &format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}")])
        .args(["-drive", &format!("if=pflash,format=raw,unit=1,file={}", vars.display())]);
    Ok(vars)
}

/// A thread that sends every line QEMU prints (the guest's COM1) to `tx`.
fn stream_stdout(stdout: ChildStdout, tx: mpsc::Sender<String>) {
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
}
