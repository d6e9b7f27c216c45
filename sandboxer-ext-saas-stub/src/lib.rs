//! `ext.saas-stub`: sandboxes from a metered SaaS provider, and a stand-in
//! provider to develop and test against.
//!
//! - [`SaasStubExtension`] is the extension: a client of E2B's current
//!   sandbox lifecycle API (`POST /v2/sandboxes` with an `Idempotency-Key`,
//!   `GET /v2/sandboxes` with the metadata filter and pages, `GET/DELETE
//!   /sandboxes/{id}`, `POST /sandboxes/{id}/timeout`, key in `X-API-Key`).
//!   It is configured per provider by a base URL and an API key from the
//!   environment, so pointing it at E2B, a self-hosted E2B or another
//!   sandboxer is a config change (docs/e2b-compatibility.md). The key is an [`ApiKey`], which
//!   prints as `[redacted]` and is in no log line or error.
//! - `server` (feature `stub`) is the stub provider: a real HTTP service (binary
//!   `sandboxer-saas-stub`) with a capacity (429 when full) that kills each
//!   sandbox at its timeout by itself, as a metered provider does. A sandbox
//!   it killed is no longer listed, so the reaper sees its record as a ghost.
//! - [`api`] holds the wire types both sides share.
//!
//! Start the stub and point the extension at it:
//!
//! ```text
//! cargo run -p sandboxer-ext-saas-stub --features stub --bin sandboxer-saas-stub -- --api-key dev
//! export SANDBOXER_SAAS_STUB_URL=http://127.0.0.1:8790 SANDBOXER_SAAS_STUB_API_KEY=dev
//! ```
//!
//! The stub is behind the crate feature `stub` (it brings axum, clap and
//! tracing-subscriber): embedding the extension does not pull them. The
//! binary and [`server`] need `--features stub`.

pub mod api;
mod extension;
mod secret;
#[cfg(feature = "stub")]
pub mod server;

pub use extension::{
    SaasConfig, SaasStubExtension, DEFAULT_BASE_URL, DEFAULT_TEMPLATE, ENV_API_KEY, ENV_URL,
    EXTENSION_ID, META_SANDBOXER_ID, RESOURCE_KIND,
};
pub use secret::ApiKey;
