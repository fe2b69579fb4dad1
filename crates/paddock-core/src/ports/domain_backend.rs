//! The DNS port: makes and removes the records that point custom domains
//! at this server. Implemented by `paddock-net` (RFC 2136 dynamic update
//! with TSIG).

use async_trait::async_trait;

use crate::model::DnsCredentials;

#[async_trait]
pub trait DomainBackend: Send + Sync + 'static {
    /// Checks a provider's credentials without using them; the error
    /// names the bad key (`server`) and what is wrong.
    fn check_credentials(
        &self,
        provider: &str,
        credentials: &DnsCredentials,
    ) -> Result<(), (String, String)>;

    /// Points `domain` at this server.
    async fn publish(
        &self,
        provider: &str,
        credentials: &DnsCredentials,
        domain: &str,
    ) -> Result<(), String>;

    /// Removes the record `publish` made.
    async fn unpublish(
        &self,
        provider: &str,
        credentials: &DnsCredentials,
        domain: &str,
    ) -> Result<(), String>;
}

/// For servers and tools that make no DNS records.
pub struct NoDomains;

#[async_trait]
impl DomainBackend for NoDomains {
    fn check_credentials(
        &self,
        provider: &str,
        _credentials: &DnsCredentials,
    ) -> Result<(), (String, String)> {
        Err((
            "dns_provider".into(),
            format!("{provider}: this server makes no DNS records"),
        ))
    }

    async fn publish(&self, _: &str, _: &DnsCredentials, _: &str) -> Result<(), String> {
        Err("this server makes no DNS records".into())
    }

    async fn unpublish(&self, _: &str, _: &DnsCredentials, _: &str) -> Result<(), String> {
        Ok(())
    }
}
