//! Hold+settle pairs per second: `DbLedger` (the ledger in sandboxer's
//! embedded database) against the same pairs written as plain SQLite
//! transactions by hand and as release 0.1's `ledger.jsonl` wrote them
//! (one JSON line appended and `fdatasync`ed per entry, under `flock`),
//! all with the same durability (every operation synced before it
//! returns), in temp dirs on the same disk, in the same run; and against
//! the `ledger.jsonl` figure of release 0.1 measured before that ledger was
//! removed (kept as the baseline of record).
//!
//! ```text
//! cargo run --release -p sandboxer-credits --example ledger_bench -- --pairs 2000 [--rounds 3] [--dir PATH]
//! ```
//!
//! The disk's sync latency drifts by a factor of two within a minute on
//! shared machines, so the stores take turns every 50 pairs (rotating who
//! goes first) and each store's rate is its pairs over its own time: the
//! drift falls on all of them alike.
//!
//! - DbLedger: `hold` then `settle`, each one transaction that reads the
//!   entry id, the hold and the account and writes the entry, the hold and
//!   the account (SQLite, WAL, `synchronous=FULL`, `BEGIN IMMEDIATE`).
//! - SQLite (rusqlite, bundled): `journal_mode=WAL`, `synchronous=FULL`
//!   (the WAL is synced at every commit); a hold is one transaction (check
//!   the balance, insert the hold and the entry, move available to held),
//!   a settle another (read the hold, insert the entry, resolve it, move
//!   held to spent and available).
//! - ledger.jsonl pattern: per entry, `flock` the file, `fstat` it (0.1
//!   looked for other writers' lines), append the entry's JSON line,
//!   `fdatasync`, unlock.
//!
//! Each round is `--pairs` pairs per store; the table shows the median.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{Duration, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use sandboxer_core::credits::Micros;
use sandboxer_core::model::Actor;
use sandboxer_credits::state::Entry;
use sandboxer_credits::{DbLedger, HoldRequest};
use sandboxer_testkit::stats::Summary;

struct Args {
    pairs: usize,
    rounds: usize,
    dir: Option<PathBuf>,
    /// Run one store alone (`ledger`, `sqlite` or `jsonl`), for profiling.
    only: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        pairs: 2000,
        rounds: 3,
        dir: None,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--pairs" => a.pairs = value()?.parse().context("--pairs")?,
            "--rounds" => a.rounds = value()?.parse().context("--rounds")?,
            "--dir" => a.dir = Some(PathBuf::from(value()?)),
            "--only" => a.only = Some(value()?),
            "-h" | "--help" => {
                println!("ledger_bench [--pairs N] [--rounds R] [--dir PATH] [--only ledger|sqlite|jsonl]");
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

/// The hold of the `sandbox_id` every store writes: an hour at [`PRICE`].
fn hold_request(sandbox_id: &str, agent: &Actor, created_at: chrono::DateTime<Utc>) -> HoldRequest {
    HoldRequest {
        sandbox_id: sandbox_id.to_string(),
        actor: agent.clone(),
        price_per_hour: PRICE,
        extension: "ext.saas-stub".into(),
        host: "saas".into(),
        profile: "profile.saas".into(),
        created_at,
        expires_at: created_at + Duration::hours(1),
    }
}

/// One store under test: `pair(i)` writes the hold and the settle of the
/// `i`-th sandbox, each synced before it returns.
trait Store {
    fn pair(&mut self, i: usize) -> anyhow::Result<()>;
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

struct Ledger {
    ledger: DbLedger,
    agent: Actor,
    created_at: chrono::DateTime<Utc>,
}

impl Ledger {
    fn open(dir: &std::path::Path) -> anyhow::Result<Ledger> {
        let ledger = DbLedger::new(sandboxer_store::open(None, dir)?);
        let ops: Actor = "adm:bench".parse()?;
        let agent: Actor = "agt:bench".parse()?;
        ledger.grant(&ops, &agent, Micros::from_credits(1_000_000), Some("bench"))?;
        Ok(Ledger {
            ledger,
            agent,
            created_at: Utc::now(),
        })
    }
}

impl Store for Ledger {
    fn pair(&mut self, i: usize) -> anyhow::Result<()> {
        let sandbox_id = format!("sbx-bench{i}");
        self.ledger
            .hold(&hold_request(&sandbox_id, &self.agent, self.created_at))?;
        self.ledger.settle(&sandbox_id, 600, Utc::now())?;
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        let report = self.ledger.check()?;
        if !report.is_ok() {
            bail!("DbLedger check failed: {:?}", report.violations);
        }
        Ok(())
    }
}

struct Plain {
    db: Connection,
    hold_amount: i64,
    created_at: String,
    expires_at: String,
}

impl Plain {
    fn open(dir: &std::path::Path) -> anyhow::Result<Plain> {
        let db = Connection::open(dir.join("ledger.sqlite"))?;
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
        Ok(Plain {
            db,
            hold_amount: PRICE.per_hour_times_secs(3600).0,
            created_at: created_at.to_rfc3339(),
            expires_at: (created_at + Duration::hours(1)).to_rfc3339(),
        })
    }
}

impl Store for Plain {
    fn pair(&mut self, i: usize) -> anyhow::Result<()> {
        let sandbox_id = format!("sbx-bench{i}");
        let hold_amount = self.hold_amount;
        // The hold.
        let tx = self.db.transaction()?;
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
                self.created_at,
                self.expires_at
            ],
        )?;
        tx.execute(
            "UPDATE accounts SET available = available - ?1, held = held + ?1 WHERE actor = 'agt:bench'",
            params![hold_amount],
        )?;
        tx.commit()?;
        // The settle.
        let tx = self.db.transaction()?;
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
        Ok(())
    }
}

/// Release 0.1's way of writing `ledger.jsonl`, entry by entry.
struct Jsonl {
    file: std::fs::File,
    created_at: chrono::DateTime<Utc>,
    agent: Actor,
}

impl Jsonl {
    fn open(dir: &std::path::Path) -> anyhow::Result<Jsonl> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("ledger.jsonl"))?;
        Ok(Jsonl {
            file,
            created_at: Utc::now(),
            agent: "agt:bench".parse()?,
        })
    }

    fn append(&mut self, entry: &Entry) -> anyhow::Result<()> {
        use std::io::Write;
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        self.file.lock()?;
        let _len = self.file.metadata()?.len();
        self.file.write_all(&line)?;
        self.file.sync_data()?;
        self.file.unlock()?;
        Ok(())
    }
}

impl Store for Jsonl {
    fn pair(&mut self, i: usize) -> anyhow::Result<()> {
        let sandbox_id = format!("sbx-bench{i}");
        let hold = Entry::hold(
            &hold_request(&sandbox_id, &self.agent, self.created_at),
            Utc::now(),
        );
        self.append(&hold)?;
        self.append(&Entry::settle(&sandbox_id, 600, Utc::now()))
    }
}

/// Run `pairs` pairs on every store, 50 at a time in turn; pairs/s each.
fn round(stores: &mut [Box<dyn Store>], pairs: usize, round: usize) -> anyhow::Result<Vec<f64>> {
    const BATCH: usize = 50;
    let n = stores.len();
    let mut spent = vec![std::time::Duration::ZERO; n];
    let mut done = 0;
    let mut turn = round;
    while done < pairs {
        let batch = BATCH.min(pairs - done);
        for k in 0..n {
            let which = (turn + k) % n;
            let t = Instant::now();
            for i in done..done + batch {
                stores[which].pair(i)?;
            }
            spent[which] += t.elapsed();
        }
        done += batch;
        turn += 1;
    }
    for s in stores.iter_mut() {
        s.finish()?;
    }
    Ok(spent
        .iter()
        .map(|d| pairs as f64 / d.as_secs_f64())
        .collect())
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let parent = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&parent)?;
    if let Some(only) = &args.only {
        let dir = tempfile::tempdir_in(&parent)?;
        let mut store: Vec<Box<dyn Store>> = vec![match only.as_str() {
            "ledger" => Box::new(Ledger::open(dir.path())?),
            "sqlite" => Box::new(Plain::open(dir.path())?),
            "jsonl" => Box::new(Jsonl::open(dir.path())?),
            other => bail!("--only takes ledger, sqlite or jsonl, not {other}"),
        }];
        let rate = round(&mut store, args.pairs, 0)?[0];
        println!("{only}: {rate:.0} pairs/s");
        return Ok(());
    }
    let mut rates: [Vec<f64>; 3] = Default::default();
    for r in 0..args.rounds {
        let dirs = [
            tempfile::tempdir_in(&parent)?,
            tempfile::tempdir_in(&parent)?,
            tempfile::tempdir_in(&parent)?,
        ];
        let mut stores: Vec<Box<dyn Store>> = vec![
            Box::new(Ledger::open(dirs[0].path())?),
            Box::new(Plain::open(dirs[1].path())?),
            Box::new(Jsonl::open(dirs[2].path())?),
        ];
        for (k, rate) in round(&mut stores, args.pairs, r)?.into_iter().enumerate() {
            rates[k].push(rate);
        }
    }
    let median = |v: &[f64]| Summary::of_ms(v).map_or(0.0, |s| s.p50);
    let (l, s, j) = (median(&rates[0]), median(&rates[1]), median(&rates[2]));
    println!(
        "hold+settle pairs, {} pairs per store x {} rounds, in {}, the stores taking turns every 50 pairs (median of the rounds)\n",
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
        rounds(&rates[0])
    );
    println!(
        "| SQLite (rusqlite {}, WAL) | synchronous=FULL, one transaction per operation | {s:.0} | {} |",
        rusqlite::version(),
        rounds(&rates[1])
    );
    println!(
        "| ledger.jsonl write pattern of release 0.1, this run | append + fdatasync per entry, under flock | {j:.0} | {} |",
        rounds(&rates[2])
    );
    println!(
        "| ledger.jsonl of release 0.1 (baseline of record, an earlier run) | append + fdatasync per entry, under flock | {JSONL_BASELINE:.0} | - |"
    );
    println!(
        "\nratio DbLedger / ledger.jsonl pattern (same run): {:.2} (target: at least 1.0); DbLedger / plain SQLite: {:.2}; DbLedger / baseline of record: {:.2}",
        l / j,
        l / s,
        l / JSONL_BASELINE
    );
    Ok(())
}
