// Link the user programs as static questv executables at 512 GiB (userland/user.ld, docs/build.md).
include!("../src/cflags.rs");

fn main() {
    println!("cargo:rerun-if-changed=user.ld");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../src/cflags.rs");
    if std::env::var_os("CARGO_FEATURE_USER").is_some() {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
        for arg in USER_RUST_LINKFLAGS.iter().chain(USER_LDFLAGS) {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/user.ld");
    }
}
