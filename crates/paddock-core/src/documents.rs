//! Resources kept as JSON documents in the store
//! ([`ResourceStore`](crate::store::ResourceStore)):
//! the gateway's clusters, pools, environments and jobs, and the
//! definitions product's environment definitions. One lock per document
//! serializes its read-modify-write cycles. Public: the products built
//! over the core keep their records here, each holding the component
//! ([`crate::service::Service::documents`]) beside the core.

use std::sync::Arc;

use tokio::sync::OwnedMutexGuard;

use crate::error::CoreError;
use crate::ids::AccountId;
use crate::keyed_locks::KeyedLocks;
use crate::model::gateway::Resource;
use crate::store::{ResourceDoc, ResourceStore, SharedLock};

/// A document locked by [`Documents::lock`], until dropped.
#[must_use = "the lock is released when dropped"]
pub struct DocumentLock {
    _shared: SharedLock,
    _local: OwnedMutexGuard<()>,
}

/// The products' documents over the resource store.
pub struct Documents {
    store: Arc<dyn ResourceStore>,
    locks: KeyedLocks<String>,
}

impl Documents {
    pub(crate) fn new(store: Arc<dyn ResourceStore>) -> Arc<Self> {
        Arc::new(Self {
            store,
            locks: KeyedLocks::default(),
        })
    }

    /// The store under the documents, for the products' own records kept
    /// beside them (a batch job's log).
    pub fn store(&self) -> &dyn ResourceStore {
        self.store.as_ref()
    }

    /// Locks one document against concurrent changes, in this process and
    /// in every other that shares the store.
    pub async fn lock<T: Resource>(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<DocumentLock, CoreError> {
        self.lock_key(&format!("{}/{}/{}", T::KIND, account, id))
            .await
    }

    /// Locks a name of the products' choosing (the gateway's rank
    /// accounting) as [`Documents::lock`] locks a document. This process's
    /// lock is taken first, so its tasks queue here rather than each
    /// holding a database connection while they wait.
    pub async fn lock_key(&self, key: &str) -> Result<DocumentLock, CoreError> {
        let local = self.locks.lock(&key.to_owned()).await;
        let shared = self.store.hold(key).await?;
        Ok(DocumentLock {
            _shared: shared,
            _local: local,
        })
    }

    pub async fn load<T: Resource>(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<Option<T>, CoreError> {
        match self.store.get_resource(T::KIND, account, id).await? {
            Some(doc) => Ok(Some(parse_doc(&doc)?)),
            None => Ok(None),
        }
    }

    pub async fn load_all<T: Resource>(
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

    pub async fn insert<T: Resource>(&self, r: &T) -> Result<(), CoreError> {
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

    pub async fn save<T: Resource>(&self, r: &T) -> Result<(), CoreError> {
        if self.store.update_resource(&to_doc(r)?).await? {
            Ok(())
        } else {
            Err(CoreError::not_found(kind_name(T::KIND), r.id()))
        }
    }

    pub async fn delete<T: Resource>(
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
        "environment_definition" => "environment",
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
