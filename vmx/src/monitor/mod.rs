//! The VT build's monitor policy (paper §3.1–3.3), written once for both hardware backends: after the SMP
//! bring-up, carve one memory slice per core, load a pristine copy of this kernel into each slice, give each
//! its own second-stage table (EPT or NPT), and launch it as that core's sandbox. The root-mode mechanics
//! (VMX: VMXON/VMCS; SVM: VMCB/VMRUN) and the translation of exits into `crate::exit::Exit` are the
//! `vmx` crate's backends; this module decides layout and policy: what the sandboxes see and may touch (deny
//! by default: `crate::policy`), what a hypercall does (ABI: `questv_abi::hypercall`), and what happens
//! to a sandbox that faults, hangs or attacks (it is stopped and reported; the others carry on). docs/vt.md
//! has the grant and exit tables.
//!
//! This file holds the per-sandbox state, the launch and the run; `build` makes a sandbox (slice, pristine
//! kernel, second stage, permission maps, boot information), `exits` says what each exit means, `faults`
//! stops or recovers a sandbox (driver switch, restart, hand-over, checkpoints), `channels` and `nic` grant
//! the shared pages and the shared NIC.

use crate::bootinfo::{self, Module};
use questv_kernel::mm::kmem;
use questv_kernel::mm::memmap::Region;
use questv_kernel::time::{self, cycles_to_us};
use questv_kernel::{kprintln, result, sched, smp};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use questv_arch::paging::PAGE_SIZE;
use questv_arch::acpi_madt::Topology;
use questv_arch::{cpu, lapic, percpu};
use crate::recovery::{self as rec, Component, CrashLoopRule, Decision, History, Policy};
use crate::backend::{self, GuestRegs, Verdict};
use crate::exit::{Exit, ExitKind, IoExit};
use crate::guest::{self, Source};
use questv_abi::hypercall::{self as hc, info, SHARED_GPA, SHARED_SIZE};
use crate::partition::{self, Plan};
use crate::policy::{self, Access, ApicWriteVerdict, PortVerdict, RefusalKind, Refusals};
use crate::stage2::{MemType, Perms, Stage2};
use backend::{inject_gp, inject_ud, skip_instruction};

mod build;
mod channels;
mod faults;
mod exits;
mod nic;
use build::*;
use channels::*;
use faults::*;
use exits::*;
use nic::*;

const GUEST_MODULES_FROM_TOP: u64 = 16 << 20;
const GUEST_MBI_FROM_TOP: u64 = 64 << 10;
/// Guest-physical layout of a sandbox (paper §3.2): the first 16 MiB of its slice appear at guest-physical 0
/// (the kernel is linked at 1 MiB), the rest of the slice at its own host address. Every other guest-physical
/// address — the monitor, the other slices, every EPT table — is simply absent, so touching it is an EPT
/// violation rather than silent aliasing.
pub const LOW_ALIAS: u64 = 16 << 20;

/// Host address behind guest-physical `gpa` of the slice at `host_base`.
fn host_of(host_base: u64, gpa: u64) -> u64 {
    if gpa < LOW_ALIAS {
        host_base + gpa
    } else {
        gpa
    }
}

/// What each core launches.
static LAUNCH: spin::Once<Vec<backend::LaunchConfig>> = spin::Once::new();
/// Second-stage roots by sandbox (channels are mapped into them after launch).
static STAGE2_ROOTS: spin::Once<Vec<u64>> = spin::Once::new();

/// How sandboxes reach their local APIC. x2APIC: MSRs, ICR writes intercepted by the MSR map. xAPIC: the APIC
/// page is mapped read-only and every write exits and is checked and replayed (the ICR shares its page with
/// EOI, so filtering IPIs costs an exit per EOI), or, only when asked for (`apic=passthrough`, to measure
/// that cost), mapped writable with no filtering at all.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ApicAccess {
    X2apic,
    XapicTrapped,
    XapicPassthrough,
}

impl ApicAccess {
    fn name(self) -> &'static str {
        match self {
            ApicAccess::X2apic => "x2apic",
            ApicAccess::XapicTrapped => "xapic_trapped",
            ApicAccess::XapicPassthrough => "xapic_passthrough",
        }
    }
}

static APIC_ACCESS: spin::Once<ApicAccess> = spin::Once::new();
/// Guest-physical address of the xAPIC page (the sandboxes use the architectural default).
const XAPIC_GPA: u64 = 0xFEE0_0000;
/// SVM watchdog: NMIs from the PIT arrive periodically (they count as `watchdog` exits).
static WATCHDOG_NMI: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
static FINISHED: AtomicU32 = AtomicU32::new(0);
static WORST_STATUS: AtomicI32 = AtomicI32::new(0);
static SANDBOXES: AtomicU32 = AtomicU32::new(0);

/// Status a stopped sandbox is reported with (as a shell reports a process killed by SIGKILL).
const STATUS_STOPPED: i32 = 128 + 9;

/// What the monitor keeps per sandbox (touched only by that sandbox's core, in its exit handler).
struct Sandbox {
    host_base: u64,
    size: u64,
    refusals: Refusals,
    /// Exits by kind (`RESULT vmexits`).
    exits: [u64; ExitKind::COUNT],
    /// xAPIC: the last value written to ICR high (the destination of the next ICR low write).
    icr_high: u32,
    /// Console bytes of the line being assembled (printed with the `[sN]` prefix at its newline).
    line: [u8; 160],
    line_len: usize,
    /// Watchdog: last heartbeat value seen and the TSC when it last changed.
    heartbeat: u64,
    progress_tsc: u64,
    /// What to do when it faults, and its incarnations so far.
    policy: Policy,
    history: History,
    /// TSC of the fault that started the recovery in progress (0: none), for `RESULT sandbox_ready`.
    recovering_since: u64,
    /// Its recoverable component (the NIC driver), if it registered one.
    component: Option<Component>,
    /// Stateful recovery: the state its services last checkpointed, per slot (kept outside the sandbox).
    checkpoints: [Vec<u8>; hc::CHECKPOINT_SLOTS as usize],
    /// Guest-physical page ranges of its kernel's read-only segments (read-only in its second stage too; the
    /// monitor refuses to write them on its behalf).
    read_only: Vec<(u64, u64)>,
}

static STATE: spin::Once<Vec<spin::Mutex<Sandbox>>> = spin::Once::new();
/// Watchdog limit in TSC cycles (0: off) and the VMX-preemption timer value that goes with it.
static WATCHDOG_CYCLES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn state(sandbox: u32) -> spin::MutexGuard<'static, Sandbox> {
    STATE.get().expect("no sandboxes")[sandbox as usize].lock()
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
    // SAFETY: the configuration's pages are monitor frames (the permission maps shared read-only by all cores),
    // made by `prepare` with this run's checked settings; interrupts are off and stay off in root mode.
    let err = unsafe { backend::launch(launch, smp::tss_base()) };
    let error = format!("{err:?}");
    kprintln!("RESULT sandbox_fault sandbox={} reason=launch_failed error={}", cpu_index, error);
    sandbox_finished(cpu_index, 126);
    cpu::halt_forever()
}

extern "C" fn launch_thread(_: u64) -> ! {
    launch_here()
}

/// `RESULT vmexits` and one `RESULT sandbox_refused` line per refused (kind, port/MSR/reason).
fn report_exits(sandbox: u32) {
    let (exits, refusals) = {
        let st = state(sandbox);
        (st.exits, st.refusals.clone())
    };
    let mut line = String::new();
    for k in ExitKind::ALL.iter().filter(|k| exits[k.index()] > 0) {
        line.push_str(&format!(" {}={}", k.name(), exits[k.index()]));
    }
    result!("vmexits", "sandbox={} arch={} total={}{}", sandbox, backend::arch().name(), exits.iter().sum::<u64>(), line);
    for (kind, code, count) in refusals.iter() {
        let what = match kind {
            RefusalKind::Io => format!("port=0x{code:x}"),
            RefusalKind::Msr => format!("msr=0x{code:x}"),
            RefusalKind::Icr => format!("what={}", policy::IcrRefusal::name_of_code(code)),
            RefusalKind::Hypercall => format!("cpl={code}"),
            RefusalKind::Nmi => String::from("vector=2"),
            RefusalKind::Apic => format!("offset=0x{code:x}"),
        };
        result!("sandbox_refused", "sandbox={} kind={} {} count={}", sandbox, kind.name(), what, count);
    }
    if refusals.overflow > 0 {
        result!("sandbox_refused", "sandbox={} kind=other count={}", sandbox, refusals.overflow);
    }
}

fn sandbox_finished(sandbox: u32, status: i32) {
    IN_SERVICE.fetch_and(!bit(sandbox), Ordering::AcqRel);
    WORST_STATUS.fetch_max(status, Ordering::SeqCst);
    result!("sandbox_done", "sandbox={} status={}", sandbox, status);
    if FINISHED.fetch_add(1, Ordering::SeqCst) + 1 == SANDBOXES.load(Ordering::SeqCst) {
        questv_kernel::machine::finish(WORST_STATUS.load(Ordering::SeqCst));
    }
}


/// What the monitor is asked to do (from the kernel command line and the firmware tables).
pub struct MonitorOptions<'a> {
    /// The monitor's part of it: `run`, `slice_mib`, `watchdog_ms`, `apic_passthrough`, `nic_sharers`,
    /// `nic_device_mac`, `recovery`.
    pub cmdline: &'a questv_kernel::cmdline::Options<'a>,
    pub topology: &'a Topology,
    /// What booted the machine ("bios" or "uefi"), for the boot report.
    pub firmware: &'static str,
}

fn bit(sandbox: u32) -> u64 {
    1u64.checked_shl(sandbox).unwrap_or(0)
}

/// Arm the SVM watchdog: the PIT's IRQ 0 routed through the I/O APIC as an NMI to every core, at half the
/// watchdog period (at least 19 Hz: the PIT's divisor is 16 bits). Returns the tick period in microseconds.
fn arm_watchdog_nmi(topology: &Topology, watchdog_ms: u64) -> Result<u64, String> {
    let irq0 = topology.isa_irq(0);
    let io = topology
        .io_apics
        .iter()
        .find(|io| irq0.gsi >= io.gsi_base && irq0.gsi < io.gsi_base + 24)
        .ok_or("no I/O APIC for the PIT's interrupt")?;
    // SAFETY: address from the MADT, inside the uncached identity mapping; only the monitor programs it.
    let ioapic = unsafe { questv_arch::ioapic::IoApic::new(u64::from(io.address), io.id, io.gsi_base) };
    ioapic.route_nmi_broadcast(irq0.gsi - io.gsi_base, irq0.active_low);
    WATCHDOG_NMI.store(true, Ordering::SeqCst);
    Ok(questv_arch::timer::pit_periodic((2000 / watchdog_ms.max(1)).max(19)))
}

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
    let arch = caps.arch();
    let apic = if lapic::is_x2apic() {
        ApicAccess::X2apic
    } else if opts.cmdline.apic_passthrough {
        ApicAccess::XapicPassthrough
    } else {
        ApicAccess::XapicTrapped
    };
    APIC_ACCESS.call_once(|| apic);
    if apic == ApicAccess::XapicPassthrough {
        log::warn!("apic=passthrough: sandboxes write their APIC directly; IPIs are NOT filtered (measurement only)");
    }
    let watchdog_ms = opts.cmdline.watchdog_ms.unwrap_or(0);
    let watchdog_cycles = time::ms_to_cycles(watchdog_ms);
    let settings = match backend::RunSettings::new(caps, (watchdog_ms > 0).then_some(watchdog_cycles)) {
        Ok(s) => s,
        Err(e) => {
            kprintln!("VT: {}", e);
            return 3;
        }
    };
    let (name, setup) = settings.report();
    result!(name, "{}", setup);
    result!("monitor", "arch={} apic={}", arch.name(), apic.name());
    WATCHDOG_CYCLES.store(watchdog_cycles, Ordering::SeqCst);

    // DMA: no sandbox owns a device yet, so no function keeps bus mastering.
    // SAFETY: the monitor is the only user of the PCI configuration ports (never granted to a sandbox) and
    // runs this on the BSP before any sandbox starts.
    let mut pci = unsafe { questv_drivers::pci::PortConfigSpace::new() };
    let grant = match opts.cmdline.nic_sharers {
        Some(list) => match grant_nic(&mut pci, list, opts.cmdline.nic_device_mac, smp::cpus_online(), opts.topology) {
            Ok(g) => Some(g),
            Err(e) => {
                kprintln!("VT: {}", e);
                return 3;
            }
        },
        None => None,
    };
    let owned: Vec<(u8, u8, u8)> = grant.iter().map(|g| g.nic.bdf).collect();
    NIC_GRANT.call_once(|| grant);
    let (functions, cleared) = questv_drivers::pci::disable_bus_mastering_except(&mut pci, &owned);
    result!("pci", "functions={} bus_master_cleared={}", functions, cleared);

    let n = smp::cpus_online();
    let runs = kmem::free_runs(partition::ALIGN);
    let free: Vec<partition::Region> = runs.iter().map(|r| partition::Region { start: r.start, end: r.end }).collect();
    // Keep 16 MiB for the monitor itself (second-stage tables, control blocks, stacks).
    let reserve = 16 << 20;
    let mut free = free;
    if let Some(last) = free.iter_mut().max_by_key(|r| r.end - r.start) {
        last.start = (last.start + reserve).min(last.end);
    }
    let plan = match partition::plan(&free, n, opts.cmdline.slice_mib.map(|m| m << 20), SHARED_SIZE) {
        Ok(p) => p,
        Err(e) => {
            kprintln!("VT: cannot partition memory: {}", e);
            return 3;
        }
    };
    for s in &plan.slices {
        kmem::take_range(Region::new(s.host_base, s.host_base + s.size)).expect("planned slice not free");
    }
    kmem::take_range(Region::new(plan.shared.start, plan.shared.end)).expect("planned shared region not free");
    // SAFETY: the shared region was just taken for this purpose.
    unsafe { core::ptr::write_bytes(plan.shared.start as *mut u8, 0, SHARED_SIZE as usize) };
    SHARED_BASE.store(plan.shared.start, Ordering::SeqCst);
    // SAFETY: the info page is the first page of the zeroed shared region.
    unsafe {
        core::ptr::write_volatile((plan.shared.start + info::MAGIC_OFFSET) as *mut u64, info::MAGIC);
        core::ptr::write_volatile((plan.shared.start + info::VERSION_OFFSET) as *mut u32, info::VERSION);
        core::ptr::write_volatile((plan.shared.start + info::SANDBOXES_OFFSET) as *mut u32, n);
    }
    let policies = match crate::recovery::parse_policies(opts.cmdline.recovery, n) {
        Ok(p) => p,
        Err(e) => {
            kprintln!("VT: {}", e);
            return 3;
        }
    };
    result!("recovery", "policies={}", policies.iter().map(|p| p.name()).collect::<Vec<_>>().join(","));
    STATE.call_once(|| {
        plan.slices
            .iter()
            .map(|s| {
                spin::Mutex::new(Sandbox {
                    host_base: s.host_base,
                    size: s.size,
                    refusals: Refusals::new(),
                    exits: [0; ExitKind::COUNT],
                    icr_high: 0,
                    line: [0; 160],
                    line_len: 0,
                    heartbeat: 0,
                    progress_tsc: 0,
                    policy: policies[s.sandbox as usize],
                    history: History::default(),
                    recovering_since: 0,
                    checkpoints: Default::default(),
                    component: None,
                    read_only: Vec::new(),
                })
            })
            .collect()
    });
    let configs = match prepare(&plan, opts.cmdline.run, settings) {
        Ok(c) => c,
        Err(e) => {
            kprintln!("VT: {}", e);
            return 3;
        }
    };
    LAUNCH.call_once(|| configs);
    SANDBOXES.store(n, Ordering::SeqCst);
    backend::set_exit_handler(on_exit);
    questv_arch::trap::IGNORE_STRAY_NMIS.store(true, Ordering::SeqCst);
    // The watchdog: the VMX-preemption timer (armed in each VMCS), or on SVM, which has none, the PIT's NMI.
    match (watchdog_ms, settings.watchdog_timer()) {
        (0, _) => result!("watchdog", "ms=0 mechanism=off"),
        (_, Some(timer_value)) => result!("watchdog", "ms={} mechanism=preemption_timer timer_value={}", watchdog_ms, timer_value),
        (_, None) => match arm_watchdog_nmi(opts.topology, watchdog_ms) {
            Ok(period_us) => result!("watchdog", "ms={} mechanism=pit_nmi period_us={}", watchdog_ms, period_us),
            Err(e) => {
                kprintln!("VT: cannot arm the watchdog: {}", e);
                return 3;
            }
        },
    }
    result!("boot", "cpus_online={} mode=vt sandboxes={} slice_mib={} role=monitor firmware={}", n, n, plan.slices[0].size >> 20, opts.firmware);
    for c in 1..n {
        sched::spawn_on(c, "launch", launch_thread, 0);
    }
    launch_here()
}
