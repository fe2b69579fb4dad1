//! A provider that runs nothing, for commands that only touch records
//! (key management). Every sandbox operation fails with a clear error.

use async_trait::async_trait;
use paddock_core::exec::{
    ByteStream, ExecRequest, ExecStream, FileContent, PtyConnection, PtyInfo, PtySpec, SandboxPath,
};
use paddock_core::ids::{CheckpointId, VmId, VolumeId};
use paddock_core::images::{BuiltLayer, ImageBackend, WrittenImage};
use paddock_core::model::{
    ImageConfig, LayerInfo, PullProgress, PulledImage, Resources, RootfsSpec, RuntimeHandle, Vm,
};
use paddock_core::provider::Provider;
use paddock_core::volume_backend::{MountSource, VolumeBackend};
use paddock_core::CoreError;
use paddock_core::RuntimeError;

pub struct NoSandboxes;

fn refused() -> RuntimeError {
    RuntimeError::Setup("this command does not run sandboxes".into())
}

#[async_trait]
impl Provider for NoSandboxes {
    fn name(&self) -> &'static str {
        "none"
    }
    fn has_variant(&self, _: &str) -> bool {
        false
    }
    async fn start(&self, _: &Vm, _: &RootfsSpec) -> Result<RuntimeHandle, RuntimeError> {
        Err(refused())
    }
    async fn stop(&self, _: &VmId, _: Option<RuntimeHandle>) -> Result<(), RuntimeError> {
        Err(refused())
    }
    fn changes(&self, _: &VmId) -> Vec<paddock_core::model::ChangedTree> {
        Vec::new()
    }
    async fn attach(
        &self,
        _: &VmId,
        _: RuntimeHandle,
        _: &std::path::Path,
        _: &str,
        _: bool,
    ) -> Result<(), RuntimeError> {
        Err(refused())
    }
    async fn detach(&self, _: &VmId, _: RuntimeHandle, _: &str) -> Result<(), RuntimeError> {
        Err(refused())
    }
    async fn set_frozen(&self, _: &VmId, _: bool) -> Result<(), RuntimeError> {
        Err(refused())
    }
    async fn stage_env(&self, _: &VmId, _: Vec<(String, String)>) -> Result<(), RuntimeError> {
        Err(refused())
    }
    fn is_alive(&self, _: &VmId, _: RuntimeHandle) -> bool {
        false
    }
    async fn update_resources(&self, _: &VmId, _: &Resources) -> Result<(), RuntimeError> {
        Err(refused())
    }
    async fn exec(&self, _: &VmId, _: ExecRequest) -> Result<ExecStream, RuntimeError> {
        Err(refused())
    }
    async fn read_file(&self, _: &VmId, _: &SandboxPath) -> Result<FileContent, RuntimeError> {
        Err(refused())
    }
    async fn write_file(
        &self,
        _: &VmId,
        _: &SandboxPath,
        _: Option<u32>,
        _: ByteStream,
    ) -> Result<u64, RuntimeError> {
        Err(refused())
    }
    async fn pty_create(&self, _: &VmId, _: PtySpec) -> Result<PtyInfo, RuntimeError> {
        Err(refused())
    }
    async fn pty_list(&self, _: &VmId) -> Result<Vec<PtyInfo>, RuntimeError> {
        Err(refused())
    }
    async fn pty_get(&self, _: &VmId, _: &str) -> Result<PtyInfo, RuntimeError> {
        Err(refused())
    }
    async fn pty_resize(&self, _: &VmId, _: &str, _: u16, _: u16) -> Result<(), RuntimeError> {
        Err(refused())
    }
    async fn pty_kill(&self, _: &VmId, _: &str) -> Result<(), RuntimeError> {
        Err(refused())
    }
    async fn pty_attach(&self, _: &VmId, _: &str) -> Result<PtyConnection, RuntimeError> {
        Err(refused())
    }
    async fn cleanup_orphans(&self, _: &[VmId]) -> Result<usize, RuntimeError> {
        Ok(0)
    }
}

fn no_images() -> CoreError {
    CoreError::Unavailable("this command does not handle images".into())
}

/// An image backend that has no images, for the same commands.
pub struct NoImages;

#[async_trait]
impl ImageBackend for NoImages {
    async fn pull(&self, _: &str, _: &PullProgress) -> Result<PulledImage, CoreError> {
        Err(CoreError::Unavailable(
            "this command does not pull images".into(),
        ))
    }
    fn is_reference(&self, _: &str) -> bool {
        false
    }
    fn layer_dirs(&self, _: &[LayerInfo]) -> Vec<std::path::PathBuf> {
        Vec::new()
    }
    async fn collect_garbage(
        &self,
        _: &std::collections::BTreeSet<String>,
    ) -> Result<u64, CoreError> {
        Ok(0)
    }
    async fn pack_changes(
        &self,
        _: &[paddock_core::model::ChangedTree],
    ) -> Result<BuiltLayer, CoreError> {
        Err(no_images())
    }

    async fn pack_squashed(
        &self,
        _: &[paddock_core::model::ChangedTree],
    ) -> Result<BuiltLayer, CoreError> {
        Err(no_images())
    }
    async fn file_layer(&self, _: &str, _: &[u8], _: u32) -> Result<BuiltLayer, CoreError> {
        Err(no_images())
    }
    async fn diff_ids(&self, _: &str) -> Result<Vec<String>, CoreError> {
        Err(no_images())
    }
    async fn write_image(
        &self,
        _: &[LayerInfo],
        _: &[String],
        _: &ImageConfig,
    ) -> Result<WrittenImage, CoreError> {
        Err(no_images())
    }
    async fn push(&self, _: &[LayerInfo], _: &str, _: &str) -> Result<String, CoreError> {
        Err(no_images())
    }
}

/// Volume storage for commands that only touch records.
pub struct NoVolumes;

fn no_volumes() -> CoreError {
    CoreError::Unavailable("this command does not manage volumes".into())
}

#[async_trait]
impl VolumeBackend for NoVolumes {
    async fn create(&self, _: &VolumeId, _: u64) -> Result<(), CoreError> {
        Err(no_volumes())
    }
    async fn resize(&self, _: &VolumeId, _: u64) -> Result<(), CoreError> {
        Err(no_volumes())
    }
    async fn remove(&self, _: &VolumeId) -> Result<(), CoreError> {
        Err(no_volumes())
    }
    async fn used_bytes(&self, _: &VolumeId) -> Result<u64, CoreError> {
        Err(no_volumes())
    }
    async fn checkpoint(&self, _: &VolumeId, _: &CheckpointId) -> Result<(), CoreError> {
        Err(no_volumes())
    }
    async fn remove_checkpoint(&self, _: &VolumeId, _: &CheckpointId) -> Result<(), CoreError> {
        Err(no_volumes())
    }
    async fn restore(&self, _: &VolumeId, _: &CheckpointId) -> Result<(), CoreError> {
        Err(no_volumes())
    }
    async fn mount(&self, _: &MountSource) -> Result<std::path::PathBuf, CoreError> {
        Err(no_volumes())
    }
    async fn unmount(&self, _: &MountSource) -> Result<(), CoreError> {
        Err(no_volumes())
    }
    async fn unmount_all_except(&self, _: &[MountSource]) -> Result<usize, CoreError> {
        Ok(0)
    }
}
