//! A command in a Docker sandbox: `docker exec` with its output streamed
//! back as exec events, stdin written up front or as it comes, and the
//! deadline enforced by killing the exec's process (the engine has no
//! call for that; it runs on this host, so its pid is a host pid).

use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::Docker;
use futures::StreamExt;
use paddock_core::exec::{ExecEvent, ExecRequest, ExecStream, ExitStatus};
use paddock_core::RuntimeError;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{engine_err, is_not_found};

/// An exec to create: the sandbox's staged variables under the
/// request's, and what of it is attached.
pub(super) struct Exec {
    pub staged: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
    pub argv: Vec<String>,
    pub cwd: Option<String>,
    pub stdin: bool,
    pub output: bool,
    /// The container user it runs as; the container's own when `None`.
    pub user: Option<String>,
}

/// The engine passes argv to `execve`, which refuses an argument over
/// 128 KiB, and a `docker exec` cannot hand a descriptor over as the agent
/// does (`paddock-agent/src/serve/script.rs`). So a long `-c` script is
/// written into the container, and a small shell opens it on descriptor 3,
/// removes it, and runs the interpreter on `/dev/fd/3`: nothing is left on
/// the container's disk once the command starts. `$1…` stay as sent; the
/// argument `-c` would make `$0` is dropped.
pub(super) async fn stage_long_script(
    docker: &Docker,
    container: &str,
    argv: Vec<String>,
) -> Result<Vec<String>, RuntimeError> {
    let long = match paddock_agent_protocol::script::take_long_script(argv) {
        Ok(long) => long,
        Err(argv) => return Ok(argv),
    };
    let path = format!("/tmp/.paddock-script-{:016x}", rand::random::<u64>());
    let target = paddock_core::exec::SandboxPath::parse(&path)
        .map_err(|e| RuntimeError::Invalid(e.0.to_owned()))?;
    let script = long.script;
    let body = futures::stream::once(async move { Ok(bytes::Bytes::from(script)) });
    // Boxed: writing a file runs a (short) exec, which comes back here.
    let write = super::archive::write(docker, container, &target, Some(0o600), Box::pin(body));
    Box::pin(write).await?;
    let mut staged = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        r#"exec 3<"$1" && rm -f "$1" && shift && exec "$0" /dev/fd/3 "$@""#.to_owned(),
        long.interpreter,
        path,
    ];
    staged.extend(long.args);
    Ok(staged)
}

/// Creates `exec` in `container`; its id.
pub(super) async fn create(
    docker: &Docker,
    container: &str,
    exec: Exec,
) -> Result<String, RuntimeError> {
    let mut env = exec.staged;
    for (k, v) in exec.env {
        env.retain(|(ek, _)| *ek != k);
        env.push((k, v));
    }
    let options = CreateExecOptions {
        attach_stdin: Some(exec.stdin),
        attach_stdout: Some(exec.output),
        attach_stderr: Some(exec.output),
        cmd: Some(exec.argv),
        env: Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: exec.cwd,
        user: exec.user,
        ..Default::default()
    };
    let created = docker.create_exec(container, options).await.map_err(|e| {
        if is_not_found(&e) {
            RuntimeError::SandboxGone
        } else {
            engine_err("create the exec", e)
        }
    })?;
    Ok(created.id)
}

pub(super) async fn run(
    docker: &Docker,
    container: &str,
    staged: Vec<(String, String)>,
    request: ExecRequest,
) -> Result<ExecStream, RuntimeError> {
    let wants_stdin = request.stdin.is_some() || request.stdin_stream.is_some();
    let argv = stage_long_script(docker, container, request.argv).await?;
    let exec = Exec {
        staged,
        env: request.env,
        argv,
        cwd: request.cwd,
        stdin: wants_stdin,
        output: true,
        user: request.user,
    };
    let exec_id = create(docker, container, exec).await?;
    let started_at = Instant::now();
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = docker
        .start_exec(&exec_id, None)
        .await
        .map_err(|e| engine_err("start the exec", e))?
    else {
        return Err(RuntimeError::Agent("the engine detached the exec".into()));
    };
    let mut stdin_stream = request.stdin_stream;
    let stdin_once = request.stdin;
    tokio::spawn(async move {
        if let Some(data) = stdin_once {
            let _ = input.write_all(&data).await;
        }
        if let Some(rx) = stdin_stream.as_mut() {
            while let Some(chunk) = rx.recv().await {
                if input.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        }
        let _ = input.shutdown().await;
    });
    let (tx, rx) = mpsc::channel(64);
    let docker = docker.clone();
    let deadline = request.timeout;
    tokio::spawn(async move {
        let mut timed_out = false;
        let sleep = tokio::time::sleep(deadline.unwrap_or(Duration::from_secs(u64::MAX / 4)));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                item = output.next() => match item {
                    Some(Ok(out)) => {
                        let event = match out {
                            bollard::container::LogOutput::StdErr { message } => ExecEvent::Stderr(message),
                            bollard::container::LogOutput::StdOut { message }
                            | bollard::container::LogOutput::Console { message } => ExecEvent::Stdout(message),
                            bollard::container::LogOutput::StdIn { .. } => continue,
                        };
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(Err(engine_err("read the exec's output", e))).await;
                        return;
                    }
                    None => break,
                },
                () = &mut sleep, if !timed_out => {
                    timed_out = true;
                    kill_exec(&docker, &exec_id).await;
                }
            }
        }
        let code = docker
            .inspect_exec(&exec_id)
            .await
            .ok()
            .and_then(|i| i.exit_code)
            .and_then(|c| i32::try_from(c).ok());
        let status = ExitStatus {
            code: if timed_out { None } else { code },
            signal: timed_out.then_some(9),
            timed_out,
            wall_time: started_at.elapsed(),
            ..Default::default()
        };
        let _ = tx.send(Ok(ExecEvent::Exit(status))).await;
    });
    Ok(rx)
}

/// Kills the exec's process (and so its children's stdio): its pid is a
/// host pid, since the engine runs here.
async fn kill_exec(docker: &Docker, exec_id: &str) {
    if let Some(pid) = docker
        .inspect_exec(exec_id)
        .await
        .ok()
        .and_then(|i| i.pid)
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 0)
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
