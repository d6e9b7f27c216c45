//! What a down or hanging State Hub costs the CLI: canary create + destroy
//! through the real `sandboxer` binary with no hub configured, the hub up,
//! the hub down (a closed port) and the hub hanging (accepts, never
//! answers). Prints a Markdown section.
//!
//! ```text
//! cargo build --release -p sandboxer-cli
//! cargo run --release -p sandboxer-events --example hub_bench -- [--cycles 200] [--rounds 4] [--sandboxer PATH]
//! ```
//!
//! The modes take turns in rounds, so load from other work on the machine
//! falls on all of them alike. Each mode has its own data dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sandboxer_events::stub_hub::{HubMode, StubHub};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    NoHub,
    Up,
    ClosedPort,
    Hanging,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::NoHub, Mode::Up, Mode::ClosedPort, Mode::Hanging];

    fn label(self) -> &'static str {
        match self {
            Mode::NoHub => "not configured",
            Mode::Up => "up",
            Mode::ClosedPort => "down (closed port)",
            Mode::Hanging => "hanging (accepts, never answers)",
        }
    }
}

struct Bench {
    mode: Mode,
    home: tempfile::TempDir,
    url: Option<String>,
    creates: Vec<Duration>,
    cycles: usize,
    elapsed: Duration,
}

fn main() -> Result<()> {
    let mut cycles = 200usize;
    let mut rounds = 4usize;
    let mut bin: Option<PathBuf> = std::env::var_os("SANDBOXER_BIN").map(PathBuf::from);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().context("every option takes a value")?;
        match a.as_str() {
            "--cycles" => cycles = v.parse()?,
            "--rounds" => rounds = v.parse()?,
            "--sandboxer" => bin = Some(v.into()),
            other => bail!("unknown option {other} (--cycles N, --rounds N, --sandboxer PATH)"),
        }
    }
    let bin = bin.unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/sandboxer")
    });
    if !bin.exists() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p sandboxer-cli` or pass --sandboxer PATH",
            bin.display()
        );
    }
    let rounds = rounds.max(1);
    let per_round = cycles.div_ceil(rounds);

    let up = StubHub::start_background()?;
    let hanging = StubHub::start_background()?;
    hanging.set_mode(HubMode::Hang);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        drop(l);
        format!("http://127.0.0.1:{port}")
    };
    let mut benches: Vec<Bench> = Mode::ALL
        .iter()
        .map(|&mode| {
            Ok(Bench {
                mode,
                home: tempfile::Builder::new().prefix("hub-bench-").tempdir()?,
                url: match mode {
                    Mode::NoHub => None,
                    Mode::Up => Some(up.url()),
                    Mode::ClosedPort => Some(closed.clone()),
                    Mode::Hanging => Some(hanging.url()),
                },
                creates: Vec::new(),
                cycles: 0,
                elapsed: Duration::ZERO,
            })
        })
        .collect::<Result<_>>()?;

    // Warm up the binary and the page cache.
    for b in &mut benches {
        cycle(&bin, b)?;
        b.creates.clear();
    }
    for _ in 0..rounds {
        for b in &mut benches {
            let t = Instant::now();
            for _ in 0..per_round {
                cycle(&bin, b)?;
                b.cycles += 1;
            }
            b.elapsed += t.elapsed();
        }
    }

    let rate = |b: &Bench| b.cycles as f64 / b.elapsed.as_secs_f64();
    let up_rate = rate(&benches[1]);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("## State Hub down or hanging: what it costs a CLI create\n");
    println!(
        "Canary `create` + `destroy` through the `sandboxer` binary ({}), one after \
         the other, {} cycles per row in {rounds} interleaved rounds, on {cpus} CPUs. \
         Remade by `cargo run --release -p sandboxer-events --example hub_bench`.\n",
        bin.display(),
        benches[0].cycles
    );
    println!(
        "| State Hub | cycles/s | vs hub up | create p50 | create p99 | slowest create | events delivered | events left in the outbox |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for b in &benches {
        let mut c = b.creates.clone();
        c.sort();
        let pct = |p: f64| c[((c.len() as f64 * p).ceil() as usize).clamp(1, c.len()) - 1];
        let left = sandboxer_store::open(None, &b.home.path().join("data"))
            .and_then(|db| sandboxer_core::store::db::read(db.as_ref(), |tx| tx.outbox_depth()))
            .unwrap_or(0);
        let delivered = match b.mode {
            Mode::Up => up.received_ids().len().to_string(),
            Mode::NoHub => "-".into(),
            _ => "0".into(),
        };
        println!(
            "| {} | {:.1} | {:+.1}% | {} | {} | {} | {} | {} |",
            b.mode.label(),
            rate(b),
            (rate(b) / up_rate - 1.0) * 100.0,
            ms(pct(0.5)),
            ms(pct(0.99)),
            ms(*c.last().unwrap()),
            delivered,
            left
        );
    }
    let total = (benches[1].cycles + 1) * 4;
    let got = up.received_ids().len();
    if got == 0 {
        println!(
            "\nThe hub received nothing while up: this `sandboxer` does not deliver inline \
             (no `sandboxer_events::deliver_inline` call), so the rows measure only the \
             outbox writes."
        );
        return Ok(());
    }
    println!(
        "\n\"vs hub up\" compares throughput (positive: faster than with the hub up). \
         With the hub up, {got} of {total} events arrived during the run, each command \
         delivering its own events in one pass (a lease commit, the POSTs, a removal \
         commit). Down or hanging, a command that finds the hub backing off does not \
         contact it (it only reads the store); one command per backoff period (2 s \
         doubling to 60 s, jittered) probes it with a 300 ms timeout, and the first \
         failure (in the warm-up here) costs at most the 1 s inline budget. The outbox \
         of the down rows grows by 4 events per cycle, which every later commit \
         carries."
    );
    Ok(())
}

fn cycle(bin: &Path, b: &mut Bench) -> Result<()> {
    let t = Instant::now();
    let out = run(bin, b, &["create", "--json"])?;
    b.creates.push(t.elapsed());
    let rec: serde_json::Value = serde_json::from_slice(&out).context("create --json")?;
    if rec["state"] != "ready" {
        bail!("create did not get ready: {rec}");
    }
    let id = rec["id"].as_str().context("no id")?.to_string();
    run(bin, b, &["destroy", &id, "--json"])?;
    Ok(())
}

fn run(bin: &Path, b: &Bench, args: &[&str]) -> Result<Vec<u8>> {
    let mut c = Command::new(bin);
    c.args(args)
        .env("SANDBOXER_DATA_DIR", b.home.path().join("data"))
        .env("SANDBOXER_CONFIG_DIR", b.home.path().join("config"))
        .env_remove("SANDBOXER_HOST")
        .env_remove("SANDBOXER_ACTOR")
        .env_remove("SANDBOXER_STATE_HUB_URL")
        .env("USER", "bench")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    if let Some(u) = &b.url {
        c.env("SANDBOXER_STATE_HUB_URL", u);
    }
    let out = c
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "sandboxer {} exited {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}
