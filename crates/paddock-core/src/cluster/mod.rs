//! Several paddock processes over one store: each node registers itself,
//! beats while it lives, and marks `lost` the VMs of any node whose lease
//! ran out. Work that one process of the installation must do alone runs
//! under a lease in the store.

mod calls;
mod membership;

pub use calls::{NodeAnswer, NodeCall, NodeCallFailure, WireError};
pub use membership::{Membership, MembershipConfig};

/// The protocol a node's agent tunnel upgrades to: the agent protocol,
/// framed as on a sandbox's agent socket.
pub const AGENT_UPGRADE: &str = "paddock-agent";

/// What the internal token is the master key's MAC of.
pub const INTERNAL_TOKEN_PURPOSE: &str = "paddock/internal-channel/v1";
