//! The official E2B Python SDK (`e2b`, pinned in
//! `sandboxer_testkit::e2b_sdk`) against `sandboxer serve`'s E2B front
//! door, configured as its users configure it: `E2B_API_URL`,
//! `E2B_API_KEY` (a sandboxer token) and `E2B_DOMAIN`. Each case of
//! `tests/e2b/sdk_cases.py` is a test of its own; the script prints what
//! the SDK answered and the test checks it, and the records behind it.

use std::path::PathBuf;
use std::process::Command;

use sandboxer_testkit::home::Home;
use serde_json::{json, Value};

use crate::http::{token, Served};

struct Front {
    h: Home,
    srv: Served,
    key: String,
    other: String,
}

fn front() -> Front {
    let h = crate::home();
    let key = token(&h, "agt:sdk");
    let other = token(&h, "agt:someone-else");
    let srv = Served::start(&h, &["--reap-interval", "0s"]);
    Front { h, srv, key, other }
}

impl Front {
    /// Run `case` of sdk_cases.py with `key` as E2B_API_KEY; its JSON.
    fn sdk(&self, test: &str, case: &str, key: &str) -> Value {
        let py = sandboxer_testkit::e2b_sdk::python(test);
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2b/sdk_cases.py");
        let host = self.srv.base.trim_start_matches("http://");
        let out = Command::new(py)
            .arg(script)
            .arg(case)
            .env("E2B_API_URL", &self.srv.base)
            .env("E2B_API_KEY", key)
            .env("E2B_DOMAIN", host)
            .env("OTHER_API_KEY", &self.other)
            .env_remove("E2B_ACCESS_TOKEN")
            .env_remove("E2B_DEBUG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sdk case {case}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("sdk case {case} printed no JSON ({e}): {stdout}"))
    }

    fn record(&self, id: &Value) -> Value {
        self.h
            .run(&["get", id.as_str().unwrap(), "--json"])
            .ok()
            .json()
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        crate::http::destroy_all(&self.h);
    }
}

macro_rules! sdk_test {
    ($name:ident, $body:expr) => {
        #[test]
        #[cfg_attr(
            not(sandboxer_testbed),
            ignore = "needs the testbed (the E2B SDK from PyPI): scripts/testbed up, then source .testbed/env"
        )]
        fn $name() {
            let f = front();
            let body: fn(&Front, &str) = $body;
            body(&f, stringify!($name));
        }
    };
}

sdk_test!(sdk_create_keeps_metadata_and_timeout, |f, t| {
    let r = f.sdk(t, "create", &f.key);
    assert_eq!(r["template_id"], "profile.sandbox-canary");
    assert_eq!(r["metadata"], json!({"team": "a b", "run": "7"}));
    assert_eq!(r["seconds"], 120.0);
    assert_eq!(r["state"], "running");
    assert_eq!(r["envd_version"], "0.2.4");
    let rec = f.record(&r["id"]);
    assert_eq!(rec["state"], "ready");
    assert_eq!(rec["ttl_seconds"], 120);
    assert_eq!(rec["actor"], "agt:sdk");
    assert_eq!(rec["metadata"], json!({"team": "a b", "run": "7"}));
    // The canary's telemetry gives the SDK its CPU count.
    assert!(r["cpu_count"].as_u64().unwrap() >= 1, "{r}");
});

sdk_test!(sdk_list_filters_by_metadata_and_state, |f, t| {
    let r = f.sdk(t, "list_metadata", &f.key);
    assert_eq!(r["x"], json!([r["a"]]), "{r}");
    let running = r["running"].as_array().unwrap();
    assert!(
        running.contains(&r["a"]) && running.contains(&r["b"]),
        "{r}"
    );
    // Newest first, as E2B lists.
    assert_eq!(running[0], r["b"], "{r}");
    assert_eq!(r["paused"], json!([]));
    // `base` made the default profile's sandbox.
    assert_eq!(f.record(&r["b"])["profile"], "profile.sandbox-canary");
});

sdk_test!(sdk_set_timeout_then_kill, |f, t| {
    let r = f.sdk(t, "timeout_and_kill", &f.key);
    assert_eq!(r["before"], 60.0);
    // 600 s from the moment of the call: about 540 s later than before.
    let moved = r["moved"].as_f64().unwrap();
    assert!((539.0..=602.0).contains(&moved), "{r}");
    assert_eq!(r["killed"], true);
    assert_eq!(r["gone"]["type"], "SandboxNotFoundException", "{r}");
    assert_eq!(r["again"], false);
    let rec = f.record(&r["id"]);
    assert_eq!(rec["state"], "destroyed");
    assert_eq!(rec["reason"], "destroyed");
});

sdk_test!(
    sdk_retried_create_with_one_idempotency_key_makes_one,
    |f, t| {
        let r = f.sdk(t, "idempotent", &f.key);
        assert_eq!(r["a"], r["b"], "{r}");
        let all = f.h.run(&["list", "--json"]).ok().json();
        assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    }
);

sdk_test!(sdk_wrong_key_is_an_authentication_error, |f, t| {
    let r = f.sdk(t, "wrong_key", "sbxt_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_eq!(r["create"]["type"], "AuthenticationException", "{r}");
    assert_eq!(r["list"]["type"], "AuthenticationException", "{r}");
    let all = f.h.run(&["list", "--json"]).ok().json();
    assert_eq!(all, json!([]), "nothing was made");
});

sdk_test!(sdk_another_actors_sandbox_is_not_found, |f, t| {
    let r = f.sdk(t, "other_actor", &f.key);
    assert_eq!(r["info"]["type"], "SandboxNotFoundException", "{r}");
    assert_eq!(r["kill"], false);
    assert_eq!(r["list"], json!([]));
    assert_eq!(r["connect"]["type"], "SandboxNotFoundException", "{r}");
    assert_eq!(r["still_mine"], "running");
    assert_eq!(f.record(&r["id"])["state"], "ready");
});

sdk_test!(sdk_connect_and_metrics, |f, t| {
    let r = f.sdk(t, "connect_and_metrics", &f.key);
    assert_eq!(r["connected"], r["id"]);
    // connect(timeout=300) moved the end to about 300 s from then.
    let left = r["left"].as_f64().unwrap();
    assert!((299.0..=320.0).contains(&left), "{r}");
    assert_eq!(r["metrics"], 1);
    assert!(r["mem_total"].as_u64().unwrap() > 0, "{r}");
});

sdk_test!(sdk_gets_clear_errors_for_what_is_not_offered, |f, t| {
    let r = f.sdk(t, "not_offered", &f.key);
    let auto = r["auto_pause"]["message"].as_str().unwrap();
    assert!(
        auto.starts_with("400: ") && auto.contains("does not pause sandboxes at their timeout"),
        "{r}"
    );
    assert!(
        r["unknown_template"]["message"]
            .as_str()
            .unwrap()
            .contains("404: template `no-such-template` not found"),
        "{r}"
    );
    assert!(
        r["env_vars"]["message"]
            .as_str()
            .unwrap()
            .contains("envVars `FOO`"),
        "{r}"
    );
    // Only the one sandbox was made.
    let all = f.h.run(&["list", "--json"]).ok().json();
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
});

sdk_test!(sdk_pauses_connects_snapshots_and_restores, |f, t| {
    let r = f.sdk(t, "pause_connect_snapshot", &f.key);
    assert_eq!(
        (r["first"].as_bool(), r["again"].as_bool()),
        (Some(true), Some(false)),
        "{r}"
    );
    assert_eq!(r["paused"], json!([r["id"]]), "{r}");
    assert_eq!(r["state"], "paused", "{r}");
    assert!(
        r["timeout_while_paused"]["message"]
            .as_str()
            .unwrap()
            .contains("is paused"),
        "{r}"
    );
    // connect resumed it, for 300 s from then.
    assert_eq!(r["connected"], r["id"]);
    assert_eq!(r["after"], "running", "{r}");
    let rec = f.record(&r["id"]);
    assert_eq!(rec["state"], "ready", "{rec}");
    assert!(
        rec["paused_seconds"].as_u64().unwrap() >= 1,
        "its pause counted: {rec}"
    );
    let snap = r["snapshot"].as_str().unwrap();
    assert!(snap.starts_with("snap-"), "{r}");
    assert_eq!(r["names"], json!(["warm", snap]), "{r}");
    assert_eq!(r["listed"], json!([snap]), "{r}");
    for made in [&r["restored"], &r["by_name"]] {
        let rec = f.record(made);
        assert_eq!(rec["from_snapshot"], snap, "{rec}");
        assert_eq!(rec["state"], "ready", "{rec}");
    }
    assert_eq!(
        (r["deleted"].as_bool(), r["deleted_again"].as_bool()),
        (Some(true), Some(false)),
        "{r}"
    );
    let snaps = f.h.run(&["snapshots", "get", snap, "--json"]).ok().json();
    assert_eq!(snaps["state"], "deleted");
});

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed (the E2B SDK from npm): scripts/testbed up, then source .testbed/env"
)]
fn js_sdk_lifecycle() {
    let test = "js_sdk_lifecycle";
    let f = front();
    let dir = sandboxer_testkit::e2b_sdk::node_dir(test);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2b/sdk_case.mjs");
    // Node resolves `e2b` from the script's folder: copy it next to the
    // installed SDK.
    let here = dir.join("sdk_case.mjs");
    std::fs::copy(&script, &here).unwrap();
    let host = f.srv.base.trim_start_matches("http://");
    let out = Command::new("node")
        .arg(&here)
        .current_dir(&dir)
        .env("E2B_API_URL", &f.srv.base)
        .env("E2B_API_KEY", &f.key)
        .env("E2B_DOMAIN", host)
        .env("OTHER_API_KEY", &f.other)
        .output()
        .unwrap_or_else(|e| {
            sandboxer_testkit::testbed::missing(test, &format!("node: {e}"), "install nodejs")
        });
    assert!(
        out.status.success(),
        "node: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    assert_eq!(r["template"], "profile.sandbox-canary");
    assert_eq!(r["state"], "running");
    assert_eq!(r["metadata"], json!({"who": "js", "run": "a b"}));
    assert_eq!(r["seconds"], 120.0);
    let moved = r["moved"].as_f64().unwrap();
    assert!((470.0..=602.0).contains(&moved), "{r}");
    assert_eq!(r["listed"], json!([r["id"]]));
    assert_eq!(r["metrics"], 1);
    assert_eq!(r["connected"], r["id"]);
    // pause, connect (which resumes), createSnapshot, a create from it and
    // deleteSnapshot, as the JavaScript SDK calls them.
    assert_eq!(r["paused"], true, "{r}");
    assert_eq!(r["pausedState"], "paused", "{r}");
    assert_eq!(
        (&r["resumed"], &r["resumedState"]),
        (&r["id"], &json!("running")),
        "{r}"
    );
    assert!(r["snapshot"].as_str().unwrap().starts_with("snap-"), "{r}");
    assert_eq!(
        f.record(&r["restored"])["from_snapshot"],
        r["snapshot"],
        "{r}"
    );
    assert_eq!(r["deleted"], true, "{r}");
    assert_eq!(r["other"]["type"], "SandboxNotFoundError", "{r}");
    assert_eq!(r["killed"], true);
    assert_eq!(r["gone"]["type"], "SandboxNotFoundError", "{r}");
    assert_eq!(f.record(&r["id"])["state"], "destroyed");
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed (openapi-spec-validator from PyPI): scripts/testbed up, then source .testbed/env"
)]
fn an_openapi_validator_that_is_not_ours_accepts_the_served_document() {
    let test = "an_openapi_validator_that_is_not_ours_accepts_the_served_document";
    let f = front();
    let doc = f.srv.call("GET", "/openapi.json", None, None).expect(200);
    let file = f.h.dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let py = sandboxer_testkit::e2b_sdk::python(test);
    let out = Command::new(py)
        .args([
            "-c",
            "import json, sys\n\
             from openapi_spec_validator import validate\n\
             from openapi_spec_validator.versions import get_spec_version\n\
             doc = json.load(open(sys.argv[1]))\n\
             validate(doc)\n\
             print(get_spec_version(doc))",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.contains("3.1"),
        "validated as {version}, not as OpenAPI 3.1"
    );
}
