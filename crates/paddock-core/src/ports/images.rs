//! The image port: where images come from and where their layers live.
//! Implemented by `paddock-image` (OCI registries and a blob store).

use std::collections::BTreeSet;
use std::path::PathBuf;

use async_trait::async_trait;

use crate::error::CoreError;
use crate::model::{ChangedTree, ImageConfig, LayerInfo, PullProgress, PulledImage};

/// A layer a build made: stored, unpacked, with its uncompressed digest.
#[derive(Debug, Clone)]
pub struct BuiltLayer {
    pub info: LayerInfo,
    pub diff_id: String,
}

/// A file a build puts in a layer (a heredoc, or a file of the build's
/// context).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerFile {
    /// Absolute, in the image.
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// What a build or a push writes: the digests of the image's manifest and
/// config.
#[derive(Debug, Clone)]
pub struct WrittenImage {
    pub manifest_digest: String,
    pub config_digest: String,
}

#[async_trait]
pub trait ImageBackend: Send + Sync + 'static {
    /// Pulls `reference` (blobs verified and layers unpacked), reporting
    /// progress as it goes. Blobs already stored are not downloaded again;
    /// concurrent pulls of the same blob wait for one download.
    async fn pull(
        &self,
        reference: &str,
        progress: &PullProgress,
    ) -> Result<PulledImage, CoreError>;

    /// Whether `reference` parses as an image reference.
    fn is_reference(&self, reference: &str) -> bool;

    /// `reference` in full (`busybox` → `docker.io/library/busybox:latest`),
    /// so two spellings of one image compare equal; `None` when it does
    /// not parse.
    fn canonical(&self, _reference: &str) -> Option<String> {
        None
    }

    /// The unpacked directories of `layers` (bottom first), topmost first:
    /// the order of overlayfs's `lowerdir`; a repeated layer once, at its
    /// topmost place.
    fn layer_dirs(&self, layers: &[LayerInfo]) -> Vec<PathBuf>;

    /// Makes sure `layers` are unpacked on this host: a layer another node
    /// made (a snapshot taken there) is fetched from it by digest first.
    async fn ensure_layers(&self, _layers: &[LayerInfo]) -> Result<(), CoreError> {
        Ok(())
    }

    /// Where blob `digest` is on this host, when it is here: what other
    /// nodes fetch layers from. A layer kept only as its directory (a
    /// snapshot's) gets its blob written here.
    async fn local_blob(&self, _digest: &str) -> Option<PathBuf> {
        None
    }

    /// Removes every blob and unpacked layer whose digest is not in
    /// `keep`; returns how many bytes it freed.
    async fn collect_garbage(&self, keep: &BTreeSet<String>) -> Result<u64, CoreError>;

    /// Packs a directory of changes (a sandbox's writable layer) into a
    /// stored, unpacked layer.
    async fn pack_changes(&self, trees: &[ChangedTree]) -> Result<BuiltLayer, CoreError>;

    /// One layer that is the sum of `trees` applied bottom first (stacked
    /// snapshot layers and a sandbox's changes), as overlayfs would see
    /// them: whiteouts and opaque directories kept.
    async fn pack_squashed(&self, trees: &[ChangedTree]) -> Result<BuiltLayer, CoreError>;

    /// A stored, unpacked layer holding `files` (with their parent
    /// directories).
    async fn files_layer(&self, files: &[LayerFile]) -> Result<BuiltLayer, CoreError>;

    /// The uncompressed digests of a stored image config's layers.
    async fn diff_ids(&self, config_digest: &str) -> Result<Vec<String>, CoreError>;

    /// Stores the config and manifest of an image made of `layers`.
    async fn write_image(
        &self,
        layers: &[LayerInfo],
        diff_ids: &[String],
        config: &ImageConfig,
    ) -> Result<WrittenImage, CoreError>;

    /// Pushes a stored image (its layers and config) to `target`; returns
    /// the pushed manifest's digest.
    async fn push(
        &self,
        layers: &[LayerInfo],
        config_digest: &str,
        target: &str,
    ) -> Result<String, CoreError>;
}
