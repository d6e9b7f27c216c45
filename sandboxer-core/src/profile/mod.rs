//! Profiles: named, versioned recipes. The raw TOML walk and its diagnostics
//! live in [`parse`]; the built-in catalog in [`catalog`]. Pure except
//! [`Catalog::load`], which reads `profiles/*.toml` from the config dir.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::credits::Micros;

pub mod catalog;
pub mod parse;

pub use catalog::Catalog;
pub use parse::{parse_profile, Diagnostic};

/// How the routing resolver orders a profile's candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputSpec {
    pub required: bool,
    pub help: String,
    /// Used when the input is not given (only for optional inputs).
    pub default: Option<String>,
}

/// One way to fulfil a profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    pub id: String,
    pub version: u32,
    pub description: String,
    pub inputs: BTreeMap<String, InputSpec>,
    #[serde(with = "secs")]
    pub default_ttl: Duration,
    #[serde(with = "secs")]
    pub max_ttl: Duration,
    /// How long provisioning plus readiness may take.
    #[serde(with = "secs")]
    pub ready_timeout: Duration,
    pub policy: Policy,
    pub routes: Vec<Route>,
    pub source: ProfileSource,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::duration::format_duration(*d))
    }
}
