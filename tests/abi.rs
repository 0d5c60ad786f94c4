//! Host checks of the user/kernel boundary: the C header spells questv's own system call numbers as the kernel and
//! the Rust API do (questv_libc_shim::nr), and
//! the kernel's ELF checks accept the real user programs this build produced.
use std::collections::BTreeMap;

fn header_numbers() -> BTreeMap<String, u64> {
    let h = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/libc-shim/include/questv/syscall.h")).unwrap();
    h.lines()
        .filter_map(|l| l.strip_prefix("#define SYS_"))
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap().to_uppercase(), w.next().unwrap().parse().unwrap())
        })
        .collect()
}

#[test]
fn syscall_numbers_agree() {
    use questv_libc_shim::nr;
    let header = header_numbers();
    // questv's own calls only: C programs take Linux's numbers from musl's <sys/syscall.h>.
    let rust = [
        ("QUESTV_CYCLES", nr::QUESTV_CYCLES), ("QUESTV_FREE_FRAMES", nr::QUESTV_FREE_FRAMES),
        ("QUESTV_NCPUS", nr::QUESTV_NCPUS), ("QUESTV_SANDBOX", nr::QUESTV_SANDBOX), ("QUESTV_VMEXITS", nr::QUESTV_VMEXITS), ("CHAN_OPEN", nr::CHAN_OPEN), ("CHAN_SEND", nr::CHAN_SEND),
        ("CHAN_RECV", nr::CHAN_RECV), ("CHAN_CLOSE", nr::CHAN_CLOSE), ("CHAN_ENDPOINT", nr::CHAN_ENDPOINT),
        ("VCPU_CREATE", nr::VCPU_CREATE), ("VCPU_BIND", nr::VCPU_BIND), ("VCPU_INFO", nr::VCPU_INFO),
        ("VCPU_SET", nr::VCPU_SET), ("VCPU_TRACE", nr::VCPU_TRACE),
        ("NET_INFO", nr::NET_INFO), ("NET_WAIT", nr::NET_WAIT),
        ("STATE_SAVE", nr::STATE_SAVE), ("STATE_LOAD", nr::STATE_LOAD), ("INCARNATION", nr::INCARNATION),
    ];
    for (name, n) in rust {
        assert_eq!(header.get(name), Some(&n), "syscall.h disagrees on {name}");
    }
    assert_eq!(header.len(), rust.len(), "syscall.h has numbers the Rust API lacks");
}

#[test]
fn real_c_programs_pass_the_elf_checks() {
    let dir = std::path::Path::new(env!("QUESTV_USER_C_DIR"));
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let bytes = std::fs::read(e.path()).unwrap();
        let plan = questv_kernel::elf::plan(&bytes).unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
        assert!(plan.entry >= questv_kernel::mm::uspace::USER_BASE);
        n += 1;
    }
    assert!(n >= 2, "C programs missing from {}", dir.display());
    assert!(questv_kernel::elf::plan(&questv::bad_elf()).is_err(), "the ramdisk's badelf must be refused");
}
