//! `ext.canary`: deploys the canary agent (the sandboxer binary itself) into
//! a venue on the placement host and reports the host's telemetry.
//!
//! All host work goes through the sandbox's transport, so the same code runs
//! on `local` and on SSH hosts. Per sandbox:
//!
//! - provision: one `exec` that links the deployed binary into
//!   `DATA/venues/ID/`, writes `deadline`, and starts the agent detached.
//!   The binary is found through `DATA/agents/by-fingerprint/FPKEY` (a key
//!   of the local file's identity, no hashing); when the host does not know
//!   it, the binary is hashed and uploaded to `DATA/agents/HASH/sandboxer`
//!   unless that content is there already: one upload per host and content;
//! - wait_ready: polls `ready.json` (backoff 1 ms doubling to 20 ms);
//! - teardown: one `exec` that stops the agent's process group and removes
//!   the venue;
//! - extend: one `exec` that rewrites `deadline`;
//! - pause / resume: one `exec` that stops (`SIGSTOP`) or continues
//!   (`SIGCONT`, after writing the new `deadline`) the agent's process
//!   group;
//! - snapshot: one `exec` that archives the venue (less the agent's own
//!   runtime files) into `DATA/snapshots/.SNAP.partial/venue.tar` and
//!   renames the folder to `DATA/snapshots/SNAP` once whole; a restore
//!   unpacks it into the new venue before the agent starts.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use sandboxer_core::extension::{
    Capabilities, Extension, Provisioned, ReadyInfo, Resource, SandboxCtx, SnapshotMade,
};
use sandboxer_core::model::{is_sandbox_id, Reachability};
use sandboxer_core::snapshot::{folders_listing, is_snapshot_id, partial_dir};
use sandboxer_core::transport::{remove_paths, shell_quote, Transport, Utf8Path, Utf8PathBuf};
use sandboxer_core::{Error, ErrorKind, Result};

use crate::agent::{files, AgentExited, AgentReady};

/// The extension id.
pub const CANARY_EXTENSION_ID: &str = "ext.canary";

/// The `kind` of the canary's [`Resource`]s.
pub const VENUE_RESOURCE_KIND: &str = "canary venue";

/// The `kind` of a canary snapshot found on a host.
pub const SNAPSHOT_RESOURCE_KIND: &str = "canary snapshot";

/// Script exit codes with a meaning.
const EXIT_NO_AGENT: i32 = 97;
const EXIT_VENUE_EXISTS: i32 = 98;
const EXIT_NO_VENUE: i32 = 44;
const EXIT_NOT_RUNNING: i32 = 45;
const EXIT_NO_SNAPSHOT: i32 = 46;

/// The longest pause between two looks at `ready.json`.
const MAX_POLL: Duration = Duration::from_millis(20);

/// The canary extension (`ext.canary`).
pub struct CanaryExtension {
    binary: PathBuf,
    /// (fingerprint of `binary`, its content key) of the last hash.
    hashed: Mutex<Option<(String, String)>>,
}

impl CanaryExtension {
    /// The canary that deploys `agent_binary` (the CLI passes its own
    /// executable). Nothing is read until the first provision.
    pub fn new(agent_binary: PathBuf) -> Self {
        CanaryExtension {
            binary: agent_binary,
            hashed: Mutex::new(None),
        }
    }

    /// The binary this canary deploys.
    pub fn agent_binary(&self) -> &Path {
        &self.binary
    }

    /// The binary's fingerprint: device, inode, size and times, which change
    /// whenever the file does. Cheap (one `stat`).
    fn fingerprint(&self) -> Result<String> {
        let m = std::fs::metadata(&self.binary).map_err(|e| {
            Error::io(
                format!("the canary agent binary {}", self.binary.display()),
                e,
            )
        })?;
        Ok(format!(
            "{}:{}:{}:{}.{}:{}.{}",
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        ))
    }

    /// The name under `DATA/agents/by-fingerprint/` of the file that holds
    /// the content key of this very binary file (16 hex digits).
    fn fingerprint_key(&self) -> Result<String> {
        Ok(short_sha256(self.fingerprint()?.as_bytes()))
    }

    /// The content key of the agent binary: 16 hex digits of its SHA-256,
    /// which names its folder under `DATA/agents/` on every host. Hashed at
    /// most once per process and binary; a provision only needs it when the
    /// host does not know this binary yet.
    pub async fn agent_key(&self) -> Result<String> {
        let fp = self.fingerprint()?;
        if let Some((f, k)) = &*self.hashed.lock().expect("hash lock") {
            if *f == fp {
                return Ok(k.clone());
            }
        }
        let binary = self.binary.clone();
        let key = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut hasher = Sha256::new();
            std::io::copy(&mut std::fs::File::open(&binary)?, &mut hasher)?;
            Ok(hex::encode(&hasher.finalize()[..8]))
        })
        .await
        .map_err(|e| Error::internal(format!("hashing the agent binary: {e}")))?
        .map_err(|e| {
            Error::io(
                format!("hashing the canary agent binary {}", self.binary.display()),
                e,
            )
        })?;
        *self.hashed.lock().expect("hash lock") = Some((fp, key.clone()));
        Ok(key)
    }

    /// Put the binary on the host: `DATA/agents/KEY/sandboxer` unless that
    /// content is there already (from another machine or build), then
    /// `DATA/agents/by-fingerprint/FPKEY` = `KEY`, which is what the start
    /// script looks up.
    async fn deploy(&self, t: &dyn Transport, fp_key: &str) -> Result<()> {
        let key = self.agent_key().await?;
        let root = data_root(t);
        let agent = root.join("agents").join(&key).join(files::BINARY);
        let present = t
            .exec(&format!("[ -x {} ]", shell_quote(agent.as_str())), None)
            .await?
            .success();
        if !present {
            t.copy_file(&self.binary, agent.as_str(), 0o755).await?;
        }
        t.write_file(
            root.join("agents/by-fingerprint").join(fp_key).as_str(),
            format!("{key}\n").as_bytes(),
            0o644,
        )
        .await
    }

    /// Start the agent in `venue`: its pid and the agent key.
    async fn start(&self, ctx: &SandboxCtx, venue: &Utf8Path) -> Result<(u32, String)> {
        let t = &*ctx.transport;
        let fp_key = self.fingerprint_key()?;
        let deadline = rfc3339(ctx.expires_at);
        let restore = match &ctx.restore {
            Some(r) => Some(snapshot_dir(t, &r.snapshot_id)?.join(VENUE_TAR)),
            None => None,
        };
        let script = start_script(t, &fp_key, venue, &ctx.id, &deadline, restore.as_deref());
        let mut out = t.exec(&script, None).await?;
        if out.status == EXIT_NO_AGENT {
            // The host does not know this binary yet: upload it once.
            self.deploy(t, &fp_key)
                .await
                .map_err(|e| e.context(format!("deploying the canary agent to {}", t.host())))?;
            out = t.exec(&script, None).await?;
        }
        match out.status {
            0 => {
                let stdout = out.stdout_str();
                let mut words = stdout.split_whitespace();
                match (words.next(), words.next().map(str::parse::<u32>)) {
                    (Some(key), Some(Ok(pid))) => Ok((pid, key.to_string())),
                    _ => Err(Error::new(
                        ErrorKind::ProvisionFailed,
                        format!(
                            "starting the canary agent in {venue} on {}: no key and pid in the output `{}`",
                            t.host(),
                            stdout.trim()
                        ),
                    )),
                }
            }
            EXIT_VENUE_EXISTS => Err(Error::conflict(format!(
                "the canary venue {venue} already exists on {}",
                t.host()
            ))
            .with_hint("tear the sandbox down first; ids are never reused")),
            EXIT_NO_SNAPSHOT => Err(Error::not_found(format!(
                "the snapshot to restore is not on {} ({})",
                t.host(),
                restore.as_ref().map(|p| p.as_str()).unwrap_or("?")
            ))),
            status => Err(Error::new(
                ErrorKind::ProvisionFailed,
                format!(
                    "starting the canary agent in {venue} on {} failed (exit {status}): {}",
                    t.host(),
                    out.stderr_tail(5)
                ),
            )),
        }
    }

    /// The error for an agent that ended before it was ready.
    async fn died(&self, t: &dyn Transport, venue: &Utf8Path, pid: u32) -> Error {
        let exited = read_opt(t, venue.join(files::EXITED).as_str())
            .await
            .and_then(|b| serde_json::from_slice::<AgentExited>(&b).ok());
        let how = match exited {
            Some(e) => format!("exited ({}) at {}", e.reason, rfc3339(e.at)),
            None => "died".to_string(),
        };
        let log = log_tail(t, venue).await;
        Error::new(
            ErrorKind::ProvisionFailed,
            format!(
                "the canary agent (pid {pid}) in {venue} on {} {how} before it was ready; agent.log: {log}",
                t.host()
            ),
        )
    }
}

impl std::fmt::Debug for CanaryExtension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanaryExtension")
            .field("binary", &self.binary)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Extension for CanaryExtension {
    fn id(&self) -> &str {
        CANARY_EXTENSION_ID
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            extend: true,
            list_resources: true,
            uses_host: true,
            pause: true,
            snapshot: true,
        }
    }

    /// Create `DATA/venues/ID`, put the agent binary in it, write its
    /// `deadline` (the sandbox's expiry) and start the agent detached. The
    /// handle is `{venue, pid, agent}`. A venue that already exists is a
    /// `Conflict` (and is left alone); any other failure removes the venue.
    async fn provision(&self, ctx: &SandboxCtx) -> Result<Provisioned> {
        let t = &*ctx.transport;
        let venue = venue_dir(t, &ctx.id)?;
        let (pid, key) = match self.start(ctx, &venue).await {
            Ok(started) => started,
            Err(e) => {
                if e.kind() != ErrorKind::Conflict {
                    let _ = remove_venue(t, venue.as_str(), None).await;
                }
                return Err(e);
            }
        };
        tracing::debug!(sandbox = %ctx.id, host = t.host(), %venue, pid, "canary agent started");
        Ok(Provisioned {
            handle: json!({
                "venue": venue,
                "pid": pid,
                "agent": key,
            }),
        })
    }

    /// Poll `ready.json` until it appears (backoff from 1 ms to 20 ms), at
    /// most until `deadline`. An agent that ended first is a
    /// `ProvisionFailed` with the tail of `agent.log`; running out of time is
    /// a `Timeout`. The handle may be `Null` (the venue follows from the id).
    async fn wait_ready(
        &self,
        ctx: &SandboxCtx,
        handle: &Value,
        deadline: tokio::time::Instant,
    ) -> Result<ReadyInfo> {
        let t = &*ctx.transport;
        let venue = venue_dir(t, &ctx.id)?;
        let ready_path = venue.join(files::READY);
        let mut pid = handle_pid(handle);
        let mut proc_fs: Option<bool> = None;
        let mut nap = Duration::from_millis(1);
        loop {
            if let Some(bytes) = t.read_file(ready_path.as_str()).await? {
                tracing::debug!(sandbox = %ctx.id, host = t.host(), "canary agent ready");
                return ready_info(t, venue.as_str(), handle, &bytes);
            }
            if pid.is_none() {
                pid = read_opt(t, venue.join(files::AGENT_PID).as_str())
                    .await
                    .and_then(|b| String::from_utf8_lossy(&b).trim().parse().ok());
                if pid.is_none()
                    && t.read_file(venue.join(files::DEADLINE).as_str())
                        .await?
                        .is_none()
                {
                    return Err(Error::not_found(format!(
                        "no canary venue {venue} on {}",
                        t.host()
                    )));
                }
            }
            if let Some(p) = pid {
                if !pid_runs(t, p, &mut proc_fs).await? {
                    // It may have become ready just before it ended.
                    if let Some(bytes) = t.read_file(ready_path.as_str()).await? {
                        return ready_info(t, venue.as_str(), handle, &bytes);
                    }
                    return Err(self.died(t, &venue, p).await);
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the canary agent in {venue} on {} was not ready in time; agent.log: {}",
                        t.host(),
                        log_tail(t, &venue).await
                    ),
                ));
            }
            tokio::time::sleep(nap.min(deadline - now)).await;
            nap = (nap * 2).min(MAX_POLL);
        }
    }

    /// Stop the agent's process group (TERM, up to ~2 s, then KILL) and
    /// remove the venue. A venue that is gone, an unknown id and a `Null`
    /// handle are fine.
    async fn teardown(&self, ctx: &SandboxCtx, handle: &Value) -> Result<()> {
        let t = &*ctx.transport;
        let venue = venue_dir(t, &ctx.id)?;
        remove_venue(t, venue.as_str(), handle_pid(handle)).await
    }

    /// Rewrite the venue's `deadline`; the agent picks it up when its
    /// current deadline comes. `NotFound` without a venue, `Conflict` when
    /// its agent no longer runs.
    async fn extend(
        &self,
        ctx: &SandboxCtx,
        _handle: &Value,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let t = &*ctx.transport;
        let venue = venue_dir(t, &ctx.id)?;
        let out = t
            .exec(&extend_script(venue.as_str(), &rfc3339(expires_at)), None)
            .await?;
        venue_step(t, &venue, "writing the deadline of", out)
    }

    /// Stop the agent's process group (`SIGSTOP`): it uses no CPU until
    /// resumed. `NotFound` without a venue, `Conflict` when its agent no
    /// longer runs.
    async fn pause(&self, ctx: &SandboxCtx, _handle: &Value) -> Result<()> {
        let t = &*ctx.transport;
        let venue = venue_dir(t, &ctx.id)?;
        let out = t.exec(&signal_script(venue.as_str(), None), None).await?;
        venue_step(t, &venue, "pausing", out)
    }

    /// Write the new `deadline` and continue the agent's process group.
    async fn resume(
        &self,
        ctx: &SandboxCtx,
        handle: &Value,
        _deadline: tokio::time::Instant,
    ) -> Result<ReadyInfo> {
        let t = &*ctx.transport;
        let venue = venue_dir(t, &ctx.id)?;
        let dl = rfc3339(ctx.expires_at);
        let out = t
            .exec(&signal_script(venue.as_str(), Some(&dl)), None)
            .await?;
        venue_step(t, &venue, "resuming", out)?;
        let bytes = t
            .read_file(venue.join(files::READY).as_str())
            .await?
            .ok_or_else(|| {
                Error::conflict(format!(
                    "the canary venue {venue} on {} was never ready",
                    t.host()
                ))
            })?;
        ready_info(t, venue.as_str(), handle, &bytes)
    }

    /// Archive the venue, less the agent's runtime files, as
    /// `DATA/snapshots/SNAP/venue.tar` (made under a `.partial` name and
    /// renamed once whole).
    async fn snapshot(
        &self,
        ctx: &SandboxCtx,
        _handle: &Value,
        snapshot_id: &str,
    ) -> Result<SnapshotMade> {
        let t = &*ctx.transport;
        let venue = venue_dir(t, &ctx.id)?;
        let dir = snapshot_dir(t, snapshot_id)?;
        let out = t
            .exec(&snapshot_script(venue.as_str(), dir.as_str()), None)
            .await?;
        if out.status == EXIT_NO_VENUE {
            return Err(Error::not_found(format!(
                "no canary venue {venue} on {}",
                t.host()
            )));
        }
        if !out.success() {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "archiving {venue} on {} failed (exit {}): {}",
                    t.host(),
                    out.status,
                    out.stderr_tail(5)
                ),
            ));
        }
        Ok(SnapshotMade {
            handle: json!({ "dir": dir }),
            size_bytes: out.stdout_str().trim().parse().ok(),
            location: Some(dir.into_string()),
        })
    }

    /// Remove `DATA/snapshots/SNAP` and any part of it.
    async fn delete_snapshot(
        &self,
        transport: Arc<dyn Transport>,
        snapshot_id: &str,
        _handle: &Value,
    ) -> Result<()> {
        let t = &*transport;
        let dir = snapshot_dir(t, snapshot_id)?;
        remove_paths(t, &[&dir, &partial_dir(&dir)], "snapshot").await
    }

    /// Every venue folder under `DATA/venues/`, running when its agent
    /// does, and every snapshot (whole or partial) under
    /// `DATA/snapshots/`.
    async fn list_resources(&self, transport: Arc<dyn Transport>) -> Result<Vec<Resource>> {
        let t = &*transport;
        let venues = data_root(t).join("venues");
        let snapshots = data_root(t).join("snapshots");
        let out = t
            .exec(&list_script(venues.as_str(), snapshots.as_str()), None)
            .await?;
        if !out.success() {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "listing canary venues in {venues} on {} failed (exit {}): {}",
                    t.host(),
                    out.status,
                    out.stderr_tail(5)
                ),
            ));
        }
        Ok(out
            .stdout_str()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(id, what)| {
                if is_sandbox_id(id) {
                    Some(Resource {
                        sandbox_id: id.to_string(),
                        kind: VENUE_RESOURCE_KIND.to_string(),
                        name: venues.join(id).into_string(),
                        running: what == "1",
                    })
                } else {
                    sandboxer_core::snapshot::listed_folder(
                        &format!("{id} {what}"),
                        &snapshots,
                        SNAPSHOT_RESOURCE_KIND,
                    )
                }
            })
            .collect())
    }
}

/// The archive of the venue in a snapshot folder.
const VENUE_TAR: &str = "venue.tar";

/// `DATA/snapshots/SNAP`, for a well-formed snapshot id only.
fn snapshot_dir(t: &dyn Transport, id: &str) -> Result<Utf8PathBuf> {
    if !is_snapshot_id(id) {
        return Err(Error::invalid_input(format!("`{id}` is not a snapshot id")));
    }
    Ok(data_root(t).join("snapshots").join(id))
}

/// The outcome of a pause or resume script.
fn venue_step(
    t: &dyn Transport,
    venue: &Utf8Path,
    what: &str,
    out: sandboxer_core::transport::ExecOutput,
) -> Result<()> {
    match out.status {
        0 => Ok(()),
        EXIT_NO_VENUE => Err(Error::not_found(format!(
            "no canary venue {venue} on {}",
            t.host()
        ))),
        EXIT_NOT_RUNNING => Err(Error::conflict(format!(
            "the canary agent in {venue} on {} no longer runs",
            t.host()
        ))),
        status => Err(Error::new(
            ErrorKind::Io,
            format!(
                "{what} the canary agent in {venue} on {} failed (exit {status}): {}",
                t.host(),
                out.stderr_tail(5)
            ),
        )),
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn data_root(t: &dyn Transport) -> &Utf8Path {
    t.data_dir()
}

/// `DATA/venues/ID`, for a well-formed id only (it lands in paths and
/// scripts).
fn venue_dir(t: &dyn Transport, id: &str) -> Result<Utf8PathBuf> {
    if !is_sandbox_id(id) {
        return Err(Error::invalid_input(format!(
            "`{id}` is not a sandbox id; the canary names venues only after sandbox ids"
        )));
    }
    Ok(data_root(t).join("venues").join(id))
}

fn handle_pid(handle: &Value) -> Option<u32> {
    handle
        .get("pid")
        .and_then(Value::as_u64)
        .and_then(|p| u32::try_from(p).ok())
}

/// A file's content; `None` when missing or unreadable (for messages).
async fn read_opt(t: &dyn Transport, path: &str) -> Option<Vec<u8>> {
    t.read_file(path).await.ok().flatten()
}

async fn log_tail(t: &dyn Transport, venue: &Utf8Path) -> String {
    match read_opt(t, venue.join(files::LOG).as_str()).await {
        Some(b) => {
            let text = String::from_utf8_lossy(&b);
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(10)..].join("\n");
            if tail.trim().is_empty() {
                "(empty)".to_string()
            } else {
                tail
            }
        }
        None => "(none)".to_string(),
    }
}

/// Whether `pid` runs on the host, from `/proc/PID/stat` (a zombie does
/// not). Without `/proc` on the host it is assumed to run.
async fn pid_runs(t: &dyn Transport, pid: u32, proc_fs: &mut Option<bool>) -> Result<bool> {
    match t.read_file(&format!("/proc/{pid}/stat")).await? {
        Some(stat) => Ok(crate::agent::stat_says_running(&String::from_utf8_lossy(
            &stat,
        ))),
        None => {
            if proc_fs.is_none() {
                *proc_fs = Some(t.read_file("/proc/self/stat").await?.is_some());
            }
            Ok(*proc_fs == Some(false))
        }
    }
}

fn ready_info(t: &dyn Transport, venue: &str, handle: &Value, bytes: &[u8]) -> Result<ReadyInfo> {
    let ready: AgentReady = serde_json::from_slice(bytes).map_err(|e| {
        Error::internal(format!(
            "{venue}/{} on {} is not what the agent writes: {e}",
            files::READY,
            t.host()
        ))
    })?;
    let mut telemetry = ready.telemetry;
    telemetry.host = t.host().to_string();
    let details = BTreeMap::from([
        ("venue".to_string(), json!(venue)),
        ("pid".to_string(), json!(ready.pid)),
        ("agent_version".to_string(), json!(ready.agent_version)),
    ]);
    let mut new_handle = match handle {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    new_handle.insert("venue".into(), json!(venue));
    new_handle.insert("pid".into(), json!(ready.pid));
    Ok(ReadyInfo {
        reachability: Reachability {
            address: t.address().to_string(),
            details,
            ..Reachability::default()
        },
        telemetry: Some(
            serde_json::to_value(&telemetry).map_err(|e| Error::internal(e.to_string()))?,
        ),
        handle: Some(Value::Object(new_handle)),
    })
}

/// Stop the venue's agent group and remove the venue (see
/// [`teardown_script`]).
async fn remove_venue(t: &dyn Transport, venue: &str, pid: Option<u32>) -> Result<()> {
    let out = t.exec(&teardown_script(venue, pid), None).await?;
    if out.success() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Io,
        format!(
            "removing the canary venue {venue} on {} failed (exit {}): {}",
            t.host(),
            out.status,
            out.stderr_tail(5)
        ),
    ))
}

/// Start the agent in a new venue; prints the agent key and the agent's pid,
/// and writes the pid to `agent.pid` at once (the agent rewrites it with the
/// same value), so that a teardown right after provision finds the agent
/// however far it got. The binary is found through
/// `agents/by-fingerprint/FPKEY`. Exit 97: this binary is not deployed on
/// the host yet; 98: the venue exists.
fn start_script(
    t: &dyn Transport,
    fp_key: &str,
    venue: &Utf8Path,
    id: &str,
    deadline: &str,
    restore: Option<&Utf8Path>,
) -> String {
    let root = data_root(t);
    let unpack = match restore {
        Some(tar) => format!(
            "[ -f {tar} ] || {{ rmdir \"$V\"; exit {EXIT_NO_SNAPSHOT}; }}\ntar -xf {tar} -C \"$V\" || exit 1\n",
            tar = shell_quote(tar.as_str())
        ),
        None => String::new(),
    };
    let (f, agents, v, vs, id, dl) = (
        shell_quote(root.join("agents/by-fingerprint").join(fp_key).as_str()),
        shell_quote(root.join("agents").as_str()),
        shell_quote(venue.as_str()),
        shell_quote(root.join("venues").as_str()),
        shell_quote(id),
        shell_quote(deadline),
    );
    let bin = files::BINARY;
    format!(
        r#"_k=
{{ read -r _k < {f}; }} 2>/dev/null
case "$_k" in ''|*[!0-9a-f]*) exit {EXIT_NO_AGENT} ;; esac
A={agents}/"$_k"/{bin}
V={v}
[ -x "$A" ] || exit {EXIT_NO_AGENT}
[ -d {vs} ] || mkdir -p {vs} || exit 1
mkdir "$V" 2>/dev/null || {{ [ -e "$V" ] && exit {EXIT_VENUE_EXISTS}; mkdir "$V" || exit 1; }}
{unpack}{{ ln "$A" "$V/{bin}" 2>/dev/null || cp "$A" "$V/{bin}"; }} || exit 1
printf '%s\n' {dl} > "$V/{deadline}" || exit 1
cd "$V" || exit 1
./{bin} agent --venue "$V" --sandbox-id {id} --deadline {dl} </dev/null >{log} 2>&1 &
_p=$!
printf '%s\n' "$_p" > {pidfile}
echo "$_k $_p"
"#,
        deadline = files::DEADLINE,
        log = files::LOG,
        pidfile = files::AGENT_PID,
    )
}

/// Stop the agent's process group (TERM, up to ~2 s, then KILL) and remove
/// the venue. The pid comes from `agent.pid`, else from the handle, and is
/// signalled only when that process runs in the venue. Removal is retried
/// once, for an agent that was still writing its first files.
fn teardown_script(venue: &str, pid: Option<u32>) -> String {
    let v = shell_quote(venue);
    let hpid = pid.map(|p| p.to_string()).unwrap_or_default();
    format!(
        r#"{prelude}
V={v}
case "$V" in */venues/sbx-*) ;; *) echo "refusing to remove $V" >&2; exit 3 ;; esac
_stop() {{
  _sbx_pid "$V" || _p={hpid}
  [ -n "$_p" ] && _sbx_owned "$V" "$_p" || return 0
  kill -TERM -"$_p" 2>/dev/null || kill -TERM "$_p" 2>/dev/null
  _i=0
  while _sbx_runs "$_p" && [ "$_i" -lt 400 ]; do
    sleep 0.005 2>/dev/null || {{ sleep 1; _i=$((_i + 199)); }}
    _i=$((_i + 1))
  done
  kill -KILL -"$_p" 2>/dev/null || kill -KILL "$_p" 2>/dev/null
  return 0
}}
[ -e "$V" ] || exit 0
_stop
rm -rf "$V" 2>/dev/null || {{ _stop; rm -rf "$V"; }}
[ ! -e "$V" ]
"#,
        prelude = crate::sh::PRELUDE,
    )
}

/// Rewrite `deadline` atomically. Exit 44: no venue; 45: its agent does
/// not run.
fn extend_script(venue: &str, deadline: &str) -> String {
    let (v, dl) = (shell_quote(venue), shell_quote(deadline));
    format!(
        r#"{prelude}
V={v}
[ -d "$V" ] || exit {EXIT_NO_VENUE}
_sbx_alive "$V" || exit {EXIT_NOT_RUNNING}
printf '%s\n' {dl} > "$V/.{deadline}.tmp.$$" && mv -f "$V/.{deadline}.tmp.$$" "$V/{deadline}" || exit 1
"#,
        prelude = crate::sh::PRELUDE,
        deadline = files::DEADLINE,
    )
}

/// One `ID 1|0` line per venue folder (1: its agent runs), then one
/// `SNAP whole|partial` line per snapshot folder.
fn list_script(venues: &str, snapshots: &str) -> String {
    format!(
        r#"{prelude}
if cd {vs} 2>/dev/null; then
  for _v in sbx-*; do
    [ -d "$_v" ] || continue
    if _sbx_alive "$_v"; then echo "$_v 1"; else echo "$_v 0"; fi
  done
fi
{snapshots}"#,
        prelude = crate::sh::PRELUDE,
        vs = shell_quote(venues),
        snapshots = folders_listing(Utf8Path::new(snapshots)),
    )
}

/// Stop (`deadline` is `None`) or continue the venue's agent group; a
/// resume first writes the new `deadline`, so an agent whose old one
/// passed while it was stopped runs on. Exit 44: no venue; 45: its agent
/// does not run.
fn signal_script(venue: &str, deadline: Option<&str>) -> String {
    let v = shell_quote(venue);
    let (write, sig) = match deadline {
        Some(dl) => (
            format!(
                "printf '%s\\n' {dl} > \"$V/.{f}.tmp.$$\" && mv -f \"$V/.{f}.tmp.$$\" \"$V/{f}\" || exit 1\n",
                dl = shell_quote(dl),
                f = files::DEADLINE
            ),
            "CONT",
        ),
        None => (String::new(), "STOP"),
    };
    format!(
        r#"{prelude}
V={v}
[ -d "$V" ] || exit {EXIT_NO_VENUE}
_sbx_alive "$V" || exit {EXIT_NOT_RUNNING}
{write}kill -{sig} -"$_p" 2>/dev/null || kill -{sig} "$_p" || exit 1
"#,
        prelude = crate::sh::PRELUDE,
    )
}

/// Archive the venue into `.SNAP.partial/venue.tar` beside `dir`, less the
/// agent's binary and runtime files, rename the folder to `dir` and print
/// the archive's size. Exit 44: no venue.
fn snapshot_script(venue: &str, dir: &str) -> String {
    let d = Utf8Path::new(dir);
    let (v, dq, pq) = (
        shell_quote(venue),
        shell_quote(dir),
        shell_quote(partial_dir(d).as_str()),
    );
    format!(
        r#"V={v}
[ -d "$V" ] || exit {EXIT_NO_VENUE}
P={pq}
rm -rf "$P" && mkdir -p "$P" || exit 1
tar -cf "$P/{tar}" -C "$V" --exclude=./{bin} --exclude=./{pid} --exclude=./{ready} --exclude=./{exited} . || {{ rm -rf "$P"; exit 1; }}
mv "$P" {dq} || {{ rm -rf "$P"; exit 1; }}
wc -c < {dq}/{tar}
"#,
        tar = VENUE_TAR,
        bin = files::BINARY,
        pid = files::AGENT_PID,
        ready = files::READY,
        exited = files::EXITED,
    )
}

/// 16 hex digits of the SHA-256 of `data`.
fn short_sha256(data: &[u8]) -> String {
    hex::encode(&Sha256::digest(data)[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys() {
        // sha256("abc") = ba7816bf8f01cfea...
        assert_eq!(short_sha256(b"abc"), "ba7816bf8f01cfea");
    }

    #[test]
    fn scripts_quote_every_value() {
        let s = teardown_script("/data dir/venues/sbx-abc", Some(42));
        assert!(s.contains("V='/data dir/venues/sbx-abc'"), "{s}");
        assert!(s.contains("_p=42"), "{s}");
        let s = teardown_script("/d/venues/sbx-abc", None);
        assert!(s.contains("|| _p=\n"), "{s}");
        let s = extend_script("/d/venues/sbx-abc", "2026-01-01T00:00:00.000Z");
        assert!(
            s.contains("printf '%s\\n' 2026-01-01T00:00:00.000Z >"),
            "{s}"
        );
    }
}
