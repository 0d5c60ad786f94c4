//! Attack test (VT): a user process tries to talk to the monitor directly (VMCALL or VMMCALL). Hypercalls are for the sandbox
//! kernel only (CPL 0): the monitor must inject #UD, so the child dies of SIGILL and its forged "done, status 0"
//! never reaches the monitor. Prints `RESULT attack kind=user-vmcall outcome=refused|not_contained`.
#![no_std]
#![no_main]

use questv_libc_shim::{self as sys, println};

questv_libc_shim::entry!(main);

/// `questv_vmx::hypercall::DONE` (the ABI's number; this program deliberately forges it).
const HYPERCALL_DONE: u64 = 1;

/// CPUID vendor "AuthenticAMD" or "HygonGenuine" (CPUID is allowed in user mode; the monitor answers it).
fn is_amd() -> bool {
    let ebx = core::arch::x86_64::__cpuid(0).ebx;
    ebx == u32::from_le_bytes(*b"Auth") || ebx == u32::from_le_bytes(*b"Hygo")
}

fn main(_args: &[&str]) -> i32 {
    let pid = sys::fork();
    if pid == 0 {
        // SAFETY: deliberate: the hypercall instruction (VMCALL on Intel, VMMCALL on AMD) from CPL 3. Under the
        // monitor it raises #UD; nothing else happens.
        unsafe {
            if is_amd() {
                core::arch::asm!("vmmcall", inout("rax") HYPERCALL_DONE => _, in("rcx") 0u64);
            } else {
                core::arch::asm!("vmcall", inout("rax") HYPERCALL_DONE => _, in("rcx") 0u64);
            }
        }
        println!("uvmcall: VMCALL returned to user mode");
        sys::exit(0);
    }
    if pid < 0 {
        println!("uvmcall: fork failed: {}", pid);
        return 1;
    }
    let (_, status) = sys::waitpid(pid, 0);
    let signal = if sys::wait::exited(status) { 0 } else { sys::wait::term_signal(status) };
    let refused = signal == 4; // SIGILL
    println!("RESULT attack kind=user-vmcall outcome={} signal={}", if refused { "refused" } else { "not_contained" }, signal);
    if refused { 0 } else { 1 }
}
