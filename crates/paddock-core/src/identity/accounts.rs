//! Accounts and the keys that act for their users (API keys and dev
//! tokens): everything a key check or `paddock keys` needs, over the
//! store alone, so managing keys starts no sandbox machinery.

use std::sync::Arc;

use crate::clock::Timestamp;
use crate::error::CoreError;
use crate::ids::{AccountId, ApiKeyId};
use crate::model::{Account, ApiKey, ApiKeySecret, KeyPatch, KeySettings, NewApiKey, Principal};
use crate::quotas::{Quota, Quotas};
use crate::store::{AccountStore, RequestSpend, SharedLock};

pub struct Accounts {
    store: Arc<dyn AccountStore>,
    quotas: Arc<Quotas>,
}

impl Accounts {
    /// Over `store`, with no quotas (key management).
    pub fn new(store: Arc<dyn AccountStore>) -> Self {
        Self::with_quotas(store, Arc::new(Quotas::unlimited()))
    }

    /// Over `store`; every authenticated request spends from the account's
    /// rate in `quotas`.
    pub fn with_quotas(store: Arc<dyn AccountStore>, quotas: Arc<Quotas>) -> Self {
        Self { store, quotas }
    }

    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// The account's quota (by id or by name, else the default).
    /// Read on every authenticated request: the account's name is looked
    /// up once, and only when some quota is set by name.
    pub async fn quota(&self, account: &AccountId) -> Result<Quota, CoreError> {
        if !self.quotas.names_matter() {
            return Ok(self.quotas.quota_of(account, None));
        }
        if let Some(quota) = self.quotas.remembered(account) {
            return Ok(quota);
        }
        let Some(name) = self.store.get_account(account).await?.map(|a| a.name) else {
            return Ok(self.quotas.quota_of(account, None));
        };
        let quota = self.quotas.quota_of(account, Some(&name));
        self.quotas.remember(account, quota);
        Ok(quota)
    }

    /// On a fresh store: creates the default account and its admin key, and
    /// returns the key's secret (the only time it is ever shown).
    pub async fn bootstrap(&self) -> Result<Option<(Account, ApiKeySecret)>, CoreError> {
        if !self.store.list_accounts().await?.is_empty() {
            return Ok(None);
        }
        let account = self.create_account("default").await?;
        let (_, secret) = self.create_api_key(&account.id, "admin", None).await?;
        Ok(Some((account, secret)))
    }

    pub async fn create_account(&self, name: &str) -> Result<Account, CoreError> {
        let account = Account {
            id: AccountId::generate(),
            name: name.to_owned(),
            created_at: Timestamp::now(),
        };
        self.store.insert_account(&account).await?;
        Ok(account)
    }

    pub async fn list_accounts(&self) -> Result<Vec<Account>, CoreError> {
        Ok(self.store.list_accounts().await?)
    }

    pub async fn create_api_key(
        &self,
        account: &AccountId,
        name: &str,
        user_email: Option<&str>,
    ) -> Result<(ApiKey, ApiKeySecret), CoreError> {
        self.create_key(account, name, user_email, crate::model::KeyKind::Api)
            .await
    }

    /// Creates a key of `kind` (an API key or a dev token) for a user of
    /// the account.
    pub async fn create_key(
        &self,
        account: &AccountId,
        name: &str,
        user_email: Option<&str>,
        kind: crate::model::KeyKind,
    ) -> Result<(ApiKey, ApiKeySecret), CoreError> {
        let user_email = user_email.unwrap_or(crate::model::DEFAULT_USER_EMAIL);
        crate::model::validate_email(user_email).map_err(|m| CoreError::invalid("user", m))?;
        if self.store.get_account(account).await?.is_none() {
            return Err(CoreError::not_found("account", account));
        }
        let (new_key, secret) = NewApiKey::generate_kind(account.clone(), name, user_email, kind);
        self.store.insert_api_key(&new_key).await?;
        Ok((new_key.key, secret))
    }

    /// A key the account's own callers make (`POST /v1/api-keys`): named,
    /// described, expiring, for a user of the account.
    pub async fn create_key_with(
        &self,
        account: &AccountId,
        settings: KeySettings,
    ) -> Result<(ApiKey, ApiKeySecret), CoreError> {
        check_key_name(&settings.name)?;
        check_description(settings.description.as_deref())?;
        check_expiry(settings.expires_at)?;
        let user_email = settings
            .user_email
            .as_deref()
            .unwrap_or(crate::model::DEFAULT_USER_EMAIL);
        crate::model::validate_email(user_email)
            .map_err(|m| CoreError::invalid("user_email", m))?;
        if self.store.get_account(account).await?.is_none() {
            return Err(CoreError::not_found("account", account));
        }
        let (mut new_key, secret) = NewApiKey::generate_kind(
            account.clone(),
            &settings.name,
            user_email,
            crate::model::KeyKind::Api,
        );
        new_key.key.description = settings.description;
        new_key.key.expires_at = settings.expires_at;
        self.store.insert_api_key(&new_key).await?;
        Ok((new_key.key, secret))
    }

    /// The account's keys that have not been deleted, expired ones
    /// included (they say when they expired).
    pub async fn account_keys(&self, account: &AccountId) -> Result<Vec<ApiKey>, CoreError> {
        Ok(self.store.list_account_api_keys(account).await?)
    }

    /// One of the account's keys; another account's, or a deleted one, is
    /// not found.
    pub async fn account_key(&self, account: &AccountId, id: &str) -> Result<ApiKey, CoreError> {
        let not_found = || CoreError::not_found("API key", id);
        let id: ApiKeyId = id.parse().map_err(|_| not_found())?;
        self.store
            .get_api_key(account, &id)
            .await?
            .ok_or_else(not_found)
    }

    pub async fn update_account_key(
        &self,
        account: &AccountId,
        id: &str,
        patch: KeyPatch,
    ) -> Result<ApiKey, CoreError> {
        if let Some(name) = &patch.name {
            check_key_name(name)?;
        }
        if let Some(description) = &patch.description {
            check_description(description.as_deref())?;
        }
        if let Some(expiry) = patch.expires_at {
            check_expiry(expiry)?;
        }
        let mut key = self.account_key(account, id).await?;
        if let Some(name) = patch.name {
            key.name = name;
        }
        if let Some(description) = patch.description {
            key.description = description;
        }
        if let Some(expiry) = patch.expires_at {
            key.expires_at = expiry;
        }
        self.store.update_api_key(&key).await?;
        Ok(key)
    }

    /// Deletes (revokes) one of the account's keys: its next call is 401.
    pub async fn delete_account_key(&self, account: &AccountId, id: &str) -> Result<(), CoreError> {
        let key = self.account_key(account, id).await?;
        self.revoke_api_key(&key.id).await
    }

    /// The caller's user: its account, email, role and since when it has
    /// held a key. Users are the emails keys act for; the account's
    /// administrator is the one its first key was made for.
    pub async fn user(&self, who: &Principal) -> Result<UserProfile, CoreError> {
        let account = self
            .store
            .get_account(&who.account_id)
            .await?
            .ok_or_else(|| CoreError::not_found("account", &who.account_id))?;
        let keys = self.store.list_account_api_keys(&who.account_id).await?;
        let since = keys
            .iter()
            .filter(|k| k.user_email == who.user_email)
            .map(|k| k.created_at)
            .min()
            .unwrap_or(account.created_at);
        let role = if who.user_email == crate::model::DEFAULT_USER_EMAIL {
            UserRole::Admin
        } else {
            UserRole::Member
        };
        Ok(UserProfile {
            id: user_id(&who.account_id, &who.user_email),
            email: who.user_email.clone(),
            role,
            created_at: since,
            account,
        })
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>, CoreError> {
        Ok(self.store.list_api_keys().await?)
    }

    pub async fn revoke_api_key(&self, id: &ApiKeyId) -> Result<(), CoreError> {
        if self.store.revoke_api_key(id, Timestamp::now()).await? {
            Ok(())
        } else {
            Err(CoreError::not_found("API key", id))
        }
    }

    pub async fn get_account(&self, id: &AccountId) -> Result<Option<Account>, CoreError> {
        Ok(self.store.get_account(id).await?)
    }

    /// The account a presented key acts for.
    pub async fn authenticate(&self, presented: &str) -> Result<AccountId, CoreError> {
        Ok(self.authenticate_user(presented).await?.account_id)
    }

    /// The key a presented secret is, whether or not it may act (an
    /// expired one): what the audit log attributes a refusal to. A
    /// revoked or unknown key is no one's.
    pub async fn identify(&self, presented: &str) -> Result<Option<ApiKey>, CoreError> {
        let secret = ApiKeySecret::from_presented(presented);
        Ok(self.store.find_api_key(&secret.hash()).await?)
    }

    /// The account and user a presented key acts for.
    pub async fn authenticate_user(&self, presented: &str) -> Result<Principal, CoreError> {
        self.authenticate_key(presented).await.map(|(who, _)| who)
    }

    /// The account and user a presented key acts for, and the key's id
    /// (which the audit log names as the actor).
    pub async fn authenticate_key(
        &self,
        presented: &str,
    ) -> Result<(Principal, ApiKeyId), CoreError> {
        let secret = ApiKeySecret::from_presented(presented);
        let Some(key) = self.store.find_api_key(&secret.hash()).await? else {
            return Err(CoreError::Unauthenticated);
        };
        if !key.is_live(Timestamp::now()) {
            return Err(CoreError::Unauthenticated);
        }
        let quota = self.quota(&key.account_id).await?;
        self.admit_request(&key.account_id, &quota).await?;
        Ok((
            Principal {
                account_id: key.account_id,
                user_email: key.user_email,
            },
            key.id,
        ))
    }
}

impl Accounts {
    /// Held from a capacity check until what it admitted is recorded (a
    /// VM, a volume, a snapshot), against every other create of the
    /// account in this process and in every other sharing the store. This
    /// process's lock is taken first, so its tasks queue here rather than
    /// each holding a database connection while they wait.
    pub async fn lock_creates(&self, account: &AccountId) -> Result<CreatesLock, CoreError> {
        let local = self.quotas.lock_creates(account).await;
        let shared = self.store.hold_account_creates(account).await?;
        Ok(CreatesLock {
            _shared: shared,
            _local: local,
        })
    }

    /// Spends one request of the account's rate: from the bucket every
    /// process sharing the store takes from (a few tokens at a time, see
    /// [`crate::quotas::shared_take`]), or this process's own when none
    /// shares it. A 429 with the wait when none is left.
    async fn admit_request(&self, account: &AccountId, quota: &Quota) -> Result<(), CoreError> {
        let Some((rate, capacity)) = quota.request_bucket() else {
            return Ok(());
        };
        if self.quotas.spend_taken(account) {
            return Ok(());
        }
        let take = crate::quotas::shared_take(capacity);
        match self
            .store
            .take_requests(account, rate, capacity, take)
            .await?
        {
            RequestSpend::Unshared => self.quotas.admit_request(account, quota),
            RequestSpend::Granted(n) => {
                self.quotas.keep_taken(account, n.saturating_sub(1));
                Ok(())
            }
            RequestSpend::Wait(retry_after) => Err(CoreError::RateLimited { retry_after }),
        }
    }
}

/// An account's creates held by [`Accounts::lock_creates`], until dropped.
#[must_use = "the lock is released when dropped"]
pub struct CreatesLock {
    _shared: SharedLock,
    _local: tokio::sync::OwnedMutexGuard<()>,
}

/// A user of an account, as `/v1/users/me` shows it.
#[derive(Debug, Clone)]
pub struct UserProfile {
    /// Stable for an (account, email) pair.
    pub id: String,
    pub email: String,
    pub role: UserRole,
    /// When the user's first key still held was made.
    pub created_at: Timestamp,
    pub account: Account,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserRole {
    /// The account's administrator (`admin@localhost` unless keys name
    /// another).
    Admin,
    Member,
}

impl UserRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }
}

/// `user_` and 16 hex digits of a hash of the account and email.
pub fn user_id(account: &AccountId, email: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{account}/{email}").as_bytes());
    format!("user_{}", hex::encode(&digest[..8]))
}

/// A key's name: what listings show; 1 to 100 characters, no control
/// characters.
fn check_key_name(name: &str) -> Result<(), CoreError> {
    if name.trim().is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(CoreError::invalid(
            "name",
            "must be 1 to 100 characters without control characters",
        ));
    }
    Ok(())
}

fn check_description(description: Option<&str>) -> Result<(), CoreError> {
    if description.is_some_and(|d| d.chars().count() > 1000) {
        return Err(CoreError::invalid(
            "description",
            "must be at most 1000 characters",
        ));
    }
    Ok(())
}

/// An expiry must lie ahead: a key made already expired is a mistake.
fn check_expiry(expires_at: Option<Timestamp>) -> Result<(), CoreError> {
    if expires_at.is_some_and(|e| e <= Timestamp::now()) {
        return Err(CoreError::invalid("expires_at", "must be in the future"));
    }
    Ok(())
}
