//! Environments and batch jobs belong to the user who made them unless
//! shared: another user of the account finds neither (404), as it finds
//! no other account's. One way to read such a resource for a user, and
//! one to read it with its document lock held for a change, so a change
//! never works from a copy another change has since replaced.

use paddock_core::documents::DocumentLock;
use paddock_core::error::CoreError;
use paddock_core::model::gateway::{BatchJob, Environment, Resource};
use paddock_core::model::Principal;

use crate::Gateway;

/// A resource its creator may keep to themselves.
pub(crate) trait Owned: Resource {
    /// Its name in errors.
    const NOUN: &'static str;
    fn visible_to(&self, user: &str) -> bool;
}

impl Owned for Environment {
    const NOUN: &'static str = "environment";
    fn visible_to(&self, user: &str) -> bool {
        Environment::visible_to(self, user)
    }
}

impl Owned for BatchJob {
    const NOUN: &'static str = "batch job";
    fn visible_to(&self, user: &str) -> bool {
        BatchJob::visible_to(self, user)
    }
}

impl Gateway {
    /// The account's `id` if `who` may see it, else `NotFound`.
    pub(crate) async fn visible<T: Owned>(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<T, CoreError> {
        self.docs
            .load::<T>(&who.account_id, id)
            .await?
            .filter(|r| r.visible_to(&who.user_email))
            .ok_or_else(|| CoreError::not_found(T::NOUN, id))
    }

    /// [`Gateway::visible`] read under the resource's document lock, which
    /// the caller holds while it changes and saves it.
    pub(crate) async fn locked<T: Owned>(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<(DocumentLock, T), CoreError> {
        let guard = self.docs.lock::<T>(&who.account_id, id).await?;
        let resource = self.visible::<T>(who, id).await?;
        Ok((guard, resource))
    }

    /// Locks a document for a background task, which has nobody to answer:
    /// a failure (the store unreachable) is logged and the task gives up.
    pub(crate) async fn lock_for_task<T: Resource>(
        &self,
        account: &paddock_core::ids::AccountId,
        id: &str,
    ) -> Option<DocumentLock> {
        match self.docs.lock::<T>(account, id).await {
            Ok(lock) => Some(lock),
            Err(e) => {
                tracing::warn!(kind = T::KIND, id, error = %e, "could not lock a document; the task stops");
                None
            }
        }
    }
}
