//! The manager: the async driver that takes a request from create through
//! ready to teardown. It resolves the profile and placement, records every
//! transition in the store (through the pure state machine), and calls the
//! extension through the host transport.
//!
//! Every change is one database transaction (a record's transition with its
//! outbox event), so concurrent CLI processes, `serve` replicas and the
//! reaper share one store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::billing::Billing;
use crate::extension::{Registry, SandboxCtx};
use crate::hosts::Hosts;
use crate::lifecycle::{EndReason, Event, State};
use crate::model::{self, Actor, Candidate, NewSandbox, RouteTrace, Sandbox, Skipped};
use crate::profile::{Catalog, Profile};
use crate::routing::{self, Constraints, Decision, ExtensionInfo};
use crate::store::db::{read, transact, Db, ListQuery, Page, Tx};
use crate::store::{emit, require, transition, IdempotencyEntry};
use crate::transport::Connector;
use crate::{Error, ErrorKind, Result};

/// A create request, as the CLI and the HTTP API take it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CreateRequest {
    pub profile: String,
    pub inputs: BTreeMap<String, String>,
    /// `--ttl`; the profile's default when `None`.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub ttl: Option<Duration>,
    pub constraints: Constraints,
    #[serde(skip)]
    pub actor: Option<Actor>,
    #[serde(skip)]
    pub idempotency_key: Option<String>,
    /// Set by `recreate`: the sandbox this one replaces (its slot on the host
    /// does not count against capacity).
    #[serde(skip)]
    pub recreated_from: Option<String>,
    /// Key-value labels kept on the record (E2B's `metadata`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// `--from-snapshot`: restore this snapshot (`snap-...`) instead of
    /// starting fresh. The profile is the snapshot's (an empty `profile`
    /// takes it), and the sandbox is placed where the snapshot lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<String>,
}

mod opt_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_secs()),
            None => s.serialize_none(),
        }
    }
}

/// Which sandboxes `list` returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only these states (empty: all).
    pub states: Vec<State>,
    pub actor: Option<Actor>,
    pub profile: Option<String>,
    pub host: Option<String>,
    /// Leave out destroyed and failed records.
    pub live_only: bool,
}

impl ListFilter {
    /// Whether `s` passes (the database filters the same way in SQL).
    pub fn matches(&self, s: &Sandbox) -> bool {
        (self.states.is_empty() || self.states.contains(&s.state()))
            && self.actor.as_ref().is_none_or(|a| &s.actor == a)
            && self.profile.as_ref().is_none_or(|p| &s.profile == p)
            && self.host.as_ref().is_none_or(|x| &s.host == x)
            && (!self.live_only || !s.state().is_terminal())
    }
}

/// Progress messages for people (a spinner's text). Never carries secrets.
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// Told about lifecycle steps once they have committed (the HTTP server's
/// Prometheus metrics). Called on the thread that made the step; it must
/// be quick and must not fail.
pub trait Observer: Send + Sync {
    /// `rec` just became `ready`.
    fn ready(&self, rec: &Sandbox);
    /// `rec`'s provisioning failed for good (every candidate tried), with
    /// the last attempt's error kind.
    fn failed(&self, rec: &Sandbox, kind: ErrorKind);
    /// `rec` was torn down and is `destroyed`; the teardown took `took`.
    fn destroyed(&self, rec: &Sandbox, took: Duration);
}

/// The driver. Cheap to clone.
#[derive(Clone)]
pub struct Manager {
    db: Arc<dyn Db>,
    catalog: Arc<Catalog>,
    hosts: Arc<Hosts>,
    registry: Registry,
    connector: Arc<dyn Connector>,
    billing: Option<Arc<dyn Billing>>,
    emit_events: bool,
    progress: Option<Progress>,
    /// Where uploaded repos are unpacked (`<data dir>/uploads`); `None`: no
    /// upload can be named.
    pub(crate) uploads_dir: Option<std::path::PathBuf>,
    /// How long an upload nothing used is kept.
    pub(crate) upload_retention: Duration,
    observer: Option<Arc<dyn Observer>>,
    /// Where record times come from.
    clock: Arc<dyn crate::clock::Clock>,
}

impl Manager {
    pub fn new(
        db: Arc<dyn Db>,
        catalog: Catalog,
        hosts: Hosts,
        registry: Registry,
        connector: Arc<dyn Connector>,
    ) -> Self {
        Manager {
            db,
            catalog: Arc::new(catalog),
            hosts: Arc::new(hosts),
            registry,
            connector,
            clock: crate::clock::system(),
            billing: None,
            emit_events: false,
            progress: None,
            uploads_dir: None,
            upload_retention: crate::uploads::DEFAULT_UNUSED_RETENTION,
            observer: None,
        }
    }

    /// Take uploaded repos (`upload:upl-...` input values) from `dir`, where
    /// the HTTP API unpacks them (`<data dir>/uploads`).
    pub fn with_uploads_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.uploads_dir = Some(dir.into());
        self
    }

    /// Keep an upload that no create used this long (default an hour).
    pub fn with_upload_retention(mut self, unused_for: Duration) -> Self {
        self.upload_retention = unused_for;
        self
    }

    /// Meter against a credits ledger: candidates the actor cannot pay for
    /// are rejected, costs are copied into records, failed provisioning
    /// voids its hold, extend-ttl holds the extra time.
    /// Read record times from `clock` (tests move a manual one past a
    /// deadline instead of waiting for it).
    pub fn with_clock(mut self, clock: Arc<dyn crate::clock::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Now, on this manager's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn with_billing(mut self, billing: Arc<dyn Billing>) -> Self {
        self.billing = Some(billing);
        self
    }

    /// Queue a State Hub event in the outbox with every transition (when a
    /// hub is configured).
    pub fn with_events(mut self, on: bool) -> Self {
        self.emit_events = on;
        self
    }

    /// Tell `observer` about every lifecycle step this manager (and its
    /// clones) makes.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn billing(&self) -> Option<&Arc<dyn Billing>> {
        self.billing.as_ref()
    }

    pub(crate) fn cost_in(&self, tx: &mut dyn Tx, id: &str) -> Result<Option<crate::model::Cost>> {
        match &self.billing {
            Some(b) => b.cost_in(tx, id),
            None => Ok(None),
        }
    }

    fn balance(&self, actor: &Actor) -> Result<Option<crate::credits::Micros>> {
        self.billing
            .as_ref()
            .map(|b| b.available(actor))
            .transpose()
    }

    /// Report progress through `f` (the CLI's spinner).
    pub fn with_progress(mut self, f: Progress) -> Self {
        self.progress = Some(f);
        self
    }

    /// The database all state lives in.
    pub fn db(&self) -> &Arc<dyn Db> {
        &self.db
    }
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }
    pub fn hosts(&self) -> &Hosts {
        &self.hosts
    }
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
    pub fn connector(&self) -> &Arc<dyn Connector> {
        &self.connector
    }

    pub(crate) fn emits_events(&self) -> bool {
        self.emit_events
    }

    pub(crate) fn say(&self, msg: &str) {
        if let Some(p) = &self.progress {
            p(msg);
        }
        tracing::debug!("{msg}");
    }

    /// One sandbox.
    pub fn get(&self, id: &str) -> Result<Sandbox> {
        read(self.db.as_ref(), |tx| require(tx, id))
    }

    /// The record `id`, if there is one.
    pub fn find(&self, id: &str) -> Result<Option<Sandbox>> {
        read(self.db.as_ref(), |tx| tx.sandbox(id))
    }

    /// Sandboxes matching `filter`, oldest first.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Sandbox>> {
        let mut out = Vec::new();
        self.for_each_page(filter, LIST_PAGE, &mut |page| {
            out.extend(page);
            Ok(())
        })?;
        Ok(out)
    }

    /// One page of the sandboxes matching `q.filter`, oldest first.
    pub fn list_page(&self, q: &ListQuery) -> Result<Page> {
        read(self.db.as_ref(), |tx| tx.list(q))
    }

    /// Every record matching `filter`, `page` at a time (each page one read
    /// transaction), so a large history is never held in memory at once.
    pub fn for_each_page(
        &self,
        filter: &ListFilter,
        page: usize,
        f: &mut dyn FnMut(Vec<Sandbox>) -> Result<()>,
    ) -> Result<()> {
        let mut q = ListQuery {
            filter: filter.clone(),
            after: None,
            limit: Some(page.max(1)),
        };
        loop {
            let got = self.list_page(&q)?;
            f(got.records)?;
            match got.next {
                Some(c) => q.after = Some(c),
                None => return Ok(()),
            }
        }
    }

    /// The sandboxes matching `filter`, oldest first, in their public form
    /// as a JSON array with one record per line (compact JSON each), written
    /// to `w` a page at a time as they are read: each record's stored
    /// public JSON is copied without being parsed (`list --json`).
    pub fn write_list_json(&self, filter: &ListFilter, w: &mut dyn std::io::Write) -> Result<()> {
        let io = |e| Error::io("writing the list", e);
        let mut q = ListQuery {
            filter: filter.clone(),
            after: None,
            limit: Some(LIST_PAGE),
        };
        let mut n = 0usize;
        // Records past their deadline say so (`"expired": true`), as `get`
        // does: spliced into their stored JSON, whose first field is `id`.
        let overdue = read(self.db.as_ref(), |tx| tx.overdue(self.now()))?;
        w.write_all(b"[").map_err(io)?;
        loop {
            let (raw, next) = read(self.db.as_ref(), |tx| tx.list_json(&q))?;
            for line in &raw {
                w.write_all(if n == 0 { b"\n" } else { b",\n" })
                    .map_err(io)?;
                let id = line
                    .strip_prefix("{\"id\":\"")
                    .and_then(|rest| rest.split('"').next());
                match (
                    id.is_some_and(|id| overdue.contains(id)),
                    line.strip_suffix('}'),
                ) {
                    (true, Some(head)) => {
                        w.write_all(head.as_bytes()).map_err(io)?;
                        w.write_all(b",\"expired\":true}").map_err(io)?;
                    }
                    _ => w.write_all(line.as_bytes()).map_err(io)?,
                }
                n += 1;
            }
            match next {
                Some(c) => q.after = Some(c),
                None => break,
            }
        }
        w.write_all(if n == 0 { b"]\n" } else { b"\n]\n" })
            .map_err(io)?;
        w.flush().map_err(io)
    }

    fn extension_infos(&self) -> BTreeMap<String, ExtensionInfo> {
        self.registry
            .iter()
            .map(|e| {
                (
                    e.id().to_string(),
                    ExtensionInfo {
                        uses_host: e.capabilities().uses_host,
                    },
                )
            })
            .collect()
    }

    /// Live sandboxes per host, leaving out `except`.
    fn live_per_host(tx: &mut dyn Tx, except: Option<&str>) -> Result<BTreeMap<String, u32>> {
        let mut m = tx.live_per_host()?;
        if let Some(rec) = except.map(|id| tx.sandbox(id)).transpose()?.flatten() {
            if !rec.state().is_terminal() {
                if let Some(n) = m.get_mut(&rec.host) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        Ok(m)
    }

    /// The validated request: profile, inputs with defaults, TTL, actor.
    fn validate(
        &self,
        req: &CreateRequest,
    ) -> Result<(Profile, BTreeMap<String, String>, Duration, Actor)> {
        let profile = self.catalog.require(&req.profile)?.clone();
        let inputs = profile.check_inputs(&req.inputs)?;
        let ttl = profile.resolve_ttl(req.ttl)?;
        let actor = req
            .actor
            .clone()
            .ok_or_else(|| Error::invalid_input("a create needs an actor"))?;
        if let Some(h) = &req.constraints.host {
            self.hosts.require(h)?;
        }
        if let Some(k) = &req.idempotency_key {
            if k.is_empty() || k.len() > 200 {
                return Err(Error::invalid_input(
                    "an idempotency key is 1 to 200 characters",
                ));
            }
        }
        Ok((profile, inputs, ttl, actor))
    }

    /// The placement decision for `req` against the current store, without
    /// creating anything (`route explain`). Every host the decision could
    /// use is probed (in parallel, within its connect timeout), so
    /// unreachable hosts show as rejected with the reason.
    pub async fn explain(&self, req: &CreateRequest) -> Result<Decision> {
        let (profile, _inputs, ttl, actor) = self.validate_for_explain(req)?;
        let live = read(self.db.as_ref(), |tx| Self::live_per_host(tx, None))?;
        let balance = self.balance(&actor)?;
        let mut names = BTreeSet::new();
        for r in &profile.routes {
            let uses_host = self
                .registry
                .get(&r.extension)
                .is_none_or(|e| e.capabilities().uses_host);
            if !uses_host {
                continue;
            }
            match (&req.constraints.host, r.placement.is_empty()) {
                (Some(h), _) => {
                    names.insert(h.clone());
                }
                (None, true) => {
                    names.insert(self.hosts.default.clone());
                }
                (None, false) => names.extend(r.placement.iter().cloned()),
            }
        }
        let mut set = tokio::task::JoinSet::new();
        for name in names {
            if let Some(spec) = self.hosts.get(&name) {
                let connector = self.connector.clone();
                set.spawn(async move { (name, connector.connect(&spec).await.map(|_| ())) });
            }
        }
        let mut unreachable = BTreeMap::new();
        while let Some(joined) = set.join_next().await {
            if let Ok((name, Err(e))) = joined {
                unreachable.insert(name, e.message().lines().next().unwrap_or("").to_string());
            }
        }
        Ok(self.decide(
            &profile,
            ttl,
            &req.constraints,
            &live,
            &BTreeSet::new(),
            balance,
            &unreachable,
        ))
    }

    fn validate_for_explain(
        &self,
        req: &CreateRequest,
    ) -> Result<(Profile, BTreeMap<String, String>, Duration, Actor)> {
        let profile = self.catalog.require(&req.profile)?.clone();
        let ttl = profile.resolve_ttl(req.ttl)?;
        let actor = req
            .actor
            .clone()
            .unwrap_or_else(|| Actor::new(model::ActorKind::Adm, model_user()).expect("valid"));
        Ok((profile, req.inputs.clone(), ttl, actor))
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        profile: &Profile,
        ttl: Duration,
        constraints: &Constraints,
        live: &BTreeMap<String, u32>,
        tried: &BTreeSet<(usize, String)>,
        balance: Option<crate::credits::Micros>,
        unreachable: &BTreeMap<String, String>,
    ) -> Decision {
        let extensions = self.extension_infos();
        routing::resolve(&routing::Input {
            profile,
            hosts: &self.hosts,
            extensions: &extensions,
            live_per_host: live,
            unreachable,
            tried,
            balance,
            ttl,
            constraints,
        })
    }

    /// Create a sandbox: record it, provision it, and (when `wait`) wait
    /// until it is ready. With the same idempotency key and the same request
    /// the existing sandbox is returned and nothing is provisioned again.
    pub async fn create(&self, req: CreateRequest, wait: bool) -> Result<Sandbox> {
        match self.start_create(&req)? {
            Started::Existing(s) => {
                let s = if wait && s.state() == State::Provisioning {
                    self.wait_settled(&s.id).await?
                } else {
                    s
                };
                if s.state() == State::Failed {
                    return Err(Error::new(
                        ErrorKind::ProvisionFailed,
                        format!(
                            "the idempotency key names sandbox {}, which failed: {}",
                            s.id,
                            s.reason().unwrap_or_default()
                        ),
                    )
                    .with_hint("use a new idempotency key to try again"));
                }
                Ok(s)
            }
            Started::New(s) => {
                if wait {
                    // Recorded by this process a moment ago: no need to
                    // claim it again.
                    self.provision_recorded(s).await
                } else {
                    Ok(s)
                }
            }
        }
    }

    /// Step one of create: validate, decide the placement and record the
    /// sandbox in `provisioning`, all in one store commit.
    pub fn start_create(&self, req: &CreateRequest) -> Result<Started> {
        let restoring = self.restoring(req)?;
        let req = restoring.as_ref().map_or(req, |(r, _)| r);
        let (profile, inputs, ttl, actor) = self.validate(req)?;
        let request_hash = request_hash(req, &inputs, ttl, &actor);
        let replacing = req.recreated_from.as_deref();
        let balance = self.balance(&actor)?;
        transact(self.db.as_ref(), |tx| {
            if let Some(key) = &req.idempotency_key {
                if let Some(entry) = tx.idempotency(&actor, key)? {
                    if entry.request_hash != request_hash {
                        return Err(Error::conflict(format!(
                            "idempotency key `{key}` was already used for a different request (sandbox {})",
                            entry.sandbox_id
                        ))
                        .with_hint("use a new key for a new request, or repeat the original request exactly"));
                    }
                    let existing = require(tx, &entry.sandbox_id)?;
                    return Ok(Started::Existing(existing));
                }
            }
            let uses = crate::uploads::claim(tx, &inputs, &actor)?;
            let live = Self::live_per_host(tx, replacing)?;
            let decision = self.decide(
                &profile,
                ttl,
                &req.constraints,
                &live,
                &BTreeSet::new(),
                balance,
                &BTreeMap::new(),
            );
            let Some(chosen) = decision.candidates.first().cloned() else {
                return Err(no_placement(&profile, &decision));
            };
            let mut id = model::new_sandbox_id();
            while tx.sandbox(&id)?.is_some() {
                id = model::new_sandbox_id();
            }
            let route = RouteTrace {
                policy: decision.policy.clone(),
                chosen: Some(chosen.clone()),
                skipped: decision.rejected.clone(),
                remaining: decision.candidates[1..].to_vec(),
            };
            let mut sbx = Sandbox::new(NewSandbox {
                id: id.clone(),
                profile: profile.id.clone(),
                profile_version: profile.version,
                extension: chosen.extension.clone(),
                host: chosen.host.clone(),
                actor: actor.clone(),
                inputs: inputs.clone(),
                route,
                ttl_seconds: ttl.as_secs(),
                idempotency_key: req.idempotency_key.clone(),
                recreated_from: req.recreated_from.clone(),
                cost: None,
                created_at: self.now(),
            });
            sbx.metadata = req.metadata.clone();
            if let Some((_, snap)) = &restoring {
                // Deleted (or failed) since it was read: nothing to restore.
                let now = tx
                    .snapshot(&snap.id)?
                    .ok_or_else(|| crate::snapshot::unknown_snapshot(&snap.id))?;
                if now.state != crate::snapshot::SnapshotState::Ready {
                    return Err(Error::conflict(format!(
                        "snapshot {} is {}; only a ready snapshot can be restored",
                        snap.id, now.state
                    )));
                }
                sbx.from_snapshot = Some(snap.id.clone());
            }
            // This process provisions it: the reaper can tell when it died.
            sbx.worker = Some(crate::process::current());
            if self.emit_events {
                emit(tx, &mut sbx, None)?;
            }
            tx.insert_sandbox(&sbx)?;
            // A metered route holds its price for the whole TTL in this same
            // transaction: a create the actor cannot pay for (another
            // create took the credits first) records nothing at all.
            if let Some(b) = &self.billing {
                if chosen.price_per_hour > crate::credits::Micros::ZERO {
                    b.hold_in(
                        tx,
                        &crate::billing::HoldRequest::for_sandbox(&sbx, chosen.price_per_hour),
                    )?;
                }
            }
            if let Some(key) = &req.idempotency_key {
                tx.put_idempotency(
                    &actor,
                    key,
                    &IdempotencyEntry {
                        request_hash: request_hash.clone(),
                        sandbox_id: id.clone(),
                    },
                )?;
            }
            for upload in uses {
                if let Some(mut u) = tx.upload(&upload)? {
                    u.used_by.push(id.clone());
                    tx.put_upload(&u)?;
                }
            }
            Ok(Started::New(sbx))
        })
    }

    /// Step two of create: provision on the chosen candidate and wait until
    /// ready; when a candidate fails, roll it back and move to the next one
    /// (unless the request said `--no-fallback`). The last failure marks the
    /// sandbox `failed`.
    pub async fn finish_create(&self, id: &str) -> Result<Sandbox> {
        // Claim the record: this process now provisions it.
        let sbx = transact(self.db.as_ref(), |tx| {
            let mut rec = require(tx, id)?;
            if rec.state() == State::Provisioning {
                rec.worker = Some(crate::process::current());
                tx.update_sandbox(&rec)?;
            }
            Ok(rec)
        })?;
        self.provision_recorded(sbx).await
    }

    /// Provision a record this process already owns (its worker).
    async fn provision_recorded(&self, mut sbx: Sandbox) -> Result<Sandbox> {
        let id = sbx.id.clone();
        let id = id.as_str();
        if sbx.state() != State::Provisioning {
            return Ok(sbx);
        }
        let profile = self.catalog.require(&sbx.profile)?.clone();
        let started = tokio::time::Instant::now();
        let deadline = started + profile.ready_timeout;
        // (step, error kind, whether the extension runs on a placement host)
        let mut attempts: Vec<(&'static str, ErrorKind, bool)> = Vec::new();
        loop {
            match self.try_candidate(&sbx, &profile, deadline).await {
                Ok(ready) => return Ok(ready),
                Err(Attempt::Gone(s)) => {
                    return Err(Error::conflict(format!(
                        "sandbox {id} changed while it was being provisioned (now {})",
                        s.state()
                    )))
                }
                Err(Attempt::Failed { step, error }) => {
                    let why = format!(
                        "{step} on {} ({}): {}",
                        sbx.host,
                        sbx.extension,
                        error.message()
                    );
                    tracing::debug!("candidate failed: {why}");
                    let uses_host = self
                        .registry
                        .get(&sbx.extension)
                        .is_none_or(|e| e.capabilities().uses_host);
                    attempts.push((step, error.kind(), uses_host));
                    // A request the backend calls invalid is invalid on every
                    // candidate: stop here instead of trying the others.
                    let bad_request = matches!(
                        error.kind(),
                        ErrorKind::InvalidInput | ErrorKind::InvalidConfig
                    );
                    let next = if bad_request {
                        None
                    } else {
                        self.next_candidate(id, &profile, &why)?
                    };
                    match next {
                        Some(next) => {
                            self.say(&format!(
                                "{} failed on {}; trying the next candidate",
                                sbx.extension, sbx.host
                            ));
                            sbx = next;
                        }
                        None => {
                            let failed = self.mark_failed(id, &why)?;
                            if let Some(o) = &self.observer {
                                if failed.state() == State::Failed {
                                    o.failed(&failed, error.kind());
                                }
                            }
                            return Err(final_error(&failed, &attempts, &error, &why));
                        }
                    }
                }
            }
        }
    }

    /// The context an extension gets for `sbx`. Without its profile (a
    /// user profile removed since), the route config is empty and the ready
    /// timeout a minute: enough for teardown.
    pub(crate) fn ctx_for(
        &self,
        sbx: &Sandbox,
        profile: Option<&Profile>,
        transport: Arc<dyn crate::transport::Transport>,
    ) -> SandboxCtx {
        let route = profile.and_then(|p| {
            sbx.route
                .chosen
                .as_ref()
                .and_then(|c| p.routes.get(c.route))
                .or_else(|| p.routes.iter().find(|r| r.extension == sbx.extension))
        });
        SandboxCtx {
            id: sbx.id.clone(),
            profile: sbx.profile.clone(),
            profile_version: sbx.profile_version,
            actor: sbx.actor.clone(),
            config: route.map(|r| r.config.clone()).unwrap_or_default(),
            inputs: self.resolve_uploads(&sbx.inputs),
            host: sbx.host.clone(),
            transport,
            expires_at: sbx.expires_at.unwrap_or_else(model::now),
            ready_timeout: profile.map_or(Duration::from_secs(60), |p| p.ready_timeout),
            created_at: sbx.created_at,
            price_per_hour: sbx
                .route
                .chosen
                .as_ref()
                .map(|c| c.price_per_hour)
                .unwrap_or_default(),
            // Filled by provisioning only (`try_candidate`): nothing else
            // reads it.
            restore: None,
        }
    }

    /// A transport for the sandbox's host (SaaS extensions get the local
    /// one, which they ignore).
    pub(crate) async fn transport_for(
        &self,
        host: &str,
        uses_host: bool,
    ) -> Result<Arc<dyn crate::transport::Transport>> {
        let spec = if uses_host {
            self.hosts.require(host)?
        } else {
            crate::hosts::HostSpec::local()
        };
        self.connector.connect(&spec).await
    }

    async fn try_candidate(
        &self,
        sbx: &Sandbox,
        profile: &Profile,
        deadline: tokio::time::Instant,
    ) -> std::result::Result<Sandbox, Attempt> {
        let failed = |step: &'static str| move |error: Error| Attempt::Failed { step, error };
        let ext = self
            .registry
            .get(&sbx.extension)
            .ok_or_else(|| Attempt::Failed {
                step: "extension",
                error: Error::unsupported(format!(
                    "extension {} is not in this build",
                    sbx.extension
                )),
            })?;
        self.say(&format!("connecting to {}", sbx.host));
        let transport = self
            .transport_for(&sbx.host, ext.capabilities().uses_host)
            .await
            .map_err(failed("connect"))?;
        let mut ctx = self.ctx_for(sbx, Some(profile), transport);
        if let Some(snap) = &sbx.from_snapshot {
            // Read when provisioning: a snapshot deleted meanwhile restores
            // nothing, and the extension says so.
            let rec = read(self.db.as_ref(), |tx| tx.snapshot(snap)).map_err(failed("restore"))?;
            ctx.restore = Some(crate::extension::Restore {
                snapshot_id: snap.clone(),
                handle: rec.map(|r| r.backend).unwrap_or_default(),
            });
        }
        self.say(&format!(
            "provisioning {} on {} ({})",
            sbx.id, sbx.host, sbx.extension
        ));
        let provisioned = ext.provision(&ctx).await.map_err(failed("provision"))?;
        // The handle is recorded with `ready` (one commit less per create):
        // until then, teardown derives everything from the sandbox id, as
        // the extension contract requires.
        let handle = provisioned.handle;
        self.say(&format!("waiting for {} to be ready", sbx.id));
        let ready = match ext.wait_ready(&ctx, &handle, deadline).await {
            Ok(r) => r,
            Err(e) => {
                self.say("rolling back");
                // Failed provisioning pays nothing: release the hold before the
                // rollback teardown (which would otherwise settle).
                if let Some(b) = &self.billing {
                    if let Err(ve) = transact(self.db.as_ref(), |tx| b.void_in(tx, &sbx.id)) {
                        tracing::warn!("voiding the hold of {} failed: {ve}", sbx.id);
                    }
                }
                if let Err(te) = ext.teardown(&ctx, &handle).await {
                    tracing::warn!("rollback of {} failed: {te}", sbx.id);
                }
                return Err(Attempt::Failed {
                    step: "wait_ready",
                    error: e,
                });
            }
        };
        let committed = transact(self.db.as_ref(), |tx| {
            let mut rec = require(tx, &sbx.id)?;
            if rec.state() != State::Provisioning {
                return Ok(Err(rec));
            }
            rec.cost = self.cost_in(tx, &sbx.id)?;
            // Provisioning is over: the fallbacks and the worker only
            // mattered while it ran.
            rec.route.remaining.clear();
            rec.worker = None;
            rec.reachability = Some(ready.reachability.clone());
            rec.telemetry = ready.telemetry.clone();
            if let Some(h) = &ready.handle {
                rec.backend = h.clone();
            }
            transition(tx, &mut rec, &Event::Ready, self.now(), self.emit_events)?;
            Ok(Ok(rec))
        });
        match committed {
            Ok(Ok(rec)) => {
                if let Some(o) = &self.observer {
                    o.ready(&rec);
                }
                Ok(rec)
            }
            Ok(Err(now)) => {
                // Destroyed while we provisioned: what we made must go.
                let _ = ext
                    .teardown(&ctx, ready.handle.as_ref().unwrap_or(&handle))
                    .await;
                Err(Attempt::Gone(Box::new(now)))
            }
            Err(e) => {
                // It never became ready: it pays nothing. Void the hold
                // before the rollback teardown (which would otherwise
                // settle it), as when waiting for it fails.
                if let Some(b) = &self.billing {
                    if let Err(ve) = transact(self.db.as_ref(), |tx| b.void_in(tx, &sbx.id)) {
                        tracing::warn!("voiding the hold of {} failed: {ve}", sbx.id);
                    }
                }
                let _ = ext.teardown(&ctx, &handle).await;
                Err(Attempt::Failed {
                    step: "record",
                    error: e,
                })
            }
        }
    }

    /// Move a provisioning record to its next remaining candidate, recording
    /// why the current one was skipped. `None` when none is left.
    ///
    /// Metering moves with it, in the same transaction: the failed route's
    /// hold (if still open) is voided, and a priced next route takes its own
    /// hold (`hold:<sbx>:<attempt>`); a route the actor cannot pay for is
    /// skipped like one at capacity.
    fn next_candidate(&self, id: &str, profile: &Profile, why: &str) -> Result<Option<Sandbox>> {
        transact(self.db.as_ref(), |tx| {
            let live = Self::live_per_host(tx, Some(id))?;
            let mut rec = require(tx, id)?;
            if rec.state() != State::Provisioning {
                return Ok(None);
            }
            if let Some(b) = &self.billing {
                b.void_in(tx, id)?;
            }
            if let Some(c) = rec.route.chosen.take() {
                rec.route.skipped.push(Skipped {
                    route: c.route,
                    extension: c.extension,
                    host: c.host,
                    reason: format!("tried and failed: {why}"),
                });
            }
            while !rec.route.remaining.is_empty() {
                let next: Candidate = rec.route.remaining.remove(0);
                let uses_host = self
                    .registry
                    .get(&next.extension)
                    .is_some_and(|e| e.capabilities().uses_host);
                if uses_host {
                    let cap = self.hosts.get(&next.host).and_then(|h| h.capacity);
                    let n = live.get(&next.host).copied().unwrap_or(0);
                    if cap.is_some_and(|cap| n >= cap) {
                        rec.route.skipped.push(Skipped {
                            route: next.route,
                            extension: next.extension.clone(),
                            host: next.host.clone(),
                            reason: format!("at capacity ({n}/{} live)", cap.unwrap_or(0)),
                        });
                        continue;
                    }
                }
                let _ = profile;
                if let Some(b) = self
                    .billing
                    .as_ref()
                    .filter(|_| next.price_per_hour > crate::credits::Micros::ZERO)
                {
                    let mut priced = rec.clone();
                    priced.extension = next.extension.clone();
                    priced.host = next.host.clone();
                    let req =
                        crate::billing::HoldRequest::for_sandbox(&priced, next.price_per_hour);
                    match b.hold_in(tx, &req) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::InsufficientCredits => {
                            rec.route.skipped.push(Skipped {
                                route: next.route,
                                extension: next.extension.clone(),
                                host: next.host.clone(),
                                reason: e.message().to_string(),
                            });
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                rec.extension = next.extension.clone();
                rec.host = next.host.clone();
                rec.backend = serde_json::Value::Null;
                rec.route.chosen = Some(next);
                rec.updated_at = self.now();
                tx.update_sandbox(&rec)?;
                return Ok(Some(rec));
            }
            tx.update_sandbox(&rec)?;
            Ok(None)
        })
    }

    fn mark_failed(&self, id: &str, why: &str) -> Result<Sandbox> {
        transact(self.db.as_ref(), |tx| {
            let mut rec = require(tx, id)?;
            if rec.state() == State::Provisioning {
                // A failed create pays nothing: a hold its last route left
                // open (it failed before provisioning) ends with it.
                if let Some(b) = &self.billing {
                    b.void_in(tx, id)?;
                }
                rec.cost = self.cost_in(tx, id)?;
                let ev = Event::ProvisionFailed(why.to_string());
                transition(tx, &mut rec, &ev, self.now(), self.emit_events)?;
            }
            Ok(rec)
        })
    }

    /// Wait (polling the store) until a sandbox another process is
    /// provisioning leaves `provisioning`.
    async fn wait_settled(&self, id: &str) -> Result<Sandbox> {
        let sbx = self.get(id)?;
        let profile = self.catalog.require(&sbx.profile)?;
        let until = tokio::time::Instant::now() + profile.ready_timeout + Duration::from_secs(5);
        let mut pause = Duration::from_millis(5);
        loop {
            let s = self.get(id)?;
            if s.state() != State::Provisioning {
                return Ok(s);
            }
            if tokio::time::Instant::now() >= until {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("sandbox {id} is still provisioning (by another request)"),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Tear a sandbox down and mark it destroyed with `reason`. Destroying a
    /// destroyed sandbox returns it unchanged.
    pub async fn destroy(&self, id: &str, reason: EndReason) -> Result<Sandbox> {
        Ok(self.destroy_linked(id, reason, None, None).await?.0)
    }

    /// [`Manager::destroy`], only if the record is still `seen` (what the
    /// reaper found): when another reaper (another replica) has moved it on
    /// meanwhile, nothing is done and `None` is returned, so no sandbox is
    /// torn down twice.
    pub async fn destroy_if(
        &self,
        id: &str,
        reason: EndReason,
        seen: State,
    ) -> Result<Option<Sandbox>> {
        let (ended, acted) = self.destroy_linked(id, reason, None, Some(seen)).await?;
        Ok(acted.then_some(ended))
    }

    async fn destroy_linked(
        &self,
        id: &str,
        reason: EndReason,
        recreated_as: Option<&str>,
        only_from: Option<State>,
    ) -> Result<(Sandbox, bool)> {
        let started = std::time::Instant::now();
        let (sbx, go) = transact(self.db.as_ref(), |tx| {
            let mut rec = require(tx, id)?;
            if rec.state() == State::Destroyed {
                return Ok((rec, false));
            }
            if only_from.is_some_and(|s| s != rec.state()) {
                return Ok((rec, false));
            }
            if let Some(n) = recreated_as {
                rec.recreated_as = Some(n.to_string());
            }
            // A create that never became ready (its process died, or it is
            // destroyed while provisioning) pays nothing: its hold is voided
            // with this transition, so the teardown has nothing to settle.
            if rec.state() == State::Provisioning {
                if let Some(b) = &self.billing {
                    b.void_in(tx, id)?;
                }
            }
            let ev = Event::Destroy(reason);
            transition(tx, &mut rec, &ev, self.now(), self.emit_events)?;
            Ok((rec, true))
        })?;
        if !go {
            return Ok((sbx, false));
        }
        self.say(&format!("tearing down {id} on {}", sbx.host));
        let ext = self.registry.get(&sbx.extension).ok_or_else(|| {
            Error::unsupported(format!(
                "sandbox {id} was made by {}, which this build does not have; it stays `destroying`",
                sbx.extension
            ))
        })?;
        let profile = self.catalog.get(&sbx.profile).cloned();
        let transport = self
            .transport_for(&sbx.host, ext.capabilities().uses_host)
            .await
            .map_err(|e| e.context(format!("tearing down {id}")))?;
        let ctx = self.ctx_for(&sbx, profile.as_ref(), transport);
        ext.teardown(&ctx, &sbx.backend).await.map_err(|e| {
            e.context(format!("tearing down {id} on {}", sbx.host))
                .with_hint(format!(
                    "it stays `destroying`; run `sandboxer destroy {id}` again"
                ))
        })?;
        let ended = transact(self.db.as_ref(), |tx| {
            let mut rec = require(tx, id)?;
            if rec.state() == State::Destroying {
                // What it ran is paid with its move to `destroyed`, in one
                // transaction.
                let at = self.now();
                if let Some(b) = &self.billing {
                    // The seconds since its last resume (at the running
                    // price), or of the pause it ended in (at the paused
                    // price): earlier runs were paid at their pauses.
                    let since = rec.paused_at.unwrap_or(rec.running_since());
                    let seconds = crate::billing::seconds_between(since, at);
                    b.settle_in(tx, id, seconds, at)?;
                }
                rec.cost = self.cost_in(tx, id)?;
                transition(tx, &mut rec, &Event::TornDown, at, self.emit_events)?;
            }
            Ok(rec)
        })?;
        if let Some(o) = &self.observer {
            if ended.state() == State::Destroyed {
                o.destroyed(&ended, started.elapsed());
            }
        }
        // The uploads it used go once nothing else needs them; the reaper
        // retries any that could not be removed now.
        if let Err(e) = self.release_uploads(&ended) {
            tracing::warn!("{id} ended; its uploads stay until the next reaper pass: {e}");
        }
        Ok((ended, true))
    }

    /// A new sandbox with the same profile, inputs, host and actor; the old
    /// one ends `destroyed` with reason `recreated`, and the two are linked.
    pub async fn recreate(&self, id: &str, wait: bool) -> Result<Sandbox> {
        let old = self.get(id)?;
        if old.state() == State::Destroyed || old.state() == State::Destroying {
            return Err(Error::conflict(format!(
                "sandbox {id} is {}; recreate works on live or failed sandboxes",
                old.state()
            ))
            .with_hint(format!(
                "`sandboxer create --profile {}` makes a new one",
                old.profile
            )));
        }
        let uses_host = self
            .registry
            .get(&old.extension)
            .is_none_or(|e| e.capabilities().uses_host);
        let req = CreateRequest {
            profile: old.profile.clone(),
            inputs: old.inputs.clone(),
            ttl: Some(Duration::from_secs(old.ttl_seconds)),
            constraints: Constraints {
                host: uses_host.then(|| old.host.clone()),
                only: vec![old.extension.clone()],
                ..Constraints::default()
            },
            actor: Some(old.actor.clone()),
            idempotency_key: None,
            recreated_from: Some(old.id.clone()),
            metadata: old.metadata.clone(),
            // A recreate starts fresh from the profile.
            from_snapshot: None,
        };
        let new = self.create(req, wait).await?;
        self.destroy_linked(id, EndReason::Recreated, Some(&new.id), None)
            .await?;
        self.get(&new.id)
    }

    /// E2B's `set_timeout`: the sandbox ends `from_now` from now (whole
    /// seconds, rounded up), within its profile's `max_ttl` counted from
    /// its creation. Later than today's deadline is [`Manager::extend_ttl`]
    /// (a metered sandbox holds the extra time first); earlier moves the
    /// deadline in (the hold stays; a sandbox is charged for the time it
    /// ran), and the reaper ends it then.
    pub async fn set_timeout(&self, id: &str, from_now: Duration) -> Result<Sandbox> {
        let sbx = self.get(id)?;
        if !matches!(sbx.state(), State::Ready | State::Provisioning) {
            return Err(Error::conflict(format!(
                "sandbox {id} is {}; only live sandboxes have a timeout",
                sbx.state()
            )));
        }
        let ran = ((self.now() - sbx.created_at).num_milliseconds().max(0) as u64)
            .saturating_sub(sbx.paused_seconds * 1000);
        let want = Duration::from_millis(ran) + from_now;
        let want_secs = want.as_secs() + u64::from(want.subsec_nanos() > 0);
        let profile = self.catalog.require(&sbx.profile)?;
        if Duration::from_secs(want_secs) > profile.max_ttl {
            let left = profile.max_ttl.saturating_sub(Duration::from_millis(ran));
            return Err(Error::invalid_input(format!(
                "a timeout of {} from now makes the TTL of {id} {}, above the maximum {} of {}",
                crate::duration::format_duration(from_now),
                crate::duration::format_duration(Duration::from_secs(want_secs)),
                crate::duration::format_duration(profile.max_ttl),
                profile.id
            ))
            .with_hint(format!("at most {}s from now", left.as_secs())));
        }
        match want_secs.cmp(&sbx.ttl_seconds) {
            std::cmp::Ordering::Greater => {
                self.extend_ttl(id, Duration::from_secs(want_secs - sbx.ttl_seconds))
                    .await
            }
            std::cmp::Ordering::Equal => Ok(sbx),
            std::cmp::Ordering::Less => transact(self.db.as_ref(), |tx| {
                let mut rec = require(tx, id)?;
                if !matches!(rec.state(), State::Ready | State::Provisioning) {
                    return Err(Error::conflict(format!("sandbox {id} is {}", rec.state())));
                }
                rec.ttl_seconds = want_secs;
                rec.expires_at = Some(
                    rec.created_at
                        + chrono::Duration::seconds((want_secs + rec.paused_seconds) as i64),
                );
                rec.updated_at = self.now();
                tx.update_sandbox(&rec)?;
                Ok(rec)
            }),
        }
    }

    /// Move the expiry of a live sandbox `by` later, within the profile's
    /// maximum TTL (counted from creation).
    pub async fn extend_ttl(&self, id: &str, by: Duration) -> Result<Sandbox> {
        let sbx = self.get(id)?;
        if !matches!(sbx.state(), State::Ready | State::Provisioning) {
            return Err(Error::conflict(format!(
                "sandbox {id} is {}; only live sandboxes can be extended",
                sbx.state()
            )));
        }
        let profile = self.catalog.require(&sbx.profile)?;
        let new_ttl = Duration::from_secs(sbx.ttl_seconds) + by;
        if by.is_zero() {
            return Err(Error::invalid_input(
                "extend by a positive duration, e.g. `30m`",
            ));
        }
        if new_ttl > profile.max_ttl {
            let room = profile
                .max_ttl
                .saturating_sub(Duration::from_secs(sbx.ttl_seconds));
            return Err(Error::invalid_input(format!(
                "extending {id} by {} makes its TTL {}, above the maximum {} of {}",
                crate::duration::format_duration(by),
                crate::duration::format_duration(new_ttl),
                crate::duration::format_duration(profile.max_ttl),
                profile.id
            ))
            .with_hint(format!(
                "it can be extended by at most {}",
                crate::duration::format_duration(room)
            )));
        }
        // Paused time does not count against the TTL.
        let new_expiry: DateTime<Utc> = sbx.created_at
            + chrono::Duration::seconds((new_ttl.as_secs() + sbx.paused_seconds) as i64);
        if let Some(b) = &self.billing {
            // Metered sandboxes hold the extra time first (or are refused).
            b.extend(id, new_expiry)?;
        }
        if let Some(ext) = self.registry.get(&sbx.extension) {
            if ext.capabilities().extend {
                let transport = self
                    .transport_for(&sbx.host, ext.capabilities().uses_host)
                    .await?;
                let ctx = self.ctx_for(&sbx, Some(profile), transport);
                ext.extend(&ctx, &sbx.backend, new_expiry).await?;
            }
        }
        transact(self.db.as_ref(), |tx| {
            let mut rec = require(tx, id)?;
            if !matches!(rec.state(), State::Ready | State::Provisioning) {
                return Err(Error::conflict(format!("sandbox {id} is {}", rec.state())));
            }
            rec.ttl_seconds = new_ttl.as_secs();
            rec.expires_at = Some(new_expiry);
            rec.updated_at = self.now();
            rec.cost = self.cost_in(tx, id)?;
            tx.update_sandbox(&rec)?;
            Ok(rec)
        })
    }
}

/// How many records `list` reads in one transaction.
const LIST_PAGE: usize = 1000;

/// The outcome of step one of create.
#[derive(Debug, Clone)]
pub enum Started {
    /// A new record in `provisioning`.
    New(Sandbox),
    /// The idempotency key named an existing sandbox.
    Existing(Sandbox),
}

enum Attempt {
    /// The record left `provisioning` under us (destroyed meanwhile).
    Gone(Box<Sandbox>),
    Failed {
        step: &'static str,
        error: Error,
    },
}

fn model_user() -> String {
    let u = crate::paths::user_name();
    if Actor::new(model::ActorKind::Adm, u.clone()).is_ok() {
        u
    } else {
        "operator".into()
    }
}

/// The error of a create whose every candidate failed. When every attempt
/// failed to connect, no place could take it (exit 9, or 11 when every host
/// refused on credentials), and the message lists every skipped candidate;
/// a bad request keeps its own kind; otherwise provisioning failed.
fn final_error(
    failed: &Sandbox,
    attempts: &[(&'static str, ErrorKind, bool)],
    last: &Error,
    why: &str,
) -> Error {
    // Every candidate failed for want of a place: its host did not answer
    // (nothing was made there), or its provider was full or did not answer.
    // A host lost in the middle of provisioning is a provisioning failure.
    let all_connect = !attempts.is_empty()
        && attempts.iter().all(|(step, kind, uses_host)| {
            *step == "connect"
                || matches!(kind, ErrorKind::NoPlacement)
                || (!uses_host && matches!(kind, ErrorKind::Unreachable))
        });
    let kind = match last.kind() {
        ErrorKind::InsufficientCredits => ErrorKind::InsufficientCredits,
        ErrorKind::InvalidInput | ErrorKind::InvalidConfig => last.kind(),
        _ if all_connect
            && attempts
                .iter()
                .all(|(_, k, _)| matches!(k, ErrorKind::Unauthorized)) =>
        {
            ErrorKind::Unauthorized
        }
        _ if all_connect => ErrorKind::NoPlacement,
        _ => ErrorKind::ProvisionFailed,
    };
    let message = if all_connect {
        let mut reasons: Vec<String> = failed
            .route
            .skipped
            .iter()
            .map(|s| format!("  {} on {}: {}", s.extension, s.host, s.reason))
            .collect();
        reasons.push(format!("  {why}"));
        format!(
            "sandbox {} failed: no place could take {} now:\n{}",
            failed.id,
            failed.profile,
            reasons.join("\n")
        )
    } else {
        format!("sandbox {} failed: {why}", failed.id)
    };
    Error::new(kind, message).with_hint(match last.hint() {
        Some(h) => h.to_string(),
        None => format!("`sandboxer get {}` shows the route trace", failed.id),
    })
}

/// The error when no candidate can take the sandbox.
fn no_placement(profile: &Profile, d: &Decision) -> Error {
    let missing: BTreeSet<&str> = d
        .rejected
        .iter()
        .filter(|s| s.reason.contains("is not in this build"))
        .map(|s| s.extension.as_str())
        .collect();
    let reasons: Vec<String> = d
        .rejected
        .iter()
        .map(|s| format!("  {} on {}: {}", s.extension, s.host, s.reason))
        .collect();
    if !missing.is_empty()
        && missing.len() == profile.routes.len().min(missing.len())
        && d.rejected
            .iter()
            .all(|s| s.reason.contains("is not in this build"))
    {
        let names: Vec<&str> = missing.into_iter().collect();
        return Error::unsupported(format!(
            "{} needs extension {}, which this build does not have",
            profile.id,
            names.join(" or ")
        ))
        .with_hint("`sandboxer profiles list` shows which profiles this build can create");
    }
    let kind = if d
        .rejected
        .iter()
        .all(|s| s.reason.starts_with("insufficient credits"))
    {
        ErrorKind::InsufficientCredits
    } else {
        ErrorKind::NoPlacement
    };
    Error::new(
        kind,
        format!(
            "no place can take {} now:\n{}",
            profile.id,
            reasons.join("\n")
        ),
    )
    .with_hint(format!(
        "`sandboxer route explain --profile {}` shows every candidate",
        profile.id
    ))
}

/// Where an actor's idempotency key is kept: keys belong to the actor that
/// used them, so the same key from two actors names two requests. An actor
/// is written without spaces, so `"{actor} {key}"` is unambiguous.
pub fn idempotency_slot(actor: &Actor, key: &str) -> String {
    format!("{actor} {key}")
}

/// A stable hash of the normalized request, for idempotency keys.
fn request_hash(
    req: &CreateRequest,
    inputs: &BTreeMap<String, String>,
    ttl: Duration,
    actor: &Actor,
) -> String {
    let mut canonical = serde_json::json!({
        "profile": req.profile,
        "inputs": inputs,
        "ttl": ttl.as_secs(),
        "constraints": req.constraints,
        "actor": actor.to_string(),
    });
    // Only when there is some, so the keys of creates without metadata
    // hash as they always did.
    if !req.metadata.is_empty() {
        canonical["metadata"] = serde_json::json!(req.metadata);
    }
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    hex::encode(&digest[..16])
}
