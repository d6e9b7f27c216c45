//! Readiness: what `docker inspect` says about the sandbox's containers
//! ([`parse_inspect`], [`assess`], pure) and whether a published port takes
//! a TCP connection from here ([`probe`]).

use std::collections::BTreeMap;
use std::time::Duration;

use sandboxer_core::model::Port;
use serde_json::Value;

/// One container of the stack, as `docker inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Container {
    pub id: String,
    pub name: String,
    pub service: String,
    /// `created`, `running`, `restarting`, `exited`, `dead`, ...
    pub status: String,
    pub exit_code: i64,
    /// `starting`, `healthy`, `unhealthy`; `None` without a healthcheck.
    pub health: Option<String>,
    /// The output of the last healthcheck, when there is one.
    pub health_log: Option<String>,
    /// Published ports (unpublished exposed ports are left out).
    pub ports: Vec<Port>,
}

/// Parse the JSON array `docker inspect` prints.
pub(crate) fn parse_inspect(json: &str) -> Result<Vec<Container>, String> {
    let all: Vec<Value> = serde_json::from_str(json)
        .map_err(|e| format!("`docker inspect` printed no JSON array: {e}"))?;
    Ok(all.iter().map(container).collect())
}

fn container(v: &Value) -> Container {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut ports: Vec<Port> = Vec::new();
    if let Some(map) = v
        .pointer("/NetworkSettings/Ports")
        .and_then(Value::as_object)
    {
        for (key, bindings) in map {
            let (target, protocol) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
            let Ok(target) = target.parse::<u16>() else {
                continue;
            };
            for b in bindings.as_array().into_iter().flatten() {
                let published = b
                    .get("HostPort")
                    .and_then(Value::as_str)
                    .and_then(|p| p.parse::<u16>().ok())
                    .unwrap_or(0);
                let port = Port {
                    target,
                    published,
                    protocol: protocol.to_string(),
                };
                if published != 0 && !ports.contains(&port) {
                    ports.push(port);
                }
            }
        }
    }
    ports.sort_by_key(|p| (p.target, p.published, p.protocol.clone()));
    let health = v
        .pointer("/State/Health/Status")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty() && *h != "none")
        .map(str::to_string);
    let health_log = v
        .pointer("/State/Health/Log")
        .and_then(Value::as_array)
        .and_then(|l| l.last())
        .map(|last| {
            format!(
                "exit {}: {}",
                last.get("ExitCode").and_then(Value::as_i64).unwrap_or(-1),
                last.get("Output")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .trim()
            )
        });
    Container {
        id: s("/Id"),
        name: s("/Name").trim_start_matches('/').to_string(),
        service: v
            .pointer("/Config/Labels/com.docker.compose.service")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| s("/Name").trim_start_matches('/').to_string()),
        status: s("/State/Status"),
        exit_code: v
            .pointer("/State/ExitCode")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        health,
        health_log,
        ports,
    }
}

/// What the containers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Assessment {
    /// Every container runs (and is healthy where it has a healthcheck):
    /// the published ports by service.
    Running(BTreeMap<String, Vec<Port>>),
    /// Not yet: why.
    Waiting(String),
    /// It will not become ready: the container at fault and why.
    Failed { container: Container, why: String },
}

/// Whether the stack is up. A container that exited (or is dead) or is
/// unhealthy fails it; one that is created, restarting or starting its
/// healthcheck is waited for.
pub(crate) fn assess(containers: &[Container]) -> Assessment {
    if containers.is_empty() {
        return Assessment::Waiting("no container is labelled with the sandbox id yet".into());
    }
    let mut waiting: Vec<String> = Vec::new();
    for c in containers {
        match c.status.as_str() {
            "running" => match c.health.as_deref() {
                None | Some("healthy") => {}
                Some("unhealthy") => {
                    return Assessment::Failed {
                        container: c.clone(),
                        why: format!(
                            "service `{}` (container {}) is unhealthy (last check: {})",
                            c.service,
                            c.name,
                            c.health_log.as_deref().unwrap_or("no log")
                        ),
                    }
                }
                Some(h) => waiting.push(format!("service `{}` is {h}", c.service)),
            },
            "exited" | "dead" | "removing" => {
                return Assessment::Failed {
                    container: c.clone(),
                    why: format!(
                        "service `{}` (container {}) {} with code {}",
                        c.service,
                        c.name,
                        if c.status == "exited" {
                            "exited"
                        } else {
                            "died"
                        },
                        c.exit_code
                    ),
                }
            }
            other => waiting.push(format!("service `{}` is {other}", c.service)),
        }
    }
    if !waiting.is_empty() {
        return Assessment::Waiting(waiting.join(", "));
    }
    let mut ports: BTreeMap<String, Vec<Port>> = BTreeMap::new();
    for c in containers {
        if c.ports.is_empty() {
            continue;
        }
        let list = ports.entry(c.service.clone()).or_default();
        for p in &c.ports {
            if !list.contains(p) {
                list.push(p.clone());
            }
        }
        list.sort_by_key(|p| (p.target, p.published, p.protocol.clone()));
    }
    Assessment::Running(ports)
}

/// How long a probe's connection must stay open without the server closing
/// it. Docker's userland proxy accepts a connection for a published port
/// even when nothing listens in the container, and closes it at once; a
/// real server waits for the request (or greets).
pub(crate) const PROBE_HOLD: Duration = Duration::from_millis(50);

/// Whether `address:port` takes a TCP connection within `timeout` and keeps
/// it open for [`PROBE_HOLD`] (or sends something). `Err` says why not.
pub(crate) async fn probe(address: &str, port: u16, timeout: Duration) -> Result<(), String> {
    use tokio::io::AsyncReadExt as _;
    let mut stream = match tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((address, port)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("connecting to {address}:{port}: {e}")),
        Err(_) => {
            return Err(format!(
                "connecting to {address}:{port}: no answer in {timeout:?}"
            ))
        }
    };
    let mut buf = [0u8; 1];
    match tokio::time::timeout(PROBE_HOLD, stream.read(&mut buf)).await {
        Err(_) | Ok(Ok(1..)) => Ok(()),
        Ok(Ok(0)) => Err(format!("{address}:{port} accepted the connection and closed it at once (nothing listens behind it yet)")),
        Ok(Err(e)) => Err(format!("{address}:{port}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSPECT: &str = r#"[
      {"Id": "abc123", "Name": "/sbx-x_web_1",
       "Config": {"Labels": {"com.docker.compose.service": "web", "sandboxer.sandbox_id": "sbx-x"}},
       "State": {"Status": "running", "ExitCode": 0},
       "NetworkSettings": {"Ports": {
          "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}, {"HostIp": "::", "HostPort": "32768"}],
          "81/tcp": null,
          "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "40000"}]}}},
      {"Id": "def456", "Name": "/sbx-x_db_1",
       "Config": {"Labels": {"com.docker.compose.service": "db"}},
       "State": {"Status": "running", "ExitCode": 0, "Health": {"Status": "starting",
          "Log": [{"ExitCode": 1, "Output": "old"}, {"ExitCode": 7, "Output": "no db\n"}]}},
       "NetworkSettings": {"Ports": {}}}
    ]"#;

    #[test]
    fn inspect_gives_services_states_and_published_ports() {
        let cs = parse_inspect(INSPECT).unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].service, "web");
        assert_eq!(cs[0].name, "sbx-x_web_1");
        assert_eq!(cs[0].health, None);
        assert_eq!(
            cs[0].ports,
            vec![
                Port {
                    target: 53,
                    published: 40000,
                    protocol: "udp".into()
                },
                Port {
                    target: 80,
                    published: 32768,
                    protocol: "tcp".into()
                },
            ]
        );
        assert_eq!(cs[1].health.as_deref(), Some("starting"));
        assert_eq!(cs[1].health_log.as_deref(), Some("exit 7: no db"));
        assert!(cs[1].ports.is_empty());
        assert!(parse_inspect("Error: No such object").is_err());
    }

    #[test]
    fn assess_waits_for_health_and_fails_on_exit_or_unhealthy() {
        let mut cs = parse_inspect(INSPECT).unwrap();
        assert_eq!(
            assess(&cs),
            Assessment::Waiting("service `db` is starting".into())
        );
        cs[1].health = Some("healthy".into());
        match assess(&cs) {
            Assessment::Running(ports) => {
                assert_eq!(ports.keys().collect::<Vec<_>>(), ["web"]);
                assert_eq!(ports["web"].len(), 2);
            }
            other => panic!("{other:?}"),
        }
        cs[1].health = Some("unhealthy".into());
        assert!(
            matches!(assess(&cs), Assessment::Failed { ref why, .. } if why.contains("`db`") && why.contains("unhealthy (last check: exit 7: no db)"))
        );
        cs[1].health = None;
        cs[1].status = "exited".into();
        cs[1].exit_code = 3;
        assert!(
            matches!(assess(&cs), Assessment::Failed { ref why, .. } if why.contains("exited with code 3"))
        );
        cs[1].status = "restarting".into();
        assert!(matches!(assess(&cs), Assessment::Waiting(_)));
        assert!(matches!(assess(&[]), Assessment::Waiting(_)));
    }

    #[tokio::test]
    async fn probe_tells_a_server_from_a_closed_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // A server that holds the connection open.
        let hold = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(s);
        });
        probe("127.0.0.1", port, Duration::from_secs(1))
            .await
            .unwrap();
        hold.await.unwrap();
        // A server that closes at once (what docker's proxy does).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let close = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
        });
        let e = probe("127.0.0.1", port, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.contains("closed it at once"), "{e}");
        close.await.unwrap();
        // Nothing listening.
        let closed = sandboxer_testkit::net::ClosedPort::new().unwrap();
        assert!(probe("127.0.0.1", closed.port(), Duration::from_secs(1))
            .await
            .is_err());
    }
}
