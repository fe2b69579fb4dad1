//! paddock's core: the domain model, its validation rules, the traits the
//! store and the sandbox providers implement, and [`service::Service`], the
//! one entry point every API surface calls.
//!
//! Invariants kept here:
//! - every record belongs to an account, and every lookup is scoped by the
//!   caller's account: another account's resource is `NotFound`;
//! - a VM only moves along the transitions [`model::VmStatus::can_become`]
//!   allows;
//! - no HTTP or wire type appears in this crate.

pub mod accounts;
pub mod build;
pub mod clock;
pub mod dockerfile;
pub mod documents;
pub mod domain_backend;
pub mod domains;
pub mod error;
pub mod exec;
mod executions;
pub mod exposed;
pub mod ids;
pub mod images;
pub mod keyed_locks;
pub mod launched;
pub mod lifecycle;
pub mod model;
pub mod network;
pub mod network_backend;
pub mod provider;
pub mod secrets;
pub mod service;
pub mod shares;
pub mod snapshots;
pub mod ssh_keys;
pub mod store;
mod stuck_agents;
pub mod vaults;
pub mod volume_backend;
pub mod volumes;
mod warm_pool;

pub use error::{CoreError, RuntimeError, StoreError};
