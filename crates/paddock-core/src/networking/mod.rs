//! What reaches out of and into VMs: shares that expose their ports,
//! custom domains routed to them, and webhooks (a VM's own network
//! attachment and egress policy are `vms/network.rs`).

pub mod domains;
pub mod shares;
pub mod webhooks;
