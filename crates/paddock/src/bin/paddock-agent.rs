//! `paddock-agent`: the sandbox boot helper and in-sandbox agent. See the
//! `paddock-agent` crate.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("boot") if args.len() == 3 => match paddock_agent::boot::boot(Path::new(&args[2])) {
            Ok(pid) => {
                println!("{pid}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}", paddock_agent::boot::error_chain(&e));
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: paddock-agent boot CONFIG.json");
            ExitCode::from(2)
        }
    }
}
