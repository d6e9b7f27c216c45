//! The JSON shapes both the API and the CLI's `--json` print: the sandbox
//! record without its extension-private `backend`, profile rows, host rows.

use std::collections::BTreeMap;

use sandboxer_core::extension::Registry;
use sandboxer_core::hosts::HostKind;
use sandboxer_core::manager::Manager;
use sandboxer_core::model::{Actor, Sandbox};
use sandboxer_core::profile::Profile;
use sandboxer_core::reaper::ReapReport;
use sandboxer_credits::{Account, CheckReport, Entry, UsageRow};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;

/// The record as consumers read it (`backend` is extension-private), in the
/// record's own field order (`id` first), as `list --json` prints it too.
#[derive(Debug, Clone, Copy)]
pub struct Public<'a>(pub &'a Sandbox);

impl Serialize for Public<'_> {
    /// A record past its deadline gets `"expired": true` (derived, never
    /// stored; see `Sandbox::overdue`).
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        if self.0.overdue(sandboxer_core::model::now()) {
            let mut v = sandboxer_core::model::public_view(|| serde_json::to_value(self.0))
                .map_err(serde::ser::Error::custom)?;
            v["expired"] = serde_json::Value::Bool(true);
            return v.serialize(ser);
        }
        sandboxer_core::model::public_view(|| self.0.serialize(ser))
    }
}

/// The record's schema, with the derived `expired`.
impl JsonSchema for Public<'_> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Sandbox".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = Sandbox::json_schema(generator);
        schema.insert(
            "description".into(),
            "The sandbox record, exactly as `sandboxer get ID --json` prints it. Field names are a \
             contract; more fields may be added."
                .into(),
        );
        if let Some(props) = schema
            .get_mut("properties")
            .and_then(serde_json::Value::as_object_mut)
        {
            props.insert(
                "expired".into(),
                serde_json::json!({
                    "type": "boolean",
                    "const": true,
                    "description": "Present on a provisioning or ready sandbox past its deadline: the next reaper pass ends it `expired` (derived when shown, never stored)",
                }),
            );
        }
        schema
    }
}

/// A snapshot record as consumers read it (`backend` left out).
pub fn public_snapshot(s: &sandboxer_core::snapshot::Snapshot) -> serde_json::Value {
    sandboxer_core::model::public_view(|| serde_json::to_value(s)).expect("a snapshot serializes")
}

/// Write records as a pretty JSON array in their public form, straight to
/// `w` (no intermediate values: `list --json` of a large store).
pub fn write_records<W: std::io::Write>(w: W, list: &[Sandbox]) -> std::io::Result<()> {
    let public: Vec<Public<'_>> = list.iter().map(Public).collect();
    serde_json::to_writer_pretty(w, &public).map_err(std::io::Error::other)
}

/// One line of `profiles list`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProfileRow {
    pub id: String,
    pub version: u32,
    pub extensions: Vec<String>,
    /// At least one extension the profile names is in this build.
    pub available: bool,
    pub missing_extensions: Vec<String>,
    pub source: String,
    pub description: String,
}

pub fn profile_rows(list: &[&Profile], reg: &Registry) -> Vec<ProfileRow> {
    list.iter()
        .map(|p| {
            let exts: Vec<String> = p.routes.iter().map(|r| r.extension.clone()).collect();
            let missing: Vec<String> = exts
                .iter()
                .filter(|e| reg.get(e).is_none())
                .cloned()
                .collect();
            ProfileRow {
                id: p.id.clone(),
                version: p.version,
                available: missing.len() < exts.len(),
                missing_extensions: missing,
                extensions: exts,
                source: p.source.to_string(),
                description: p.description.clone(),
            }
        })
        .collect()
}

/// How a host is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostRowKind {
    Local,
    Ssh,
}

/// One line of `hosts list`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HostRow {
    pub name: String,
    pub kind: HostRowKind,
    pub address: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    /// Only for `adm` tokens (null otherwise).
    pub identity_file: Option<String>,
    pub capacity: Option<u32>,
    pub live: u32,
    pub labels: BTreeMap<String, String>,
    pub default: bool,
    pub reachable: bool,
    pub error: Option<String>,
}

/// Every host with a connection attempt (in parallel).
pub async fn probe_hosts(m: &Manager) -> Vec<HostRow> {
    let live = sandboxer_core::store::db::read(m.db().as_ref(), |tx| tx.live_per_host())
        .unwrap_or_default();
    let hosts = m.hosts().all();
    let mut set = tokio::task::JoinSet::new();
    for (i, h) in hosts.iter().enumerate() {
        let c = m.connector().clone();
        let h = h.clone();
        set.spawn(async move { (i, c.connect(&h).await.map(|_| ())) });
    }
    let mut results: Vec<Option<sandboxer_core::Result<()>>> =
        (0..hosts.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, r)) = joined {
            results[i] = Some(r);
        }
    }
    hosts
        .into_iter()
        .zip(results)
        .map(|(h, r)| {
            let r =
                r.unwrap_or_else(|| Err(sandboxer_core::Error::internal("probe did not finish")));
            let (port, user, key) = match &h.kind {
                HostKind::Local => (None, None, None),
                HostKind::Ssh {
                    port,
                    user,
                    identity_file,
                    ..
                } => (
                    Some(*port),
                    Some(user.clone()),
                    Some(identity_file.display().to_string()),
                ),
            };
            HostRow {
                live: live.get(&h.name).copied().unwrap_or(0),
                default: h.name == m.hosts().default,
                kind: if h.is_local() {
                    HostRowKind::Local
                } else {
                    HostRowKind::Ssh
                },
                name: h.name,
                address: h.address,
                port,
                user,
                identity_file: key,
                capacity: h.capacity,
                labels: h.labels,
                reachable: r.is_ok(),
                error: r.err().map(|e| e.to_string()),
            }
        })
        .collect()
}

/// `GET /health`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Health {
    pub status: HealthStatus,
    /// The server's version.
    pub version: &'static str,
}

/// A server that answers is up.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
}

/// `GET /v1/whoami`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "WhoAmI")]
pub struct WhoAmI<'a> {
    pub actor: &'a Actor,
    /// The token's name (never its secret).
    pub token: &'a str,
}

/// An actor's balance.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Balance<'a> {
    pub actor: &'a Actor,
    pub account: Account,
}

/// What a grant did.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GrantResult<'a> {
    /// The grant as applied (for a duplicate, the original).
    pub entry: Entry,
    /// The key was applied before; nothing changed.
    pub duplicate: bool,
    pub actor: &'a Actor,
    pub account: Account,
}

/// An actor's usage, one row per metered sandbox.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Usage<'a> {
    pub actor: &'a Actor,
    pub usage: Vec<UsageRow>,
}

/// What `reap-stale` did, and whether all of it worked.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "ReapReport")]
pub struct ReapAnswer {
    #[serde(flatten)]
    pub report: ReapReport,
    /// Every item was reaped.
    pub ok: bool,
}

/// What `credits check` found, and whether every invariant holds.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "CheckReport")]
pub struct CheckAnswer {
    #[serde(flatten)]
    pub report: CheckReport,
    /// No invariant is broken.
    pub ok: bool,
}
