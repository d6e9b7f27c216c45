//! Lifecycle events for the State Hub. Every transition of a record produces
//! one, written to the store's outbox in the same commit as the transition;
//! a relay delivers them and removes each only after the hub accepted it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lifecycle::State;
use crate::model::{Actor, Sandbox};

/// One lifecycle transition. The hub deduplicates by `event_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// `SANDBOX_ID:SEQ`, unique and stable across retries.
    pub event_id: String,
    pub sandbox_id: String,
    /// `None` for the first event (the sandbox was recorded).
    pub from: Option<State>,
    pub to: State,
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub profile: String,
    pub extension: String,
    pub host: String,
    pub reason: Option<String>,
    /// Delivery attempts so far (for backoff; not part of the hub body).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Not before this time (backoff; not part of the hub body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl LifecycleEvent {
    /// The event for `sbx` having just moved from `from` to its current
    /// state; `seq` numbers the sandbox's events.
    pub fn of(sbx: &Sandbox, from: Option<State>, seq: u32) -> Self {
        LifecycleEvent {
            event_id: format!("{}:{seq}", sbx.id),
            sandbox_id: sbx.id.clone(),
            from,
            to: sbx.state(),
            at: sbx.updated_at,
            actor: sbx.actor.clone(),
            profile: sbx.profile.clone(),
            extension: sbx.extension.clone(),
            host: sbx.host.clone(),
            reason: sbx.reason(),
            attempts: 0,
            next_attempt_at: None,
        }
    }

    /// The JSON body the hub receives (without the delivery bookkeeping).
    pub fn hub_body(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("an event always serializes");
        if let Some(o) = v.as_object_mut() {
            o.remove("attempts");
            o.remove("next_attempt_at");
        }
        v
    }
}
