//! What the manager needs from the credits ledger, as a trait so the core
//! does not depend on the ledger crate (`sandboxer-credits` implements it).
//! Holds and settlements themselves happen in the metering layer around the
//! extensions; the manager only asks for balances, voids a hold when
//! provisioning fails after it, extends holds, and copies costs into the
//! record.

use chrono::{DateTime, Utc};

use crate::credits::Micros;
use crate::model::{Actor, Cost, Sandbox};
use crate::store::db::Tx;
use crate::Result;

/// Whole seconds from `from` to `to`, a started second counted, never
/// negative.
pub fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    let ms = (to - from).num_milliseconds();
    if ms <= 0 {
        0
    } else {
        (ms as u64).div_ceil(1000)
    }
}

/// What a hold is for: everything but the amount, which is derived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRequest {
    pub sandbox_id: String,
    pub actor: Actor,
    pub price_per_hour: Micros,
    pub extension: String,
    pub host: String,
    pub profile: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl HoldRequest {
    /// `price_per_hour x TTL`, rounded up to the micro-credit.
    pub fn amount(&self) -> Micros {
        self.price_per_hour
            .per_hour_times_secs(seconds_between(self.created_at, self.expires_at))
    }
}

impl HoldRequest {
    /// The hold a metered create takes for `sbx` on its chosen route:
    /// `price_per_hour` for its whole TTL, from its creation.
    pub fn for_sandbox(sbx: &Sandbox, price_per_hour: Micros) -> HoldRequest {
        HoldRequest {
            sandbox_id: sbx.id.clone(),
            actor: sbx.actor.clone(),
            price_per_hour,
            extension: sbx.extension.clone(),
            host: sbx.host.clone(),
            profile: sbx.profile.clone(),
            created_at: sbx.created_at,
            expires_at: sbx.expires_at.unwrap_or(sbx.created_at),
        }
    }
}

pub trait Billing: Send + Sync + 'static {
    /// The actor's available balance.
    fn available(&self, actor: &Actor) -> Result<Micros>;

    /// The cost of a metered sandbox so far (`None` for free ones), read in
    /// the caller's transaction.
    fn cost_in(&self, tx: &mut dyn crate::store::db::Tx, sandbox_id: &str) -> Result<Option<Cost>>;

    /// Take the hold of a metered create in the caller's transaction (the
    /// one that records the sandbox): refused with `InsufficientCredits`
    /// when the balance does not cover it, and then nothing is recorded.
    fn hold_in(&self, tx: &mut dyn Tx, req: &HoldRequest) -> Result<()>;

    /// Release the sandbox's hold entirely, in the caller's transaction
    /// (provisioning failed, or a create that never became ready is ended).
    /// No open hold is fine.
    fn void_in(&self, tx: &mut dyn Tx, sandbox_id: &str) -> Result<()>;

    /// Settle the sandbox's open hold for the `seconds` it ran, in the
    /// caller's transaction (the one that records it `destroyed`). No open
    /// hold (free, voided, or settled already) is fine.
    fn settle_in(
        &self,
        tx: &mut dyn Tx,
        sandbox_id: &str,
        seconds: u64,
        at: DateTime<Utc>,
    ) -> Result<()>;

    /// The sandbox pauses at `at`: pay its `seconds` of running since its
    /// last resume (or creation), release the rest, and hold the paused
    /// price until `paused_until`, in the caller's transaction.
    /// `InsufficientCredits` when the paused price cannot be held. No open
    /// hold (a free sandbox) is fine.
    fn pause_in(
        &self,
        tx: &mut dyn Tx,
        sandbox_id: &str,
        seconds: u64,
        paused_price_per_hour: Micros,
        paused_until: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<()>;

    /// The sandbox resumes at `at`: pay its `paused_seconds`, and hold the
    /// running price until `expires_at`, in the caller's transaction;
    /// refused with `InsufficientCredits` (and nothing written) when the
    /// balance cannot cover it. No paused hold (a free sandbox) is fine.
    fn resume_in(
        &self,
        tx: &mut dyn Tx,
        sandbox_id: &str,
        paused_seconds: u64,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<()>;

    /// Pay for keeping `snap` `seconds` at its storage price, in the
    /// caller's transaction (the one that records it deleted). Storage is
    /// not held in advance, so it is never more than the actor's available
    /// balance; returns what was paid.
    fn storage_in(
        &self,
        tx: &mut dyn Tx,
        snap: &crate::snapshot::Snapshot,
        seconds: u64,
        at: DateTime<Utc>,
    ) -> Result<Micros>;

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
