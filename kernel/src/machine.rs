//! Ending a run: report the status and stop the machine (or, in a VT sandbox, hand the status to the monitor).
//! Called by whoever ends the run — init's exit (proc), the boot command, the monitor when every sandbox is done.

use crate::kprintln;
use questv_arch::cpu;

/// Stop the machine (QEMU's isa-debug-exit device if present, halt otherwise) with `status`, printing
/// `QUESTV DONE` if `report` (init prints it itself when it exits normally).
pub fn shutdown(status: i32, report: bool) -> ! {
    if let Some(id) = crate::sandbox::id() {
        if report {
            kprintln!("RESULT sandbox_status sandbox={} status={}", id, status);
        }
        crate::sandbox::done(status);
    }
    if report {
        kprintln!("QUESTV DONE status={}", status);
    }
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit device when the runner adds it; elsewhere the write is ignored.
    unsafe { cpu::outl(0xf4, if status == 0 { 0x10 } else { 0x11 }) };
    crate::smp::halt_others();
    cpu::halt_forever()
}

/// Report the end of the run and stop the machine.
pub fn finish(status: i32) -> ! {
    shutdown(status, true)
}
