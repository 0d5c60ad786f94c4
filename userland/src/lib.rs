//! questv user programs. The programs (init, forkwait in Rust, syscall tests) and their build arrive with the
//! userland issue (#3); until then this crate only reserves the place in the workspace. Nothing here runs.
#![no_std]
