//! The extension conformance suite: the behaviour every extension and every
//! layer promises in [`sandboxer_core::extension::Extension`], checked
//! against the real backend. Backend-agnostic: it only calls the trait and
//! looks at capabilities.
//!
//! ```ignore
//! #[tokio::test]
//! async fn conformance() {
//!     let ext = Arc::new(MyExtension::new(...));
//!     run_conformance(ext, &|id| make_ctx(id)).await;
//! }
//! ```

use std::sync::Arc;
use std::time::Duration;

use sandboxer_core::extension::{Extension, ReadyInfo, Restore, SandboxCtx};
use sandboxer_core::model::new_sandbox_id;
use sandboxer_core::snapshot::new_snapshot_id;
use sandboxer_core::ErrorKind;
use serde_json::Value;

/// Run every check against `ext`. `make_ctx` builds the context of a fresh
/// sandbox from an id (`sandboxer_core::model::new_sandbox_id()`); each
/// check uses its own id. Panics with a message naming the extension and the
/// broken promise.
pub async fn run_conformance(ext: Arc<dyn Extension>, make_ctx: &dyn Fn(&str) -> SandboxCtx) {
    let suite = Suite {
        ext: ext.as_ref(),
        make_ctx,
    };
    suite.provision_ready_teardown().await;
    suite.teardown_of_unknown_id().await;
    suite.teardown_with_null_handle().await;
    suite.optional_abilities().await;
    suite.wait_ready_past_deadline().await;
    suite.pause_and_resume().await;
    suite.snapshot_and_restore().await;
}

struct Suite<'a> {
    ext: &'a dyn Extension,
    make_ctx: &'a dyn Fn(&str) -> SandboxCtx,
}

impl Suite<'_> {
    fn name(&self) -> &str {
        self.ext.id()
    }

    fn ctx(&self) -> SandboxCtx {
        let id = new_sandbox_id();
        let ctx = (self.make_ctx)(&id);
        assert_eq!(
            ctx.id,
            id,
            "{}: make_ctx must use the id it is given",
            self.name()
        );
        ctx
    }

    async fn provision(&self, ctx: &SandboxCtx) -> Value {
        match self.ext.provision(ctx).await {
            Ok(p) => p.handle,
            Err(e) => panic!("{}: provision of {} failed: {e:?}", self.name(), ctx.id),
        }
    }

    async fn ready(&self, ctx: &SandboxCtx, handle: &Value) -> ReadyInfo {
        let deadline = tokio::time::Instant::now() + ctx.ready_timeout;
        match self.ext.wait_ready(ctx, handle, deadline).await {
            Ok(r) => r,
            Err(e) => panic!(
                "{}: wait_ready of {} after provision failed: {e:?}",
                self.name(),
                ctx.id
            ),
        }
    }

    async fn teardown(&self, ctx: &SandboxCtx, handle: &Value, what: &str) {
        if let Err(e) = self.ext.teardown(ctx, handle).await {
            panic!(
                "{}: teardown of {} ({what}) must be Ok, got {e:?}",
                self.name(),
                ctx.id
            );
        }
    }

    /// `Some(listed)` when the extension can list resources.
    async fn listed(&self, ctx: &SandboxCtx) -> Option<bool> {
        if !self.ext.capabilities().list_resources {
            return None;
        }
        let resources = match self.ext.list_resources(ctx.transport.clone()).await {
            Ok(r) => r,
            Err(e) => panic!(
                "{}: list_resources is declared but failed: {e:?}",
                self.name()
            ),
        };
        Some(resources.iter().any(|r| r.sandbox_id == ctx.id))
    }

    /// Where the extension can list resources: whether `ctx`'s sandbox is
    /// listed is `want` (`when` names the step).
    async fn expect_listed(&self, ctx: &SandboxCtx, want: bool, when: &str) {
        if let Some(listed) = self.listed(ctx).await {
            assert_eq!(
                listed,
                want,
                "{}: {} {} by list_resources {when}",
                self.name(),
                ctx.id,
                if want {
                    "is not listed"
                } else {
                    "is still listed"
                }
            );
        }
    }

    /// Ready means a consumer can reach it: every reported field is filled.
    fn check_reachability(&self, ctx: &SandboxCtx, ready: &ReadyInfo, when: &str) {
        let r = &ready.reachability;
        let who = format!("{}: {} ({when})", self.name(), ctx.id);
        assert!(
            !r.address.trim().is_empty(),
            "{who}: ready, but reachability.address is empty: {r:?}"
        );
        for (service, ports) in &r.ports {
            assert!(
                !ports.is_empty(),
                "{who}: service `{service}` is listed without ports"
            );
            for p in ports {
                assert!(
                    p.published != 0 && p.target != 0,
                    "{who}: service `{service}` has a zero port: {p:?}"
                );
            }
        }
        for (name, url) in &r.urls {
            assert!(!url.trim().is_empty(), "{who}: url `{name}` is empty");
        }
        if let Some(ssh) = &r.ssh {
            assert!(
                !ssh.host.is_empty() && ssh.port != 0 && !ssh.user.is_empty(),
                "{who}: incomplete ssh target {ssh:?}"
            );
        }
    }

    /// provision -> wait_ready -> (listed) -> teardown -> teardown again.
    async fn provision_ready_teardown(&self) {
        let ctx = self.ctx();
        let handle = self.provision(&ctx).await;
        let ready = self.ready(&ctx, &handle).await;
        self.check_reachability(&ctx, &ready, "after wait_ready");
        let handle = ready.handle.clone().unwrap_or(handle);
        self.expect_listed(&ctx, true, "once ready").await;
        self.teardown(&ctx, &handle, "after ready").await;
        self.expect_listed(&ctx, false, "after teardown").await;
        self.teardown(&ctx, &handle, "a second time").await;
    }

    async fn teardown_of_unknown_id(&self) {
        let ctx = self.ctx();
        self.teardown(&ctx, &Value::Null, "never provisioned, Null handle")
            .await;
        self.teardown(
            &ctx,
            &serde_json::json!({"stale": true}),
            "never provisioned, odd handle",
        )
        .await;
    }

    /// A crash right after provision loses the handle: teardown must still
    /// find everything from the id.
    async fn teardown_with_null_handle(&self) {
        let ctx = self.ctx();
        // No wait_ready: the crash may come before the sandbox is up.
        let _lost_handle = self.provision(&ctx).await;
        let before = self.listed(&ctx).await;
        if let Some(listed) = before {
            assert!(
                listed,
                "{}: {} is provisioned but list_resources does not list it",
                self.name(),
                ctx.id
            );
        }
        self.teardown(&ctx, &Value::Null, "Null handle after provision")
            .await;
        self.expect_listed(&ctx, false, "after teardown with a Null handle")
            .await;
    }

    /// Declared abilities work; undeclared ones answer `Unsupported`.
    async fn optional_abilities(&self) {
        let caps = self.ext.capabilities();
        let ctx = self.ctx();
        let handle = self.provision(&ctx).await;
        let ready = self.ready(&ctx, &handle).await;
        let handle = ready.handle.unwrap_or(handle);
        let later = ctx.expires_at + chrono::Duration::minutes(5);
        let extended = self.ext.extend(&ctx, &handle, later).await;
        match (caps.extend, &extended) {
            (true, Ok(())) => {}
            (true, Err(e)) => panic!(
                "{}: extend is declared but failed for {}: {e:?}",
                self.name(),
                ctx.id
            ),
            (false, Err(e)) if e.kind() == ErrorKind::Unsupported => {}
            (false, other) => panic!(
                "{}: extend is not declared, so it must answer Unsupported; got {other:?}",
                self.name()
            ),
        }
        if !caps.list_resources {
            match self.ext.list_resources(ctx.transport.clone()).await {
                Err(e) if e.kind() == ErrorKind::Unsupported => {}
                other => panic!(
                    "{}: list_resources is not declared, so it must answer Unsupported; got {other:?}",
                    self.name()
                ),
            }
        }
        self.teardown(&ctx, &handle, "after extend").await;
    }

    /// A deadline already past: `Timeout`, or success only when the sandbox
    /// is in fact ready.
    async fn wait_ready_past_deadline(&self) {
        let ctx = self.ctx();
        let handle = self.provision(&ctx).await;
        let now = tokio::time::Instant::now();
        let past = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        match self.ext.wait_ready(&ctx, &handle, past).await {
            Ok(ready) => self.check_reachability(&ctx, &ready, "wait_ready with a past deadline"),
            Err(e) if e.kind() == ErrorKind::Timeout => {}
            Err(e) => panic!(
                "{}: wait_ready with a deadline already past must be Timeout (or Ok when ready), got {e:?}",
                self.name()
            ),
        }
        self.teardown(&ctx, &handle, "after a past-deadline wait_ready")
            .await;
    }

    /// Pause (twice), resume (twice) and teardown of a paused sandbox when
    /// `pause` is declared; `Unsupported` when it is not.
    async fn pause_and_resume(&self) {
        let ctx = self.ctx();
        if !self.ext.capabilities().pause {
            let handle = Value::Null;
            match self.ext.pause(&ctx, &handle).await {
                Err(e) if e.kind() == ErrorKind::Unsupported => {}
                other => panic!(
                    "{}: pause is not declared, so it must answer Unsupported; got {other:?}",
                    self.name()
                ),
            }
            return;
        }
        let handle = self.provision(&ctx).await;
        let ready = self.ready(&ctx, &handle).await;
        let handle = ready.handle.unwrap_or(handle);
        for round in ["", " again"] {
            if let Err(e) = self.ext.pause(&ctx, &handle).await {
                panic!("{}: pause{round} of {} failed: {e:?}", self.name(), ctx.id);
            }
        }
        self.expect_listed(&ctx, true, "while paused").await;
        let mut handle = handle;
        for round in ["", " again"] {
            let deadline = tokio::time::Instant::now() + ctx.ready_timeout;
            match self.ext.resume(&ctx, &handle, deadline).await {
                Ok(r) => {
                    self.check_reachability(&ctx, &r, &format!("after resume{round}"));
                    handle = r.handle.unwrap_or(handle);
                }
                Err(e) => panic!("{}: resume{round} of {} failed: {e:?}", self.name(), ctx.id),
            }
        }
        self.teardown(&ctx, &handle, "after resume").await;
        // A paused sandbox tears down like any other.
        let ctx = self.ctx();
        let handle = self.provision(&ctx).await;
        let ready = self.ready(&ctx, &handle).await;
        let handle = ready.handle.unwrap_or(handle);
        if let Err(e) = self.ext.pause(&ctx, &handle).await {
            panic!("{}: pause of {} failed: {e:?}", self.name(), ctx.id);
        }
        self.teardown(&ctx, &handle, "while paused").await;
        self.expect_listed(&ctx, false, "after teardown while paused")
            .await;
    }

    /// Snapshot, two restores at once, deletes (twice) when `snapshot` is
    /// declared; `Unsupported` when it is not.
    async fn snapshot_and_restore(&self) {
        let ctx = self.ctx();
        let snap = new_snapshot_id();
        if !self.ext.capabilities().snapshot {
            match self.ext.snapshot(&ctx, &Value::Null, &snap).await {
                Err(e) if e.kind() == ErrorKind::Unsupported => {}
                other => panic!(
                    "{}: snapshot is not declared, so it must answer Unsupported; got {other:?}",
                    self.name()
                ),
            }
            return;
        }
        let handle = self.provision(&ctx).await;
        let ready = self.ready(&ctx, &handle).await;
        let handle = ready.handle.unwrap_or(handle);
        let made = match self.ext.snapshot(&ctx, &handle, &snap).await {
            Ok(m) => m,
            Err(e) => panic!("{}: snapshot of {} failed: {e:?}", self.name(), ctx.id),
        };
        let snap_listed = |list: &[sandboxer_core::extension::Resource]| {
            list.iter().any(|r| r.sandbox_id == snap)
        };
        if self.ext.capabilities().list_resources {
            let list = self
                .ext
                .list_resources(ctx.transport.clone())
                .await
                .unwrap();
            assert!(
                snap_listed(&list),
                "{}: snapshot {snap} is not listed",
                self.name()
            );
        }
        // The source goes; the snapshot stays restorable.
        self.teardown(&ctx, &handle, "after its snapshot").await;
        let restoring = |_: u8| {
            let mut c = self.ctx();
            c.restore = Some(Restore {
                snapshot_id: snap.clone(),
                handle: made.handle.clone(),
            });
            c
        };
        let (a, b) = (restoring(1), restoring(2));
        // Two restores of one snapshot at once.
        let (ha, hb) = tokio::join!(self.provision(&a), self.provision(&b));
        let (ra, rb) = tokio::join!(self.ready(&a, &ha), self.ready(&b, &hb));
        self.check_reachability(&a, &ra, "restored");
        self.check_reachability(&b, &rb, "restored at the same time");
        self.teardown(&a, &ra.handle.unwrap_or(ha), "restored")
            .await;
        self.teardown(&b, &rb.handle.unwrap_or(hb), "restored")
            .await;
        for round in ["", " again"] {
            if let Err(e) = self
                .ext
                .delete_snapshot(ctx.transport.clone(), &snap, &made.handle)
                .await
            {
                panic!(
                    "{}: delete{round} of snapshot {snap} failed: {e:?}",
                    self.name()
                );
            }
        }
        if self.ext.capabilities().list_resources {
            let list = self
                .ext
                .list_resources(ctx.transport.clone())
                .await
                .unwrap();
            assert!(
                !snap_listed(&list),
                "{}: deleted snapshot {snap} is still listed",
                self.name()
            );
        }
        // A snapshot nobody ever made deletes fine.
        if let Err(e) = self
            .ext
            .delete_snapshot(ctx.transport.clone(), &new_snapshot_id(), &Value::Null)
            .await
        {
            panic!(
                "{}: delete of an unknown snapshot must be Ok, got {e:?}",
                self.name()
            );
        }
    }
}
