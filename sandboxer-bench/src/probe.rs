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

/// A fresh `load`, then what `sandboxer list --json` does with the records
/// (each through `render::record_json` into one `Value`, pretty-printed,
/// written to /dev/null), then the alternative of writing them straight
/// with `serde_json::to_writer_pretty` into a buffered /dev/null.
pub fn store_load(data_dir: &Path) -> Result<serde_json::Value> {
    let t = Instant::now();
    let doc = JsonFileStore::in_data_dir(data_dir).load()?;
    let load_ms = ms_since(t);

    let t = Instant::now();
    let value = serde_json::Value::Array(
        doc.sandboxes
            .all()?
            .map(sandboxer_cli::render::record_json)
            .collect(),
    );
    let to_value_ms = ms_since(t);
    let t = Instant::now();
    let text = serde_json::to_string_pretty(&value)?;
    let pretty_ms = ms_since(t);
    let t = Instant::now();
    let mut null = File::create("/dev/null")?;
    null.write_all(text.as_bytes())?;
    let write_ms = ms_since(t);
    drop((value, text));

    let t = Instant::now();
    let mut w = BufWriter::with_capacity(64 * 1024, File::create("/dev/null")?);
    serde_json::to_writer_pretty(&mut w, &doc.sandboxes)?;
    w.flush()?;
    let direct_ms = ms_since(t);
    Ok(json!({
        "records": doc.sandboxes.len(),
        "load_ms": load_ms,
        "to_value_ms": to_value_ms,
        "pretty_ms": pretty_ms,
        "write_ms": write_ms,
        "direct_pretty_ms": direct_ms,
    }))
}
