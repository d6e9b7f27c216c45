//! The heart of sandboxer: the sandbox record and its lifecycle state
//! machine, profiles and the built-in catalog, the extension and transport
//! contracts, the store, and the [`manager::Manager`] that drives a request
//! from create through ready to teardown.
//!
//! The pure modules ([`lifecycle`], [`profile::parse`], [`duration`],
//! [`credits`], [`model`]) do no I/O; the store and the manager do.
//!
//! ```
//! use sandboxer_core::lifecycle::{step, Event, EndReason, Lifecycle, State};
//!
//! let (ready, _) = step(&Lifecycle::Provisioning, &Event::Ready).unwrap();
//! let (ending, actions) = step(&ready, &Event::Destroy(EndReason::Expired)).unwrap();
//! assert_eq!(ending.state(), State::Destroying);
//! assert!(!actions.is_empty());
//! assert!(step(&Lifecycle::Provisioning, &Event::TornDown).is_err());
//! ```

pub mod billing;
pub mod clock;
pub mod credits;
pub mod duration;
pub mod e2b;
pub mod error;
pub mod events;
pub mod extension;
pub mod fsutil;
pub mod hosts;
pub mod lifecycle;
pub mod manager;
pub mod model;
pub mod paths;
pub mod process;
pub mod profile;
pub mod reaper;
pub mod route_config;
pub mod routing;
pub mod snapshot;
pub mod store;
pub mod suspend;
pub mod transport;
pub mod uploads;

pub use error::{Error, ErrorKind, Result};
