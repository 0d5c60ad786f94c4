//! Spinlocks that are safe to take from interrupt handlers: the lock disables interrupts on the local CPU
//! while held (restoring the previous state on release), so a handler can never spin on a lock its own CPU's
//! interrupted code holds, and a thread holding a lock is never preempted.

use core::ops::{Deref, DerefMut};
use questv_arch::cpu;

pub struct IrqSpinlock<T> {
    inner: spin::Mutex<T>,
}

pub struct IrqGuard<'a, T> {
    guard: Option<spin::MutexGuard<'a, T>>,
    irq_was_enabled: bool,
}

impl<T> IrqSpinlock<T> {
    pub const fn new(value: T) -> Self {
        IrqSpinlock { inner: spin::Mutex::new(value) }
    }

    pub fn lock(&self) -> IrqGuard<'_, T> {
        let irq_was_enabled = cpu::interrupts_enabled();
        cpu::disable_interrupts();
        let guard = loop {
            if let Some(g) = self.inner.try_lock() {
                break g;
            }
            // The holder may be waiting for this CPU to flush its TLB (a shootdown from under a lock): do it
            // here, since the IPI cannot come in while interrupts are off.
            crate::smp::service_tlb_requests();
            core::hint::spin_loop();
        };
        IrqGuard { guard: Some(guard), irq_was_enabled }
    }

    /// Take the lock if it is free (panic path: never wait on a lock a dead context may hold).
    pub fn try_lock(&self) -> Option<IrqGuard<'_, T>> {
        let irq_was_enabled = cpu::interrupts_enabled();
        cpu::disable_interrupts();
        match self.inner.try_lock() {
            Some(g) => Some(IrqGuard { guard: Some(g), irq_was_enabled }),
            None => {
                if irq_was_enabled {
                    // SAFETY: interrupts were enabled before, so the IDT is set up.
                    unsafe { cpu::enable_interrupts() };
                }
                None
            }
        }
    }
}

impl<T> Deref for IrqGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_ref().unwrap()
    }
}

impl<T> DerefMut for IrqGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().unwrap()
    }
}

impl<T> Drop for IrqGuard<'_, T> {
    fn drop(&mut self) {
        drop(self.guard.take());
        if self.irq_was_enabled {
            // SAFETY: interrupts were enabled when the lock was taken, so the IDT is set up.
            unsafe { cpu::enable_interrupts() };
        }
    }
}
