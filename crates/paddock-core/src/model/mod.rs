//! The records paddock keeps and the rules that make them valid.

mod account;
mod execution;
mod image;
mod resources;
mod vm;

pub use account::{Account, ApiKey, ApiKeySecret, NewApiKey};
pub use execution::{Execution, ExecutionStatus};
pub use image::{
    Image, ImageConfig, LayerInfo, LayerProgress, PullPhase, PullProgress, PullState, PulledImage,
    RootfsSpec,
};
pub use resources::{Limits, ResourceError, Resources};
pub use vm::{
    Env, EnvError, Metadata, RuntimeHandle, Vm, VmFilter, VmPatch, VmSpec, VmStatus, VmStatusSet,
};
