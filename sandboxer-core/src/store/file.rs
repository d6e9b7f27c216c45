//! [`JsonFileStore`]: the store as one JSON document, `sandboxes.json` in
//! the data dir, and, once that file is large, a journal of the commits
//! since it was last written, `sandboxes.json.journal`. Concurrent CLI
//! processes and the HTTP server share both.
//!
//! - `update` holds an exclusive lock (`flock`, through [`File::lock`]) on
//!   the separate file `sandboxes.json.lock` for the whole read-modify-write.
//!   The lock is never taken on the data file, which is replaced by rename.
//!   Each `update` opens the lock file anew, so threads of one process
//!   exclude each other as well as processes do. (The `test-no-lock`
//!   feature drops the lock; it exists only to show that the concurrency
//!   tests catch lost updates, and is never on by default.)
//! - **Checkpoint**: the whole document goes to a temp file in the same
//!   folder (`.sandboxes.json.tmp.PID.RANDOM`), is fsynced, renamed over
//!   `sandboxes.json`, and the folder is fsynced; then the journal, if
//!   any, is truncated. A temp file left by a crash is never read, and is
//!   removed by the next checkpoint.
//! - **Journal**: while `sandboxes.json` is smaller than 1 MiB (about 700
//!   records) every commit is a checkpoint, so the file is always the whole
//!   store. From 1 MiB on, a commit appends one line to the journal instead
//!   (the records it changed, whole; the idempotency keys it added; the
//!   outbox, whole, if it changed) and fdatasyncs it: a few milliseconds
//!   whatever the size of the store, where rewriting 13 MB costs 40-60 ms
//!   of disk time alone. When the journal outgrows a quarter of
//!   `sandboxes.json` (at least 256 KiB), the next commit is a checkpoint.
//!   `SANDBOXER_STORE_JOURNAL_FROM` (bytes) moves the 1 MiB mark; 0
//!   journals every commit of an existing store.
//! - Replaying a journal line sets records, keys and the outbox to what the
//!   line holds. A checkpoint that finds lines in the journal appends its
//!   own commit there first, so the new `sandboxes.json` is exactly the old
//!   one plus every journal line: if a crash comes between its rename and
//!   the truncation of the journal, replaying the journal over the new file
//!   ends where the file is, and nothing is lost or taken back. A last line without its line break is a commit that never
//!   returned (a crash mid-append); readers ignore it and the next commit
//!   cuts it off. Any other line that does not parse is `StoreCorrupt`.
//!   A journal without a `sandboxes.json` is left over from a store that
//!   was moved aside, and is ignored (the next commit empties it).
//! - `load` takes no lock: the rename is atomic and the journal only grows
//!   between checkpoints. It reads `sandboxes.json`, then the journal, then
//!   checks that `sandboxes.json` is still the file it read; if a
//!   checkpoint came in between, it reads again (and after a few tries, or
//!   if anything looks wrong, once more under the lock).
//! - A document or journal line that does not parse, or of another schema
//!   version, is refused and never overwritten.
//!
//! Records are read lazily ([`super::Records`]): a load finds each
//! record's line and reads its first fields (id, state, host, actor,
//! profile) without parsing the rest, so a command that reads or changes a
//! few records does not pay for parsing all of them. A checkpoint parses
//! every record that is not parsed yet (on the CPUs that are idle, up to
//! 4), so a record that no longer parses stops it before anything is
//! written.
//!
//! The file is compact JSON with a line break before each top-level field
//! and each element of a top-level list or map, so each record sits on one
//! line: readable with `grep`, diffable, and what the lazy load splits at.
//! A file in another layout (written by hand) is parsed whole, and the next
//! commit writes it in this layout. `docs/benchmarks.md` has the figures.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::buf::Buf;
use super::records::{Origin, Stored};
use super::{IdempotencyEntry, Store, StoreDoc, SCHEMA_VERSION};
use crate::uploads::UploadRecord;
use crate::{Error, ErrorKind, Result};

/// The store's file name in the data dir.
const FILE_NAME: &str = "sandboxes.json";

/// From this size of `sandboxes.json` on, commits go to the journal.
pub const JOURNAL_FROM_DEFAULT: u64 = 1024 * 1024;

/// The journal may grow to this much, or a quarter of `sandboxes.json` if
/// that is more, before a commit checkpoints.
const JOURNAL_ROOM_MIN: u64 = 256 * 1024;

/// The sandbox store in one JSON file and its journal. See the module docs
/// for the locking and write protocol.
///
/// ```
/// use sandboxer_core::store::{JsonFileStore, Store};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = JsonFileStore::in_data_dir(dir.path());
/// store
///     .update(&mut |doc| {
///         doc.outbox.push(serde_json::json!({"event": "example"}));
///         Ok(())
///     })
///     .unwrap();
/// assert_eq!(store.load().unwrap().outbox.len(), 1);
/// ```
pub struct JsonFileStore {
    path: Arc<Path>,
    lock_path: PathBuf,
    journal_path: Arc<Path>,
    journal_from: u64,
    /// Tests: stop a checkpoint after its rename, as a crash would.
    #[cfg(test)]
    crash_before_truncate: bool,
}

impl std::fmt::Debug for JsonFileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonFileStore")
            .field("path", &self.path)
            .field("journal_from", &self.journal_from)
            .finish_non_exhaustive()
    }
}

/// The bytes of a checkpoint, written where they lie.
#[derive(Debug, Default)]
struct Pieces(Vec<Vec<u8>>);

/// What a read found besides the document.
struct Loaded {
    doc: StoreDoc,
    /// `sandboxes.json`: its size and inode, `None` when there is none.
    snapshot: Option<(u64, u64)>,
    /// In the layout this build writes (else the next commit checkpoints).
    layout_ok: bool,
    journal: JournalState,
}

/// What a read found of the journal.
#[derive(Debug, Clone, Copy, Default)]
struct JournalState {
    /// Its bytes up to its last complete line, and whether more (a torn
    /// last line) follows.
    journal_len: u64,
    journal_torn: bool,
    journal_exists: bool,
}

impl JsonFileStore {
    /// The store in the file `path` (normally `DATA_DIR/sandboxes.json`).
    /// `SANDBOXER_STORE_JOURNAL_FROM` sets where journaling starts.
    pub fn new(path: PathBuf) -> Self {
        let name = path.file_name().unwrap_or_default().to_os_string();
        let with_suffix = |suffix: &str| {
            let mut n = name.clone();
            n.push(suffix);
            path.with_file_name(n)
        };
        let lock_path = with_suffix(".lock");
        let journal_path: Arc<Path> = Arc::from(with_suffix(".journal"));
        let journal_from = match std::env::var("SANDBOXER_STORE_JOURNAL_FROM") {
            Ok(v) => v.trim().parse().unwrap_or_else(|_| {
                tracing::warn!(
                    "SANDBOXER_STORE_JOURNAL_FROM={v:?} is not a number of bytes; using {}",
                    JOURNAL_FROM_DEFAULT
                );
                JOURNAL_FROM_DEFAULT
            }),
            Err(_) => JOURNAL_FROM_DEFAULT,
        };
        JsonFileStore {
            path: Arc::from(path),
            lock_path,
            journal_path,
            journal_from,
            #[cfg(test)]
            crash_before_truncate: false,
        }
    }

    /// The store in `dir/sandboxes.json`.
    pub fn in_data_dir(dir: &Path) -> Self {
        Self::new(dir.join(FILE_NAME))
    }

    /// Journal commits once `sandboxes.json` has `bytes` bytes (0: always).
    pub fn with_journal_from(mut self, bytes: u64) -> Self {
        self.journal_from = bytes;
        self
    }

    /// The bytes the journal may grow to over a `sandboxes.json` of
    /// `file_len` bytes before a commit checkpoints.
    pub fn journal_room(file_len: u64) -> u64 {
        (file_len / 4).max(JOURNAL_ROOM_MIN)
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file `update` locks: `sandboxes.json.lock` beside the data file.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// The journal: `sandboxes.json.journal` beside the data file.
    pub fn journal_path(&self) -> &Path {
        &self.journal_path
    }

    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// Temp files are named `PREFIX PID . 16-HEX`; see [`is_temp_name`].
    fn temp_prefix(&self) -> String {
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        format!(".{name}.tmp.")
    }

    /// Read `sandboxes.json` and the journal into a document.
    fn read(&self) -> Result<Loaded> {
        let (snapshot, layout_ok, mut doc) = match File::open(&self.path) {
            Ok(mut f) => {
                let meta = f
                    .metadata()
                    .map_err(|e| Error::io(format!("reading {}", self.path.display()), e))?;
                let buf = Buf::of_file(&mut f, meta.len())
                    .map_err(|e| Error::io(format!("reading {}", self.path.display()), e))?;
                let len = buf.bytes().len() as u64;
                let (doc, layout_ok) = self.parse_snapshot(buf)?;
                (Some((len, inode(&meta))), layout_ok, doc)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, true, StoreDoc::default()),
            Err(e) => return Err(Error::io(format!("reading {}", self.path.display()), e)),
        };
        let mut loaded = Loaded {
            doc: StoreDoc::default(),
            snapshot,
            layout_ok,
            journal: JournalState::default(),
        };
        let journal = match fs::read(&self.journal_path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(Error::io(
                    format!("reading {}", self.journal_path.display()),
                    e,
                ))
            }
        };
        if let Some(mut bytes) = journal {
            let good = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            loaded.journal = JournalState {
                journal_len: good as u64,
                journal_torn: good < bytes.len(),
                journal_exists: true,
            };
            bytes.truncate(good);
            // A journal without the file it follows is left over; see the
            // module docs.
            if snapshot.is_some() && good > 0 {
                self.replay(&mut doc, bytes)?;
            }
        }
        doc.sandboxes.lineage = rand::random::<u64>() | 1;
        loaded.doc = doc;
        Ok(loaded)
    }

    /// The document in `buf` (the contents of `sandboxes.json`), and
    /// whether it is in the layout this build writes.
    fn parse_snapshot(&self, buf: Buf) -> Result<(StoreDoc, bool)> {
        let buf = Arc::new(buf);
        let bytes = buf.bytes();
        let Some((ranges, rest)) = split_layout(bytes) else {
            return Ok((self.parse_whole(bytes)?, false));
        };
        match serde_json::from_slice::<StoreDoc>(&rest) {
            Ok(mut doc) if doc.version == SCHEMA_VERSION && doc.sandboxes.is_empty() => {
                doc.sandboxes.reserve(ranges.len());
                for (range, line) in ranges {
                    let origin = Origin {
                        file: self.path.clone(),
                        line,
                    };
                    let buf = buf.clone();
                    doc.sandboxes
                        .put_stored(Stored { buf, range, origin }, false)?;
                }
                Ok((doc, true))
            }
            _ => Ok((self.parse_whole(bytes)?, false)),
        }
    }

    /// One `serde_json` parse of the whole file: for a file in another
    /// layout, and for every error.
    fn parse_whole(&self, bytes: &[u8]) -> Result<StoreDoc> {
        match serde_json::from_slice::<StoreDoc>(bytes) {
            Ok(doc) if doc.version == SCHEMA_VERSION => Ok(doc),
            Ok(doc) => Err(self.wrong_version(&self.path, doc.version)),
            // Only now the version alone, so that a newer schema is reported
            // as such and not as whatever parse error its new shape causes.
            Err(full) => match serde_json::from_slice::<Versioned>(bytes) {
                Err(e) => Err(self.unparsable(&self.path, e)),
                Ok(Versioned { version }) if version != SCHEMA_VERSION => {
                    Err(self.wrong_version(&self.path, version))
                }
                Ok(_) => Err(self.unparsable(&self.path, full)),
            },
        }
    }

    /// Apply the journal's complete lines to `doc`.
    fn replay(&self, doc: &mut StoreDoc, bytes: Vec<u8>) -> Result<()> {
        let buf = Arc::new(Buf::Heap(bytes));
        let text = buf.bytes();
        let mut at = 0;
        for (i, line) in text.split_inclusive(|&b| b == b'\n').enumerate() {
            let lineno = i + 1;
            let start = at;
            at += line.len();
            let entry: JournalEntry<'_> = match serde_json::from_slice(line) {
                Ok(entry) => entry,
                Err(e) => {
                    return Err(match serde_json::from_slice::<Versioned>(line) {
                        Ok(v) if v.version != SCHEMA_VERSION => {
                            self.wrong_version(&self.journal_path, v.version)
                        }
                        _ => self.corrupt_journal(
                            lineno,
                            &format!("column {}: {}", e.column(), without_position(&e)),
                        ),
                    });
                }
            };
            if entry.version != SCHEMA_VERSION {
                return Err(self.wrong_version(&self.journal_path, entry.version));
            }
            for raw in entry.sandboxes {
                let offset = raw.get().as_ptr() as usize - text.as_ptr() as usize;
                debug_assert!(offset >= start && offset < at);
                doc.sandboxes.put_stored(
                    Stored {
                        buf: buf.clone(),
                        range: offset..offset + raw.get().len(),
                        origin: Origin {
                            file: self.journal_path.clone(),
                            line: lineno,
                        },
                    },
                    true,
                )?;
            }
            doc.idempotency.extend(entry.idempotency);
            for k in entry.idempotency_removed {
                doc.idempotency.remove(&k);
            }
            if let Some(outbox) = entry.outbox {
                doc.outbox = outbox;
            }
            doc.uploads.extend(entry.uploads);
            for k in entry.uploads_removed {
                doc.uploads.remove(&k);
            }
        }
        Ok(())
    }

    fn unparsable(&self, file: &Path, e: serde_json::Error) -> Error {
        let what = without_position(&e);
        Error::new(
            ErrorKind::StoreCorrupt,
            format!(
                "the sandbox store {} does not parse (line {}, column {}): {what}",
                file.display(),
                e.line(),
                e.column(),
            ),
        )
        .with_hint(format!(
            "sandboxer will not overwrite it. Repair it by hand, or move it aside to start \
             an empty store: {} (sandboxer then forgets the sandboxes it lists; they are \
             not torn down)",
            move_aside_command(&self.path, "corrupt"),
        ))
        .with_source(e)
    }

    fn corrupt_journal(&self, line: usize, what: &str) -> Error {
        Error::new(
            ErrorKind::StoreCorrupt,
            format!(
                "the sandbox store's journal {} does not parse (line {line}, {what})",
                self.journal_path.display(),
            ),
        )
        .with_hint(format!(
            "sandboxer will not overwrite it. Repair that line by hand, or move the journal \
             aside to go back to the store as `{}` holds it: {} (the changes recorded in \
             the journal are then forgotten; no sandbox is torn down)",
            self.path.display(),
            move_aside_command(&self.journal_path, "corrupt"),
        ))
    }

    fn wrong_version(&self, file: &Path, found: u32) -> Error {
        let writer = if found > SCHEMA_VERSION {
            "a newer"
        } else {
            "an older"
        };
        Error::new(
            ErrorKind::StoreCorrupt,
            format!(
                "the sandbox store {} has schema version {found}; this build of sandboxer \
                 reads version {SCHEMA_VERSION}",
                file.display(),
            ),
        )
        .with_hint(format!(
            "it was written by {writer} sandboxer, and this one will not overwrite it. Use a \
             sandboxer that reads version {found}, or move the file aside to start an empty \
             store: {}",
            move_aside_command(file, &format!("v{found}")),
        ))
    }

    /// The exclusive lock on the lock file, held until the file is dropped.
    /// `None` under the `test-no-lock` feature, which exists only to show
    /// that the concurrency tests catch lost updates.
    fn lock(&self) -> Result<Option<File>> {
        if cfg!(feature = "test-no-lock") {
            return Ok(None);
        }
        let file = private_file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.lock_path)
            .map_err(|e| Error::io(format!("opening {}", self.lock_path.display()), e))?;
        loop {
            match file.lock() {
                Ok(()) => return Ok(Some(file)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::io(
                        format!("locking {}", self.lock_path.display()),
                        e,
                    ))
                }
            }
        }
    }

    fn create_dir(&self) -> Result<()> {
        let dir = self.dir();
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))
    }

    fn sync_dir(&self) -> Result<()> {
        let dir = self.dir();
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))
    }

    /// Write the whole document: temp file, fsync, rename, fsync of the
    /// folder; then empty the journal.
    fn checkpoint(&self, doc: &StoreDoc, journal_exists: bool) -> Result<()> {
        let bytes = serialize(doc, store_threads())?;
        let dir = self.dir();
        let tmp = dir.join(format!(
            "{}{}.{:016x}",
            self.temp_prefix(),
            std::process::id(),
            rand::random::<u64>(),
        ));
        if let Err(e) = write_synced(&tmp, &bytes) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(format!("writing {}", tmp.display()), e));
        }
        if let Err(e) = fs::rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(
                format!("renaming {} to {}", tmp.display(), self.path.display()),
                e,
            ));
        }
        self.sync_dir()?;
        #[cfg(test)]
        if self.crash_before_truncate {
            return Ok(());
        }
        if journal_exists {
            // Everything in it is in the file just written, the commit
            // being made included (see `update`); replaying it again would
            // change nothing, so a crash before this loses nothing.
            self.empty_journal()?;
        }
        Ok(())
    }

    fn empty_journal(&self) -> Result<()> {
        OpenOptions::new()
            .write(true)
            .open(&self.journal_path)
            .and_then(|f| {
                f.set_len(0)?;
                f.sync_all()
            })
            .map_err(|e| Error::io(format!("emptying {}", self.journal_path.display()), e))
    }

    /// Append one line to the journal and fdatasync it, first cutting off
    /// a torn last line a crash left.
    fn append(&self, line: &[u8], loaded: &JournalState) -> Result<()> {
        let io_err = |e| Error::io(format!("writing {}", self.journal_path.display()), e);
        let file = private_file_options()
            .append(true)
            .create(true)
            .open(&self.journal_path)
            .map_err(io_err)?;
        if loaded.journal_torn {
            file.set_len(loaded.journal_len).map_err(io_err)?;
        }
        (&file).write_all(line).map_err(io_err)?;
        file.sync_data().map_err(io_err)?;
        if !loaded.journal_exists {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Remove temp files a crashed writer left. Only called under the lock,
    /// where no other writer can have one in flight.
    fn remove_stale_temps(&self) {
        let prefix = self.temp_prefix();
        let Ok(entries) = fs::read_dir(self.dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| is_temp_name(n, &prefix)) {
                let path = entry.path();
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!("could not remove stale temp file {}: {e}", path.display());
                }
            }
        }
    }

    /// Whether `sandboxes.json` is still the file `read` read.
    fn unchanged_since(&self, loaded: &Loaded) -> bool {
        let now = match fs::metadata(&self.path) {
            Ok(m) => Some(inode(&m)),
            Err(_) => None,
        };
        now == loaded.snapshot.map(|(_, ino)| ino)
    }
}

#[cfg(unix)]
fn inode(meta: &fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(meta: &fs::Metadata) -> u64 {
    meta.len()
}

/// Just the schema version of a document or journal line, read when the
/// whole does not parse: another version is reported as such, not as the
/// parse error its shape causes.
#[derive(Deserialize)]
struct Versioned {
    version: u32,
}

/// A parse error's message without the ` at line L column C` that
/// `serde_json` appends (the callers say where in their own terms).
fn without_position(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&position) {
        Some(what) => what.to_string(),
        None => full,
    }
}

/// One line of the journal: what one commit changed.
#[derive(Deserialize)]
struct JournalEntry<'a> {
    version: u32,
    /// Records, whole, each replacing the record of its id (or added).
    #[serde(borrow, default)]
    sandboxes: Vec<&'a serde_json::value::RawValue>,
    /// Keys added or changed.
    #[serde(default)]
    idempotency: BTreeMap<String, IdempotencyEntry>,
    /// Keys removed.
    #[serde(default)]
    idempotency_removed: Vec<String>,
    /// The whole outbox, when it changed.
    #[serde(default)]
    outbox: Option<Vec<serde_json::Value>>,
    /// Uploads added or changed.
    #[serde(default)]
    uploads: BTreeMap<String, UploadRecord>,
    /// Uploads removed.
    #[serde(default)]
    uploads_removed: Vec<String>,
}

impl Store for JsonFileStore {
    fn load(&self) -> Result<StoreDoc> {
        for _ in 0..3 {
            match self.read() {
                Ok(loaded) if self.unchanged_since(&loaded) => return Ok(loaded.doc),
                // A checkpoint came in between: read again.
                Ok(_) => continue,
                // Perhaps a writer's half-done work; the lock decides.
                Err(_) => break,
            }
        }
        let _lock = self.lock()?;
        self.read().map(|l| l.doc)
    }

    fn update(&self, f: &mut dyn FnMut(&mut StoreDoc) -> Result<()>) -> Result<()> {
        self.create_dir()?;
        let lock = self.lock()?;
        let Loaded {
            mut doc,
            snapshot,
            layout_ok,
            journal: js,
        } = self.read()?;
        let lineage = doc.sandboxes.lineage;
        let idempotency_before = doc.idempotency.clone();
        let outbox_before = doc.outbox.clone();
        let uploads_before = doc.uploads.clone();
        f(&mut doc)?;
        if doc.version != SCHEMA_VERSION {
            return Err(Error::internal(format!(
                "an update set the store's schema version to {}; this build writes {SCHEMA_VERSION}",
                doc.version
            )));
        }
        let records = doc.sandboxes.changed()?;
        let keys = Changes::between(&idempotency_before, &doc.idempotency);
        let outbox_changed = doc.outbox != outbox_before;
        let uploads = Changes::between(&uploads_before, &doc.uploads);
        if records.is_empty() && keys.is_empty() && !outbox_changed && uploads.is_empty() {
            return Ok(());
        }
        let line = journal_line(
            &records,
            &keys,
            outbox_changed.then_some(&doc.outbox),
            &uploads,
        )?;
        let replaced = doc.sandboxes.lineage != lineage;
        let journal = match snapshot {
            Some((len, _)) if layout_ok && !replaced && len >= self.journal_from => {
                js.journal_len + line.len() as u64 <= Self::journal_room(len)
            }
            _ => false,
        };
        if journal {
            return self.append(&line, &js);
        }
        // A checkpoint. The journal must not be able to take anything back
        // if a crash comes after the rename and before it is emptied, so:
        if snapshot.is_none() {
            // left over from a file moved aside: empty it first;
            if js.journal_exists {
                self.empty_journal()?;
            }
        } else if js.journal_len > 0 && !replaced {
            // else this commit goes into it too, so that replaying it over
            // the new file ends where the file is;
            self.append(&line, &js)?;
        } else if js.journal_len > 0 {
            // unless the records were replaced wholesale (some may be gone,
            // which a line cannot say): then the journal is first folded
            // into a checkpoint of the store as it is on disk now.
            let before = self.read()?;
            self.checkpoint(&before.doc, true)?;
        }
        self.checkpoint(&doc, js.journal_exists)?;
        if lock.is_some() {
            self.remove_stale_temps();
        }
        Ok(())
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

/// What a commit changed in a map of the document: entries added or
/// changed, and keys removed.
struct Changes<'a, V> {
    set: BTreeMap<&'a String, &'a V>,
    removed: Vec<&'a String>,
}

impl<'a, V: PartialEq> Changes<'a, V> {
    fn between(before: &'a BTreeMap<String, V>, after: &'a BTreeMap<String, V>) -> Self {
        Changes {
            set: after
                .iter()
                .filter(|(k, v)| before.get(*k) != Some(*v))
                .collect(),
            removed: before.keys().filter(|k| !after.contains_key(*k)).collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty() && self.removed.is_empty()
    }
}

impl<V: Serialize> Changes<'_, V> {
    /// The journal fields `NAME` (set) and `NAME_removed`, each only when
    /// not empty.
    fn write(&self, out: &mut Vec<u8>, name: &str) -> Result<()> {
        if !self.set.is_empty() {
            write!(out, ",\"{name}\":").expect("writing to memory");
            serde_json::to_writer(&mut *out, &self.set).map_err(serialize_error)?;
        }
        if !self.removed.is_empty() {
            write!(out, ",\"{name}_removed\":").expect("writing to memory");
            serde_json::to_writer(&mut *out, &self.removed).map_err(serialize_error)?;
        }
        Ok(())
    }
}

/// The journal line for one commit.
fn journal_line(
    records: &[String],
    keys: &Changes<'_, IdempotencyEntry>,
    outbox: Option<&Vec<serde_json::Value>>,
    uploads: &Changes<'_, UploadRecord>,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(records.iter().map(String::len).sum::<usize>() + 256);
    write!(out, "{{\"version\":{SCHEMA_VERSION},\"sandboxes\":[").expect("writing to memory");
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(r.as_bytes());
    }
    out.extend_from_slice(b"]");
    keys.write(&mut out, "idempotency")?;
    if let Some(outbox) = outbox {
        out.extend_from_slice(b",\"outbox\":");
        serde_json::to_writer(&mut out, outbox).map_err(serialize_error)?;
    }
    uploads.write(&mut out, "uploads")?;
    out.extend_from_slice(b"}\n");
    Ok(out)
}

/// Whether `name` is one of our temp files: `PREFIX`, decimal pid, `.`, 16
/// hex digits.
fn is_temp_name(name: &str, prefix: &str) -> bool {
    let Some((pid, random)) = name.strip_prefix(prefix).and_then(|r| r.split_once('.')) else {
        return false;
    };
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && random.len() == 16
        && random.bytes().all(|b| b.is_ascii_hexdigit())
}

fn private_file_options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

fn write_synced(path: &Path, bytes: &Pieces) -> io::Result<()> {
    let mut file = private_file_options()
        .write(true)
        .create_new(true)
        .open(path)?;
    for piece in &bytes.0 {
        file.write_all(piece)?;
    }
    file.sync_all()
}

/// The threads a checkpoint parses records on (and `list --json` splits
/// its records over): the CPUs this process may use (at most 4), less
/// those other tasks keep busy right now.
///
/// A helper thread only pays off on a CPU that would otherwise idle.
pub fn store_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if cpus < 2 {
        return 1;
    }
    match runnable_tasks() {
        // This thread is one of them.
        Some(n) => cpus.saturating_sub(n.saturating_sub(1)).max(1),
        None => cpus,
    }
}

/// The tasks running or ready to run on this machine right now: the
/// numerator of the fourth field of `/proc/loadavg` (`3/412`).
fn runnable_tasks() -> Option<usize> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace()
        .nth(3)?
        .split_once('/')?
        .0
        .parse()
        .ok()
}

/// The start of the file [`serialize`] writes, up to the `[` that opens the
/// records.
fn layout_head() -> String {
    format!("{{\n\"version\":{SCHEMA_VERSION},\n\"sandboxes\":[")
}

/// Split a file in the layout [`serialize`] writes: the byte range and line
/// number of each record, and the document with the records cut out
/// (`{"version":1,"sandboxes":[` and everything from the `]` on). `None`
/// when the file is not in that layout. Only the lines are found here; each
/// record is parsed when it is read (and all of them at a checkpoint).
fn split_layout(b: &[u8]) -> Option<(Vec<RecordLine>, Vec<u8>)> {
    let head = layout_head();
    if !b.starts_with(head.as_bytes()) {
        return None;
    }
    let mut pos = head.len();
    let mut records = Vec::with_capacity(b.len() / 1024);
    // Line 3 is `"sandboxes":[`.
    let mut line = 4;
    let close = if b.get(pos) == Some(&b']') {
        pos
    } else {
        if b.get(pos) != Some(&b'\n') {
            return None;
        }
        pos += 1;
        loop {
            let nl = pos + memchr::memchr(b'\n', &b[pos..])?;
            let l = &b[pos..nl];
            if l.first() != Some(&b'{') {
                return None;
            }
            let (end, last) = if l.ends_with(b"},") {
                (nl - 1, false)
            } else if l.ends_with(b"}") {
                (nl, true)
            } else {
                return None;
            };
            records.push((pos..end, line));
            line += 1;
            pos = nl + 1;
            if last {
                if b.get(pos) != Some(&b']') {
                    return None;
                }
                break pos;
            }
        }
    };
    let mut rest = Vec::with_capacity(head.len() + b.len() - close);
    rest.extend_from_slice(head.as_bytes());
    rest.extend_from_slice(&b[close..]);
    Some((records, rest))
}

/// A record's byte range in the file, and its line number.
type RecordLine = (std::ops::Range<usize>, usize);

/// The whole file for `doc`, in the layout [`LineFormatter`] writes. Every
/// record not parsed yet is parsed first (`threads`), so one that does not
/// parse stops the checkpoint.
fn serialize(doc: &StoreDoc, threads: usize) -> Result<Pieces> {
    doc.sandboxes.parse_all(threads)?;
    #[derive(Serialize)]
    struct Shell<'a> {
        version: u32,
        sandboxes: [(); 0],
        idempotency: &'a BTreeMap<String, IdempotencyEntry>,
        outbox: &'a Vec<serde_json::Value>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        uploads: &'a BTreeMap<String, UploadRecord>,
    }
    let shell = serialize_sequential(&Shell {
        version: doc.version,
        sandboxes: [],
        idempotency: &doc.idempotency,
        outbox: &doc.outbox,
        uploads: &doc.uploads,
    })?;
    if doc.sandboxes.is_empty() {
        return Ok(Pieces(vec![shell]));
    }
    // In the layout, the empty records list is `"sandboxes":[]` at the start
    // of the second field's line; nothing before it can look like that.
    let marker = b"\n\"sandboxes\":[]";
    let at = shell
        .windows(marker.len())
        .position(|w| w == marker)
        .ok_or_else(|| Error::internal("the store layout lost its records list"))?;
    let insert = at + marker.len() - 1;
    let mut records = Vec::with_capacity(doc.sandboxes.len() * 1400);
    for (i, line) in doc.sandboxes.lines().enumerate() {
        records.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
        records.extend_from_slice(&line?);
    }
    records.push(b'\n');
    let mut head = shell;
    let tail = head.split_off(insert);
    Ok(Pieces(vec![head, records, tail]))
}

/// `value` in one pass with [`LineFormatter`].
fn serialize_sequential<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, LineFormatter::default());
    value.serialize(&mut ser).map_err(serialize_error)?;
    out.push(b'\n');
    Ok(out)
}

fn serialize_error(e: serde_json::Error) -> Error {
    Error::internal(format!("serializing the sandbox store: {e}")).with_source(e)
}

/// The command that moves `file` aside, for hints.
pub(crate) fn move_aside_command(file: &Path, suffix: &str) -> String {
    let from = file.display().to_string();
    let to = format!("{from}.{suffix}");
    format!(
        "`mv {} {}`",
        crate::transport::shell_quote(&from),
        crate::transport::shell_quote(&to)
    )
}

/// Compact JSON, plus a line break before each top-level field and before
/// each element of a top-level list or map (one record per line).
#[derive(Default)]
struct LineFormatter {
    depth: usize,
    /// Whether the open depth-2 collection has had an element.
    broke_lines: bool,
}

impl LineFormatter {
    fn open<W: ?Sized + Write>(&mut self, w: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.depth += 1;
        if self.depth == 2 {
            self.broke_lines = false;
        }
        w.write_all(bracket)
    }

    fn close<W: ?Sized + Write>(&mut self, w: &mut W, bracket: &[u8]) -> io::Result<()> {
        if self.depth == 1 || (self.depth == 2 && self.broke_lines) {
            w.write_all(b"\n")?;
        }
        self.depth -= 1;
        w.write_all(bracket)
    }

    fn element<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if !first {
            w.write_all(b",")?;
        }
        if self.depth <= 2 {
            self.broke_lines = true;
            w.write_all(b"\n")?;
        }
        Ok(())
    }
}

impl serde_json::ser::Formatter for LineFormatter {
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"[")
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"]")
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.element(w, first)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"{")
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"}")
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.element(w, first)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::lifecycle::{EndReason, Event};
    use crate::model::{Actor, NewSandbox, Reachability, Sandbox};
    use crate::store::{update_with, IdempotencyEntry};

    fn record(i: usize) -> Sandbox {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-28T14:30:00.123Z")
            .unwrap()
            .to_utc()
            + chrono::Duration::seconds(i as i64);
        let mut s = Sandbox::new(NewSandbox {
            id: format!("sbx-r{i}"),
            profile: "profile.sandbox-canary".into(),
            profile_version: 1,
            extension: "ext.canary".into(),
            host: "local".into(),
            actor: Actor::from_str("agt:unit").unwrap(),
            inputs: [("repo".to_string(), format!("/src/{i}, \"quoted\"\n"))].into(),
            route: Default::default(),
            ttl_seconds: 1800,
            idempotency_key: i.is_multiple_of(3).then(|| format!("key-{i}")),
            recreated_from: None,
            cost: None,
            created_at: at,
        });
        s.reachability = Some(Reachability {
            address: "127.0.0.1".into(),
            ..Default::default()
        });
        // Strings that look like the layout's own separators.
        s.backend = serde_json::json!({"steps": [{"n": i}, {"n": i + 1}, {"s": "x],\n{"}]});
        s.telemetry = Some(serde_json::json!({"load_1": i as f64 / 7.0, "cpus": 2}));
        s.apply(&Event::Ready, at).unwrap();
        if i.is_multiple_of(2) {
            s.apply(&Event::Destroy(EndReason::Expired), at).unwrap();
        }
        s
    }

    fn doc(n: usize) -> StoreDoc {
        let mut doc = StoreDoc {
            sandboxes: (0..n).map(record).collect::<Vec<_>>().into(),
            ..Default::default()
        };
        // Keys and values that look like the layout's own markers.
        for key in ["sandboxes", "\n\"sandboxes\":[]", "k,\n{"] {
            doc.idempotency.insert(
                key.to_string(),
                IdempotencyEntry {
                    request_hash: "\"sandboxes\":[]".into(),
                    sandbox_id: "sbx-r0".into(),
                },
            );
        }
        doc.outbox
            .push(serde_json::json!({"event": "created", "sandboxes": []}));
        doc.outbox.push(serde_json::json!({"event": "ready"}));
        doc
    }

    const SIZES: [usize; 6] = [0, 1, 2, 3, 9, 40];

    fn text(doc: &StoreDoc) -> String {
        String::from_utf8(serialize(doc, 2).unwrap().0.concat()).unwrap()
    }

    fn store(dir: &Path, journal_from: u64) -> JsonFileStore {
        JsonFileStore::in_data_dir(dir).with_journal_from(journal_from)
    }

    /// A store on disk holding `doc(n)`, written by a checkpoint.
    fn on_disk(dir: &Path, n: usize) -> JsonFileStore {
        fs::write(dir.join(FILE_NAME), text(&doc(n))).unwrap();
        store(dir, 0)
    }

    fn bytes_of(dir: &Path) -> (Vec<u8>, Option<Vec<u8>>) {
        (
            fs::read(dir.join(FILE_NAME)).unwrap(),
            fs::read(dir.join("sandboxes.json.journal")).ok(),
        )
    }

    #[test]
    fn the_checkpoint_is_the_plain_serialization() {
        for n in SIZES {
            let d = doc(n);
            let want = serialize_sequential(&d).unwrap();
            for threads in 1..=4 {
                let got = serialize(&d, threads).unwrap();
                assert_eq!(got.0.concat(), want, "{n} records, {threads} threads");
            }
            // The same for a document loaded lazily from that file: stored
            // lines are copied as they are.
            let dir = tempfile::tempdir().unwrap();
            let s = on_disk(dir.path(), n);
            let loaded = s.load().unwrap();
            assert_eq!(loaded, d);
            assert_eq!(serialize(&loaded, 2).unwrap().0.concat(), want);
        }
    }

    #[test]
    fn the_layout_is_split_by_lines_and_anything_else_parsed_whole() {
        for n in SIZES {
            let d = doc(n);
            let t = text(&d);
            let (ranges, _) = split_layout(t.as_bytes()).unwrap();
            assert_eq!(ranges.len(), n);
            let dir = tempfile::tempdir().unwrap();
            let s = store(dir.path(), 0);
            // Pretty-printed by hand: read whole, the same document.
            let pretty = serde_json::to_string_pretty(&d).unwrap();
            assert!(split_layout(pretty.as_bytes()).is_none() || n == 0);
            fs::write(s.path(), &pretty).unwrap();
            let r = s.read().unwrap();
            assert_eq!(r.doc, d);
            assert_eq!(
                r.layout_ok,
                n == 0 && split_layout(pretty.as_bytes()).is_some()
            );
            // The first commit writes the layout (a checkpoint, not the
            // journal, since the file is not in the layout).
            s.update(&mut |doc| {
                doc.outbox.push(serde_json::json!(n));
                Ok(())
            })
            .unwrap();
            let mut want = d.clone();
            want.outbox.push(serde_json::json!(n));
            assert_eq!(fs::read_to_string(s.path()).unwrap(), text(&want));
            assert!(!s.journal_path().exists());
        }
    }

    #[test]
    fn faults_are_refused_and_nothing_is_written() {
        let d = doc(40);
        let t = text(&d);
        let late = t.rfind("{\"id\"").unwrap();
        let bad: Vec<String> = vec![
            // A record with a field of the wrong type, late in the file: the
            // lazy load accepts the line, the checkpoint refuses it.
            format!(
                "{}{}",
                &t[..late],
                t[late..].replacen("\"ttl_seconds\":1800", "\"ttl_seconds\":\"x\"", 1)
            ),
            // Not JSON inside a record line.
            t.replacen("\"ttl_seconds\":1800", "\"ttl_seconds\":18 00", 1),
            // Truncated in the last record.
            t[..late + 40].to_string(),
            // A trailing comma after the last record.
            t.replacen("\n],\n\"idempotency\"", ",\n],\n\"idempotency\"", 1),
            // Records given twice.
            t.replacen("\n\"outbox\"", "\n\"sandboxes\":[],\n\"outbox\"", 1),
            // Garbage after the document.
            format!("{t}x"),
            // Another version after the records.
            t.replacen("\n\"outbox\"", "\n\"version\":2,\n\"outbox\"", 1),
            // Two records with one id.
            t.replacen("\"id\":\"sbx-r1\"", "\"id\":\"sbx-r0\"", 1),
        ];
        for (i, b) in bad.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let s = store(dir.path(), 0);
            fs::write(s.path(), b).unwrap();
            // A full read of everything fails.
            let whole = s.load().and_then(|d| d.sandboxes.into_vec().map(drop));
            let e = whole.expect_err(&format!("case {i}"));
            assert_eq!(e.kind(), ErrorKind::StoreCorrupt, "case {i}: {e}");
            // A commit checkpoints when the journal is not in use, parses
            // every record and refuses.
            let e = store(dir.path(), u64::MAX)
                .update(&mut |doc| {
                    doc.outbox.push(serde_json::json!("x"));
                    Ok(())
                })
                .expect_err(&format!("case {i}"));
            assert_eq!(e.kind(), ErrorKind::StoreCorrupt, "case {i}: {e}");
            assert_eq!(fs::read_to_string(s.path()).unwrap(), *b, "case {i}");
            assert!(!s.journal_path().exists());
        }
    }

    fn set_ttl(s: &JsonFileStore, id: &str, ttl: u64) {
        s.update(&mut |doc| {
            doc.require_mut(id)?.ttl_seconds = ttl;
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn commits_go_to_the_journal_and_replay() {
        let dir = tempfile::tempdir().unwrap();
        let s = on_disk(dir.path(), 9);
        let snapshot = fs::read(s.path()).unwrap();
        set_ttl(&s, "sbx-r3", 60);
        s.update(&mut |doc| {
            doc.sandboxes.push(record(100))?;
            doc.idempotency.insert(
                "new".into(),
                IdempotencyEntry {
                    request_hash: "h".into(),
                    sandbox_id: "sbx-r100".into(),
                },
            );
            doc.outbox.clear();
            Ok(())
        })
        .unwrap();
        // An update that changes nothing writes nothing.
        let before = bytes_of(dir.path());
        s.update(&mut |doc| {
            doc.require_mut("sbx-r4")?;
            Ok(())
        })
        .unwrap();
        assert_eq!(bytes_of(dir.path()), before);

        assert_eq!(fs::read(s.path()).unwrap(), snapshot, "file untouched");
        let journal = fs::read_to_string(s.journal_path()).unwrap();
        assert_eq!(journal.lines().count(), 2, "{journal}");
        assert!(!journal.lines().next().unwrap().contains("outbox"));

        let mut want = doc(9);
        want.sandboxes
            .get_mut("sbx-r3")
            .unwrap()
            .unwrap()
            .ttl_seconds = 60;
        want.sandboxes.push(record(100)).unwrap();
        want.idempotency.insert(
            "new".into(),
            IdempotencyEntry {
                request_hash: "h".into(),
                sandbox_id: "sbx-r100".into(),
            },
        );
        want.outbox.clear();
        let got = JsonFileStore::in_data_dir(dir.path()).load().unwrap();
        assert_eq!(got, want);
        let order: Vec<&str> = got.sandboxes.heads().map(|h| h.id()).collect();
        assert_eq!(order.last(), Some(&"sbx-r100"));
        assert_eq!(order[3], "sbx-r3", "a changed record keeps its place");

        // A checkpoint that crashes after its rename, before it empties the
        // journal: replaying the journal over the new file ends where the
        // file is, this last commit's changes included (it changes a record
        // and the outbox the journal also holds).
        let mut crashing = store(dir.path(), u64::MAX);
        crashing.crash_before_truncate = true;
        crashing
            .update(&mut |doc| {
                doc.outbox.push(serde_json::json!("after"));
                doc.require_mut("sbx-r3")?.ttl_seconds = 61;
                doc.idempotency.remove("new");
                Ok(())
            })
            .unwrap();
        want.outbox.push(serde_json::json!("after"));
        want.sandboxes
            .get_mut("sbx-r3")
            .unwrap()
            .unwrap()
            .ttl_seconds = 61;
        want.idempotency.remove("new");
        assert_eq!(fs::read_to_string(s.path()).unwrap(), text(&want));
        assert_eq!(
            fs::read_to_string(s.journal_path())
                .unwrap()
                .lines()
                .count(),
            3,
            "the commit went into the journal before the checkpoint"
        );
        assert_eq!(s.load().unwrap(), want);
        // The next commit checkpoints again (the journal is past its room
        // with journal_from at MAX) and empties it.
        store(dir.path(), u64::MAX)
            .update(&mut |doc| {
                doc.outbox.clear();
                Ok(())
            })
            .unwrap();
        want.outbox.clear();
        assert_eq!(fs::read(s.journal_path()).unwrap(), b"");
        assert_eq!(fs::read_to_string(s.path()).unwrap(), text(&want));
    }

    #[test]
    fn the_journal_is_folded_in_when_it_outgrows_its_room() {
        let dir = tempfile::tempdir().unwrap();
        let s = on_disk(dir.path(), 40);
        let mut checkpoints = 0;
        let mut last_len = fs::metadata(s.path()).unwrap().len();
        for round in 0..400u64 {
            set_ttl(&s, &format!("sbx-r{}", round % 40), round);
            let len = fs::metadata(s.path()).unwrap().len();
            let j = fs::metadata(s.journal_path()).map_or(0, |m| m.len());
            assert!(
                j <= JOURNAL_ROOM_MIN.max(len / 4),
                "journal {j} past its room"
            );
            if j == 0 {
                checkpoints += 1;
            }
            last_len = last_len.max(len);
        }
        assert!(checkpoints >= 1, "the journal was never folded in");
        let got = s.load().unwrap();
        for i in 0..40u64 {
            let want = (0..400).filter(|r| r % 40 == i).max().unwrap();
            assert_eq!(got.require(&format!("sbx-r{i}")).unwrap().ttl_seconds, want);
        }
    }

    #[test]
    fn small_stores_are_always_whole_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), text(&doc(3))).unwrap();
        let s = JsonFileStore::in_data_dir(dir.path()).with_journal_from(JOURNAL_FROM_DEFAULT);
        set_ttl(&s, "sbx-r1", 5);
        assert!(!s.journal_path().exists());
        let plain: StoreDoc = serde_json::from_slice(&fs::read(s.path()).unwrap()).unwrap();
        assert_eq!(plain.require("sbx-r1").unwrap().ttl_seconds, 5);
    }

    #[test]
    fn a_torn_last_line_is_ignored_then_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let s = on_disk(dir.path(), 3);
        set_ttl(&s, "sbx-r1", 7);
        let good = fs::read(s.journal_path()).unwrap();
        // A crash mid-append: part of a line, no line break.
        let mut torn = good.clone();
        torn.extend_from_slice(b"{\"version\":1,\"sandboxes\":[{\"id\":\"sbx-r2\",\"pro");
        fs::write(s.journal_path(), &torn).unwrap();
        assert_eq!(s.load().unwrap().require("sbx-r1").unwrap().ttl_seconds, 7);
        assert_eq!(
            fs::read(s.journal_path()).unwrap(),
            torn,
            "a read writes nothing"
        );
        set_ttl(&s, "sbx-r2", 8);
        let after = fs::read_to_string(s.journal_path()).unwrap();
        assert!(after.starts_with(std::str::from_utf8(&good).unwrap()));
        assert_eq!(after.lines().count(), 2);
        assert!(after
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
        let got = s.load().unwrap();
        assert_eq!(got.require("sbx-r1").unwrap().ttl_seconds, 7);
        assert_eq!(got.require("sbx-r2").unwrap().ttl_seconds, 8);
    }

    #[test]
    fn a_bad_journal_line_is_refused_and_kept() {
        let cases: [(&str, &str); 3] = [
            ("{\"version\":1,\"sandboxes\":[{\"id\":1}]}\n", "line 2"),
            ("not json\n", "line 2"),
            ("{\"version\":9,\"sandboxes\":[]}\n", "schema version 9"),
        ];
        for (line, says) in cases {
            let dir = tempfile::tempdir().unwrap();
            let s = on_disk(dir.path(), 3);
            set_ttl(&s, "sbx-r1", 7);
            let mut j = fs::read_to_string(s.journal_path()).unwrap();
            j.push_str(line);
            set_ttl(&s, "sbx-r1", 7); // no change: nothing written
            fs::write(s.journal_path(), &j).unwrap();
            let before = bytes_of(dir.path());
            let e = s
                .load()
                .and_then(|d| d.sandboxes.into_vec().map(drop))
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::StoreCorrupt);
            assert!(e.to_string().contains(says), "{e}");
            assert!(
                e.to_string().contains("journal") || says.contains("version"),
                "{e}"
            );
            let e = s
                .update(&mut |doc| {
                    doc.outbox.push(serde_json::json!("x"));
                    Ok(())
                })
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::StoreCorrupt);
            assert_eq!(bytes_of(dir.path()), before);
        }
    }

    #[test]
    fn a_journal_without_its_file_is_left_over() {
        let dir = tempfile::tempdir().unwrap();
        let s = on_disk(dir.path(), 3);
        set_ttl(&s, "sbx-r1", 7);
        // The file moved aside, as a hint says to do with a corrupt store.
        fs::rename(s.path(), dir.path().join("aside.json")).unwrap();
        assert!(s.load().unwrap().sandboxes.is_empty());
        s.update(&mut |doc| {
            doc.outbox.push(serde_json::json!("fresh"));
            Ok(())
        })
        .unwrap();
        assert_eq!(fs::read(s.journal_path()).unwrap(), b"");
        let got = s.load().unwrap();
        assert!(got.sandboxes.is_empty());
        assert_eq!(got.outbox, vec![serde_json::json!("fresh")]);
    }

    /// Threads of one process commit through the journal and checkpoints
    /// while others read: no commit is lost, and no read sees a mix of two
    /// states (each record's counter only grows, and the sum of counters a
    /// reader sees is the number of commits some time before it read).
    #[test]
    fn concurrent_commits_and_reads_agree() {
        let dir = tempfile::tempdir().unwrap();
        on_disk(dir.path(), 8);
        let writers = 4;
        let per = 60;
        std::thread::scope(|scope| {
            for w in 0..writers {
                let dir = dir.path();
                scope.spawn(move || {
                    let s = store(dir, 0);
                    for k in 0..per {
                        update_with(&s, |doc| {
                            let rec = doc.require_mut(&format!("sbx-r{}", (w + k) % 8))?;
                            rec.ttl_seconds += 1;
                            Ok(())
                        })
                        .unwrap();
                    }
                });
            }
            for _ in 0..2 {
                let dir = dir.path();
                scope.spawn(move || {
                    let s = store(dir, 0);
                    let mut last = [0u64; 8];
                    for _ in 0..100 {
                        let d = s.load().unwrap();
                        for (i, seen) in last.iter_mut().enumerate() {
                            let now = d.require(&format!("sbx-r{i}")).unwrap().ttl_seconds;
                            assert!(now >= *seen, "record {i} went back from {seen} to {now}");
                            *seen = now;
                        }
                    }
                });
            }
        });
        let d = store(dir.path(), 0).load().unwrap();
        let total: u64 = d.sandboxes.all().unwrap().map(|s| s.ttl_seconds).sum();
        assert_eq!(total, 8 * 1800 + (writers * per) as u64);
    }

    #[test]
    fn temp_names() {
        let p = ".sandboxes.json.tmp.";
        assert!(is_temp_name(".sandboxes.json.tmp.42.0123456789abcdef", p));
        assert!(!is_temp_name(".sandboxes.json.tmp.42.0123", p));
        assert!(!is_temp_name(".sandboxes.json.tmp..0123456789abcdef", p));
        assert!(!is_temp_name("sandboxes.json", p));
        assert!(!is_temp_name("sandboxes.json.lock", p));
        assert!(!is_temp_name(
            ".sandboxes.json.tmp.42.0123456789abcdef.bak",
            p
        ));
    }

    #[test]
    fn one_element_per_line() {
        let mut doc = StoreDoc::default();
        doc.outbox.push(serde_json::json!({"a": [1, {"b": 2}]}));
        doc.outbox.push(serde_json::json!("x"));
        let text = text(&doc);
        assert_eq!(
            text,
            "{\n\"version\":1,\n\"sandboxes\":[],\n\"idempotency\":{},\n\"outbox\":[\n\
             {\"a\":[1,{\"b\":2}]},\n\"x\"\n]\n}\n"
        );
        let back: StoreDoc = serde_json::from_str(&text).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn threads_follow_the_idle_cpus() {
        // This test's own thread is running.
        assert!(runnable_tasks().is_some_and(|n| n >= 1));
        assert!((1..=4).contains(&store_threads()));
    }
}
