//! The wire types of the REST subset both sides speak, in E2B's shape
//! (camelCase, `templateID`, `sandboxID`, timeouts in seconds).
//!
//! The stub server fills every field; the client reads them leniently (only
//! the ids are required), so a real provider that adds or omits optional
//! fields still works.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The header that carries the API key.
pub const API_KEY_HEADER: &str = "X-API-Key";

/// The header that makes a create idempotent (`POST /v2/sandboxes`).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// The header of `GET /v2/sandboxes` that holds the next page's token.
pub const NEXT_TOKEN_HEADER: &str = "x-next-token";

/// The timeout a sandbox gets when `POST /sandboxes` names none (E2B's).
pub const DEFAULT_TIMEOUT_SECS: u64 = 15;

/// The state of a running sandbox.
pub const STATE_RUNNING: &str = "running";

/// The state of a paused sandbox.
pub const STATE_PAUSED: &str = "paused";

/// `POST /sandboxes/{id}/snapshots` answer (201), and one snapshot of
/// `GET /snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The snapshot's id, which is a `templateID` for new sandboxes.
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    /// Its names (the name it was given, if any, and its id).
    #[serde(default)]
    pub names: Vec<String>,
}

/// `POST /sandboxes` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Seconds from now until the provider kills the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// `POST /sandboxes` answer (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedSandbox {
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "templateID", default)]
    pub template_id: String,
    #[serde(rename = "clientID", default)]
    pub client_id: String,
    /// The domain the sandbox is reached under (`<sandboxID>.<domain>`).
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(rename = "envdVersion", default)]
    pub envd_version: Option<String>,
}

/// One sandbox in `GET /sandboxes` and `GET /sandboxes/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxDetail {
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "templateID", default)]
    pub template_id: String,
    #[serde(rename = "clientID", default)]
    pub client_id: String,
    #[serde(rename = "startedAt", default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(rename = "endAt", default)]
    pub end_at: Option<DateTime<Utc>>,
    /// `running` (E2B also has `paused`).
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(rename = "cpuCount", default)]
    pub cpu_count: Option<u32>,
    #[serde(rename = "memoryMB", default)]
    pub memory_mb: Option<u32>,
    #[serde(rename = "diskSizeMB", default)]
    pub disk_size_mb: Option<u32>,
    #[serde(rename = "envdVersion", default)]
    pub envd_version: Option<String>,
}

/// `POST /sandboxes/{id}/timeout` body: the new timeout, from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetTimeout {
    pub timeout: u64,
}

/// Every error answer: `{"code": 404, "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: u16,
    pub message: String,
}

/// Whether `id` is safe to put in a URL path as a sandbox id: 1 to 128
/// ASCII letters, digits, `-` and `_`.
pub fn is_provider_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub use sandboxer_core::e2b::{metadata_query, parse_metadata_query};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_sandbox_has_e2b_names() {
        let body = NewSandbox {
            template_id: "base".into(),
            timeout: Some(30),
            metadata: [("sandboxer_id".to_string(), "sbx-1".to_string())].into(),
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"templateID": "base", "timeout": 30, "metadata": {"sandboxer_id": "sbx-1"}})
        );
    }

    #[test]
    fn detail_reads_leniently() {
        let d: SandboxDetail =
            serde_json::from_str(r#"{"sandboxID": "i1", "extra": true}"#).unwrap();
        assert_eq!(d.sandbox_id, "i1");
        assert_eq!(d.state, None);
    }

    #[test]
    fn provider_ids() {
        assert!(is_provider_id("iabc123-x_y"));
        assert!(!is_provider_id(""));
        assert!(!is_provider_id("../x"));
        assert!(!is_provider_id("a/b"));
        assert!(!is_provider_id("a?b"));
    }
}
