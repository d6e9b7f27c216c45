//! The shared backend: PostgreSQL, for several `sandboxer serve` replicas
//! and CLIs on one database (`SANDBOXER_DATABASE_URL=postgres://...`).
//!
//! - Every write transaction first takes one transaction-scoped advisory
//!   lock (`pg_advisory_xact_lock`), so writers are serialized across
//!   replicas exactly as SQLite serializes them on one machine: a
//!   read-modify-write (a hold against a balance, a placement against a
//!   host's capacity) can never act on stale rows, and no retry loop is
//!   needed. Reads ([`Db::read`]) take no lock. The lock is released at
//!   commit or rollback, and by the server when a replica dies.
//! - The `postgres` crate is synchronous and runs its own runtime, which
//!   must not be started inside another one (the CLI and `serve` call the
//!   store from inside tokio): each transaction runs on a scoped thread of
//!   its own, with a pooled connection.

use std::collections::BTreeMap;
use std::sync::Mutex;

use postgres::error::SqlState;
use postgres::{Client, NoTls};
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

/// The advisory lock every write transaction holds (an arbitrary key
/// that names sandboxer's write lock).
const WRITE_LOCK: i64 = 0x5a4e_4442_7801;

/// sandboxer's state in a PostgreSQL database.
pub struct PgDb {
    url: String,
    idle: Mutex<Vec<Client>>,
}

impl std::fmt::Debug for PgDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDb")
            .field("url", &redact(&self.url))
            .finish_non_exhaustive()
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        // A client owns a runtime, which may not be dropped inside tokio.
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

/// `url` without its password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            if creds.contains(':') {
                format!("{}{user}:***{}", &url[..s + 3], &url[at..])
            } else {
                url.to_string()
            }
        }
        _ => url.to_string(),
    }
}

/// Run `f` on a thread with no tokio runtime (see the module docs).
fn off_runtime<R: Send>(f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|_| Err(Error::internal("a database call panicked")))
    })
}

impl PgDb {
    /// Connect and migrate to the latest schema. A database that is not
    /// sandboxer's (tables of its own, no `sandboxer_meta`) or of a newer
    /// schema is `StoreCorrupt`, and nothing is written to it.
    pub fn open(url: &str) -> Result<PgDb> {
        let db = PgDb {
            url: url.to_string(),
            idle: Mutex::new(Vec::new()),
        };
        off_runtime(|| db.check_and_migrate())?;
        Ok(db)
    }

    fn connect(&self) -> Result<Client> {
        Client::connect(&self.url, NoTls).map_err(|e| {
            Error::new(
                ErrorKind::Unreachable,
                format!("connecting to {}: {e}", redact(&self.url)),
            )
            .with_hint("check SANDBOXER_DATABASE_URL (postgres://USER[:PASSWORD]@HOST:PORT/DB) and that the server runs")
        })
    }

    fn checkout(&self) -> Result<Client> {
        let idle = self.idle.lock().expect("pool lock").pop();
        match idle {
            Some(c) if !c.is_closed() => Ok(c),
            _ => self.connect(),
        }
    }

    fn checkin(&self, c: Client) {
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < 8 && !c.is_closed() {
            idle.push(c);
        }
    }

    fn corrupt(&self, why: &str) -> Error {
        Error::new(
            ErrorKind::StoreCorrupt,
            format!(
                "{} is not a database this build can use: {why}",
                redact(&self.url)
            ),
        )
        .with_hint("nothing was written to it; point SANDBOXER_DATABASE_URL at an empty database or one sandboxer made")
    }

    fn check_and_migrate(&self) -> Result<()> {
        let mut c = self.checkout()?;
        let tables: Vec<String> = c
            .query(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
                &[],
            )
            .map_err(|e| self.err("reading", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let version = if tables.iter().any(|t| t == META_TABLE) {
            let v: Option<String> = c
                .query_opt(
                    &format!("SELECT value FROM {META_TABLE} WHERE key = 'version'"),
                    &[],
                )
                .map_err(|e| self.err("reading", e))?
                .map(|r| r.get(0));
            v.and_then(|v| v.parse::<u32>().ok())
                .ok_or_else(|| self.corrupt("its sandboxer_meta table has no schema version"))?
        } else if !tables.is_empty() {
            return Err(self.corrupt(&format!(
                "it has tables that are not sandboxer's ({})",
                tables.join(", ")
            )));
        } else {
            0
        };
        schema::check_known(version, |why| self.corrupt(why))?;
        for (v, sql) in schema::MIGRATIONS.iter().filter(|(v, _)| *v > version) {
            let sql = schema::sql_for(sql, schema::Backend::Postgres);
            let mut tx = c.transaction().map_err(|e| self.err("migrating", e))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
                .map_err(|e| self.err("migrating", e))?;
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            ))
            .map_err(|e| self.err("migrating", e))?;
            // Another replica may have migrated while this one waited.
            let now: Option<String> = tx
                .query_opt(
                    &format!("SELECT value FROM {META_TABLE} WHERE key = 'version'"),
                    &[],
                )
                .map_err(|e| self.err("migrating", e))?
                .map(|r| r.get(0));
            if now.and_then(|n| n.parse::<u32>().ok()).unwrap_or(0) >= *v {
                continue;
            }
            tx.batch_execute(&sql)
                .map_err(|e| self.err(&format!("migrating to schema {v}"), e))?;
            tx.execute(
                &format!(
                    "INSERT INTO {META_TABLE} (key, value) VALUES ('version', $1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                ),
                &[&v.to_string()],
            )
            .map_err(|e| self.err("migrating", e))?;
            tx.commit()
                .map_err(|e| self.err(&format!("migrating to schema {v}"), e))?;
            tracing::info!("{}: migrated to schema {v}", redact(&self.url));
        }
        self.checkin(c);
        Ok(())
    }

    fn err(&self, what: &str, e: postgres::Error) -> Error {
        map_error(&self.url, what, e)
    }

    fn run(
        &self,
        write: bool,
        f: &mut (dyn FnMut(&mut dyn Tx) -> Result<()> + Send),
    ) -> Result<()> {
        off_runtime(|| {
            let mut c = self.checkout()?;
            let result = (|| {
                let mut tx = c
                    .transaction()
                    .map_err(|e| self.err("starting a transaction on", e))?;
                if write {
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
                        .map_err(|e| self.err("locking", e))?;
                }
                let mut t = PgTx { tx, url: &self.url };
                f(&mut t)?;
                t.tx.commit().map_err(|e| self.err("committing to", e))
            })();
            self.checkin(c);
            result
        })
    }
}

fn map_error(url: &str, what: &str, e: postgres::Error) -> Error {
    let shown = redact(url);
    if e.is_closed() {
        return Error::new(
            ErrorKind::Unreachable,
            format!("{what} {shown}: the connection closed: {e}"),
        );
    }
    match e.code() {
        Some(c) if *c == SqlState::DISK_FULL => Error::new(
            ErrorKind::Io,
            format!("{what} {shown}: the database server's disk is full; nothing of this change was written"),
        ),
        _ => Error::new(ErrorKind::Io, format!("{what} {shown}: {e}")),
    }
}

impl Db for PgDb {
    fn transaction(&self, f: &mut (dyn FnMut(&mut dyn Tx) -> Result<()> + Send)) -> Result<()> {
        self.run(true, f)
    }

    fn read(&self, f: &mut (dyn FnMut(&mut dyn Tx) -> Result<()> + Send)) -> Result<()> {
        self.run(false, f)
    }

    fn location(&self) -> String {
        redact(&self.url)
    }

    fn schema_version(&self) -> Result<u32> {
        off_runtime(|| {
            let mut c = self.checkout()?;
            let v: String = c
                .query_one(
                    &format!("SELECT value FROM {META_TABLE} WHERE key = 'version'"),
                    &[],
                )
                .map_err(|e| self.err("reading", e))?
                .get(0);
            self.checkin(c);
            v.parse()
                .map_err(|_| self.corrupt("its schema version is not a number"))
        })
    }
}

struct PgTx<'a> {
    tx: postgres::Transaction<'a>,
    url: &'a str,
}

fn unique(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// The whole row of a sandbox: `$1` the id, then its columns.
const INSERT_SANDBOX: &str = "INSERT INTO sandboxes (id, state, actor, profile, host, extension, created_at, expires_at, ended_at, record, backend)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
const UPDATE_SANDBOX: &str =
    "UPDATE sandboxes SET state = $2, actor = $3, profile = $4, host = $5, extension = $6,
     created_at = $7, expires_at = $8, ended_at = $9, record = $10, backend = $11 WHERE id = $1";

impl PgTx<'_> {
    fn err(&self, what: &str, e: postgres::Error) -> Error {
        map_error(self.url, what, e)
    }

    /// Run `sql` (an insert or update of a whole sandbox row: `$1` the id,
    /// then its columns) for `s`; the rows it touched.
    fn write_sandbox(
        &mut self,
        sql: &str,
        s: &Sandbox,
        on_error: impl FnOnce(&Self, postgres::Error) -> Error,
    ) -> Result<u64> {
        let (rec, backend) = record_columns(s)?;
        let result = self.tx.execute(
            sql,
            &[
                &s.id,
                &s.state().as_str(),
                &s.actor.to_string(),
                &s.profile,
                &s.host,
                &s.extension,
                &ts(s.created_at),
                &s.expires_at.map(ts),
                &s.ended_at.map(ts),
                &rec,
                &backend,
            ],
        );
        result.map_err(|e| on_error(self, e))
    }

    /// The `record` of row `id` of `table` (uploads, snapshots), read as a
    /// `what`.
    fn record_by_id<T: serde::de::DeserializeOwned>(
        &mut self,
        table: &str,
        what: &str,
        id: &str,
    ) -> Result<Option<T>> {
        let row = self
            .tx
            .query_opt(&format!("SELECT record FROM {table} WHERE id = $1"), &[&id])
            .map_err(|e| self.err("reading", e))?;
        row.map(|r| from_json(what, r.get::<_, &str>(0)))
            .transpose()
    }
}

impl Tx for PgTx<'_> {
    fn sandbox(&mut self, id: &str) -> Result<Option<Sandbox>> {
        let row = self
            .tx
            .query_opt(
                "SELECT record, backend FROM sandboxes WHERE id = $1",
                &[&id],
            )
            .map_err(|e| self.err("reading", e))?;
        row.map(|r| record_from(r.get::<_, &str>(0), r.get::<_, Option<&str>>(1)))
            .transpose()
    }

    fn insert_sandbox(&mut self, s: &Sandbox) -> Result<()> {
        self.write_sandbox(INSERT_SANDBOX, s, |tx, e| {
            if unique(&e) {
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
        let mut sql = String::from("SELECT seq, record FROM sandboxes WHERE seq > $1");
        let after = q.after.map_or(0, |c| c.0);
        let mut texts: Vec<String> = Vec::new();
        let f = &q.filter;
        let mut n = 1;
        let mut next_param = |sql: &mut String| {
            n += 1;
            sql.push_str(&format!("${n}"));
        };
        if !f.states.is_empty() {
            sql.push_str(" AND state IN (");
            for (i, s) in f.states.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                next_param(&mut sql);
                texts.push(s.as_str().to_string());
            }
            sql.push(')');
        }
        if let Some(a) = &f.actor {
            sql.push_str(" AND actor = ");
            next_param(&mut sql);
            texts.push(a.to_string());
        }
        if let Some(p) = &f.profile {
            sql.push_str(" AND profile = ");
            next_param(&mut sql);
            texts.push(p.clone());
        }
        if let Some(h) = &f.host {
            sql.push_str(" AND host = ");
            next_param(&mut sql);
            texts.push(h.clone());
        }
        if f.live_only {
            // The live states by name, so the state index finds them
            // instead of a scan of every ended record.
            sql.push_str(&format!(" AND state IN {STATE_LIVE}"));
        }
        sql.push_str(" ORDER BY seq");
        if let Some(n) = q.limit {
            sql.push_str(&format!(" LIMIT {}", n.saturating_add(1)));
        }
        let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&after];
        for t in &texts {
            params.push(t);
        }
        let rows = self
            .tx
            .query(&sql, &params)
            .map_err(|e| map_error(self.url, "reading", e))?;
        let mut records = Vec::with_capacity(rows.len());
        let mut seqs = Vec::with_capacity(rows.len());
        for r in &rows {
            seqs.push(r.get::<_, i64>(0));
            records.push(r.get::<_, String>(1));
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
        let rows = self
            .tx
            .query(
                &format!("SELECT host, COUNT(*) FROM sandboxes WHERE state NOT IN {STATE_ENDED} GROUP BY host"),
                &[],
            )
            .map_err(|e| self.err("reading", e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u32))
            .collect())
    }

    fn count(&mut self) -> Result<u64> {
        let n: i64 = self
            .tx
            .query_one("SELECT COUNT(*) FROM sandboxes", &[])
            .map_err(|e| self.err("reading", e))?
            .get(0);
        Ok(n as u64)
    }

    fn census(&mut self) -> Result<Vec<CensusRow>> {
        let mut out = Vec::new();
        for sql in [CENSUS_LIVE, CENSUS_ENDED] {
            let rows = self
                .tx
                .query(sql, &[])
                .map_err(|e| self.err("reading", e))?;
            out.extend(rows.iter().map(|r| CensusRow {
                state: r.get(0),
                profile: r.get(1),
                extension: r.get(2),
                host: r.get(3),
                count: r.get::<_, i64>(4) as u64,
            }));
        }
        Ok(out)
    }

    fn idempotency(&mut self, actor: &Actor, key: &str) -> Result<Option<IdempotencyEntry>> {
        let row = self
            .tx
            .query_opt(
                "SELECT request_hash, sandbox_id FROM idempotency WHERE actor = $1 AND key = $2",
                &[&actor.to_string(), &key],
            )
            .map_err(|e| self.err("reading", e))?;
        Ok(row.map(|r| IdempotencyEntry {
            request_hash: r.get(0),
            sandbox_id: r.get(1),
        }))
    }

    fn idempotency_keys(&mut self) -> Result<Vec<(Actor, String, IdempotencyEntry)>> {
        let rows = self
            .tx
            .query(
                "SELECT actor, key, request_hash, sandbox_id FROM idempotency ORDER BY actor, key",
                &[],
            )
            .map_err(|e| self.err("reading", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push((
                actor(r.get::<_, &str>(0))?,
                r.get::<_, String>(1),
                IdempotencyEntry {
                    request_hash: r.get(2),
                    sandbox_id: r.get(3),
                },
            ));
        }
        Ok(out)
    }

    fn put_idempotency(
        &mut self,
        actor: &Actor,
        key: &str,
        entry: &IdempotencyEntry,
    ) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO idempotency (actor, key, request_hash, sandbox_id) VALUES ($1, $2, $3, $4)",
                &[&actor.to_string(), &key, &entry.request_hash, &entry.sandbox_id],
            )
            .map_err(|e| {
                if unique(&e) {
                    Error::conflict(format!("idempotency key `{key}` is already used"))
                } else {
                    self.err("writing", e)
                }
            })?;
        Ok(())
    }

    fn push_event(&mut self, sandbox_id: &str, event: &serde_json::Value) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO outbox (sandbox_id, event) VALUES ($1, $2)",
                &[&sandbox_id, &to_json(event)?],
            )
            .map_err(|e| self.err("writing", e))?;
        Ok(())
    }

    fn outbox(&mut self, limit: usize) -> Result<Vec<OutboxItem>> {
        let rows = self
            .tx
            .query(
                "SELECT seq, sandbox_id, event FROM outbox ORDER BY seq LIMIT $1",
                &[&(limit.min(i64::MAX as usize) as i64)],
            )
            .map_err(|e| self.err("reading", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(OutboxItem {
                seq: r.get(0),
                sandbox_id: r.get(1),
                event: from_json("outbox event", r.get::<_, &str>(2))?,
            });
        }
        Ok(out)
    }

    fn replace_event(&mut self, seq: i64, event: &serde_json::Value) -> Result<()> {
        self.tx
            .execute(
                "UPDATE outbox SET event = $1 WHERE seq = $2",
                &[&to_json(event)?, &seq],
            )
            .map_err(|e| self.err("writing", e))?;
        Ok(())
    }

    fn ack_events(&mut self, seqs: &[i64]) -> Result<()> {
        self.tx
            .execute("DELETE FROM outbox WHERE seq = ANY($1)", &[&seqs])
            .map_err(|e| self.err("writing", e))?;
        Ok(())
    }

    fn outbox_depth(&mut self) -> Result<u64> {
        let n: i64 = self
            .tx
            .query_one("SELECT COUNT(*) FROM outbox", &[])
            .map_err(|e| self.err("reading", e))?
            .get(0);
        Ok(n as u64)
    }

    fn upload(&mut self, id: &str) -> Result<Option<UploadRecord>> {
        self.record_by_id("uploads", "upload", id)
    }

    fn put_upload(&mut self, u: &UploadRecord) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO uploads (id, actor, created_at, record) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                &[&u.id, &u.actor.to_string(), &ts(u.created_at), &to_json(u)?],
            )
            .map_err(|e| self.err("writing", e))?;
        Ok(())
    }

    fn remove_upload(&mut self, id: &str) -> Result<()> {
        self.tx
            .execute("DELETE FROM uploads WHERE id = $1", &[&id])
            .map_err(|e| self.err("writing", e))?;
        Ok(())
    }

    fn uploads(&mut self, actor: Option<&Actor>) -> Result<Vec<UploadRecord>> {
        let who = actor.map(ToString::to_string);
        let rows = self
            .tx
            .query(
                "SELECT record FROM uploads WHERE $1::text IS NULL OR actor = $1 ORDER BY created_at, id",
                &[&who],
            )
            .map_err(|e| self.err("reading", e))?;
        rows.iter()
            .map(|r| from_json("upload", r.get::<_, &str>(0)))
            .collect()
    }

    fn snapshot(&mut self, id: &str) -> Result<Option<Snapshot>> {
        self.record_by_id("snapshots", "snapshot", id)
    }

    fn put_snapshot(&mut self, s: &Snapshot) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO snapshots (id, state, actor, source, created_at, record)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, record = excluded.record",
                &[
                    &s.id,
                    &s.state.as_str(),
                    &s.actor.to_string(),
                    &s.source,
                    &ts(s.created_at),
                    &to_json(s)?,
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
        let rows = self
            .tx
            .query(
                "SELECT state, record FROM snapshots WHERE $1::text IS NULL OR actor = $1 ORDER BY seq",
                &[&who],
            )
            .map_err(|e| self.err("reading", e))?;
        rows.iter()
            .filter(|r| wanted_state(r.get::<_, &str>(0), states))
            .map(|r| from_json("snapshot", r.get::<_, &str>(1)))
            .collect()
    }

    fn put_token(&mut self, t: &TokenRow) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO tokens (name, actor, hash, created_at) VALUES ($1, $2, $3, $4)",
                &[&t.name, &t.actor.to_string(), &t.hash, &ts(t.created_at)],
            )
            .map_err(|e| {
                if unique(&e) {
                    Error::conflict(format!("a token named `{}` exists", t.name))
                } else {
                    self.err("writing", e)
                }
            })?;
        Ok(())
    }

    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRow>> {
        let row = self
            .tx
            .query_opt(
                "SELECT name, actor, hash, created_at FROM tokens WHERE hash = $1",
                &[&hash],
            )
            .map_err(|e| self.err("reading", e))?;
        row.map(|r| token_row(&r)).transpose()
    }

    fn tokens(&mut self) -> Result<Vec<TokenRow>> {
        let rows = self
            .tx
            .query(
                "SELECT name, actor, hash, created_at FROM tokens ORDER BY created_at, name",
                &[],
            )
            .map_err(|e| self.err("reading", e))?;
        rows.iter().map(token_row).collect()
    }

    fn remove_token(&mut self, name: &str) -> Result<bool> {
        let n = self
            .tx
            .execute("DELETE FROM tokens WHERE name = $1", &[&name])
            .map_err(|e| self.err("writing", e))?;
        Ok(n > 0)
    }

    fn append_ledger(&mut self, row: &LedgerRow) -> Result<i64> {
        let r = self
            .tx
            .query_one(
                "INSERT INTO ledger_entries (id, kind, actor, sandbox_id, at, entry) VALUES ($1, $2, $3, $4, $5, $6)
                 RETURNING seq",
                &[
                    &row.id,
                    &row.kind,
                    &row.actor.as_ref().map(ToString::to_string),
                    &row.sandbox_id,
                    &ts(row.at),
                    &to_json(&row.entry)?,
                ],
            )
            .map_err(|e| {
                if unique(&e) {
                    Error::conflict(format!("ledger entry `{}` exists", row.id))
                } else {
                    self.err("writing", e)
                }
            })?;
        Ok(r.get(0))
    }

    fn ledger_entry(&mut self, id: &str) -> Result<Option<LedgerRow>> {
        let row = self
            .tx
            .query_opt(
                "SELECT seq, id, kind, actor, sandbox_id, at, entry FROM ledger_entries WHERE id = $1",
                &[&id],
            )
            .map_err(|e| self.err("reading", e))?;
        row.map(|r| ledger_row(&r)).transpose()
    }

    fn ledger_entries(&mut self, after: i64, limit: usize) -> Result<Vec<LedgerRow>> {
        let rows = self
            .tx
            .query(
                "SELECT seq, id, kind, actor, sandbox_id, at, entry FROM ledger_entries
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &(limit as i64)],
            )
            .map_err(|e| self.err("reading", e))?;
        rows.iter().map(ledger_row).collect()
    }

    fn derived(&mut self, table: Derived, key: &str) -> Result<Option<serde_json::Value>> {
        let row = self
            .tx
            .query_opt(
                &format!("SELECT value FROM {} WHERE key = $1", table.table()),
                &[&key],
            )
            .map_err(|e| self.err("reading", e))?;
        row.map(|r| from_json(table.table(), r.get::<_, &str>(0)))
            .transpose()
    }

    fn put_derived(&mut self, table: Derived, key: &str, value: &serde_json::Value) -> Result<()> {
        self.tx
            .execute(
                &format!(
                    "INSERT INTO {} (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    table.table()
                ),
                &[&key, &to_json(value)?],
            )
            .map_err(|e| self.err("writing", e))?;
        Ok(())
    }

    fn all_derived(&mut self, table: Derived) -> Result<BTreeMap<String, serde_json::Value>> {
        let rows = self
            .tx
            .query(
                &format!("SELECT key, value FROM {} ORDER BY key", table.table()),
                &[],
            )
            .map_err(|e| self.err("reading", e))?;
        let mut out = BTreeMap::new();
        for r in &rows {
            out.insert(
                r.get::<_, String>(0),
                from_json(table.table(), r.get::<_, &str>(1))?,
            );
        }
        Ok(out)
    }
}

fn ledger_row(r: &postgres::Row) -> Result<LedgerRow> {
    Ok(LedgerRow {
        seq: r.get(0),
        id: r.get(1),
        kind: r.get(2),
        actor: r.get::<_, Option<&str>>(3).map(actor).transpose()?,
        sandbox_id: r.get(4),
        at: parse_ts(r.get::<_, &str>(5))?,
        entry: from_json("ledger entry", r.get::<_, &str>(6))?,
    })
}

fn token_row(r: &postgres::Row) -> Result<TokenRow> {
    Ok(TokenRow {
        name: r.get(0),
        actor: actor(r.get::<_, &str>(1))?,
        hash: r.get(2),
        created_at: parse_ts(r.get::<_, &str>(3))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://ops:s3cret@db.example:5432/sbx"),
            "postgres://ops:***@db.example:5432/sbx"
        );
        assert_eq!(
            redact("postgres://ops@127.0.0.1/sbx"),
            "postgres://ops@127.0.0.1/sbx"
        );
    }
}
