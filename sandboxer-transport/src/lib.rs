//! Host transports for sandboxer: the implementations of
//! [`sandboxer_core::transport::Transport`] that run commands and move files
//! on a placement host.
//!
//! - [`LocalTransport`] is the built-in host `local`: `sh -c` here, files
//!   through the local filesystem.
//! - SSH hosts get their own transport (a `ssh` module, not in this build
//!   yet); [`connect`] answers `Unsupported` for them until then.
//! - [`DefaultConnector`] is the `sandboxer_core::transport::Connector` the
//!   manager holds; it calls [`connect`].
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
//! let file = format!("{}/notes/hello.txt", t.data_dir());
//! t.write_file(&file, b"hi there\n", 0o600).await.unwrap();
//! let out = t.exec(&format!("cat {}", shell_quote(&file)), None).await.unwrap();
//! assert!(out.success());
//! assert_eq!(out.stdout_str(), "hi there\n");
//! assert_eq!(t.read_file(&format!("{}/missing", t.data_dir())).await.unwrap(), None);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # });
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use sandboxer_core::hosts::{HostKind, HostSpec};
use sandboxer_core::transport::{Connector, Transport};
use sandboxer_core::{Error, Result};

mod local;
// mod ssh; — the SSH transport (one ssh2 session per host) goes here.

pub use local::LocalTransport;
pub use sandboxer_core::transport::{shell_quote, ExecOutput};

/// The transport to `spec`'s host.
///
/// `local` gets a [`LocalTransport`] whose data dir is the host's `data_dir`
/// when the hosts file sets one, else `local_data_dir` (sandboxer's own data
/// dir); its address and command timeout come from `spec`. SSH hosts answer
/// `Unsupported` until the SSH transport lands.
pub fn connect(spec: &HostSpec, local_data_dir: &Path) -> Result<Arc<dyn Transport>> {
    match &spec.kind {
        HostKind::Local => {
            let data_dir = match &spec.data_dir {
                Some(d) => expand_home(d),
                None => local_data_dir.to_path_buf(),
            };
            let t = LocalTransport::new(data_dir)
                .with_name(&spec.name)
                .with_address(&spec.address)
                .with_command_timeout(spec.command_timeout);
            Ok(Arc::new(t))
        }
        HostKind::Ssh { .. } => Err(Error::unsupported(
            "SSH hosts need the SSH transport (not in this build yet)",
        )
        .with_hint(format!(
            "host `{}` is an SSH host; use `local` or a build with the SSH transport",
            spec.name
        ))),
    }
}

/// The [`Connector`] the manager holds: [`connect`] with sandboxer's own
/// data dir as `local`'s default.
#[derive(Debug, Clone)]
pub struct DefaultConnector {
    local_data_dir: PathBuf,
}

impl DefaultConnector {
    /// `local_data_dir` is sandboxer's data dir on this machine.
    pub fn new(local_data_dir: PathBuf) -> Self {
        DefaultConnector { local_data_dir }
    }
}

#[async_trait]
impl Connector for DefaultConnector {
    async fn connect(&self, host: &HostSpec) -> Result<Arc<dyn Transport>> {
        connect(host, &self.local_data_dir)
    }
}

/// `~/x` -> `$HOME/x`; anything else unchanged.
fn expand_home(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => sandboxer_core::paths::home_dir().join(rest),
        None if p == "~" => sandboxer_core::paths::home_dir(),
        None => PathBuf::from(p),
    }
}
