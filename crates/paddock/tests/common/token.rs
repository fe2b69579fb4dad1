//! A registry that wants bearer tokens, and the token service that issues
//! them: the Docker token flow, with a self-signed ES256 key. The token
//! service checks basic credentials before it issues a token.
#![allow(dead_code)]

use std::net::TcpListener;

use base64::Engine;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

pub struct TokenService {
    pub realm: String,
    pub cert_pem: String,
    _server: tokio::task::JoinHandle<()>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TokenService {
    /// Issues tokens to `user:password` for `service`, signed by a fresh key.
    pub async fn start(user: &str, password: &str, service: &str) -> Self {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["paddock-token".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let cert_der_std = base64::engine::general_purpose::STANDARD.encode(cert.der());
        let signer = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .expect("signer");
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let service = service.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("port");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        let signer = std::sync::Arc::new(signer);
        let app = axum::Router::new().route(
            "/token",
            axum::routing::get(
                move |headers: axum::http::HeaderMap, axum::extract::RawQuery(q): axum::extract::RawQuery| {
                    let (signer, expected, service, cert) = (signer.clone(), expected.clone(), service.clone(), cert_der_std.clone());
                    async move {
                        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
                        if auth != expected {
                            return (axum::http::StatusCode::UNAUTHORIZED, "bad credentials".to_owned());
                        }
                        // scope=repository:NAME:pull,push (URL-encoded)
                        let q = q.unwrap_or_default().replace("%3A", ":").replace("%2C", ",").replace("%2F", "/");
                        let access: Vec<serde_json::Value> = q
                            .split('&')
                            .filter_map(|kv| kv.strip_prefix("scope="))
                            .filter_map(|s| {
                                let mut p = s.splitn(3, ':');
                                let (kind, name, actions) = (p.next()?, p.next()?, p.next()?);
                                Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
                            })
                            .collect();
                        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [cert]});
                        let claims = serde_json::json!({
                            "iss": "paddock-test", "sub": "puller", "aud": service,
                            "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}"),
                            "access": access,
                        });
                        let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
                        let sig = signer.sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes()).expect("sign");
                        let token = format!("{signing_input}.{}", b64(sig.as_ref()));
                        (axum::http::StatusCode::OK, serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string())
                    }
                },
            ),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            realm: format!("http://127.0.0.1:{port}/token"),
            cert_pem: cert.pem(),
            _server: server,
        }
    }
}
