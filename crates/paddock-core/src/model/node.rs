//! A node: a paddock process that runs sandboxes, registered in a store
//! that several share, and alive while its heartbeat is fresh.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::ids::NodeId;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: NodeId,
    /// Where the node's API answers (its advertised URL).
    pub address: String,
    /// The sandbox providers it runs (`container`, `microvm`, …).
    pub providers: Vec<String>,
    /// What it offers sandboxes in all.
    pub memory_mb: u64,
    pub vcpus: u32,
    /// Its GPUs' indexes.
    pub gpus: Vec<u32>,
    /// The operator's labels, which node pools select by.
    pub labels: BTreeMap<String, String>,
    pub started_at: Timestamp,
    pub heartbeat_at: Timestamp,
    /// How long after its last heartbeat the node counts as gone and its
    /// VMs as lost.
    pub lease: Duration,
}

impl Node {
    /// When its lease runs out unless it beats again.
    pub fn lease_ends_at(&self) -> Timestamp {
        let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        Timestamp::from_unix_millis(self.heartbeat_at.unix_millis().saturating_add(lease_ms))
    }

    /// Whether it carries every one of `labels` (a node pool's selector).
    pub fn has_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        labels.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }

    pub fn is_alive(&self, now: Timestamp) -> bool {
        now.unix_millis() < self.lease_ends_at().unix_millis()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_lives_until_its_lease_runs_out() {
        let beat = Timestamp::from_unix_millis(10_000);
        let node = Node {
            id: NodeId::generate(),
            address: "http://127.0.0.1:7420".into(),
            providers: vec!["container".into()],
            memory_mb: 1024,
            vcpus: 2,
            gpus: Vec::new(),
            labels: BTreeMap::new(),
            started_at: beat,
            heartbeat_at: beat,
            lease: Duration::from_secs(30),
        };
        assert!(node.is_alive(Timestamp::from_unix_millis(39_999)));
        assert!(!node.is_alive(Timestamp::from_unix_millis(40_000)));
    }
}
