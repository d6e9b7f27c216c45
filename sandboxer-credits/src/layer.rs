//! [`Metered`]: the metering layer. It wraps any extension and pays for
//! metered routes in the ledger, so backends never touch it.
//!
//! When the route has a price (`ctx.price_per_hour > 0`):
//!
//! - `provision` first holds `price x TTL` (TTL = `expires_at - created_at`).
//!   Insufficient credits refuse it before the inner extension runs. When
//!   the inner provision fails, or its future is dropped (a cancelled
//!   create), the hold is voided.
//! - `teardown` tears down, then settles `price x` the seconds from
//!   `created_at` to now (never more than held; the rest is released) -
//!   unless the manager settles ([`Metered::settled_by_manager`]): then the
//!   settle commits with the record's move to `destroyed`, in the manager's
//!   transaction (`Billing::settle_in`).
//! - `extend` holds the extra time (or is refused) before the inner extend.
//!
//! Free routes pass straight through. Every ledger call is one short
//! database transaction, done inline, as the manager's are.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sandboxer_core::clock::Clock;
use sandboxer_core::credits::Micros;
use sandboxer_core::extension::{
    Capabilities, Extension, Provisioned, ReadyInfo, Resource, SandboxCtx,
};
use sandboxer_core::transport::Transport;
use sandboxer_core::{ErrorKind, Result};

use crate::state::{seconds_between, Applied, HoldRequest, HoldState};
use crate::DbLedger;

/// An extension with metering around it. It has the inner extension's id
/// and capabilities.
///
/// ```no_run
/// # fn wrap(ext: std::sync::Arc<dyn sandboxer_core::extension::Extension>) -> sandboxer_core::Result<()> {
/// use std::sync::Arc;
/// use sandboxer_core::extension::Registry;
/// use sandboxer_credits::{DbLedger, Metered};
///
/// # let db: Arc<dyn sandboxer_core::store::db::Db> = todo!();
/// let ledger = Arc::new(DbLedger::new(db));
/// let mut registry = Registry::new();
/// registry.register(Arc::new(Metered::new(ext, ledger)));
/// # Ok(()) }
/// ```
pub struct Metered {
    inner: Arc<dyn Extension>,
    ledger: Arc<DbLedger>,
    settle_at_teardown: bool,
    /// What a settle counts the seconds to.
    clock: Arc<dyn Clock>,
}

impl Metered {
    pub fn new(inner: Arc<dyn Extension>, ledger: Arc<DbLedger>) -> Metered {
        Metered {
            inner,
            ledger,
            settle_at_teardown: true,
            clock: sandboxer_core::clock::system(),
        }
    }

    /// Count the seconds a teardown settles by `clock` (tests move a
    /// manual one instead of waiting).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Metered {
        self.clock = clock;
        self
    }

    /// Leave the settle to the manager, which pays it in the transaction
    /// that records the sandbox `destroyed` (what `sandboxer-stack` wires).
    pub fn settled_by_manager(mut self) -> Metered {
        self.settle_at_teardown = false;
        self
    }

    /// The ledger it pays from.
    pub fn ledger(&self) -> &Arc<DbLedger> {
        &self.ledger
    }

    /// Release the hold of a sandbox whose provisioning failed after
    /// `provision` returned (e.g. it never became ready). `Ok` when there is
    /// no open hold.
    pub fn void(&self, sandbox_id: &str) -> Result<Option<Applied>> {
        void_open(&self.ledger, sandbox_id)
    }
}

fn void_open(ledger: &DbLedger, sandbox_id: &str) -> Result<Option<Applied>> {
    match ledger.hold_of(sandbox_id)? {
        Some(h) if h.state == HoldState::Open => match ledger.void(sandbox_id) {
            Ok(a) => Ok(Some(a)),
            // Settled or voided by another process meanwhile.
            Err(e) if e.kind() == ErrorKind::Conflict => Ok(None),
            Err(e) => Err(e),
        },
        _ => Ok(None),
    }
}

fn metered(ctx: &SandboxCtx) -> bool {
    ctx.price_per_hour > Micros::ZERO
}

/// Voids the hold when dropped armed: the inner provision failed, or the
/// provision future was dropped before it finished.
struct VoidOnDrop<'a> {
    ledger: &'a DbLedger,
    sandbox_id: &'a str,
    armed: bool,
}

impl Drop for VoidOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = void_open(self.ledger, self.sandbox_id) {
                // The hold stays open; reconciliation voids it once the
                // sandbox is failed or missing in the store.
                tracing::warn!(
                    "could not void the hold of {} after provisioning stopped: {e}",
                    self.sandbox_id
                );
            }
        }
    }
}

#[async_trait]
impl Extension for Metered {
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn provision(&self, ctx: &SandboxCtx) -> Result<Provisioned> {
        if !metered(ctx) {
            return self.inner.provision(ctx).await;
        }
        self.ledger.hold(&HoldRequest {
            sandbox_id: ctx.id.clone(),
            actor: ctx.actor.clone(),
            price_per_hour: ctx.price_per_hour,
            extension: self.inner.id().to_string(),
            host: ctx.host.clone(),
            profile: ctx.profile.clone(),
            created_at: ctx.created_at,
            expires_at: ctx.expires_at,
        })?;
        let mut guard = VoidOnDrop {
            ledger: &self.ledger,
            sandbox_id: &ctx.id,
            armed: true,
        };
        let provisioned = self.inner.provision(ctx).await;
        guard.armed = provisioned.is_err();
        drop(guard);
        provisioned
    }

    async fn wait_ready(
        &self,
        ctx: &SandboxCtx,
        handle: &serde_json::Value,
        deadline: tokio::time::Instant,
    ) -> Result<ReadyInfo> {
        self.inner.wait_ready(ctx, handle, deadline).await
    }

    async fn teardown(&self, ctx: &SandboxCtx, handle: &serde_json::Value) -> Result<()> {
        self.inner.teardown(ctx, handle).await?;
        if !metered(ctx) || !self.settle_at_teardown {
            return Ok(());
        }
        match self.ledger.hold_of(&ctx.id)? {
            Some(h) if h.state == HoldState::Open => {}
            // Never held (refused, or provisioned before metering) or
            // already resolved (voided after a failed provision, settled by
            // an earlier teardown): nothing to pay.
            _ => return Ok(()),
        }
        let ended = self.clock.now();
        let seconds = seconds_between(ctx.created_at, ended);
        match self.ledger.settle(&ctx.id, seconds, ended) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::Conflict => {
                tracing::debug!("teardown of {}: {e}", ctx.id);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn extend(
        &self,
        ctx: &SandboxCtx,
        handle: &serde_json::Value,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        if metered(ctx) && self.inner.capabilities().extend {
            self.ledger.extend(&ctx.id, expires_at)?;
        }
        self.inner.extend(ctx, handle, expires_at).await
    }

    async fn list_resources(&self, transport: Arc<dyn Transport>) -> Result<Vec<Resource>> {
        self.inner.list_resources(transport).await
    }

    // Pauses and resumes are paid by the manager, in the transactions that
    // move the record (`Billing::pause_in`, `resume_in`).
    async fn pause(&self, ctx: &SandboxCtx, handle: &serde_json::Value) -> Result<()> {
        self.inner.pause(ctx, handle).await
    }

    async fn resume(
        &self,
        ctx: &SandboxCtx,
        handle: &serde_json::Value,
        deadline: tokio::time::Instant,
    ) -> Result<ReadyInfo> {
        self.inner.resume(ctx, handle, deadline).await
    }

    async fn snapshot(
        &self,
        ctx: &SandboxCtx,
        handle: &serde_json::Value,
        snapshot_id: &str,
    ) -> Result<sandboxer_core::extension::SnapshotMade> {
        self.inner.snapshot(ctx, handle, snapshot_id).await
    }

    async fn delete_snapshot(
        &self,
        transport: Arc<dyn Transport>,
        snapshot_id: &str,
        handle: &serde_json::Value,
    ) -> Result<()> {
        self.inner
            .delete_snapshot(transport, snapshot_id, handle)
            .await
    }
}
