//! This kernel as a VT sandbox (guest side): its identity, what the monitor told it on the command line, and
//! the hypercalls it makes. The ABI (numbers, arguments, errors, shared addresses) is `questv_abi::hypercall`,
//! which the monitor (vmx/src/monitor/) imports too; so are the boot arguments this kernel reads
//! (`questv_abi::boot`).

use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use questv_arch::cpu;
use questv_arch::paging::{phys_to_virt, virt_to_phys};
use questv_abi::hypercall as hc;

static ID: AtomicI32 = AtomicI32::new(-1);
static INCARNATION: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
/// The monitor recovers this sandbox (its `recovery=` is not `none`): only then do the kernel's own services
/// checkpoint state (a checkpoint is a hypercall, an exit).
static RECOVERABLE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
static SHARED: AtomicU64 = AtomicU64::new(0);
/// Attack-test targets (host-physical), present only when the run is an attack test.
static ATTACK_TARGETS: spin::Once<AttackTargets> = spin::Once::new();

pub use questv_abi::boot::AttackTargets;

/// Record what the monitor passed on the command line (boot calls this once, before anything prints).
pub(crate) fn init(args: &questv_abi::boot::SandboxArgs) {
    ID.store(args.sandbox as i32, Ordering::SeqCst);
    INCARNATION.store(args.incarnation, Ordering::SeqCst);
    RECOVERABLE.store(args.recovery.is_some(), Ordering::SeqCst);
    SHARED.store(args.shared, Ordering::SeqCst);
    if let Some(attack) = args.attack {
        ATTACK_TARGETS.call_once(|| attack);
    }
}

/// The sandbox number when this kernel runs as a VT sandbox.
pub fn id() -> Option<u32> {
    u32::try_from(ID.load(Ordering::Relaxed)).ok()
}

/// Where this kernel reads the shared region (the info page first), if any: its guest-physical address (the
/// boot argument) through the kernel's mapping of physical memory.
pub fn shared_region() -> Option<u64> {
    Some(SHARED.load(Ordering::Relaxed)).filter(|&a| a != 0).map(phys_to_virt)
}

/// Will the monitor recover this sandbox if it faults?
pub fn recoverable() -> bool {
    RECOVERABLE.load(Ordering::Relaxed)
}

/// How many times the monitor has recovered this sandbox (0: its first boot).
pub fn incarnation() -> u32 {
    INCARNATION.load(Ordering::Relaxed)
}

/// The reset counter the monitor publishes for the channel at `base` (None outside VT or if the directory does
/// not list it): it moves when the channel was wiped because an endpoint was recovered.
pub fn channel_resets(base: u64) -> Option<&'static core::sync::atomic::AtomicU32> {
    use hc::info;
    let shared = shared_region()?;
    // SAFETY: the shared region is mapped read-only for every sandbox for good; the layout is the ABI's (`info`).
    unsafe {
        let count = (*((shared + info::CHANNEL_COUNT_OFFSET) as *const core::sync::atomic::AtomicU32)).load(Ordering::Acquire);
        (0..u64::from(count).min(info::MAX_CHANNELS)).find_map(|i| {
            let addr = core::ptr::read_volatile((shared + info::CHANNEL_DIR_OFFSET + info::CHANNEL_DIR_ENTRY * i + 8) as *const u64);
            (addr == base).then(|| &*((shared + info::CHANNEL_RESETS_OFFSET + 4 * i) as *const core::sync::atomic::AtomicU32))
        })
    }
}

/// How many sandboxes the monitor runs (the info page's count; 0 outside VT).
pub fn count() -> u32 {
    shared_region().map_or(0, |shared| {
        // SAFETY: the info page is mapped read-only in every sandbox for good; the layout is the ABI's.
        unsafe { core::ptr::read_volatile((shared + hc::info::SANDBOXES_OFFSET) as *const u32) }
    })
}

/// The shared NIC's state as the monitor published it (`info::NIC_*`; None outside VT).
pub fn nic_state() -> Option<u32> {
    shared_region().map(|shared| {
        // SAFETY: the info page is mapped read-only in every sandbox for good; the layout is the ABI's.
        unsafe { (*((shared + hc::info::NIC_STATE_OFFSET) as *const core::sync::atomic::AtomicU32)).load(Ordering::Acquire) }
    })
}

/// How many sandboxes share the NIC (the info page's count; 0 outside VT or without a NIC).
pub fn nic_sharers() -> usize {
    shared_region().map_or(0, |shared| {
        // SAFETY: as in nic_state.
        let n = unsafe { core::ptr::read_volatile((shared + hc::info::NIC_SHARERS_OFFSET) as *const u32) };
        (n as usize).min(hc::info::NIC_MAX_SHARERS as usize)
    })
}

/// Sharer `j`'s MAC and IPv4 address as the monitor programmed them into the NIC (None outside VT or beyond the
/// sharers). They come from the info page, which no sandbox can write: no sharer can change another's identity.
pub fn nic_identity(j: usize) -> Option<([u8; 6], [u8; 4])> {
    use hc::info;
    let shared = shared_region()?;
    // SAFETY: as in nic_state; j is checked against the published count, which is at most NIC_MAX_SHARERS.
    unsafe {
        let n = core::ptr::read_volatile((shared + info::NIC_SHARERS_OFFSET) as *const u32);
        if j as u64 >= u64::from(n).min(info::NIC_MAX_SHARERS) {
            return None;
        }
        let mac = core::ptr::read_volatile((shared + info::NIC_MACS_OFFSET + 8 * j as u64) as *const u64).to_le_bytes();
        let ip = core::ptr::read_volatile((shared + info::NIC_IPS_OFFSET + 4 * j as u64) as *const u32);
        Some(([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]], ip.to_be_bytes()))
    }
}

/// Does the info page's directory list the channel between `x` and `y` with memory (both ends opened it)?
pub fn channel_listed(x: u32, y: u32) -> bool {
    use hc::info;
    let Some(shared) = shared_region() else { return false };
    let key = (x.min(y), x.max(y));
    // SAFETY: as in channel_resets: the info page is mapped read-only for good; the layout is the ABI's.
    unsafe {
        let count = (*((shared + info::CHANNEL_COUNT_OFFSET) as *const core::sync::atomic::AtomicU32)).load(Ordering::Acquire);
        (0..u64::from(count).min(info::MAX_CHANNELS)).any(|i| {
            let entry = shared + info::CHANNEL_DIR_OFFSET + info::CHANNEL_DIR_ENTRY * i;
            let (a, b) = (core::ptr::read_volatile(entry as *const u32), core::ptr::read_volatile((entry + 4) as *const u32));
            (a, b) == key && core::ptr::read_volatile((entry + 8) as *const u64) != 0
        })
    }
}

/// The count of channel notifications this sandbox's handler took, which the monitor reads to deliver at most
/// one pending notification (`hc::NOTIFY_ACK_GPA`).
fn notify_acks() -> &'static core::sync::atomic::AtomicU64 {
    // SAFETY: NOTIFY_ACK_GPA is in this sandbox's reserved heartbeat page (never allocated), mapped, 8-byte
    // aligned; only this kernel writes it.
    unsafe { &*(phys_to_virt(hc::NOTIFY_ACK_GPA) as *const core::sync::atomic::AtomicU64) }
}

/// A channel notification arrived: acknowledge it to the monitor (before the receiver looks at its rings).
pub fn notification_taken() {
    if id().is_some() {
        notify_acks().fetch_add(1, Ordering::AcqRel);
    }
}

/// Channel notifications this sandbox took so far (0 outside VT).
pub fn notifications_taken() -> u64 {
    if id().is_some() { notify_acks().load(Ordering::Acquire) } else { 0 }
}

pub fn attack_targets() -> Option<AttackTargets> {
    ATTACK_TARGETS.get().copied()
}

/// Timer tick: tell the monitor's watchdog this sandbox makes progress.
pub fn heartbeat() {
    if id().is_some() {
        let cpu = u64::from(questv_arch::percpu::cpu_index()).min(63);
        // SAFETY: HEARTBEAT_GPA's page is a reserved page of this sandbox (never allocated), mapped; the CPU's
        // own word (CPU_HEARTBEAT_GPA + 8 cpu) lies in it and only this CPU writes it.
        unsafe {
            let p = phys_to_virt(hc::HEARTBEAT_GPA) as *mut u64;
            core::ptr::write_volatile(p, core::ptr::read_volatile(p).wrapping_add(1));
            let own = phys_to_virt(hc::CPU_HEARTBEAT_GPA + 8 * cpu) as *mut u64;
            core::ptr::write_volatile(own, core::ptr::read_volatile(own).wrapping_add(1));
        }
    }
}

fn call(nr: u64, a: u64, b: u64) -> Result<u64, i64> {
    hc::decode(cpu::vmcall(nr, a, b))
}

/// Print bytes through the monitor (which owns the UART). `bytes` must be in the kernel's mapping of physical
/// memory (so its guest-physical address is its address minus KERNEL_BASE), as every kernel buffer is.
pub fn console_write(bytes: &[u8]) {
    for chunk in bytes.chunks(hc::CONSOLE_MAX as usize) {
        // -EAGAIN: this sandbox's console queue in the monitor is full (it prints faster than the UART takes);
        // each retry is an exit that drains it. Given up after many, so a stuck console cannot hang a kernel.
        for _ in 0..1_000_000 {
            if call(hc::CONSOLE_WRITE, virt_to_phys(chunk.as_ptr() as u64), chunk.len() as u64) != Err(hc::EAGAIN) {
                break;
            }
            core::hint::spin_loop();
        }
    }
}

/// Console input the monitor holds for this sandbox, into `buf` (a kernel buffer, as for `console_write`);
/// how many bytes.
pub fn console_read(buf: &mut [u8]) -> usize {
    let len = buf.len().min(hc::CONSOLE_MAX as usize) as u64;
    call(hc::CONSOLE_READ, virt_to_phys(buf.as_mut_ptr() as u64), len).map_or(0, |n| (n as usize).min(buf.len()))
}

/// This sandbox's VM exits so far (this query included).
pub fn exit_count() -> u64 {
    call(hc::EXIT_COUNT, 0, 0).unwrap_or(0)
}

pub fn channel_open(peer: u32) -> Result<u64, i64> {
    call(hc::CHANNEL_OPEN, u64::from(peer), 0).map_err(|e| -e)
}

pub fn channel_close(peer: u32) -> Result<(), i64> {
    call(hc::CHANNEL_CLOSE, u64::from(peer), 0).map(|_| ()).map_err(|e| -e)
}

/// Tell the monitor this NIC sharer has waited too long for sharer `holder`'s lock claim (it judges).
pub fn nic_lock_stuck(holder: usize) -> Result<(), i64> {
    call(hc::NIC_LOCK_STUCK, holder as u64, 0).map(|_| ()).map_err(|e| -e)
}

/// Ask the monitor to audit the NIC's ring registers and rings (this sharer's own look found something off).
/// Whether the monitor found something.
pub fn nic_audit() -> Result<bool, i64> {
    call(hc::NIC_AUDIT, 0, 0).map(|r| r != 0).map_err(|e| -e)
}

pub fn peer_apic(peer: u32) -> Result<u32, i64> {
    call(hc::PEER_APIC, u64::from(peer), 0).map(|a| a as u32).map_err(|e| -e)
}

/// Register the recoverable component (the NIC driver): its recovery entry and its thread's stack (kernel
/// virtual addresses: the monitor resumes the sandbox there on its own page tables).
pub fn register_component(entry: u64, stack_low: u64, stack_high: u64) -> Result<(), i64> {
    let words = [entry, stack_low, stack_high];
    call(hc::COMPONENT, virt_to_phys(words.as_ptr() as u64), hc::COMPONENT_BYTES).map(|_| ()).map_err(|e| -e)
}

/// Booted and about to run the program (the monitor ends a recovery's downtime here).
pub fn booted() {
    let _ = call(hc::BOOTED, 0, 0);
}

/// Stateful recovery: hand the monitor a copy of `state` for checkpoint slot `slot` (at most
/// `hc::CHECKPOINT_MAX` bytes, in the kernel's mapping of physical memory), kept outside this sandbox across its
/// recoveries.
pub fn checkpoint(slot: u64, state: &[u8]) -> Result<(), i64> {
    call(hc::CHECKPOINT, buffer_gpa(state), hc::checkpoint_arg(slot, state.len() as u64)).map(|_| ()).map_err(|e| -e)
}

/// Where a hypercall's buffer is, for the monitor: an empty one (whose pointer is dangling, not kernel
/// memory) is at 0.
fn buffer_gpa(b: &[u8]) -> u64 {
    if b.is_empty() { 0 } else { virt_to_phys(b.as_ptr() as u64) }
}

/// The slot's last checkpoint into `buf`; its length (0: none was taken).
pub fn restore(slot: u64, buf: &mut [u8]) -> Result<usize, i64> {
    call(hc::RESTORE, buffer_gpa(buf), hc::checkpoint_arg(slot, buf.len() as u64)).map(|n| n as usize).map_err(|e| -e)
}

/// Tell the monitor this sandbox is done (it reports exits and stops the core).
pub fn done(status: i32) -> ! {
    cpu::disable_interrupts();
    let _ = call(hc::DONE, status as u64, 0);
    cpu::halt_forever()
}

/// The panic path: the monitor reports the fault and stops this sandbox (never NMIs to other cores).
pub fn fault() -> ! {
    cpu::disable_interrupts();
    let _ = call(hc::FAULT, hc::FAULT_PANIC, cpu::rdtsc());
    cpu::halt_forever()
}
