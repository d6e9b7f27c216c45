//! What both backends store the same way: times as RFC 3339 UTC text with
//! milliseconds (it sorts as the time it names), rows as JSON text, actors
//! as `kind:name`.

use chrono::{DateTime, SecondsFormat, Utc};
use sandboxer_core::model::Actor;
use sandboxer_core::{Error, ErrorKind, Result};

/// The states a record ends in, as SQL.
pub(crate) const STATE_ENDED: &str = "('destroyed', 'failed')";

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
