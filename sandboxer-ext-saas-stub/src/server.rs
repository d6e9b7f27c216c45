//! The stub provider: a real HTTP service that speaks a subset of E2B's
//! REST API, keeps its sandboxes in memory and kills each one at its
//! timeout by itself, like a metered SaaS provider would.
//!
//! | request | answers |
//! |---|---|
//! | `POST /v2/sandboxes` (and the older `POST /sandboxes`) `{templateID, timeout, metadata}`, header `Idempotency-Key` | 201 [`CreatedSandbox`] (a key seen before while its sandbox runs: that sandbox); 400 bad body; 429 at capacity |
//! | `GET /v2/sandboxes[?metadata=..&state=running&limit=N&nextToken=T]` | 200 `[`[`SandboxDetail`]`]`, filtered by metadata (E2B's encoding: [`sandboxer_core::e2b::metadata_query`]), a page at a time (`X-Next-Token`) |
//! | `GET /sandboxes[?metadata=..]` | 200, every match |
//! | `GET /sandboxes/{id}` | 200 [`SandboxDetail`]; 404 |
//! | `DELETE /sandboxes/{id}` | 204; 404 |
//! | `POST /sandboxes/{id}/timeout` `{timeout}` | 204 (the sandbox now ends `timeout` s from now); 400; 404 |
//! | `POST /v2/sandboxes/{id}/connect` (and `/sandboxes/{id}/connect`) `{timeout}` | 200 [`CreatedSandbox`], its timeout moved when given; a paused one is resumed first (201); 404 |
//! | `POST /sandboxes/{id}/pause` | 204; 409 already paused; 404 |
//! | `POST /sandboxes/{id}/resume` `{timeout}` | 201 [`CreatedSandbox`]; 409 not paused; 404 |
//! | `POST /sandboxes/{id}/snapshots` `{name}` | 201 [`SnapshotInfo`]; its `snapshotID` is a `templateID` that creates a sandbox from it; 404 |
//! | `GET /snapshots[?sandboxID=..&name=..]` | 200 `[`[`SnapshotInfo`]`]` |
//! | `DELETE /templates/{snapshotID}` | 204; 404 |
//!
//! A create whose `templateID` is a snapshot's (`snap_...`) starts from
//! that snapshot; one of a deleted snapshot is 404.
//!
//! A paused sandbox keeps the time it had left and does not end at its
//! `endAt` (nor count against the capacity) until it is resumed.
//!
//! Every request needs the header `X-API-Key` (401 without it or with
//! another key). Errors are `{"code": N, "message": "..."}`. Timeouts are
//! whole seconds, 1 to [`MAX_TIMEOUT_SECS`] (default 15).
//!
//! A sandbox is gone once its `endAt` has passed: the background task
//! [`StubState::spawn_reaper`] removes it at that moment, and every request
//! also drops expired sandboxes first, so answers are exact even between
//! two runs of the task.
//!
//! The stub and the extension in one program:
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

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use rand::Rng as _;
use sandboxer_core::clock::Clock;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::api::{
    parse_metadata_query, ApiError, CreatedSandbox, NewSandbox, SandboxDetail, SetTimeout,
    SnapshotInfo, API_KEY_HEADER, DEFAULT_TIMEOUT_SECS, ENVD_VERSION, IDEMPOTENCY_HEADER,
    NEXT_TOKEN_HEADER, STATE_PAUSED, STATE_RUNNING,
};
use crate::secret::ApiKey;

/// What the stub's snapshot ids start with: a `templateID` with it that
/// names no snapshot (a deleted one) is 404, as E2B answers an unknown
/// template; any other template name is accepted.
pub const SNAPSHOT_PREFIX: &str = "snap_";

/// The longest timeout the stub accepts (24 h, E2B's ceiling).
pub const MAX_TIMEOUT_SECS: u64 = 24 * 60 * 60;

/// How the stub behaves.
#[derive(Debug, Clone)]
pub struct StubConfig {
    /// The key every request must carry in `X-API-Key`.
    pub api_key: ApiKey,
    /// How many sandboxes may run at once; one more is a 429. Zero makes
    /// every create a 429 (a provider that is always full).
    pub capacity: usize,
    /// The domain sandboxes are reached under: `<sandboxID>.<domain>`.
    pub domain: String,
    /// What `startedAt` and `endAt` are counted by (a test moves a manual
    /// clock past a sandbox's timeout instead of waiting it out).
    pub clock: Arc<dyn Clock>,
}

impl StubConfig {
    /// Capacity 4, domain `saas-stub.local`.
    pub fn new(api_key: ApiKey) -> Self {
        StubConfig {
            api_key,
            capacity: 4,
            domain: "saas-stub.local".to_string(),
            clock: sandboxer_core::clock::system(),
        }
    }
}

struct Entry {
    template_id: String,
    started_at: DateTime<Utc>,
    end_at: DateTime<Utc>,
    metadata: BTreeMap<String, String>,
    /// While paused: the time it had left.
    paused_left: Option<chrono::Duration>,
}

impl Entry {
    fn running(&self) -> bool {
        self.paused_left.is_none()
    }
}

/// A snapshot the stub keeps: what a sandbox made from it starts as.
struct Snap {
    name: Option<String>,
    source: String,
    template_id: String,
}

struct Inner {
    config: StubConfig,
    client_id: String,
    sandboxes: Mutex<BTreeMap<String, Entry>>,
    /// Idempotency keys of creates, and the sandbox each made.
    keys: Mutex<BTreeMap<String, String>>,
    snapshots: Mutex<BTreeMap<String, Snap>>,
    /// Wakes the reaper when a deadline moved.
    changed: Notify,
}

/// The stub's in-memory state, shared by the handlers and the reaper.
#[derive(Clone)]
pub struct StubState(Arc<Inner>);

impl std::fmt::Debug for StubState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StubState")
            .field("config", &self.0.config)
            .finish_non_exhaustive()
    }
}

impl StubState {
    pub fn new(config: StubConfig) -> Self {
        StubState(Arc::new(Inner {
            config,
            client_id: random_token(8),
            sandboxes: Mutex::new(BTreeMap::new()),
            keys: Mutex::new(BTreeMap::new()),
            snapshots: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
        }))
    }

    pub fn config(&self) -> &StubConfig {
        &self.0.config
    }

    /// How many sandboxes are running now (paused ones are not).
    pub fn running(&self) -> usize {
        self.lock().values().filter(|e| e.running()).count()
    }

    /// How many sandboxes are paused now.
    pub fn paused(&self) -> usize {
        self.lock().values().filter(|e| !e.running()).count()
    }

    /// How many snapshots the stub keeps.
    pub fn snapshot_count(&self) -> usize {
        self.snaps().len()
    }

    fn snaps(&self) -> MutexGuard<'_, BTreeMap<String, Snap>> {
        self.0.snapshots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The time on the stub's clock.
    fn now(&self) -> DateTime<Utc> {
        self.0.config.clock.now()
    }

    /// The sandbox map with every expired sandbox removed.
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        let mut map = self.0.sandboxes.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.now();
        map.retain(|id, e| {
            let keep = !e.running() || e.end_at > now;
            if !keep {
                tracing::info!(sandbox = %id, "timeout reached, sandbox killed");
            }
            keep
        });
        map
    }

    fn detail(&self, id: &str, e: &Entry) -> SandboxDetail {
        SandboxDetail {
            sandbox_id: id.to_string(),
            template_id: e.template_id.clone(),
            client_id: self.0.client_id.clone(),
            started_at: e.started_at,
            end_at: e.end_at,
            state: if e.running() {
                STATE_RUNNING
            } else {
                STATE_PAUSED
            }
            .to_string(),
            metadata: e.metadata.clone(),
            domain: Some(self.0.config.domain.clone()),
            cpu_count: 2,
            memory_mb: 512,
            disk_size_mb: 1024,
            envd_version: ENVD_VERSION.to_string(),
        }
    }

    /// Start the task that kills sandboxes at their `endAt`. It sleeps until
    /// the earliest deadline (at most a second, so a wall-clock jump is
    /// caught up quickly) or until a deadline changes. Abort the handle to
    /// stop it.
    pub fn spawn_reaper(&self) -> tokio::task::JoinHandle<()> {
        let state = self.clone();
        tokio::spawn(async move {
            loop {
                let next = state
                    .lock()
                    .values()
                    .filter(|e| e.running())
                    .map(|e| e.end_at)
                    .min();
                let wait = next
                    .map(|t| (t - state.now()).to_std().unwrap_or(Duration::ZERO))
                    .unwrap_or(Duration::MAX)
                    .min(Duration::from_secs(1));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = state.0.changed.notified() => {}
                }
            }
        })
    }
}

/// The stub's routes over `state`. The caller runs the reaper
/// ([`StubState::spawn_reaper`]); [`Server`] does.
pub fn router(state: StubState) -> Router {
    let sandboxes = Router::new()
        .route("/sandboxes", post(create).get(list))
        .route("/v2/sandboxes", post(create).get(list_v2))
        .route("/sandboxes/{id}", get(get_one).delete(delete_one))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/snapshots", post(snapshot))
        .route("/snapshots", get(list_snapshots))
        .route("/templates/{id}", axum::routing::delete(delete_snapshot))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    sandboxes
        .fallback(|| async { Reject(StatusCode::NOT_FOUND, "no such route".into()) })
        .with_state(state)
}

/// A bound stub, ready to serve.
pub struct Server {
    listener: TcpListener,
    state: StubState,
}

impl Server {
    /// Bind `addr` (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn bind(addr: SocketAddr, config: StubConfig) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Server {
            listener,
            state: StubState::new(config),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &StubState {
        &self.state
    }

    /// Serve (with the reaper running) until `shutdown` completes, then let
    /// open requests finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let reaper = self.state.spawn_reaper();
        let result = axum::serve(self.listener, router(self.state))
            .with_graceful_shutdown(shutdown)
            .await;
        reaper.abort();
        result
    }
}

/// Bind `bind` and serve until SIGTERM or Ctrl-C.
pub async fn serve(bind: SocketAddr, config: StubConfig) -> std::io::Result<()> {
    let shutdown = shutdown_signal()?;
    let server = Server::bind(bind, config).await?;
    tracing::info!(addr = %server.local_addr()?, "saas stub listening");
    server.run(shutdown).await
}

/// Catch SIGTERM and SIGINT (Ctrl-C) from now on; the future completes on
/// the first of them. Call it before announcing the address, so a signal
/// sent right after the announcement is not fatal.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// An error answer: `{"code": N, "message": "..."}` with status N.
struct Reject(StatusCode, String);

impl Reject {
    fn bad_request(message: impl Into<String>) -> Self {
        Reject(StatusCode::BAD_REQUEST, message.into())
    }
    fn not_found(id: &str) -> Self {
        Reject(StatusCode::NOT_FOUND, format!("sandbox {id} not found"))
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        let body = ApiError {
            code: self.0.as_u16(),
            message: self.1,
            error_code: None,
        };
        (self.0, Json(body)).into_response()
    }
}

type Answer = Result<Response, Reject>;

async fn require_key(
    State(state): State<StubState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Answer {
    match headers.get(API_KEY_HEADER) {
        None => Err(Reject(
            StatusCode::UNAUTHORIZED,
            "missing X-API-Key header".into(),
        )),
        Some(v) if !state.0.config.api_key.matches(v.as_bytes()) => {
            Err(Reject(StatusCode::UNAUTHORIZED, "invalid API key".into()))
        }
        Some(_) => Ok(next.run(req).await),
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Reject> {
    serde_json::from_slice(body)
        .map_err(|e| Reject::bad_request(format!("invalid request body: {e}")))
}

/// Field `name` of an optional JSON body (none: `None`).
fn optional_field(body: &[u8], name: &str) -> Result<Option<serde_json::Value>, Reject> {
    if body.is_empty() {
        return Ok(None);
    }
    Ok(parse_body::<serde_json::Value>(body)?.get(name).cloned())
}

fn check_timeout(timeout: u64) -> Result<u64, Reject> {
    if (1..=MAX_TIMEOUT_SECS).contains(&timeout) {
        Ok(timeout)
    } else {
        Err(Reject::bad_request(format!(
            "timeout must be 1 to {MAX_TIMEOUT_SECS} seconds, not {timeout}"
        )))
    }
}

fn end_at(from: DateTime<Utc>, timeout: u64) -> DateTime<Utc> {
    from + chrono::Duration::seconds(timeout as i64)
}

async fn create(State(state): State<StubState>, headers: HeaderMap, body: Bytes) -> Answer {
    let req: NewSandbox = parse_body(&body)?;
    let key = headers
        .get(IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .map(str::to_string);
    // A key seen before, whose sandbox still runs: that sandbox again.
    if let Some(k) = &key {
        let made = state
            .0
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(k)
            .cloned();
        if let Some(id) = made {
            if let Some(e) = state.lock().get(&id) {
                tracing::info!(sandbox = %id, "create repeated with its idempotency key");
                return Ok((StatusCode::CREATED, Json(state.created(&id, e))).into_response());
            }
        }
    }
    if req.template_id.trim().is_empty() {
        return Err(Reject::bad_request("templateID is required"));
    }
    let timeout = check_timeout(req.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS))?;
    let capacity = state.0.config.capacity;
    // A snapshot's id is a template: the sandbox starts as its source was.
    let restored = state
        .snaps()
        .get(&req.template_id)
        .map(|s| (s.source.clone(), s.template_id.clone()));
    if restored.is_none() && req.template_id.starts_with(SNAPSHOT_PREFIX) {
        return Err(Reject(
            StatusCode::NOT_FOUND,
            format!("template {} not found", req.template_id),
        ));
    }
    let created = {
        let mut map = state.lock();
        let running = map.values().filter(|e| e.running()).count();
        if running >= capacity {
            return Err(Reject(
                StatusCode::TOO_MANY_REQUESTS,
                format!("capacity full: {running} of {capacity} sandboxes running"),
            ));
        }
        let id = loop {
            let id = format!("i{}", random_token(19));
            if !map.contains_key(&id) {
                break id;
            }
        };
        let now = state.now();
        map.insert(
            id.clone(),
            Entry {
                template_id: req.template_id.clone(),
                started_at: now,
                end_at: end_at(now, timeout),
                metadata: req.metadata,
                paused_left: None,
            },
        );
        if let Some(k) = &key {
            state
                .0
                .keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(k.clone(), id.clone());
        }
        id
    };
    state.0.changed.notify_one();
    if let Some((source, template)) = &restored {
        tracing::info!(sandbox = %created, snapshot = %req.template_id, %source, %template, "sandbox restored from a snapshot");
    }
    tracing::info!(sandbox = %created, template = %req.template_id, timeout, "sandbox created");
    let body = CreatedSandbox {
        sandbox_id: created,
        template_id: req.template_id,
        alias: None,
        client_id: state.0.client_id.clone(),
        domain: Some(state.0.config.domain.clone()),
        envd_version: ENVD_VERSION.to_string(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

impl StubState {
    fn created(&self, id: &str, e: &Entry) -> CreatedSandbox {
        CreatedSandbox {
            sandbox_id: id.to_string(),
            template_id: e.template_id.clone(),
            alias: None,
            client_id: self.0.client_id.clone(),
            domain: Some(self.0.config.domain.clone()),
            envd_version: ENVD_VERSION.to_string(),
        }
    }

    /// The running sandboxes matching the `metadata` parameter of `query`.
    fn matching(&self, query: &[(String, String)]) -> Result<Vec<SandboxDetail>, Reject> {
        let mut wanted: Vec<(String, String)> = Vec::new();
        for (k, v) in query {
            if k == "metadata" {
                wanted.extend(
                    parse_metadata_query(v).map_err(|e| {
                        Reject::bad_request(format!("invalid metadata filter: {e}"))
                    })?,
                );
            }
        }
        let map = self.lock();
        Ok(map
            .iter()
            .filter(|(_, e)| {
                wanted
                    .iter()
                    .all(|(k, v)| e.metadata.get(k).is_some_and(|have| have == v))
            })
            .map(|(id, e)| self.detail(id, e))
            .collect())
    }
}

fn query_pairs(query: Option<String>) -> Result<Vec<(String, String)>, Reject> {
    serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| Reject::bad_request(format!("invalid query: {e}")))
}

/// `GET /v2/sandboxes`: a page at a time; running and paused ones unless
/// `state` names one.
async fn list_v2(State(state): State<StubState>, RawQuery(query): RawQuery) -> Answer {
    let q = query_pairs(query)?;
    let one = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let limit = match one("limit") {
        None => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| Reject::bad_request(format!("limit must be 1 to 100, not {l}")))?,
    };
    let offset = match one("nextToken") {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| Reject::bad_request(format!("invalid nextToken {t}")))?,
    };
    let states: Vec<String> = one("state")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| vec![STATE_RUNNING.to_string(), STATE_PAUSED.to_string()]);
    let all: Vec<SandboxDetail> = state
        .matching(&q)?
        .into_iter()
        .filter(|d| states.contains(&d.state))
        .collect();
    let page: Vec<SandboxDetail> = all.iter().skip(offset).take(limit).cloned().collect();
    let mut resp = Json(page).into_response();
    if offset + limit < all.len() {
        resp.headers_mut().insert(
            NEXT_TOKEN_HEADER,
            (offset + limit).to_string().parse().expect("digits"),
        );
    }
    Ok(resp)
}

/// `POST /v2/sandboxes/{id}/connect`: a running sandbox, its timeout moved
/// when one is given.
async fn connect(State(state): State<StubState>, Path(id): Path<String>, body: Bytes) -> Answer {
    let timeout = optional_field(&body, "timeout")?.and_then(|v| v.as_u64());
    let mut map = state.lock();
    let e = map.get_mut(&id).ok_or_else(|| Reject::not_found(&id))?;
    let resumed = !e.running();
    if resumed {
        state.resume_entry(e, timeout)?;
    } else if let Some(t) = timeout {
        e.end_at = end_at(state.now(), check_timeout(t)?);
    }
    let body = state.created(&id, e);
    drop(map);
    state.0.changed.notify_one();
    let status = if resumed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(body)).into_response())
}

impl StubState {
    /// Run a paused entry again: for `timeout` seconds, else the time it
    /// had left.
    fn resume_entry(&self, e: &mut Entry, timeout: Option<u64>) -> Result<(), Reject> {
        let now = self.now();
        let left = e.paused_left.unwrap_or_default();
        e.end_at = match timeout {
            Some(t) => end_at(now, check_timeout(t)?),
            None => now + left,
        };
        e.paused_left = None;
        Ok(())
    }
}

/// `POST /sandboxes/{id}/pause`: 204; 409 when it is paused already.
async fn pause(State(state): State<StubState>, Path(id): Path<String>) -> Answer {
    let mut map = state.lock();
    let e = map.get_mut(&id).ok_or_else(|| Reject::not_found(&id))?;
    if !e.running() {
        return Err(Reject(
            StatusCode::CONFLICT,
            format!("sandbox {id} is already paused"),
        ));
    }
    e.paused_left = Some((e.end_at - state.now()).max(chrono::Duration::zero()));
    drop(map);
    state.0.changed.notify_one();
    tracing::info!(sandbox = %id, "sandbox paused");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /sandboxes/{id}/resume`: 201; 409 when it is not paused.
async fn resume(State(state): State<StubState>, Path(id): Path<String>, body: Bytes) -> Answer {
    let timeout = optional_field(&body, "timeout")?.and_then(|v| v.as_u64());
    let mut map = state.lock();
    let e = map.get_mut(&id).ok_or_else(|| Reject::not_found(&id))?;
    if e.running() {
        return Err(Reject(
            StatusCode::CONFLICT,
            format!("sandbox {id} is already running"),
        ));
    }
    state.resume_entry(e, timeout)?;
    let body = state.created(&id, e);
    drop(map);
    state.0.changed.notify_one();
    tracing::info!(sandbox = %id, "sandbox resumed");
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `POST /sandboxes/{id}/snapshots`: 201 with the new snapshot.
async fn snapshot(State(state): State<StubState>, Path(id): Path<String>, body: Bytes) -> Answer {
    let name = optional_field(&body, "name")?.and_then(|v| v.as_str().map(str::to_string));
    let template_id = {
        let map = state.lock();
        map.get(&id)
            .ok_or_else(|| Reject::not_found(&id))?
            .template_id
            .clone()
    };
    let snapshot_id = format!("{SNAPSHOT_PREFIX}{}", random_token(16));
    let info = SnapshotInfo::new(&snapshot_id, name.as_deref());
    state.snaps().insert(
        snapshot_id.clone(),
        Snap {
            name,
            source: id.clone(),
            template_id,
        },
    );
    tracing::info!(sandbox = %id, snapshot = %snapshot_id, "snapshot taken");
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// `GET /snapshots`: every snapshot, by source sandbox or name when asked.
async fn list_snapshots(State(state): State<StubState>, RawQuery(query): RawQuery) -> Answer {
    let q = query_pairs(query)?;
    let one = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (source, name) = (one("sandboxID"), one("name"));
    let list: Vec<SnapshotInfo> = state
        .snaps()
        .iter()
        .filter(|(_, s)| source.as_ref().is_none_or(|x| &s.source == x))
        .filter(|(id, s)| {
            name.as_ref()
                .is_none_or(|n| *id == n || s.name.as_ref() == Some(n))
        })
        .map(|(id, s)| SnapshotInfo::new(id, s.name.as_deref()))
        .collect();
    Ok(Json(list).into_response())
}

/// `DELETE /templates/{id}`: a snapshot; 404 for any other.
async fn delete_snapshot(State(state): State<StubState>, Path(id): Path<String>) -> Answer {
    if state.snaps().remove(&id).is_none() {
        return Err(Reject(
            StatusCode::NOT_FOUND,
            format!("template {id} not found"),
        ));
    }
    tracing::info!(snapshot = %id, "snapshot deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list(State(state): State<StubState>, RawQuery(query): RawQuery) -> Answer {
    let q = query_pairs(query)?;
    Ok(Json(state.matching(&q)?).into_response())
}

async fn get_one(State(state): State<StubState>, Path(id): Path<String>) -> Answer {
    let map = state.lock();
    let e = map.get(&id).ok_or_else(|| Reject::not_found(&id))?;
    Ok(Json(state.detail(&id, e)).into_response())
}

async fn delete_one(State(state): State<StubState>, Path(id): Path<String>) -> Answer {
    let removed = state.lock().remove(&id).is_some();
    if !removed {
        return Err(Reject::not_found(&id));
    }
    state.0.changed.notify_one();
    tracing::info!(sandbox = %id, "sandbox deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn set_timeout(
    State(state): State<StubState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let req: SetTimeout = parse_body(&body)?;
    let timeout = check_timeout(req.timeout)?;
    {
        let mut map = state.lock();
        let e = map.get_mut(&id).ok_or_else(|| Reject::not_found(&id))?;
        if !e.running() {
            return Err(Reject(
                StatusCode::CONFLICT,
                format!("sandbox {id} is paused"),
            ));
        }
        e.end_at = end_at(state.now(), timeout);
    }
    state.0.changed.notify_one();
    tracing::info!(sandbox = %id, timeout, "sandbox timeout set");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `n` random lowercase letters and digits.
fn random_token(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_bounded() {
        assert!(check_timeout(0).is_err());
        assert_eq!(check_timeout(1).ok(), Some(1));
        assert_eq!(check_timeout(MAX_TIMEOUT_SECS).ok(), Some(MAX_TIMEOUT_SECS));
        assert!(check_timeout(MAX_TIMEOUT_SECS + 1).is_err());
    }

    #[test]
    fn ids_look_like_e2b_ids() {
        let id = format!("i{}", random_token(19));
        assert_eq!(id.len(), 20);
        assert!(crate::api::is_provider_id(&id));
    }
}
