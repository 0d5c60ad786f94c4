//! The hypercall ABI between a sandbox kernel and its monitor.
//!
//! A hypercall is `VMCALL` executed at CPL 0 with the number in RAX, the first argument in RBX and the second
//! in RCX; the result comes back in RAX (a negative errno on failure). From CPL 3 the monitor injects #UD and
//! does nothing else. Unknown numbers return `-ENOSYS`.
//!
//! Also here: the guest-physical addresses both sides agree on (shared region, heartbeat word) and the layout
//! of the shared info page.

/// `DONE(status)`: this sandbox has finished; the monitor reports its exits and stops it. Does not return.
pub const DONE: u64 = 1;
/// `REPORT_EXITS()`: the monitor prints this sandbox's `RESULT vmexits` line now. Returns 0.
pub const REPORT_EXITS: u64 = 2;
/// `EXIT_COUNT()`: this sandbox's VM exits so far, this call included.
pub const EXIT_COUNT: u64 = 3;
/// `CHANNEL_OPEN(peer)`: the channel between this sandbox and `peer`: once both have opened it, allocated and
/// mapped into exactly the two second stages; returns its guest-physical address. `-EAGAIN` until the peer
/// opened it too (the request is kept: the info page's directory lists the channel once it has memory),
/// `-EDQUOT` when either end has its quota of channels.
pub const CHANNEL_OPEN: u64 = 4;
/// `PEER_APIC(peer)`: the local APIC id of `peer`'s core (the destination of channel notifications).
pub const PEER_APIC: u64 = 5;
/// `FAULT(kind, tsc)`: the sandbox kernel panicked or took a fatal exception (`tsc`: its time stamp counter when
/// it did); the monitor reports `RESULT sandbox_fault ... reason=panic` and recovers or stops it (its recovery
/// policy). Does not return.
pub const FAULT: u64 = 6;
/// `CONSOLE_WRITE(gpa, len)`: print `len` (at most [`CONSOLE_MAX`]) bytes at guest-physical `gpa`. The monitor
/// owns the UART: it prints complete lines prefixed with `[sN] `, control characters replaced. Returns the
/// number of bytes taken.
pub const CONSOLE_WRITE: u64 = 7;

/// `BOOTED()`: the sandbox kernel finished booting and is about to run its program. After a recovery the
/// monitor reports the sandbox back in service (`RESULT sandbox_ready`). Returns the incarnation (0 = first
/// boot).
pub const BOOTED: u64 = 8;
/// `CHECKPOINT(gpa, len | slot << 32)`: the monitor keeps a copy of `len` (at most [`CHECKPOINT_MAX`]) bytes
/// of this sandbox's memory at `gpa` in checkpoint slot `slot` (< [`CHECKPOINT_SLOTS`]), outside the sandbox,
/// replacing the slot's previous copy. It survives the sandbox's recovery (stateful recovery). Returns `len`.
pub const CHECKPOINT: u64 = 9;
/// `RESTORE(gpa, len | slot << 32)`: copy the slot's last checkpoint (at most `len` bytes) to `gpa`; returns
/// its length, 0 if there is none. A destination outside the sandbox's own memory, or touching its read-only
/// kernel text or rodata, is refused with `-EFAULT` (the monitor writes only what the sandbox could write).
pub const RESTORE: u64 = 10;
/// `COMPONENT(gpa, len)`: register this sandbox's recoverable component (its NIC driver): at `gpa`, `len` =
/// 24 bytes of three u64 — the recovery entry point, and the component thread's stack [low, high). With
/// `recovery=driver`, a fault whose guest RSP lies in that stack is recovered by resuming the sandbox at the
/// entry point on a fresh stack (the driver switch) instead of restarting the whole sandbox. Returns 0.
pub const COMPONENT: u64 = 11;
pub const COMPONENT_BYTES: u64 = 24;
/// `CHANNEL_CLOSE(peer)`: this sandbox closes its channel with `peer`: the peer may no longer notify it, the
/// memory leaves this sandbox's second stage, and is freed once neither end maps it. `-EBADF` if not open.
pub const CHANNEL_CLOSE: u64 = 12;
/// `NIC_LOCK_STUCK(holder)`: this NIC sharer has waited too long for sharer `holder`'s lock claim. The monitor
/// reads the claim itself; once it has seen the same claim held for [`NIC_LOCK_BOUND_MS`] while the holder's
/// sandbox ran, it faults the holder (its recovery policy follows) and clears the claim. Returns 0 (wait on);
/// `-EPERM` from a sandbox that shares no NIC, `-EINVAL` for a holder that is not another sharer.
pub const NIC_LOCK_STUCK: u64 = 13;
/// How long a sharer may keep the NIC lock (waiters report after this; the monitor faults after seeing it).
pub const NIC_LOCK_BOUND_MS: u64 = 200;
/// NIC sharer: `()` — this sharer's own check of the ring registers it can reach failed, or its receive
/// cursor stands at a slot the NIC passed without writing. The monitor audits the tail pages itself (the report
/// only triggers it), puts right what it finds and then guards them. Returns 1 if it found something, else 0.
pub const NIC_AUDIT: u64 = 14;
/// `CONSOLE_READ(gpa, len)`: console input for this sandbox — up to `len` (at most [`CONSOLE_MAX`]) bytes typed
/// while it had the input focus, copied to guest-physical `gpa` (its own writable memory). Returns how many;
/// 0 when none wait. Only when the machine was booted for input (`console=input`); the monitor then sends the
/// focused sandbox [`CONSOLE_INPUT_VECTOR`] when bytes arrive.
pub const CONSOLE_READ: u64 = 15;

/// Largest checkpoint.
pub const CHECKPOINT_MAX: u64 = 4096;
/// Checkpoint slots per sandbox: one per service that keeps state (slot 0: user programs, through the
/// `checkpoint`/`restore` system calls; slot 1: the kernel's network stack).
pub const CHECKPOINT_SLOTS: u64 = 4;
pub const SLOT_USER: u64 = 0;
pub const SLOT_NET: u64 = 1;

/// The second argument of CHECKPOINT and RESTORE.
pub fn checkpoint_arg(slot: u64, len: u64) -> u64 {
    (slot << 32) | (len & 0xFFFF_FFFF)
}

/// (slot, len) from the second argument.
pub fn checkpoint_split(arg: u64) -> (u64, u64) {
    (arg >> 32, arg & 0xFFFF_FFFF)
}

/// Largest console chunk one hypercall takes.
pub const CONSOLE_MAX: u64 = 512;

/// `FAULT` kinds.
pub const FAULT_PANIC: u64 = 1;

pub const EPERM: i64 = 1;
pub const EBADF: i64 = 9;
pub const EAGAIN: i64 = 11;
pub const ENOMEM: i64 = 12;
pub const EFAULT: i64 = 14;
pub const EINVAL: i64 = 22;
pub const ENOSYS: i64 = 38;
pub const EDQUOT: i64 = 122;

/// A hypercall's result as RAX carries it.
pub fn encode(r: Result<u64, i64>) -> u64 {
    match r {
        Ok(v) => v,
        Err(e) => (-e.abs()) as u64,
    }
}

/// Decode RAX: negative values are `-errno`.
pub fn decode(rax: u64) -> Result<u64, i64> {
    let v = rax as i64;
    if (-4095..0).contains(&v) {
        Err(-v)
    } else {
        Ok(rax)
    }
}

/// The vector the monitor sends its own sandbox (a self-IPI from root mode, delivered straight to the guest)
/// when the info page's takeover mask for it changed: remote recovery.
pub const TAKEOVER_VECTOR: u8 = 0x41;

/// Console input waits for this sandbox (`CONSOLE_READ` takes it): the UART's interrupt, routed by the monitor
/// through the I/O APIC to the core of the sandbox with the input focus, or the monitor's IPI when the focus
/// moved there with bytes already waiting.
pub const CONSOLE_INPUT_VECTOR: u8 = 0x42;

/// The only vector a sandbox may send to another core: channel notification (its handler acknowledges it in
/// [`NOTIFY_ACK_GPA`], then EOIs). Below the kernels' timer vector, so that however many arrive the tick is
/// never starved.
pub const CHANNEL_NOTIFY_VECTOR: u8 = 0xF2;

/// Guest-physical address of the u64 in which a sandbox kernel counts the channel notifications its handler
/// took (in the heartbeat page). The monitor delivers a notification only when every earlier one it sent
/// there was taken: at most one is pending per destination, whatever a sender does.
pub const NOTIFY_ACK_GPA: u64 = HEARTBEAT_GPA + 64;

/// Where every sandbox sees the shared region (inside the 3–4 GiB range its page tables map uncached).
pub const SHARED_GPA: u64 = 0xE000_0000;
pub const SHARED_SIZE: u64 = 2 << 20;

/// Guest-physical address of the sandbox's heartbeat word: a page the monitor marks reserved in the sandbox's
/// memory map (so its allocator never hands it out). The kernel bumps the first u64 on every timer tick; the
/// watchdog reads it on its timer exit.
pub const HEARTBEAT_GPA: u64 = 0x9F000;

/// Guest-physical address of CPU 0's own heartbeat word (CPU n's is 8 n bytes on, up to 64 CPUs, in the same
/// page): a sandbox on several cores bumps each CPU's at that CPU's tick as well, so the watchdog sees one core
/// hung while the others tick.
pub const CPU_HEARTBEAT_GPA: u64 = HEARTBEAT_GPA + 128;

/// The shared region's first page (paper §3.5's info page): magic, version, sandbox count and the channel
/// directory. Only the monitor writes it; it is read-only in every sandbox's EPT.
pub mod info {
    pub const MAGIC_OFFSET: u64 = 8;
    pub const MAGIC: u64 = u64::from_le_bytes(*b"QUESTVSH");
    pub const VERSION_OFFSET: u64 = 16;
    pub const VERSION: u32 = 4;
    pub const SANDBOXES_OFFSET: u64 = 20;
    pub const CHANNEL_COUNT_OFFSET: u64 = 32;
    /// Directory entries: (endpoint a u32, endpoint b u32, address u64), 16 bytes each.
    pub const CHANNEL_DIR_OFFSET: u64 = 64;
    pub const CHANNEL_DIR_ENTRY: u64 = 16;
    pub const MAX_CHANNELS: u64 = 128;
    /// Per directory entry, a u32 the monitor bumps each time it resets the channel (an endpoint sandbox was
    /// recovered and the channel's rings were wiped): an endpoint that sees it change knows its peer restarted.
    pub const CHANNEL_RESETS_OFFSET: u64 = CHANNEL_DIR_OFFSET + MAX_CHANNELS * CHANNEL_DIR_ENTRY;
    /// Per sandbox, a u32: how many times it has been recovered (its incarnation).
    pub const INCARNATIONS_OFFSET: u64 = CHANNEL_RESETS_OFFSET + MAX_CHANNELS * 4;
    pub const MAX_SANDBOXES: u64 = 64;
    /// Per sandbox, a u32 bit mask: the NIC sharers (by index) whose network service it has taken over
    /// (remote recovery); set by the monitor before it sends the sandbox [`super::TAKEOVER_VECTOR`].
    pub const TAKEOVERS_OFFSET: u64 = INCARNATIONS_OFFSET + MAX_SANDBOXES * 4;
    /// The shared NIC as the monitor set it up (sharers read it, none can write it): its state
    /// ([`NIC_READY`] once the monitor has programmed it), how many sharers, and per sharer index its MAC (a
    /// u64, low 48 bits, byte 0 first) and IPv4 address (a u32 holding the four bytes in network order).
    pub const NIC_STATE_OFFSET: u64 = TAKEOVERS_OFFSET + MAX_SANDBOXES * 4;
    pub const NIC_SHARERS_OFFSET: u64 = NIC_STATE_OFFSET + 4;
    pub const NIC_MACS_OFFSET: u64 = NIC_STATE_OFFSET + 8;
    pub const NIC_MAX_SHARERS: u64 = 8;
    pub const NIC_IPS_OFFSET: u64 = NIC_MACS_OFFSET + NIC_MAX_SHARERS * 8;
    pub const NIC_NONE: u32 = 0;
    pub const NIC_READY: u32 = 2;
    pub const NIC_FAILED: u32 = 3;
    const _: () = assert!(NIC_STATE_OFFSET % 8 == 0 && NIC_IPS_OFFSET + NIC_MAX_SHARERS * 4 <= 4096);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip() {
        assert_eq!(decode(encode(Ok(0xE000_0000))), Ok(0xE000_0000));
        assert_eq!(decode(encode(Err(ENOSYS))), Err(ENOSYS));
        assert_eq!(decode(encode(Err(-EINVAL))), Err(EINVAL));
        assert_eq!(encode(Err(ENOSYS)) as i64, -38);
        // Large addresses are results, not errors.
        assert_eq!(decode(0xFFFF_FFFF_0000_0000), Ok(0xFFFF_FFFF_0000_0000));
    }

    #[test]
    fn checkpoint_arguments_round_trip() {
        assert_eq!(checkpoint_split(checkpoint_arg(SLOT_NET, 4096)), (SLOT_NET, 4096));
        assert_eq!(checkpoint_split(checkpoint_arg(3, 0)), (3, 0));
    }

    #[test]
    fn numbers_are_distinct() {
        let all = [DONE, REPORT_EXITS, EXIT_COUNT, CHANNEL_OPEN, PEER_APIC, FAULT, CONSOLE_WRITE, BOOTED, CHECKPOINT, RESTORE, COMPONENT, CHANNEL_CLOSE, NIC_LOCK_STUCK, NIC_AUDIT, CONSOLE_READ];
        for (i, a) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|b| a != b));
        }
    }

    #[test]
    fn heartbeat_is_below_the_kernel_and_page_aligned() {
        assert_eq!(HEARTBEAT_GPA % 4096, 0);
        assert!(HEARTBEAT_GPA + 4096 <= 0x10_0000);
        assert!(CPU_HEARTBEAT_GPA >= NOTIFY_ACK_GPA + 8 && CPU_HEARTBEAT_GPA + 8 * 64 <= HEARTBEAT_GPA + 4096);
    }
}
