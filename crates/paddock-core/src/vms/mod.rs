//! VMs: [`service::Service`] (composition, creating, starting, patching
//! and ending VMs), lifecycle.rs (stop, restart), agent_calls.rs (exec,
//! files and terminals through a VM's agent, and what its answers mean
//! for the VM), executions.rs (recorded executions), sessions.rs,
//! sweeper.rs (reconcile after a restart, expiry, dead sandboxes),
//! launched.rs (sandboxes launched from a definition), exposed.rs
//! (create with a share and custom domain), warm_pool.rs (sandboxes
//! booted ahead of demand), volume_mounts.rs (volumes into VMs) and
//! snapshotting.rs (snapshots of VMs, clones).

mod agent_calls;
pub mod exec;
pub(crate) mod executions;
pub mod exposed;
pub mod launched;
pub mod lifecycle;
pub mod metering;
pub mod service;
mod sessions;
mod snapshotting;
pub(crate) mod stuck_agents;
mod sweeper;
mod volume_mounts;
pub(crate) mod warm_pool;
