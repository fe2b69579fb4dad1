//! Images: pulling from OCI registries into a content-addressed blob
//! store, and unpacking layers once into read-only directories that
//! overlayfs stacks as a sandbox's root.
//!
//! Invariants:
//! - a blob is in the store only under the digest of its bytes: ingest
//!   hashes while writing to a temporary file and renames it into place
//!   only when the digest matches; unpacking hashes again while reading;
//! - a layer directory exists only complete: it is unpacked beside its
//!   final name and renamed;
//! - no layer entry is written outside its layer's root (`..`, absolute
//!   paths and paths through symlinks are refused).

mod blobs;
mod digest;
mod error;
mod pack;
mod pull;
mod squash;
mod stage;
mod sys;
mod unpack;

pub use blobs::BlobStore;
pub use digest::Digest;
pub use error::ImageError;
pub use pull::{ImageStore, PeerBlobs, RegistryConfig};
pub use unpack::unpack_layer;
