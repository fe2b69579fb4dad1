//! paddock's core: the domain model, its validation rules, the traits the
//! store and the sandbox providers implement, the components over them,
//! and [`service::Service`], where they are composed: the one entry point
//! every API surface calls.
//!
//! Invariants kept here:
//! - every record belongs to an account, and every lookup is scoped by the
//!   caller's account: another account's resource is `NotFound`;
//! - a VM only moves along the transitions [`model::VmStatus::can_become`]
//!   allows;
//! - no HTTP or wire type appears in this crate.

// Folders by what they hold: the ports the core drives, the model, and
// one folder per concern. The modules keep their flat paths
// (`paddock_core::provider`, `paddock_core::service`, …) through the
// re-exports below.
pub mod artifacts;
pub mod cluster;
pub mod identity;
pub mod model;
pub mod networking;
pub mod ports;
pub mod storage;
pub mod vms;

// Foundations every concern uses.
pub mod clock;
pub mod documents;
pub mod error;
pub mod ids;
pub mod keyed_locks;
pub mod paging;
pub mod secrets;
pub mod service;
pub mod shutdown;

pub use artifacts::{dockerfile, snapshots};
pub use identity::{accounts, audit, quotas, ssh_keys, usage};
pub use model::exec;
pub use networking::{domains, shares};
pub use ports::{domain_backend, images, network_backend, provider, store, volume_backend};
pub use storage::{vault_services, vaults, volumes};
pub use vms::image_builds as build;
pub use vms::{exposed, launched, lifecycle, metering, network};
pub(crate) use vms::{stuck_agents, warm_pool};

pub use error::{CoreError, RuntimeError, StoreError};
