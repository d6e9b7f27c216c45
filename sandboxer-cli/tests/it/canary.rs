//! The canary on `local`, end to end through the real binary.

use std::path::Path;
use std::time::Duration;

use crate::home;
use sandboxer_testkit::wait;

/// Whether the process runs (a zombie waiting for an init that does not
/// reap counts as gone).
fn pid_alive(pid: i64) -> bool {
    // kill(pid, 0): 0 when the process exists.
    (unsafe { libc::kill(pid as i32, 0) == 0 }) && !zombie(pid)
}

fn agent_pid(rec: &serde_json::Value) -> i64 {
    rec["reachability"]["details"]["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no agent pid in reachability: {rec:#}"))
}

#[test]
fn create_get_list_extend_recreate_destroy() {
    let h = home();
    // The default create: the canary on local.
    let rec = h.run(&["create", "--json"]).ok().json();
    assert_eq!(rec["state"], "ready", "{rec:#}");
    assert_eq!(rec["profile"], "profile.sandbox-canary");
    assert_eq!(rec["profile_version"], 1);
    assert_eq!(rec["host"], "local");
    assert_eq!(rec["extension"], "ext.canary");
    assert_eq!(rec["actor"], "adm:tester");
    assert!(rec["ready_at"].is_string() && rec["expires_at"].is_string());
    assert!(rec["ended_at"].is_null());
    assert!(
        rec.get("backend").is_none(),
        "extension-private state must not be printed"
    );
    assert!(rec["telemetry"]["cpus"].as_u64().unwrap() >= 1);
    assert_eq!(rec["route"]["chosen"]["host"], "local");
    let id = rec["id"].as_str().unwrap().to_string();
    let pid = agent_pid(&rec);
    assert!(pid_alive(pid), "the agent runs after create");
    let venue = h.data.join("venues").join(&id);
    assert!(
        venue.join("sandboxer").exists(),
        "the binary was copied into the venue"
    );

    // get and list agree with create.
    let got = h.run(&["get", &id, "--json"]).ok();
    // In the record's own field order, id first, as `list --json` too.
    assert!(
        got.stdout
            .starts_with(&format!("{{\n  \"id\": \"{id}\",\n  \"profile\"")),
        "{}",
        got.stdout
    );
    assert_eq!(got.json(), rec);
    let list = h.run(&["list", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    let piped = h.run(&["list", "--json"]).ok().stdout;
    assert!(
        piped.starts_with(&format!("[\n{{\"id\":\"{id}\",\"profile\"")),
        "{piped}"
    );
    let human = h.run(&["list"]).ok().stdout;
    assert!(human.contains(&id) && human.contains("ready"), "{human}");

    // extend-ttl moves the expiry by 30m.
    let before = chrono::DateTime::parse_from_rfc3339(rec["expires_at"].as_str().unwrap()).unwrap();
    let ext = h.run(&["extend-ttl", &id, "30m", "--json"]).ok().json();
    let after = chrono::DateTime::parse_from_rfc3339(ext["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((after - before).num_seconds(), 1800);
    let deadline = std::fs::read_to_string(venue.join("deadline")).unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(deadline.trim()).unwrap(),
        after,
        "the agent's own deadline moved too"
    );
    // Beyond the profile maximum (24h) is refused with exit 4.
    let r = h.run(&["extend-ttl", &id, "24h"]).expect_code(4);
    assert!(r.stderr.contains("maximum"), "{}", r.stderr);

    // recreate: a new sandbox, the old one destroyed with reason recreated.
    let new = h.run(&["recreate", &id, "--json"]).ok().json();
    let new_id = new["id"].as_str().unwrap().to_string();
    assert_ne!(new_id, id);
    assert_eq!(new["state"], "ready");
    assert_eq!(new["recreated_from"], id.as_str());
    assert_eq!(new["host"], "local");
    let old = h.run(&["get", &id, "--json"]).ok().json();
    assert_eq!(old["state"], "destroyed");
    assert_eq!(old["reason"], "recreated");
    assert_eq!(old["recreated_as"], new_id.as_str());
    assert!(!pid_alive(pid), "the old agent is gone");
    assert!(!venue.exists(), "the old venue is gone");

    // destroy.
    let new_pid = agent_pid(&new);
    let d = h.run(&["destroy", &new_id, "--json"]).ok().json();
    assert_eq!(d["state"], "destroyed");
    assert_eq!(d["reason"], "destroyed");
    assert!(d["ended_at"].is_string());
    assert!(!pid_alive(new_pid));
    assert!(!h.data.join("venues").join(&new_id).exists());
    // Destroy again: still destroyed, exit 0.
    let again = h.run(&["destroy", &new_id, "--json"]).ok().json();
    assert_eq!(again["state"], "destroyed");
    // A destroyed sandbox cannot be extended.
    h.run(&["extend-ttl", &new_id, "5m"]).expect_code(7);
}

#[test]
fn human_summary_shows_telemetry_and_expiry() {
    let h = home();
    let out = h.run(&["create"]).ok().stdout;
    assert!(out.contains("ready"), "{out}");
    assert!(out.contains("profile.sandbox-canary v1"), "{out}");
    assert!(out.contains("expires"), "{out}");
    assert!(out.contains("CPUs"), "{out}");
    let id = out.split_whitespace().next().unwrap().to_string();
    h.run(&["destroy", &id]).ok();
}

#[test]
fn agent_exits_at_its_deadline_without_anyone_destroying_it() {
    let h = home();
    // A profile with a TTL of seconds, so the test does not wait long.
    h.write_profile(
        "quick.toml",
        r#"
id = "profile.quick-canary"
version = 1
description = "canary with a short TTL"
default_ttl = "2s"
max_ttl = "10s"
ready_timeout = "30s"
[[routes]]
extension = "ext.canary"
"#,
    );
    let rec = h
        .run(&["create", "--profile", "profile.quick-canary", "--json"])
        .ok()
        .json();
    let pid = agent_pid(&rec);
    wait::within(Duration::from_secs(20), || (!pid_alive(pid)).then_some(()));
    assert!(
        !pid_alive(pid) || zombie(pid),
        "the agent must exit at its deadline"
    );
    let venue = h.data.join("venues").join(rec["id"].as_str().unwrap());
    assert!(
        venue.join("exited.json").exists(),
        "the agent records why it exited"
    );
    // Destroy still works (venue cleaned, record destroyed).
    h.run(&["destroy", rec["id"].as_str().unwrap()]).ok();
    assert!(!venue.exists());
}

fn zombie(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2) == Some("Z"))
        .unwrap_or(true)
}

#[test]
fn idempotency_key_returns_the_same_sandbox() {
    let h = home();
    let a = h
        .run(&["create", "--idempotency-key", "k1", "--json"])
        .ok()
        .json();
    let b = h
        .run(&["create", "--idempotency-key", "k1", "--json"])
        .ok()
        .json();
    assert_eq!(a["id"], b["id"]);
    let list = h.run(&["list", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1, "no second sandbox");
    // Same key, different request: a conflict, exit 7, nothing written.
    let before = h.store_dump();
    let r = h
        .run(&["create", "--idempotency-key", "k1", "--ttl", "5m", "--json"])
        .expect_code(7);
    assert_eq!(r.json()["error"]["kind"], "conflict");
    assert_eq!(h.store_dump(), before);
    h.run(&["destroy", a["id"].as_str().unwrap()]).ok();
}

#[test]
fn no_wait_returns_provisioning_then_becomes_ready() {
    let h = home();
    let rec = h.run(&["create", "--no-wait", "--json"]).ok().json();
    assert_eq!(rec["state"], "provisioning");
    let id = rec["id"].as_str().unwrap().to_string();
    let state = wait::until(Duration::from_secs(30), "the end of provisioning", || {
        let state = h.run(&["get", &id, "--json"]).ok().json()["state"].clone();
        (state != "provisioning").then_some(state)
    });
    assert_eq!(state, "ready");
    h.run(&["destroy", &id]).ok();
}

#[test]
fn profiles_hosts_and_inspect_work_in_both_forms() {
    let h = home();
    let list = h.run(&["profiles", "list", "--json"]).ok().json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    for want in [
        "profile.burst",
        "profile.compose-e2e",
        "profile.saas",
        "profile.sandbox-canary",
        "profile.vm-haskell-build",
    ] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
    let human = h.run(&["profiles", "list"]).ok().stdout;
    assert!(human.contains("built-in"), "{human}");
    let show = h
        .run(&["profiles", "show", "profile.compose-e2e", "--json"])
        .ok()
        .json();
    assert_eq!(show["inputs"]["repo"]["required"], true);
    assert!(h
        .run(&["profiles", "show", "profile.compose-e2e"])
        .ok()
        .stdout
        .contains("repo (required"));

    let hosts = h.run(&["hosts", "list", "--json"]).ok().json();
    assert_eq!(hosts[0]["name"], "local");
    assert_eq!(hosts[0]["reachable"], true);
    assert!(h.run(&["hosts", "list"]).ok().stdout.contains("local *"));

    let inv = h.run(&["inspect", "host", "--json"]).ok().json();
    assert_eq!(inv["host"], "local");
    assert!(inv["cpus"].as_u64().unwrap() >= 1);
    assert!(inv["mem_total_bytes"].as_u64().unwrap() > 0);
    assert!(!inv["kernel"].as_str().unwrap().is_empty());
    let human = h.run(&["inspect", "host", "local"]).ok().stdout;
    assert!(human.contains("kernel"), "{human}");
    h.run(&["inspect", "host", "nosuch"]).expect_code(3);
}

#[test]
fn a_profile_whose_extension_is_not_built_is_listed_and_refused_by_name() {
    let h = home();
    h.write_profile(
        "future.toml",
        r#"
id = "profile.future"
version = 3
description = "needs a backend this build does not have"
default_ttl = "1h"
max_ttl = "2h"
[[routes]]
extension = "ext.not-built"
"#,
    );
    let list = h.run(&["profiles", "list", "--json"]).ok().json();
    let p = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "profile.future")
        .expect("listed");
    assert_eq!(p["available"], false);
    assert_eq!(p["missing_extensions"][0], "ext.not-built");
    let before = h.store_dump();
    let r = h
        .run(&["create", "--profile", "profile.future", "--json"])
        .expect_code(10);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("ext.not-built"), "{msg}");
    assert_eq!(h.store_dump(), before);
}

pub fn venues(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("venues"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
