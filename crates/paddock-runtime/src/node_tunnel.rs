//! The way to a sandbox's agent on another node: an HTTP upgrade on that
//! node's internal endpoint (`/internal/v1/vms/{id}/agent`), which splices
//! the connection to the sandbox's agent socket. Nodes prove themselves
//! with their internal tokens (derived from the master key
//! every node shares, over the calling node's id; never given to
//! tenants). A port tunnel (`/internal/v1/vms/{id}/ports/{port}`) is the
//! same upgrade to one TCP connection to a port of the sandbox.

use std::sync::Arc;

use paddock_core::ids::{NodeId, VmId};
use paddock_core::RuntimeError;
use reqwest::header::{CONNECTION, UPGRADE};
use reqwest::StatusCode;

use crate::agent_client::AgentStream;
use crate::remote::NodeDirectory;

pub use paddock_core::cluster::AGENT_UPGRADE as UPGRADE_PROTOCOL;

/// A VM's agent on node `node`, whose address the directory knows (or
/// learns from the store when asked).
#[derive(Clone)]
pub struct NodeTunnel {
    pub(crate) directory: Arc<NodeDirectory>,
    pub node: NodeId,
    pub vm: VmId,
}

impl std::fmt::Debug for NodeTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTunnel")
            .field("node", &self.node)
            .field("vm", &self.vm)
            .finish_non_exhaustive()
    }
}

impl NodeTunnel {
    /// The path of a VM's agent on a node's internal endpoint.
    pub fn path(vm: &VmId) -> String {
        format!("/internal/v1/vms/{vm}/agent")
    }

    /// Opens one connection to the agent through the node.
    pub async fn open(&self) -> Result<AgentStream, RuntimeError> {
        let upgraded = upgrade(
            &self.directory,
            &self.node,
            &Self::path(&self.vm),
            UPGRADE_PROTOCOL,
        )
        .await?;
        Ok(Box::pin(upgraded))
    }
}

pub use paddock_core::cluster::PORT_UPGRADE;

/// The path of port `port` of VM `vm` on a node's internal endpoint.
pub fn port_path(vm: &VmId, port: u16) -> String {
    format!("/internal/v1/vms/{vm}/ports/{port}")
}

/// An HTTP upgrade to `protocol` on `path` of `node`'s internal endpoint,
/// with this node's token.
pub(crate) async fn upgrade(
    directory: &NodeDirectory,
    node: &NodeId,
    path: &str,
    protocol: &str,
) -> Result<reqwest::Upgraded, RuntimeError> {
    let node_url = directory.address_of(node).await.ok_or_else(|| {
        RuntimeError::Unavailable(format!(
            "the VM runs on node {node}, which is not registered"
        ))
    })?;
    let url = format!("{}{path}", node_url.trim_end_matches('/'));
    let unreachable = |e: &dyn std::fmt::Display| {
        RuntimeError::Unavailable(format!(
            "the VM's node {node} at {node_url} cannot be reached: {e}"
        ))
    };
    let response = directory
        .http()
        .get(&url)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, protocol)
        .bearer_auth(directory.token())
        .send()
        .await
        .map_err(|e| unreachable(&e))?;
    match response.status() {
        StatusCode::SWITCHING_PROTOCOLS => response.upgrade().await.map_err(|e| unreachable(&e)),
        // The node has no such running sandbox (any more).
        StatusCode::NOT_FOUND | StatusCode::GONE => Err(RuntimeError::SandboxGone),
        status => {
            let body = response.text().await.unwrap_or_default();
            Err(unreachable(&format!("{status}: {body}")))
        }
    }
}
