//! What the monitor prints for a sandbox: its console lines (with the `[sN]` prefix), its refused accesses
//! (a log line for the first of each kind) and its exit report (`RESULT vmexits`, `RESULT sandbox_refused`).
#![forbid(unsafe_code)]

use super::state::{state, Sandbox};
use crate::backend;
use crate::exit::ExitKind;
use crate::policy::{self, RefusalKind};
use alloc::format;
use alloc::string::String;
use crate::console_input::{InputRouter, LiveOutput};
use crate::console_queue::{LINE_MAX, OTHERS_PER_DRAIN};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use questv_abi::hypercall as hc;
use questv_arch::{ioapic::IoApic, lapic};
use questv_kernel::{kprintln, result, smp};

/// Count a refused access; the first of its kind gets a log line.
pub(super) fn refuse(sandbox: u32, kind: RefusalKind, code: u64) {
    if state(sandbox).refusals.record(kind, code) {
        match kind {
            RefusalKind::Icr => log::warn!("sandbox {}: refused an IPI ({})", sandbox, policy::IcrRefusal::name_of_code(code)),
            RefusalKind::Apic => log::warn!("sandbox {}: refused an APIC write at offset 0x{:x}", sandbox, code),
            RefusalKind::Channel => log::warn!("sandbox {}: refused a channel to sandbox {} (the partition file does not list it)", sandbox, code),
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
    if FOCUS.load(Ordering::Acquire) == sandbox {
        show_live(sandbox, bytes);
        return Ok(());
    }
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
                _ => stored_byte(b),
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

/// What a line held for the queue keeps of a byte: printable ASCII and tab; anything else is `?`.
fn stored_byte(b: u8) -> u8 {
    match b {
        b'\t' | 0x20..=0x7E => b,
        _ => b'?',
    }
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
/// The focused sandbox's open line (console input only). Any line the kernel console prints ends it first
/// ([`end_live_line`], its line-break hook); taken only under the console's own lock (lock order: console,
/// then this).
static LIVE: spin::Mutex<LiveOutput> = spin::Mutex::new(LiveOutput::new());
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
        let Some(uart) = DRAIN.try_lock() else { return };
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
        resume_live();
        drop(uart);
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

// ---- Console input (`console=input`: an interactive shell in every sandbox) ----
//
// The UART's receive interrupt goes through the I/O APIC to the core of the sandbox with the focus, which
// takes the bytes with CONSOLE_READ; the monitor reads the UART there, in that exit, and sorts the bytes by
// the focus (`console_input::InputRouter`: Ctrl-A three times moves it). Nothing exits while nobody types.

/// The sandbox with the input focus (`u32::MAX`: no console input this run). Its output is shown as it comes.
static FOCUS: AtomicU32 = AtomicU32::new(u32::MAX);
static INPUT: spin::Mutex<Option<InputRouter>> = spin::Mutex::new(None);
/// The UART's I/O APIC input: (I/O APIC, pin, active low).
static INPUT_IRQ: spin::Once<(IoApic, u32, bool)> = spin::Once::new();

/// The kernel console's line-break hook: a line is about to be printed; if the focused sandbox's line is open,
/// it ends (and is shown again with its sandbox's next output): whether a newline must go out first.
fn end_live_line() -> bool {
    let mut out = Vec::new();
    LIVE.lock().interrupt(&mut out);
    !out.is_empty()
}

/// Show the focused sandbox's line again after other lines ended it.
fn resume_live() {
    questv_kernel::console::write_rendered(|| {
        let mut out = Vec::new();
        LIVE.lock().resume(&mut out);
        out
    });
}

/// The focused sandbox's bytes, shown now (after any of its lines still queued from before it had the focus).
fn show_live(sandbox: u32, bytes: &[u8]) {
    let _uart = DRAIN.lock();
    while print_one(sandbox) {}
    questv_kernel::console::write_rendered(|| {
        let mut out = Vec::new();
        LIVE.lock().render(sandbox, bytes, &mut out);
        out
    });
    state(sandbox).console_stats.lines += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
}

/// Start console input: the UART interrupts on received bytes, through `irq` (I/O APIC, pin, active low),
/// routed to sandbox 0's core. Before launch.
pub(super) fn start_input(irq: (IoApic, u32, bool), takes_input: &[bool]) {
    let mut router = InputRouter::new(takes_input.len() as u32);
    // Sandboxes that take no input (the partition file says so, or a parked core) are skipped from the start.
    for (s, _) in takes_input.iter().enumerate().filter(|(_, &t)| !t) {
        router.leave(s as u32);
    }
    let focus = router.focus();
    let has_focus = takes_input.get(focus as usize).copied().unwrap_or(false);
    *INPUT.lock() = Some(router);
    if !has_focus {
        kprintln!("console: no sandbox takes input");
        return;
    }
    INPUT_IRQ.call_once(|| irq);
    questv_kernel::console::set_line_break_hook(end_live_line);
    FOCUS.store(focus, Ordering::Release);
    route_input(focus);
    questv_kernel::console::enable_receive_interrupt();
    kprintln!("console: input goes to sandbox {} of {}; Ctrl-A three times moves it to the next", focus, takes_input.len());
}

fn route_input(sandbox: u32) {
    if let Some((io, pin, active_low)) = INPUT_IRQ.get() {
        io.route(*pin, hc::CONSOLE_INPUT_VECTOR, smp::apic_id(sandbox) as u8, false, *active_low);
    }
}

/// Read what the UART holds and sort it by the focus; the new focus if a switch sequence moved it.
fn pump() -> Option<u32> {
    let mut input = INPUT.lock();
    let router = input.as_mut()?;
    let mut moved = None;
    while let Some(b) = questv_kernel::console::try_read() {
        if let Some(f) = router.feed(b) {
            moved = Some(f);
        }
    }
    moved
}

/// The focus moved to `sandbox`: the UART's interrupt follows it, a banner says so, its line in progress (a
/// prompt) is shown, and if bytes already wait for it, it is told.
fn focus_moved(sandbox: u32) {
    let old = FOCUS.swap(sandbox, Ordering::AcqRel);
    route_input(sandbox);
    {
        let _uart = DRAIN.lock();
        // The old focus's open line becomes the line it is assembling (what it prints next continues it).
        let mut line = Vec::new();
        questv_kernel::console::write_rendered(|| {
            let mut out = Vec::new();
            line = LIVE.lock().take_line(old, &mut out);
            out
        });
        if old != u32::MAX && !line.is_empty() {
            let mut st = state(old);
            let n = line.len().min(st.line.len());
            for (slot, &b) in st.line.iter_mut().zip(&line[..n]) {
                *slot = stored_byte(b);
            }
            st.line_len = n;
        }
        kprintln!("console: input goes to sandbox {} (Ctrl-A three times: the next one)", sandbox);
        while print_one(sandbox) {}
        let partial = {
            let mut st = state(sandbox);
            let n = core::mem::take(&mut st.line_len);
            st.line[..n].to_vec()
        };
        questv_kernel::console::write_rendered(|| {
            let mut out = Vec::new();
            LIVE.lock().render(sandbox, &partial, &mut out);
            out
        });
    }
    if INPUT.lock().as_ref().is_some_and(|r| r.pending(sandbox)) {
        lapic::send_ipi(smp::apic_id(sandbox), hc::CONSOLE_INPUT_VECTOR);
    }
}

/// CONSOLE_READ's bytes: what was typed for `sandbox` (the UART read first), into `out`; how many.
pub(super) fn take_input(sandbox: u32, out: &mut [u8]) -> usize {
    let moved = pump();
    let n = INPUT.lock().as_mut().map_or(0, |r| r.take(sandbox, out));
    if let Some(f) = moved {
        focus_moved(f);
    }
    n
}

/// `sandbox` will not read again (finished or stopped): if it had the focus, the next one gets it.
pub(super) fn input_gone(sandbox: u32) {
    let moved = INPUT.lock().as_mut().and_then(|r| r.leave(sandbox));
    match moved {
        Some(f) => focus_moved(f),
        None if FOCUS.load(Ordering::Acquire) == sandbox => FOCUS.store(u32::MAX, Ordering::Release),
        None => {}
    }
}

/// A (re)booted sandbox with the focus may have missed the UART's interrupt while it had no handler: if
/// bytes wait in the UART or for it, it is told now (a self-IPI, delivered at the entry).
pub(super) fn input_kick(sandbox: u32) {
    if FOCUS.load(Ordering::Acquire) != sandbox {
        return;
    }
    if let Some(f) = pump() {
        focus_moved(f);
    }
    if INPUT.lock().as_ref().is_some_and(|r| r.pending(sandbox)) {
        lapic::send_ipi(lapic::id(), hc::CONSOLE_INPUT_VECTOR);
    }
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
            RefusalKind::Channel => format!("peer={code}"),
        };
        result!("sandbox_refused", "sandbox={} kind={} {} count={}", sandbox, kind.name(), what, count);
    }
    if refusals.overflow > 0 {
        result!("sandbox_refused", "sandbox={} kind=other count={}", sandbox, refusals.overflow);
    }
}
