//! Integration tests: the inventory and the canary on the real `local` host,
//! with the real agent binary (`sandboxer-canary-agent`, the same code the
//! `sandboxer agent` subcommand runs).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sandboxer_core::extension::{Extension, SandboxCtx};
use sandboxer_core::model::new_sandbox_id;
use sandboxer_core::transport::Transport;
use sandboxer_core::ErrorKind;
use sandboxer_telemetry::{
    gather, venue_files, AgentExited, AgentReady, CanaryExtension, HostInventory,
};
use sandboxer_testkit::conformance::run_conformance;
use sandboxer_testkit::wait;
use sandboxer_transport::LocalTransport;
use serde_json::Value;

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sandboxer-canary-agent"))
}

/// A data dir whose path needs quoting everywhere it goes.
fn awkward_data_dir(root: &Path) -> PathBuf {
    root.join("data dir 'q' $(touch pwned) `x`")
}

struct Fixture {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    transport: Arc<dyn Transport>,
    canary: Arc<CanaryExtension>,
}

impl Fixture {
    fn new() -> Self {
        Self::with_canary(Self::shared_canary())
    }

    fn with_binary(binary: PathBuf) -> Self {
        Self::with_canary(Arc::new(CanaryExtension::new(binary)))
    }

    /// The canary of the real agent, shared by the tests of this binary so
    /// that the (unoptimised, 30 MB) agent is hashed once.
    fn shared_canary() -> Arc<CanaryExtension> {
        static CANARY: std::sync::OnceLock<Arc<CanaryExtension>> = std::sync::OnceLock::new();
        CANARY
            .get_or_init(|| Arc::new(CanaryExtension::new(agent_bin())))
            .clone()
    }

    fn with_canary(canary: Arc<CanaryExtension>) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = awkward_data_dir(tmp.path());
        let transport: Arc<dyn Transport> = Arc::new(LocalTransport::new(data.clone()));
        Fixture {
            _tmp: tmp,
            data,
            transport,
            canary,
        }
    }

    fn ctx(&self, id: &str, ttl: Duration) -> SandboxCtx {
        make_ctx(&self.transport, id, ttl)
    }

    fn venue(&self, id: &str) -> PathBuf {
        self.data.join("venues").join(id)
    }

    async fn up(&self, ttl: Duration) -> (SandboxCtx, Value, AgentReady) {
        // Hash the binary before the TTL starts running.
        self.canary.agent_key().await.unwrap();
        let ctx = self.ctx(&new_sandbox_id(), ttl);
        let handle = self.canary.provision(&ctx).await.unwrap().handle;
        let ready = self
            .canary
            .wait_ready(&ctx, &handle, deadline_in(Duration::from_secs(10)))
            .await
            .unwrap();
        let handle = ready.handle.clone().unwrap();
        let file = std::fs::read(self.venue(&ctx.id).join(venue_files::READY)).unwrap();
        (ctx, handle, serde_json::from_slice(&file).unwrap())
    }
}

fn make_ctx(transport: &Arc<dyn Transport>, id: &str, ttl: Duration) -> SandboxCtx {
    SandboxCtx {
        id: id.to_string(),
        profile: "profile.sandbox-canary".into(),
        profile_version: 1,
        actor: "adm:tester".parse().unwrap(),
        config: serde_json::Map::new(),
        inputs: BTreeMap::new(),
        host: transport.host().to_string(),
        transport: transport.clone(),
        expires_at: sandboxer_core::model::now() + chrono::Duration::from_std(ttl).unwrap(),
        ready_timeout: Duration::from_secs(10),
        created_at: sandboxer_core::model::now(),
        price_per_hour: sandboxer_core::credits::Micros::ZERO,
        restore: None,
    }
}

fn deadline_in(d: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + d
}

/// Whether `pid` is gone: no process, or a zombie nobody reaped (PID 1 of a
/// container may not reap orphans).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
            state.starts_with('Z') || state.starts_with('X')
        }
    }
}

/// (pgrp, session) of a process, from `/proc/PID/stat`.
fn group_and_session(pid: u32) -> (u32, u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    (rest[2].parse().unwrap(), rest[3].parse().unwrap())
}

/// Poll for a file, at most `limit`.
async fn wait_for_file(path: &Path, limit: Duration) -> Option<Vec<u8>> {
    wait::within_async(limit, || async { std::fs::read(path).ok() }).await
}

async fn wait_gone(pid: u32) -> bool {
    wait::within_async(Duration::from_secs(5), || async {
        process_gone(pid).then_some(())
    })
    .await
    .is_some()
}

#[tokio::test]
async fn canary_passes_the_conformance_suite() {
    let fx = Fixture::new();
    let transport = fx.transport.clone();
    run_conformance(fx.canary.clone(), &|id| {
        make_ctx(&transport, id, Duration::from_secs(600))
    })
    .await;
    // Nothing is left running or lying around, and no quoting slipped.
    let left = fx
        .canary
        .list_resources(fx.transport.clone())
        .await
        .unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(!fx.data.join("pwned").exists() && !Path::new("pwned").exists());
}

#[tokio::test]
async fn ready_reports_reachability_and_telemetry() {
    let fx = Fixture::new();
    let ctx = fx.ctx(&new_sandbox_id(), Duration::from_secs(600));
    let handle = fx.canary.provision(&ctx).await.unwrap().handle;
    let venue = fx.venue(&ctx.id);
    assert_eq!(handle["venue"], venue.to_str().unwrap());
    let ready = fx
        .canary
        .wait_ready(&ctx, &handle, deadline_in(Duration::from_secs(10)))
        .await
        .unwrap();

    let r = &ready.reachability;
    assert_eq!(r.address, "127.0.0.1");
    assert_eq!(r.details["venue"], venue.to_str().unwrap());
    assert_eq!(r.details["agent_version"], env!("CARGO_PKG_VERSION"));
    let pid = r.details["pid"].as_u64().unwrap() as u32;
    assert_eq!(
        handle["pid"].as_u64(),
        Some(pid as u64),
        "the started pid is the agent"
    );
    assert_eq!(
        ready.handle.as_ref().unwrap()["pid"].as_u64(),
        Some(pid as u64)
    );

    let inv: HostInventory = serde_json::from_value(ready.telemetry.clone().unwrap()).unwrap();
    assert_eq!(inv.host, "local");
    assert!(inv.cpus.unwrap() >= 1);
    assert!(inv.mem_total_bytes.unwrap() >= inv.mem_available_bytes.unwrap());
    assert!(inv.disk_free_bytes.is_some());
    assert_eq!(inv.disk_path.as_deref(), venue.to_str());
    assert!(inv.kernel.is_some());
    assert_eq!(
        inv.docker.version, None,
        "the agent does not ask the daemon"
    );
    assert_eq!(inv.venues_running, Some(1), "itself");

    // The venue files.
    let ready_file: AgentReady =
        serde_json::from_slice(&std::fs::read(venue.join(venue_files::READY)).unwrap()).unwrap();
    assert_eq!(ready_file.sandbox_id, ctx.id);
    assert_eq!(ready_file.pid, pid);
    assert_eq!(ready_file.deadline, ctx.expires_at);
    let pid_file = std::fs::read_to_string(venue.join(venue_files::AGENT_PID)).unwrap();
    assert_eq!(pid_file, format!("{pid}\n"));
    let deadline = std::fs::read_to_string(venue.join(venue_files::DEADLINE)).unwrap();
    assert_eq!(
        DateTime::parse_from_rfc3339(deadline.trim()).unwrap(),
        ctx.expires_at
    );
    // Its own session and process group.
    assert_eq!(group_and_session(pid), (pid, pid));

    // The host inventory through the transport sees the same venue running.
    let inv = gather(fx.transport.as_ref()).await.unwrap();
    assert_eq!(inv.venues_running, Some(1));
    assert_eq!(inv.disk_path.as_deref(), fx.data.to_str());

    let listed = fx
        .canary
        .list_resources(fx.transport.clone())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].sandbox_id, ctx.id);
    assert_eq!(listed[0].kind, "canary venue");
    assert_eq!(listed[0].name, venue.to_str().unwrap());
    assert!(listed[0].running);

    fx.canary.teardown(&ctx, &handle).await.unwrap();
}

#[tokio::test]
async fn gather_on_local_reads_the_host() {
    let fx = Fixture::new();
    let inv = gather(fx.transport.as_ref()).await.unwrap();
    assert_eq!(inv.host, "local");
    assert!(inv.cpus.unwrap() >= 1);
    assert!(inv.load_1.is_some() && inv.load_15.is_some());
    assert!(inv.mem_total_bytes.unwrap() > 0);
    assert!(inv.disk_free_bytes.is_some());
    // The data dir does not exist yet: its nearest existing parent.
    assert_eq!(inv.disk_path.as_deref(), fx.data.parent().unwrap().to_str());
    assert!(inv.kernel.is_some());
    assert_eq!(inv.venues_running, Some(0));
    let docker_on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("docker").is_file()))
        .unwrap_or(false);
    assert_eq!(inv.docker.present, docker_on_path);
    let age = Utc::now() - inv.collected_at;
    assert!(age < chrono::Duration::seconds(60), "{age}");
}

#[tokio::test]
async fn the_agent_exits_by_itself_at_its_deadline() {
    let fx = Fixture::new();
    let (ctx, handle, ready) = fx.up(Duration::from_secs(2)).await;
    let venue = fx.venue(&ctx.id);
    let exited = wait_for_file(&venue.join(venue_files::EXITED), Duration::from_secs(15))
        .await
        .expect("the agent did not write exited.json within 15 s of a 2 s TTL");
    let exited: AgentExited = serde_json::from_slice(&exited).unwrap();
    assert_eq!(exited.reason, "expired");
    assert!(
        exited.at >= ctx.expires_at,
        "{exited:?} before {}",
        ctx.expires_at
    );
    assert!(wait_gone(ready.pid).await, "agent {} still runs", ready.pid);

    // The venue is still there (the reaper or destroy removes it), not running.
    let listed = fx
        .canary
        .list_resources(fx.transport.clone())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].running);
    // Extending an expired canary is refused.
    let err = fx
        .canary
        .extend(&ctx, &handle, Utc::now() + chrono::Duration::minutes(5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err:?}");

    fx.canary.teardown(&ctx, &handle).await.unwrap();
    assert!(!venue.exists());
}

#[tokio::test]
async fn extend_moves_the_agents_deadline() {
    let fx = Fixture::new();
    let (ctx, handle, ready) = fx.up(Duration::from_secs(1)).await;
    let new_deadline = sandboxer_core::model::now() + chrono::Duration::milliseconds(2500);
    fx.canary.extend(&ctx, &handle, new_deadline).await.unwrap();
    let venue = fx.venue(&ctx.id);
    let written = std::fs::read_to_string(venue.join(venue_files::DEADLINE)).unwrap();
    assert_eq!(
        DateTime::parse_from_rfc3339(written.trim()).unwrap(),
        new_deadline
    );

    let exited = wait_for_file(&venue.join(venue_files::EXITED), Duration::from_secs(15))
        .await
        .expect("the agent did not exit within 15 s");
    let exited: AgentExited = serde_json::from_slice(&exited).unwrap();
    assert!(
        exited.at >= new_deadline,
        "exited at {} before the extended deadline {new_deadline}",
        exited.at
    );
    assert!(wait_gone(ready.pid).await);
    let log = std::fs::read_to_string(venue.join(venue_files::LOG)).unwrap();
    assert!(log.contains("deadline moved"), "{log}");
    fx.canary.teardown(&ctx, &handle).await.unwrap();
}

#[tokio::test]
async fn teardown_stops_the_agent_and_removes_the_venue() {
    let fx = Fixture::new();
    let (ctx, handle, ready) = fx.up(Duration::from_secs(600)).await;
    let pid = ready.pid;
    assert!(!process_gone(pid));
    assert_eq!(group_and_session(pid).0, pid, "the agent leads its group");
    let started = Instant::now();
    fx.canary.teardown(&ctx, &handle).await.unwrap();
    let took = started.elapsed();
    assert!(process_gone(pid), "agent {pid} survived teardown");
    assert!(!fx.venue(&ctx.id).exists());
    eprintln!("teardown took {took:?}");
    // Idempotent, with or without a handle.
    fx.canary.teardown(&ctx, &handle).await.unwrap();
    fx.canary.teardown(&ctx, &Value::Null).await.unwrap();
    // extend of a removed venue is NotFound.
    let err = fx
        .canary
        .extend(&ctx, &handle, Utc::now())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn teardown_leaves_a_recycled_pid_alone() {
    // A venue whose agent.pid names some other live process (this test
    // runner, here): teardown removes the venue and signals nothing.
    let fx = Fixture::new();
    let id = new_sandbox_id();
    let venue = fx.venue(&id);
    std::fs::create_dir_all(&venue).unwrap();
    std::fs::write(
        venue.join(venue_files::AGENT_PID),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    let ctx = fx.ctx(&id, Duration::from_secs(60));
    fx.canary.teardown(&ctx, &Value::Null).await.unwrap();
    assert!(!venue.exists());
    let listed = fx
        .canary
        .list_resources(fx.transport.clone())
        .await
        .unwrap();
    assert!(listed.is_empty());
}

#[tokio::test]
async fn an_agent_that_dies_fails_wait_ready_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("broken-agent");
    std::fs::write(&fake, "#!/bin/sh\necho 'boom: cannot start' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let fx = Fixture::with_binary(fake);
    let ctx = fx.ctx(&new_sandbox_id(), Duration::from_secs(60));
    let handle = fx.canary.provision(&ctx).await.unwrap().handle;
    let err = fx
        .canary
        .wait_ready(&ctx, &handle, deadline_in(Duration::from_secs(10)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProvisionFailed, "{err:?}");
    assert!(err.message().contains("boom: cannot start"), "{err}");
    fx.canary.teardown(&ctx, &handle).await.unwrap();
    assert!(!fx.venue(&ctx.id).exists());
}

#[tokio::test]
async fn an_agent_that_never_gets_ready_times_out_and_is_torn_down() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("stuck-agent");
    std::fs::write(&fake, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let fx = Fixture::with_binary(fake);
    let ctx = fx.ctx(&new_sandbox_id(), Duration::from_secs(60));
    let handle = fx.canary.provision(&ctx).await.unwrap().handle;
    let pid = handle["pid"].as_u64().unwrap() as u32;
    let err = fx
        .canary
        .wait_ready(&ctx, &handle, deadline_in(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert!(!process_gone(pid));
    // No agent.pid was ever written: teardown finds it from the handle.
    fx.canary.teardown(&ctx, &handle).await.unwrap();
    assert!(process_gone(pid), "the stuck agent {pid} survived teardown");
    assert!(!fx.venue(&ctx.id).exists());
}

#[tokio::test]
async fn provision_refuses_an_existing_venue_and_bad_ids() {
    let fx = Fixture::new();
    let ctx = fx.ctx(&new_sandbox_id(), Duration::from_secs(60));
    let handle = fx.canary.provision(&ctx).await.unwrap().handle;
    let err = fx.canary.provision(&ctx).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err:?}");
    // The first one is untouched and comes up.
    fx.canary
        .wait_ready(&ctx, &handle, deadline_in(Duration::from_secs(10)))
        .await
        .unwrap();
    fx.canary.teardown(&ctx, &handle).await.unwrap();

    for bad in ["../../etc", "sbx-A", "sbx-a b", "x; rm -rf /", "sbx-"] {
        let ctx = fx.ctx(bad, Duration::from_secs(60));
        for (what, kind) in [
            (
                "provision",
                fx.canary.provision(&ctx).await.err().map(|e| e.kind()),
            ),
            (
                "teardown",
                fx.canary
                    .teardown(&ctx, &Value::Null)
                    .await
                    .err()
                    .map(|e| e.kind()),
            ),
        ] {
            assert_eq!(kind, Some(ErrorKind::InvalidInput), "{what} of {bad:?}");
        }
    }
}

/// The folders under `DATA/agents/` that hold a binary (not the
/// `by-fingerprint` index).
fn deployed_binaries(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("agents"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "by-fingerprint")
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn the_binary_is_deployed_once_and_linked_into_venues() {
    let fx = Fixture::new();
    let (ctx1, h1, _) = fx.up(Duration::from_secs(600)).await;
    let (ctx2, h2, _) = fx.up(Duration::from_secs(600)).await;
    let agents = deployed_binaries(&fx.data);
    assert_eq!(agents.len(), 1, "{agents:?}");
    let key = fx.canary.agent_key().await.unwrap();
    assert_eq!(agents[0].file_name().unwrap().to_str(), Some(key.as_str()));
    assert_eq!(h1["agent"], key.as_str());
    assert_eq!(h2["agent"], key.as_str());
    let deployed = std::fs::metadata(agents[0].join("sandboxer")).unwrap();
    assert_eq!(deployed.mode() & 0o777, 0o755);
    assert_eq!(
        std::fs::read(agents[0].join("sandboxer")).unwrap(),
        std::fs::read(agent_bin()).unwrap()
    );
    for ctx in [&ctx1, &ctx2] {
        let in_venue = std::fs::metadata(fx.venue(&ctx.id).join("sandboxer")).unwrap();
        assert_eq!(in_venue.ino(), deployed.ino(), "a hard link, not a copy");
    }
    fx.canary.teardown(&ctx1, &h1).await.unwrap();
    fx.canary.teardown(&ctx2, &h2).await.unwrap();
    assert!(
        agents[0].join("sandboxer").exists(),
        "teardown keeps the deployed binary"
    );
}

#[tokio::test]
async fn the_host_remembers_which_binary_it_has() {
    let fx = Fixture::new();
    let (ctx, handle, _) = fx.up(Duration::from_secs(600)).await;
    let key = handle["agent"].as_str().unwrap().to_string();
    fx.canary.teardown(&ctx, &handle).await.unwrap();
    let index: Vec<PathBuf> = std::fs::read_dir(fx.data.join("agents/by-fingerprint"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(index.len(), 1);
    assert_eq!(
        std::fs::read_to_string(&index[0]).unwrap(),
        format!("{key}\n")
    );

    // Another file with the same content (another machine, a reinstall):
    // a new index entry, the same deployed content, no second upload.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("sandboxer");
    std::fs::copy(agent_bin(), &copy).unwrap();
    let other = Fixture::with_canary(Arc::new(CanaryExtension::new(copy.clone())));
    let other = Fixture {
        transport: fx.transport.clone(),
        data: fx.data.clone(),
        ..other
    };
    let (ctx, handle, _) = other.up(Duration::from_secs(600)).await;
    assert_eq!(handle["agent"], key.as_str());
    assert_eq!(deployed_binaries(&fx.data).len(), 1);
    assert_eq!(
        std::fs::read_dir(fx.data.join("agents/by-fingerprint"))
            .unwrap()
            .count(),
        2
    );
    other.canary.teardown(&ctx, &handle).await.unwrap();

    // A changed binary is a new key and a new upload.
    std::fs::write(&copy, b"#!/bin/sh\nexit 3\n").unwrap();
    let ctx = other.ctx(&new_sandbox_id(), Duration::from_secs(60));
    let handle = other.canary.provision(&ctx).await.unwrap().handle;
    assert_ne!(handle["agent"], key.as_str());
    assert_eq!(deployed_binaries(&fx.data).len(), 2);
    other.canary.teardown(&ctx, &handle).await.unwrap();

    // An index entry whose binary went away is deployed again.
    std::fs::remove_dir_all(fx.data.join("agents").join(&key)).unwrap();
    let (ctx, handle, _) = fx.up(Duration::from_secs(600)).await;
    assert_eq!(handle["agent"], key.as_str());
    assert!(fx.data.join("agents").join(&key).join("sandboxer").exists());
    fx.canary.teardown(&ctx, &handle).await.unwrap();
}

#[test]
fn the_agent_binary_refuses_bad_arguments() {
    let out = std::process::Command::new(agent_bin())
        .args(["agent", "--venue", "/nonexistent", "--sandbox-id", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a sandbox id"));
    let out = std::process::Command::new(agent_bin())
        .args(["--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("usage: sandboxer agent"));
}

#[tokio::test]
async fn teardown_right_after_provision_leaves_no_agent() {
    // The handle was lost (Null) and the agent may still be starting.
    let fx = Fixture::new();
    fx.canary.agent_key().await.unwrap();
    for _ in 0..5 {
        let ctx = fx.ctx(&new_sandbox_id(), Duration::from_secs(600));
        let handle = fx.canary.provision(&ctx).await.unwrap().handle;
        let pid = handle["pid"].as_u64().unwrap() as u32;
        fx.canary.teardown(&ctx, &Value::Null).await.unwrap();
        assert!(process_gone(pid), "agent {pid} survived teardown");
        assert!(!fx.venue(&ctx.id).exists());
    }
}
