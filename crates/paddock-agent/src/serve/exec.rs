//! Running one command: its output streamed as it comes, stdin fed as it
//! arrives, a deadline, and the whole process group killed when the
//! deadline passes or the caller goes away.

use std::io;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::time::sleep_until;
use tokio_util::codec::FramedRead;

use super::{merged_env, State};
use crate::proto::{
    write_control, write_data, Event, FrameCodec, KIND_STDERR, KIND_STDIN, KIND_STDOUT,
};
use crate::sys;

/// How long output is still read after the command exited, for
/// background processes that keep its pipes open.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_millis(200);

pub(crate) struct ExecSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub stdin: bool,
    pub timeout_ms: Option<u64>,
    pub user: Option<String>,
}

fn kill_group(pid: i32) {
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
}

pub(crate) async fn run(state: &State, stream: UnixStream, spec: ExecSpec) -> io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut frames = FramedRead::new(rd, FrameCodec);
    let prepared = match super::script::prepare(spec.argv) {
        Ok(p) => p,
        Err(e) => return write_control(&mut wr, &Event::from_io(&e, "stage the script")).await,
    };
    let Some(program) = prepared.argv.first() else {
        let e = Event::error(crate::proto::ErrorKind::Invalid, "empty command");
        return write_control(&mut wr, &e).await;
    };
    let env = merged_env(&state.env(), &spec.env);
    let cwd = state.cwd_for(spec.cwd.clone(), &env);
    let mut cmd = Command::new(program);
    cmd.args(&prepared.argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(&cwd)
        .stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Err(why) = state.apply_requested_user(&mut cmd, spec.user.as_deref()) {
        let e = Event::error(
            crate::proto::ErrorKind::Invalid,
            why.replace("the image's ", "the sandbox's "),
        );
        return write_control(&mut wr, &e).await;
    }
    sys::set_pre_exec(&mut cmd, false, prepared.inherited_fd());

    let started = Instant::now();
    let (mut child, mut exited) = match state.reaper.spawn(&mut cmd) {
        Ok(c) => c,
        Err(e) => {
            let what =
                if e.kind() == io::ErrorKind::NotFound && !std::path::Path::new(&cwd).is_dir() {
                    format!("working directory {cwd}")
                } else {
                    format!("start {program}")
                };
            return write_control(&mut wr, &Event::from_io(&e, &what)).await;
        }
    };
    let pid = child.id() as i32;
    write_control(&mut wr, &Event::Started { pid }).await?;

    let pipe_err = || io::Error::other("child pipe missing");
    let mut stdout =
        pipe::Receiver::from_owned_fd(OwnedFd::from(child.stdout.take().ok_or_else(pipe_err)?))?;
    let mut stderr =
        pipe::Receiver::from_owned_fd(OwnedFd::from(child.stderr.take().ok_or_else(pipe_err)?))?;
    let mut stdin_tx = match child.stdin.take() {
        Some(s) => {
            let mut sink = pipe::Sender::from_owned_fd(OwnedFd::from(s))?;
            let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(16);
            // A separate task, so a command that does not read its stdin
            // cannot stall the forwarding of its output.
            tokio::spawn(async move {
                while let Some(chunk) = rx.recv().await {
                    if sink.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
            Some(tx)
        }
        None => None,
    };

    let deadline = spec
        .timeout_ms
        .map(|ms| tokio::time::Instant::from_std(started + Duration::from_millis(ms)));
    let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
    let mut out_buf = vec![0u8; 64 * 1024];
    let mut err_buf = vec![0u8; 64 * 1024];
    let (mut out_done, mut err_done, mut client_done) = (false, false, false);
    let mut timed_out = false;
    let mut status: Option<sys::Reaped> = None;
    let mut drain_until = far;

    while !(status.is_some() && out_done && err_done) {
        tokio::select! {
            n = stdout.read(&mut out_buf), if !out_done => match n {
                Ok(0) | Err(_) => out_done = true,
                Ok(n) => if write_data(&mut wr, KIND_STDOUT, &out_buf[..n]).await.is_err() {
                    kill_group(pid);
                    client_done = true;
                },
            },
            n = stderr.read(&mut err_buf), if !err_done => match n {
                Ok(0) | Err(_) => err_done = true,
                Ok(n) => if write_data(&mut wr, KIND_STDERR, &err_buf[..n]).await.is_err() {
                    kill_group(pid);
                    client_done = true;
                },
            },
            frame = frames.next(), if !client_done => match frame.transpose() {
                Ok(Some(f)) if f.kind == KIND_STDIN => {
                    if f.payload.is_empty() {
                        stdin_tx = None;
                    } else if let Some(tx) = &stdin_tx {
                        let _ = tx.send(f.payload).await;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    // The caller went away: nobody will read the result.
                    kill_group(pid);
                    client_done = true;
                }
            },
            r = &mut exited, if status.is_none() => {
                status = Some(r.map_err(|_| io::Error::other("reaper stopped"))?);
                drain_until = tokio::time::Instant::now() + DRAIN_GRACE;
            },
            _ = sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && !timed_out && status.is_none() => {
                timed_out = true;
                kill_group(pid);
            },
            _ = sleep_until(drain_until), if status.is_some() => break,
        }
    }
    drop(stdin_tx);
    let Some(status) = status else {
        return Ok(());
    };
    if client_done {
        return Ok(());
    }
    let event = Event::Exit {
        code: status.code,
        signal: status.signal,
        timed_out,
        wall_ms: started.elapsed().as_millis() as u64,
        cpu_ms: status.cpu_time.as_millis() as u64,
    };
    write_control(&mut wr, &event).await?;
    wr.shutdown().await
}
