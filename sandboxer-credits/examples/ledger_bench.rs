//! Hold+settle pairs per second: `DbLedger` (the ledger in sandboxer's
//! embedded database) against the same pairs written as plain SQLite
//! transactions by hand, with the same durability (every operation synced
//! before it returns), in temp dirs on the same disk, in the same run; and
//! against the `ledger.jsonl` figure of release 0.1, measured by this
//! program before that ledger was removed (kept as the baseline).
//!
//! ```text
//! cargo run --release -p sandboxer-credits --example ledger_bench -- --pairs 2000 [--rounds 3] [--dir PATH]
//! ```
//!
//! - DbLedger: `hold` then `settle`, each one transaction that reads the
//!   entry id, the hold and the account and writes the entry, the hold and
//!   the account (SQLite, WAL, `synchronous=FULL`, `BEGIN IMMEDIATE`).
//! - SQLite (rusqlite, bundled): `journal_mode=WAL`, `synchronous=FULL`
//!   (the WAL is synced at every commit); a hold is one transaction (check
//!   the balance, insert the hold and the entry, move available to held),
//!   a settle another (read the hold, insert the entry, resolve it, move
//!   held to spent and available).
//!
//! Rounds alternate which store goes first; the table shows the median.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{Duration, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use sandboxer_core::credits::Micros;
use sandboxer_core::model::Actor;
use sandboxer_credits::{DbLedger, HoldRequest};
use sandboxer_testkit::stats::Summary;

struct Args {
    pairs: usize,
    rounds: usize,
    dir: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        pairs: 2000,
        rounds: 3,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--pairs" => a.pairs = value()?.parse().context("--pairs")?,
            "--rounds" => a.rounds = value()?.parse().context("--rounds")?,
            "--dir" => a.dir = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("ledger_bench [--pairs N] [--rounds R] [--dir PATH]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if a.pairs == 0 || a.rounds == 0 {
        bail!("--pairs and --rounds must be positive");
    }
    Ok(a)
}

const PRICE: Micros = Micros(360_000); // 0.36 credits/h: 0.0001 per second

/// `ledger.jsonl` of release 0.1 on this machine, pairs/s: the median of 3
/// rounds of 2000 pairs (docs/benchmarks.md of 2026-11-28, commit before
/// the database replaced it). Kept as the baseline the database ledger is
/// held to.
const JSONL_BASELINE: f64 = 3873.0;

fn db_ledger(dir: &std::path::Path, pairs: usize) -> anyhow::Result<f64> {
    let ledger = DbLedger::new(sandboxer_store::open(None, dir)?);
    let ops: Actor = "adm:bench".parse()?;
    let agent: Actor = "agt:bench".parse()?;
    ledger.grant(&ops, &agent, Micros::from_credits(1_000_000), Some("bench"))?;
    let created_at = Utc::now();
    let start = Instant::now();
    for i in 0..pairs {
        let sandbox_id = format!("sbx-bench{i}");
        ledger.hold(&HoldRequest {
            sandbox_id: sandbox_id.clone(),
            actor: agent.clone(),
            price_per_hour: PRICE,
            extension: "ext.saas-stub".into(),
            host: "saas".into(),
            profile: "profile.saas".into(),
            created_at,
            expires_at: created_at + Duration::hours(1),
        })?;
        ledger.settle(&sandbox_id, 600, Utc::now())?;
    }
    let secs = start.elapsed().as_secs_f64();
    let report = ledger.check()?;
    if !report.is_ok() {
        bail!("DbLedger check failed: {:?}", report.violations);
    }
    Ok(pairs as f64 / secs)
}

fn sqlite(dir: &std::path::Path, pairs: usize) -> anyhow::Result<f64> {
    let mut db = Connection::open(dir.join("ledger.sqlite"))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.execute_batch(
        "CREATE TABLE accounts (actor TEXT PRIMARY KEY, granted INTEGER NOT NULL,
             available INTEGER NOT NULL, held INTEGER NOT NULL, spent INTEGER NOT NULL);
         CREATE TABLE holds (sandbox_id TEXT PRIMARY KEY, actor TEXT NOT NULL,
             amount INTEGER NOT NULL, price_per_hour INTEGER NOT NULL, extension TEXT NOT NULL,
             host TEXT NOT NULL, profile TEXT NOT NULL, created_at TEXT NOT NULL,
             expires_at TEXT NOT NULL, state TEXT NOT NULL, seconds INTEGER, cost INTEGER);
         CREATE TABLE entries (id TEXT PRIMARY KEY, at TEXT NOT NULL, kind TEXT NOT NULL,
             sandbox_id TEXT, amount INTEGER NOT NULL);",
    )?;
    let grant = Micros::from_credits(1_000_000).0;
    db.execute(
        "INSERT INTO accounts VALUES ('agt:bench', ?1, ?1, 0, 0)",
        params![grant],
    )?;
    let created_at = Utc::now();
    let expires_at = created_at + Duration::hours(1);
    let hold_amount = PRICE.per_hour_times_secs(3600).0;
    let start = Instant::now();
    for i in 0..pairs {
        let sandbox_id = format!("sbx-bench{i}");
        // The hold.
        let tx = db.transaction()?;
        let available: i64 = tx.query_row(
            "SELECT available FROM accounts WHERE actor = 'agt:bench'",
            [],
            |r| r.get(0),
        )?;
        if available < hold_amount {
            bail!("insufficient credits");
        }
        tx.execute(
            "INSERT INTO entries VALUES (?1, ?2, 'hold', ?3, ?4)",
            params![
                format!("hold:{sandbox_id}"),
                Utc::now().to_rfc3339(),
                sandbox_id,
                hold_amount
            ],
        )?;
        tx.execute(
            "INSERT INTO holds VALUES (?1, 'agt:bench', ?2, ?3, 'ext.saas-stub', 'saas',
                 'profile.saas', ?4, ?5, 'open', NULL, NULL)",
            params![
                sandbox_id,
                hold_amount,
                PRICE.0,
                created_at.to_rfc3339(),
                expires_at.to_rfc3339()
            ],
        )?;
        tx.execute(
            "UPDATE accounts SET available = available - ?1, held = held + ?1 WHERE actor = 'agt:bench'",
            params![hold_amount],
        )?;
        tx.commit()?;
        // The settle.
        let tx = db.transaction()?;
        let (amount, price): (i64, i64) = tx
            .query_row(
                "SELECT amount, price_per_hour FROM holds WHERE sandbox_id = ?1 AND state = 'open'",
                params![sandbox_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .context("no open hold")?;
        let cost = Micros(price).per_hour_times_secs(600).0.min(amount);
        tx.execute(
            "INSERT INTO entries VALUES (?1, ?2, 'settle', ?3, ?4)",
            params![
                format!("settle:{sandbox_id}"),
                Utc::now().to_rfc3339(),
                sandbox_id,
                cost
            ],
        )?;
        tx.execute(
            "UPDATE holds SET state = 'settled', seconds = 600, cost = ?2 WHERE sandbox_id = ?1",
            params![sandbox_id, cost],
        )?;
        tx.execute(
            "UPDATE accounts SET held = held - ?1, spent = spent + ?2,
                 available = available + ?1 - ?2 WHERE actor = 'agt:bench'",
            params![amount, cost],
        )?;
        tx.commit()?;
    }
    Ok(pairs as f64 / start.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let parent = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&parent)?;
    let (mut ledger_rates, mut sqlite_rates) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let a = tempfile::tempdir_in(&parent)?;
        let b = tempfile::tempdir_in(&parent)?;
        if round % 2 == 0 {
            ledger_rates.push(db_ledger(a.path(), args.pairs)?);
            sqlite_rates.push(sqlite(b.path(), args.pairs)?);
        } else {
            sqlite_rates.push(sqlite(b.path(), args.pairs)?);
            ledger_rates.push(db_ledger(a.path(), args.pairs)?);
        }
    }
    let median = |v: &[f64]| Summary::of_ms(v).map_or(0.0, |s| s.p50);
    let (l, s) = (median(&ledger_rates), median(&sqlite_rates));
    println!(
        "hold+settle pairs, {} pairs x {} rounds, in {} (median of the rounds)\n",
        args.pairs,
        args.rounds,
        parent.display()
    );
    println!("| store | durability | pairs/s | every round |");
    println!("|---|---|---:|---|");
    let rounds = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "| DbLedger (sandboxer.db) | one SQLite transaction per operation, synchronous=FULL | {l:.0} | {} |",
        rounds(&ledger_rates)
    );
    println!(
        "| SQLite (rusqlite {}, WAL) | synchronous=FULL, one transaction per operation | {s:.0} | {} |",
        rusqlite::version(),
        rounds(&sqlite_rates)
    );
    println!(
        "| ledger.jsonl of release 0.1 (baseline, an earlier run) | append + fdatasync per entry, under flock | {JSONL_BASELINE:.0} | - |"
    );
    println!(
        "\nratio DbLedger / plain SQLite: {:.2}; DbLedger / ledger.jsonl baseline: {:.2} (target: at least 1.0)",
        l / s,
        l / JSONL_BASELINE
    );
    Ok(())
}
