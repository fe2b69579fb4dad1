//! What VMs are made from and saved as: the accounts' images and their
//! pulls (library.rs), Dockerfiles parsed (their builds run in sandboxes:
//! `vms/image_builds.rs`), and snapshots of a VM's filesystem.

pub mod dockerfile;
pub mod library;
pub mod snapshots;
