//! The dashboard at `/` in a real browser: Debian's `chromium`, driven
//! through `chromedriver` (WebDriver) by `fantoccini`, against a real
//! `sandboxer serve` with canaries on `local` and on a testbed host over
//! SSH. Signs in, sees the sandboxes, filters, opens one, extends it,
//! destroys it and sees it end; the hosts view shows the testbed host's
//! load, memory and disk; an agent's token shows that agent's sandboxes
//! only; the page loads nothing from anywhere else; a phone-width window
//! has no horizontal scroll. Screenshots go to
//! `target/test-artifacts/dashboard/` (and, with
//! `SANDBOXER_UPDATE_SCREENSHOTS=1`, the docs' copy to
//! `docs/images/dashboard.png`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::compose::Bed;
use crate::http::{token, Served};
use sandboxer_testkit::wait;

/// `chromedriver` on a free loopback port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(test: &str) -> Driver {
        for bin in ["chromedriver", "chromium"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if !found {
                sandboxer_testkit::testbed::missing(
                    test,
                    &format!("no `{bin}` on PATH"),
                    "run `scripts/testbed up` (it installs chromium and chromium-driver)",
                );
            }
        }
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        // Ready when its status says so (it answers within a second or two).
        let http = reqwest::blocking::Client::new();
        wait::until(Duration::from_secs(30), "chromedriver to be ready", || {
            http.get(format!("{url}/status"))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == json!(true))
                .then_some(())
        });
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("test-artifacts")
        .join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) -> PathBuf {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    let path = artifacts().join(format!("{name}.png"));
    std::fs::write(&path, &png).unwrap();
    path
}

/// Poll `js` (an expression) in the page until it is `true`; fail after
/// 20 s with `what` and the page's status line.
async fn until(c: &Client, what: &str, js: &str) {
    let holds = wait::within_async(Duration::from_secs(20), || async {
        let v = c
            .execute(&format!("return !!({js});"), vec![])
            .await
            .expect("script");
        (v == json!(true)).then_some(())
    })
    .await;
    if holds.is_none() {
        let status = c
            .execute(
                "return document.querySelector('#status').textContent + ' | ' + document.querySelector('#signin-error').textContent;",
                vec![],
            )
            .await
            .unwrap_or_default();
        panic!("waited 20s for {what} ({js}); page status: {status}");
    }
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.expect("script")
}

/// The ids in the sandboxes table, in order.
async fn rows(c: &Client) -> Vec<String> {
    let v = js(
        c,
        "return Array.from(document.querySelectorAll('#sandboxes tbody tr')).map(r => r.dataset.id);",
    )
    .await;
    serde_json::from_value(v).unwrap()
}

async fn sign_in_with_keyboard(c: &Client, token: &str) {
    let input = c.wait().for_element(Locator::Css("#token")).await.unwrap();
    input.send_keys(token).await.unwrap();
    input.send_keys(&Key::Enter).await.unwrap();
    until(
        c,
        "the signed-in view",
        "!document.querySelector('#nav').hidden",
    )
    .await;
}

async fn select(c: &Client, id: &str, value: &str) {
    js(
        c,
        &format!(
            "const s = document.querySelector('#{id}'); s.value = {}; s.dispatchEvent(new Event('change', {{bubbles: true}})); return true;",
            json!(value)
        ),
    )
    .await;
}

fn record(bed: &Bed, id: &str) -> Value {
    bed.home.run(&["get", id, "--json"]).ok().json()
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn dashboard_in_a_real_browser() {
    let test = "dashboard_in_a_real_browser";
    let bed = Bed::new(test);
    bed.write_hosts(&[bed.host("sandboxer01").capacity(4)]);
    let h = &bed.home;
    let adm = token(h, "adm:ops");
    let alice = token(h, "agt:alice");
    let bob = token(h, "agt:bob");
    let srv = Served::start(h, &["--reap-interval", "0s"]);
    // An operator's canary on local, one on the testbed host over SSH, and
    // one canary per agent.
    let local = srv
        .post(
            "/v1/sandboxes",
            &adm,
            json!({"ttl": "30m", "host": "local"}),
        )
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let remote = srv
        .post(
            "/v1/sandboxes",
            &adm,
            json!({"ttl": "30m", "host": "sandboxer01"}),
        )
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let alices = srv
        .post(
            "/v1/sandboxes",
            &alice,
            json!({"ttl": "20m", "host": "local"}),
        )
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let bobs = srv
        .post(
            "/v1/sandboxes",
            &bob,
            json!({"ttl": "20m", "host": "local"}),
        )
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let expires_before =
        chrono::DateTime::parse_from_rfc3339(record(&bed, &alices)["expires_at"].as_str().unwrap())
            .unwrap();

    let driver = Driver::start(test);
    let base = srv.base.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            }),
        );
        let c = ClientBuilder::native()
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("a WebDriver session with chromium");

        // Sign in as the operator (typing, then Enter).
        c.goto(&format!("{base}/")).await.unwrap();
        until(&c, "the sign-in form", "document.querySelector('#token')").await;
        sign_in_with_keyboard(&c, &adm).await;
        until(&c, "four sandboxes", "document.querySelectorAll('#sandboxes tbody tr').length === 4").await;
        let mut all = rows(&c).await;
        all.sort();
        let mut want = vec![local.clone(), remote.clone(), alices.clone(), bobs.clone()];
        want.sort();
        assert_eq!(all, want);
        // The countdown moves without a reload.
        let left = |id: &str| {
            format!("document.querySelector('tr[data-id=\"{id}\"] .left').textContent")
        };
        let first = js(&c, &format!("return {};", left(&local))).await;
        until(
            &c,
            "the countdown to move",
            &format!("{} !== {}", left(&local), first),
        )
        .await;
        // Nothing comes from anywhere but this server.
        let foreign = js(
            &c,
            "return performance.getEntriesByType('resource').map(r => r.name).filter(n => !n.startsWith(location.origin));",
        )
        .await;
        assert_eq!(foreign, json!([]), "the page loaded from elsewhere");
        shot(&c, "sandboxes").await;
        if std::env::var_os("SANDBOXER_UPDATE_SCREENSHOTS").is_some() {
            let png = c.screenshot().await.unwrap();
            std::fs::write(
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/images/dashboard.png"),
                png,
            )
            .unwrap();
        }

        // Filters: by host, then by actor.
        select(&c, "f-host", "sandboxer01").await;
        until(&c, "the host filter", &format!(
            "document.querySelectorAll('#sandboxes tbody tr').length === 1 && document.querySelector('#sandboxes tbody tr').dataset.id === '{remote}'"
        )).await;
        select(&c, "f-host", "").await;
        let actor = c.find(Locator::Css("#f-actor")).await.unwrap();
        actor.send_keys("agt:alice").await.unwrap();
        js(&c, "document.querySelector('#f-actor').dispatchEvent(new Event('change', {bubbles: true})); return true;").await;
        until(&c, "the actor filter", &format!(
            "document.querySelectorAll('#sandboxes tbody tr').length === 1 && document.querySelector('#sandboxes tbody tr').dataset.id === '{alices}'"
        )).await;

        // Open alice's sandbox (from the keyboard: Enter on its link),
        // extend it, destroy it.
        // The list is redrawn every refresh: a link found just before a
        // redraw is gone when the key arrives, so press Enter on the current
        // one until the page opens.
        let opened = format!(
            "!document.querySelector('#sandbox-view').hidden && document.querySelector('#d-title').textContent === '{alices}'"
        );
        for _ in 0..10 {
            if let Ok(link) = c
                .find(Locator::Css(&format!("tr[data-id=\"{alices}\"] a.open")))
                .await
            {
                let _ = link.send_keys(&Key::Enter).await;
            }
            let shown = wait::within_async(Duration::from_secs(2), || async {
                (js(&c, &format!("return {opened};")).await == json!(true)).then_some(())
            })
            .await;
            if shown.is_some() {
                break;
            }
        }
        until(&c, "the sandbox page", &opened).await;
        until(&c, "its lifecycle", "document.querySelector('#d-timeline').textContent.includes('ready')").await;
        until(&c, "its route", "document.querySelectorAll('#d-route tbody tr').length >= 1").await;
        until(&c, "its telemetry", "document.querySelector('#d-telemetry').textContent.includes('CPUs')").await;
        let by = c.find(Locator::Css("#extend-by")).await.unwrap();
        by.clear().await.unwrap();
        by.send_keys("10m").await.unwrap();
        c.find(Locator::Css("#extend")).await.unwrap().click().await.unwrap();
        until(&c, "the extension", "document.querySelector('#d-message').textContent.startsWith('Extended')").await;
        let after = chrono::DateTime::parse_from_rfc3339(
            record(&bed, &alices)["expires_at"].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!((after - expires_before).num_seconds(), 600, "extended by 10m");
        shot(&c, "sandbox").await;
        c.find(Locator::Css("#destroy")).await.unwrap().click().await.unwrap();
        c.accept_alert().await.expect("the destroy confirmation");
        until(&c, "the sandbox to end", "document.querySelector('#d-state').textContent.startsWith('destroyed')").await;
        assert_eq!(record(&bed, &alices)["state"], "destroyed");
        c.find(Locator::Css("a[href=\"#/sandboxes\"]")).await.unwrap().click().await.unwrap();
        until(&c, "the list without it", &format!(
            "!document.querySelector('#sandboxes-view').hidden && !document.querySelector('tr[data-id=\"{alices}\"]')"
        )).await;

        js(&c, "const a = document.querySelector('#f-actor'); a.value = ''; a.dispatchEvent(new Event('change', {bubbles: true})); return true;").await;
        until(&c, "the three left", "document.querySelectorAll('#sandboxes tbody tr').length === 3").await;

        // Hosts: the testbed host with its load, memory and disk as bars.
        c.goto(&format!("{base}/#/hosts")).await.unwrap();
        until(&c, "the testbed host's card", "document.querySelector('[data-host=\"sandboxer01\"] .badge.ok')").await;
        until(&c, "its bars", "document.querySelectorAll('[data-host=\"sandboxer01\"] meter').length === 4").await;
        let live = js(&c, "return document.querySelector('[data-host=\"sandboxer01\"]').textContent;").await;
        assert!(live.as_str().unwrap().contains("1 / 4"), "live/capacity: {live}");
        shot(&c, "hosts").await;

        // Credits and events answer for the operator.
        c.goto(&format!("{base}/#/credits")).await.unwrap();
        until(&c, "the spending chart", "document.querySelector('#chart svg')").await;
        c.goto(&format!("{base}/#/events")).await.unwrap();
        until(&c, "the outbox", "document.querySelector('#ev-depth')").await;

        // Phone width: no sideways scrolling.
        c.goto(&format!("{base}/#/sandboxes")).await.unwrap();
        c.set_window_size(390, 844).await.unwrap();
        until(&c, "the list", "document.querySelectorAll('#sandboxes tbody tr').length >= 1").await;
        let wide = js(&c, "return document.documentElement.scrollWidth - window.innerWidth;").await;
        assert!(wide.as_i64().unwrap() <= 0, "wider than the phone by {wide}px");
        shot(&c, "phone").await;
        c.set_window_size(1280, 900).await.unwrap();

        // An agent sees its own sandboxes only.
        c.find(Locator::Css("#signout")).await.unwrap().click().await.unwrap();
        sign_in_with_keyboard(&c, &bob).await;
        until(&c, "bob's list", "document.querySelectorAll('#sandboxes tbody tr').length >= 1").await;
        assert_eq!(rows(&c).await, vec![bobs.clone()]);
        let hidden = js(&c, "return document.querySelector('#f-actor-label').hidden;").await;
        assert_eq!(hidden, json!(true), "agents get no actor filter");
        c.goto(&format!("{base}/#/sandbox/{local}")).await.unwrap();
        until(&c, "another actor's sandbox to be not found", "document.querySelector('#status').textContent.includes('no sandbox')").await;
        c.goto(&format!("{base}/#/credits")).await.unwrap();
        until(&c, "bob's account only", "document.querySelectorAll('#accounts tbody tr').length === 1").await;
        let who = js(&c, "return document.querySelector('#accounts tbody tr').dataset.actor;").await;
        assert_eq!(who, json!("agt:bob"));

        // A revoked or wrong token is refused at sign-in.
        c.find(Locator::Css("#signout")).await.unwrap().click().await.unwrap();
        let input = c.wait().for_element(Locator::Css("#token")).await.unwrap();
        input.send_keys("sbxt_notatokenatall").await.unwrap();
        input.send_keys(&Key::Enter).await.unwrap();
        until(&c, "the refusal", "document.querySelector('#signin-error').textContent.length > 0").await;
        assert_eq!(js(&c, "return document.querySelector('#nav').hidden;").await, json!(true));
        c.close().await.unwrap();
    });
    drop(driver);
    for id in [&local, &remote, &bobs] {
        srv.call("DELETE", &format!("/v1/sandboxes/{id}"), Some(&adm), None)
            .expect(200);
    }
}
