//! The nodes sharing the store, their heartbeats, the VMs of those gone
//! silent, and leases on work one process does alone.

use std::time::Duration;

use async_trait::async_trait;
use paddock_core::clock::Timestamp;
use paddock_core::ids::{NodeId, VmId};
use paddock_core::model::Node;
use paddock_core::store::NodeStore;
use paddock_core::StoreError;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::rows::{db_err, parse, ts};
use super::SqlStore;

const COLUMNS: &str =
    "id, address, providers, memory_mb, vcpus, gpus, labels, started_at, heartbeat_at, lease_ms";

fn json<T: serde::Serialize>(what: &str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("node {what}: {e}")))
}

fn node_from(row: &AnyRow) -> Result<Node, StoreError> {
    let text = |c: &str| row.try_get::<String, _>(c).map_err(db_err);
    let int = |c: &str| row.try_get::<i64, _>(c).map_err(db_err);
    let parsed = |c: &str| -> Result<serde_json::Value, StoreError> {
        serde_json::from_str(&text(c)?).map_err(|e| StoreError::Corrupt(format!("node {c}: {e}")))
    };
    fn from<T: serde::de::DeserializeOwned>(
        c: &str,
        v: serde_json::Value,
    ) -> Result<T, StoreError> {
        serde_json::from_value(v).map_err(|e| StoreError::Corrupt(format!("node {c}: {e}")))
    }
    Ok(Node {
        id: parse("node id", &text("id")?)?,
        address: text("address")?,
        providers: from("providers", parsed("providers")?)?,
        memory_mb: u64::try_from(int("memory_mb")?).unwrap_or(0),
        vcpus: u32::try_from(int("vcpus")?).unwrap_or(0),
        gpus: from("gpus", parsed("gpus")?)?,
        labels: from("labels", parsed("labels")?)?,
        started_at: ts(int("started_at")?),
        heartbeat_at: ts(int("heartbeat_at")?),
        lease: Duration::from_millis(u64::try_from(int("lease_ms")?).unwrap_or(0)),
    })
}

#[async_trait]
impl NodeStore for SqlStore {
    async fn upsert_node(&self, n: &Node) -> Result<(), StoreError> {
        let sql = self.sql(
            "INSERT INTO nodes (id, address, providers, memory_mb, vcpus, gpus, labels, \
             started_at, heartbeat_at, lease_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET address = excluded.address, \
             providers = excluded.providers, memory_mb = excluded.memory_mb, \
             vcpus = excluded.vcpus, gpus = excluded.gpus, labels = excluded.labels, \
             started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, \
             lease_ms = excluded.lease_ms",
        );
        sqlx::query(&sql)
            .bind(n.id.as_str())
            .bind(&n.address)
            .bind(json("providers", &n.providers)?)
            .bind(i64::try_from(n.memory_mb).unwrap_or(i64::MAX))
            .bind(i64::from(n.vcpus))
            .bind(json("gpus", &n.gpus)?)
            .bind(json("labels", &n.labels)?)
            .bind(n.started_at.unix_millis())
            .bind(n.heartbeat_at.unix_millis())
            .bind(i64::try_from(n.lease.as_millis()).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn beat_node(&self, id: &NodeId, at: Timestamp) -> Result<bool, StoreError> {
        let sql = self.sql("UPDATE nodes SET heartbeat_at = ? WHERE id = ?");
        let done = sqlx::query(&sql)
            .bind(at.unix_millis())
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_nodes(&self) -> Result<Vec<Node>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM nodes ORDER BY started_at, id");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(node_from).collect()
    }

    async fn committed_memory(&self) -> Result<Vec<(NodeId, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT node_id, CAST(SUM(memory_mb) AS BIGINT) FROM vms \
             WHERE status IN ('creating', 'running', 'stopping') AND node_id <> '' \
             GROUP BY node_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter()
            .map(|(node, mb)| Ok((parse("node id", &node)?, u64::try_from(mb).unwrap_or(0))))
            .collect()
    }

    async fn mark_vms_of_silent_nodes_lost(
        &self,
        now: Timestamp,
        reason: &str,
    ) -> Result<Vec<(VmId, NodeId)>, StoreError> {
        let sql = self.sql(
            "UPDATE vms SET status = 'lost', status_reason = ?, updated_at = ? \
             WHERE status IN ('creating', 'running', 'stopping') AND node_id IN \
             (SELECT id FROM nodes WHERE heartbeat_at + lease_ms <= ?) \
             RETURNING id, node_id",
        );
        let rows: Vec<(String, String)> = sqlx::query_as(&sql)
            .bind(reason)
            .bind(now.unix_millis())
            .bind(now.unix_millis())
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.into_iter()
            .map(|(vm, node)| Ok((parse("vm id", &vm)?, parse("node id", &node)?)))
            .collect()
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<bool, StoreError> {
        // One statement: a lease nobody holds, or that ran out, or that is
        // the holder's own, becomes the holder's; another's live one stays.
        let sql = self.sql(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= ?",
        );
        let done = sqlx::query(&sql)
            .bind(name)
            .bind(holder)
            .bind(until.unix_millis())
            .bind(now.unix_millis())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }
}
