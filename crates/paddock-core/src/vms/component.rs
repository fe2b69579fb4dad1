//! The VM component ([`Vms`]): its state and ports, and a VM's create,
//! start, patch and end. The VMs' other operations are `impl Vms` blocks
//! in the sibling files, by concern. Lifecycle
//! changes of one VM are serialized by a per-VM lock, so a delete that
//! races a start waits for it and then stops what it started.

use crate::cluster::NodeCall;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use crate::clock::Timestamp;
use crate::error::{error_chain, CoreError, RuntimeError};
use crate::ids::{AccountId, SessionId, VmId};
use crate::images::ImageBackend;
use crate::model::{
    EgressPolicy, EnvStatus, ImageConfig, Limits, Resources, RootfsSpec, RuntimeHandle, Vm,
    VmFilter, VmPatch, VmSpec, VmStatus,
};
use crate::network_backend::NetworkBackend;
use crate::provider::Provider;
use crate::store::VmRecords;

/// Why a VM ended, recorded in its `status_reason`.
pub const REASON_LIFETIME_EXPIRED: &str = "lifetime expired";
pub(crate) const REASON_DELETED: &str = "deleted";

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub limits: Limits,
    pub default_variant: String,
    pub max_collected_output: usize,
    /// How often lifetimes and liveness are checked.
    pub sweep_interval: Duration,
    /// The egress policy of VMs that set none.
    pub default_egress: EgressPolicy,
    /// How many sandboxes of the default shape are kept booted ahead of
    /// demand (`[sandbox] warm_pool`); 0: none.
    pub warm_pool: usize,
    /// Per-account limits (`[quotas]`).
    pub quotas: Arc<crate::quotas::Quotas>,
    /// How often usage is sampled (`[usage] sample_seconds`).
    pub usage_interval: Duration,
    /// The rates usage reports price consumption at (`[usage]`).
    pub usage_prices: crate::usage::UsagePrices,
    /// How long audit events are kept (`[audit] retention_days`).
    pub audit_retention: Duration,
    /// The node this process is in a store several share; `None`: the
    /// store is this process's alone.
    pub node: Option<crate::ids::NodeId>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            default_variant: "default".to_owned(),
            max_collected_output: 16 * 1024 * 1024,
            sweep_interval: Duration::from_millis(250),
            default_egress: EgressPolicy::allow_all(),
            warm_pool: 0,
            quotas: Arc::new(crate::quotas::Quotas::unlimited()),
            usage_interval: Duration::from_secs(15),
            usage_prices: crate::usage::UsagePrices::default(),
            audit_retention: Duration::from_secs(90 * 86_400),
            node: None,
        }
    }
}

/// The VM component: VMs' records and sandboxes, the agent channel
/// (exec, files, PTYs), sessions, VM networking and the sweeper. It holds
/// the ports VMs run on and the components a VM uses (its image or
/// snapshot, volumes, vault secrets, shares, quota, usage and webhook
/// events); accounts' keys, SSH keys, the audit log and the products'
/// documents are not its business. [`crate::service::Service`] composes it.
pub struct Vms {
    pub(crate) store: Arc<dyn VmRecords>,
    /// The default provider: what VMs of the VM API and the gateway run on.
    pub(crate) provider: Arc<dyn Provider>,
    /// Every provider by name, the default one included.
    pub(crate) providers: BTreeMap<&'static str, Arc<dyn Provider>>,
    pub(crate) image_backend: Arc<dyn ImageBackend>,
    /// Other nodes' sandboxes (a store several nodes share).
    pub(crate) remote_nodes: Option<Arc<dyn crate::provider::RemoteNodes>>,
    /// The nodes sharing the store, when there can be several: creates
    /// that may run anywhere are placed, and changes to another node's VM
    /// are sent there ([`super::delegation`]).
    pub(crate) membership: std::sync::OnceLock<Arc<crate::cluster::Membership>>,
    pub(crate) config: ServiceConfig,
    pub(crate) network: Arc<dyn NetworkBackend>,
    vm_locks: crate::keyed_locks::KeyedLocks<VmId>,
    /// When each VM was last used, for `auto_stop`.
    pub(crate) activity: Arc<super::activity::Activity>,
    /// When this process started: activity before it is unknown.
    pub(crate) started_at: std::time::Instant,
    /// VMs whose agent missed a deadline.
    pub(crate) stuck_agents: crate::stuck_agents::StuckAgents,
    /// Sandboxes booted ahead of demand.
    pub(crate) warm_pool: crate::warm_pool::WarmPool,
    pub(crate) parts: VmParts,
    /// Products that watch VMs' activity.
    pub(crate) observers: super::observing::Observers,
}

/// The host-side ports the VMs run on.
pub struct VmBackends {
    pub provider: Arc<dyn Provider>,
    /// Further providers a VM may name (`local`, `docker`).
    pub more_providers: Vec<Arc<dyn Provider>>,
    pub images: Arc<dyn ImageBackend>,
    pub network: Arc<dyn NetworkBackend>,
    /// The other nodes' sandboxes, reached through those nodes.
    pub remote_nodes: Option<Arc<dyn crate::provider::RemoteNodes>>,
}

/// The components a VM uses.
pub(crate) struct VmParts {
    pub accounts: Arc<crate::accounts::Accounts>,
    pub images: Arc<crate::artifacts::library::ImageLibrary>,
    pub snapshots: Arc<crate::snapshots::Snapshots>,
    pub volumes: Arc<crate::volumes::Volumes>,
    pub vaults: Arc<crate::vaults::Vaults>,
    pub shares: Arc<crate::shares::Shares>,
    pub usage: Arc<crate::usage::Usage>,
    pub webhooks: Arc<crate::networking::webhooks::Webhooks>,
    /// Seals the keys suspended VMs' memory is sealed under.
    pub keyring: Arc<crate::secrets::Keyring>,
}

impl Vms {
    pub(crate) fn new(
        store: Arc<dyn VmRecords>,
        backends: VmBackends,
        config: ServiceConfig,
        parts: VmParts,
    ) -> Arc<Self> {
        let providers = std::iter::once(&backends.provider)
            .chain(&backends.more_providers)
            .map(|p| (p.name(), Arc::clone(p)))
            .collect();
        Arc::new(Self {
            store,
            providers,
            provider: backends.provider,
            image_backend: backends.images,
            config,
            network: backends.network,
            remote_nodes: backends.remote_nodes,
            membership: std::sync::OnceLock::new(),
            vm_locks: crate::keyed_locks::KeyedLocks::default(),
            activity: Arc::default(),
            started_at: std::time::Instant::now(),
            stuck_agents: Default::default(),
            warm_pool: Default::default(),
            parts,
            observers: Default::default(),
        })
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The account's VM `id`, if it has one (where [`Vms::get_vm`]
    /// would answer `NotFound`).
    pub async fn find_vm_of(
        &self,
        account: &AccountId,
        id: &VmId,
    ) -> Result<Option<Vm>, CoreError> {
        Ok(self.store.get_vm(account, id).await?)
    }

    /// The account that owns VM `id`, if it exists: for a caller that
    /// holds a credential bound to the VM alone (an E2B sandbox's access
    /// token), which it checks with [`Vms::vm_credential`].
    pub async fn owner_of(&self, id: &VmId) -> Result<Option<AccountId>, CoreError> {
        Ok(self.store.find_vm(id).await?.map(|vm| vm.account_id))
    }

    /// A credential for VM `id` of `account` for `purpose`: derived from
    /// the master key, so nothing is stored and nothing can be read back
    /// from the store; it changes when the master key is rotated.
    pub fn vm_credential(&self, purpose: &str, account: &AccountId, id: &VmId) -> String {
        self.parts
            .keyring
            .mac(&format!("vm-credential:{purpose}:{account}:{id}"))
    }

    /// A credential for `subject` of `account` for `purpose` (a signed
    /// upload URL), derived from the master key as
    /// [`Vms::vm_credential`] is.
    pub fn account_credential(&self, purpose: &str, account: &AccountId, subject: &str) -> String {
        self.parts
            .keyring
            .mac(&format!("credential:{purpose}:{account}:{subject}"))
    }

    pub fn provider_name(&self) -> &'static str {
        self.provider.name()
    }

    /// The provider named `name`, if this server runs it.
    pub fn provider_named(&self, name: &str) -> Option<Arc<dyn Provider>> {
        self.providers.get(name).cloned()
    }

    /// The provider `vm` runs on, or why there is none: this server no
    /// longer runs it (its configuration dropped it).
    pub(crate) fn provider_of(&self, vm: &Vm) -> Result<Arc<dyn Provider>, RuntimeError> {
        if !self.is_local(vm) {
            // Another node's sandbox: reached through that node.
            let remote = vm
                .node
                .as_ref()
                .and_then(|node| self.remote_nodes.as_ref()?.provider_on(node));
            return match remote {
                Some(p) => Ok(p),
                None => self.check_local(vm).map(|()| Arc::clone(&self.provider)),
            };
        }
        self.provider_named(&vm.provider).ok_or_else(|| {
            RuntimeError::Unsupported(format!(
                "the {} provider is not configured on this server",
                vm.provider
            ))
        })
    }

    /// Whether `vm`'s sandbox runs: never on a provider this server does
    /// not run, so reconciliation marks such VMs failed instead of
    /// handing them to another provider.
    pub(crate) fn is_alive(&self, vm: &Vm, handle: RuntimeHandle) -> bool {
        self.provider_named(&vm.provider)
            .is_some_and(|p| p.is_alive(&vm.id, handle))
    }

    /// VM `id` running on this node, for another node's call on it
    /// (whatever the account: the caller is a node, which checked its
    /// tenant). `NotFound` unless it runs here.
    pub(crate) async fn running_here(&self, id: &VmId) -> Result<Vm, CoreError> {
        self.store
            .find_vm(id)
            .await?
            .filter(|vm| vm.status == VmStatus::Running && self.is_local(vm))
            .ok_or_else(|| CoreError::not_found("VM", id))
    }

    /// The socket of a running sandbox's agent on this node, for another
    /// node's tunnel to it ([`Vms::running_here`]).
    pub async fn local_agent_socket(&self, id: &VmId) -> Result<std::path::PathBuf, CoreError> {
        let vm = self.running_here(id).await?;
        self.provider_named(&vm.provider)
            .and_then(|p| p.agent_socket(id))
            .ok_or_else(|| {
                CoreError::FailedPrecondition(format!(
                    "{} sandboxes cannot be reached from another node",
                    vm.provider
                ))
            })
    }

    /// The node a change to VM `id` must be made on: another node's, while
    /// the VM is not lost (a lost VM's record is changed on any node);
    /// `None` for this node's VMs and for VMs that do not exist.
    pub async fn node_of(&self, id: &VmId) -> Result<Option<crate::ids::NodeId>, CoreError> {
        Ok(self
            .store
            .find_vm(id)
            .await?
            .filter(|vm| !self.is_local(vm) && vm.status != VmStatus::Lost)
            .and_then(|vm| vm.node))
    }

    /// Where blob `digest` is on this node, for another node's fetch.
    pub async fn local_blob(&self, digest: &str) -> Option<std::path::PathBuf> {
        self.image_backend.local_blob(digest).await
    }

    /// The providers this node runs sandboxes on.
    pub fn provider_names(&self) -> Vec<String> {
        self.providers.keys().map(|k| (*k).to_owned()).collect()
    }

    /// Whether `vm`'s sandbox is this node's to run: a VM of another node
    /// is left to it (its process handle means nothing here).
    pub(crate) fn is_local(&self, vm: &Vm) -> bool {
        match (&vm.node, &self.config.node) {
            (Some(vm_node), Some(this)) => vm_node == this,
            _ => true,
        }
    }

    /// `Unavailable` for a VM another node runs: its sandbox is out of
    /// this node's reach.
    pub(crate) fn check_local(&self, vm: &Vm) -> Result<(), RuntimeError> {
        if self.is_local(vm) {
            return Ok(());
        }
        Err(RuntimeError::Unavailable(format!(
            "the VM runs on node {}, not this one ({}): send its calls there",
            vm.node.as_ref().map_or("?", |n| n.as_str()),
            self.config.node.as_ref().map_or("?", |n| n.as_str()),
        )))
    }

    /// Stops `vm`'s sandbox and frees what it held on the host; on a
    /// provider this server does not run there is nothing of it to stop.
    pub(crate) async fn stop_sandbox(
        &self,
        vm: &Vm,
        handle: Option<RuntimeHandle>,
    ) -> Result<(), RuntimeError> {
        if !self.is_local(vm) {
            // A lost VM's record ends here; its node frees the sandbox
            // (an orphan by then) when it comes back.
            return Ok(());
        }
        match self.provider_named(&vm.provider) {
            Some(p) => p.stop(&vm.id, handle).await,
            None => Ok(()),
        }
    }

    pub async fn lock_vm(&self, id: &VmId) -> OwnedMutexGuard<()> {
        self.vm_locks.lock(id).await
    }

    /// Checks that the account has room for one more VM of `resources`
    /// (its capacity quota), under the account's create lock, which the
    /// caller holds until the VM counts against the quota.
    pub(crate) async fn reserve_room(
        &self,
        account: &AccountId,
        resources: &Resources,
    ) -> Result<crate::accounts::CreatesLock, CoreError> {
        let creates = self.parts.accounts.lock_creates(account).await?;
        let quota = self.parts.accounts.quota(account).await?;
        let usage = self.store.account_usage(account).await?;
        crate::quotas::check_room(
            &quota,
            &usage,
            u64::from(resources.memory_mb()),
            u64::from(resources.vcpu_count()),
        )?;
        Ok(creates)
    }

    /// Queues a VM lifecycle event (`vm.created`, `vm.running`, …) for the
    /// account's webhooks.
    pub(crate) async fn vm_event(&self, vm: &Vm, event_type: &str) {
        let data = serde_json::json!({
            "vm_id": vm.id.as_str(),
            "session_id": vm.session_id.as_str(),
            "status": vm.status.as_str(),
            "status_reason": vm.status_reason,
            "provider": vm.provider,
        });
        self.parts
            .webhooks
            .emit(&vm.account_id, event_type, data)
            .await;
    }

    // ---- VM lifecycle -------------------------------------------------------

    pub fn resources(
        &self,
        memory_mb: Option<i64>,
        vcpu_count: Option<i64>,
        disk_mb: Option<i64>,
    ) -> Result<Resources, CoreError> {
        Resources::with_disk(memory_mb, vcpu_count, disk_mb, &self.config.limits)
            .map_err(|e| CoreError::invalid(e.field(), e.to_string()))
    }

    /// Whether `account` may run sandboxes on `provider`.
    pub async fn may_use(
        &self,
        provider: &dyn Provider,
        account: &AccountId,
    ) -> Result<bool, CoreError> {
        let Some(admitted) = provider.admitted_accounts() else {
            return Ok(true);
        };
        if admitted.contains(account.as_str()) {
            return Ok(true);
        }
        let name = self
            .parts
            .accounts
            .get_account(account)
            .await?
            .map(|a| a.name);
        Ok(name.is_some_and(|n| admitted.contains(&n)))
    }

    /// Creates a VM. With `wait`, returns once it runs or failed; without,
    /// returns at once in `creating` while the start goes on.
    pub async fn create_vm(
        self: &Arc<Self>,
        account: &AccountId,
        mut spec: VmSpec,
        wait: bool,
    ) -> Result<Vm, CoreError> {
        if let Some(made) = self.create_elsewhere(account, &spec, wait).await {
            return made;
        }
        if let Some(id) = &spec.options.snapshot_id {
            let snapshot = self.parts.snapshots.get(account, id).await?;
            if snapshot.status != crate::model::SnapshotStatus::Ready {
                return Err(CoreError::FailedPrecondition(format!(
                    "snapshot {id} is {}",
                    snapshot.status.as_str()
                )));
            }
            spec.image_variant = snapshot.source;
        }
        let provider = match &spec.provider {
            Some(name) => self.provider_named(name).ok_or_else(|| {
                CoreError::invalid(
                    "provider",
                    format!("the {name} provider is not enabled on this server"),
                )
            })?,
            None => Arc::clone(&self.provider),
        };
        if !self.may_use(provider.as_ref(), account).await? {
            return Err(CoreError::PermissionDenied(format!(
                "this account may not run sandboxes on the {} provider (the operator allows it per account)",
                provider.name()
            )));
        }
        if spec.options.snapshot_id.is_none()
            && !provider.resolves_images()
            && !provider.has_variant(&spec.image_variant)
            && !self.image_backend.is_reference(&spec.image_variant)
        {
            return Err(CoreError::invalid(
                "image_variant",
                format!(
                    "{:?} is neither a configured variant nor an image reference",
                    spec.image_variant
                ),
            ));
        }
        if let Some(l) = spec.lifetime_seconds {
            self.check_lifetime(l)?;
        }
        if spec.options.auto_suspend {
            provider
                .can_suspend(&spec.image_variant)
                .map_err(|e| CoreError::invalid("auto_suspend", e.to_string()))?;
        }
        self.check_policy_supported(spec.options.egress_policy.as_ref())?;
        // From the capacity check until the row exists, no other create of
        // the account runs: two racing creates cannot both fit.
        let creates = self.reserve_room(account, &spec.resources).await?;
        let volumes = std::mem::take(&mut spec.volumes);
        let mut vm = self.new_vm(account, spec);
        let prepared = self.claim_prepared(&mut vm, !volumes.is_empty());
        // A host at its limit refuses the create (503) rather than making
        // a VM that fails.
        if prepared.is_none() && self.wants_network(&vm) {
            self.network.room().map_err(CoreError::Unavailable)?;
        }
        if let Err(e) = self
            .parts
            .volumes
            .reserve_for_new_vm(account, &vm.id, &volumes)
            .await
        {
            self.give_back_prepared(&vm, prepared);
            return Err(e);
        }
        if let Err(e) = self.store.insert_vm(&vm).await {
            self.parts.volumes.release(&vm.id).await;
            self.give_back_prepared(&vm, prepared);
            return Err(e.into());
        }
        drop(creates);
        self.vm_event(&vm, "vm.created").await;
        let this = Arc::clone(self);
        let id = vm.id.clone();
        let started = tokio::spawn(async move { this.finish_start(&id, prepared).await });
        if !wait {
            return Ok(vm);
        }
        match started.await {
            Ok(result) => result,
            Err(join) => Err(CoreError::Unavailable(format!(
                "VM start task failed: {join}"
            ))),
        }
    }

    /// Boots `vm`'s sandbox: its root filesystem, its network (recorded
    /// before the sandbox boots), then the provider's start.
    pub(crate) async fn boot_vm(&self, vm: &mut Vm) -> Result<RuntimeHandle, CoreError> {
        let rootfs = self.rootfs_for(vm).await?;
        self.attach_network(vm).await?;
        Ok(self.provider_of(vm)?.start(vm, &rootfs).await?)
    }

    /// Boots the stored `creating` VM `id` (or takes `prepared`, the
    /// sandbox from the warm pool it claimed) and records how that went.
    pub(crate) async fn finish_start(
        &self,
        id: &VmId,
        prepared: Option<RuntimeHandle>,
    ) -> Result<Vm, CoreError> {
        let _guard = self.lock_vm(id).await;
        let Some(mut vm) = self.store.find_vm(id).await? else {
            return Err(CoreError::not_found("VM", id));
        };
        if vm.status != VmStatus::Creating {
            // Deleted or expired while waiting for the lock (which
            // stopped the prepared sandbox with the VM).
            return Ok(vm);
        }
        // Secrets are resolved before anything starts: a VM never runs
        // with part of its environment.
        let secrets = if vm.options.vault_ids.is_empty() {
            Ok(Vec::new())
        } else {
            self.parts
                .vaults
                .vault_env(&vm.account_id, &vm.options.vault_ids)
                .await
        };
        let secrets = match secrets {
            Ok(s) => s,
            Err(message) => {
                vm.options.env_status = EnvStatus::Error;
                vm.options.env_error = Some(message.clone());
                vm.status = VmStatus::Failed;
                vm.status_reason = Some(format!("environment: {message}"));
                vm.updated_at = Timestamp::now();
                self.parts.volumes.release(&vm.id).await;
                self.store.update_vm(&vm).await?;
                self.vm_event(&vm, "vm.failed").await;
                return Ok(vm);
            }
        };
        let started = match prepared {
            Some(handle) => self.adopt_prepared(&vm, handle).await,
            None => self.boot_vm(&mut vm).await,
        };
        let started = match started {
            Ok(handle) => self.mount_volumes(&mut vm, handle).await,
            Err(e) => Err(e),
        };
        vm.options.vault_vars = secrets.iter().map(|(k, _)| k.clone()).collect();
        let started = match started {
            Ok(handle) if !secrets.is_empty() => {
                let staged = async {
                    self.provider_of(&vm)?
                        .channel()
                        .stage_env(&vm.id, secrets)
                        .await
                };
                match staged.await {
                    Ok(()) => {
                        vm.options.env_status = EnvStatus::Ready;
                        Ok(handle)
                    }
                    Err(e) => {
                        vm.options.env_status = EnvStatus::Error;
                        vm.options.env_error = Some("the secrets could not be staged".into());
                        if let Err(stop) = self.stop_sandbox(&vm, Some(handle)).await {
                            tracing::error!(vm_id = %vm.id, error = %error_chain(&stop), "could not stop a VM whose secrets failed");
                        }
                        Err(CoreError::from(e))
                    }
                }
            }
            other => other,
        };
        match started {
            Ok(handle) => {
                let now = Timestamp::now();
                vm.status = VmStatus::Running;
                vm.runtime = Some(handle);
                vm.started_at = Some(now);
                vm.updated_at = now;
                // Its lifetime runs from when it is up: a slow boot (a
                // microVM under emulation) does not use it up. Until then
                // the bound set at create ends a start that never finishes.
                vm.expires_at = vm.lifetime_seconds.map(|l| now.plus_seconds(l));
                // Its vaults' services: a VM that cannot have them runs
                // without, and says why.
                if let Err(e) = self.apply_vault_services(&mut vm).await {
                    tracing::warn!(vm_id = %vm.id, error = %error_chain(&e), "vault services not in force");
                    vm.options.env_status = EnvStatus::Error;
                    vm.options.env_error = Some(format!("vault services: {}", error_chain(&e)));
                }
                tracing::info!(vm_id = %vm.id, pid = handle.pid, "VM running");
            }
            Err(e) => {
                tracing::warn!(vm_id = %vm.id, error = %error_chain(&e), "VM failed to start");
                vm.status = VmStatus::Failed;
                vm.status_reason = Some(error_chain(&e));
                vm.updated_at = Timestamp::now();
                self.parts.volumes.release(&vm.id).await;
                self.release_network(&mut vm).await;
            }
        }
        self.store.update_vm(&vm).await?;
        let event = if vm.status == VmStatus::Running {
            "vm.running"
        } else {
            "vm.failed"
        };
        self.vm_event(&vm, event).await;
        Ok(vm)
    }

    /// Mounts the volumes a starting VM asked for; on failure stops it.
    async fn mount_volumes(
        &self,
        vm: &mut Vm,
        handle: RuntimeHandle,
    ) -> Result<RuntimeHandle, CoreError> {
        match self.mount_attachments(vm, handle).await {
            Ok(()) => Ok(handle),
            Err(e) => {
                if let Err(stop) = self.stop_sandbox(vm, Some(handle)).await {
                    tracing::error!(vm_id = %vm.id, error = %error_chain(&stop), "could not stop a VM whose volumes failed");
                }
                Err(e)
            }
        }
    }

    /// The root filesystem of `vm`: its configured variant, or its image's
    /// layers (pulled first if the account does not have it yet).
    pub(crate) async fn rootfs_for(&self, vm: &mut Vm) -> Result<RootfsSpec, CoreError> {
        if let Some(id) = vm.options.snapshot_id.clone() {
            let (rootfs, digest) = self.parts.snapshots.rootfs(&vm.account_id, &id).await?;
            vm.image_digest = Some(digest);
            return Ok(rootfs);
        }
        let provider = self.provider_of(vm)?;
        if provider.resolves_images() {
            return Ok(RootfsSpec::Reference(vm.image_variant.clone()));
        }
        if provider.has_variant(&vm.image_variant) {
            return Ok(RootfsSpec::Variant {
                name: vm.image_variant.clone(),
                layers: Vec::new(),
                defaults: ImageConfig::default(),
            });
        }
        let image = self
            .parts
            .images
            .ensure(&vm.account_id, &vm.image_variant)
            .await?;
        vm.image_digest = Some(image.digest.clone());
        self.image_backend.ensure_layers(&image.layers).await?;
        let dirs = self.image_backend.layer_dirs(&image.layers);
        // An image built `FROM` a variant is its layers over that variant.
        match image.config.base_variant() {
            Some(name) if provider.has_variant(name) => Ok(RootfsSpec::Variant {
                name: name.to_owned(),
                layers: dirs,
                defaults: image.config.clone(),
            }),
            Some(name) => Err(CoreError::FailedPrecondition(format!(
                "image {} was built from this server's variant {name:?}, which it no longer has",
                vm.image_variant
            ))),
            None => Ok(RootfsSpec::Layers {
                dirs,
                defaults: image.config,
            }),
        }
    }

    /// A new VM record in `creating`, for `spec`.
    pub(crate) fn new_vm(&self, account: &AccountId, spec: VmSpec) -> Vm {
        let now = Timestamp::now();
        let provider = spec
            .provider
            .unwrap_or_else(|| self.provider.name().to_owned());
        let mut options = spec.options;
        options.accelerator = self
            .provider_named(&provider)
            .and_then(|p| p.accelerator())
            .map(str::to_owned);
        Vm {
            id: VmId::generate(),
            account_id: account.clone(),
            session_id: spec.session_id.unwrap_or_else(SessionId::generate),
            status: VmStatus::Creating,
            status_reason: None,
            provider,
            image_variant: spec.image_variant,
            image_digest: None,
            resources: spec.resources,
            metadata: spec.metadata,
            env: spec.env,
            lifetime_seconds: spec.lifetime_seconds,
            created_at: now,
            updated_at: now,
            started_at: None,
            expires_at: spec.lifetime_seconds.map(|l| now.plus_seconds(l)),
            terminated_at: None,
            runtime: None,
            options,
            network: None,
            node: self.config.node.clone(),
        }
    }

    fn check_lifetime(&self, seconds: u64) -> Result<(), CoreError> {
        let max = self.config.limits.max_lifetime_seconds;
        if seconds == 0 || seconds > max {
            return Err(CoreError::invalid(
                "vm_lifetime_seconds",
                format!("must be between 1 and {max}"),
            ));
        }
        Ok(())
    }

    pub async fn get_vm(&self, account: &AccountId, id: &VmId) -> Result<Vm, CoreError> {
        self.store
            .get_vm(account, id)
            .await?
            .ok_or_else(|| CoreError::not_found("VM", id))
    }

    pub async fn list_vms(
        &self,
        account: &AccountId,
        filter: &VmFilter,
    ) -> Result<Vec<Vm>, CoreError> {
        Ok(self.store.list_vms(account, filter).await?)
    }

    pub async fn patch_vm(
        &self,
        account: &AccountId,
        id: &VmId,
        patch: VmPatch,
    ) -> Result<Vm, CoreError> {
        if let Some(node) = self.owner_elsewhere(id).await? {
            let call = NodeCall::Patch {
                account: account.clone(),
                vm: id.clone(),
                patch,
            };
            return self.vm_on(&node, call).await;
        }
        self.get_vm(account, id).await?;
        let _guard = self.lock_vm(id).await;
        let mut vm = self.get_vm(account, id).await?;
        if patch.is_empty() {
            return Ok(vm);
        }
        if !vm.status.is_active() {
            return Err(CoreError::FailedPrecondition(format!(
                "the VM is {}; only a creating or running VM can be changed",
                vm.status.as_str()
            )));
        }
        // Everything is validated before anything changes: a refused
        // patch leaves the sandbox's limits and the record as they were.
        if let Some(l) = patch.lifetime_seconds {
            self.check_lifetime(l)?;
        }
        if patch.auto_suspend == Some(true) {
            self.provider_of(&vm)?
                .can_suspend(&vm.image_variant)
                .map_err(|e| CoreError::invalid("auto_suspend", e.to_string()))?;
        }
        self.check_policy_supported(patch.egress_policy.as_ref())?;
        let resources = if patch.memory_mb.is_some() || patch.vcpu_count.is_some() {
            Some(
                self.resources(
                    Some(
                        patch
                            .memory_mb
                            .unwrap_or(i64::from(vm.resources.memory_mb())),
                    ),
                    Some(
                        patch
                            .vcpu_count
                            .unwrap_or(i64::from(vm.resources.vcpu_count())),
                    ),
                    None,
                )?
                // A sandbox's disk keeps its size.
                .with_stored_disk(vm.resources.disk_mb()),
            )
        } else {
            None
        };
        // The vaults' secrets are read (and the vaults found) before
        // anything changes; a running VM then gets the new set first, as
        // the change most likely to fail.
        let vault_env = match &patch.vault_ids {
            Some(ids) => Some(self.parts.vaults.command_secrets(account, ids).await?),
            None => None,
        };
        if let (Some(ids), Some(env)) = (patch.vault_ids, vault_env) {
            let running = vm.status == VmStatus::Running;
            if running {
                self.swap_vault_env(&mut vm, env).await?;
            }
            vm.options.vault_ids = ids;
            if running {
                self.apply_vault_services(&mut vm).await?;
            }
        }
        if let Some(policy) = patch.egress_policy {
            self.apply_egress(&mut vm, policy).await?;
        }
        if let Some(resources) = resources {
            if vm.status == VmStatus::Running {
                self.provider_of(&vm)?
                    .update_resources(&vm.id, &resources)
                    .await?;
            }
            vm.resources = resources;
        }
        if let Some(l) = patch.lifetime_seconds {
            vm.lifetime_seconds = Some(l);
            vm.expires_at = Some(Timestamp::now().plus_seconds(l));
        }
        if let Some(m) = patch.metadata {
            vm.metadata = m;
        }
        if let Some(on) = patch.snapshot_on_terminate {
            vm.options.snapshot_on_terminate = on;
        }
        if let Some(on) = patch.auto_suspend {
            vm.options.auto_suspend = on;
        }
        if let Some(on) = patch.auto_resume {
            vm.options.auto_resume = on;
        }
        if let Some(name) = patch.snapshot_name {
            vm.options.snapshot_name = Some(name);
        }
        vm.updated_at = Timestamp::now();
        self.store.update_vm(&vm).await?;
        Ok(vm)
    }

    /// Terminates a VM and frees everything it held. Idempotent.
    pub async fn delete_vm(&self, account: &AccountId, id: &VmId) -> Result<Vm, CoreError> {
        if let Some(node) = self.owner_elsewhere(id).await? {
            let call = NodeCall::Delete {
                account: account.clone(),
                vm: id.clone(),
            };
            return self.vm_on(&node, call).await;
        }
        let vm = self.get_vm(account, id).await?;
        self.terminate(vm.id, REASON_DELETED).await
    }

    pub(crate) async fn terminate(&self, id: VmId, reason: &str) -> Result<Vm, CoreError> {
        match self.begin_ending(id, NetworkRelease::Alongside).await? {
            Ending::Already(vm) => Ok(vm),
            Ending::Ending(mut ending) => {
                // Released already, unless that failed or the VM is
                // another node's.
                self.release_network(&mut ending.vm).await;
                self.finish_ending(ending, reason).await
            }
        }
    }

    /// The first part of ending a VM, under its lock (which the result
    /// holds): its sandbox, volumes and shares go. Its network and its
    /// record are the caller's to finish ([`Vms::finish_ending`]).
    pub(crate) async fn begin_ending(
        &self,
        id: VmId,
        network: NetworkRelease,
    ) -> Result<Ending, CoreError> {
        let guard = self.lock_vm(&id).await;
        let Some(mut vm) = self.store.find_vm(&id).await? else {
            return Err(CoreError::not_found("VM", &id));
        };
        if vm.status == VmStatus::Terminated {
            return Ok(Ending::Already(vm));
        }
        // Another node's VM is that node's to end, unless the node is gone
        // (the VM lost): then its record ends here.
        if vm.status != VmStatus::Lost {
            self.check_local(&vm)?;
        } else {
            return Ok(Ending::Ending(EndingVm {
                _guard: guard,
                began: std::time::Instant::now(),
                sandbox_gone: std::time::Duration::ZERO,
                network_gone: None,
                vm,
            }));
        }
        self.snapshot_on_terminate(&vm).await;
        if vm.status != VmStatus::Stopping {
            vm.status = VmStatus::Stopping;
            vm.updated_at = Timestamp::now();
            self.store.update_vm(&vm).await?;
        }
        let began = std::time::Instant::now();
        // The network goes while the sandbox does: neither waits for the
        // other, and the veth goes before the rules that stop it from
        // spoofing (see the network backend), so the dying sandbox is
        // cut off first.
        let releasing = match network {
            NetworkRelease::Alongside => vm.network.take(),
            NetworkRelease::ByCaller => None,
        };
        let release = async {
            let network = releasing?;
            let t = std::time::Instant::now();
            let kept = self.free_network(&vm.id, network).await;
            Some((kept, t.elapsed()))
        };
        let stop = async {
            let stopped = self.stop_sandbox(&vm, vm.runtime).await;
            (stopped, began.elapsed())
        };
        // Its shares end meanwhile: they only reach the VM through its
        // network, which is going.
        let ((stopped, sandbox_gone), released, ()) =
            tokio::join!(stop, release, self.parts.shares.end_shares(&vm.id));
        let network_gone = released.as_ref().map(|(_, took)| *took);
        if let Some((kept, _)) = released {
            vm.network = kept;
        }
        if let Err(e) = stopped {
            if network_gone.is_some() {
                // The record must not name a network that is free now.
                vm.updated_at = Timestamp::now();
                self.store.update_vm(&vm).await?;
            }
            return Err(e.into());
        }
        self.parts.volumes.release(&vm.id).await;
        Ok(Ending::Ending(EndingVm {
            _guard: guard,
            vm,
            began,
            sandbox_gone,
            network_gone,
        }))
    }

    /// Records a VM [`Vms::begin_ending`] began as terminated (its network
    /// released by now), and tells of it.
    pub(crate) async fn finish_ending(
        &self,
        ending: EndingVm,
        reason: &str,
    ) -> Result<Vm, CoreError> {
        let EndingVm {
            _guard,
            mut vm,
            began,
            sandbox_gone,
            network_gone,
        } = ending;
        // Released alongside the sandbox, or by the caller after it.
        let network_gone =
            network_gone.unwrap_or_else(|| began.elapsed().saturating_sub(sandbox_gone));
        let now = Timestamp::now();
        vm.status = VmStatus::Terminated;
        if vm.status_reason.is_none() {
            vm.status_reason = Some(reason.to_owned());
        }
        vm.runtime = None;
        vm.terminated_at = Some(now);
        vm.updated_at = now;
        self.store.update_vm(&vm).await?;
        let event = if reason == REASON_LIFETIME_EXPIRED {
            "vm.expired"
        } else {
            "vm.terminated"
        };
        self.vm_event(&vm, event).await;
        tracing::info!(
            vm_id = %vm.id,
            reason,
            sandbox_us = sandbox_gone.as_micros() as u64,
            network_us = network_gone.as_micros() as u64,
            "VM terminated"
        );
        Ok(vm)
    }

    pub(crate) async fn mark_failed(&self, id: &VmId, reason: &str) -> Result<(), CoreError> {
        let _guard = self.lock_vm(id).await;
        let Some(mut vm) = self.store.find_vm(id).await? else {
            return Ok(());
        };
        if !vm.status.holds_resources() {
            return Ok(());
        }
        // Free what is left of it (cgroup, run dir); the processes are gone.
        if let Err(e) = self.stop_sandbox(&vm, vm.runtime).await {
            tracing::warn!(vm_id = %vm.id, error = %error_chain(&e), "cleanup of a dead VM failed");
        }
        self.parts.volumes.release(&vm.id).await;
        self.parts.shares.end_shares(&vm.id).await;
        self.release_network(&mut vm).await;
        vm.status = VmStatus::Failed;
        vm.status_reason = Some(reason.to_owned());
        vm.runtime = None;
        vm.updated_at = Timestamp::now();
        self.store.update_vm(&vm).await?;
        self.vm_event(&vm, "vm.failed").await;
        tracing::warn!(vm_id = %vm.id, reason, "VM failed");
        Ok(())
    }
}

/// What [`Vms::begin_ending`] found.
pub(crate) enum Ending {
    /// The VM had ended before: nothing was done.
    Already(Vm),
    Ending(EndingVm),
}

/// A VM being ended: its lock held until it is recorded as terminated.
pub(crate) struct EndingVm {
    _guard: OwnedMutexGuard<()>,
    pub(crate) vm: Vm,
    began: std::time::Instant,
    sandbox_gone: Duration,
    /// How long its network took to go, when it went alongside.
    network_gone: Option<Duration>,
}

/// Who releases an ending VM's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetworkRelease {
    /// [`Vms::begin_ending`], while the sandbox stops.
    Alongside,
    /// The caller, after (a bulk delete releases many together).
    ByCaller,
}
