//! The account gateway's resources: clusters, node pools, dev environments
//! and batch jobs. They are stored as documents (serde), so every field
//! here is part of the stored form; the wire form is the API's business.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::ids::{AccountId, SnapshotId, VmId, VolumeId};

/// google.rpc.Code, the gateway's status and error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StatusCode {
    #[default]
    Ok,
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    Unauthenticated,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
}

/// A resource's current error status (`code` OK when none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Status {
    pub code: StatusCode,
    pub message: String,
}

impl Status {
    pub fn ok() -> Self {
        Self::default()
    }

    pub fn error(code: StatusCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// What every gateway resource has: an id unique per account and kind.
pub trait Resource: Serialize + for<'de> Deserialize<'de> + Send + Sync {
    /// The kind's name in the store.
    const KIND: &'static str;
    fn id(&self) -> &str;
    fn account_id(&self) -> &AccountId;
    fn created_at(&self) -> Timestamp;
    fn updated_at(&self) -> Timestamp;
    /// The state's name, which the store indexes.
    fn state_name(&self) -> &'static str;
}

/// Implements [`Resource`] for a product's document type whose id and
/// account are its `id` and `account_id` fields; `created`, `updated` and
/// `state` read the rest from the document (`|t| t.created_at`).
#[macro_export]
macro_rules! document {
    (
        $ty:ty, $kind:expr,
        created: |$c:ident| $created:expr,
        updated: |$u:ident| $updated:expr,
        state: |$s:ident| $state:expr $(,)?
    ) => {
        impl $crate::model::gateway::Resource for $ty {
            const KIND: &'static str = $kind;
            fn id(&self) -> &str {
                &self.id
            }
            fn account_id(&self) -> &$crate::ids::AccountId {
                &self.account_id
            }
            fn created_at(&self) -> $crate::clock::Timestamp {
                let $c = self;
                $created
            }
            fn updated_at(&self) -> $crate::clock::Timestamp {
                let $u = self;
                $updated
            }
            fn state_name(&self) -> &'static str {
                let $s = self;
                $state
            }
        }
    };
}

macro_rules! resource {
    ($ty:ty, $kind:literal) => {
        impl Resource for $ty {
            const KIND: &'static str = $kind;
            fn id(&self) -> &str {
                &self.id
            }
            fn account_id(&self) -> &AccountId {
                &self.account_id
            }
            fn created_at(&self) -> Timestamp {
                self.create_time
            }
            fn updated_at(&self) -> Timestamp {
                self.update_time
            }
            fn state_name(&self) -> &'static str {
                self.state.as_str()
            }
        }
    };
}

macro_rules! state_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $s),+ }
            }
        }
    };
}

state_enum!(
    /// A cluster's lifecycle.
    ClusterState { Creating => "CREATING", Ready => "READY", Deleting => "DELETING", Failed => "FAILED" }
);

/// An EKS cluster's settings: validated and kept, never provisioned here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct EksCluster {
    pub aws_account_id: String,
    pub fireworks_manager_role: String,
    pub region: String,
    pub cluster_name: String,
    pub storage_bucket_name: String,
    pub metric_writer_role: String,
    pub load_balancer_controller_role: String,
    pub workload_identity_pool_provider_id: String,
    pub inference_role: String,
}

/// A test cluster backed by this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct FakeCluster {
    pub project_id: String,
    pub location: String,
    pub cluster_name: String,
}

/// Where a cluster's nodes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterBackend {
    /// The host paddock runs on: the built-in cluster.
    Host,
    Fake(FakeCluster),
    Eks(EksCluster),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cluster {
    pub id: String,
    pub account_id: AccountId,
    pub display_name: String,
    pub backend: ClusterBackend,
    pub state: ClusterState,
    pub status: Status,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
}
resource!(Cluster, "cluster");

state_enum!(
    /// A node pool's lifecycle (the notes leave it open; modelled on
    /// clusters').
    NodePoolState { Creating => "CREATING", Ready => "READY", Deleting => "DELETING", Failed => "FAILED" }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct EksNodePool {
    pub node_role: String,
    pub instance_type: String,
    pub spot: bool,
    pub node_group_name: String,
    pub subnet_ids: Vec<String>,
    pub zone: String,
    pub placement_group: String,
    pub launch_template: String,
}

/// A pool on this host: `machineType` says whether its ranks are GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct FakeNodePool {
    pub machine_type: String,
    pub num_nodes: i32,
    pub service_account: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodePoolBackend {
    Fake(FakeNodePool),
    Eks(EksNodePool),
}

/// What a pool's ranks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RankKind {
    /// One slice of the host per rank.
    Cpu,
    /// One of the host's GPUs per rank.
    Gpu,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodePool {
    pub id: String,
    pub account_id: AccountId,
    /// The cluster the pool's nodes belong to (paddock's `clusterId`):
    /// `host` for pools on this machine.
    #[serde(default = "host_cluster_id")]
    pub cluster_id: String,
    pub display_name: String,
    pub min_node_count: i32,
    pub max_node_count: i32,
    pub overprovision_node_count: i32,
    pub backend: NodePoolBackend,
    pub annotations: BTreeMap<String, String>,
    pub state: NodePoolState,
    pub status: Status,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
}
resource!(NodePool, "node_pool");

/// Pools recorded before pools named their cluster ran on this host.
fn host_cluster_id() -> String {
    "host".to_owned()
}

impl NodePool {
    pub fn rank_kind(&self) -> RankKind {
        match &self.backend {
            NodePoolBackend::Fake(f) if f.machine_type.to_ascii_lowercase().contains("gpu") => {
                RankKind::Gpu
            }
            NodePoolBackend::Eks(e) if is_gpu_instance_type(&e.instance_type) => RankKind::Gpu,
            _ => RankKind::Cpu,
        }
    }
}

/// AWS's GPU instance families (p*, g*).
fn is_gpu_instance_type(t: &str) -> bool {
    let family = t.split('.').next().unwrap_or_default();
    matches!(family.chars().next(), Some('p' | 'g'))
        && family[1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
}

/// A pool's live numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePoolStats {
    pub node_count: i32,
    pub ranks_per_node: i32,
    pub environment_count: i32,
    pub environment_ranks: i32,
    pub batch_job_count: BTreeMap<String, i32>,
    pub batch_job_ranks: BTreeMap<String, i32>,
}

state_enum!(
    /// A dev environment's lifecycle.
    EnvironmentState {
        Creating => "CREATING",
        Disconnected => "DISCONNECTED",
        Connecting => "CONNECTING",
        Connected => "CONNECTED",
        Disconnecting => "DISCONNECTING",
        Reconnecting => "RECONNECTING",
        Deleting => "DELETING",
    }
);

impl EnvironmentState {
    /// Whether the environment holds ranks on a pool.
    pub fn holds_ranks(self) -> bool {
        matches!(
            self,
            Self::Connecting | Self::Connected | Self::Disconnecting | Self::Reconnecting
        )
    }

    /// Whether a connect or disconnect is under way.
    pub fn is_transition(self) -> bool {
        matches!(
            self,
            Self::Creating
                | Self::Connecting
                | Self::Disconnecting
                | Self::Reconnecting
                | Self::Deleting
        )
    }
}

/// Where an environment is (or asked to be) connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Connection {
    pub node_pool_id: String,
    pub num_ranks: u32,
    pub role: String,
    pub zone: String,
    pub use_local_storage: bool,
    /// The host GPUs (indices of `/dev/nvidiaN`) its ranks hold.
    #[serde(default)]
    pub gpus: Vec<u32>,
    /// The node those GPUs are on, when several nodes share the store.
    #[serde(default)]
    pub node: Option<crate::ids::NodeId>,
}

impl Connection {
    /// Whether `other` asks for the same placement (zone and GPU choice are
    /// the server's).
    pub fn same_request(&self, other: &Connection) -> bool {
        self.node_pool_id == other.node_pool_id
            && self.num_ranks == other.num_ranks
            && self.role == other.role
            && self.use_local_storage == other.use_local_storage
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Environment {
    pub id: String,
    pub account_id: AccountId,
    pub display_name: String,
    pub created_by: String,
    pub state: EnvironmentState,
    pub status: Status,
    pub connection: Option<Connection>,
    pub base_image_ref: String,
    /// `base_image_ref` pinned by digest at creation.
    pub image_ref: String,
    /// The latest snapshot, which the next connect starts from.
    pub snapshot_id: Option<SnapshotId>,
    pub snapshot_image_ref: String,
    pub shared: bool,
    pub annotations: BTreeMap<String, String>,
    pub vscode_version: String,
    /// The user's home, kept across connections.
    pub home_volume_id: Option<VolumeId>,
    /// Node-local scratch at `/tmp` while connected with `useLocalStorage`.
    pub scratch_volume_id: Option<VolumeId>,
    /// The sandbox while connected.
    pub vm_id: Option<VmId>,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
}
resource!(Environment, "environment");

impl Environment {
    /// Whether `user` may see and use it.
    pub fn visible_to(&self, user: &str) -> bool {
        self.shared || self.created_by == user
    }
}

state_enum!(
    /// A batch job's lifecycle.
    BatchJobState {
        Creating => "CREATING",
        Queued => "QUEUED",
        Pending => "PENDING",
        Running => "RUNNING",
        Completed => "COMPLETED",
        Failed => "FAILED",
        Cancelling => "CANCELLING",
        Cancelled => "CANCELLED",
        Deleting => "DELETING",
    }
);

impl BatchJobState {
    /// Whether the job holds ranks on its pool.
    pub fn holds_ranks(self) -> bool {
        matches!(self, Self::Pending | Self::Running | Self::Cancelling)
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// What a batch job runs: one of the three executors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Executor {
    Shell {
        command: String,
    },
    Python {
        target_type: String,
        target: String,
        args: Vec<String>,
    },
    Notebook {
        notebook_filename: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchJob {
    pub id: String,
    pub account_id: AccountId,
    pub display_name: String,
    pub created_by: String,
    pub node_pool_id: String,
    pub environment_id: String,
    pub snapshot_id: String,
    pub image_ref: String,
    pub num_ranks: u32,
    pub env_vars: BTreeMap<String, String>,
    pub role: String,
    pub executor: Executor,
    pub annotations: BTreeMap<String, String>,
    pub shared: bool,
    pub state: BatchJobState,
    pub status: String,
    /// The image the job's sandbox started from, once it started: its
    /// own `imageRef`, or its environment's pinned image.
    #[serde(default)]
    pub ran_image_ref: String,
    /// The environment snapshot it started from, once it started (its
    /// own `snapshotId`, or the environment's latest), if any.
    #[serde(default)]
    pub ran_snapshot_id: String,
    /// The GPUs its ranks hold while it runs.
    pub gpus: Vec<u32>,
    /// The node those GPUs are on, when several nodes share the store.
    #[serde(default)]
    pub node: Option<crate::ids::NodeId>,
    /// Its sandbox while it runs.
    pub vm_id: Option<VmId>,
    pub exit_code: Option<i32>,
    pub create_time: Timestamp,
    pub start_time: Option<Timestamp>,
    pub end_time: Option<Timestamp>,
    pub update_time: Timestamp,
}
resource!(BatchJob, "batch_job");

impl BatchJob {
    pub fn visible_to(&self, user: &str) -> bool {
        self.shared || self.created_by == user
    }
}

/// Where the gateway's environment snapshots are named: a core snapshot
/// whose name starts with this belongs to the environment.
pub fn environment_snapshot_prefix(environment_id: &str) -> String {
    format!("environments/{environment_id}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_pools_are_told_by_machine_or_instance_type() {
        let pool = |backend| NodePool {
            cluster_id: host_cluster_id(),
            id: "p".into(),
            account_id: AccountId::generate(),
            display_name: String::new(),
            min_node_count: 0,
            max_node_count: 1,
            overprovision_node_count: 0,
            backend,
            annotations: BTreeMap::new(),
            state: NodePoolState::Ready,
            status: Status::ok(),
            create_time: Timestamp::now(),
            update_time: Timestamp::now(),
        };
        let fake = |m: &str| {
            NodePoolBackend::Fake(FakeNodePool {
                machine_type: m.into(),
                ..Default::default()
            })
        };
        let eks = |t: &str| {
            NodePoolBackend::Eks(EksNodePool {
                instance_type: t.into(),
                ..Default::default()
            })
        };
        assert_eq!(pool(fake("a2-highgpu-1g")).rank_kind(), RankKind::Gpu);
        assert_eq!(pool(fake("n2-standard-8")).rank_kind(), RankKind::Cpu);
        assert_eq!(pool(eks("p4d.24xlarge")).rank_kind(), RankKind::Gpu);
        assert_eq!(pool(eks("g5.xlarge")).rank_kind(), RankKind::Gpu);
        assert_eq!(pool(eks("m5.large")).rank_kind(), RankKind::Cpu);
    }

    #[test]
    fn documents_round_trip() {
        let c = Connection {
            node_pool_id: "p".into(),
            num_ranks: 2,
            gpus: vec![0, 1],
            ..Default::default()
        };
        let s = serde_json::to_string(&c).expect("serializes");
        let back: Connection = serde_json::from_str(&s).expect("parses");
        assert_eq!(back, c);
        assert_eq!(
            serde_json::to_string(&StatusCode::FailedPrecondition).expect("serializes"),
            "\"FAILED_PRECONDITION\""
        );
    }
}
