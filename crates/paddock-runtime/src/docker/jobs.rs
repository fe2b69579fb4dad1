//! Jobs in a Docker sandbox: commands that outlive the server. The engine
//! keeps a detached exec running when its client goes, but cannot attach
//! to it again, so the job writes its output and exit status to files in
//! the container (`/run/paddock-jobs/<job>/`), and attaching reads them
//! from the caller's byte offsets with a small exec every poll until the
//! exit file appears, at most 1 MiB of each stream a read (the files are
//! the tenant's). Images without `sh`, `tail` and `head` have no jobs (the
//! caller falls back to a plain exec).

use std::time::Duration;

use bollard::exec::StartExecOptions;
use bollard::Docker;
use bytes::Bytes;
use paddock_core::exec::{ExecEvent, ExecRequest, ExecStream, ExitStatus};
use paddock_core::RuntimeError;
use tokio::sync::mpsc;

use super::{engine_err, exec};

/// Where jobs keep their output in the container.
const JOBS_DIR: &str = "/run/paddock-jobs";
/// How often a job's files are read while it runs.
const POLL: Duration = Duration::from_millis(300);
/// What the wrapper answers for "running" and "ended" (far from the
/// shell's own codes: 126, 127).
const RUNNING: i32 = 10;
const ENDED: i32 = 11;
/// The most one poll reads of each stream: the files are the tenant's,
/// and however large it makes them, the server holds this much at once.
const READ_MAX: usize = 1024 * 1024;

/// Runs the job's command, its output appended to its files, then
/// records its exit status atomically. `$1` is the job's directory.
const WRAPPER: &str = r#"d="$1"; shift
mkdir -p "$d" && : >"$d/out" && : >"$d/err" || exit 125
"$@" >>"$d/out" 2>>"$d/err"
echo $? >"$d/exit.new" && mv "$d/exit.new" "$d/exit""#;

/// Reads at most `$4` bytes of a job's output from offsets `$2`
/// (stdout) and `$3` (stderr), the exit file checked first so that an
/// ended job's output is complete once read to its end.
const READER: &str = r#"d="$1"
if [ -e "$d/exit" ]; then s=11; else s=10; fi
tail -c +"$2" "$d/out" 2>/dev/null | head -c "$4"
{ tail -c +"$3" "$d/err" 2>/dev/null | head -c "$4"; } 1>&2
exit $s"#;

fn job_dir(job: &str) -> String {
    format!("{JOBS_DIR}/{job}")
}

/// What one short exec printed and how it ended.
struct Ran {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    code: Option<i32>,
}

async fn run(docker: &Docker, container: &str, argv: Vec<String>) -> Result<Ran, RuntimeError> {
    let request = ExecRequest {
        argv,
        ..ExecRequest::default()
    };
    let mut stream = exec::run(docker, container, Vec::new(), request).await?;
    let mut ran = Ran {
        stdout: Vec::new(),
        stderr: Vec::new(),
        code: None,
    };
    while let Some(event) = stream.recv().await {
        match event? {
            ExecEvent::Stdout(b) => ran.stdout.extend_from_slice(&b),
            ExecEvent::Stderr(b) => ran.stderr.extend_from_slice(&b),
            ExecEvent::Exit(status) => ran.code = status.code,
        }
    }
    Ok(ran)
}

fn sh(script: &str, args: &[&str]) -> Vec<String> {
    let mut argv = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        script.to_owned(),
        "paddock-job".to_owned(),
    ];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    argv
}

/// Starts job `job` in `container`, detached from this server.
pub(super) async fn start(
    docker: &Docker,
    container: &str,
    staged: Vec<(String, String)>,
    job: &str,
    request: ExecRequest,
) -> Result<(), RuntimeError> {
    let probe = run(
        docker,
        container,
        sh("command -v tail head mkdir mv >/dev/null", &[]),
    )
    .await?;
    if probe.code != Some(0) {
        return Err(RuntimeError::Unsupported(
            "the image has no sh, tail and head for jobs".into(),
        ));
    }
    let mut argv = sh(WRAPPER, &[&job_dir(job)]);
    argv.extend(exec::stage_long_script(docker, container, request.argv).await?);
    let exec = exec::Exec {
        staged,
        env: request.env,
        argv,
        cwd: request.cwd,
        stdin: false,
        output: false,
        user: request.user,
    };
    let exec_id = exec::create(docker, container, exec).await?;
    docker
        .start_exec(
            &exec_id,
            Some(StartExecOptions {
                detach: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| engine_err("start the job", e))?;
    Ok(())
}

/// Job `job`'s output from these offsets, then its exit, read from its
/// files every [`POLL`].
pub(super) fn attach(
    docker: Docker,
    container: String,
    job: &str,
    mut stdout_from: u64,
    mut stderr_from: u64,
) -> ExecStream {
    let dir = job_dir(job);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let from_out = (stdout_from + 1).to_string();
            let from_err = (stderr_from + 1).to_string();
            let read = run(
                &docker,
                &container,
                sh(READER, &[&dir, &from_out, &from_err, &READ_MAX.to_string()]),
            )
            .await;
            let ran = match read {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            stdout_from += ran.stdout.len() as u64;
            stderr_from += ran.stderr.len() as u64;
            // A full read may have left more: read on at once.
            let more = ran.stdout.len() >= READ_MAX || ran.stderr.len() >= READ_MAX;
            for (chunk, out) in [(ran.stdout, true), (ran.stderr, false)] {
                if chunk.is_empty() {
                    continue;
                }
                let bytes = Bytes::from(chunk);
                let event = if out {
                    ExecEvent::Stdout(bytes)
                } else {
                    ExecEvent::Stderr(bytes)
                };
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            match ran.code {
                Some(ENDED | RUNNING) if more => {}
                Some(ENDED) => break,
                Some(RUNNING) => tokio::time::sleep(POLL).await,
                other => {
                    let _ = tx
                        .send(Err(RuntimeError::Agent(format!(
                            "reading the job's output failed (exit {other:?})"
                        ))))
                        .await;
                    return;
                }
            }
        }
        let exit = run(&docker, &container, sh(r#"head -c 16 "$1/exit""#, &[&dir])).await;
        let code = exit.ok().and_then(|r| {
            String::from_utf8_lossy(&r.stdout)
                .trim()
                .parse::<i32>()
                .ok()
        });
        let status = ExitStatus {
            code,
            ..ExitStatus::default()
        };
        let _ = tx.send(Ok(ExecEvent::Exit(status))).await;
    });
    rx
}
