//! [`DbLedger`] as the manager's [`Billing`].

use chrono::{DateTime, Utc};
use sandboxer_core::billing::{Billing, HoldRequest};
use sandboxer_core::credits::Micros;
use sandboxer_core::model::{Actor, Cost};
use sandboxer_core::store::db::Tx;
use sandboxer_core::Result;

use crate::db::{apply_in, hold_in, hold_route_in};
use crate::state::{Entry, HoldState};
use crate::DbLedger;

impl Billing for DbLedger {
    fn available(&self, actor: &Actor) -> Result<Micros> {
        Ok(self.balance(actor)?.available)
    }

    fn cost_in(&self, tx: &mut dyn Tx, sandbox_id: &str) -> Result<Option<Cost>> {
        Ok(hold_in(tx, sandbox_id)?.map(|h| Cost {
            price_per_hour: h.price_per_hour,
            held: h.amount,
            spent: h.spent,
            settled: match h.state {
                HoldState::Open | HoldState::Paused => None,
                HoldState::Settled => Some(h.cost.unwrap_or_default()),
                HoldState::Voided => Some(Micros::ZERO),
            },
        }))
    }

    fn hold_in(&self, tx: &mut dyn Tx, req: &HoldRequest) -> Result<()> {
        hold_route_in(tx, req, self.now()).map(|_| ())
    }

    fn void_in(&self, tx: &mut dyn Tx, sandbox_id: &str) -> Result<()> {
        if let Some(h) = hold_in(tx, sandbox_id)?.filter(|h| h.state == HoldState::Open) {
            apply_in(tx, &Entry::void_of(&h, self.now()))?;
        }
        Ok(())
    }

    fn settle_in(
        &self,
        tx: &mut dyn Tx,
        sandbox_id: &str,
        seconds: u64,
        at: DateTime<Utc>,
    ) -> Result<()> {
        if hold_in(tx, sandbox_id)?.is_some_and(|h| h.state.is_unresolved()) {
            apply_in(tx, &Entry::settle(sandbox_id, seconds, at))?;
        }
        Ok(())
    }

    fn pause_in(
        &self,
        tx: &mut dyn Tx,
        sandbox_id: &str,
        seconds: u64,
        paused_price_per_hour: Micros,
        paused_until: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        if let Some(h) = hold_in(tx, sandbox_id)?.filter(|h| h.state == HoldState::Open) {
            apply_in(
                tx,
                &Entry::pause(&h, seconds, paused_price_per_hour, paused_until, at),
            )?;
        }
        Ok(())
    }

    fn resume_in(
        &self,
        tx: &mut dyn Tx,
        sandbox_id: &str,
        paused_seconds: u64,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        if let Some(h) = hold_in(tx, sandbox_id)?.filter(|h| h.state == HoldState::Paused) {
            apply_in(tx, &Entry::resume(&h, paused_seconds, expires_at, at))?;
        }
        Ok(())
    }

    fn storage_in(
        &self,
        tx: &mut dyn Tx,
        snap: &sandboxer_core::snapshot::Snapshot,
        seconds: u64,
        at: DateTime<Utc>,
    ) -> Result<Micros> {
        let applied = apply_in(
            tx,
            &Entry::storage(
                &snap.id,
                &snap.actor,
                seconds,
                snap.storage_price_per_hour,
                at,
            ),
        )?;
        Ok(applied.entry.amount())
    }

    fn extend(&self, sandbox_id: &str, expires_at: DateTime<Utc>) -> Result<()> {
        match self.hold_of(sandbox_id)? {
            Some(h) if h.state == HoldState::Open && expires_at > h.expires_at => {
                DbLedger::extend(self, sandbox_id, expires_at).map(|_| ())
            }
            _ => Ok(()),
        }
    }

    fn reconcile(&self) -> Result<usize> {
        DbLedger::reconcile(self).map(|done| done.len())
    }
}
