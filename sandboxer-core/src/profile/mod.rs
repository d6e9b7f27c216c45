//! Profiles: named, versioned recipes. The raw TOML walk and its diagnostics
//! live in [`parse`]; the built-in catalog in [`catalog`]. Pure except
//! [`Catalog::load`], which reads `profiles/*.toml` from the config dir.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::credits::Micros;
use crate::duration::format_duration;
use crate::{Error, Result};

pub mod catalog;
mod hosts_toml;
pub mod parse;
mod render;
mod walk;

pub use catalog::Catalog;
pub use parse::{parse_profile, parse_profile_diagnostics, render_profile, Diagnostic};

/// How the routing resolver orders a profile's candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Routes in the order written, hosts in placement order.
    #[default]
    Ordered,
    /// Own hosts in order until full or unreachable, then metered SaaS.
    Burst,
    /// Cheapest price first.
    Cheapest,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Ordered => "ordered",
            Policy::Burst => "burst",
            Policy::Cheapest => "cheapest",
        }
    }
}

/// One input a profile accepts (`--input NAME=VALUE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct InputSpec {
    pub required: bool,
    pub help: String,
    /// Used when the input is not given (only for optional inputs).
    pub default: Option<String>,
}

/// One way to fulfil a profile.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Route {
    /// Extension id, e.g. `ext.compose-ssh`.
    pub extension: String,
    /// Extension-specific settings (the `[routes.config]` table).
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Host names in order of preference. Empty means "the default host"
    /// (`local` when no hosts are configured). For SaaS routes, the
    /// provider's name.
    pub placement: Vec<String>,
    /// Price per hour in credits; zero for own hosts.
    pub price_per_hour: Micros,
}

/// Where a profile came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProfileSource {
    /// Embedded in the binary.
    Builtin,
    /// A user file in the config dir; `overrides` when it replaced a
    /// built-in profile of the same id.
    File { path: PathBuf, overrides: bool },
}

impl fmt::Display for ProfileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProfileSource::Builtin => f.write_str("built-in"),
            ProfileSource::File { path, overrides } => {
                write!(f, "{}", path.display())?;
                if *overrides {
                    f.write_str(" (overrides the built-in profile)")?;
                }
                Ok(())
            }
        }
    }
}

/// A validated profile.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Profile {
    pub id: String,
    pub version: u32,
    pub description: String,
    /// Other names the profile answers to as an E2B template (`templateID`
    /// of the E2B front door), e.g. `canary`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    pub inputs: BTreeMap<String, InputSpec>,
    #[serde(serialize_with = "crate::duration::serialize_text")]
    #[schemars(with = "crate::duration::DurationText")]
    pub default_ttl: Duration,
    #[serde(serialize_with = "crate::duration::serialize_text")]
    #[schemars(with = "crate::duration::DurationText")]
    pub max_ttl: Duration,
    /// How long provisioning plus readiness may take.
    #[serde(serialize_with = "crate::duration::serialize_text")]
    #[schemars(with = "crate::duration::DurationText")]
    pub ready_timeout: Duration,
    pub policy: Policy,
    /// How long a paused sandbox is kept; then the reaper destroys it
    /// (`expired`).
    #[serde(serialize_with = "crate::duration::serialize_text")]
    #[schemars(with = "crate::duration::DurationText")]
    pub paused_retention: Duration,
    /// Credits an hour held while a metered sandbox is paused (zero: free).
    pub paused_price_per_hour: Micros,
    /// Credits an hour for each snapshot kept (zero: free).
    pub snapshot_price_per_hour: Micros,
    pub routes: Vec<Route>,
    pub source: ProfileSource,
}

impl Profile {
    /// Check `--input` values against the inputs this profile accepts and
    /// fill in the defaults. Unknown and missing inputs are all named in one
    /// `InvalidInput` error whose hint lists the accepted inputs.
    pub fn check_inputs(
        &self,
        given: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let unknown: Vec<String> = given
            .keys()
            .filter(|k| !self.inputs.contains_key(*k))
            .map(|k| format!("`{k}`"))
            .collect();
        let missing: Vec<String> = self
            .inputs
            .iter()
            .filter(|(name, spec)| spec.required && !given.contains_key(*name))
            .map(|(name, _)| format!("`{name}`"))
            .collect();
        if unknown.is_empty() && missing.is_empty() {
            let mut out = given.clone();
            for (name, spec) in &self.inputs {
                if let (false, Some(default)) = (out.contains_key(name), &spec.default) {
                    out.insert(name.clone(), default.clone());
                }
            }
            return Ok(out);
        }
        let plural = |v: &[String]| if v.len() == 1 { "" } else { "s" };
        let mut problems = Vec::new();
        if !unknown.is_empty() {
            problems.push(format!(
                "{} does not accept the input{} {}",
                self.id,
                plural(&unknown),
                unknown.join(", ")
            ));
        }
        if !missing.is_empty() {
            problems.push(format!(
                "{} needs the input{} {}",
                self.id,
                plural(&missing),
                missing.join(", ")
            ));
        }
        Err(Error::invalid_input(problems.join("; ")).with_hint(self.inputs_help()))
    }

    /// One line describing the accepted inputs, for hints.
    pub fn inputs_help(&self) -> String {
        if self.inputs.is_empty() {
            return format!("{} takes no inputs", self.id);
        }
        let each: Vec<String> = self
            .inputs
            .iter()
            .map(|(name, spec)| {
                let what = match (&spec.default, spec.required) {
                    (_, true) => "required".to_string(),
                    (Some(d), false) => format!("optional, default `{d}`"),
                    (None, false) => "optional".to_string(),
                };
                if spec.help.is_empty() {
                    format!("{name} ({what})")
                } else {
                    format!("{name} ({what}): {}", spec.help)
                }
            })
            .collect();
        format!("accepted inputs: {}", each.join("; "))
    }

    /// The TTL for a new sandbox: `default_ttl` when none is asked for; an
    /// `InvalidInput` error for zero or more than `max_ttl`.
    pub fn resolve_ttl(&self, asked: Option<Duration>) -> Result<Duration> {
        let Some(ttl) = asked else {
            return Ok(self.default_ttl);
        };
        let max = format_duration(self.max_ttl);
        if ttl < Duration::from_secs(1) {
            return Err(Error::invalid_input(format!(
                "a TTL of {ttl:?} is too short; {} allows from 1s up to {max}",
                self.id
            ))
            .with_hint(format!("ask for a TTL between 1s and {max}")));
        }
        if ttl > self.max_ttl {
            return Err(Error::invalid_input(format!(
                "a TTL of {} is longer than the maximum {max} of {}",
                format_duration(ttl),
                self.id
            ))
            .with_hint(format!("ask for at most {max}")));
        }
        Ok(ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        let mut inputs = BTreeMap::new();
        inputs.insert(
            "repo".to_string(),
            InputSpec {
                required: true,
                help: "path to the repo".into(),
                default: None,
            },
        );
        inputs.insert(
            "template".to_string(),
            InputSpec {
                required: false,
                help: "the template".into(),
                default: Some("base".into()),
            },
        );
        inputs.insert(
            "tag".to_string(),
            InputSpec {
                required: false,
                help: String::new(),
                default: None,
            },
        );
        Profile {
            id: "profile.t".into(),
            version: 1,
            description: String::new(),
            aliases: Vec::new(),
            inputs,
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(7200),
            ready_timeout: Duration::from_secs(60),
            policy: Policy::Ordered,
            paused_retention: crate::profile::parse::DEFAULT_PAUSED_RETENTION,
            paused_price_per_hour: Micros::ZERO,
            snapshot_price_per_hour: Micros::ZERO,
            routes: Vec::new(),
            source: ProfileSource::Builtin,
        }
    }

    fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn check_inputs_fills_defaults() {
        let p = profile();
        let out = p.check_inputs(&given(&[("repo", "/r")])).unwrap();
        assert_eq!(out, given(&[("repo", "/r"), ("template", "base")]));
        let out = p
            .check_inputs(&given(&[("repo", "/r"), ("template", "gpu"), ("tag", "x")]))
            .unwrap();
        assert_eq!(out["template"], "gpu");
        assert_eq!(out["tag"], "x");
    }

    #[test]
    fn check_inputs_names_every_unknown_and_missing_input() {
        let p = profile();
        let e = p
            .check_inputs(&given(&[("rpo", "/r"), ("extra", "1")]))
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert_eq!(
            e.message(),
            "profile.t does not accept the inputs `extra`, `rpo`; profile.t needs the input `repo`"
        );
        assert_eq!(
            e.hint(),
            Some("accepted inputs: repo (required): path to the repo; tag (optional); template (optional, default `base`): the template")
        );
        let mut none = profile();
        none.inputs.clear();
        let e = none.check_inputs(&given(&[("x", "1")])).unwrap_err();
        assert_eq!(e.hint(), Some("profile.t takes no inputs"));
    }

    #[test]
    fn resolve_ttl_defaults_and_bounds() {
        let p = profile();
        assert_eq!(p.resolve_ttl(None).unwrap(), Duration::from_secs(3600));
        assert_eq!(
            p.resolve_ttl(Some(Duration::from_secs(7200))).unwrap(),
            Duration::from_secs(7200)
        );
        let e = p
            .resolve_ttl(Some(Duration::from_secs(3 * 3600)))
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert_eq!(
            e.message(),
            "a TTL of 3h is longer than the maximum 2h of profile.t"
        );
        assert_eq!(e.hint(), Some("ask for at most 2h"));
        let e = p.resolve_ttl(Some(Duration::ZERO)).unwrap_err();
        assert!(
            e.message().contains("0ns") && e.message().contains("2h"),
            "{}",
            e.message()
        );
        let e = p.resolve_ttl(Some(Duration::from_millis(500))).unwrap_err();
        assert!(e.message().contains("500ms"), "{}", e.message());
    }
}
