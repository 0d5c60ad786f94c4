//! Expected kernel-mode exceptions: an attack arms one, the trap path resumes at its fixup address.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// An exception the attack test expects in kernel mode: its vector, and the resume address the attacking
/// instruction sequence stores just before it runs (0: nothing expected).
static EXPECTED_VECTOR: AtomicU64 = AtomicU64::new(u64::MAX);
pub(crate) static EXPECTED_FIXUP: AtomicU64 = AtomicU64::new(0);
static EXPECTED_SEEN: AtomicBool = AtomicBool::new(false);

/// Kernel-mode exception hook for the attack test: an expected exception resumes at its fixup address.
pub(crate) fn kernel_fixup(frame: &mut questv_arch::trap::TrapFrame) -> bool {
    let fix = EXPECTED_FIXUP.load(Ordering::SeqCst);
    if fix != 0 && frame.vector == EXPECTED_VECTOR.load(Ordering::SeqCst) {
        EXPECTED_FIXUP.store(0, Ordering::SeqCst);
        frame.rip = fix;
        EXPECTED_SEEN.store(true, Ordering::SeqCst);
        return true;
    }
    false
}

pub(crate) fn expect(vector: u64) {
    EXPECTED_SEEN.store(false, Ordering::SeqCst);
    EXPECTED_VECTOR.store(vector, Ordering::SeqCst);
}

pub(crate) fn raised() -> bool {
    EXPECTED_FIXUP.store(0, Ordering::SeqCst);
    EXPECTED_SEEN.load(Ordering::SeqCst)
}
