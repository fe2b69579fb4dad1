//! The templates paddock ships: built from the default image at first use
//! (the default image sees the host's Debian packages: `scripts/deps.sh`
//! installs what they use), then kept as a snapshot per account.

use paddock_core::clock::Timestamp;
use paddock_core::ids::AccountId;
use serde_json::json;

use super::{dockerfile, Template, TemplateStatus};

/// The owner recorded on built-in templates: no account's.
const NOBODY: &str = "acct_paddockbuiltin";

const NODE_SERVER: &str = r#"mkdir -p /root/app && cat > /root/app/server.js <<'JS'
const http = require('http');
const port = Number(process.env.PORT || 3000);
http.createServer((req, res) => {
  res.writeHead(200, {'Content-Type': 'text/plain'});
  res.end(`hello from node ${process.version}\n`);
}).listen(port, '0.0.0.0');
JS"#;

const PY_EXAMPLE: &str = r#"mkdir -p /root/work && cat > /root/work/example.py <<'PY'
import numpy as np
import pandas as pd
frame = pd.DataFrame({"x": np.arange(5), "y": np.arange(5) ** 2})
print(frame.describe())
PY"#;

struct Builtin {
    slug: &'static str,
    /// Other names the CLI finds it by (`instavm devbox start` asks for
    /// `devbox` when given no slug).
    aliases: &'static [&'static str],
    name: &'static str,
    description: &'static str,
    memory_mb: u32,
    build: &'static [(&'static str, &'static str)],
    terminal: (&'static str, &'static str),
    app_port: Option<u16>,
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        slug: "python-data-science",
        aliases: &["devbox", "python"],
        name: "Python data science",
        description: "Python 3 with NumPy, pandas and Matplotlib, and an example in /root/work",
        memory_mb: 1024,
        build: &[
            // Debian's Matplotlib reads /etc/matplotlibrc, which the
            // default image's own /etc does not have.
            (
                "matplotlibrc",
                "test -e /etc/matplotlibrc || cp /usr/share/matplotlib/mpl-data/matplotlibrc /etc/matplotlibrc",
            ),
            ("check", "python3 -c 'import numpy, pandas, matplotlib'"),
            ("example", PY_EXAMPLE),
        ],
        terminal: ("python3", "/root/work"),
        app_port: None,
    },
    Builtin {
        slug: "node-dev",
        aliases: &["node"],
        name: "Node.js dev box",
        description: "Node.js and npm, with a small HTTP app on port 3000 shared at start",
        memory_mb: 512,
        build: &[("check", "node --version && npm --version"), ("app", NODE_SERVER)],
        terminal: ("node /root/app/server.js", "/root/app"),
        app_port: Some(3000),
    },
];

fn template(b: &Builtin) -> Template {
    let commands: Vec<&str> = b.build.iter().map(|(_, c)| *c).collect();
    let manifest = json!({
        "schema_version": 2,
        "kind": "devbox",
        "slug": b.slug,
        "aliases": b.aliases,
        "name": b.name,
        "version": env!("CARGO_PKG_VERSION"),
        "description": b.description,
        "audience": "devbox",
        "vm": {"memory_mb": b.memory_mb, "vcpus": 1},
        "build": b.build.iter().map(|(n, c)| json!({"name": n, "command": c})).collect::<Vec<_>>(),
        "runtime": [],
        "terminal": {"tmux_session": "main", "command": b.terminal.0, "cwd": b.terminal.1},
        "app": b.app_port.map(|p| json!({"port": p, "health_path": "/", "share": "private"})),
    });
    Template {
        id: b.slug.to_owned(),
        account_id: NOBODY
            .parse::<AccountId>()
            .unwrap_or_else(|_| AccountId::generate()),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        manifest,
        snapshot_id: None,
        dockerfile: Some(dockerfile("default", &commands)),
        status: TemplateStatus::Active,
        verify_error: None,
        builtin: true,
        public: true,
        created_at: Timestamp::from_unix_millis(0),
        updated_at: Timestamp::from_unix_millis(0),
    }
}

pub(super) fn all() -> Vec<Template> {
    BUILTINS.iter().map(template).collect()
}

pub(super) fn find(slug: &str) -> Option<Template> {
    BUILTINS
        .iter()
        .find(|b| b.slug == slug || b.aliases.contains(&slug))
        .map(template)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_manifests_are_valid_manifests() {
        for t in all() {
            let m = super::super::Manifest::parse(&t.manifest).expect("valid");
            assert_eq!(m.slug, t.id);
            assert!(t
                .dockerfile
                .as_deref()
                .is_some_and(|d| d.starts_with("FROM default\n")));
        }
    }
}
