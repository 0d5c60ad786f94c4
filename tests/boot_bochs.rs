//! Boot the SMP kernel under Bochs (the VT test platform; here it exercises x2APIC mode and Bochs' firmware).
mod common;
use common::{boot, require};

#[test]
fn boots_on_four_cpus_in_bochs() {
    require("bochs");
    let r = boot(&["--emulator", "bochs", "--cpus", "4", "--timeout", "600"]);
    r.check(r.code == 0, "Bochs boot did not succeed");
    let b = r.results("boot");
    r.check(b.len() == 1 && b[0].get_u64("cpus_online") == Some(4), "expected cpus_online=4");
    r.check(b[0].get("mode") == Some("smp"), "wrong mode");
    r.check(b[0].get("apic") == Some("x2apic"), "Bochs' Skylake model offers x2APIC; the kernel should use it");
    let ipi = r.results("ipi");
    r.check(ipi.len() == 1 && ipi[0].get("sent") == ipi[0].get("received"), "IPIs lost");
}
