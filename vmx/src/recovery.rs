//! Recovery policy (paper §3.7, docs/recovery.md): what the monitor does with a sandbox that faulted — pure
//! logic, host-tested. The mechanics (scrub, reload, second-stage rebuild, channel reset, relaunch) are the
//! monitor's (`monitor/faults.rs`).
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Per sandbox, from the monitor's command line (`recovery=restart` for all, or one entry per sandbox:
/// `recovery=restart,none,restart,restart`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Stop it for good (the default, and what the attack tests expect).
    None,
    /// Re-initialise the whole sandbox from the pristine image and relaunch it.
    Restart,
    /// Component level: a fault in the sandbox's registered component (its NIC driver) switches it to the
    /// alternative driver and the rest of the sandbox runs on; any other fault restarts the sandbox.
    Driver,
    /// Remote: a NIC sharer's network service moves to another healthy sharer (its monitor is told by IPI,
    /// re-routes the interrupt and its kernel takes the address over) while the faulted sandbox is restarted,
    /// without the NIC, in the background. A sandbox that shares no NIC is restarted.
    Remote,
}

/// The sharer that takes over from `faulted` (remote recovery): the next healthy one after it, round robin
/// over `sharers` (sandbox numbers, in sharer order). None when no other sharer is healthy.
pub fn pick_takeover(faulted: u32, sharers: &[u32], healthy: impl Fn(u32) -> bool) -> Option<u32> {
    let at = sharers.iter().position(|&s| s == faulted)?;
    (1..sharers.len()).map(|k| sharers[(at + k) % sharers.len()]).find(|&s| healthy(s))
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Restart => "restart",
            Policy::Driver => "driver",
            Policy::Remote => "remote",
        }
    }
}

fn one(word: &str) -> Result<Policy, String> {
    match word {
        "none" => Ok(Policy::None),
        "restart" => Ok(Policy::Restart),
        "driver" => Ok(Policy::Driver),
        "remote" => Ok(Policy::Remote),
        other => Err(format!("recovery={other}: expected restart, driver, remote or none")),
    }
}

/// The policies of `sandboxes` sandboxes: one word for all, or exactly one per sandbox.
pub fn parse_policies(spec: Option<&str>, sandboxes: u32) -> Result<Vec<Policy>, String> {
    let n = sandboxes as usize;
    let Some(spec) = spec else { return Ok(alloc::vec![Policy::None; n]) };
    let words: Vec<&str> = spec.split(',').map(str::trim).collect();
    match words.len() {
        1 => Ok(alloc::vec![one(words[0])?; n]),
        k if k == n => words.into_iter().map(one).collect(),
        k => Err(format!("recovery={spec}: {k} entries for {n} sandboxes (give one, or one per sandbox)")),
    }
}

/// A registered component: the entry its recovery resumes at and the stack its thread runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Component {
    pub entry: u64,
    pub stack_low: u64,
    pub stack_high: u64,
}

impl Component {
    /// From the three words a sandbox registers; refused unless the stack is a sane range and the entry and
    /// stack lie in `allowed` (the sandbox's own memory, checked by the caller's closure).
    pub fn parse(words: [u64; 3], allowed: impl Fn(u64, u64) -> bool) -> Option<Component> {
        let [entry, stack_low, stack_high] = words;
        let sane = stack_low < stack_high && stack_high - stack_low <= 1 << 20 && stack_high - stack_low >= 4096;
        (sane && allowed(entry, 1) && allowed(stack_low, stack_high - stack_low)).then_some(Component { entry, stack_low, stack_high })
    }

    /// Was a fault with guest stack pointer `rsp` inside the component?
    pub fn owns(&self, rsp: u64) -> bool {
        (self.stack_low..self.stack_high).contains(&rsp)
    }

    /// The stack pointer its recovery entry starts with: the top, 16-byte aligned, minus a return address slot
    /// (as after a call).
    pub fn fresh_rsp(&self) -> u64 {
        (self.stack_high & !0xF) - 8
    }
}

/// A crash loop: a sandbox that faults again and again is stopped rather than recovered forever (a fault in
/// its boot path, or in the program it is given, would repeat every time; each recovery also resets every
/// peer's channels, so an endless one would be an amplifier). Counted over the sandbox's whole life, in a
/// sliding window: more than `limit` faults within any `window_cycles` stop it, however long after a launch
/// each came (a rule that counted only faults soon after a launch let a sandbox faulting just later loop for
/// ever). Component recoveries count as faults too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashLoopRule {
    pub window_cycles: u64,
    /// Faults recovered within a window; the next one in it stops the sandbox. At most [`MAX_CRASH_LIMIT`].
    pub limit: u32,
}

/// The most faults a window may hold before the rule fires (what [`History`] remembers).
pub const MAX_CRASH_LIMIT: u32 = 15;

/// The rule without a monitor option: 3 recoveries within 60 s (the 4th fault stops the sandbox).
pub const DEFAULT_CRASH_LOOP: (u32, u64) = (3, 60_000);

/// `crash_loop=LIMIT/WINDOW_MS` (`crash_loop=3/60000`) or `crash_loop=off` (recover every fault: a fault
/// campaign is a crash loop by design). Returns (limit, window in ms), None for off; absent: the default.
pub fn parse_crash_loop(spec: Option<&str>) -> Result<Option<(u32, u64)>, String> {
    let Some(spec) = spec else { return Ok(Some(DEFAULT_CRASH_LOOP)) };
    if spec == "off" {
        return Ok(None);
    }
    let bad = || format!("crash_loop={spec}: expected LIMIT/WINDOW_MS (1 to {MAX_CRASH_LIMIT} faults, a window over 0 ms) or off");
    let (limit, window) = spec.split_once('/').ok_or_else(bad)?;
    let limit: u32 = limit.parse().map_err(|_| bad())?;
    let window: u64 = window.parse().map_err(|_| bad())?;
    if !(1..=MAX_CRASH_LIMIT).contains(&limit) || window == 0 {
        return Err(bad());
    }
    Ok(Some((limit, window)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Recover,
    /// Give up: the crash loop rule fired (`faults` within the rule's window, this one included).
    CrashLoop { faults: u32 },
}

/// What the monitor remembers of one sandbox's incarnations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// How many times it was recovered (0 = still its first boot).
    pub incarnation: u32,
    pub launched_tsc: u64,
    /// Component (driver) recoveries so far.
    pub component_recoveries: u32,
    /// Time stamps of its latest faults (a ring; `faults` counts every fault of its life).
    recent: [u64; MAX_CRASH_LIMIT as usize + 1],
    faults: u64,
}

impl History {
    /// A fault at `now`: recover again, or give up under `rule` (None: always recover).
    pub fn on_fault(&mut self, now: u64, rule: Option<CrashLoopRule>) -> Decision {
        let slots = self.recent.len() as u64;
        self.recent[(self.faults % slots) as usize] = now;
        self.faults += 1;
        let Some(rule) = rule else { return Decision::Recover };
        let limit = rule.limit.clamp(1, MAX_CRASH_LIMIT);
        let remembered = self.faults.min(slots) as usize;
        let in_window = self.recent[..remembered].iter().filter(|&&t| now.saturating_sub(t) < rule.window_cycles).count() as u32;
        if in_window > limit {
            Decision::CrashLoop { faults: in_window }
        } else {
            Decision::Recover
        }
    }

    /// The sandbox was relaunched at `now`.
    pub fn on_relaunch(&mut self, now: u64) {
        self.incarnation += 1;
        self.launched_tsc = now;
    }

    /// Its component was recovered at `now` (the sandbox itself ran on).
    pub fn on_component_recovery(&mut self, now: u64) {
        self.component_recoveries += 1;
        self.launched_tsc = now;
    }
}

/// Fault `i` of a campaign seeded with `seed` on `sandboxes` sandboxes: (target, kind index below `kinds`).
/// Sandboxes 0 and 1 are the campaign's bystanders; targets are 2 and up (splitmix64 of seed and index, so
/// every sandbox computes the same schedule on its own).
pub fn campaign_fault(seed: u64, i: u64, sandboxes: u32, kinds: usize) -> (u32, usize) {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let targets = u64::from(sandboxes.saturating_sub(2).max(1));
    (2 + (z % targets) as u32, ((z >> 32) % kinds.max(1) as u64) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_policies_parse_for_all_or_each() {
        assert_eq!(parse_policies(None, 3).unwrap(), [Policy::None; 3]);
        assert_eq!(parse_policies(Some("restart"), 2).unwrap(), [Policy::Restart; 2]);
        assert_eq!(parse_policies(Some("restart,none"), 2).unwrap(), [Policy::Restart, Policy::None]);
        assert_eq!(parse_policies(Some("driver,restart"), 2).unwrap(), [Policy::Driver, Policy::Restart]);
        assert!(parse_policies(Some("restart,none,restart"), 2).unwrap_err().contains("3 entries for 2"));
        assert!(parse_policies(Some("reboot"), 2).unwrap_err().contains("recovery=reboot"));
    }

    #[test]
    fn recovery_remote_target_is_the_next_healthy_sharer() {
        let sharers = [0, 1, 3];
        assert_eq!(pick_takeover(0, &sharers, |_| true), Some(1));
        assert_eq!(pick_takeover(3, &sharers, |_| true), Some(0), "round robin wraps");
        assert_eq!(pick_takeover(0, &sharers, |s| s != 1), Some(3), "an unhealthy sharer is skipped");
        assert_eq!(pick_takeover(0, &sharers, |s| s == 0), None, "nobody healthy");
        assert_eq!(pick_takeover(2, &sharers, |_| true), None, "not a sharer");
        assert_eq!(parse_policies(Some("remote"), 1).unwrap(), [Policy::Remote]);
    }

    #[test]
    fn recovery_component_registration_is_checked() {
        let mine = |a: u64, len: u64| a >= 0x1000 && a + len <= 0x10_0000;
        let c = Component::parse([0x2000, 0x8000, 0x18000], mine).expect("a sane component");
        assert!(c.owns(0x8000) && c.owns(0x17FFF) && !c.owns(0x18000) && !c.owns(0x7FFF));
        assert_eq!(c.fresh_rsp() % 16, 8);
        assert!(Component::parse([0x2000, 0x18000, 0x8000], mine).is_none(), "reversed stack");
        assert!(Component::parse([0x2000, 0x8000, 0x8100], mine).is_none(), "stack too small");
        assert!(Component::parse([0x2000, 0xF_F000, 0x20_0000], mine).is_none(), "stack outside the sandbox");
        assert!(Component::parse([0x20_0000, 0x8000, 0x18000], mine).is_none(), "entry outside the sandbox");
    }

    #[test]
    fn recovery_gives_up_on_a_crash_loop_over_a_sliding_window() {
        let rule = Some(CrashLoopRule { window_cycles: 1000, limit: 3 });
        let mut h = History::default();
        // Faults further apart than the window allows are recovered however many there are.
        for i in 0..50u64 {
            let t = 400 * (i + 1);
            assert_eq!(h.on_fault(t, rule), Decision::Recover, "fault {i}");
            h.on_relaunch(t + 1);
        }
        assert_eq!(h.incarnation, 50);
        // A slow loop (each fault long after its relaunch, but four within a window) is stopped.
        let t = h.launched_tsc + 1000;
        let mut h = History::default();
        for k in 0..3 {
            assert_eq!(h.on_fault(t + 300 * k, rule), Decision::Recover);
            h.on_relaunch(t + 300 * k + 1);
        }
        assert_eq!(h.on_fault(t + 900, rule), Decision::CrashLoop { faults: 4 });
    }

    #[test]
    fn recovery_crash_loop_rule_off_recovers_everything_and_parses() {
        let mut h = History::default();
        assert!((0..100).all(|t| h.on_fault(t, None) == Decision::Recover));
        assert_eq!(parse_crash_loop(None), Ok(Some(DEFAULT_CRASH_LOOP)));
        assert_eq!(parse_crash_loop(Some("off")), Ok(None));
        assert_eq!(parse_crash_loop(Some("5/10000")), Ok(Some((5, 10_000))));
        for bad in ["5", "0/100", "16/100", "3/0", "x/100", "3/y", "3/100/2"] {
            assert!(parse_crash_loop(Some(bad)).unwrap_err().contains(bad), "{bad}");
        }
    }

    #[test]
    fn recovery_crash_loop_window_remembers_enough_faults_for_the_largest_limit() {
        let rule = Some(CrashLoopRule { window_cycles: 1_000_000, limit: MAX_CRASH_LIMIT });
        let mut h = History::default();
        for t in 0..u64::from(MAX_CRASH_LIMIT) {
            assert_eq!(h.on_fault(t, rule), Decision::Recover);
        }
        assert_eq!(h.on_fault(99, rule), Decision::CrashLoop { faults: MAX_CRASH_LIMIT + 1 });
    }

    #[test]
    fn recovery_campaign_schedule_is_deterministic_and_covers_targets_and_kinds() {
        let mut seen_targets = [0u32; 8];
        let mut seen_kinds = [0u32; 7];
        for i in 0..1000 {
            let (t, k) = campaign_fault(42, i, 4, 7);
            assert_eq!((t, k), campaign_fault(42, i, 4, 7));
            assert!((2..4).contains(&t) && k < 7);
            seen_targets[t as usize] += 1;
            seen_kinds[k] += 1;
        }
        assert!(seen_targets[2] > 400 && seen_targets[3] > 400, "{seen_targets:?}");
        assert!(seen_kinds.iter().all(|&c| c > 100), "{seen_kinds:?}");
        let schedule = |seed| (0..50).map(|i| campaign_fault(seed, i, 4, 7)).collect::<Vec<_>>();
        assert_ne!(schedule(1), schedule(2), "the seed changes the schedule");
    }
}
