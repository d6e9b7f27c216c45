//! Moving in: the state files of release 0.1 (`sandboxes.json` and its
//! journal and `ledger.jsonl` in the data dir, `tokens.toml` in the config
//! dir) go into the database the first time a command opens it.
//!
//! - Everything is read first; a file that does not parse (a torn last line
//!   aside, which is dropped as that release dropped it) stops the import
//!   with `StoreCorrupt` (exit 8) before anything is written.
//! - Records, idempotency keys, queued events, uploads and ledger entries go
//!   in in one transaction: all or none.
//! - Only after the commit are the files renamed to `*.imported`; a crash
//!   between the two imports again on the next run, which finds every row in
//!   place and writes nothing twice (records equal to the stored ones are
//!   skipped, ledger entries are idempotent by id).

use std::path::{Path, PathBuf};

use sandboxer_core::store::db::{transact, Db, TokenRow};
use sandboxer_core::store::legacy;
use sandboxer_core::{Error, ErrorKind, Result};

/// What an import brought across.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    pub sandboxes: usize,
    pub keys: usize,
    pub events: usize,
    pub uploads: usize,
    pub ledger_entries: usize,
    pub tokens: usize,
}

/// `tokens.toml` of release 0.1 in the config dir.
pub const TOKENS_FILE: &str = "tokens.toml";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenLine>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenLine {
    name: String,
    actor: String,
    hash: String,
    created_at: String,
}

/// The tokens of `config_dir/tokens.toml`, each checked, or `None` when
/// there is no such file.
fn read_tokens(config_dir: &Path) -> Result<Option<Vec<TokenRow>>> {
    let path = config_dir.join(TOKENS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let file: TokensFile = toml::from_str(&text).map_err(|e| legacy::refused(&path, e))?;
    let mut rows = Vec::new();
    for (i, t) in file.tokens.into_iter().enumerate() {
        let which = format!("token {} (`{}`)", i + 1, t.name);
        let actor = t
            .actor
            .parse()
            .map_err(|e: Error| legacy::refused(&path, format!("{which}: {}", e.message())))?;
        if t.hash.len() != 64 || !t.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(legacy::refused(
                &path,
                format!("{which}: the hash is not 64 hex digits"),
            ));
        }
        let created_at = chrono::DateTime::parse_from_rfc3339(&t.created_at)
            .map_err(|e| legacy::refused(&path, format!("{which}: created_at: {e}")))?
            .with_timezone(&chrono::Utc);
        rows.push(TokenRow {
            name: t.name,
            actor,
            hash: t.hash.to_ascii_lowercase(),
            created_at,
        });
    }
    Ok(Some(rows))
}

/// Import the release 0.1 files of `data_dir` into `db`, if there are any;
/// `None` when there was nothing to import.
pub fn import_legacy(db: &dyn Db, data_dir: &Path, config_dir: &Path) -> Result<Option<Imported>> {
    let mut files: Vec<PathBuf> = legacy::files(data_dir);
    files.extend(sandboxer_credits::legacy::files(data_dir));
    files.extend(
        [TOKENS_FILE, "tokens.lock"]
            .iter()
            .map(|f| config_dir.join(f))
            .filter(|p| p.exists()),
    );
    if files.is_empty() {
        return Ok(None);
    }
    let store = legacy::read(data_dir)?;
    let entries = sandboxer_credits::legacy::read(data_dir)?;
    let tokens = read_tokens(config_dir)?;
    if let Some(entries) = &entries {
        let report = sandboxer_credits::check(&sandboxer_credits::LedgerState::replay(entries));
        for v in &report.violations {
            tracing::warn!("ledger.jsonl, before the import: {v}");
        }
    }
    let counts = transact(db, |tx| {
        let mut n = Imported::default();
        if let Some(store) = &store {
            let mut fresh = store.clone();
            // A second run after a crash before the renames: what is
            // already there stays as it is.
            let mut kept = Vec::new();
            for s in store.sandboxes.iter() {
                match tx.sandbox(&s.id)? {
                    None => kept.push(s.clone()),
                    Some(have) if &have == s => {}
                    Some(_) => {
                        return Err(Error::new(
                            ErrorKind::StoreCorrupt,
                            format!(
                                "{}: sandbox {} is already in {} with other contents; nothing was imported",
                                data_dir.join(legacy::STORE_FILE).display(),
                                s.id,
                                db.location()
                            ),
                        )
                        .with_hint("move the old files aside if the database is the one to keep"))
                    }
                }
            }
            let again = kept.len() < store.sandboxes.len();
            fresh.sandboxes = kept;
            if again {
                fresh.outbox.clear();
                fresh
                    .idempotency
                    .retain(|_, e| fresh.sandboxes.iter().any(|s| s.id == e.sandbox_id));
                fresh.uploads.clear();
            }
            legacy::import(tx, &fresh)?;
            n.sandboxes = fresh.sandboxes.len();
            n.keys = fresh.idempotency.len();
            n.events = fresh.outbox.len();
            n.uploads = fresh.uploads.len();
        }
        if let Some(entries) = &entries {
            sandboxer_credits::legacy::import(tx, entries)?;
            n.ledger_entries = entries.len();
        }
        for t in tokens.iter().flatten() {
            match tx.tokens()?.into_iter().find(|have| have.name == t.name) {
                Some(have) if have.hash == t.hash => continue,
                Some(_) => {
                    return Err(Error::new(
                        ErrorKind::StoreCorrupt,
                        format!(
                            "{}: a token named `{}` is already in {} with another secret; nothing was imported",
                            config_dir.join(TOKENS_FILE).display(),
                            t.name,
                            db.location()
                        ),
                    ))
                }
                None => tx.put_token(t)?,
            }
            n.tokens += 1;
        }
        Ok(n)
    })?;
    for f in files {
        let mut to = f.clone().into_os_string();
        to.push(".imported");
        std::fs::rename(&f, &to)
            .map_err(|e| Error::io(format!("renaming {} after the import", f.display()), e))?;
    }
    tracing::info!(
        "imported {} sandboxes, {} idempotency keys, {} queued events, {} uploads, {} ledger entries and {} tokens from {} into {}",
        counts.sandboxes,
        counts.keys,
        counts.events,
        counts.uploads,
        counts.ledger_entries,
        counts.tokens,
        data_dir.display(),
        db.location()
    );
    Ok(Some(counts))
}
