//! Human output: summaries and tables. `--json` output is the serde form of
//! the same values (records without the extension-private `backend`).

use std::fmt::Write as _;

use chrono::Utc;
pub use sandboxer_api::views::{
    probe_hosts, profile_rows, public_snapshot, HostRow, ProfileRow, Public,
};
use sandboxer_core::extension::Registry;
use sandboxer_core::hosts::Hosts;
use sandboxer_core::lifecycle::State;
use sandboxer_core::model::Sandbox;
use sandboxer_core::profile::Profile;
use sandboxer_core::routing::Decision;

fn paint(s: &str, state: State, color: bool) -> String {
    if !color {
        return s.to_string();
    }
    let c = match state {
        State::Ready => "32",
        State::Failed => "31",
        State::Provisioning | State::Destroying | State::Pausing | State::Resuming => "33",
        State::Paused => "36",
        State::Destroyed => "2",
    };
    format!("\x1b[{c}m{s}\x1b[0m")
}

fn ago_or_in(t: chrono::DateTime<Utc>) -> String {
    let d = t.signed_duration_since(Utc::now()).num_seconds();
    let human =
        sandboxer_core::duration::format_duration(std::time::Duration::from_secs(d.unsigned_abs()));
    if d >= 0 {
        format!("in {human}")
    } else {
        format!("{human} ago")
    }
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A size in the unit that fits (`48.6 MiB`, `23.0 GiB`).
fn gib(bytes: f64) -> String {
    bytesize::ByteSize::b(bytes.max(0.0) as u64).to_string()
}

/// A few host telemetry figures from a record's telemetry JSON.
pub fn telemetry_line(t: &serde_json::Value) -> Option<String> {
    let cpus = t.get("cpus")?.as_u64()?;
    let mut parts = vec![format!("{cpus} CPUs")];
    if let Some(l) = t.get("load_1").and_then(|v| v.as_f64()) {
        parts.push(format!("load {l:.2}"));
    }
    if let (Some(avail), Some(total)) = (
        t.get("mem_available_bytes").and_then(|v| v.as_f64()),
        t.get("mem_total_bytes").and_then(|v| v.as_f64()),
    ) {
        parts.push(format!("memory {} free of {}", gib(avail), gib(total)));
    }
    if let Some(d) = t.get("disk_free_bytes").and_then(|v| v.as_f64()) {
        parts.push(format!("disk {} free", gib(d)));
    }
    if let Some(k) = t.get("kernel").and_then(|v| v.as_str()) {
        parts.push(format!("kernel {k}"));
    }
    if let Some(present) = t.pointer("/docker/present").and_then(|v| v.as_bool()) {
        parts.push(if present {
            "docker present".into()
        } else {
            "no docker".into()
        });
    }
    Some(parts.join(", "))
}

/// The short summary of one sandbox.
pub fn summary(s: &Sandbox, color: bool) -> String {
    let mut o = String::new();
    let state = s.state();
    if s.overdue(sandboxer_core::model::now()) {
        let _ = writeln!(
            o,
            "{}  {} (expired: the next reaper pass ends it)",
            s.id,
            paint(state.as_str(), state, color)
        );
    } else {
        let _ = writeln!(o, "{}  {}", s.id, paint(state.as_str(), state, color));
    }
    let _ = writeln!(o, "  profile    {} v{}", s.profile, s.profile_version);
    let _ = writeln!(o, "  host       {} ({})", s.host, s.extension);
    if let Some(r) = s.reason() {
        let _ = writeln!(o, "  reason     {r}");
    }
    let _ = writeln!(o, "  actor      {}", s.actor);
    let _ = writeln!(o, "  created    {}", rfc3339(s.created_at));
    if let Some(t) = s.expires_at {
        if s.is_live() && !s.lifecycle().is_terminal() {
            let _ = writeln!(o, "  expires    {} ({})", rfc3339(t), ago_or_in(t));
        }
    }
    if let Some(t) = s.ended_at {
        let _ = writeln!(o, "  ended      {}", rfc3339(t));
    }
    if !s.inputs.is_empty() {
        let inputs: Vec<String> = s.inputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(o, "  inputs     {}", inputs.join(" "));
    }
    if let Some(r) = &s.reachability {
        if state == State::Ready {
            let _ = writeln!(o, "  address    {}", r.address);
            for (svc, ports) in &r.ports {
                let p: Vec<String> = ports
                    .iter()
                    .map(|p| format!("{}->{}", p.published, p.target))
                    .collect();
                let _ = writeln!(o, "  ports      {svc}: {}", p.join(", "));
            }
            for (name, url) in &r.urls {
                let _ = writeln!(o, "  url        {name}: {url}");
            }
            if let Some(ssh) = &r.ssh {
                let _ = writeln!(o, "  ssh        {}@{} -p {}", ssh.user, ssh.host, ssh.port);
            }
        }
    }
    if let Some(t) = s.telemetry.as_ref().and_then(telemetry_line) {
        let _ = writeln!(o, "  telemetry  {t}");
    }
    if let Some(c) = &s.cost {
        let settled = c
            .settled
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            o,
            "  cost       {}/h, held {}, settled {}",
            c.price_per_hour, c.held, settled
        );
    }
    if let Some(f) = &s.recreated_from {
        let _ = writeln!(o, "  replaces   {f}");
    }
    if let Some(n) = &s.recreated_as {
        let _ = writeln!(o, "  replaced   by {n}");
    }
    o
}

/// Columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(visible_len(c));
        }
    }
    let mut o = String::new();
    let line = |cells: Vec<String>, o: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            o.push_str(&c);
            if i + 1 < n {
                o.push_str(&" ".repeat(widths[i] - visible_len(&c) + 2));
            }
        }
        o.push('\n');
    };
    line(header.iter().map(|h| h.to_uppercase()).collect(), &mut o);
    for r in rows {
        line(r.clone(), &mut o);
    }
    o
}

fn visible_len(s: &str) -> usize {
    let mut n = 0;
    let mut esc = false;
    for c in s.chars() {
        if esc {
            if c == 'm' {
                esc = false;
            }
        } else if c == '\x1b' {
            esc = true;
        } else {
            n += 1;
        }
    }
    n
}

pub fn sandbox_table(list: &[Sandbox], color: bool) -> String {
    if list.is_empty() {
        return "no sandboxes\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let expires = match (s.state(), s.expires_at) {
                (State::Ready | State::Provisioning | State::Paused, Some(t)) => ago_or_in(t),
                _ => "-".into(),
            };
            let reason = if s.overdue(sandboxer_core::model::now()) {
                "expired: the next reaper pass ends it".to_string()
            } else {
                s.reason().unwrap_or_else(|| "-".into())
            };
            vec![
                s.id.clone(),
                paint(s.state().as_str(), s.state(), color),
                reason.chars().take(40).collect(),
                s.profile.clone(),
                s.host.clone(),
                s.actor.to_string(),
                expires,
            ]
        })
        .collect();
    table(
        &[
            "id", "state", "reason", "profile", "host", "actor", "expires",
        ],
        &rows,
    )
}

pub fn profile_table(list: &[&Profile], reg: &Registry) -> String {
    let rows: Vec<Vec<String>> = profile_rows(list, reg)
        .into_iter()
        .map(|r| {
            let avail = if r.missing_extensions.is_empty() {
                "yes".to_string()
            } else if r.available {
                format!("partly (no {})", r.missing_extensions.join(", "))
            } else {
                format!("no ({} not in this build)", r.missing_extensions.join(", "))
            };
            vec![
                r.id,
                format!("v{}", r.version),
                r.extensions.join(", "),
                avail,
                r.source,
            ]
        })
        .collect();
    table(
        &["profile", "version", "extensions", "available", "source"],
        &rows,
    )
}

pub fn profile_detail(p: &Profile, reg: &Registry) -> String {
    let d = sandboxer_core::duration::format_duration;
    let mut o = String::new();
    let _ = writeln!(o, "{} v{}", p.id, p.version);
    let _ = writeln!(o, "  {}", p.description);
    let _ = writeln!(o, "  source         {}", p.source);
    let _ = writeln!(
        o,
        "  ttl            default {}, maximum {}",
        d(p.default_ttl),
        d(p.max_ttl)
    );
    let _ = writeln!(o, "  ready timeout  {}", d(p.ready_timeout));
    let _ = writeln!(o, "  policy         {}", p.policy.as_str());
    if p.inputs.is_empty() {
        let _ = writeln!(o, "  inputs         none");
    } else {
        let _ = writeln!(o, "  inputs");
        for (name, i) in &p.inputs {
            let req = if i.required { "required" } else { "optional" };
            let def = i
                .default
                .as_ref()
                .map(|v| format!(", default {v}"))
                .unwrap_or_default();
            let _ = writeln!(o, "    {name} ({req}{def}): {}", i.help);
        }
    }
    let _ = writeln!(o, "  routes");
    for (i, r) in p.routes.iter().enumerate() {
        let have = if reg.get(&r.extension).is_some() {
            ""
        } else {
            "  [not in this build]"
        };
        let place = if r.placement.is_empty() {
            "the default host".to_string()
        } else {
            r.placement.join(", ")
        };
        let _ = writeln!(o, "    {i}. {}{have}", r.extension);
        let _ = writeln!(o, "       placement  {place}");
        let _ = writeln!(o, "       price      {}/h", r.price_per_hour);
        if !r.config.is_empty() {
            let _ = writeln!(
                o,
                "       config     {}",
                serde_json::Value::Object(r.config.clone())
            );
        }
    }
    o
}

pub fn host_table(rows: &[HostRow], hosts: &Hosts) -> String {
    let t: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let name = if r.default {
                format!("{} *", r.name)
            } else {
                r.name.clone()
            };
            let reach = match &r.error {
                None => "yes".to_string(),
                Some(e) => format!("no: {}", e.lines().next().unwrap_or("")),
            };
            vec![
                name,
                r.address.clone(),
                r.port.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                r.user.clone().unwrap_or_else(|| "-".into()),
                r.identity_file.clone().unwrap_or_else(|| "-".into()),
                match r.capacity {
                    Some(c) => format!("{}/{c}", r.live),
                    None => format!("{}/-", r.live),
                },
                if r.labels.is_empty() {
                    "-".into()
                } else {
                    r.labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                },
                reach,
            ]
        })
        .collect();
    let mut o = table(
        &[
            "name",
            "address",
            "port",
            "user",
            "key",
            "live/cap",
            "labels",
            "reachable",
        ],
        &t,
    );
    let from = match &hosts.path {
        Some(p) => format!("hosts file: {}", p.display()),
        None => "no hosts file; only the built-in host `local`".into(),
    };
    let _ = writeln!(o, "(* default host; {from})");
    o
}

pub fn inventory(inv: &sandboxer_telemetry::HostInventory) -> String {
    let v = serde_json::to_value(inv).expect("json");
    let mut o = String::new();
    let g = |k: &str| v.get(k).cloned().unwrap_or(serde_json::Value::Null);
    let _ = writeln!(o, "host            {}", g("host").as_str().unwrap_or("?"));
    let _ = writeln!(o, "cpus            {}", g("cpus"));
    let _ = writeln!(
        o,
        "load            {} {} {}",
        g("load_1"),
        g("load_5"),
        g("load_15")
    );
    if let (Some(a), Some(t)) = (
        g("mem_available_bytes").as_f64(),
        g("mem_total_bytes").as_f64(),
    ) {
        let _ = writeln!(o, "memory          {} available of {}", gib(a), gib(t));
    }
    if let Some(d) = g("disk_free_bytes").as_f64() {
        let _ = writeln!(
            o,
            "disk free       {} ({})",
            gib(d),
            g("disk_path").as_str().unwrap_or("?")
        );
    }
    let _ = writeln!(o, "kernel          {}", g("kernel").as_str().unwrap_or("?"));
    let docker = match (
        v.pointer("/docker/present").and_then(|x| x.as_bool()),
        v.pointer("/docker/version").and_then(|x| x.as_str()),
    ) {
        (Some(true), Some(ver)) => format!("present, engine {ver}"),
        (Some(true), None) => "present (engine not answering)".into(),
        _ => "not present".into(),
    };
    let _ = writeln!(o, "docker          {docker}");
    let _ = writeln!(o, "venues running  {}", g("venues_running"));
    o
}

pub fn decision(profile: &str, d: &Decision) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{profile} (policy {})", d.policy);
    if d.candidates.is_empty() {
        let _ = writeln!(o, "  no candidate can take it now");
    }
    for (i, c) in d.candidates.iter().enumerate() {
        let tag = if i == 0 { "chosen   " } else { "fallback " };
        let _ = writeln!(
            o,
            "  {tag} {} on {} at {}/h",
            c.extension, c.host, c.price_per_hour
        );
    }
    for s in &d.rejected {
        let _ = writeln!(o, "  rejected  {} on {}: {}", s.extension, s.host, s.reason);
    }
    o
}

pub fn stale(r: &sandboxer_core::reaper::StaleReport) -> String {
    let mut o = String::new();
    if r.items.is_empty() {
        o.push_str("nothing stale\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .items
            .iter()
            .map(|i| {
                vec![
                    i.kind.as_str().to_string(),
                    i.sandbox_id.clone(),
                    i.host.clone(),
                    i.extension.clone(),
                    i.state
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_else(|| "no record".into()),
                    i.detail.clone(),
                ]
            })
            .collect();
        o.push_str(&table(
            &["kind", "sandbox", "host", "extension", "record", "detail"],
            &rows,
        ));
    }
    unchecked(&mut o, &r.unchecked);
    uploads(&mut o, "stale upload", &r.uploads);
    o
}

/// The places the reaper could not look at, each with its whole reason
/// (a command's stderr often says why only on its second line).
fn unchecked(o: &mut String, list: &[sandboxer_core::reaper::Unchecked]) {
    for u in list {
        let mut lines = u.reason.lines().filter(|l| !l.trim().is_empty());
        let _ = writeln!(
            o,
            "not checked: {} ({}): {}",
            u.host,
            u.extension,
            lines.next().unwrap_or("")
        );
        for l in lines {
            let _ = writeln!(o, "  {}", l.trim_end());
        }
    }
}

/// One line per uploaded repo the reaper found (or removed).
fn uploads(o: &mut String, what: &str, list: &[sandboxer_core::uploads::SweptUpload]) {
    for u in list {
        let owner = u
            .actor
            .as_ref()
            .map_or_else(|| "no record".to_string(), ToString::to_string);
        let _ = writeln!(o, "{what}: {} ({owner}): {}", u.id, u.detail);
    }
}

pub fn reaped(r: &sandboxer_core::reaper::ReapReport) -> String {
    let mut o = String::new();
    if r.reaped.is_empty() {
        o.push_str("nothing stale\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .reaped
            .iter()
            .map(|i| {
                vec![
                    i.item.kind.as_str().to_string(),
                    i.item.sandbox_id.clone(),
                    i.item.host.clone(),
                    i.outcome.clone(),
                ]
            })
            .collect();
        o.push_str(&table(&["kind", "sandbox", "host", "outcome"], &rows));
    }
    unchecked(&mut o, &r.unchecked);
    let what = if r.dry_run {
        "would remove upload"
    } else {
        "removed upload"
    };
    uploads(&mut o, what, &r.uploads);
    o
}

pub fn account(actor: &sandboxer_core::model::Actor, a: &sandboxer_credits::Account) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{actor}");
    let _ = writeln!(o, "  available  {}", a.available);
    let _ = writeln!(o, "  held       {}", a.held);
    let _ = writeln!(o, "  spent      {}", a.spent);
    let _ = writeln!(o, "  granted    {}", a.granted);
    o
}

pub fn ledger(entries: &[sandboxer_credits::Entry]) -> String {
    if entries.is_empty() {
        return "no entries\n".into();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let v = serde_json::to_value(e).unwrap_or_default();
            let actor = v
                .get("actor")
                .and_then(|a| a.as_str())
                .unwrap_or("-")
                .to_string();
            vec![
                rfc3339(e.at),
                e.kind_name().to_string(),
                e.id.clone(),
                actor,
                e.amount().to_string(),
            ]
        })
        .collect();
    table(&["at", "kind", "id", "actor", "amount"], &rows)
}

pub fn usage(actor: &sandboxer_core::model::Actor, rows: &[sandboxer_credits::UsageRow]) -> String {
    if rows.is_empty() {
        return format!("{actor} has no metered sandboxes\n");
    }
    let t: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.sandbox_id.clone(),
                format!("{} on {}", r.extension, r.host),
                r.state.to_string(),
                r.seconds
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                format!("{}/h", r.price_per_hour),
                r.held.to_string(),
                r.cost.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "sandbox", "route", "state", "seconds", "price", "held", "cost",
        ],
        &t,
    )
}

pub fn check(r: &sandboxer_credits::CheckReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} entries, {} actors, {} open holds",
        r.entries, r.actors, r.open_holds
    );
    if r.violations.is_empty() {
        o.push_str("ok: every invariant holds\n");
    } else {
        for v in &r.violations {
            let _ = writeln!(o, "VIOLATION: {v}");
        }
    }
    o
}

/// `snapshot`, `snapshots get` and `snapshots delete` for people.
pub fn snapshot_summary(s: &sandboxer_core::snapshot::Snapshot) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}  {}", s.id, s.state);
    if let Some(n) = &s.name {
        let _ = writeln!(o, "  name       {n}");
    }
    let _ = writeln!(o, "  source     {}", s.source);
    let _ = writeln!(o, "  profile    {} v{}", s.profile, s.profile_version);
    let _ = writeln!(o, "  host       {} ({})", s.host, s.extension);
    if let Some(l) = &s.location {
        let _ = writeln!(o, "  location   {l}");
    }
    if let Some(b) = s.size_bytes {
        let _ = writeln!(o, "  size       {b} bytes");
    }
    if let Some(r) = &s.reason {
        let _ = writeln!(o, "  reason     {r}");
    }
    let _ = writeln!(o, "  actor      {}", s.actor);
    let _ = writeln!(o, "  created    {}", rfc3339(s.created_at));
    if let Some(t) = s.deleted_at {
        let _ = writeln!(o, "  deleted    {}", rfc3339(t));
    }
    if let Some(c) = s.storage_cost {
        let _ = writeln!(o, "  storage    {c} credits");
    }
    if s.state == sandboxer_core::snapshot::SnapshotState::Ready {
        let _ = writeln!(o, "  restore    sandboxer create --from-snapshot {}", s.id);
    }
    o
}

/// `snapshots list` for people.
pub fn snapshot_table(list: &[sandboxer_core::snapshot::Snapshot]) -> String {
    if list.is_empty() {
        return "no snapshots\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.state.to_string(),
                s.name.clone().unwrap_or_else(|| "-".into()),
                s.source.clone(),
                s.profile.clone(),
                s.host.clone(),
                s.size_bytes.map_or("-".into(), |b| b.to_string()),
                rfc3339(s.created_at),
            ]
        })
        .collect();
    table(
        &[
            "ID", "STATE", "NAME", "SOURCE", "PROFILE", "HOST", "BYTES", "CREATED",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_the_unit_that_fits() {
        assert_eq!(gib(51.0 * 1024.0 * 1024.0), "51.0 MiB");
        assert_eq!(gib(23.0 * (1u64 << 30) as f64), "23.0 GiB");
        assert_eq!(gib(512.0), "512 B");
        let line = telemetry_line(&serde_json::json!({
            "cpus": 2, "disk_free_bytes": 53_477_376u64
        }));
        let line = line.unwrap();
        assert!(line.contains("disk 51.0 MiB free"), "{line}");
    }
}
