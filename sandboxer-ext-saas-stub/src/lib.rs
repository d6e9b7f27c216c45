//! `ext.saas-stub`: sandboxes from a metered SaaS provider, and a stand-in
//! provider to develop and test against.
//!
//! - [`SaasStubExtension`] is the extension: an HTTP client of a subset of
//!   E2B's public REST API (`POST/GET /sandboxes`, `GET/DELETE
//!   /sandboxes/{id}`, `POST /sandboxes/{id}/timeout`, key in `X-API-Key`).
//!   It is configured by a base URL and an API key only, so pointing it at
//!   a real provider is a config change. The key is an [`ApiKey`], which
//!   prints as `[redacted]` and is in no log line or error.
//! - [`server`] is the stub provider: a real HTTP service (binary
//!   `sandboxer-saas-stub`) with a capacity (429 when full) that kills each
//!   sandbox at its timeout by itself, as a metered provider does. A sandbox
//!   it killed is no longer listed, so the reaper sees its record as a ghost.
//! - [`api`] holds the wire types both sides share.
//!
//! Start the stub and point the extension at it:
//!
//! ```text
//! cargo run -p sandboxer-ext-saas-stub --bin sandboxer-saas-stub -- --api-key dev
//! export SANDBOXER_SAAS_STUB_URL=http://127.0.0.1:8790 SANDBOXER_SAAS_STUB_API_KEY=dev
//! ```
//!
//! The same in one program:
//!
//! ```
//! use std::sync::Arc;
//! use sandboxer_core::extension::Extension;
//! use sandboxer_ext_saas_stub::server::{Server, StubConfig};
//! use sandboxer_ext_saas_stub::{ApiKey, SaasConfig, SaasStubExtension};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let server = Server::bind("127.0.0.1:0".parse().unwrap(), StubConfig::new(ApiKey::new("dev")))
//!     .await
//!     .unwrap();
//! let addr = server.local_addr().unwrap();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let running = tokio::spawn(server.run(async move { stopped.await.ok(); }));
//!
//! let ext = SaasStubExtension::new(SaasConfig {
//!     base_url: format!("http://{addr}"),
//!     api_key: Some(ApiKey::new("dev")),
//!     ..SaasConfig::default()
//! })
//! .unwrap();
//! assert_eq!(ext.id(), "ext.saas-stub");
//! assert!(format!("{ext:?}").contains("[redacted]"));
//!
//! // list_resources ignores the transport: the provider is not a host.
//! let transport = Arc::new(sandboxer_transport::LocalTransport::new(std::env::temp_dir()));
//! assert!(ext.list_resources(transport).await.unwrap().is_empty());
//!
//! stop.send(()).unwrap();
//! running.await.unwrap().unwrap();
//! # });
//! ```

pub mod api;
mod extension;
mod secret;
pub mod server;

pub use extension::{
    SaasConfig, SaasStubExtension, DEFAULT_BASE_URL, DEFAULT_TEMPLATE, ENV_API_KEY, ENV_URL,
    EXTENSION_ID, META_SANDBOXER_ID, RESOURCE_KIND,
};
pub use secret::ApiKey;
