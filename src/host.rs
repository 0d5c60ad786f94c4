//! The host side of a run: the workspace, where results go, and the host tools a run needs.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub const KERNEL_TARGET: &str = env!("QUESTV_KERNEL_TARGET");

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Err naming the Debian package that provides `path` if it is missing.
pub fn require_file(path: &str, package: &str) -> Result<(), String> {
    if Path::new(path).exists() {
        Ok(())
    } else {
        Err(format!("{path} is missing: install the Debian package {package} (sudo apt-get install {package})"))
    }
}

/// Fail with one clear line naming the Debian packages if a tool is missing.
pub fn require_tool(tool: &str, packages: &str) -> Result<(), String> {
    if which(tool) {
        Ok(())
    } else {
        Err(format!("{tool} not found; install Debian packages: apt-get install {packages}"))
    }
}

/// Where every experiment writes its CSVs and figures: target/results/ (created).
pub(crate) fn results_dir() -> Result<PathBuf, String> {
    let dir = workspace_root().join("target").join("results");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// A CSV field, quoted when it holds a comma, a quote or a newline.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
