//! Credits through the real binary: grants, holds at create, settlement at
//! destroy, refusals, bad amounts, and SIGKILL during metered creates. The
//! metering layer wraps every extension, so a priced canary route on
//! `local` is a real metered backend.

use std::process::Stdio;
use std::time::{Duration, Instant};

use sandboxer_core::credits::Micros;
use sandboxer_testkit::home::Home;

use crate::home;

/// 3.6 credits per hour = 1000 micro-credits per second.
pub(crate) const PAID: &str = r#"
id = "profile.paid-canary"
version = 1
description = "canary on a metered route"
default_ttl = "1h"
max_ttl = "4h"
ready_timeout = "30s"
[[routes]]
extension = "ext.canary"
price_per_hour = "3.6"
"#;

fn micros(v: &serde_json::Value) -> Micros {
    v.as_str()
        .unwrap_or_else(|| panic!("not an amount: {v}"))
        .parse()
        .unwrap()
}

fn account(h: &Home, actor: &str) -> serde_json::Value {
    h.run(&["credits", "balance", "--actor", actor, "--json"])
        .ok()
        .json()["account"]
        .clone()
}

fn paid_home() -> Home {
    let h = home();
    h.write_profile("paid.toml", PAID);
    h
}

#[test]
fn grant_hold_settle_and_usage_agree_to_the_micro_credit() {
    let h = paid_home();
    h.run(&["credits", "grant", "--actor", "agt:harness", "25"])
        .ok();
    let a = account(&h, "agt:harness");
    assert_eq!(micros(&a["available"]), Micros::from_credits(25));

    let rec = h
        .run(&[
            "create",
            "--profile",
            "profile.paid-canary",
            "--actor",
            "agt:harness",
            "--json",
        ])
        .ok()
        .json();
    let id = rec["id"].as_str().unwrap().to_string();
    // Held: 3.6/h x 1h.
    assert_eq!(micros(&rec["cost"]["held"]), Micros(3_600_000));
    assert!(rec["cost"]["settled"].is_null());
    let a = account(&h, "agt:harness");
    assert_eq!(micros(&a["held"]), Micros(3_600_000));
    assert_eq!(micros(&a["available"]), Micros(21_400_000));

    let d = h.run(&["destroy", &id, "--json"]).ok().json();
    let settled = micros(&d["cost"]["settled"]);
    let created = chrono::DateTime::parse_from_rfc3339(d["created_at"].as_str().unwrap()).unwrap();
    let ended = chrono::DateTime::parse_from_rfc3339(d["ended_at"].as_str().unwrap()).unwrap();
    let secs = (ended - created).num_milliseconds().max(0) as u64;
    // A started second counts: cost is 1000 micro-credits per (started) second.
    let expect_lo = Micros((secs / 1000) as i64 * 1000);
    let expect_hi = Micros((secs / 1000 + 2) as i64 * 1000);
    assert!(
        settled >= expect_lo && settled <= expect_hi,
        "settled {settled} for {secs} ms"
    );
    let a = account(&h, "agt:harness");
    assert_eq!(micros(&a["held"]), Micros::ZERO);
    assert_eq!(micros(&a["spent"]), settled);
    assert_eq!(
        micros(&a["available"]),
        Micros(25_000_000 - settled.0),
        "the rest of the hold is released"
    );

    let usage = h
        .run(&["credits", "usage", "--actor", "agt:harness", "--json"])
        .ok()
        .json();
    let row = &usage["usage"][0];
    assert_eq!(row["sandbox_id"], id.as_str());
    assert_eq!(micros(&row["cost"]), settled, "usage and balance agree");
    assert_eq!(row["state"], "settled");

    let ledger = h
        .run(&["credits", "ledger", "--actor", "agt:harness", "--json"])
        .ok()
        .json();
    let kinds: Vec<&str> = ledger
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["grant", "hold", "settle"]);
    h.run(&["credits", "check"]).ok();
}

#[test]
fn insufficient_credits_refuse_before_anything_is_provisioned() {
    let h = paid_home();
    h.run(&["credits", "grant", "--actor", "agt:poor", "1"])
        .ok();
    let before = h.store_dump();
    let r = h
        .run(&[
            "create",
            "--profile",
            "profile.paid-canary",
            "--actor",
            "agt:poor",
            "--json",
        ])
        .expect_code(6);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("3.6") && msg.contains("1 available"), "{msg}");
    assert_eq!(h.store_dump(), before, "nothing recorded");
    assert!(
        crate::canary::venues(&h.data).is_empty(),
        "nothing provisioned"
    );
    let a = account(&h, "agt:poor");
    assert_eq!(micros(&a["held"]), Micros::ZERO, "nothing held");
    assert_eq!(micros(&a["available"]), Micros::from_credits(1));
}

#[test]
fn extend_ttl_holds_the_extra_time_or_is_refused() {
    let h = paid_home();
    h.run(&["credits", "grant", "--actor", "agt:x", "6"]).ok();
    let rec = h
        .run(&[
            "create",
            "--profile",
            "profile.paid-canary",
            "--actor",
            "agt:x",
            "--json",
        ])
        .ok()
        .json();
    let id = rec["id"].as_str().unwrap().to_string();
    let e = h.run(&["extend-ttl", &id, "30m", "--json"]).ok().json();
    assert_eq!(
        micros(&e["cost"]["held"]),
        Micros(5_400_000),
        "1h30m at 3.6/h"
    );
    // Another hour would need 3.6 more; only 6 - 5.4 = 0.6 is left: refused.
    let before = h.store_dump();
    h.run(&["extend-ttl", &id, "1h"]).expect_code(6);
    assert_eq!(h.store_dump(), before);
    h.run(&["destroy", &id]).ok();
    h.run(&["credits", "check"]).ok();
}

#[test]
fn bad_amounts_and_non_admin_grants_are_refused() {
    let h = home();
    for bad in ["-1", "1e3", "0.0000001", "abc", "0"] {
        let r = h
            .run(&["credits", "grant", "--actor", "agt:a", bad, "--json"])
            .expect_code(if bad == "-1" { 2 } else { 4 });
        if bad != "-1" {
            assert_eq!(r.json()["error"]["kind"], "invalid_input", "{bad}");
        }
    }
    // `-1` looks like a flag to the argument parser; written with `--` it is
    // an amount and refused as one.
    h.run(&["credits", "grant", "--actor", "agt:a", "--", "-1"])
        .expect_code(4);
    let r = h
        .run(&[
            "credits", "grant", "--actor", "agt:a", "5", "--by", "agt:me", "--json",
        ])
        .expect_code(11);
    assert_eq!(r.json()["error"]["kind"], "forbidden");
    let a = account(&h, "agt:a");
    assert_eq!(micros(&a["granted"]), Micros::ZERO);
    // An idempotent grant is applied once.
    h.run(&[
        "credits", "grant", "--actor", "agt:a", "2", "--key", "inv-1",
    ])
    .ok();
    h.run(&[
        "credits", "grant", "--actor", "agt:a", "2", "--key", "inv-1",
    ])
    .ok();
    assert_eq!(
        micros(&account(&h, "agt:a")["granted"]),
        Micros::from_credits(2)
    );
}

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn sigkill_during_metered_creates_ends_them_at_the_next_pass_and_charges_nothing() {
    let h = paid_home();
    h.run(&["credits", "grant", "--actor", "agt:k", "1000"])
        .ok();
    let mut seed = 0xfeed_beef_u64;
    let started = Instant::now();
    for _ in 0..20 {
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
        let mut child = h
            .command(&[
                "create",
                "--profile",
                "profile.paid-canary",
                "--actor",
                "agt:k",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(next(&mut seed) % 50_000));
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let _ = child.wait();
        // A record and its hold commit together: the invariants hold after
        // every kill, with nothing to repair.
        let check = h.run(&["db", "check", "--json"]).ok().json();
        assert!(
            check["records_vs_ledger"].as_array().unwrap().is_empty(),
            "{check:#}"
        );
        assert!(
            check["ledger"]["violations"].as_array().unwrap().is_empty(),
            "{check:#}"
        );
    }
    // One reaper pass with the default grace window ends every create whose
    // process is gone: no waiting out the grace.
    h.run(&["reap-stale"]).ok();
    let records = h.run(&["list", "--json"]).ok().json();
    let usage = h
        .run(&["credits", "usage", "--actor", "agt:k", "--json"])
        .ok()
        .json();
    let rows = usage["usage"]
        .as_array()
        .or(usage.as_array())
        .unwrap()
        .clone();
    for r in records.as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        if r["state"] == "provisioning" {
            panic!("{id} is still provisioning after the reaper pass: {r:#}");
        }
        let hold = rows.iter().find(|u| u["sandbox_id"] == id);
        if r["ready_at"].is_null() {
            // Never ready: voided (nothing charged), or never held.
            if let Some(u) = hold {
                assert_eq!(u["state"], "voided", "{id}: {u:#}");
            }
        }
    }
    for r in records.as_array().unwrap() {
        if r["state"] != "destroyed" {
            h.run(&["destroy", r["id"].as_str().unwrap()]).ok();
        }
    }
    let check = h.run(&["credits", "check", "--json"]).ok().json();
    assert!(
        check["violations"].as_array().unwrap().is_empty(),
        "{check:#}"
    );
    assert_eq!(check["open_holds"], 0, "{check:#}");
    let a = account(&h, "agt:k");
    assert_eq!(micros(&a["held"]), Micros::ZERO);
    assert_eq!(
        Micros(micros(&a["available"]).0 + micros(&a["spent"]).0),
        Micros::from_credits(1000),
        "granted = available + held + spent"
    );
}

#[test]
fn a_burst_of_creates_past_the_balance_records_only_the_ones_paid_for() {
    let h = paid_home();
    // 3.6/h for the 1h default TTL: 3 creates' worth, and a bit.
    h.run(&["credits", "grant", "--actor", "agt:burst", "11"])
        .ok();
    let children: Vec<_> = (0..8)
        .map(|_| {
            h.command(&[
                "create",
                "--profile",
                "profile.paid-canary",
                "--actor",
                "agt:burst",
                "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut made = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        match out.status.code() {
            Some(0) => made += 1,
            Some(6) => {}
            other => panic!(
                "a create ended {other:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
    assert_eq!(made, 3, "exactly what the balance covers");
    let records = h.run(&["list", "--json"]).ok().json();
    assert_eq!(
        records.as_array().unwrap().len(),
        3,
        "a create refused for want of credits leaves no record: {records:#}"
    );
    let a = account(&h, "agt:burst");
    assert_eq!(micros(&a["held"]), Micros::parse_amount("10.8").unwrap());
    for r in records.as_array().unwrap() {
        h.run(&["destroy", r["id"].as_str().unwrap()]).ok();
    }
    h.run(&["db", "check"]).ok();
}
