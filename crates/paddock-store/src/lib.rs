//! Record stores behind [`paddock_core::store::Store`]. SQLite is the
//! embedded default; PostgreSQL will sit beside it as a second module
//! implementing the same trait.

mod sqlite;

pub use sqlite::{SqliteStore, SqliteStoreError};
