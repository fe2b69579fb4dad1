//! The audit log in SQLite: a table appended to in `seq` order, read
//! newest first by account with filters, pruned by age.

use async_trait::async_trait;
use paddock_core::clock::Timestamp;
use paddock_core::ids::{AccountId, AuditEventId};
use paddock_core::model::{AuditEvent, AuditFilter, AuditStatus};
use paddock_core::store::AuditStore;
use paddock_core::StoreError;
use sqlx::FromRow;

use super::rows::{db_err, parse, ts};
use super::SqlStore;

const COLUMNS: &str = "seq, id, account_id, created_at, event_group, event_type, status, \
    actor_key_id, user_email, vm_id, session_id, resource_type, resource_id, request_id, \
    source_address, method, path, http_status, error_message";

#[derive(FromRow)]
pub(super) struct EventRow {
    seq: i64,
    id: String,
    account_id: Option<String>,
    created_at: i64,
    event_group: String,
    event_type: String,
    status: String,
    actor_key_id: Option<String>,
    user_email: Option<String>,
    vm_id: Option<String>,
    session_id: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    request_id: String,
    source_address: String,
    method: String,
    path: String,
    http_status: i64,
    error_message: Option<String>,
}

super::owned!(AuditEvent: "audit_events", COLUMNS,
    EventRow => |row: EventRow| row.into_event().map(|(_, e)| e));

impl EventRow {
    fn into_event(self) -> Result<(i64, AuditEvent), StoreError> {
        let status = AuditStatus::parse(&self.status)
            .ok_or_else(|| StoreError::Corrupt(format!("audit status {:?}", self.status)))?;
        Ok((
            self.seq,
            AuditEvent {
                id: parse::<AuditEventId>("audit event id", &self.id)?,
                account_id: self
                    .account_id
                    .map(|a| parse::<AccountId>("account id", &a))
                    .transpose()?,
                created_at: ts(self.created_at),
                event_group: self.event_group,
                event_type: self.event_type,
                status,
                actor_key_id: self.actor_key_id,
                user_email: self.user_email,
                vm_id: self.vm_id,
                session_id: self.session_id,
                resource_type: self.resource_type,
                resource_id: self.resource_id,
                request_id: self.request_id,
                source_address: self.source_address,
                method: self.method,
                path: self.path,
                http_status: u16::try_from(self.http_status).unwrap_or(0),
                error_message: self.error_message,
            },
        ))
    }
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn insert_audit_events(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        for e in events {
            sqlx::query(&self.sql(
                "INSERT INTO audit_events (id, account_id, created_at, event_group, event_type, \
                 status, actor_key_id, user_email, vm_id, session_id, resource_type, resource_id, \
                 request_id, source_address, method, path, http_status, error_message) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ))
            .bind(e.id.as_str())
            .bind(e.account_id.as_ref().map(AccountId::as_str))
            .bind(e.created_at.unix_millis())
            .bind(&e.event_group)
            .bind(&e.event_type)
            .bind(e.status.as_str())
            .bind(&e.actor_key_id)
            .bind(&e.user_email)
            .bind(&e.vm_id)
            .bind(&e.session_id)
            .bind(&e.resource_type)
            .bind(&e.resource_id)
            .bind(&e.request_id)
            .bind(&e.source_address)
            .bind(&e.method)
            .bind(&e.path)
            .bind(i64::from(e.http_status))
            .bind(&e.error_message)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn list_audit_events(
        &self,
        account: &AccountId,
        f: &AuditFilter,
    ) -> Result<Vec<(i64, AuditEvent)>, StoreError> {
        // Each filter is `? IS NULL OR column = ?`: one statement, every
        // value bound.
        let rows: Vec<EventRow> = sqlx::query_as(&self.sql(&format!(
            "SELECT {COLUMNS} FROM audit_events WHERE account_id = ? \
             AND (? IS NULL OR event_group = ?) AND (? IS NULL OR event_type = ?) \
             AND (? IS NULL OR status = ?) AND (? IS NULL OR actor_key_id = ?) \
             AND (? IS NULL OR user_email = ?) AND (? IS NULL OR vm_id = ?) \
             AND (? IS NULL OR session_id = ?) AND (? IS NULL OR resource_id = ?) \
             AND (? IS NULL OR created_at >= ?) AND (? IS NULL OR created_at <= ?) \
             AND (? IS NULL OR seq < ?) ORDER BY seq DESC LIMIT ?"
        )))
        .bind(account.as_str())
        .bind(&f.event_group)
        .bind(&f.event_group)
        .bind(&f.event_type)
        .bind(&f.event_type)
        .bind(f.status.map(AuditStatus::as_str))
        .bind(f.status.map(AuditStatus::as_str))
        .bind(&f.actor_key_id)
        .bind(&f.actor_key_id)
        .bind(&f.user_email)
        .bind(&f.user_email)
        .bind(&f.vm_id)
        .bind(&f.vm_id)
        .bind(&f.session_id)
        .bind(&f.session_id)
        .bind(&f.resource_id)
        .bind(&f.resource_id)
        .bind(f.since.map(Timestamp::unix_millis))
        .bind(f.since.map(Timestamp::unix_millis))
        .bind(f.until.map(Timestamp::unix_millis))
        .bind(f.until.map(Timestamp::unix_millis))
        .bind(f.before_seq)
        .bind(f.before_seq)
        .bind(i64::from(f.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter().map(EventRow::into_event).collect()
    }

    async fn get_audit_event(
        &self,
        account: &AccountId,
        id: &AuditEventId,
    ) -> Result<Option<AuditEvent>, StoreError> {
        self.get_owned(account, id.as_str()).await
    }

    async fn prune_audit_events(&self, before: Timestamp) -> Result<u64, StoreError> {
        let done = sqlx::query(&self.sql("DELETE FROM audit_events WHERE created_at < ?"))
            .bind(before.unix_millis())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected())
    }

    async fn note_key_address(&self, key: &str, address: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(&self.sql(
            "INSERT INTO audit_key_addresses (key_id, address, first_seen) \
             VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        ))
        .bind(key)
        .bind(address)
        .bind(Timestamp::now().unix_millis())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }
}
