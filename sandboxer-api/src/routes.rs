//! One handler per operation of [`crate::openapi::OPERATIONS`]. Each does
//! what the CLI command of the same name does, through the same `Manager`
//! and `DbLedger` calls, and scopes it to the caller's actor.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Json;
use sandboxer_core::credits::Micros;
use sandboxer_core::lifecycle::{EndReason, State as LifeState};
use sandboxer_core::manager::{CreateRequest, ListFilter, Started};
use sandboxer_core::model::{Actor, Sandbox};
use sandboxer_core::routing::Constraints;
use sandboxer_core::store::db::{Cursor, ListQuery};
use sandboxer_core::{Error, ErrorKind};
use sandboxer_credits::EntryFilter;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::{Admin, Caller, JsonBody, Params, PathParam};
use crate::openapi::{self, OpId, Operation};
use crate::views::{probe_hosts, profile_rows, Public};
use crate::ApiState;

/// The profile a create without one gets (as `sandboxer create`).
pub const DEFAULT_PROFILE: &str = "profile.sandbox-canary";

/// The grace window `inspect stale` and `reap-stale` use by default.
pub const DEFAULT_GRACE: Duration = sandboxer_core::reaper::DEFAULT_GRACE;

/// The handler of an operation, on its method.
pub(crate) fn handler(op: &Operation) -> MethodRouter<ApiState> {
    let filter = match op.method {
        openapi::Method::Get => MethodFilter::GET,
        openapi::Method::Post => MethodFilter::POST,
        openapi::Method::Delete => MethodFilter::DELETE,
    };
    // Exhaustive: an operation of the table without a handler does not
    // compile.
    match op.id {
        OpId::Health => on(filter, health),
        OpId::Openapi => on(filter, openapi_doc),
        OpId::Whoami => on(filter, whoami),
        OpId::CreateSandbox => on(filter, create_sandbox),
        OpId::ListSandboxes => on(filter, list_sandboxes),
        OpId::Dashboard => on(filter, crate::dashboard::data),
        OpId::GetSandbox => on(filter, get_sandbox),
        OpId::DestroySandbox => on(filter, destroy_sandbox),
        OpId::RecreateSandbox => on(filter, recreate_sandbox),
        OpId::ExtendSandboxTtl => on(filter, extend_ttl),
        OpId::PauseSandbox => on(filter, pause_sandbox),
        OpId::ResumeSandbox => on(filter, resume_sandbox),
        OpId::SnapshotSandbox => on(filter, snapshot_sandbox),
        OpId::ListSnapshots => on(filter, list_snapshots),
        OpId::GetSnapshot => on(filter, get_snapshot),
        OpId::DeleteSnapshot => on(filter, delete_snapshot),
        OpId::ListProfiles => on(filter, list_profiles),
        OpId::GetProfile => on(filter, get_profile),
        OpId::ExplainRoute => on(filter, explain_route),
        OpId::ListHosts => on(filter, list_hosts),
        OpId::HostTelemetry => on(filter, host_telemetry),
        OpId::InspectStale => on(filter, inspect_stale),
        OpId::ReapStale => on(filter, reap_stale),
        OpId::CreditsBalance => on(filter, credits_balance),
        OpId::GrantCredits => on(filter, grant_credits),
        OpId::CreditsLedger => on(filter, credits_ledger),
        OpId::CreditsUsage => on(filter, credits_usage),
        OpId::CreditsCheck => on(filter, credits_check),
        OpId::UploadRepo => on(filter, crate::uploads::upload_repo),
        OpId::E2bCreateSandboxV2 | OpId::E2bCreateSandbox => on(filter, crate::e2b::create),
        OpId::E2bListSandboxesV2 => on(filter, crate::e2b::list_v2),
        OpId::E2bListSandboxes => on(filter, crate::e2b::list_v1),
        OpId::E2bGetSandbox => on(filter, crate::e2b::get),
        OpId::E2bKillSandbox => on(filter, crate::e2b::kill),
        OpId::E2bSetTimeout => on(filter, crate::e2b::set_timeout),
        OpId::E2bRefreshSandbox => on(filter, crate::e2b::refresh),
        OpId::E2bConnectSandbox | OpId::E2bConnectSandboxV2 => on(filter, crate::e2b::connect),
        OpId::E2bSandboxMetrics => on(filter, crate::e2b::metrics),
        OpId::E2bPauseSandbox => on(filter, crate::e2b::pause),
        OpId::E2bResumeSandbox => on(filter, crate::e2b::resume),
        OpId::E2bSnapshotSandbox => on(filter, crate::e2b::snapshot),
        OpId::E2bListSnapshots => on(filter, crate::e2b::snapshots),
        OpId::E2bDeleteTemplate => on(filter, crate::e2b::delete_template),
        OpId::ListUploads => on(filter, crate::uploads::list_uploads),
        OpId::DeleteUpload => on(filter, crate::uploads::delete_upload),
    }
}

/// Run `f` (manager and ledger work) as a task of its own on the server's
/// runtime, so it runs to completion even when the client goes away (a
/// create is never cut off half-way). Its database commits step off the
/// runtime's workers by themselves (see `sandboxer_core::store::db`).
pub(crate) async fn run_blocking<T, F, Fut>(f: F) -> sandboxer_core::Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = sandboxer_core::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    match tokio::spawn(f()).await {
        Ok(r) => r,
        Err(e) => Err(Error::internal(format!("the operation stopped: {e}"))),
    }
}

async fn offload<T, F, Fut>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = sandboxer_core::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    run_blocking(f).await.map_err(ApiError::from)
}

fn record_response(status: StatusCode, s: &Sandbox) -> Response {
    let mut r = (status, Json(Public(s))).into_response();
    if status == StatusCode::CREATED || status == StatusCode::ACCEPTED {
        if let Ok(v) = HeaderValue::from_str(&format!("/v1/sandboxes/{}", s.id)) {
            r.headers_mut().insert(header::LOCATION, v);
        }
    }
    r
}

fn parse_ttl(raw: Option<&str>, what: &str) -> Result<Option<Duration>, ApiError> {
    raw.map(|t| {
        sandboxer_core::duration::parse_duration(t)
            .map_err(|e| ApiError::invalid(format!("{what}: {e}")))
    })
    .transpose()
}

fn parse_grace(raw: Option<&str>) -> Result<Duration, ApiError> {
    Ok(parse_ttl(raw, "grace")?.unwrap_or(DEFAULT_GRACE))
}

fn parse_price(raw: Option<&str>) -> Result<Option<Micros>, ApiError> {
    raw.filter(|m| !m.is_empty())
        .map(|m| Micros::parse_amount(m).map_err(|e| ApiError::from(e.context("max_price"))))
        .transpose()
}

pub(crate) fn parse_state(s: &str) -> Result<LifeState, ApiError> {
    s.parse()
        .map_err(|why: String| ApiError::invalid(format!("state {why}")))
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// The sandbox `id` if the caller may see it; another actor's is 404, the
/// same answer as a sandbox that does not exist.
async fn visible_sandbox(st: &ApiState, caller: &Caller, id: &str) -> Result<Sandbox, ApiError> {
    let m = st.manager.clone();
    let owned = id.to_string();
    let sbx = offload(move || async move { m.get(&owned) }).await?;
    if !caller.sees(&sbx) {
        return Err(sandboxer_core::store::unknown_sandbox(id).into());
    }
    Ok(sbx)
}

async fn health() -> Response {
    Json(crate::views::Health {
        status: crate::views::HealthStatus::Ok,
        version: env!("CARGO_PKG_VERSION"),
    })
    .into_response()
}

async fn openapi_doc() -> Response {
    Json(openapi::document().clone()).into_response()
}

async fn whoami(caller: Caller) -> Response {
    Json(crate::views::WhoAmI {
        actor: &caller.actor,
        token: &caller.token,
    })
    .into_response()
}

pub(crate) async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(ErrorKind::NotFound, format!("no route {}", uri.path()))
        .with_hint("GET /openapi.json lists every route")
}

pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorKind::Unsupported,
        format!("{method} is not allowed on {}", uri.path()),
    )
    .with_status(StatusCode::METHOD_NOT_ALLOWED)
    .with_hint("GET /openapi.json lists every route and its methods")
}

/// The same as `sandboxer create`'s options. Every field is optional; `{}`
/// creates the canary on the default host.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CreateSandbox")]
pub(crate) struct CreateBody {
    /// The profile (default `profile.sandbox-canary`).
    #[schemars(example = &"profile.sandbox-canary")]
    profile: Option<String>,
    /// The profile's inputs (`--input NAME=VALUE`).
    #[serde(default)]
    inputs: BTreeMap<String, String>,
    #[schemars(with = "Option<sandboxer_core::duration::DurationText>")]
    ttl: Option<String>,
    /// Create on behalf of this actor (only `adm` tokens may name another).
    #[schemars(with = "Option<Actor>")]
    actor: Option<String>,
    #[schemars(length(min = 1, max = 200))]
    idempotency_key: Option<String>,
    /// Wait until ready (default); false answers 202 as soon as it is
    /// recorded, and the server finishes provisioning.
    wait: Option<bool>,
    /// Place on this host and nowhere else.
    #[schemars(example = &"local")]
    host: Option<String>,
    /// The highest price per hour to pay.
    #[schemars(with = "Option<Micros>")]
    max_price: Option<String>,
    /// Only these extensions.
    #[serde(default)]
    only: Vec<String>,
    /// Never these extensions.
    #[serde(default)]
    ignore: Vec<String>,
    /// Do not fall back to the next route when one fails.
    #[serde(default)]
    no_fallback: bool,
    /// Restore this snapshot: the profile is the snapshot's (`profile` may
    /// be left out, or must match), and the sandbox is placed where the
    /// snapshot lives.
    #[schemars(regex(pattern = r"^snap-[a-z0-9]+$"))]
    from_snapshot: Option<String>,
}

fn idempotency_key(headers: &HeaderMap, body: Option<String>) -> Result<Option<String>, ApiError> {
    let header = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::invalid("the Idempotency-Key header is not text"))?
                .to_string(),
        ),
    };
    match (header, body) {
        (Some(h), Some(b)) if h != b => Err(ApiError::invalid(format!(
            "the Idempotency-Key header `{h}` and the body's idempotency_key `{b}` differ"
        ))),
        (h, b) => Ok(b.or(h)),
    }
}

async fn create_sandbox(
    State(st): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(b): JsonBody<CreateBody>,
) -> Result<Response, ApiError> {
    let actor = caller.acting_as(b.actor.as_deref(), "creates")?;
    let mut inputs = b.inputs;
    st.repos.check_inputs(&mut inputs)?;
    let from_snapshot = nonempty(b.from_snapshot);
    if let Some(snap) = &from_snapshot {
        // Another actor's snapshot is as unknown as a missing one.
        visible_snapshot(&st, &caller, snap).await?;
    }
    let profile = match (nonempty(b.profile), &from_snapshot) {
        (Some(p), _) => p,
        (None, Some(_)) => String::new(),
        (None, None) => DEFAULT_PROFILE.to_string(),
    };
    let req = CreateRequest {
        profile,
        inputs,
        ttl: parse_ttl(b.ttl.as_deref(), "ttl")?,
        constraints: Constraints {
            host: nonempty(b.host).or_else(|| st.default_host.clone()),
            max_price: parse_price(b.max_price.as_deref())?,
            only: b.only,
            ignore: b.ignore,
            no_fallback: b.no_fallback,
        },
        actor: Some(actor),
        idempotency_key: idempotency_key(&headers, b.idempotency_key)?,
        recreated_from: None,
        from_snapshot,
        metadata: Default::default(),
    };
    let wait = b.wait.unwrap_or(true);
    let (new, sbx) = start(&st, req, wait).await?;
    let status = if !new {
        StatusCode::OK
    } else if sbx.state() == LifeState::Provisioning {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    Ok(record_response(status, &sbx))
}

/// Create as `req` says: the record, then (when `wait`) provisioning to
/// ready, else provisioning in the background. Whether it is new (not a
/// replay of an idempotency key), and the record.
async fn start(st: &ApiState, req: CreateRequest, wait: bool) -> Result<(bool, Sandbox), ApiError> {
    let m = st.manager.clone();
    let (new, sbx) = offload(move || async move {
        match m.start_create(&req)? {
            Started::New(s) if wait => Ok((true, m.finish_create(&s.id).await?)),
            Started::New(s) => Ok((true, s)),
            Started::Existing(s) if wait && s.state() == LifeState::Provisioning => {
                Ok((false, m.create(req, true).await?))
            }
            Started::Existing(s) => Ok((false, s)),
        }
    })
    .await?;
    if new && !wait {
        st.finish_detached(sbx.id.clone());
    }
    Ok((new, sbx))
}

/// [`start`] until ready (the E2B front door's create).
pub(crate) async fn create_waiting(
    st: &ApiState,
    req: CreateRequest,
) -> Result<(bool, Sandbox), ApiError> {
    start(st, req, true).await
}

/// Records per page of `GET /v1/sandboxes` when the caller names no limit.
pub const LIST_DEFAULT: usize = 100;
/// The most records one page holds.
pub const LIST_MAX: usize = 1000;
/// The response header with the next page's cursor.
pub const NEXT_TOKEN_HEADER: &str = "x-next-token";

async fn list_sandboxes(
    State(st): State<ApiState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(crate::openapi::OpId::ListSandboxes, q.as_deref())?;
    let mut states = Vec::new();
    for s in p.list("state") {
        states.push(parse_state(&s)?);
    }
    let asked = p
        .one("actor")?
        .map(|a| a.parse::<Actor>())
        .transpose()
        .map_err(ApiError::from)?;
    // Only an operator sees other actors' records; the filter goes to the
    // database, so every page is full.
    let actor = match asked {
        Some(a) if !caller.is_admin() && a != caller.actor => {
            return Ok(Json(Vec::<Public<'_>>::new()).into_response())
        }
        Some(a) => Some(a),
        None if caller.is_admin() => None,
        None => Some(caller.actor.clone()),
    };
    let limit = match p.one("limit")? {
        None => LIST_DEFAULT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=LIST_MAX).contains(&n) => n,
            _ => {
                return Err(ApiError::from(sandboxer_core::Error::invalid_input(
                    format!("limit `{l}` is not a number from 1 to {LIST_MAX}"),
                )))
            }
        },
    };
    let after = match p.one("next_token")? {
        None => None,
        Some(t) => Some(Cursor::decode(&t).ok_or_else(|| {
            ApiError::from(
                sandboxer_core::Error::invalid_input(format!(
                    "next_token `{t}` is not a cursor this server gave"
                ))
                .with_hint("pass the X-Next-Token header of the previous page as it was"),
            )
        })?),
    };
    let q = ListQuery {
        filter: ListFilter {
            states,
            actor,
            profile: p.one("profile")?,
            host: p.one("host")?,
            live_only: p.flag("live")?,
        },
        after,
        limit: Some(limit),
    };
    let m = st.manager.clone();
    let page = offload(move || async move { m.list_page(&q) }).await?;
    let records: Vec<Public<'_>> = page.records.iter().map(Public).collect();
    let mut resp = Json(records).into_response();
    if let Some(next) = page.next {
        resp.headers_mut().insert(
            NEXT_TOKEN_HEADER,
            axum::http::HeaderValue::from_str(&next.encode()).expect("a cursor is ASCII"),
        );
    }
    Ok(resp)
}

async fn get_sandbox(
    State(st): State<ApiState>,
    caller: Caller,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let sbx = visible_sandbox(&st, &caller, &id).await?;
    Ok(record_response(StatusCode::OK, &sbx))
}

async fn destroy_sandbox(
    State(st): State<ApiState>,
    caller: Caller,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    visible_sandbox(&st, &caller, &id).await?;
    let m = st.manager.clone();
    let sbx = offload(move || async move { m.destroy(&id, EndReason::Destroyed).await }).await?;
    Ok(record_response(StatusCode::OK, &sbx))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RecreateSandbox")]
pub(crate) struct RecreateBody {
    /// Wait until the new sandbox is ready (default); false answers 202.
    wait: Option<bool>,
}

async fn recreate_sandbox(
    State(st): State<ApiState>,
    caller: Caller,
    PathParam(id): PathParam,
    JsonBody(b): JsonBody<RecreateBody>,
) -> Result<Response, ApiError> {
    visible_sandbox(&st, &caller, &id).await?;
    let wait = b.wait.unwrap_or(true);
    let m = st.manager.clone();
    let new = offload(move || async move { m.recreate(&id, wait).await }).await?;
    if new.state() == LifeState::Provisioning && !wait {
        st.finish_detached(new.id.clone());
        return Ok(record_response(StatusCode::ACCEPTED, &new));
    }
    Ok(record_response(StatusCode::CREATED, &new))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ExtendTtl")]
pub(crate) struct ExtendBody {
    /// How much longer.
    #[schemars(with = "sandboxer_core::duration::DurationText")]
    by: String,
}

async fn extend_ttl(
    State(st): State<ApiState>,
    caller: Caller,
    PathParam(id): PathParam,
    JsonBody(b): JsonBody<ExtendBody>,
) -> Result<Response, ApiError> {
    let by = sandboxer_core::duration::parse_duration(&b.by)
        .map_err(|e| ApiError::invalid(format!("by: {e}")))?;
    visible_sandbox(&st, &caller, &id).await?;
    let m = st.manager.clone();
    let sbx = offload(move || async move { m.extend_ttl(&id, by).await }).await?;
    Ok(record_response(StatusCode::OK, &sbx))
}

async fn pause_sandbox(
    State(st): State<ApiState>,
    caller: Caller,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    visible_sandbox(&st, &caller, &id).await?;
    let m = st.manager.clone();
    let sbx = offload(move || async move { m.pause(&id).await }).await?;
    Ok(record_response(StatusCode::OK, &sbx))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ResumeSandbox")]
pub(crate) struct ResumeBody {
    /// Run this long from now instead of the time it had left.
    #[schemars(with = "Option<sandboxer_core::duration::DurationText>")]
    ttl: Option<String>,
}

async fn resume_sandbox(
    State(st): State<ApiState>,
    caller: Caller,
    PathParam(id): PathParam,
    JsonBody(b): JsonBody<ResumeBody>,
) -> Result<Response, ApiError> {
    let ttl = parse_ttl(b.ttl.as_deref(), "ttl")?;
    visible_sandbox(&st, &caller, &id).await?;
    let m = st.manager.clone();
    let sbx = offload(move || async move { m.resume(&id, ttl).await }).await?;
    Ok(record_response(StatusCode::OK, &sbx))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SnapshotSandbox")]
pub(crate) struct SnapshotBody {
    /// A name to find it by.
    #[schemars(length(min = 1, max = 128))]
    name: Option<String>,
}

async fn snapshot_sandbox(
    State(st): State<ApiState>,
    caller: Caller,
    PathParam(id): PathParam,
    JsonBody(b): JsonBody<SnapshotBody>,
) -> Result<Response, ApiError> {
    visible_sandbox(&st, &caller, &id).await?;
    let m = st.manager.clone();
    let actor = caller.actor.clone();
    let snap = offload(move || async move { m.snapshot(&id, b.name, &actor).await }).await?;
    Ok((
        StatusCode::CREATED,
        Json(crate::views::public_snapshot(&snap)),
    )
        .into_response())
}

/// The snapshot `id` if the caller may see it; another actor's is 404.
async fn visible_snapshot(
    st: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<sandboxer_core::snapshot::Snapshot, ApiError> {
    let m = st.manager.clone();
    let owned = id.to_string();
    let snap = offload(move || async move { m.snapshot_record(&owned) }).await?;
    if !caller.is_admin() && snap.actor != caller.actor {
        return Err(sandboxer_core::snapshot::unknown_snapshot(id).into());
    }
    Ok(snap)
}

async fn list_snapshots(
    State(st): State<ApiState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(crate::openapi::OpId::ListSnapshots, q.as_deref())?;
    let states = p
        .list("state")
        .iter()
        .map(|s| {
            s.parse::<sandboxer_core::snapshot::SnapshotState>()
                .map_err(|why| ApiError::invalid(format!("state: {why}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let asked = p
        .one("actor")?
        .map(|a| a.parse::<Actor>())
        .transpose()
        .map_err(ApiError::from)?;
    let actor = match asked {
        Some(a) if caller.is_admin() || a == caller.actor => Some(a),
        Some(_) => {
            return Err(ApiError::new(
                ErrorKind::Forbidden,
                "only adm tokens list another actor's snapshots",
            ))
        }
        None if caller.is_admin() => None,
        None => Some(caller.actor.clone()),
    };
    let m = st.manager.clone();
    let list = offload(move || async move { m.snapshots(actor.as_ref(), &states) }).await?;
    let out: Vec<serde_json::Value> = list.iter().map(crate::views::public_snapshot).collect();
    Ok(Json(out).into_response())
}

async fn get_snapshot(
    State(st): State<ApiState>,
    caller: Caller,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let snap = visible_snapshot(&st, &caller, &id).await?;
    Ok(Json(crate::views::public_snapshot(&snap)).into_response())
}

async fn delete_snapshot(
    State(st): State<ApiState>,
    caller: Caller,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    visible_snapshot(&st, &caller, &id).await?;
    let m = st.manager.clone();
    let snap = offload(move || async move { m.delete_snapshot(&id).await }).await?;
    Ok(Json(crate::views::public_snapshot(&snap)).into_response())
}

async fn list_profiles(State(st): State<ApiState>, _caller: Caller) -> Response {
    let m = &st.manager;
    let rows = profile_rows(&m.catalog().list(), m.registry());
    Json(serde_json::to_value(rows).expect("json")).into_response()
}

async fn get_profile(
    State(st): State<ApiState>,
    _caller: Caller,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let p = st.manager.catalog().require(&id)?;
    Ok(Json(serde_json::to_value(p).expect("json")).into_response())
}

async fn explain_route(
    State(st): State<ApiState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(crate::openapi::OpId::ExplainRoute, q.as_deref())?;
    let actor = caller.acting_as(p.one("actor")?.as_deref(), "explains")?;
    let req = CreateRequest {
        profile: p
            .one("profile")?
            .unwrap_or_else(|| DEFAULT_PROFILE.to_string()),
        inputs: BTreeMap::new(),
        ttl: parse_ttl(p.one("ttl")?.as_deref(), "ttl")?,
        constraints: Constraints {
            host: p.one("host")?.or_else(|| st.default_host.clone()),
            max_price: parse_price(p.one("max_price")?.as_deref())?,
            only: p.list("only"),
            ignore: p.list("ignore"),
            no_fallback: p.flag("no_fallback")?,
        },
        actor: Some(actor),
        idempotency_key: None,
        recreated_from: None,
        from_snapshot: None,
        metadata: Default::default(),
    };
    let m = st.manager.clone();
    let d = offload(move || async move { m.explain(&req).await }).await?;
    Ok(Json(serde_json::to_value(d).expect("json")).into_response())
}

async fn list_hosts(State(st): State<ApiState>, caller: Caller) -> Result<Response, ApiError> {
    let m = st.manager.clone();
    let mut rows = offload(move || async move { Ok(probe_hosts(&m).await) }).await?;
    if !caller.is_admin() {
        for r in &mut rows {
            r.identity_file = None;
        }
    }
    Ok(Json(serde_json::to_value(rows).expect("json")).into_response())
}

async fn host_telemetry(
    State(st): State<ApiState>,
    _admin: Admin,
    PathParam(name): PathParam,
) -> Result<Response, ApiError> {
    let spec = st.manager.hosts().require(&name)?;
    let m = st.manager.clone();
    let inv = offload(move || async move {
        let transport = m.connector().connect(&spec).await?;
        sandboxer_telemetry::gather(transport.as_ref()).await
    })
    .await?;
    Ok(Json(serde_json::to_value(inv).expect("json")).into_response())
}

async fn inspect_stale(
    State(st): State<ApiState>,
    _admin: Admin,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(crate::openapi::OpId::InspectStale, q.as_deref())?;
    let grace = parse_grace(p.one("grace")?.as_deref())?;
    let m = st.manager.clone();
    let report = offload(move || async move { m.inspect_stale(grace).await }).await?;
    Ok(Json(serde_json::to_value(report).expect("json")).into_response())
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ReapRequest")]
pub(crate) struct ReapBody {
    /// Say what would be done; change nothing.
    #[serde(default)]
    dry_run: bool,
    /// Leave alone what changed more recently than this (default `2m`).
    #[schemars(with = "Option<sandboxer_core::duration::DurationText>")]
    grace: Option<String>,
}

async fn reap_stale(
    State(st): State<ApiState>,
    _admin: Admin,
    JsonBody(b): JsonBody<ReapBody>,
) -> Result<Response, ApiError> {
    let grace = parse_grace(b.grace.as_deref())?;
    let m = st.manager.clone();
    let report = offload(move || async move { m.reap_stale(grace, b.dry_run).await }).await?;
    Ok(Json(crate::views::ReapAnswer {
        ok: report.all_ok(),
        report,
    })
    .into_response())
}

/// Whose credits: `asked` (only `adm` may ask for another actor), else the
/// caller's.
fn credits_actor(caller: &Caller, asked: Option<String>) -> Result<Actor, ApiError> {
    caller.acting_as(asked.as_deref(), "reads credits")
}

async fn credits_balance(
    State(st): State<ApiState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(crate::openapi::OpId::CreditsBalance, q.as_deref())?;
    let actor = credits_actor(&caller, p.one("actor")?)?;
    let ledger = st.ledger.clone();
    let who = actor.clone();
    let acct = offload(move || async move { ledger.balance(&who) }).await?;
    Ok(Json(crate::views::Balance {
        actor: &actor,
        account: acct,
    })
    .into_response())
}

/// An amount as a decimal string (`"0.5"`) or a whole number (`25`).
#[derive(Debug)]
pub(crate) struct AmountField(String);

impl JsonSchema for AmountField {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AmountOrWhole".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [generator.subschema_for::<Micros>(), {"type": "integer", "minimum": 1}],
        })
    }
}

impl<'de> Deserialize<'de> for AmountField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = AmountField;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a decimal string such as \"0.5\" or a whole number such as 25")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AmountField, E> {
                Ok(AmountField(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<AmountField, E> {
                Ok(AmountField(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<AmountField, E> {
                Ok(AmountField(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "GrantRequest")]
pub(crate) struct GrantBody {
    #[schemars(with = "Actor")]
    actor: String,
    /// Above zero.
    amount: AmountField,
    /// Makes the grant idempotent.
    #[schemars(length(min = 1))]
    key: Option<String>,
}

async fn grant_credits(
    State(st): State<ApiState>,
    Admin(caller): Admin,
    JsonBody(b): JsonBody<GrantBody>,
) -> Result<Response, ApiError> {
    let to: Actor = b.actor.parse().map_err(ApiError::from)?;
    let amount = Micros::parse_amount(&b.amount.0)
        .map_err(|e| ApiError::from(e.context("credits grant")))?;
    if amount == Micros::ZERO {
        return Err(ApiError::invalid(
            "credits grant: the amount must be above zero",
        ));
    }
    if b.key.as_deref() == Some("") {
        return Err(ApiError::invalid("credits grant: an empty key"));
    }
    let ledger = st.ledger.clone();
    let by = caller.actor.clone();
    let who = to.clone();
    let (applied, acct) = offload(move || async move {
        let applied = ledger.grant(&by, &who, amount, b.key.as_deref())?;
        let acct = ledger.balance(&who)?;
        Ok((applied, acct))
    })
    .await?;
    let status = if applied.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(crate::views::GrantResult {
            entry: applied.entry,
            duplicate: applied.duplicate,
            actor: &to,
            account: acct,
        }),
    )
        .into_response())
}

async fn credits_ledger(
    State(st): State<ApiState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(crate::openapi::OpId::CreditsLedger, q.as_deref())?;
    let asked = p.one("actor")?;
    let actor = if caller.is_admin() {
        asked
            .map(|a| a.parse::<Actor>())
            .transpose()
            .map_err(ApiError::from)?
    } else {
        Some(credits_actor(&caller, asked)?)
    };
    let filter = EntryFilter {
        actor,
        sandbox_id: p.one("sandbox")?,
    };
    let ledger = st.ledger.clone();
    let entries = offload(move || async move { ledger.entries(&filter) }).await?;
    Ok(Json(serde_json::to_value(entries).expect("json")).into_response())
}

async fn credits_usage(
    State(st): State<ApiState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(crate::openapi::OpId::CreditsUsage, q.as_deref())?;
    let actor = credits_actor(&caller, p.one("actor")?)?;
    let ledger = st.ledger.clone();
    let who = actor.clone();
    let rows = offload(move || async move { ledger.usage(&who) }).await?;
    Ok(Json(crate::views::Usage {
        actor: &actor,
        usage: rows,
    })
    .into_response())
}

async fn credits_check(State(st): State<ApiState>, _admin: Admin) -> Result<Response, ApiError> {
    let ledger = st.ledger.clone();
    let report = offload(move || async move { ledger.check() }).await?;
    Ok(Json(crate::views::CheckAnswer {
        ok: report.is_ok(),
        report,
    })
    .into_response())
}
