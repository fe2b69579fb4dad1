//! Snapshots and clones. A snapshot freezes a running VM, packs what it
//! changed (its overlay upper dirs) into one layer and records an image:
//! the VM's base (image layers, or the variant it ran) plus that layer.
//! Restoring stacks the stored, already unpacked layers under a fresh
//! upper dir, so it copies nothing, whatever the snapshot's size.

use std::sync::Arc;

use crate::clock::Timestamp;
use crate::error::{CoreError, StoreError};
use crate::ids::{AccountId, SnapshotId, VmId};
use crate::model::{
    validate_name, ChangedTree, Image, ImageConfig, LayerInfo, RootfsSpec, Snapshot, SnapshotKind,
    SnapshotStatus, Vm, VmSpec, VmStatus,
};
use crate::service::{error_chain, Service};

/// What a VM's filesystem sits on, below its own changes.
struct Base {
    variant: Option<String>,
    layers: Vec<LayerInfo>,
    diff_ids: Vec<String>,
    config: ImageConfig,
}

impl Service {
    /// The snapshot a VM restores from, ready, as its root filesystem.
    pub(crate) async fn snapshot_rootfs(
        &self,
        vm: &mut Vm,
        id: &SnapshotId,
    ) -> Result<RootfsSpec, CoreError> {
        let snapshot = self.get_snapshot(&vm.account_id, id).await?;
        let image = snapshot
            .image
            .filter(|_| snapshot.status == SnapshotStatus::Ready);
        let Some(image) = image else {
            return Err(CoreError::FailedPrecondition(format!(
                "snapshot {id} is {}",
                snapshot.status.as_str()
            )));
        };
        vm.image_digest = Some(image.digest.clone());
        let dirs = self.image_backend.layer_dirs(&image.layers);
        // A snapshot of a VM on an image built from a variant keeps that
        // variant below its layers, through the image's label.
        let variant = snapshot
            .base_variant
            .or_else(|| crate::build::base_variant(&image.config).map(str::to_owned));
        Ok(match variant {
            Some(name) => RootfsSpec::Variant {
                name,
                layers: dirs,
                defaults: image.config,
            },
            None => RootfsSpec::Layers {
                dirs,
                defaults: image.config,
            },
        })
    }

    async fn base_of(&self, vm: &Vm) -> Result<Base, CoreError> {
        if let Some(id) = &vm.options.snapshot_id {
            let snapshot = self.get_snapshot(&vm.account_id, id).await?;
            let image = snapshot.image.ok_or_else(|| {
                CoreError::FailedPrecondition(format!("the VM's snapshot {id} has no image"))
            })?;
            return Ok(Base {
                variant: snapshot.base_variant,
                diff_ids: self.image_backend.diff_ids(&image.config_digest).await?,
                layers: image.layers,
                config: image.config,
            });
        }
        if self.provider.has_variant(&vm.image_variant) {
            return Ok(Base {
                variant: Some(vm.image_variant.clone()),
                layers: Vec::new(),
                diff_ids: Vec::new(),
                config: ImageConfig::default(),
            });
        }
        let digest = vm.image_digest.as_deref().unwrap_or(&vm.image_variant);
        let image = self
            .store
            .find_image(&vm.account_id, digest)
            .await?
            .ok_or_else(|| CoreError::not_found("image", digest))?;
        Ok(Base {
            variant: None,
            diff_ids: self.image_backend.diff_ids(&image.config_digest).await?,
            layers: image.layers,
            config: image.config,
        })
    }

    /// Records a new snapshot in `creating`; a taken name is a conflict.
    async fn begin_snapshot(
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
            let creates = self.accounts().quotas().lock_creates(account).await;
            self.check_snapshot_quota(account).await?;
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
    async fn check_snapshot_quota(&self, account: &AccountId) -> Result<(), CoreError> {
        let quota = self.accounts().quota(account).await?;
        let Some(limit) = quota.max_snapshot_mb else {
            return Ok(());
        };
        let held_mb = self.snapshot_mb_held(account).await?;
        if held_mb >= limit {
            return Err(CoreError::PermissionDenied(format!(
                "quota max_snapshot_mb exceeded: the account's snapshots hold {held_mb} MiB of {limit} MiB"
            )));
        }
        Ok(())
    }

    /// Ends a snapshot in `ready` or `failed`, whichever `result` says.
    async fn finish_snapshot(
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
        outcome.map(|()| snapshot)
    }

    /// Packs the VM's changes while its processes are frozen, and writes
    /// the snapshot image. The caller holds the VM's lock.
    ///
    /// With `squash_above`, the base's layers above that many (stacked
    /// snapshot layers) are squashed with the VM's changes into the one new
    /// layer, so the image is the bottom layers plus one.
    async fn capture(
        &self,
        vm: &Vm,
        squash_above: Option<usize>,
    ) -> Result<(Image, Option<String>, u64), CoreError> {
        let mut base = self.base_of(vm).await?;
        let changes = self
            .provider_named(&vm.provider)
            .map(|p| p.changes(vm))
            .unwrap_or_default();
        if changes.is_empty() {
            return Err(CoreError::FailedPrecondition(
                "the VM has no writable layer to capture".into(),
            ));
        }
        let mut trees = Vec::new();
        if let Some(keep) = squash_above.filter(|k| *k < base.layers.len()) {
            let stacked = base.layers.split_off(keep);
            base.diff_ids.truncate(keep);
            // `layer_dirs` is topmost first; squashing goes bottom first.
            let mut dirs = self.image_backend.layer_dirs(&stacked);
            dirs.reverse();
            trees.extend(dirs.into_iter().map(|dir| ChangedTree {
                dir,
                at: String::new(),
                ids: None,
            }));
        }
        let squash = !trees.is_empty();
        trees.extend(changes);
        let provider = self.provider_of(vm)?;
        provider.set_frozen(&vm.id, true).await?;
        let packed = if squash {
            self.image_backend.pack_squashed(&trees).await
        } else {
            self.image_backend.pack_changes(&trees).await
        };
        if let Err(e) = provider.set_frozen(&vm.id, false).await {
            tracing::error!(vm_id = %vm.id, error = %error_chain(&e), "could not thaw a VM after a snapshot");
        }
        let layer = packed?;
        let mut layers = base.layers;
        let mut diff_ids = base.diff_ids;
        let size = layer.info.size;
        crate::model::push_layer(&mut layers, &mut diff_ids, layer.info, layer.diff_id);
        let written = self
            .image_backend
            .write_image(&layers, &diff_ids, &base.config)
            .await?;
        let image = Image {
            account_id: vm.account_id.clone(),
            digest: written.manifest_digest,
            reference: vm.image_variant.clone(),
            config_digest: written.config_digest,
            size: layers.iter().map(|l| l.size).sum(),
            config: base.config,
            layers,
            created_at: Timestamp::now(),
        };
        Ok((image, base.variant, size))
    }

    /// Snapshots a running VM.
    pub async fn snapshot_vm(
        &self,
        account: &AccountId,
        id: &VmId,
        name: Option<String>,
    ) -> Result<Snapshot, CoreError> {
        self.get_vm(account, id).await?;
        let _guard = self.lock_vm(id).await;
        let vm = self.get_vm(account, id).await?;
        if vm.status != VmStatus::Running {
            return Err(CoreError::FailedPrecondition(format!(
                "the VM is {}; only a running VM can be snapshotted",
                vm.status.as_str()
            )));
        }
        self.snapshot_locked(&vm, name, SnapshotKind::User).await
    }

    pub(crate) async fn snapshot_locked(
        &self,
        vm: &Vm,
        name: Option<String>,
        kind: SnapshotKind,
    ) -> Result<Snapshot, CoreError> {
        self.snapshot_locked_with(vm, name, kind, None).await
    }

    /// A snapshot whose layers above `squash_above` are squashed into its
    /// new one (see `capture`). The caller holds the VM's lock
    /// ([`Service::lock_vm`]).
    pub async fn snapshot_locked_with(
        &self,
        vm: &Vm,
        name: Option<String>,
        kind: SnapshotKind,
        squash_above: Option<usize>,
    ) -> Result<Snapshot, CoreError> {
        let snapshot = self
            .begin_snapshot(
                &vm.account_id,
                name,
                kind,
                Some(vm),
                vm.image_variant.clone(),
            )
            .await?;
        let result = self.capture(vm, squash_above).await;
        let done = self.finish_snapshot(snapshot, result).await?;
        tracing::info!(vm_id = %vm.id, snapshot_id = %done.id, size = done.size, "snapshot taken");
        Ok(done)
    }

    /// The snapshot a VM that ends takes of itself, when it asked for one.
    /// A failure is logged: the VM ends anyway.
    pub(crate) async fn snapshot_on_terminate(&self, vm: &Vm) {
        if !vm.options.snapshot_on_terminate || vm.status != VmStatus::Running {
            return;
        }
        let name = vm.options.snapshot_name.clone();
        let taken = match self
            .snapshot_locked(vm, name.clone(), SnapshotKind::User)
            .await
        {
            // The name was taken since: keep the snapshot under a unique one.
            Err(CoreError::Conflict(_)) => {
                let unique = format!("{}-{}", name.unwrap_or_default(), vm.id);
                self.snapshot_locked(vm, Some(unique), SnapshotKind::User)
                    .await
            }
            other => other,
        };
        if let Err(e) = taken {
            tracing::error!(vm_id = %vm.id, error = %error_chain(&e), "snapshot on terminate failed");
        }
    }

    /// Makes a ready snapshot from an image, pulled first if needed. With
    /// `wait` false, returns at once in `creating`.
    pub async fn snapshot_image(
        self: &Arc<Self>,
        account: &AccountId,
        reference: String,
        name: Option<String>,
        kind: SnapshotKind,
        wait: bool,
    ) -> Result<Snapshot, CoreError> {
        self.images().require_reference("oci_image", &reference)?;
        let snapshot = self
            .begin_snapshot(account, name, kind, None, reference.clone())
            .await?;
        let this = Arc::clone(self);
        let account = account.clone();
        let pending = snapshot.clone();
        let task = tokio::spawn(async move {
            let result = this
                .images()
                .ensure(&account, &reference)
                .await
                .map(|image| (image, None, 0));
            this.finish_snapshot(pending, result).await
        });
        if !wait {
            return Ok(snapshot);
        }
        task.await
            .map_err(|e| CoreError::Unavailable(format!("snapshot task failed: {e}")))?
    }

    pub async fn get_snapshot(
        &self,
        account: &AccountId,
        id: &SnapshotId,
    ) -> Result<Snapshot, CoreError> {
        self.store
            .get_snapshot(account, id)
            .await?
            .ok_or_else(|| CoreError::not_found("snapshot", id))
    }

    pub async fn list_snapshots(
        &self,
        account: &AccountId,
        kind: Option<SnapshotKind>,
    ) -> Result<Vec<Snapshot>, CoreError> {
        Ok(self.store.list_snapshots(account, kind).await?)
    }

    /// Deletes a snapshot (refused while a VM runs on it) and frees the
    /// layers nothing else references.
    pub async fn delete_snapshot(
        &self,
        account: &AccountId,
        id: &SnapshotId,
    ) -> Result<Snapshot, CoreError> {
        let snapshot = self.get_snapshot(account, id).await?;
        if snapshot.status == SnapshotStatus::Creating {
            return Err(CoreError::Conflict(format!(
                "snapshot {id} is still being made"
            )));
        }
        if let Some(image) = &snapshot.image {
            let users = self
                .store
                .count_vms_using_image(account, &image.digest)
                .await?;
            if users > 0 {
                return Err(CoreError::Conflict(format!(
                    "snapshot {id} is used by {users} VM(s); delete them first"
                )));
            }
        }
        self.store.delete_snapshot(account, id).await?;
        self.images().collect_garbage().await?;
        Ok(snapshot)
    }

    /// Pushes a snapshot to a registry as an ordinary OCI image. A snapshot
    /// of a variant VM carries only its own changes.
    pub async fn push_snapshot(
        &self,
        account: &AccountId,
        id: &SnapshotId,
        target: &str,
    ) -> Result<String, CoreError> {
        self.images().require_reference("target", target)?;
        let snapshot = self.get_snapshot(account, id).await?;
        let image = snapshot.image.ok_or_else(|| {
            CoreError::FailedPrecondition(format!("snapshot {id} is {}", snapshot.status.as_str()))
        })?;
        self.image_backend
            .push(&image.layers, &image.config_digest, target)
            .await
    }

    /// A new VM from a fresh snapshot of a running one, with its settings.
    pub async fn clone_vm(
        self: &Arc<Self>,
        account: &AccountId,
        id: &VmId,
        snapshot_name: Option<String>,
        wait: bool,
    ) -> Result<(Vm, Snapshot), CoreError> {
        let snapshot = self.snapshot_vm(account, id, snapshot_name).await?;
        let source = self.get_vm(account, id).await?;
        let mut options = source.options.clone();
        options.snapshot_id = Some(snapshot.id.clone());
        options.snapshot_on_terminate = false;
        options.snapshot_name = None;
        let spec = VmSpec {
            session_id: None,
            lifetime_seconds: source.lifetime_seconds,
            resources: source.resources,
            metadata: source.metadata,
            env: source.env,
            image_variant: source.image_variant,
            options,
            volumes: Vec::new(),
            provider: None,
        };
        let vm = self.create_vm(account, spec, wait).await?;
        Ok((vm, snapshot))
    }
}
