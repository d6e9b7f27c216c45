//! The wire types of the REST subset both sides speak, in E2B's shape
//! (camelCase, `templateID`, `sandboxID`, timeouts in seconds): the request
//! bodies here, the answers from [`sandboxer_core::e2b`] (which the HTTP
//! API's E2B front door writes too).
//!
//! The stub server fills every field; the client reads them leniently (only
//! the ids are required), so a real provider that adds or omits optional
//! fields still works.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The header that carries the API key.
pub const API_KEY_HEADER: &str = "X-API-Key";

/// The header that makes a create idempotent (`POST /v2/sandboxes`).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// The header of `GET /v2/sandboxes` that holds the next page's token.
pub const NEXT_TOKEN_HEADER: &str = "x-next-token";

/// The timeout a sandbox gets when `POST /sandboxes` names none (E2B's).
pub const DEFAULT_TIMEOUT_SECS: u64 = 15;

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

/// `POST /sandboxes/{id}/timeout` body: the new timeout, from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetTimeout {
    pub timeout: u64,
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

pub use sandboxer_core::e2b::{
    metadata_query, parse_metadata_query, ErrorBody as ApiError, Sandbox as CreatedSandbox,
    SandboxDetail, SnapshotInfo, ENVD_VERSION, STATE_PAUSED, STATE_RUNNING,
};

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
        assert!(d.running(), "a detail without a state is a running sandbox");
        assert_eq!((d.cpu_count, d.domain), (0, None));
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
