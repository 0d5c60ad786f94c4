//! Booting the baseline in QEMU: its command line, and a run with a deadline that collects timestamped serial
//! lines.
#![forbid(unsafe_code)]

use crate::peer::wire::format_mac;
use super::{require_tool, LinuxGuest, LinuxNet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

#[cfg(test)]
mod tests {
    use super::super::sample_net;
    use super::*;

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
}
