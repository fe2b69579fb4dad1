//! Access to private shares: the token in a header, basic auth or the
//! share's cookie, which a one-time login URL sets.

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};
use paddock_core::model::Share;
use paddock_core::service::Service;

use crate::forward::ProxyBody;
use crate::route::text;

pub const TOKEN_HEADER: &str = "x-share-token";
pub const LOGIN_PARAM: &str = "paddock_login";

pub enum Access {
    /// Forward this request (credentials removed).
    Granted(Request<Incoming>),
    /// Answer with this instead (401, or the login redirect).
    Respond(Response<ProxyBody>),
}

fn cookie_name(share: &Share) -> String {
    format!("paddock_share_{}", share.host_label())
}

/// Checks a request to a private share; never contacts the VM.
pub async fn check(
    service: &Service,
    share: &Share,
    mut req: Request<Incoming>,
    path_prefix: Option<&str>,
    tls: bool,
) -> Access {
    if let Some(login) = query_param(req.uri().query(), LOGIN_PARAM) {
        return Access::Respond(
            login_redirect(service, share, &req, &login, path_prefix, tls).await,
        );
    }
    let presented = presented_tokens(&req, share);
    if presented
        .iter()
        .any(|t| service.shares().share_token_matches(share, t))
    {
        strip_credentials(&mut req, share);
        return Access::Granted(req);
    }
    let mut r = text(
        StatusCode::UNAUTHORIZED,
        "this share is private: present its token\n",
    );
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"paddock share\""),
    );
    Access::Respond(r)
}

/// Every place a token may come in: header, bearer, basic auth password,
/// the share's cookie.
fn presented_tokens(req: &Request<Incoming>, share: &Share) -> Vec<String> {
    let mut out = Vec::new();
    let h = req.headers();
    if let Some(t) = h.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) {
        out.push(t.to_owned());
    }
    if let Some(a) = h.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(t) = a.strip_prefix("Bearer ") {
            out.push(t.trim().to_owned());
        } else if let Some(b) = a.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok());
            if let Some((_, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                out.push(password.to_owned());
            }
        }
    }
    let name = cookie_name(share);
    for value in h.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()) {
        for pair in value.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                if k == name {
                    out.push(v.to_owned());
                }
            }
        }
    }
    out
}

/// The VM never sees the share's credentials.
fn strip_credentials(req: &mut Request<Incoming>, share: &Share) {
    let h = req.headers_mut();
    h.remove(TOKEN_HEADER);
    let ours = h
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.starts_with("Bearer ") || a.starts_with("Basic "));
    if ours {
        h.remove(AUTHORIZATION);
    }
    let name = format!("{}=", cookie_name(share));
    let kept: Vec<String> = h
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| {
            v.split(';')
                .map(|p| p.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|p| !p.starts_with(&name) && !p.is_empty())
        .collect();
    h.remove(COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            h.insert(COOKIE, v);
        }
    }
}

/// Consumes a one-time login token: on success sets the share's cookie
/// and redirects to the same URL without the token; otherwise 401.
async fn login_redirect(
    service: &Service,
    share: &Share,
    req: &Request<Incoming>,
    login: &str,
    path_prefix: Option<&str>,
    tls: bool,
) -> Response<ProxyBody> {
    match service.shares().take_share_login(&share.id, login).await {
        Ok(true) => {}
        Ok(false) => {
            return text(
                StatusCode::UNAUTHORIZED,
                "this login link was already used or has expired\n",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "share login failed");
            return text(StatusCode::SERVICE_UNAVAILABLE, "share login failed\n");
        }
    }
    let token = service.shares().share_cookie_token(share);
    let rest: Vec<&str> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with(&format!("{LOGIN_PARAM}=")))
        .collect();
    let mut location = req.uri().path().to_owned();
    if !rest.is_empty() {
        location.push('?');
        location.push_str(&rest.join("&"));
    }
    let mut cookie = format!(
        "{}={token}; HttpOnly; SameSite=Lax; Path={}",
        cookie_name(share),
        path_prefix.unwrap_or("/")
    );
    if tls {
        cookie.push_str("; Secure");
    }
    let mut r = text(StatusCode::SEE_OTHER, "logged in\n");
    if let (Ok(loc), Ok(c)) = (
        HeaderValue::from_str(&location),
        HeaderValue::from_str(&cookie),
    ) {
        r.headers_mut().insert(LOCATION, loc);
        r.headers_mut().insert(SET_COOKIE, c);
    }
    r
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}
