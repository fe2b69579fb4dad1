//! Commands, files and terminals inside a sandbox, as the core sees them.

use std::path::{Component, Path};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

use crate::error::{CoreError, RuntimeError};
use crate::ids::PtyId;

/// A command to run in a sandbox.
#[derive(Debug, Default)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// Its whole stdin, known up front.
    pub stdin: Option<Bytes>,
    /// Or its stdin as it comes (an SSH channel's input); the sender's
    /// drop is end of input.
    pub stdin_stream: Option<mpsc::Receiver<Bytes>>,
    pub timeout: Option<Duration>,
    /// Told the command's process id once it started (it leads its own
    /// process group, which [`PathOp`]'s sibling `signal` reaches);
    /// dropped unanswered where the provider cannot say.
    pub started: Option<tokio::sync::oneshot::Sender<i32>>,
    /// The sandbox user it runs as; the sandbox's default one when `None`.
    pub user: Option<String>,
}

/// The most bytes a command line (all its arguments together) may have.
/// A long `-c` script is handed to its interpreter as a file by the agent,
/// so this, not the kernel's 128 KiB per argument, is the limit callers
/// see. The agent protocol's `MAX_COMMAND_BYTES` is the same number.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024 * 1024;

impl ExecRequest {
    /// Refuses an empty command or one over [`MAX_COMMAND_BYTES`], naming
    /// the size.
    pub fn check(&self) -> Result<(), crate::CoreError> {
        if self.argv.first().is_none_or(String::is_empty) {
            return Err(crate::CoreError::invalid("command", "must not be empty"));
        }
        let bytes: usize = self.argv.iter().map(String::len).sum();
        if bytes > MAX_COMMAND_BYTES {
            return Err(crate::CoreError::invalid(
                "command",
                format!(
                    "the command is {bytes} bytes; at most {MAX_COMMAND_BYTES} (16 MiB) are accepted"
                ),
            ));
        }
        Ok(())
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// The kernel's OOM killer ended a process of the sandbox while this
    /// command ran.
    pub oom_killed: bool,
    pub wall_time: Duration,
    pub cpu_time: Duration,
}

impl ExitStatus {
    /// The shell's convention: the exit code, or 128 + the signal number.
    pub fn exit_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => -1,
        }
    }
}

/// One event of a running command, in order; `Exit` is last.
#[derive(Debug, Clone)]
pub enum ExecEvent {
    Stdout(Bytes),
    Stderr(Bytes),
    Exit(ExitStatus),
}

pub type ExecStream = mpsc::Receiver<Result<ExecEvent, RuntimeError>>;

/// A byte stream in or out of a sandbox.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// A path inside a sandbox: absolute, normalized, without `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPath(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPath(pub &'static str);

impl SandboxPath {
    pub fn parse(raw: &str) -> Result<Self, InvalidPath> {
        if raw.is_empty() {
            return Err(InvalidPath("path is empty"));
        }
        if raw.len() > 4096 || raw.contains('\0') {
            return Err(InvalidPath(
                "path is longer than 4096 bytes or has a NUL byte",
            ));
        }
        if !raw.starts_with('/') {
            return Err(InvalidPath("path must be absolute"));
        }
        let mut parts = Vec::new();
        for c in Path::new(raw).components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
                Component::ParentDir => {
                    return Err(InvalidPath("path must not contain '..' (path traversal)"))
                }
                Component::Prefix(_) => return Err(InvalidPath("path prefix not allowed")),
            }
        }
        Ok(Self(format!("/{}", parts.join("/"))))
    }

    /// A relative path (as `/upload`'s `remote_path` may be) is taken as
    /// relative to `base`.
    pub fn parse_relative_to(raw: &str, base: &str) -> Result<Self, InvalidPath> {
        if raw.starts_with('/') {
            Self::parse(raw)
        } else {
            Self::parse(&format!("{}/{}", base.trim_end_matches('/'), raw))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    Other,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Directory => "directory",
            Self::Symlink => "symlink",
            Self::Other => "other",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    pub modified_unix: i64,
    /// The owner's and group's names in the sandbox (empty where the
    /// provider does not say).
    pub owner: String,
    pub group: String,
    pub symlink_target: Option<String>,
}

/// A change under a watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathChange {
    /// Relative to the watched directory.
    pub name: String,
    pub kind: PathChangeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathChangeKind {
    Create,
    Write,
    Remove,
    Rename,
    Chmod,
}

impl PathChangeKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "create" => Self::Create,
            "write" => Self::Write,
            "remove" => Self::Remove,
            "rename" => Self::Rename,
            "chmod" => Self::Chmod,
            _ => return None,
        })
    }
}

/// A change to, or a look at, one path in a sandbox.
#[derive(Debug, Clone)]
pub enum PathOp {
    /// The path's own entry (a final symlink not followed).
    Stat(SandboxPath),
    /// Creates a directory and its parents; `Exists` when it is there.
    MakeDir(SandboxPath),
    /// Moves `from` to `to`, creating `to`'s parents.
    Rename { from: SandboxPath, to: SandboxPath },
    /// Removes a file, a symlink or a directory tree.
    Remove(SandboxPath),
}

/// What reading a path gives: a file's bytes as a stream, or a listing.
pub enum FileContent {
    File {
        size: u64,
        mode: u32,
        data: ByteStream,
    },
    Directory(Vec<DirEntry>),
}

/// What to run in a new PTY session.
#[derive(Debug, Clone)]
pub enum PtyCommand {
    /// The sandbox's login shell (`/bin/bash -il`, or `/bin/sh -i`).
    DefaultShell,
    /// A shell program, run directly and interactively.
    Shell(String),
    /// A command line, run with `/bin/bash -lc` (or `/bin/sh -c`).
    CommandLine(String),
}

#[derive(Debug, Clone)]
pub struct PtySpec {
    pub id: Option<PtyId>,
    pub cols: u16,
    pub rows: u16,
    pub command: PtyCommand,
}

/// A PTY session as the VM API shows it (inside its `PtyResponse`).
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PtyInfo {
    pub id: String,
    pub pid: i32,
    pub cols: u16,
    pub rows: u16,
    pub alive: bool,
    pub exit_code: Option<i32>,
    pub command: Vec<String>,
    #[serde(rename = "created_at")]
    pub created_at_unix: i64,
}

#[derive(Debug, Clone)]
pub enum PtyInput {
    Data(Bytes),
    Resize { cols: u16, rows: u16 },
}

#[derive(Debug, Clone)]
pub enum PtyOutput {
    Data(Bytes),
    Exit(i32),
}

/// Both directions of an attached terminal.
pub struct PtyConnection {
    pub input: mpsc::Sender<PtyInput>,
    pub output: mpsc::Receiver<PtyOutput>,
}

/// Output collected from a finished command; each stream keeps at most
/// `ServiceConfig::max_collected_output` bytes.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub stdout: Bytes,
    pub stderr: Bytes,
    pub truncated: bool,
    pub status: ExitStatus,
}

/// Why a command's record ends without its exit.
pub const NO_EXIT: &str = "the command's output ended without an exit status";

/// Appends `chunk` to `text` within `cap` bytes; whether it was cut.
pub fn append(text: &mut Vec<u8>, chunk: &Bytes, cap: usize) -> bool {
    let room = cap.saturating_sub(text.len());
    text.extend_from_slice(&chunk[..chunk.len().min(room)]);
    chunk.len() > room
}

/// Drains an exec stream, keeping at most `cap` bytes of each output.
pub async fn collect_output(mut stream: ExecStream, cap: usize) -> Result<ExecOutput, CoreError> {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut truncated = false;
    while let Some(event) = stream.recv().await {
        match event? {
            ExecEvent::Stdout(b) => truncated |= append(&mut stdout, &b, cap),
            ExecEvent::Stderr(b) => truncated |= append(&mut stderr, &b, cap),
            ExecEvent::Exit(status) => {
                return Ok(ExecOutput {
                    stdout: Bytes::from(stdout),
                    stderr: Bytes::from(stderr),
                    truncated,
                    status,
                })
            }
        }
    }
    Err(CoreError::Runtime(RuntimeError::Agent(NO_EXIT.into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_kept_within_its_cap() {
        let mut text = b"ab".to_vec();
        assert!(!append(&mut text, &Bytes::from_static(b"cd"), 4));
        assert!(append(&mut text, &Bytes::from_static(b"ef"), 4));
        assert_eq!(text, b"abcd");
    }

    #[test]
    fn paths_are_normalized() {
        assert_eq!(
            SandboxPath::parse("/a//b/./c").map(|p| p.0),
            Ok("/a/b/c".into())
        );
        assert_eq!(SandboxPath::parse("/").map(|p| p.0), Ok("/".into()));
    }

    #[test]
    fn traversal_and_relative_paths_are_refused() {
        for bad in ["", "a/b", "/a/../../etc/passwd", "/..", "/a\0b"] {
            assert!(SandboxPath::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            SandboxPath::parse_relative_to("x.txt", "/root").map(|p| p.0),
            Ok("/root/x.txt".into())
        );
        assert!(SandboxPath::parse_relative_to("../x", "/root").is_err());
    }

    #[test]
    fn exit_code_follows_shell_convention() {
        let s = ExitStatus {
            signal: Some(9),
            ..Default::default()
        };
        assert_eq!(s.exit_code(), 137);
    }
}
