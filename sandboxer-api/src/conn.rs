//! Connections: the accept loop behind [`crate::Server`], with the limits
//! that keep one slow or greedy client from holding the server.
//!
//! - **The request head** must arrive within [`ConnLimits::head_timeout`]
//!   (hyper's `header_read_timeout`). hyper starts that deadline whenever
//!   the connection waits for a request: at accept, and again after each
//!   response on a keep-alive connection. So the same deadline is the idle
//!   timeout of keep-alive connections: one that sends nothing for that
//!   long is closed. Either way the client sees the connection closed (no
//!   request was read, so there is nothing to answer).
//! - **The body** must arrive within [`ConnLimits::body_timeout`], counted
//!   from the end of the head, in total: [`DeadlineBody`] wraps every
//!   request body. A handler reading it past the deadline gets a
//!   [`BodyTimeout`] error and answers 408 with `Connection: close`.
//!   (tower-http's `RequestBodyTimeout` restarts its timer at every frame, so
//!   a client sending one byte a second would never hit it; that is why
//!   this one is ours.)
//! - **Connections at once** are capped at [`ConnLimits::max_connections`]:
//!   past the cap a new connection is accepted and closed at once, so the
//!   listen queue does not fill and the connections already open are
//!   served as before.
//!
//! Cut-offs are logged with the peer's address and what ran out; never a
//! header, a query string or a body. The server speaks HTTP/1.1.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::Service as _;

use crate::error::ApiError;

/// How long a client may take, and how many may be connected at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// The request head must arrive within this from when the connection
    /// starts waiting for a request (also the keep-alive idle timeout).
    pub head_timeout: Duration,
    /// The whole body must arrive within this from the end of the head.
    pub body_timeout: Duration,
    /// Connections open at once; more are closed at accept.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    /// Head (and keep-alive idle) 30 s, body 60 s, 1024 connections.
    fn default() -> Self {
        ConnLimits {
            head_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

/// The error a [`DeadlineBody`] yields once its deadline has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeout(pub Duration);

impl fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body did not arrive within {}s",
            self.0.as_secs_f64()
        )
    }
}

impl StdError for BodyTimeout {}

/// Whether `err`, or an error it wraps, is a [`BodyTimeout`].
pub fn is_body_timeout(err: &(dyn StdError + 'static)) -> bool {
    let mut e: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(cur) = e {
        if cur.downcast_ref::<BodyTimeout>().is_some() {
            return true;
        }
        e = cur.source();
    }
    false
}

/// The 408 for a body that came too slowly (its response closes the
/// connection).
pub fn body_timeout_error() -> ApiError {
    ApiError::new(
        sandboxer_core::ErrorKind::Timeout,
        "the request body did not arrive within the server's body deadline",
    )
    .with_status(StatusCode::REQUEST_TIMEOUT)
    .with_hint("send the whole body at once; the deadline is the server's `--body-timeout`")
}

/// A request body that fails with [`BodyTimeout`] once `deadline` passes
/// before its end.
pub struct DeadlineBody<B> {
    inner: B,
    sleep: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
    done: bool,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, limit: Duration) -> Self {
        DeadlineBody {
            inner,
            sleep: Box::pin(tokio::time::sleep(limit)),
            limit,
            done: false,
        }
    }
}

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody + Unpin,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(r)) => Poll::Ready(Some(r.map_err(Into::into))),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Logs a line at most once per interval (a flood must not flood the log).
struct Throttle {
    last_ms: AtomicU64,
    start: Instant,
}

impl Throttle {
    fn new() -> Self {
        Throttle {
            last_ms: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    fn ready(&self, every: Duration) -> bool {
        let now = self.start.elapsed().as_millis() as u64 + every.as_millis() as u64;
        let last = self.last_ms.load(Ordering::Relaxed);
        now >= last + every.as_millis() as u64
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Serve `app` on `listener` with `limits` until `stop` resolves; then stop
/// accepting and let the connections finish their requests in flight (at
/// most `grace`).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    stop: impl Future<Output = ()>,
    grace: Duration,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let refused_log = Arc::new(Throttle::new());
    let mut refused: u64 = 0;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .keep_alive(true);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors, most likely: wait a little rather
                    // than spin; the connections open go on.
                    if refused_log.ready(Duration::from_secs(5)) {
                        tracing::warn!("accepting a connection: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused_log.ready(Duration::from_secs(5)) {
                tracing::warn!(
                    "{} connections open (the cap, --max-connections); closing new ones at once ({refused} so far, the last from {peer})",
                    limits.max_connections
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let body_limit = limits.body_timeout;
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let mut app = app.clone();
            let mut req = req.map(|b| Body::new(DeadlineBody::new(b, body_limit)));
            // Who is asking (`/metrics` answers loopback without a token).
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            async move { app.call(req).await }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        let head = limits.head_timeout;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                log_conn_error(peer, head, &e);
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("requests still in flight after {grace:?}; stopping anyway");
        }
    }
}

fn log_conn_error(peer: SocketAddr, head: Duration, e: &hyper::Error) {
    if e.is_timeout() {
        tracing::info!(
            "connection from {peer} closed: no complete request head within {}s (--head-timeout; also the keep-alive idle timeout)",
            head.as_secs_f64()
        );
    } else if e.is_incomplete_message() || e.is_canceled() {
        tracing::debug!("connection from {peer} ended early: {e}");
    } else {
        tracing::info!("connection from {peer} closed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_fails_at_its_deadline_and_a_whole_one_passes() {
        let whole = DeadlineBody::new(
            http_body_util::Full::new(axum::body::Bytes::from_static(b"{}")),
            Duration::from_secs(5),
        );
        assert_eq!(whole.collect().await.unwrap().to_bytes(), "{}");
        // A stream that sends one frame, then nothing.
        let (mut tx, rx) =
            http_body_util::channel::Channel::<axum::body::Bytes, hyper::Error>::new(1);
        tx.send_data(axum::body::Bytes::from_static(b"{\"a\""))
            .await
            .unwrap();
        let stalled = DeadlineBody::new(rx, Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let err = stalled.collect().await.unwrap_err();
        assert!(is_body_timeout(&*err), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        drop(tx);
    }

    #[test]
    fn timeouts_are_found_through_wrapping_errors() {
        let wrapped = axum::Error::new(BodyTimeout(Duration::from_secs(1)));
        assert!(is_body_timeout(&wrapped));
        assert!(!is_body_timeout(&std::io::Error::other("x")));
    }

    #[test]
    fn the_throttle_lets_one_line_through_per_interval() {
        let t = Throttle::new();
        assert!(t.ready(Duration::from_secs(60)));
        assert!(!t.ready(Duration::from_secs(60)));
    }
}
