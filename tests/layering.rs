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
            let code = code_of(l);
            if !code.trim().is_empty() {
                lines.push((rel.clone(), i + 1, code));
            }
        }
    }
    assert!(lines.len() > 1000, "found the kernel's sources");
    lines
}

/// A source line without its string/char literals and its `//` comment (literals become `""`).
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                out.push_str("\"\"");
            }
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Byte offsets where `word` occurs in `code` as a whole identifier.
fn ident_at(code: &str, word: &str) -> Vec<usize> {
    code.match_indices(word)
        .filter(|(i, _)| !code[..*i].chars().next_back().is_some_and(is_ident) && !code[i + word.len()..].chars().next().is_some_and(is_ident))
        .map(|(i, _)| i)
        .collect()
}

/// The line names the kernel's module `module` (a top-level module of the crate): as `crate::module`,
/// `super::module`, or inside a `use crate::{...}` group; another crate's module of that name
/// (`questv_arch::boot`) does not count.
fn names_module(code: &str, module: &str) -> bool {
    let grouped = code.trim_start().starts_with("use crate::{") || code.trim_start().starts_with("pub use crate::{");
    ident_at(code, module).into_iter().any(|i| {
        let before = code[..i].trim_end();
        before.ends_with("crate::") || before.ends_with("super::") || (grouped && (before.ends_with('{') || before.ends_with(',')))
    })
}

#[test]
fn names_module_sees_paths_not_words() {
    let n = |l: &str, m: &str| names_module(&code_of(l), m);
    assert!(n("use crate::boot::x;", "boot") && n("use crate::{boot, x};", "boot") && n("use crate::{x, boot as b};", "boot"));
    assert!(n("use crate::ktest as t;", "ktest") && n("super::ktest::install();", "ktest") && n("crate::ktest::driver_fault(x);", "ktest"));
    assert!(!n("use crate::bootinfo::{self};", "boot") && !n("questv_arch::boot::install_ap_trampoline(t);", "boot"));
    assert!(!n(r#"r.starts_with("ktest attack crate::ktest::x")"#, "ktest") && !n("my_ktest::x(); // crate::ktest::y", "ktest"));
    assert_eq!(code_of(r#"a("x\"y//z", 1); // c"#), r#"a("", 1); "#);
}

#[test]
fn no_product_module_names_the_test_layer() {
    let offenders: Vec<String> = kernel_code_lines()
        .into_iter()
        .filter(|(f, _, l)| f != "ktest.rs" && f != "main.rs" && !ident_at(l, "ktest").is_empty() && !l.contains("pub mod ktest;"))
        .map(|(f, n, l)| format!("{f}:{n}: {}", l.trim()))
        .collect();
    assert!(offenders.is_empty(), "product code calls the test layer (go through crate::hooks):\n{}", offenders.join("\n"));
}

#[test]
fn nothing_calls_back_into_boot() {
    let offenders: Vec<String> = kernel_code_lines()
        .into_iter()
        .filter(|(f, _, l)| f != "boot.rs" && f != "main.rs" && names_module(l, "boot"))
        .map(|(f, n, l)| format!("{f}:{n}: {}", l.trim()))
        .collect();
    assert!(offenders.is_empty(), "boot only starts things; these call back into it:\n{}", offenders.join("\n"));
}
