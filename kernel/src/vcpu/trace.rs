//! A bounded ring of scheduling events (budget charges, replenishments, switches), dumped as CSV.

use alloc::collections::VecDeque;
use alloc::string::String;
use core::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `vcpu` ran at foreground priority for `amount` from `at`.
    Charge,
    /// `vcpu` ran at background priority for `amount` from `at`.
    Background,
    /// `amount` of `vcpu`'s budget came back at `at`.
    Replenish,
    /// `vcpu`'s budget ran out at `at`.
    Exhaust,
    /// The core switched to `vcpu` at `at` (`amount`: 1 foreground, 0 background); `vcpu` u32::MAX: idle.
    Switch,
    /// I/O VCPU `vcpu` runs at period `amount` from `at` on (inherited from a Main VCPU; 0: its own again).
    Inherit,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Charge => "charge",
            EventKind::Background => "background",
            EventKind::Replenish => "replenish",
            EventKind::Exhaust => "exhaust",
            EventKind::Switch => "switch",
            EventKind::Inherit => "inherit",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub at: u64,
    pub kind: EventKind,
    pub vcpu: u32,
    pub amount: u64,
}

pub const IDLE: u32 = u32::MAX;

/// Keeps the newest `capacity` events; counts what it dropped.
#[derive(Clone, Debug)]
pub struct Trace {
    events: VecDeque<Event>,
    capacity: usize,
    pub dropped: u64,
}

impl Trace {
    pub fn new(capacity: usize) -> Self {
        Trace { events: VecDeque::new(), capacity, dropped: 0 }
    }

    pub fn push(&mut self, at: u64, kind: EventKind, vcpu: u32, amount: u64) {
        if self.capacity == 0 {
            return;
        }
        if self.events.len() == self.capacity {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(Event { at, kind, vcpu, amount });
    }

    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    pub fn drain(&mut self) -> alloc::collections::vec_deque::Drain<'_, Event> {
        self.events.drain(..)
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// `time,event,vcpu,amount` lines, oldest first (`vcpu` "idle" for the idle switch).
    pub fn csv(&self) -> String {
        let mut s = String::from("time,event,vcpu,amount\n");
        for e in &self.events {
            let _ = if e.vcpu == IDLE {
                writeln!(s, "{},{},idle,{}", e.at, e.kind.name(), e.amount)
            } else {
                writeln!(s, "{},{},{},{}", e.at, e.kind.name(), e.vcpu, e.amount)
            };
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_trace_keeps_newest_and_prints_csv() {
        let mut t = Trace::new(2);
        t.push(1, EventKind::Switch, 0, 1);
        t.push(2, EventKind::Charge, 0, 5);
        t.push(7, EventKind::Switch, IDLE, 0);
        assert_eq!(t.dropped, 1);
        assert_eq!(t.csv(), "time,event,vcpu,amount\n2,charge,0,5\n7,switch,idle,0\n");
    }
}
