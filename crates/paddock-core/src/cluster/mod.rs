//! Several paddock processes over one store: each node registers itself,
//! beats while it lives, and marks `lost` the VMs of any node whose lease
//! ran out. Work that one process of the installation must do alone runs
//! under a lease in the store.

mod calls;
mod membership;
mod tokens;

pub use calls::{NodeAnswer, NodeCall, NodeCallFailure, WireError};
pub use membership::{Membership, MembershipConfig};
pub use tokens::{node_token, token_node};

/// The protocol a node's agent tunnel upgrades to: the agent protocol,
/// framed as on a sandbox's agent socket.
pub const AGENT_UPGRADE: &str = "paddock-agent";

/// The protocol a node's port tunnel upgrades to: the bytes of one TCP
/// connection to a port of one of its sandboxes.
pub const PORT_UPGRADE: &str = "paddock-tcp";

/// What nodes' internal tokens are the master key's MACs of (with the
/// node's id: [`node_token`]).
pub const INTERNAL_TOKEN_PURPOSE: &str = "paddock/internal-channel/v1";
