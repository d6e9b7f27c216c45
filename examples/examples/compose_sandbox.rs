//! Establish a compose sandbox by linking the crates: the manager from
//! `sandboxer-core`, `ext.compose-ssh`, and the host transports. It brings
//! a consumer repo's compose stack up on a host, prints how to reach it,
//! fetches `/` from its first published port, and destroys it.
//!
//! ```sh
//! # on the testbed (scripts/testbed up; source .testbed/env): sandboxer01
//! cargo run -p sandboxer-examples --example compose_sandbox
//! cargo run -p sandboxer-examples --example compose_sandbox -- --host coulombcore
//! # this machine, no SSH (needs docker and compose here)
//! cargo run -p sandboxer-examples --example compose_sandbox -- --host local
//! # your repo and hosts.toml (its config dir), keeping the stack up
//! cargo run -p sandboxer-examples --example compose_sandbox -- \
//!     --config-dir ~/.config/sandboxer --host sandboxer01 --repo ./my-repo --keep
//! ```
//!
//! The hosts come from `--config-dir DIR` (its `hosts.toml` and
//! `known_hosts`), else the testbed's when `SANDBOXER_TESTBED` is set, else
//! only `local`. The default host is `sandboxer01` on the testbed, else
//! `local`; the default repo is `examples/compose-e2e-repo`, whose port is
//! published on the host's address (`E2E_BIND_IP`). Records go to a
//! throwaway data dir.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use sandboxer_core::hosts::Hosts;
use sandboxer_core::lifecycle::EndReason;
use sandboxer_core::manager::CreateRequest;
use sandboxer_core::model::{Actor, ActorKind};
use sandboxer_core::routing::Constraints;
use sandboxer_ext_compose_ssh::ComposeSshExtension;
use sandboxer_stack::StackBuilder;

struct Args {
    host: Option<String>,
    repo: PathBuf,
    config_dir: Option<PathBuf>,
    keep: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        host: None,
        repo: Path::new(env!("CARGO_MANIFEST_DIR")).join("compose-e2e-repo"),
        config_dir: None,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--host" => a.host = Some(it.next().context("--host needs a name")?),
            "--repo" => a.repo = PathBuf::from(it.next().context("--repo needs a path")?),
            "--config-dir" => {
                a.config_dir = Some(PathBuf::from(
                    it.next().context("--config-dir needs a path")?,
                ))
            }
            "--keep" => a.keep = true,
            "-h" | "--help" => {
                println!("compose_sandbox [--host NAME] [--repo PATH] [--config-dir DIR] [--keep]");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    a.repo = a
        .repo
        .canonicalize()
        .with_context(|| format!("the repo {}", a.repo.display()))?;
    Ok(a)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let testbed = sandboxer_testkit::testbed::testbed();
    let hosts_from = a
        .config_dir
        .clone()
        .or_else(|| testbed.as_ref().map(|t| t.config_dir()));
    let host = a.host.clone().unwrap_or_else(|| {
        if a.config_dir.is_none() && testbed.is_some() {
            "sandboxer01".into()
        } else {
            "local".into()
        }
    });

    // A throwaway home: records here; hosts.toml and known_hosts from where
    // the hosts come from; one profile whose route publishes on the host's
    // address.
    let home = tempfile::Builder::new()
        .prefix("compose-sandbox-")
        .tempdir()?;
    let (data, config) = (home.path().join("data"), home.path().join("config"));
    std::fs::create_dir_all(config.join("profiles"))?;
    if let Some(dir) = &hosts_from {
        for f in ["hosts.toml", "known_hosts"] {
            if dir.join(f).is_file() {
                std::fs::copy(dir.join(f), config.join(f))?;
            }
        }
    }
    let hosts = Hosts::load(&config)?;
    let spec = hosts.require(&host)?;
    std::fs::write(
        config.join("profiles").join("compose-e2e.toml"),
        profile(&host, &spec.address),
    )?;

    let manager = StackBuilder::new(&data, &config)
        .with_extension(Arc::new(ComposeSshExtension::new()))
        .build()?
        .manager;

    println!(
        "creating profile.compose-e2e on {host} ({}) from {}",
        spec.address,
        a.repo.display()
    );
    let started = Instant::now();
    let sbx = manager
        .create(
            CreateRequest {
                profile: "profile.compose-e2e".into(),
                inputs: BTreeMap::from([("repo".into(), a.repo.display().to_string())]),
                constraints: Constraints {
                    host: Some(host.clone()),
                    ..Constraints::default()
                },
                actor: Some(Actor::new(ActorKind::Atm, "compose-example")?),
                ..CreateRequest::default()
            },
            true,
        )
        .await
        .context("creating the compose sandbox")?;
    let reach = sbx.reachability.clone().unwrap_or_default();
    println!(
        "{} {} on {} in {:.1?}",
        sbx.id,
        sbx.state(),
        sbx.host,
        started.elapsed()
    );
    println!("  address  {}", reach.address);
    for (service, ports) in &reach.ports {
        for p in ports {
            println!(
                "  port     {service}: {}:{} -> {}/{}",
                reach.address, p.published, p.target, p.protocol
            );
        }
    }
    for (k, v) in &reach.details {
        let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
        println!("  {k:<8} {v}");
    }
    if let Some(p) = reach.ports.values().flatten().find(|p| p.protocol == "tcp") {
        match http_get(&reach.address, p.published) {
            Ok(first) => println!("  GET /    {first}"),
            Err(e) => println!("  GET /    (no HTTP answer: {e})"),
        }
    }

    if a.keep {
        println!(
            "kept; its record is in {} (SANDBOXER_DATA_DIR) and the stack on {host} is project {}",
            data.display(),
            sbx.id
        );
        let _ = home.keep();
        return Ok(());
    }
    let done = manager.destroy(&sbx.id, EndReason::Destroyed).await?;
    println!(
        "{} {} ({})",
        done.id,
        done.state(),
        done.reason().unwrap_or_default()
    );
    Ok(())
}

/// `profile.compose-e2e` placed on `host`, publishing on `address`.
fn profile(host: &str, address: &str) -> String {
    format!(
        r#"id = "profile.compose-e2e"
version = 1
description = "the consumer repo's compose stack (compose_sandbox example)"
default_ttl = "30m"
max_ttl = "2h"
ready_timeout = "2m"

[inputs.repo]
required = true
help = "local path to the consumer repository"

[[routes]]
extension = "ext.compose-ssh"
placement = [{host:?}]
price_per_hour = "0"

[routes.config]
compose_file = "docker-compose.e2e.yml"
fallback_compose_files = ["compose.yaml"]
stop_timeout = "5s"
env = {{ E2E_BIND_IP = {address:?} }}
"#
    )
}

/// The status line and the first line of the body of `GET /`.
fn http_get(address: &str, port: u16) -> std::io::Result<String> {
    let addr = format!("{address}:{port}")
        .parse()
        .map_err(std::io::Error::other)?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text.lines().next().unwrap_or_default().to_string();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.lines().find(|l| !l.trim().is_empty()).unwrap_or_default())
        .unwrap_or_default();
    Ok(format!("{status}: {body}"))
}
