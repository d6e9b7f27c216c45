//! One sandboxer bursting to another: two real `sandboxer serve`
//! processes. A's `profile.burst` fills its own testbed hosts, then its
//! metered route (`ext.saas-stub`, pointed at B's E2B front door by
//! configuration only) creates on B: the sandbox is a real canary on B, A
//! holds credits for it and settles them, and destroying it on A ends it
//! on B.

use serde_json::{json, Value};

use crate::compose::{example_repo, Bed};
use crate::http::{token, Served};

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn a_sandboxer_bursts_to_another_through_its_e2b_front_door() {
    // B: a plain sandboxer with the canary, and a token for A.
    let b = crate::home();
    let b_key = token(&b, "agt:peer-a");
    let b_srv = Served::start(&b, &["--reap-interval", "0s"]);

    // A: two own hosts of capacity 1, then the metered route to B.
    let mut bed = Bed::new("a_sandboxer_bursts_to_another_through_its_e2b_front_door");
    bed.write_hosts(&[
        bed.host("sandboxer01").capacity(1),
        bed.host("coulombcore").capacity(1),
    ]);
    bed.home
        .write_profile("burst.toml", &crate::burst::burst_profile());
    // B is A's provider by configuration only: its URL and A's key there.
    bed.home
        .env
        .push(("SANDBOXER_SAAS_STUB_URL".into(), b_srv.base.clone()));
    bed.home
        .env
        .push(("SANDBOXER_SAAS_STUB_API_KEY".into(), b_key.clone()));
    let a_home = &bed.home;
    let adm = token(a_home, "adm:ops");
    let agent = token(a_home, "agt:harness");
    a_home
        .run(&[
            "credits",
            "grant",
            "--actor",
            "agt:harness",
            "10",
            "--by",
            "adm:ops",
        ])
        .ok();
    let root = example_repo().parent().unwrap().display().to_string();
    let a_srv = Served::start(a_home, &["--reap-interval", "0s", "--repo-root", &root]);
    let create = || {
        a_srv.post(
            "/v1/sandboxes",
            &agent,
            json!({
                "profile": "profile.burst",
                "inputs": {"repo": example_repo().display().to_string()},
                "ttl": "30m",
            }),
        )
    };
    let own1 = create().expect(201);
    let own2 = create().expect(201);
    let mut hosts = [
        own1["host"].as_str().unwrap().to_string(),
        own2["host"].as_str().unwrap().to_string(),
    ];
    hosts.sort();
    assert_eq!(hosts, ["coulombcore", "sandboxer01"]);

    // Both full: the third goes to B.
    let fed = create().expect(201);
    let fed_id = fed["id"].as_str().unwrap().to_string();
    assert_eq!(fed["extension"], "ext.saas-stub", "{fed:#}");
    assert_eq!(fed["state"], "ready");
    assert_eq!(fed["cost"]["held"], "0.3", "0.6 an hour for 30 minutes");
    let provider_id = fed["reachability"]["details"]["provider_id"]
        .as_str()
        .unwrap()
        .to_string();

    // On B: a real canary of B's default profile, owned by A's key, labelled
    // with A's sandbox id, ending when A's does.
    let on_b = b_srv
        .get(&format!("/v1/sandboxes/{provider_id}"), &b_key)
        .expect(200);
    assert_eq!(on_b["profile"], "profile.sandbox-canary");
    assert_eq!(on_b["extension"], "ext.canary");
    assert_eq!(on_b["state"], "ready");
    assert_eq!(on_b["actor"], "agt:peer-a");
    assert_eq!(on_b["metadata"]["sandboxer_id"], fed_id.as_str());
    assert_eq!(on_b["metadata"]["actor"], "agt:harness");
    assert!(
        !on_b["telemetry"]["host"].is_null(),
        "the canary reported its host: {on_b:#}"
    );
    let a_end = chrono::DateTime::parse_from_rfc3339(fed["expires_at"].as_str().unwrap()).unwrap();
    let b_end = chrono::DateTime::parse_from_rfc3339(on_b["expires_at"].as_str().unwrap()).unwrap();
    assert!(
        (b_end - a_end).num_seconds().abs() <= 2,
        "{a_end} vs {b_end}"
    );

    // Extending on A moves B's deadline too.
    let ext = a_srv
        .post(
            &format!("/v1/sandboxes/{fed_id}/extend-ttl"),
            &agent,
            json!({"by": "10m"}),
        )
        .expect(200);
    let on_b = b_srv
        .get(&format!("/v1/sandboxes/{provider_id}"), &b_key)
        .expect(200);
    let a_end = chrono::DateTime::parse_from_rfc3339(ext["expires_at"].as_str().unwrap()).unwrap();
    let b_end = chrono::DateTime::parse_from_rfc3339(on_b["expires_at"].as_str().unwrap()).unwrap();
    assert!(
        (b_end - a_end).num_seconds().abs() <= 2,
        "{a_end} vs {b_end}"
    );

    // Destroying on A ends it on B, and A settles by the second.
    let done = a_srv
        .call(
            "DELETE",
            &format!("/v1/sandboxes/{fed_id}"),
            Some(&agent),
            None,
        )
        .expect(200);
    assert_eq!(done["state"], "destroyed");
    let settled: f64 = done["cost"]["settled"].as_str().unwrap().parse().unwrap();
    assert!(settled > 0.0 && settled < 0.01, "{settled}");
    let on_b = b_srv
        .get(&format!("/v1/sandboxes/{provider_id}"), &b_key)
        .expect(200);
    assert_eq!(on_b["state"], "destroyed");
    assert_eq!(on_b["reason"], "destroyed");
    let venues = crate::canary::venues(&b.data);
    assert!(venues.is_empty(), "B's canary is gone: {venues:?}");
    let acct: Value = a_srv.get("/v1/credits/balance", &agent).expect(200)["account"].clone();
    assert_eq!(acct["held"], "0");
    a_home.run(&["credits", "check"]).ok();

    for own in [&own1, &own2] {
        a_srv
            .call(
                "DELETE",
                &format!("/v1/sandboxes/{}", own["id"].as_str().unwrap()),
                Some(&adm),
                None,
            )
            .expect(200);
    }
}
