//! Moving in: a data dir and config dir written by release 0.1 (fixtures
//! made with that release's code, in sandboxer-stack/tests/fixtures) are
//! imported whole by the first command, and the old files renamed; a torn
//! journal tail is dropped as that release dropped it; a complete line that
//! does not parse stops the import with exit 8 and nothing imported.

use std::path::{Path, PathBuf};

use sandboxer_testkit::home::Home;

use crate::home;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sandboxer-stack/tests/fixtures")
        .join(name)
}

/// A home with the fixture's data and config dirs copied in.
fn home_from(name: &str) -> Home {
    let h = home();
    for (from, to) in [("data", &h.data), ("config", &h.config)] {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(fixture(name).join(from)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                std::fs::create_dir_all(to.join(e.file_name())).unwrap();
                for f in std::fs::read_dir(e.path()).unwrap() {
                    let f = f.unwrap();
                    std::fs::copy(f.path(), to.join(e.file_name()).join(f.file_name())).unwrap();
                }
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
    h
}

fn expected(name: &str, file: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture(name).join(file)).unwrap()).unwrap()
}

/// `list --json` as stored: without the `expired` mark, which is derived
/// from the clock when shown (a fixture's live record is past its deadline
/// once the day it was made has moved on). The mark is checked to sit on
/// exactly the live records past their deadline.
fn stored_list(h: &Home) -> serde_json::Value {
    let mut list = h.run(&["list", "--json"]).ok().json();
    let now = chrono::Utc::now();
    for r in list.as_array_mut().unwrap() {
        let live = r["state"] == "ready" || r["state"] == "provisioning";
        let past = r["expires_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t <= now);
        let marked = r.as_object_mut().unwrap().remove("expired");
        assert_eq!(
            marked.is_some(),
            live && past,
            "the expired mark of {}",
            r["id"]
        );
    }
    list
}

fn balances(h: &Home) -> serde_json::Value {
    serde_json::Value::Array(
        ["agt:harness", "agt:other"]
            .iter()
            .map(|a| {
                h.run(&["credits", "balance", "--actor", a, "--json"])
                    .ok()
                    .json()
            })
            .collect(),
    )
}

#[test]
fn a_release_0_1_home_comes_across_whole() {
    for name in ["release-0.1-small", "release-0.1-journal"] {
        let h = home_from(name);
        // Every record as that release printed it.
        assert_eq!(
            stored_list(&h),
            expected(name, "expected-list.json"),
            "{name}: records"
        );
        for old in ["sandboxes.json", "ledger.jsonl"] {
            assert!(!h.data.join(old).exists(), "{name}: {old} is renamed");
            assert!(
                h.data.join(format!("{old}.imported")).exists(),
                "{name}: {old}.imported"
            );
        }
        assert!(h.config.join("tokens.toml.imported").exists());
        assert_eq!(
            balances(&h),
            expected(name, "expected-balances.json"),
            "{name}"
        );
        assert_eq!(
            h.run(&["credits", "ledger", "--json"]).ok().json(),
            expected(name, "expected-entries.json"),
            "{name}: every ledger entry"
        );
        assert_eq!(
            h.run(&["tokens", "list", "--json"]).ok().json(),
            expected(name, "expected-tokens.json"),
            "{name}: token hashes"
        );
        // An idempotency key of that release still names its sandbox.
        let records = expected(name, "expected-list.json");
        let keyed = records
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["idempotency_key"] == "live-1")
            .unwrap_or_else(|| panic!("{name}: the fixture has a keyed record"));
        let again = h
            .run(&[
                "create",
                "--profile",
                "profile.paid-canary",
                "--actor",
                "agt:harness",
                "--ttl",
                "2h",
                "--idempotency-key",
                "live-1",
                "--no-wait",
                "--json",
            ])
            .ok()
            .json();
        assert_eq!(again["id"], keyed["id"], "{name}: the key is honoured");
        h.run(&["db", "check"]).ok();
        // A second command imports nothing again.
        let dump = h.store_dump();
        h.run(&["list"]).ok();
        assert_eq!(h.store_dump(), dump, "{name}");
    }
}

#[test]
fn a_torn_journal_tail_is_dropped_and_a_bad_complete_line_refused() {
    let name = "release-0.1-journal";
    // A commit that never returned: its line has no line break.
    let h = home_from(name);
    let journal = h.data.join("sandboxes.json.journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes.extend_from_slice(br#"{"version":1,"sandboxes":[{"id":"sbx-torn"#);
    std::fs::write(&journal, &bytes).unwrap();
    assert_eq!(stored_list(&h), expected(name, "expected-list.json"));

    // A complete line that does not parse is corruption: nothing imported,
    // every file as it was.
    let h = home_from(name);
    let mut bytes = std::fs::read(journal_of(&h)).unwrap();
    bytes.extend_from_slice(b"{\"version\":1,\"sandboxes\":[{\"id\":12}]}\n");
    std::fs::write(journal_of(&h), &bytes).unwrap();
    let ledger_before = std::fs::read(h.data.join("ledger.jsonl")).unwrap();
    let r = h.run(&["list", "--json"]).expect_code(8);
    assert_eq!(r.json()["error"]["kind"], "store_corrupt");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("sandboxes.json.journal") && msg.contains("line"),
        "{msg}"
    );
    assert_eq!(std::fs::read(journal_of(&h)).unwrap(), bytes);
    assert_eq!(
        std::fs::read(h.data.join("ledger.jsonl")).unwrap(),
        ledger_before
    );
    assert_eq!(
        h.store_dump().matches("sbx-").count(),
        0,
        "nothing imported"
    );
    assert!(!h.config.join("tokens.toml.imported").exists());
}

fn journal_of(h: &Home) -> PathBuf {
    h.data.join("sandboxes.json.journal")
}
