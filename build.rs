// The runner builds kernel images for the host target on its precompiled core/alloc (docs/build.md); record
// which target that is, and refuse hosts the kernel cannot be built on.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.starts_with("x86_64-") || !target.contains("linux") {
        panic!(
            "questv builds its x86_64 kernel on the host target's precompiled core/alloc, so the host must be \
             x86_64 Linux (this one is {target:?}); see docs/build.md"
        );
    }
    println!("cargo:rustc-env=QUESTV_KERNEL_TARGET={target}");
}
