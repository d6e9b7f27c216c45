//! Realistic sandbox records for store benchmarks: what a store looks like
//! after months of canary creates, built through the model's own
//! constructors and state machine (never by hand-written JSON), so they
//! serialize exactly as the real ones do.

use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use sandboxer_core::credits::Micros;
use sandboxer_core::lifecycle::{EndReason, Event};
use sandboxer_core::model::{Actor, Candidate, NewSandbox, Reachability, RouteTrace, Sandbox};
use sandboxer_core::store::db::{transact, Db};
use sandboxer_core::store::IdempotencyEntry;

const ACTORS: [&str; 4] = [
    "adm:operator",
    "agt:builder-7",
    "atm:nightly-e2e",
    "agt:review-bot",
];

/// A deterministic sandbox id for record `i` (`sbx-` and 10 base32
/// characters, spread so ids do not share long prefixes).
pub fn record_id(i: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    // splitmix64: a bijection, so distinct `i` give distinct ids.
    let mut x = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    let tail: String = (0..10)
        .map(|k| ALPHABET[((x >> (k * 5)) & 31) as usize] as char)
        .collect();
    format!("sbx-{tail}")
}

/// A new canary record in `provisioning`, as `Manager::start_create`
/// records it before anything is made.
pub fn new_canary(id: String) -> Sandbox {
    Sandbox::new(NewSandbox {
        id,
        profile: "profile.sandbox-canary".into(),
        profile_version: 1,
        extension: "ext.canary".into(),
        host: "local".into(),
        actor: Actor::from_str("adm:bench").expect("a valid actor"),
        inputs: Default::default(),
        route: canary_route(),
        ttl_seconds: 1800,
        idempotency_key: None,
        recreated_from: None,
        cost: None,
        created_at: sandboxer_core::model::now(),
    })
}

fn canary_route() -> RouteTrace {
    RouteTrace {
        policy: "ordered".into(),
        chosen: Some(Candidate {
            route: 0,
            extension: "ext.canary".into(),
            host: "local".into(),
            price_per_hour: Micros::ZERO,
        }),
        skipped: Vec::new(),
        remaining: Vec::new(),
    }
}

/// Record `i` of a store's history: a canary on `local` that became ready
/// (reachability, telemetry and backend state filled as the canary fills
/// them) and ended (`destroyed`, `expired` or `reaped`) about 20 minutes
/// later. Every fourth carried an idempotency key. About 1.1 KB as JSON.
pub fn canary_record(i: u64, data_dir: &str, created_at: DateTime<Utc>) -> Result<Sandbox> {
    let id = record_id(i);
    let venue = sandboxer_core::transport::Utf8Path::new(data_dir)
        .join("venues")
        .join(&id)
        .into_string();
    let pid = 10_000 + (i * 7919) % 50_000;
    let mut s = Sandbox::new(NewSandbox {
        id: id.clone(),
        profile: "profile.sandbox-canary".into(),
        profile_version: 1,
        extension: "ext.canary".into(),
        host: "local".into(),
        actor: Actor::from_str(ACTORS[(i % ACTORS.len() as u64) as usize])?,
        inputs: Default::default(),
        route: canary_route(),
        ttl_seconds: 1800,
        idempotency_key: i.is_multiple_of(4).then(|| format!("ci-run-{i}")),
        recreated_from: None,
        cost: None,
        created_at,
    });
    let ready_at = created_at + Duration::milliseconds(12 + (i % 9) as i64);
    s.reachability = Some(Reachability {
        address: "127.0.0.1".into(),
        details: [
            ("agent_version".to_string(), serde_json::json!("0.1.0")),
            ("pid".to_string(), serde_json::json!(pid)),
            ("venue".to_string(), serde_json::json!(venue)),
        ]
        .into(),
        ..Default::default()
    });
    s.telemetry = Some(serde_json::json!({
        "collected_at": (ready_at - Duration::milliseconds(3)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "cpus": 2,
        "disk_free_bytes": 77_272_858_624u64 - i * 4096,
        "disk_path": venue,
        "docker": {"present": true, "version": null},
        "host": "local",
        "kernel": "6.1.0-28-amd64",
        "load_1": (i % 400) as f64 / 100.0,
        "load_15": (i % 250) as f64 / 100.0,
        "load_5": (i % 300) as f64 / 100.0,
        "mem_available_bytes": 24_530_395_136u64 - (i % 1000) * 65_536,
        "mem_total_bytes": 25_276_514_304u64,
        "venues_running": 1 + i % 3,
    }));
    s.backend = serde_json::json!({
        "agent": "6bc28504984d0704",
        "pid": pid,
        "venue": venue,
    });
    s.apply(&Event::Ready, ready_at)?;
    let reason = match i % 10 {
        0..=6 => EndReason::Destroyed,
        7 | 8 => EndReason::Expired,
        _ => EndReason::Reaped,
    };
    let ended = created_at + Duration::seconds(600 + (i % 1200) as i64);
    s.apply(&Event::Destroy(reason), ended)?;
    s.apply(&Event::TornDown, ended + Duration::milliseconds(40))?;
    Ok(s)
}

/// Record `i` of `n`, created `(n - i) * 7` minutes before `now`, and its
/// idempotency key's entry when it carried one.
pub fn history_record(
    i: u64,
    n: u64,
    data_dir: &str,
    now: DateTime<Utc>,
) -> Result<(Sandbox, Option<IdempotencyEntry>)> {
    let created = now - Duration::minutes(((n - i) * 7) as i64);
    let s = canary_record(i, data_dir, created)?;
    let key = s.idempotency_key.as_ref().map(|_| IdempotencyEntry {
        request_hash: format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        sandbox_id: s.id.clone(),
    });
    Ok((s, key))
}

/// The data dir the records name in their venue paths: a user's default,
/// so record sizes do not depend on where a benchmark keeps its stores.
pub const RECORDED_DATA_DIR: &str = "/home/operator/.local/share/sandboxer";

/// Write a history of `n` ended records into the embedded database of
/// `data_dir`, then `live` ready ones (their agents are not running: they
/// stand for sandboxes on other hosts), through the store's own inserts,
/// in transactions of 10,000.
pub fn write_store(data_dir: &Path, n: u64, live: u64) -> Result<()> {
    let db = sandboxer_store::open(None, data_dir)
        .with_context(|| format!("opening the database in {}", data_dir.display()))?;
    write_records(db.as_ref(), n, live)
}

/// [`write_store`] into any database.
pub fn write_records(db: &dyn Db, n: u64, live: u64) -> Result<()> {
    let now = sandboxer_core::model::now();
    let mut i = 0;
    while i < n {
        let end = (i + 10_000).min(n);
        let batch: Vec<(Sandbox, Option<IdempotencyEntry>)> = (i..end)
            .map(|k| history_record(k, n, RECORDED_DATA_DIR, now))
            .collect::<Result<_>>()?;
        transact(db, |tx| {
            for (s, key) in &batch {
                tx.insert_sandbox(s)?;
                if let (Some(k), Some(e)) = (&s.idempotency_key, key) {
                    tx.put_idempotency(&s.actor, k, e)?;
                }
            }
            Ok(())
        })?;
        i = end;
    }
    let ready: Vec<Sandbox> = (0..live)
        .map(|k| {
            let mut s = new_canary(record_id(n + k));
            s.apply(&Event::Ready, now)?;
            Ok(s)
        })
        .collect::<Result<_>>()?;
    transact(db, |tx| {
        for s in &ready {
            tx.insert_sandbox(s)?;
        }
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_valid() {
        let ids: std::collections::BTreeSet<String> = (0..5000).map(record_id).collect();
        assert_eq!(ids.len(), 5000);
        assert!(ids.iter().all(|i| sandboxer_core::model::is_sandbox_id(i)));
    }

    #[test]
    fn records_are_about_a_kilobyte_and_ended() {
        let now = sandboxer_core::model::now();
        let mut keys = 0;
        for i in 0..100 {
            let (s, key) = history_record(i, 100, "/home/u/.local/share/sandboxer", now).unwrap();
            assert!(!s.is_live(), "{}", s.id);
            keys += usize::from(key.is_some());
            let len = serde_json::to_vec(&s).unwrap().len();
            assert!((900..1500).contains(&len), "{} bytes", len);
        }
        assert_eq!(keys, 25);
    }

    #[test]
    fn a_written_store_lists_its_live_records() {
        let dir = tempfile::tempdir().unwrap();
        write_store(dir.path(), 50, 3).unwrap();
        let db = sandboxer_store::open(None, dir.path()).unwrap();
        let q = sandboxer_core::store::db::ListQuery {
            filter: sandboxer_core::manager::ListFilter {
                live_only: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let page = sandboxer_core::store::db::read(db.as_ref(), |tx| tx.list(&q)).unwrap();
        assert_eq!(page.records.len(), 3);
        assert_eq!(
            sandboxer_core::store::db::read(db.as_ref(), |tx| tx.count()).unwrap(),
            53
        );
    }
}
