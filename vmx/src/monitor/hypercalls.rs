//! What a hypercall does (ABI: `questv_abi::hypercall`, docs/vt.md): only the sandbox kernel (CPL 0) may make
//! one; each touches only the caller's own memory, checked against its slice.

use super::channels::{channel_close, channel_open};
use super::console::{console_bytes, flush_console, input_gone, input_kick, refuse, report_exits};
use super::faults::fault;
use super::layout::slice_range;
use super::state::{sandbox_finished, sandboxes, set_in_service, state};
use crate::backend::{self, inject_ud, skip_instruction, GuestRegs};
use crate::partition;
use crate::policy::RefusalKind;
use crate::recovery::Component;
use questv_arch::paging::KERNEL_BASE;
use questv_abi::hypercall as hc;
use questv_arch::cpu;
use questv_kernel::time::cycles_to_us;
use questv_kernel::{result, smp};

/// A hypercall (VMCALL/VMMCALL) from `sandbox`; false: it does not resume (done, or faulted).
pub(super) fn hypercall(sandbox: u32, regs: &mut GuestRegs) -> bool {
    let cpl = backend::guest_cpl();
    if cpl != 0 {
        // A user process may not talk to the monitor: #UD, as if the instruction did not exist for it.
        refuse(sandbox, RefusalKind::Hypercall, u64::from(cpl));
        inject_ud();
        return true;
    }
    let result = match regs.rax {
        hc::DONE => {
            // Its other cores leave their guest (they park once it is done). The end is claimed as a fault is:
            // if one is being handled on another core, that core decides and this one only stops.
            if super::cores::several(sandbox) {
                if !super::cores::claim_fault(sandbox) {
                    return false;
                }
                super::cores::stop_others(sandbox, questv_arch::percpu::cpu_index());
            }
            flush_console(sandbox);
            report_exits(sandbox);
            sandbox_finished(sandbox, regs.rbx as i32);
            input_gone(sandbox);
            return false;
        }
        hc::FAULT => {
            let kind = if regs.rbx == hc::FAULT_PANIC { "panic" } else { "fault" };
            // RCX: the guest's TSC at the fault (the same counter as the monitor's on this core).
            let guest_tsc = Some(regs.rcx).filter(|&t| t != 0 && t <= cpu::rdtsc());
            return fault(sandbox, kind, format_args!("guest_tsc={}", regs.rcx), guest_tsc);
        }
        hc::BOOTED => {
            let incarnation = booted(sandbox);
            input_kick(sandbox);
            Ok(incarnation)
        }
        hc::COMPONENT => register_component(sandbox, regs.rbx, regs.rcx),
        hc::CHECKPOINT => checkpoint(sandbox, regs.rbx, regs.rcx),
        hc::RESTORE => restore(sandbox, regs.rbx, regs.rcx),
        hc::EXIT_COUNT => Ok(state(sandbox).exits.iter().sum()),
        hc::CHANNEL_OPEN => {
            let peer = regs.rbx as u32;
            // A partition file lists the channels its sandboxes may open; any other pair is refused and counted.
            if peer != sandbox && peer < sandboxes() && super::state::partition().is_some_and(|p| !p.channel_allowed(sandbox, peer)) {
                refuse(sandbox, RefusalKind::Channel, u64::from(peer));
                Err(hc::EPERM)
            } else {
                channel_open(sandbox, peer)
            }
        }
        hc::CHANNEL_CLOSE => channel_close(sandbox, regs.rbx as u32),
        hc::NIC_LOCK_STUCK => super::nic::lock_stuck(sandbox, regs.rbx),
        hc::NIC_AUDIT => super::nic_guard::audit_for(sandbox),
        hc::PEER_APIC => {
            let peer = regs.rbx as u32;
            if peer < sandboxes() { Ok(u64::from(smp::apic_id(peer))) } else { Err(hc::EINVAL) }
        }
        hc::REPORT_EXITS => {
            report_exits(sandbox);
            Ok(0)
        }
        hc::CONSOLE_WRITE => {
            // Blocked DMA shows up before the lines that follow it.
            super::nic::check_dma();
            console_write(sandbox, regs.rbx, regs.rcx)
        }
        hc::CONSOLE_READ => console_read(sandbox, regs.rbx, regs.rcx),
        _ => Err(hc::ENOSYS),
    };
    regs.rax = hc::encode(result);
    skip_instruction();
    true
}

/// CONSOLE_WRITE: the bytes must lie in the sandbox's own memory.
fn console_write(sandbox: u32, gpa: u64, len: u64) -> Result<u64, i64> {
    if len > hc::CONSOLE_MAX {
        return Err(hc::EINVAL);
    }
    let (base, size) = {
        let st = state(sandbox);
        (st.host_base, st.size)
    };
    let host = slice_range(base, size, gpa, len).ok_or(hc::EFAULT)?;
    // SAFETY: [host, host + len) is inside this sandbox's slice (slice_range: the monitor's view of it); the sandbox is
    // stopped in this exit, so the bytes do not change under us.
    let bytes = unsafe { core::slice::from_raw_parts(host as *const u8, len as usize) };
    console_bytes(sandbox, bytes)?;
    Ok(len)
}

/// CONSOLE_READ: the bytes typed for the sandbox, into its own writable memory.
fn console_read(sandbox: u32, gpa: u64, len: u64) -> Result<u64, i64> {
    if len > hc::CONSOLE_MAX {
        return Err(hc::EINVAL);
    }
    let (base, size, read_only) = {
        let st = state(sandbox);
        (st.host_base, st.size, partition::overlaps_any(&st.read_only, gpa, len))
    };
    let host = slice_range(base, size, gpa, len).ok_or(hc::EFAULT)?;
    if read_only {
        return Err(hc::EFAULT);
    }
    let mut buf = [0u8; hc::CONSOLE_MAX as usize];
    let n = super::console::take_input(sandbox, &mut buf[..len as usize]);
    // SAFETY: [host, host + len) is inside this sandbox's slice (slice_range: the monitor's view of it) and not
    // its read-only kernel image; n <= len; the sandbox is stopped in this exit.
    unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), host as *mut u8, n) };
    Ok(n as u64)
}

/// BOOTED: a recovered sandbox is back in service (`RESULT sandbox_ready`, with the downtime since its fault).
/// Returns its incarnation.
fn booted(sandbox: u32) -> u64 {
    set_in_service(sandbox);
    let (since, incarnation) = {
        let mut st = state(sandbox);
        (core::mem::take(&mut st.recovering_since), st.history.incarnation)
    };
    if since == 0 && incarnation == 0 {
        // First boot: how long after the machine's reset (the TSC starts there) this sandbox was ready.
        result!("sandbox_up", "sandbox={} since_reset_us={}", sandbox, cycles_to_us(cpu::rdtsc()));
    }
    if since != 0 {
        let down = cpu::rdtsc().saturating_sub(since);
        result!("sandbox_ready", "sandbox={} incarnation={} downtime_cycles={} downtime_us={}", sandbox, incarnation, down, cycles_to_us(down));
    }
    u64::from(incarnation)
}

/// COMPONENT: the sandbox's recoverable component (entry point, stack), checked to lie in its own memory.
/// The stack is pinned to the one the registering call runs on (the driver thread's: its stack pointer, which
/// the monitor reads itself, must lie in the range), once per incarnation: a later call cannot move or widen
/// it, e.g. onto the main kernel stack, which would turn every fault into a resume.
fn register_component(sandbox: u32, gpa: u64, len: u64) -> Result<u64, i64> {
    if len != hc::COMPONENT_BYTES {
        return Err(hc::EINVAL);
    }
    let caller_rsp = backend::guest_state().rsp;
    let mut st = state(sandbox);
    if st.component.is_some() {
        return Err(hc::EPERM);
    }
    let (base, size) = (st.host_base, st.size);
    let host = slice_range(base, size, gpa, len).ok_or(hc::EFAULT)?;
    // SAFETY: 24 bytes inside this sandbox's slice (slice_range: the monitor's view of it); it is stopped in this exit.
    let words: [u64; 3] = unsafe { core::ptr::read_unaligned(host as *const [u64; 3]) };
    // The words are the sandbox kernel's virtual addresses: KERNEL_BASE + guest-physical, the one layout every
    // questv kernel has; what they name must be the sandbox's own memory.
    let own = |a: u64, l: u64| a.checked_sub(KERNEL_BASE).is_some_and(|gpa| slice_range(base, size, gpa, l).is_some());
    let c = Component::parse(words, own).ok_or(hc::EINVAL)?;
    if !c.owns(caller_rsp) {
        return Err(hc::EINVAL);
    }
    st.component = Some(c);
    Ok(0)
}

/// CHECKPOINT: keep a copy of a service's state (slot in the high half of `arg`), outside the sandbox.
fn checkpoint(sandbox: u32, gpa: u64, arg: u64) -> Result<u64, i64> {
    let (slot, len) = hc::checkpoint_split(arg);
    if len > hc::CHECKPOINT_MAX || slot >= hc::CHECKPOINT_SLOTS {
        return Err(hc::EINVAL);
    }
    let mut st = state(sandbox);
    let host = slice_range(st.host_base, st.size, gpa, len).ok_or(hc::EFAULT)?;
    // SAFETY: [host, host + len) is inside this sandbox's slice (slice_range: the monitor's view of it); it is stopped in this exit.
    let bytes = unsafe { core::slice::from_raw_parts(host as *const u8, len as usize) };
    let kept = &mut st.checkpoints[slot as usize];
    kept.clear();
    kept.extend_from_slice(bytes);
    Ok(len)
}

/// RESTORE: a slot's last checkpoint back into the sandbox's memory (at most `len` bytes); its length, 0 if none.
/// The destination must be memory the sandbox could write itself: not its read-only kernel text or rodata.
fn restore(sandbox: u32, gpa: u64, arg: u64) -> Result<u64, i64> {
    let (slot, len) = hc::checkpoint_split(arg);
    if slot >= hc::CHECKPOINT_SLOTS {
        return Err(hc::EINVAL);
    }
    let st = state(sandbox);
    let kept = &st.checkpoints[slot as usize];
    let n = (kept.len() as u64).min(len);
    let host = slice_range(st.host_base, st.size, gpa, n).ok_or(hc::EFAULT)?;
    if partition::overlaps_any(&st.read_only, gpa, n) {
        return Err(hc::EFAULT);
    }
    // SAFETY: as in `checkpoint`; the destination is the sandbox's own memory.
    unsafe { core::ptr::copy_nonoverlapping(kept.as_ptr(), host as *mut u8, n as usize) };
    Ok(kept.len() as u64)
}
