//! `questv shell` driven the way a person types: through a pseudo-terminal (util-linux's `script` gives the
//! runner one), one line at a time, reading the screen before typing the next. Echo, a pipeline, a file,
//! ^C interrupting `sleep 100`, and ^D leaving the shell (the machine then stops with status 0).
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

#[test]
fn an_interactive_shell_takes_typed_commands_and_ctrl_c_and_ctrl_d() {
    common::require("script");
    common::require("grub-mkrescue");
    let runner = env!("CARGO_BIN_EXE_questv");
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &format!("{runner} shell --cpus 2"), "/dev/null"])
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
    let mut type_in = |s: &[u8]| {
        keys.write_all(s).unwrap();
        keys.flush().unwrap();
    };
    let mut screen = Screen { rx, text: String::new() };
    let mut at = screen.wait_for("/ # ", 0, 300);
    // A command, echoed as typed, with the shell's expansions.
    type_in(b"echo hel\"\"lo $((6*7))\r");
    at = screen.wait_for("hello 42", at, 30);
    at = screen.wait_for("/ # ", at, 30);
    type_in(b"echo line > /tmp/f; busybox seq 3 | busybox tac; busybox cat /tmp/f\r");
    at = screen.wait_for("3\n2\n1\n", at, 30);
    at = screen.wait_for("line\n", at, 30);
    at = screen.wait_for("/ # ", at, 30);
    // ^C ends the foreground program (not the shell), well before its 100 s.
    type_in(b"busybox sleep 100\r");
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    type_in(b"\x03");
    at = screen.wait_for("^C", at, 30);
    at = screen.wait_for("/ # ", at, 30);
    assert!(started.elapsed() < Duration::from_secs(60), "sleep 100 was not interrupted");
    type_in(b"echo still here\r");
    at = screen.wait_for("still here", at, 30);
    screen.wait_for("/ # ", at, 30);
    // ^D at the prompt: the shell exits, init stops the machine with status 0.
    type_in(b"\x04");
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
