//! The driver loop: one kernel thread per kernel (SMP kernel or sandbox) on an I/O VCPU runs the e1000's bottom
//! half — read this sharer's new receive descriptors, demultiplex early (`frame::classify`), hand its own frames
//! to smoltcp (ARP, ICMP echo) — and sleeps until the NIC's interrupt or a periodic tick wakes it. The interrupt
//! handler only reads the cause register (lowering the line for everyone), counts, and wakes the thread.

use super::frame::{self, DropReason, Identity, Verdict};
use crate::sched;
use crate::sync::IrqSpinlock;
use crate::vcpu::inherit::{Waiter, Waiters, MAX_WAITERS};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use questv_drivers::e1000::{self, DescMem, Regs, SharedNic};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

/// Where this kernel finds the NIC and which sharer it is.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub mmio: u64,
    pub dma: u64,
    pub index: usize,
    /// Reset and program the NIC (the SMP kernel; in the VT build the monitor does, before any sandbox runs).
    pub initialise: bool,
    /// The monitor's lock claim pages (one per sharer); 0: the claims in the control block (the SMP build).
    pub claims: u64,
}

/// This kernel's view of the shared NIC as `cfg` describes it. In a sandbox the lock claims are the monitor's
/// pages, and a waiter that a holder keeps waiting past the bound tells the monitor, which judges the holder.
pub fn shared_nic(cfg: Config, variant: e1000::Variant) -> SharedNic {
    // SAFETY: whoever called start() mapped the register window (uncached) and the DMA region (write-back) at
    // KERNEL_BASE + their physical addresses, for good.
    let dma = unsafe { DescMem::new(cfg.dma, questv_arch::paging::KERNEL_BASE) };
    let mut nic = SharedNic::new(unsafe { Regs::new(cfg.mmio) }, dma, cfg.index, variant);
    if cfg.claims != 0 {
        let count = crate::sandbox::nic_sharers().max(cfg.index + 1);
        // SAFETY: the monitor maps one claim page per sharer from `claims` into every sharer (this one's own
        // writable, the others' read-only), for good; page-aligned.
        nic.claims = unsafe { e1000::ClaimTable::new(questv_arch::paging::phys_to_virt(cfg.claims), 4096, count) };
        nic.watch = Some(e1000::LockWatch { bound: crate::time::ms_to_cycles(questv_abi::hypercall::NIC_LOCK_BOUND_MS), report: report_stuck });
    }
    nic
}

fn report_stuck(holder: usize) {
    if let Err(e) = crate::sandbox::nic_lock_stuck(holder) {
        log::warn!("net: the monitor refused a stuck-lock report on sharer {holder}: errno {e}");
    }
}

/// I/O VCPU of the bottom half: 20 % of the core (C = 2 ms, T = 10 ms).
const IO_VCPU_BUDGET_US: u64 = 2_000;
const IO_VCPU_PERIOD_US: u64 = 10_000;
/// Own frames queued for the stack at most (more are dropped and counted: the stack is behind).
const RX_QUEUE: usize = 64;
/// Wake the thread every this many timer ticks even without an interrupt (smoltcp's ARP timers).
const TICKS_PER_POLL: u32 = 10;

pub struct Stats {
    pub up: AtomicBool,
    pub stop: AtomicBool,
    pub ip: AtomicU32,
    pub mac: AtomicU64,
    pub irqs: AtomicU64,
    pub rx_slots: AtomicU64,
    pub rx_mine: AtomicU64,
    /// Of those, ICMP (echo requests): the fault-injection hook's "after the Nth ping".
    pub rx_icmp: AtomicU64,
    pub rx_not_mine: AtomicU64,
    pub rx_bad_slot: AtomicU64,
    pub rx_queue_full: AtomicU64,
    pub drops: [AtomicU64; DropReason::ALL.len()],
    pub tx_frames: AtomicU64,
    pub tx_errors: AtomicU64,
    pub polls: AtomicU64,
    /// Audits this sharer asked the monitor for (its look at the rings found something off).
    pub ring_audits: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

pub static STATS: Stats = Stats {
    up: AtomicBool::new(false),
    stop: AtomicBool::new(false),
    ip: AtomicU32::new(0),
    mac: AtomicU64::new(0),
    irqs: ZERO,
    rx_slots: ZERO,
    rx_icmp: ZERO,
    rx_mine: ZERO,
    rx_not_mine: ZERO,
    rx_bad_slot: ZERO,
    rx_queue_full: ZERO,
    drops: [ZERO; DropReason::ALL.len()],
    tx_frames: ZERO,
    tx_errors: ZERO,
    polls: ZERO,
    ring_audits: ZERO,
};

/// NIC interrupts taken per CPU (the SMP build routes them to CPU 0; a sandbox has one CPU).
pub static IRQS_PER_CPU: [AtomicU64; 8] = [ZERO; 8];

/// The NIC's register window, for the interrupt handler (0 = no NIC).
static MMIO: AtomicU64 = AtomicU64::new(0);
/// The driver thread's id + 1 (0 = none).
static THREAD: AtomicU64 = AtomicU64::new(0);
static TICKS: AtomicU32 = AtomicU32::new(0);
/// Threads blocked in [`wait_stop`]: the driver's I/O VCPU works for them, at the most urgent one's priority.
static WAITERS: IrqSpinlock<Waiters> = IrqSpinlock::new(Waiters::new());
/// The driver's I/O VCPU (on CPU 0, where the driver thread runs); u32::MAX: none.
static IO_VCPU: AtomicU32 = AtomicU32::new(u32::MAX);
const DRIVER_CPU: u32 = 0;

/// Start the driver thread on this kernel's CPU 0. The NIC and its DMA region must be mapped.
pub fn start(cfg: Config) {
    MMIO.store(cfg.mmio, Ordering::SeqCst);
    let arg = Box::into_raw(Box::new(cfg)) as u64;
    let id = sched::spawn_on(DRIVER_CPU, "net", driver_thread, arg);
    THREAD.store(id + 1, Ordering::SeqCst);
}

/// Was a NIC given to this kernel (even if it failed to come up)?
pub fn configured() -> bool {
    MMIO.load(Ordering::Acquire) != 0
}

/// Wake the driver thread (the fault-injection hook's request must not wait for the next frame).
pub fn poke() {
    wake_driver();
}

fn wake_driver() {
    let t = THREAD.load(Ordering::Acquire);
    if t != 0 {
        sched::wake(t - 1);
    }
}

/// The NIC's interrupt (on every sharer: the I/O APIC delivers it to all of them). Reading ICR clears the
/// causes and lowers the line; each sharer then scans the ring for its own frames.
pub fn interrupt() {
    STATS.irqs.fetch_add(1, Ordering::Relaxed);
    let cpu = questv_arch::percpu::cpu_index() as usize;
    if let Some(c) = IRQS_PER_CPU.get(cpu) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    let mmio = MMIO.load(Ordering::Acquire);
    if mmio != 0 {
        // SAFETY: MMIO holds the NIC's register window, mapped uncached (start()'s contract).
        let regs = unsafe { Regs::new(mmio) };
        let _ = regs.read(e1000::reg::ICR);
    }
    questv_arch::lapic::eoi();
    wake_driver();
}

/// The timer tick: poll now and then without interrupts, and end the [`wait_stop`]s whose time is up.
pub fn tick() {
    if THREAD.load(Ordering::Relaxed) != 0 && TICKS.fetch_add(1, Ordering::Relaxed) % TICKS_PER_POLL == 0 {
        wake_driver();
    }
    let mut due = [0u64; MAX_WAITERS];
    let mut n = 0;
    {
        let w = WAITERS.lock();
        if w.is_empty() {
            return;
        }
        for t in w.due(questv_arch::cpu::rdtsc(), STATS.stop.load(Ordering::Acquire)) {
            due[n] = t;
            n += 1;
        }
    }
    // Woken outside the lock: the scheduler's lock is always taken after this one, never before.
    for &t in &due[..n] {
        sched::wake(t);
    }
}

/// Too many threads wait on the network already ([`MAX_WAITERS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyWaiters;

/// Block until the host peer's stop marker arrives (true) or `timeout_ms` passes (false). While the caller
/// waits, the driver's I/O VCPU runs at the priority of the most urgent waiter's Main VCPU.
pub fn wait_stop(timeout_ms: u64) -> Result<bool, TooManyWaiters> {
    let deadline = questv_arch::cpu::rdtsc().saturating_add(crate::time::ms_to_cycles(timeout_ms));
    let me = sched::current_id();
    let period = sched::current_vcpu_period();
    {
        let mut w = WAITERS.lock();
        w.add(Waiter { thread: me, period, deadline }).map_err(|_| TooManyWaiters)?;
        set_driver_priority(&w);
    }
    while !STATS.stop.load(Ordering::Acquire) && questv_arch::cpu::rdtsc() < deadline {
        sched::block();
    }
    let mut w = WAITERS.lock();
    w.remove(me);
    set_driver_priority(&w);
    Ok(STATS.stop.load(Ordering::Acquire))
}

/// The driver's I/O VCPU takes the waiters' inherited period (called with the table locked, so two changes
/// cannot reach the scheduler in the wrong order).
fn set_driver_priority(w: &Waiters) {
    let io = IO_VCPU.load(Ordering::Acquire);
    if io != u32::MAX {
        if let Err(e) = sched::vcpu_inherit_on(DRIVER_CPU, io, w.inherited_period()) {
            log::warn!("net: I/O VCPU {io} cannot inherit: {e:?}");
        }
    }
}

fn now() -> Instant {
    Instant::from_micros(crate::time::cycles_to_us(questv_arch::cpu::rdtsc()) as i64)
}

/// smoltcp's view of the NIC: frames this sharer's demultiplexer kept, and transmission into the shared ring.
struct Port<'a> {
    nic: &'a SharedNic,
    rx: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a SharedNic);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = [0u8; e1000::MAX_FRAME];
        let len = len.min(buf.len());
        let r = f(&mut buf[..len]);
        match self.0.transmit(&buf[..len]) {
            Ok(()) => STATS.tx_frames.fetch_add(1, Ordering::Relaxed),
            Err(_) => STATS.tx_errors.fetch_add(1, Ordering::Relaxed),
        };
        r
    }
}

impl Device for Port<'_> {
    type RxToken<'b> = Rx where Self: 'b;
    type TxToken<'b> = Tx<'b> where Self: 'b;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let f = self.rx.pop_front()?;
        Some((Rx(f), Tx(self.nic)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(self.nic))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = e1000::MAX_FRAME;
        c
    }
}

/// The configuration the driver runs with (kept for the driver switch, which starts it again).
static CONFIG: spin::Once<Config> = spin::Once::new();
/// Where this kernel's NIC is, once its driver runs (the attack tests aim its descriptors themselves).
pub fn config() -> Option<Config> {
    CONFIG.get().copied()
}

/// Driver switches so far (component-level recoveries of this kernel's NIC driver).
pub static DRIVER_SWITCHES: AtomicU64 = AtomicU64::new(0);
/// Set by the fault-injection hook: the driver thread itself faults (kind index) at its next pass.
pub static INJECT_DRIVER_FAULT: AtomicU32 = AtomicU32::new(0);

extern "C" fn driver_thread(arg: u64) -> ! {
    // SAFETY: `start` leaked exactly this box for this thread.
    let cfg = *unsafe { Box::from_raw(arg as *mut Config) };
    CONFIG.call_once(|| cfg);
    match sched::vcpu_create(crate::vcpu::Class::Io, IO_VCPU_BUDGET_US, IO_VCPU_PERIOD_US) {
        Ok(io) => {
            let _ = sched::vcpu_bind(io);
            IO_VCPU.store(io, Ordering::Release);
            log::info!("net: bottom half on I/O VCPU {io} ({IO_VCPU_BUDGET_US} us / {IO_VCPU_PERIOD_US} us)");
        }
        Err(e) => log::warn!("net: no I/O VCPU ({e:?}); the bottom half runs on the default VCPU"),
    }
    if crate::sandbox::id().is_some() {
        // The driver is this sandbox's recoverable component: a fault on this thread's stack is the driver's
        // (recovery=driver). The range is the stack's whole allocation, not "below the stack pointer here":
        // with the driver's code inlined into this function, the registering call itself runs at this very
        // stack pointer, which the monitor checks lies in the range.
        let Some((low, high)) = sched::current_stack() else { unreachable!("the driver thread has its own stack") };
        if let Err(e) = crate::sandbox::register_component(driver_recovery_entry as *const () as u64, low, high) {
            log::warn!("net: the monitor refused the driver's registration (error {e})");
        }
    }
    run_driver(cfg, e1000::Variant::Fast, false)
}

/// Where the monitor resumes this sandbox after a fault in the driver (the driver switch): on a fresh stack,
/// interrupts off, on the driver thread (the scheduler still runs it). Everything the faulted driver held on
/// its stack is abandoned; the NIC is not reset: the conservative driver rejoins the shared ring.
extern "C" fn driver_recovery_entry() -> ! {
    let n = DRIVER_SWITCHES.fetch_add(1, Ordering::SeqCst) + 1;
    INJECT_DRIVER_FAULT.store(0, Ordering::SeqCst);
    // SAFETY: this CPU's IDT, APIC and scheduler are up (the sandbox ran before the fault).
    unsafe { questv_arch::cpu::enable_interrupts() };
    crate::result!("net_driver_switch", "sandbox={} switches={} variant=conservative", crate::sandbox::id().unwrap_or(0), n);
    let Some(&cfg) = CONFIG.get() else { sched::exit() };
    run_driver(cfg, e1000::Variant::Conservative, true)
}

/// Bring the driver up (`switched`: after a driver switch — the NIC is running, so rejoin) and serve.
fn run_driver(cfg: Config, variant: e1000::Variant, switched: bool) -> ! {
    let t_start = questv_arch::cpu::rdtsc();
    let nic = shared_nic(cfg, variant);
    join_nic(&nic, cfg, switched);
    let mut serving = Serving::new(&nic, cfg, switched);
    STATS.up.store(true, Ordering::Release);
    let (ip, mac) = (serving.ident.ip, serving.ident.mac);
    crate::result!(
        "net_up",
        "ok=1 sharer={} ip={}.{}.{}.{} mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} link={} initialised={}",
        cfg.index, ip[0], ip[1], ip[2], ip[3], mac[0], mac[1], mac[2], mac[3], mac[4], mac[5],
        u8::from(nic.regs.link_up()), u8::from(cfg.initialise)
    );
    if switched {
        let cycles = questv_arch::cpu::rdtsc() - t_start;
        crate::result!("net_driver_reinit", "sandbox={} variant=conservative reinit_cycles={}", crate::sandbox::id().unwrap_or(0), cycles);
        // Back in service: the monitor reports the downtime since the fault.
        crate::sandbox::booted();
    }
    loop {
        STATS.polls.fetch_add(1, Ordering::Relaxed);
        let inject = INJECT_DRIVER_FAULT.swap(0, Ordering::SeqCst);
        if inject != 0 {
            // A broken driver, on the driver's own thread (the fault-injection hook asked for it).
            crate::hooks::driver_fault(inject);
        }
        let slots = serving.pass();
        // A full lap may have left more: go round again before sleeping.
        if slots == 0 && serving.port.rx.is_empty() && !TAKEOVER_PENDING.load(Ordering::Acquire) {
            sched::block();
        }
    }
}

/// Take part in the shared NIC: program it (the SMP kernel), or wait (bounded) until it is ready — in a sandbox
/// the monitor programmed it before any sandbox ran and says so in the info page; after a recovery, rejoin the
/// ring where the others are. Exits the thread on failure.
fn join_nic(nic: &SharedNic, cfg: Config, switched: bool) {
    if cfg.initialise && !switched {
        if let Err(e) = nic.initialise(core::hint::spin_loop) {
            log::error!("net: {e}");
            crate::result!("net_up", "ok=0 error={:?}", e);
            sched::exit();
        }
    } else {
        let start = questv_arch::cpu::rdtsc();
        let hz = crate::time::tsc_hz();
        loop {
            let state = nic_state(nic);
            if state == e1000::STATE_READY {
                break;
            }
            if state == e1000::STATE_FAILED || questv_arch::cpu::rdtsc() - start > 30 * hz {
                crate::result!("net_up", "ok=0 error=\"the NIC was not programmed\"");
                sched::exit();
            }
            sched::yield_now();
        }
    }
    // Causes raised before this sharer listened (the link coming up after the monitor programmed the NIC)
    // hold the line up; the I/O APIC entry is edge triggered, so nothing would arrive until they are read.
    let _ = nic.interrupt_causes();
    if switched || (!cfg.initialise && crate::sandbox::incarnation() > 0) {
        // Recovered: the NIC and the other sharers kept running; take part in the ring again where they are.
        let cursor = nic.rejoin();
        log::info!("net: rejoined the shared NIC at receive descriptor {cursor}");
    }
}

/// The NIC's state (`e1000::STATE_*`): in a sandbox from the monitor's info page (no sharer can write it), in
/// the SMP build from the control block this kernel fills itself.
fn nic_state(nic: &SharedNic) -> u32 {
    use questv_abi::hypercall::info;
    match crate::sandbox::nic_state() {
        Some(info::NIC_READY) => e1000::STATE_READY,
        Some(info::NIC_FAILED) => e1000::STATE_FAILED,
        Some(_) => e1000::STATE_UNSET,
        None => nic.mem.control().state.load(Ordering::Acquire),
    }
}

/// Sharer `j`'s addresses: in a sandbox from the monitor's info page, which no sharer can write (so none can
/// rewrite another's identity, nor the one a takeover target adopts); in the SMP build from the control block.
fn identity(nic: &SharedNic, j: usize) -> Identity {
    if crate::sandbox::id().is_some() {
        let (mac, ip) = crate::sandbox::nic_identity(j).unwrap_or(([0; 6], [0; 4]));
        return Identity { mac, ip };
    }
    let control = nic.mem.control();
    let j = j.min(e1000::MAX_SHARERS - 1);
    Identity { mac: e1000::mac_from_u64(control.macs[j].load(Ordering::Acquire)), ip: control.ips[j].load(Ordering::Acquire).to_be_bytes() }
}

/// A smoltcp interface with `ident`'s addresses on `port`.
fn new_interface(port: &mut Port<'_>, ident: &Identity) -> Interface {
    let mut config = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(ident.mac)));
    config.random_seed = questv_arch::cpu::rdtsc();
    let mut iface = Interface::new(config, port, now());
    let ip = ident.ip;
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), super::SUBNET_PREFIX));
    });
    iface
}

/// The driver's state while it serves: its identity on the shared NIC, its smoltcp interface, the peers it
/// knows (checkpointed for stateful recovery) and the sharers it took over.
struct Serving<'a> {
    nic: &'a SharedNic,
    me: usize,
    ident: Identity,
    port: Port<'a>,
    iface: Interface,
    sockets: SocketSet<'static>,
    buf: Box<[u8; e1000::BUF_SIZE]>,
    neighbors: frame::Neighbors,
    adopted: Vec<Adopted<'a>>,
    in_sandbox: bool,
    /// When to look at the ring registers, and when to ask the monitor for an audit (sandboxes only).
    watch: e1000::RingWatch,
}

/// How often a sharer looks at the ring registers it can reach (reads only), and how long after asking the
/// monitor for an audit it waits before asking again.
const RING_LOOK_MS: u64 = 5;
const RING_REPORT_BACKOFF_MS: u64 = 50;

impl<'a> Serving<'a> {
    fn new(nic: &'a SharedNic, cfg: Config, switched: bool) -> Self {
        let me = cfg.index.min(e1000::MAX_SHARERS - 1);
        let ident = identity(nic, me);
        let (mac, ip) = (ident.mac, ident.ip);
        STATS.ip.store(u32::from_be_bytes(ip), Ordering::Release);
        STATS.mac.store(e1000::mac_to_u64(mac), Ordering::Release);
        let mut port = Port { nic, rx: VecDeque::new() };
        let in_sandbox = crate::sandbox::id().is_some();
        let neighbors = if in_sandbox && (switched || crate::sandbox::incarnation() > 0) {
            restore_neighbors(&mut port, &ident)
        } else {
            frame::Neighbors::default()
        };
        let iface = new_interface(&mut port, &ident);
        Serving {
            nic,
            me,
            ident,
            port,
            iface,
            sockets: SocketSet::new(Vec::new()),
            buf: Box::new([0u8; e1000::BUF_SIZE]),
            neighbors,
            adopted: Vec::new(),
            in_sandbox,
            watch: e1000::RingWatch::new(),
        }
    }

    /// One pass: adopt newly taken-over sharers, read the ring, checkpoint new peers, let smoltcp answer.
    /// Returns the receive slots read.
    fn pass(&mut self) -> u32 {
        if TAKEOVER_PENDING.swap(false, Ordering::AcqRel) {
            adopt_taken_over(self.nic, &mut self.adopted, self.me);
        }
        self.watch_rings();
        let (slots, learned, for_adopted) = self.receive();
        STATS.rx_slots.fetch_add(u64::from(slots), Ordering::Relaxed);
        if learned && self.in_sandbox && crate::sandbox::recoverable() {
            // Only when the table changed and the monitor recovers this sandbox: one hypercall per new peer,
            // none in the steady state (and none at all without recovery: the packet path stays exit-free).
            let _ = crate::sandbox::checkpoint(questv_abi::hypercall::SLOT_NET, &self.neighbors.encode());
        }
        self.iface.poll(now(), &mut self.port, &mut self.sockets);
        for (k, f) in for_adopted {
            if self.adopted[k].port.rx.len() < RX_QUEUE {
                self.adopted[k].port.rx.push_back(f);
            }
        }
        for a in self.adopted.iter_mut() {
            a.iface.poll(now(), &mut a.port, &mut a.sockets);
        }
        slots
    }

    /// The rings are shared with sharers that may be hostile: now and then check what of them this sharer can
    /// reach — the ring registers (as the layout gives them), and whether its cursor stands at a slot the NIC
    /// passed without writing — and if something is off, have the monitor audit and put it right (an exit,
    /// only then; none in the steady state).
    fn watch_rings(&mut self) {
        if !self.in_sandbox {
            return;
        }
        let now = questv_arch::cpu::rdtsc();
        if !self.watch.due(now, crate::time::ms_to_cycles(RING_LOOK_MS)) {
            return;
        }
        let wrong = self.nic.ring_registers_wrong();
        let hole = self.nic.rx_cursor_at_hole().then(|| self.nic.mem.control().rx_cursor[self.me].load(Ordering::Acquire));
        if self.watch.judge(now, wrong.is_some(), hole, crate::time::ms_to_cycles(RING_REPORT_BACKOFF_MS)) {
            STATS.ring_audits.fetch_add(1, Ordering::Relaxed);
            if let Some((offset, value)) = wrong {
                crate::kprintln!("net: ring register {} reads 0x{:x}: asking the monitor to audit", e1000::register_name(offset), value);
            }
            let _ = crate::sandbox::nic_audit();
        }
    }

    /// Read this sharer's new receive descriptors and demultiplex early: own frames to the stack's queue,
    /// frames of an adopted sharer to its own (returned with its index), everything else counted. Returns the
    /// slots read, whether a new peer was learned, and the adopted sharers' frames.
    fn receive(&mut self) -> (u32, bool, Vec<(usize, Vec<u8>)>) {
        let rx = &mut self.port.rx;
        let (ident, neighbors) = (&self.ident, &mut self.neighbors);
        let adopted_idents: Vec<Identity> = self.adopted.iter().map(|a| a.ident).collect();
        let mut for_adopted: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut learned = false;
        let slots = self.nic.receive(
            &mut self.buf,
            |f| match frame::classify(f, ident) {
                Verdict::NotMine if !adopted_idents.is_empty() => {
                    // Remote recovery: a sharer this kernel took over may own it.
                    match adopted_idents.iter().position(|i| frame::classify(f, i) == Verdict::Mine) {
                        Some(k) => {
                            STATS.rx_mine.fetch_add(1, Ordering::Relaxed);
                            for_adopted.push((k, f.to_vec()));
                        }
                        None => {
                            STATS.rx_not_mine.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Verdict::Mine => {
                    STATS.rx_mine.fetch_add(1, Ordering::Relaxed);
                    if f.len() > 14 && f[12..14] == frame::ETHERTYPE_IPV4.to_be_bytes() {
                        // Only valid ICMP reaches here as IPv4 "mine" (frame::classify): an echo request.
                        STATS.rx_icmp.fetch_add(1, Ordering::Relaxed);
                        learned |= neighbors.learn(f);
                    }
                    if rx.len() < RX_QUEUE {
                        rx.push_back(f.to_vec());
                    } else {
                        STATS.rx_queue_full.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Verdict::NotMine => {
                    STATS.rx_not_mine.fetch_add(1, Ordering::Relaxed);
                }
                Verdict::Stop => {
                    STATS.stop.store(true, Ordering::Release);
                }
                Verdict::Drop(r) => {
                    STATS.drops[r.index()].fetch_add(1, Ordering::Relaxed);
                }
            },
            |_| {
                STATS.rx_bad_slot.fetch_add(1, Ordering::Relaxed);
            },
        );
        (slots, learned, for_adopted)
    }
}

/// Stateful recovery (VT): the peers the previous incarnation knew come back from the monitor's checkpoint and
/// are replayed to smoltcp as ARP replies (queued on `port`), so the first reply to each is not lost to an
/// ARP round trip.
fn restore_neighbors(port: &mut Port<'_>, ident: &Identity) -> frame::Neighbors {
    let mut saved = [0u8; frame::Neighbors::MAX * 10];
    let Ok(n) = crate::sandbox::restore(questv_abi::hypercall::SLOT_NET, &mut saved) else {
        return frame::Neighbors::default();
    };
    let neighbors = frame::Neighbors::decode(&saved[..n.min(saved.len())]);
    for &peer in &neighbors.entries {
        port.rx.push_back(frame::arp_reply_frame(peer, ident).to_vec());
    }
    crate::result!("net_restored", "sandbox={} neighbors={}", crate::sandbox::id().unwrap_or(0), neighbors.entries.len());
    neighbors
}

/// Remote recovery: the monitor asked this kernel (its takeover vector) to serve another sharer's address.
static TAKEOVER_PENDING: AtomicBool = AtomicBool::new(false);

/// The takeover vector's handler: note it, wake the driver.
pub fn takeover_interrupt() {
    TAKEOVER_PENDING.store(true, Ordering::Release);
    questv_arch::lapic::eoi();
    wake_driver();
}

/// Another sharer's network service, taken over after its sandbox faulted (remote recovery): its IP and MAC,
/// its own smoltcp interface, fed from this kernel's pass over the shared ring.
struct Adopted<'a> {
    ident: Identity,
    port: Port<'a>,
    iface: Interface,
    sockets: SocketSet<'static>,
}

/// Serve every sharer the monitor's info page lists for this sandbox that is not served yet.
fn adopt_taken_over<'a>(nic: &'a SharedNic, adopted: &mut Vec<Adopted<'a>>, me: usize) {
    use questv_abi::hypercall::info;
    let (Some(shared), Some(sandbox)) = (crate::sandbox::shared_region(), crate::sandbox::id()) else { return };
    if u64::from(sandbox) >= info::MAX_SANDBOXES {
        return;
    }
    // SAFETY: the info page is mapped read-only for good; the slot is a u32 only the monitor writes.
    let mask = unsafe { core::ptr::read_volatile((shared + info::TAKEOVERS_OFFSET + 4 * u64::from(sandbox)) as *const u32) };
    for j in (0..e1000::MAX_SHARERS).filter(|&j| j != me && mask & (1 << j) != 0) {
        let ident = identity(nic, j);
        let (mac, ip) = (ident.mac, ident.ip);
        if adopted.iter().any(|a| a.ident == ident) {
            continue;
        }
        let mut port = Port { nic, rx: VecDeque::new() };
        let iface = new_interface(&mut port, &ident);
        crate::result!(
            "net_takeover",
            "sandbox={} sharer={} ip={}.{}.{}.{} mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            sandbox, j, ip[0], ip[1], ip[2], ip[3], mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
        );
        adopted.push(Adopted { ident, port, iface, sockets: SocketSet::new(Vec::new()) });
    }
}

pub const INFO_WORDS: usize = 32;

/// Statistics for the `net` system call / `netserve`, in a fixed order (see libc-shim `net::Info`).
pub fn info() -> [u64; INFO_WORDS] {
    let s = &STATS;
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = [0u64; INFO_WORDS];
    out[0] = u64::from(s.up.load(Ordering::Acquire));
    out[1] = u64::from(s.ip.load(Ordering::Acquire));
    out[2] = s.mac.load(Ordering::Acquire);
    out[3] = l(&s.irqs);
    out[4] = l(&s.rx_slots);
    out[5] = l(&s.rx_mine);
    out[6] = l(&s.rx_not_mine);
    out[7] = l(&s.rx_bad_slot);
    out[8] = l(&s.rx_queue_full);
    out[9] = l(&s.tx_frames);
    out[10] = l(&s.tx_errors);
    out[11] = l(&s.polls);
    out[12] = u64::from(s.stop.load(Ordering::Acquire));
    for (i, d) in s.drops.iter().enumerate() {
        out[13 + i] = l(d);
    }
    for (i, c) in IRQS_PER_CPU.iter().enumerate() {
        out[22 + i] = l(c);
    }
    out
}
