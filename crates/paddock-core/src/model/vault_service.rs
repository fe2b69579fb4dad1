//! Vault services: hosts whose requests from a VM get one of its vaults'
//! credentials added on paddock's egress path, so the sandbox never holds
//! the secret; and what that path needs and reports.

use crate::clock::Timestamp;
use crate::ids::{AccountId, VaultId, VaultServiceId, VmId};

use super::SecretValue;

/// A host bound to a credential of a vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultService {
    pub id: VaultServiceId,
    pub vault_id: VaultId,
    pub account_id: AccountId,
    /// A lowercase DNS name, without port.
    pub host: String,
    pub auth: ServiceAuth,
    pub description: Option<String>,
    pub enabled: bool,
    pub created_at: Timestamp,
}

/// How a service's credential goes into a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAuth {
    /// `Authorization: Bearer <credential>`.
    Bearer { credential: String },
    /// `<header>: <credential>` (`api-key` in the SDK's words).
    Header { header: String, credential: String },
    /// `Authorization: Basic base64(<username>:<credential>)`.
    Basic {
        username: String,
        credential: String,
    },
    /// `placeholder` in the request's path replaced by the credential.
    UrlPath {
        credential: String,
        placeholder: String,
    },
}

/// What was wrong with an `auth_config`: the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfigError {
    pub field: &'static str,
    pub message: String,
}

impl ServiceAuth {
    /// The name of the vault credential it uses.
    pub fn credential(&self) -> &str {
        match self {
            Self::Bearer { credential }
            | Self::Header { credential, .. }
            | Self::Basic { credential, .. }
            | Self::UrlPath { credential, .. } => credential,
        }
    }

    /// What goes into each request once the credential is `secret`.
    pub fn injection(&self, secret: &SecretValue) -> Injection {
        use base64::Engine as _;
        match self {
            Self::Bearer { .. } => Injection::Header {
                name: "authorization".into(),
                value: SecretValue(format!("Bearer {}", secret.0)),
            },
            Self::Header { header, .. } => Injection::Header {
                name: header.to_ascii_lowercase(),
                value: secret.clone(),
            },
            Self::Basic { username, .. } => Injection::Header {
                name: "authorization".into(),
                value: SecretValue(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{}", secret.0))
                )),
            },
            Self::UrlPath { placeholder, .. } => Injection::InPath {
                placeholder: placeholder.clone(),
                value: secret.clone(),
            },
        }
    }

    /// As the API shows it (the SDK's `auth_config`): names, never values.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Bearer { credential } => {
                serde_json::json!({"type": "bearer", "token": credential})
            }
            Self::Header { header, credential } => {
                serde_json::json!({"type": "api-key", "header": header, "key": credential})
            }
            Self::Basic {
                username,
                credential,
            } => serde_json::json!(
                {"type": "basic", "username": username, "password": credential}
            ),
            Self::UrlPath {
                credential,
                placeholder,
            } => serde_json::json!(
                {"type": "url-path", "token": credential, "placeholder": placeholder}
            ),
        }
    }

    /// Reads an `auth_config` as the SDK and CLI send it. `credential` is
    /// accepted for the credential's name in every type.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, AuthConfigError> {
        let Some(object) = v.as_object() else {
            return Err(AuthConfigError {
                field: "auth_config",
                message: "must be an object".into(),
            });
        };
        let text = |field: &'static str, names: &[&str]| -> Result<String, AuthConfigError> {
            let value = names
                .iter()
                .find_map(|n| object.get(*n))
                .and_then(serde_json::Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty());
            match value {
                Some(s) if s.len() <= 256 => Ok(s.to_owned()),
                Some(_) => Err(AuthConfigError {
                    field,
                    message: "at most 256 characters".into(),
                }),
                None => Err(AuthConfigError {
                    field,
                    message: "required for this auth type".into(),
                }),
            }
        };
        let kind = text("auth_config.type", &["type"])?;
        match kind.as_str() {
            "bearer" => Ok(Self::Bearer {
                credential: text("auth_config.token", &["token", "credential"])?,
            }),
            "api-key" | "header" => {
                let header = text("auth_config.header", &["header"])?;
                let valid = header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
                if !valid || header.eq_ignore_ascii_case("host") {
                    return Err(AuthConfigError {
                        field: "auth_config.header",
                        message: "a header name: letters, digits, '-' and '_' (not Host)".into(),
                    });
                }
                Ok(Self::Header {
                    header,
                    credential: text("auth_config.key", &["key", "credential"])?,
                })
            }
            "basic" => {
                let username = text("auth_config.username", &["username"])?;
                if username.contains(':') {
                    return Err(AuthConfigError {
                        field: "auth_config.username",
                        message: "may not contain ':'".into(),
                    });
                }
                Ok(Self::Basic {
                    username,
                    credential: text("auth_config.password", &["password", "credential"])?,
                })
            }
            "url-path" => {
                let credential = text("auth_config.token", &["token", "credential"])?;
                let placeholder = match object.get("placeholder") {
                    None => credential.clone(),
                    Some(_) => text("auth_config.placeholder", &["placeholder"])?,
                };
                Ok(Self::UrlPath {
                    credential,
                    placeholder,
                })
            }
            other => Err(AuthConfigError {
                field: "auth_config.type",
                message: format!(
                    "'{other}' is not one of bearer, api-key (or header), basic, url-path"
                ),
            }),
        }
    }
}

/// One credential as paddock's egress path adds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injection {
    /// The header set to the value, replacing what the sandbox sent.
    Header { name: String, value: SecretValue },
    /// The placeholder in the request's path replaced by the value.
    InPath {
        placeholder: String,
        value: SecretValue,
    },
}

/// A VM's certificate authority for its vault services: trusted inside
/// its sandbox, its key held by the server only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultCa {
    pub cert_pem: String,
    pub key_pem: SecretValue,
}

/// One host the egress path intercepts for a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptedService {
    pub service_id: VaultServiceId,
    pub vault_id: VaultId,
    pub host: String,
    /// The name of the credential it adds (for the request log).
    pub credential_name: String,
    pub injection: Injection,
}

/// What the egress path does for one VM's vault services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interception {
    pub vm_id: VmId,
    pub account_id: AccountId,
    pub ca: VaultCa,
    pub services: Vec<InterceptedService>,
}

/// One request the egress path sent on with a credential: no body, no
/// query, no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptedRequest {
    pub vm_id: VmId,
    pub account_id: AccountId,
    pub vault_id: VaultId,
    pub service_id: VaultServiceId,
    pub host: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub duration_ms: u64,
    /// The name of the credential the service added.
    pub credential_name: String,
}

/// An intercepted request as the vault's log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultRequestLog {
    pub id: i64,
    pub request: InterceptedRequest,
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn auth_configs_read_as_the_sdk_sends_them_and_show_no_values() {
        let bearer =
            ServiceAuth::from_json(&json!({"type": "bearer", "token": "OPENAI"})).expect("bearer");
        assert_eq!(bearer.credential(), "OPENAI");
        assert_eq!(
            bearer.injection(&SecretValue("sk-1".into())),
            Injection::Header {
                name: "authorization".into(),
                value: SecretValue("Bearer sk-1".into())
            }
        );
        let header =
            ServiceAuth::from_json(&json!({"type": "api-key", "header": "X-Api-Key", "key": "K"}))
                .expect("header");
        assert_eq!(header.to_json()["header"], "X-Api-Key");
        let basic =
            ServiceAuth::from_json(&json!({"type": "basic", "username": "u", "password": "P"}))
                .expect("basic");
        assert_eq!(
            basic.injection(&SecretValue("pw".into())),
            Injection::Header {
                name: "authorization".into(),
                value: SecretValue("Basic dTpwdw==".into())
            }
        );
        let path =
            ServiceAuth::from_json(&json!({"type": "url-path", "token": "TG"})).expect("url-path");
        assert_eq!(path.to_json()["placeholder"], "TG");
        for (bad, field) in [
            (json!("bearer"), "auth_config"),
            (json!({"type": "magic"}), "auth_config.type"),
            (json!({"type": "bearer"}), "auth_config.token"),
            (json!({"type": "api-key", "key": "K"}), "auth_config.header"),
            (
                json!({"type": "api-key", "header": "Host", "key": "K"}),
                "auth_config.header",
            ),
            (
                json!({"type": "api-key", "header": "a b", "key": "K"}),
                "auth_config.header",
            ),
            (
                json!({"type": "basic", "username": "a:b", "password": "P"}),
                "auth_config.username",
            ),
        ] {
            assert_eq!(
                ServiceAuth::from_json(&bad).map_err(|e| e.field),
                Err(field),
                "{bad}"
            );
        }
    }
}
