//! sandboxer assembled in a few lines: [`StackBuilder`] wires the database
//! (SQLite in the data dir, or the PostgreSQL one a URL names), the credits
//! ledger in it, the extensions (each wrapped in the metering layer
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

use sandboxer_core::clock::Clock;
use sandboxer_core::extension::{Extension, Registry};
use sandboxer_core::hosts::Hosts;
use sandboxer_core::manager::Manager;
use sandboxer_core::profile::Catalog;
use sandboxer_core::store::db::Db;
use sandboxer_core::Result;
pub use sandboxer_credits::{DbLedger, Metered};

pub mod import;

/// What [`StackBuilder::build`] assembles.
pub struct Stack {
    pub manager: Manager,
    /// The credits ledger the manager bills through (the same one every
    /// extension's metering layer holds and settles on).
    pub ledger: Arc<DbLedger>,
    pub db: Arc<dyn Db>,
}

/// Builds a [`Stack`]; see the crate docs.
pub struct StackBuilder {
    data_dir: PathBuf,
    config_dir: PathBuf,
    extensions: Vec<Arc<dyn Extension>>,
    builtins: Option<Option<PathBuf>>,
    lenient: bool,
    events: bool,
    database: Option<String>,
    db: Option<Arc<dyn Db>>,
    clock: Arc<dyn Clock>,
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
            database: None,
            db: None,
            clock: sandboxer_core::clock::system(),
        }
    }

    /// One clock for the manager's record times and the metering layer's
    /// settles (tests pass a manual one and move it).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Use this database, already open (a process that opened it once).
    pub fn with_database_handle(mut self, db: Arc<dyn Db>) -> Self {
        self.db = Some(db);
        self
    }

    /// Keep the state in the PostgreSQL database `url` names
    /// (`postgres://...`) instead of the embedded SQLite one in the data
    /// dir (`None`, or an empty URL).
    pub fn with_database(mut self, url: Option<String>) -> Self {
        self.database = url.filter(|u| !u.trim().is_empty());
        self
    }

    /// The folders the environment names (`SANDBOXER_DATA_DIR`,
    /// `SANDBOXER_CONFIG_DIR`, then the XDG folders), with the State Hub's
    /// events on when `SANDBOXER_STATE_HUB_URL` is set, and the database
    /// `SANDBOXER_DATABASE_URL` names (the embedded one when unset).
    pub fn from_env() -> Self {
        StackBuilder::new(
            sandboxer_core::paths::data_dir(),
            sandboxer_core::paths::config_dir(),
        )
        .with_events(std::env::var_os("SANDBOXER_STATE_HUB_URL").is_some_and(|v| !v.is_empty()))
        .with_database(std::env::var(DATABASE_ENV).ok())
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

    /// The database: opened (created and migrated when new), with the
    /// files of release 0.1 in the data dir imported into it the first time
    /// (see [`import`]).
    pub fn open_db(&self) -> Result<Arc<dyn Db>> {
        let db = sandboxer_store::open(self.database.as_deref(), &self.data_dir)?;
        import::import_legacy(db.as_ref(), &self.data_dir, &self.config_dir)?;
        Ok(db)
    }

    /// Assemble it.
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
        let db = match &self.db {
            Some(db) => db.clone(),
            None => self.open_db()?,
        };
        let ledger = Arc::new(DbLedger::new(db.clone()).with_clock(self.clock.clone()));
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
            registry.register(Arc::new(
                Metered::new(ext, ledger.clone())
                    .settled_by_manager()
                    .with_clock(self.clock.clone()),
            ));
        }
        let manager = Manager::new(
            db.clone(),
            catalog,
            hosts,
            registry,
            Arc::new(sandboxer_transport::DefaultConnector::with_config_dir(
                self.data_dir.clone(),
                self.config_dir.clone(),
            )),
        )
        .with_billing(ledger.clone())
        .with_clock(self.clock.clone())
        .with_uploads_dir(self.data_dir.join(sandboxer_core::uploads::UPLOADS_DIR))
        .with_events(self.events);
        Ok(Stack {
            manager,
            ledger,
            db,
        })
    }
}

/// The environment variable naming a shared database (`postgres://...`).
pub const DATABASE_ENV: &str = "SANDBOXER_DATABASE_URL";
