//! Observers of what happens in VMs: a product that records a VM's
//! activity (the tools product's tapes) sees each command, its output and
//! its end, a terminal's input and output, and each file transferred, as
//! they happen, whichever surface caused them. The core asks the
//! observers whether they watch a VM on each call; a VM nobody watches
//! costs that one check.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::component::Vms;
use crate::exec::{ExecEvent, ExecRequest, ExecStream, PtyConnection, PtyInput, PtyOutput};
use crate::ids::VmId;

/// One thing that happened in a VM.
#[derive(Debug, Clone)]
pub enum Activity {
    /// A command started; `exec` names it in the events that follow.
    ExecStarted {
        exec: u64,
        argv: Vec<String>,
        cwd: Option<String>,
    },
    ExecOutput {
        exec: u64,
        stderr: bool,
        data: Bytes,
    },
    /// It ended: its exit code, or the error that ended its stream.
    ExecEnded {
        exec: u64,
        exit_code: Option<i32>,
        timed_out: bool,
        took: Duration,
        error: Option<String>,
    },
    PtyInput {
        pty: String,
        data: Bytes,
    },
    PtyOutput {
        pty: String,
        data: Bytes,
    },
    /// A file was written into the VM, or read out of it.
    FileTransfer {
        path: String,
        upload: bool,
        bytes: u64,
    },
}

/// Something that watches VMs' activity.
pub trait ActivityObserver: Send + Sync {
    /// Whether it watches `vm` now; asked on every call, so cheap.
    fn observes(&self, vm: &VmId) -> bool;
    /// Told each thing that happens in a VM it watches, in order per
    /// command and per terminal; must not block. For the end of a step
    /// (a command's end, an upload) it may answer a receiver: the caller
    /// sees the step end only once it fires (or after [`SETTLE_MAX`]), so
    /// what the observer reads of the VM then (its files) is what the
    /// step left, before the caller's next step runs.
    fn observe(&self, vm: &VmId, activity: Activity) -> Option<Settled>;
}

/// Fires when an observer is done with the end of a step.
pub type Settled = tokio::sync::oneshot::Receiver<()>;

/// The longest a step's end waits for its observers.
pub const SETTLE_MAX: Duration = Duration::from_secs(30);

/// Who watches a command that is about to start, and what it runs.
pub(crate) struct ExecWatch {
    observers: Vec<Arc<dyn ActivityObserver>>,
    argv: Vec<String>,
    cwd: Option<String>,
}

/// The observers the composition root added.
#[derive(Default)]
pub(crate) struct Observers {
    all: RwLock<Vec<Arc<dyn ActivityObserver>>>,
    next_exec: std::sync::atomic::AtomicU64,
}

impl Observers {
    /// Those that watch `vm`; `None` when none does.
    fn of(&self, vm: &VmId) -> Option<Vec<Arc<dyn ActivityObserver>>> {
        let all = self
            .all
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let watching: Vec<_> = all.iter().filter(|o| o.observes(vm)).cloned().collect();
        (!watching.is_empty()).then_some(watching)
    }
}

/// Tells `activity` to each observer; those that want the caller to wait.
fn tell(observers: &[Arc<dyn ActivityObserver>], vm: &VmId, activity: Activity) -> Vec<Settled> {
    let mut waits = Vec::new();
    if let Some((last, rest)) = observers.split_last() {
        for o in rest {
            waits.extend(o.observe(vm, activity.clone()));
        }
        waits.extend(last.observe(vm, activity));
    }
    waits
}

/// Waits until every observer is done with a step's end, at most
/// [`SETTLE_MAX`] in all.
async fn settle(waits: Vec<Settled>) {
    if waits.is_empty() {
        return;
    }
    let all = futures::future::join_all(waits);
    if tokio::time::timeout(SETTLE_MAX, all).await.is_err() {
        tracing::warn!("an observer took over {SETTLE_MAX:?} with a step's end; going on");
    }
}

impl Vms {
    /// Adds an observer of every VM's activity.
    pub fn add_observer(&self, observer: Arc<dyn ActivityObserver>) {
        self.observers
            .all
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(observer);
    }

    /// The observers that watch `vm` now, and what they need to know of
    /// `request` (taken before the request goes to the sandbox).
    pub(crate) fn exec_watch(&self, vm: &VmId, request: &ExecRequest) -> Option<ExecWatch> {
        let observers = self.observers.of(vm)?;
        Some(ExecWatch {
            observers,
            argv: request.argv.clone(),
            cwd: request.cwd.clone(),
        })
    }

    /// `stream`, told to the watching observers event by event as the
    /// caller reads it (a forwarding task in between).
    pub(crate) fn observed_exec(
        &self,
        vm: &VmId,
        watch: ExecWatch,
        mut stream: ExecStream,
    ) -> ExecStream {
        let ExecWatch {
            observers,
            argv,
            cwd,
        } = watch;
        let exec = self
            .observers
            .next_exec
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = tell(&observers, vm, Activity::ExecStarted { exec, argv, cwd });
        let (tx, rx) = mpsc::channel(64);
        let vm = vm.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            let mut ended = false;
            while let Some(event) = stream.recv().await {
                let activity = match &event {
                    Ok(ExecEvent::Stdout(data)) => Activity::ExecOutput {
                        exec,
                        stderr: false,
                        data: data.clone(),
                    },
                    Ok(ExecEvent::Stderr(data)) => Activity::ExecOutput {
                        exec,
                        stderr: true,
                        data: data.clone(),
                    },
                    Ok(ExecEvent::Exit(status)) => {
                        ended = true;
                        Activity::ExecEnded {
                            exec,
                            exit_code: status.code,
                            timed_out: status.timed_out,
                            took: status.wall_time,
                            error: None,
                        }
                    }
                    Err(e) => {
                        ended = true;
                        Activity::ExecEnded {
                            exec,
                            exit_code: None,
                            timed_out: false,
                            took: started.elapsed(),
                            error: Some(e.to_string()),
                        }
                    }
                };
                // The end reaches the caller once the observers are done
                // with it.
                settle(tell(&observers, &vm, activity)).await;
                if tx.send(event).await.is_err() {
                    break;
                }
            }
            if !ended {
                let _ = tell(
                    &observers,
                    &vm,
                    Activity::ExecEnded {
                        exec,
                        exit_code: None,
                        timed_out: false,
                        took: started.elapsed(),
                        error: Some("the command's stream ended before its exit".into()),
                    },
                );
            }
        });
        rx
    }

    /// A file transfer, told to the VM's observers; returns once they are
    /// done with it.
    pub(crate) async fn observe_transfer(&self, vm: &VmId, path: &str, upload: bool, bytes: u64) {
        if let Some(observers) = self.observers.of(vm) {
            let waits = tell(
                &observers,
                vm,
                Activity::FileTransfer {
                    path: path.to_owned(),
                    upload,
                    bytes,
                },
            );
            settle(waits).await;
        }
    }

    /// `connection`, its input and output told to the VM's observers as
    /// they pass (a forwarding task each way), or as it is.
    pub(crate) fn observed_pty(
        &self,
        vm: &VmId,
        pty: &str,
        connection: PtyConnection,
    ) -> PtyConnection {
        let Some(observers) = self.observers.of(vm) else {
            return connection;
        };
        let PtyConnection {
            input: to_pty,
            output: mut from_pty,
        } = connection;
        let (input, mut typed) = mpsc::channel::<PtyInput>(64);
        let (to_caller, output) = mpsc::channel::<PtyOutput>(64);
        let (vm_in, pty_in, observers_in) = (vm.clone(), pty.to_owned(), observers.clone());
        tokio::spawn(async move {
            while let Some(message) = typed.recv().await {
                if let PtyInput::Data(data) = &message {
                    let _ = tell(
                        &observers_in,
                        &vm_in,
                        Activity::PtyInput {
                            pty: pty_in.clone(),
                            data: data.clone(),
                        },
                    );
                }
                if to_pty.send(message).await.is_err() {
                    break;
                }
            }
        });
        let (vm, pty) = (vm.clone(), pty.to_owned());
        tokio::spawn(async move {
            while let Some(message) = from_pty.recv().await {
                if let PtyOutput::Data(data) = &message {
                    let _ = tell(
                        &observers,
                        &vm,
                        Activity::PtyOutput {
                            pty: pty.clone(),
                            data: data.clone(),
                        },
                    );
                }
                if to_caller.send(message).await.is_err() {
                    break;
                }
            }
        });
        PtyConnection { input, output }
    }
}
