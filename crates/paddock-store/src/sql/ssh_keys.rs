//! SSH public keys in SQLite.

use async_trait::async_trait;
use paddock_core::ids::AccountId;
use paddock_core::model::SshKey;
use paddock_core::store::SshKeyStore;
use paddock_core::StoreError;
use sqlx::Row;

use super::rows::{db_err, parse, ts};
use super::SqlStore;

#[async_trait]
impl SshKeyStore for SqlStore {
    async fn insert_ssh_key(&self, k: &SshKey) -> Result<i64, StoreError> {
        let id: i64 = sqlx::query_scalar(
            &self.sql("INSERT INTO ssh_keys (account_id, public_key, fingerprint, key_type, comment, created_at, user_email) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",)
        )
        .bind(k.account_id.as_str())
        .bind(&k.public_key)
        .bind(&k.fingerprint)
        .bind(&k.key_type)
        .bind(&k.comment)
        .bind(k.created_at.unix_millis())
        .bind(&k.user_email)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(id)
    }

    async fn list_ssh_keys(&self, account: &AccountId) -> Result<Vec<SshKey>, StoreError> {
        let rows = sqlx::query(&self.sql(&format!(
            "SELECT {COLUMNS} FROM ssh_keys WHERE account_id = ? ORDER BY id"
        )))
        .bind(account.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(key_row).collect()
    }

    async fn find_ssh_keys(&self, fingerprint: &str) -> Result<Vec<SshKey>, StoreError> {
        let rows = sqlx::query(&self.sql(&format!(
            "SELECT {COLUMNS} FROM ssh_keys WHERE fingerprint = ? ORDER BY id"
        )))
        .bind(fingerprint)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(key_row).collect()
    }

    async fn delete_ssh_key(&self, account: &AccountId, id: i64) -> Result<bool, StoreError> {
        self.delete_owned::<SshKey>(account, id).await
    }
}

// SSH keys take the generic delete; they are read by fingerprint or
// listed in key order.
super::owned!(SshKey: "ssh_keys", COLUMNS, KeyRow => |row: KeyRow| Ok(row.0));

pub(super) struct KeyRow(SshKey);

impl<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> for KeyRow {
    fn from_row(row: &'r sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        key_row(row)
            .map(Self)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))
    }
}

const COLUMNS: &str =
    "id, account_id, user_email, public_key, fingerprint, key_type, comment, created_at";

fn key_row(r: &sqlx::any::AnyRow) -> Result<SshKey, StoreError> {
    let get = |c: &str| r.try_get::<String, _>(c).map_err(db_err);
    Ok(SshKey {
        id: r.try_get("id").map_err(db_err)?,
        account_id: parse::<AccountId>("account id", &get("account_id")?)?,
        user_email: get("user_email")?,
        public_key: get("public_key")?,
        fingerprint: get("fingerprint")?,
        key_type: get("key_type")?,
        comment: get("comment")?,
        created_at: ts(r.try_get("created_at").map_err(db_err)?),
    })
}
