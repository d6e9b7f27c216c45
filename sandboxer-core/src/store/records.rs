//! [`Records`]: the sandbox records of a [`super::StoreDoc`], each kept as
//! the bytes it was stored as and parsed only when someone reads it.
//!
//! A command touches one or two records, but the store holds every
//! sandbox ever made. Parsing 10,000 records into [`Sandbox`] values takes
//! about 110 ms; finding the lines they sit on takes 2 ms. So a loaded
//! record is a line of the file plus its [`Head`] (id, state, host, actor,
//! profile: the fields lookups and filters need), read from the start of
//! the line without parsing the rest. The full record is parsed the first
//! time it is asked for, and a parse error then is a `StoreCorrupt` error
//! that names the file and line.
//!
//! A record handed out mutably counts as touched; the store serializes the
//! touched ones at commit and writes those whose bytes changed.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::lifecycle::State;
use crate::model::{Actor, Sandbox};
use crate::{Error, ErrorKind, Result};

/// The fields of a stored record that lookups and filters read, as byte
/// ranges of its text (no copies: a load reads 10,000 of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredHead {
    id: Range<u32>,
    host: Range<u32>,
    actor: Range<u32>,
    profile: Range<u32>,
    state: State,
}

/// Where a stored record came from, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub file: Arc<Path>,
    /// 1-based.
    pub line: usize,
}

/// A record as stored: one compact JSON object inside `buf`.
#[derive(Clone)]
pub(crate) struct Stored {
    pub buf: Arc<super::buf::Buf>,
    pub range: Range<usize>,
    pub origin: Origin,
}

impl Stored {
    pub fn bytes(&self) -> &[u8] {
        &self.buf.bytes()[self.range.clone()]
    }

    fn parse(&self) -> Result<Sandbox> {
        serde_json::from_slice(self.bytes()).map_err(|e| corrupt_record(&self.origin, &e))
    }
}

/// The `StoreCorrupt` error for a record that does not parse.
pub(crate) fn corrupt_record(origin: &Origin, e: &serde_json::Error) -> Error {
    let path = origin.file.display();
    Error::new(
        ErrorKind::StoreCorrupt,
        format!(
            "the sandbox store {path} does not parse (line {}, column {}): the record on \
             that line: {e}",
            origin.line,
            e.column(),
        ),
    )
    .with_hint(format!(
        "sandboxer will not overwrite it. Repair that line by hand, or move the file \
         aside to start an empty store: {} (sandboxer then forgets the sandboxes it lists; \
         they are not torn down)",
        super::file::move_aside_command(&origin.file, "corrupt"),
    ))
}

#[derive(Clone)]
struct Slot {
    /// Read from the stored text; `None` when the record was parsed whole
    /// instead (new, or a line the head could not be read from).
    head: Option<StoredHead>,
    stored: Option<Stored>,
    /// Boxed: a `Sandbox` is large, and most slots never hold one.
    parsed: OnceLock<Box<Sandbox>>,
    /// Handed out mutably (or new): serialized and compared at commit.
    touched: bool,
}

impl Slot {
    fn new(s: Sandbox) -> Slot {
        let parsed = OnceLock::new();
        let _ = parsed.set(Box::new(s));
        Slot {
            head: None,
            stored: None,
            parsed,
            touched: true,
        }
    }

    fn get(&self) -> Result<&Sandbox> {
        if let Some(s) = self.parsed.get() {
            return Ok(s);
        }
        let stored = self
            .stored
            .as_ref()
            .ok_or_else(|| Error::internal("a record with neither stored bytes nor a value"))?;
        let s = stored.parse()?;
        let head_id = self.head().id();
        if s.id != head_id {
            return Err(Error::new(
                ErrorKind::StoreCorrupt,
                format!(
                    "the sandbox store {} line {}: the record's id `{}` is not the `{head_id}` \
                     its line starts with",
                    stored.origin.file.display(),
                    stored.origin.line,
                    s.id,
                ),
            ));
        }
        let _ = self.parsed.set(Box::new(s));
        Ok(self.parsed.get().expect("just set"))
    }

    fn get_mut(&mut self) -> Result<&mut Sandbox> {
        self.get()?;
        self.touched = true;
        Ok(self.parsed.get_mut().expect("parsed above"))
    }

    fn head(&self) -> HeadRef<'_> {
        match (&self.head, &self.stored, self.touched) {
            (Some(head), Some(stored), false) => HeadRef(Inner::Stored {
                text: stored.bytes(),
                head,
            }),
            _ => HeadRef(Inner::Parsed(
                self.parsed.get().expect("a slot without a head is parsed"),
            )),
        }
    }
}

/// A record's head (id, state, host, actor, profile): read from its
/// stored line, or from the record itself once it was parsed without one
/// or handed out mutably (it may have changed since).
#[derive(Clone, Copy)]
pub struct HeadRef<'a>(Inner<'a>);

#[derive(Clone, Copy)]
enum Inner<'a> {
    Stored {
        text: &'a [u8],
        head: &'a StoredHead,
    },
    Parsed(&'a Sandbox),
}

impl<'a> HeadRef<'a> {
    /// The head of a record at hand.
    pub fn of(s: &'a Sandbox) -> HeadRef<'a> {
        HeadRef(Inner::Parsed(s))
    }

    /// A field of the stored text (checked to be UTF-8 when the head was
    /// read; empty should the bytes have changed under a mapping since).
    fn field(text: &'a [u8], r: &Range<u32>) -> &'a str {
        std::str::from_utf8(&text[r.start as usize..r.end as usize]).unwrap_or_default()
    }

    pub fn id(&self) -> &'a str {
        match self.0 {
            Inner::Stored { text, head } => Self::field(text, &head.id),
            Inner::Parsed(s) => &s.id,
        }
    }
    pub fn state(&self) -> State {
        match self.0 {
            Inner::Stored { head, .. } => head.state,
            Inner::Parsed(s) => s.state(),
        }
    }
    pub fn host(&self) -> &'a str {
        match self.0 {
            Inner::Stored { text, head } => Self::field(text, &head.host),
            Inner::Parsed(s) => &s.host,
        }
    }
    /// The actor as written (`adm:NAME`).
    pub fn actor(&self) -> std::borrow::Cow<'a, str> {
        match self.0 {
            Inner::Stored { text, head } => Self::field(text, &head.actor).into(),
            Inner::Parsed(s) => s.actor.to_string().into(),
        }
    }
    /// Whether the actor is `a` (no allocation).
    pub fn actor_is(&self, a: &Actor) -> bool {
        match self.0 {
            Inner::Stored { text, head } => a.is_written_as(Self::field(text, &head.actor)),
            Inner::Parsed(s) => &s.actor == a,
        }
    }
    pub fn profile(&self) -> &'a str {
        match self.0 {
            Inner::Stored { text, head } => Self::field(text, &head.profile),
            Inner::Parsed(s) => &s.profile,
        }
    }
    /// Destroyed or failed.
    pub fn is_terminal(&self) -> bool {
        matches!(self.state(), State::Destroyed | State::Failed)
    }
}

fn id_hash(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// The sandbox records of the store, oldest first.
#[derive(Clone, Default)]
pub struct Records {
    slots: Vec<Slot>,
    /// Slot by the hash of its id. A lookup checks the id it finds and
    /// falls back to a scan, so a collision costs time, never a wrong
    /// answer.
    index: HashMap<u64, usize>,
    /// Set by the store to what it loaded; a commit whose records carry
    /// another value replaced them wholesale (records may be gone), which
    /// a journal line cannot say.
    pub(crate) lineage: u64,
}

impl Records {
    pub fn new() -> Records {
        Records::default()
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn position(&self, id: &str) -> Option<usize> {
        match self.index.get(&id_hash(id)) {
            Some(&i) if self.slots[i].head().id() == id => Some(i),
            Some(_) => self.slots.iter().position(|s| s.head().id() == id),
            None => None,
        }
    }

    /// Index slot `i` (already in `slots`).
    fn index_slot(&mut self, i: usize) {
        let h = id_hash(self.slots[i].head().id());
        self.index.entry(h).or_insert(i);
    }

    pub fn contains(&self, id: &str) -> bool {
        self.position(id).is_some()
    }

    /// The record `id`, parsed if it was not yet.
    pub fn get(&self, id: &str) -> Result<Option<&Sandbox>> {
        match self.position(id) {
            Some(i) => self.slots[i].get().map(Some),
            None => Ok(None),
        }
    }

    /// The record `id` to change; it is written at commit if it changed.
    pub fn get_mut(&mut self, id: &str) -> Result<Option<&mut Sandbox>> {
        match self.position(id) {
            Some(i) => self.slots[i].get_mut().map(Some),
            None => Ok(None),
        }
    }

    /// Add a record at the end (the newest). An id that is already there
    /// is an internal error: ids are drawn until free.
    pub fn push(&mut self, s: Sandbox) -> Result<()> {
        if self.contains(&s.id) {
            return Err(Error::internal(format!(
                "a second record with id `{}` in the store",
                s.id
            )));
        }
        self.slots.push(Slot::new(s));
        self.index_slot(self.slots.len() - 1);
        Ok(())
    }

    /// Room for `n` more records.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.slots.reserve(n);
        self.index.reserve(n);
    }

    /// Every record's head, without parsing any record.
    pub fn heads(&self) -> impl Iterator<Item = HeadRef<'_>> + '_ {
        self.slots.iter().map(Slot::head)
    }

    /// Every record, each parsed (the first error stops it). At 10,000
    /// records this costs about 100 ms; [`Records::heads`] and
    /// [`Records::get`] do not.
    pub fn all(&self) -> Result<impl Iterator<Item = &Sandbox> + '_> {
        for slot in &self.slots {
            slot.get()?;
        }
        Ok(self
            .slots
            .iter()
            .map(|s| &**s.parsed.get().expect("parsed above")))
    }

    /// The records whose head passes `keep`, parsed.
    pub fn matching(&self, keep: impl Fn(&HeadRef<'_>) -> bool) -> Result<Vec<&Sandbox>> {
        self.slots
            .iter()
            .filter(|s| keep(&s.head()))
            .map(Slot::get)
            .collect()
    }

    /// The records whose head passes `keep`, parsed on up to `threads`
    /// threads and moved out (no copies): how `list` reads a large store.
    pub fn into_matching(
        self,
        keep: impl Fn(&HeadRef<'_>) -> bool,
        threads: usize,
    ) -> Result<Vec<Sandbox>> {
        let kept: Vec<bool> = self.slots.iter().map(|s| keep(&s.head())).collect();
        parse_slots(
            self.slots
                .iter()
                .zip(&kept)
                .filter(|(_, k)| **k)
                .map(|(s, _)| s),
            threads,
        )?;
        Ok(self
            .slots
            .into_iter()
            .zip(kept)
            .filter(|(_, k)| *k)
            .map(|(s, _)| *s.parsed.into_inner().expect("parsed above"))
            .collect())
    }

    /// Every record, owned.
    pub fn into_vec(self) -> Result<Vec<Sandbox>> {
        self.into_matching(|_| true, 1)
    }

    /// Parse every record not parsed yet on up to `threads` threads (a
    /// checkpoint validates the whole store this way).
    pub(crate) fn parse_all(&self, threads: usize) -> Result<()> {
        parse_slots(self.slots.iter(), threads)
    }

    /// Each record as one line of compact JSON, for a checkpoint: the stored
    /// bytes of a record nobody touched, a fresh serialization of the rest.
    pub(crate) fn lines(&self) -> impl Iterator<Item = Result<Cow<'_, [u8]>>> + '_ {
        self.slots
            .iter()
            .map(|slot| match (&slot.stored, slot.touched) {
                (Some(stored), false) => Ok(Cow::Borrowed(stored.bytes())),
                _ => serialize(slot.get()?).map(|s| Cow::Owned(s.into_bytes())),
            })
    }

    /// The touched records whose serialization differs from what is stored,
    /// serialized.
    pub(crate) fn changed(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for slot in self.slots.iter().filter(|s| s.touched) {
            let text = serialize(slot.get()?)?;
            if slot
                .stored
                .as_ref()
                .is_none_or(|st| st.bytes() != text.as_bytes())
            {
                out.push(text);
            }
        }
        Ok(out)
    }

    /// Add a stored record, or replace the one of its id when `replace`
    /// (loading: the snapshot's lines, where an id twice is an error, then
    /// the journal's, where a record replaces the older one).
    pub(crate) fn put_stored(&mut self, stored: Stored, replace: bool) -> Result<()> {
        let slot = Slot {
            head: peek_head(stored.bytes()),
            stored: Some(stored),
            parsed: OnceLock::new(),
            touched: false,
        };
        if slot.head.is_none() {
            // Not in the layout this build writes: parse it whole now.
            let s = slot.stored.as_ref().expect("set above").parse()?;
            let _ = slot.parsed.set(Box::new(s));
        }
        match self.position(slot.head().id()) {
            Some(i) if replace => self.slots[i] = slot,
            Some(i) => {
                let first = self.slots[i].stored.as_ref().map_or(0, |s| s.origin.line);
                let origin = &slot.stored.as_ref().expect("set above").origin;
                return Err(Error::new(
                    ErrorKind::StoreCorrupt,
                    format!(
                        "the sandbox store {} has two records with id `{}` (lines {first} and {})",
                        origin.file.display(),
                        slot.head().id(),
                        origin.line,
                    ),
                )
                .with_hint(format!(
                    "sandboxer will not overwrite it. Remove one of the two lines by hand, or \
                     move the file aside to start an empty store: {}",
                    super::file::move_aside_command(&origin.file, "corrupt"),
                )));
            }
            None => {
                self.slots.push(slot);
                self.index_slot(self.slots.len() - 1);
            }
        }
        Ok(())
    }

    /// Each selected record in its public form (no `backend`) as compact
    /// JSON, with the stored bytes reused where nobody touched the record.
    /// Large lists are done on up to `threads` threads.
    pub fn public_json(
        &self,
        keep: impl Fn(&HeadRef<'_>) -> bool,
        threads: usize,
    ) -> Result<Vec<Cow<'_, [u8]>>> {
        let picked: Vec<&Slot> = self.slots.iter().filter(|s| keep(&s.head())).collect();
        fn one<'a>(slot: &&'a Slot) -> Result<Cow<'a, [u8]>> {
            match (&slot.stored, slot.touched) {
                (Some(stored), false) => public_from_stored(stored),
                _ => crate::model::public_view(|| serialize(slot.get()?))
                    .map(|s| Cow::Owned(s.into_bytes())),
            }
        }
        in_chunks(&picked, threads, 1024, |g| g.iter().map(one).collect())
    }
}

/// `f` on `items` split into up to `threads` chunks of at least
/// `min_per_thread` items, each on its own thread (the first on this one),
/// the results in order. A thread that cannot start leaves its chunk to
/// this one; a panic in one is raised here.
fn in_chunks<'a, T: Sync, R: Send>(
    items: &'a [T],
    threads: usize,
    min_per_thread: usize,
    f: impl Fn(&'a [T]) -> Result<Vec<R>> + Sync,
) -> Result<Vec<R>> {
    let chunks = threads.min(items.len() / min_per_thread.max(1)).max(1);
    if chunks < 2 {
        return f(items);
    }
    let per = items.len().div_ceil(chunks);
    std::thread::scope(|scope| {
        let f = &f;
        let mut groups = items.chunks(per);
        let first = groups.next().unwrap_or_default();
        let later: Vec<_> = groups
            .map(|g| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || f(g))
                    .map_err(|_| g)
            })
            .collect();
        let mut out = f(first)?;
        for h in later {
            out.extend(match h {
                Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?,
                Err(g) => f(g)?,
            });
        }
        Ok(out)
    })
}

/// Parse those of `slots` not parsed yet, on up to `threads` threads (the
/// first error stops it).
fn parse_slots<'a>(slots: impl Iterator<Item = &'a Slot>, threads: usize) -> Result<()> {
    let todo: Vec<&Slot> = slots.filter(|s| s.parsed.get().is_none()).collect();
    in_chunks(&todo, threads, 512, |g| {
        g.iter().try_for_each(|s| s.get().map(drop))?;
        Ok(Vec::<()>::new())
    })
    .map(drop)
}

/// The stored record without its top-level `backend` field, checked to be
/// one JSON object on the way (the keys are split with `serde_json`).
fn public_from_stored(stored: &Stored) -> Result<Cow<'_, [u8]>> {
    let text = stored.bytes();
    let fields: Fields<'_> =
        serde_json::from_slice(text).map_err(|e| corrupt_record(&stored.origin, &e))?;
    if !fields.0.iter().any(|(k, _)| *k == "backend") {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = Vec::with_capacity(text.len());
    out.push(b'{');
    let mut first = true;
    for (k, v) in fields.0.iter().filter(|(k, _)| *k != "backend") {
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(v.get().as_bytes());
    }
    out.push(b'}');
    Ok(Cow::Owned(out))
}

/// A JSON object's fields in order, each value unparsed. Keys must need no
/// escaping (every key of a record is a plain field name); a key that does
/// is refused, and the caller's error names the line.
struct Fields<'a>(Vec<(&'a str, &'a serde_json::value::RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sandbox record (a JSON object)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(32);
                while let Some(k) = map.next_key::<&'de str>()? {
                    out.push((k, map.next_value()?));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn serialize(s: &Sandbox) -> Result<String> {
    serde_json::to_string(s)
        .map_err(|e| Error::internal(format!("serializing the sandbox store: {e}")).with_source(e))
}

/// The head of a record line this build wrote: the first fields of a
/// [`Sandbox`] are plain strings and numbers (`id`, `profile`,
/// `profile_version`, `extension`, `host`, `state`, `reason`, `actor`),
/// read here up to the first field that is not. `None` when the line is not
/// like that (written by hand, or by another build, or a string with an
/// escape): the caller parses the whole record instead, so the answer never
/// rests on this guess.
pub(crate) fn peek_head(b: &[u8]) -> Option<StoredHead> {
    if b.first() != Some(&b'{') || b.len() > u32::MAX as usize {
        return None;
    }
    let mut pos = 1;
    let (mut id, mut state, mut host, mut actor, mut profile) = (None, None, None, None, None);
    loop {
        // `"key":`
        if b.get(pos) != Some(&b'"') {
            return None;
        }
        let key_end = pos + 1 + b[pos + 1..].iter().position(|&c| c == b'"' || c == b'\\')?;
        if b[key_end] != b'"' || b.get(key_end + 1) != Some(&b':') {
            return None;
        }
        let key = &b[pos + 1..key_end];
        pos = key_end + 2;
        let value = match *b.get(pos)? {
            b'"' => {
                let end = pos + 1 + b[pos + 1..].iter().position(|&c| c == b'"' || c == b'\\')?;
                if b[end] != b'"' {
                    // An escape: leave it to the full parse.
                    return None;
                }
                let r = (pos + 1) as u32..end as u32;
                pos = end + 1;
                Some(r)
            }
            b'{' | b'[' => break,
            _ => {
                pos += b[pos..].iter().position(|&c| c == b',' || c == b'}')?;
                None
            }
        };
        let slot = match key {
            b"id" => &mut id,
            b"state" => &mut state,
            b"host" => &mut host,
            b"actor" => &mut actor,
            b"profile" => &mut profile,
            _ => &mut None,
        };
        if value.is_some() && slot.is_some() {
            // A duplicate key: the full parse decides.
            return None;
        }
        if value.is_some() {
            *slot = value;
        }
        match b.get(pos)? {
            b',' => pos += 1,
            _ => break,
        }
    }
    let field = |r: &Range<u32>| std::str::from_utf8(&b[r.start as usize..r.end as usize]).ok();
    for r in [&id, &host, &profile] {
        field(r.as_ref()?)?;
    }
    let state = match field(state.as_ref()?)? {
        "provisioning" => State::Provisioning,
        "ready" => State::Ready,
        "destroying" => State::Destroying,
        "destroyed" => State::Destroyed,
        "failed" => State::Failed,
        _ => return None,
    };
    // A well-formed actor; anything else is parsed whole.
    Actor::check(field(actor.as_ref()?)?).ok()?;
    Some(StoredHead {
        id: id?,
        host: host?,
        actor: actor?,
        profile: profile?,
        state,
    })
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.slots.iter().map(|s| match s.parsed.get() {
                Some(p) => format!("{p:?}"),
                None => format!("{} ({}, stored)", s.head().id(), s.head().state()),
            }))
            .finish()
    }
}

/// Equal when every record parses and the records are equal in order; a
/// record that does not parse is equal to nothing.
impl PartialEq for Records {
    fn eq(&self, other: &Records) -> bool {
        match (self.all(), other.all()) {
            (Ok(a), Ok(b)) => a.eq(b),
            _ => false,
        }
    }
}

impl From<Vec<Sandbox>> for Records {
    fn from(list: Vec<Sandbox>) -> Records {
        let mut out = Records::new();
        out.reserve(list.len());
        for s in list {
            // A duplicate id replaces the earlier record, as in a journal.
            match out.position(&s.id) {
                Some(i) => out.slots[i] = Slot::new(s),
                None => {
                    out.slots.push(Slot::new(s));
                    out.index_slot(out.slots.len() - 1);
                }
            }
        }
        out
    }
}

impl Serialize for Records {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.slots.len()))?;
        for slot in &self.slots {
            seq.serialize_element(slot.get().map_err(S::Error::custom)?)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Records {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let list = Vec::<Sandbox>::deserialize(d)?;
        let mut ids = std::collections::HashSet::new();
        if let Some(dup) = list.iter().find(|s| !ids.insert(s.id.as_str())) {
            return Err(serde::de::Error::custom(format!(
                "two records with id `{}`",
                dup.id
            )));
        }
        Ok(Records::from(list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Sandbox {
        serde_json::from_value(serde_json::json!({
            "id": id, "profile": "profile.sandbox-canary", "profile_version": 1,
            "extension": "ext.canary", "host": "local", "state": "ready",
            "actor": "adm:ops", "created_at": "2026-11-01T00:00:00Z",
            "ready_at": null, "expires_at": null, "ended_at": null,
            "reachability": null, "recreated_from": null, "recreated_as": null,
            "cost": null, "ttl_seconds": 60, "updated_at": "2026-11-01T00:00:00Z",
            "backend": {"pid": 1}
        }))
        .unwrap()
    }

    fn stored(text: &str, line: usize) -> Stored {
        Stored {
            buf: Arc::new(super::super::buf::Buf::Heap(text.as_bytes().to_vec())),
            range: 0..text.len(),
            origin: Origin {
                file: Arc::from(Path::new("/d/sandboxes.json")),
                line,
            },
        }
    }

    #[test]
    fn peek_reads_what_the_full_parse_reads() {
        let s = record("sbx-aaaaaaaaaa");
        let text = serde_json::to_string(&s).unwrap();
        let head = peek_head(text.as_bytes()).unwrap();
        let h = HeadRef(Inner::Stored {
            text: text.as_bytes(),
            head: &head,
        });
        let p = HeadRef::of(&s);
        assert_eq!(
            (h.id(), h.state(), h.host(), h.actor(), h.profile()),
            (p.id(), p.state(), p.host(), p.actor(), p.profile())
        );
    }

    #[test]
    fn peek_gives_up_rather_than_guess() {
        for text in [
            r#"{"id":"sbx-a\"b","state":"ready","host":"h","actor":"adm:x","profile":"p","x":{}}"#,
            r#"{"id":"sbx-a","id":"sbx-b","state":"ready","host":"h","actor":"adm:x","profile":"p"}"#,
            r#"{"id":"sbx-a","state":"asleep","host":"h","actor":"adm:x","profile":"p"}"#,
            r#"{"id":"sbx-a","state":"ready","x":{},"host":"h","actor":"adm:x","profile":"p"}"#,
            r#"{ "id":"sbx-a","state":"ready","host":"h","actor":"adm:x","profile":"p"}"#,
            r#"{"id":"sbx-a","state":"ready","host":"h","actor":"nobody","profile":"p"}"#,
            r#"{"id":"sbx-a","state":"ready","host":"h","actor":"ADM:x","profile":"p"}"#,
            r#"{"id":"sbx-a","state":"ready","host":"h","actor":"adm:","profile":"p"}"#,
            "",
            "{",
        ] {
            assert_eq!(peek_head(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn a_record_is_parsed_when_read_and_errors_name_the_line() {
        let mut r = Records::new();
        let good = serde_json::to_string(&record("sbx-aaaaaaaaaa")).unwrap();
        r.put_stored(stored(&good, 4), false).unwrap();
        // A head that peeks fine over a body that does not parse.
        let bad = good.replace("\"ttl_seconds\":60", "\"ttl_seconds\":\"sixty\"");
        let bad = bad.replace("sbx-aaaaaaaaaa", "sbx-bbbbbbbbbb");
        r.put_stored(stored(&bad, 5), false).unwrap();
        assert_eq!(r.heads().count(), 2);
        assert!(r.get("sbx-aaaaaaaaaa").unwrap().is_some());
        let e = r.get("sbx-bbbbbbbbbb").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::StoreCorrupt);
        assert!(e.to_string().contains("line 5"), "{e}");
        assert!(r.all().is_err());
        assert!(r.changed().unwrap().is_empty());
    }

    #[test]
    fn only_changed_records_are_written() {
        let mut r = Records::new();
        for (i, id) in ["sbx-aaaaaaaaaa", "sbx-bbbbbbbbbb"].iter().enumerate() {
            let text = serde_json::to_string(&record(id)).unwrap();
            r.put_stored(stored(&text, i + 4), false).unwrap();
        }
        // Read mutably but not changed: nothing to write.
        r.get_mut("sbx-aaaaaaaaaa").unwrap().unwrap();
        assert!(r.changed().unwrap().is_empty());
        r.get_mut("sbx-bbbbbbbbbb").unwrap().unwrap().ttl_seconds = 120;
        r.push(record("sbx-cccccccccc")).unwrap();
        let changed = r.changed().unwrap();
        assert_eq!(changed.len(), 2);
        assert!(
            changed[0].contains("sbx-bbbbbbbbbb") && changed[0].contains("\"ttl_seconds\":120")
        );
        assert!(changed[1].contains("sbx-cccccccccc"));
        assert!(r.push(record("sbx-cccccccccc")).is_err());
    }

    #[test]
    fn into_matching_moves_out_what_matching_reads_on_any_thread_count() {
        // Enough stored records for two threads (512 each at least), one
        // parsed already, one new, and every third one `failed`.
        let build = || {
            let mut r = Records::new();
            for i in 0..1100 {
                let mut text = serde_json::to_string(&record(&format!("sbx-{i:010}"))).unwrap();
                if i % 3 == 0 {
                    text = text.replace("\"state\":\"ready\"", "\"state\":\"failed\"");
                }
                r.put_stored(stored(&text, i + 4), false).unwrap();
            }
            r.get("sbx-0000000001").unwrap().unwrap();
            r.push(record("sbx-new0000000")).unwrap();
            r
        };
        let keep = |h: &HeadRef<'_>| h.state() != State::Failed;
        let r = build();
        let want: Vec<Sandbox> = r.matching(keep).unwrap().into_iter().cloned().collect();
        assert_eq!(want.len(), 1100 - 367 + 1);
        for threads in [1, 2, 4] {
            assert_eq!(build().into_matching(keep, threads).unwrap(), want);
        }
        // A record that does not parse fails the whole read, on any thread.
        let mut r = build();
        let bad = serde_json::to_string(&record("sbx-bad0000000"))
            .unwrap()
            .replace("\"ttl_seconds\":60", "\"ttl_seconds\":\"sixty\"");
        r.put_stored(stored(&bad, 2000), false).unwrap();
        let e = r.into_matching(keep, 2).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::StoreCorrupt);
        assert!(e.to_string().contains("line 2000"), "{e}");
    }

    #[test]
    fn public_json_leaves_out_backend_only() {
        let mut r = Records::new();
        let s = record("sbx-aaaaaaaaaa");
        let text = serde_json::to_string(&s).unwrap();
        r.put_stored(stored(&text, 4), false).unwrap();
        r.push(record("sbx-bbbbbbbbbb")).unwrap();
        let want = crate::model::public_view(|| serde_json::to_string(&s).unwrap());
        for threads in [1, 2] {
            let out = r.public_json(|_| true, threads).unwrap();
            assert_eq!(*out[0], *want.as_bytes());
            let second = std::str::from_utf8(&out[1]).unwrap();
            assert!(!second.contains("backend") && second.contains("sbx-bbbbbbbbbb"));
            let none = r.public_json(|h| h.id() == "nothing", threads).unwrap();
            assert!(none.is_empty());
        }
    }
}
