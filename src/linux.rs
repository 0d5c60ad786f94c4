//! Linux 6.1 + busybox baseline guest for QEMU.
//!
//! The project compares its kernel with Debian 12's Linux 6.1 booted in the same QEMU (TCG): a ping responder on an
//! emulated e1000, and static C programs timed inside the guest. Everything comes from the host's apt sources:
//!
//! * [`fetch`] downloads `linux-image-<ver>-amd64` and `busybox-static` once (`apt-get download`, `dpkg-deb -x`) and
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

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
const APPLETS: &[&str] = &[
    "sh", "ash", "mount", "umount", "mkdir", "mknod", "cat", "echo", "uname", "nproc", "insmod", "lsmod", "ip",
    "ifconfig", "poweroff", "reboot", "sleep", "dmesg", "grep", "ls", "ps", "time", "seq", "true", "false", "test",
    "[", "sync", "kill", "printf", "head", "tail", "wc", "date", "env", "timeout", "ping", "hostname", "sed", "awk",
    "cp", "rm", "mv", "ln", "chmod", "uptime", "free", "top", "taskset", "xargs", "sort", "uniq", "tr", "cut",
];

// ---------------------------------------------------------------------------------------------------------------
// fetch

/// Download (once, cached under `cache`, e.g. target/linux-cache) the kernel and busybox .debs with
/// `apt-get download`, extract them with `dpkg-deb -x` and return `(vmlinuz, busybox, e1000 module, version)`.
/// A cache populated earlier is used without touching apt at all.
pub fn fetch(cache: &Path) -> Result<(PathBuf, PathBuf, PathBuf, String), String> {
    let pin = cache.join("VERSION");
    if let Ok(pinned) = fs::read_to_string(&pin) {
        if let Some(found) = cached_files(cache, pinned.trim()) {
            return Ok(found);
        }
    }

    require_tool("apt-cache", "apt")?;
    require_tool("apt-get", "apt")?;
    require_tool("dpkg-deb", "dpkg")?;
    let version = resolve_kernel_version()?;
    if cached_files(cache, &version).is_none() {
        download_and_extract(cache, &version)?;
    }
    let found = cached_files(cache, &version).ok_or_else(|| {
        format!(
            "linux: {} is incomplete after extraction",
            cache.join(&version).display()
        )
    })?;
    write_atomically(&pin, format!("{version}\n").as_bytes())?;
    Ok(found)
}

/// The files of an extracted kernel release, if all are present.
fn cached_files(cache: &Path, version: &str) -> Option<(PathBuf, PathBuf, PathBuf, String)> {
    if version.is_empty() {
        return None;
    }
    let dir = cache.join(version);
    let files = (dir.join("vmlinuz"), dir.join("busybox"), dir.join("e1000.ko"));
    (files.0.is_file() && files.1.is_file() && files.2.is_file())
        .then(|| (files.0, files.1, files.2, version.to_string()))
}

/// The kernel release the meta package currently depends on, e.g. "6.1.0-57-amd64".
fn resolve_kernel_version() -> Result<String, String> {
    let out = run_captured(Command::new("apt-cache").args(["depends", KERNEL_META_PACKAGE]))?;
    parse_kernel_dependency(&out).ok_or_else(|| {
        format!(
            "linux: `apt-cache depends {KERNEL_META_PACKAGE}` names no linux-image-<ver> package \
             (run `apt-get update`?); output: {}",
            out.trim()
        )
    })
}

/// Find `Depends: linux-image-<ver>` in `apt-cache depends` output and return `<ver>`.
fn parse_kernel_dependency(apt_cache_depends: &str) -> Option<String> {
    apt_cache_depends.lines().find_map(|line| {
        let dep = line.trim().trim_start_matches('|').strip_prefix("Depends:")?.trim();
        let ver = dep.split_whitespace().next()?.strip_prefix("linux-image-")?;
        let plausible = ver.starts_with(|c: char| c.is_ascii_digit())
            && ver
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '+');
        plausible.then(|| ver.to_string())
    })
}

/// Download both packages into a private staging directory, extract them, keep vmlinuz, busybox and e1000.ko in
/// `<cache>/<version>/` (renamed into place, so concurrent fetches cannot see a half-written directory).
fn download_and_extract(cache: &Path, version: &str) -> Result<(), String> {
    let staging = cache.join(format!(".staging-{}-{}", version, std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(|e| format!("linux: cannot create {}: {e}", staging.display()))?;
    let result = stage(&staging, version).and_then(|out| {
        let dest = cache.join(version);
        match fs::rename(&out, &dest) {
            Ok(()) => Ok(()),
            // Another process got there first; its copy is as good as ours.
            Err(_) if cached_files(cache, version).is_some() => Ok(()),
            Err(e) => Err(format!(
                "linux: cannot move {} to {}: {e}",
                out.display(),
                dest.display()
            )),
        }
    });
    let _ = fs::remove_dir_all(&staging);
    result
}

/// Fill `staging/out` with the three files; returns that directory.
fn stage(staging: &Path, version: &str) -> Result<PathBuf, String> {
    let kernel_pkg = format!("linux-image-{version}");
    // `-o APT::Sandbox::User=root`: the _apt user may not write into our cache; this only silences a warning.
    run_captured(
        Command::new("apt-get")
            .args([
                "-q",
                "-o",
                "APT::Sandbox::User=root",
                "download",
                &kernel_pkg,
                BUSYBOX_PACKAGE,
            ])
            .current_dir(staging),
    )?;
    let kernel_deb = find_deb(staging, &kernel_pkg)?;
    let busybox_deb = find_deb(staging, BUSYBOX_PACKAGE)?;

    let root = staging.join("root");
    for deb in [&kernel_deb, &busybox_deb] {
        run_captured(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
    }

    let out = staging.join("out");
    fs::create_dir_all(&out).map_err(|e| format!("linux: cannot create {}: {e}", out.display()))?;
    copy(&root.join(format!("boot/vmlinuz-{version}")), &out.join("vmlinuz"))?;
    copy(&root.join("bin/busybox"), &out.join("busybox"))?;

    let module_dir = root.join(format!("lib/modules/{version}/{E1000_MODULE_DIR}"));
    let plain = module_dir.join("e1000.ko");
    let xz = module_dir.join("e1000.ko.xz");
    if plain.is_file() {
        copy(&plain, &out.join("e1000.ko"))?;
    } else if xz.is_file() {
        // busybox insmod loads only plain ELF modules (finit_module without decompression flags).
        require_tool("xz", "xz-utils")?;
        let bytes = run_bytes(Command::new("xz").arg("-dc").arg(&xz))?;
        write_atomically(&out.join("e1000.ko"), &bytes)?;
    } else {
        return Err(format!(
            "linux: no e1000.ko or e1000.ko.xz in {} (module compressed another way?)",
            module_dir.display()
        ));
    }

    let manifest = format!(
        "{}\n{}\n",
        kernel_deb.file_name().unwrap_or_default().to_string_lossy(),
        busybox_deb.file_name().unwrap_or_default().to_string_lossy()
    );
    write_atomically(&out.join("debs.txt"), manifest.as_bytes())?;
    Ok(out)
}

/// The `<package>_*.deb` that `apt-get download` left in `dir`.
fn find_deb(dir: &Path, package: &str) -> Result<PathBuf, String> {
    let prefix = format!("{package}_");
    let entries = fs::read_dir(dir).map_err(|e| format!("linux: cannot list {}: {e}", dir.display()))?;
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            name.starts_with(&prefix) && name.ends_with(".deb")
        })
        .ok_or_else(|| format!("linux: apt-get download left no {prefix}*.deb in {}", dir.display()))
}

// ---------------------------------------------------------------------------------------------------------------
// initramfs

/// Build an uncompressed newc cpio initramfs under `cache` (named by a hash of its contents, so different
/// configurations can coexist and rebuilding an identical one is free) with busybox and its applet links in /bin,
/// `e1000.ko` in /lib/modules, `extra` programs as `/bin/<name>` (mode 0755) and an /init (see [`init_script`])
/// that runs `command` (a shell command line, may be empty) and then powers off (`stay_up == false`) or sleeps
/// forever.
pub fn build_initrd(
    cache: &Path,
    net: Option<&LinuxNet>,
    extra: &[(String, PathBuf)],
    command: &str,
    stay_up: bool,
) -> Result<LinuxGuest, String> {
    if let Some(net) = net {
        validate_net(net)?;
    }
    let (kernel, busybox, e1000, version) = fetch(cache)?;
    let busybox = read(&busybox)?;
    let e1000 = read(&e1000)?;

    let mut cpio = Cpio::new();
    for dir in [
        "bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "root",
        "etc",
        "lib",
        "lib/modules",
        "questv",
    ] {
        cpio.dir(dir, 0o755)?;
    }
    // The kernel opens /dev/console for PID 1's stdio before /init runs; ship it in case the built-in initramfs
    // does not provide it.
    cpio.char_device("dev/console", 0o600, 5, 1)?;
    cpio.file("bin/busybox", 0o755, &busybox)?;
    for applet in APPLETS {
        cpio.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    cpio.file(GUEST_E1000_PATH.trim_start_matches('/'), 0o644, &e1000)?;

    for (name, host_path) in extra {
        validate_extra_name(name)?;
        let data = read(host_path)?;
        cpio.file(&format!("bin/{name}"), 0o755, &data)?;
    }

    cpio.file(
        GUEST_COMMAND_PATH.trim_start_matches('/'),
        0o644,
        command_script(command).as_bytes(),
    )?;
    cpio.file("init", 0o755, init_script(net, stay_up).as_bytes())?;
    let image = cpio.finish();

    let mut hasher = DefaultHasher::new();
    image.hash(&mut hasher);
    let dir = cache.join("initrd");
    fs::create_dir_all(&dir).map_err(|e| format!("linux: cannot create {}: {e}", dir.display()))?;
    let initrd = dir.join(format!("initrd-{version}-{:016x}.cpio", hasher.finish()));
    if fs::metadata(&initrd).map(|m| m.len()).ok() != Some(image.len() as u64) {
        write_atomically(&initrd, &image)?;
    }
    Ok(LinuxGuest {
        kernel,
        initrd,
        version,
    })
}

fn validate_net(net: &LinuxNet) -> Result<(), String> {
    if net.prefix > 32 {
        return Err(format!("linux: network prefix /{} is longer than 32 bits", net.prefix));
    }
    if net.mac[0] & 1 != 0 {
        return Err(format!(
            "linux: MAC {} is a multicast address; eth0 needs a unicast one",
            format_mac(&net.mac)
        ));
    }
    Ok(())
}

/// Extra programs land in /bin under their name: one path component, not shadowing busybox or its applets.
fn validate_extra_name(name: &str) -> Result<(), String> {
    let bad_char = |c: char| c == '/' || c == '\0' || c.is_whitespace();
    if name.is_empty() || name == "." || name == ".." || name.chars().any(bad_char) {
        return Err(format!("linux: extra program name {name:?} is not a plain file name"));
    }
    if name == "busybox" || APPLETS.contains(&name) {
        return Err(format!(
            "linux: extra program name {name:?} would replace busybox's /bin/{name}"
        ));
    }
    Ok(())
}

/// `/questv/command.sh`: the user's command line, run by `sh` from /init.
fn command_script(command: &str) -> String {
    format!("# questv: command run by /init; its exit status is reported as LINUX DONE status=N\n{command}\n")
}

/// The guest's /init (busybox ash, PID 1). Prints the `RESULT linux_boot` line, brings up eth0 if `net` is given,
/// runs `/questv/command.sh`, prints `LINUX DONE status=N` and powers off or, with `stay_up`, sleeps forever.
pub fn init_script(net: Option<&LinuxNet>, stay_up: bool) -> String {
    let mut s = String::new();
    s.push_str(
        "#!/bin/sh\n\
         # /init of the questv Linux baseline guest (generated by questv::linux).\n\
         export PATH=/bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         # devtmpfs gives /dev/null etc.; a plain tmpfs with hand-made nodes is the fallback.\n\
         mount -t devtmpfs devtmpfs /dev || { mount -t tmpfs tmpfs /dev; mknod /dev/null c 1 3; mknod /dev/console c 5 1; }\n\
         mount -t tmpfs tmpfs /tmp\n\
         echo \"RESULT linux_boot version=$(uname -r) cpus=$(nproc)\"\n",
    );
    if let Some(net) = net {
        let mac = format_mac(&net.mac);
        let (ip, prefix) = (net.ip, net.prefix);
        s.push_str(&format!(
            "# eth0: the emulated e1000 (a module in Debian's kernel).\n\
             if insmod {GUEST_E1000_PATH}; then\n\
             \x20 n=0; while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done\n\
             fi\n\
             if ip link set dev eth0 address {mac} && ip addr add {ip}/{prefix} dev eth0 && ip link set dev eth0 up; then\n\
             \x20 # e1000 reports carrier a second or two after up (its watchdog); wait so the guest can answer at once.\n\
             \x20 n=0; while [ \"$(cat /sys/class/net/eth0/carrier)\" != 1 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done\n\
             \x20 echo \"RESULT linux_net_up ip={ip} prefix={prefix} mac=$(cat /sys/class/net/eth0/address) carrier=$(cat /sys/class/net/eth0/carrier)\"\n\
             else\n\
             \x20 echo \"RESULT linux_net_fail\"\n\
             \x20 dmesg | grep -i -e e1000 -e eth0 -e module\n\
             fi\n"
        ));
    }
    s.push_str(&format!(
        "sh {GUEST_COMMAND_PATH}\n\
         status=$?\n\
         echo \"LINUX DONE status=$status\"\n"
    ));
    if stay_up {
        s.push_str("# stay up: the runner kills QEMU when the host peer is done.\nwhile :; do sleep 3600; done\n");
    } else {
        s.push_str("poweroff -f\n");
    }
    s
}

fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Writer for the "new ASCII" (newc, magic 070701) cpio format the kernel unpacks as initramfs: per entry a
/// 110-byte header of 13 8-digit hex fields, the NUL-terminated name padded to 4 bytes, then the data padded to 4
/// bytes; a `TRAILER!!!` entry ends the archive. Timestamps and owners are 0 so the output is reproducible.
pub struct Cpio {
    buf: Vec<u8>,
    next_ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Default for Cpio {
    fn default() -> Self {
        Self::new()
    }
}

impl Cpio {
    pub fn new() -> Self {
        Cpio {
            buf: Vec::new(),
            next_ino: 1,
        }
    }

    /// A directory `name` (relative, e.g. "lib/modules"); parents must come first.
    pub fn dir(&mut self, name: &str, perm: u32) -> Result<(), String> {
        self.entry(name, S_IFDIR | (perm & 0o7777), 2, &[], (0, 0))
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<(), String> {
        self.entry(name, S_IFREG | (perm & 0o7777), 1, data, (0, 0))
    }

    /// A symbolic link `name` → `target` (the target is the entry's data).
    pub fn symlink(&mut self, name: &str, target: &str) -> Result<(), String> {
        self.entry(name, S_IFLNK | 0o777, 1, target.as_bytes(), (0, 0))
    }

    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> Result<(), String> {
        self.entry(name, S_IFCHR | (perm & 0o7777), 1, &[], (major, minor))
    }

    /// Append the trailer and return the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.header(0, 0, 1, 0, (0, 0), "TRAILER!!!");
        self.pad();
        self.buf
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, data: &[u8], rdev: (u32, u32)) -> Result<(), String> {
        if name.is_empty() || name.contains('\0') {
            return Err(format!("cpio: bad entry name {name:?}"));
        }
        let size = u32::try_from(data.len()).map_err(|_| format!("cpio: {name} is larger than 4 GiB"))?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(ino, mode, nlink, size, rdev, name);
        self.buf.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    /// Header, name and NUL, padded so the data starts 4-byte aligned.
    fn header(&mut self, ino: u32, mode: u32, nlink: u32, size: u32, rdev: (u32, u32), name: &str) {
        let namesize = name.len() as u32 + 1;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// QEMU

/// QEMU arguments (without the program name) booting `g` on `cpus` vCPUs with `mem_mib` MiB, serial on stdio, and
/// with `net` an e1000 on a UDP `dgram` netdev.
pub fn qemu_args(g: &LinuxGuest, cpus: u32, mem_mib: u32, net: Option<&LinuxNet>) -> Vec<String> {
    qemu_args_on(g, "tcg,thread=multi", "qemu64", cpus, mem_mib, net)
}

/// [`qemu_args`] with the accelerator and CPU model given (a benchmark boots Linux on the machine questv ran on).
pub fn qemu_args_on(g: &LinuxGuest, accel: &str, cpu: &str, cpus: u32, mem_mib: u32, net: Option<&LinuxNet>) -> Vec<String> {
    let mut args: Vec<String> = ["-machine", "pc", "-accel", accel, "-cpu", cpu, "-smp"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(cpus.to_string());
    args.push("-m".into());
    args.push(mem_mib.to_string());
    args.push("-kernel".into());
    args.push(g.kernel.display().to_string());
    args.push("-initrd".into());
    args.push(g.initrd.display().to_string());
    for a in [
        "-append",
        "console=ttyS0 quiet panic=-1",
        "-display",
        "none",
        "-vga",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
    ] {
        args.push(a.into());
    }
    if let Some(net) = net {
        args.push("-netdev".into());
        args.push(format!(
            "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={},\
             remote.type=inet,remote.host=127.0.0.1,remote.port={}",
            net.udp_local_port, net.udp_remote_port
        ));
        args.push("-device".into());
        args.push(format!("e1000,netdev=n0,mac={}", format_mac(&net.mac)));
    }
    args
}

/// What a QEMU run printed on the serial console, each line with the time since QEMU was started.
#[derive(Debug, Clone, Default)]
pub struct SerialRun {
    pub lines: Vec<(Duration, String)>,
    /// QEMU's exit status if it exited by itself (guest powered off), `None` if we killed it.
    pub exit: Option<ExitStatus>,
    pub timed_out: bool,
    /// QEMU's own stderr (option errors and the like).
    pub stderr: String,
}

impl SerialRun {
    /// The first line starting with `prefix`, with its time.
    pub fn first(&self, prefix: &str) -> Option<(Duration, &str)> {
        self.lines
            .iter()
            .find(|(_, l)| l.starts_with(prefix))
            .map(|(t, l)| (*t, l.as_str()))
    }

    pub fn text(&self) -> String {
        self.lines.iter().map(|(_, l)| format!("{l}\n")).collect()
    }
}

/// Run `qemu-system-x86_64 args` until it exits, a line starting with `stop_at` appears (QEMU is then killed) or
/// `timeout` passes (killed, `timed_out`).
pub fn run_qemu(args: &[String], timeout: Duration, stop_at: Option<&str>) -> Result<SerialRun, String> {
    require_tool("qemu-system-x86_64", "qemu-system-x86")?;
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("linux: cannot start qemu-system-x86_64: {e}"))?;

    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let Some(stdout) = stdout else { return };
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        // Serial output is bytes (and CRLF); keep it lossy and strip the CR.
        while matches!(stdout.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            if tx.send((start.elapsed(), text)).is_err() {
                return;
            }
            line.clear();
        }
    });
    let stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    });

    let mut run = SerialRun::default();
    let mut kill = false;
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok((t, line)) => {
                let stop = stop_at.is_some_and(|p| line.starts_with(p));
                run.lines.push((t, line));
                if stop {
                    kill = true;
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                run.timed_out = true;
                kill = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if kill {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| format!("linux: waiting for QEMU failed: {e}"))?;
    if !kill {
        run.exit = Some(status);
    }
    drop(rx);
    let _ = reader.join();
    run.stderr = err_reader.join().unwrap_or_default();
    Ok(run)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Entry {
        name: String,
        ino: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: Vec<u8>,
    }

    /// Independent newc reader: checks magic, hex fields, NUL-terminated names and 4-byte alignment.
    fn parse_cpio(buf: &[u8]) -> Result<Vec<Entry>, String> {
        let mut entries = Vec::new();
        let mut pos = 0usize;
        loop {
            if !pos.is_multiple_of(4) {
                return Err(format!("header at {pos} not 4-byte aligned"));
            }
            let header = buf.get(pos..pos + 110).ok_or(format!("truncated header at {pos}"))?;
            if &header[..6] != b"070701" {
                return Err(format!("bad magic at {pos}"));
            }
            let field = |i: usize| -> Result<u32, String> {
                let text = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i]).map_err(|e| e.to_string())?;
                u32::from_str_radix(text, 16).map_err(|e| format!("field {i} {text:?}: {e}"))
            };
            let (ino, mode, nlink, size) = (field(0)?, field(1)?, field(4)?, field(6)? as usize);
            let rdev = (field(9)?, field(10)?);
            let namesize = field(11)? as usize;
            assert_eq!(field(12)?, 0, "check field");
            let name_start = pos + 110;
            let name_bytes = buf.get(name_start..name_start + namesize).ok_or("truncated name")?;
            if name_bytes.last() != Some(&0) {
                return Err("name not NUL-terminated".into());
            }
            let name = String::from_utf8(name_bytes[..namesize - 1].to_vec()).map_err(|e| e.to_string())?;
            let data_start = (name_start + namesize + 3) & !3;
            if buf[name_start + namesize..data_start].iter().any(|&b| b != 0) {
                return Err("non-zero name padding".into());
            }
            let data = buf.get(data_start..data_start + size).ok_or("truncated data")?.to_vec();
            pos = (data_start + size + 3) & !3;
            if name == "TRAILER!!!" {
                if pos != buf.len() {
                    return Err(format!("{} bytes after trailer", buf.len() - pos));
                }
                return Ok(entries);
            }
            entries.push(Entry {
                name,
                ino,
                mode,
                nlink,
                rdev,
                data,
            });
        }
    }

    fn sample_net() -> LinuxNet {
        LinuxNet {
            ip: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            udp_local_port: 5555,
            udp_remote_port: 5556,
        }
    }

    #[test]
    fn linux_cpio_round_trips() {
        let mut c = Cpio::new();
        c.dir("bin", 0o755).unwrap();
        c.file("bin/a", 0o755, b"12345").unwrap(); // odd size: data padding
        c.file("empty", 0o644, b"").unwrap();
        c.symlink("bin/sh", "busybox").unwrap();
        c.char_device("dev/console", 0o600, 5, 1).unwrap();
        let bytes = c.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(&bytes[..6], b"070701");
        // The first header's fields are literal 8-digit hex: ino 1, mode 040755, nlink 2.
        assert_eq!(&bytes[6..14], b"00000001");
        assert_eq!(&bytes[14..22], b"000041ed");
        assert_eq!(&bytes[38..46], b"00000002");
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));

        let e = parse_cpio(&bytes).unwrap();
        let names: Vec<_> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["bin", "bin/a", "empty", "bin/sh", "dev/console"]);
        assert_eq!(e[0].mode, 0o040755);
        assert_eq!(e[0].nlink, 2);
        assert_eq!((e[1].mode, e[1].data.as_slice()), (0o100755, &b"12345"[..]));
        assert!(e[2].data.is_empty());
        assert_eq!((e[3].mode, e[3].data.as_slice()), (0o120777, &b"busybox"[..]));
        assert_eq!((e[4].mode, e[4].rdev), (0o020600, (5, 1)));
        let inos: Vec<_> = e.iter().map(|e| e.ino).collect();
        assert_eq!(
            inos,
            [1, 2, 3, 4, 5],
            "distinct inode numbers, or the kernel treats files as hard links"
        );
    }

    #[test]
    fn linux_cpio_empty_archive_is_just_the_trailer() {
        let bytes = Cpio::new().finish();
        // 110-byte header + "TRAILER!!!\0" (11) = 121, padded to 124.
        assert_eq!(bytes.len(), 124);
        assert!(parse_cpio(&bytes).unwrap().is_empty());
        assert!(Cpio::new().file("", 0o644, b"x").is_err());
    }

    #[test]
    fn linux_init_script_without_net() {
        let s = init_script(None, false);
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("mount -t proc proc /proc\n"));
        assert!(s.contains("mount -t sysfs sysfs /sys\n"));
        assert!(s.contains("mount -t devtmpfs devtmpfs /dev"));
        assert!(s.contains("echo \"RESULT linux_boot version=$(uname -r) cpus=$(nproc)\"\n"));
        assert!(!s.contains("insmod") && !s.contains("linux_net_up"));
        assert!(s.contains("sh /questv/command.sh\nstatus=$?\necho \"LINUX DONE status=$status\"\n"));
        assert!(s.trim_end().ends_with("poweroff -f"));
        let boot = s.find("linux_boot").unwrap();
        assert!(boot < s.find("command.sh").unwrap() && s.find("/dev/null").unwrap() > s.find("devtmpfs").unwrap());
    }

    #[test]
    fn linux_init_script_with_net_and_stay_up() {
        let s = init_script(Some(&sample_net()), true);
        assert!(s.contains("insmod /lib/modules/e1000.ko"));
        assert!(s.contains("ip link set dev eth0 address 52:54:00:12:34:56"));
        assert!(s.contains("ip addr add 10.0.2.15/24 dev eth0"));
        assert!(s.contains("ip link set dev eth0 up"));
        assert!(
            s.contains("RESULT linux_net_up ip=10.0.2.15 prefix=24 mac=$(cat /sys/class/net/eth0/address) carrier=")
        );
        assert!(s.contains("/sys/class/net/eth0/carrier)\" != 1"), "waits for the link");
        let (boot, net, cmd) = (
            s.find("linux_boot").unwrap(),
            s.find("insmod").unwrap(),
            s.find("sh /questv/command.sh").unwrap(),
        );
        assert!(boot < net && net < cmd);
        assert!(!s.contains("poweroff"));
        assert!(s.contains("while :; do sleep 3600; done"));
    }

    #[test]
    fn linux_qemu_args_with_and_without_net() {
        let g = LinuxGuest {
            kernel: "/k/vmlinuz".into(),
            initrd: "/k/initrd.cpio".into(),
            version: "6.1.0-1-amd64".into(),
        };
        let a = qemu_args(&g, 2, 512, None);
        let joined = a.join(" ");
        assert!(joined.starts_with("-machine pc -accel tcg,thread=multi -cpu qemu64 -smp 2 -m 512 "));
        assert!(joined.contains("-kernel /k/vmlinuz -initrd /k/initrd.cpio "));
        let i = a.iter().position(|x| x == "-append").unwrap();
        assert_eq!(a[i + 1], "console=ttyS0 quiet panic=-1");
        assert!(joined.ends_with("-display none -vga none -serial stdio -monitor none -no-reboot"));
        assert!(!joined.contains("netdev"));

        let n = qemu_args(&g, 1, 256, Some(&sample_net()));
        assert_eq!(&n[..a.len()][..7], &a[..7]);
        let tail = &n[n.len() - 4..];
        assert_eq!(tail[0], "-netdev");
        assert_eq!(
            tail[1],
            "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=5555,\
             remote.type=inet,remote.host=127.0.0.1,remote.port=5556"
        );
        assert_eq!(tail[2], "-device");
        assert_eq!(tail[3], "e1000,netdev=n0,mac=52:54:00:12:34:56");
    }

    #[test]
    fn linux_parses_the_kernel_dependency() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n";
        assert_eq!(parse_kernel_dependency(out).as_deref(), Some("6.1.0-57-amd64"));
        assert_eq!(parse_kernel_dependency("linux-image-amd64\n  Depends: foo\n"), None);
        assert_eq!(parse_kernel_dependency(""), None);
    }

    #[test]
    fn linux_rejects_bad_extra_names_and_nets() {
        assert!(validate_extra_name("forkbench").is_ok());
        for bad in ["", "..", "a/b", "sh", "busybox", "a b"] {
            assert!(validate_extra_name(bad).is_err(), "{bad:?}");
        }
        let mut net = sample_net();
        assert!(validate_net(&net).is_ok());
        net.prefix = 33;
        assert!(validate_net(&net).is_err());
        net.prefix = 24;
        net.mac[0] = 0x01;
        assert!(validate_net(&net).is_err());
    }

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
