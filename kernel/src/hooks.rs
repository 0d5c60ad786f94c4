//! Where a test layer steps into the product. The product calls these entry points; the test layer (`ktest`)
//! installs itself from the image's entry point (`main.rs`), so no product module names it. Without a test
//! layer the entry points answer the way a kernel without tests would.
#![forbid(unsafe_code)]

use questv_arch::trap::TrapFrame;
use spin::Once;

/// Exit status for an unknown program (as a shell would report it).
pub const STATUS_NOT_FOUND: i32 = 127;

/// What a test layer provides.
pub struct TestLayer {
    /// Runs a `ktest ...` command, or the boot self-test when there is no command; returns the exit status.
    pub run: fn(Option<&str>) -> i32,
    /// A kernel-mode exception a test provoked on purpose: fix the frame up and return true.
    pub kernel_exception: fn(&mut TrapFrame) -> bool,
    /// Break the network driver on its own thread (the recovery tests' broken driver); `code` is the request
    /// the test layer left in `net::stack::INJECT_DRIVER_FAULT`.
    pub driver_fault: fn(u32),
    /// Whether this VT run is an attack test, whose sandboxes are told monitor addresses to aim at (the next
    /// sandbox's slice, their control block, their second-stage root).
    pub wants_attack_targets: fn(Option<&str>) -> bool,
}

static LAYER: Once<TestLayer> = Once::new();

/// Install the test layer (once; later calls are ignored). Called before the kernel starts.
pub fn install(layer: TestLayer) {
    LAYER.call_once(|| layer);
}

/// Run a test command (`None`: the boot self-test).
pub fn run_test(cmd: Option<&str>) -> i32 {
    match LAYER.get() {
        Some(l) => (l.run)(cmd),
        None => {
            crate::kprintln!("{}: this image has no test layer", cmd.unwrap_or("self-test"));
            STATUS_NOT_FOUND
        }
    }
}

/// A kernel-mode exception: true if a test expected it and fixed the frame up (otherwise it is fatal).
pub fn kernel_exception(frame: &mut TrapFrame) -> bool {
    LAYER.get().is_some_and(|l| (l.kernel_exception)(frame))
}

/// The monitor asks whether `run` is an attack test (no test layer: never).
pub fn wants_attack_targets(run: Option<&str>) -> bool {
    LAYER.get().is_some_and(|l| (l.wants_attack_targets)(run))
}

/// The driver thread found a fault request: hand it to the test layer.
pub fn driver_fault(code: u32) {
    if let Some(l) = LAYER.get() {
        (l.driver_fault)(code);
    }
}
