//! Fixtures: the test boot image, the VM lock, contexts and managers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};

use sandboxer_core::extension::{Registry, SandboxCtx};
use sandboxer_core::hosts::Hosts;
use sandboxer_core::manager::Manager;
use sandboxer_core::profile::Catalog;
use sandboxer_core::store::db::Db;
use sandboxer_core::transport::{Connector, Transport};
use sandboxer_ext_vm_packer::VmPackerExtension;
use sandboxer_testkit::testbed::testbed;
use sandboxer_transport::{DefaultConnector, LocalTransport};

pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What `scripts/vm-image build` made.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
}

impl Image {
    pub fn kernel(&self) -> String {
        self.dir.join("vmlinuz").display().to_string()
    }
    pub fn initrd(&self) -> String {
        self.dir.join("initrd.img").display().to_string()
    }
    pub fn base(&self) -> String {
        self.dir.join("base.qcow2").display().to_string()
    }
    pub fn key(&self) -> String {
        self.dir.join("id_ed25519").display().to_string()
    }

    /// The route config that boots the test image (kernel + initrd, with an
    /// overlay on the tiny qcow2 base attached as a disk).
    pub fn config(&self) -> Value {
        json!({
            "kernel": self.kernel(),
            "initrd": self.initrd(),
            "image": self.base(),
            "memory_mb": 256,
            "cpus": 1,
            "accel": "tcg",
            "ssh_key": self.key(),
            "stop_timeout": "2s",
        })
    }
}

/// Where the test image is cached: `$SANDBOXER_TESTBED/vm-image` when a
/// testbed is up, else the target dir.
fn cache_dir() -> PathBuf {
    match testbed() {
        Some(tb) => tb.dir.join("vm-image"),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vm-image"),
    }
}

/// A VM tool is missing although the testbed is configured: a failure.
#[track_caller]
pub fn absent(test: &str, what: &str) -> ! {
    sandboxer_testkit::testbed::missing(
        test,
        what,
        "run `scripts/testbed up` (it installs qemu-system-x86, qemu-utils, linux-image-amd64, busybox-static, dropbear-bin, cpio)",
    )
}

fn on_path(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// The test boot image, built once (and cached across runs); a failure
/// when qemu and the Debian packages are not here (the testbed installs
/// them).
#[track_caller]
pub fn require_vm(test: &str) -> Image {
    for tool in [
        "qemu-system-x86_64",
        "qemu-img",
        "dropbear",
        "cpio",
        "ssh-keygen",
    ] {
        if !on_path(tool) && !Path::new("/usr/sbin").join(tool).exists() {
            absent(test, &format!("`{tool}` is not installed"));
        }
    }
    static BUILT: OnceLock<Result<Image, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let dir = cache_dir();
        let out = Command::new(repo().join("scripts").join("vm-image"))
            .arg("build")
            .arg(&dir)
            .output()
            .map_err(|e| format!("running scripts/vm-image: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/vm-image build {} failed:\n{}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(Image { dir })
    });
    match built {
        Ok(image) => image.clone(),
        Err(e) => panic!("{test}: {e}"),
    }
}

/// Held while a test runs VMs: one VM at a time on this 2-core machine,
/// across test threads and processes (nextest).
pub struct VmLock(#[allow(dead_code)] std::fs::File);

pub fn vm_lock() -> VmLock {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("vm-tests.lock"))
        .unwrap();
    f.lock().unwrap();
    VmLock(f)
}

/// A host data folder of its own, and `local` over it.
pub struct Bed {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub transport: Arc<dyn Transport>,
}

impl Bed {
    pub fn new() -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let transport: Arc<dyn Transport> = Arc::new(LocalTransport::new(data.clone()));
        Bed {
            dir,
            data,
            transport,
        }
    }

    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.data.join("vms").join(id)
    }

    pub fn ctx(&self, id: &str, config: Value) -> SandboxCtx {
        make_ctx(&self.transport, id, config, READY_TIMEOUT)
    }
}

pub fn make_ctx(
    transport: &Arc<dyn Transport>,
    id: &str,
    config: Value,
    ready_timeout: Duration,
) -> SandboxCtx {
    SandboxCtx {
        id: id.to_string(),
        profile: "profile.vm-haskell-build".into(),
        profile_version: 1,
        actor: "adm:tester".parse().unwrap(),
        config: config.as_object().cloned().unwrap_or_default(),
        inputs: BTreeMap::new(),
        host: transport.host().to_string(),
        transport: transport.clone(),
        expires_at: sandboxer_core::model::now() + chrono::Duration::hours(1),
        ready_timeout,
        created_at: sandboxer_core::model::now(),
        price_per_hour: sandboxer_core::credits::Micros::ZERO,
        restore: None,
    }
}

/// The pids of running (non-zombie) processes whose command line holds
/// `needle`.
pub fn pids_naming(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !text.contains(needle) {
            continue;
        }
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie && pid != std::process::id() {
            out.push(pid);
        }
    }
    out
}

/// Nothing of sandbox `id` is left: no qemu naming it, no VM folder.
#[track_caller]
pub fn assert_gone(vm_dir: &Path, id: &str) {
    let pids = pids_naming(&format!("sandboxer-{id}"));
    assert!(pids.is_empty(), "qemu of {id} still runs: {pids:?}");
    assert!(!vm_dir.exists(), "{} is still there", vm_dir.display());
}

/// A manager over its own data and config dirs, with `ext.vm-packer`, the
/// built-in catalog plus `profile_toml` as a user profile, and `hosts`.
pub struct World {
    pub _home: tempfile::TempDir,
    pub data: PathBuf,
    pub manager: Manager,
}

impl World {
    pub fn new(profile_toml: &str, hosts: Hosts, config_dir: Option<&Path>) -> World {
        let home = tempfile::tempdir().unwrap();
        let data = home.path().join("data");
        let config = home.path().join("config");
        std::fs::create_dir_all(config.join("profiles")).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            config.join("profiles").join("vm-haskell-build.toml"),
            profile_toml,
        )
        .unwrap();
        let catalog = Catalog::load(&config).unwrap();
        let store: Arc<dyn Db> = sandboxer_store::open(None, &data).unwrap();
        let mut registry = Registry::new();
        registry.register(Arc::new(VmPackerExtension::new()));
        let connector: Arc<dyn Connector> = Arc::new(DefaultConnector::with_config_dir(
            data.clone(),
            config_dir.map(Path::to_path_buf).unwrap_or(config),
        ));
        let manager = Manager::new(store, catalog, hosts, registry, connector);
        World {
            _home: home,
            data,
            manager,
        }
    }
}

/// `profile.vm-haskell-build` overridden to boot the test image on
/// `placement`, with `extra` lines in its config table.
pub fn profile_toml(image: &Image, placement: &[&str], ready_timeout: &str, extra: &str) -> String {
    let placement = placement
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"id = "profile.vm-haskell-build"
version = 1
description = "The test boot image standing in for the Haskell build image"
default_ttl = "1h"
max_ttl = "2h"
ready_timeout = "{ready_timeout}"

[[routes]]
extension = "ext.vm-packer"
placement = [{placement}]
price_per_hour = "0"

[routes.config]
kernel = "{kernel}"
initrd = "{initrd}"
image = "{base}"
memory_mb = 256
cpus = 1
accel = "tcg"
ssh_key = "{key}"
stop_timeout = "5s"
packer_template = "images/haskell-build.pkr.hcl"
{extra}
"#,
        kernel = image.kernel(),
        initrd = image.initrd(),
        base = image.base(),
        key = image.key(),
    )
}

/// Run `command` in the VM with the system's `ssh`, as a consumer would
/// from the record's reachability.
pub fn ssh_run(host: &str, port: u16, user: &str, key: &str, command: &str) -> String {
    let out = Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
            "-i",
            key,
            "-p",
            &port.to_string(),
            &format!("{user}@{host}"),
            command,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh {user}@{host}:{port} {command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
