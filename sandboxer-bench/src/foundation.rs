//! The `foundation` section: canary create-to-ready and destroy on `local`
//! beside `docker run --rm` of the testbed's busybox image, and
//! `list --json` and a create's store commit at 1,000 to 10,000 records.
//!
//! Everything is a real release process timed from spawn to exit, except
//! the commit, which a probe process (`sandboxer-bench store-commit`) times
//! from inside: a new process and a new store, as every CLI command is.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::machine::{git_commit, Load, Machine};
use crate::records;
use crate::run::{answers, ms_field, Program, Timed};
use crate::stats::{linear_fit, ms, Summary};
use crate::Outcome;

/// The section's targets (from the issue that asked for it).
const CREATE_VS_DOCKER: f64 = 0.2;
const LIST_MAX_MS: f64 = 100.0;
const COMMIT_P50_MAX_MS: f64 = 50.0;
const TARGET_RECORDS: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct Options {
    /// Canary creates, destroys and docker runs, each.
    pub runs: usize,
    /// Samples of each store measure per size.
    pub store_samples: usize,
    pub sizes: Vec<u64>,
    /// The release `sandboxer`.
    pub sandboxer: PathBuf,
    /// This program, for the probe subcommands.
    pub bench: PathBuf,
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
    let _ = writeln!(md, "## foundation: canary, list and commit\n");
    let _ = writeln!(
        md,
        "Canary create-to-ready and destroy on `local` beside `docker run --rm` of a \
         local busybox image, and `sandboxer list --json` and a create's store commit \
         at {} records.\n",
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
    if let Some(s) = stores.iter().find(|s| s.records == TARGET_RECORDS) {
        let ok = s.list.p95 <= LIST_MAX_MS;
        if !ok {
            missed.push(format!(
                "list --json at {TARGET_RECORDS} records: p95 {}",
                ms(s.list.p95)
            ));
        }
        let _ = writeln!(
            md,
            "| `list --json` at 10,000 records at most 100 ms (every run up to p95) | p50 {}, p95 {} (CPU time p50 {}) | {} |",
            ms(s.list.p50),
            ms(s.list.p95),
            ms(s.list_cpu.p50),
            yes_no(ok)
        );
        let ok = s.commit.p50 <= COMMIT_P50_MAX_MS;
        if !ok {
            missed.push(format!(
                "commit at {TARGET_RECORDS} records: p50 {}",
                ms(s.commit.p50)
            ));
        }
        let _ = writeln!(
            md,
            "| a create's store commit at 10,000 records, p50 at most 50 ms | p50 {} (p95 {}; CPU time of the whole probe process p50 {}) | {} |",
            ms(s.commit.p50),
            ms(s.commit.p95),
            ms(s.commit_process_cpu.p50),
            yes_no(ok)
        );
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
    file_bytes: u64,
    list: Summary,
    jq: Option<Summary>,
    commit: Summary,
    commit_process: Summary,
    naive_commit: Summary,
    load: Summary,
    public: Summary,
    write: Summary,
    parse_all: Summary,
    checkpoint: Summary,
    /// The journal when the samples began (filled) and when they ended.
    journal_start: (u64, u64),
    journal_end: (u64, u64),
    journal_room: u64,
    create: Summary,
    destroy: Summary,
    list_cpu: Summary,
    commit_process_cpu: Summary,
    create_cpu: Summary,
}

fn store(opts: &Options, n: u64, home: &Path) -> Result<StoreRun> {
    let data = home.join("data");
    let config = home.join("config");
    std::fs::create_dir_all(&config)?;
    records::write_store(&data, n)?;
    let file = data.join("sandboxes.json");
    let file_bytes = std::fs::metadata(&file)?.len();
    let naive = home.join("naive/sandboxes.json");
    std::fs::create_dir_all(naive.parent().expect("a parent"))?;
    std::fs::copy(&file, &naive)?;

    let sbx = Program::sandboxer(&opts.sandboxer, &data, &config);
    let bench = Program::new(&opts.bench);
    let jq = answers("jq", &["--version"]).then(|| Program::new("jq"));
    let data_arg = data.display().to_string();
    let file_arg = file.display().to_string();
    let naive_arg = naive.display().to_string();

    // What list prints is the store, in full.
    let listed: Vec<serde_json::Value> =
        serde_json::from_slice(&sbx.run(["list", "--json"])?.stdout)?;
    if listed.len() as u64 != n {
        bail!("list --json printed {} records, not {n}", listed.len());
    }
    drop(listed);
    // The agent binary is deployed by the first create in a data dir.
    let (_, id) = create(&sbx)?;
    destroy(&sbx, &id)?;
    // Commits are measured with the journal nearly full (90% of the room
    // it may take before a checkpoint): the most a commit that does not
    // checkpoint has to replay.
    let journal_of = |v: &serde_json::Value| {
        (
            v["journal_bytes"].as_u64().unwrap_or(0),
            v["journal_lines"].as_u64().unwrap_or(0),
        )
    };
    let (_, filled) = bench.probe(["fill-journal", data_arg.as_str(), "0.9"])?;
    let journal_start = journal_of(&filled);
    let journal_room = filled["room"].as_f64().unwrap_or(0.0) as u64;

    let mut m: [Vec<f64>; 15] = Default::default();
    for _ in 0..opts.store_samples {
        let t = sbx.run_quiet(["list", "--json"])?;
        m[0].push(secs_ms(t.wall));
        m[12].push(secs_ms(t.cpu));
        if let Some(jq) = &jq {
            m[1].push(secs_ms(
                jq.run_quiet([".sandboxes", file_arg.as_str()])?.wall,
            ));
        }
        let (t, v) = bench.probe(["store-commit", data_arg.as_str()])?;
        m[2].push(ms_field(&v, "commit_ms")?);
        m[3].push(secs_ms(t.wall));
        m[13].push(secs_ms(t.cpu));
        let (_, v) = bench.probe(["naive-commit", naive_arg.as_str()])?;
        m[4].push(ms_field(&v, "commit_ms")?);
        let (_, v) = bench.probe(["store-load", data_arg.as_str()])?;
        for (i, f) in ["load_ms", "public_ms", "write_ms", "parse_all_ms"]
            .iter()
            .enumerate()
        {
            m[5 + i].push(ms_field(&v, f)?);
        }
        let (t, id) = create(&sbx)?;
        m[10].push(secs_ms(t.wall));
        m[14].push(secs_ms(t.cpu));
        m[11].push(secs_ms(destroy(&sbx, &id)?.wall));
    }
    let (_, end) = bench.probe(["fill-journal", data_arg.as_str(), "0"])?;
    let journal_end = journal_of(&end);
    // Checkpoints last (each empties the journal).
    for _ in 0..opts.store_samples.clamp(1, 10) {
        let (_, v) = bench.probe(["store-checkpoint", data_arg.as_str()])?;
        m[9].push(ms_field(&v, "commit_ms")?);
    }
    let s = |i: usize| Summary::of_ms(&m[i]).context("no samples");
    Ok(StoreRun {
        records: n,
        file_bytes,
        list: s(0)?,
        jq: Summary::of_ms(&m[1]),
        commit: s(2)?,
        commit_process: s(3)?,
        naive_commit: s(4)?,
        load: s(5)?,
        public: s(6)?,
        write: s(7)?,
        parse_all: s(8)?,
        checkpoint: s(9)?,
        journal_start,
        journal_end,
        journal_room,
        create: s(10)?,
        destroy: s(11)?,
        list_cpu: s(12)?,
        commit_process_cpu: s(13)?,
        create_cpu: s(14)?,
    })
}

fn secs_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn store_markdown(md: &mut String, stores: &[StoreRun], opts: &Options) {
    let _ = writeln!(md, "### Store: list and commit by record count\n");
    let _ = writeln!(
        md,
        "Stores of realistic records (ended canaries with reachability, telemetry, route \
         and backend state as the canary fills them, one in four with an idempotency key), \
         written through the store. {} samples per size, one of each measure per sample; \
         each commit and create adds a record, so a store ends up to {} records larger.\n",
        opts.store_samples,
        2 * opts.store_samples + 1
    );
    let _ = writeln!(
        md,
        "| records | file | `list --json` p50 / p95 / mean | baseline `jq .sandboxes FILE` p50 | ratio | commit p50 / p95 / mean (in process) | baseline: plain serde commit p50 | ratio |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for s in stores {
        let (jq, jq_ratio) = match &s.jq {
            Some(j) => (ms(j.p50), format!("{:.2}", s.list.p50 / j.p50)),
            None => ("jq not installed".into(), "-".into()),
        };
        let _ = writeln!(
            md,
            "| {} | {:.1} MB | {} / {} / {} | {jq} | {jq_ratio} | {} / {} / {} | {} | {:.2} |",
            thousands(s.records),
            s.file_bytes as f64 / 1e6,
            ms(s.list.p50),
            ms(s.list.p95),
            ms(s.list.mean),
            ms(s.commit.p50),
            ms(s.commit.p95),
            ms(s.commit.mean),
            ms(s.naive_commit.p50),
            s.commit.p50 / s.naive_commit.p50,
        );
    }
    md.push('\n');
    let _ = writeln!(
        md,
        "- commit: a new process opens a new `JsonFileStore` and does one `update` that \
         adds a record as `start_create` does (lock; read `sandboxes.json` and split it \
         at its record lines; replay the journal; count the live sandboxes per host from \
         the records' heads; push the record; append one journal line and fdatasync it), \
         timed inside the probe `sandboxer-bench store-commit`. Before the samples, the \
         journal was filled to 90% of the room it may take before a checkpoint, so each \
         commit replays nearly the most a commit ever replays. The plain serde commit \
         does the same change on a copy of the file with one `serde_json::from_slice` \
         and one `to_vec`, and the same temp file, fsyncs and rename, without the lock \
         (what every commit cost before the journal)."
    );
    let _ = writeln!(
        md,
        "- `list --json` writes to /dev/null, so not to a terminal: one record a line, \
         copied from the store's lines without `backend`. `jq .sandboxes FILE` prints \
         the same records, pretty, to /dev/null.\n"
    );

    let _ = writeln!(
        md,
        "The journal and checkpoints. A commit appends to the journal until it holds a \
         quarter of `sandboxes.json` (at least 256 KiB); the commit after that is a \
         checkpoint, which parses every record (on the idle CPUs), rewrites the file \
         and empties the journal. A checkpoint here is the same create commit on a store \
         told to write the whole file, {} samples after the others.\n",
        opts.store_samples.clamp(1, 10)
    );
    let _ = writeln!(
        md,
        "| records | journal room | journal at the start (filled) | at the end | bytes a commit's line (samples) | checkpoint p50 / p95 | one checkpoint spread over the commits that fill the room |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for s in stores {
        // The lines the samples added (the fill's lines hold 20 records
        // each); after a checkpoint during the samples, every line is theirs.
        let (start, end) = (s.journal_start, s.journal_end);
        let per_line = if end.1 > start.1 && end.0 > start.0 {
            (end.0 - start.0) as f64 / (end.1 - start.1) as f64
        } else if end.1 > 0 {
            end.0 as f64 / end.1 as f64
        } else {
            f64::NAN
        };
        let commits = s.journal_room as f64 / per_line;
        let _ = writeln!(
            md,
            "| {} | {:.0} KiB | {:.0} KiB, {} lines | {:.0} KiB, {} lines | {:.0} | {} / {} | {} a commit (one in about {:.0} commits) |",
            thousands(s.records),
            s.journal_room as f64 / 1024.0,
            s.journal_start.0 as f64 / 1024.0,
            s.journal_start.1,
            s.journal_end.0 as f64 / 1024.0,
            s.journal_end.1,
            per_line,
            ms(s.checkpoint.p50),
            ms(s.checkpoint.p95),
            ms(s.checkpoint.p50 / commits.max(1.0)),
            commits,
        );
    }
    md.push('\n');

    let _ = writeln!(
        md,
        "Where the time goes (p50). CPU time is user plus system time of the process, \
         all its threads: on a busy machine the wall time exceeds it by the waits for a \
         CPU, so it is the steadier figure to compare runs by. The last four columns are \
         timed inside a probe process: a fresh `load` (split into record lines, heads \
         read, journal replayed), then what piped `list --json` does with the records, \
         then, for comparison, parsing every record into a `Sandbox` (what a checkpoint \
         does and what every commit did before).\n"
    );
    let _ = writeln!(
        md,
        "| records | `list --json` CPU time | commit process, spawn to exit | its CPU time | fresh `load` | public JSON of every record | write | parse every record |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for s in stores {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            thousands(s.records),
            ms(s.list_cpu.p50),
            ms(s.commit_process.p50),
            ms(s.commit_process_cpu.p50),
            ms(s.load.p50),
            ms(s.public.p50),
            ms(s.write.p50),
            ms(s.parse_all.p50),
        );
    }
    md.push('\n');

    let _ = writeln!(
        md,
        "A whole canary create and destroy against the same stores (processes; a \
         create commits to the store several times):\n"
    );
    let _ = writeln!(
        md,
        "| records | `create --json` p50 / p95 | its CPU time p50 | `destroy ID --json` p50 / p95 |"
    );
    let _ = writeln!(md, "|---|---|---|---|");
    for s in stores {
        let _ = writeln!(
            md,
            "| {} | {} / {} | {} | {} / {} |",
            thousands(s.records),
            ms(s.create.p50),
            ms(s.create.p95),
            ms(s.create_cpu.p50),
            ms(s.destroy.p50),
            ms(s.destroy.p95),
        );
    }
    md.push('\n');

    let _ = writeln!(
        md,
        "Growth with the record count (least-squares line through the p50s: cost per \
         1,000 records, and the fixed part at 0 records):\n"
    );
    let _ = writeln!(
        md,
        "| measure | per 1,000 records | fixed | R² of the line |"
    );
    let _ = writeln!(md, "|---|---|---|---|");
    type Measure = fn(&StoreRun) -> f64;
    let growth: [(&str, Measure); 6] = [
        ("`list --json`", |s| s.list.p50),
        ("commit (in process)", |s| s.commit.p50),
        ("checkpoint (in process)", |s| s.checkpoint.p50),
        ("fresh `load` (in process)", |s| s.load.p50),
        ("canary `create --json`", |s| s.create.p50),
        ("`destroy ID --json`", |s| s.destroy.p50),
    ];
    for (what, f) in growth {
        let points: Vec<(f64, f64)> = stores
            .iter()
            .map(|s| (s.records as f64 / 1000.0, f(s)))
            .collect();
        if let Some(fit) = linear_fit(&points) {
            let _ = writeln!(
                md,
                "| {what} | {} | {} | {:.3} |",
                ms(fit.slope),
                ms(fit.intercept),
                fit.r2
            );
        }
    }
    md.push('\n');
    let _ = writeln!(
        md,
        "Every command still reads `sandboxes.json` whole, so every measure grows with \
         the record count; what grows now is splitting the file into lines and reading \
         each record's first fields (and, for `list --json`, copying each record out), \
         not parsing and rewriting every record. A create and a destroy grow faster than \
         a commit: each command also reconciles the credit ledger against the store and \
         commits several times."
    );
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
