// The command lines for a questv user program, shared by the root build.rs (`include!`, for userland/c/*.c,
// built with musl-gcc), userland/build.rs (the Rust programs' link), and the runner's `cc` and `new-program`
// (src/usercc.rs), so a user's program gets exactly the flags the project's own programs get. Plain consts
// only: the build scripts include this file textually.

/// musl-gcc's flags for a questv C program (the project's own and `questv cc`'s): static, as every program
/// questv runs is; C11 with GNU extensions; warnings on. The include path for questv's own headers
/// (libc-shim/include) is added by the caller.
pub const USER_CFLAGS: &[&str] = &["-std=gnu11", "-O2", "-Wall", "-static"];

/// Linker flags of a Rust user program, after the linker script's `-Wl,-T,...`.
pub const USER_LDFLAGS: &[&str] = &["-Wl,--build-id=none", "-Wl,-z,max-page-size=4096"];

/// A Rust user program's link arguments before [`USER_LDFLAGS`]: no libc, static, non-PIE.
pub const USER_RUST_LINKFLAGS: &[&str] = &["-nostdlib", "-static", "-no-pie"];
