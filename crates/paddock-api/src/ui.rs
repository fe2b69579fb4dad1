//! The web dashboard at `/ui/`: static pages built into the binary
//! (`crates/paddock-api/ui/`, plain HTML, CSS and an ES module; no build
//! step). It is one more API client: it signs in with an API key kept in
//! the tab's session storage and sends it as `X-API-Key`, so the API's
//! tenant rules are its rules. Served with a strict Content-Security-
//! Policy: nothing inline, nothing from another origin.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

const INDEX: &str = include_str!("../ui/index.html");

/// Every file under `/ui/`: (name, body, content type). The vendored
/// ones are copied by `build.rs` from the pinned npm packages.
const ASSETS: &[(&str, &[u8], &str)] = &[
    (
        "app.css",
        include_bytes!("../ui/app.css"),
        "text/css; charset=utf-8",
    ),
    ("app.js", include_bytes!("../ui/app.js"), JS),
    ("api.js", include_bytes!("../ui/api.js"), JS),
    ("dom.js", include_bytes!("../ui/dom.js"), JS),
    ("vms.js", include_bytes!("../ui/vms.js"), JS),
    ("vm.js", include_bytes!("../ui/vm.js"), JS),
    ("terminal.js", include_bytes!("../ui/terminal.js"), JS),
    ("files.js", include_bytes!("../ui/files.js"), JS),
    ("resources.js", include_bytes!("../ui/resources.js"), JS),
    ("gateway.js", include_bytes!("../ui/gateway.js"), JS),
    ("definitions.js", include_bytes!("../ui/definitions.js"), JS),
    (
        "vendor/xterm.js",
        include_bytes!(concat!(env!("OUT_DIR"), "/xterm.js")),
        JS,
    ),
    (
        "vendor/xterm.css",
        include_bytes!(concat!(env!("OUT_DIR"), "/xterm.css")),
        "text/css; charset=utf-8",
    ),
    (
        "vendor/addon-fit.js",
        include_bytes!(concat!(env!("OUT_DIR"), "/addon-fit.js")),
        JS,
    ),
];
const JS: &str = "text/javascript; charset=utf-8";

/// Scripts and styles from this origin only, no inline code, no framing,
/// API calls (and terminals' WebSockets) to this origin. Downloads are
/// handed to the browser as `blob:` links.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|| async { page(INDEX.as_bytes(), "text/html; charset=utf-8") }),
        )
        .route("/ui/{*file}", get(asset))
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, body, content_type)) => page(body, content_type),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

fn page(body: &'static [u8], content_type: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The binary is the version: nothing stale survives an upgrade.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pages_carry_no_inline_code_and_no_other_origin() {
        let index = super::INDEX;
        assert!(!index.contains("<script>"), "inline script");
        assert!(!index.contains(" style="), "inline style");
        // No inline event handlers (`onclick=`, …).
        let handler = index.split(" on").skip(1).any(|rest| {
            rest.split('=')
                .next()
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_lowercase()))
        });
        assert!(!handler, "inline handler");
        for (name, body, _) in super::ASSETS {
            if name.starts_with("vendor/") {
                continue;
            }
            let text = std::str::from_utf8(body).expect("utf-8");
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "another origin in {name}"
            );
        }
        assert!(!index.contains("http://") && !index.contains("https://"));
        assert!(super::CSP.contains("script-src 'self'") && !super::CSP.contains("unsafe"));
    }
}
