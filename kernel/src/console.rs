//! Serial console (COM1) shared by all CPUs (in a VT sandbox: the monitor's, through a hypercall), the `log`
//! backend, and the machine-readable `RESULT` lines.

use crate::sync::IrqSpinlock;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};
use questv_arch::percpu;
use questv_drivers::serial::{SerialPort, COM1};

// SAFETY: COM1 is driven only through this lock.
static CONSOLE: IrqSpinlock<SerialPort> = IrqSpinlock::new(unsafe { SerialPort::new(COM1) });
static READY: AtomicBool = AtomicBool::new(false);

pub fn init(level: log::LevelFilter) {
    // A VT sandbox has no UART of its own: it prints through the monitor.
    if !THROUGH_MONITOR.load(Ordering::SeqCst) {
        CONSOLE.lock().init();
    }
    READY.store(true, Ordering::SeqCst);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// VT sandboxes: COM1 belongs to the monitor (its port is not granted), so output goes through the
/// CONSOLE_WRITE hypercall and the monitor prints it with this sandbox's `[sN]` prefix.
static THROUGH_MONITOR: AtomicBool = AtomicBool::new(false);

pub fn print_through_monitor() {
    THROUGH_MONITOR.store(true, Ordering::SeqCst);
}

/// Where one print call's bytes go: straight to the UART, or batched into hypercalls (one per buffer, and
/// the rest at the end of the call).
struct Out<'a> {
    port: &'a mut SerialPort,
    monitor: bool,
    buf: [u8; 256],
    len: usize,
}

impl<'a> Out<'a> {
    fn new(port: &'a mut SerialPort) -> Out<'a> {
        Out { port, monitor: THROUGH_MONITOR.load(Ordering::Relaxed), buf: [0; 256], len: 0 }
    }
    fn bytes(&mut self, data: &[u8]) {
        for &b in data {
            if self.monitor {
                if self.len == self.buf.len() {
                    self.flush();
                }
                self.buf[self.len] = b;
                self.len += 1;
            } else {
                if b == b'\n' {
                    self.port.send(b'\r');
                }
                self.port.send(b);
            }
        }
    }
    fn flush(&mut self) {
        if self.len > 0 {
            crate::sandbox::console_write(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl core::fmt::Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Asked before each printed line (set once, by the VT monitor when the console takes input): whether a line
/// is open on the terminal (a sandbox's prompt) that a newline must end first. Called under the console's lock.
static LINE_BREAK_HOOK: spin::Once<fn() -> bool> = spin::Once::new();

pub fn set_line_break_hook(f: fn() -> bool) {
    LINE_BREAK_HOOK.call_once(|| f);
}

/// Print formatted text as one unit (lines from different CPUs never interleave).
pub fn print(args: core::fmt::Arguments) {
    let mut c = CONSOLE.lock();
    let mut out = Out::new(&mut c);
    if LINE_BREAK_HOOK.get().is_some_and(|h| h()) {
        out.bytes(b"\n");
    }
    let _ = out.write_fmt(args);
}

/// Raw bytes from a user program (one write call stays together).
pub fn write_bytes(data: &[u8]) {
    let mut c = CONSOLE.lock();
    Out::new(&mut c).bytes(data);
}

/// Bytes made while the console is held (`make` may take locks that the line-break hook takes: the console's
/// lock always comes first), written as they are.
pub fn write_rendered(make: impl FnOnce() -> alloc::vec::Vec<u8>) {
    let mut c = CONSOLE.lock();
    let data = make();
    Out::new(&mut c).bytes(&data);
}

/// Console input a sandbox has taken from the monitor and the line discipline has not yet.
struct MonitorInput {
    buf: [u8; 256],
    at: usize,
    len: usize,
}

static MONITOR_INPUT: IrqSpinlock<MonitorInput> = IrqSpinlock::new(MonitorInput { buf: [0; 256], at: 0, len: 0 });
/// The monitor said input waits (its console vector arrived): the next read asks for it (one exit per burst
/// of typing, none while nobody types).
static INPUT_SIGNALLED: AtomicBool = AtomicBool::new(false);

/// A sandbox's console vector: input waits in the monitor.
pub fn input_signalled() {
    INPUT_SIGNALLED.store(true, Ordering::Release);
}

/// A byte typed on the console, if any. In a sandbox, what the monitor routed to it.
pub fn try_read() -> Option<u8> {
    if THROUGH_MONITOR.load(Ordering::Relaxed) {
        let mut input = MONITOR_INPUT.lock();
        if input.at == input.len && INPUT_SIGNALLED.swap(false, Ordering::AcqRel) {
            let mut buf = [0u8; 256];
            let n = crate::sandbox::console_read(&mut buf);
            input.buf = buf;
            input.at = 0;
            input.len = n;
            if n == buf.len() {
                // More may wait: ask again once these are taken.
                INPUT_SIGNALLED.store(true, Ordering::Release);
            }
        }
        if input.at == input.len {
            return None;
        }
        let b = input.buf[input.at];
        input.at += 1;
        return Some(b);
    }
    CONSOLE.lock().try_receive()
}

/// The monitor's console input (VT, `console=input`): the UART interrupts when bytes arrive.
pub fn enable_receive_interrupt() {
    CONSOLE.lock().enable_receive_interrupt();
}

/// Panic-path printing: take the console if it is free within a short wait, otherwise write anyway (the
/// holder may be the context that panicked).
pub fn print_emergency(args: core::fmt::Arguments) {
    for _ in 0..1_000_000 {
        if let Some(mut c) = CONSOLE.try_lock() {
            let _ = Out::new(&mut c).write_fmt(args);
            return;
        }
        core::hint::spin_loop();
    }
    // SAFETY: last resort on a dying machine: a second writer can only garble output, not memory. (In a
    // sandbox the port is only the hypercall path's placeholder: Out never touches it.)
    let mut port = unsafe { SerialPort::new(COM1) };
    let _ = Out::new(&mut port).write_fmt(args);
}

#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! kprintln {
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `result!("boot", "cpus_online={} mode={}", n, m)` prints `RESULT boot cpus_online=.. mode=..`.
#[macro_export]
macro_rules! result {
    ($name:expr, $($arg:tt)*) => {
        $crate::console::print(format_args!("RESULT {} {}\n", $name, format_args!($($arg)*)))
    };
}

struct Logger;
static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) && READY.load(Ordering::Relaxed) {
            print(format_args!("[cpu{} {:5}] {}\n", percpu::cpu_index(), record.level(), record.args()));
        }
    }
    fn flush(&self) {}
}
