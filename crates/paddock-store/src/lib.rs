//! Record stores behind [`paddock_core::store::Store`]: one SQL store
//! over SQLite (the embedded default) or PostgreSQL (shared by several
//! paddock processes).

mod sql;

pub use sql::{
    copy_records, summarize, Backend, CopyError, CopyReport, SqlStore, SqlStoreError, TableSummary,
};
