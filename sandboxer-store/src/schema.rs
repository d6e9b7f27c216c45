//! Versioned, forward-only migrations. Each is one SQL file applied in one
//! transaction with the version bump, so a crash mid-migration leaves the
//! previous version whole. The version lives in `sandboxer_meta`, which
//! also marks a database as sandboxer's: a database without it that has
//! tables of its own is not ours and is refused untouched.

/// The schema version this build writes.
pub const LATEST: u32 = 2;

/// The migrations: (version, SQL for both backends), in order. Each is
/// written once; [`sql_for`] fills in the one thing the dialects spell
/// differently.
pub const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_snapshots.sql")),
];

/// The database a migration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A migration's SQL for `backend`.
pub fn sql_for(sql: &str, backend: Backend) -> String {
    let serial = match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::Postgres => "BIGSERIAL PRIMARY KEY",
    };
    sql.replace("@SERIAL@", serial)
}

/// The table that marks a sandboxer database and holds its version.
/// A stored schema version this build can open: `corrupt` makes the error
/// (naming the database) for one from a newer release.
pub fn check_known(
    version: u32,
    corrupt: impl FnOnce(&str) -> sandboxer_core::Error,
) -> sandboxer_core::Result<()> {
    if version > LATEST {
        return Err(corrupt(&format!(
            "its schema is version {version}; this build knows up to {LATEST}"
        ))
        .with_hint("use the sandboxer release that wrote it (or a newer one)"));
    }
    Ok(())
}

pub const META_TABLE: &str = "sandboxer_meta";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dialect_gets_its_sequence_and_nothing_is_left_unfilled() {
        for (_, sql) in MIGRATIONS {
            let lite = sql_for(sql, Backend::Sqlite);
            let pg = sql_for(sql, Backend::Postgres);
            assert!(!lite.contains('@') && !pg.contains('@'));
            assert!(lite.contains("AUTOINCREMENT") && !pg.contains("AUTOINCREMENT"));
            assert!(pg.contains("BIGSERIAL"));
        }
    }
}
