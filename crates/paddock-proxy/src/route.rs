//! Which share a request is for, and whether it may go through.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use paddock_core::ids::ShareId;
use paddock_core::model::Share;
use paddock_core::service::Service;
use paddock_core::shares::ShareRoute;
use paddock_core::CoreError;

use crate::auth::{self, Access};
use crate::forward::{self, Backend, ProxyBody};
use crate::ProxyConfig;

/// The path prefix of the path form.
const PATH_PREFIX: &str = "/_share/";

pub struct Router {
    service: Arc<Service>,
    config: ProxyConfig,
    backend: Backend,
    /// Routes by share, valid while the service's share generation is the
    /// one they were read at.
    cache: GenerationCache<ShareId, Arc<ShareRoute>>,
    /// Custom domains' shares (or their absence), cached the same way.
    domains: GenerationCache<String, Option<ShareId>>,
}

/// The share a request names and how much of its path names it.
struct Target {
    share: ShareId,
    /// `/_share/{label}` in the path form, stripped before forwarding.
    strip: Option<String>,
}

/// The host a request is for, without its port, lowercase.
fn request_host(req: &Request<Incoming>) -> String {
    req.uri()
        .host()
        .map(str::to_owned)
        .or_else(|| {
            req.headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name).to_owned())
        })
        .unwrap_or_default()
        .to_ascii_lowercase()
}

pub fn text(status: StatusCode, body: &str) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(body.to_owned()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl Router {
    pub fn new(service: Arc<Service>, config: ProxyConfig) -> Self {
        Self {
            service,
            config,
            backend: Backend::new(),
            cache: GenerationCache::default(),
            domains: GenerationCache::default(),
        }
    }

    pub async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        tls: bool,
    ) -> Response<ProxyBody> {
        if let Some((vm, port)) = self.published_port(&request_host(&req)) {
            return match self.service.vms().published_port_route(&vm, port).await {
                Ok(route) => {
                    let target = SocketAddr::from((route.address, port));
                    let upstream = match self.upstream(route.node.as_ref(), &vm, target).await {
                        Ok(upstream) => upstream,
                        Err(resp) => return resp,
                    };
                    forward::forward(&self.backend, req, upstream, None, peer, tls).await
                }
                Err(CoreError::NotFound { .. }) => {
                    text(StatusCode::NOT_FOUND, "no such sandbox port\n")
                }
                Err(CoreError::Unavailable(m)) => text(StatusCode::BAD_GATEWAY, &format!("{m}\n")),
                Err(e) => {
                    tracing::error!(error = %e, "sandbox port lookup failed");
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "sandbox port lookup failed\n",
                    )
                }
            };
        }
        let target = match self.target(&req) {
            Some(t) => t,
            None => match self.domain_share(&request_host(&req)).await {
                Some(share) => Target { share, strip: None },
                None => return text(StatusCode::NOT_FOUND, "no share at this address\n"),
            },
        };
        let route = match self.route(&target.share).await {
            Ok(r) => r,
            Err(CoreError::NotFound { .. }) => {
                return text(StatusCode::NOT_FOUND, "no such share\n")
            }
            Err(CoreError::Unavailable(m)) => {
                return text(StatusCode::BAD_GATEWAY, &format!("{m}\n"))
            }
            Err(e) => {
                tracing::error!(error = %e, "share lookup failed");
                return text(StatusCode::SERVICE_UNAVAILABLE, "share lookup failed\n");
            }
        };
        let req = if route.share.is_public {
            req
        } else {
            match auth::check(
                &self.service,
                &route.share,
                req,
                target.strip.as_deref(),
                tls,
            )
            .await
            {
                Access::Granted(req) => req,
                Access::Respond(resp) => return resp,
            }
        };
        let vm_target = SocketAddr::from((route.address, route.share.port));
        let upstream = match self
            .upstream(route.node.as_ref(), &route.share.vm_id, vm_target)
            .await
        {
            Ok(upstream) => upstream,
            Err(resp) => return resp,
        };
        forward::forward(
            &self.backend,
            req,
            upstream,
            target.strip.as_deref(),
            peer,
            tls,
        )
        .await
    }

    /// The way to `target` of VM `vm`: directly on this host, or through
    /// its node (`node`) when it runs on another.
    async fn upstream(
        &self,
        node: Option<&paddock_core::ids::NodeId>,
        vm: &paddock_core::ids::VmId,
        target: SocketAddr,
    ) -> Result<forward::Upstream, Response<ProxyBody>> {
        let Some(node) = node else {
            return Ok(forward::Upstream::Here(target));
        };
        match self
            .service
            .vms()
            .open_port_on(node, vm, target.port())
            .await
        {
            Ok(stream) => Ok(forward::Upstream::Tunnel { stream, target }),
            Err(e) => {
                tracing::debug!(error = %paddock_core::error::error_chain(&e), %node, "share through another node failed");
                Err(text(
                    StatusCode::BAD_GATEWAY,
                    &format!(
                        "nothing answers on port {} of the VM (through node {node})\n",
                        target.port()
                    ),
                ))
            }
        }
    }

    /// Whether TLS for `host` is worth a certificate: a share host or a
    /// custom domain.
    pub async fn routes_host(&self, host: &str) -> bool {
        self.share_label(host).is_some()
            || self.published_port(host).is_some()
            || self.domain_share(host).await.is_some()
    }

    /// `{port}-{vm id}.{domain}`: a port of a VM that publishes its ports
    /// (E2B's sandbox host names).
    fn published_port(&self, host: &str) -> Option<(paddock_core::ids::VmId, u16)> {
        let (port, vm) = self.host_label(host)?.split_once('-')?;
        let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
        Some((vm.parse().ok()?, port))
    }

    fn share_label(&self, host: &str) -> Option<ShareId> {
        Share::id_for_label(self.host_label(host)?)
    }

    /// `label` of a `{label}.{domain}` host.
    fn host_label<'h>(&self, host: &'h str) -> Option<&'h str> {
        host.strip_suffix(self.config.domain.as_str())?
            .strip_suffix('.')
            .filter(|l| !l.is_empty() && !l.contains('.'))
    }

    /// The share a custom domain routes to, cached like routes.
    async fn domain_share(&self, host: &str) -> Option<ShareId> {
        if host.is_empty() {
            return None;
        }
        let generation = self.service.shares().share_generation();
        if let Some(share) = self.domains.get(host, generation) {
            return share;
        }
        let share = match self.service.shares().custom_domain_share(host).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "custom domain lookup failed");
                return None;
            }
        };
        self.domains
            .insert(host.to_owned(), share.clone(), generation);
        share
    }

    fn target(&self, req: &Request<Incoming>) -> Option<Target> {
        let host = request_host(req);
        if let Some(label) = self.host_label(&host) {
            return Share::id_for_label(label).map(|share| Target { share, strip: None });
        }
        let rest = req.uri().path().strip_prefix(PATH_PREFIX)?;
        let label = rest.split('/').next()?;
        Share::id_for_label(label).map(|share| Target {
            share,
            strip: Some(format!("{PATH_PREFIX}{label}")),
        })
    }

    async fn route(&self, id: &ShareId) -> Result<Arc<ShareRoute>, CoreError> {
        let generation = self.service.shares().share_generation();
        if let Some(route) = self.cache.get(id, generation) {
            self.service.vms().note_share_traffic(&route.share.vm_id);
            return Ok(route);
        }
        let route = Arc::new(self.service.vms().share_route(id).await?);
        self.cache
            .insert(id.clone(), Arc::clone(&route), generation);
        Ok(route)
    }
}

/// Values read from the service, valid while its share generation (bumped
/// by every share or custom domain change) is the one they were read at.
struct GenerationCache<K, V> {
    entries: Mutex<HashMap<K, (V, u64)>>,
}

impl<K, V> Default for GenerationCache<K, V> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

/// Entries kept at most; past it the cache starts over.
const CACHE_ENTRIES: usize = 10_000;

impl<K: std::hash::Hash + Eq, V: Clone> GenerationCache<K, V> {
    fn get<Q>(&self, key: &Q, generation: u64) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let entries = self.entries.lock().ok()?;
        entries
            .get(key)
            .filter(|(_, g)| *g == generation)
            .map(|(v, _)| v.clone())
    }

    fn insert(&self, key: K, value: V, generation: u64) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() > CACHE_ENTRIES {
                entries.clear();
            }
            entries.insert(key, (value, generation));
        }
    }
}
