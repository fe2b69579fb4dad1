//! VMs: [`service::Service`] and its lifecycle (create, boot, stop,
//! restart, terminate, reconcile, the sweeper), exec and its recorded
//! executions, sandboxes launched from a definition, create with a share
//! and custom domain, and the warm pool of sandboxes booted ahead of
//! demand.

pub mod exec;
pub(crate) mod executions;
pub mod exposed;
pub mod launched;
pub mod lifecycle;
pub mod service;
pub(crate) mod stuck_agents;
pub(crate) mod warm_pool;
