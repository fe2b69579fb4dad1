//! The gateway's wire forms: each resource rendered as the JSON its
//! clients read, and the inputs they send. Inputs accept the resource's
//! output-only fields (clients send back what they read) and ignore them;
//! any other unknown field is INVALID_ARGUMENT.

use std::collections::BTreeMap;

use paddock_core::clock::Timestamp;
use paddock_core::ids::AccountId;
use paddock_core::model::gateway::{
    BatchJob, BatchJobState, Cluster, ClusterBackend, Connection, EksCluster, EksNodePool,
    Environment, Executor, FakeCluster, FakeNodePool, NodePool, NodePoolBackend, NodePoolStats,
    Status,
};
use paddock_core::model::{Snapshot, SnapshotStatus};
use serde::Deserialize;
use serde_json::{json, Value};

use super::list::Listing;

fn time(t: Timestamp) -> String {
    t.to_rfc3339()
}

pub fn status(s: &Status) -> Value {
    json!({"code": s.code, "message": s.message})
}

// ---- clusters ---------------------------------------------------------------

pub const CLUSTERS: Listing = Listing {
    plural: "clusters",
    fields: &[
        "name",
        "displayName",
        "createTime",
        "updateTime",
        "eksCluster",
        "fakeCluster",
        "state",
        "status",
    ],
    default_order: "name",
};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EksClusterBody {
    #[serde(default)]
    pub aws_account_id: String,
    #[serde(default)]
    pub fireworks_manager_role: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub cluster_name: String,
    #[serde(default)]
    pub storage_bucket_name: String,
    #[serde(default)]
    pub metric_writer_role: String,
    #[serde(default)]
    pub load_balancer_controller_role: String,
    #[serde(default)]
    pub workload_identity_pool_provider_id: String,
    #[serde(default)]
    pub inference_role: String,
}

impl From<EksClusterBody> for EksCluster {
    fn from(b: EksClusterBody) -> Self {
        Self {
            aws_account_id: b.aws_account_id,
            fireworks_manager_role: b.fireworks_manager_role,
            region: b.region,
            cluster_name: b.cluster_name,
            storage_bucket_name: b.storage_bucket_name,
            metric_writer_role: b.metric_writer_role,
            load_balancer_controller_role: b.load_balancer_controller_role,
            workload_identity_pool_provider_id: b.workload_identity_pool_provider_id,
            inference_role: b.inference_role,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FakeClusterBody {
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub cluster_name: String,
}

/// A cluster as sent: settable fields, output-only ones ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterBody {
    pub display_name: Option<String>,
    pub eks_cluster: Option<EksClusterBody>,
    pub fake_cluster: Option<FakeClusterBody>,
    #[serde(default, rename = "name")]
    _name: Option<Value>,
    #[serde(default, rename = "createTime")]
    _create_time: Option<Value>,
    #[serde(default, rename = "updateTime")]
    _update_time: Option<Value>,
    #[serde(default, rename = "state")]
    _state: Option<Value>,
    #[serde(default, rename = "status")]
    _status: Option<Value>,
}

pub fn cluster(c: &Cluster) -> Value {
    let mut v = json!({
        "name": format!("accounts/{}/clusters/{}", c.account_id, c.id),
        "displayName": c.display_name,
        "createTime": time(c.create_time),
        "updateTime": time(c.update_time),
        "state": c.state.as_str(),
        "status": status(&c.status),
    });
    match &c.backend {
        ClusterBackend::Host => {
            v["fakeCluster"] = json!({"projectId": "", "location": "local", "clusterName": "host"});
        }
        ClusterBackend::Fake(f) => {
            v["fakeCluster"] = json!({"projectId": f.project_id, "location": f.location, "clusterName": f.cluster_name});
        }
        ClusterBackend::Eks(e) => {
            v["eksCluster"] = json!({
                "awsAccountId": e.aws_account_id,
                "fireworksManagerRole": e.fireworks_manager_role,
                "region": e.region,
                "clusterName": e.cluster_name,
                "storageBucketName": e.storage_bucket_name,
                "metricWriterRole": e.metric_writer_role,
                "loadBalancerControllerRole": e.load_balancer_controller_role,
                "workloadIdentityPoolProviderId": e.workload_identity_pool_provider_id,
                "inferenceRole": e.inference_role,
            });
        }
    }
    v
}

impl From<FakeClusterBody> for FakeCluster {
    fn from(b: FakeClusterBody) -> Self {
        Self {
            project_id: b.project_id,
            location: b.location,
            cluster_name: b.cluster_name,
        }
    }
}

// ---- node pools -------------------------------------------------------------

pub const NODE_POOLS: Listing = Listing {
    plural: "nodePools",
    fields: &[
        "name",
        "displayName",
        "clusterId",
        "createTime",
        "updateTime",
        "minNodeCount",
        "maxNodeCount",
        "overprovisionNodeCount",
        "eksNodePool",
        "fakeNodePool",
        "annotations",
        "state",
        "status",
        "nodePoolStats",
    ],
    default_order: "name",
};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EksNodePoolBody {
    #[serde(default)]
    pub node_role: String,
    #[serde(default)]
    pub instance_type: String,
    #[serde(default)]
    pub spot: bool,
    #[serde(default)]
    pub node_group_name: String,
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub placement_group: String,
    #[serde(default)]
    pub launch_template: String,
}

impl From<EksNodePoolBody> for EksNodePool {
    fn from(b: EksNodePoolBody) -> Self {
        Self {
            node_role: b.node_role,
            instance_type: b.instance_type,
            spot: b.spot,
            node_group_name: b.node_group_name,
            subnet_ids: b.subnet_ids,
            zone: b.zone,
            placement_group: b.placement_group,
            launch_template: b.launch_template,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FakeNodePoolBody {
    #[serde(default)]
    pub machine_type: String,
    #[serde(default)]
    pub num_nodes: i32,
    #[serde(default)]
    pub service_account: String,
}

impl From<FakeNodePoolBody> for FakeNodePool {
    fn from(b: FakeNodePoolBody) -> Self {
        Self {
            machine_type: b.machine_type,
            num_nodes: b.num_nodes,
            service_account: b.service_account,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodePoolBody {
    pub display_name: Option<String>,
    /// paddock's: the cluster the pool belongs to (`host` by default).
    pub cluster_id: Option<String>,
    pub min_node_count: Option<i32>,
    pub max_node_count: Option<i32>,
    pub overprovision_node_count: Option<i32>,
    pub eks_node_pool: Option<EksNodePoolBody>,
    pub fake_node_pool: Option<FakeNodePoolBody>,
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "name")]
    _name: Option<Value>,
    #[serde(default, rename = "createTime")]
    _create_time: Option<Value>,
    #[serde(default, rename = "updateTime")]
    _update_time: Option<Value>,
    #[serde(default, rename = "state")]
    _state: Option<Value>,
    #[serde(default, rename = "status")]
    _status: Option<Value>,
    #[serde(default, rename = "nodePoolStats")]
    _stats: Option<Value>,
}

pub fn node_pool_stats(s: &NodePoolStats) -> Value {
    json!({
        "nodeCount": s.node_count,
        "ranksPerNode": s.ranks_per_node,
        "environmentCount": s.environment_count,
        "environmentRanks": s.environment_ranks,
        "batchJobCount": s.batch_job_count,
        "batchJobRanks": s.batch_job_ranks,
    })
}

pub fn node_pool(p: &NodePool, stats: &NodePoolStats) -> Value {
    let mut v = json!({
        "name": format!("accounts/{}/nodePools/{}", p.account_id, p.id),
        "displayName": p.display_name,
        "clusterId": p.cluster_id,
        "createTime": time(p.create_time),
        "updateTime": time(p.update_time),
        "minNodeCount": p.min_node_count,
        "maxNodeCount": p.max_node_count,
        "overprovisionNodeCount": p.overprovision_node_count,
        "annotations": p.annotations,
        "state": p.state.as_str(),
        "status": status(&p.status),
        "nodePoolStats": node_pool_stats(stats),
    });
    match &p.backend {
        NodePoolBackend::Fake(f) => {
            v["fakeNodePool"] = json!({"machineType": f.machine_type, "numNodes": f.num_nodes, "serviceAccount": f.service_account});
        }
        NodePoolBackend::Eks(e) => {
            v["eksNodePool"] = json!({
                "nodeRole": e.node_role, "instanceType": e.instance_type, "spot": e.spot,
                "nodeGroupName": e.node_group_name, "subnetIds": e.subnet_ids, "zone": e.zone,
                "placementGroup": e.placement_group, "launchTemplate": e.launch_template,
            });
        }
    }
    v
}

// ---- environments -----------------------------------------------------------

pub const ENVIRONMENTS: Listing = Listing {
    plural: "environments",
    fields: &[
        "name",
        "displayName",
        "createTime",
        "createdBy",
        "state",
        "status",
        "connection",
        "baseImageRef",
        "imageRef",
        "snapshotImageRef",
        "shared",
        "annotations",
        "updateTime",
        "vscodeVersion",
        "vmId",
    ],
    default_order: "name",
};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentBody {
    pub display_name: Option<String>,
    pub base_image_ref: Option<String>,
    pub shared: Option<bool>,
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "name")]
    _name: Option<Value>,
    #[serde(default, rename = "createTime")]
    _create_time: Option<Value>,
    #[serde(default, rename = "createdBy")]
    _created_by: Option<Value>,
    #[serde(default, rename = "state")]
    _state: Option<Value>,
    #[serde(default, rename = "status")]
    _status: Option<Value>,
    #[serde(default, rename = "connection")]
    _connection: Option<Value>,
    #[serde(default, rename = "imageRef")]
    _image_ref: Option<Value>,
    #[serde(default, rename = "snapshotImageRef")]
    _snapshot_image_ref: Option<Value>,
    #[serde(default, rename = "updateTime")]
    _update_time: Option<Value>,
    #[serde(default, rename = "vscodeVersion")]
    _vscode_version: Option<Value>,
    #[serde(default, rename = "vmId")]
    _vm_id: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionBody {
    pub node_pool_id: Option<String>,
    pub num_ranks: Option<i32>,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub use_local_storage: bool,
    /// Read-only: accepted and ignored.
    #[serde(default, rename = "zone")]
    _zone: Option<Value>,
}

fn connection(c: &Connection) -> Value {
    json!({
        "nodePoolId": c.node_pool_id,
        "numRanks": c.num_ranks,
        "role": c.role,
        "zone": c.zone,
        "useLocalStorage": c.use_local_storage,
    })
}

pub fn environment(e: &Environment) -> Value {
    let mut v = json!({
        "name": format!("accounts/{}/environments/{}", e.account_id, e.id),
        "displayName": e.display_name,
        "createTime": time(e.create_time),
        "createdBy": e.created_by,
        "state": e.state.as_str(),
        "status": status(&e.status),
        "baseImageRef": e.base_image_ref,
        "imageRef": e.image_ref,
        "snapshotImageRef": e.snapshot_image_ref,
        "shared": e.shared,
        "annotations": e.annotations,
        "updateTime": time(e.update_time),
        "vscodeVersion": e.vscode_version,
    });
    if let Some(c) = &e.connection {
        v["connection"] = connection(c);
    }
    if let Some(vm) = &e.vm_id {
        v["vmId"] = json!(vm.as_str());
    }
    v
}

// ---- snapshots --------------------------------------------------------------

pub const SNAPSHOTS: Listing = Listing {
    plural: "snapshots",
    fields: &[
        "name",
        "createTime",
        "state",
        "status",
        "imageRef",
        "updateTime",
        "environmentId",
        "sizeBytes",
    ],
    default_order: "createTime",
};

pub fn snapshot(account: &AccountId, environment_id: &str, s: &Snapshot) -> Value {
    let (state, st) = match s.status {
        SnapshotStatus::Creating => ("CREATING", Status::ok()),
        SnapshotStatus::Ready => ("READY", Status::ok()),
        SnapshotStatus::Failed => (
            "FAILED",
            Status::error(
                paddock_core::model::gateway::StatusCode::Internal,
                s.error.clone().unwrap_or_default(),
            ),
        ),
    };
    json!({
        "name": format!("accounts/{account}/snapshots/{}", s.id),
        "createTime": time(s.created_at),
        "updateTime": time(s.created_at),
        "state": state,
        "status": status(&st),
        "imageRef": paddock_gateway::snapshot_image_ref(s),
        "environmentId": environment_id,
        "sizeBytes": s.size,
        "layerCount": s.image.as_ref().map_or(0, |i| i.layers.len()),
    })
}

// ---- batch jobs -------------------------------------------------------------

pub const BATCH_JOBS: Listing = Listing {
    plural: "batchJobs",
    fields: &[
        "name",
        "displayName",
        "createTime",
        "startTime",
        "endTime",
        "updateTime",
        "createdBy",
        "nodePoolId",
        "environmentId",
        "snapshotId",
        "imageRef",
        "numRanks",
        "envVars",
        "role",
        "pythonExecutor",
        "notebookExecutor",
        "shellExecutor",
        "annotations",
        "state",
        "status",
        "shared",
    ],
    default_order: "createTime",
};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShellExecutorBody {
    #[serde(default)]
    pub command: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PythonExecutorBody {
    #[serde(default)]
    pub target_type: String,
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotebookExecutorBody {
    #[serde(default)]
    pub notebook_filename: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchJobBody {
    pub display_name: Option<String>,
    pub node_pool_id: Option<String>,
    pub environment_id: Option<String>,
    pub snapshot_id: Option<String>,
    pub image_ref: Option<String>,
    pub num_ranks: Option<i32>,
    pub env_vars: Option<BTreeMap<String, String>>,
    pub role: Option<String>,
    pub python_executor: Option<PythonExecutorBody>,
    pub notebook_executor: Option<NotebookExecutorBody>,
    pub shell_executor: Option<ShellExecutorBody>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub shared: Option<bool>,
    #[serde(default, rename = "name")]
    _name: Option<Value>,
    #[serde(default, rename = "createTime")]
    _create_time: Option<Value>,
    #[serde(default, rename = "startTime")]
    _start_time: Option<Value>,
    #[serde(default, rename = "endTime")]
    _end_time: Option<Value>,
    #[serde(default, rename = "updateTime")]
    _update_time: Option<Value>,
    #[serde(default, rename = "createdBy")]
    _created_by: Option<Value>,
    #[serde(default, rename = "state")]
    _state: Option<Value>,
    #[serde(default, rename = "status")]
    _status: Option<Value>,
}

impl BatchJobBody {
    /// The one executor set; two or more is INVALID_ARGUMENT.
    pub fn executor(&mut self) -> Result<Option<Executor>, super::error::GatewayError> {
        let set = [
            self.shell_executor.is_some(),
            self.python_executor.is_some(),
            self.notebook_executor.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set > 1 {
            return Err(super::error::GatewayError::invalid(
                "shellExecutor",
                "set only one of shellExecutor, pythonExecutor and notebookExecutor",
            ));
        }
        Ok(if let Some(s) = self.shell_executor.take() {
            Some(Executor::Shell { command: s.command })
        } else if let Some(p) = self.python_executor.take() {
            Some(Executor::Python {
                target_type: p.target_type,
                target: p.target,
                args: p.args,
            })
        } else {
            self.notebook_executor.take().map(|n| Executor::Notebook {
                notebook_filename: n.notebook_filename,
            })
        })
    }
}

/// A job's status as every other resource's: a google.rpc.Status whose
/// code says how it ended and whose message is what happened.
fn batch_job_status(j: &BatchJob) -> Value {
    let code = match j.state {
        BatchJobState::Failed => "UNKNOWN",
        BatchJobState::Cancelled | BatchJobState::Cancelling => "CANCELLED",
        _ => "OK",
    };
    json!({"code": code, "message": j.status})
}

pub fn batch_job(j: &BatchJob) -> Value {
    let mut v = json!({
        "name": format!("accounts/{}/batchJobs/{}", j.account_id, j.id),
        "displayName": j.display_name,
        "createTime": time(j.create_time),
        "updateTime": time(j.update_time),
        "createdBy": j.created_by,
        "nodePoolId": j.node_pool_id,
        "environmentId": j.environment_id,
        // What it asked for, or once it started, what it ran.
        "snapshotId": if j.snapshot_id.is_empty() { &j.ran_snapshot_id } else { &j.snapshot_id },
        "imageRef": if j.image_ref.is_empty() { &j.ran_image_ref } else { &j.image_ref },
        "numRanks": j.num_ranks,
        "envVars": j.env_vars,
        "role": j.role,
        "annotations": j.annotations,
        "state": j.state.as_str(),
        "status": batch_job_status(j),
        "shared": j.shared,
    });
    if let Some(t) = j.start_time {
        v["startTime"] = json!(time(t));
    }
    if let Some(t) = j.end_time {
        v["endTime"] = json!(time(t));
    }
    match &j.executor {
        Executor::Shell { command } => v["shellExecutor"] = json!({"command": command}),
        Executor::Python {
            target_type,
            target,
            args,
        } => {
            let tt = if target_type.is_empty() {
                "TARGET_TYPE_UNSPECIFIED"
            } else {
                target_type
            };
            v["pythonExecutor"] = json!({"targetType": tt, "target": target, "args": args});
        }
        Executor::Notebook { notebook_filename } => {
            v["notebookExecutor"] = json!({"notebookFilename": notebook_filename});
        }
    }
    v
}

/// An optional non-negative int32 as u32.
pub fn ranks(field: &str, n: Option<i32>) -> Result<Option<u32>, super::error::GatewayError> {
    n.map(|n| {
        u32::try_from(n)
            .map_err(|_| super::error::GatewayError::invalid(field, "must not be negative"))
    })
    .transpose()
}
