//! Fetching the baseline's Linux kernel and busybox from the host's apt sources, once, into a cache pinned to one
//! kernel release.
#![forbid(unsafe_code)]

use super::{copy, require_tool, run_bytes, run_captured, write_atomically, BUSYBOX_PACKAGE, E1000_MODULE_DIR, KERNEL_META_PACKAGE};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Download (once, cached under `cache`, e.g. target/linux-cache) the kernel and busybox .debs with
/// `apt-get download`, extract them with `dpkg-deb -x` and return `(vmlinuz, busybox, e1000 module, version)`.
/// A cache populated earlier is used without touching apt at all.
pub fn fetch(cache: &Path) -> Result<(PathBuf, PathBuf, PathBuf, String), String> {
    let pin = cache.join("VERSION");
    if let Ok(pinned) = fs::read_to_string(&pin) {
        if let Some(found) = cached_files(cache, pinned.trim()) {
            return Ok(found);
        }
    }

    require_tool("apt-cache", "apt")?;
    require_tool("apt-get", "apt")?;
    require_tool("dpkg-deb", "dpkg")?;
    let version = resolve_kernel_version()?;
    if cached_files(cache, &version).is_none() {
        download_and_extract(cache, &version)?;
    }
    let found = cached_files(cache, &version).ok_or_else(|| {
        format!(
            "linux: {} is incomplete after extraction",
            cache.join(&version).display()
        )
    })?;
    write_atomically(&pin, format!("{version}\n").as_bytes())?;
    Ok(found)
}

/// The files of an extracted kernel release, if all are present.
fn cached_files(cache: &Path, version: &str) -> Option<(PathBuf, PathBuf, PathBuf, String)> {
    if version.is_empty() {
        return None;
    }
    let dir = cache.join(version);
    let files = (dir.join("vmlinuz"), dir.join("busybox"), dir.join("e1000.ko"));
    (files.0.is_file() && files.1.is_file() && files.2.is_file())
        .then(|| (files.0, files.1, files.2, version.to_string()))
}

/// The kernel release the meta package currently depends on, e.g. "6.1.0-57-amd64".
fn resolve_kernel_version() -> Result<String, String> {
    let out = run_captured(Command::new("apt-cache").args(["depends", KERNEL_META_PACKAGE]))?;
    parse_kernel_dependency(&out).ok_or_else(|| {
        format!(
            "linux: `apt-cache depends {KERNEL_META_PACKAGE}` names no linux-image-<ver> package \
             (run `apt-get update`?); output: {}",
            out.trim()
        )
    })
}

/// Find `Depends: linux-image-<ver>` in `apt-cache depends` output and return `<ver>`.
fn parse_kernel_dependency(apt_cache_depends: &str) -> Option<String> {
    apt_cache_depends.lines().find_map(|line| {
        let dep = line.trim().trim_start_matches('|').strip_prefix("Depends:")?.trim();
        let ver = dep.split_whitespace().next()?.strip_prefix("linux-image-")?;
        let plausible = ver.starts_with(|c: char| c.is_ascii_digit())
            && ver
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '+');
        plausible.then(|| ver.to_string())
    })
}

/// Download both packages into a private staging directory, extract them, keep vmlinuz, busybox and e1000.ko in
/// `<cache>/<version>/` (renamed into place, so concurrent fetches cannot see a half-written directory).
fn download_and_extract(cache: &Path, version: &str) -> Result<(), String> {
    // Private to this call: other processes, and other threads of this one (parallel tests), fetch at once.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let staging = cache.join(format!(".staging-{}-{}-{call}", version, std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(|e| format!("linux: cannot create {}: {e}", staging.display()))?;
    let result = stage(&staging, version).and_then(|out| {
        let dest = cache.join(version);
        match fs::rename(&out, &dest) {
            Ok(()) => Ok(()),
            // Another process got there first; its copy is as good as ours.
            Err(_) if cached_files(cache, version).is_some() => Ok(()),
            Err(e) => Err(format!(
                "linux: cannot move {} to {}: {e}",
                out.display(),
                dest.display()
            )),
        }
    });
    let _ = fs::remove_dir_all(&staging);
    result
}

/// Fill `staging/out` with the three files; returns that directory.
fn stage(staging: &Path, version: &str) -> Result<PathBuf, String> {
    let kernel_pkg = format!("linux-image-{version}");
    // `-o APT::Sandbox::User=root`: the _apt user may not write into our cache; this only silences a warning.
    run_captured(
        Command::new("apt-get")
            .args([
                "-q",
                "-o",
                "APT::Sandbox::User=root",
                "download",
                &kernel_pkg,
                BUSYBOX_PACKAGE,
            ])
            .current_dir(staging),
    )?;
    let kernel_deb = find_deb(staging, &kernel_pkg)?;
    let busybox_deb = find_deb(staging, BUSYBOX_PACKAGE)?;

    let root = staging.join("root");
    for deb in [&kernel_deb, &busybox_deb] {
        run_captured(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
    }

    let out = staging.join("out");
    fs::create_dir_all(&out).map_err(|e| format!("linux: cannot create {}: {e}", out.display()))?;
    copy(&root.join(format!("boot/vmlinuz-{version}")), &out.join("vmlinuz"))?;
    copy(&root.join("bin/busybox"), &out.join("busybox"))?;

    let module_dir = root.join(format!("lib/modules/{version}/{E1000_MODULE_DIR}"));
    let plain = module_dir.join("e1000.ko");
    let xz = module_dir.join("e1000.ko.xz");
    if plain.is_file() {
        copy(&plain, &out.join("e1000.ko"))?;
    } else if xz.is_file() {
        // busybox insmod loads only plain ELF modules (finit_module without decompression flags).
        require_tool("xz", "xz-utils")?;
        let bytes = run_bytes(Command::new("xz").arg("-dc").arg(&xz))?;
        write_atomically(&out.join("e1000.ko"), &bytes)?;
    } else {
        return Err(format!(
            "linux: no e1000.ko or e1000.ko.xz in {} (module compressed another way?)",
            module_dir.display()
        ));
    }

    let manifest = format!(
        "{}\n{}\n",
        kernel_deb.file_name().unwrap_or_default().to_string_lossy(),
        busybox_deb.file_name().unwrap_or_default().to_string_lossy()
    );
    write_atomically(&out.join("debs.txt"), manifest.as_bytes())?;
    Ok(out)
}

/// The `<package>_*.deb` that `apt-get download` left in `dir`.
fn find_deb(dir: &Path, package: &str) -> Result<PathBuf, String> {
    let prefix = format!("{package}_");
    let entries = fs::read_dir(dir).map_err(|e| format!("linux: cannot list {}: {e}", dir.display()))?;
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            name.starts_with(&prefix) && name.ends_with(".deb")
        })
        .ok_or_else(|| format!("linux: apt-get download left no {prefix}*.deb in {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_parses_the_kernel_dependency() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n";
        assert_eq!(parse_kernel_dependency(out).as_deref(), Some("6.1.0-57-amd64"));
        assert_eq!(parse_kernel_dependency("linux-image-amd64\n  Depends: foo\n"), None);
        assert_eq!(parse_kernel_dependency(""), None);
    }
}
