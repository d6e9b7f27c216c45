//! What both backends store the same way: times as RFC 3339 UTC text with
//! milliseconds (it sorts as the time it names), rows as JSON text, actors
//! as `kind:name`.

use chrono::{DateTime, SecondsFormat, Utc};
use sandboxer_core::model::{Actor, Sandbox};
use sandboxer_core::{Error, ErrorKind, Result};

/// The states a record ends in, as SQL.
pub(crate) const STATE_ENDED: &str = "('destroyed', 'failed')";
/// Every other state: a live record is in one of these.
pub(crate) const STATE_LIVE: &str =
    "('provisioning', 'ready', 'pausing', 'paused', 'resuming', 'destroying')";

/// [`sandboxer_core::store::db::Tx::census`]: live records by their four
/// labels, ended ones by state (an index-only count).
pub(crate) const CENSUS_LIVE: &str =
    "SELECT state, profile, extension, host, COUNT(*) FROM sandboxes \
     WHERE state NOT IN ('destroyed', 'failed') GROUP BY state, profile, extension, host";
pub(crate) const CENSUS_ENDED: &str = "SELECT state, '', '', '', COUNT(*) FROM sandboxes \
     WHERE state IN ('destroyed', 'failed') GROUP BY state";

/// A time as stored.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A stored time.
pub(crate) fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| Error::new(ErrorKind::StoreCorrupt, format!("a stored time `{s}`: {e}")))
}

/// A row's JSON.
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::internal(format!("serializing a row: {e}")))
}

/// A stored row's JSON (`what` names it in the error).
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| {
        Error::new(
            ErrorKind::StoreCorrupt,
            format!("a stored {what} does not parse: {e}"),
        )
    })
}

/// A stored actor.
pub(crate) fn actor(s: &str) -> Result<Actor> {
    s.parse().map_err(|e: Error| {
        Error::new(
            ErrorKind::StoreCorrupt,
            format!("a stored actor: {}", e.message()),
        )
    })
}

/// A record as stored: its public JSON (what consumers read, copied as it
/// is by a list) and its extension's private `backend` state apart.
pub(crate) fn record_columns(s: &Sandbox) -> Result<(String, Option<String>)> {
    let public = sandboxer_core::model::public_view(|| to_json(s))?;
    let backend = match s.backend.is_null() {
        true => None,
        false => Some(to_json(&s.backend)?),
    };
    Ok((public, backend))
}

/// A stored record, whole again.
pub(crate) fn record_from(public: &str, backend: Option<&str>) -> Result<Sandbox> {
    let mut s: Sandbox = from_json("sandbox record", public)?;
    if let Some(b) = backend {
        s.backend = from_json("sandbox backend state", b)?;
    }
    Ok(s)
}

/// Whether a stored snapshot state is one of `states` (all when empty).
pub(crate) fn wanted_state(
    state: &str,
    states: &[sandboxer_core::snapshot::SnapshotState],
) -> bool {
    states.is_empty() || states.iter().any(|s| s.as_str() == state)
}

#[cfg(test)]
mod tests {
    use sandboxer_core::lifecycle::State;

    use super::{STATE_ENDED, STATE_LIVE};

    #[test]
    fn every_state_is_live_or_ended_never_both() {
        for s in State::ALL {
            let quoted = format!("'{s}'");
            assert_ne!(
                STATE_LIVE.contains(&quoted),
                STATE_ENDED.contains(&quoted),
                "{s}"
            );
            assert_eq!(STATE_ENDED.contains(&quoted), s.is_terminal(), "{s}");
        }
    }
}
