//! The JSON shapes both the API and the CLI's `--json` print: the sandbox
//! record without its extension-private `backend`, profile rows, host rows.

use std::collections::BTreeMap;

use sandboxer_core::extension::Registry;
use sandboxer_core::hosts::HostKind;
use sandboxer_core::manager::Manager;
use sandboxer_core::model::Sandbox;
use sandboxer_core::profile::Profile;
use serde::Serialize;

/// The record as consumers read it (`backend` is extension-private), in the
/// record's own field order (`id` first), as `list --json` prints it too.
#[derive(Clone, Copy)]
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
#[derive(Debug, Clone, Serialize)]
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

/// One line of `hosts list`.
#[derive(Debug, Clone, Serialize)]
pub struct HostRow {
    pub name: String,
    pub kind: &'static str,
    pub address: String,
    pub port: Option<u16>,
    pub user: Option<String>,
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
                kind: if h.is_local() { "local" } else { "ssh" },
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
