//! Shares: a VM's port published through the share proxy at
//! `{host}.{share_domain}`, public or behind a token.

use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::ids::{AccountId, ShareId, VmId};

#[derive(Debug, Clone)]
pub struct Share {
    pub id: ShareId,
    pub account_id: AccountId,
    pub vm_id: VmId,
    pub port: u16,
    pub is_public: bool,
    /// SHA-256 of the access token of a private share.
    pub token_hash: String,
    pub created_at: Timestamp,
}

impl Share {
    /// The DNS label the proxy routes by: the id without its prefix
    /// (lowercase letters and digits only).
    pub fn host_label(&self) -> &str {
        self.id
            .as_str()
            .strip_prefix(ShareId::PREFIX)
            .unwrap_or(self.id.as_str())
    }

    /// The share a host label names, if it is one.
    pub fn id_for_label(label: &str) -> Option<ShareId> {
        format!("{}{}", ShareId::PREFIX, label.to_ascii_lowercase())
            .parse()
            .ok()
    }
}

/// A secret given out once: a share's access token or a one-time login
/// token. 40 random alphanumerics (238 bits), so a plain SHA-256 is a safe
/// stored form.
#[derive(Clone)]
pub struct ShareSecret(String);

impl ShareSecret {
    pub fn generate() -> Self {
        Self(Alphanumeric.sample_string(&mut rand::rng(), 40))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> String {
        hash_token(&self.0)
    }
}

impl std::fmt::Debug for ShareSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShareSecret(<redacted>)")
    }
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new share and the secrets that are shown only now.
#[derive(Debug, Clone)]
pub struct NewShare {
    pub share: Share,
    /// The access token (private shares only).
    pub token: Option<ShareSecret>,
    /// A one-time token that, in the URL's query, sets the access cookie.
    pub login: Option<ShareSecret>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_reject_junk() {
        let id = ShareId::generate();
        let share = Share {
            id: id.clone(),
            account_id: AccountId::generate(),
            vm_id: VmId::generate(),
            port: 80,
            is_public: true,
            token_hash: String::new(),
            created_at: Timestamp::now(),
        };
        assert_eq!(Share::id_for_label(share.host_label()), Some(id));
        assert_eq!(Share::id_for_label("a.b"), None);
        assert_eq!(Share::id_for_label(""), None);
    }
}
