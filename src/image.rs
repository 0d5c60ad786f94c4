//! Image building: the kernel and the user programs through cargo, the ramdisk's files, grub.cfg and the hybrid
//! BIOS+UEFI ISO from grub-mkrescue.
#![forbid(unsafe_code)]

use crate::host::{require_file, require_tool, workspace_root, KERNEL_TARGET};
use crate::options::BootOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How many `--add` files a boot takes: the kernel keeps 64 boot modules (kernel/src/boot.rs), the project's own
/// programs and the VT kernel image take about 16.
pub const MAX_ADDED_FILES: usize = 32;

/// What goes into the ramdisk: the userland programs, the kernel itself for VT (the monitor loads a pristine
/// copy into every sandbox from it) and the user's `--add` files under their file names.
pub fn ramdisk_files(o: &BootOptions, kernel: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mut files = build_userland()?;
    if o.vt {
        files.push(("kernel".into(), kernel.to_path_buf()));
    }
    for p in &o.add {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
        if !p.is_file() {
            return Err(format!("--add {}: no such file", p.display()));
        }
        if name == "initramfs.cpio" {
            return Err(format!("--add {}: initramfs.cpio is the name of the runner's own initramfs: rename the file", p.display()));
        }
        if files.iter().any(|(n, _)| *n == name) || name == "badelf" {
            return Err(format!("--add {}: {name:?} is already in the ramdisk (a built-in program): rename the file", p.display()));
        }
        files.push((name, p.clone()));
    }
    if let Some(p) = &o.partition {
        // The partition description, for the monitor (docs/partitions.md).
        let dir = crate::workspace_root().join("target").join("tmp");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("partition-{}.txt", std::process::id()));
        std::fs::write(&path, p.spec(o.cpus)).map_err(|e| format!("{}: {e}", path.display()))?;
        files.push(("partition".into(), path));
    }
    // A sandbox of a partition file may run busybox or one of its applets.
    let partition_needs_busybox = o.partition.as_ref().is_some_and(|p| {
        p.sandboxes.iter().filter_map(|s| s.run.as_deref()?.split_whitespace().next()).any(|prog| !files.iter().any(|(n, _)| n == prog))
    });
    if (o.run_script.is_some() || partition_needs_busybox) && !files.iter().any(|(n, _)| n == "busybox") {
        // The script needs a shell: Debian's busybox, fetched once with the Linux baseline.
        let cache = crate::workspace_root().join("target").join("linux-cache");
        let (_, busybox, _, _) = crate::linux::fetch(&cache).map_err(|e| format!("--run with shell syntax needs busybox's sh: {e}"))?;
        files.push(("busybox".into(), busybox));
    }
    if let Some(archive) = initramfs(o, &files)? {
        files.push(("initramfs.cpio".into(), archive));
    }
    Ok(files)
}

/// The initramfs (a newc cpio the kernel unpacks into its tree at boot), when there is something to put in
/// it: `--root DIR`'s tree, and with busybox among the files its applets as links in /bin (`/bin/sh`, `ls`,
/// ...; not over a program of the same name). Written under target/tmp.
fn initramfs(o: &BootOptions, files: &[(String, PathBuf)]) -> Result<Option<PathBuf>, String> {
    let busybox = files.iter().find(|(n, _)| n == "busybox").map(|(_, p)| p.clone());
    if busybox.is_none() && o.root.is_none() && o.run_script.is_none() {
        // (The partition description is a module of its own, not part of the tree.)
        return Ok(None);
    }
    let mut cpio = crate::linux::Cpio::new();
    if let Some(script) = &o.run_script {
        cpio.dir("etc", 0o755)?;
        cpio.file("etc/questv-run", 0o755, format!("{script}\n").as_bytes())?;
    }
    if let Some(bb) = busybox {
        // A static x86-64 binary: the host runs it to say which applets it has.
        let out = std::process::Command::new(&bb).arg("--list").output().map_err(|e| format!("{}: {e}", bb.display()))?;
        let list = String::from_utf8_lossy(&out.stdout);
        cpio.dir("bin", 0o755)?;
        for applet in list.lines().map(str::trim).filter(|a| !a.is_empty() && !a.contains('/')) {
            if files.iter().all(|(n, _)| n != applet) {
                cpio.symlink(&format!("bin/{applet}"), "busybox")?;
            }
        }
    }
    if let Some(root) = &o.root {
        add_tree(&mut cpio, root, "")?;
    }
    let dir = crate::workspace_root().join("target").join("tmp");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("initramfs-{}-{}.cpio", o.mode(), std::process::id()));
    std::fs::write(&path, cpio.finish()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(path))
}

/// `dir`'s entries into the archive under `prefix`, directories before what is in them.
fn add_tree(cpio: &mut crate::linux::Cpio, dir: &std::path::Path, prefix: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(|e| format!("--root {}: {e}", dir.display()))?.collect::<Result<_, _>>().map_err(|e| format!("--root {}: {e}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let Some(name) = e.file_name().to_str().map(String::from) else {
            return Err(format!("--root: {}: the name is not UTF-8 (questv's tree holds UTF-8 names)", path.display()));
        };
        let inner = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("--root {}: {e}", path.display()))?;
        let perm = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| format!("--root {}: {e}", path.display()))?;
            cpio.symlink(&inner, target.to_str().ok_or_else(|| format!("--root {}: the link target is not UTF-8", path.display()))?)?;
        } else if meta.is_dir() {
            cpio.dir(&inner, perm)?;
            add_tree(cpio, &path, &inner)?;
        } else if meta.is_file() {
            let data = std::fs::read(&path).map_err(|e| format!("--root {}: {e}", path.display()))?;
            cpio.file(&inner, perm, &data)?;
        } else {
            return Err(format!("--root {}: neither a file, a directory nor a symbolic link (devices, FIFOs and sockets are not copied)", path.display()));
        }
    }
    Ok(())
}

/// `image`: the hybrid BIOS+UEFI ISO `boot` would boot, kept at `out` (write it raw to a USB stick:
/// docs/hardware.md). The command line in its grub.cfg is the one `boot` would pass.
pub fn image(o: &BootOptions, out: &Path) -> Result<PathBuf, String> {
    let kernel = build_kernel(o.vt)?;
    let programs = ramdisk_files(o, &kernel)?;
    let iso = make_iso(&kernel, &o.kernel_args(), &format!("image-{}-{}", o.mode(), std::process::id()), &programs)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::rename(&iso, out).or_else(|_| std::fs::copy(&iso, out).map(|_| ())).map_err(|e| format!("{}: {e}", out.display()))?;
    let _ = std::fs::remove_file(&iso);
    Ok(out.to_path_buf())
}

/// Rewrite grub.cfg: the `set questv_args=` line gets `args`, the `# @questv-modules@` line becomes one
/// `module2` line per ramdisk file.
pub fn grub_cfg_with_args(template: &str, args: &str, modules: &[String]) -> Result<String, String> {
    let (mut found_args, mut found_modules) = (false, false);
    let mut out: Vec<String> = Vec::new();
    for l in template.lines() {
        if l.trim_start().starts_with("set questv_args=") {
            found_args = true;
            out.push(format!("set questv_args=\"{args}\""));
        } else if l.trim_start().starts_with("# @questv-modules@") {
            found_modules = true;
            out.extend(modules.iter().map(|m| format!("    module2 /boot/bin/{m} {m}")));
        } else {
            out.push(l.to_string());
        }
    }
    if !found_args {
        return Err("grub/grub.cfg has no `set questv_args=` line".into());
    }
    if !found_modules && !modules.is_empty() {
        return Err("grub/grub.cfg has no `# @questv-modules@` line".into());
    }
    Ok(out.join("\n") + "\n")
}

/// Names of the `[[bin]]` targets in a Cargo.toml (the Rust user programs).
pub fn bin_names(cargo_toml: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bin = false;
    for l in cargo_toml.lines().map(str::trim) {
        if l.starts_with('[') {
            in_bin = l == "[[bin]]";
        } else if in_bin {
            if let Some(v) = l.strip_prefix("name").map(str::trim).and_then(|r| r.strip_prefix('=')) {
                names.push(v.trim().trim_matches('"').to_string());
            }
        }
    }
    names
}

/// A file that starts like an ELF but is garbage: the ramdisk carries it so tests can check that exec refuses
/// malformed programs.
pub fn bad_elf() -> Vec<u8> {
    let mut v = b"\x7fELF\x02\x01\x01".to_vec();
    v.extend((0..4089u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    v
}

/// The userland's C program `name` (built by build.rs with musl: an ordinary static Linux binary).
pub fn user_c_program(name: &str) -> PathBuf {
    PathBuf::from(env!("QUESTV_USER_C_DIR")).join(name)
}

/// The names of the C programs build.rs built (userland/c).
pub fn user_c_program_names() -> Result<Vec<String>, String> {
    let c_dir = PathBuf::from(env!("QUESTV_USER_C_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&c_dir)
        .map_err(|e| format!("{}: {e}", c_dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Build the Rust user programs and collect them with the C ones (built by build.rs): (name, path).
pub fn build_userland() -> Result<Vec<(String, PathBuf)>, String> {
    let root = workspace_root();
    let target_dir = root.join("target").join("user");
    cargo_build(&["-p", "questv-userland", "--features", "user", "--config", "userland/build.toml"], &target_dir)
        .map_err(|e| format!("userland build failed ({e})"))?;
    let toml = std::fs::read_to_string(root.join("userland/Cargo.toml")).map_err(|e| e.to_string())?;
    let mut progs: Vec<(String, PathBuf)> =
        bin_names(&toml).into_iter().map(|n| (n.clone(), target_dir.join(KERNEL_TARGET).join("release").join(n))).collect();
    progs.extend(user_c_program_names()?.into_iter().map(|n| (n.clone(), user_c_program(&n))));
    Ok(progs)
}

/// `cargo build --release --target <host> ARGS` into `target_dir`, with a clean flag environment.
fn cargo_build(args: &[&str], target_dir: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--release", "--target", KERNEL_TARGET])
        .args(args)
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET")
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(status.to_string())
    }
}

/// Build the kernel image for the mode; returns the ELF path.
pub fn build_kernel(vt: bool) -> Result<PathBuf, String> {
    let root = workspace_root();
    let mode = if vt { "vt" } else { "smp" };
    let target_dir = root.join("target").join(format!("kernel-{mode}"));
    let features = if vt { "vt" } else { "" };
    cargo_build(&["-p", "questv-image", "--bin", "questv-kernel", "--features", features, "--config", "kernel/image/build.toml"], &target_dir)
        .map_err(|e| format!("kernel build failed ({e})"))?;
    Ok(target_dir.join(KERNEL_TARGET).join("release").join("questv-kernel"))
}

/// Stage the kernel, the user programs (plus the deliberately malformed `badelf`) and a grub.cfg carrying
/// `args`, and make a bootable ISO with grub-mkrescue.
pub fn make_iso(kernel: &Path, args: &str, tag: &str, programs: &[(String, PathBuf)]) -> Result<PathBuf, String> {
    require_tool("grub-mkrescue", "grub-pc-bin grub-common xorriso mtools")?;
    require_tool("xorriso", "xorriso")?;
    require_tool("mformat", "mtools")?;
    // One hybrid image for both firmwares: grub-mkrescue adds every platform installed under /usr/lib/grub.
    for (platform, package) in [("i386-pc", "grub-pc-bin"), ("x86_64-efi", "grub-efi-amd64-bin")] {
        require_file(&format!("/usr/lib/grub/{platform}/modinfo.sh"), package)?;
    }
    let root = workspace_root();
    let stage = root.join("target").join(format!("iso-{tag}"));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(stage.join("boot/grub")).map_err(|e| format!("{}: {e}", stage.display()))?;
    std::fs::copy(kernel, stage.join("boot/questv-kernel")).map_err(|e| format!("{}: {e}", kernel.display()))?;
    std::fs::create_dir_all(stage.join("boot/bin")).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    for (name, path) in programs {
        std::fs::copy(path, stage.join("boot/bin").join(name)).map_err(|e| format!("{}: {e}", path.display()))?;
        names.push(name.clone());
    }
    std::fs::write(stage.join("boot/bin/badelf"), bad_elf()).map_err(|e| e.to_string())?;
    names.push("badelf".into());
    let template = std::fs::read_to_string(root.join("grub/grub.cfg")).map_err(|e| format!("grub/grub.cfg: {e}"))?;
    std::fs::write(stage.join("boot/grub/grub.cfg"), grub_cfg_with_args(&template, args, &names)?)
        .map_err(|e| format!("grub.cfg: {e}"))?;
    let iso = root.join("target").join(format!("questv-{tag}.iso"));
    let out = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&iso)
        .arg(&stage)
        .output()
        .map_err(|e| format!("cannot run grub-mkrescue: {e}"))?;
    let _ = std::fs::remove_dir_all(&stage);
    if !out.status.success() {
        return Err(format!("grub-mkrescue failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(iso)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_cfg_rewrite() {
        let t = "set timeout=0\nset questv_args=\"mode=smp\"\nmenuentry x {\n    # @questv-modules@\n}\n";
        let out = grub_cfg_with_args(t, "mode=smp run=x 1", &["init".into(), "hello".into()]).unwrap();
        assert!(out.contains("set questv_args=\"mode=smp run=x 1\"\n"));
        assert!(out.contains("    module2 /boot/bin/init init\n    module2 /boot/bin/hello hello\n"));
        assert!(out.starts_with("set timeout=0\n"));
        assert!(grub_cfg_with_args("nothing", "x", &[]).is_err());
        assert!(grub_cfg_with_args("set questv_args=\"\"", "x", &["init".into()]).is_err());
        // The repository's own grub.cfg has both lines.
        let real = std::fs::read_to_string(workspace_root().join("grub/grub.cfg")).unwrap();
        assert!(grub_cfg_with_args(&real, "mode=smp", &["init".into()]).is_ok());
    }

    #[test]
    fn userland_bin_names() {
        let toml = std::fs::read_to_string(workspace_root().join("userland/Cargo.toml")).unwrap();
        let names = bin_names(&toml);
        for n in ["init", "forkwait-rs", "torture"] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        assert_eq!(bin_names("[package]\nname = \"x\"\n[[bin]]\nname = \"a\"\npath = \"p\"\n"), vec!["a"]);
    }
}
