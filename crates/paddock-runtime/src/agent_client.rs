//! The server's side of the agent protocol: one connection per request to
//! a sandbox's agent, turned into the core's exec, file and PTY types. The
//! agent is reached at its socket on this host, or, for a sandbox another
//! node runs, through that node's tunnel to the same socket.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use paddock_agent_protocol::proto::{
    read_frame, write_control, write_data, ErrorKind, Event, Frame, PtyCommand, PtyInfo as WirePty,
    Request, CHUNK, KIND_DATA, KIND_STDERR, KIND_STDIN, KIND_STDOUT,
};
use paddock_core::exec::{
    ByteStream, DirEntry, ExecEvent, ExecRequest, ExecStream, ExitStatus, FileContent, FileKind,
    PathChange, PathChangeKind, PathOp, PtyConnection, PtyInfo, PtyInput, PtyOutput,
};
use paddock_core::RuntimeError;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::node_tunnel::NodeTunnel;

/// How long an agent has to accept a request and give its first reply:
/// it answers at once unless it is stuck (stopped, starved, wedged), and
/// a stuck agent must never hang the caller.
pub const REPLY_DEADLINE: Duration = Duration::from_secs(5);
/// How long past an exec's own timeout its exit may take to arrive (the
/// agent kills the command at the timeout and reports at once).
pub const EXEC_GRACE: Duration = Duration::from_secs(5);
/// The longest silence between frames of a file transfer.
const TRANSFER_IDLE: Duration = Duration::from_secs(30);

fn agent_err(e: io::Error) -> RuntimeError {
    RuntimeError::Agent(e.to_string())
}

fn too_slow(what: &str) -> RuntimeError {
    RuntimeError::AgentTimeout(what.to_owned())
}

/// `fut` within `limit`, or [`RuntimeError::AgentTimeout`] naming `what`.
async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, RuntimeError>>,
) -> Result<T, RuntimeError> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(too_slow(&format!(
            "{what} (no answer in {} s)",
            limit.as_secs()
        )))
    })
}

fn event_err(kind: ErrorKind, message: String) -> RuntimeError {
    match kind {
        ErrorKind::NotFound => RuntimeError::FileNotFound(message),
        ErrorKind::PermissionDenied => RuntimeError::PermissionDenied(message),
        ErrorKind::IsADirectory => RuntimeError::IsADirectory(message),
        ErrorKind::NotADirectory => RuntimeError::NotADirectory(message),
        ErrorKind::Invalid => RuntimeError::Invalid(message),
        ErrorKind::Exists => RuntimeError::Exists(message),
        ErrorKind::Other => RuntimeError::Agent(message),
    }
}

fn unexpected(e: &Event) -> RuntimeError {
    RuntimeError::Agent(format!("unexpected agent reply {e:?}"))
}

/// Where a sandbox's agent answers.
#[derive(Debug, Clone)]
pub enum AgentAddress {
    /// Its socket on this host.
    Socket(PathBuf),
    /// Its node's tunnel to its socket, for a sandbox of another node.
    Node(NodeTunnel),
}

/// What names an agent: a socket path, or an [`AgentAddress`].
pub trait ToAgent: Send + Sync {
    fn agent(&self) -> AgentAddress;
}

impl ToAgent for Path {
    fn agent(&self) -> AgentAddress {
        AgentAddress::Socket(self.to_owned())
    }
}

impl ToAgent for PathBuf {
    fn agent(&self) -> AgentAddress {
        AgentAddress::Socket(self.clone())
    }
}

impl ToAgent for AgentAddress {
    fn agent(&self) -> AgentAddress {
        self.clone()
    }
}

/// A connection to an agent, whichever way it goes.
pub trait AgentIo: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> AgentIo for T {}

pub type AgentStream = Pin<Box<dyn AgentIo>>;

/// Connects to the agent `socket` names; a sandbox that is gone is
/// [`RuntimeError::SandboxGone`].
pub async fn connect(socket: &(impl ToAgent + ?Sized)) -> Result<AgentStream, RuntimeError> {
    match socket.agent() {
        AgentAddress::Socket(path) => Ok(Box::pin(connect_socket(&path).await?)),
        AgentAddress::Node(tunnel) => tunnel.open().await,
    }
}

/// Connects to the agent socket at `path` on this host.
pub async fn connect_socket(path: &Path) -> Result<UnixStream, RuntimeError> {
    match UnixStream::connect(path).await {
        Ok(s) => Ok(s),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            Err(RuntimeError::SandboxGone)
        }
        Err(e) => Err(agent_err(e)),
    }
}

async fn next_event(stream: &mut AgentStream) -> Result<Event, RuntimeError> {
    match read_frame(stream).await.map_err(agent_err)? {
        Some(f) => f.control().map_err(agent_err),
        None => Err(RuntimeError::SandboxGone),
    }
}

/// Connects, sends one request and returns the first reply, within
/// [`REPLY_DEADLINE`].
pub async fn call(
    socket: &(impl ToAgent + ?Sized),
    request: &Request,
) -> Result<(AgentStream, Event), RuntimeError> {
    call_within(REPLY_DEADLINE, socket, request).await
}

async fn call_within(
    limit: Duration,
    socket: &(impl ToAgent + ?Sized),
    request: &Request,
) -> Result<(AgentStream, Event), RuntimeError> {
    let (stream, event) = within(limit, "a request", async {
        let mut stream = connect(socket).await?;
        write_control(&mut stream, request)
            .await
            .map_err(agent_err)?;
        let event = next_event(&mut stream).await?;
        Ok((stream, event))
    })
    .await?;
    if let Event::Error { kind, message } = event {
        return Err(event_err(kind, message));
    }
    Ok((stream, event))
}

pub async fn ping(socket: &(impl ToAgent + ?Sized)) -> Result<(), RuntimeError> {
    ping_within(REPLY_DEADLINE, socket).await
}

/// A ping that may wait `limit` for its answer: a booting guest's
/// channel accepts at once, but its agent answers only once the guest's
/// init has started it, which under emulation (TCG) on a loaded host
/// takes longer than any running agent's reply may.
pub async fn ping_within(
    limit: Duration,
    socket: &(impl ToAgent + ?Sized),
) -> Result<(), RuntimeError> {
    match call_within(limit, socket, &Request::Ping).await? {
        (_, Event::Pong) => Ok(()),
        (_, other) => Err(unexpected(&other)),
    }
}

/// Stages variables into every later command's environment.
pub async fn stage_env(
    socket: &(impl ToAgent + ?Sized),
    env: Vec<(String, String)>,
) -> Result<(), RuntimeError> {
    let request = Request::StageEnv {
        env: paddock_agent_protocol::proto::SecretVars(env),
    };
    match call(socket, &request).await? {
        (_, Event::Ok) => Ok(()),
        (_, other) => Err(unexpected(&other)),
    }
}

/// Freezes (or thaws) the sandbox's own disk: frozen, its file system
/// is clean on the device and stays so until thawed.
pub async fn freeze_disk(
    socket: &(impl ToAgent + ?Sized),
    frozen: bool,
) -> Result<(), RuntimeError> {
    match call(socket, &Request::FreezeDisk { frozen }).await? {
        (_, Event::Ok) => Ok(()),
        (_, other) => Err(unexpected(&other)),
    }
}

/// Removes staged variables by name.
pub async fn unstage_env(
    socket: &(impl ToAgent + ?Sized),
    names: Vec<String>,
) -> Result<(), RuntimeError> {
    match call(socket, &Request::UnstageEnv { names }).await? {
        (_, Event::Ok) => Ok(()),
        (_, other) => Err(unexpected(&other)),
    }
}

/// Runs a command; `oom_kills` reads the sandbox's OOM-kill counter, so an
/// exit by SIGKILL can be told apart as the OOM killer's.
pub async fn exec(
    socket: &(impl ToAgent + ?Sized),
    request: ExecRequest,
    oom_kills: impl Fn() -> u64 + Send + 'static,
) -> Result<ExecStream, RuntimeError> {
    let oom_before = oom_kills();
    // The exit must arrive by the command's own deadline, plus grace.
    let deadline = request
        .timeout
        .map(|t| tokio::time::Instant::now() + REPLY_DEADLINE + t + EXEC_GRACE);
    let wire = Request::Exec {
        argv: request.argv,
        env: request.env,
        cwd: request.cwd,
        stdin: request.stdin.is_some() || request.stdin_stream.is_some(),
        timeout_ms: request.timeout.map(|t| t.as_millis() as u64),
        user: request.user.clone(),
    };
    let (stream, started) = within(REPLY_DEADLINE, "starting a command", async {
        let mut stream = connect(socket).await?;
        write_control(&mut stream, &wire).await.map_err(agent_err)?;
        let event = next_event(&mut stream).await?;
        Ok((stream, event))
    })
    .await?;
    match started {
        Event::Started { pid } => {
            if let Some(tell) = request.started {
                let _ = tell.send(pid);
            }
        }
        // A command that cannot start ends as a shell would end it: 127
        // when it does not exist, 126 when it may not run, with the reason
        // on stderr.
        Event::Error { kind, message }
            if matches!(kind, ErrorKind::NotFound | ErrorKind::PermissionDenied) =>
        {
            let code = if kind == ErrorKind::NotFound {
                127
            } else {
                126
            };
            let (tx, rx) = mpsc::channel(2);
            let _ = tx
                .send(Ok(ExecEvent::Stderr(Bytes::from(format!(
                    "paddock: {message}\n"
                )))))
                .await;
            let status = ExitStatus {
                code: Some(code),
                ..ExitStatus::default()
            };
            let _ = tx.send(Ok(ExecEvent::Exit(status))).await;
            return Ok(rx);
        }
        Event::Error { kind, message } => return Err(event_err(kind, message)),
        other => return Err(unexpected(&other)),
    }
    let (rd, mut wr) = tokio::io::split(stream);
    // The write half feeds stdin, then stays open while the reader runs:
    // the agent reads its closing as "the caller went away" and kills the
    // command. The reader owns this task, so the socket closes with it.
    let stdin = request.stdin;
    let mut stdin_stream = request.stdin_stream;
    let writer = AbortOnDrop(tokio::spawn(async move {
        if let Some(stdin) = stdin {
            for chunk in stdin.chunks(CHUNK) {
                if write_data(&mut wr, KIND_STDIN, chunk).await.is_err() {
                    return;
                }
            }
            let _ = write_data(&mut wr, KIND_STDIN, b"").await;
        } else if let Some(rx) = stdin_stream.as_mut() {
            while let Some(data) = rx.recv().await {
                // An empty frame would end stdin: skip empty input.
                for chunk in data.chunks(CHUNK).filter(|c| !c.is_empty()) {
                    if write_data(&mut wr, KIND_STDIN, chunk).await.is_err() {
                        return;
                    }
                }
            }
            let _ = write_data(&mut wr, KIND_STDIN, b"").await;
        }
        std::future::pending::<()>().await;
    }));
    Ok(events(rd, deadline, Some(writer), move || {
        oom_kills() > oom_before
    }))
}

/// The events of a command's run read from `rd` (output frames, then the
/// exit) as an [`ExecStream`]. `keep` lives as long as the reader (an
/// exec's stdin writer, whose socket half must stay open); `oom_killed`
/// says at the exit whether the OOM killer struck meanwhile.
fn events(
    mut rd: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    deadline: Option<tokio::time::Instant>,
    keep: Option<AbortOnDrop>,
    oom_killed: impl Fn() -> bool + Send + 'static,
) -> ExecStream {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let _keep = keep;
        loop {
            let next = match deadline {
                Some(d) => tokio::time::timeout_at(d, read_frame(&mut rd)).await,
                None => Ok(read_frame(&mut rd).await),
            };
            let Ok(next) = next else {
                let _ = tx
                    .send(Err(too_slow("a command's exit past its timeout")))
                    .await;
                return;
            };
            let frame = match next {
                Ok(Some(f)) => f,
                Ok(None) => {
                    let _ = tx.send(Err(RuntimeError::SandboxGone)).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(agent_err(e))).await;
                    return;
                }
            };
            let event = match frame.kind {
                KIND_STDOUT => Ok(ExecEvent::Stdout(frame.payload)),
                KIND_STDERR => Ok(ExecEvent::Stderr(frame.payload)),
                _ => match frame.control::<Event>() {
                    Ok(Event::Exit {
                        code,
                        signal,
                        timed_out,
                        wall_ms,
                        cpu_ms,
                    }) => {
                        let oom_killed = oom_killed();
                        let status = ExitStatus {
                            code,
                            signal,
                            timed_out,
                            oom_killed,
                            wall_time: Duration::from_millis(wall_ms),
                            cpu_time: Duration::from_millis(cpu_ms),
                        };
                        let _ = tx.send(Ok(ExecEvent::Exit(status))).await;
                        return;
                    }
                    Ok(Event::Error { kind, message }) => Err(event_err(kind, message)),
                    Ok(other) => Err(unexpected(&other)),
                    Err(e) => Err(agent_err(e)),
                },
            };
            let stop = event.is_err();
            // A receiver that went away means the caller lost interest:
            // dropping the connection makes the agent kill the command.
            if tx.send(event).await.is_err() || stop {
                return;
            }
        }
    });
    rx
}

/// Starts job `id` (a command that outlives this connection, its output
/// kept by the agent); see [`job_attach`].
pub async fn job_start(
    socket: &(impl ToAgent + ?Sized),
    id: &str,
    request: ExecRequest,
) -> Result<(), RuntimeError> {
    let wire = Request::JobStart {
        id: id.to_owned(),
        argv: request.argv,
        env: request.env,
        cwd: request.cwd,
    };
    match call(socket, &wire).await? {
        (_, Event::Started { .. }) => Ok(()),
        (_, other) => Err(unexpected(&other)),
    }
}

/// Job `id`'s output from these byte offsets (what the caller already
/// has), live, then its exit. The job goes on if the stream is dropped.
pub async fn job_attach(
    socket: &(impl ToAgent + ?Sized),
    id: &str,
    stdout_from: u64,
    stderr_from: u64,
    oom_kills: impl Fn() -> u64 + Send + 'static,
) -> Result<ExecStream, RuntimeError> {
    let oom_before = oom_kills();
    let wire = Request::JobAttach {
        id: id.to_owned(),
        stdout_from,
        stderr_from,
    };
    match call(socket, &wire).await? {
        (stream, Event::Ok) => Ok(events(stream, None, None, move || oom_kills() > oom_before)),
        (_, other) => Err(unexpected(&other)),
    }
}

/// Aborts a task when dropped, so a task bound to another's lifetime
/// cannot outlive it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn file_kind(s: &str) -> FileKind {
    match s {
        "file" => FileKind::File,
        "directory" => FileKind::Directory,
        "symlink" => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

fn dir_entry(e: paddock_agent_protocol::proto::DirEntry) -> DirEntry {
    DirEntry {
        kind: file_kind(&e.kind),
        name: e.name,
        size: e.size,
        mode: e.mode,
        modified_unix: e.modified_unix,
        owner: e.owner,
        group: e.group,
        symlink_target: e.symlink_target,
    }
}

/// Looks at or changes one path; see [`PathOp`].
pub async fn path_op(
    socket: &(impl ToAgent + ?Sized),
    op: PathOp,
) -> Result<Option<DirEntry>, RuntimeError> {
    let wire = match op {
        PathOp::Stat(p) => Request::Stat {
            path: p.as_str().to_owned(),
        },
        PathOp::MakeDir(p) => Request::MakeDir {
            path: p.as_str().to_owned(),
        },
        PathOp::Rename { from, to } => Request::Rename {
            from: from.as_str().to_owned(),
            to: to.as_str().to_owned(),
        },
        PathOp::Remove(p) => Request::Remove {
            path: p.as_str().to_owned(),
        },
    };
    match call(socket, &wire).await? {
        (_, Event::Entry(e)) => Ok(Some(dir_entry(*e))),
        (_, Event::Ok) => Ok(None),
        (_, other) => Err(unexpected(&other)),
    }
}

/// Watches directory `path`: its changes until the receiver is dropped
/// (which closes the connection, and the agent stops watching).
pub async fn watch(
    socket: &(impl ToAgent + ?Sized),
    path: &str,
    recursive: bool,
) -> Result<mpsc::Receiver<PathChange>, RuntimeError> {
    let wire = Request::Watch {
        path: path.to_owned(),
        recursive,
    };
    let mut stream = match call(socket, &wire).await? {
        (stream, Event::Ok) => stream,
        (_, other) => return Err(unexpected(&other)),
    };
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                frame = read_frame(&mut stream) => {
                    let Ok(Some(frame)) = frame else { return };
                    let Ok(Event::Changed { name, change }) = frame.control::<Event>() else {
                        continue;
                    };
                    let Some(kind) = PathChangeKind::parse(&change) else {
                        continue;
                    };
                    if tx.send(PathChange { name, kind }).await.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
            }
        }
    });
    Ok(rx)
}

/// Signals the process group `pid` leads.
pub async fn signal(
    socket: &(impl ToAgent + ?Sized),
    pid: i32,
    signal: i32,
) -> Result<(), RuntimeError> {
    match call(socket, &Request::Signal { pid, signal }).await? {
        (_, Event::Ok) => Ok(()),
        (_, other) => Err(unexpected(&other)),
    }
}

pub async fn read_file(
    socket: &(impl ToAgent + ?Sized),
    path: &str,
) -> Result<FileContent, RuntimeError> {
    let (stream, first) = call(
        socket,
        &Request::ReadFile {
            path: path.to_owned(),
        },
    )
    .await?;
    match first {
        Event::Listing { entries } => Ok(FileContent::Directory(
            entries.into_iter().map(dir_entry).collect(),
        )),
        Event::File { size, mode } => {
            let data = futures::stream::unfold(Some(stream), |state| async move {
                let mut stream = state?;
                let Ok(next) = tokio::time::timeout(TRANSFER_IDLE, read_frame(&mut stream)).await
                else {
                    return Some((Err(io::Error::from(io::ErrorKind::TimedOut)), None));
                };
                match next {
                    Ok(Some(Frame {
                        kind: KIND_DATA,
                        payload,
                    })) => Some((Ok(payload), Some(stream))),
                    Ok(Some(f)) => match f.control::<Event>() {
                        Ok(Event::Done) => None,
                        Ok(other) => Some((Err(io::Error::other(format!("{other:?}"))), None)),
                        Err(e) => Some((Err(e), None)),
                    },
                    Ok(None) => Some((Err(io::Error::from(io::ErrorKind::UnexpectedEof)), None)),
                    Err(e) => Some((Err(e), None)),
                }
            });
            Ok(FileContent::File {
                size,
                mode,
                data: Box::pin(data),
            })
        }
        other => Err(unexpected(&other)),
    }
}

pub async fn write_file(
    socket: &(impl ToAgent + ?Sized),
    path: &str,
    mode: Option<u32>,
    mut body: ByteStream,
) -> Result<u64, RuntimeError> {
    let request = Request::WriteFile {
        path: path.to_owned(),
        mode,
    };
    let mut stream = within(REPLY_DEADLINE, "a file upload", async {
        let mut stream = connect(socket).await?;
        write_control(&mut stream, &request)
            .await
            .map_err(agent_err)?;
        Ok(stream)
    })
    .await?;
    let mut send_failed = false;
    while let Some(chunk) = body.next().await {
        let chunk: Bytes = match chunk {
            Ok(c) => c,
            // The upload broke off: closing without the end marker makes
            // the agent discard the partial file.
            Err(e) => return Err(RuntimeError::Invalid(format!("upload interrupted: {e}"))),
        };
        for piece in chunk.chunks(CHUNK) {
            match tokio::time::timeout(TRANSFER_IDLE, write_data(&mut stream, KIND_DATA, piece))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    send_failed = true;
                    break;
                }
                Err(_) => return Err(too_slow("a file upload (the agent stopped reading)")),
            }
        }
        if send_failed {
            break;
        }
    }
    // A failed send means the agent refused the write and closed: its
    // reason is waiting to be read, so it is read either way.
    if !send_failed {
        let _ = write_data(&mut stream, KIND_DATA, b"").await;
    }
    match within(
        REPLY_DEADLINE,
        "a file upload's end",
        next_event(&mut stream),
    )
    .await?
    {
        Event::Written { bytes } => Ok(bytes),
        Event::Error { kind, message } => Err(event_err(kind, message)),
        other => Err(unexpected(&other)),
    }
}

fn pty_info(p: WirePty) -> PtyInfo {
    PtyInfo {
        id: p.id,
        pid: p.pid,
        cols: p.cols,
        rows: p.rows,
        alive: p.alive,
        exit_code: p.exit_code,
        command: p.command,
        created_at_unix: p.created_at_unix,
    }
}

pub async fn pty_request(
    socket: &(impl ToAgent + ?Sized),
    request: Request,
) -> Result<Vec<PtyInfo>, RuntimeError> {
    match call(socket, &request).await? {
        (_, Event::Pty(p)) => Ok(vec![pty_info(p)]),
        (_, Event::PtyList { sessions }) => Ok(sessions.into_iter().map(pty_info).collect()),
        (_, Event::Ok) => Ok(Vec::new()),
        (_, other) => Err(unexpected(&other)),
    }
}

pub fn pty_command(c: paddock_core::exec::PtyCommand) -> PtyCommand {
    match c {
        paddock_core::exec::PtyCommand::DefaultShell => PtyCommand::DefaultShell,
        paddock_core::exec::PtyCommand::Shell(s) => PtyCommand::Shell(s),
        paddock_core::exec::PtyCommand::CommandLine(s) => PtyCommand::CommandLine(s),
    }
}

pub async fn pty_attach(
    socket: &(impl ToAgent + ?Sized),
    id: &str,
) -> Result<PtyConnection, RuntimeError> {
    let (stream, first) = call(socket, &Request::PtyAttach { id: id.to_owned() }).await?;
    if !matches!(first, Event::Ok) {
        return Err(unexpected(&first));
    }
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (in_tx, mut in_rx) = mpsc::channel::<PtyInput>(64);
    let (out_tx, out_rx) = mpsc::channel::<PtyOutput>(64);
    tokio::spawn(async move {
        while let Some(input) = in_rx.recv().await {
            let sent = match input {
                PtyInput::Data(b) => write_data(&mut wr, KIND_STDIN, &b).await,
                PtyInput::Resize { cols, rows } => {
                    write_control(&mut wr, &Request::Resize { cols, rows }).await
                }
            };
            if sent.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        while let Ok(Some(frame)) = read_frame(&mut rd).await {
            let out = if frame.kind == KIND_STDOUT {
                PtyOutput::Data(frame.payload)
            } else {
                match frame.control::<Event>() {
                    Ok(Event::PtyExit { code }) => PtyOutput::Exit(code),
                    _ => continue,
                }
            };
            let exit = matches!(out, PtyOutput::Exit(_));
            if out_tx.send(out).await.is_err() || exit {
                return;
            }
        }
    });
    Ok(PtyConnection {
        input: in_tx,
        output: out_rx,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_core_and_the_agent_agree_on_the_longest_command() {
        assert_eq!(
            paddock_core::exec::MAX_COMMAND_BYTES,
            paddock_agent_protocol::proto::MAX_COMMAND_BYTES
        );
    }
}
