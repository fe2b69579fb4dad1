//! Vaults: an account's named secrets, sealed at rest, injected into VM
//! environments. A value enters through `add_credential` or
//! `rotate_credential` and leaves only toward a sandbox's agent
//! ([`Vaults::vault_env`]); no record, error or log line carries it.

use std::sync::{Arc, OnceLock, Weak};

use crate::clock::Timestamp;
use crate::error::{CoreError, StoreError};
use crate::ids::{AccountId, CredentialId, VaultId};
use crate::model::{Credential, Env, SecretValue, Vault};
use crate::secrets::Keyring;
use crate::store::{Store, VaultStore};

/// The longest secret value accepted (an env var's limit).
const MAX_SECRET: usize = 128 * 1024;

fn check_vault_name(name: &str) -> Result<(), CoreError> {
    crate::model::validate_name(name).map_err(|m| CoreError::invalid("name", m))
}

pub(super) fn check_description(d: &Option<String>) -> Result<(), CoreError> {
    if d.as_ref().is_some_and(|d| d.chars().count() > 1024) {
        return Err(CoreError::invalid(
            "description",
            "must be at most 1024 characters",
        ));
    }
    Ok(())
}

/// A credential's name is the env var it becomes.
fn check_credential_name(name: &str) -> Result<(), CoreError> {
    let mut probe = std::collections::BTreeMap::new();
    probe.insert(name.to_owned(), String::new());
    Env::new(probe).map_err(|e| CoreError::invalid("name", e.reason))?;
    Ok(())
}

fn check_value(value: &SecretValue) -> Result<(), CoreError> {
    if value.0.is_empty() || value.0.len() > MAX_SECRET || value.0.contains('\0') {
        return Err(CoreError::invalid(
            "value",
            "must be 1 byte to 128 KiB with no NUL byte",
        ));
    }
    Ok(())
}

pub(super) fn sealing_failed(e: crate::secrets::SealError) -> CoreError {
    CoreError::Unavailable(format!("vault: {e}"))
}

/// What a sandbox finds under a credential's name while a service of its
/// vault injects the real value on the way out (`vault_services.rs`).
pub fn placeholder_for(credential: &str) -> String {
    format!("paddock-vault-placeholder-{credential}")
}

/// What changed in a vault, for those who use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultChange {
    /// A credential or a service was added, changed or removed.
    Contents,
    /// The vault is gone.
    Deleted,
}

/// Told of each change to a vault once it is stored: the running VMs
/// that have the vault take its new credentials and services from it.
/// Vaults know nothing of VMs; the composition root connects the two.
#[async_trait::async_trait]
pub trait VaultWatcher: Send + Sync {
    async fn vault_changed(&self, account: &AccountId, vault: &VaultId, change: VaultChange);
}

/// Vaults and their credentials, over the vault store and the keyring
/// alone.
pub struct Vaults {
    pub(super) store: Arc<dyn VaultStore>,
    pub(super) keyring: Arc<Keyring>,
    /// Weak: the watcher (the VMs) holds the vaults.
    watcher: OnceLock<Weak<dyn VaultWatcher>>,
}

impl Vaults {
    pub fn new(store: Arc<dyn VaultStore>, keyring: Arc<Keyring>) -> Self {
        Self {
            store,
            keyring,
            watcher: OnceLock::new(),
        }
    }

    /// Whom to tell of changes from now on (set once; a second is ignored).
    pub fn watch(&self, watcher: Weak<dyn VaultWatcher>) {
        let _ = self.watcher.set(watcher);
    }

    /// Tells the watcher of a change that is stored; returns `result`.
    pub(super) async fn changed<T>(
        &self,
        account: &AccountId,
        vault: &VaultId,
        change: VaultChange,
        result: T,
    ) -> Result<T, CoreError> {
        if let Some(watcher) = self.watcher.get().and_then(Weak::upgrade) {
            watcher.vault_changed(account, vault, change).await;
        }
        Ok(result)
    }

    pub async fn create_vault(
        &self,
        account: &AccountId,
        name: String,
        description: Option<String>,
    ) -> Result<Vault, CoreError> {
        check_vault_name(&name)?;
        check_description(&description)?;
        let now = Timestamp::now();
        let vault = Vault {
            id: VaultId::generate(),
            account_id: account.clone(),
            name,
            description,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_vault(&vault).await?;
        Ok(vault)
    }
    pub async fn list_vaults(&self, account: &AccountId) -> Result<Vec<Vault>, CoreError> {
        Ok(self.store.list_vaults(account).await?)
    }
    pub async fn get_vault(&self, account: &AccountId, id: &VaultId) -> Result<Vault, CoreError> {
        self.store
            .get_vault(account, id)
            .await?
            .ok_or_else(|| CoreError::not_found("vault", id))
    }
    pub async fn update_vault(
        &self,
        account: &AccountId,
        id: &VaultId,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<Vault, CoreError> {
        let mut vault = self.get_vault(account, id).await?;
        if let Some(name) = name {
            check_vault_name(&name)?;
            vault.name = name;
        }
        if description.is_some() {
            check_description(&description)?;
            vault.description = description;
        }
        vault.updated_at = Timestamp::now();
        self.store.update_vault(&vault).await?;
        Ok(vault)
    }
    pub async fn delete_vault(&self, account: &AccountId, id: &VaultId) -> Result<(), CoreError> {
        if !self.store.delete_vault(account, id).await? {
            return Err(CoreError::not_found("vault", id));
        }
        self.changed(account, id, VaultChange::Deleted, ()).await
    }
    pub async fn add_credential(
        &self,
        account: &AccountId,
        vault: &VaultId,
        name: String,
        value: SecretValue,
        credential_type: String,
        description: Option<String>,
    ) -> Result<Credential, CoreError> {
        self.get_vault(account, vault).await?;
        check_credential_name(&name)?;
        check_value(&value)?;
        check_description(&description)?;
        if credential_type.is_empty() || credential_type.len() > 64 {
            return Err(CoreError::invalid(
                "credential_type",
                "must be 1 to 64 characters",
            ));
        }
        let credential = Credential {
            id: CredentialId::generate(),
            vault_id: vault.clone(),
            name,
            credential_type,
            description,
            created_at: Timestamp::now(),
            rotated_at: None,
        };
        let sealed = self
            .keyring
            .seal(credential.id.as_str(), &value)
            .map_err(sealing_failed)?;
        match self.store.insert_credential(&credential, &sealed).await {
            Err(StoreError::Duplicate) => Err(CoreError::Conflict(format!(
                "vault {vault} already has a credential named {}",
                credential.name
            ))),
            Err(e) => Err(e.into()),
            Ok(()) => {
                self.changed(account, vault, VaultChange::Contents, credential)
                    .await
            }
        }
    }
    /// A vault and its credentials (their records; no value).
    pub async fn vault_with_credentials(
        &self,
        account: &AccountId,
        id: &VaultId,
    ) -> Result<(Vault, Vec<Credential>), CoreError> {
        let vault = self.get_vault(account, id).await?;
        Ok((vault, self.store.list_credentials(id).await?))
    }

    pub async fn list_credentials(
        &self,
        account: &AccountId,
        vault: &VaultId,
    ) -> Result<Vec<Credential>, CoreError> {
        self.get_vault(account, vault).await?;
        Ok(self.store.list_credentials(vault).await?)
    }
    pub async fn rotate_credential(
        &self,
        account: &AccountId,
        vault: &VaultId,
        id: &CredentialId,
        value: SecretValue,
    ) -> Result<Credential, CoreError> {
        check_value(&value)?;
        let mut credential = self
            .list_credentials(account, vault)
            .await?
            .into_iter()
            .find(|c| &c.id == id)
            .ok_or_else(|| CoreError::not_found("credential", id))?;
        let sealed = self
            .keyring
            .seal(id.as_str(), &value)
            .map_err(sealing_failed)?;
        let now = Timestamp::now();
        self.store.reseal_credential(id, &sealed, Some(now)).await?;
        credential.rotated_at = Some(now);
        self.changed(account, vault, VaultChange::Contents, credential)
            .await
    }
    pub async fn delete_credential(
        &self,
        account: &AccountId,
        vault: &VaultId,
        id: &CredentialId,
    ) -> Result<(), CoreError> {
        self.get_vault(account, vault).await?;
        if !self.store.delete_credential(vault, id).await? {
            return Err(CoreError::not_found("credential", id));
        }
        self.changed(account, vault, VaultChange::Contents, ())
            .await
    }
    /// The secrets of `vaults` as env vars (for one command, or a VM's
    /// vaults replaced). Every vault must be the caller's (another
    /// account's is not found).
    pub async fn command_secrets(
        &self,
        account: &AccountId,
        vaults: &[VaultId],
    ) -> Result<Vec<(String, String)>, CoreError> {
        for id in vaults {
            self.get_vault(account, id).await?;
        }
        self.vault_env(account, vaults)
            .await
            .map_err(CoreError::Unavailable)
    }
    /// The variables the vaults give a VM, all or nothing: a vault that is
    /// missing (or another account's) or a value that does not open fails
    /// the whole set, with an error naming which.
    pub async fn vault_env(
        &self,
        account: &AccountId,
        vaults: &[VaultId],
    ) -> Result<Vec<(String, String)>, String> {
        let mut env: Vec<(String, String)> = Vec::new();
        for id in vaults {
            match self.store.get_vault(account, id).await {
                Ok(Some(_)) => {}
                Ok(None) => return Err(format!("vault {id} not found")),
                Err(e) => return Err(format!("vault {id} could not be read: {e}")),
            }
            let sealed = self
                .store
                .sealed_credentials(id)
                .await
                .map_err(|e| format!("vault {id} could not be read: {e}"))?;
            // A credential a service injects on the way out is never in
            // the sandbox: its name holds a placeholder.
            let injected = self
                .injected_credentials(id)
                .await
                .map_err(|e| format!("vault {id} could not be read: {e}"))?;
            for (credential, sealed) in sealed {
                let value = if injected.contains(&credential.name) {
                    placeholder_for(&credential.name)
                } else {
                    self.keyring
                        .open(credential.id.as_str(), &sealed)
                        .map_err(|e| format!("vault {id}, credential {}: {e}", credential.name))?
                        .0
                };
                env.retain(|(k, _)| *k != credential.name);
                env.push((credential.name, value));
            }
        }
        Ok(env)
    }
}

/// Re-seals every value sealed under an older master key with the
/// current one: at start, so a rotated key can then be dropped, and by
/// `paddock rotate-master-key` over the store alone.
pub async fn reseal_secrets(store: &dyn Store, keyring: &Keyring) -> Result<usize, CoreError> {
    let stale = store.sealed_under_other_keys(keyring.current_id()).await?;
    let n = stale.len();
    for (id, sealed) in stale {
        let value = keyring.open(id.as_str(), &sealed).map_err(sealing_failed)?;
        let fresh = keyring.seal(id.as_str(), &value).map_err(sealing_failed)?;
        store.reseal_credential(&id, &fresh, None).await?;
    }
    // Custom domains' DNS credentials are sealed the same way.
    let domains = store
        .domain_credentials_under_other_keys(keyring.current_id())
        .await?;
    let n = n + domains.len();
    for (id, domain, sealed) in domains {
        let aad = crate::domains::credentials_aad(&domain);
        let value = keyring.open(&aad, &sealed).map_err(sealing_failed)?;
        let fresh = keyring.seal(&aad, &value).map_err(sealing_failed)?;
        store.reseal_domain_credentials(id, &fresh).await?;
    }
    // And webhook endpoints' signing secrets.
    let hooks = store
        .webhook_secrets_under_other_keys(keyring.current_id())
        .await?;
    let n = n + hooks.len();
    for (id, sealed) in hooks {
        let aad = crate::networking::webhooks::secret_aad(&id);
        let value = keyring.open(&aad, &sealed).map_err(sealing_failed)?;
        let fresh = keyring.seal(&aad, &value).map_err(sealing_failed)?;
        store.set_webhook_secret(&id, &fresh).await?;
    }
    // And the keys VMs' records keep sealed (a suspended VM's memory key,
    // a VM's vault CA key).
    let vms = store
        .list_vms_in(&crate::model::VmStatusSet::of(&[
            crate::model::VmStatus::Creating,
            crate::model::VmStatus::Running,
            crate::model::VmStatus::Stopping,
            crate::model::VmStatus::Stopped,
            crate::model::VmStatus::Suspended,
        ]))
        .await?;
    let mut n = n;
    for mut vm in vms {
        if crate::vms::sealed_keys::reseal_vm_keys(keyring, &mut vm)? {
            store.update_vm(&vm).await?;
            n += 1;
        }
    }
    if n > 0 {
        tracing::info!(
            count = n,
            "re-sealed vault secrets under the current master key"
        );
    }
    Ok(n)
}
