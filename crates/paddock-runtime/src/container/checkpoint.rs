//! Whether this host can checkpoint a container's processes: what
//! suspending a container sandbox with its memory needs (CRIU). Probed
//! once at start with `criu check` and reported in `/readyz`, so an
//! operator sees why before anyone asks to suspend.

use std::time::Duration;

use serde::Serialize;

/// How long `criu check` may take; it reads kernel features, well under
/// a second where it works.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointSupport {
    /// The checkpoint tool: `criu`.
    pub tool: &'static str,
    /// Its version, when it is installed.
    pub version: Option<String>,
    /// Whether `criu check` passed on this kernel.
    pub works: bool,
    /// Why not, in CRIU's own words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Runs `criu --version` and `criu check`.
pub async fn probe() -> CheckpointSupport {
    let refused = |version: Option<String>, reason: String| CheckpointSupport {
        tool: "criu",
        version,
        works: false,
        reason: Some(reason),
    };
    let version = match run(&["--version"]).await {
        Ok((true, out)) => version_of(&out),
        Ok((false, out)) => return refused(None, last_error(&out)),
        Err(reason) => return refused(None, reason),
    };
    match run(&["check"]).await {
        Ok((true, _)) => CheckpointSupport {
            tool: "criu",
            version,
            works: true,
            reason: None,
        },
        Ok((false, out)) => refused(version, last_error(&out)),
        Err(reason) => refused(version, reason),
    }
}

/// `criu ARGS`: whether it succeeded, and its output (stdout then stderr).
async fn run(args: &[&str]) -> Result<(bool, String), String> {
    let child = tokio::process::Command::new("criu")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(PROBE_TIMEOUT, child).await {
        Err(_) => Err(format!(
            "criu {} took longer than {}s",
            args.join(" "),
            PROBE_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Err("criu is not installed (Debian: apt-get install criu)".into())
        }
        Ok(Err(e)) => Err(format!("run criu: {e}")),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            Ok((out.status.success(), text))
        }
    }
}

/// `Version: 3.17.1` → `3.17.1`.
fn version_of(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_owned())
}

/// The first error CRIU printed (the cause; later lines are what it
/// could not do because of it), without its source location.
fn last_error(out: &str) -> String {
    let first = out
        .lines()
        .find(|l| l.starts_with("Error"))
        .or_else(|| out.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("criu failed without a message");
    match first.split_once("): ") {
        Some((_, message)) if first.starts_with("Error (") => message.trim().to_owned(),
        _ => first.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_criu_s_first_error() {
        let out = "Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable\n\
                   Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed when initializing kerndat.\n\
                   Error (criu/crtools.c:260): Could not initialize kernel features detection.\n";
        assert_eq!(last_error(out), "vdso: Failed to fill self vdso symtable");
        assert_eq!(last_error("\nsomething odd\n"), "something odd");
        assert_eq!(version_of("Version: 3.17.1\n"), Some("3.17.1".into()));
        assert_eq!(version_of("nothing"), None);
    }

    #[tokio::test]
    async fn the_probe_answers_either_way() {
        let support = probe().await;
        assert_eq!(support.tool, "criu");
        assert_eq!(support.works, support.reason.is_none(), "{support:?}");
    }
}
