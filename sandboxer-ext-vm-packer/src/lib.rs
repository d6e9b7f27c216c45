//! `ext.vm-packer`: a virtual machine on a placement host, booted with qemu
//! from a Packer-built image (or a kernel and an initrd), reachable over
//! SSH; or an existing VM, attached by its SSH address.
//!
//! All host work goes through the sandbox's
//! [`Transport`](sandboxer_core::transport::Transport), so the same code
//! serves `local` and SSH hosts. For a sandbox `ID` on a host whose data
//! folder is `DATA`, the VM folder is `DATA/vms/ID` (see [`vm_dir`]):
//!
//! - **provision** (one `exec` to prepare, one to launch): checks that
//!   qemu, the base image (`image`, in `image_dir`, default `DATA/images`)
//!   or the `kernel` and `initrd` (both may be set: the overlay is then
//!   attached as a disk of the directly booted kernel) and, for
//!   `accel = "kvm"`, `/dev/kvm` are there; makes the folder with a qcow2
//!   overlay `disk.qcow2` on the base image and the monitor FIFOs; picks a
//!   free port in `port_range` on the host and starts
//!   `qemu-system-x86_64 -name sandboxer-ID -daemonize -pidfile ...` with
//!   `memory_mb`, `cpus`, `accel`, user-mode networking with
//!   `hostfwd=tcp:ADDR:PORT-:22` (ADDR is the host's address, or
//!   `forward_address`), the serial console in `console.log` and a monitor
//!   on `monitor.in`/`monitor.out`. A port taken meanwhile is retried with
//!   another. Any failure removes what was made, and the error carries
//!   qemu's output.
//! - **wait_ready**: logs in over SSH at the host's address and the
//!   forwarded port (from this machine, with `ssh_key`) and runs
//!   `uname -a`, retrying until the deadline; meanwhile it watches qemu, so
//!   a VM that dies fails at once with the tail of qemu's log and of the
//!   console, and a VM whose SSH never answers times out with the same.
//!   The reachability is the SSH target (host address, forwarded port,
//!   user), the port under `ports.ssh`, and details (`vm_dir`, `pid`,
//!   `accel`, `host_key`, `mode`).
//! - **teardown**: `system_powerdown` on the monitor, up to `stop_timeout`
//!   for the guest to power off, then SIGTERM, then SIGKILL; then the folder
//!   (overlay included) is removed. It finds qemu by its pidfile, or by the
//!   folder on its command line when the pidfile is lost; idempotent.
//! - **list_resources**: every VM folder under `DATA/vms` (running or not)
//!   and every qemu whose command line names one, by sandbox id: the
//!   reaper's orphans.
//! - **attach mode** (`attach = { host, port, user }`): provision makes
//!   nothing, ready is the same SSH login check, teardown detaches and
//!   leaves the VM running.
//! - **pause / resume** (boot mode): QMP `stop` / `cont` on the VM's QMP
//!   FIFOs (`qmp.in`/`qmp.out`); resume then logs in as `wait_ready` does.
//! - **snapshot** (boot mode): QMP `stop`, the memory and device state
//!   migrated to `DATA/vm-snapshots/SNAP/state` (`migrate` to a `file:`),
//!   the overlay copied beside it (the disk at that moment), `cont` when
//!   it was running; made under `.SNAP.partial`, renamed once whole. A
//!   create from it copies the overlay and starts qemu with `-incoming` on
//!   the state, so the guest runs on from where it was (its processes and
//!   memory-backed files included), on a port of its own. The route's
//!   machine (memory, cpus, accel, kernel, initrd, image, NIC) must be the
//!   snapshot's.
//!
//! Every value that reaches the host's shell is quoted with
//! [`shell_quote`](sandboxer_core::transport::shell_quote); paths come from
//! a checked sandbox id. The config keys are in [`CONFIG_KEYS`] and the
//! crate README.
//!
//! ```no_run
//! use std::sync::Arc;
//! use sandboxer_core::extension::Registry;
//! use sandboxer_ext_vm_packer::VmPackerExtension;
//!
//! let mut registry = Registry::new();
//! registry.register(Arc::new(VmPackerExtension::new()));
//! assert!(registry.get("ext.vm-packer").is_some());
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use sandboxer_core::extension::{
    Capabilities, Extension, Provisioned, ReadyInfo, Resource, SandboxCtx, SnapshotMade,
};
use sandboxer_core::model::{Port, Reachability, SshTarget};
use sandboxer_core::transport::{remove_paths, ExecOutput, Transport, Utf8PathBuf};
use sandboxer_core::{Error, ErrorKind, Result};

mod config;
mod script;
pub mod ssh;

pub use config::{
    Accel, AttachConfig, BootConfig, Mode, VmConfig, ATTACH_KEYS, CONFIG_KEYS, DEFAULT_APPEND,
    DEFAULT_CPUS, DEFAULT_GUEST_SSH_PORT, DEFAULT_IMAGE_SUBDIR, DEFAULT_MEMORY_MB,
    DEFAULT_NIC_MODEL, DEFAULT_PORT_RANGE, DEFAULT_QEMU, DEFAULT_SSH_USER, DEFAULT_STOP_TIMEOUT,
};
pub use script::{files, VM_RESOURCE_KIND};

use script::{Layout, Plan};
use ssh::{SshAuth, SshLogin};

/// The extension id.
pub const VM_PACKER_EXTENSION_ID: &str = "ext.vm-packer";

/// How many ports a provision tries when qemu finds its port taken.
const PORT_TRIES: usize = 5;
/// The pause between two readiness logins.
const LOGIN_EVERY: Duration = Duration::from_millis(100);
/// How often, at most, `wait_ready` looks whether qemu still runs.
const STATUS_EVERY: Duration = Duration::from_millis(500);
/// Lines of a failed command's stderr kept in an error.
const STDERR_TAIL_LINES: usize = 20;

/// The VM extension (`ext.vm-packer`).
#[derive(Debug, Default)]
pub struct VmPackerExtension {}

impl VmPackerExtension {
    /// The extension; it holds no state (everything is on the hosts).
    pub fn new() -> Self {
        Self::default()
    }
}

/// The VM folder of sandbox `id` on the transport's host: `DATA/vms/ID`.
/// Only a well-formed id is taken (it lands in paths and scripts).
pub fn vm_dir(t: &dyn Transport, id: &str) -> Result<String> {
    Ok(layout(t, id)?.vm_dir)
}

fn layout(t: &dyn Transport, id: &str) -> Result<Layout> {
    Layout::new(t.data_dir(), id).ok_or_else(|| {
        Error::invalid_input(format!(
            "`{id}` is not a sandbox id; ext.vm-packer names VM folders only after sandbox ids"
        ))
    })
}

/// The address the SSH forward binds on the host: `forward_address`, else
/// the host's address when it is an IPv4 literal (a loopback host stays on
/// loopback), else every address.
fn forward_address(boot: &BootConfig, t: &dyn Transport) -> String {
    boot.forward_address
        .or_else(|| t.address().parse::<Ipv4Addr>().ok())
        .unwrap_or(Ipv4Addr::UNSPECIFIED)
        .to_string()
}

/// The readiness login's key: `ssh_key` must exist on this machine.
fn auth_for(cfg: &VmConfig) -> Result<SshAuth> {
    match &cfg.ssh_key {
        Some(key) if key.is_file() => Ok(SshAuth::KeyFile(key.clone())),
        Some(key) => Err(Error::invalid_config(format!(
            "`ssh_key`: {} is not a file on this machine",
            key.display()
        ))
        .with_hint("the readiness login runs here: give the path of a private key the VM accepts")),
        None => Ok(SshAuth::Default),
    }
}

/// A seed for the port choice, from the id (concurrent provisions spread).
fn port_seed(id: &str) -> u64 {
    id.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

#[async_trait]
impl Extension for VmPackerExtension {
    fn id(&self) -> &str {
        VM_PACKER_EXTENSION_ID
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            extend: false,
            list_resources: true,
            uses_host: true,
            pause: true,
            snapshot: true,
        }
    }

    /// Attach mode: nothing is made. Boot mode: prepare the VM folder
    /// (checks, overlay, FIFOs) and launch qemu detached on a free port.
    /// Missing files are `ProvisionFailed` naming them; a VM folder that
    /// exists is `Conflict`; qemu that does not start is `ProvisionFailed`
    /// with its output. On error nothing is left on the host.
    async fn provision(&self, ctx: &SandboxCtx) -> Result<Provisioned> {
        let cfg = VmConfig::from_map(&ctx.config)?;
        auth_for(&cfg)?;
        let boot = match &cfg.mode {
            Mode::Attach(a) => {
                return Ok(Provisioned {
                    handle: json!({
                        "mode": "attach",
                        "host": a.host,
                        "port": a.port,
                        "user": a.user,
                    }),
                })
            }
            Mode::Boot(b) => b,
        };
        let t = &*ctx.transport;
        let layout = layout(t, &ctx.id)?;
        let deadline = tokio::time::Instant::now() + ctx.ready_timeout;
        let data = t.data_dir();
        let plan = Plan {
            qemu: boot.qemu.clone(),
            base: boot.image.as_deref().map(|i| boot.resolve(data, i)),
            kernel: boot.kernel.as_deref().map(|k| boot.resolve(data, k)),
            initrd: boot.initrd.as_deref().map(|i| boot.resolve(data, i)),
            append: boot.append.clone(),
            memory_mb: boot.memory_mb,
            cpus: boot.cpus,
            accel: boot.accel,
            nic_model: boot.nic_model.clone(),
            forward_address: forward_address(boot, t),
            guest_ssh_port: boot.guest_ssh_port,
            extra_args: boot.qemu_args.clone(),
            restore: None,
        };
        let mut plan = plan;
        if let Some(r) = &ctx.restore {
            plan.restore = Some(restorable(t, &r.snapshot_id, &r.handle, &plan)?);
        }

        let out = run(
            t,
            "prepare",
            &script::prepare_script(&layout, &plan),
            deadline,
        )
        .await?;
        if !out.success() {
            return Err(prepare_failed(t, &layout, &cfg, boot, &out));
        }
        let used = script::parse_used_ports(&out.stdout_str());

        let mut launched = self.launch(t, &layout, &plan, boot, &used, deadline).await;
        if plan.restore.is_some() && launched.is_ok() {
            // qemu loads the saved state, then the guest is run.
            let ran = run(
                t,
                "restore",
                &script::run_restored_script(&layout),
                deadline,
            )
            .await;
            let ran = ran.and_then(|out| {
                if out.success() {
                    Ok(())
                } else {
                    Err(Error::new(
                        ErrorKind::ProvisionFailed,
                        format!(
                            "step `restore` on {}: running the restored VM exited with status {}{}",
                            t.host(),
                            out.status,
                            tail_suffix(&out)
                        ),
                    ))
                }
            });
            if let Err(e) = ran {
                launched = Err(e);
            }
        }
        match launched {
            Ok((port, pid)) => {
                tracing::debug!(sandbox = %ctx.id, host = t.host(), port, pid, "qemu started");
                Ok(Provisioned {
                    handle: json!({
                        "mode": "boot",
                        "vm_dir": layout.vm_dir,
                        "address": t.address(),
                        "forward_address": plan.forward_address,
                        "port": port,
                        "pid": pid,
                        "accel": boot.accel.as_str(),
                        "user": cfg.ssh_user,
                    }),
                })
            }
            Err(e) => match remove(t, &layout, boot.stop_timeout).await {
                Ok(()) if out_of_snapshot(&e) => Err(e),
                Ok(()) => Err(e),
                Err(re) => {
                    tracing::warn!(sandbox = %ctx.id, "rollback failed: {re}");
                    Err(e.context(format!("(rollback failed too: {re})")))
                }
            },
        }
    }

    /// Log in over SSH and run `uname -a` until it works or `deadline`
    /// passes (one try even when it is past). In boot mode qemu is watched:
    /// a VM that is gone is `ProvisionFailed`, out of time is `Timeout`,
    /// both with the tails of qemu's log and the console. The caller's
    /// teardown cleans up.
    async fn wait_ready(
        &self,
        ctx: &SandboxCtx,
        handle: &Value,
        deadline: tokio::time::Instant,
    ) -> Result<ReadyInfo> {
        let cfg = VmConfig::from_map(&ctx.config)?;
        let auth = auth_for(&cfg)?;
        let boot = match &cfg.mode {
            Mode::Attach(a) => {
                let target = SshLogin {
                    host: a.host.clone(),
                    port: a.port,
                    user: a.user.clone(),
                };
                return self.wait_attached(&ctx.id, &target, &auth, deadline).await;
            }
            Mode::Boot(b) => b,
        };
        let t = &*ctx.transport;
        let layout = layout(t, &ctx.id)?;
        let port = match handle.get("port").and_then(Value::as_u64) {
            Some(p) => p as u16,
            None => read_port(t, &layout).await?,
        };
        let target = SshLogin {
            host: t.address().to_string(),
            port,
            user: cfg.ssh_user.clone(),
        };
        let mut last_status: Option<tokio::time::Instant> = None;
        loop {
            let attempt = ssh::login_attempt(&target, &auth, ssh::READY_COMMAND, deadline).await;
            let why = match attempt {
                Ok(login) => {
                    let st = status(t, &layout, false).await?;
                    let pid = st
                        .pid
                        .or_else(|| handle.get("pid").and_then(Value::as_u64).map(|p| p as u32));
                    return Ok(ReadyInfo {
                        reachability: boot_reachability(t, &layout, boot, &target, pid, &login),
                        telemetry: None,
                        handle: Some(json!({
                            "mode": "boot",
                            "vm_dir": layout.vm_dir,
                            "address": t.address(),
                            "port": port,
                            "pid": pid,
                            "accel": boot.accel.as_str(),
                            "user": target.user,
                        })),
                    });
                }
                Err(why) => why,
            };
            let now = tokio::time::Instant::now();
            if last_status.is_none_or(|at| now - at >= STATUS_EVERY) {
                last_status = Some(now);
                let st = status(t, &layout, false).await?;
                if !st.running() {
                    let st = status(t, &layout, true).await?;
                    return Err(Error::new(
                        ErrorKind::ProvisionFailed,
                        format!(
                            "step `ready` on {}: qemu of {} exited before SSH answered (last try: {why}){}",
                            t.host(),
                            ctx.id,
                            st.tails()
                        ),
                    ));
                }
            }
            if now >= deadline {
                let st = status(t, &layout, true).await.unwrap_or_default();
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "step `ready` on {}: SSH into the VM of {} ({target}) did not answer in time (last try: {why}){}",
                        t.host(),
                        ctx.id,
                        st.tails()
                    ),
                )
                .with_hint("raise the profile's ready_timeout (TCG guests boot slowly), or check the image's sshd and the `ssh_key`"));
            }
            tokio::time::sleep(LOGIN_EVERY.min(deadline - now)).await;
        }
    }

    /// Attach mode: detach (the VM keeps running). Boot mode: stop qemu
    /// (`system_powerdown`, `stop_timeout`, SIGTERM, SIGKILL) and remove
    /// the VM folder with its overlay. Works from the id alone (a `Null`
    /// handle, a config that no longer parses: the defaults are used);
    /// an unknown id is Ok.
    async fn teardown(&self, ctx: &SandboxCtx, handle: &Value) -> Result<()> {
        if handle.get("mode").and_then(Value::as_str) == Some("attach") {
            return Ok(());
        }
        let boot = match VmConfig::from_map(&ctx.config) {
            Ok(cfg) => match cfg.mode {
                Mode::Attach(_) => return Ok(()),
                Mode::Boot(b) => b,
            },
            Err(e) => {
                if !ctx.config.is_empty() {
                    tracing::warn!(sandbox = %ctx.id, "teardown with the default config: {e}");
                }
                BootConfig::default()
            }
        };
        let layout = layout(&*ctx.transport, &ctx.id)?;
        remove(&*ctx.transport, &layout, boot.stop_timeout).await
    }

    /// Not an ability of VMs: `Unsupported`.
    async fn extend(
        &self,
        _ctx: &SandboxCtx,
        _handle: &Value,
        _expires_at: DateTime<Utc>,
    ) -> Result<()> {
        Err(Error::unsupported(
            "ext.vm-packer has no deadline of its own to extend",
        ))
    }

    /// One `vm` resource per sandbox id with a folder in `DATA/vms` or a
    /// qemu naming one (running when its qemu runs), and one `vm snapshot`
    /// per folder (whole or partial) in `DATA/vm-snapshots`.
    async fn list_resources(&self, transport: Arc<dyn Transport>) -> Result<Vec<Resource>> {
        let t = &*transport;
        let root = t.data_dir().join("vms");
        let out = t.exec(&script::list_script(root.as_str()), None).await?;
        if !out.success() {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "step `list` on {}: listing {root} and its qemu processes exited with status {}{}",
                    t.host(),
                    out.status,
                    tail_suffix(&out)
                ),
            ));
        }
        let mut found = script::parse_listing(&out.stdout_str(), root.as_str());
        let snaps = snapshots_root(t);
        let out = t
            .exec(&sandboxer_core::snapshot::folders_listing(&snaps), None)
            .await?;
        found.extend(out.stdout_str().lines().filter_map(|line| {
            sandboxer_core::snapshot::listed_folder(line, &snaps, SNAPSHOT_RESOURCE_KIND)
        }));
        Ok(found)
    }

    /// QMP `stop`: the guest's CPUs halt, its memory stays.
    async fn pause(&self, ctx: &SandboxCtx, handle: &Value) -> Result<()> {
        let layout = booted(ctx, handle, "pause")?;
        qmp_step(&*ctx.transport, &layout, "stop").await
    }

    /// QMP `cont`, then the readiness login.
    async fn resume(
        &self,
        ctx: &SandboxCtx,
        handle: &Value,
        deadline: tokio::time::Instant,
    ) -> Result<ReadyInfo> {
        let layout = booted(ctx, handle, "resume")?;
        qmp_step(&*ctx.transport, &layout, "cont").await?;
        self.wait_ready(ctx, handle, deadline).await
    }

    /// Save memory, devices and disk (see the crate docs).
    async fn snapshot(
        &self,
        ctx: &SandboxCtx,
        handle: &Value,
        snapshot_id: &str,
    ) -> Result<SnapshotMade> {
        let layout = booted(ctx, handle, "snapshot")?;
        let cfg = VmConfig::from_map(&ctx.config)?;
        let Mode::Boot(boot) = &cfg.mode else {
            return Err(Error::unsupported(
                "an attached VM is not sandboxer's to snapshot",
            ));
        };
        let t = &*ctx.transport;
        let dir = snapshot_dir(t, snapshot_id)?;
        let partial = sandboxer_core::snapshot::partial_dir(&dir);
        let data = t.data_dir();
        let machine = machine(boot, data);
        let has_disk = boot.image.is_some();
        let out = t
            .exec(
                &script::snapshot_script(&layout, dir.as_str(), partial.as_str(), has_disk),
                None,
            )
            .await
            .map_err(|e| e.context(format!("step `snapshot` on {}", t.host())))?;
        if !out.success() {
            return Err(Error::new(
                if out.status == script::EXIT_NO_QMP {
                    ErrorKind::Unsupported
                } else {
                    ErrorKind::Io
                },
                format!(
                    "step `snapshot` on {}: saving the VM of {} to {dir} exited with status {}{}",
                    t.host(),
                    ctx.id,
                    out.status,
                    tail_suffix(&out)
                ),
            ));
        }
        Ok(SnapshotMade {
            handle: json!({ "dir": dir, "machine": machine }),
            location: Some(dir.into_string()),
            size_bytes: out.stdout_str().trim().parse().ok(),
        })
    }

    /// Remove the snapshot's folder and any part of it.
    async fn delete_snapshot(
        &self,
        transport: Arc<dyn Transport>,
        snapshot_id: &str,
        _handle: &Value,
    ) -> Result<()> {
        let t = &*transport;
        let dir = snapshot_dir(t, snapshot_id)?;
        let partial = sandboxer_core::snapshot::partial_dir(&dir);
        remove_paths(t, &[&dir, &partial], "snapshot").await
    }
}

/// The `kind` of a snapshot folder found on a host.
pub const SNAPSHOT_RESOURCE_KIND: &str = "vm snapshot";

fn snapshots_root(t: &dyn Transport) -> Utf8PathBuf {
    t.data_dir().join("vm-snapshots")
}

/// `DATA/vm-snapshots/SNAP`, for a well-formed snapshot id only. qemu
/// takes it in a `file:` migration URI, where a comma ends the path.
fn snapshot_dir(t: &dyn Transport, snap: &str) -> Result<Utf8PathBuf> {
    if !sandboxer_core::snapshot::is_snapshot_id(snap) {
        return Err(Error::invalid_input(format!(
            "`{snap}` is not a snapshot id"
        )));
    }
    let root = snapshots_root(t);
    if root.as_str().contains(',') {
        return Err(Error::invalid_config(format!(
            "the data folder {} of {} has a comma, which qemu's migration URIs cannot carry",
            t.data_dir(),
            t.host()
        ))
        .with_hint("give the host a data folder without a comma to snapshot VMs there"));
    }
    Ok(root.join(snap))
}

/// What the guest sees of the machine: a restore must give it the same.
fn machine(boot: &BootConfig, data: &sandboxer_core::transport::Utf8Path) -> Value {
    json!({
        "memory_mb": boot.memory_mb,
        "cpus": boot.cpus,
        "accel": boot.accel.as_str(),
        "kernel": boot.kernel.as_deref().map(|k| boot.resolve(data, k)),
        "initrd": boot.initrd.as_deref().map(|i| boot.resolve(data, i)),
        "image": boot.image.as_deref().map(|i| boot.resolve(data, i)),
        "append": boot.append,
        "nic_model": boot.nic_model,
    })
}

/// The snapshot folder to restore from, after checking that the route's
/// machine is the snapshot's.
fn restorable(t: &dyn Transport, snap: &str, handle: &Value, plan: &Plan) -> Result<String> {
    let dir = snapshot_dir(t, snap)?;
    if handle.get("dir").and_then(Value::as_str) != Some(dir.as_str()) {
        return Err(Error::not_found(format!(
            "snapshot {snap} is not a VM snapshot on {}",
            t.host()
        )));
    }
    let want = &handle["machine"];
    let have = json!({
        "memory_mb": plan.memory_mb,
        "cpus": plan.cpus,
        "accel": plan.accel.as_str(),
        "kernel": plan.kernel,
        "initrd": plan.initrd,
        "image": plan.base,
        "append": plan.append,
        "nic_model": plan.nic_model,
    });
    if want != &have {
        let differs: Vec<String> = have
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| want.get(k.as_str()) != Some(v))
            .map(|(k, v)| {
                format!(
                    "{k} is {v} (the snapshot's: {})",
                    want.get(k.as_str()).unwrap_or(&Value::Null)
                )
            })
            .collect();
        return Err(Error::invalid_config(format!(
            "snapshot {snap} cannot be restored on this route's machine: {}",
            differs.join(", ")
        ))
        .with_hint("restore a VM snapshot with the route config it was taken with"));
    }
    Ok(dir.into_string())
}

/// Whether a provision failed for want of its snapshot (nothing to add).
fn out_of_snapshot(e: &Error) -> bool {
    e.kind() == ErrorKind::NotFound
}

/// The layout of a booted VM; an attached one cannot `what`.
fn booted(ctx: &SandboxCtx, handle: &Value, what: &str) -> Result<Layout> {
    if handle.get("mode").and_then(Value::as_str) == Some("attach")
        || matches!(
            VmConfig::from_map(&ctx.config).map(|c| c.mode),
            Ok(Mode::Attach(_))
        )
    {
        return Err(Error::unsupported(format!(
            "an attached VM is not sandboxer's to {what}"
        )));
    }
    layout(&*ctx.transport, &ctx.id)
}

/// QMP `stop` or `cont`.
async fn qmp_step(t: &dyn Transport, layout: &Layout, execute: &str) -> Result<()> {
    let out = t
        .exec(&script::run_state_script(layout, execute), None)
        .await
        .map_err(|e| e.context(format!("step `{execute}` on {}", t.host())))?;
    if out.success() {
        return Ok(());
    }
    let kind = match out.status {
        script::EXIT_NO_QMP => ErrorKind::Unsupported,
        _ => ErrorKind::Io,
    };
    Err(Error::new(
        kind,
        format!(
            "step `{execute}` on {}: QMP `{execute}` of {} exited with status {}{}",
            t.host(),
            layout.id,
            out.status,
            tail_suffix(&out)
        ),
    ))
}

impl VmPackerExtension {
    /// Pick a port, launch; on a port conflict, another port.
    async fn launch(
        &self,
        t: &dyn Transport,
        layout: &Layout,
        plan: &Plan,
        boot: &BootConfig,
        used: &BTreeSet<u16>,
        deadline: tokio::time::Instant,
    ) -> Result<(u16, Option<u32>)> {
        let mut tried = BTreeSet::new();
        let seed = port_seed(&layout.id);
        for _ in 0..PORT_TRIES {
            let Some(port) = script::pick_port(boot.port_range, used, &tried, seed) else {
                break;
            };
            let args = script::qemu_args(layout, plan, port);
            let out = run(
                t,
                "launch",
                &script::launch_script(layout, &plan.qemu, &args, port),
                deadline,
            )
            .await?;
            if out.success() {
                return Ok((port, out.stdout_str().trim().parse().ok()));
            }
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if script::is_port_conflict(&stderr) {
                tracing::debug!(sandbox = %layout.id, port, "port taken; trying another");
                tried.insert(port);
                continue;
            }
            let st = status(t, layout, true).await.unwrap_or_default();
            let mut msg = format!(
                "step `launch` on {}: qemu did not start (status {}){}",
                t.host(),
                out.status,
                tail_suffix(&out)
            );
            // The console may say more (a kernel that would not load).
            if !st.console_log.trim().is_empty() {
                msg.push_str(&format!(
                    "\n--- {} (last lines):\n{}",
                    files::CONSOLE_LOG,
                    st.console_log.trim_end()
                ));
            }
            return Err(Error::new(ErrorKind::ProvisionFailed, msg));
        }
        Err(Error::new(
            ErrorKind::ProvisionFailed,
            format!(
                "step `launch` on {}: no free port for the SSH forward in {}-{} (tried {})",
                t.host(),
                boot.port_range.0,
                boot.port_range.1,
                if tried.is_empty() {
                    "none: all are in use".to_string()
                } else {
                    tried
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        )
        .with_hint("widen `port_range` in the route config"))
    }

    async fn wait_attached(
        &self,
        id: &str,
        target: &SshLogin,
        auth: &SshAuth,
        deadline: tokio::time::Instant,
    ) -> Result<ReadyInfo> {
        loop {
            let attempt = ssh::login_attempt(target, auth, ssh::READY_COMMAND, deadline).await;
            match attempt {
                Ok(login) => {
                    let details = BTreeMap::from([
                        ("mode".to_string(), json!("attach")),
                        ("host_key".to_string(), json!(login.host_key)),
                        ("uname".to_string(), json!(login.output)),
                    ]);
                    return Ok(ReadyInfo {
                        reachability: Reachability {
                            address: target.host.clone(),
                            ports: BTreeMap::from([(
                                "ssh".to_string(),
                                vec![Port {
                                    target: DEFAULT_GUEST_SSH_PORT,
                                    published: target.port,
                                    protocol: "tcp".to_string(),
                                }],
                            )]),
                            ssh: Some(SshTarget {
                                host: target.host.clone(),
                                port: target.port,
                                user: target.user.clone(),
                            }),
                            details,
                            ..Reachability::default()
                        },
                        telemetry: None,
                        handle: None,
                    });
                }
                Err(why) => {
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!(
                                "step `ready`: SSH into the attached VM of {id} ({target}) did not answer in time (last try: {why})"
                            ),
                        ));
                    }
                    tokio::time::sleep(LOGIN_EVERY.min(deadline - now)).await;
                }
            }
        }
    }
}

fn boot_reachability(
    t: &dyn Transport,
    layout: &Layout,
    boot: &BootConfig,
    target: &SshLogin,
    pid: Option<u32>,
    login: &ssh::LoggedIn,
) -> Reachability {
    let mut details = BTreeMap::from([
        ("mode".to_string(), json!("boot")),
        ("vm_dir".to_string(), json!(layout.vm_dir)),
        ("accel".to_string(), json!(boot.accel.as_str())),
        ("host_key".to_string(), json!(login.host_key)),
        ("uname".to_string(), json!(login.output)),
    ]);
    if let Some(pid) = pid {
        details.insert("pid".to_string(), json!(pid));
    }
    Reachability {
        address: t.address().to_string(),
        ports: BTreeMap::from([(
            "ssh".to_string(),
            vec![Port {
                target: boot.guest_ssh_port,
                published: target.port,
                protocol: "tcp".to_string(),
            }],
        )]),
        ssh: Some(SshTarget {
            host: t.address().to_string(),
            port: target.port,
            user: target.user.clone(),
        }),
        details,
        ..Reachability::default()
    }
}

/// The forwarded port from the VM folder (a lost handle).
async fn read_port(t: &dyn Transport, layout: &Layout) -> Result<u16> {
    let path = layout.file(files::PORT);
    match t.read_file(&path).await? {
        Some(bytes) => String::from_utf8_lossy(&bytes)
            .trim()
            .parse()
            .map_err(|_| Error::internal(format!("{path} on {} holds no port", t.host()))),
        None => Err(Error::not_found(format!(
            "step `ready` on {}: no VM of {} ({} has no port file)",
            t.host(),
            layout.id,
            layout.vm_dir
        ))),
    }
}

async fn status(t: &dyn Transport, layout: &Layout, tails: bool) -> Result<script::Status> {
    let out = t
        .exec(&script::status_script(layout, tails), None)
        .await
        .map_err(|e| e.context(format!("step `status` on {}", t.host())))?;
    Ok(script::parse_status(&out.stdout_str()))
}

/// Stop the VM and remove its folder.
async fn remove(t: &dyn Transport, layout: &Layout, stop_timeout: Duration) -> Result<()> {
    let ticks = config::ticks(stop_timeout);
    let out = t
        .exec(&script::teardown_script(layout, ticks), None)
        .await
        .map_err(|e| e.context(format!("step `teardown` on {}", t.host())))?;
    if out.success() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Io,
        format!(
            "step `teardown` on {}: stopping the VM and removing {} exited with status {}{}",
            t.host(),
            layout.vm_dir,
            out.status,
            tail_suffix(&out)
        ),
    ))
}

/// Run one provisioning step, at most until `deadline`.
async fn run(
    t: &dyn Transport,
    step: &str,
    script: &str,
    deadline: tokio::time::Instant,
) -> Result<ExecOutput> {
    match tokio::time::timeout_at(deadline, t.exec(script, None)).await {
        Ok(r) => r.map_err(|e| e.context(format!("step `{step}` on {}", t.host()))),
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "step `{step}` on {} did not finish within the ready timeout",
                t.host()
            ),
        )),
    }
}

/// The error of a failed prepare, by its exit code.
fn prepare_failed(
    t: &dyn Transport,
    layout: &Layout,
    cfg: &VmConfig,
    boot: &BootConfig,
    out: &ExecOutput,
) -> Error {
    let host = t.host();
    let what = out.stderr_tail(STDERR_TAIL_LINES).trim().to_string();
    let image_dir = boot.image_dir_on(t.data_dir());
    let (kind, msg, hint) = match out.status {
        script::EXIT_EXISTS => {
            return Error::conflict(format!(
                "step `prepare` on {host}: the VM folder {} already exists",
                layout.vm_dir
            ))
            .with_hint("tear the sandbox down first; ids are never reused")
        }
        script::EXIT_NO_IMAGE => (
            ErrorKind::ProvisionFailed,
            format!("step `prepare` on {host}: {what} (image_dir is {image_dir})"),
            match &cfg.packer_template {
                Some(tpl) => format!(
                    "build the image from {tpl} with `scripts/vm-image packer-build` and copy it into {image_dir} on {host}"
                ),
                None => format!("put the base image into {image_dir} on {host}"),
            },
        ),
        script::EXIT_NO_KERNEL | script::EXIT_NO_INITRD => (
            ErrorKind::ProvisionFailed,
            format!("step `prepare` on {host}: {what} (image_dir is {image_dir})"),
            "`scripts/vm-image build DIR` makes a small kernel + initrd pair".to_string(),
        ),
        script::EXIT_NO_QEMU | script::EXIT_NO_QEMU_IMG => (
            ErrorKind::ProvisionFailed,
            format!("step `prepare` on {host}: {what}"),
            format!("install qemu-system-x86 and qemu-utils on {host}, or set `qemu`"),
        ),
        script::EXIT_NO_KVM => (
            ErrorKind::ProvisionFailed,
            format!("step `prepare` on {host}: accel is kvm but {what}"),
            "set `accel = \"tcg\"` in the route config where KVM is unusable".to_string(),
        ),
        script::EXIT_OVERLAY => (
            ErrorKind::ProvisionFailed,
            format!("step `prepare` on {host}: qemu-img could not make the overlay:\n{what}"),
            "the base image must be a readable qcow2 file".to_string(),
        ),
        status => (
            ErrorKind::ProvisionFailed,
            format!(
                "step `prepare` on {host}: preparing {} exited with status {status}{}",
                layout.vm_dir,
                tail_suffix(out)
            ),
            format!("check that sandboxer's data dir on {host} is writable"),
        ),
    };
    Error::new(kind, msg).with_hint(hint)
}

/// `:\n` and the stderr tail (else the stdout tail), or nothing.
fn tail_suffix(out: &ExecOutput) -> String {
    let mut tail = out.stderr_tail(STDERR_TAIL_LINES);
    if tail.trim().is_empty() {
        let s = out.stdout_str();
        let lines: Vec<&str> = s.lines().collect();
        tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n");
    }
    let tail = tail.trim_end();
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_seeds_differ_by_id() {
        assert_ne!(port_seed("sbx-aaaaaaaaaa"), port_seed("sbx-aaaaaaaaab"));
        assert_eq!(port_seed("sbx-x"), port_seed("sbx-x"));
    }

    #[test]
    fn missing_key_files_are_config_errors() {
        let cfg = VmConfig::from_map(
            serde_json::json!({"kernel": "k", "initrd": "i", "ssh_key": "/nonexistent/key"})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let e = auth_for(&cfg).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert!(e.message().contains("/nonexistent/key"), "{e}");
    }
}
