//! VMs: the [`component::Vms`] component and its operations, one file per
//! concern. component.rs holds its state and a VM's create, start, patch
//! and end; lifecycle.rs stop and restart; agent_calls.rs exec, files,
//! terminals and staged variables through a VM's agent, and what its
//! answers mean for the VM; executions.rs recorded executions;
//! sessions.rs; network.rs a VM's network attachment and egress policy;
//! shares.rs the VM side of shares; exposed.rs create with a share and
//! custom domain; sweeper.rs reconcile after a restart, expiry, dead
//! sandboxes; launched.rs sandboxes launched from a definition;
//! warm_pool.rs sandboxes booted ahead of demand and prewarm.rs keeping
//! it filled; activity.rs when each VM was last used; volume_mounts.rs
//! volumes into VMs; snapshotting.rs snapshots of VMs and clones;
//! suspension.rs suspend and resume (and `auto_suspend`/`auto_resume`),
//! sealed_keys.rs the keys a VM's record keeps sealed (its suspended
//! memory's, its vault CA's); vault_services.rs the interception of a
//! VM's vault services;
//! image_builds.rs Dockerfile builds, whose steps run in sandboxes;
//! delegation.rs placing creates on other nodes and sending them the
//! changes to their VMs; metering.rs usage sampling; observers.rs what products that watch
//! VMs' activity (tapes) are told (observing.rs: what they are told and
//! their registry).
mod activity;
mod agent_calls;
pub mod bulk_delete;
pub mod component;
mod delegation;
pub(crate) mod executions;
pub mod exposed;
pub mod image_builds;
pub mod launched;
pub mod lifecycle;
pub mod metering;
pub mod network;
pub mod observers;
mod observing;
mod prewarm;
pub(crate) mod sealed_keys;
mod sessions;
mod shares;
mod snapshotting;
pub(crate) mod stuck_agents;
mod suspension;
mod sweeper;
mod vault_services;
mod volume_mounts;
pub(crate) mod warm_pool;
