//! Bounded waits for a condition. A test waits for what it needs (a
//! process gone, a record's state, a server's answer) and never for a fixed
//! time: the condition is checked again and again, backing off from 5 ms
//! to 200 ms between checks, until it holds or the bound runs out.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use sandboxer_testkit::wait;
//!
//! let start = Instant::now();
//! let at = wait::until(Duration::from_secs(5), "20 ms to pass", || {
//!     (start.elapsed() >= Duration::from_millis(20)).then(|| start.elapsed())
//! });
//! assert!(at >= Duration::from_millis(20));
//! assert_eq!(wait::within(Duration::from_millis(30), || None::<()>), None);
//! ```

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// The pause after the `n`th check: 5 ms, doubling up to 200 ms.
fn pause(n: u32) -> Duration {
    Duration::from_millis(5u64 << n.min(5)).min(Duration::from_millis(200))
}

/// Check `f` until it gives `Some`, for at most `timeout` (checked once
/// more at the bound); `None` when the time ran out.
pub fn within<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    for n in 0.. {
        if let Some(v) = f() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(pause(n).min(deadline - now));
    }
    None
}

/// [`within`], failing the test with `what` (what was waited for) when the
/// time runs out.
pub fn until<T>(timeout: Duration, what: impl Display, f: impl FnMut() -> Option<T>) -> T {
    within(timeout, f).unwrap_or_else(|| panic!("waited {timeout:?} for {what}"))
}

/// [`within`] for an async check, on tokio's clock.
pub async fn within_async<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    for n in 0.. {
        if let Some(v) = f().await {
            return Some(v);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(pause(n).min(deadline - now)).await;
    }
    None
}

/// [`until`] for an async check, on tokio's clock.
pub async fn until_async<T, F, Fut>(timeout: Duration, what: impl Display, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within_async(timeout, f)
        .await
        .unwrap_or_else(|| panic!("waited {timeout:?} for {what}"))
}

/// Wait (bounded) for `child` to exit; past `limit` it is killed and
/// reaped, and the answer is `None`.
pub fn exit_of(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let status = within(limit, || child.try_wait().expect("try_wait"));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}
