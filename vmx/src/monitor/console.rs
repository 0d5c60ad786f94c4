//! What the monitor prints for a sandbox: its console lines (with the `[sN]` prefix), its refused accesses
//! (a log line for the first of each kind) and its exit report (`RESULT vmexits`, `RESULT sandbox_refused`).
#![forbid(unsafe_code)]

use super::state::{state, Sandbox};
use crate::backend;
use crate::exit::ExitKind;
use crate::policy::{self, RefusalKind};
use alloc::format;
use alloc::string::String;
use crate::console_queue::{LINE_MAX, OTHERS_PER_DRAIN};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use questv_kernel::{kprintln, result};

/// Count a refused access; the first of its kind gets a log line.
pub(super) fn refuse(sandbox: u32, kind: RefusalKind, code: u64) {
    if state(sandbox).refusals.record(kind, code) {
        match kind {
            RefusalKind::Icr => log::warn!("sandbox {}: refused an IPI ({})", sandbox, policy::IcrRefusal::name_of_code(code)),
            RefusalKind::Apic => log::warn!("sandbox {}: refused an APIC write at offset 0x{:x}", sandbox, code),
            _ => log::warn!("sandbox {}: refused {} 0x{:x}", sandbox, kind.name(), code),
        }
    }
}

/// Take the sandbox's console bytes: complete lines go into its own queue with its `[sN]` prefix to come;
/// control characters and non-ASCII bytes become `?`, so nothing a sandbox prints can start an unprefixed line
/// (only the monitor says `QUESTV DONE`). Then the queues are drained in turns ([`drain`]). `-EAGAIN` (nothing
/// taken) when its queue has no room: a flooding sandbox waits for its own output, nobody else does.
pub(super) fn console_bytes(sandbox: u32, bytes: &[u8]) -> Result<(), i64> {
    let t0 = questv_arch::cpu::rdtsc();
    {
        let mut st = state(sandbox);
        if !st.console.has_room_for(bytes.len()) {
            st.console_stats.deferred += 1;
            drop(st);
            drain(sandbox);
            return Err(questv_abi::hypercall::EAGAIN);
        }
        for &b in bytes {
            let stored = match b {
                b'\n' => {
                    queue_line(&mut st);
                    continue;
                }
                b'\r' => continue,
                b'\t' | 0x20..=0x7E => b,
                _ => b'?',
            };
            if st.line_len == st.line.len() {
                queue_line(&mut st);
            }
            let n = st.line_len;
            st.line[n] = stored;
            st.line_len += 1;
        }
    }
    drain(sandbox);
    let spent = questv_arch::cpu::rdtsc().saturating_sub(t0);
    let mut st = state(sandbox);
    st.console_stats.max_write_cycles = st.console_stats.max_write_cycles.max(spent);
    Ok(())
}

fn queue_line(st: &mut Sandbox) {
    let n = st.line_len;
    let line = st.line;
    // has_room_for() left room for every line of this write.
    let _ = st.console.push(&line[..n]);
    st.console_stats.lines += 1;
    st.line_len = 0;
    QUEUED.fetch_add(1, Ordering::AcqRel);
}

/// Lines queued in all sandboxes (a cheap test for every exit).
static QUEUED: AtomicUsize = AtomicUsize::new(0);
/// One drainer at a time prints the queues; a sandbox that finds it busy leaves its lines queued and goes on.
static DRAIN: spin::Mutex<()> = spin::Mutex::new(());
/// Set by whoever queued a line; the drainer looks again after letting go if it is set (no line is left behind).
static PENDING: AtomicBool = AtomicBool::new(false);

/// Print one queued line of `sandbox`; whether there was one.
fn print_one(sandbox: u32) -> bool {
    let mut text = [0u8; LINE_MAX];
    let n = match state(sandbox).console.pop(&mut text) {
        Some(n) => n,
        None => return false,
    };
    QUEUED.fetch_sub(1, Ordering::AcqRel);
    // Only printable ASCII is ever stored.
    kprintln!("[s{}] {}", sandbox, core::str::from_utf8(&text[..n]).unwrap_or("?"));
    true
}

/// Drain the console queues in turns, on `caller`'s exit: its own lines, each followed by one line of every
/// other sandbox that has one, then at most [`OTHERS_PER_DRAIN`] more of theirs. If another exit is draining,
/// return at once: that one prints these lines in their turn.
pub(super) fn drain(caller: u32) {
    PENDING.store(true, Ordering::Release);
    let n = super::state::sandboxes();
    for _ in 0..2 {
        let Some(_uart) = DRAIN.try_lock() else { return };
        PENDING.store(false, Ordering::Release);
        let mut others = 0;
        loop {
            let own = print_one(caller);
            let mut any = own;
            for k in 1..n {
                if !own && others >= OTHERS_PER_DRAIN {
                    break;
                }
                if print_one((caller + k) % n) {
                    others += 1;
                    any = true;
                }
            }
            if !any || (!own && others >= OTHERS_PER_DRAIN) {
                break;
            }
        }
        state(caller).console_stats.printed_for_others += others as u64;
        drop(_uart);
        if !PENDING.load(Ordering::Acquire) {
            return;
        }
    }
}

/// Drain on any exit when lines wait (left by a drain that was cut short, or queued while another drained).
pub(super) fn drain_if_queued(caller: u32) {
    if QUEUED.load(Ordering::Acquire) > 0 {
        drain(caller);
    }
}

/// Queue the line being assembled, if any, and print every line of the sandbox now (waiting for the UART):
/// before the monitor says anything about it (a fault, its end), all it printed is out.
pub(super) fn flush_console(sandbox: u32) {
    {
        let mut st = state(sandbox);
        if st.line_len > 0 {
            queue_line(&mut st);
        }
    }
    let _uart = DRAIN.lock();
    while print_one(sandbox) {}
}

/// `RESULT vmexits` and one `RESULT sandbox_refused` line per refused (kind, port/MSR/reason).
pub(super) fn report_exits(sandbox: u32) {
    let (exits, refusals, stalls) = {
        let st = state(sandbox);
        (st.exits, st.refusals.clone(), st.stalls)
    };
    if super::state::stall_cycles() != 0 {
        result!("watchdog_stalls", "sandbox={} count={}", sandbox, stalls);
    }
    let mut line = String::new();
    for k in ExitKind::ALL.iter().filter(|k| exits[k.index()] > 0) {
        line.push_str(&format!(" {}={}", k.name(), exits[k.index()]));
    }
    result!("vmexits", "sandbox={} arch={} total={}{}", sandbox, backend::arch().name(), exits.iter().sum::<u64>(), line);
    let c = state(sandbox).console_stats;
    if c.lines > 0 || c.deferred > 0 {
        result!(
            "console",
            "sandbox={} lines={} deferred={} printed_for_others={} max_write_us={}",
            sandbox, c.lines, c.deferred, c.printed_for_others, questv_kernel::time::cycles_to_us(c.max_write_cycles)
        );
    }
    let coalesced = super::channels::coalesced(sandbox);
    if coalesced > 0 {
        result!("notifications_coalesced", "sandbox={} count={}", sandbox, coalesced);
    }
    for (kind, code, count) in refusals.iter() {
        let what = match kind {
            RefusalKind::Io => format!("port=0x{code:x}"),
            RefusalKind::Msr => format!("msr=0x{code:x}"),
            RefusalKind::Icr => format!("what={}", policy::IcrRefusal::name_of_code(code)),
            RefusalKind::Hypercall => format!("cpl={code}"),
            RefusalKind::Nmi => String::from("vector=2"),
            RefusalKind::Apic => format!("offset=0x{code:x}"),
            RefusalKind::NicRegister => format!("register={} offset=0x{code:x}", questv_drivers::e1000::register_name(code as u32)),
        };
        result!("sandbox_refused", "sandbox={} kind={} {} count={}", sandbox, kind.name(), what, count);
    }
    if refusals.overflow > 0 {
        result!("sandbox_refused", "sandbox={} kind=other count={}", sandbox, refusals.overflow);
    }
}
