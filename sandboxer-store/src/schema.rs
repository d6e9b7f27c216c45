//! Versioned, forward-only migrations. Each is one SQL file applied in one
//! transaction with the version bump, so a crash mid-migration leaves the
//! previous version whole. The version lives in `sandboxer_meta`, which
//! also marks a database as sandboxer's: a database without it that has
//! tables of its own is not ours and is refused untouched.

/// The schema version this build writes.
pub const LATEST: u32 = 1;

/// The SQLite migrations: (version, SQL), in order.
pub const SQLITE: &[(u32, &str)] = &[(1, include_str!("../migrations/sqlite/0001_init.sql"))];

/// The PostgreSQL migrations, the same versions as [`SQLITE`].
pub const POSTGRES: &[(u32, &str)] = &[(1, include_str!("../migrations/postgres/0001_init.sql"))];

/// The table that marks a sandboxer database and holds its version.
pub const META_TABLE: &str = "sandboxer_meta";
