//! [`FileLedger`] as the manager's [`Billing`].

use chrono::{DateTime, Utc};
use sandboxer_core::billing::Billing;
use sandboxer_core::credits::Micros;
use sandboxer_core::model::{Actor, Cost};
use sandboxer_core::Result;

use crate::state::HoldState;
use crate::FileLedger;

impl Billing for FileLedger {
    fn available(&self, actor: &Actor) -> Result<Micros> {
        Ok(self.balance(actor)?.available)
    }

    fn cost_of(&self, sandbox_id: &str) -> Result<Option<Cost>> {
        Ok(self.hold_of(sandbox_id)?.map(|h| Cost {
            price_per_hour: h.price_per_hour,
            held: h.amount,
            settled: match h.state {
                HoldState::Open => None,
                HoldState::Settled => Some(h.cost.unwrap_or_default()),
                HoldState::Voided => Some(Micros::ZERO),
            },
        }))
    }

    fn void(&self, sandbox_id: &str) -> Result<()> {
        if self
            .hold_of(sandbox_id)?
            .is_some_and(|h| h.state == HoldState::Open)
        {
            FileLedger::void(self, sandbox_id)?;
        }
        Ok(())
    }

    fn extend(&self, sandbox_id: &str, expires_at: DateTime<Utc>) -> Result<()> {
        match self.hold_of(sandbox_id)? {
            Some(h) if h.state == HoldState::Open && expires_at > h.expires_at => {
                FileLedger::extend(self, sandbox_id, expires_at).map(|_| ())
            }
            _ => Ok(()),
        }
    }
}
