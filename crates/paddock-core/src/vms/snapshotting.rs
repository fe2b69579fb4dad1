//! The VMs' side of snapshots: taking one of a running VM (frozen while
//! its changes are packed), the one a VM takes of itself as it ends, and
//! cloning a VM from a fresh one. The records are the `Snapshots`
//! component's (`artifacts/snapshots.rs`).

use crate::cluster::NodeCall;
use std::sync::Arc;

use super::component::Vms;
use crate::clock::Timestamp;
use crate::error::error_chain;
use crate::error::CoreError;
use crate::ids::{AccountId, VmId};
use crate::model::{
    ChangedTree, Image, ImageConfig, LayerInfo, Snapshot, SnapshotKind, Vm, VmSpec, VmStatus,
};

/// What a VM's filesystem sits on, below its own changes.
struct Base {
    variant: Option<String>,
    layers: Vec<LayerInfo>,
    diff_ids: Vec<String>,
    config: ImageConfig,
}

impl Vms {
    async fn base_of(&self, vm: &Vm) -> Result<Base, CoreError> {
        if let Some(id) = &vm.options.snapshot_id {
            let snapshot = self.parts.snapshots.get(&vm.account_id, id).await?;
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
            .parts
            .images
            .find(&vm.account_id, digest)
            .await?
            .ok_or_else(|| CoreError::not_found("image", digest))?;
        Ok(Base {
            variant: None,
            diff_ids: self.image_backend.diff_ids(&image.config_digest).await?,
            layers: image.layers,
            config: image.config,
        })
    }

    /// Packs the VM's changes while its provider holds them still (a
    /// running VM's processes frozen), and writes the snapshot image. The
    /// caller holds the VM's lock.
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
        let provider = self.provider_of(vm)?;
        let changes = provider.hold_changes(vm).await?;
        if changes.is_empty() {
            return Err(CoreError::FailedPrecondition(
                "the VM has no writable layer its provider lets the server capture".into(),
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
        let packed = if squash {
            self.image_backend.pack_squashed(&trees).await
        } else {
            self.image_backend.pack_changes(&trees).await
        };
        if let Err(e) = provider.release_changes(vm).await {
            tracing::error!(vm_id = %vm.id, error = %error_chain(&e), "could not release a VM's changes after a snapshot");
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

    /// Lets go of a VM whose snapshot a stopped server cut short: its
    /// provider may still hold it (a container frozen, a microVM's disk
    /// frozen and open on the host). Failures are logged.
    pub(crate) async fn release_held_changes(&self, vm: &Vm) {
        let released = match self.provider_of(vm) {
            Ok(provider) => provider.release_changes(vm).await,
            Err(e) => Err(e),
        };
        if let Err(e) = released {
            tracing::warn!(vm_id = %vm.id, error = %error_chain(&e), "could not release a VM held by a snapshot cut short");
        }
    }

    /// Runs `read` over what running VM `id` changed in its filesystem (the
    /// trees of its writable layer), held still while it reads (the
    /// sandbox frozen), then lets the VM go on. A product's checkpoint of
    /// a VM (a tape's) reads only what changed this way, as a snapshot
    /// packs it.
    pub async fn read_changes<T>(
        &self,
        account: &AccountId,
        id: &VmId,
        read: impl AsyncFnOnce(&[ChangedTree]) -> T,
    ) -> Result<T, CoreError> {
        let vm = self.get_vm(account, id).await?;
        if vm.status != VmStatus::Running {
            return Err(CoreError::FailedPrecondition(format!(
                "the VM is {}",
                vm.status.as_str()
            )));
        }
        let _guard = self.lock_vm(id).await;
        let provider = self.provider_of(&vm)?;
        let changes = provider.hold_changes(&vm).await?;
        if changes.is_empty() {
            return Err(CoreError::FailedPrecondition(
                "the VM has no writable layer its provider lets the server read".into(),
            ));
        }
        let out = read(&changes).await;
        if let Err(e) = provider.release_changes(&vm).await {
            tracing::error!(vm_id = %vm.id, error = %error_chain(&e), "could not release a VM's changes after reading them");
        }
        Ok(out)
    }

    /// Snapshots a running or suspended VM.
    pub async fn snapshot_vm(
        &self,
        account: &AccountId,
        id: &VmId,
        name: Option<String>,
    ) -> Result<Snapshot, CoreError> {
        if let Some(node) = self.owner_elsewhere(id).await? {
            let call = NodeCall::Snapshot {
                account: account.clone(),
                vm: id.clone(),
                name,
            };
            return self.snapshot_on(&node, account, call).await;
        }
        self.get_vm(account, id).await?;
        let _guard = self.lock_vm(id).await;
        let vm = self.get_vm(account, id).await?;
        if !matches!(vm.status, VmStatus::Running | VmStatus::Suspended) {
            return Err(CoreError::FailedPrecondition(format!(
                "the VM is {}; only a running or suspended VM can be snapshotted",
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
    /// ([`Vms::lock_vm`]).
    pub async fn snapshot_locked_with(
        &self,
        vm: &Vm,
        name: Option<String>,
        kind: SnapshotKind,
        squash_above: Option<usize>,
    ) -> Result<Snapshot, CoreError> {
        let snapshot = self
            .parts
            .snapshots
            .begin(
                &vm.account_id,
                name,
                kind,
                Some(vm),
                vm.image_variant.clone(),
            )
            .await?;
        let result = self.capture(vm, squash_above).await;
        let done = self.parts.snapshots.finish(snapshot, result).await?;
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

    /// A new VM from a fresh snapshot of a running or suspended one, with its
    /// settings.
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
            placement: crate::model::Placement::ThisNode,
        };
        let vm = self.create_vm(account, spec, wait).await?;
        Ok((vm, snapshot))
    }
}
