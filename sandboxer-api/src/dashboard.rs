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
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sandboxer_core::lifecycle::State as LifeState;
use sandboxer_core::manager::ListFilter;
use sandboxer_core::model::Actor;
use sandboxer_core::store::db::{read, Derived, ListQuery};
use sandboxer_credits::Account;
use schemars::JsonSchema;
use serde::Serialize;

use crate::error::ApiError;
use crate::extract::{Caller, Params};
use crate::views::Public;
use crate::ApiState;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

/// `GET /v1/dashboard`: what the page shows, in one answer.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "DashboardData")]
pub struct DashboardData<'a> {
    pub actor: &'a Actor,
    /// Whether the token is an `adm` token.
    pub admin: bool,
    /// The server's clock (time left counts from here).
    pub now: DateTime<Utc>,
    /// Newest first.
    pub sandboxes: Vec<Public<'a>>,
    /// More sandboxes match than the 500 listed.
    pub truncated: bool,
    /// Records per state (adm only).
    pub counts: Option<BTreeMap<String, u64>>,
    pub accounts: Vec<ActorAccount>,
    /// Profile ids, for the filter.
    pub profiles: Vec<&'a str>,
    /// Host names, for the filter.
    pub hosts: Vec<String>,
    /// The State Hub outbox (adm only).
    pub events: Option<EventsView>,
}

/// One actor's account.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ActorAccount {
    #[schemars(with = "Actor")]
    pub actor: String,
    #[serde(flatten)]
    pub account: Account,
}

/// The State Hub outbox, as the dashboard shows it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EventsView {
    /// Events waiting for delivery.
    pub depth: u64,
    /// The age of the oldest waiting event, in seconds.
    pub oldest_age_secs: Option<i64>,
    /// The hub failed; relays leave it alone until then.
    pub backing_off_until: Option<DateTime<Utc>>,
    /// The most recent failed delivery.
    pub last_error: Option<sandboxer_events::LastError>,
    /// What this server's relay last did.
    pub relay: crate::metrics::RelayView,
}

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
                let mut c: BTreeMap<String, u64> =
                    STATES.iter().map(|s| (s.to_string(), 0)).collect();
                for row in tx.census()? {
                    *c.entry(row.state).or_default() += row.count;
                }
                counts = Some(c);
                for (actor, v) in tx.all_derived(Derived::Accounts)? {
                    let account = serde_json::from_value(v).map_err(|e| {
                        sandboxer_core::Error::new(
                            sandboxer_core::ErrorKind::StoreCorrupt,
                            format!("the account of {actor} in the store: {e}"),
                        )
                    })?;
                    accounts.push(ActorAccount { actor, account });
                }
                let depth = tx.outbox_depth()?;
                let window: Vec<serde_json::Value> =
                    tx.outbox(1000)?.into_iter().map(|i| i.event).collect();
                outbox = Some((depth, window));
            } else {
                accounts.push(ActorAccount {
                    actor: own.to_string(),
                    account: sandboxer_credits::db::account_in(tx, &own)?,
                });
            }
            Ok((page, counts, accounts, outbox))
        })
    })
    .await?;
    let now = Utc::now();
    let events = outbox.map(|(depth, window)| {
        let s = sandboxer_events::status(&window, None, now);
        EventsView {
            depth,
            oldest_age_secs: s.oldest_age_secs,
            backing_off_until: s.backing_off_until,
            last_error: s.last_error,
            relay: st.metrics.relay_view(),
        }
    });
    let m = &st.manager;
    let profiles: Vec<&str> = m.catalog().list().iter().map(|p| p.id.as_str()).collect();
    let mut hosts: Vec<String> = m.hosts().all().into_iter().map(|h| h.name).collect();
    if !hosts.iter().any(|h| h == "local") {
        hosts.insert(0, "local".to_string());
    }
    let records: Vec<Public<'_>> = page.records.iter().rev().map(Public).collect();
    Ok(Json(DashboardData {
        actor: &caller.actor,
        admin,
        now,
        sandboxes: records,
        truncated: page.next.is_some(),
        counts,
        accounts,
        profiles,
        hosts,
        events,
    })
    .into_response())
}
