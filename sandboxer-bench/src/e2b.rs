//! The `e2b` section: a canary create + kill through the official E2B
//! Python SDK (`Sandbox.create(template="canary")`, `kill()`) against
//! `sandboxer serve`'s E2B front door, beside the same through `/v1` with
//! curl (`POST /v1/sandboxes`, `DELETE /v1/sandboxes/{id}`), on the same
//! server, in the same run, alternating rounds. Target: the SDK's p50 at
//! most 1.2x curl's.
//!
//! The SDK pairs are timed inside Python (the interpreter's start is not
//! counted); the curl pairs from the spawn of the first curl to the exit of
//! the second (two process starts are counted: what a shell user pays).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::machine::{footer, Load, Machine};
use crate::run::BenchHome;
use crate::stats::Summary;
use crate::Outcome;

const TARGET_RATIO: f64 = 1.2;

#[derive(Debug, Clone)]
pub struct Options {
    pub sandboxer: PathBuf,
    /// Pairs per round of each client.
    pub pairs: usize,
    pub rounds: usize,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("e2b_pairs.py")
}

fn sdk_round(py: &Path, base: &str, token: &str, n: usize) -> Result<Vec<f64>> {
    let host = base.trim_start_matches("http://");
    let out = Command::new(py)
        .arg(script())
        .arg(n.to_string())
        .env("E2B_API_URL", base)
        .env("E2B_API_KEY", token)
        .env("E2B_DOMAIN", host)
        .output()
        .context("running the E2B SDK")?;
    if !out.status.success() {
        bail!(
            "the SDK round failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("the SDK round's output")
}

fn curl(args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body"])
        .args(args)
        .output()
        .context("running curl")?;
    if !out.status.success() {
        bail!(
            "curl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

fn curl_round(base: &str, token: &str, n: usize) -> Result<Vec<f64>> {
    let auth = format!("Authorization: Bearer {token}");
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let rec: serde_json::Value = serde_json::from_slice(&curl(&[
            "-X",
            "POST",
            "-H",
            &auth,
            "-d",
            r#"{"profile":"profile.sandbox-canary"}"#,
            &format!("{base}/v1/sandboxes"),
        ])?)?;
        let id = rec["id"].as_str().context("the create's id")?;
        curl(&[
            "-X",
            "DELETE",
            "-H",
            &auth,
            &format!("{base}/v1/sandboxes/{id}"),
        ])?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(ms)
}

pub fn run(opts: &Options) -> Result<Outcome> {
    let py = sandboxer_testkit::e2b_sdk::python("sandboxer-bench e2b");
    let machine = Machine::probe();
    let load_before = Load::now();
    let home = BenchHome::new("e2b")?;
    let p = home.sandboxer(&opts.sandboxer);
    let token = p.token("agt:bench")?;
    let served = p.serve()?;
    let base = served.base.clone();
    // Warm up both paths (the first canary hashes and deploys the agent).
    sdk_round(&py, &base, &token, 1)?;
    curl_round(&base, &token, 1)?;
    let (mut sdk, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..opts.rounds {
        sdk.extend(sdk_round(&py, &base, &token, opts.pairs)?);
        raw.extend(curl_round(&base, &token, opts.pairs)?);
    }
    let load_after = Load::now();
    let s = Summary::of_ms(&sdk).context("no SDK samples")?;
    let c = Summary::of_ms(&raw).context("no curl samples")?;
    let ratio = s.p50 / c.p50;
    let mut missed = Vec::new();
    if ratio > TARGET_RATIO {
        missed.push(format!(
            "E2B SDK create+kill p50 {:.1} ms is {ratio:.2}x curl's {:.1} ms (target {TARGET_RATIO}x)",
            s.p50, c.p50
        ));
    }
    let mut md = String::new();
    md.push_str("## E2B front door: SDK create+kill beside /v1 with curl\n\n");
    md.push_str(&format!(
        "`sandboxer-bench e2b`: a canary create and kill against one `sandboxer serve` (release \
         build, SQLite), {} rounds of {} pairs each, alternating: through the official E2B Python \
         SDK {} (`Sandbox.create(template=\"canary\")`, `kill()`, timed inside Python) and through \
         `/v1` with curl (`POST /v1/sandboxes`, `DELETE /v1/sandboxes/{{id}}`, two curl processes \
         timed from spawn to exit). Milliseconds.\n\n",
        opts.rounds,
        opts.pairs,
        sandboxer_testkit::e2b_sdk::VERSION
    ));
    md.push_str("| client | pairs | p50 | p95 |\n|---|---|---|---|\n");
    md.push_str(&format!(
        "| E2B SDK (front door) | {} | {:.1} | {:.1} |\n",
        sdk.len(),
        s.p50,
        s.p95
    ));
    md.push_str(&format!(
        "| curl (`/v1`) | {} | {:.1} | {:.1} |\n\n",
        raw.len(),
        c.p50,
        c.p95
    ));
    md.push_str(&format!(
        "Ratio (p50): **{ratio:.2}x** (target at most {TARGET_RATIO}x: {}).\n\n",
        if ratio <= TARGET_RATIO {
            "met"
        } else {
            "missed"
        }
    ));
    md.push_str(&footer(&machine, &load_before, &load_after));
    Ok(Outcome {
        markdown: md,
        missed,
        failures: Vec::new(),
        complete: true,
    })
}
