//! The router and server on a real loopback listener, hit by a real HTTP
//! client: the OpenAPI copy in docs/, every route mounted, auth, error
//! bodies, body limits, binding rules and graceful shutdown. The whole
//! lifecycle with real canaries (the `sandboxer serve` binary) is in
//! sandboxer-cli's `tests/it/http.rs`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sandboxer_api::openapi::{Access, OPERATIONS};
use sandboxer_api::{ApiState, BackgroundTask, ServeConfig, Server, TokenStore};
use sandboxer_core::extension::Registry;
use sandboxer_core::hosts::Hosts;
use sandboxer_core::manager::Manager;
use sandboxer_core::profile::Catalog;
use serde_json::{json, Value};
use tokio::sync::oneshot;

mod conn;
mod list;
mod operator;

/// A server with a real store, ledger and tokens file in a temp home, and no
/// extension (nothing is provisioned here).
struct Running {
    home: tempfile::TempDir,
    base: String,
    tokens: TokenStore,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<sandboxer_core::Result<()>>,
    http: reqwest::Client,
}

fn state(home: &std::path::Path) -> ApiState {
    let data = home.join("data");
    let config = home.join("config");
    std::fs::create_dir_all(&config).unwrap();
    let db = sandboxer_store::open(None, &data).unwrap();
    let ledger = Arc::new(sandboxer_credits::DbLedger::new(db.clone()));
    let manager = Manager::new(
        db.clone(),
        Catalog::builtin(),
        Hosts::local_only(),
        Registry::new(),
        Arc::new(sandboxer_transport::DefaultConnector::with_config_dir(
            data.clone(),
            config.clone(),
        )),
    )
    .with_billing(ledger.clone());
    ApiState::new(manager, ledger, TokenStore::new(db))
}

async fn start(background: Vec<BackgroundTask>) -> Running {
    start_with(background, sandboxer_api::ConnLimits::default()).await
}

async fn start_with(background: Vec<BackgroundTask>, limits: sandboxer_api::ConnLimits) -> Running {
    let home = tempfile::tempdir().unwrap();
    let st = state(home.path());
    let tokens = st.tokens.clone();
    let config = ServeConfig {
        reaper: None,
        background,
        shutdown_grace: Duration::from_secs(5),
        limits,
        ..ServeConfig::new("127.0.0.1:0".parse().unwrap(), st)
    };
    let server = Server::bind(config).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let (tx, rx) = oneshot::channel();
    let done = tokio::spawn(server.run_until(async move {
        let _ = rx.await;
    }));
    Running {
        home,
        base,
        tokens,
        stop: Some(tx),
        done,
        http: reqwest::Client::new(),
    }
}

impl Running {
    /// The server's data dir (its embedded database).
    fn data_dir(&self) -> PathBuf {
        self.home.path().join("data")
    }

    fn token(&self, actor: &str) -> String {
        let (_, secret) = self.tokens.add(&actor.parse().unwrap(), None).unwrap();
        secret.expose().to_string()
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut rb = self.http.request(
            reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
            format!("{}{path}", self.base),
        );
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.body(b.to_string());
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: {status} not JSON ({e}): {text}"));
        (status, v)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.done.await.unwrap().unwrap();
    }
}

fn docs_openapi() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_equals_the_copy_in_docs() {
    let s = start(Vec::new()).await;
    let (status, served) = s.send("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let text = format!("{}\n", serde_json::to_string_pretty(&served).unwrap());
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(docs_openapi(), &text).unwrap();
    }
    let copy: Value = std::fs::read_to_string(docs_openapi())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    assert!(
        copy == served,
        "docs/openapi.json differs from what the server serves; regenerate it with \
         `UPDATE_OPENAPI=1 cargo test -p sandboxer-api --test it openapi`"
    );
    assert_eq!(served["openapi"], "3.1.0");
    s.stop().await;
}

/// Fill `{param}`s with something.
fn concrete(path: &str) -> String {
    path.replace("{id}", "sbx-aaaaaaaaaa")
        .replace("{sandboxID}", "sbx-aaaaaaaaaa")
        .replace("{name}", "local")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_mounted_and_only_public_ones_answer_without_a_token() {
    let s = start(Vec::new()).await;
    for op in OPERATIONS {
        let path = concrete(op.path);
        let (status, body) = s.send(op.method.as_str(), &path, None, None).await;
        match op.access {
            Access::Public => assert_eq!(status, 200, "{} {path}", op.method),
            _ => {
                assert_eq!(status, 401, "{} {path}: {body}", op.method);
                if op.tag == "e2b" {
                    // E2B's body: the status as `code`, the kind beside it.
                    assert_eq!(body["code"], 401);
                    assert_eq!(body["error_code"], "unauthorized");
                } else {
                    assert_eq!(body["code"], "unauthorized");
                }
            }
        }
        // A wrong token is refused the same way.
        if op.access != Access::Public {
            let (status, _) = s
                .send(op.method.as_str(), &path, Some("sbxt_notatokenatall"), None)
                .await;
            assert_eq!(status, 401, "{} {path}", op.method);
        }
        // Every status the server can answer is documented.
        let doc = sandboxer_api::openapi::document();
        let responses = &doc["paths"][op.path][op.method.as_str()]["responses"];
        if op.access != Access::Public {
            assert!(responses.get("401").is_some(), "{} documents 401", op.id);
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_the_status_of_their_kind() {
    let s = start(Vec::new()).await;
    let adm = s.token("adm:ops");
    let agt = s.token("agt:bob");

    // Malformed JSON and unknown fields: 400 saying what and where.
    let (st, b) = s
        .send("POST", "/v1/sandboxes", Some(&adm), Some("{\"profile\": "))
        .await;
    assert_eq!((st, b["code"].as_str()), (400, Some("invalid_input")));
    assert!(
        b["message"].as_str().unwrap().contains("line 1 column"),
        "{b}"
    );
    let (st, b) = s
        .send(
            "POST",
            "/v1/sandboxes",
            Some(&adm),
            Some("{\"colour\": \"red\"}"),
        )
        .await;
    assert_eq!(st, 400);
    assert!(b["message"].as_str().unwrap().contains("`colour`"), "{b}");
    let (st, b) = s
        .send("POST", "/v1/sandboxes", Some(&adm), Some("{\"ttl\": 30}"))
        .await;
    assert_eq!(st, 400);
    assert!(
        b["message"].as_str().unwrap().contains("invalid type"),
        "{b}"
    );

    // Too big: 413.
    let big = format!(
        "{{\"profile\": \"{}\"}}",
        "x".repeat(sandboxer_api::BODY_LIMIT)
    );
    let (st, b) = s
        .send("POST", "/v1/sandboxes", Some(&adm), Some(&big))
        .await;
    assert_eq!((st, b["code"].as_str()), (413, Some("invalid_input")));

    // Validation in the manager: the CLI's messages and kinds.
    let (st, b) = s
        .send(
            "POST",
            "/v1/sandboxes",
            Some(&adm),
            Some(r#"{"profile": "profile.nope"}"#),
        )
        .await;
    assert_eq!((st, b["code"].as_str()), (404, Some("not_found")));
    let (st, b) = s
        .send(
            "POST",
            "/v1/sandboxes",
            Some(&adm),
            Some(r#"{"ttl": "30"}"#),
        )
        .await;
    assert_eq!((st, b["code"].as_str()), (400, Some("invalid_input")));
    assert!(b["message"].as_str().unwrap().starts_with("ttl: "), "{b}");
    // This server has no extension at all: the canary is unsupported (501).
    let (st, b) = s.send("POST", "/v1/sandboxes", Some(&adm), Some("")).await;
    assert_eq!((st, b["code"].as_str()), (501, Some("unsupported")), "{b}");

    // Creating as someone else: only adm.
    let (st, b) = s
        .send(
            "POST",
            "/v1/sandboxes",
            Some(&agt),
            Some(r#"{"actor": "agt:eve"}"#),
        )
        .await;
    assert_eq!((st, b["code"].as_str()), (403, Some("forbidden")), "{b}");

    // Unknown query parameters, routes and methods.
    let (st, b) = s
        .send("GET", "/v1/sandboxes?colour=red", Some(&adm), None)
        .await;
    assert_eq!(st, 400);
    assert!(b["message"].as_str().unwrap().contains("`state`"), "{b}");
    let (st, b) = s
        .send("GET", "/v1/sandboxes?state=sleeping", Some(&adm), None)
        .await;
    assert_eq!(st, 400, "{b}");
    let (st, b) = s.send("GET", "/v2/nothing", Some(&adm), None).await;
    assert_eq!((st, b["code"].as_str()), (404, Some("not_found")));
    let (st, b) = s.send("PUT", "/v1/sandboxes", Some(&adm), None).await;
    assert_eq!((st, b["code"].as_str()), (405, Some("unsupported")));
    let (st, _) = s
        .send("GET", "/v1/sandboxes/sbx-nothere", Some(&adm), None)
        .await;
    assert_eq!(st, 404);

    // Credits: grants are adm-only; balances are one's own.
    let (st, b) = s
        .send(
            "POST",
            "/v1/credits/grants",
            Some(&adm),
            Some(r#"{"actor": "agt:bob", "amount": 25, "key": "k1"}"#),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["account"]["available"], "25");
    let (st, b) = s
        .send(
            "POST",
            "/v1/credits/grants",
            Some(&adm),
            Some(r#"{"actor": "agt:bob", "amount": "25", "key": "k1"}"#),
        )
        .await;
    assert_eq!((st, &b["duplicate"]), (200, &json!(true)));
    let (st, b) = s
        .send(
            "POST",
            "/v1/credits/grants",
            Some(&adm),
            Some(r#"{"actor": "agt:bob", "amount": 0.5}"#),
        )
        .await;
    assert_eq!(st, 400, "{b}");
    let (st, b) = s
        .send(
            "POST",
            "/v1/credits/grants",
            Some(&adm),
            Some(r#"{"actor": "agt:bob", "amount": "0"}"#),
        )
        .await;
    assert_eq!(st, 400, "{b}");
    let (st, _) = s
        .send(
            "POST",
            "/v1/credits/grants",
            Some(&agt),
            Some(r#"{"actor": "agt:bob", "amount": "1"}"#),
        )
        .await;
    assert_eq!(st, 403);
    let (st, b) = s.send("GET", "/v1/credits/balance", Some(&agt), None).await;
    assert_eq!((st, b["actor"].as_str()), (200, Some("agt:bob")));
    assert_eq!(b["account"]["available"], "25");
    let (st, _) = s
        .send("GET", "/v1/credits/balance?actor=adm:ops", Some(&agt), None)
        .await;
    assert_eq!(st, 403);
    let (st, b) = s.send("GET", "/v1/credits/ledger", Some(&agt), None).await;
    assert_eq!((st, b.as_array().map(Vec::len)), (200, Some(1)));
    let (st, b) = s.send("GET", "/v1/credits/check", Some(&adm), None).await;
    assert_eq!((st, &b["ok"]), (200, &json!(true)));
    let (st, b) = s.send("GET", "/v1/whoami", Some(&agt), None).await;
    assert_eq!((st, b["actor"].as_str()), (200, Some("agt:bob")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_added_or_revoked_take_effect_without_a_restart() {
    let s = start(Vec::new()).await;
    let t = s.token("atm:ci");
    assert_eq!(s.send("GET", "/v1/whoami", Some(&t), None).await.0, 200);
    let name = s.tokens.list().unwrap()[0].name.clone();
    // Revoked through another handle on the same database, as the CLI (or
    // another replica) does.
    let other = TokenStore::new(sandboxer_store::open(None, &s.data_dir()).unwrap());
    other.revoke(&name).unwrap();
    assert_eq!(s.send("GET", "/v1/whoami", Some(&t), None).await.0, 401);
    let (_, secret) = other
        .add(&"atm:ci".parse().unwrap(), Some("later"))
        .unwrap();
    let (st, b) = s
        .send("GET", "/v1/whoami", Some(secret.expose()), None)
        .await;
    assert_eq!((st, b["actor"].as_str()), (200, Some("atm:ci")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_address_is_refused_while_no_token_exists() {
    let home = tempfile::tempdir().unwrap();
    let st = state(home.path());
    let config = ServeConfig::new("0.0.0.0:0".parse().unwrap(), st.clone());
    let e = Server::bind(config).await.unwrap_err();
    assert_eq!(e.kind(), sandboxer_core::ErrorKind::InvalidInput);
    assert!(e.message().contains("not a loopback address"), "{e}");
    // Once a token exists, it binds.
    st.tokens.add(&"adm:ops".parse().unwrap(), None).unwrap();
    let config = ServeConfig::new("0.0.0.0:0".parse().unwrap(), st);
    assert!(Server::bind(config).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_tasks_run_beside_the_server_and_stop_with_it() {
    let (ran_tx, ran_rx) = oneshot::channel();
    let (stopped_tx, stopped_rx) = oneshot::channel();
    let task = BackgroundTask::new("relay stand-in", move |mut shutdown| async move {
        let _ = ran_tx.send(());
        shutdown.wait().await;
        assert!(shutdown.is_stopping());
        let _ = stopped_tx.send(());
    });
    let s = start(vec![task]).await;
    tokio::time::timeout(Duration::from_secs(5), ran_rx)
        .await
        .unwrap()
        .unwrap();
    s.stop().await;
    tokio::time::timeout(Duration::from_secs(5), stopped_rx)
        .await
        .unwrap()
        .unwrap();
}
