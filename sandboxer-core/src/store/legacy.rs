//! The sandbox store of release 0.1, read once to import it into the
//! database: `sandboxes.json` (one JSON document: the records, the
//! idempotency keys, the event outbox, the uploads) and, once that file had
//! grown, `sandboxes.json.journal` (one line per commit since the document
//! was last written, each holding what that commit changed).
//!
//! Only reading is left of that format. The rules it was written by:
//! - a journal line replaces the records it holds (or adds them), adds or
//!   removes keys and uploads, and replaces the whole outbox when it has one;
//! - a last line without its line break is a commit that never returned (a
//!   crash mid-append): it is dropped, as that release did;
//! - any other line, or a document, that does not parse, or of another
//!   schema version, is corruption: refused, and nothing is imported.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::IdempotencyEntry;
use crate::model::Sandbox;
use crate::uploads::UploadRecord;
use crate::{Error, ErrorKind, Result};

/// The store file of release 0.1 in the data dir.
pub const STORE_FILE: &str = "sandboxes.json";
/// Its journal.
pub const JOURNAL_FILE: &str = "sandboxes.json.journal";
/// The schema version that release wrote.
const VERSION: u32 = 1;

/// Everything a release 0.1 store held, records in the order they were
/// made.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LegacyStore {
    pub sandboxes: Vec<Sandbox>,
    /// By slot: `"ACTOR KEY"`, or a bare key from before keys were scoped.
    pub idempotency: BTreeMap<String, IdempotencyEntry>,
    /// Events not yet delivered, oldest first.
    pub outbox: Vec<serde_json::Value>,
    pub uploads: BTreeMap<String, UploadRecord>,
}

#[derive(Deserialize)]
struct Document {
    version: u32,
    #[serde(default)]
    sandboxes: Vec<Sandbox>,
    #[serde(default)]
    idempotency: BTreeMap<String, IdempotencyEntry>,
    #[serde(default)]
    outbox: Vec<serde_json::Value>,
    #[serde(default)]
    uploads: BTreeMap<String, UploadRecord>,
}

#[derive(Deserialize)]
struct JournalLine {
    version: u32,
    #[serde(default)]
    sandboxes: Vec<Sandbox>,
    #[serde(default)]
    idempotency: BTreeMap<String, IdempotencyEntry>,
    #[serde(default)]
    idempotency_removed: Vec<String>,
    #[serde(default)]
    outbox: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    uploads: BTreeMap<String, UploadRecord>,
    #[serde(default)]
    uploads_removed: Vec<String>,
}

#[derive(Deserialize)]
struct Versioned {
    version: u32,
}

/// The error of an import refused for a file of release 0.1 (`StoreCorrupt`,
/// exit 8): the file named, what is wrong, nothing imported.
pub fn refused(file: &Path, what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::StoreCorrupt,
        format!("{}: {what}; nothing was imported", file.display()),
    )
    .with_hint("the file is left as it is: repair or move it aside, then run the command again")
}

/// Parse `bytes` as a `T` of version 1, telling another version apart from
/// a shape that does not parse.
fn parse<'a, T: Deserialize<'a>>(
    file: &Path,
    where_: &str,
    bytes: &'a [u8],
    version: impl Fn(&T) -> u32,
) -> Result<T> {
    match serde_json::from_slice::<T>(bytes) {
        Ok(v) if version(&v) == VERSION => Ok(v),
        Ok(v) => Err(newer(file, version(&v))),
        Err(e) => Err(match serde_json::from_slice::<Versioned>(bytes) {
            Ok(v) if v.version != VERSION => newer(file, v.version),
            _ => refused(file, format!("{where_}does not parse: {e}")),
        }),
    }
}

fn newer(file: &Path, version: u32) -> Error {
    refused(
        file,
        format!("schema version {version}, which this build cannot import (it knows {VERSION})"),
    )
}

/// The release 0.1 store in `data_dir`, or `None` when there is none.
/// A journal without its `sandboxes.json` was left over from a store moved
/// aside, and is ignored as that release ignored it.
pub fn read(data_dir: &Path) -> Result<Option<LegacyStore>> {
    let path = data_dir.join(STORE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let doc: Document = parse(&path, "", &bytes, |d: &Document| d.version)?;
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut out = LegacyStore {
        sandboxes: Vec::with_capacity(doc.sandboxes.len()),
        idempotency: doc.idempotency,
        outbox: doc.outbox,
        uploads: doc.uploads,
    };
    let mut put = |out: &mut LegacyStore, s: Sandbox| match index.get(&s.id) {
        Some(&i) => out.sandboxes[i] = s,
        None => {
            index.insert(s.id.clone(), out.sandboxes.len());
            out.sandboxes.push(s);
        }
    };
    for s in doc.sandboxes {
        put(&mut out, s);
    }
    let journal = data_dir.join(JOURNAL_FILE);
    let text = match std::fs::read(&journal) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(format!("reading {}", journal.display()), e)),
    };
    for (i, line) in text.split_inclusive(|&b| b == b'\n').enumerate() {
        let Some(line) = line.strip_suffix(b"\n") else {
            tracing::info!(
                "{}: line {} has no line break (a commit that never returned); it is dropped",
                journal.display(),
                i + 1
            );
            break;
        };
        let entry: JournalLine = parse(
            &journal,
            &format!("line {} ", i + 1),
            line,
            |l: &JournalLine| l.version,
        )?;
        for s in entry.sandboxes {
            put(&mut out, s);
        }
        out.idempotency.extend(entry.idempotency);
        for k in entry.idempotency_removed {
            out.idempotency.remove(&k);
        }
        if let Some(outbox) = entry.outbox {
            out.outbox = outbox;
        }
        out.uploads.extend(entry.uploads);
        for k in entry.uploads_removed {
            out.uploads.remove(&k);
        }
    }
    Ok(Some(out))
}

/// The files of the store in `data_dir` that an import renames to
/// `*.imported` once it committed (those that exist).
pub fn files(data_dir: &Path) -> Vec<PathBuf> {
    [STORE_FILE, JOURNAL_FILE, "sandboxes.json.lock"]
        .iter()
        .map(|f| data_dir.join(f))
        .filter(|p| p.exists())
        .collect()
}

/// Write `store` into the database, in the caller's transaction: every
/// record, key, queued event and upload. A bare idempotency key (from
/// before keys were scoped) goes to the actor whose sandbox it made.
pub fn import(tx: &mut dyn super::db::Tx, store: &LegacyStore) -> Result<()> {
    let mut owner: HashMap<&str, &crate::model::Actor> = HashMap::new();
    for s in &store.sandboxes {
        tx.insert_sandbox(s)?;
        owner.insert(&s.id, &s.actor);
    }
    for (slot, entry) in &store.idempotency {
        let scoped = slot.split_once(' ').and_then(|(a, k)| {
            a.parse::<crate::model::Actor>()
                .ok()
                .map(|a| (a, k.to_string()))
        });
        let (actor, key) = match scoped {
            Some(x) => x,
            None => match owner.get(entry.sandbox_id.as_str()) {
                Some(a) => ((*a).clone(), slot.clone()),
                // A key whose sandbox is gone named nothing anyone can get.
                None => continue,
            },
        };
        tx.put_idempotency(&actor, &key, entry)?;
    }
    for ev in &store.outbox {
        let sid = ev.get("sandbox_id").and_then(|v| v.as_str()).unwrap_or("");
        tx.push_event(sid, ev)?;
    }
    for u in store.uploads.values() {
        tx.put_upload(u)?;
    }
    Ok(())
}
