//! Puts the dashboard's third-party browser code (xterm.js and its fit
//! addon, from the npm packages `scripts/deps.sh` installs under
//! `ui/vendor/` from its lock file) where `src/ui.rs` includes it, so the
//! binary carries every asset it serves. Their sources are the pinned npm
//! packages (which ship their TypeScript), not files committed here.
//!
//! Without them (a build before `scripts/deps.sh`) the dashboard is built
//! with a stand-in that says the terminal is missing, and cargo warns:
//! everything else works.

use std::path::{Path, PathBuf};
use std::{env, fs};

/// (file under `ui/vendor/node_modules/`, name in `OUT_DIR`, stand-in).
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "@xterm/xterm/lib/xterm.js",
        "xterm.js",
        "globalThis.paddockTerminalMissing = \"xterm.js was not built into this binary: run scripts/deps.sh, then build again\";\n",
    ),
    ("@xterm/xterm/css/xterm.css", "xterm.css", ""),
    ("@xterm/addon-fit/lib/addon-fit.js", "addon-fit.js", ""),
];

fn main() {
    let vendor = Path::new("ui/vendor");
    println!("cargo:rerun-if-changed=ui/vendor/package-lock.json");
    println!("cargo:rerun-if-changed=ui/vendor/node_modules/.package-lock.json");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut missing = Vec::new();
    for (source, name, stand_in) in ASSETS {
        let path = vendor.join("node_modules").join(source);
        println!("cargo:rerun-if-changed={}", path.display());
        let body = fs::read(&path).unwrap_or_else(|_| {
            missing.push(source);
            stand_in.as_bytes().to_vec()
        });
        fs::write(out.join(name), body).expect("write to OUT_DIR");
    }
    if !missing.is_empty() {
        println!(
            "cargo:warning=the dashboard's terminal is missing {}: run scripts/deps.sh (npm ci in crates/paddock-api/ui/vendor), then build again",
            missing.join(", ")
        );
    }
}
