//! The store conformance suite ([`conformance`]: every operation of
//! `Tx`, atomicity, concurrent writers), run against every backend, and the
//! SQLite file's own guarantees: what is not ours is refused untouched,
//! migrations are forward-only and idempotent.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use sandboxer_core::model::{self, Actor, NewSandbox, Sandbox};
use sandboxer_core::store::db::{transact, Db};
use sandboxer_core::{Error, ErrorKind};
use sandboxer_store::SqliteDb;

mod conformance;

fn actor(s: &str) -> Actor {
    Actor::from_str(s).unwrap()
}

fn sandbox(id: &str, who: &str, host: &str) -> Sandbox {
    Sandbox::new(NewSandbox {
        id: id.to_string(),
        profile: "profile.sandbox-canary".into(),
        profile_version: 1,
        extension: "ext.canary".into(),
        host: host.into(),
        actor: actor(who),
        inputs: BTreeMap::new(),
        route: Default::default(),
        ttl_seconds: 1800,
        idempotency_key: None,
        recreated_from: None,
        cost: None,
        created_at: model::now(),
    })
}

fn sqlite(dir: &Path) -> SqliteDb {
    SqliteDb::open(&dir.join("sandboxer.db")).unwrap()
}

#[test]
fn sqlite_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sandboxer.db");
    conformance::run(&|| Arc::new(SqliteDb::open(&path).unwrap()) as Arc<dyn Db>);
}

/// The bytes of every file in `dir`, by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn refused(path: &Path, says: &str) -> Error {
    let dir = path.parent().unwrap();
    let before = files(dir);
    let e = SqliteDb::open(path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StoreCorrupt, "{e}");
    assert!(e.to_string().contains(says), "{e}");
    assert_eq!(files(dir), before, "the refused file is left byte for byte");
    e
}

#[test]
fn a_file_that_is_not_a_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sandboxer.db");
    std::fs::write(&path, b"{\"version\":1,\"sandboxes\":[]}\n").unwrap();
    refused(&path, "not a database this build can use");
}

#[test]
fn another_programs_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sandboxer.db");
    {
        let c = rusqlite_open(&path);
        c.execute_batch(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY); INSERT INTO orders VALUES (7);",
        )
        .unwrap();
    }
    refused(&path, "not sandboxer's (tables: orders)");
}

#[test]
fn a_newer_schema_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sandboxer.db");
    {
        let db = SqliteDb::open(&path).unwrap();
        transact(&db, |tx| {
            tx.insert_sandbox(&sandbox("sbx-kept000001", "agt:a", "local"))
        })
        .unwrap();
    }
    {
        let c = rusqlite_open(&path);
        c.execute(
            "UPDATE sandboxer_meta SET value = '99' WHERE key = 'version'",
            [],
        )
        .unwrap();
    }
    let e = refused(&path, "schema is version 99");
    assert!(e.hint().unwrap().contains("release"), "{e:?}");
}

#[test]
fn reopening_migrates_nothing_twice_and_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(dir.path());
    transact(&db, |tx| {
        tx.insert_sandbox(&sandbox("sbx-first00001", "agt:a", "local"))
    })
    .unwrap();
    drop(db);
    let db = sqlite(dir.path());
    assert_eq!(
        db.schema_version().unwrap(),
        sandboxer_store::schema::LATEST
    );
    assert_eq!(transact(&db, |tx| tx.count()).unwrap(), 1);
    // Two processes opening a fresh file at once both end on one schema.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sandboxer.db");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let p = path.clone();
            std::thread::spawn(move || SqliteDb::open(&p).map(|d| d.schema_version().unwrap()))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap(), sandboxer_store::schema::LATEST);
    }
}

#[test]
fn separate_handles_on_one_file_lose_no_update() {
    // As separate processes do: each thread opens its own database handle.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sandboxer.db");
    SqliteDb::open(&path).unwrap();
    conformance::concurrent_increments(&|| Arc::new(SqliteDb::open(&path).unwrap()) as Arc<dyn Db>);
}

fn rusqlite_open(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

use sandboxer_testkit::pg::{admin_sql as pg_admin, PgScratch};

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed's PostgreSQL: scripts/testbed up, then source .testbed/env"
)]
fn postgres_passes_the_conformance_suite() {
    let scratch = PgScratch::new();
    let url = scratch.url.clone();
    conformance::run(&|| Arc::new(sandboxer_store::PgDb::open(&url).unwrap()) as Arc<dyn Db>);
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed's PostgreSQL: scripts/testbed up, then source .testbed/env"
)]
fn postgres_refuses_another_programs_database_and_a_newer_schema() {
    let scratch = PgScratch::new();
    pg_admin(&scratch.url, "CREATE TABLE orders (id INTEGER PRIMARY KEY)");
    let e = sandboxer_store::PgDb::open(&scratch.url).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StoreCorrupt, "{e}");
    assert!(e.to_string().contains("not sandboxer's (orders)"), "{e}");
    pg_admin(&scratch.url, "DROP TABLE orders");
    let db = sandboxer_store::PgDb::open(&scratch.url).unwrap();
    assert_eq!(
        db.schema_version().unwrap(),
        sandboxer_store::schema::LATEST
    );
    drop(db);
    pg_admin(
        &scratch.url,
        "UPDATE sandboxer_meta SET value = '99' WHERE key = 'version'",
    );
    let e = sandboxer_store::PgDb::open(&scratch.url).unwrap_err();
    assert!(e.to_string().contains("schema is version 99"), "{e}");
    // Still version 99: nothing was migrated back.
    pg_admin(&scratch.url, "DO $$ BEGIN IF (SELECT value FROM sandboxer_meta WHERE key = 'version') <> '99' THEN RAISE EXCEPTION 'touched'; END IF; END $$");
}

#[test]
fn a_bad_database_url_is_refused_with_its_password_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let Err(e) = sandboxer_store::open(Some("mysql://ops:s3cret@db/x"), dir.path()) else {
        panic!("a mysql:// URL was taken");
    };
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert!(!e.to_string().contains("s3cret"), "{e}");
    let Err(e) = sandboxer_store::open(Some("postgres://ops:s3cret@127.0.0.1:1/x"), dir.path())
    else {
        panic!("a closed port answered");
    };
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    assert!(!format!("{e} {e:?}").contains("s3cret"), "{e:?}");
    // No URL: the embedded database in the data dir.
    let db = sandboxer_store::open(None, dir.path()).unwrap();
    assert!(db.location().ends_with("sandboxer.db"));
}
