//! The walk of `hosts.toml` (its schema is documented on
//! [`crate::hosts::parse_hosts`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use toml_edit::Key;

use crate::hosts::{HostKind, HostSpec, Hosts, LOCAL};
use crate::Result;

use super::parse::*;
use super::walk::*;

/// Parse and validate `hosts.toml` (the schema is on
/// [`crate::hosts::parse_hosts`], which calls this); on failure an
/// `InvalidConfig` error lists every problem.
pub fn parse_hosts_toml(path: &Path, text: &str) -> Result<Hosts> {
    parse_hosts_diagnostics(path, text).map_err(|d| diagnostics_error(&d))
}

/// Parse and validate `hosts.toml`, returning every problem found.
pub fn parse_hosts_diagnostics(path: &Path, text: &str) -> Result<Hosts, Vec<Diagnostic>> {
    let mut w = Walker::new(path, text);
    let doc = w.document()?;
    let hosts = walk_hosts(&mut w, doc.as_table());
    w.finish(hosts)
}

pub(crate) const HOSTS_KEYS: &[&str] = &["default", "hosts"];
pub(crate) const HOST_KEYS: &[&str] = &[
    "name",
    "address",
    "port",
    "user",
    "identity_file",
    "known_hosts",
    "capacity",
    "labels",
    "data_dir",
    "connect_timeout",
    "command_timeout",
];

pub(crate) fn walk_hosts(w: &mut Walker<'_>, root: &toml_edit::Table) -> Option<Hosts> {
    let root = Tbl {
        table: root,
        at: None,
        what: "the hosts file".to_string(),
    };
    w.unknown_keys(&root, HOSTS_KEYS);
    let tables = match w.field(&root, "hosts", None) {
        Some(f) => w.tables(&f, "host"),
        None => Some(Vec::new()),
    };
    let mut hosts = Vec::new();
    let mut ok = tables.is_some();
    // name -> line of its first definition
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for t in tables.iter().flatten() {
        match walk_host(w, t, &mut seen) {
            Some(h) => hosts.push(h),
            None => ok = false,
        }
    }
    let default = match w.field(&root, "default", None) {
        None => Some(
            hosts
                .first()
                .map(|h| h.name.clone())
                .unwrap_or_else(|| LOCAL.to_string()),
        ),
        Some(f) => w.string(&f).and_then(|name| {
            if name == LOCAL || seen.contains_key(&name) {
                return Some(name);
            }
            let mut known: Vec<&str> = vec![LOCAL];
            known.extend(seen.keys().map(String::as_str));
            let hint = match closest(&name, &known) {
                Some(near) => format!("did you mean `{near}`? known hosts: {}", known.join(", ")),
                None => format!("known hosts: {}", known.join(", ")),
            };
            w.report(
                f.at.clone(),
                format!("default host `{name}` is not listed in `[[hosts]]`"),
                Some(hint),
            );
            None
        }),
    };
    if !ok {
        return None;
    }
    Some(Hosts {
        path: Some(w.path.to_path_buf()),
        default: default?,
        hosts,
        unreadable: None,
    })
}

pub(crate) fn walk_host(
    w: &mut Walker<'_>,
    t: &Tbl<'_>,
    seen: &mut BTreeMap<String, usize>,
) -> Option<HostSpec> {
    w.unknown_keys(t, HOST_KEYS);
    let name = w
        .field(t, "name", Some("name = \"sandboxer01\""))
        .and_then(|f| {
            let name = w.string(&f)?;
            let line = w.position(&f.at).0;
            let mut chars = name.chars();
            let first_ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            if !first_ok || !chars.all(name_char) {
                w.report(
                    f.at.clone(),
                    format!("host name `{name}` must match [a-z0-9][a-z0-9.-_]*"),
                    Some("use lowercase letters, digits, `.`, `-` and `_`, starting with a letter or digit".to_string()),
                );
                return None;
            }
            if name == LOCAL {
                w.report(
                    f.at.clone(),
                    "host name `local` is reserved for the built-in host (this machine, no SSH)",
                    Some("pick another name for this SSH host".to_string()),
                );
                return None;
            }
            if let Some(first) = seen.get(&name) {
                w.report(
                    f.at.clone(),
                    format!("host `{name}` is listed twice: at line {first} and line {line}"),
                    Some("host names must be unique; rename or remove one".to_string()),
                );
                return None;
            }
            seen.insert(name.clone(), line);
            Some(name)
        });
    let address = w
        .field(t, "address", Some("address = \"192.0.2.10\""))
        .and_then(|f| w.non_empty_string(&f));
    let port = match w.field(t, "port", None) {
        None => Some(22),
        Some(f) => match f.item.as_integer() {
            Some(n) => match u16::try_from(n) {
                Ok(p) if p > 0 => Some(p),
                _ => {
                    w.report(
                        f.at.clone(),
                        format!("`port` must be between 1 and 65535, not {n}"),
                        None,
                    );
                    None
                }
            },
            None => {
                w.wrong_type(&f, "an integer");
                None
            }
        },
    };
    let user = match w.field(t, "user", None) {
        None => Some("root".to_string()),
        Some(f) => w.non_empty_string(&f),
    };
    let identity_file = w
        .field(
            t,
            "identity_file",
            Some("identity_file = \"~/.ssh/id_ed25519\""),
        )
        .and_then(|f| w.non_empty_string(&f))
        .map(|s| crate::paths::expand_home(&s));
    let known_hosts = match w.field(t, "known_hosts", None) {
        None => Some(None),
        Some(f) => w
            .non_empty_string(&f)
            .map(|s| Some(crate::paths::expand_home(&s))),
    };
    let capacity = match w.field(t, "capacity", None) {
        None => Some(None),
        Some(f) => w
            .positive_u32(&f, Some("remove `capacity` for no limit".to_string()))
            .map(Some),
    };
    let labels = match w.field(t, "labels", None) {
        None => Some(BTreeMap::new()),
        Some(f) => w.table(&f, "`labels`".to_string()).and_then(|labels| {
            let mut out = BTreeMap::new();
            let mut ok = true;
            for (k, item) in labels.table.iter() {
                let lf = Field {
                    name: format!("labels.{k}"),
                    item,
                    at: item
                        .span()
                        .or_else(|| labels.table.key(k).and_then(Key::span)),
                };
                match w.string(&lf) {
                    Some(v) => {
                        out.insert(k.to_string(), v);
                    }
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }),
    };
    let data_dir = match w.field(t, "data_dir", None) {
        None => Some(None),
        Some(f) => w.non_empty_string(&f).map(Some),
    };
    let connect_timeout = w.duration_or(t, "connect_timeout", Duration::from_secs(5));
    let command_timeout = w.duration_or(t, "command_timeout", Duration::from_secs(600));
    Some(HostSpec {
        name: name?,
        address: address?,
        kind: HostKind::Ssh {
            port: port?,
            user: user?,
            identity_file: identity_file?,
            known_hosts: known_hosts?,
        },
        capacity: capacity?,
        labels: labels?,
        data_dir: data_dir?,
        connect_timeout: connect_timeout?,
        command_timeout: command_timeout?,
    })
}
