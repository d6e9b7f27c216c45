//! `/metrics` of the real `sandboxer serve`, linted by the real Prometheus
//! tooling (`promtool check metrics`, Debian's `prometheus` package) and
//! read as Prometheus would: a create moves the create-to-ready histogram
//! and the state gauges, a destroy the destroy histogram and the ended
//! count, a create on a host that is down the failure counter.

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::http::{token, Served};
use sandboxer_testkit::wait;

/// `promtool check metrics` on `text`; panics with its complaints.
fn promtool_check(test: &str, text: &str) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => sandboxer_testkit::testbed::missing(
            test,
            &format!("no promtool ({e})"),
            "run `scripts/testbed up` (it installs Debian's prometheus package)",
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn scrape(srv: &Served) -> String {
    let resp = srv
        .http
        .get(format!("{}/metrics", srv.base))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().unwrap()
}

/// The value of one series, written as in the exposition; 0 when absent
/// (as PromQL treats a counter that has not started).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn metrics_follow_the_lifecycle_and_pass_promtool() {
    let test = "metrics_follow_the_lifecycle_and_pass_promtool";
    let h = crate::home();
    // A host that is down: connections to the discard port are refused.
    std::fs::create_dir_all(&h.config).unwrap();
    std::fs::write(
        h.config.join("hosts.toml"),
        "[[hosts]]\nname = \"gone01\"\naddress = \"127.0.0.1\"\nport = 9\ncapacity = 2\nuser = \"nobody\"\nidentity_file = \"/nonexistent/id_ed25519\"\nconnect_timeout = \"2s\"\n",
    )
    .unwrap();
    let adm = token(&h, "adm:ops");
    // The reaper runs once at start (then hourly): its counter has a series.
    let srv = Served::start(&h, &["--reap-interval", "1h"]);
    let ready = r#"{extension="ext.canary",profile="profile.sandbox-canary"}"#;
    let gauge = r#"sandboxer_sandboxes{extension="ext.canary",host="local",profile="profile.sandbox-canary",state="ready"}"#;

    let before = scrape(&srv);
    promtool_check(test, &before);
    assert_eq!(
        value(
            &before,
            &format!("sandboxer_create_to_ready_seconds_count{ready}")
        ),
        0.0
    );
    assert_eq!(value(&before, gauge), 0.0);

    let id = srv
        .post("/v1/sandboxes", &adm, json!({"host": "local"}))
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let after = scrape(&srv);
    promtool_check(test, &after);
    assert_eq!(
        value(
            &after,
            &format!("sandboxer_create_to_ready_seconds_count{ready}")
        ),
        1.0
    );
    let sum = value(
        &after,
        &format!("sandboxer_create_to_ready_seconds_sum{ready}"),
    );
    assert!(sum > 0.0, "create-to-ready took {sum}s");
    // The observation is in the buckets at and above its value, and in none
    // below it.
    let inf = r#"sandboxer_create_to_ready_seconds_bucket{extension="ext.canary",profile="profile.sandbox-canary",le="+Inf"}"#;
    assert_eq!(value(&after, inf), 1.0);
    assert_eq!(value(&after, gauge), 1.0);
    assert_eq!(
        value(
            &after,
            r#"sandboxer_http_requests_total{method="POST",route="/v1/sandboxes",status="201"}"#
        ),
        1.0
    );

    srv.call("DELETE", &format!("/v1/sandboxes/{id}"), Some(&adm), None)
        .expect(200);
    let gone = scrape(&srv);
    promtool_check(test, &gone);
    assert_eq!(
        value(&gone, &format!("sandboxer_destroy_seconds_count{ready}")),
        1.0
    );
    assert_eq!(value(&gone, gauge), 0.0, "no live series left");
    assert!(
        !gone.contains(gauge),
        "the ready series is dropped, not left at 0"
    );
    assert_eq!(
        value(&gone, r#"sandboxer_sandboxes_ended{state="destroyed"}"#),
        1.0
    );

    // A create on a host that is down ends `failed`, counted by its kind.
    let failed = srv.post("/v1/sandboxes", &adm, json!({"host": "gone01"}));
    assert!(failed.status >= 400, "{}", failed.json);
    let kind = failed.json["code"].as_str().unwrap().to_string();
    let last = scrape(&srv);
    promtool_check(test, &last);
    assert_eq!(
        value(
            &last,
            &format!(
                r#"sandboxer_provisioning_failures_total{{kind="{kind}",profile="profile.sandbox-canary"}}"#
            )
        ),
        1.0,
        "{last}"
    );
    assert_eq!(
        value(&last, r#"sandboxer_sandboxes_ended{state="failed"}"#),
        1.0
    );

    // The host probe (at start, then every --probe-interval): local is up,
    // the host that is down is not.
    let probed = wait::until(std::time::Duration::from_secs(30), "a host probe", || {
        Some(scrape(&srv)).filter(|t| t.contains(r#"sandboxer_host_up{host="gone01"}"#))
    });
    promtool_check(test, &probed);
    assert_eq!(value(&probed, r#"sandboxer_host_up{host="gone01"}"#), 0.0);
    assert_eq!(value(&probed, r#"sandboxer_host_up{host="local"}"#), 1.0);

    // Every sandboxer metric the example alert rules use is one the server
    // exports (a renamed metric would leave an alert that never fires).
    let rules = std::fs::read_to_string(docs_prometheus().join("sandboxer-alerts.yml")).unwrap();
    let used: std::collections::BTreeSet<&str> = regex_lite::Regex::new(r"sandboxer_[a-z_]+")
        .unwrap()
        .find_iter(&rules)
        .map(|m| m.as_str())
        .collect();
    assert!(used.len() >= 5, "{used:?}");
    for name in used {
        assert!(
            probed.contains(&format!("\n{name}{{")) || probed.contains(&format!("\n{name} ")),
            "the alert rules use {name}, which /metrics does not export"
        );
    }
}

fn docs_prometheus() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/prometheus")
}

/// `promtool` on the example configuration and alert rules of
/// docs/operations.md: the configuration parses, the rules check, and their
/// unit tests (each alert fires on what should fire it, not on the rest)
/// pass.
#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn the_example_prometheus_config_and_alert_rules_pass_promtool() {
    let dir = docs_prometheus();
    for args in [
        &["check", "config", "--syntax-only", "prometheus.yml"][..],
        &["check", "rules", "sandboxer-alerts.yml"][..],
        &["test", "rules", "sandboxer-alerts.test.yml"][..],
    ] {
        let out = match Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
        {
            Ok(o) => o,
            Err(e) => sandboxer_testkit::testbed::missing(
                "the_example_prometheus_config_and_alert_rules_pass_promtool",
                &format!("no promtool ({e})"),
                "run `scripts/testbed up` (it installs Debian's prometheus package)",
            ),
        };
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
