//! A Main VCPU's budget: a sporadic server in the corrected form of Stanovich, Baker, Wang and González
//! Harbour (RTAS 2010), in abstract time units (the kernel uses TSC cycles).
//!
//! The server owns `budget` (C) units per `period` (T). Budget is available (`capacity`) or pending in a
//! replenishment list. Every *contiguous* foreground run that starts at `s` and consumes `u` posts one
//! replenishment of `u` at `s + T`. Because a run ends whenever the server stops executing (preempted,
//! blocked, out of budget), no budget comes back before `T` after the moment it started being used: that is
//! the "no premature replenishment" correction, and it gives the sliding-window guarantee the host tests
//! check: in any window of length T the server runs at most C at foreground priority. Replenishments never
//! add up to more than C ("no budget amplification": capacity + pending + in-run = C, less any overrun
//! still owed).
//!
//! The list holds [`MAX_REPLENISHMENTS`] entries. When it is full, a new replenishment is merged into the
//! latest pending one *at the later of the two times*: that budget comes back late, never early, so the
//! window guarantee holds and only throughput suffers (counted in `Stats::merged_full`).
//!
//! Overrun (an interrupt arriving after the budget ran out) is consumption beyond capacity; it is recorded
//! as used in the run (so it is replenished a period later like any use) and paid back from the next
//! replenishments (Stanovich's rule), so the long-run share stays C/T.

pub const MAX_REPLENISHMENTS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Replenishment {
    pub at: u64,
    pub amount: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stats {
    /// Foreground time consumed (including overrun).
    pub used: u64,
    pub replenishments: u64,
    /// Replenishments merged into a later one because the list was full.
    pub merged_full: u64,
    pub overrun: u64,
    pub exhausted: u64,
}

#[derive(Clone, Debug)]
pub struct SporadicServer {
    budget: u64,
    period: u64,
    capacity: u64,
    pending: [Replenishment; MAX_REPLENISHMENTS],
    len: usize,
    /// Start of the current contiguous foreground run and what it has consumed so far.
    run: Option<(u64, u64)>,
    /// Consumed beyond capacity, still to be paid back from future replenishments.
    owed: u64,
    pub stats: Stats,
}

impl SporadicServer {
    /// A server with its full budget available. Callers validate `0 < budget <= period`.
    pub fn new(budget: u64, period: u64) -> Self {
        debug_assert!(budget > 0 && budget <= period);
        SporadicServer {
            budget,
            period,
            capacity: budget,
            pending: [Replenishment::default(); MAX_REPLENISHMENTS],
            len: 0,
            run: None,
            owed: 0,
            stats: Stats::default(),
        }
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    pub fn period(&self) -> u64 {
        self.period
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn pending(&self) -> &[Replenishment] {
        &self.pending[..self.len]
    }

    pub fn in_run(&self) -> bool {
        self.run.is_some()
    }

    /// Budget not available now: pending replenishments plus what the current run used, less what is owed.
    /// Invariant: `capacity + outstanding == budget`.
    pub fn outstanding(&self) -> u64 {
        let pending: u64 = self.pending().iter().map(|r| r.amount).sum();
        // Every owed unit is also counted in the run or a pending replenishment, so this cannot underflow.
        pending + self.run.map_or(0, |(_, u)| u) - self.owed
    }

    /// When the next replenishment is due.
    pub fn next_replenishment(&self) -> Option<u64> {
        (self.len > 0).then(|| self.pending[0].at)
    }

    /// Apply every replenishment due at or before `now`; returns how many arrived.
    pub fn replenish(&mut self, now: u64) -> usize {
        let due = self.pending().iter().take_while(|r| r.at <= now).count();
        for i in 0..due {
            let amount = self.pending[i].amount;
            let pay = amount.min(self.owed);
            self.owed -= pay;
            self.capacity += amount - pay;
        }
        self.pending.copy_within(due..self.len, 0);
        self.len -= due;
        self.stats.replenishments += due as u64;
        due
    }

    /// Begin a foreground run at `now` (the caller checked `capacity() > 0`).
    pub fn start_run(&mut self, now: u64) {
        debug_assert!(self.run.is_none());
        self.run = Some((now, 0));
    }

    /// Charge `used` units of foreground execution to the current run. Returns true if the budget is now
    /// exhausted (the caller ends the run).
    pub fn charge(&mut self, used: u64) -> bool {
        let Some((_, run_used)) = self.run.as_mut() else { return false };
        *run_used += used;
        let take = used.min(self.capacity);
        self.capacity -= take;
        let over = used - take;
        if over > 0 {
            self.owed += over;
            self.stats.overrun += over;
        }
        self.stats.used += used;
        if self.capacity == 0 {
            self.stats.exhausted += 1;
        }
        self.capacity == 0
    }

    /// End the current run: its consumption comes back one period after the run began.
    pub fn end_run(&mut self) {
        if let Some((start, used)) = self.run.take() {
            if used > 0 {
                self.post(start + self.period, used);
            }
        }
    }

    fn post(&mut self, at: u64, amount: u64) {
        if self.len > 0 && self.pending[self.len - 1].at == at {
            self.pending[self.len - 1].amount += amount;
            return;
        }
        if self.len == MAX_REPLENISHMENTS {
            let last = &mut self.pending[self.len - 1];
            last.at = last.at.max(at);
            last.amount += amount;
            self.stats.merged_full += 1;
            return;
        }
        // Runs start in time order, so `at` normally goes last; keep the list sorted regardless.
        let pos = self.pending().iter().position(|r| r.at > at).unwrap_or(self.len);
        self.pending.copy_within(pos..self.len, pos + 1);
        self.pending[pos] = Replenishment { at, amount };
        self.len += 1;
    }

    /// Change C and T. Budget in flight keeps its times; the capacity is clipped to the new budget (or
    /// grows by the increase) so capacity + outstanding never exceeds the new C.
    pub fn set_params(&mut self, budget: u64, period: u64) {
        debug_assert!(budget > 0 && budget <= period);
        if budget >= self.budget {
            self.capacity += budget - self.budget;
        } else {
            let cut = self.budget - budget;
            let from_capacity = cut.min(self.capacity);
            self.capacity -= from_capacity;
            // The rest is paid back from replenishments in flight.
            self.owed += cut - from_capacity;
        }
        self.budget = budget;
        self.period = period;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sporadic_run_replenished_one_period_after_it_began() {
        let mut s = SporadicServer::new(4, 10);
        s.start_run(3);
        assert!(!s.charge(2));
        s.end_run();
        assert_eq!(s.pending(), &[Replenishment { at: 13, amount: 2 }]);
        assert_eq!(s.capacity(), 2);
        assert_eq!(s.replenish(12), 0);
        assert_eq!(s.replenish(13), 1);
        assert_eq!(s.capacity(), 4);
    }

    #[test]
    fn sporadic_preempted_runs_are_replenished_separately() {
        // Stanovich's premature-replenishment case: a run interrupted by a higher-priority server must not be
        // replenished as if it had all happened at its first start.
        let mut s = SporadicServer::new(2, 10);
        s.start_run(0);
        s.charge(1);
        s.end_run();
        s.start_run(5);
        assert!(s.charge(1));
        s.end_run();
        assert_eq!(s.pending(), &[Replenishment { at: 10, amount: 1 }, Replenishment { at: 15, amount: 1 }]);
    }

    #[test]
    fn sporadic_full_list_merges_later_never_earlier() {
        let mut s = SporadicServer::new(100, 1000);
        for i in 0..MAX_REPLENISHMENTS as u64 + 3 {
            s.start_run(i * 10);
            s.charge(1);
            s.end_run();
        }
        assert_eq!(s.pending().len(), MAX_REPLENISHMENTS);
        let last = s.pending()[MAX_REPLENISHMENTS - 1];
        assert_eq!(last.at, 1000 + (MAX_REPLENISHMENTS as u64 + 2) * 10);
        assert_eq!(last.amount, 4);
        assert_eq!(s.stats.merged_full, 3);
        assert_eq!(s.capacity() + s.outstanding(), 100);
    }

    #[test]
    fn sporadic_overrun_is_paid_back() {
        let mut s = SporadicServer::new(3, 10);
        s.start_run(0);
        assert!(s.charge(5)); // 2 units late
        s.end_run();
        assert_eq!(s.pending(), &[Replenishment { at: 10, amount: 5 }]);
        s.replenish(10);
        assert_eq!(s.capacity(), 3, "the 2 overrun units come out of the replenishment");
        assert_eq!(s.stats.overrun, 2);
    }

    #[test]
    fn sporadic_shrinking_budget_never_amplifies() {
        let mut s = SporadicServer::new(6, 10);
        s.start_run(0);
        s.charge(5);
        s.end_run();
        s.set_params(2, 10);
        assert_eq!(s.capacity(), 0);
        s.replenish(10);
        assert_eq!(s.capacity(), 2);
    }
}
