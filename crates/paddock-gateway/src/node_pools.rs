//! Node pools. A `fakeNodePool` runs on this host: its ranks are slices of
//! the host (CPU pools) or the host's GPUs (GPU pools, told by a
//! `machineType` that names a GPU). Every account also sees the built-in
//! pools: `host-cpu`, and `host-gpu` when the host has NVIDIA GPUs. An
//! `eksNodePool` is kept but cannot be provisioned here: it is FAILED.

use std::collections::BTreeMap;

use crate::Gateway;
use paddock_core::clock::Timestamp;
use paddock_core::error::CoreError;
use paddock_core::ids::AccountId;
use paddock_core::model::gateway::{
    ClusterBackend, EksNodePool, FakeNodePool, NodePool, NodePoolBackend, NodePoolState, Status,
    StatusCode,
};
use paddock_core::model::Principal;

use crate::clusters::HOST_CLUSTER_ID;

use crate::validate::{
    validate_annotations, validate_display_name, validate_resource_id, MetadataPatch, PatchTarget,
};

pub const HOST_CPU_POOL_ID: &str = "host-cpu";
pub const HOST_GPU_POOL_ID: &str = "host-gpu";

#[derive(Debug, Clone, Default)]
pub struct NodePoolInput {
    pub display_name: String,
    pub min_node_count: Option<i32>,
    pub max_node_count: Option<i32>,
    pub overprovision_node_count: Option<i32>,
    pub fake_node_pool: Option<FakeNodePool>,
    pub eks_node_pool: Option<EksNodePool>,
    pub annotations: BTreeMap<String, String>,
    /// The cluster it belongs to; `None`: the host's.
    pub cluster_id: Option<String>,
}

/// What an update changes (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct NodePoolPatch {
    pub metadata: MetadataPatch,
    pub min_node_count: Option<i32>,
    pub max_node_count: Option<i32>,
    pub overprovision_node_count: Option<i32>,
}

/// The node counts' rules, from the API notes.
fn validate_counts(min: i32, max: i32, over: i32, prefix: &str) -> Result<(), CoreError> {
    if min < 0 {
        return Err(CoreError::invalid(
            format!("{prefix}minNodeCount"),
            "must be at least 0",
        ));
    }
    if max < 1 || max < min {
        return Err(CoreError::invalid(
            format!("{prefix}maxNodeCount"),
            "must be positive and at least minNodeCount",
        ));
    }
    if over < 0 || over > min || over > max - min {
        return Err(CoreError::invalid(
            format!("{prefix}overprovisionNodeCount"),
            "must be at least 0 and at most both minNodeCount and maxNodeCount - minNodeCount",
        ));
    }
    Ok(())
}

const EKS_POOL_UNREACHABLE: &str = "EKS node pools cannot be provisioned from this paddock \
     server: it has no route to AWS. Use a fakeNodePool to run on this host.";

impl Gateway {
    /// The built-in pools, which exist since their account does.
    async fn host_pools(&self, account: &AccountId) -> Result<Vec<NodePool>, CoreError> {
        let epoch = self.host_cluster(account).await?.create_time;
        let pool = |id: &str, name: &str, machine: &str| NodePool {
            id: id.to_owned(),
            account_id: account.clone(),
            cluster_id: HOST_CLUSTER_ID.to_owned(),
            display_name: name.to_owned(),
            min_node_count: 0,
            max_node_count: 1,
            overprovision_node_count: 0,
            backend: NodePoolBackend::Fake(FakeNodePool {
                machine_type: machine.to_owned(),
                num_nodes: 1,
                service_account: String::new(),
            }),
            annotations: BTreeMap::new(),
            state: NodePoolState::Ready,
            status: Status::ok(),
            create_time: epoch,
            update_time: epoch,
        };
        let mut cpu = pool(HOST_CPU_POOL_ID, "This host's CPUs", "host-cpu");
        let hosts = self.hosts().await?;
        let nodes = i32::try_from(hosts.cpus()).unwrap_or(i32::MAX);
        cpu.max_node_count = nodes.max(1);
        if let NodePoolBackend::Fake(f) = &mut cpu.backend {
            f.num_nodes = nodes;
        }
        let mut pools = vec![cpu];
        if hosts.have_gpus() {
            pools.push(pool(HOST_GPU_POOL_ID, "This host's GPUs", "host-gpu"));
        }
        Ok(pools)
    }

    fn is_host_pool(id: &str) -> bool {
        id == HOST_CPU_POOL_ID || id == HOST_GPU_POOL_ID
    }

    pub async fn create_node_pool(
        &self,
        account: &AccountId,
        id: &str,
        input: NodePoolInput,
    ) -> Result<NodePool, CoreError> {
        validate_resource_id("nodePoolId", id)?;
        validate_display_name("nodePool.displayName", &input.display_name)?;
        validate_annotations("nodePool.annotations", &input.annotations)?;
        let min = input.min_node_count.unwrap_or(0);
        let max = input.max_node_count.unwrap_or(1);
        let over = input.overprovision_node_count.unwrap_or(0);
        validate_counts(min, max, over, "nodePool.")?;
        let backend = match (input.fake_node_pool, input.eks_node_pool) {
            (Some(_), Some(_)) => {
                return Err(CoreError::invalid(
                    "nodePool",
                    "set one of fakeNodePool and eksNodePool, not both",
                ))
            }
            (None, None) => {
                return Err(CoreError::invalid(
                    "nodePool",
                    "one of fakeNodePool and eksNodePool is required",
                ))
            }
            (Some(f), None) => {
                if f.num_nodes < 0 {
                    return Err(CoreError::invalid(
                        "nodePool.fakeNodePool.numNodes",
                        "must be at least 0",
                    ));
                }
                NodePoolBackend::Fake(f)
            }
            (None, Some(e)) => {
                if e.instance_type.is_empty() {
                    return Err(CoreError::invalid(
                        "nodePool.eksNodePool.instanceType",
                        "is required",
                    ));
                }
                NodePoolBackend::Eks(e)
            }
        };
        if Self::is_host_pool(id) {
            return Err(CoreError::Conflict(format!(
                "node pool {id:?} already exists"
            )));
        }
        // A pool's nodes are of its cluster's kind: this host's or a fake
        // cluster's for a fake pool, an EKS cluster's for an EKS pool.
        let cluster_id = input
            .cluster_id
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| HOST_CLUSTER_ID.to_owned());
        let cluster = match self.get_cluster(account, &cluster_id).await {
            Err(CoreError::NotFound { .. }) => {
                return Err(CoreError::invalid(
                    "nodePool.clusterId",
                    format!("no cluster {cluster_id:?} in this account"),
                ))
            }
            other => other?,
        };
        let fits = matches!(
            (&cluster.backend, &backend),
            (
                ClusterBackend::Host | ClusterBackend::Fake(_),
                NodePoolBackend::Fake(_)
            ) | (ClusterBackend::Eks(_), NodePoolBackend::Eks(_))
        );
        if !fits {
            return Err(CoreError::invalid(
                "nodePool.clusterId",
                format!(
                    "cluster {cluster_id:?} cannot hold this pool: fakeNodePool belongs to the host or a \
                     fakeCluster, eksNodePool to an eksCluster"
                ),
            ));
        }
        let now = Timestamp::now();
        let (state, status) = match &backend {
            NodePoolBackend::Eks(_) => (
                NodePoolState::Failed,
                Status::error(StatusCode::Unavailable, EKS_POOL_UNREACHABLE),
            ),
            NodePoolBackend::Fake(_) => (NodePoolState::Ready, Status::ok()),
        };
        let mut pool = NodePool {
            id: id.to_owned(),
            account_id: account.clone(),
            cluster_id,
            display_name: input.display_name,
            min_node_count: min,
            max_node_count: max,
            overprovision_node_count: over,
            backend,
            annotations: input.annotations,
            state,
            status,
            create_time: now,
            update_time: now,
        };
        if pool.state == NodePoolState::Ready
            && self.pool_capacity(&pool, &self.hosts().await?) == 0
        {
            pool.status = Status::error(
                StatusCode::Ok,
                "this host has no NVIDIA GPUs: the pool has no ranks",
            );
        }
        self.docs.insert(&pool).await?;
        tracing::info!(account = %account, node_pool = id, "node pool created");
        Ok(pool)
    }

    pub async fn get_node_pool(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<NodePool, CoreError> {
        if let Some(p) = self
            .host_pools(account)
            .await?
            .into_iter()
            .find(|p| p.id == id)
        {
            return Ok(p);
        }
        self.docs
            .load(account, id)
            .await?
            .ok_or_else(|| CoreError::not_found("node pool", id))
    }

    /// The pool a connection or job named in `field`, ready to take ranks:
    /// an unknown one is INVALID_ARGUMENT on that field, one not READY a
    /// failed precondition.
    pub(crate) async fn ready_pool(
        &self,
        account: &AccountId,
        id: &str,
        field: &str,
    ) -> Result<NodePool, CoreError> {
        let pool = self.get_node_pool(account, id).await.map_err(|e| match e {
            CoreError::NotFound { .. } => {
                CoreError::invalid(field, format!("no node pool {id:?} in this account"))
            }
            e => e,
        })?;
        if pool.state != NodePoolState::Ready {
            return Err(CoreError::FailedPrecondition(format!(
                "node pool {id:?} is {}: {}",
                pool.state.as_str(),
                pool.status.message
            )));
        }
        Ok(pool)
    }

    pub async fn list_node_pools(&self, account: &AccountId) -> Result<Vec<NodePool>, CoreError> {
        let mut all = self.host_pools(account).await?;
        all.extend(self.docs.load_all::<NodePool>(Some(account)).await?);
        Ok(all)
    }

    pub async fn update_node_pool(
        &self,
        account: &AccountId,
        id: &str,
        patch: NodePoolPatch,
    ) -> Result<NodePool, CoreError> {
        if Self::is_host_pool(id) {
            self.get_node_pool(account, id).await?;
            return Err(CoreError::FailedPrecondition(
                "the built-in node pools cannot be changed".into(),
            ));
        }
        let _guard = self.docs.lock::<NodePool>(account, id).await?;
        let mut pool = self.get_node_pool(account, id).await?;
        let who = Principal {
            account_id: account.clone(),
            user_email: String::new(),
        };
        let min = patch.min_node_count.unwrap_or(pool.min_node_count);
        let max = patch.max_node_count.unwrap_or(pool.max_node_count);
        let over = patch
            .overprovision_node_count
            .unwrap_or(pool.overprovision_node_count);
        validate_counts(min, max, over, "")?;
        patch.metadata.apply(
            &who,
            PatchTarget {
                display_name: &mut pool.display_name,
                annotations: &mut pool.annotations,
                sharing: None,
            },
        )?;
        pool.min_node_count = min;
        pool.max_node_count = max;
        pool.overprovision_node_count = over;
        pool.update_time = Timestamp::now();
        self.docs.save(&pool).await?;
        Ok(pool)
    }

    /// Deletes a pool nothing holds ranks on.
    pub async fn delete_node_pool(&self, account: &AccountId, id: &str) -> Result<(), CoreError> {
        if Self::is_host_pool(id) {
            self.get_node_pool(account, id).await?;
            return Err(CoreError::FailedPrecondition(
                "the built-in node pools cannot be deleted".into(),
            ));
        }
        let _guard = self.docs.lock::<NodePool>(account, id).await?;
        let pool = self.get_node_pool(account, id).await?;
        let _placement = self.placement_lock().await?;
        let stats = self.node_pool_stats(&pool).await?;
        let jobs: i32 = stats.batch_job_count.values().sum();
        if stats.environment_count > 0 || jobs > 0 {
            return Err(CoreError::FailedPrecondition(format!(
                "node pool {id:?} is in use by {} environments and {jobs} batch jobs",
                stats.environment_count
            )));
        }
        self.docs.delete::<NodePool>(account, id).await?;
        tracing::info!(account = %account, node_pool = id, "node pool deleted");
        Ok(())
    }

    /// Deletes several pools; all or none (every id is checked first).
    pub async fn batch_delete_node_pools(
        &self,
        account: &AccountId,
        ids: &[String],
    ) -> Result<(), CoreError> {
        for id in ids {
            self.get_node_pool(account, id).await?;
        }
        for id in ids {
            self.delete_node_pool(account, id).await?;
        }
        Ok(())
    }
}
