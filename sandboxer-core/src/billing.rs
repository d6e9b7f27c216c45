//! What the manager needs from the credits ledger, as a trait so the core
//! does not depend on the ledger crate (`sandboxer-credits` implements it).
//! Holds and settlements themselves happen in the metering layer around the
//! extensions; the manager only asks for balances, voids a hold when
//! provisioning fails after it, extends holds, and copies costs into the
//! record.

use chrono::{DateTime, Utc};

use crate::credits::Micros;
use crate::model::{Actor, Cost};
use crate::Result;

pub trait Billing: Send + Sync + 'static {
    /// The actor's available balance.
    fn available(&self, actor: &Actor) -> Result<Micros>;

    /// The cost of a metered sandbox so far (`None` for free ones), read in
    /// the caller's transaction.
    fn cost_in(&self, tx: &mut dyn crate::store::db::Tx, sandbox_id: &str) -> Result<Option<Cost>>;

    /// Release the sandbox's hold entirely (failed provisioning). No hold is
    /// fine.
    fn void(&self, sandbox_id: &str) -> Result<()>;

    /// Hold the extra time up to `expires_at`; refused with
    /// `InsufficientCredits` when the balance does not cover it. No hold
    /// (a free sandbox) is fine.
    fn extend(&self, sandbox_id: &str, expires_at: DateTime<Utc>) -> Result<()>;

    /// Resolve the open holds whose sandboxes are no longer live (ended:
    /// settle; failed or never recorded: void), after a process died
    /// between a hold and its record. The reaper runs it on every pass.
    /// Returns how many holds it resolved.
    fn reconcile(&self) -> Result<usize>;
}
