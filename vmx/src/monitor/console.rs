//! What the monitor prints for a sandbox: its console lines (with the `[sN]` prefix), its refused accesses
//! (a log line for the first of each kind) and its exit report (`RESULT vmexits`, `RESULT sandbox_refused`).
#![forbid(unsafe_code)]

use super::state::{state, Sandbox};
use crate::backend;
use crate::exit::ExitKind;
use crate::policy::{self, RefusalKind};
use alloc::format;
use alloc::string::String;
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

/// Print the sandbox's console bytes: complete lines with its `[sN]` prefix; control characters and non-ASCII
/// bytes become `?`, so nothing a sandbox prints can start an unprefixed line (only the monitor says
/// `QUESTV DONE`).
pub(super) fn console_bytes(sandbox: u32, bytes: &[u8]) {
    let mut st = state(sandbox);
    for &b in bytes {
        let stored = match b {
            b'\n' => {
                emit_line(sandbox, &mut st);
                continue;
            }
            b'\r' => continue,
            b'\t' | 0x20..=0x7E => b,
            _ => b'?',
        };
        if st.line_len == st.line.len() {
            emit_line(sandbox, &mut st);
        }
        let n = st.line_len;
        st.line[n] = stored;
        st.line_len += 1;
    }
}

fn emit_line(sandbox: u32, st: &mut Sandbox) {
    // Only printable ASCII is ever stored.
    let text = core::str::from_utf8(&st.line[..st.line_len]).unwrap_or("?");
    kprintln!("[s{}] {}", sandbox, text);
    st.line_len = 0;
}

/// Print the line being assembled, if any.
pub(super) fn flush_console(sandbox: u32) {
    let mut st = state(sandbox);
    if st.line_len > 0 {
        emit_line(sandbox, &mut st);
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
