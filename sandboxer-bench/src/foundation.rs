//! The `foundation` section: canary create-to-ready and destroy on `local`
//! beside `docker run --rm` of the testbed's busybox image, and the
//! database under a long history: a canary create, `get`, `list --state
//! ready` and a full `list --json` with 0 to 1,000,000 stored records.
//!
//! Everything is a real release process timed from spawn to exit.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::machine::{git_commit, Load, Machine};
use crate::records;
use crate::run::{answers, Program, Timed};
use crate::stats::{ms, Summary};
use crate::Outcome;

/// The section's targets (from the issue that asked for it).
const CREATE_VS_DOCKER: f64 = 0.2;
const CREATE_VS_EMPTY: f64 = 1.2;
const GET_MAX_MS: f64 = 5.0;
const READY_MAX_MS: f64 = 20.0;
const LIST_MAX_MS: f64 = 300.0;

#[derive(Debug, Clone)]
pub struct Options {
    /// Canary creates, destroys and docker runs, each.
    pub runs: usize,
    /// Samples of each store measure per size.
    pub store_samples: usize,
    pub sizes: Vec<u64>,
    /// The release `sandboxer`.
    pub sandboxer: PathBuf,
    pub image: String,
    /// Under CI a skipped baseline fails the run.
    pub ci: bool,
    /// Leave out the canary part (for trying the store part alone; the
    /// section is then not complete and is only printed).
    pub skip_canary: bool,
    pub skip_store: bool,
}

/// Run the section; its markdown and whether it met its targets.
pub fn run(opts: &Options) -> Result<Outcome> {
    let machine = Machine::probe();
    let started = chrono::Utc::now();
    let tmp = tempfile::Builder::new()
        .prefix("sandboxer-bench-")
        .tempdir()
        .context("making a temp dir")?;

    let load_before = Load::now();
    let canary = if opts.skip_canary {
        None
    } else {
        eprintln!("foundation: canary on local, {} rounds", opts.runs);
        Some(canary(opts, &tmp.path().join("canary"))?)
    };
    let load_mid = Load::now();
    let mut stores = Vec::new();
    if !opts.skip_store {
        for &n in &opts.sizes {
            eprintln!(
                "foundation: store at {n} records, {} samples",
                opts.store_samples
            );
            stores.push(store(opts, n, &tmp.path().join(format!("store-{n}")))?);
        }
    }
    let load_after = Load::now();
    let finished = chrono::Utc::now();

    let mut md = String::new();
    let mut missed = Vec::new();
    let mut failures = Vec::new();
    let _ = writeln!(
        md,
        "## foundation: canary, and the database by record count\n"
    );
    let _ = writeln!(
        md,
        "Canary create-to-ready and destroy on `local` beside `docker run --rm` of a \
         local busybox image, and a create, `get`, `list` with {} stored records.\n",
        join_sizes(&opts.sizes)
    );
    let _ = writeln!(
        md,
        "- run: {} to {} UTC, `scripts/bench foundation` (release build{}{})",
        started.format("%Y-%m-%d %H:%M:%S"),
        finished.format("%H:%M:%S"),
        git_commit()
            .map(|c| format!(", commit {c}"))
            .unwrap_or_default(),
        if opts.ci { ", under CI" } else { "" },
    );
    let _ = writeln!(
        md,
        "- machine: {} CPUs ({}), kernel {}",
        machine.cpus, machine.cpu_model, machine.kernel
    );
    let _ = writeln!(
        md,
        "- load average (1 / 5 / 15 min): {load_before} before, {load_mid} between the \
         canary and store parts, {load_after} after. Other work on the machine slows \
         every figure here, the baseline too."
    );
    let _ = writeln!(
        md,
        "- each figure: a real process from spawn to exit, except where it says \
         \"in process\"; p50 and p95 by nearest rank\n"
    );

    // Targets first: what a reader looks for.
    let _ = writeln!(md, "### Targets\n");
    let _ = writeln!(md, "| target | measured | met |");
    let _ = writeln!(md, "|---|---|---|");
    if let Some(c) = &canary {
        match &c.docker {
            Ok(d) => {
                let ratio = c.create.p50 / d.p50;
                let ok = ratio <= CREATE_VS_DOCKER;
                if !ok {
                    missed.push(format!(
                        "canary create p50 is {:.2} of docker run's, over {CREATE_VS_DOCKER}",
                        ratio
                    ));
                }
                let _ = writeln!(
                    md,
                    "| canary create-to-ready p50 at most 1/5 of `docker run --rm` p50 | {} vs {}: {:.3} (1/{:.0}) | {} |",
                    ms(c.create.p50),
                    ms(d.p50),
                    ratio,
                    1.0 / ratio,
                    yes_no(ok)
                );
            }
            Err(why) => {
                let _ = writeln!(
                    md,
                    "| canary create-to-ready p50 at most 1/5 of `docker run --rm` p50 | create {}; docker not measured: {why} | **not measured** |",
                    ms(c.create.p50)
                );
                if opts.ci {
                    failures.push(format!("the docker baseline was skipped under CI: {why}"));
                }
            }
        }
    }
    let empty = stores.iter().find(|s| s.records == 0).map(|s| s.create.p50);
    for s in &stores {
        if s.records == 0 {
            continue;
        }
        if let Some(e) = empty {
            let ratio = s.create.p50 / e;
            let ok = ratio <= CREATE_VS_EMPTY;
            if !ok {
                missed.push(format!(
                    "create p50 at {} records is {ratio:.2} x the empty store's",
                    s.records
                ));
            }
            let _ = writeln!(
                md,
                "| canary `create --json` p50 at {} records at most {CREATE_VS_EMPTY} x its p50 on an empty store | {} vs {}: {ratio:.2} x | {} |",
                thousands(s.records),
                ms(s.create.p50),
                ms(e),
                yes_no(ok)
            );
        }
        if s.records >= 1_000_000 {
            let ok = s.get.p50 <= GET_MAX_MS;
            if !ok {
                missed.push(format!(
                    "get at {} records: p50 {}",
                    s.records,
                    ms(s.get.p50)
                ));
            }
            let _ = writeln!(
                md,
                "| `get ID --json` at {} records at most {GET_MAX_MS} ms | p50 {} | {} |",
                thousands(s.records),
                ms(s.get.p50),
                yes_no(ok)
            );
            let ok = s.list_ready.p50 <= READY_MAX_MS;
            if !ok {
                missed.push(format!(
                    "list --state ready at {} records: p50 {}",
                    s.records,
                    ms(s.list_ready.p50)
                ));
            }
            let _ = writeln!(
                md,
                "| `list --json --state ready`, {LIVE} live among {}, at most {READY_MAX_MS} ms | p50 {} | {} |",
                thousands(s.records),
                ms(s.list_ready.p50),
                yes_no(ok)
            );
        }
        if s.records == FULL_LIST_MAX {
            if let Some(l) = &s.list {
                let ok = l.p50 <= LIST_MAX_MS;
                if !ok {
                    missed.push(format!(
                        "list --json at {} records: p50 {}",
                        s.records,
                        ms(l.p50)
                    ));
                }
                let _ = writeln!(
                    md,
                    "| full `list --json` of {} records at most {LIST_MAX_MS} ms | p50 {} | {} |",
                    thousands(s.records),
                    ms(l.p50),
                    yes_no(ok)
                );
            }
        }
    }
    md.push('\n');

    if let Some(c) = &canary {
        canary_markdown(&mut md, c, opts);
    }
    if !stores.is_empty() {
        store_markdown(&mut md, &stores, opts);
    }
    Ok(Outcome {
        markdown: md,
        missed,
        failures,
        complete: !opts.skip_canary && !opts.skip_store,
    })
}

fn yes_no(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "**no**"
    }
}

fn join_sizes(sizes: &[u64]) -> String {
    let v: Vec<String> = sizes.iter().map(|n| thousands(*n)).collect();
    match v.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn row(md: &mut String, what: &str, s: &Summary, cpu: Option<&Summary>) {
    let _ = writeln!(
        md,
        "| {what} | {} | {} | {} | {} | {} |",
        s.runs,
        ms(s.p50),
        ms(s.p95),
        ms(s.mean),
        cpu.map_or("(in the daemon)".to_string(), |c| ms(c.p50)),
    );
}

// ------------------------------------------------------------------ canary

struct Canary {
    first_create: Duration,
    first_destroy: Duration,
    create: Summary,
    destroy: Summary,
    create_cpu: Summary,
    destroy_cpu: Summary,
    /// The baseline, or why it was not measured.
    docker: std::result::Result<Summary, String>,
}

fn canary(opts: &Options, home: &Path) -> Result<Canary> {
    let data = home.join("data");
    let config = home.join("config");
    std::fs::create_dir_all(&config)?;
    let sbx = Program::sandboxer(&opts.sandboxer, &data, &config);

    // The first create in a data dir deploys the agent binary.
    let (first, id) = create(&sbx)?;
    let first_create = first.wall;
    let first_destroy = destroy(&sbx, &id)?.wall;

    let docker = docker_ready(&opts.image);
    let docker_run = ["run", "--rm", opts.image.as_str(), "/bin/true"];
    if docker.is_ok() {
        // One warm-up run: the first after a daemon start is slower.
        Program::new("docker").run_quiet(docker_run)?;
    }
    let (mut creates, mut destroys, mut dockers) = (Vec::new(), Vec::new(), Vec::new());
    let (mut create_cpu, mut destroy_cpu) = (Vec::new(), Vec::new());
    // Rounds of one of each, so a change in the machine's load touches
    // all three alike.
    for _ in 0..opts.runs {
        let (t, id) = create(&sbx)?;
        creates.push(t.wall);
        create_cpu.push(t.cpu);
        let t = destroy(&sbx, &id)?;
        destroys.push(t.wall);
        destroy_cpu.push(t.cpu);
        if docker.is_ok() {
            dockers.push(Program::new("docker").run_quiet(docker_run)?.wall);
        }
    }
    Ok(Canary {
        first_create,
        first_destroy,
        create: Summary::of(&creates).context("no runs")?,
        destroy: Summary::of(&destroys).context("no runs")?,
        create_cpu: Summary::of(&create_cpu).context("no runs")?,
        destroy_cpu: Summary::of(&destroy_cpu).context("no runs")?,
        docker: docker.map(|()| Summary::of(&dockers).expect("runs")),
    })
}

/// `Ok` when docker answers and has the image.
fn docker_ready(image: &str) -> std::result::Result<(), String> {
    if !answers("docker", &["info"]) {
        return Err("`docker info` does not answer (no docker, or no daemon: \
                    `scripts/testbed up` starts one)"
            .into());
    }
    if !answers("docker", &["image", "inspect", image]) {
        return Err(format!(
            "the image {image} is missing (`scripts/testbed up` builds it)"
        ));
    }
    Ok(())
}

/// `sandboxer create --json`: its time and the new sandbox's id, which must
/// be ready.
fn create(sbx: &Program) -> Result<(Timed, String)> {
    let t = sbx.run(["create", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&t.stdout).context("create --json output")?;
    if v["state"] != "ready" {
        bail!("create did not end ready: {v}");
    }
    let id = v["id"].as_str().context("no id")?.to_string();
    Ok((t, id))
}

fn destroy(sbx: &Program, id: &str) -> Result<Timed> {
    let t = sbx.run(["destroy", id, "--json"])?;
    let v: serde_json::Value =
        serde_json::from_slice(&t.stdout).context("destroy --json output")?;
    if v["state"] != "destroyed" {
        bail!("destroy did not end destroyed: {v}");
    }
    Ok(t)
}

fn canary_markdown(md: &mut String, c: &Canary, opts: &Options) {
    let _ = writeln!(md, "### Canary on local\n");
    let _ = writeln!(
        md,
        "{} rounds, each one `sandboxer create --json` (the canary on `local`, until \
         ready), one `sandboxer destroy ID --json` and one docker run, after one \
         warm-up create and destroy.\n",
        opts.runs
    );
    let _ = writeln!(md, "| what | runs | p50 | p95 | mean | CPU time p50 |");
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    row(
        md,
        "`sandboxer create --json` (canary, create-to-ready)",
        &c.create,
        Some(&c.create_cpu),
    );
    row(
        md,
        "`sandboxer destroy ID --json`",
        &c.destroy,
        Some(&c.destroy_cpu),
    );
    match &c.docker {
        Ok(d) => {
            row(
                md,
                &format!("baseline: `docker run --rm {} /bin/true`", opts.image),
                d,
                None,
            );
            let _ = writeln!(
                md,
                "| first create in a new data dir (deploys the agent binary) | 1 | {} | | | |",
                ms(c.first_create.as_secs_f64() * 1e3)
            );
            let _ = writeln!(
                md,
                "| its destroy | 1 | {} | | | |\n",
                ms(c.first_destroy.as_secs_f64() * 1e3)
            );
            let _ = writeln!(
                md,
                "Ratios to `docker run --rm`: create p50 {:.3}, destroy p50 {:.3}; create \
                 p95 {:.3}.\n",
                c.create.p50 / d.p50,
                c.destroy.p50 / d.p50,
                c.create.p95 / d.p95,
            );
        }
        Err(why) => {
            let _ = writeln!(
                md,
                "| first create in a new data dir (deploys the agent binary) | 1 | {} | | | |\n",
                ms(c.first_create.as_secs_f64() * 1e3)
            );
            let _ = writeln!(md, "**Baseline not measured**: {why}.\n");
        }
    }
}

// ------------------------------------------------------------------- store

struct StoreRun {
    records: u64,
    /// The database file, bytes.
    db_bytes: u64,
    create: Summary,
    get: Summary,
    list_ready: Summary,
    /// Only up to [`FULL_LIST_MAX`] records.
    list: Option<Summary>,
}

/// A full `list --json` is measured up to this many records (a million
/// records are about a gigabyte of JSON).
const FULL_LIST_MAX: u64 = 100_000;
/// Ready records among the history, for `list --state ready`.
const LIVE: u64 = 100;

fn store(opts: &Options, n: u64, home: &Path) -> Result<StoreRun> {
    let data = home.join("data");
    let config = home.join("config");
    std::fs::create_dir_all(&config)?;
    let started = std::time::Instant::now();
    records::write_store(&data, n, LIVE)?;
    eprintln!(
        "foundation: wrote {n} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The kernel writes the new database back for seconds after: let it
    // finish first, or the creates' syncs queue behind gigabytes of it.
    let synced = std::process::Command::new("sync").status()?;
    if !synced.success() {
        bail!("sync failed: {synced}");
    }
    let db_bytes = std::fs::metadata(data.join("sandboxer.db")).map_or(0, |m| m.len());
    let sbx = Program::sandboxer(&opts.sandboxer, &data, &config);
    // The first create in a data dir deploys the agent binary.
    let (_, id) = create(&sbx)?;
    destroy(&sbx, &id)?;
    let middle = records::record_id(n / 2);
    let probe_id = if n > 0 { middle } else { id };
    let (mut creates, mut gets, mut readies, mut lists) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..opts.store_samples {
        let (t, id) = create(&sbx)?;
        creates.push(t.wall);
        destroy(&sbx, &id)?;
        let t = sbx.run(["get", probe_id.as_str(), "--json"])?;
        gets.push(t.wall);
        let t = sbx.run(["list", "--json", "--state", "ready"])?;
        let v: serde_json::Value = serde_json::from_slice(&t.stdout)?;
        if n > 0 && v.as_array().map_or(0, Vec::len) as u64 != LIVE {
            bail!(
                "list --state ready found {} records, not {LIVE}",
                v.as_array().map_or(0, Vec::len)
            );
        }
        readies.push(t.wall);
        if n <= FULL_LIST_MAX {
            lists.push(sbx.run_quiet(["list", "--json"])?.wall);
        }
    }
    Ok(StoreRun {
        records: n,
        db_bytes,
        create: Summary::of(&creates).context("no samples")?,
        get: Summary::of(&gets).context("no samples")?,
        list_ready: Summary::of(&readies).context("no samples")?,
        list: Summary::of(&lists),
    })
}

fn store_markdown(md: &mut String, stores: &[StoreRun], opts: &Options) {
    let _ = writeln!(
        md,
        "### The database by record count
"
    );
    let _ = writeln!(
        md,
        "The embedded SQLite database (`<data dir>/sandboxer.db`) holding N ended canary \
         records of about 1.1 KB (as months of CI make them) and {LIVE} ready ones, \
         written by `sandboxer-bench` through the store's own inserts. Each figure is the \
         release `sandboxer` from spawn to exit, {} samples per size; the create is a \
         real canary create (destroyed after, untimed). The ratio compares a create's \
         p50 with its p50 on the empty database in the same run.\n",
        opts.store_samples
    );
    let _ = writeln!(
        md,
        "| records | database | `create --json` p50 / p95 | vs empty | `get ID --json` p50 / p95 | `list --json --state ready` p50 / p95 | `list --json` p50 / p95 |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    let empty = stores.iter().find(|s| s.records == 0).map(|s| s.create.p50);
    for s in stores {
        let _ = writeln!(
            md,
            "| {} | {:.0} MB | {} / {} | {} | {} / {} | {} / {} | {} |",
            thousands(s.records),
            s.db_bytes as f64 / 1e6,
            ms(s.create.p50),
            ms(s.create.p95),
            empty.map_or("-".into(), |e| format!("{:.2} x", s.create.p50 / e)),
            ms(s.get.p50),
            ms(s.get.p95),
            ms(s.list_ready.p50),
            ms(s.list_ready.p95),
            s.list.as_ref().map_or("not measured".into(), |l| format!(
                "{} / {}",
                ms(l.p50),
                ms(l.p95)
            )),
        );
    }
    md.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_people() {
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(join_sizes(&[1000, 3000, 10_000]), "1,000, 3,000 and 10,000");
        assert_eq!(join_sizes(&[10_000]), "10,000");
    }
}
