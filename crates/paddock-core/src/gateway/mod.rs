//! The account gateway: clusters, node pools, dev environments and batch
//! jobs over the same sandboxes, images, snapshots and volumes as the VM
//! API. Each resource is a document in the store ([`ResourceStore`]); this
//! module keeps their rules and runs their long work (connecting,
//! snapshotting, scheduling) in tasks whose progress shows in `state`.

mod batch_jobs;
mod capacity;
mod clusters;
mod environments;
mod node_pools;
mod validate;

use std::sync::Arc;

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

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

use crate::error::CoreError;
use crate::ids::{AccountId, SnapshotId};
use crate::keyed_locks::KeyedLocks;
use crate::model::gateway::Resource;
use crate::model::{Env, Metadata, MountRequest, VmOptions, VmSpec};
use crate::service::Service;
use crate::store::ResourceDoc;

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
        }
    }
}

/// The gateway's in-memory coordination.
#[derive(Default)]
pub struct GatewayRuntime {
    /// Serializes rank accounting: a placement reads every holder and
    /// records its own before the next one reads.
    placement: AsyncMutex<()>,
    /// Serializes changes to one resource (`kind/account/id`).
    locks: KeyedLocks<String>,
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
    pub env: Env,
    pub volumes: Vec<MountRequest>,
}

impl Service {
    /// The VM a gateway sandbox runs as: one vCPU per rank (at least one;
    /// the default shape when more are asked than a VM may have), no
    /// lifetime (it runs until disconnected or done).
    pub(crate) fn gateway_vm_spec(&self, s: GatewaySandbox) -> Result<VmSpec, CoreError> {
        let resources = match self.resources(None, Some(i64::from(s.ranks.max(1)))) {
            Ok(r) => r,
            Err(_) => self.resources(None, None)?,
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
        })
    }

    /// Picks up the gateway's work a restart interrupted: environments
    /// caught between states and jobs whose runner was lost.
    pub async fn recover_gateway(self: &Arc<Self>) -> Result<(), CoreError> {
        self.recover_environments().await?;
        self.recover_batch_jobs().await
    }

    /// Locks one gateway resource against concurrent changes.
    async fn lock_resource<T: Resource>(
        &self,
        account: &AccountId,
        id: &str,
    ) -> OwnedMutexGuard<()> {
        self.gateway
            .locks
            .lock(&format!("{}/{}/{}", T::KIND, account, id))
            .await
    }

    async fn load<T: Resource>(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<Option<T>, CoreError> {
        match self.store.get_resource(T::KIND, account, id).await? {
            Some(doc) => Ok(Some(parse_doc(&doc)?)),
            None => Ok(None),
        }
    }

    async fn load_all<T: Resource>(
        &self,
        account: Option<&AccountId>,
    ) -> Result<Vec<T>, CoreError> {
        self.store
            .list_resources(T::KIND, account)
            .await?
            .iter()
            .map(|d| parse_doc(d))
            .collect()
    }

    async fn insert_doc<T: Resource>(&self, r: &T) -> Result<(), CoreError> {
        match self.store.insert_resource(&to_doc(r)?).await {
            Ok(()) => Ok(()),
            Err(crate::StoreError::Duplicate) => Err(CoreError::Conflict(format!(
                "{} {:?} already exists",
                T::KIND.replace('_', " "),
                r.id()
            ))),
            Err(e) => Err(e.into()),
        }
    }

    async fn save_doc<T: Resource>(&self, r: &T) -> Result<(), CoreError> {
        if self.store.update_resource(&to_doc(r)?).await? {
            Ok(())
        } else {
            Err(CoreError::not_found(kind_name(T::KIND), r.id()))
        }
    }

    async fn delete_doc<T: Resource>(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<(), CoreError> {
        self.store.delete_resource(T::KIND, account, id).await?;
        Ok(())
    }
}

fn kind_name(kind: &'static str) -> &'static str {
    match kind {
        "node_pool" => "node pool",
        "batch_job" => "batch job",
        k => k,
    }
}

fn to_doc<T: Resource>(r: &T) -> Result<ResourceDoc, CoreError> {
    let doc = serde_json::to_string(r)
        .map_err(|e| crate::StoreError::Corrupt(format!("{} document: {e}", T::KIND)))?;
    Ok(ResourceDoc {
        kind: T::KIND,
        account_id: r.account_id().clone(),
        id: r.id().to_owned(),
        state: r.state_name(),
        doc,
        created_at: r.created_at(),
        updated_at: r.updated_at(),
    })
}

fn parse_doc<T: Resource>(doc: &str) -> Result<T, CoreError> {
    serde_json::from_str(doc)
        .map_err(|e| crate::StoreError::Corrupt(format!("{} document: {e}", T::KIND)).into())
}
