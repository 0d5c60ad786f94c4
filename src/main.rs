//! `questv` — build, boot and judge questv images. See README.md and `questv --help`.

use questv::{boot, parse_args, Cli, USAGE};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(Cli::Boot(o)) => o,
        Ok(cmd @ (Cli::MsgBench(..) | Cli::Compare(_))) => {
            let (name, result) = match &cmd {
                Cli::MsgBench(o, vcpus) => ("msgbench", questv::msgbench(o, vcpus)),
                Cli::Compare(o) => ("compare", questv::compare(o)),
                _ => unreachable!(),
            };
            match result {
                Ok((table, path)) => {
                    print!("{table}");
                    println!("csv: {}", path.display());
                    return;
                }
                Err(e) => {
                    eprintln!("questv: {name}: {e}");
                    std::process::exit(1);
                }
            }
        }
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
        Ok(Cli::Fig10(o)) => match questv::recoveryfig::fig10(&o) {
            Ok((text, ok)) => {
                print!("{text}");
                std::process::exit(if ok { 0 } else { 1 });
            }
            Err(e) => {
                eprintln!("questv: fig10: {e}");
                std::process::exit(2);
            }
        },
        Ok(Cli::Faults(o)) => match questv::faults::faults(&o) {
            Ok((text, ok)) => {
                print!("{text}");
                std::process::exit(if ok { 0 } else { 1 });
            }
            Err(e) => {
                eprintln!("questv: faults: {e}");
                std::process::exit(2);
            }
        },
        Ok(Cli::Recovery(o)) => match questv::recoveryfig::recoveryfig(&o) {
            Ok((text, dir)) => {
                print!("{text}");
                println!("figures: {}", dir.display());
                return;
            }
            Err(e) => {
                eprintln!("questv: recovery: {e}");
                std::process::exit(1);
            }
        },
        Ok(Cli::NetFig(o)) => match questv::netfig::netfig(&o) {
            Ok((text, dir)) => {
                print!("{text}");
                println!("figures: {}", dir.display());
                return;
            }
            Err(e) => {
                eprintln!("questv: netfig: {e}");
                std::process::exit(1);
            }
        },
        Ok(Cli::Help) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("questv: {e}");
            std::process::exit(2);
        }
    };
    match boot(&opts) {
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
