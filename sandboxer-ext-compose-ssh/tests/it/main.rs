//! `ext.compose-ssh` against a real docker engine, over `LocalTransport`
//! (the same code runs over SSH). Needs `scripts/testbed up` (dockerd and the
//! image `sandboxer/busybox:latest`); without it each test skips loudly, and
//! fails under CI.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use sandboxer_core::extension::{Extension, SandboxCtx};
use sandboxer_core::model::new_sandbox_id;
use sandboxer_core::transport::Transport;
use sandboxer_core::ErrorKind;
use sandboxer_ext_compose_ssh::{
    ComposeConfig, ComposeSshExtension, COMPOSE_SSH_EXTENSION_ID, OVERRIDE_FILE_NAME, SANDBOX_ENV,
    SANDBOX_LABEL,
};
use sandboxer_testkit::conformance::run_conformance;
use sandboxer_testkit::testbed::{missing, require_docker, DEFAULT_IMAGE};
use sandboxer_transport::LocalTransport;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The example consumer repo of this workspace.
fn example_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
        .join("compose-e2e-repo")
}

/// The docker engine and the testbed image, for a test that needs them (a
/// failure when either is missing).
fn docker_ready(test: &str) {
    require_docker(test);
    let present = Command::new("docker")
        .args(["image", "inspect", DEFAULT_IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        missing(
            test,
            &format!("the image {DEFAULT_IMAGE} is missing"),
            "run `scripts/testbed up`",
        );
    }
}

/// Whether `docker compose` (v2) runs here.
fn has_compose_v2() -> bool {
    Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn has_compose_v1() -> bool {
    Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The compose commands to test explicitly: v1 and v2 where present.
fn compose_commands(test: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if has_compose_v1() {
        out.push("v1");
    }
    if has_compose_v2() {
        out.push("v2");
    } else {
        eprintln!("{test}: `docker compose` (v2) is not available here; testing v1 only");
    }
    assert!(
        !out.is_empty(),
        "{test}: neither docker-compose nor docker compose runs"
    );
    out
}

/// A host data folder of its own, and `local` over it.
struct Bed {
    dir: tempfile::TempDir,
    data: PathBuf,
    transport: Arc<dyn Transport>,
}

impl Bed {
    fn new() -> Bed {
        Bed::with_data_name("data")
    }

    fn with_data_name(name: &str) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join(name);
        let transport: Arc<dyn Transport> = Arc::new(LocalTransport::new(data.clone()));
        Bed {
            dir,
            data,
            transport,
        }
    }

    fn work(&self, id: &str) -> PathBuf {
        self.data.join("work").join(id)
    }

    fn ctx(&self, id: &str, config: Value, repo: &str) -> SandboxCtx {
        make_ctx(&self.transport, id, config, repo)
    }
}

fn make_ctx(transport: &Arc<dyn Transport>, id: &str, config: Value, repo: &str) -> SandboxCtx {
    SandboxCtx {
        id: id.to_string(),
        profile: "profile.compose-e2e".into(),
        profile_version: 1,
        actor: "adm:tester".parse().unwrap(),
        config: config.as_object().cloned().unwrap_or_default(),
        inputs: BTreeMap::from([("repo".to_string(), repo.to_string())]),
        host: transport.host().to_string(),
        transport: transport.clone(),
        expires_at: sandboxer_core::model::now() + chrono::Duration::hours(1),
        ready_timeout: READY_TIMEOUT,
        created_at: sandboxer_core::model::now(),
        price_per_hour: sandboxer_core::credits::Micros::ZERO,
        restore: None,
    }
}

/// The route config the tests use: the example binds to loopback only.
fn loopback_config(extra: Value) -> Value {
    let mut cfg = json!({ "env": { "E2E_BIND_IP": "127.0.0.1" } });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    cfg
}

fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + READY_TIMEOUT
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Containers labelled with the sandbox id.
fn labelled(id: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label={SANDBOX_LABEL}={id}"),
    ])
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

/// Networks and volumes of the compose project `id`.
fn project_leftovers(id: &str) -> Vec<String> {
    let filter = format!("label=com.docker.compose.project={id}");
    let mut out: Vec<String> = docker(&["network", "ls", "-q", "--filter", &filter])
        .split_whitespace()
        .map(|n| format!("network {n}"))
        .collect();
    out.extend(
        docker(&["volume", "ls", "-q", "--filter", &filter])
            .split_whitespace()
            .map(|v| format!("volume {v}")),
    );
    out
}

/// Nothing of sandbox `id` is left on the host.
fn assert_clean(bed: &Bed, id: &str) {
    assert!(
        labelled(id).is_empty(),
        "{id}: containers left: {:?}",
        labelled(id)
    );
    assert!(
        project_leftovers(id).is_empty(),
        "{id}: left: {:?}",
        project_leftovers(id)
    );
    assert!(!bed.work(id).exists(), "{id}: work folder left");
}

/// `GET /` over plain TCP.
fn http_get(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// A copy of the example repo with version control and build outputs that
/// must not be uploaded.
fn repo_with_junk(into: &Path) -> PathBuf {
    let repo = into.join("repo");
    copy_dir(&example_repo(), &repo);
    for d in [".git/objects", "node_modules/left-pad", "target/debug"] {
        std::fs::create_dir_all(repo.join(d)).unwrap();
    }
    std::fs::write(repo.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(repo.join("node_modules/left-pad/index.js"), "//\n").unwrap();
    std::fs::write(repo.join("target/debug/app"), "bin").unwrap();
    repo
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A repo whose compose file is `compose`.
fn repo_with(into: &Path, file: &str, compose: &str) -> PathBuf {
    let repo = into.join("repo");
    let path = repo.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, compose).unwrap();
    repo
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn conformance_with_the_example_repo() {
    docker_ready("conformance_with_the_example_repo");
    let bed = Bed::new();
    let repo = example_repo().to_string_lossy().into_owned();
    let ext = Arc::new(ComposeSshExtension::new());
    let transport = bed.transport.clone();
    run_conformance(ext, &|id| {
        make_ctx(&transport, id, loopback_config(json!({})), &repo)
    })
    .await;
}

/// Create to ready, fetch index.html from the published port, tear down;
/// with v1 and v2 where present, and with detection.
#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn lifecycle_serves_the_repo_and_cleans_up() {
    docker_ready("lifecycle_serves_the_repo_and_cleans_up");
    let mut commands = vec!["auto"];
    commands.extend(compose_commands("lifecycle_serves_the_repo_and_cleans_up"));
    for command in commands {
        let bed = Bed::new();
        let repo = repo_with_junk(bed.dir.path());
        let ext = ComposeSshExtension::new();
        let id = new_sandbox_id();
        let ctx = bed.ctx(
            &id,
            loopback_config(json!({ "compose_command": command })),
            &repo.to_string_lossy(),
        );

        let t0 = Instant::now();
        let handle = ext.provision(&ctx).await.unwrap().handle;
        let provisioned = t0.elapsed();
        let ready = ext.wait_ready(&ctx, &handle, deadline()).await.unwrap();
        let to_ready = t0.elapsed();

        // The handle and the reachability.
        assert_eq!(handle["project"], id.as_str());
        assert_eq!(handle["services"], json!(["web"]));
        assert_eq!(
            handle["files"],
            json!(["docker-compose.e2e.yml", OVERRIDE_FILE_NAME])
        );
        let compose = handle["compose"].as_str().unwrap().to_string();
        if command != "auto" {
            assert_eq!(compose, command);
        }
        let r = &ready.reachability;
        assert_eq!(r.address, "127.0.0.1");
        assert_eq!(r.details["project"], id.as_str());
        assert_eq!(r.details["compose"], compose.as_str());
        assert_eq!(
            r.details["work_dir"],
            bed.work(&id).to_string_lossy().as_ref()
        );
        let web = &r.ports["web"];
        assert_eq!(web.len(), 1, "{web:?}");
        assert_eq!((web[0].target, web[0].protocol.as_str()), (80, "tcp"));
        let page = http_get(web[0].published);
        assert!(page.starts_with("HTTP/1."), "{page}");
        assert!(page.contains("hello from compose-e2e-repo"), "{page}");

        // Labelled, the id in the environment, uploaded without the junk.
        let containers = labelled(&id);
        assert_eq!(containers.len(), 1);
        let env = docker(&[
            "inspect",
            "--format",
            "{{range .Config.Env}}{{println .}}{{end}}",
            &containers[0],
        ]);
        assert!(
            env.lines().any(|l| l == format!("{SANDBOX_ENV}={id}")),
            "{env}"
        );
        let work = bed.work(&id);
        assert!(work.join("site/index.html").is_file());
        assert!(work.join("README.md").is_file());
        for junk in [".git", "node_modules", "target"] {
            assert!(!work.join(junk).exists(), "{junk} was uploaded");
        }
        let listed = ext.list_resources(bed.transport.clone()).await.unwrap();
        assert!(listed
            .iter()
            .any(|res| res.sandbox_id == id && res.running && res.name == id));

        let t1 = Instant::now();
        ext.teardown(&ctx, &handle).await.unwrap();
        let teardown = t1.elapsed();
        assert_clean(&bed, &id);
        ext.teardown(&ctx, &handle).await.unwrap();
        ext.teardown(&ctx, &Value::Null).await.unwrap();
        eprintln!(
            "TIMING compose_command={command} ({compose}): provision {:.2}s, create-to-ready {:.2}s, teardown {:.2}s",
            provisioned.as_secs_f64(),
            to_ready.as_secs_f64(),
            teardown.as_secs_f64()
        );
    }
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn broken_compose_file_fails_provision_with_the_step_and_leaves_nothing() {
    docker_ready("broken_compose_file_fails_provision");
    for command in compose_commands("broken_compose_file_fails_provision") {
        let bed = Bed::new();
        let repo = repo_with(
            bed.dir.path(),
            "docker-compose.e2e.yml",
            "services:\n  web:\n    image: sandboxer/busybox:latest\n    bogus_key_xyz: 1\n",
        );
        let ext = ComposeSshExtension::new();
        let id = new_sandbox_id();
        let ctx = bed.ctx(
            &id,
            loopback_config(json!({ "compose_command": command })),
            &repo.to_string_lossy(),
        );
        let e = ext.provision(&ctx).await.unwrap_err();
        eprintln!("broken compose file ({command}): {e}");
        assert_eq!(e.kind(), ErrorKind::ProvisionFailed, "{e:?}");
        let m = e.message();
        // A plain file's services are read locally, so compose first sees
        // it (and refuses it) at `up`, before it makes anything.
        assert!(m.contains("step `compose up`"), "{m}");
        assert!(m.contains("up -d`"), "{m}");
        assert!(
            m.contains("bogus_key_xyz"),
            "the stderr tail is missing: {m}"
        );
        assert_clean(&bed, &id);
    }
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn port_conflict_fails_provision_and_leaves_nothing() {
    docker_ready("port_conflict_fails_provision");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bed = Bed::new();
    let repo = repo_with(
        bed.dir.path(),
        "compose.yaml",
        &format!(
            "services:\n  web:\n    image: sandboxer/busybox:latest\n    command: [\"httpd\", \"-f\", \"-p\", \"80\"]\n    init: true\n    ports: [\"127.0.0.1:{port}:80\"]\n"
        ),
    );
    let ext = ComposeSshExtension::new();
    let id = new_sandbox_id();
    let ctx = bed.ctx(&id, loopback_config(json!({})), &repo.to_string_lossy());
    let e = ext.provision(&ctx).await.unwrap_err();
    eprintln!("port conflict: {e}");
    assert_eq!(e.kind(), ErrorKind::ProvisionFailed, "{e:?}");
    let m = e.message();
    assert!(m.contains("step `compose up`"), "{m}");
    assert!(m.contains("up -d"), "{m}");
    assert!(
        m.contains(&port.to_string()),
        "the stderr tail is missing: {m}"
    );
    assert_clean(&bed, &id);
    drop(listener);
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn exited_service_fails_ready_with_its_logs_and_teardown_cleans() {
    docker_ready("exited_service_fails_ready");
    let bed = Bed::new();
    let repo = repo_with(
        bed.dir.path(),
        "docker-compose.e2e.yml",
        "services:\n  job:\n    image: sandboxer/busybox:latest\n    command: [\"sh\", \"-c\", \"echo boom-from-job >&2; exit 3\"]\n",
    );
    let ext = ComposeSshExtension::new();
    let id = new_sandbox_id();
    let ctx = bed.ctx(&id, loopback_config(json!({})), &repo.to_string_lossy());
    let handle = ext.provision(&ctx).await.unwrap().handle;
    let e = ext.wait_ready(&ctx, &handle, deadline()).await.unwrap_err();
    eprintln!("exited service: {e}");
    assert_eq!(e.kind(), ErrorKind::ProvisionFailed, "{e:?}");
    let m = e.message();
    assert!(m.contains("step `ready`"), "{m}");
    assert!(m.contains("service `job`") && m.contains("code 3"), "{m}");
    assert!(m.contains("boom-from-job"), "the logs tail is missing: {m}");
    // The caller's teardown rolls back, from the id alone.
    ext.teardown(&ctx, &Value::Null).await.unwrap();
    assert_clean(&bed, &id);
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn unhealthy_service_fails_ready() {
    docker_ready("unhealthy_service_fails_ready");
    let bed = Bed::new();
    let repo = repo_with(
        bed.dir.path(),
        "docker-compose.e2e.yml",
        "services:\n  web:\n    image: sandboxer/busybox:latest\n    command: [\"httpd\", \"-f\", \"-p\", \"80\"]\n    init: true\n    healthcheck:\n      test: [\"CMD\", \"false\"]\n      interval: 1s\n      timeout: 1s\n      retries: 1\n",
    );
    let ext = ComposeSshExtension::new();
    let id = new_sandbox_id();
    let ctx = bed.ctx(&id, loopback_config(json!({})), &repo.to_string_lossy());
    let handle = ext.provision(&ctx).await.unwrap().handle;
    let e = ext.wait_ready(&ctx, &handle, deadline()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProvisionFailed, "{e:?}");
    eprintln!("unhealthy service: {e}");
    assert!(e.message().contains("is unhealthy"), "{e}");
    ext.teardown(&ctx, &handle).await.unwrap();
    assert_clean(&bed, &id);
}

/// Inputs are data: a repo value with shell syntax is a path that is not a
/// folder, and nothing runs.
#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn injection_inputs_are_refused_and_nothing_runs() {
    let pwned = [Path::new("/tmp/pwned"), Path::new("/tmp/pwned2")];
    for p in pwned {
        let _ = std::fs::remove_file(p);
    }
    let bed = Bed::new();
    let ext = ComposeSshExtension::new();
    for repo in ["/tmp/x; touch /tmp/pwned", "$(touch /tmp/pwned2)"] {
        let id = new_sandbox_id();
        let ctx = bed.ctx(&id, json!({}), repo);
        let e = ext.provision(&ctx).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{repo}: {e:?}");
        assert!(e.message().contains("not a folder"), "{repo}: {e}");
        assert!(e.message().contains(repo), "{repo}: {e}");
        assert!(!bed.work(&id).exists());
    }
    for p in pwned {
        assert!(!p.exists(), "{} was created", p.display());
    }
}

/// Every value that reaches the host's shell is quoted: a data folder, a
/// compose file name and an env value full of shell syntax go through a
/// whole lifecycle and nothing of it runs.
#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn values_with_shell_syntax_stay_data_through_a_lifecycle() {
    docker_ready("values_with_shell_syntax_stay_data");
    let marks: Vec<PathBuf> = [3, 4, 6]
        .iter()
        .map(|n| PathBuf::from(format!("/tmp/pwned{n}")))
        .collect();
    for p in &marks {
        let _ = std::fs::remove_file(p);
    }
    let bed = Bed::with_data_name("d $(touch /tmp/pwned3) ; `touch /tmp/pwned4` 'q\"");
    // A file name cannot hold `/`: this one would touch `pwned5` in the
    // folder the shell runs in (the work folder).
    let file = "e2e $(touch pwned5) `touch pwned5`.yml";
    let repo = bed.dir.path().join("repo");
    copy_dir(&example_repo(), &repo);
    std::fs::rename(repo.join("docker-compose.e2e.yml"), repo.join(file)).unwrap();
    let ext = ComposeSshExtension::new();
    let id = new_sandbox_id();
    let config = json!({
        "compose_file": file,
        "env": {
            "E2E_BIND_IP": "127.0.0.1",
            "HARMLESS": "$(touch /tmp/pwned6); `touch /tmp/pwned6`; '",
        },
    });
    let ctx = bed.ctx(&id, config, &repo.to_string_lossy());
    let handle = ext.provision(&ctx).await.unwrap().handle;
    let ready = ext.wait_ready(&ctx, &handle, deadline()).await.unwrap();
    let port = ready.reachability.ports["web"][0].published;
    assert!(http_get(port).contains("hello from compose-e2e-repo"));
    assert!(!bed.work(&id).join("pwned5").exists());
    assert!(!Path::new("pwned5").exists());
    ext.teardown(&ctx, &Value::Null).await.unwrap();
    assert_clean(&bed, &id);
    for p in &marks {
        assert!(!p.exists(), "{} was created", p.display());
    }
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn bad_inputs_and_config_are_refused_before_anything_is_made() {
    let bed = Bed::new();
    let ext = ComposeSshExtension::new();
    let empty = tempfile::tempdir().unwrap();

    // No compose file: the message names the files looked for.
    let id = new_sandbox_id();
    let e = ext
        .provision(&bed.ctx(&id, json!({}), &empty.path().to_string_lossy()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        e.message()
            .contains("looked for docker-compose.e2e.yml, then compose.yaml"),
        "{e}"
    );

    // A file is not a folder.
    let file = empty.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let e = ext
        .provision(&bed.ctx(&id, json!({}), &file.to_string_lossy()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("is not a folder"), "{e}");

    // A bad config.
    let e = ext
        .provision(&bed.ctx(
            &id,
            json!({"stop_timeout": 5, "compose_command": "v9"}),
            &example_repo().to_string_lossy(),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert!(e.message().contains("2 problems"), "{e}");

    // The compose file under an excluded folder.
    let repo = repo_with(empty.path(), "build/compose.yml", "services: {}\n");
    let e = ext
        .provision(&bed.ctx(
            &id,
            json!({"compose_file": "build/compose.yml"}),
            &repo.to_string_lossy(),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    assert!(e.message().contains("`build`"), "{e}");

    // A malformed id never reaches a path.
    let e = ext
        .teardown(&bed.ctx("sbx-../../etc", json!({}), "/nope"), &Value::Null)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    assert!(!bed.data.join("work").exists());
    assert_eq!(ext.id(), COMPOSE_SSH_EXTENSION_ID);
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn teardown_of_unknown_ids_and_leftover_folders_is_ok() {
    docker_ready("teardown_of_unknown_ids");
    let bed = Bed::new();
    let ext = ComposeSshExtension::new();
    let id = new_sandbox_id();
    let ctx = bed.ctx(&id, json!({}), "/nope");
    ext.teardown(&ctx, &Value::Null).await.unwrap();
    ext.teardown(&ctx, &json!({"stale": true})).await.unwrap();
    ext.teardown(&ctx, &json!({"compose": "v1", "files": ["x.yml", "y.yml"]}))
        .await
        .unwrap();

    // A work folder left by a crash mid-upload is listed and removed.
    std::fs::create_dir_all(bed.work(&id).join("half")).unwrap();
    let listed = ext.list_resources(bed.transport.clone()).await.unwrap();
    let mine: Vec<_> = listed.iter().filter(|r| r.sandbox_id == id).collect();
    assert_eq!(mine.len(), 1, "{listed:?}");
    assert_eq!(mine[0].kind, "compose work folder");
    assert!(!mine[0].running);
    ext.teardown(&ctx, &Value::Null).await.unwrap();
    assert_clean(&bed, &id);
}

/// compose v1 needs the files for `down`: with the work folder gone,
/// teardown still removes the stack by its labels.
#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn teardown_without_the_work_folder_still_removes_the_stack() {
    docker_ready("teardown_without_the_work_folder");
    let bed = Bed::new();
    let ext = ComposeSshExtension::new();
    let id = new_sandbox_id();
    let ctx = bed.ctx(
        &id,
        loopback_config(json!({})),
        &example_repo().to_string_lossy(),
    );
    let handle = ext.provision(&ctx).await.unwrap().handle;
    assert_eq!(labelled(&id).len(), 1);
    assert!(!project_leftovers(&id).is_empty(), "no network for {id}");
    std::fs::remove_dir_all(bed.work(&id)).unwrap();
    ext.teardown(&ctx, &handle).await.unwrap();
    assert_clean(&bed, &id);
}

/// A stack whose page lives in a named volume (written at first start
/// only), so a file in the volume and one in the container's own
/// filesystem can both be followed through a snapshot.
const VOLUME_STACK: &str = r#"services:
  web:
    image: sandboxer/busybox:latest
    init: true
    command: ["sh", "-c", "[ -f /www/index.html ] || echo first > /www/index.html; exec httpd -f -p 80 -h /www"]
    volumes:
      - site:/www
    ports:
      - "127.0.0.1::80"
volumes:
  site:
"#;

/// The published port of the sandbox's `web` service.
fn web_port(ready: &sandboxer_core::extension::ReadyInfo) -> u16 {
    ready.reachability.ports["web"][0].published
}

/// Whether `GET /` answers within a second.
fn serves(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.contains("200 OK").then_some(body)
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn a_paused_stack_does_not_serve_and_a_restore_keeps_the_container_and_volume_files() {
    let test = "a_paused_stack_does_not_serve_and_a_restore_keeps_the_container_and_volume_files";
    docker_ready(test);
    let bed = Bed::new();
    let repo = repo_with(bed.dir.path(), "docker-compose.e2e.yml", VOLUME_STACK);
    let repo = repo.to_string_lossy().into_owned();
    let ext = ComposeSshExtension::new();
    let ctx = bed.ctx(&new_sandbox_id(), json!({}), &repo);
    let handle = ext.provision(&ctx).await.unwrap().handle;
    let ready = ext.wait_ready(&ctx, &handle, deadline()).await.unwrap();
    let port = web_port(&ready);
    assert!(serves(port).unwrap().contains("first"));
    let c = labelled(&ctx.id).pop().unwrap();
    docker(&[
        "exec",
        &c,
        "sh",
        "-c",
        "echo in-volume > /www/index.html; echo in-container > /etc/marker",
    ]);

    ext.pause(&ctx, &handle).await.unwrap();
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Paused}}", &c]).trim(),
        "true"
    );
    assert!(serves(port).is_none(), "a paused stack answered");
    let resumed = ext.resume(&ctx, &handle, deadline()).await.unwrap();
    assert!(serves(web_port(&resumed)).unwrap().contains("in-volume"));

    // Snapshot a paused stack: it stays paused.
    ext.pause(&ctx, &handle).await.unwrap();
    let snap = sandboxer_core::snapshot::new_snapshot_id();
    let made = ext.snapshot(&ctx, &handle, &snap).await.unwrap();
    assert!(made.size_bytes.unwrap() > 0, "{made:?}");
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Paused}}", &c]).trim(),
        "true"
    );
    ext.teardown(&ctx, &handle).await.unwrap();
    assert_clean(&bed, &ctx.id);

    // The restore: a new project, the files of both kinds there.
    let mut again = bed.ctx(&new_sandbox_id(), json!({}), &repo);
    again.restore = Some(sandboxer_core::extension::Restore {
        snapshot_id: snap.clone(),
        handle: made.handle.clone(),
    });
    let h2 = ext.provision(&again).await.unwrap().handle;
    let r2 = ext.wait_ready(&again, &h2, deadline()).await.unwrap();
    assert!(serves(web_port(&r2)).unwrap().contains("in-volume"));
    let c2 = labelled(&again.id).pop().unwrap();
    assert_eq!(
        docker(&["exec", &c2, "cat", "/etc/marker"]).trim(),
        "in-container"
    );
    ext.teardown(&again, &h2).await.unwrap();
    assert_clean(&bed, &again.id);

    ext.delete_snapshot(bed.transport.clone(), &snap, &made.handle)
        .await
        .unwrap();
    assert!(docker(&["images", "-q", &format!("sandboxer/{snap}")])
        .trim()
        .is_empty());
    assert!(!bed.data.join("compose-snapshots").join(&snap).exists());
}

#[tokio::test]
#[cfg_attr(
    not(sandboxer_testbed),
    ignore = "needs the testbed: scripts/testbed up, then source .testbed/env"
)]
async fn pause_mode_stop_stops_the_containers_and_start_serves_the_same_files() {
    let test = "pause_mode_stop_stops_the_containers_and_start_serves_the_same_files";
    docker_ready(test);
    let bed = Bed::new();
    let repo = repo_with(bed.dir.path(), "docker-compose.e2e.yml", VOLUME_STACK);
    let repo = repo.to_string_lossy().into_owned();
    let ext = ComposeSshExtension::new();
    let ctx = bed.ctx(
        &new_sandbox_id(),
        json!({"pause_mode": "stop", "stop_timeout": "1s"}),
        &repo,
    );
    let handle = ext.provision(&ctx).await.unwrap().handle;
    ext.wait_ready(&ctx, &handle, deadline()).await.unwrap();
    let c = labelled(&ctx.id).pop().unwrap();
    docker(&["exec", &c, "sh", "-c", "echo kept > /www/index.html"]);
    ext.pause(&ctx, &handle).await.unwrap();
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &c]).trim(),
        "false"
    );
    let resumed = ext.resume(&ctx, &handle, deadline()).await.unwrap();
    assert!(serves(web_port(&resumed)).unwrap().contains("kept"));
    ext.teardown(&ctx, &handle).await.unwrap();
    assert_clean(&bed, &ctx.id);
    let err =
        ComposeConfig::from_map(json!({"pause_mode": "freeze"}).as_object().unwrap()).unwrap_err();
    assert!(err.to_string().contains("`pause_mode` must be"), "{err}");
}
