//! Pause, resume and snapshots through the whole stack (manager, store,
//! ledger, metering layer) on a manual clock, so the amounts are checked
//! to the second. The extension is an in-process one that records what it
//! is asked: these tests are of the layers above it (every real extension
//! runs the conformance suite's pause and snapshot checks).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sandboxer_core::clock::{Clock as _, ManualClock};
use sandboxer_core::credits::Micros;
use sandboxer_core::extension::{
    Capabilities, Extension, Provisioned, ReadyInfo, Resource, SandboxCtx, SnapshotMade,
};
use sandboxer_core::lifecycle::{EndReason, Event, State};
use sandboxer_core::manager::{CreateRequest, Manager};
use sandboxer_core::model::{Actor, Reachability};
use sandboxer_core::snapshot::SnapshotState;
use sandboxer_core::store::db::transact;
use sandboxer_core::store::{require, transition};
use sandboxer_core::transport::Transport;
use sandboxer_core::{Error, ErrorKind, Result};
use sandboxer_credits::state::EntryFilter;
use sandboxer_stack::DbLedger;

/// Ready at once; remembers paused sandboxes and the snapshots it holds,
/// and can be told to fail the next pause, resume or snapshot.
#[derive(Default)]
struct Pausable {
    paused: Mutex<Vec<String>>,
    snapshots: Mutex<Vec<String>>,
    fail_next: Mutex<Option<&'static str>>,
}

impl Pausable {
    fn failing(&self, step: &'static str) -> Result<()> {
        let mut f = self.fail_next.lock().unwrap();
        if *f == Some(step) {
            *f = None;
            return Err(Error::new(
                ErrorKind::Io,
                format!("{step} failed on purpose"),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Extension for Pausable {
    fn id(&self) -> &str {
        "ext.pausable-test"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            extend: false,
            list_resources: true,
            uses_host: false,
            pause: true,
            snapshot: true,
        }
    }
    async fn provision(&self, ctx: &SandboxCtx) -> Result<Provisioned> {
        if let Some(r) = &ctx.restore {
            if !self.snapshots.lock().unwrap().contains(&r.snapshot_id) {
                return Err(Error::not_found(format!("no {}", r.snapshot_id)));
            }
        }
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
        Ok(ready())
    }
    async fn teardown(&self, ctx: &SandboxCtx, _handle: &serde_json::Value) -> Result<()> {
        self.paused.lock().unwrap().retain(|p| p != &ctx.id);
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
    async fn list_resources(&self, _transport: Arc<dyn Transport>) -> Result<Vec<Resource>> {
        Ok(self
            .snapshots
            .lock()
            .unwrap()
            .iter()
            .map(|s| Resource {
                sandbox_id: s.clone(),
                kind: "test snapshot".into(),
                name: s.clone(),
                running: false,
            })
            .collect())
    }
    async fn pause(&self, ctx: &SandboxCtx, _handle: &serde_json::Value) -> Result<()> {
        self.failing("pause")?;
        self.paused.lock().unwrap().push(ctx.id.clone());
        Ok(())
    }
    async fn resume(
        &self,
        ctx: &SandboxCtx,
        _handle: &serde_json::Value,
        _deadline: tokio::time::Instant,
    ) -> Result<ReadyInfo> {
        self.failing("resume")?;
        self.paused.lock().unwrap().retain(|p| p != &ctx.id);
        Ok(ready())
    }
    async fn snapshot(
        &self,
        _ctx: &SandboxCtx,
        _handle: &serde_json::Value,
        snapshot_id: &str,
    ) -> Result<SnapshotMade> {
        self.failing("snapshot")?;
        self.snapshots.lock().unwrap().push(snapshot_id.to_string());
        Ok(SnapshotMade {
            handle: serde_json::json!({"snap": snapshot_id}),
            location: Some(format!("memory:{snapshot_id}")),
            size_bytes: Some(42),
        })
    }
    async fn delete_snapshot(
        &self,
        _transport: Arc<dyn Transport>,
        snapshot_id: &str,
        _handle: &serde_json::Value,
    ) -> Result<()> {
        self.snapshots.lock().unwrap().retain(|s| s != snapshot_id);
        Ok(())
    }
}

fn ready() -> ReadyInfo {
    ReadyInfo {
        reachability: Reachability {
            address: "127.0.0.1".into(),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// 3.6 credits an hour (0.001 a second) running, 0.36 (0.0001 a second)
/// paused, an hour of paused retention, 0.36 an hour per snapshot.
const PROFILE: &str = r#"
id = "profile.pausable"
version = 1
description = "pausable, metered"
default_ttl = "10m"
max_ttl = "1h"
paused_retention = "1h"
paused_price_per_hour = "0.36"
snapshot_price_per_hour = "0.36"

[[routes]]
extension = "ext.pausable-test"
placement = ["pausable"]
price_per_hour = "3.6"
"#;

struct Fx {
    _home: tempfile::TempDir,
    m: Manager,
    ledger: Arc<DbLedger>,
    ext: Arc<Pausable>,
    clock: Arc<ManualClock>,
    actor: Actor,
}

fn fixture(credits: &str) -> Fx {
    let home = tempfile::tempdir().unwrap();
    let (data, config) = (home.path().join("data"), home.path().join("config"));
    std::fs::create_dir_all(config.join("profiles")).unwrap();
    std::fs::write(config.join("profiles").join("pausable.toml"), PROFILE).unwrap();
    let clock = ManualClock::starting_now();
    let ext = Arc::new(Pausable::default());
    let stack = sandboxer_stack::StackBuilder::new(&data, &config)
        .with_extension(ext.clone())
        .with_clock(clock.clone())
        .with_events(true)
        .build()
        .unwrap();
    let actor: Actor = "agt:pauser".parse().unwrap();
    stack
        .ledger
        .grant(
            &"adm:ops".parse().unwrap(),
            &actor,
            Micros::parse_amount(credits).unwrap(),
            Some("g"),
        )
        .unwrap();
    Fx {
        _home: home,
        m: stack.manager,
        ledger: stack.ledger,
        ext,
        clock,
        actor,
    }
}

impl Fx {
    async fn create(&self) -> String {
        let req = CreateRequest {
            profile: "profile.pausable".into(),
            actor: Some(self.actor.clone()),
            ..Default::default()
        };
        self.m.create(req, true).await.unwrap().id
    }

    fn entries(&self, id: &str) -> Vec<(String, Micros)> {
        self.ledger
            .entries(&EntryFilter {
                sandbox_id: Some(id.to_string()),
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|e| (e.id.clone(), e.amount()))
            .collect()
    }

    fn check_ledger(&self) {
        let report = self.ledger.check().unwrap();
        assert!(report.is_ok(), "{report:?}");
    }
}

fn c(s: &str) -> Micros {
    Micros::parse_amount(s).unwrap()
}

#[tokio::test]
async fn a_paused_sandbox_pays_its_run_at_pause_and_only_the_paused_price_while_paused() {
    let fx = fixture("10");
    let id = fx.create().await;
    let created = fx.m.get(&id).unwrap();
    assert_eq!(fx.ledger.balance(&fx.actor).unwrap().held, c("0.6"));

    fx.clock.advance(Duration::from_secs(100));
    let paused = fx.m.pause(&id).await.unwrap();
    assert_eq!(paused.state(), State::Paused);
    assert_eq!(paused.ttl_remaining_seconds, Some(500));
    assert_eq!(
        paused.expires_at,
        Some(fx.clock.now() + chrono::Duration::hours(1)),
        "a paused sandbox's deadline is the end of its paused retention"
    );
    assert_eq!(*fx.ext.paused.lock().unwrap(), vec![id.clone()]);
    // 100 s of running paid; an hour of the paused price held.
    let acc = fx.ledger.balance(&fx.actor).unwrap();
    assert_eq!((acc.spent, acc.held), (c("0.1"), c("0.36")));
    assert_eq!(paused.cost.as_ref().unwrap().spent, c("0.1"));

    // Pausing again changes nothing.
    let again = fx.m.pause(&id).await.unwrap();
    assert_eq!(again.updated_at, paused.updated_at);

    fx.clock.advance(Duration::from_secs(200));
    let resumed = fx.m.resume(&id, None).await.unwrap();
    assert_eq!(resumed.state(), State::Ready);
    assert!(fx.ext.paused.lock().unwrap().is_empty());
    // It gets back the 500 s it had left; 200 s paused are not counted.
    assert_eq!(
        resumed.expires_at,
        Some(fx.clock.now() + chrono::Duration::seconds(500))
    );
    assert_eq!(resumed.paused_seconds, 200);
    assert_eq!(resumed.ran_seconds(fx.clock.now()), 100);
    // 200 s paused at 0.0001/s = 0.02; the run's 500 s (0.5) held again.
    let acc = fx.ledger.balance(&fx.actor).unwrap();
    assert_eq!((acc.spent, acc.held), (c("0.12"), c("0.5")));

    fx.clock.advance(Duration::from_secs(50));
    let ended = fx.m.destroy(&id, EndReason::Destroyed).await.unwrap();
    assert_eq!(ended.state(), State::Destroyed);
    // 50 s more: 0.05. In all 0.17 for 150 s run and 200 s paused.
    assert_eq!(ended.cost.as_ref().unwrap().settled, Some(c("0.17")));
    let acc = fx.ledger.balance(&fx.actor).unwrap();
    assert_eq!(
        (acc.available, acc.held, acc.spent),
        (c("9.83"), Micros::ZERO, c("0.17"))
    );
    let ids: Vec<String> = fx.entries(&id).into_iter().map(|(i, _)| i).collect();
    assert_eq!(
        ids,
        [
            format!("hold:{id}"),
            format!("pause:{id}:1"),
            format!("resume:{id}:1"),
            format!("settle:{id}")
        ]
    );
    assert_eq!(
        created.created_at + chrono::Duration::seconds(350),
        ended.ended_at.unwrap()
    );
    fx.check_ledger();
}

#[tokio::test]
async fn a_resume_the_credits_cannot_cover_is_refused_and_leaves_it_paused_with_nothing_held() {
    // 1 credit: the 10-minute hold (0.6) fits; after 500 s running (0.5
    // paid) a new 10-minute run (0.6) does not.
    let fx = fixture("1");
    let id = fx.create().await;
    fx.clock.advance(Duration::from_secs(500));
    fx.m.pause(&id).await.unwrap();
    let before = fx.entries(&id);
    let held_before = fx.ledger.balance(&fx.actor).unwrap();

    let err =
        fx.m.resume(&id, Some(Duration::from_secs(600)))
            .await
            .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InsufficientCredits, "{err}");
    let rec = fx.m.get(&id).unwrap();
    assert_eq!(rec.state(), State::Paused);
    assert_eq!(rec.ttl_remaining_seconds, Some(100));
    assert_eq!(fx.entries(&id), before, "a refused resume writes no entry");
    assert_eq!(fx.ledger.balance(&fx.actor).unwrap(), held_before);
    assert_eq!(
        *fx.ext.paused.lock().unwrap(),
        vec![id.clone()],
        "nothing resumed"
    );
    // The 100 s it had left are affordable.
    let resumed = fx.m.resume(&id, None).await.unwrap();
    assert_eq!(resumed.state(), State::Ready);
    fx.check_ledger();
}

#[tokio::test]
async fn resume_with_a_ttl_stays_within_the_profiles_maximum_running_time() {
    let fx = fixture("10");
    let id = fx.create().await;
    fx.clock.advance(Duration::from_secs(600 - 1));
    fx.m.pause(&id).await.unwrap();
    // Ran 599 s; max_ttl is an hour: at most 3001 s more.
    let err =
        fx.m.resume(&id, Some(Duration::from_secs(3002)))
            .await
            .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("above the maximum"), "{err}");
    let ok =
        fx.m.resume(&id, Some(Duration::from_secs(3001)))
            .await
            .unwrap();
    assert_eq!(ok.ttl_seconds, 3600);
    assert_eq!(
        ok.expires_at,
        Some(fx.clock.now() + chrono::Duration::seconds(3001))
    );
}

#[tokio::test]
async fn a_failed_pause_runs_on_and_a_failed_resume_stays_paused() {
    let fx = fixture("10");
    let id = fx.create().await;
    fx.clock.advance(Duration::from_secs(10));
    *fx.ext.fail_next.lock().unwrap() = Some("pause");
    let err = fx.m.pause(&id).await.unwrap_err();
    assert!(err.to_string().contains("pause failed on purpose"), "{err}");
    let rec = fx.m.get(&id).unwrap();
    assert_eq!(rec.state(), State::Ready);
    assert!(rec.paused_at.is_none());
    fx.check_ledger();

    fx.m.pause(&id).await.unwrap();
    *fx.ext.fail_next.lock().unwrap() = Some("resume");
    fx.m.resume(&id, None).await.unwrap_err();
    let rec = fx.m.get(&id).unwrap();
    assert_eq!(rec.state(), State::Paused);
    assert!(rec.ttl_remaining_seconds.is_some());
    // What the failed resume held is released again: only the paused price
    // of the retention is held.
    assert_eq!(fx.ledger.balance(&fx.actor).unwrap().held, c("0.36"));
    fx.check_ledger();
    assert_eq!(fx.m.resume(&id, None).await.unwrap().state(), State::Ready);
}

#[tokio::test]
async fn pausing_a_sandbox_being_destroyed_is_a_conflict() {
    let fx = fixture("10");
    let id = fx.create().await;
    // A destroy half-way: the record is `destroying`.
    transact(fx.m.db().as_ref(), |tx| {
        let mut rec = require(tx, &id)?;
        transition(
            tx,
            &mut rec,
            &Event::Destroy(EndReason::Destroyed),
            fx.clock.now(),
            false,
        )
    })
    .unwrap();
    let err = fx.m.pause(&id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("is destroying"), "{err}");
    assert!(fx.ext.paused.lock().unwrap().is_empty());
    let err = fx.m.snapshot(&id, None, &fx.actor).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
}

#[tokio::test]
async fn a_paused_sandbox_past_its_retention_is_destroyed_expired_paying_the_paused_price() {
    let fx = fixture("10");
    let id = fx.create().await;
    fx.clock.advance(Duration::from_secs(60));
    fx.m.pause(&id).await.unwrap();
    // Its running TTL (10 minutes) passes: paused, it does not expire.
    fx.clock.advance(Duration::from_secs(1200));
    let report = fx.m.reap_stale(Duration::ZERO, false).await.unwrap();
    assert!(report.reaped.is_empty(), "{report:?}");
    // The hour of retention passes.
    fx.clock.advance(Duration::from_secs(3600 - 1200 + 1));
    let report = fx.m.reap_stale(Duration::ZERO, false).await.unwrap();
    assert_eq!(report.reaped.len(), 1, "{report:?}");
    let rec = fx.m.get(&id).unwrap();
    assert_eq!(rec.state(), State::Destroyed);
    assert_eq!(rec.reason().as_deref(), Some("expired"));
    // 60 s running (0.06) and the whole held retention (0.36).
    assert_eq!(rec.cost.unwrap().settled, Some(c("0.42")));
    fx.check_ledger();
}

#[tokio::test]
async fn each_step_is_announced_in_order() {
    let fx = fixture("10");
    let id = fx.create().await;
    fx.m.pause(&id).await.unwrap();
    fx.m.resume(&id, None).await.unwrap();
    let states: Vec<String> = sandboxer_core::store::db::read(fx.m.db().as_ref(), |tx| {
        Ok(tx
            .outbox(100)?
            .into_iter()
            .filter(|e| e.sandbox_id == id)
            .map(|e| e.event["to"].as_str().unwrap_or("?").to_string())
            .collect())
    })
    .unwrap();
    assert_eq!(
        states,
        [
            "provisioning",
            "ready",
            "pausing",
            "paused",
            "resuming",
            "ready"
        ]
    );
}

#[tokio::test]
async fn snapshots_restore_delete_and_pay_their_storage() {
    let fx = fixture("10");
    let id = fx.create().await;
    let snap =
        fx.m.snapshot(&id, Some("warm".into()), &fx.actor)
            .await
            .unwrap();
    assert_eq!(snap.state, SnapshotState::Ready);
    assert_eq!(snap.size_bytes, Some(42));
    fx.m.destroy(&id, EndReason::Destroyed).await.unwrap();

    // Two restores at once; each is its own sandbox of the same profile.
    let req = || CreateRequest {
        from_snapshot: Some(snap.id.clone()),
        actor: Some(fx.actor.clone()),
        ..Default::default()
    };
    let (a, b) = tokio::join!(fx.m.create(req(), true), fx.m.create(req(), true));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.id, b.id);
    for s in [&a, &b] {
        assert_eq!(s.state(), State::Ready);
        assert_eq!(s.profile, "profile.pausable");
        assert_eq!(s.from_snapshot.as_deref(), Some(snap.id.as_str()));
    }

    fx.clock.advance(Duration::from_secs(7200));
    let deleted = fx.m.delete_snapshot(&snap.id).await.unwrap();
    assert_eq!(deleted.state, SnapshotState::Deleted);
    // Two hours at 0.36 an hour.
    assert_eq!(deleted.storage_cost, Some(c("0.72")));
    assert!(fx.ext.snapshots.lock().unwrap().is_empty());
    // A deleted snapshot restores nothing, and deletes again as it is.
    let err = fx.m.create(req(), true).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(fx.m.delete_snapshot(&snap.id).await.unwrap(), deleted);
    fx.check_ledger();
}

#[tokio::test]
async fn a_failed_snapshot_ends_failed_and_leaves_nothing() {
    let fx = fixture("10");
    let id = fx.create().await;
    *fx.ext.fail_next.lock().unwrap() = Some("snapshot");
    let err = fx.m.snapshot(&id, None, &fx.actor).await.unwrap_err();
    assert!(
        err.to_string().contains("snapshot failed on purpose"),
        "{err}"
    );
    let all = fx.m.snapshots(None, &[]).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, SnapshotState::Failed);
    assert!(all[0].reason.as_deref().unwrap().contains("on purpose"));
    assert!(fx.ext.snapshots.lock().unwrap().is_empty());
    let err =
        fx.m.create(
            CreateRequest {
                from_snapshot: Some(all[0].id.clone()),
                actor: Some(fx.actor.clone()),
                ..Default::default()
            },
            true,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
}

#[tokio::test]
async fn the_reaper_fails_a_snapshot_whose_maker_died_and_removes_unrecorded_ones() {
    let fx = fixture("10");
    let id = fx.create().await;
    let snap = fx.m.snapshot(&id, None, &fx.actor).await.unwrap();
    // A snapshot whose maker was killed mid-way: `creating`, its worker a
    // process that no longer runs.
    let dead = transact(fx.m.db().as_ref(), |tx| {
        let mut s = tx.snapshot(&snap.id)?.unwrap();
        s.id = "snap-deadmaker1".into();
        s.state = SnapshotState::Creating;
        s.ready_at = None;
        s.worker = Some(sandboxer_core::model::Worker {
            pid: u32::MAX - 1,
            boot_id: sandboxer_core::process::current().boot_id,
        });
        tx.put_snapshot(&s)?;
        Ok(s)
    })
    .unwrap();
    fx.ext
        .snapshots
        .lock()
        .unwrap()
        .extend(["snap-deadmaker1".to_string(), "snap-norecord01".to_string()]);

    let report = fx.m.inspect_stale(Duration::ZERO).await.unwrap();
    let found: BTreeMap<String, String> = report
        .items
        .iter()
        .map(|i| (i.sandbox_id.clone(), i.kind.as_str().to_string()))
        .collect();
    assert_eq!(
        found,
        BTreeMap::from([
            (dead.id.clone(), "stuck".to_string()),
            ("snap-norecord01".to_string(), "orphan".to_string())
        ]),
        "{report:?}"
    );
    let report = fx.m.reap_stale(Duration::ZERO, false).await.unwrap();
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(
        fx.m.snapshot_record(&dead.id).unwrap().state,
        SnapshotState::Failed
    );
    assert_eq!(
        *fx.ext.snapshots.lock().unwrap(),
        vec![snap.id.clone()],
        "only the good snapshot is left"
    );
}
