//! Console input in the VT build (docs/vt.md, "Console"): the monitor owns the UART and hands what is typed to
//! one sandbox at a time, the one with the input focus. Ctrl-A pressed three times in a row moves the focus to
//! the next sandbox still running (as Xen's console switches between domains); the three presses are not
//! delivered, fewer are (as soon as another key follows). Each sandbox's undelivered bytes wait in its own
//! bounded queue: typing faster than a sandbox reads loses that sandbox's excess, nothing else.
//!
//! Also here: how the focused sandbox's output is shown as it comes (its prompt and the echo of what is typed
//! cannot wait for a newline) while keeping the console's rule that every sandbox line starts with `[sN] `.
//! Host-tested.
#![forbid(unsafe_code)]

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// The key that switches the focus (Ctrl-A), and how many presses in a row it takes.
pub const SWITCH_KEY: u8 = 0x01;
pub const SWITCH_PRESSES: u32 = 3;
/// Bytes one sandbox may have waiting; more typed before it reads are dropped (and counted).
pub const QUEUE_MAX: usize = 1024;

pub struct InputRouter {
    focus: u32,
    /// Ctrl-A presses in a row so far (held back until the run ends or completes the switch).
    presses: u32,
    queues: Vec<VecDeque<u8>>,
    /// Sandboxes that will never read again (finished or stopped): skipped by the switch.
    gone: Vec<bool>,
    pub dropped: u64,
}

impl InputRouter {
    /// `sandboxes` sandboxes, the focus on the first.
    pub fn new(sandboxes: u32) -> InputRouter {
        let n = sandboxes.max(1) as usize;
        InputRouter { focus: 0, presses: 0, queues: (0..n).map(|_| VecDeque::new()).collect(), gone: alloc::vec![false; n], dropped: 0 }
    }

    pub fn focus(&self) -> u32 {
        self.focus
    }

    fn deliver(&mut self, b: u8) {
        let q = &mut self.queues[self.focus as usize];
        if self.gone[self.focus as usize] || q.len() >= QUEUE_MAX {
            self.dropped += 1;
        } else {
            q.push_back(b);
        }
    }

    /// One byte from the UART. `Some(sandbox)`: it completed the switch sequence and the focus moved there.
    pub fn feed(&mut self, b: u8) -> Option<u32> {
        if b == SWITCH_KEY {
            self.presses += 1;
            if self.presses < SWITCH_PRESSES {
                return None;
            }
            self.presses = 0;
            return self.move_focus();
        }
        for _ in 0..core::mem::take(&mut self.presses) {
            self.deliver(SWITCH_KEY);
        }
        self.deliver(b);
        None
    }

    /// The next sandbox after the focus that is not gone; `None` if there is no other.
    fn move_focus(&mut self) -> Option<u32> {
        let n = self.queues.len() as u32;
        let next = (1..n).map(|k| (self.focus + k) % n).find(|&s| !self.gone[s as usize])?;
        self.focus = next;
        Some(next)
    }

    /// Up to `out.len()` of `sandbox`'s waiting bytes, oldest first; how many.
    pub fn take(&mut self, sandbox: u32, out: &mut [u8]) -> usize {
        let Some(q) = self.queues.get_mut(sandbox as usize) else { return 0 };
        let n = out.len().min(q.len());
        for (slot, b) in out.iter_mut().zip(q.drain(..n)) {
            *slot = b;
        }
        n
    }

    pub fn pending(&self, sandbox: u32) -> bool {
        self.queues.get(sandbox as usize).is_some_and(|q| !q.is_empty())
    }

    /// `sandbox` will not read again: its bytes are dropped, and if it had the focus the focus moves on
    /// (`Some(new focus)`).
    pub fn leave(&mut self, sandbox: u32) -> Option<u32> {
        let i = sandbox as usize;
        if i >= self.queues.len() || self.gone[i] {
            return None;
        }
        self.gone[i] = true;
        self.dropped += self.queues[i].len() as u64;
        self.queues[i].clear();
        if self.focus == sandbox { self.move_focus() } else { None }
    }
}

/// The focused sandbox's output as it comes: each of its lines starts with `[sN] `, printed before the line's
/// first byte; a carriage return not followed by a newline goes back to the start of the line and prints the
/// prefix again (line editors redraw that way), so nothing it prints can stand at the start of a line
/// without its prefix. Printable ASCII, tab, backspace, bell and escape (terminal control sequences: a shell's
/// line editing) pass; any other byte becomes `?`. Another line printed meanwhile ends the open line first;
/// the open line (a prompt, half a typed command) is shown again when its sandbox prints next or
/// [`LiveOutput::resume`] is called, and handed back with [`LiveOutput::take_line`] when the focus moves.
#[derive(Default)]
pub struct LiveOutput {
    /// Whose line is open on the UART (after its prefix, no newline yet).
    open: Option<u32>,
    /// Whose line was ended by another line, and is to be shown again.
    suspended: Option<u32>,
    /// What the open or suspended line holds so far (after the prefix; at most [`LINE_KEPT`] bytes kept).
    text: Vec<u8>,
    pending_cr: bool,
}

/// How much of an open line is kept for showing it again.
pub const LINE_KEPT: usize = 160;

impl LiveOutput {
    pub const fn new() -> LiveOutput {
        LiveOutput { open: None, suspended: None, text: Vec::new(), pending_cr: false }
    }

    fn prefix(sandbox: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(alloc::format!("[s{sandbox}] ").as_bytes());
    }

    /// Something else is about to print a line of its own: end the open line (it is kept, to be shown again).
    pub fn interrupt(&mut self, out: &mut Vec<u8>) {
        if let Some(s) = self.open.take() {
            out.push(b'\n');
            self.suspended = Some(s);
        }
        self.pending_cr = false;
    }

    /// Show the suspended line again, if any.
    pub fn resume(&mut self, out: &mut Vec<u8>) {
        if let Some(s) = self.suspended.take() {
            Self::prefix(s, out);
            out.extend_from_slice(&self.text);
            self.open = Some(s);
        }
    }

    /// `sandbox` loses the focus: its open or suspended line, ended on the UART, handed to the caller (it goes
    /// on as an ordinary line); empty if it has none.
    pub fn take_line(&mut self, sandbox: u32, out: &mut Vec<u8>) -> Vec<u8> {
        if self.open == Some(sandbox) {
            self.interrupt(out);
        }
        if self.suspended != Some(sandbox) {
            return Vec::new();
        }
        self.suspended = None;
        core::mem::take(&mut self.text)
    }

    fn keep(&mut self, b: u8) {
        if self.text.len() < LINE_KEPT {
            self.text.push(b);
        }
    }

    /// `bytes` of `sandbox`'s output, appended to `out` as they go to the UART.
    pub fn render(&mut self, sandbox: u32, bytes: &[u8], out: &mut Vec<u8>) {
        if self.open.is_some_and(|s| s != sandbox) {
            self.interrupt(out);
        }
        match self.suspended {
            Some(s) if s == sandbox => self.resume(out),
            Some(_) => {
                self.suspended = None;
                self.text.clear();
            }
            None => {}
        }
        for &b in bytes {
            if core::mem::take(&mut self.pending_cr) && b != b'\n' {
                out.push(b'\r');
                Self::prefix(sandbox, out);
                self.open = Some(sandbox);
                self.text.clear();
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    if self.open.take().is_none() {
                        Self::prefix(sandbox, out);
                    }
                    out.push(b'\n');
                    self.text.clear();
                }
                _ => {
                    if self.open.is_none() {
                        Self::prefix(sandbox, out);
                        self.open = Some(sandbox);
                        self.text.clear();
                    }
                    let shown = match b {
                        0x20..=0x7E | b'\t' | 0x07 | 0x08 | 0x1B => b,
                        _ => b'?',
                    };
                    out.push(shown);
                    self.keep(shown);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(r: &mut InputRouter, s: u32) -> Vec<u8> {
        let mut out = [0u8; 64];
        let n = r.take(s, &mut out);
        out[..n].to_vec()
    }

    #[test]
    fn three_ctrl_a_move_the_focus_and_fewer_are_delivered() {
        let mut r = InputRouter::new(3);
        for &b in b"ls\x01x\x01\x01y" {
            assert_eq!(r.feed(b), None);
        }
        assert_eq!(all(&mut r, 0), b"ls\x01x\x01\x01y");
        assert_eq!(r.feed(1), None);
        assert_eq!(r.feed(1), None);
        assert_eq!(r.feed(1), Some(1));
        assert_eq!(r.focus(), 1);
        for &b in b"pwd\r" {
            r.feed(b);
        }
        assert_eq!(all(&mut r, 0), b"");
        assert!(r.pending(1));
        assert_eq!(all(&mut r, 1), b"pwd\r");
        // Around the ring: 1 → 2 → 0.
        for _ in 0..3 {
            r.feed(1);
        }
        assert_eq!(r.focus(), 2);
        for _ in 0..3 {
            r.feed(1);
        }
        assert_eq!(r.focus(), 0);
    }

    #[test]
    fn gone_sandboxes_are_skipped_and_a_lone_one_keeps_the_focus() {
        let mut r = InputRouter::new(3);
        r.feed(b'a');
        assert_eq!(r.leave(0), Some(1), "the focus leaves with its sandbox");
        assert_eq!(r.dropped, 1);
        assert_eq!(r.leave(0), None, "once");
        for _ in 0..3 {
            r.feed(1);
        }
        assert_eq!(r.focus(), 2);
        for _ in 0..3 {
            r.feed(1);
        }
        assert_eq!(r.focus(), 1, "0 is skipped");
        assert_eq!(r.leave(2), None, "not the focus");
        for _ in 0..3 {
            assert_eq!(r.feed(1), None);
        }
        assert_eq!(r.focus(), 1, "nowhere else to go");
        assert_eq!(r.leave(1), None, "the last one: no focus left");
        r.feed(b'z');
        assert_eq!(all(&mut r, 1), b"");
    }

    #[test]
    fn a_flood_fills_only_its_sandboxes_queue() {
        let mut r = InputRouter::new(2);
        for _ in 0..QUEUE_MAX + 100 {
            r.feed(b'x');
        }
        assert_eq!(r.dropped, 100);
        for _ in 0..3 {
            r.feed(1);
        }
        r.feed(b'y');
        assert_eq!(all(&mut r, 1), b"y");
        let mut big = alloc::vec![0u8; 2 * QUEUE_MAX];
        assert_eq!(r.take(0, &mut big), QUEUE_MAX);
        assert_eq!(r.take(7, &mut big), 0, "no such sandbox");
    }

    fn shown(live: &mut LiveOutput, parts: &[(u32, &[u8])]) -> String {
        let mut out = Vec::new();
        for &(s, b) in parts {
            if s == u32::MAX {
                live.interrupt(&mut out);
                out.extend_from_slice(b);
            } else {
                live.render(s, b, &mut out);
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn live_lines_carry_their_prefix_however_they_are_cut() {
        let mut live = LiveOutput::new();
        let other: u32 = u32::MAX;
        let s = shown(
            &mut live,
            &[(1, b"/ # "), (1, b"e"), (1, b"cho hi\r\n"), (1, b"hi\r\n\r\n"), (1, b"/ # ab"), (other, b"[s0] line\n"), (1, b"c\x08 \x08\r\n")],
        );
        assert_eq!(s, "[s1] / # echo hi\n[s1] hi\n[s1] \n[s1] / # ab\n[s0] line\n[s1] / # abc\x08 \x08\n");
        // A carriage return alone (a line editor's redraw) brings the prefix back; control bytes are replaced.
        let s = shown(&mut live, &[(1, b"/ # x\r/ # xy\x1b[K"), (1, b"\r"), (1, b"\n"), (1, b"\x00\x7f\xff\n")]);
        assert_eq!(s, "[s1] / # x\r[s1] / # xy\x1b[K\n[s1] ???\n");
        // Another sandbox's live output ends the open line.
        let s = shown(&mut live, &[(1, b"/ # "), (2, b"$ ")]);
        assert_eq!(s, "[s1] / # \n[s2] $ ");
    }

    #[test]
    fn an_interrupted_line_comes_back_and_goes_with_the_focus() {
        let mut live = LiveOutput::new();
        let mut out = Vec::new();
        live.render(0, b"/ # ech", &mut out);
        live.interrupt(&mut out);
        out.extend_from_slice(b"[s1] other\n");
        live.resume(&mut out);
        live.render(0, b"o", &mut out);
        assert_eq!(String::from_utf8(out.clone()).unwrap(), "[s0] / # ech\n[s1] other\n[s0] / # echo");
        // The focus moves: the line is ended and handed back, once.
        out.clear();
        assert_eq!(live.take_line(0, &mut out), b"/ # echo");
        assert_eq!(out, b"\n");
        assert_eq!(live.take_line(0, &mut out), b"");
        live.resume(&mut out);
        assert_eq!(out, b"\n", "nothing left to show");
        // A redraw (carriage return) restarts what is kept.
        let mut out = Vec::new();
        live.render(2, b"/ # abc\r/ # x", &mut out);
        assert_eq!(live.take_line(2, &mut out), b"/ # x");
    }
}
