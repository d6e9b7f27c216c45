//! What every side of sandboxer's E2B protocol shares: the answers E2B's
//! API gives (written by the HTTP API's front door and by the stand-in
//! provider, read by `ext.saas-stub`), and the `metadata` filter of E2B's
//! list routes, as the E2B SDKs write it and E2B's server reads it (each
//! key and value URL-encoded, then the pairs form-encoded).
//!
//! The answers are written whole and read leniently: a field a provider
//! leaves out reads as its default, and fields it adds are ignored, so
//! only the ids are required of another E2B-speaking provider.
//!
//! ```
//! use sandboxer_core::e2b::{metadata_query, parse_metadata_query};
//!
//! let q = metadata_query(&[("sandboxer_id", "sbx-a"), ("k", "a b&c")]);
//! assert_eq!(q, "sandboxer_id=sbx-a&k=a%2520b%2526c");
//! assert_eq!(
//!     parse_metadata_query(&q).unwrap(),
//!     [("sandboxer_id".into(), "sbx-a".into()), ("k".into(), "a b&c".into())]
//! );
//! ```

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `envdVersion` sandboxer's servers answer: the lowest with which the
/// E2B SDKs make every lifecycle call (2.x refuses a create below 0.1.0 and
/// metrics below 0.1.5, and warns about disk metrics below 0.2.4). No envd
/// runs in a sandboxer sandbox.
pub const ENVD_VERSION: &str = "0.2.4";

/// The `state` of a running sandbox.
pub const STATE_RUNNING: &str = "running";

/// The `state` of a paused sandbox.
pub const STATE_PAUSED: &str = "paused";

fn running() -> String {
    STATE_RUNNING.to_string()
}

/// E2B's `Sandbox`: the answer to a create, connect or resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "E2bSandbox")]
pub struct Sandbox {
    /// The template it was made from (sandboxer's servers: the profile id).
    #[serde(rename = "templateID", default)]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    /// The template name asked for, when not the template's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(rename = "clientID", default)]
    pub client_id: String,
    #[serde(rename = "envdVersion", default)]
    pub envd_version: String,
    /// The domain it is reached under (`<sandboxID>.<domain>`); null where
    /// it is reached at its record's address.
    #[serde(default)]
    pub domain: Option<String>,
}

/// E2B's `SandboxDetail` and `ListedSandbox`: one sandbox of a list or a
/// get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "E2bSandboxDetail")]
pub struct SandboxDetail {
    #[serde(rename = "templateID", default)]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID", default)]
    pub client_id: String,
    #[serde(rename = "startedAt", default)]
    pub started_at: DateTime<Utc>,
    /// When it ends unless its timeout is moved.
    #[serde(rename = "endAt", default)]
    pub end_at: DateTime<Utc>,
    #[serde(rename = "envdVersion", default)]
    pub envd_version: String,
    #[serde(rename = "cpuCount", default)]
    pub cpu_count: u32,
    #[serde(rename = "memoryMB", default)]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB", default)]
    pub disk_size_mb: u64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// `running` or `paused` (read as `running` when left out).
    #[serde(default = "running")]
    #[schemars(extend("enum" = ["running", "paused"]))]
    pub state: String,
    #[serde(default)]
    pub domain: Option<String>,
}

impl SandboxDetail {
    /// Whether it runs (not paused).
    pub fn running(&self) -> bool {
        self.state == STATE_RUNNING
    }
}

/// E2B's `SnapshotInfo`: the answer to a snapshot, and one snapshot of a
/// list. Its id, and each of its names, is a `templateID` for new
/// sandboxes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "E2bSnapshotInfo")]
pub struct SnapshotInfo {
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    /// Its name (when given) and its id.
    #[serde(default)]
    pub names: Vec<String>,
}

impl SnapshotInfo {
    /// The info of snapshot `id`, named `name`.
    pub fn new(id: &str, name: Option<&str>) -> SnapshotInfo {
        SnapshotInfo {
            snapshot_id: id.to_string(),
            names: name.into_iter().chain([id]).map(str::to_string).collect(),
        }
    }
}

/// Every error answer: `{"code": 404, "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "E2bError")]
pub struct ErrorBody {
    /// The HTTP status.
    pub code: u16,
    pub message: String,
    /// sandboxer's error kind, from sandboxer's front door.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<crate::ErrorKind>")]
    pub error_code: Option<String>,
}

/// What Python's `urllib.parse.quote` leaves as it is (the E2B SDK's).
const QUOTE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~')
    .remove(b'/');

/// The `metadata` query parameter for these pairs.
pub fn metadata_query(pairs: &[(&str, &str)]) -> String {
    let quoted: Vec<(String, String)> = pairs.iter().map(|(k, v)| (quote(k), quote(v))).collect();
    serde_urlencoded::to_string(quoted).unwrap_or_default()
}

/// The pairs of a `metadata` query parameter (its value once the query
/// string is decoded); an error says what does not decode.
pub fn parse_metadata_query(q: &str) -> Result<Vec<(String, String)>, String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).map_err(|e| e.to_string())?;
    pairs
        .into_iter()
        .map(|(k, v)| Ok((unquote(&k)?, unquote(&v)?)))
        .collect()
}

fn quote(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUOTE).to_string()
}

fn unquote(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|e| format!("`{s}` is not UTF-8 once decoded: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_what_needs_quoting() {
        for (k, v) in [("a b", "c&d=e"), ("ü", "%41"), ("x", "")] {
            let q = metadata_query(&[(k, v)]);
            assert_eq!(
                parse_metadata_query(&q).unwrap(),
                [(k.to_string(), v.to_string())],
                "{q}"
            );
        }
        assert!(parse_metadata_query("k=%25FF").is_err());
    }
}
