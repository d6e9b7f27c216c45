//! The operator's dashboard: one page at `/`, its script and stylesheet,
//! all compiled into the binary (it works on a machine with no internet),
//! and the one request it polls, `GET /v1/dashboard` (an operation of the
//! route table, so in the OpenAPI document).
//!
//! The page signs in with a sandboxer token, kept in the tab's
//! `sessionStorage` only, and calls the same `/v1` routes as any client, so
//! the API's per-actor scoping is the dashboard's: an agent's token shows
//! that agent's sandboxes and account only. Destroy and extend-ttl are the
//! API's own routes.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use sandboxer_core::lifecycle::State as LifeState;
use sandboxer_core::manager::ListFilter;
use sandboxer_core::model::Actor;
use sandboxer_core::store::db::{read, Derived, ListQuery};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::extract::{Caller, Params};
use crate::views::Public;
use crate::ApiState;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

/// The most sandboxes one dashboard request lists.
pub const DASHBOARD_MAX: usize = 500;

/// `/`, `/dashboard/app.js` and `/dashboard/app.css`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    // The page runs only its own script and talks only to this server.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

const STATES: [LifeState; 8] = LifeState::ALL;

/// `GET /v1/dashboard`.
pub(crate) async fn data(
    State(st): State<ApiState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(crate::openapi::OpId::Dashboard, q.as_deref())?;
    let mut states = p
        .list("state")
        .iter()
        .map(|s| crate::routes::parse_state(s))
        .collect::<Result<Vec<_>, _>>()?;
    if states.is_empty() {
        // The live states by name: the state index finds them at once,
        // however many ended records the store keeps.
        states = LifeState::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .collect();
    }
    let asked = p
        .one("actor")?
        .filter(|a| !a.is_empty())
        .map(|a| a.parse::<Actor>())
        .transpose()
        .map_err(ApiError::from)?;
    let admin = caller.is_admin();
    let actor = if admin {
        asked
    } else {
        Some(caller.actor.clone())
    };
    let filter = ListFilter {
        states,
        actor,
        profile: p.one("profile")?.filter(|s| !s.is_empty()),
        host: p.one("host")?.filter(|s| !s.is_empty()),
        live_only: false,
    };
    let own = caller.actor.clone();
    let db = st.manager.db().clone();
    let (page, counts, accounts, outbox) = crate::routes::run_blocking(move || async move {
        read(db.as_ref(), |tx| {
            let page = tx.list(&ListQuery {
                filter,
                after: None,
                limit: Some(DASHBOARD_MAX),
            })?;
            let mut counts = None;
            let mut accounts = Vec::new();
            let mut outbox = None;
            if admin {
                let mut c = serde_json::Map::new();
                for s in STATES {
                    c.insert(s.to_string(), json!(0));
                }
                for row in tx.census()? {
                    let n = c.get(&row.state).and_then(Value::as_u64).unwrap_or(0);
                    c.insert(row.state, json!(n + row.count));
                }
                counts = Some(Value::Object(c));
                for (actor, mut v) in tx.all_derived(Derived::Accounts)? {
                    v["actor"] = json!(actor);
                    accounts.push(v);
                }
                let depth = tx.outbox_depth()?;
                let window: Vec<Value> = tx.outbox(1000)?.into_iter().map(|i| i.event).collect();
                outbox = Some((depth, window));
            } else {
                let mut v = serde_json::to_value(sandboxer_credits::db::account_in(tx, &own)?)
                    .expect("json");
                v["actor"] = json!(own.to_string());
                accounts.push(v);
            }
            Ok((page, counts, accounts, outbox))
        })
    })
    .await?;
    let now = Utc::now();
    let events = outbox.map(|(depth, window)| {
        let s = sandboxer_events::status(&window, None, now);
        json!({
            "depth": depth,
            "oldest_age_secs": s.oldest_age_secs,
            "backing_off_until": s.backing_off_until,
            "last_error": s.last_error,
            "relay": st.metrics.relay_view(),
        })
    });
    let m = &st.manager;
    let profiles: Vec<&str> = m.catalog().list().iter().map(|p| p.id.as_str()).collect();
    let mut hosts: Vec<String> = m.hosts().all().into_iter().map(|h| h.name).collect();
    if !hosts.iter().any(|h| h == "local") {
        hosts.insert(0, "local".to_string());
    }
    let records: Vec<Public<'_>> = page.records.iter().rev().map(Public).collect();
    Ok(Json(json!({
        "actor": caller.actor.to_string(),
        "admin": admin,
        "now": now,
        "sandboxes": records,
        "truncated": page.next.is_some(),
        "counts": counts,
        "accounts": accounts,
        "profiles": profiles,
        "hosts": hosts,
        "events": events,
    }))
    .into_response())
}
