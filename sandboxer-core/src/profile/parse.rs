//! The raw TOML walk for profile files and `hosts.toml`. Pure: text in,
//! validated value or diagnostics out.
//!
//! The walk goes over a span-keeping [`toml_edit::ImDocument`] by hand, so
//! that every problem in a file is found in one pass and reported with its
//! file, line and column ([`Diagnostic`]), the way nextest's config loader
//! does. Nothing stops at the first error except a TOML syntax error.
//!
//! # The profile schema
//!
//! ```toml
//! id = "profile.compose-e2e"        # required; `profile.` then [a-z0-9.-_]
//! version = 1                       # required, positive integer
//! description = "..."               # required
//! aliases = ["stack"]               # optional: names for the E2B front door's templateID
//! default_ttl = "2h"                # required, at most max_ttl
//! max_ttl = "24h"                   # required
//! ready_timeout = "5m"              # optional, default 5m
//! policy = "ordered"                # optional: ordered | burst | cheapest
//! paused_retention = "7d"           # optional, default 7d: how long a paused
//!                                   # sandbox is kept before it is destroyed
//! paused_price_per_hour = "0"       # optional, default 0: held while paused
//! snapshot_price_per_hour = "0"     # optional, default 0: per snapshot kept,
//!                                   # paid when it is deleted
//!
//! [inputs.repo]                     # zero or more
//! required = true                   # optional, default false
//! help = "path to the consumer repo" # optional, default ""
//! default = "..."                   # optional; only for optional inputs
//!
//! [[routes]]                        # one or more, in order of preference
//! extension = "ext.compose-ssh"     # required, starts with `ext.`
//! placement = ["sandboxer01", "coulombcore"]  # optional, default [] (the default host)
//! price_per_hour = "0"              # optional, default 0; a decimal string or
//!                                   # a non-negative integer, never a float
//!
//! [routes.config]                   # optional, any TOML table; handed to the
//! compose_file = "docker-compose.e2e.yml"     # extension as a JSON object
//! ```
//!
//! Durations are written with their unit (`90s`, `30m`, `2h`, `1d`, `1h30m`,
//! see [`crate::duration`]). The schema of `hosts.toml` is documented on
//! [`crate::hosts::parse_hosts`].
//!
//! ```
//! use std::path::Path;
//! use sandboxer_core::profile::{parse_profile, ProfileSource};
//!
//! let text = r#"
//! id = "profile.demo"
//! version = 1
//! description = "demo"
//! default_ttl = "1h"
//! max_ttl = "1d"
//!
//! [[routes]]
//! extension = "ext.compose-ssh"
//! "#;
//! let p = parse_profile(Path::new("demo.toml"), text, ProfileSource::Builtin).unwrap();
//! assert_eq!(p.routes[0].extension, "ext.compose-ssh");
//!
//! let err = parse_profile(Path::new("bad.toml"), "id = 1\n", ProfileSource::Builtin).unwrap_err();
//! assert!(err.message().starts_with("6 problems in bad.toml"));
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use toml_edit::{Key, Value};

use super::{InputSpec, Policy, Profile, ProfileSource, Route};
use crate::credits::Micros;
use crate::duration::format_duration;
use crate::Result;

pub use super::hosts_toml::{parse_hosts_diagnostics, parse_hosts_toml};
pub use super::render::render_profile;
pub(crate) use super::walk::*;
pub use super::walk::{diagnostics_error, render_diagnostics, Diagnostic};

/// Parse and validate one profile file; on failure an `InvalidConfig` error
/// lists every problem (see [`parse_profile_diagnostics`]).
pub fn parse_profile(path: &Path, text: &str, source: ProfileSource) -> Result<Profile> {
    parse_profile_diagnostics(path, text, source).map_err(|d| diagnostics_error(&d))
}

/// Parse and validate one profile file, returning every problem found.
pub fn parse_profile_diagnostics(
    path: &Path,
    text: &str,
    source: ProfileSource,
) -> Result<Profile, Vec<Diagnostic>> {
    parse_profile_located(path, text, source).map(|(p, _)| p)
}

/// [`parse_profile_diagnostics`], also giving the 1-based line and column of
/// the `id` value (the catalog points there for duplicate ids).
pub(crate) fn parse_profile_located(
    path: &Path,
    text: &str,
    source: ProfileSource,
) -> Result<(Profile, (usize, usize)), Vec<Diagnostic>> {
    let mut w = Walker::new(path, text);
    let doc = w.document()?;
    let profile = walk_profile(&mut w, doc.as_table(), source);
    w.finish(profile)
}

pub(crate) const PROFILE_KEYS: &[&str] = &[
    "id",
    "version",
    "description",
    "aliases",
    "default_ttl",
    "max_ttl",
    "ready_timeout",
    "policy",
    "paused_retention",
    "paused_price_per_hour",
    "snapshot_price_per_hour",
    "inputs",
    "routes",
];
pub(crate) const INPUT_KEYS: &[&str] = &["required", "help", "default"];
pub(crate) const ROUTE_KEYS: &[&str] = &["extension", "placement", "price_per_hour", "config"];
pub(crate) const POLICIES: &[&str] = &["ordered", "burst", "cheapest"];
/// `paused_retention` when the profile does not say.
pub const DEFAULT_PAUSED_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// `ready_timeout` when the profile does not say.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// `[a-z0-9.-_]` (the characters of profile ids and host names).
pub(crate) fn name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

pub(crate) fn walk_profile(
    w: &mut Walker<'_>,
    root: &toml_edit::Table,
    source: ProfileSource,
) -> Option<(Profile, (usize, usize))> {
    let root = Tbl {
        table: root,
        at: None,
        what: "the profile".to_string(),
    };
    w.unknown_keys(&root, PROFILE_KEYS);

    let mut id_at = (1, 1);
    let id = w
        .field(&root, "id", Some("id = \"profile.my-stack\""))
        .and_then(|f| {
            id_at = w.position(&f.at);
            let id = w.string(&f)?;
            check_profile_id(w, &f, &id).then_some(id)
        });
    let version = w
        .field(&root, "version", Some("version = 1"))
        .and_then(|f| w.positive_u32(&f, Some("versions count up from 1".to_string())));
    let description = w
        .field(
            &root,
            "description",
            Some("description = \"what it gives\""),
        )
        .and_then(|f| w.string(&f));
    let aliases = match w.field(&root, "aliases", None) {
        None => Some(Vec::new()),
        Some(f) => w.string_array(&f).and_then(|list| {
            let bad: Vec<&String> = list
                .iter()
                .filter(|a| a.is_empty() || !a.chars().all(name_char) || a.starts_with("profile."))
                .collect();
            if bad.is_empty() {
                Some(list)
            } else {
                w.report(
                    f.at.clone(),
                    format!(
                        "alias `{}` is not a template name",
                        bad[0]
                    ),
                    Some("write aliases in [a-z0-9.-_], not starting with `profile.`, e.g. `aliases = [\"canary\"]`".to_string()),
                );
                None
            }
        }),
    };
    let default_ttl_field = w.field(&root, "default_ttl", Some("default_ttl = \"2h\""));
    let default_ttl = default_ttl_field.as_ref().and_then(|f| w.duration(f));
    let max_ttl = w
        .field(&root, "max_ttl", Some("max_ttl = \"24h\""))
        .and_then(|f| w.duration(&f));
    if let (Some(f), Some(default), Some(max)) = (&default_ttl_field, default_ttl, max_ttl) {
        if default > max {
            w.report(
                f.at.clone(),
                format!(
                    "default_ttl {} is longer than max_ttl {}",
                    format_duration(default),
                    format_duration(max)
                ),
                Some("lower `default_ttl` or raise `max_ttl`".to_string()),
            );
        }
    }
    let ready_timeout = w.duration_or(&root, "ready_timeout", DEFAULT_READY_TIMEOUT);
    let policy = match w.field(&root, "policy", None) {
        None => Some(Policy::default()),
        Some(f) => w.string(&f).and_then(|s| match s.as_str() {
            "ordered" => Some(Policy::Ordered),
            "burst" => Some(Policy::Burst),
            "cheapest" => Some(Policy::Cheapest),
            other => {
                let hint = match closest(other, POLICIES) {
                    Some(near) => format!("did you mean `{near}`?"),
                    None => format!("known policies: {}", POLICIES.join(", ")),
                };
                w.report(
                    f.at.clone(),
                    format!("unknown policy `{other}`"),
                    Some(hint),
                );
                None
            }
        }),
    };
    let paused_retention = w.duration_or(&root, "paused_retention", DEFAULT_PAUSED_RETENTION);
    let paused_price_per_hour = match w.field(&root, "paused_price_per_hour", None) {
        Some(f) => price(w, &f),
        None => Some(Micros::ZERO),
    };
    let snapshot_price_per_hour = match w.field(&root, "snapshot_price_per_hour", None) {
        Some(f) => price(w, &f),
        None => Some(Micros::ZERO),
    };
    let inputs = match w.field(&root, "inputs", None) {
        None => Some(BTreeMap::new()),
        Some(f) => w
            .table(&f, "`inputs`".to_string())
            .and_then(|t| walk_inputs(w, &t)),
    };
    let routes = walk_routes(w, &root);

    let profile = Profile {
        id: id?,
        version: version?,
        description: description?,
        aliases: aliases?,
        inputs: inputs?,
        default_ttl: default_ttl?,
        max_ttl: max_ttl?,
        ready_timeout: ready_timeout?,
        policy: policy?,
        paused_retention: paused_retention?,
        paused_price_per_hour: paused_price_per_hour?,
        snapshot_price_per_hour: snapshot_price_per_hour?,
        routes: routes?,
        source,
    };
    Some((profile, id_at))
}

pub(crate) fn check_profile_id(w: &mut Walker<'_>, f: &Field<'_>, id: &str) -> bool {
    let Some(rest) = id.strip_prefix("profile.") else {
        let suggestion: String = id
            .to_ascii_lowercase()
            .chars()
            .map(|c| if name_char(c) { c } else { '-' })
            .collect();
        w.report(
            f.at.clone(),
            format!("profile id `{id}` must start with `profile.`"),
            Some(format!("write e.g. `id = \"profile.{suggestion}\"`")),
        );
        return false;
    };
    if rest.is_empty() {
        w.report(
            f.at.clone(),
            "profile id `profile.` needs a name after `profile.`",
            Some("write e.g. `id = \"profile.my-stack\"`".to_string()),
        );
        return false;
    }
    let mut bad: Vec<char> = id.chars().filter(|c| !name_char(*c)).collect();
    bad.dedup();
    if !bad.is_empty() {
        let shown: Vec<String> = bad.iter().map(|c| format!("`{c}`")).collect();
        w.report(
            f.at.clone(),
            format!(
                "profile id `{id}` has characters outside [a-z0-9.-_]: {}",
                shown.join(", ")
            ),
            Some("use lowercase letters, digits, `.`, `-` and `_`".to_string()),
        );
        return false;
    }
    true
}

pub(crate) fn walk_inputs(
    w: &mut Walker<'_>,
    inputs: &Tbl<'_>,
) -> Option<BTreeMap<String, InputSpec>> {
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, item) in inputs.table.iter() {
        let key_at = inputs.table.key(name).and_then(Key::span);
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            w.report(
                key_at.clone(),
                format!("input name `{name}` may only have letters, digits, `_`, `-` and `.`"),
                None,
            );
            ok = false;
            continue;
        }
        let f = Field {
            name: format!("inputs.{name}"),
            item,
            at: item.span().or(key_at),
        };
        let Some(t) = w.table(&f, format!("`[inputs.{name}]`")) else {
            ok = false;
            continue;
        };
        w.unknown_keys(&t, INPUT_KEYS);
        let required = match w.field(&t, "required", None) {
            Some(f) => w.boolean(&f),
            None => Some(false),
        };
        let help = match w.field(&t, "help", None) {
            Some(f) => w.string(&f),
            None => Some(String::new()),
        };
        let default = match w.field(&t, "default", None) {
            Some(f) => match w.string(&f) {
                Some(_) if required == Some(true) => {
                    w.report(
                        f.at.clone(),
                        format!("input `{name}` is required, so it cannot have a default"),
                        Some("remove `default` or set `required = false`".to_string()),
                    );
                    None
                }
                d => d.map(Some),
            },
            None => Some(None),
        };
        match (required, help, default) {
            (Some(required), Some(help), Some(default)) => {
                out.insert(
                    name.to_string(),
                    InputSpec {
                        required,
                        help,
                        default,
                    },
                );
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

pub(crate) fn walk_routes(w: &mut Walker<'_>, root: &Tbl<'_>) -> Option<Vec<Route>> {
    let no_routes_hint =
        Some("add a `[[routes]]` table with at least `extension = \"ext.NAME\"`".to_string());
    let Some(f) = w.field(root, "routes", None) else {
        w.report(
            None,
            "no routes: a profile needs at least one `[[routes]]`",
            no_routes_hint,
        );
        return None;
    };
    let tables = w.tables(&f, "route")?;
    if tables.is_empty() {
        w.report(
            f.at.clone(),
            "no routes: a profile needs at least one `[[routes]]`",
            no_routes_hint,
        );
        return None;
    }
    let mut routes = Vec::new();
    let mut ok = true;
    for t in &tables {
        match walk_route(w, t) {
            Some(r) => routes.push(r),
            None => ok = false,
        }
    }
    ok.then_some(routes)
}

pub(crate) fn walk_route(w: &mut Walker<'_>, t: &Tbl<'_>) -> Option<Route> {
    w.unknown_keys(t, ROUTE_KEYS);
    let extension = w
        .field(t, "extension", Some("extension = \"ext.compose-ssh\""))
        .and_then(|f| {
            let ext = w.string(&f)?;
            match ext.strip_prefix("ext.") {
                Some(rest) if !rest.is_empty() => Some(ext),
                _ => {
                    w.report(
                        f.at.clone(),
                        format!("extension `{ext}` must start with `ext.` and name an extension"),
                        Some("write e.g. `extension = \"ext.compose-ssh\"`".to_string()),
                    );
                    None
                }
            }
        });
    let placement = match w.field(t, "placement", None) {
        Some(f) => w.string_array(&f),
        None => Some(Vec::new()),
    };
    let price_per_hour = match w.field(t, "price_per_hour", None) {
        Some(f) => price(w, &f),
        None => Some(Micros::ZERO),
    };
    let config = match w.field(t, "config", None) {
        None => Some(serde_json::Map::new()),
        Some(f) => match f.item.as_table_like() {
            Some(table) => w.json_object(table),
            None => {
                w.wrong_type(&f, "a table (`[routes.config]`)");
                None
            }
        },
    };
    Some(Route {
        extension: extension?,
        config: config?,
        placement: placement?,
        price_per_hour: price_per_hour?,
    })
}

pub(crate) fn price(w: &mut Walker<'_>, f: &Field<'_>) -> Option<Micros> {
    let text = match f.item.as_value() {
        Some(Value::String(s)) => s.value().clone(),
        Some(Value::Integer(n)) if *n.value() >= 0 => n.value().to_string(),
        Some(Value::Integer(n)) => {
            w.report(
                f.at.clone(),
                format!("`{}` is {}; a price must not be negative", f.name, n.value()),
                Some(format!("give the credits an hour as a decimal string, like `{} = \"0.6\"`, or 0 for free", f.name)),
            );
            return None;
        }
        Some(Value::Float(_)) => {
            let raw = w.raw(&f.at).unwrap_or("0.5");
            w.report(
                f.at.clone(),
                format!(
                    "`{}` must not be a float: credits are exact decimals",
                    f.name
                ),
                Some(format!("quote it: `{} = \"{raw}\"`", f.name)),
            );
            return None;
        }
        _ => {
            w.wrong_type(f, "a decimal string like \"0.6\" or a non-negative integer");
            return None;
        }
    };
    match Micros::parse_amount(&text) {
        Ok(m) => Some(m),
        Err(e) => {
            w.report(
                f.at.clone(),
                format!("bad {}: {}", f.name, e.message()),
                e.hint().map(str::to_string),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::{HostKind, LOCAL};
    use proptest::prelude::*;

    fn diags(text: &str) -> Vec<Diagnostic> {
        parse_profile_diagnostics(Path::new("p.toml"), text, ProfileSource::Builtin)
            .expect_err("should fail")
    }

    fn host_diags(text: &str) -> Vec<Diagnostic> {
        parse_hosts_diagnostics(Path::new("hosts.toml"), text).expect_err("should fail")
    }

    fn at(d: &Diagnostic) -> (usize, usize) {
        (d.line, d.column)
    }

    const GOOD: &str = r#"id = "profile.demo"
version = 1
description = "demo"
default_ttl = "2h"
max_ttl = "24h"

[inputs.repo]
required = true
help = "the repo"

[[routes]]
extension = "ext.compose-ssh"
placement = ["a", "b"]
price_per_hour = 2

[routes.config]
compose_file = "x.yml"
nested = { k = [1, 2.5, true] }
"#;

    #[test]
    fn parses_a_good_profile_with_defaults() {
        let p = parse_profile(Path::new("p.toml"), GOOD, ProfileSource::Builtin).unwrap();
        assert_eq!(p.id, "profile.demo");
        assert_eq!(p.ready_timeout, DEFAULT_READY_TIMEOUT);
        assert_eq!(p.policy, Policy::Ordered);
        assert!(p.inputs["repo"].required);
        assert_eq!(p.routes[0].price_per_hour, Micros::from_credits(2));
        assert_eq!(p.routes[0].placement, ["a", "b"]);
        assert_eq!(
            serde_json::Value::Object(p.routes[0].config.clone()),
            serde_json::json!({"compose_file": "x.yml", "nested": {"k": [1, 2.5, true]}})
        );
    }

    #[test]
    fn three_problems_are_all_reported_with_positions() {
        let text = r#"id = "profile.demo"
version = 0
description = "demo"
default_ttl = "2x"
max_ttl = "24h"

[[routes]]
extenssion = "ext.compose-ssh"
"#;
        let d = diags(text);
        let got: Vec<_> = d.iter().map(|d| (at(d), d.message.as_str())).collect();
        assert_eq!(d.len(), 4, "{got:#?}");
        assert_eq!(at(&d[0]), (2, 11));
        assert!(d[0].message.contains("positive integer, not 0"));
        assert_eq!(at(&d[1]), (4, 15));
        assert!(d[1].message.starts_with("bad duration for `default_ttl`"));
        // the route misses `extension` (pointed at its header) and has an
        // unknown key
        assert_eq!(at(&d[2]), (7, 1));
        assert!(d[2].message.contains("missing required key `extension`"));
        assert_eq!(at(&d[3]), (8, 1));
        assert_eq!(d[3].hint.as_deref(), Some("did you mean `extension`?"));
    }

    #[test]
    fn rendered_error_lists_everything() {
        let err = parse_profile(
            Path::new("dir/p.toml"),
            "id = \"nope\"\nversion = \"1\"\n",
            ProfileSource::Builtin,
        )
        .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidConfig);
        let msg = err.message();
        assert!(msg.starts_with("6 problems in dir/p.toml\n"), "{msg}");
        assert!(msg.contains("dir/p.toml:1:6: profile id `nope` must start with `profile.`\n  hint: write e.g. `id = \"profile.nope\"`"), "{msg}");
        assert!(msg.contains("dir/p.toml:2:11: `version` must be a positive integer, not a string\n  hint: remove the quotes: `version = 1`"), "{msg}");
        assert!(msg.contains("missing required key `description`"), "{msg}");
        assert!(msg.contains("no routes"), "{msg}");
    }

    #[test]
    fn syntax_error_has_a_position() {
        let d = diags("id = \"profile.x\"\nversion = \n");
        assert_eq!(d.len(), 1);
        assert_eq!(at(&d[0]), (2, 11));
        assert!(d[0].message.starts_with("TOML syntax error"));
    }

    #[test]
    fn unknown_keys_suggest_or_list() {
        let text = GOOD
            .replace("max_ttl", "max_tll")
            .replace("help =", "hepl =");
        let d = diags(&(text + "\nwhatever = 1\n"));
        let hints: Vec<_> = d.iter().filter_map(|d| d.hint.as_deref()).collect();
        assert!(hints.contains(&"did you mean `max_ttl`?"), "{d:#?}");
        assert!(hints.contains(&"did you mean `help`?"), "{d:#?}");
        // `whatever` lands in [routes.config] (any key is fine there), so
        // put a truly unknown key at the top instead
        let d = diags(&format!("whatever = 1\n{GOOD}"));
        assert_eq!(d.len(), 1);
        assert_eq!(at(&d[0]), (1, 1));
        assert!(d[0]
            .hint
            .as_deref()
            .unwrap()
            .starts_with("known keys: id, version"));
    }

    #[test]
    fn ids_policies_extensions_and_ttls_are_checked() {
        let text = GOOD
            .replace("profile.demo", "profile.Demo!")
            .replace(
                "default_ttl = \"2h\"",
                "default_ttl = \"2d\"\npolicy = \"bursty\"",
            )
            .replace("ext.compose-ssh", "compose-ssh");
        let d = diags(&text);
        let msgs: Vec<_> = d.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(d.len(), 4, "{msgs:#?}");
        assert!(msgs[0].contains("characters outside [a-z0-9.-_]: `D`, `!`"));
        assert_eq!(msgs[1], "default_ttl 2d is longer than max_ttl 1d");
        assert_eq!(msgs[2], "unknown policy `bursty`");
        assert_eq!(d[2].hint.as_deref(), Some("did you mean `burst`?"));
        assert!(msgs[3].starts_with("extension `compose-ssh` must start with `ext.`"));
    }

    #[test]
    fn prices_accept_strings_and_integers_but_not_floats() {
        let with =
            |price: &str| GOOD.replace("price_per_hour = 2", &format!("price_per_hour = {price}"));
        let ok = parse_profile(Path::new("p"), &with("\"0.6\""), ProfileSource::Builtin).unwrap();
        assert_eq!(ok.routes[0].price_per_hour, Micros(600_000));
        let d = diags(&with("0.6"));
        assert_eq!(
            d[0].hint.as_deref(),
            Some("quote it: `price_per_hour = \"0.6\"`")
        );
        let d = diags(&with("-1"));
        assert!(d[0].message.contains("negative"));
        let d = diags(&with("\"1e3\""));
        assert!(d[0]
            .message
            .starts_with("bad price_per_hour: bad amount `1e3`"));
        assert!(d[0].hint.is_some());
    }

    #[test]
    fn aliases_are_template_names() {
        let base = "id = \"profile.demo\"\nversion = 1\ndescription = \"demo\"\ndefault_ttl = \"1h\"\nmax_ttl = \"1d\"\n";
        let routes = "\n[[routes]]\nextension = \"ext.canary\"\n";
        let ok = format!("{base}aliases = [\"demo\", \"demo-2\"]\n{routes}");
        let p = parse_profile(Path::new("a.toml"), &ok, ProfileSource::Builtin).unwrap();
        assert_eq!(p.aliases, ["demo", "demo-2"]);
        let bad = format!("{base}aliases = [\"Demo Stack\"]\n{routes}");
        let e = parse_profile(Path::new("a.toml"), &bad, ProfileSource::Builtin).unwrap_err();
        assert!(e.message().contains("a.toml:6:"), "{}", e.message());
        assert!(
            e.message().contains("alias `Demo Stack`"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn placement_must_be_strings_and_routes_must_exist() {
        let d = diags(&GOOD.replace("[\"a\", \"b\"]", "[\"a\", 2]"));
        assert_eq!(d.len(), 1);
        assert_eq!(at(&d[0]), (13, 19));
        assert!(d[0].message.contains("item 2 is an integer"));
        let d = diags(&GOOD.replace("[\"a\", \"b\"]", "\"a\""));
        assert!(d[0]
            .message
            .contains("must be an array of strings, not a string"));

        let head = GOOD.split("[[routes]]").next().unwrap();
        let d = diags(head);
        assert_eq!(d.len(), 1);
        assert!(d[0].message.starts_with("no routes"));
        let d = diags(&format!("routes = []\n{head}"));
        assert!(d[0].message.starts_with("no routes"));
        let d = diags(&format!("{head}\n[routes]\nextension = \"ext.x\"\n"));
        assert!(d[0]
            .message
            .contains("must be an array of tables, not a table"));
    }

    #[test]
    fn inline_routes_and_inputs_work_too() {
        let text = r#"
id = "profile.inline"
version = 2
description = ""
default_ttl = "1h"
max_ttl = "1h"
inputs = { name = { help = "who", default = "me" } }
routes = [{ extension = "ext.a", config = { x = 1 } }, { extension = "ext.b" }]
"#;
        let p = parse_profile(Path::new("p"), text, ProfileSource::Builtin).unwrap();
        assert_eq!(p.routes.len(), 2);
        assert_eq!(p.inputs["name"].default.as_deref(), Some("me"));
    }

    #[test]
    fn required_input_with_default_is_refused() {
        let d = diags(&GOOD.replace("help = \"the repo\"", "default = \"x\""));
        assert_eq!(d.len(), 1);
        assert!(d[0].message.contains("cannot have a default"));
    }

    const HOST: &str = r#"[[hosts]]
name = "sandboxer01"
address = "127.0.0.2"
identity_file = "~/.ssh/id_ed25519"
"#;

    #[test]
    fn hosts_parse_with_defaults() {
        let text = format!(
            "default = \"two\"\n{HOST}\n[[hosts]]\nname = \"two\"\naddress = \"h\"\nport = 2222\nuser = \"sb\"\nidentity_file = \"/k\"\nknown_hosts = \"~/kh\"\ncapacity = 3\nlabels = {{ zone = \"lab\" }}\ndata_dir = \"/d\"\nconnect_timeout = \"1s\"\ncommand_timeout = \"1m\"\n"
        );
        let h = parse_hosts_toml(Path::new("hosts.toml"), &text).unwrap();
        assert_eq!(h.default, "two");
        assert_eq!(h.path.as_deref(), Some(Path::new("hosts.toml")));
        let first = &h.hosts[0];
        let home = crate::paths::home_dir();
        assert_eq!(
            first.kind,
            HostKind::Ssh {
                port: 22,
                user: "root".into(),
                identity_file: home.join(".ssh/id_ed25519"),
                known_hosts: None
            }
        );
        assert_eq!(first.connect_timeout, Duration::from_secs(5));
        assert_eq!(first.command_timeout, Duration::from_secs(600));
        assert_eq!(first.capacity, None);
        let second = &h.hosts[1];
        assert_eq!(second.capacity, Some(3));
        assert_eq!(second.labels["zone"], "lab");
        assert_eq!(second.data_dir.as_deref(), Some("/d"));
        assert!(
            matches!(&second.kind, HostKind::Ssh { port: 2222, known_hosts: Some(k), .. } if *k == home.join("kh"))
        );

        let only = parse_hosts_toml(Path::new("h"), HOST).unwrap();
        assert_eq!(only.default, "sandboxer01");
        let empty = parse_hosts_toml(Path::new("h"), "").unwrap();
        assert_eq!(empty.default, LOCAL);
        assert!(empty.hosts.is_empty());
    }

    #[test]
    fn hosts_errors_are_all_reported() {
        let text = format!(
            "default = \"sandboxer02\"\n{HOST}\n{HOST}\n[[hosts]]\nname = \"local\"\naddress = \"x\"\nidentity_file = \"/k\"\n\n[[hosts]]\nname = \"nokey\"\naddress = \"x\"\ncapacity = 0\n"
        );
        let d = host_diags(&text);
        let msgs: Vec<_> = d.iter().map(|d| d.to_string()).collect();
        assert_eq!(d.len(), 5, "{msgs:#?}");
        assert_eq!(at(&d[0]), (1, 11));
        assert_eq!(
            d[0].message,
            "default host `sandboxer02` is not listed in `[[hosts]]`"
        );
        assert_eq!(
            d[0].hint.as_deref(),
            Some("did you mean `sandboxer01`? known hosts: local, nokey, sandboxer01")
        );
        assert_eq!(at(&d[1]), (8, 8));
        assert_eq!(
            d[1].message,
            "host `sandboxer01` is listed twice: at line 3 and line 8"
        );
        assert_eq!(at(&d[2]), (13, 8));
        assert!(d[2].message.contains("`local` is reserved"));
        assert_eq!(at(&d[3]), (17, 1));
        assert_eq!(
            d[3].message,
            "missing required key `identity_file` in `[[hosts]]` #4"
        );
        assert_eq!(at(&d[4]), (20, 12));
        assert!(d[4].message.contains("positive integer, not 0"));
    }

    #[test]
    fn host_names_and_types_are_checked() {
        let d = host_diags("[[hosts]]\nname = \"Bad Name\"\naddress = 1\nport = 70000\nidentity_file = \"/k\"\nconnect_timeout = \"5\"\n");
        let msgs: Vec<_> = d.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(msgs.len(), 4, "{msgs:#?}");
        assert!(msgs[0].contains("must match [a-z0-9][a-z0-9.-_]*"));
        assert_eq!(msgs[1], "`address` must be a string, not an integer");
        assert_eq!(d[1].hint.as_deref(), Some("quote it: `address = \"1\"`"));
        assert!(msgs[2].contains("between 1 and 65535"));
        assert!(msgs[3].starts_with("bad duration for `connect_timeout`"));
        let d = host_diags("[hosts]\nname = \"x\"\n");
        assert!(d[0].message.contains("must be an array of tables"));
        assert_eq!(
            d[0].hint.as_deref(),
            Some("write each host as a `[[hosts]]` table")
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let d = diags("description = \"héllo\" ; \n");
        assert_eq!(at(&d[0]), (1, 23));
    }

    #[test]
    fn closest_finds_typos() {
        assert_eq!(closest("extention", ROUTE_KEYS), Some("extension"));
        assert_eq!(closest("defualt_ttl", PROFILE_KEYS), Some("default_ttl"));
        assert_eq!(closest("price", ROUTE_KEYS), Some("price_per_hour"));
        assert_eq!(closest("zzz", ROUTE_KEYS), None);
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9._-]{0,12}"
    }

    fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            (-1.0e9f64..1.0e9).prop_map(serde_json::Value::from),
            ".{0,12}".prop_map(serde_json::Value::from),
        ]
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        json_leaf().prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn route() -> impl Strategy<Value = Route> {
        (
            name(),
            proptest::collection::btree_map(".{1,8}", json_value(), 0..4),
            proptest::collection::vec(name(), 0..3),
            0i64..10_000_000_000,
        )
            .prop_map(|(ext, config, placement, price)| Route {
                extension: format!("ext.{ext}"),
                config: config.into_iter().collect(),
                placement,
                price_per_hour: Micros(price),
            })
    }

    fn input() -> impl Strategy<Value = InputSpec> {
        (any::<bool>(), ".{0,20}", proptest::option::of(".{0,8}")).prop_map(
            |(required, help, default)| InputSpec {
                required,
                help,
                default: if required { None } else { default },
            },
        )
    }

    fn profile() -> impl Strategy<Value = Profile> {
        (
            name(),
            1u32..,
            ".{0,30}",
            proptest::collection::btree_map("[a-zA-Z0-9_.-]{1,10}", input(), 0..3),
            (1u64..1_000_000, 0u64..1_000_000, 1u64..100_000),
            prop_oneof![
                Just(Policy::Ordered),
                Just(Policy::Burst),
                Just(Policy::Cheapest)
            ],
            proptest::collection::vec(route(), 1..4),
        )
            .prop_map(
                |(id, version, description, inputs, (ttl, extra, ready), policy, routes)| Profile {
                    id: format!("profile.{id}"),
                    version,
                    description,
                    aliases: Vec::new(),
                    inputs,
                    default_ttl: Duration::from_secs(ttl),
                    max_ttl: Duration::from_secs(ttl + extra),
                    ready_timeout: Duration::from_secs(ready),
                    policy,
                    paused_retention: crate::profile::parse::DEFAULT_PAUSED_RETENTION,
                    paused_price_per_hour: Micros::ZERO,
                    snapshot_price_per_hour: Micros::ZERO,
                    routes,
                    source: ProfileSource::Builtin,
                },
            )
    }

    proptest! {
        #[test]
        fn render_then_parse_round_trips(p in profile()) {
            let text = render_profile(&p);
            let back = parse_profile(Path::new("r.toml"), &text, ProfileSource::Builtin);
            prop_assert!(back.is_ok(), "{}\n---\n{}", back.unwrap_err().message(), text);
            prop_assert_eq!(back.unwrap(), p);
        }

        #[test]
        fn any_text_gives_a_profile_or_positioned_diagnostics(text in "(.|\n){0,200}") {
            if let Err(d) = parse_profile_diagnostics(Path::new("f"), &text, ProfileSource::Builtin) {
                prop_assert!(!d.is_empty());
                let lines = text.split('\n').count();
                for d in d {
                    prop_assert!(d.line >= 1 && d.line <= lines && d.column >= 1);
                }
            }
        }
    }
}
