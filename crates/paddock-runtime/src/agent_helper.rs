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

/// Runs `agent ARGS` within `limit`, with `input` on its stdin; its
/// stdout when it succeeds, its stderr (or exit status) as the error.
///
/// The helper starts with an empty environment and the bare name
/// `paddock-agent` as its `argv[0]`: a sandbox's PID 1 is this process
/// forked, and nothing of the server's environment or of the host's
/// paths may reach it.
pub(crate) async fn run(
    agent: &Path,
    args: &[&OsStr],
    input: Option<Vec<u8>>,
    limit: Duration,
    what: &str,
) -> Result<Vec<u8>, RuntimeError> {
    use tokio::io::AsyncWriteExt;
    let host_err = |what: String| move |e| RuntimeError::host(what, e);
    let mut child = tokio::process::Command::new(agent)
        .arg0("paddock-agent")
        .args(args)
        .env_clear()
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(host_err(format!("run {}", agent.display())))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(&input)
            .await
            .map_err(host_err(format!("send {what} its config")))?;
    }
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
/// `handle` (see `paddock-agent`'s `inject`).
pub(crate) async fn inject(
    agent: &Path,
    handle: RuntimeHandle,
    args: &[&OsStr],
) -> Result<(), RuntimeError> {
    if !procfs::is_running(handle.pid, handle.start_ticks) {
        return Err(RuntimeError::SandboxGone);
    }
    match run(agent, args, None, INJECT_TIMEOUT, "the mount helper").await {
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
