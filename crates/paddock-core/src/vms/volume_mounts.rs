//! The VMs' side of volumes: mounting them into a VM when it starts or
//! while it runs, unmounting them, and listing a VM's mounts. What needs
//! no VM (the volumes, their checkpoints, attachments' records and host
//! mounts) is the `Volumes` component (`storage/volumes.rs`).

use super::component::Vms;
use crate::error::CoreError;
use crate::ids::{AccountId, VmId, VolumeId};
use crate::model::{validate_mount_path, Attachment, MountMode, MountRequest, RuntimeHandle, Vm};
use crate::volumes::source_of;

impl Vms {
    /// Mounts every recorded attachment of a VM that just started. On
    /// failure the caller stops the VM and releases them.
    pub(crate) async fn mount_attachments(
        &self,
        vm: &Vm,
        handle: RuntimeHandle,
    ) -> Result<(), CoreError> {
        let _lock = self.parts.volumes.lock().await;
        for a in self.parts.volumes.of_vm(&vm.id).await? {
            self.mount_one(vm, &a, handle).await?;
        }
        Ok(())
    }

    async fn mount_one(
        &self,
        vm: &Vm,
        a: &Attachment,
        handle: RuntimeHandle,
    ) -> Result<(), CoreError> {
        let source = self.parts.volumes.mount_on_host(a).await?;
        self.provider_of(vm)?
            .attach(
                &a.vm_id,
                handle,
                &source,
                &a.mount_path,
                a.mode == MountMode::ReadOnly,
            )
            .await?;
        tracing::info!(vm_id = %a.vm_id, volume_id = %a.volume_id, mount_path = %a.mount_path, mode = a.mode.as_str(), "volume mounted");
        Ok(())
    }

    /// Mounts a volume in a running VM.
    pub async fn attach_volume(
        &self,
        account: &AccountId,
        vm_id: &VmId,
        request: MountRequest,
    ) -> Result<Attachment, CoreError> {
        let _vm_guard = self.lock_vm(vm_id).await;
        let vm = self.running_vm(account, vm_id).await?;
        let handle = vm
            .runtime
            .ok_or_else(|| CoreError::FailedPrecondition("the VM has no running sandbox".into()))?;
        let _lock = self.parts.volumes.lock().await;
        let existing = self.parts.volumes.of_vm(vm_id).await?;
        let mut reserved = self
            .parts
            .volumes
            .reserve(account, vm_id, &existing, std::slice::from_ref(&request))
            .await?;
        let attachment = reserved
            .pop()
            .ok_or_else(|| CoreError::Unavailable("the attachment was not recorded".into()))?;
        if let Err(e) = self.mount_one(&vm, &attachment, handle).await {
            self.parts
                .volumes
                .forget(vm_id, &attachment.mount_path)
                .await?;
            self.parts
                .volumes
                .unmount_if_unused(&source_of(&attachment))
                .await;
            return Err(e);
        }
        Ok(attachment)
    }

    pub async fn vm_volumes(
        &self,
        account: &AccountId,
        vm_id: &VmId,
    ) -> Result<Vec<Attachment>, CoreError> {
        self.get_vm(account, vm_id).await?;
        self.parts.volumes.of_vm(vm_id).await
    }

    /// Unmounts a volume from a running VM: at `mount_path`, or wherever it
    /// is mounted when no path is given. Returns what was unmounted.
    pub async fn detach_volume(
        &self,
        account: &AccountId,
        vm_id: &VmId,
        volume_id: &VolumeId,
        mount_path: Option<&str>,
    ) -> Result<Vec<Attachment>, CoreError> {
        let _vm_guard = self.lock_vm(vm_id).await;
        let vm = self.get_vm(account, vm_id).await?;
        let mount_path = mount_path
            .map(|p| validate_mount_path(p).map_err(|m| CoreError::invalid("mount_path", m)))
            .transpose()?;
        let _lock = self.parts.volumes.lock().await;
        let matching: Vec<Attachment> = self
            .parts
            .volumes
            .of_vm(vm_id)
            .await?
            .into_iter()
            .filter(|a| &a.volume_id == volume_id)
            .filter(|a| mount_path.as_ref().is_none_or(|p| &a.mount_path == p))
            .collect();
        if matching.is_empty() {
            return Err(CoreError::not_found("volume mount", volume_id));
        }
        for a in &matching {
            if let Some(handle) = vm.runtime {
                self.provider_of(&vm)?
                    .detach(vm_id, handle, &a.mount_path)
                    .await?;
            }
            self.parts.volumes.forget(vm_id, &a.mount_path).await?;
            self.parts.volumes.unmount_if_unused(&source_of(a)).await;
            tracing::info!(vm_id = %vm_id, volume_id = %a.volume_id, mount_path = %a.mount_path, "volume unmounted");
        }
        Ok(matching)
    }
}
