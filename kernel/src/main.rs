//! The bootable questv kernel image. Everything lives in the library; this file holds the entry point the
//! boot assembly calls and the panic handler. Built only with the `image` feature (see docs/build.md).
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

use questv_arch::{cpu, percpu};
use questv_kernel::{console, smp};

#[no_mangle]
extern "C" fn questv_bsp_entry(mbi_phys: u64) -> ! {
    // The test layer sits on top of the product: installed here, named by no product module.
    questv_kernel::ktest::install();
    questv_kernel::boot::bsp_main(mbi_phys)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    cpu::disable_interrupts();
    // A sandbox stops only itself: it tells its monitor (below) instead of NMI-ing the other cores.
    let sandbox = questv_kernel::sandbox::id().is_some();
    if !sandbox {
        smp::halt_others();
    }
    let loc = info.location();
    console::print_emergency(format_args!(
        "KERNEL PANIC on cpu {} at {}:{}: {}\n",
        percpu::cpu_index(),
        loc.map_or("?", |l| l.file()),
        loc.map_or(0, |l| l.line()),
        info.message()
    ));
    if sandbox {
        questv_kernel::sandbox::fault();
    }
    cpu::halt_forever()
}
