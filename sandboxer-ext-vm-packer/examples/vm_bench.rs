//! Create-to-ready and destroy of `ext.vm-packer` beside the same VM booted
//! by hand with qemu, in the same run; prints a Markdown section for
//! docs/benchmarks.md.
//!
//! ```text
//! cargo run -p sandboxer-ext-vm-packer --example vm_bench -- [--runs N] [--image DIR]
//! ```
//!
//! Both sides boot the test image of `scripts/vm-image build` (kernel +
//! initrd, an overlay on the tiny qcow2 base attached as a disk) under TCG
//! with 256 MB and one CPU, and poll SSH with the same login check
//! ([`sandboxer_ext_vm_packer::ssh::login_attempt`], every 100 ms), so the
//! difference is what sandboxer adds:
//!
//! - **by hand**: `qemu-img create` the overlay, `mkfifo` the monitor,
//!   `qemu-system-x86_64 ... -daemonize` with a fixed port, poll SSH;
//!   destroy = `system_powerdown` on the monitor, wait until qemu is gone,
//!   `rm -rf` the folder.
//! - **sandboxer**: `Manager::create` of `profile.vm-haskell-build` (store
//!   commits, transport, prepare and launch scripts, readiness) on `local`,
//!   then `Manager::destroy`.
//!
//! Runs alternate (by hand first on even runs, sandboxer first on odd ones),
//! one VM at a time, holding the same lock as the tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use sandboxer_testkit::stats::percentile_of;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use sandboxer_core::extension::Registry;
use sandboxer_core::hosts::Hosts;
use sandboxer_core::lifecycle::{EndReason, State};
use sandboxer_core::manager::{CreateRequest, Manager};
use sandboxer_core::profile::Catalog;
use sandboxer_core::store::db::Db;
use sandboxer_core::transport::Connector;
use sandboxer_ext_vm_packer::ssh::{self, SshAuth, SshLogin};
use sandboxer_ext_vm_packer::VmPackerExtension;
use sandboxer_transport::DefaultConnector;

const MEMORY_MB: u32 = 256;
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// The by-hand VM's SSH port (sandboxer picks its own in 22200-22999).
const HAND_PORT: u16 = 22100;

struct Image {
    dir: PathBuf,
}

impl Image {
    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let mut runs = 5usize;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut image_dir = std::env::var_os("SANDBOXER_TESTBED")
        .map(|d| PathBuf::from(d).join("vm-image"))
        .unwrap_or_else(|| repo.join(".testbed").join("vm-image"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--image" => image_dir = PathBuf::from(args.next().context("--image DIR")?),
            other => bail!("unknown argument {other} (use --runs N, --image DIR)"),
        }
    }
    let status = Command::new(repo.join("scripts").join("vm-image"))
        .arg("build")
        .arg(&image_dir)
        .status()
        .context("running scripts/vm-image")?;
    if !status.success() {
        bail!("scripts/vm-image build {} failed", image_dir.display());
    }
    let image = Image {
        dir: std::fs::canonicalize(&image_dir)?,
    };
    // One VM at a time, and never beside the tests' VMs.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(image.dir.join("vm-tests.lock"))?;
    lock.lock()?;

    let mut hand = Samples::default();
    let mut sbx = Samples::default();
    for run in 0..runs {
        if run % 2 == 0 {
            hand.push(by_hand(&image, run).await?);
            sbx.push(with_sandboxer(&image).await?);
        } else {
            sbx.push(with_sandboxer(&image).await?);
            hand.push(by_hand(&image, run).await?);
        }
        eprintln!(
            "run {}/{runs}: by hand {:.2}s + {:.2}s, sandboxer {:.2}s + {:.2}s",
            run + 1,
            hand.ready.last().unwrap().as_secs_f64(),
            hand.destroy.last().unwrap().as_secs_f64(),
            sbx.ready.last().unwrap().as_secs_f64(),
            sbx.destroy.last().unwrap().as_secs_f64(),
        );
    }
    print_markdown(&image, runs, &hand, &sbx);
    Ok(())
}

#[derive(Default)]
struct Samples {
    ready: Vec<Duration>,
    destroy: Vec<Duration>,
}

impl Samples {
    fn push(&mut self, (ready, destroy): (Duration, Duration)) {
        self.ready.push(ready);
        self.destroy.push(destroy);
    }
}

/// The by-hand boot: the same qemu command line a person would type.
async fn by_hand(image: &Image, run: usize) -> anyhow::Result<(Duration, Duration)> {
    let work = tempfile::tempdir()?;
    let dir = work.path().join(format!("hand-{run}"));
    let started = Instant::now();
    std::fs::create_dir(&dir)?;
    let overlay = dir.join("disk.qcow2");
    check(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-b"])
            .arg(image.file("base.qcow2"))
            .args(["-F", "qcow2"])
            .arg(&overlay),
    )?;
    check(
        Command::new("mkfifo")
            .arg(dir.join("monitor.in"))
            .arg(dir.join("monitor.out")),
    )?;
    let d = |f: &str| dir.join(f).display().to_string();
    check(Command::new("qemu-system-x86_64").args([
        "-name",
        &format!("by-hand-{run}"),
        "-daemonize",
        "-pidfile",
        &d("qemu.pid"),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-accel",
        "tcg",
        "-m",
        &MEMORY_MB.to_string(),
        "-smp",
        "1",
        "-no-reboot",
        "-kernel",
        &image.file("vmlinuz"),
        "-initrd",
        &image.file("initrd.img"),
        "-append",
        sandboxer_ext_vm_packer::DEFAULT_APPEND,
        "-drive",
        &format!("file={},if=virtio,format=qcow2", d("disk.qcow2")),
        "-nic",
        &format!("user,model=e1000,hostfwd=tcp:127.0.0.1:{HAND_PORT}-:22"),
        "-chardev",
        &format!("file,id=console,path={}", d("console.log")),
        "-serial",
        "chardev:console",
        "-chardev",
        &format!("pipe,id=monitor,path={}", d("monitor")),
        "-mon",
        "chardev=monitor,mode=readline",
    ]))?;
    let target = SshLogin {
        host: "127.0.0.1".into(),
        port: HAND_PORT,
        user: "root".into(),
    };
    let auth = SshAuth::KeyFile(image.dir.join("id_ed25519"));
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    ssh::wait_for_login(
        &target,
        &auth,
        ssh::READY_COMMAND,
        deadline,
        Duration::from_millis(100),
    )
    .await
    .map_err(|why| anyhow::anyhow!("the by-hand VM did not answer SSH: {why}"))?;
    let ready = started.elapsed();

    let started = Instant::now();
    let pid: u32 = std::fs::read_to_string(dir.join("qemu.pid"))?
        .trim()
        .parse()?;
    {
        use std::io::Write as _;
        let mut mon = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("monitor.in"))?;
        mon.write_all(b"system_powerdown\n")?;
    }
    let until = Instant::now() + Duration::from_secs(30);
    while running(pid) {
        if Instant::now() > until {
            bail!("the by-hand VM (pid {pid}) did not power off");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok((ready, started.elapsed()))
}

/// The same VM through sandboxer's manager on `local`.
async fn with_sandboxer(image: &Image) -> anyhow::Result<(Duration, Duration)> {
    let home = tempfile::tempdir()?;
    let data = home.path().join("data");
    let config = home.path().join("config");
    std::fs::create_dir_all(config.join("profiles"))?;
    std::fs::create_dir_all(&data)?;
    std::fs::write(
        config.join("profiles").join("vm-haskell-build.toml"),
        format!(
            r#"id = "profile.vm-haskell-build"
version = 1
description = "the test boot image, for the benchmark"
default_ttl = "1h"
max_ttl = "2h"
ready_timeout = "3m"

[[routes]]
extension = "ext.vm-packer"
placement = []
price_per_hour = "0"

[routes.config]
kernel = "{kernel}"
initrd = "{initrd}"
image = "{base}"
memory_mb = {MEMORY_MB}
cpus = 1
accel = "tcg"
ssh_key = "{key}"
"#,
            kernel = image.file("vmlinuz"),
            initrd = image.file("initrd.img"),
            base = image.file("base.qcow2"),
            key = image.file("id_ed25519"),
        ),
    )?;
    let store: Arc<dyn Db> = sandboxer_store::open(None, &data)?;
    let mut registry = Registry::new();
    registry.register(Arc::new(VmPackerExtension::new()));
    let connector: Arc<dyn Connector> = Arc::new(DefaultConnector::with_config_dir(
        data.clone(),
        config.clone(),
    ));
    let manager = Manager::new(
        store,
        Catalog::load(&config)?,
        Hosts::local_only(),
        registry,
        connector,
    );
    let req = CreateRequest {
        profile: "profile.vm-haskell-build".into(),
        actor: Some("adm:bench".parse()?),
        ..CreateRequest::default()
    };
    let started = Instant::now();
    let sbx = manager.create(req, true).await?;
    let ready = started.elapsed();
    if sbx.state() != State::Ready {
        bail!("sandbox {} is {}", sbx.id, sbx.state());
    }
    let started = Instant::now();
    manager.destroy(&sbx.id, EndReason::Destroyed).await?;
    let destroy = started.elapsed();
    if data.join("vms").join(&sbx.id).exists() {
        bail!("{} left its VM folder", sbx.id);
    }
    Ok((ready, destroy))
}

fn check(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn print_markdown(image: &Image, runs: usize, hand: &Samples, sbx: &Samples) {
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let recipe = std::fs::read_to_string(image.dir.join("recipe")).unwrap_or_default();
    println!("## ext.vm-packer: create-to-ready and destroy beside qemu by hand\n");
    println!(
        "`cargo run -p sandboxer-ext-vm-packer --example vm_bench -- --runs {runs}`: \
         {runs} runs each, alternating, one VM at a time, on a {cpus}-core machine. \
         {qemu}, TCG, {MEMORY_MB} MB, 1 CPU; the test boot image ({}) with an overlay on \
         a 64 MiB qcow2 base attached as a disk. Both sides poll SSH with the same login \
         check every 100 ms. By hand: `qemu-img create`, `mkfifo`, `qemu-system-x86_64 \
         -daemonize`, poll; destroy = `system_powerdown`, wait for qemu to exit, `rm -rf`. \
         Sandboxer: `Manager::create` (wait) and `Manager::destroy` of \
         `profile.vm-haskell-build` on `local`.\n",
        recipe.trim()
    );
    println!("| step | by hand p50 | sandboxer p50 | sandboxer / by hand | by hand min–max | sandboxer min–max |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, h, s) in [
        ("create → ready", &hand.ready, &sbx.ready),
        ("destroy", &hand.destroy, &sbx.destroy),
    ] {
        let (hp, sp) = (percentile_of(h, 50.0), percentile_of(s, 50.0));
        println!(
            "| {name} | {} | {} | {:.2} | {}–{} | {}–{} |",
            secs(hp),
            secs(sp),
            sp.as_secs_f64() / hp.as_secs_f64().max(1e-9),
            secs(*h.iter().min().unwrap()),
            secs(*h.iter().max().unwrap()),
            secs(*s.iter().min().unwrap()),
            secs(*s.iter().max().unwrap()),
        );
    }
    let total = |s: &Samples| {
        let v: Vec<Duration> = s
            .ready
            .iter()
            .zip(&s.destroy)
            .map(|(a, b)| *a + *b)
            .collect();
        percentile_of(&v, 50.0)
    };
    let (ht, st) = (total(hand), total(sbx));
    println!(
        "| create → ready → destroyed | {} | {} | {:.2} | | |",
        secs(ht),
        secs(st),
        st.as_secs_f64() / ht.as_secs_f64()
    );
    println!();
}
