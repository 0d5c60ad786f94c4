//! Boot the SMP kernel in QEMU and check what it reports.
mod common;
use common::{boot, require};

fn qemu(args: &[&str]) -> common::Run {
    require("qemu-system-x86_64");
    boot(&[&["--emulator", "qemu", "--timeout", "120"], args].concat())
}

fn check_boot(cpus: u32, firmware: &str) {
    let r = qemu(&["--cpus", &cpus.to_string(), "--firmware", firmware]);
    r.check(r.code == 0, "boot did not succeed");
    r.check(r.done_status() == Some(0), "no QUESTV DONE status=0");
    let b = r.results("boot");
    r.check(b.len() == 1, "expected one RESULT boot line");
    r.check(b[0].get_u64("cpus_online") == Some(u64::from(cpus)), "wrong cpus_online");
    r.check(b[0].get("mode") == Some("smp"), "wrong mode");
    r.check(b[0].get("firmware") == Some(firmware), "the kernel did not see the firmware that booted it");
    // The AP trampoline page comes from the memory map: page aligned, below 640 KiB, not page 0.
    let t = b[0].get("trampoline").and_then(|t| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok());
    r.check(cpus == 1 || t.is_some_and(|t| t > 0 && t < 0xA_0000 && t % 4096 == 0), "bad AP trampoline page");
    // The scheduler ran all its test threads on every CPU (which needs preemption: they never yield).
    let sched = r.results("sched");
    for c in 0..u64::from(cpus) {
        let line = sched.iter().find(|s| s.get_u64("cpu") == Some(c));
        r.check(line.is_some_and(|s| s.get_u64("threads_ran") == Some(3)), &format!("cpu {c}: threads did not all run"));
        r.check(line.is_some_and(|s| s.get_u64("preemptions").unwrap_or(0) > 0), &format!("cpu {c}: no preemption"));
    }
    let ipi = r.results("ipi");
    r.check(ipi.len() == 1, "expected one RESULT ipi line");
    let (sent, received) = (ipi[0].get_u64("sent").unwrap(), ipi[0].get_u64("received").unwrap());
    r.check(sent > 0 && sent == received, "IPIs lost");
    r.check(ipi[0].get_u64("targets") == Some(u64::from(cpus)), "IPI test did not reach every CPU");
}

#[test]
fn boots_on_one_cpu() {
    check_boot(1, "bios");
}

#[test]
fn boots_on_four_cpus() {
    check_boot(4, "bios");
}

/// The same hybrid image under OVMF: GRUB for x86_64-EFI, ExitBootServices done by GRUB, the memory map and
/// the ACPI RSDP from multiboot2 tags, the AP trampoline in a page the UEFI memory map leaves free.
#[test]
fn boots_on_four_cpus_under_uefi() {
    check_boot(4, "uefi");
}

/// The image written raw to a USB stick (docs/hardware.md) boots under both firmwares.
#[test]
fn the_image_boots_from_a_usb_stick_under_bios_and_uefi() {
    for fw in ["bios", "uefi"] {
        let r = qemu(&["--cpus", "2", "--firmware", fw, "--media", "usb"]);
        r.check(r.code == 0 && r.done_status() == Some(0), "the USB stick did not boot");
        r.check(r.results("boot").first().and_then(|b| b.get("firmware")) == Some(fw), "wrong firmware seen");
    }
}

/// What docs/hardware.md asks a failing machine's owner for: the ACPI dump, here under UEFI.
#[test]
fn acpidump_works_under_uefi() {
    let r = qemu(&["--cpus", "2", "--firmware", "uefi", "--run", "ktest acpidump"]);
    r.check(r.code == 0, "ktest acpidump failed under UEFI");
    let d = r.results("acpidump");
    r.check(d.len() == 1 && d[0].get_u64("revision") == Some(2), "expected one RESULT acpidump line with an ACPI 2 root (XSDT)");
    // The XSDT and the MADT whole ("APIC" = 41504943 in hex), the other tables' headers.
    let dumps: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("ACPIDUMP addr=")).collect();
    r.check(dumps.iter().any(|l| l.contains("hex=58534454")) && dumps.iter().any(|l| l.contains("hex=41504943")), "no XSDT or MADT in the dump");
}

fn check_exception(cpus: &str, kind: &str, vector: u64, mnemonic: &str) -> common::Run {
    let r = qemu(&["--cpus", cpus, "--run", &format!("ktest fault {kind}")]);
    r.check(r.code == 3, "a kernel exception must end the run with exit code 3 (panic)");
    let e = r.results("exception");
    r.check(e.len() == 1, "expected one RESULT exception line");
    r.check(e[0].get_u64("vector") == Some(vector), "wrong vector");
    r.check(e[0].get("rip").is_some() && e[0].get("cr2").is_some(), "dump lacks rip/cr2");
    r.check(r.stdout.contains(&format!("EXCEPTION #{mnemonic}")), "no readable exception line");
    r.check(r.stdout.contains("RIP=0x") && r.stdout.contains("RAX="), "no register dump");
    r.check(r.stdout.contains("KERNEL PANIC on cpu"), "no panic line");
    r.check(r.done_status().is_none(), "a panicking kernel must not report DONE");
    r
}

#[test]
fn page_fault_is_dumped_and_fails_the_run() {
    let r = check_exception("2", "page", 14, "PF");
    let e = &r.results("exception")[0];
    r.check(e.get_u64("cr2") == Some(0x7fff_dead_0000), "CR2 is not the faulting address");
    r.check(r.stdout.contains("page not present, write, supervisor"), "#PF error code not decoded");
}

#[test]
fn invalid_opcode_is_dumped_and_fails_the_run() {
    check_exception("1", "ud", 6, "UD");
}

#[test]
fn fault_on_an_application_processor_halts_the_machine() {
    let r = check_exception("2", "ap-page", 14, "PF");
    r.check(r.results("exception")[0].get_u64("cpu") == Some(1), "fault not reported on cpu 1");
}

#[test]
fn unknown_program_reports_status_127() {
    let r = qemu(&["--cpus", "1", "--run", "nosuchprogram"]);
    r.check(r.code == 1, "non-zero guest status must give exit code 1");
    r.check(r.done_status() == Some(127), "expected QUESTV DONE status=127");
}
