//! The store trait: every record paddock keeps, behind one interface so that
//! SQLite (embedded) and PostgreSQL (replicas) are interchangeable.

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::ids::{AccountId, ApiKeyId, ExecutionId, SessionId, VmId};
use crate::model::{
    Account, ApiKey, Execution, Image, NewApiKey, Vm, VmFilter, VmStatus, VmStatusSet,
};

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn insert_account(&self, account: &Account) -> Result<(), StoreError>;
    async fn get_account(&self, id: &AccountId) -> Result<Option<Account>, StoreError>;
    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError>;

    async fn insert_api_key(&self, key: &NewApiKey) -> Result<(), StoreError>;
    /// The unrevoked key with this hash.
    async fn find_api_key(&self, hash: &str) -> Result<Option<ApiKey>, StoreError>;
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError>;
    /// Returns false when no unrevoked key has this id.
    async fn revoke_api_key(&self, id: &ApiKeyId, at: Timestamp) -> Result<bool, StoreError>;

    async fn insert_vm(&self, vm: &Vm) -> Result<(), StoreError>;
    /// Writes every field of `vm` over its stored row.
    async fn update_vm(&self, vm: &Vm) -> Result<(), StoreError>;
    async fn get_vm(&self, account: &AccountId, id: &VmId) -> Result<Option<Vm>, StoreError>;
    /// A VM by id alone, for the server's own background work (start
    /// tasks, sweeps); never for a caller's request, which is scoped by
    /// account through [`Store::get_vm`].
    async fn find_vm(&self, id: &VmId) -> Result<Option<Vm>, StoreError>;
    /// The account's VMs, newest first, per `filter`.
    async fn list_vms(&self, account: &AccountId, filter: &VmFilter)
        -> Result<Vec<Vm>, StoreError>;
    /// VMs of every account in one of `statuses` (for reconciliation).
    async fn list_vms_in(&self, statuses: &VmStatusSet) -> Result<Vec<Vm>, StoreError>;
    /// Active VMs whose lifetime ended at or before `now`.
    async fn list_expired_vms(&self, now: Timestamp) -> Result<Vec<Vm>, StoreError>;
    /// The newest VM of a session, whatever its status.
    async fn latest_vm_of_session(
        &self,
        account: &AccountId,
        session: &SessionId,
    ) -> Result<Option<Vm>, StoreError>;
    async fn count_vms_by_status(&self) -> Result<Vec<(VmStatus, u64)>, StoreError>;

    async fn insert_execution(&self, execution: &Execution) -> Result<(), StoreError>;
    async fn update_execution(&self, execution: &Execution) -> Result<(), StoreError>;
    async fn get_execution(
        &self,
        account: &AccountId,
        id: &ExecutionId,
    ) -> Result<Option<Execution>, StoreError>;
    /// Marks every still-running execution failed (their tasks died with a
    /// previous server process); returns how many.
    async fn fail_unfinished_executions(
        &self,
        reason: &str,
        at: Timestamp,
    ) -> Result<u64, StoreError>;

    /// Inserts or replaces the account's image with this digest.
    async fn upsert_image(&self, image: &Image) -> Result<(), StoreError>;
    /// The account's image with this digest or (last pulled) reference.
    async fn find_image(
        &self,
        account: &AccountId,
        digest_or_reference: &str,
    ) -> Result<Option<Image>, StoreError>;
    async fn list_images(&self, account: &AccountId) -> Result<Vec<Image>, StoreError>;
    async fn delete_image(&self, account: &AccountId, digest: &str) -> Result<bool, StoreError>;
    /// Every blob digest (layers and configs) some image of any account
    /// references: what garbage collection keeps.
    async fn referenced_blobs(&self) -> Result<std::collections::BTreeSet<String>, StoreError>;
    /// How many of the account's VMs that hold resources run this image.
    async fn count_vms_using_image(
        &self,
        account: &AccountId,
        digest: &str,
    ) -> Result<u64, StoreError>;

    /// The layer a build step with this cache key made before.
    async fn get_build_step(
        &self,
        key: &str,
    ) -> Result<Option<crate::images::BuiltLayer>, StoreError>;
    async fn put_build_step(
        &self,
        key: &str,
        layer: &crate::images::BuiltLayer,
    ) -> Result<(), StoreError>;
}
