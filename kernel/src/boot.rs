//! BSP start-up: from the multiboot2 hand-off to a running kernel. [`bring_up`] does what every build needs
//! (memory, descriptor tables, interrupt controllers, the other CPUs) and returns to the image's entry, which
//! picks what runs the machine: [`run_smp`] here, or the VT image's monitor. A sandbox kernel is brought up
//! as one CPU under its monitor and then [`run_program`]s its command.

use crate::cmdline::{self, LogLevel, Options};
use crate::mm::kmem;
use crate::mm::memmap::{Area, Region};
use crate::{kprintln, result, sched, smp};
use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};
use questv_arch::acpi_madt::{self, RootTable, Topology};
use crate::smp::{load_descriptor_tables, APIC_IDS, CPU_COUNT, ONLINE, TICK_HZ, TIMER_COUNT, VECTOR_TIMER};
use alloc::boxed::Box;
use core::sync::atomic::Ordering;
use questv_arch::paging::{phys_to_virt, virt_to_phys};
use questv_arch::percpu::MAX_CPUS;
use questv_arch::{boot, cpu, ioapic::IoApic, lapic, percpu, trap};

/// The bare machine as [`bring_up`] left it: every CPU online, interrupt controllers masked.
pub struct Machine {
    pub topology: Topology,
    /// `bios` or `uefi`: what the boot loader handed over.
    pub firmware: &'static str,
    pub mem_mib: u64,
    pub trampoline: Option<u64>,
}

/// What [`bring_up`] found.
pub struct Booted {
    pub opts: Options<'static>,
    /// `None` for a sandbox kernel (its monitor owns the machine).
    pub machine: Option<Machine>,
}

/// Reached from the image's entry on the BSP with the multiboot2 information address; `build` names the
/// image (`smp` or `vt`) in the boot lines.
pub fn bring_up(mbi_phys: u64, build: &'static str) -> Booted {
    // SAFETY: first instruction sequence on the BSP; index 0 is the BSP's.
    unsafe { percpu::install(0, cpu::initial_apic_id()) };
    // SAFETY: GRUB passed the address of a valid multiboot2 information structure (checked magic in asm);
    // the boot page tables map the first 4 GiB at KERNEL_BASE.
    let mbi = unsafe { BootInformation::load(phys_to_virt(mbi_phys) as *const BootInformationHeader) }
        .unwrap_or_else(|e| early_fail(format_args!("bad multiboot2 information: {:?}", e)));
    let opts = console_and_options(&mbi, build);
    let (mem, trampoline) = memory(&mbi);
    let firmware = if mbi.efi_memory_map_tag().is_some() || mbi.efi_sdt64_tag().is_some() { "uefi" } else { "bios" };
    log::info!("firmware: {firmware}; AP trampoline page: {:x?}", trampoline);
    let cr3 = own_tables(mem.highest_address, trampoline);
    if let Some(args) = opts.sandbox {
        boot_sandbox(&args, mem.usable_bytes, cr3, trampoline);
        return Booted { opts, machine: None };
    }
    let topology = topology(&mbi);
    let bsp_apic = interrupt_controllers(&topology);
    init_bsp(bsp_apic, None);
    read_wall_clock();
    // SAFETY: IDT, GDT/TSS (IST stacks), LAPIC and the scheduler are ready on this CPU.
    unsafe { cpu::enable_interrupts() };
    let started = match trampoline {
        Some(page) => start_aps(&topology.cpu_apic_ids, bsp_apic, cr3, page, cpu::io_delay_us),
        None => {
            log::error!("no free page below 640 KiB for the AP trampoline: running on the BSP alone");
            0
        }
    };
    log::info!(
        "{} of {} application processor(s) started, {} CPU(s) online",
        started, topology.cpu_apic_ids.len() - 1, smp::cpus_online()
    );
    Booted { opts, machine: Some(Machine { topology, firmware, mem_mib: mem.usable_bytes >> 20, trampoline }) }
}

/// The command line (a sandbox's boot arguments included) and the console it chooses: a VT sandbox prints
/// through its monitor, which owns COM1, from the first line on.
fn console_and_options(mbi: &BootInformation, build: &str) -> Options<'static> {
    let cmdline_str = mbi.command_line_tag().and_then(|t| t.cmdline().ok()).unwrap_or("");
    // SAFETY: the boot information stays reserved for good (kmem keeps it), so its command line lives as long
    // as the kernel does.
    let cmdline_str: &'static str = unsafe { &*(cmdline_str as *const str) };
    let opts = cmdline::parse(cmdline_str);
    let level = match opts.as_ref().map(|o| o.log_level) {
        Ok(LogLevel::Error) => log::LevelFilter::Error,
        Ok(LogLevel::Warn) => log::LevelFilter::Warn,
        Ok(LogLevel::Info) | Err(_) => log::LevelFilter::Info,
        Ok(LogLevel::Debug) => log::LevelFilter::Debug,
        Ok(LogLevel::Trace) => log::LevelFilter::Trace,
    };
    if let Some(args) = opts.as_ref().ok().and_then(|o| o.sandbox) {
        crate::sandbox::init(&args);
        crate::console::print_through_monitor();
    }
    crate::console::init(level);
    trap::set_dump_writer(crate::console::print_emergency);
    kprintln!("questv {} kernel ({} build), command line: {:?}", env!("CARGO_PKG_VERSION"), build, cmdline_str);
    let opts = opts.unwrap_or_else(|e| {
        log::error!("command line: {:?}; using defaults", e);
        cmdline::parse("").unwrap()
    });
    if let Some(u) = opts.unknown {
        log::warn!("unknown command line option {:?} ignored", u);
    }
    opts
}

/// The frame allocator and heap from the memory map (every boot module kept), the ramdisk, and the AP
/// trampoline's page.
fn memory(mbi: &BootInformation) -> (kmem::MemoryInfo, Option<u64>) {
    let Some(mmap) = mbi.memory_map_tag() else { early_fail(format_args!("no multiboot2 memory map")) };
    // UEFI firmware passes its map entry by entry (OVMF: dozens): room for 256, a warning past that.
    let mut areas = [Area { start: 0, len: 0, usable: false }; 256];
    let mut n = 0;
    if mmap.memory_areas().len() > areas.len() {
        log::warn!("memory map has {} entries; only the first {} are used", mmap.memory_areas().len(), areas.len());
    }
    for a in mmap.memory_areas().iter().take(areas.len()) {
        areas[n] = Area {
            start: a.start_address(),
            len: a.size(),
            usable: a.typ() == multiboot2::MemoryAreaTypeId::from(MemoryAreaType::Available),
        };
        n += 1;
    }
    // Every module must stay reserved (a ramdisk file handed out as free memory would be overwritten).
    let mut keep = [Region::new(0, 0); kmem::MAX_KEEP];
    if mbi.module_tags().count() + 1 > keep.len() {
        early_fail(format_args!("{} boot modules: at most {} fit (the runner caps --add)", mbi.module_tags().count(), keep.len() - 1));
    }
    keep[0] = Region::new(virt_to_phys(mbi.start_address() as u64), virt_to_phys(mbi.end_address() as u64));
    for (slot, m) in keep[1..].iter_mut().zip(mbi.module_tags()) {
        *slot = Region::new(u64::from(m.start_address()), u64::from(m.end_address()));
    }
    let mem = kmem::init(&areas[..n], &keep);
    // The low 1 MiB is never handed out (kmem), so the page stays the trampoline's for good.
    let trampoline = crate::mm::memmap::pick_trampoline(&areas[..n], &keep, boot::AP_TRAMPOLINE_LIMIT);
    let mut files = alloc::vec::Vec::new();
    for m in mbi.module_tags() {
        let name = m.cmdline().unwrap_or("").trim();
        let (start, end) = (m.start_address() as usize, m.end_address() as usize);
        // SAFETY: GRUB loaded the module at physical [start, end); kmem::init reserved that range for good.
        let bytes: &'static [u8] = unsafe { core::slice::from_raw_parts(phys_to_virt(start as u64) as *const u8, end - start) };
        files.push((alloc::string::String::from(name), bytes));
    }
    crate::ramdisk::init(files);
    log::info!(
        "memory: {} MiB usable in {} regions, heap {} MiB, highest address 0x{:x}",
        mem.usable_bytes >> 20, mem.regions, mem.heap_bytes >> 20, mem.highest_address
    );
    (mem, trampoline)
}

/// Descriptor tables and the kernel's own page tables; returns their root.
fn own_tables(highest_address: u64, trampoline: Option<u64>) -> u64 {
    trap::init_idt();
    load_descriptor_tables();
    let cr3 = kmem::build_kernel_tables(highest_address.max(4 << 30), trampoline);
    // SAFETY: the new tables map all RAM, the kernel image and MMIO at KERNEL_BASE as the boot tables did
    // (minus page 0); nothing runs at a low address any more but the AP trampoline, whose page they keep.
    unsafe { cpu::write_cr3(cr3) };
    sched::set_kernel_cr3(cr3);
    kmem::init_page_refs(highest_address);
    cr3
}

/// CPUs and I/O APICs from the firmware's ACPI tables.
fn topology(mbi: &BootInformation) -> Topology {
    let root = mbi
        .rsdp_v2_tag()
        .filter(|t| t.checksum_is_valid() && t.xsdt_address() != 0)
        .map(|t| RootTable { revision: t.revision(), address: t.xsdt_address() })
        .or_else(|| {
            mbi.rsdp_v1_tag()
                .filter(|t| t.checksum_is_valid())
                .map(|t| RootTable { revision: 0, address: t.rsdt_address() })
        })
        .unwrap_or_else(|| panic!("no ACPI RSDP from the boot loader: cannot find CPUs and I/O APICs"));
    crate::acpi_handler::set_root(root);
    let tables = acpi_madt::open_tables(crate::acpi_handler::DirectMapped, root)
        .unwrap_or_else(|e| panic!("ACPI: {}", e));
    let mut topo = acpi_madt::topology(&tables).unwrap_or_else(|e| panic!("ACPI: {}", e));
    topo.dmar = match acpi_madt::dma_remapping(&tables) {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            log::warn!("ACPI: {e}: DMA remapping unusable");
            None
        }
        None => None,
    };
    log::info!(
        "ACPI: {} CPUs (APIC ids {:?}), {} I/O APIC(s), LAPIC at 0x{:x}",
        topo.cpu_apic_ids.len(), topo.cpu_apic_ids, topo.io_apics.len(), topo.local_apic_address
    );
    topo
}

/// Legacy PICs off, this CPU's LAPIC on, every I/O APIC input masked; returns the BSP's APIC id.
fn interrupt_controllers(topo: &Topology) -> u32 {
    questv_arch::timer::disable_legacy_pic();
    lapic::select_mode(topo.local_apic_address);
    lapic::enable();
    let bsp_apic = lapic::id();
    // SAFETY: re-install index 0 with the APIC id as the LAPIC reports it (x2APIC ids can exceed 8 bits).
    unsafe { percpu::install(0, bsp_apic) };
    let mut gsis = 0;
    for io in &topo.io_apics {
        // SAFETY: address from the MADT, inside the uncached 3–4 GiB of the kernel's mapping.
        let ioapic = unsafe { IoApic::new(u64::from(io.address), io.id, io.gsi_base) };
        ioapic.mask_all();
        gsis += ioapic.input_count();
    }
    log::info!(
        "local APIC in {} mode, BSP APIC id {}; {} I/O APIC input(s) masked",
        if lapic::is_x2apic() { "x2APIC" } else { "xAPIC" }, bsp_apic, gsis
    );
    bsp_apic
}

/// The SMP kernel runs the machine: its boot line, the NIC if asked for, then the command.
pub fn run_smp(opts: &Options<'static>, m: &Machine) -> ! {
    let topo = &m.topology;
    result!(
        "boot",
        "cpus_online={} mode=smp cpus_listed={} apic={} mem_mib={} firmware={} trampoline={:#x}",
        smp::cpus_online(), topo.cpu_apic_ids.len(),
        if lapic::is_x2apic() { "x2apic" } else { "xapic" },
        m.mem_mib, m.firmware, m.trampoline.unwrap_or(0)
    );
    if opts.net {
        if let Err(e) = crate::net::device::bring_up_smp(topo) {
            log::error!("net: {e}");
            crate::result!("net_up", "ok=0 error={:?}", e);
        }
    }
    run_program(opts)
}

/// Run the command line's program (or test) and finish with its status.
pub fn run_program(opts: &Options<'static>) -> ! {
    if let Some(list) = opts.vcpus {
        create_vcpus(list);
    }
    let status = match opts.run {
        Some(cmd) if !cmd.starts_with("ktest") => crate::proc::run_command(cmd),
        test => crate::hooks::run_test(test),
    };
    crate::machine::finish(status)
}

/// The VCPUs the command line asks for (a partition file's `vcpus`), on this CPU, before the program starts:
/// they get the ids after the default VCPU 0 (1, 2, ... in order), and it binds its threads to them by id.
fn create_vcpus(list: &str) {
    match crate::vcpu::parse_list(list) {
        Ok(items) => {
            let mut ids = alloc::vec::Vec::new();
            for (class, budget, period) in items {
                match crate::sched::vcpu_create(class, budget, period) {
                    Ok(id) => ids.push(alloc::format!("{id}")),
                    Err(e) => {
                        result!("vcpus_refused", "class={} budget_us={} period_us={} error={:?}", class.name(), budget, period, e);
                    }
                }
            }
            result!("vcpus_created", "ids={}", if ids.is_empty() { alloc::string::String::from("none") } else { ids.join(",") });
        }
        Err(e) => result!("vcpus_refused", "error=\"{}\"", e),
    }
}

/// A VT sandbox: its cores (the one it starts on, and any others the monitor lists, started as the SMP
/// kernel starts its APs), no firmware tables and no PIC/IOAPIC programming (machine-wide devices are not a
/// sandbox's to reset), timer rates from the monitor, console through the monitor.
fn boot_sandbox(args: &questv_abi::boot::SandboxArgs, usable_bytes: u64, cr3: u64, trampoline: Option<u64>) {
    lapic::select_mode(0xFEE0_0000);
    lapic::enable();
    let apic = lapic::id();
    // SAFETY: index 0 is the core the sandbox starts on.
    unsafe { percpu::install(0, apic) };
    let given = (args.tsc_hz != 0 && args.lapic_hz != 0)
        .then_some(questv_arch::timer::Calibration { tsc_hz: args.tsc_hz, lapic_hz: args.lapic_hz });
    init_bsp(apic, given);
    // The wall clock the monitor read from the RTC (sandboxes have no ports).
    crate::time::set_wall_at_tsc0(args.wall_ns);
    // SAFETY: IDT, GDT/TSS, LAPIC and the scheduler are ready.
    unsafe { cpu::enable_interrupts() };
    // Its other cores: INIT and start-up IPIs to them, which the monitor emulates (an SVM core has no
    // wait-for-SIPI state): no settling time to wait.
    let others: alloc::vec::Vec<u32> = args.other_core_apic_ids().collect();
    if !others.is_empty() {
        let ids: alloc::vec::Vec<u32> = core::iter::once(apic).chain(others.iter().copied()).collect();
        let started = match trampoline {
            Some(page) => start_aps(&ids, apic, cr3, page, |_| {}),
            None => 0,
        };
        result!("sandbox_cores", "sandbox={} started={} of={} cpus_online={}", args.sandbox, started, others.len(), smp::cpus_online());
    }
    result!("sandbox_boot", "sandbox={} apic_id={} apic={} mem_mib={} incarnation={} cpus={}", args.sandbox, apic,
            if lapic::is_x2apic() { "x2apic" } else { "xapic" }, usable_bytes >> 20, args.incarnation, smp::cpus_online());
    // A sharer of the NIC: the monitor mapped its registers and the DMA region and routes its interrupt here.
    if let Some(nic) = args.nic {
        crate::net::stack::start(crate::net::stack::Config { mmio: nic.mmio, dma: nic.dma, index: nic.index as usize, initialise: false, claims: nic.claims });
    }
    // In service: after a recovery this ends the downtime the monitor reports.
    crate::sandbox::booted();
}

/// The wall clock from the CMOS RTC (UTC, as PC firmware and QEMU keep it), for CLOCK_REALTIME. A clock that
/// does not settle or holds no valid date leaves the wall clock unknown, and says so.
fn read_wall_clock() {
    let decoded = questv_arch::rtc::read_raw().map(|(raw, b)| crate::time::decode_rtc(raw, b));
    match decoded.and_then(crate::time::unix_seconds) {
        Some(secs) => {
            crate::time::set_wall_clock(secs * 1_000_000_000, cpu::rdtsc());
            let t = decoded.unwrap_or(crate::time::RtcTime { year: 0, month: 0, day: 0, hour: 0, minute: 0, second: 0 });
            result!("wall_clock", "source=rtc unix={} utc={:04}-{:02}-{:02}T{:02}:{:02}:{:02}", secs, t.year, t.month, t.day, t.hour, t.minute, t.second);
        }
        None => result!("wall_clock", "source=none (the RTC gave no valid date: CLOCK_REALTIME counts from boot)"),
    }
}

/// Failure before the console and heap exist: print directly and stop.
fn early_fail(args: core::fmt::Arguments) -> ! {
    crate::console::print_emergency(format_args!("KERNEL PANIC early boot: {}\n", args));
    cpu::halt_forever()
}

// CPU bring-up: each CPU's LAPIC, scheduler and timer, and the APs' start (INIT-SIPI-SIPI through the
// real-mode trampoline).

/// Per-CPU set-up shared by the BSP and the APs once descriptor tables are loaded: LAPIC, scheduler, timer.
fn init_this_cpu() {
    trap::init_syscall();
    lapic::enable();
    sched::init_cpu();
    lapic::timer_init_divider();
    lapic::timer_oneshot(VECTOR_TIMER, TIMER_COUNT.load(Ordering::SeqCst));
    ONLINE[percpu::cpu_index() as usize].store(true, Ordering::SeqCst);
}

/// BSP: calibrate the timer (or take the given rates: VT sandboxes get them
/// from the monitor rather than all driving the one PIT at once), start ticking.
fn init_bsp(bsp_apic_id: u32, given: Option<questv_arch::timer::Calibration>) {
    APIC_IDS[0].store(bsp_apic_id, Ordering::SeqCst);
    let cal = given.unwrap_or_else(questv_arch::timer::calibrate);
    crate::time::set_tsc_hz(cal.tsc_hz);
    TIMER_COUNT.store((cal.lapic_hz / TICK_HZ) as u32, Ordering::SeqCst);
    crate::result!("timer", "lapic_hz={} tsc_hz={} tick_hz={}", cal.lapic_hz * 16, cal.tsc_hz, TICK_HZ);
    init_this_cpu();
}

extern "C" fn ap_entry(cpu_index: u64) -> ! {
    // SAFETY: each AP installs its own index exactly once, first thing.
    unsafe { percpu::install(cpu_index as u32, APIC_IDS[cpu_index as usize].load(Ordering::SeqCst)) };
    load_descriptor_tables();
    init_this_cpu();
    log::debug!("online, APIC id {}", lapic::id());
    // Nothing more for the boot context to do: leave the CPU to its threads (the idle thread halts it when
    // none is ready). Staying around as a halting thread would put every local wake-up behind the next tick.
    sched::exit()
}

/// Start every CPU in `apic_ids` except the BSP, one at a time. Returns how many came online.
fn start_aps(apic_ids: &[u32], bsp_apic_id: u32, cr3: u64, trampoline: u64, delay_us: fn(u32)) -> u32 {
    let mut started = 0;
    for &apic_id in apic_ids.iter().filter(|&&id| id != bsp_apic_id) {
        let index = CPU_COUNT.load(Ordering::SeqCst);
        if index as usize >= MAX_CPUS {
            log::warn!("more than {} CPUs; APIC id {} left offline", MAX_CPUS, apic_id);
            break;
        }
        APIC_IDS[index as usize].store(apic_id, Ordering::SeqCst);
        CPU_COUNT.store(index + 1, Ordering::SeqCst);
        let stack: &'static mut [u8] = Box::leak(alloc::vec![0u8; sched::KERNEL_STACK_SIZE].into_boxed_slice());
        // The System V ABI wants a 16-byte aligned stack at the call; a byte vector guarantees no alignment.
        let top = (stack.as_ptr() as u64 + stack.len() as u64) & !0xF;
        // SAFETY: the trampoline page is free in the memory map and never handed out (the frame allocator keeps the low 1 MiB; the page is picked below 640 KiB), cr3 is the kernel's PML4 below 4 GiB, and the
        // previous AP finished reading the parameters (we waited for it to come online).
        unsafe {
            questv_arch::boot::install_ap_trampoline(trampoline, cr3, top, ap_entry, u64::from(index));
        }
        lapic::start_ap(apic_id, (trampoline >> 12) as u8, delay_us);
        let deadline = cpu::rdtsc() + crate::time::tsc_hz() * 2;
        while !ONLINE[index as usize].load(Ordering::SeqCst) && cpu::rdtsc() < deadline {
            cpu::pause();
        }
        if ONLINE[index as usize].load(Ordering::SeqCst) {
            started += 1;
        } else {
            // It may only be slow, and still reading the trampoline's parameters: writing the next CPU's over
            // them would start two CPUs on one stack. Leave the rest offline instead.
            let left = apic_ids.iter().filter(|&&id| id != bsp_apic_id).count() as u32 - started - 1;
            log::error!("CPU with APIC id {} did not come online in 2 s; {} more CPU(s) left offline", apic_id, left);
            break;
        }
    }
    started
}
