//! Dev environments: a pinned image, a home volume, and, while connected,
//! a sandbox on a node pool started from the latest snapshot. Connecting
//! and disconnecting are long work: the call records the new state and
//! returns; a task does the work and records where it ended.
//!
//! A task never holds the environment's lock while it works (a start or a
//! snapshot takes seconds); it takes it to record the outcome, and the
//! calls refuse to begin while a transition is under way, so a task's
//! outcome is never written over another's.

use std::collections::BTreeMap;
use std::sync::Arc;

use paddock_core::clock::Timestamp;
use paddock_core::error::CoreError;
use paddock_core::ids::{AccountId, SnapshotId, VmId, VolumeId};
use paddock_core::model::gateway::{
    environment_snapshot_prefix, Connection, Environment, EnvironmentState, Status, StatusCode,
};
use paddock_core::model::{
    Env, MountMode, MountRequest, Principal, Snapshot, SnapshotKind, SnapshotStatus, VmStatus,
};
use paddock_core::service::error_chain;

use crate::Gateway;

use crate::validate::{
    validate_annotations, validate_display_name, validate_resource_id, MetadataPatch, PatchTarget,
};
use crate::GatewaySandbox;

/// How long `:connect` waits for its sandbox before answering: a connect
/// that ends sooner (most do, in well under a second) answers with its
/// outcome, a failure included.
const CONNECT_ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Clone, Default)]
pub struct EnvironmentInput {
    pub display_name: String,
    pub base_image_ref: String,
    pub shared: bool,
    pub annotations: BTreeMap<String, String>,
}

/// What an update changes (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct EnvironmentPatch {
    pub metadata: MetadataPatch,
    pub base_image_ref: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ConnectRequest {
    pub node_pool_id: String,
    pub num_ranks: u32,
    pub role: String,
    pub use_local_storage: bool,
    pub vscode_version: String,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct DisconnectRequest {
    pub force: bool,
    pub reset_snapshots: bool,
}

/// The label a sandbox of an environment carries in its metadata.
pub const ENVIRONMENT_METADATA_KEY: &str = "paddock.environment";

/// `repo[:tag][@digest]` → `repo@digest`.
fn pinned_reference(reference: &str, digest: &str) -> String {
    let name = reference.split('@').next().unwrap_or(reference);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let repo = match name[last_slash..].find(':') {
        Some(colon) => &name[..last_slash + colon],
        None => name,
    };
    format!("{repo}@{digest}")
}

impl Gateway {
    /// The node environment `env_id`'s home volume is on: its sandboxes,
    /// and so the GPUs they hold, are there. `None` for no environment,
    /// one without a home yet, or a lone node.
    pub(crate) async fn home_node(
        &self,
        account: &AccountId,
        env_id: &str,
    ) -> Result<Option<paddock_core::ids::NodeId>, CoreError> {
        if env_id.is_empty() {
            return Ok(None);
        }
        let Some(env) = self.docs.load::<Environment>(account, env_id).await? else {
            return Ok(None);
        };
        match &env.home_volume_id {
            Some(home) => self.core.vms().volume_node(account, home).await,
            None => Ok(None),
        }
    }

    /// Loads an environment the principal may see; another user's private
    /// one is as absent as another account's.
    pub async fn create_environment(
        self: &Arc<Self>,
        who: &Principal,
        id: &str,
        input: EnvironmentInput,
    ) -> Result<Environment, CoreError> {
        validate_resource_id("environmentId", id)?;
        validate_display_name("environment.displayName", &input.display_name)?;
        validate_annotations("environment.annotations", &input.annotations)?;
        self.core
            .images()
            .require_reference("environment.baseImageRef", &input.base_image_ref)?;
        let now = Timestamp::now();
        let env = Environment {
            id: id.to_owned(),
            account_id: who.account_id.clone(),
            display_name: input.display_name,
            created_by: who.user_email.clone(),
            state: EnvironmentState::Creating,
            status: Status::ok(),
            connection: None,
            base_image_ref: input.base_image_ref,
            image_ref: String::new(),
            snapshot_id: None,
            snapshot_image_ref: String::new(),
            shared: input.shared,
            annotations: input.annotations,
            vscode_version: String::new(),
            home_volume_id: None,
            scratch_volume_id: None,
            vm_id: None,
            create_time: now,
            update_time: now,
        };
        self.docs.insert(&env).await?;
        tracing::info!(account = %env.account_id, environment = id, "environment created");
        let this = Arc::clone(self);
        let account = env.account_id.clone();
        let env_id = env.id.clone();
        tokio::spawn(async move { this.finish_create(&account, &env_id).await });
        Ok(env)
    }

    /// Pins the base image and makes the home volume: CREATING →
    /// DISCONNECTED (with an error status when the image cannot be had).
    async fn finish_create(&self, account: &AccountId, id: &str) {
        let Ok(Some(env)) = self.docs.load::<Environment>(account, id).await else {
            return;
        };
        let pinned = self.pin_image(account, &env.base_image_ref).await;
        let home = match &pinned {
            Ok(_) => self
                .core
                .volumes()
                .create(
                    account,
                    format!("env-{id}-home"),
                    self.config.home_size_bytes,
                )
                .await
                .map(|v| Some(v.id)),
            Err(_) => Ok(None),
        };
        let Some(_guard) = self.lock_for_task::<Environment>(account, id).await else {
            return;
        };
        let Ok(Some(mut env)) = self.docs.load::<Environment>(account, id).await else {
            return;
        };
        match (pinned, home) {
            (Ok(image_ref), Ok(home)) => {
                env.image_ref = image_ref;
                env.home_volume_id = home;
                env.status = Status::ok();
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(account = %account, environment = id, error = %error_chain(&e), "environment could not be prepared");
                env.status = Status::error(
                    StatusCode::FailedPrecondition,
                    format!("the environment could not be prepared: {e}"),
                );
            }
        }
        env.state = EnvironmentState::Disconnected;
        env.update_time = Timestamp::now();
        if let Err(e) = self.docs.save(&env).await {
            tracing::error!(environment = id, error = %error_chain(&e), "could not record a created environment");
        }
    }

    /// Resolves an image reference to its digest (pulling it if needed)
    /// and records the image under its pinned reference too, so a connect
    /// starts from exactly these layers without asking the registry again.
    async fn pin_image(&self, account: &AccountId, reference: &str) -> Result<String, CoreError> {
        let image = self.core.images().ensure(account, reference).await?;
        let pinned = pinned_reference(reference, &image.digest);
        if pinned != image.reference {
            let mut copy = image.clone();
            copy.reference = pinned.clone();
            self.core.images().save(&copy).await?;
        }
        Ok(pinned)
    }

    pub async fn get_environment(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<Environment, CoreError> {
        let env = self.visible::<Environment>(who, id).await?;
        self.observe(env).await
    }

    /// The environments the principal may see.
    pub async fn list_environments(&self, who: &Principal) -> Result<Vec<Environment>, CoreError> {
        let mut out = Vec::new();
        for env in self
            .docs
            .load_all::<Environment>(Some(&who.account_id))
            .await?
        {
            if env.visible_to(&who.user_email) {
                out.push(self.observe(env).await?);
            }
        }
        Ok(out)
    }

    /// Moves `env` into `state` and records it: what a transition the
    /// client started writes before its work runs in the background.
    async fn enter(&self, env: &mut Environment, state: EnvironmentState) -> Result<(), CoreError> {
        env.state = state;
        env.update_time = Timestamp::now();
        self.docs.save(env).await?;
        Ok(())
    }

    /// A connected environment whose sandbox has ended (deleted through
    /// the VM API, killed, or lost) is disconnected: its ranks are free
    /// and the status says what happened.
    async fn observe(&self, env: Environment) -> Result<Environment, CoreError> {
        if env.state != EnvironmentState::Connected {
            return Ok(env);
        }
        let Some(vm_id) = env.vm_id.clone() else {
            return Ok(env);
        };
        let running = matches!(
            self.core.vms().find_vm_of(&env.account_id, &vm_id).await?,
            Some(vm) if vm.status == VmStatus::Running
        );
        if running {
            return Ok(env);
        }
        let _guard = self
            .docs
            .lock::<Environment>(&env.account_id, &env.id)
            .await?;
        let Some(mut env) = self
            .docs
            .load::<Environment>(&env.account_id, &env.id)
            .await?
        else {
            return Err(CoreError::not_found("environment", &env.id));
        };
        if env.state == EnvironmentState::Connected && env.vm_id.as_ref() == Some(&vm_id) {
            tracing::warn!(environment = %env.id, vm_id = %vm_id, "an environment's sandbox ended");
            self.release_scratch(&mut env).await;
            env.state = EnvironmentState::Disconnected;
            env.connection = None;
            env.vm_id = None;
            env.status = Status::error(
                StatusCode::Aborted,
                format!("the environment's sandbox {vm_id} ended; connect again to resume from the last snapshot"),
            );
            env.update_time = Timestamp::now();
            self.docs.save(&env).await?;
        }
        Ok(env)
    }

    pub async fn update_environment(
        self: &Arc<Self>,
        who: &Principal,
        id: &str,
        patch: EnvironmentPatch,
    ) -> Result<Environment, CoreError> {
        let (_guard, mut env) = self.locked::<Environment>(who, id).await?;
        patch.metadata.apply(
            who,
            PatchTarget {
                display_name: &mut env.display_name,
                annotations: &mut env.annotations,
                sharing: Some((&mut env.shared, &env.created_by)),
            },
        )?;
        let mut repin = false;
        if let Some(base) = patch.base_image_ref {
            if base != env.base_image_ref {
                // The image is pinned at creation and every snapshot stacks
                // on it; only an environment whose image could not be had
                // may name another.
                if !env.image_ref.is_empty() {
                    return Err(CoreError::invalid(
                        "baseImageRef",
                        "is pinned at creation (imageRef); create a new environment for another base image",
                    ));
                }
                if env.state != EnvironmentState::Disconnected {
                    return Err(CoreError::FailedPrecondition(format!(
                        "the environment is {}",
                        env.state.as_str()
                    )));
                }
                self.core
                    .images()
                    .require_reference("baseImageRef", &base)?;
                env.base_image_ref = base;
                env.state = EnvironmentState::Creating;
                repin = true;
            }
        }
        env.update_time = Timestamp::now();
        self.docs.save(&env).await?;
        if repin {
            let this = Arc::clone(self);
            let (account, env_id) = (env.account_id.clone(), env.id.clone());
            tokio::spawn(async move { this.finish_create(&account, &env_id).await });
        }
        Ok(env)
    }

    pub async fn connect_environment(
        self: &Arc<Self>,
        who: &Principal,
        id: &str,
        req: ConnectRequest,
    ) -> Result<(), CoreError> {
        if req.node_pool_id.is_empty() {
            return Err(CoreError::invalid("connection.nodePoolId", "is required"));
        }
        if req.num_ranks > 1024 {
            return Err(CoreError::invalid(
                "connection.numRanks",
                "must be at most 1024",
            ));
        }
        let account = who.account_id.clone();
        let (guard, env) = self.locked::<Environment>(who, id).await?;
        let env = self.observe(env).await?;
        if env.state.is_transition() {
            return Err(CoreError::FailedPrecondition(format!(
                "a connection is pending: the environment is {}",
                env.state.as_str()
            )));
        }
        if env.image_ref.is_empty() {
            return Err(CoreError::FailedPrecondition(format!(
                "the environment has no image: {}",
                env.status.message
            )));
        }
        let mut wanted = Connection {
            node_pool_id: req.node_pool_id.clone(),
            num_ranks: req.num_ranks,
            role: req.role.clone(),
            zone: self.config.zone.clone(),
            use_local_storage: req.use_local_storage,
            gpus: Vec::new(),
            node: None,
        };
        let reconnect = env.state == EnvironmentState::Connected;
        if reconnect {
            if let Some(current) = &env.connection {
                if current.same_request(&wanted) {
                    return Ok(());
                }
            }
        }
        let pool = self
            .ready_pool(&account, &req.node_pool_id, "connection.nodePoolId")
            .await?;
        // The hosts as read once for this connect: its check and its
        // placement weigh the same nodes.
        let hosts = self.hosts().await?;
        self.check_fits(&pool, req.num_ranks, &hosts)?;
        let pinned = self.home_node(&account, &env.id).await?;
        let mut env = env;
        let mut task = {
            let _placement = self.placement_lock().await?;
            let holder = format!("environment/{id}");
            let Some(placed) = self
                .place(&pool, req.num_ranks, &holder, pinned.as_ref(), &hosts)
                .await?
            else {
                return Err(CoreError::ResourceExhausted(format!(
                    "node pool {:?} has no {} free ranks now",
                    pool.id, req.num_ranks
                )));
            };
            wanted.gpus = placed.gpus;
            wanted.node = placed.node;
            let previous_vm = env.vm_id.clone();
            env.state = if reconnect {
                EnvironmentState::Reconnecting
            } else {
                EnvironmentState::Connecting
            };
            env.connection = Some(wanted);
            env.vscode_version = req.vscode_version;
            env.status = Status::ok();
            env.update_time = Timestamp::now();
            self.docs.save(&env).await?;
            let this = Arc::clone(self);
            let env_id = env.id.clone();
            let account = account.clone();
            tokio::spawn(async move { this.run_connect(&account, &env_id, previous_vm).await })
        };
        drop(guard);
        tracing::info!(environment = id, pool = %req.node_pool_id, ranks = req.num_ranks, reconnect, "environment connecting");
        // Most connects end within moments: their outcome is the answer.
        // One still under way answers now; its end shows in `state` and
        // `status` (the asynchronous contract).
        if tokio::time::timeout(CONNECT_ANSWER_WITHIN, &mut task)
            .await
            .is_err()
        {
            return Ok(());
        }
        match self.docs.load::<Environment>(&account, id).await? {
            Some(env)
                if env.state == EnvironmentState::Disconnected
                    && env.status.code != StatusCode::Ok =>
            {
                Err(CoreError::Unavailable(format!(
                    "the connect failed (the environment is DISCONNECTED): {}",
                    env.status.message
                )))
            }
            _ => Ok(()),
        }
    }

    /// CONNECTING/RECONNECTING → CONNECTED, or DISCONNECTED with the error.
    async fn run_connect(
        self: &Arc<Self>,
        account: &AccountId,
        id: &str,
        previous_vm: Option<VmId>,
    ) {
        if let Some(vm) = previous_vm {
            // A reconnect keeps what the old sandbox changed.
            if let Err(e) = self.retire_sandbox(account, id, &vm, false, false).await {
                tracing::warn!(environment = id, error = %error_chain(&e), "reconnect: the old sandbox's snapshot failed");
            }
            // The old connection's scratch goes with its sandbox.
            let Some(_guard) = self.lock_for_task::<Environment>(account, id).await else {
                return;
            };
            if let Ok(Some(mut env)) = self.docs.load::<Environment>(account, id).await {
                if env.scratch_volume_id.is_some() {
                    self.release_scratch(&mut env).await;
                    if let Err(e) = self.docs.save(&env).await {
                        tracing::error!(environment = id, error = %error_chain(&e), "could not record a reconnect");
                    }
                }
            }
        }
        let started = match self.docs.load::<Environment>(account, id).await {
            Ok(Some(env)) => self.start_environment_sandbox(&env).await,
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let Some(_guard) = self.lock_for_task::<Environment>(account, id).await else {
            return;
        };
        let Ok(Some(mut env)) = self.docs.load::<Environment>(account, id).await else {
            return;
        };
        match started {
            Ok((vm_id, scratch)) => {
                env.vm_id = Some(vm_id);
                env.scratch_volume_id = scratch;
                env.state = EnvironmentState::Connected;
                env.status = Status::ok();
            }
            Err(e) => {
                tracing::warn!(environment = id, error = %error_chain(&e), "environment connect failed");
                env.vm_id = None;
                env.scratch_volume_id = None;
                env.connection = None;
                env.state = EnvironmentState::Disconnected;
                env.status = Status::error(status_code(&e), format!("connect failed: {e}"));
            }
        }
        env.update_time = Timestamp::now();
        if let Err(e) = self.docs.save(&env).await {
            tracing::error!(environment = id, error = %error_chain(&e), "could not record a connect");
        }
    }

    /// Starts the sandbox of a connection: the latest snapshot (or the
    /// pinned image), the home volume, scratch at `/tmp` when asked, and
    /// the connection's GPUs.
    async fn start_environment_sandbox(
        self: &Arc<Self>,
        env: &Environment,
    ) -> Result<(VmId, Option<VolumeId>), CoreError> {
        let connection = env.connection.clone().unwrap_or_default();
        let mut volumes = Vec::new();
        if let Some(home) = &env.home_volume_id {
            volumes.push(MountRequest {
                volume_id: home.clone(),
                mount_path: self.config.home_path.clone(),
                mode: MountMode::ReadWrite,
                checkpoint_id: None,
                subpath: None,
            });
        }
        let scratch = if connection.use_local_storage {
            let name = format!("env-{}-scratch-{}", env.id, Timestamp::now().unix_millis());
            let v = self
                .core
                .volumes()
                .create(&env.account_id, name, self.config.scratch_size_bytes)
                .await?;
            volumes.push(MountRequest {
                volume_id: v.id.clone(),
                mount_path: "/tmp".to_owned(),
                mode: MountMode::ReadWrite,
                checkpoint_id: None,
                subpath: None,
            });
            Some(v.id)
        } else {
            None
        };
        let spec = self.gateway_vm_spec(GatewaySandbox {
            label: (
                ENVIRONMENT_METADATA_KEY,
                format!("accounts/{}/environments/{}", env.account_id, env.id),
            ),
            ranks: connection.num_ranks,
            image: env.image_ref.clone(),
            snapshot: env.snapshot_id.clone(),
            gpus: connection.gpus.clone(),
            node: connection.node.clone(),
            selector: self
                .get_node_pool(&env.account_id, &connection.node_pool_id)
                .await
                .map(|p| crate::capacity::selector(&p))
                .unwrap_or_default(),
            env: Env::default(),
            volumes,
        })?;
        let result = self.core.vms().create_vm(&env.account_id, spec, true).await;
        let failure = match result {
            Ok(vm) if vm.status == VmStatus::Running => return Ok((vm.id, scratch)),
            Ok(vm) => {
                let reason = vm.status_reason.clone().unwrap_or_default();
                let _ = self.core.vms().delete_vm(&env.account_id, &vm.id).await;
                CoreError::Unavailable(format!("the sandbox did not start: {reason}"))
            }
            Err(e) => e,
        };
        if let Some(v) = &scratch {
            let _ = self.core.volumes().delete(&env.account_id, v).await;
        }
        Err(failure)
    }

    pub async fn disconnect_environment(
        self: &Arc<Self>,
        who: &Principal,
        id: &str,
        req: DisconnectRequest,
    ) -> Result<(), CoreError> {
        let account = who.account_id.clone();
        let (_guard, env) = self.locked::<Environment>(who, id).await?;
        let mut env = self.observe(env).await?;
        if env.state != EnvironmentState::Connected {
            return Err(CoreError::FailedPrecondition(format!(
                "the environment is {}, not CONNECTED",
                env.state.as_str()
            )));
        }
        self.enter(&mut env, EnvironmentState::Disconnecting)
            .await?;
        let this = Arc::clone(self);
        let env_id = env.id.clone();
        tokio::spawn(async move { this.run_disconnect(&account, &env_id, req).await });
        tracing::info!(
            environment = id,
            force = req.force,
            reset_snapshots = req.reset_snapshots,
            "environment disconnecting"
        );
        Ok(())
    }

    /// DISCONNECTING → DISCONNECTED with a new snapshot; when the snapshot
    /// fails, back to CONNECTED (or on to DISCONNECTED with `force`).
    async fn run_disconnect(&self, account: &AccountId, id: &str, req: DisconnectRequest) {
        let vm = match self.docs.load::<Environment>(account, id).await {
            Ok(Some(env)) => env.vm_id,
            _ => return,
        };
        let retired = match &vm {
            Some(vm) => {
                self.retire_sandbox(account, id, vm, !req.force, req.reset_snapshots)
                    .await
            }
            None => Ok(()),
        };
        let Some(_guard) = self.lock_for_task::<Environment>(account, id).await else {
            return;
        };
        let Ok(Some(mut env)) = self.docs.load::<Environment>(account, id).await else {
            return;
        };
        match retired {
            Err(e) if !req.force => {
                tracing::warn!(environment = id, error = %error_chain(&e), "disconnect: snapshot failed; still connected");
                env.state = EnvironmentState::Connected;
                env.status = Status::error(
                    status_code(&e),
                    format!("disconnect failed, the environment stays connected (force disconnects anyway): {e}"),
                );
            }
            other => {
                if let Err(e) = other {
                    env.status = Status::error(
                        status_code(&e),
                        format!("disconnected by force; the snapshot failed: {e}"),
                    );
                } else {
                    env.status = Status::ok();
                }
                self.release_scratch(&mut env).await;
                env.state = EnvironmentState::Disconnected;
                env.connection = None;
                env.vm_id = None;
            }
        }
        env.update_time = Timestamp::now();
        if let Err(e) = self.docs.save(&env).await {
            tracing::error!(environment = id, error = %error_chain(&e), "could not record a disconnect");
        }
    }

    /// Snapshots a connection's sandbox into the environment's latest
    /// snapshot, then ends the sandbox. With `keep_on_failure` a failed
    /// snapshot leaves the sandbox running (the caller stays connected).
    /// With `reset`, the snapshot is one layer over the pinned image, the
    /// earlier snapshots' stacked layers squashed into it.
    async fn retire_sandbox(
        &self,
        account: &AccountId,
        id: &str,
        vm_id: &VmId,
        keep_on_failure: bool,
        reset: bool,
    ) -> Result<(), CoreError> {
        let snapshot = self
            .snapshot_environment_vm(account, id, vm_id, reset)
            .await;
        match &snapshot {
            Ok(s) => {
                let _guard = self.docs.lock::<Environment>(account, id).await?;
                if let Some(mut env) = self.docs.load::<Environment>(account, id).await? {
                    env.snapshot_id = Some(s.id.clone());
                    env.snapshot_image_ref = snapshot_image_ref(s);
                    env.update_time = Timestamp::now();
                    self.docs.save(&env).await?;
                }
            }
            Err(_) if keep_on_failure => return snapshot.map(|_| ()),
            Err(_) => {}
        }
        match self.core.vms().delete_vm(account, vm_id).await {
            Ok(_) | Err(CoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        snapshot.map(|_| ())
    }

    async fn snapshot_environment_vm(
        &self,
        account: &AccountId,
        id: &str,
        vm_id: &VmId,
        reset: bool,
    ) -> Result<Snapshot, CoreError> {
        let squash_above = if reset {
            let env = self
                .docs
                .load::<Environment>(account, id)
                .await?
                .ok_or_else(|| CoreError::not_found("environment", id))?;
            let image = self
                .core
                .images()
                .find(account, &env.image_ref)
                .await?
                .ok_or_else(|| CoreError::not_found("image", &env.image_ref))?;
            Some(image.layers.len())
        } else {
            None
        };
        let _vm_guard = self.core.vms().lock_vm(vm_id).await;
        let vm = self.core.vms().get_vm(account, vm_id).await?;
        if vm.status != VmStatus::Running {
            return Err(CoreError::FailedPrecondition(format!(
                "the sandbox is {}",
                vm.status.as_str()
            )));
        }
        let name = format!(
            "{}{}",
            environment_snapshot_prefix(id),
            Timestamp::now().unix_millis()
        );
        self.core
            .vms()
            .snapshot_locked_with(&vm, Some(name), SnapshotKind::Environment, squash_above)
            .await
    }

    async fn release_scratch(&self, env: &mut Environment) {
        if let Some(v) = env.scratch_volume_id.take() {
            if let Err(e) = self.core.volumes().delete(&env.account_id, &v).await {
                tracing::warn!(environment = %env.id, volume = %v, error = %error_chain(&e), "could not delete an environment's scratch volume");
            }
        }
    }

    /// DELETING: ends the sandbox (no snapshot), then removes the home
    /// volume, scratch, snapshots and the record.
    pub async fn delete_environment(
        self: &Arc<Self>,
        who: &Principal,
        id: &str,
    ) -> Result<(), CoreError> {
        self.start_delete_environment(who, id).await.map(drop)
    }

    /// Marks the environment DELETING and starts removing it; the task
    /// ends once it is gone.
    async fn start_delete_environment(
        self: &Arc<Self>,
        who: &Principal,
        id: &str,
    ) -> Result<tokio::task::JoinHandle<()>, CoreError> {
        let (_guard, env) = self.locked::<Environment>(who, id).await?;
        let mut env = self.observe(env).await?;
        if env.state.is_transition() {
            return Err(CoreError::FailedPrecondition(format!(
                "the environment is {}; delete it once that is done",
                env.state.as_str()
            )));
        }
        self.enter(&mut env, EnvironmentState::Deleting).await?;
        let this = Arc::clone(self);
        let task = tokio::spawn(async move { this.run_delete(env).await });
        tracing::info!(environment = id, "environment deleting");
        Ok(task)
    }

    async fn run_delete(&self, mut env: Environment) {
        let account = env.account_id.clone();
        if let Some(vm) = env.vm_id.take() {
            if let Err(e) = self.core.vms().delete_vm(&account, &vm).await {
                tracing::warn!(environment = %env.id, error = %error_chain(&e), "delete: could not end the sandbox");
            }
        }
        self.release_scratch(&mut env).await;
        if let Some(home) = env.home_volume_id.take() {
            if let Err(e) = self.core.volumes().delete(&account, &home).await {
                tracing::warn!(environment = %env.id, error = %error_chain(&e), "delete: could not remove the home volume");
            }
        }
        match self.environment_snapshots(&account, &env.id).await {
            Ok(snaps) => {
                // Newest first: an older snapshot's layers are shared with
                // the newer ones stacked on it.
                for s in snaps.iter().rev() {
                    if let Err(e) = self.core.snapshots().delete(&account, &s.id).await {
                        tracing::warn!(environment = %env.id, snapshot = %s.id, error = %error_chain(&e), "delete: could not remove a snapshot");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(environment = %env.id, error = %error_chain(&e), "delete: could not list snapshots")
            }
        }
        let Some(_guard) = self.lock_for_task::<Environment>(&account, &env.id).await else {
            return;
        };
        if let Err(e) = self.docs.delete::<Environment>(&account, &env.id).await {
            tracing::error!(environment = %env.id, error = %error_chain(&e), "delete: could not remove the record");
        }
        tracing::info!(environment = %env.id, "environment deleted");
    }

    /// Deletes several environments; every one is checked first, so an
    /// unknown id deletes none. Returns once they are all gone, so a list
    /// right after no longer shows them.
    pub async fn batch_delete_environments(
        self: &Arc<Self>,
        who: &Principal,
        ids: &[String],
    ) -> Result<(), CoreError> {
        for id in ids {
            self.visible::<Environment>(who, id).await?;
        }
        let mut removals = Vec::new();
        for id in ids {
            removals.push(self.start_delete_environment(who, id).await?);
        }
        for removal in removals {
            if let Err(e) = removal.await {
                tracing::error!(error = %e, "an environment's removal task failed");
            }
        }
        Ok(())
    }

    /// An environment's snapshots, oldest first.
    async fn environment_snapshots(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<Vec<Snapshot>, CoreError> {
        let prefix = environment_snapshot_prefix(id);
        let mut snaps: Vec<Snapshot> = self
            .core
            .snapshots()
            .list(account, Some(SnapshotKind::Environment))
            .await?
            .into_iter()
            .filter(|s| s.name.starts_with(&prefix))
            .collect();
        snaps.sort_by_key(|s| s.created_at);
        Ok(snaps)
    }

    /// The snapshots of every environment the principal may see, with the
    /// environment each belongs to.
    pub async fn list_environment_snapshots(
        &self,
        who: &Principal,
    ) -> Result<Vec<(String, Snapshot)>, CoreError> {
        let visible: BTreeMap<String, Environment> = self
            .docs
            .load_all::<Environment>(Some(&who.account_id))
            .await?
            .into_iter()
            .filter(|e| e.visible_to(&who.user_email))
            .map(|e| (e.id.clone(), e))
            .collect();
        Ok(self
            .core
            .snapshots()
            .list(&who.account_id, Some(SnapshotKind::Environment))
            .await?
            .into_iter()
            .filter_map(|s| {
                let env = s.name.strip_prefix("environments/")?.split('/').next()?;
                let env = env.to_owned();
                visible.contains_key(&env).then_some((env, s))
            })
            .collect())
    }

    pub async fn get_environment_snapshot(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<(String, Snapshot), CoreError> {
        self.list_environment_snapshots(who)
            .await?
            .into_iter()
            .find(|(_, s)| s.id.as_str() == id)
            .ok_or_else(|| CoreError::not_found("snapshot", id))
    }

    /// Deletes a snapshot that is not its environment's latest (the next
    /// connect starts from that one).
    pub async fn delete_environment_snapshot(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<(), CoreError> {
        let (env_id, snapshot) = self.get_environment_snapshot(who, id).await?;
        let (_guard, env) = self.locked::<Environment>(who, &env_id).await?;
        if env.snapshot_id.as_ref() == Some(&snapshot.id) {
            return Err(CoreError::FailedPrecondition(format!(
                "snapshot {id} is environment {env_id:?}'s latest, which its next connect starts from"
            )));
        }
        self.core
            .snapshots()
            .delete(&who.account_id, &snapshot.id)
            .await?;
        Ok(())
    }

    /// The snapshot a batch job may start from: one of the environment's.
    pub(crate) async fn environment_snapshot_for_job(
        &self,
        who: &Principal,
        env_id: &str,
        snapshot_id: &str,
    ) -> Result<SnapshotId, CoreError> {
        let (owner, snapshot) = self.get_environment_snapshot(who, snapshot_id).await?;
        if owner != env_id || snapshot.status != SnapshotStatus::Ready {
            return Err(CoreError::invalid(
                "snapshotId",
                format!("{snapshot_id:?} is not a ready snapshot of environment {env_id:?}"),
            ));
        }
        Ok(snapshot.id)
    }

    /// The environment a batch job may start from, with the snapshot or
    /// image it starts on.
    pub(crate) async fn environment_for_job(
        &self,
        who: &Principal,
        env_id: &str,
    ) -> Result<Environment, CoreError> {
        self.visible::<Environment>(who, env_id)
            .await
            .map_err(|e| match e {
                CoreError::NotFound { .. } => CoreError::invalid(
                    "environmentId",
                    format!("no environment {env_id:?} in this account"),
                ),
                e => e,
            })
    }
}

impl Gateway {
    /// After a restart, every environment caught between states finishes
    /// its move: creations and deletions run again, a connection whose
    /// sandbox runs is CONNECTED (else DISCONNECTED), a disconnect runs
    /// again.
    pub(crate) async fn recover_environments(self: &Arc<Self>) -> Result<(), CoreError> {
        for mut env in self.docs.load_all::<Environment>(None).await? {
            let (account, id) = (env.account_id.clone(), env.id.clone());
            match env.state {
                EnvironmentState::Creating => {
                    let this = Arc::clone(self);
                    tokio::spawn(async move { this.finish_create(&account, &id).await });
                }
                EnvironmentState::Deleting => {
                    let this = Arc::clone(self);
                    tokio::spawn(async move { this.run_delete(env).await });
                }
                EnvironmentState::Disconnecting => {
                    let this = Arc::clone(self);
                    let req = DisconnectRequest {
                        force: true,
                        reset_snapshots: false,
                    };
                    tokio::spawn(async move { this.run_disconnect(&account, &id, req).await });
                }
                EnvironmentState::Connecting | EnvironmentState::Reconnecting => {
                    let running = match &env.vm_id {
                        Some(vm) => matches!(self.core.vms().find_vm_of(&account, vm).await?,
                            Some(v) if v.status == VmStatus::Running),
                        None => false,
                    };
                    if running {
                        env.state = EnvironmentState::Connected;
                    } else {
                        self.release_scratch(&mut env).await;
                        env.state = EnvironmentState::Disconnected;
                        env.connection = None;
                        env.vm_id = None;
                        env.status = Status::error(
                            StatusCode::Aborted,
                            "the server restarted while the environment connected; connect again",
                        );
                    }
                    env.update_time = Timestamp::now();
                    self.docs.save(&env).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// How a snapshot is referred to as an image: its id and digest.
pub fn snapshot_image_ref(s: &Snapshot) -> String {
    match &s.image {
        Some(image) => format!("snapshots/{}@{}", s.id, image.digest),
        None => format!("snapshots/{}", s.id),
    }
}

/// The gateway code of a failure, for a resource's status.
pub fn status_code(e: &CoreError) -> StatusCode {
    match e {
        CoreError::NotFound { .. } => StatusCode::NotFound,
        CoreError::InvalidArgument { .. } => StatusCode::InvalidArgument,
        CoreError::Conflict(_) => StatusCode::AlreadyExists,
        CoreError::FailedPrecondition(_) => StatusCode::FailedPrecondition,
        CoreError::PermissionDenied(_) => StatusCode::PermissionDenied,
        CoreError::ResourceExhausted(_) | CoreError::RateLimited { .. } => {
            StatusCode::ResourceExhausted
        }
        CoreError::Unauthenticated => StatusCode::Unauthenticated,
        CoreError::Unavailable(_) | CoreError::Upstream(_) => StatusCode::Unavailable,
        CoreError::DeadlineExceeded(_) => StatusCode::DeadlineExceeded,
        CoreError::Runtime(_) | CoreError::Store(_) => StatusCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_pinned_by_digest() {
        let d = "sha256:abc";
        assert_eq!(
            pinned_reference("127.0.0.1:5000/a/b:v1", d),
            "127.0.0.1:5000/a/b@sha256:abc"
        );
        assert_eq!(
            pinned_reference("127.0.0.1:5000/a/b", d),
            "127.0.0.1:5000/a/b@sha256:abc"
        );
        assert_eq!(
            pinned_reference("repo:tag@sha256:old", d),
            "repo@sha256:abc"
        );
        assert_eq!(
            pinned_reference("localhost:5000/x", d),
            "localhost:5000/x@sha256:abc"
        );
    }
}
