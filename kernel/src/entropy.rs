//! Unpredictable-enough bytes for AT_RANDOM, getrandom(2) and /dev/[u]random: the TSC stirred through
//! xorshift. Not cryptographic (docs/processes.md).
#![forbid(unsafe_code)]

pub fn random_bytes() -> [u8; 16] {
    let mut x = questv_arch::cpu::rdtsc() | 1;
    let mut out = [0u8; 16];
    for chunk in out.chunks_mut(8) {
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        x ^= questv_arch::cpu::rdtsc();
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    out
}
