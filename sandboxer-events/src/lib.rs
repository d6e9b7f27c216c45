//! Delivers sandboxer's lifecycle events to the State Hub.
//!
//! Every lifecycle transition writes a
//! [`LifecycleEvent`](sandboxer_core::events::LifecycleEvent) into the
//! store's outbox in the same commit as the transition (when a hub is
//! configured). This crate takes them out again:
//!
//! - [`Relay`] posts each event's `hub_body()` to `POST {hub}/events` with
//!   the header `Idempotency-Key: EVENT_ID`, in order per sandbox, and
//!   removes an event from the outbox only after a 2xx for it. Failures are
//!   recorded in the entry (attempts, next attempt, last error) and backed
//!   off exponentially with jitter; while the hub is down or hanging, one
//!   relay at a time probes it with one event. Delivery is at least once:
//!   the hub deduplicates by `event_id`.
//! - [`deliver_inline`] is the one short pass a CLI command makes after its
//!   own commits: it delays the command by at most its budget, and by
//!   nothing while the hub backs off.
//! - [`status`] says what waits; `stub_hub::StubHub` (crate feature `stub`,
//!   with the `sandboxer-hub-stub` binary) is a stand-in hub.
//!
//! The contract with the hub is `docs/integrations/state-hub.md`.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use sandboxer_core::store::db::Db;
//! use sandboxer_events::stub_hub::StubHub;
//! use sandboxer_events::{Relay, RelayOptions};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let db: Arc<dyn Db> =
//!     Arc::new(sandboxer_store::SqliteDb::open(&dir.path().join("sandboxer.db")).unwrap());
//! // ... transitions made with `Manager::with_events(true)` fill the outbox ...
//! let hub = StubHub::start().await.unwrap();
//! let relay = Relay::new(db.clone(), &hub.url(), RelayOptions::background()).unwrap();
//! let report = relay.flush(Duration::from_secs(30)).await.unwrap();
//! assert_eq!(report.remaining, 0);
//!
//! // Beside a server: deliver until shutdown.
//! let relay = Relay::new(db, &hub.url(), RelayOptions::background()).unwrap();
//! let waker = relay.waker(); // call waker.wake() after commits that queue events
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(relay.run(async { let _ = stopped.await; }));
//! waker.wake();
//! stop.send(()).unwrap();
//! task.await.unwrap();
//! # });
//! ```

use std::sync::Arc;
use std::time::Duration;

use sandboxer_core::store::db::Db;
use sandboxer_core::{Error, Result};

pub mod outbox;
mod relay;
mod status;
#[cfg(feature = "stub")]
pub mod stub_hub;

pub use relay::{
    load as load_outbox, FlushReport, Outbox, PassObserver, Relay, RelayOptions, RelayWaker,
};
pub use status::{status, EntryStatus, LastError, OutboxStatus};

/// The environment variable with the hub's base URL.
pub const HUB_URL_ENV: &str = "SANDBOXER_STATE_HUB_URL";

/// The most a CLI command waits on the hub after its own commits.
pub const INLINE_BUDGET: Duration = Duration::from_secs(1);

/// `SANDBOXER_STATE_HUB_URL`, when set and not empty.
pub fn hub_url_from_env() -> Option<String> {
    std::env::var(HUB_URL_ENV)
        .ok()
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
}

/// One pass of delivery for a CLI command that may have queued events:
/// a no-op when `SANDBOXER_STATE_HUB_URL` is not set; otherwise
/// [`Relay::flush_once`] with [`RelayOptions::inline`] within `budget`
/// (use [`INLINE_BUDGET`]). Never fails the command: problems are logged
/// (`-v`) and stay visible in `sandboxer events status`; what is not
/// delivered stays for the next command, `sandboxer events flush` or a
/// server's relay.
pub async fn deliver_inline(db: Arc<dyn Db>, budget: Duration) -> Option<FlushReport> {
    let url = hub_url_from_env()?;
    deliver_inline_to(db, &url, budget).await
}

/// [`deliver_inline`] to the hub at `hub_url`.
pub async fn deliver_inline_to(
    db: Arc<dyn Db>,
    hub_url: &str,
    budget: Duration,
) -> Option<FlushReport> {
    let relay = match Relay::new(db, hub_url, RelayOptions::inline()) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("State Hub: {e}");
            return None;
        }
    };
    match relay.flush_once(budget).await {
        Ok(r) => {
            if r.failed > 0 {
                tracing::info!(
                    "State Hub: {} event(s) wait ({}); see `sandboxer events status`",
                    r.remaining,
                    r.last_error.as_deref().unwrap_or("not delivered")
                );
            } else if r.backing_off_until.is_some() {
                tracing::debug!("State Hub backing off; {} event(s) wait", r.remaining);
            }
            Some(r)
        }
        Err(e) => {
            tracing::info!("State Hub: {e}");
            None
        }
    }
}

/// `POST` goes here: the base URL with `/events` appended to its path.
pub fn events_endpoint(hub_url: &str) -> Result<reqwest::Url> {
    let bad = |why: &str| {
        Error::invalid_config(format!("{HUB_URL_ENV} `{}` {why}", redact_url(hub_url)))
            .with_hint("set it to the hub's base URL, e.g. http://127.0.0.1:9000")
    };
    let mut url = reqwest::Url::parse(hub_url.trim()).map_err(|_| bad("is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("is not an http(s) URL"));
    }
    let path = format!("{}/events", url.path().trim_end_matches('/'));
    url.set_path(&path);
    Ok(url)
}

/// `url` with any user name, password and query replaced by `***`, for
/// output and logs.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url.trim()) {
        Ok(u) if u.username().is_empty() && u.password().is_none() && u.query().is_none() => {
            url.trim().to_string()
        }
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("***");
                let _ = u.set_password(None);
            }
            if u.query().is_some() {
                u.set_query(Some("***"));
            }
            u.to_string()
        }
        // Not a URL: it cannot be used, and may be anything; show its shape.
        Err(_) => "(not a URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_appends_events_to_the_base_path() {
        let e = |u: &str| events_endpoint(u).unwrap().to_string();
        assert_eq!(e("http://127.0.0.1:9000"), "http://127.0.0.1:9000/events");
        assert_eq!(e("http://hub/"), "http://hub/events");
        assert_eq!(
            e("https://hub.example/api/v1/"),
            "https://hub.example/api/v1/events"
        );
        assert!(events_endpoint("127.0.0.1:9000").is_err());
        assert!(events_endpoint("ftp://hub").is_err());
        assert!(events_endpoint("").is_err());
    }

    #[test]
    fn secrets_in_the_url_are_never_shown() {
        assert_eq!(
            redact_url("https://bot:s3cret@hub.example/x?token=abc"),
            "https://***@hub.example/x?***"
        );
        assert_eq!(redact_url("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
        let err = events_endpoint("ftp://bot:s3cret@hub").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
