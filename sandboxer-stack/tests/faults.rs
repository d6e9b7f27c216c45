//! Each lifecycle step is one transaction: a fault injected between its
//! parts (the record written, then its State Hub event refused) leaves none
//! of them. The manager runs over a real SQLite database wrapped in a
//! [`FaultyDb`], with an in-process extension (a fake of our own trait, for
//! this test of the layer above it) on a metered route, so every step has
//! a record change, an outbox event and, where it pays, a ledger entry.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sandboxer_core::credits::Micros;
use sandboxer_core::extension::{Capabilities, Extension, Provisioned, ReadyInfo, SandboxCtx};
use sandboxer_core::lifecycle::{EndReason, State};
use sandboxer_core::manager::{CreateRequest, Started};
use sandboxer_core::model::{Actor, Reachability, Sandbox};
use sandboxer_core::snapshot::{Snapshot as SnapshotRecord, SnapshotState};
use sandboxer_core::store::db::{
    read, CensusRow, Cursor, Db, Derived, LedgerRow, ListQuery, OutboxItem, TokenRow, Tx,
};
use sandboxer_core::store::IdempotencyEntry;
use sandboxer_core::uploads::UploadRecord;
use sandboxer_core::{Error, ErrorKind, Result};

/// A database whose transactions fail at `push_event` once armed, after
/// letting `budget` more events through: the step's earlier writes are in
/// the transaction when it fails. A negative budget never fails.
struct FaultyDb {
    inner: Arc<dyn Db>,
    budget: AtomicI64,
}

struct FaultyTx<'a> {
    inner: &'a mut dyn Tx,
    budget: &'a AtomicI64,
}

impl Db for FaultyDb {
    fn transaction(&self, f: &mut (dyn FnMut(&mut dyn Tx) -> Result<()> + Send)) -> Result<()> {
        self.inner.transaction(&mut |tx| {
            f(&mut FaultyTx {
                inner: tx,
                budget: &self.budget,
            })
        })
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn schema_version(&self) -> Result<u32> {
        self.inner.schema_version()
    }
}

impl Tx for FaultyTx<'_> {
    fn push_event(&mut self, sandbox_id: &str, event: &serde_json::Value) -> Result<()> {
        let left = self.budget.load(Ordering::SeqCst);
        if left > 0 {
            self.budget.fetch_sub(1, Ordering::SeqCst);
        }
        if left == 0 {
            return Err(Error::new(
                ErrorKind::Io,
                format!("injected fault: the event of {sandbox_id} is refused"),
            ));
        }
        self.inner.push_event(sandbox_id, event)
    }
    fn sandbox(&mut self, id: &str) -> Result<Option<Sandbox>> {
        self.inner.sandbox(id)
    }
    fn insert_sandbox(&mut self, s: &Sandbox) -> Result<()> {
        self.inner.insert_sandbox(s)
    }
    fn update_sandbox(&mut self, s: &Sandbox) -> Result<()> {
        self.inner.update_sandbox(s)
    }
    fn list_json(&mut self, q: &ListQuery) -> Result<(Vec<String>, Option<Cursor>)> {
        self.inner.list_json(q)
    }
    fn live_per_host(&mut self) -> Result<BTreeMap<String, u32>> {
        self.inner.live_per_host()
    }
    fn count(&mut self) -> Result<u64> {
        self.inner.count()
    }
    fn census(&mut self) -> Result<Vec<CensusRow>> {
        self.inner.census()
    }
    fn idempotency(&mut self, actor: &Actor, key: &str) -> Result<Option<IdempotencyEntry>> {
        self.inner.idempotency(actor, key)
    }
    fn idempotency_keys(&mut self) -> Result<Vec<(Actor, String, IdempotencyEntry)>> {
        self.inner.idempotency_keys()
    }
    fn put_idempotency(
        &mut self,
        actor: &Actor,
        key: &str,
        entry: &IdempotencyEntry,
    ) -> Result<()> {
        self.inner.put_idempotency(actor, key, entry)
    }
    fn outbox(&mut self, limit: usize) -> Result<Vec<OutboxItem>> {
        self.inner.outbox(limit)
    }
    fn replace_event(&mut self, seq: i64, event: &serde_json::Value) -> Result<()> {
        self.inner.replace_event(seq, event)
    }
    fn ack_events(&mut self, seqs: &[i64]) -> Result<()> {
        self.inner.ack_events(seqs)
    }
    fn outbox_depth(&mut self) -> Result<u64> {
        self.inner.outbox_depth()
    }
    fn upload(&mut self, id: &str) -> Result<Option<UploadRecord>> {
        self.inner.upload(id)
    }
    fn put_upload(&mut self, u: &UploadRecord) -> Result<()> {
        self.inner.put_upload(u)
    }
    fn remove_upload(&mut self, id: &str) -> Result<()> {
        self.inner.remove_upload(id)
    }
    fn uploads(&mut self, actor: Option<&Actor>) -> Result<Vec<UploadRecord>> {
        self.inner.uploads(actor)
    }
    fn snapshot(&mut self, id: &str) -> Result<Option<SnapshotRecord>> {
        self.inner.snapshot(id)
    }
    fn put_snapshot(&mut self, s: &SnapshotRecord) -> Result<()> {
        self.inner.put_snapshot(s)
    }
    fn snapshots(
        &mut self,
        actor: Option<&Actor>,
        states: &[SnapshotState],
    ) -> Result<Vec<SnapshotRecord>> {
        self.inner.snapshots(actor, states)
    }
    fn put_token(&mut self, t: &TokenRow) -> Result<()> {
        self.inner.put_token(t)
    }
    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRow>> {
        self.inner.token_by_hash(hash)
    }
    fn tokens(&mut self) -> Result<Vec<TokenRow>> {
        self.inner.tokens()
    }
    fn remove_token(&mut self, name: &str) -> Result<bool> {
        self.inner.remove_token(name)
    }
    fn append_ledger(&mut self, row: &LedgerRow) -> Result<i64> {
        self.inner.append_ledger(row)
    }
    fn ledger_entry(&mut self, id: &str) -> Result<Option<LedgerRow>> {
        self.inner.ledger_entry(id)
    }
    fn ledger_entries(&mut self, after: i64, limit: usize) -> Result<Vec<LedgerRow>> {
        self.inner.ledger_entries(after, limit)
    }
    fn derived(&mut self, table: Derived, key: &str) -> Result<Option<serde_json::Value>> {
        self.inner.derived(table, key)
    }
    fn put_derived(&mut self, table: Derived, key: &str, value: &serde_json::Value) -> Result<()> {
        self.inner.put_derived(table, key, value)
    }
    fn all_derived(&mut self, table: Derived) -> Result<BTreeMap<String, serde_json::Value>> {
        self.inner.all_derived(table)
    }
}

/// Ready at once, nothing to tear down.
struct Instant;

#[async_trait]
impl Extension for Instant {
    fn id(&self) -> &str {
        "ext.instant-test"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            extend: false,
            list_resources: false,
            uses_host: false,
            pause: false,
            snapshot: false,
        }
    }
    async fn provision(&self, _ctx: &SandboxCtx) -> Result<Provisioned> {
        Ok(Provisioned {
            handle: serde_json::json!({"made": true}),
        })
    }
    async fn wait_ready(
        &self,
        _ctx: &SandboxCtx,
        _handle: &serde_json::Value,
        _deadline: tokio::time::Instant,
    ) -> Result<ReadyInfo> {
        Ok(ReadyInfo {
            reachability: Reachability {
                address: "127.0.0.1".into(),
                ..Default::default()
            },
            ..Default::default()
        })
    }
    async fn teardown(&self, _ctx: &SandboxCtx, _handle: &serde_json::Value) -> Result<()> {
        Ok(())
    }
    async fn extend(
        &self,
        _ctx: &SandboxCtx,
        _handle: &serde_json::Value,
        _expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        Err(Error::unsupported("no extend"))
    }
    async fn list_resources(
        &self,
        _transport: Arc<dyn sandboxer_core::transport::Transport>,
    ) -> Result<Vec<sandboxer_core::extension::Resource>> {
        Ok(Vec::new())
    }
}

const PROFILE: &str = r#"
id = "profile.instant"
version = 1
description = "ready at once, metered"
default_ttl = "1h"
max_ttl = "2h"

[[routes]]
extension = "ext.instant-test"
placement = ["instant"]
price_per_hour = "0.6"
"#;

/// What a step may have left: the records (id, state), the outbox depth,
/// the ledger entries' ids.
#[derive(Debug, PartialEq)]
struct Snapshot {
    records: Vec<(String, State)>,
    events: u64,
    entries: Vec<String>,
}

fn snapshot(db: &dyn Db) -> Snapshot {
    read(db, |tx| {
        let records = tx
            .list(&ListQuery::default())?
            .records
            .into_iter()
            .map(|s| (s.id.clone(), s.state()))
            .collect();
        let events = tx.outbox_depth()?;
        let entries = tx
            .ledger_entries(0, 10_000)?
            .into_iter()
            .map(|r| r.id)
            .collect();
        Ok(Snapshot {
            records,
            events,
            entries,
        })
    })
    .unwrap()
}

/// 10 credits for `agt:faults`, who every request acts for.
fn fund(ledger: &sandboxer_stack::DbLedger) {
    let actor: Actor = "agt:faults".parse().unwrap();
    ledger
        .grant(
            &"adm:ops".parse().unwrap(),
            &actor,
            Micros::from_credits(10),
            Some("g"),
        )
        .unwrap();
}

fn request() -> CreateRequest {
    CreateRequest {
        profile: "profile.instant".into(),
        inputs: BTreeMap::new(),
        ttl: Some(Duration::from_secs(600)),
        constraints: Default::default(),
        actor: Some("agt:faults".parse().unwrap()),
        idempotency_key: None,
        recreated_from: None,
        from_snapshot: None,
        metadata: BTreeMap::new(),
    }
}

#[tokio::test]
async fn a_fault_inside_any_lifecycle_step_leaves_none_of_its_parts() {
    let home = tempfile::tempdir().unwrap();
    let (data, config) = (home.path().join("data"), home.path().join("config"));
    std::fs::create_dir_all(config.join("profiles")).unwrap();
    std::fs::write(config.join("profiles").join("instant.toml"), PROFILE).unwrap();
    let inner = sandboxer_store::open(None, &data).unwrap();
    let db = Arc::new(FaultyDb {
        inner,
        budget: AtomicI64::new(-1),
    });
    let stack = sandboxer_stack::StackBuilder::new(&data, &config)
        .with_database_handle(db.clone())
        .with_extension(Arc::new(Instant))
        .with_events(true)
        .build()
        .unwrap();
    let (m, ledger) = (stack.manager, stack.ledger);
    fund(&ledger);
    // Fail the next event (`true`), or none (`false`).
    let arm = |on: bool| db.budget.store(if on { 0 } else { -1 }, Ordering::SeqCst);
    let fails = |r: Result<Sandbox>| {
        let e = r.expect_err("the injected fault must fail the step");
        assert!(e.to_string().contains("injected fault"), "{e}");
    };

    // 1. The create's first step: the record, its hold and its event.
    let before = snapshot(db.as_ref());
    arm(true);
    let e = m.start_create(&request()).expect_err("refused");
    assert!(e.to_string().contains("injected fault"), "{e}");
    arm(false);
    assert_eq!(
        snapshot(db.as_ref()),
        before,
        "no record, no hold, no event"
    );

    // 2. Ready: the record's move to `ready` and its event.
    let Started::New(s) = m.start_create(&request()).unwrap() else {
        panic!("a new create")
    };
    let recorded = snapshot(db.as_ref());
    assert_eq!(recorded.records, [(s.id.clone(), State::Provisioning)]);
    assert_eq!(recorded.events, 1);
    assert!(
        recorded.entries.contains(&format!("hold:{}", s.id)),
        "{recorded:?}"
    );
    arm(true);
    let _ = m.finish_create(&s.id).await; // fails; marking it failed is refused too
    arm(false);
    // The rollback released the hold (a void, never a settle: it was never
    // ready); the record and the outbox are as the first step left them.
    let mut want = recorded;
    want.entries.push(format!("void:{}", s.id));
    assert_eq!(
        snapshot(db.as_ref()),
        want,
        "still provisioning, one event, hold voided"
    );
    let recorded = want;

    // 3. Destroy's first step: the move to `destroying`, the void of a
    // create that never became ready, and the event.
    arm(true);
    fails(m.destroy(&s.id, EndReason::Destroyed).await);
    arm(false);
    assert_eq!(
        snapshot(db.as_ref()),
        recorded,
        "nothing voided, nothing moved"
    );
    let ended = m.destroy(&s.id, EndReason::Destroyed).await.unwrap();
    assert_eq!(ended.state(), State::Destroyed);
    let after = snapshot(db.as_ref());
    assert!(
        after.entries.contains(&format!("void:{}", s.id)),
        "{after:?}"
    );
    assert_eq!(after.events, 3, "provisioning, destroying, destroyed");

    // 4. A ready sandbox's destroy: the move to `destroying` and its event;
    // then a fault at the last step (`destroyed`) leaves it `destroying`
    // for the reaper, with its event count unchanged.
    let ready = m.create(request(), true).await.unwrap();
    assert_eq!(ready.state(), State::Ready);
    let live = snapshot(db.as_ref());
    arm(true);
    fails(m.destroy(&ready.id, EndReason::Destroyed).await);
    arm(false);
    assert_eq!(
        snapshot(db.as_ref()),
        live,
        "still ready, no event, no settle"
    );

    // 5. The last step alone: the teardown done, the settle and the move to
    // `destroyed` fail together, so the record stays `destroying` (for a
    // retry or the reaper) with its hold still open: never `destroyed`
    // unpaid, never paid and still `destroying`.
    db.budget.store(1, Ordering::SeqCst); // the `destroying` event passes
    fails(m.destroy(&ready.id, EndReason::Destroyed).await);
    arm(false);
    let half = snapshot(db.as_ref());
    assert_eq!(
        half.records.last().unwrap().1,
        State::Destroying,
        "{half:?}"
    );
    assert_eq!(half.events, live.events + 1, "the destroying event only");
    assert_eq!(half.entries, live.entries, "no settle yet: {half:?}");
    let done = m.destroy(&ready.id, EndReason::Destroyed).await.unwrap();
    assert_eq!(done.state(), State::Destroyed);
    let paid = snapshot(db.as_ref());
    let settles: Vec<&String> = paid
        .entries
        .iter()
        .filter(|e| *e == &format!("settle:{}", ready.id))
        .collect();
    assert_eq!(settles.len(), 1, "settled once, with the move: {paid:?}");
    // `destroying`, `destroying` again (the retry announces itself), then
    // `destroyed`.
    assert_eq!(paid.events, live.events + 3);
    let report = ledger.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.violations);
}

/// One manual clock for the manager and the metering layer: the reaper
/// ends a sandbox once the clock passes its deadline (not a second
/// before), and the settle counts the seconds on that clock.
#[tokio::test]
async fn the_reaper_and_the_settle_go_by_the_stacks_clock() {
    use sandboxer_core::clock::{Clock as _, ManualClock};
    let home = tempfile::tempdir().unwrap();
    let (data, config) = (home.path().join("data"), home.path().join("config"));
    std::fs::create_dir_all(config.join("profiles")).unwrap();
    std::fs::write(config.join("profiles").join("instant.toml"), PROFILE).unwrap();
    let clock = ManualClock::starting_now();
    let stack = sandboxer_stack::StackBuilder::new(&data, &config)
        .with_extension(Arc::new(Instant))
        .with_clock(clock.clone())
        .build()
        .unwrap();
    let (m, ledger) = (stack.manager, stack.ledger);
    fund(&ledger);
    let sbx = m.create(request(), true).await.unwrap();
    assert_eq!(sbx.created_at, clock.now());
    let held = ledger
        .entries(&sandboxer_credits::state::EntryFilter {
            sandbox_id: Some(sbx.id.clone()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(
        held[0].at,
        clock.now(),
        "the ledger stamps by the clock too"
    );
    assert_eq!(
        sbx.expires_at,
        Some(clock.now() + chrono::Duration::seconds(600))
    );

    clock.advance(Duration::from_secs(599));
    let report = m.reap_stale(Duration::ZERO, false).await.unwrap();
    assert!(report.reaped.is_empty(), "{report:?}");
    assert_eq!(m.get(&sbx.id).unwrap().state(), State::Ready);

    clock.advance(Duration::from_secs(2));
    let report = m.reap_stale(Duration::ZERO, false).await.unwrap();
    assert_eq!(report.reaped.len(), 1, "{report:?}");
    let ended = m.get(&sbx.id).unwrap();
    assert_eq!(ended.state(), State::Destroyed);
    assert_eq!(ended.reason().as_deref(), Some("expired"));
    assert_eq!(ended.ended_at, Some(clock.now()));
    // It ran 601 seconds by the clock, past the 600 its hold covers: the
    // settle is capped at what was held.
    let cost = ended.cost.unwrap();
    assert_eq!(cost.settled, Some(cost.held));

    // Destroyed 90.4 seconds in by the clock: 91 started seconds paid.
    let other = m.create(request(), true).await.unwrap();
    clock.advance(Duration::from_millis(90_400));
    let gone = m.destroy(&other.id, EndReason::Destroyed).await.unwrap();
    assert_eq!(
        gone.cost.unwrap().settled,
        Some(Micros::parse_amount("0.6").unwrap().per_hour_times_secs(91))
    );
    assert!(ledger.check().unwrap().is_ok());
}
