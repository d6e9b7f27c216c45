//! The conformance suite every backend runs: each operation of `Tx`, the
//! all-or-nothing transaction (a fault between a record's transition, its
//! event and its ledger entry leaves none of them), and concurrent writers
//! that lose no update. `open` makes a handle on one shared database (call
//! it again for another "process").

use std::sync::Arc;

use sandboxer_core::lifecycle::{EndReason, Event, State};
use sandboxer_core::manager::ListFilter;
use sandboxer_core::model;
use sandboxer_core::store::db::{transact, Cursor, Db, Derived, LedgerRow, ListQuery, TokenRow};
use sandboxer_core::store::IdempotencyEntry;
use sandboxer_core::uploads::UploadRecord;
use sandboxer_core::{Error, ErrorKind};
use serde_json::json;

use crate::{actor, sandbox};

type Open<'a> = &'a dyn Fn() -> Arc<dyn Db>;

pub fn run(open: Open<'_>) {
    let db = open();
    records(db.as_ref());
    listing(db.as_ref());
    idempotency(db.as_ref());
    outbox(db.as_ref());
    uploads_and_tokens(db.as_ref());
    snapshots(db.as_ref());
    ledger(db.as_ref());
    a_failed_transaction_leaves_nothing(db.as_ref());
    concurrent_increments(open);
}

fn records(db: &dyn Db) {
    let mut s = sandbox("sbx-rec0000001", "agt:conf", "h1");
    transact(db, |tx| tx.insert_sandbox(&s)).unwrap();
    let e = transact(db, |tx| tx.insert_sandbox(&s)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(
        transact(db, |tx| tx.sandbox(&s.id)).unwrap(),
        Some(s.clone())
    );
    assert_eq!(
        transact(db, |tx| tx.sandbox("sbx-nosuch0001")).unwrap(),
        None
    );
    s.apply(&Event::Ready, model::now()).unwrap();
    s.backend = json!({"pid": 42});
    transact(db, |tx| tx.update_sandbox(&s)).unwrap();
    let got = transact(db, |tx| tx.sandbox(&s.id)).unwrap().unwrap();
    assert_eq!(got, s, "the whole record comes back, private backend too");
    assert_eq!(got.state(), State::Ready);
    let ghost = sandbox("sbx-ghost00001", "agt:conf", "h1");
    let e = transact(db, |tx| tx.update_sandbox(&ghost)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

fn listing(db: &dyn Db) {
    let base = transact(db, |tx| tx.count()).unwrap();
    // 25 records over three hosts and two actors; every third ended.
    let mut ids = Vec::new();
    for i in 0..25 {
        let who = if i % 2 == 0 {
            "agt:lister"
        } else {
            "atm:night"
        };
        let host = ["la", "lb", "lc"][i % 3];
        let mut s = sandbox(&format!("sbx-list{i:06}"), who, host);
        s.apply(&Event::Ready, model::now()).unwrap();
        if i % 3 == 0 {
            s.apply(&Event::Destroy(EndReason::Destroyed), model::now())
                .unwrap();
            s.apply(&Event::TornDown, model::now()).unwrap();
        }
        transact(db, |tx| tx.insert_sandbox(&s)).unwrap();
        ids.push(s.id);
    }
    assert_eq!(transact(db, |tx| tx.count()).unwrap(), base + 25);
    let all = |filter: ListFilter| -> Vec<String> {
        // Page through 4 at a time; the pages join to the whole listing.
        let mut out = Vec::new();
        let mut after: Option<Cursor> = None;
        loop {
            let q = ListQuery {
                filter: filter.clone(),
                after,
                limit: Some(4),
            };
            let page = transact(db, |tx| tx.list(&q)).unwrap();
            assert!(page.records.len() <= 4);
            out.extend(page.records.into_iter().map(|r| r.id));
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        let whole = transact(db, |tx| {
            tx.list(&ListQuery {
                filter: filter.clone(),
                after: None,
                limit: None,
            })
        })
        .unwrap();
        assert_eq!(
            whole
                .records
                .iter()
                .map(|r| r.id.clone())
                .collect::<Vec<_>>(),
            out,
            "paging changes nothing"
        );
        assert!(whole.next.is_none());
        out.retain(|id| id.starts_with("sbx-list"));
        out
    };
    assert_eq!(all(ListFilter::default()), ids, "oldest first");
    let mine = all(ListFilter {
        actor: Some(actor("agt:lister")),
        ..Default::default()
    });
    assert_eq!(mine.len(), 13);
    let live_on_lb = all(ListFilter {
        host: Some("lb".into()),
        live_only: true,
        ..Default::default()
    });
    let want: Vec<String> = (0..25)
        .filter(|i| i % 3 == 1)
        .map(|i| format!("sbx-list{i:06}"))
        .collect();
    assert_eq!(live_on_lb, want);
    let ended = all(ListFilter {
        states: vec![State::Destroyed],
        ..Default::default()
    });
    assert_eq!(ended.len(), 9);
    let live = transact(db, |tx| tx.live_per_host()).unwrap();
    let count = |h: &str| {
        (0..25)
            .filter(|i| ["la", "lb", "lc"][i % 3] == h && i % 3 != 0)
            .count() as u32
    };
    for h in ["lb", "lc"] {
        assert_eq!(live.get(h).copied(), Some(count(h)), "{h}: {live:?}");
    }
    assert_eq!(live.get("la"), None, "every record on la ended");
    // The census (the /metrics gauges): live records by their labels,
    // ended ones by state only, agreeing with the counts above.
    let census = transact(db, |tx| tx.census()).unwrap();
    for h in ["lb", "lc"] {
        let n: u64 = census.iter().filter(|r| r.host == h).map(|r| r.count).sum();
        assert_eq!(n, u64::from(count(h)), "{h}: {census:?}");
    }
    assert!(census.iter().all(|r| r.host != "la"), "{census:?}");
    let ended: Vec<_> = census
        .iter()
        .filter(|r| r.state == "destroyed" || r.state == "failed")
        .collect();
    assert!(
        ended
            .iter()
            .all(|r| r.profile.is_empty() && r.host.is_empty()),
        "{ended:?}"
    );
    let destroyed: u64 = ended
        .iter()
        .filter(|r| r.state == "destroyed")
        .map(|r| r.count)
        .sum();
    let all_destroyed = transact(db, |tx| {
        tx.list(&ListQuery {
            filter: ListFilter {
                states: vec![State::Destroyed],
                ..Default::default()
            },
            after: None,
            limit: None,
        })
    })
    .unwrap()
    .records
    .len() as u64;
    assert_eq!(destroyed, all_destroyed);
}

fn idempotency(db: &dyn Db) {
    let e1 = IdempotencyEntry {
        request_hash: "h1".into(),
        sandbox_id: "sbx-idem000001".into(),
    };
    let (a, b) = (actor("agt:one"), actor("agt:two"));
    transact(db, |tx| tx.put_idempotency(&a, "k", &e1)).unwrap();
    assert_eq!(
        transact(db, |tx| tx.idempotency(&a, "k")).unwrap(),
        Some(e1.clone())
    );
    assert_eq!(
        transact(db, |tx| tx.idempotency(&b, "k")).unwrap(),
        None,
        "keys are per actor"
    );
    let e2 = IdempotencyEntry {
        request_hash: "h2".into(),
        sandbox_id: "sbx-idem000002".into(),
    };
    transact(db, |tx| tx.put_idempotency(&b, "k", &e2)).unwrap();
    let e = transact(db, |tx| tx.put_idempotency(&a, "k", &e2)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(
        transact(db, |tx| tx.idempotency(&a, "k")).unwrap(),
        Some(e1)
    );
}

fn outbox(db: &dyn Db) {
    let depth0 = transact(db, |tx| tx.outbox_depth()).unwrap();
    for i in 0..5 {
        transact(db, |tx| tx.push_event("sbx-evt0000001", &json!({"n": i}))).unwrap();
    }
    assert_eq!(transact(db, |tx| tx.outbox_depth()).unwrap(), depth0 + 5);
    let all = transact(db, |tx| tx.outbox(100)).unwrap();
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
    assert_eq!(all.len() as u64, depth0 + 5);
    let first = transact(db, |tx| tx.outbox(3)).unwrap();
    assert_eq!(first, all[..3].to_vec(), "a limit takes the oldest");
    // A delivery state written back is what the next reader sees.
    let mut changed = all[0].event.clone();
    changed["delivery"] = json!({"attempts": 1});
    transact(db, |tx| tx.replace_event(all[0].seq, &changed)).unwrap();
    assert_eq!(transact(db, |tx| tx.outbox(1)).unwrap()[0].event, changed);
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    transact(db, |tx| tx.ack_events(&seqs)).unwrap();
    assert_eq!(transact(db, |tx| tx.outbox_depth()).unwrap(), 0);
}

fn uploads_and_tokens(db: &dyn Db) {
    let mut u = UploadRecord {
        id: "upl-conf000001".into(),
        actor: actor("agt:up"),
        created_at: model::now(),
        files: 2,
        bytes: 10,
        used_by: vec![],
    };
    transact(db, |tx| tx.put_upload(&u)).unwrap();
    u.used_by.push("sbx-x".into());
    transact(db, |tx| tx.put_upload(&u)).unwrap();
    assert_eq!(
        transact(db, |tx| tx.upload(&u.id)).unwrap(),
        Some(u.clone())
    );
    assert_eq!(
        transact(db, |tx| tx.uploads(Some(&actor("agt:up")))).unwrap(),
        vec![u.clone()]
    );
    assert!(transact(db, |tx| tx.uploads(Some(&actor("agt:other"))))
        .unwrap()
        .is_empty());
    transact(db, |tx| tx.remove_upload(&u.id)).unwrap();
    assert_eq!(transact(db, |tx| tx.upload(&u.id)).unwrap(), None);

    let t = TokenRow {
        name: "harness".into(),
        actor: actor("agt:harness"),
        hash: "ab".repeat(32),
        created_at: model::now(),
    };
    transact(db, |tx| tx.put_token(&t)).unwrap();
    assert_eq!(
        transact(db, |tx| tx.put_token(&t)).unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        transact(db, |tx| tx.token_by_hash(&t.hash)).unwrap(),
        Some(t.clone())
    );
    assert_eq!(transact(db, |tx| tx.tokens()).unwrap(), vec![t.clone()]);
    assert!(transact(db, |tx| tx.remove_token("harness")).unwrap());
    assert!(!transact(db, |tx| tx.remove_token("harness")).unwrap());
    assert_eq!(transact(db, |tx| tx.token_by_hash(&t.hash)).unwrap(), None);
}

fn snapshots(db: &dyn Db) {
    use sandboxer_core::snapshot::{Snapshot, SnapshotState};
    let at = model::now();
    let snap = |id: &str, who: &str| Snapshot {
        id: id.to_string(),
        name: Some("warm".into()),
        source: "sbx-src0000001".into(),
        profile: "profile.p".into(),
        profile_version: 1,
        extension: "ext.x".into(),
        host: "h1".into(),
        location: None,
        size_bytes: None,
        actor: actor(who),
        state: SnapshotState::Creating,
        reason: None,
        created_at: at,
        ready_at: None,
        deleted_at: None,
        updated_at: at,
        storage_price_per_hour: Default::default(),
        storage_cost: None,
        worker: None,
        backend: json!({"dir": "/d/snap"}),
    };
    let (mut a, b) = (
        snap("snap-conf000001", "agt:s1"),
        snap("snap-conf000002", "agt:s2"),
    );
    transact(db, |tx| {
        tx.put_snapshot(&a)?;
        tx.put_snapshot(&b)
    })
    .unwrap();
    a.state = SnapshotState::Ready;
    a.size_bytes = Some(4096);
    transact(db, |tx| tx.put_snapshot(&a)).unwrap();
    assert_eq!(
        transact(db, |tx| tx.snapshot(&a.id)).unwrap(),
        Some(a.clone()),
        "the whole record comes back, private backend too"
    );
    assert_eq!(
        transact(db, |tx| tx.snapshot("snap-nosuch0001")).unwrap(),
        None
    );
    let ids = |who: Option<&str>, states: &[SnapshotState]| -> Vec<String> {
        let who = who.map(actor);
        transact(db, |tx| tx.snapshots(who.as_ref(), states))
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect()
    };
    assert_eq!(
        ids(None, &[]),
        vec![a.id.clone(), b.id.clone()],
        "oldest first"
    );
    assert_eq!(ids(Some("agt:s2"), &[]), vec![b.id.clone()]);
    assert_eq!(ids(None, &[SnapshotState::Ready]), vec![a.id.clone()]);
    assert!(ids(Some("agt:s1"), &[SnapshotState::Deleted]).is_empty());
}

fn ledger(db: &dyn Db) {
    let row = |id: &str| LedgerRow {
        seq: 0,
        id: id.into(),
        kind: "grant".into(),
        actor: Some(actor("agt:payer")),
        sandbox_id: None,
        at: model::now(),
        entry: json!({"id": id, "amount": "5"}),
    };
    let s1 = transact(db, |tx| tx.append_ledger(&row("grant-a"))).unwrap();
    let s2 = transact(db, |tx| tx.append_ledger(&row("grant-b"))).unwrap();
    assert!(s2 > s1);
    let e = transact(db, |tx| tx.append_ledger(&row("grant-a"))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "entries are never replaced");
    let got = transact(db, |tx| tx.ledger_entry("grant-b"))
        .unwrap()
        .unwrap();
    assert_eq!((got.seq, got.entry["amount"].clone()), (s2, json!("5")));
    let after = transact(db, |tx| tx.ledger_entries(s1, 10)).unwrap();
    assert_eq!(
        after.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["grant-b"]
    );
    transact(db, |tx| {
        tx.put_derived(Derived::Accounts, "agt:payer", &json!({"available": "10"}))
    })
    .unwrap();
    transact(db, |tx| {
        tx.put_derived(Derived::Holds, "sbx-h", &json!({"held": "1"}))
    })
    .unwrap();
    assert_eq!(
        transact(db, |tx| tx.derived(Derived::Accounts, "agt:payer")).unwrap(),
        Some(json!({"available": "10"}))
    );
    assert_eq!(
        transact(db, |tx| tx.derived(Derived::Holds, "agt:payer")).unwrap(),
        None,
        "tables are apart"
    );
    assert_eq!(
        transact(db, |tx| tx.all_derived(Derived::Holds))
            .unwrap()
            .len(),
        1
    );
}

/// A lifecycle step's three parts, then a fault: none of them is kept.
fn a_failed_transaction_leaves_nothing(db: &dyn Db) {
    let s = sandbox("sbx-atomic0001", "agt:conf", "h1");
    transact(db, |tx| tx.insert_sandbox(&s)).unwrap();
    let depth = transact(db, |tx| tx.outbox_depth()).unwrap();
    let r: Result<(), Error> = transact(db, |tx| {
        let mut rec = tx.sandbox(&s.id)?.unwrap();
        rec.apply(&Event::Ready, model::now())?;
        tx.update_sandbox(&rec)?;
        tx.push_event(&s.id, &json!({"to": "ready"}))?;
        tx.append_ledger(&LedgerRow {
            seq: 0,
            id: "hold-sbx-atomic0001".into(),
            kind: "hold".into(),
            actor: Some(rec.actor.clone()),
            sandbox_id: Some(rec.id.clone()),
            at: model::now(),
            entry: json!({}),
        })?;
        Err(Error::internal("injected fault after all three parts"))
    });
    assert!(r.is_err());
    let rec = transact(db, |tx| tx.sandbox(&s.id)).unwrap().unwrap();
    assert_eq!(
        rec.state(),
        State::Provisioning,
        "the transition is not kept"
    );
    assert_eq!(
        transact(db, |tx| tx.outbox_depth()).unwrap(),
        depth,
        "nor the event"
    );
    assert_eq!(
        transact(db, |tx| tx.ledger_entry("hold-sbx-atomic0001")).unwrap(),
        None,
        "nor the ledger entry"
    );
}

/// 4 writers × 25 read-modify-write transactions on one row, each through
/// its own handle: the row ends at 100 (no lost update).
pub fn concurrent_increments(open: Open<'_>) {
    let key = format!("counter-{}", model::new_sandbox_id());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let db = open();
            let key = key.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    transact(db.as_ref(), |tx| {
                        let n = tx
                            .derived(Derived::Accounts, &key)?
                            .and_then(|v| v["n"].as_u64())
                            .unwrap_or(0);
                        tx.put_derived(Derived::Accounts, &key, &json!({ "n": n + 1 }))
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let db = open();
    let end = transact(db.as_ref(), |tx| tx.derived(Derived::Accounts, &key)).unwrap();
    assert_eq!(end, Some(json!({"n": 100})));
}
