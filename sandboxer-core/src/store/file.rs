//! [`JsonFileStore`]: the store as one JSON document, `sandboxes.json` in
//! the data dir, shared by concurrent CLI processes and the HTTP server.
//!
//! - `update` holds an exclusive lock (`flock`, through [`File::lock`]) on
//!   the separate file `sandboxes.json.lock` for the whole read-modify-write.
//!   The lock is never taken on the data file, which is replaced by rename.
//!   Each `update` opens the lock file anew, so threads of one process
//!   exclude each other as well as processes do. (The `test-no-lock`
//!   feature drops the lock; it exists only to show that the concurrency
//!   tests catch lost updates, and is never on by default.)
//! - A write goes to a temp file in the same folder
//!   (`.sandboxes.json.tmp.PID.RANDOM`), is fsynced, renamed over
//!   `sandboxes.json`, and the folder is fsynced.
//!   A temp file left by a crash is never read, and is removed by the next
//!   successful write.
//! - `load` takes no lock: the rename is atomic, so a reader sees the old or
//!   the new document, never a mix.
//! - A document that does not parse, or of another schema version, is
//!   refused by `load` and `update` alike and never overwritten.
//!
//! Each store keeps the last document it wrote together with its exact
//! bytes. When the file still holds exactly those bytes, `update` and `load`
//! reuse that document instead of parsing the file again; the check is a
//! byte-for-byte compare, so a change by any other writer is always seen.
//! Parsing is the largest cost of a large store; the cache makes a
//! process's second and later `update`s about three times faster at 10,000
//! records.
//! An `update` that leaves the document as it was writes nothing (it
//! compares the serialized bytes, so a hand-formatted file is rewritten once
//! in the layout below by the first `update`).
//!
//! The file is compact JSON with a line break before each top-level field
//! and each element of a top-level list or map, so each record sits on one
//! line: readable with `grep`, diffable, and as fast as plain compact JSON.
//!
//! Each CLI command is a new process, so the first `load` and `update` of a
//! process are what users wait for; at 10,000 records (about 13 MB) parsing
//! and serializing are most of it. For a large file both are spread over
//! the CPUs that are idle at the time (up to 4): records are parsed in
//! chunks split at the layout's record separators, and the thread before
//! each split confirms it (see `parse_parallel`), so the result never rests
//! on the layout being intact; anything unexpected is parsed again in one
//! piece, which also produces every error. The version is checked after
//! that one parse; it is parsed on its own only when the file does not
//! parse, so that a newer schema is reported as such. `docs/benchmarks.md`
//! has the figures.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::Deserialize;

use super::{Store, StoreDoc, SCHEMA_VERSION};
use crate::model::Sandbox;
use crate::{Error, ErrorKind, Result};

/// The store's file name in the data dir.
const FILE_NAME: &str = "sandboxes.json";

/// The sandbox store in one JSON file. See the module docs for the locking
/// and write protocol.
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
    path: PathBuf,
    lock_path: PathBuf,
    /// The last document this store wrote (or found unchanged), with the
    /// bytes of the file that holds it.
    cache: Mutex<Option<Cached>>,
}

struct Cached {
    bytes: Pieces,
    doc: StoreDoc,
}

/// A file's bytes as consecutive pieces: what the parallel serializer
/// makes, written and compared where it lies rather than copied into one
/// buffer (at 10,000 records that copy is 13 MB of fresh memory).
#[derive(Debug, Default)]
struct Pieces(Vec<Vec<u8>>);

impl Pieces {
    fn len(&self) -> usize {
        self.0.iter().map(Vec::len).sum()
    }

    /// Whether the pieces, end to end, are exactly `bytes`.
    fn eq_bytes(&self, bytes: &[u8]) -> bool {
        if self.len() != bytes.len() {
            return false;
        }
        let mut at = 0;
        self.0.iter().all(|p| {
            let same = bytes[at..at + p.len()] == p[..];
            at += p.len();
            same
        })
    }
}

impl std::fmt::Debug for JsonFileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonFileStore")
            .field("path", &self.path)
            .field("lock_path", &self.lock_path)
            .finish_non_exhaustive()
    }
}

impl JsonFileStore {
    /// The store in the file `path` (normally `DATA_DIR/sandboxes.json`).
    pub fn new(path: PathBuf) -> Self {
        let mut lock_name = path.file_name().unwrap_or_default().to_os_string();
        lock_name.push(".lock");
        let lock_path = path.with_file_name(lock_name);
        JsonFileStore {
            path,
            lock_path,
            cache: Mutex::new(None),
        }
    }

    /// The store in `dir/sandboxes.json`.
    pub fn in_data_dir(dir: &Path) -> Self {
        Self::new(dir.join(FILE_NAME))
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file `update` locks: `sandboxes.json.lock` beside the data file.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
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

    fn cache(&self) -> MutexGuard<'_, Option<Cached>> {
        // The cache is never left half-updated, so a poisoned lock is fine.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The file's bytes; `None` when there is no file yet.
    fn read_bytes(&self) -> Result<Option<Vec<u8>>> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", self.path.display()), e)),
        }
    }

    /// The document in `bytes`, or why it is refused.
    ///
    /// A large file in the layout [`serialize`] writes has its records parsed
    /// on several threads ([`parse_parallel`]). Anything else, and anything
    /// that path does not accept, goes through one `serde_json` parse of the
    /// whole file, which therefore decides every error.
    fn parse(&self, bytes: &[u8]) -> Result<StoreDoc> {
        if let Some(doc) = parse_parallel(bytes, store_threads(), PARALLEL_MIN_CHUNK) {
            return Ok(doc);
        }
        match serde_json::from_slice::<StoreDoc>(bytes) {
            Ok(doc) if doc.version == SCHEMA_VERSION => Ok(doc),
            Ok(doc) => Err(self.wrong_version(doc.version)),
            // Only now the version alone, so that a newer schema is reported
            // as such and not as whatever parse error its new shape causes
            // (the success path above parses the file once).
            Err(full) => {
                #[derive(Deserialize)]
                struct Versioned {
                    version: u32,
                }
                match serde_json::from_slice::<Versioned>(bytes) {
                    Err(e) => Err(self.unparsable(e)),
                    Ok(Versioned { version }) if version != SCHEMA_VERSION => {
                        Err(self.wrong_version(version))
                    }
                    Ok(_) => Err(self.unparsable(full)),
                }
            }
        }
    }

    fn unparsable(&self, e: serde_json::Error) -> Error {
        let full = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        let what = full.strip_suffix(&position).unwrap_or(&full).to_string();
        Error::new(
            ErrorKind::StoreCorrupt,
            format!(
                "the sandbox store {} does not parse (line {}, column {}): {what}",
                self.path.display(),
                e.line(),
                e.column(),
            ),
        )
        .with_hint(format!(
            "sandboxer will not overwrite it. Repair it by hand, or move it aside to start \
             an empty store: {} (sandboxer then forgets the sandboxes it lists; they are \
             not torn down)",
            self.move_aside_command("corrupt"),
        ))
        .with_source(e)
    }

    fn wrong_version(&self, found: u32) -> Error {
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
                self.path.display(),
            ),
        )
        .with_hint(format!(
            "it was written by {writer} sandboxer, and this one will not overwrite it. Use a \
             sandboxer that reads version {found}, or move the file aside to start an empty \
             store: {}",
            self.move_aside_command(&format!("v{found}")),
        ))
    }

    fn move_aside_command(&self, suffix: &str) -> String {
        let from = self.path.display().to_string();
        let to = format!("{from}.{suffix}");
        format!("`mv {} {}`", shell_quote(&from), shell_quote(&to))
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

    fn write(&self, bytes: &Pieces) -> Result<()> {
        let dir = self.dir();
        let tmp = dir.join(format!(
            "{}{}.{:016x}",
            self.temp_prefix(),
            std::process::id(),
            rand::random::<u64>(),
        ));
        if let Err(e) = write_synced(&tmp, bytes) {
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
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))?;
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
}

impl Store for JsonFileStore {
    fn load(&self) -> Result<StoreDoc> {
        let Some(bytes) = self.read_bytes()? else {
            return Ok(StoreDoc::default());
        };
        if let Some(cached) = self.cache().as_ref().filter(|c| c.bytes.eq_bytes(&bytes)) {
            return Ok(cached.doc.clone());
        }
        self.parse(&bytes)
    }

    fn update(&self, f: &mut dyn FnMut(&mut StoreDoc) -> Result<()>) -> Result<()> {
        self.create_dir()?;
        let lock = self.lock()?;
        let old = self.read_bytes()?;
        // Taken out, not borrowed: if `f` fails or panics half-way through
        // its changes, the half-changed document is not cached.
        let cached = self.cache().take();
        let mut doc = match (&old, cached) {
            (None, _) => StoreDoc::default(),
            (Some(old), Some(cached)) if cached.bytes.eq_bytes(old) => cached.doc,
            (Some(old), _) => self.parse(old)?,
        };
        f(&mut doc)?;
        if doc.version != SCHEMA_VERSION {
            return Err(Error::internal(format!(
                "an update set the store's schema version to {}; this build writes {SCHEMA_VERSION}",
                doc.version
            )));
        }
        let new = serialize(&mut doc)?;
        match &old {
            Some(old) if new.eq_bytes(old) => {}
            None if doc == StoreDoc::default() => return Ok(()),
            _ => {
                self.write(&new)?;
                if lock.is_some() {
                    self.remove_stale_temps();
                }
            }
        }
        *self.cache() = Some(Cached { bytes: new, doc });
        Ok(())
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
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

/// Below this many bytes (parsing) or records (serializing) per thread, a
/// thread costs more than it saves. A thread starts in tens of
/// microseconds; 256 KiB of records parse in about a millisecond.
const PARALLEL_MIN_CHUNK: usize = 256 * 1024;
const PARALLEL_MIN_RECORDS: usize = 256;

/// Fewer bytes than any record takes in the file (one in `provisioning`,
/// with no inputs, takes about 500), to size the lists of records.
const MIN_RECORD_BYTES: usize = 256;

/// How far past a chosen point [`parse_parallel`] looks for a record
/// boundary; a record is about 1 KiB.
const SPLIT_SEARCH: usize = 64 * 1024;

/// The threads a large store is parsed and serialized on: the CPUs this
/// process may use (at most 4), less those other tasks keep busy right now.
///
/// A helper thread costs about 6% more CPU time (a second malloc arena,
/// moving its records over) and only pays off on a CPU that would
/// otherwise idle: measured at 10,000 records on 2 CPUs, a fresh `load`
/// took a third less time while the other CPU was mostly free, and nothing
/// less while other work kept both busy.
fn store_threads() -> usize {
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

/// Parse a store in the layout [`serialize`] writes with its records split
/// among up to `threads` threads; `None` when the file is small, not in that
/// layout, or anything in it does not parse (the caller then parses the
/// whole file at once, which reports the error).
///
/// The records are split at the separator `serialize` writes between them
/// (`,`, a line break, `{`), but the result never depends on that guess:
/// the thread before a split parses up to it and uses the next thread's
/// records only when its own last record ends exactly at that `,`. When
/// it does not (the `,` was inside a record), it goes on parsing past the
/// split itself and the later threads' work is dropped. Everything outside
/// the records (version, idempotency keys, outbox, any other field) is
/// parsed by `serde_json` from the file with the records cut out, so the
/// result is what one parse of the whole file gives. (One difference, in
/// its favour: each record gets `serde_json`'s full nesting limit, where
/// the whole-file parse has two levels fewer for it.)
fn parse_parallel(bytes: &[u8], threads: usize, min_chunk: usize) -> Option<StoreDoc> {
    let head = layout_head();
    let chunks = threads.min(bytes.len() / min_chunk.max(1));
    if chunks < 2 || !bytes.starts_with(head.as_bytes()) {
        return None;
    }
    let open = head.len() - 1;
    let mut bounds = vec![open];
    for k in 1..chunks {
        let from = (bytes.len() / chunks * k).max(bounds[bounds.len() - 1] + 1);
        let window = &bytes[from.min(bytes.len())..(from + SPLIT_SEARCH).min(bytes.len())];
        if let Some(i) = window.windows(3).position(|w| w == b",\n{") {
            bounds.push(from + i);
        }
    }
    if bounds.len() < 2 {
        return None;
    }
    let stops: Vec<Option<usize>> = bounds[1..].iter().map(|&b| Some(b)).chain([None]).collect();
    let parsed: Vec<Option<(Vec<Sandbox>, RecordsEnd)>> = std::thread::scope(|scope| {
        let later: Vec<_> = bounds[1..]
            .iter()
            .zip(&stops[1..])
            .map(|(&from, &stop)| {
                std::thread::Builder::new().spawn_scoped(scope, move || {
                    let room = stop.unwrap_or(bytes.len()) - from;
                    parse_records(bytes, from + 1, stop, room / MIN_RECORD_BYTES)
                })
            })
            .collect();
        // Room for every record of the file: memory not written to costs
        // nothing, and the later chunks then move in without a reallocation.
        let first = parse_records(bytes, open + 1, stops[0], bytes.len() / MIN_RECORD_BYTES);
        // A thread that could not start, or panicked, leaves a gap, and the
        // caller parses the whole file again (and meets the panic, if any).
        std::iter::once(first)
            .chain(
                later
                    .into_iter()
                    .map(|h| h.ok().and_then(|h| h.join().ok().flatten())),
            )
            .collect()
    });
    let mut records = Vec::new();
    let mut close = None;
    for chunk in parsed {
        let (part, end) = chunk?;
        records.push(part);
        if let RecordsEnd::Close(at) = end {
            close = Some(at);
            break;
        }
    }
    let close = close?;
    // The document with its records cut out: `{"version":1,"sandboxes":[` and
    // everything from the `]` on.
    let mut rest = Vec::with_capacity(open + 1 + bytes.len() - close);
    rest.extend_from_slice(&bytes[..=open]);
    rest.extend_from_slice(&bytes[close..]);
    let mut doc: StoreDoc = serde_json::from_slice(&rest).ok()?;
    if doc.version != SCHEMA_VERSION || !doc.sandboxes.is_empty() {
        return None;
    }
    let mut records = records.into_iter();
    doc.sandboxes = records.next()?;
    for part in records {
        doc.sandboxes.extend(part);
    }
    Some(doc)
}

/// Where [`parse_records`] stopped.
enum RecordsEnd {
    /// Its last record ends exactly at the `,` it was told to stop at.
    Split,
    /// At the `]` (this index) that closes the records.
    Close(usize),
}

/// The records from `pos` on (a record, then `,` and a record, ..., up to
/// `]`, with JSON whitespace anywhere between), stopping early when the `,`
/// after a record is at `stop`. `None` when anything does not parse.
fn parse_records(
    bytes: &[u8],
    mut pos: usize,
    stop: Option<usize>,
    capacity: usize,
) -> Option<(Vec<Sandbox>, RecordsEnd)> {
    let mut out = Vec::with_capacity(capacity);
    loop {
        let mut values =
            serde_json::Deserializer::from_slice(bytes.get(pos..)?).into_iter::<Sandbox>();
        out.push(values.next()?.ok()?);
        pos += values.byte_offset();
        while bytes.get(pos).is_some_and(|b| b" \t\n\r".contains(b)) {
            pos += 1;
        }
        match bytes.get(pos)? {
            b',' if Some(pos) == stop => return Some((out, RecordsEnd::Split)),
            b',' => pos += 1,
            b']' => return Some((out, RecordsEnd::Close(pos))),
            _ => return None,
        }
    }
}

/// The file for `doc`: [`serialize_with`] on up to [`store_threads`] threads.
fn serialize(doc: &mut StoreDoc) -> Result<Pieces> {
    serialize_with(doc, store_threads(), PARALLEL_MIN_RECORDS)
}

/// The bytes [`serialize_sequential`] writes, with the records serialized
/// on up to `threads` threads when there are at least `min_records` per
/// thread. The records are taken out of `doc` while the rest is written,
/// and put back.
fn serialize_with(doc: &mut StoreDoc, threads: usize, min_records: usize) -> Result<Pieces> {
    let chunks = threads.min(doc.sandboxes.len() / min_records.max(1));
    if chunks < 2 {
        return Ok(Pieces(vec![serialize_sequential(doc)?]));
    }
    let records = std::mem::take(&mut doc.sandboxes);
    let shell = serialize_sequential(doc);
    doc.sandboxes = records;
    let shell = shell?;
    // In the layout, the empty records list is `"sandboxes":[]` at the start
    // of the second field's line; nothing before it can look like that.
    let marker = b"\n\"sandboxes\":[]";
    let Some(at) = shell.windows(marker.len()).position(|w| w == marker) else {
        return Ok(Pieces(vec![serialize_sequential(doc)?]));
    };
    let insert = at + marker.len() - 1;
    let per_chunk = doc.sandboxes.len().div_ceil(chunks);
    // Each group of records starts with what goes before its first record:
    // a line break after the `[`, else `,` and a line break.
    let parts: Vec<Result<Vec<u8>>> = std::thread::scope(|scope| {
        let mut groups = doc.sandboxes.chunks(per_chunk);
        let first = groups.next().unwrap_or_default();
        let later: Vec<_> = groups
            .map(|group| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || serialize_records(group, b",\n"))
                    .map_err(|_| group)
            })
            .collect();
        let first = serialize_records(first, b"\n");
        // A group whose thread could not start is done here.
        std::iter::once(first)
            .chain(later.into_iter().map(|h| match h {
                Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                Err(group) => serialize_records(group, b",\n"),
            }))
            .collect()
    });
    let mut pieces = Vec::with_capacity(parts.len() + 2);
    pieces.push(shell[..insert].to_vec());
    for part in parts {
        pieces.push(part?);
    }
    let mut tail = Vec::with_capacity(1 + shell.len() - insert);
    tail.push(b'\n');
    tail.extend_from_slice(&shell[insert..]);
    pieces.push(tail);
    Ok(Pieces(pieces))
}

/// `before`, then `records` as compact JSON, one a line: what
/// [`LineFormatter`] writes for them inside the top-level list (it writes
/// compact JSON below that depth).
fn serialize_records(records: &[Sandbox], before: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(records.len() * 1280);
    out.extend_from_slice(before);
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",\n");
        }
        serde_json::to_writer(&mut out, r).map_err(serialize_error)?;
    }
    Ok(out)
}

/// The file for `doc`, in one pass with [`LineFormatter`]: the reference
/// the parallel path must match byte for byte.
fn serialize_sequential(doc: &StoreDoc) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, LineFormatter::default());
    serde::Serialize::serialize(doc, &mut ser).map_err(serialize_error)?;
    out.push(b'\n');
    Ok(out)
}

fn serialize_error(e: serde_json::Error) -> Error {
    Error::internal(format!("serializing the sandbox store: {e}")).with_source(e)
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

/// `s` as one shell word, for hints people paste.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%,=".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::lifecycle::{EndReason, Event};
    use crate::model::{Actor, NewSandbox, Reachability};
    use crate::store::IdempotencyEntry;

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
        // Arrays of objects inside a record: `},{` that a test below turns
        // into `},\n{`, the separator the parallel parse splits at.
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
            sandboxes: (0..n).map(record).collect(),
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

    const SIZES: [usize; 7] = [0, 1, 2, 3, 4, 9, 40];

    #[test]
    fn parallel_serialize_writes_the_same_bytes() {
        for n in SIZES {
            let mut d = doc(n);
            let want = serialize_sequential(&d).unwrap();
            for threads in 1..=5 {
                for min in [1, 2, 7] {
                    let got = serialize_with(&mut d, threads, min).unwrap();
                    assert!(got.eq_bytes(&want));
                    assert!(
                        !got.eq_bytes(&want[1..]) && !got.eq_bytes(&[&want[..], b" "].concat())
                    );
                    assert_eq!(
                        String::from_utf8(got.0.concat()).unwrap(),
                        String::from_utf8(want.clone()).unwrap(),
                        "{n} records, {threads} threads, min {min}"
                    );
                    assert_eq!(d, doc(n), "records put back");
                }
            }
        }
    }

    /// Whatever the split points, the parallel parse gives what one parse of
    /// the whole file gives, or nothing.
    fn assert_parallel_parse(bytes: &[u8], want: &StoreDoc, must_succeed: bool) {
        assert_eq!(&serde_json::from_slice::<StoreDoc>(bytes).unwrap(), want);
        for threads in 2..=9 {
            for min_chunk in [1, 3, 50, 400, 5000] {
                match parse_parallel(bytes, threads, min_chunk) {
                    Some(got) => assert_eq!(&got, want, "{threads} threads, min {min_chunk}"),
                    None => assert!(
                        !must_succeed || bytes.len() / min_chunk < 2,
                        "{threads} threads, min {min_chunk}: fell back"
                    ),
                }
            }
        }
    }

    #[test]
    fn parallel_parse_reads_the_layout() {
        for n in SIZES {
            let d = doc(n);
            let bytes = serialize_sequential(&d).unwrap();
            assert!(bytes.starts_with(layout_head().as_bytes()));
            assert_parallel_parse(&bytes, &d, n > 0);
        }
    }

    #[test]
    fn splits_inside_records_are_caught() {
        for n in SIZES {
            let d = doc(n);
            let text = String::from_utf8(serialize_sequential(&d).unwrap()).unwrap();
            // Still the same JSON, but `,\n{` now also appears inside records
            // (and in the outbox), where a split would be wrong.
            let text = text
                .replace("},{", "},\n{")
                .replace("\n{\"event\"", "\n  {\"event\"");
            assert_parallel_parse(text.as_bytes(), &d, n > 0);
            // Other whitespace between and inside records.
            let spaced = text.replace(",\n{\"id\"", " ,\r\n\t{ \"id\"");
            assert_parallel_parse(spaced.as_bytes(), &d, false);
        }
    }

    #[test]
    fn parallel_parse_leaves_every_fault_to_the_whole_parse() {
        let d = doc(40);
        let text = String::from_utf8(serialize_sequential(&d).unwrap()).unwrap();
        let late = text.rfind("{\"id\"").unwrap();
        let bad: Vec<String> = vec![
            // A record with a field of the wrong type, late in the file.
            format!(
                "{}{}",
                &text[..late],
                text[late..].replacen("\"ttl_seconds\":1800", "\"ttl_seconds\":\"x\"", 1)
            ),
            // Truncated in the last record.
            text[..late + 40].to_string(),
            // A trailing comma after the last record.
            text.replacen("\n],\n\"idempotency\"", ",\n],\n\"idempotency\"", 1),
            // Records given twice.
            text.replacen("\n\"outbox\"", "\n\"sandboxes\":[],\n\"outbox\"", 1),
            // Garbage after the document.
            format!("{text}x"),
            // Another version after the records.
            text.replacen("\n\"outbox\"", "\n\"version\":2,\n\"outbox\"", 1),
        ];
        for (i, b) in bad.iter().enumerate() {
            assert!(
                serde_json::from_slice::<StoreDoc>(b.as_bytes()).is_err(),
                "case {i}"
            );
            for threads in 2..=5 {
                for min_chunk in [1, 100, 2000] {
                    assert!(
                        parse_parallel(b.as_bytes(), threads, min_chunk).is_none(),
                        "case {i}"
                    );
                }
            }
        }
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
        let text = String::from_utf8(serialize(&mut doc).unwrap().0.concat()).unwrap();
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

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a/b.json"), "/a/b.json");
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
