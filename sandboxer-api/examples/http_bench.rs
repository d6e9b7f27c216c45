//! Canary create+destroy over HTTP with 16 concurrent clients, beside the
//! same work through the CLI, in the same run. Prints a Markdown section.
//!
//! ```sh
//! cargo build --release -p sandboxer-cli
//! cargo run --release -p sandboxer-api --example http_bench
//! ```
//!
//! Options (environment): `SANDBOXER_BIN` (the `sandboxer` binary; default
//! `target/release/sandboxer`, else `target/debug/sandboxer`),
//! `BENCH_CLIENTS` (16), `BENCH_PAIRS` (create+destroy pairs per client, 10).
//!
//! Each phase gets a fresh home (data and config dirs in a temp folder), so
//! neither pays for the other's records. The server runs without its reaper.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn binary() -> Result<PathBuf> {
    if let Some(b) = std::env::var_os("SANDBOXER_BIN") {
        return Ok(PathBuf::from(b));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("sandboxer");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("no sandboxer binary: run `cargo build --release -p sandboxer-cli` or set SANDBOXER_BIN")
}

struct Home {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Home {
    fn new(bin: &Path) -> Result<Home> {
        let dir = tempfile::Builder::new()
            .prefix("sandboxer-bench-")
            .tempdir()?;
        std::fs::create_dir_all(dir.path().join("config"))?;
        Ok(Home {
            dir,
            bin: bin.to_path_buf(),
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("SANDBOXER_DATA_DIR", self.dir.path().join("data"))
            .env("SANDBOXER_CONFIG_DIR", self.dir.path().join("config"))
            .env_remove("SANDBOXER_HOST")
            .env_remove("SANDBOXER_ACTOR")
            .env_remove("SANDBOXER_STATE_HUB_URL")
            .env("USER", "bench")
            .stdin(Stdio::null());
        c
    }

    fn json(&self, args: &[&str]) -> Result<Value> {
        let out = self.command(args).output()?;
        if !out.status.success() {
            bail!(
                "sandboxer {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

/// Latencies of every pair and the wall time of the phase.
struct Phase {
    pairs: Vec<Duration>,
    wall: Duration,
}

impl Phase {
    fn pct(&self, p: f64) -> Duration {
        sandboxer_testkit::stats::percentile_of(&self.pairs, p * 100.0)
    }
    fn throughput(&self) -> f64 {
        self.pairs.len() as f64 / self.wall.as_secs_f64()
    }
}

async fn http_phase(bin: &Path, clients: usize, per: usize) -> Result<Phase> {
    let home = Home::new(bin)?;
    let token = home.json(&["tokens", "add", "--actor", "adm:bench", "--json"])?["token"]
        .as_str()
        .context("token")?
        .to_string();
    let mut child = home
        .command(&["serve", "--bind", "127.0.0.1:0", "--reap-interval", "0s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("serve said {line:?}"))?
        .to_string();
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let pair = |http: reqwest::Client, base: String, token: String| async move {
        let t = Instant::now();
        let r = http
            .post(format!("{base}/v1/sandboxes"))
            .bearer_auth(&token)
            .body("{}")
            .send()
            .await?;
        if r.status() != 201 {
            bail!("create: {} {}", r.status(), r.text().await?);
        }
        let id = r.json::<Value>().await?["id"]
            .as_str()
            .context("id")?
            .to_string();
        let r = http
            .delete(format!("{base}/v1/sandboxes/{id}"))
            .bearer_auth(&token)
            .send()
            .await?;
        if r.status() != 200 {
            bail!("destroy: {} {}", r.status(), r.text().await?);
        }
        anyhow::Ok(t.elapsed())
    };
    // Warm up: the first canary hashes and deploys the binary.
    pair(http.clone(), base.clone(), token.clone()).await?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        tasks.spawn(async move {
            let mut out = Vec::new();
            for _ in 0..per {
                out.push(pair(http.clone(), base.clone(), token.clone()).await?);
            }
            anyhow::Ok(out)
        });
    }
    let mut pairs = Vec::new();
    while let Some(r) = tasks.join_next().await {
        pairs.extend(r??);
    }
    let wall = started.elapsed();
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    Ok(Phase { pairs, wall })
}

fn cli_phase(bin: &Path, clients: usize, per: usize) -> Result<Phase> {
    let home = Home::new(bin)?;
    let pair = |home: &Home| -> Result<Duration> {
        let t = Instant::now();
        let rec = home.json(&["create", "--json"])?;
        let id = rec["id"].as_str().context("id")?.to_string();
        home.json(&["destroy", &id, "--json"])?;
        Ok(t.elapsed())
    };
    pair(&home)?;
    let started = Instant::now();
    let pairs = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    (0..per)
                        .map(|_| pair(&home))
                        .collect::<Result<Vec<Duration>>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().expect("client thread")?);
        }
        anyhow::Ok(all)
    })?;
    Ok(Phase {
        pairs,
        wall: started.elapsed(),
    })
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let bin = binary()?;
    let clients = env_num("BENCH_CLIENTS", 16);
    let per = env_num("BENCH_PAIRS", 10);
    let http = http_phase(&bin, clients, per).await?;
    let cli = tokio::task::spawn_blocking({
        let bin = bin.clone();
        move || cli_phase(&bin, clients, per)
    })
    .await??;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let build = if bin.components().any(|c| c.as_os_str() == "release") {
        "release"
    } else {
        "debug"
    };
    println!("## HTTP API: canary create+destroy, {clients} concurrent clients\n");
    println!(
        "Measured {} on {cpus} CPUs with a {build} build: {clients} clients each create a canary \
         on `local` and destroy it, {per} times in a row (one warm-up pair first). A pair's \
         latency is create (until ready) plus destroy (until torn down).\n",
        chrono::Utc::now().format("%Y-%m-%d")
    );
    println!("| path | pairs | wall time | pairs/s | p50 | p99 |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, p) in [
        ("HTTP: `sandboxer serve`, one client connection pool", &http),
        (
            "CLI: `sandboxer create` + `sandboxer destroy` processes",
            &cli,
        ),
    ] {
        println!(
            "| {name} | {} | {:.2} s | {:.1} | {} | {} |",
            p.pairs.len(),
            p.wall.as_secs_f64(),
            p.throughput(),
            ms(p.pct(0.50)),
            ms(p.pct(0.99)),
        );
    }
    println!(
        "\nRemake: `cargo build --release -p sandboxer-cli && cargo run --release -p sandboxer-api --example http_bench`."
    );
    Ok(())
}
