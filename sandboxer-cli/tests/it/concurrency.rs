//! Concurrent processes and SIGKILL on the embedded database: nothing
//! lost, every record in a legal state, `db check` clean, and a metered
//! create killed before it was ready never charged.
//!
//! How we know the concurrency test can fail: it counts records and ids
//! across 20 processes; a lost or duplicated commit changes the count.

use std::process::Stdio;
use std::time::{Duration, Instant};

use sandboxer_core::model::Sandbox;

use crate::home;

#[test]
fn twenty_concurrent_creates_are_all_recorded_and_destroyable() {
    twenty_concurrent(home());
}

fn twenty_concurrent(h: sandboxer_testkit::home::Home) -> sandboxer_testkit::home::Home {
    let children: Vec<_> = (0..20)
        .map(|_| {
            h.command(&["create", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn create")
        })
        .collect();
    let mut ids = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let run: sandboxer_testkit::home::Run = out.into();
        let rec = run.ok().json();
        assert_eq!(rec["state"], "ready");
        ids.push(rec["id"].as_str().unwrap().to_string());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "ids are unique");
    let list = h.run(&["list", "--json"]).ok().json();
    let mut stored: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    stored.sort();
    assert_eq!(stored, ids, "every create is in the store: none lost");

    // Destroy them all, concurrently too.
    let children: Vec<_> = ids
        .iter()
        .map(|id| {
            h.command(&["destroy", id, "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let run: sandboxer_testkit::home::Run = c.wait_with_output().unwrap().into();
        assert_eq!(run.ok().json()["state"], "destroyed");
    }
    let list = h.run(&["list", "--json"]).ok().json();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["state"] == "destroyed"));
    assert_eq!(list.as_array().unwrap().len(), 20);
    assert!(
        crate::canary::venues(&h.data).is_empty(),
        "every venue removed"
    );
    h
}

/// A tiny deterministic generator (no sleeps standing in for readiness:
/// the pause only picks a random moment to kill at).
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Every record reads back as a legal record, and every invariant holds.
fn assert_store_intact(h: &sandboxer_testkit::home::Home) {
    let list = h.run(&["list", "--json"]).ok().json();
    for r in list.as_array().unwrap() {
        let _: Sandbox = serde_json::from_value(r.clone())
            .unwrap_or_else(|e| panic!("illegal record after SIGKILL: {e}\n{r:#}"));
    }
    h.run(&["db", "check"]).ok();
}

#[test]
fn sigkill_at_random_moments_leaves_legal_records_and_a_clean_check() {
    sigkill_loop(home());
}

fn sigkill_loop(h: sandboxer_testkit::home::Home) {
    let mut seed: u64 = 0x5eed_cafe_f00d_1234;
    let started = Instant::now();
    let mut kills = 0;
    for _ in 0..25 {
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
        let mut child = h
            .command(&["create", "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let wait_us = next(&mut seed) % 60_000;
        std::thread::sleep(Duration::from_micros(wait_us));
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let _ = child.wait();
        // The store always parses, and every record is a legal record.
        assert_store_intact(&h);
        h.run(&["list", "--json"]).ok();
    }
    assert!(kills > 0, "at least one create was killed mid-way");
    // Every record, whatever state it was left in, can be destroyed.
    let list = h.run(&["list", "--json"]).ok().json();
    for r in list.as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        let d = h.run(&["destroy", id, "--json"]).ok().json();
        assert_eq!(d["state"], "destroyed", "{d:#}");
    }
    assert!(
        crate::canary::venues(&h.data).is_empty(),
        "no venue left behind"
    );
}
