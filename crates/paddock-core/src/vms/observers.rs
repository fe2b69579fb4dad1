//! `Vms`' side of its observers ([`super::observing`]): adding one, and
//! the commands, terminals and transfers it tells them of.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::component::Vms;
use super::observing::{settle, tell, ExecWatch};
use crate::exec::{ExecEvent, ExecRequest, ExecStream, PtyConnection, PtyInput, PtyOutput};
use crate::ids::VmId;

pub use super::observing::{Activity, ActivityObserver, Settled, SETTLE_MAX};

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
