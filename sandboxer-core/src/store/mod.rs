//! The sandbox store: a versioned document of every sandbox record, the
//! idempotency keys and the event outbox, changed only inside
//! [`Store::update`] (read-modify-write under an exclusive lock).
//!
//! [`JsonFileStore`] keeps it in `sandboxes.json` in the data dir, with a
//! journal beside it once the file is large. The records of a loaded
//! document are [`Records`]: each is parsed only when it is read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Sandbox;
use crate::uploads::UploadRecord;
use crate::{Error, Result};

mod buf;
pub mod db;
mod file;
mod records;

pub use file::{store_threads, JsonFileStore};
pub use records::{HeadRef, Records};

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// One idempotency key: the request it was first used with, and the sandbox
/// it made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyEntry {
    /// Hash of the normalized request (profile, inputs, ttl, host, actor).
    pub request_hash: String,
    pub sandbox_id: String,
}

/// The whole stored document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreDoc {
    pub version: u32,
    #[serde(default)]
    pub sandboxes: Records,
    #[serde(default)]
    pub idempotency: BTreeMap<String, IdempotencyEntry>,
    /// Lifecycle events not yet delivered to the State Hub, written in the
    /// same commit as the transition they describe.
    /// Each a [`crate::events::LifecycleEvent`] in its JSON form.
    #[serde(default)]
    pub outbox: Vec<serde_json::Value>,
    /// Repos uploaded over HTTP, by id (see [`crate::uploads`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub uploads: BTreeMap<String, UploadRecord>,
}

impl Default for StoreDoc {
    fn default() -> Self {
        StoreDoc {
            version: SCHEMA_VERSION,
            sandboxes: Records::new(),
            idempotency: BTreeMap::new(),
            outbox: Vec::new(),
            uploads: BTreeMap::new(),
        }
    }
}

impl StoreDoc {
    /// The record `id`, if there is one (an error only when its stored
    /// form does not parse).
    pub fn get(&self, id: &str) -> Result<Option<&Sandbox>> {
        self.sandboxes.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Result<Option<&mut Sandbox>> {
        self.sandboxes.get_mut(id)
    }

    /// The record `id`, or `NotFound`.
    pub fn require(&self, id: &str) -> Result<&Sandbox> {
        self.get(id)?.ok_or_else(|| unknown_sandbox(id))
    }

    pub fn require_mut(&mut self, id: &str) -> Result<&mut Sandbox> {
        self.get_mut(id)?.ok_or_else(|| unknown_sandbox(id))
    }

    /// Apply a lifecycle event to record `id` and, when `emit`, queue the
    /// State Hub event in the outbox of this same commit.
    pub fn transition(
        &mut self,
        id: &str,
        event: &crate::lifecycle::Event,
        at: chrono::DateTime<chrono::Utc>,
        emit: bool,
    ) -> Result<(Sandbox, Vec<crate::lifecycle::Action>)> {
        let rec = self.require_mut(id)?;
        let from = rec.state();
        let actions = rec.apply(event, at)?;
        if emit {
            self.emit(id, Some(from))?;
        }
        Ok((self.require(id)?.clone(), actions))
    }

    /// Queue the event for record `id` having just moved from `from`.
    pub fn emit(&mut self, id: &str, from: Option<crate::lifecycle::State>) -> Result<()> {
        let rec = self.require_mut(id)?;
        rec.event_seq += 1;
        let ev = crate::events::LifecycleEvent::of(rec, from, rec.event_seq);
        self.outbox
            .push(serde_json::to_value(ev).expect("an event always serializes"));
        Ok(())
    }
}

/// The `NotFound` error for a sandbox id.
pub fn unknown_sandbox(id: &str) -> Error {
    Error::not_found(format!("no sandbox `{id}`"))
        .with_hint("`sandboxer list` shows the sandboxes this store knows")
}

/// Where sandbox records live.
///
/// Contract:
/// - `load` returns a consistent snapshot (never a half-written document).
/// - `update` runs `f` on the current document under an exclusive lock held
///   across processes, and makes the result durable before returning `Ok`.
///   If `f` returns `Err`, nothing is written.
/// - A document that does not parse, or of another schema version, is
///   refused with `StoreCorrupt` and never overwritten.
pub trait Store: Send + Sync + 'static {
    fn load(&self) -> Result<StoreDoc>;
    fn update(&self, f: &mut dyn FnMut(&mut StoreDoc) -> Result<()>) -> Result<()>;
    /// Where it is, for messages.
    fn location(&self) -> String;
}

/// `update` with a closure that returns a value.
pub fn update_with<R>(store: &dyn Store, f: impl FnOnce(&mut StoreDoc) -> Result<R>) -> Result<R> {
    let mut f = Some(f);
    let mut out = None;
    store.update(&mut |doc| {
        let f = f.take().expect("update runs the closure once");
        out = Some(f(doc)?);
        Ok(())
    })?;
    Ok(out.expect("update ran the closure"))
}
