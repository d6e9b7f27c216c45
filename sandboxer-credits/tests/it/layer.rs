//! The metering layer around a real extension: `ext.folder-test` makes a
//! folder on the host through the real `LocalTransport` (like
//! `examples/examples/folder_extension.rs`), can extend (it writes the
//! deadline into the folder), and sleeps in provision when its config asks,
//! so cancellation can be tested.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sandboxer_core::clock::{Clock as _, ManualClock};
use sandboxer_core::credits::Micros;
use sandboxer_core::extension::{
    Capabilities, Extension, Provisioned, ReadyInfo, Resource, SandboxCtx,
};
use sandboxer_core::model::{is_sandbox_id, Actor, Reachability};
use sandboxer_core::transport::{shell_quote, Transport};
use sandboxer_core::{Error, ErrorKind, Result};
use sandboxer_credits::{DbLedger, HoldState, Metered};
use sandboxer_transport::LocalTransport;

struct FolderExt {
    provisions: AtomicUsize,
}

fn folder(transport: &dyn Transport, id: &str) -> Result<String> {
    if !is_sandbox_id(id) {
        return Err(Error::invalid_input(format!("`{id}` is not a sandbox id")));
    }
    Ok(format!("{}/folders/{id}", transport.data_dir()))
}

#[async_trait]
impl Extension for FolderExt {
    fn id(&self) -> &str {
        "ext.folder-test"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            extend: true,
            list_resources: true,
            uses_host: true,
            pause: false,
            snapshot: false,
        }
    }

    async fn provision(&self, ctx: &SandboxCtx) -> Result<Provisioned> {
        self.provisions.fetch_add(1, Ordering::SeqCst);
        let dir = folder(ctx.transport.as_ref(), &ctx.id)?;
        let sleep = ctx
            .config
            .get("sleep")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        let out = ctx
            .transport
            .exec(
                &format!("mkdir -p {} && sleep {sleep}", shell_quote(&dir)),
                None,
            )
            .await?;
        if !out.success() {
            return Err(Error::new(
                ErrorKind::ProvisionFailed,
                format!("mkdir failed: {}", out.stderr_tail(5)),
            ));
        }
        Ok(Provisioned {
            handle: serde_json::json!({ "folder": dir }),
        })
    }

    async fn wait_ready(
        &self,
        ctx: &SandboxCtx,
        _handle: &serde_json::Value,
        deadline: tokio::time::Instant,
    ) -> Result<ReadyInfo> {
        let dir = folder(ctx.transport.as_ref(), &ctx.id)?;
        loop {
            let out = ctx
                .transport
                .exec(&format!("test -d {}", shell_quote(&dir)), None)
                .await?;
            if out.success() {
                let mut r = Reachability {
                    address: ctx.transport.address().to_string(),
                    ..Default::default()
                };
                r.details.insert("folder".into(), serde_json::json!(dir));
                return Ok(ReadyInfo {
                    reachability: r,
                    ..Default::default()
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::new(ErrorKind::Timeout, "the folder never appeared"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn teardown(&self, ctx: &SandboxCtx, _handle: &serde_json::Value) -> Result<()> {
        let dir = folder(ctx.transport.as_ref(), &ctx.id)?;
        ctx.transport
            .exec(&format!("rm -rf {}", shell_quote(&dir)), None)
            .await?;
        Ok(())
    }

    async fn extend(
        &self,
        ctx: &SandboxCtx,
        _handle: &serde_json::Value,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let dir = folder(ctx.transport.as_ref(), &ctx.id)?;
        ctx.transport
            .write_file(
                &format!("{dir}/expires_at"),
                expires_at.to_rfc3339().as_bytes(),
                0o600,
            )
            .await
    }

    async fn list_resources(&self, transport: Arc<dyn Transport>) -> Result<Vec<Resource>> {
        let root = format!("{}/folders", transport.data_dir());
        let out = transport
            .exec(
                &format!("ls -1 {} 2>/dev/null || true", shell_quote(&root)),
                None,
            )
            .await?;
        Ok(out
            .stdout_str()
            .lines()
            .filter(|l| is_sandbox_id(l))
            .map(|id| Resource {
                sandbox_id: id.to_string(),
                kind: "folder".into(),
                name: format!("{root}/{id}"),
                running: true,
            })
            .collect())
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    host_dir: std::path::PathBuf,
    transport: Arc<dyn Transport>,
    ledger: Arc<DbLedger>,
    inner: Arc<FolderExt>,
    metered: Arc<Metered>,
    clock: Arc<ManualClock>,
    bob: Actor,
}

impl Fixture {
    fn new(balance: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let host_dir = dir.path().join("host");
        let transport: Arc<dyn Transport> = Arc::new(LocalTransport::new(host_dir.clone()));
        let ledger = Arc::new(DbLedger::new(
            sandboxer_store::open(None, &dir.path().join("data")).unwrap(),
        ));
        let bob: Actor = "agt:bob".parse().unwrap();
        if balance != "0" {
            ledger
                .grant(&"adm:ops".parse().unwrap(), &bob, credits(balance), None)
                .unwrap();
        }
        let inner = Arc::new(FolderExt {
            provisions: AtomicUsize::new(0),
        });
        let clock = ManualClock::starting_now();
        let metered =
            Arc::new(Metered::new(inner.clone(), ledger.clone()).with_clock(clock.clone()));
        Fixture {
            _dir: dir,
            host_dir,
            transport,
            ledger,
            inner,
            metered,
            clock,
            bob,
        }
    }

    fn ctx(&self, id: &str, price: &str, ttl: Duration) -> SandboxCtx {
        let created_at = self.clock.now();
        SandboxCtx {
            id: id.to_string(),
            profile: "profile.folder".into(),
            profile_version: 1,
            actor: self.bob.clone(),
            config: Default::default(),
            inputs: Default::default(),
            host: "local".into(),
            transport: self.transport.clone(),
            expires_at: created_at + chrono::Duration::from_std(ttl).unwrap(),
            ready_timeout: Duration::from_secs(10),
            created_at,
            price_per_hour: credits(price),
            restore: None,
        }
    }

    fn exists(&self, id: &str) -> bool {
        self.host_dir.join("folders").join(id).exists()
    }

    fn provisions(&self) -> usize {
        self.inner.provisions.load(Ordering::SeqCst)
    }
}

fn credits(s: &str) -> Micros {
    Micros::parse_amount(s).unwrap()
}

#[tokio::test]
async fn insufficient_credits_refuse_before_the_extension_runs() {
    let f = Fixture::new("0.5");
    let ctx = f.ctx("sbx-poor", "1", Duration::from_secs(3600));
    let err = f.metered.provision(&ctx).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InsufficientCredits);
    assert!(err.message().contains("needs 1 "), "{}", err.message());
    assert!(
        err.message().contains("has 0.5 available"),
        "{}",
        err.message()
    );
    assert_eq!(f.provisions(), 0, "the inner provision never ran");
    assert!(!f.exists("sbx-poor"));
    assert!(f.ledger.hold_of("sbx-poor").unwrap().is_none());
    assert_eq!(f.ledger.balance(&f.bob).unwrap().available, credits("0.5"));
}

#[tokio::test]
async fn hold_at_provision_settle_by_the_second_at_teardown() {
    let f = Fixture::new("10");
    // 3.6 credits/h = 0.001 per second.
    let ctx = f.ctx("sbx-paid", "3.6", Duration::from_secs(3600));
    let p = f.metered.provision(&ctx).await.unwrap();
    assert_eq!(f.ledger.balance(&f.bob).unwrap().held, credits("3.6"));
    let deadline = tokio::time::Instant::now() + ctx.ready_timeout;
    f.metered
        .wait_ready(&ctx, &p.handle, deadline)
        .await
        .unwrap();
    // 90 seconds and a started one pass on the layer's clock.
    f.clock.advance(Duration::from_millis(90_400));
    f.metered.teardown(&ctx, &p.handle).await.unwrap();
    assert!(!f.exists("sbx-paid"));
    let usage = f.ledger.usage(&f.bob).unwrap();
    assert_eq!(usage.len(), 1);
    let row = &usage[0];
    assert_eq!(
        (row.state, row.held, row.extension.as_str()),
        (HoldState::Settled, credits("3.6"), "ext.folder-test")
    );
    assert_eq!(row.seconds, Some(91), "a started second counts");
    let cost = Micros(91_000);
    assert_eq!(row.cost, Some(cost));
    let acc = f.ledger.balance(&f.bob).unwrap();
    assert_eq!(
        (acc.available, acc.held, acc.spent),
        (Micros(10_000_000 - cost.0), Micros::ZERO, cost)
    );
    // A second teardown pays nothing more.
    f.metered.teardown(&ctx, &p.handle).await.unwrap();
    assert_eq!(f.ledger.balance(&f.bob).unwrap(), acc);
}

#[tokio::test]
async fn a_failed_provision_voids_the_hold() {
    let f = Fixture::new("10");
    // The host's data dir sits under a file: mkdir fails.
    std::fs::create_dir_all(f.host_dir.parent().unwrap()).unwrap();
    std::fs::write(&f.host_dir, b"not a folder").unwrap();
    let ctx = f.ctx("sbx-fails", "1", Duration::from_secs(3600));
    let err = f.metered.provision(&ctx).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProvisionFailed, "{err:?}");
    assert_eq!(f.provisions(), 1);
    assert_eq!(
        f.ledger.hold_of("sbx-fails").unwrap().unwrap().state,
        HoldState::Voided
    );
    assert_eq!(f.ledger.balance(&f.bob).unwrap().available, credits("10"));
    // A retried provision (the create moved on to another route) is never
    // run unpaid: it takes a hold of its own, voided again when it fails.
    let again = f.metered.provision(&ctx).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::ProvisionFailed, "{again:?}");
    assert_eq!(f.provisions(), 2);
    let h = f.ledger.hold_of("sbx-fails").unwrap().unwrap();
    assert_eq!((h.attempt, h.state), (2, HoldState::Voided));
    assert_eq!(h.resolved_by.as_deref(), Some("void:sbx-fails:2"));
    assert_eq!(f.ledger.balance(&f.bob).unwrap().available, credits("10"));
    assert!(f.ledger.check().unwrap().is_ok());
}

#[tokio::test]
async fn a_dropped_provision_voids_the_hold() {
    let f = Fixture::new("10");
    let mut ctx = f.ctx("sbx-cancel", "1", Duration::from_secs(3600));
    ctx.config.insert("sleep".into(), serde_json::json!(30));
    let cut = tokio::time::timeout(Duration::from_millis(300), f.metered.provision(&ctx)).await;
    assert!(cut.is_err(), "provision should still be sleeping");
    assert_eq!(f.provisions(), 1);
    assert_eq!(
        f.ledger.hold_of("sbx-cancel").unwrap().unwrap().state,
        HoldState::Voided
    );
    assert_eq!(f.ledger.balance(&f.bob).unwrap().available, credits("10"));
}

#[tokio::test]
async fn the_manager_can_void_after_a_failed_wait_ready() {
    let f = Fixture::new("10");
    let ctx = f.ctx("sbx-notready", "2", Duration::from_secs(3600));
    let p = f.metered.provision(&ctx).await.unwrap();
    let voided = f.metered.void("sbx-notready").unwrap().unwrap();
    assert_eq!(voided.entry.id, "void:sbx-notready");
    assert!(
        f.metered.void("sbx-notready").unwrap().is_none(),
        "nothing left to void"
    );
    // The rollback teardown then pays nothing.
    f.metered.teardown(&ctx, &p.handle).await.unwrap();
    let acc = f.ledger.balance(&f.bob).unwrap();
    assert_eq!((acc.available, acc.spent), (credits("10"), Micros::ZERO));
}

#[tokio::test]
async fn extend_holds_the_extra_time_or_is_refused() {
    let f = Fixture::new("3");
    let ctx = f.ctx("sbx-longer", "1", Duration::from_secs(3600));
    let p = f.metered.provision(&ctx).await.unwrap();
    let two_hours = ctx.expires_at + chrono::Duration::hours(1);
    f.metered.extend(&ctx, &p.handle, two_hours).await.unwrap();
    assert_eq!(f.ledger.balance(&f.bob).unwrap().held, credits("2"));
    assert!(f.host_dir.join("folders/sbx-longer/expires_at").exists());
    let too_far = two_hours + chrono::Duration::hours(2);
    let err = f
        .metered
        .extend(&ctx, &p.handle, too_far)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InsufficientCredits);
    assert!(
        err.message().contains("needs 2 ") && err.message().contains("has 1 available"),
        "{}",
        err.message()
    );
    let written =
        std::fs::read_to_string(f.host_dir.join("folders/sbx-longer/expires_at")).unwrap();
    assert_eq!(
        written,
        two_hours.to_rfc3339(),
        "the refused extend never reached the extension"
    );
    f.metered.teardown(&ctx, &p.handle).await.unwrap();
    assert_eq!(f.ledger.balance(&f.bob).unwrap().held, Micros::ZERO);
}

#[tokio::test]
async fn free_routes_pass_straight_through() {
    let f = Fixture::new("0");
    let ctx = f.ctx("sbx-free", "0", Duration::from_secs(3600));
    let p = f.metered.provision(&ctx).await.unwrap();
    assert!(f.exists("sbx-free"));
    f.metered
        .extend(&ctx, &p.handle, ctx.expires_at + chrono::Duration::hours(1))
        .await
        .unwrap();
    f.metered.teardown(&ctx, &p.handle).await.unwrap();
    assert!(f.ledger.snapshot().unwrap().entries().is_empty());
    assert_eq!(f.metered.id(), "ext.folder-test");
    assert_eq!(f.metered.capabilities(), f.inner.capabilities());
}

/// The conformance suite every extension and layer runs, against the layer
/// with a price set; afterwards every hold is settled and the balance and
/// the usage agree to the micro-credit.
#[tokio::test]
async fn metered_folder_passes_conformance() {
    let f = Fixture::new("100");
    let price = credits("7.2");
    let make_ctx = |id: &str| f.ctx(id, &price.to_string(), Duration::from_secs(600));
    sandboxer_testkit::conformance::run_conformance(f.metered.clone(), &make_ctx).await;
    assert!(f.provisions() > 0);
    assert!(
        f.ledger.open_holds().unwrap().is_empty(),
        "every hold settled"
    );
    let usage = f.ledger.usage(&f.bob).unwrap();
    assert!(!usage.is_empty());
    let mut spent = Micros::ZERO;
    for row in &usage {
        assert_eq!(row.state, HoldState::Settled, "{row:?}");
        let expected = price
            .per_hour_times_secs(row.seconds.unwrap())
            .min(row.held);
        assert_eq!(row.cost, Some(expected), "{row:?}");
        spent = spent.checked_add(expected).unwrap();
    }
    let acc = f.ledger.balance(&f.bob).unwrap();
    assert_eq!(acc.spent, spent);
    assert_eq!(acc.available, Micros(credits("100").0 - spent.0));
    assert!(f.ledger.check().unwrap().is_ok());
}
