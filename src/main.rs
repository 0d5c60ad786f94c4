//! `questv` — build, boot and judge questv images. See README.md and `questv --help`.
#![forbid(unsafe_code)]

use questv::{boot, parse_args, BootOptions, Cli, USAGE};
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(Cli::Boot(o)) => o,
        Ok(Cli::Shell(mut o)) => {
            // Debian's static busybox, fetched once with the Linux baseline.
            let cache = questv::workspace_root().join("target").join("linux-cache");
            match questv::linux::fetch(&cache) {
                Ok((_, busybox, _, _)) => o.add.push(busybox),
                Err(e) => {
                    eprintln!("questv: shell: cannot fetch busybox: {e}");
                    std::process::exit(2);
                }
            }
            o
        }
        Ok(Cli::MsgBench(o, vcpus)) => table("msgbench", questv::msgbench(&o, &vcpus)),
        Ok(Cli::Compare(o, linux)) => table("compare", questv::compare(&o, linux)),
        Ok(Cli::Ping(p)) => match questv::ping::ping(&p) {
            Ok((text, path, ok)) => {
                print!("{text}");
                println!("csv: {}", path.display());
                std::process::exit(if ok { 0 } else { 1 });
            }
            Err(e) => {
                eprintln!("questv: ping: {e}");
                std::process::exit(2);
            }
        },
        Ok(Cli::Fig10(o)) => finish("fig10", questv::fig10::fig10(&o), 2),
        Ok(Cli::Faults(o)) => finish("faults", questv::faults::faults(&o), 2),
        Ok(Cli::Paper(o)) => finish("paper", questv::paper::paper(&o), 2),
        Ok(Cli::Recovery(o)) => finish("recovery", with_figures(questv::recoveryfig::recoveryfig(&o)), 1),
        Ok(Cli::NetFig(o)) => finish("netfig", with_figures(questv::netfig::netfig(&o)), 1),
        Ok(Cli::Image(o, out)) => image(&o, &out),
        Ok(Cli::Cc(o)) => cc(&o),
        Ok(Cli::NewProgram(name, dir)) => new_program(&name, &dir),
        Ok(Cli::Help) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("questv: {e}");
            std::process::exit(2);
        }
    };
    run_boot(&opts)
}

/// `boot`: boot, report how the run ended and exit with its code.
fn run_boot(opts: &BootOptions) -> ! {
    match boot(opts) {
        Ok(report) => {
            let code = report.outcome.exit_code();
            match report.outcome {
                questv::Outcome::Reset => eprintln!("questv: guest reset or triple fault (no QUESTV DONE)"),
                questv::Outcome::Timeout => eprintln!("questv: timeout after {} s", opts.timeout_secs()),
                _ => {}
            }
            eprintln!(
                "questv: emulator={} mode={} cpus={} wall_time_s={:.1} outcome={:?} exit={}",
                opts.emulator.name(),
                opts.mode(),
                opts.cpus,
                report.wall_time.as_secs_f64(),
                report.outcome,
                code
            );
            std::process::exit(code);
        }
        Err(e) => {
            eprintln!("questv: {e}");
            std::process::exit(2);
        }
    }
}

/// `compare` and `msgbench`: print the table and where its CSV went (exit 0), or the error (exit 1).
fn table(name: &str, result: Result<(String, std::path::PathBuf), String>) -> ! {
    match result {
        Ok((table, path)) => {
            print!("{table}");
            println!("csv: {}", path.display());
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("questv: {name}: {e}");
            std::process::exit(1);
        }
    }
}

/// `image`: build the ISO and say where it is.
fn image(o: &BootOptions, out: &Path) -> ! {
    match questv::image(o, out) {
        Ok(p) => {
            println!("image: {} ({}; BIOS and UEFI)", p.display(), o.kernel_args());
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("questv: image: {e}");
            std::process::exit(2);
        }
    }
}

/// `cc`: compile, show the compiler's warnings and how to run the result.
fn cc(o: &questv::usercc::CcOptions) -> ! {
    match questv::usercc::cc(o) {
        Ok((out, warnings)) => {
            eprint!("{warnings}");
            println!("questv executable: {} (run it: boot --add {} --run \"{} ARGS\")", out.display(), out.display(), out.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("questv: cc: {e}");
            std::process::exit(1);
        }
    }
}

/// `new-program`: write the crate and say how to build and run it.
fn new_program(name: &str, dir: &Path) -> ! {
    match questv::usercc::new_program(name, dir) {
        Ok(at) => {
            println!("created {} — build it with: (cd {} && cargo build --release)", at.display(), at.display());
            println!("run it with: cargo run --release -- boot --add {}/target/{}/release/{name} --run \"{name}\"", at.display(), questv::KERNEL_TARGET);
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("questv: new-program: {e}");
            std::process::exit(2);
        }
    }
}

/// An experiment's summary and where its figures went, as a passed run.
fn with_figures(r: Result<(String, std::path::PathBuf), String>) -> Result<(String, bool), String> {
    r.map(|(text, dir)| (format!("{text}figures: {}\n", dir.display()), true))
}

/// Print an experiment's summary and exit: 0 if it showed what it should, 1 if not, `err_code` if it could not run.
fn finish(name: &str, r: Result<(String, bool), String>, err_code: i32) -> ! {
    match r {
        Ok((text, ok)) => {
            print!("{text}");
            std::process::exit(if ok { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("questv: {name}: {e}");
            std::process::exit(err_code);
        }
    }
}
