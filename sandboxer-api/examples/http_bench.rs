//! Canary create+destroy over HTTP with 16 concurrent clients, beside the
//! same work through the CLI, and through two `serve` replicas sharing one
//! PostgreSQL database (the testbed's: `SANDBOXER_TEST_DATABASE_URL`), in
//! the same run. Prints a Markdown section.
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
    /// `SANDBOXER_DATABASE_URL`, for a shared database.
    database: Option<String>,
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
            database: None,
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
        match &self.database {
            Some(url) => c.env("SANDBOXER_DATABASE_URL", url),
            None => c.env_remove("SANDBOXER_DATABASE_URL"),
        };
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
    /// Records lost or duplicated (the ids the clients got against the
    /// records stored), and whether `db check` passed afterwards.
    lost_or_duplicated: usize,
    check_ok: bool,
}

impl Phase {
    fn pct(&self, p: f64) -> Duration {
        sandboxer_testkit::stats::percentile_of(&self.pairs, p * 100.0)
    }
    fn throughput(&self) -> f64 {
        self.pairs.len() as f64 / self.wall.as_secs_f64()
    }
}

/// `replicas` servers on `home` (each with its reaper, as deployed); their
/// processes and base URLs.
fn serve(home: &Home, replicas: usize) -> Result<Vec<(std::process::Child, String)>> {
    let mut out = Vec::new();
    for _ in 0..replicas {
        let mut child = home
            .command(&["serve", "--bind", "127.0.0.1:0", "--reap-interval", "30s"])
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
        out.push((child, format!("http://{addr}")));
    }
    Ok(out)
}

/// The records stored against the ids the clients were given, and `db
/// check`.
fn audit(home: &Home, ids: &[String]) -> Result<(usize, bool)> {
    let stored = home.json(&["list", "--json"])?;
    let mut stored: Vec<String> = stored
        .as_array()
        .context("list")?
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect();
    stored.sort();
    let mut given = ids.to_vec();
    given.sort();
    let differ = stored.len().abs_diff(given.len())
        + stored.iter().zip(&given).filter(|(a, b)| a != b).count();
    let ok = home.command(&["db", "check"]).output()?.status.success();
    Ok((differ, ok))
}

async fn http_phase(
    bin: &Path,
    clients: usize,
    per: usize,
    database: Option<String>,
    replicas: usize,
) -> Result<Phase> {
    let mut home = Home::new(bin)?;
    home.database = database;
    let token = home.json(&["tokens", "add", "--actor", "adm:bench", "--json"])?["token"]
        .as_str()
        .context("token")?
        .to_string();
    let mut servers = serve(&home, replicas)?;
    let bases: Vec<String> = servers.iter().map(|(_, b)| b.clone()).collect();
    let http = reqwest::Client::new();
    // Created through one replica, destroyed through the next.
    let pair = |http: reqwest::Client, base: String, other: String, token: String| async move {
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
            .delete(format!("{other}/v1/sandboxes/{id}"))
            .bearer_auth(&token)
            .send()
            .await?;
        if r.status() != 200 {
            bail!("destroy: {} {}", r.status(), r.text().await?);
        }
        anyhow::Ok((t.elapsed(), id))
    };
    // Warm up: the first canary hashes and deploys the binary.
    let mut ids = vec![
        pair(
            http.clone(),
            bases[0].clone(),
            bases[0].clone(),
            token.clone(),
        )
        .await?
        .1,
    ];
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (http, token) = (http.clone(), token.clone());
        let base = bases[c % bases.len()].clone();
        let other = bases[(c + 1) % bases.len()].clone();
        tasks.spawn(async move {
            let mut out = Vec::new();
            for _ in 0..per {
                out.push(pair(http.clone(), base.clone(), other.clone(), token.clone()).await?);
            }
            anyhow::Ok(out)
        });
    }
    let mut pairs = Vec::new();
    while let Some(r) = tasks.join_next().await {
        for (t, id) in r?? {
            pairs.push(t);
            ids.push(id);
        }
    }
    let wall = started.elapsed();
    for (child, _) in &mut servers {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let _ = child.wait();
    }
    let (lost_or_duplicated, check_ok) = audit(&home, &ids)?;
    Ok(Phase {
        pairs,
        wall,
        lost_or_duplicated,
        check_ok,
    })
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
    let wall = started.elapsed();
    let check_ok = home.command(&["db", "check"]).output()?.status.success();
    Ok(Phase {
        pairs,
        wall,
        lost_or_duplicated: 0,
        check_ok,
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
    let http = http_phase(&bin, clients, per, None, 1).await?;
    // Two replicas on one PostgreSQL database: a scratch database on the
    // testbed's server.
    let replicated = match std::env::var_os("SANDBOXER_TEST_DATABASE_URL") {
        Some(_) => {
            let pg = sandboxer_testkit::pg::PgScratch::new();
            Some(http_phase(&bin, clients, per, Some(pg.url.clone()), 2).await?)
        }
        None if std::env::var_os("CI").is_some() => {
            bail!("SANDBOXER_TEST_DATABASE_URL is not set under CI: `scripts/testbed up` starts PostgreSQL")
        }
        None => None,
    };
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
    println!("| path | pairs | wall time | pairs/s | p50 | p99 | records lost or duplicated | `db check` |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    let mut rows = vec![
        (
            "HTTP: one `sandboxer serve` on the embedded SQLite database",
            &http,
        ),
        (
            "CLI: `sandboxer create` + `sandboxer destroy` processes, SQLite",
            &cli,
        ),
    ];
    if let Some(r) = &replicated {
        rows.push((
            "HTTP: two `serve` replicas on one PostgreSQL 15 database (created on one, destroyed through the other)",
            r,
        ));
    }
    for (name, p) in rows {
        println!(
            "| {name} | {} | {:.2} s | {:.1} | {} | {} | {} | {} |",
            p.pairs.len(),
            p.wall.as_secs_f64(),
            p.throughput(),
            ms(p.pct(0.50)),
            ms(p.pct(0.99)),
            p.lost_or_duplicated,
            if p.check_ok { "clean" } else { "**broken**" },
        );
    }
    if let Some(r) = &replicated {
        println!(
            "\nTwo replicas on PostgreSQL against one on SQLite: {:.2} x the pairs/s. Every \
             replica and process is on this one 2-CPU machine, with the database server, so \
             the replicas share the CPUs they would each have on their own machine.",
            r.throughput() / http.throughput()
        );
    }
    if [&http, &cli]
        .iter()
        .chain(replicated.iter().collect::<Vec<_>>().iter())
        .any(|p| p.lost_or_duplicated > 0 || !p.check_ok)
    {
        bail!("records were lost or duplicated, or db check failed");
    }
    println!(
        "\nRemake: `cargo build --release -p sandboxer-cli && cargo run --release -p sandboxer-api --example http_bench`."
    );
    Ok(())
}
