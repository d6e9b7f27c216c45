//! sandboxer assembled in a few lines: [`StackBuilder`] wires the store, the
//! credits ledger, the extensions (each wrapped in the metering layer
//! [`Metered`], so no backend touches the ledger), the host connector and
//! the [`Manager`], from a data dir and a config dir. The CLI, the HTTP
//! server and the examples are built with it; so can any program that
//! embeds sandboxer.
//!
//! ```
//! use sandboxer_stack::StackBuilder;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let home = tempfile::tempdir().unwrap();
//! let stack = StackBuilder::new(home.path().join("data"), home.path().join("config"))
//!     .with_builtin_extensions(None) // compose, SaaS, VM; the canary needs the sandboxer binary
//!     .build()
//!     .unwrap();
//! assert!(stack.manager.registry().get("ext.compose-ssh").is_some());
//! assert!(stack.manager.registry().get("ext.canary").is_none());
//! assert!(stack.manager.list(&Default::default()).unwrap().is_empty());
//! # });
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use sandboxer_core::extension::{Extension, Registry};
use sandboxer_core::hosts::Hosts;
use sandboxer_core::manager::Manager;
use sandboxer_core::profile::Catalog;
use sandboxer_core::store::{JsonFileStore, Store};
use sandboxer_core::Result;
pub use sandboxer_credits::{FileLedger, Metered};

/// What [`StackBuilder::build`] assembles.
pub struct Stack {
    pub manager: Manager,
    /// The credits ledger the manager bills through (the same one every
    /// extension's metering layer holds and settles on).
    pub ledger: Arc<FileLedger>,
    pub store: Arc<dyn Store>,
}

/// Builds a [`Stack`]; see the crate docs.
pub struct StackBuilder {
    data_dir: PathBuf,
    config_dir: PathBuf,
    extensions: Vec<Arc<dyn Extension>>,
    builtins: Option<Option<PathBuf>>,
    lenient: bool,
    events: bool,
}

impl StackBuilder {
    /// A stack on `data_dir` (records, ledger, venues, uploads) and
    /// `config_dir` (`hosts.toml`, `profiles/`), with no extension yet.
    pub fn new(data_dir: impl Into<PathBuf>, config_dir: impl Into<PathBuf>) -> Self {
        StackBuilder {
            data_dir: data_dir.into(),
            config_dir: config_dir.into(),
            extensions: Vec::new(),
            builtins: None,
            lenient: false,
            events: false,
        }
    }

    /// The folders the environment names (`SANDBOXER_DATA_DIR`,
    /// `SANDBOXER_CONFIG_DIR`, then the XDG folders), with the State Hub's
    /// events on when `SANDBOXER_STATE_HUB_URL` is set.
    pub fn from_env() -> Self {
        StackBuilder::new(
            sandboxer_core::paths::data_dir(),
            sandboxer_core::paths::config_dir(),
        )
        .with_events(std::env::var_os("SANDBOXER_STATE_HUB_URL").is_some_and(|v| !v.is_empty()))
    }

    /// Every extension of this build: `ext.compose-ssh`, `ext.saas-stub`
    /// (configured from its environment variables), `ext.vm-packer`, and
    /// `ext.canary` when `agent_binary` names the `sandboxer` binary it
    /// deploys.
    pub fn with_builtin_extensions(mut self, agent_binary: Option<PathBuf>) -> Self {
        self.builtins = Some(agent_binary);
        self
    }

    /// One more extension (wrapped in the metering layer like the others).
    pub fn with_extension(mut self, ext: Arc<dyn Extension>) -> Self {
        self.extensions.push(ext);
        self
    }

    /// Lenient: a broken user profile or hosts file is a warning (the
    /// built-in profiles and `local` stand in), for commands that only read
    /// or end sandboxes. Strict (the default) refuses it.
    pub fn lenient(mut self, lenient: bool) -> Self {
        self.lenient = lenient;
        self
    }

    /// Queue a State Hub event with every transition.
    pub fn with_events(mut self, on: bool) -> Self {
        self.events = on;
        self
    }

    /// The store of this data dir.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::new(JsonFileStore::in_data_dir(&self.data_dir))
    }

    /// Assemble it, and resolve the ledger's holds whose sandboxes ended
    /// (after a crash between the ledger and the store).
    pub fn build(self) -> Result<Stack> {
        let hosts = if self.lenient {
            let (hosts, err) = Hosts::load_lenient(&self.config_dir);
            if let Some(e) = err {
                tracing::warn!("only the local host is usable: {e}");
            }
            hosts
        } else {
            Hosts::load(&self.config_dir)?
        };
        let catalog = match Catalog::load(&self.config_dir) {
            Ok(c) => c,
            Err(e) if self.lenient => {
                tracing::warn!("user profiles ignored: {e}");
                Catalog::builtin()
            }
            Err(e) => return Err(e),
        };
        let ledger = Arc::new(FileLedger::open(&self.data_dir)?);
        let mut backends: Vec<Arc<dyn Extension>> = Vec::new();
        if let Some(agent) = &self.builtins {
            if let Some(exe) = agent {
                backends.push(Arc::new(sandboxer_telemetry::CanaryExtension::new(
                    exe.clone(),
                )));
            }
            backends.push(Arc::new(
                sandboxer_ext_compose_ssh::ComposeSshExtension::new(),
            ));
            backends.push(Arc::new(
                sandboxer_ext_saas_stub::SaasStubExtension::from_env()?,
            ));
            backends.push(Arc::new(sandboxer_ext_vm_packer::VmPackerExtension::new()));
        }
        backends.extend(self.extensions.iter().cloned());
        let mut registry = Registry::new();
        for ext in backends {
            registry.register(Arc::new(Metered::new(ext, ledger.clone())));
        }
        let store = self.store();
        let manager = Manager::new(
            store.clone(),
            catalog,
            hosts,
            registry,
            Arc::new(sandboxer_transport::DefaultConnector::with_config_dir(
                self.data_dir.clone(),
                self.config_dir.clone(),
            )),
        )
        .with_billing(ledger.clone())
        .with_uploads_dir(self.data_dir.join(sandboxer_core::uploads::UPLOADS_DIR))
        .with_events(self.events);
        ledger.reconcile_with_store(manager.store().as_ref())?;
        Ok(Stack {
            manager,
            ledger,
            store,
        })
    }
}
