//! What VMs are made from and saved as: the accounts' images and their
//! pulls (library.rs), image builds from Dockerfiles, and snapshots of a
//! VM's filesystem.

pub mod build;
pub mod dockerfile;
pub mod library;
pub mod snapshots;
