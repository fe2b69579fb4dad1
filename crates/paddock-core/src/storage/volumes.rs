//! Volumes: persistent, size-limited filesystems that VMs mount, and their
//! checkpoints. A component of its own over the volume store, the volume
//! backend and the accounts' quotas; mounting into a VM is the VMs' side
//! (`vms/volume_mounts.rs`), which reserves, mounts and releases through
//! this.
//!
//! Invariants kept here:
//! - a volume is mounted read-write by at most one VM at a time (the store
//!   enforces it too), read-only by any number;
//! - a volume's host mount exists exactly while some attachment uses it;
//! - every change to attachments and host mounts happens under the
//!   component's lock ([`Volumes::lock`]). Locks are taken in one order: a
//!   VM's own lock, then the account's create lock (quotas), then this.

use crate::cluster::{Membership, NodeAnswer, NodeCall};
use crate::provider::RemoteNodes;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Mutex as AsyncMutex, MutexGuard};

use crate::accounts::Accounts;
use crate::clock::Timestamp;
use crate::error::error_chain;
use crate::error::{CoreError, StoreError};
use crate::ids::{AccountId, CheckpointId, VmId, VolumeId};
use crate::model::{
    validate_mount_path, validate_name, Attachment, Checkpoint, MountMode, MountRequest, Vm, Volume,
};
use crate::store::VolumeStore;
use crate::volume_backend::{MountSource, VolumeBackend};

/// The most a file read through the API returns (its answer is JSON,
/// base64: the whole file in memory).
pub const MAX_FILE_READ: u64 = 64 << 20;

/// The smallest volume: room for ext4's metadata and some data.
pub const MIN_VOLUME_BYTES: u64 = 16 << 20;
/// The largest volume: 16 TiB.
pub const MAX_VOLUME_BYTES: u64 = 16 << 40;

/// A volume with what the API reports beside its record.
#[derive(Debug, Clone)]
pub struct VolumeDetail {
    pub volume: Volume,
    /// `None` when the usage could not be read (logged).
    pub used_bytes: Option<u64>,
    pub attachments: Vec<Attachment>,
}

fn check_size(size_bytes: u64) -> Result<(), CoreError> {
    if !(MIN_VOLUME_BYTES..=MAX_VOLUME_BYTES).contains(&size_bytes) {
        return Err(CoreError::invalid(
            "quota_bytes",
            format!("must be between {MIN_VOLUME_BYTES} (16 MiB) and {MAX_VOLUME_BYTES} (16 TiB)"),
        ));
    }
    Ok(())
}

pub(crate) fn source_of(a: &Attachment) -> MountSource {
    MountSource {
        volume: a.volume_id.clone(),
        checkpoint: a.checkpoint_id.clone(),
    }
}

pub(crate) fn attached_conflict(what: &str, attachments: &[Attachment]) -> CoreError {
    let vms: BTreeSet<String> = attachments.iter().map(|a| a.vm_id.to_string()).collect();
    CoreError::Conflict(format!(
        "{what}: the volume is mounted by {}",
        vms.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

/// Volumes and their checkpoints, and the host mounts VMs' attachments
/// use.
pub struct Volumes {
    store: Arc<dyn VolumeStore>,
    backend: Arc<dyn VolumeBackend>,
    /// Quotas and the account's create lock.
    accounts: Arc<Accounts>,
    /// Serializes changes to attachments and host mounts.
    lock: AsyncMutex<()>,
    /// `volume.created` and `volume.deleted` go out through it.
    webhooks: Arc<crate::networking::webhooks::Webhooks>,
    /// This node: its volumes' files are here.
    node: Option<crate::ids::NodeId>,
    /// The nodes sharing the store, for an API replica, which keeps no
    /// volumes' files: it makes volumes on a node.
    cluster: std::sync::OnceLock<(Arc<Membership>, Arc<dyn RemoteNodes>)>,
}

impl Volumes {
    pub(crate) fn new(
        store: Arc<dyn VolumeStore>,
        backend: Arc<dyn VolumeBackend>,
        accounts: Arc<Accounts>,
        webhooks: Arc<crate::networking::webhooks::Webhooks>,
        node: Option<crate::ids::NodeId>,
    ) -> Self {
        Self {
            store,
            backend,
            accounts,
            webhooks,
            node,
            cluster: std::sync::OnceLock::new(),
            lock: AsyncMutex::new(()),
        }
    }

    /// Held while attachments or host mounts change.
    pub(crate) async fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    /// The sizes of the account's volumes together, in MiB (rounded up),
    /// but for `except` (a volume being resized).
    pub(crate) async fn mb_held(
        &self,
        account: &AccountId,
        except: Option<&VolumeId>,
    ) -> Result<u64, CoreError> {
        Ok(crate::quotas::mib(self.bytes_held(account, except).await?))
    }

    /// The sizes of the account's volumes together, but for `except`.
    pub(crate) async fn bytes_held(
        &self,
        account: &AccountId,
        except: Option<&VolumeId>,
    ) -> Result<u64, CoreError> {
        Ok(self
            .store
            .list_volumes(account)
            .await?
            .iter()
            .filter(|v| except != Some(&v.id))
            .map(|v| v.size_bytes)
            .sum())
    }

    /// The VM's recorded attachments.
    pub(crate) async fn of_vm(&self, vm: &VmId) -> Result<Vec<Attachment>, CoreError> {
        Ok(self.store.attachments_of_vm(vm).await?)
    }

    /// Forgets one attachment. Call with [`Volumes::lock`] held.
    pub(crate) async fn forget(&self, vm: &VmId, mount_path: &str) -> Result<(), CoreError> {
        self.store.delete_attachment(vm, mount_path).await?;
        Ok(())
    }

    /// Mounts what `a` shows on the host (its subpath made if missing)
    /// and returns where. Call with [`Volumes::lock`] held.
    pub(crate) async fn mount_on_host(&self, a: &Attachment) -> Result<PathBuf, CoreError> {
        let mut source = self.backend.mount(&source_of(a)).await?;
        if let Some(sub) = &a.subpath {
            source = subdirectory(&source, sub)?;
        }
        Ok(source)
    }

    /// Lets an API replica make volumes on the nodes. Set once, at start.
    /// An API replica's volume: made on the node with the most room,
    /// which keeps its files (VMs that mount it run there).
    async fn create_on_a_node(
        &self,
        membership: &Membership,
        remote: &dyn RemoteNodes,
        account: &AccountId,
        name: String,
        size_bytes: u64,
    ) -> Result<Volume, CoreError> {
        let node = membership
            .place(None, 0, &Default::default())
            .await?
            .ok_or_else(|| {
                CoreError::Unavailable("no node is alive to keep the volume's files".into())
            })?;
        let call = NodeCall::CreateVolume {
            account: account.clone(),
            name,
            size_bytes,
        };
        match remote.call(&node.id, &call).await? {
            NodeAnswer::Volume(id) => self.get(account, &id).await,
            other => Err(CoreError::Unavailable(format!(
                "node {} answered a volume create with {other:?}",
                node.id
            ))),
        }
    }

    pub(crate) fn join_cluster(&self, membership: Arc<Membership>, remote: Arc<dyn RemoteNodes>) {
        let _ = self.cluster.set((membership, remote));
    }

    /// The node `volume`'s files are on when that is another node of the
    /// store (its deletes are sent there; its files are reached there).
    fn elsewhere(&self, volume: &Volume) -> Option<crate::ids::NodeId> {
        self.cluster.get()?;
        volume
            .node
            .clone()
            .filter(|n| Some(n) != self.node.as_ref())
    }

    /// `Unavailable`, naming the node, for `volume`'s files when they are
    /// on another node.
    fn files_here(&self, volume: &Volume) -> Result<(), CoreError> {
        match self.elsewhere(volume) {
            Some(node) => Err(CoreError::Unavailable(format!(
                "volume {} keeps its files on node {node}: its files, size and checkpoints are changed through that node",
                volume.id
            ))),
            None => Ok(()),
        }
    }

    pub async fn create(
        &self,
        account: &AccountId,
        name: String,
        size_bytes: u64,
    ) -> Result<Volume, CoreError> {
        validate_name(&name).map_err(|m| CoreError::invalid("name", m))?;
        check_size(size_bytes)?;
        if let Some((membership, remote)) = self
            .cluster
            .get()
            .filter(|(membership, _)| !membership.runs_sandboxes())
        {
            return self
                .create_on_a_node(membership, remote.as_ref(), account, name, size_bytes)
                .await;
        }
        let _creates = self.accounts.lock_creates(account).await?;
        self.check_quota(account, None, size_bytes).await?;
        let now = Timestamp::now();
        let volume = Volume {
            id: VolumeId::generate(),
            account_id: account.clone(),
            name,
            size_bytes,
            created_at: now,
            updated_at: now,
            node: self.node.clone(),
        };
        self.backend.create(&volume.id, size_bytes).await?;
        if let Err(e) = self.store.insert_volume(&volume).await {
            self.remove_storage(&volume.id).await;
            return Err(e.into());
        }
        tracing::info!(volume_id = %volume.id, size_bytes, "volume created");
        let data = serde_json::json!({"volume_id": volume.id.as_str(), "name": volume.name, "size_bytes": size_bytes});
        self.webhooks.emit(account, "volume.created", data).await;
        Ok(volume)
    }

    /// Refuses a volume of `size_bytes` (replacing `resized`, when it is a
    /// resize) that would take the account past `max_volume_mb`. The
    /// caller holds the account's create lock.
    async fn check_quota(
        &self,
        account: &AccountId,
        resized: Option<&Volume>,
        size_bytes: u64,
    ) -> Result<(), CoreError> {
        let quota = self.accounts.quota(account).await?;
        if quota.max_volume_mb.is_none() {
            return Ok(());
        }
        let held_mb = self.mb_held(account, resized.map(|r| &r.id)).await?;
        crate::quotas::check_stored(
            "max_volume_mb",
            quota.max_volume_mb,
            held_mb,
            crate::quotas::mib(size_bytes),
        )
    }

    async fn remove_storage(&self, id: &VolumeId) {
        if let Err(e) = self.backend.remove(id).await {
            tracing::error!(volume_id = %id, error = %error_chain(&e), "could not remove a volume's storage");
        }
    }

    pub async fn get(&self, account: &AccountId, id: &VolumeId) -> Result<Volume, CoreError> {
        self.store
            .get_volume(account, id)
            .await?
            .ok_or_else(|| CoreError::not_found("volume", id))
    }

    /// The volume's usage and mounts.
    pub async fn detail(&self, volume: Volume) -> Result<VolumeDetail, CoreError> {
        let used_bytes = match self.backend.used_bytes(&volume.id).await {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(volume_id = %volume.id, error = %error_chain(&e), "could not read a volume's usage");
                None
            }
        };
        let attachments = self.store.attachments_of_volume(&volume.id).await?;
        Ok(VolumeDetail {
            volume,
            used_bytes,
            attachments,
        })
    }

    pub async fn list(&self, account: &AccountId) -> Result<Vec<VolumeDetail>, CoreError> {
        let mut out = Vec::new();
        for volume in self.store.list_volumes(account).await? {
            out.push(self.detail(volume).await?);
        }
        Ok(out)
    }

    /// Renames a volume or changes its size; a new size needs the volume
    /// mounted nowhere, and a smaller one must still hold its content.
    pub async fn update(
        &self,
        account: &AccountId,
        id: &VolumeId,
        name: Option<String>,
        size_bytes: Option<u64>,
    ) -> Result<Volume, CoreError> {
        if let Some(name) = &name {
            validate_name(name).map_err(|m| CoreError::invalid("name", m))?;
        }
        if let Some(size) = size_bytes {
            check_size(size)?;
        }
        let _creates = self.accounts.lock_creates(account).await?;
        let _lock = self.lock.lock().await;
        let mut volume = self.get(account, id).await?;
        if let Some(size) = size_bytes.filter(|s| *s > volume.size_bytes) {
            self.check_quota(account, Some(&volume), size).await?;
        }
        if let Some(size) = size_bytes.filter(|s| *s != volume.size_bytes) {
            self.files_here(&volume)?;
            let attachments = self.store.attachments_of_volume(id).await?;
            if !attachments.is_empty() {
                return Err(attached_conflict("cannot resize", &attachments));
            }
            self.backend.resize(id, size).await?;
            volume.size_bytes = size;
        }
        if let Some(name) = name {
            volume.name = name;
        }
        volume.updated_at = Timestamp::now();
        self.store.update_volume(&volume).await?;
        Ok(volume)
    }

    /// Deletes a volume mounted nowhere, with its checkpoints.
    pub async fn delete(&self, account: &AccountId, id: &VolumeId) -> Result<(), CoreError> {
        let volume = self.get(account, id).await?;
        if let (Some(node), Some((_, remote))) = (self.elsewhere(&volume), self.cluster.get()) {
            let call = NodeCall::DeleteVolume {
                account: account.clone(),
                volume: id.clone(),
            };
            remote.call(&node, &call).await?;
            return Ok(());
        }
        let _lock = self.lock.lock().await;
        self.get(account, id).await?;
        let attachments = self.store.attachments_of_volume(id).await?;
        if !attachments.is_empty() {
            return Err(attached_conflict("cannot delete", &attachments));
        }
        if !self.store.delete_volume(account, id).await? {
            return Err(CoreError::not_found("volume", id));
        }
        self.remove_storage(id).await;
        tracing::info!(volume_id = %id, "volume deleted");
        let data = serde_json::json!({"volume_id": id.as_str()});
        self.webhooks.emit(account, "volume.deleted", data).await;
        Ok(())
    }

    // ---- files ---------------------------------------------------------------
    //
    // A volume's files are read and written on the host whether or not a
    // VM has it mounted: the live filesystem is mounted for the call when
    // no VM holds it, and unmounted after unless one does by then. The
    // volumes' lock is held only while the filesystem is in use, never
    // while an upload arrives (it is spooled first).

    /// Runs `op` with the volume's live filesystem mounted on the host.
    async fn with_files<T>(
        &self,
        volume: &VolumeId,
        op: impl std::future::Future<Output = Result<T, CoreError>>,
    ) -> Result<T, CoreError> {
        let _lock = self.lock.lock().await;
        let live = MountSource {
            volume: volume.clone(),
            checkpoint: None,
        };
        self.backend.mount(&live).await?;
        let result = op.await;
        self.unmount_if_unused(&live).await;
        result
    }

    /// The files under `prefix`, at most `limit` (1 to 10000).
    pub async fn list_files(
        &self,
        account: &AccountId,
        id: &VolumeId,
        prefix: &str,
        recursive: bool,
        limit: usize,
    ) -> Result<Vec<crate::volume_backend::VolumeFile>, CoreError> {
        if !(1..=10_000).contains(&limit) {
            return Err(CoreError::invalid("limit", "must be from 1 to 10000"));
        }
        let volume = self.get(account, id).await?;
        self.files_here(&volume)?;
        self.with_files(
            &volume.id,
            self.backend
                .list_files(&volume.id, prefix, recursive, limit),
        )
        .await
    }

    /// A file's bytes, at most [`MAX_FILE_READ`].
    pub async fn read_file(
        &self,
        account: &AccountId,
        id: &VolumeId,
        path: &str,
    ) -> Result<Vec<u8>, CoreError> {
        let volume = self.get(account, id).await?;
        self.files_here(&volume)?;
        self.with_files(
            &volume.id,
            self.backend.read_file(&volume.id, path, MAX_FILE_READ),
        )
        .await
    }

    /// Writes an upload to `path` (parents made), whole or not at all; an
    /// upload past the volume's size is refused as it arrives.
    pub async fn write_file(
        &self,
        account: &AccountId,
        id: &VolumeId,
        path: &str,
        overwrite: bool,
        data: crate::exec::ByteStream,
    ) -> Result<u64, CoreError> {
        let volume = self.get(account, id).await?;
        self.files_here(&volume)?;
        let upload = self
            .backend
            .spool(&volume.id, data, volume.size_bytes)
            .await?;
        self.with_files(
            &volume.id,
            self.backend
                .place_file(&volume.id, &upload, path, overwrite),
        )
        .await
    }

    /// Removes a file or an empty directory.
    pub async fn delete_file(
        &self,
        account: &AccountId,
        id: &VolumeId,
        path: &str,
    ) -> Result<(), CoreError> {
        let volume = self.get(account, id).await?;
        self.files_here(&volume)?;
        self.with_files(&volume.id, self.backend.delete_file(&volume.id, path))
            .await
    }

    // ---- checkpoints -------------------------------------------------------

    pub async fn create_checkpoint(
        &self,
        account: &AccountId,
        volume_id: &VolumeId,
        name: Option<String>,
    ) -> Result<Checkpoint, CoreError> {
        if let Some(name) = &name {
            validate_name(name).map_err(|m| CoreError::invalid("name", m))?;
        }
        let volume = self.get(account, volume_id).await?;
        self.files_here(&volume)?;
        let _lock = self.lock.lock().await;
        let now = Timestamp::now();
        let id = CheckpointId::generate();
        let checkpoint = Checkpoint {
            name: name.unwrap_or_else(|| format!("checkpoint-{}", now.to_rfc3339())),
            id,
            volume_id: volume_id.clone(),
            created_at: now,
        };
        self.backend.checkpoint(volume_id, &checkpoint.id).await?;
        if let Err(e) = self.store.insert_checkpoint(&checkpoint).await {
            self.remove_checkpoint_storage(volume_id, &checkpoint.id)
                .await;
            return Err(e.into());
        }
        tracing::info!(volume_id = %volume_id, checkpoint_id = %checkpoint.id, "checkpoint created");
        Ok(checkpoint)
    }

    async fn remove_checkpoint_storage(&self, volume: &VolumeId, id: &CheckpointId) {
        if let Err(e) = self.backend.remove_checkpoint(volume, id).await {
            tracing::error!(checkpoint_id = %id, error = %error_chain(&e), "could not remove a checkpoint's storage");
        }
    }

    pub async fn list_checkpoints(
        &self,
        account: &AccountId,
        volume_id: &VolumeId,
    ) -> Result<Vec<Checkpoint>, CoreError> {
        self.get(account, volume_id).await?;
        Ok(self.store.list_checkpoints(volume_id).await?)
    }

    pub(crate) async fn get_checkpoint(
        &self,
        volume_id: &VolumeId,
        id: &CheckpointId,
    ) -> Result<Checkpoint, CoreError> {
        self.store
            .get_checkpoint(volume_id, id)
            .await?
            .ok_or_else(|| CoreError::not_found("checkpoint", id))
    }

    /// Deletes a checkpoint no VM has mounted.
    pub async fn delete_checkpoint(
        &self,
        account: &AccountId,
        volume_id: &VolumeId,
        id: &CheckpointId,
    ) -> Result<(), CoreError> {
        let volume = self.get(account, volume_id).await?;
        self.files_here(&volume)?;
        let _lock = self.lock.lock().await;
        self.get_checkpoint(volume_id, id).await?;
        let users: Vec<Attachment> = self
            .store
            .attachments_of_volume(volume_id)
            .await?
            .into_iter()
            .filter(|a| a.checkpoint_id.as_ref() == Some(id))
            .collect();
        if !users.is_empty() {
            return Err(attached_conflict("cannot delete the checkpoint", &users));
        }
        self.store.delete_checkpoint(volume_id, id).await?;
        self.remove_checkpoint_storage(volume_id, id).await;
        Ok(())
    }

    /// Checks `requests` for a VM of `account` that already has `existing`
    /// mounts, restores the checkpoints read-write mounts start from, and
    /// records the attachments. Call with [`Volumes::lock`] held.
    pub(crate) async fn reserve(
        &self,
        account: &AccountId,
        vm: &VmId,
        existing: &[Attachment],
        requests: &[MountRequest],
    ) -> Result<Vec<Attachment>, CoreError> {
        let mut paths: BTreeSet<&str> = existing.iter().map(|a| a.mount_path.as_str()).collect();
        let mut writers: BTreeSet<&VolumeId> = BTreeSet::new();
        let mut planned = Vec::with_capacity(requests.len());
        for request in requests {
            let mount_path = validate_mount_path(&request.mount_path)
                .map_err(|m| CoreError::invalid("mount_path", m))?;
            self.get(account, &request.volume_id).await?;
            if let Some(c) = &request.checkpoint_id {
                self.get_checkpoint(&request.volume_id, c).await?;
            }
            if !paths.insert(request.mount_path.as_str()) {
                return Err(CoreError::Conflict(format!(
                    "something is already mounted at {mount_path}"
                )));
            }
            let others = self.store.attachments_of_volume(&request.volume_id).await?;
            if request.mode == MountMode::ReadWrite {
                if let Some(w) = others.iter().find(|a| a.mode == MountMode::ReadWrite) {
                    return Err(CoreError::Conflict(format!(
                        "volume {} is already mounted read-write by VM {}",
                        request.volume_id, w.vm_id
                    )));
                }
                if !writers.insert(&request.volume_id) {
                    return Err(CoreError::Conflict(format!(
                        "volume {} is asked for read-write twice",
                        request.volume_id
                    )));
                }
                if request.checkpoint_id.is_some() && !others.is_empty() {
                    return Err(attached_conflict(
                        "a read-write mount from a checkpoint restores the volume",
                        &others,
                    ));
                }
            }
            planned.push(Attachment {
                vm_id: vm.clone(),
                volume_id: request.volume_id.clone(),
                mount_path,
                mode: request.mode,
                // A read-write mount shows the live volume; its checkpoint
                // only says what that starts from.
                checkpoint_id: match request.mode {
                    MountMode::ReadOnly => request.checkpoint_id.clone(),
                    MountMode::ReadWrite => None,
                },
                created_at: Timestamp::now(),
                subpath: request.subpath.clone(),
            });
        }
        for request in requests {
            if let (MountMode::ReadWrite, Some(c)) = (request.mode, &request.checkpoint_id) {
                self.backend.restore(&request.volume_id, c).await?;
                tracing::info!(volume_id = %request.volume_id, checkpoint_id = %c, "volume restored from a checkpoint");
            }
        }
        for (i, a) in planned.iter().enumerate() {
            if let Err(e) = self.store.insert_attachment(a).await {
                for done in &planned[..i] {
                    self.store.delete_attachment(vm, &done.mount_path).await?;
                }
                return Err(match e {
                    StoreError::Duplicate => CoreError::Conflict(format!(
                        "volume {} is already mounted read-write",
                        a.volume_id
                    )),
                    other => other.into(),
                });
            }
        }
        Ok(planned)
    }

    /// Records the volumes a VM being created asks for; they are mounted
    /// once it runs (`Service::mount_attachments`).
    pub(crate) async fn reserve_for_new_vm(
        &self,
        account: &AccountId,
        vm: &VmId,
        requests: &[MountRequest],
    ) -> Result<(), CoreError> {
        if requests.is_empty() {
            return Ok(());
        }
        let _lock = self.lock.lock().await;
        self.reserve(account, vm, &[], requests).await?;
        Ok(())
    }

    /// Forgets the attachments of a VM whose sandbox is gone and unmounts
    /// from the host what no other VM uses. Failures are logged: the VM
    /// ends either way, and the next start cleans what is left.
    pub(crate) async fn release(&self, vm: &VmId) {
        // Read before the lock, so that most VMs, which have no volume,
        // do not wait for it: the VM's attachments cannot change meanwhile
        // (a new one needs the VM running and its lock, which whoever
        // ends or fails it holds).
        let attachments = match self.store.attachments_of_vm(vm).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(vm_id = %vm, error = %error_chain(&e), "could not read a VM's volume mounts");
                return;
            }
        };
        if attachments.is_empty() {
            return;
        }
        let _lock = self.lock.lock().await;
        if let Err(e) = self.store.delete_attachments_of_vm(vm).await {
            tracing::error!(vm_id = %vm, error = %error_chain(&e), "could not forget a VM's volume mounts");
            return;
        }
        let sources: BTreeSet<MountSource> = attachments.iter().map(source_of).collect();
        for source in &sources {
            self.unmount_if_unused(source).await;
        }
    }

    /// Unmounts `source` from the host unless an attachment still uses it.
    /// Call with [`Volumes::lock`] held.
    pub(crate) async fn unmount_if_unused(&self, source: &MountSource) {
        let in_use = match self.store.attachments_of_volume(&source.volume).await {
            Ok(a) => a.iter().any(|a| &source_of(a) == source),
            Err(e) => {
                tracing::error!(volume_id = %source.volume, error = %error_chain(&e), "could not read a volume's mounts");
                return;
            }
        };
        if !in_use {
            if let Err(e) = self.backend.unmount(source).await {
                tracing::error!(volume_id = %source.volume, error = %error_chain(&e), "could not unmount a volume from the host");
            }
        }
    }

    /// After a restart: unmounts from the host every volume no surviving
    /// VM uses. Call once the VMs themselves are reconciled.
    pub(crate) async fn reconcile(&self, live: &[Vm]) -> Result<(), CoreError> {
        let _lock = self.lock.lock().await;
        let mut keep = Vec::new();
        for vm in live {
            keep.extend(
                self.store
                    .attachments_of_vm(&vm.id)
                    .await?
                    .iter()
                    .map(source_of),
            );
        }
        let removed = self.backend.unmount_all_except(&keep).await?;
        if removed > 0 {
            tracing::info!(count = removed, "orphaned volume mounts removed");
        }
        Ok(())
    }
}

/// `sub` inside the mounted volume at `root`, created when missing. The
/// path is relative without `..` (validated on the way in), and every
/// component is checked on disk not to be a symlink, so a link planted in
/// the volume cannot point the mount at the host.
fn subdirectory(root: &std::path::Path, sub: &str) -> Result<std::path::PathBuf, CoreError> {
    let mut path = root.to_path_buf();
    for part in sub.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return Err(CoreError::invalid("subpath", "must not contain '..'"));
        }
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(CoreError::invalid(
                    "subpath",
                    format!("{sub} goes through a symbolic link in the volume"),
                ))
            }
            Ok(m) if !m.is_dir() => {
                return Err(CoreError::invalid(
                    "subpath",
                    format!("{sub} is not a directory in the volume"),
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&path).map_err(|e| {
                    CoreError::Runtime(crate::RuntimeError::host(path.display().to_string(), e))
                })?;
            }
            Err(e) => {
                return Err(CoreError::Runtime(crate::RuntimeError::host(
                    path.display().to_string(),
                    e,
                )))
            }
        }
    }
    Ok(path)
}
