//! Webhooks: endpoints an account registers, events matched to them, and
//! the deliverer that POSTs each delivery until it lands. Deliveries are
//! rows in the store before anyone tries them, so a restart loses none
//! (at-least-once: a receiver drops duplicates by the event's id). A
//! failed try waits exponentially longer (with jitter) up to the
//! endpoint's `max_retries`, then the delivery is failed; `replay` queues
//! it again. Signing secrets are sealed under the master key and shown
//! only when made (create, rotate).

use std::sync::Arc;
use std::time::Duration;

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use tokio::sync::Notify;

use crate::clock::Timestamp;
use crate::error::error_chain;
use crate::error::CoreError;
use crate::ids::{AccountId, WebhookDeliveryId, WebhookEndpointId};
use crate::model::{
    pattern_matches, retry_delay_ms, webhook_signature, DeliveryFilter, DeliveryStatus,
    SecretValue, WebhookDelivery, WebhookEndpoint,
};
use crate::ports::webhook_sender::WebhookSender;
use crate::secrets::Keyring;
use crate::shutdown::Shutdown;
use crate::store::WebhookStore;

/// The event types paddock sends, by group.
pub const EVENT_TYPES: &[&str] = &[
    "vm.created",
    "vm.running",
    "vm.failed",
    "vm.terminated",
    "vm.expired",
    "vm.suspended",
    "vm.resumed",
    "snapshot.ready",
    "snapshot.failed",
    "volume.created",
    "volume.deleted",
    "share.created",
    "share.deleted",
    "webhook.test",
    "webhook.verify",
];

const MAX_TIMEOUT_SECONDS: u32 = 30;
const MAX_RETRIES: u32 = 20;
const MAX_PATTERNS: usize = 50;
/// How many deliveries one round of the deliverer tries at once.
const BATCH: u32 = 32;

/// How long the deliverer's lease lasts unless renewed (each pass renews
/// it): longer than a delivery try may take.
const DELIVERER_LEASE: Duration = Duration::from_secs(30);

/// What a new endpoint is made with.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    pub url: String,
    pub description: Option<String>,
    pub event_patterns: Vec<String>,
    pub timeout_seconds: Option<u32>,
    pub max_retries: Option<u32>,
}

/// A change to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<Option<String>>,
    pub event_patterns: Option<Vec<String>>,
    pub timeout_seconds: Option<u32>,
    pub max_retries: Option<u32>,
    pub enabled: Option<bool>,
}

/// A page of deliveries and the cursor of the next (older) one.
#[derive(Debug, Clone)]
pub struct DeliveryPage {
    pub deliveries: Vec<WebhookDelivery>,
    pub next_cursor: Option<String>,
}

/// How a verification ping went.
#[derive(Debug, Clone)]
pub struct Verification {
    pub ok: bool,
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

pub struct Webhooks {
    store: Arc<dyn WebhookStore>,
    keyring: Arc<Keyring>,
    sender: Arc<dyn WebhookSender>,
    /// Wakes the deliverer when deliveries are queued.
    queued: Notify,
}

/// What an endpoint's sealed secret is bound to.
pub(crate) fn secret_aad(endpoint: &WebhookEndpointId) -> String {
    format!("webhook:{endpoint}")
}

fn sealing_failed(e: crate::secrets::SealError) -> CoreError {
    CoreError::Unavailable(format!("webhook secret: {e}"))
}

fn check_patterns(patterns: &[String]) -> Result<(), CoreError> {
    if patterns.is_empty() || patterns.len() > MAX_PATTERNS {
        return Err(CoreError::invalid(
            "event_patterns",
            format!("name 1 to {MAX_PATTERNS} event types or patterns"),
        ));
    }
    for p in patterns {
        let known = EVENT_TYPES.iter().any(|t| pattern_matches(p, t));
        let shape =
            p == "*" || p.strip_suffix(".*").is_some_and(|g| !g.contains('*')) || !p.contains('*');
        if !shape || !known {
            return Err(CoreError::invalid(
                "event_patterns",
                format!(
                    "{p:?} matches no event type; types: {}; `group.*` and `*` match several",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn check_limits(timeout: Option<u32>, retries: Option<u32>) -> Result<(), CoreError> {
    if timeout.is_some_and(|t| !(1..=MAX_TIMEOUT_SECONDS).contains(&t)) {
        return Err(CoreError::invalid(
            "timeout_seconds",
            format!("must be from 1 to {MAX_TIMEOUT_SECONDS}"),
        ));
    }
    if retries.is_some_and(|r| r > MAX_RETRIES) {
        return Err(CoreError::invalid(
            "max_retries",
            format!("must be from 0 to {MAX_RETRIES}"),
        ));
    }
    Ok(())
}

fn check_description(d: Option<&str>) -> Result<(), CoreError> {
    if d.is_some_and(|d| d.chars().count() > 1000) {
        return Err(CoreError::invalid(
            "description",
            "must be at most 1000 characters",
        ));
    }
    Ok(())
}

fn new_secret() -> String {
    format!("whsec_{}", Alphanumeric.sample_string(&mut rand::rng(), 40))
}

impl Webhooks {
    pub fn new(
        store: Arc<dyn WebhookStore>,
        keyring: Arc<Keyring>,
        sender: Arc<dyn WebhookSender>,
    ) -> Self {
        Self {
            store,
            keyring,
            sender,
            queued: Notify::new(),
        }
    }

    async fn check_url(&self, url: &str) -> Result<(), CoreError> {
        if url.len() > 2048 {
            return Err(CoreError::invalid("url", "must be at most 2048 characters"));
        }
        self.sender
            .check_url(url)
            .await
            .map_err(|why| CoreError::invalid("url", why))
    }

    fn seal(
        &self,
        id: &WebhookEndpointId,
        secret: &str,
    ) -> Result<crate::model::Sealed, CoreError> {
        self.keyring
            .seal(&secret_aad(id), &SecretValue(secret.to_owned()))
            .map_err(sealing_failed)
    }

    /// A new endpoint and its signing secret (shown only here and at
    /// rotation).
    pub async fn create_endpoint(
        &self,
        account: &AccountId,
        settings: EndpointSettings,
    ) -> Result<(WebhookEndpoint, String), CoreError> {
        check_patterns(&settings.event_patterns)?;
        check_limits(settings.timeout_seconds, settings.max_retries)?;
        check_description(settings.description.as_deref())?;
        self.check_url(&settings.url).await?;
        let now = Timestamp::now();
        let endpoint = WebhookEndpoint {
            id: WebhookEndpointId::generate(),
            account_id: account.clone(),
            url: settings.url,
            description: settings.description,
            event_patterns: settings.event_patterns,
            enabled: true,
            timeout_seconds: settings.timeout_seconds.unwrap_or(10),
            max_retries: settings.max_retries.unwrap_or(8),
            created_at: now,
            updated_at: now,
        };
        let secret = new_secret();
        let sealed = self.seal(&endpoint.id, &secret)?;
        self.store
            .insert_webhook_endpoint(&endpoint, &sealed)
            .await?;
        Ok((endpoint, secret))
    }

    pub async fn endpoints(&self, account: &AccountId) -> Result<Vec<WebhookEndpoint>, CoreError> {
        Ok(self.store.list_webhook_endpoints(account).await?)
    }

    pub async fn endpoint(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<WebhookEndpoint, CoreError> {
        let not_found = || CoreError::not_found("webhook endpoint", id);
        let id: WebhookEndpointId = id.parse().map_err(|_| not_found())?;
        self.store
            .get_webhook_endpoint(account, &id)
            .await?
            .ok_or_else(not_found)
    }

    pub async fn update_endpoint(
        &self,
        account: &AccountId,
        id: &str,
        patch: EndpointPatch,
    ) -> Result<WebhookEndpoint, CoreError> {
        if let Some(p) = &patch.event_patterns {
            check_patterns(p)?;
        }
        check_limits(patch.timeout_seconds, patch.max_retries)?;
        if let Some(d) = &patch.description {
            check_description(d.as_deref())?;
        }
        if let Some(url) = &patch.url {
            self.check_url(url).await?;
        }
        let mut endpoint = self.endpoint(account, id).await?;
        if let Some(url) = patch.url {
            endpoint.url = url;
        }
        if let Some(d) = patch.description {
            endpoint.description = d;
        }
        if let Some(p) = patch.event_patterns {
            endpoint.event_patterns = p;
        }
        if let Some(t) = patch.timeout_seconds {
            endpoint.timeout_seconds = t;
        }
        if let Some(r) = patch.max_retries {
            endpoint.max_retries = r;
        }
        if let Some(e) = patch.enabled {
            endpoint.enabled = e;
        }
        endpoint.updated_at = Timestamp::now();
        self.store.update_webhook_endpoint(&endpoint).await?;
        Ok(endpoint)
    }

    /// Deletes an endpoint; its deliveries stay on record, and those
    /// still pending fail.
    pub async fn delete_endpoint(&self, account: &AccountId, id: &str) -> Result<(), CoreError> {
        let endpoint = self.endpoint(account, id).await?;
        self.store
            .delete_webhook_endpoint(account, &endpoint.id)
            .await?;
        Ok(())
    }

    /// A new signing secret; the old one stops signing at once.
    pub async fn rotate_secret(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<(WebhookEndpoint, String), CoreError> {
        let endpoint = self.endpoint(account, id).await?;
        let secret = new_secret();
        let sealed = self.seal(&endpoint.id, &secret)?;
        self.store.set_webhook_secret(&endpoint.id, &sealed).await?;
        Ok((endpoint, secret))
    }

    fn payload(
        account: &AccountId,
        event_id: &str,
        event_type: &str,
        data: serde_json::Value,
    ) -> String {
        serde_json::json!({
            "id": event_id,
            "event_type": event_type,
            "created_at": Timestamp::now().to_rfc3339(),
            "account_id": account.as_str(),
            "data": data,
        })
        .to_string()
    }

    fn delivery(
        endpoint: &WebhookEndpoint,
        event_id: &str,
        event_type: &str,
        payload: &str,
    ) -> WebhookDelivery {
        let now = Timestamp::now();
        WebhookDelivery {
            id: WebhookDeliveryId::generate(),
            account_id: endpoint.account_id.clone(),
            endpoint_id: endpoint.id.clone(),
            event_id: event_id.to_owned(),
            event_type: event_type.to_owned(),
            payload: payload.to_owned(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: now,
            last_status_code: None,
            last_error: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// Queues `event_type` with `data` for each of the account's
    /// endpoints that wants it. Never fails the caller: an event that
    /// cannot be queued is logged.
    pub async fn emit(&self, account: &AccountId, event_type: &str, data: serde_json::Value) {
        if let Err(e) = self.try_emit(account, event_type, data).await {
            tracing::error!(error = %error_chain(&e), event_type, "webhooks: an event could not be queued");
        }
    }

    async fn try_emit(
        &self,
        account: &AccountId,
        event_type: &str,
        data: serde_json::Value,
    ) -> Result<(), CoreError> {
        let endpoints = self.store.list_webhook_endpoints(account).await?;
        let wanted: Vec<&WebhookEndpoint> =
            endpoints.iter().filter(|e| e.wants(event_type)).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let event_id = format!("whev_{}", Alphanumeric.sample_string(&mut rand::rng(), 20));
        let payload = Self::payload(account, &event_id, event_type, data);
        let deliveries: Vec<WebhookDelivery> = wanted
            .iter()
            .map(|e| Self::delivery(e, &event_id, event_type, &payload))
            .collect();
        self.store.insert_webhook_deliveries(&deliveries).await?;
        self.queued.notify_one();
        Ok(())
    }

    /// Queues a `webhook.test` event for one endpoint, whatever its
    /// patterns.
    pub async fn send_test(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<WebhookDelivery, CoreError> {
        let endpoint = self.endpoint(account, id).await?;
        let event_id = format!("whev_{}", Alphanumeric.sample_string(&mut rand::rng(), 20));
        let payload = Self::payload(
            account,
            &event_id,
            "webhook.test",
            serde_json::json!({"endpoint_id": endpoint.id.as_str(), "message": "a test event from paddock"}),
        );
        let delivery = Self::delivery(&endpoint, &event_id, "webhook.test", &payload);
        self.store
            .insert_webhook_deliveries(std::slice::from_ref(&delivery))
            .await?;
        self.queued.notify_one();
        Ok(delivery)
    }

    /// Sends a `webhook.verify` event to the endpoint now and says how it
    /// answered (not retried).
    pub async fn verify(&self, account: &AccountId, id: &str) -> Result<Verification, CoreError> {
        let endpoint = self.endpoint(account, id).await?;
        let event_id = format!("whev_{}", Alphanumeric.sample_string(&mut rand::rng(), 20));
        let payload = Self::payload(
            account,
            &event_id,
            "webhook.verify",
            serde_json::json!({"endpoint_id": endpoint.id.as_str()}),
        );
        let mut delivery = Self::delivery(&endpoint, &event_id, "webhook.verify", &payload);
        let outcome = self.send(&endpoint, &delivery).await?;
        delivery.attempts = 1;
        delivery.updated_at = Timestamp::now();
        let verification = match outcome {
            Ok(code) => {
                delivery.last_status_code = Some(code);
                delivery.status = if (200..300).contains(&code) {
                    DeliveryStatus::Succeeded
                } else {
                    DeliveryStatus::Failed
                };
                Verification {
                    ok: (200..300).contains(&code),
                    status_code: Some(code),
                    error: None,
                }
            }
            Err(why) => {
                delivery.status = DeliveryStatus::Failed;
                delivery.last_error = Some(why.clone());
                Verification {
                    ok: false,
                    status_code: None,
                    error: Some(why),
                }
            }
        };
        self.store
            .insert_webhook_deliveries(std::slice::from_ref(&delivery))
            .await?;
        Ok(verification)
    }

    pub async fn deliveries(
        &self,
        account: &AccountId,
        mut filter: DeliveryFilter,
        cursor: Option<&str>,
    ) -> Result<DeliveryPage, CoreError> {
        filter.before_seq = crate::paging::before(filter.limit, cursor)?;
        let rows = self.store.list_webhook_deliveries(account, &filter).await?;
        let (deliveries, next_cursor) = crate::paging::split(rows, filter.limit);
        Ok(DeliveryPage {
            deliveries,
            next_cursor,
        })
    }

    pub async fn delivery_of(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<WebhookDelivery, CoreError> {
        let not_found = || CoreError::not_found("webhook delivery", id);
        let id: WebhookDeliveryId = id.parse().map_err(|_| not_found())?;
        self.store
            .get_webhook_delivery(account, &id)
            .await?
            .ok_or_else(not_found)
    }

    /// Queues a delivery again, with its tries counted from zero: the
    /// same event, the same id.
    pub async fn replay(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<WebhookDelivery, CoreError> {
        let mut delivery = self.delivery_of(account, id).await?;
        self.endpoint(account, delivery.endpoint_id.as_str())
            .await?;
        delivery.status = DeliveryStatus::Pending;
        delivery.attempts = 0;
        delivery.next_attempt_at = Timestamp::now();
        delivery.updated_at = Timestamp::now();
        self.store.update_webhook_delivery(&delivery).await?;
        self.queued.notify_one();
        Ok(delivery)
    }

    /// One POST of `delivery` to `endpoint`: the answer's status, or why
    /// there was none.
    async fn send(
        &self,
        endpoint: &WebhookEndpoint,
        delivery: &WebhookDelivery,
    ) -> Result<Result<u16, String>, CoreError> {
        let Some(sealed) = self.store.webhook_secret(&endpoint.id).await? else {
            return Ok(Err("the endpoint has no signing secret".into()));
        };
        let secret = self
            .keyring
            .open(&secret_aad(&endpoint.id), &sealed)
            .map_err(sealing_failed)?;
        let t = Timestamp::now().unix_millis() / 1000;
        let body = delivery.payload.clone().into_bytes();
        let headers = vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("User-Agent".to_owned(), "paddock-webhooks".to_owned()),
            (
                "InstaVM-Signature".to_owned(),
                webhook_signature(&secret.0, t, &body),
            ),
            ("InstaVM-Event-Id".to_owned(), delivery.event_id.clone()),
            ("InstaVM-Event-Type".to_owned(), delivery.event_type.clone()),
            ("InstaVM-Delivery-Id".to_owned(), delivery.id.to_string()),
        ];
        let timeout = Duration::from_secs(u64::from(endpoint.timeout_seconds));
        Ok(self
            .sender
            .post(&endpoint.url, &headers, body, timeout)
            .await)
    }

    /// Tries one due delivery and records how it went.
    async fn attempt(&self, mut delivery: WebhookDelivery) -> Result<(), CoreError> {
        let endpoint = self
            .store
            .get_webhook_endpoint(&delivery.account_id, &delivery.endpoint_id)
            .await?;
        let outcome = match &endpoint {
            Some(e) if e.enabled => self.send(e, &delivery).await?,
            Some(_) => Err("the endpoint is disabled".to_owned()),
            None => Err("the endpoint was deleted".to_owned()),
        };
        delivery.attempts += 1;
        delivery.updated_at = Timestamp::now();
        let max_retries = endpoint.as_ref().map_or(0, |e| e.max_retries);
        let gone = endpoint.as_ref().is_none_or(|e| !e.enabled);
        match outcome {
            Ok(code) if (200..300).contains(&code) => {
                delivery.status = DeliveryStatus::Succeeded;
                delivery.last_status_code = Some(code);
                delivery.last_error = None;
            }
            other => {
                match other {
                    Ok(code) => {
                        delivery.last_status_code = Some(code);
                        delivery.last_error = Some(format!("the endpoint answered {code}"));
                    }
                    Err(why) => {
                        delivery.last_status_code = None;
                        delivery.last_error = Some(why);
                    }
                }
                if gone || delivery.attempts > max_retries {
                    delivery.status = DeliveryStatus::Failed;
                } else {
                    let jitter: f64 = rand::rng().random();
                    delivery.next_attempt_at = Timestamp::from_unix_millis(
                        Timestamp::now().unix_millis()
                            + retry_delay_ms(delivery.attempts - 1, jitter),
                    );
                }
            }
        }
        self.store.update_webhook_delivery(&delivery).await?;
        Ok(())
    }

    /// Delivers due deliveries until shutdown: woken when some are
    /// queued, and at least every second for retries that came due. Of
    /// the processes sharing a store, the one holding the deliverer's
    /// lease delivers (so a delivery is sent once); another takes over
    /// within [`DELIVERER_LEASE`] of its end.
    pub async fn run_deliverer(
        self: Arc<Self>,
        mut shutdown: Shutdown,
        cluster: Arc<crate::cluster::Membership>,
    ) {
        loop {
            let due = if cluster
                .holds_lease("webhooks/deliverer", DELIVERER_LEASE)
                .await
            {
                self.store
                    .due_webhook_deliveries(Timestamp::now(), BATCH)
                    .await
            } else {
                Ok(Vec::new())
            };
            match due {
                Ok(due) if !due.is_empty() => {
                    let full = due.len() == BATCH as usize;
                    let tries = due.into_iter().map(|d| {
                        let this = Arc::clone(&self);
                        async move {
                            if let Err(e) = this.attempt(d).await {
                                tracing::warn!(error = %error_chain(&e), "webhooks: a delivery try failed");
                            }
                        }
                    });
                    futures::future::join_all(tries).await;
                    if full {
                        continue;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %error_chain(&e), "webhooks: read due deliveries"),
            }
            tokio::select! {
                _ = self.queued.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
