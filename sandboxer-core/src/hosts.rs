//! Placement hosts: the built-in `local` host and SSH hosts from
//! `hosts.toml` in the config dir. The file is parsed with diagnostics that
//! name file, line and column (see [`parse_hosts`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::{Error, Result};

/// The name of the built-in host.
pub const LOCAL: &str = "local";

/// How sandboxer reaches a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum HostKind {
    /// This machine, no SSH.
    Local,
    /// An SSH host.
    Ssh {
        port: u16,
        user: String,
        /// Private key file (ed25519 or RSA).
        identity_file: PathBuf,
        /// Known-hosts file the host key is checked against; default
        /// `known_hosts` in the config dir.
        known_hosts: Option<PathBuf>,
    },
}

/// One placement host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostSpec {
    pub name: String,
    /// Address to connect to, and the address consumers reach services on.
    pub address: String,
    pub kind: HostKind,
    /// Maximum live sandboxes placed here; `None` is unlimited.
    pub capacity: Option<u32>,
    pub labels: BTreeMap<String, String>,
    /// sandboxer's data folder on the host; default
    /// `~/.local/share/sandboxer` of the login user.
    pub data_dir: Option<String>,
    #[serde(serialize_with = "crate::duration::serialize_text")]
    pub connect_timeout: Duration,
    #[serde(serialize_with = "crate::duration::serialize_text")]
    pub command_timeout: Duration,
}

impl HostSpec {
    /// The built-in `local` host.
    pub fn local() -> Self {
        HostSpec {
            name: LOCAL.to_string(),
            address: "127.0.0.1".to_string(),
            kind: HostKind::Local,
            capacity: None,
            labels: BTreeMap::new(),
            data_dir: None,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(600),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self.kind, HostKind::Local)
    }
}

/// `hosts.toml`: the configured hosts and the default one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hosts {
    /// Where it was read from (`None` when there is no file).
    pub path: Option<PathBuf>,
    /// `default = "NAME"`, else the first host listed, else `local`.
    pub default: String,
    /// Configured hosts in file order (not including `local`).
    pub hosts: Vec<HostSpec>,
    /// Why the hosts file could not be read, when it was loaded leniently
    /// ([`Hosts::load_lenient`]): then only `local` is known, and asking for
    /// any other host is that error.
    #[serde(skip)]
    pub unreadable: Option<String>,
}

impl Hosts {
    /// No hosts file: only `local`.
    pub fn local_only() -> Self {
        Hosts {
            path: None,
            default: LOCAL.to_string(),
            hosts: Vec::new(),
            unreadable: None,
        }
    }

    /// Read `hosts.toml` from `config_dir`; a missing file is `local_only`.
    pub fn load(config_dir: &Path) -> Result<Self> {
        let path = config_dir.join("hosts.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_hosts(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Hosts::local_only()),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    /// As [`Hosts::load`], but a hosts file that cannot be read or parsed
    /// leaves `local` only, with the error kept: commands that never reach
    /// another host (list, get, a local sandbox's destroy, credits) keep
    /// working, and [`Hosts::require`] of any other host is that error.
    /// The error is also returned, for a warning.
    pub fn load_lenient(config_dir: &Path) -> (Self, Option<Error>) {
        match Self::load(config_dir) {
            Ok(h) => (h, None),
            Err(e) => {
                let mut h = Hosts::local_only();
                h.path = Some(config_dir.join("hosts.toml"));
                h.unreadable = Some(e.to_string());
                (h, Some(e))
            }
        }
    }

    /// The host called `name` (`local` is always there).
    pub fn get(&self, name: &str) -> Option<HostSpec> {
        if name == LOCAL {
            return Some(
                self.hosts
                    .iter()
                    .find(|h| h.name == LOCAL)
                    .cloned()
                    .unwrap_or_else(HostSpec::local),
            );
        }
        self.hosts.iter().find(|h| h.name == name).cloned()
    }

    /// Every host: `local` first, then the configured ones.
    pub fn all(&self) -> Vec<HostSpec> {
        let mut v = vec![self.get(LOCAL).expect("local always exists")];
        v.extend(self.hosts.iter().filter(|h| h.name != LOCAL).cloned());
        v
    }

    /// The host called `name`, or a `NotFound` that lists the known names.
    pub fn require(&self, name: &str) -> Result<HostSpec> {
        if let (Some(why), false) = (&self.unreadable, name == LOCAL) {
            return Err(
                Error::invalid_config(format!("host `{name}` cannot be used: {why}")).with_hint(
                    "fix the hosts file; commands that only read records keep working meanwhile",
                ),
            );
        }
        self.get(name).ok_or_else(|| {
            let names: Vec<String> = self.all().into_iter().map(|h| h.name).collect();
            let from = self
                .path
                .as_ref()
                .map(|p| format!(" (hosts file: {})", p.display()))
                .unwrap_or_else(|| " (no hosts file)".to_string());
            Error::not_found(format!("unknown host `{name}`{from}"))
                .with_hint(format!("known hosts: {}", names.join(", ")))
        })
    }
}

/// Parse `hosts.toml` text. Every error is reported at once, each with
/// `path:line:column` and a hint.
///
/// ```toml
/// default = "sandboxer01"          # optional
///
/// [[hosts]]
/// name = "sandboxer01"
/// address = "127.0.0.2"
/// port = 22                        # default 22
/// user = "sandboxer"
/// identity_file = "~/.ssh/id_ed25519"
/// known_hosts = "~/.config/sandboxer/known_hosts"   # optional
/// capacity = 4                     # optional, max live sandboxes
/// labels = { zone = "lab" }        # optional
/// data_dir = "/var/lib/sandboxer"  # optional
/// connect_timeout = "5s"           # optional
/// command_timeout = "10m"          # optional
/// ```
pub fn parse_hosts(path: &Path, text: &str) -> Result<Hosts> {
    crate::profile::parse::parse_hosts_toml(path, text)
}
