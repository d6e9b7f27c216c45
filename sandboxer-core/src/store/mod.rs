//! Where sandboxer's state lives: a database behind the operations of
//! [`db`] ([`db::Db`], [`db::Tx`]), implemented by `sandboxer-store`
//! (SQLite embedded by default, PostgreSQL for a shared control plane).
//!
//! This module adds what every caller does inside a transaction: read a
//! record or fail with `NotFound` ([`require`]), and move a record through
//! the state machine with its State Hub event in the same transaction
//! ([`transition`], [`emit`]). [`legacy`] reads the files of the previous
//! release (`sandboxes.json` and its journal) for the one-time import.

use serde::{Deserialize, Serialize};

use crate::lifecycle::{Action, Event, State};
use crate::model::Sandbox;
use crate::{Error, Result};

pub mod db;
pub mod legacy;

use db::Tx;

/// One idempotency key: the request it was first used with, and the sandbox
/// it made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyEntry {
    /// Hash of the normalized request (profile, inputs, ttl, host, actor).
    pub request_hash: String,
    pub sandbox_id: String,
}

/// The `NotFound` error for a sandbox id.
pub fn unknown_sandbox(id: &str) -> Error {
    Error::not_found(format!("no sandbox `{id}`"))
        .with_hint("`sandboxer list` shows the sandboxes this store knows")
}

/// The record `id`, or `NotFound`.
pub fn require(tx: &mut dyn Tx, id: &str) -> Result<Sandbox> {
    tx.sandbox(id)?.ok_or_else(|| unknown_sandbox(id))
}

/// Apply a lifecycle event to `rec`, queue its State Hub event when `emit`,
/// and write the record, all in the caller's transaction.
pub fn transition(
    tx: &mut dyn Tx,
    rec: &mut Sandbox,
    event: &Event,
    at: chrono::DateTime<chrono::Utc>,
    emit_event: bool,
) -> Result<Vec<Action>> {
    let from = rec.state();
    let actions = rec.apply(event, at)?;
    if emit_event {
        emit(tx, rec, Some(from))?;
    }
    tx.update_sandbox(rec)?;
    Ok(actions)
}

/// Queue the State Hub event for `rec` having just moved from `from`
/// (`None`: it was just recorded). Bumps the record's event sequence, so
/// the caller writes `rec` in the same transaction.
pub fn emit(tx: &mut dyn Tx, rec: &mut Sandbox, from: Option<State>) -> Result<()> {
    rec.event_seq += 1;
    let ev = crate::events::LifecycleEvent::of(rec, from, rec.event_seq);
    tx.push_event(
        &rec.id,
        &serde_json::to_value(ev).expect("an event always serializes"),
    )
}
