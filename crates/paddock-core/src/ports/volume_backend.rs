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

/// A file or directory in a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFile {
    /// From the volume's root, without a leading `/`.
    pub path: String,
    pub size: u64,
    pub is_dir: bool,
    pub modified_unix_ms: i64,
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

    /// Writes an upload for `volume` to a file of its own outside the
    /// volume's filesystem, refusing it past `max_bytes`; the file is
    /// removed when the returned guard drops.
    async fn spool(
        &self,
        volume: &VolumeId,
        data: crate::exec::ByteStream,
        max_bytes: u64,
    ) -> Result<Spooled, CoreError>;

    // The calls below act on the volume's live filesystem, which the
    // caller has mounted on the host; paths resolve inside it.

    async fn list_files(
        &self,
        volume: &VolumeId,
        prefix: &str,
        recursive: bool,
        limit: usize,
    ) -> Result<Vec<VolumeFile>, CoreError>;

    /// A regular file's bytes, refused past `max_bytes`.
    async fn read_file(
        &self,
        volume: &VolumeId,
        path: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, CoreError>;

    /// Puts a spooled upload at `path` (parents made), whole or not at
    /// all; an existing file is replaced only when `overwrite`.
    async fn place_file(
        &self,
        volume: &VolumeId,
        upload: &Spooled,
        path: &str,
        overwrite: bool,
    ) -> Result<u64, CoreError>;

    /// Removes a file or an empty directory.
    async fn delete_file(&self, volume: &VolumeId, path: &str) -> Result<(), CoreError>;
}

/// An upload written outside its volume, removed when dropped.
#[derive(Debug)]
pub struct Spooled {
    pub path: PathBuf,
    pub size: u64,
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
