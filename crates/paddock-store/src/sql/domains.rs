//! Custom domains in SQLite; their DNS credentials stay sealed.

use async_trait::async_trait;
use paddock_core::ids::{AccountId, ShareId};
use paddock_core::model::{CustomDomain, DomainStatus, Sealed};
use paddock_core::store::DomainStore;
use paddock_core::StoreError;
use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::rows::{db_err, parse, ts};
use super::SqlStore;

const DOMAIN_COLUMNS: &str =
    "id, account_id, share_id, domain, dns_provider, status, last_error, created_at, updated_at";

pub(super) struct DomainRow(CustomDomain);

super::owned!(CustomDomain: "custom_domains", DOMAIN_COLUMNS,
    DomainRow => |row: DomainRow| Ok(row.0));

impl<'r> FromRow<'r, AnyRow> for DomainRow {
    fn from_row(row: &'r AnyRow) -> Result<Self, sqlx::Error> {
        let decode = |e: StoreError| sqlx::Error::Decode(Box::new(e));
        let text = |c: &str| row.try_get::<String, _>(c);
        let status = text("status")?;
        Ok(Self(CustomDomain {
            id: row.try_get("id")?,
            account_id: parse::<AccountId>("account id", &text("account_id")?).map_err(decode)?,
            share_id: parse::<ShareId>("share id", &text("share_id")?).map_err(decode)?,
            domain: text("domain")?,
            dns_provider: row.try_get("dns_provider")?,
            status: DomainStatus::parse(&status)
                .ok_or_else(|| decode(StoreError::Corrupt(format!("domain status {status:?}"))))?,
            last_error: row.try_get("last_error")?,
            created_at: ts(row.try_get("created_at")?),
            updated_at: ts(row.try_get("updated_at")?),
        }))
    }
}

#[async_trait]
impl DomainStore for SqlStore {
    async fn insert_domain(
        &self,
        d: &CustomDomain,
        credentials: Option<&Sealed>,
    ) -> Result<i64, StoreError> {
        let id: i64 = sqlx::query_scalar(
            &self.sql("INSERT INTO custom_domains (account_id, share_id, domain, dns_provider, \
             creds_key_id, creds_nonce, creds_ciphertext, status, last_error, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",)
        )
        .bind(d.account_id.as_str())
        .bind(d.share_id.as_str())
        .bind(&d.domain)
        .bind(&d.dns_provider)
        .bind(credentials.map(|c| c.key_id.clone()))
        .bind(credentials.map(|c| c.nonce.clone()))
        .bind(credentials.map(|c| c.ciphertext.clone()))
        .bind(d.status.as_str())
        .bind(&d.last_error)
        .bind(d.created_at.unix_millis())
        .bind(d.updated_at.unix_millis())
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(id)
    }

    async fn update_domain_status(&self, d: &CustomDomain) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "UPDATE custom_domains SET status = ?, last_error = ?, updated_at = ? WHERE id = ?",
        ))
        .bind(d.status.as_str())
        .bind(&d.last_error)
        .bind(d.updated_at.unix_millis())
        .bind(d.id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn get_domain(
        &self,
        account: &AccountId,
        id: i64,
    ) -> Result<Option<CustomDomain>, StoreError> {
        self.get_owned(account, id).await
    }

    async fn list_domains(&self, account: &AccountId) -> Result<Vec<CustomDomain>, StoreError> {
        let rows: Vec<DomainRow> = sqlx::query_as(&self.sql(&format!(
            "SELECT {DOMAIN_COLUMNS} FROM custom_domains WHERE account_id = ? ORDER BY id"
        )))
        .bind(account.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    async fn find_domain(&self, domain: &str) -> Result<Option<CustomDomain>, StoreError> {
        let row: Option<DomainRow> = sqlx::query_as(&self.sql(&format!(
            "SELECT {DOMAIN_COLUMNS} FROM custom_domains WHERE domain = ?"
        )))
        .bind(domain)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(row.map(|r| r.0))
    }

    async fn domain_credentials(&self, id: i64) -> Result<Option<Sealed>, StoreError> {
        let row: Option<(Option<String>, Option<Vec<u8>>, Option<Vec<u8>>)> = sqlx::query_as(
            &self.sql("SELECT creds_key_id, creds_nonce, creds_ciphertext FROM custom_domains WHERE id = ?",)
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(match row {
            Some((Some(key_id), Some(nonce), Some(ciphertext))) => Some(Sealed {
                key_id,
                nonce,
                ciphertext,
            }),
            _ => None,
        })
    }

    async fn domain_credentials_under_other_keys(
        &self,
        key_id: &str,
    ) -> Result<Vec<(i64, String, Sealed)>, StoreError> {
        let rows: Vec<(i64, String, String, Vec<u8>, Vec<u8>)> = sqlx::query_as(&self.sql(
            "SELECT id, domain, creds_key_id, creds_nonce, creds_ciphertext FROM custom_domains \
             WHERE creds_key_id IS NOT NULL AND creds_key_id != ?",
        ))
        .bind(key_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(rows
            .into_iter()
            .map(|(id, domain, key_id, nonce, ciphertext)| {
                (
                    id,
                    domain,
                    Sealed {
                        key_id,
                        nonce,
                        ciphertext,
                    },
                )
            })
            .collect())
    }

    async fn reseal_domain_credentials(&self, id: i64, s: &Sealed) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "UPDATE custom_domains SET creds_key_id = ?, creds_nonce = ?, creds_ciphertext = ? \
             WHERE id = ?",
        ))
        .bind(&s.key_id)
        .bind(&s.nonce)
        .bind(&s.ciphertext)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn delete_domain(&self, account: &AccountId, id: i64) -> Result<bool, StoreError> {
        self.delete_owned::<CustomDomain>(account, id).await
    }
}
