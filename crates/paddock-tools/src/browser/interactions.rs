//! What a session's page can be asked to do: navigate, click, type, fill,
//! scroll, wait, screenshot, and read its elements and content. Each waits
//! for what it needs (an element, a load) up to its timeout; an element
//! that never appears is [`BrowserError::ElementNotFound`], a page that
//! never finishes is [`BrowserError::Timeout`].

use std::time::{Duration, Instant};

use paddock_core::ids::{AccountId, VmId};
use paddock_core::CoreError;
use serde::Deserialize;
use serde_json::{json, Value};

use super::session::Session;
use super::{Browser, BrowserError};

/// How often a wait looks at the page again.
const POLL: Duration = Duration::from_millis(100);

/// The quiet time that makes the network idle.
const NETWORK_QUIET: Duration = Duration::from_millis(500);

/// The longest any interaction may wait.
const MAX_TIMEOUT_MS: u64 = 300_000;

/// The most characters `type` sends (each is two key events).
const MAX_TYPED_CHARS: usize = 10_000;

/// The tallest full-page screenshot (Chromium's own texture limit).
const MAX_CAPTURE_PX: f64 = 16_384.0;

/// The most elements `extract` returns.
const MAX_ELEMENTS: usize = 500;

/// What a navigation reached.
#[derive(Debug, Clone)]
pub struct NavigateResult {
    pub url: String,
    pub title: String,
    /// The document's HTTP status, when it came over HTTP.
    pub status: Option<u16>,
}

/// What to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    /// An element matching the selector is shown.
    Visible,
    /// No element matching the selector is shown.
    Hidden,
    /// The page's `load` event fired (`document.readyState` complete).
    Load,
    /// The page's DOM is parsed.
    DomContentLoaded,
    /// A new document was loaded in the page from now on.
    Navigation,
    /// No request in flight for 500 ms.
    NetworkIdle,
}

impl WaitCondition {
    pub const NAMES: &'static str =
        "visible, selector, hidden, load, domcontentloaded, navigation, networkidle";

    pub fn parse(name: &str) -> Result<Self, CoreError> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "visible" | "selector" | "element" => Self::Visible,
            "hidden" | "detached" => Self::Hidden,
            "load" => Self::Load,
            "domcontentloaded" => Self::DomContentLoaded,
            "navigation" => Self::Navigation,
            "networkidle" | "network_idle" => Self::NetworkIdle,
            _ => {
                return Err(CoreError::invalid(
                    "condition",
                    format!("must be one of: {}", Self::NAMES),
                ))
            }
        })
    }

    fn needs_selector(self) -> bool {
        matches!(self, Self::Visible | Self::Hidden)
    }
}

/// A region of the page, in CSS pixels.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Clip {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    #[serde(default)]
    pub scale: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct ScreenshotRequest {
    pub full_page: bool,
    pub clip: Option<Clip>,
    /// `png`, `jpeg` or `webp`.
    pub format: String,
    pub quality: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Screenshot {
    /// The image, base64.
    pub data: String,
    pub format: String,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone)]
pub struct ContentRequest {
    pub include_interactive: bool,
    pub include_anchors: bool,
    pub max_anchors: u32,
}

#[derive(Debug, Deserialize)]
struct Located {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    found: bool,
    #[serde(default)]
    visible: bool,
    #[serde(default)]
    x: f64,
    #[serde(default)]
    y: f64,
}

fn check_timeout(ms: u64, field: &str) -> Result<Duration, CoreError> {
    if ms == 0 || ms > MAX_TIMEOUT_MS {
        return Err(CoreError::invalid(
            field,
            format!("must be between 1 and {MAX_TIMEOUT_MS} milliseconds"),
        ));
    }
    Ok(Duration::from_millis(ms))
}

fn check_selector(selector: &str) -> Result<(), CoreError> {
    if selector.trim().is_empty() || selector.len() > 4096 {
        return Err(CoreError::invalid(
            "selector",
            "must be a CSS selector of 1 to 4096 characters",
        ));
    }
    Ok(())
}

/// A selector the page could not parse is the caller's mistake.
fn selector_error(said: String) -> BrowserError {
    CoreError::invalid("selector", format!("is not a valid CSS selector: {said}")).into()
}

/// Only what a browser session is for: web pages (no `file:`, no
/// `chrome:`, no `javascript:`).
fn check_url(url: &str) -> Result<(), CoreError> {
    let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("http" | "https") if url.len() <= 8192 => Ok(()),
        Some("about") if url == "about:blank" => Ok(()),
        Some("data") if url.len() <= 2 << 20 => Ok(()),
        _ => Err(CoreError::invalid(
            "url",
            "must be an http or https URL (or about:blank, or a data: URL)",
        )),
    }
}

impl Session {
    /// Waits until an element matches `selector` (and is shown, unless
    /// `shown_or_not`), scrolled into view; where it is.
    async fn element(
        &self,
        selector: &str,
        timeout: Duration,
        shown_or_not: bool,
    ) -> Result<Located, BrowserError> {
        let deadline = Instant::now() + timeout;
        let mut found_hidden = false;
        loop {
            // A navigation under way destroys the page's script context: it
            // is looked at again.
            if let Ok(at) = self
                .run::<Located>("locate", json!({"selector": selector}))
                .await
            {
                if let Some(said) = at.error {
                    return Err(selector_error(said));
                }
                if at.found && (at.visible || shown_or_not) {
                    return Ok(at);
                }
                found_hidden |= at.found;
            }
            if Instant::now() >= deadline {
                return Err(if found_hidden {
                    BrowserError::Timeout(format!(
                        "the element matching {selector:?} was not shown within {} ms",
                        timeout.as_millis()
                    ))
                } else {
                    BrowserError::ElementNotFound {
                        selector: selector.to_owned(),
                    }
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn mouse_click(&self, x: f64, y: f64) -> Result<(), BrowserError> {
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.cdp
                .call(
                    "Input.dispatchMouseEvent",
                    json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
                )
                .await?;
        }
        Ok(())
    }

    async fn key(&self, ch: char) -> Result<(), BrowserError> {
        let (down, up) = if ch == '\n' {
            (
                json!({"type": "keyDown", "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"}),
                json!({"type": "keyUp", "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}),
            )
        } else {
            let text = ch.to_string();
            (
                json!({"type": "keyDown", "key": text, "text": text}),
                json!({"type": "keyUp", "key": text}),
            )
        };
        self.cdp.call("Input.dispatchKeyEvent", down).await?;
        self.cdp.call("Input.dispatchKeyEvent", up).await?;
        Ok(())
    }
}

impl Browser {
    /// Loads `url` in the session's page and waits for its `load` event.
    pub async fn navigate(
        &self,
        account: &AccountId,
        id: &VmId,
        url: &str,
        timeout_ms: u64,
    ) -> Result<NavigateResult, BrowserError> {
        check_url(url)?;
        let timeout = check_timeout(timeout_ms, "wait_timeout")?;
        self.with_session(account, id, async |s: &Session| {
            let mut events = s.cdp.subscribe();
            let started = s.cdp.call("Page.navigate", json!({"url": url})).await?;
            if let Some(failed) = started["errorText"].as_str().filter(|e| !e.is_empty()) {
                return Err(BrowserError::Page(format!(
                    "the page could not be loaded: {failed}"
                )));
            }
            let mut status = None;
            // A navigation within the document (a fragment) has no loader
            // and no load event.
            if let Some(loader) = started["loaderId"].as_str() {
                let deadline = tokio::time::Instant::now() + timeout;
                loop {
                    let event = match tokio::time::timeout_at(deadline, events.recv()).await {
                        Err(_) => {
                            return Err(BrowserError::Timeout(format!(
                                "the page did not finish loading within {} ms",
                                timeout.as_millis()
                            )))
                        }
                        Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                        Ok(Err(_)) => return Err(super::CdpError::Closed.into()),
                        Ok(Ok(event)) => event,
                    };
                    let params = &event.params;
                    match event.method.as_str() {
                        "Network.responseReceived"
                            if params["loaderId"] == loader && params["type"] == "Document" =>
                        {
                            status = params["response"]["status"]
                                .as_u64()
                                .and_then(|s| u16::try_from(s).ok());
                        }
                        "Page.lifecycleEvent"
                            if params["loaderId"] == loader && params["name"] == "load" =>
                        {
                            break
                        }
                        "Page.loadEventFired" => break,
                        _ => {}
                    }
                }
            }
            let page = s.page_info().await?;
            Ok(NavigateResult {
                url: page.url,
                title: page.title,
                status,
            })
        })
        .await
    }

    /// Clicks the element matching `selector` where it is shown, as a
    /// mouse would; with `force`, also one that is not shown (the click
    /// is then the element's own `click()`).
    pub async fn click(
        &self,
        account: &AccountId,
        id: &VmId,
        selector: &str,
        force: bool,
        timeout_ms: u64,
    ) -> Result<(), BrowserError> {
        check_selector(selector)?;
        let timeout = check_timeout(timeout_ms, "timeout")?;
        self.with_session(account, id, async |s: &Session| {
            let at = s.element(selector, timeout, force).await?;
            if at.visible {
                s.mouse_click(at.x, at.y).await
            } else {
                s.run::<Value>("clickElement", json!({"selector": selector}))
                    .await
                    .map(drop)
            }
        })
        .await
    }

    /// Types `text` into the element matching `selector`, key by key,
    /// `delay_ms` apart.
    pub async fn type_text(
        &self,
        account: &AccountId,
        id: &VmId,
        selector: &str,
        text: &str,
        delay_ms: u64,
        timeout_ms: u64,
    ) -> Result<(), BrowserError> {
        check_selector(selector)?;
        let timeout = check_timeout(timeout_ms, "timeout")?;
        let chars = text.chars().count();
        if chars > MAX_TYPED_CHARS {
            return Err(CoreError::invalid(
                "text",
                format!("must be at most {MAX_TYPED_CHARS} characters; use fill for long values"),
            )
            .into());
        }
        if delay_ms > 10_000 || delay_ms.saturating_mul(chars as u64) > MAX_TIMEOUT_MS {
            return Err(CoreError::invalid(
                "delay",
                format!(
                    "typing {chars} characters {delay_ms} ms apart takes over {MAX_TIMEOUT_MS} ms"
                ),
            )
            .into());
        }
        self.with_session(account, id, async |s: &Session| {
            let at = s.element(selector, timeout, false).await?;
            s.mouse_click(at.x, at.y).await?;
            s.run::<Value>("focusElement", json!({"selector": selector}))
                .await?;
            for (i, ch) in text.chars().enumerate() {
                if i > 0 && delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                }
                s.key(ch).await?;
            }
            Ok(())
        })
        .await
    }

    /// Sets the value of the form field matching `selector`.
    pub async fn fill(
        &self,
        account: &AccountId,
        id: &VmId,
        selector: &str,
        value: &str,
        timeout_ms: u64,
    ) -> Result<(), BrowserError> {
        check_selector(selector)?;
        let timeout = check_timeout(timeout_ms, "timeout")?;
        if value.len() > 1 << 20 {
            return Err(CoreError::invalid("value", "must be at most 1 MiB").into());
        }
        self.with_session(account, id, async |s: &Session| {
            s.element(selector, timeout, true).await?;
            let filled: Value = s
                .run("fillElement", json!({"selector": selector, "value": value}))
                .await?;
            if filled["fillable"] == false {
                return Err(BrowserError::Page(format!(
                    "the element matching {selector:?} is a <{}>, which cannot be filled \
                     (an input, textarea, select or editable element can)",
                    filled["tag"].as_str().unwrap_or("?")
                )));
            }
            Ok(())
        })
        .await
    }

    /// Scrolls the element matching `selector` into view, or the page to
    /// (`x`, `y`); where the page is scrolled to.
    pub async fn scroll(
        &self,
        account: &AccountId,
        id: &VmId,
        selector: Option<&str>,
        x: Option<f64>,
        y: Option<f64>,
    ) -> Result<(f64, f64), BrowserError> {
        if selector.is_none() && x.is_none() && y.is_none() {
            return Err(CoreError::invalid("selector", "give a selector, or x and/or y").into());
        }
        if let Some(selector) = selector {
            check_selector(selector)?;
        }
        self.with_session(account, id, async |s: &Session| {
            let at: Value = s
                .run("scrollPage", json!({"selector": selector, "x": x, "y": y}))
                .await?;
            if let Some(said) = at["error"].as_str() {
                return Err(selector_error(said.to_owned()));
            }
            if at["found"] == false {
                return Err(BrowserError::ElementNotFound {
                    selector: selector.unwrap_or_default().to_owned(),
                });
            }
            Ok((
                at["scroll_x"].as_f64().unwrap_or(0.0),
                at["scroll_y"].as_f64().unwrap_or(0.0),
            ))
        })
        .await
    }

    /// Waits for `condition`; how long it took.
    pub async fn wait_for(
        &self,
        account: &AccountId,
        id: &VmId,
        condition: WaitCondition,
        selector: Option<&str>,
        timeout_ms: u64,
    ) -> Result<Duration, BrowserError> {
        let timeout = check_timeout(timeout_ms, "timeout")?;
        let selector = match (condition.needs_selector(), selector) {
            (true, None) => {
                return Err(CoreError::invalid(
                    "selector",
                    "is required to wait for an element to be visible or hidden",
                )
                .into())
            }
            (_, Some(s)) => {
                check_selector(s)?;
                Some(s)
            }
            (false, None) => None,
        };
        let started = Instant::now();
        self.with_session(account, id, async |s: &Session| {
            let mut events = s.cdp.subscribe();
            loop {
                let met = match condition {
                    WaitCondition::Visible | WaitCondition::Hidden => {
                        match s
                            .run::<Value>("elementState", json!({"selector": selector}))
                            .await
                        {
                            Ok(state) => {
                                if let Some(said) = state["error"].as_str() {
                                    return Err(selector_error(said.to_owned()));
                                }
                                (state["visible"] == true) == (condition == WaitCondition::Visible)
                            }
                            Err(_) => false,
                        }
                    }
                    WaitCondition::Load | WaitCondition::DomContentLoaded => {
                        match s.page_info().await {
                            Ok(page) => {
                                page.ready_state == "complete"
                                    || (condition == WaitCondition::DomContentLoaded
                                        && page.ready_state == "interactive")
                            }
                            Err(_) => false,
                        }
                    }
                    WaitCondition::NetworkIdle => super::lock(&s.network).idle_for(NETWORK_QUIET),
                    WaitCondition::Navigation => {
                        let mut navigated = false;
                        while let Ok(event) = events.try_recv() {
                            navigated |= event.method == "Page.loadEventFired";
                        }
                        navigated
                    }
                };
                if met {
                    return Ok(started.elapsed());
                }
                if started.elapsed() >= timeout {
                    return Err(BrowserError::Timeout(format!(
                        "the condition was not met within {} ms",
                        timeout.as_millis()
                    )));
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await
    }

    /// An image of the page: the viewport, the whole page, or a region.
    pub async fn screenshot(
        &self,
        account: &AccountId,
        id: &VmId,
        request: ScreenshotRequest,
    ) -> Result<Screenshot, BrowserError> {
        let format = request.format.to_ascii_lowercase();
        let format = match format.as_str() {
            "png" | "jpeg" | "webp" => format,
            "jpg" => "jpeg".to_owned(),
            _ => return Err(CoreError::invalid("format", "must be png, jpeg or webp").into()),
        };
        if let Some(q) = request.quality {
            if q > 100 {
                return Err(CoreError::invalid("quality", "must be between 0 and 100").into());
            }
        }
        if let Some(clip) = &request.clip {
            let sane = |v: f64| v.is_finite() && (0.0..=MAX_CAPTURE_PX).contains(&v);
            if !(sane(clip.x) && sane(clip.y) && sane(clip.width) && sane(clip.height))
                || clip.width < 1.0
                || clip.height < 1.0
                || clip.scale.is_some_and(|s| !(0.1..=4.0).contains(&s))
            {
                return Err(CoreError::invalid(
                    "clip",
                    format!("x, y, width and height must be 0 to {MAX_CAPTURE_PX} pixels (width and height at least 1), scale 0.1 to 4"),
                )
                .into());
            }
        }
        self.with_session(account, id, async |s: &Session| {
            let mut params = json!({"format": format});
            if format != "png" {
                params["quality"] = json!(request.quality.unwrap_or(80));
            }
            let (width, height) = if let Some(clip) = request.clip {
                params["clip"] = json!({"x": clip.x, "y": clip.y, "width": clip.width,
                    "height": clip.height, "scale": clip.scale.unwrap_or(1.0)});
                params["captureBeyondViewport"] = json!(true);
                let scale = clip.scale.unwrap_or(1.0);
                (clip.width * scale, clip.height * scale)
            } else if request.full_page {
                let page = s.page_info().await?;
                let width = page
                    .width
                    .max(f64::from(s.settings.viewport_width))
                    .clamp(1.0, MAX_CAPTURE_PX);
                let height = page.height.clamp(1.0, MAX_CAPTURE_PX);
                params["clip"] =
                    json!({"x": 0, "y": 0, "width": width, "height": height, "scale": 1});
                params["captureBeyondViewport"] = json!(true);
                (width, height)
            } else {
                (
                    f64::from(s.settings.viewport_width),
                    f64::from(s.settings.viewport_height),
                )
            };
            let shot = s.cdp.call("Page.captureScreenshot", params).await?;
            let data = shot["data"]
                .as_str()
                .ok_or_else(|| BrowserError::Page("the browser returned no image".into()))?;
            Ok(Screenshot {
                data: data.to_owned(),
                format: format.clone(),
                width: width.round() as u32,
                height: height.round() as u32,
            })
        })
        .await
    }

    /// The elements matching `selector` (every element of the body when
    /// `None`), at most 500 in document order, with their text, a
    /// selector for each, and `attributes` (all of them when empty).
    pub async fn extract_elements(
        &self,
        account: &AccountId,
        id: &VmId,
        selector: Option<&str>,
        attributes: &[String],
    ) -> Result<Vec<Value>, BrowserError> {
        let selector = selector.unwrap_or("body *");
        check_selector(selector)?;
        if attributes.len() > 64 || attributes.iter().any(|a| a.is_empty() || a.len() > 256) {
            return Err(CoreError::invalid(
                "attributes",
                "must be at most 64 attribute names of 1 to 256 characters",
            )
            .into());
        }
        self.with_session(account, id, async |s: &Session| {
            let found: Value = s
                .run(
                    "extractElements",
                    json!({"selector": selector, "attributes": attributes, "limit": MAX_ELEMENTS}),
                )
                .await?;
            if let Some(said) = found["error"].as_str() {
                return Err(selector_error(said.to_owned()));
            }
            Ok(found["elements"].as_array().cloned().unwrap_or_default())
        })
        .await
    }

    /// What an agent reads of the page: its readable text, the elements it
    /// can act on, and text blocks with their selectors.
    pub async fn content(
        &self,
        account: &AccountId,
        id: &VmId,
        request: ContentRequest,
    ) -> Result<Value, BrowserError> {
        if request.max_anchors > 500 {
            return Err(CoreError::invalid("max_anchors", "must be between 0 and 500").into());
        }
        self.with_session(account, id, async |s: &Session| {
            s.run(
                "pageContent",
                json!({
                    "include_interactive": request.include_interactive,
                    "include_anchors": request.include_anchors,
                    "max_anchors": request.max_anchors,
                }),
            )
            .await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_web_pages_are_opened() {
        assert!(check_url("https://example.com/").is_ok());
        assert!(check_url("http://sh-1.localhost:7421/form").is_ok());
        assert!(check_url("about:blank").is_ok());
        assert!(check_url("data:text/html,<h1>x</h1>").is_ok());
        for url in [
            "file:///etc/passwd",
            "chrome://settings",
            "javascript:alert(1)",
            "ftp://x",
            "nonsense",
        ] {
            assert!(check_url(url).is_err(), "{url}");
        }
    }

    #[test]
    fn conditions_parse_and_unknown_ones_name_the_choices() {
        assert_eq!(
            WaitCondition::parse("networkidle").expect("parses"),
            WaitCondition::NetworkIdle
        );
        assert_eq!(
            WaitCondition::parse("Selector").expect("parses"),
            WaitCondition::Visible
        );
        match WaitCondition::parse("soon") {
            Err(CoreError::InvalidArgument { field, message }) => {
                assert_eq!(field, "condition");
                assert!(message.contains("networkidle"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn timeouts_are_bounded() {
        assert!(check_timeout(0, "timeout").is_err());
        assert!(check_timeout(300_001, "timeout").is_err());
        assert_eq!(
            check_timeout(1500, "timeout").expect("parses"),
            Duration::from_millis(1500)
        );
    }
}
