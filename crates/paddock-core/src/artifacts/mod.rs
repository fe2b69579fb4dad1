//! What VMs are made from and saved as: image builds from Dockerfiles,
//! and snapshots of a VM's filesystem.

pub mod build;
pub mod dockerfile;
pub mod snapshots;
