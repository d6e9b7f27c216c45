//! `/metrics`: the server's Prometheus metrics, in Prometheus's text
//! format, written by the `prometheus` crate (Prometheus scrapes it;
//! `promtool check metrics` lints it).
//!
//! Two kinds of metric:
//! - **what happened in this process**, counted as it happens: lifecycle
//!   steps (the manager tells [`Metrics`] through its
//!   [`Observer`](sandboxer_core::manager::Observer)), reaper passes, State
//!   Hub deliveries, HTTP requests. Each replica counts its own; sum them in
//!   PromQL.
//! - **what the database holds**, read at each scrape in one read
//!   transaction: sandboxes per state, profile, extension and host (live
//!   ones; ended ones per state only), the outbox, and the credits per actor.
//!   Every replica reports the same values; take `max` across them.
//!
//! Access: without a token from a loopback address only; from anywhere else
//! with an `adm` token (`Authorization: Bearer ...`), because the credits
//! and actors are an operator's business. See docs/operations.md.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use prometheus::{
    exponential_buckets, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use sandboxer_core::lifecycle::State as LifeState;
use sandboxer_core::manager::Observer;
use sandboxer_core::model::Sandbox;
use sandboxer_core::reaper::ReapReport;
use sandboxer_core::store::db::{read, CensusRow, Derived};
use sandboxer_core::ErrorKind;
use sandboxer_credits::Account;

use crate::error::ApiError;
use crate::extract::Admin;
use crate::ApiState;

/// The `Content-Type` of `/metrics`: Prometheus's text format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Seconds, from 50 ms to about 7 minutes: a canary is ready in tens of
/// milliseconds, a VM in tens of seconds.
fn step_buckets() -> Vec<f64> {
    exponential_buckets(0.05, 2.0, 14).expect("valid buckets")
}

/// Seconds, from 1 ms to about 16 s.
fn http_buckets() -> Vec<f64> {
    exponential_buckets(0.001, 2.0, 15).expect("valid buckets")
}

/// The server's metrics. One per server; cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    sandboxes: IntGaugeVec,
    ended: IntGaugeVec,
    ready_seconds: HistogramVec,
    destroy_seconds: HistogramVec,
    failures: IntCounterVec,
    reaper_runs: IntCounterVec,
    reaped: IntCounterVec,
    outbox_depth: IntGauge,
    outbox_oldest: IntGauge,
    delivered: IntCounter,
    delivery_failures: IntCounter,
    held: GaugeVec,
    spent: GaugeVec,
    available: GaugeVec,
    http: IntCounterVec,
    http_seconds: HistogramVec,
    host_up: IntGaugeVec,
    host_live: IntGaugeVec,
    host_capacity: IntGaugeVec,
    /// One scrape at a time (each clears and refills the database gauges).
    scrape: Mutex<()>,
    relay: Mutex<RelayView>,
}

/// What this server's State Hub relay last did (for the dashboard).
#[derive(Debug, Clone, Default, serde::Serialize, schemars::JsonSchema)]
pub struct RelayView {
    /// Whether this server runs a relay (a hub is configured).
    pub running: bool,
    pub last_delivery_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Register `m` in `r` and return it (the names are fixed, so registering
/// cannot clash).
fn reg<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
    r.register(Box::new(m.clone()))
        .expect("each metric is registered once");
    m
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let sandboxes = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "sandboxer_sandboxes",
                    "Live sandboxes (provisioning, ready, destroying) by state, profile, extension and host",
                ),
                &["state", "profile", "extension", "host"],
            )
            .expect("metric"),
        );
        let ended = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "sandboxer_sandboxes_ended",
                    "Records of sandboxes that ended (destroyed, failed) by state",
                ),
                &["state"],
            )
            .expect("metric"),
        );
        let ready_seconds = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "sandboxer_create_to_ready_seconds",
                    "From a create being recorded to its sandbox being ready, by profile and extension",
                )
                .buckets(step_buckets()),
                &["profile", "extension"],
            )
            .expect("metric"),
        );
        let destroy_seconds = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "sandboxer_destroy_seconds",
                    "A destroy's teardown, from destroying to destroyed, by profile and extension",
                )
                .buckets(step_buckets()),
                &["profile", "extension"],
            )
            .expect("metric"),
        );
        let failures = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "sandboxer_provisioning_failures_total",
                    "Creates that ended failed (every candidate tried), by profile and the last error's kind",
                ),
                &["profile", "kind"],
            )
            .expect("metric"),
        );
        let reaper_runs = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "sandboxer_reaper_runs_total",
                    "Passes of the built-in reaper, by result (ok: the pass ran; error: it could not)",
                ),
                &["result"],
            )
            .expect("metric"),
        );
        let reaped = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "sandboxer_reaper_ended_total",
                    "What the built-in reaper ended, by kind (expired, orphan, ghost, stuck, ...) and result",
                ),
                &["kind", "result"],
            )
            .expect("metric"),
        );
        let outbox_depth = reg(
            &r,
            IntGauge::new(
                "sandboxer_outbox_depth",
                "Lifecycle events waiting for delivery to the State Hub",
            )
            .expect("metric"),
        );
        let outbox_oldest = reg(
            &r,
            IntGauge::new(
                "sandboxer_outbox_oldest_age_seconds",
                "Age of the oldest waiting event (0 when none waits)",
            )
            .expect("metric"),
        );
        let delivered = reg(
            &r,
            IntCounter::new(
                "sandboxer_outbox_delivered_total",
                "Events this server's relay delivered to the State Hub",
            )
            .expect("metric"),
        );
        let delivery_failures = reg(
            &r,
            IntCounter::new(
                "sandboxer_outbox_delivery_failures_total",
                "Deliveries to the State Hub that failed (retried with backoff)",
            )
            .expect("metric"),
        );
        let credits = |name: &str, help: &str| {
            reg(
                &r,
                GaugeVec::new(Opts::new(name, help), &["actor"]).expect("metric"),
            )
        };
        let held = credits(
            "sandboxer_credits_held",
            "Credits held by open holds (the metered sandboxes running), per actor",
        );
        let spent = credits(
            "sandboxer_credits_spent",
            "Credits spent (settled) since the ledger began, per actor; only ever grows",
        );
        let available = credits(
            "sandboxer_credits_available",
            "Credits new holds can take, per actor",
        );
        let http = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "sandboxer_http_requests_total",
                    "HTTP requests answered, by method, route (the route template) and status",
                ),
                &["method", "route", "status"],
            )
            .expect("metric"),
        );
        let http_seconds = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "sandboxer_http_request_duration_seconds",
                    "Time to answer an HTTP request, by route",
                )
                .buckets(http_buckets()),
                &["route"],
            )
            .expect("metric"),
        );
        let per_host = |name: &str, help: &str| {
            reg(
                &r,
                IntGaugeVec::new(Opts::new(name, help), &["host"]).expect("metric"),
            )
        };
        let host_up = per_host(
            "sandboxer_host_up",
            "1 when the last probe reached the host (every --probe-interval), 0 when it did not",
        );
        let host_live = per_host(
            "sandboxer_host_live",
            "Live sandboxes on the host at the last probe",
        );
        let host_capacity = per_host(
            "sandboxer_host_capacity",
            "The host's capacity in hosts.toml (hosts without one are left out)",
        );
        let info = reg(
            &r,
            IntGaugeVec::new(
                Opts::new("sandboxer_build_info", "The server's version (always 1)"),
                &["version"],
            )
            .expect("metric"),
        );
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Metrics {
            registry: r,
            sandboxes,
            ended,
            ready_seconds,
            destroy_seconds,
            failures,
            reaper_runs,
            reaped,
            outbox_depth,
            outbox_oldest,
            delivered,
            delivery_failures,
            held,
            spent,
            available,
            http,
            http_seconds,
            host_up,
            host_live,
            host_capacity,
            scrape: Mutex::new(()),
            relay: Mutex::new(RelayView::default()),
        }
    }

    /// A reaper pass ended: `Ok` with its report, or the error it stopped on.
    pub fn reaper_pass(&self, report: Result<&ReapReport, ()>) {
        let result = if report.is_ok() { "ok" } else { "error" };
        self.reaper_runs.with_label_values(&[result]).inc();
        if let Ok(report) = report {
            for r in &report.reaped {
                self.reaped
                    .with_label_values(&[r.item.kind.as_str(), if r.ok { "ok" } else { "failed" }])
                    .inc();
            }
        }
    }

    /// This server runs a State Hub relay.
    pub fn relay_running(&self) {
        self.relay.lock().expect("relay view").running = true;
    }

    /// A relay pass delivered `delivered` events and failed `failed` times.
    pub fn relay_pass(&self, delivered: usize, failed: usize, last_error: Option<&str>) {
        self.delivered.inc_by(delivered as u64);
        self.delivery_failures.inc_by(failed as u64);
        let mut v = self.relay.lock().expect("relay view");
        let now = Utc::now();
        if delivered > 0 {
            v.last_delivery_at = Some(now);
        }
        if failed > 0 {
            v.last_error = last_error.map(str::to_string);
            v.last_error_at = Some(now);
        }
    }

    /// What a probe of every host found.
    pub fn hosts(&self, rows: &[crate::views::HostRow]) {
        self.host_up.reset();
        self.host_live.reset();
        self.host_capacity.reset();
        for h in rows {
            let l = [h.name.as_str()];
            self.host_up
                .with_label_values(&l)
                .set(i64::from(h.reachable));
            self.host_live.with_label_values(&l).set(i64::from(h.live));
            if let Some(c) = h.capacity {
                self.host_capacity.with_label_values(&l).set(i64::from(c));
            }
        }
    }

    /// What the relay last did.
    pub fn relay_view(&self) -> RelayView {
        self.relay.lock().expect("relay view").clone()
    }

    fn http_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.http
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.http_seconds
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    /// Refill the database gauges from `snap` and write every metric.
    fn render(&self, snap: &Snapshot) -> String {
        let _one = self.scrape.lock().expect("scrape lock");
        self.sandboxes.reset();
        self.ended.reset();
        // Both ended states are always present, so an alert on them has a
        // series from the first scrape.
        for s in [LifeState::Destroyed, LifeState::Failed] {
            self.ended.with_label_values(&[s.as_str()]).set(0);
        }
        for row in &snap.census {
            if row.profile.is_empty() && row.host.is_empty() {
                self.ended
                    .with_label_values(&[row.state.as_str()])
                    .set(row.count as i64);
            } else {
                self.sandboxes
                    .with_label_values(&[&row.state, &row.profile, &row.extension, &row.host])
                    .set(row.count as i64);
            }
        }
        self.outbox_depth.set(snap.outbox_depth as i64);
        self.outbox_oldest.set(snap.outbox_oldest_secs);
        self.held.reset();
        self.spent.reset();
        self.available.reset();
        for (actor, a) in &snap.accounts {
            self.held
                .with_label_values(&[actor])
                .set(a.held.as_credits());
            self.spent
                .with_label_values(&[actor])
                .set(a.spent.as_credits());
            self.available
                .with_label_values(&[actor])
                .set(a.available.as_credits());
        }
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("the text encoder writes any gathered family")
    }
}

impl Observer for Metrics {
    fn ready(&self, rec: &Sandbox) {
        if let Some(ready) = rec.ready_at {
            let took = (ready - rec.created_at).num_milliseconds().max(0) as f64 / 1000.0;
            self.ready_seconds
                .with_label_values(&[&rec.profile, &rec.extension])
                .observe(took);
        }
    }

    fn failed(&self, rec: &Sandbox, kind: ErrorKind) {
        self.failures
            .with_label_values(&[rec.profile.as_str(), kind.as_str()])
            .inc();
    }

    fn destroyed(&self, rec: &Sandbox, took: Duration) {
        self.destroy_seconds
            .with_label_values(&[&rec.profile, &rec.extension])
            .observe(took.as_secs_f64());
    }
}

/// What one scrape reads from the database.
#[derive(Debug, Default)]
struct Snapshot {
    census: Vec<CensusRow>,
    outbox_depth: u64,
    outbox_oldest_secs: i64,
    accounts: Vec<(String, Account)>,
}

fn snapshot(db: &dyn sandboxer_core::store::db::Db) -> sandboxer_core::Result<Snapshot> {
    read(db, |tx| {
        let census = tx.census()?;
        let outbox_depth = tx.outbox_depth()?;
        // The oldest waiting event is the first in the outbox.
        let first: Vec<serde_json::Value> = tx.outbox(1)?.into_iter().map(|i| i.event).collect();
        let outbox_oldest_secs = sandboxer_events::status(&first, None, Utc::now())
            .oldest_age_secs
            .unwrap_or(0);
        let mut accounts = Vec::new();
        for (actor, v) in tx.all_derived(Derived::Accounts)? {
            let a: Account = serde_json::from_value(v).map_err(|e| {
                sandboxer_core::Error::new(
                    sandboxer_core::ErrorKind::StoreCorrupt,
                    format!("the account of {actor} does not parse: {e}"),
                )
            })?;
            accounts.push((actor, a));
        }
        Ok(Snapshot {
            census,
            outbox_depth,
            outbox_oldest_secs,
            accounts,
        })
    })
}

/// `GET /metrics`: loopback callers without a token; others with an `adm`
/// token.
pub(crate) async fn handler(
    State(st): State<ApiState>,
    req: Request,
) -> Result<Response, ApiError> {
    let loopback = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(a)| a.ip().is_loopback());
    let has_token = req.headers().contains_key(header::AUTHORIZATION);
    if !loopback || has_token {
        use axum::extract::FromRequestParts as _;
        let (mut parts, _) = req.into_parts();
        Admin::from_request_parts(&mut parts, &st)
            .await
            .map_err(|e| e.with_hint("scrapes from other than loopback need an `adm` token: `sandboxer tokens add --actor adm:prometheus`"))?;
    }
    let db = st.manager.db().clone();
    let snap = crate::routes::run_blocking(move || async move { snapshot(db.as_ref()) }).await?;
    let body = st.metrics.render(&snap);
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(resp)
}

/// Counts every HTTP request by its route template (never the path itself,
/// whose ids would make a series per sandbox).
pub(crate) async fn track(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    st.metrics
        .http_request(&method, &route, resp.status().as_u16(), started.elapsed());
    resp
}
