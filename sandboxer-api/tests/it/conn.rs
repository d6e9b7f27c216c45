//! Slow and many clients against a real server on loopback, with small
//! limits: a client that stops half-way through its head or its body is cut
//! off within the deadline while a normal client is served, an idle
//! keep-alive connection is closed, and a flood of connections stops at the
//! cap without the server failing. Every wait is bounded.

use std::time::Duration;

use sandboxer_api::ConnLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::start_with;
use sandboxer_testkit::wait;

const LIMITS: ConnLimits = ConnLimits {
    head_timeout: Duration::from_millis(400),
    body_timeout: Duration::from_millis(400),
    max_connections: 20,
};

/// Everything the server sends until it closes, or `None` when it did not
/// close within `within`.
async fn read_to_close(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut out)).await {
        Ok(Ok(_)) => Some(String::from_utf8_lossy(&out).into_owned()),
        // A reset also closes it.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            Some(String::from_utf8_lossy(&out).into_owned())
        }
        Ok(Err(e)) => panic!("reading: {e}"),
        Err(_) => None,
    }
}

fn host(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_head_is_cut_off_while_others_are_served() {
    let s = start_with(Vec::new(), LIMITS).await;
    let mut slow = TcpStream::connect(host(&s.base)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    // Meanwhile a normal client is served.
    let (status, body) = s.send("GET", "/healthz", None, None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let got = read_to_close(&mut slow, Duration::from_secs(5)).await;
    assert_eq!(got.as_deref(), Some(""), "closed, nothing answered");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_body_gets_408_and_the_connection_closes() {
    let s = start_with(Vec::new(), LIMITS).await;
    let token = s.token("agt:slow");
    let mut slow = TcpStream::connect(host(&s.base)).await.unwrap();
    let head = format!(
        "POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"profile\":"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let (status, _) = s.send("GET", "/healthz", None, None).await;
    assert_eq!(status, 200, "a normal client is served meanwhile");
    let got = read_to_close(&mut slow, Duration::from_secs(5))
        .await
        .expect("the server closes the connection");
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(
        got.to_ascii_lowercase().contains("connection: close"),
        "{got}"
    );
    assert!(got.contains("\"code\":\"timeout\""), "{got}");
    assert!(!got.contains(&token), "no secret in the answer");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let s = start_with(Vec::new(), LIMITS).await;
    let mut c = TcpStream::connect(host(&s.base)).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut c, Duration::from_secs(5))
        .await
        .expect("closed after the idle timeout");
    assert!(got.starts_with("HTTP/1.1 200"), "served first: {got}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_stops_at_the_cap_and_the_server_keeps_serving() {
    let limits = ConnLimits {
        head_timeout: Duration::from_secs(20),
        ..LIMITS
    };
    let s = start_with(Vec::new(), limits).await;
    let mut held = Vec::new();
    for _ in 0..limits.max_connections {
        let mut c = TcpStream::connect(host(&s.base)).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(c);
    }
    // The server accepts in the order the connections arrived: the held
    // ones take every slot before the extra ones are accepted.
    let mut closed_at_once = 0;
    for _ in 0..40 {
        let mut extra = TcpStream::connect(host(&s.base)).await.unwrap();
        if read_to_close(&mut extra, Duration::from_secs(2))
            .await
            .as_deref()
            == Some("")
        {
            closed_at_once += 1;
        }
    }
    assert_eq!(
        closed_at_once, 40,
        "every connection past the cap is closed at once"
    );
    // The held ones are still open (nothing was answered or closed).
    let mut probe = [0u8; 1];
    let still = tokio::time::timeout(Duration::from_millis(100), held[0].read(&mut probe)).await;
    assert!(still.is_err(), "a held connection stays open");
    drop(held);
    // Once the flood is gone (its slots come back as the server sees each
    // connection close), a normal request is served.
    wait::until_async(
        Duration::from_secs(5),
        "the server to serve again after the flood",
        || async {
            let r = s.http.get(format!("{}/healthz", s.base)).send().await;
            r.is_ok_and(|r| r.status() == 200).then_some(())
        },
    )
    .await;
    s.stop().await;
}
