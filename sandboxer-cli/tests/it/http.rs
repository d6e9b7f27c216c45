//! The HTTP API: the real `sandboxer serve` on loopback, a real HTTP client,
//! real canaries on `local`. The lifecycle over HTTP (records equal to the
//! CLI's `--json`), the access matrix for every route of the OpenAPI
//! document, a property-based fuzz of every operation with no 5xx, CLI and
//! server creating against one store at once, the reaper on its interval,
//! graceful SIGTERM, and `sandboxer tokens`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::blocking::Client;
use sandboxer_testkit::home::Home;
use sandboxer_testkit::wait;
use serde_json::{json, Value};

use crate::home;

/// A running `sandboxer serve` against a home.
pub(crate) struct Served {
    child: Child,
    pub base: String,
    pub http: Client,
}

impl Served {
    pub fn start(h: &Home, extra: &[&str]) -> Served {
        Served::start_logged(h, extra, "serve.log")
    }

    /// [`Served::start`] with its log in `log` (several servers on one home).
    pub fn start_logged(h: &Home, extra: &[&str], log_name: &str) -> Served {
        let mut args = vec!["serve", "--bind", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let log = std::fs::File::create(h.dir.path().join(log_name)).unwrap();
        let mut child = h
            .command(&args)
            .env("SANDBOXER_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting sandboxer serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!(
                    "serve did not start: {line:?}\n{}",
                    std::fs::read_to_string(h.dir.path().join(log_name)).unwrap_or_default()
                )
            })
            .to_string();
        Served {
            child,
            base: format!("http://{addr}"),
            http: Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }

    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Reply {
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
        let resp = rb.send().unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let text = resp.text().unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{method} {path}: {status} with a body that is not JSON ({e}): {text:?}")
        });
        assert!(
            ctype.starts_with("application/json"),
            "{method} {path}: {ctype}"
        );
        Reply {
            status,
            json,
            location,
        }
    }

    pub fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None)
    }

    pub fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("POST", path, Some(token), Some(&body.to_string()))
    }

    /// SIGTERM, then the exit code (killed after 30s).
    fn stop(mut self) -> Option<i32> {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        wait::exit_of(&mut self.child, Duration::from_secs(30)).and_then(|st| st.code())
    }
}

impl Served {
    /// SIGKILL, as a crash or an OOM kill does.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub json: Value,
    pub location: Option<String>,
}

impl Reply {
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.json);
        self.json
    }
    pub fn id(&self) -> String {
        self.json["id"].as_str().expect("a record").to_string()
    }
}

pub(crate) fn token(h: &Home, actor: &str) -> String {
    h.run(&["tokens", "add", "--actor", actor, "--json"])
        .ok()
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Destroy every live sandbox of the home and check no venue is left.
pub(crate) fn destroy_all(h: &Home) {
    let live = h.run(&["list", "--live", "--json"]).ok().json();
    for r in live.as_array().unwrap() {
        h.run(&["destroy", r["id"].as_str().unwrap()]);
    }
    let venues = crate::canary::venues(&h.data);
    assert!(venues.is_empty(), "venues left: {venues:?}");
}

const CONTRACT: &[&str] = &[
    "id",
    "profile",
    "profile_version",
    "extension",
    "host",
    "state",
    "reason",
    "actor",
    "created_at",
    "ready_at",
    "expires_at",
    "ended_at",
    "inputs",
    "reachability",
    "route",
    "recreated_from",
    "recreated_as",
    "cost",
];

#[test]
fn the_whole_lifecycle_over_http_gives_the_cli_records() {
    let h = home();
    let adm = token(&h, "adm:ops");
    let agt = token(&h, "agt:harness");
    let s = Served::start(&h, &["--reap-interval", "0s"]);

    assert_eq!(
        s.call("GET", "/healthz", None, None).expect(200)["status"],
        "ok"
    );

    // Create (the curl: the canary profile, as the agent).
    let r = s.post(
        "/v1/sandboxes",
        &agt,
        json!({"profile": "profile.sandbox-canary"}),
    );
    assert_eq!(r.status, 201, "{}", r.json);
    let id = r.id();
    assert_eq!(
        r.location.as_deref(),
        Some(format!("/v1/sandboxes/{id}").as_str())
    );
    let rec = r.json;
    assert_eq!(rec["state"], "ready");
    assert_eq!(rec["actor"], "agt:harness");
    assert_eq!(rec["extension"], "ext.canary");
    for f in CONTRACT {
        assert!(rec.get(*f).is_some(), "field {f} in {rec}");
    }
    assert!(rec.get("backend").is_none(), "backend is private");

    // The same record the CLI prints.
    let got = s.get(&format!("/v1/sandboxes/{id}"), &agt).expect(200);
    assert_eq!(got, h.run(&["get", &id, "--json"]).ok().json());

    // List with filters.
    let list = s
        .get("/v1/sandboxes?live&actor=agt:harness", &adm)
        .expect(200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let list = s
        .get("/v1/sandboxes?state=destroyed,failed", &adm)
        .expect(200);
    assert!(list.as_array().unwrap().is_empty());
    assert_eq!(
        s.get("/v1/sandboxes", &adm).expect(200),
        h.run(&["list", "--json"]).ok().json()
    );

    // Extend within the maximum; beyond it is 400.
    let ext = s
        .post(
            &format!("/v1/sandboxes/{id}/extend-ttl"),
            &agt,
            json!({"by": "10m"}),
        )
        .expect(200);
    assert_eq!(
        ext["ttl_seconds"],
        rec["ttl_seconds"].as_u64().unwrap() + 600
    );
    let r = s.post(
        &format!("/v1/sandboxes/{id}/extend-ttl"),
        &agt,
        json!({"by": "400d"}),
    );
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (400, Some("invalid_input"))
    );
    let r = s.post(&format!("/v1/sandboxes/{id}/extend-ttl"), &agt, json!({}));
    assert_eq!(r.status, 400);
    assert!(
        r.json["message"].as_str().unwrap().contains("`by`"),
        "{}",
        r.json
    );

    // Idempotency key: the header or the field; a different request is 409.
    let key = |body: Value| {
        s.http
            .post(format!("{}/v1/sandboxes", s.base))
            .bearer_auth(&agt)
            .header("Idempotency-Key", "ci-run-4711")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let first = key(json!({}));
    assert_eq!(first.status().as_u16(), 201);
    let first: Value = first.json().unwrap();
    let again = key(json!({}));
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(again.json::<Value>().unwrap()["id"], first["id"]);
    let again = s.post(
        "/v1/sandboxes",
        &agt,
        json!({"idempotency_key": "ci-run-4711"}),
    );
    assert_eq!(
        (again.status, again.id()),
        (200, first["id"].as_str().unwrap().to_string())
    );
    let other = key(json!({"ttl": "5m"}));
    assert_eq!(other.status().as_u16(), 409);
    assert_eq!(other.json::<Value>().unwrap()["code"], "conflict");

    // wait: false answers 202 in provisioning; the server finishes it.
    let r = s.post("/v1/sandboxes", &agt, json!({"wait": false}));
    assert_eq!(
        (r.status, r.json["state"].as_str()),
        (202, Some("provisioning"))
    );
    let bg = r.id();
    wait::until(Duration::from_secs(60), format!("{bg} to be ready"), || {
        let st = s.get(&format!("/v1/sandboxes/{bg}"), &agt).expect(200)["state"].clone();
        if st != "ready" {
            assert_eq!(st, "provisioning");
        }
        (st == "ready").then_some(())
    });

    // Recreate: a new one, linked; the old one ends `recreated`.
    let new = s
        .post(&format!("/v1/sandboxes/{id}/recreate"), &agt, json!({}))
        .expect(201);
    let new_id = new["id"].as_str().unwrap().to_string();
    assert_eq!(new["recreated_from"], id.as_str());
    assert_eq!(new["state"], "ready");
    let old = s.get(&format!("/v1/sandboxes/{id}"), &agt).expect(200);
    assert_eq!(
        (old["state"].as_str(), old["reason"].as_str()),
        (Some("destroyed"), Some("recreated"))
    );
    assert_eq!(old["recreated_as"], new_id.as_str());
    let r = s.post(&format!("/v1/sandboxes/{id}/recreate"), &agt, json!({}));
    assert_eq!((r.status, r.json["code"].as_str()), (409, Some("conflict")));

    // Destroy, twice.
    let d = s
        .call(
            "DELETE",
            &format!("/v1/sandboxes/{new_id}"),
            Some(&agt),
            None,
        )
        .expect(200);
    assert_eq!(
        (d["state"].as_str(), d["reason"].as_str()),
        (Some("destroyed"), Some("destroyed"))
    );
    let d2 = s
        .call(
            "DELETE",
            &format!("/v1/sandboxes/{new_id}"),
            Some(&agt),
            None,
        )
        .expect(200);
    assert_eq!(d2, d);

    // Profiles, route explain, hosts, telemetry, stale, reap, credits.
    let profiles = s.get("/v1/profiles", &agt).expect(200);
    assert!(profiles
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["id"] == "profile.sandbox-canary" && p["available"] == true));
    assert_eq!(profiles, h.run(&["profiles", "list", "--json"]).ok().json());
    let p = s.get("/v1/profiles/profile.compose-e2e", &agt).expect(200);
    assert_eq!(
        p,
        h.run(&["profiles", "show", "profile.compose-e2e", "--json"])
            .ok()
            .json()
    );
    let d = s
        .get("/v1/route/explain?profile=profile.sandbox-canary", &agt)
        .expect(200);
    assert_eq!(d["candidates"][0]["extension"], "ext.canary");
    assert_eq!(d["candidates"][0]["host"], "local");
    let hosts = s.get("/v1/hosts", &agt).expect(200);
    assert_eq!(hosts[0]["name"], "local");
    assert_eq!(hosts[0]["reachable"], true);
    let inv = s.get("/v1/hosts/local/telemetry", &adm).expect(200);
    assert!(inv["cpus"].as_u64().unwrap() >= 1, "{inv}");
    let stale = s.get("/v1/stale?grace=0s", &adm).expect(200);
    assert!(stale["items"].as_array().unwrap().is_empty(), "{stale}");
    let reap = s
        .post("/v1/reap-stale", &adm, json!({"dry_run": true}))
        .expect(200);
    assert_eq!(reap["ok"], true);
    let bal = s.get("/v1/credits/balance", &agt).expect(200);
    assert_eq!(bal["actor"], "agt:harness");
    let usage = s.get("/v1/credits/usage", &agt).expect(200);
    assert_eq!(usage["usage"], json!([]));

    // The rest, then nothing is left behind.
    for r in s
        .get("/v1/sandboxes?live", &agt)
        .expect(200)
        .as_array()
        .unwrap()
    {
        s.call(
            "DELETE",
            &format!("/v1/sandboxes/{}", r["id"].as_str().unwrap()),
            Some(&agt),
            None,
        )
        .expect(200);
    }
    assert_eq!(s.stop(), Some(0));
    destroy_all(&h);
}

/// Every operation id of the served document, with its method and path.
fn operations(doc: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((
                op["operationId"].as_str().unwrap().to_string(),
                method.clone(),
                path.clone(),
            ));
        }
    }
    out
}

#[test]
fn the_access_matrix_holds_for_every_route() {
    let h = home();
    let adm = token(&h, "adm:ops");
    let agt = token(&h, "agt:harness");
    let atm = token(&h, "atm:nightly");
    let s = Served::start(&h, &["--reap-interval", "0s"]);
    let doc = s.call("GET", "/openapi.json", None, None).expect(200);

    // Fixtures: one sandbox of the operator, one of the agent.
    let a = s.post("/v1/sandboxes", &adm, json!({})).expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = s.post("/v1/sandboxes", &agt, json!({})).expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Snapshots: the operator's of a, two of the agent's of b.
    let snap = |who: &str, of: &str| {
        s.post(&format!("/v1/sandboxes/{of}/snapshots"), who, json!({}))
            .expect(201)["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (sa, sb, sc) = (snap(&adm, &a), snap(&agt, &b), snap(&agt, &b));

    let callers: [(&str, Option<&str>); 5] = [
        ("adm", Some(&adm)),
        ("agt", Some(&agt)),
        ("atm", Some(&atm)),
        ("none", None),
        ("wrong", Some("sbxt_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")),
    ];
    let mut covered = BTreeSet::new();
    // (operation, method, path, body, expected for adm, agt, atm); none and
    // wrong are 401 on every /v1 route and as adm on the public ones.
    // Destructive rows list the non-owners first.
    type Row<'a> = (&'a str, &'a str, String, Option<Value>, [u16; 3]);
    let rows: Vec<Row> = vec![
        ("health", "GET", "/healthz".into(), None, [200, 200, 200]),
        (
            "openapi",
            "GET",
            "/openapi.json".into(),
            None,
            [200, 200, 200],
        ),
        ("whoami", "GET", "/v1/whoami".into(), None, [200, 200, 200]),
        (
            "listSandboxes",
            "GET",
            "/v1/sandboxes".into(),
            None,
            [200, 200, 200],
        ),
        (
            "dashboard",
            "GET",
            "/v1/dashboard".into(),
            None,
            [200, 200, 200],
        ),
        (
            "getSandbox",
            "GET",
            format!("/v1/sandboxes/{a}"),
            None,
            [200, 404, 404],
        ),
        (
            "getSandbox",
            "GET",
            format!("/v1/sandboxes/{b}"),
            None,
            [200, 200, 404],
        ),
        (
            "extendSandboxTtl",
            "POST",
            format!("/v1/sandboxes/{a}/extend-ttl"),
            Some(json!({"by": "1m"})),
            [200, 404, 404],
        ),
        (
            "extendSandboxTtl",
            "POST",
            format!("/v1/sandboxes/{b}/extend-ttl"),
            Some(json!({"by": "1m"})),
            [200, 200, 404],
        ),
        // Paused by the operator, then paused already; resumed, then
        // running already: both answer the record.
        (
            "pauseSandbox",
            "POST",
            format!("/v1/sandboxes/{a}/pause"),
            None,
            [200, 404, 404],
        ),
        (
            "resumeSandbox",
            "POST",
            format!("/v1/sandboxes/{a}/resume"),
            None,
            [200, 404, 404],
        ),
        (
            "pauseSandbox",
            "POST",
            format!("/v1/sandboxes/{b}/pause"),
            None,
            [200, 200, 404],
        ),
        (
            "resumeSandbox",
            "POST",
            format!("/v1/sandboxes/{b}/resume"),
            None,
            [200, 200, 404],
        ),
        (
            "snapshotSandbox",
            "POST",
            format!("/v1/sandboxes/{b}/snapshots"),
            None,
            [201, 201, 404],
        ),
        (
            "listSnapshots",
            "GET",
            "/v1/snapshots".into(),
            None,
            [200, 200, 200],
        ),
        (
            "listSnapshots",
            "GET",
            "/v1/snapshots?actor=agt:harness".into(),
            None,
            [200, 200, 403],
        ),
        (
            "getSnapshot",
            "GET",
            format!("/v1/snapshots/{sa}"),
            None,
            [200, 404, 404],
        ),
        (
            "getSnapshot",
            "GET",
            format!("/v1/snapshots/{sb}"),
            None,
            [200, 200, 404],
        ),
        // Deleted by the operator; deleting it again answers it.
        (
            "deleteSnapshot",
            "DELETE",
            format!("/v1/snapshots/{sb}"),
            None,
            [200, 200, 404],
        ),
        (
            "listProfiles",
            "GET",
            "/v1/profiles".into(),
            None,
            [200, 200, 200],
        ),
        (
            "getProfile",
            "GET",
            "/v1/profiles/profile.sandbox-canary".into(),
            None,
            [200, 200, 200],
        ),
        (
            "explainRoute",
            "GET",
            "/v1/route/explain".into(),
            None,
            [200, 200, 200],
        ),
        (
            "explainRoute",
            "GET",
            "/v1/route/explain?actor=adm:ops".into(),
            None,
            [200, 403, 403],
        ),
        (
            "listHosts",
            "GET",
            "/v1/hosts".into(),
            None,
            [200, 200, 200],
        ),
        (
            "hostTelemetry",
            "GET",
            "/v1/hosts/local/telemetry".into(),
            None,
            [200, 403, 403],
        ),
        (
            "inspectStale",
            "GET",
            "/v1/stale".into(),
            None,
            [200, 403, 403],
        ),
        (
            "reapStale",
            "POST",
            "/v1/reap-stale".into(),
            Some(json!({"dry_run": true})),
            [200, 403, 403],
        ),
        (
            "creditsBalance",
            "GET",
            "/v1/credits/balance".into(),
            None,
            [200, 200, 200],
        ),
        (
            "creditsBalance",
            "GET",
            "/v1/credits/balance?actor=adm:ops".into(),
            None,
            [200, 403, 403],
        ),
        (
            "grantCredits",
            "POST",
            "/v1/credits/grants".into(),
            Some(json!({"actor": "atm:nightly", "amount": "1"})),
            [201, 403, 403],
        ),
        (
            "creditsLedger",
            "GET",
            "/v1/credits/ledger".into(),
            None,
            [200, 200, 200],
        ),
        (
            "creditsLedger",
            "GET",
            "/v1/credits/ledger?actor=atm:nightly".into(),
            None,
            [200, 403, 200],
        ),
        (
            "creditsUsage",
            "GET",
            "/v1/credits/usage".into(),
            None,
            [200, 200, 200],
        ),
        (
            "creditsUsage",
            "GET",
            "/v1/credits/usage?actor=agt:harness".into(),
            None,
            [200, 200, 403],
        ),
        (
            "creditsCheck",
            "GET",
            "/v1/credits/check".into(),
            None,
            [200, 403, 403],
        ),
        (
            "createSandbox",
            "POST",
            "/v1/sandboxes".into(),
            Some(json!({})),
            [201, 201, 201],
        ),
        (
            "createSandbox",
            "POST",
            "/v1/sandboxes".into(),
            Some(json!({"actor": "adm:ops"})),
            [201, 403, 403],
        ),
    ];
    let public = ["health", "openapi"];
    for (op, method, path, body, expected) in &rows {
        covered.insert(op.to_string());
        // Non-owners first, so a destructive call by the owner comes last.
        for i in [2usize, 1, 0, 3, 4] {
            let (who, tok) = callers[i];
            let want = if i < 3 {
                expected[i]
            } else if public.contains(op) {
                200
            } else {
                401
            };
            let r = s.call(
                method,
                path,
                tok,
                body.as_ref().map(|b| b.to_string()).as_deref(),
            );
            assert_eq!(r.status, want, "{who} {method} {path}: {}", r.json);
            if want >= 400 {
                assert!(
                    r.json["code"].is_string() && r.json["message"].is_string(),
                    "{}",
                    r.json
                );
            }
        }
    }
    // Recreate and destroy consume their sandbox: others' is 404 and leaves
    // it alone, no token is 401, then the owner or adm succeeds.
    let recreate = |tok: Option<&str>, id: &str| {
        s.call(
            "POST",
            &format!("/v1/sandboxes/{id}/recreate"),
            tok,
            Some("{}"),
        )
    };
    let del = |tok: Option<&str>, id: &str| {
        s.call("DELETE", &format!("/v1/sandboxes/{id}"), tok, None)
            .status
    };
    for (tok, want) in [(Some(&atm), 404), (Some(&agt), 404), (None, 401)] {
        assert_eq!(recreate(tok.map(String::as_str), &a).status, want);
        assert_eq!(del(tok.map(String::as_str), &a), want);
    }
    assert_eq!(
        s.get(&format!("/v1/sandboxes/{a}"), &adm).expect(200)["state"],
        "ready"
    );
    let a2 = recreate(Some(&adm), &a).id();
    assert_eq!(recreate(Some(&atm), &b).status, 404);
    let b2 = recreate(Some(&agt), &b).id();
    assert_eq!(del(Some(&atm), &b2), 404);
    assert_eq!(del(Some(&agt), &b2), 200);
    assert_eq!(del(Some(&agt), &a2), 404);
    assert_eq!(del(Some(&adm), &a2), 200);
    covered.insert("recreateSandbox".to_string());
    covered.insert("destroySandbox".to_string());

    // Lists are scoped: the agent sees its own only, the operator all.
    let mine = s.get("/v1/sandboxes", &agt).expect(200);
    assert!(mine
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["actor"] == "agt:harness"));
    let theirs = s.get("/v1/sandboxes?actor=adm:ops", &atm).expect(200);
    assert_eq!(theirs, json!([]));
    let all = s.get("/v1/sandboxes", &adm).expect(200);
    let actors: BTreeSet<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["actor"].as_str().unwrap())
        .collect();
    assert_eq!(
        actors,
        BTreeSet::from(["adm:ops", "agt:harness", "atm:nightly"])
    );
    for r in s
        .get("/v1/sandboxes?live", &adm)
        .expect(200)
        .as_array()
        .unwrap()
    {
        assert_eq!(del(Some(&adm), r["id"].as_str().unwrap()), 200);
    }

    // Uploads: any token uploads; each actor lists and deletes its own,
    // `adm` every one; another actor's is 404; no token is 401.
    let up = crate::security::upload_of(&s, &agt, &[("f", "x")]);
    for tok in [None, Some("sbxt_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")] {
        assert_eq!(s.call("GET", "/v1/uploads", tok, None).status, 401);
        assert_eq!(s.call("POST", "/v1/uploads", tok, Some("x")).status, 401);
        let path = format!("/v1/uploads/{up}");
        assert_eq!(s.call("DELETE", &path, tok, None).status, 401);
    }
    let listed = |tok: &str| -> Vec<String> {
        s.get("/v1/uploads", tok)
            .expect(200)
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed(&agt), std::slice::from_ref(&up));
    assert_eq!(listed(&adm), std::slice::from_ref(&up));
    assert!(listed(&atm).is_empty());
    let del_up = |tok: &str, id: &str| {
        s.call("DELETE", &format!("/v1/uploads/{id}"), Some(tok), None)
            .status
    };
    assert_eq!(del_up(&atm, &up), 404);
    assert_eq!(del_up(&agt, &up), 200);
    let up2 = crate::security::upload_of(&s, &atm, &[("g", "y")]);
    assert_eq!(del_up(&agt, &up2), 404);
    assert_eq!(del_up(&adm, &up2), 200);
    covered.extend(["uploadRepo", "listUploads", "deleteUpload"].map(String::from));

    // The E2B front door, with the token as E2B's `X-API-Key`: the same
    // scoping (another actor's sandbox is 404, E2B's body), no key is 401.
    let e2b = |tok: Option<&str>, method: &str, path: &str, body: Option<Value>| -> u16 {
        let mut rb = s.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", s.base),
        );
        if let Some(t) = tok {
            rb = rb.header("X-API-Key", t);
        }
        if let Some(b) = body {
            rb = rb.body(b.to_string());
        }
        let resp = rb.send().unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        if status >= 400 {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                v["code"], status,
                "{method} {path}: E2B's error body: {text}"
            );
            assert!(v["message"].is_string(), "{text}");
        }
        status
    };
    let mine = s.post("/v1/sandboxes", &agt, json!({})).expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    type E2bRow<'a> = (&'a str, &'a str, String, Option<Value>, [u16; 3]);
    let e2b_rows: Vec<E2bRow> = vec![
        (
            "e2bListSandboxesV2",
            "GET",
            "/v2/sandboxes".into(),
            None,
            [200, 200, 200],
        ),
        (
            "e2bListSandboxes",
            "GET",
            "/sandboxes".into(),
            None,
            [200, 200, 200],
        ),
        (
            "e2bGetSandbox",
            "GET",
            format!("/sandboxes/{mine}"),
            None,
            [200, 200, 404],
        ),
        (
            "e2bSandboxMetrics",
            "GET",
            format!("/sandboxes/{mine}/metrics"),
            None,
            [200, 200, 404],
        ),
        (
            "e2bSetTimeout",
            "POST",
            format!("/sandboxes/{mine}/timeout"),
            Some(json!({"timeout": 900})),
            [204, 204, 404],
        ),
        (
            "e2bRefreshSandbox",
            "POST",
            format!("/sandboxes/{mine}/refreshes"),
            Some(json!({})),
            [204, 204, 404],
        ),
        (
            "e2bConnectSandbox",
            "POST",
            format!("/sandboxes/{mine}/connect"),
            Some(json!({})),
            [200, 200, 404],
        ),
        (
            "e2bConnectSandboxV2",
            "POST",
            format!("/v2/sandboxes/{mine}/connect"),
            Some(json!({})),
            [200, 200, 404],
        ),
        // Paused by the admin; then E2B's "already paused" (409).
        (
            "e2bPauseSandbox",
            "POST",
            format!("/sandboxes/{mine}/pause"),
            None,
            [204, 409, 404],
        ),
        // Resumed by the admin; then E2B's "not paused" (409).
        (
            "e2bResumeSandbox",
            "POST",
            format!("/sandboxes/{mine}/resume"),
            None,
            [201, 409, 404],
        ),
        (
            "e2bSnapshotSandbox",
            "POST",
            format!("/sandboxes/{mine}/snapshots"),
            None,
            [201, 201, 404],
        ),
        (
            "e2bListSnapshots",
            "GET",
            "/snapshots".into(),
            None,
            [200, 200, 200],
        ),
        // Deleted by the operator: then unknown to every caller.
        (
            "e2bDeleteTemplate",
            "DELETE",
            format!("/templates/{sc}"),
            None,
            [204, 404, 404],
        ),
        (
            "e2bCreateSandboxV2",
            "POST",
            "/v2/sandboxes".into(),
            Some(json!({"templateID": "canary"})),
            [201, 201, 201],
        ),
        (
            "e2bCreateSandbox",
            "POST",
            "/sandboxes".into(),
            Some(json!({"templateID": "base"})),
            [201, 201, 201],
        ),
    ];
    for (id, method, path, body, want) in e2b_rows {
        for (i, tok) in [&adm, &agt, &atm].into_iter().enumerate() {
            assert_eq!(
                e2b(Some(tok), method, &path, body.clone()),
                want[i],
                "{id} {method} {path} as caller {i}"
            );
        }
        for tok in [None, Some("sbxt_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")] {
            assert_eq!(e2b(tok, method, &path, body.clone()), 401, "{id} {path}");
        }
        covered.insert(id.to_string());
    }
    // Kill: another actor's is 404 and leaves it running; the owner's 204.
    let kill = format!("/sandboxes/{mine}");
    assert_eq!(e2b(Some(&atm), "DELETE", &kill, None), 404);
    assert_eq!(e2b(None, "DELETE", &kill, None), 401);
    assert_eq!(e2b(Some(&agt), "DELETE", &kill, None), 204);
    assert_eq!(
        e2b(Some(&agt), "DELETE", &kill, None),
        404,
        "ended: not found"
    );
    covered.insert("e2bKillSandbox".to_string());

    let documented: BTreeSet<String> = operations(&doc).into_iter().map(|o| o.0).collect();
    assert_eq!(
        covered, documented,
        "every route of the document is in the matrix"
    );
    drop(s);
    destroy_all(&h);
}

// ---- the fuzz ----

/// A JSON value following `schema` (resolving `$ref`s in `doc`), using its
/// examples, enums and patterns.
fn valid(schema: &Value, doc: &Value, depth: u32) -> BoxedStrategy<Value> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = doc.pointer(r.trim_start_matches('#')).unwrap().clone();
        return valid(&target, doc, depth);
    }
    for k in ["anyOf", "oneOf", "allOf"] {
        if let Some(alts) = schema.get(k).and_then(Value::as_array) {
            let s: Vec<BoxedStrategy<Value>> = alts.iter().map(|a| valid(a, doc, depth)).collect();
            return proptest::strategy::Union::new(s).boxed();
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        return proptest::sample::select(e.clone()).boxed();
    }
    if let Some(c) = schema.get("const") {
        return Just(c.clone()).boxed();
    }
    // `"type": ["string", "null"]`: one of the types, the rest of the schema
    // kept.
    if let Some(types) = schema.get("type").and_then(Value::as_array) {
        let s: Vec<BoxedStrategy<Value>> = types
            .iter()
            .map(|t| {
                let mut one = schema.clone();
                one["type"] = t.clone();
                valid(&one, doc, depth)
            })
            .collect();
        return proptest::strategy::Union::new(s).boxed();
    }
    let example = schema
        .get("example")
        .or_else(|| schema.pointer("/examples/0"))
        .cloned();
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => {
            let from_pattern = match schema.get("pattern").and_then(Value::as_str) {
                Some(p) => {
                    proptest::string::string_regex(p.trim_start_matches('^').trim_end_matches('$'))
                        .unwrap()
                        .prop_map(Value::String)
                        .boxed()
                }
                None => "[a-z0-9.:_-]{0,12}".prop_map(Value::String).boxed(),
            };
            match example {
                Some(e) => prop_oneof![3 => Just(e), 2 => from_pattern].boxed(),
                None => from_pattern,
            }
        }
        Some("integer") => {
            let min = schema.get("minimum").and_then(Value::as_i64).unwrap_or(0);
            let max = schema
                .get("maximum")
                .and_then(Value::as_i64)
                .unwrap_or(min + 100_000);
            (min..=max).prop_map(|n| json!(n)).boxed()
        }
        Some("number") => (0.0f64..1e6).prop_map(|n| json!(n)).boxed(),
        Some("boolean") => any::<bool>().prop_map(Value::Bool).boxed(),
        Some("null") => Just(Value::Null).boxed(),
        Some("array") if depth < 3 => {
            let items = schema.get("items").cloned().unwrap_or(json!({}));
            proptest::collection::vec(valid(&items, doc, depth + 1), 0..3)
                .prop_map(Value::Array)
                .boxed()
        }
        Some("object") if depth < 3 => {
            let props: Vec<(String, Value)> = schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            let required: BTreeSet<String> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = props
                .into_iter()
                .map(|(k, s)| {
                    let v = valid(&s, doc, depth + 1);
                    if required.contains(&k) {
                        v.prop_map(move |v| Some((k.clone(), v))).boxed()
                    } else {
                        proptest::option::weighted(0.5, v.prop_map(move |v| (k.clone(), v))).boxed()
                    }
                })
                .collect();
            if let Some(map_of) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                return proptest::collection::btree_map(
                    "[a-z]{1,6}",
                    valid(map_of, doc, depth + 1),
                    0..3,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect()))
                .boxed();
            }
            fields
                .prop_map(|fs| Value::Object(fs.into_iter().flatten().collect()))
                .boxed()
        }
        _ => arbitrary_json().boxed(),
    }
}

/// Any JSON at all.
fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value as a query or path parameter.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Case {
    path: String,
    query: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

/// A tar archive of `files` (name, contents), as a client would upload.
fn tar_body(files: &[(String, String)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, text) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, text.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

fn case_strategy(op: &Value, path: &str, doc: &Value, ids: &[String]) -> BoxedStrategy<Case> {
    let params: Vec<Value> = op
        .get("parameters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut path_params: Vec<BoxedStrategy<(String, String)>> = Vec::new();
    let mut query_params: Vec<BoxedStrategy<Vec<(String, String)>>> = Vec::new();
    for p in &params {
        let name = p["name"].as_str().unwrap().to_string();
        let good = valid(&p["schema"], doc, 0);
        match p["in"].as_str().unwrap() {
            "path" => {
                let mut pool: Vec<String> = ids.to_vec();
                pool.extend(["local".into(), "profile.sandbox-canary".into()]);
                let n = name.clone();
                path_params.push(
                    prop_oneof![
                        3 => proptest::sample::select(pool),
                        2 => good.prop_map(|v| text(&v)),
                        1 => "[a-zA-Z0-9._~-]{1,24}",
                        1 => ".{1,12}",
                    ]
                    .prop_map(move |v| (n.clone(), v))
                    .boxed(),
                );
            }
            "query" => {
                let n = name.clone();
                let one = prop_oneof![
                    4 => good.prop_map(|v| match v {
                        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
                        other => text(&other),
                    }),
                    1 => ".{0,10}",
                ];
                let one = one.boxed();
                query_params.push(
                    prop_oneof![
                        3 => Just(Vec::new()),
                        4 => one.clone().prop_map(|v| vec![v]),
                        1 => proptest::collection::vec(one, 2..4),
                    ]
                    .prop_map(move |vs| vs.into_iter().map(|v| (n.clone(), v)).collect())
                    .boxed(),
                );
            }
            _ => {}
        }
    }
    let body_schema = op
        .pointer("/requestBody/content/application~1json/schema")
        .cloned();
    let archive = op
        .pointer("/requestBody/content/application~1x-tar")
        .is_some();
    let body: BoxedStrategy<Option<Vec<u8>>> = match body_schema {
        Some(s) => prop_oneof![
            6 => valid(&s, doc, 0).prop_map(|v| Some(v.to_string().into_bytes())),
            2 => arbitrary_json().prop_map(|v| Some(v.to_string().into_bytes())),
            1 => ".{0,40}".prop_map(|t| Some(t.into_bytes())),
            1 => Just(None),
        ]
        .boxed(),
        None if archive => prop_oneof![
            6 => proptest::collection::vec(("[a-z]{1,8}(/[a-z]{1,8})?", ".{0,40}"), 1..4)
                .prop_map(|files| Some(tar_body(&files))),
            2 => proptest::collection::vec(any::<u8>(), 0..2048).prop_map(Some),
            1 => Just(None),
        ]
        .boxed(),
        None => Just(None).boxed(),
    };
    let unknown = proptest::option::weighted(0.1, ("[a-z]{1,6}", "[a-z0-9]{0,4}"));
    let template = path.to_string();
    (path_params, query_params, body, unknown)
        .prop_map(move |(pp, qp, body, unknown)| {
            let mut path = template.clone();
            for (k, mut v) in pp {
                // `.` and `..` would be resolved away by the client.
                if v.trim_matches('.').is_empty() {
                    v.push('x');
                }
                path = path.replace(&format!("{{{k}}}"), &pct(&v));
            }
            let mut query: Vec<(String, String)> = qp.into_iter().flatten().collect();
            query.extend(unknown);
            Case { path, query, body }
        })
        .boxed()
}

/// For every operation and documented status, a validator of its JSON body
/// (the schema the document names, its `$ref`s resolved in the document).
fn response_validators(doc: &Value) -> BTreeMap<(String, u16), jsonschema::Validator> {
    let mut out = BTreeMap::new();
    for (id, method, path) in operations(doc) {
        let op = &doc["paths"][&path][&method];
        for (status, resp) in op["responses"].as_object().unwrap() {
            // A shared response (`#/components/responses/...`) or inline.
            let resp = match resp.get("$ref").and_then(Value::as_str) {
                Some(r) => doc.pointer(r.trim_start_matches('#')).unwrap(),
                None => resp,
            };
            let Some(schema) = resp.pointer("/content/application~1json/schema") else {
                continue;
            };
            let mut root = schema.clone();
            root["components"] = doc["components"].clone();
            let v = jsonschema::draft202012::new(&root)
                .unwrap_or_else(|e| panic!("{id} {status}: the document's schema: {e}"));
            out.insert((id.clone(), status.parse().unwrap()), v);
        }
    }
    out
}

/// At most this many rounds of `SANDBOXER_FUZZ_CASES` cases per operation.
const FUZZ_ROUNDS: u32 = 8;

#[test]
fn a_fuzz_of_every_operation_in_the_openapi_document_never_gets_a_5xx() {
    let h = home();
    let adm = token(&h, "adm:ops");
    let s = Served::start(&h, &["--reap-interval", "0s"]);
    let doc = s.call("GET", "/openapi.json", None, None).expect(200);
    let cases: u32 = std::env::var("SANDBOXER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let seen: std::cell::RefCell<BTreeMap<String, BTreeSet<u16>>> = Default::default();
    let validators = response_validators(&doc);
    // The validators hold the document's schemas: a record without its
    // fields and an error without its code are refused.
    assert!(!validators[&("getSandbox".to_string(), 200)].is_valid(&json!({"id": 1})));
    assert!(!validators[&("getSandbox".to_string(), 404)].is_valid(&json!({"message": "x"})));
    let live = s.post("/v1/sandboxes", &adm, json!({})).expect(201);
    assert!(validators[&("getSandbox".to_string(), 200)].is_valid(&live));
    for (id, method, path) in operations(&doc) {
        let op = doc["paths"][&path][&method].clone();
        let documented: BTreeSet<u16> = op["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.parse().unwrap())
            .collect();
        // A round of random cases can miss every valid one (one in ten
        // rounds for extend-ttl, whose id, body and duration must all be
        // right). More rounds follow, each case still checked, until the
        // operation has succeeded once: then the check below is about the
        // server, not about luck.
        for round in 0..FUZZ_ROUNDS {
            if round > 0
                && seen
                    .borrow()
                    .get(&id)
                    .is_some_and(|st| st.iter().any(|s| *s < 300))
            {
                break;
            }
            let mut runner = TestRunner::new(Config {
                cases,
                failure_persistence: None,
                max_shrink_iters: 64,
                ..Config::default()
            });
            // Fresh live sandboxes for the operations that take one (the
            // destroy and recreate cases before have ended the earlier ones).
            let mut ids = Vec::new();
            if path.starts_with("/v1/uploads/") {
                for _ in 0..2 {
                    ids.push(crate::security::upload_of(&s, &adm, &[("f", "x")]));
                }
            } else if path.starts_with("/v1/snapshots/") || path.contains("{templateID}") {
                for _ in 0..2 {
                    let sbx = s.post("/v1/sandboxes", &adm, json!({})).id();
                    let snap = s
                        .post(&format!("/v1/sandboxes/{sbx}/snapshots"), &adm, json!({}))
                        .expect(201);
                    ids.push(snap["id"].as_str().unwrap().to_string());
                }
            } else if path.contains("{id}") || path.contains("{sandboxID}") {
                for _ in 0..2 {
                    let sbx = s.post("/v1/sandboxes", &adm, json!({})).id();
                    // Only a paused sandbox resumes.
                    if path.ends_with("/resume") {
                        s.post(&format!("/v1/sandboxes/{sbx}/pause"), &adm, json!({}))
                            .expect(200);
                    }
                    ids.push(sbx);
                }
            }
            let strategy = case_strategy(&op, &path, &doc, &ids);
            let result = runner.run(&strategy, |case| {
                let url = reqwest::Url::parse_with_params(
                    &format!("{}{}", s.base, case.path),
                    &case.query,
                )
                .map_err(|e| TestCaseError::fail(format!("{}: {e}", case.path)))?;
                let mut rb = s
                    .http
                    .request(
                        reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                        url.clone(),
                    )
                    .bearer_auth(&adm);
                if let Some(b) = &case.body {
                    rb = rb.body(b.clone());
                }
                let resp = rb
                    .send()
                    .map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
                let status = resp.status().as_u16();
                let body = resp.text().unwrap_or_default();
                if status == 204 && body.is_empty() && documented.contains(&204) {
                    seen.borrow_mut().entry(id.clone()).or_default().insert(status);
                    return Ok(());
                }
                let v: Value = serde_json::from_str(&body)
                    .map_err(|_| TestCaseError::fail(format!("{status} not JSON: {body}")))?;
                // The body is what the document says this status carries.
                if let Some(check) = validators.get(&(id.clone(), status)) {
                    let errors: Vec<String> =
                        check.iter_errors(&v).map(|e| format!("{} at {}", e, e.instance_path())).collect();
                    prop_assert!(
                        errors.is_empty(),
                        "{method} {url}: the {status} body does not match the document: {errors:?}\n{body}"
                    );
                }
                // sandboxer's kind: `code`, or `error_code` in E2B's body.
                let code = v["code"]
                    .as_str()
                    .or(v["error_code"].as_str())
                    .unwrap_or("");
                prop_assert!(
                    status < 500
                        || (matches!(status, 502..=504)
                            && ["provision_failed", "unreachable", "no_placement", "timeout"]
                                .contains(&code)),
                    "{method} {url} {:?}: {status} {body}",
                    case.body
                );
                if status >= 400 {
                    prop_assert!(
                        v["message"].is_string() && !code.is_empty(),
                        "{status} {body}"
                    );
                }
                prop_assert!(
                    documented.contains(&status) || status == 404 && code == "not_found",
                    "{method} {url}: {status} is not documented for {id} ({body})"
                );
                seen.borrow_mut()
                    .entry(id.clone())
                    .or_default()
                    .insert(status);
                Ok(())
            });
            if let Err(e) = result {
                panic!("{id}: {e}");
            }
        }
    }
    // The fuzz reached past validation: successes on every operation that
    // documents one.
    let succeeds: BTreeSet<String> = operations(&doc)
        .into_iter()
        .filter(|o| {
            doc["paths"][&o.2][&o.1]["responses"]
                .as_object()
                .is_some_and(|r| r.keys().any(|k| k.starts_with('2')))
        })
        .map(|o| o.0)
        .collect();
    for (id, statuses) in seen.borrow().iter() {
        if !succeeds.contains(id) {
            assert!(statuses.iter().all(|s| *s < 500), "{id}: {statuses:?}");
            continue;
        }
        assert!(
            statuses.iter().any(|s| *s < 300),
            "{id} never succeeded in {FUZZ_ROUNDS} rounds: {statuses:?}"
        );
    }
    // Provisioning started with `wait: false` finishes before the exit.
    assert_eq!(s.stop(), Some(0));
    destroy_all(&h);
}

#[test]
fn the_cli_and_the_server_creating_at_once_lose_nothing() {
    let h = home();
    let adm = token(&h, "adm:ops");
    let s = Served::start(&h, &["--reap-interval", "0s"]);
    const EACH: usize = 8;
    let children: Vec<Child> = (0..EACH)
        .map(|_| {
            h.command(&["create", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids: Vec<String> = std::thread::scope(|scope| {
        let http: Vec<_> = (0..EACH)
            .map(|_| {
                scope.spawn(|| {
                    s.post("/v1/sandboxes", &adm, json!({})).expect(201)["id"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
            })
            .collect();
        let mut ids: Vec<String> = children
            .into_iter()
            .map(|c| {
                let run: sandboxer_testkit::home::Run = c.wait_with_output().unwrap().into();
                run.ok().json()["id"].as_str().unwrap().to_string()
            })
            .collect();
        ids.extend(http.into_iter().map(|t| t.join().unwrap()));
        ids
    });
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2 * EACH, "ids are unique");
    let listed = h.run(&["list", "--json"]).ok().json();
    let mut stored: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    stored.sort();
    assert_eq!(stored, ids, "every create is in the store");
    assert_eq!(
        s.get("/v1/sandboxes?state=ready", &adm)
            .expect(200)
            .as_array()
            .unwrap()
            .len(),
        2 * EACH
    );
    // Destroy half through each, at once too.
    std::thread::scope(|scope| {
        let (s, h, adm) = (&s, &h, &adm);
        for (i, id) in ids.iter().enumerate() {
            if i % 2 == 0 {
                scope.spawn(move || {
                    s.call("DELETE", &format!("/v1/sandboxes/{id}"), Some(adm), None)
                        .expect(200)
                });
            } else {
                scope.spawn(move || h.run(&["destroy", id]).ok());
            }
        }
    });
    let listed = h.run(&["list", "--json"]).ok().json();
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["state"] == "destroyed"));
    assert!(h.run(&["credits", "check"]).code == 0);
    drop(s);
    destroy_all(&h);
}

#[test]
fn the_server_reaps_expired_sandboxes_on_its_interval() {
    let h = home();
    let adm = token(&h, "adm:ops");
    let s = Served::start(&h, &["--reap-interval", "1s", "--reap-grace", "0s"]);
    let id = s
        .post("/v1/sandboxes", &adm, json!({"ttl": "2s"}))
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = wait::until(
        Duration::from_secs(30),
        format!("{id} to be reaped"),
        || {
            let r = s.get(&format!("/v1/sandboxes/{id}"), &adm).expect(200);
            (r["state"] == "destroyed").then_some(r)
        },
    );
    assert_eq!(r["reason"], "expired");
    assert_eq!(s.stop(), Some(0));
    destroy_all(&h);
}

#[test]
fn serve_refuses_a_public_address_without_tokens_and_stops_on_sigterm() {
    let h = home();
    let r = h.run(&["serve", "--bind", "0.0.0.0:0"]).expect_code(4);
    assert!(r.stderr.contains("not a loopback address"), "{}", r.stderr);
    let r = h.run(&["serve", "--bind", "nonsense"]).expect_code(4);
    assert!(r.stderr.contains("--bind"), "{}", r.stderr);
    let s = Served::start(&h, &[]);
    assert_eq!(s.call("GET", "/healthz", None, None).status, 200);
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn tokens_are_shown_once_and_stored_hashed() {
    let h = home();
    let added = h
        .run(&[
            "tokens",
            "add",
            "--actor",
            "agt:harness",
            "--name",
            "harness",
            "--json",
        ])
        .ok()
        .json();
    let secret = added["token"].as_str().unwrap();
    assert!(secret.starts_with("sbxt_"), "{added}");
    assert_eq!(added["actor"], "agt:harness");
    let human = h.run(&["tokens", "add", "--actor", "adm:ops"]).ok();
    assert!(human.stdout.starts_with("sbxt_"), "{}", human.stdout);
    assert!(human.stdout.contains("only time"), "{}", human.stdout);

    // Only the hash is kept: the secret is in neither the database nor its
    // write-ahead log, which only their owner can read.
    use std::os::unix::fs::PermissionsExt;
    for f in ["sandboxer.db", "sandboxer.db-wal"] {
        let path = h.data.join(f);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{f} holds the secret"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    assert!(h.store_dump().contains("harness"), "the token is stored");

    let list = h.run(&["tokens", "list"]).ok();
    assert!(
        list.stdout.contains("harness") && !list.stdout.contains("sbxt_"),
        "{}",
        list.stdout
    );
    let list = h.run(&["tokens", "list", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains("sbxt_"));

    h.run(&["tokens", "add", "--actor", "agt:x", "--name", "harness"])
        .expect_code(7);
    h.run(&["tokens", "add", "--actor", "boss:x"])
        .expect_code(4);
    h.run(&["tokens", "revoke", "harness"]).ok();
    h.run(&["tokens", "revoke", "harness"]).expect_code(3);

    // A tokens.toml of release 0.1 that does not parse stops its import:
    // exit 8, the file named with its line, nothing imported.
    std::fs::write(
        h.config.join("tokens.toml"),
        "[[tokens]]\nname = \"a\"\nactor = 7\n",
    )
    .unwrap();
    let r = h.run(&["tokens", "list"]).expect_code(8);
    assert!(
        r.stderr.contains("tokens.toml") && r.stderr.contains("line 3"),
        "{}",
        r.stderr
    );
    assert!(h.config.join("tokens.toml").exists());
}
