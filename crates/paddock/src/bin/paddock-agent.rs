//! `paddock-agent`: the sandbox boot helper, the mount injector and the
//! in-sandbox agent. See the `paddock-agent` crate.

use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "usage: paddock-agent boot CONFIG.json\n       \
                     paddock-agent attach PID SOURCE TARGET rw|ro\n       \
                     paddock-agent detach PID TARGET";

fn fail(message: String) -> ExitCode {
    eprintln!("{message}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pid = |s: &str| s.parse::<i32>().ok().filter(|p| *p > 1);
    match args.get(1..).unwrap_or_default() {
        ["boot", config] => match paddock_agent::boot::boot(Path::new(config)) {
            Ok(pid) => {
                println!("{pid}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(paddock_agent::boot::error_chain(&e)),
        },
        ["attach", p, source, target, mode @ ("rw" | "ro")] if pid(p).is_some() => {
            let read_only = *mode == "ro";
            match paddock_agent::inject::attach(
                pid(p).unwrap_or_default(),
                Path::new(source),
                target,
                read_only,
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e.to_string()),
            }
        }
        ["detach", p, target] if pid(p).is_some() => {
            match paddock_agent::inject::detach(pid(p).unwrap_or_default(), target) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e.to_string()),
            }
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
