//! DbLedger on the real embedded database: durability across handles,
//! concurrent threads and processes, torn tails, versions, reconciliation.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use chrono::{Duration, Utc};
use sandboxer_core::credits::Micros;
use sandboxer_core::lifecycle::{EndReason, Event};
use sandboxer_core::model::{Actor, NewSandbox, Sandbox};
use sandboxer_core::store::db::{transact, Db};
use sandboxer_core::ErrorKind;
use sandboxer_credits::{legacy, DbLedger, EntryFilter, HoldRequest, HoldState};

fn actor(s: &str) -> Actor {
    s.parse().unwrap()
}

fn credits(s: &str) -> Micros {
    Micros::parse_amount(s).unwrap()
}

fn hold_req(sbx: &str, who: &Actor, price: &str, ttl_secs: i64) -> HoldRequest {
    let created_at = Utc::now();
    HoldRequest {
        sandbox_id: sbx.to_string(),
        actor: who.clone(),
        price_per_hour: credits(price),
        extension: "ext.saas-stub".into(),
        host: "saas".into(),
        profile: "profile.saas".into(),
        created_at,
        expires_at: created_at + Duration::seconds(ttl_secs),
    }
}

/// A ledger on the embedded database in `dir` (a new handle each call, as
/// a new process would open it).
fn open(dir: &Path) -> sandboxer_core::Result<DbLedger> {
    Ok(DbLedger::new(sandboxer_store::open(None, dir)?))
}

fn db(dir: &Path) -> Arc<dyn Db> {
    sandboxer_store::open(None, dir).unwrap()
}

/// How many entries the ledger holds.
fn entry_count(dir: &Path) -> usize {
    open(dir)
        .unwrap()
        .entries(&EntryFilter::default())
        .unwrap()
        .len()
}

#[test]
fn durable_round_trip_across_handles() {
    let dir = tempfile::tempdir().unwrap();
    let (ops, bob) = (actor("adm:ops"), actor("agt:bob"));
    {
        let l = open(dir.path()).unwrap();
        l.grant(&ops, &bob, credits("10"), Some("welcome")).unwrap();
        l.hold(&hold_req("sbx-rt1", &bob, "2", 3600)).unwrap();
        l.extend("sbx-rt1", Utc::now() + Duration::hours(2))
            .unwrap();
        l.hold(&hold_req("sbx-rt2", &bob, "1", 600)).unwrap();
        l.settle("sbx-rt1", 1800, Utc::now()).unwrap();
        l.void("sbx-rt2").unwrap();
    }
    let first = open(dir.path()).unwrap().snapshot().unwrap();
    let again = open(dir.path()).unwrap();
    assert_eq!(
        again.snapshot().unwrap(),
        first,
        "another handle reads the same state"
    );
    let acc = again.balance(&bob).unwrap();
    // 2/h for 30 minutes: 1 spent; everything else back.
    assert_eq!(
        (acc.granted, acc.available, acc.held, acc.spent),
        (credits("10"), credits("9"), Micros::ZERO, credits("1"))
    );
    let usage = again.usage(&bob).unwrap();
    assert_eq!(usage.len(), 2);
    assert_eq!(
        (usage[0].state, usage[0].cost, usage[0].seconds),
        (HoldState::Settled, Some(credits("1")), Some(1800))
    );
    assert_eq!(
        (usage[1].state, usage[1].cost),
        (HoldState::Voided, Some(Micros::ZERO))
    );
    assert_eq!(entry_count(dir.path()), 6);
    assert!(again.check().unwrap().is_ok());
    let only = again
        .entries(&EntryFilter {
            sandbox_id: Some("sbx-rt1".into()),
            ..Default::default()
        })
        .unwrap();
    let ids: Vec<&str> = only.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids[0], "hold:sbx-rt1");
    assert!(ids[1].starts_with("extend:sbx-rt1:"));
    assert_eq!(ids[2], "settle:sbx-rt1");
}

#[test]
fn retried_operations_are_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ops, bob) = (actor("adm:ops"), actor("agt:bob"));
    let l = open(dir.path()).unwrap();
    l.grant(&ops, &bob, credits("5"), Some("k")).unwrap();
    assert!(
        l.grant(&ops, &bob, credits("5"), Some("k"))
            .unwrap()
            .duplicate
    );
    let req = hold_req("sbx-retry", &bob, "1", 3600);
    l.hold(&req).unwrap();
    assert!(l.hold(&req).unwrap().duplicate, "a retried hold while open");
    l.settle("sbx-retry", 60, Utc::now()).unwrap();
    assert!(l.settle("sbx-retry", 90, Utc::now()).unwrap().duplicate);
    assert_eq!(
        l.hold(&req).unwrap_err().kind(),
        ErrorKind::Conflict,
        "a hold once settled"
    );
    assert_eq!(entry_count(dir.path()), 3);
    let err = l.grant(&bob, &bob, credits("1"), None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden);
}

/// Each worker: `n` grants with its own keys, and `n` hold+settle pairs on
/// its own sandboxes, all to one shared actor.
fn work(l: &DbLedger, tag: &str, n: usize) {
    let (ops, shared) = (actor("adm:ops"), actor("agt:shared"));
    for i in 0..n {
        l.grant(&ops, &shared, credits("1"), Some(&format!("{tag}-{i}")))
            .unwrap();
        let sbx = format!("sbx-{tag}{i}");
        l.hold(&hold_req(&sbx, &shared, "0.36", 3600)).unwrap();
        l.settle(&sbx, 10, Utc::now()).unwrap();
    }
}

fn assert_all_there(dir: &Path, tags: &[&str], n: usize) {
    let l = open(dir).unwrap();
    let acc = l.balance(&actor("agt:shared")).unwrap();
    let workers = tags.len() as i64;
    // 0.36/h for 10 s = 0.001 per pair.
    assert_eq!(acc.granted, Micros(workers * n as i64 * 1_000_000));
    assert_eq!(acc.spent, Micros(workers * n as i64 * 1_000));
    assert_eq!(acc.held, Micros::ZERO);
    assert_eq!(entry_count(dir), tags.len() * n * 3, "no entry lost");
    for tag in tags {
        for i in 0..n {
            let sbx = format!("sbx-{tag}{i}");
            assert_eq!(
                l.hold_of(&sbx).unwrap().unwrap().state,
                HoldState::Settled,
                "{sbx}"
            );
        }
    }
    let report = l.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.violations);
}

#[test]
fn two_threads_append_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    // One handle shared by two threads, and a second handle of its own.
    let shared = Arc::new(open(dir.path()).unwrap());
    let own = open(dir.path()).unwrap();
    std::thread::scope(|s| {
        let a = shared.clone();
        let b = shared.clone();
        s.spawn(move || work(&a, "ta", 40));
        s.spawn(move || work(&b, "tb", 40));
        s.spawn(|| work(&own, "tc", 40));
    });
    assert_all_there(dir.path(), &["ta", "tb", "tc"], 40);
}

const CHILD_DIR: &str = "SANDBOXER_CREDITS_TEST_CHILD_DIR";
const CHILD_TAG: &str = "SANDBOXER_CREDITS_TEST_CHILD_TAG";

/// Not a test on its own: the body of the child processes of
/// `two_processes_append_without_loss`, which runs this binary with
/// `--ignored --exact ledger::child_appender` and the env set.
#[test]
#[ignore = "the child process of two_processes_append_without_loss, which runs it"]
fn child_appender() {
    let dir = std::env::var(CHILD_DIR)
        .expect("run by two_processes_append_without_loss, which sets the folder");
    let tag = std::env::var(CHILD_TAG).expect("run by two_processes_append_without_loss");
    let l = open(Path::new(&dir)).unwrap();
    work(&l, &tag, 60);
}

#[test]
fn two_processes_append_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["pa", "pb"]
        .iter()
        .map(|tag| {
            std::process::Command::new(&exe)
                .args([
                    "--ignored",
                    "--exact",
                    "ledger::child_appender",
                    "--test-threads=1",
                    "--quiet",
                ])
                .env(CHILD_DIR, dir.path())
                .env(CHILD_TAG, tag)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // And this process appends at the same time.
    work(&open(dir.path()).unwrap(), "pc", 60);
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a child appender failed");
    }
    assert_all_there(dir.path(), &["pa", "pb", "pc"], 60);
}

/// `ledger.jsonl` of release 0.1, with the header that release wrote.
fn old_ledger(dir: &Path, lines: &[&str]) -> std::path::PathBuf {
    let path = dir.join(legacy::FILE_NAME);
    let mut text = String::from(
        "{\"version\":1,\"format\":\"sandboxer credits ledger\",\"created_at\":\"2026-12-01T00:00:00.000Z\"}\n",
    );
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    fs::write(&path, text).unwrap();
    path
}

const GRANT_A: &str = r#"{"id":"grant:a","at":"2026-12-01T00:00:01Z","kind":"grant","actor":"agt:bob","amount":"3","by":"adm:ops"}"#;
const GRANT_B: &str = r#"{"id":"grant:b","at":"2026-12-01T00:00:02Z","kind":"grant","actor":"agt:bob","amount":"1","by":"adm:ops"}"#;

#[test]
fn an_old_ledger_is_imported_entry_for_entry() {
    let dir = tempfile::tempdir().unwrap();
    old_ledger(dir.path(), &[GRANT_A, GRANT_B]);
    let entries = legacy::read(dir.path()).unwrap().unwrap();
    assert_eq!(entries.len(), 2);
    let db = db(dir.path());
    transact(db.as_ref(), |tx| legacy::import(tx, &entries)).unwrap();
    let l = DbLedger::new(db);
    assert_eq!(
        l.balance(&actor("agt:bob")).unwrap().available,
        credits("4")
    );
    assert_eq!(l.entries(&EntryFilter::default()).unwrap(), entries);
    assert!(l.check().unwrap().is_ok());
}

#[test]
fn a_torn_tail_is_dropped_as_release_0_1_dropped_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = old_ledger(dir.path(), &[GRANT_A]);
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(br#"{"id":"grant:b","at":"2026-01-01T00:00:00Z","kind":"gra"#);
    fs::write(&path, &bytes).unwrap();
    let entries = legacy::read(dir.path()).unwrap().unwrap();
    assert_eq!(entries.len(), 1, "the last line had no line break");
    assert_eq!(fs::read(&path).unwrap(), bytes, "reading never writes");
}

#[test]
fn a_complete_line_that_does_not_parse_is_corrupt_and_nothing_is_read() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, line) in [
        (&["not json", GRANT_B][..], "line 2"),
        (&[GRANT_A, "\0\0\0\0"][..], "line 3"),
    ] {
        let path = old_ledger(dir.path(), bad);
        let before = fs::read(&path).unwrap();
        let err = legacy::read(dir.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StoreCorrupt);
        assert!(err.message().contains(line), "{}", err.message());
        assert_eq!(fs::read(&path).unwrap(), before, "left as it was");
    }
}

#[test]
fn an_unknown_version_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(legacy::FILE_NAME);
    for text in [
        "{\"version\":2,\"format\":\"from the future\"}\n{\"id\":\"x\"}\n",
        "{\"version\":2}\n",
    ] {
        fs::write(&path, text).unwrap();
        let err = legacy::read(dir.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StoreCorrupt, "{err:?}");
        assert!(err.message().contains("version 2"), "{}", err.message());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            text,
            "never overwritten"
        );
    }
}

#[test]
fn bad_amounts_are_refused() {
    for bad in ["-1", "1e3", "0.0000001", "abc"] {
        let err = Micros::parse_amount(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
    }
    assert_eq!(Micros::parse_amount("0.000001").unwrap(), Micros(1));
    assert_eq!(Micros::parse_amount("12.5").unwrap().to_string(), "12.5");
}

fn record(id: &str, actor: &Actor, created_at: chrono::DateTime<Utc>) -> Sandbox {
    Sandbox::new(NewSandbox {
        id: id.into(),
        profile: "profile.saas".into(),
        profile_version: 1,
        extension: "ext.saas-stub".into(),
        host: "saas".into(),
        actor: actor.clone(),
        inputs: Default::default(),
        route: Default::default(),
        ttl_seconds: 3600,
        idempotency_key: None,
        recreated_from: None,
        cost: None,
        created_at,
    })
}

/// A process that died between a hold and its record: holds written, the
/// records moved on (or never heard of one), no settle or void. The
/// reaper's reconciliation resolves them from the records in the same
/// database, and the check passes.
#[test]
fn reconcile_after_a_crash_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let (ops, bob) = (actor("adm:ops"), actor("agt:bob"));
    let created = Utc::now() - Duration::minutes(30);
    {
        let l = open(dir.path()).unwrap();
        l.grant(&ops, &bob, credits("10"), None).unwrap();
        for sbx in ["sbx-ended", "sbx-failed", "sbx-missing", "sbx-live"] {
            let mut req = hold_req(sbx, &bob, "1", 3600);
            req.created_at = created;
            req.expires_at = created + Duration::hours(1);
            l.hold(&req).unwrap();
        }
        // The process dies here.
    }
    let db = db(dir.path());
    transact(db.as_ref(), |tx| {
        let mut ended = record("sbx-ended", &bob, created);
        ended.apply(&Event::Ready, created).unwrap();
        ended
            .apply(
                &Event::Destroy(EndReason::Destroyed),
                created + Duration::minutes(15),
            )
            .unwrap();
        ended
            .apply(&Event::TornDown, created + Duration::minutes(15))
            .unwrap();
        let mut failed = record("sbx-failed", &bob, created);
        failed
            .apply(&Event::ProvisionFailed("boom".into()), created)
            .unwrap();
        let mut live = record("sbx-live", &bob, created);
        live.apply(&Event::Ready, created).unwrap();
        for s in [ended, failed, live] {
            tx.insert_sandbox(&s)?;
        }
        Ok(())
    })
    .unwrap();

    let l = open(dir.path()).unwrap();
    assert_eq!(l.open_holds().unwrap().len(), 4);
    let written = l.reconcile().unwrap();
    let ids: Vec<&str> = written.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        ["settle:sbx-ended", "void:sbx-failed", "void:sbx-missing"]
    );
    assert!(l.reconcile().unwrap().is_empty(), "once");
    let still_open: Vec<String> = l
        .open_holds()
        .unwrap()
        .into_iter()
        .map(|h| h.sandbox_id)
        .collect();
    assert_eq!(still_open, ["sbx-live"]);
    let acc = l.balance(&bob).unwrap();
    // 15 minutes at 1/h: 0.25 spent; the live one still holds 1.
    assert_eq!(
        (acc.available, acc.held, acc.spent),
        (credits("8.75"), credits("1"), credits("0.25"))
    );
    let report = open(dir.path()).unwrap().check().unwrap();
    assert!(report.is_ok(), "{:?}", report.violations);
    assert_eq!(report.open_holds, 1);
}
