//! The wire protocol between the server and the agent.
//!
//! A connection carries one request. Every frame is
//! `[u32 big-endian length][u8 kind][payload]`, where the length counts the
//! kind byte and the payload. Control frames carry JSON ([`Request`] from
//! the server, [`Event`] from the agent); data frames carry raw bytes, so
//! file and output bytes are never re-encoded. A zero-length data frame
//! ends a data stream (stdin, an upload).
//!
//! Hand-written rather than a general RPC crate because it is a dozen
//! lines, streams bytes without copies or base64, and must stay small in
//! PID 1 of every sandbox.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;

pub const KIND_CONTROL: u8 = 0;
pub const KIND_STDOUT: u8 = 1;
pub const KIND_STDERR: u8 = 2;
pub const KIND_STDIN: u8 = 3;
pub const KIND_DATA: u8 = 4;

/// The largest frame either side accepts, but for the one below.
pub const MAX_FRAME: usize = 1024 * 1024 + 1;
/// The largest first frame of a connection (its request) the agent
/// accepts: a command's script travels in it, up to
/// [`MAX_COMMAND_BYTES`] before JSON's escapes (at most 6 bytes for one).
pub const MAX_REQUEST_FRAME: usize = 6 * MAX_COMMAND_BYTES + MAX_FRAME;
/// The most bytes of a command line (all its arguments) a caller may send;
/// the kernel's own limits (128 KiB per argument) are worked around for a
/// `-c` script, which the agent hands over as a file instead.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024 * 1024;
/// The size of data chunks the agent sends.
pub const CHUNK: usize = 256 * 1024;

/// Variables whose values may be secrets: `Debug` shows only the names.
#[derive(Clone, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct SecretVars(pub Vec<(String, String)>);

impl std::fmt::Debug for SecretVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    /// Adds variables to every later command's environment (kept in the
    /// agent's memory only).
    StageEnv {
        env: SecretVars,
    },
    /// Removes staged variables by name (a vault taken off the VM). An
    /// agent too old to know it answers an error, never ignores it.
    UnstageEnv {
        names: Vec<String>,
    },
    Exec {
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<String>,
        /// Stdin frames follow, ended by an empty one.
        stdin: bool,
        timeout_ms: Option<u64>,
        /// Runs as this user of the sandbox (`name`, `uid`, `name:group`)
        /// instead of its default one; an older server sends none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// Starts a job: a command that outlives this connection, its output
    /// kept in the agent (see `serve/jobs.rs`). Answers `Started`.
    JobStart {
        id: String,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<String>,
    },
    /// Streams a job's output from these byte offsets, live, then its
    /// `Exit`, as an exec does; answers `Ok` first.
    JobAttach {
        id: String,
        stdout_from: u64,
        stderr_from: u64,
    },
    ReadFile {
        path: String,
    },
    /// Data frames follow, ended by an empty one.
    WriteFile {
        path: String,
        mode: Option<u32>,
    },
    PtyCreate {
        id: String,
        cols: u16,
        rows: u16,
        command: PtyCommand,
    },
    PtyList,
    PtyGet {
        id: String,
    },
    PtyResize {
        id: String,
        cols: u16,
        rows: u16,
    },
    PtyKill {
        id: String,
    },
    /// Input frames (stdin kind) and `Resize` controls follow.
    PtyAttach {
        id: String,
    },
    /// A control frame on an attached PTY.
    Resize {
        cols: u16,
        rows: u16,
    },
    /// Freezes the sandbox's own disk (a microVM's writable disk): its
    /// writes are flushed and the file system is left clean on the device,
    /// later writers wait, until it is thawed. Idempotent both ways.
    /// Answers `Ok`, or an error where the sandbox has no such disk.
    FreezeDisk {
        frozen: bool,
    },
    /// Sends `signal` to the process group that `pid` leads: a command
    /// this agent started (an exec's, a job's or a PTY's). Answers `Ok`;
    /// `NotFound` when no such group is left. PID 1 is refused.
    Signal {
        pid: i32,
        signal: i32,
    },
    /// Describes one path without following its last symlink. Answers
    /// `Entry`.
    Stat {
        path: String,
    },
    /// Creates a directory and its parents. Answers `Entry`, or an
    /// `Exists` error when the directory was already there.
    MakeDir {
        path: String,
    },
    /// Renames `from` to `to` (replacing a file there), creating `to`'s
    /// parents. Answers `Entry` for `to`.
    Rename {
        from: String,
        to: String,
    },
    /// Removes a file, a symlink or a whole directory tree. Answers `Ok`.
    Remove {
        path: String,
    },
    /// Watches a directory (and with `recursive` its subdirectories):
    /// answers `Ok`, then a `Changed` for each change until the caller
    /// closes the connection.
    Watch {
        path: String,
        recursive: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum PtyCommand {
    DefaultShell,
    Shell(String),
    CommandLine(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    PermissionDenied,
    IsADirectory,
    NotADirectory,
    Invalid,
    Exists,
    Other,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    /// `file`, `directory`, `symlink` or `other`.
    pub kind: String,
    pub size: u64,
    pub mode: u32,
    pub modified_unix: i64,
    /// The owner's and group's names in the sandbox's account files (the
    /// number where it has no name); empty from an older agent.
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub group: String,
    /// Where a symlink points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PtyInfo {
    pub id: String,
    pub pid: i32,
    pub cols: u16,
    pub rows: u16,
    pub alive: bool,
    pub exit_code: Option<i32>,
    pub command: Vec<String>,
    pub created_at_unix: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Pong,
    Ok,
    Error {
        kind: ErrorKind,
        message: String,
    },
    Started {
        pid: i32,
    },
    Exit {
        code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
        wall_ms: u64,
        cpu_ms: u64,
    },
    /// A file follows as data frames, then `Done`.
    File {
        size: u64,
        mode: u32,
    },
    Listing {
        entries: Vec<DirEntry>,
    },
    /// One path, answering `Stat`, `MakeDir` and `Rename`; `name` is its
    /// whole path.
    Entry(Box<DirEntry>),
    /// A change under a watched directory: `name` is relative to it;
    /// `change` is `create`, `write`, `remove`, `rename` or `chmod`.
    Changed {
        name: String,
        change: String,
    },
    Done,
    Written {
        bytes: u64,
    },
    Pty(PtyInfo),
    PtyList {
        sessions: Vec<PtyInfo>,
    },
    PtyExit {
        code: i32,
    },
}

impl Event {
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Error {
            kind,
            message: message.into(),
        }
    }

    pub fn from_io(e: &io::Error, what: &str) -> Self {
        let kind = match e.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            io::ErrorKind::IsADirectory => ErrorKind::IsADirectory,
            io::ErrorKind::NotADirectory => ErrorKind::NotADirectory,
            io::ErrorKind::AlreadyExists => ErrorKind::Exists,
            // E2BIG: an argument past the kernel's 128 KiB that is not a
            // `-c` script the agent hands over as a file; the caller's to fix.
            io::ErrorKind::InvalidInput | io::ErrorKind::ArgumentListTooLong => ErrorKind::Invalid,
            _ => ErrorKind::Other,
        };
        Self::error(kind, format!("{what}: {e}"))
    }
}

/// One frame as read: its kind and payload.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub payload: Bytes,
}

impl Frame {
    pub fn control<T: for<'de> Deserialize<'de>>(&self) -> io::Result<T> {
        if self.kind != KIND_CONTROL {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected a control frame, got kind {}", self.kind),
            ));
        }
        serde_json::from_slice(&self.payload)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// The length a frame header announces, refused when out of range.
fn frame_len(header: [u8; 4], max: usize) -> io::Result<usize> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 || len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame length {len} out of range"),
        ));
    }
    Ok(len)
}

/// Reads one frame; `None` at a clean end of stream.
///
/// Not cancel-safe: a frame partly read when the future is dropped is
/// lost. Where a read races other work in `select!`, read through
/// [`FrameCodec`] instead.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Frame>> {
    read_frame_max(r, MAX_FRAME).await
}

/// [`read_frame`] with another limit: the agent reads a request with
/// [`MAX_REQUEST_FRAME`].
pub async fn read_frame_max<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> io::Result<Option<Frame>> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut buf = BytesMut::zeroed(frame_len(header, max)?);
    r.read_exact(&mut buf).await?;
    let payload = buf.split_off(1).freeze();
    Ok(Some(Frame {
        kind: buf[0],
        payload,
    }))
}

/// Frames decoded from a buffered byte stream. Through
/// `tokio_util::codec::FramedRead`, whose `next()` keeps a partly received
/// frame in its buffer when dropped, so it is safe in `select!`.
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Frame>> {
        let Some(header) = src.get(..4) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(header);
        let len = frame_len(len_bytes, MAX_FRAME)?;
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        let mut body = src.split_to(len);
        let kind = body[0];
        body.advance(1);
        Ok(Some(Frame {
            kind,
            payload: body.freeze(),
        }))
    }
}

/// Writes a data frame of `kind` (an empty `data` ends a stream).
pub async fn write_data<W: AsyncWrite + Unpin>(w: &mut W, kind: u8, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len() + 1)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&len.to_be_bytes());
    head[4] = kind;
    w.write_all(&head).await?;
    w.write_all(data).await
}

pub async fn write_control<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> io::Result<()> {
    let json =
        serde_json::to_vec(msg).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    write_data(w, KIND_CONTROL, &json).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_control(&mut a, &Request::ReadFile { path: "/x".into() })
            .await
            .expect("write");
        write_data(&mut a, KIND_DATA, b"hello")
            .await
            .expect("write");
        write_data(&mut a, KIND_DATA, b"").await.expect("write");
        drop(a);
        let f = read_frame(&mut b).await.expect("read").expect("frame");
        match f.control::<Request>().expect("json") {
            Request::ReadFile { path } => assert_eq!(path, "/x"),
            other => panic!("unexpected {other:?}"),
        }
        let f = read_frame(&mut b).await.expect("read").expect("frame");
        assert_eq!((f.kind, &f.payload[..]), (KIND_DATA, &b"hello"[..]));
        let f = read_frame(&mut b).await.expect("read").expect("frame");
        assert!(f.payload.is_empty());
        assert!(read_frame(&mut b).await.expect("read").is_none());
    }

    #[tokio::test]
    async fn oversized_and_empty_frames_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
        assert!(read_frame(&mut b).await.is_err());
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&0u32.to_be_bytes()).await.expect("write");
        assert!(read_frame(&mut b).await.is_err());
    }

    /// The regression behind a PTY that lost its exit event: a frame whose
    /// header and payload arrive apart, with the read abandoned in between
    /// (as `select!` does when output wins), must still decode whole.
    #[tokio::test]
    async fn codec_keeps_a_frame_split_by_an_abandoned_read() {
        use futures::StreamExt;
        use tokio_util::codec::FramedRead;

        let (mut a, b) = tokio::io::duplex(64);
        let mut frames = FramedRead::new(b, FrameCodec);
        a.write_all(&[0, 0, 0, 6, KIND_STDIN]).await.expect("write");
        let abandoned =
            tokio::time::timeout(std::time::Duration::from_millis(20), frames.next()).await;
        assert!(abandoned.is_err(), "no whole frame has arrived yet");
        a.write_all(b"hello").await.expect("write");
        write_data(&mut a, KIND_DATA, b"next").await.expect("write");
        let f = frames.next().await.expect("frame").expect("decode");
        assert_eq!((f.kind, &f.payload[..]), (KIND_STDIN, &b"hello"[..]));
        let f = frames.next().await.expect("frame").expect("decode");
        assert_eq!((f.kind, &f.payload[..]), (KIND_DATA, &b"next"[..]));
        drop(a);
        assert!(frames.next().await.is_none());
    }

    #[test]
    fn codec_refuses_out_of_range_lengths() {
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert!(FrameCodec.decode(&mut buf).is_err());
        let mut buf = BytesMut::from(&0u32.to_be_bytes()[..]);
        assert!(FrameCodec.decode(&mut buf).is_err());
    }
}
