//! The console as a terminal: bytes from the serial line go through the line discipline (`fs::tty`: editing,
//! echo, ^C/^\/^Z, ^D) into what `read` returns; `write` goes through its output processing. The serial port
//! is polled: on every timer tick (so ^C reaches a program that is not reading) and while a reader waits.
//! One terminal per kernel; it is the controlling terminal of init's session, and its foreground process
//! group (TIOCSPGRP, tcsetpgrp) gets the signals typed at it. In a sandbox the monitor owns the serial port:
//! `console::try_read` gives what the monitor routed here while this sandbox had the input focus, taken from
//! it when the console vector arrives (irq.rs polls at once then, as at every tick).

use super::tty::{self, LineDiscipline, Termios, Winsize};
use crate::sync::IrqSpinlock;
use alloc::vec::Vec;
use questv_libc_shim::errno::*;

struct Terminal {
    ldisc: LineDiscipline,
    winsize: Winsize,
    /// The foreground process group (0: none yet, every group may read).
    foreground: u32,
}

static TERMINAL: IrqSpinlock<Option<Terminal>> = IrqSpinlock::new(None);

/// Sends a signal to every process of a group (set once by the process layer).
static SIGNAL_GROUP: spin::Once<fn(u32, u32)> = spin::Once::new();

pub fn set_group_signaller(f: fn(u32, u32)) {
    SIGNAL_GROUP.call_once(|| f);
}

fn with<R>(f: impl FnOnce(&mut Terminal) -> R) -> R {
    let mut g = TERMINAL.lock();
    let t = g.get_or_insert_with(|| Terminal { ldisc: LineDiscipline::new(), winsize: Winsize::default(), foreground: 0 });
    f(t)
}

/// Take what the serial line received through the line discipline: echo it, and signal the foreground
/// group for ^C, ^\ and ^Z. Called on every timer tick and by waiting readers.
pub fn poll_input() {
    let mut echo = Vec::new();
    let mut signals = Vec::new();
    {
        let mut g = TERMINAL.lock();
        let t = g.get_or_insert_with(|| Terminal { ldisc: LineDiscipline::new(), winsize: Winsize::default(), foreground: 0 });
        while let Some(b) = crate::console::try_read() {
            let r = t.ldisc.input(b);
            echo.extend_from_slice(&r.echo);
            if let Some(sig) = r.signal {
                signals.push((t.foreground, sig));
            }
        }
    }
    if !echo.is_empty() {
        crate::console::write_bytes(&echo);
    }
    for (group, sig) in signals {
        if group != 0 {
            if let Some(f) = SIGNAL_GROUP.get() {
                f(group, sig);
            }
        }
    }
}

/// What a read of the terminal returns, waiting (other threads run) until a line (canonical mode) or
/// enough bytes (raw mode: VMIN) are there.
pub fn read(len: usize, nonblocking: bool) -> Result<Vec<u8>, i64> {
    let mut buf = alloc::vec![0u8; len];
    loop {
        poll_input();
        let r = with(|t| if nonblocking { t.ldisc.read_partial(&mut buf) } else { t.ldisc.read(&mut buf) });
        match r {
            tty::Read::Data(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            tty::Read::EndOfFile => return Ok(Vec::new()),
            tty::Read::Empty => {
                if nonblocking {
                    return Err(-EAGAIN);
                }
                if super::files::interrupted() {
                    return Err(-crate::signal::ERESTARTSYS);
                }
                crate::sched::yield_while_waiting();
            }
        }
    }
}

/// Write to the terminal, through its output processing (`\n` → `\r\n` in the default mode).
pub fn write(data: &[u8]) {
    let out = with(|t| t.ldisc.output(data));
    crate::console::write_bytes(&out);
}

/// poll: would a read return now?
pub fn readable() -> bool {
    poll_input();
    with(|t| t.ldisc.readable())
}

/// FIONREAD.
pub fn available() -> usize {
    poll_input();
    with(|t| t.ldisc.available())
}

pub fn termios() -> Termios {
    with(|t| *t.ldisc.termios())
}

/// TCSETS (`flush`: TCSETSF).
pub fn set_termios(new: Termios, flush: bool) {
    with(|t| t.ldisc.set_termios(new, flush));
}

pub fn winsize() -> Winsize {
    with(|t| t.winsize)
}

pub fn set_winsize(w: Winsize) {
    with(|t| t.winsize = w);
}

pub fn foreground() -> u32 {
    with(|t| t.foreground)
}

/// TIOCSPGRP: the group that reads the terminal and gets its signals.
pub fn set_foreground(group: u32) {
    with(|t| t.foreground = group);
}

/// TCFLSH.
pub fn flush_input() {
    with(|t| t.ldisc.flush_input());
}
