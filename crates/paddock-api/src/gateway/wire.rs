//! The gateway's inputs: the bodies its clients send, each a type whose
//! `ToSchema` is its schema in `/openapi.json`. Bodies accept the
//! resource's output-only fields (clients send back what they read) and
//! ignore them; any other unknown field is INVALID_ARGUMENT. A backend's
//! settings and a job's executor read back as they were sent, so their
//! types serve both ways (`views.rs`). Also each kind's listing: its
//! fields, which a test holds equal to its view's.

use std::collections::BTreeMap;

use paddock_core::model::gateway::{EksCluster, EksNodePool, Executor, FakeCluster, FakeNodePool};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::list::Listing;

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

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = EksCluster)]
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

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = FakeCluster)]
pub struct FakeClusterBody {
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub cluster_name: String,
}

/// A cluster as sent: settable fields, output-only ones ignored.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterBody {
    pub display_name: Option<String>,
    pub eks_cluster: Option<EksClusterBody>,
    pub fake_cluster: Option<FakeClusterBody>,
    #[schema(ignore)]
    #[serde(default, rename = "name")]
    _name: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "createTime")]
    _create_time: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "updateTime")]
    _update_time: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "state")]
    _state: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "status")]
    _status: Option<Value>,
}

impl From<&EksCluster> for EksClusterBody {
    fn from(e: &EksCluster) -> Self {
        Self {
            aws_account_id: e.aws_account_id.clone(),
            fireworks_manager_role: e.fireworks_manager_role.clone(),
            region: e.region.clone(),
            cluster_name: e.cluster_name.clone(),
            storage_bucket_name: e.storage_bucket_name.clone(),
            metric_writer_role: e.metric_writer_role.clone(),
            load_balancer_controller_role: e.load_balancer_controller_role.clone(),
            workload_identity_pool_provider_id: e.workload_identity_pool_provider_id.clone(),
            inference_role: e.inference_role.clone(),
        }
    }
}

impl From<&FakeCluster> for FakeClusterBody {
    fn from(f: &FakeCluster) -> Self {
        Self {
            project_id: f.project_id.clone(),
            location: f.location.clone(),
            cluster_name: f.cluster_name.clone(),
        }
    }
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

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = EksNodePool)]
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

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = FakeNodePool)]
pub struct FakeNodePoolBody {
    #[serde(default)]
    pub machine_type: String,
    #[serde(default)]
    pub num_nodes: i32,
    #[serde(default)]
    pub service_account: String,
}

impl From<&EksNodePool> for EksNodePoolBody {
    fn from(e: &EksNodePool) -> Self {
        Self {
            node_role: e.node_role.clone(),
            instance_type: e.instance_type.clone(),
            spot: e.spot,
            node_group_name: e.node_group_name.clone(),
            subnet_ids: e.subnet_ids.clone(),
            zone: e.zone.clone(),
            placement_group: e.placement_group.clone(),
            launch_template: e.launch_template.clone(),
        }
    }
}

impl From<&FakeNodePool> for FakeNodePoolBody {
    fn from(f: &FakeNodePool) -> Self {
        Self {
            machine_type: f.machine_type.clone(),
            num_nodes: f.num_nodes,
            service_account: f.service_account.clone(),
        }
    }
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

#[derive(Debug, Default, Deserialize, ToSchema)]
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
    #[schema(ignore)]
    #[serde(default, rename = "name")]
    _name: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "createTime")]
    _create_time: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "updateTime")]
    _update_time: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "state")]
    _state: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "status")]
    _status: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "nodePoolStats")]
    _stats: Option<Value>,
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

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentBody {
    pub display_name: Option<String>,
    pub base_image_ref: Option<String>,
    pub shared: Option<bool>,
    pub annotations: Option<BTreeMap<String, String>>,
    #[schema(ignore)]
    #[serde(default, rename = "name")]
    _name: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "createTime")]
    _create_time: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "createdBy")]
    _created_by: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "state")]
    _state: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "status")]
    _status: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "connection")]
    _connection: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "imageRef")]
    _image_ref: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "snapshotImageRef")]
    _snapshot_image_ref: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "updateTime")]
    _update_time: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "vscodeVersion")]
    _vscode_version: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "vmId")]
    _vm_id: Option<Value>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionBody {
    pub node_pool_id: Option<String>,
    pub num_ranks: Option<i32>,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub use_local_storage: bool,
    /// Read-only: accepted and ignored.
    #[schema(ignore)]
    #[serde(default, rename = "zone")]
    _zone: Option<Value>,
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
        "layerCount",
    ],
    default_order: "createTime",
};

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

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ShellExecutor)]
pub struct ShellExecutorBody {
    #[serde(default)]
    pub command: String,
}

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = PythonExecutor)]
pub struct PythonExecutorBody {
    #[serde(default)]
    pub target_type: String,
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = NotebookExecutor)]
pub struct NotebookExecutorBody {
    #[serde(default)]
    pub notebook_filename: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
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
    #[schema(ignore)]
    #[serde(default, rename = "name")]
    _name: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "createTime")]
    _create_time: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "startTime")]
    _start_time: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "endTime")]
    _end_time: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "updateTime")]
    _update_time: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "createdBy")]
    _created_by: Option<Value>,
    #[schema(ignore)]
    #[serde(default, rename = "state")]
    _state: Option<Value>,
    #[schema(ignore)]
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

/// An optional non-negative int32 as u32.
pub fn ranks(field: &str, n: Option<i32>) -> Result<Option<u32>, super::error::GatewayError> {
    n.map(|n| {
        u32::try_from(n)
            .map_err(|_| super::error::GatewayError::invalid(field, "must not be negative"))
    })
    .transpose()
}
