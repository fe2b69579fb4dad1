//! Vault services on the egress path. For the hosts a VM's vaults bind,
//! the resolver answers the VM with its gateway's address, and this proxy
//! on the gateway's port 443 terminates the VM's TLS with a certificate
//! for that host from the VM's own certificate authority (which paddock
//! installed in the sandbox's trust store), adds the service's credential
//! to each request, and sends it on to the real host over TLS verified
//! against the host's roots. The sandbox holds a placeholder, never the
//! secret. Other names resolve as before and their traffic is untouched;
//! a VM without services, a name its vaults do not bind, or one its
//! egress policy does not let it resolve, is closed without a word.
//!
//! Written here rather than with a proxy crate: the work is one
//! TLS-terminating hop with a header set, which hyper and rustls do, and
//! what decides it (which VM, which host, which credential) is paddock's.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use paddock_core::model::{
    Injection, InterceptedRequest, InterceptedService, Interception, Ipv4Cidr, VaultCa,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedSender;

/// How long a VM has to send its TLS hello, and the real host to answer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// The interceptions in force, by VM address.
pub type Interceptions = Arc<RwLock<HashMap<Ipv4Addr, Arc<VmInterception>>>>;

/// One VM's services, and the certificate authority its sandbox trusts.
pub struct VmInterception {
    spec: Interception,
    issuer: Issuer<'static, KeyPair>,
    /// The TLS config (a leaf certificate from the CA) of each host
    /// served so far.
    configs: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
}

impl VmInterception {
    pub fn new(spec: Interception) -> Result<Self, String> {
        let key =
            KeyPair::from_pem(&spec.ca.key_pem.0).map_err(|e| format!("the VM's CA key: {e}"))?;
        let params = ca_params(spec.vm_id.as_str()).map_err(|e| e.to_string())?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            spec,
            configs: Mutex::new(HashMap::new()),
        })
    }

    /// The service for `host`, if the VM's vaults bind it.
    pub fn service(&self, host: &str) -> Option<&InterceptedService> {
        self.spec.services.iter().find(|s| s.host == host)
    }

    /// The TLS config that presents a certificate for `host` from the
    /// VM's CA, HTTP/1.1 only (made once per host).
    fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut configs = self.configs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(config) = configs.get(host) {
            return Ok(Arc::clone(config));
        }
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = CertificateParams::new(vec![host.to_owned()])
            .and_then(|p| p.signed_by(&key, &self.issuer))
            .map_err(|e| e.to_string())?;
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing =
            rustls::crypto::ring::sign::any_supported_type(&private).map_err(|e| e.to_string())?;
        let leaf = Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing));
        let mut config = rustls::ServerConfig::builder_with_provider(crypto())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(OneCert(leaf)));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        configs.insert(host.to_owned(), Arc::clone(&config));
        Ok(config)
    }
}

/// The CA's parameters: the same when it is made and when it signs, so
/// only its key needs keeping.
fn ca_params(vm: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("paddock vault services {vm}"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "paddock");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// A new certificate authority for `vm`'s sandbox.
pub fn issue_ca(vm: &str) -> Result<VaultCa, rcgen::Error> {
    let key = KeyPair::generate()?;
    let cert = ca_params(vm)?.self_signed(&key)?;
    Ok(VaultCa {
        cert_pem: cert.pem(),
        key_pem: paddock_core::model::SecretValue(key.serialize_pem()),
    })
}

/// Where the proxy sends a host's requests, and whom it trusts there.
pub struct Upstreams {
    tls: Arc<rustls::ClientConfig>,
    /// The resolvers VMs' lookups are forwarded to: a bound host resolves
    /// for the proxy as it would for the VM.
    dns: Vec<SocketAddr>,
    /// Fixed addresses by host (`[network] vault_upstreams`): the
    /// operator's split horizon, and how the tests reach their server.
    overrides: HashMap<String, SocketAddr>,
    /// Ranges a looked-up address may not be in (what no VM reaches).
    blocked: Vec<Ipv4Cidr>,
}

impl Upstreams {
    /// The host's roots, and `extra_roots` (PEM certificates) beside them.
    pub fn new(
        extra_roots: &[CertificateDer<'static>],
        dns: Vec<SocketAddr>,
        overrides: HashMap<String, SocketAddr>,
        blocked: Vec<Ipv4Cidr>,
    ) -> Result<Self, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        for cert in extra_roots {
            let _ = roots.add(cert.clone());
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(crypto())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: Arc::new(tls),
            dns,
            overrides: overrides
                .into_iter()
                .map(|(h, a)| (h.to_ascii_lowercase(), a))
                .collect(),
            blocked,
        })
    }

    /// A verified TLS connection to `host`.
    async fn connect(
        &self,
        host: &str,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let address = match self.overrides.get(host) {
            Some(a) => *a,
            None => self.resolve(host).await?,
        };
        let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
        let connect = async {
            let tcp = TcpStream::connect(address)
                .await
                .map_err(|e| format!("connect to {host} ({address}): {e}"))?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {host}: {e}"))
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, connect)
            .await
            .map_err(|_| format!("{host} did not answer in time"))?
    }

    /// The first IPv4 address of `host` outside the blocked ranges, from
    /// the first resolver that answers.
    async fn resolve(&self, host: &str) -> Result<SocketAddr, String> {
        use hickory_proto::op::{Message, Query};
        use hickory_proto::rr::{Name, RData, RecordType};
        let name =
            Name::from_ascii(format!("{host}.")).map_err(|e| format!("look up {host}: {e}"))?;
        let mut query = Message::new();
        // Any id: the reply is matched on it, and only this query uses
        // the socket.
        let id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u16);
        query
            .set_id(id)
            .set_recursion_desired(true)
            .add_query(Query::query(name, RecordType::A));
        let bytes = query.to_vec().map_err(|e| format!("look up {host}: {e}"))?;
        for upstream in &self.dns {
            let asked = tokio::time::timeout(
                crate::dns::UPSTREAM_TIMEOUT,
                crate::dns::forward_udp(*upstream, &bytes),
            )
            .await;
            let Ok(Ok(reply)) = asked else { continue };
            let Ok(reply) = Message::from_vec(&reply) else {
                continue;
            };
            let reachable = reply.answers().iter().find_map(|r| match r.data() {
                RData::A(a) if !self.blocked.iter().any(|c| c.contains(a.0)) => Some(a.0),
                _ => None,
            });
            if let Some(ip) = reachable {
                return Ok(SocketAddr::from((ip, 443)));
            }
            return Err(format!("{host} has no address a VM may reach"));
        }
        Err(format!("no resolver answered for {host}"))
    }
}

/// Serves the vault proxy on `bind` (a segment's gateway, port 443).
pub async fn serve(
    bind: SocketAddr,
    interceptions: Interceptions,
    policies: crate::dns::Policies,
    upstreams: Arc<Upstreams>,
    log: UnboundedSender<InterceptedRequest>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(bind).await?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let IpAddr::V4(vm) = peer.ip() else { continue };
            // Small writes (a response's head, then its body) go at once:
            // with Nagle, the second waits on the VM's delayed ACK.
            let _ = stream.set_nodelay(true);
            let interception = interceptions
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&vm)
                .cloned();
            let Some(interception) = interception else {
                continue;
            };
            let (upstreams, log) = (Arc::clone(&upstreams), log.clone());
            let policies = Arc::clone(&policies);
            tokio::spawn(async move {
                let allowed = |host: &str| {
                    policies
                        .read()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(&vm)
                        .is_some_and(|p| p.resolves(host))
                };
                if let Err(e) = intercept(stream, interception, &allowed, upstreams, log).await {
                    tracing::debug!(vm = %vm, error = %e, "vault service connection ended");
                }
            });
        }
    });
    Ok(())
}

/// One connection from a VM: TLS as the host it asked for, then each
/// request on to that host with the credential.
async fn intercept(
    stream: TcpStream,
    vm: Arc<VmInterception>,
    allowed: &(dyn Fn(&str) -> bool + Sync),
    upstreams: Arc<Upstreams>,
    log: UnboundedSender<InterceptedRequest>,
) -> Result<(), String> {
    let acceptor =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor)
        .await
        .map_err(|_| "no TLS hello in time".to_owned())?
        .map_err(|e| format!("TLS hello: {e}"))?;
    let host = start
        .client_hello()
        .server_name()
        .map(str::to_ascii_lowercase)
        .ok_or("no server name in the TLS hello")?;
    let Some(service) = vm.service(&host).cloned() else {
        return Err(format!("{host} is not a service of this VM's vaults"));
    };
    // The VM's egress policy still decides whether it reaches the host.
    if !allowed(&host) {
        return Err(format!("the VM's egress policy does not reach {host}"));
    }
    let config = vm.server_config(&host)?;
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, start.into_stream(config))
        .await
        .map_err(|_| "TLS handshake took too long".to_owned())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let upstream = match upstreams.connect(&host).await {
        Ok(u) => {
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(u))
                .await
                .map_err(|e| format!("HTTP with {host}: {e}"))?;
            tokio::spawn(connection);
            Ok(Arc::new(tokio::sync::Mutex::new(sender)))
        }
        Err(e) => Err(e),
    };
    let forwarding = Forwarding {
        vm,
        service,
        upstream,
        log,
    };
    let forwarding = Arc::new(forwarding);
    hyper::server::conn::http1::Builder::new()
        .serve_connection(
            TokioIo::new(tls),
            hyper::service::service_fn(move |request| {
                let forwarding = Arc::clone(&forwarding);
                async move { forwarding.forward(request).await }
            }),
        )
        .await
        .map_err(|e| e.to_string())
}

type Sender = hyper::client::conn::http1::SendRequest<Incoming>;
type Body = http_body_util::Either<Incoming, http_body_util::Full<bytes::Bytes>>;

/// What one intercepted connection forwards through.
struct Forwarding {
    vm: Arc<VmInterception>,
    service: InterceptedService,
    /// The connection to the real host, or why there is none.
    upstream: Result<Arc<tokio::sync::Mutex<Sender>>, String>,
    log: UnboundedSender<InterceptedRequest>,
}

impl Forwarding {
    async fn forward(&self, mut request: Request<Incoming>) -> Result<Response<Body>, String> {
        let began = Instant::now();
        // Logged as the sandbox sent it: the path may carry a placeholder,
        // never the secret.
        let (method, path) = (
            request.method().to_string(),
            request.uri().path().to_owned(),
        );
        let outcome = match &self.upstream {
            Ok(sender) => match inject(&self.service.injection, &mut request) {
                Ok(()) => sender
                    .lock()
                    .await
                    .send_request(request)
                    .await
                    .map(|r| r.map(http_body_util::Either::Left))
                    .map_err(|e| format!("{}: {e}", self.service.host)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e.clone()),
        };
        let response = outcome.unwrap_or_else(|e| {
            tracing::debug!(host = %self.service.host, error = %e, "vault service request failed");
            let body = serde_json::json!({ "detail": format!("paddock vault service: {e}") });
            let mut r = Response::new(http_body_util::Either::Right(http_body_util::Full::new(
                bytes::Bytes::from(body.to_string()),
            )));
            *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        });
        let _ = self.log.send(InterceptedRequest {
            vm_id: self.vm.spec.vm_id.clone(),
            account_id: self.vm.spec.account_id.clone(),
            vault_id: self.service.vault_id.clone(),
            service_id: self.service.service_id.clone(),
            host: self.service.host.clone(),
            method,
            path,
            status: response.status().as_u16(),
            duration_ms: began.elapsed().as_millis() as u64,
            credential_name: self.service.credential_name.clone(),
        });
        Ok(response)
    }
}

/// Puts the credential into `request`: its header set (replacing what
/// the sandbox sent under that name, its placeholder), or its placeholder
/// in the path replaced.
fn inject(injection: &Injection, request: &mut Request<Incoming>) -> Result<(), String> {
    match injection {
        Injection::Header { name, value } => {
            let name = hyper::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("the service's header: {e}"))?;
            let mut value = hyper::header::HeaderValue::from_str(&value.0)
                .map_err(|_| "the credential is not a valid header value".to_owned())?;
            value.set_sensitive(true);
            request.headers_mut().insert(name, value);
        }
        Injection::InPath { placeholder, value } => {
            let target = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".into());
            if target.contains(placeholder.as_str()) {
                *request.uri_mut() = target
                    .replace(placeholder.as_str(), &value.0)
                    .parse()
                    .map_err(|_| "the credential does not fit in a path".to_owned())?;
            }
        }
    }
    Ok(())
}

/// The TLS implementation both sides use: ring's, whatever the process
/// installed as its default.
fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server certificate resolver with one certificate.
#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}
