//! The sandbox record and the small value types around it. Pure data; the
//! field names of [`Sandbox`] are a contract with consumers (see the brief's
//! table) and keep their names and meaning.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::credits::Micros;
use crate::lifecycle::{Lifecycle, State};
use crate::{Error, Result};

thread_local! {
    static PUBLIC_VIEW: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

pub(crate) fn hide_backend(v: &serde_json::Value) -> bool {
    v.is_null() || PUBLIC_VIEW.with(|p| p.get())
}

/// Run `f` (a serialization) with records in their public form: the
/// extension-private `backend` field left out. This is what consumers read
/// (`--json`, the HTTP API); the store keeps the field.
pub fn public_view<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            PUBLIC_VIEW.with(|p| p.set(self.0));
        }
    }
    let _reset = Reset(PUBLIC_VIEW.with(|p| p.replace(true)));
    f()
}

/// Now, truncated to milliseconds so records print `...T14:07:38.123Z`
/// (the [`crate::clock::SystemClock`]).
pub fn now() -> DateTime<Utc> {
    crate::clock::Clock::now(&crate::clock::SystemClock)
}

/// Who asked: `adm:NAME` (operator), `agt:NAME` (agent), `atm:NAME`
/// (automation).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Actor {
    pub kind: ActorKind,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    Adm,
    Agt,
    Atm,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Adm => "adm",
            ActorKind::Agt => "agt",
            ActorKind::Atm => "atm",
        }
    }
}

impl Actor {
    pub fn new(kind: ActorKind, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        Actor::from_str(&format!("{}:{name}", kind.as_str()))
    }

    pub fn is_admin(&self) -> bool {
        self.kind == ActorKind::Adm
    }
}

impl Actor {
    /// Check `s` as an actor (`adm:NAME`, ...) without building one: its
    /// kind and name, or why not.
    pub fn check(s: &str) -> std::result::Result<(ActorKind, &str), String> {
        let (kind, name) = s.split_once(':').ok_or("missing `:`")?;
        let kind = match kind {
            "adm" => ActorKind::Adm,
            "agt" => ActorKind::Agt,
            "atm" => ActorKind::Atm,
            other => return Err(format!("unknown kind `{other}`")),
        };
        if name.is_empty() || name.len() > 64 {
            return Err("NAME must be 1 to 64 characters".into());
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
        {
            return Err("NAME has a character outside letters, digits, `.`, `_`, `-`, `@`".into());
        }
        Ok((kind, name))
    }

    /// Whether `s` is this actor as written (`adm:NAME`).
    pub fn is_written_as(&self, s: &str) -> bool {
        s.split_once(':')
            .is_some_and(|(k, n)| k == self.kind.as_str() && n == self.name)
    }
}

impl FromStr for Actor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (kind, name) = Actor::check(s).map_err(|why| {
            Error::invalid_input(format!("bad actor `{s}`: {why}")).with_hint(
                "an actor is `adm:NAME` (operator), `agt:NAME` (agent) or `atm:NAME` (automation); \
                 NAME is 1-64 of letters, digits, `.`, `_`, `-`, `@`",
            )
        })?;
        Ok(Actor {
            kind,
            name: name.to_string(),
        })
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.name)
    }
}

impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl schemars::JsonSchema for Actor {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Actor".into()
    }

    /// The written form, as [`Actor::check`] accepts it.
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "`adm:NAME` (operator), `agt:NAME` (agent) or `atm:NAME` (automation); NAME is 1-64 of letters, digits, `.`, `_`, `-`, `@`.",
            "pattern": "^(adm|agt|atm):[A-Za-z0-9._@-]{1,64}$",
            "example": "agt:harness",
        })
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Actor::from_str(&s).map_err(serde::de::Error::custom)
    }
}

/// A fresh sandbox id: `sbx-` and 10 characters of lowercase base32 (50 random
/// bits). The store re-draws on the rare collision.
pub fn new_sandbox_id() -> String {
    format!("sbx-{}", random_tail())
}

/// 10 characters of lowercase base32 (50 random bits): the tail of a
/// sandbox or snapshot id.
pub(crate) fn random_tail() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::thread_rng();
    (0..10)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Whether `s` has the shape of a sandbox id (used to keep ids out of shell
/// commands and paths unless they are plain).
pub fn is_sandbox_id(s: &str) -> bool {
    s.strip_prefix("sbx-").is_some_and(|t| {
        !t.is_empty()
            && t.len() <= 32
            && t.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    })
}

/// One published port of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Port {
    /// The port inside the sandbox (container or VM side).
    pub target: u16,
    /// The port a consumer connects to on `Reachability::address`.
    pub published: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
}

fn tcp() -> String {
    "tcp".into()
}

/// An SSH login a consumer can use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
}

/// What a consumer needs to reach a ready sandbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Reachability {
    /// The address to connect to (an IP or DNS name).
    pub address: String,
    /// Published ports by service name.
    #[serde(default)]
    pub ports: BTreeMap<String, Vec<Port>>,
    /// URLs by name.
    #[serde(default)]
    pub urls: BTreeMap<String, String>,
    /// An SSH login into the sandbox, where it has one.
    #[serde(default)]
    pub ssh: Option<SshTarget>,
    /// Anything else an extension reports (agent pid, venue path, provider id).
    #[serde(default)]
    pub details: BTreeMap<String, serde_json::Value>,
}

/// A placement candidate: one route of the profile on one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Candidate {
    /// Index of the route in the profile.
    pub route: usize,
    pub extension: String,
    pub host: String,
    /// Price per hour in credits (decimal string).
    pub price_per_hour: Micros,
}

/// A candidate that was not used, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Skipped {
    pub route: usize,
    pub extension: String,
    pub host: String,
    pub reason: String,
}

/// The placement decision: the policy, the chosen candidate and every skipped
/// one with its reason (including candidates tried and failed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RouteTrace {
    pub policy: String,
    pub chosen: Option<Candidate>,
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// Candidates not tried yet, in order (the fallbacks while provisioning).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remaining: Vec<Candidate>,
}

/// Cost of a metered sandbox, in credits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Cost {
    pub price_per_hour: Micros,
    pub held: Micros,
    /// Paid at its pauses and resumes so far (the settle at its end adds
    /// the rest).
    #[serde(default, skip_serializing_if = "Micros::is_zero")]
    pub spent: Micros,
    pub settled: Option<Micros>,
}

/// The sandbox record. See the module docs: the field names are a contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Sandbox {
    #[schemars(example = &"sbx-q3v7k2m4xa")]
    pub id: String,
    pub profile: String,
    pub profile_version: u32,
    pub extension: String,
    pub host: String,
    /// `state` and `reason`, changed only through [`Sandbox::apply`].
    #[serde(flatten)]
    lifecycle: Lifecycle,
    pub actor: Actor,
    pub created_at: DateTime<Utc>,
    pub ready_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    pub reachability: Option<Reachability>,
    #[serde(default)]
    pub route: RouteTrace,
    pub recreated_from: Option<String>,
    pub recreated_as: Option<String>,
    pub cost: Option<Cost>,
    /// The TTL asked for at create (or moved by extend-ttl), in seconds.
    pub ttl_seconds: u64,
    /// The idempotency key the create carried, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The snapshot (`snap-...`) it was created from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<String>,
    /// While `paused` (or `resuming`): when it was paused. Its
    /// `expires_at` is then the end of the paused retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<DateTime<Utc>>,
    /// While paused: the running time it had left, given back on resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_remaining_seconds: Option<u64>,
    /// When it last resumed (running time, and its metering, count from
    /// here; from `created_at` before any pause).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<DateTime<Utc>>,
    /// Seconds spent paused, over all its pauses.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub paused_seconds: u64,
    /// Key-value labels the creator attached (E2B's `metadata`); listed
    /// and filtered on by the E2B front door.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Host telemetry reported by the sandbox (canary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<serde_json::Value>,
    /// Extension-private state needed for teardown (opaque to everyone else;
    /// left out of the public view, see [`public_view`]).
    #[serde(default, skip_serializing_if = "hide_backend")]
    #[schemars(skip)]
    pub backend: serde_json::Value,
    /// When the record last changed.
    pub updated_at: DateTime<Utc>,
    /// The process provisioning it (so the reaper can tell a create that
    /// died from one still running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<Worker>,
    /// How many lifecycle events this sandbox has produced (numbers the
    /// next event id).
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(skip)]
    pub event_seq: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// A process on a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Worker {
    pub pid: u32,
    /// The machine's boot id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
}

/// Everything needed to start a record in `provisioning`.
#[derive(Debug, Clone)]
pub struct NewSandbox {
    pub id: String,
    pub profile: String,
    pub profile_version: u32,
    pub extension: String,
    pub host: String,
    pub actor: Actor,
    pub inputs: BTreeMap<String, String>,
    pub route: RouteTrace,
    pub ttl_seconds: u64,
    pub idempotency_key: Option<String>,
    pub recreated_from: Option<String>,
    pub cost: Option<Cost>,
    pub created_at: DateTime<Utc>,
}

impl Sandbox {
    /// A new record in `provisioning`; its expiry is `created_at + ttl`.
    pub fn new(n: NewSandbox) -> Self {
        let expires_at = n.created_at + chrono::Duration::seconds(n.ttl_seconds as i64);
        Sandbox {
            id: n.id,
            profile: n.profile,
            profile_version: n.profile_version,
            extension: n.extension,
            host: n.host,
            lifecycle: Lifecycle::Provisioning,
            actor: n.actor,
            created_at: n.created_at,
            ready_at: None,
            expires_at: Some(expires_at),
            ended_at: None,
            inputs: n.inputs,
            reachability: None,
            route: n.route,
            recreated_from: n.recreated_from,
            recreated_as: None,
            cost: n.cost,
            ttl_seconds: n.ttl_seconds,
            idempotency_key: n.idempotency_key,
            from_snapshot: None,
            paused_at: None,
            ttl_remaining_seconds: None,
            resumed_at: None,
            paused_seconds: 0,
            metadata: BTreeMap::new(),
            telemetry: None,
            backend: serde_json::Value::Null,
            updated_at: n.created_at,
            worker: None,
            event_seq: 0,
        }
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    pub fn state(&self) -> State {
        self.lifecycle.state()
    }

    /// `destroyed`, `expired`, `failed: ...` and so on; `None` while live.
    pub fn reason(&self) -> Option<String> {
        self.lifecycle.reason()
    }

    /// Apply a lifecycle event through the state machine; an illegal
    /// transition leaves the record unchanged and is a `Conflict`.
    pub fn apply(
        &mut self,
        event: &crate::lifecycle::Event,
        at: DateTime<Utc>,
    ) -> Result<Vec<crate::lifecycle::Action>> {
        let (next, actions) = crate::lifecycle::step(&self.lifecycle, event)
            .map_err(|e| Error::conflict(format!("sandbox {}: {e}", self.id)))?;
        match next.state() {
            State::Ready if self.ready_at.is_none() => self.ready_at = Some(at),
            State::Destroyed | State::Failed => self.ended_at = Some(at),
            _ => {}
        }
        self.lifecycle = next;
        self.updated_at = at;
        Ok(actions)
    }

    /// Whether the record still holds (or may hold) resources.
    pub fn is_live(&self) -> bool {
        self.lifecycle.is_live()
    }

    /// Provisioning or ready with its deadline at or before `now`: it has
    /// expired, and the next reaper pass ends it `expired`. Shown as such
    /// (`"expired": true` in the JSON views, "expired" in human output)
    /// without a write per read.
    ///
    /// A paused sandbox's deadline is the end of its paused retention.
    pub fn overdue(&self, now: DateTime<Utc>) -> bool {
        matches!(
            self.state(),
            State::Provisioning | State::Ready | State::Paused
        ) && self.expires_at.is_some_and(|t| t <= now)
    }

    /// Where its current run's metering starts: its last resume, or its
    /// creation.
    pub fn running_since(&self) -> DateTime<Utc> {
        self.resumed_at.unwrap_or(self.created_at)
    }

    /// Seconds it has run by `now` (its whole life less its pauses).
    pub fn ran_seconds(&self, now: DateTime<Utc>) -> u64 {
        let end = self.paused_at.unwrap_or(now);
        crate::billing::seconds_between(self.created_at, end).saturating_sub(self.paused_seconds)
    }
}
