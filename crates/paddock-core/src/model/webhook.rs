//! Webhooks: endpoints an account registers, and the deliveries of events
//! to them. A delivery is a POST of the event as JSON, signed with the
//! endpoint's secret (`InstaVM-Signature: t=…,v1=…`, HMAC-SHA256 over
//! `t.body`), retried with backoff until the endpoint answers 2xx or the
//! tries run out.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::clock::Timestamp;
use crate::ids::{AccountId, WebhookDeliveryId, WebhookEndpointId};

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEndpoint {
    pub id: WebhookEndpointId,
    pub account_id: AccountId,
    pub url: String,
    pub description: Option<String>,
    /// Event types this endpoint receives: exact (`vm.terminated`), a
    /// group (`vm.*`) or everything (`*`).
    pub event_patterns: Vec<String>,
    pub enabled: bool,
    pub timeout_seconds: u32,
    /// Tries after the first before a delivery is marked failed.
    pub max_retries: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl WebhookEndpoint {
    pub fn wants(&self, event_type: &str) -> bool {
        self.enabled
            && self
                .event_patterns
                .iter()
                .any(|p| pattern_matches(p, event_type))
    }
}

/// `*`, `group.*` or an exact type.
pub fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDelivery {
    pub id: WebhookDeliveryId,
    pub account_id: AccountId,
    pub endpoint_id: WebhookEndpointId,
    /// The event's id: the same in every delivery of one event (and in
    /// its replays), so receivers can drop duplicates.
    pub event_id: String,
    pub event_type: String,
    /// The body POSTed: the event as JSON, exactly as signed.
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Which deliveries to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub endpoint_id: Option<WebhookEndpointId>,
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<String>,
    /// Deliveries older than this position (a page's cursor).
    pub before_seq: Option<i64>,
    pub limit: u32,
}

/// The `InstaVM-Signature` value of `body` signed at `t` (Unix seconds)
/// with `secret`.
pub fn webhook_signature(secret: &str, t: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// How long before the try after `attempts` tries: exponential from 2 s,
/// at most an hour, with up to 25% jitter either way.
pub fn retry_delay_ms(attempts: u32, jitter: f64) -> i64 {
    let base = 2_000f64 * 2f64.powi(attempts.min(16) as i32);
    let capped = base.min(3_600_000.0);
    let factor = 1.0 + (jitter.clamp(0.0, 1.0) - 0.5) / 2.0;
    (capped * factor) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_types_groups_and_everything() {
        assert!(pattern_matches("*", "vm.created"));
        assert!(pattern_matches("vm.*", "vm.created"));
        assert!(!pattern_matches("vm.*", "snapshot.ready"));
        assert!(pattern_matches("vm.terminated", "vm.terminated"));
        assert!(!pattern_matches("vm.terminated", "vm.terminated.extra"));
    }

    /// The same value the `instavm` SDK's `compute_signature` gives
    /// (hmac.new(secret, f"{t}.".encode() + body, sha256)).
    #[test]
    fn signatures_are_hmac_sha256_over_t_dot_body() {
        let sig = webhook_signature("whsec_test", 1_700_000_000, b"{\"a\":1}");
        assert_eq!(
            sig,
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn retries_back_off_exponentially_with_jitter_and_a_cap() {
        assert_eq!(retry_delay_ms(0, 0.5), 2_000);
        assert_eq!(retry_delay_ms(3, 0.5), 16_000);
        assert_eq!(retry_delay_ms(30, 0.5), 3_600_000);
        assert_eq!(retry_delay_ms(0, 0.0), 1_500);
        assert_eq!(retry_delay_ms(0, 1.0), 2_500);
    }
}
