//! An I/O VCPU's budget (paper §3.4; Danish, Li and West, RTAS 2011): a fixed utilization U = C/T and a
//! priority inherited from the Main VCPU on whose behalf the I/O is done ("PIBS").
//!
//! Each activation gets a budget of U times the period it runs at (the inherited Main VCPU's, or its own T
//! when nothing is inherited), so a bottom half for a fast Main VCPU runs in short slices. An activation that
//! starts at `s` and consumes `u` makes the server ineligible until `s + u / U`: consecutive activations are
//! spaced by their consumption over U, so in any window of length L the server runs at most U·L plus one
//! activation's budget. That is the bandwidth bound the host tests check.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stats {
    pub used: u64,
    pub activations: u64,
    pub exhausted: u64,
}

#[derive(Clone, Debug)]
pub struct IoServer {
    /// Utilization U = budget / period.
    budget: u64,
    period: u64,
    eligible_at: u64,
    /// Period inherited from the Main VCPU the pending I/O belongs to.
    inherited: Option<u64>,
    /// Current activation: start, consumed, budget.
    activation: Option<(u64, u64, u64)>,
    pub stats: Stats,
}

impl IoServer {
    pub fn new(budget: u64, period: u64) -> Self {
        debug_assert!(budget > 0 && budget <= period);
        IoServer { budget, period, eligible_at: 0, inherited: None, activation: None, stats: Stats::default() }
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    pub fn period(&self) -> u64 {
        self.period
    }

    /// The period that sets this server's priority: the inherited one, or its own.
    pub fn effective_period(&self) -> u64 {
        self.inherited.unwrap_or(self.period)
    }

    pub fn set_inherited(&mut self, period: Option<u64>) {
        self.inherited = period;
    }

    pub fn inherited(&self) -> Option<u64> {
        self.inherited
    }

    pub fn eligible_at(&self) -> u64 {
        self.eligible_at
    }

    pub fn eligible(&self, now: u64) -> bool {
        now >= self.eligible_at
    }

    pub fn active(&self) -> bool {
        self.activation.is_some()
    }

    /// Budget for an activation at the current effective period: U · T_eff (at least one unit).
    pub fn activation_budget(&self) -> u64 {
        ((u128::from(self.budget) * u128::from(self.effective_period()) / u128::from(self.period)) as u64).max(1)
    }

    /// Budget left in the current activation.
    pub fn remaining(&self) -> u64 {
        self.activation.map_or(0, |(_, used, budget)| budget.saturating_sub(used))
    }

    /// Start an activation at `now` (the caller checked eligibility).
    pub fn activate(&mut self, now: u64) {
        debug_assert!(self.activation.is_none() && self.eligible(now));
        self.activation = Some((now, 0, self.activation_budget()));
        self.stats.activations += 1;
    }

    /// Charge `used` units; true once the activation's budget is spent.
    pub fn charge(&mut self, used: u64) -> bool {
        let Some((_, u, budget)) = self.activation.as_mut() else { return false };
        *u += used;
        self.stats.used += used;
        let done = *u >= *budget;
        if done {
            self.stats.exhausted += 1;
        }
        done
    }

    /// End the activation: the server may run again only `used / U` after it began.
    pub fn deactivate(&mut self) {
        if let Some((start, used, _)) = self.activation.take() {
            if used > 0 {
                let gap = (u128::from(used) * u128::from(self.period)).div_ceil(u128::from(self.budget)) as u64;
                self.eligible_at = self.eligible_at.max(start + gap);
            }
        }
    }

    pub fn set_params(&mut self, budget: u64, period: u64) {
        debug_assert!(budget > 0 && budget <= period);
        self.budget = budget;
        self.period = period;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_vcpu_spaced_by_consumption_over_utilization() {
        let mut s = IoServer::new(1, 10); // U = 10 %
        s.activate(0);
        assert_eq!(s.activation_budget(), 1);
        s.set_inherited(Some(50));
        assert_eq!(s.activation_budget(), 5, "budget follows the inherited period");
        s.deactivate();
        s.activate(0);
        assert!(!s.charge(3));
        s.deactivate();
        assert_eq!(s.eligible_at(), 30);
        assert!(!s.eligible(29) && s.eligible(30));
    }

    #[test]
    fn io_vcpu_budget_enforced_per_activation() {
        let mut s = IoServer::new(2, 10);
        s.set_inherited(Some(20));
        s.activate(5);
        assert_eq!(s.remaining(), 4);
        assert!(s.charge(4));
        s.deactivate();
        assert_eq!(s.eligible_at(), 25);
    }
}
