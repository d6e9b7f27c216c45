//! Stale sandboxes and the reaper: TTL enforcement and leak-proofing.
//!
//! `inspect` reconciles the store against what every host (and provider)
//! actually has, and classifies what is wrong:
//!
//! - **expired**: a live record past its `expires_at`;
//! - **stuck**: a record in `provisioning` past its profile's ready timeout
//!   plus the grace window, or in `destroying` past the grace window;
//! - **orphan**: a resource on a host that carries a sandbox id whose record
//!   is missing or already ended;
//! - **ghost**: a `ready` record whose resources are gone from its host.
//!
//! Paused sandboxes expire at the end of their paused retention (their
//! `expires_at` while paused). A record left in `pausing` or `resuming` by
//! a process that died is stuck, and reaping it finishes the step (pauses
//! or resumes it again). Snapshots: one left `creating` by a process that
//! died is stuck (reaped: marked `failed` and its parts removed), and a
//! snapshot artifact on a host with no live record is an orphan (removed).
//!
//! `reap` ends each: expired ones are destroyed with reason `expired`, stuck
//! and ghost records with reason `reaped`, orphans are torn down. It is
//! idempotent ("already gone" is success), never touches anything younger
//! than the grace window, and is safe to run twice at once (every record
//! change is a state-machine transition in one store commit, and teardown
//! is idempotent).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::extension::{Resource, SandboxCtx};
use crate::hosts::HostSpec;
use crate::lifecycle::{EndReason, State};
use crate::manager::Manager;
use crate::model::Sandbox;
use crate::snapshot::{is_snapshot_id, Snapshot, SnapshotState};
use crate::uploads::SweptUpload;
use crate::Result;

/// What is wrong with a stale item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StaleKind {
    Expired,
    Stuck,
    Orphan,
    Ghost,
}

impl StaleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StaleKind::Expired => "expired",
            StaleKind::Stuck => "stuck",
            StaleKind::Orphan => "orphan",
            StaleKind::Ghost => "ghost",
        }
    }
}

/// One stale thing.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct StaleItem {
    pub kind: StaleKind,
    pub sandbox_id: String,
    pub host: String,
    pub extension: String,
    /// The record's state, when there is a record.
    pub state: Option<State>,
    /// Why it is stale, for people.
    pub detail: String,
    /// The resource found on the host (orphans).
    pub resource: Option<Resource>,
}

/// A host or provider the inspection could not look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Unchecked {
    pub host: String,
    pub extension: String,
    pub reason: String,
}

/// What `inspect stale` found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct StaleReport {
    pub checked_at: Option<DateTime<Utc>>,
    pub grace_seconds: u64,
    pub items: Vec<StaleItem>,
    /// Hosts whose resources could not be listed: orphans and ghosts there
    /// are unknown (never guessed).
    pub unchecked: Vec<Unchecked>,
    /// Uploaded repos nothing needs any more (`sandboxer_core::uploads`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uploads: Vec<SweptUpload>,
}

/// What the reaper did with one item.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Reaped {
    #[serde(flatten)]
    pub item: StaleItem,
    /// `destroyed`, `torn down`, `would reap` (dry run) or `failed: ...`.
    pub outcome: String,
    pub ok: bool,
}

/// What `reap-stale` did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ReapReport {
    pub dry_run: bool,
    pub reaped: Vec<Reaped>,
    pub unchecked: Vec<Unchecked>,
    /// Uploaded repos removed (or, dry, that would be).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uploads: Vec<SweptUpload>,
}

impl ReapReport {
    pub fn all_ok(&self) -> bool {
        self.reaped.iter().all(|r| r.ok)
    }
}

/// The default grace window: nothing younger is touched.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(120);

fn older_than(t: DateTime<Utc>, now: DateTime<Utc>, d: Duration) -> bool {
    now.signed_duration_since(t).num_milliseconds() > d.as_millis() as i64
}

fn human_age(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = now.signed_duration_since(t).num_seconds().max(0) as u64;
    crate::duration::format_duration(Duration::from_secs(secs))
}

/// The pure part: classify records (expired, stuck, orphaned by a dead
/// create) given the time and whether a worker process lives.
pub fn classify_records<'a>(
    records: impl IntoIterator<Item = &'a Sandbox>,
    ready_timeouts: &BTreeMap<String, Duration>,
    now: DateTime<Utc>,
    grace: Duration,
    worker_alive: &dyn Fn(&crate::model::Worker) -> Option<bool>,
) -> Vec<StaleItem> {
    let mut out = Vec::new();
    for s in records {
        let item = |kind, detail: String| StaleItem {
            kind,
            sandbox_id: s.id.clone(),
            host: s.host.clone(),
            extension: s.extension.clone(),
            state: Some(s.state()),
            detail,
            resource: None,
        };
        // A ready (or paused) record past its deadline is expired at once:
        // the deadline is explicit, and nothing is in flight that the grace
        // protects.
        let expired = s
            .expires_at
            .filter(|e| *e < now)
            .map(|exp| format!("expired {} ago", human_age(exp, now)));
        if matches!(s.state(), State::Ready | State::Paused) {
            if let Some(detail) = expired {
                out.push(item(StaleKind::Expired, detail));
                continue;
            }
        }
        // A create whose provisioning process is certainly gone (it was
        // killed, or its machine rebooted) will never finish: end it now,
        // without waiting out the grace window.
        if s.state() == State::Provisioning {
            if let Some(w) = &s.worker {
                if worker_alive(w) == Some(false) {
                    out.push(item(
                        StaleKind::Orphan,
                        format!("its provisioning process {} is gone", w.pid),
                    ));
                    continue;
                }
            }
        }
        // A pause or resume whose process is gone: the next pass finishes
        // it.
        if matches!(s.state(), State::Pausing | State::Resuming) {
            let dead = s
                .worker
                .as_ref()
                .is_some_and(|w| worker_alive(w) == Some(false));
            let rt = ready_timeouts
                .get(&s.profile)
                .copied()
                .unwrap_or(Duration::from_secs(300));
            if dead || older_than(s.updated_at, now, rt + grace) {
                out.push(item(
                    StaleKind::Stuck,
                    format!(
                        "{} for {}{}",
                        s.state(),
                        human_age(s.updated_at, now),
                        if dead { "; its process is gone" } else { "" }
                    ),
                ));
            }
            continue;
        }
        if !older_than(s.created_at, now, grace) {
            continue;
        }
        match s.state() {
            // (A ready one past its deadline was taken above.)
            State::Provisioning => {
                if let Some(detail) = expired {
                    out.push(item(StaleKind::Expired, detail));
                    continue;
                }
                let rt = ready_timeouts
                    .get(&s.profile)
                    .copied()
                    .unwrap_or(Duration::from_secs(300));
                if older_than(s.created_at, now, rt + grace) {
                    out.push(item(
                        StaleKind::Stuck,
                        format!(
                            "provisioning for {} (ready timeout {})",
                            human_age(s.created_at, now),
                            crate::duration::format_duration(rt)
                        ),
                    ));
                }
            }
            State::Destroying if older_than(s.updated_at, now, grace) => {
                out.push(item(
                    StaleKind::Stuck,
                    format!("destroying for {}", human_age(s.updated_at, now)),
                ));
            }
            _ => {}
        }
    }
    out
}

impl Manager {
    /// Every stale sandbox and resource, without changing anything.
    pub async fn inspect_stale(&self, grace: Duration) -> Result<StaleReport> {
        let now = self.now();
        let timeouts: BTreeMap<String, Duration> = self
            .catalog()
            .list()
            .into_iter()
            .map(|p| (p.id.clone(), p.ready_timeout))
            .collect();
        // Only records that have not ended can be expired, stuck or
        // ghosts; ended ones are read only for the resources found below.
        let live = self.list(&crate::manager::ListFilter {
            live_only: true,
            ..Default::default()
        })?;
        let mut items = classify_records(live.iter(), &timeouts, now, grace, &|w| {
            crate::process::is_alive(w)
        });
        // Snapshots whose maker died.
        let snapshots = self.snapshots(None, &[])?;
        for snap in &snapshots {
            if snap.state != SnapshotState::Creating {
                continue;
            }
            let Some(w) = &snap.worker else { continue };
            if crate::process::is_alive(w) == Some(false) {
                items.push(StaleItem {
                    kind: StaleKind::Stuck,
                    sandbox_id: snap.id.clone(),
                    host: snap.host.clone(),
                    extension: snap.extension.clone(),
                    state: None,
                    detail: format!(
                        "snapshot of {} left creating; its process {} is gone",
                        snap.source, w.pid
                    ),
                    resource: None,
                });
            }
        }
        let snapshot_of: BTreeMap<&str, &Snapshot> =
            snapshots.iter().map(|s| (s.id.as_str(), s)).collect();
        let flagged: BTreeSet<String> = items.iter().map(|i| i.sandbox_id.clone()).collect();
        let mut unchecked = Vec::new();
        if let Some(why) = &self.hosts().unreadable {
            unchecked.push(Unchecked {
                host: "every host of hosts.toml".into(),
                extension: "*".into(),
                reason: why.clone(),
            });
        }

        // Every (place, extension) that can list what it has.
        let mut places: Vec<(HostSpec, Arc<dyn crate::extension::Extension>)> = Vec::new();
        for ext in self.registry().iter() {
            let caps = ext.capabilities();
            if !caps.list_resources {
                continue;
            }
            if caps.uses_host {
                for h in self.hosts().all() {
                    places.push((h, ext.clone()));
                }
            } else {
                let mut provider = HostSpec::local();
                provider.name = ext.id().trim_start_matches("ext.").to_string();
                places.push((provider, ext.clone()));
            }
        }
        let mut set = tokio::task::JoinSet::new();
        for (i, (spec, ext)) in places.iter().enumerate() {
            let connector = self.connector().clone();
            let spec = spec.clone();
            let ext = ext.clone();
            set.spawn(async move {
                let listed = async {
                    let conn_spec = if ext.capabilities().uses_host {
                        spec.clone()
                    } else {
                        HostSpec::local()
                    };
                    let t = connector.connect(&conn_spec).await?;
                    ext.list_resources(t).await
                }
                .await;
                (i, listed)
            });
        }
        let mut listed: Vec<Option<Result<Vec<Resource>>>> =
            (0..places.len()).map(|_| None).collect();
        while let Some(j) = set.join_next().await {
            if let Ok((i, r)) = j {
                listed[i] = Some(r);
            }
        }
        for ((spec, ext), result) in places.iter().zip(listed) {
            let place = spec.name.clone();
            let resources = match result {
                Some(Ok(r)) => r,
                // A provider that is not set up (no key) and that no live
                // record uses is not worth a line on every run.
                Some(Err(_))
                    if !ext.capabilities().uses_host
                        && !live.iter().any(|s| s.extension == ext.id()) =>
                {
                    continue
                }
                Some(Err(e)) => {
                    unchecked.push(Unchecked {
                        host: place,
                        extension: ext.id().to_string(),
                        reason: e.to_string(),
                    });
                    continue;
                }
                None => continue,
            };
            let mut present: BTreeMap<&str, bool> = BTreeMap::new();
            for r in &resources {
                let e = present.entry(r.sandbox_id.as_str()).or_insert(false);
                *e |= r.running;
            }
            // Orphans: resources whose record is missing or ended.
            let mut seen = BTreeSet::new();
            for r in &resources {
                if !seen.insert(r.sandbox_id.clone()) {
                    continue;
                }
                // Whether no record keeps it, the record's state for the
                // item, and that state as the detail tells it.
                let (orphan, state, recorded) = if is_snapshot_id(&r.sandbox_id) {
                    // A snapshot artifact: its snapshot record keeps it.
                    let rec = snapshot_of.get(r.sandbox_id.as_str());
                    let orphan = match rec {
                        None => true,
                        Some(s) => !s.state.is_live() && older_than(s.updated_at, now, grace),
                    };
                    (orphan, None, rec.map(|s| s.state.to_string()))
                } else {
                    let rec = self.find(&r.sandbox_id)?;
                    let orphan = match &rec {
                        None => true,
                        Some(s) => {
                            matches!(s.state(), State::Destroyed | State::Failed)
                                && s.ended_at.is_none_or(|t| older_than(t, now, grace))
                        }
                    };
                    let state = rec.as_ref().map(|s| s.state());
                    (orphan, state, state.map(|st| st.to_string()))
                };
                if orphan && !flagged.contains(&r.sandbox_id) {
                    items.push(StaleItem {
                        kind: StaleKind::Orphan,
                        sandbox_id: r.sandbox_id.clone(),
                        host: place.clone(),
                        extension: ext.id().to_string(),
                        state,
                        detail: match recorded {
                            None => format!("{} {} has no record", r.kind, r.name),
                            Some(st) => {
                                format!("{} {} outlived its record ({st})", r.kind, r.name)
                            }
                        },
                        resource: Some(r.clone()),
                    });
                }
            }
            // Ghosts: ready records here whose resources are gone.
            for s in live.iter() {
                if s.state() != State::Ready
                    || s.host != place
                    || s.extension != ext.id()
                    || flagged.contains(&s.id)
                    || !s.ready_at.is_none_or(|t| older_than(t, now, grace))
                {
                    continue;
                }
                let detail = match present.get(s.id.as_str()) {
                    Some(true) => continue,
                    Some(false) => "its resources exist but are not running".to_string(),
                    None => format!("nothing of it is left on {place}"),
                };
                // A backend that enforces the TTL itself (the canary agent
                // exits at its deadline) may have ended it between the first
                // look and the listing: that is an expiry, not a ghost.
                let listed_at = self.now();
                if let Some(exp) = s.expires_at.filter(|e| *e <= listed_at) {
                    items.push(StaleItem {
                        kind: StaleKind::Expired,
                        sandbox_id: s.id.clone(),
                        host: place.clone(),
                        extension: ext.id().to_string(),
                        state: Some(State::Ready),
                        detail: format!("expired {} ago", human_age(exp, listed_at)),
                        resource: None,
                    });
                    continue;
                }
                items.push(StaleItem {
                    kind: StaleKind::Ghost,
                    sandbox_id: s.id.clone(),
                    host: place.clone(),
                    extension: ext.id().to_string(),
                    state: Some(State::Ready),
                    detail,
                    resource: None,
                });
            }
        }
        // A create that started after the first look recorded its sandbox
        // before making anything on a host: look at the store again, so a
        // resource that was listed before its record was seen is never taken
        // for an orphan.
        if items
            .iter()
            .any(|i| i.kind == StaleKind::Orphan && i.resource.is_some())
        {
            let mut fresh = BTreeMap::new();
            for i in &items {
                if i.kind == StaleKind::Orphan
                    && i.resource.is_some()
                    && !is_snapshot_id(&i.sandbox_id)
                {
                    fresh.insert(i.sandbox_id.clone(), self.find(&i.sandbox_id));
                }
            }
            // A snapshot made after the first look has a record by now.
            let snaps_now: BTreeMap<String, SnapshotState> = self
                .snapshots(None, &[])?
                .into_iter()
                .map(|s| (s.id, s.state))
                .collect();
            items.retain(|i| {
                if i.kind != StaleKind::Orphan || i.resource.is_none() {
                    return true;
                }
                if is_snapshot_id(&i.sandbox_id) {
                    return snaps_now.get(&i.sandbox_id).is_none_or(|st| !st.is_live());
                }
                // A record that no longer parses is not an orphan's: keep
                // the item, the next pass reports the store.
                match fresh
                    .get(&i.sandbox_id)
                    .and_then(|r| r.as_ref().ok())
                    .and_then(|r| r.as_ref())
                {
                    None => true,
                    Some(s) => {
                        matches!(s.state(), State::Destroyed | State::Failed)
                            && s.ended_at.is_none_or(|t| older_than(t, now, grace))
                    }
                }
            });
        }
        items.sort_by(|a, b| (a.kind, &a.sandbox_id).cmp(&(b.kind, &b.sandbox_id)));
        let uploads = self.sweep_uploads(None, self.upload_retention, grace, true)?;
        Ok(StaleReport {
            checked_at: Some(now),
            grace_seconds: grace.as_secs(),
            items,
            unchecked,
            uploads,
        })
    }

    /// End every stale item (or, with `dry_run`, say what would be done).
    pub async fn reap_stale(&self, grace: Duration, dry_run: bool) -> Result<ReapReport> {
        let report = self.inspect_stale(grace).await?;
        let mut reaped = Vec::new();
        for item in report.items {
            if dry_run {
                reaped.push(Reaped {
                    outcome: "would reap".into(),
                    ok: true,
                    item,
                });
                continue;
            }
            let result = match (item.kind, item.state) {
                _ if is_snapshot_id(&item.sandbox_id) => self.reap_snapshot(&item).await,
                (StaleKind::Expired, _) => self.end(&item, EndReason::Expired).await,
                (StaleKind::Stuck, Some(State::Pausing)) => self
                    .pause(&item.sandbox_id)
                    .await
                    .map(|s| format!("pause finished ({})", s.state())),
                (StaleKind::Stuck, Some(State::Resuming)) => self
                    .resume(&item.sandbox_id, None)
                    .await
                    .map(|s| format!("resume finished ({})", s.state())),
                (StaleKind::Stuck | StaleKind::Ghost, _) => {
                    self.end(&item, EndReason::Reaped).await
                }
                (StaleKind::Orphan, _) => self.reap_orphan(&item).await,
            };
            let (outcome, ok) = match result {
                Ok(o) => (o, true),
                Err(e) => (format!("failed: {e}"), false),
            };
            reaped.push(Reaped { item, outcome, ok });
        }
        let uploads = if dry_run {
            report.uploads
        } else {
            self.sweep_uploads(None, self.upload_retention, grace, false)?
        };
        if !dry_run {
            if let Some(b) = self.billing() {
                let n = b.reconcile()?;
                if n > 0 {
                    tracing::info!("resolved {n} hold(s) whose sandboxes had ended");
                }
            }
        }
        Ok(ReapReport {
            dry_run,
            reaped,
            unchecked: report.unchecked,
            uploads,
        })
    }

    /// Destroy the record of `item` with `reason`, if it is still in the
    /// state this pass found it in: a reaper on another replica that got
    /// there first is left to finish.
    async fn end(&self, item: &StaleItem, reason: EndReason) -> Result<String> {
        let Some(seen) = item.state else {
            return self
                .destroy(&item.sandbox_id, reason)
                .await
                .map(|s| format!("destroyed ({})", s.reason().unwrap_or_default()));
        };
        Ok(
            match self.destroy_if(&item.sandbox_id, reason, seen).await? {
                Some(s) => format!("destroyed ({})", s.reason().unwrap_or_default()),
                None => "already being ended by another process".to_string(),
            },
        )
    }

    /// Extension `extension` and a transport to `host` (the local one for
    /// an extension that does not use hosts).
    pub(crate) async fn reach(
        &self,
        extension: &str,
        host: &str,
    ) -> Result<(
        Arc<dyn crate::extension::Extension>,
        Arc<dyn crate::transport::Transport>,
    )> {
        let ext = self.registry().get(extension).ok_or_else(|| {
            crate::Error::unsupported(format!("{extension} is not in this build"))
        })?;
        let spec = if ext.capabilities().uses_host {
            self.hosts().require(host)?
        } else {
            HostSpec::local()
        };
        let transport = self.connector().connect(&spec).await?;
        Ok((ext, transport))
    }

    /// A snapshot left `creating` by a dead process (failed, its parts
    /// removed), or an artifact no live record keeps (removed).
    async fn reap_snapshot(&self, item: &StaleItem) -> Result<String> {
        if item.kind == StaleKind::Stuck {
            let s = self.delete_snapshot(&item.sandbox_id).await?;
            return Ok(format!("parts removed; snapshot {}", s.state));
        }
        let (ext, transport) = self.reach(&item.extension, &item.host).await?;
        ext.delete_snapshot(transport, &item.sandbox_id, &serde_json::Value::Null)
            .await?;
        Ok("removed".to_string())
    }

    async fn reap_orphan(&self, item: &StaleItem) -> Result<String> {
        // A record with leftovers (a failed one, or one whose create died):
        // destroy it properly.
        if matches!(item.state, Some(State::Failed | State::Provisioning)) {
            return self.end(item, EndReason::Reaped).await.map(|o| {
                match o.starts_with("destroyed") {
                    true => "torn down; record destroyed (reaped)".to_string(),
                    false => o,
                }
            });
        }
        let (ext, transport) = self.reach(&item.extension, &item.host).await?;
        let ctx = SandboxCtx {
            id: item.sandbox_id.clone(),
            profile: String::new(),
            profile_version: 0,
            actor: crate::model::Actor::new(crate::model::ActorKind::Adm, "reaper")?,
            config: Default::default(),
            inputs: Default::default(),
            host: item.host.clone(),
            transport,
            expires_at: self.now(),
            ready_timeout: Duration::from_secs(60),
            created_at: self.now(),
            price_per_hour: Default::default(),
            restore: None,
        };
        ext.teardown(&ctx, &serde_json::Value::Null).await?;
        Ok("torn down".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Event;
    use crate::model;
    use crate::model::{Actor, NewSandbox, RouteTrace};

    fn rec(id: &str, created: DateTime<Utc>, ttl: u64) -> Sandbox {
        Sandbox::new(NewSandbox {
            id: id.into(),
            profile: "profile.p".into(),
            profile_version: 1,
            extension: "ext.x".into(),
            host: "local".into(),
            actor: "adm:t".parse::<Actor>().unwrap(),
            inputs: Default::default(),
            route: RouteTrace::default(),
            ttl_seconds: ttl,
            idempotency_key: None,
            recreated_from: None,
            cost: None,
            created_at: created,
        })
    }

    #[test]
    fn a_provisioning_record_whose_worker_died_is_an_orphan() {
        let now = model::now();
        let mut r = rec("sbx-deadworker", now - chrono::Duration::minutes(3), 7200);
        r.worker = Some(crate::process::current());
        let timeouts = BTreeMap::new();
        let dead = classify_records(
            std::slice::from_ref(&r),
            &timeouts,
            now,
            Duration::from_secs(60),
            &|_| Some(false),
        );
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].kind, StaleKind::Orphan);
        let alive = classify_records(
            std::slice::from_ref(&r),
            &timeouts,
            now,
            Duration::from_secs(60),
            &|_| Some(true),
        );
        assert!(alive.is_empty(), "a create still running is left alone");
        // Certainly gone: ended at once, even inside the grace window...
        let young = classify_records(
            std::slice::from_ref(&r),
            &timeouts,
            now,
            Duration::from_secs(600),
            &|_| Some(false),
        );
        assert_eq!(young.len(), 1);
        // ...but a worker the reaper cannot judge (another machine) waits
        // it out.
        let unknown = classify_records(&[r], &timeouts, now, Duration::from_secs(600), &|_| None);
        assert!(unknown.is_empty(), "nothing unsure inside the grace window");
    }

    #[test]
    fn classifies_expired_stuck_and_respects_grace() {
        let now = model::now();
        let hour = chrono::Duration::hours(1);
        let mut expired = rec("sbx-expired000", now - hour * 2, 3600);
        expired.apply(&Event::Ready, now - hour * 2).unwrap();
        let mut fresh_ready = rec("sbx-fresh00000", now - hour, 7200);
        fresh_ready.apply(&Event::Ready, now - hour).unwrap();
        let stuck = rec("sbx-stuck00000", now - hour, 7200);
        let young = rec("sbx-young00000", now - chrono::Duration::seconds(10), 1);
        let mut destroying = rec("sbx-destroying", now - hour, 7200);
        destroying
            .apply(&Event::Destroy(EndReason::Destroyed), now - hour)
            .unwrap();
        let timeouts = BTreeMap::from([("profile.p".to_string(), Duration::from_secs(300))]);
        let items = classify_records(
            &[expired, fresh_ready, stuck, young, destroying],
            &timeouts,
            now,
            Duration::from_secs(120),
            &|_| Some(true),
        );
        let got: Vec<(StaleKind, &str)> = items
            .iter()
            .map(|i| (i.kind, i.sandbox_id.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (StaleKind::Expired, "sbx-expired000"),
                (StaleKind::Stuck, "sbx-stuck00000"),
                (StaleKind::Stuck, "sbx-destroying"),
            ],
            "the young record is inside the grace window, the fresh one is fine"
        );
    }

    #[test]
    fn a_ready_record_past_its_deadline_is_expired_inside_the_grace_window() {
        let now = model::now();
        let created = now - chrono::Duration::seconds(10);
        let mut short = rec("sbx-short00000", created, 2);
        short.apply(&Event::Ready, created).unwrap();
        let mut live = rec("sbx-live000000", created, 3600);
        live.apply(&Event::Ready, created).unwrap();
        let in_flight = rec("sbx-inflight00", created, 2);
        let items = classify_records(
            &[short, live, in_flight],
            &BTreeMap::new(),
            now,
            Duration::from_secs(120),
            &|_| Some(true),
        );
        let got: Vec<(StaleKind, &str)> = items
            .iter()
            .map(|i| (i.kind, i.sandbox_id.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![(StaleKind::Expired, "sbx-short00000")],
            "a create still provisioning stays protected by the grace window"
        );
    }
}
