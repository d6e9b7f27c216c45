//! The E2B front door: E2B's sandbox lifecycle REST API, answered by the
//! same manager as `/v1`, so the official E2B SDKs work against `sandboxer
//! serve` by configuration only (`E2B_API_URL=http://127.0.0.1:8787`,
//! `E2B_API_KEY=<a sandboxer token>`). docs/e2b-compatibility.md has the
//! table of routes and what each maps to.
//!
//! - A `templateID` names a profile: its id, an alias it declares, its id
//!   without `profile.`, or `base` (the SDK's default) for the default
//!   profile. `timeout` is the TTL in seconds, `metadata` is kept on the
//!   record, `envVars` are the profile's inputs (refused where the profile
//!   declares none of that name), the `Idempotency-Key` header is the
//!   idempotency key.
//! - Authentication is `X-API-Key` (or `Authorization: Bearer`) with a
//!   sandboxer token, scoped as `/v1`: an agent's token sees its own
//!   sandboxes; another actor's is not found.
//! - Errors are E2B's `{"code": <status>, "message": ...}`, plus sandboxer's
//!   kind as `error_code`.
//! - What runs inside an E2B sandbox (`envd`: commands, files, PTY) is not
//!   offered: sandboxer's job ends at "ready, and here is how to reach it".
//! - Pause, resume and connect (which resumes a paused sandbox) are the
//!   manager's; E2B calls `paused` (and `pausing`) paused and every other
//!   live state running. A snapshot is a template, as in E2B: its
//!   `snapshotID` (sandboxer's `snap-...` id) or its name is a `templateID`
//!   that creates a sandbox from it.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use sandboxer_core::e2b as wire;
use sandboxer_core::lifecycle::{EndReason, State as LifeState};
use sandboxer_core::manager::{CreateRequest, ListFilter};
use sandboxer_core::model::Sandbox;
use sandboxer_core::routing::Constraints;
use sandboxer_core::store::db::ListQuery;
use sandboxer_core::ErrorKind;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::extract::{Caller, JsonBody, Params, PathParam};
use crate::routes::{run_blocking, DEFAULT_PROFILE};
use crate::ApiState;
use sandboxer_telemetry::HostInventory;

/// The `clientID` answered (deprecated in E2B's API, still required).
const CLIENT_ID: &str = "sandboxer";

/// Sandboxes per page of `GET /v2/sandboxes` when the caller names no limit
/// (E2B's default).
const LIST_DEFAULT: usize = 100;

/// An error in E2B's shape.
#[derive(Debug)]
pub struct E2bError(ApiError);

impl From<ApiError> for E2bError {
    fn from(e: ApiError) -> Self {
        E2bError(e)
    }
}

impl From<sandboxer_core::Error> for E2bError {
    fn from(e: sandboxer_core::Error) -> Self {
        E2bError(ApiError::from(e))
    }
}

impl IntoResponse for E2bError {
    fn into_response(self) -> Response {
        let e = self.0;
        let message = match &e.hint {
            Some(h) => format!("{} ({h})", e.message),
            None => e.message.clone(),
        };
        let body = wire::ErrorBody {
            code: e.status.as_u16(),
            message,
            error_code: Some(e.kind.as_str().to_string()),
        };
        (e.status, Json(body)).into_response()
    }
}

type E2bResult = Result<Response, E2bError>;

fn not_found(id: &str) -> E2bError {
    E2bError(ApiError::new(
        ErrorKind::NotFound,
        format!("sandbox {id} not found"),
    ))
}

/// The live states E2B calls `running`.
const RUNNING: [LifeState; 3] = [
    LifeState::Provisioning,
    LifeState::Ready,
    LifeState::Resuming,
];
/// The live states E2B calls `paused`.
const PAUSED: [LifeState; 2] = [LifeState::Pausing, LifeState::Paused];

/// E2B calls a sandbox that exists and has not ended `running` or `paused`.
fn running(s: &Sandbox) -> bool {
    RUNNING.contains(&s.state())
}

fn paused(s: &Sandbox) -> bool {
    PAUSED.contains(&s.state())
}

/// The sandbox `id` if the caller may see it and it has not ended (running
/// or paused); anything else is E2B's 404.
async fn live_sandbox(st: &ApiState, caller: &Caller, id: &str) -> Result<Sandbox, E2bError> {
    let m = st.manager.clone();
    let owned = id.to_string();
    let found = run_blocking(move || async move { Ok(m.get(&owned).ok()) }).await?;
    match found {
        Some(s) if caller.sees(&s) && (running(&s) || paused(&s)) => Ok(s),
        _ => Err(not_found(id)),
    }
}

/// [`live_sandbox`], running only: a paused one is E2B's 409.
async fn running_sandbox(st: &ApiState, caller: &Caller, id: &str) -> Result<Sandbox, E2bError> {
    let s = live_sandbox(st, caller, id).await?;
    if paused(&s) {
        return Err(E2bError(
            ApiError::new(ErrorKind::Conflict, format!("sandbox {id} is paused"))
                .with_hint("resume it first (POST /sandboxes/{id}/connect)"),
        ));
    }
    Ok(s)
}

/// The host inventory the sandbox reported at ready (the canary's), if it
/// reported one.
fn inventory(s: &Sandbox) -> Option<HostInventory> {
    serde_json::from_value(s.telemetry.clone()?).ok()
}

const MIB: u64 = 1024 * 1024;

/// E2B's `Sandbox` of `s` (the create, connect and resume answer).
fn sandbox_view(s: &Sandbox, alias: Option<&str>) -> wire::Sandbox {
    wire::Sandbox {
        template_id: s.profile.clone(),
        sandbox_id: s.id.clone(),
        alias: alias.map(str::to_string),
        client_id: CLIENT_ID.to_string(),
        envd_version: wire::ENVD_VERSION.to_string(),
        domain: None,
    }
}

/// E2B's `SandboxDetail` and `ListedSandbox` of `s`: resources from the
/// host telemetry the sandbox reported (0 where it reported none).
fn detail_view(s: &Sandbox) -> wire::SandboxDetail {
    let end = s
        .expires_at
        .unwrap_or(s.created_at + chrono::Duration::seconds(s.ttl_seconds as i64));
    let inv = inventory(s);
    let inv = inv.as_ref();
    let disk = inv.and_then(|i| i.disk_total_bytes.or(i.disk_free_bytes));
    wire::SandboxDetail {
        template_id: s.profile.clone(),
        sandbox_id: s.id.clone(),
        client_id: CLIENT_ID.to_string(),
        started_at: s.created_at,
        end_at: end,
        envd_version: wire::ENVD_VERSION.to_string(),
        cpu_count: inv.and_then(|i| i.cpus).unwrap_or(0),
        memory_mb: inv.and_then(|i| i.mem_total_bytes).map_or(0, |b| b / MIB),
        disk_size_mb: disk.map_or(0, |b| b / MIB),
        metadata: s.metadata.clone(),
        state: if paused(s) {
            wire::STATE_PAUSED
        } else {
            wire::STATE_RUNNING
        }
        .to_string(),
        domain: None,
    }
}

/// `NewSandbox` and `NewSandboxV2`: the fields sandboxer reads. The rest
/// of what the SDKs send (network, lifecycle defaults) is accepted and
/// left alone; what sandboxer cannot honour is refused.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "E2bNewSandbox")]
pub(crate) struct NewSandboxBody {
    /// A profile id, one of its aliases, or a snapshot's id or name.
    #[serde(rename = "templateID")]
    #[schemars(example = &"canary")]
    template_id: String,
    /// The TTL in seconds.
    #[schemars(range(min = 1))]
    timeout: Option<i64>,
    /// Labels kept on the record, listed and filtered on.
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    /// The profile's inputs.
    #[serde(default)]
    env_vars: Option<BTreeMap<String, String>>,
    /// Only false: sandboxes are destroyed, not paused, when their time ends.
    auto_pause: Option<bool>,
    /// Only empty: sandboxer mounts no volumes.
    #[serde(default)]
    #[schemars(length(max = 0))]
    volume_mounts: Option<Vec<Value>>,
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, E2bError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let k = v.to_str().map_err(|_| {
                E2bError(ApiError::invalid("the Idempotency-Key header is not text"))
            })?;
            Ok(Some(k.to_string()).filter(|k| !k.is_empty()))
        }
    }
}

/// `POST /v2/sandboxes` and `POST /sandboxes`.
pub(crate) async fn create(
    State(st): State<ApiState>,
    caller: Result<Caller, ApiError>,
    headers: HeaderMap,
    body: Result<JsonBody<NewSandboxBody>, ApiError>,
) -> E2bResult {
    let caller = caller?;
    let JsonBody(b) = body?;
    if b.auto_pause == Some(true) {
        return Err(E2bError(
            ApiError::invalid("autoPause: sandboxer does not pause sandboxes at their timeout")
                .with_hint(
                    "create without autoPause and pause it yourself (POST /sandboxes/{id}/pause); \
                     at its timeout it ends",
                ),
        ));
    }
    if b.volume_mounts.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(E2bError(ApiError::invalid(
            "volumeMounts: sandboxer does not mount E2B volumes",
        )));
    }
    let catalog = st.manager.catalog();
    // A snapshot of the caller's is a template too (as in E2B).
    let snapshot = match catalog.by_template(&b.template_id, DEFAULT_PROFILE) {
        Some(_) => None,
        None => snapshot_template(&st, &caller, &b.template_id).await?,
    };
    let profile = snapshot
        .as_ref()
        .and_then(|s| catalog.get(&s.profile))
        .or_else(|| catalog.by_template(&b.template_id, DEFAULT_PROFILE))
        .ok_or_else(|| {
            let known: Vec<String> = catalog
                .list()
                .iter()
                .flat_map(|p| std::iter::once(p.id.clone()).chain(p.aliases.iter().cloned()))
                .collect();
            E2bError(
                ApiError::new(
                    ErrorKind::NotFound,
                    format!("template `{}` not found", b.template_id),
                )
                .with_hint(format!(
                    "a template is a profile id or alias, `base`, or a snapshot's id or name: {}",
                    known.join(", ")
                )),
            )
        })?;
    let ttl = match b.timeout {
        None => None,
        Some(t) if t >= 1 => Some(Duration::from_secs(t as u64)),
        Some(t) => {
            return Err(E2bError(ApiError::invalid(format!(
                "timeout {t}: give the sandbox's time to live in seconds, at least 1"
            ))))
        }
    };
    let inputs = b.env_vars.unwrap_or_default();
    let unknown: Vec<&String> = inputs
        .keys()
        .filter(|k| !profile.inputs.contains_key(*k))
        .collect();
    if !unknown.is_empty() {
        let takes = if profile.inputs.is_empty() {
            "none".to_string()
        } else {
            profile
                .inputs
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(E2bError(ApiError::invalid(format!(
            "envVars {}: {} takes no such input (its inputs: {takes})",
            unknown
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
            profile.id
        ))));
    }
    let mut inputs = inputs;
    st.repos.check_inputs(&mut inputs)?;
    let alias = (b.template_id != profile.id).then(|| b.template_id.clone());
    let req = CreateRequest {
        profile: profile.id.clone(),
        inputs,
        ttl,
        constraints: Constraints {
            host: st.default_host.clone(),
            ..Constraints::default()
        },
        actor: Some(caller.actor.clone()),
        idempotency_key: idempotency_key(&headers)?,
        recreated_from: None,
        from_snapshot: snapshot.map(|s| s.id),
        metadata: b.metadata.unwrap_or_default(),
    };
    let (_, sbx) = crate::routes::create_waiting(&st, req).await?;
    // The SDKs take 201 only, for a replayed create too.
    Ok((
        StatusCode::CREATED,
        Json(sandbox_view(&sbx, alias.as_deref())),
    )
        .into_response())
}

/// The running sandboxes the caller may see, matching `metadata`
/// (`k=v&k2=v2`, each part URL-encoded) and `template`, newest first unless
/// `asc`.
#[allow(clippy::too_many_arguments)]
async fn running_for(
    st: &ApiState,
    caller: &Caller,
    states: Vec<LifeState>,
    metadata: Option<&str>,
    template: Option<&str>,
    started_after: Option<DateTime<Utc>>,
    asc: bool,
) -> Result<Vec<Sandbox>, E2bError> {
    let wanted: Vec<(String, String)> = match metadata {
        None => Vec::new(),
        Some(m) => sandboxer_core::e2b::parse_metadata_query(m).map_err(|why| {
            E2bError(
                ApiError::invalid(format!("metadata `{m}`: {why}"))
                    .with_hint("write `key=value&key2=value2`, each key and value URL-encoded"),
            )
        })?,
    };
    let profile = match template {
        None => None,
        Some(t) => match st.manager.catalog().by_template(t, DEFAULT_PROFILE) {
            Some(p) => Some(p.id.clone()),
            // An unknown template matches nothing (as E2B answers).
            None => return Ok(Vec::new()),
        },
    };
    let q = ListQuery {
        filter: ListFilter {
            states,
            actor: (!caller.is_admin()).then(|| caller.actor.clone()),
            profile,
            ..ListFilter::default()
        },
        after: None,
        limit: None,
    };
    let m = st.manager.clone();
    let page = run_blocking(move || async move { m.list_page(&q) }).await?;
    let mut out: Vec<Sandbox> = page
        .records
        .into_iter()
        .filter(|s| {
            wanted
                .iter()
                .all(|(k, v)| s.metadata.get(k).is_some_and(|x| x == v))
        })
        .filter(|s| started_after.is_none_or(|t| s.created_at >= t))
        .collect();
    if !asc {
        out.reverse();
    }
    Ok(out)
}

/// `GET /v2/sandboxes`.
pub(crate) async fn list_v2(
    State(st): State<ApiState>,
    caller: Result<Caller, ApiError>,
    RawQuery(q): RawQuery,
) -> E2bResult {
    let caller = caller?;
    let p = Params::parse(crate::openapi::OpId::E2bListSandboxesV2, q.as_deref())?;
    let mut states: Vec<String> = Vec::new();
    for s in p.list("state") {
        match s.as_str() {
            "running" | "paused" => states.push(s),
            other => {
                return Err(E2bError(ApiError::invalid(format!(
                    "state `{other}`: E2B's states are running and paused"
                ))))
            }
        }
    }
    let asc = match p.one("order")?.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(o) => {
            return Err(E2bError(ApiError::invalid(format!(
                "order `{o}`: asc or desc"
            ))))
        }
    };
    let started_after = p
        .one("startedAfter")?
        .map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| E2bError(ApiError::invalid(format!("startedAfter `{t}`: {e}"))))
        })
        .transpose()?;
    let limit = match p.one("limit")? {
        None => LIST_DEFAULT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=crate::routes::LIST_MAX).contains(&n) => n,
            _ => {
                return Err(E2bError(ApiError::invalid(format!(
                    "limit `{l}` is not a number from 1 to {}",
                    crate::routes::LIST_MAX
                ))))
            }
        },
    };
    let offset = match p.one("nextToken")? {
        None => 0,
        Some(t) => t
            .strip_prefix("o")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                E2bError(
                    ApiError::invalid(format!("nextToken `{t}` is not one this server gave"))
                        .with_hint("pass the X-Next-Token header of the previous page as it was"),
                )
            })?,
    };
    let mut wanted: Vec<LifeState> = Vec::new();
    if states.is_empty() || states.iter().any(|s| s == "running") {
        wanted.extend(RUNNING);
    }
    if states.is_empty() || states.iter().any(|s| s == "paused") {
        wanted.extend(PAUSED);
    }
    let all = {
        running_for(
            &st,
            &caller,
            wanted,
            p.one("metadata")?.as_deref(),
            p.one("template")?.as_deref(),
            started_after,
            asc,
        )
        .await?
    };
    let total = all.len();
    let page: Vec<wire::SandboxDetail> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(detail_view)
        .collect();
    let mut resp = Json(page).into_response();
    let h = resp.headers_mut();
    h.insert(
        "x-total-running",
        HeaderValue::from_str(&total.to_string()).expect("digits"),
    );
    if offset + limit < total {
        h.insert(
            "x-next-token",
            HeaderValue::from_str(&format!("o{}", offset + limit)).expect("ascii"),
        );
    }
    Ok(resp)
}

/// `GET /sandboxes` (E2B's older list: every running sandbox, no pages).
pub(crate) async fn list_v1(
    State(st): State<ApiState>,
    caller: Result<Caller, ApiError>,
    RawQuery(q): RawQuery,
) -> E2bResult {
    let caller = caller?;
    let p = Params::parse(crate::openapi::OpId::E2bListSandboxes, q.as_deref())?;
    let all = running_for(
        &st,
        &caller,
        RUNNING.to_vec(),
        p.one("metadata")?.as_deref(),
        None,
        None,
        false,
    )
    .await?;
    Ok(Json(all.iter().map(detail_view).collect::<Vec<_>>()).into_response())
}

/// `GET /sandboxes/{sandboxID}`.
pub(crate) async fn get(
    State(st): State<ApiState>,
    caller: Result<Caller, ApiError>,
    PathParam(id): PathParam,
) -> E2bResult {
    let caller = caller?;
    let s = live_sandbox(&st, &caller, &id).await?;
    Ok(Json(detail_view(&s)).into_response())
}

/// `DELETE /sandboxes/{sandboxID}`: 204, or 404 for one that is not
/// running (or not the caller's).
pub(crate) async fn kill(
    State(st): State<ApiState>,
    caller: Result<Caller, ApiError>,
    PathParam(id): PathParam,
) -> E2bResult {
    let caller = caller?;
    live_sandbox(&st, &caller, &id).await?;
    let m = st.manager.clone();
    run_blocking(move || async move { m.destroy(&id, EndReason::Destroyed).await }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "E2bTimeout")]
pub(crate) struct TimeoutBody {
    /// Seconds from now.
    #[schemars(range(min = 1))]
    timeout: i64,
}

fn positive_secs(t: i64, what: &str) -> Result<Duration, E2bError> {
    if t < 1 {
        return Err(E2bError(ApiError::invalid(format!(
            "{what} {t}: seconds from now, at least 1"
        ))));
    }
    Ok(Duration::from_secs(t as u64))
}

async fn set_timeout_of(
    st: &ApiState,
    caller: &Caller,
    id: String,
    from_now: Duration,
) -> Result<Sandbox, E2bError> {
    running_sandbox(st, caller, &id).await?;
    let m = st.manager.clone();
    Ok(run_blocking(move || async move { m.set_timeout(&id, from_now).await }).await?)
}

/// `POST /sandboxes/{sandboxID}/timeout`: the sandbox ends `timeout`
/// seconds from now (within its profile's maximum TTL).
pub(crate) async fn set_timeout(
    State(st): State<ApiState>,
    caller: Result<Caller, ApiError>,
    PathParam(id): PathParam,
    body: Result<JsonBody<TimeoutBody>, ApiError>,
) -> E2bResult {
    let caller = caller?;
    let JsonBody(b) = body?;
    let from_now = positive_secs(b.timeout, "timeout")?;
    set_timeout_of(&st, &caller, id, from_now).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(rename = "E2bRefresh")]
pub(crate) struct RefreshBody {
    /// Seconds from now (default 60).
    #[schemars(range(min = 1))]
    duration: Option<i64>,
}

/// `POST /sandboxes/{sandboxID}/refreshes`: keep it alive `duration`
/// seconds from now (E2B's default 60).
pub(crate) async fn refresh(
    State(st): State<ApiState>,
    caller: Result<Caller, ApiError>,
    PathParam(id): PathParam,
    body: Result<JsonBody<RefreshBody>, ApiError>,
) -> E2bResult {
    let caller = caller?;
    let JsonBody(b) = body?;
    let from_now = positive_secs(b.duration.unwrap_or(60), "duration")?;
    set_timeout_of(&st, &caller, id, from_now).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(rename = "E2bConnect")]
pub(crate) struct ConnectBody {
    /// Seconds from now.
    #[schemars(range(min = 1))]
    timeout: Option<i64>,
}

/// `POST /sandboxes/{sandboxID}/connect` and `POST
/// /v2/sandboxes/{sandboxID}/connect`: a running sandbox answers as at
/// create (200), its timeout moved to `timeout` seconds from now when
/// given; a paused one is resumed first (201), for `timeout` seconds when
/// given, else for the time it had left.
pub(crate) async fn connect(
    State(st): State<ApiState>,
    caller: Result<Caller, ApiError>,
    PathParam(id): PathParam,
    body: Result<JsonBody<ConnectBody>, ApiError>,
) -> E2bResult {
    let caller = caller?;
    let JsonBody(b) = body?;
    let found = live_sandbox(&st, &caller, &id).await?;
    if paused(&found) {
        let ttl = b.timeout.map(|t| positive_secs(t, "timeout")).transpose()?;
        let s = resume_of(&st, id, ttl).await?;
        return Ok((StatusCode::CREATED, Json(sandbox_view(&s, None))).into_response());
    }
    let s = match b.timeout {
        Some(t) => set_timeout_of(&st, &caller, id, positive_secs(t, "timeout")?).await?,
        None => running_sandbox(&st, &caller, &id).await?,
    };
    Ok((StatusCode::OK, Json(sandbox_view(&s, None))).into_response())
}

/// One of E2B's `SandboxMetric`s: the host telemetry the sandbox reported.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "E2bMetric")]
pub struct Metric {
    pub timestamp: DateTime<Utc>,
    pub timestamp_unix: i64,
    pub cpu_count: u32,
    /// The 1-minute load over the CPUs, as a percentage (at most 100).
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

/// `GET /sandboxes/{sandboxID}/metrics`: what the sandbox's host reported
/// at ready (the canary's telemetry), as one sample; none where nothing
/// was reported.
pub(crate) async fn metrics(
    State(st): State<ApiState>,
    caller: Result<Caller, ApiError>,
    PathParam(id): PathParam,
    RawQuery(q): RawQuery,
) -> E2bResult {
    let caller = caller?;
    Params::parse(crate::openapi::OpId::E2bSandboxMetrics, q.as_deref())?;
    let s = running_sandbox(&st, &caller, &id).await?;
    let Some(t) = inventory(&s) else {
        return Ok(Json(Vec::<Metric>::new()).into_response());
    };
    let at = t.collected_at;
    let cpus = t.cpus.unwrap_or(0);
    let load = t.load_1.unwrap_or(0.0);
    let used_pct = if cpus > 0 {
        (load / cpus as f64 * 100.0).min(100.0)
    } else {
        0.0
    };
    let mem_total = t.mem_total_bytes.unwrap_or(0);
    let mem_avail = t.mem_available_bytes.unwrap_or(mem_total);
    let disk_total = t.disk_total_bytes.unwrap_or(0);
    let disk_free = t.disk_free_bytes.unwrap_or(disk_total);
    Ok(Json([Metric {
        timestamp: at,
        timestamp_unix: at.timestamp(),
        cpu_count: cpus,
        cpu_used_pct: used_pct,
        mem_used: mem_total.saturating_sub(mem_avail),
        mem_total,
        mem_cache: 0,
        disk_used: disk_total.saturating_sub(disk_free),
        disk_total,
    }])
    .into_response())
}

async fn resume_of(st: &ApiState, id: String, ttl: Option<Duration>) -> Result<Sandbox, E2bError> {
    let m = st.manager.clone();
    Ok(run_blocking(move || async move { m.resume(&id, ttl).await }).await?)
}

/// `POST /sandboxes/{sandboxID}/pause`: 204 once paused; 409 when it is
/// already paused (which the SDKs read as success).
pub(crate) async fn pause(
    State(st): State<ApiState>,
    caller: Result<Caller, ApiError>,
    PathParam(id): PathParam,
) -> E2bResult {
    let caller = caller?;
    let s = live_sandbox(&st, &caller, &id).await?;
    if paused(&s) {
        return Err(E2bError(ApiError::new(
            ErrorKind::Conflict,
            format!("sandbox {id} is already paused"),
        )));
    }
    let m = st.manager.clone();
    run_blocking(move || async move { m.pause(&id).await }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "E2bResume")]
pub(crate) struct ResumeBody {
    /// Seconds from now (default: the time it had left).
    #[schemars(range(min = 1))]
    timeout: Option<i64>,
    /// Only false.
    auto_pause: Option<bool>,
}

/// `POST /sandboxes/{sandboxID}/resume` (E2B's older resume): 201 with the
/// sandbox; 409 when it is not paused.
pub(crate) async fn resume(
    State(st): State<ApiState>,
    caller: Result<Caller, ApiError>,
    PathParam(id): PathParam,
    body: Result<JsonBody<ResumeBody>, ApiError>,
) -> E2bResult {
    let caller = caller?;
    let JsonBody(b) = body?;
    if b.auto_pause == Some(true) {
        return Err(E2bError(ApiError::invalid(
            "autoPause: sandboxer does not pause sandboxes at their timeout",
        )));
    }
    let s = live_sandbox(&st, &caller, &id).await?;
    if !paused(&s) {
        return Err(E2bError(ApiError::new(
            ErrorKind::Conflict,
            format!("sandbox {id} is already running"),
        )));
    }
    let ttl = b.timeout.map(|t| positive_secs(t, "timeout")).transpose()?;
    let s = resume_of(&st, id, ttl).await?;
    Ok((StatusCode::CREATED, Json(sandbox_view(&s, None))).into_response())
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(rename = "E2bSnapshotSandbox")]
pub(crate) struct SnapshotBody {
    /// A name to create sandboxes from it by (as `templateID`).
    name: Option<String>,
}

fn snapshot_info(s: &sandboxer_core::snapshot::Snapshot) -> wire::SnapshotInfo {
    wire::SnapshotInfo::new(&s.id, s.name.as_deref())
}

/// `POST /sandboxes/{sandboxID}/snapshots`: 201 with the snapshot, whose
/// id (or name) is a `templateID` for new sandboxes.
pub(crate) async fn snapshot(
    State(st): State<ApiState>,
    caller: Result<Caller, ApiError>,
    PathParam(id): PathParam,
    body: Result<JsonBody<SnapshotBody>, ApiError>,
) -> E2bResult {
    let caller = caller?;
    let JsonBody(b) = body?;
    live_sandbox(&st, &caller, &id).await?;
    let m = st.manager.clone();
    let actor = caller.actor.clone();
    let snap = run_blocking(move || async move { m.snapshot(&id, b.name, &actor).await }).await?;
    Ok((StatusCode::CREATED, Json(snapshot_info(&snap))).into_response())
}

/// The caller's ready snapshots, oldest first.
async fn own_snapshots(
    st: &ApiState,
    caller: &Caller,
) -> Result<Vec<sandboxer_core::snapshot::Snapshot>, E2bError> {
    let m = st.manager.clone();
    let actor = (!caller.is_admin()).then(|| caller.actor.clone());
    Ok(run_blocking(move || async move {
        m.snapshots(
            actor.as_ref(),
            &[sandboxer_core::snapshot::SnapshotState::Ready],
        )
    })
    .await?)
}

/// The caller's ready snapshot whose id or name is `template` (the newest
/// of that name).
async fn snapshot_template(
    st: &ApiState,
    caller: &Caller,
    template: &str,
) -> Result<Option<sandboxer_core::snapshot::Snapshot>, E2bError> {
    Ok(own_snapshots(st, caller)
        .await?
        .into_iter()
        .rev()
        .find(|s| s.id == template || s.name.as_deref() == Some(template)))
}

/// `GET /snapshots`: the caller's ready snapshots (`sandboxID`: of that
/// sandbox; `name`: of that id or name).
pub(crate) async fn snapshots(
    State(st): State<ApiState>,
    caller: Result<Caller, ApiError>,
    RawQuery(q): RawQuery,
) -> E2bResult {
    let caller = caller?;
    let p = Params::parse(crate::openapi::OpId::E2bListSnapshots, q.as_deref())?;
    let source = p.one("sandboxID")?;
    let name = p.one("name")?;
    let own = own_snapshots(&st, &caller).await?;
    let list: Vec<wire::SnapshotInfo> = own
        .iter()
        .filter(|s| source.as_ref().is_none_or(|x| &s.source == x))
        .filter(|s| {
            name.as_ref()
                .is_none_or(|n| &s.id == n || s.name.as_ref() == Some(n))
        })
        .map(snapshot_info)
        .collect();
    Ok(Json(list).into_response())
}

/// `DELETE /templates/{templateID}`: the caller's snapshot of this id or
/// name is deleted (204); anything else is 404.
pub(crate) async fn delete_template(
    State(st): State<ApiState>,
    caller: Result<Caller, ApiError>,
    PathParam(template): PathParam,
) -> E2bResult {
    let caller = caller?;
    let Some(snap) = snapshot_template(&st, &caller, &template).await? else {
        return Err(E2bError(ApiError::new(
            ErrorKind::NotFound,
            format!("template `{template}` not found"),
        )));
    };
    let m = st.manager.clone();
    run_blocking(move || async move { m.delete_snapshot(&snap.id).await }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
