//! [`status`]: what waits in the outbox, for `sandboxer events status` and
//! the HTTP API.

use chrono::{DateTime, Utc};
use sandboxer_core::lifecycle::State;
use serde::Serialize;

use crate::outbox::{self, Entry, FailureKind};

/// The outbox at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxStatus {
    /// The hub events go to (credentials hidden); `None` when
    /// `SANDBOXER_STATE_HUB_URL` is not set.
    pub hub_url: Option<String>,
    /// Events waiting for delivery.
    pub events: usize,
    /// When the oldest waiting event happened.
    pub oldest_at: Option<DateTime<Utc>>,
    /// Its age in whole seconds at the time of the status.
    pub oldest_age_secs: Option<i64>,
    /// The hub failed; relays leave it alone until then (`events flush`
    /// does not wait).
    pub backing_off_until: Option<DateTime<Utc>>,
    /// The most recent failed delivery.
    pub last_error: Option<LastError>,
    /// Entries that are not lifecycle events this build reads (left alone).
    pub unreadable: usize,
    /// Every waiting event, in outbox order.
    pub entries: Vec<EntryStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct LastError {
    pub event_id: String,
    pub at: DateTime<Utc>,
    pub message: String,
}

/// One waiting event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryStatus {
    pub event_id: String,
    pub sandbox_id: String,
    pub from: Option<State>,
    pub to: State,
    pub at: DateTime<Utc>,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// `unavailable` (the hub did not take it) or `rejected` (the hub
    /// refused this event); `None` when not failing.
    pub failure: Option<FailureKind>,
    /// A relay is sending it until then.
    pub leased_until: Option<DateTime<Utc>>,
}

/// The status of `doc`'s outbox at `now`; `hub_url` as configured.
pub fn status(
    outbox: &[serde_json::Value],
    hub_url: Option<&str>,
    now: DateTime<Utc>,
) -> OutboxStatus {
    let entries: Vec<Entry> = outbox.iter().filter_map(Entry::parse).collect();
    let oldest_at = entries.iter().map(|e| e.event.at).min();
    let last_error = entries
        .iter()
        .filter_map(|e| {
            Some(LastError {
                event_id: e.event.event_id.clone(),
                at: e.delivery.last_attempt_at?,
                message: e.delivery.last_error.clone()?,
            })
        })
        .max_by_key(|l| l.at);
    OutboxStatus {
        hub_url: hub_url.map(crate::redact_url),
        events: outbox.len(),
        oldest_at,
        oldest_age_secs: oldest_at.map(|t| (now - t).num_seconds().max(0)),
        backing_off_until: outbox::hub_backoff(&entries)
            .map(|b| b.retry_at)
            .filter(|t| *t > now),
        last_error,
        unreadable: outbox.len() - entries.len(),
        entries: entries
            .into_iter()
            .map(|e| EntryStatus {
                event_id: e.event.event_id,
                sandbox_id: e.event.sandbox_id,
                from: e.event.from,
                to: e.event.to,
                at: e.event.at,
                attempts: e.event.attempts,
                next_attempt_at: e.event.next_attempt_at,
                last_attempt_at: e.delivery.last_attempt_at,
                last_error: e.delivery.last_error,
                failure: e.delivery.failure,
                leased_until: e.delivery.leased_until.filter(|t| *t > now),
            })
            .collect(),
    }
}
