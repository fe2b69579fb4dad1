//! Snapshots and clones. A snapshot freezes a running VM, packs what it
//! changed (its overlay upper dirs) into one layer and records an image:
//! the VM's base (image layers, or the variant it ran) plus that layer.
//! Restoring stacks the stored, already unpacked layers under a fresh
//! upper dir, so it copies nothing, whatever the snapshot's size.
//!
//! The `Snapshots` component keeps the records (and snapshots made from
//! an image) over the narrow snapshot store, the image library and
//! backend and the accounts' quotas; taking one of a VM and cloning are
//! the VMs' side (`vms/snapshotting.rs`).

use std::sync::Arc;

use crate::accounts::Accounts;
use crate::artifacts::library::ImageLibrary;
use crate::clock::Timestamp;
use crate::error::error_chain;
use crate::error::{CoreError, StoreError};
use crate::ids::{AccountId, SnapshotId, VmId};
use crate::images::ImageBackend;
use crate::model::{validate_name, Image, RootfsSpec, Snapshot, SnapshotKind, SnapshotStatus, Vm};
use crate::store::SnapshotStore;

pub struct Snapshots {
    store: Arc<dyn SnapshotStore>,
    images: Arc<ImageLibrary>,
    backend: Arc<dyn ImageBackend>,
    /// Quotas and the account's create lock.
    accounts: Arc<Accounts>,
    /// `snapshot.ready` and `snapshot.failed` go out through it.
    webhooks: Arc<crate::networking::webhooks::Webhooks>,
}

impl Snapshots {
    pub(crate) fn new(
        store: Arc<dyn SnapshotStore>,
        images: Arc<ImageLibrary>,
        backend: Arc<dyn ImageBackend>,
        accounts: Arc<Accounts>,
        webhooks: Arc<crate::networking::webhooks::Webhooks>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            images,
            backend,
            accounts,
            webhooks,
        })
    }

    /// The sizes of the account's snapshots together, in MiB (rounded up).
    pub(crate) async fn mb_held(&self, account: &AccountId) -> Result<u64, CoreError> {
        Ok(crate::quotas::mib(self.bytes_held(account).await?))
    }

    /// The sizes of the account's snapshots together.
    pub(crate) async fn bytes_held(&self, account: &AccountId) -> Result<u64, CoreError> {
        let snapshots = self.store.list_snapshots(account, None).await?;
        Ok(snapshots.iter().map(|s| s.size).sum())
    }

    /// After a restart: snapshots whose making it interrupted are failed
    /// with `reason`; how many.
    /// Fails the snapshots a stopped server left unfinished; the VMs they
    /// were being taken of.
    pub(crate) async fn fail_unfinished(&self, reason: &str) -> Result<Vec<VmId>, CoreError> {
        Ok(self.store.fail_unfinished_snapshots(reason).await?)
    }

    /// The snapshot a VM restores from, ready, as its root filesystem.
    /// With it, the digest of its image, which the VM records.
    pub(crate) async fn rootfs(
        &self,
        account: &AccountId,
        id: &SnapshotId,
    ) -> Result<(RootfsSpec, String), CoreError> {
        let snapshot = self.get(account, id).await?;
        let image = snapshot
            .image
            .filter(|_| snapshot.status == SnapshotStatus::Ready);
        let Some(image) = image else {
            return Err(CoreError::FailedPrecondition(format!(
                "snapshot {id} is {}",
                snapshot.status.as_str()
            )));
        };
        let digest = image.digest.clone();
        // Taken on another node, its layers are fetched from there first.
        self.backend.ensure_layers(&image.layers).await?;
        let dirs = self.backend.layer_dirs(&image.layers);
        // A snapshot of a VM on an image built from a variant keeps that
        // variant below its layers, through the image's label.
        let variant = snapshot
            .base_variant
            .or_else(|| image.config.base_variant().map(str::to_owned));
        let spec = match variant {
            Some(name) => RootfsSpec::Variant {
                name,
                layers: dirs,
                defaults: image.config,
            },
            None => RootfsSpec::Layers {
                dirs,
                defaults: image.config,
            },
        };
        Ok((spec, digest))
    }

    /// Records a new snapshot in `creating`; a taken name is a conflict.
    pub(crate) async fn begin(
        &self,
        account: &AccountId,
        name: Option<String>,
        kind: SnapshotKind,
        vm: Option<&Vm>,
        source: String,
    ) -> Result<Snapshot, CoreError> {
        let id = SnapshotId::generate();
        let name = name.unwrap_or_else(|| id.to_string());
        validate_name(&name).map_err(|m| CoreError::invalid("name", m))?;
        // A user's snapshot counts against `max_snapshot_mb`; the ones
        // paddock takes to keep a VM's or an environment's data are never
        // refused.
        let _creates = if kind == SnapshotKind::User {
            let creates = self.accounts.lock_creates(account).await?;
            self.check_quota(account).await?;
            Some(creates)
        } else {
            None
        };
        let snapshot = Snapshot {
            id,
            account_id: account.clone(),
            name,
            kind,
            status: SnapshotStatus::Creating,
            error: None,
            vm_id: vm.map(|v| v.id.clone()),
            source,
            base_variant: None,
            image: None,
            size: 0,
            created_at: Timestamp::now(),
        };
        match self.store.insert_snapshot(&snapshot).await {
            Err(StoreError::Duplicate) => Err(CoreError::Conflict(format!(
                "a snapshot named {:?} exists",
                snapshot.name
            ))),
            other => other.map(|()| snapshot).map_err(CoreError::from),
        }
    }

    /// Refuses another snapshot once the account's snapshots hold
    /// `max_snapshot_mb` or more (a snapshot's size is known once taken).
    async fn check_quota(&self, account: &AccountId) -> Result<(), CoreError> {
        let quota = self.accounts.quota(account).await?;
        let Some(limit) = quota.max_snapshot_mb else {
            return Ok(());
        };
        let held_mb = self.mb_held(account).await?;
        if held_mb >= limit {
            return Err(CoreError::PermissionDenied(format!(
                "quota max_snapshot_mb exceeded: the account's snapshots hold {held_mb} MiB of {limit} MiB"
            )));
        }
        Ok(())
    }

    /// Ends a snapshot in `ready` or `failed`, whichever `result` says.
    pub(crate) async fn finish(
        &self,
        mut snapshot: Snapshot,
        result: Result<(Image, Option<String>, u64), CoreError>,
    ) -> Result<Snapshot, CoreError> {
        let outcome = match result {
            Ok((image, variant, size)) => {
                snapshot.status = SnapshotStatus::Ready;
                snapshot.image = Some(image);
                snapshot.base_variant = variant;
                snapshot.size = size;
                Ok(())
            }
            Err(e) => {
                snapshot.status = SnapshotStatus::Failed;
                snapshot.error = Some(error_chain(&e));
                Err(e)
            }
        };
        self.store.update_snapshot(&snapshot).await?;
        let event = if outcome.is_ok() {
            "snapshot.ready"
        } else {
            "snapshot.failed"
        };
        let data = serde_json::json!({
            "snapshot_id": snapshot.id.as_str(),
            "name": snapshot.name,
            "status": snapshot.status.as_str(),
            "error": snapshot.error,
            "vm_id": snapshot.vm_id.as_ref().map(|v| v.as_str()),
        });
        self.webhooks.emit(&snapshot.account_id, event, data).await;
        outcome.map(|()| snapshot)
    }

    /// Makes a ready snapshot from an image, pulled first if needed. With
    /// `wait` false, returns at once in `creating`.
    pub async fn from_image(
        self: &Arc<Self>,
        account: &AccountId,
        reference: String,
        name: Option<String>,
        kind: SnapshotKind,
        wait: bool,
    ) -> Result<Snapshot, CoreError> {
        self.images.require_reference("oci_image", &reference)?;
        let snapshot = self
            .begin(account, name, kind, None, reference.clone())
            .await?;
        let this = Arc::clone(self);
        let account = account.clone();
        let pending = snapshot.clone();
        let task = tokio::spawn(async move {
            let result = this
                .images
                .ensure(&account, &reference)
                .await
                .map(|image| (image, None, 0));
            this.finish(pending, result).await
        });
        if !wait {
            return Ok(snapshot);
        }
        task.await
            .map_err(|e| CoreError::Unavailable(format!("snapshot task failed: {e}")))?
    }

    pub async fn get(&self, account: &AccountId, id: &SnapshotId) -> Result<Snapshot, CoreError> {
        self.store
            .get_snapshot(account, id)
            .await?
            .ok_or_else(|| CoreError::not_found("snapshot", id))
    }

    pub async fn list(
        &self,
        account: &AccountId,
        kind: Option<SnapshotKind>,
    ) -> Result<Vec<Snapshot>, CoreError> {
        Ok(self.store.list_snapshots(account, kind).await?)
    }

    /// Deletes a snapshot (refused while a VM runs on it) and frees the
    /// layers nothing else references.
    pub async fn delete(
        &self,
        account: &AccountId,
        id: &SnapshotId,
    ) -> Result<Snapshot, CoreError> {
        let snapshot = self.get(account, id).await?;
        if snapshot.status == SnapshotStatus::Creating {
            return Err(CoreError::Conflict(format!(
                "snapshot {id} is still being made"
            )));
        }
        if let Some(image) = &snapshot.image {
            let users = self.images.users(account, &image.digest).await?;
            if users > 0 {
                return Err(CoreError::Conflict(format!(
                    "snapshot {id} is used by {users} VM(s); delete them first"
                )));
            }
        }
        self.store.delete_snapshot(account, id).await?;
        self.images.collect_garbage().await?;
        Ok(snapshot)
    }

    /// Pushes a snapshot to a registry as an ordinary OCI image. A snapshot
    /// of a variant VM carries only its own changes.
    pub async fn push(
        &self,
        account: &AccountId,
        id: &SnapshotId,
        target: &str,
    ) -> Result<String, CoreError> {
        self.images.require_reference("target", target)?;
        let snapshot = self.get(account, id).await?;
        let image = snapshot.image.ok_or_else(|| {
            CoreError::FailedPrecondition(format!("snapshot {id} is {}", snapshot.status.as_str()))
        })?;
        self.backend
            .push(&image.layers, &image.config_digest, target)
            .await
    }
}
