//! Measured consumption in SQLite: one row per (account, VM, day), added
//! to by each sample; a VM's counters at its last sample.

use async_trait::async_trait;
use paddock_core::ids::{AccountId, VmId};
use paddock_core::model::{UsageCursor, UsageRecord};
use paddock_core::store::UsageStore;
use paddock_core::StoreError;
use sqlx::FromRow;

use super::rows::{db_err, parse, ts};
use super::SqlStore;

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[derive(FromRow)]
struct UsageRow {
    account_id: String,
    vm_id: String,
    day: String,
    cpu_seconds: f64,
    memory_gib_seconds: f64,
    egress_bytes: i64,
    storage_gib_seconds: f64,
}

impl UsageRow {
    fn into_record(self) -> Result<UsageRecord, StoreError> {
        Ok(UsageRecord {
            account_id: Some(parse("account id", &self.account_id)?),
            vm_id: if self.vm_id.is_empty() {
                None
            } else {
                Some(parse("vm id", &self.vm_id)?)
            },
            day: self.day,
            cpu_seconds: self.cpu_seconds,
            memory_gib_seconds: self.memory_gib_seconds,
            egress_bytes: u64::try_from(self.egress_bytes).unwrap_or(0),
            storage_gib_seconds: self.storage_gib_seconds,
        })
    }
}

const USAGE_COLUMNS: &str = "account_id, vm_id, day, cpu_seconds, memory_gib_seconds, \
    egress_bytes, storage_gib_seconds";

#[async_trait]
impl UsageStore for SqlStore {
    async fn usage_cursors(&self) -> Result<Vec<UsageCursor>, StoreError> {
        let rows: Vec<(String, i64, i64, i64)> =
            sqlx::query_as(&self.sql("SELECT vm_id, cpu_ns, egress_bytes, at FROM usage_cursors"))
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        rows.into_iter()
            .map(|(vm, cpu, egress, at)| {
                Ok(UsageCursor {
                    vm_id: parse("vm id", &vm)?,
                    cpu_ns: u64::try_from(cpu).unwrap_or(0),
                    egress_bytes: u64::try_from(egress).unwrap_or(0),
                    at: ts(at),
                })
            })
            .collect()
    }

    async fn record_usage(
        &self,
        records: &[UsageRecord],
        cursors: &[UsageCursor],
        ended: &[VmId],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        for r in records {
            let account = r.account_id.as_ref().map(AccountId::as_str).unwrap_or("");
            sqlx::query(&self.sql(
                "INSERT INTO usage (account_id, vm_id, day, cpu_seconds, memory_gib_seconds, \
                 egress_bytes, storage_gib_seconds) VALUES (?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (account_id, vm_id, day) DO UPDATE SET \
                 cpu_seconds = usage.cpu_seconds + excluded.cpu_seconds, \
                 memory_gib_seconds = usage.memory_gib_seconds + excluded.memory_gib_seconds, \
                 egress_bytes = usage.egress_bytes + excluded.egress_bytes, \
                 storage_gib_seconds = usage.storage_gib_seconds + excluded.storage_gib_seconds",
            ))
            .bind(account)
            .bind(r.vm_id.as_ref().map(VmId::as_str).unwrap_or(""))
            .bind(&r.day)
            .bind(r.cpu_seconds)
            .bind(r.memory_gib_seconds)
            .bind(to_i64(r.egress_bytes))
            .bind(r.storage_gib_seconds)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        for c in cursors {
            sqlx::query(&self.sql(
                "INSERT INTO usage_cursors (vm_id, cpu_ns, egress_bytes, at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (vm_id) DO UPDATE SET cpu_ns = excluded.cpu_ns, \
                 egress_bytes = excluded.egress_bytes, at = excluded.at",
            ))
            .bind(c.vm_id.as_str())
            .bind(to_i64(c.cpu_ns))
            .bind(to_i64(c.egress_bytes))
            .bind(c.at.unix_millis())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        for vm in ended {
            sqlx::query(&self.sql("DELETE FROM usage_cursors WHERE vm_id = ?"))
                .bind(vm.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn usage_between(
        &self,
        account: &AccountId,
        from: &str,
        to: &str,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        let rows: Vec<UsageRow> = sqlx::query_as(&self.sql(&format!(
            "SELECT {USAGE_COLUMNS} FROM usage WHERE account_id = ? AND day >= ? AND day <= ? \
             ORDER BY day, vm_id"
        )))
        .bind(account.as_str())
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter().map(UsageRow::into_record).collect()
    }

    async fn usage_of_vms(&self, vms: &[VmId]) -> Result<Vec<UsageRecord>, StoreError> {
        let mut out = Vec::new();
        for vm in vms {
            let rows: Vec<UsageRow> = sqlx::query_as(&self.sql(&format!(
                "SELECT {USAGE_COLUMNS} FROM usage WHERE vm_id = ? ORDER BY day"
            )))
            .bind(vm.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            for row in rows {
                out.push(row.into_record()?);
            }
        }
        Ok(out)
    }
}
