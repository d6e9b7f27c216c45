//! `ledger.jsonl` of release 0.1, read once to import it into the database:
//! a header line (`{"version":1,...}`), then one JSON [`Entry`] per line in
//! the order they were applied.
//!
//! - A last line without its line break is an append that never returned
//!   (a crash mid-write): it is dropped, as that release dropped it.
//! - A *complete* line that does not parse is corruption: refused, and
//!   nothing is imported (that release took it for a torn line, and its next
//!   append cut the entry off for good).
//! - The entries are applied again under the ledger's rules; one the rules
//!   refuse had no effect on any balance then either, and is left out with a
//!   warning (`credits check` of that release listed it).

use std::path::{Path, PathBuf};

use sandboxer_core::store::db::Tx;
use sandboxer_core::store::legacy::refused;
use sandboxer_core::{Error, ErrorKind, Result};
use serde::Deserialize;

use crate::db::apply_in;
use crate::state::Entry;

/// The ledger file of release 0.1 in the data dir.
pub const FILE_NAME: &str = "ledger.jsonl";
const VERSION: u32 = 1;

#[derive(Deserialize)]
struct Header {
    version: u32,
}

/// The entries of `data_dir/ledger.jsonl`, or `None` when there is none.
pub fn read(data_dir: &Path) -> Result<Option<Vec<Entry>>> {
    let path = data_dir.join(FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let mut entries = Vec::new();
    for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let Some(line) = line.strip_suffix(b"\n") else {
            tracing::info!(
                "{}: line {} has no line break (an append that never returned); it is dropped",
                path.display(),
                i + 1
            );
            break;
        };
        if i == 0 {
            match serde_json::from_slice::<Header>(line) {
                Ok(h) if h.version == VERSION => continue,
                Ok(h) => {
                    return Err(refused(
                        &path,
                        format!(
                            "version {}, which this build cannot import (it knows {VERSION})",
                            h.version
                        ),
                    ))
                }
                Err(e) => {
                    return Err(refused(
                        &path,
                        format!("line 1 is not a ledger header: {e}"),
                    ))
                }
            }
        }
        let entry: Entry = serde_json::from_slice(line)
            .map_err(|e| refused(&path, format!("line {} does not parse: {e}", i + 1)))?;
        entries.push(entry);
    }
    Ok(Some(entries))
}

/// Apply `entries` in the caller's transaction, in order.
pub fn import(tx: &mut dyn Tx, entries: &[Entry]) -> Result<()> {
    for (i, e) in entries.iter().enumerate() {
        if let Err(err) = apply_in(tx, e) {
            if err.kind() == ErrorKind::Internal {
                return Err(err);
            }
            tracing::warn!(
                "ledger.jsonl line {}: entry `{}` is refused by the rules and left out: {}",
                i + 2,
                e.id,
                err.message()
            );
        }
    }
    Ok(())
}

/// The files of the ledger in `data_dir` that an import renames to
/// `*.imported` once it committed (those that exist).
pub fn files(data_dir: &Path) -> Vec<PathBuf> {
    [FILE_NAME, "ledger.lock"]
        .iter()
        .map(|f| data_dir.join(f))
        .filter(|p| p.exists())
        .collect()
}
