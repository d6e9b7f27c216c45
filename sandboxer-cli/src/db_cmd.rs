//! `sandboxer db check|info|copy`: the database that holds all state.

use std::sync::Arc;

use sandboxer_core::store::db::{read, transact, Db, Derived};
use sandboxer_core::{Error, ErrorKind, Result};
use sandboxer_credits::DbLedger;
use serde::Serialize;

use crate::args::DbCmd;
use crate::{exit, out, print_json, Env};

/// What `db check` found.
#[derive(Debug, Serialize)]
struct DbCheck {
    database: String,
    schema_version: u32,
    records: u64,
    ledger: sandboxer_credits::CheckReport,
    /// Records and holds that disagree.
    records_vs_ledger: Vec<String>,
}

pub async fn run(env: &Env, cmd: DbCmd, json: bool) -> Result<i32> {
    match cmd {
        DbCmd::Check => check(env, json),
        DbCmd::Info => info(env, json),
        DbCmd::Copy { to } => copy(env, &to, json),
    }
}

fn check(env: &Env, json: bool) -> Result<i32> {
    let db = env.db()?;
    let ledger = DbLedger::new(db.clone());
    let report = ledger.check()?;
    let holds = ledger.open_holds()?;
    let mut problems = Vec::new();
    let records = read(db.as_ref(), |tx| {
        for h in &holds {
            match tx.sandbox(&h.sandbox_id)? {
                None => problems.push(format!(
                    "the hold of {} is open, but there is no such sandbox",
                    h.sandbox_id
                )),
                Some(s) if s.state().is_terminal() => problems.push(format!(
                    "sandbox {} is {}, but its hold is still open",
                    s.id,
                    s.state()
                )),
                Some(_) => {}
            }
        }
        tx.count()
    })?;
    let result = DbCheck {
        database: db.location(),
        schema_version: db.schema_version()?,
        records,
        ledger: report,
        records_vs_ledger: problems,
    };
    let ok = result.ledger.is_ok() && result.records_vs_ledger.is_empty();
    if json {
        print_json(&result);
    } else {
        let mut text = format!(
            "{}: schema v{}, {} records, {} ledger entries, {} open holds\n",
            result.database,
            result.schema_version,
            result.records,
            result.ledger.entries,
            result.ledger.open_holds
        );
        for v in &result.ledger.violations {
            text.push_str(&format!("  ledger: {v}\n"));
        }
        for p in &result.records_vs_ledger {
            text.push_str(&format!("  records: {p}\n"));
        }
        text.push_str(if ok {
            "every invariant holds\n"
        } else {
            "broken invariants (exit 8); `sandboxer reap-stale` resolves holds of ended sandboxes\n"
        });
        out(text.trim_end());
    }
    Ok(if ok {
        exit::code::OK
    } else {
        exit::code::STORE
    })
}

/// Rows per table, for `db info` and `db copy`.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
struct Counts {
    records: u64,
    idempotency_keys: u64,
    events_waiting: u64,
    uploads: u64,
    snapshots: u64,
    tokens: u64,
    ledger_entries: u64,
}

fn counts(db: &dyn Db) -> Result<Counts> {
    read(db, |tx| {
        let mut ledger_entries = 0u64;
        let mut after = 0;
        loop {
            let rows = tx.ledger_entries(after, 10_000)?;
            let Some(last) = rows.last() else { break };
            after = last.seq;
            ledger_entries += rows.len() as u64;
        }
        Ok(Counts {
            records: tx.count()?,
            idempotency_keys: tx.idempotency_keys()?.len() as u64,
            events_waiting: tx.outbox_depth()?,
            uploads: tx.uploads(None)?.len() as u64,
            snapshots: tx.snapshots(None, &[])?.len() as u64,
            tokens: tx.tokens()?.len() as u64,
            ledger_entries,
        })
    })
}

fn info(env: &Env, json: bool) -> Result<i32> {
    let db = env.db()?;
    let c = counts(db.as_ref())?;
    let version = db.schema_version()?;
    if json {
        print_json(&serde_json::json!({
            "database": db.location(),
            "schema_version": version,
            "counts": c,
        }));
    } else {
        out(&format!(
            "database        {}\nschema version  {version}\nrecords         {}\nidempotency     {}\nevents waiting  {}\nuploads         {}\nsnapshots       {}\ntokens          {}\nledger entries  {}",
            db.location(),
            c.records,
            c.idempotency_keys,
            c.events_waiting,
            c.uploads,
            c.snapshots,
            c.tokens,
            c.ledger_entries
        ));
    }
    Ok(exit::code::OK)
}

/// Open the target of `db copy`: a postgres URL, or the path of a SQLite
/// file.
fn open_target(to: &str) -> Result<Arc<dyn Db>> {
    if to.starts_with("postgres://") || to.starts_with("postgresql://") {
        return Ok(Arc::new(sandboxer_store::PgDb::open(to)?));
    }
    if to.contains("://") {
        return Err(Error::invalid_input(format!(
            "--to `{}` is neither a postgres:// URL nor a file path",
            sandboxer_store::redact(to)
        )));
    }
    Ok(Arc::new(sandboxer_store::SqliteDb::open(
        std::path::Path::new(to),
    )?))
}

fn copy(env: &Env, to: &str, json: bool) -> Result<i32> {
    let src = env.db()?;
    let dst = open_target(to)?;
    if dst.location() == src.location() {
        return Err(Error::invalid_input(
            "--to names the database this command already uses",
        ));
    }
    // Everything is read in one read transaction (one consistent state)...
    let (records, keys, events, uploads, snapshots, tokens, entries, accounts, holds) =
        read(src.as_ref(), |tx| {
            let mut records = Vec::new();
            let mut q = sandboxer_core::store::db::ListQuery {
                limit: Some(5000),
                ..Default::default()
            };
            loop {
                let page = tx.list(&q)?;
                // Whole records: a list leaves each extension's state out.
                for s in page.records {
                    records.push(sandboxer_core::store::require(tx, &s.id)?);
                }
                match page.next {
                    Some(c) => q.after = Some(c),
                    None => break,
                }
            }
            let mut entries = Vec::new();
            let mut after = 0;
            loop {
                let rows = tx.ledger_entries(after, 10_000)?;
                let Some(last) = rows.last() else { break };
                after = last.seq;
                entries.extend(rows);
            }
            Ok((
                records,
                tx.idempotency_keys()?,
                tx.outbox(usize::MAX)?,
                tx.uploads(None)?,
                tx.snapshots(None, &[])?,
                tx.tokens()?,
                entries,
                tx.all_derived(Derived::Accounts)?,
                tx.all_derived(Derived::Holds)?,
            ))
        })?;
    // ...and written in one transaction: all of it, or nothing.
    transact(dst.as_ref(), |tx| {
        if tx.count()? > 0 || !tx.ledger_entries(0, 1)?.is_empty() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("{} already holds records or ledger entries", dst.location()),
            )
            .with_hint("copy into an empty database; nothing was written"));
        }
        for s in &records {
            tx.insert_sandbox(s)?;
        }
        for (actor, key, entry) in &keys {
            tx.put_idempotency(actor, key, entry)?;
        }
        for e in &events {
            tx.push_event(&e.sandbox_id, &e.event)?;
        }
        for u in &uploads {
            tx.put_upload(u)?;
        }
        for snap in &snapshots {
            tx.put_snapshot(snap)?;
        }
        for t in &tokens {
            tx.put_token(t)?;
        }
        for e in &entries {
            tx.append_ledger(e)?;
        }
        for (k, v) in &accounts {
            tx.put_derived(Derived::Accounts, k, v)?;
        }
        for (k, v) in &holds {
            tx.put_derived(Derived::Holds, k, v)?;
        }
        Ok(())
    })?;
    let (from, into) = (counts(src.as_ref())?, counts(dst.as_ref())?);
    if from != into {
        return Err(Error::internal(format!(
            "the copy in {} does not match its source: {into:?} against {from:?}",
            dst.location()
        )));
    }
    let open = DbLedger::new(dst.clone())
        .open_holds()?
        .into_iter()
        .filter(|h| h.state.is_unresolved())
        .count();
    if json {
        print_json(&serde_json::json!({
            "from": src.location(),
            "to": dst.location(),
            "counts": into,
            "open_holds": open,
        }));
    } else {
        out(&format!(
            "copied {} records, {} idempotency keys, {} waiting events, {} uploads, {} snapshots, {} tokens and {} ledger entries from {} to {}\nuse it with: export SANDBOXER_DATABASE_URL='{}'",
            into.records,
            into.idempotency_keys,
            into.events_waiting,
            into.uploads,
            into.snapshots,
            into.tokens,
            into.ledger_entries,
            src.location(),
            dst.location(),
            dst.location()
        ));
    }
    Ok(exit::code::OK)
}
