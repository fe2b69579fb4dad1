//! Recording a command's run as an [`Execution`]: its output saved as it
//! comes (so what was printed survives a restart of the server), and one
//! meaning per end on every provider: `Completed` with the exit code when
//! the command ended, by itself or killed (a sandbox's stop kills it:
//! 137, SIGKILL, as a Docker engine reports it), `Failed` when it could
//! not run or its end is unknown.

use std::time::Duration;

use std::sync::Arc;

use super::component::Vms;
use crate::clock::Timestamp;
use crate::error::error_chain;
use crate::error::CoreError;
use crate::exec::{append, ExecEvent, ExecRequest, ExecStream, NO_EXIT};
use crate::ids::{AccountId, ExecutionId};
use crate::model::{Execution, ExecutionStatus, Vm, VmStatus};
use crate::RuntimeError;

/// Output is saved at least this often while it comes.
const SAVE_EVERY: Duration = Duration::from_millis(500);

/// The exit code of a command killed with SIGKILL.
const KILLED: i32 = 128 + 9;

/// A main command's record a restarted server attaches to again, and
/// whether its sandbox stops when it ends.
pub(crate) struct Adoptable {
    pub record: Execution,
    pub stop_on_end: bool,
}

/// A recorded command that runs as a job of its sandbox, or as an exec
/// where the provider has no jobs.
pub(crate) struct Started {
    pub execution: Execution,
    pub done: tokio::task::JoinHandle<Execution>,
    pub is_job: bool,
}

impl Vms {
    /// Starts `request` in `vm` as a job (it outlives this server, which
    /// attaches to it again after a restart) recorded as an execution;
    /// as a plain recorded exec where the provider has no jobs. Its run
    /// is no use of the sandbox (see `auto_stop`).
    pub(crate) async fn start_job_recorded(
        self: &Arc<Self>,
        account: &AccountId,
        vm: &Vm,
        request: ExecRequest,
    ) -> Result<Started, CoreError> {
        request.check()?;
        let id = ExecutionId::generate();
        let provider = self.provider_of(vm)?;
        // A job takes no stdin; the request is kept for the fallback.
        let job = ExecRequest {
            started: None,
            user: None,
            argv: request.argv.clone(),
            env: request.env.clone(),
            cwd: request.cwd.clone(),
            stdin: None,
            stdin_stream: None,
            timeout: request.timeout,
        };
        match provider.channel().job_start(&vm.id, id.as_str(), job).await {
            Ok(()) => {}
            Err(RuntimeError::Unsupported(_)) => {
                let (execution, done) = self.exec_recorded(account, vm, request, false).await?;
                return Ok(Started {
                    execution,
                    done,
                    is_job: false,
                });
            }
            Err(e) => return Err(e.into()),
        }
        let execution = Execution::started(id, vm);
        self.store.insert_execution(&execution).await?;
        let done = self.follow_job(execution.clone(), 0, 0);
        Ok(Started {
            execution,
            done,
            is_job: true,
        })
    }

    /// Runs `request` in the background in VM `id` of `account`, as a job
    /// of its sandbox where the provider has jobs (it outlives this server),
    /// recorded as an execution that [`Vms::get_execution`] reads. Its run
    /// is no use of the sandbox: a product that keeps a daemon in a VM (a
    /// browser) decides itself when the VM is idle.
    pub async fn start_background(
        self: &Arc<Self>,
        account: &AccountId,
        id: &crate::ids::VmId,
        request: ExecRequest,
    ) -> Result<Execution, CoreError> {
        let vm = self.running_vm(account, id).await?;
        Ok(self
            .start_job_recorded(account, &vm, request)
            .await?
            .execution)
    }

    /// Records the job behind `record` from these offsets of its output
    /// (what the record already holds) to its end.
    fn follow_job(
        self: &Arc<Self>,
        record: Execution,
        stdout_from: u64,
        stderr_from: u64,
    ) -> tokio::task::JoinHandle<Execution> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let vm = match this.store.find_vm(&record.vm_id).await {
                Ok(Some(vm)) => vm,
                _ => return this.record_execution(closed_stream(), record).await,
            };
            let attached = async {
                let provider = this.provider_of(&vm)?;
                let job = record.id.as_str();
                provider
                    .channel()
                    .job_attach(&vm.id, job, stdout_from, stderr_from)
                    .await
            };
            let attached = attached.await;
            let stream = match attached {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(task_id = %record.id, error = %error_chain(&e), "could not attach to a job");
                    closed_stream()
                }
            };
            this.record_execution(stream, record).await
        })
    }

    /// The running records of `live` VMs' main commands that run as jobs:
    /// what a restarted server can take back.
    pub(crate) async fn adoptable_jobs(&self, live: &[Vm]) -> Vec<Adoptable> {
        let mut adoptable = Vec::new();
        for vm in live {
            let Some(launch) = vm.options.launch.as_ref().filter(|l| l.main_is_job) else {
                continue;
            };
            let Some(id) = launch
                .main_execution_id
                .as_deref()
                .and_then(|id| id.parse::<ExecutionId>().ok())
            else {
                continue;
            };
            if let Ok(Some(record)) = self.store.get_execution(&vm.account_id, &id).await {
                if record.status == ExecutionStatus::Running {
                    adoptable.push(Adoptable {
                        record,
                        stop_on_end: launch.stop_on_terminal,
                    });
                }
            }
        }
        adoptable
    }

    /// After a restart: attaches again to these jobs, from the output
    /// their records hold (bytes as saved: output that was not UTF-8 was
    /// saved with replacement characters, so its offsets can be off).
    pub(crate) fn adopt_jobs(self: &Arc<Self>, adopted: Vec<Adoptable>) {
        for Adoptable {
            record,
            stop_on_end,
        } in adopted
        {
            let (out, err) = (record.stdout.len() as u64, record.stderr.len() as u64);
            let vm_id = record.vm_id.clone();
            tracing::info!(task_id = %record.id, vm_id = %vm_id, "main command adopted after the restart");
            let done = self.follow_job(record, out, err);
            if stop_on_end {
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    if done.await.is_ok() {
                        let _ = this
                            .halt_vm(&vm_id, crate::lifecycle::REASON_MAIN_ENDED)
                            .await;
                    }
                });
            }
        }
    }

    /// Drains `stream` into `record` (stored, `Running`), saving the
    /// output so far every [`SAVE_EVERY`], and records how it ended.
    pub(crate) async fn record_execution(
        &self,
        mut stream: ExecStream,
        mut record: Execution,
    ) -> Execution {
        let cap = self.config.max_collected_output;
        // A record taken back after a restart goes on from what it holds.
        let mut stdout = std::mem::take(&mut record.stdout).into_bytes();
        let mut stderr = std::mem::take(&mut record.stderr).into_bytes();
        let mut unsaved = false;
        let mut tick = tokio::time::interval(SAVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ended = loop {
            tokio::select! {
                event = stream.recv() => match event {
                    Some(Ok(ExecEvent::Stdout(b))) => {
                        append(&mut stdout, &b, cap);
                        unsaved = true;
                    }
                    Some(Ok(ExecEvent::Stderr(b))) => {
                        append(&mut stderr, &b, cap);
                        unsaved = true;
                    }
                    Some(Ok(ExecEvent::Exit(status))) => break Ok(status),
                    Some(Err(e)) => break Err(error_chain(&e)),
                    None => break Err(NO_EXIT.to_owned()),
                },
                _ = tick.tick(), if unsaved => {
                    record.stdout = String::from_utf8_lossy(&stdout).into_owned();
                    record.stderr = String::from_utf8_lossy(&stderr).into_owned();
                    if let Err(e) = self.store.update_execution(&record).await {
                        tracing::warn!(task_id = %record.id, error = %error_chain(&e), "could not save a command's output so far");
                    }
                    unsaved = false;
                }
            }
        };
        record.stdout = String::from_utf8_lossy(&stdout).into_owned();
        record.stderr = String::from_utf8_lossy(&stderr).into_owned();
        match ended {
            Ok(status) => {
                record.status = ExecutionStatus::Completed;
                record.exit_code = Some(status.exit_code());
                record.execution_time = Some(status.wall_time.as_secs_f64());
                record.cpu_time = Some(status.cpu_time.as_secs_f64());
            }
            // A sandbox that stops (or goes) kills its commands with it,
            // agent included, so no exit arrives: that is their end.
            Err(_) if self.vm_was_ended(&record).await => {
                record.status = ExecutionStatus::Completed;
                record.exit_code = Some(KILLED);
                record.error = Some("killed when the sandbox stopped".to_owned());
            }
            Err(reason) => {
                record.status = ExecutionStatus::Failed;
                record.error = Some(reason);
            }
        }
        record.completed_at = Some(Timestamp::now());
        if let Err(e) = self.store.update_execution(&record).await {
            tracing::error!(task_id = %record.id, error = %error_chain(&e), "could not save execution result");
        }
        record
    }

    /// Whether the VM of `record` is stopping, stopped or gone.
    async fn vm_was_ended(&self, record: &Execution) -> bool {
        match self.store.find_vm(&record.vm_id).await {
            Ok(Some(vm)) => !matches!(vm.status, VmStatus::Running | VmStatus::Creating),
            Ok(None) => true,
            Err(_) => false,
        }
    }
}

/// A stream that ends at once, for a job that cannot be followed.
fn closed_stream() -> ExecStream {
    tokio::sync::mpsc::channel(1).1
}
