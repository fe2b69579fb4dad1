//! `paddock migrate-store`: moves a stopped installation's records to
//! another store (its SQLite to a PostgreSQL as a host becomes a cluster),
//! verifies them table by table, and points the data dir at the new one.

use std::path::Path;

use anyhow::Context;
use paddock_store::SqlStore;

/// Copies every record from `from` (default: the data dir's store) to
/// `to`, which must be empty, then records `to` as the data dir's store.
pub async fn run(data_dir: &Path, from: Option<&str>, to: &str) -> anyhow::Result<()> {
    let source = crate::serve::open_store(data_dir, from).await?;
    let target = SqlStore::open(to).await.context("open the target store")?;
    let report = paddock_store::copy_records(&source, &target)
        .await
        .context("copy the records")?;
    let mut total = 0;
    for (table, summary) in &report.tables {
        println!(
            "{table:<22} {:>9} rows  checksum {}",
            summary.rows, summary.checksum
        );
        total += summary.rows;
    }
    crate::serve::record_store(data_dir, Some(to))?;
    println!(
        "moved {total} records in {} tables; counts and checksums match. \
         {} now serves from the new store.",
        report.tables.len(),
        data_dir.display()
    );
    Ok(())
}
