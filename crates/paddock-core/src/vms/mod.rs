//! VMs: [`service::Service`] and its lifecycle (create, boot, stop,
//! restart, terminate, reconcile, the sweeper), exec and its recorded
//! executions, sandboxes launched from a definition, create with a share
//! and custom domain, the warm pool of sandboxes booted ahead of demand,
//! mounting volumes into VMs (volume_mounts.rs) and snapshotting and
//! cloning them (snapshotting.rs).

pub mod exec;
pub(crate) mod executions;
pub mod exposed;
pub mod launched;
pub mod lifecycle;
pub mod service;
mod snapshotting;
pub(crate) mod stuck_agents;
mod volume_mounts;
pub(crate) mod warm_pool;
