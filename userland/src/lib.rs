//! Helpers shared by questv's Rust user programs. The programs are the `[[bin]]` targets (src/bin/), built as
//! questv executables with the `user` feature: see docs/build.md.
#![no_std]

/// Parse a decimal argument, with a default when absent and `None` when malformed.
pub fn arg_u64(args: &[&str], i: usize, default: u64) -> Option<u64> {
    match args.get(i) {
        None => Some(default),
        Some(s) => s.parse().ok(),
    }
}

/// A small deterministic PRNG (xorshift64*) for the torture test: reproducible runs from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}
