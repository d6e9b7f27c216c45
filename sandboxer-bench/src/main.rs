//! `sandboxer-bench`: see the crate docs. Run through `scripts/bench`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sandboxer_bench::{foundation, report, Outcome};

#[derive(Parser)]
#[command(
    name = "sandboxer-bench",
    about = "sandboxer's benchmarks; `scripts/bench` runs them and writes docs/benchmarks.md"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Canary create/destroy on local against `docker run --rm`; create,
    /// get and list with 0 to 1,000,000 stored records.
    Foundation {
        /// Write the section into this file (replacing only that section);
        /// without it the section is printed.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Canary creates, destroys and docker runs, each (at least 50 for
        /// the report).
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// Samples of each store measure per record count.
        #[arg(long, default_value_t = 20)]
        store_samples: usize,
        /// Record counts of the store part.
        #[arg(long, value_delimiter = ',', default_value = "0,100000,1000000")]
        sizes: Vec<u64>,
        /// The `sandboxer` binary (default: beside this one).
        #[arg(long)]
        sandboxer: Option<PathBuf>,
        /// The image of the docker baseline.
        #[arg(long, default_value = "sandboxer/busybox:latest")]
        image: String,
        /// Leave out the canary part (the section is then only printed).
        #[arg(long)]
        skip_canary: bool,
        /// Leave out the store part (the section is then only printed).
        #[arg(long)]
        skip_store: bool,
    },
    /// The dashboard's data request and `/metrics` of `sandboxer serve` on
    /// an empty store and on one of 100,000 records.
    Operator {
        /// Write the section into this file (replacing only that section);
        /// without it the section is printed.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Timed requests per measure.
        #[arg(long, default_value_t = 100)]
        runs: usize,
        /// Stored records of the large store.
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        /// Ready records in each store.
        #[arg(long, default_value_t = 20)]
        live: u64,
        /// The `sandboxer` binary (default: beside this one).
        #[arg(long)]
        sandboxer: Option<PathBuf>,
    },
    /// A canary create+kill through the official E2B Python SDK beside
    /// `/v1` with curl, on one `sandboxer serve`.
    E2b {
        /// Write the section into this file (replacing only that section);
        /// without it the section is printed.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Pairs per round of each client.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Alternating rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// The `sandboxer` binary (default: beside this one).
        #[arg(long)]
        sandboxer: Option<PathBuf>,
    },
    /// Write a store of N realistic records into DATA_DIR.
    #[command(hide = true)]
    MakeStore {
        data_dir: PathBuf,
        records: u64,
        /// Ready records among them.
        #[arg(long, default_value_t = 0)]
        live: u64,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sandboxer-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::MakeStore {
            data_dir,
            records,
            live,
        } => {
            sandboxer_bench::records::write_store(&data_dir, records, live)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::E2b {
            out,
            runs,
            rounds,
            sandboxer,
        } => {
            let sandboxer = sandboxer_beside(sandboxer)?;
            let outcome = sandboxer_bench::e2b::run(&sandboxer_bench::e2b::Options {
                sandboxer,
                pairs: runs,
                rounds,
            })?;
            finish("e2b", outcome, out)
        }
        Cmd::Operator {
            out,
            runs,
            records,
            live,
            sandboxer,
        } => {
            let sandboxer = sandboxer_beside(sandboxer)?;
            let outcome = sandboxer_bench::operator::run(&sandboxer_bench::operator::Options {
                sandboxer,
                records,
                live,
                samples: runs,
            })?;
            finish("operator", outcome, out)
        }
        Cmd::Foundation {
            out,
            runs,
            store_samples,
            sizes,
            sandboxer,
            image,
            skip_canary,
            skip_store,
        } => {
            let sandboxer = sandboxer_beside(sandboxer)?;
            let opts = foundation::Options {
                runs,
                store_samples,
                sizes,
                sandboxer,
                image,
                ci: std::env::var_os("CI").is_some_and(|v| !v.is_empty()),
                skip_canary,
                skip_store,
            };
            let outcome = foundation::run(&opts)?;
            finish("foundation", outcome, out)
        }
    }
}

/// `given`, else the `sandboxer` binary beside this one; it must exist.
fn sandboxer_beside(given: Option<PathBuf>) -> Result<PathBuf> {
    let sandboxer = match given {
        Some(p) => p,
        None => std::env::current_exe()
            .context("finding this program")?
            .with_file_name("sandboxer"),
    };
    if !sandboxer.is_file() {
        anyhow::bail!(
            "no sandboxer binary at {} (build it: cargo build --release -p sandboxer-cli)",
            sandboxer.display()
        );
    }
    Ok(sandboxer)
}

/// Write (or print) the section, and say whether it met its targets.
fn finish(name: &str, outcome: Outcome, out: Option<PathBuf>) -> Result<ExitCode> {
    match out {
        Some(path) if outcome.complete => {
            report::write_section(&path, name, &outcome.markdown)?;
            eprintln!("{name}: written to {}", path.display());
        }
        Some(_) => {
            println!("{}", outcome.markdown);
            eprintln!("{name}: partial run (parts skipped): printed, not written");
        }
        None => println!("{}", outcome.markdown),
    }
    for m in &outcome.missed {
        eprintln!("{name}: TARGET MISSED: {m}");
    }
    for f in &outcome.failures {
        eprintln!("{name}: FAILED: {f}");
    }
    if outcome.missed.is_empty() && outcome.failures.is_empty() {
        eprintln!("{name}: every target met");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}
