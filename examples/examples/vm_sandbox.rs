//! A VM sandbox with `ext.vm-packer`, the way `sandboxer create --profile
//! profile.vm-haskell-build` makes one, but linking the libraries: build the
//! small test boot image (`scripts/vm-image build`), point
//! `profile.vm-haskell-build` at it in a throwaway config dir, create the
//! sandbox on `local`, log into the VM through the record's reachability,
//! and destroy it.
//!
//! Run it (needs qemu and the Debian packages `scripts/testbed up`
//! installs; the boot takes about 10 s under TCG):
//!
//! ```text
//! cargo run -p sandboxer-examples --example vm_sandbox
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use sandboxer_core::lifecycle::EndReason;
use sandboxer_core::manager::CreateRequest;
use sandboxer_ext_vm_packer::ssh::{login_attempt, SshAuth, SshLogin};
use sandboxer_ext_vm_packer::VmPackerExtension;
use sandboxer_stack::StackBuilder;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let image = std::env::var_os("SANDBOXER_TESTBED")
        .map(|d| PathBuf::from(d).join("vm-image"))
        .unwrap_or_else(|| repo.join(".testbed").join("vm-image"));
    let built = std::process::Command::new(repo.join("scripts").join("vm-image"))
        .arg("build")
        .arg(&image)
        .status()
        .context("running scripts/vm-image (is this the sandboxer repo?)")?;
    if !built.success() {
        bail!("scripts/vm-image build failed; run `scripts/testbed up` for the packages");
    }
    let image = std::fs::canonicalize(image)?;
    let file = |name: &str| image.join(name).display().to_string();

    // A throwaway sandboxer home: data dir (sandboxer.db, vms/) and a
    // config dir whose profile overrides the built-in one to boot the
    // test image instead of haskell-build.qcow2.
    let home = tempfile::tempdir()?;
    let (data, config) = (home.path().join("data"), home.path().join("config"));
    std::fs::create_dir_all(config.join("profiles"))?;
    std::fs::write(
        config.join("profiles").join("vm-haskell-build.toml"),
        format!(
            r#"id = "profile.vm-haskell-build"
version = 1
description = "The small test boot image standing in for the Haskell build image"
default_ttl = "1h"
max_ttl = "4h"
ready_timeout = "3m"

[[routes]]
extension = "ext.vm-packer"
placement = []
price_per_hour = "0"

[routes.config]
kernel = "{kernel}"
initrd = "{initrd}"
image = "{base}"
memory_mb = 256
cpus = 1
accel = "tcg"
ssh_key = "{key}"
"#,
            kernel = file("vmlinuz"),
            initrd = file("initrd.img"),
            base = file("base.qcow2"),
            key = file("id_ed25519"),
        ),
    )?;

    let manager = StackBuilder::new(&data, &config)
        .with_extension(Arc::new(VmPackerExtension::new()))
        .build()?
        .manager;

    let started = Instant::now();
    let sbx = manager
        .create(
            CreateRequest {
                profile: "profile.vm-haskell-build".into(),
                actor: Some("adm:example".parse()?),
                ..CreateRequest::default()
            },
            true,
        )
        .await?;
    let r = sbx
        .reachability
        .clone()
        .context("a ready sandbox has a reachability")?;
    let ssh = r.ssh.clone().context("a VM sandbox has an SSH target")?;
    println!(
        "{} is {} after {:.1}s: ssh -p {} {}@{} (host key {})",
        sbx.id,
        sbx.state(),
        started.elapsed().as_secs_f64(),
        ssh.port,
        ssh.user,
        ssh.host,
        r.details["host_key"].as_str().unwrap_or("?"),
    );

    // What a consumer does with the record: log in and run something.
    let target = SshLogin {
        host: ssh.host.clone(),
        port: ssh.port,
        user: ssh.user.clone(),
    };
    let auth = SshAuth::KeyFile(image.join("id_ed25519"));
    let out = login_attempt(
        &target,
        &auth,
        "echo \"hello from $(hostname), $(nproc) cpu, $(free -m | awk '/Mem:/ {print $2}') MB\"",
        tokio::time::Instant::now() + Duration::from_secs(30),
    )
    .await
    .map_err(|why| anyhow::anyhow!("login into the VM failed: {why}"))?;
    println!("{}", out.output);

    let started = Instant::now();
    let done = manager.destroy(&sbx.id, EndReason::Destroyed).await?;
    println!(
        "{} is {} after {:.2}s; its VM folder is gone: {}",
        done.id,
        done.state(),
        started.elapsed().as_secs_f64(),
        !data.join("vms").join(&done.id).exists()
    );
    Ok(())
}
