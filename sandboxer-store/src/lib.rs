//! sandboxer's state in a real database, behind the operations of
//! [`sandboxer_core::store::db`] ([`Db`], [`Tx`]).
//!
//! - [`SqliteDb`]: the embedded default, `<data dir>/sandboxer.db` (rusqlite
//!   with the bundled SQLite): WAL, `synchronous=FULL` (an acknowledged
//!   change survives a power loss), a busy timeout, an index for every
//!   filter `list` and the reaper use.
//! - [`schema`]: versioned, forward-only migrations. A database of a newer
//!   schema, or a file that is not a sandboxer database, is refused with
//!   `StoreCorrupt` and left byte for byte as it was.
//!
//! ```
//! use sandboxer_core::store::db::{transact, Db};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let db = sandboxer_store::SqliteDb::open(&dir.path().join("sandboxer.db")).unwrap();
//! let n = transact(&db, |tx| tx.count()).unwrap();
//! assert_eq!(n, 0);
//! assert_eq!(db.schema_version().unwrap(), sandboxer_store::schema::LATEST);
//! ```
//!
//! [`Db`]: sandboxer_core::store::db::Db
//! [`Tx`]: sandboxer_core::store::db::Tx

pub mod schema;
mod sqlite;

pub use sqlite::SqliteDb;

/// The file name of the embedded database in the data dir.
pub const DB_FILE: &str = "sandboxer.db";
