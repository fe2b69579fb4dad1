//! VM networking on the host. Each VM gets a network namespace prepared
//! ahead of demand (a warm pool), wired by a veth to a host bridge (one
//! per segment of the subnet: see [`segment`]), with
//! an address from the server's subnet, NAT to the host's uplink, and a
//! resolver on the gateway. Egress policy is enforced by nftables on the
//! host side, where the VM cannot touch it. A VM's vault services are
//! served on the gateway too ([`intercept`]).

mod addresses;
pub mod dns;
pub mod flows;
pub mod guard;
mod host;
pub mod intercept;
pub mod link;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod rfc2136;
pub mod segment;
mod sys;

pub use host::{HostNetwork, NetworkConfig};
pub use segment::BRIDGE_PORTS;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{tool}: {message}")]
    Tool { tool: &'static str, message: String },
    #[error("{what}")]
    Host {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the subnet {0} has no free address left")]
    Exhausted(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
}

impl From<NetError> for paddock_core::RuntimeError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::Host { what, source } => paddock_core::RuntimeError::host(what, source),
            other => paddock_core::RuntimeError::Setup(format!("network: {other}")),
        }
    }
}
