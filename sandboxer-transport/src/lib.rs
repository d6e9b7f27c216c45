//! Host transports for sandboxer: the implementations of
//! [`sandboxer_core::transport::Transport`] that run commands and move files
//! on a placement host.
//!
//! - [`LocalTransport`] is the built-in host `local`: `sh -c` here, files
//!   through the local filesystem.
//! - [`SshTransport`] is an SSH host from `hosts.toml`: one SSH connection
//!   (ssh2) per transport, host key checked against a known-hosts file, key
//!   authentication, connect and command timeouts. [`trust_host_key`]
//!   records a host's key (the explicit "accept this key" step).
//! - [`connect`] picks the transport for a `HostSpec`; [`DefaultConnector`]
//!   is the `sandboxer_core::transport::Connector` the manager holds, and it
//!   calls [`connect`]: one connection per operation.
//!
//! Extensions only ever see `Arc<dyn Transport>`, so the same extension code
//! runs on `local` and on SSH hosts. Every value spliced into a script goes
//! through [`shell_quote`].
//!
//! ```
//! use sandboxer_core::transport::{shell_quote, Transport};
//! use sandboxer_transport::LocalTransport;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = std::env::temp_dir().join(format!("sandboxer-doc-{}", std::process::id()));
//! let t = LocalTransport::new(dir.clone());
//! assert_eq!((t.host(), t.address()), ("local", "127.0.0.1"));
//!
//! let file = t.data_dir().join("notes").join("hello.txt");
//! t.write_file(file.as_str(), b"hi there\n", 0o600).await.unwrap();
//! let out = t.exec(&format!("cat {}", shell_quote(file.as_str())), None).await.unwrap();
//! assert!(out.success());
//! assert_eq!(out.stdout_str(), "hi there\n");
//! assert_eq!(t.read_file(t.data_dir().join("missing").as_str()).await.unwrap(), None);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # });
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use sandboxer_core::hosts::{HostKind, HostSpec};
use sandboxer_core::transport::{Connector, Transport};
use sandboxer_core::Result;

mod local;
mod ssh;

pub use local::LocalTransport;
pub use sandboxer_core::transport::{shell_quote, ExecOutput};
pub use ssh::{known_hosts_path, trust_host_key, SshAuth, SshLogin, SshTransport};

/// The transport to `spec`'s host, connected.
///
/// `local` gets a [`LocalTransport`] whose data dir is the host's `data_dir`
/// when the hosts file sets one, else `local_data_dir` (sandboxer's own data
/// dir); its address and command timeout come from `spec`. SSH hosts get an
/// [`SshTransport`], whose host key is checked against the host's
/// `known_hosts`, else `config_dir/known_hosts`.
pub async fn connect(
    spec: &HostSpec,
    local_data_dir: &Path,
    config_dir: &Path,
) -> Result<Arc<dyn Transport>> {
    match &spec.kind {
        HostKind::Local => {
            let data_dir = match &spec.data_dir {
                Some(d) => sandboxer_core::paths::expand_home(d),
                None => local_data_dir.to_path_buf(),
            };
            let t = LocalTransport::new(data_dir)
                .with_name(&spec.name)
                .with_address(&spec.address)
                .with_command_timeout(spec.command_timeout);
            Ok(Arc::new(t))
        }
        HostKind::Ssh { .. } => Ok(Arc::new(SshTransport::connect(spec, config_dir).await?)),
    }
}

/// The [`Connector`] the manager holds: [`connect`] with sandboxer's own
/// data dir as `local`'s default and its config dir for the default
/// known-hosts file. Each `connect` is a new connection, used for the
/// commands of one operation.
#[derive(Debug, Clone)]
pub struct DefaultConnector {
    local_data_dir: PathBuf,
    config_dir: PathBuf,
}

impl DefaultConnector {
    /// `local_data_dir` is sandboxer's data dir on this machine; the config
    /// dir is [`sandboxer_core::paths::config_dir`].
    pub fn new(local_data_dir: PathBuf) -> Self {
        Self::with_config_dir(local_data_dir, sandboxer_core::paths::config_dir())
    }

    /// As [`DefaultConnector::new`], with the config dir (where the default
    /// `known_hosts` is) given.
    pub fn with_config_dir(local_data_dir: PathBuf, config_dir: PathBuf) -> Self {
        DefaultConnector {
            local_data_dir,
            config_dir,
        }
    }
}

#[async_trait]
impl Connector for DefaultConnector {
    async fn connect(&self, host: &HostSpec) -> Result<Arc<dyn Transport>> {
        connect(host, &self.local_data_dir, &self.config_dir).await
    }
}
