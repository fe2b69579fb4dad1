//! The few QMP (qemu's JSON machine protocol) commands paddock sends a
//! microVM: pause, hand it a descriptor, save into it or load from it,
//! continue, quit, and their status. Written here rather than taken from
//! a crate: it is line-delimited JSON over a unix socket, a handful of
//! commands and no more.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use paddock_core::RuntimeError;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

fn qmp_error(what: &str) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |e| RuntimeError::Agent(format!("qmp {what}: {e}"))
}

/// The bandwidth a save may use: more than any disk writes.
const MAX_SAVE_BYTES_PER_SECOND: u64 = 64 << 30;

pub struct Qmp {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Qmp {
    /// Connects to qemu's QMP socket at `path` (waiting up to `wait` for
    /// it to listen) and leaves the greeting's capability negotiation.
    pub async fn connect(path: &Path, wait: Duration) -> Result<Self, RuntimeError> {
        let deadline = Instant::now() + wait;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return Err(RuntimeError::Agent(format!(
                        "qemu's QMP socket {}: {e}",
                        path.display()
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let (read, writer) = stream.into_split();
        let mut qmp = Self {
            reader: BufReader::new(read),
            writer,
        };
        qmp.next_reply().await?; // the greeting
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs `command`; its `return` value, or qemu's error as a failure.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, RuntimeError> {
        let line = request_line(command, arguments);
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(qmp_error(command))?;
        self.reply_to(command).await
    }

    /// Hands qemu `fd` under `name` (`getfd`): the descriptor rides with
    /// the command as SCM_RIGHTS data, which tokio's streams cannot send.
    pub async fn pass_fd(&mut self, name: &str, fd: BorrowedFd<'_>) -> Result<(), RuntimeError> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let line = request_line("getfd", Some(json!({ "fdname": name })));
        let socket: &UnixStream = self.writer.as_ref();
        let fds = [fd.as_raw_fd()];
        let sent = loop {
            socket.writable().await.map_err(qmp_error("getfd"))?;
            let attempt = socket.try_io(tokio::io::Interest::WRITABLE, || {
                sendmsg::<()>(
                    socket.as_raw_fd(),
                    &[IoSlice::new(line.as_bytes())],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(std::io::Error::from)
            });
            match attempt {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(qmp_error("getfd")(e)),
            }
        };
        // The descriptor went with the first byte; the rest is plain.
        self.writer
            .write_all(&line.as_bytes()[sent..])
            .await
            .map_err(qmp_error("getfd"))?;
        self.reply_to("getfd").await.map(|_| ())
    }

    /// The reply to the command just sent.
    async fn reply_to(&mut self, command: &str) -> Result<Value, RuntimeError> {
        let reply = self.next_reply().await?;
        match reply.get("error") {
            Some(e) => Err(RuntimeError::Agent(format!(
                "qemu refused {command}: {}",
                e["desc"].as_str().unwrap_or("no reason given")
            ))),
            None => Ok(reply.get("return").cloned().unwrap_or(Value::Null)),
        }
    }

    /// The next line that is not an asynchronous event.
    async fn next_reply(&mut self) -> Result<Value, RuntimeError> {
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .await
                .map_err(qmp_error("read"))?;
            if n == 0 {
                return Err(RuntimeError::Agent("qemu closed its QMP socket".into()));
            }
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| RuntimeError::Agent(format!("qmp: a reply that is no JSON: {e}")))?;
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    }

    /// Saves the paused VM (memory and device state) into the descriptor
    /// handed to qemu as `fd_name`, returning once qemu has written it
    /// whole (and closed it).
    pub async fn save_into(
        &mut self,
        fd_name: &str,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        // qemu caps a migration at 128 MiB/s by default, a guard for live
        // migrations over a network; the VM is paused and the reader local.
        self.execute(
            "migrate-set-parameters",
            Some(json!({ "max-bandwidth": MAX_SAVE_BYTES_PER_SECOND })),
        )
        .await?;
        self.execute("migrate", Some(json!({ "uri": format!("fd:{fd_name}") })))
            .await?;
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.execute("query-migrate", None).await?;
            match status["status"].as_str() {
                Some("completed") => return Ok(()),
                Some("failed") | Some("cancelled") => {
                    return Err(RuntimeError::Agent(format!(
                        "qemu could not save the VM: {}",
                        status["error-desc"].as_str().unwrap_or("no reason given")
                    )))
                }
                _ if Instant::now() > deadline => {
                    let _ = self.execute("migrate_cancel", None).await;
                    return Err(RuntimeError::Agent(format!(
                        "saving the VM took longer than {}s",
                        timeout.as_secs()
                    )));
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Starts loading the VM a qemu started with `-incoming defer` waits
    /// for, from the descriptor handed to it as `fd_name`.
    pub async fn load_from(&mut self, fd_name: &str) -> Result<(), RuntimeError> {
        self.execute(
            "migrate-incoming",
            Some(json!({ "uri": format!("fd:{fd_name}") })),
        )
        .await
        .map(|_| ())
    }

    /// Waits until an incoming VM has loaded (qemu pauses it then).
    pub async fn wait_loaded(&mut self, timeout: Duration) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.execute("query-status", None).await?;
            match status["status"].as_str() {
                Some("inmigrate") if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Some("paused") | Some("postmigrate") | Some("running") => return Ok(()),
                other => {
                    return Err(RuntimeError::Agent(format!(
                        "the saved VM did not load (qemu is {})",
                        other.unwrap_or("in an unknown state")
                    )))
                }
            }
        }
    }
}

/// One QMP command as the line qemu reads.
fn request_line(command: &str, arguments: Option<Value>) -> String {
    let mut request = json!({ "execute": command });
    if let Some(a) = arguments {
        request["arguments"] = a;
    }
    let mut line = request.to_string();
    line.push('\n');
    line
}
