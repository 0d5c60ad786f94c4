//! `questv shell` driven the way a person types: through a pseudo-terminal (util-linux's `script` gives the
//! runner one), one line at a time, reading the screen before typing the next. Echo, a pipeline, a file,
//! ^C interrupting `sleep 100`, and ^D leaving the shell (the machine then stops with status 0); in the VT
//! build the same in two sandboxes, Ctrl-A three times moving the input from one to the other.
mod common;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Screen {
    rx: mpsc::Receiver<Vec<u8>>,
    text: String,
}

impl Screen {
    /// Read until `want` appears after byte `from` of the screen (or fail after `secs`); returns where it ends.
    fn wait_for(&mut self, want: &str, from: usize, secs: u64) -> usize {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(i) = self.text[from.min(self.text.len())..].find(want) {
                return from + i + want.len();
            }
            let left = end.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{want:?} did not appear within {secs} s; the screen:\n{}", self.text);
            if let Ok(b) = self.rx.recv_timeout(left.min(Duration::from_millis(200))) {
                // Carriage returns dropped: the guest's and the host pseudo-terminal's output processing both add them.
                self.text.push_str(&String::from_utf8_lossy(&b).replace('\r', ""));
            }
        }
    }
}

/// The `script` process and what it started (the runner, QEMU), killed if the test ends early (a failed
/// assertion): an interactive boot has no deadline, and they are in a session of their own that no hang-up
/// reliably reaches.
struct Session(std::process::Child);

/// `pid` and its descendants (from /proc), deepest first.
fn process_tree(pid: u32) -> Vec<u32> {
    let parent_of = |p: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        // After the command name in parentheses: state, then the parent's pid.
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    let all: Vec<u32> = std::fs::read_dir("/proc").map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()).unwrap_or_default();
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(all.iter().copied().filter(|&c| parent_of(c) == Some(p)));
        i += 1;
    }
    tree.reverse();
    tree
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            for p in process_tree(self.0.id()) {
                let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
            }
            let _ = self.0.wait();
        }
    }
}

/// `questv shell ARGS` under `script`: the screen, a way to type, and the session.
fn start_shell(args: &str) -> (Screen, impl FnMut(&[u8]), Session) {
    common::require("script");
    common::require("grub-mkrescue");
    let runner = env!("CARGO_BIN_EXE_questv");
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &format!("{runner} shell {args}"), "/dev/null"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run script");
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut b = [0u8; 4096];
        while let Ok(n) = out.read(&mut b) {
            if n == 0 || tx.send(b[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut keys = child.stdin.take().unwrap();
    let type_in = move |s: &[u8]| {
        keys.write_all(s).unwrap();
        keys.flush().unwrap();
    };
    (Screen { rx, text: String::new() }, type_in, Session(child))
}

/// Wait for the machine to stop (after the last shell's ^D) and check it stopped with status 0.
fn wait_for_success(mut session: Session, screen: &Screen) {
    let child = &mut session.0;
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the machine did not stop after ^D; the screen:\n{}", screen.text);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "questv shell ended with {status}; the screen:\n{}", screen.text);
}

/// ^C ends the foreground program (not the shell), well before its 100 s: `busybox sleep 100`, ^C, the
/// echoed `^C` and the prompt again, each line starting with `prefix` (a sandbox's, or none). Returns where the
/// prompt ends.
fn ctrl_c_ends_a_sleep(screen: &mut Screen, type_in: &mut impl FnMut(&[u8]), at: usize, prefix: &str) -> usize {
    type_in(b"busybox sleep 100\r");
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    type_in(b"\x03");
    let at = screen.wait_for(&format!("{prefix}^C"), at, 30);
    let at = screen.wait_for(&format!("{prefix}/ # "), at, 30);
    assert!(started.elapsed() < Duration::from_secs(60), "sleep 100 was not interrupted");
    at
}

#[test]
fn an_interactive_shell_takes_typed_commands_and_ctrl_c_and_ctrl_d() {
    let (mut screen, mut type_in, child) = start_shell("--cpus 2");
    let mut at = screen.wait_for("/ # ", 0, 300);
    // A command, echoed as typed, with the shell's expansions.
    type_in(b"echo hel\"\"lo $((6*7))\r");
    at = screen.wait_for("hello 42", at, 30);
    at = screen.wait_for("/ # ", at, 30);
    type_in(b"echo line > /tmp/f; busybox seq 3 | busybox tac; busybox cat /tmp/f\r");
    at = screen.wait_for("3\n2\n1\n", at, 30);
    at = screen.wait_for("line\n", at, 30);
    at = screen.wait_for("/ # ", at, 30);
    at = ctrl_c_ends_a_sleep(&mut screen, &mut type_in, at, "");
    type_in(b"echo still here\r");
    at = screen.wait_for("still here", at, 30);
    screen.wait_for("/ # ", at, 30);
    // ^D at the prompt: the shell exits, init stops the machine with status 0.
    type_in(b"\x04");
    wait_for_success(child, &screen);
}

/// VT: a shell in each of two sandboxes; what is typed goes to sandbox 0 until Ctrl-A three times moves it to
/// sandbox 1 (a banner says so); ^C there interrupts sandbox 1's program; its ^D ends its shell and the input
/// goes back to sandbox 0 by itself; every line of theirs carries its prefix.
#[test]
fn vt_console_input_goes_to_one_sandbox_and_ctrl_a_switches() {
    let (mut screen, mut type_in, child) = start_shell("--vt --cpus 2");
    // Sandbox 1's prompt waits for the focus: a line in progress is shown only for the focused sandbox.
    let mut at = screen.wait_for("[s0] / # ", 0, 300);
    type_in(b"echo zero$((1+1))\r");
    at = screen.wait_for("[s0] zero2\n", at, 30);
    at = screen.wait_for("[s0] / # ", at, 30);
    type_in(b"\x01\x01\x01");
    at = screen.wait_for("console: input goes to sandbox 1", at, 30);
    at = screen.wait_for("[s1] / # ", at, 30);
    type_in(b"echo one$((2+1)); cat /proc/self/stat | cut -d' ' -f1 >/dev/null\r");
    at = screen.wait_for("[s1] one3\n", at, 30);
    assert!(!screen.text.contains("zero3") && !screen.text.contains("[s0] one3"), "typed into the wrong sandbox:\n{}", screen.text);
    at = screen.wait_for("[s1] / # ", at, 30);
    at = ctrl_c_ends_a_sleep(&mut screen, &mut type_in, at, "[s1] ");
    type_in(b"true\r");
    at = screen.wait_for("[s1] / # ", at, 30);
    // Sandbox 1's shell ends: the input falls back to sandbox 0, the only one left.
    type_in(b"\x04");
    at = screen.wait_for("RESULT sandbox_done sandbox=1 status=0", at, 60);
    at = screen.wait_for("console: input goes to sandbox 0", at, 30);
    at = screen.wait_for("[s0] / # ", at, 30);
    type_in(b"echo back in zero\r");
    at = screen.wait_for("[s0] back in zero\n", at, 30);
    screen.wait_for("[s0] / # ", at, 30);
    type_in(b"\x04");
    wait_for_success(child, &screen);
    // No line of a sandbox without its prefix: between the monitor's boot line and its end, every line is
    // either a monitor line or starts with [sN].
    for line in screen.text.lines().skip_while(|l| !l.starts_with("RESULT boot ")).skip(1) {
        let monitor = line.starts_with("RESULT ") || line.starts_with("console: ") || line.starts_with("[cpu") || line.starts_with("QUESTV DONE") || line.starts_with("questv:");
        assert!(monitor || line.starts_with("[s0] ") || line.starts_with("[s1] "), "a line without its prefix: {line:?}");
    }
}
