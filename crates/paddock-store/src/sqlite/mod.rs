//! The embedded SQLite store: one file in the data dir, WAL journal,
//! migrations embedded in the binary and applied at open.

mod audit;
mod domains;
mod images;
mod resources;
mod rows;
mod shares;
mod ssh_keys;
mod state;
mod usage;
mod vault_services;
mod webhooks;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use paddock_core::clock::Timestamp;
use paddock_core::ids::{AccountId, ApiKeyId, ExecutionId, SessionId, VmId};
use paddock_core::model::{
    Account, ApiKey, Execution, NewApiKey, Vm, VmFilter, VmStatus, VmStatusSet,
};
use paddock_core::store::{AccountStore, ExecutionStore, VmStore};
use paddock_core::StoreError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use rows::{db_err, ApiKeyRow, ExecutionRow, VmRow, API_KEY_COLUMNS};

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SqliteStoreError {
    #[error("could not open the database at {path}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("could not apply the database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

const VM_COLUMNS: &str = "id, account_id, session_id, status, status_reason, provider, \
    image_variant, memory_mb, vcpu_count, pids_max, metadata, env, lifetime_seconds, created_at, \
    updated_at, started_at, expires_at, terminated_at, runtime_pid, runtime_start_ticks, \
    image_digest, options, disk_mb, cpu_millis";

/// A kind of record an account owns, kept in a table of its own with
/// `id`, `account_id` and `created_at` columns: what the generic get,
/// list and delete below need to know of it.
trait Owned: Sized {
    const TABLE: &'static str;
    const COLUMNS: &'static str;
    type Row: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin;
    fn from_row(row: Self::Row) -> Result<Self, StoreError>;
}

/// `impl Owned for $record`: kept in `$table` as `$columns`, read as
/// `$row` and made into the record by `$from_row`.
macro_rules! owned {
    ($record:ty: $table:literal, $columns:expr, $row:ty => $from_row:expr) => {
        impl super::Owned for $record {
            const TABLE: &'static str = $table;
            const COLUMNS: &'static str = $columns;
            type Row = $row;
            fn from_row(row: $row) -> Result<Self, StoreError> {
                ($from_row)(row)
            }
        }
    };
}
use owned;

impl SqliteStore {
    /// Opens (creating if needed) the database file and migrates it.
    pub async fn open(path: &Path) -> Result<Self, SqliteStoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        Self::connect(options, 8, &path.display().to_string()).await
    }

    /// An in-memory database, for tests.
    pub async fn in_memory() -> Result<Self, SqliteStoreError> {
        let open_error = |source| SqliteStoreError::Open {
            path: ":memory:".into(),
            source,
        };
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(open_error)?
            .foreign_keys(true);
        // One connection: each in-memory connection is its own database.
        Self::connect(options, 1, ":memory:").await
    }

    /// A pool of `connections` over `options`, migrated.
    async fn connect(
        options: SqliteConnectOptions,
        connections: u32,
        path: &str,
    ) -> Result<Self, SqliteStoreError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(connections)
            .connect_with(options)
            .await
            .map_err(|source| SqliteStoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(SqliteStoreError::Migrate)?;
        Ok(Self { pool })
    }

    /// Runs a `DELETE … WHERE k1 = ? AND k2 = ?`; whether a row went.
    pub(super) async fn delete_by_key(
        &self,
        sql: &str,
        first: &str,
        second: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(sql)
            .bind(first)
            .bind(second)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    /// One account's record of kind `T` by id.
    async fn get_owned<T: Owned>(
        &self,
        account: &AccountId,
        id: impl Into<Bind<'_>>,
    ) -> Result<Option<T>, StoreError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE account_id = ? AND id = ?",
            T::COLUMNS,
            T::TABLE
        );
        let row = sqlx::query_as(&sql).bind(account.as_str());
        let row: Option<T::Row> = match id.into() {
            Bind::Text(id) => row.bind(id).fetch_optional(&self.pool).await,
            Bind::Int(id) => row.bind(id).fetch_optional(&self.pool).await,
        }
        .map_err(db_err)?;
        row.map(T::from_row).transpose()
    }

    /// Every record of kind `T` the account owns, newest first.
    async fn list_owned<T: Owned>(&self, account: &AccountId) -> Result<Vec<T>, StoreError> {
        let rows: Vec<T::Row> = sqlx::query_as(&format!(
            "SELECT {} FROM {} WHERE account_id = ? ORDER BY created_at DESC, id",
            T::COLUMNS,
            T::TABLE
        ))
        .bind(account.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter().map(T::from_row).collect()
    }

    /// Deletes one account's record of kind `T`; whether it existed.
    async fn delete_owned<T: Owned>(
        &self,
        account: &AccountId,
        id: impl Into<Bind<'_>>,
    ) -> Result<bool, StoreError> {
        let sql = format!("DELETE FROM {} WHERE account_id = ? AND id = ?", T::TABLE);
        let delete = sqlx::query(&sql).bind(account.as_str());
        let done = match id.into() {
            Bind::Text(id) => delete.bind(id).execute(&self.pool).await,
            Bind::Int(id) => delete.bind(id).execute(&self.pool).await,
        }
        .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn fetch_vms(&self, sql: &str, binds: Vec<Bind<'_>>) -> Result<Vec<Vm>, StoreError> {
        let mut q = sqlx::query_as::<_, VmRow>(sql);
        for b in binds {
            q = match b {
                Bind::Text(s) => q.bind(s),
                Bind::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(&self.pool).await.map_err(db_err)?;
        rows.into_iter().map(VmRow::into_vm).collect()
    }
}

/// A value bound to a query: text, or an integer (a row id).
enum Bind<'a> {
    Text(&'a str),
    Int(i64),
}

impl<'a> From<&'a str> for Bind<'a> {
    fn from(s: &'a str) -> Self {
        Self::Text(s)
    }
}

impl From<i64> for Bind<'_> {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}

fn status_list(set: &VmStatusSet) -> String {
    set.iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}

/// An account's quota usage: its VMs that hold host resources, read
/// through the partial index `vms_live_by_account` (migration 0013).
pub(super) const ACCOUNT_USAGE: &str =
    "SELECT COUNT(*), COALESCE(SUM(memory_mb), 0), COALESCE(SUM(vcpu_count), 0) \
     FROM vms WHERE account_id = ? AND status IN ('creating', 'running', 'stopping')";

#[async_trait]
impl VmStore for SqliteStore {
    async fn insert_vm(&self, vm: &Vm) -> Result<(), StoreError> {
        let placeholders = vec!["?"; VM_COLUMNS.split(", ").count()].join(", ");
        let sql = format!(
            "INSERT INTO vms ({VM_COLUMNS}, seq) VALUES \
             ({placeholders}, (SELECT COALESCE(MAX(seq), 0) + 1 FROM vms))"
        );
        rows::bind_vm(sqlx::query(&sql), vm)?
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn update_vm(&self, vm: &Vm) -> Result<(), StoreError> {
        let sets = VM_COLUMNS
            .split(", ")
            .map(|c| format!("{} = ?", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("UPDATE vms SET {sets} WHERE id = ?");
        rows::bind_vm(sqlx::query(&sql), vm)?
            .bind(vm.id.as_str())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn get_vm(&self, account: &AccountId, id: &VmId) -> Result<Option<Vm>, StoreError> {
        let sql = format!("SELECT {VM_COLUMNS} FROM vms WHERE id = ? AND account_id = ?");
        Ok(self
            .fetch_vms(
                &sql,
                vec![Bind::Text(id.as_str()), Bind::Text(account.as_str())],
            )
            .await?
            .pop())
    }

    async fn find_vm(&self, id: &VmId) -> Result<Option<Vm>, StoreError> {
        let sql = format!("SELECT {VM_COLUMNS} FROM vms WHERE id = ?");
        Ok(self
            .fetch_vms(&sql, vec![Bind::Text(id.as_str())])
            .await?
            .pop())
    }

    async fn list_vms(
        &self,
        account: &AccountId,
        filter: &VmFilter,
    ) -> Result<Vec<Vm>, StoreError> {
        let mut sql = format!("SELECT {VM_COLUMNS} FROM vms WHERE account_id = ?");
        let mut binds = vec![Bind::Text(account.as_str())];
        if let Some(s) = &filter.session_id {
            sql.push_str(" AND session_id = ?");
            binds.push(Bind::Text(s.as_str()));
        }
        if !filter.statuses.is_empty() {
            sql.push_str(&format!(
                " AND status IN ({})",
                status_list(&filter.statuses)
            ));
        }
        if let Some(after) = &filter.after {
            sql.push_str(" AND seq < (SELECT seq FROM vms WHERE id = ? AND account_id = ?)");
            binds.push(Bind::Text(after.as_str()));
            binds.push(Bind::Text(account.as_str()));
        }
        sql.push_str(" ORDER BY seq DESC LIMIT ?");
        binds.push(Bind::Int(i64::from(filter.limit.max(1))));
        self.fetch_vms(&sql, binds).await
    }

    async fn list_vms_in(&self, statuses: &VmStatusSet) -> Result<Vec<Vm>, StoreError> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {VM_COLUMNS} FROM vms WHERE status IN ({}) ORDER BY seq",
            status_list(statuses)
        );
        self.fetch_vms(&sql, Vec::new()).await
    }

    async fn list_expired_vms(&self, now: Timestamp) -> Result<Vec<Vm>, StoreError> {
        let sql = format!(
            "SELECT {VM_COLUMNS} FROM vms WHERE expires_at IS NOT NULL AND expires_at <= ? \
             AND status IN ({}) ORDER BY expires_at",
            status_list(&VmStatusSet::holding_resources())
        );
        self.fetch_vms(&sql, vec![Bind::Int(now.unix_millis())])
            .await
    }

    async fn latest_vm_of_session(
        &self,
        account: &AccountId,
        session: &SessionId,
    ) -> Result<Option<Vm>, StoreError> {
        let sql = format!(
            "SELECT {VM_COLUMNS} FROM vms WHERE account_id = ? AND session_id = ? \
             ORDER BY seq DESC LIMIT 1"
        );
        Ok(self
            .fetch_vms(
                &sql,
                vec![Bind::Text(account.as_str()), Bind::Text(session.as_str())],
            )
            .await?
            .pop())
    }

    async fn account_usage(
        &self,
        account: &AccountId,
    ) -> Result<paddock_core::quotas::Usage, StoreError> {
        let (vms, memory_mb, vcpus): (i64, i64, i64) = sqlx::query_as(ACCOUNT_USAGE)
            .bind(account.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(paddock_core::quotas::Usage {
            vms: count(vms),
            memory_mb: count(memory_mb),
            vcpus: count(vcpus),
            ..Default::default()
        })
    }

    async fn count_vms_by_status(&self) -> Result<Vec<(VmStatus, u64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM vms GROUP BY status")
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        rows.into_iter()
            .map(|(s, n)| {
                let status = VmStatus::parse(&s)
                    .ok_or_else(|| StoreError::Corrupt(format!("VM status {s:?}")))?;
                Ok((status, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }
}

#[async_trait]
impl ExecutionStore for SqliteStore {
    async fn insert_execution(&self, e: &Execution) -> Result<(), StoreError> {
        rows::bind_execution(
            sqlx::query(
                "INSERT INTO executions (status, stdout, stderr, exit_code, execution_time, \
                 cpu_time, error, completed_at, id, account_id, vm_id, session_id, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ),
            e,
        )
        .bind(e.account_id.as_str())
        .bind(e.vm_id.as_str())
        .bind(e.session_id.as_str())
        .bind(e.created_at.unix_millis())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn update_execution(&self, e: &Execution) -> Result<(), StoreError> {
        rows::bind_execution(
            sqlx::query(
                "UPDATE executions SET status = ?, stdout = ?, stderr = ?, exit_code = ?, \
                 execution_time = ?, cpu_time = ?, error = ?, completed_at = ? WHERE id = ?",
            ),
            e,
        )
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn get_execution(
        &self,
        account: &AccountId,
        id: &ExecutionId,
    ) -> Result<Option<Execution>, StoreError> {
        let row: Option<ExecutionRow> = sqlx::query_as(
            "SELECT id, account_id, vm_id, session_id, status, stdout, stderr, exit_code, \
             execution_time, cpu_time, error, created_at, completed_at FROM executions \
             WHERE id = ? AND account_id = ?",
        )
        .bind(id.as_str())
        .bind(account.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(ExecutionRow::into_execution).transpose()
    }

    async fn fail_unfinished_executions(
        &self,
        reason: &str,
        at: Timestamp,
        except: &[paddock_core::ids::ExecutionId],
    ) -> Result<u64, StoreError> {
        let kept = vec!["?"; except.len()].join(", ");
        let sql = if except.is_empty() {
            "UPDATE executions SET status = 'failed', error = ?, completed_at = ? \
             WHERE status = 'running'"
                .to_owned()
        } else {
            format!(
                "UPDATE executions SET status = 'failed', error = ?, completed_at = ? \
                 WHERE status = 'running' AND id NOT IN ({kept})"
            )
        };
        let mut query = sqlx::query(&sql).bind(reason).bind(at.unix_millis());
        for id in except {
            query = query.bind(id.as_str().to_owned());
        }
        let done = query.execute(&self.pool).await.map_err(db_err)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn insert_account(&self, account: &Account) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?)")
            .bind(account.id.as_str())
            .bind(&account.name)
            .bind(account.created_at.unix_millis())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }
    async fn get_account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        let row: Option<(String, String, i64)> =
            sqlx::query_as("SELECT id, name, created_at FROM accounts WHERE id = ?")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        row.map(rows::account).transpose()
    }
    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT id, name, created_at FROM accounts ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        rows.into_iter().map(rows::account).collect()
    }
    async fn insert_api_key(&self, key: &NewApiKey) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, name, prefix, hash, created_at, user_email, \
             description, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(key.key.id.as_str())
        .bind(key.key.account_id.as_str())
        .bind(&key.key.name)
        .bind(&key.key.prefix)
        .bind(&key.hash)
        .bind(key.key.created_at.unix_millis())
        .bind(&key.key.user_email)
        .bind(&key.key.description)
        .bind(key.key.expires_at.map(Timestamp::unix_millis))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }
    async fn find_api_key(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let row: Option<ApiKeyRow> = sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE hash = ? AND revoked_at IS NULL"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(ApiKeyRow::into_key).transpose()
    }
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows: Vec<ApiKeyRow> = sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter().map(ApiKeyRow::into_key).collect()
    }
    async fn get_api_key(
        &self,
        account: &AccountId,
        id: &ApiKeyId,
    ) -> Result<Option<ApiKey>, StoreError> {
        let row: Option<ApiKeyRow> = sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys \
             WHERE account_id = ? AND id = ? AND revoked_at IS NULL"
        ))
        .bind(account.as_str())
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(ApiKeyRow::into_key).transpose()
    }
    async fn list_account_api_keys(&self, account: &AccountId) -> Result<Vec<ApiKey>, StoreError> {
        let rows: Vec<ApiKeyRow> = sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys \
             WHERE account_id = ? AND revoked_at IS NULL ORDER BY created_at, id"
        ))
        .bind(account.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter().map(ApiKeyRow::into_key).collect()
    }
    async fn update_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_keys SET name = ?, description = ?, expires_at = ? \
             WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(&key.name)
        .bind(&key.description)
        .bind(key.expires_at.map(Timestamp::unix_millis))
        .bind(key.id.as_str())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }
    async fn revoke_api_key(&self, id: &ApiKeyId, at: Timestamp) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(at.unix_millis())
                .bind(id.as_str())
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests;
