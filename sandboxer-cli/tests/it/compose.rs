//! `profile.compose-e2e` (ext.compose-ssh) through the real `sandboxer`
//! binary against the testbed's SSH hosts (`scripts/testbed up`; `source
//! .testbed/env`). Without the testbed these tests skip loudly; under
//! `CI=true` they fail.
//!
//! Every test writes its own `hosts.toml` into a throwaway home, listing
//! the testbed hosts it needs in the order it needs, with its own
//! capacities, and a data folder of its own on each host
//! (`/var/lib/sandboxer-testbed/hosts/NAME/data/it-TAG`), so "the host is
//! clean" can be checked without looking at other tests' sandboxes. All
//! hosts share one docker engine: containers are found by the label
//! `sandboxer.sandbox_id=ID`.
//!
//! The example repo publishes on `${E2E_BIND_IP:-0.0.0.0}::80`. The tests
//! override `profile.compose-e2e` with a user profile whose route config
//! sets `E2E_BIND_IP` to the loopback address of the host the route places
//! on, so nothing listens beyond loopback; a profile that can land on two
//! hosts has one route per host.
//!
//! Only `spare01` is ever stopped, and only under
//! [`Testbed::lock_spare`], which the SSH transport tests take too. Hosts
//! that are "down" without stopping anything are entries whose port nothing
//! listens on.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sandboxer_testkit::home::{Home, Run};
use sandboxer_testkit::testbed::{require_docker, require_testbed, Testbed, HOSTS, SPARE_HOST};
use sandboxer_testkit::wait;
use serde_json::Value;

use crate::home;

/// The label every container of a compose sandbox carries.
const LABEL: &str = "sandboxer.sandbox_id";

/// A loopback port nothing listens on (the discard service), for hosts
/// that are down.
const DOWN_PORT: u16 = 9;

// ------------------------------------------------------------------ fixtures

/// One `[[hosts]]` entry of a test's `hosts.toml`.
#[derive(Debug, Clone)]
pub(crate) struct HostLine {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub capacity: Option<u32>,
    /// Point `known_hosts` at the testbed's file (else the config dir's
    /// default `known_hosts`, which a fresh home does not have).
    pub known_hosts: bool,
    pub data_dir: String,
}

impl HostLine {
    pub fn capacity(mut self, n: u32) -> Self {
        self.capacity = Some(n);
        self
    }

    /// Leave `known_hosts` out: the host key is unknown until `hosts trust`.
    pub fn unknown_key(mut self) -> Self {
        self.known_hosts = false;
        self
    }
}

/// A throwaway home wired to the testbed, with a data folder of its own on
/// each testbed host. Dropping it destroys what the test left live and
/// removes those folders.
pub(crate) struct Bed {
    pub tb: Testbed,
    pub home: Home,
    tag: String,
}

impl Bed {
    /// The bed for `test` (the test fails when the testbed is down).
    pub fn new(test: &str) -> Bed {
        let tb = require_testbed(test);
        require_docker(test);
        let home = home();
        let tag = home
            .dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace("sandboxer-home-", "it-");
        Bed { tb, home, tag }
    }

    /// This test's data folder on testbed host `name`.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.tb.host_data_dir(name).join(&self.tag)
    }

    /// Testbed host `name`, with this test's data folder and the testbed's
    /// known_hosts, no capacity.
    pub fn host(&self, name: &str) -> HostLine {
        let h = self
            .tb
            .host(name)
            .unwrap_or_else(|| panic!("no testbed host {name}"));
        HostLine {
            name: name.to_string(),
            address: h.address.to_string(),
            port: sandboxer_testkit::testbed::SSH_PORT,
            capacity: None,
            known_hosts: true,
            data_dir: self.data_dir(name).display().to_string(),
        }
    }

    /// A host called `name` that is down: `address` on a port nothing
    /// listens on (connections are refused at once).
    pub fn down_host(&self, name: &str, address: &str) -> HostLine {
        HostLine {
            name: name.to_string(),
            address: address.to_string(),
            port: DOWN_PORT,
            capacity: None,
            known_hosts: true,
            data_dir: format!("/nonexistent/{}", self.tag),
        }
    }

    /// Write `hosts.toml` with these hosts, in this order.
    pub fn write_hosts(&self, hosts: &[HostLine]) {
        let mut s = String::from("# written by the compose/ssh_canary tests\n");
        for h in hosts {
            s.push_str(&format!(
                "\n[[hosts]]\nname = {}\naddress = {}\nport = {}\nuser = \"sbxhost\"\nidentity_file = {}\nconnect_timeout = \"3s\"\ndata_dir = {}\n",
                q(&h.name),
                q(&h.address),
                h.port,
                q(&self.tb.identity_file.display().to_string()),
                q(&h.data_dir),
            ));
            if h.known_hosts {
                s.push_str(&format!(
                    "known_hosts = {}\n",
                    q(&self.tb.known_hosts.display().to_string())
                ));
            }
            if let Some(c) = h.capacity {
                s.push_str(&format!("capacity = {c}\n"));
            }
        }
        std::fs::write(self.home.config.join("hosts.toml"), s).unwrap();
    }

    /// Override `profile.compose-e2e`: one route per `(placement, bind
    /// address)`, in order.
    pub fn write_profile(&self, routes: &[(&[&str], &str)]) {
        self.home.write_profile(
            "compose-e2e.toml",
            &compose_profile("profile.compose-e2e", "1h", routes),
        );
    }

    /// `create --profile profile.compose-e2e --input repo=REPO --json ARGS`.
    pub fn create(&self, repo: &Path, args: &[&str]) -> Run {
        let input = format!("repo={}", repo.display());
        let mut all = vec![
            "create",
            "--profile",
            "profile.compose-e2e",
            "--input",
            &input,
            "--json",
        ];
        all.extend_from_slice(args);
        self.home.run(&all)
    }

    /// The record of `id`.
    pub fn get(&self, id: &str) -> Value {
        self.home.run(&["get", id, "--json"]).ok().json()
    }

    /// Every record.
    pub fn records(&self) -> Vec<Value> {
        self.home
            .run(&["list", "--json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .clone()
    }

    /// The work folders on `host` (this test's data folder).
    pub fn work_folders(&self, host: &str) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.data_dir(host).join("work")) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// What of sandbox `id` is left on `host`: containers labelled with it
    /// (on the shared engine) and its work folder.
    pub fn leftovers(&self, host: &str, id: &str) -> Vec<String> {
        let mut left: Vec<String> = containers(id)
            .into_iter()
            .map(|c| format!("container {c}"))
            .collect();
        let work = self.data_dir(host).join("work").join(id);
        if work.exists() {
            left.push(format!("work folder {}", work.display()));
        }
        left
    }

    /// Panics unless nothing of `id` is left on `host`.
    #[track_caller]
    pub fn assert_clean(&self, host: &str, id: &str) {
        let left = self.leftovers(host, id);
        assert!(left.is_empty(), "{id} left on {host}: {left:?}");
    }

    /// Wait (at most 60 s) until no process on this machine, where the
    /// testbed's sshd hosts run their sessions, mentions `id` in its
    /// command line: whatever a killed session had started for the
    /// sandbox (a compose run, a tar) has ended.
    #[track_caller]
    pub fn wait_processes_gone(&self, id: &str) {
        let mentions = || -> Vec<String> {
            let me = std::process::id().to_string();
            std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy() != me)
                .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .filter(|c| c.contains(id))
                .collect()
        };
        let ended = wait::within(Duration::from_secs(60), || {
            mentions().is_empty().then_some(())
        });
        assert!(
            ended.is_some(),
            "processes of {id} still running after 60 s: {:?}",
            mentions()
        );
    }

    /// A folder of this home (for consumer repos and markers).
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.home.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        // End whatever the test left live (a failed assertion half-way).
        let list = self.home.run(&["list", "--json"]);
        if let Ok(Value::Array(recs)) = serde_json::from_str::<Value>(&list.stdout) {
            for r in recs {
                let id = r["id"].as_str().unwrap_or_default().to_string();
                if r["state"] != "destroyed" {
                    let _ = self
                        .home
                        .command(&["destroy", &id])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
                let left = containers(&id);
                if !left.is_empty() {
                    let _ = Command::new("docker")
                        .args(["rm", "-f", "-v"])
                        .args(&left)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        for h in HOSTS {
            let dir = self.data_dir(h.name);
            if dir.exists() && std::fs::remove_dir_all(&dir).is_err() {
                // Not root: remove it as the hosts' SSH user.
                let _ = Command::new("ssh")
                    .args(ssh_args(&self.tb, h.address))
                    .arg(format!("rm -rf '{}'", dir.display()))
                    .stdin(Stdio::null())
                    .status();
            }
        }
    }
}

/// `ssh` options for the testbed's user on `address` (then the command).
pub(crate) fn ssh_args(tb: &Testbed, address: &str) -> Vec<String> {
    vec![
        "-F".into(),
        "/dev/null".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", tb.known_hosts.display()),
        "-i".into(),
        tb.identity_file.display().to_string(),
        "-p".into(),
        sandboxer_testkit::testbed::SSH_PORT.to_string(),
        format!("sbxhost@{address}"),
    ]
}

/// A TOML string.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A compose profile `id` with one route per `(placement, bind address)`.
pub(crate) fn compose_profile(id: &str, ttl: &str, routes: &[(&[&str], &str)]) -> String {
    let mut s = format!(
        "id = {}\nversion = 1\ndescription = \"the compose stack, ports on one loopback address (tests)\"\n\
         default_ttl = {}\nmax_ttl = \"2h\"\nready_timeout = \"60s\"\n\n\
         [inputs.repo]\nrequired = true\nhelp = \"the consumer repo\"\n",
        q(id),
        q(ttl)
    );
    for (placement, bind) in routes {
        let hosts: Vec<String> = placement.iter().map(|h| q(h)).collect();
        s.push_str(&format!(
            "\n[[routes]]\nextension = \"ext.compose-ssh\"\nplacement = [{}]\nprice_per_hour = \"0\"\n\
             [routes.config]\ncompose_file = \"docker-compose.e2e.yml\"\nfallback_compose_files = [\"compose.yaml\"]\n\
             stop_timeout = \"5s\"\nenv = {{ E2E_BIND_IP = {} }}\n",
            hosts.join(", "),
            q(bind)
        ));
    }
    s
}

/// `examples/compose-e2e-repo`.
pub(crate) fn example_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
        .join("compose-e2e-repo")
        .canonicalize()
        .unwrap()
}

/// A consumer repo at `dir` whose compose file is `compose`.
fn repo_with(dir: &Path, compose: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("site")).unwrap();
    std::fs::write(dir.join("site").join("index.html"), "<h1>test repo</h1>\n").unwrap();
    std::fs::write(dir.join("docker-compose.e2e.yml"), compose).unwrap();
    dir.to_path_buf()
}

/// Containers labelled with sandbox `id` (any state).
pub(crate) fn containers(id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={LABEL}={id}")])
        .output()
        .expect("docker ps");
    assert!(
        out.status.success(),
        "docker ps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// `GET /` from `address:port`: the whole response.
pub(crate) fn http_get(address: &str, port: u16) -> std::io::Result<String> {
    let addr: SocketAddr = format!("{address}:{port}").parse().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn id_of(rec: &Value) -> String {
    rec["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {rec:#}"))
        .to_string()
}

/// The published port of service `web`.
fn web_port(rec: &Value) -> u16 {
    let p = &rec["reachability"]["ports"]["web"][0];
    assert_eq!(p["target"], 80, "{rec:#}");
    assert_eq!(p["protocol"], "tcp", "{rec:#}");
    p["published"].as_u64().unwrap() as u16
}

/// A ready compose sandbox on `host`, reachable at `address`, serving the
/// example repo's page.
#[track_caller]
fn assert_ready_on(rec: &Value, host: &str, address: &str) {
    assert_eq!(rec["state"], "ready", "{rec:#}");
    assert_eq!(rec["host"], host, "{rec:#}");
    assert_eq!(rec["extension"], "ext.compose-ssh", "{rec:#}");
    assert_eq!(rec["reachability"]["address"], address, "{rec:#}");
    assert_eq!(
        rec["reachability"]["details"]["project"], rec["id"],
        "{rec:#}"
    );
    let page = http_get(address, web_port(rec)).unwrap();
    assert!(
        page.starts_with("HTTP/1.") && page.contains("hello from compose-e2e-repo"),
        "{page}"
    );
}

/// The `skipped` entries of a record's route trace as `(host, reason)`.
fn skipped(rec: &Value) -> Vec<(String, String)> {
    rec["route"]["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["host"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The `{"error": ...}` of a failed command run with `--json`.
fn error_of(run: &Run) -> (String, String) {
    let v = run.json();
    (
        v["error"]["kind"].as_str().unwrap_or_default().to_string(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Wait (bounded) for `child` to end; kill it past `limit`.
fn wait_child(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    wait::exit_of(child, limit).unwrap_or_else(|| child.wait().unwrap())
}

fn read_all(mut r: impl std::io::Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

fn addr(name: &str) -> &'static str {
    HOSTS.iter().find(|h| h.name == name).unwrap().address
}

// --------------------------------------------------------------------- tests

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn full_lifecycle_on_two_hosts_a_full_host_moves_placement_on() {
    let bed = Bed::new("full_lifecycle_on_two_hosts");
    bed.write_hosts(&[
        bed.host("sandboxer01").capacity(1),
        bed.host("coulombcore").capacity(1),
    ]);
    bed.write_profile(&[
        (&["sandboxer01"], addr("sandboxer01")),
        (&["coulombcore"], addr("coulombcore")),
    ]);
    let repo = example_repo();

    let started = Instant::now();
    let a = bed.create(&repo, &[]).ok().json();
    let a_time = started.elapsed();
    assert_ready_on(&a, "sandboxer01", "127.0.0.2");
    let a_id = id_of(&a);
    assert_eq!(a["profile"], "profile.compose-e2e");
    assert_eq!(a["inputs"]["repo"], repo.display().to_string());
    assert_eq!(a["route"]["chosen"]["host"], "sandboxer01");
    assert!(skipped(&a).is_empty(), "{a:#}");
    assert!(a["ready_at"].is_string() && a["ended_at"].is_null());
    assert_eq!(
        bed.work_folders("sandboxer01"),
        [a_id.as_str()],
        "the repo went to sandboxer01's work folder"
    );
    assert_eq!(containers(&a_id).len(), 1);

    // sandboxer01 is full (1/1): the second one moves on to coulombcore.
    let b = bed.create(&repo, &[]).ok().json();
    assert_ready_on(&b, "coulombcore", "127.0.0.3");
    let b_id = id_of(&b);
    assert_eq!(
        skipped(&b),
        [(
            "sandboxer01".to_string(),
            "at capacity (1/1 live)".to_string()
        )],
        "{b:#}"
    );
    assert_eq!(bed.work_folders("coulombcore"), [b_id.as_str()]);
    eprintln!("create to ready on sandboxer01: {a_time:?}");

    // get, list and the human summary agree.
    let got = bed.get(&a_id);
    assert_eq!(got, a);
    let live = bed.home.run(&["list", "--live", "--json"]).ok().json();
    assert_eq!(live.as_array().unwrap().len(), 2);
    let table = bed.home.run(&["list"]).ok().stdout;
    assert!(
        table.contains(&a_id) && table.contains(&b_id) && table.contains("coulombcore"),
        "{table}"
    );
    let human = bed.home.run(&["get", &b_id]).ok().stdout;
    assert!(
        human.contains("coulombcore (ext.compose-ssh)") && human.contains("127.0.0.3"),
        "{human}"
    );
    let hosts = bed.home.run(&["hosts", "list", "--json"]).ok().json();
    for h in hosts.as_array().unwrap() {
        if h["name"] != "local" {
            assert_eq!(h["live"], 1, "{hosts:#}");
            assert_eq!(h["reachable"], true, "{hosts:#}");
        }
    }

    // Both hosts full: no placement, every rejection listed, nothing made.
    let before = bed.records();
    let full = bed.create(&repo, &[]).expect_code(9);
    let (kind, msg) = error_of(&full);
    assert_eq!(kind, "no_placement", "{msg}");
    assert!(
        msg.contains("ext.compose-ssh on sandboxer01: at capacity (1/1 live)")
            && msg.contains("ext.compose-ssh on coulombcore: at capacity (1/1 live)"),
        "{msg}"
    );
    assert_eq!(bed.records(), before, "a refused create records nothing");

    // Destroy both: down, containers and work folders gone.
    for (id, host) in [(&a_id, "sandboxer01"), (&b_id, "coulombcore")] {
        let d = bed.home.run(&["destroy", id, "--json"]).ok().json();
        assert_eq!(d["state"], "destroyed", "{d:#}");
        assert_eq!(d["reason"], "destroyed");
        assert!(d["ended_at"].is_string());
        bed.assert_clean(host, id);
    }
    assert!(
        http_get("127.0.0.2", web_port(&a)).is_err(),
        "the port is closed after destroy"
    );
    // Destroying again changes nothing.
    let again = bed.home.run(&["destroy", &a_id, "--json"]).ok().json();
    assert_eq!(again["state"], "destroyed");
    // The slot is free again.
    let c = bed.create(&repo, &[]).ok().json();
    assert_ready_on(&c, "sandboxer01", "127.0.0.2");
    bed.home.run(&["destroy", &id_of(&c)]).ok();
    bed.assert_clean("sandboxer01", &id_of(&c));
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn host_flag_and_sandboxer_host_override_the_placement() {
    let bed = Bed::new("host_flag_and_sandboxer_host_override");
    bed.write_hosts(&[bed.host("sandboxer01"), bed.host("coulombcore")]);
    // Placement says sandboxer01 first; the ports bind where the pin sends
    // the sandbox.
    bed.write_profile(&[(&["sandboxer01", "coulombcore"], addr("coulombcore"))]);
    let repo = example_repo();

    let explain = |args: &[&str], env: Option<&str>| -> Value {
        let mut all = vec![
            "route",
            "explain",
            "--profile",
            "profile.compose-e2e",
            "--json",
        ];
        all.extend_from_slice(args);
        let mut c = bed.home.command(&all);
        if let Some(h) = env {
            c.env("SANDBOXER_HOST", h);
        }
        let run: Run = c.output().unwrap().into();
        run.ok().json()
    };
    let hosts_of = |d: &Value| -> Vec<String> {
        d["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["host"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        hosts_of(&explain(&[], None)),
        ["sandboxer01", "coulombcore"]
    );
    assert_eq!(
        hosts_of(&explain(&["--host", "coulombcore"], None)),
        ["coulombcore"]
    );
    assert_eq!(
        hosts_of(&explain(&[], Some("coulombcore"))),
        ["coulombcore"]
    );
    // The flag wins over the environment.
    assert_eq!(
        hosts_of(&explain(&["--host", "sandboxer01"], Some("coulombcore"))),
        ["sandboxer01"]
    );
    // `local` only when asked for by name.
    assert_eq!(hosts_of(&explain(&["--host", "local"], None)), ["local"]);

    // --host
    let a = bed.create(&repo, &["--host", "coulombcore"]).ok().json();
    assert_ready_on(&a, "coulombcore", "127.0.0.3");
    assert!(skipped(&a).is_empty(), "pinned: nothing else considered");
    assert!(a["route"]["remaining"]
        .as_array()
        .is_none_or(|r| r.is_empty()));
    // SANDBOXER_HOST
    let input = format!("repo={}", repo.display());
    let run: Run = bed
        .home
        .command(&[
            "create",
            "--profile",
            "profile.compose-e2e",
            "--input",
            &input,
            "--json",
        ])
        .env("SANDBOXER_HOST", "coulombcore")
        .output()
        .unwrap()
        .into();
    let b = run.ok().json();
    assert_ready_on(&b, "coulombcore", "127.0.0.3");
    assert!(bed.work_folders("sandboxer01").is_empty());

    // A pin to an unknown host is refused before anything is recorded.
    let before = bed.records();
    let bad = bed.create(&repo, &["--host", "nosuchhost"]).expect_code(3);
    let (kind, msg) = error_of(&bad);
    assert_eq!(kind, "not_found", "{msg}");
    assert!(msg.contains("unknown host `nosuchhost`"), "{msg}");
    assert_eq!(bed.records(), before);

    for rec in [&a, &b] {
        bed.home.run(&["destroy", &id_of(rec)]).ok();
        bed.assert_clean("coulombcore", &id_of(rec));
    }
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn a_stopped_sshd_moves_placement_to_the_next_host() {
    let bed = Bed::new("a_stopped_sshd_moves_placement_to_the_next_host");
    bed.write_hosts(&[bed.host(SPARE_HOST), bed.host("coulombcore")]);
    bed.write_profile(&[(&[SPARE_HOST, "coulombcore"], addr("coulombcore"))]);
    let repo = example_repo();

    let lock = bed.tb.lock_spare().unwrap();
    let rec = {
        let _stopped = lock.stop().unwrap();
        let hosts = bed.home.run(&["hosts", "list", "--json"]).ok().json();
        let spare = hosts
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == SPARE_HOST)
            .unwrap()
            .clone();
        assert_eq!(spare["reachable"], false, "{spare:#}");
        bed.create(&repo, &[]).ok().json()
    };
    drop(lock);
    assert_ready_on(&rec, "coulombcore", "127.0.0.3");
    let skipped = skipped(&rec);
    assert_eq!(skipped.len(), 1, "{rec:#}");
    assert_eq!(skipped[0].0, SPARE_HOST);
    assert!(
        skipped[0]
            .1
            .starts_with("tried and failed: connect on spare01 (ext.compose-ssh): cannot reach spare01 (127.0.0.4:2222)"),
        "{skipped:?}"
    );
    assert!(
        bed.work_folders(SPARE_HOST).is_empty(),
        "nothing was made on the stopped host"
    );
    let id = id_of(&rec);
    bed.home.run(&["destroy", &id]).ok();
    bed.assert_clean("coulombcore", &id);
}

/// "A compose profile never falls back to local unless asked for by name":
/// with every SSH host down or full, create ends with exit 9 listing every
/// rejection, and nothing is made on `local`.
#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn all_ssh_hosts_down_or_full_is_no_placement_never_local() {
    let bed = Bed::new("all_ssh_hosts_down_or_full_is_no_placement");
    let repo = example_repo();

    // What each case got: (case, exit code, error kind, message, every
    // rejection listed).
    let mut got = Vec::new();

    // Every host down.
    bed.write_hosts(&[
        bed.down_host("down01", "127.0.0.2"),
        bed.down_host("down02", "127.0.0.3"),
    ]);
    bed.write_profile(&[(&["down01", "down02"], "127.0.0.2")]);
    let run = bed.create(&repo, &[]);
    let (kind, msg) = error_of(&run);
    assert_nothing_on_local(&bed);
    let listed =
        msg.contains("ext.compose-ssh on down01: ") && msg.contains("ext.compose-ssh on down02: ");
    got.push(("all hosts down", run.code, kind, msg, listed));

    // One down, the other full.
    bed.write_hosts(&[
        bed.down_host("down01", "127.0.0.2"),
        bed.host("coulombcore").capacity(1),
    ]);
    bed.write_profile(&[(&["down01", "coulombcore"], addr("coulombcore"))]);
    let first = bed.create(&repo, &[]).ok().json();
    assert_ready_on(&first, "coulombcore", "127.0.0.3");
    let run = bed.create(&repo, &[]);
    let (kind, msg) = error_of(&run);
    assert_nothing_on_local(&bed);
    let listed = msg.contains("ext.compose-ssh on down01: ")
        && msg.contains("ext.compose-ssh on coulombcore: at capacity (1/1 live)");
    got.push(("one host down, the other full", run.code, kind, msg, listed));
    bed.home.run(&["destroy", &id_of(&first)]).ok();
    bed.assert_clean("coulombcore", &id_of(&first));

    let wrong: Vec<String> = got
        .iter()
        .filter(|(_, code, kind, _, listed)| !(*code == 9 && kind == "no_placement" && *listed))
        .map(|(case, code, kind, msg, listed)| {
            format!("{case}: exit {code} ({kind}), every rejection listed: {listed}; {msg}")
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "expected exit 9 (no_placement) listing every host with its reason:\n{}",
        wrong.join("\n")
    );
}

#[track_caller]
fn assert_nothing_on_local(bed: &Bed) {
    for r in bed.records() {
        assert_ne!(r["host"], "local", "{r:#}");
        let id = id_of(&r);
        if r["state"] != "ready" {
            assert!(containers(&id).is_empty(), "{id} has containers");
        }
    }
    assert!(
        !bed.home.data.join("work").exists(),
        "no work folder on local"
    );
}

/// A broken compose file: one whose services sandboxer reads itself fails
/// at `compose up` (before compose makes anything), one it leaves to compose
/// fails at `compose config`; either way the record names the step, the
/// command and compose's complaint, and the host keeps nothing.
#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn a_broken_compose_file_fails_and_leaves_the_host_clean() {
    let bed = Bed::new("a_broken_compose_file_fails");
    bed.write_hosts(&[bed.host("sandboxer01")]);
    bed.write_profile(&[(&["sandboxer01"], addr("sandboxer01"))]);
    let cases = [
        (
            "bad-body",
            "services:\n  web:\n    image: sandboxer/busybox:latest\n    bogus_key_xyz: [this is: not, valid\n",
            "compose up",
            "-f docker-compose.e2e.yml -f .sandboxer-compose.override.yml up -d`",
        ),
        (
            "bad-shape",
            "services:\n  web:\n    image: sandboxer/busybox:latest\n  - not a mapping\n",
            "compose config",
            "-f docker-compose.e2e.yml config --services`",
        ),
    ];
    for (name, text, step, command) in cases {
        let repo = repo_with(&bed.scratch(name), text);
        let run = bed.create(&repo, &[]).expect_code(5);
        let (kind, msg) = error_of(&run);
        assert_eq!(kind, "provision_failed", "{msg}");
        let rec = bed.records().pop().unwrap();
        let id = id_of(&rec);
        assert_eq!(rec["state"], "failed", "{rec:#}");
        let reason = rec["reason"].as_str().unwrap();
        eprintln!("{name}: {reason}");
        assert!(
            reason.starts_with(&format!(
                "failed: provision on sandboxer01 (ext.compose-ssh): step `{step}` on sandboxer01: `"
            )),
            "{name}: {reason}"
        );
        assert!(
            reason.contains(&format!("-p {id} {command} exited with status 1:")),
            "{name}: the command: {reason}"
        );
        let tail = reason.split_once("exited with status 1:\n").unwrap().1;
        assert!(
            tail.contains("ERROR") || tail.to_lowercase().contains("yaml"),
            "{name}: the stderr tail: {reason}"
        );
        assert!(msg.contains(reason.trim_start_matches("failed: ")), "{msg}");
        bed.assert_clean("sandboxer01", &id);
    }
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn a_port_conflict_fails_and_leaves_the_host_clean() {
    let bed = Bed::new("a_port_conflict_fails");
    bed.write_hosts(&[bed.host("sandboxer01")]);
    bed.write_profile(&[(&["sandboxer01"], addr("sandboxer01"))]);
    // Hold a port on sandboxer01's address; the stack wants the same one.
    let taken = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let repo = repo_with(
        &bed.scratch("conflict-repo"),
        &format!(
            "services:\n  web:\n    image: {}\n    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n    init: true\n    volumes:\n      - ./site:/www:ro\n    ports:\n      - \"127.0.0.2:{port}:80\"\n",
            bed.tb.image
        ),
    );
    let run = bed.create(&repo, &[]).expect_code(5);
    let (kind, msg) = error_of(&run);
    assert_eq!(kind, "provision_failed", "{msg}");
    let rec = bed.records().pop().unwrap();
    let id = id_of(&rec);
    assert_eq!(rec["state"], "failed", "{rec:#}");
    let reason = rec["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("failed: provision on sandboxer01 (ext.compose-ssh): step `compose up` on sandboxer01: `"),
        "{reason}"
    );
    assert!(
        reason.contains(&format!(
            "-p {id} -f docker-compose.e2e.yml -f .sandboxer-compose.override.yml up -d` exited with status 1:"
        )),
        "the command: {reason}"
    );
    assert!(
        reason.contains("address already in use") || reason.contains("port is already allocated"),
        "the stderr tail: {reason}"
    );
    bed.assert_clean("sandboxer01", &id);
    drop(taken);
}

/// The SSH connection to the only host dies while `create` runs `compose
/// up` there (spare01's sshd and its sessions are stopped). What this test
/// saw when it was written: the create ends `failed` (exit 5) naming the
/// step that lost the connection; the extension's own rollback cannot run
/// over the dead connection (its error says so), so the work folder (and,
/// when `up` got far enough, containers) stay on the host; once the host
/// is back, `reap-stale` finds them as an orphan of the failed record,
/// tears them down and closes the record (`reaped`).
#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn an_ssh_connection_killed_mid_provision_fails_and_reap_stale_cleans_up() {
    let bed = Bed::new("an_ssh_connection_killed_mid_provision");
    bed.write_hosts(&[bed.host(SPARE_HOST)]);
    bed.write_profile(&[(&[SPARE_HOST], addr(SPARE_HOST))]);
    let repo = example_repo();
    let input = format!("repo={}", repo.display());
    let work = bed.data_dir(SPARE_HOST).join("work");

    let lock = bed.tb.lock_spare().unwrap();
    let (status, stdout) = {
        let mut child = bed
            .home
            .command(&[
                "create",
                "--profile",
                "profile.compose-e2e",
                "--input",
                &input,
                "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The override is written right before `compose up`.
        // (A create that ended before is no use either: the wait gives up.)
        let seen = wait::within(Duration::from_secs(60), || {
            let written = std::fs::read_dir(&work).ok().is_some_and(|mut rd| {
                rd.any(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().join(".sandboxer-compose.override.yml").exists())
                })
            });
            if written {
                Some(true)
            } else {
                child.try_wait().unwrap().map(|_| false)
            }
        });
        assert_eq!(
            seen,
            Some(true),
            "create never got to `compose up` on spare01"
        );
        let stopped = lock.stop().unwrap();
        let status = wait_child(&mut child, Duration::from_secs(90));
        let stdout = read_all(child.stdout.take().unwrap());
        drop(stopped);
        (status, stdout)
    };
    drop(lock);
    eprintln!("create with the connection killed: {status}; {stdout}");
    let rec = bed.records().pop().unwrap();
    let id = id_of(&rec);
    if rec["state"] == "ready" {
        // `up` finished before the sessions were killed: nothing to see,
        // but then it must be a working sandbox.
        eprintln!("the create finished before the connection died");
        assert_eq!(status.code(), Some(0));
    } else {
        assert_eq!(status.code(), Some(5), "{stdout}");
        assert_eq!(rec["state"], "failed", "{rec:#}");
        let reason = rec["reason"].as_str().unwrap();
        eprintln!("failed reason: {reason}");
        assert!(
            reason.starts_with("failed: provision on spare01 (ext.compose-ssh): step `"),
            "{reason}"
        );
        assert!(reason.contains("the SSH connection to spare01"), "{reason}");
        eprintln!(
            "left on spare01 after the failed create: {:?}",
            bed.leftovers(SPARE_HOST, &id)
        );
    }

    // With the host back, the reaper finds what is left and removes it.
    let report = bed
        .home
        .run(&["reap-stale", "--grace", "0s", "--json"])
        .ok()
        .json();
    eprintln!("reap-stale: {report:#}");
    if rec["state"] == "ready" {
        bed.home.run(&["destroy", &id]).ok();
    }
    // Anything compose was still doing when its session died has ended.
    bed.wait_processes_gone(&id);
    bed.assert_clean(SPARE_HOST, &id);
    let after = bed.get(&id);
    assert!(
        after["state"] == "destroyed" || after["state"] == "failed",
        "{after:#}"
    );
    let again = bed
        .home
        .run(&["inspect", "stale", "--grace", "0s", "--json"])
        .ok()
        .json();
    assert!(again["items"].as_array().unwrap().is_empty(), "{again:#}");
}

/// Where a create is killed: once its work folder exists (upload), or a
/// moment after the override is written (`compose up` runs).
#[derive(Debug, Clone, Copy)]
enum KillAt {
    Upload,
    ComposeUp,
}

/// Start a create and SIGKILL it at `at`; the record it left (bounded
/// retries when the create finished first).
fn create_killed_at(bed: &Bed, host: &str, at: KillAt) -> Value {
    let input = format!("repo={}", example_repo().display());
    let work = bed.data_dir(host).join("work");
    for attempt in 0..10u64 {
        let before = bed.work_folders(host);
        let mut child = bed
            .home
            .command(&[
                "create",
                "--profile",
                "profile.compose-e2e",
                "--input",
                &input,
                "--json",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let reached = || {
            let new: Vec<String> = bed
                .work_folders(host)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            match at {
                KillAt::Upload => !new.is_empty(),
                KillAt::ComposeUp => new.iter().any(|f| {
                    work.join(f)
                        .join(".sandboxer-compose.override.yml")
                        .exists()
                }),
            }
        };
        while !reached()
            && started.elapsed() < Duration::from_secs(30)
            && child.try_wait().unwrap().is_none()
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        if let KillAt::ComposeUp = at {
            std::thread::sleep(Duration::from_millis(300 / (attempt + 1)));
        }
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let _ = child.wait();
        let rec = bed.records().pop().unwrap();
        if rec["state"] == "provisioning" {
            return rec;
        }
        bed.home.run(&["destroy", &id_of(&rec)]).ok();
    }
    panic!("no create was caught mid-way ({at:?}) in 10 attempts");
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn sigkill_of_the_cli_mid_create_leaves_an_orphan_that_reap_stale_removes() {
    let bed = Bed::new("sigkill_of_the_cli_mid_create");
    bed.write_hosts(&[bed.host("sandboxer01")]);
    bed.write_profile(&[(&["sandboxer01"], addr("sandboxer01"))]);

    for at in [KillAt::Upload, KillAt::ComposeUp] {
        let rec = create_killed_at(&bed, "sandboxer01", at);
        let id = id_of(&rec);
        let left = bed.leftovers("sandboxer01", &id);
        eprintln!("killed at {at:?}; left on sandboxer01: {left:?}");
        assert!(!left.is_empty(), "{at:?}: the create had made something");

        let stale = bed
            .home
            .run(&["inspect", "stale", "--grace", "0s", "--json"])
            .ok()
            .json();
        let items = stale["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{stale:#}");
        assert_eq!(items[0]["kind"], "orphan");
        assert_eq!(items[0]["sandbox_id"], id.as_str());
        assert_eq!(items[0]["host"], "sandboxer01");
        assert!(
            items[0]["detail"]
                .as_str()
                .unwrap()
                .contains("its provisioning process"),
            "{stale:#}"
        );

        let dry = bed
            .home
            .run(&["reap-stale", "--dry-run", "--grace", "0s", "--json"])
            .ok()
            .json();
        assert_eq!(dry["reaped"][0]["outcome"], "would reap");
        assert_eq!(
            bed.get(&id)["state"],
            "provisioning",
            "a dry run changes nothing"
        );

        let report = bed
            .home
            .run(&["reap-stale", "--grace", "0s", "--json"])
            .ok()
            .json();
        assert_eq!(report["reaped"].as_array().unwrap().len(), 1, "{report:#}");
        assert_eq!(report["reaped"][0]["ok"], true, "{report:#}");
        let after = bed.get(&id);
        assert_eq!(after["state"], "destroyed", "{after:#}");
        assert_eq!(after["reason"], "reaped");
        bed.assert_clean("sandboxer01", &id);
        // Whatever the killed create had started on the host has ended and
        // made nothing after the reap.
        bed.wait_processes_gone(&id);
        bed.assert_clean("sandboxer01", &id);
        let again = bed
            .home
            .run(&["reap-stale", "--grace", "0s", "--json"])
            .ok()
            .json();
        assert!(again["reaped"].as_array().unwrap().is_empty(), "{again:#}");
    }
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn two_concurrent_reapers_end_each_stale_sandbox_once() {
    let bed = Bed::new("two_concurrent_reapers");
    // Capacity 1 each: the second create moves on to coulombcore. (Not
    // `--host`: a pin applies to every own-host route, including the one
    // whose ports bind to the other host's address.)
    bed.write_hosts(&[
        bed.host("sandboxer01").capacity(1),
        bed.host("coulombcore").capacity(1),
    ]);
    // TTL 1s: ready already past its expiry.
    bed.home.write_profile(
        "compose-e2e.toml",
        &compose_profile(
            "profile.compose-e2e",
            "1s",
            &[
                (&["sandboxer01"], addr("sandboxer01")),
                (&["coulombcore"], addr("coulombcore")),
            ],
        ),
    );
    let repo = example_repo();
    let a = bed.create(&repo, &[]).ok().json();
    assert_ready_on(&a, "sandboxer01", "127.0.0.2");
    let b = bed.create(&repo, &[]).ok().json();
    assert_ready_on(&b, "coulombcore", "127.0.0.3");
    let ids = [(id_of(&a), "sandboxer01"), (id_of(&b), "coulombcore")];
    // A create can be quicker than the TTL: wait until both have expired.
    for rec in [&a, &b] {
        let exp = chrono::DateTime::parse_from_rfc3339(rec["expires_at"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc);
        while chrono::Utc::now() <= exp + chrono::Duration::milliseconds(50) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    let spawn = || {
        bed.home
            .command(&["reap-stale", "--grace", "0s", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (r1, r2) = (spawn(), spawn());
    let mut outcomes = Vec::new();
    for child in [r1, r2] {
        let run: Run = child.wait_with_output().unwrap().into();
        let run = run.ok();
        let v = run.json();
        for r in v["reaped"].as_array().unwrap() {
            assert_eq!(r["ok"], true, "{v:#}");
            outcomes.push((
                r["sandbox_id"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            ));
        }
    }
    eprintln!("two reapers: {outcomes:?}");
    for (id, host) in &ids {
        assert!(
            outcomes.iter().any(|(o, _)| o == id),
            "{id} was reaped by neither: {outcomes:?}"
        );
        let rec = bed.get(id);
        assert_eq!(rec["state"], "destroyed", "{rec:#}");
        assert_eq!(rec["reason"], "expired", "the first reason stays: {rec:#}");
        bed.assert_clean(host, id);
    }
    let again = bed
        .home
        .run(&["reap-stale", "--grace", "0s", "--json"])
        .ok()
        .json();
    assert!(again["reaped"].as_array().unwrap().is_empty(), "{again:#}");
}

/// Shell syntax in the `repo` input never reaches a shell: as a path that
/// does not exist it is refused, as the name of a real folder it is simply
/// that folder.
#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn injection_inputs_run_nothing() {
    let bed = Bed::new("injection_inputs_run_nothing");
    bed.write_hosts(&[bed.host("sandboxer01")]);
    bed.write_profile(&[(&["sandboxer01"], addr("sandboxer01"))]);
    let marks = bed.scratch("marks");
    let mark = |n: &str| marks.join(n).display().to_string();
    let literal_existed = Path::new("/tmp/pwned").exists();

    let bad = [
        "/tmp/x; touch /tmp/pwned".to_string(),
        format!("/tmp/x; touch {}", mark("semicolon")),
        format!("$(touch {})", mark("dollar")),
        format!("`touch {}`", mark("backtick")),
        format!("/tmp/x' && touch {} && echo '", mark("quote")),
        format!("/tmp/x\ntouch {}", mark("newline")),
    ];
    for value in &bad {
        let input = format!("repo={value}");
        let run = bed.home.run(&[
            "create",
            "--profile",
            "profile.compose-e2e",
            "--input",
            &input,
            "--json",
        ]);
        assert_ne!(run.code, 0, "{value}: {}", run.stdout);
        let (_, msg) = error_of(&run);
        assert!(
            msg.contains("input `repo`") && msg.contains("on this machine"),
            "{value}: {msg}"
        );
    }
    // Real folders whose names are shell syntax: they are just folders.
    let odd = [
        PathBuf::from(format!(
            "{}/x; touch {} #",
            bed.scratch("repos").display(),
            mark("folder-semicolon")
        )),
        PathBuf::from(format!(
            "{}/$(touch {})",
            bed.scratch("repos").display(),
            mark("folder-dollar")
        )),
    ];
    let mut made = Vec::new();
    for dir in &odd {
        std::fs::create_dir_all(dir).unwrap();
        for f in ["docker-compose.e2e.yml", "site/index.html"] {
            std::fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
            std::fs::copy(example_repo().join(f), dir.join(f)).unwrap();
        }
        let rec = bed.create(dir, &[]).ok().json();
        assert_ready_on(&rec, "sandboxer01", "127.0.0.2");
        assert_eq!(rec["inputs"]["repo"], dir.display().to_string());
        made.push(id_of(&rec));
    }
    let left: Vec<_> = std::fs::read_dir(&marks).unwrap().flatten().collect();
    assert!(left.is_empty(), "something ran: {left:?}");
    if !literal_existed {
        assert!(!Path::new("/tmp/pwned").exists(), "/tmp/pwned was made");
    }
    for id in &made {
        bed.home.run(&["destroy", id]).ok();
    }
    for r in bed.records() {
        bed.assert_clean("sandboxer01", &id_of(&r));
    }
    assert!(bed.work_folders("sandboxer01").is_empty());
}

/// A host whose key is not in known_hosts is refused before anything runs
/// there; `hosts trust` makes it usable.
#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn an_unknown_host_key_is_refused_until_trusted() {
    let bed = Bed::new("an_unknown_host_key_is_refused");
    bed.write_hosts(&[bed.host("sandboxer01").unknown_key()]);
    bed.write_profile(&[(&["sandboxer01"], addr("sandboxer01"))]);
    let repo = example_repo();
    let run = bed.create(&repo, &[]);
    assert_ne!(run.code, 0);
    let v = run.json();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("unknown host key for sandboxer01 ([127.0.0.2]:2222), ssh-ed25519 SHA256:"),
        "{msg}"
    );
    assert!(
        v["error"]["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("sandboxer hosts trust sandboxer01"),
        "{v:#}"
    );
    assert!(
        !bed.data_dir("sandboxer01").exists(),
        "nothing ran on the host, not even a mkdir"
    );
    assert!(!bed.home.config.join("known_hosts").exists());

    let t = bed
        .home
        .run(&["hosts", "trust", "sandboxer01", "--json"])
        .ok()
        .json();
    assert!(msg.contains(t["fingerprint"].as_str().unwrap()), "{t:#}");
    let rec = bed.create(&repo, &[]).ok().json();
    assert_ready_on(&rec, "sandboxer01", "127.0.0.2");
    bed.home.run(&["destroy", &id_of(&rec)]).ok();
    bed.assert_clean("sandboxer01", &id_of(&rec));
}

/// Exit code 11 is documented for refused SSH host keys (`sandboxer
/// --help`, README); create reports an unknown key as such.
#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn an_unknown_host_key_exits_unauthorized() {
    let bed = Bed::new("an_unknown_host_key_exits_unauthorized");
    bed.write_hosts(&[bed.host("sandboxer01").unknown_key()]);
    bed.write_profile(&[(&["sandboxer01"], addr("sandboxer01"))]);
    let run = bed.create(&example_repo(), &[]);
    let (kind, msg) = error_of(&run);
    assert_eq!((run.code, kind.as_str()), (11, "unauthorized"), "{msg}");
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn a_host_with_its_own_data_dir_keeps_its_stacks_apart_from_other_homes() {
    // Two homes on the same host and engine: one's reaper must not take the
    // other's stack for an orphan.
    let bed = Bed::new("stacks_apart_from_other_homes");
    bed.write_hosts(&[bed.host("sandboxer01")]);
    bed.write_profile(&[(&["sandboxer01"], addr("sandboxer01"))]);
    let rec = bed.create(&example_repo(), &[]).ok().json();
    let id = id_of(&rec);

    let other = Bed::new("stacks_apart_from_other_homes (other)");
    other.write_hosts(&[other.host("sandboxer01")]);
    other.write_profile(&[(&["sandboxer01"], addr("sandboxer01"))]);
    let stale = other
        .home
        .run(&["inspect", "stale", "--grace", "0s", "--json"])
        .ok()
        .json();
    let theirs: Vec<_> = stale["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["sandbox_id"] == id.as_str())
        .collect();
    assert!(
        theirs.is_empty(),
        "another home's stack is not an orphan: {stale:#}"
    );
    other
        .home
        .run(&["reap-stale", "--grace", "0s", "--json"])
        .ok();
    assert_ready_on(&bed.get(&id), "sandboxer01", "127.0.0.2");
    assert_eq!(containers(&id).len(), 1);
    bed.home.run(&["destroy", &id]).ok();
    bed.assert_clean("sandboxer01", &id);
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn a_remote_caller_uploads_its_repo_and_gets_a_stack_then_the_upload_goes_with_it() {
    let bed = Bed::new("a_remote_caller_uploads_its_repo");
    bed.write_hosts(&[bed.host("sandboxer01")]);
    bed.write_profile(&[(&["sandboxer01"], addr("sandboxer01"))]);
    let agt = crate::http::token(&bed.home, "agt:remote");
    let s = crate::http::Served::start(&bed.home, &["--reap-interval", "0s"]);
    // The agent's repo, as `tar -czf - -C REPO .` sends it.
    let up = crate::security::upload_dir(&s, &agt, &example_repo());
    let use_as = up["use_as"].as_str().unwrap().to_string();
    let upload_id = up["id"].as_str().unwrap().to_string();
    let r = s.post(
        "/v1/sandboxes",
        &agt,
        serde_json::json!({"profile": "profile.compose-e2e", "inputs": {"repo": use_as}}),
    );
    assert_eq!(r.status, 201, "{}", r.json);
    let rec = r.json;
    assert_ready_on(&rec, "sandboxer01", "127.0.0.2");
    // The record keeps the reference, never the server's folder.
    assert_eq!(rec["inputs"]["repo"], use_as.as_str());
    let page = http_get("127.0.0.2", web_port(&rec)).unwrap();
    assert!(page.contains("200"), "{page}");
    let id = id_of(&rec);
    assert_eq!(
        s.get("/v1/uploads", &agt).expect(200)[0]["used_by"],
        serde_json::json!([id])
    );
    // In use: it cannot be deleted from under the sandbox.
    let del = s.call(
        "DELETE",
        &format!("/v1/uploads/{upload_id}"),
        Some(&agt),
        None,
    );
    assert_eq!(del.status, 409, "{}", del.json);
    // Destroy: the stack is down and the upload is gone with it.
    let d = s.call("DELETE", &format!("/v1/sandboxes/{id}"), Some(&agt), None);
    assert_eq!(d.expect(200)["state"], "destroyed");
    bed.assert_clean("sandboxer01", &id);
    assert_eq!(
        s.get("/v1/uploads", &agt).expect(200),
        serde_json::json!([])
    );
    assert!(!bed.home.data.join("uploads").join(&upload_id).exists());
}

/// `scripts/smoke-remote` with this bed's home, against host `host`.
fn smoke_remote(bed: &Bed, host: &str) -> std::process::Output {
    let base = bed.home.command(&[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/smoke-remote");
    let mut c = std::process::Command::new(script);
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.env("SANDBOXER_BIN", env!("CARGO_BIN_EXE_sandboxer"))
        .env("SANDBOXER_HOST", host)
        .env("SMOKE_TIMEOUT", "10")
        .output()
        .expect("running scripts/smoke-remote")
}

#[test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
fn the_remote_smoke_passes_on_a_host_and_fails_clearly_on_a_stopped_one() {
    let bed = Bed::new("the_remote_smoke");
    bed.write_hosts(&[
        bed.host("sandboxer01"),
        bed.down_host("gone01", "127.0.0.2"),
    ]);
    bed.write_profile(&[(&["sandboxer01", "gone01"], addr("sandboxer01"))]);
    let out = smoke_remote(&bed, "sandboxer01");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "canary create -> ready",
        "canary address answers",
        "canary destroy",
        "compose create -> ready",
        "compose port answers",
        "compose destroy",
    ] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with("ok") && l.contains(step)),
            "{step}: {text}"
        );
    }
    assert!(
        text.lines().last().unwrap().starts_with("PASS in "),
        "{text}"
    );
    assert!(
        bed.home.run(&["list", "--live", "--json"]).ok().json() == serde_json::json!([]),
        "the smoke leaves nothing live"
    );

    let out = smoke_remote(&bed, "gone01");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let fail = text
        .lines()
        .find(|l| l.trim_start().starts_with("FAIL") && l.contains("canary create"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(fail.contains("gone01"), "the line says which host: {fail}");
    assert!(
        text.lines().last().unwrap().starts_with("FAIL in "),
        "{text}"
    );
}
