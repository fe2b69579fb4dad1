//! Browser sessions as the `instavm` SDK and CLI drive them
//! (`/v1/browser/sessions/`, `/v1/browser/interactions/*`): the session id
//! travels in the body of each interaction. Errors follow what the SDK
//! reads: 404 for a session or an element that is not there, 408 for a
//! wait that ran out, 400 for a page that refused (a failed navigation).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use paddock_core::ids::VmId;
use paddock_core::CoreError;
use paddock_tools::browser::{
    Clip, ContentRequest, ScreenshotRequest, SessionInfo, SessionSettings, WaitCondition,
};
use paddock_tools::BrowserError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidJson, ValidPath};
use crate::AppState;

impl From<BrowserError> for ApiError {
    fn from(e: BrowserError) -> Self {
        match e {
            BrowserError::Core(e) => Self::Core(e),
            BrowserError::ElementNotFound { selector } => Self::Status(
                StatusCode::NOT_FOUND,
                format!("Element not found: no element matches {selector:?}"),
            ),
            BrowserError::Timeout(m) => Self::Status(StatusCode::REQUEST_TIMEOUT, m),
            BrowserError::Page(m) => Self::Status(StatusCode::BAD_REQUEST, m),
            e @ BrowserError::Browser(_) => {
                Self::Status(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        }
    }
}

/// A session id from a body or path: one that cannot exist is not found.
fn session_id(raw: &str) -> Result<VmId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("Browser session"))
}

fn default_width() -> u32 {
    1920
}

fn default_height() -> u32 {
    1080
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateBrowserSessionRequest {
    /// The page's width in CSS pixels (200 to 7680).
    #[serde(default = "default_width")]
    pub viewport_width: u32,
    /// The page's height in CSS pixels (200 to 4320).
    #[serde(default = "default_height")]
    pub viewport_height: u32,
    /// The `User-Agent` the browser sends; Chromium's own when absent.
    #[serde(default)]
    pub user_agent: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BrowserSessionResponse {
    pub session_id: String,
    /// The sandbox the browser runs in (a VM of the account: its egress
    /// policy is the browser's).
    pub vm_id: String,
    /// `active`.
    pub status: String,
    pub viewport_width: u32,
    pub viewport_height: u32,
    pub user_agent: Option<String>,
    /// The page it shows (from `GET` of one session).
    pub url: Option<String>,
    pub title: Option<String>,
    pub created_at: String,
    /// When it ends unless used again (each use pushes this forward).
    pub expires_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BrowserSessionList {
    pub sessions: Vec<BrowserSessionResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BrowserSessionClosed {
    pub success: bool,
    pub session_id: String,
    /// `closed`.
    pub status: String,
}

fn session_view(info: SessionInfo) -> BrowserSessionResponse {
    BrowserSessionResponse {
        session_id: info.vm.id.to_string(),
        vm_id: info.vm.id.to_string(),
        status: "active".to_owned(),
        viewport_width: info.settings.viewport_width,
        viewport_height: info.settings.viewport_height,
        user_agent: info.settings.user_agent,
        url: info.url,
        title: info.title,
        created_at: info.vm.created_at.to_rfc3339(),
        expires_at: info.vm.expires_at.map(|t| t.to_rfc3339()),
    }
}

#[utoipa::path(post, path = "/v1/browser/sessions/", tag = "browser",
    request_body = CreateBrowserSessionRequest,
    responses((status = 200, body = BrowserSessionResponse),
        (status = 409, body = ErrorDetail), (status = 422, body = HttpValidationError),
        (status = 429, body = ErrorDetail), (status = 503, body = ErrorDetail)))]
pub(crate) async fn create_session(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<CreateBrowserSessionRequest>,
) -> Result<Json<BrowserSessionResponse>, ApiError> {
    let settings = SessionSettings {
        viewport_width: body.viewport_width,
        viewport_height: body.viewport_height,
        user_agent: body.user_agent,
    };
    let info = state.browser.create_session(&account, settings).await?;
    Ok(Json(session_view(info)))
}

#[utoipa::path(get, path = "/v1/browser/sessions/", tag = "browser",
    responses((status = 200, body = BrowserSessionList)))]
pub(crate) async fn list_sessions(
    State(state): State<AppState>,
    Caller(account): Caller,
) -> Result<Json<BrowserSessionList>, ApiError> {
    let sessions = state.browser.list_sessions(&account).await?;
    Ok(Json(BrowserSessionList {
        sessions: sessions.into_iter().map(session_view).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/browser/sessions/{session_id}", tag = "browser",
    params(("session_id" = String, Path)),
    responses((status = 200, body = BrowserSessionResponse), (status = 404, body = ErrorDetail),
        (status = 503, body = ErrorDetail)))]
pub(crate) async fn get_session(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<BrowserSessionResponse>, ApiError> {
    let id = session_id(&raw)?;
    let info = state.browser.get_session(&account, &id).await?;
    Ok(Json(session_view(info)))
}

#[utoipa::path(delete, path = "/v1/browser/sessions/{session_id}", tag = "browser",
    params(("session_id" = String, Path)),
    responses((status = 200, body = BrowserSessionClosed), (status = 404, body = ErrorDetail),
        (status = 409, body = ErrorDetail)))]
pub(crate) async fn close_session(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<BrowserSessionClosed>, ApiError> {
    let id = session_id(&raw)?;
    state.browser.close_session(&account, &id).await?;
    Ok(Json(BrowserSessionClosed {
        success: true,
        session_id: id.to_string(),
        status: "closed".to_owned(),
    }))
}

fn default_timeout() -> u64 {
    30_000
}

fn default_delay() -> u64 {
    100
}

fn yes() -> bool {
    true
}

fn default_anchors() -> u32 {
    50
}

fn default_format() -> String {
    "png".to_owned()
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NavigateRequest {
    pub session_id: String,
    /// An http or https URL (or `about:blank`, or a `data:` URL).
    pub url: String,
    /// How long to wait for the page's `load` event, in milliseconds.
    #[serde(default = "default_timeout")]
    pub wait_timeout: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NavigateResponse {
    pub success: bool,
    pub session_id: String,
    /// Where the page is after redirects.
    pub url: String,
    pub title: String,
    /// The document's HTTP status.
    pub status: Option<u16>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InteractionResponse {
    pub success: bool,
    pub session_id: String,
    pub selector: Option<String>,
}

#[utoipa::path(post, path = "/v1/browser/interactions/navigate", tag = "browser",
    request_body = NavigateRequest,
    responses((status = 200, body = NavigateResponse), (status = 400, body = ErrorDetail),
        (status = 404, body = ErrorDetail), (status = 408, body = ErrorDetail),
        (status = 422, body = HttpValidationError), (status = 503, body = ErrorDetail)))]
pub(crate) async fn navigate(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<NavigateRequest>,
) -> Result<Json<NavigateResponse>, ApiError> {
    let id = session_id(&body.session_id)?;
    let reached = state
        .browser
        .navigate(&account, &id, &body.url, body.wait_timeout)
        .await?;
    Ok(Json(NavigateResponse {
        success: true,
        session_id: id.to_string(),
        url: reached.url,
        title: reached.title,
        status: reached.status,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ClickRequest {
    pub session_id: String,
    /// A CSS selector.
    pub selector: String,
    /// Also click an element that is not shown.
    #[serde(default)]
    pub force: bool,
    /// How long to wait for the element, in milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

fn done(id: &VmId, selector: Option<&str>) -> Json<InteractionResponse> {
    Json(InteractionResponse {
        success: true,
        session_id: id.to_string(),
        selector: selector.map(str::to_owned),
    })
}

#[utoipa::path(post, path = "/v1/browser/interactions/click", tag = "browser",
    request_body = ClickRequest,
    responses((status = 200, body = InteractionResponse), (status = 400, body = ErrorDetail),
        (status = 404, body = ErrorDetail), (status = 408, body = ErrorDetail),
        (status = 422, body = HttpValidationError), (status = 503, body = ErrorDetail)))]
pub(crate) async fn click(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<ClickRequest>,
) -> Result<Json<InteractionResponse>, ApiError> {
    let id = session_id(&body.session_id)?;
    state
        .browser
        .click(&account, &id, &body.selector, body.force, body.timeout)
        .await?;
    Ok(done(&id, Some(&body.selector)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TypeRequest {
    pub session_id: String,
    pub selector: String,
    /// Typed key by key (a newline is Enter).
    pub text: String,
    /// Milliseconds between keys.
    #[serde(default = "default_delay")]
    pub delay: u64,
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

#[utoipa::path(post, path = "/v1/browser/interactions/type", tag = "browser",
    request_body = TypeRequest,
    responses((status = 200, body = InteractionResponse), (status = 400, body = ErrorDetail),
        (status = 404, body = ErrorDetail), (status = 408, body = ErrorDetail),
        (status = 422, body = HttpValidationError), (status = 503, body = ErrorDetail)))]
pub(crate) async fn type_text(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<TypeRequest>,
) -> Result<Json<InteractionResponse>, ApiError> {
    let id = session_id(&body.session_id)?;
    state
        .browser
        .type_text(
            &account,
            &id,
            &body.selector,
            &body.text,
            body.delay,
            body.timeout,
        )
        .await?;
    Ok(done(&id, Some(&body.selector)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct FillRequest {
    pub session_id: String,
    pub selector: String,
    /// The field's new value.
    pub value: String,
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

#[utoipa::path(post, path = "/v1/browser/interactions/fill", tag = "browser",
    request_body = FillRequest,
    responses((status = 200, body = InteractionResponse), (status = 400, body = ErrorDetail),
        (status = 404, body = ErrorDetail), (status = 408, body = ErrorDetail),
        (status = 422, body = HttpValidationError), (status = 503, body = ErrorDetail)))]
pub(crate) async fn fill(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<FillRequest>,
) -> Result<Json<InteractionResponse>, ApiError> {
    let id = session_id(&body.session_id)?;
    state
        .browser
        .fill(&account, &id, &body.selector, &body.value, body.timeout)
        .await?;
    Ok(done(&id, Some(&body.selector)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ScrollRequest {
    pub session_id: String,
    /// Scrolls this element into view; else the page to (`x`, `y`).
    #[serde(default)]
    pub selector: Option<String>,
    #[serde(default)]
    pub x: Option<f64>,
    #[serde(default)]
    pub y: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScrollResponse {
    pub success: bool,
    pub session_id: String,
    /// Where the page is scrolled to afterwards.
    pub scroll_x: f64,
    pub scroll_y: f64,
}

#[utoipa::path(post, path = "/v1/browser/interactions/scroll", tag = "browser",
    request_body = ScrollRequest,
    responses((status = 200, body = ScrollResponse), (status = 400, body = ErrorDetail),
        (status = 404, body = ErrorDetail),
        (status = 422, body = HttpValidationError), (status = 503, body = ErrorDetail)))]
pub(crate) async fn scroll(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<ScrollRequest>,
) -> Result<Json<ScrollResponse>, ApiError> {
    let id = session_id(&body.session_id)?;
    let finite = |v: Option<f64>, field: &str| match v {
        Some(v) if !v.is_finite() => Err(CoreError::invalid(field, "must be a number")),
        _ => Ok(()),
    };
    finite(body.x, "x")?;
    finite(body.y, "y")?;
    let (scroll_x, scroll_y) = state
        .browser
        .scroll(&account, &id, body.selector.as_deref(), body.x, body.y)
        .await?;
    Ok(Json(ScrollResponse {
        success: true,
        session_id: id.to_string(),
        scroll_x,
        scroll_y,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct WaitRequest {
    pub session_id: String,
    /// `visible` (or `selector`), `hidden`, `load`, `domcontentloaded`,
    /// `navigation` or `networkidle`.
    pub condition: String,
    /// The element, for `visible` and `hidden`.
    #[serde(default)]
    pub selector: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WaitResponse {
    pub success: bool,
    pub session_id: String,
    pub condition: String,
    /// How long the wait took.
    pub elapsed_ms: u64,
}

#[utoipa::path(post, path = "/v1/browser/interactions/wait", tag = "browser",
    request_body = WaitRequest,
    responses((status = 200, body = WaitResponse), (status = 404, body = ErrorDetail),
        (status = 408, body = ErrorDetail), (status = 422, body = HttpValidationError),
        (status = 503, body = ErrorDetail)))]
pub(crate) async fn wait(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<WaitRequest>,
) -> Result<Json<WaitResponse>, ApiError> {
    let id = session_id(&body.session_id)?;
    let condition = WaitCondition::parse(&body.condition)?;
    let took = state
        .browser
        .wait_for(
            &account,
            &id,
            condition,
            body.selector.as_deref(),
            body.timeout,
        )
        .await?;
    Ok(Json(WaitResponse {
        success: true,
        session_id: id.to_string(),
        condition: body.condition,
        elapsed_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ScreenshotClip {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    #[serde(default)]
    pub scale: Option<f64>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ScreenshotBody {
    pub session_id: String,
    /// The whole page rather than the viewport.
    #[serde(default = "yes")]
    pub full_page: bool,
    /// A region of the page instead, in CSS pixels.
    #[serde(default)]
    pub clip: Option<ScreenshotClip>,
    /// `png`, `jpeg` or `webp`.
    #[serde(default = "default_format")]
    pub format: String,
    /// 0 to 100, for `jpeg` and `webp` (80 when absent).
    #[serde(default)]
    pub quality: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScreenshotResponse {
    pub success: bool,
    pub session_id: String,
    /// The image, base64.
    pub screenshot: String,
    pub format: String,
    pub width: u32,
    pub height: u32,
}

#[utoipa::path(post, path = "/v1/browser/interactions/screenshot", tag = "browser",
    request_body = ScreenshotBody,
    responses((status = 200, body = ScreenshotResponse), (status = 400, body = ErrorDetail),
        (status = 404, body = ErrorDetail),
        (status = 422, body = HttpValidationError), (status = 503, body = ErrorDetail)))]
pub(crate) async fn screenshot(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<ScreenshotBody>,
) -> Result<Json<ScreenshotResponse>, ApiError> {
    let id = session_id(&body.session_id)?;
    let request = ScreenshotRequest {
        full_page: body.full_page,
        clip: body.clip.map(|c| Clip {
            x: c.x,
            y: c.y,
            width: c.width,
            height: c.height,
            scale: c.scale,
        }),
        format: body.format,
        quality: body.quality,
    };
    let shot = state.browser.screenshot(&account, &id, request).await?;
    Ok(Json(ScreenshotResponse {
        success: true,
        session_id: id.to_string(),
        screenshot: shot.data,
        format: shot.format,
        width: shot.width,
        height: shot.height,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ExtractRequest {
    pub session_id: String,
    /// A CSS selector; every element of the body when absent.
    #[serde(default)]
    pub selector: Option<String>,
    /// The attributes to read; all of them when absent.
    #[serde(default)]
    pub attributes: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExtractedElement {
    pub tag: String,
    /// Its text, whitespace collapsed, at most 1,000 characters.
    pub text: String,
    /// A selector that finds it again.
    pub selector: Option<String>,
    pub attributes: std::collections::BTreeMap<String, String>,
    pub visible: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExtractResponse {
    pub success: bool,
    pub session_id: String,
    /// At most 500, in document order.
    pub elements: Vec<ExtractedElement>,
}

#[utoipa::path(post, path = "/v1/browser/interactions/extract", tag = "browser",
    request_body = ExtractRequest,
    responses((status = 200, body = ExtractResponse), (status = 400, body = ErrorDetail),
        (status = 404, body = ErrorDetail),
        (status = 422, body = HttpValidationError), (status = 503, body = ErrorDetail)))]
pub(crate) async fn extract(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<ExtractRequest>,
) -> Result<Json<ExtractResponse>, ApiError> {
    let id = session_id(&body.session_id)?;
    let attributes = body.attributes.unwrap_or_default();
    let found = state
        .browser
        .extract_elements(&account, &id, body.selector.as_deref(), &attributes)
        .await?;
    let elements = found
        .into_iter()
        .map(|e| ExtractedElement {
            tag: e["tag"].as_str().unwrap_or_default().to_owned(),
            text: e["text"].as_str().unwrap_or_default().to_owned(),
            selector: e["selector"].as_str().map(str::to_owned),
            attributes: e["attributes"]
                .as_object()
                .map(|a| {
                    a.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default(),
            visible: e["visible"] == true,
        })
        .collect();
    Ok(Json(ExtractResponse {
        success: true,
        session_id: id.to_string(),
        elements,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ContentBody {
    pub session_id: String,
    #[serde(default = "yes")]
    pub include_interactive: bool,
    #[serde(default = "yes")]
    pub include_anchors: bool,
    /// 0 to 500.
    #[serde(default = "default_anchors")]
    pub max_anchors: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadableContent {
    pub title: String,
    pub url: String,
    /// The page's main text: scripts, styles and navigation left out.
    pub content: String,
    pub length: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InteractiveElement {
    pub selector: Option<String>,
    pub tag: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub role: Option<String>,
    pub text: String,
    pub name: Option<String>,
    pub placeholder: Option<String>,
    pub href: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContentAnchor {
    pub text: String,
    pub selector: Option<String>,
    pub tag: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContentResponse {
    pub success: bool,
    pub session_id: String,
    pub url: String,
    pub title: String,
    pub readable_content: ReadableContent,
    /// What can be clicked or typed into (when asked for).
    pub interactive_elements: Option<Vec<InteractiveElement>>,
    /// Text blocks and the selectors that find them (when asked for).
    pub content_anchors: Option<Vec<ContentAnchor>>,
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

fn maybe(v: &Value, key: &str) -> Option<String> {
    v[key].as_str().map(str::to_owned)
}

#[utoipa::path(post, path = "/v1/browser/interactions/content", tag = "browser",
    request_body = ContentBody,
    responses((status = 200, body = ContentResponse), (status = 400, body = ErrorDetail),
        (status = 404, body = ErrorDetail),
        (status = 422, body = HttpValidationError), (status = 503, body = ErrorDetail)))]
pub(crate) async fn content(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidJson(body): ValidJson<ContentBody>,
) -> Result<Json<ContentResponse>, ApiError> {
    let id = session_id(&body.session_id)?;
    let page = state
        .browser
        .content(
            &account,
            &id,
            ContentRequest {
                include_interactive: body.include_interactive,
                include_anchors: body.include_anchors,
                max_anchors: body.max_anchors,
            },
        )
        .await?;
    let readable = &page["readable_content"];
    let list = |key: &str| page[key].as_array().cloned();
    Ok(Json(ContentResponse {
        success: true,
        session_id: id.to_string(),
        url: text(&page, "url"),
        title: text(&page, "title"),
        readable_content: ReadableContent {
            title: text(readable, "title"),
            url: text(readable, "url"),
            content: text(readable, "content"),
            length: readable["length"].as_u64().unwrap_or_default(),
        },
        interactive_elements: list("interactive_elements").map(|all| {
            all.iter()
                .map(|e| InteractiveElement {
                    selector: maybe(e, "selector"),
                    tag: text(e, "tag"),
                    kind: maybe(e, "type"),
                    role: maybe(e, "role"),
                    text: text(e, "text"),
                    name: maybe(e, "name"),
                    placeholder: maybe(e, "placeholder"),
                    href: maybe(e, "href"),
                    value: maybe(e, "value"),
                })
                .collect()
        }),
        content_anchors: list("content_anchors").map(|all| {
            all.iter()
                .map(|a| ContentAnchor {
                    text: text(a, "text"),
                    selector: maybe(a, "selector"),
                    tag: text(a, "tag"),
                })
                .collect()
        }),
    }))
}
