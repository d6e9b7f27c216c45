//! Host telemetry and the canary (`profile.sandbox-canary`).
//!
//! - [`gather`] reads a host's [`HostInventory`] (CPUs, load, memory, disk,
//!   kernel, docker, running canary venues) with one script through the
//!   host's transport, so it works on `local` and on SSH hosts alike;
//!   [`inventory_script`] and [`parse_inventory`] are its two halves.
//! - [`agent_main`] is the canary agent: the sandboxer binary itself, run on
//!   the host as `sandboxer agent --venue DIR --sandbox-id ID --deadline T`.
//!   It collects the same inventory natively, reports ready, and exits by
//!   itself at its deadline.
//! - [`CanaryExtension`] (`ext.canary`) deploys and runs that agent through
//!   the transport and reports the inventory as the sandbox's telemetry.
//!
//! The venue files and every inventory field are described in the crate
//! README.
//!
//! ```
//! use sandboxer_core::extension::Extension;
//! use sandboxer_telemetry::{gather, parse_inventory, CanaryExtension};
//! use sandboxer_transport::LocalTransport;
//!
//! // The parser is pure: tagged lines in, inventory out.
//! let inv = parse_inventory("local", "inv.format=1\ninv.cpus=4\ninv.loadavg=0.50 0.40 0.30 1/99 42\n").unwrap();
//! assert_eq!((inv.cpus, inv.load_1), (Some(4), Some(0.5)));
//!
//! // gather = one exec of the script on the host + the parser.
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let local = LocalTransport::new(std::env::temp_dir().join("sandboxer-doc"));
//! let inv = gather(&local).await.unwrap();
//! assert_eq!(inv.host, "local");
//! assert!(inv.cpus.unwrap() >= 1);
//! # });
//!
//! // The canary deploys whatever binary it is given; the CLI gives itself.
//! let canary = CanaryExtension::new(std::env::current_exe().unwrap());
//! assert_eq!(canary.id(), "ext.canary");
//! assert!(canary.capabilities().extend && canary.capabilities().list_resources);
//! ```

mod agent;
mod canary;
mod inventory;
mod sh;

pub use agent::{agent_main, files as venue_files, AgentExited, AgentReady, AGENT_VERSION};
pub use canary::{CanaryExtension, CANARY_EXTENSION_ID, VENUE_RESOURCE_KIND};
pub use inventory::{gather, inventory_script, parse_inventory, DockerInfo, HostInventory};
