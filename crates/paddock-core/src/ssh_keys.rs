//! SSH public keys an account registers (the SSH gateway of dev
//! environments authenticates with them).

use crate::clock::Timestamp;
use crate::error::CoreError;
use crate::ids::{AccountId, VmId};
use crate::model::gateway::EnvironmentState;
use crate::model::{parse_ssh_key, Principal, SshKey};
use crate::service::Service;

impl Service {
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

    /// Whom an SSH login with the key `fingerprint` as `environment` acts
    /// for, and the sandbox it reaches: the first user (of any account)
    /// who registered the key and may see the environment, which must be
    /// connected. A key nobody registered is `Unauthenticated`; a known
    /// key that reaches no connected environment gets the reason, which
    /// the gateway shows its holder.
    pub async fn ssh_login(
        &self,
        fingerprint: &str,
        environment: &str,
    ) -> Result<(Principal, VmId), CoreError> {
        let mut not_connected = None;
        let keys = self.store.find_ssh_keys(fingerprint).await?;
        if keys.is_empty() {
            return Err(CoreError::Unauthenticated);
        }
        for key in keys {
            let who = Principal {
                account_id: key.account_id,
                user_email: key.user_email,
            };
            let Ok(env) = self.get_environment(&who, environment).await else {
                continue;
            };
            match (&env.vm_id, env.state) {
                (Some(vm), EnvironmentState::Connected) => return Ok((who, vm.clone())),
                _ => not_connected = Some(env.state),
            }
        }
        Err(match not_connected {
            Some(state) => CoreError::FailedPrecondition(format!(
                "environment {environment:?} is {}; connect it first",
                state.as_str()
            )),
            None => CoreError::not_found("environment", environment),
        })
    }
}
