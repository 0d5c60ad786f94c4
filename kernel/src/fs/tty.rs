//! The terminal line discipline: Linux's N_TTY (termios(3), tty_ioctl(4), drivers/tty/n_tty.c) as pure logic.
//! The serial console feeds it each received byte ([`LineDiscipline::input`]) and sends the echo it returns to
//! the terminal; read(), write(), poll() and the TCGETS/TCSETS*/TCFLSH/FIONREAD/TIOC*WINSZ ioctls go through the
//! rest. Blocking, waking, the VTIME timer and sending signals to the foreground process group are the caller's,
//! driven by the values returned here.
//!
//! Checked against Linux: flag and `c_cc` index values against include/uapi/asm-generic/termbits.h and
//! termbits-common.h (x86-64 uses the generic ones); the defaults against `tty_std_termios` in
//! drivers/tty/tty_io.c and `INIT_C_CC` in include/asm-generic/termios.h (include/linux/termios_internal.h since
//! Linux 6.2). Linux's serial core gives its ports B9600 | CLOCAL in c_cflag instead; we keep tty_std_termios.
//!
//! Not done, because nothing here knows the cursor column (`output` keeps no state): ONOCR, TAB3 expansion, and
//! erasing a tab that has no earlier tab on its line assumes the line began at a tab stop (Linux remembers the
//! column the line started at). Also not done: ECHOPRT, XCASE, EXTPROC, PENDIN, break and parity handling
//! (IGNBRK, BRKINT, PARMRK, INPCK); VDISCARD and VSWTC are ignored, as Linux's n_tty ignores them.
#![forbid(unsafe_code)]

use crate::signal::{SIGINT, SIGQUIT, SIGTSTP};
use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Number of control characters in the kernel's `struct termios` (not glibc's 32).
pub const NCCS: usize = 19;
/// Size of `struct termios` as TCGETS/TCSETS copy it.
pub const TERMIOS_SIZE: usize = 36;
/// Size of `struct winsize` (TIOCGWINSZ/TIOCSWINSZ).
pub const WINSIZE_SIZE: usize = 8;
/// Input kept for readers plus the line being edited, at most (Linux's N_TTY_BUF_SIZE).
pub const INPUT_LIMIT: usize = 4096;
/// A `c_cc` entry with this value is disabled (Linux's _POSIX_VDISABLE).
pub const POSIX_VDISABLE: u8 = 0;

// c_cc indices.
pub const VINTR: usize = 0;
pub const VQUIT: usize = 1;
pub const VERASE: usize = 2;
pub const VKILL: usize = 3;
pub const VEOF: usize = 4;
pub const VTIME: usize = 5;
pub const VMIN: usize = 6;
pub const VSWTC: usize = 7;
pub const VSTART: usize = 8;
pub const VSTOP: usize = 9;
pub const VSUSP: usize = 10;
pub const VEOL: usize = 11;
pub const VREPRINT: usize = 12;
pub const VDISCARD: usize = 13;
pub const VWERASE: usize = 14;
pub const VLNEXT: usize = 15;
pub const VEOL2: usize = 16;

// c_iflag bits.
pub const ISTRIP: u32 = 0x020;
pub const INLCR: u32 = 0x040;
pub const IGNCR: u32 = 0x080;
pub const ICRNL: u32 = 0x100;
pub const IUCLC: u32 = 0x200;
pub const IXON: u32 = 0x400;
pub const IXANY: u32 = 0x800;
pub const IUTF8: u32 = 0x4000;

// c_oflag bits.
pub const OPOST: u32 = 0x01;
pub const OLCUC: u32 = 0x02;
pub const ONLCR: u32 = 0x04;
pub const OCRNL: u32 = 0x08;

// c_cflag bits.
pub const B38400: u32 = 0x000f;
pub const CS8: u32 = 0x0030;
pub const CREAD: u32 = 0x0080;
pub const HUPCL: u32 = 0x0400;

// c_lflag bits.
pub const ISIG: u32 = 0x00001;
pub const ICANON: u32 = 0x00002;
pub const ECHO: u32 = 0x00008;
pub const ECHOE: u32 = 0x00010;
pub const ECHOK: u32 = 0x00020;
pub const ECHONL: u32 = 0x00040;
pub const NOFLSH: u32 = 0x00080;
pub const ECHOCTL: u32 = 0x00200;
pub const ECHOKE: u32 = 0x00800;
pub const IEXTEN: u32 = 0x08000;

/// The kernel's `struct termios` (x86-64), as TCGETS/TCSETS/TCSETSW/TCSETSF copy it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Termios {
    pub c_iflag: u32,
    pub c_oflag: u32,
    pub c_cflag: u32,
    pub c_lflag: u32,
    pub c_line: u8,
    pub c_cc: [u8; NCCS],
}

impl Default for Termios {
    /// What Linux gives a fresh console (`tty_std_termios`).
    fn default() -> Self {
        let control = |letter: u8| letter & 0x1f;
        let mut c_cc = [POSIX_VDISABLE; NCCS];
        c_cc[VINTR] = control(b'C');
        c_cc[VQUIT] = control(b'\\');
        c_cc[VERASE] = 0x7f;
        c_cc[VKILL] = control(b'U');
        c_cc[VEOF] = control(b'D');
        c_cc[VTIME] = 0;
        c_cc[VMIN] = 1;
        c_cc[VSTART] = control(b'Q');
        c_cc[VSTOP] = control(b'S');
        c_cc[VSUSP] = control(b'Z');
        c_cc[VREPRINT] = control(b'R');
        c_cc[VDISCARD] = control(b'O');
        c_cc[VWERASE] = control(b'W');
        c_cc[VLNEXT] = control(b'V');
        Termios {
            c_iflag: ICRNL | IXON,
            c_oflag: OPOST | ONLCR,
            c_cflag: B38400 | CS8 | CREAD | HUPCL,
            c_lflag: ISIG | ICANON | ECHO | ECHOE | ECHOK | ECHOCTL | ECHOKE | IEXTEN,
            c_line: 0,
            c_cc,
        }
    }
}

impl Termios {
    pub fn to_bytes(&self) -> [u8; TERMIOS_SIZE] {
        let mut bytes = [0u8; TERMIOS_SIZE];
        for (i, word) in [self.c_iflag, self.c_oflag, self.c_cflag, self.c_lflag].iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
        }
        bytes[16] = self.c_line;
        bytes[17..].copy_from_slice(&self.c_cc);
        bytes
    }

    /// None if `bytes` is shorter than the structure; a longer buffer (e.g. `struct termios2`) is read up to it.
    pub fn from_bytes(bytes: &[u8]) -> Option<Termios> {
        let bytes = bytes.get(..TERMIOS_SIZE)?;
        let word = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let mut c_cc = [0u8; NCCS];
        c_cc.copy_from_slice(&bytes[17..]);
        let (c_iflag, c_oflag, c_cflag, c_lflag) = (word(0), word(4), word(8), word(12));
        Some(Termios { c_iflag, c_oflag, c_cflag, c_lflag, c_line: bytes[16], c_cc })
    }
}

/// `struct winsize` (TIOCGWINSZ/TIOCSWINSZ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Winsize {
    pub rows: u16,
    pub cols: u16,
    pub xpixel: u16,
    pub ypixel: u16,
}

impl Default for Winsize {
    fn default() -> Self {
        Winsize { rows: 24, cols: 80, xpixel: 0, ypixel: 0 }
    }
}

impl Winsize {
    pub fn to_bytes(&self) -> [u8; WINSIZE_SIZE] {
        let mut bytes = [0u8; WINSIZE_SIZE];
        for (i, half) in [self.rows, self.cols, self.xpixel, self.ypixel].iter().enumerate() {
            bytes[i * 2..i * 2 + 2].copy_from_slice(&half.to_le_bytes());
        }
        bytes
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Winsize> {
        let bytes = bytes.get(..WINSIZE_SIZE)?;
        let half = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        Some(Winsize { rows: half(0), cols: half(2), xpixel: half(4), ypixel: half(6) })
    }
}

/// IXON flow control: whether output to the terminal is to stop or resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFlow {
    Stop,
    Start,
}

/// What one received byte did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Input {
    /// Bytes to send to the terminal, already output-processed.
    pub echo: Vec<u8>,
    /// A signal for the foreground process group (ISIG). Unless NOFLSH, pending input has been flushed here and
    /// the caller should also discard output queued for the terminal, as Linux does.
    pub signal: Option<u32>,
    /// Data or an end of file became available: wake blocked readers and pollers.
    pub wake_readers: bool,
    /// Output was stopped or restarted (IXON's VSTOP/VSTART, IXANY, or a signal character).
    pub output_flow: Option<OutputFlow>,
}

/// What a read found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// This many bytes were copied; 0 means "return 0 now" (VMIN = 0, or an empty buffer).
    Data(usize),
    /// Canonical VEOF on an empty line: read() returns 0. Consumed.
    EndOfFile,
    /// Nothing to return yet: block (or EAGAIN for O_NONBLOCK).
    Empty,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Erase {
    Char,
    Word,
    Line,
}

/// How a stored character is echoed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EchoAs {
    Nothing,
    /// With ECHO; as ^X under ECHOCTL.
    Char,
    /// A newline, with ECHO or (canonical) ECHONL; never as ^J.
    Newline,
}

/// One terminal's input state and settings.
///
/// Reads in non-canonical mode: [`read`](Self::read) is a blocking read's test: Empty until
/// min(VMIN, buffer size) bytes are there when VMIN > 0; with VMIN = 0 it returns what is there, possibly
/// Data(0). VTIME is the caller's timer: with VMIN > 0 and VTIME > 0 it is the inter-byte timer (started at the
/// first byte, restarted by each wake); on expiry the caller takes [`read_partial`](Self::read_partial). With
/// VMIN = 0 and VTIME > 0 the caller waits up to VTIME for [`available`](Self::available) > 0, then reads
/// (Data(0) on timeout). O_NONBLOCK reads use `read_partial` and turn Empty into EAGAIN.
#[derive(Debug, Default)]
pub struct LineDiscipline {
    termios: Termios,
    /// Canonical mode: the line being edited, not yet readable.
    line: Vec<u8>,
    /// What readers may take; in canonical mode whole completed lines only.
    ready: VecDeque<u8>,
    /// Canonical mode: the unread length of each completed line in `ready`, oldest first. A 0 is an end of file
    /// (VEOF on an empty line); a line with data is removed when its last byte is read.
    lines: VecDeque<usize>,
    /// How many of `lines` are ends of file: each takes one byte of INPUT_LIMIT, like Linux's stored marker.
    pending_eofs: usize,
    /// The previous byte was VLNEXT: take this one literally.
    literal_next: bool,
    /// IXON: output is suspended by VSTOP.
    output_stopped: bool,
}

impl LineDiscipline {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn termios(&self) -> &Termios {
        &self.termios
    }

    /// TCSETS/TCSETSW (`flush_input` false) and TCSETSF (true). Callers wake readers afterwards, as Linux does:
    /// a new mode or VMIN may satisfy a blocked read.
    pub fn set_termios(&mut self, new: Termios, flush_input: bool) {
        if flush_input {
            self.flush_input();
        }
        let was_canonical = self.canonical();
        self.termios = new;
        if was_canonical && !self.canonical() {
            // Linux makes everything typed readable, the line being edited included. A pending end of file
            // has no byte to become (Linux would hand out its NUL marker): dropped.
            self.ready.extend(self.line.drain(..));
            self.lines.clear();
            self.pending_eofs = 0;
            self.literal_next = false;
        } else if !was_canonical && self.canonical() {
            // Linux turns unread raw input into one completed line.
            if !self.ready.is_empty() {
                self.lines.push_back(self.ready.len());
            }
            self.literal_next = false;
        }
        if !self.iflag(IXON) {
            self.output_stopped = false;
        }
    }

    /// TCFLSH (TCIFLUSH): drop unread input and the line being edited.
    pub fn flush_input(&mut self) {
        self.line.clear();
        self.ready.clear();
        self.lines.clear();
        self.pending_eofs = 0;
        self.literal_next = false;
    }

    pub fn vmin(&self) -> u8 {
        self.termios.c_cc[VMIN]
    }

    pub fn vtime_deciseconds(&self) -> u8 {
        self.termios.c_cc[VTIME]
    }

    /// IXON has suspended output: the caller holds back what it would send to the terminal.
    pub fn output_stopped(&self) -> bool {
        self.output_stopped
    }

    /// FIONREAD/TIOCINQ: bytes a read could return now (canonical: in completed lines only).
    pub fn available(&self) -> usize {
        self.ready.len()
    }

    /// poll()'s POLLIN, as Linux decides it: a completed line or end of file in canonical mode; otherwise at
    /// least VMIN bytes when VMIN > 0 and VTIME = 0, else at least one byte.
    pub fn readable(&self) -> bool {
        if self.canonical() {
            !self.lines.is_empty()
        } else if self.vmin() > 0 && self.vtime_deciseconds() == 0 {
            self.ready.len() >= usize::from(self.vmin())
        } else {
            !self.ready.is_empty()
        }
    }

    /// A blocking read's attempt (see the type's documentation for VMIN and VTIME). Canonical mode returns at
    /// most one line, its newline included; a line longer than `out` comes in pieces.
    pub fn read(&mut self, out: &mut [u8]) -> Read {
        if self.canonical() {
            return self.read_line(out);
        }
        let wanted = usize::from(self.vmin()).min(out.len());
        if self.ready.len() < wanted {
            return Read::Empty;
        }
        Read::Data(self.take(out))
    }

    /// Whatever can be read now, ignoring VMIN: Empty rather than Data(0) when there is nothing. For O_NONBLOCK
    /// and for the expiry of the VTIME inter-byte timer.
    pub fn read_partial(&mut self, out: &mut [u8]) -> Read {
        if self.canonical() {
            return self.read_line(out);
        }
        if self.ready.is_empty() && !out.is_empty() {
            return Read::Empty;
        }
        Read::Data(self.take(out))
    }

    /// Output processing for write() and echo: with OPOST, ONLCR sends "\n" as "\r\n", OCRNL sends "\r" as
    /// "\n", OLCUC upper-cases. ONLRET only moves Linux's column count, so it changes no byte.
    pub fn output(&self, data: &[u8]) -> Vec<u8> {
        if !self.oflag(OPOST) {
            return data.to_vec();
        }
        let mut out = Vec::with_capacity(data.len() + data.len() / 8);
        for &byte in data {
            match byte {
                b'\n' if self.oflag(ONLCR) => out.extend_from_slice(b"\r\n"),
                b'\r' if self.oflag(OCRNL) => out.push(b'\n'),
                _ if self.oflag(OLCUC) => out.push(byte.to_ascii_uppercase()),
                _ => out.push(byte),
            }
        }
        out
    }

    /// One byte received from the terminal.
    pub fn input(&mut self, byte: u8) -> Input {
        let mut result = Input::default();
        let mut echo = Vec::new();
        self.receive(byte, &mut echo, &mut result);
        result.echo = self.output(&echo);
        result
    }

    fn receive(&mut self, byte: u8, echo: &mut Vec<u8>, result: &mut Input) {
        let mut c = if self.iflag(ISTRIP) { byte & 0x7f } else { byte };
        if self.iflag(IUCLC) && self.lflag(IEXTEN) {
            c = c.to_ascii_lowercase();
        }
        if self.literal_next {
            self.literal_next = false;
            self.restart_output_on_any_char(result);
            return self.store(c, EchoAs::Char, echo, result);
        }
        if self.iflag(IXON) {
            if self.is_char(VSTART, c) {
                return self.set_output_stopped(false, result);
            }
            if self.is_char(VSTOP, c) {
                return self.set_output_stopped(true, result);
            }
        }
        if self.lflag(ISIG) {
            for (index, signal) in [(VINTR, SIGINT), (VQUIT, SIGQUIT), (VSUSP, SIGTSTP)] {
                if self.is_char(index, c) {
                    if !self.lflag(NOFLSH) {
                        self.flush_input();
                    }
                    if self.iflag(IXON) {
                        self.set_output_stopped(false, result);
                    }
                    if self.lflag(ECHO) {
                        self.echo_char(c, echo);
                    }
                    result.signal = Some(signal);
                    return;
                }
            }
        }
        self.restart_output_on_any_char(result);
        if c == b'\r' {
            if self.iflag(IGNCR) {
                return;
            }
            if self.iflag(ICRNL) {
                c = b'\n';
            }
        } else if c == b'\n' && self.iflag(INLCR) {
            c = b'\r';
        }
        if self.canonical() {
            let extended = self.lflag(IEXTEN);
            if self.is_char(VERASE, c) {
                return self.erase(Erase::Char, c, echo);
            }
            if self.is_char(VKILL, c) {
                return self.erase(Erase::Line, c, echo);
            }
            if extended && self.is_char(VWERASE, c) {
                return self.erase(Erase::Word, c, echo);
            }
            if extended && self.is_char(VLNEXT, c) {
                self.literal_next = true;
                // A caret under the cursor until the literal character's echo overwrites it.
                if self.lflag(ECHO) && self.lflag(ECHOCTL) {
                    echo.extend_from_slice(b"^\x08");
                }
                return;
            }
            if extended && self.lflag(ECHO) && self.is_char(VREPRINT, c) {
                self.echo_char(c, echo);
                echo.push(b'\n');
                for &b in &self.line {
                    self.echo_char(b, echo);
                }
                return;
            }
            if c == b'\n' {
                return self.complete_line(Some(c), EchoAs::Newline, echo, result);
            }
            if self.is_char(VEOF, c) {
                return self.complete_line(None, EchoAs::Nothing, echo, result);
            }
            if self.is_char(VEOL, c) || (extended && self.is_char(VEOL2, c)) {
                return self.complete_line(Some(c), EchoAs::Char, echo, result);
            }
        }
        let echo_as = if c == b'\n' { EchoAs::Newline } else { EchoAs::Char };
        self.store(c, echo_as, echo, result);
    }

    /// Keeps an ordinary character. Canonical mode keeps the last byte of INPUT_LIMIT for the line's terminator,
    /// as older Linux did (newer kernels overwrite the line's last byte instead), so a newline or VEOF can
    /// always complete a line however long the flood before it.
    fn store(&mut self, c: u8, echo_as: EchoAs, echo: &mut Vec<u8>, result: &mut Input) {
        let limit = if self.canonical() { INPUT_LIMIT - 1 } else { INPUT_LIMIT };
        if self.buffered() >= limit {
            return self.ring_bell(echo);
        }
        self.echo(c, echo_as, echo);
        if self.canonical() {
            self.line.push(c);
        } else {
            self.ready.push_back(c);
            result.wake_readers = true;
        }
    }

    /// Makes the edited line readable, with `terminator` (a newline or VEOL/VEOL2) or without (VEOF).
    fn complete_line(&mut self, terminator: Option<u8>, echo_as: EchoAs, echo: &mut Vec<u8>, result: &mut Input) {
        // `store` leaves a non-empty line room for its terminator; only a new, empty line can find the buffer
        // full of unread lines.
        if self.line.is_empty() && self.buffered() >= INPUT_LIMIT {
            return self.ring_bell(echo);
        }
        debug_assert!(self.buffered() < INPUT_LIMIT || terminator.is_none());
        if let Some(t) = terminator {
            self.echo(t, echo_as, echo);
            self.line.push(t);
        }
        let length = self.line.len();
        self.ready.extend(self.line.drain(..));
        if length == 0 {
            self.pending_eofs += 1;
        }
        self.lines.push_back(length);
        result.wake_readers = true;
    }

    fn erase(&mut self, kind: Erase, c: u8, echo: &mut Vec<u8>) {
        if self.line.is_empty() {
            return;
        }
        if kind == Erase::Line {
            if !self.lflag(ECHO) {
                return self.line.clear();
            }
            if !(self.lflag(ECHOK) && self.lflag(ECHOKE) && self.lflag(ECHOE)) {
                // Not erased on screen: Linux echoes the kill character, and a newline if ECHOK.
                self.line.clear();
                self.echo_char(c, echo);
                if self.lflag(ECHOK) {
                    echo.push(b'\n');
                }
                return;
            }
        }
        let mut seen_word = false;
        while !self.line.is_empty() {
            let start = self.last_char_start();
            let first = self.line[start];
            if kind == Erase::Word {
                // Linux's rule (BSD's ALTWERASE): trailing non-word bytes, then the word before them. Non-ASCII
                // bytes count as word bytes, so UTF-8 words go whole.
                if first.is_ascii_alphanumeric() || first == b'_' || first >= 0x80 {
                    seen_word = true;
                } else if seen_word {
                    break;
                }
            }
            self.line.truncate(start);
            if self.lflag(ECHO) {
                self.echo_erasure(kind, first, echo);
            }
            if kind == Erase::Char {
                break;
            }
        }
    }

    /// Where the line's last character starts: with IUTF8 a multi-byte character goes as a whole (continuation
    /// bytes go with the byte before them, as in Linux).
    fn last_char_start(&self) -> usize {
        let mut start = self.line.len() - 1;
        while start > 0 && self.is_continuation(self.line[start]) {
            start -= 1;
        }
        start
    }

    /// Takes the character `first` (already removed from the line) off the screen.
    fn echo_erasure(&self, kind: Erase, first: u8, echo: &mut Vec<u8>) {
        if kind == Erase::Char && !self.lflag(ECHOE) {
            self.echo_char(self.termios.c_cc[VERASE], echo);
        } else if first == b'\t' {
            let columns = self.columns_since_tab_stop();
            echo.extend(core::iter::repeat_n(b'\x08', 8 - columns % 8));
        } else if is_control(first) {
            // Echoed as ^X: two columns; echoed raw (no ECHOCTL): none to take back.
            if self.lflag(ECHOCTL) {
                echo.extend_from_slice(b"\x08 \x08\x08 \x08");
            }
        } else {
            echo.extend_from_slice(b"\x08 \x08");
        }
    }

    /// Columns the line's echo took after its last tab (or its start, taken to be a tab stop).
    fn columns_since_tab_stop(&self) -> usize {
        let mut columns = 0;
        for &b in self.line.iter().rev() {
            if b == b'\t' {
                break;
            } else if is_control(b) {
                columns += if self.lflag(ECHOCTL) { 2 } else { 0 };
            } else if !self.is_continuation(b) {
                columns += 1;
            }
        }
        columns
    }

    fn read_line(&mut self, out: &mut [u8]) -> Read {
        if out.is_empty() {
            return Read::Data(0);
        }
        match self.lines.front_mut() {
            None => Read::Empty,
            Some(0) => {
                self.lines.pop_front();
                self.pending_eofs -= 1;
                Read::EndOfFile
            }
            Some(unread) => {
                let n = (*unread).min(out.len());
                *unread -= n;
                if *unread == 0 {
                    self.lines.pop_front();
                }
                for (slot, byte) in out.iter_mut().zip(self.ready.drain(..n)) {
                    *slot = byte;
                }
                Read::Data(n)
            }
        }
    }

    fn take(&mut self, out: &mut [u8]) -> usize {
        let n = self.ready.len().min(out.len());
        for (slot, byte) in out.iter_mut().zip(self.ready.drain(..n)) {
            *slot = byte;
        }
        n
    }

    fn echo(&self, c: u8, echo_as: EchoAs, echo: &mut Vec<u8>) {
        match echo_as {
            EchoAs::Char if self.lflag(ECHO) => self.echo_char(c, echo),
            EchoAs::Newline if self.lflag(ECHO) || (self.canonical() && self.lflag(ECHONL)) => echo.push(b'\n'),
            _ => {}
        }
    }

    /// ECHOCTL shows control characters other than TAB as ^X (DEL as ^?). The man page also excepts NL, START
    /// and STOP: NL is echoed as a newline before it gets here, and with IXON START and STOP never get here.
    fn echo_char(&self, c: u8, echo: &mut Vec<u8>) {
        if self.lflag(ECHOCTL) && is_control(c) && c != b'\t' {
            echo.extend_from_slice(&[b'^', c ^ 0x40]);
        } else {
            echo.push(c);
        }
    }

    /// Linux acts as if IMAXBEL were always set: a dropped byte rings the bell when echoing.
    fn ring_bell(&self, echo: &mut Vec<u8>) {
        if self.lflag(ECHO) {
            echo.push(0x07);
        }
    }

    fn set_output_stopped(&mut self, stopped: bool, result: &mut Input) {
        if self.output_stopped != stopped {
            self.output_stopped = stopped;
            result.output_flow = Some(if stopped { OutputFlow::Stop } else { OutputFlow::Start });
        }
    }

    fn restart_output_on_any_char(&mut self, result: &mut Input) {
        if self.iflag(IXON) && self.iflag(IXANY) {
            self.set_output_stopped(false, result);
        }
    }

    /// Bytes held against INPUT_LIMIT.
    fn buffered(&self) -> usize {
        self.ready.len() + self.pending_eofs + self.line.len()
    }

    fn is_char(&self, index: usize, c: u8) -> bool {
        let special = self.termios.c_cc[index];
        special != POSIX_VDISABLE && special == c
    }

    fn is_continuation(&self, b: u8) -> bool {
        self.iflag(IUTF8) && b & 0xc0 == 0x80
    }

    fn canonical(&self) -> bool {
        self.lflag(ICANON)
    }

    fn iflag(&self, flag: u32) -> bool {
        self.termios.c_iflag & flag != 0
    }

    fn oflag(&self, flag: u32) -> bool {
        self.termios.c_oflag & flag != 0
    }

    fn lflag(&self, flag: u32) -> bool {
        self.termios.c_lflag & flag != 0
    }
}

/// The kernel's iscntrl(): C0 controls and DEL; bytes 0x80-0x9f are not controls there.
fn is_control(c: u8) -> bool {
    c < 0x20 || c == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `keys` as typed; the echoes concatenated, the last signal and flow change, any wake.
    fn type_keys(ld: &mut LineDiscipline, keys: &[u8]) -> Input {
        let mut all = Input::default();
        for &key in keys {
            let input = ld.input(key);
            all.echo.extend(input.echo);
            all.signal = input.signal.or(all.signal);
            all.output_flow = input.output_flow.or(all.output_flow);
            all.wake_readers |= input.wake_readers;
        }
        all
    }

    fn read_bytes(ld: &mut LineDiscipline, size: usize) -> Result<Vec<u8>, Read> {
        let mut buffer = vec![0u8; size];
        match ld.read(&mut buffer) {
            Read::Data(n) => Ok(buffer[..n].to_vec()),
            other => Err(other),
        }
    }

    fn with_termios(change: impl FnOnce(&mut Termios)) -> LineDiscipline {
        let mut ld = LineDiscipline::new();
        let mut termios = Termios::default();
        change(&mut termios);
        ld.set_termios(termios, false);
        ld
    }

    fn raw_termios() -> Termios {
        let mut termios = Termios::default();
        termios.c_lflag &= !(ICANON | ECHO | ISIG);
        termios
    }

    fn raw() -> LineDiscipline {
        with_termios(|t| *t = raw_termios())
    }

    #[test]
    fn defaults_are_linux_tty_std_termios() {
        let t = Termios::default();
        // `stty -g` on a fresh Linux console reads 500:5:4bf:8a3b:3:1c:7f:15:4:0:1:0:11:13:1a:0:12:f:17:16:0...
        assert_eq!((t.c_iflag, t.c_oflag, t.c_cflag, t.c_lflag, t.c_line), (0x500, 0x5, 0x4bf, 0x8a3b, 0));
        let expected_cc = [3, 0x1c, 0x7f, 0x15, 4, 0, 1, 0, 0x11, 0x13, 0x1a, 0, 0x12, 0x0f, 0x17, 0x16, 0, 0, 0];
        assert_eq!(t.c_cc, expected_cc);
        assert_eq!(Winsize::default(), Winsize { rows: 24, cols: 80, xpixel: 0, ypixel: 0 });
    }

    #[test]
    fn termios_and_winsize_bytes_round_trip_in_the_kernel_layout() {
        let mut t = Termios { c_line: 7, ..Termios::default() };
        t.c_cc[VEOL2] = 0xee;
        let bytes = t.to_bytes();
        assert_eq!(&bytes[..4], &[0x00, 0x05, 0, 0]);
        assert_eq!(&bytes[12..16], &[0x3b, 0x8a, 0, 0]);
        assert_eq!((bytes[16], bytes[17], bytes[17 + VEOL2]), (7, 3, 0xee));
        assert_eq!(Termios::from_bytes(&bytes), Some(t));
        let mut termios2 = bytes.to_vec();
        termios2.extend_from_slice(&[0xff; 8]);
        assert_eq!(Termios::from_bytes(&termios2), Some(t));
        assert_eq!(Termios::from_bytes(&bytes[..35]), None);

        let w = Winsize { rows: 50, cols: 0x1234, xpixel: 1, ypixel: 2 };
        assert_eq!(w.to_bytes(), [50, 0, 0x34, 0x12, 1, 0, 2, 0]);
        assert_eq!(Winsize::from_bytes(&w.to_bytes()), Some(w));
        assert_eq!(Winsize::from_bytes(&[0; 7]), None);
    }

    #[test]
    fn a_typed_line_is_echoed_and_read_only_once_complete() {
        let mut ld = LineDiscipline::new();
        let partial = type_keys(&mut ld, b"ls");
        assert!(!partial.wake_readers && !ld.readable());
        assert_eq!((ld.read(&mut [0; 16]), ld.available()), (Read::Empty, 0));
        let enter = type_keys(&mut ld, b"\r");
        assert_eq!([partial.echo, enter.echo].concat(), b"ls\r\n");
        assert!(enter.wake_readers && ld.readable());
        assert_eq!(ld.available(), 3);
        assert_eq!(read_bytes(&mut ld, 16), Ok(b"ls\n".to_vec()));
        assert_eq!(ld.read(&mut [0; 16]), Read::Empty);
        type_keys(&mut ld, b"ab\rcde");
        assert_eq!(ld.available(), 3, "FIONREAD counts completed lines only");
    }

    #[test]
    fn a_read_returns_one_line_and_long_lines_in_pieces() {
        let mut ld = LineDiscipline::new();
        type_keys(&mut ld, b"hello\rab\r");
        assert_eq!(read_bytes(&mut ld, 4), Ok(b"hell".to_vec()));
        assert_eq!(read_bytes(&mut ld, 100), Ok(b"o\n".to_vec()));
        assert_eq!(read_bytes(&mut ld, 100), Ok(b"ab\n".to_vec()));
    }

    #[test]
    fn erase_takes_back_one_character_and_two_columns_for_a_control_character() {
        let mut ld = LineDiscipline::new();
        assert_eq!(type_keys(&mut ld, b"lx\x7fs\r").echo, b"lx\x08 \x08s\r\n");
        assert_eq!(read_bytes(&mut ld, 16), Ok(b"ls\n".to_vec()));
        assert_eq!(type_keys(&mut ld, b"a\x01\x7f").echo, b"a^A\x08 \x08\x08 \x08");
        assert_eq!(type_keys(&mut ld, b"\x7f\x7f").echo, b"\x08 \x08", "nothing left to erase: no echo");

        let mut no_echoe = with_termios(|t| t.c_lflag &= !ECHOE);
        assert_eq!(type_keys(&mut no_echoe, b"ab\x7f\r").echo, b"ab^?\r\n");
        assert_eq!(read_bytes(&mut no_echoe, 16), Ok(b"a\n".to_vec()));
    }

    #[test]
    fn erasing_a_tab_backs_up_to_the_previous_tab_stop() {
        let mut ld = LineDiscipline::new();
        assert_eq!(type_keys(&mut ld, b"ab\t\x7f").echo, b"ab\t\x08\x08\x08\x08\x08\x08");
        assert_eq!(type_keys(&mut ld, b"\t\x01\t\x7f").echo, b"\t^A\t\x08\x08\x08\x08\x08\x08");
    }

    #[test]
    fn kill_and_word_erase_edit_the_line() {
        let mut ld = LineDiscipline::new();
        assert_eq!(type_keys(&mut ld, b"abc\x15").echo, b"abc\x08 \x08\x08 \x08\x08 \x08");
        type_keys(&mut ld, b"d\r");
        assert_eq!(read_bytes(&mut ld, 16), Ok(b"d\n".to_vec()));

        let mut no_echoke = with_termios(|t| t.c_lflag &= !ECHOKE);
        assert_eq!(type_keys(&mut no_echoke, b"abc\x15x\r").echo, b"abc^U\r\nx\r\n");
        assert_eq!(read_bytes(&mut no_echoke, 16), Ok(b"x\n".to_vec()));

        // Word erase takes trailing non-word bytes, then the word before them.
        let erased_five = [&b"foo bar-baz  "[..], &b"\x08 \x08".repeat(5)].concat();
        assert_eq!(type_keys(&mut ld, b"foo bar-baz  \x17").echo, erased_five);
        type_keys(&mut ld, b"\x17\r");
        assert_eq!(read_bytes(&mut ld, 16), Ok(b"foo \n".to_vec()));
    }

    #[test]
    fn utf8_erase_takes_a_whole_character() {
        let mut ld = with_termios(|t| t.c_iflag |= IUTF8);
        assert_eq!(type_keys(&mut ld, "aé\x7f\r".as_bytes()).echo, "aé\x08 \x08\r\n".as_bytes());
        assert_eq!(read_bytes(&mut ld, 16), Ok(b"a\n".to_vec()));
    }

    #[test]
    fn literal_next_stores_a_special_character() {
        let mut ld = LineDiscipline::new();
        let typed = type_keys(&mut ld, b"\x16\x03\x16\x7f\r");
        assert_eq!(typed.signal, None);
        assert_eq!(typed.echo, b"^\x08^C^\x08^?\r\n");
        assert_eq!(read_bytes(&mut ld, 16), Ok(b"\x03\x7f\n".to_vec()));
        assert_eq!(type_keys(&mut ld, b"ab\x12").echo, b"ab^R\r\nab", "VREPRINT");
    }

    #[test]
    fn eof_at_line_start_is_end_of_file_and_mid_line_completes_the_line() {
        let mut ld = LineDiscipline::new();
        let eof = type_keys(&mut ld, b"\x04");
        assert!(eof.wake_readers && ld.readable() && eof.echo.is_empty());
        assert_eq!(ld.available(), 0, "FIONREAD does not count the end of file");
        assert_eq!(ld.read(&mut [0; 8]), Read::EndOfFile);
        assert_eq!(ld.read(&mut [0; 8]), Read::Empty);

        let mid = type_keys(&mut ld, b"abc\x04");
        assert!(mid.wake_readers);
        assert_eq!(mid.echo, b"abc");
        assert_eq!(read_bytes(&mut ld, 2), Ok(b"ab".to_vec()));
        assert_eq!(read_bytes(&mut ld, 8), Ok(b"c".to_vec()));
        assert_eq!(ld.read(&mut [0; 8]), Read::Empty);
    }

    #[test]
    fn interrupt_signals_flushes_and_echoes() {
        let mut ld = LineDiscipline::new();
        type_keys(&mut ld, b"one\rtwo");
        let interrupt = ld.input(0x03);
        assert_eq!((interrupt.signal, interrupt.echo.as_slice()), (Some(SIGINT), &b"^C"[..]));
        assert!(!ld.readable());
        type_keys(&mut ld, b"x\r");
        assert_eq!(read_bytes(&mut ld, 16), Ok(b"x\n".to_vec()));
        assert_eq!(ld.input(0x1c).signal, Some(SIGQUIT));
        assert_eq!(ld.input(0x1a).signal, Some(SIGTSTP));

        let mut no_flush = with_termios(|t| t.c_lflag |= NOFLSH);
        type_keys(&mut no_flush, b"one\rtw");
        assert_eq!(no_flush.input(0x03).signal, Some(SIGINT));
        type_keys(&mut no_flush, b"o\r");
        assert_eq!(read_bytes(&mut no_flush, 16), Ok(b"one\n".to_vec()));
        assert_eq!(read_bytes(&mut no_flush, 16), Ok(b"two\n".to_vec()));
    }

    #[test]
    fn raw_mode_delivers_each_byte_with_no_signal_or_echo() {
        let mut ld = raw();
        for &byte in b"a\x03\r" {
            let input = ld.input(byte);
            assert_eq!((input.signal, input.echo.len(), input.wake_readers), (None, 0, true));
        }
        assert_eq!(read_bytes(&mut ld, 1), Ok(b"a".to_vec()));
        assert_eq!(read_bytes(&mut ld, 1), Ok(b"\x03".to_vec()));
        assert_eq!(read_bytes(&mut ld, 1), Ok(b"\n".to_vec()), "ICRNL still maps");
        assert_eq!(ld.read(&mut [0; 1]), Read::Empty);
    }

    #[test]
    fn vmin_decides_when_a_read_completes() {
        let mut ld = with_termios(|t| {
            t.c_lflag &= !(ICANON | ECHO);
            t.c_cc[VMIN] = 3;
        });
        type_keys(&mut ld, b"ab");
        assert!(!ld.readable());
        assert_eq!(ld.read(&mut [0; 8]), Read::Empty);
        assert_eq!(read_bytes(&mut ld, 2), Ok(b"ab".to_vec()), "min(VMIN, buffer size) are there");
        type_keys(&mut ld, b"cd");
        assert_eq!(ld.read_partial(&mut [0; 8]), Read::Data(2), "VTIME expired: what is there");
        assert_eq!(ld.read_partial(&mut [0; 8]), Read::Empty);
        type_keys(&mut ld, b"efg");
        assert!(ld.readable());
        assert_eq!(read_bytes(&mut ld, 8), Ok(b"efg".to_vec()));

        let mut polling = with_termios(|t| {
            t.c_lflag &= !ICANON;
            t.c_cc[VMIN] = 0;
        });
        assert_eq!((polling.read(&mut [0; 8]), polling.readable()), (Read::Data(0), false));
        type_keys(&mut polling, b"z");
        assert_eq!(read_bytes(&mut polling, 8), Ok(b"z".to_vec()));
    }

    #[test]
    fn mode_switches_keep_what_was_typed() {
        let mut ld = LineDiscipline::new();
        type_keys(&mut ld, b"done\rpar\x04");
        type_keys(&mut ld, b"\x04tial");
        ld.set_termios(raw_termios(), false);
        assert_eq!((ld.available(), ld.buffered()), (12, 12), "the end of file is dropped");
        assert_eq!(read_bytes(&mut ld, 100), Ok(b"done\npartial".to_vec()));

        type_keys(&mut ld, b"xy");
        ld.set_termios(Termios::default(), false);
        assert!(ld.readable());
        assert_eq!(read_bytes(&mut ld, 100), Ok(b"xy".to_vec()));

        type_keys(&mut ld, b"gone\rtoo");
        ld.set_termios(Termios::default(), true);
        assert_eq!((ld.readable(), ld.available()), (false, 0));
        type_keys(&mut ld, b"pending\r");
        ld.flush_input();
        assert!(!ld.readable());
    }

    #[test]
    fn a_flood_is_bounded_and_a_newline_still_completes_the_line() {
        let mut ld = LineDiscipline::new();
        let flood = type_keys(&mut ld, &[b'a'; 100_000]);
        assert!(ld.buffered() <= INPUT_LIMIT);
        assert_eq!(flood.echo.iter().filter(|&&b| b == 0x07).count(), 100_000 - (INPUT_LIMIT - 1));
        assert!(type_keys(&mut ld, b"\r").wake_readers);
        let mut line = Vec::new();
        while let Ok(piece) = read_bytes(&mut ld, 1000) {
            line.extend(piece);
        }
        assert_eq!(line.len(), INPUT_LIMIT);
        assert_eq!(line.last(), Some(&b'\n'));

        // Full of unread lines: a further line is dropped, with a bell, until readers make room.
        for _ in 0..3000 {
            type_keys(&mut ld, b"x\r");
        }
        assert!(ld.buffered() <= INPUT_LIMIT);
        assert_eq!(type_keys(&mut ld, b"\r").echo, b"\x07");
        assert_eq!(read_bytes(&mut ld, 8), Ok(b"x\n".to_vec()));
        assert!(type_keys(&mut ld, b"\r").wake_readers);

        let mut raw = raw();
        type_keys(&mut raw, &[b'r'; 100_000]);
        assert_eq!(raw.available(), INPUT_LIMIT);
    }

    #[test]
    fn input_flags_map_strip_and_ignore() {
        let mut ld = raw();
        type_keys(&mut ld, &[0xe1]);
        let mut termios = raw_termios();
        termios.c_iflag |= ISTRIP | INLCR;
        ld.set_termios(termios, false);
        type_keys(&mut ld, &[0xe1, b'\n']);
        assert_eq!(read_bytes(&mut ld, 8), Ok(vec![0xe1, b'a', b'\r']));
        termios.c_iflag = IGNCR | ICRNL;
        ld.set_termios(termios, false);
        type_keys(&mut ld, b"\rk");
        assert_eq!(read_bytes(&mut ld, 8), Ok(b"k".to_vec()));
    }

    #[test]
    fn eol_characters_and_echonl_complete_lines() {
        let mut ld = with_termios(|t| {
            t.c_cc[VEOL] = b';';
            t.c_cc[VEOL2] = b'|';
            t.c_lflag = (t.c_lflag & !ECHO) | ECHONL;
        });
        assert_eq!(type_keys(&mut ld, b"a;b|c\r").echo, b"\r\n");
        assert_eq!(read_bytes(&mut ld, 8), Ok(b"a;".to_vec()));
        assert_eq!(read_bytes(&mut ld, 8), Ok(b"b|".to_vec()));
        assert_eq!(read_bytes(&mut ld, 8), Ok(b"c\n".to_vec()));
        let mut termios = *ld.termios();
        termios.c_lflag &= !IEXTEN;
        ld.set_termios(termios, false);
        type_keys(&mut ld, b"d|e\r");
        assert_eq!(read_bytes(&mut ld, 8), Ok(b"d|e\n".to_vec()), "VEOL2 needs IEXTEN");
    }

    #[test]
    fn ixon_stops_and_starts_output_without_storing() {
        let mut ld = LineDiscipline::new();
        assert_eq!(ld.input(0x13).output_flow, Some(OutputFlow::Stop));
        assert!(ld.output_stopped());
        assert_eq!(ld.input(b'a').output_flow, None, "no IXANY");
        assert_eq!(ld.input(0x11).output_flow, Some(OutputFlow::Start));
        type_keys(&mut ld, b"\r");
        assert_eq!(read_bytes(&mut ld, 8), Ok(b"a\n".to_vec()));
    }

    #[test]
    fn output_processing_follows_opost() {
        let mut ld = LineDiscipline::new();
        assert_eq!(ld.output(b"a\nb\r"), b"a\r\nb\r");
        let mut termios = Termios::default();
        termios.c_oflag |= OCRNL;
        ld.set_termios(termios, false);
        assert_eq!(ld.output(b"\r\n"), b"\n\r\n");
        termios.c_oflag &= !OPOST;
        ld.set_termios(termios, false);
        assert_eq!(ld.output(b"a\nb\r"), b"a\nb\r");
    }
}
