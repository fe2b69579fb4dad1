//! Shares and their one-time login tokens in SQLite.

use async_trait::async_trait;
use paddock_core::clock::Timestamp;
use paddock_core::ids::{AccountId, ShareId, VmId};
use paddock_core::model::Share;
use paddock_core::store::ShareStore;
use paddock_core::StoreError;
use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::rows::{db_err, parse, ts};
use super::SqlStore;

const SHARE_COLUMNS: &str = "id, account_id, vm_id, port, is_public, token_hash, created_at";

pub(super) struct ShareRow(Share);

super::owned!(Share: "shares", SHARE_COLUMNS, ShareRow => |row: ShareRow| Ok(row.0));

impl<'r> FromRow<'r, AnyRow> for ShareRow {
    fn from_row(row: &'r AnyRow) -> Result<Self, sqlx::Error> {
        let decode = |e: StoreError| sqlx::Error::Decode(Box::new(e));
        let text = |c: &str| row.try_get::<String, _>(c);
        let port: i64 = row.try_get("port")?;
        Ok(Self(Share {
            id: parse::<ShareId>("share id", &text("id")?).map_err(decode)?,
            account_id: parse::<AccountId>("account id", &text("account_id")?).map_err(decode)?,
            vm_id: parse::<VmId>("vm id", &text("vm_id")?).map_err(decode)?,
            port: u16::try_from(port).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            is_public: row.try_get::<i64, _>("is_public")? != 0,
            token_hash: text("token_hash")?,
            created_at: ts(row.try_get("created_at")?),
        }))
    }
}

#[async_trait]
impl ShareStore for SqlStore {
    async fn insert_share(&self, s: &Share) -> Result<(), StoreError> {
        sqlx::query(&self.sql(&format!(
            "INSERT INTO shares ({SHARE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(s.id.as_str())
        .bind(s.account_id.as_str())
        .bind(s.vm_id.as_str())
        .bind(i64::from(s.port))
        .bind(i64::from(s.is_public))
        .bind(&s.token_hash)
        .bind(s.created_at.unix_millis())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn update_share(&self, s: &Share) -> Result<(), StoreError> {
        sqlx::query(&self.sql("UPDATE shares SET is_public = ?, token_hash = ? WHERE id = ?"))
            .bind(i64::from(s.is_public))
            .bind(&s.token_hash)
            .bind(s.id.as_str())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn get_share(
        &self,
        account: &AccountId,
        id: &ShareId,
    ) -> Result<Option<Share>, StoreError> {
        self.get_owned(account, id.as_str()).await
    }

    async fn find_share(&self, id: &ShareId) -> Result<Option<Share>, StoreError> {
        let row: Option<ShareRow> =
            sqlx::query_as(&self.sql(&format!("SELECT {SHARE_COLUMNS} FROM shares WHERE id = ?")))
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(row.map(|r| r.0))
    }

    async fn list_shares(
        &self,
        account: &AccountId,
        vm: Option<&VmId>,
    ) -> Result<Vec<Share>, StoreError> {
        let rows: Vec<ShareRow> = sqlx::query_as(&self.sql(&format!(
            "SELECT {SHARE_COLUMNS} FROM shares WHERE account_id = ? \
             AND (? IS NULL OR vm_id = ?) ORDER BY created_at DESC, id"
        )))
        .bind(account.as_str())
        .bind(vm.map(VmId::as_str))
        .bind(vm.map(VmId::as_str))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    async fn delete_share(&self, account: &AccountId, id: &ShareId) -> Result<bool, StoreError> {
        self.delete_owned::<Share>(account, id.as_str()).await
    }

    async fn delete_shares_of_vm(&self, vm: &VmId) -> Result<u64, StoreError> {
        let done = sqlx::query(&self.sql("DELETE FROM shares WHERE vm_id = ?"))
            .bind(vm.as_str())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected())
    }

    async fn insert_share_login(
        &self,
        token_hash: &str,
        share: &ShareId,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            &self.sql(
                "INSERT INTO share_logins (token_hash, share_id, expires_at) VALUES (?, ?, ?)",
            ),
        )
        .bind(token_hash)
        .bind(share.as_str())
        .bind(expires_at.unix_millis())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn take_share_login(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<ShareId>, StoreError> {
        // One statement: two requests racing with the same token cannot
        // both get it.
        let row: Option<(String, i64)> =
            sqlx::query_as(&self.sql(
                "DELETE FROM share_logins WHERE token_hash = ? RETURNING share_id, expires_at",
            ))
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        match row {
            Some((id, expires)) if expires > now.unix_millis() => {
                Ok(Some(parse::<ShareId>("share id", &id)?))
            }
            _ => Ok(None),
        }
    }
}
