//! Kernel command line (from GRUB): space-separated `key=value` options; `run=` takes the rest of the line so
//! the command to run may contain spaces (`mode=smp run=forkwait 1000`).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options<'a> {
    pub mode: Option<&'a str>,
    pub log_level: LogLevel,
    pub run: Option<&'a str>,
    /// First option this parser did not understand (reported, not fatal: a typo must not brick a boot).
    pub unknown: Option<&'a str>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    BadLogLevel(&'a str),
}

pub fn parse(line: &str) -> Result<Options<'_>, CmdlineError<'_>> {
    let mut opts = Options { mode: None, log_level: LogLevel::Info, run: None, unknown: None };
    let mut rest = line.trim();
    while !rest.is_empty() {
        if let Some(cmd) = rest.strip_prefix("run=") {
            let cmd = cmd.trim();
            opts.run = if cmd.is_empty() { None } else { Some(cmd) };
            break;
        }
        let (word, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        rest = tail.trim_start();
        match word.split_once('=') {
            Some(("mode", v)) => opts.mode = Some(v),
            Some(("loglevel", v)) => {
                opts.log_level = match v {
                    "error" => LogLevel::Error,
                    "warn" => LogLevel::Warn,
                    "info" => LogLevel::Info,
                    "debug" => LogLevel::Debug,
                    "trace" => LogLevel::Trace,
                    _ => return Err(CmdlineError::BadLogLevel(v)),
                }
            }
            _ => {
                if opts.unknown.is_none() {
                    opts.unknown = Some(word);
                }
            }
        }
    }
    Ok(opts)
}

/// Split a command into program name and argument words.
pub fn split_command(cmd: &str) -> (&str, impl Iterator<Item = &str>) {
    let mut words = cmd.split_whitespace();
    let prog = words.next().unwrap_or("");
    (prog, words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options_and_run_rest() {
        let o = parse("mode=smp loglevel=debug run=forkwait  1000 x=y").unwrap();
        assert_eq!(o.mode, Some("smp"));
        assert_eq!(o.log_level, LogLevel::Debug);
        assert_eq!(o.run, Some("forkwait  1000 x=y"));
        assert_eq!(o.unknown, None);
    }

    #[test]
    fn defaults_and_unknown() {
        let o = parse("").unwrap();
        assert_eq!(o, Options { mode: None, log_level: LogLevel::Info, run: None, unknown: None });
        let o = parse("  bogus mode=vt run=  ").unwrap();
        assert_eq!(o.unknown, Some("bogus"));
        assert_eq!(o.mode, Some("vt"));
        assert_eq!(o.run, None);
    }

    #[test]
    fn bad_log_level_is_an_error() {
        assert_eq!(parse("loglevel=loud"), Err(CmdlineError::BadLogLevel("loud")));
    }

    #[test]
    fn split() {
        let (p, args) = split_command("ktest fault  page");
        assert_eq!(p, "ktest");
        assert_eq!(args.collect::<Vec<_>>(), vec!["fault", "page"]);
        assert_eq!(split_command("").0, "");
    }
}
