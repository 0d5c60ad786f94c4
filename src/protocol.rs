//! The guest's line protocol on COM1 (docs/architecture.md): `RESULT` lines, `QUESTV DONE`, `KERNEL PANIC`, and
//! judging a finished run from them. Pure and unit-tested.
#![forbid(unsafe_code)]

/// One `RESULT <name> key=value ...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultLine {
    pub name: String,
    pub fields: Vec<(String, String)>,
    /// Who printed it: `None` for the kernel itself (SMP kernel, VT monitor), `Some(n)` for VT sandbox n (the
    /// monitor prints sandbox output as `[sN] ...`).
    pub sandbox: Option<u32>,
}

impl ResultLine {
    /// Printed by the kernel itself (the VT monitor), not relayed from a sandbox.
    pub fn from_monitor(&self) -> bool {
        self.sandbox.is_none()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A field parsed as an integer (decimal, or hex with `0x`).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        let v = self.get(key)?;
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        }
    }
}

/// Split the VT monitor's `[sN] ` prefix off a line relayed from sandbox N.
pub fn split_sandbox_prefix(line: &str) -> (Option<u32>, &str) {
    if let Some(rest) = line.strip_prefix("[s") {
        if let Some((n, text)) = rest.split_once("] ") {
            if let Ok(n) = n.parse() {
                return (Some(n), text);
            }
        }
    }
    (None, line)
}

/// Parse a `RESULT` line, the kernel's own or relayed from a sandbox (`[sN] RESULT ...`); `None` for anything
/// else or a malformed one (no name, a token without `=`).
pub fn parse_result_line(line: &str) -> Option<ResultLine> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (sandbox, line) = split_sandbox_prefix(line);
    let rest = line.strip_prefix("RESULT ")?;
    let mut words = rest.split_whitespace();
    let name = words.next()?;
    if name.contains('=') {
        return None;
    }
    let mut fields = Vec::new();
    for w in words {
        let (k, v) = w.split_once('=')?;
        if k.is_empty() {
            return None;
        }
        fields.push((k.to_string(), v.to_string()));
    }
    Some(ResultLine { name: name.to_string(), fields, sandbox })
}

/// `QUESTV DONE status=N` → `Some(N)`. Only the kernel itself (the VT monitor) can end a run: a sandbox's line
/// arrives prefixed (`[s0] QUESTV DONE ...`) and is not a DONE line.
pub fn parse_done_line(line: &str) -> Option<i32> {
    line.trim_end_matches(['\r', '\n']).trim().strip_prefix("QUESTV DONE status=")?.trim().parse().ok()
}

pub fn is_panic_line(line: &str) -> bool {
    line.trim_start().starts_with("KERNEL PANIC")
}

/// All `RESULT` lines named `name` in `lines`.
pub fn results<'a>(lines: &'a [String], name: &'a str) -> impl Iterator<Item = ResultLine> + 'a {
    lines.iter().filter_map(|l| parse_result_line(l)).filter(move |r| r.name == name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The guest printed `QUESTV DONE status=N`.
    Done(i32),
    Panic,
    /// The emulator stopped (QEMU exits on a triple fault with -no-reboot; Bochs on its triple-fault panic)
    /// without the guest reporting.
    Reset,
    Timeout,
}

impl Outcome {
    /// The runner's exit code (README).
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Done(0) => 0,
            Outcome::Done(_) => 1,
            Outcome::Panic => 3,
            Outcome::Reset => 4,
            Outcome::Timeout => 5,
        }
    }
}

/// Judge a finished run from its serial lines. A panic wins over a later DONE line (a panicking kernel must
/// never count as success); DONE is otherwise final; with neither, the emulator's exit means reset.
pub fn judge(lines: &[String], emulator_exited: bool, timed_out: bool) -> Outcome {
    let mut done = None;
    for l in lines {
        if is_panic_line(l) {
            return Outcome::Panic;
        }
        if done.is_none() {
            done = parse_done_line(l);
        }
    }
    match done {
        Some(n) => Outcome::Done(n),
        None if timed_out => Outcome::Timeout,
        None if emulator_exited => Outcome::Reset,
        None => Outcome::Timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn result_lines() {
        let r = parse_result_line("RESULT boot cpus_online=4 mode=smp\r\n").unwrap();
        assert_eq!(r.name, "boot");
        assert_eq!(r.get("cpus_online"), Some("4"));
        assert_eq!(r.get_u64("cpus_online"), Some(4));
        assert_eq!(r.get("mode"), Some("smp"));
        assert_eq!(r.get("missing"), None);
        let r = parse_result_line("RESULT exception vector=14 cr2=0x7fffdead0000").unwrap();
        assert_eq!(r.get_u64("cr2"), Some(0x7fff_dead_0000));
        assert_eq!(parse_result_line("RESULT empty").unwrap().fields, vec![]);
        assert!(r.from_monitor());
    }

    #[test]
    fn sandbox_lines_are_tagged_and_cannot_end_a_run() {
        let r = parse_result_line("[s2] RESULT forkwait iterations=10 sandbox=2").unwrap();
        assert_eq!((r.name.as_str(), r.sandbox, r.get_u64("iterations")), ("forkwait", Some(2), Some(10)));
        assert!(!r.from_monitor());
        assert_eq!(parse_result_line("[s0] RESULT sandbox_done sandbox=1 status=0").unwrap().sandbox, Some(0));
        assert_eq!(parse_result_line("[sx] RESULT a b=1"), None);
        assert_eq!(split_sandbox_prefix("[s12] text"), (Some(12), "text"));
        assert_eq!(split_sandbox_prefix("[cpu0 INFO ] x"), (None, "[cpu0 INFO ] x"));
        assert_eq!(parse_done_line("[s0] QUESTV DONE status=0"), None);
        assert_eq!(judge(&s(&["[s0] QUESTV DONE status=0"]), false, true), Outcome::Timeout);
        // A sandbox's panic is contained: it does not make the run a panic.
        assert_eq!(judge(&s(&["[s1] KERNEL PANIC on cpu 0", "QUESTV DONE status=137"]), false, false), Outcome::Done(137));
    }

    #[test]
    fn malformed_result_lines() {
        assert_eq!(parse_result_line("RESULT"), None);
        assert_eq!(parse_result_line("RESULT "), None);
        assert_eq!(parse_result_line("RESULT boot cpus_online"), None);
        assert_eq!(parse_result_line("RESULT boot =4"), None);
        assert_eq!(parse_result_line("RESULT a=b"), None);
        assert_eq!(parse_result_line("[cpu0] RESULT boot a=1"), None);
        assert_eq!(parse_result_line("RESULTS boot a=1"), None);
    }

    #[test]
    fn done_lines() {
        assert_eq!(parse_done_line("QUESTV DONE status=0\r"), Some(0));
        assert_eq!(parse_done_line("QUESTV DONE status=127"), Some(127));
        assert_eq!(parse_done_line("QUESTV DONE status=-1"), Some(-1));
        assert_eq!(parse_done_line("QUESTV DONE status="), None);
        assert_eq!(parse_done_line("QUESTV DONE"), None);
    }

    #[test]
    fn judging() {
        assert_eq!(judge(&s(&["x", "QUESTV DONE status=0"]), false, false), Outcome::Done(0));
        assert_eq!(judge(&s(&["QUESTV DONE status=3"]), true, false), Outcome::Done(3));
        // A panic is never success, even if a DONE line follows.
        assert_eq!(judge(&s(&["KERNEL PANIC on cpu 0", "QUESTV DONE status=0"]), false, false), Outcome::Panic);
        assert_eq!(judge(&s(&["booting"]), true, false), Outcome::Reset);
        assert_eq!(judge(&s(&["booting"]), false, true), Outcome::Timeout);
        assert_eq!(Outcome::Done(0).exit_code(), 0);
        assert_eq!(Outcome::Done(127).exit_code(), 1);
        assert_eq!(Outcome::Panic.exit_code(), 3);
        assert_eq!(Outcome::Reset.exit_code(), 4);
        assert_eq!(Outcome::Timeout.exit_code(), 5);
    }
}
