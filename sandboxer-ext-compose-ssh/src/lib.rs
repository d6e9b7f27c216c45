//! `ext.compose-ssh`: the consumer repo's docker compose stack, up on a
//! placement host, its published ports reported.
//!
//! All host work goes through the sandbox's
//! [`Transport`](sandboxer_core::transport::Transport), so the same code
//! serves `local` and SSH hosts. For a sandbox `ID` on a host whose data
//! folder is `DATA`:
//!
//! - **provision**: the input `repo` (a folder on *this* machine) is packed
//!   into a tar without `.git` and build outputs (see [`DEFAULT_EXCLUDES`])
//!   and streamed as the stdin of `tar -x` into the work folder
//!   `DATA/work/ID` (one `exec`). The compose file is the route config's
//!   `compose_file`, else the first of `fallback_compose_files` found in the
//!   repo. Compose is detected on the host (`docker compose`, v2, else
//!   `docker-compose`, v1; once per host and process) unless the config
//!   says `compose_command`. `config --services` lists the services; an
//!   override file next to the compose file ([`OVERRIDE_FILE_NAME`]) gives
//!   every service the label [`SANDBOX_LABEL`]`=ID` and the environment
//!   variable [`SANDBOX_ENV`]`=ID`; then `up -d` with project name `ID` and
//!   `SANDBOXER_SANDBOX_ID` in the command's environment. Any failure
//!   removes what was made before the error is returned.
//! - **wait_ready**: polls `docker inspect` of the containers labelled with
//!   the id until every one runs (and is healthy where it has a
//!   healthcheck), then connects to each published TCP port at the
//!   transport's address from this process. A container that exited or is
//!   unhealthy fails at once, with the tail of its logs.
//! - **teardown**: `down -v --remove-orphans -t STOP_TIMEOUT`, then removes
//!   whatever is still labelled with the id or its project (containers,
//!   networks, volumes), then the work folder; idempotent, and it works from
//!   the id alone (a lost handle, compose v1 or v2).
//! - **list_resources**: compose projects (containers labelled with a
//!   sandbox id), work folders without containers, and snapshots.
//! - **pause / resume**: `docker pause` / `unpause` of the stack's
//!   containers, as `compose pause` does (the processes frozen by the
//!   cgroup freezer, their memory kept), or with the route config
//!   `pause_mode = "stop"`, `docker stop` / `start` as `compose stop` does
//!   (the memory freed; processes start over, the files stay); resume then
//!   waits for readiness as `wait_ready` does. One `docker` command each,
//!   by label: compose's own start-up would cost more than the step.
//! - **snapshot**: every service's container committed to an image
//!   `sandboxer/SNAP:SERVICE`, every named volume of the project archived
//!   with `docker cp` into `DATA/compose-snapshots/SNAP/volumes/` (made
//!   under `.SNAP.partial`, renamed once whole). A create from it uploads
//!   the repo as usual, fills the new project's volumes from the archives,
//!   and brings the stack up on the committed images.
//!
//! Every value that reaches the host's shell is quoted with
//! [`shell_quote`](sandboxer_core::transport::shell_quote); the input
//! `repo` never reaches it at all (it is read here).
//!
//! ```no_run
//! use std::sync::Arc;
//! use sandboxer_core::extension::Registry;
//! use sandboxer_ext_compose_ssh::ComposeSshExtension;
//!
//! let mut registry = Registry::new();
//! registry.register(Arc::new(ComposeSshExtension::new()));
//! assert!(registry.get("ext.compose-ssh").is_some());
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use sandboxer_core::extension::{
    Capabilities, Extension, Provisioned, ReadyInfo, Resource, SandboxCtx, SnapshotMade,
};
use sandboxer_core::model::{is_sandbox_id, Reachability};
use sandboxer_core::transport::{ExecOutput, Transport, Utf8Path};
use sandboxer_core::{Error, ErrorKind, Result};

mod config;
mod ready;
mod script;
mod services;
mod snapshot;
mod upload;

pub use config::{
    ComposeChoice, ComposeConfig, PauseMode, CONFIG_KEYS, DEFAULT_COMPOSE_FILE, DEFAULT_EXCLUDES,
    DEFAULT_FALLBACK_COMPOSE_FILES, DEFAULT_STOP_TIMEOUT,
};
pub use upload::{pack_repo, Excludes, Packed, MAX_UPLOAD_BYTES};

use ready::{assess, parse_inspect, probe, Assessment};
use script::{Compose, Layout};

/// The extension id.
pub const COMPOSE_SSH_EXTENSION_ID: &str = "ext.compose-ssh";
/// The label every container of a sandbox carries, with the sandbox id.
pub const SANDBOX_LABEL: &str = "sandboxer.sandbox_id";
/// The environment variable holding the sandbox id, in every service and in
/// the environment of every compose command.
pub const SANDBOX_ENV: &str = "SANDBOXER_SANDBOX_ID";
/// The override file written next to the compose file in the work folder.
pub const OVERRIDE_FILE_NAME: &str = ".sandboxer-compose.override.yml";
/// The input naming the repo folder.
pub const REPO_INPUT: &str = "repo";
/// The `kind` of a [`Resource`] for a sandbox's containers.
pub const PROJECT_RESOURCE_KIND: &str = "compose project";
/// The `kind` of a [`Resource`] for a work folder without containers.
pub const WORK_FOLDER_RESOURCE_KIND: &str = "compose work folder";
/// The `kind` of a [`Resource`] for a snapshot (its folder or images).
pub const SNAPSHOT_RESOURCE_KIND: &str = "compose snapshot";

/// Lines of stderr kept in an error.
const STDERR_TAIL_LINES: usize = 10;
/// Lines of a failed container's logs kept in an error.
const LOG_TAIL_LINES: usize = 20;
/// The first and the longest pause between two looks at the containers.
const FIRST_POLL: Duration = Duration::from_millis(25);
const MAX_POLL: Duration = Duration::from_millis(500);
/// How long one TCP connect to a published port may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Which compose a host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ComposeVersion {
    /// `docker-compose` (the Python program).
    V1,
    /// `docker compose` (the docker CLI plugin).
    V2,
}

impl ComposeVersion {
    /// The command words.
    pub fn command(self) -> &'static str {
        match self {
            ComposeVersion::V1 => "docker-compose",
            ComposeVersion::V2 => "docker compose",
        }
    }

    /// `v1` or `v2`, as in the handle and the reachability details.
    pub fn as_str(self) -> &'static str {
        match self {
            ComposeVersion::V1 => "v1",
            ComposeVersion::V2 => "v2",
        }
    }

    /// The inverse of [`ComposeVersion::as_str`].
    pub fn parse(s: &str) -> Option<ComposeVersion> {
        match s {
            "v1" => Some(ComposeVersion::V1),
            "v2" => Some(ComposeVersion::V2),
            _ => None,
        }
    }
}

/// The compose extension (`ext.compose-ssh`).
#[derive(Debug, Default)]
pub struct ComposeSshExtension {
    /// Compose detected per host name, for this process.
    detected: Mutex<HashMap<String, ComposeVersion>>,
}

impl ComposeSshExtension {
    /// The extension; nothing is looked at until the first provision.
    pub fn new() -> Self {
        Self::default()
    }

    /// The compose to use on the transport's host: `choice` when it names
    /// one, else what the host has (`docker compose` first), detected once
    /// per host for this process. A host with neither is `ProvisionFailed`.
    pub async fn compose_version(
        &self,
        t: &dyn Transport,
        choice: ComposeChoice,
    ) -> Result<ComposeVersion> {
        match choice {
            ComposeChoice::V1 => return Ok(ComposeVersion::V1),
            ComposeChoice::V2 => return Ok(ComposeVersion::V2),
            ComposeChoice::Auto => {}
        }
        if let Some(v) = self.cached(t) {
            return Ok(v);
        }
        const SHOWN: &str = "docker compose version || command -v docker-compose";
        let out = t
            .exec(script::DETECT_SCRIPT, None)
            .await
            .map_err(|e| e.context(format!("step `compose detect` on {} (`{SHOWN}`)", t.host())))?;
        let version = match out.stdout_str().trim() {
            "v2" => ComposeVersion::V2,
            "v1" => ComposeVersion::V1,
            _ => {
                return Err(Error::new(
                    ErrorKind::ProvisionFailed,
                    format!(
                        "step `compose detect` on {}: neither `docker compose` (v2) nor `docker-compose` (v1) runs there (looked with `{SHOWN}`){}",
                        t.host(),
                        tail_suffix(&out)
                    ),
                )
                .with_hint("install docker with the compose plugin on that host"))
            }
        };
        self.detected
            .lock()
            .expect("compose cache lock")
            .insert(t.host().to_string(), version);
        Ok(version)
    }

    fn cached(&self, t: &dyn Transport) -> Option<ComposeVersion> {
        self.detected
            .lock()
            .expect("compose cache lock")
            .get(t.host())
            .copied()
    }

    /// What teardown needs from a handle (or, without one, from the config
    /// and the host): the compose command, and the compose files to try
    /// with their override files.
    fn teardown_plan(
        &self,
        t: &dyn Transport,
        cfg: &ComposeConfig,
        handle: &Value,
    ) -> (Option<ComposeVersion>, Vec<(String, String)>) {
        let version = handle
            .get("compose")
            .and_then(Value::as_str)
            .and_then(ComposeVersion::parse)
            .or_else(|| match cfg.compose_command {
                ComposeChoice::V1 => Some(ComposeVersion::V1),
                ComposeChoice::V2 => Some(ComposeVersion::V2),
                ComposeChoice::Auto => self.cached(t),
            });
        let files: Vec<String> = handle
            .get("files")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let candidates = match files.as_slice() {
            [main, over, ..] => vec![(main.clone(), over.clone())],
            _ => cfg
                .compose_candidates()
                .into_iter()
                .map(|f| (f.to_string(), override_path(f)))
                .collect(),
        };
        (version, candidates)
    }

    /// Remove everything of the sandbox from the host (see
    /// [`script::teardown_script`]); `compose down` runs only with
    /// `candidates` (none: the stack was never brought up).
    async fn remove(
        &self,
        t: &dyn Transport,
        layout: &Layout,
        cfg: &ComposeConfig,
        version: Option<ComposeVersion>,
        candidates: &[(String, String)],
    ) -> Result<()> {
        let script = script::teardown_script(
            layout,
            version,
            candidates,
            cfg.stop_timeout_secs(),
            &cfg.env,
        );
        let shown = format!(
            "compose down -v --remove-orphans -t {}; docker rm/network rm/volume rm by label; rm -rf {}",
            cfg.stop_timeout_secs(),
            layout.work_dir
        );
        let out = t
            .exec(&script, None)
            .await
            .map_err(|e| e.context(format!("step `teardown` on {} (`{shown}`)", t.host())))?;
        if !out.success() {
            return Err(step_failed(
                ErrorKind::Io,
                "teardown",
                t.host(),
                &shown,
                &out,
            ));
        }
        let noise = out.stderr_tail(STDERR_TAIL_LINES);
        if !noise.trim().is_empty() {
            tracing::warn!(sandbox = %layout.id, host = t.host(), "teardown: {noise}");
        }
        Ok(())
    }

    /// One look at the containers.
    async fn look(&self, t: &dyn Transport, layout: &Layout) -> Result<Look> {
        let out = t
            .exec(&script::look_script(layout), None)
            .await
            .map_err(|e| {
                e.context(format!(
                    "step `ready` on {} (`docker ps`/`docker inspect` of {})",
                    t.host(),
                    layout.id
                ))
            })?;
        let text = out.stdout_str();
        let (first, json) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        let work = first.trim() == "W1";
        if !out.success() {
            return Ok(Look::Waiting(format!(
                "`docker ps`/`docker inspect` failed (exit {}){}",
                out.status,
                tail_suffix(&out)
            )));
        }
        if json.trim().is_empty() {
            if !work {
                return Err(Error::not_found(format!(
                    "step `ready` on {}: no compose sandbox {} there (no work folder {}, no container labelled {SANDBOX_LABEL}={})",
                    t.host(),
                    layout.id,
                    layout.work_dir,
                    layout.id
                )));
            }
            return Err(Error::new(
                ErrorKind::ProvisionFailed,
                format!(
                    "step `ready` on {}: no container is labelled {SANDBOX_LABEL}={} although the stack was brought up (removed by someone?)",
                    t.host(),
                    layout.id
                ),
            ));
        }
        let containers = match parse_inspect(json) {
            Ok(c) => c,
            Err(why) => return Ok(Look::Waiting(why)),
        };
        match assess(&containers) {
            Assessment::Running(ports) => Ok(Look::Running(ports)),
            Assessment::Waiting(why) => Ok(Look::Waiting(why)),
            Assessment::Failed { container, why } => {
                let logs = match t
                    .exec(&script::logs_script(&container.id, LOG_TAIL_LINES), None)
                    .await
                {
                    Ok(o) => {
                        let s = o.stdout_str();
                        if s.trim().is_empty() {
                            "(no output)".to_string()
                        } else {
                            s.trim_end().to_string()
                        }
                    }
                    Err(e) => format!("(could not read them: {e})"),
                };
                Err(Error::new(
                    ErrorKind::ProvisionFailed,
                    format!(
                        "step `ready` on {}: {why}; `docker logs --tail {LOG_TAIL_LINES} {}`:\n{logs}",
                        t.host(),
                        container.name
                    ),
                ))
            }
        }
    }
}

enum Look {
    Running(BTreeMap<String, Vec<sandboxer_core::model::Port>>),
    Waiting(String),
}

#[async_trait]
impl Extension for ComposeSshExtension {
    fn id(&self) -> &str {
        COMPOSE_SSH_EXTENSION_ID
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            extend: false,
            list_resources: true,
            uses_host: true,
            pause: true,
            snapshot: true,
        }
    }

    /// Upload the repo to `DATA/work/ID`, write the override and `up -d`
    /// (see the crate docs). The handle is `{work_dir, project, compose,
    /// files, services}`. A bad config is `InvalidConfig`; a `repo` that is
    /// not a folder or lacks the compose file is `InvalidInput` (nothing is
    /// made); a work folder that exists already is `Conflict` (left alone);
    /// a failing step is `ProvisionFailed` (or `Timeout` past the ready
    /// timeout) naming the step, the command and the tail of its stderr,
    /// after everything made was removed.
    async fn provision(&self, ctx: &SandboxCtx) -> Result<Provisioned> {
        let t = &*ctx.transport;
        let deadline = tokio::time::Instant::now() + ctx.ready_timeout;
        let cfg = ComposeConfig::from_map(&ctx.config)?;
        let layout = layout(t, &ctx.id)?;
        let repo = ctx.inputs.get(REPO_INPUT).ok_or_else(|| {
            Error::invalid_input(format!(
                "ext.compose-ssh needs the input `{REPO_INPUT}` (the repo folder to bring up)"
            ))
        })?;
        let repo_path = PathBuf::from(repo);
        let compose_file = find_compose_file(&repo_path, &cfg)?;
        let excludes = Excludes::for_repo(&repo_path, &cfg.exclude)?;
        if let Some(p) = excludes.excluded_by(&compose_file) {
            return Err(Error::invalid_config(format!(
                "the compose file {compose_file} is left out of the upload by the exclude pattern `{p}`"
            ))
            .with_hint(format!(
                "keep it with \"!{compose_file}\" in the route config's `exclude` or at the end of the repo's {}",
                upload::DOCKERIGNORE
            )));
        }
        // The services, read here when the file is plain enough (saves a
        // compose run on the host); else `compose config --services` there.
        let local_services = std::fs::read_to_string(repo_path.join(&compose_file))
            .ok()
            .and_then(|text| services::plain_services(&text));
        let version = self.compose_version(t, cfg.compose_command).await?;
        let restore = match &ctx.restore {
            Some(r) => Some(snapshot::Saved::parse(t, &r.snapshot_id, &r.handle)?),
            None => None,
        };
        let packed = tokio::task::spawn_blocking(move || pack_repo(&repo_path, &excludes))
            .await
            .map_err(|e| Error::internal(format!("packing the repo: {e}")))??;
        tracing::debug!(sandbox = %ctx.id, files = packed.files, bytes = packed.bytes, archive = packed.archive.len(), "repo packed");

        let shown = format!("tar -x -o -f - -C {}", layout.work_dir);
        let mut up_started = false;
        let upload = run_step(
            t,
            "upload",
            &script::upload_script(&layout),
            &shown,
            Some(&packed.archive),
            deadline,
        )
        .await;
        let result = match upload {
            Err(e) if e.kind() == ErrorKind::Conflict => return Err(e),
            Err(e) => Err(e),
            Ok(_) => {
                let filled = match &restore {
                    Some(saved) => {
                        // Compose finds the volumes made and filled.
                        up_started = true;
                        restore_volumes(t, &layout, saved, deadline).await
                    }
                    None => Ok(()),
                };
                match filled {
                    Err(e) => Err(e),
                    Ok(()) => {
                        bring_up(
                            ctx,
                            &cfg,
                            &layout,
                            version,
                            &compose_file,
                            local_services,
                            restore.as_ref(),
                            deadline,
                            &mut up_started,
                        )
                        .await
                    }
                }
            }
        };
        match result {
            Ok(handle) => Ok(Provisioned { handle }),
            Err(e) => {
                // Before `up` compose made nothing: no `down` (for v1 that
                // saves half a second, and a broken file would fail it).
                let candidates = if up_started {
                    vec![(compose_file.clone(), override_path(&compose_file))]
                } else {
                    Vec::new()
                };
                match self
                    .remove(t, &layout, &cfg, Some(version), &candidates)
                    .await
                {
                    Ok(()) => Err(e),
                    Err(re) => {
                        tracing::warn!(sandbox = %ctx.id, "rollback failed: {re}");
                        Err(with_rollback_failure(e, &re))
                    }
                }
            }
        }
    }

    /// Poll the containers (backoff 25 ms doubling to 500 ms) until every
    /// one runs and is healthy where it has a healthcheck, then connect to
    /// every published TCP port at the transport's address; at most until
    /// `deadline` (looked at once even when it is past). A container that
    /// exited or is unhealthy is `ProvisionFailed` with its logs' tail; no
    /// work folder and no container is `NotFound`; out of time is `Timeout`
    /// saying what was still missing. The caller's teardown cleans up.
    async fn wait_ready(
        &self,
        ctx: &SandboxCtx,
        handle: &Value,
        deadline: tokio::time::Instant,
    ) -> Result<ReadyInfo> {
        let t = &*ctx.transport;
        let layout = layout(t, &ctx.id)?;
        let mut nap = FIRST_POLL;
        loop {
            let why = match self.look(t, &layout).await? {
                Look::Waiting(why) => why,
                Look::Running(ports) => match probe_all(t.address(), &ports, deadline).await {
                    Ok(()) => {
                        return Ok(ReadyInfo {
                            reachability: self.reachability(t, &layout, handle, ports),
                            telemetry: None,
                            handle: None,
                        })
                    }
                    Err(why) => why,
                },
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "step `ready` on {}: the compose stack of {} was not ready in time: {why}",
                        t.host(),
                        ctx.id
                    ),
                ));
            }
            tokio::time::sleep(nap.min(deadline - now)).await;
            nap = (nap * 2).min(MAX_POLL);
        }
    }

    /// `down -v --remove-orphans -t STOP_TIMEOUT` when the work folder is
    /// there, then remove what is still labelled with the id or its project
    /// (containers, networks, volumes) and the work folder. Ok only when
    /// nothing is left; an unknown id and a `Null` handle are fine (the
    /// compose file and command then follow from the config and the host).
    async fn teardown(&self, ctx: &SandboxCtx, handle: &Value) -> Result<()> {
        let t = &*ctx.transport;
        let layout = layout(t, &ctx.id)?;
        let cfg = ComposeConfig::from_map(&ctx.config).unwrap_or_else(|e| {
            tracing::warn!(sandbox = %ctx.id, "teardown with the default config: {e}");
            ComposeConfig::default()
        });
        let (version, candidates) = self.teardown_plan(t, &cfg, handle);
        self.remove(t, &layout, &cfg, version, &candidates).await
    }

    /// Not an ability of compose stacks: `Unsupported`.
    async fn extend(
        &self,
        _ctx: &SandboxCtx,
        _handle: &Value,
        _expires_at: DateTime<Utc>,
    ) -> Result<()> {
        Err(Error::unsupported(
            "ext.compose-ssh has no deadline of its own to extend",
        ))
    }

    /// One `compose project` per sandbox id that labels containers (running
    /// when one of them is up), one `compose work folder` per folder in
    /// `DATA/work` without containers, and one `compose snapshot` per
    /// snapshot (its folder, whole or partial, or its images).
    async fn list_resources(&self, transport: Arc<dyn Transport>) -> Result<Vec<Resource>> {
        let t = &*transport;
        let root = data_root(t).join("work");
        let out = t.exec(&script::list_script(root.as_str()), None).await?;
        if !out.success() {
            return Err(step_failed(
                ErrorKind::Io,
                "list",
                t.host(),
                "docker ps -a --filter label=sandboxer.sandbox_id; ls DATA/work",
                &out,
            ));
        }
        let mut found = parse_listing(&out.stdout_str(), &root);
        let snaps = snapshot::snapshots_root(t);
        let out = t.exec(&snapshot::list_script(&snaps), None).await?;
        if !out.success() {
            return Err(step_failed(
                ErrorKind::Io,
                "list",
                t.host(),
                "docker images sandboxer/snap-*; ls DATA/compose-snapshots",
                &out,
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for line in out.stdout_str().lines() {
            // A snapshot's images, or its folder (whole or partial).
            let listed = match line.strip_suffix(" image") {
                Some(id) if sandboxer_core::snapshot::is_snapshot_id(id) => Some(Resource {
                    sandbox_id: id.to_string(),
                    kind: SNAPSHOT_RESOURCE_KIND.to_string(),
                    name: snapshot::image_repo(id),
                    running: false,
                }),
                _ => sandboxer_core::snapshot::listed_folder(line, &snaps, SNAPSHOT_RESOURCE_KIND),
            };
            if let Some(r) = listed.filter(|r| seen.insert(r.sandbox_id.clone())) {
                found.push(r);
            }
        }
        Ok(found)
    }

    /// `compose pause` (or `stop`, with `pause_mode = "stop"`).
    async fn pause(&self, ctx: &SandboxCtx, _handle: &Value) -> Result<()> {
        let cfg = ComposeConfig::from_map(&ctx.config)?;
        let verb = match cfg.pause_mode {
            PauseMode::Pause => "pause",
            PauseMode::Stop => "stop",
        };
        self.stack_step(ctx, &cfg, verb).await
    }

    /// `compose unpause` (or `start`), then readiness as in `wait_ready`.
    async fn resume(
        &self,
        ctx: &SandboxCtx,
        handle: &Value,
        deadline: tokio::time::Instant,
    ) -> Result<ReadyInfo> {
        let cfg = ComposeConfig::from_map(&ctx.config)?;
        let verb = match cfg.pause_mode {
            PauseMode::Pause => "unpause",
            PauseMode::Stop => "start",
        };
        self.stack_step(ctx, &cfg, verb).await?;
        self.wait_ready(ctx, handle, deadline).await
    }

    /// Commit every container and archive every named volume (see the
    /// crate docs). A stack that is paused stays paused; a running one is
    /// paused only while each container is committed.
    async fn snapshot(
        &self,
        ctx: &SandboxCtx,
        _handle: &Value,
        snapshot_id: &str,
    ) -> Result<SnapshotMade> {
        let t = &*ctx.transport;
        let layout = layout(t, &ctx.id)?;
        let dir = snapshot::snapshot_dir(t, snapshot_id)?;
        let inspect = t
            .exec(&script::look_script(&layout), None)
            .await
            .map_err(|e| e.context(format!("step `snapshot` on {}", t.host())))?;
        let text = inspect.stdout_str();
        let json = text.split_once('\n').map_or("", |(_, j)| j);
        let plan = snapshot::plan(json, &layout.project).map_err(|why| {
            Error::new(
                ErrorKind::Conflict,
                format!("step `snapshot` on {}: {why}", t.host()),
            )
        })?;
        let shown = format!(
            "docker commit each container to {}:SERVICE; docker cp each volume to {dir}/volumes",
            snapshot::image_repo(snapshot_id)
        );
        let out = t
            .exec(&snapshot::snapshot_script(&plan, snapshot_id, &dir), None)
            .await
            .map_err(|e| e.context(format!("step `snapshot` on {} (`{shown}`)", t.host())))?;
        if !out.success() {
            return Err(step_failed(
                ErrorKind::Io,
                "snapshot",
                t.host(),
                &shown,
                &out,
            ));
        }
        Ok(SnapshotMade {
            handle: snapshot::handle(&plan, snapshot_id, &dir),
            location: Some(format!(
                "{dir} and images {}",
                snapshot::image_repo(snapshot_id)
            )),
            size_bytes: out.stdout_str().trim().parse().ok(),
        })
    }

    /// Remove the snapshot's folder (and any part of it) and its images.
    async fn delete_snapshot(
        &self,
        transport: Arc<dyn Transport>,
        snapshot_id: &str,
        _handle: &Value,
    ) -> Result<()> {
        let t = &*transport;
        let dir = snapshot::snapshot_dir(t, snapshot_id)?;
        let shown = format!(
            "rm -rf {dir}; docker rmi {}",
            snapshot::image_repo(snapshot_id)
        );
        let out = t
            .exec(&snapshot::delete_script(snapshot_id, &dir), None)
            .await?;
        if !out.success() {
            return Err(step_failed(
                ErrorKind::Io,
                "delete snapshot",
                t.host(),
                &shown,
                &out,
            ));
        }
        Ok(())
    }
}

impl ComposeSshExtension {
    /// `docker pause|unpause|stop|start` of the stack's containers (those
    /// labelled with the sandbox id) in the state that step applies to, so
    /// asking twice is fine: what compose's `pause`, `unpause`, `stop` and
    /// `start` do, without compose's own start-up (a few hundred ms per
    /// command), which dominated a resume. No container at all is
    /// `NotFound`.
    async fn stack_step(&self, ctx: &SandboxCtx, cfg: &ComposeConfig, verb: &str) -> Result<()> {
        let t = &*ctx.transport;
        let layout = layout(t, &ctx.id)?;
        let script = script::containers_step_script(&layout, verb, cfg.stop_timeout_secs());
        let shown = format!(
            "docker {verb} (the containers labelled {SANDBOX_LABEL}={})",
            ctx.id
        );
        let out = t
            .exec(&script, None)
            .await
            .map_err(|e| e.context(format!("step `{verb}` on {} (`{shown}`)", t.host())))?;
        if out.status == script::EXIT_NO_CONTAINERS {
            return Err(Error::not_found(format!(
                "step `{verb}` on {}: no container is labelled {SANDBOX_LABEL}={}",
                t.host(),
                ctx.id
            )));
        }
        if !out.success() {
            return Err(step_failed(ErrorKind::Io, verb, t.host(), &shown, &out));
        }
        Ok(())
    }
}

/// Make and fill the restored project's volumes before `up`.
async fn restore_volumes(
    t: &dyn Transport,
    layout: &Layout,
    saved: &snapshot::Saved,
    deadline: tokio::time::Instant,
) -> Result<()> {
    if saved.volumes.is_empty() {
        return Ok(());
    }
    let shown = format!(
        "docker volume create; docker cp - into each from {}/volumes",
        saved.dir
    );
    let script = snapshot::restore_volumes_script(saved, &layout.project);
    match tokio::time::timeout_at(deadline, t.exec(&script, None)).await {
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "step `restore volumes` on {}: `{shown}` did not finish within the ready timeout",
                t.host()
            ),
        )),
        Ok(r) => {
            let out =
                r.map_err(|e| e.context(format!("step `restore volumes` on {}", t.host())))?;
            if out.status == snapshot::EXIT_NO_SNAPSHOT {
                return Err(Error::not_found(format!(
                    "step `restore volumes` on {}: the snapshot's folder {} is not there",
                    t.host(),
                    saved.dir
                )));
            }
            if !out.success() {
                return Err(step_failed(
                    ErrorKind::ProvisionFailed,
                    "restore volumes",
                    t.host(),
                    &shown,
                    &out,
                ));
            }
            Ok(())
        }
    }
}

impl ComposeSshExtension {
    fn reachability(
        &self,
        t: &dyn Transport,
        layout: &Layout,
        handle: &Value,
        ports: BTreeMap<String, Vec<sandboxer_core::model::Port>>,
    ) -> Reachability {
        let compose = handle
            .get("compose")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| self.cached(t).map(|v| v.as_str().to_string()));
        let mut details = BTreeMap::from([
            ("project".to_string(), json!(layout.project)),
            ("work_dir".to_string(), json!(layout.work_dir)),
        ]);
        if let Some(c) = compose {
            details.insert("compose".to_string(), json!(c));
        }
        Reachability {
            address: t.address().to_string(),
            ports,
            details,
            ..Reachability::default()
        }
    }
}

/// Upload done: list the services (unless `services` already says them),
/// write the override, `up -d`.
#[allow(clippy::too_many_arguments)]
async fn bring_up(
    ctx: &SandboxCtx,
    cfg: &ComposeConfig,
    layout: &Layout,
    version: ComposeVersion,
    compose_file: &str,
    services: Option<Vec<String>>,
    restore: Option<&snapshot::Saved>,
    deadline: tokio::time::Instant,
    up_started: &mut bool,
) -> Result<Value> {
    let t = &*ctx.transport;
    let main = [compose_file.to_string()];
    let compose = Compose {
        layout,
        version,
        files: &main,
        env: &cfg.env,
    };
    let services = match services {
        Some(s) => s,
        None => {
            let (script, shown) = compose.script(&["config", "--services"]);
            let out = run_step(t, "compose config", &script, &shown, None, deadline).await?;
            let listed: Vec<String> = out
                .stdout_str()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            if listed.is_empty() {
                return Err(Error::new(
                    ErrorKind::ProvisionFailed,
                    format!(
                        "step `compose config` on {}: `{shown}` lists no services in {compose_file}",
                        t.host()
                    ),
                ));
            }
            listed
        }
    };
    let override_file = override_path(compose_file);
    let images = restore.map(snapshot::Saved::images).unwrap_or_default();
    let body = override_body(&services, &ctx.id, &images);
    let override_at = Utf8Path::new(&layout.work_dir)
        .join(&override_file)
        .into_string();
    t.write_file(&override_at, body.as_bytes(), 0o644)
        .await
        .map_err(|e| {
            e.context(format!(
                "step `override` on {}: writing {override_at}",
                t.host()
            ))
        })?;

    let files = [compose_file.to_string(), override_file];
    let compose = Compose {
        files: &files,
        ..compose
    };
    // A restore runs the committed images: nothing is built.
    let up: &[&str] = if restore.is_some() {
        &["up", "-d", "--no-build"]
    } else {
        &["up", "-d"]
    };
    let (script, shown) = compose.script(up);
    *up_started = true;
    run_step(t, "compose up", &script, &shown, None, deadline).await?;
    tracing::debug!(sandbox = %ctx.id, host = t.host(), compose = version.as_str(), "compose stack up");
    Ok(json!({
        "work_dir": layout.work_dir,
        "project": layout.project,
        "compose": version.as_str(),
        "files": files,
        "services": services,
    }))
}

/// Connect to every published TCP port; the first that does not answer
/// says why.
async fn probe_all(
    address: &str,
    ports: &BTreeMap<String, Vec<sandboxer_core::model::Port>>,
    deadline: tokio::time::Instant,
) -> std::result::Result<(), String> {
    for (service, list) in ports {
        for p in list.iter().filter(|p| p.protocol == "tcp") {
            let left = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .clamp(Duration::from_millis(100), PROBE_TIMEOUT);
            probe(address, p.published, left)
                .await
                .map_err(|why| format!("service `{service}` port {}: {why}", p.target))?;
        }
    }
    Ok(())
}

/// The listing of [`script::list_script`] as resources.
///
/// A container whose compose working folder is not under `root/ID` belongs
/// to another sandboxer data folder on the same docker engine (another
/// install, or another "host" sharing the engine, as on the testbed): it is
/// left out, so a reaper never takes someone else's stack for an orphan.
/// Containers without that label (made without compose) are kept.
fn parse_listing(text: &str, root: &Utf8Path) -> Vec<Resource> {
    let (containers, folders) = text.split_once("--\n").unwrap_or((text, ""));
    let mut by_id: BTreeMap<String, Resource> = BTreeMap::new();
    for line in containers.lines() {
        let mut cols = line.split('\t');
        let (Some(id), project, status, working_dir) =
            (cols.next(), cols.next(), cols.next(), cols.next())
        else {
            continue;
        };
        if !is_sandbox_id(id) {
            continue;
        }
        if let Some(wd) = working_dir.map(str::trim).filter(|w| !w.is_empty()) {
            // Its own work folder or one below it, by whole path parts.
            if !Utf8Path::new(wd).starts_with(root.join(id)) {
                continue;
            }
        }
        let running = status.is_some_and(|s| s.starts_with("Up"));
        let r = by_id.entry(id.to_string()).or_insert_with(|| Resource {
            sandbox_id: id.to_string(),
            kind: PROJECT_RESOURCE_KIND.to_string(),
            name: project.filter(|p| !p.is_empty()).unwrap_or(id).to_string(),
            running: false,
        });
        r.running |= running;
    }
    for line in folders.lines().map(str::trim) {
        if is_sandbox_id(line) && !by_id.contains_key(line) {
            by_id.insert(
                line.to_string(),
                Resource {
                    sandbox_id: line.to_string(),
                    kind: WORK_FOLDER_RESOURCE_KIND.to_string(),
                    name: root.join(line).into_string(),
                    running: false,
                },
            );
        }
    }
    by_id.into_values().collect()
}

/// Run one provisioning step, at most until `deadline`; a non-zero exit is
/// `ProvisionFailed` with the command and the stderr tail.
async fn run_step(
    t: &dyn Transport,
    step: &str,
    script: &str,
    shown: &str,
    stdin: Option<&[u8]>,
    deadline: tokio::time::Instant,
) -> Result<ExecOutput> {
    let out = match tokio::time::timeout_at(deadline, t.exec(script, stdin)).await {
        Ok(r) => r.map_err(|e| e.context(format!("step `{step}` on {} (`{shown}`)", t.host())))?,
        Err(_) => {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "step `{step}` on {}: `{shown}` did not finish within the ready timeout",
                    t.host()
                ),
            ))
        }
    };
    if out.status == script::EXIT_WORK_EXISTS && step == "upload" {
        return Err(Error::conflict(format!(
            "step `upload` on {}: the work folder {} already exists",
            t.host(),
            shown.rsplit(' ').next().unwrap_or_default()
        ))
        .with_hint("tear the sandbox down first; ids are never reused"));
    }
    if !out.success() {
        return Err(step_failed(
            ErrorKind::ProvisionFailed,
            step,
            t.host(),
            shown,
            &out,
        ));
    }
    Ok(out)
}

/// The provisioning error `e`, saying that its rollback failed too (`re`):
/// leftovers may stay on the host until the reaper finds them.
fn with_rollback_failure(e: Error, re: &Error) -> Error {
    let hint = e.hint().map(str::to_string).unwrap_or_else(|| {
        "once the host answers again, `sandboxer reap-stale` removes what is left of it".to_string()
    });
    Error::new(
        e.kind(),
        format!("{}; the rollback failed too: {}", e.message(), re.message()),
    )
    .with_hint(hint)
}

fn step_failed(kind: ErrorKind, step: &str, host: &str, shown: &str, out: &ExecOutput) -> Error {
    Error::new(
        kind,
        format!(
            "step `{step}` on {host}: `{shown}` exited with status {}{}",
            out.status,
            tail_suffix(out)
        ),
    )
}

/// `:\n` and the stderr tail (else the stdout tail), or nothing.
fn tail_suffix(out: &ExecOutput) -> String {
    let mut tail = out.stderr_tail(STDERR_TAIL_LINES);
    if tail.trim().is_empty() {
        let s = out.stdout_str();
        let lines: Vec<&str> = s.lines().collect();
        tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n");
    }
    let tail = tail.trim_end();
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{tail}")
    }
}

fn data_root(t: &dyn Transport) -> &Utf8Path {
    t.data_dir()
}

/// The work folder of sandbox `id` on the transport's host:
/// `DATA/work/ID`. Only a well-formed id is taken (it lands in paths).
pub fn work_dir(t: &dyn Transport, id: &str) -> Result<String> {
    Ok(layout(t, id)?.work_dir)
}

/// The compose project name of sandbox `id`: the id itself (`sbx-` and
/// lowercase base32 is a valid project name for v1 and v2).
pub fn project_name(id: &str) -> String {
    id.to_string()
}

fn layout(t: &dyn Transport, id: &str) -> Result<Layout> {
    if !is_sandbox_id(id) {
        return Err(Error::invalid_input(format!(
            "`{id}` is not a sandbox id; ext.compose-ssh names work folders and projects only after sandbox ids"
        )));
    }
    let work_root = data_root(t).join("work");
    Ok(Layout {
        work_dir: work_root.join(id).into_string(),
        work_root: work_root.into_string(),
        project: project_name(id),
        id: id.to_string(),
    })
}

/// The override file that goes with `compose_file` (same folder).
fn override_path(compose_file: &str) -> String {
    Utf8Path::new(compose_file)
        .with_file_name(OVERRIDE_FILE_NAME)
        .into_string()
}

/// The override: the sandbox label and variable on every service, and a
/// restored service's committed image. JSON, which every compose reads as
/// YAML.
fn override_body(services: &[String], id: &str, images: &[(String, String)]) -> String {
    let services: serde_json::Map<String, Value> = services
        .iter()
        .map(|s| {
            let mut v = json!({
                "labels": { SANDBOX_LABEL: id },
                "environment": { SANDBOX_ENV: id },
            });
            if let Some((_, image)) = images.iter().find(|(svc, _)| svc == s) {
                v["image"] = json!(image);
            }
            (s.clone(), v)
        })
        .collect();
    let mut body =
        serde_json::to_string_pretty(&json!({ "services": services })).expect("JSON of strings");
    body.push('\n');
    body
}

/// The compose file of the repo: the config's `compose_file`, else the
/// first fallback present. `InvalidInput` when `repo` is not a folder or has
/// none of them.
fn find_compose_file(repo: &Path, cfg: &ComposeConfig) -> Result<String> {
    if !repo.is_dir() {
        let what = if repo.exists() {
            "is not a folder"
        } else {
            "does not exist (or is not a folder)"
        };
        return Err(Error::invalid_input(format!(
            "input `{REPO_INPUT}`: {} {what} on this machine",
            repo.display()
        ))
        .with_hint("give the path of a local repo folder, e.g. --input repo=$PWD"));
    }
    let candidates = cfg.compose_candidates();
    for c in &candidates {
        if repo.join(c).is_file() {
            return Ok(c.to_string());
        }
    }
    Err(Error::invalid_input(format!(
        "input `{REPO_INPUT}`: {} has no compose file; looked for {}",
        repo.display(),
        candidates.join(", then ")
    ))
    .with_hint("set `compose_file` in the route config, or add the file to the repo"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_labels_every_service() {
        let body = override_body(&["web".into(), "db".into()], "sbx-abc", &[]);
        let v: Value = serde_json::from_str(&body).unwrap();
        for s in ["web", "db"] {
            assert_eq!(v["services"][s]["labels"][SANDBOX_LABEL], "sbx-abc");
            assert_eq!(v["services"][s]["environment"][SANDBOX_ENV], "sbx-abc");
        }
    }

    #[test]
    fn override_sits_next_to_the_compose_file() {
        assert_eq!(override_path("docker-compose.e2e.yml"), OVERRIDE_FILE_NAME);
        assert_eq!(
            override_path("e2e/stack.yml"),
            format!("e2e/{OVERRIDE_FILE_NAME}")
        );
    }

    #[test]
    fn listing_leaves_out_stacks_of_other_data_folders() {
        let text = "sbx-aaa\tsbx-aaa\tUp 1 second\t/d/work/sbx-aaa\n\
                    sbx-bbb\tsbx-bbb\tUp 1 second\t/d/work/sbx-bbb/e2e\n\
                    sbx-ccc\tsbx-ccc\tUp 1 second\t/other/work/sbx-ccc\n\
                    sbx-ddd\tsbx-ddd\tUp 1 second\t/d/work/sbx-aaa\n\
                    sbx-eee\tsbx-eee\tUp 1 second\t\n--\n";
        let ids: Vec<String> = parse_listing(text, Utf8Path::new("/d/work"))
            .into_iter()
            .map(|r| r.sandbox_id)
            .collect();
        assert_eq!(ids, ["sbx-aaa", "sbx-bbb", "sbx-eee"]);
    }

    #[test]
    fn listing_groups_containers_by_id_and_adds_bare_folders() {
        let text = "sbx-aaa\tsbx-aaa\tUp 3 seconds\nsbx-aaa\tsbx-aaa\tExited (0) 1 second ago\n\
                    sbx-bbb\tsbx-bbb\tExited (1) 2 minutes ago\nnot-an-id\tx\tUp 1 second\n--\nsbx-aaa\nsbx-ccc\n";
        let r = parse_listing(text, Utf8Path::new("/d/work"));
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[0].sandbox_id.as_str(), r[0].kind.as_str(), r[0].running),
            ("sbx-aaa", PROJECT_RESOURCE_KIND, true)
        );
        assert_eq!((r[1].sandbox_id.as_str(), r[1].running), ("sbx-bbb", false));
        assert_eq!(
            (r[2].kind.as_str(), r[2].name.as_str()),
            (WORK_FOLDER_RESOURCE_KIND, "/d/work/sbx-ccc")
        );
    }

    #[test]
    fn compose_file_lookup_names_what_it_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ComposeConfig::default();
        let e = find_compose_file(dir.path(), &cfg).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(
            e.message()
                .contains("looked for docker-compose.e2e.yml, then compose.yaml"),
            "{e}"
        );
        std::fs::write(dir.path().join("compose.yaml"), "services: {}").unwrap();
        assert_eq!(find_compose_file(dir.path(), &cfg).unwrap(), "compose.yaml");
        std::fs::write(dir.path().join("docker-compose.e2e.yml"), "services: {}").unwrap();
        assert_eq!(
            find_compose_file(dir.path(), &cfg).unwrap(),
            "docker-compose.e2e.yml"
        );
        let e = find_compose_file(Path::new("/tmp/x; touch /tmp/pwned"), &cfg).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().contains("is not a folder"), "{e}");
    }
}
