//! `paddock-agent`: the sandbox boot helper, the mount injector and the
//! in-sandbox agent. See the `paddock-agent` crate.

use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "usage: paddock-agent boot CONFIG.json|- [LABEL]\n       \
                     paddock-agent vmm CONFIG.json|- [LABEL]\n       \
                     paddock-agent attach PID SOURCE TARGET rw|ro\n       \
                     paddock-agent detach PID TARGET";

fn fail(message: String) -> ExitCode {
    eprintln!("{message}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    // A microVM's kernel starts this binary as /init.
    if paddock_agent::guest::is_guest_init() {
        return paddock_agent::guest::run();
    }
    let args: Vec<String> = std::env::args().collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A sandbox's PID 1 as the host sees it: never 0 or 1.
    let pid = |s: &str| s.parse::<i32>().ok().filter(|p| *p > 1);
    let injected = match args.get(1..).unwrap_or_default() {
        // `-` reads the config from stdin; the label (the VM's id) only
        // tells processes apart in `ps` on the host.
        ["boot", config] | ["boot", config, _] => {
            return match paddock_agent::boot::boot(Path::new(config)) {
                Ok(launched) => {
                    println!("{launched}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(paddock_agent::boot::error_chain(&e)),
            }
        }
        ["vmm", config] | ["vmm", config, _] => {
            return match paddock_agent::vmm::launch(Path::new(config)) {
                Ok(launched) => {
                    println!("{launched}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(paddock_agent::boot::error_chain(&e)),
            }
        }
        ["attach", p, source, target, mode @ ("rw" | "ro")] => pid(p).map(|pid| {
            paddock_agent::inject::attach(pid, Path::new(source), target, *mode == "ro")
        }),
        ["detach", p, target] => pid(p).map(|pid| paddock_agent::inject::detach(pid, target)),
        _ => None,
    };
    match injected {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(e)) => fail(e.to_string()),
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
