//! SSH public keys an account registers (the SSH gateway of dev
//! environments authenticates with them).

use std::sync::Arc;

use crate::clock::Timestamp;
use crate::error::CoreError;
use crate::ids::AccountId;
use crate::model::{parse_ssh_key, Principal, SshKey};
use crate::store::SshKeyStore;

/// The SSH keys of an account's users, over the SSH key store alone.
pub struct SshKeys {
    store: Arc<dyn SshKeyStore>,
}

impl SshKeys {
    pub fn new(store: Arc<dyn SshKeyStore>) -> Self {
        Self { store }
    }

    /// Registers a key for the principal's user.
    pub async fn add_ssh_key(&self, who: &Principal, line: &str) -> Result<SshKey, CoreError> {
        let parsed = parse_ssh_key(line).map_err(|m| CoreError::invalid("public_key", m))?;
        let mut key = SshKey {
            id: 0,
            account_id: who.account_id.clone(),
            user_email: who.user_email.clone(),
            public_key: parsed.public_key,
            fingerprint: parsed.fingerprint,
            key_type: parsed.key_type,
            comment: parsed.comment,
            created_at: Timestamp::now(),
        };
        key.id = self.store.insert_ssh_key(&key).await.map_err(|e| match e {
            crate::StoreError::Duplicate => {
                CoreError::Conflict(format!("the key {} is already registered", key.fingerprint))
            }
            other => other.into(),
        })?;
        Ok(key)
    }

    pub async fn list_ssh_keys(&self, account: &AccountId) -> Result<Vec<SshKey>, CoreError> {
        Ok(self.store.list_ssh_keys(account).await?)
    }

    pub async fn delete_ssh_key(&self, account: &AccountId, id: i64) -> Result<(), CoreError> {
        if !self.store.delete_ssh_key(account, id).await? {
            return Err(CoreError::not_found("SSH key", id));
        }
        Ok(())
    }

    /// Every registered key with `fingerprint`, of any account: for the
    /// SSH gateway's login, which the account gateway resolves.
    pub async fn by_fingerprint(&self, fingerprint: &str) -> Result<Vec<SshKey>, CoreError> {
        Ok(self.store.find_ssh_keys(fingerprint).await?)
    }
}
