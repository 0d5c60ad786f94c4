//! Linux 6.1 + busybox baseline guest for QEMU.
//!
//! The project compares its kernel with Debian 12's Linux 6.1 booted in the same QEMU (TCG): a ping responder on an
//! emulated e1000, and static C programs timed inside the guest. Everything comes from the host's apt sources:
//!
//! * [`fetch()`] downloads `linux-image-<ver>-amd64` and `busybox-static` once (`apt-get download`, `dpkg-deb -x`) and
//!   keeps only the three files we need under `<cache>/<ver>/`; the kernel release is pinned in `<cache>/VERSION`
//!   so later runs use the same kernel even after a Debian point release (delete that file to move on).
//! * [`build_initrd`] writes an uncompressed newc cpio (our own [`Cpio`] writer) with busybox, `e1000.ko`, extra
//!   programs in `/bin` and an `/init` that prints `RESULT linux_boot ...`, optionally brings up eth0 and waits
//!   for carrier (`RESULT linux_net_up ... carrier=1`), runs a command and prints `LINUX DONE status=N`.
//! * [`qemu_args`] boots it; [`run_qemu`] runs QEMU with a deadline and collects timestamped serial lines.
//!
//! Pitfalls handled here: Debian's bookworm kernel ships modules uncompressed (`e1000.ko`), but newer Debian kernels
//! ship `.ko.xz` which busybox `insmod` cannot load, so a compressed module is decompressed on the host with `xz`.
//! Nothing may redirect to `/dev/null` before `/dev` is mounted (a failed redirection skips the command).
//!
//! The parts: [`fetch`](mod@fetch) (the Debian packages, cached), [`initrd`] (the initramfs and its /init), [`qemu`] (booting
//! it); static guest programs and the host helpers are here.
#![forbid(unsafe_code)]

pub mod fetch;
pub mod initrd;
pub mod qemu;

pub use fetch::fetch;
pub use initrd::{build_initrd, init_script, Cpio};
pub use qemu::{qemu_args, qemu_args_on, run_qemu, SerialRun};

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A bootable Linux guest: kernel, initramfs and the kernel release (`uname -r`, e.g. "6.1.0-28-amd64").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxGuest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub version: String,
}

/// The guest's network: its address on eth0 (an emulated e1000) and the UDP ports of QEMU's `dgram` netdev, which
/// carries raw Ethernet frames between `127.0.0.1:udp_local_port` (QEMU) and `127.0.0.1:udp_remote_port` (the host
/// peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxNet {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub mac: [u8; 6],
    pub udp_local_port: u16,
    pub udp_remote_port: u16,
}

/// The meta package whose dependency names the current kernel package.
const KERNEL_META_PACKAGE: &str = "linux-image-amd64";
const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Where `e1000.ko` lives inside the kernel package, relative to `/lib/modules/<ver>/`.
const E1000_MODULE_DIR: &str = "kernel/drivers/net/ethernet/intel/e1000";
/// Where the module is put in the initramfs.
const GUEST_E1000_PATH: &str = "/lib/modules/e1000.ko";
/// The user's command line, kept out of /init so a syntax error in it only fails that command, not PID 1.
const GUEST_COMMAND_PATH: &str = "/questv/command.sh";

/// busybox applets linked into the guest's /bin: what /init uses plus common tools for benchmark command lines.
pub(crate) const APPLETS: &[&str] = &[
    "sh", "ash", "mount", "umount", "mkdir", "mknod", "cat", "echo", "uname", "nproc", "insmod", "lsmod", "ip",
    "ifconfig", "poweroff", "reboot", "sleep", "dmesg", "grep", "ls", "ps", "time", "seq", "true", "false", "test",
    "[", "sync", "kill", "printf", "head", "tail", "wc", "date", "env", "timeout", "ping", "hostname", "sed", "awk",
    "cp", "rm", "mv", "ln", "chmod", "uptime", "free", "top", "taskset", "xargs", "sort", "uniq", "tr", "cut",
];

// ---------------------------------------------------------------------------------------------------------------
// guest programs

/// Compile a C file into a static Linux executable with the host gcc (`gcc -O2 -static`).
pub fn compile_static(src: &Path, out: &Path) -> Result<(), String> {
    compile_static_with(src, out, &[])
}

/// [`compile_static`] with extra gcc arguments (e.g. `-include header.h`).
pub fn compile_static_with(src: &Path, out: &Path, extra: &[&str]) -> Result<(), String> {
    require_tool("gcc", "gcc")?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| format!("linux: cannot create {}: {e}", dir.display()))?;
    }
    let output = Command::new("gcc")
        .args(["-O2", "-static"])
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(src)
        .output()
        .map_err(|e| format!("linux: cannot run gcc: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let hint = if stderr.contains("cannot find -lc") {
        " (static libc missing: install libc6-dev)"
    } else {
        ""
    };
    Err(format!(
        "linux: gcc -O2 -static {} failed{hint}: {}",
        src.display(),
        stderr.trim()
    ))
}

// ---------------------------------------------------------------------------------------------------------------
// helpers

/// Err naming the Debian package to install if `tool` is not on PATH.
fn require_tool(tool: &str, package: &str) -> Result<(), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()) {
        Ok(())
    } else {
        Err(format!(
            "linux: `{tool}` not found on PATH; install the Debian package `{package}` (apt-get install {package})"
        ))
    }
}

/// Run a command, Err with its stderr unless it succeeds; returns stdout.
fn run_captured(cmd: &mut Command) -> Result<String, String> {
    run_bytes(cmd).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn run_bytes(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let shown = format!("{cmd:?}");
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("linux: cannot run {shown}: {e}"))?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(format!(
            "linux: {shown} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("linux: cannot read {}: {e}", path.display()))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("linux: cannot copy {} to {}: {e}", from.display(), to.display()))
}

/// Write via a temporary file and rename, so a concurrent reader never sees a partial file.
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, data).map_err(|e| format!("linux: cannot write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("linux: cannot rename {} to {}: {e}", tmp.display(), path.display())
    })
}

/// The network the tests of every part use.
#[cfg(test)]
fn sample_net() -> LinuxNet {
    LinuxNet {
        ip: Ipv4Addr::new(10, 0, 2, 15),
        prefix: 24,
        mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
        udp_local_port: 5555,
        udp_remote_port: 5556,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn linux_missing_tool_names_the_debian_package() {
        let err = require_tool("questv-no-such-tool", "questv-pkg").unwrap_err();
        assert!(
            err.contains("`questv-no-such-tool`") && err.contains("apt-get install questv-pkg"),
            "{err}"
        );
        assert!(require_tool("sh", "dash").is_ok());
    }

    fn cache_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/linux-cache")
    }

    /// Real end-to-end run: fetch Debian's kernel and busybox, boot a static C program on 2 vCPUs.
    #[test]
    #[ignore = "downloads ~70 MB of .debs once and boots Linux in QEMU (about 10-30 s)"]
    fn linux_boots_and_runs_a_static_program() {
        let cache = cache_dir();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/linux/hello.c");
        let exe = cache.join("bin/hello");
        compile_static(&src, &exe).unwrap_or_else(|e| panic!("{e}"));
        let extra = vec![("hello".to_string(), exe)];
        let guest = build_initrd(&cache, None, &extra, "hello", false).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("guest: {guest:?}");

        let run = run_qemu(&qemu_args(&guest, 2, 256, None), Duration::from_secs(120), None)
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("--- serial ---\n{}--- qemu stderr ---\n{}", run.text(), run.stderr);
        assert!(!run.timed_out, "QEMU did not finish within 120 s");
        let (boot_t, boot) = run.first("RESULT linux_boot").expect("no RESULT linux_boot line");
        assert!(boot.contains(&format!("version={}", guest.version)), "{boot}");
        assert!(boot.contains("cpus=2"), "{boot}");
        assert!(run.first("hello from linux").is_some(), "the program's line is missing");
        let (done_t, done) = run.first("LINUX DONE").expect("no LINUX DONE line");
        assert_eq!(done, "LINUX DONE status=0");
        eprintln!(
            "linux_boot after {boot_t:?}, LINUX DONE after {done_t:?}, QEMU exit {:?}",
            run.exit
        );
        assert!(
            run.exit.is_some_and(|s| s.success()),
            "QEMU should exit by itself after poweroff"
        );
    }
}
