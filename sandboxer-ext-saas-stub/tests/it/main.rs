//! ext.saas-stub against the real stub binary (`sandboxer-saas-stub`), one
//! stub process per test on a free loopback port.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sandboxer_core::clock::ManualClock;
use sandboxer_core::extension::{Extension, SandboxCtx};
use sandboxer_core::model::new_sandbox_id;
use sandboxer_core::transport::Transport;
use sandboxer_core::{Error, ErrorKind};
use sandboxer_ext_saas_stub::server::{Server, StubConfig};
use sandboxer_ext_saas_stub::{ApiKey, SaasConfig, SaasStubExtension};
use sandboxer_testkit::wait;
use serde_json::{json, Value};

const STUB: &str = env!("CARGO_BIN_EXE_sandboxer-saas-stub");
const DOMAIN: &str = "stub.test";

/// A running stub; killed when dropped.
struct Stub {
    child: Child,
    addr: SocketAddr,
    key: String,
    _stdout: Option<BufReader<ChildStdout>>,
}

impl Stub {
    fn start(capacity: usize) -> Stub {
        let key = format!("key-{}", new_sandbox_id());
        let child = Command::new(STUB)
            .args(["--bind", "127.0.0.1:0", "--domain", DOMAIN])
            .args(["--capacity", &capacity.to_string()])
            .env("SAAS_STUB_API_KEY", &key)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sandboxer-saas-stub");
        let mut stub = Stub {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            key,
            _stdout: None,
        };
        let stdout = stub.child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line);
            let _ = tx.send((read.map(|_| line), reader));
        });
        let (line, reader) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the stub printed nothing within 30 s");
        let line = line.expect("read the stub's stdout");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        stub.addr = addr.parse().expect("address");
        stub._stdout = Some(reader);
        stub
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn ext_with_key(&self, key: Option<&str>) -> Arc<SaasStubExtension> {
        Arc::new(
            SaasStubExtension::new(SaasConfig {
                base_url: self.url(),
                api_key: key.map(ApiKey::new),
                ..SaasConfig::default()
            })
            .expect("extension"),
        )
    }

    fn ext(&self) -> Arc<SaasStubExtension> {
        self.ext_with_key(Some(&self.key))
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A raw request with the right key.
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.url()))
            .header("X-API-Key", &self.key)
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop();
    }
}

fn transport() -> Arc<dyn Transport> {
    Arc::new(sandboxer_transport::LocalTransport::new(
        std::env::temp_dir(),
    ))
}

fn ctx_expiring(id: &str, ttl: Duration) -> SandboxCtx {
    SandboxCtx {
        id: id.to_string(),
        profile: "profile.saas".into(),
        profile_version: 1,
        actor: "agt:tester".parse().expect("actor"),
        config: json!({"template": "base"}).as_object().unwrap().clone(),
        inputs: Default::default(),
        host: "saas-stub".into(),
        transport: transport(),
        expires_at: Utc::now() + chrono::Duration::from_std(ttl).unwrap(),
        ready_timeout: Duration::from_secs(10),
        created_at: Utc::now(),
        price_per_hour: Default::default(),
        restore: None,
    }
}

fn ctx(id: &str) -> SandboxCtx {
    ctx_expiring(id, Duration::from_secs(300))
}

fn new_ctx() -> SandboxCtx {
    ctx(&new_sandbox_id())
}

async fn ready_handle(ext: &SaasStubExtension, ctx: &SandboxCtx) -> Value {
    let handle = ext.provision(ctx).await.expect("provision").handle;
    let deadline = tokio::time::Instant::now() + ctx.ready_timeout;
    let ready = ext.wait_ready(ctx, &handle, deadline).await.expect("ready");
    ready.handle.unwrap_or(handle)
}

async fn listed(ext: &SaasStubExtension, id: &str) -> bool {
    ext.list_resources(transport())
        .await
        .expect("list_resources")
        .iter()
        .any(|r| r.sandbox_id == id)
}

/// Every way an error can be shown.
fn renderings(e: &Error) -> String {
    let mut all = format!("{e}\n{e:?}\n{}\n", e.hint().unwrap_or(""));
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        all.push_str(&format!("{s}\n{s:?}\n"));
        source = s.source();
    }
    all
}

#[tokio::test]
async fn conformance() {
    let stub = Stub::start(8);
    let ext: Arc<dyn Extension> = stub.ext();
    sandboxer_testkit::conformance::run_conformance(ext, &ctx).await;
}

#[tokio::test]
async fn ready_sandbox_reachability_and_provider_record() {
    let stub = Stub::start(4);
    let ext = stub.ext();
    let mut ctx = new_ctx();
    ctx.inputs.insert("template".into(), "python".into());
    let handle = ext.provision(&ctx).await.expect("provision").handle;
    let provider_id = handle["sandboxID"].as_str().expect("sandboxID").to_string();
    let ready = ext
        .wait_ready(
            &ctx,
            &handle,
            tokio::time::Instant::now() + Duration::from_secs(10),
        )
        .await
        .expect("ready");
    let r = &ready.reachability;
    assert_eq!(r.address, format!("{provider_id}.{DOMAIN}"));
    assert_eq!(r.urls["sandbox"], format!("https://{provider_id}.{DOMAIN}"));
    assert_eq!(r.details["provider_id"], json!(provider_id));

    let detail: Value = stub
        .req(reqwest::Method::GET, &format!("/sandboxes/{provider_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The input wins over the route config's template.
    assert_eq!(detail["templateID"], "python");
    assert_eq!(detail["state"], "running");
    assert_eq!(detail["domain"], DOMAIN);
    assert_eq!(
        detail["metadata"],
        json!({"sandboxer_id": ctx.id, "actor": "agt:tester", "profile": "profile.saas"})
    );
    let started =
        chrono::DateTime::parse_from_rfc3339(detail["startedAt"].as_str().unwrap()).unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(detail["endAt"].as_str().unwrap()).unwrap();
    let timeout = (end - started).num_seconds();
    assert!(
        (299..=300).contains(&timeout),
        "timeout {timeout}s, want the TTL"
    );
    ext.teardown(&ctx, &handle).await.expect("teardown");
}

#[tokio::test]
async fn full_capacity_is_no_placement() {
    let stub = Stub::start(2);
    let ext = stub.ext();
    let (a, b, c) = (new_ctx(), new_ctx(), new_ctx());
    let ha = ext.provision(&a).await.expect("first");
    ext.provision(&b).await.expect("second");
    let err = ext.provision(&c).await.expect_err("third must be refused");
    assert_eq!(err.kind(), ErrorKind::NoPlacement, "{err:?}");
    assert!(err.message().contains("provider at capacity"), "{err}");
    assert!(
        !listed(&ext, &c.id).await,
        "a refused create left something"
    );

    let raw = stub
        .req(reqwest::Method::POST, "/sandboxes")
        .json(&json!({"templateID": "base"}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 429);
    assert_eq!(raw.json::<Value>().await.unwrap()["code"], 429);

    // A freed slot takes the next one.
    ext.teardown(&a, &ha.handle).await.expect("teardown");
    ext.provision(&c).await.expect("after a slot was freed");
}

#[tokio::test]
async fn wrong_or_missing_key_is_unauthorized_and_never_shown() {
    let stub = Stub::start(4);
    let secret = "wrong-Key-9f8e7d6c5b";
    let ext = stub.ext_with_key(Some(secret));
    let ctx = new_ctx();
    let mut shown = format!("{ext:?}\n{:?}\n", ext.config());

    let err = ext.provision(&ctx).await.expect_err("wrong key");
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err:?}");
    shown.push_str(&renderings(&err));
    let err = ext
        .list_resources(transport())
        .await
        .expect_err("wrong key");
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err:?}");
    shown.push_str(&renderings(&err));
    let err = ext
        .teardown(&ctx, &Value::Null)
        .await
        .expect_err("wrong key");
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err:?}");
    shown.push_str(&renderings(&err));
    assert!(!shown.contains(secret), "the key leaked:\n{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");

    // The right key must not leak either, when something else fails.
    let good = stub.ext();
    let err = good
        .extend(&ctx, &json!({"sandboxID": "inotthere"}), Utc::now())
        .await
        .expect_err("unknown sandbox");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    let shown = format!("{good:?}\n{}", renderings(&err));
    assert!(!shown.contains(&stub.key), "the key leaked:\n{shown}");

    // No key at all: refused before anything is sent.
    let keyless = stub.ext_with_key(None);
    let err = keyless.provision(&ctx).await.expect_err("no key");
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err:?}");
    assert!(err.hint().unwrap().contains("SANDBOXER_SAAS_STUB_API_KEY"));
}

/// The stub served from this process on a clock the test moves (it runs
/// until the test's runtime ends), its state, and the extension on it.
async fn stub_on_a_manual_clock() -> (
    Arc<ManualClock>,
    sandboxer_ext_saas_stub::server::StubState,
    Arc<SaasStubExtension>,
) {
    let clock = ManualClock::starting_now();
    let key = format!("key-{}", new_sandbox_id());
    let config = StubConfig {
        clock: clock.clone(),
        ..StubConfig::new(ApiKey::new(key.clone()))
    };
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let state = server.state().clone();
    let url = format!("http://{}", server.local_addr().unwrap());
    tokio::spawn(server.run(std::future::pending::<()>()));
    let ext = SaasStubExtension::new(SaasConfig {
        base_url: url,
        api_key: Some(ApiKey::new(key)),
        ..SaasConfig::default()
    })
    .expect("extension");
    (clock, state, Arc::new(ext))
}

#[tokio::test]
async fn the_stub_kills_a_sandbox_at_its_timeout() {
    // The stub in this process, on a clock the test moves.
    let (clock, _state, ext) = stub_on_a_manual_clock().await;
    let ctx = ctx_expiring(&new_sandbox_id(), Duration::from_secs(1));
    let handle = ready_handle(&ext, &ctx).await;
    assert!(listed(&ext, &ctx.id).await, "ready but not listed");

    // Its 1 s timeout on the provider's clock: there a millisecond before,
    // gone at it.
    clock.advance(Duration::from_millis(999));
    assert!(listed(&ext, &ctx.id).await, "killed early");
    clock.advance(Duration::from_millis(1));
    assert!(!listed(&ext, &ctx.id).await, "still listed at its timeout");

    // Now a ghost: not ready, not extendable, teardown still Ok.
    let err = ext
        .wait_ready(
            &ctx,
            &handle,
            tokio::time::Instant::now() + Duration::from_secs(5),
        )
        .await
        .expect_err("gone");
    assert_eq!(err.kind(), ErrorKind::ProvisionFailed, "{err:?}");
    let err = ext
        .extend(&ctx, &handle, Utc::now() + chrono::Duration::minutes(5))
        .await
        .expect_err("gone");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    ext.teardown(&ctx, &handle)
        .await
        .expect("teardown of a ghost");
}

#[tokio::test]
async fn a_paused_sandbox_outlives_its_timeout_and_a_snapshot_restores_at_the_provider() {
    let (clock, state, ext) = stub_on_a_manual_clock().await;
    let ctx = ctx_expiring(&new_sandbox_id(), Duration::from_secs(10));
    let handle = ready_handle(&ext, &ctx).await;
    ext.pause(&ctx, &handle).await.unwrap();
    assert_eq!((state.running(), state.paused()), (0, 1));
    // Paused, its 10 s pass at the provider and it is kept.
    clock.advance(Duration::from_secs(60));
    assert!(
        listed(&ext, &ctx.id).await,
        "a paused sandbox ended at its timeout"
    );
    let resources = ext.list_resources(transport()).await.unwrap();
    let mine = resources.iter().find(|r| r.sandbox_id == ctx.id).unwrap();
    assert!(!mine.running, "listed as running while paused: {mine:?}");

    let snap = sandboxer_core::snapshot::new_snapshot_id();
    let made = ext.snapshot(&ctx, &handle, &snap).await.unwrap();
    assert_eq!(state.snapshot_count(), 1);
    let resources = ext.list_resources(transport()).await.unwrap();
    assert!(
        resources.iter().any(|r| r.sandbox_id == snap),
        "{resources:?}"
    );

    // Resumed for a minute from now: it runs, and ends a minute later.
    let mut resumed = ctx.clone();
    resumed.expires_at = Utc::now() + chrono::Duration::seconds(60);
    let ready = ext
        .resume(
            &resumed,
            &handle,
            tokio::time::Instant::now() + Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(!ready.reachability.address.is_empty());
    assert_eq!((state.running(), state.paused()), (1, 0));

    // A new sandbox from the snapshot.
    let mut restored = ctx_expiring(&new_sandbox_id(), Duration::from_secs(30));
    restored.restore = Some(sandboxer_core::extension::Restore {
        snapshot_id: snap.clone(),
        handle: made.handle.clone(),
    });
    ready_handle(&ext, &restored).await;
    assert_eq!(state.running(), 2);

    // Deleting by name alone (the handle lost) finds it too.
    ext.delete_snapshot(transport(), &snap, &Value::Null)
        .await
        .unwrap();
    assert_eq!(state.snapshot_count(), 0);
    let mut gone = restored.clone();
    gone.id = new_sandbox_id();
    let err = ext.provision(&gone).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProvisionFailed, "{err:?}");
}

#[tokio::test]
async fn extend_moves_the_providers_deadline() {
    let stub = Stub::start(4);
    let ext = stub.ext();
    let ctx = ctx_expiring(&new_sandbox_id(), Duration::from_secs(2));
    let handle = ready_handle(&ext, &ctx).await;
    ext.extend(&ctx, &handle, Utc::now() + chrono::Duration::minutes(10))
        .await
        .expect("extend");
    // Also with a lost handle: found by its sandboxer id.
    ext.extend(
        &ctx,
        &Value::Null,
        Utc::now() + chrono::Duration::minutes(10),
    )
    .await
    .expect("extend with a Null handle");
    let id = handle["sandboxID"].as_str().unwrap();
    let detail: Value = stub
        .req(reqwest::Method::GET, &format!("/sandboxes/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(detail["endAt"].as_str().unwrap()).unwrap();
    let left = end.with_timezone(&Utc) - Utc::now();
    assert!(
        left > chrono::Duration::minutes(9),
        "endAt not moved: {detail}"
    );
    ext.teardown(&ctx, &handle).await.expect("teardown");
}

#[tokio::test]
async fn a_stub_that_is_down_is_unreachable_quickly() {
    let mut stub = Stub::start(4);
    stub.stop();
    // Nothing answers at the configured address. (The stopped stub's own
    // port could be taken by another test's server meanwhile.)
    let closed = sandboxer_testkit::net::ClosedPort::new().unwrap();
    let ext = Arc::new(
        SaasStubExtension::new(SaasConfig {
            base_url: closed.url(),
            api_key: Some(ApiKey::new(stub.key.clone())),
            ..SaasConfig::default()
        })
        .expect("extension"),
    );
    let ctx = new_ctx();
    let started = Instant::now();
    let err = ext.provision(&ctx).await.expect_err("stub is down");
    let took = started.elapsed();
    eprintln!("provision against a stopped stub failed after {took:?}");
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let err = ext.list_resources(transport()).await.expect_err("down");
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err:?}");
    let err = ext.teardown(&ctx, &Value::Null).await.expect_err("down");
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err:?}");
    assert!(!renderings(&err).contains(&stub.key));
}

#[tokio::test]
async fn delete_twice_is_ok() {
    let stub = Stub::start(4);
    let ext = stub.ext();
    let ctx = new_ctx();
    let handle = ready_handle(&ext, &ctx).await;
    ext.teardown(&ctx, &handle).await.expect("first teardown");
    ext.teardown(&ctx, &handle).await.expect("second teardown");
    ext.teardown(&ctx, &Value::Null).await.expect("Null handle");

    // The wire: 204, then 404.
    let id = handle["sandboxID"].as_str().unwrap();
    let ctx2 = new_ctx();
    let h2 = ext.provision(&ctx2).await.unwrap().handle;
    let id2 = h2["sandboxID"].as_str().unwrap();
    assert_ne!(id, id2);
    let del = |id: &str| {
        let req = stub.req(reqwest::Method::DELETE, &format!("/sandboxes/{id}"));
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(del(id2).await, 204);
    assert_eq!(del(id2).await, 404);
    assert_eq!(del(id).await, 404);
}

#[tokio::test]
async fn route_config_base_url_overrides_the_default() {
    let stub = Stub::start(4);
    // The default points nowhere (port 9 on loopback: refused).
    let ext = SaasStubExtension::new(SaasConfig {
        base_url: "http://127.0.0.1:9".into(),
        api_key: Some(ApiKey::new(stub.key.clone())),
        ..SaasConfig::default()
    })
    .unwrap();
    let mut ctx = new_ctx();
    ctx.config.insert("base_url".into(), json!(stub.url()));
    let handle = ready_handle(&ext, &ctx).await;
    ext.teardown(&ctx, &handle).await.expect("teardown");

    ctx.config.insert("base_url".into(), json!("not a url"));
    let err = ext.provision(&ctx).await.expect_err("bad base_url");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err:?}");
}

#[tokio::test]
async fn the_http_api() {
    let stub = Stub::start(4);
    let client = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", stub.url());

    // 401 without a key and with another key, as JSON.
    let r = client.get(url("/sandboxes")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], 401);
    let r = client
        .get(url("/sandboxes"))
        .header("X-API-Key", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // 400 with a message on bad bodies.
    use reqwest::Method;
    let r = stub
        .req(Method::POST, "/sandboxes")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("invalid request body"),
        "{body}"
    );
    for bad in [
        json!({}),
        json!({"templateID": ""}),
        json!({"templateID": "b", "timeout": 0}),
        json!({"templateID": "b", "timeout": -1}),
    ] {
        let r = stub
            .req(Method::POST, "/sandboxes")
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }

    // 201 with the E2B fields; the default timeout is 15 s.
    let r = stub
        .req(Method::POST, "/sandboxes")
        .json(&json!({"templateID": "base", "metadata": {"team": "a b&c"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let id = created["sandboxID"].as_str().unwrap().to_string();
    assert_eq!(created["templateID"], "base");
    assert_eq!(created["domain"], DOMAIN);
    assert!(created["clientID"].as_str().is_some_and(|c| !c.is_empty()));

    let detail: Value = stub
        .req(Method::GET, &format!("/sandboxes/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let started =
        chrono::DateTime::parse_from_rfc3339(detail["startedAt"].as_str().unwrap()).unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(detail["endAt"].as_str().unwrap()).unwrap();
    assert_eq!((end - started).num_seconds(), 15);
    assert_eq!(detail["state"], "running");

    // The metadata filter (form encoded inside the query parameter).
    let list = |filter: &'static str| {
        let req = stub.req(Method::GET, "/sandboxes");
        async move {
            req.query(&[("metadata", filter)])
                .send()
                .await
                .unwrap()
                .json::<Vec<Value>>()
                .await
                .unwrap()
        }
    };
    assert_eq!(list("team=a+b%26c").await.len(), 1);
    assert_eq!(list("team=other").await.len(), 0);

    // Timeout: 204, moves endAt; 400 on a bad one; 404 on an unknown id.
    let r = stub
        .req(Method::POST, &format!("/sandboxes/{id}/timeout"))
        .json(&json!({"timeout": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = stub
        .req(Method::POST, &format!("/sandboxes/{id}/timeout"))
        .json(&json!({"timeout": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = stub
        .req(Method::POST, "/sandboxes/inope/timeout")
        .json(&json!({"timeout": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // 404 as JSON for an unknown id.
    let r = stub
        .req(Method::GET, "/sandboxes/inope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], 404);

    let r = stub
        .req(Method::DELETE, &format!("/sandboxes/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let all: Vec<Value> = stub
        .req(Method::GET, "/sandboxes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(all.is_empty(), "{all:?}");
}

#[tokio::test]
async fn sigterm_stops_the_stub_cleanly() {
    let mut stub = Stub::start(4);
    let pid = stub.child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait::exit_of(&mut stub.child, Duration::from_secs(10))
        .expect("the stub ignored SIGTERM for 10 s");
    assert!(status.success(), "{status:?}");
}

#[test]
fn help_never_shows_the_key_from_the_environment() {
    let out = Command::new(STUB)
        .arg("--help")
        .env("SAAS_STUB_API_KEY", "env-s3cret-value")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("SAAS_STUB_API_KEY"), "{text}");
    assert!(!text.contains("env-s3cret-value"), "{text}");
}

#[test]
fn the_stub_refuses_to_start_without_a_key() {
    let out = Command::new(STUB)
        .args(["--bind", "127.0.0.1:0"])
        .env_remove("SAAS_STUB_API_KEY")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--api-key"));
}

/// A proxy in front of `to` that forwards every request but, for the first
/// `POST /v2/sandboxes`, closes the connection once the provider has
/// answered, without passing the answer on: the create happened, its
/// answer was lost.
async fn lossy_proxy(to: SocketAddr) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let creates = Arc::new(AtomicUsize::new(0));
    let seen = creates.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                // One request per connection (the client sends
                // `Connection: close`-free requests, but each test request
                // here is small enough to arrive in one read).
                let mut buf = vec![0u8; 64 * 1024];
                let n = client.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let mut upstream = tokio::net::TcpStream::connect(to).await.unwrap();
                // Ask the provider to close after answering, so its answer
                // ends at EOF.
                let req = head.replacen("\r\n", "\r\nConnection: close\r\n", 1);
                upstream.write_all(req.as_bytes()).await.unwrap();
                let mut answer = Vec::new();
                upstream.read_to_end(&mut answer).await.unwrap();
                let create = head.starts_with("POST /v2/sandboxes ");
                if create && seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    // The create was made; its answer is lost.
                    drop(client);
                    return;
                }
                let _ = client.write_all(&answer).await;
                let _ = client.shutdown().await;
            });
        }
    });
    (addr, creates)
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_sent_again_and_makes_one_sandbox() {
    let stub = Stub::start(4);
    let (proxy, creates) = lossy_proxy(stub.addr).await;
    let ext = SaasStubExtension::new(SaasConfig {
        base_url: format!("http://{proxy}"),
        api_key: Some(ApiKey::new(&stub.key)),
        ..SaasConfig::default()
    })
    .unwrap();
    let ctx = new_ctx();
    let handle = ext.provision(&ctx).await.expect("the second send answers");
    assert_eq!(
        creates.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the create went out twice"
    );
    // One sandbox at the provider, the one the handle names.
    let all: Value = stub
        .req(reqwest::Method::GET, "/v2/sandboxes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sandboxID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [handle.handle["sandboxID"].as_str().unwrap()], "{all}");
    ext.teardown(&ctx, &handle.handle).await.unwrap();
}

#[tokio::test]
async fn the_stub_speaks_e2b_v2_lists_and_idempotent_creates() {
    use reqwest::Method;
    let stub = Stub::start(8);
    let body =
        |team: &str| json!({"templateID": "base", "timeout": 60, "metadata": {"team": team}});
    let create = |key: Option<&str>, team: &str| {
        let mut r = stub.req(Method::POST, "/v2/sandboxes").json(&body(team));
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        r.send()
    };
    let a: Value = create(Some("k1"), "a b")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let again: Value = create(Some("k1"), "a b")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["sandboxID"], again["sandboxID"], "one key, one sandbox");
    assert_eq!(a["envdVersion"], "0.2.4");
    for _ in 0..3 {
        create(None, "other").await.unwrap();
    }
    // The metadata filter in E2B's encoding, and pages of two.
    let q = sandboxer_core::e2b::metadata_query(&[("team", "a b")]);
    let r = stub
        .req(Method::GET, "/v2/sandboxes")
        .query(&[("metadata", q.as_str())])
        .send()
        .await
        .unwrap();
    let found: Value = r.json().await.unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["sandboxID"], a["sandboxID"]);
    assert_eq!(found[0]["diskSizeMB"], 1024);
    let mut seen = 0;
    let mut next: Option<String> = None;
    loop {
        let mut q = vec![("limit", "2".to_string())];
        if let Some(t) = &next {
            q.push(("nextToken", t.clone()));
        }
        let r = stub
            .req(Method::GET, "/v2/sandboxes")
            .query(&q)
            .send()
            .await
            .unwrap();
        next = r
            .headers()
            .get("x-next-token")
            .map(|v| v.to_str().unwrap().to_string());
        let page: Value = r.json().await.unwrap();
        assert!(page.as_array().unwrap().len() <= 2);
        seen += page.as_array().unwrap().len();
        if next.is_none() {
            break;
        }
    }
    assert_eq!(seen, 4, "every sandbox, a page at a time");
    let paused: Value = stub
        .req(Method::GET, "/v2/sandboxes?state=paused")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paused, json!([]));
    // Connect moves the timeout.
    let id = a["sandboxID"].as_str().unwrap();
    let r = stub
        .req(Method::POST, &format!("/v2/sandboxes/{id}/connect"))
        .json(&json!({"timeout": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = stub
        .req(Method::GET, &format!("/sandboxes/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(d["endAt"].as_str().unwrap()).unwrap();
    let left = (end.with_timezone(&Utc) - Utc::now()).num_seconds();
    assert!((590..=600).contains(&left), "{left}");
}
