//! The embedded backend: one SQLite file, shared by every `sandboxer`
//! process on the machine (WAL: readers never wait for the writer; writers
//! take the lock at `BEGIN IMMEDIATE` and wait up to the busy timeout).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use sandboxer_core::model::{Actor, Sandbox};
use sandboxer_core::snapshot::{Snapshot, SnapshotState};
use sandboxer_core::store::db::{
    CensusRow, Cursor, Db, Derived, LedgerRow, ListQuery, OutboxItem, TokenRow, Tx,
};
use sandboxer_core::store::IdempotencyEntry;
use sandboxer_core::uploads::UploadRecord;
use sandboxer_core::{Error, ErrorKind, Result};

use crate::rows::*;
use crate::schema::{self, META_TABLE};

/// How long a writer waits for another process's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// sandboxer's state in one SQLite file.
pub struct SqliteDb {
    path: PathBuf,
    /// Idle connections, reused by the next transaction.
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for SqliteDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDb")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteDb {
    /// Open (creating it and its folder when missing) and migrate to the
    /// latest schema. A file that is not a SQLite database, a database that
    /// is not sandboxer's, or one of a newer schema is `StoreCorrupt`, and
    /// nothing is written to it.
    pub fn open(path: &Path) -> Result<SqliteDb> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        // Only its owner reads it (token hashes, every record): a new file
        // is made 0600 before SQLite opens it, and SQLite gives its
        // write-ahead log and index the same mode.
        if !path.exists() {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(format!("creating {}", path.display()), e)),
            }
        }
        let db = SqliteDb {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        };
        let conn = db.connect()?;
        db.check_and_migrate(conn)?;
        Ok(db)
    }

    fn connect(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.error("opening", e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.error("opening", e))?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// Refuse what is not ours (before any write), then set the journal
    /// mode and apply the migrations this file lacks.
    fn check_and_migrate(&self, mut conn: Connection) -> Result<()> {
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        let tables: Vec<String> = until_not_busy(deadline, || {
            let mut st = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<std::result::Result<_, _>>()
        })
        .map_err(|e| self.error("reading", e))?;
        let version = if tables.iter().any(|t| t == META_TABLE) {
            let v: Option<String> = conn
                .query_row(
                    &format!("SELECT value FROM {META_TABLE} WHERE key = 'version'"),
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.error("reading", e))?;
            v.and_then(|v| v.parse::<u32>().ok())
                .ok_or_else(|| self.corrupt("its sandboxer_meta table has no schema version"))?
        } else if tables.iter().any(|t| !t.starts_with("sqlite_")) {
            return Err(self.corrupt(&format!(
                "it is a SQLite database, but not sandboxer's (tables: {})",
                tables.join(", ")
            )));
        } else {
            0
        };
        schema::check_known(version, |why| self.corrupt(why))?;
        // A fresh file opened by several processes at once: the switch to
        // WAL wants the file to itself, and SQLite answers "busy" at once
        // (without its busy handler) when waiting could deadlock.
        until_not_busy(deadline, || conn.pragma_update(None, "journal_mode", "WAL"))
            .map_err(|e| self.error("opening", e))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.error("opening", e))?;
        for (v, sql) in schema::MIGRATIONS.iter().filter(|(v, _)| *v > version) {
            let sql = schema::sql_for(sql, schema::Backend::Sqlite);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| self.error("migrating", e))?;
            // Another process may have migrated while this one waited.
            let now: Option<String> = tx
                .query_row(
                    &format!("SELECT value FROM {META_TABLE} WHERE key = 'version'"),
                    [],
                    |r| r.get(0),
                )
                .optional()
                .or_else(|e| match e {
                    rusqlite::Error::SqliteFailure(_, Some(ref m))
                        if m.contains("no such table") =>
                    {
                        Ok(None)
                    }
                    e => Err(e),
                })
                .map_err(|e| self.error("migrating", e))?;
            if now.and_then(|n| n.parse::<u32>().ok()).unwrap_or(0) >= *v {
                continue;
            }
            tx.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL);\n{sql}"
            ))
            .map_err(|e| self.error(&format!("migrating to schema {v}"), e))?;
            tx.execute(
                &format!(
                    "INSERT INTO {META_TABLE} (key, value) VALUES ('version', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                ),
                params![v.to_string()],
            )
            .map_err(|e| self.error("migrating", e))?;
            tx.commit()
                .map_err(|e| self.error(&format!("migrating to schema {v}"), e))?;
            tracing::info!("{}: migrated to schema {v}", self.path.display());
        }
        self.idle.lock().expect("pool lock").push(conn);
        Ok(())
    }

    fn checkout(&self) -> Result<Connection> {
        let conn = self.idle.lock().expect("pool lock").pop();
        match conn {
            Some(c) => Ok(c),
            None => {
                let c = self.connect()?;
                c.pragma_update(None, "synchronous", "FULL")
                    .map_err(|e| self.error("opening", e))?;
                Ok(c)
            }
        }
    }

    fn checkin(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < 8 {
            idle.push(conn);
        }
    }

    fn corrupt(&self, why: &str) -> Error {
        Error::new(
            ErrorKind::StoreCorrupt,
            format!("{} is not a database this build can use: {why}", self.path.display()),
        )
        .with_hint("nothing was written to it; move it aside (`mv FILE FILE.bad`) to start a new one, or point SANDBOXER_DATA_DIR elsewhere")
    }

    fn error(&self, what: &str, e: rusqlite::Error) -> Error {
        map_error(&self.path, what, e)
    }

    /// `f` in a transaction: a write one (`BEGIN IMMEDIATE`: the write lock
    /// up front) or a read one.
    fn run(
        &self,
        write: bool,
        f: &mut (dyn FnMut(&mut dyn Tx) -> Result<()> + Send),
    ) -> Result<()> {
        let (behavior, committing) = if write {
            (TransactionBehavior::Immediate, "committing to")
        } else {
            (TransactionBehavior::Deferred, "reading")
        };
        let mut conn = self.checkout()?;
        let result = (|| {
            let tx = conn
                .transaction_with_behavior(behavior)
                .map_err(|e| self.error("starting a transaction on", e))?;
            let mut t = SqliteTx {
                tx,
                path: &self.path,
            };
            f(&mut t)?;
            t.tx.commit().map_err(|e| self.error(committing, e))
        })();
        // A connection whose transaction failed half-way is rolled back by
        // the drop of its `Transaction`; it can be reused.
        self.checkin(conn);
        result
    }
}

/// Run `f` again while SQLite answers "busy" or "locked" at once (where its
/// busy handler does not wait, to avoid a deadlock), backing off from 5 ms
/// to 100 ms, until `deadline`; then its last answer.
fn until_not_busy<T>(
    deadline: std::time::Instant,
    mut f: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let mut pause = Duration::from_millis(5);
    loop {
        match f() {
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked)
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// A SQLite error as sandboxer's: a file that is not a database is
/// `StoreCorrupt`; a full disk, a read-only file and a lock held too long
/// say so.
fn map_error(path: &Path, what: &str, e: rusqlite::Error) -> Error {
    let shown = path.display();
    let code = e.sqlite_error_code();
    match code {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => Error::new(
            ErrorKind::StoreCorrupt,
            format!("{shown} is not a database this build can use: {e}"),
        )
        .with_hint(
            "nothing was written to it; move it aside (`mv FILE FILE.bad`) to start a new one",
        ),
        Some(ErrorCode::DiskFull) => Error::new(
            ErrorKind::Io,
            format!("{what} {shown}: the disk is full; nothing of this change was written"),
        )
        .with_hint("free some space; every change acknowledged before is kept"),
        Some(ErrorCode::ReadOnly)
        | Some(ErrorCode::CannotOpen)
        | Some(ErrorCode::PermissionDenied) => {
            Error::new(ErrorKind::Io, format!("{what} {shown}: {e}"))
                .with_hint("the data dir must be writable by this user (or set SANDBOXER_DATA_DIR)")
        }
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => Error::new(
            ErrorKind::Io,
            format!(
                "{what} {shown}: another process held the database for over {}s",
                BUSY_TIMEOUT.as_secs()
            ),
        ),
        _ => Error::new(ErrorKind::Io, format!("{what} {shown}: {e}")),
    }
}

impl Db for SqliteDb {
    fn transaction(&self, f: &mut (dyn FnMut(&mut dyn Tx) -> Result<()> + Send)) -> Result<()> {
        self.run(true, f)
    }

    fn read(&self, f: &mut (dyn FnMut(&mut dyn Tx) -> Result<()> + Send)) -> Result<()> {
        self.run(false, f)
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn schema_version(&self) -> Result<u32> {
        let conn = self.checkout()?;
        let v: String = conn
            .query_row(
                &format!("SELECT value FROM {META_TABLE} WHERE key = 'version'"),
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.error("reading", e))?;
        self.checkin(conn);
        v.parse()
            .map_err(|_| self.corrupt("its schema version is not a number"))
    }
}

struct SqliteTx<'a> {
    tx: rusqlite::Transaction<'a>,
    path: &'a Path,
}

/// The whole row of a sandbox: `?1` the id, then its columns.
const INSERT_SANDBOX: &str = "INSERT INTO sandboxes (id, state, actor, profile, host, extension, created_at, expires_at, ended_at, record, backend)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
const UPDATE_SANDBOX: &str =
    "UPDATE sandboxes SET state = ?2, actor = ?3, profile = ?4, host = ?5, extension = ?6,
     created_at = ?7, expires_at = ?8, ended_at = ?9, record = ?10, backend = ?11 WHERE id = ?1";

impl SqliteTx<'_> {
    /// Run a statement, prepared once per connection (statements are
    /// cached: a ledger entry's transaction runs six).
    fn exec(&self, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
        self.tx.prepare_cached(sql)?.execute(p)
    }

    /// The one row of a query, prepared once per connection.
    fn row<T>(
        &self,
        sql: &str,
        p: impl rusqlite::Params,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.tx.prepare_cached(sql)?.query_row(p, f)
    }

    fn err(&self, what: &str, e: rusqlite::Error) -> Error {
        map_error(self.path, what, e)
    }

    /// The `record` of row `id` of `table` (uploads, snapshots), read as a
    /// `what`.
    fn record_by_id<T: serde::de::DeserializeOwned>(
        &self,
        table: &str,
        what: &str,
        id: &str,
    ) -> Result<Option<T>> {
        let rec: Option<String> = self
            .row(
                &format!("SELECT record FROM {table} WHERE id = ?1"),
                [id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err("reading", e))?;
        rec.map(|r| from_json(what, &r)).transpose()
    }

    /// Run `sql` (an insert or update of a whole sandbox row: `?1` the id,
    /// then its columns) for `s`; the rows it touched.
    fn write_sandbox(
        &self,
        sql: &str,
        s: &Sandbox,
        on_error: impl FnOnce(&Self, rusqlite::Error) -> Error,
    ) -> Result<usize> {
        let (rec, backend) = record_columns(s)?;
        self.exec(
            sql,
            params![
                s.id,
                s.state().as_str(),
                s.actor.to_string(),
                s.profile,
                s.host,
                s.extension,
                ts(s.created_at),
                s.expires_at.map(ts),
                s.ended_at.map(ts),
                rec,
                backend
            ],
        )
        .map_err(|e| on_error(self, e))
    }

    fn is_unique_violation(e: &rusqlite::Error) -> bool {
        e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
    }
}

impl Tx for SqliteTx<'_> {
    fn sandbox(&mut self, id: &str) -> Result<Option<Sandbox>> {
        let rec: Option<(String, Option<String>)> = self
            .row(
                "SELECT record, backend FROM sandboxes WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err("reading", e))?;
        rec.map(|(r, b)| record_from(&r, b.as_deref())).transpose()
    }

    fn insert_sandbox(&mut self, s: &Sandbox) -> Result<()> {
        self.write_sandbox(INSERT_SANDBOX, s, |tx, e| {
            if Self::is_unique_violation(&e) {
                Error::conflict(format!("sandbox {} is already recorded", s.id))
            } else {
                tx.err("writing", e)
            }
        })?;
        Ok(())
    }

    fn update_sandbox(&mut self, s: &Sandbox) -> Result<()> {
        let n = self.write_sandbox(UPDATE_SANDBOX, s, |tx, e| tx.err("writing", e))?;
        if n == 0 {
            return Err(sandboxer_core::store::unknown_sandbox(&s.id));
        }
        Ok(())
    }

    fn list_json(&mut self, q: &ListQuery) -> Result<(Vec<String>, Option<Cursor>)> {
        let mut sql = String::from("SELECT seq, record FROM sandboxes WHERE seq > ?");
        let mut args: Vec<rusqlite::types::Value> = vec![q.after.map_or(0, |c| c.0).into()];
        let f = &q.filter;
        if !f.states.is_empty() {
            sql.push_str(" AND state IN (");
            for (i, s) in f.states.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
                args.push(s.as_str().to_string().into());
            }
            sql.push(')');
        }
        if let Some(a) = &f.actor {
            sql.push_str(" AND actor = ?");
            args.push(a.to_string().into());
        }
        if let Some(p) = &f.profile {
            sql.push_str(" AND profile = ?");
            args.push(p.clone().into());
        }
        if let Some(h) = &f.host {
            sql.push_str(" AND host = ?");
            args.push(h.clone().into());
        }
        if f.live_only {
            // The live states by name, so the state index finds them
            // instead of a scan of every ended record.
            sql.push_str(&format!(" AND state IN {STATE_LIVE}"));
        }
        sql.push_str(" ORDER BY seq");
        if let Some(n) = q.limit {
            // One more than asked: whether there is a next page.
            sql.push_str(&format!(" LIMIT {}", n.saturating_add(1)));
        }
        let mut st = self
            .tx
            .prepare_cached(&sql)
            .map_err(|e| self.err("reading", e))?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| map_error(self.path, "reading", e))?;
        let mut records = Vec::new();
        let mut seqs = Vec::new();
        for row in rows {
            let (seq, rec) = row.map_err(|e| map_error(self.path, "reading", e))?;
            records.push(rec);
            seqs.push(seq);
        }
        let next = match q.limit {
            Some(n) if records.len() > n => {
                records.truncate(n);
                Some(Cursor(seqs[n - 1]))
            }
            _ => None,
        };
        Ok((records, next))
    }

    fn live_per_host(&mut self) -> Result<BTreeMap<String, u32>> {
        let mut st = self
            .tx
            .prepare_cached(&format!(
                "SELECT host, COUNT(*) FROM sandboxes WHERE state NOT IN {STATE_ENDED} GROUP BY host"
            ))
            .map_err(|e| map_error(self.path, "reading", e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))
            .map_err(|e| map_error(self.path, "reading", e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| map_error(self.path, "reading", e))
    }

    fn count(&mut self) -> Result<u64> {
        self.row("SELECT COUNT(*) FROM sandboxes", [], |r| r.get(0))
            .map_err(|e| self.err("reading", e))
    }

    fn census(&mut self) -> Result<Vec<CensusRow>> {
        let mut out = Vec::new();
        for sql in [CENSUS_LIVE, CENSUS_ENDED] {
            let mut st = self
                .tx
                .prepare_cached(sql)
                .map_err(|e| map_error(self.path, "reading", e))?;
            let rows = st
                .query_map([], |r| {
                    Ok(CensusRow {
                        state: r.get(0)?,
                        profile: r.get(1)?,
                        extension: r.get(2)?,
                        host: r.get(3)?,
                        count: r.get(4)?,
                    })
                })
                .map_err(|e| map_error(self.path, "reading", e))?;
            for r in rows {
                out.push(r.map_err(|e| map_error(self.path, "reading", e))?);
            }
        }
        Ok(out)
    }

    fn idempotency(&mut self, actor: &Actor, key: &str) -> Result<Option<IdempotencyEntry>> {
        self.row(
            "SELECT request_hash, sandbox_id FROM idempotency WHERE actor = ?1 AND key = ?2",
            params![actor.to_string(), key],
            |r| {
                Ok(IdempotencyEntry {
                    request_hash: r.get(0)?,
                    sandbox_id: r.get(1)?,
                })
            },
        )
        .optional()
        .map_err(|e| self.err("reading", e))
    }

    fn idempotency_keys(&mut self) -> Result<Vec<(Actor, String, IdempotencyEntry)>> {
        let mut st = self
            .tx
            .prepare_cached(
                "SELECT actor, key, request_hash, sandbox_id FROM idempotency ORDER BY actor, key",
            )
            .map_err(|e| map_error(self.path, "reading", e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    IdempotencyEntry {
                        request_hash: r.get(2)?,
                        sandbox_id: r.get(3)?,
                    },
                ))
            })
            .map_err(|e| map_error(self.path, "reading", e))?;
        let mut out = Vec::new();
        for row in rows {
            let (who, key, entry) = row.map_err(|e| map_error(self.path, "reading", e))?;
            out.push((actor(&who)?, key, entry));
        }
        Ok(out)
    }

    fn put_idempotency(
        &mut self,
        actor: &Actor,
        key: &str,
        entry: &IdempotencyEntry,
    ) -> Result<()> {
        self.exec(
                "INSERT INTO idempotency (actor, key, request_hash, sandbox_id) VALUES (?1, ?2, ?3, ?4)",
                params![actor.to_string(), key, entry.request_hash, entry.sandbox_id],
            )
            .map_err(|e| {
                if Self::is_unique_violation(&e) {
                    Error::conflict(format!("idempotency key `{key}` is already used"))
                } else {
                    self.err("writing", e)
                }
            })?;
        Ok(())
    }

    fn push_event(&mut self, sandbox_id: &str, event: &serde_json::Value) -> Result<()> {
        self.exec(
            "INSERT INTO outbox (sandbox_id, event) VALUES (?1, ?2)",
            params![sandbox_id, to_json(event)?],
        )
        .map_err(|e| self.err("writing", e))?;
        Ok(())
    }

    fn outbox(&mut self, limit: usize) -> Result<Vec<OutboxItem>> {
        let mut st = self
            .tx
            .prepare_cached("SELECT seq, sandbox_id, event FROM outbox ORDER BY seq LIMIT ?1")
            .map_err(|e| map_error(self.path, "reading", e))?;
        let rows = st
            .query_map([limit.min(i64::MAX as usize) as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| map_error(self.path, "reading", e))?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, sandbox_id, event) = row.map_err(|e| map_error(self.path, "reading", e))?;
            out.push(OutboxItem {
                seq,
                sandbox_id,
                event: from_json("outbox event", &event)?,
            });
        }
        Ok(out)
    }

    fn replace_event(&mut self, seq: i64, event: &serde_json::Value) -> Result<()> {
        self.exec(
            "UPDATE outbox SET event = ?1 WHERE seq = ?2",
            params![to_json(event)?, seq],
        )
        .map_err(|e| self.err("writing", e))?;
        Ok(())
    }

    fn ack_events(&mut self, seqs: &[i64]) -> Result<()> {
        let mut st = self
            .tx
            .prepare_cached("DELETE FROM outbox WHERE seq = ?1")
            .map_err(|e| map_error(self.path, "writing", e))?;
        for s in seqs {
            st.execute([s])
                .map_err(|e| map_error(self.path, "writing", e))?;
        }
        Ok(())
    }

    fn outbox_depth(&mut self) -> Result<u64> {
        self.row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
            .map_err(|e| self.err("reading", e))
    }

    fn upload(&mut self, id: &str) -> Result<Option<UploadRecord>> {
        self.record_by_id("uploads", "upload", id)
    }

    fn put_upload(&mut self, u: &UploadRecord) -> Result<()> {
        self.exec(
            "INSERT INTO uploads (id, actor, created_at, record) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET record = excluded.record",
            params![u.id, u.actor.to_string(), ts(u.created_at), to_json(u)?],
        )
        .map_err(|e| self.err("writing", e))?;
        Ok(())
    }

    fn remove_upload(&mut self, id: &str) -> Result<()> {
        self.exec("DELETE FROM uploads WHERE id = ?1", [id])
            .map_err(|e| self.err("writing", e))?;
        Ok(())
    }

    fn uploads(&mut self, actor: Option<&Actor>) -> Result<Vec<UploadRecord>> {
        let who = actor.map(ToString::to_string);
        let mut st = self
            .tx
            .prepare_cached(
                "SELECT record FROM uploads WHERE ?1 IS NULL OR actor = ?1 ORDER BY created_at, id",
            )
            .map_err(|e| map_error(self.path, "reading", e))?;
        let rows = st
            .query_map([who], |r| r.get::<_, String>(0))
            .map_err(|e| map_error(self.path, "reading", e))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(from_json(
                "upload",
                &r.map_err(|e| map_error(self.path, "reading", e))?,
            )?);
        }
        Ok(out)
    }

    fn snapshot(&mut self, id: &str) -> Result<Option<Snapshot>> {
        self.record_by_id("snapshots", "snapshot", id)
    }

    fn put_snapshot(&mut self, s: &Snapshot) -> Result<()> {
        self.exec(
            "INSERT INTO snapshots (id, state, actor, source, created_at, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, record = excluded.record",
            params![
                s.id,
                s.state.as_str(),
                s.actor.to_string(),
                s.source,
                ts(s.created_at),
                to_json(s)?
            ],
        )
        .map_err(|e| self.err("writing", e))?;
        Ok(())
    }

    fn snapshots(
        &mut self,
        actor: Option<&Actor>,
        states: &[SnapshotState],
    ) -> Result<Vec<Snapshot>> {
        let who = actor.map(ToString::to_string);
        let mut st = self
            .tx
            .prepare_cached(
                "SELECT state, record FROM snapshots WHERE ?1 IS NULL OR actor = ?1 ORDER BY seq",
            )
            .map_err(|e| map_error(self.path, "reading", e))?;
        let rows = st
            .query_map([who], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| map_error(self.path, "reading", e))?;
        let mut out = Vec::new();
        for r in rows {
            let (state, rec) = r.map_err(|e| map_error(self.path, "reading", e))?;
            if wanted_state(&state, states) {
                out.push(from_json("snapshot", &rec)?);
            }
        }
        Ok(out)
    }

    fn put_token(&mut self, t: &TokenRow) -> Result<()> {
        self.exec(
            "INSERT INTO tokens (name, actor, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![t.name, t.actor.to_string(), t.hash, ts(t.created_at)],
        )
        .map_err(|e| {
            if Self::is_unique_violation(&e) {
                Error::conflict(format!("a token named `{}` exists", t.name))
            } else {
                self.err("writing", e)
            }
        })?;
        Ok(())
    }

    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRow>> {
        let row: Option<(String, String, String, String)> = self
            .tx
            .query_row(
                "SELECT name, actor, hash, created_at FROM tokens WHERE hash = ?1",
                [hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(|e| self.err("reading", e))?;
        row.map(token_row).transpose()
    }

    fn tokens(&mut self) -> Result<Vec<TokenRow>> {
        let mut st = self
            .tx
            .prepare_cached(
                "SELECT name, actor, hash, created_at FROM tokens ORDER BY created_at, name",
            )
            .map_err(|e| map_error(self.path, "reading", e))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(|e| map_error(self.path, "reading", e))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(token_row(
                r.map_err(|e| map_error(self.path, "reading", e))?,
            )?);
        }
        Ok(out)
    }

    fn remove_token(&mut self, name: &str) -> Result<bool> {
        let n = self
            .tx
            .execute("DELETE FROM tokens WHERE name = ?1", [name])
            .map_err(|e| self.err("writing", e))?;
        Ok(n > 0)
    }

    fn append_ledger(&mut self, row: &LedgerRow) -> Result<i64> {
        self.exec(
                "INSERT INTO ledger_entries (id, kind, actor, sandbox_id, at, entry) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    row.id,
                    row.kind,
                    row.actor.as_ref().map(ToString::to_string),
                    row.sandbox_id,
                    ts(row.at),
                    to_json(&row.entry)?
                ],
            )
            .map_err(|e| {
                if Self::is_unique_violation(&e) {
                    Error::conflict(format!("ledger entry `{}` exists", row.id))
                } else {
                    self.err("writing", e)
                }
            })?;
        Ok(self.tx.last_insert_rowid())
    }

    fn ledger_entry(&mut self, id: &str) -> Result<Option<LedgerRow>> {
        let row = self
            .tx
            .query_row(
                "SELECT seq, id, kind, actor, sandbox_id, at, entry FROM ledger_entries WHERE id = ?1",
                [id],
                raw_ledger,
            )
            .optional()
            .map_err(|e| self.err("reading", e))?;
        row.map(ledger_row).transpose()
    }

    fn ledger_entries(&mut self, after: i64, limit: usize) -> Result<Vec<LedgerRow>> {
        let mut st = self
            .tx
            .prepare_cached(
                "SELECT seq, id, kind, actor, sandbox_id, at, entry FROM ledger_entries
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(|e| map_error(self.path, "reading", e))?;
        let rows = st
            .query_map(params![after, limit as i64], raw_ledger)
            .map_err(|e| map_error(self.path, "reading", e))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(ledger_row(
                r.map_err(|e| map_error(self.path, "reading", e))?,
            )?);
        }
        Ok(out)
    }

    fn derived(&mut self, table: Derived, key: &str) -> Result<Option<serde_json::Value>> {
        let v: Option<String> = self
            .tx
            .query_row(
                &format!("SELECT value FROM {} WHERE key = ?1", table.table()),
                [key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err("reading", e))?;
        v.map(|v| from_json(table.table(), &v)).transpose()
    }

    fn put_derived(&mut self, table: Derived, key: &str, value: &serde_json::Value) -> Result<()> {
        self.exec(
            &format!(
                "INSERT INTO {} (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                table.table()
            ),
            params![key, to_json(value)?],
        )
        .map_err(|e| self.err("writing", e))?;
        Ok(())
    }

    fn all_derived(&mut self, table: Derived) -> Result<BTreeMap<String, serde_json::Value>> {
        let mut st = self
            .tx
            .prepare_cached(&format!(
                "SELECT key, value FROM {} ORDER BY key",
                table.table()
            ))
            .map_err(|e| map_error(self.path, "reading", e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| map_error(self.path, "reading", e))?;
        let mut out = BTreeMap::new();
        for r in rows {
            let (k, v) = r.map_err(|e| map_error(self.path, "reading", e))?;
            out.insert(k, from_json(table.table(), &v)?);
        }
        Ok(out)
    }
}

type RawLedger = (
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
);

fn raw_ledger(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawLedger> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn ledger_row((seq, id, kind, who, sandbox_id, at, entry): RawLedger) -> Result<LedgerRow> {
    Ok(LedgerRow {
        seq,
        id,
        kind,
        actor: who.as_deref().map(actor).transpose()?,
        sandbox_id,
        at: parse_ts(&at)?,
        entry: from_json("ledger entry", &entry)?,
    })
}

fn token_row((name, who, hash, created_at): (String, String, String, String)) -> Result<TokenRow> {
    Ok(TokenRow {
        name,
        actor: actor(&who)?,
        hash,
        created_at: parse_ts(&created_at)?,
    })
}
