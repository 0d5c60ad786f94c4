//! Serial console (COM1) shared by all CPUs, the `log` backend, and the machine-readable `RESULT` lines.

use crate::sync::IrqSpinlock;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};
use questv_arch::percpu;
use questv_drivers::serial::{SerialPort, COM1};

// SAFETY: COM1 is driven only through this lock.
static CONSOLE: IrqSpinlock<SerialPort> = IrqSpinlock::new(unsafe { SerialPort::new(COM1) });
static READY: AtomicBool = AtomicBool::new(false);

pub fn init(level: log::LevelFilter) {
    // A VT sandbox shares the UART the monitor already set up: re-initialising it (FIFO reset) would drop
    // characters another sandbox is sending.
    if SHARED_LOCK.load(Ordering::SeqCst) == 0 {
        CONSOLE.lock().init();
    }
    READY.store(true, Ordering::SeqCst);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// VT build: address of a word in the shared region that serialises COM1 between the monitor and every
/// sandbox (each has its own CONSOLE lock, but there is one UART).
static SHARED_LOCK: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

pub fn set_shared_lock(addr: u64) {
    SHARED_LOCK.store(addr, Ordering::SeqCst);
}

/// Run `f` holding the cross-sandbox console lock, if there is one. The wait is bounded: a sandbox stopped
/// while holding the lock may garble output, never hang the others.
fn with_shared_lock<R>(f: impl FnOnce() -> R) -> R {
    let addr = SHARED_LOCK.load(Ordering::Relaxed);
    if addr == 0 {
        return f();
    }
    // SAFETY: the shared region is mapped (identity in the monitor, at SHARED_GPA in sandboxes) for the whole
    // run and its first word is reserved for this lock.
    let lock = unsafe { &*(addr as *const core::sync::atomic::AtomicU32) };
    let mut got = false;
    for _ in 0..50_000_000u64 {
        if lock.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            got = true;
            break;
        }
        core::hint::spin_loop();
    }
    let r = f();
    if got {
        lock.store(0, Ordering::Release);
    }
    r
}

/// Print formatted text as one unit (lines from different CPUs never interleave).
pub fn print(args: core::fmt::Arguments) {
    let mut c = CONSOLE.lock();
    with_shared_lock(|| {
        let _ = c.write_fmt(args);
    });
}

/// Raw bytes from a user program (one write call stays together).
pub fn write_bytes(data: &[u8]) {
    let mut c = CONSOLE.lock();
    with_shared_lock(|| {
        for &b in data {
            if b == b'\n' {
                c.send(b'\r');
            }
            c.send(b);
        }
    });
}

/// A byte typed on the console, if any.
pub fn try_read() -> Option<u8> {
    CONSOLE.lock().try_receive()
}

/// Panic-path printing: take the console if it is free within a short wait, otherwise write anyway (the
/// holder may be the context that panicked).
pub fn print_emergency(args: core::fmt::Arguments) {
    for _ in 0..1_000_000 {
        if let Some(mut c) = CONSOLE.try_lock() {
            let _ = c.write_fmt(args);
            return;
        }
        core::hint::spin_loop();
    }
    // SAFETY: last resort on a dying machine: a second writer can only garble output, not memory.
    let mut port = unsafe { SerialPort::new(COM1) };
    let _ = port.write_fmt(args);
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
