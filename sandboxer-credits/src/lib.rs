//! sandboxer's prepaid credits: one ledger across backends, with holds at
//! create and per-second settlement at teardown.
//!
//! - [`state`] is the pure core: [`Entry`] (grant, hold, extend, settle,
//!   void), [`LedgerState::apply`] enforcing every rule, and [`check`], which
//!   recomputes the balances from the entries and lists every broken
//!   invariant. No I/O.
//! - [`DbLedger`] makes it durable in sandboxer's database, beside the
//!   sandbox records: each entry is applied in a transaction with the
//!   account and hold it moves ([`db::apply_in`]), so concurrent creates on
//!   any process or replica never overdraw an account.
//! - [`legacy`] reads `ledger.jsonl` of release 0.1 for the one-time import.
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
//! use sandboxer_credits::{DbLedger, HoldRequest, HoldState};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let db = sandboxer_store::SqliteDb::open(&dir.path().join("sandboxer.db")).unwrap();
//! let ledger = DbLedger::new(std::sync::Arc::new(db));
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
pub mod db;
pub mod layer;
pub mod legacy;
pub mod state;

pub use db::DbLedger;
pub use layer::Metered;
pub use state::{
    check, Account, Applied, CheckReport, Entry, EntryFilter, EntryKind, Fate, Hold, HoldRequest,
    HoldState, LedgerState, UsageRow, Violation,
};
