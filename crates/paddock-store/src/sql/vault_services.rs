//! Vault services and their request log.

use async_trait::async_trait;
use paddock_core::clock::Timestamp;
use paddock_core::error::StoreError;
use paddock_core::ids::{AccountId, VaultId, VaultServiceId, VmId};
use paddock_core::model::{InterceptedRequest, ServiceAuth, VaultRequestLog, VaultService};
use paddock_core::store::VaultServiceStore;
use sqlx::Row;

use super::rows::db_err;
use super::SqlStore;

const SERVICE_COLUMNS: &str =
    "id, vault_id, account_id, host, auth_config, description, enabled, created_at";

fn service_from(row: &sqlx::any::AnyRow) -> Result<VaultService, StoreError> {
    let text = |c: &str| row.try_get::<String, _>(c).map_err(db_err);
    let corrupt = |what: &str| StoreError::Corrupt(format!("vault service: bad {what}"));
    let auth: serde_json::Value =
        serde_json::from_str(&text("auth_config")?).map_err(|_| corrupt("auth_config"))?;
    Ok(VaultService {
        id: text("id")?.parse().map_err(|_| corrupt("id"))?,
        vault_id: text("vault_id")?.parse().map_err(|_| corrupt("vault_id"))?,
        account_id: text("account_id")?
            .parse()
            .map_err(|_| corrupt("account_id"))?,
        host: text("host")?,
        auth: ServiceAuth::from_json(&auth).map_err(|_| corrupt("auth_config"))?,
        description: row.try_get("description").map_err(db_err)?,
        enabled: row.try_get::<i64, _>("enabled").map_err(db_err)? != 0,
        created_at: Timestamp::from_unix_millis(row.try_get("created_at").map_err(db_err)?),
    })
}

#[async_trait]
impl VaultServiceStore for SqlStore {
    async fn insert_vault_service(&self, s: &VaultService) -> Result<(), StoreError> {
        sqlx::query(&self.sql(&format!(
            "INSERT INTO vault_services ({SERVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(s.id.as_str())
        .bind(s.vault_id.as_str())
        .bind(s.account_id.as_str())
        .bind(&s.host)
        .bind(s.auth.to_json().to_string())
        .bind(&s.description)
        .bind(i64::from(s.enabled))
        .bind(s.created_at.unix_millis())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn update_vault_service(&self, s: &VaultService) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "UPDATE vault_services SET auth_config = ?, description = ?, enabled = ? WHERE id = ?",
        ))
        .bind(s.auth.to_json().to_string())
        .bind(&s.description)
        .bind(i64::from(s.enabled))
        .bind(s.id.as_str())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn list_vault_services(&self, vault: &VaultId) -> Result<Vec<VaultService>, StoreError> {
        let rows = sqlx::query(&self.sql(&format!(
            "SELECT {SERVICE_COLUMNS} FROM vault_services WHERE vault_id = ? ORDER BY created_at, id"
        )))
        .bind(vault.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(service_from).collect()
    }

    async fn delete_vault_service(
        &self,
        vault: &VaultId,
        id: &VaultServiceId,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query(&self.sql("DELETE FROM vault_services WHERE vault_id = ? AND id = ?"))
                .bind(vault.as_str())
                .bind(id.as_str())
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_vault_request(
        &self,
        r: &InterceptedRequest,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "INSERT INTO vault_requests (vault_id, account_id, vm_id, service_id, host, method, \
             path, status, duration_ms, credential_name, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(r.vault_id.as_str())
        .bind(r.account_id.as_str())
        .bind(r.vm_id.as_str())
        .bind(r.service_id.as_str())
        .bind(&r.host)
        .bind(&r.method)
        .bind(&r.path)
        .bind(i64::from(r.status))
        .bind(i64::try_from(r.duration_ms).unwrap_or(i64::MAX))
        .bind(&r.credential_name)
        .bind(at.unix_millis())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn list_vault_requests(
        &self,
        vault: &VaultId,
        limit: u32,
    ) -> Result<Vec<VaultRequestLog>, StoreError> {
        let rows = sqlx::query(&self.sql(
            "SELECT id, vault_id, account_id, vm_id, service_id, host, method, path, status, \
             duration_ms, credential_name, created_at FROM vault_requests \
             WHERE vault_id = ? ORDER BY id DESC LIMIT ?",
        ))
        .bind(vault.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|row| {
                let text = |c: &str| row.try_get::<String, _>(c).map_err(db_err);
                let corrupt =
                    |what: &str| StoreError::Corrupt(format!("vault request: bad {what}"));
                let int = |c: &str| row.try_get::<i64, _>(c).map_err(db_err);
                Ok(VaultRequestLog {
                    id: int("id")?,
                    request: InterceptedRequest {
                        vm_id: text("vm_id")?
                            .parse::<VmId>()
                            .map_err(|_| corrupt("vm_id"))?,
                        account_id: text("account_id")?
                            .parse::<AccountId>()
                            .map_err(|_| corrupt("account_id"))?,
                        vault_id: text("vault_id")?.parse().map_err(|_| corrupt("vault_id"))?,
                        service_id: text("service_id")?
                            .parse()
                            .map_err(|_| corrupt("service_id"))?,
                        host: text("host")?,
                        method: text("method")?,
                        path: text("path")?,
                        status: u16::try_from(int("status")?).map_err(|_| corrupt("status"))?,
                        duration_ms: u64::try_from(int("duration_ms")?).unwrap_or(0),
                        credential_name: text("credential_name")?,
                    },
                    created_at: Timestamp::from_unix_millis(int("created_at")?),
                })
            })
            .collect()
    }
}
