//! 16550 UART, polled. Written here rather than taken from `uart_16550`: we need a non-blocking receive for
//! the console (`read` in the userland issue) and transmit that never blocks forever on a missing UART, and the
//! whole driver is a dozen register accesses.

use questv_arch::cpu::{inb, outb};

pub const COM1: u16 = 0x3F8;

const DATA: u16 = 0;
const INT_ENABLE: u16 = 1;
const FIFO_CTRL: u16 = 2;
const LINE_CTRL: u16 = 3;
const MODEM_CTRL: u16 = 4;
const LINE_STATUS: u16 = 5;

const LSR_DATA_READY: u8 = 0x01;
const LSR_TX_EMPTY: u8 = 0x20;

pub struct SerialPort {
    base: u16,
}

impl SerialPort {
    /// # Safety
    /// `base` must be the I/O base of a 16550-compatible UART that nothing else drives.
    pub const unsafe fn new(base: u16) -> SerialPort {
        SerialPort { base }
    }

    /// 115200 baud, 8N1, FIFOs on, interrupts off.
    pub fn init(&mut self) {
        // SAFETY: the constructor's contract gives us this UART's ports.
        unsafe {
            outb(self.base + INT_ENABLE, 0x00);
            outb(self.base + LINE_CTRL, 0x80); // DLAB on
            outb(self.base + DATA, 0x01); // divisor 1 = 115200 baud
            outb(self.base + INT_ENABLE, 0x00);
            outb(self.base + LINE_CTRL, 0x03); // 8N1, DLAB off
            outb(self.base + FIFO_CTRL, 0xC7); // FIFO on, cleared, 14-byte threshold
            outb(self.base + MODEM_CTRL, 0x0B); // DTR, RTS, OUT2
        }
    }

    /// Raise the UART's interrupt (its IRQ line, gated by OUT2) whenever received bytes wait, and do so from
    /// the first byte (FIFO trigger level 1): console input that is interrupt-driven rather than polled.
    pub fn enable_receive_interrupt(&mut self) {
        // SAFETY: the constructor's contract gives us this UART's ports.
        unsafe {
            outb(self.base + FIFO_CTRL, 0x07); // FIFO on, cleared, 1-byte threshold
            outb(self.base + INT_ENABLE, 0x01); // received data available
        }
    }

    pub fn send(&mut self, byte: u8) {
        // Bounded wait: a missing or wedged UART must not hang the kernel.
        for _ in 0..100_000 {
            // SAFETY: reading the line status register has no side effects.
            if unsafe { inb(self.base + LINE_STATUS) } & LSR_TX_EMPTY != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        // SAFETY: we own the UART; writing DATA transmits a byte.
        unsafe { outb(self.base + DATA, byte) }
    }

    /// A received byte, if one is waiting.
    pub fn try_receive(&mut self) -> Option<u8> {
        // SAFETY: reading LSR has no side effects; reading DATA consumes the byte we were told is there.
        unsafe {
            if inb(self.base + LINE_STATUS) & LSR_DATA_READY != 0 {
                Some(inb(self.base + DATA))
            } else {
                None
            }
        }
    }

    pub fn write_str(&mut self, s: &str) {
        for b in s.bytes() {
            if b == b'\n' {
                self.send(b'\r');
            }
            self.send(b);
        }
    }
}

impl core::fmt::Write for SerialPort {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        SerialPort::write_str(self, s);
        Ok(())
    }
}
