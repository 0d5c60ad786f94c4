//! The VT build's monitor policy (paper §3.1–3.3), written once for both hardware backends: after the SMP
//! bring-up, carve one memory slice per core, load a pristine copy of this kernel into each slice, give each
//! its own second-stage table (EPT or NPT), and launch it as that core's sandbox. The root-mode mechanics
//! (VMX: VMXON/VMCS; SVM: VMCB/VMRUN) and the translation of exits into `crate::exit::Exit` are the
//! `vmx` crate's backends, reached only through `crate::backend`; this module decides layout and policy: what
//! the sandboxes see and may touch (deny by default: `crate::policy`), what a hypercall does (ABI:
//! `questv_abi::hypercall`), and what happens to a sandbox that faults, hangs or attacks (it is stopped and
//! reported; the others carry on). docs/vt.md has the grant and exit tables.
//!
//! This file holds the start-up and the launch. Its modules, each importing only those below it:
//!
//! - `exits`: what each exit means; `hypercalls`: what each hypercall does;
//! - `faults`: stops or recovers a faulted or hung sandbox (driver switch, restart);
//! - `nic_guard`: the audit of the NIC's tail pages, and their guard once a sharer rewrote them;
//! - `channels` and `nic`: the shared pages and the shared NIC (its grant and the hand-over between sharers);
//! - `iommu`: what the devices sandboxes drive may reach by DMA;
//! - `build`: makes a sandbox (slice, pristine kernel, second stage, boot information, launch configuration);
//! - `tables`: monitor memory and each sandbox's second-stage table pages;
//! - `console`: a sandbox's console lines and exit report;
//! - `cores`: the cores of a sandbox on several cores (their start and their stop together);
//! - `state` (the per-sandbox table and the run's bookkeeping), `infopage` (the shared info page) and
//!   `layout` (a sandbox's guest-physical layout) at the bottom.

mod build;
mod channels;
mod console;
mod cores;
mod exits;
mod faults;
mod heartbeat;
mod hypercalls;
mod infopage;
mod iommu;
mod layout;
mod nic;
mod nic_guard;
mod state;
mod tables;

use crate::backend::{self, Caps, LaunchConfig, RunSettings};
use crate::partition::{self, Plan};
use crate::recovery;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use questv_abi::hypercall::SHARED_SIZE;
use questv_arch::acpi_madt::Topology;
use questv_arch::{cpu, lapic, percpu};
use questv_kernel::mm::kmem;
use questv_kernel::mm::memmap::Region;
use questv_kernel::{kprintln, result, sched, smp, time};
use state::{set_apic_access, ApicAccess};

/// What the monitor is asked to do (from the kernel command line and the firmware tables).
pub struct MonitorOptions<'a> {
    /// The monitor's part of it: `run`, `slice_mib`, `watchdog_ms`, `apic_passthrough`, `nic_sharers`,
    /// `nic_device_mac`, `recovery`.
    pub cmdline: &'a questv_kernel::cmdline::Options<'a>,
    pub topology: &'a Topology,
    /// What booted the machine ("bios" or "uefi"), for the boot report.
    pub firmware: &'static str,
}

/// What each core launches.
static LAUNCH: spin::Once<Vec<LaunchConfig>> = spin::Once::new();

/// Run the monitor: plan, prepare and launch one sandbox per online core. Returns a status only if VT
/// cannot start at all.
pub fn run_monitor(opts: &MonitorOptions) -> i32 {
    let caps = match backend::detect() {
        Ok(c) => c,
        Err(e) => {
            kprintln!("{} ({:?})", backend::NEEDS_VIRT_MESSAGE, e);
            return 3;
        }
    };
    let n = match set_up(opts, caps) {
        Ok(n) => n,
        Err(e) => {
            kprintln!("VT: {}", e);
            return 3;
        }
    };
    for c in 1..n {
        if cores::sandbox_of(c) != c {
            // Another core of a sandbox: it starts when its sandbox's kernel sends it a start-up IPI.
            sched::spawn_on(c, "launch", start_thread, 0);
        } else if !state::partition().is_some_and(|p| p.parked(c)) {
            sched::spawn_on(c, "launch", launch_thread, 0);
        }
    }
    if state::partition().is_some_and(|p| p.parked(0)) {
        // This core has no sandbox: it stays halted (its exits never come; the others run on theirs).
        cpu::disable_interrupts();
        cpu::halt_forever()
    }
    launch_here()
}

/// Everything before the launch, on the BSP: the run's settings, the devices, the memory plan, the sandboxes
/// built, the exit handler and the watchdog. Returns the number of sandboxes.
fn set_up(opts: &MonitorOptions, caps: Caps) -> Result<u32, String> {
    let apic = choose_apic_access(opts);
    let n = smp::cpus_online();
    // First: the NIC grant takes the sharers' addresses from it, the watchdog the sandboxes' own periods.
    read_partition(n)?;
    // The machine-wide watchdog, and each sandbox's own (a partition file's): the monitor's tick runs at the
    // shortest of them, each sandbox is judged by its own.
    let default_ms = opts.cmdline.watchdog_ms.unwrap_or(0);
    let own_ms: Vec<(u32, u64)> = (0..n).filter_map(|c| Some((c, state::partition()?.sandbox(c)?.watchdog_ms?))).collect();
    let watchdog_ms = own_ms.iter().map(|&(_, ms)| ms).chain(Some(default_ms).filter(|&ms| ms > 0)).min().unwrap_or(0);
    let settings = RunSettings::new(caps, (watchdog_ms > 0).then_some(time::ms_to_cycles(watchdog_ms))).map_err(|e| format!("{e}"))?;
    let (name, setup) = settings.report();
    result!(name, "{}", setup);
    result!("monitor", "arch={} apic={}", settings.arch().name(), apic.name());
    state::set_watchdog_cycles(time::ms_to_cycles(default_ms));
    for &(sandbox, ms) in &own_ms {
        state::set_watchdog_own(sandbox, time::ms_to_cycles(ms));
        result!("watchdog_sandbox", "sandbox={} ms={}", sandbox, ms);
    }
    for c in 0..n {
        cores::set_owner(c, state::partition().map_or(c, |p| p.owner(c)));
    }
    claim_devices(opts)?;
    let plan = plan_memory(opts, n)?;
    nic::program();
    nic_guard::record();
    let policies = recovery::parse_policies(opts.cmdline.recovery, n)?;
    let crash_loop = recovery::parse_crash_loop(opts.cmdline.crash_loop)?;
    let rule = match crash_loop {
        Some((limit, window_ms)) => format!("{limit}/{window_ms}"),
        None => String::from("off"),
    };
    result!("recovery", "policies={} crash_loop={}", policies.iter().map(|p| p.name()).collect::<Vec<_>>().join(","), rule);
    state::init_sandboxes(&plan.slices, &policies);
    faults::set_crash_loop(crash_loop);
    let runs: Vec<Option<String>> =
        (0..n).map(|c| state::partition().and_then(|p| p.sandbox(c)).and_then(|s| s.run.clone()).or(opts.cmdline.run.map(String::from))).collect();
    let vcpus: Vec<Option<String>> = (0..n).map(|c| state::partition().and_then(|p| p.sandbox(c)).and_then(|s| s.vcpus.clone())).collect();
    let configs = build::prepare(&plan, &runs, &vcpus, settings)?;
    LAUNCH.call_once(|| configs);
    state::set_sandboxes(n);
    for c in (0..n).filter(|&c| state::partition().is_some_and(|p| p.parked(c))) {
        state::sandbox_parked(c);
    }
    for c in (0..n).filter(|&c| cores::sandbox_of(c) != c) {
        state::sandbox_core(c, cores::sandbox_of(c));
    }
    if opts.cmdline.console_input {
        let takes_input: Vec<bool> = (0..n).map(|c| state::partition().map_or(true, |p| p.sandbox(c).is_some_and(|s| s.input))).collect();
        console::start_input(isa_irq_input(opts.topology, 4).map_err(|e| format!("console input: {e}"))?, &takes_input);
    }
    backend::set_exit_handler(exits::on_exit);
    questv_arch::trap::IGNORE_STRAY_NMIS.store(true, Ordering::SeqCst);
    start_watchdog(opts, watchdog_ms, settings)?;
    // slice_mib: the largest slice (with a partition file slices may differ; each sandbox reports its own).
    let largest = plan.slices.iter().map(|s| s.size).max().unwrap_or(0);
    result!("boot", "cpus_online={} mode=vt sandboxes={} slice_mib={} role=monitor firmware={}", n, n, largest >> 20, opts.firmware);
    Ok(n)
}

/// The partition description (`--config`, the `partition` boot module), checked against this machine: each
/// problem is one line, and nothing is launched if there is one.
fn read_partition(cpus: u32) -> Result<(), String> {
    let Some(bytes) = questv_kernel::ramdisk::find("partition") else { return Ok(()) };
    let text = core::str::from_utf8(bytes).map_err(|_| String::from("partition: the description is not text"))?;
    let spec = crate::partition_spec::parse(text).map_err(|e| format!("partition: {e}"))?;
    let problems = crate::partition_spec::check(&spec, cpus);
    if !problems.is_empty() {
        for p in &problems {
            result!("partition_refused", "problem=\"{}\"", p);
        }
        return Err(format!("partition: refused ({} problems), nothing launched", problems.len()));
    }
    let named: Vec<String> = (0..cpus).map(|c| spec.sandbox(c).map_or(String::from("parked"), |s| s.name.clone())).collect();
    result!("partition", "cores={} channels={}", named.join(","), spec.channels.len());
    state::set_partition(spec);
    Ok(())
}

/// How the sandboxes reach their APIC (fixed for the run).
fn choose_apic_access(opts: &MonitorOptions) -> ApicAccess {
    let apic = if lapic::is_x2apic() {
        ApicAccess::X2apic
    } else if opts.cmdline.apic_passthrough {
        ApicAccess::XapicPassthrough
    } else {
        ApicAccess::XapicTrapped
    };
    set_apic_access(apic);
    if apic == ApicAccess::XapicPassthrough {
        log::warn!("apic=passthrough: sandboxes write their APIC directly; IPIs are NOT filtered (measurement only)");
    }
    apic
}

/// DMA: no sandbox owns a device, except the NIC when sandboxes share it, so no other function keeps bus
/// mastering, and behind an IOMMU the NIC reaches only its DMA region.
fn claim_devices(opts: &MonitorOptions) -> Result<(), String> {
    // SAFETY: the monitor is the only user of the PCI configuration ports (never granted to a sandbox) and
    // runs this on the BSP before any sandbox starts.
    let mut pci = unsafe { questv_drivers::pci::PortConfigSpace::new() };
    let grant = match opts.cmdline.nic_sharers {
        Some(list) => Some(nic::grant_nic(&mut pci, list, opts.cmdline.nic_device_mac, smp::cpus_online(), opts.topology)?),
        None => None,
    };
    let owned: Vec<(u8, u8, u8)> = grant.iter().map(|g| g.nic.bdf).collect();
    let dma: Vec<iommu::DmaGrant> = grant.iter().map(|g| iommu::DmaGrant { bdf: g.nic.bdf, start: g.nic.dma, len: questv_drivers::e1000::layout::REGION }).collect();
    nic::install(grant);
    let (functions, cleared) = questv_drivers::pci::disable_bus_mastering_except(&mut pci, &owned);
    result!("pci", "functions={} bus_master_cleared={}", functions, cleared);
    iommu::confine(opts.topology, &dma)
}

/// Carve the free memory into `n` slices and the shared region, take them from the frame allocator, and write
/// the info page.
fn plan_memory(opts: &MonitorOptions, n: u32) -> Result<Plan, String> {
    let runs = kmem::free_runs(partition::ALIGN);
    let mut free: Vec<partition::Region> = runs.iter().map(|r| partition::Region { start: r.start, end: r.end }).collect();
    // Keep 16 MiB for the monitor itself (second-stage tables, control blocks, stacks).
    let reserve = 16 << 20;
    if let Some(last) = free.iter_mut().max_by_key(|r| r.end - r.start) {
        last.start = (last.start + reserve).min(last.end);
    }
    // Each core's slice: its sandbox's own size (partition file), the least for a parked core, else
    // `slice_mib` or an even share.
    let default = opts.cmdline.slice_mib.map(|m| m << 20);
    let sizes: Vec<Option<u64>> = (0..n)
        .map(|c| match state::partition() {
            // (A sandbox's other cores run in its first core's slice: theirs is the least, unused.)
            Some(p) if p.parked(c) || p.owner(c) != c => Some(partition::MIN_SLICE),
            Some(p) => p.sandbox(c).and_then(|s| s.memory_mib).map(|m| m << 20).or(default),
            None => default,
        })
        .collect();
    let plan = partition::plan_sizes(&free, &sizes, SHARED_SIZE)
        .map_err(|e| format!("cannot partition memory: {e}"))?;
    for s in &plan.slices {
        kmem::take_range(Region::new(s.host_base, s.host_base + s.size)).expect("planned slice not free");
    }
    kmem::take_range(Region::new(plan.shared.start, plan.shared.end)).expect("planned shared region not free");
    // SAFETY: the shared region was just taken for this purpose; no sandbox runs yet.
    unsafe { infopage::init(plan.shared.start, n) };
    Ok(plan)
}

/// The watchdog: the backend's own timer (VMX: the preemption timer, armed in each VMCS), or where there is
/// none (SVM) the PIT's NMI.
fn start_watchdog(opts: &MonitorOptions, watchdog_ms: u64, settings: RunSettings) -> Result<(), String> {
    match (watchdog_ms, settings.watchdog_timer()) {
        (0, _) => result!("watchdog", "ms=0 mechanism=off"),
        (_, Some(timer_value)) => result!("watchdog", "ms={} mechanism=preemption_timer timer_value={}", watchdog_ms, timer_value),
        (_, None) => {
            let period_us = arm_watchdog_nmi(opts.topology, watchdog_ms).map_err(|e| format!("cannot arm the watchdog: {e}"))?;
            // A hung guest still exits at every tick (NMIs are not maskable); no exit for two ticks means the
            // core itself did not run.
            state::set_stall_cycles(time::us_to_cycles(2 * period_us));
            result!("watchdog", "ms={} mechanism=pit_nmi period_us={} stall_grace_us={}", watchdog_ms, period_us, 2 * period_us);
        }
    }
    Ok(())
}

/// Arm the SVM watchdog: the PIT's IRQ 0 routed through the I/O APIC as an NMI to every core, at half the
/// watchdog period (at least 19 Hz: the PIT's divisor is 16 bits). Returns the tick period in microseconds.
fn arm_watchdog_nmi(topology: &Topology, watchdog_ms: u64) -> Result<u64, String> {
    let (ioapic, pin, active_low) = isa_irq_input(topology, 0)?;
    ioapic.route_nmi_broadcast(pin, active_low);
    state::set_watchdog_nmi();
    Ok(questv_arch::timer::pit_periodic((2000 / watchdog_ms.max(1)).max(19)))
}

/// Where ISA interrupt `irq` enters the I/O APICs (MADT overrides applied): (I/O APIC, pin, active low).
fn isa_irq_input(topology: &Topology, irq: u8) -> Result<(questv_arch::ioapic::IoApic, u32, bool), String> {
    let isa = topology.isa_irq(irq);
    let io = topology
        .io_apics
        .iter()
        .find(|io| isa.gsi >= io.gsi_base && isa.gsi < io.gsi_base + 24)
        .ok_or_else(|| format!("no I/O APIC for ISA IRQ {irq}"))?;
    // SAFETY: address from the MADT, inside the uncached 3-4 GiB of the kernel's mapping; only the monitor programs it.
    let ioapic = unsafe { questv_arch::ioapic::IoApic::new(u64::from(io.address), io.id, io.gsi_base) };
    Ok((ioapic, isa.gsi - io.gsi_base, isa.active_low))
}

/// Enter root mode on the calling core and launch its sandbox. Returns only on failure.
fn launch_here() -> ! {
    let cpu_index = percpu::cpu_index();
    cpu::disable_interrupts();
    lapic::timer_stop();
    // The logical id the shared NIC's I/O APIC entry names (xAPIC; x2APIC derives it from the APIC id).
    if cpu_index < 8 {
        lapic::set_flat_logical_id(1 << cpu_index);
    }
    let launch = LAUNCH.get().expect("no launch plan")[cpu_index as usize];
    cores::entering(cpu_index);
    // SAFETY: the configuration's pages are monitor frames (the permission maps shared read-only by all cores),
    // made by `build::prepare` with this run's checked settings; interrupts are off and stay off in root mode.
    let error = unsafe { backend::launch(launch, smp::tss_base()) };
    let sandbox = cores::sandbox_of(cpu_index);
    kprintln!("RESULT sandbox_fault sandbox={} reason=launch_failed error={:?} core={}", sandbox, error, cpu_index);
    cores::left(cpu_index);
    if sandbox == cpu_index {
        state::sandbox_finished(sandbox, 126);
    }
    cpu::halt_forever()
}

extern "C" fn launch_thread(_: u64) -> ! {
    launch_here()
}

/// Another core of a sandbox: wait (halted between the monitor's ticks) for the start-up IPI its sandbox's
/// kernel sends it, then launch it. A sandbox that is done for good before it sent one leaves the core parked.
extern "C" fn start_thread(_: u64) -> ! {
    let core = percpu::cpu_index();
    loop {
        if state::is_done(cores::sandbox_of(core)) {
            cpu::disable_interrupts();
            cpu::halt_forever()
        }
        if cores::take_start(core) {
            break;
        }
        cpu::halt();
    }
    launch_here()
}
