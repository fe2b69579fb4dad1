//! Custom domains: a hostname of the user's that routes to one of their
//! shares, with a DNS record made through a DNS provider and TLS served
//! by the share proxy.

use std::collections::BTreeMap;

use crate::clock::Timestamp;
use crate::ids::{AccountId, ShareId};
use crate::model::DomainPattern;

/// The DNS providers paddock can make records with.
pub const DNS_PROVIDERS: &[&str] = &["rfc2136"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainStatus {
    /// Recorded; its DNS record is not made yet.
    Pending,
    /// Its DNS record exists and its certificate is served.
    Issued,
    /// The DNS record could not be made (`last_error` says why).
    Failed,
}

impl DomainStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Issued => "issued",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Issued, Self::Failed]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

#[derive(Debug, Clone)]
pub struct CustomDomain {
    pub id: i64,
    pub account_id: AccountId,
    pub share_id: ShareId,
    /// Lowercase, without a trailing dot.
    pub domain: String,
    pub dns_provider: Option<String>,
    pub status: DomainStatus,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A hostname a user may point at a share: a domain name with at least
/// two labels and no wildcard.
pub fn validate_domain(raw: &str) -> Result<String, &'static str> {
    if raw.starts_with('*') {
        return Err("must be a hostname such as app.example.com (no wildcard)");
    }
    DomainPattern::parse(raw)
        .map(|d| d.as_str().to_owned())
        .map_err(|_| "must be a hostname such as app.example.com")
}

/// DNS provider credentials, as given (sealed before they are stored).
pub type DnsCredentials = BTreeMap<String, String>;
