// The gcc command line for a questv user program, shared by the root build.rs (`include!`, for
// userland/c/*.c), userland/build.rs (the Rust programs' link), and the runner's `cc` and `new-program`
// (src/usercc.rs), so a user's program gets exactly the flags the project's own programs get. Plain consts
// only: the build scripts include this file textually.

/// Flags before the include path: freestanding against the C shim (no system headers or libc), no stack
/// protector or unwind tables (the shim provides neither), static and non-PIE (user.ld links at 0x400000).
pub const USER_CFLAGS: &[&str] = &[
    "-std=gnu11", "-O2", "-Wall", "-ffreestanding", "-fno-builtin", "-nostdinc", "-nostdlib",
    "-fno-stack-protector", "-fPIE", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
    "-fno-tree-loop-distribute-patterns", "-static", "-no-pie",
];

/// Linker flags after the linker script's `-Wl,-T,...`.
pub const USER_LDFLAGS: &[&str] = &["-Wl,--build-id=none", "-Wl,-z,max-page-size=4096"];

/// A Rust user program's link arguments before [`USER_LDFLAGS`] (a C program gets these with [`USER_CFLAGS`]):
/// no libc, static, non-PIE.
pub const USER_RUST_LINKFLAGS: &[&str] = &["-nostdlib", "-static", "-no-pie"];
