//! `ktest attack`: a hostile sandbox kernel tries each way around its monitor; each must be refused or stop
//! only the attacker.

use questv_arch::paging::{phys_to_virt, virt_to_phys};
use questv_arch::{cpu, lapic};
use questv_kernel::{kprintln, result};
use crate::fixup::{expect, raised, EXPECTED_FIXUP};
use crate::util::{channel_target, forbidden_write, pause_ms, write_own_text};

const GP: u64 = 13;
const UD: u64 = 6;

/// WRMSR the monitor should refuse with #GP; true if it did.
fn wrmsr_refused(msr: u32, value: u64) -> bool {
    expect(GP);
    // SAFETY: deliberate attack on the monitor's MSR policy: a refused WRMSR raises #GP, which kernel_fixup
    // turns into a jump to label 2 (the sequence stores that address first); an allowed one takes effect,
    // which is what the test is there to catch.
    unsafe {
        core::arch::asm!(
            "lea {r}, [rip + 2f]", "mov [{slot}], {r}", "wrmsr", "2:",
            r = out(reg) _, slot = in(reg) EXPECTED_FIXUP.as_ptr(),
            in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
        );
    }
    raised()
}

/// RDMSR the monitor should refuse with #GP; true if it did.
fn rdmsr_refused(msr: u32) -> bool {
    expect(GP);
    // SAFETY: deliberate: a refused RDMSR raises #GP, resumed at label 2 by kernel_fixup.
    unsafe {
        core::arch::asm!(
            "lea {r}, [rip + 2f]", "mov [{slot}], {r}", "rdmsr", "2:",
            r = out(reg) _, slot = in(reg) EXPECTED_FIXUP.as_ptr(),
            in("ecx") msr, out("eax") _, out("edx") _,
        );
    }
    raised()
}

/// An ICR write (x2APIC layout: destination in bits 32–63) the monitor should refuse with #GP; true if it did.
/// On xAPIC machines the destination goes to ICR high (a trapped write the monitor only remembers) and the
/// low half to ICR low, the write that sends.
fn icr_refused(value: u64) -> bool {
    if lapic::is_x2apic() {
        return wrmsr_refused(0x830, value);
    }
    let base = phys_to_virt(lapic::xapic_base());
    // SAFETY: deliberate: ICR high holds only the destination; the monitor checks at the ICR low write.
    unsafe { core::ptr::write_volatile((base + 0x310) as *mut u32, ((value >> 32) as u32) << 24) };
    expect(GP);
    // SAFETY: deliberate attack on the monitor's IPI policy: a refused ICR low write raises #GP, resumed at
    // label 2 by kernel_fixup; an allowed one sends the IPI, which the test is there to catch.
    unsafe {
        core::arch::asm!(
            "lea {r}, [rip + 2f]", "mov [{slot}], {r}", "mov dword ptr [{icr}], {v:e}", "2:",
            r = out(reg) _, slot = in(reg) EXPECTED_FIXUP.as_ptr(), icr = in(reg) base + 0x300, v = in(reg) value as u32,
        );
    }
    raised()
}

/// CLGI, STGI and VMLOAD in a sandbox: #UD (the monitor intercepts every SVM instruction; a VMX CPU has none).
fn svm_instructions_refused() -> bool {
    let mut all = true;
    for i in 0..3 {
        expect(UD);
        // SAFETY: deliberate: each instruction exits (SVM) or faults (VMX CPU); either way #UD, resumed at label 2.
        unsafe {
            match i {
                0 => core::arch::asm!("lea {r}, [rip + 2f]", "mov [{slot}], {r}", "clgi", "2:", r = out(reg) _, slot = in(reg) EXPECTED_FIXUP.as_ptr()),
                1 => core::arch::asm!("lea {r}, [rip + 2f]", "mov [{slot}], {r}", "stgi", "2:", r = out(reg) _, slot = in(reg) EXPECTED_FIXUP.as_ptr()),
                _ => core::arch::asm!("lea {r}, [rip + 2f]", "mov [{slot}], {r}", "vmload rax", "2:", r = out(reg) _, slot = in(reg) EXPECTED_FIXUP.as_ptr(), in("rax") 0x1000u64),
            }
        }
        all &= raised();
    }
    all
}

/// VMXOFF in a sandbox: the monitor must inject #UD.
fn vmxoff_refused() -> bool {
    expect(UD);
    // SAFETY: deliberate: in VMX non-root VMXOFF exits and the monitor injects #UD, resumed at label 2.
    unsafe {
        core::arch::asm!("lea {r}, [rip + 2f]", "mov [{slot}], {r}", "vmxoff", "2:",
                         r = out(reg) _, slot = in(reg) EXPECTED_FIXUP.as_ptr());
    }
    raised()
}

fn outcome(ok: bool) -> &'static str {
    if ok {
        "refused"
    } else {
        "not_contained"
    }
}

/// VT attack test hook (kernel mode; sandbox 0 attacks — sandbox 2 for `channel` — and the others run `then`).
/// Memory attacks (`peer`, `monitor`, `ept`, `channel`, `text`) must end in a reported EPT violation; `port-reset`
/// must stop the sandbox (`reason=io`), `panic` (`reason=panic`), `hang` (`reason=watchdog`, needs
/// `watchdog_ms`); `pci`, `msr`, `icr-*`, `vmx` must be refused (the attacker goes on to run `then` too);
/// `user-vmcall` runs the `uvmcall` program; `forge` prints fake monitor lines and writes COM1 directly;
/// `second-core`: the sandbox on several cores writes its own kernel text from its last core while its first
/// core goes on (the whole sandbox must stop or be recovered; once recovered it runs `then`);
/// `second-core-hang`: its last core spins with interrupts off instead (its watchdog must see that core).
pub(crate) fn attack(kind: &str, then: Option<&str>) -> i32 {
    let run_then = |status: i32| match then {
        Some(cmd) if status == 0 => questv_kernel::proc::run_command(cmd),
        _ => status,
    };
    let Some(sandbox) = questv_kernel::sandbox::id() else {
        kprintln!("ktest attack: only meaningful in a VT sandbox");
        return 2;
    };
    // The channel attacks come from a third sandbox (2) while sandboxes 0 and 1 use the channel; in the flood,
    // sandbox 1 is the victim, which closes the channel under it.
    let attacker = if matches!(kind, "channel" | "channel-exhaust") { 2 } else { 0 };
    if kind == "peer-ipi-flood" && sandbox == 1 {
        return run_then(crate::attack_chan::flood_victim());
    }
    if kind == "console-flood" && sandbox == 1 {
        return run_then(crate::attack_console::bystander());
    }
    if kind == "second-core" || kind == "second-core-hang" {
        // The attacker is the sandbox on several cores; the others (and it, recovered) run `then`.
        return if questv_kernel::smp::cpus_online() < 2 || questv_kernel::sandbox::incarnation() > 0 {
            run_then(0)
        } else {
            crate::attack_cpu::fault_on_last_core(kind == "second-core-hang")
        };
    }
    if sandbox != attacker {
        return run_then(0);
    }
    let t = questv_kernel::sandbox::attack_targets();
    let peer_apic = || questv_kernel::sandbox::peer_apic(1).unwrap_or(1);
    let refused = |name: &str, ok: bool| {
        result!("attack", "kind={} outcome={}", name, outcome(ok));
        run_then(if ok { 0 } else { 1 })
    };
    let target = match kind {
        "channel" => channel_target(),
        "peer" => t.map(|t| t.peer),
        "monitor" => t.map(|t| t.vmcs),
        "ept" => t.map(|t| t.stage2),
        "text" => Some(virt_to_phys(attack as *const () as u64)),
        "vmx" => return run_then(if virtualization_refused() { 0 } else { 1 }),
        "port-reset" => {
            kprintln!("ktest attack: sandbox {} writes the reset ports (0xCF9, 0x64, 0x92)", sandbox);
            // SAFETY: deliberate: without the monitor's I/O bitmap any of these resets the machine.
            unsafe {
                cpu::outb(0xCF9, 0x06);
                cpu::outb(0x64, 0xFE);
                cpu::outb(0x92, 0x01);
            }
            result!("attack", "kind=port-reset outcome=not_contained");
            return 1;
        }
        "pci" => return refused("pci", pci_refused()),
        "msr" => return refused("msr", msrs_refused()),
        "icr-nmi" => return refused("icr-nmi", icr_refused((u64::from(peer_apic()) << 32) | (4 << 8) | (1 << 14))),
        "icr-init" => {
            let init = (u64::from(peer_apic()) << 32) | (5 << 8) | (1 << 14) | (1 << 15);
            let all_but_self = (3 << 18) | (5 << 8) | (1 << 14);
            return refused("icr-init", icr_refused(init) && icr_refused(all_but_self));
        }
        "icr-vector" => return refused("icr-vector", ipi_vectors_refused(peer_apic())),
        "apic" => {
            // xAPIC page writes the monitor must drop (only a trapped xAPIC page can drop them).
            if lapic::is_x2apic() {
                kprintln!("ktest attack apic: only meaningful with a trapped xAPIC page");
                return 2;
            }
            return refused("apic", apic_writes_refused());
        }
        "panic" => panic!("ktest attack panic: a sandbox kernel panics"),
        "hang" => {
            kprintln!("ktest attack: sandbox {} spins with interrupts off", sandbox);
            cpu::disable_interrupts();
            loop {
                core::hint::spin_loop();
            }
        }
        "user-vmcall" => return questv_kernel::proc::run_command("uvmcall"),
        "restore-text" => return refused("restore-text", restore_over_text_refused()),
        "forge" => {
            forge_monitor_output();
            return run_then(0);
        }
        "state-leak" => return run_then(state_leak()),
        "db-loop" => return crate::attack_cpu::db_loop(),
        "ac-loop" => return run_then(crate::attack_cpu::ac_loop()),
        "x2apic-lvt" => return run_then(crate::attack_cpu::x2apic_lvt()),
        "nic-dma" => {
            let Some(t) = t else {
                kprintln!("ktest attack: the monitor gave no target addresses");
                return 2;
            };
            return run_then(crate::attack_nic::nic_dma(&[("peer", t.peer), ("monitor", t.vmcs)]));
        }
        "nic-fence" => {
            let Some(t) = t else {
                kprintln!("ktest attack: the monitor gave no target addresses");
                return 2;
            };
            return run_then(crate::attack_nic::nic_fence(t.peer, t.vmcs));
        }
        "nic-reset" => return run_then(crate::attack_nic::nic_reset()),
        "nic-storm" => return run_then(crate::attack_nic::nic_storm()),
        "nic-identity" => return run_then(crate::attack_nic::nic_identity()),
        "nic-lock" => return run_then(crate::attack_nic::nic_lock()),
        "nic-ring" => return run_then(crate::attack_nic::nic_ring()),
        "peer-ipi-flood" => return run_then(crate::attack_chan::flood_attacker()),
        "console-flood" => return run_then(crate::attack_console::flood()),
        "channel-exhaust" => return run_then(crate::attack_chan::channel_exhaust()),
        "slow-crash-loop" => {
            // Every incarnation faults, each long enough after its launch that a rule counting only faults
            // soon after a launch never fires (it used to take 2 s): the sliding window must.
            kprintln!("ktest attack: sandbox {} (incarnation {}) panics 2.1 s after its launch", sandbox, questv_kernel::sandbox::incarnation());
            pause_ms(2100);
            panic!("ktest attack slow-crash-loop: a fault 2.1 s after every launch");
        }
        _ => {
            kprintln!("ktest attack: unknown kind {:?}", kind);
            return 2;
        }
    };
    let Some(addr) = target else {
        kprintln!("ktest attack: the monitor gave no {} address", kind);
        return 2;
    };
    kprintln!("ktest attack: sandbox {} writes to host-physical 0x{:x} ({})", sandbox, addr, kind);
    if kind == "text" {
        write_own_text(addr);
    } else {
        forbidden_write(addr);
    }
    result!("attack", "kind={} outcome=not_contained", kind);
    1
}

/// VMX and SVM instructions are #UD in a sandbox; a garbage hypercall is ENOSYS.
fn virtualization_refused() -> bool {
    let ud = vmxoff_refused();
    result!("attack", "kind=vmxoff outcome={}", if ud { "ud" } else { "not_contained" });
    let svm_ud = svm_instructions_refused();
    result!("attack", "kind=svm_instructions outcome={}", if svm_ud { "ud" } else { "not_contained" });
    let r = cpu::vmcall(0xDEAD_BEEF, 0x1234, 0) as i64;
    result!("attack", "kind=vmcall_garbage outcome={}", if r == -38 { "enosys" } else { "not_contained" });
    ud && svm_ud && r == -38
}

fn pci_refused() -> bool {
    // SAFETY (block): deliberate PCI configuration accesses (bus 0, device 0 and 1): read the IDs, try to
    // switch on bus mastering. Refused: reads see all-ones, writes are dropped.
    let (id, after) = unsafe {
        cpu::outl(0xCF8, 0x8000_0000);
        let id = cpu::inl(0xCFC);
        cpu::outl(0xCF8, 0x8000_0804);
        cpu::outl(0xCFC, 0x0000_0007);
        cpu::outl(0xCF8, 0x8000_0804);
        (id, cpu::inl(0xCFC))
    };
    kprintln!("ktest attack: PCI 00:00.0 id=0x{:08x}, 00:01.0 command after write=0x{:08x}", id, after);
    id == u32::MAX && after == u32::MAX
}

fn msrs_refused() -> bool {
    // SAFETY: reading APIC_BASE is allowed and harmless.
    let apic_base = unsafe { cpu::rdmsr(0x1B) };
    let checks = [
        ("mtrr_def_type", wrmsr_refused(0x2FF, 0)),
        ("apic_base_disable", wrmsr_refused(0x1B, apic_base & !(1 << 11))),
        ("mc0_status", wrmsr_refused(0x401, 0)),
        ("microcode_update", wrmsr_refused(0x79, 0)),
        ("tsc_write", wrmsr_refused(0x10, 0)),
        ("feature_control_read", rdmsr_refused(0x3A)),
        ("outside_bitmap_write", wrmsr_refused(0x4000_0000, 0)),
        ("outside_bitmap_read", rdmsr_refused(0xC001_0000)),
    ];
    for (name, ok) in checks {
        kprintln!("ktest attack: msr {}: {}", name, outcome(ok));
    }
    checks.iter().all(|c| c.1)
}

/// IPIs with any vector but the channel one, to a core without a channel, or broadcast, are refused.
fn ipi_vectors_refused(peer_apic: u32) -> bool {
    let p = u64::from(peer_apic) << 32;
    let checks = [
        icr_refused(p | (1 << 14) | 14),                                   // exception vector
        icr_refused(p | (1 << 14) | 0x40),                                 // not the channel vector
        icr_refused(p | (1 << 14) | u64::from(questv_kernel::channel::endpoint::VECTOR_CHANNEL)), // no channel
        icr_refused((2 << 18) | (1 << 14) | 0x40),                         // broadcast
    ];
    // A storm of refused IPIs changes nothing either.
    let storm = (0..1000).all(|_| icr_refused(p | (1 << 14) | 0x40));
    checks.iter().all(|&c| c) && storm
}

/// The xAPIC page writes the monitor must drop: the APIC id, and LINT1 set to deliver NMIs to this core.
fn apic_writes_refused() -> bool {
    let base = phys_to_virt(lapic::xapic_base());
    // SAFETY (block): deliberate writes to this core's own APIC registers; the monitor must drop them.
    let (id_before, id_after, lint1) = unsafe {
        let id = (base + 0x20) as *mut u32;
        let before = core::ptr::read_volatile(id);
        core::ptr::write_volatile(id, before ^ (0x0F << 24));
        core::ptr::write_volatile((base + 0x360) as *mut u32, 4 << 8);
        (before, core::ptr::read_volatile(id), core::ptr::read_volatile((base + 0x360) as *const u32))
    };
    kprintln!("ktest attack: APIC id 0x{:x} -> 0x{:x}, LINT1 0x{:x}", id_before, id_after, lint1);
    id_after == id_before && (lint1 >> 8) & 7 != 4
}

fn restore_over_text_refused() -> bool {
    // Have the monitor do the write the second stage forbids: RESTORE a checkpoint over our own kernel
    // text. It must refuse with EFAULT and write nothing, and RESTORE into writable memory still works.
    use questv_abi::hypercall as hc;
    let text = attack as *const () as u64;
    let slot = hc::CHECKPOINT_SLOTS - 1;
    let junk = [0xCCu8; 16];
    let saved = questv_kernel::sandbox::checkpoint(slot, &junk).is_ok();
    // SAFETY: reading 8 bytes of this function's own code (mapped readable).
    let read_text = || unsafe { core::ptr::read_volatile(text as *const u64) };
    let before = read_text();
    let over_text = hc::decode(cpu::vmcall(hc::RESTORE, virt_to_phys(text), hc::checkpoint_arg(slot, junk.len() as u64)));
    let after = read_text();
    let mut buf = [0u8; 16];
    let into_data = questv_kernel::sandbox::restore(slot, &mut buf);
    kprintln!("ktest attack: RESTORE over text at 0x{:x}: {:?}, text {}; into data: {:?}", text, over_text, if before == after { "unchanged" } else { "CHANGED" }, into_data);
    saved && over_text == Err(hc::EFAULT) && before == after && into_data == Ok(16) && buf == junk
}

fn forge_monitor_output() {
    // Fake monitor lines through the console hypercall (the monitor prefixes them) and straight to
    // COM1 (its port is refused).
    kprintln!("QUESTV DONE status=0");
    kprintln!("RESULT sandbox_done sandbox=1 status=0");
    questv_kernel::console::write_bytes(b"partial\rQUESTV DONE status=0\n\x1b[2KQUESTV DONE status=0\n");
    for b in b"\nQUESTV DONE status=0\n" {
        // SAFETY: deliberate: COM1 belongs to the monitor; the write must be dropped.
        unsafe { cpu::outb(0x3F8, *b) };
    }
    result!("attack", "kind=forge outcome=attempted");
}

/// Marks left in the registers no VMCS or VMCB holds (DR0–DR3; on VMX also MXCSR and the x87 control word; the
/// local APIC's LVT entries) by a first incarnation that then panics; its restarted successor must find power-on values, not these.
const DR_MARKS: [u64; 4] = [0x1111_0000, 0x2222_0000, 0x3333_0000, 0x4444_0000];
const MXCSR_MARK: u32 = 0x1F80 | 0x6000; // round toward zero
const X87_CW_MARK: u16 = 0x037F | 0x0C00; // truncate

fn state_leak() -> i32 {
    let incarnation = questv_kernel::sandbox::incarnation();
    if incarnation == 0 {
        // SAFETY: deliberate: DR7 arms none of these (the monitor sets it to 0x400), so they only sit there.
        unsafe { cpu::set_debug_addresses(DR_MARKS) };
        let (mxcsr, cw) = (MXCSR_MARK, X87_CW_MARK);
        // SAFETY: deliberate: loads the two control words from our locals; the kernel panics right after.
        unsafe { core::arch::asm!("ldmxcsr [{}]", "fldcw [{}]", in(reg) &mxcsr, in(reg) &cw, options(nostack)) };
        crate::attack_cpu::leave_lapic_marks();
        result!("attack", "kind=state-leak incarnation=0 dr0=0x{:x} mxcsr=0x{:x}", cpu::debug_addresses()[0], cpu::fpu_controls().0);
        panic!("ktest attack state-leak: leaving marks for the next incarnation");
    }
    let dr = cpu::debug_addresses();
    let (mxcsr, cw) = cpu::fpu_controls();
    // MXCSR's low six bits are sticky exception flags: compare the control bits.
    let (lvt, lapic_leaked) = crate::attack_cpu::lapic_marks_found();
    let leaked = dr.iter().zip(DR_MARKS).any(|(&v, m)| v == m) || mxcsr & !0x3F == MXCSR_MARK || cw == X87_CW_MARK || lapic_leaked;
    result!(
        "attack",
        "kind=state-leak incarnation={} dr0=0x{:x} dr1=0x{:x} dr2=0x{:x} dr3=0x{:x} mxcsr=0x{:x} x87_cw=0x{:x} lvt_perf=0x{:x} lvt_thermal=0x{:x} outcome={}",
        incarnation, dr[0], dr[1], dr[2], dr[3], mxcsr, cw, lvt[0], lvt[1], if leaked { "not_contained" } else { "refused" }
    );
    i32::from(leaked)
}
