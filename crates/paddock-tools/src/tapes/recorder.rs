//! The recorder: the core's observer of the VMs that tapes record. What a
//! VM does arrives here as it happens ([`Activity`]); each recording tape
//! has a task that turns it into events — a command when it ends, with
//! its output; terminal input and output gathered into one event per
//! burst; a file moved in or out — and, with `record_fs`, takes the
//! files' checkpoint after each step that may have changed them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use paddock_core::clock::Timestamp;
use paddock_core::ids::{AccountId, VmId};
use paddock_core::network_backend::EgressFlow;
use paddock_core::service::Service;
use paddock_core::vms::observers::{Activity, ActivityObserver, Settled};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::checkpoints::CheckpointStore;
use super::{next_step, note_stored, record, Checkpoint, Pending, Tape};

/// The most bytes of each output stream a command's event keeps.
const OUTPUT_KEPT: usize = 64 << 10;

/// Terminal traffic is one event per burst: this long without more ends
/// one.
const PTY_QUIET: Duration = Duration::from_millis(250);

/// ... or this many bytes.
const PTY_BURST_MAX: usize = 16 << 10;

/// A tape being recorded, as the observer holds it.
/// What happened, and who waits for the step it ends to be recorded.
type Told = (Activity, Option<oneshot::Sender<()>>);

struct Active {
    tape: String,
    activity: mpsc::UnboundedSender<Told>,
    done: tokio::task::JoinHandle<()>,
}

pub(crate) struct Recorder {
    core: Arc<Service>,
    dir: PathBuf,
    active: RwLock<HashMap<VmId, Active>>,
}

impl ActivityObserver for Recorder {
    fn observes(&self, vm: &VmId) -> bool {
        self.read().contains_key(vm)
    }

    fn observe(&self, vm: &VmId, activity: Activity) -> Option<Settled> {
        let all = self.read();
        let active = all.get(vm)?;
        // A step's end waits for its event and checkpoint, so the
        // checkpoint holds what the step left, not what came after.
        let ends_step = matches!(
            activity,
            Activity::ExecEnded { .. } | Activity::FileTransfer { upload: true, .. }
        );
        let (done, settled) = if ends_step {
            let (done, settled) = oneshot::channel();
            (Some(done), Some(settled))
        } else {
            (None, None)
        };
        let _ = active.activity.send((activity, done));
        settled
    }
}

impl Recorder {
    pub(crate) fn new(core: Arc<Service>, dir: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            core,
            dir,
            active: RwLock::default(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<VmId, Active>> {
        self.active
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<VmId, Active>> {
        self.active
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The tape that records `vm`, if one does.
    pub(crate) fn tape_of(&self, vm: &VmId) -> Option<String> {
        self.read().get(vm).map(|a| a.tape.clone())
    }

    /// Records `tape`'s VM from now on.
    pub(crate) fn watch(&self, tape: &Tape) {
        let (activity, incoming) = mpsc::unbounded_channel();
        let taping = Taping {
            core: Arc::clone(&self.core),
            account: tape.account_id.clone(),
            tape: tape.id.clone(),
            vm: tape.vm_id.clone(),
            store: tape
                .record_fs
                .then(|| CheckpointStore::new(self.dir.join(&tape.id))),
            egress_content: tape.record_egress_content,
            execs: HashMap::new(),
            ptys: HashMap::new(),
        };
        let done = tokio::spawn(taping.run(incoming));
        self.write().insert(
            tape.vm_id.clone(),
            Active {
                tape: tape.id.clone(),
                activity,
                done,
            },
        );
    }

    /// Stops recording tape `id`, once what it was told is written.
    pub(crate) async fn unwatch(&self, id: &str) {
        let active = {
            let mut all = self.write();
            let vm = all
                .iter()
                .find(|(_, a)| a.tape == id)
                .map(|(vm, _)| vm.clone());
            vm.and_then(|vm| all.remove(&vm))
        };
        if let Some(Active { activity, done, .. }) = active {
            drop(activity);
            let _ = tokio::time::timeout(Duration::from_secs(30), done).await;
        }
    }
}

/// A command under way.
struct ExecBuffer {
    argv: Vec<String>,
    cwd: Option<String>,
    started_at: Timestamp,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_bytes: u64,
    stderr_bytes: u64,
}

/// A terminal's burst of traffic, one direction.
struct PtyBurst {
    input: Vec<u8>,
    output: Vec<u8>,
    last: Instant,
}

/// One tape's recording task.
struct Taping {
    core: Arc<Service>,
    account: AccountId,
    tape: String,
    vm: VmId,
    /// Where checkpoints go, while the tape takes them.
    store: Option<CheckpointStore>,
    /// Keep what egress connections carried.
    egress_content: bool,
    execs: HashMap<u64, ExecBuffer>,
    ptys: HashMap<String, PtyBurst>,
}

/// What a person would type to run `argv`: a shell's `-c` script as it
/// is, anything else its words joined.
fn command_line(argv: &[String]) -> String {
    match argv {
        [shell, flag, script, ..] if flag == "-c" && shell.ends_with("sh") => script.clone(),
        _ => argv.join(" "),
    }
}

fn keep(buffer: &mut Vec<u8>, data: &[u8]) {
    let room = OUTPUT_KEPT.saturating_sub(buffer.len());
    buffer.extend_from_slice(&data[..data.len().min(room)]);
}

impl Taping {
    async fn run(mut self, mut incoming: mpsc::UnboundedReceiver<Told>) {
        let mut tick = tokio::time::interval(PTY_QUIET);
        let mut flows = match self
            .core
            .vms()
            .watch_egress(&self.account, &self.vm, self.egress_content)
            .await
        {
            Ok(flows) => Some(flows),
            Err(e) => {
                tracing::info!(tape = %self.tape, reason = %e, "a tape records no egress");
                None
            }
        };
        loop {
            let flow = async {
                match flows.as_mut() {
                    Some(flows) => flows.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                told = incoming.recv() => match told {
                    Some((activity, done)) => {
                        self.take(activity).await;
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                    }
                    None => break,
                },
                flow = flow => match flow {
                    Some(flow) => self.egress(flow).await,
                    None => flows = None,
                },
                _ = tick.tick() => self.flush_ptys(false).await,
            }
        }
        self.flush_ptys(true).await;
    }

    /// Records one connection the VM made.
    async fn egress(&mut self, flow: EgressFlow) {
        use base64::Engine;
        let b64 = |b: &Option<bytes::Bytes>| {
            b.as_ref()
                .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
        };
        let mut payload = json!({
            "protocol": flow.protocol,
            "host": flow.host,
            "ip": flow.remote.ip().to_string(),
            "port": flow.remote.port(),
            "local_port": flow.local_port,
            "bytes_out": flow.bytes_out,
            "bytes_in": flow.bytes_in,
            "established": flow.established,
            "started_at": flow.started_at.to_rfc3339(),
            "duration_ms": u64::try_from(flow.duration.as_millis()).unwrap_or(u64::MAX),
        });
        if self.egress_content {
            payload["content_out_b64"] = json!(b64(&flow.content_out));
            payload["content_in_b64"] = json!(b64(&flow.content_in));
        }
        self.step("egress", payload, false).await;
    }

    async fn take(&mut self, activity: Activity) {
        match activity {
            Activity::ExecStarted { exec, argv, cwd } => {
                self.execs.insert(
                    exec,
                    ExecBuffer {
                        argv,
                        cwd,
                        started_at: Timestamp::now(),
                        stdout: Vec::new(),
                        stderr: Vec::new(),
                        stdout_bytes: 0,
                        stderr_bytes: 0,
                    },
                );
            }
            Activity::ExecOutput { exec, stderr, data } => {
                if let Some(b) = self.execs.get_mut(&exec) {
                    if stderr {
                        b.stderr_bytes += data.len() as u64;
                        keep(&mut b.stderr, &data);
                    } else {
                        b.stdout_bytes += data.len() as u64;
                        keep(&mut b.stdout, &data);
                    }
                }
            }
            Activity::ExecEnded {
                exec,
                exit_code,
                timed_out,
                took,
                error,
            } => {
                let Some(b) = self.execs.remove(&exec) else {
                    return;
                };
                let payload = json!({
                    "command": command_line(&b.argv),
                    "argv": b.argv,
                    "cwd": b.cwd,
                    "stdout": String::from_utf8_lossy(&b.stdout),
                    "stderr": String::from_utf8_lossy(&b.stderr),
                    "stdout_bytes": b.stdout_bytes,
                    "stderr_bytes": b.stderr_bytes,
                    "truncated": b.stdout_bytes as usize > OUTPUT_KEPT || b.stderr_bytes as usize > OUTPUT_KEPT,
                    "exit_code": exit_code,
                    "timed_out": timed_out,
                    "duration_ms": u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                    "started_at": b.started_at.to_rfc3339(),
                    "error": error,
                });
                self.step("exec", payload, true).await;
            }
            Activity::FileTransfer {
                path,
                upload,
                bytes,
            } => {
                let kind = if upload {
                    "file_upload"
                } else {
                    "file_download"
                };
                self.step(kind, json!({"path": path, "bytes": bytes}), upload)
                    .await;
            }
            Activity::PtyInput { pty, data } => {
                let burst = self.burst(&pty);
                burst.input.extend_from_slice(&data);
                if burst.input.len() >= PTY_BURST_MAX {
                    self.flush_pty(&pty).await;
                }
            }
            Activity::PtyOutput { pty, data } => {
                let burst = self.burst(&pty);
                burst.output.extend_from_slice(&data);
                if burst.output.len() >= PTY_BURST_MAX {
                    self.flush_pty(&pty).await;
                }
            }
        }
    }

    fn burst(&mut self, pty: &str) -> &mut PtyBurst {
        let burst = self.ptys.entry(pty.to_owned()).or_insert_with(|| PtyBurst {
            input: Vec::new(),
            output: Vec::new(),
            last: Instant::now(),
        });
        burst.last = Instant::now();
        burst
    }

    async fn flush_ptys(&mut self, all: bool) {
        let quiet: Vec<String> = self
            .ptys
            .iter()
            .filter(|(_, b)| all || b.last.elapsed() >= PTY_QUIET)
            .map(|(pty, _)| pty.clone())
            .collect();
        for pty in quiet {
            self.flush_pty(&pty).await;
        }
    }

    /// Writes a terminal's burst: its input, then its output (after which
    /// the files may have changed).
    async fn flush_pty(&mut self, pty: &str) {
        let Some(burst) = self.ptys.remove(pty) else {
            return;
        };
        if !burst.input.is_empty() {
            let payload = json!({"pty": pty, "data": String::from_utf8_lossy(&burst.input), "bytes": burst.input.len()});
            self.step("pty_input", payload, false).await;
        }
        if !burst.output.is_empty() {
            let payload = json!({"pty": pty, "data": String::from_utf8_lossy(&burst.output), "bytes": burst.output.len()});
            self.step("pty_output", payload, true).await;
        }
    }

    /// Records one step; with `may_change_files`, the files' checkpoint
    /// after it.
    async fn step(&mut self, kind: &str, payload: Value, may_change_files: bool) {
        let step = match next_step(&self.core, &self.account, &self.tape).await {
            Ok(step) => step,
            Err(e) => {
                tracing::warn!(tape = %self.tape, error = %e, "a tape could not record a step");
                return;
            }
        };
        let checkpoint = match (&self.store, may_change_files) {
            (Some(_), true) => self.checkpoint(step).await,
            _ => None,
        };
        let pending = Pending {
            step: Some(step),
            parent_step_id: None,
            kind: kind.to_owned(),
            payload,
            checkpoint,
        };
        if let Err(e) = record(&self.core, &self.account, &self.tape, pending).await {
            tracing::warn!(tape = %self.tape, error = %e, "a tape could not record an event");
        }
    }

    /// Takes the files' checkpoint for `step`: `Some` when anything
    /// changed. A failure stops the tape's checkpoints, naming why.
    async fn checkpoint(&mut self, step: u64) -> Option<Checkpoint> {
        let store = self.store.clone()?;
        let captured = self
            .core
            .vms()
            .read_changes(&self.account, &self.vm, async |trees| {
                tokio::task::block_in_place(|| store.capture(trees, step))
            })
            .await;
        let (changed, stored, error) = match captured {
            Ok(Ok((delta, stored))) => (!delta.is_empty(), stored, None),
            Ok(Err(e)) => (false, 0, Some(format!("a checkpoint failed: {e}"))),
            Err(e) => (false, 0, Some(format!("a checkpoint failed: {e}"))),
        };
        match note_stored(&self.core, &self.account, &self.tape, stored, error).await {
            Ok(true) => {}
            _ => self.store = None,
        }
        changed.then_some(Checkpoint::Taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_script_is_shown_as_written() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_line(&argv(&["bash", "-c", "echo hi > f"])),
            "echo hi > f"
        );
        assert_eq!(command_line(&argv(&["/bin/sh", "-c", "ls", "sh"])), "ls");
        assert_eq!(
            command_line(&argv(&["python3", "-c", "print(1)"])),
            "python3 -c print(1)"
        );
        assert_eq!(command_line(&argv(&["ls", "-la"])), "ls -la");
    }

    #[test]
    fn output_is_kept_up_to_its_limit() {
        let mut kept = Vec::new();
        keep(&mut kept, &vec![b'a'; OUTPUT_KEPT - 2]);
        keep(&mut kept, b"bcde");
        assert_eq!(kept.len(), OUTPUT_KEPT);
        assert!(kept.ends_with(b"bc"));
    }
}
