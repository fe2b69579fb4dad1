//! Other nodes' sandboxes, as this node reaches them: a provider per node
//! whose channel tunnels to that node's agents (exec, files, PTYs, jobs),
//! and the directory of nodes it is picked from. What only a sandbox's own
//! node can do (start, stop, suspend, resize, mounts) it refuses, naming
//! the node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use paddock_core::cluster::{NodeAnswer, NodeCall, NodeCallFailure, WireError};
use paddock_core::ids::{NodeId, VmId};
use paddock_core::model::{ChangedTree, Node, Resources, RootfsSpec, RuntimeHandle, Vm};
use paddock_core::provider::{Provider, RemoteNodes, SandboxChannel};
use paddock_core::store::NodeStore;
use paddock_core::RuntimeError;

use crate::agent_channel::{AgentChannel, AgentLocator};
use crate::agent_client::AgentAddress;
use crate::node_tunnel::NodeTunnel;

/// Where another node's agents answer: through its tunnel.
struct NodeAgents {
    directory: Weak<NodeDirectory>,
    node: NodeId,
}

impl AgentLocator for NodeAgents {
    fn agent_of(&self, id: &VmId) -> AgentAddress {
        match self.directory.upgrade() {
            Some(directory) => AgentAddress::Node(NodeTunnel {
                directory,
                node: self.node.clone(),
                vm: id.clone(),
            }),
            // The server is going down: nothing answers.
            None => AgentAddress::Socket(std::path::PathBuf::new()),
        }
    }

    fn oom_kills(&self, _id: &VmId) -> Box<dyn Fn() -> u64 + Send + 'static> {
        // The counter is in the other node's cgroups: an OOM kill there
        // reads as a plain SIGKILL here.
        Box::new(|| 0)
    }
}

/// Another node's sandboxes.
pub struct RemoteNode {
    node: NodeId,
    agents: AgentChannel<NodeAgents>,
}

impl RemoteNode {
    fn refuse(&self, what: &str) -> RuntimeError {
        RuntimeError::Unavailable(format!(
            "the VM runs on node {}: only that node can {what} it",
            self.node
        ))
    }
}

#[async_trait]
impl Provider for RemoteNode {
    fn name(&self) -> &'static str {
        "remote"
    }

    async fn start(&self, _vm: &Vm, _rootfs: &RootfsSpec) -> Result<RuntimeHandle, RuntimeError> {
        Err(self.refuse("start"))
    }

    async fn stop(&self, _id: &VmId, _handle: Option<RuntimeHandle>) -> Result<(), RuntimeError> {
        Err(self.refuse("stop"))
    }

    fn changes(&self, _vm: &Vm) -> Vec<ChangedTree> {
        Vec::new()
    }

    async fn set_frozen(&self, _id: &VmId, _frozen: bool) -> Result<(), RuntimeError> {
        Err(self.refuse("freeze"))
    }

    async fn hold_changes(&self, _vm: &Vm) -> Result<Vec<ChangedTree>, RuntimeError> {
        Err(self.refuse("snapshot"))
    }

    fn is_alive(&self, _id: &VmId, _handle: RuntimeHandle) -> bool {
        // Its node answers for it; this one cannot see its processes.
        true
    }

    async fn update_resources(
        &self,
        _id: &VmId,
        _resources: &Resources,
    ) -> Result<(), RuntimeError> {
        Err(self.refuse("resize"))
    }

    async fn cleanup_orphans(&self, _live: &[VmId]) -> Result<usize, RuntimeError> {
        Ok(0)
    }

    fn channel(&self) -> &dyn SandboxChannel {
        &self.agents
    }
}

/// The nodes sharing the store: their addresses as last read (read again
/// when a node is not known yet), and a provider for each other node.
pub struct NodeDirectory {
    store: Arc<dyn NodeStore>,
    this: NodeId,
    token: String,
    http: reqwest::Client,
    addresses: Mutex<HashMap<NodeId, String>>,
    providers: Mutex<HashMap<NodeId, Arc<RemoteNode>>>,
    myself: Weak<NodeDirectory>,
}

impl NodeDirectory {
    pub fn new(store: Arc<dyn NodeStore>, this: NodeId, token: String) -> Arc<Self> {
        Arc::new_cyclic(|myself| Self {
            store,
            this,
            token,
            // No proxy: nodes talk on the installation's own network.
            http: reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            addresses: Mutex::new(HashMap::new()),
            providers: Mutex::new(HashMap::new()),
            myself: myself.clone(),
        })
    }

    /// The client nodes talk to each other with.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The installation's internal token, which nodes show each other.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The other nodes' addresses, read again from the store.
    pub async fn other_addresses(&self) -> Vec<String> {
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "could not read the nodes");
        }
        self.addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(id, _)| **id != self.this)
            .map(|(_, address)| address.clone())
            .collect()
    }

    /// Reads the nodes' addresses again.
    pub async fn refresh(&self) -> Result<(), paddock_core::StoreError> {
        let nodes: Vec<Node> = self.store.list_nodes().await?;
        let mut addresses = self
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *addresses = nodes.into_iter().map(|n| (n.id, n.address)).collect();
        Ok(())
    }

    /// Where `node`'s API answers: as last read, else read now.
    pub async fn address_of(&self, node: &NodeId) -> Option<String> {
        let known = |this: &Self| {
            this.addresses
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(node)
                .cloned()
        };
        if let Some(address) = known(self) {
            return Some(address);
        }
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "could not read the nodes");
        }
        known(self)
    }

    /// Refreshes every `interval` until `shutdown` (a node that moved is
    /// found at its new address).
    pub async fn run(
        self: Arc<Self>,
        interval: Duration,
        mut shutdown: paddock_core::shutdown::Shutdown,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "could not read the nodes");
            }
        }
    }
}

/// Where a node answers [`NodeCall`]s.
const CALLS_PATH: &str = "/internal/v1/calls";

/// How long a call may take: a waited create includes an image pull and
/// a microVM's boot.
const CALL_DEADLINE: Duration = Duration::from_secs(600);

#[async_trait]
impl RemoteNodes for NodeDirectory {
    fn provider_on(&self, node: &NodeId) -> Option<Arc<dyn Provider>> {
        if *node == self.this {
            return None;
        }
        let mut providers = self
            .providers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let remote = providers.entry(node.clone()).or_insert_with(|| {
            Arc::new(RemoteNode {
                node: node.clone(),
                agents: AgentChannel::new(NodeAgents {
                    directory: self.myself.clone(),
                    node: node.clone(),
                }),
            })
        });
        Some(Arc::clone(remote) as Arc<dyn Provider>)
    }

    async fn open_port(
        &self,
        node: &NodeId,
        vm: &VmId,
        port: u16,
        inside: Option<std::net::IpAddr>,
    ) -> Result<paddock_core::provider::PortStream, RuntimeError> {
        let mut path = crate::node_tunnel::port_path(vm, port);
        if let Some(ip) = inside {
            path.push_str(&format!("?inside={ip}"));
        }
        let upgraded =
            crate::node_tunnel::upgrade(self, node, &path, crate::node_tunnel::PORT_UPGRADE)
                .await?;
        Ok(Box::pin(upgraded))
    }

    async fn call(&self, node: &NodeId, call: &NodeCall) -> Result<NodeAnswer, NodeCallFailure> {
        let unreachable = |why: String| NodeCallFailure::Unreachable {
            node: node.to_string(),
            why,
        };
        let address = self
            .address_of(node)
            .await
            .ok_or_else(|| unreachable("it is not registered".into()))?;
        let answer = self
            .http
            .post(format!("{}{CALLS_PATH}", address.trim_end_matches('/')))
            .bearer_auth(&self.token)
            .timeout(CALL_DEADLINE)
            .json(call)
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = answer.status();
        let body = answer
            .bytes()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| unreachable(format!("its answer is not one: {e}")));
        }
        // A refusal the node made as it would for its own caller carries
        // the error; anything else (a 401 for a wrong token, a proxy's
        // page) means the call was not made.
        match serde_json::from_slice::<WireError>(&body) {
            Ok(wire) => Err(NodeCallFailure::Refused(wire.into())),
            Err(_) => Err(unreachable(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))),
        }
    }
}
