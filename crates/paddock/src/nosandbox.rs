//! An image and a volume backend that hold nothing, for commands that
//! only touch records (key management); their sandbox provider is
//! [`paddock_core::provider::UnconfiguredProvider`]. Every operation
//! fails with a clear error.

use async_trait::async_trait;
use paddock_core::ids::{CheckpointId, VolumeId};
use paddock_core::images::{BuiltLayer, ImageBackend, WrittenImage};
use paddock_core::model::{ImageConfig, LayerInfo, PullProgress, PulledImage};
use paddock_core::volume_backend::{MountSource, VolumeBackend};
use paddock_core::CoreError;

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
