//! Accounts and the keys that act for their users (API keys and dev
//! tokens): everything a key check or `paddock keys` needs, over the
//! store alone, so managing keys starts no sandbox machinery.

use std::sync::Arc;

use crate::clock::Timestamp;
use crate::error::CoreError;
use crate::ids::{AccountId, ApiKeyId};
use crate::model::{Account, ApiKey, ApiKeySecret, NewApiKey, Principal};
use crate::quotas::{Quota, Quotas};
use crate::store::AccountStore;

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

    /// The account and user a presented key acts for.
    pub async fn authenticate_user(&self, presented: &str) -> Result<Principal, CoreError> {
        let secret = ApiKeySecret::from_presented(presented);
        let Some(key) = self.store.find_api_key(&secret.hash()).await? else {
            return Err(CoreError::Unauthenticated);
        };
        let quota = self.quota(&key.account_id).await?;
        self.quotas.admit_request(&key.account_id, &quota)?;
        Ok(Principal {
            account_id: key.account_id,
            user_email: key.user_email,
        })
    }
}
