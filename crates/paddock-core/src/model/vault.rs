//! Vaults: named secrets an account keeps for its VMs. Values are
//! write-only: they leave the server only into a VM's environment.

use crate::clock::Timestamp;
use crate::ids::{AccountId, CredentialId, VaultId};

#[derive(Debug, Clone)]
pub struct Vault {
    pub id: VaultId,
    pub account_id: AccountId,
    pub name: String,
    pub description: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A secret's metadata; its value is never part of this record.
#[derive(Debug, Clone)]
pub struct Credential {
    pub id: CredentialId,
    pub vault_id: VaultId,
    /// The env var it becomes in a VM.
    pub name: String,
    pub credential_type: String,
    pub description: Option<String>,
    pub created_at: Timestamp,
    pub rotated_at: Option<Timestamp>,
}

/// A secret value sealed under the master key: nonce and ciphertext
/// (with its tag), and the key's id so rotation knows what to re-seal.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A secret value in memory; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(pub String);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}
