//! Identifiers. Each is valid once constructed: generated here, or parsed
//! from input with [`FromStr`], so functions below take ids, not strings.

use std::fmt;
use std::str::FromStr;

use rand::distr::{Alphanumeric, SampleString};

/// Why a string is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(pub &'static str);

fn random_suffix(len: usize) -> String {
    Alphanumeric
        .sample_string(&mut rand::rng(), len)
        .to_ascii_lowercase()
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $len:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = InvalidId;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, random_suffix($len)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let rest = s
                    .strip_prefix($prefix)
                    .ok_or(InvalidId(concat!("must start with '", $prefix, "'")))?;
                if rest.is_empty() || rest.len() > 64 || !rest.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(InvalidId(concat!("must be '", $prefix, "' followed by 1 to 64 letters or digits")));
                }
                Ok(Self(s.to_owned()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A VM (sandbox) id, `vm_` and 20 lowercase letters or digits.
    VmId, "vm_", 20
);
prefixed_id!(
    /// A paddock process that runs sandboxes, in a store several share.
    NodeId, "node_", 12
);
prefixed_id!(
    /// An account id.
    AccountId, "acct_", 16
);
prefixed_id!(
    /// An API key's public id (never the secret).
    ApiKeyId, "key_", 16
);
prefixed_id!(
    /// An asynchronous execution (task) id.
    ExecutionId, "task_", 20
);
prefixed_id!(
    /// A snapshot: a VM's filesystem captured as an image.
    SnapshotId, "snap_", 20
);
prefixed_id!(
    /// A persistent volume.
    VolumeId, "vol_", 20
);
prefixed_id!(
    /// A volume checkpoint.
    CheckpointId, "ckpt_", 20
);
prefixed_id!(
    /// A vault of secrets.
    VaultId, "vault_", 20
);
prefixed_id!(
    /// One secret in a vault.
    CredentialId, "cred_", 20
);
prefixed_id!(
    /// A host bound to one of a vault's credentials.
    VaultServiceId, "vsvc_", 20
);
prefixed_id!(
    /// A webhook endpoint.
    WebhookEndpointId, "whe_", 20
);
prefixed_id!(
    /// One delivery of an event to a webhook endpoint.
    WebhookDeliveryId, "whd_", 20
);
prefixed_id!(
    /// An audit event.
    AuditEventId, "evt_", 20
);
prefixed_id!(
    /// A share: one port of a VM published through the share proxy. The
    /// part after `shr_` is the share's host label.
    ShareId, "shr_", 20
);

/// A session id: chosen by the client or generated (a UUID, as InstaVM's
/// clients expect). 1 to 128 of `[A-Za-z0-9._-]`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct SessionId(String);

impl SessionId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SessionId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 128 || !s.chars().all(is_token_char) {
            return Err(InvalidId(
                "must be 1 to 128 letters, digits, '.', '_' or '-'",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A PTY session id inside one VM: chosen by the client or generated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PtyId(String);

impl PtyId {
    pub fn generate() -> Self {
        Self(format!("pty_{}", random_suffix(12)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PtyId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 64 || !s.chars().all(is_token_char) {
            return Err(InvalidId(
                "must be 1 to 64 letters, digits, '.', '_' or '-'",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for PtyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let id = VmId::generate();
        assert_eq!(id.as_str().len(), 23);
        assert_eq!(id.as_str().parse::<VmId>().as_ref(), Ok(&id));
        let s = SessionId::generate();
        assert_eq!(s.as_str().parse::<SessionId>().as_ref(), Ok(&s));
    }

    #[test]
    fn rejects_bad_ids() {
        for bad in ["", "vm_", "vm_../x", "xx_abc", "vm_a/b", "vm_ABC d"] {
            assert!(bad.parse::<VmId>().is_err(), "{bad}");
        }
        for bad in ["", "a/b", "..\u{0}", &"x".repeat(129)] {
            assert!(bad.parse::<SessionId>().is_err(), "{bad}");
        }
    }
}
