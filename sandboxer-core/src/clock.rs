//! Where stored times come from. Components that write timestamps (the
//! metering layer, the event relay's backoff, the stand-in provider) take
//! a [`Clock`], so tests move time with a [`ManualClock`] instead of
//! sleeping; everything else reads [`SystemClock`].

use std::sync::{Arc, Mutex};

use chrono::{DateTime, SubsecRound as _, Utc};

/// The current time, truncated to milliseconds as records print it.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(3)
    }
}

/// The machine's clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock that stands still until told to move.
///
/// ```
/// use sandboxer_core::clock::{Clock, ManualClock};
/// let clock = ManualClock::starting_now();
/// let t0 = clock.now();
/// clock.advance(std::time::Duration::from_secs(90));
/// assert_eq!((clock.now() - t0).num_seconds(), 90);
/// ```
#[derive(Debug)]
pub struct ManualClock {
    at: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Arc<ManualClock> {
        Arc::new(ManualClock { at: Mutex::new(at) })
    }

    /// Stopped at the machine's time now.
    pub fn starting_now() -> Arc<ManualClock> {
        ManualClock::new(SystemClock.now())
    }

    /// Move forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let by = chrono::Duration::from_std(by).expect("a duration that fits");
        *self.at.lock().expect("clock lock") += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.at.lock().expect("clock lock")
    }
}
