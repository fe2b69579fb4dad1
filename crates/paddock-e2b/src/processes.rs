//! envd's process service: commands a sandbox runs for the SDK, with
//! their output fanned out to every stream connected to them, their
//! stdin or terminal input, signals, and the list of what runs.
//!
//! The server holds each command's exec stream (or attached PTY), not
//! the SDK's connection: a client that disconnects, or whose stream times
//! out, leaves the command running, and may connect to it again by pid
//! or tag, as envd allows. A server restart ends them (envd's commands
//! die with their sandbox's envd the same way).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use paddock_core::error::CoreError;
use paddock_core::exec::{ExecEvent, ExecRequest, PtyCommand, PtyInput, PtyOutput, PtySpec};
use paddock_core::ids::VmId;
use tokio::sync::{broadcast, mpsc, watch};

use crate::{E2b, EnvdTarget};

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ProcessConfig {
    pub cmd: String,
    pub args: Vec<String>,
    pub envs: BTreeMap<String, String>,
    pub cwd: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtySize {
    pub cols: u16,
    pub rows: u16,
}

#[derive(Debug, Clone, Default)]
pub struct ProcessStart {
    pub config: ProcessConfig,
    /// Runs it on a terminal of this size.
    pub pty: Option<PtySize>,
    pub tag: Option<String>,
    /// Keeps its stdin open for `send_input`; otherwise it reads nothing.
    pub stdin: bool,
    /// The sandbox user it runs as (the SDK's `user`); the sandbox's
    /// default one when `None`. A terminal runs as the default user.
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessSelector {
    Pid(u32),
    Tag(String),
}

/// How a command ended, as envd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessEnd {
    pub exit_code: i32,
    /// It exited by itself (not killed by a signal).
    pub exited: bool,
    /// `exit status N` or `signal: NAME`, as Go's `ProcessState` says.
    pub status: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    Start { pid: u32 },
    Stdout(Bytes),
    Stderr(Bytes),
    Pty(Bytes),
    End(ProcessEnd),
}

#[derive(Debug, Clone)]
pub struct ProcessInfo {
    pub config: ProcessConfig,
    pub pid: u32,
    pub tag: Option<String>,
}

/// A connection to a command: its events from now on, `End` last.
pub type ProcessStream = mpsc::Receiver<ProcessEvent>;

/// Output chunks (up to 64 KiB each) a slow reader may fall behind by
/// before it misses some: what one command's output may hold of the
/// server's memory.
const FANOUT_CHUNKS: usize = 512;
/// Commands one sandbox may run through envd at once.
const MAX_PER_SANDBOX: usize = 1024;

enum Input {
    /// Its stdin, while open; `None` once closed or when it has none.
    Pipe(Mutex<Option<mpsc::Sender<Bytes>>>),
    Pty {
        id: String,
        input: mpsc::Sender<PtyInput>,
    },
}

struct Process {
    info: ProcessInfo,
    /// Whether the pid is the command's own, which the agent can signal.
    real_pid: bool,
    events: broadcast::Sender<ProcessEvent>,
    ended: watch::Sender<Option<ProcessEnd>>,
    input: Input,
}

impl Process {
    /// A stream of its events from now on.
    fn connect(&self) -> ProcessStream {
        let mut events = self.events.subscribe();
        let mut ended = self.ended.subscribe();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    ev = events.recv() => match ev {
                        Ok(ev @ ProcessEvent::End(_)) => {
                            let _ = tx.send(ev).await;
                            return;
                        }
                        Ok(ev) => {
                            if tx.send(ev).await.is_err() {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    end = async { ended.wait_for(Option::is_some).await.ok().and_then(|e| e.clone()) } => {
                        // It ended before this stream saw the end go by:
                        // what was sent meanwhile, then the end.
                        while let Ok(ev) = events.try_recv() {
                            if matches!(ev, ProcessEvent::End(_)) {
                                break;
                            }
                            if tx.send(ev).await.is_err() {
                                return;
                            }
                        }
                        if let Some(end) = end {
                            let _ = tx.send(ProcessEvent::End(end)).await;
                        }
                        return;
                    }
                }
            }
        });
        rx
    }
}

/// Every sandbox's commands, by pid.
#[derive(Default)]
pub(crate) struct ProcessTable {
    by_vm: Mutex<HashMap<VmId, HashMap<u32, Arc<Process>>>>,
    /// Pids for commands whose provider does not tell theirs.
    next_synthetic: std::sync::atomic::AtomicU32,
}

impl ProcessTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<VmId, HashMap<u32, Arc<Process>>>> {
        self.by_vm.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether one more command, with `tag`, may start: refused when the
    /// sandbox runs its most, or one with that tag.
    fn room_for(&self, vm: &VmId, tag: Option<&str>) -> Result<(), CoreError> {
        match self.lock().get(vm) {
            Some(procs) => room_in(procs, tag),
            None => Ok(()),
        }
    }

    fn insert(&self, vm: &VmId, p: Arc<Process>) -> Result<(), CoreError> {
        let mut all = self.lock();
        let procs = all.entry(vm.clone()).or_default();
        // Checked again: another start may have taken the room meanwhile.
        room_in(procs, p.info.tag.as_deref())?;
        procs.insert(p.info.pid, p);
        Ok(())
    }

    fn remove(&self, vm: &VmId, pid: u32) {
        let mut all = self.lock();
        if let Some(procs) = all.get_mut(vm) {
            procs.remove(&pid);
            if procs.is_empty() {
                all.remove(vm);
            }
        }
    }

    fn find(&self, vm: &VmId, selector: &ProcessSelector) -> Option<Arc<Process>> {
        let all = self.lock();
        let procs = all.get(vm)?;
        match selector {
            ProcessSelector::Pid(pid) => procs.get(pid).cloned(),
            ProcessSelector::Tag(tag) => procs
                .values()
                .find(|p| p.info.tag.as_deref() == Some(tag.as_str()))
                .cloned(),
        }
    }

    fn list(&self, vm: &VmId) -> Vec<ProcessInfo> {
        let mut list: Vec<ProcessInfo> = self
            .lock()
            .get(vm)
            .map(|procs| procs.values().map(|p| p.info.clone()).collect())
            .unwrap_or_default();
        list.sort_by_key(|p| p.pid);
        list
    }

    /// The sandboxes it holds commands of.
    pub(crate) fn vms(&self) -> Vec<VmId> {
        self.lock().keys().cloned().collect()
    }

    /// Forgets a sandbox's commands (it ended or was paused): their
    /// streams end.
    pub(crate) fn forget_vm(&self, vm: &VmId) {
        self.lock().remove(vm);
    }

    fn synthetic_pid(&self) -> u32 {
        // Above any pid a kernel hands out (at most 2^22).
        (1 << 23)
            + self
                .next_synthetic
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

impl ProcessEnd {
    /// An end that is no exit: the stream to the command broke.
    fn failed(why: impl Into<String>) -> Self {
        Self {
            exit_code: -1,
            exited: false,
            status: "error".to_owned(),
            error: Some(why.into()),
        }
    }
}

/// [`ProcessTable::room_for`] in one sandbox's commands.
fn room_in(procs: &HashMap<u32, Arc<Process>>, tag: Option<&str>) -> Result<(), CoreError> {
    if procs.len() >= MAX_PER_SANDBOX {
        return Err(CoreError::ResourceExhausted(format!(
            "a sandbox runs at most {MAX_PER_SANDBOX} commands through envd at once"
        )));
    }
    match tag {
        Some(tag) if procs.values().any(|p| p.info.tag.as_deref() == Some(tag)) => Err(
            CoreError::Conflict(format!("a process with tag {tag:?} is running")),
        ),
        _ => Ok(()),
    }
}

fn not_found(selector: &ProcessSelector) -> CoreError {
    match selector {
        ProcessSelector::Pid(pid) => CoreError::not_found("process", pid),
        ProcessSelector::Tag(tag) => CoreError::not_found("process", tag),
    }
}

/// Quotes `word` for a POSIX shell.
fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The command line a PTY runs for `config`: its directory, variables
/// and command, with the shell's own quoting.
fn pty_command_line(config: &ProcessConfig) -> String {
    let mut line = String::new();
    if let Some(cwd) = &config.cwd {
        line.push_str(&format!("cd {} && ", shell_quote(cwd)));
    }
    line.push_str("exec ");
    if !config.envs.is_empty() {
        line.push_str("env ");
        for (k, v) in &config.envs {
            line.push_str(&shell_quote(&format!("{k}={v}")));
            line.push(' ');
        }
    }
    line.push_str(&shell_quote(&config.cmd));
    for a in &config.args {
        line.push(' ');
        line.push_str(&shell_quote(a));
    }
    line
}

fn end_of(status: &paddock_core::exec::ExitStatus) -> ProcessEnd {
    match (status.code, status.signal) {
        (Some(code), _) => ProcessEnd {
            exit_code: code,
            exited: true,
            status: format!("exit status {code}"),
            error: None,
        },
        (None, Some(sig)) => ProcessEnd {
            exit_code: -1,
            exited: false,
            status: format!("signal: {}", signal_name(sig)),
            error: None,
        },
        (None, None) => ProcessEnd {
            exit_code: -1,
            exited: false,
            status: "unknown".to_owned(),
            error: None,
        },
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        9 => "killed".to_owned(),
        15 => "terminated".to_owned(),
        2 => "interrupt".to_owned(),
        n => format!("signal {n}"),
    }
}

impl E2b {
    /// Starts a command in the sandbox; the stream starts with its pid.
    pub async fn start_process(
        &self,
        target: &EnvdTarget,
        start: ProcessStart,
    ) -> Result<ProcessStream, CoreError> {
        if start.config.cmd.is_empty() {
            return Err(CoreError::invalid("process.cmd", "must not be empty"));
        }
        // Refused before anything starts in the sandbox.
        self.processes.room_for(&target.vm, start.tag.as_deref())?;
        let (events, _) = broadcast::channel(FANOUT_CHUNKS);
        let (ended, _) = watch::channel(None);
        let vms = self.core.vms();
        let (process, feed) = if let Some(size) = start.pty {
            let spec = PtySpec {
                id: None,
                cols: size.cols,
                rows: size.rows,
                command: PtyCommand::CommandLine(pty_command_line(&start.config)),
            };
            let pty = vms.pty_create(&target.account, &target.vm, spec).await?;
            let conn = vms.pty_attach(&target.account, &target.vm, &pty.id).await?;
            let process = Arc::new(Process {
                info: ProcessInfo {
                    config: start.config,
                    pid: u32::try_from(pty.pid).unwrap_or(0),
                    tag: start.tag,
                },
                real_pid: pty.pid > 1,
                events,
                ended,
                input: Input::Pty {
                    id: pty.id.clone(),
                    input: conn.input,
                },
            });
            (process, Feed::Pty(conn.output))
        } else {
            let (stdin_tx, stdin_rx) = if start.stdin {
                let (tx, rx) = mpsc::channel(64);
                (Some(tx), Some(rx))
            } else {
                (None, None)
            };
            let (pid_tx, mut pid_rx) = tokio::sync::oneshot::channel();
            let env = start.config.envs.clone().into_iter().collect();
            let request = ExecRequest {
                argv: std::iter::once(start.config.cmd.clone())
                    .chain(start.config.args.iter().cloned())
                    .collect(),
                env,
                cwd: start.config.cwd.clone(),
                stdin: None,
                stdin_stream: stdin_rx,
                timeout: None,
                started: Some(pid_tx),
                user: start.user.clone(),
            };
            let stream = vms.exec(&target.account, &target.vm, request).await?;
            let told = pid_rx.try_recv().ok().and_then(|p| u32::try_from(p).ok());
            let pid = told.unwrap_or_else(|| self.processes.synthetic_pid());
            let process = Arc::new(Process {
                info: ProcessInfo {
                    config: start.config,
                    pid,
                    tag: start.tag,
                },
                real_pid: told.is_some(),
                events,
                ended,
                input: Input::Pipe(Mutex::new(stdin_tx)),
            });
            (process, Feed::Exec(stream))
        };
        let pid = process.info.pid;
        let first = process.connect();
        self.processes.insert(&target.vm, Arc::clone(&process))?;
        let _ = process.events.send(ProcessEvent::Start { pid });
        tokio::spawn(pump(
            Arc::clone(&process),
            feed,
            Arc::clone(&self.processes),
            target.vm.clone(),
        ));
        Ok(first)
    }

    /// The sandbox's command `selector` names.
    fn process(
        &self,
        target: &EnvdTarget,
        selector: &ProcessSelector,
    ) -> Result<Arc<Process>, CoreError> {
        self.processes
            .find(&target.vm, selector)
            .ok_or_else(|| not_found(selector))
    }

    /// Connects to a running command: its events from now on.
    pub fn connect_process(
        &self,
        target: &EnvdTarget,
        selector: &ProcessSelector,
    ) -> Result<(u32, ProcessStream), CoreError> {
        let p = self.process(target, selector)?;
        Ok((p.info.pid, p.connect()))
    }

    pub fn list_processes(&self, target: &EnvdTarget) -> Vec<ProcessInfo> {
        self.processes.list(&target.vm)
    }

    /// Sends bytes to a command's stdin or terminal.
    pub async fn send_input(
        &self,
        target: &EnvdTarget,
        selector: &ProcessSelector,
        data: Bytes,
        to_pty: bool,
    ) -> Result<(), CoreError> {
        let p = self.process(target, selector)?;
        let gone = || CoreError::FailedPrecondition("the process's input is closed".into());
        match (&p.input, to_pty) {
            (Input::Pipe(stdin), false) => {
                let tx = stdin
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                    .ok_or_else(|| {
                        CoreError::FailedPrecondition(
                            "the process was started without stdin, or its stdin was closed".into(),
                        )
                    })?;
                tx.send(data).await.map_err(|_| gone())
            }
            (Input::Pty { input, .. }, true) => {
                input.send(PtyInput::Data(data)).await.map_err(|_| gone())
            }
            (Input::Pipe(_), true) => Err(CoreError::invalid(
                "input.pty",
                "the process has no terminal; send stdin",
            )),
            (Input::Pty { .. }, false) => Err(CoreError::invalid(
                "input.stdin",
                "the process runs on a terminal; send pty input",
            )),
        }
    }

    /// Ends a command's stdin (EOF).
    pub fn close_stdin(
        &self,
        target: &EnvdTarget,
        selector: &ProcessSelector,
    ) -> Result<(), CoreError> {
        let p = self.process(target, selector)?;
        match &p.input {
            Input::Pipe(stdin) => {
                stdin.lock().unwrap_or_else(PoisonError::into_inner).take();
                Ok(())
            }
            Input::Pty { .. } => Err(CoreError::invalid(
                "process",
                "a terminal has no stdin to close; send Ctrl-D (0x04) instead",
            )),
        }
    }

    /// Resizes a command's terminal.
    pub async fn resize_pty(
        &self,
        target: &EnvdTarget,
        selector: &ProcessSelector,
        size: PtySize,
    ) -> Result<(), CoreError> {
        let p = self.process(target, selector)?;
        match &p.input {
            Input::Pty { id, .. } => {
                self.core
                    .vms()
                    .pty_resize(&target.account, &target.vm, id, size.cols, size.rows)
                    .await?;
                Ok(())
            }
            Input::Pipe(_) => Err(CoreError::invalid("pty", "the process has no terminal")),
        }
    }

    /// Sends `signal` (9 or 15) to a command and the processes it started.
    pub async fn signal_process(
        &self,
        target: &EnvdTarget,
        selector: &ProcessSelector,
        signal: i32,
    ) -> Result<(), CoreError> {
        let p = self.process(target, selector)?;
        if p.real_pid {
            let pid = i32::try_from(p.info.pid).unwrap_or(0);
            return self
                .core
                .vms()
                .signal_command(&target.account, &target.vm, pid, signal)
                .await;
        }
        if let Input::Pty { id, .. } = &p.input {
            return self
                .core
                .vms()
                .pty_kill(&target.account, &target.vm, id)
                .await;
        }
        Err(CoreError::FailedPrecondition(
            "this sandbox's provider cannot signal a command".into(),
        ))
    }
}

/// Where a command's output comes from.
enum Feed {
    Exec(paddock_core::exec::ExecStream),
    Pty(mpsc::Receiver<PtyOutput>),
}

/// Reads a command's output into its fan-out until it ends, then takes
/// it off the table (envd lists only what runs).
async fn pump(process: Arc<Process>, feed: Feed, table: Arc<ProcessTable>, vm: VmId) {
    let end = match feed {
        Feed::Exec(mut stream) => loop {
            match stream.recv().await {
                Some(Ok(ExecEvent::Stdout(b))) => {
                    let _ = process.events.send(ProcessEvent::Stdout(b));
                }
                Some(Ok(ExecEvent::Stderr(b))) => {
                    let _ = process.events.send(ProcessEvent::Stderr(b));
                }
                Some(Ok(ExecEvent::Exit(status))) => break end_of(&status),
                Some(Err(e)) => break ProcessEnd::failed(e.to_string()),
                None => break ProcessEnd::failed("the connection to the sandbox ended"),
            }
        },
        Feed::Pty(mut output) => loop {
            match output.recv().await {
                Some(PtyOutput::Data(b)) => {
                    let _ = process.events.send(ProcessEvent::Pty(b));
                }
                Some(PtyOutput::Exit(code)) => {
                    break ProcessEnd {
                        exit_code: code,
                        exited: true,
                        status: format!("exit status {code}"),
                        error: None,
                    }
                }
                None => break ProcessEnd::failed("the terminal's connection ended"),
            }
        },
    };
    table.remove(&vm, process.info.pid);
    let _ = process.ended.send(Some(end.clone()));
    let _ = process.events.send(ProcessEvent::End(end));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted() {
        assert_eq!(shell_quote("ls"), "ls");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn pty_lines_keep_directory_and_variables() {
        let mut envs = BTreeMap::new();
        envs.insert("A".to_owned(), "1 2".to_owned());
        let line = pty_command_line(&ProcessConfig {
            cmd: "/bin/bash".to_owned(),
            args: vec!["-i".to_owned()],
            envs,
            cwd: Some("/tmp/x y".to_owned()),
        });
        assert_eq!(line, "cd '/tmp/x y' && exec env 'A=1 2' /bin/bash -i");
    }

    #[test]
    fn exits_read_as_envd_reports_them() {
        let exited = paddock_core::exec::ExitStatus {
            code: Some(3),
            ..Default::default()
        };
        assert_eq!(end_of(&exited).status, "exit status 3");
        let killed = paddock_core::exec::ExitStatus {
            signal: Some(9),
            ..Default::default()
        };
        let end = end_of(&killed);
        assert!(!end.exited);
        assert_eq!(end.status, "signal: killed");
    }
}
