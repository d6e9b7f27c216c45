//! How to write an extension: `ext.folder` makes a sandbox that is just a
//! folder on the placement host, reached by its path. It implements the
//! whole contract through the host transport (so it would work on an SSH
//! host too) and passes the conformance suite every extension must pass.
//!
//! Run it: `cargo run -p sandboxer-examples --example folder_extension`

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sandboxer_core::extension::{
    Capabilities, Extension, Provisioned, ReadyInfo, Resource, SandboxCtx,
};
use sandboxer_core::model::{is_sandbox_id, Reachability};
use sandboxer_core::transport::{shell_quote, Transport};
use sandboxer_core::{Error, ErrorKind, Result};

struct FolderExtension;

impl FolderExtension {
    fn folder(transport: &dyn Transport, id: &str) -> Result<String> {
        // Never build a path (or a shell command) from an unchecked id.
        if !is_sandbox_id(id) {
            return Err(Error::invalid_input(format!("`{id}` is not a sandbox id")));
        }
        Ok(transport.data_dir().join("folders").join(id).into_string())
    }
}

#[async_trait]
impl Extension for FolderExtension {
    fn id(&self) -> &str {
        "ext.folder"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            extend: false,
            list_resources: true,
            uses_host: true,
            pause: false,
            snapshot: false,
        }
    }

    async fn provision(&self, ctx: &SandboxCtx) -> Result<Provisioned> {
        let dir = Self::folder(ctx.transport.as_ref(), &ctx.id)?;
        let out = ctx
            .transport
            .exec(&format!("mkdir -p {}", shell_quote(&dir)), None)
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
        let dir = Self::folder(ctx.transport.as_ref(), &ctx.id)?;
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
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    async fn teardown(&self, ctx: &SandboxCtx, _handle: &serde_json::Value) -> Result<()> {
        // Idempotent: removing a folder that is not there is fine.
        let dir = Self::folder(ctx.transport.as_ref(), &ctx.id)?;
        ctx.transport
            .exec(&format!("rm -rf {}", shell_quote(&dir)), None)
            .await?;
        Ok(())
    }

    async fn extend(
        &self,
        _ctx: &SandboxCtx,
        _handle: &serde_json::Value,
        _expires_at: DateTime<Utc>,
    ) -> Result<()> {
        Err(Error::unsupported("ext.folder has no deadline of its own"))
    }

    async fn list_resources(&self, transport: Arc<dyn Transport>) -> Result<Vec<Resource>> {
        let root = transport.data_dir().join("folders").into_string();
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let transport: Arc<dyn Transport> = Arc::new(sandboxer_transport::LocalTransport::new(
        data.path().to_path_buf(),
    ));
    let ext: Arc<dyn Extension> = Arc::new(FolderExtension);
    let make_ctx = |id: &str| SandboxCtx {
        id: id.to_string(),
        profile: "profile.folder".into(),
        profile_version: 1,
        actor: "adm:example".parse().expect("actor"),
        config: Default::default(),
        inputs: Default::default(),
        host: "local".into(),
        transport: transport.clone(),
        expires_at: Utc::now() + chrono::Duration::minutes(5),
        ready_timeout: std::time::Duration::from_secs(10),
        created_at: Utc::now(),
        price_per_hour: Default::default(),
        restore: None,
    };
    sandboxer_testkit::conformance::run_conformance(ext, &make_ctx).await;
    println!("ext.folder passes the extension conformance suite");
    Ok(())
}
