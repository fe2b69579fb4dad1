//! Webhook endpoints and deliveries in SQLite. An endpoint's signing
//! secret is kept sealed, in columns no listing reads.

use async_trait::async_trait;
use paddock_core::clock::Timestamp;
use paddock_core::ids::{AccountId, WebhookDeliveryId, WebhookEndpointId};
use paddock_core::model::{
    DeliveryFilter, DeliveryStatus, Sealed, WebhookDelivery, WebhookEndpoint,
};
use paddock_core::store::WebhookStore;
use paddock_core::StoreError;
use sqlx::FromRow;

use super::rows::{db_err, parse, ts};
use super::SqlStore;

const ENDPOINT_COLUMNS: &str = "id, account_id, url, description, event_patterns, enabled, \
    timeout_seconds, max_retries, created_at, updated_at";
const DELIVERY_COLUMNS: &str = "seq, id, account_id, endpoint_id, event_id, event_type, payload, \
    status, attempts, next_attempt_at, last_status_code, last_error, created_at, updated_at";

#[derive(FromRow)]
pub(super) struct EndpointRow {
    id: String,
    account_id: String,
    url: String,
    description: Option<String>,
    event_patterns: String,
    /// 0 or 1: the one integer type both backends share.
    enabled: i64,
    timeout_seconds: i64,
    max_retries: i64,
    created_at: i64,
    updated_at: i64,
}

super::owned!(WebhookEndpoint: "webhook_endpoints", ENDPOINT_COLUMNS,
    EndpointRow => |row: EndpointRow| row.into_endpoint());

super::owned!(WebhookDelivery: "webhook_deliveries", DELIVERY_COLUMNS,
    DeliveryRow => |row: DeliveryRow| row.into_delivery().map(|(_, d)| d));

impl EndpointRow {
    fn into_endpoint(self) -> Result<WebhookEndpoint, StoreError> {
        Ok(WebhookEndpoint {
            id: parse("webhook endpoint id", &self.id)?,
            account_id: parse("account id", &self.account_id)?,
            url: self.url,
            description: self.description,
            event_patterns: serde_json::from_str(&self.event_patterns)
                .map_err(|e| StoreError::Corrupt(format!("event patterns: {e}")))?,
            enabled: self.enabled != 0,
            timeout_seconds: u32::try_from(self.timeout_seconds).unwrap_or(10),
            max_retries: u32::try_from(self.max_retries).unwrap_or(0),
            created_at: ts(self.created_at),
            updated_at: ts(self.updated_at),
        })
    }
}

#[derive(FromRow)]
pub(super) struct DeliveryRow {
    seq: i64,
    id: String,
    account_id: String,
    endpoint_id: String,
    event_id: String,
    event_type: String,
    payload: String,
    status: String,
    attempts: i64,
    next_attempt_at: i64,
    last_status_code: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl DeliveryRow {
    fn into_delivery(self) -> Result<(i64, WebhookDelivery), StoreError> {
        let status = DeliveryStatus::parse(&self.status)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery status {:?}", self.status)))?;
        Ok((
            self.seq,
            WebhookDelivery {
                id: parse("webhook delivery id", &self.id)?,
                account_id: parse("account id", &self.account_id)?,
                endpoint_id: parse("webhook endpoint id", &self.endpoint_id)?,
                event_id: self.event_id,
                event_type: self.event_type,
                payload: self.payload,
                status,
                attempts: u32::try_from(self.attempts).unwrap_or(0),
                next_attempt_at: ts(self.next_attempt_at),
                last_status_code: self.last_status_code.and_then(|c| u16::try_from(c).ok()),
                last_error: self.last_error,
                created_at: ts(self.created_at),
                updated_at: ts(self.updated_at),
            },
        ))
    }
}

fn patterns_json(e: &WebhookEndpoint) -> String {
    serde_json::to_string(&e.event_patterns).unwrap_or_else(|_| "[]".into())
}

#[async_trait]
impl WebhookStore for SqlStore {
    async fn insert_webhook_endpoint(
        &self,
        e: &WebhookEndpoint,
        secret: &Sealed,
    ) -> Result<(), StoreError> {
        sqlx::query(&self.sql(&format!(
            "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}, secret_key_id, secret_nonce, \
             secret_ciphertext) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(e.id.as_str())
        .bind(e.account_id.as_str())
        .bind(&e.url)
        .bind(&e.description)
        .bind(patterns_json(e))
        .bind(i64::from(e.enabled))
        .bind(i64::from(e.timeout_seconds))
        .bind(i64::from(e.max_retries))
        .bind(e.created_at.unix_millis())
        .bind(e.updated_at.unix_millis())
        .bind(&secret.key_id)
        .bind(&secret.nonce)
        .bind(&secret.ciphertext)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn update_webhook_endpoint(&self, e: &WebhookEndpoint) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "UPDATE webhook_endpoints SET url = ?, description = ?, event_patterns = ?, \
             enabled = ?, timeout_seconds = ?, max_retries = ?, updated_at = ? WHERE id = ?",
        ))
        .bind(&e.url)
        .bind(&e.description)
        .bind(patterns_json(e))
        .bind(i64::from(e.enabled))
        .bind(i64::from(e.timeout_seconds))
        .bind(i64::from(e.max_retries))
        .bind(e.updated_at.unix_millis())
        .bind(e.id.as_str())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn set_webhook_secret(
        &self,
        id: &WebhookEndpointId,
        secret: &Sealed,
    ) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "UPDATE webhook_endpoints SET secret_key_id = ?, secret_nonce = ?, \
             secret_ciphertext = ? WHERE id = ?",
        ))
        .bind(&secret.key_id)
        .bind(&secret.nonce)
        .bind(&secret.ciphertext)
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn webhook_secret(&self, id: &WebhookEndpointId) -> Result<Option<Sealed>, StoreError> {
        let row: Option<(String, Vec<u8>, Vec<u8>)> = sqlx::query_as(&self.sql(
            "SELECT secret_key_id, secret_nonce, secret_ciphertext FROM webhook_endpoints \
             WHERE id = ?",
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(row.map(|(key_id, nonce, ciphertext)| Sealed {
            key_id,
            nonce,
            ciphertext,
        }))
    }

    async fn webhook_secrets_under_other_keys(
        &self,
        key_id: &str,
    ) -> Result<Vec<(WebhookEndpointId, Sealed)>, StoreError> {
        let rows: Vec<(String, String, Vec<u8>, Vec<u8>)> = sqlx::query_as(&self.sql(
            "SELECT id, secret_key_id, secret_nonce, secret_ciphertext FROM webhook_endpoints \
             WHERE secret_key_id != ?",
        ))
        .bind(key_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter()
            .map(|(id, key_id, nonce, ciphertext)| {
                Ok((
                    parse("webhook endpoint id", &id)?,
                    Sealed {
                        key_id,
                        nonce,
                        ciphertext,
                    },
                ))
            })
            .collect()
    }

    async fn get_webhook_endpoint(
        &self,
        account: &AccountId,
        id: &WebhookEndpointId,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        self.get_owned(account, id.as_str()).await
    }

    async fn list_webhook_endpoints(
        &self,
        account: &AccountId,
    ) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let rows: Vec<EndpointRow> = sqlx::query_as(&self.sql(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE account_id = ? \
             ORDER BY created_at, id"
        )))
        .bind(account.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter().map(EndpointRow::into_endpoint).collect()
    }

    async fn delete_webhook_endpoint(
        &self,
        account: &AccountId,
        id: &WebhookEndpointId,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let done =
            sqlx::query(&self.sql("DELETE FROM webhook_endpoints WHERE account_id = ? AND id = ?"))
                .bind(account.as_str())
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        sqlx::query(&self.sql(
            "UPDATE webhook_deliveries SET status = 'failed', \
             last_error = 'the endpoint was deleted', updated_at = ? \
             WHERE endpoint_id = ? AND status = 'pending'",
        ))
        .bind(Timestamp::now().unix_millis())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_webhook_deliveries(&self, ds: &[WebhookDelivery]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        for d in ds {
            sqlx::query(&self.sql(
                "INSERT INTO webhook_deliveries (id, account_id, endpoint_id, event_id, \
                 event_type, payload, status, attempts, next_attempt_at, last_status_code, \
                 last_error, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ))
            .bind(d.id.as_str())
            .bind(d.account_id.as_str())
            .bind(d.endpoint_id.as_str())
            .bind(&d.event_id)
            .bind(&d.event_type)
            .bind(&d.payload)
            .bind(d.status.as_str())
            .bind(i64::from(d.attempts))
            .bind(d.next_attempt_at.unix_millis())
            .bind(d.last_status_code.map(i64::from))
            .bind(&d.last_error)
            .bind(d.created_at.unix_millis())
            .bind(d.updated_at.unix_millis())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn update_webhook_delivery(&self, d: &WebhookDelivery) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "UPDATE webhook_deliveries SET status = ?, attempts = ?, next_attempt_at = ?, \
             last_status_code = ?, last_error = ?, updated_at = ? WHERE id = ?",
        ))
        .bind(d.status.as_str())
        .bind(i64::from(d.attempts))
        .bind(d.next_attempt_at.unix_millis())
        .bind(d.last_status_code.map(i64::from))
        .bind(&d.last_error)
        .bind(d.updated_at.unix_millis())
        .bind(d.id.as_str())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn due_webhook_deliveries(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(&self.sql(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
             WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, seq LIMIT ?"
        )))
        .bind(now.unix_millis())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter()
            .map(|r| r.into_delivery().map(|(_, d)| d))
            .collect()
    }

    async fn get_webhook_delivery(
        &self,
        account: &AccountId,
        id: &WebhookDeliveryId,
    ) -> Result<Option<WebhookDelivery>, StoreError> {
        self.get_owned(account, id.as_str()).await
    }

    async fn list_webhook_deliveries(
        &self,
        account: &AccountId,
        f: &DeliveryFilter,
    ) -> Result<Vec<(i64, WebhookDelivery)>, StoreError> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(&self.sql(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE account_id = ? \
             AND (? IS NULL OR endpoint_id = ?) AND (? IS NULL OR status = ?) \
             AND (? IS NULL OR event_type = ?) AND (? IS NULL OR seq < ?) \
             ORDER BY seq DESC LIMIT ?"
        )))
        .bind(account.as_str())
        .bind(f.endpoint_id.as_ref().map(WebhookEndpointId::as_str))
        .bind(f.endpoint_id.as_ref().map(WebhookEndpointId::as_str))
        .bind(f.status.map(DeliveryStatus::as_str))
        .bind(f.status.map(DeliveryStatus::as_str))
        .bind(&f.event_type)
        .bind(&f.event_type)
        .bind(f.before_seq)
        .bind(f.before_seq)
        .bind(i64::from(f.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter().map(DeliveryRow::into_delivery).collect()
    }
}
