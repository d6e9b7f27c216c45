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

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::Deserialize;

use super::{Store, StoreDoc, SCHEMA_VERSION};
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
    bytes: Vec<u8>,
    doc: StoreDoc,
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

    fn parse(&self, bytes: &[u8]) -> Result<StoreDoc> {
        // The version first, so a newer schema is reported as such and not
        // as whatever parse error its new shape would cause.
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let Versioned { version } =
            serde_json::from_slice(bytes).map_err(|e| self.unparsable(e))?;
        if version != SCHEMA_VERSION {
            return Err(self.wrong_version(version));
        }
        serde_json::from_slice(bytes).map_err(|e| self.unparsable(e))
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

    fn write(&self, bytes: &[u8]) -> Result<()> {
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
        if let Some(cached) = self.cache().as_ref().filter(|c| c.bytes == bytes) {
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
            (Some(old), Some(cached)) if cached.bytes == *old => cached.doc,
            (Some(old), _) => self.parse(old)?,
        };
        f(&mut doc)?;
        if doc.version != SCHEMA_VERSION {
            return Err(Error::internal(format!(
                "an update set the store's schema version to {}; this build writes {SCHEMA_VERSION}",
                doc.version
            )));
        }
        let new = serialize(&doc)?;
        match &old {
            Some(old) if *old == new => {}
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

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = private_file_options()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn serialize(doc: &StoreDoc) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, LineFormatter::default());
    serde::Serialize::serialize(doc, &mut ser).map_err(|e| {
        Error::internal(format!("serializing the sandbox store: {e}")).with_source(e)
    })?;
    out.push(b'\n');
    Ok(out)
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
    use super::*;

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
        let text = String::from_utf8(serialize(&doc).unwrap()).unwrap();
        assert_eq!(
            text,
            "{\n\"version\":1,\n\"sandboxes\":[],\n\"idempotency\":{},\n\"outbox\":[\n\
             {\"a\":[1,{\"b\":2}]},\n\"x\"\n]\n}\n"
        );
        let back: StoreDoc = serde_json::from_str(&text).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a/b.json"), "/a/b.json");
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
