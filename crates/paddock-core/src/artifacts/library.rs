//! The accounts' images: their records, pulls into them (with progress a
//! client can poll while they run), removal, and the garbage collection of
//! blobs and layers no image holds. A component of its own over the image
//! store and the image backend: nothing here needs a sandbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::clock::Timestamp;
use crate::error::CoreError;
use crate::ids::AccountId;
use crate::images::ImageBackend;
use crate::model::{Image, PullPhase, PullProgress, PullState};
use crate::store::ImageStore;

/// How long a finished pull's record stays readable.
const FINISHED_PULL_RETENTION: Duration = Duration::from_secs(15 * 60);

/// A pull the API can report on while it runs.
struct PullRecord {
    account: AccountId,
    progress: Arc<PullProgress>,
    started: Instant,
}

pub struct ImageLibrary {
    store: Arc<dyn ImageStore>,
    backend: Arc<dyn ImageBackend>,
    pulls: Mutex<HashMap<String, PullRecord>>,
}

impl ImageLibrary {
    pub(crate) fn new(store: Arc<dyn ImageStore>, backend: Arc<dyn ImageBackend>) -> Arc<Self> {
        Arc::new(Self {
            store,
            backend,
            pulls: Mutex::new(HashMap::new()),
        })
    }

    /// The account's image stored under `reference` (or digest), if any.
    pub async fn find(
        &self,
        account: &AccountId,
        reference: &str,
    ) -> Result<Option<Image>, CoreError> {
        Ok(self.store.find_image(account, reference).await?)
    }

    /// The account's image `digest_or_reference`, or `NotFound`.
    pub async fn get(
        &self,
        account: &AccountId,
        digest_or_reference: &str,
    ) -> Result<Image, CoreError> {
        self.find(account, digest_or_reference)
            .await?
            .ok_or_else(|| CoreError::not_found("image", digest_or_reference))
    }

    pub async fn list(&self, account: &AccountId) -> Result<Vec<Image>, CoreError> {
        Ok(self.store.list_images(account).await?)
    }

    /// Stores `image` under its reference (an image the account has,
    /// under another name: a pinned reference, say).
    pub async fn save(&self, image: &Image) -> Result<(), CoreError> {
        Ok(self.store.upsert_image(image).await?)
    }

    /// The layer a build step with this cache key made before, if any.
    pub(crate) async fn built_step(
        &self,
        key: &str,
    ) -> Result<Option<crate::images::BuiltLayer>, CoreError> {
        Ok(self.store.get_build_step(key).await?)
    }

    /// Keeps the layer a build step made, under its cache key.
    pub(crate) async fn keep_built_step(
        &self,
        key: &str,
        layer: &crate::images::BuiltLayer,
    ) -> Result<(), CoreError> {
        Ok(self.store.put_build_step(key, layer).await?)
    }

    /// Whether `reference` is a well-formed image reference.
    pub fn is_reference(&self, reference: &str) -> bool {
        self.backend.is_reference(reference)
    }

    /// A 422 on `field` unless `value` is an image reference.
    pub fn require_reference(&self, field: &str, value: &str) -> Result<(), CoreError> {
        if !self.is_reference(value) {
            return Err(CoreError::invalid(
                field,
                format!("{value:?} is not an image reference"),
            ));
        }
        Ok(())
    }

    /// The account's image for `reference`, pulled if it has none yet.
    pub async fn ensure(&self, account: &AccountId, reference: &str) -> Result<Image, CoreError> {
        if let Some(image) = self.find(account, reference).await? {
            return Ok(image);
        }
        // The same image under another spelling (`busybox` for a pulled
        // `docker.io/library/busybox:latest`) resolves before any pull.
        if let Some(wanted) = self.backend.canonical(reference) {
            let held =
                self.list(account).await?.into_iter().find(|i| {
                    self.backend.canonical(&i.reference).as_deref() == Some(wanted.as_str())
                });
            if let Some(image) = held {
                return Ok(image);
            }
        }
        let progress = Arc::new(PullProgress::new(reference));
        self.pull_into_account(account, reference, &progress).await
    }

    async fn pull_into_account(
        &self,
        account: &AccountId,
        reference: &str,
        progress: &PullProgress,
    ) -> Result<Image, CoreError> {
        let pulled = match self.backend.pull(reference, progress).await {
            Ok(p) => p,
            Err(e) => {
                progress.finish(Err(e.to_string()));
                return Err(e);
            }
        };
        let image = Image {
            account_id: account.clone(),
            size: pulled.layers.iter().map(|l| l.size).sum(),
            digest: pulled.digest,
            reference: pulled.reference,
            config_digest: pulled.config_digest,
            config: pulled.config,
            layers: pulled.layers,
            created_at: Timestamp::now(),
        };
        self.store.upsert_image(&image).await?;
        progress.finish(Ok(&image.digest));
        Ok(image)
    }

    /// Starts pulling `reference` for the account; returns the pull's id
    /// and, with `wait`, the image once it is stored.
    pub async fn pull(
        self: &Arc<Self>,
        account: &AccountId,
        reference: &str,
        wait: bool,
    ) -> Result<(String, PullState, Option<Image>), CoreError> {
        self.require_reference("reference", reference)?;
        let id = format!("pull_{}", uuid::Uuid::new_v4().simple());
        let progress = Arc::new(PullProgress::new(reference));
        {
            let mut pulls = self.pulls.lock().unwrap_or_else(PoisonError::into_inner);
            // Records of finished pulls go once clients had time to read
            // them; running pulls always stay.
            pulls.retain(|_, r| {
                let finished = matches!(
                    r.progress.snapshot().phase,
                    PullPhase::Done | PullPhase::Failed
                );
                !finished || r.started.elapsed() < FINISHED_PULL_RETENTION
            });
            let record = PullRecord {
                account: account.clone(),
                progress: Arc::clone(&progress),
                started: Instant::now(),
            };
            pulls.insert(id.clone(), record);
        }
        let this = Arc::clone(self);
        let (acct, reference, p) = (account.clone(), reference.to_owned(), Arc::clone(&progress));
        let task = tokio::spawn(async move { this.pull_into_account(&acct, &reference, &p).await });
        if !wait {
            return Ok((id, progress.snapshot(), None));
        }
        let image = task
            .await
            .map_err(|e| CoreError::Unavailable(format!("pull task failed: {e}")))??;
        Ok((id, progress.snapshot(), Some(image)))
    }

    /// A pull's progress; another account's pull is not found.
    pub fn pull_state(&self, account: &AccountId, id: &str) -> Result<PullState, CoreError> {
        let pulls = self.pulls.lock().unwrap_or_else(PoisonError::into_inner);
        match pulls.get(id) {
            Some(r) if &r.account == account => Ok(r.progress.snapshot()),
            _ => Err(CoreError::not_found("pull", id)),
        }
    }

    /// Removes the account's image (refused while one of its VMs runs it)
    /// and frees every blob and layer no image references any more.
    pub async fn delete(
        &self,
        account: &AccountId,
        digest_or_reference: &str,
    ) -> Result<(Image, u64), CoreError> {
        let image = self.get(account, digest_or_reference).await?;
        let users = self
            .store
            .count_vms_using_image(account, &image.digest)
            .await?;
        if users > 0 {
            return Err(CoreError::Conflict(format!(
                "image {} is used by {users} VM(s); delete them first",
                image.digest
            )));
        }
        self.store.delete_image(account, &image.digest).await?;
        Ok((image, self.collect_garbage().await?))
    }

    /// How many of the account's VMs that hold resources run the image
    /// `digest` (a snapshot's, say).
    pub(crate) async fn users(&self, account: &AccountId, digest: &str) -> Result<u64, CoreError> {
        Ok(self.store.count_vms_using_image(account, digest).await?)
    }

    /// Frees blobs and layers no image of any account references.
    pub async fn collect_garbage(&self) -> Result<u64, CoreError> {
        let keep = self.store.referenced_blobs().await?;
        self.backend.collect_garbage(&keep).await
    }
}
