//! Clusters: the built-in one for this host, fake clusters backed by it,
//! and EKS clusters, which are validated and kept but cannot be reached
//! from here, so they end FAILED and say why.

use crate::Gateway;
use paddock_core::clock::Timestamp;
use paddock_core::error::CoreError;
use paddock_core::ids::AccountId;
use paddock_core::model::gateway::{
    Cluster, ClusterBackend, ClusterState, EksCluster, FakeCluster, Status, StatusCode,
};

use crate::validate::{validate_display_name, validate_resource_id};

/// The id every account sees for the host's own cluster.
pub const HOST_CLUSTER_ID: &str = "host";

/// What a create asks for.
#[derive(Debug, Clone, Default)]
pub struct ClusterInput {
    pub display_name: String,
    pub fake_cluster: Option<FakeCluster>,
    pub eks_cluster: Option<EksCluster>,
}

/// What an update changes (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct ClusterPatch {
    pub display_name: Option<String>,
}

const EKS_UNREACHABLE: &str = "EKS clusters cannot be provisioned from this paddock server: \
     it has no route to AWS. The cluster's settings are kept; use a fakeCluster (backed by \
     this host) to run environments here.";

fn validate_eks(eks: &EksCluster) -> Result<(), CoreError> {
    let id = &eks.aws_account_id;
    if id.len() != 12 || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(CoreError::invalid(
            "cluster.eksCluster.awsAccountId",
            "must be a 12-digit AWS account id",
        ));
    }
    if eks.region.is_empty() {
        return Err(CoreError::invalid(
            "cluster.eksCluster.region",
            "is required",
        ));
    }
    if eks.cluster_name.is_empty() {
        return Err(CoreError::invalid(
            "cluster.eksCluster.clusterName",
            "is required",
        ));
    }
    Ok(())
}

impl Gateway {
    /// The cluster every account has: this host, since the account was
    /// made.
    pub(crate) async fn host_cluster(&self, account: &AccountId) -> Result<Cluster, CoreError> {
        let made = self
            .core
            .accounts()
            .get_account(account)
            .await?
            .map(|a| a.created_at)
            .unwrap_or_else(|| Timestamp::from_unix_millis(0));
        Ok(Cluster {
            id: HOST_CLUSTER_ID.to_owned(),
            account_id: account.clone(),
            display_name: "This host".to_owned(),
            backend: ClusterBackend::Host,
            state: ClusterState::Ready,
            status: Status::ok(),
            create_time: made,
            update_time: made,
        })
    }

    pub async fn create_cluster(
        &self,
        account: &AccountId,
        id: &str,
        input: ClusterInput,
    ) -> Result<Cluster, CoreError> {
        validate_resource_id("clusterId", id)?;
        validate_display_name("cluster.displayName", &input.display_name)?;
        let backend = match (input.fake_cluster, input.eks_cluster) {
            (Some(_), Some(_)) => {
                return Err(CoreError::invalid(
                    "cluster",
                    "set one of fakeCluster and eksCluster, not both",
                ))
            }
            (None, None) => {
                return Err(CoreError::invalid(
                    "cluster",
                    "one of fakeCluster and eksCluster is required",
                ))
            }
            (Some(f), None) => ClusterBackend::Fake(f),
            (None, Some(e)) => {
                validate_eks(&e)?;
                ClusterBackend::Eks(e)
            }
        };
        if id == HOST_CLUSTER_ID {
            return Err(CoreError::Conflict(format!(
                "cluster {id:?} already exists"
            )));
        }
        let now = Timestamp::now();
        // A fake cluster is this host, ready at once; an EKS cluster is
        // recorded and fails its provisioning, which cannot reach AWS.
        let (state, status) = match &backend {
            ClusterBackend::Eks(_) => (
                ClusterState::Failed,
                Status::error(StatusCode::Unavailable, EKS_UNREACHABLE),
            ),
            _ => (ClusterState::Ready, Status::ok()),
        };
        let cluster = Cluster {
            id: id.to_owned(),
            account_id: account.clone(),
            display_name: input.display_name,
            backend,
            state,
            status,
            create_time: now,
            update_time: now,
        };
        self.docs.insert(&cluster).await?;
        tracing::info!(account = %account, cluster = id, state = cluster.state.as_str(), "cluster created");
        Ok(cluster)
    }

    pub async fn get_cluster(&self, account: &AccountId, id: &str) -> Result<Cluster, CoreError> {
        if id == HOST_CLUSTER_ID {
            return self.host_cluster(account).await;
        }
        self.docs
            .load(account, id)
            .await?
            .ok_or_else(|| CoreError::not_found("cluster", id))
    }

    /// The account's clusters, the built-in one first.
    pub async fn list_clusters(&self, account: &AccountId) -> Result<Vec<Cluster>, CoreError> {
        let mut all = vec![self.host_cluster(account).await?];
        all.extend(self.docs.load_all::<Cluster>(Some(account)).await?);
        Ok(all)
    }

    pub async fn update_cluster(
        &self,
        account: &AccountId,
        id: &str,
        patch: ClusterPatch,
    ) -> Result<Cluster, CoreError> {
        if id == HOST_CLUSTER_ID {
            self.get_cluster(account, id).await?;
            return Err(CoreError::FailedPrecondition(
                "the built-in cluster cannot be changed".into(),
            ));
        }
        let _guard = self.docs.lock::<Cluster>(account, id).await?;
        let mut cluster = self.get_cluster(account, id).await?;
        if let Some(name) = patch.display_name {
            validate_display_name("displayName", &name)?;
            cluster.display_name = name;
        }
        cluster.update_time = Timestamp::now();
        self.docs.save(&cluster).await?;
        Ok(cluster)
    }

    pub async fn delete_cluster(&self, account: &AccountId, id: &str) -> Result<(), CoreError> {
        if id == HOST_CLUSTER_ID {
            return Err(CoreError::FailedPrecondition(
                "the built-in cluster cannot be deleted".into(),
            ));
        }
        let _guard = self.docs.lock::<Cluster>(account, id).await?;
        self.get_cluster(account, id).await?;
        let pools: Vec<String> = self
            .docs
            .load_all::<paddock_core::model::gateway::NodePool>(Some(account))
            .await?
            .into_iter()
            .filter(|p| p.cluster_id == id)
            .map(|p| p.id)
            .collect();
        if !pools.is_empty() {
            return Err(CoreError::FailedPrecondition(format!(
                "cluster {id:?} still has node pools ({}); delete them first",
                pools.join(", ")
            )));
        }
        self.docs.delete::<Cluster>(account, id).await?;
        tracing::info!(account = %account, cluster = id, "cluster deleted");
        Ok(())
    }
}
