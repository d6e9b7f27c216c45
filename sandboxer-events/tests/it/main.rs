//! The relay against a real HTTP server on loopback (the stand-in hub) and
//! a real store file.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sandboxer_core::clock::{Clock as _, ManualClock};
use sandboxer_core::events::LifecycleEvent;
use sandboxer_core::lifecycle::State;
use sandboxer_core::store::db::{read, transact, Db, Tx};
use sandboxer_core::Result;
use sandboxer_events::outbox::{Backoff, FailureKind};
use sandboxer_events::stub_hub::{HubMode, StubHub};
use sandboxer_events::{Relay, RelayOptions};
use sandboxer_testkit::net::ClosedPort;
use sandboxer_testkit::wait;

/// The `seq`th event of sandbox `sbx`, as the core numbers them: 1
/// recorded (provisioning), 2 ready, 3 destroying, 4 destroyed.
fn event(sbx: &str, seq: u32) -> serde_json::Value {
    let states = [
        None,
        Some(State::Provisioning),
        Some(State::Ready),
        Some(State::Destroying),
        Some(State::Destroyed),
    ];
    let ev = LifecycleEvent {
        event_id: format!("{sbx}:{seq}"),
        sandbox_id: sbx.to_string(),
        from: states[seq as usize - 1],
        to: states[seq as usize].unwrap(),
        at: Utc::now(),
        actor: "agt:tester".parse().unwrap(),
        profile: "profile.sandbox-canary".into(),
        extension: "ext.canary".into(),
        host: "local".into(),
        reason: (seq == 4).then(|| "destroyed".to_string()),
        attempts: 0,
        next_attempt_at: None,
    };
    serde_json::to_value(ev).unwrap()
}

/// Sandboxes `sbx-0..n`, each with events 1..=4, interleaved as
/// concurrent lifecycles would be.
fn lifecycles(n: usize) -> Vec<serde_json::Value> {
    (1..=4)
        .flat_map(|seq| (0..n).map(move |i| event(&format!("sbx-{i}"), seq)))
        .collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Db>,
}

/// The embedded database in `dir`.
fn db_in(dir: &std::path::Path) -> Arc<dyn Db> {
    sandboxer_store::open(None, dir).unwrap()
}

fn store_with(events: Vec<serde_json::Value>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = db_in(dir.path());
    push(&store, events);
    Fixture { _dir: dir, store }
}

fn push(store: &Arc<dyn Db>, events: Vec<serde_json::Value>) {
    transact(store.as_ref(), |tx| {
        for e in &events {
            tx.push_event(e["sandbox_id"].as_str().unwrap_or(""), e)?;
        }
        Ok(())
    })
    .unwrap();
}

fn outbox(store: &Arc<dyn Db>) -> Vec<serde_json::Value> {
    read(store.as_ref(), sandboxer_events::load_outbox)
        .unwrap()
        .outbox
}

fn ids_of(vs: &[serde_json::Value]) -> Vec<String> {
    vs.iter()
        .map(|v| v["event_id"].as_str().unwrap().to_string())
        .collect()
}

/// Options whose backoff runs out fast, for tests that wait for it.
fn quick() -> RelayOptions {
    RelayOptions {
        backoff: Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(200),
        },
        ..RelayOptions::inline()
    }
}

#[tokio::test]
async fn delivers_every_event_in_order_per_sandbox_keyed_by_its_id_and_empties_the_outbox() {
    let f = store_with(lifecycles(5));
    let hub = StubHub::start().await.unwrap();
    let relay = Relay::new(f.store.clone(), &hub.url(), RelayOptions::background()).unwrap();
    let r = relay.flush_once(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (r.attempted, r.delivered, r.failed, r.remaining),
        (20, 20, 0, 0)
    );
    assert!(outbox(&f.store).is_empty());

    let got = hub.received();
    assert_eq!(got.len(), 20);
    for r in &got {
        assert_eq!(r.idempotency_key.as_deref(), Some(r.event_id.as_str()));
        // The body is the core's hub body: no delivery bookkeeping.
        assert!(r.body.get("attempts").is_none() && r.body.get("delivery").is_none());
        for k in [
            "sandbox_id",
            "from",
            "to",
            "at",
            "actor",
            "profile",
            "extension",
            "host",
            "reason",
        ] {
            assert!(r.body.get(k).is_some(), "{k} missing from {}", r.body);
        }
    }
    for i in 0..5 {
        let seqs: Vec<String> = got
            .iter()
            .filter(|r| r.body["sandbox_id"] == format!("sbx-{i}"))
            .map(|r| r.event_id.clone())
            .collect();
        let want: Vec<String> = (1..=4).map(|s| format!("sbx-{i}:{s}")).collect();
        assert_eq!(seqs, want, "events of one sandbox arrive in order");
    }
}

#[tokio::test]
async fn concurrent_relays_lease_what_they_send_and_never_send_the_same_event() {
    let f = store_with(lifecycles(10));
    let hub = StubHub::start().await.unwrap();
    let relay = || Relay::new(f.store.clone(), &hub.url(), RelayOptions::inline()).unwrap();
    let (a, b, c, d) = (relay(), relay(), relay(), relay());
    let budget = Duration::from_secs(5);
    let reports = tokio::join!(
        a.flush_once(budget),
        b.flush_once(budget),
        c.flush_once(budget),
        d.flush_once(budget)
    );
    let delivered: usize = [reports.0, reports.1, reports.2, reports.3]
        .into_iter()
        .map(|r| r.unwrap().delivered)
        .sum();
    assert_eq!(delivered, 40);
    assert_eq!(hub.received().len(), 40, "no event sent twice");
    assert!(outbox(&f.store).is_empty());
}

#[tokio::test]
async fn a_down_hub_keeps_every_event_records_the_attempt_and_is_left_alone_during_its_backoff() {
    let f = store_with(lifecycles(3));
    let closed = ClosedPort::new().unwrap();
    let relay = Relay::new(f.store.clone(), &closed.url(), RelayOptions::inline()).unwrap();
    let r = relay.flush_once(Duration::from_secs(1)).await.unwrap();
    assert_eq!(r.delivered, 0);
    assert!(r.failed >= 1);
    assert_eq!(r.remaining, 12);
    assert!(r.backing_off_until.is_some_and(|t| t > Utc::now()));
    assert!(
        r.last_error.as_deref().unwrap().contains("cannot connect"),
        "{r:?}"
    );
    assert_eq!(
        ids_of(&outbox(&f.store)),
        ids_of(&lifecycles(3)),
        "nothing lost or reordered"
    );

    let st = sandboxer_events::status(&outbox(&f.store), Some("http://x"), Utc::now());
    assert_eq!(st.events, 12);
    assert!(st.backing_off_until.is_some());
    assert!(st.last_error.is_some());
    assert!(st.entries.iter().any(|e| e.attempts == 1
        && e.failure == Some(FailureKind::Unavailable)
        && e.next_attempt_at.is_some()));

    // During the backoff a pass sends nothing.
    let r = relay.flush_once(Duration::from_secs(1)).await.unwrap();
    assert_eq!(r.attempted, 0);
    assert!(r.backing_off_until.is_some());
}

#[tokio::test]
async fn a_hanging_hub_delays_a_pass_by_at_most_its_budget_once() {
    let f = store_with(lifecycles(10));
    let hub = StubHub::start().await.unwrap();
    hub.set_mode(HubMode::Hang);
    let relay = Relay::new(f.store.clone(), &hub.url(), RelayOptions::inline()).unwrap();
    let t = Instant::now();
    let r = relay
        .flush_once(sandboxer_events::INLINE_BUDGET)
        .await
        .unwrap();
    let took = t.elapsed();
    // The budget, plus room for a loaded machine to schedule the return.
    assert!(
        took < sandboxer_events::INLINE_BUDGET + Duration::from_millis(500),
        "took {took:?}"
    );
    assert_eq!((r.delivered, r.remaining), (0, 40));
    assert!(
        r.last_error
            .as_deref()
            .unwrap()
            .contains("no answer within"),
        "{r:?}"
    );
    // Then it backs off: the next command does not ask the hub at all, so
    // the hang cannot delay it.
    let asked = hub.requests();
    let r = relay
        .flush_once(sandboxer_events::INLINE_BUDGET)
        .await
        .unwrap();
    assert_eq!(r.attempted, 0);
    assert_eq!(hub.requests(), asked, "a request during the backoff");
    // Healed: flush delivers everything.
    hub.set_mode(HubMode::Accept);
    let r = relay.flush(Duration::from_secs(10)).await.unwrap();
    assert_eq!((r.remaining, r.timed_out), (0, false));
    assert_eq!(hub.received_ids().len(), 40);
}

#[tokio::test]
async fn after_the_backoff_one_relay_at_a_time_probes_with_one_event() {
    let f = store_with(lifecycles(4));
    let hub = StubHub::start().await.unwrap();
    hub.set_mode(HubMode::Hang);
    // Both relays read one clock, which moves only when the test moves it.
    let clock = ManualClock::starting_now();
    let a = Relay::new(f.store.clone(), &hub.url(), quick())
        .unwrap()
        .with_clock(clock.clone());
    let b = Relay::new(f.store.clone(), &hub.url(), quick())
        .unwrap()
        .with_clock(clock.clone());
    a.flush_once(Duration::from_secs(1)).await.unwrap();
    // Inside the backoff, neither relay sends anything.
    let before = hub.requests();
    let (ra, rb) = tokio::join!(
        a.flush_once(Duration::from_secs(1)),
        b.flush_once(Duration::from_secs(1))
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.attempted + rb.attempted, 0, "{ra:?} {rb:?}");
    assert!(ra.backing_off_until.is_some(), "{ra:?}");
    clock.advance(Duration::from_millis(250)); // past the backoff
    let (ra, rb) = tokio::join!(
        a.flush_once(Duration::from_secs(1)),
        b.flush_once(Duration::from_secs(1))
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.attempted + rb.attempted, 1, "{ra:?} {rb:?}");
    // The hub counts a request once it has read it: wait for that one.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while hub.requests() == before && std::time::Instant::now() < until {
        tokio::task::yield_now().await;
    }
    assert_eq!(hub.requests() - before, 1);
    // The probe is the oldest event, and its attempts add up.
    let st = sandboxer_events::status(&outbox(&f.store), None, clock.now());
    let first = &st.entries[0];
    assert_eq!(first.event_id, "sbx-0:1");
    assert_eq!(first.attempts, 2);

    // The hub comes back: the probe succeeds and the pass goes on with the rest.
    hub.set_mode(HubMode::Accept);
    clock.advance(Duration::from_millis(250));
    let r = a.flush_once(Duration::from_secs(5)).await.unwrap();
    assert_eq!((r.delivered, r.remaining), (16, 0), "{r:?}");
}

#[tokio::test]
async fn dropped_connections_and_503_are_unavailable_and_lose_nothing() {
    for mode in [HubMode::Drop, HubMode::Unavailable] {
        let f = store_with(lifecycles(2));
        let hub = StubHub::start().await.unwrap();
        hub.set_mode(mode);
        let relay = Relay::new(f.store.clone(), &hub.url(), RelayOptions::inline()).unwrap();
        let r = relay.flush_once(Duration::from_secs(1)).await.unwrap();
        assert_eq!((r.delivered, r.remaining), (0, 8), "{mode:?}");
        assert!(r.backing_off_until.is_some(), "{mode:?}: {r:?}");
        let err = r.last_error.unwrap();
        match mode {
            HubMode::Unavailable => assert!(err.contains("503"), "{err}"),
            _ => assert!(err.contains("request failed"), "{err}"),
        }
        hub.set_mode(HubMode::Accept);
        assert_eq!(
            relay.flush(Duration::from_secs(5)).await.unwrap().remaining,
            0
        );
        assert_eq!(hub.received_ids().len(), 8);
    }
}

#[tokio::test]
async fn a_rejected_event_backs_off_alone_and_holds_back_only_its_own_sandbox() {
    let f = store_with(lifecycles(2));
    let hub = StubHub::start().await.unwrap();
    hub.set_mode(HubMode::Reject);
    let relay = Relay::new(f.store.clone(), &hub.url(), RelayOptions::inline()).unwrap();
    let r = relay.flush_once(Duration::from_secs(1)).await.unwrap();
    // Each sandbox's first event was refused; its later events waited.
    assert_eq!((r.attempted, r.failed, r.remaining), (2, 2, 8));
    assert_eq!(
        r.backing_off_until, None,
        "a refusal says nothing about the hub"
    );
    let st = sandboxer_events::status(&outbox(&f.store), None, Utc::now());
    let failing: Vec<_> = st.entries.iter().filter(|e| e.failure.is_some()).collect();
    assert_eq!(failing.len(), 2);
    assert!(failing
        .iter()
        .all(|e| e.failure == Some(FailureKind::Rejected)
            && e.last_error.as_deref().unwrap().contains("400")));
    // Still in their own backoff: the next pass sends nothing.
    hub.set_mode(HubMode::Accept);
    assert_eq!(
        relay
            .flush_once(Duration::from_secs(1))
            .await
            .unwrap()
            .attempted,
        0
    );
    // An operator's flush does not wait.
    assert_eq!(
        relay.flush(Duration::from_secs(5)).await.unwrap().remaining,
        0
    );
}

#[tokio::test]
async fn flush_gives_up_at_its_timeout_and_keeps_everything() {
    let f = store_with(lifecycles(2));
    let closed = ClosedPort::new().unwrap();
    let relay = Relay::new(f.store.clone(), &closed.url(), RelayOptions::background()).unwrap();
    let t = Instant::now();
    let r = relay.flush(Duration::from_millis(800)).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert!(r.timed_out);
    assert_eq!((r.delivered, r.remaining), (0, 8));
    assert!(r.attempted >= 2, "it retried: {r:?}");
    assert_eq!(outbox(&f.store).len(), 8);
}

/// The real database, whose write transactions can be made to fail after a
/// number of them: a crash after the hub answered and before the events
/// left the outbox.
struct CommitsFail {
    inner: Arc<dyn Db>,
    /// Commits that still succeed.
    allowed: AtomicUsize,
}

impl Db for CommitsFail {
    fn transaction(&self, f: &mut (dyn FnMut(&mut dyn Tx) -> Result<()> + Send)) -> Result<()> {
        let allowed = self.allowed.load(Ordering::SeqCst);
        if allowed == 0 {
            return Err(sandboxer_core::Error::internal("crashed before the commit"));
        }
        self.allowed.store(allowed - 1, Ordering::SeqCst);
        self.inner.transaction(f)
    }
    fn read(&self, f: &mut (dyn FnMut(&mut dyn Tx) -> Result<()> + Send)) -> Result<()> {
        self.inner.read(f)
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn schema_version(&self) -> Result<u32> {
        self.inner.schema_version()
    }
}

#[tokio::test]
async fn a_crash_between_the_answer_and_the_removal_sends_again_and_the_hub_dedups() {
    let dir = tempfile::tempdir().unwrap();
    let crashing = Arc::new(CommitsFail {
        inner: db_in(dir.path()),
        allowed: AtomicUsize::new(usize::MAX),
    });
    let store: Arc<dyn Db> = crashing.clone();
    push(&store, lifecycles(2));
    let hub = StubHub::start().await.unwrap();
    let relay = Relay::new(store.clone(), &hub.url(), RelayOptions::background()).unwrap();
    // The pass's first commit (the lease) succeeds, its last does not.
    crashing.allowed.store(1, Ordering::SeqCst);
    assert!(relay.flush_once(Duration::from_secs(5)).await.is_err());
    assert_eq!(hub.received_ids().len(), 8, "the hub has them");
    assert_eq!(outbox(&store).len(), 8, "and so does the outbox");
    crashing.allowed.store(usize::MAX, Ordering::SeqCst);
    // The leases of the crashed pass still hold; an operator's flush does
    // not wait for them.
    let r = relay.flush(Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.remaining, 0);
    assert_eq!(hub.received().len(), 16, "sent twice (at least once)...");
    assert_eq!(hub.received_ids().len(), 8, "...and one of each by id");
    assert_eq!(hub.duplicates(), 8);
}

#[tokio::test]
async fn run_delivers_what_arrives_until_shutdown() {
    let f = store_with(vec![]);
    let hub = StubHub::start().await.unwrap();
    let relay = Relay::new(f.store.clone(), &hub.url(), RelayOptions::background()).unwrap();
    let waker = relay.waker();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async {
        let _ = stopped.await;
    }));
    for batch in 0..3 {
        push(
            &f.store,
            vec![
                event(&format!("sbx-{batch}"), 1),
                event(&format!("sbx-{batch}"), 2),
            ],
        );
        waker.wake();
        wait::until_async(Duration::from_secs(5), "the batch delivered", || async {
            (hub.received_ids().len() >= 2 * (batch + 1)).then_some(())
        })
        .await;
    }
    // The removal follows the answer closely.
    wait::until_async(Duration::from_secs(5), "the outbox emptied", || async {
        outbox(&f.store).is_empty().then_some(())
    })
    .await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("run stops at shutdown")
        .unwrap();
}

#[tokio::test]
async fn deliver_inline_is_a_no_op_without_a_hub_and_delivers_with_one() {
    let f = store_with(lifecycles(1));
    // A bad URL is logged, never an error for the command.
    assert!(sandboxer_events::deliver_inline_to(
        f.store.clone(),
        "not a url",
        Duration::from_secs(1)
    )
    .await
    .is_none());
    let hub = StubHub::start().await.unwrap();
    let r =
        sandboxer_events::deliver_inline_to(f.store.clone(), &hub.url(), Duration::from_secs(1))
            .await
            .unwrap();
    assert_eq!((r.delivered, r.remaining), (4, 0));
}

/// A server spawns these on a multi-threaded runtime.
#[test]
fn relay_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let f = store_with(vec![]);
    let relay = Relay::new(
        f.store.clone(),
        "http://127.0.0.1:9",
        RelayOptions::background(),
    )
    .unwrap();
    is_send(&relay.flush_once(Duration::from_secs(1)));
    is_send(&relay.flush(Duration::from_secs(1)));
    is_send(&sandboxer_events::deliver_inline(
        f.store.clone(),
        Duration::from_secs(1),
    ));
    is_send(&relay.run(async {}));
}
