//! The tree's layering, checked on the sources (docs/architecture.md):
//! - crates: each depends only on crates below it (abi, arch ← drivers ← kernel ← vmx ← ktest ← image);
//! - the kernel crate holds no monitor: it names neither `questv_vmx` nor the monitor's modules;
//! - no import circle between the files of kernel/ or vmx/ (edges read from `use` and `crate::`/`super::` paths);
//! - the boot path only starts things and nothing calls back into it; the vector dispatcher (`irq`) is named
//!   only by the image's entry; the test layer (`ktest`) sits on top and no product module names it (it
//!   installs itself through `hooks` from the image's entry point).
use std::collections::{BTreeMap, BTreeSet};
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

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// (file relative to kernel/src, line number, code line) for every non-comment line of the kernel's sources.
fn kernel_code_lines() -> Vec<(String, usize, String)> {
    code_lines("kernel/src")
}

/// (file relative to `dir`, line number, code line) for every non-comment line of the sources under `dir`.
fn code_lines(dir: &str) -> Vec<(String, usize, String)> {
    let root = repo(dir);
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
    assert!(lines.len() > 500, "found the sources under {dir}");
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
        .chain(code_lines("vmx/src"))
        .filter(|(_, _, l)| !ident_at(l, "ktest").is_empty() || !ident_at(l, "questv_ktest").is_empty())
        .map(|(f, n, l)| format!("{f}:{n}: {}", l.trim()))
        .collect();
    assert!(offenders.is_empty(), "product code calls the test layer (go through crate::hooks):\n{}", offenders.join("\n"));
}

#[test]
fn nothing_calls_back_into_boot() {
    let offenders: Vec<String> = kernel_code_lines()
        .into_iter()
        .filter(|(f, _, l)| f != "boot.rs" && names_module(l, "boot"))
        .map(|(f, n, l)| format!("{f}:{n}: {}", l.trim()))
        .collect();
    assert!(offenders.is_empty(), "boot only starts things; these call back into it:\n{}", offenders.join("\n"));
}

#[test]
fn only_the_image_names_the_vector_dispatcher() {
    let offenders: Vec<String> = kernel_code_lines()
        .into_iter()
        .chain(code_lines("vmx/src"))
        .filter(|(f, _, l)| f != "irq.rs" && f != "lib.rs" && (names_module(l, "irq") || l.contains("questv_kernel::irq")))
        .map(|(f, n, l)| format!("{f}:{n}: {}", l.trim()))
        .collect();
    assert!(offenders.is_empty(), "the vector dispatcher calls up into every subsystem; only the image's entry installs it:\n{}", offenders.join("\n"));
    let image = std::fs::read_to_string(repo("kernel/image/src/main.rs")).unwrap();
    assert!(image.contains("questv_kernel::irq::install()"), "the image's entry installs the dispatcher");
}

#[test]
fn the_kernel_crate_holds_no_monitor() {
    let offenders: Vec<String> = kernel_code_lines()
        .into_iter()
        .filter(|(_, _, l)| ["questv_vmx", "monitor", "vt"].iter().any(|m| names_module(l, m)) || !ident_at(l, "questv_vmx").is_empty())
        .map(|(f, n, l)| format!("{f}:{n}: {}", l.trim()))
        .collect();
    assert!(offenders.is_empty(), "the kernel names the monitor:\n{}", offenders.join("\n"));
    assert!(!repo("kernel/src/vt").exists() && !repo("kernel/src/recovery.rs").exists() && !repo("kernel/src/bootinfo.rs").exists());
}

/// The workspace crates, lowest first: a crate may depend only on crates of a lower rank.
const CRATE_RANKS: [(&str, &str, u32); 9] = [
    ("vmx/abi", "questv-abi", 0),
    ("arch", "questv-arch", 0),
    ("libc-shim", "questv-libc-shim", 0),
    ("drivers", "questv-drivers", 1),
    ("userland", "questv-userland", 1),
    ("kernel", "questv-kernel", 2),
    ("vmx", "questv-vmx", 3),
    ("kernel/ktest", "questv-ktest", 4),
    ("kernel/image", "questv-image", 5),
];

/// The workspace packages named in a manifest's `[dependencies]` and `[dev-dependencies]` (a TOML table read as
/// lines: `name = ...` or `name.workspace = true`).
fn workspace_deps(manifest: &str) -> Vec<String> {
    let mut deps = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]" || line == "[dev-dependencies]" || line == "[build-dependencies]";
            continue;
        }
        let name = line.split(['=', '.', ' ']).next().unwrap_or("");
        if in_deps && CRATE_RANKS.iter().any(|(_, n, _)| *n == name) {
            deps.push(name.to_string());
        }
    }
    deps
}

#[test]
fn crates_depend_only_on_crates_below_them() {
    let rank = |name: &str| CRATE_RANKS.iter().find(|(_, n, _)| *n == name).map(|r| r.2).unwrap();
    let mut offenders = Vec::new();
    for (dir, name, r) in CRATE_RANKS {
        let manifest = std::fs::read_to_string(repo(dir).join("Cargo.toml")).unwrap();
        assert!(manifest.contains(&format!("name = \"{name}\"")), "{dir}/Cargo.toml is {name}");
        for dep in workspace_deps(&manifest) {
            if rank(&dep) >= r {
                offenders.push(format!("{name} (rank {r}) depends on {dep} (rank {})", rank(&dep)));
            }
        }
    }
    assert!(offenders.is_empty(), "crates depend upwards:\n{}", offenders.join("\n"));
    let kernel = std::fs::read_to_string(repo("kernel/Cargo.toml")).unwrap();
    assert!(workspace_deps(&kernel).contains(&"questv-abi".to_string()), "the manifest reader sees dependencies");
}

/// The module a source file defines, as a path from its crate root (`net/stack`; `lib.rs`/`main.rs` = "").
fn module_of(rel: &str) -> String {
    let m = rel.trim_end_matches(".rs");
    let m = m.strip_suffix("/mod").unwrap_or(m);
    if m == "lib" || m == "main" { String::new() } else { m.to_string() }
}

/// The longest prefix of `path` (a module path under `base`) that is a file of the crate.
fn resolve(files: &BTreeSet<String>, base: &str, path: &[&str]) -> Option<String> {
    (1..=path.len()).rev().map(|k| {
        let tail = path[..k].join("/");
        if base.is_empty() { tail } else { format!("{base}/{tail}") }
    }).find(|m| files.contains(m))
}

/// Which files of the crate under `dir` each file uses: `crate::a::b`, `super::a`, `use crate::{a, b}` (an item
/// counts as a use of the file that defines it, `crate::item` of the crate root),
/// `use super::{a, b}`, `use super::*` (the parent) and a parent's `use child::...`. Test modules and a
/// parent's `mod child;` declarations are not uses.
fn use_edges(dir: &str) -> BTreeMap<String, BTreeSet<String>> {
    let lines = code_lines(dir);
    let files: BTreeSet<String> = lines.iter().map(|(f, _, _)| module_of(f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = files.iter().map(|f| (f.clone(), BTreeSet::new())).collect();
    let mut in_tests = BTreeSet::new();
    for (f, _, l) in &lines {
        let me = module_of(f);
        if in_tests.contains(f) {
            continue;
        }
        if l.trim() == "#[cfg(test)]" {
            in_tests.insert(f.clone());
            continue;
        }
        let parent = me.rsplit_once('/').map_or(String::new(), |(p, _)| p.to_string());
        let mut add = |m: Option<String>| {
            if let Some(m) = m.filter(|m| *m != me) {
                edges.get_mut(&me).unwrap().insert(m);
            }
        };
        for (prefix, base) in [("crate::", String::new()), ("super::", parent.clone())] {
            for (i, _) in l.match_indices(prefix) {
                if l[..i].chars().next_back().is_some_and(is_ident) {
                    continue;
                }
                let rest = &l[i + prefix.len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or("");
                    for item in group.split(',').filter(|i| !i.trim().is_empty()) {
                        let path: Vec<&str> = item.trim().split("::").map(str::trim).collect();
                        add(resolve(&files, &base, &path).or_else(|| Some(base.clone())));
                    }
                } else if rest.starts_with('*') {
                    add(Some(base.clone()));
                } else {
                    let path: Vec<&str> = rest.split(|c: char| !is_ident(c) && c != ':').next().unwrap_or("").split("::").collect();
                    // An item, not a module: it is defined in the module the path starts from.
                    add(resolve(&files, &base, &path).or_else(|| Some(base.clone())));
                }
            }
        }
        // A parent's `use child::...` (a path relative to this module).
        if let Some(rest) = l.trim_start().strip_prefix("use ").or_else(|| l.trim_start().strip_prefix("pub use ")) {
            let first = rest.split("::").next().unwrap_or("");
            let child = if me.is_empty() { first.to_string() } else { format!("{me}/{first}") };
            if files.contains(&child) {
                add(Some(child));
            }
        }
    }
    edges
}

/// The import circles among `edges` (strongly connected components of more than one file).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Kosaraju: order by finish time, then collect components on the reversed graph.
    fn visit(v: &str, g: &BTreeMap<String, BTreeSet<String>>, seen: &mut BTreeSet<String>, out: &mut Vec<String>) {
        if seen.insert(v.to_string()) {
            for w in &g[v] {
                visit(w, g, seen, out);
            }
            out.push(v.to_string());
        }
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for v in edges.keys() {
        visit(v, edges, &mut seen, &mut order);
    }
    let mut reversed: BTreeMap<String, BTreeSet<String>> = edges.keys().map(|k| (k.clone(), BTreeSet::new())).collect();
    for (a, bs) in edges {
        for b in bs {
            reversed.get_mut(b).unwrap().insert(a.clone());
        }
    }
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    for v in order.iter().rev() {
        let mut comp = Vec::new();
        visit(v, &reversed, &mut seen, &mut comp);
        if comp.len() > 1 {
            comp.sort();
            found.push(comp);
        }
    }
    found
}

#[test]
fn circles_are_found() {
    let g = |pairs: &[(&str, &str)]| {
        let mut e: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in pairs {
            e.entry(a.to_string()).or_default().insert(b.to_string());
            e.entry(b.to_string()).or_default();
        }
        e
    };
    assert_eq!(circles(&g(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])), vec![vec!["a", "b", "c"]]);
    assert!(circles(&g(&[("a", "b"), ("b", "c"), ("a", "c")])).is_empty());
    let files: BTreeSet<String> = ["net", "net/stack", "sched"].iter().map(|s| s.to_string()).collect();
    assert_eq!(resolve(&files, "", &["net", "stack", "start"]), Some("net/stack".into()));
    assert_eq!(resolve(&files, "", &["sched", "Reason"]), Some("sched".into()));
    assert_eq!(module_of("net/mod.rs"), "net");
    assert_eq!(module_of("lib.rs"), "");
}

#[test]
fn no_import_circles_in_the_kernel_or_the_monitor() {
    for dir in ["kernel/src", "vmx/src", "kernel/ktest/src"] {
        let edges = use_edges(dir);
        assert!(edges.values().map(BTreeSet::len).sum::<usize>() > 5, "{dir}: the reader sees its imports");
        let found = circles(&edges);
        let shown: Vec<String> = found
            .iter()
            .map(|c| c.iter().map(|f| format!("  {f} -> {:?}", edges[f].iter().filter(|t| c.contains(t)).collect::<Vec<_>>())).collect::<Vec<_>>().join("\n"))
            .collect();
        assert!(found.is_empty(), "{dir} has import circles:\n{}", shown.join("\n---\n"));
    }
}
