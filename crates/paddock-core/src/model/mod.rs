//! The records paddock keeps and the rules that make them valid.

mod account;
mod execution;
mod image;
mod resources;
mod snapshot;
mod vault;
mod vm;
mod volume;

pub use account::{Account, ApiKey, ApiKeySecret, NewApiKey};
pub use execution::{Execution, ExecutionStatus};
pub use image::{
    ChangedTree, Image, ImageConfig, LayerInfo, LayerProgress, PullPhase, PullProgress, PullState,
    PulledImage, RootfsSpec,
};
pub use resources::{Limits, ResourceError, Resources};
pub use snapshot::{validate_snapshot_name, Snapshot, SnapshotKind, SnapshotStatus};
pub use vault::{Credential, Sealed, SecretValue, Vault};
pub use vm::{
    Env, EnvError, EnvStatus, Metadata, RuntimeHandle, Vm, VmFilter, VmOptions, VmPatch, VmSpec,
    VmStatus, VmStatusSet,
};
pub use volume::{validate_mount_path, Attachment, Checkpoint, MountMode, MountRequest, Volume};
