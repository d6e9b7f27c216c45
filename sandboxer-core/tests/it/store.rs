//! `JsonFileStore` against a real folder: round trip, concurrent updates,
//! refusal of corrupt and unknown-version files, no write on a failed or
//! no-op update, stale temp files, the separate lock file. Concurrent
//! processes are tested elsewhere.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use sandboxer_core::model::{self, Actor, NewSandbox, Reachability, Sandbox};
use sandboxer_core::store::{IdempotencyEntry, JsonFileStore, Store, StoreDoc};
use sandboxer_core::{Error, ErrorKind};

fn sandbox(id: &str) -> Sandbox {
    let mut s = Sandbox::new(NewSandbox {
        id: id.to_string(),
        profile: "profile.compose-e2e".into(),
        profile_version: 3,
        extension: "ext.compose-ssh".into(),
        host: "local".into(),
        actor: Actor::from_str("agt:store-test").unwrap(),
        inputs: [("repo".to_string(), "/src/app".to_string())].into(),
        route: Default::default(),
        ttl_seconds: 1800,
        idempotency_key: None,
        recreated_from: None,
        cost: None,
        created_at: model::now(),
    });
    s.reachability = Some(Reachability {
        address: "127.0.0.1".into(),
        ..Default::default()
    });
    s
}

fn push(store: &JsonFileStore, id: &str) {
    store
        .update(&mut |doc| {
            doc.sandboxes.push(sandbox(id)).unwrap();
            Ok(())
        })
        .unwrap();
}

/// The files in `dir` but the lock file (see `the_lock_is_a_separate_file`).
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "sandboxes.json.lock")
        .collect();
    names.sort();
    names
}

#[test]
fn round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    // The data dir does not exist yet: `load` sees an empty store and
    // creates nothing; `update` creates the folder, private.
    let dir = tmp.path().join("data/sandboxer");
    let store = JsonFileStore::in_data_dir(&dir);
    assert_eq!(store.path(), dir.join("sandboxes.json"));
    assert_eq!(store.load().unwrap(), StoreDoc::default());
    assert!(!dir.exists());

    let mut expected = StoreDoc {
        sandboxes: vec![sandbox("sbx-aaaaaaaaaa"), sandbox("sbx-bbbbbbbbbb")].into(),
        ..Default::default()
    };
    expected.idempotency.insert(
        "key-1".into(),
        IdempotencyEntry {
            request_hash: "abc".into(),
            sandbox_id: "sbx-aaaaaaaaaa".into(),
        },
    );
    expected
        .outbox
        .push(serde_json::json!({"event": "created", "id": "sbx-aaaaaaaaaa"}));
    let want = expected.clone();
    store
        .update(&mut |doc| {
            *doc = want.clone();
            Ok(())
        })
        .unwrap();

    assert_eq!(store.load().unwrap(), expected);
    // A second handle on the same file (another process, in effect).
    assert_eq!(
        JsonFileStore::new(dir.join("sandboxes.json"))
            .load()
            .unwrap(),
        expected
    );
    assert_eq!(
        store.location(),
        dir.join("sandboxes.json").display().to_string()
    );

    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(store.path()), 0o600);
    // One record per line.
    let text = fs::read_to_string(store.path()).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("{\"id\":\"sbx-"))
            .count(),
        2
    );
    assert_eq!(files_in(&dir), ["sandboxes.json"]);
}

/// 8 threads each append 25 records, one `update` per record. Every update
/// reads the document, appends and writes it back, so without the lock two
/// threads read the same document and the later rename drops the other's
/// record: under `--features test-no-lock` this test fails with fewer than
/// 200 records (about 30 survive when tried). Even threads share one store
/// (and its cached document), odd threads each open their own, as separate
/// processes would.
#[test]
fn concurrent_updates_lose_nothing() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 25;
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonFileStore::in_data_dir(tmp.path()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = if t % 2 == 0 {
                Arc::clone(&store)
            } else {
                Arc::new(JsonFileStore::in_data_dir(tmp.path()))
            };
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    push(&store, &format!("sbx-t{t}n{i}"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let doc = store.load().unwrap();
    let mut ids: Vec<&str> = doc.sandboxes.heads().map(|h| h.id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        THREADS * PER_THREAD,
        "lost updates: {} of {} records survived",
        ids.len(),
        THREADS * PER_THREAD
    );
    assert_eq!(files_in(tmp.path()), ["sandboxes.json"]);
}

/// `load` and `update` both refuse the file with `StoreCorrupt`, `update`
/// without running its closure, and the file keeps every byte.
fn assert_refused(contents: &[u8], message_has: &[&str]) -> Error {
    let tmp = tempfile::tempdir().unwrap();
    let store = JsonFileStore::in_data_dir(tmp.path());
    fs::write(store.path(), contents).unwrap();

    // A fault in the layout is refused by `load`; one inside a record line
    // (records are parsed when read) by reading that record.
    let (err, eager) = match store.load() {
        Err(e) => (e, true),
        Ok(doc) => (doc.sandboxes.into_vec().unwrap_err(), false),
    };
    assert_eq!(err.kind(), ErrorKind::StoreCorrupt, "{err:?}");
    let path = store.path().display().to_string();
    assert!(err.message().contains(&path), "{err:?}");
    for part in message_has {
        assert!(err.message().contains(part), "{part:?} not in {err:?}");
    }
    let hint = err.hint().expect("a hint");
    assert!(hint.contains("will not overwrite"), "{hint}");
    assert!(hint.contains(&format!("mv {path} {path}.")), "{hint}");

    // A commit that writes the whole file checks every record first.
    let whole = JsonFileStore::in_data_dir(tmp.path()).with_journal_from(u64::MAX);
    let mut ran = false;
    let err2 = whole
        .update(&mut |doc| {
            ran = true;
            doc.sandboxes.push(sandbox("sbx-cccccccccc"))
        })
        .unwrap_err();
    assert_eq!(err2.kind(), ErrorKind::StoreCorrupt);
    assert!(!(ran && eager), "update ran its closure on a refused store");
    assert_eq!(fs::read(store.path()).unwrap(), contents);
    assert_eq!(files_in(tmp.path()), ["sandboxes.json"]);
    err
}

#[test]
fn garbage_is_refused() {
    assert_refused(b"\x00\x01 not json at all", &["line 1, column 1"]);
}

#[test]
fn truncated_json_is_refused() {
    let mut doc = StoreDoc::default();
    doc.sandboxes.push(sandbox("sbx-dddddddddd")).unwrap();
    let full = serde_json::to_vec_pretty(&doc).unwrap();
    let cut = &full[..full.len() / 2];
    let err = assert_refused(cut, &["line ", "column "]);
    assert!(err.message().contains("EOF"), "{err:?}");
}

#[test]
fn empty_file_is_refused() {
    assert_refused(b"", &["line 1, column 0"]);
}

#[test]
fn wrong_shape_is_refused() {
    assert_refused(
        br#"{"version": 1, "sandboxes": {"not": "a list"}}"#,
        &["line 1"],
    );
}

#[test]
fn unknown_version_is_refused() {
    // A newer schema whose shape this build cannot parse at all: reported as
    // a version, not a parse error.
    let err = assert_refused(
        br#"{"sandboxes": {"by_id": {}}, "version": 2}"#,
        &["schema version 2", "reads version 1"],
    );
    assert!(err.hint().unwrap().contains("newer"), "{err:?}");
    assert_refused(
        br#"{"version": 0}"#,
        &["schema version 0", "reads version 1"],
    );
}

#[test]
fn failed_update_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = JsonFileStore::in_data_dir(tmp.path());
    push(&store, "sbx-eeeeeeeeee");
    let bytes = fs::read(store.path()).unwrap();
    let meta = fs::metadata(store.path()).unwrap();

    let err = store
        .update(&mut |doc| {
            doc.sandboxes = Default::default();
            doc.sandboxes.push(sandbox("sbx-ffffffffff"))?;
            Err(Error::conflict("no, after all"))
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(err.message(), "no, after all");

    let after = fs::metadata(store.path()).unwrap();
    assert_eq!(fs::read(store.path()).unwrap(), bytes);
    assert_eq!(
        (after.ino(), after.mtime_nsec()),
        (meta.ino(), meta.mtime_nsec())
    );
    assert_eq!(files_in(tmp.path()), ["sandboxes.json"]);

    // The half-changed document was not kept for the next update.
    push(&store, "sbx-mmmmmmmmmm");
    let ids: Vec<String> = store
        .load()
        .unwrap()
        .sandboxes
        .into_vec()
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["sbx-eeeeeeeeee", "sbx-mmmmmmmmmm"]);
}

/// Each store reuses the document it last wrote while the file holds exactly
/// its bytes; a write by another store (another process) is always seen.
#[test]
fn another_writer_is_seen() {
    let tmp = tempfile::tempdir().unwrap();
    let a = JsonFileStore::in_data_dir(tmp.path());
    let b = JsonFileStore::in_data_dir(tmp.path());
    push(&a, "sbx-nnnnnnnnnn");
    push(&b, "sbx-oooooooooo");
    assert_eq!(a.load().unwrap().sandboxes.len(), 2);
    push(&a, "sbx-pppppppppp");
    assert_eq!(b.load().unwrap().sandboxes.len(), 3);

    // Replaced behind both stores' backs, with the same length even.
    let text = fs::read_to_string(a.path()).unwrap();
    fs::write(a.path(), text.replace("sbx-nnnnnnnnnn", "sbx-qqqqqqqqqq")).unwrap();
    assert!(a.load().unwrap().get("sbx-qqqqqqqqqq").unwrap().is_some());
    a.update(&mut |doc| {
        assert!(doc.get("sbx-qqqqqqqqqq").unwrap().is_some());
        Ok(())
    })
    .unwrap();
    fs::remove_file(a.path()).unwrap();
    assert_eq!(a.load().unwrap(), StoreDoc::default());
}

#[test]
fn unchanged_update_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = JsonFileStore::in_data_dir(tmp.path());
    push(&store, "sbx-gggggggggg");
    let meta = fs::metadata(store.path()).unwrap();
    store
        .update(&mut |doc| {
            // Handed out mutably, changed and changed back.
            let s = doc.require_mut("sbx-gggggggggg")?;
            s.ttl_seconds += 1;
            s.ttl_seconds -= 1;
            Ok(())
        })
        .unwrap();
    let after = fs::metadata(store.path()).unwrap();
    // A write would have renamed a new file (a new inode) into place.
    assert_eq!(
        (after.ino(), after.mtime_nsec()),
        (meta.ino(), meta.mtime_nsec())
    );

    // An untouched missing store stays missing.
    let empty = JsonFileStore::in_data_dir(&tmp.path().join("other"));
    empty.update(&mut |_| Ok(())).unwrap();
    assert!(!empty.path().exists());
}

#[test]
#[cfg_attr(
    feature = "test-no-lock",
    ignore = "without the lock a temp file may be another writer's, so none is removed"
)]
fn stale_temp_files_are_ignored_then_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = JsonFileStore::in_data_dir(tmp.path());
    push(&store, "sbx-hhhhhhhhhh");
    let expected = store.load().unwrap();

    // What a writer that crashed before its rename leaves: a half-written
    // temp and a complete one with other content.
    let mut other = StoreDoc::default();
    other.sandboxes.push(sandbox("sbx-iiiiiiiiii")).unwrap();
    let half = tmp.path().join(".sandboxes.json.tmp.4242.00000000deadbeef");
    let whole = tmp.path().join(".sandboxes.json.tmp.77.0123456789abcdef");
    fs::write(&half, b"{\"version\":1,\"sandb").unwrap();
    fs::write(&whole, serde_json::to_vec(&other).unwrap()).unwrap();
    // Not ours: left alone.
    let foreign = ["sandboxes.json.bak", ".sandboxes.json.tmp.notours"];
    for name in foreign {
        fs::write(tmp.path().join(name), b"keep me").unwrap();
    }

    assert_eq!(store.load().unwrap(), expected);
    store
        .update(&mut |doc| {
            assert_eq!(*doc, expected);
            doc.sandboxes.push(sandbox("sbx-jjjjjjjjjj")).unwrap();
            Ok(())
        })
        .unwrap();
    assert_eq!(store.load().unwrap().sandboxes.len(), 2);
    assert!(!half.exists() && !whole.exists());
    assert_eq!(
        files_in(tmp.path()),
        [
            ".sandboxes.json.tmp.notours",
            "sandboxes.json",
            "sandboxes.json.bak",
        ]
    );
}

/// The lock is on `sandboxes.json.lock`, never on the file that gets
/// replaced: while `update` runs, another open of the lock file cannot lock
/// it, and the data file is not locked.
#[test]
#[cfg_attr(feature = "test-no-lock", ignore = "the feature removes the lock")]
fn the_lock_is_a_separate_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = JsonFileStore::in_data_dir(tmp.path());
    push(&store, "sbx-kkkkkkkkkk");
    assert_eq!(store.lock_path(), tmp.path().join("sandboxes.json.lock"));
    assert!(store.lock_path().is_file());
    assert_ne!(store.lock_path(), store.path());

    let would_block = |p: &Path| {
        let f = fs::File::open(p).unwrap();
        matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock))
    };
    store
        .update(&mut |doc| {
            assert!(
                would_block(store.lock_path()),
                "lock file not locked during update"
            );
            assert!(!would_block(store.path()), "data file locked during update");
            doc.sandboxes.push(sandbox("sbx-llllllllll")).unwrap();
            Ok(())
        })
        .unwrap();
    assert!(!would_block(store.lock_path()), "lock held after update");
}

/// A store of 3,000 records (about 2 MB): large enough that this machine
/// parses and serializes it on several threads.
fn large_doc() -> StoreDoc {
    let mut doc = StoreDoc::default();
    for i in 0..3000 {
        let mut s = sandbox(&format!("sbx-big{i}"));
        s.backend = serde_json::json!({"steps": [{"n": i}, {"n": i + 1}]});
        s.telemetry = Some(serde_json::json!({"load_1": i as f64 / 4.0, "cpus": 2}));
        doc.sandboxes.push(s).unwrap();
    }
    doc.outbox.push(serde_json::json!({"event": "created"}));
    doc
}

fn write_large(store: &JsonFileStore) -> StoreDoc {
    let doc = large_doc();
    let want = doc.clone();
    store
        .update(&mut |d| {
            *d = want.clone();
            Ok(())
        })
        .unwrap();
    doc
}

/// Written and read back by other stores (other processes, in effect): the
/// same document, one record per line, and an unchanged document is not
/// written again, so the bytes a fresh store writes are the bytes it read.
#[test]
fn large_store_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let doc = write_large(&JsonFileStore::in_data_dir(tmp.path()));
    let path = tmp.path().join("sandboxes.json");
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.len() > 1_000_000, "{} bytes", text.len());
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("{\"id\":\"sbx-big"))
            .count(),
        3000
    );
    // (`assert!`, not `assert_eq!`: the `Debug` of 3,000 records is long.)
    assert!(serde_json::from_str::<StoreDoc>(&text).unwrap() == doc);
    assert!(JsonFileStore::in_data_dir(tmp.path()).load().unwrap() == doc);

    let meta = fs::metadata(&path).unwrap();
    JsonFileStore::in_data_dir(tmp.path())
        .update(&mut |d| {
            assert!(*d == doc);
            Ok(())
        })
        .unwrap();
    let after = fs::metadata(&path).unwrap();
    assert_eq!(
        (after.ino(), after.mtime_nsec()),
        (meta.ino(), meta.mtime_nsec())
    );

    // One more record, by a fresh store: the file is over 1 MiB, so the
    // commit is one line in the journal and the file is untouched.
    let fresh = JsonFileStore::in_data_dir(tmp.path());
    push(&fresh, "sbx-zzzzzzzzzz");
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
    let journal = fs::read_to_string(fresh.journal_path()).unwrap();
    assert_eq!(journal.lines().count(), 1);
    assert!(journal.contains("sbx-zzzzzzzzzz") && !journal.contains("sbx-big"));
    let back = JsonFileStore::in_data_dir(tmp.path()).load().unwrap();
    assert_eq!(back.sandboxes.len(), 3001);
    assert!(back
        .sandboxes
        .all()
        .unwrap()
        .take(3000)
        .eq(doc.sandboxes.all().unwrap()));

    // The same JSON laid out differently (pretty-printed, records split
    // over lines) reads the same, and the next commit rewrites it in the
    // layout (a checkpoint, which also empties the journal).
    fs::write(&path, serde_json::to_vec_pretty(&back).unwrap()).unwrap();
    fs::write(fresh.journal_path(), "").unwrap();
    assert!(JsonFileStore::in_data_dir(tmp.path()).load().unwrap() == back);
    push(&fresh, "sbx-zzzzzzzzz2");
    assert_eq!(fs::read(fresh.journal_path()).unwrap(), b"");
    assert_eq!(
        fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("{\"id\":\"sbx-"))
            .count(),
        3002
    );
}

/// Faults deep in a large file are refused exactly as in a small one, with
/// the line of the fault.
#[test]
fn large_faulty_stores_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write_large(&JsonFileStore::in_data_dir(tmp.path()));
    let text = fs::read_to_string(tmp.path().join("sandboxes.json")).unwrap();
    // Line 4 holds the first record, so record 2,900 sits on line 2,904.
    let at = text.find("{\"id\":\"sbx-big2900\"").unwrap();
    assert_eq!(text[..at].lines().count(), 2903);

    let wrong_type = format!(
        "{}{}",
        &text[..at],
        text[at..].replacen("\"ttl_seconds\":1800", "\"ttl_seconds\":\"1800\"", 1)
    );
    let err = assert_refused(wrong_type.as_bytes(), &["line 2904", "invalid type"]);
    assert!(!err.message().contains("version"), "{err:?}");

    assert_refused(
        &text.as_bytes()[..at + 100],
        &["line 2904", "EOF while parsing"],
    );

    let newer = text.replacen("\"version\":1,", "\"version\":2,", 1);
    assert_refused(newer.as_bytes(), &["schema version 2", "reads version 1"]);

    // A newer schema whose records this build cannot read: still reported
    // as the version.
    let newer_shape = format!(
        "{}{}",
        &text[..at],
        text[at..].replacen("\"ttl_seconds\":1800", "\"ttl_seconds\":[]", 1)
    )
    .replacen("\"version\":1,", "\"version\":2,", 1);
    assert_refused(
        newer_shape.as_bytes(),
        &["schema version 2", "reads version 1"],
    );
}

/// Uploads are kept, changed and removed through both the rewrite and the
/// journal, and a reload sees exactly what was committed.
#[test]
fn uploads_survive_rewrites_and_the_journal() {
    use sandboxer_core::uploads::UploadRecord;
    for journal_from in [u64::MAX, 0] {
        let dir = tempfile::tempdir().unwrap();
        let store = JsonFileStore::in_data_dir(dir.path()).with_journal_from(journal_from);
        push(&store, "sbx-first");
        let rec = |id: &str| UploadRecord {
            id: id.to_string(),
            actor: Actor::from_str("agt:store-test").unwrap(),
            created_at: model::now(),
            files: 3,
            bytes: 42,
            used_by: Vec::new(),
        };
        store
            .update(&mut |doc| {
                doc.uploads.insert("upl-a".into(), rec("upl-a"));
                doc.uploads.insert("upl-b".into(), rec("upl-b"));
                Ok(())
            })
            .unwrap();
        store
            .update(&mut |doc| {
                doc.uploads
                    .get_mut("upl-a")
                    .unwrap()
                    .used_by
                    .push("sbx-first".into());
                doc.uploads.remove("upl-b");
                Ok(())
            })
            .unwrap();
        let reopened = JsonFileStore::in_data_dir(dir.path()).load().unwrap();
        assert_eq!(
            reopened.uploads.keys().collect::<Vec<_>>(),
            ["upl-a"],
            "journal_from {journal_from}"
        );
        assert_eq!(reopened.uploads["upl-a"].used_by, ["sbx-first"]);
        assert_eq!(reopened.uploads["upl-a"].bytes, 42);
        let journal = dir.path().join("sandboxes.json.journal");
        let journaled = fs::read_to_string(&journal).unwrap_or_default();
        if journal_from == 0 {
            assert!(
                journaled.contains("\"uploads_removed\":[\"upl-b\"]"),
                "{journaled}"
            );
        } else {
            assert!(journaled.is_empty(), "{journaled}");
        }
    }
}
