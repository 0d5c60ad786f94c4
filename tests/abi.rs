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

/// docs/processes.md, "Every system call": every Linux 6.1 call is named exactly once, as implemented, partial
/// or ENOSYS, and the implemented and partial ones are exactly those the kernel's dispatcher handles.
#[test]
fn the_system_call_list_covers_every_call_and_matches_the_dispatcher() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/processes.md")).unwrap();
    let start = doc.find("## Every system call").expect("no \"Every system call\" section");
    let section = &doc[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let names_in = |part: &str| -> Vec<String> { part.split('`').skip(1).step_by(2).map(str::to_string).collect() };
    let enosys_at = section.find("**ENOSYS**").expect("no ENOSYS list");
    let partial_at = section.find("**Partial**").expect("no Partial list");
    let implemented_at = section.find("**Implemented**").expect("no Implemented list");
    let implemented = names_in(&section[implemented_at..partial_at]);
    // Partial entries: the name is the first backticked word of each "- `name`: ..." line.
    let partial: Vec<String> = section[partial_at..enosys_at].lines().filter_map(|l| l.strip_prefix("- `")).map(|l| l[..l.find('`').unwrap()].to_string()).collect();
    let enosys = names_in(&section[enosys_at..]);
    let all_linux: Vec<&str> = (0..=450).filter_map(questv_kernel::syscall_names::name).collect();
    let mut seen = BTreeMap::new();
    for n in implemented.iter().chain(&partial).chain(&enosys) {
        *seen.entry(n.clone()).or_insert(0) += 1;
    }
    for n in &all_linux {
        assert_eq!(seen.get(*n), Some(&1), "{n} must be listed exactly once");
    }
    assert_eq!(seen.len(), all_linux.len(), "the lists name calls Linux 6.1 does not have");
    // What the dispatcher handles: the `nr::` constants its match names, below questv's own range.
    let shim = std::fs::read_to_string(format!("{root}/libc-shim/src/lib.rs")).unwrap();
    let consts: BTreeMap<String, u64> = shim
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| {
            let (name, rest) = l.split_once(": u64 = ")?;
            Some((name.to_string(), rest.trim_end_matches(';').parse().ok()?))
        })
        .collect();
    let dispatch = std::fs::read_to_string(format!("{root}/kernel/src/syscall.rs")).unwrap();
    let mut handled: Vec<&str> = dispatch
        .split("nr::")
        .skip(1)
        .filter_map(|s| consts.get(s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next()?))
        .filter(|&&n| n < 1000)
        .filter_map(|&n| questv_kernel::syscall_names::name(n))
        .collect();
    handled.sort();
    handled.dedup();
    let mut listed: Vec<&str> = implemented.iter().chain(&partial).map(String::as_str).collect();
    listed.sort();
    assert_eq!(listed, handled, "the implemented and partial lists must be what the dispatcher handles");
}
