// Host build script of the runner crate:
// 1. The runner builds kernel images for the host target on its precompiled core/alloc (docs/build.md): record
//    which target that is, and refuse hosts the kernel cannot be built on.
// 2. Build the C user programs (userland/c/*.c) with musl-gcc as static executables (Debian's musl-tools; questv's
//    own headers from libc-shim/include); the runner puts them in the ramdisk. The same binaries run on Linux.
use std::path::{Path, PathBuf};
use std::process::Command;

include!("src/cflags.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/cflags.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.starts_with("x86_64-") || !target.contains("linux") {
        panic!(
            "questv builds its x86_64 kernel on the host target's precompiled core/alloc, so the host must be \
             x86_64 Linux (this one is {target:?}); see docs/build.md"
        );
    }
    println!("cargo:rustc-env=QUESTV_KERNEL_TARGET={target}");

    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("userland-c");
    std::fs::create_dir_all(&out).unwrap();
    for dir in ["userland/c", "libc-shim/include/questv"] {
        println!("cargo:rerun-if-changed={dir}");
        for f in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            println!("cargo:rerun-if-changed={}", f.path().display());
        }
    }
    for prog in sorted_c_files(&root.join("userland/c")) {
        let name = prog.file_stem().unwrap().to_string_lossy().into_owned();
        // The project's own programs build warning-free (-Werror); `questv cc` uses the same flags without it.
        let status = Command::new("musl-gcc")
            .args(USER_CFLAGS)
            .arg("-Werror")
            .arg("-I")
            .arg(root.join("libc-shim/include"))
            .arg("-o")
            .arg(out.join(&name))
            .arg(&prog)
            .status()
            .unwrap_or_else(|e| panic!("cannot run musl-gcc ({e}): the C user programs are built against musl (Debian packages musl-tools, musl-dev)"));
        assert!(status.success(), "musl-gcc failed to build {}", prog.display());
    }
    println!("cargo:rustc-env=QUESTV_USER_C_DIR={}", out.display());
}

fn sorted_c_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    v.sort();
    v
}
