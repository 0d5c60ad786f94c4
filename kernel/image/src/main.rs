//! The bootable questv image: the entry point the boot assembly calls, and the panic handler. It installs the
//! test layer, brings the kernel up, and picks what runs the machine — the SMP kernel, or (feature `vt`) the
//! monitor, which boots this same image as every sandbox's kernel. See docs/build.md.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

use questv_arch::{cpu, percpu};
use questv_kernel::{boot, console, smp};

const BUILD: &str = if cfg!(feature = "vt") { "vt" } else { "smp" };

#[no_mangle]
extern "C" fn questv_bsp_entry(mbi_phys: u64) -> ! {
    // The test layer sits on top of the product: installed here, named by no product module.
    questv_ktest::install();
    questv_kernel::irq::install();
    let booted = boot::bring_up(mbi_phys, BUILD);
    let Some(machine) = booted.machine else {
        // A sandbox kernel: its monitor owns the machine.
        boot::run_program(&booted.opts)
    };
    #[cfg(feature = "vt")]
    {
        let opts = questv_vmx::monitor::MonitorOptions { cmdline: &booted.opts, topology: &machine.topology, firmware: machine.firmware };
        questv_kernel::machine::finish(questv_vmx::monitor::run_monitor(&opts))
    }
    #[cfg(not(feature = "vt"))]
    boot::run_smp(&booted.opts, &machine)
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
