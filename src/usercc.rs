//! `cc` and `new-program`: a user's own program, from a file outside the repository to a questv executable.
//!
//! - [`cc`] compiles a C file with musl-gcc (Debian's musl, the C library of every C program questv runs) as a
//!   static executable, with the flags the project's own C programs get (src/cflags.rs) minus `-Werror`:
//!   warnings are shown, not fatal. questv's own headers (`<questv/questv.h>`, `<questv/chan.h>`,
//!   `<questv/vcpu.h>`, `<questv/state.h>`: libc-shim/include) are on the include path. When musl-gcc fails
//!   because a header or a function is in neither musl nor questv's headers, [`diagnose`] says which.
//! - [`new_program`] writes a Rust crate built against the Rust API (`questv-libc-shim` with its `rt`
//!   runtime) outside the userland crate: `cargo build --release` in it gives a questv executable.
//!
//! Either result goes into a boot's ramdisk with `boot --add PATH` and runs with `--run "NAME ARGS"`. The C
//! executable is an ordinary static Linux binary: it runs on Linux too.
#![forbid(unsafe_code)]

use crate::cflags::{USER_CFLAGS, USER_LDFLAGS};
use crate::{require_tool, workspace_root};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcOptions {
    pub src: PathBuf,
    /// Default: the source's stem in the current directory (as `gcc -o stem`).
    pub out: Option<PathBuf>,
    /// Passed to musl-gcc after the project's flags (e.g. `-DN=3`, `-O0`, `-Wextra`, `-lm`).
    pub gcc_args: Vec<String>,
}

/// questv's own C headers (relative to libc-shim/include).
pub fn questv_headers() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(workspace_root().join("libc-shim/include/questv"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".h")).map(|n| format!("questv/{n}")).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn between<'a>(line: &'a str, open: &str, close: char) -> Option<&'a str> {
    let i = line.find(open)? + open.len();
    let rest = &line[i..];
    Some(&rest[..rest.find(close)?])
}

/// What musl-gcc's errors say is missing: headers it could not find, functions it could not declare or link.
/// Returns a message for the user, or `None` when the failure is something else (a plain compile error).
pub fn diagnose(gcc_stderr: &str, headers: &[String]) -> Option<String> {
    let mut missing_headers: Vec<&str> = Vec::new();
    let mut missing_fns: Vec<&str> = Vec::new();
    for l in gcc_stderr.lines() {
        if l.contains("No such file or directory") {
            if let Some(h) = between(l, "fatal error: ", ':').filter(|h| h.ends_with(".h")) {
                if !missing_headers.contains(&h) {
                    missing_headers.push(h);
                }
            }
        }
        let f = between(l, "undefined reference to `", '\'').or_else(|| between(l, "implicit declaration of function '", '\''));
        let f = f.or_else(|| between(l, "implicit declaration of function \u{2018}", '\u{2019}'));
        if let Some(f) = f {
            if !missing_fns.contains(&f) {
                missing_fns.push(f);
            }
        }
    }
    if missing_headers.is_empty() && missing_fns.is_empty() {
        return None;
    }
    let mut m = String::new();
    for h in &missing_headers {
        m.push_str(&format!("neither musl nor questv has <{h}>\n"));
    }
    if !missing_fns.is_empty() {
        let list: Vec<String> = missing_fns.iter().map(|f| format!("{f}()")).collect();
        m.push_str(&format!("musl (questv's C library) does not provide {} (glibc extensions are not in musl)\n", list.join(", ")));
    }
    m.push_str(&format!("questv's own headers: {} (docs/processes.md, \"C programs\")", headers.iter().map(|h| format!("<{h}>")).collect::<Vec<_>>().join(" ")));
    Some(m)
}

/// Compile `o.src` into a static executable with musl-gcc. Returns its path and the compiler's warnings
/// (empty if none).
pub fn cc(o: &CcOptions) -> Result<(PathBuf, String), String> {
    require_tool("musl-gcc", "musl-tools")?;
    if !o.src.is_file() {
        return Err(format!("{}: no such file", o.src.display()));
    }
    let stem = o.src.file_stem().and_then(|s| s.to_str()).ok_or("the source file needs a name")?;
    let out = o.out.clone().unwrap_or_else(|| PathBuf::from(stem));
    let root = workspace_root();
    let output = Command::new("musl-gcc")
        .env("LC_ALL", "C")
        .args(USER_CFLAGS)
        .arg("-I")
        .arg(root.join("libc-shim/include"))
        .arg("-o")
        .arg(&out)
        .arg(&o.src)
        // After the source, so `-lfoo` resolves; -D/-I/-W apply wherever they stand.
        .args(&o.gcc_args)
        .output()
        .map_err(|e| format!("cannot run musl-gcc: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() {
        return Ok((out, stderr));
    }
    let hint = diagnose(&stderr, &questv_headers()).map(|h| format!("\n{h}")).unwrap_or_default();
    Err(format!("musl-gcc failed on {}:\n{}{hint}", o.src.display(), stderr.trim_end()))
}

/// A program name as it will appear in the ramdisk and in `--run`: letters, digits, `-`, `_`, `.`; not a word
/// the boot path reads itself (`percpu` for init, `ktest...` for the kernel's test hooks, `kernel` for the VT
/// monitor's image).
pub fn valid_program_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with('.')
        && name != "percpu"
        && name != "kernel"
        && !name.starts_with("ktest")
}

/// The files of a Rust user-program crate called `name` that builds against this checkout's Rust API.
pub fn rust_template(name: &str, repo: &Path) -> Vec<(PathBuf, String)> {
    let shim = repo.join("libc-shim");
    let ld = repo.join("userland/user.ld");
    let target = crate::KERNEL_TARGET;
    vec![
        (
            PathBuf::from("Cargo.toml"),
            format!(
                "# A questv user program (generated by `questv new-program {name}`). Build: cargo build --release\n\
                 # Run:   (in the questv checkout) cargo run --release -- boot --add {{this dir}}/target/{target}/release/{name} --run \"{name}\"\n\
                 [package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
                 [dependencies]\n# The Rust API (syscalls, println!, channels, ...) and `rt`, the runtime: _start, panic handler, heap.\n\
                 questv-libc-shim = {{ path = \"{}\", features = [\"rt\"] }}\n\n\
                 [profile.release]\npanic = \"abort\"\n\n[profile.dev]\npanic = \"abort\"\n\n\
                 # Not part of any enclosing workspace.\n[workspace]\n",
                shim.display()
            ),
        ),
        (
            PathBuf::from("build.rs"),
            format!(
                "// Link as a static questv executable at 0x400000, as the project's own programs are (docs/build.md).\n\
                 fn main() {{\n    for arg in [{}\"-Wl,-T,{}\"] {{\n        println!(\"cargo:rustc-link-arg-bins={{arg}}\");\n    }}\n    println!(\"cargo:rerun-if-changed=build.rs\");\n}}\n",
                crate::cflags::USER_RUST_LINKFLAGS.iter().chain(USER_LDFLAGS).map(|f| format!("{f:?}, ")).collect::<String>(),
                ld.display()
            ),
        ),
        (
            PathBuf::from(".cargo/config.toml"),
            format!("# questv programs build for the host target, no_std (docs/build.md).\n[build]\ntarget = \"{target}\"\n\n[target.{target}]\nrustflags = [\"-C\", \"target-cpu=x86-64\"]\n"),
        ),
        (
            PathBuf::from("src/main.rs"),
            format!(
                "//! {name}: a questv user program. `args[0]` is the program's name; return the exit status.\n\
                 #![no_std]\n#![no_main]\n\n\
                 use questv_libc_shim::{{self as sys, println}};\n\n\
                 questv_libc_shim::entry!(main);\n\n\
                 fn main(args: &[&str]) -> i32 {{\n\
                 \x20   println!(\"hello from {name} (pid {{}}, cpu {{}}), args {{:?}}\", sys::getpid(), sys::getcpu(), &args[1..]);\n\
                 \x20   let pid = sys::fork();\n\
                 \x20   if pid == 0 {{\n\
                 \x20       sys::exit(7);\n\
                 \x20   }}\n\
                 \x20   let (_, status) = sys::waitpid(pid, 0);\n\
                 \x20   println!(\"RESULT {} child_status={{}}\", questv_libc_shim::wait::shell_status(status));\n\
                 \x20   0\n\
                 }}\n",
                name.replace('-', "_")
            ),
        ),
    ]
}

/// `new-program NAME [--dir DIR]`: write the template into DIR/NAME (refusing to overwrite).
pub fn new_program(name: &str, dir: &Path) -> Result<PathBuf, String> {
    if !valid_program_name(name) || name.contains('.') || !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!("{name:?}: a program name is a letter, then letters, digits, '-' and '_' (cargo's rule)"));
    }
    let at = dir.join(name);
    if at.exists() {
        return Err(format!("{} exists; not overwriting it", at.display()));
    }
    for (rel, text) in rust_template(name, &workspace_root()) {
        let p = at.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).map_err(|e| format!("{}: {e}", p.display()))?;
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnose_names_missing_headers_and_functions() {
        let h = vec!["questv/questv.h".to_string(), "questv/chan.h".into()];
        let e = "x.c:1:10: fatal error: execinfo.h: No such file or directory\ncompilation terminated.\n";
        let m = diagnose(e, &h).unwrap();
        assert!(m.contains("neither musl nor questv has <execinfo.h>") && m.contains("<questv/chan.h>"), "{m}");
        let e = "x.c:3:5: warning: implicit declaration of function 'gnu_get_libc_version' [-Wimplicit-function-declaration]\n\
                 /usr/bin/ld: /tmp/cc.o: in function `main':\nx.c:(.text+0x1a): undefined reference to `gnu_get_libc_version'\n\
                 x.c:(.text+0x2a): undefined reference to `backtrace'\ncollect2: error: ld returned 1 exit status\n";
        let m = diagnose(e, &h).unwrap();
        assert!(m.contains("does not provide gnu_get_libc_version(), backtrace()"), "{m}");
        assert!(diagnose("x.c:2:1: error: expected ';' before '}' token\n", &h).is_none());
        // A missing source file is not a missing header.
        assert!(diagnose("gcc: error: y.c: No such file or directory\ncc1: fatal error: y.c: No such file or directory\n", &h).is_none());
    }

    #[test]
    fn program_names() {
        assert!(valid_program_name("my-prog_2") && valid_program_name("data.txt"));
        for bad in ["", "a b", "a/b", ".hidden", "x\"y", "$x", "percpu", "kernel", "ktest2"] {
            assert!(!valid_program_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn rust_template_points_at_this_checkout() {
        let t = rust_template("my-prog", Path::new("/repo"));
        let get = |n: &str| &t.iter().find(|(p, _)| p == Path::new(n)).unwrap().1;
        assert!(get("Cargo.toml").contains("path = \"/repo/libc-shim\", features = [\"rt\"]") && get("Cargo.toml").contains("[workspace]"));
        assert!(get("build.rs").contains("-Wl,-T,/repo/userland/user.ld"));
        assert!(get("src/main.rs").contains("entry!(main)") && get("src/main.rs").contains("RESULT my_prog child_status"));
        assert!(get(".cargo/config.toml").contains(crate::KERNEL_TARGET));
    }
}
