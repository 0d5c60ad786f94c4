//! A discrete-time simulator of one core driving [`VcpuSet`] the way the kernel does (decisions only at
//! work arrivals, completions, `next_event` interrupts and ticks), and seeded property tests over random
//! VCPU sets and workloads. The simulator keeps its own ground truth (which VCPU ran when, when every job
//! finished) and checks the set's accounting against it.

use super::trace::EventKind;
use super::*;
use alloc::vec;
use alloc::vec::Vec;

/// xorshift64*: a seeded generator, so every failure names a reproducible case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Clone, Debug)]
struct Job {
    release: u64,
    remaining: u64,
    deadline: u64,
}

#[derive(Clone, Debug)]
enum Workload {
    /// Always runnable.
    Busy,
    /// A job of `exec` every `period` from `phase`, deadline at the next release.
    Periodic { exec: u64, period: u64, phase: u64 },
    /// Jobs of random size at random gaps (I/O bottom halves, blocking threads).
    Bursty { max_exec: u64, max_gap: u64 },
}

struct Task {
    vcpu: u32,
    params: Params,
    workload: Workload,
    jobs: Vec<Job>,
    next_release: u64,
    /// Ground truth: what the VCPU actually ran.
    ran: u64,
    missed: Vec<(u64, u64)>,
    /// For I/O VCPUs: the Main VCPU whose priority the next burst inherits.
    serves: Option<u32>,
}

impl Task {
    fn has_work(&self, now: u64) -> bool {
        matches!(self.workload, Workload::Busy) || self.jobs.iter().any(|j| j.release <= now && j.remaining > 0)
    }
}

struct Sim {
    set: VcpuSet,
    tasks: Vec<Task>,
    now: u64,
    /// Foreground segments per VCPU, from the set's trace: (start, length).
    charges: Vec<Vec<(u64, u64)>>,
    background: Vec<u64>,
    quantum: u64,
    rng: Rng,
}

impl Sim {
    fn task_index(&self, vcpu: u32) -> usize {
        self.tasks.iter().position(|t| t.vcpu == vcpu).unwrap()
    }

    fn release_jobs(&mut self) {
        let now = self.now;
        let mains: Vec<u32> = self.tasks.iter().filter(|t| t.params.class == Class::Main).map(|t| t.vcpu).collect();
        for t in &mut self.tasks {
            while t.next_release <= now {
                match t.workload {
                    Workload::Busy => t.next_release = u64::MAX,
                    Workload::Periodic { exec, period, .. } => {
                        t.jobs.push(Job { release: t.next_release, remaining: exec, deadline: t.next_release + period });
                        t.next_release += period;
                    }
                    Workload::Bursty { max_exec, max_gap } => {
                        let exec = self.rng.range(1, max_exec);
                        t.jobs.push(Job { release: t.next_release, remaining: exec, deadline: u64::MAX });
                        t.next_release += self.rng.range(1, max_gap);
                        if t.params.class == Class::Io && !mains.is_empty() && self.rng.chance(70) {
                            t.serves = Some(mains[(self.rng.next() % mains.len() as u64) as usize]);
                        }
                    }
                }
            }
        }
        for i in 0..self.tasks.len() {
            if self.tasks[i].params.class == Class::Io && self.tasks[i].has_work(now) {
                let (io, serves) = (self.tasks[i].vcpu, self.tasks[i].serves);
                self.set.inherit(now, io, serves).unwrap();
            }
        }
    }

    fn collect_trace(&mut self) {
        for e in self.set.trace.drain() {
            let Some(i) = self.tasks.iter().position(|t| t.vcpu == e.vcpu) else { continue };
            match e.kind {
                EventKind::Charge => self.charges[i].push((e.at, e.amount)),
                EventKind::Background => self.background[i] += e.amount,
                _ => {}
            }
        }
    }

    /// Run until `horizon`; returns the number of decisions made.
    fn run(&mut self, horizon: u64) -> Result<usize, String> {
        let mut decisions = 0;
        let mut next_tick = self.quantum;
        while self.now < horizon {
            self.release_jobs();
            let now = self.now;
            let tasks = &self.tasks;
            let has_work = |id: u32| tasks.iter().any(|t| t.vcpu == id && t.has_work(now));
            let d = self.set.schedule(now, &has_work);
            decisions += 1;
            self.check_priority(d)?;
            // Next instant anything can change: an interrupt the set asked for, a release, a completion, a tick.
            let mut until = horizon.min(next_tick);
            if let Some(e) = d.next_event {
                if e <= now {
                    return Err(format!("next_event {} not after now {}", e, now));
                }
                until = until.min(e);
            }
            for t in &self.tasks {
                until = until.min(t.next_release);
            }
            if let Some((id, _)) = d.run {
                let i = self.task_index(id);
                if let Some(j) = self.tasks[i].jobs.iter().find(|j| j.release <= now && j.remaining > 0) {
                    until = until.min(now + j.remaining);
                }
            }
            let dt = until - now;
            if let Some((id, _)) = d.run {
                let i = self.task_index(id);
                let t = &mut self.tasks[i];
                t.ran += dt;
                if let Some(j) = t.jobs.iter_mut().find(|j| j.release <= now && j.remaining > 0) {
                    j.remaining -= dt;
                    if j.remaining == 0 && until > j.deadline {
                        t.missed.push((j.release, until));
                    }
                }
                t.jobs.retain(|j| j.remaining > 0);
            }
            self.now = until;
            if self.now >= next_tick {
                self.set.rotate_background();
                next_tick += self.quantum;
            }
            self.collect_trace();
        }
        // Account the tail.
        let tasks = &self.tasks;
        let end = self.now;
        self.set.schedule(end, &|id| tasks.iter().any(|t| t.vcpu == id && t.has_work(end)));
        self.collect_trace();
        Ok(decisions)
    }

    /// The set never runs a lower-priority or background VCPU while a higher-priority one has work and budget.
    fn check_priority(&self, d: Decision) -> Result<(), String> {
        let now = self.now;
        let key = |id: u32| self.set.get(id).unwrap().priority();
        for t in &self.tasks {
            if !t.has_work(now) {
                continue;
            }
            let v = self.set.get(t.vcpu).unwrap();
            if !v.can_run_foreground(now) {
                continue;
            }
            match d.run {
                None => return Err(format!("t={}: idle while VCPU {} has work and budget", now, t.vcpu)),
                Some((_, Level::Background)) => {
                    return Err(format!("t={}: background while VCPU {} has work and budget", now, t.vcpu))
                }
                Some((id, Level::Foreground)) if key(t.vcpu) < key(id) => {
                    return Err(format!("t={}: VCPU {} runs ahead of higher-priority VCPU {}", now, id, t.vcpu))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Most foreground time a VCPU got in any window of `len` (maxima sit at a segment's start or end).
    fn max_in_window(segments: &[(u64, u64)], len: u64) -> u64 {
        let within = |w: u64| -> u64 {
            segments.iter().map(|&(s, l)| (s + l).min(w + len).saturating_sub(s.max(w))).sum()
        };
        let mut best = 0;
        for &(s, l) in segments {
            best = best.max(within(s));
            best = best.max(within((s + l).saturating_sub(len)));
        }
        best
    }

    fn check_accounting(&self) -> Result<(), String> {
        for (i, t) in self.tasks.iter().enumerate() {
            let fg: u64 = self.charges[i].iter().map(|&(_, l)| l).sum();
            if fg + self.background[i] != t.ran {
                return Err(format!(
                    "VCPU {}: charged {} + background {} != ran {}",
                    t.vcpu, fg, self.background[i], t.ran
                ));
            }
        }
        Ok(())
    }
}

fn random_period(rng: &mut Rng, harmonic: bool) -> u64 {
    if harmonic {
        10 << rng.range(0, 4)
    } else {
        rng.range(8, 200)
    }
}

/// Build a random set: VCPUs are offered to admission in turn; the refused ones are dropped.
fn random_sim(seed: u64, periodic_exact: bool, with_io: bool) -> Sim {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut set = VcpuSet::new(usize::MAX);
    let mut tasks = Vec::new();
    let harmonic = rng.chance(40);
    let n = rng.range(1, 6);
    for k in 0..n {
        let io = with_io && k == n - 1 && n > 1;
        let period = random_period(&mut rng, harmonic);
        let budget = rng.range(1, (period * 6 / 10).max(1));
        let params = Params { class: if io { Class::Io } else { Class::Main }, budget, period };
        let Ok(vcpu) = set.create(params) else { continue };
        let workload = if periodic_exact && !io {
            Workload::Periodic { exec: budget, period, phase: rng.range(0, period - 1) }
        } else if io {
            Workload::Bursty { max_exec: budget * 3, max_gap: period }
        } else {
            match rng.range(0, 2) {
                0 => Workload::Busy,
                1 => Workload::Periodic { exec: rng.range(1, budget * 2), period: rng.range(period / 2 + 1, period * 2), phase: rng.range(0, period) },
                _ => Workload::Bursty { max_exec: budget * 2, max_gap: period * 2 },
            }
        };
        let next_release = match workload {
            Workload::Periodic { phase, .. } => phase,
            _ => rng.range(0, period),
        };
        tasks.push(Task { vcpu, params, workload, jobs: Vec::new(), next_release, ran: 0, missed: Vec::new(), serves: None });
    }
    let n = tasks.len();
    Sim { set, tasks, now: 0, charges: vec![Vec::new(); n], background: vec![0; n], quantum: rng.range(3, 30), rng }
}

const CASES: u64 = 10_000;

fn horizon(sim: &Sim) -> u64 {
    20 * sim.tasks.iter().map(|t| t.params.period).max().unwrap_or(10)
}

#[test]
fn sporadic_foreground_never_exceeds_budget_in_any_window() {
    let mut windows = 0;
    for seed in 0..CASES {
        let mut sim = random_sim(seed, false, false);
        let h = horizon(&sim);
        sim.run(h).unwrap_or_else(|e| panic!("seed {}: {}", seed, e));
        sim.check_accounting().unwrap_or_else(|e| panic!("seed {}: {}", seed, e));
        for (i, t) in sim.tasks.iter().enumerate() {
            let most = Sim::max_in_window(&sim.charges[i], t.params.period);
            assert!(
                most <= t.params.budget,
                "seed {}: VCPU {} (C={}, T={}) ran {} at foreground in one window",
                seed, t.vcpu, t.params.budget, t.params.period, most
            );
            windows += sim.charges[i].len();
        }
    }
    assert!(windows > 100_000, "the workloads exercised too little: {} segments", windows);
}

#[test]
fn sporadic_admitted_periodic_sets_meet_every_deadline() {
    let mut jobs_checked = 0u64;
    let mut sets = 0;
    for seed in 0..CASES {
        let mut sim = random_sim(seed, true, false);
        let h = horizon(&sim);
        sim.run(h).unwrap_or_else(|e| panic!("seed {}: {}", seed, e));
        sim.check_accounting().unwrap_or_else(|e| panic!("seed {}: {}", seed, e));
        for t in &sim.tasks {
            assert!(t.missed.is_empty(), "seed {}: VCPU {} (C={}, T={}) missed deadlines (release, finish): {:?}", seed, t.vcpu, t.params.budget, t.params.period, t.missed);
            if let Workload::Periodic { period, phase, .. } = t.workload {
                jobs_checked += (h - phase) / period;
            }
        }
        sets += usize::from(sim.tasks.len() > 1);
    }
    assert!(jobs_checked > 100_000 && sets > 1000, "too few jobs ({}) or multi-VCPU sets ({})", jobs_checked, sets);
}

#[test]
fn io_vcpu_stays_within_its_bandwidth() {
    let mut checked = 0;
    for seed in 0..CASES {
        let mut sim = random_sim(seed, false, true);
        let h = horizon(&sim);
        sim.run(h).unwrap_or_else(|e| panic!("seed {}: {}", seed, e));
        sim.check_accounting().unwrap_or_else(|e| panic!("seed {}: {}", seed, e));
        let max_period = sim.tasks.iter().map(|t| t.params.period).max().unwrap();
        for (i, t) in sim.tasks.iter().enumerate() {
            if t.params.class != Class::Io {
                continue;
            }
            assert_eq!(sim.background[i], 0, "seed {}: an I/O VCPU ran in the background", seed);
            // Largest activation budget: U times the longest period it can inherit.
            let max_budget = (t.params.budget * max_period).div_ceil(t.params.period);
            for len in [t.params.period, 2 * t.params.period, max_period, 5 * max_period] {
                let most = Sim::max_in_window(&sim.charges[i], len);
                let allowed = (t.params.budget * len).div_ceil(t.params.period) + max_budget;
                assert!(most <= allowed, "seed {}: I/O VCPU (U={}/{}) ran {} in a window of {} (bound {})", seed, t.params.budget, t.params.period, most, len, allowed);
            }
            checked += 1;
        }
    }
    assert!(checked > 1000, "too few I/O VCPUs exercised: {}", checked);
}

#[test]
fn vcpu_infeasible_sets_are_refused_and_leave_the_set_unchanged() {
    let mut set = VcpuSet::new(0);
    set.create(Params { class: Class::Main, budget: 5, period: 10 }).unwrap();
    let before = set.load();
    let e = set.create(Params { class: Class::Main, budget: 5, period: 15 }).unwrap_err();
    assert!(matches!(e, Error::Infeasible(_)), "{:?}", e);
    assert_eq!(set.load(), before);
    assert_eq!(set.ids().count(), 1);
    assert_eq!(set.create(Params { class: Class::Main, budget: 0, period: 15 }), Err(Error::Invalid(ParamError::ZeroBudget)));
    assert_eq!(set.create(Params { class: Class::Main, budget: 16, period: 15 }), Err(Error::Invalid(ParamError::BudgetAbovePeriod)));
}

#[test]
fn vcpu_shares_of_two_busy_vcpus_match_their_utilization() {
    // The kernel boot test's set: a default VCPU and 30 % + 60 %, all busy, harmonic periods.
    let mut set = VcpuSet::new(usize::MAX);
    let d = set.create(Params { class: Class::Main, budget: 10, period: 100 }).unwrap();
    let a = set.create(Params { class: Class::Main, budget: 3, period: 10 }).unwrap();
    let b = set.create(Params { class: Class::Main, budget: 6, period: 10 }).unwrap();
    let mut ran = [0u64; 3];
    let mut now = 0;
    while now < 10_000 {
        let dec = set.schedule(now, &|_| true);
        let until = dec.next_event.unwrap_or(now + 5).min(now + 5);
        let (id, _) = dec.run.unwrap();
        ran[[d, a, b].iter().position(|&x| x == id).unwrap()] += until - now;
        if now / 5 != until / 5 {
            set.rotate_background();
        }
        now = until;
    }
    assert_eq!(ran, [1000, 3000, 6000]);
}

#[test]
fn vcpu_lone_busy_vcpu_needs_no_interrupts() {
    // With nothing else to run, exhaustion and replenishment are accounted lazily: no timer needed.
    let mut set = VcpuSet::new(usize::MAX);
    let v = set.create(Params { class: Class::Main, budget: 2, period: 10 }).unwrap();
    let d = set.schedule(0, &|_| true);
    assert_eq!(d, Decision { run: Some((v, Level::Foreground)), next_event: None });
    let d = set.schedule(35, &|_| true);
    assert_eq!(d.run, Some((v, Level::Background)));
    let a = set.get(v).unwrap().accounting();
    // Foreground [0,2), [10,12), [20,22), [30,32); background the rest.
    assert_eq!((a.foreground, a.background), (8, 27));
}
