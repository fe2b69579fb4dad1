//! Custom domains: a user's hostname routed to one of their shares. The
//! service checks and records it, seals the DNS provider's credentials,
//! makes the DNS record through the DNS port, and tells the proxy which
//! share a hostname goes to.

use crate::clock::Timestamp;
use crate::error::error_chain;
use crate::error::CoreError;
use crate::ids::{AccountId, ShareId};
use crate::model::{
    validate_domain, CustomDomain, DnsCredentials, DomainStatus, SecretValue, DNS_PROVIDERS,
};

/// What the sealed credentials are bound to, so a sealed value cannot be
/// moved to another domain's row.
pub(crate) fn credentials_aad(domain: &str) -> String {
    format!("custom-domain:{domain}")
}

fn already_routed(domain: &str) -> CoreError {
    CoreError::Conflict(format!("the domain {domain} is already routed"))
}

impl super::shares::Shares {
    /// Records `domain` for one of the account's shares and, with a DNS
    /// provider, makes its record. Bad input changes nothing; a DNS
    /// failure leaves the domain `failed` with the reason (retry with
    /// `verify_custom_domain`).
    pub async fn create_custom_domain(
        &self,
        account: &AccountId,
        share: &ShareId,
        domain: &str,
        provider: Option<&str>,
        credentials: Option<DnsCredentials>,
    ) -> Result<CustomDomain, CoreError> {
        let domain = self.check_custom_domain(domain, provider, credentials.as_ref())?;
        self.get_share(account, share).await?;
        let sealed = match (&provider, &credentials) {
            (Some(_), Some(c)) => {
                let json = serde_json::to_string(c).map_err(|e| {
                    CoreError::Unavailable(format!("encode the DNS credentials: {e}"))
                })?;
                Some(
                    self.keyring
                        .seal(&credentials_aad(&domain), &SecretValue(json))
                        .map_err(|e| CoreError::Unavailable(format!("seal: {e}")))?,
                )
            }
            _ => None,
        };
        let now = Timestamp::now();
        let mut record = CustomDomain {
            id: 0,
            account_id: account.clone(),
            share_id: share.clone(),
            domain,
            dns_provider: provider.map(str::to_owned),
            status: DomainStatus::Pending,
            last_error: None,
            created_at: now,
            updated_at: now,
        };
        record.id = self
            .store
            .insert_domain(&record, sealed.as_ref())
            .await
            .map_err(|e| match e {
                crate::StoreError::Duplicate => already_routed(&record.domain),
                other => other.into(),
            })?;
        self.share_changed();
        self.publish_domain(&mut record).await?;
        Ok(record)
    }

    /// [`Self::check_custom_domain`], and that no share routes the name
    /// yet: all a create can know before it makes anything. Returns the
    /// hostname, normalized.
    pub async fn check_new_custom_domain(
        &self,
        domain: &str,
        provider: Option<&str>,
        credentials: Option<&DnsCredentials>,
    ) -> Result<String, CoreError> {
        let name = self.check_custom_domain(domain, provider, credentials)?;
        if self.store.find_domain(&name).await?.is_some() {
            return Err(already_routed(&name));
        }
        Ok(name)
    }

    /// Checks a custom domain request without touching anything: the
    /// hostname, the provider and its credentials. Returns the hostname,
    /// normalized.
    pub fn check_custom_domain(
        &self,
        domain: &str,
        provider: Option<&str>,
        credentials: Option<&DnsCredentials>,
    ) -> Result<String, CoreError> {
        let domain = validate_domain(domain).map_err(|m| CoreError::invalid("domain", m))?;
        match provider {
            Some(p) => {
                if !DNS_PROVIDERS.contains(&p) {
                    return Err(CoreError::invalid(
                        "dns_provider",
                        format!(
                            "{p:?} is not supported; supported providers: {}",
                            DNS_PROVIDERS.join(", ")
                        ),
                    ));
                }
                let creds = credentials.cloned().unwrap_or_default();
                self.domain_dns
                    .check_credentials(p, &creds)
                    .map_err(|(key, m)| CoreError::invalid(format!("dns_credentials.{key}"), m))?;
            }
            None if credentials.is_some_and(|c| !c.is_empty()) => {
                return Err(CoreError::invalid(
                    "dns_provider",
                    "dns_credentials need a dns_provider",
                ));
            }
            None => {}
        }
        Ok(domain)
    }

    /// Makes the domain's DNS record (when it has a provider) and records
    /// the outcome.
    async fn publish_domain(&self, record: &mut CustomDomain) -> Result<(), CoreError> {
        let outcome = match &record.dns_provider {
            None => Ok(()),
            Some(provider) => match self.domain_credentials(record).await {
                Ok(creds) => {
                    self.domain_dns
                        .publish(provider, &creds, &record.domain)
                        .await
                }
                Err(e) => Err(error_chain(&e)),
            },
        };
        match outcome {
            Ok(()) => {
                record.status = DomainStatus::Issued;
                record.last_error = None;
            }
            Err(e) => {
                tracing::warn!(domain = %record.domain, error = %e, "DNS record failed");
                record.status = DomainStatus::Failed;
                record.last_error = Some(e);
            }
        }
        record.updated_at = Timestamp::now();
        self.store.update_domain_status(record).await?;
        Ok(())
    }

    async fn domain_credentials(&self, record: &CustomDomain) -> Result<DnsCredentials, CoreError> {
        let Some(sealed) = self.store.domain_credentials(record.id).await? else {
            return Ok(DnsCredentials::new());
        };
        let json = self
            .keyring
            .open(&credentials_aad(&record.domain), &sealed)
            .map_err(|e| CoreError::Unavailable(format!("open the DNS credentials: {e}")))?;
        serde_json::from_str(&json.0)
            .map_err(|e| CoreError::Unavailable(format!("decode the DNS credentials: {e}")))
    }

    pub async fn get_custom_domain(
        &self,
        account: &AccountId,
        id: i64,
    ) -> Result<CustomDomain, CoreError> {
        self.store
            .get_domain(account, id)
            .await?
            .ok_or_else(|| CoreError::not_found("custom domain", id))
    }

    pub async fn list_custom_domains(
        &self,
        account: &AccountId,
    ) -> Result<Vec<CustomDomain>, CoreError> {
        Ok(self.store.list_domains(account).await?)
    }

    /// Tries the DNS record again.
    pub async fn verify_custom_domain(
        &self,
        account: &AccountId,
        id: i64,
    ) -> Result<CustomDomain, CoreError> {
        let mut record = self.get_custom_domain(account, id).await?;
        self.publish_domain(&mut record).await?;
        Ok(record)
    }

    /// Removes the route and, best effort, the DNS record.
    pub async fn delete_custom_domain(
        &self,
        account: &AccountId,
        id: i64,
    ) -> Result<(), CoreError> {
        let record = self.get_custom_domain(account, id).await?;
        if let Some(provider) = &record.dns_provider {
            match self.domain_credentials(&record).await {
                Ok(creds) => {
                    if let Err(e) = self
                        .domain_dns
                        .unpublish(provider, &creds, &record.domain)
                        .await
                    {
                        tracing::warn!(domain = %record.domain, error = %e, "could not remove a DNS record");
                    }
                }
                Err(e) => {
                    tracing::warn!(domain = %record.domain, error = %error_chain(&e), "DNS credentials unreadable")
                }
            }
        }
        self.store.delete_domain(account, id).await?;
        self.share_changed();
        Ok(())
    }

    /// The share a custom hostname routes to, for the proxy.
    pub async fn custom_domain_share(&self, host: &str) -> Result<Option<ShareId>, CoreError> {
        Ok(self
            .store
            .find_domain(&host.trim_end_matches('.').to_ascii_lowercase())
            .await?
            .map(|d| d.share_id))
    }
}
