//! The user-program tools' own option parsers: `cc` and `new-program`.
#![forbid(unsafe_code)]

use super::{Cli, USAGE};
use crate::usercc;
use std::path::PathBuf;

/// `cc FILE.c [-o OUT] [GCC ARGS..]`.
pub(super) fn parse_cc(args: &[String]) -> Result<Cli, String> {
    let mut o = usercc::CcOptions { src: PathBuf::new(), out: None, gcc_args: Vec::new() };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => o.out = Some(PathBuf::from(it.next().ok_or("-o needs a path")?)),
            a if a.starts_with("-o") => o.out = Some(PathBuf::from(&a[2..])),
            a if a.ends_with(".c") && o.src.as_os_str().is_empty() => o.src = PathBuf::from(a),
            a => o.gcc_args.push(a.to_string()),
        }
    }
    if o.src.as_os_str().is_empty() {
        return Err(format!("cc needs a .c file\n{USAGE}"));
    }
    Ok(Cli::Cc(o))
}

/// `new-program NAME [--dir DIR]`.
pub(super) fn parse_new_program(args: &[String]) -> Result<Cli, String> {
    let mut it = args.iter();
    let name = it.next().ok_or_else(|| format!("new-program needs a NAME\n{USAGE}"))?.clone();
    let mut dir = PathBuf::from(".");
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => dir = PathBuf::from(it.next().ok_or("--dir needs a path")?),
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    Ok(Cli::NewProgram(name, dir))
}
