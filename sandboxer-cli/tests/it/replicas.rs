//! Several `sandboxer serve` replicas on one PostgreSQL database (the
//! testbed's, a scratch database per test), real canaries, concurrent
//! clients: no lost or duplicated record, an account never overdrawn
//! whichever replica takes the holds, reapers on every replica, and a
//! replica SIGKILLed in the middle of creates whose records the other ends,
//! voiding what never became ready; the event relays of two replicas
//! draining one outbox, and their reapers retrying the same stuck destroys.

use std::time::Duration;

use sandboxer_testkit::home::Home;
use sandboxer_testkit::pg::PgScratch;
use sandboxer_testkit::wait;
use serde_json::{json, Value};

use crate::credits::PAID;
use crate::http::{token, Served};

fn shared_home(pg: &PgScratch) -> Home {
    let mut h = crate::home();
    h.env
        .push(("SANDBOXER_DATABASE_URL".into(), pg.url.clone()));
    h.write_profile("paid.toml", PAID);
    h
}

fn list(h: &Home) -> Vec<Value> {
    h.run(&["list", "--json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed's PostgreSQL: scripts/testbed up, then source .testbed/env"
)]
fn two_replicas_lose_nothing_and_never_overdraw() {
    let pg = PgScratch::new();
    let h = shared_home(&pg);
    // 3.6 credits for each paid create (3.6/h, 1h): 36 pays for 10.
    h.run(&["credits", "grant", "--actor", "agt:r", "36"]).ok();
    let agent = token(&h, "agt:r");
    let replicas = [
        Served::start_logged(&h, &["--reap-interval", "1s"], "serve-a.log"),
        Served::start_logged(&h, &["--reap-interval", "1s"], "serve-b.log"),
    ];

    // 16 clients, 8 on each replica, each a create and a destroy.
    let replicas = &replicas;
    let ids: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (s, agent) = (&replicas[i % 2], &agent);
                scope.spawn(move || {
                    let id = s.post("/v1/sandboxes", agent, json!({})).expect(201)["id"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    // Destroyed through the other replica.
                    let other = &replicas[(i + 1) % 2];
                    let gone = other
                        .call("DELETE", &format!("/v1/sandboxes/{id}"), Some(agent), None)
                        .expect(200);
                    assert_eq!(gone["state"], "destroyed");
                    id
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 16, "no duplicated id");
    let stored = list(&h);
    assert_eq!(stored.len(), 16, "no lost or extra record");
    assert!(stored.iter().all(|r| r["state"] == "destroyed"));

    // 14 paid creates at once through both replicas: exactly 10 are paid
    // for, the others refused (402) and never recorded.
    let codes: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..14)
            .map(|i| {
                let (s, agent) = (&replicas[i % 2], &agent);
                scope.spawn(move || {
                    s.post(
                        "/v1/sandboxes",
                        agent,
                        json!({"profile": "profile.paid-canary"}),
                    )
                    .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(codes.iter().filter(|&&c| c == 201).count(), 10, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 402).count(), 4, "{codes:?}");
    let paid: Vec<Value> = list(&h)
        .into_iter()
        .filter(|r| r["profile"] == "profile.paid-canary")
        .collect();
    assert_eq!(paid.len(), 10, "a refused create records nothing");
    let acct = h
        .run(&["credits", "balance", "--actor", "agt:r", "--json"])
        .ok()
        .json();
    assert_eq!(acct["account"]["available"], "0", "{acct}");
    assert_eq!(acct["account"]["held"], "36", "{acct}");
    for r in &paid {
        h.run(&["destroy", r["id"].as_str().unwrap()]).ok();
    }
    h.run(&["db", "check"]).ok();
    assert!(
        crate::canary::venues(&h.data).is_empty(),
        "every venue removed"
    );
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed's PostgreSQL: scripts/testbed up, then source .testbed/env"
)]
fn a_replica_killed_mid_create_is_cleaned_up_by_another() {
    let pg = PgScratch::new();
    let h = shared_home(&pg);
    h.run(&["credits", "grant", "--actor", "agt:k", "100"]).ok();
    let agent = token(&h, "agt:k");
    // The doomed replica runs no reaper; the survivor reaps every second.
    let doomed = Served::start_logged(&h, &["--reap-interval", "0s"], "serve-doomed.log");
    let survivor = Served::start_logged(&h, &["--reap-interval", "1s"], "serve-survivor.log");
    // Creates that do not wait: their records are made, provisioning runs
    // on the doomed replica in the background.
    for _ in 0..4 {
        doomed
            .post(
                "/v1/sandboxes",
                &agent,
                json!({"profile": "profile.paid-canary", "wait": false}),
            )
            .expect(202);
    }
    doomed.kill();
    // Within a few reaper passes (no grace to wait out: the doomed
    // replica's process is certainly gone), nothing is left provisioning
    // and nothing stays held for a create that never became ready.
    wait::until(Duration::from_secs(60), "no record in provisioning", || {
        let records = list(&h);
        assert_eq!(records.len(), 4);
        records
            .iter()
            .all(|r| r["state"] != "provisioning")
            .then_some(())
    });
    let usage = h
        .run(&["credits", "usage", "--actor", "agt:k", "--json"])
        .ok()
        .json();
    let never_ready = list(&h).iter().filter(|r| r["ready_at"].is_null()).count();
    // The first create in a data dir copies the agent binary first: the
    // kill lands before those creates are ready.
    assert!(
        never_ready > 0,
        "the kill came after every create was ready"
    );
    for r in list(&h) {
        let id = r["id"].as_str().unwrap();
        let hold = usage["usage"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["sandbox_id"] == id)
            .unwrap_or_else(|| panic!("{id} has no hold"));
        if r["ready_at"].is_null() {
            assert_eq!(hold["state"], "voided", "{id} never ready: {hold}");
        }
    }
    for r in list(&h) {
        if r["state"] != "destroyed" {
            survivor
                .call(
                    "DELETE",
                    &format!("/v1/sandboxes/{}", r["id"].as_str().unwrap()),
                    Some(&agent),
                    None,
                )
                .expect(200);
        }
    }
    let check = h.run(&["db", "check", "--json"]).ok().json();
    assert_eq!(check["ledger"]["open_holds"], 0, "{check}");
    assert!(
        crate::canary::venues(&h.data).is_empty(),
        "every venue removed"
    );
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed's PostgreSQL: scripts/testbed up, then source .testbed/env"
)]
fn two_replicas_relay_every_event_once_and_end_each_stuck_destroy_once() {
    use sandboxer_events::stub_hub::{HubMode, StubHub};
    use std::collections::BTreeMap;

    let pg = PgScratch::new();
    let hub = StubHub::start_background().unwrap();
    let mut h = shared_home(&pg);
    h.env
        .push((sandboxer_events::HUB_URL_ENV.into(), hub.url()));
    let agent = token(&h, "agt:relay");
    // The hub is down while the work is done: the outbox fills, and both
    // replicas' relays drain it once it is back.
    hub.set_mode(HubMode::Unavailable);
    let flags = ["--reap-interval", "1s", "--reap-grace", "1s"];
    let replicas = [
        Served::start_logged(&h, &flags, "serve-a.log"),
        Served::start_logged(&h, &flags, "serve-b.log"),
    ];
    let replicas = &replicas;
    let ids: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let agent = &agent;
                scope.spawn(move || {
                    replicas[i % 2]
                        .post("/v1/sandboxes", agent, json!({}))
                        .expect(201)["id"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Six of them as a destroy that died half-way leaves them: in
    // `destroying`, untouched for an hour. Both reapers find all six.
    let stuck = &ids[..6];
    let quoted: Vec<String> = stuck.iter().map(|id| format!("'{id}'")).collect();
    sandboxer_testkit::pg::admin_sql(
        &pg.url,
        &format!(
            "UPDATE sandboxes SET state = 'destroying', record = (record::jsonb || \
             jsonb_build_object('state', 'destroying', 'reason', 'destroyed', \
             'updated_at', '2026-01-01T00:00:00Z'))::text WHERE id IN ({})",
            quoted.join(", ")
        ),
    );
    // The other six destroyed through the replicas, crosswise.
    for (i, id) in ids[6..].iter().enumerate() {
        replicas[(i + 1) % 2]
            .call("DELETE", &format!("/v1/sandboxes/{id}"), Some(&agent), None)
            .expect(200);
    }
    wait::until(Duration::from_secs(60), "every record destroyed", || {
        list(&h)
            .iter()
            .all(|r| r["state"] == "destroyed")
            .then_some(())
    });
    hub.set_mode(HubMode::Accept);
    wait::until(
        Duration::from_secs(60),
        "the relays to deliver every event",
        || {
            let st = h.run(&["events", "status", "--json"]).ok().json();
            (st["events"] == 0).then_some(())
        },
    );
    // Every sandbox: recorded, ready, destroying (the destroyed through
    // the API), destroyed - each event once, from whichever relay.
    let mut destroyed: BTreeMap<String, usize> = BTreeMap::new();
    for r in hub.received() {
        if r.body["to"] == "destroyed" {
            let sbx = r.body["sandbox_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            *destroyed.entry(sbx).or_default() += 1;
        }
    }
    for id in &ids {
        assert_eq!(
            destroyed.get(id),
            Some(&1),
            "{id}: one destroyed event, from one reaper or one destroy"
        );
    }
    assert_eq!(destroyed.len(), ids.len(), "{destroyed:?}");
    assert_eq!(hub.duplicates(), 0, "no event sent by both relays");
    let got = hub.received_ids();
    for id in &ids[6..] {
        for n in 1..=4 {
            assert!(got.contains(&format!("{id}:{n}")), "{id}:{n} lost: {got:?}");
        }
    }
    h.run(&["db", "check"]).ok();
    assert!(
        crate::canary::venues(&h.data).is_empty(),
        "every venue removed"
    );
}
