//! The gateway's resource documents and batch job logs in SQLite.

use async_trait::async_trait;
use paddock_core::ids::AccountId;
use paddock_core::store::{JobLogChunk, ResourceDoc, ResourceStore, SharedLock};
use paddock_core::StoreError;
use sqlx::Row;

use super::rows::{db_err, ts};
use super::SqlStore;

#[async_trait]
impl ResourceStore for SqlStore {
    async fn hold(&self, key: &str) -> Result<SharedLock, StoreError> {
        let Some(locks) = &self.locks else {
            return Ok(SharedLock::unshared());
        };
        // A transaction-scoped advisory lock: it ends with the transaction,
        // which the guard rolls back when dropped (or the server ends when
        // the process dies), so no lock outlives its holder.
        let mut tx = locks.begin().await.map_err(db_err)?;
        sqlx::query("SELECT 1 FROM pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        Ok(SharedLock::holding(Box::new(tx)))
    }

    async fn insert_resource(&self, d: &ResourceDoc) -> Result<(), StoreError> {
        sqlx::query(
            &self.sql("INSERT INTO gateway_resources (kind, account_id, id, state, doc, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",)
        )
        .bind(d.kind)
        .bind(d.account_id.as_str())
        .bind(&d.id)
        .bind(d.state)
        .bind(&d.doc)
        .bind(d.created_at.unix_millis())
        .bind(d.updated_at.unix_millis())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn update_resource(&self, d: &ResourceDoc) -> Result<bool, StoreError> {
        let done = sqlx::query(&self.sql(
            "UPDATE gateway_resources SET state = ?, doc = ?, updated_at = ? \
             WHERE kind = ? AND account_id = ? AND id = ?",
        ))
        .bind(d.state)
        .bind(&d.doc)
        .bind(d.updated_at.unix_millis())
        .bind(d.kind)
        .bind(d.account_id.as_str())
        .bind(&d.id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn get_resource(
        &self,
        kind: &str,
        account: &AccountId,
        id: &str,
    ) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar(
            &self.sql(
                "SELECT doc FROM gateway_resources WHERE kind = ? AND account_id = ? AND id = ?",
            ),
        )
        .bind(kind)
        .bind(account.as_str())
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)
    }

    async fn list_resources(
        &self,
        kind: &str,
        account: Option<&AccountId>,
    ) -> Result<Vec<String>, StoreError> {
        let sql = self.sql(match account {
            Some(_) => {
                "SELECT doc FROM gateway_resources WHERE kind = ? AND account_id = ? \
                 ORDER BY created_at, id"
            }
            None => "SELECT doc FROM gateway_resources WHERE kind = ? ORDER BY created_at, id",
        });
        let query = sqlx::query_scalar(&sql).bind(kind);
        match account {
            Some(a) => query.bind(a.as_str()),
            None => query,
        }
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)
    }

    async fn delete_resource(
        &self,
        kind: &str,
        account: &AccountId,
        id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            &self.sql("DELETE FROM gateway_resources WHERE kind = ? AND account_id = ? AND id = ?"),
        )
        .bind(kind)
        .bind(account.as_str())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn append_job_log(
        &self,
        account: &AccountId,
        job_id: &str,
        chunks: &[JobLogChunk],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        for c in chunks {
            sqlx::query(&self.sql(
                "INSERT INTO batch_job_logs (account_id, job_id, seq, stream, data, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            ))
            .bind(account.as_str())
            .bind(job_id)
            .bind(c.seq)
            .bind(&c.stream)
            .bind(&c.data)
            .bind(c.created_at.unix_millis())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn job_log(
        &self,
        account: &AccountId,
        job_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<JobLogChunk>, StoreError> {
        let rows = sqlx::query(&self.sql(
            "SELECT seq, stream, data, created_at FROM batch_job_logs \
             WHERE account_id = ? AND job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        ))
        .bind(account.as_str())
        .bind(job_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(JobLogChunk {
                    seq: r.try_get("seq").map_err(db_err)?,
                    stream: r.try_get("stream").map_err(db_err)?,
                    data: r.try_get("data").map_err(db_err)?,
                    created_at: ts(r.try_get("created_at").map_err(db_err)?),
                })
            })
            .collect()
    }

    async fn delete_job_log(&self, account: &AccountId, job_id: &str) -> Result<(), StoreError> {
        sqlx::query(&self.sql("DELETE FROM batch_job_logs WHERE account_id = ? AND job_id = ?"))
            .bind(account.as_str())
            .bind(job_id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}
