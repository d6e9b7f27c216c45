//! `inspect stale` and `reap-stale` with the canary on local: expired,
//! ghosts, orphans left by a killed create, dry runs, concurrent reapers.

use std::process::Stdio;
use std::time::{Duration, Instant};

use sandboxer_testkit::home::Home;
use sandboxer_testkit::wait;

use crate::home;

const SHORT: &str = r#"
id = "profile.short-canary"
version = 1
description = "canary with a TTL of seconds"
default_ttl = "1s"
max_ttl = "1m"
ready_timeout = "30s"
[[routes]]
extension = "ext.canary"
"#;

fn stale(h: &Home) -> Vec<serde_json::Value> {
    h.run(&["inspect", "stale", "--grace", "0s", "--json"])
        .ok()
        .json()["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// Poll (bounded) until `inspect stale` lists `n` items of `kind`.
fn wait_stale(h: &Home, kind: &str, n: usize) -> Vec<serde_json::Value> {
    let items = || -> Vec<serde_json::Value> {
        stale(h).into_iter().filter(|i| i["kind"] == kind).collect()
    };
    wait::within(Duration::from_secs(30), || {
        Some(items()).filter(|found| found.len() >= n)
    })
    .unwrap_or_else(items)
}

#[test]
fn expired_sandboxes_are_found_and_reaped_dry_run_changes_nothing() {
    let h = home();
    h.write_profile("short.toml", SHORT);
    let rec = h
        .run(&["create", "--profile", "profile.short-canary", "--json"])
        .ok()
        .json();
    let id = rec["id"].as_str().unwrap().to_string();
    let items = wait_stale(&h, "expired", 1);
    assert_eq!(items.len(), 1, "{items:#?}");
    assert_eq!(items[0]["sandbox_id"], id.as_str());

    // Its deadline is explicit: the default grace window (2m) does not
    // protect it, young as it is.
    let r = h.run(&["inspect", "stale", "--json"]).ok().json();
    assert_eq!(r["items"][0]["kind"], "expired", "{r:#}");
    assert_eq!(r["items"][0]["sandbox_id"], id.as_str(), "{r:#}");

    let before = h.store_dump();
    let dry = h.run(&["reap-stale", "--dry-run", "--json"]).ok().json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["reaped"][0]["outcome"], "would reap");
    assert_eq!(h.store_dump(), before, "a dry run changes nothing");

    let r = h.run(&["reap-stale", "--json"]).ok().json();
    assert_eq!(r["reaped"][0]["kind"], "expired");
    assert_eq!(r["reaped"][0]["ok"], true);
    let got = h.run(&["get", &id, "--json"]).ok().json();
    assert_eq!(got["state"], "destroyed");
    assert_eq!(got["reason"], "expired");
    assert!(crate::canary::venues(&h.data).is_empty());
    // Idempotent: a second run finds nothing and succeeds.
    let again = h
        .run(&["reap-stale", "--grace", "0s", "--json"])
        .ok()
        .json();
    assert!(again["reaped"].as_array().unwrap().is_empty(), "{again:#}");
}

#[test]
fn a_ready_sandbox_whose_agent_died_is_a_ghost_and_gets_closed() {
    let h = home();
    let rec = h.run(&["create", "--json"]).ok().json();
    let id = rec["id"].as_str().unwrap().to_string();
    let pid = rec["reachability"]["details"]["pid"].as_i64().unwrap();
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
    let items = wait_stale(&h, "ghost", 1);
    assert_eq!(items.len(), 1, "{items:#?}");
    assert_eq!(items[0]["sandbox_id"], id.as_str());
    h.run(&["reap-stale", "--grace", "0s"]).ok();
    let got = h.run(&["get", &id, "--json"]).ok().json();
    assert_eq!(got["state"], "destroyed");
    assert_eq!(got["reason"], "reaped");
    assert!(crate::canary::venues(&h.data).is_empty());
}

#[test]
fn a_create_killed_mid_way_leaves_an_orphan_that_reap_stale_removes() {
    let h = home();
    // Warm up: the first create deploys the binary to the host.
    let warm = h.run(&["create", "--json"]).ok().json();
    h.run(&["destroy", warm["id"].as_str().unwrap()]).ok();
    let mut caught = false;
    for attempt in 0..40u64 {
        let mut child = h
            .command(&["create", "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until its venue exists (provisioning has made something on the
        // host), then kill it before it records ready.
        let started = Instant::now();
        while crate::canary::venues(&h.data).is_empty()
            && started.elapsed() < Duration::from_secs(5)
            && child.try_wait().unwrap().is_none()
        {
            std::thread::sleep(Duration::from_micros(200 + attempt * 50));
        }
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let _ = child.wait();
        let list = h.run(&["list", "--json"]).ok().json();
        let provisioning: Vec<_> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["state"] == "provisioning")
            .collect();
        if !provisioning.is_empty() && !crate::canary::venues(&h.data).is_empty() {
            caught = true;
            break;
        }
        // The create finished before the kill: clean up and try again.
        for r in list.as_array().unwrap() {
            if r["state"] != "destroyed" {
                h.run(&["destroy", r["id"].as_str().unwrap()]).ok();
            }
        }
    }
    assert!(caught, "never managed to kill a create mid-provisioning");
    let items = wait_stale(&h, "orphan", 1);
    assert_eq!(items.len(), 1, "{items:#?}");
    assert!(items[0]["detail"]
        .as_str()
        .unwrap()
        .contains("provisioning process"));
    let r = h
        .run(&["reap-stale", "--grace", "0s", "--json"])
        .ok()
        .json();
    assert!(
        r["reaped"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["ok"] == true),
        "{r:#}"
    );
    assert!(
        crate::canary::venues(&h.data).is_empty(),
        "the orphan venue is gone"
    );
    let list = h.run(&["list", "--json"]).ok().json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "destroyed"),
        "{list:#}"
    );
}

#[test]
fn two_reapers_at_once_do_no_harm() {
    let h = home();
    h.write_profile("short.toml", SHORT);
    let mut ids = Vec::new();
    for _ in 0..4 {
        let rec = h
            .run(&["create", "--profile", "profile.short-canary", "--json"])
            .ok()
            .json();
        ids.push(rec["id"].as_str().unwrap().to_string());
    }
    assert_eq!(wait_stale(&h, "expired", 4).len(), 4);
    let reapers: Vec<_> = (0..2)
        .map(|_| {
            h.command(&["reap-stale", "--grace", "0s", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for r in reapers {
        let run: sandboxer_testkit::home::Run = r.wait_with_output().unwrap().into();
        run.ok();
    }
    for id in &ids {
        let got = h.run(&["get", id, "--json"]).ok().json();
        assert_eq!(got["state"], "destroyed", "{got:#}");
        assert_eq!(got["reason"], "expired");
    }
    assert!(crate::canary::venues(&h.data).is_empty());
}

/// A sandbox past its deadline says so before any reaper pass: `get` and
/// `list` (human and `--json`, the streamed list too) mark it expired
/// without writing the record; the pass then ends it `expired` and the
/// mark goes with the state. The deadline is moved into the past in the
/// database (no waiting for a clock).
#[test]
fn a_sandbox_past_its_deadline_shows_expired_until_the_reaper_ends_it() {
    let h = home();
    let id = h.run(&["create", "--ttl", "1h", "--json"]).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let fresh = h.run(&["get", &id, "--json"]).ok().json();
    assert_eq!(fresh["state"], "ready");
    assert!(fresh.get("expired").is_none(), "not yet: {fresh}");
    // An hour has passed, as far as the record knows.
    let past = "2000-01-01T00:00:00.000Z";
    let conn = rusqlite::Connection::open(h.db_path()).unwrap();
    let n = conn
        .execute(
            "UPDATE sandboxes SET expires_at = ?1, record = json_set(record, '$.expires_at', ?1) WHERE id = ?2",
            rusqlite::params![past, id],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    let before = h.store_dump();

    let got = h.run(&["get", &id, "--json"]).ok().json();
    assert_eq!(got["expired"], true, "{got}");
    assert_eq!(got["state"], "ready", "the state is as stored");
    let listed = h.run(&["list", "--json"]).ok().json();
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["expired"], true, "{listed}");
    let human = h.run(&["get", &id]).ok().stdout;
    assert!(
        human.contains("expired: the next reaper pass ends it"),
        "{human}"
    );
    let table = h.run(&["list"]).ok().stdout;
    assert!(table.contains("expired: the next reaper"), "{table}");
    assert_eq!(h.store_dump(), before, "reading wrote nothing");

    h.run(&["reap-stale"]).ok();
    let ended = h.run(&["get", &id, "--json"]).ok().json();
    assert_eq!(ended["state"], "destroyed");
    assert_eq!(ended["reason"], "expired");
    assert!(ended.get("expired").is_none(), "{ended}");
}
