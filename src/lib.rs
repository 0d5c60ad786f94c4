//! questv host runner: builds kernel images, wraps them in a GRUB ISO, boots them headless in QEMU or Bochs,
//! streams the guest's serial console and judges the run from it.
//!
//! The guest speaks a small line protocol on COM1 (docs/architecture.md): `RESULT <name> key=value ...`,
//! `QUESTV DONE status=N`, `KERNEL PANIC ...`. Everything that interprets those lines is pure and unit-tested.
//!
//! The modules, by concern:
//! - [`cli`]: the command line (each command parses its own options over the shared boot options);
//! - [`protocol`]: the RESULT/DONE/PANIC lines and judging a run;
//! - [`options`]: what one boot is ([`BootOptions`]) and its kernel command line;
//! - [`image`](mod@image): building the kernel and the user programs, the ramdisk, grub.cfg and the ISO;
//! - [`emulator`]: QEMU and Bochs start-up, and [`boot`] (build, boot, stream, judge);
//! - [`host`]: the workspace, the results directory, the host tools;
//! - [`peer`]: the host network peer (wire formats, reports, hostile frames, the session);
//! - [`experiments`]: one module per experiment (compare, msgbench, ping, netfig, recovery, fig10, faults, paper);
//! - [`linux`]: the Linux 6.1 baseline guest; [`plot`]: the figures; [`usercc`]: a user's own programs.
#![forbid(unsafe_code)]

pub mod cli;
pub mod emulator;
pub mod experiments;
pub mod host;
pub mod image;
pub mod linux;
pub mod options;
pub mod partitions;
pub mod peer;
pub mod plot;
pub mod protocol;
pub mod usercc;
#[path = "cflags.rs"]
pub mod cflags;

// The runner's API as it was before the split into modules: tests, main.rs and the experiments use these paths.
pub use cli::{parse_args, Cli, USAGE};
pub use emulator::bochs::bochsrc;
pub use emulator::qemu::{OVMF_CODE, OVMF_VARS};
pub use emulator::{boot, BootReport, Emulator, BOCHS_CPU_MODEL, ICOUNT, NIC_MAC, QEMU_CPU_MODEL};
pub use experiments::compare::{compare, compare_csv, compare_rows, compare_table, one_instance_cycles, scaling_table, CompareRow};
pub use experiments::msgbench::{msgbench, msgbench_csv, msgbench_series, MSGBENCH_VCPUS};
pub use experiments::{faults, fig10, netfig, paper, ping, recoveryfig};
pub use host::{csv_field, require_file, require_tool, workspace_root, KERNEL_TARGET};
pub use image::{bad_elf, bin_names, build_kernel, build_userland, grub_cfg_with_args, image, make_iso, ramdisk_files, MAX_ADDED_FILES};
pub use options::{BootOptions, Firmware};
pub use protocol::{is_panic_line, judge, parse_done_line, parse_result_line, results, split_sandbox_prefix, Outcome, ResultLine};

pub(crate) use experiments::compare::run_both;
pub(crate) use host::results_dir;
