//! sandboxer's prepaid credits: one ledger across backends, with holds at
//! create and per-second settlement at teardown.
//!
//! - [`state`] is the pure core: [`Entry`] (grant, hold, extend, settle,
//!   void), [`LedgerState::apply`] enforcing every rule, and [`check`], which
//!   recomputes the balances from the entries and lists every broken
//!   invariant. No I/O.
//! - [`FileLedger`] makes it durable: `ledger.jsonl` in the data dir,
//!   append-only, each entry `fdatasync`ed before the operation it pays for
//!   proceeds, shared by threads and processes under `ledger.lock`.
//! - [`Metered`] is the metering layer: it wraps an extension, holds before
//!   provisioning (refusing with `InsufficientCredits` before anything is
//!   made), voids on failure or cancellation, settles after teardown.
//!   Backends never touch the ledger.
//!
//! Amounts are [`Micros`](sandboxer_core::credits::Micros): integers of
//! micro-credits inside, decimal strings with at most 6 places outside.
//!
//! ```
//! use chrono::{Duration, Utc};
//! use sandboxer_core::credits::Micros;
//! use sandboxer_credits::{FileLedger, HoldRequest, HoldState};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let ledger = FileLedger::open(dir.path()).unwrap();
//! let ops = "adm:ops".parse().unwrap();
//! let bob = "agt:bob".parse().unwrap();
//! ledger.grant(&ops, &bob, Micros::parse_amount("5").unwrap(), None).unwrap();
//!
//! // Create on a route at 2 credits/h with a TTL of one hour: 2 held.
//! let created_at = Utc::now();
//! ledger
//!     .hold(&HoldRequest {
//!         sandbox_id: "sbx-example01".into(),
//!         actor: bob.clone(),
//!         price_per_hour: Micros::parse_amount("2").unwrap(),
//!         extension: "ext.saas-stub".into(),
//!         host: "saas".into(),
//!         profile: "profile.saas".into(),
//!         created_at,
//!         expires_at: created_at + Duration::hours(1),
//!     })
//!     .unwrap();
//! assert_eq!(ledger.balance(&bob).unwrap().held.to_string(), "2");
//!
//! // Destroyed after 15 minutes: 0.5 spent, 1.5 released.
//! ledger.settle("sbx-example01", 900, Utc::now()).unwrap();
//! let account = ledger.balance(&bob).unwrap();
//! assert_eq!((account.available.to_string(), account.spent.to_string()), ("4.5".into(), "0.5".into()));
//! assert_eq!(ledger.usage(&bob).unwrap()[0].state, HoldState::Settled);
//! assert!(ledger.check().unwrap().is_ok());
//! ```

pub mod billing;
pub mod check;
pub mod file;
pub mod layer;
pub mod state;

pub use file::FileLedger;
pub use layer::Metered;
pub use state::{
    check, Account, Applied, CheckReport, Entry, EntryFilter, EntryKind, Fate, Hold, HoldRequest,
    HoldState, LedgerState, UsageRow, Violation,
};
