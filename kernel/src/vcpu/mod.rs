//! VCPU scheduling (paper §3.4), the pure part: one core's set of VCPUs, their budgets, the choice of which
//! VCPU runs, admission control and the trace. Host-tested (a discrete-time simulator and seeded property
//! tests in `sim`); the kernel's scheduler (sched.rs) keeps threads on VCPUs and asks this module which VCPU
//! runs and when the next decision is due.
//!
//! Model: Main VCPUs are sporadic servers ([`sporadic`]) with fixed rate-monotonic priorities (shorter period
//! first). I/O VCPUs ([`io_server`]) have a fixed utilization and the priority of the Main VCPU they serve.
//! A VCPU with work and budget runs at foreground priority; the highest-priority one runs. A Main VCPU whose
//! budget is spent runs only at background priority, below every foreground VCPU, round-robin with the other
//! background VCPUs. I/O VCPUs never run in the background (their budget is enforced).
//!
//! Time is an abstract `u64` (TSC cycles in the kernel). Accounting is lazy: the running VCPU's exhaustion
//! and replenishment are worked out when the caller next calls [`VcpuSet::schedule`], at the exact instants
//! they happened; the caller only needs an interrupt at [`Decision::next_event`], which is `None` when no
//! pending event could change the choice.
#![forbid(unsafe_code)]

pub mod admission;
pub mod inherit;
pub mod io_server;
pub mod sporadic;
pub mod trace;
#[cfg(test)]
mod sim;

use alloc::vec::Vec;
use io_server::IoServer;
use sporadic::SporadicServer;
use trace::{EventKind, Trace, IDLE};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Main,
    Io,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Main => "main",
            Class::Io => "io",
        }
    }
}

/// The VCPUs a sandbox creates at start (a partition file's `vcpus`, on the command line as
/// `vcpus=main:2000:10000,io:500:10000`: class, budget and period in microseconds).
pub fn parse_list(text: &str) -> Result<Vec<(Class, u64, u64)>, alloc::string::String> {
    let mut out = Vec::new();
    for item in text.split(',').filter(|i| !i.is_empty()) {
        let mut parts = item.split(':');
        let class = match parts.next() {
            Some("main") => Class::Main,
            Some("io") => Class::Io,
            other => return Err(alloc::format!("{item:?}: class {other:?} is not main or io")),
        };
        let num = |p: Option<&str>| p.and_then(|x| x.parse::<u64>().ok());
        match (num(parts.next()), num(parts.next()), parts.next()) {
            (Some(b), Some(t), None) => out.push((class, b, t)),
            _ => return Err(alloc::format!("{item:?}: expected CLASS:BUDGET_US:PERIOD_US")),
        }
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Foreground,
    Background,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub class: Class,
    pub budget: u64,
    pub period: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamError {
    ZeroBudget,
    BudgetAbovePeriod,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    Invalid(ParamError),
    Infeasible(admission::Infeasible),
    NoSuchVcpu,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Invalid(ParamError::ZeroBudget) => write!(f, "budget must be positive"),
            Error::Invalid(ParamError::BudgetAbovePeriod) => write!(f, "budget larger than period"),
            Error::Infeasible(i) => write!(f, "{}", i),
            Error::NoSuchVcpu => write!(f, "no such VCPU"),
        }
    }
}

#[derive(Clone, Debug)]
enum Server {
    Main(SporadicServer),
    Io(IoServer),
}

/// What one VCPU has consumed (for the accounting system call).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Accounting {
    pub foreground: u64,
    pub background: u64,
    pub capacity: u64,
    pub replenishments: u64,
    pub exhausted: u64,
    pub overrun: u64,
    pub merged_full: u64,
    pub switches_in: u64,
}

#[derive(Clone, Debug)]
pub struct Vcpu {
    pub id: u32,
    server: Server,
    background: u64,
    switches_in: u64,
}

impl Vcpu {
    pub fn params(&self) -> Params {
        match &self.server {
            Server::Main(s) => Params { class: Class::Main, budget: s.budget(), period: s.period() },
            Server::Io(s) => Params { class: Class::Io, budget: s.budget(), period: s.period() },
        }
    }

    /// Rate-monotonic priority key: smaller runs first. I/O VCPUs take the inherited period and win ties.
    fn priority(&self) -> (u64, u8, u32) {
        match &self.server {
            Server::Main(s) => (s.period(), 1, self.id),
            Server::Io(s) => (s.effective_period(), 0, self.id),
        }
    }

    fn can_run_foreground(&self, now: u64) -> bool {
        match &self.server {
            Server::Main(s) => s.capacity() > 0,
            Server::Io(s) => s.active() && s.remaining() > 0 || !s.active() && s.eligible(now),
        }
    }

    /// When this VCPU next gains the right to run at foreground (if it cannot now).
    fn next_eligible(&self, now: u64) -> Option<u64> {
        match &self.server {
            Server::Main(s) if s.capacity() == 0 => s.next_replenishment(),
            Server::Io(s) if !s.active() && !s.eligible(now) => Some(s.eligible_at()),
            _ => None,
        }
    }

    fn replenish(&mut self, now: u64, trace: &mut Trace) {
        if let Server::Main(s) = &mut self.server {
            while let Some(at) = s.next_replenishment().filter(|&a| a <= now) {
                let before = s.capacity();
                s.replenish(at);
                trace.push(at, EventKind::Replenish, self.id, s.capacity() - before);
            }
        }
    }

    pub fn accounting(&self) -> Accounting {
        let mut a = Accounting { background: self.background, switches_in: self.switches_in, ..Default::default() };
        match &self.server {
            Server::Main(s) => {
                a.foreground = s.stats.used;
                a.capacity = s.capacity();
                a.replenishments = s.stats.replenishments;
                a.exhausted = s.stats.exhausted;
                a.overrun = s.stats.overrun;
                a.merged_full = s.stats.merged_full;
            }
            Server::Io(s) => {
                a.foreground = s.stats.used;
                a.capacity = s.remaining();
                a.replenishments = s.stats.activations;
                a.exhausted = s.stats.exhausted;
            }
        }
        a
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Running {
    id: u32,
    level: Level,
    since: u64,
}

/// The outcome of [`VcpuSet::schedule`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The VCPU to run and at which level; `None`: no VCPU has work (idle).
    pub run: Option<(u32, Level)>,
    /// The caller must call `schedule` again by this time (an interrupt), unless something else does first.
    pub next_event: Option<u64>,
}

pub fn validate(p: &Params) -> Result<(), Error> {
    if p.budget == 0 {
        return Err(Error::Invalid(ParamError::ZeroBudget));
    }
    if p.budget > p.period {
        return Err(Error::Invalid(ParamError::BudgetAbovePeriod));
    }
    Ok(())
}

/// One core's VCPUs.
#[derive(Clone, Debug)]
pub struct VcpuSet {
    vcpus: Vec<Vcpu>,
    next_id: u32,
    running: Option<Running>,
    /// The last VCPU that ran in the background (round-robin among background VCPUs).
    last_background: u32,
    pub trace: Trace,
}

impl VcpuSet {
    pub fn new(trace_capacity: usize) -> Self {
        VcpuSet { vcpus: Vec::new(), next_id: 0, running: None, last_background: 0, trace: Trace::new(trace_capacity) }
    }

    fn demands(&self) -> Vec<admission::Demand> {
        self.vcpus.iter().map(|v| v.params()).map(|p| admission::Demand { class: p.class, budget: p.budget, period: p.period }).collect()
    }

    /// Add a VCPU if the set stays feasible; returns its id.
    pub fn create(&mut self, p: Params) -> Result<u32, Error> {
        validate(&p)?;
        let mut set = self.demands();
        let d = admission::Demand { class: p.class, budget: p.budget, period: p.period };
        set.push(d);
        admission::check(&set, &d).map_err(Error::Infeasible)?;
        let id = self.next_id;
        self.next_id += 1;
        let server = match p.class {
            Class::Main => Server::Main(SporadicServer::new(p.budget, p.period)),
            Class::Io => Server::Io(IoServer::new(p.budget, p.period)),
        };
        self.vcpus.push(Vcpu { id, server, background: 0, switches_in: 0 });
        Ok(id)
    }

    /// Change a VCPU's budget and period (same class) if the set stays feasible.
    pub fn set_params(&mut self, now: u64, id: u32, budget: u64, period: u64) -> Result<(), Error> {
        let i = self.index(id).ok_or(Error::NoSuchVcpu)?;
        let class = self.vcpus[i].params().class;
        let p = Params { class, budget, period };
        validate(&p)?;
        let mut set = self.demands();
        let d = admission::Demand { class, budget, period };
        set[i] = d;
        admission::check(&set, &d).map_err(Error::Infeasible)?;
        self.account(now);
        match &mut self.vcpus[i].server {
            Server::Main(s) => s.set_params(budget, period),
            Server::Io(s) => s.set_params(budget, period),
        }
        Ok(())
    }

    /// Remove a VCPU (the caller has moved its threads away).
    pub fn remove(&mut self, now: u64, id: u32) -> Result<(), Error> {
        let i = self.index(id).ok_or(Error::NoSuchVcpu)?;
        self.account(now);
        if self.running.is_some_and(|r| r.id == id) {
            self.stop_running();
        }
        self.vcpus.remove(i);
        Ok(())
    }

    fn index(&self, id: u32) -> Option<usize> {
        self.vcpus.iter().position(|v| v.id == id)
    }

    pub fn get(&self, id: u32) -> Option<&Vcpu> {
        self.vcpus.iter().find(|v| v.id == id)
    }

    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.vcpus.iter().map(|v| v.id)
    }

    pub fn load(&self) -> admission::Load {
        admission::load(&self.demands())
    }

    /// The VCPU now running and its level.
    pub fn running(&self) -> Option<(u32, Level)> {
        self.running.map(|r| (r.id, r.level))
    }

    /// An I/O VCPU takes the priority of Main VCPU `main` (or its own, with `None`) for the work it does next.
    pub fn inherit(&mut self, now: u64, io: u32, main: Option<u32>) -> Result<(), Error> {
        let period = match main {
            Some(m) => match self.get(m).map(|v| v.params()) {
                Some(p) if p.class == Class::Main => Some(p.period),
                _ => return Err(Error::NoSuchVcpu),
            },
            None => None,
        };
        self.inherit_period(now, io, period)
    }

    /// An I/O VCPU runs at `period` (a Main VCPU's, possibly another core's; `None`: its own) from `now` on.
    /// A change is a trace row (`inherit`, amount the period, 0 for its own). The activation under way keeps
    /// the budget it started with; the priority applies at the next decision.
    pub fn inherit_period(&mut self, now: u64, io: u32, period: Option<u64>) -> Result<(), Error> {
        let i = self.index(io).ok_or(Error::NoSuchVcpu)?;
        let Server::Io(s) = &mut self.vcpus[i].server else { return Err(Error::NoSuchVcpu) };
        if s.inherited() != period {
            s.set_inherited(period);
            self.trace.push(now, EventKind::Inherit, io, period.unwrap_or(0));
        }
        Ok(())
    }

    /// Charge the running VCPU up to `now`, working out exhaustion and replenishment at the instants they
    /// happened.
    pub fn account(&mut self, now: u64) {
        let Some(mut r) = self.running else { return };
        let Some(i) = self.index(r.id) else {
            self.running = None;
            return;
        };
        let v = &mut self.vcpus[i];
        while r.since < now {
            match (&mut v.server, r.level) {
                (Server::Main(s), Level::Foreground) => {
                    // Replenishments arriving mid-run add capacity from their instant on.
                    let next = s.next_replenishment().filter(|&a| a <= now);
                    let until = now.min(r.since + s.capacity()).min(next.unwrap_or(now).max(r.since));
                    let used = until - r.since;
                    if used > 0 {
                        self.trace.push(r.since, EventKind::Charge, v.id, used);
                    }
                    let exhausted = used > 0 && s.charge(used);
                    r.since = until;
                    if exhausted {
                        s.end_run();
                        self.trace.push(until, EventKind::Exhaust, v.id, 0);
                        r.level = Level::Background;
                    } else if next == Some(until) {
                        v.replenish(until, &mut self.trace);
                    } else if used == 0 {
                        // Defensive: a foreground run with no capacity (set_params shrank it) goes background.
                        s.end_run();
                        r.level = Level::Background;
                    }
                }
                (Server::Main(s), Level::Background) => {
                    let next = s.next_replenishment().filter(|&a| a <= now);
                    let until = next.map_or(now, |a| a.max(r.since));
                    if until > r.since {
                        self.trace.push(r.since, EventKind::Background, v.id, until - r.since);
                        v.background += until - r.since;
                    }
                    r.since = until;
                    if next.is_some() {
                        v.replenish(until, &mut self.trace);
                        if let Server::Main(s) = &mut v.server {
                            if s.capacity() > 0 {
                                s.start_run(until);
                                r.level = Level::Foreground;
                            }
                        }
                    }
                }
                (Server::Io(s), _) => {
                    let used = now - r.since;
                    self.trace.push(r.since, EventKind::Charge, v.id, used);
                    if s.charge(used) {
                        self.trace.push(now, EventKind::Exhaust, v.id, 0);
                    }
                    r.since = now;
                }
            }
        }
        self.running = Some(r);
    }

    fn stop_running(&mut self) {
        let Some(r) = self.running.take() else { return };
        let Some(i) = self.index(r.id) else { return };
        match &mut self.vcpus[i].server {
            Server::Main(s) => s.end_run(),
            Server::Io(s) => s.deactivate(),
        }
    }

    /// Account up to `now`, pick the VCPU to run (`has_work(id)`: it has a runnable thread) and say when the
    /// next decision is due.
    pub fn schedule(&mut self, now: u64, has_work: &dyn Fn(u32) -> bool) -> Decision {
        self.account(now);
        for v in &mut self.vcpus {
            v.replenish(now, &mut self.trace);
        }
        // An I/O VCPU that spent its activation's budget stops (and waits out its spacing).
        if let Some(r) = self.running {
            if let Some(Server::Io(s)) = self.get(r.id).map(|v| &v.server) {
                if s.active() && s.remaining() == 0 {
                    self.stop_running();
                }
            }
        }
        let foreground = self
            .vcpus
            .iter()
            .filter(|v| has_work(v.id) && v.can_run_foreground(now))
            .min_by_key(|v| v.priority())
            .map(|v| v.id);
        let choice = match foreground {
            Some(id) => Some((id, Level::Foreground)),
            None => self.pick_background(has_work).map(|id| (id, Level::Background)),
        };
        if choice != self.running() {
            let keep_run = matches!((self.running, choice), (Some(r), Some((id, _))) if r.id == id);
            if !keep_run {
                self.stop_running();
            }
            match choice {
                Some((id, level)) => {
                    let i = self.index(id).expect("chosen VCPU exists");
                    let v = &mut self.vcpus[i];
                    if level == Level::Foreground {
                        match &mut v.server {
                            Server::Main(s) => {
                                if !s.in_run() {
                                    s.start_run(now);
                                }
                            }
                            Server::Io(s) => {
                                if !s.active() {
                                    s.activate(now);
                                }
                            }
                        }
                    } else if let Server::Main(s) = &mut v.server {
                        s.end_run();
                    }
                    if !keep_run {
                        v.switches_in += 1;
                    }
                    if level == Level::Background {
                        self.last_background = id;
                    }
                    self.trace.push(now, EventKind::Switch, id, u64::from(level == Level::Foreground));
                    self.running = Some(Running { id, level, since: now });
                }
                None => {
                    self.trace.push(now, EventKind::Switch, IDLE, 0);
                    self.running = None;
                }
            }
        }
        Decision { run: choice, next_event: self.next_event(now, has_work) }
    }

    fn pick_background(&self, has_work: &dyn Fn(u32) -> bool) -> Option<u32> {
        let candidates = || self.vcpus.iter().filter(|v| matches!(v.server, Server::Main(_)) && has_work(v.id)).map(|v| v.id);
        // Stay on the last background VCPU until the caller asks for a rotation (a tick), then take the next
        // one, wrapping.
        candidates().find(|&id| id >= self.last_background).or_else(|| candidates().next())
    }

    /// Round-robin among background VCPUs: called on a tick so the next background VCPU gets its turn.
    pub fn rotate_background(&mut self) {
        if let Some(r) = self.running.filter(|r| r.level == Level::Background) {
            self.last_background = r.id + 1;
        }
    }

    /// The earliest instant at which the choice could change without any new work arriving.
    fn next_event(&self, now: u64, has_work: &dyn Fn(u32) -> bool) -> Option<u64> {
        let others_with_work = |id: u32| self.vcpus.iter().any(|v| v.id != id && has_work(v.id));
        let mut next: Option<u64> = None;
        let mut consider = |t: u64| next = Some(next.map_or(t, |n: u64| n.min(t)));
        let running = self.running.and_then(|r| self.get(r.id).map(|v| (r, v)));
        if let Some((r, v)) = running {
            match (&v.server, r.level) {
                // Budget exhaustion matters if someone else could take over; I/O budgets are always enforced.
                (Server::Main(s), Level::Foreground) if others_with_work(v.id) => consider(now + s.capacity()),
                (Server::Io(s), _) => consider(now + s.remaining()),
                _ => {}
            }
        }
        for v in &self.vcpus {
            if !has_work(v.id) {
                continue;
            }
            let Some(at) = v.next_eligible(now) else { continue };
            let matters = match running {
                None => true,
                Some((r, _)) if r.id == v.id => others_with_work(v.id),
                Some((r, rv)) => r.level == Level::Background || v.priority() < rv.priority(),
            };
            if matters {
                consider(at.max(now));
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A busy Main VCPU of period 20 and an I/O VCPU (U = 20 %) whose work arrives at t = 1.
    fn busy_main_and_io() -> (VcpuSet, u32, u32) {
        let mut set = VcpuSet::new(64);
        let main = set.create(Params { class: Class::Main, budget: 6, period: 20 }).unwrap();
        let io = set.create(Params { class: Class::Io, budget: 2, period: 10 }).unwrap();
        assert_eq!(set.schedule(0, &|id| id == main).run, Some((main, Level::Foreground)));
        (set, main, io)
    }

    #[test]
    fn inherited_period_sets_the_io_vcpus_priority_and_budget() {
        // Inheriting a shorter period than the running Main VCPU's: the bottom half preempts it, with an
        // activation of U times the inherited period.
        let (mut set, _, io) = busy_main_and_io();
        set.inherit_period(1, io, Some(5)).unwrap();
        assert_eq!(set.schedule(1, &|_| true).run, Some((io, Level::Foreground)));
        assert_eq!(set.get(io).unwrap().accounting().capacity, 1, "U 20 % of T 5");
        // A longer one: the Main VCPU keeps the core until its budget is spent.
        let (mut set, main, io) = busy_main_and_io();
        set.inherit_period(1, io, Some(40)).unwrap();
        assert_eq!(set.schedule(1, &|_| true).run, Some((main, Level::Foreground)));
        assert_eq!(set.schedule(6, &|_| true).run, Some((io, Level::Foreground)), "after the exhaustion");
        // Its own period (10) again beats the Main VCPU's.
        let (mut set, _, io) = busy_main_and_io();
        set.inherit_period(1, io, Some(40)).unwrap();
        set.inherit_period(1, io, None).unwrap();
        assert_eq!(set.schedule(1, &|_| true).run, Some((io, Level::Foreground)));
    }

    #[test]
    fn inheritance_changes_are_trace_rows_and_only_io_vcpus_inherit() {
        let (mut set, main, io) = busy_main_and_io();
        set.inherit_period(1, io, Some(5)).unwrap();
        set.inherit_period(2, io, Some(5)).unwrap();
        set.inherit(3, io, Some(main)).unwrap();
        set.inherit_period(4, io, None).unwrap();
        let rows: Vec<(u64, u64)> = set.trace.events().filter(|e| e.kind == EventKind::Inherit).map(|e| (e.at, e.amount)).collect();
        assert_eq!(rows, [(1, 5), (3, 20), (4, 0)], "a repeat is no change");
        assert_eq!(set.inherit_period(5, main, Some(5)), Err(Error::NoSuchVcpu));
        assert_eq!(set.inherit_period(5, 99, Some(5)), Err(Error::NoSuchVcpu));
        assert_eq!(set.inherit(5, io, Some(io)), Err(Error::NoSuchVcpu), "an I/O VCPU is no Main VCPU to inherit from");
    }
}

#[cfg(test)]
mod list_tests {
    use super::*;

    #[test]
    fn a_vcpu_list_parses_and_bad_items_are_named() {
        assert_eq!(parse_list("main:2000:10000,io:500:10000"), Ok(alloc::vec![(Class::Main, 2000, 10000), (Class::Io, 500, 10000)]));
        assert_eq!(parse_list(""), Ok(Vec::new()));
        assert!(parse_list("gpu:1:2").unwrap_err().contains("not main or io"));
        assert!(parse_list("main:1").unwrap_err().contains("CLASS:BUDGET_US:PERIOD_US"));
        assert!(parse_list("main:1:2:3").is_err());
    }
}
