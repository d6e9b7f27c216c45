//! Pause, resume and snapshots: the manager's side (the extension does
//! the work, see [`crate::extension::Extension::pause`] and its siblings).
//!
//! Each step is a transaction before the extension is called and one
//! after, like create and destroy:
//!
//! - **pause**: `ready -> pausing` with the running part of a metered
//!   sandbox's hold paid and the paused price held until the end of the
//!   paused retention (its new `expires_at`; the running time left is kept
//!   in `ttl_remaining_seconds`); then the extension pauses; then `paused`.
//!   A pause that fails goes back to `ready` with the time it had left.
//! - **resume**: `paused -> resuming` with the paused part paid and the
//!   running price held for the time it will run (refused before anything
//!   resumes when the balance cannot cover it); then the extension
//!   resumes; then `ready`. A resume that fails goes back to `paused`.
//! - **snapshot**: a `snap-...` record in `creating`, the extension saves
//!   the sandbox, the record becomes `ready` (or `failed`, with what was
//!   made removed). A snapshot whose maker died is failed by the reaper.
//!
//! A step asked again of a record left in `pausing` or `resuming` (its
//! process died) runs the extension's step again: both are idempotent.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::billing::seconds_between;
use crate::lifecycle::{Event, State};
use crate::manager::{CreateRequest, Manager};
use crate::model::{Actor, Sandbox};
use crate::snapshot::{new_snapshot_id, unknown_snapshot, Snapshot, SnapshotState};
use crate::store::db::{read, transact, Tx};
use crate::store::{require, transition};
use crate::{Error, Result};

/// The settings of `profile` a pause reads, or their defaults when the
/// profile is gone from the catalog.
fn pause_terms(m: &Manager, sbx: &Sandbox) -> (Duration, crate::credits::Micros) {
    match m.catalog().get(&sbx.profile) {
        Some(p) => (p.paused_retention, p.paused_price_per_hour),
        None => (
            crate::profile::parse::DEFAULT_PAUSED_RETENTION,
            crate::credits::Micros::ZERO,
        ),
    }
}

fn secs(d: Duration) -> chrono::Duration {
    chrono::Duration::milliseconds(d.as_millis() as i64)
}

impl Manager {
    fn extension_of(
        &self,
        sbx: &Sandbox,
    ) -> Result<std::sync::Arc<dyn crate::extension::Extension>> {
        self.registry().get(&sbx.extension).ok_or_else(|| {
            Error::unsupported(format!(
                "sandbox {} was made by {}, which this build does not have",
                sbx.id, sbx.extension
            ))
        })
    }

    async fn ctx_of(&self, sbx: &Sandbox) -> Result<crate::extension::SandboxCtx> {
        let ext = self.extension_of(sbx)?;
        let profile = self.catalog().get(&sbx.profile).cloned();
        let transport = self
            .transport_for(&sbx.host, ext.capabilities().uses_host)
            .await?;
        Ok(self.ctx_for(sbx, profile.as_ref(), transport))
    }

    /// Mark `rec` paused from `at` in the caller's transaction: the running
    /// time it has left is kept, its deadline becomes the end of the paused
    /// retention, and a metered one pays its run and holds the paused
    /// price.
    fn enter_pause(&self, tx: &mut dyn Tx, rec: &mut Sandbox, at: DateTime<Utc>) -> Result<()> {
        let (retention, paused_price) = pause_terms(self, rec);
        let until = at + secs(retention);
        if let Some(b) = self.billing() {
            let ran = seconds_between(rec.running_since(), at);
            b.pause_in(tx, &rec.id, ran, paused_price, until, at)?;
        }
        rec.ttl_remaining_seconds = Some(seconds_between(at, rec.expires_at.unwrap_or(at)));
        rec.paused_at = Some(at);
        rec.expires_at = Some(until);
        rec.cost = self.cost_in(tx, &rec.id)?;
        Ok(())
    }

    /// Mark `rec` running again from `at` for `run_for`, in the caller's
    /// transaction: a metered one pays its pause and holds the run
    /// (`InsufficientCredits`, and nothing written, when it cannot).
    fn leave_pause(
        &self,
        tx: &mut dyn Tx,
        rec: &mut Sandbox,
        at: DateTime<Utc>,
        run_for: Duration,
    ) -> Result<()> {
        let paused = seconds_between(rec.paused_at.unwrap_or(at), at);
        let expires = at + secs(run_for);
        if let Some(b) = self.billing() {
            b.resume_in(tx, &rec.id, paused, expires, at)?;
        }
        rec.paused_seconds += paused;
        rec.paused_at = None;
        rec.ttl_remaining_seconds = None;
        rec.resumed_at = Some(at);
        rec.expires_at = Some(expires);
        rec.cost = self.cost_in(tx, &rec.id)?;
        Ok(())
    }

    /// Pause a ready sandbox: nothing of it runs until [`Manager::resume`],
    /// its TTL stops, and its paused retention runs. Pausing a paused
    /// sandbox returns it unchanged; any other state is a `Conflict`.
    pub async fn pause(&self, id: &str) -> Result<Sandbox> {
        let sbx = self.get(id)?;
        let ext = self.extension_of(&sbx)?;
        if !ext.capabilities().pause {
            return Err(Error::unsupported(format!(
                "{} cannot pause sandboxes ({id})",
                sbx.extension
            ))
            .with_hint("`sandboxer extensions` lists what each extension can do"));
        }
        let (rec, go) = transact(self.db().as_ref(), |tx| {
            let mut rec = require(tx, id)?;
            match rec.state() {
                State::Paused => return Ok((rec, false)),
                State::Ready => {
                    let at = self.now();
                    self.enter_pause(tx, &mut rec, at)?;
                }
                // Asked again after the process pausing it died.
                State::Pausing => {}
                other => {
                    return Err(Error::conflict(format!(
                        "sandbox {id} is {other}; only a ready sandbox can be paused"
                    ))
                    .with_hint(match other {
                        State::Resuming => "wait for the resume to end, then pause",
                        State::Provisioning => "wait until it is ready",
                        _ => "`sandboxer get ID` shows its state",
                    }))
                }
            }
            rec.worker = Some(crate::process::current());
            transition(tx, &mut rec, &Event::Pause, self.now(), self.emits_events())?;
            Ok((rec, true))
        })?;
        if !go {
            return Ok(rec);
        }
        self.say(&format!("pausing {id} on {}", rec.host));
        let paused = async {
            let ctx = self.ctx_of(&rec).await?;
            ext.pause(&ctx, &rec.backend).await
        }
        .await;
        if let Err(e) = paused {
            // It runs on, with the time it had left.
            let undone = transact(self.db().as_ref(), |tx| {
                let mut now = require(tx, id)?;
                if now.state() == State::Pausing {
                    let at = self.now();
                    let left = Duration::from_secs(now.ttl_remaining_seconds.unwrap_or(0));
                    self.leave_pause(tx, &mut now, at, left)?;
                    now.worker = None;
                    transition(tx, &mut now, &Event::PauseFailed, at, self.emits_events())?;
                }
                Ok(now)
            });
            if let Err(ue) = undone {
                tracing::warn!("{id} stays `pausing` after a failed pause: {ue}");
            }
            return Err(e.context(format!("pausing {id} on {}", rec.host)));
        }
        transact(self.db().as_ref(), |tx| {
            let mut now = require(tx, id)?;
            if now.state() == State::Pausing {
                now.worker = None;
                transition(
                    tx,
                    &mut now,
                    &Event::Paused,
                    self.now(),
                    self.emits_events(),
                )?;
            }
            Ok(now)
        })
    }

    /// Resume a paused sandbox: it gets back the running time it had left,
    /// or `ttl` from now when given (its whole running time within the
    /// profile's `max_ttl`). A metered sandbox holds the run first and is
    /// refused (`InsufficientCredits`, still paused, nothing held) when
    /// the balance cannot cover it. Resuming a ready sandbox returns it
    /// unchanged.
    pub async fn resume(&self, id: &str, ttl: Option<Duration>) -> Result<Sandbox> {
        let sbx = self.get(id)?;
        let ext = self.extension_of(&sbx)?;
        if let Some(t) = ttl {
            if t.is_zero() {
                return Err(Error::invalid_input(
                    "resume with a positive TTL, e.g. `30m`",
                ));
            }
        }
        let max_ttl = self.catalog().get(&sbx.profile).map(|p| p.max_ttl);
        let (rec, go) = transact(self.db().as_ref(), |tx| {
            let mut rec = require(tx, id)?;
            match rec.state() {
                State::Ready if ttl.is_none() => return Ok((rec, false)),
                State::Paused => {
                    let at = self.now();
                    let left = rec.ttl_remaining_seconds.unwrap_or(0);
                    let run_for = match ttl {
                        None => Duration::from_secs(left),
                        Some(t) => {
                            let ran = rec.ran_seconds(at);
                            let whole = Duration::from_secs(ran) + t;
                            if let Some(max) = max_ttl.filter(|m| whole > *m) {
                                return Err(Error::invalid_input(format!(
                                    "resuming {id} for {} makes its running time {}, above the maximum {} of {}",
                                    crate::duration::format_duration(t),
                                    crate::duration::format_duration(whole),
                                    crate::duration::format_duration(max),
                                    rec.profile
                                ))
                                .with_hint(format!(
                                    "it has run {}; resume with at most `--ttl {}`",
                                    crate::duration::format_duration(Duration::from_secs(ran)),
                                    crate::duration::format_duration(max.saturating_sub(Duration::from_secs(ran)))
                                )));
                            }
                            rec.ttl_seconds = whole.as_secs();
                            t
                        }
                    };
                    self.leave_pause(tx, &mut rec, at, run_for)?;
                }
                State::Resuming => {}
                other => {
                    return Err(Error::conflict(format!(
                        "sandbox {id} is {other}; only a paused sandbox can be resumed"
                    )))
                }
            }
            rec.worker = Some(crate::process::current());
            transition(
                tx,
                &mut rec,
                &Event::Resume,
                self.now(),
                self.emits_events(),
            )?;
            Ok((rec, true))
        })?;
        if !go {
            return Ok(rec);
        }
        self.say(&format!("resuming {id} on {}", rec.host));
        let resumed = async {
            let ctx = self.ctx_of(&rec).await?;
            let deadline = tokio::time::Instant::now() + ctx.ready_timeout;
            ext.resume(&ctx, &rec.backend, deadline).await
        }
        .await;
        let info = match resumed {
            Ok(info) => info,
            Err(e) => {
                // It stays paused; its run is paid to now and the pause held
                // again.
                let undone = transact(self.db().as_ref(), |tx| {
                    let mut now = require(tx, id)?;
                    if now.state() == State::Resuming {
                        let at = self.now();
                        self.enter_pause(tx, &mut now, at)?;
                        now.worker = None;
                        transition(tx, &mut now, &Event::ResumeFailed, at, self.emits_events())?;
                    }
                    Ok(now)
                });
                if let Err(ue) = undone {
                    tracing::warn!("{id} stays `resuming` after a failed resume: {ue}");
                }
                return Err(e.context(format!("resuming {id} on {}", rec.host)));
            }
        };
        transact(self.db().as_ref(), |tx| {
            let mut now = require(tx, id)?;
            if now.state() == State::Resuming {
                now.worker = None;
                now.reachability = Some(info.reachability.clone());
                if let Some(h) = &info.handle {
                    now.backend = h.clone();
                }
                if info.telemetry.is_some() {
                    now.telemetry = info.telemetry.clone();
                }
                transition(
                    tx,
                    &mut now,
                    &Event::Resumed,
                    self.now(),
                    self.emits_events(),
                )?;
            }
            Ok(now)
        })
    }

    /// One snapshot, with its extension-private handle.
    pub fn snapshot_record(&self, id: &str) -> Result<Snapshot> {
        read(self.db().as_ref(), |tx| {
            tx.snapshot(id)?.ok_or_else(|| unknown_snapshot(id))
        })
    }

    /// Snapshots oldest first, `actor`'s only when given, in `states`
    /// (all when empty).
    pub fn snapshots(
        &self,
        actor: Option<&Actor>,
        states: &[SnapshotState],
    ) -> Result<Vec<Snapshot>> {
        read(self.db().as_ref(), |tx| tx.snapshots(actor, states))
    }

    /// Save sandbox `id` (ready or paused) as a new snapshot, made by
    /// `actor`. The record is `creating` while the extension works and
    /// `ready` once it is whole; a failure marks it `failed` with what was
    /// made removed.
    pub async fn snapshot(
        &self,
        id: &str,
        name: Option<String>,
        actor: &Actor,
    ) -> Result<Snapshot> {
        if let Some(n) = &name {
            if n.is_empty() || n.len() > 128 || n.chars().any(char::is_control) {
                return Err(Error::invalid_input(
                    "a snapshot name is 1 to 128 printable characters",
                ));
            }
        }
        let sbx = self.get(id)?;
        let ext = self.extension_of(&sbx)?;
        if !ext.capabilities().snapshot {
            return Err(Error::unsupported(format!(
                "{} cannot snapshot sandboxes ({id})",
                sbx.extension
            ))
            .with_hint("`sandboxer extensions` lists what each extension can do"));
        }
        let storage_price = self
            .catalog()
            .get(&sbx.profile)
            .map(|p| p.snapshot_price_per_hour)
            .unwrap_or_default();
        let snap = transact(self.db().as_ref(), |tx| {
            let rec = require(tx, id)?;
            if !matches!(rec.state(), State::Ready | State::Paused) {
                return Err(Error::conflict(format!(
                    "sandbox {id} is {}; only a ready or paused sandbox can be snapshotted",
                    rec.state()
                )));
            }
            let mut snap_id = new_snapshot_id();
            while tx.snapshot(&snap_id)?.is_some() {
                snap_id = new_snapshot_id();
            }
            let at = self.now();
            let snap = Snapshot {
                id: snap_id,
                name: name.clone(),
                source: rec.id.clone(),
                profile: rec.profile.clone(),
                profile_version: rec.profile_version,
                extension: rec.extension.clone(),
                host: rec.host.clone(),
                location: None,
                size_bytes: None,
                actor: actor.clone(),
                state: SnapshotState::Creating,
                reason: None,
                created_at: at,
                ready_at: None,
                deleted_at: None,
                updated_at: at,
                storage_price_per_hour: storage_price,
                storage_cost: None,
                worker: Some(crate::process::current()),
                backend: serde_json::Value::Null,
            };
            tx.put_snapshot(&snap)?;
            Ok(snap)
        })?;
        self.say(&format!("saving {id} as {}", snap.id));
        let ctx = match self.ctx_of(&sbx).await {
            Ok(c) => c,
            Err(e) => {
                self.fail_snapshot(&snap.id, &e.to_string())?;
                return Err(e.context(format!("snapshotting {id}")));
            }
        };
        match ext.snapshot(&ctx, &sbx.backend, &snap.id).await {
            Ok(made) => transact(self.db().as_ref(), |tx| {
                let mut now = tx
                    .snapshot(&snap.id)?
                    .ok_or_else(|| unknown_snapshot(&snap.id))?;
                if now.state != SnapshotState::Creating {
                    return Err(Error::conflict(format!(
                        "snapshot {} became {} while it was being made",
                        snap.id, now.state
                    )));
                }
                let at = self.now();
                now.state = SnapshotState::Ready;
                now.ready_at = Some(at);
                now.updated_at = at;
                now.worker = None;
                now.location = made.location.clone();
                now.size_bytes = made.size_bytes;
                now.backend = made.handle.clone();
                tx.put_snapshot(&now)?;
                Ok(now)
            }),
            Err(e) => {
                // What it made is gone (the extension contract); remove
                // again in case a step after it failed.
                if let Err(de) = ext
                    .delete_snapshot(ctx.transport.clone(), &snap.id, &serde_json::Value::Null)
                    .await
                {
                    tracing::warn!("removing the parts of {} failed: {de}", snap.id);
                }
                self.fail_snapshot(&snap.id, e.message())?;
                Err(e.context(format!("snapshotting {id} as {}", snap.id)))
            }
        }
    }

    /// Mark a `creating` snapshot `failed` with `why`.
    pub(crate) fn fail_snapshot(&self, snap_id: &str, why: &str) -> Result<Snapshot> {
        transact(self.db().as_ref(), |tx| {
            let mut now = tx
                .snapshot(snap_id)?
                .ok_or_else(|| unknown_snapshot(snap_id))?;
            if now.state == SnapshotState::Creating {
                let at = self.now();
                now.state = SnapshotState::Failed;
                now.reason = Some(why.to_string());
                now.updated_at = at;
                now.worker = None;
                tx.put_snapshot(&now)?;
            }
            Ok(now)
        })
    }

    /// Delete a snapshot: its artifacts are removed where it lives and the
    /// record becomes `deleted`. A snapshot being made, or being restored
    /// by a create that is still provisioning, is a `Conflict`. Deleting a
    /// deleted (or failed) snapshot returns it.
    pub async fn delete_snapshot(&self, snap_id: &str) -> Result<Snapshot> {
        let snap = self.snapshot_record(snap_id)?;
        match snap.state {
            SnapshotState::Deleted | SnapshotState::Failed => return Ok(snap),
            SnapshotState::Creating => {
                let alive = snap
                    .worker
                    .as_ref()
                    .and_then(crate::process::is_alive)
                    .unwrap_or(true);
                if alive {
                    return Err(
                        Error::conflict(format!("snapshot {snap_id} is still being made"))
                            .with_hint("delete it once `sandboxer snapshots get` shows it ready"),
                    );
                }
            }
            SnapshotState::Ready => {}
        }
        let restoring: Vec<String> = self
            .list(&crate::manager::ListFilter {
                states: vec![State::Provisioning],
                ..Default::default()
            })?
            .into_iter()
            .filter(|s| s.from_snapshot.as_deref() == Some(snap_id))
            .map(|s| s.id)
            .collect();
        if !restoring.is_empty() {
            return Err(Error::conflict(format!(
                "snapshot {snap_id} is being restored by {}",
                restoring.join(", ")
            ))
            .with_hint("delete it once those sandboxes are ready"));
        }
        let (ext, transport) = self
            .reach(&snap.extension, &snap.host)
            .await
            .map_err(|e| e.context(format!("deleting snapshot {snap_id}")))?;
        ext.delete_snapshot(transport, snap_id, &snap.backend)
            .await
            .map_err(|e| e.context(format!("deleting snapshot {snap_id} on {}", snap.host)))?;
        transact(self.db().as_ref(), |tx| {
            let mut now = tx
                .snapshot(snap_id)?
                .ok_or_else(|| unknown_snapshot(snap_id))?;
            if now.state.is_live() {
                let at = self.now();
                if now.state == SnapshotState::Creating {
                    now.state = SnapshotState::Failed;
                    now.reason = Some("its maker died; deleted".into());
                } else {
                    now.state = SnapshotState::Deleted;
                    now.deleted_at = Some(at);
                    let kept = seconds_between(now.ready_at.unwrap_or(now.created_at), at);
                    if let Some(b) = self
                        .billing()
                        .filter(|_| !now.storage_price_per_hour.is_zero())
                    {
                        now.storage_cost = Some(b.storage_in(tx, &now, kept, at)?);
                    }
                }
                now.updated_at = at;
                now.worker = None;
                tx.put_snapshot(&now)?;
            }
            Ok(now)
        })
    }

    /// The create request that restores `req.from_snapshot`, and the
    /// snapshot: its profile (the request's must match when given), the
    /// source sandbox's inputs under the request's, and the snapshot's
    /// extension and host. `None` for a plain create.
    pub(crate) fn restoring(
        &self,
        req: &CreateRequest,
    ) -> Result<Option<(CreateRequest, Snapshot)>> {
        let Some(snap_id) = &req.from_snapshot else {
            return Ok(None);
        };
        let snap = self.snapshot_record(snap_id)?;
        if snap.state != SnapshotState::Ready {
            return Err(Error::conflict(format!(
                "snapshot {snap_id} is {}; only a ready snapshot can be restored",
                snap.state
            )));
        }
        if !req.profile.is_empty() && req.profile != snap.profile {
            return Err(Error::invalid_input(format!(
                "snapshot {snap_id} is of {}, not {}",
                snap.profile, req.profile
            ))
            .with_hint(format!(
                "leave out --profile, or give `--profile {}`",
                snap.profile
            )));
        }
        let uses_host = self
            .registry()
            .get(&snap.extension)
            .is_none_or(|e| e.capabilities().uses_host);
        let mut out = req.clone();
        out.profile = snap.profile.clone();
        let source = self.find(&snap.source)?;
        if let Some(src) = source {
            for (k, v) in src.inputs {
                out.inputs.entry(k).or_insert(v);
            }
        }
        out.constraints.only = vec![snap.extension.clone()];
        if uses_host {
            if let Some(h) = &req.constraints.host {
                if h != &snap.host {
                    return Err(Error::invalid_input(format!(
                        "snapshot {snap_id} lives on {}, not {h}",
                        snap.host
                    ))
                    .with_hint("leave out --host: a restore runs where its snapshot is"));
                }
            }
            out.constraints.host = Some(snap.host.clone());
        }
        Ok(Some((out, snap)))
    }
}
