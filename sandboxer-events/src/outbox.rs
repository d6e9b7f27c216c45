//! The outbox as the relay sees it: each entry is the core's
//! [`LifecycleEvent`] plus the relay's bookkeeping, and the decisions made
//! over them are pure functions of the entries and the time: is the hub
//! backing off ([`hub_backoff`]), what goes out in which order ([`plan`]).
//!
//! Bookkeeping kept in an entry, beside the core's `attempts` and
//! `next_attempt_at` (none of it is sent to the hub):
//!
//! ```json
//! {"event_id": "sbx-q3v7k2m4xa:2", "...": "...", "attempts": 3,
//!  "next_attempt_at": "2026-11-28T14:31:07Z",
//!  "delivery": {"last_attempt_at": "2026-11-28T14:31:02Z",
//!               "last_error": "hub answered 503 Service Unavailable",
//!               "failure": "unavailable"}}
//! ```
//!
//! `delivery.leased_until` marks an event a relay is sending right now, so
//! that concurrent relays (every CLI process, a server) do not all send the
//! same events; a lease left by a crash runs out by itself.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use sandboxer_core::events::LifecycleEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The key of the relay's bookkeeping in an outbox entry.
pub const DELIVERY_KEY: &str = "delivery";

/// What the relay remembers about delivering one entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Why the last attempt failed; `None` when it has not failed or the hub
    /// answered since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureKind>,
    /// A relay is sending it; others leave it (and the later events of its
    /// sandbox) alone until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leased_until: Option<DateTime<Utc>>,
}

/// Why a delivery failed, which decides whose backoff it feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The hub could not take it: no connection, no answer in time, a
    /// dropped connection, 5xx, 408 or 429. Says something about the hub,
    /// so the whole relay backs off.
    Unavailable,
    /// The hub answered and refused this event (another 4xx, or a 3xx).
    /// Says something about the event: it alone backs off (and the events
    /// after it of the same sandbox wait, to keep their order).
    Rejected,
}

/// One outbox entry, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub event: LifecycleEvent,
    pub delivery: Delivery,
}

impl Entry {
    /// `None` when the value is not a lifecycle event (never written by
    /// this build; such an entry is left alone and counted as unreadable).
    pub fn parse(v: &Value) -> Option<Entry> {
        let event: LifecycleEvent = serde_json::from_value(v.clone()).ok()?;
        let delivery = v
            .get(DELIVERY_KEY)
            .and_then(|d| serde_json::from_value(d.clone()).ok())
            .unwrap_or_default();
        Some(Entry { event, delivery })
    }
}

/// The `event_id` of an outbox value.
pub fn event_id(v: &Value) -> Option<&str> {
    v.get("event_id")?.as_str()
}

/// Exponential backoff with equal jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling after the first failure.
    pub base: Duration,
    /// No ceiling is above this.
    pub cap: Duration,
}

impl Backoff {
    /// The largest delay after `attempts` failed attempts: `base`, doubled
    /// for each further attempt, at most `cap`.
    pub fn ceiling(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.base
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// The delay after `attempts` failed attempts: uniform in
    /// `[ceiling / 2, ceiling]`, so relays that failed together do not
    /// come back together, and none comes back much sooner than planned.
    pub fn delay(&self, attempts: u32, rng: &mut impl Rng) -> Duration {
        let c = self.ceiling(attempts);
        let half = c / 2;
        let spread = (c - half).as_millis() as u64;
        half + Duration::from_millis(if spread == 0 {
            0
        } else {
            rng.gen_range(0..=spread)
        })
    }
}

/// The hub's health as the outbox remembers it: the most recent
/// `Unavailable` failure not followed by an answer from the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubBackoff {
    pub failed_at: DateTime<Utc>,
    /// Passes that honour the backoff send nothing before this.
    pub retry_at: DateTime<Utc>,
    pub error: Option<String>,
}

/// See [`HubBackoff`]; `None` when the hub has not failed (or answered since).
pub fn hub_backoff(entries: &[Entry]) -> Option<HubBackoff> {
    entries
        .iter()
        .filter(|e| e.delivery.failure == Some(FailureKind::Unavailable))
        .filter_map(|e| Some((e.delivery.last_attempt_at?, e)))
        .max_by_key(|(t, _)| *t)
        .map(|(t, e)| HubBackoff {
            failed_at: t,
            retry_at: e.event.next_attempt_at.unwrap_or(t),
            error: e.delivery.last_error.clone(),
        })
}

/// What one pass sends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// One chain per sandbox, in the order its first event sits in the
    /// outbox; each chain in outbox order (which is the sandbox's event
    /// order). A chain stops at its first failure.
    pub chains: Vec<Vec<LifecycleEvent>>,
    /// Entries left for a later pass (backoff, order, `max`).
    pub waiting: usize,
}

impl Plan {
    pub fn len(&self) -> usize {
        self.chains.iter().map(Vec::len).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }
}

/// The events to send now, at most `max`. An event waits when another
/// relay holds its lease, when it is in its own backoff (the hub rejected
/// it), or when an earlier event of its sandbox waits. `force` ignores
/// leases and backoffs (`sandboxer events flush`). The hub's backoff is the
/// caller's to check.
pub fn plan(entries: &[Entry], now: DateTime<Utc>, force: bool, max: usize) -> Plan {
    let mut chains: Vec<Vec<LifecycleEvent>> = Vec::new();
    let mut chain_of: HashMap<&str, usize> = HashMap::new();
    let mut blocked: HashSet<&str> = HashSet::new();
    let mut planned = 0;
    let mut waiting = 0;
    for e in entries {
        let sid = e.event.sandbox_id.as_str();
        if planned >= max || blocked.contains(sid) || !(force || due(e, now)) {
            blocked.insert(sid);
            waiting += 1;
            continue;
        }
        planned += 1;
        match chain_of.get(sid) {
            Some(&i) => chains[i].push(e.event.clone()),
            None => {
                chain_of.insert(sid, chains.len());
                chains.push(vec![e.event.clone()]);
            }
        }
    }
    Plan { chains, waiting }
}

fn due(e: &Entry, now: DateTime<Utc>) -> bool {
    if e.delivery.leased_until.is_some_and(|t| t > now) {
        return false;
    }
    match e.delivery.failure {
        Some(FailureKind::Rejected) => e.event.next_attempt_at.is_none_or(|t| t <= now),
        // New, or failed because the hub was unavailable: the hub's backoff
        // decides, not the entry's.
        Some(FailureKind::Unavailable) | None => true,
    }
}

/// Count one attempt at `v` now, before it is made, and push its retry
/// time past the attempt: the probe claim (see `relay`).
pub fn mark_attempt(v: &mut Value, at: DateTime<Utc>, retry_at: DateTime<Utc>) {
    let Some(o) = v.as_object_mut() else { return };
    let attempts = attempts_of(o) + 1;
    let mut d = delivery_of(o);
    d.last_attempt_at = Some(at);
    d.failure = Some(FailureKind::Unavailable);
    o.insert("attempts".into(), attempts.into());
    o.insert("next_attempt_at".into(), json(&retry_at));
    o.insert(DELIVERY_KEY.into(), json(&d));
}

/// Lease `v` to this relay until `until`.
pub fn lease(v: &mut Value, until: DateTime<Utc>) {
    let Some(o) = v.as_object_mut() else { return };
    let mut d = delivery_of(o);
    d.leased_until = Some(until);
    o.insert(DELIVERY_KEY.into(), json(&d));
}

/// Give `v`'s lease back (it was not sent after all).
pub fn release(v: &mut Value) {
    let Some(o) = v.as_object_mut() else { return };
    let mut d = delivery_of(o);
    if d.leased_until.take().is_some() {
        o.insert(DELIVERY_KEY.into(), json(&d));
    }
}

/// Record a failed attempt at `v` (and give its lease back). `counted`: the attempt was already
/// counted by [`mark_attempt`]. Returns the attempts so far.
pub fn record_failure(
    v: &mut Value,
    at: DateTime<Utc>,
    kind: FailureKind,
    error: &str,
    counted: bool,
) -> u32 {
    let Some(o) = v.as_object_mut() else { return 0 };
    let attempts = attempts_of(o) + u32::from(!counted);
    let d = Delivery {
        last_attempt_at: Some(at),
        last_error: Some(error.to_string()),
        failure: Some(kind),
        leased_until: None,
    };
    o.insert("attempts".into(), attempts.into());
    o.insert(DELIVERY_KEY.into(), json(&d));
    attempts
}

/// Set when `v` may be tried again.
pub fn set_retry_at(v: &mut Value, retry_at: DateTime<Utc>) {
    if let Some(o) = v.as_object_mut() {
        o.insert("next_attempt_at".into(), json(&retry_at));
    }
}

/// The hub answered after `v` failed as unavailable: that failure no longer
/// holds the relay back. Attempts and the last error stay, for `status`.
pub fn clear_unavailable(v: &mut Value, answered_at: DateTime<Utc>) {
    let Some(o) = v.as_object_mut() else { return };
    let mut d = delivery_of(o);
    if d.failure != Some(FailureKind::Unavailable)
        || d.last_attempt_at.is_some_and(|t| t > answered_at)
    {
        return;
    }
    d.failure = None;
    o.remove("next_attempt_at");
    o.insert(DELIVERY_KEY.into(), json(&d));
}

fn attempts_of(o: &serde_json::Map<String, Value>) -> u32 {
    o.get("attempts")
        .and_then(Value::as_u64)
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn delivery_of(o: &serde_json::Map<String, Value>) -> Delivery {
    o.get(DELIVERY_KEY)
        .and_then(|d| serde_json::from_value(d.clone()).ok())
        .unwrap_or_default()
}

fn json<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).expect("bookkeeping always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sandboxer_core::lifecycle::State;

    fn ev(sbx: &str, seq: u32) -> Value {
        let to = [
            State::Provisioning,
            State::Ready,
            State::Destroying,
            State::Destroyed,
        ][(seq as usize - 1) % 4];
        serde_json::json!({
            "event_id": format!("{sbx}:{seq}"),
            "sandbox_id": sbx,
            "from": null,
            "to": to,
            "at": "2026-11-28T14:30:00Z",
            "actor": "adm:tester",
            "profile": "profile.sandbox-canary",
            "extension": "ext.canary",
            "host": "local",
            "reason": null,
        })
    }

    fn parse(vs: &[Value]) -> Vec<Entry> {
        vs.iter().filter_map(Entry::parse).collect()
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn ids(p: &Plan) -> Vec<Vec<String>> {
        p.chains
            .iter()
            .map(|c| c.iter().map(|e| e.event_id.clone()).collect())
            .collect()
    }

    #[test]
    fn plan_keeps_each_sandboxs_order_in_one_chain() {
        let out = [
            ev("sbx-a", 1),
            ev("sbx-b", 1),
            ev("sbx-a", 2),
            ev("sbx-b", 2),
        ];
        let p = plan(&parse(&out), t("2026-11-28T14:31:00Z"), false, 100);
        assert_eq!(
            ids(&p),
            [vec!["sbx-a:1", "sbx-a:2"], vec!["sbx-b:1", "sbx-b:2"]]
        );
        assert_eq!(p.waiting, 0);
    }

    #[test]
    fn a_rejected_event_in_backoff_holds_back_the_rest_of_its_sandbox_only() {
        let mut out = vec![ev("sbx-a", 1), ev("sbx-b", 1), ev("sbx-a", 2)];
        let now = t("2026-11-28T14:31:00Z");
        record_failure(&mut out[0], now, FailureKind::Rejected, "400", false);
        set_retry_at(&mut out[0], t("2026-11-28T14:32:00Z"));
        let p = plan(&parse(&out), now, false, 100);
        assert_eq!(ids(&p), [vec!["sbx-b:1"]]);
        assert_eq!(p.waiting, 2);
        // Once due, or when forced, it goes first again.
        let later = plan(&parse(&out), t("2026-11-28T14:32:00Z"), false, 100);
        assert_eq!(later.len(), 3);
        assert_eq!(plan(&parse(&out), now, true, 100).len(), 3);
    }

    #[test]
    fn a_leased_event_holds_back_its_sandbox_until_the_lease_runs_out_or_is_given_back() {
        let mut out = vec![ev("sbx-a", 1), ev("sbx-b", 1), ev("sbx-a", 2)];
        let now = t("2026-11-28T14:31:00Z");
        lease(&mut out[0], t("2026-11-28T14:31:02Z"));
        assert_eq!(ids(&plan(&parse(&out), now, false, 100)), [vec!["sbx-b:1"]]);
        // A crashed relay's lease runs out by itself.
        assert_eq!(
            plan(&parse(&out), t("2026-11-28T14:31:02Z"), false, 100).len(),
            3
        );
        // An operator's flush does not wait for it.
        assert_eq!(plan(&parse(&out), now, true, 100).len(), 3);
        release(&mut out[0]);
        assert_eq!(plan(&parse(&out), now, false, 100).len(), 3);
        assert!(out[0][DELIVERY_KEY].get("leased_until").is_none());
    }

    #[test]
    fn plan_stops_at_max() {
        let out = [ev("sbx-a", 1), ev("sbx-b", 1), ev("sbx-a", 2)];
        let p = plan(&parse(&out), t("2026-11-28T14:31:00Z"), false, 2);
        assert_eq!(ids(&p), [vec!["sbx-a:1"], vec!["sbx-b:1"]]);
        assert_eq!(p.waiting, 1);
    }

    #[test]
    fn the_hub_backs_off_after_its_latest_unavailable_failure_until_it_answers() {
        let mut out = vec![ev("sbx-a", 1), ev("sbx-b", 1)];
        assert_eq!(hub_backoff(&parse(&out)), None);
        let t1 = t("2026-11-28T14:31:00Z");
        let t2 = t("2026-11-28T14:31:05Z");
        record_failure(&mut out[0], t1, FailureKind::Unavailable, "503", false);
        set_retry_at(&mut out[0], t("2026-11-28T14:33:00Z"));
        record_failure(&mut out[1], t2, FailureKind::Unavailable, "refused", false);
        set_retry_at(&mut out[1], t("2026-11-28T14:31:07Z"));
        let b = hub_backoff(&parse(&out)).unwrap();
        assert_eq!(b.failed_at, t2);
        assert_eq!(b.retry_at, t("2026-11-28T14:31:07Z"));
        assert_eq!(b.error.as_deref(), Some("refused"));
        // The hub answered at t2 + 1s: neither failure holds anyone back.
        for v in &mut out {
            clear_unavailable(v, t("2026-11-28T14:31:06Z"));
        }
        assert_eq!(hub_backoff(&parse(&out)), None);
        let e = Entry::parse(&out[0]).unwrap();
        assert_eq!(e.event.attempts, 1, "attempts stay for status");
        assert_eq!(e.event.next_attempt_at, None);
        assert_eq!(e.delivery.last_error.as_deref(), Some("503"));
    }

    #[test]
    fn a_claimed_probe_counts_once_and_keeps_the_relay_backing_off() {
        let mut v = ev("sbx-a", 1);
        let t1 = t("2026-11-28T14:31:00Z");
        record_failure(&mut v, t1, FailureKind::Unavailable, "503", false);
        let t2 = t("2026-11-28T14:31:10Z");
        mark_attempt(&mut v, t2, t("2026-11-28T14:31:20Z"));
        let b = hub_backoff(&parse(&[v.clone()])).unwrap();
        assert_eq!((b.failed_at, b.retry_at), (t2, t("2026-11-28T14:31:20Z")));
        assert_eq!(
            record_failure(&mut v, t2, FailureKind::Unavailable, "hang", true),
            2
        );
        // The bookkeeping never changes the event the hub receives.
        let e = Entry::parse(&v).unwrap();
        assert_eq!(
            e.event.hub_body(),
            Entry::parse(&ev("sbx-a", 1)).unwrap().event.hub_body()
        );
    }

    proptest! {
        #[test]
        fn backoff_is_jittered_within_half_to_full_ceiling_and_capped(
            attempts in 0u32..200, seed in any::<u64>()
        ) {
            use rand::SeedableRng;
            let b = Backoff { base: Duration::from_millis(500), cap: Duration::from_secs(60) };
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let c = b.ceiling(attempts);
            let d = b.delay(attempts, &mut rng);
            prop_assert!(c <= b.cap);
            prop_assert!(d <= c && d >= c / 2);
            prop_assert!(b.ceiling(attempts + 1) >= c);
        }

        #[test]
        fn plan_sends_each_entry_at_most_once_and_in_order_per_sandbox(
            order in proptest::collection::vec(0usize..4, 0..40), max in 0usize..50
        ) {
            let mut seq = [0u32; 4];
            let out: Vec<Value> = order.iter().map(|&s| {
                seq[s] += 1;
                ev(&format!("sbx-{s}"), seq[s])
            }).collect();
            let p = plan(&parse(&out), t("2026-11-28T14:31:00Z"), false, max);
            prop_assert_eq!(p.len() + p.waiting, out.len());
            prop_assert!(p.len() <= max);
            for c in &p.chains {
                let seqs: Vec<u32> = c.iter()
                    .map(|e| e.event_id.rsplit(':').next().unwrap().parse().unwrap())
                    .collect();
                // Each chain is its sandbox's events 1..=n, no gaps.
                prop_assert_eq!(seqs, (1..=c.len() as u32).collect::<Vec<_>>());
                prop_assert!(c.iter().all(|e| e.sandbox_id == c[0].sandbox_id));
            }
        }
    }
}
