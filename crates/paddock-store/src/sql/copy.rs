//! Moving an installation's records from one store to another (SQLite to
//! PostgreSQL as a host becomes a cluster), verified table by table.
//!
//! The tables and their columns' types are read from the SQLite schema of
//! this binary (a fresh in-memory store), which the schema test keeps
//! identical to PostgreSQL's: the same copy works in either direction.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::rows::db_err;
use super::{Backend, SqlStore};
use paddock_core::StoreError;

/// Why records could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "the target store already holds records (table {table}: {rows} rows); it must be empty"
    )]
    TargetNotEmpty { table: String, rows: u64 },
    #[error("table {table} differs after the copy: {source_summary} in the source, {target_summary} in the target")]
    Mismatch {
        table: String,
        source_summary: String,
        target_summary: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A table's rows in summary: how many, and a digest of their contents
/// that does not depend on their order (the sum of each row's SHA-256),
/// so two databases that sort text differently still agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    pub rows: u64,
    pub checksum: String,
}

impl std::fmt::Display for TableSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} rows, checksum {}", self.rows, self.checksum)
    }
}

/// What a copy moved, table by table, in the order they were copied.
#[derive(Debug, Clone)]
pub struct CopyReport {
    pub tables: Vec<(String, TableSummary)>,
}

/// A column's type as both backends share it.
#[derive(Debug, Clone, Copy)]
enum ColumnType {
    Integer,
    Text,
    Real,
    Blob,
}

struct Table {
    name: String,
    columns: Vec<(String, ColumnType)>,
    /// Filled by the database (an identity column on PostgreSQL): its
    /// sequence must move past the copied ids.
    identity: Option<String>,
}

/// The schema's tables in creation order (which is also an order where
/// each table comes after those it references).
async fn tables() -> Result<Vec<Table>, StoreError> {
    let schema = SqlStore::in_memory()
        .await
        .map_err(|e| StoreError::Corrupt(format!("the reference schema: {e}")))?;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT IN ('sqlite_sequence', '_sqlx_migrations') ORDER BY rowid",
    )
    .fetch_all(&schema.pool)
    .await
    .map_err(db_err)?;
    let mut tables = Vec::new();
    for name in names {
        let cols: Vec<(String, String)> =
            sqlx::query_as("SELECT name, type FROM pragma_table_info(?) ORDER BY cid")
                .bind(&name)
                .fetch_all(&schema.pool)
                .await
                .map_err(db_err)?;
        let sql: String = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = ?")
            .bind(&name)
            .fetch_one(&schema.pool)
            .await
            .map_err(db_err)?;
        let columns = cols
            .into_iter()
            .map(|(c, ty)| {
                let ty = match ty.as_str() {
                    "INTEGER" => ColumnType::Integer,
                    "TEXT" => ColumnType::Text,
                    "REAL" => ColumnType::Real,
                    "BLOB" => ColumnType::Blob,
                    other => return Err(StoreError::Corrupt(format!("{name}.{c}: type {other}"))),
                };
                Ok((c, ty))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let identity = sql
            .contains("AUTOINCREMENT")
            .then(|| columns.first().map(|(c, _)| c.clone()))
            .flatten();
        tables.push(Table {
            name,
            columns,
            identity,
        });
    }
    Ok(tables)
}

/// One value of a row, as read from either backend.
enum Value {
    Null,
    Integer(i64),
    Text(String),
    Real(f64),
    Blob(Vec<u8>),
}

fn read_value(row: &AnyRow, i: usize, ty: ColumnType) -> Result<Value, StoreError> {
    let value = match ty {
        ColumnType::Integer => row
            .try_get::<Option<i64>, _>(i)
            .map(|v| v.map(Value::Integer)),
        ColumnType::Text => row
            .try_get::<Option<String>, _>(i)
            .map(|v| v.map(Value::Text)),
        ColumnType::Real => row.try_get::<Option<f64>, _>(i).map(|v| v.map(Value::Real)),
        ColumnType::Blob => row
            .try_get::<Option<Vec<u8>>, _>(i)
            .map(|v| v.map(Value::Blob)),
    }
    .map_err(db_err)?;
    Ok(value.unwrap_or(Value::Null))
}

/// A row's bytes for its digest: each value tagged and length-framed, so
/// no two different rows encode alike.
fn row_digest(values: &[Value]) -> [u8; 16] {
    let mut h = Sha256::new();
    for v in values {
        match v {
            Value::Null => h.update([0]),
            Value::Integer(i) => {
                h.update([1]);
                h.update(i.to_be_bytes());
            }
            Value::Text(s) => {
                h.update([2]);
                h.update((s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
            Value::Real(r) => {
                h.update([3]);
                h.update(r.to_bits().to_be_bytes());
            }
            Value::Blob(b) => {
                h.update([4]);
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            }
        }
    }
    let digest = h.finalize();
    let mut out = [0; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

fn select_all(table: &Table) -> String {
    let columns: Vec<&str> = table.columns.iter().map(|(c, _)| c.as_str()).collect();
    format!("SELECT {} FROM {}", columns.join(", "), table.name)
}

/// Reads a table whole, calling `each` with every row's values.
async fn scan(
    store: &SqlStore,
    table: &Table,
    mut each: impl FnMut(Vec<Value>) -> Result<(), StoreError>,
) -> Result<TableSummary, StoreError> {
    use futures::TryStreamExt;
    let sql = select_all(table);
    let mut rows = sqlx::query(&sql).fetch(&store.pool);
    let mut count = 0u64;
    let mut sum = 0u128;
    while let Some(row) = rows.try_next().await.map_err(db_err)? {
        let values = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| read_value(&row, i, *ty))
            .collect::<Result<Vec<_>, _>>()?;
        count += 1;
        sum = sum.wrapping_add(u128::from_be_bytes(row_digest(&values)));
        each(values)?;
    }
    Ok(TableSummary {
        rows: count,
        checksum: format!("{sum:032x}"),
    })
}

/// Every table's summary in `store`.
pub async fn summarize(store: &SqlStore) -> Result<Vec<(String, TableSummary)>, StoreError> {
    let mut out = Vec::new();
    for table in tables().await? {
        let summary = scan(store, &table, |_| Ok(())).await?;
        out.push((table.name, summary));
    }
    Ok(out)
}

/// Copies every record of `from` into `to`, which must be empty, in one
/// transaction on `to`; then reads both again and compares each table's
/// count and checksum. Run with no server on either store.
pub async fn copy_records(from: &SqlStore, to: &SqlStore) -> Result<CopyReport, CopyError> {
    let tables = tables().await?;
    for table in &tables {
        let sql = format!("SELECT COUNT(*) FROM {}", table.name);
        let rows: i64 = sqlx::query_scalar(&sql)
            .fetch_one(&to.pool)
            .await
            .map_err(db_err)?;
        if rows > 0 {
            return Err(CopyError::TargetNotEmpty {
                table: table.name.clone(),
                rows: u64::try_from(rows).unwrap_or(0),
            });
        }
    }
    let mut tx = to.pool.begin().await.map_err(db_err)?;
    let mut copied = BTreeMap::new();
    for table in &tables {
        let columns: Vec<&str> = table.columns.iter().map(|(c, _)| c.as_str()).collect();
        // Floats go as text (see rows::nullable_float).
        let values: Vec<&str> = table
            .columns
            .iter()
            .map(|(_, ty)| match ty {
                ColumnType::Real => "CAST(? AS DOUBLE PRECISION)",
                _ => "?",
            })
            .collect();
        let insert = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            table.name,
            columns.join(", "),
            values.join(", ")
        );
        let insert = to.sql(&insert);
        // Rows are gathered a table at a time: the source is read while
        // the target's transaction is open, which two pools allow.
        let mut rows = Vec::new();
        let summary = scan(from, table, |values| {
            rows.push(values);
            Ok(())
        })
        .await?;
        for values in rows {
            let mut q = sqlx::query(&insert);
            for (v, (_, ty)) in values.into_iter().zip(&table.columns) {
                q = match v {
                    // A null of the column's type: PostgreSQL checks it.
                    Value::Null => match ty {
                        ColumnType::Integer => q.bind(Option::<i64>::None),
                        ColumnType::Text => q.bind(Option::<String>::None),
                        ColumnType::Real => q.bind(Option::<String>::None),
                        ColumnType::Blob => q.bind(Option::<Vec<u8>>::None),
                    },
                    Value::Integer(i) => q.bind(i),
                    Value::Text(s) => q.bind(s),
                    Value::Real(r) => q.bind(super::rows::nullable_float(Some(r))),
                    Value::Blob(b) => q.bind(b),
                };
            }
            q.execute(&mut *tx).await.map_err(db_err)?;
        }
        if let (Backend::Postgres, Some(id)) = (to.backend, &table.identity) {
            // Identity columns were given their ids: the next generated
            // one must come after them.
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{t}', '{id}'), \
                 COALESCE((SELECT MAX({id}) FROM {t}), 0) + 1, false)",
                t = table.name
            );
            sqlx::query(&sql).execute(&mut *tx).await.map_err(db_err)?;
        }
        copied.insert(table.name.clone(), summary);
    }
    if to.backend == Backend::Postgres {
        sqlx::query("SELECT setval('vms_seq', COALESCE((SELECT MAX(seq) FROM vms), 0) + 1, false)")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)?;

    let mut report = Vec::new();
    for table in &tables {
        let source = scan(from, table, |_| Ok(())).await?;
        let target = scan(to, table, |_| Ok(())).await?;
        let copied_then = copied.get(&table.name);
        if source != target || copied_then != Some(&source) {
            return Err(CopyError::Mismatch {
                table: table.name.clone(),
                source_summary: source.to_string(),
                target_summary: target.to_string(),
            });
        }
        report.push((table.name.clone(), target));
    }
    Ok(CopyReport { tables: report })
}
