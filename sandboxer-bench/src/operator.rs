//! The `operator` section: what the dashboard and a Prometheus scrape cost
//! a real `sandboxer serve` on a store of 100,000 records (and on an empty
//! one, in the same run, for the ratio).
//!
//! Measured over HTTP on loopback, each request timed from send to the last
//! byte read:
//! - `GET /v1/dashboard` as an operator: the page's data request, at first
//!   load and at each refresh (the live sandboxes, the counts of every
//!   state, the accounts and the outbox) - target: p95 at most 100 ms;
//! - `GET /v1/dashboard?state=destroyed`: the heaviest filter (a full page
//!   of 500 records from the history);
//! - `GET /metrics` - target: p95 at most 50 ms;
//! - `GET /v1/sandboxes?live=true` (the plain list API the dashboard's
//!   request replaces) and `GET /healthz` (the floor: a request that
//!   touches no state), as baselines.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::machine::{footer, Load, Machine};
use crate::run::BenchHome;
use crate::stats::Summary;
use crate::Outcome;

/// What the section runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub sandboxer: std::path::PathBuf,
    /// Stored records of the large store.
    pub records: u64,
    /// Live (ready) records among them.
    pub live: u64,
    /// Requests per measure.
    pub samples: usize,
}

const DASHBOARD_TARGET_MS: f64 = 100.0;
const METRICS_TARGET_MS: f64 = 50.0;

/// `samples` timed GETs of `path` (after two untimed ones), in ms.
fn measure(
    http: &reqwest::blocking::Client,
    base: &str,
    path: &str,
    token: Option<&str>,
    samples: usize,
) -> Result<Summary> {
    let mut ms = Vec::with_capacity(samples);
    for i in 0..samples + 2 {
        let mut rb = http.get(format!("{base}{path}"));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let t = Instant::now();
        let resp = rb.send()?;
        let status = resp.status();
        let body = resp.bytes()?;
        let took = t.elapsed();
        if !status.is_success() {
            bail!(
                "GET {path}: {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        if i >= 2 {
            ms.push(took.as_secs_f64() * 1000.0);
        }
    }
    Summary::of_ms(&ms).context("no samples")
}

struct Row {
    records: u64,
    dashboard: Summary,
    history: Summary,
    metrics: Summary,
    list: Summary,
    health: Summary,
    dashboard_bytes: usize,
}

fn one_store(opts: &Options, records: u64, live: u64) -> Result<Row> {
    let home = BenchHome::new("operator")?;
    crate::records::write_store(&home.data(), records, live)?;
    let p = home.sandboxer(&opts.sandboxer);
    let token = p.token("adm:bench")?;
    let srv = p.serve()?;
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let t = Some(token.as_str());
    let n = opts.samples;
    let dashboard_bytes = http
        .get(format!("{}/v1/dashboard", srv.base))
        .bearer_auth(&token)
        .send()?
        .bytes()?
        .len();
    Ok(Row {
        records,
        dashboard: measure(&http, &srv.base, "/v1/dashboard", t, n)?,
        history: measure(&http, &srv.base, "/v1/dashboard?state=destroyed", t, n)?,
        metrics: measure(&http, &srv.base, "/metrics", None, n)?,
        list: measure(&http, &srv.base, "/v1/sandboxes?live=true", t, n)?,
        health: measure(&http, &srv.base, "/healthz", None, n)?,
        dashboard_bytes,
    })
}

fn cell(s: &Summary) -> String {
    format!("{:.1} / {:.1}", s.p50, s.p95)
}

pub fn run(opts: &Options) -> Result<Outcome> {
    if !opts.sandboxer.is_file() {
        bail!("no sandboxer binary at {}", opts.sandboxer.display());
    }
    let machine = Machine::probe();
    let load_before = Load::now();
    let empty = one_store(opts, 0, opts.live)?;
    let big = one_store(opts, opts.records, opts.live)?;
    let load_after = Load::now();
    let mut missed = Vec::new();
    if big.dashboard.p95 > DASHBOARD_TARGET_MS {
        missed.push(format!(
            "dashboard data request p95 {:.1} ms at {} records (target {DASHBOARD_TARGET_MS} ms)",
            big.dashboard.p95, big.records
        ));
    }
    if big.metrics.p95 > METRICS_TARGET_MS {
        missed.push(format!(
            "/metrics p95 {:.1} ms at {} records (target {METRICS_TARGET_MS} ms)",
            big.metrics.p95, big.records
        ));
    }
    let mut md = String::new();
    md.push_str("## The operator's view: dashboard data and /metrics\n\n");
    md.push_str(&format!(
        "`sandboxer-bench operator`: a real `sandboxer serve` (release build, SQLite, no reaper) on a store \
         of {} records ({} of them ready) and on one with no history ({} ready), {} timed requests each over \
         loopback, from send to the last byte. Milliseconds, p50 / p95.\n\n",
        opts.records, opts.live, opts.live, opts.samples
    ));
    md.push_str("| request | no history | ");
    md.push_str(&format!(
        "{} records | ratio (p50) |\n|---|---|---|---|\n",
        opts.records
    ));
    for (name, a, b) in [
        (
            "`GET /v1/dashboard` (the page's data, every refresh)",
            &empty.dashboard,
            &big.dashboard,
        ),
        (
            "`GET /v1/dashboard?state=destroyed` (500 records of history)",
            &empty.history,
            &big.history,
        ),
        ("`GET /metrics`", &empty.metrics, &big.metrics),
        (
            "`GET /v1/sandboxes?live=true` (baseline: the list API)",
            &empty.list,
            &big.list,
        ),
        (
            "`GET /healthz` (baseline: no state)",
            &empty.health,
            &big.health,
        ),
    ] {
        md.push_str(&format!(
            "| {name} | {} | {} | {:.2}x |\n",
            cell(a),
            cell(b),
            b.p50 / a.p50.max(0.001)
        ));
    }
    md.push_str(&format!(
        "\nTargets at {} records: the dashboard's data request p95 at most {DASHBOARD_TARGET_MS} ms \
         ({:.1} ms: {}); `/metrics` p95 at most {METRICS_TARGET_MS} ms ({:.1} ms: {}). The dashboard's \
         answer is {} bytes; against the plain list of the same live records it costs {:.2}x (it adds the \
         counts of every state, the accounts and the outbox).\n\n",
        opts.records,
        big.dashboard.p95,
        if big.dashboard.p95 <= DASHBOARD_TARGET_MS { "met" } else { "missed" },
        big.metrics.p95,
        if big.metrics.p95 <= METRICS_TARGET_MS { "met" } else { "missed" },
        big.dashboard_bytes,
        big.dashboard.p50 / big.list.p50.max(0.001),
    ));
    md.push_str(&footer(&machine, &load_before, &load_after));
    Ok(Outcome {
        markdown: md,
        missed,
        failures: Vec::new(),
        complete: true,
    })
}
