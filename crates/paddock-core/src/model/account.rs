//! Accounts and the API keys that act for them.

use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::ids::{AccountId, ApiKeyId};

#[derive(Debug, Clone)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub created_at: Timestamp,
}

/// A stored API key: its public id and prefix, never the secret.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub account_id: AccountId,
    pub name: String,
    /// The first characters of the secret, to tell keys apart in listings.
    pub prefix: String,
    /// The user of the account the key acts for.
    pub user_email: String,
    pub description: Option<String>,
    pub created_at: Timestamp,
    /// After this the key answers 401, as a revoked one.
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// `SHA256:` and the first 16 hex digits of the secret's hash: tells
    /// keys apart without saying anything of the secret.
    pub fingerprint: String,
}

impl ApiKey {
    /// Whether the key acts at `now`: not revoked, not expired.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// The fingerprint of a key with this secret hash.
pub fn key_fingerprint(hash: &str) -> String {
    format!("SHA256:{}", hash.get(..16).unwrap_or(hash))
}

/// What a new key is made with, besides its account.
#[derive(Debug, Clone, Default)]
pub struct KeySettings {
    pub name: String,
    pub description: Option<String>,
    pub expires_at: Option<Timestamp>,
    /// The user the key acts for; the account's administrator when absent.
    pub user_email: Option<String>,
}

/// A change to a key: each field set is replaced; `expires_at` set to
/// `None` clears the expiry.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub expires_at: Option<Option<Timestamp>>,
}

/// Who a request acts as: an account, and one of its users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub account_id: AccountId,
    pub user_email: String,
}

/// The user a key acts for when it was made without one: the account's
/// administrator.
pub const DEFAULT_USER_EMAIL: &str = "admin@localhost";

/// Checks a user's email address: one `@` between a local part and a
/// domain, printable ASCII, no spaces.
pub fn validate_email(email: &str) -> Result<(), String> {
    let ok = email.len() <= 254
        && email.chars().all(|c| c.is_ascii_graphic())
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if ok {
        Ok(())
    } else {
        Err(format!("{email:?} is not an email address"))
    }
}

/// The secret of a key, shown once at creation. Its `Debug` hides it so it
/// cannot reach a log by accident.
#[derive(Clone)]
pub struct ApiKeySecret(String);

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKeySecret(<redacted>)")
    }
}

/// What a key's secret starts with, which says what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `pdk_…`: an API key.
    Api,
    /// `fabro_dev_…`: a dev token, as the definitions surface's clients
    /// send them. It authenticates like an API key everywhere.
    DevToken,
}

impl KeyKind {
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Api => "pdk_",
            Self::DevToken => "fabro_dev_",
        }
    }
}

impl ApiKeySecret {
    pub fn generate() -> Self {
        Self::generate_kind(KeyKind::Api)
    }

    pub fn generate_kind(kind: KeyKind) -> Self {
        Self(format!(
            "{}{}",
            kind.prefix(),
            Alphanumeric.sample_string(&mut rand::rng(), 40)
        ))
    }

    pub fn from_presented(s: &str) -> Self {
        Self(s.trim().to_owned())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The stored form. Keys carry 238 bits of randomness, so a plain
    /// SHA-256 is as safe as a slow password hash here and keeps the
    /// per-request check at microseconds.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    pub fn display_prefix(&self) -> String {
        self.0.chars().take(10).collect()
    }
}

/// What a store needs to insert a key.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub key: ApiKey,
    pub hash: String,
}

impl NewApiKey {
    pub fn generate(account_id: AccountId, name: &str, user_email: &str) -> (Self, ApiKeySecret) {
        Self::generate_kind(account_id, name, user_email, KeyKind::Api)
    }

    pub fn generate_kind(
        account_id: AccountId,
        name: &str,
        user_email: &str,
        kind: KeyKind,
    ) -> (Self, ApiKeySecret) {
        let secret = ApiKeySecret::generate_kind(kind);
        let hash = secret.hash();
        let key = ApiKey {
            id: ApiKeyId::generate(),
            account_id,
            name: name.to_owned(),
            prefix: secret.display_prefix(),
            user_email: user_email.to_owned(),
            description: None,
            created_at: Timestamp::now(),
            expires_at: None,
            revoked_at: None,
            fingerprint: key_fingerprint(&hash),
        };
        (Self { key, hash }, secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let s = ApiKeySecret::generate();
        assert!(!format!("{s:?}").contains(s.expose()));
        assert_eq!(s.hash().len(), 64);
        assert_eq!(ApiKeySecret::from_presented(s.expose()).hash(), s.hash());
    }

    #[test]
    fn emails_are_checked() {
        assert!(validate_email("a@b.c").is_ok());
        for bad in ["", "a", "@b", "a@", "a b@c", "a@b@c"] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }
}
