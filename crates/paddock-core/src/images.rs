//! The image port: where images come from and where their layers live.
//! Implemented by `paddock-image` (OCI registries and a blob store).

use std::collections::BTreeSet;
use std::path::PathBuf;

use async_trait::async_trait;

use crate::error::CoreError;
use crate::model::{LayerInfo, PullProgress, PulledImage};

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

    /// The unpacked directories of `layers` (bottom first), topmost first:
    /// the order of overlayfs's `lowerdir`.
    fn layer_dirs(&self, layers: &[LayerInfo]) -> Vec<PathBuf>;

    /// Removes every blob and unpacked layer whose digest is not in
    /// `keep`; returns how many bytes it freed.
    async fn collect_garbage(&self, keep: &BTreeSet<String>) -> Result<u64, CoreError>;
}
