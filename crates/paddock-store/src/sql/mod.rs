//! The SQL store: SQLite (one file in the data dir, WAL journal) or
//! PostgreSQL, each with its migrations embedded in the binary and
//! applied at open.

mod audit;
mod copy;
mod dialect;
mod domains;
mod images;
mod nodes;
mod resources;
mod rows;
mod shares;
mod ssh_keys;
mod state;
mod usage;
mod vault_services;
mod webhooks;

pub use copy::{copy_records, summarize, CopyError, CopyReport, TableSummary};

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use paddock_core::clock::Timestamp;
use paddock_core::ids::{AccountId, ApiKeyId, ExecutionId, SessionId, VmId};
use paddock_core::model::{
    Account, ApiKey, Execution, NewApiKey, Vm, VmFilter, VmStatus, VmStatusSet,
};
use paddock_core::store::{AccountStore, ExecutionStore, RequestSpend, SharedLock, VmStore};
use paddock_core::StoreError;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

use dialect::{redacted, url_path, StoreUrl};
use rows::{db_err, ApiKeyRow, ExecutionRow, VmRow, API_KEY_COLUMNS};

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SqlStoreError {
    #[error("could not open the database at {path}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("the store {0:?} is neither sqlite:PATH nor postgres://…")]
    Url(String),
    #[error("could not apply the database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// The records of paddock in a SQL database: SQLite (embedded, the
/// default) or PostgreSQL (shared by several processes). One code path
/// serves both through sqlx's `Any` driver: the schema keeps to the
/// types both share (TEXT, BIGINT, DOUBLE, BLOB), the SQL to what both
/// parse, and the few statements that differ ask [`dialect`].
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// The node this store serves: the VMs it makes are this node's, and
    /// the scans a node runs over "every VM" (restart, sweeps, metering)
    /// see this node's only. Reads by account see every node's. `None`:
    /// the installation's administration (keys, master key rotation),
    /// whose scans see every node's VMs.
    node: Option<Arc<str>>,
    /// PostgreSQL only: connections that hold advisory locks for
    /// [`ResourceStore::hold`], apart from the queries' pool, so waiters
    /// never take the connections the holder needs to finish.
    locks: Option<AnyPool>,
}

/// The database behind a [`SqlStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Locks held at once by one process on PostgreSQL (each holds a
/// connection while it is held or awaited).
const LOCK_CONNECTIONS: u32 = 32;

/// Set on every SQLite connection. WAL lets readers run beside the one
/// writer; the busy timeout makes a second writer wait instead of fail.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
    PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;";

const VM_COLUMNS: &str = "id, account_id, session_id, status, status_reason, provider, \
    image_variant, memory_mb, vcpu_count, pids_max, metadata, env, lifetime_seconds, created_at, \
    updated_at, started_at, expires_at, terminated_at, runtime_pid, runtime_start_ticks, \
    image_digest, options, disk_mb, cpu_millis";

/// What a VM's reads take: its columns and the node it runs on, which a
/// write never changes (the insert sets it).
const VM_SELECT: &str = "id, account_id, session_id, status, status_reason, provider, \
    image_variant, memory_mb, vcpu_count, pids_max, metadata, env, lifetime_seconds, created_at, \
    updated_at, started_at, expires_at, terminated_at, runtime_pid, runtime_start_ticks, \
    image_digest, options, disk_mb, cpu_millis, node_id";

/// A kind of record an account owns, kept in a table of its own with
/// `id`, `account_id` and `created_at` columns: what the generic get,
/// list and delete below need to know of it.
trait Owned: Sized {
    const TABLE: &'static str;
    const COLUMNS: &'static str;
    type Row: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin;
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

impl SqlStore {
    /// Opens the store a URL names: `sqlite:PATH` (or a bare path) or
    /// `postgres://…`, migrating it to the binary's schema.
    pub async fn open(url: &str) -> Result<Self, SqlStoreError> {
        match StoreUrl::parse(url)? {
            StoreUrl::Sqlite(path) => Self::open_sqlite(&path).await,
            StoreUrl::Postgres(url) => Self::open_postgres(&url).await,
        }
    }

    /// Opens (creating if needed) a SQLite database file and migrates it.
    pub async fn open_sqlite(path: &Path) -> Result<Self, SqlStoreError> {
        let url = format!("sqlite://{}?mode=rwc", url_path(path));
        Self::connect(&url, Backend::Sqlite, 8, &path.display().to_string()).await
    }

    /// Connects to a PostgreSQL database and migrates it. Its URL may
    /// carry a password: errors name the database without it.
    pub async fn open_postgres(url: &str) -> Result<Self, SqlStoreError> {
        Self::connect(url, Backend::Postgres, 16, &redacted(url)).await
    }

    /// An in-memory SQLite database, for tests.
    pub async fn in_memory() -> Result<Self, SqlStoreError> {
        // One connection: each in-memory connection is its own database.
        Self::connect("sqlite::memory:", Backend::Sqlite, 1, ":memory:").await
    }

    /// Which database this store is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A pool of `connections` to `url`, migrated.
    async fn connect(
        url: &str,
        backend: Backend,
        connections: u32,
        shown_as: &str,
    ) -> Result<Self, SqlStoreError> {
        sqlx::any::install_default_drivers();
        let open_error = |source| SqlStoreError::Open {
            path: shown_as.to_owned(),
            source,
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    // What SqliteConnectOptions would set, which the Any
                    // driver does not carry: the journal and checks every
                    // connection needs.
                    conn.execute(SQLITE_PRAGMAS).await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await.map_err(open_error)?;
        let migrated = match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await,
        };
        migrated.map_err(SqlStoreError::Migrate)?;
        let locks = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(
                AnyPoolOptions::new()
                    .max_connections(LOCK_CONNECTIONS)
                    .min_connections(0)
                    .connect_lazy(url)
                    .map_err(open_error)?,
            ),
        };
        Ok(Self {
            pool,
            backend,
            node: None,
            locks,
        })
    }

    /// This store as node `node` sees it (see [`SqlStore::node`]), having
    /// claimed the VMs made before nodes were recorded.
    pub async fn for_node(mut self, node: &str) -> Result<Self, StoreError> {
        self.node = Some(Arc::from(node));
        sqlx::query(&self.sql("UPDATE vms SET node_id = ? WHERE node_id = ''"))
            .bind(node)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(self)
    }

    /// The node this store serves (`None` until [`SqlStore::for_node`]).
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// `text` in this backend's dialect: the store's SQL is written with
    /// `?` parameters, which PostgreSQL spells `$1`, `$2`, ….
    pub(super) fn sql<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.backend {
            Backend::Sqlite => Cow::Borrowed(text),
            Backend::Postgres => Cow::Owned(dialect::numbered_parameters(text)),
        }
    }

    /// Runs a `DELETE … WHERE k1 = ? AND k2 = ?`; whether a row went.
    pub(super) async fn delete_by_key(
        &self,
        sql: &str,
        first: &str,
        second: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&self.sql(sql))
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
        let sql = self.sql(&sql);
        let row = sqlx::query_as(&sql).bind(account.as_str());
        let row: Option<T::Row> = match id.into() {
            Bind::Text(id) => row.bind(id).fetch_optional(&self.pool).await,
            Bind::MaybeText(id) => row.bind(id).fetch_optional(&self.pool).await,
            Bind::Int(id) => row.bind(id).fetch_optional(&self.pool).await,
        }
        .map_err(db_err)?;
        row.map(T::from_row).transpose()
    }

    /// Every record of kind `T` the account owns, newest first.
    async fn list_owned<T: Owned>(&self, account: &AccountId) -> Result<Vec<T>, StoreError> {
        let rows: Vec<T::Row> = sqlx::query_as(&self.sql(&format!(
            "SELECT {} FROM {} WHERE account_id = ? ORDER BY created_at DESC, id",
            T::COLUMNS,
            T::TABLE
        )))
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
        let sql = self.sql(&sql);
        let delete = sqlx::query(&sql).bind(account.as_str());
        let done = match id.into() {
            Bind::Text(id) => delete.bind(id).execute(&self.pool).await,
            Bind::MaybeText(id) => delete.bind(id).execute(&self.pool).await,
            Bind::Int(id) => delete.bind(id).execute(&self.pool).await,
        }
        .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn fetch_vms(&self, sql: &str, binds: Vec<Bind<'_>>) -> Result<Vec<Vm>, StoreError> {
        let sql = self.sql(sql);
        let mut q = sqlx::query_as::<_, VmRow>(&sql);
        for b in binds {
            q = match b {
                Bind::Text(s) => q.bind(s),
                Bind::MaybeText(s) => q.bind(s),
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
    /// Text or NULL.
    MaybeText(Option<&'a str>),
    Int(i64),
}

/// The VMs a node's scans see, with the node (or NULL: every node's)
/// bound in its place.
const THIS_NODE: &str = "node_id = COALESCE(?, node_id)";

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
    "SELECT COUNT(*), CAST(COALESCE(SUM(memory_mb), 0) AS BIGINT), \
     CAST(COALESCE(SUM(vcpu_count), 0) AS BIGINT) \
     FROM vms WHERE account_id = ? AND status IN ('creating', 'running', 'stopping')";

#[async_trait]
impl VmStore for SqlStore {
    async fn insert_vm(&self, vm: &Vm) -> Result<(), StoreError> {
        let placeholders = vec!["?"; VM_COLUMNS.split(", ").count()].join(", ");
        let sql = format!(
            "INSERT INTO vms ({VM_COLUMNS}, seq, node_id) VALUES \
             ({placeholders}, {}, ?)",
            self.backend.next_vm_seq()
        );
        let node = vm
            .node
            .as_ref()
            .map(|n| n.as_str())
            .or(self.node.as_deref())
            .unwrap_or_default();
        rows::bind_vm(sqlx::query(&self.sql(&sql)), vm)?
            .bind(node)
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
        rows::bind_vm(sqlx::query(&self.sql(&sql)), vm)?
            .bind(vm.id.as_str())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn get_vm(&self, account: &AccountId, id: &VmId) -> Result<Option<Vm>, StoreError> {
        let sql = format!("SELECT {VM_SELECT} FROM vms WHERE id = ? AND account_id = ?");
        Ok(self
            .fetch_vms(
                &sql,
                vec![Bind::Text(id.as_str()), Bind::Text(account.as_str())],
            )
            .await?
            .pop())
    }

    async fn find_vm(&self, id: &VmId) -> Result<Option<Vm>, StoreError> {
        let sql = format!("SELECT {VM_SELECT} FROM vms WHERE id = ?");
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
        let mut sql = format!("SELECT {VM_SELECT} FROM vms WHERE account_id = ?");
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
            "SELECT {VM_SELECT} FROM vms WHERE {THIS_NODE} AND status IN ({}) ORDER BY seq",
            status_list(statuses)
        );
        self.fetch_vms(&sql, vec![Bind::MaybeText(self.node.as_deref())])
            .await
    }

    async fn list_expired_vms(&self, now: Timestamp) -> Result<Vec<Vm>, StoreError> {
        let sql = format!(
            "SELECT {VM_SELECT} FROM vms WHERE expires_at IS NOT NULL AND expires_at <= ? \
             AND {THIS_NODE} AND status IN ({}) ORDER BY expires_at",
            status_list(&VmStatusSet::holding_resources())
        );
        self.fetch_vms(
            &sql,
            vec![
                Bind::Int(now.unix_millis()),
                Bind::MaybeText(self.node.as_deref()),
            ],
        )
        .await
    }

    async fn latest_vm_of_session(
        &self,
        account: &AccountId,
        session: &SessionId,
    ) -> Result<Option<Vm>, StoreError> {
        let sql = format!(
            "SELECT {VM_SELECT} FROM vms WHERE account_id = ? AND session_id = ? \
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
        let (vms, memory_mb, vcpus): (i64, i64, i64) = sqlx::query_as(&self.sql(ACCOUNT_USAGE))
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
        let rows: Vec<(String, i64)> = sqlx::query_as(&self.sql(&format!(
            "SELECT status, COUNT(*) FROM vms WHERE {THIS_NODE} GROUP BY status"
        )))
        .bind(self.node.as_deref())
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
impl ExecutionStore for SqlStore {
    async fn insert_execution(&self, e: &Execution) -> Result<(), StoreError> {
        rows::bind_execution(
            sqlx::query(&self.sql(
                "INSERT INTO executions (status, stdout, stderr, exit_code, execution_time, \
                 cpu_time, error, completed_at, id, account_id, vm_id, session_id, created_at) \
                 VALUES (?, ?, ?, ?, CAST(? AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION), \
                 ?, ?, ?, ?, ?, ?, ?)",
            )),
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
            sqlx::query(&self.sql(
                "UPDATE executions SET status = ?, stdout = ?, stderr = ?, exit_code = ?, \
                 execution_time = CAST(? AS DOUBLE PRECISION), \
                 cpu_time = CAST(? AS DOUBLE PRECISION), error = ?, completed_at = ? WHERE id = ?",
            )),
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
        let row: Option<ExecutionRow> = sqlx::query_as(&self.sql(
            "SELECT id, account_id, vm_id, session_id, status, stdout, stderr, exit_code, \
             execution_time, cpu_time, error, created_at, completed_at FROM executions \
             WHERE id = ? AND account_id = ?",
        ))
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
        // This node's executions: another node's run on.
        let mine =
            format!("WHERE status = 'running' AND vm_id IN (SELECT id FROM vms WHERE {THIS_NODE})");
        let sql = if except.is_empty() {
            format!("UPDATE executions SET status = 'failed', error = ?, completed_at = ? {mine}")
        } else {
            format!(
                "UPDATE executions SET status = 'failed', error = ?, completed_at = ? \
                 {mine} AND id NOT IN ({kept})"
            )
        };
        let sql = self.sql(&sql);
        let mut query = sqlx::query(&sql)
            .bind(reason)
            .bind(at.unix_millis())
            .bind(self.node.as_deref());
        for id in except {
            query = query.bind(id.as_str().to_owned());
        }
        let done = query.execute(&self.pool).await.map_err(db_err)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl AccountStore for SqlStore {
    async fn insert_account(&self, account: &Account) -> Result<(), StoreError> {
        sqlx::query(&self.sql("INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?)"))
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
            sqlx::query_as(&self.sql("SELECT id, name, created_at FROM accounts WHERE id = ?"))
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        row.map(rows::account).transpose()
    }
    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            &self.sql("SELECT id, name, created_at FROM accounts ORDER BY created_at, id"),
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter().map(rows::account).collect()
    }
    async fn insert_api_key(&self, key: &NewApiKey) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "INSERT INTO api_keys (id, account_id, name, prefix, hash, created_at, user_email, \
             description, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
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
        let row: Option<ApiKeyRow> = sqlx::query_as(&self.sql(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE hash = ? AND revoked_at IS NULL"
        )))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(ApiKeyRow::into_key).transpose()
    }
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows: Vec<ApiKeyRow> = sqlx::query_as(&self.sql(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
        )))
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
        let row: Option<ApiKeyRow> = sqlx::query_as(&self.sql(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys \
             WHERE account_id = ? AND id = ? AND revoked_at IS NULL"
        )))
        .bind(account.as_str())
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(ApiKeyRow::into_key).transpose()
    }
    async fn list_account_api_keys(&self, account: &AccountId) -> Result<Vec<ApiKey>, StoreError> {
        let rows: Vec<ApiKeyRow> = sqlx::query_as(&self.sql(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys \
             WHERE account_id = ? AND revoked_at IS NULL ORDER BY created_at, id"
        )))
        .bind(account.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter().map(ApiKeyRow::into_key).collect()
    }
    async fn update_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "UPDATE api_keys SET name = ?, description = ?, expires_at = ? \
             WHERE id = ? AND revoked_at IS NULL",
        ))
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
        let done = sqlx::query(
            &self.sql("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"),
        )
        .bind(at.unix_millis())
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn hold_account_creates(&self, account: &AccountId) -> Result<SharedLock, StoreError> {
        paddock_core::store::ResourceStore::hold(self, &format!("account-creates/{account}")).await
    }

    async fn take_requests(
        &self,
        account: &AccountId,
        rate: u32,
        capacity: f64,
        take: u32,
    ) -> Result<RequestSpend, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(RequestSpend::Unshared);
        }
        // One statement: the row's lock orders concurrent takes from every
        // process, and the refill is reckoned by the database's clock. A
        // bucket with less than a token grants none (it is refilled, as a
        // process's own bucket is), and what it holds tells the wait.
        let (granted, tokens): (f64, f64) = sqlx::query_as(
            "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT AS ms) \
             INSERT INTO request_buckets (account_id, tokens, at, granted) \
               SELECT $1, $3 - LEAST($4, floor($3)), ms, LEAST($4, floor($3)) FROM now \
             ON CONFLICT (account_id) DO UPDATE SET \
               granted = LEAST($4, floor(LEAST($3, request_buckets.tokens \
                 + (EXCLUDED.at - request_buckets.at) * $2 / 1000.0))), \
               tokens = LEAST($3, request_buckets.tokens \
                 + (EXCLUDED.at - request_buckets.at) * $2 / 1000.0) \
                 - LEAST($4, floor(LEAST($3, request_buckets.tokens \
                 + (EXCLUDED.at - request_buckets.at) * $2 / 1000.0))), \
               at = EXCLUDED.at \
             RETURNING granted, tokens",
        )
        .bind(account.as_str())
        .bind(f64::from(rate))
        .bind(capacity)
        .bind(f64::from(take.max(1)))
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        if granted >= 1.0 {
            // At most `take`, a u32.
            return Ok(RequestSpend::Granted(granted as u32));
        }
        Ok(RequestSpend::Wait(paddock_core::quotas::wait_for_a_token(
            tokens, rate,
        )))
    }
}

#[cfg(test)]
mod tests;
