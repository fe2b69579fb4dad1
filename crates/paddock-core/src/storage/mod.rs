//! What outlives a VM: volumes (with their checkpoints) and vaults of
//! secrets sealed under the master key.

pub mod vaults;
pub mod volumes;
