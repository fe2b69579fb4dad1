//! This node's place among the nodes sharing the store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::error::{error_chain, CoreError};
use crate::ids::NodeId;
use crate::model::Node;
use crate::shutdown::Shutdown;
use crate::store::NodeStore;

/// Why a silent node's VMs are lost; their records say so.
const REASON_NODE_SILENT: &str = "its node stopped answering (its lease ran out)";

#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// How often this node beats and looks for silent nodes.
    pub heartbeat: Duration,
    /// Whether this process is a node (runs sandboxes, registers) or an
    /// API replica, which places every VM on a node.
    pub runs_sandboxes: bool,
}

pub struct Membership {
    store: Arc<dyn NodeStore>,
    node: Node,
    config: MembershipConfig,
}

impl Membership {
    pub fn new(store: Arc<dyn NodeStore>, node: Node, config: MembershipConfig) -> Arc<Self> {
        Arc::new(Self {
            store,
            node,
            config,
        })
    }

    pub fn node_id(&self) -> &NodeId {
        &self.node.id
    }

    /// This node as it registered (its labels, GPUs, providers).
    pub fn this_node(&self) -> &Node {
        &self.node
    }

    /// Whether this process runs sandboxes (a node) or only answers the
    /// API (a replica, which keeps no sandboxes' files either).
    pub fn runs_sandboxes(&self) -> bool {
        self.config.runs_sandboxes
    }

    /// Registers this node (again, at each start: its address, capacity
    /// and lease may have changed).
    pub async fn join(&self) -> Result<(), CoreError> {
        if !self.config.runs_sandboxes {
            tracing::info!(replica = %self.node.id, "API replica: VMs are placed on the nodes");
            return Ok(());
        }
        let now = Timestamp::now();
        let node = Node {
            started_at: now,
            heartbeat_at: now,
            ..self.node.clone()
        };
        self.store.upsert_node(&node).await?;
        tracing::info!(node = %node.id, address = %node.address, lease_seconds = node.lease.as_secs(), "node joined");
        Ok(())
    }

    /// Every node the store knows, alive or not.
    pub async fn nodes(&self) -> Result<Vec<Node>, CoreError> {
        Ok(self.store.list_nodes().await?)
    }

    /// The nodes alive now.
    pub async fn live_nodes(&self) -> Result<Vec<Node>, CoreError> {
        let now = Timestamp::now();
        let mut nodes = self.store.list_nodes().await?;
        nodes.retain(|n| n.is_alive(now));
        Ok(nodes)
    }

    /// Node `id`, while it is alive.
    pub async fn live_node(&self, id: &NodeId) -> Result<Option<Node>, CoreError> {
        let now = Timestamp::now();
        Ok(self
            .store
            .list_nodes()
            .await?
            .into_iter()
            .find(|n| &n.id == id && n.is_alive(now)))
    }

    /// Whether this process holds (took or renewed) the lease `name` for
    /// `ttl` from now. A store error counts as not holding it.
    pub async fn holds_lease(&self, name: &str, ttl: Duration) -> bool {
        let now = Timestamp::now();
        let until = Timestamp::from_unix_millis(
            now.unix_millis()
                .saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
        );
        match self
            .store
            .take_lease(name, self.node.id.as_str(), now, until)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(lease = name, error = %error_chain(&e), "could not take a lease");
                false
            }
        }
    }

    /// Where a VM of `provider` (any, for `None`) asking `memory_mb` goes,
    /// among the nodes
    /// carrying every one of `labels`: `None` for this node (or when no
    /// node runs `provider` or carries the labels), else the node with the most memory left after it (spread, so
    /// that a node lost takes the fewest VMs with it). This node wins a
    /// tie; an API replica (no sandboxes) never takes one.
    pub async fn place(
        &self,
        provider: Option<&str>,
        memory_mb: u64,
        labels: &BTreeMap<String, String>,
    ) -> Result<Option<Node>, CoreError> {
        let candidates: Vec<Node> = self
            .live_nodes()
            .await?
            .into_iter()
            .filter(|n| {
                provider.is_none_or(|provider| n.providers.iter().any(|p| p == provider))
                    && n.has_labels(labels)
            })
            .collect();
        // One node or none: nothing to weigh (and no scan of every live
        // VM's memory, which a lone node would pay on each create).
        if candidates.len() <= 1 {
            return Ok(candidates.into_iter().find(|n| n.id != self.node.id));
        }
        let committed: std::collections::HashMap<NodeId, u64> =
            self.store.committed_memory().await?.into_iter().collect();
        let left = |n: &Node| {
            i128::from(n.memory_mb)
                - i128::from(committed.get(&n.id).copied().unwrap_or(0))
                - i128::from(memory_mb)
        };
        let best = candidates.iter().max_by(|x, y| {
            left(x)
                .cmp(&left(y))
                .then_with(|| y.id.as_str().cmp(x.id.as_str()))
        });
        let Some(best) = best else {
            return Ok(None);
        };
        let here = self.config.runs_sandboxes
            && candidates
                .iter()
                .any(|n| n.id == self.node.id && left(n) >= left(best));
        Ok((!here && best.id != self.node.id).then(|| best.clone()))
    }

    /// One beat: this node's heartbeat, then the VMs of silent nodes.
    pub async fn beat(&self) -> Result<(), CoreError> {
        let now = Timestamp::now();
        if self.config.runs_sandboxes && !self.store.beat_node(&self.node.id, now).await? {
            self.join().await?;
        }
        let lost = self
            .store
            .mark_vms_of_silent_nodes_lost(now, REASON_NODE_SILENT)
            .await?;
        for (vm, node) in &lost {
            tracing::warn!(vm_id = %vm, node = %node, "VM lost: its node stopped answering");
        }
        Ok(())
    }

    /// Beats until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(self.config.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.beat().await {
                tracing::error!(error = %error_chain(&e), "node heartbeat failed");
            }
        }
    }
}
