//! HTTPS for shares and custom domains. The certificate is chosen per
//! connection from the ClientHello's SNI, after an async lookup (so a
//! certificate is made only for names that route somewhere): an operator's
//! certificate from `{certs_dir}/{name}.crt` and `.key` when present,
//! otherwise a self-signed one made with rcgen and kept in memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::LazyConfigAcceptor;

use crate::route::Router;

/// Certificates by name; built once per name and process.
pub struct Certificates {
    dir: Option<PathBuf>,
    share_domain: String,
    configs: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Certificates {
    pub fn new(dir: Option<PathBuf>, share_domain: &str) -> Self {
        Self {
            dir,
            share_domain: share_domain.to_owned(),
            configs: Mutex::new(HashMap::new()),
        }
    }

    /// The name a certificate is issued for: shares share one wildcard.
    fn cert_name(&self, sni: &str) -> String {
        let suffix = format!(".{}", self.share_domain);
        match sni.strip_suffix(&suffix) {
            Some(label) if !label.contains('.') => format!("*.{}", self.share_domain),
            _ => sni.to_owned(),
        }
    }

    /// Whether an operator's certificate exists for `name`.
    pub fn configured(&self, name: &str) -> bool {
        self.dir.as_ref().is_some_and(|d| {
            d.join(format!("{name}.crt")).is_file() && d.join(format!("{name}.key")).is_file()
        })
    }

    /// The TLS config for a server name.
    pub fn config_for(&self, sni: &str) -> Result<Arc<ServerConfig>, CertError> {
        let name = self.cert_name(sni);
        if let Ok(configs) = self.configs.lock() {
            if let Some(c) = configs.get(&name) {
                return Ok(Arc::clone(c));
            }
        }
        let (chain, key) = if self.configured(&name) {
            self.load(&name)?
        } else {
            self_signed(&name)?
        };
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| CertError::Invalid(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(|e| CertError::Invalid(format!("{name}: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let config = Arc::new(config);
        if let Ok(mut configs) = self.configs.lock() {
            if configs.len() > 10_000 {
                configs.clear();
            }
            configs.insert(name, Arc::clone(&config));
        }
        Ok(config)
    }

    fn load(
        &self,
        name: &str,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CertError> {
        let dir = self.dir.clone().unwrap_or_default();
        let (crt, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        let chain = CertificateDer::pem_file_iter(&crt)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| CertError::Invalid(format!("{}: {e}", crt.display())))?;
        let key = PrivateKeyDer::from_pem_file(&key)
            .map_err(|e| CertError::Invalid(format!("{}: {e}", key.display())))?;
        Ok((chain, key))
    }
}

fn self_signed(
    name: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CertError> {
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()])
        .map_err(|e| CertError::Invalid(format!("self-sign {name}: {e}")))?;
    let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der())
        .map_err(|e| CertError::Invalid(e.to_string()))?;
    Ok((vec![cert.cert.der().clone()], key))
}

/// Serves shares and custom domains over TLS on `listener`, within
/// `limits`: the TLS handshake, like a plain connection's first request
/// head, must be done within the head timeout.
pub async fn serve_tls(
    listener: TcpListener,
    router: Arc<Router>,
    certs: Arc<Certificates>,
    limits: paddock_listener::ConnectionLimits,
) {
    let admissions = paddock_listener::Admissions::new(limits);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "share TLS accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(admitted) = admissions.admit_or_refuse(&stream, peer) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (router, certs) = (Arc::clone(&router), Arc::clone(&certs));
        tokio::spawn(async move {
            let head_timeout = limits.head_timeout;
            let tls = tokio::time::timeout(head_timeout, handshake(stream, peer, &router, certs));
            match tls.await {
                Ok(Some(tls)) => {
                    let io = TokioIo::new(tls);
                    crate::serve_connection(io, peer, router, true, head_timeout).await;
                }
                Ok(None) => {}
                Err(_) => tracing::debug!(%peer, "TLS handshake not done in time"),
            }
            drop(admitted);
        });
    }
}

/// The TLS stream for a name that routes somewhere, or `None` (logged).
async fn handshake(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: &Router,
    certs: Arc<Certificates>,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let start = match LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, %peer, "TLS hello failed");
            return None;
        }
    };
    let sni = start
        .client_hello()
        .server_name()
        .unwrap_or_default()
        .to_ascii_lowercase();
    // Only names that route somewhere get a certificate.
    if !router.routes_host(&sni).await {
        tracing::debug!(sni = %sni, %peer, "TLS for a name that routes nowhere");
        return None;
    }
    let config = match certs.config_for(&sni) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(sni = %sni, error = %e, "no certificate");
            return None;
        }
    };
    match start.into_stream(config).await {
        Ok(tls) => Some(tls),
        Err(e) => {
            tracing::debug!(error = %e, %peer, "TLS handshake failed");
            None
        }
    }
}
