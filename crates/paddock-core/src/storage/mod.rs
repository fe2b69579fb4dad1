//! What outlives a VM: volumes (with their checkpoints) and vaults of
//! secrets sealed under the master key, with the hosts they bind
//! (vault services).

pub mod vault_services;
pub mod vaults;
pub mod volumes;
