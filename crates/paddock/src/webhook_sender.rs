//! Webhook deliveries over HTTP(S), with reqwest. An endpoint's host is
//! resolved and every address it resolves to is checked before anything
//! is sent: loopback, private, link-local (the cloud metadata address
//! among them), shared, multicast and unspecified addresses, and the
//! operator's `[webhooks] blocked` ranges, are refused unless
//! `[webhooks] allow_private`. The request then goes to the very address
//! checked (the client is pinned to it), follows no redirect and uses no
//! proxy, so neither DNS nor a redirect can turn a delivery inward.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use paddock_core::model::Ipv4Cidr;
use paddock_core::ports::webhook_sender::WebhookSender;

pub struct HttpWebhookSender {
    allow_private: bool,
    blocked: Vec<Ipv4Cidr>,
}

impl HttpWebhookSender {
    pub fn new(allow_private: bool, blocked: Vec<Ipv4Cidr>) -> Self {
        Self {
            allow_private,
            blocked,
        }
    }

    /// Why `ip` may not receive webhooks, if it may not.
    fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let v4 = match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        };
        if let Some(v4) = v4 {
            if self.blocked.iter().any(|c| c.contains(v4)) {
                return Some("in a range this server blocks");
            }
        }
        if self.allow_private {
            return None;
        }
        match (v4, ip) {
            (Some(v4), _) => private_v4(v4),
            (None, IpAddr::V6(v6)) => {
                let first = v6.segments()[0];
                if v6.is_loopback() {
                    Some("a loopback address")
                } else if v6.is_unspecified() {
                    Some("the unspecified address")
                } else if v6.is_multicast() {
                    Some("a multicast address")
                } else if first & 0xfe00 == 0xfc00 {
                    Some("a unique local (private) address")
                } else if first & 0xffc0 == 0xfe80 {
                    Some("a link-local address")
                } else {
                    None
                }
            }
            (None, IpAddr::V4(_)) => None,
        }
    }

    /// The address to send to: the URL's host resolved, every address
    /// allowed.
    async fn target(&self, url: &reqwest::Url) -> Result<(String, SocketAddr), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{:?} is not http or https", url.scheme()));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("{host} does not resolve: {e}"))?
            .collect();
        let first = *addrs
            .first()
            .ok_or_else(|| format!("{host} has no address"))?;
        for addr in &addrs {
            if let Some(why) = self.refusal(addr.ip()) {
                return Err(format!(
                    "{host} resolves to {}, {why}; webhooks go to public addresses unless the \
                     server allows others ([webhooks] allow_private)",
                    addr.ip()
                ));
            }
        }
        Ok((host, first))
    }
}

fn private_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address (the cloud metadata service among them)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT) address")
    } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || a == 0 {
        Some("not a unicast address")
    } else {
        None
    }
}

fn parse(url: &str) -> Result<reqwest::Url, String> {
    reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))
}

#[async_trait]
impl WebhookSender for HttpWebhookSender {
    async fn check_url(&self, url: &str) -> Result<(), String> {
        let url = parse(url)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("a webhook URL may not carry credentials".into());
        }
        self.target(&url).await.map(|_| ())
    }

    async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<u16, String> {
        let parsed = parse(url)?;
        let (host, addr) = self.target(&parsed).await?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .resolve(&host, addr)
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let mut request = client.post(parsed).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) => Ok(response.status().as_u16()),
            Err(e) if e.is_timeout() => Err(format!("no answer within {}s", timeout.as_secs())),
            Err(e) if e.is_connect() => Err(format!("could not connect: {e}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inward_urls_are_refused_unless_allowed() {
        let strict = HttpWebhookSender::new(false, Vec::new());
        for url in [
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://10.1.2.3/hook",
            "http://[::1]/hook",
            "http://100.64.0.1/hook",
            "ftp://example.org/hook",
            "http://user:pw@127.0.0.1/",
            "not a url",
        ] {
            assert!(strict.check_url(url).await.is_err(), "{url}");
        }
        assert!(strict.check_url("http://93.184.216.34/hook").await.is_ok());
        let open =
            HttpWebhookSender::new(true, vec![Ipv4Cidr::parse("10.9.0.0/16").expect("cidr")]);
        assert!(open.check_url("http://127.0.0.1:9/hook").await.is_ok());
        let blocked = open.check_url("http://10.9.1.1/hook").await;
        assert!(blocked.is_err_and(|e| e.contains("blocks")));
    }
}
