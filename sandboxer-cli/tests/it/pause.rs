//! Pause, resume and snapshots of the canary, end to end through the real
//! binary and `sandboxer serve`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::home;
use crate::http::{token, Served};

/// The agent's process state letter (`S` sleeping, `T` stopped).
fn proc_state(pid: i64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap()
        .rsplit(") ")
        .next()
        .unwrap()
        .chars()
        .next()
        .unwrap()
        .to_string()
}

fn agent_pid(venue: &Path) -> i64 {
    std::fs::read_to_string(venue.join("agent.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn pause_resume_snapshot_and_restore_the_canary() {
    let h = home();
    let rec = h.run(&["create", "--ttl", "1h", "--json"]).ok().json();
    let id = rec["id"].as_str().unwrap().to_string();
    let venue = h.data.join("venues").join(&id);
    std::fs::write(venue.join("marker.txt"), "written before the snapshot\n").unwrap();
    let pid = agent_pid(&venue);

    let paused = h.run(&["pause", &id, "--json"]).ok().json();
    assert_eq!(paused["state"], "paused", "{paused:#}");
    assert_eq!(proc_state(pid), "T", "a paused agent is stopped");
    let left = paused["ttl_remaining_seconds"].as_u64().unwrap();
    assert!((3590..=3600).contains(&left), "{paused:#}");
    let human = h.run(&["list", "--state", "paused"]).ok().stdout;
    assert!(human.contains(&id), "{human}");

    let snap = h
        .run(&["snapshot", &id, "--name", "warm", "--json"])
        .ok()
        .json();
    assert_eq!(snap["state"], "ready", "{snap:#}");
    assert_eq!(snap["source"], id.as_str());
    assert_eq!(snap["name"], "warm");
    assert!(snap["size_bytes"].as_u64().unwrap() > 0);
    assert!(snap.get("backend").is_none(), "{snap:#}");
    let snap_id = snap["id"].as_str().unwrap().to_string();
    let listed = h.run(&["snapshots", "list", "--json"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], snap_id.as_str());

    let resumed = h.run(&["resume", &id, "--json"]).ok().json();
    assert_eq!(resumed["state"], "ready", "{resumed:#}");
    assert_ne!(proc_state(pid), "T", "a resumed agent runs");
    let expires =
        chrono::DateTime::parse_from_rfc3339(resumed["expires_at"].as_str().unwrap()).unwrap();
    let deadline = std::fs::read_to_string(venue.join("deadline")).unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(deadline.trim()).unwrap(),
        expires,
        "the agent's own deadline is the resumed one"
    );

    // The restore: a new venue with the file written before the snapshot.
    let restored = h
        .run(&["create", "--from-snapshot", &snap_id, "--json"])
        .ok()
        .json();
    assert_eq!(restored["state"], "ready", "{restored:#}");
    assert_eq!(restored["from_snapshot"], snap_id.as_str());
    assert_eq!(restored["profile"], "profile.sandbox-canary");
    let new_venue = h.data.join("venues").join(restored["id"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(new_venue.join("marker.txt")).unwrap(),
        "written before the snapshot\n"
    );
    assert_ne!(agent_pid(&new_venue), pid, "its own agent");

    // Bad inputs: unknown snapshot (3), another profile (4), a state that
    // cannot pause (7).
    let r = h
        .run(&["create", "--from-snapshot", "snap-nosuchsnap1"])
        .expect_code(3);
    assert!(
        r.stderr.contains("no snapshot `snap-nosuchsnap1`"),
        "{}",
        r.stderr
    );
    let r = h
        .run(&[
            "create",
            "--from-snapshot",
            &snap_id,
            "--profile",
            "profile.compose-e2e",
        ])
        .expect_code(4);
    assert!(
        r.stderr.contains("is of profile.sandbox-canary"),
        "{}",
        r.stderr
    );
    h.run(&["destroy", &id]).ok();
    let r = h.run(&["pause", &id]).expect_code(7);
    assert!(r.stderr.contains("is destroyed"), "{}", r.stderr);
    h.run(&["snapshots", "get", "snap-nosuchsnap1"])
        .expect_code(3);
    let r = h
        .run(&["snapshots", "list", "--state", "gone"])
        .expect_code(4);
    assert!(
        r.stderr.contains("creating, ready, failed, deleted"),
        "{}",
        r.stderr
    );

    let deleted = h
        .run(&["snapshots", "delete", &snap_id, "--json"])
        .ok()
        .json();
    assert_eq!(deleted["state"], "deleted");
    assert!(!h.data.join("snapshots").join(&snap_id).exists());
    h.run(&["create", "--from-snapshot", &snap_id])
        .expect_code(7);
    // A destroyed paused sandbox leaves no venue.
    let rid = restored["id"].as_str().unwrap();
    h.run(&["pause", rid]).ok();
    h.run(&["destroy", rid]).ok();
    assert!(!new_venue.exists());
}

#[test]
fn a_snapshot_killed_half_way_ends_failed_and_its_parts_are_removed() {
    let h = home();
    let rec = h.run(&["create", "--ttl", "1h", "--json"]).ok().json();
    let id = rec["id"].as_str().unwrap().to_string();
    let venue = h.data.join("venues").join(&id);
    // Enough to archive that the kill lands while it is being written.
    let big: Vec<u8> = (0..64 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(venue.join("big.bin"), big).unwrap();
    let mut child = h
        .command(&["snapshot", &id])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the archive is being written, then SIGKILL the CLI.
    let snaps = h.data.join("snapshots");
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let partial = std::fs::read_dir(&snaps)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            })
            .unwrap_or(false);
        if partial {
            break;
        }
        assert!(Instant::now() < until, "the snapshot never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the snapshot ended before the kill"
        );
        std::thread::yield_now();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The archiver the CLI started outlives it on this host: let it end
    // (it renames its folder, or removes it) before the reaper looks.
    let until = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&snaps)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".partial"))
    {
        assert!(Instant::now() < until, "the archiver never ended");
        std::thread::yield_now();
    }

    let list = h.run(&["snapshots", "list", "--json"]).ok().json();
    assert_eq!(list[0]["state"], "creating", "{list:#}");
    let snap_id = list[0]["id"].as_str().unwrap().to_string();
    // Never restorable while it is not ready.
    h.run(&["create", "--from-snapshot", &snap_id])
        .expect_code(7);

    let stale = h
        .run(&["inspect", "stale", "--grace", "0s", "--json"])
        .ok()
        .json();
    let items = stale["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|i| i["sandbox_id"] == snap_id.as_str() && i["kind"] == "stuck"),
        "{stale:#}"
    );
    h.run(&["reap-stale", "--grace", "0s"]).ok();
    let after = h.run(&["snapshots", "get", &snap_id, "--json"]).ok().json();
    assert_eq!(after["state"], "failed", "{after:#}");
    let left: Vec<String> = std::fs::read_dir(&snaps)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "nothing of it is kept: {left:?}");
    h.run(&["destroy", &id]).ok();
}

#[test]
fn a_restore_killed_half_way_is_reaped_and_the_snapshot_restores_again() {
    let h = home();
    let rec = h.run(&["create", "--ttl", "1h", "--json"]).ok().json();
    let id = rec["id"].as_str().unwrap().to_string();
    let venue = h.data.join("venues").join(&id);
    std::fs::write(venue.join("marker.txt"), "kept\n").unwrap();
    // Enough to unpack that the kill lands while the restore runs.
    let big: Vec<u8> = (0..64 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(venue.join("big.bin"), big).unwrap();
    let snap = h.run(&["snapshot", &id, "--json"]).ok().json();
    let snap_id = snap["id"].as_str().unwrap().to_string();
    h.run(&["destroy", &id]).ok();

    let mut child = h
        .command(&["create", "--from-snapshot", &snap_id])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let venues = h.data.join("venues");
    let until = Instant::now() + Duration::from_secs(60);
    let restoring = loop {
        let made = std::fs::read_dir(&venues)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("sbx-"));
        if let Some(v) = made {
            break v;
        }
        assert!(Instant::now() < until, "the restore never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended before the kill"
        );
        std::thread::yield_now();
    };
    child.kill().unwrap();
    child.wait().unwrap();
    // The start script the CLI ran outlives it on this host: let it end.
    let until = Instant::now() + Duration::from_secs(60);
    while restoring.exists() && !restoring.join("agent.pid").exists() {
        assert!(Instant::now() < until, "the start script never ended");
        std::thread::yield_now();
    }
    let list = h
        .run(&["list", "--state", "provisioning", "--json"])
        .ok()
        .json();
    let new_id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(list[0]["from_snapshot"], snap_id.as_str(), "{list:#}");

    h.run(&["reap-stale", "--grace", "0s"]).ok();
    let after = h.run(&["get", &new_id, "--json"]).ok().json();
    assert_eq!(after["state"], "destroyed", "{after:#}");
    assert_eq!(after["reason"], "reaped", "{after:#}");
    assert!(!restoring.exists(), "the half-made venue is gone");
    // The snapshot is untouched and restores again.
    let again = h.run(&["snapshots", "get", &snap_id, "--json"]).ok().json();
    assert_eq!(again["state"], "ready");
    let restored = h
        .run(&["create", "--from-snapshot", &snap_id, "--json"])
        .ok()
        .json();
    let v = venues.join(restored["id"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(v.join("marker.txt")).unwrap(),
        "kept\n"
    );
    h.run(&["destroy", restored["id"].as_str().unwrap()]).ok();
    h.run(&["snapshots", "delete", &snap_id]).ok();
}

#[test]
fn the_api_pauses_resumes_and_snapshots_for_the_owner_only() {
    let h = home();
    let srv = Served::start(&h, &[]);
    let (alice, bob) = (token(&h, "agt:alice"), token(&h, "agt:bob"));
    let made = srv.post("/v1/sandboxes", &alice, json!({"ttl": "1h"}));
    assert_eq!(made.status, 201, "{:#}", made.json);
    let id = made.json["id"].as_str().unwrap().to_string();

    // Another actor's sandbox is unknown to bob.
    let r = srv.post(&format!("/v1/sandboxes/{id}/pause"), &bob, json!({}));
    assert_eq!(r.status, 404, "{:#}", r.json);

    let r = srv.post(&format!("/v1/sandboxes/{id}/pause"), &alice, json!({}));
    assert_eq!((r.status, r.json["state"].as_str()), (200, Some("paused")));
    let r = srv.post(
        &format!("/v1/sandboxes/{id}/snapshots"),
        &alice,
        json!({"name": "n1"}),
    );
    assert_eq!(r.status, 201, "{:#}", r.json);
    assert_eq!(r.json["actor"], "agt:alice");
    let snap = r.json["id"].as_str().unwrap().to_string();
    let r = srv.post(
        &format!("/v1/sandboxes/{id}/resume"),
        &alice,
        json!({"ttl": "bad"}),
    );
    assert_eq!(r.status, 400, "{:#}", r.json);
    let r = srv.post(
        &format!("/v1/sandboxes/{id}/resume"),
        &alice,
        json!({"ttl": "20m"}),
    );
    assert_eq!((r.status, r.json["state"].as_str()), (200, Some("ready")));
    let r = srv.post(&format!("/v1/sandboxes/{id}/resume"), &alice, json!({}));
    assert_eq!(r.status, 200, "resuming a ready sandbox returns it");

    // Snapshots are the owner's too.
    assert_eq!(srv.get(&format!("/v1/snapshots/{snap}"), &bob).status, 404);
    assert_eq!(srv.get("/v1/snapshots", &bob).json, json!([]));
    let r = srv.get("/v1/snapshots?state=ready", &alice);
    assert_eq!(r.json.as_array().unwrap().len(), 1, "{:#}", r.json);
    let r = srv.post("/v1/sandboxes", &bob, json!({"from_snapshot": snap}));
    assert_eq!(r.status, 404, "{:#}", r.json);
    let r = srv.post("/v1/sandboxes", &alice, json!({"from_snapshot": snap}));
    assert_eq!(r.status, 201, "{:#}", r.json);
    assert_eq!(r.json["from_snapshot"], snap.as_str());
    let restored = r.json["id"].as_str().unwrap().to_string();

    let r = srv.call(
        "DELETE",
        &format!("/v1/snapshots/{snap}"),
        Some(&alice),
        None,
    );
    assert_eq!((r.status, r.json["state"].as_str()), (200, Some("deleted")));
    for s in [&id, &restored] {
        let r = srv.call("DELETE", &format!("/v1/sandboxes/{s}"), Some(&alice), None);
        assert_eq!(r.status, 200);
    }
    // A destroyed sandbox cannot pause: 409.
    let r = srv.post(&format!("/v1/sandboxes/{id}/pause"), &alice, json!({}));
    assert_eq!(r.status, 409, "{:#}", r.json);
    srv.kill();
}

#[test]
fn snapshot_artifacts_no_record_keeps_are_orphans_the_reaper_removes() {
    let h = home();
    let rec = h.run(&["create", "--ttl", "1h", "--json"]).ok().json();
    let id = rec["id"].as_str().unwrap().to_string();
    let kept = h.run(&["snapshot", &id, "--json"]).ok().json();
    let kept = kept["id"].as_str().unwrap().to_string();
    // Left by something that is gone: a whole snapshot folder and a partial
    // one, neither with a record.
    let snaps = h.data.join("snapshots");
    std::fs::create_dir_all(snaps.join("snap-norecord001")).unwrap();
    std::fs::write(snaps.join("snap-norecord001").join("venue.tar"), b"x").unwrap();
    std::fs::create_dir_all(snaps.join(".snap-norecord002.partial")).unwrap();

    let stale = h
        .run(&["inspect", "stale", "--grace", "0s", "--json"])
        .ok()
        .json();
    let orphans: BTreeSet<String> = stale["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "orphan")
        .map(|i| i["sandbox_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        orphans,
        BTreeSet::from([
            "snap-norecord001".to_string(),
            "snap-norecord002".to_string()
        ]),
        "{stale:#}"
    );
    h.run(&["reap-stale", "--grace", "0s"]).ok();
    let left: BTreeSet<String> = std::fs::read_dir(&snaps)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        BTreeSet::from([kept.clone()]),
        "the recorded one stays"
    );
    h.run(&["destroy", &id]).ok();
    h.run(&["snapshots", "delete", &kept]).ok();
}
