//! Bench-only subcommands, each one short process timing one thing from
//! inside, the way a CLI command meets the store: a new process, a new
//! `JsonFileStore`, nothing cached, a cold heap. Each prints one JSON
//! object of milliseconds on stdout.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use sandboxer_core::store::{JsonFileStore, Store, StoreDoc};
use serde_json::json;

use crate::records;

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The store commit of a create: a new store on `data_dir`, one `update`
/// that does what `Manager::start_create` does to the document (count the
/// live sandboxes per host, draw an id that is not taken, push the new
/// record in `provisioning`). Prints `{"commit_ms": ...}`.
pub fn store_commit(data_dir: &Path) -> Result<serde_json::Value> {
    let t = Instant::now();
    let store = JsonFileStore::in_data_dir(data_dir);
    store.update(&mut |doc| {
        start_create(doc);
        Ok(())
    })?;
    Ok(json!({ "commit_ms": ms_since(t) }))
}

fn start_create(doc: &mut StoreDoc) {
    let live = doc
        .sandboxes
        .heads()
        .filter(|h| !h.is_terminal() && h.host() == "local")
        .count();
    let mut id = sandboxer_core::model::new_sandbox_id();
    while doc.sandboxes.contains(&id) {
        id = sandboxer_core::model::new_sandbox_id();
    }
    std::hint::black_box(live);
    doc.sandboxes
        .push(records::new_canary(id))
        .expect("a fresh id");
}

/// The same commit done the plain way, as a baseline: read the whole file,
/// `serde_json::from_slice`, change, `serde_json::to_vec`, write a temp
/// file, fsync, rename, fsync the folder (no lock, no checks). `file` is a
/// copy of the store, so the store under test keeps its layout.
pub fn naive_commit(file: &Path) -> Result<serde_json::Value> {
    let t = Instant::now();
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let mut doc: StoreDoc = serde_json::from_slice(&bytes)?;
    start_create(&mut doc);
    let out = serde_json::to_vec(&doc)?;
    let tmp = file.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&out)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()?;
    Ok(json!({ "commit_ms": ms_since(t) }))
}

/// A fresh `load`, then what `sandboxer list --json` does with the
/// records when piped (each selected record's public JSON from its stored
/// line), then what parsing every record costs (a checkpoint, or a command
/// that reads them all).
pub fn store_load(data_dir: &Path) -> Result<serde_json::Value> {
    let t = Instant::now();
    let doc = JsonFileStore::in_data_dir(data_dir).load()?;
    let load_ms = ms_since(t);

    let t = Instant::now();
    let lines = doc
        .sandboxes
        .public_json(|_| true, sandboxer_core::store::store_threads())?;
    let public_ms = ms_since(t);
    let t = Instant::now();
    let mut w = BufWriter::with_capacity(64 * 1024, File::create("/dev/null")?);
    for l in &lines {
        w.write_all(l)?;
        w.write_all(b",\n")?;
    }
    w.flush()?;
    let write_ms = ms_since(t);
    drop(lines);

    let t = Instant::now();
    let parsed = doc.sandboxes.all()?.count();
    let parse_all_ms = ms_since(t);
    Ok(json!({
        "records": parsed,
        "load_ms": load_ms,
        "public_ms": public_ms,
        "write_ms": write_ms,
        "parse_all_ms": parse_all_ms,
    }))
}

/// The same create commit as [`store_commit`], on a store that must write
/// the whole file (a checkpoint: every record parsed, the file rewritten,
/// the journal emptied). Prints `{"commit_ms": ...}`.
pub fn store_checkpoint(data_dir: &Path) -> Result<serde_json::Value> {
    let t = Instant::now();
    let store = JsonFileStore::in_data_dir(data_dir).with_journal_from(u64::MAX);
    store.update(&mut |doc| {
        start_create(doc);
        Ok(())
    })?;
    Ok(json!({ "commit_ms": ms_since(t) }))
}

/// Fill the journal with commits that each change 20 records (their
/// `updated_at`), until it holds `fraction` of the room it may take before
/// a checkpoint. Prints the journal's size and line count.
pub fn fill_journal(data_dir: &Path, fraction: f64) -> Result<serde_json::Value> {
    let store = JsonFileStore::in_data_dir(data_dir);
    let file = std::fs::metadata(store.path())?.len();
    let room = JsonFileStore::journal_room(file) as f64;
    let journal = |s: &JsonFileStore| std::fs::metadata(s.journal_path()).map_or(0, |m| m.len());
    let ids: Vec<String> = store
        .load()?
        .sandboxes
        .heads()
        .map(|h| h.id().to_string())
        .collect();
    let mut next = 0;
    while (journal(&store) as f64) < room * fraction {
        store.update(&mut |doc| {
            for _ in 0..20 {
                let id = &ids[next % ids.len()];
                next += 1;
                doc.require_mut(id)?.updated_at = sandboxer_core::model::now();
            }
            Ok(())
        })?;
    }
    let bytes = journal(&store);
    let lines = std::fs::read(store.journal_path())
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0);
    Ok(json!({ "journal_bytes": bytes, "journal_lines": lines, "room": room }))
}
