//! [`FileLedger`]: the ledger as an append-only file, `ledger.jsonl` in the
//! data dir, shared by threads (a mutex inside) and processes (a lock file).
//!
//! - The first line is a header, `{"version":1,...}`. Another version is
//!   refused (`StoreCorrupt`) and the file never written to.
//! - Then one JSON [`Entry`] per line, in the order they were applied.
//! - An append holds an exclusive lock (`flock`, through [`File::lock`]) on
//!   the separate file `ledger.lock`; under it the handle reads the lines
//!   other handles appended since it last read (it keeps its offset),
//!   applies the new entry to its state (which enforces the rules), appends
//!   the line with one `write`, and `fdatasync`s before returning. An entry
//!   is therefore durable before the operation it pays for proceeds, and
//!   costs one sync.
//! - A torn last line (a crash mid-write: no newline, or it does not parse)
//!   is ignored by readers and cut off by the next append, under the lock.
//!   Any other line that does not parse is `StoreCorrupt`, naming the line.
//! - Reads take no lock: they read the complete lines past their offset.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use sandboxer_core::credits::Micros;
use sandboxer_core::model::{now, Actor};
use sandboxer_core::{Error, ErrorKind, Result};
use serde::Deserialize;

use crate::state::{
    check, Account, Applied, CheckReport, Entry, EntryFilter, Fate, Hold, HoldRequest, HoldState,
    LedgerState, UsageRow,
};

/// The ledger's file name in the data dir.
pub const FILE_NAME: &str = "ledger.jsonl";
/// The lock file beside it.
pub const LOCK_NAME: &str = "ledger.lock";
/// The version this build reads and writes.
pub const VERSION: u32 = 1;

/// The durable ledger. See the module docs for the file and the protocol.
///
/// ```
/// use sandboxer_core::credits::Micros;
/// use sandboxer_credits::FileLedger;
///
/// let dir = tempfile::tempdir().unwrap();
/// let ledger = FileLedger::open(dir.path()).unwrap();
/// let (ops, agent) = ("adm:ops".parse().unwrap(), "agt:bob".parse().unwrap());
/// ledger.grant(&ops, &agent, Micros::parse_amount("10").unwrap(), Some("welcome")).unwrap();
/// assert_eq!(ledger.balance(&agent).unwrap().available.to_string(), "10");
///
/// // Another handle (another process) sees it.
/// let again = FileLedger::open(dir.path()).unwrap();
/// assert_eq!(again.balance(&agent).unwrap().granted.to_string(), "10");
/// assert!(again.check().unwrap().is_ok());
/// ```
#[derive(Debug)]
pub struct FileLedger {
    path: PathBuf,
    lock_path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: LedgerState,
    /// The ledger file, opened to read and append.
    file: File,
    /// `ledger.lock`, opened once; `flock`ed around each append.
    lock: File,
    /// The byte offset after the last complete line read.
    offset: u64,
    /// The lines read so far (the header included).
    lines: usize,
    /// A write failed after its entry was applied in memory: re-read the
    /// file from the start before anything else.
    stale: bool,
}

impl FileLedger {
    /// The ledger in `data_dir/ledger.jsonl`, created (with its header) when
    /// missing, and read whole.
    pub fn open(data_dir: &Path) -> Result<FileLedger> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(data_dir)
            .map_err(|e| Error::io(format!("creating {}", data_dir.display()), e))?;
        let path = data_dir.join(FILE_NAME);
        let lock_path = data_dir.join(LOCK_NAME);
        let file = private_options()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let lock = private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("opening {}", lock_path.display()), e))?;
        let ledger = FileLedger {
            path,
            lock_path,
            inner: Mutex::new(Inner {
                state: LedgerState::new(),
                file,
                lock,
                offset: 0,
                lines: 0,
                stale: false,
            }),
        };
        ledger.ensure_header()?;
        ledger.read()?;
        Ok(ledger)
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file appends lock.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// Write the header when the file is empty, or holds only a torn header
    /// (a crash while creating it: nothing else can follow it).
    fn ensure_header(&self) -> Result<()> {
        let mut inner = self.inner();
        if header_state(&self.path, &inner.file)? == HeaderState::Complete {
            return Ok(());
        }
        inner.lock_exclusive(&self.lock_path)?;
        let result = (|| {
            match header_state(&self.path, &inner.file)? {
                HeaderState::Complete => return Ok(()),
                HeaderState::NeedsNewline => {
                    (&inner.file)
                        .write_all(b"\n")
                        .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))?;
                }
                HeaderState::Missing => {
                    inner
                        .file
                        .set_len(0)
                        .map_err(|e| Error::io(format!("truncating {}", self.path.display()), e))?;
                    // `version` first, so it is what a reader meets first.
                    let header = format!(
                        r#"{{"version":{VERSION},"format":"sandboxer credits ledger","created_at":"{}"}}"#,
                        now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    );
                    let mut line = header.into_bytes();
                    line.push(b'\n');
                    (&inner.file)
                        .write_all(&line)
                        .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))?;
                }
            }
            inner
                .file
                .sync_data()
                .map_err(|e| Error::io(format!("syncing {}", self.path.display()), e))?;
            let dir = self.path.parent().unwrap_or(Path::new("."));
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))
        })();
        inner.unlock();
        result
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                // A panic mid-operation: the state may be ahead of the file.
                let mut g = poisoned.into_inner();
                g.stale = true;
                g
            }
        }
    }

    /// Catch up with the file and run `f` on the state.
    fn read_with<T>(&self, f: impl FnOnce(&LedgerState) -> T) -> Result<T> {
        let mut inner = self.inner();
        inner.catch_up(&self.path)?;
        Ok(f(&inner.state))
    }

    fn read(&self) -> Result<()> {
        self.read_with(|_| ())
    }

    /// Append the entry `make` builds from the up-to-date state, under the
    /// lock; durable when this returns. A duplicate id writes nothing.
    fn append(&self, make: impl FnOnce(&LedgerState) -> Result<Entry>) -> Result<Applied> {
        let mut inner = self.inner();
        inner.lock_exclusive(&self.lock_path)?;
        let result = inner.append_locked(&self.path, make);
        inner.unlock();
        result
    }

    /// Grant `amount` to `to`. Only `adm:` actors may grant. `key` makes
    /// the grant idempotent (`grant:<key>`); without one a random key is
    /// used.
    pub fn grant(
        &self,
        by: &Actor,
        to: &Actor,
        amount: Micros,
        key: Option<&str>,
    ) -> Result<Applied> {
        let key = match key {
            Some(k) => k.to_string(),
            None => format!("{:016x}", rand::random::<u64>()),
        };
        self.append(|_| Ok(Entry::grant(to, amount, by, &key, now())))
    }

    /// Hold `price x TTL` for a sandbox (`hold:<sbx>`). A retry of the same
    /// hold while it is open returns it; once it was settled or voided a
    /// new hold for the sandbox is a `Conflict`.
    pub fn hold(&self, req: &HoldRequest) -> Result<Applied> {
        let applied = self.append(|_| Ok(Entry::hold(req, now())))?;
        if applied.duplicate {
            let state = self.read_with(|s| s.hold(&req.sandbox_id).map(|h| h.state))?;
            if state != Some(HoldState::Open) {
                return Err(Error::conflict(format!(
                    "the hold of sandbox {} was already {}; it cannot be taken again",
                    req.sandbox_id,
                    state
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "resolved".into())
                )));
            }
        }
        Ok(applied)
    }

    /// Hold the extra time up to `expires_at` for an open hold
    /// (`extend:<sbx>:<unix secs>`); `InsufficientCredits` when not covered.
    pub fn extend(&self, sandbox_id: &str, expires_at: DateTime<Utc>) -> Result<Applied> {
        self.append(|_| Ok(Entry::extend(sandbox_id, expires_at, now())))
    }

    /// Settle the hold of a sandbox that existed `seconds`
    /// (`settle:<sbx>`): spend `price x seconds`, at most what is held, and
    /// release the rest.
    pub fn settle(&self, sandbox_id: &str, seconds: u64, at: DateTime<Utc>) -> Result<Applied> {
        self.append(|_| Ok(Entry::settle(sandbox_id, seconds, at)))
    }

    /// Release the whole hold of a sandbox whose provisioning failed
    /// (`void:<sbx>`).
    pub fn void(&self, sandbox_id: &str) -> Result<Applied> {
        self.append(|_| Ok(Entry::void(sandbox_id, now())))
    }

    /// The actor's account.
    pub fn balance(&self, actor: &Actor) -> Result<Account> {
        self.read_with(|s| s.account(actor))
    }

    /// The entries `filter` selects, in order.
    pub fn entries(&self, filter: &EntryFilter) -> Result<Vec<Entry>> {
        self.read_with(|s| s.filtered(filter))
    }

    /// One row per sandbox the actor held credits for.
    pub fn usage(&self, actor: &Actor) -> Result<Vec<UsageRow>> {
        self.read_with(|s| s.usage(actor))
    }

    /// Check every invariant (see [`crate::state::check`]).
    pub fn check(&self) -> Result<CheckReport> {
        self.read_with(check)
    }

    /// The holds neither settled nor voided.
    pub fn open_holds(&self) -> Result<Vec<Hold>> {
        self.read_with(LedgerState::open_holds)
    }

    /// The hold of a sandbox, whatever its state.
    pub fn hold_of(&self, sandbox_id: &str) -> Result<Option<Hold>> {
        self.read_with(|s| s.hold(sandbox_id).cloned())
    }

    /// A copy of the whole state (for reports).
    pub fn snapshot(&self) -> Result<LedgerState> {
        self.read_with(Clone::clone)
    }

    /// Resolve the open holds whose sandboxes are no longer live, after a
    /// crash between the ledger and the sandbox store: `Ended` is settled by
    /// its seconds, `Failed` and `Missing` are voided, `Live` is left open.
    /// `fate` is asked without any ledger lock held. Returns the entries
    /// written (a hold another process resolved meanwhile is skipped).
    pub fn reconcile(&self, fate: &dyn Fn(&str) -> Fate) -> Result<Vec<Entry>> {
        self.reconcile_inner(fate)
    }

    /// [`FileLedger::reconcile`] against the sandbox store, as every command
    /// (CLI and HTTP) does first. Cheap when no hold is open: the store is
    /// read only when one is.
    pub fn reconcile_with_store(
        &self,
        store: &dyn sandboxer_core::store::Store,
    ) -> Result<Vec<Entry>> {
        let holds = self.open_holds()?;
        if holds.is_empty() {
            return Ok(Vec::new());
        }
        let doc = store.load()?;
        // Each held sandbox's record is read here, so that one that does
        // not parse stops this (a corrupt record is not a missing one).
        for h in &holds {
            doc.get(&h.sandbox_id)?;
        }
        let done = self.reconcile(&|id| Fate::of(doc.get(id).ok().flatten()))?;
        for e in &done {
            tracing::info!("reconciled the ledger: {} ({})", e.id, e.kind_name());
        }
        Ok(done)
    }

    fn reconcile_inner(&self, fate: &dyn Fn(&str) -> Fate) -> Result<Vec<Entry>> {
        let todo = self.read_with(|s| s.reconcile_entries(fate, now()))?;
        let mut written = Vec::new();
        for entry in todo {
            match self.append(|_| Ok(entry.clone())) {
                Ok(a) if !a.duplicate => written.push(a.entry),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    tracing::debug!("reconcile: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }
}

impl Inner {
    fn lock_exclusive(&mut self, lock_path: &Path) -> Result<()> {
        loop {
            match self.lock.lock() {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(format!("locking {}", lock_path.display()), e)),
            }
        }
    }

    fn unlock(&mut self) {
        if let Err(e) = self.lock.unlock() {
            tracing::warn!("could not unlock the ledger lock: {e}");
        }
    }

    /// Read the complete lines past `offset` and apply them. Returns the
    /// file's length (anything past the new offset is a torn tail).
    fn catch_up(&mut self, path: &Path) -> Result<u64> {
        if self.stale {
            self.state = LedgerState::new();
            self.offset = 0;
            self.lines = 0;
            self.stale = false;
        }
        let len = self
            .file
            .metadata()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
            .len();
        if len < self.offset {
            return Err(Error::new(
                ErrorKind::StoreCorrupt,
                format!(
                    "the ledger {} shrank from {} to {len} bytes while in use; it is append-only",
                    path.display(),
                    self.offset
                ),
            )
            .with_hint("another program truncated or replaced it; restore it from a backup"));
        }
        if len == self.offset {
            return Ok(len);
        }
        let mut buf = vec![0u8; (len - self.offset) as usize];
        self.file
            .read_exact_at(&mut buf, self.offset)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let mut pos = 0usize;
        while let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') {
            let line = &buf[pos..pos + nl];
            let line_no = self.lines + 1;
            let last = pos + nl + 1 == buf.len();
            if line_no == 1 {
                check_header(path, line)?;
            } else {
                match serde_json::from_slice::<Entry>(line) {
                    Ok(entry) => {
                        if let Err(err) = self.state.apply(&entry) {
                            tracing::warn!(
                                "{} line {line_no} (`{}`) breaks the rules and is left out: {}",
                                path.display(),
                                entry.id,
                                err.message()
                            );
                            self.state.note_rejected(line_no, &entry.id, err.message());
                        }
                    }
                    // A crash can leave a complete-looking last line of
                    // garbage (zeros after a power cut): a torn tail.
                    Err(_) if last => break,
                    Err(e) => return Err(corrupt_line(path, line_no, &e)),
                }
            }
            pos += nl + 1;
            self.offset += nl as u64 + 1;
            self.lines += 1;
        }
        Ok(len)
    }

    fn append_locked(
        &mut self,
        path: &Path,
        make: impl FnOnce(&LedgerState) -> Result<Entry>,
    ) -> Result<Applied> {
        let len = self.catch_up(path)?;
        if self.lines == 0 {
            return Err(Error::new(
                ErrorKind::StoreCorrupt,
                format!("the ledger {} has no header line", path.display()),
            ));
        }
        if len > self.offset {
            // Under the lock no append is in flight: this is a torn tail.
            tracing::warn!(
                "cutting a torn last line ({} bytes) off {}",
                len - self.offset,
                path.display()
            );
            self.file
                .set_len(self.offset)
                .map_err(|e| Error::io(format!("truncating {}", path.display()), e))?;
        }
        let entry = make(&self.state)?;
        let applied = self.state.apply(&entry)?;
        if applied.duplicate {
            return Ok(applied);
        }
        let mut line = serde_json::to_vec(&applied.entry)
            .map_err(|e| Error::internal(format!("serializing a ledger entry: {e}")))?;
        line.push(b'\n');
        let written = (&self.file)
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // The state holds an entry the file may not: start over from
            // the file next time.
            self.stale = true;
            return Err(Error::io(format!("appending to {}", path.display()), e));
        }
        self.offset += line.len() as u64;
        self.lines += 1;
        Ok(applied)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum HeaderState {
    Complete,
    /// A whole header without its newline.
    NeedsNewline,
    /// Empty, or a torn header.
    Missing,
}

fn header_state(path: &Path, file: &File) -> Result<HeaderState> {
    let mut buf = vec![0u8; 4096];
    let n = file
        .read_at(&mut buf, 0)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let head = &buf[..n];
    if head.contains(&b'\n') {
        return Ok(HeaderState::Complete);
    }
    if n == 0 || serde_json::from_slice::<serde_json::Value>(head).is_err() {
        return Ok(HeaderState::Missing);
    }
    // It parses: refuse another version here rather than touch it.
    check_header(path, head)?;
    Ok(HeaderState::NeedsNewline)
}

fn check_header(path: &Path, line: &[u8]) -> Result<()> {
    #[derive(Deserialize)]
    struct Header {
        version: u32,
    }
    let header: Header = serde_json::from_slice(line).map_err(|e| corrupt_line(path, 1, &e))?;
    if header.version != VERSION {
        return Err(Error::new(
            ErrorKind::StoreCorrupt,
            format!(
                "the ledger {} has version {}; this build of sandboxer reads version {VERSION}",
                path.display(),
                header.version
            ),
        )
        .with_hint(format!(
            "it was left untouched. Use a sandboxer that reads version {}",
            header.version
        )));
    }
    Ok(())
}

fn corrupt_line(path: &Path, line: usize, e: &serde_json::Error) -> Error {
    Error::new(
        ErrorKind::StoreCorrupt,
        format!(
            "the ledger {} does not parse at line {line}: {e}",
            path.display()
        ),
    )
    .with_hint(
        "sandboxer will not write to it. Repair the line by hand (each line is one JSON entry)",
    )
}

fn private_options() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.mode(0o600);
    options
}
