//! The kernel's layering, checked on the sources (docs/architecture.md): the boot path only starts things and
//! nothing calls back into it; the test layer (`ktest`) sits on top and no product module names it (it installs
//! itself through `hooks` from the image's entry point).
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// (file relative to kernel/src, line number, code line) for every non-comment line of the kernel's sources.
fn kernel_code_lines() -> Vec<(String, usize, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel/src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut lines = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
        for (i, l) in std::fs::read_to_string(&f).unwrap().lines().enumerate() {
            let code = l.split("//").next().unwrap_or("").to_string();
            if !code.trim().is_empty() {
                lines.push((rel.clone(), i + 1, code));
            }
        }
    }
    assert!(lines.len() > 1000, "found the kernel's sources");
    lines
}

/// `line` names the module path `module` (`crate::boot` but not `crate::bootinfo`; `ktest::` but not `"ktest ..."`).
fn names_module(line: &str, module: &str) -> bool {
    line.match_indices(module).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = &line[i + module.len()..];
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '"')
            && (after.starts_with("::") || after.starts_with(';') || after.starts_with(',') || after.starts_with('}'))
    })
}

#[test]
fn names_module_sees_paths_not_words() {
    assert!(names_module("use crate::boot::x;", "crate::boot") && names_module("use crate::{boot, x};", "boot"));
    assert!(!names_module("use crate::bootinfo::{self};", "crate::boot") && !names_module("r.starts_with(\"ktest attack\")", "ktest"));
    assert!(names_module("crate::ktest::driver_fault(x);", "ktest") && !names_module("my_ktest::x", "ktest"));
}

#[test]
fn no_product_module_names_the_test_layer() {
    let offenders: Vec<String> = kernel_code_lines()
        .into_iter()
        .filter(|(f, _, l)| f != "ktest.rs" && f != "main.rs" && !l.contains("pub mod ktest;") && names_module(l, "ktest"))
        .map(|(f, n, l)| format!("{f}:{n}: {}", l.trim()))
        .collect();
    assert!(offenders.is_empty(), "product code calls the test layer (go through crate::hooks):\n{}", offenders.join("\n"));
}

#[test]
fn nothing_calls_back_into_boot() {
    let offenders: Vec<String> = kernel_code_lines()
        .into_iter()
        .filter(|(f, _, l)| f != "boot.rs" && f != "main.rs" && names_module(l, "crate::boot"))
        .map(|(f, n, l)| format!("{f}:{n}: {}", l.trim()))
        .collect();
    assert!(offenders.is_empty(), "boot only starts things; these call back into it:\n{}", offenders.join("\n"));
}
