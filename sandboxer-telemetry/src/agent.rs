//! The canary agent: the `sandboxer` binary itself, run on a host as
//! `sandboxer agent --venue DIR --sandbox-id ID --deadline RFC3339`.
//!
//! It uses std only (no async runtime) and is ready within a few
//! milliseconds: it leaves the caller's session (`setsid`), writes
//! `agent.pid`, collects the host inventory natively, writes `ready.json`,
//! then sleeps until its deadline. At the deadline it re-reads `DIR/deadline`
//! (moved by `extend`) and sleeps on if it moved later; at expiry it writes
//! `exited.json` and exits 0. The venue files are described in the crate
//! README.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::inventory::HostInventory;

/// The agent's version, reported in `ready.json`.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The names of the files in a venue.
pub mod files {
    /// The agent binary (a hard link to, or copy of, the deployed binary).
    pub const BINARY: &str = "sandboxer";
    /// The expiry (RFC 3339, one line), written by provision and `extend`.
    pub const DEADLINE: &str = "deadline";
    /// The agent's pid, which is also its process group id (written by
    /// provision as soon as it started the agent, and by the agent).
    pub const AGENT_PID: &str = "agent.pid";
    /// [`super::AgentReady`] as JSON, written once the agent is up.
    pub const READY: &str = "ready.json";
    /// [`super::AgentExited`] as JSON, written when the agent expires.
    pub const EXITED: &str = "exited.json";
    /// The agent's stdout and stderr.
    pub const LOG: &str = "agent.log";
}

/// `ready.json`: the agent is up, and what it found on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentReady {
    pub sandbox_id: String,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    /// The deadline it started with.
    pub deadline: DateTime<Utc>,
    pub telemetry: HostInventory,
    pub agent_version: String,
}

/// `exited.json`: the agent ended by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentExited {
    /// `expired`.
    pub reason: String,
    pub at: DateTime<Utc>,
}

const USAGE: &str = "usage: sandboxer agent --venue DIR --sandbox-id ID --deadline RFC3339";

/// The longest the agent sleeps without looking at `DIR/deadline` and at
/// whether its venue still exists, so that a deadline moved earlier or a
/// venue removed behind its back end it within this time.
const MAX_NAP: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq)]
struct AgentArgs {
    venue: PathBuf,
    sandbox_id: String,
    deadline: DateTime<Utc>,
}

/// Run the agent with `args` (argv after the program name, with or without
/// the leading `agent`); returns the process exit code. Messages go to
/// stderr, which the canary redirects to `agent.log`.
pub fn agent_main(args: &[String]) -> i32 {
    let args = match parse_args(args) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return 0;
        }
        Err(msg) => {
            eprintln!("sandboxer agent: {msg}\n{USAGE}");
            return 2;
        }
    };
    match run(&args) {
        Ok(()) => 0,
        Err(msg) => {
            log(&format!("error: {msg}"));
            1
        }
    }
}

fn log(msg: &str) {
    eprintln!(
        "{} agent[{}]: {msg}",
        Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        std::process::id()
    );
}

/// `Ok(None)` for `--help`.
fn parse_args(args: &[String]) -> Result<Option<AgentArgs>, String> {
    let args = match args.first().map(String::as_str) {
        Some("agent") => &args[1..],
        _ => args,
    };
    let (mut venue, mut id, mut deadline) = (None, None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let slot = match flag {
            "--venue" => &mut venue,
            "--sandbox-id" => &mut id,
            "--deadline" => &mut deadline,
            other => return Err(format!("unexpected argument `{other}`")),
        };
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("`{flag}` needs a value"))?,
        };
        *slot = Some(value);
    }
    let venue = PathBuf::from(venue.ok_or("missing --venue")?);
    let sandbox_id = id.ok_or("missing --sandbox-id")?;
    if !sandbox_id_ok(&sandbox_id) {
        return Err(format!("`{sandbox_id}` is not a sandbox id"));
    }
    let deadline = deadline.ok_or("missing --deadline")?;
    let deadline = DateTime::parse_from_rfc3339(&deadline)
        .map_err(|e| format!("--deadline `{deadline}` is not RFC 3339: {e}"))?
        .with_timezone(&Utc);
    Ok(Some(AgentArgs {
        venue,
        sandbox_id,
        deadline,
    }))
}

fn sandbox_id_ok(id: &str) -> bool {
    sandboxer_core::model::is_sandbox_id(id)
}

fn run(args: &AgentArgs) -> Result<(), String> {
    let started_at = sandboxer_core::model::now();
    let t0 = std::time::Instant::now();
    become_group_leader();
    let venue = std::path::absolute(&args.venue)
        .map_err(|e| format!("venue {}: {e}", args.venue.display()))?;
    // The working folder is how `teardown` and `list_resources` recognise
    // this process as the venue's agent (rather than a recycled pid).
    std::env::set_current_dir(&venue).map_err(|e| format!("venue {}: {e}", venue.display()))?;
    let pid = std::process::id();
    write_atomic(&venue.join(files::AGENT_PID), format!("{pid}\n").as_bytes())?;

    let telemetry = HostInventory::collect_here(&venue, venue.parent());
    let ready = AgentReady {
        sandbox_id: args.sandbox_id.clone(),
        pid,
        started_at,
        deadline: args.deadline,
        telemetry,
        agent_version: AGENT_VERSION.to_string(),
    };
    let json = serde_json::to_vec_pretty(&ready).map_err(|e| e.to_string())?;
    write_atomic(&venue.join(files::READY), &json)?;
    log(&format!(
        "ready in {} us for {}; deadline {}",
        t0.elapsed().as_micros(),
        args.sandbox_id,
        args.deadline.to_rfc3339()
    ));

    let mut deadline = args.deadline;
    loop {
        let now = Utc::now();
        if now >= deadline {
            // The deadline came: `extend` may have moved it meanwhile.
            match read_deadline(&venue) {
                Some(moved) if moved > deadline => {
                    log(&format!("deadline moved to {}", moved.to_rfc3339()));
                    deadline = moved;
                    continue;
                }
                _ => break,
            }
        }
        let left = (deadline - now).to_std().unwrap_or_default();
        std::thread::sleep(left.min(MAX_NAP));
        if !venue.is_dir() {
            log("the venue was removed; exiting");
            return Ok(());
        }
        if left > MAX_NAP {
            // A long nap: honour a deadline moved earlier as well.
            if let Some(d) = read_deadline(&venue) {
                deadline = d;
            }
        }
    }
    let exited = AgentExited {
        reason: "expired".to_string(),
        at: sandboxer_core::model::now(),
    };
    let json = serde_json::to_vec_pretty(&exited).map_err(|e| e.to_string())?;
    write_atomic(&venue.join(files::EXITED), &json)?;
    log("expired; exiting");
    Ok(())
}

/// Leave the caller's session and process group, so that `teardown` can
/// signal the agent and anything it starts as one group. `setsid` fails only
/// for a process that already leads a group, which is as good.
fn become_group_leader() {
    // SAFETY: setsid(2) has no memory-safety preconditions.
    unsafe {
        libc::setsid();
    }
}

fn read_deadline(venue: &Path) -> Option<DateTime<Utc>> {
    let text = std::fs::read_to_string(venue.join(files::DEADLINE)).ok()?;
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// Write `data` to `path` atomically (readers see all of it or none).
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), String> {
    sandboxer_core::fsutil::replace(path, 0o644, data)
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

pub(crate) use sandboxer_core::process::stat_says_running;

/// Whether the agent of venue `dir` runs: no `exited.json`, a pid in
/// `agent.pid` whose process runs with `dir` as its working folder.
pub(crate) fn venue_agent_runs(dir: &Path) -> bool {
    if dir.join(files::EXITED).exists() {
        return false;
    }
    let Some(pid) = std::fs::read_to_string(dir.join(files::AGENT_PID))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return false;
    };
    let runs =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| stat_says_running(&s));
    runs && match (
        std::fs::read_link(format!("/proc/{pid}/cwd")),
        std::fs::canonicalize(dir),
    ) {
        (Ok(cwd), Ok(dir)) => cwd == dir,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_flags_with_or_without_the_subcommand() {
        let want = AgentArgs {
            venue: PathBuf::from("/d/venues/sbx-abc"),
            sandbox_id: "sbx-abc".into(),
            deadline: DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
                .unwrap()
                .with_timezone(&Utc),
        };
        let a = args(&[
            "agent",
            "--venue",
            "/d/venues/sbx-abc",
            "--sandbox-id",
            "sbx-abc",
            "--deadline",
            "2026-01-02T03:04:05Z",
        ]);
        assert_eq!(parse_args(&a).unwrap(), Some(want));
        let b = args(&[
            "--deadline=2026-01-02T04:04:05+01:00",
            "--venue=/d/venues/sbx-abc",
            "--sandbox-id",
            "sbx-abc",
        ]);
        let parsed = parse_args(&b).unwrap().unwrap();
        assert_eq!(parsed.deadline.to_rfc3339(), "2026-01-02T03:04:05+00:00");
        assert_eq!(parse_args(&args(&["agent", "--help"])).unwrap(), None);
    }

    #[test]
    fn refuses_bad_arguments() {
        let cases: &[(&[&str], &str)] = &[
            (&["agent"], "missing --venue"),
            (&["--venue", "/v"], "missing --sandbox-id"),
            (
                &["--venue", "/v", "--sandbox-id", "sbx-a"],
                "missing --deadline",
            ),
            (&["--venue"], "needs a value"),
            (&["--bogus", "1"], "unexpected argument `--bogus`"),
            (
                &[
                    "--venue",
                    "/v",
                    "--sandbox-id",
                    "x; rm -rf /",
                    "--deadline",
                    "2026-01-01T00:00:00Z",
                ],
                "not a sandbox id",
            ),
            (
                &[
                    "--venue",
                    "/v",
                    "--sandbox-id",
                    "sbx-a",
                    "--deadline",
                    "tomorrow",
                ],
                "not RFC 3339",
            ),
        ];
        for (argv, want) in cases {
            let err = parse_args(&args(argv)).unwrap_err();
            assert!(err.contains(want), "{argv:?}: {err}");
        }
        assert_eq!(agent_main(&args(&["agent", "--nope"])), 2);
    }

    #[test]
    fn proc_stat_states() {
        assert!(stat_says_running("123 (sandboxer) S 1 123 123 0 -1"));
        assert!(stat_says_running("123 (odd) name) R 1"));
        assert!(!stat_says_running("123 (sandboxer) Z 1 123"));
        assert!(!stat_says_running("123 (sandboxer) X 1"));
        assert!(!stat_says_running(""));
    }

    #[test]
    fn a_venue_is_running_only_with_its_own_live_agent() {
        let dir = std::env::temp_dir().join(format!("sbx-agent-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!venue_agent_runs(&dir), "no agent.pid");
        // A live pid whose working folder is elsewhere (this test process)
        // is not the venue's agent: a recycled pid is never taken for it.
        std::fs::write(
            dir.join(files::AGENT_PID),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        assert!(!venue_agent_runs(&dir));
        std::fs::write(dir.join(files::AGENT_PID), "garbage\n").unwrap();
        assert!(!venue_agent_runs(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
