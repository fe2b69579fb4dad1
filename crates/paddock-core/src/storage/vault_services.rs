//! Vault services: a vault binds a host to one of its credentials, and a
//! VM with the vault reaches that host through paddock's egress path,
//! which adds the credential to each request on its way out. The VM's
//! environment holds a placeholder under the credential's name, never
//! the value. This is the records' side; the VMs' side (the interception
//! of running VMs) is `vms/vault_services.rs`.

use std::collections::BTreeMap;

use super::vaults::{check_description, sealing_failed, VaultChange, Vaults};
use crate::clock::Timestamp;
use crate::error::{CoreError, StoreError};
use crate::ids::{AccountId, VaultId, VaultServiceId};
use crate::model::{
    InterceptedRequest, InterceptedService, ServiceAuth, VaultRequestLog, VaultService,
};

/// A template of the catalog: a well-known API and how it authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceTemplate {
    pub id: &'static str,
    pub name: &'static str,
    pub host: &'static str,
    /// `bearer` or `api-key`.
    pub auth_type: &'static str,
    /// The header, for `api-key`.
    pub header: Option<&'static str>,
    /// The credential the service uses, by its conventional name.
    pub credential_key: &'static str,
}

impl ServiceTemplate {
    fn auth(&self) -> ServiceAuth {
        match self.header {
            Some(header) => ServiceAuth::Header {
                header: header.to_owned(),
                credential: self.credential_key.to_owned(),
            },
            None => ServiceAuth::Bearer {
                credential: self.credential_key.to_owned(),
            },
        }
    }
}

/// The catalog: common APIs and their auth shapes.
pub const CATALOG: &[ServiceTemplate] = &[
    ServiceTemplate {
        id: "openai",
        name: "OpenAI",
        host: "api.openai.com",
        auth_type: "bearer",
        header: None,
        credential_key: "OPENAI_API_KEY",
    },
    ServiceTemplate {
        id: "anthropic",
        name: "Anthropic",
        host: "api.anthropic.com",
        auth_type: "api-key",
        header: Some("x-api-key"),
        credential_key: "ANTHROPIC_API_KEY",
    },
    ServiceTemplate {
        id: "openrouter",
        name: "OpenRouter",
        host: "openrouter.ai",
        auth_type: "bearer",
        header: None,
        credential_key: "OPENROUTER_API_KEY",
    },
    ServiceTemplate {
        id: "gemini",
        name: "Google Gemini",
        host: "generativelanguage.googleapis.com",
        auth_type: "api-key",
        header: Some("x-goog-api-key"),
        credential_key: "GOOGLE_API_KEY",
    },
    ServiceTemplate {
        id: "mistral",
        name: "Mistral",
        host: "api.mistral.ai",
        auth_type: "bearer",
        header: None,
        credential_key: "MISTRAL_API_KEY",
    },
    ServiceTemplate {
        id: "groq",
        name: "Groq",
        host: "api.groq.com",
        auth_type: "bearer",
        header: None,
        credential_key: "GROQ_API_KEY",
    },
    ServiceTemplate {
        id: "huggingface",
        name: "Hugging Face",
        host: "huggingface.co",
        auth_type: "bearer",
        header: None,
        credential_key: "HF_TOKEN",
    },
    ServiceTemplate {
        id: "github",
        name: "GitHub API",
        host: "api.github.com",
        auth_type: "bearer",
        header: None,
        credential_key: "GITHUB_TOKEN",
    },
    ServiceTemplate {
        id: "stripe",
        name: "Stripe",
        host: "api.stripe.com",
        auth_type: "bearer",
        header: None,
        credential_key: "STRIPE_API_KEY",
    },
];

/// A DNS name a TLS client would send as its server name: lowercase
/// labels of letters, digits and '-', at most 253 characters, no port and
/// no address.
fn check_host(host: &str) -> Result<String, CoreError> {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let is_address = host.parse::<std::net::IpAddr>().is_ok();
    if host.is_empty() || host.len() > 253 || is_address || !host.split('.').all(label_ok) {
        return Err(CoreError::invalid(
            "host",
            "must be a DNS name (like api.openai.com): no scheme, port, path or address",
        ));
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(CoreError::invalid(
            "host",
            "must be a DNS name, not an address",
        ));
    }
    Ok(host)
}

/// The field of an `auth_config` that names its credential.
fn credential_field(auth: &ServiceAuth) -> &'static str {
    match auth {
        ServiceAuth::Bearer { .. } | ServiceAuth::UrlPath { .. } => "auth_config.token",
        ServiceAuth::Header { .. } => "auth_config.key",
        ServiceAuth::Basic { .. } => "auth_config.password",
    }
}

/// A binding as it is asked for.
#[derive(Debug, Clone)]
pub struct NewService {
    pub host: String,
    pub auth: ServiceAuth,
    pub description: Option<String>,
    pub enabled: bool,
}

/// A change to a service; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ServicePatch {
    pub auth: Option<ServiceAuth>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

impl Vaults {
    /// Binds `host` to a credential of `vault`, which must have it.
    pub async fn add_service(
        &self,
        account: &AccountId,
        vault: &VaultId,
        new: NewService,
    ) -> Result<VaultService, CoreError> {
        let service = self.insert_service(account, vault, new).await?;
        self.changed(account, vault, VaultChange::Contents, service)
            .await
    }

    async fn insert_service(
        &self,
        account: &AccountId,
        vault: &VaultId,
        new: NewService,
    ) -> Result<VaultService, CoreError> {
        self.get_vault(account, vault).await?;
        let host = check_host(&new.host)?;
        check_description(&new.description)?;
        self.check_credential_exists(vault, &new.auth).await?;
        let service = VaultService {
            id: VaultServiceId::generate(),
            vault_id: vault.clone(),
            account_id: account.clone(),
            host,
            auth: new.auth,
            description: new.description,
            enabled: new.enabled,
            created_at: Timestamp::now(),
        };
        match self.store.insert_vault_service(&service).await {
            Err(StoreError::Duplicate) => Err(CoreError::Conflict(format!(
                "vault {vault} already binds {}",
                service.host
            ))),
            other => other.map(|()| service).map_err(CoreError::from),
        }
    }

    async fn check_credential_exists(
        &self,
        vault: &VaultId,
        auth: &ServiceAuth,
    ) -> Result<(), CoreError> {
        let credentials = self.store.list_credentials(vault).await?;
        if credentials.iter().any(|c| c.name == auth.credential()) {
            return Ok(());
        }
        Err(CoreError::invalid(
            credential_field(auth),
            format!(
                "vault {vault} has no credential named {}; add it first",
                auth.credential()
            ),
        ))
    }

    pub async fn list_services(
        &self,
        account: &AccountId,
        vault: &VaultId,
    ) -> Result<Vec<VaultService>, CoreError> {
        self.get_vault(account, vault).await?;
        Ok(self.store.list_vault_services(vault).await?)
    }

    pub async fn get_service(
        &self,
        account: &AccountId,
        vault: &VaultId,
        id: &VaultServiceId,
    ) -> Result<VaultService, CoreError> {
        self.list_services(account, vault)
            .await?
            .into_iter()
            .find(|s| &s.id == id)
            .ok_or_else(|| CoreError::not_found("vault service", id))
    }

    pub async fn update_service(
        &self,
        account: &AccountId,
        vault: &VaultId,
        id: &VaultServiceId,
        patch: ServicePatch,
    ) -> Result<VaultService, CoreError> {
        let mut service = self.get_service(account, vault, id).await?;
        if let Some(auth) = patch.auth {
            self.check_credential_exists(vault, &auth).await?;
            service.auth = auth;
        }
        if patch.description.is_some() {
            check_description(&patch.description)?;
            service.description = patch.description;
        }
        if let Some(enabled) = patch.enabled {
            service.enabled = enabled;
        }
        self.store.update_vault_service(&service).await?;
        self.changed(account, vault, VaultChange::Contents, service)
            .await
    }

    pub async fn delete_service(
        &self,
        account: &AccountId,
        vault: &VaultId,
        id: &VaultServiceId,
    ) -> Result<(), CoreError> {
        self.get_vault(account, vault).await?;
        if !self.store.delete_vault_service(vault, id).await? {
            return Err(CoreError::not_found("vault service", id));
        }
        self.changed(account, vault, VaultChange::Contents, ())
            .await
    }

    /// Binds the catalog's templates `ids` (all or none): each names a
    /// credential the vault must have. A host the vault binds already is
    /// left as it is. The vault's services after.
    pub async fn add_services_from_templates(
        &self,
        account: &AccountId,
        vault: &VaultId,
        ids: &[String],
    ) -> Result<Vec<VaultService>, CoreError> {
        self.get_vault(account, vault).await?;
        if ids.is_empty() {
            return Err(CoreError::invalid(
                "template_ids",
                "name at least one template",
            ));
        }
        let mut templates = Vec::new();
        for id in ids {
            let Some(t) = CATALOG.iter().find(|t| t.id == id) else {
                return Err(CoreError::invalid(
                    "template_ids",
                    format!("no template '{id}' in the catalog (GET /v1/vaults/catalog)"),
                ));
            };
            self.check_credential_exists(vault, &t.auth())
                .await
                .map_err(|_| {
                    CoreError::invalid(
                        "template_ids",
                        format!(
                            "template '{id}' uses the credential {}, which vault {vault} does not have",
                            t.credential_key
                        ),
                    )
                })?;
            templates.push(t);
        }
        let bound = self.store.list_vault_services(vault).await?;
        for t in templates {
            if bound.iter().any(|s| s.host == t.host) {
                continue;
            }
            let new = NewService {
                host: t.host.to_owned(),
                auth: t.auth(),
                description: Some(format!("{} (template {})", t.name, t.id)),
                enabled: true,
            };
            match self.insert_service(account, vault, new).await {
                Ok(_) | Err(CoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let services = self.store.list_vault_services(vault).await?;
        self.changed(account, vault, VaultChange::Contents, services)
            .await
    }

    /// The newest `limit` requests sent with the vault's credentials.
    pub async fn request_logs(
        &self,
        account: &AccountId,
        vault: &VaultId,
        limit: u32,
    ) -> Result<Vec<VaultRequestLog>, CoreError> {
        self.get_vault(account, vault).await?;
        Ok(self.store.list_vault_requests(vault, limit).await?)
    }

    /// Keeps a request the egress path sent.
    pub async fn record_request(&self, request: &InterceptedRequest) -> Result<(), CoreError> {
        self.store
            .insert_vault_request(request, Timestamp::now())
            .await?;
        Ok(())
    }

    /// What the egress path adds for a VM with `vaults`: every enabled
    /// service with its credential's value. A later vault's binding of a
    /// host wins, as a later vault's variable does.
    pub async fn intercepted_services(
        &self,
        account: &AccountId,
        vaults: &[VaultId],
    ) -> Result<Vec<InterceptedService>, CoreError> {
        let mut by_host: BTreeMap<String, InterceptedService> = BTreeMap::new();
        for vault in vaults {
            if self.store.get_vault(account, vault).await?.is_none() {
                continue;
            }
            let services = self.store.list_vault_services(vault).await?;
            if !services.iter().any(|s| s.enabled) {
                continue;
            }
            let sealed = self.store.sealed_credentials(vault).await?;
            for service in services.into_iter().filter(|s| s.enabled) {
                let Some((credential, sealed)) = sealed
                    .iter()
                    .find(|(c, _)| c.name == service.auth.credential())
                else {
                    // Its credential was deleted: nothing to add.
                    continue;
                };
                let value = self
                    .keyring
                    .open(credential.id.as_str(), sealed)
                    .map_err(sealing_failed)?;
                by_host.insert(
                    service.host.clone(),
                    InterceptedService {
                        service_id: service.id.clone(),
                        vault_id: vault.clone(),
                        host: service.host.clone(),
                        credential_name: credential.name.clone(),
                        injection: service.auth.injection(&value),
                    },
                );
            }
        }
        Ok(by_host.into_values().collect())
    }

    /// The names of `vault`'s credentials an enabled service injects:
    /// what a VM's environment holds placeholders for.
    pub(crate) async fn injected_credentials(
        &self,
        vault: &VaultId,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .store
            .list_vault_services(vault)
            .await?
            .into_iter()
            .filter(|s| s.enabled)
            .map(|s| s.auth.credential().to_owned())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_dns_names_and_nothing_else() {
        assert_eq!(
            check_host("API.OpenAI.com.").ok().as_deref(),
            Some("api.openai.com")
        );
        for bad in [
            "",
            "https://api.openai.com",
            "api.openai.com:443",
            "api.openai.com/v1",
            "10.0.0.1",
            "-bad.example",
            "a..b",
            "under_score.example",
        ] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_catalog_has_unique_ids_and_hosts() {
        let ids: std::collections::BTreeSet<_> = CATALOG.iter().map(|t| t.id).collect();
        let hosts: std::collections::BTreeSet<_> = CATALOG.iter().map(|t| t.host).collect();
        assert_eq!(ids.len(), CATALOG.len());
        assert_eq!(hosts.len(), CATALOG.len());
        for t in CATALOG {
            assert!(check_host(t.host).is_ok(), "{}", t.host);
            assert_eq!(t.auth_type == "api-key", t.header.is_some(), "{}", t.id);
        }
    }
}
