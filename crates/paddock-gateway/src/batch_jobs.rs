//! Batch jobs: a command in a sandbox on a node pool, started from an
//! environment (its latest or a chosen snapshot) or an image. A job that
//! does not fit waits QUEUED; the scheduler starts queued jobs oldest
//! first as ranks free up (after every job's end, every disconnect and
//! delete, and on a timer). Output goes to the store as it comes, so logs
//! outlive the sandbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use paddock_core::clock::Timestamp;
use paddock_core::error::CoreError;
use paddock_core::exec::{ExecEvent, ExecRequest};
use paddock_core::ids::{AccountId, SnapshotId};
use paddock_core::model::gateway::{BatchJob, BatchJobState, Executor, NodePoolState};
use paddock_core::model::{Env, MountMode, MountRequest, Principal, VmStatus};
use paddock_core::service::{error_chain, Service, Shutdown};

use crate::Gateway;
use paddock_core::store::JobLogChunk;

use crate::capacity::Holding;
use crate::validate::{
    validate_annotations, validate_display_name, validate_resource_id, MetadataPatch, PatchTarget,
};
use crate::GatewaySandbox;

#[derive(Debug, Clone, Default)]
pub struct BatchJobInput {
    pub display_name: String,
    pub node_pool_id: String,
    pub environment_id: String,
    pub snapshot_id: String,
    pub image_ref: String,
    pub num_ranks: Option<u32>,
    pub env_vars: BTreeMap<String, String>,
    pub role: String,
    pub executor: Option<Executor>,
    pub annotations: BTreeMap<String, String>,
    pub shared: bool,
}

/// Where a job's sandbox starts from: an image, or an environment's
/// snapshot (over that environment's pinned image).
enum JobRoot {
    Image(String),
    Snapshot(SnapshotId, String),
}

/// Output is flushed to the store at least this often.
const LOG_FLUSH: Duration = Duration::from_millis(500);
/// And whenever this much is buffered.
const LOG_FLUSH_BYTES: usize = 64 * 1024;
/// A job's output beyond this is dropped (and the log says so).
const MAX_LOG_BYTES: usize = 16 * 1024 * 1024;

fn argv(executor: &Executor) -> Vec<String> {
    let sh = |script: String, args: Vec<String>| {
        let mut v = vec!["/bin/sh".to_owned(), "-c".to_owned(), script];
        v.extend(args);
        v
    };
    match executor {
        Executor::Shell { command } => sh(command.clone(), Vec::new()),
        Executor::Python {
            target_type,
            target,
            args,
        } => {
            let mut v = vec!["python3".to_owned()];
            if target_type == "MODULE" {
                v.push("-m".to_owned());
            }
            v.push(target.clone());
            v.extend(args.iter().cloned());
            v
        }
        Executor::Notebook { notebook_filename } => sh(
            "command -v jupyter >/dev/null 2>&1 || { echo 'no notebook runner: jupyter is not installed in the image' >&2; exit 127; }; \
             exec jupyter nbconvert --to notebook --execute --stdout \"$0\""
                .to_owned(),
            vec![notebook_filename.clone()],
        ),
    }
}

/// A job's `envVars` as a sandbox's environment; a bad name is
/// INVALID_ARGUMENT naming it.
fn job_env(vars: &BTreeMap<String, String>) -> Result<Env, CoreError> {
    Env::new(vars.clone())
        .map_err(|e| CoreError::invalid(format!("envVars.{}", e.name), e.reason.to_string()))
}

fn validate_executor(e: &Executor) -> Result<(), CoreError> {
    match e {
        Executor::Shell { command } if command.trim().is_empty() => Err(CoreError::invalid(
            "shellExecutor.command",
            "must not be empty",
        )),
        Executor::Python {
            target_type,
            target,
            ..
        } => {
            if target.is_empty() {
                return Err(CoreError::invalid("pythonExecutor.target", "is required"));
            }
            if !matches!(
                target_type.as_str(),
                "" | "TARGET_TYPE_UNSPECIFIED" | "FILE" | "MODULE"
            ) {
                return Err(CoreError::invalid(
                    "pythonExecutor.targetType",
                    "must be TARGET_TYPE_UNSPECIFIED, FILE or MODULE",
                ));
            }
            Ok(())
        }
        Executor::Notebook { notebook_filename } if notebook_filename.is_empty() => Err(
            CoreError::invalid("notebookExecutor.notebookFilename", "is required"),
        ),
        _ => Ok(()),
    }
}

impl Gateway {
    pub async fn create_batch_job(
        self: &Arc<Self>,
        who: &Principal,
        id: Option<String>,
        input: BatchJobInput,
    ) -> Result<BatchJob, CoreError> {
        let id = match id {
            Some(id) => {
                validate_resource_id("batchJobId", &id)?;
                id
            }
            None => format!("job-{}", uuid::Uuid::new_v4().simple()),
        };
        validate_display_name("displayName", &input.display_name)?;
        validate_annotations("annotations", &input.annotations)?;
        if input.node_pool_id.is_empty() {
            return Err(CoreError::invalid("nodePoolId", "is required"));
        }
        let executor = input.executor.ok_or_else(|| {
            CoreError::invalid(
                "shellExecutor",
                "one of shellExecutor, pythonExecutor and notebookExecutor is required",
            )
        })?;
        validate_executor(&executor)?;
        job_env(&input.env_vars)?;
        if !input.image_ref.is_empty() && !input.environment_id.is_empty() {
            return Err(CoreError::invalid(
                "imageRef",
                "cannot be combined with environmentId",
            ));
        }
        if !input.snapshot_id.is_empty() && input.environment_id.is_empty() {
            return Err(CoreError::invalid("snapshotId", "needs environmentId"));
        }
        if input.image_ref.is_empty() && input.environment_id.is_empty() {
            return Err(CoreError::invalid(
                "environmentId",
                "one of environmentId and imageRef is required",
            ));
        }
        if !input.image_ref.is_empty() {
            self.core
                .images()
                .require_reference("imageRef", &input.image_ref)?;
        }
        let num_ranks = input.num_ranks.unwrap_or(1);
        if num_ranks > 1024 {
            return Err(CoreError::invalid("numRanks", "must be at most 1024"));
        }
        if !input.environment_id.is_empty() {
            let env = self.environment_for_job(who, &input.environment_id).await?;
            if env.image_ref.is_empty() {
                return Err(CoreError::FailedPrecondition(format!(
                    "environment {:?} has no image yet",
                    env.id
                )));
            }
            if !input.snapshot_id.is_empty() {
                self.environment_snapshot_for_job(who, &env.id, &input.snapshot_id)
                    .await?;
            }
        }
        let pool = self
            .ready_pool(&who.account_id, &input.node_pool_id, "nodePoolId")
            .await?;
        self.check_fits(&pool, num_ranks, &self.hosts().await?)?;
        let now = Timestamp::now();
        let job = BatchJob {
            id,
            account_id: who.account_id.clone(),
            display_name: input.display_name,
            created_by: who.user_email.clone(),
            node_pool_id: input.node_pool_id,
            environment_id: input.environment_id,
            snapshot_id: input.snapshot_id,
            image_ref: input.image_ref,
            num_ranks,
            env_vars: input.env_vars,
            role: input.role,
            executor,
            annotations: input.annotations,
            shared: input.shared,
            state: BatchJobState::Queued,
            status: "waiting for free ranks".to_owned(),
            ran_image_ref: String::new(),
            ran_snapshot_id: String::new(),
            gpus: Vec::new(),
            node: None,
            vm_id: None,
            exit_code: None,
            create_time: now,
            start_time: None,
            end_time: None,
            update_time: now,
        };
        self.docs.insert(&job).await?;
        tracing::info!(account = %job.account_id, job = %job.id, pool = %job.node_pool_id, ranks = num_ranks, "batch job created");
        self.schedule_jobs().await;
        self.docs
            .load::<BatchJob>(&who.account_id, &job.id)
            .await?
            .ok_or_else(|| CoreError::not_found("batch job", &job.id))
    }

    pub async fn get_batch_job(&self, who: &Principal, id: &str) -> Result<BatchJob, CoreError> {
        self.visible::<BatchJob>(who, id).await
    }

    pub async fn list_batch_jobs(&self, who: &Principal) -> Result<Vec<BatchJob>, CoreError> {
        Ok(self
            .docs
            .load_all::<BatchJob>(Some(&who.account_id))
            .await?
            .into_iter()
            .filter(|j| j.visible_to(&who.user_email))
            .collect())
    }

    pub async fn update_batch_job(
        &self,
        who: &Principal,
        id: &str,
        patch: MetadataPatch,
    ) -> Result<BatchJob, CoreError> {
        let (_guard, mut job) = self.locked::<BatchJob>(who, id).await?;
        patch.apply(
            who,
            PatchTarget {
                display_name: &mut job.display_name,
                annotations: &mut job.annotations,
                sharing: Some((&mut job.shared, &job.created_by)),
            },
        )?;
        job.update_time = Timestamp::now();
        self.docs.save(&job).await?;
        Ok(job)
    }

    /// QUEUED → CANCELLED at once; PENDING/RUNNING → CANCELLING, and
    /// CANCELLED once its sandbox is gone.
    pub async fn cancel_batch_job(
        self: &Arc<Self>,
        who: &Principal,
        id: &str,
    ) -> Result<(), CoreError> {
        let (_guard, mut job) = self.locked::<BatchJob>(who, id).await?;
        match job.state {
            BatchJobState::Queued | BatchJobState::Creating => {
                job.state = BatchJobState::Cancelled;
                job.status = "cancelled before it started".to_owned();
                job.end_time = Some(Timestamp::now());
            }
            BatchJobState::Pending | BatchJobState::Running => {
                job.state = BatchJobState::Cancelling;
                job.status = "cancelling".to_owned();
                if let Some(vm) = job.vm_id.clone() {
                    // Ending the sandbox ends the command; the job's runner
                    // then records CANCELLED.
                    let this = Arc::clone(self);
                    let account = job.account_id.clone();
                    tokio::spawn(async move {
                        if let Err(e) = this.core.vms().delete_vm(&account, &vm).await {
                            tracing::warn!(vm_id = %vm, error = %error_chain(&e), "cancel: could not end a job's sandbox");
                        }
                    });
                }
            }
            s => {
                return Err(CoreError::FailedPrecondition(format!(
                    "the job is {}; only a queued, pending or running job can be cancelled",
                    s.as_str()
                )))
            }
        }
        job.update_time = Timestamp::now();
        self.docs.save(&job).await?;
        tracing::info!(job = id, state = job.state.as_str(), "batch job cancel");
        Ok(())
    }

    /// Deletes a job and its logs; a job still running is ended first.
    pub async fn delete_batch_job(
        self: &Arc<Self>,
        who: &Principal,
        id: &str,
    ) -> Result<(), CoreError> {
        let (_guard, job) = self.locked::<BatchJob>(who, id).await?;
        if let Some(vm) = &job.vm_id {
            match self.core.vms().delete_vm(&job.account_id, vm).await {
                Ok(_) | Err(CoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.docs.delete::<BatchJob>(&job.account_id, id).await?;
        self.docs
            .store()
            .delete_job_log(&job.account_id, id)
            .await?;
        tracing::info!(job = id, "batch job deleted");
        let this = Arc::clone(self);
        tokio::spawn(async move { this.schedule_jobs().await });
        Ok(())
    }

    pub async fn batch_delete_batch_jobs(
        self: &Arc<Self>,
        who: &Principal,
        ids: &[String],
    ) -> Result<(), CoreError> {
        for id in ids {
            self.visible::<BatchJob>(who, id).await?;
        }
        for id in ids {
            self.delete_batch_job(who, id).await?;
        }
        Ok(())
    }

    /// A job's output after `after_seq`.
    pub async fn batch_job_logs(
        &self,
        who: &Principal,
        id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<JobLogChunk>, CoreError> {
        self.visible::<BatchJob>(who, id).await?;
        Ok(self
            .docs
            .store()
            .job_log(&who.account_id, id, after_seq, limit)
            .await?)
    }

    /// Starts every queued job that fits now, oldest first.
    pub async fn schedule_jobs(self: &Arc<Self>) {
        if let Err(e) = self.try_schedule_jobs().await {
            tracing::error!(error = %error_chain(&e), "batch job scheduling failed");
        }
    }

    async fn try_schedule_jobs(self: &Arc<Self>) -> Result<(), CoreError> {
        let _placement = self.placement_lock().await?;
        // One reading of who holds what serves the whole pass; each job
        // placed is added to it.
        let jobs = self.docs.load_all::<BatchJob>(None).await?;
        let mut holdings = self.environment_holdings().await?;
        holdings.extend(jobs.iter().filter_map(Holding::of_job));
        let hosts = self.hosts().await?;
        let mut queued: Vec<BatchJob> = jobs
            .into_iter()
            .filter(|j| j.state == BatchJobState::Queued)
            .collect();
        queued.sort_by_key(|j| j.create_time);
        for job in queued {
            let pool = match self.get_node_pool(&job.account_id, &job.node_pool_id).await {
                Ok(p) if p.state == NodePoolState::Ready => p,
                _ => continue,
            };
            let holder = format!("batch_job/{}", job.id);
            let pinned = self.home_node(&job.account_id, &job.environment_id).await?;
            let Some(placed) = self.place_among(
                &pool,
                job.num_ranks,
                &holder,
                pinned.as_ref(),
                &holdings,
                &hosts,
            ) else {
                continue;
            };
            let _guard = self.docs.lock::<BatchJob>(&job.account_id, &job.id).await?;
            let Some(mut job) = self.docs.load::<BatchJob>(&job.account_id, &job.id).await? else {
                continue;
            };
            if job.state != BatchJobState::Queued {
                continue;
            }
            job.state = BatchJobState::Pending;
            job.status = "starting its sandbox".to_owned();
            job.gpus = placed.gpus;
            job.node = placed.node;
            job.update_time = Timestamp::now();
            self.docs.save(&job).await?;
            holdings.extend(Holding::of_job(&job));
            Arc::clone(self).spawn_job(job);
        }
        Ok(())
    }

    /// Runs a job in a task. The future is boxed here, in a plain
    /// function, because a job's end schedules the next ones: the types
    /// of `run_job` and `schedule_jobs` would otherwise contain each other.
    fn spawn_job(self: Arc<Self>, job: BatchJob) {
        let run: futures::future::BoxFuture<'static, ()> = Box::pin(self.run_job(job));
        tokio::spawn(run);
    }

    /// Starts queued jobs on a timer too, for ranks freed where no call
    /// said so (an environment whose sandbox ended on its own).
    pub async fn run_job_scheduler(self: Arc<Self>, mut shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => self.schedule_jobs().await,
            }
        }
    }

    async fn job_root(&self, job: &BatchJob) -> Result<(JobRoot, Vec<MountRequest>), CoreError> {
        if !job.image_ref.is_empty() {
            return Ok((JobRoot::Image(job.image_ref.clone()), Vec::new()));
        }
        let who = Principal {
            account_id: job.account_id.clone(),
            user_email: job.created_by.clone(),
        };
        let env = self.environment_for_job(&who, &job.environment_id).await?;
        let root = if !job.snapshot_id.is_empty() {
            JobRoot::Snapshot(
                self.environment_snapshot_for_job(&who, &env.id, &job.snapshot_id)
                    .await?,
                env.image_ref.clone(),
            )
        } else if let Some(s) = env.snapshot_id.clone() {
            JobRoot::Snapshot(s, env.image_ref.clone())
        } else {
            JobRoot::Image(env.image_ref.clone())
        };
        // The environment's home, read-only: the job sees the user's
        // files, and cannot race a connected editor writing them.
        let mounts = env
            .home_volume_id
            .map(|v| MountRequest {
                volume_id: v,
                mount_path: self.config.home_path.clone(),
                mode: MountMode::ReadOnly,
                checkpoint_id: None,
                subpath: None,
            })
            .into_iter()
            .collect();
        Ok((root, mounts))
    }

    /// PENDING → RUNNING → COMPLETED/FAILED (or CANCELLED).
    async fn run_job(self: Arc<Self>, job: BatchJob) {
        let (account, id) = (job.account_id.clone(), job.id.clone());
        let mut log = JobLog::new(&self.core, &account, &id);
        let outcome = self.run_job_inner(&job, &mut log).await;
        log.flush().await;
        {
            let Some(_guard) = self.lock_for_task::<BatchJob>(&account, &id).await else {
                return;
            };
            if let Ok(Some(mut job)) = self.docs.load::<BatchJob>(&account, &id).await {
                if let Some(vm) = job.vm_id.take() {
                    let _ = self.core.vms().delete_vm(&account, &vm).await;
                }
                if job.state == BatchJobState::Cancelling {
                    job.state = BatchJobState::Cancelled;
                    job.status = "cancelled".to_owned();
                } else {
                    match outcome {
                        Ok(0) => {
                            job.state = BatchJobState::Completed;
                            job.status = "exited with code 0".to_owned();
                            job.exit_code = Some(0);
                        }
                        Ok(code) => {
                            job.state = BatchJobState::Failed;
                            job.status = format!("exited with code {code}");
                            job.exit_code = Some(code);
                        }
                        Err(e) => {
                            job.state = BatchJobState::Failed;
                            job.status = e.to_string();
                        }
                    }
                }
                job.gpus.clear();
                job.node = None;
                job.end_time = Some(Timestamp::now());
                job.update_time = Timestamp::now();
                if let Err(e) = self.docs.save(&job).await {
                    tracing::error!(job = %id, error = %error_chain(&e), "could not record a job's end");
                }
                tracing::info!(job = %id, state = job.state.as_str(), "batch job ended");
            }
        }
        self.schedule_jobs().await;
    }

    async fn run_job_inner(
        self: &Arc<Self>,
        job: &BatchJob,
        log: &mut JobLog<'_>,
    ) -> Result<i32, CoreError> {
        let (root, volumes) = self.job_root(job).await?;
        let (ran_image_ref, ran_snapshot_id) = match &root {
            JobRoot::Image(r) => (r.clone(), String::new()),
            JobRoot::Snapshot(s, image) => (image.clone(), s.to_string()),
        };
        let (image_variant, snapshot_id) = match root {
            JobRoot::Image(r) => (r, None),
            JobRoot::Snapshot(s, _) => (String::new(), Some(s)),
        };
        let spec = self.gateway_vm_spec(GatewaySandbox {
            label: (
                "paddock.batch_job",
                format!("accounts/{}/batchJobs/{}", job.account_id, job.id),
            ),
            ranks: job.num_ranks,
            image: image_variant,
            snapshot: snapshot_id,
            gpus: job.gpus.clone(),
            node: job.node.clone(),
            selector: self
                .get_node_pool(&job.account_id, &job.node_pool_id)
                .await
                .map(|p| crate::capacity::selector(&p))
                .unwrap_or_default(),
            env: job_env(&job.env_vars)?,
            volumes,
        })?;
        let vm = self
            .core
            .vms()
            .create_vm(&job.account_id, spec, true)
            .await?;
        {
            let _guard = self.docs.lock::<BatchJob>(&job.account_id, &job.id).await?;
            let Some(mut current) = self.docs.load::<BatchJob>(&job.account_id, &job.id).await?
            else {
                let _ = self.core.vms().delete_vm(&job.account_id, &vm.id).await;
                return Err(CoreError::not_found("batch job", &job.id));
            };
            current.vm_id = Some(vm.id.clone());
            if current.state == BatchJobState::Cancelling {
                self.docs.save(&current).await?;
                return Err(CoreError::FailedPrecondition("cancelled".into()));
            }
            if vm.status != VmStatus::Running {
                self.docs.save(&current).await?;
                return Err(CoreError::Unavailable(format!(
                    "the job's sandbox did not start: {}",
                    vm.status_reason.clone().unwrap_or_default()
                )));
            }
            current.state = BatchJobState::Running;
            current.status = "running".to_owned();
            current.ran_image_ref = ran_image_ref;
            current.ran_snapshot_id = ran_snapshot_id;
            current.start_time = Some(Timestamp::now());
            current.update_time = Timestamp::now();
            self.docs.save(&current).await?;
        }
        let request = ExecRequest {
            started: None,
            user: None,
            argv: argv(&job.executor),
            env: Vec::new(),
            cwd: None,
            stdin: None,
            stdin_stream: None,
            timeout: None,
        };
        let mut stream = self
            .core
            .vms()
            .exec(&job.account_id, &vm.id, request)
            .await?;
        let mut tick = tokio::time::interval(LOG_FLUSH);
        loop {
            tokio::select! {
                event = stream.recv() => match event {
                    Some(Ok(ExecEvent::Stdout(b))) => log.push("stdout", &b).await,
                    Some(Ok(ExecEvent::Stderr(b))) => log.push("stderr", &b).await,
                    Some(Ok(ExecEvent::Exit(status))) => {
                        return Ok(status.code.unwrap_or(128 + status.signal.unwrap_or(0)));
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(CoreError::Unavailable("the job's sandbox ended before its command".into())),
                },
                _ = tick.tick() => log.flush().await,
            }
        }
    }

    /// After a restart: jobs whose runner was lost are failed (their
    /// sandboxes ended), and the queue starts again.
    pub(crate) async fn recover_batch_jobs(self: &Arc<Self>) -> Result<(), CoreError> {
        for mut job in self.docs.load_all::<BatchJob>(None).await? {
            if !job.state.holds_ranks() {
                continue;
            }
            if let Some(vm) = job.vm_id.take() {
                let _ = self.core.vms().delete_vm(&job.account_id, &vm).await;
            }
            job.state = if job.state == BatchJobState::Cancelling {
                BatchJobState::Cancelled
            } else {
                BatchJobState::Failed
            };
            job.status = "the server restarted while the job ran".to_owned();
            job.gpus.clear();
            job.end_time = Some(Timestamp::now());
            job.update_time = Timestamp::now();
            self.docs.save(&job).await?;
        }
        self.schedule_jobs().await;
        Ok(())
    }
}

/// A job's output on its way to the store: buffered, flushed on a timer
/// or when large, capped.
struct JobLog<'a> {
    service: &'a Service,
    account: &'a AccountId,
    job: &'a str,
    pending: Vec<JobLogChunk>,
    pending_bytes: usize,
    total_bytes: usize,
    seq: i64,
}

impl<'a> JobLog<'a> {
    fn new(service: &'a Service, account: &'a AccountId, job: &'a str) -> Self {
        Self {
            service,
            account,
            job,
            pending: Vec::new(),
            pending_bytes: 0,
            total_bytes: 0,
            seq: 0,
        }
    }

    async fn push(&mut self, stream: &str, bytes: &[u8]) {
        if self.total_bytes >= MAX_LOG_BYTES {
            return;
        }
        let mut data = String::from_utf8_lossy(bytes).into_owned();
        self.total_bytes += data.len();
        if self.total_bytes >= MAX_LOG_BYTES {
            data.push_str("\n[paddock: output beyond 16 MiB was dropped]\n");
        }
        self.seq += 1;
        self.pending_bytes += data.len();
        self.pending.push(JobLogChunk {
            seq: self.seq,
            stream: stream.to_owned(),
            data,
            created_at: Timestamp::now(),
        });
        if self.pending_bytes >= LOG_FLUSH_BYTES {
            self.flush().await;
        }
    }

    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let chunks = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        if let Err(e) = self
            .service
            .documents()
            .store()
            .append_job_log(self.account, self.job, &chunks)
            .await
        {
            tracing::error!(job = self.job, error = %error_chain(&e), "could not store a job's output");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executors_become_command_lines() {
        let shell = argv(&Executor::Shell {
            command: "echo hi".into(),
        });
        assert_eq!(shell, ["/bin/sh", "-c", "echo hi"]);
        let file = argv(&Executor::Python {
            target_type: "FILE".into(),
            target: "/w/train.py".into(),
            args: vec!["--epochs".into(), "3".into()],
        });
        assert_eq!(file, ["python3", "/w/train.py", "--epochs", "3"]);
        let module = argv(&Executor::Python {
            target_type: "MODULE".into(),
            target: "pkg.main".into(),
            args: vec![],
        });
        assert_eq!(module, ["python3", "-m", "pkg.main"]);
        let nb = argv(&Executor::Notebook {
            notebook_filename: "/w/a b.ipynb".into(),
        });
        // The file name is an argument, never part of the script.
        assert_eq!(nb.last().map(String::as_str), Some("/w/a b.ipynb"));
        assert!(nb[2].contains("jupyter nbconvert"));
    }

    #[test]
    fn executors_are_checked() {
        let bad = [
            Executor::Shell {
                command: " ".into(),
            },
            Executor::Python {
                target_type: "".into(),
                target: "".into(),
                args: vec![],
            },
            Executor::Python {
                target_type: "BOGUS".into(),
                target: "x".into(),
                args: vec![],
            },
            Executor::Notebook {
                notebook_filename: "".into(),
            },
        ];
        for e in bad {
            assert!(validate_executor(&e).is_err(), "{e:?}");
        }
    }
}
