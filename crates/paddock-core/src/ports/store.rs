//! The store trait: every record paddock keeps, behind one interface so that
//! SQLite (embedded) and PostgreSQL (replicas) are interchangeable.

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::ids::{
    AccountId, ApiKeyId, CheckpointId, CredentialId, ExecutionId, NodeId, SessionId, ShareId,
    SnapshotId, VaultId, VmId, VolumeId,
};
use crate::model::{
    Account, ApiKey, Attachment, Checkpoint, Credential, CustomDomain, Execution, Image, NewApiKey,
    Node, Sealed, Share, Snapshot, SnapshotKind, SshKey, Vault, Vm, VmFilter, VmStatus,
    VmStatusSet, Volume,
};

/// Snapshots, scoped by account.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// `StoreError::Duplicate` when the account has a snapshot of that name.
    async fn insert_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError>;
    async fn update_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError>;
    async fn get_snapshot(
        &self,
        account: &AccountId,
        id: &SnapshotId,
    ) -> Result<Option<Snapshot>, StoreError>;
    async fn list_snapshots(
        &self,
        account: &AccountId,
        kind: Option<SnapshotKind>,
    ) -> Result<Vec<Snapshot>, StoreError>;
    async fn delete_snapshot(
        &self,
        account: &AccountId,
        id: &SnapshotId,
    ) -> Result<bool, StoreError>;
    /// Snapshots left `creating` by a server that stopped: they are failed.
    /// Returns the VMs they were being taken of, one entry each.
    async fn fail_unfinished_snapshots(&self, reason: &str) -> Result<Vec<VmId>, StoreError>;
}

/// Volumes, their checkpoints and where they are mounted.
#[async_trait]
pub trait VolumeStore: Send + Sync {
    async fn insert_volume(&self, volume: &Volume) -> Result<(), StoreError>;
    async fn update_volume(&self, volume: &Volume) -> Result<(), StoreError>;
    async fn get_volume(
        &self,
        account: &AccountId,
        id: &VolumeId,
    ) -> Result<Option<Volume>, StoreError>;
    async fn list_volumes(&self, account: &AccountId) -> Result<Vec<Volume>, StoreError>;
    /// Deletes the volume and its checkpoints.
    async fn delete_volume(&self, account: &AccountId, id: &VolumeId) -> Result<bool, StoreError>;

    async fn insert_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError>;
    async fn get_checkpoint(
        &self,
        volume: &VolumeId,
        id: &CheckpointId,
    ) -> Result<Option<Checkpoint>, StoreError>;
    async fn list_checkpoints(&self, volume: &VolumeId) -> Result<Vec<Checkpoint>, StoreError>;
    async fn delete_checkpoint(
        &self,
        volume: &VolumeId,
        id: &CheckpointId,
    ) -> Result<bool, StoreError>;

    /// `StoreError::Duplicate` when the VM has something at that path.
    async fn insert_attachment(&self, attachment: &Attachment) -> Result<(), StoreError>;
    async fn delete_attachment(&self, vm: &VmId, mount_path: &str) -> Result<bool, StoreError>;
    async fn delete_attachments_of_vm(&self, vm: &VmId) -> Result<(), StoreError>;
    async fn attachments_of_vm(&self, vm: &VmId) -> Result<Vec<Attachment>, StoreError>;
    async fn attachments_of_volume(&self, volume: &VolumeId)
        -> Result<Vec<Attachment>, StoreError>;
}

/// The hosts vaults bind to their credentials, and the requests paddock's
/// egress path sent with them (no body, query or secret).
#[async_trait]
pub trait VaultServiceStore: Send + Sync {
    /// `Duplicate` when the vault already binds the host.
    async fn insert_vault_service(
        &self,
        service: &crate::model::VaultService,
    ) -> Result<(), StoreError>;
    async fn update_vault_service(
        &self,
        service: &crate::model::VaultService,
    ) -> Result<(), StoreError>;
    async fn list_vault_services(
        &self,
        vault: &VaultId,
    ) -> Result<Vec<crate::model::VaultService>, StoreError>;
    async fn delete_vault_service(
        &self,
        vault: &VaultId,
        id: &crate::ids::VaultServiceId,
    ) -> Result<bool, StoreError>;
    async fn insert_vault_request(
        &self,
        request: &crate::model::InterceptedRequest,
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// The newest first.
    async fn list_vault_requests(
        &self,
        vault: &VaultId,
        limit: u32,
    ) -> Result<Vec<crate::model::VaultRequestLog>, StoreError>;
}

/// Vaults and their sealed credentials. No method takes or returns a
/// plain secret: values cross this boundary only sealed.
#[async_trait]
pub trait VaultStore: VaultServiceStore + Send + Sync {
    async fn insert_vault(&self, vault: &Vault) -> Result<(), StoreError>;
    async fn update_vault(&self, vault: &Vault) -> Result<(), StoreError>;
    async fn get_vault(
        &self,
        account: &AccountId,
        id: &VaultId,
    ) -> Result<Option<Vault>, StoreError>;
    async fn list_vaults(&self, account: &AccountId) -> Result<Vec<Vault>, StoreError>;
    /// Deletes the vault and its credentials.
    async fn delete_vault(&self, account: &AccountId, id: &VaultId) -> Result<bool, StoreError>;

    /// `StoreError::Duplicate` when the vault has a credential of that name.
    async fn insert_credential(&self, c: &Credential, sealed: &Sealed) -> Result<(), StoreError>;
    async fn list_credentials(&self, vault: &VaultId) -> Result<Vec<Credential>, StoreError>;
    async fn sealed_credentials(
        &self,
        vault: &VaultId,
    ) -> Result<Vec<(Credential, Sealed)>, StoreError>;
    async fn reseal_credential(
        &self,
        id: &CredentialId,
        sealed: &Sealed,
        rotated_at: Option<Timestamp>,
    ) -> Result<bool, StoreError>;
    async fn delete_credential(
        &self,
        vault: &VaultId,
        id: &CredentialId,
    ) -> Result<bool, StoreError>;
    /// Every sealed value sealed under a key other than `key_id`.
    async fn sealed_under_other_keys(
        &self,
        key_id: &str,
    ) -> Result<Vec<(CredentialId, Sealed)>, StoreError>;
}

/// Custom domains and their sealed DNS credentials.
#[async_trait]
pub trait DomainStore: Send + Sync {
    /// Assigns the id; `StoreError::Duplicate` when the domain is taken.
    async fn insert_domain(
        &self,
        domain: &CustomDomain,
        credentials: Option<&Sealed>,
    ) -> Result<i64, StoreError>;
    async fn update_domain_status(&self, domain: &CustomDomain) -> Result<(), StoreError>;
    async fn get_domain(
        &self,
        account: &AccountId,
        id: i64,
    ) -> Result<Option<CustomDomain>, StoreError>;
    async fn list_domains(&self, account: &AccountId) -> Result<Vec<CustomDomain>, StoreError>;
    /// Any account's domain by name: for the proxy.
    async fn find_domain(&self, domain: &str) -> Result<Option<CustomDomain>, StoreError>;
    async fn domain_credentials(&self, id: i64) -> Result<Option<Sealed>, StoreError>;
    /// Domains whose credentials are sealed under another key than
    /// `key_id`: id, domain name (the associated data) and sealed value.
    async fn domain_credentials_under_other_keys(
        &self,
        key_id: &str,
    ) -> Result<Vec<(i64, String, Sealed)>, StoreError>;
    async fn reseal_domain_credentials(&self, id: i64, sealed: &Sealed) -> Result<(), StoreError>;
    async fn delete_domain(&self, account: &AccountId, id: i64) -> Result<bool, StoreError>;
}

/// SSH public keys, scoped by account.
#[async_trait]
pub trait SshKeyStore: Send + Sync {
    /// Assigns the id; `StoreError::Duplicate` when the account has it.
    async fn insert_ssh_key(&self, key: &SshKey) -> Result<i64, StoreError>;
    async fn list_ssh_keys(&self, account: &AccountId) -> Result<Vec<SshKey>, StoreError>;
    /// Every registration of a key, in any account.
    async fn find_ssh_keys(&self, fingerprint: &str) -> Result<Vec<SshKey>, StoreError>;
    async fn delete_ssh_key(&self, account: &AccountId, id: i64) -> Result<bool, StoreError>;
}

/// Shares and their one-time login tokens.
#[async_trait]
pub trait ShareStore: Send + Sync {
    async fn insert_share(&self, share: &Share) -> Result<(), StoreError>;
    async fn update_share(&self, share: &Share) -> Result<(), StoreError>;
    async fn get_share(
        &self,
        account: &AccountId,
        id: &ShareId,
    ) -> Result<Option<Share>, StoreError>;
    /// Any account's share: for the proxy, which routes by host.
    async fn find_share(&self, id: &ShareId) -> Result<Option<Share>, StoreError>;
    /// Newest first; only `vm`'s when given.
    async fn list_shares(
        &self,
        account: &AccountId,
        vm: Option<&VmId>,
    ) -> Result<Vec<Share>, StoreError>;
    async fn delete_share(&self, account: &AccountId, id: &ShareId) -> Result<bool, StoreError>;
    async fn delete_shares_of_vm(&self, vm: &VmId) -> Result<u64, StoreError>;
    async fn insert_share_login(
        &self,
        token_hash: &str,
        share: &ShareId,
        expires_at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Consumes a login token: the share it was for, if it existed and had
    /// not expired by `now`. A token works once.
    async fn take_share_login(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<ShareId>, StoreError>;
}

/// One gateway resource as the store keeps it: a JSON document with the
/// columns the server looks it up by.
#[derive(Debug, Clone)]
pub struct ResourceDoc {
    pub kind: &'static str,
    pub account_id: AccountId,
    pub id: String,
    pub state: &'static str,
    pub doc: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A line of a batch job's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLogChunk {
    pub seq: i64,
    /// `stdout`, `stderr` or `system`.
    pub stream: String,
    pub data: String,
    pub created_at: Timestamp,
}

/// Held while something in the store (a document, the gateway's rank
/// accounting) is read, changed and written back, against every other
/// process sharing the store; released when dropped. A store that one
/// process alone opens (SQLite, its data dir locked) holds nothing: the
/// process's own lock suffices.
pub struct SharedLock(Option<Box<dyn Send>>);

impl SharedLock {
    /// A lock of a store no other process shares.
    pub fn unshared() -> Self {
        Self(None)
    }

    /// A lock held for as long as `guard` lives.
    pub fn holding(guard: Box<dyn Send>) -> Self {
        Self(Some(guard))
    }

    /// Whether another process could have been kept out.
    pub fn is_shared(&self) -> bool {
        self.0.is_some()
    }
}

/// The account gateway's resources (documents) and batch job logs.
#[async_trait]
pub trait ResourceStore: Send + Sync {
    /// Waits until no other process sharing the store holds `key`, then
    /// holds it until the returned lock drops.
    async fn hold(&self, key: &str) -> Result<SharedLock, StoreError>;

    /// Fails with `Duplicate` when the kind, account and id exist.
    async fn insert_resource(&self, doc: &ResourceDoc) -> Result<(), StoreError>;
    /// Replaces the document; false when there is none.
    async fn update_resource(&self, doc: &ResourceDoc) -> Result<bool, StoreError>;
    async fn get_resource(
        &self,
        kind: &str,
        account: &AccountId,
        id: &str,
    ) -> Result<Option<String>, StoreError>;
    /// An account's resources of a kind, or every account's with `None`.
    async fn list_resources(
        &self,
        kind: &str,
        account: Option<&AccountId>,
    ) -> Result<Vec<String>, StoreError>;
    async fn delete_resource(
        &self,
        kind: &str,
        account: &AccountId,
        id: &str,
    ) -> Result<bool, StoreError>;

    async fn append_job_log(
        &self,
        account: &AccountId,
        job_id: &str,
        chunks: &[JobLogChunk],
    ) -> Result<(), StoreError>;
    /// Chunks after `after_seq`, oldest first, at most `limit`.
    async fn job_log(
        &self,
        account: &AccountId,
        job_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<JobLogChunk>, StoreError>;
    async fn delete_job_log(&self, account: &AccountId, job_id: &str) -> Result<(), StoreError>;
}

/// The nodes sharing the store, and what they hand over through it.
#[async_trait]
pub trait NodeStore: Send + Sync {
    /// Registers a node or refreshes its record (at its start).
    async fn upsert_node(&self, node: &Node) -> Result<(), StoreError>;
    /// Records a node's heartbeat; false when it has no record (deleted
    /// by an operator meanwhile: it registers again).
    async fn beat_node(&self, id: &NodeId, at: Timestamp) -> Result<bool, StoreError>;
    async fn list_nodes(&self) -> Result<Vec<Node>, StoreError>;
    /// The memory each node's VMs that hold resources (creating, running,
    /// stopping) ask together, in MiB; nodes without such VMs are absent.
    async fn committed_memory(&self) -> Result<Vec<(NodeId, u64)>, StoreError>;
    /// Marks `lost` the VMs (creating, running or stopping) of every node
    /// whose lease ran out before `now`; the VMs so marked.
    async fn mark_vms_of_silent_nodes_lost(
        &self,
        now: Timestamp,
        reason: &str,
    ) -> Result<Vec<(VmId, NodeId)>, StoreError>;
    /// Takes or renews the lease `name` for `holder` until `until`, unless
    /// another holder's lease on it runs past `now`: whether `holder`
    /// holds it. Work one process of the installation must do alone
    /// (webhook delivery) runs while its process holds the lease.
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<bool, StoreError>;
}

/// Accounts and their API keys: all a key check needs.
#[async_trait]
pub trait AccountStore: Send + Sync {
    async fn insert_account(&self, account: &Account) -> Result<(), StoreError>;
    async fn get_account(&self, id: &AccountId) -> Result<Option<Account>, StoreError>;
    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError>;

    async fn insert_api_key(&self, key: &NewApiKey) -> Result<(), StoreError>;
    /// The unrevoked key with this hash.
    async fn find_api_key(&self, hash: &str) -> Result<Option<ApiKey>, StoreError>;
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError>;
    /// The account's unrevoked key with this id.
    async fn get_api_key(
        &self,
        account: &AccountId,
        id: &ApiKeyId,
    ) -> Result<Option<ApiKey>, StoreError>;
    /// The account's unrevoked keys, oldest first.
    async fn list_account_api_keys(&self, account: &AccountId) -> Result<Vec<ApiKey>, StoreError>;
    /// Writes a key's name, description and expiry.
    async fn update_api_key(&self, key: &ApiKey) -> Result<(), StoreError>;
    /// Returns false when no unrevoked key has this id.
    async fn revoke_api_key(&self, id: &ApiKeyId, at: Timestamp) -> Result<bool, StoreError>;

    /// Waits until no other process sharing the store checks the
    /// account's capacity quota, then keeps them out until the lock drops:
    /// a capacity check and the record it admits are one step for the
    /// installation. A store one process alone opens holds nothing (its
    /// process's own lock suffices).
    async fn hold_account_creates(&self, _account: &AccountId) -> Result<SharedLock, StoreError> {
        Ok(SharedLock::unshared())
    }

    /// Takes up to `take` tokens (at least one) from the account's
    /// request bucket (`rate` a second, `capacity` at most), one bucket for
    /// every process sharing the store. A store that one process alone
    /// opens answers [`RequestSpend::Unshared`]: that process keeps the
    /// bucket itself.
    async fn take_requests(
        &self,
        _account: &AccountId,
        _rate: u32,
        _capacity: f64,
        _take: u32,
    ) -> Result<RequestSpend, StoreError> {
        Ok(RequestSpend::Unshared)
    }
}

/// What taking requests from a shared token bucket came to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RequestSpend {
    /// No other process shares the store: the caller keeps the bucket.
    Unshared,
    /// This many tokens, one of them for the request at hand.
    Granted(u32),
    /// The bucket is empty; a token is back after this long.
    Wait(std::time::Duration),
}

/// The accounts' images and the build cache's layers.
#[async_trait]
pub trait ImageStore: Send + Sync {
    /// Inserts or replaces the account's image with this digest.
    async fn upsert_image(&self, image: &Image) -> Result<(), StoreError>;
    /// The account's image with this digest or (last pulled) reference.
    async fn find_image(
        &self,
        account: &AccountId,
        digest_or_reference: &str,
    ) -> Result<Option<Image>, StoreError>;
    async fn list_images(&self, account: &AccountId) -> Result<Vec<Image>, StoreError>;
    async fn delete_image(&self, account: &AccountId, digest: &str) -> Result<bool, StoreError>;
    /// Every blob digest (layers and configs) some image of any account
    /// references: what garbage collection keeps.
    async fn referenced_blobs(&self) -> Result<std::collections::BTreeSet<String>, StoreError>;
    /// How many of the account's VMs that hold resources run this image.
    async fn count_vms_using_image(
        &self,
        account: &AccountId,
        digest: &str,
    ) -> Result<u64, StoreError>;

    /// The layer a build step with this cache key made before.
    async fn get_build_step(
        &self,
        key: &str,
    ) -> Result<Option<crate::images::BuiltLayer>, StoreError>;
    async fn put_build_step(
        &self,
        key: &str,
        layer: &crate::images::BuiltLayer,
    ) -> Result<(), StoreError>;
}

/// VMs and what is counted over them.
#[async_trait]
pub trait VmStore: Send + Sync {
    async fn insert_vm(&self, vm: &Vm) -> Result<(), StoreError>;
    /// Writes every field of `vm` over its stored row.
    async fn update_vm(&self, vm: &Vm) -> Result<(), StoreError>;
    async fn get_vm(&self, account: &AccountId, id: &VmId) -> Result<Option<Vm>, StoreError>;
    /// A VM by id alone, for the server's own background work (start
    /// tasks, sweeps); never for a caller's request, which is scoped by
    /// account through [`VmStore::get_vm`].
    async fn find_vm(&self, id: &VmId) -> Result<Option<Vm>, StoreError>;
    /// The account's VMs, newest first, per `filter`.
    async fn list_vms(&self, account: &AccountId, filter: &VmFilter)
        -> Result<Vec<Vm>, StoreError>;
    /// This node's VMs of every account in one of `statuses` (for
    /// reconciliation: a store shared by several nodes gives each its own).
    async fn list_vms_in(&self, statuses: &VmStatusSet) -> Result<Vec<Vm>, StoreError>;
    /// This node's active VMs whose lifetime ended at or before `now`.
    async fn list_expired_vms(&self, now: Timestamp) -> Result<Vec<Vm>, StoreError>;
    /// The newest VM of a session, whatever its status.
    async fn latest_vm_of_session(
        &self,
        account: &AccountId,
        session: &SessionId,
    ) -> Result<Option<Vm>, StoreError>;
    /// What the account's VMs that hold host resources (creating, running,
    /// stopping) take together.
    async fn account_usage(&self, account: &AccountId) -> Result<crate::quotas::Usage, StoreError>;
    /// How many of this node's VMs are in each status.
    async fn count_vms_by_status(&self) -> Result<Vec<(VmStatus, u64)>, StoreError>;
}

/// The recorded executions of commands.
#[async_trait]
pub trait ExecutionStore: Send + Sync {
    async fn insert_execution(&self, execution: &Execution) -> Result<(), StoreError>;
    async fn update_execution(&self, execution: &Execution) -> Result<(), StoreError>;
    async fn get_execution(
        &self,
        account: &AccountId,
        id: &ExecutionId,
    ) -> Result<Option<Execution>, StoreError>;
    /// Marks every running execution of this node's VMs but those in
    /// `except` failed (their tasks died with a previous server process);
    /// returns how many.
    async fn fail_unfinished_executions(
        &self,
        reason: &str,
        at: Timestamp,
        except: &[crate::ids::ExecutionId],
    ) -> Result<u64, StoreError>;
}

/// Measured consumption (`model/usage.rs`).
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Every VM's counters at its last sample.
    async fn usage_cursors(&self) -> Result<Vec<crate::model::UsageCursor>, StoreError>;
    /// Adds `records` to their (VM or account, day) rows and moves the
    /// cursors, in one transaction; drops the cursors of `ended` VMs.
    async fn record_usage(
        &self,
        records: &[crate::model::UsageRecord],
        cursors: &[crate::model::UsageCursor],
        ended: &[VmId],
    ) -> Result<(), StoreError>;
    /// The account's rows from day `from` to day `to` (inclusive,
    /// `YYYY-MM-DD`).
    async fn usage_between(
        &self,
        account: &AccountId,
        from: &str,
        to: &str,
    ) -> Result<Vec<crate::model::UsageRecord>, StoreError>;
    /// The rows of these VMs, all days.
    async fn usage_of_vms(
        &self,
        vms: &[VmId],
    ) -> Result<Vec<crate::model::UsageRecord>, StoreError>;
}

/// The audit log: appended to, read, and pruned by age only.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends events, in one transaction.
    async fn insert_audit_events(
        &self,
        events: &[crate::model::AuditEvent],
    ) -> Result<(), StoreError>;
    /// The account's events matching `filter`, newest first, with their
    /// positions.
    async fn list_audit_events(
        &self,
        account: &AccountId,
        filter: &crate::model::AuditFilter,
    ) -> Result<Vec<(i64, crate::model::AuditEvent)>, StoreError>;
    async fn get_audit_event(
        &self,
        account: &AccountId,
        id: &crate::ids::AuditEventId,
    ) -> Result<Option<crate::model::AuditEvent>, StoreError>;
    /// Removes events older than `before`; how many went.
    async fn prune_audit_events(&self, before: Timestamp) -> Result<u64, StoreError>;
    /// Records that `key` was used from `address`; true when it is the
    /// first time.
    async fn note_key_address(&self, key: &str, address: &str) -> Result<bool, StoreError>;
}

/// Webhook endpoints (secrets sealed) and their deliveries.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn insert_webhook_endpoint(
        &self,
        endpoint: &crate::model::WebhookEndpoint,
        secret: &crate::model::Sealed,
    ) -> Result<(), StoreError>;
    async fn update_webhook_endpoint(
        &self,
        endpoint: &crate::model::WebhookEndpoint,
    ) -> Result<(), StoreError>;
    async fn set_webhook_secret(
        &self,
        id: &crate::ids::WebhookEndpointId,
        secret: &crate::model::Sealed,
    ) -> Result<(), StoreError>;
    async fn webhook_secret(
        &self,
        id: &crate::ids::WebhookEndpointId,
    ) -> Result<Option<crate::model::Sealed>, StoreError>;
    /// Secrets sealed under another master key than `key_id` (to reseal).
    async fn webhook_secrets_under_other_keys(
        &self,
        key_id: &str,
    ) -> Result<Vec<(crate::ids::WebhookEndpointId, crate::model::Sealed)>, StoreError>;
    async fn get_webhook_endpoint(
        &self,
        account: &AccountId,
        id: &crate::ids::WebhookEndpointId,
    ) -> Result<Option<crate::model::WebhookEndpoint>, StoreError>;
    async fn list_webhook_endpoints(
        &self,
        account: &AccountId,
    ) -> Result<Vec<crate::model::WebhookEndpoint>, StoreError>;
    /// Deletes the endpoint and fails its pending deliveries, together.
    async fn delete_webhook_endpoint(
        &self,
        account: &AccountId,
        id: &crate::ids::WebhookEndpointId,
    ) -> Result<bool, StoreError>;
    async fn insert_webhook_deliveries(
        &self,
        deliveries: &[crate::model::WebhookDelivery],
    ) -> Result<(), StoreError>;
    async fn update_webhook_delivery(
        &self,
        delivery: &crate::model::WebhookDelivery,
    ) -> Result<(), StoreError>;
    /// Pending deliveries whose next try is due at `now`, oldest first.
    async fn due_webhook_deliveries(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<crate::model::WebhookDelivery>, StoreError>;
    async fn get_webhook_delivery(
        &self,
        account: &AccountId,
        id: &crate::ids::WebhookDeliveryId,
    ) -> Result<Option<crate::model::WebhookDelivery>, StoreError>;
    /// The account's deliveries matching `filter`, newest first, with
    /// their positions.
    async fn list_webhook_deliveries(
        &self,
        account: &AccountId,
        filter: &crate::model::DeliveryFilter,
    ) -> Result<Vec<(i64, crate::model::WebhookDelivery)>, StoreError>;
}

/// What the VM component keeps itself: VMs and their executions. Every
/// other record a VM touches goes through the component that owns it.
pub trait VmRecords: VmStore + ExecutionStore + Send + Sync + 'static {}

impl<T> VmRecords for T where T: VmStore + ExecutionStore + Send + Sync + 'static {}

/// What shares and their custom domains keep.
pub trait ShareRecords: ShareStore + DomainStore + Send + Sync + 'static {}

impl<T> ShareRecords for T where T: ShareStore + DomainStore + Send + Sync + 'static {}

/// Every part of the store together: what the core composes its
/// components from. It has no methods of its own; each consumer that
/// needs only a part takes that part.
pub trait Store:
    AccountStore
    + VmRecords
    + ImageStore
    + SnapshotStore
    + ResourceStore
    + VolumeStore
    + VaultStore
    + ShareRecords
    + SshKeyStore
    + UsageStore
    + AuditStore
    + WebhookStore
    + NodeStore
{
}

impl<T> Store for T where
    T: AccountStore
        + VmRecords
        + ImageStore
        + SnapshotStore
        + ResourceStore
        + VolumeStore
        + VaultStore
        + ShareRecords
        + SshKeyStore
        + UsageStore
        + AuditStore
        + WebhookStore
        + NodeStore
{
}
