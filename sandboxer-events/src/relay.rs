//! [`Relay`]: posts outbox events to the State Hub and removes each only
//! after the hub answered 2xx for it.
//!
//! One pass ([`Relay::flush_once`]):
//!
//! 1. Load the store. If the hub failed as unavailable and its backoff has
//!    not run out, stop: nothing is sent (this is what keeps a down or
//!    hanging hub from slowing every command).
//! 2. Claim what to send in a store commit, so that concurrent relays
//!    (every CLI process, a server) do not send the same events or all wait
//!    on a hanging hub. Normally: lease every event of the plan
//!    ([`crate::outbox::plan`]) until the pass's deadline. If the hub failed
//!    before (and its backoff has run out): claim one probe instead, the
//!    oldest sendable event, counting its attempt and pushing the hub's
//!    retry time past the probe, so other relays keep backing off. The
//!    probe goes alone; on failure the pass records it and stops.
//! 3. Send the plan: one chain per sandbox, in order, up to `concurrency`
//!    chains at once; a chain stops at its first failure, and every chain
//!    stops starting requests after an `Unavailable` failure.
//! 4. One store commit: remove exactly the delivered event ids (the outbox
//!    may have grown meanwhile), record each failure with its backoff, give
//!    back the leases of what was not sent, and clear older unavailable
//!    failures when the hub answered.
//!
//! A crash between a 2xx and step 4 sends those events again later: the
//! contract is at-least-once, and the hub deduplicates by `event_id`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sandboxer_core::clock::Clock;
use sandboxer_core::events::LifecycleEvent;
use sandboxer_core::store::db::{read, transact, Db, Tx};
use sandboxer_core::{Error, ErrorKind, Result};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::outbox::{self, Backoff, Entry, FailureKind, Plan};

/// How a relay talks to the hub and paces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOptions {
    /// Time allowed to open a connection to the hub.
    pub connect_timeout: Duration,
    /// Time allowed for one request, connection included.
    pub request_timeout: Duration,
    /// After the hub failed: the time allowed for the one request that
    /// checks whether it is back, on passes that honour the backoff
    /// ([`Relay::flush_once`], [`Relay::run`]). [`Relay::flush`] uses
    /// `request_timeout`.
    pub probe_timeout: Duration,
    /// Sandboxes whose events are sent at the same time (events of one
    /// sandbox are always sent one after the other, in order).
    pub concurrency: usize,
    /// Events sent in one pass, at most; one store commit per pass.
    pub max_batch: usize,
    /// How long the relay leaves the hub alone after it failed, and an
    /// event alone after the hub rejected it.
    pub backoff: Backoff,
    /// [`Relay::run`]: how often to look at the outbox when there was
    /// nothing to send (a [`RelayWaker`] cuts the wait short).
    pub poll_interval: Duration,
    /// [`Relay::run`]: the time allowed for one pass.
    pub pass_budget: Duration,
}

impl RelayOptions {
    /// For the pass a CLI command makes after its own commits: short
    /// timeouts, so a down or hanging hub delays the command by at most
    /// [`crate::INLINE_BUDGET`].
    pub fn inline() -> Self {
        RelayOptions {
            connect_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_millis(700),
            probe_timeout: Duration::from_millis(300),
            concurrency: 8,
            max_batch: 64,
            backoff: Backoff {
                base: Duration::from_secs(2),
                cap: Duration::from_secs(60),
            },
            poll_interval: Duration::from_secs(1),
            pass_budget: crate::INLINE_BUDGET,
        }
    }

    /// For a relay that runs beside a server, and for
    /// `sandboxer events flush`: nobody waits on it, so it gives the hub
    /// more time.
    pub fn background() -> Self {
        RelayOptions {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(2),
            concurrency: 8,
            max_batch: 256,
            backoff: Backoff {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(60),
            },
            poll_interval: Duration::from_secs(1),
            pass_budget: Duration::from_secs(10),
        }
    }
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self::background()
    }
}

/// What a pass (or a flush) did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FlushReport {
    /// Requests made.
    pub attempted: usize,
    /// Events the hub answered 2xx for (and that left the outbox).
    pub delivered: usize,
    /// Attempts that failed.
    pub failed: usize,
    /// Events in the outbox afterwards (including any added meanwhile).
    pub remaining: usize,
    /// The hub failed and passes that honour the backoff send nothing
    /// before this.
    pub backing_off_until: Option<DateTime<Utc>>,
    /// The latest failure of this pass, or the one the hub backs off for.
    pub last_error: Option<String>,
    /// [`Relay::flush`] ran out of time with events left.
    pub timed_out: bool,
}

impl FlushReport {
    fn add(&mut self, pass: FlushReport) {
        self.attempted += pass.attempted;
        self.delivered += pass.delivered;
        self.failed += pass.failed;
        self.remaining = pass.remaining;
        self.backing_off_until = pass.backing_off_until;
        if pass.last_error.is_some() {
            self.last_error = pass.last_error;
        }
    }
}

/// Wakes a running [`Relay::run`] now (e.g. right after a commit that
/// queued events) instead of at its next poll.
#[derive(Debug, Clone)]
pub struct RelayWaker(Arc<Notify>);

impl RelayWaker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// Delivers the store's outbox to one State Hub. Cheap to make: the HTTP
/// client is built on the first request.
pub struct Relay {
    db: Arc<dyn Db>,
    endpoint: reqwest::Url,
    shown: String,
    options: RelayOptions,
    http: OnceLock<reqwest::Client>,
    wake: Arc<Notify>,
    on_pass: Option<PassObserver>,
    /// Stamps attempts and times backoffs and leases.
    clock: Arc<dyn Clock>,
}

/// Told what each pass of [`Relay::run`] did (the server's metrics).
pub type PassObserver = Arc<dyn Fn(&FlushReport) + Send + Sync>;

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("hub", &self.shown)
            .field("db", &self.db.location())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The outcome of one request.
#[derive(Debug, Clone)]
enum Sent {
    Delivered,
    Failed {
        kind: FailureKind,
        error: String,
        retry_after: Option<Duration>,
    },
}

#[derive(Debug, Clone)]
struct Outcome {
    event_id: String,
    at: DateTime<Utc>,
    sent: Sent,
    /// The attempt was counted before it was made (a claimed probe).
    counted: bool,
}

enum Claim {
    /// Another relay probes, or the backoff has not run out.
    Backoff(crate::outbox::HubBackoff),
    /// The hub failed before: the first event of the plan is claimed as the
    /// probe; the rest follows only if the hub answers it.
    Probe(Plan),
    /// Every event of the plan is leased to this relay.
    Leased(Plan),
    /// Nothing to send (others hold the leases, or the backoffs).
    Nothing,
}

impl Relay {
    /// A relay from `store` to the hub at `hub_url` (the base URL: events
    /// go to `POST {hub_url}/events`). Fails with `InvalidConfig` when the
    /// URL is not an http(s) URL.
    pub fn new(db: Arc<dyn Db>, hub_url: &str, options: RelayOptions) -> Result<Self> {
        Ok(Relay {
            db,
            endpoint: crate::events_endpoint(hub_url)?,
            shown: crate::redact_url(hub_url),
            options,
            http: OnceLock::new(),
            wake: Arc::new(Notify::new()),
            on_pass: None,
            clock: sandboxer_core::clock::system(),
        })
    }

    /// Read the time from `clock` (tests move a manual one past a backoff
    /// instead of sleeping through it).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Tell `f` what each pass of [`Relay::run`] did.
    pub fn with_pass_observer(mut self, f: PassObserver) -> Self {
        self.on_pass = Some(f);
        self
    }

    /// A relay to `SANDBOXER_STATE_HUB_URL`, or `None` when it is unset or
    /// empty.
    pub fn from_env(db: Arc<dyn Db>, options: RelayOptions) -> Result<Option<Self>> {
        crate::hub_url_from_env()
            .map(|u| Relay::new(db, &u, options))
            .transpose()
    }

    /// The hub URL, with any credentials in it hidden.
    pub fn hub(&self) -> &str {
        &self.shown
    }

    pub fn options(&self) -> &RelayOptions {
        &self.options
    }

    /// A handle that wakes [`Relay::run`] (take it before `run`).
    pub fn waker(&self) -> RelayWaker {
        RelayWaker(self.wake.clone())
    }

    /// One pass within `budget`, honouring every backoff: sends nothing
    /// while the hub backs off; otherwise what is due, at most
    /// `max_batch` events. Returns within `budget` plus the store commit.
    /// `Err` only for store errors; hub problems are in the report.
    pub async fn flush_once(&self, budget: Duration) -> Result<FlushReport> {
        self.pass(budget, false).await
    }

    /// Deliver until the outbox is empty or `timeout` runs out, ignoring
    /// the backoffs (an operator asked for it now), pausing briefly between
    /// failing passes. `timed_out` tells whether events remain.
    pub async fn flush(&self, timeout: Duration) -> Result<FlushReport> {
        let deadline = Instant::now() + timeout;
        let pause = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        };
        let mut total = FlushReport::default();
        let mut failing = 0u32;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let pass = self.pass(left, true).await?;
            let (attempted, failed) = (pass.attempted, pass.failed);
            total.add(pass);
            if total.remaining == 0 || attempted == 0 {
                // Empty, or nothing this relay can send (unreadable entries).
                break;
            }
            if failed > 0 {
                failing += 1;
                let wait = pause.delay(failing, &mut rand::thread_rng());
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(wait.min(left)).await;
            } else {
                failing = 0;
            }
        }
        total.timed_out = total.remaining > 0;
        Ok(total)
    }

    /// Deliver continuously until `shutdown` completes: a pass, then a wait
    /// (none while a pass delivered and events remain; until the hub's
    /// backoff runs out while it backs off; else `poll_interval`, cut short
    /// by the [`RelayWaker`]). Store errors are logged and retried.
    /// Cancelling a pass at shutdown loses nothing: undelivered events stay
    /// in the outbox, and events sent but not yet removed are sent again.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let pass = tokio::select! {
                r = self.flush_once(self.options.pass_budget) => r,
                _ = &mut shutdown => return,
            };
            if let (Ok(r), Some(f)) = (&pass, &self.on_pass) {
                f(r);
            }
            let wait = match &pass {
                Ok(r) if r.delivered > 0 && r.remaining > 0 => Duration::ZERO,
                Ok(r) => match r.backing_off_until {
                    Some(t) => (t - self.clock.now()).to_std().unwrap_or_default(),
                    None => self.options.poll_interval,
                },
                Err(e) => {
                    tracing::warn!("State Hub relay: {e}");
                    self.options.poll_interval
                }
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = &mut shutdown => return,
            }
        }
    }

    async fn pass(&self, budget: Duration, force: bool) -> Result<FlushReport> {
        let deadline = Instant::now() + budget;
        // Step 1, without the store lock: most passes end here (nothing
        // waits, or the hub backs off).
        let doc = self.blocking(|db| read(db, load)).await?;
        let mut report = FlushReport {
            remaining: doc.outbox.len(),
            ..FlushReport::default()
        };
        let entries: Vec<Entry> = doc.outbox.iter().filter_map(Entry::parse).collect();
        drop(doc);
        let now = self.clock.now();
        if let Some(b) = outbox::hub_backoff(&entries) {
            if !force && b.retry_at > now {
                report.backing_off_until = Some(b.retry_at);
                report.last_error = b.error;
                return Ok(report);
            }
        }
        if outbox::plan(&entries, now, force, self.options.max_batch).is_empty() {
            return Ok(report);
        }
        let (mut chains, probing) = match self.claim(force, deadline).await? {
            Claim::Backoff(b) => {
                report.backing_off_until = Some(b.retry_at);
                report.last_error = b.error;
                return Ok(report);
            }
            Claim::Nothing => return Ok(report),
            Claim::Probe(plan) => (plan.chains, true),
            Claim::Leased(plan) => (plan.chains, false),
        };
        let claimed: Vec<String> = chains
            .iter()
            .flatten()
            .map(|e| e.event_id.clone())
            .collect();
        let http = match self.http() {
            Ok(h) => h,
            Err(e) => {
                // Give the leases back before giving up.
                let _ = self.commit(Vec::new(), claimed, report).await;
                return Err(e);
            }
        };
        let mut outcomes = Vec::new();
        if probing {
            let probe = chains[0].remove(0);
            if chains[0].is_empty() {
                chains.remove(0);
            }
            let timeout = if force {
                self.options.request_timeout
            } else {
                self.options.probe_timeout
            };
            // No time left for the probe: nothing is sent, and the claimed
            // events go back as they were.
            let Some(timeout) = time_left(timeout, deadline) else {
                return self.commit(outcomes, claimed, report).await;
            };
            let sent = post(&http, &self.endpoint, &probe, timeout).await;
            let ok = matches!(sent, Sent::Delivered);
            outcomes.push(Outcome {
                event_id: probe.event_id,
                at: self.clock.now(),
                sent,
                counted: true,
            });
            if !ok {
                // The rest of the probe's chain waits for it, and the hub is
                // not to be hammered: stop here.
                chains.clear();
            }
        }
        outcomes.extend(self.send_chains(&http, chains, deadline).await);
        self.commit(outcomes, claimed, report).await
    }

    /// Step 2 of a pass, in one store commit; see the module docs.
    async fn claim(&self, force: bool, deadline: Instant) -> Result<Claim> {
        let max = self.options.max_batch;
        let probe_budget = if force {
            self.options.request_timeout
        } else {
            self.options.probe_timeout
        };
        let backoff = self.options.backoff;
        // Past the pass's last possible request, with room for its commit.
        let lease_for = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(2);
        let clock = self.clock.clone();
        self.blocking(move |db| {
            transact(db, |tx| {
                let mut doc = load(tx)?;
                let now = clock.now();
                let entries: Vec<Entry> = doc.outbox.iter().filter_map(Entry::parse).collect();
                let hub = outbox::hub_backoff(&entries);
                if let Some(b) = &hub {
                    if !force && b.retry_at > now {
                        return Ok(Claim::Backoff(b.clone()));
                    }
                }
                let plan = outbox::plan(&entries, now, force, max);
                let Some(first) = plan.chains.first().and_then(|c| c.first()) else {
                    return Ok(Claim::Nothing);
                };
                let before = doc.clone();
                if hub.is_some() {
                    // The hub failed last time: count the probe now and push
                    // the hub's retry time past it, so that other relays keep
                    // backing off while this one finds out.
                    if let Some(v) = doc
                        .outbox
                        .iter_mut()
                        .find(|v| outbox::event_id(v) == Some(first.event_id.as_str()))
                    {
                        let pause = backoff.delay(first.attempts + 1, &mut rand::thread_rng());
                        let retry_at = now + chrono_duration(probe_budget + pause);
                        outbox::mark_attempt(v, now, retry_at);
                    }
                    save(tx, &before, &doc)?;
                    return Ok(Claim::Probe(plan));
                }
                let ids: HashSet<&str> = plan
                    .chains
                    .iter()
                    .flatten()
                    .map(|e| e.event_id.as_str())
                    .collect();
                let until = now + chrono_duration(lease_for);
                for v in &mut doc.outbox {
                    if outbox::event_id(v).is_some_and(|id| ids.contains(id)) {
                        outbox::lease(v, until);
                    }
                }
                save(tx, &before, &doc)?;
                Ok(Claim::Leased(plan))
            })
        })
        .await
    }

    /// Step 3 of a pass.
    async fn send_chains(
        &self,
        http: &reqwest::Client,
        chains: Vec<Vec<LifecycleEvent>>,
        deadline: Instant,
    ) -> Vec<Outcome> {
        let stop = Arc::new(AtomicBool::new(false));
        let slots = Arc::new(Semaphore::new(self.options.concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for chain in chains {
            let (http, endpoint, stop, slots) = (
                http.clone(),
                self.endpoint.clone(),
                stop.clone(),
                slots.clone(),
            );
            let timeout = self.options.request_timeout;
            let clock = self.clock.clone();
            tasks.spawn(async move {
                let _slot = slots.acquire_owned().await;
                let mut out = Vec::new();
                for ev in chain {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // Out of time: this event and the rest of its chain wait
                    // for the next pass, untried (not counted as attempts).
                    let Some(timeout) = time_left(timeout, deadline) else {
                        break;
                    };
                    let sent = post(&http, &endpoint, &ev, timeout).await;
                    let failed = match &sent {
                        Sent::Delivered => false,
                        Sent::Failed { kind, .. } => {
                            if *kind == FailureKind::Unavailable {
                                stop.store(true, Ordering::Relaxed);
                            }
                            true
                        }
                    };
                    out.push(Outcome {
                        event_id: ev.event_id,
                        at: clock.now(),
                        sent,
                        counted: false,
                    });
                    if failed {
                        break;
                    }
                }
                out
            });
        }
        let mut outcomes = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(out) => outcomes.extend(out),
                // A panicked task: its events were not removed, so they are
                // sent again by a later pass.
                Err(e) => tracing::error!("State Hub relay task failed: {e}"),
            }
        }
        outcomes
    }

    /// Step 4 of a pass.
    async fn commit(
        &self,
        outcomes: Vec<Outcome>,
        claimed: Vec<String>,
        mut report: FlushReport,
    ) -> Result<FlushReport> {
        report.attempted = outcomes.len();
        report.delivered = outcomes
            .iter()
            .filter(|o| matches!(o.sent, Sent::Delivered))
            .count();
        report.failed = report.attempted - report.delivered;
        report.last_error = outcomes
            .iter()
            .rev()
            .find_map(|o| match &o.sent {
                Sent::Failed { error, .. } => Some(error.clone()),
                Sent::Delivered => None,
            })
            .or(report.last_error);
        if outcomes.is_empty() && claimed.is_empty() {
            return Ok(report);
        }
        let backoff = self.options.backoff;
        let (remaining, hub) = self
            .blocking(move |db| {
                transact(db, |tx| {
                    let before = load(tx)?;
                    let mut doc = before.clone();
                    apply_outcomes(&mut doc, &outcomes, &claimed, backoff);
                    save(tx, &before, &doc)?;
                    let entries: Vec<Entry> = doc.outbox.iter().filter_map(Entry::parse).collect();
                    Ok((doc.outbox.len(), outbox::hub_backoff(&entries)))
                })
            })
            .await?;
        report.remaining = remaining;
        if let Some(b) = hub {
            if b.retry_at > self.clock.now() {
                report.backing_off_until = Some(b.retry_at);
                report.last_error = report.last_error.or(b.error);
            }
        }
        Ok(report)
    }

    fn http(&self) -> Result<reqwest::Client> {
        if let Some(c) = self.http.get() {
            return Ok(c.clone());
        }
        let c = reqwest::Client::builder()
            .connect_timeout(self.options.connect_timeout)
            .timeout(self.options.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sandboxer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Internal, "building the State Hub HTTP client").with_source(e)
            })?;
        Ok(self.http.get_or_init(|| c).clone())
    }

    /// Run a database operation off the async threads (it blocks on the
    /// database's locks and syncs).
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Db) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(db.as_ref()))
            .await
            .map_err(|e| Error::internal(format!("store task failed: {e}")))?
    }
}

/// The outbox as the relay works on it: every waiting event, in order, with
/// its place in the database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outbox {
    pub outbox: Vec<serde_json::Value>,
    seqs: Vec<i64>,
}

/// How many waiting events one pass reads at most.
const OUTBOX_WINDOW: usize = 10_000;

/// The outbox, in the caller's transaction.
pub fn load(tx: &mut dyn Tx) -> Result<Outbox> {
    let items = tx.outbox(OUTBOX_WINDOW)?;
    Ok(Outbox {
        seqs: items.iter().map(|i| i.seq).collect(),
        outbox: items.into_iter().map(|i| i.event).collect(),
    })
}

/// Write back what changed from `before` to `after` (events found by their
/// id): removed ones are acknowledged, changed ones replaced.
fn save(tx: &mut dyn Tx, before: &Outbox, after: &Outbox) -> Result<()> {
    let now: std::collections::HashMap<&str, &serde_json::Value> = after
        .outbox
        .iter()
        .filter_map(|v| outbox::event_id(v).map(|id| (id, v)))
        .collect();
    let mut gone = Vec::new();
    for (seq, old) in before.seqs.iter().zip(&before.outbox) {
        match outbox::event_id(old).and_then(|id| now.get(id)) {
            None if outbox::event_id(old).is_some() => gone.push(*seq),
            None => {}
            Some(new) if *new != old => tx.replace_event(*seq, new)?,
            Some(_) => {}
        }
    }
    tx.ack_events(&gone)
}

/// Remove the delivered ids, record the failures, give back the leases of
/// the `claimed` events not sent, and clear the older unavailable failures
/// when the hub answered.
fn apply_outcomes(doc: &mut Outbox, outcomes: &[Outcome], claimed: &[String], backoff: Backoff) {
    let claimed: HashSet<&str> = claimed.iter().map(String::as_str).collect();
    let delivered: HashSet<&str> = outcomes
        .iter()
        .filter(|o| matches!(o.sent, Sent::Delivered))
        .map(|o| o.event_id.as_str())
        .collect();
    let failed: HashMap<&str, &Outcome> = outcomes
        .iter()
        .filter(|o| matches!(o.sent, Sent::Failed { .. }))
        .map(|o| (o.event_id.as_str(), o))
        .collect();
    // Any HTTP answer (2xx, or a rejection) shows the hub is up.
    let answered_at = outcomes
        .iter()
        .filter(|o| {
            !matches!(
                o.sent,
                Sent::Failed {
                    kind: FailureKind::Unavailable,
                    ..
                }
            )
        })
        .map(|o| o.at)
        .max();
    doc.outbox
        .retain(|v| outbox::event_id(v).is_none_or(|id| !delivered.contains(id)));
    let mut rng = rand::thread_rng();
    for v in &mut doc.outbox {
        let Some(id) = outbox::event_id(v) else {
            continue;
        };
        if let Some(o) = failed.get(id) {
            let Sent::Failed {
                kind,
                error,
                retry_after,
            } = &o.sent
            else {
                continue;
            };
            let attempts = outbox::record_failure(v, o.at, *kind, error, o.counted);
            let mut pause = backoff.delay(attempts, &mut rng);
            if let Some(ra) = retry_after {
                pause = pause.max((*ra).min(backoff.cap));
            }
            outbox::set_retry_at(v, o.at + chrono_duration(pause));
            continue;
        }
        if claimed.contains(id) {
            outbox::release(v);
        }
        if let Some(t) = answered_at {
            outbox::clear_unavailable(v, t);
        }
    }
}

/// What a request may take: `timeout`, cut to what is left before
/// `deadline`; `None` when nothing is (then nothing is sent, and nothing
/// is recorded as an attempt).
fn time_left(timeout: Duration, deadline: Instant) -> Option<Duration> {
    Some(timeout.min(deadline.saturating_duration_since(Instant::now()))).filter(|t| !t.is_zero())
}

/// One POST of one event, bounded by `timeout` (not zero).
async fn post(
    http: &reqwest::Client,
    endpoint: &reqwest::Url,
    ev: &LifecycleEvent,
    timeout: Duration,
) -> Sent {
    let unavailable = |error: String| Sent::Failed {
        kind: FailureKind::Unavailable,
        error,
        retry_after: None,
    };
    let request = http
        .post(endpoint.clone())
        .header("Idempotency-Key", &ev.event_id)
        .json(&ev.hub_body())
        .timeout(timeout)
        .send();
    let answer = async {
        let resp = request.await?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read the (small) body so the connection can be reused; a 2xx
        // counts even if the body then fails.
        let body = resp.text().await.unwrap_or_default();
        Ok::<_, reqwest::Error>((status, retry_after, body))
    };
    // reqwest's own timeout covers the request; this one is a backstop.
    let answer = match tokio::time::timeout(timeout + Duration::from_millis(50), answer).await {
        Err(_) => return unavailable(format!("no answer within {}", millis(timeout))),
        Ok(Err(e)) => return unavailable(describe(&e, timeout)),
        Ok(Ok(a)) => a,
    };
    let (status, retry_after, body) = answer;
    if status.is_success() {
        return Sent::Delivered;
    }
    let mut error = format!("hub answered {status}");
    let body = body.trim();
    if !body.is_empty() {
        let short: String = body.chars().take(200).collect();
        error.push_str(": ");
        error.push_str(&short);
    }
    let kind = if status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
    {
        FailureKind::Unavailable
    } else {
        FailureKind::Rejected
    };
    Sent::Failed {
        kind,
        error,
        retry_after,
    }
}

/// A reqwest error for people, without the URL (it may hold credentials).
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_connect() && e.is_timeout() {
        return "cannot connect to the hub in time".into();
    }
    if e.is_timeout() {
        return format!("no answer within {}", millis(timeout));
    }
    let what = if e.is_connect() {
        "cannot connect to the hub"
    } else {
        "the request failed"
    };
    // The innermost cause says what happened ("Connection refused",
    // "connection closed before message completed").
    let mut cause = None;
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        cause = Some(s.to_string());
        src = s.source();
    }
    match cause {
        Some(c) => format!("{what}: {c}"),
        None => what.to_string(),
    }
}

fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::days(1))
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_request_gets_the_time_left_and_none_when_there_is_none() {
        let now = Instant::now();
        let ten = Duration::from_secs(10);
        assert_eq!(time_left(ten, now + Duration::from_secs(60)), Some(ten));
        let cut = time_left(ten, now + Duration::from_secs(3)).unwrap();
        assert!(cut <= Duration::from_secs(3) && cut > Duration::from_secs(2));
        assert_eq!(time_left(ten, now), None);
        assert_eq!(time_left(Duration::ZERO, now + ten), None);
    }

    use super::*;

    fn entry(id: &str) -> serde_json::Value {
        serde_json::json!({
            "event_id": id, "sandbox_id": id.split(':').next().unwrap(),
            "from": null, "to": "provisioning", "at": "2026-11-28T14:30:00Z",
            "actor": "adm:tester", "profile": "profile.sandbox-canary",
            "extension": "ext.canary", "host": "local", "reason": null,
        })
    }

    fn outcome(id: &str, sent: Sent) -> Outcome {
        Outcome {
            event_id: id.into(),
            at: Utc::now(),
            sent,
            counted: false,
        }
    }

    #[test]
    fn a_commit_removes_exactly_the_delivered_ids_and_keeps_what_arrived_meanwhile() {
        // Loaded with a:1, b:1; c:1 was added by another process before the commit.
        let mut doc = Outbox {
            outbox: vec![entry("sbx-a:1"), entry("sbx-b:1"), entry("sbx-c:1")],
            ..Outbox::default()
        };
        let outcomes = [
            outcome("sbx-a:1", Sent::Delivered),
            outcome(
                "sbx-b:1",
                Sent::Failed {
                    kind: FailureKind::Unavailable,
                    error: "hub answered 503".into(),
                    retry_after: Some(Duration::from_secs(30)),
                },
            ),
            // Delivered by someone else meanwhile and gone: nothing to do.
            outcome("sbx-z:1", Sent::Delivered),
        ];
        let backoff = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        };
        // a:1, b:1 and d:1 were leased; the pass ran out of time before d:1.
        doc.outbox.push(entry("sbx-d:1"));
        let until = Utc::now() + chrono::Duration::seconds(10);
        for v in doc.outbox.iter_mut() {
            if outbox::event_id(v) != Some("sbx-c:1") {
                outbox::lease(v, until);
            }
        }
        let claimed = ["sbx-a:1", "sbx-b:1", "sbx-d:1"].map(String::from);
        apply_outcomes(&mut doc, &outcomes, &claimed, backoff);
        let ids: Vec<_> = doc.outbox.iter().filter_map(outbox::event_id).collect();
        assert_eq!(ids, ["sbx-b:1", "sbx-c:1", "sbx-d:1"]);
        let leases: Vec<_> = doc
            .outbox
            .iter()
            .map(|v| Entry::parse(v).unwrap().delivery.leased_until)
            .collect();
        assert_eq!(leases, [None, None, None], "every lease given back");
        let b = Entry::parse(&doc.outbox[0]).unwrap();
        assert_eq!(b.event.attempts, 1);
        // Retry-After (30s) beats the backoff (at most 1s) when longer.
        let wait = b.event.next_attempt_at.unwrap() - outcomes[1].at;
        assert!(wait >= chrono::Duration::seconds(30), "{wait}");
        assert_eq!(Entry::parse(&doc.outbox[1]).unwrap().event.attempts, 0);
    }
}
