//! The NIC's two tail pages, which every sharer writes directly (RDT, TDT: the exit-free fast path) but which
//! also hold each ring's base, length, head and delays. The monitor records what it programmed there
//! (`questv_drivers::e1000::RingConfig`) and audits it — at its own ticks, and when a sharer's cheap check
//! (`SharedNic::ring_registers_wrong`, a hole at its cursor) asks it to (`NIC_AUDIT`). What it finds it puts
//! right (`SharedNic::resync_rings`), and it guards the pages: read-only in every sharer, so each write exits,
//! an honest tail move is performed for the writer, and anything else names its writer, which is stopped
//! (its recovery policy follows). The guard ends with the writer caught, or after a quiet period.
//! Which sharer rewrote a register before the guard cannot be known (no exit, no trace): the audit repairs,
//! the guard catches.

use super::nic::{monitor_view, nic_grant, nic_role};
use super::state::sandboxes;
use super::tables::protect_page;
use crate::stage2::Perms;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use questv_drivers::e1000::{judge_tail_write, register_name, RingConfig, RingRepair, TailWrite, SHARER_WRITABLE_PAGES};
use questv_arch::{cpu, lapic, percpu};
use questv_kernel::{result, smp, time};

/// What the monitor programmed into the tail pages' configuration registers.
static RECORD: spin::Once<RingConfig> = spin::Once::new();
/// One audit at a time (the resync stops reception and transmission for its duration).
static AUDIT: spin::Mutex<()> = spin::Mutex::new(());
/// The guard: since when (TSC) the tail pages exit in every sharer; 0: not guarded.
static GUARDED_SINCE: AtomicU64 = AtomicU64::new(0);
/// Tail moves the monitor performed for sharers while guarded (since the guard began).
static PASSED: AtomicU64 = AtomicU64::new(0);
/// Per sandbox: its second stage changed; its core drops cached translations at its next exit.
static FLUSH: [AtomicBool; percpu::MAX_CPUS] = [const { AtomicBool::new(false) }; percpu::MAX_CPUS];
/// When (TSC) a sharer's report last triggered an audit, and how far apart such audits are at least.
static LAST_REPORTED: AtomicU64 = AtomicU64::new(0);
const REPORT_SPACING_MS: u64 = 10;
/// When (TSC) the guard last caught a tamperer.
static LAST_CAUGHT: AtomicU64 = AtomicU64::new(0);
/// A guard with no tamper caught ends after this long.
const QUIET_MS: u64 = 2000;

/// After `nic::program`: what the tail pages' configuration registers hold is what they must keep holding.
pub(super) fn record() {
    if let Some(g) = nic_grant() {
        let regs = monitor_view(g).regs;
        RECORD.call_once(|| RingConfig::read(|o| regs.read(o)));
    }
}

/// Whether the tail pages are guarded (a sandbox built now maps them read-only too).
pub(super) fn guarded() -> bool {
    GUARDED_SINCE.load(Ordering::Acquire) != 0
}

/// The permissions a sharer's second stage gives the tail pages now.
pub(super) fn tail_page_perms() -> Perms {
    if guarded() { Perms::R } else { Perms::RW }
}

/// At the top of every exit: drop this core's cached second-stage translations if the guard changed them.
/// Returns whether it did (an NMI the monitor sent for it is no sandbox's).
pub(super) fn take_flush(sandbox: u32) -> bool {
    let due = FLUSH[sandbox as usize].swap(false, Ordering::AcqRel);
    if due {
        crate::backend::flush_stage2();
    }
    due
}

/// Audit the tail pages. `reporter`: the sandbox whose check asked (its report is only a trigger: the
/// monitor looks itself, and a report of nothing changes nothing); None: the monitor's own tick, which looks
/// at the registers only (the descriptors move under it as the sharers work). Returns whether anything was
/// wrong.
pub(super) fn audit(reporter: Option<u32>) -> bool {
    let (Some(g), Some(record)) = (nic_grant(), RECORD.get()) else { return false };
    if reporter.is_some_and(|s| nic_role(s).is_none()) {
        return false;
    }
    let Some(_one) = AUDIT.try_lock() else { return false }; // another core is at it
    if reporter.is_some() {
        // A report costs the reporter one exit, but the resync it triggers runs beside every sharer's
        // traffic: however often a (hostile) sharer asks, it runs at most once per spacing.
        let now = cpu::rdtsc();
        if now.saturating_sub(LAST_REPORTED.load(Ordering::Acquire)) < time::ms_to_cycles(REPORT_SPACING_MS) {
            return false;
        }
        LAST_REPORTED.store(now, Ordering::Release);
    }
    let nic = monitor_view(g);
    let looks_wrong = || {
        !record.differences(&RingConfig::read(|o| nic.regs.read(o))).is_empty()
            || questv_drivers::e1000::cursor_out_of_range(|o| nic.regs.read(o)).is_some()
    };
    let registers_wrong = looks_wrong();
    if reporter.is_none() && !registers_wrong {
        return false;
    }
    if registers_wrong {
        // Guard first: once the registers are back, the next rewrite must already exit.
        guard_on();
    }
    let t0 = cpu::rdtsc();
    let repair = nic.resync_rings(record);
    if !repair.found_anything() {
        return false;
    }
    result!(
        "nic_rings_repaired",
        "reported_by={} restored={} cursors={} rx_holes={} rx_moved={} rx_stale={} tx_freed={} addresses={} us={}",
        reporter.map_or(String::from("monitor"), |s| format!("{s}")), restored_list(&repair), repair.cursors,
        repair.rx_holes, repair.rx_moved, repair.rx_stale, repair.tx_freed, repair.addresses, time::cycles_to_us(cpu::rdtsc() - t0)
    );
    // Holes alone (the registers were right when looked at) may be a writer that puts them back fast: guard
    // too, unless a tamperer was just caught (these are what it left).
    if !registers_wrong && cpu::rdtsc().saturating_sub(LAST_CAUGHT.load(Ordering::Acquire)) > time::ms_to_cycles(QUIET_MS) {
        guard_on();
    }
    true
}

/// `NIC_AUDIT` from `sandbox`: 1 if the audit found something, 0 if not; `-EPERM` from a non-sharer.
pub(super) fn audit_for(sandbox: u32) -> Result<u64, i64> {
    if nic_role(sandbox).is_none() {
        return Err(questv_abi::hypercall::EPERM);
    }
    Ok(u64::from(audit(Some(sandbox))))
}

fn restored_list(r: &RingRepair) -> String {
    if r.restored.is_empty() {
        return String::from("none");
    }
    r.restored.iter().map(|&(o, found, put)| format!("{}:0x{:x}->0x{:x}", register_name(o), found, put)).collect::<Vec<_>>().join(",")
}

/// Guard the tail pages: read-only in every sharer, and each core made to drop its cached translations before
/// this returns (the others by NMI, sent again until their exit took it — an NMI reaching a core in root mode
/// is no exit — for at most [`FLUSH_WAIT_US`]: a parked sandbox never takes it, and needs not).
fn guard_on() {
    if GUARDED_SINCE.compare_exchange(0, cpu::rdtsc().max(1), Ordering::AcqRel, Ordering::Acquire).is_err() {
        return; // already guarded
    }
    PASSED.store(0, Ordering::Release);
    let sharers = set_tail_pages(Perms::R);
    let me = percpu::cpu_index();
    take_flush(me);
    let t0 = cpu::rdtsc();
    let until = t0 + time::us_to_cycles(FLUSH_WAIT_US);
    let pending = |s: u32| FLUSH[s as usize].load(Ordering::Acquire);
    while cpu::rdtsc() < until && sharers.iter().any(|&s| s != me && pending(s)) {
        for &s in sharers.iter().filter(|&&s| s != me && pending(s)) {
            lapic::send_nmi(smp::apic_id(s));
        }
        let next = cpu::rdtsc() + time::us_to_cycles(100);
        while cpu::rdtsc() < next {
            core::hint::spin_loop();
        }
    }
    let flushed: Vec<String> = sharers.iter().filter(|&&s| !pending(s)).map(|s| format!("{s}")).collect();
    result!(
        "nic_guard",
        "on=1 sharers={} flushed={} flush_us={}",
        sharers.iter().map(|s| format!("{s}")).collect::<Vec<_>>().join(","), flushed.join(","), time::cycles_to_us(cpu::rdtsc() - t0)
    );
}

/// How long the guard waits for the other sharers' cores to drop their cached translations.
const FLUSH_WAIT_US: u64 = 5000;

/// End the guard (`why`: the tamperer was caught, or it has been quiet): the fast path again.
fn guard_off(why: &str) {
    let since = GUARDED_SINCE.swap(0, Ordering::AcqRel);
    if since == 0 {
        return;
    }
    // A translation still cached read-only only costs one more exit, which passes the tail move.
    set_tail_pages(Perms::RW);
    result!("nic_guard", "on=0 why={} guarded_ms={} tail_moves_passed={}", why, time::cycles_to_ms(cpu::rdtsc() - since), PASSED.load(Ordering::Acquire));
}

/// The tail pages of every sharer still holding its role, to `perms`; each is flagged for a flush. Returns
/// the sharers.
fn set_tail_pages(perms: Perms) -> Vec<u32> {
    let Some(g) = nic_grant() else { return Vec::new() };
    let sharers: Vec<u32> = (0..sandboxes()).filter(|&s| nic_role(s).is_some()).collect();
    for &s in &sharers {
        for page in SHARER_WRITABLE_PAGES {
            if let Err(e) = protect_page(s, g.nic.mmio + u64::from(page), perms) {
                log::warn!("nic guard: sandbox {s} page 0x{page:x}: {e}");
            }
        }
        FLUSH[s as usize].store(true, Ordering::Release);
    }
    sharers
}

/// What to do with a write into a tail page that exited.
pub(super) enum Trapped {
    /// Performed for the writer (an honest tail move).
    Passed,
    /// Not a tail move: the writer rewrites the rings.
    Tamper,
}

/// A write of `len` bytes of `value` at `offset` (in a tail page) by `sandbox` exited: pass an honest tail
/// move on, catch anything else (the guard ends; the caller stops the writer).
pub(super) fn trapped_tail_write(sandbox: u32, offset: u32, value: u32, len: u32) -> Trapped {
    let Some(g) = nic_grant() else { return Trapped::Tamper };
    match judge_tail_write(offset, value, len) {
        TailWrite::Pass => {
            monitor_view(g).regs.write(offset, value);
            PASSED.fetch_add(1, Ordering::Relaxed);
            end_if_quiet();
            Trapped::Passed
        }
        TailWrite::Tamper => {
            result!("nic_ring_tamper", "sandbox={} register={} offset=0x{:x} value=0x{:x} len={}", sandbox, register_name(offset), offset, value, len);
            LAST_CAUGHT.store(cpu::rdtsc(), Ordering::Release);
            guard_off("caught");
            Trapped::Tamper
        }
    }
}

fn end_if_quiet() {
    let since = GUARDED_SINCE.load(Ordering::Acquire);
    if since != 0 && cpu::rdtsc().saturating_sub(since) > time::ms_to_cycles(QUIET_MS) {
        guard_off("quiet");
    }
}

/// The monitor's own tick on this core: audit the registers, and end a guard that has been quiet.
pub(super) fn tick() {
    audit(None);
    end_if_quiet();
}
