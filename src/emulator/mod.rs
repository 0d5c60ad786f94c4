//! The emulators: which one a boot uses, starting it (QEMU in [`qemu`], Bochs in [`bochs`]), and [`boot`]: build,
//! make the ISO, boot, stream the serial console and judge the run.
#![forbid(unsafe_code)]

pub mod bochs;
pub mod qemu;

use crate::host::require_tool;
use crate::image::{build_kernel, make_iso, ramdisk_files};
use crate::options::BootOptions;
use crate::protocol::{is_panic_line, judge, parse_done_line, results, Outcome, ResultLine};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emulator {
    Qemu,
    Bochs,
}

/// The CPU each emulator emulates (reports name it): QEMU's generic x86-64 with AMD SVM and nested paging (TCG
/// emulates both; the VT build needs them, the SMP build ignores them), Bochs' Skylake-X with VMX and EPT.
pub const QEMU_CPU_MODEL: &str = "qemu64,+svm,+npt";
/// `--clock icount`: QEMU's instruction-counting clock (deterministic guest time; see BootOptions::icount).
pub const ICOUNT: &str = "shift=3,sleep=off";
pub const BOCHS_CPU_MODEL: &str = "corei7_skylake_x";

impl Emulator {
    pub fn cpu_model(self) -> &'static str {
        match self {
            Emulator::Qemu => QEMU_CPU_MODEL,
            Emulator::Bochs => BOCHS_CPU_MODEL,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Emulator::Qemu => "qemu",
            Emulator::Bochs => "bochs",
        }
    }
}

/// The emulated e1000's own (EEPROM) address; the SMP kernel uses it, VT sandboxes have virtual ones.
pub const NIC_MAC: &str = "52:54:00:12:34:56";

#[derive(Debug)]
pub struct BootReport {
    pub lines: Vec<String>,
    pub outcome: Outcome,
    pub wall_time: Duration,
}

impl BootReport {
    pub fn results<'a>(&'a self, name: &'a str) -> impl Iterator<Item = ResultLine> + 'a {
        results(&self.lines, name)
    }
}

/// Start the emulator; serial lines arrive on the returned channel.
fn start_emulator(o: &BootOptions, iso: &Path, tag: &str) -> Result<(Child, mpsc::Receiver<String>, Vec<PathBuf>), String> {
    let (tx, rx) = mpsc::channel();
    let (child, scratch) = match o.emulator {
        Emulator::Qemu => qemu::start(o, iso, tag, tx)?,
        Emulator::Bochs => bochs::start(o, iso, tag, tx)?,
    };
    Ok((child, rx, scratch))
}

/// Build, make the ISO, boot, stream and judge.
pub fn boot(o: &BootOptions) -> Result<BootReport, String> {
    if o.gdb && o.emulator == Emulator::Bochs {
        return Err("--gdb is supported with QEMU only".into());
    }
    // Check emulator tools before the (slow) build.
    match o.emulator {
        Emulator::Qemu => require_tool("qemu-system-x86_64", "qemu-system-x86")?,
        Emulator::Bochs => require_tool("bochs", "bochs bochsbios vgabios")?,
    }
    require_tool("grub-mkrescue", "grub-pc-bin grub-common xorriso mtools")?;
    let kernel = build_kernel(o.vt)?;
    let programs = ramdisk_files(o, &kernel)?;
    let tag = format!("{}-{}", o.mode(), std::process::id());
    let iso = make_iso(&kernel, &o.kernel_args(), &tag, &programs)?;
    if o.gdb {
        eprintln!(
            "questv: QEMU waits for gdb: gdb {} -ex 'target remote :1234'",
            kernel.display()
        );
    }
    let start = Instant::now();
    let (mut child, rx, scratch) = start_emulator(o, &iso, &tag)?;
    if o.interactive {
        // The console is the user's terminal: nothing to collect. The kernel's shutdown writes 0x10 (status 0)
        // or 0x11 to isa-debug-exit, which QEMU exits with as (value << 1) | 1.
        let status = child.wait().map_err(|e| format!("qemu: {e}"))?;
        let _ = std::fs::remove_file(&iso);
        for d in scratch {
            let _ = if d.is_dir() { std::fs::remove_dir_all(d) } else { std::fs::remove_file(d) };
        }
        let outcome = match status.code() {
            Some(0x21) => Outcome::Done(0),
            Some(0x23) => Outcome::Done(1),
            _ => Outcome::Reset,
        };
        return Ok(BootReport { lines: Vec::new(), outcome, wall_time: start.elapsed() });
    }
    // A debugged or interactive run lasts as long as its user wants.
    let deadline = if o.gdb || o.interactive { None } else { Some(start + Duration::from_secs(o.timeout_secs())) };
    let (lines, exited, timed_out) = stream(o, &mut child, &rx, deadline);
    let wall_time = start.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&iso);
    if judge(&lines, exited, timed_out) != Outcome::Reset || o.emulator != Emulator::Bochs {
        for d in scratch {
            let _ = if d.is_dir() { std::fs::remove_dir_all(d) } else { std::fs::remove_file(d) };
        }
    }
    let outcome = judge(&lines, exited, timed_out);
    Ok(BootReport { lines, outcome, wall_time })
}

/// Collect the guest's serial lines (echoing them with `o.echo`) until it reports DONE, a panic has had a
/// second to finish its dump, the emulator exits or the deadline passes: (lines, exited, timed out).
fn stream(o: &BootOptions, child: &mut Child, rx: &mpsc::Receiver<String>, deadline: Option<Instant>) -> (Vec<String>, bool, bool) {
    let mut lines = Vec::new();
    let mut exited = false;
    let mut timed_out = false;
    let mut panic_seen: Option<Instant> = None;
    let echo = |l: &str| {
        if o.echo {
            println!("{l}");
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) => {
                echo(&l);
                let done = parse_done_line(&l).is_some();
                if is_panic_line(&l) && panic_seen.is_none() {
                    panic_seen = Some(Instant::now());
                }
                lines.push(l);
                if done && panic_seen.is_none() {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                exited = true;
                break;
            }
        }
        // Give a panicking kernel a moment to finish its dump.
        if panic_seen.is_some_and(|t| t.elapsed() > Duration::from_secs(1)) {
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            // Drain what the guest printed before the emulator exited.
            std::thread::sleep(Duration::from_millis(200));
            while let Ok(l) = rx.try_recv() {
                echo(&l);
                lines.push(l);
            }
            exited = true;
            break;
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            timed_out = true;
            break;
        }
    }
    (lines, exited, timed_out)
}
