//! Pause, resume and snapshots, measured per extension, in one run; prints
//! the `snapshots` section of docs/benchmarks.md (`scripts/bench
//! snapshots`).
//!
//! ```text
//! cargo run --release -p sandboxer-examples --example snapshot_bench -- [--runs N]
//! ```
//!
//! Every figure calls the extension itself (as the manager does, without
//! its store commits) on `local`, so the comparisons are of the work on the
//! host:
//!
//! - **VM**: a create from a snapshot to SSH-ready (copy the overlay,
//!   qemu `-incoming` on the saved state, `cont`, the login) beside a cold
//!   boot of the same image to SSH-ready, taking turns. Target: at most
//!   0.2x.
//! - **compose**: resume (`unpause`) to serving (every container running
//!   and its published port answering) beside create (upload, `up -d`) to
//!   serving of the same stack (made, paused, resumed, torn down, each
//!   run). Target: at most 0.3x.
//! - pause and resume latency p50 of the canary, the compose stack, the VM
//!   and the stand-in SaaS provider (resume includes each extension's
//!   readiness check).
//!
//! Needs the testbed (dockerd and its busybox image, the VM test image);
//! the canary agent is the release `sandboxer` binary beside this program.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use sandboxer_core::extension::{Extension, Restore, SandboxCtx};
use sandboxer_core::model::new_sandbox_id;
use sandboxer_core::snapshot::new_snapshot_id;
use sandboxer_core::transport::Transport;
use sandboxer_testkit::stats::Summary;
use sandboxer_transport::LocalTransport;

const READY: Duration = Duration::from_secs(180);

fn ctx(t: &Arc<dyn Transport>, config: Value, inputs: &[(&str, &str)]) -> SandboxCtx {
    SandboxCtx {
        id: new_sandbox_id(),
        profile: "profile.bench".into(),
        profile_version: 1,
        actor: "adm:bench".parse().expect("actor"),
        config: config.as_object().cloned().unwrap_or_default(),
        inputs: inputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        host: t.host().to_string(),
        transport: t.clone(),
        expires_at: sandboxer_core::model::now() + chrono::Duration::hours(2),
        ready_timeout: READY,
        created_at: sandboxer_core::model::now(),
        price_per_hour: Default::default(),
        restore: None,
    }
}

fn by() -> tokio::time::Instant {
    tokio::time::Instant::now() + READY
}

/// provision + wait_ready: the time, and the handle to tear down with.
async fn up(ext: &dyn Extension, c: &SandboxCtx) -> anyhow::Result<(Duration, Value)> {
    let t0 = Instant::now();
    let h = ext.provision(c).await?.handle;
    let r = ext.wait_ready(c, &h, by()).await?;
    Ok((t0.elapsed(), r.handle.unwrap_or(h)))
}

/// Pause then resume `rounds` times: (pause times, resume times).
async fn pause_rounds(
    ext: &dyn Extension,
    c: &SandboxCtx,
    h: &Value,
    rounds: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let (mut p, mut r) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t0 = Instant::now();
        ext.pause(c, h).await?;
        p.push(t0.elapsed());
        let t0 = Instant::now();
        ext.resume(c, h, by()).await?;
        r.push(t0.elapsed());
    }
    Ok((p, r))
}

/// `/proc/loadavg`'s three figures, `1.10 / 1.38 / 1.39`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" / "))
        .unwrap_or_else(|_| "unknown".into())
}

fn p50(v: &[Duration]) -> f64 {
    Summary::of(v).map_or(f64::NAN, |s| s.p50)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let mut runs = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            other => bail!("unknown argument {other} (use --runs N)"),
        }
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let started = chrono::Utc::now();
    let load_before = load_average();
    let home = tempfile::tempdir()?;
    let t: Arc<dyn Transport> = Arc::new(LocalTransport::new(home.path().join("data")));
    let mut latency: BTreeMap<&str, (Vec<Duration>, Vec<Duration>)> = BTreeMap::new();
    let mut failed = Vec::new();

    // The canary.
    let agent = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("sandboxer"))
        .filter(|p| p.is_file())
        .context("the release sandboxer binary beside this program (scripts/bench builds it)")?;
    let canary = sandboxer_telemetry::CanaryExtension::new(agent);
    let c = ctx(&t, json!({}), &[]);
    let (_, h) = up(&canary, &c).await?;
    latency.insert("canary", pause_rounds(&canary, &c, &h, runs * 4).await?);
    canary.teardown(&c, &h).await?;

    // The stand-in provider, in this process.
    let key = sandboxer_ext_saas_stub::ApiKey::new("bench");
    let server = sandboxer_ext_saas_stub::server::Server::bind(
        "127.0.0.1:0".parse()?,
        sandboxer_ext_saas_stub::server::StubConfig::new(key.clone()),
    )
    .await?;
    let url = format!("http://{}", server.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let saas =
        sandboxer_ext_saas_stub::SaasStubExtension::new(sandboxer_ext_saas_stub::SaasConfig {
            base_url: url,
            api_key: Some(key),
            ..Default::default()
        })?;
    let c = ctx(&t, json!({}), &[]);
    let (_, h) = up(&saas, &c).await?;
    latency.insert(
        "SaaS stand-in",
        pause_rounds(&saas, &c, &h, runs * 4).await?,
    );
    saas.teardown(&c, &h).await?;
    let _ = stop.send(());
    let _ = serving.await;

    // compose: resume to serving beside create to serving.
    let compose = sandboxer_ext_compose_ssh::ComposeSshExtension::new();
    let repo_dir = repo.join("examples").join("compose-e2e-repo");
    let repo_arg = repo_dir.display().to_string();
    let config = json!({ "env": { "E2E_BIND_IP": "127.0.0.1" }, "stop_timeout": "1s" });
    let (mut created, mut resumed_to_serving) = (Vec::new(), Vec::new());
    let mut compose_pause = Vec::new();
    // A stack is made (create to serving), then paused and resumed (resume
    // to serving), then torn down: the resume needs the stack it resumes.
    for _ in 0..runs {
        let c = ctx(&t, config.clone(), &[("repo", &repo_arg)]);
        let (took, h) = up(&compose, &c).await?;
        created.push(took);
        let t0 = Instant::now();
        compose.pause(&c, &h).await?;
        compose_pause.push(t0.elapsed());
        let t0 = Instant::now();
        compose.resume(&c, &h, by()).await?;
        resumed_to_serving.push(t0.elapsed());
        compose.teardown(&c, &h).await?;
    }
    latency.insert("compose", (compose_pause, resumed_to_serving.clone()));

    // VM: create from a snapshot beside a cold boot.
    let vm = sandboxer_ext_vm_packer::VmPackerExtension::new();
    let image = std::env::var_os("SANDBOXER_TESTBED")
        .map(|d| PathBuf::from(d).join("vm-image"))
        .unwrap_or_else(|| repo.join(".testbed").join("vm-image"));
    let f = |n: &str| image.join(n).display().to_string();
    let vm_config = json!({
        "kernel": f("vmlinuz"), "initrd": f("initrd.img"), "image": f("base.qcow2"),
        "memory_mb": 256, "cpus": 1, "accel": "tcg", "ssh_key": f("id_ed25519"),
        "stop_timeout": "2s",
    });
    let c = ctx(&t, vm_config.clone(), &[]);
    let (first_boot, h) = up(&vm, &c).await?;
    let vm_lat = pause_rounds(&vm, &c, &h, runs).await?;
    latency.insert("VM", vm_lat);
    let snap = new_snapshot_id();
    let t0 = Instant::now();
    let made = vm.snapshot(&c, &h, &snap).await?;
    let snapshot_took = t0.elapsed();
    vm.teardown(&c, &h).await?;
    let (mut cold, mut restored) = (vec![first_boot], Vec::new());
    for i in 0..runs {
        let restore = || {
            let mut r = ctx(&t, vm_config.clone(), &[]);
            r.restore = Some(Restore {
                snapshot_id: snap.clone(),
                handle: made.handle.clone(),
            });
            r
        };
        for kind in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
            let c = if kind == 0 {
                ctx(&t, vm_config.clone(), &[])
            } else {
                restore()
            };
            let (took, h) = up(&vm, &c).await?;
            vm.teardown(&c, &h).await?;
            if kind == 0 {
                cold.push(took);
            } else {
                restored.push(took);
            }
        }
    }
    vm.delete_snapshot(t.clone(), &snap, &made.handle).await?;

    let vm_ratio = p50(&restored) / p50(&cold);
    let compose_ratio = p50(&resumed_to_serving) / p50(&created);
    let vm_met = vm_ratio <= 0.2;
    let compose_met = compose_ratio <= 0.3;
    if !vm_met {
        failed.push(format!("VM restore/cold boot {vm_ratio:.3} > 0.2"));
    }
    if !compose_met {
        failed.push(format!("compose resume/create {compose_ratio:.3} > 0.3"));
    }

    let mut md = String::from("<!-- bench:snapshots -->\n## Pause, resume and snapshots\n\n");
    md.push_str(&format!(
        "- run: {} to {} UTC, `scripts/bench snapshots` (release build)\n- load average (1 / 5 / 15 min): {load_before} before, {} after\n- every figure calls the extension on `local` as the manager does, without its store commits; p50 by nearest rank\n- VM: {runs} cold boots and {runs} restores, taking turns (and the first boot, which made the VM that was saved); compose: {runs} stacks, each created, paused, resumed and torn down\n\n",
        started.format("%Y-%m-%d %H:%M:%S"),
        chrono::Utc::now().format("%H:%M:%S"),
        load_average()
    ));
    md.push_str(
        "| comparison | sandboxer | baseline | ratio | target | met |\n|---|---|---|---|---|---|\n",
    );
    md.push_str(&format!(
        "| VM: create from a snapshot to SSH-ready / cold boot of the same image to SSH-ready (TCG, 256 MB) | {:.0} ms | {:.0} ms | {vm_ratio:.3} | at most 0.2 | {} |\n",
        p50(&restored),
        p50(&cold),
        if vm_met { "yes" } else { "**no**" }
    ));
    md.push_str(&format!(
        "| compose: resume to serving / create to serving (profile.compose-e2e's repo) | {:.0} ms | {:.0} ms | {compose_ratio:.3} | at most 0.3 | {} |\n\n",
        p50(&resumed_to_serving),
        p50(&created),
        if compose_met { "yes" } else { "**no**" }
    ));
    md.push_str(
        "| extension | pause p50 | resume p50 (to reachable) | rounds |\n|---|---|---|---|\n",
    );
    for (name, (p, r)) in &latency {
        md.push_str(&format!(
            "| {name} | {:.2} ms | {:.2} ms | {} |\n",
            p50(p),
            p50(r),
            p.len()
        ));
    }
    md.push_str(&format!(
        "\nThe VM snapshot itself (stop, migrate 256 MB to a file, copy the overlay, cont) took {:.0} ms and {} bytes.\n",
        snapshot_took.as_secs_f64() * 1000.0,
        made.size_bytes.unwrap_or(0)
    ));
    md.push_str("<!-- /bench:snapshots -->\n");
    print!("{md}");
    if !failed.is_empty() {
        eprintln!("snapshot_bench: missed: {}", failed.join("; "));
        std::process::exit(1);
    }
    Ok(())
}
