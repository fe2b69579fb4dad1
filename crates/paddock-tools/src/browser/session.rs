//! One browser session as the server holds it: the DevTools connection to
//! its page, what the page's network is doing, and the turn that keeps
//! its interactions one at a time.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paddock_core::ids::{AccountId, VmId};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::cdp::{Cdp, Event};
use super::share_fetch::ShareRoute;
use super::{lock, BrowserError, SessionSettings};

/// The functions evaluated in the page (see the file's header).
const PAGE_JS: &str = include_str!("js/page.js");

/// What the page's network is doing: requests in flight, and when that
/// last changed (for "network idle").
#[derive(Debug)]
pub(crate) struct NetworkActivity {
    in_flight: HashSet<String>,
    changed: Instant,
}

impl NetworkActivity {
    /// Whether no request was in flight for `quiet`.
    pub(crate) fn idle_for(&self, quiet: Duration) -> bool {
        self.in_flight.is_empty() && self.changed.elapsed() >= quiet
    }

    fn note(&mut self, event: &Event) {
        let id = || event.params["requestId"].as_str().map(str::to_owned);
        let changed = match event.method.as_str() {
            "Network.requestWillBeSent" => id().is_some_and(|id| self.in_flight.insert(id)),
            "Network.loadingFinished" | "Network.loadingFailed" => {
                id().is_some_and(|id| self.in_flight.remove(&id))
            }
            // A new document drops what the old one had in flight.
            "Page.frameNavigated" if event.params["frame"]["parentId"].is_null() => {
                !self.in_flight.is_empty()
            }
            _ => false,
        };
        if event.method == "Page.frameNavigated" && event.params["frame"]["parentId"].is_null() {
            self.in_flight.clear();
        }
        if changed {
            self.changed = Instant::now();
        }
    }
}

/// The page's address and title, and how far it loaded.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PageInfo {
    pub url: String,
    pub title: String,
    pub ready_state: String,
    pub width: f64,
    pub height: f64,
}

pub(crate) struct Session {
    pub account: AccountId,
    pub vm: VmId,
    pub settings: SessionSettings,
    pub cdp: Cdp,
    pub network: Arc<Mutex<NetworkActivity>>,
    /// Interactions run one at a time.
    pub turn: tokio::sync::Mutex<()>,
    last_extended: Mutex<Option<Instant>>,
}

impl Session {
    /// Readies the page behind `cdp`: its events on, the viewport and user
    /// agent set, requests to share hosts carried by the server.
    pub(crate) async fn open(
        account: AccountId,
        vm: VmId,
        cdp: Cdp,
        settings: SessionSettings,
        shares: Option<ShareRoute>,
    ) -> Result<Self, BrowserError> {
        let network = Arc::new(Mutex::new(NetworkActivity {
            in_flight: HashSet::new(),
            changed: Instant::now(),
        }));
        let mut events = cdp.subscribe();
        let activity = Arc::clone(&network);
        let route = shares.clone();
        let responder = cdp.responder();
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => break,
                };
                if event.method == "Fetch.requestPaused" {
                    if let Some(route) = &route {
                        tokio::spawn(route.clone().answer(responder.clone(), event.params));
                    }
                    continue;
                }
                lock(&activity).note(&event);
            }
        });
        cdp.call("Page.enable", json!({})).await?;
        cdp.call("Network.enable", json!({})).await?;
        cdp.call("Page.setLifecycleEventsEnabled", json!({"enabled": true}))
            .await?;
        cdp.call(
            "Emulation.setDeviceMetricsOverride",
            json!({
                "width": settings.viewport_width,
                "height": settings.viewport_height,
                "deviceScaleFactor": 1,
                "mobile": false,
            }),
        )
        .await?;
        if let Some(agent) = &settings.user_agent {
            cdp.call("Network.setUserAgentOverride", json!({"userAgent": agent}))
                .await?;
        }
        if let Some(route) = &shares {
            cdp.call("Fetch.enable", json!({"patterns": route.patterns()}))
                .await?;
        }
        Ok(Self {
            account,
            vm,
            settings,
            cdp,
            network,
            turn: tokio::sync::Mutex::default(),
            last_extended: Mutex::new(None),
        })
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.cdp.is_open()
    }

    /// Whether the session's end should be pushed forward now: the first
    /// use, then at most once every `every`.
    pub(crate) fn due_for_extension(&self, every: Duration) -> bool {
        let mut last = lock(&self.last_extended);
        if last.is_some_and(|at| at.elapsed() < every) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Calls `function` of `page.js` in the page with `args`, and reads
    /// what it returned.
    pub(crate) async fn run<T: DeserializeOwned>(
        &self,
        function: &str,
        args: Value,
    ) -> Result<T, BrowserError> {
        let expression = format!("(() => {{\n{PAGE_JS}\nreturn {function}({args});\n}})()");
        let answer = self
            .cdp
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(exception) = answer.get("exceptionDetails") {
            let said = exception["exception"]["description"]
                .as_str()
                .or_else(|| exception["text"].as_str())
                .unwrap_or("an exception");
            return Err(BrowserError::Page(format!(
                "the page's script failed: {said}"
            )));
        }
        serde_json::from_value(answer["result"]["value"].clone())
            .map_err(|e| BrowserError::Page(format!("the page answered unexpectedly: {e}")))
    }

    pub(crate) async fn page_info(&self) -> Result<PageInfo, BrowserError> {
        self.run("pageInfo", json!({})).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(method: &str, params: Value) -> Event {
        Event {
            method: method.to_owned(),
            params,
        }
    }

    #[test]
    fn the_network_is_idle_once_nothing_is_in_flight_for_the_quiet_time() {
        let mut activity = NetworkActivity {
            in_flight: HashSet::new(),
            changed: Instant::now() - Duration::from_secs(5),
        };
        assert!(activity.idle_for(Duration::from_millis(500)));
        activity.note(&event(
            "Network.requestWillBeSent",
            json!({"requestId": "1"}),
        ));
        assert!(!activity.idle_for(Duration::ZERO));
        activity.note(&event("Network.loadingFinished", json!({"requestId": "1"})));
        assert!(activity.idle_for(Duration::ZERO));
        assert!(!activity.idle_for(Duration::from_secs(5)));
    }

    #[test]
    fn a_new_document_drops_what_the_old_one_had_in_flight() {
        let mut activity = NetworkActivity {
            in_flight: HashSet::new(),
            changed: Instant::now(),
        };
        activity.note(&event(
            "Network.requestWillBeSent",
            json!({"requestId": "7"}),
        ));
        activity.note(&event(
            "Page.frameNavigated",
            json!({"frame": {"id": "main"}}),
        ));
        assert!(activity.idle_for(Duration::ZERO));
        activity.note(&event(
            "Network.requestWillBeSent",
            json!({"requestId": "8"}),
        ));
        activity.note(&event(
            "Page.frameNavigated",
            json!({"frame": {"id": "sub", "parentId": "main"}}),
        ));
        assert!(!activity.idle_for(Duration::ZERO));
    }
}
