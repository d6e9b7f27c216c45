//! [`StubHub`]: a stand-in State Hub for tests, benchmarks and trying
//! sandboxer out: a real HTTP/1.1 server on loopback that speaks the hub
//! contract of `docs/integrations/state-hub.md` and can be switched between
//! behaviours while it runs (answer 200, 503 or 400, drop the connection,
//! hang).
//!
//! It is written on plain tokio sockets rather than an HTTP framework
//! because it must misbehave at the socket level: read a request and close
//! the connection without an answer, or never answer at all.
//!
//! ```
//! use sandboxer_events::stub_hub::{HubMode, StubHub};
//!
//! let hub = StubHub::start_background().unwrap();
//! hub.set_mode(HubMode::Unavailable); // every POST /events now gets 503
//! assert!(hub.url().starts_with("http://127.0.0.1:"));
//! assert!(hub.received().is_empty());
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the hub answers `POST /events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubMode {
    /// 200, and the event is stored (a repeated `event_id` is answered 200
    /// too, and counted as a duplicate). A body without `event_id`, or an
    /// `Idempotency-Key` header that differs from it, gets 400.
    Accept,
    /// 503 Service Unavailable.
    Unavailable,
    /// 400 Bad Request (the hub refuses the event).
    Reject,
    /// Read the request, then close the connection without an answer.
    Drop,
    /// Read the request and never answer (the connection is closed after
    /// five minutes, or when the hub stops).
    Hang,
}

impl std::str::FromStr for HubMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "accept" => HubMode::Accept,
            "unavailable" => HubMode::Unavailable,
            "reject" => HubMode::Reject,
            "drop" => HubMode::Drop,
            "hang" => HubMode::Hang,
            other => {
                return Err(format!(
                    "unknown mode `{other}` (accept, unavailable, reject, drop, hang)"
                ))
            }
        })
    }
}

/// One event the hub answered 200 for.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub event_id: String,
    pub idempotency_key: Option<String>,
    /// The JSON body as sent.
    pub body: Value,
}

#[derive(Debug)]
struct Shared {
    mode: Mutex<HubMode>,
    received: Mutex<Vec<Received>>,
    requests: AtomicUsize,
}

impl Shared {
    fn mode(&self) -> HubMode {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn received(&self) -> MutexGuard<'_, Vec<Received>> {
        self.received.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running stand-in hub. Stops when dropped.
#[derive(Debug)]
pub struct StubHub {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
    /// The runtime of [`StubHub::start_background`].
    runtime: Option<tokio::runtime::Runtime>,
}

impl StubHub {
    /// Listen on `127.0.0.1` on a free port, serving on the current tokio
    /// runtime.
    pub async fn start() -> std::io::Result<StubHub> {
        Self::bind("127.0.0.1:0".parse().expect("an address")).await
    }

    /// Listen on `addr`, serving on the current tokio runtime.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<StubHub> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            mode: Mutex::new(HubMode::Accept),
            received: Mutex::new(Vec::new()),
            requests: AtomicUsize::new(0),
        });
        let task = tokio::spawn(serve(listener, shared.clone())).abort_handle();
        Ok(StubHub {
            addr,
            shared,
            task,
            runtime: None,
        })
    }

    /// Like [`StubHub::start`], on a runtime of its own (for synchronous
    /// tests and programs). Do not drop it inside an async context.
    pub fn start_background() -> std::io::Result<StubHub> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("stub-hub")
            .enable_all()
            .build()?;
        let mut hub = rt.block_on(Self::start())?;
        hub.runtime = Some(rt);
        Ok(hub)
    }

    /// The base URL to give sandboxer (`SANDBOXER_STATE_HUB_URL`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_mode(&self, mode: HubMode) {
        *self.shared.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    pub fn mode(&self) -> HubMode {
        self.shared.mode()
    }

    /// Every event answered 200, in arrival order (duplicates included).
    pub fn received(&self) -> Vec<Received> {
        self.shared.received().clone()
    }

    /// The distinct event ids answered 200.
    pub fn received_ids(&self) -> BTreeSet<String> {
        self.shared
            .received()
            .iter()
            .map(|r| r.event_id.clone())
            .collect()
    }

    /// Events answered 200 more than once.
    pub fn duplicates(&self) -> usize {
        let all = self.shared.received().len();
        all - self.received_ids().len()
    }

    /// Every request seen, whatever the answer (or none).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

impl Drop for StubHub {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    // Connections live in this set, so stopping the hub stops them all.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                let _ = sock.set_nodelay(true);
                conns.spawn(connection(sock, shared.clone()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
        while conns.try_join_next().is_some() {}
    }
}

struct Request {
    method: String,
    path: String,
    idempotency_key: Option<String>,
    close: bool,
    body: Vec<u8>,
}

async fn connection(mut sock: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut sock, &mut buf).await {
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let (status, body) = match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/events") => match shared.mode() {
                HubMode::Accept => accept(&shared, &req),
                HubMode::Unavailable => (503, r#"{"error":"the hub is down"}"#.to_string()),
                HubMode::Reject => (400, r#"{"error":"refused"}"#.to_string()),
                HubMode::Drop => return,
                HubMode::Hang => {
                    tokio::time::sleep(Duration::from_secs(300)).await;
                    return;
                }
            },
            ("GET", "/events") => {
                let r = shared.received();
                let ids: Vec<&str> = r.iter().map(|r| r.event_id.as_str()).collect();
                (200, serde_json::json!({ "received": ids }).to_string())
            }
            _ => (404, r#"{"error":"not found"}"#.to_string()),
        };
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            _ => "Service Unavailable",
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n",
            body.len(),
            if req.close { "connection: close\r\n" } else { "" }
        );
        if sock.write_all(head.as_bytes()).await.is_err()
            || sock.write_all(body.as_bytes()).await.is_err()
            || req.close
        {
            return;
        }
    }
}

fn accept(shared: &Shared, req: &Request) -> (u16, String) {
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => {
            return (
                400,
                serde_json::json!({ "error": e.to_string() }).to_string(),
            )
        }
    };
    let Some(id) = body
        .get("event_id")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return (400, r#"{"error":"no event_id"}"#.to_string());
    };
    if req.idempotency_key.as_deref().is_some_and(|k| k != id) {
        return (
            400,
            r#"{"error":"Idempotency-Key differs from event_id"}"#.to_string(),
        );
    }
    let mut r = shared.received();
    let duplicate = r.iter().any(|x| x.event_id == id);
    r.push(Received {
        event_id: id,
        idempotency_key: req.idempotency_key.clone(),
        body,
    });
    (
        200,
        serde_json::json!({ "accepted": true, "duplicate": duplicate }).to_string(),
    )
}

/// The next request on the connection; `None` at its end or on garbage.
async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    const MAX_HEAD: usize = 64 * 1024;
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD || read_more(sock, buf).await == 0 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let mut length = 0usize;
    let mut idempotency_key = None;
    let mut close = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().ok()?,
            "idempotency-key" => idempotency_key = Some(value.to_string()),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "transfer-encoding" => return None, // not needed by any client we test
            _ => {}
        }
    }
    let start = head_end + 4;
    while buf.len() < start + length {
        if read_more(sock, buf).await == 0 {
            return None;
        }
    }
    let body = buf[start..start + length].to_vec();
    buf.drain(..start + length);
    Some(Request {
        method,
        path,
        idempotency_key,
        close,
        body,
    })
}

async fn read_more(sock: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 8192];
    match sock.read(&mut chunk).await {
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            n
        }
        Err(_) => 0,
    }
}
