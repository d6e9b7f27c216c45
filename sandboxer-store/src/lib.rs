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

mod pg;
mod rows;
pub mod schema;
mod sqlite;

pub use pg::{redact, PgDb};
pub use sqlite::SqliteDb;

use std::path::Path;
use std::sync::Arc;

use sandboxer_core::store::db::Db;

/// The database `url` names (`postgres://...` or `postgresql://...`), else
/// the embedded one at `<data_dir>/sandboxer.db`.
pub fn open(url: Option<&str>, data_dir: &Path) -> sandboxer_core::Result<Arc<dyn Db>> {
    match url.filter(|u| !u.trim().is_empty()) {
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            Ok(Arc::new(PgDb::open(u)?))
        }
        Some(u) => Err(sandboxer_core::Error::invalid_config(format!(
            "SANDBOXER_DATABASE_URL `{}` is not a postgres:// URL",
            redact(u)
        ))
        .with_hint(
            "unset it for the embedded SQLite database, or write postgres://USER@HOST:PORT/DB",
        )),
        None => Ok(Arc::new(SqliteDb::open(&data_dir.join(DB_FILE))?)),
    }
}

/// The file name of the embedded database in the data dir.
pub const DB_FILE: &str = "sandboxer.db";
