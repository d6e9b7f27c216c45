//! [`DbLedger`]: the ledger in sandboxer's database, beside the sandbox
//! records (`ledger_entries`, and the `accounts` and `holds` derived from
//! them).
//!
//! Each entry is applied by [`apply_in`], inside a transaction: it reads the
//! entry already written under the same id (a retry), the hold it refers to
//! and the account it moves, applies the ledger's rules to just those
//! ([`LedgerState::partial`]), and writes the entry with the new account and
//! hold. The transaction is the whole guarantee: two creates that race for
//! the last credits are serialized by the database, and the second sees the
//! first's hold. A caller that changes a sandbox record in the same
//! transaction (the reaper ending a record, the reconciliation) commits the
//! two together or neither.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sandboxer_core::clock::Clock;
use sandboxer_core::credits::Micros;
use sandboxer_core::model::Actor;
use sandboxer_core::store::db::{read, transact, Db, Derived, LedgerRow, Tx};
use sandboxer_core::{Error, ErrorKind, Result};

use crate::state::{
    check, Account, Applied, CheckReport, Entry, EntryFilter, EntryKind, Fate, Hold, HoldRequest,
    HoldState, LedgerState, UsageRow,
};

/// The ledger, in the database. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use sandboxer_core::credits::Micros;
/// use sandboxer_credits::DbLedger;
///
/// let dir = tempfile::tempdir().unwrap();
/// let db = Arc::new(sandboxer_store::SqliteDb::open(&dir.path().join("sandboxer.db")).unwrap());
/// let ledger = DbLedger::new(db);
/// let (ops, agent) = ("adm:ops".parse().unwrap(), "agt:bob".parse().unwrap());
/// ledger.grant(&ops, &agent, Micros::parse_amount("10").unwrap(), Some("welcome")).unwrap();
/// assert_eq!(ledger.balance(&agent).unwrap().available.to_string(), "10");
/// assert!(ledger.check().unwrap().is_ok());
/// ```
#[derive(Clone)]
pub struct DbLedger {
    db: Arc<dyn Db>,
    /// What entries are stamped with.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DbLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbLedger")
            .field("db", &self.db.location())
            .finish()
    }
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| {
        Error::new(
            ErrorKind::StoreCorrupt,
            format!("a stored {what} does not parse: {e}"),
        )
    })
}

fn to_value<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("ledger rows always serialize")
}

/// The hold of `sandbox_id`, as stored.
pub fn hold_in(tx: &mut dyn Tx, sandbox_id: &str) -> Result<Option<Hold>> {
    tx.derived(Derived::Holds, sandbox_id)?
        .map(|v| parse("hold", v))
        .transpose()
}

/// The account of `actor`, as stored (all zero when it has none).
pub fn account_in(tx: &mut dyn Tx, actor: &Actor) -> Result<Account> {
    Ok(tx
        .derived(Derived::Accounts, &actor.to_string())?
        .map(|v| parse("account", v))
        .transpose()?
        .unwrap_or_default())
}

/// Apply `entry` in the caller's transaction, enforcing every rule of
/// [`LedgerState::apply`]; a retry of an entry already written is a
/// `duplicate` that writes nothing.
pub fn apply_in(tx: &mut dyn Tx, entry: &Entry) -> Result<Applied> {
    let prior = tx
        .ledger_entry(&entry.id)?
        .map(|r| parse::<Entry>("ledger entry", r.entry))
        .transpose()?;
    let hold = match entry.sandbox_id() {
        Some(sid) => hold_in(tx, sid)?,
        None => None,
    };
    let actor = match &entry.kind {
        EntryKind::Grant { actor, .. }
        | EntryKind::Hold { actor, .. }
        | EntryKind::Storage { actor, .. } => Some(actor.clone()),
        _ => hold.as_ref().map(|h| h.actor.clone()),
    };
    let accounts = match &actor {
        Some(a) => vec![(a.clone(), account_in(tx, a)?)],
        None => Vec::new(),
    };
    let mut state = LedgerState::partial(prior, accounts, hold);
    let applied = state.apply(entry)?;
    if applied.duplicate {
        return Ok(applied);
    }
    if let Some(a) = &actor {
        tx.put_derived(
            Derived::Accounts,
            &a.to_string(),
            &to_value(&state.account(a)),
        )?;
    }
    if let Some(sid) = applied.entry.sandbox_id() {
        if let Some(h) = state.hold(sid) {
            tx.put_derived(Derived::Holds, sid, &to_value(h))?;
        }
    }
    tx.append_ledger(&LedgerRow {
        seq: 0,
        id: applied.entry.id.clone(),
        kind: applied.entry.kind_name().to_string(),
        actor,
        sandbox_id: applied.entry.sandbox_id().map(str::to_string),
        at: applied.entry.at,
        entry: to_value(&applied.entry),
    })?;
    Ok(applied)
}

/// Take the hold of `req`'s route in the caller's transaction: the first
/// hold of the sandbox, a retry of the one open for the same route, or -
/// when the create moved on from a route whose hold was voided - the next
/// attempt's (`hold:<sbx>:2`, ...). `InsufficientCredits` when the balance
/// does not cover it; `Conflict` when an open hold is for another route.
pub fn hold_route_in(tx: &mut dyn Tx, req: &HoldRequest, at: DateTime<Utc>) -> Result<Applied> {
    let current = hold_in(tx, &req.sandbox_id)?;
    apply_in(tx, &Entry::hold_after(req, current.as_ref(), at))
}

/// Every entry, oldest first, read `PAGE` at a time.
fn all_entries(tx: &mut dyn Tx) -> Result<Vec<Entry>> {
    const PAGE: usize = 5000;
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let rows = tx.ledger_entries(after, PAGE)?;
        let n = rows.len();
        for r in rows {
            after = r.seq;
            out.push(parse::<Entry>("ledger entry", r.entry)?);
        }
        if n < PAGE {
            return Ok(out);
        }
    }
}

/// Every stored hold.
fn all_holds(tx: &mut dyn Tx) -> Result<Vec<Hold>> {
    tx.all_derived(Derived::Holds)?
        .into_values()
        .map(|v| parse("hold", v))
        .collect()
}

/// Resolve the open holds whose sandboxes are no longer live, in the
/// caller's transaction: the record ended (settle its seconds), failed or
/// is missing (void). Returns the entries written.
pub fn reconcile_in(tx: &mut dyn Tx, at: DateTime<Utc>) -> Result<Vec<Entry>> {
    let open: Vec<Hold> = all_holds(tx)?
        .into_iter()
        .filter(|h| h.state.is_unresolved())
        .collect();
    let mut written = Vec::new();
    for h in open {
        let rec = tx.sandbox(&h.sandbox_id)?;
        let entry = match Fate::of(rec.as_ref()) {
            Fate::Live => continue,
            Fate::Ended { seconds } => Entry::settle(&h.sandbox_id, seconds, at),
            Fate::Failed | Fate::Missing => Entry::void_of(&h, at),
        };
        let applied = apply_in(tx, &entry)?;
        if !applied.duplicate {
            written.push(applied.entry);
        }
    }
    Ok(written)
}

impl DbLedger {
    pub fn new(db: Arc<dyn Db>) -> DbLedger {
        DbLedger {
            db,
            clock: sandboxer_core::clock::system(),
        }
    }

    /// Stamp entries by `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> DbLedger {
        self.clock = clock;
        self
    }

    /// Now, on the ledger's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The database it keeps its entries in.
    pub fn db(&self) -> &Arc<dyn Db> {
        &self.db
    }

    fn apply(&self, entry: Entry) -> Result<Applied> {
        transact(self.db.as_ref(), |tx| apply_in(tx, &entry))
    }

    /// Grant `amount` to `to`. Only `adm:` actors may grant. `key` makes
    /// the grant idempotent (`grant:<key>`); without one a random key is
    /// used.
    pub fn grant(
        &self,
        by: &Actor,
        to: &Actor,
        amount: Micros,
        key: Option<&str>,
    ) -> Result<Applied> {
        let key = match key {
            Some(k) => k.to_string(),
            None => format!("{:016x}", rand::random::<u64>()),
        };
        self.apply(Entry::grant(to, amount, by, &key, self.now()))
    }

    /// Hold `price x TTL` for a sandbox's route (`hold:<sbx>`, see
    /// [`hold_route_in`]). A retry of the same hold while it is open
    /// returns it; once it was settled a new hold for the sandbox is a
    /// `Conflict`.
    pub fn hold(&self, req: &HoldRequest) -> Result<Applied> {
        transact(self.db.as_ref(), |tx| {
            let applied = hold_route_in(tx, req, self.now())?;
            if applied.duplicate {
                let state = hold_in(tx, &req.sandbox_id)?.map(|h| h.state);
                if state != Some(HoldState::Open) {
                    return Err(Error::conflict(format!(
                        "the hold of sandbox {} was already {}; it cannot be taken again",
                        req.sandbox_id,
                        state
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| "resolved".into())
                    )));
                }
            }
            Ok(applied)
        })
    }

    /// Hold the extra time up to `expires_at` for an open hold
    /// (`extend:<sbx>:<unix secs>`); `InsufficientCredits` when not covered.
    pub fn extend(&self, sandbox_id: &str, expires_at: DateTime<Utc>) -> Result<Applied> {
        self.apply(Entry::extend(sandbox_id, expires_at, self.now()))
    }

    /// Settle the hold of a sandbox that existed `seconds`
    /// (`settle:<sbx>`): spend `price x seconds`, at most what is held, and
    /// release the rest.
    pub fn settle(&self, sandbox_id: &str, seconds: u64, at: DateTime<Utc>) -> Result<Applied> {
        self.apply(Entry::settle(sandbox_id, seconds, at))
    }

    /// Release the whole open hold of a sandbox whose provisioning failed
    /// (`void:<sbx>`, or `void:<sbx>:<attempt>` on a fallback route);
    /// `NotFound` without a hold.
    pub fn void(&self, sandbox_id: &str) -> Result<Applied> {
        transact(self.db.as_ref(), |tx| {
            let h = hold_in(tx, sandbox_id)?
                .ok_or_else(|| Error::not_found(format!("sandbox {sandbox_id} has no hold")))?;
            apply_in(tx, &Entry::void_of(&h, self.now()))
        })
    }

    /// The actor's account.
    pub fn balance(&self, actor: &Actor) -> Result<Account> {
        read(self.db.as_ref(), |tx| account_in(tx, actor))
    }

    /// The entries `filter` selects, in order.
    pub fn entries(&self, filter: &EntryFilter) -> Result<Vec<Entry>> {
        self.snapshot().map(|s| s.filtered(filter))
    }

    /// One row per sandbox the actor held credits for, oldest first.
    pub fn usage(&self, actor: &Actor) -> Result<Vec<UsageRow>> {
        let mut holds: Vec<Hold> = read(self.db.as_ref(), all_holds)?
            .into_iter()
            .filter(|h| &h.actor == actor)
            .collect();
        holds.sort_by(|a, b| (a.opened_at, &a.sandbox_id).cmp(&(b.opened_at, &b.sandbox_id)));
        Ok(holds.iter().map(UsageRow::of).collect())
    }

    /// Check every invariant (see [`crate::state::check`]): the balances
    /// and holds recomputed from the entries alone against the ones the
    /// database keeps.
    pub fn check(&self) -> Result<CheckReport> {
        let (entries, accounts, holds) = read(self.db.as_ref(), |tx| {
            let entries = all_entries(tx)?;
            let mut accounts = BTreeMap::new();
            for (k, v) in tx.all_derived(Derived::Accounts)? {
                let actor: Actor = k.parse().map_err(|e: Error| {
                    Error::new(ErrorKind::StoreCorrupt, format!("account `{k}`: {e}"))
                })?;
                accounts.insert(actor, parse::<Account>("account", v)?);
            }
            Ok((entries, accounts, all_holds(tx)?))
        })?;
        let replayed = LedgerState::replay(&entries);
        let mut extra = Vec::new();
        for h in &holds {
            if replayed.hold(&h.sandbox_id) != Some(h) {
                extra.push(crate::check::Violation::Dangling {
                    entry: crate::state::hold_id(&h.sandbox_id, h.attempt),
                    why: "the stored hold differs from the one its entries make".into(),
                });
            }
        }
        if replayed.holds().count() != holds.len() {
            extra.push(crate::check::Violation::Dangling {
                entry: "holds".into(),
                why: format!(
                    "{} holds are stored, the entries make {}",
                    holds.len(),
                    replayed.holds().count()
                ),
            });
        }
        let mut report = check(&replayed.with_recorded_accounts(accounts));
        report.violations.extend(extra);
        Ok(report)
    }

    /// The holds neither settled nor voided.
    pub fn open_holds(&self) -> Result<Vec<Hold>> {
        Ok(read(self.db.as_ref(), all_holds)?
            .into_iter()
            .filter(|h| h.state.is_unresolved())
            .collect())
    }

    /// The hold of a sandbox, whatever its state.
    pub fn hold_of(&self, sandbox_id: &str) -> Result<Option<Hold>> {
        read(self.db.as_ref(), |tx| hold_in(tx, sandbox_id))
    }

    /// The whole ledger replayed from its entries (for reports).
    pub fn snapshot(&self) -> Result<LedgerState> {
        let entries = read(self.db.as_ref(), all_entries)?;
        Ok(LedgerState::replay(&entries))
    }

    /// Resolve the open holds whose sandboxes are no longer live (see
    /// [`reconcile_in`]), in one transaction with the records it reads.
    pub fn reconcile(&self) -> Result<Vec<Entry>> {
        let done = transact(self.db.as_ref(), |tx| reconcile_in(tx, self.now()))?;
        for e in &done {
            tracing::info!("reconciled the ledger: {} ({})", e.id, e.kind_name());
        }
        Ok(done)
    }
}
