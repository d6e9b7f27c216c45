//! `sandboxer serve` (the HTTP API of `sandboxer_api`, with the reaper on an
//! interval) and `sandboxer tokens` (the API's bearer tokens).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use sandboxer_api::{ApiState, BackgroundTask, ReaperConfig, ServeConfig, Server, TokenStore};
use sandboxer_core::model::Actor;
use sandboxer_core::{Error, Result};

use crate::args::{ServeArgs, TokensCmd};
use crate::{exit, out, print_json, render, Env};

/// Serve until SIGTERM or Ctrl-C, on the process's runtime (multi-threaded
/// for `serve`, see `run`).
pub async fn run(env: &Env, args: ServeArgs, json: bool) -> Result<i32> {
    let bind = parse_bind(&args.bind)?;
    let interval = parse_duration(&args.reap_interval, "--reap-interval")?;
    let grace = parse_duration(&args.reap_grace, "--reap-grace")?;
    let probe = parse_duration(&args.probe_interval, "--probe-interval")?;
    let retention = parse_duration(&args.upload_retention, "--upload-retention")?;
    let limits = sandboxer_api::ConnLimits {
        head_timeout: positive(&args.head_timeout, "--head-timeout")?,
        body_timeout: positive(&args.body_timeout, "--body-timeout")?,
        max_connections: match args.max_connections {
            0 => return Err(Error::invalid_input("--max-connections must be at least 1")),
            n => n,
        },
    };
    let repos = sandboxer_api::uploads::RepoPolicy::new(
        &args.repo_roots,
        parse_size(&args.max_upload, "--max-upload")?,
    )?;

    let state = ApiState::new(
        env.manager(true)?.with_upload_retention(retention),
        env.ledger()?,
        TokenStore::new(env.db()?),
    )
    .with_default_host(std::env::var("SANDBOXER_HOST").ok())
    .with_repos(repos);
    // Tasks that run beside the server until it stops: the State
    // Hub relay, when a hub is configured.
    let mut background: Vec<BackgroundTask> = Vec::new();
    if let Some(relay) =
        sandboxer_events::Relay::from_env(env.db()?, sandboxer_events::RelayOptions::background())?
    {
        let metrics = state.metrics.clone();
        metrics.relay_running();
        let relay = relay.with_pass_observer(std::sync::Arc::new(move |r| {
            metrics.relay_pass(r.delivered, r.failed, r.last_error.as_deref())
        }));
        background.push(BackgroundTask::new(
            "state-hub relay",
            move |mut s| async move { relay.run(async move { s.wait().await }).await },
        ));
    }
    let config = ServeConfig {
        reaper: (!interval.is_zero()).then_some(ReaperConfig { interval, grace }),
        host_probe: (!probe.is_zero()).then_some(probe),
        background,
        limits,
        ..ServeConfig::new(bind, state)
    };
    let server = Server::bind(config).await?;
    // Before "listening on": a SIGTERM right after must stop it gracefully.
    let stop = sandboxer_api::shutdown_signal();
    let addr = server.local_addr();
    if json {
        print_json(&serde_json::json!({ "listening": addr.to_string() }));
    } else {
        out(&format!("listening on {addr}"));
    }
    server.run_until(stop).await?;
    Ok(exit::code::OK)
}

fn parse_duration(raw: &str, flag: &str) -> Result<Duration> {
    sandboxer_core::duration::parse_duration(raw)
        .map_err(|e| Error::invalid_input(format!("{flag}: {e}")))
}

/// A duration flag that must be more than zero.
fn positive(raw: &str, flag: &str) -> Result<Duration> {
    let d = parse_duration(raw, flag)?;
    if d.is_zero() {
        return Err(Error::invalid_input(format!("{flag} must be more than 0s")));
    }
    Ok(d)
}

fn parse_size(raw: &str, flag: &str) -> Result<u64> {
    raw.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| {
            Error::invalid_input(format!("{flag} `{raw}`: {e}"))
                .with_hint("write bytes, or a number with a unit: `100MiB`, `1GB`, `512KiB`")
        })
}

fn parse_bind(raw: &str) -> Result<SocketAddr> {
    let bad = |why: String| {
        Error::invalid_input(format!("--bind `{raw}`: {why}"))
            .with_hint("write HOST:PORT, e.g. `127.0.0.1:8787` (port 0 picks a free port)")
    };
    if let Ok(a) = raw.parse::<SocketAddr>() {
        return Ok(a);
    }
    let mut addrs = raw.to_socket_addrs().map_err(|e| bad(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| bad("no address for that name".into()))
}

/// `sandboxer tokens add | list | revoke`.
pub fn tokens(env: &Env, cmd: TokensCmd, json: bool) -> Result<i32> {
    let store = TokenStore::new(env.db()?);
    match cmd {
        TokensCmd::Add { actor, name } => {
            let actor: Actor = actor.parse()?;
            let (info, secret) = store.add(&actor, name.as_deref())?;
            if json {
                print_json(&serde_json::json!({
                    "name": info.name,
                    "actor": info.actor.to_string(),
                    "created_at": info.created_at,
                    "token": secret.expose(),
                }));
            } else {
                out(&format!(
                    "{}\n  name   {}\n  actor  {}\nThis is the only time the token is shown; only its hash is kept in {}.\n\
                     Use it as `Authorization: Bearer TOKEN`.",
                    secret.expose(),
                    info.name,
                    info.actor,
                    store.location()
                ));
            }
        }
        TokensCmd::List => {
            let list = store.list()?;
            if json {
                print_json(&serde_json::to_value(&list).expect("json"));
            } else if list.is_empty() {
                out(&format!(
                    "no tokens ({}); `sandboxer tokens add --actor ACTOR` makes one",
                    store.location()
                ));
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.actor.to_string(),
                            t.created_at
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        ]
                    })
                    .collect();
                out(&render::table(&["name", "actor", "created"], &rows));
            }
        }
        TokensCmd::Revoke { name } => {
            let info = store.revoke(&name)?;
            if json {
                print_json(&serde_json::to_value(&info).expect("json"));
            } else {
                out(&format!(
                    "revoked {} ({}); a running server refuses it from the next request",
                    info.name, info.actor
                ));
            }
        }
    }
    Ok(exit::code::OK)
}
