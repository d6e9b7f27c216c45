//! The operator's surfaces: `/metrics` (Prometheus text; loopback without a
//! token, elsewhere an `adm` token) and `GET /v1/dashboard` (the page's one
//! request, scoped like the rest of `/v1`), plus the dashboard's page and
//! assets. The page itself runs in a real browser in sandboxer-cli's
//! `tests/it/dashboard.rs`.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use sandboxer_core::lifecycle::Event;
use sandboxer_core::store::db::transact;
use tower::ServiceExt as _;

use crate::list::record;
use crate::{start, state};

/// One line's value in a Prometheus text exposition (`name{labels}`, as
/// written), or `None` when there is no such line.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_from_loopback_need_no_token_and_count_requests_by_route() {
    let r = start(Vec::new()).await;
    let adm = r.token("adm:ops");
    // Three requests to one route template, with three different ids.
    for id in ["sbx-aaaaaaaaaa", "sbx-bbbbbbbbbb", "sbx-cccccccccc"] {
        let (status, _) = r
            .send("GET", &format!("/v1/sandboxes/{id}"), Some(&adm), None)
            .await;
        assert_eq!(status, 404);
    }
    // An account, read at the scrape.
    let db = sandboxer_store::open(None, &r.data_dir()).unwrap();
    sandboxer_credits::DbLedger::new(db)
        .grant(
            &"adm:ops".parse().unwrap(),
            &"agt:a".parse().unwrap(),
            sandboxer_core::credits::Micros::parse_amount("2.5").unwrap(),
            Some("g"),
        )
        .unwrap();
    let resp = r
        .http
        .get(format!("{}/metrics", r.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let text = resp.text().await.unwrap();
    assert_eq!(
        sample(
            &text,
            r#"sandboxer_http_requests_total{method="GET",route="/v1/sandboxes/{id}",status="404"}"#
        ),
        Some(3.0),
        "one series per route template, not per id:\n{text}"
    );
    assert!(!text.contains("sbx-aaaaaaaaaa"), "an id became a label");
    assert_eq!(
        sample(&text, r#"sandboxer_credits_available{actor="agt:a"}"#),
        Some(2.5)
    );
    assert_eq!(
        sample(&text, r#"sandboxer_credits_held{actor="agt:a"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, r#"sandboxer_sandboxes_ended{state="destroyed"}"#),
        Some(0.0)
    );
    assert!(text.contains(&format!(
        "sandboxer_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    // A token that is presented is checked, loopback or not.
    let (status, body) = r.send("GET", "/metrics", Some("sbxt_wrong"), None).await;
    assert_eq!(status, 401, "{body}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_from_elsewhere_need_an_adm_token() {
    let home = tempfile::tempdir().unwrap();
    let st = state(home.path());
    let (_, adm) = st.tokens.add(&"adm:prom".parse().unwrap(), None).unwrap();
    let (_, agent) = st.tokens.add(&"agt:a".parse().unwrap(), None).unwrap();
    let app = sandboxer_api::router(st);
    let from: SocketAddr = "10.1.2.3:40000".parse().unwrap();
    let call = |token: Option<String>| {
        let mut b = Request::get("/metrics");
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let mut req = b.body(Body::empty()).unwrap();
        req.extensions_mut().insert(ConnectInfo(from));
        app.clone().oneshot(req)
    };
    assert_eq!(call(None).await.unwrap().status(), 401);
    assert_eq!(
        call(Some(agent.expose().to_string()))
            .await
            .unwrap()
            .status(),
        403
    );
    let ok = call(Some(adm.expose().to_string())).await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_request_is_scoped_like_the_api() {
    let r = start(Vec::new()).await;
    let adm = r.token("adm:ops");
    let a = r.token("agt:a");
    let db = sandboxer_store::open(None, &r.data_dir()).unwrap();
    transact(db.as_ref(), |tx| {
        for i in 0..6 {
            let who = if i % 2 == 0 { "agt:a" } else { "agt:b" };
            let mut s = record(i, who);
            if i == 5 {
                s.apply(
                    &Event::ProvisionFailed("no".into()),
                    sandboxer_core::model::now(),
                )?;
            }
            tx.insert_sandbox(&s)?;
        }
        Ok(())
    })
    .unwrap();
    // The operator: every live record, newest first, the counts of every
    // state and the outbox.
    let (status, d) = r.send("GET", "/v1/dashboard", Some(&adm), None).await;
    assert_eq!(status, 200, "{d}");
    let ids: Vec<&str> = d["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "sbx-page000004",
            "sbx-page000003",
            "sbx-page000002",
            "sbx-page000001",
            "sbx-page000000"
        ]
    );
    assert_eq!(d["counts"]["provisioning"], 5);
    assert_eq!(d["counts"]["failed"], 1);
    assert_eq!(d["events"]["depth"], 0);
    assert_eq!(d["admin"], true);
    // Filters: an actor, a state.
    let (_, d) = r
        .send("GET", "/v1/dashboard?actor=agt:b", Some(&adm), None)
        .await;
    assert_eq!(d["sandboxes"].as_array().unwrap().len(), 2);
    let (_, d) = r
        .send("GET", "/v1/dashboard?state=failed", Some(&adm), None)
        .await;
    assert_eq!(d["sandboxes"][0]["id"], "sbx-page000005");
    // An agent: its own records and account only, no counts, no outbox,
    // whatever actor it asks for.
    let (status, d) = r
        .send("GET", "/v1/dashboard?actor=agt:b", Some(&a), None)
        .await;
    assert_eq!(status, 200, "{d}");
    let actors: Vec<&str> = d["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors, ["agt:a", "agt:a", "agt:a"]);
    assert!(d["counts"].is_null() && d["events"].is_null());
    assert_eq!(d["accounts"].as_array().unwrap().len(), 1);
    assert_eq!(d["accounts"][0]["actor"], "agt:a");
    // A bad filter is a 400 that names it.
    let (status, e) = r
        .send("GET", "/v1/dashboard?state=sleeping", Some(&adm), None)
        .await;
    assert_eq!(status, 400);
    assert!(e["message"].as_str().unwrap().contains("sleeping"), "{e}");
    let (status, _) = r.send("GET", "/v1/dashboard", None, None).await;
    assert_eq!(status, 401);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_come_from_the_binary_with_a_strict_policy() {
    let r = start(Vec::new()).await;
    for (path, kind, needle) in [
        ("/", "text/html", "/dashboard/app.js"),
        ("/dashboard/app.js", "text/javascript", "/v1/dashboard"),
        ("/dashboard/app.css", "text/css", "@media (max-width"),
    ] {
        let resp = r
            .http
            .get(format!("{}{path}", r.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        let body = resp.text().await.unwrap();
        assert!(body.contains(needle), "{path} lacks {needle}");
        // Nothing is fetched from elsewhere (the SVG namespace is a name,
        // not a fetch).
        let elsewhere = body
            .replace("http://www.w3.org/2000/svg", "")
            .contains("://");
        assert!(!elsewhere, "{path} names another server");
    }
    r.stop().await;
}
