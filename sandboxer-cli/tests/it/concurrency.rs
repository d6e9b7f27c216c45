//! Concurrent processes and SIGKILL: nothing lost, the store always parses,
//! every record in a legal state.
//!
//! How we know the concurrency test can fail: build with the store lock
//! disabled (`cargo test -p sandboxer-cli --features sandboxer-core/test-no-lock
//! --test it concurrent`); with the read-modify-write unguarded, concurrent
//! creates overwrite each other's records and the count check fails.
//!
//! Each test runs twice: on a small store as it is by default (every
//! change rewrites `sandboxes.json`), and with every change journaled
//! (`sandboxes.json.journal`, folded in by checkpoints), as a store of
//! 1 MiB or more does.

use std::process::Stdio;
use std::time::{Duration, Instant};

use sandboxer_core::model::Sandbox;

use crate::home;

#[test]
fn twenty_concurrent_creates_are_all_recorded_and_destroyable() {
    twenty_concurrent(home());
}

#[test]
fn twenty_concurrent_creates_through_the_journal() {
    let h = twenty_concurrent(home().journal_every_commit());
    // The changes went to the journal: the file holds what the first
    // commit (a checkpoint: there was no file) wrote, the journal the rest.
    let lines = h.journal_bytes().iter().filter(|&&b| b == b'\n').count();
    assert!(
        lines >= 40,
        "{lines} journal lines for 20 creates and destroys"
    );
    let file: serde_json::Value = serde_json::from_slice(&h.store_bytes()).unwrap();
    assert!(file["sandboxes"].as_array().unwrap().len() < 20);
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

/// `sandboxes.json` parses, and so does every complete line of the
/// journal; every record in either is a legal record. A journal's last line
/// may be cut short (a create killed mid-append).
fn assert_store_intact(h: &sandboxer_testkit::home::Home) {
    let legal = |doc: &serde_json::Value, what: &str| {
        for r in doc["sandboxes"].as_array().unwrap() {
            let _: Sandbox = serde_json::from_value(r.clone())
                .unwrap_or_else(|e| panic!("illegal {what} record after SIGKILL: {e}\n{r:#}"));
        }
    };
    let bytes = h.store_bytes();
    if !bytes.is_empty() {
        let doc: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("store does not parse after SIGKILL: {e}"));
        legal(&doc, "store");
    }
    let journal = h.journal_bytes();
    let complete = journal
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    for line in journal[..complete]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
    {
        let entry: serde_json::Value = serde_json::from_slice(line)
            .unwrap_or_else(|e| panic!("journal line does not parse after SIGKILL: {e}"));
        legal(&entry, "journal");
    }
}

#[test]
fn sigkill_at_random_moments_leaves_a_parsable_store_in_legal_states() {
    sigkill_loop(home());
}

#[test]
fn sigkill_at_random_moments_through_the_journal() {
    let h = home().journal_every_commit();
    sigkill_loop(h);
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
