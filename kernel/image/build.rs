// Link the bootable image with our linker script, without libc, start files or PIE (docs/build.md).
fn main() {
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    for arg in ["-nostdlib", "-static", "-no-pie", "-Wl,--build-id=none", "-Wl,-z,max-page-size=4096", "-Wl,-u,_start32"] {
        println!("cargo:rustc-link-arg-bin=questv-kernel={arg}");
    }
    println!("cargo:rustc-link-arg-bin=questv-kernel=-Wl,-T,{dir}/linker.ld");
}
