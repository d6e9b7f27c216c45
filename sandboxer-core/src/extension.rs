//! The extension contract: the one object-safe trait every backend
//! implements, its capabilities, and the registry keyed by extension id.
//!
//! Cross-cutting concerns (metering, tracing, retries) wrap an extension as
//! layers; a backend never touches the ledger.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{Actor, Reachability};
use crate::transport::Transport;
use crate::Result;

/// Optional abilities. Anything not declared answers `Unsupported`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// `extend` moves the sandbox's own deadline (extend-ttl).
    pub extend: bool,
    /// `list_resources` can enumerate what exists on a host (reaper).
    pub list_resources: bool,
    /// The extension runs on a placement host through a [`Transport`]
    /// (false for SaaS providers, which ignore the transport).
    pub uses_host: bool,
    /// `pause` and `resume` stop a sandbox without losing it.
    pub pause: bool,
    /// `snapshot` saves a sandbox, `provision` with
    /// [`SandboxCtx::restore`] makes a new one from it, and
    /// `delete_snapshot` removes it; `list_resources` lists snapshot
    /// artifacts (ids `snap-...`) beside sandboxes.
    pub snapshot: bool,
}

/// Everything an extension gets for one sandbox.
#[derive(Clone)]
pub struct SandboxCtx {
    pub id: String,
    pub profile: String,
    pub profile_version: u32,
    pub actor: Actor,
    /// The route's `config` table.
    pub config: serde_json::Map<String, serde_json::Value>,
    pub inputs: BTreeMap<String, String>,
    /// The placement host (or provider name).
    pub host: String,
    /// The transport to `host` (for host-based extensions).
    pub transport: Arc<dyn Transport>,
    /// When the sandbox expires; the backend should enforce it where it can.
    pub expires_at: DateTime<Utc>,
    /// How long `provision` + `wait_ready` may take together.
    pub ready_timeout: Duration,
    /// When the sandbox was recorded (metering counts from here).
    pub created_at: DateTime<Utc>,
    /// The route's price per hour (zero for own hosts).
    pub price_per_hour: crate::credits::Micros,
    /// Set when the sandbox is created from a snapshot: `provision`
    /// restores it instead of starting fresh.
    pub restore: Option<Restore>,
}

/// The snapshot a sandbox is restored from.
#[derive(Debug, Clone, PartialEq)]
pub struct Restore {
    pub snapshot_id: String,
    /// What `snapshot` returned as the snapshot's handle.
    pub handle: serde_json::Value,
}

/// What `snapshot` made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SnapshotMade {
    /// The extension-private handle, kept in the snapshot record.
    pub handle: serde_json::Value,
    /// Where it lives, for people (a folder, an image, a provider id).
    pub location: Option<String>,
    pub size_bytes: Option<u64>,
}

impl std::fmt::Debug for SandboxCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxCtx")
            .field("id", &self.id)
            .field("profile", &self.profile)
            .field("host", &self.host)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What `provision` made: the extension-private handle to persist in the
/// record (`backend`), read back by `wait_ready` and `teardown`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provisioned {
    pub handle: serde_json::Value,
}

/// What `wait_ready` confirmed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadyInfo {
    pub reachability: Reachability,
    /// Host telemetry, for extensions that report it (canary).
    pub telemetry: Option<serde_json::Value>,
    /// An updated handle, when readiness learned more (e.g. a pid).
    pub handle: Option<serde_json::Value>,
}

/// A resource an extension found on a host (for the reaper).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Resource {
    /// The sandbox id the resource is labelled with.
    pub sandbox_id: String,
    /// What it is, e.g. `canary venue`, `compose project`.
    pub kind: String,
    /// Where, e.g. a venue path or project name.
    pub name: String,
    /// Whether it is still running (a venue whose agent exited is not).
    pub running: bool,
}

/// A sandbox backend.
///
/// The methods of the base lifecycle are required; optional abilities are
/// declared in [`Extension::capabilities`], and their methods (pause,
/// resume, snapshot, delete_snapshot) answer `Unsupported` unless an
/// extension that declares them implements them.
#[async_trait]
pub trait Extension: Send + Sync + 'static {
    /// The extension id, e.g. `ext.compose-ssh`.
    fn id(&self) -> &str;

    /// The optional abilities this extension has.
    fn capabilities(&self) -> Capabilities;

    /// Start making the sandbox and return its handle. Resources must be
    /// named from `ctx.id` so that `teardown` can find them even when the
    /// handle was never saved (a crash right after this call).
    /// On error, the extension has already removed what it made.
    async fn provision(&self, ctx: &SandboxCtx) -> Result<Provisioned>;

    /// Wait until the sandbox is reachable, at most until `deadline`.
    /// `Ok` means every field a consumer needs is filled in `reachability`.
    /// A timeout is `ErrorKind::Timeout`.
    async fn wait_ready(
        &self,
        ctx: &SandboxCtx,
        handle: &serde_json::Value,
        deadline: tokio::time::Instant,
    ) -> Result<ReadyInfo>;

    /// Remove everything the sandbox made. Idempotent: teardown of an unknown
    /// or already-removed sandbox returns `Ok`. `handle` is `Null` when it
    /// was never saved.
    async fn teardown(&self, ctx: &SandboxCtx, handle: &serde_json::Value) -> Result<()>;

    /// Move the sandbox's own deadline to `expires_at` (capability `extend`).
    async fn extend(
        &self,
        ctx: &SandboxCtx,
        handle: &serde_json::Value,
        expires_at: DateTime<Utc>,
    ) -> Result<()>;

    /// Every resource of this extension on the transport's host (capability
    /// `list_resources`), for `inspect stale` and `reap-stale`.
    async fn list_resources(&self, transport: Arc<dyn Transport>) -> Result<Vec<Resource>>;

    /// Stop the sandbox without losing it (capability `pause`): nothing of
    /// it runs until `resume`. Pausing a paused sandbox is `Ok`.
    async fn pause(&self, ctx: &SandboxCtx, handle: &serde_json::Value) -> Result<()> {
        let _ = handle;
        Err(unsupported(self.id(), "pause", &ctx.id))
    }

    /// Run a paused sandbox again and confirm it is reachable, at most until
    /// `deadline` (capability `pause`). Resuming a running one is `Ok`.
    async fn resume(
        &self,
        ctx: &SandboxCtx,
        handle: &serde_json::Value,
        deadline: tokio::time::Instant,
    ) -> Result<ReadyInfo> {
        let _ = (handle, deadline);
        Err(unsupported(self.id(), "resume", &ctx.id))
    }

    /// Save the sandbox as snapshot `snapshot_id` (capability `snapshot`).
    /// Artifacts are named from `snapshot_id`, and a snapshot is only
    /// complete (listed, restorable) once this returns `Ok`: an interrupted
    /// one leaves at most parts that `delete_snapshot` and the reaper
    /// remove, never something that looks whole. On error, the extension
    /// has removed what it made.
    async fn snapshot(
        &self,
        ctx: &SandboxCtx,
        handle: &serde_json::Value,
        snapshot_id: &str,
    ) -> Result<SnapshotMade> {
        let _ = (handle, snapshot_id);
        Err(unsupported(self.id(), "snapshot", &ctx.id))
    }

    /// Remove snapshot `snapshot_id` from where it lives (capability
    /// `snapshot`). Idempotent; `handle` is `Null` when it was never saved
    /// (an interrupted snapshot, an orphan).
    async fn delete_snapshot(
        &self,
        transport: Arc<dyn Transport>,
        snapshot_id: &str,
        handle: &serde_json::Value,
    ) -> Result<()> {
        let _ = (transport, handle);
        Err(unsupported(self.id(), "delete a snapshot", snapshot_id))
    }
}

/// `Unsupported`: `ext` cannot `what` (a capability it does not declare).
fn unsupported(ext: &str, what: &str, id: &str) -> crate::Error {
    crate::Error::unsupported(format!("{ext} cannot {what} ({id})"))
}

/// The extensions this build has, by id.
#[derive(Clone, Default)]
pub struct Registry {
    by_id: BTreeMap<String, Arc<dyn Extension>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add (or replace) an extension under its id.
    pub fn register(&mut self, ext: Arc<dyn Extension>) {
        self.by_id.insert(ext.id().to_string(), ext);
    }

    pub fn get(&self, id: &str) -> Option<Arc<dyn Extension>> {
        self.by_id.get(id).cloned()
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Extension>> {
        self.by_id.values()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_id.keys()).finish()
    }
}
