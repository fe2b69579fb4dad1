//! Requests of a session's page to this server's shares (`*.{domain}`),
//! carried to the share proxy by the server. The sandbox cannot reach the
//! host, and the share domain may resolve to loopback (`*.localhost`): the
//! browser pauses such a request (the DevTools `Fetch` domain), the server
//! sends it to the proxy as a client on the internet would, and answers
//! the browser with the proxy's response. Everything else the page loads
//! goes out through the sandbox's own network, under its egress policy.

use std::net::SocketAddr;

use base64::Engine;
use serde_json::{json, Value};

use super::cdp::Cdp;

/// Headers of the proxy's response that described its connection, not the
/// response the browser gets whole.
const HOP_BY_HOP: [&str; 4] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
];

/// The most bytes of one carried response.
const MAX_BODY_BYTES: usize = 64 << 20;

#[derive(Clone)]
pub(crate) struct ShareRoute {
    pub domain: String,
    pub proxy: SocketAddr,
    pub client: reqwest::Client,
    /// The session's VM, whose egress policy decides whether its page may
    /// reach a share host (as it would decide for the host's address).
    pub core: std::sync::Arc<paddock_core::service::Service>,
    pub account: paddock_core::ids::AccountId,
    pub vm: paddock_core::ids::VmId,
}

impl ShareRoute {
    /// The browser's patterns for the requests it pauses; [`is_share_host`]
    /// decides precisely (a pattern's `*` also matches longer names).
    pub(crate) fn patterns(&self) -> Value {
        json!([
            {"urlPattern": format!("http://*.{}/*", self.domain), "requestStage": "Request"},
            {"urlPattern": format!("http://*.{}:*", self.domain), "requestStage": "Request"},
        ])
    }

    /// Answers one paused request: through the proxy when it is for a
    /// share host, else let go unchanged.
    pub(crate) async fn answer(self, cdp: Cdp, paused: Value) {
        let Some(request_id) = paused["requestId"].as_str().map(str::to_owned) else {
            return;
        };
        let request = &paused["request"];
        let url = request["url"].as_str().unwrap_or_default();
        let target = share_target(url, &self.domain);
        if let Some((authority, _)) = &target {
            if !self.allowed(authority).await {
                let refused = json!({"requestId": request_id, "errorReason": "AccessDenied"});
                if let Err(e) = cdp.call("Fetch.failRequest", refused).await {
                    tracing::debug!(error = %e, "could not refuse a browser request");
                }
                return;
            }
        }
        let answered = match target {
            Some((authority, path)) => match self.carry(request, &authority, &path).await {
                Ok(response) => {
                    let mut fulfil = response;
                    fulfil["requestId"] = json!(request_id);
                    cdp.call("Fetch.fulfillRequest", fulfil).await
                }
                Err(e) => {
                    tracing::debug!(url, error = %e, "a share request from a browser session failed");
                    cdp.call(
                        "Fetch.failRequest",
                        json!({"requestId": request_id, "errorReason": "ConnectionFailed"}),
                    )
                    .await
                }
            },
            None => {
                cdp.call("Fetch.continueRequest", json!({"requestId": request_id}))
                    .await
            }
        };
        if let Err(e) = answered {
            tracing::debug!(error = %e, "could not answer a paused browser request");
        }
    }

    /// Whether the session's egress policy lets its page reach `authority`
    /// by name over HTTP, read at each request (a policy changes live).
    async fn allowed(&self, authority: &str) -> bool {
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        match self.core.vms().get_vm_egress(&self.account, &self.vm).await {
            Ok(policy) => policy.resolves(host),
            Err(_) => false,
        }
    }

    /// Sends the request to the share proxy; the browser's answer to it.
    async fn carry(&self, request: &Value, authority: &str, path: &str) -> Result<Value, String> {
        let method = request["method"]
            .as_str()
            .unwrap_or("GET")
            .parse::<reqwest::Method>()
            .map_err(|e| e.to_string())?;
        let mut outgoing = self
            .client
            .request(method, format!("http://{}{path}", self.proxy))
            .header(reqwest::header::HOST, authority);
        if let Some(headers) = request["headers"].as_object() {
            for (name, value) in headers {
                // The body comes back to the browser as it is sent, so it
                // is asked for without a content coding.
                if ["host", "accept-encoding"]
                    .iter()
                    .any(|h| name.eq_ignore_ascii_case(h))
                {
                    continue;
                }
                if let Some(value) = value.as_str() {
                    outgoing = outgoing.header(name.as_str(), value);
                }
            }
        }
        if let Some(body) = request["postData"].as_str() {
            outgoing = outgoing.body(body.to_owned());
        }
        let mut response = outgoing.send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let headers: Vec<Value> = response
            .headers()
            .iter()
            .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()))
            .filter_map(|(name, value)| {
                Some(json!({"name": name.as_str(), "value": value.to_str().ok()?}))
            })
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(format!("the response is over {MAX_BODY_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(json!({
            "responseCode": status,
            "responseHeaders": headers,
            "body": base64::engine::general_purpose::STANDARD.encode(body),
        }))
    }
}

/// The authority (`host[:port]`) and path of `url` when its host is a
/// share host: a name under `domain`.
fn share_target(url: &str, domain: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let path = path.split('#').next().unwrap_or("/");
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    if authority.contains('@') {
        return None;
    }
    let host = host.to_ascii_lowercase();
    let under = host.strip_suffix(&domain.to_ascii_lowercase())?;
    (under.len() > 1 && under.ends_with('.')).then(|| (authority.to_owned(), path))
}

#[cfg(test)]
mod tests {
    use super::share_target;

    #[test]
    fn only_names_under_the_share_domain_are_share_hosts() {
        assert_eq!(
            share_target("http://sh-1.localhost:7421/form?x=1#top", "localhost"),
            Some(("sh-1.localhost:7421".into(), "/form?x=1".into()))
        );
        assert_eq!(
            share_target("http://a.b.localhost", "localhost"),
            Some(("a.b.localhost".into(), "/".into()))
        );
        assert_eq!(share_target("http://localhost:7421/", "localhost"), None);
        assert_eq!(share_target("http://x.evillocalhost/", "localhost"), None);
        assert_eq!(
            share_target("http://x.localhost.evil.com/", "localhost"),
            None
        );
        assert_eq!(share_target("https://x.localhost/", "localhost"), None);
        assert_eq!(share_target("http://user@x.localhost/", "localhost"), None);
    }
}
