//! The account gateway: clusters, node pools, dev environments and batch
//! jobs over the same sandboxes, images, snapshots and volumes as the VM
//! API. Each resource is a document in the store ([`ResourceStore`]); this
//! module keeps their rules and runs their long work (connecting,
//! snapshotting, scheduling) in tasks whose progress shows in `state`.
//!
//! A product over the VM core: it keeps its records in the core's
//! document store and runs its sandboxes, images, snapshots and volumes
//! through the core's public API; the core knows nothing of it.

mod batch_jobs;
mod capacity;
mod clusters;
mod environments;
mod node_pools;
mod owned;
mod ssh_login;
mod validate;

use std::sync::Arc;

pub use batch_jobs::BatchJobInput;
pub use clusters::{ClusterInput, ClusterPatch};
pub use environments::{
    snapshot_image_ref, status_code, ConnectRequest, DisconnectRequest, EnvironmentInput,
    EnvironmentPatch, ENVIRONMENT_METADATA_KEY,
};
pub use node_pools::{NodePoolInput, NodePoolPatch};
pub use validate::{
    validate_annotations, validate_display_name, validate_resource_id, MetadataPatch,
};

use paddock_core::error::CoreError;
use paddock_core::ids::SnapshotId;
use paddock_core::model::{Env, Metadata, MountRequest, Placement, VmOptions, VmSpec};
use paddock_core::service::Service;

/// What the host offers the gateway's built-in cluster and fake pools.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Nodes of the built-in CPU pool: slices of this host, one rank each.
    pub cpu_nodes: u32,
    /// The host's NVIDIA GPUs (the N of `/dev/nvidiaN`), one rank each.
    pub gpus: Vec<u32>,
    /// The zone connections report.
    pub zone: String,
    /// Size of each environment's home volume.
    pub home_size_bytes: u64,
    /// Size of the node-local scratch a connection with
    /// `useLocalStorage` gets at `/tmp`.
    pub scratch_size_bytes: u64,
    /// Where the home volume is mounted.
    pub home_path: String,
    /// The writable layer of each node's sandbox (an environment's
    /// connection, a job's run), in MiB: the node's disk.
    pub node_disk_mb: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            cpu_nodes: 1,
            gpus: Vec::new(),
            zone: "local".to_owned(),
            home_size_bytes: 4 << 30,
            scratch_size_bytes: 4 << 30,
            home_path: "/root".to_owned(),
            node_disk_mb: 16 * 1024,
        }
    }
}

/// The account gateway, over the VM core.
pub struct Gateway {
    core: Arc<Service>,
    /// Where its clusters, pools, environments and jobs are kept.
    docs: Arc<paddock_core::documents::Documents>,
    config: GatewayConfig,
}

/// A sandbox the gateway starts: an environment's connection or a job's
/// run.
pub(crate) struct GatewaySandbox {
    /// The metadata key naming its owner, and the owner's resource name.
    pub label: (&'static str, String),
    pub ranks: u32,
    /// The image it starts from, unless `snapshot` is set.
    pub image: String,
    pub snapshot: Option<SnapshotId>,
    pub gpus: Vec<u32>,
    /// The node `gpus` are on (several nodes sharing the store).
    pub node: Option<paddock_core::ids::NodeId>,
    /// The node labels its pool selects.
    pub selector: std::collections::BTreeMap<String, String>,
    pub env: Env,
    pub volumes: Vec<MountRequest>,
}

impl Gateway {
    pub fn new(core: Arc<Service>, config: GatewayConfig) -> Self {
        Self {
            docs: Arc::clone(core.documents()),
            core,
            config,
        }
    }

    /// The VM a gateway sandbox runs as: one vCPU per rank (at least one;
    /// the default shape when more are asked than a VM may have), no
    /// lifetime (it runs until disconnected or done).
    pub(crate) fn gateway_vm_spec(&self, s: GatewaySandbox) -> Result<VmSpec, CoreError> {
        let disk = Some(i64::from(self.config.node_disk_mb));
        let resources = match self
            .core
            .vms()
            .resources(None, Some(i64::from(s.ranks.max(1))), disk)
        {
            Ok(r) => r,
            Err(_) => self.core.vms().resources(None, None, disk)?,
        };
        let mut metadata = Metadata::new();
        metadata.insert(s.label.0.to_owned(), s.label.1.into());
        Ok(VmSpec {
            session_id: None,
            lifetime_seconds: None,
            resources,
            metadata,
            env: s.env,
            image_variant: s.image,
            options: VmOptions {
                snapshot_id: s.snapshot,
                gpus: s.gpus,
                ..VmOptions::default()
            },
            volumes: s.volumes,
            provider: None,
            // Its GPUs' node; else a node its pool selects (a VM that
            // mounts a home volume runs on the volume's node regardless).
            placement: match s.node {
                Some(node) => Placement::Node(node),
                None if !s.selector.is_empty() => Placement::Matching(s.selector),
                None => Placement::AnyNode,
            },
        })
    }

    /// Picks up the gateway's work a restart interrupted: environments
    /// caught between states and jobs whose runner was lost.
    pub async fn recover_gateway(self: &Arc<Self>) -> Result<(), CoreError> {
        self.recover_environments().await?;
        self.recover_batch_jobs().await
    }
}
