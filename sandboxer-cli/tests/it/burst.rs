//! The burst story on the testbed: own hosts filled to capacity, the next
//! create goes to the metered SaaS provider (the real stub HTTP server on
//! loopback) and holds credits, destroy settles by the second, and the
//! balance and the usage report agree to the micro-credit. Then the provider
//! full (429) and down: no placement, nothing held.

use std::net::SocketAddr;
use std::time::Duration;

use sandboxer_core::credits::Micros;
use sandboxer_ext_saas_stub::server::{Server, StubConfig};
use sandboxer_ext_saas_stub::ApiKey;
use sandboxer_testkit::home::Home;
use serde_json::Value;

use crate::compose::{example_repo, Bed};

const KEY: &str = "burst-test-key";

/// The provider stand-in, served from a thread of this test until dropped.
struct Stub {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stub {
    fn start(capacity: usize) -> Stub {
        let (tx_addr, rx_addr) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut config = StubConfig::new(ApiKey::new(KEY));
                config.capacity = capacity;
                let server = Server::bind("127.0.0.1:0".parse().unwrap(), config)
                    .await
                    .unwrap();
                tx_addr.send(server.local_addr().unwrap()).unwrap();
                let _ = server
                    .run(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let addr = rx_addr.recv_timeout(Duration::from_secs(10)).unwrap();
        Stub {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn burst_profile() -> String {
    // One compose route per own host (each binds its own loopback address),
    // then the metered provider.
    let mut p = crate::compose::compose_profile(
        "profile.burst",
        "1h",
        &[
            (&["sandboxer01"], "127.0.0.2"),
            (&["coulombcore"], "127.0.0.3"),
        ],
    );
    p = p.replacen("version = 1\n", "version = 1\npolicy = \"burst\"\n", 1);
    p.push_str(
        "\n[[routes]]\nextension = \"ext.saas-stub\"\nplacement = [\"saas-stub\"]\nprice_per_hour = \"0.6\"\n\
         [routes.config]\ntemplate = \"base\"\n",
    );
    p
}

fn micros(v: &Value) -> Micros {
    v.as_str()
        .unwrap_or_else(|| panic!("not an amount: {v}"))
        .parse()
        .unwrap()
}

fn setup(test: &str, stub_url: &str) -> Bed {
    let mut bed = Bed::new(test);
    bed.write_hosts(&[
        bed.host("sandboxer01").capacity(1),
        bed.host("coulombcore").capacity(1),
    ]);
    bed.home.write_profile("burst.toml", &burst_profile());
    bed.home
        .env
        .push(("SANDBOXER_SAAS_STUB_URL".into(), stub_url.to_string()));
    bed.home
        .env
        .push(("SANDBOXER_SAAS_STUB_API_KEY".into(), KEY.into()));
    bed.home
        .env
        .push(("SANDBOXER_ACTOR".into(), "agt:harness".into()));
    grant_25(&bed.home);
    bed
}

/// 25 credits for `agt:harness` (grants need an operator: `--by`).
fn grant_25(h: &Home) {
    h.run(&[
        "credits",
        "grant",
        "--actor",
        "agt:harness",
        "25",
        "--by",
        "adm:ops",
    ])
    .ok();
}

/// `agt:harness`'s account.
fn balance(h: &Home) -> Value {
    h.run(&["credits", "balance", "--actor", "agt:harness", "--json"])
        .ok()
        .json()["account"]
        .clone()
}

fn create(bed: &Bed) -> sandboxer_testkit::home::Run {
    let repo = format!("repo={}", example_repo().display());
    bed.home.run(&[
        "create",
        "--profile",
        "profile.burst",
        "--input",
        &repo,
        "--json",
    ])
}

fn account(bed: &Bed) -> Value {
    balance(&bed.home)
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn own_hosts_fill_then_saas_holds_and_settles_to_the_micro_credit() {
    let stub = Stub::start(4);
    let bed = setup(
        "own_hosts_fill_then_saas_holds_and_settles_to_the_micro_credit",
        &format!("http://{}", stub.addr),
    );
    let explain = bed
        .home
        .run(&["route", "explain", "--profile", "profile.burst", "--json"])
        .ok()
        .json();
    assert_eq!(
        explain["candidates"][0]["host"], "sandboxer01",
        "{explain:#}"
    );

    // Own hosts first, free.
    let a = create(&bed).ok().json();
    let b = create(&bed).ok().json();
    let mut own: Vec<&str> = vec![a["host"].as_str().unwrap(), b["host"].as_str().unwrap()];
    own.sort();
    assert_eq!(own, ["coulombcore", "sandboxer01"]);
    assert!(
        a["cost"].is_null() && b["cost"].is_null(),
        "own hosts are free"
    );
    assert_eq!(micros(&account(&bed)["held"]), Micros::ZERO);

    // Both full: the next one bursts to the provider and holds 0.6 x 1h.
    let c = create(&bed).ok().json();
    assert_eq!(c["extension"], "ext.saas-stub", "{c:#}");
    assert_eq!(c["host"], "saas-stub");
    let skipped: Vec<&str> = c["route"]["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        skipped
            .iter()
            .filter(|r| r.starts_with("at capacity"))
            .count(),
        2,
        "{skipped:?}"
    );
    assert_eq!(micros(&c["cost"]["held"]), Micros(600_000));
    let acct = account(&bed);
    assert_eq!(micros(&acct["held"]), Micros(600_000));
    assert_eq!(micros(&acct["available"]), Micros(24_400_000));
    assert!(c["reachability"]["urls"]["sandbox"]
        .as_str()
        .unwrap()
        .starts_with("https://"));

    // Destroy settles by the actual seconds.
    let id = c["id"].as_str().unwrap();
    let d = bed.home.run(&["destroy", id, "--json"]).ok().json();
    let settled = micros(&d["cost"]["settled"]);
    let created = chrono::DateTime::parse_from_rfc3339(d["created_at"].as_str().unwrap()).unwrap();
    let ended = chrono::DateTime::parse_from_rfc3339(d["ended_at"].as_str().unwrap()).unwrap();
    let secs = ((ended - created).num_milliseconds().max(0) as u64).div_ceil(1000);
    // 0.6/h = 1/6000 credit per second, rounded up to the micro-credit.
    let expected = Micros((secs * 600_000).div_ceil(3600) as i64);
    assert!(
        settled >= Micros(expected.0 - 167) && settled <= Micros(expected.0 + 167),
        "settled {settled} for about {secs} s (expected about {expected})"
    );
    let acct = account(&bed);
    assert_eq!(micros(&acct["held"]), Micros::ZERO);
    assert_eq!(micros(&acct["spent"]), settled);
    assert_eq!(micros(&acct["available"]), Micros(25_000_000 - settled.0));
    let usage = bed
        .home
        .run(&["credits", "usage", "--actor", "agt:harness", "--json"])
        .ok()
        .json();
    let rows = usage["usage"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "only the metered sandbox: {usage:#}");
    assert_eq!(rows[0]["sandbox_id"], id);
    assert_eq!(micros(&rows[0]["cost"]), settled, "usage and balance agree");
    bed.home.run(&["credits", "check"]).ok();
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn provider_full_or_down_is_no_placement_and_holds_nothing() {
    // A provider that is always full answers 429.
    let full = Stub::start(0);
    let bed = setup(
        "provider_full_or_down_is_no_placement_and_holds_nothing",
        &format!("http://{}", full.addr),
    );
    create(&bed).ok();
    create(&bed).ok();
    let r = create(&bed).expect_code(9);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("ext.saas-stub"), "{msg}");
    assert!(
        msg.contains("at capacity"),
        "every rejection is listed: {msg}"
    );
    let acct = account(&bed);
    assert_eq!(micros(&acct["held"]), Micros::ZERO, "nothing held");
    assert_eq!(micros(&acct["available"]), Micros::from_credits(25));

    // The provider down: the same, quickly.
    // Nothing answers at the configured address (not the stopped stub's
    // port, which another test's server could take meanwhile).
    drop(full);
    let closed = sandboxer_testkit::net::ClosedPort::new().unwrap();
    let down_url = closed.url();
    let mut bed = bed;
    bed.home.env.retain(|(k, _)| k != "SANDBOXER_SAAS_STUB_URL");
    bed.home
        .env
        .push(("SANDBOXER_SAAS_STUB_URL".into(), down_url));
    let started = std::time::Instant::now();
    let r = create(&bed).expect_code(9);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(r.json()["error"]["kind"], "no_placement");
    assert_eq!(micros(&account(&bed)["held"]), Micros::ZERO);
    bed.home.run(&["credits", "check"]).ok();
}

/// Three priced routes to the provider: the first full (429), the second
/// down, the third serving. Each failed route's hold is voided and the
/// next route takes its own (`hold:<sbx>:2`, `:3`), so the create lands on
/// the third at its price, and destroy settles that one hold.
#[test]
fn a_create_falls_back_across_priced_routes_and_pays_only_the_one_it_ran_on() {
    let full = Stub::start(0);
    let serving = Stub::start(4);
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let route = |url: String, price: &str| {
        format!(
            "\n[[routes]]\nextension = \"ext.saas-stub\"\nplacement = [\"saas-stub\"]\n\
             price_per_hour = \"{price}\"\n[routes.config]\ntemplate = \"base\"\nbase_url = \"{url}\"\n"
        )
    };
    let mut profile = String::from(
        "id = \"profile.paid-fallback\"\nversion = 1\ndescription = \"three priced routes\"\ndefault_ttl = \"1h\"\nmax_ttl = \"4h\"\n\
         ready_timeout = \"30s\"\n",
    );
    profile.push_str(&route(format!("http://{}", full.addr), "3.6"));
    profile.push_str(&route(format!("http://{down}"), "1.8"));
    profile.push_str(&route(format!("http://{}", serving.addr), "7.2"));
    let mut h = crate::home();
    h.write_profile("paid-fallback.toml", &profile);
    h.env
        .push(("SANDBOXER_SAAS_STUB_API_KEY".into(), KEY.into()));
    grant_25(&h);

    let rec = h
        .run(&[
            "create",
            "--profile",
            "profile.paid-fallback",
            "--actor",
            "agt:harness",
            "--json",
        ])
        .ok()
        .json();
    let id = rec["id"].as_str().unwrap().to_string();
    assert_eq!(rec["state"], "ready", "{rec:#}");
    assert_eq!(rec["route"]["chosen"]["route"], 2, "{rec:#}");
    let tried = rec["route"]["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["reason"]
                .as_str()
                .unwrap()
                .starts_with("tried and failed")
        })
        .count();
    assert_eq!(tried, 2, "{rec:#}");
    // 7.2 an hour for the hour: only the route it runs on is held.
    assert_eq!(micros(&rec["cost"]["held"]), Micros(7_200_000));
    let a = balance(&h);
    assert_eq!(micros(&a["held"]), Micros(7_200_000));
    assert_eq!(micros(&a["available"]), Micros(17_800_000));

    let entries = h
        .run(&["credits", "ledger", "--sandbox", &id, "--json"])
        .ok()
        .json();
    let ids: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            format!("hold:{id}"),
            format!("void:{id}"),
            format!("hold:{id}:2"),
            format!("void:{id}:2"),
            format!("hold:{id}:3"),
        ],
        "{entries:#}"
    );

    let d = h.run(&["destroy", &id, "--json"]).ok().json();
    let settled = micros(&d["cost"]["settled"]);
    assert!(
        settled > Micros::ZERO && settled < Micros(7_200_000),
        "{d:#}"
    );
    let a = balance(&h);
    assert_eq!(micros(&a["held"]), Micros::ZERO);
    assert_eq!(micros(&a["spent"]), settled);
    assert_eq!(micros(&a["available"]), Micros(25_000_000 - settled.0));
    h.run(&["credits", "check"]).ok();
    h.run(&["db", "check"]).ok();
}
