//! Jobs: commands that outlive the connection that started them (a
//! definition's main command). A job's output stays here, in PID 1, up to
//! a cap per stream, and its exit once it comes, so that a server that
//! restarts attaches again from the byte offsets it had saved and misses
//! nothing. An exec's command, by contrast, dies with its connection.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::net::UnixStream;
use tokio::sync::Notify;

use super::{merged_env, State};
use crate::proto::{write_control, write_data, ErrorKind, Event, KIND_STDERR, KIND_STDOUT};
use crate::sys;

/// The output kept per stream of one job; what comes after is dropped
/// (the server keeps no more of a command's output either).
const MAX_OUTPUT: usize = 16 * 1024 * 1024;
/// Jobs one sandbox may hold (each has its output in memory).
const MAX_JOBS: usize = 16;

#[derive(Default)]
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// The exit event, once the command ended and its pipes closed.
    exit: Option<Event>,
}

struct Job {
    output: Mutex<Output>,
    changed: Notify,
}

#[derive(Default)]
pub(crate) struct JobTable {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
}

pub(crate) struct JobSpec {
    pub id: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn keep(buf: &mut Vec<u8>, chunk: &[u8]) {
    let room = MAX_OUTPUT.saturating_sub(buf.len());
    buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
}

impl JobTable {
    /// Starts the job and answers `Started` (or why it could not).
    pub async fn start(
        &self,
        state: &State,
        stream: &mut UnixStream,
        spec: JobSpec,
    ) -> io::Result<()> {
        let event = match self.try_start(state, spec) {
            Ok(pid) => Event::Started { pid },
            Err(e) => e,
        };
        write_control(stream, &event).await
    }

    fn try_start(&self, state: &State, spec: JobSpec) -> Result<i32, Event> {
        if spec.argv.is_empty() {
            return Err(Event::error(ErrorKind::Invalid, "empty command"));
        }
        {
            let jobs = lock(&self.jobs);
            if jobs.contains_key(&spec.id) {
                return Err(Event::error(
                    ErrorKind::Exists,
                    format!("job {} exists", spec.id),
                ));
            }
            if jobs.len() >= MAX_JOBS {
                return Err(Event::error(
                    ErrorKind::Invalid,
                    format!("a sandbox runs at most {MAX_JOBS} jobs"),
                ));
            }
        }
        let prepared = super::script::prepare(spec.argv)
            .map_err(|e| Event::from_io(&e, "stage the script"))?;
        let program = prepared.argv[0].clone();
        let env = merged_env(&state.env(), &spec.env);
        let cwd = state.cwd_for(spec.cwd, &env);
        let mut cmd = Command::new(&program);
        cmd.args(&prepared.argv[1..])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        state.apply_user(&mut cmd);
        sys::set_pre_exec(&mut cmd, false, prepared.inherited_fd());
        let started = Instant::now();
        let (mut child, exited) = state
            .reaper
            .spawn(&mut cmd)
            .map_err(|e| Event::from_io(&e, &format!("start {program}")))?;
        let pid = child.id() as i32;
        let pipes = (|| -> io::Result<_> {
            let missing = || io::Error::other("child pipe missing");
            let out = child.stdout.take().ok_or_else(missing)?;
            let err = child.stderr.take().ok_or_else(missing)?;
            Ok((
                pipe::Receiver::from_owned_fd(OwnedFd::from(out))?,
                pipe::Receiver::from_owned_fd(OwnedFd::from(err))?,
            ))
        })()
        .map_err(|e| Event::from_io(&e, "read the job's output"))?;
        let job = Arc::new(Job {
            output: Mutex::new(Output::default()),
            changed: Notify::new(),
        });
        lock(&self.jobs).insert(spec.id, Arc::clone(&job));
        tokio::spawn(pump(job, pipes, exited, started));
        Ok(pid)
    }

    /// Streams job `id`'s output from the given offsets, following it
    /// live, then its exit; a caller that goes away leaves it running.
    pub async fn attach(
        &self,
        stream: &mut UnixStream,
        id: &str,
        mut stdout_from: u64,
        mut stderr_from: u64,
    ) -> io::Result<()> {
        let Some(job) = lock(&self.jobs).get(id).cloned() else {
            let e = Event::error(ErrorKind::NotFound, format!("no job {id}"));
            return write_control(stream, &e).await;
        };
        write_control(stream, &Event::Ok).await?;
        loop {
            let changed = job.changed.notified();
            tokio::pin!(changed);
            // Registered before reading, so no change is missed between.
            changed.as_mut().enable();
            let (out, err, exit) = {
                let o = lock(&job.output);
                let from = |buf: &Vec<u8>, at: u64| {
                    buf.get(usize::try_from(at).unwrap_or(usize::MAX)..)
                        .map(<[u8]>::to_vec)
                        .unwrap_or_default()
                };
                (
                    from(&o.stdout, stdout_from),
                    from(&o.stderr, stderr_from),
                    o.exit.clone(),
                )
            };
            for chunk in out.chunks(64 * 1024) {
                write_data(stream, KIND_STDOUT, chunk).await?;
            }
            for chunk in err.chunks(64 * 1024) {
                write_data(stream, KIND_STDERR, chunk).await?;
            }
            stdout_from += out.len() as u64;
            stderr_from += err.len() as u64;
            if let Some(exit) = exit {
                return write_control(stream, &exit).await;
            }
            changed.await;
        }
    }
}

/// Moves the job's output into its buffers until the command is reaped
/// and its pipes close (or, past its exit, a short grace for background
/// processes that keep them open), then records its exit.
async fn pump(
    job: Arc<Job>,
    (mut stdout, mut stderr): (pipe::Receiver, pipe::Receiver),
    mut exited: tokio::sync::oneshot::Receiver<sys::Reaped>,
    started: Instant,
) {
    let mut out_buf = vec![0u8; 64 * 1024];
    let mut err_buf = vec![0u8; 64 * 1024];
    let (mut out_done, mut err_done) = (false, false);
    let mut status: Option<Option<sys::Reaped>> = None;
    let far = tokio::time::Instant::now() + std::time::Duration::from_secs(86400 * 365);
    let mut drain_until = far;
    while !(status.is_some() && out_done && err_done) {
        tokio::select! {
            n = stdout.read(&mut out_buf), if !out_done => match n {
                Ok(0) | Err(_) => out_done = true,
                Ok(n) => keep(&mut lock(&job.output).stdout, &out_buf[..n]),
            },
            n = stderr.read(&mut err_buf), if !err_done => match n {
                Ok(0) | Err(_) => err_done = true,
                Ok(n) => keep(&mut lock(&job.output).stderr, &err_buf[..n]),
            },
            r = &mut exited, if status.is_none() => {
                status = Some(r.ok());
                drain_until = tokio::time::Instant::now() + super::exec::DRAIN_GRACE;
            },
            _ = tokio::time::sleep_until(drain_until), if status.is_some() => break,
        }
        job.changed.notify_waiters();
    }
    let exit = match status.flatten() {
        Some(status) => Event::Exit {
            code: status.code,
            signal: status.signal,
            timed_out: false,
            wall_ms: started.elapsed().as_millis() as u64,
            cpu_ms: status.cpu_time.as_millis() as u64,
        },
        None => Event::error(ErrorKind::Other, "the job's end was not seen"),
    };
    lock(&job.output).exit = Some(exit);
    job.changed.notify_waiters();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_stops_at_the_cap() {
        let mut buf = vec![0u8; MAX_OUTPUT - 2];
        keep(&mut buf, b"abcd");
        assert_eq!(buf.len(), MAX_OUTPUT);
        assert_eq!(&buf[MAX_OUTPUT - 2..], b"ab");
    }
}
