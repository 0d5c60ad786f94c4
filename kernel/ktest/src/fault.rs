//! `ktest fault` (an exception on purpose, which the kernel must report and halt on) and `ktest acpidump`.

use questv_kernel::{kprintln, sched, smp};

/// Trigger an exception on purpose. Never returns normally: the exception handler dumps and panics.
pub(crate) fn fault(kind: &str) -> i32 {
    kprintln!("ktest: triggering {} fault", kind);
    match kind {
        // SAFETY (all arms): deliberately faulting accesses; the kernel's exception path reports and halts.
        "page" => unsafe { core::ptr::write_volatile(0x0000_7FFF_DEAD_0000 as *mut u64, 1) },
        "null" => unsafe { core::ptr::write_volatile(core::ptr::null_mut::<u64>().wrapping_add(2), 1) },
        "ud" => unsafe { core::arch::asm!("ud2") },
        // SAFETY: deliberate non-canonical access (#GP).
        "gp" => unsafe { core::ptr::read_volatile(0x8000_0000_0000_0000 as *const u64); },
        // SAFETY: deliberate division by zero (#DE); registers declared as clobbered.
        "de" => unsafe { core::arch::asm!("xor edx, edx", "xor eax, eax", "div ecx", in("ecx") 0, out("eax") _, out("edx") _) },
        "ap-page" => {
            if smp::cpus_online() < 2 {
                kprintln!("ktest fault ap-page needs at least 2 CPUs");
                return 2;
            }
            sched::spawn_on(1, "faulter", fault_on_ap, 0);
            loop {
                sched::yield_now();
            }
        }
        _ => {
            kprintln!("unknown fault kind {:?}", kind);
            return 2;
        }
    }
    kprintln!("ktest: fault {} did not trap", kind);
    1
}

extern "C" fn fault_on_ap(_: u64) -> ! {
    // SAFETY: deliberate fault (see `fault`).
    unsafe { core::ptr::write_volatile(0x0000_7FFF_DEAD_0000 as *mut u64, 1) };
    sched::exit()
}

/// Print the root ACPI table and the MADT as hex (captured for the host tests in arch/tests/data).
pub(crate) fn acpidump() -> i32 {
    kprintln!("ktest acpidump: see RESULT acpi lines");
    questv_kernel::acpi_handler::dump();
    0
}
