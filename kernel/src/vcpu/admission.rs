//! Admission control: a core's VCPU set must pass the rate-monotonic utilization bound.
//!
//! Main VCPUs count C/T; I/O VCPUs count (2 − U)·U (Danish, Li and West, RTAS 2011: the cost of an I/O VCPU
//! whose priority changes with the Main VCPU it serves). The bound is Liu and Layland's n(2^(1/n) − 1) in
//! the harmonic-chain form of Kuo and Mok: n is the number of chains into which the Main VCPUs' periods split
//! so that within a chain every period divides the next (all-harmonic periods give a bound of 100 %). The
//! chains come from a greedy cover, which can only overestimate n and so only make the test stricter; every
//! I/O VCPU counts as a chain of its own (its period follows whoever it serves). Utilizations are rounded up
//! and the bound down, in parts per million.

use super::Class;

pub const PPM: u64 = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    pub class: Class,
    pub budget: u64,
    pub period: u64,
}

impl Demand {
    /// Utilization this VCPU claims in the test, parts per million, rounded up.
    pub fn load_ppm(&self) -> u64 {
        let (c, t) = (u128::from(self.budget), u128::from(self.period));
        match self.class {
            Class::Main => (c * u128::from(PPM)).div_ceil(t) as u64,
            // (2 − C/T)·C/T = C(2T − C)/T²
            Class::Io => (c * (2 * t - c) * u128::from(PPM)).div_ceil(t * t) as u64,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    pub total_ppm: u64,
    pub bound_ppm: u64,
    pub chains: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Infeasible {
    pub requested_ppm: u64,
    pub load: Load,
}

impl core::fmt::Display for Infeasible {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "utilization {}.{:04} % requested, {}.{:04} % in total, above the rate-monotonic bound {}.{:04} % ({} harmonic chain(s))",
            self.requested_ppm / 10_000,
            self.requested_ppm % 10_000,
            self.load.total_ppm / 10_000,
            self.load.total_ppm % 10_000,
            self.load.bound_ppm / 10_000,
            self.load.bound_ppm % 10_000,
            self.load.chains
        )
    }
}

/// n(2^(1/n) − 1) in parts per million, rounded down (n ≥ 1).
pub fn rm_bound_ppm(n: usize) -> u64 {
    let n = n.max(1);
    // 2^(1/n) by Newton's method on x^n = 2 (no libm in the kernel).
    let mut x = 1.0f64 + 1.0 / n as f64;
    for _ in 0..64 {
        let mut p = 1.0f64;
        for _ in 0..n - 1 {
            p *= x;
        }
        let next = x - (p * x - 2.0) / (n as f64 * p);
        if next == x {
            break;
        }
        x = next;
    }
    let bound = n as f64 * (x - 1.0);
    // Rounded down, and a hair lower so floating-point error never admits a set above the true bound.
    ((bound * PPM as f64) as u64).saturating_sub(1).min(PPM)
}

/// Number of harmonic chains in a greedy cover of `periods`.
pub fn harmonic_chains(periods: &mut [u64]) -> usize {
    periods.sort_unstable();
    let mut tops: [u64; 64] = [0; 64];
    let mut chains = 0usize;
    for &p in periods.iter() {
        if p == 0 {
            continue;
        }
        // Extend the chain whose top is the largest divisor of p (keeps small tops free for others).
        let best = (0..chains.min(tops.len())).filter(|&i| p % tops[i] == 0).max_by_key(|&i| tops[i]);
        match best {
            Some(i) => tops[i] = p,
            None => {
                if chains < tops.len() {
                    tops[chains] = p;
                }
                chains += 1;
            }
        }
    }
    chains
}

/// The load of `set` against its bound.
pub fn load(set: &[Demand]) -> Load {
    let total_ppm = set.iter().map(Demand::load_ppm).sum();
    let mut periods: alloc::vec::Vec<u64> = set.iter().filter(|d| d.class == Class::Main).map(|d| d.period).collect();
    let chains = harmonic_chains(&mut periods) + set.iter().filter(|d| d.class == Class::Io).count();
    Load { total_ppm, bound_ppm: rm_bound_ppm(chains), chains }
}

/// Would `set` (the core's VCPUs after the change) be feasible? `requested` is the changed VCPU, for the
/// message.
pub fn check(set: &[Demand], requested: &Demand) -> Result<Load, Infeasible> {
    let l = load(set);
    if l.total_ppm <= l.bound_ppm || (l.chains == 1 && l.total_ppm <= PPM) {
        Ok(l)
    } else {
        Err(Infeasible { requested_ppm: requested.load_ppm(), load: l })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn main(c: u64, t: u64) -> Demand {
        Demand { class: Class::Main, budget: c, period: t }
    }

    #[test]
    fn vcpu_rm_bound_values() {
        assert_eq!(rm_bound_ppm(1), PPM - 1);
        assert!((828_426..=828_427).contains(&rm_bound_ppm(2)), "{}", rm_bound_ppm(2));
        assert!((779_762..=779_763).contains(&rm_bound_ppm(3)), "{}", rm_bound_ppm(3));
        assert!((697_100..=697_200).contains(&rm_bound_ppm(60)) && rm_bound_ppm(1000) > 693_147, "{}", rm_bound_ppm(60));
    }

    #[test]
    fn vcpu_harmonic_chains_counted() {
        assert_eq!(harmonic_chains(&mut [10, 20, 40]), 1);
        assert_eq!(harmonic_chains(&mut [10, 15]), 2);
        assert_eq!(harmonic_chains(&mut [10, 20, 30, 60]), 2);
        assert_eq!(harmonic_chains(&mut []), 0);
    }

    #[test]
    fn vcpu_admission_harmonic_set_to_full_bound() {
        let set = [main(10, 100), main(3, 10), main(6, 10)];
        assert_eq!(check(&set, &set[2]).map(|l| l.total_ppm), Ok(PPM));
        let over = [main(10, 100), main(3, 10), main(7, 10)];
        let e = check(&over, &over[2]).unwrap_err();
        assert_eq!(e.requested_ppm, 700_000);
        assert!(e.to_string().contains("above the rate-monotonic bound"));
    }

    #[test]
    fn vcpu_admission_non_harmonic_uses_liu_layland() {
        let ok = [main(4, 10), main(6, 15)]; // 80 % ≤ 82.8 %
        assert!(check(&ok, &ok[1]).is_ok());
        let bad = [main(5, 10), main(5, 15)]; // 83.3 % > 82.8 %
        assert!(check(&bad, &bad[1]).is_err());
    }

    #[test]
    fn vcpu_io_load_is_two_minus_u_times_u() {
        let io = Demand { class: Class::Io, budget: 1, period: 10 };
        assert_eq!(io.load_ppm(), 190_000);
    }
}
