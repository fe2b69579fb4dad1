//! The gateway's resources as its clients read them. Each is a type whose
//! serde form is the response and whose `ToSchema` is its schema in
//! `/openapi.json`, so the two cannot differ. Every field may be absent
//! from a response (a read mask keeps only the fields it names), so the
//! document marks none required (`openapi.rs`).

use std::collections::BTreeMap;

use paddock_core::clock::Timestamp;
use paddock_core::ids::AccountId;
use paddock_core::model::gateway::{
    BatchJob, BatchJobState, Cluster, ClusterBackend, ClusterState, Connection, Environment,
    EnvironmentState, Executor, NodePool, NodePoolBackend, NodePoolState, NodePoolStats, Status,
    StatusCode,
};
use paddock_core::model::{Snapshot, SnapshotStatus};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::wire::{
    EksClusterBody, EksNodePoolBody, FakeClusterBody, FakeNodePoolBody, NotebookExecutorBody,
    PythonExecutorBody, ShellExecutorBody,
};

/// A response as the JSON value the listing code filters, sorts and masks.
pub fn to_json(view: impl Serialize) -> Value {
    // A struct of strings, numbers and maps always serializes.
    serde_json::to_value(view).unwrap_or(Value::Null)
}

fn time(t: Timestamp) -> String {
    t.to_rfc3339()
}

/// A resource's google.rpc.Status: how its last operation went.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GatewayStatus)]
pub struct StatusView {
    pub code: StatusCode,
    pub message: String,
}

impl From<&Status> for StatusView {
    fn from(s: &Status) -> Self {
        Self {
            code: s.code,
            message: s.message.clone(),
        }
    }
}

/// An error: a google.rpc.Status with its numeric code and details (a
/// google.rpc.BadRequest naming the field for INVALID_ARGUMENT).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GatewayStatusError)]
pub struct StatusError {
    pub code: i32,
    pub message: String,
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<Value>,
}

/// The answer of a delete, a cancel, a connect: an empty object.
#[derive(Debug, Serialize, ToSchema)]
pub struct Empty {}

// ---- clusters ---------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Cluster)]
pub struct ClusterView {
    /// `accounts/{account_id}/clusters/{cluster_id}`.
    #[schema(read_only)]
    pub name: String,
    pub display_name: String,
    #[schema(read_only, format = DateTime)]
    pub create_time: String,
    #[schema(read_only, format = DateTime)]
    pub update_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eks_cluster: Option<EksClusterBody>,
    /// Set for this host's own cluster (`host`) too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fake_cluster: Option<FakeClusterBody>,
    #[schema(read_only)]
    pub state: ClusterState,
    #[schema(read_only)]
    pub status: StatusView,
}

impl From<&Cluster> for ClusterView {
    fn from(c: &Cluster) -> Self {
        let (eks_cluster, fake_cluster) = match &c.backend {
            ClusterBackend::Host => (
                None,
                Some(FakeClusterBody {
                    project_id: String::new(),
                    location: "local".into(),
                    cluster_name: "host".into(),
                }),
            ),
            ClusterBackend::Fake(f) => (None, Some(f.into())),
            ClusterBackend::Eks(e) => (Some(e.into()), None),
        };
        Self {
            name: format!("accounts/{}/clusters/{}", c.account_id, c.id),
            display_name: c.display_name.clone(),
            create_time: time(c.create_time),
            update_time: time(c.update_time),
            eks_cluster,
            fake_cluster,
            state: c.state,
            status: (&c.status).into(),
        }
    }
}

/// `:getConnectionInfo`: how to reach the cluster's API.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionInfo {
    pub endpoint: String,
    pub ca_data: String,
    pub provider: String,
    pub message: String,
}

// ---- node pools -------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = NodePoolStats)]
pub struct NodePoolStatsView {
    pub node_count: i32,
    pub ranks_per_node: i32,
    pub environment_count: i32,
    pub environment_ranks: i32,
    /// Jobs by state.
    pub batch_job_count: BTreeMap<String, i32>,
    /// Ranks held by jobs, by state.
    pub batch_job_ranks: BTreeMap<String, i32>,
}

impl From<&NodePoolStats> for NodePoolStatsView {
    fn from(s: &NodePoolStats) -> Self {
        Self {
            node_count: s.node_count,
            ranks_per_node: s.ranks_per_node,
            environment_count: s.environment_count,
            environment_ranks: s.environment_ranks,
            batch_job_count: s.batch_job_count.clone(),
            batch_job_ranks: s.batch_job_ranks.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = NodePool)]
pub struct NodePoolView {
    /// `accounts/{account_id}/nodePools/{node_pool_id}`.
    #[schema(read_only)]
    pub name: String,
    pub display_name: String,
    /// paddock's: the cluster the pool belongs to (default `host`); set at
    /// creation.
    pub cluster_id: String,
    #[schema(read_only, format = DateTime)]
    pub create_time: String,
    #[schema(read_only, format = DateTime)]
    pub update_time: String,
    pub min_node_count: i32,
    pub max_node_count: i32,
    pub overprovision_node_count: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eks_node_pool: Option<EksNodePoolBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fake_node_pool: Option<FakeNodePoolBody>,
    pub annotations: BTreeMap<String, String>,
    #[schema(read_only)]
    pub state: NodePoolState,
    #[schema(read_only)]
    pub status: StatusView,
    #[schema(read_only)]
    pub node_pool_stats: NodePoolStatsView,
}

impl NodePoolView {
    pub fn new(p: &NodePool, stats: &NodePoolStats) -> Self {
        let (eks_node_pool, fake_node_pool) = match &p.backend {
            NodePoolBackend::Fake(f) => (None, Some(f.into())),
            NodePoolBackend::Eks(e) => (Some(e.into()), None),
        };
        Self {
            name: format!("accounts/{}/nodePools/{}", p.account_id, p.id),
            display_name: p.display_name.clone(),
            cluster_id: p.cluster_id.clone(),
            create_time: time(p.create_time),
            update_time: time(p.update_time),
            min_node_count: p.min_node_count,
            max_node_count: p.max_node_count,
            overprovision_node_count: p.overprovision_node_count,
            eks_node_pool,
            fake_node_pool,
            annotations: p.annotations.clone(),
            state: p.state,
            status: (&p.status).into(),
            node_pool_stats: stats.into(),
        }
    }
}

// ---- environments -----------------------------------------------------------

/// Where a connected environment runs.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = EnvironmentConnection)]
pub struct ConnectionView {
    pub node_pool_id: String,
    pub num_ranks: u32,
    pub role: String,
    #[schema(read_only)]
    pub zone: String,
    pub use_local_storage: bool,
}

impl From<&Connection> for ConnectionView {
    fn from(c: &Connection) -> Self {
        Self {
            node_pool_id: c.node_pool_id.clone(),
            num_ranks: c.num_ranks,
            role: c.role.clone(),
            zone: c.zone.clone(),
            use_local_storage: c.use_local_storage,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Environment)]
pub struct EnvironmentView {
    /// `accounts/{account_id}/environments/{environment_id}`.
    #[schema(read_only)]
    pub name: String,
    pub display_name: String,
    #[schema(read_only, format = DateTime)]
    pub create_time: String,
    #[schema(read_only)]
    pub created_by: String,
    #[schema(read_only)]
    pub state: EnvironmentState,
    #[schema(read_only)]
    pub status: StatusView,
    pub base_image_ref: String,
    /// What the environment boots: its last snapshot, or its base image.
    #[schema(read_only)]
    pub image_ref: String,
    #[schema(read_only)]
    pub snapshot_image_ref: String,
    pub shared: bool,
    pub annotations: BTreeMap<String, String>,
    #[schema(read_only, format = DateTime)]
    pub update_time: String,
    #[schema(read_only)]
    pub vscode_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(read_only)]
    pub connection: Option<ConnectionView>,
    /// The connected sandbox, a VM of the VM API.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(read_only)]
    pub vm_id: Option<String>,
}

impl From<&Environment> for EnvironmentView {
    fn from(e: &Environment) -> Self {
        Self {
            name: format!("accounts/{}/environments/{}", e.account_id, e.id),
            display_name: e.display_name.clone(),
            create_time: time(e.create_time),
            created_by: e.created_by.clone(),
            state: e.state,
            status: (&e.status).into(),
            base_image_ref: e.base_image_ref.clone(),
            image_ref: e.image_ref.clone(),
            snapshot_image_ref: e.snapshot_image_ref.clone(),
            shared: e.shared,
            annotations: e.annotations.clone(),
            update_time: time(e.update_time),
            vscode_version: e.vscode_version.clone(),
            connection: e.connection.as_ref().map(Into::into),
            vm_id: e.vm_id.as_ref().map(|v| v.as_str().to_owned()),
        }
    }
}

// ---- snapshots --------------------------------------------------------------

/// A snapshot's lifecycle.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SnapshotState {
    Creating,
    Ready,
    Failed,
}

/// An environment's snapshot, taken by `:disconnect`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Snapshot)]
pub struct SnapshotView {
    /// `accounts/{account_id}/snapshots/{snapshot_id}`.
    pub name: String,
    #[schema(format = DateTime)]
    pub create_time: String,
    #[schema(format = DateTime)]
    pub update_time: String,
    pub state: SnapshotState,
    pub status: StatusView,
    pub image_ref: String,
    pub environment_id: String,
    pub size_bytes: u64,
    pub layer_count: usize,
}

impl SnapshotView {
    pub fn new(account: &AccountId, environment_id: &str, s: &Snapshot) -> Self {
        let (state, status) = match s.status {
            SnapshotStatus::Creating => (SnapshotState::Creating, Status::ok()),
            SnapshotStatus::Ready => (SnapshotState::Ready, Status::ok()),
            SnapshotStatus::Failed => (
                SnapshotState::Failed,
                Status::error(StatusCode::Internal, s.error.clone().unwrap_or_default()),
            ),
        };
        Self {
            name: format!("accounts/{account}/snapshots/{}", s.id),
            create_time: time(s.created_at),
            update_time: time(s.created_at),
            state,
            status: (&status).into(),
            image_ref: paddock_gateway::snapshot_image_ref(s),
            environment_id: environment_id.to_owned(),
            size_bytes: s.size,
            layer_count: s.image.as_ref().map_or(0, |i| i.layers.len()),
        }
    }
}

// ---- batch jobs -------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = BatchJob)]
pub struct BatchJobView {
    /// `accounts/{account_id}/batchJobs/{batch_job_id}`.
    #[schema(read_only)]
    pub name: String,
    pub display_name: String,
    #[schema(read_only, format = DateTime)]
    pub create_time: String,
    #[schema(read_only, format = DateTime)]
    pub update_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(read_only, format = DateTime)]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(read_only, format = DateTime)]
    pub end_time: Option<String>,
    #[schema(read_only)]
    pub created_by: String,
    pub node_pool_id: String,
    pub environment_id: String,
    /// What it asked for, or once it started, what it ran.
    pub snapshot_id: String,
    /// What it asked for, or once it started, what it ran.
    pub image_ref: String,
    pub num_ranks: u32,
    pub env_vars: BTreeMap<String, String>,
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shell_executor: Option<ShellExecutorBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python_executor: Option<PythonExecutorBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notebook_executor: Option<NotebookExecutorBody>,
    pub annotations: BTreeMap<String, String>,
    #[schema(read_only)]
    pub state: BatchJobState,
    /// How it ended (OK, CANCELLED or UNKNOWN for a failure) and what
    /// happened.
    #[schema(read_only)]
    pub status: StatusView,
    pub shared: bool,
}

impl From<&BatchJob> for BatchJobView {
    fn from(j: &BatchJob) -> Self {
        let code = match j.state {
            BatchJobState::Failed => StatusCode::Unknown,
            BatchJobState::Cancelled | BatchJobState::Cancelling => StatusCode::Cancelled,
            _ => StatusCode::Ok,
        };
        let (mut shell, mut python, mut notebook) = (None, None, None);
        match &j.executor {
            Executor::Shell { command } => {
                shell = Some(ShellExecutorBody {
                    command: command.clone(),
                });
            }
            Executor::Python {
                target_type,
                target,
                args,
            } => {
                let target_type = if target_type.is_empty() {
                    "TARGET_TYPE_UNSPECIFIED"
                } else {
                    target_type
                };
                python = Some(PythonExecutorBody {
                    target_type: target_type.to_owned(),
                    target: target.clone(),
                    args: args.clone(),
                });
            }
            Executor::Notebook { notebook_filename } => {
                notebook = Some(NotebookExecutorBody {
                    notebook_filename: notebook_filename.clone(),
                });
            }
        }
        let or_ran =
            |asked: &String, ran: &String| if asked.is_empty() { ran } else { asked }.clone();
        Self {
            name: format!("accounts/{}/batchJobs/{}", j.account_id, j.id),
            display_name: j.display_name.clone(),
            create_time: time(j.create_time),
            update_time: time(j.update_time),
            start_time: j.start_time.map(time),
            end_time: j.end_time.map(time),
            created_by: j.created_by.clone(),
            node_pool_id: j.node_pool_id.clone(),
            environment_id: j.environment_id.clone(),
            snapshot_id: or_ran(&j.snapshot_id, &j.ran_snapshot_id),
            image_ref: or_ran(&j.image_ref, &j.ran_image_ref),
            num_ranks: j.num_ranks,
            env_vars: j.env_vars.clone(),
            role: j.role.clone(),
            shell_executor: shell,
            python_executor: python,
            notebook_executor: notebook,
            annotations: j.annotations.clone(),
            state: j.state,
            status: StatusView {
                code,
                message: j.status.clone(),
            },
            shared: j.shared,
        }
    }
}

/// One chunk of a job's output.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogEntry {
    /// `stdout`, `stderr` or `system`.
    pub stream: String,
    pub text: String,
    #[schema(format = DateTime)]
    pub time: String,
}

/// `:getLogs`: the output after the page token, whole and by chunk.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchJobLogs {
    pub logs: String,
    pub entries: Vec<LogEntry>,
    /// Empty on the last page.
    pub next_page_token: String,
}

// ---- lists ------------------------------------------------------------------

/// One page of a list: its items, the token of the next page (empty on
/// the last), and how many items match the filter in all.
macro_rules! list_view {
    ($name:ident, $field:ident, $item:ty) => {
        #[derive(Debug, Serialize, ToSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            #[schema(value_type = Vec<$item>)]
            pub $field: Vec<Value>,
            pub next_page_token: String,
            pub total_size: usize,
        }

        impl From<super::list::Page> for $name {
            fn from(p: super::list::Page) -> Self {
                Self {
                    $field: p.items,
                    next_page_token: p.next_page_token,
                    total_size: p.total_size,
                }
            }
        }
    };
}

list_view!(ClusterList, clusters, ClusterView);
list_view!(NodePoolList, node_pools, NodePoolView);
list_view!(DevEnvironmentList, environments, EnvironmentView);
list_view!(SnapshotList, snapshots, SnapshotView);
list_view!(BatchJobList, batch_jobs, BatchJobView);
