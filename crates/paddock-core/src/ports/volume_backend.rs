//! The volume port: where volumes and their checkpoints live on the host,
//! and how they are mounted there so providers can bind them into
//! sandboxes. Implemented by `paddock-runtime` (ext4 images on loop
//! devices). The service serializes every call for one volume.

use std::path::PathBuf;

use async_trait::async_trait;

use crate::error::CoreError;
use crate::ids::{CheckpointId, VolumeId};

/// What a sandbox mount comes from: a volume's live content, or one of its
/// checkpoints (always read-only).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MountSource {
    pub volume: VolumeId,
    pub checkpoint: Option<CheckpointId>,
}

#[async_trait]
pub trait VolumeBackend: Send + Sync + 'static {
    /// Creates an empty filesystem of at most `size_bytes` for `volume`.
    async fn create(&self, volume: &VolumeId, size_bytes: u64) -> Result<(), CoreError>;

    /// Grows or shrinks the filesystem of a volume mounted nowhere.
    async fn resize(&self, volume: &VolumeId, size_bytes: u64) -> Result<(), CoreError>;

    /// Removes a volume mounted nowhere, with all its checkpoints.
    async fn remove(&self, volume: &VolumeId) -> Result<(), CoreError>;

    /// Bytes the volume's files and filesystem metadata use.
    async fn used_bytes(&self, volume: &VolumeId) -> Result<u64, CoreError>;

    /// Copies the volume's current content into `checkpoint`; consistent
    /// even while a sandbox writes to it (writers wait during the copy).
    async fn checkpoint(
        &self,
        volume: &VolumeId,
        checkpoint: &CheckpointId,
    ) -> Result<(), CoreError>;

    async fn remove_checkpoint(
        &self,
        volume: &VolumeId,
        checkpoint: &CheckpointId,
    ) -> Result<(), CoreError>;

    /// Replaces the content of a volume mounted nowhere with a checkpoint's.
    async fn restore(&self, volume: &VolumeId, checkpoint: &CheckpointId) -> Result<(), CoreError>;

    /// Mounts `source` on the host unless it already is, and returns the
    /// directory to bind into sandboxes.
    async fn mount(&self, source: &MountSource) -> Result<PathBuf, CoreError>;

    /// Unmounts `source` from the host; unmounting what is not mounted
    /// succeeds.
    async fn unmount(&self, source: &MountSource) -> Result<(), CoreError>;

    /// Unmounts every host mount not in `keep` (after a restart); returns
    /// how many it unmounted.
    async fn unmount_all_except(&self, keep: &[MountSource]) -> Result<usize, CoreError>;
}
