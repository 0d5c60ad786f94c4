//! C ABI static library and Rust API for questv user programs. The syscall wrappers and headers arrive with the
//! userland issue (#3); until then this crate only reserves the place in the workspace. Nothing here runs.
#![no_std]
