//! The web dashboard at `/ui/`: static pages built into the binary
//! (`crates/paddock-api/ui/`, plain HTML, CSS and an ES module; no build
//! step). It is one more API client: it signs in with an API key kept in
//! the tab's session storage and sends it as `X-API-Key`, so the API's
//! tenant rules are its rules. Served with a strict Content-Security-
//! Policy: nothing inline, nothing from another origin.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

const INDEX: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");

/// Scripts and styles from this origin only, no inline code, no framing,
/// API calls (and terminals' WebSockets) to this origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|| async { page(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { page(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/app.css",
            get(|| async { page(APP_CSS, "text/css; charset=utf-8") }),
        )
}

fn page(body: &'static str, content_type: &'static str) -> Response {
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
        for page in [super::INDEX, super::APP_JS, super::APP_CSS] {
            assert!(
                !page.contains("http://") && !page.contains("https://"),
                "another origin"
            );
        }
        assert!(super::CSP.contains("script-src 'self'") && !super::CSP.contains("unsafe"));
    }
}
