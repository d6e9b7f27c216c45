//! sandboxer's HTTP API: the CLI's operations under `/v1`, with the same
//! semantics and error kinds, for callers that speak HTTP (an agent harness,
//! a scheduler, CI).
//!
//! - [`router`] is the axum `Router`; siblings embed it. [`serve`] (or
//!   [`Server`]) binds, serves, runs the reaper on an interval and any
//!   [`BackgroundTask`] (the State Hub relay) beside it, and shuts down
//!   gracefully on SIGTERM or Ctrl-C. `sandboxer serve` is a thin front.
//! - [`openapi::OPERATIONS`] is the route table: the router mounts exactly
//!   its operations and the OpenAPI document at `/openapi.json` is built from
//!   it.
//! - Access: bearer tokens from `tokens.toml` in the config dir
//!   ([`tokens::TokenStore`], hashed, each bound to an actor). `adm` tokens
//!   act on everything; `agt` and `atm` tokens see and act on their own
//!   sandboxes only (another actor's is 404) and their own credits (403);
//!   reaper, host telemetry, grants and the ledger check are `adm` only.
//! - Errors are `{"code", "message", "hint"}`; [`error::status_of`] maps each
//!   `ErrorKind` to its status.
//! - Manager and ledger calls (file I/O with fsync) run on the blocking pool,
//!   never on the runtime's workers, and run to completion even when the
//!   client goes away.
//!
//! ```no_run
//! use std::sync::Arc;
//! # fn manager() -> sandboxer_core::manager::Manager { unimplemented!() }
//! # async fn example() -> sandboxer_core::Result<()> {
//! let data = std::path::Path::new("/var/lib/sandboxer");
//! let db = sandboxer_store::open(None, data)?;
//! let state = sandboxer_api::ApiState::new(
//!     manager(),
//!     Arc::new(sandboxer_credits::DbLedger::new(db.clone())),
//!     sandboxer_api::tokens::TokenStore::new(db),
//! );
//! // Embed the routes in another axum app ...
//! let _app: axum::Router = sandboxer_api::router(state.clone());
//! // ... or run the whole server (with the reaper) until SIGTERM.
//! let server = sandboxer_api::Server::bind(sandboxer_api::ServeConfig::new(
//!     "127.0.0.1:8787".parse().unwrap(),
//!     state,
//! ))
//! .await?;
//! println!("listening on {}", server.local_addr());
//! server.run().await
//! # }
//! ```

// The OpenAPI schemas are one `json!` literal.
#![recursion_limit = "512"]

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use sandboxer_core::manager::Manager;
use sandboxer_credits::DbLedger;

pub mod conn;
pub mod dashboard;
pub mod e2b;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod openapi;
mod routes;
mod server;
pub mod tokens;
pub mod uploads;
pub mod views;

pub use conn::ConnLimits;
pub use error::{status_of, ApiError};
pub use extract::BODY_LIMIT;
pub use routes::{DEFAULT_GRACE, DEFAULT_PROFILE};
pub use server::{
    reaper_task, serve, shutdown_signal, BackgroundTask, ReaperConfig, ServeConfig, Server,
    Shutdown,
};
pub use tokens::TokenStore;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub manager: Manager,
    /// The credits ledger (the same file the manager's metering layer uses).
    pub ledger: Arc<DbLedger>,
    pub tokens: TokenStore,
    /// A placement host forced for every create and explain that names none
    /// (the server's `SANDBOXER_HOST`, as the CLI's `--host` default).
    pub default_host: Option<String>,
    /// What a `repo` input may name over HTTP (uploads, and folders under
    /// the operator's repo roots).
    pub repos: uploads::RepoPolicy,
    /// The server's Prometheus metrics (`/metrics`); the manager reports
    /// its lifecycle steps to them.
    pub metrics: Arc<metrics::Metrics>,
    detached: Arc<Detached>,
}

/// Provisioning started by `wait: false`, still running.
#[derive(Debug, Default)]
struct Detached {
    running: AtomicUsize,
}

impl fmt::Debug for ApiState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiState")
            .field("ledger", &self.ledger)
            .field("tokens", &self.tokens)
            .field("default_host", &self.default_host)
            .field("repos", &self.repos)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    pub fn new(manager: Manager, ledger: Arc<DbLedger>, tokens: TokenStore) -> Self {
        let metrics = Arc::new(metrics::Metrics::new());
        ApiState {
            manager: manager.with_observer(metrics.clone()),
            metrics,
            ledger,
            tokens,
            default_host: None,
            repos: uploads::RepoPolicy::default(),
            detached: Arc::default(),
        }
    }

    /// What a `repo` input may name over HTTP.
    pub fn with_repos(mut self, repos: uploads::RepoPolicy) -> Self {
        self.repos = repos;
        self
    }

    /// Force this placement host when a request names none.
    pub fn with_default_host(mut self, host: Option<String>) -> Self {
        self.default_host = host.filter(|h| !h.is_empty());
        self
    }

    /// Finish a create recorded with `wait: false`, in the background (as
    /// the CLI's detached `__finish-create` does).
    fn finish_detached(&self, id: String) {
        self.detached.running.fetch_add(1, Ordering::SeqCst);
        let m = self.manager.clone();
        let d = self.detached.clone();
        tokio::spawn(async move {
            if let Err(e) = m.finish_create(&id).await {
                tracing::warn!("provisioning {id} (wait: false): {e}");
            }
            d.running.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Wait until no detached provisioning runs, at most `limit`; false when
    /// some still runs.
    pub async fn wait_detached(&self, limit: Duration) -> bool {
        let until = tokio::time::Instant::now() + limit;
        loop {
            if self.detached.running.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The API's routes (every operation of [`openapi::OPERATIONS`]), the
/// dashboard's page at `/` and `/metrics`, with JSON errors for unknown
/// routes and methods, the body limit, request metrics and an access log
/// (method, path, status, time; never headers or query strings).
pub fn router(state: ApiState) -> Router {
    let mut r = Router::new();
    for op in openapi::OPERATIONS {
        r = r.route(op.path, routes::handler(op));
    }
    r.route("/metrics", axum::routing::get(metrics::handler))
        .merge(dashboard::routes())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(axum::middleware::from_fn(access_log))
        .with_state(state)
}

async fn access_log(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::info!(
        target: "sandboxer_api::access",
        "{method} {path} {} {}ms",
        resp.status().as_u16(),
        started.elapsed().as_millis()
    );
    resp
}
