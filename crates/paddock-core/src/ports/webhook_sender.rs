//! The outbound HTTP port of webhooks: checks where an endpoint URL
//! leads and POSTs deliveries there. Implemented in the binary (reqwest),
//! which refuses loopback, link-local, private and metadata addresses
//! unless the operator allows them, and connects to the very address it
//! checked (so a name cannot be re-pointed between check and send).

use async_trait::async_trait;

#[async_trait]
pub trait WebhookSender: Send + Sync + 'static {
    /// Why `url` may not receive webhooks, if it may not: not http(s),
    /// no host, a host that does not resolve or resolves to a refused
    /// address.
    async fn check_url(&self, url: &str) -> Result<(), String>;

    /// POSTs `body` with `headers`; the answer's status, or why there was
    /// none (refused address, connection error, timeout).
    async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        timeout: std::time::Duration,
    ) -> Result<u16, String>;
}

/// A server without outbound webhooks: every URL is refused.
pub struct NoWebhooks;

#[async_trait]
impl WebhookSender for NoWebhooks {
    async fn check_url(&self, _url: &str) -> Result<(), String> {
        Err("this server sends no webhooks".into())
    }

    async fn post(
        &self,
        _url: &str,
        _headers: &[(String, String)],
        _body: Vec<u8>,
        _timeout: std::time::Duration,
    ) -> Result<u16, String> {
        Err("this server sends no webhooks".into())
    }
}
