//! Runs short-lived `paddock-agent` subcommands on the host: `boot`, and
//! `attach`/`detach`, which move a host mount into (or out of) the mount
//! namespace of a running sandbox, whichever provider started it (a
//! container's PID 1, or a Docker container's main process).

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use paddock_core::model::RuntimeHandle;
use paddock_core::RuntimeError;

use crate::container::procfs;

/// How long a mount injection may take (it is a few system calls).
const INJECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `agent ARGS` within `limit`; its stdout when it succeeds, its
/// stderr (or exit status) as the error.
pub(crate) async fn run(
    agent: &Path,
    args: &[&OsStr],
    limit: Duration,
    what: &str,
) -> Result<Vec<u8>, RuntimeError> {
    let host_err = |what: String| move |e| RuntimeError::host(what, e);
    let child = tokio::process::Command::new(agent)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(host_err(format!("run {}", agent.display())))?;
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| {
            RuntimeError::Setup(format!(
                "{what} did not finish within {} s",
                limit.as_secs()
            ))
        })?
        .map_err(host_err(format!("wait for {what}")))?;
    if !output.status.success() {
        let msg = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(RuntimeError::Setup(if msg.is_empty() {
            format!("{what} failed ({})", output.status)
        } else {
            msg
        }));
    }
    Ok(output.stdout)
}

/// Runs `paddock-agent attach|detach` against the sandbox behind
/// `handle` (see `paddock_agent::inject`).
pub(crate) async fn inject(
    agent: &Path,
    handle: RuntimeHandle,
    args: &[&OsStr],
) -> Result<(), RuntimeError> {
    if !procfs::is_running(handle.pid, handle.start_ticks) {
        return Err(RuntimeError::SandboxGone);
    }
    match run(agent, args, INJECT_TIMEOUT, "the mount helper").await {
        Ok(_) => Ok(()),
        Err(RuntimeError::Setup(m)) => Err(RuntimeError::Setup(format!("volume mount: {m}"))),
        Err(e) => Err(e),
    }
}

/// `attach PID SOURCE TARGET rw|ro`.
pub(crate) async fn attach(
    agent: &Path,
    handle: RuntimeHandle,
    source: &Path,
    target: &str,
    read_only: bool,
) -> Result<(), RuntimeError> {
    let mode = if read_only { "ro" } else { "rw" };
    let pid = handle.pid.to_string();
    let args: [&OsStr; 5] = [
        "attach".as_ref(),
        pid.as_ref(),
        source.as_os_str(),
        target.as_ref(),
        mode.as_ref(),
    ];
    inject(agent, handle, &args).await
}

/// `detach PID TARGET`.
pub(crate) async fn detach(
    agent: &Path,
    handle: RuntimeHandle,
    target: &str,
) -> Result<(), RuntimeError> {
    let pid = handle.pid.to_string();
    let args: [&OsStr; 3] = ["detach".as_ref(), pid.as_ref(), target.as_ref()];
    inject(agent, handle, &args).await
}
