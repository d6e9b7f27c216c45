//! The database the state layer moves onto (issue: one transactional
//! store): the contract, operation by operation, that both backends of
//! `sandboxer-store` (SQLite, the embedded default; PostgreSQL, the shared
//! control plane) implement and its conformance suite checks.
//!
//! Everything changes inside [`Db::transaction`]: the closure gets a [`Tx`]
//! and either all it did commits or none of it does (an `Err` from the
//! closure, a failed commit, a crash). A lifecycle step is one transaction:
//! the record's transition, its outbox event, its ledger entry.
//!
//! Rows are what sandboxer already serializes (a [`Sandbox`] record, a
//! lifecycle event, an upload, a ledger entry as JSON) beside the columns
//! that filters and the reaper need, so the record contract stays one
//! serde type and the schema only indexes it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::manager::ListFilter;
use crate::model::{Actor, Sandbox};
use crate::snapshot::{Snapshot, SnapshotState};
use crate::uploads::UploadRecord;
use crate::Result;

use super::IdempotencyEntry;

/// An opaque position in a listing: the next page starts after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor(pub i64);

impl Cursor {
    /// The cursor as callers see it (`c` and a number; opaque to them).
    pub fn encode(self) -> String {
        format!("c{}", self.0)
    }

    /// A cursor a caller sent back; `None` when it is not one of ours.
    pub fn decode(s: &str) -> Option<Cursor> {
        s.strip_prefix('c')?.parse().ok().map(Cursor)
    }
}

/// One page of a listing, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<Sandbox>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// What to list: the filter, where to start, how many at most.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub filter: ListFilter,
    pub after: Option<Cursor>,
    /// At most this many (`None`: all).
    pub limit: Option<usize>,
}

/// An event in the outbox. Its delivery state (attempts, lease, last
/// error) travels in the event's own JSON, which the relay changes with
/// [`Tx::replace_event`].
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    /// Its place in the outbox (delivery order).
    pub seq: i64,
    pub sandbox_id: String,
    pub event: serde_json::Value,
}

/// An API token as stored: its hash only, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub name: String,
    pub actor: Actor,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    pub created_at: DateTime<Utc>,
}

/// One ledger entry as stored: its id, what the ledger indexes, and the
/// entry itself (the credits crate's `Entry`, as JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRow {
    /// Its place in the ledger (append order).
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub actor: Option<Actor>,
    pub sandbox_id: Option<String>,
    pub at: DateTime<Utc>,
    pub entry: serde_json::Value,
}

/// One row of [`Tx::census`]. For ended states, `profile`, `extension`
/// and `host` are empty.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CensusRow {
    pub state: String,
    pub profile: String,
    pub extension: String,
    pub host: String,
    pub count: u64,
}

/// The operations of one transaction.
///
/// Contract (checked by `sandboxer-store`'s conformance suite, for every
/// backend):
/// - reads see this transaction's own writes;
/// - two transactions that write the same rows never both commit stale
///   work: the second waits (or retries) and sees the first's result;
/// - `insert_sandbox` of an existing id and `put_token` of an existing
///   name are `Conflict`; `update_sandbox` of a missing id is `NotFound`.
pub trait Tx {
    /// The record `id`, if there is one.
    fn sandbox(&mut self, id: &str) -> Result<Option<Sandbox>>;
    /// Record a new sandbox.
    fn insert_sandbox(&mut self, s: &Sandbox) -> Result<()>;
    /// Replace the record `s.id` (its state, times, cost, ...).
    fn update_sandbox(&mut self, s: &Sandbox) -> Result<()>;
    /// Records matching `q`, oldest first, one page, in their public form:
    /// each extension's private `backend` state is left out (read a record
    /// with [`Tx::sandbox`] to have it).
    fn list(&mut self, q: &ListQuery) -> Result<Page> {
        let (raw, next) = self.list_json(q)?;
        let records = raw
            .iter()
            .map(|r| {
                serde_json::from_str::<Sandbox>(r).map_err(|e| {
                    crate::Error::new(
                        crate::ErrorKind::StoreCorrupt,
                        format!("a stored sandbox record does not parse: {e}"),
                    )
                })
            })
            .collect::<Result<_>>()?;
        Ok(Page { records, next })
    }
    /// [`Tx::list`] as each record's public JSON, as stored (what `get
    /// --json` prints), for listing without parsing every record.
    fn list_json(&mut self, q: &ListQuery) -> Result<(Vec<String>, Option<Cursor>)>;
    /// Sandboxes that have not ended, per host (placement's capacity).
    fn live_per_host(&mut self) -> Result<BTreeMap<String, u32>>;
    /// How many records there are.
    fn count(&mut self) -> Result<u64>;
    /// The ids of the live records whose deadline is at or before `now`
    /// ([`Sandbox::overdue`]): few, read through the state index.
    fn overdue(&mut self, now: DateTime<Utc>) -> Result<std::collections::BTreeSet<String>> {
        use crate::lifecycle::State;
        let live = self.list(&ListQuery {
            filter: ListFilter {
                states: vec![State::Provisioning, State::Ready, State::Paused],
                ..ListFilter::default()
            },
            after: None,
            limit: None,
        })?;
        Ok(live
            .records
            .into_iter()
            .filter(|s| s.overdue(now))
            .map(|s| s.id)
            .collect())
    }
    /// Live sandboxes (not `destroyed` or `failed`) counted per state,
    /// profile, extension and host, and ended ones per state only (their
    /// history grows without bound; the counts come from the state index):
    /// what the `/metrics` gauges show.
    fn census(&mut self) -> Result<Vec<CensusRow>>;

    /// The request `actor` first made with `key`.
    fn idempotency(&mut self, actor: &Actor, key: &str) -> Result<Option<IdempotencyEntry>>;
    /// Every idempotency key, by actor and key (for `db copy`).
    fn idempotency_keys(&mut self) -> Result<Vec<(Actor, String, IdempotencyEntry)>>;
    /// Remember that `actor`'s `key` made `entry` (a key is never reused).
    fn put_idempotency(&mut self, actor: &Actor, key: &str, entry: &IdempotencyEntry)
        -> Result<()>;

    /// Queue a lifecycle event for the State Hub.
    fn push_event(&mut self, sandbox_id: &str, event: &serde_json::Value) -> Result<()>;
    /// The first `limit` events waiting, oldest first. A relay reads them
    /// in a write transaction, so two relays (on any replicas) claim in
    /// turn and each sees the other's leases.
    fn outbox(&mut self, limit: usize) -> Result<Vec<OutboxItem>>;
    /// Replace event `seq`'s JSON (its delivery state changed).
    fn replace_event(&mut self, seq: i64, event: &serde_json::Value) -> Result<()>;
    /// Remove delivered events.
    fn ack_events(&mut self, seqs: &[i64]) -> Result<()>;
    /// Events waiting, leased or not.
    fn outbox_depth(&mut self) -> Result<u64>;

    fn upload(&mut self, id: &str) -> Result<Option<UploadRecord>>;
    /// Insert or replace.
    fn put_upload(&mut self, u: &UploadRecord) -> Result<()>;
    fn remove_upload(&mut self, id: &str) -> Result<()>;
    /// Every upload, oldest first; `actor`'s only when given.
    fn uploads(&mut self, actor: Option<&Actor>) -> Result<Vec<UploadRecord>>;

    /// The snapshot `id`, with its extension-private `backend`.
    fn snapshot(&mut self, id: &str) -> Result<Option<Snapshot>>;
    /// Insert or replace the snapshot `s.id`.
    fn put_snapshot(&mut self, s: &Snapshot) -> Result<()>;
    /// Snapshots oldest first: `actor`'s only when given, and only those in
    /// `states` when it is not empty.
    fn snapshots(
        &mut self,
        actor: Option<&Actor>,
        states: &[SnapshotState],
    ) -> Result<Vec<Snapshot>>;

    fn put_token(&mut self, t: &TokenRow) -> Result<()>;
    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRow>>;
    fn tokens(&mut self) -> Result<Vec<TokenRow>>;
    /// Whether there was one to remove.
    fn remove_token(&mut self, name: &str) -> Result<bool>;

    /// Append a ledger entry (`row.seq` is ignored; an existing `id` is
    /// `Conflict`: entries are never replaced). Returns its seq.
    fn append_ledger(&mut self, row: &LedgerRow) -> Result<i64>;
    /// The entry `id`.
    fn ledger_entry(&mut self, id: &str) -> Result<Option<LedgerRow>>;
    /// Entries after `after` (a seq), oldest first, at most `limit`.
    fn ledger_entries(&mut self, after: i64, limit: usize) -> Result<Vec<LedgerRow>>;
    /// A derived row kept beside the entries (an account's balance, a
    /// hold's state): `table` is `accounts` or `holds`.
    fn derived(&mut self, table: Derived, key: &str) -> Result<Option<serde_json::Value>>;
    fn put_derived(&mut self, table: Derived, key: &str, value: &serde_json::Value) -> Result<()>;
    /// Every derived row of `table`, by key.
    fn all_derived(&mut self, table: Derived) -> Result<BTreeMap<String, serde_json::Value>>;
}

/// The ledger's derived tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derived {
    /// Per actor: granted, available, held, spent.
    Accounts,
    /// Per sandbox: the hold and its state.
    Holds,
}

impl Derived {
    pub fn table(self) -> &'static str {
        match self {
            Derived::Accounts => "accounts",
            Derived::Holds => "holds",
        }
    }
}

/// A database of sandboxer's state.
pub trait Db: Send + Sync + 'static {
    /// Run `f` in one transaction: everything it did commits, or (on an
    /// `Err` from `f` or from the commit) nothing does.
    fn transaction(&self, f: &mut (dyn FnMut(&mut dyn Tx) -> Result<()> + Send)) -> Result<()>;
    /// Run `f`, which only reads, in one transaction that takes no write
    /// lock (it sees one consistent state; a write in it is a bug).
    fn read(&self, f: &mut (dyn FnMut(&mut dyn Tx) -> Result<()> + Send)) -> Result<()> {
        self.transaction(f)
    }
    /// Where it is, for messages (a file path, or a URL without its
    /// password).
    fn location(&self) -> String;
    /// The schema version it holds.
    fn schema_version(&self) -> Result<u32>;
}

/// Run blocking database work (a commit waits for its sync). On a worker
/// of a multi-threaded tokio runtime (`sandboxer serve`), the worker first
/// hands its other tasks to another thread (`block_in_place`), so a commit
/// never stalls them; anywhere else (no runtime, the CLI's current-thread
/// one, a blocking-pool thread) it just runs.
fn off_the_workers<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// [`Db::read`] with a closure that returns a value.
pub fn read<R: Send>(db: &dyn Db, f: impl FnOnce(&mut dyn Tx) -> Result<R> + Send) -> Result<R> {
    let mut f = Some(f);
    let mut out = None;
    off_the_workers(|| {
        db.read(&mut |tx| {
            let f = f.take().expect("a transaction runs its closure once");
            out = Some(f(tx)?);
            Ok(())
        })
    })?;
    Ok(out.expect("the closure ran"))
}

/// [`Db::transaction`] with a closure that returns a value.
pub fn transact<R: Send>(
    db: &dyn Db,
    f: impl FnOnce(&mut dyn Tx) -> Result<R> + Send,
) -> Result<R> {
    let mut f = Some(f);
    let mut out = None;
    off_the_workers(|| {
        db.transaction(&mut |tx| {
            let f = f.take().expect("a transaction runs its closure once");
            out = Some(f(tx)?);
            Ok(())
        })
    })?;
    Ok(out.expect("the closure ran"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_strangers() {
        assert_eq!(Cursor::decode(&Cursor(42).encode()), Some(Cursor(42)));
        assert_eq!(Cursor::decode("42"), None);
        assert_eq!(Cursor::decode("cx"), None);
    }
}
