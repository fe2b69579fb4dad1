//! The image crate's errors.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("the registry {registry} could not be reached or refused the request: {message}")]
    Registry { registry: String, message: String },
    #[error("the registry {0} is not one this server may use: it takes only the registries its config lists")]
    RegistryNotAllowed(String),
    #[error("the registry {registry} refused the credentials")]
    Unauthorized { registry: String },
    #[error("image {0} not found in its registry")]
    NotFound(String),
    #[error("blob {expected} is corrupt: its content hashes to {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {digest} is truncated: {got} of {expected} bytes")]
    Truncated {
        digest: String,
        got: u64,
        expected: u64,
    },
    #[error("layer {layer}: entry {entry:?} is not allowed: {reason}")]
    UnsafeEntry {
        layer: String,
        entry: String,
        reason: &'static str,
    },
    #[error("the image has no linux/amd64 variant")]
    NoPlatform,
    #[error("unsupported media type {0}")]
    MediaType(String),
    #[error("the image config is not valid: {0}")]
    Config(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
