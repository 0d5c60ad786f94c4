//! Recovery policy (paper §3.7, docs/recovery.md): what the monitor does with a sandbox that faulted — pure
//! logic, host-tested. The mechanics (scrub, reload, second-stage rebuild, channel reset, relaunch) are the
//! monitor's (`vt.rs`).

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
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Restart => "restart",
        }
    }
}

fn one(word: &str) -> Result<Policy, String> {
    match word {
        "none" => Ok(Policy::None),
        "restart" => Ok(Policy::Restart),
        other => Err(format!("recovery={other}: expected restart or none")),
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

/// A crash loop: a sandbox that faults again and again soon after being relaunched is stopped rather than
/// restarted forever (a fault in its boot path, or in the program it is given, would repeat every time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashLoopRule {
    /// A fault this soon after a launch counts as "quick".
    pub quick_cycles: u64,
    /// This many quick faults in a row end the recovery.
    pub limit: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Recover,
    /// Give up: the crash loop rule fired.
    CrashLoop { quick_faults: u32 },
}

/// What the monitor remembers of one sandbox's incarnations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// How many times it was recovered (0 = still its first boot).
    pub incarnation: u32,
    pub launched_tsc: u64,
    pub quick_faults: u32,
}

impl History {
    /// A fault at `now`: recover again, or give up under `rule`.
    pub fn on_fault(&mut self, now: u64, rule: CrashLoopRule) -> Decision {
        if now.saturating_sub(self.launched_tsc) < rule.quick_cycles {
            self.quick_faults += 1;
        } else {
            self.quick_faults = 0;
        }
        if self.quick_faults >= rule.limit {
            Decision::CrashLoop { quick_faults: self.quick_faults }
        } else {
            Decision::Recover
        }
    }

    /// The sandbox was relaunched at `now`.
    pub fn on_relaunch(&mut self, now: u64) {
        self.incarnation += 1;
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
        assert!(parse_policies(Some("restart,none,restart"), 2).unwrap_err().contains("3 entries for 2"));
        assert!(parse_policies(Some("reboot"), 2).unwrap_err().contains("recovery=reboot"));
    }

    #[test]
    fn recovery_gives_up_on_a_crash_loop_only() {
        let rule = CrashLoopRule { quick_cycles: 100, limit: 3 };
        let mut h = History::default();
        // Faults long after each launch are recovered however many there are.
        for i in 0..50u64 {
            let t = 1000 * (i + 1);
            assert_eq!(h.on_fault(t, rule), Decision::Recover);
            h.on_relaunch(t + 1);
        }
        assert_eq!(h.incarnation, 50);
        // Three quick ones in a row: stop.
        let t = h.launched_tsc;
        assert_eq!(h.on_fault(t + 10, rule), Decision::Recover);
        h.on_relaunch(t + 11);
        assert_eq!(h.on_fault(t + 20, rule), Decision::Recover);
        h.on_relaunch(t + 21);
        assert_eq!(h.on_fault(t + 30, rule), Decision::CrashLoop { quick_faults: 3 });
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

    #[test]
    fn recovery_quick_fault_count_resets_after_a_good_run() {
        let rule = CrashLoopRule { quick_cycles: 100, limit: 2 };
        let mut h = History::default();
        assert_eq!(h.on_fault(10, rule), Decision::Recover);
        h.on_relaunch(11);
        assert_eq!(h.on_fault(500, rule), Decision::Recover);
        assert_eq!(h.quick_faults, 0);
    }
}
