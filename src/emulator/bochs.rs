//! Bochs start-up: a headless bochsrc, starting Bochs one instance at a time (its RFB port race), and the serial
//! console from the file Bochs writes COM1 to.
#![forbid(unsafe_code)]

use super::{BOCHS_CPU_MODEL, NIC_MAC};
use crate::host::{require_tool, workspace_root};
use crate::options::{BootOptions, Firmware};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

/// Start Bochs for `o` on `iso`; its serial lines go to `tx`. Returns the child and its scratch directory
/// (configuration, serial file, log), which the runner keeps after a reset for a look at the log.
pub(super) fn start(o: &BootOptions, iso: &Path, tag: &str, tx: mpsc::Sender<String>) -> Result<(Child, Vec<PathBuf>), String> {
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
    follow_serial(serial.clone(), tx);
    Ok((child, vec![dir]))
}

/// Bochs writes COM1 to a file: a thread follows it and sends every complete line to `tx`.
fn follow_serial(serial_path: PathBuf, tx: mpsc::Sender<String>) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
