//! PID 1's service loop: one task per connection, one request per
//! connection. Runs on a current-thread runtime: the agent must stay
//! small, and a single thread also means `Command::spawn` (which reaps its
//! child itself when `execve` fails) can never race the reaper.

mod exec;
mod files;
mod jobs;
mod pty;
mod reaper;
mod script;
mod user;
mod watch;

use std::io;
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use tokio::net::UnixStream;

use crate::proto::{read_frame_max, write_control, Event, Request, MAX_REQUEST_FRAME};
use reaper::Reaper;
pub use user::RunAs;

/// What every command starts with unless its request says otherwise.
pub struct Defaults {
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub user: Option<RunAs>,
    /// The root of the sandbox's own writable disk, where it has one the
    /// host may ask to freeze (a microVM's).
    pub disk: Option<std::fs::File>,
}

pub(crate) struct State {
    env: Vec<(String, String)>,
    /// Variables staged after boot (vault secrets, `stage-env`): held in
    /// this process's memory only, so they never touch a disk.
    staged: std::sync::Mutex<Vec<(String, String)>>,
    pub cwd: Option<String>,
    pub user: Option<RunAs>,
    pub reaper: Arc<Reaper>,
    pub ptys: pty::PtyTable,
    pub jobs: jobs::JobTable,
    disk: Option<std::fs::File>,
}

impl State {
    /// Every command's base environment: the boot defaults, then what
    /// was staged.
    pub fn env(&self) -> Vec<(String, String)> {
        let staged = self
            .staged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        merged_env(&self.env, &staged)
    }

    fn stage(&self, vars: Vec<(String, String)>) {
        let mut staged = self
            .staged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *staged = merged_env(&staged, &vars);
    }

    fn unstage(&self, names: &[String]) {
        self.staged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(k, _)| !names.contains(k));
    }

    /// A request's working directory, or the default one.
    pub fn cwd_for(&self, requested: Option<String>, env: &[(String, String)]) -> String {
        requested
            .or_else(|| self.cwd.clone())
            .unwrap_or_else(|| default_cwd(env))
    }

    /// Runs `cmd` as the sandbox's user, if it has one.
    pub fn apply_user(&self, cmd: &mut std::process::Command) {
        run_as(cmd, self.user);
    }

    /// Runs `cmd` as `requested` (resolved in the sandbox's own account
    /// files), or as the sandbox's user when none is asked.
    pub fn apply_requested_user(
        &self,
        cmd: &mut std::process::Command,
        requested: Option<&str>,
    ) -> Result<(), String> {
        let user = match requested {
            None => self.user,
            Some(name) => Some(RunAs::resolve(name)?),
        };
        run_as(cmd, user);
        Ok(())
    }
}

fn run_as(cmd: &mut std::process::Command, user: Option<RunAs>) {
    if let Some(u) = user {
        use std::os::unix::process::CommandExt;
        cmd.uid(u.uid).gid(u.gid);
    }
}

/// Serves the agent protocol on `listener` until the process is killed.
pub fn serve(listener: UnixListener, defaults: Defaults) -> io::Result<()> {
    run(defaults, |state| async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(listener)?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(handle_logged(Arc::clone(&state), stream));
        }
    })
}

/// Serves the agent protocol over a microVM's virtio-serial port, one
/// multiplexed stream per connection (see [`crate::mux`]). When the host
/// end goes away (the VM was saved, and resumed with a new monitor on
/// the host) the session ends and a fresh one starts once a host is
/// back.
pub fn serve_port(port: &std::path::Path, defaults: Defaults) -> io::Result<()> {
    run(defaults, |state| async move {
        // Opened once for the agent's life: closing the port would tell
        // the host the guest left.
        let port = crate::mux::Port::open(port)?;
        loop {
            port.wait_for_host().await?;
            let state = Arc::clone(&state);
            let served = crate::mux::serve_guest(port.session()?, move |stream| {
                handle_logged(Arc::clone(&state), stream)
            })
            .await;
            if let Err(e) = served {
                eprintln!("paddock-agent: the host session ended: {e}");
            }
        }
    })
}

/// Runs `serve` with the agent's state on a current-thread runtime.
fn run<S, F>(defaults: Defaults, serve: S) -> io::Result<()>
where
    S: FnOnce(Arc<State>) -> F,
    F: std::future::Future<Output = io::Result<()>>,
{
    crate::sys::unmap_large_buffers_when_freed();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let reaper = Reaper::start()?;
        let state = Arc::new(State {
            env: defaults.env,
            staged: std::sync::Mutex::new(Vec::new()),
            cwd: defaults.cwd,
            user: defaults.user,
            reaper,
            ptys: pty::PtyTable::default(),
            jobs: jobs::JobTable::default(),
            disk: defaults.disk,
        });
        serve(state).await
    })
}

async fn handle_logged(state: Arc<State>, stream: UnixStream) {
    if let Err(e) = handle(state, stream).await {
        if e.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("paddock-agent: connection failed: {e}");
        }
    }
}

async fn handle(state: Arc<State>, mut stream: UnixStream) -> io::Result<()> {
    let Some(first) = read_frame_max(&mut stream, MAX_REQUEST_FRAME).await? else {
        return Ok(());
    };
    let request: Request = match first.control() {
        Ok(r) => r,
        Err(e) => {
            let event = Event::error(crate::proto::ErrorKind::Invalid, e.to_string());
            return write_control(&mut stream, &event).await;
        }
    };
    match request {
        Request::Ping => write_control(&mut stream, &Event::Pong).await,
        Request::StageEnv { env } => {
            state.stage(env.0);
            write_control(&mut stream, &Event::Ok).await
        }
        Request::UnstageEnv { names } => {
            state.unstage(&names);
            write_control(&mut stream, &Event::Ok).await
        }
        Request::Exec {
            argv,
            env,
            cwd,
            stdin,
            timeout_ms,
            user,
        } => {
            let spec = exec::ExecSpec {
                argv,
                env,
                cwd,
                stdin,
                timeout_ms,
                user,
            };
            exec::run(&state, stream, spec).await
        }
        Request::JobStart { id, argv, env, cwd } => {
            let spec = jobs::JobSpec { id, argv, env, cwd };
            state.jobs.start(&state, &mut stream, spec).await
        }
        Request::JobAttach {
            id,
            stdout_from,
            stderr_from,
        } => {
            state
                .jobs
                .attach(&mut stream, &id, stdout_from, stderr_from)
                .await
        }
        Request::ReadFile { path } => files::read(&mut stream, &path).await,
        Request::WriteFile { path, mode } => files::write(&mut stream, &path, mode).await,
        Request::PtyCreate {
            id,
            cols,
            rows,
            command,
        } => {
            let event = state
                .ptys
                .create(&state, id, cols, rows, command)
                .map_or_else(|refusal| refusal, Event::Pty);
            write_control(&mut stream, &event).await
        }
        Request::PtyList => {
            let sessions = state.ptys.list();
            write_control(&mut stream, &Event::PtyList { sessions }).await
        }
        Request::PtyGet { id } => write_control(&mut stream, &state.ptys.get(&id)).await,
        Request::PtyResize { id, cols, rows } => {
            write_control(&mut stream, &state.ptys.resize(&id, cols, rows)).await
        }
        Request::PtyKill { id } => write_control(&mut stream, &state.ptys.kill(&id)).await,
        Request::PtyAttach { id } => state.ptys.attach(&id, stream).await,
        Request::FreezeDisk { frozen } => {
            let event = match &state.disk {
                None => Event::error(
                    crate::proto::ErrorKind::Invalid,
                    "this sandbox has no disk of its own to freeze",
                ),
                Some(disk) => {
                    let fd = std::os::fd::AsFd::as_fd(disk).try_clone_to_owned()?;
                    // The freeze flushes the disk: off the serving thread.
                    let done = tokio::task::spawn_blocking(move || {
                        crate::sys::freeze_filesystem(std::os::fd::AsFd::as_fd(&fd), frozen)
                    })
                    .await
                    .map_err(io::Error::other)?;
                    match done {
                        Ok(()) => Event::Ok,
                        Err(e) => Event::error(crate::proto::ErrorKind::Other, e.to_string()),
                    }
                }
            };
            write_control(&mut stream, &event).await
        }
        Request::Signal { pid, signal } => {
            write_control(&mut stream, &signal_group(pid, signal)).await
        }
        Request::Stat { path } => files::stat(&mut stream, &path).await,
        Request::MakeDir { path } => files::make_dir(&mut stream, &path).await,
        Request::Rename { from, to } => files::rename(&mut stream, &from, &to).await,
        Request::Remove { path } => files::remove(&mut stream, &path).await,
        Request::Watch { path, recursive } => watch::run(stream, &path, recursive).await,
        Request::Resize { .. } => {
            let event = Event::error(
                crate::proto::ErrorKind::Invalid,
                "resize is only valid on an attached PTY",
            );
            write_control(&mut stream, &event).await
        }
    }
}

/// Signals the process group `pid` leads: every command the agent starts
/// leads its own group (see `sys::set_pre_exec`), so its children get
/// the signal too.
fn signal_group(pid: i32, signal: i32) -> Event {
    use crate::proto::ErrorKind;
    if pid <= 1 {
        return Event::error(ErrorKind::Invalid, format!("pid {pid} cannot be signalled"));
    }
    let Ok(signal) = nix::sys::signal::Signal::try_from(signal) else {
        return Event::error(ErrorKind::Invalid, format!("{signal} is not a signal"));
    };
    match nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal) {
        Ok(()) => Event::Ok,
        Err(nix::errno::Errno::ESRCH) => {
            Event::error(ErrorKind::NotFound, format!("no process group {pid}"))
        }
        Err(e) => Event::error(ErrorKind::Other, format!("signal {pid}: {e}")),
    }
}

/// A command's environment: the sandbox's, then the request's on top.
pub(crate) fn merged_env(
    base: &[(String, String)],
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::with_capacity(base.len() + extra.len());
    for (k, v) in base.iter().chain(extra) {
        if let Some(slot) = env.iter_mut().find(|(ek, _)| ek == k) {
            slot.1 = v.clone();
        } else {
            env.push((k.clone(), v.clone()));
        }
    }
    env
}

/// The working directory a command starts in when none is given: `$HOME`
/// if it exists, else `/`.
pub(crate) fn default_cwd(env: &[(String, String)]) -> String {
    env.iter()
        .find(|(k, _)| k == "HOME")
        .map(|(_, v)| v.clone())
        .filter(|h| std::path::Path::new(h).is_dir())
        .unwrap_or_else(|| "/".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_and_its_own_group_are_never_signalled() {
        // pid 1 is the agent; 0 would be the agent's own process group.
        for pid in [1, 0, -1] {
            assert!(
                matches!(
                    signal_group(pid, 9),
                    Event::Error {
                        kind: crate::proto::ErrorKind::Invalid,
                        ..
                    }
                ),
                "pid {pid}"
            );
        }
        assert!(matches!(
            signal_group(2, 999),
            Event::Error {
                kind: crate::proto::ErrorKind::Invalid,
                ..
            }
        ));
    }
}
