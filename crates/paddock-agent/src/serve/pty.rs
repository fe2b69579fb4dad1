//! Interactive terminals. Each PTY session lives in PID 1, not in the
//! server, so it survives a server restart; its recent output is kept so a
//! client that attaches (again) sees the screen's latest lines.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::{openpty, Winsize};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;
use tokio::sync::broadcast;
use tokio_util::codec::FramedRead;

use super::{merged_env, State};
use crate::proto::{
    write_control, write_data, ErrorKind, Event, FrameCodec, PtyCommand, PtyInfo, Request,
    KIND_CONTROL, KIND_STDIN, KIND_STDOUT,
};
use crate::sys;

const SCROLLBACK: usize = 64 * 1024;
const MAX_SESSIONS: usize = 64;

#[derive(Clone)]
enum Output {
    Data(Bytes),
    Exit(i32),
}

struct Session {
    info: Mutex<PtyInfo>,
    master: Arc<AsyncFd<OwnedFd>>,
    /// Recent output; its lock also orders broadcasts against attaches, so
    /// an attaching client sees every byte exactly once.
    scrollback: Mutex<VecDeque<u8>>,
    output: broadcast::Sender<Output>,
}

#[derive(Default)]
pub(crate) struct PtyTable {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn not_found(id: &str) -> Event {
    Event::error(ErrorKind::NotFound, format!("no PTY session {id}"))
}

fn has_bash() -> bool {
    std::path::Path::new("/bin/bash").exists()
}

fn argv_for(command: &PtyCommand) -> Vec<String> {
    let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    match command {
        PtyCommand::DefaultShell if has_bash() => v(&["/bin/bash", "-il"]),
        PtyCommand::DefaultShell => v(&["/bin/sh", "-i"]),
        PtyCommand::Shell(program) => vec![program.clone()],
        PtyCommand::CommandLine(line) if has_bash() => {
            vec!["/bin/bash".into(), "-lc".into(), line.clone()]
        }
        PtyCommand::CommandLine(line) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
    }
}

async fn read_master(master: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = master.readable().await?;
        match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(io::Error::from)) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

async fn write_master(master: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = master.writable().await?;
        match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

impl PtyTable {
    /// A new PTY session, or the error event that refuses it.
    pub fn create(
        &self,
        state: &State,
        id: String,
        cols: u16,
        rows: u16,
        command: PtyCommand,
    ) -> Result<PtyInfo, Event> {
        {
            let sessions = lock(&self.sessions);
            if sessions.contains_key(&id) {
                return Err(Event::error(
                    ErrorKind::Exists,
                    format!("PTY session {id} exists"),
                ));
            }
            if sessions.len() >= MAX_SESSIONS {
                return Err(Event::error(
                    ErrorKind::Invalid,
                    format!("at most {MAX_SESSIONS} PTY sessions per VM"),
                ));
            }
        }
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).map_err(|e| Event::from_io(&e.into(), "openpty"))?;
        let argv = argv_for(&command);
        let mut env = merged_env(&state.env(), &[]);
        env.retain(|(k, _)| k != "TERM");
        env.push(("TERM".into(), "xterm-256color".into()));
        let stdio = |fd: &OwnedFd| {
            fd.try_clone()
                .map(Stdio::from)
                .map_err(|e| Event::from_io(&e, "dup the pty"))
        };
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(state.cwd_for(None, &env))
            .stdin(stdio(&pty.slave)?)
            .stdout(stdio(&pty.slave)?)
            .stderr(stdio(&pty.slave)?);
        state.apply_user(&mut cmd);
        sys::set_pre_exec(&mut cmd, true, None);
        let (child, exited) = state
            .reaper
            .spawn(&mut cmd)
            .map_err(|e| Event::from_io(&e, &format!("start {}", argv[0])))?;
        drop(cmd);
        drop(pty.slave);
        let pid = child.id() as i32;
        let master = pty.master;
        let flags =
            fcntl(&master, FcntlArg::F_GETFL).map_err(|e| Event::from_io(&e.into(), "fcntl"))?;
        fcntl(
            &master,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(|e| Event::from_io(&e.into(), "fcntl"))?;
        let master =
            Arc::new(sys::async_fd(master).map_err(|e| Event::from_io(&e, "register the pty"))?);
        let info = PtyInfo {
            id: id.clone(),
            pid,
            cols,
            rows,
            alive: true,
            exit_code: None,
            command: argv,
            created_at_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        };
        let (output, _) = broadcast::channel(256);
        let session = Arc::new(Session {
            info: Mutex::new(info.clone()),
            master,
            scrollback: Mutex::new(VecDeque::new()),
            output,
        });
        lock(&self.sessions).insert(id, Arc::clone(&session));
        tokio::spawn(pump(session, exited));
        Ok(info)
    }

    pub fn list(&self) -> Vec<PtyInfo> {
        let mut v: Vec<PtyInfo> = lock(&self.sessions)
            .values()
            .map(|s| lock(&s.info).clone())
            .collect();
        v.sort_by(|a, b| (a.created_at_unix, &a.id).cmp(&(b.created_at_unix, &b.id)));
        v
    }

    fn session(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.sessions).get(id).cloned()
    }

    pub fn get(&self, id: &str) -> Event {
        match self.session(id) {
            Some(s) => Event::Pty(lock(&s.info).clone()),
            None => not_found(id),
        }
    }

    pub fn resize(&self, id: &str, cols: u16, rows: u16) -> Event {
        let Some(s) = self.session(id) else {
            return not_found(id);
        };
        if let Err(e) = sys::set_window_size(s.master.get_ref().as_fd(), cols, rows) {
            return Event::from_io(&e, "resize");
        }
        let mut info = lock(&s.info);
        info.cols = cols;
        info.rows = rows;
        Event::Pty(info.clone())
    }

    pub fn kill(&self, id: &str) -> Event {
        let Some(s) = lock(&self.sessions).remove(id) else {
            return not_found(id);
        };
        let info = lock(&s.info).clone();
        if info.alive {
            let _ = killpg(Pid::from_raw(info.pid), Signal::SIGKILL);
        }
        Event::Ok
    }

    pub async fn attach(&self, id: &str, mut stream: UnixStream) -> io::Result<()> {
        let Some(s) = self.session(id) else {
            return write_control(&mut stream, &not_found(id)).await;
        };
        let (mut rx, backlog, exit_code) = {
            let scrollback = lock(&s.scrollback);
            let rx = s.output.subscribe();
            let backlog: Vec<u8> = scrollback.iter().copied().collect();
            (rx, backlog, lock(&s.info).exit_code)
        };
        write_control(&mut stream, &Event::Ok).await?;
        let (rd, mut wr) = stream.into_split();
        let mut frames = FramedRead::new(rd, FrameCodec);
        if !backlog.is_empty() {
            write_data(&mut wr, KIND_STDOUT, &backlog).await?;
        }
        if let Some(code) = exit_code {
            return write_control(&mut wr, &Event::PtyExit { code }).await;
        }
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Ok(Output::Data(b)) => write_data(&mut wr, KIND_STDOUT, &b).await?,
                    Ok(Output::Exit(code)) => return write_control(&mut wr, &Event::PtyExit { code }).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                frame = frames.next() => match frame.transpose()? {
                    None => return Ok(()),
                    Some(f) if f.kind == KIND_STDIN => write_master(&s.master, &f.payload).await?,
                    Some(f) if f.kind == KIND_CONTROL => {
                        if let Ok(Request::Resize { cols, rows }) = f.control::<Request>() {
                            if sys::set_window_size(s.master.get_ref().as_fd(), cols, rows).is_ok() {
                                let mut info = lock(&s.info);
                                info.cols = cols;
                                info.rows = rows;
                            }
                        }
                    }
                    Some(_) => {}
                },
            }
        }
    }
}

/// Copies the terminal's output to the scrollback and attached clients
/// until the session's process exits, then records how it ended.
async fn pump(session: Arc<Session>, mut exited: tokio::sync::oneshot::Receiver<sys::Reaped>) {
    let mut buf = vec![0u8; 16 * 1024];
    let publish = |data: &[u8]| {
        let mut sb = lock(&session.scrollback);
        sb.extend(data);
        let excess = sb.len().saturating_sub(SCROLLBACK);
        sb.drain(..excess);
        let _ = session
            .output
            .send(Output::Data(Bytes::copy_from_slice(data)));
    };
    let status = loop {
        tokio::select! {
            n = read_master(&session.master, &mut buf) => match n {
                Ok(n) if n > 0 => publish(&buf[..n]),
                // EIO once every holder of the terminal closed it.
                _ => break (&mut exited).await.ok(),
            },
            r = &mut exited => {
                // Output still buffered in the terminal is read for a moment.
                let until = tokio::time::sleep(Duration::from_millis(100));
                tokio::pin!(until);
                loop {
                    tokio::select! {
                        n = read_master(&session.master, &mut buf) => match n {
                            Ok(n) if n > 0 => publish(&buf[..n]),
                            _ => break,
                        },
                        _ = &mut until => break,
                    }
                }
                break r.ok();
            }
        }
    };
    let code = status
        .map(|s| s.code.unwrap_or_else(|| 128 + s.signal.unwrap_or(0)))
        .unwrap_or(-1);
    {
        let _sb = lock(&session.scrollback);
        let mut info = lock(&session.info);
        info.alive = false;
        info.exit_code = Some(code);
        let _ = session.output.send(Output::Exit(code));
    }
}
