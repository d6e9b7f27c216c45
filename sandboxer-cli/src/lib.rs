//! The `sandboxer` command line: parses arguments, builds the manager from
//! the data and config dirs, runs one command, prints the result for people
//! or (`--json`) for machines, and maps errors to documented exit codes.
//!
//! Only this crate prints or exits. The binary's `main` is a few lines; the
//! work is in [`run`], so tests can call it too.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use sandboxer_core::lifecycle::EndReason;
use sandboxer_core::manager::{CreateRequest, ListFilter, Manager};
use sandboxer_core::model::{Actor, ActorKind};
use sandboxer_core::routing::Constraints;
use sandboxer_core::store::db::Db;
use sandboxer_core::{Error, Result};
use sandboxer_credits::{DbLedger, EntryFilter};

pub mod args;
pub mod db_cmd;
pub mod events_cmd;
pub mod exit;
pub mod render;
pub mod serve;

use args::{Cli, Command};

/// Run the command line `argv` (including the program name) and return the
/// exit code.
pub fn run(argv: Vec<String>) -> i32 {
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    exit::code::OK
                }
                _ => exit::code::USAGE,
            };
            if code == exit::code::USAGE && wants_json(&argv) {
                return exit::report_usage(&e);
            }
            let _ = e.print();
            return if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                exit::code::USAGE
            } else {
                code
            };
        }
    };
    init_logging(cli.verbose);
    let color = color_enabled();
    let json = cli.json;
    // One runtime per process: `serve` answers many clients at once on
    // every core; every other command does one thing and needs one thread.
    let mut builder = if matches!(cli.command, Command::Serve(_)) {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.thread_name("sandboxer-serve");
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return exit::report(&Error::io("starting the runtime", e), json, color),
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => exit::report(&e, json, color),
    }
}

/// Whether the command line asks for `--json` (before any `--`), for
/// errors clap finds before it has parsed it.
fn wants_json(argv: &[String]) -> bool {
    argv.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SANDBOXER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color_enabled_stderr())
        .without_time()
        .try_init();
}

/// Colours on stdout: a terminal and no `NO_COLOR`.
pub fn color_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

fn color_enabled_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// Everything a command needs, built from the environment.
pub struct Env {
    pub data_dir: PathBuf,
    pub config_dir: PathBuf,
    /// `--database` / `SANDBOXER_DATABASE_URL`; the embedded one when `None`.
    pub database: Option<String>,
    db: std::sync::OnceLock<Arc<dyn Db>>,
}

impl Env {
    /// The folders the environment names, and the database `database`
    /// names (`--database`, else `SANDBOXER_DATABASE_URL`).
    pub fn new(database: Option<String>) -> Self {
        Env {
            data_dir: sandboxer_core::paths::data_dir(),
            config_dir: sandboxer_core::paths::config_dir(),
            database: database.filter(|u| !u.trim().is_empty()),
            db: std::sync::OnceLock::new(),
        }
    }

    pub fn from_process() -> Self {
        Env::new(std::env::var(sandboxer_stack::DATABASE_ENV).ok())
    }

    /// The stack of this environment (`lenient`: a broken user profile or
    /// hosts file is a warning, for commands that only read or end
    /// sandboxes).
    fn stack(&self, lenient: bool) -> sandboxer_stack::StackBuilder {
        let exe = std::env::current_exe().ok();
        sandboxer_stack::StackBuilder::new(&self.data_dir, &self.config_dir)
            .with_builtin_extensions(exe)
            .lenient(lenient)
            .with_events(std::env::var_os("SANDBOXER_STATE_HUB_URL").is_some_and(|v| !v.is_empty()))
            .with_database(self.database.clone())
    }

    /// The database, opened once per process (the first open imports the
    /// files of an older release; see `sandboxer_stack::import`).
    pub fn db(&self) -> Result<Arc<dyn Db>> {
        if let Some(db) = self.db.get() {
            return Ok(db.clone());
        }
        let db = self.stack(true).open_db()?;
        Ok(self.db.get_or_init(|| db).clone())
    }

    pub fn ledger(&self) -> Result<Arc<DbLedger>> {
        Ok(Arc::new(DbLedger::new(self.db()?)))
    }

    /// The manager for this environment (`strict_catalog`: fail on a broken
    /// user profile or hosts file instead of falling back to the built-ins
    /// and `local`: the commands that place sandboxes).
    pub fn manager(&self, strict_catalog: bool) -> Result<Manager> {
        Ok(self
            .stack(!strict_catalog)
            .with_database_handle(self.db()?)
            .build()?
            .manager)
    }
}

pub(crate) fn parse_actor(given: Option<&str>) -> Result<Actor> {
    match given {
        // Name the variable when the bad actor came from it: the user may
        // not know it is set.
        Some(a) => a.parse().map_err(|e: Error| {
            if std::env::var("SANDBOXER_ACTOR").ok().as_deref() == Some(a) {
                e.context("SANDBOXER_ACTOR")
            } else {
                e
            }
        }),
        None => {
            let user = sandboxer_core::paths::user_name();
            Actor::new(ActorKind::Adm, user.clone())
                .or_else(|_| Actor::new(ActorKind::Adm, "operator"))
        }
    }
}

fn parse_inputs(raw: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in raw {
        let Some((k, v)) = item.split_once('=') else {
            return Err(
                Error::invalid_input(format!("--input `{item}` is not NAME=VALUE"))
                    .with_hint("write it as `--input repo=/path/to/repo`"),
            );
        };
        if k.is_empty() {
            return Err(Error::invalid_input(format!(
                "--input `{item}` has an empty NAME"
            )));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(Error::invalid_input(format!(
                "--input `{k}` is given twice"
            )));
        }
    }
    Ok(out)
}

fn parse_ttl(raw: Option<&str>) -> Result<Option<Duration>> {
    raw.map(|t| {
        sandboxer_core::duration::parse_duration(t)
            .map_err(|e| Error::invalid_input(format!("--ttl: {e}")))
    })
    .transpose()
}

fn constraints(p: &args::PlacementArgs) -> Result<Constraints> {
    Ok(Constraints {
        host: p.host.clone().filter(|h| !h.is_empty()),
        max_price: p
            .max_price
            .as_deref()
            .map(|m| {
                sandboxer_core::credits::Micros::parse_amount(m)
                    .map_err(|e| e.context("--max-price"))
            })
            .transpose()?,
        only: p.only.clone(),
        ignore: p.ignore.clone(),
        no_fallback: p.no_fallback,
    })
}

/// A spinner on stderr while waiting; silent when stderr is not a terminal.
fn spinner() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.enable_steady_tick(Duration::from_millis(80));
    Some(pb)
}

fn with_spinner(m: Manager) -> (Manager, Option<indicatif::ProgressBar>) {
    match spinner() {
        Some(pb) => {
            let p = pb.clone();
            (
                m.with_progress(Arc::new(move |msg: &str| p.set_message(msg.to_string()))),
                Some(pb),
            )
        }
        None => (m, None),
    }
}

/// Run `step` on the manager with a spinner (on a terminal), cleared
/// before the result is shown.
async fn spinning<T>(m: Manager, step: impl AsyncFnOnce(&Manager) -> Result<T>) -> Result<T> {
    let (m, pb) = with_spinner(m);
    let r = step(&m).await;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    r
}

/// A sandbox record as `--json` prints it, or for people; exit 0.
fn show_record(sbx: &sandboxer_core::model::Sandbox, json: bool, color: bool) -> Result<i32> {
    if json {
        print_json(&render::Public(sbx));
    } else {
        out(&render::summary(sbx, color));
    }
    Ok(exit::code::OK)
}

/// A snapshot record as `--json` prints it, or for people; exit 0.
fn show_snapshot(snap: &sandboxer_core::snapshot::Snapshot, json: bool) -> Result<i32> {
    if json {
        print_json(&render::public_snapshot(snap));
    } else {
        out(&render::snapshot_summary(snap));
    }
    Ok(exit::code::OK)
}

pub(crate) fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(s.as_bytes());
    if !s.ends_with('\n') {
        let _ = o.write_all(b"\n");
    }
}

/// Any serializable value as indented JSON, in its own field order.
pub(crate) fn print_json(v: &impl serde::Serialize) {
    out(&serde_json::to_string_pretty(v).expect("json"));
}

/// Run the command, then (when a State Hub is configured) try once, within
/// a short budget, to deliver the lifecycle events it queued; whatever is
/// left stays in the outbox for the next command, `events flush` or the
/// server's relay. A down or hanging hub never fails a command.
async fn dispatch(cli: Cli) -> Result<i32> {
    let inline = !matches!(
        cli.command,
        Command::Events(_) | Command::Serve(_) | Command::Completions { .. } | Command::Man { .. }
    );
    let env = Env::new(cli.database.clone());
    let r = dispatch_inner(&env, cli).await;
    if inline && sandboxer_events::hub_url_from_env().is_some() {
        if let Ok(db) = env.db() {
            sandboxer_events::deliver_inline(db, sandboxer_events::INLINE_BUDGET).await;
        }
    }
    r
}

async fn dispatch_inner(env: &Env, cli: Cli) -> Result<i32> {
    let json = cli.json;
    let color = color_enabled();
    match cli.command {
        Command::Create(a) => {
            let profile = match (&a.profile, &a.from_snapshot) {
                (Some(p), _) => p.clone(),
                // The snapshot's.
                (None, Some(_)) => String::new(),
                (None, None) => sandboxer_api::DEFAULT_PROFILE.to_string(),
            };
            let req = CreateRequest {
                profile,
                from_snapshot: a.from_snapshot.clone(),
                inputs: parse_inputs(&a.inputs)?,
                ttl: parse_ttl(a.ttl.as_deref())?,
                constraints: constraints(&a.placement)?,
                actor: Some(parse_actor(a.actor.as_deref())?),
                idempotency_key: a.idempotency_key.clone(),
                recreated_from: None,
                metadata: Default::default(),
            };
            let (m, pb) = with_spinner(env.manager(true)?);
            let result = if a.no_wait {
                match m.start_create(&req)? {
                    sandboxer_core::manager::Started::New(s) => {
                        spawn_finisher(&s.id)?;
                        Ok(s)
                    }
                    sandboxer_core::manager::Started::Existing(s) => Ok(s),
                }
            } else {
                m.create(req, true).await
            };
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
            show_record(&result?, json, color)
        }
        Command::FinishCreate { id } => {
            let m = env.manager(false)?;
            m.finish_create(&id).await?;
            Ok(exit::code::OK)
        }
        Command::Get { id } => {
            let m = env.manager(false)?;
            show_record(&m.get(&id)?, json, color)
        }
        Command::List(a) => {
            let m = env.manager(false)?;
            let mut states = Vec::new();
            for s in &a.state {
                states.push(parse_state(s)?);
            }
            let filter = ListFilter {
                states,
                actor: a.actor.as_deref().map(str::parse).transpose()?,
                profile: a.profile.clone(),
                host: a.host.clone(),
                live_only: a.live,
            };
            if json && !std::io::stdout().is_terminal() {
                // One record a line, copied from the store's lines.
                let mut w = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
                m.write_list_json(&filter, &mut w)?;
                return Ok(exit::code::OK);
            }
            let list = m.list(&filter)?;
            if json {
                let mut w = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
                sandboxer_api::views::write_records(&mut w, &list)
                    .and_then(|_| w.write_all(b"\n"))
                    .and_then(|_| w.flush())
                    .map_err(|e| Error::io("writing the list", e))?;
            } else {
                out(&render::sandbox_table(&list, color));
            }
            Ok(exit::code::OK)
        }
        Command::Destroy { id } => {
            let sbx = spinning(env.manager(false)?, async |m| {
                m.destroy(&id, EndReason::Destroyed).await
            })
            .await?;
            show_record(&sbx, json, color)
        }
        Command::Recreate { id, no_wait } => {
            let sbx = spinning(env.manager(true)?, async |m| {
                m.recreate(&id, !no_wait).await
            })
            .await?;
            if no_wait && sbx.state() == sandboxer_core::lifecycle::State::Provisioning {
                spawn_finisher(&sbx.id)?;
            }
            show_record(&sbx, json, color)
        }
        Command::ExtendTtl { id, by } => {
            let by = sandboxer_core::duration::parse_duration(&by)
                .map_err(|e| Error::invalid_input(format!("extend-ttl: {e}")))?;
            let m = env.manager(true)?;
            show_record(&m.extend_ttl(&id, by).await?, json, color)
        }
        Command::Pause { id } => {
            let sbx = spinning(env.manager(true)?, async |m| m.pause(&id).await).await?;
            show_record(&sbx, json, color)
        }
        Command::Resume { id, ttl } => {
            let ttl = parse_ttl(ttl.as_deref())?;
            let sbx = spinning(env.manager(true)?, async |m| m.resume(&id, ttl).await).await?;
            show_record(&sbx, json, color)
        }
        Command::Snapshot { id, name, actor } => {
            let actor = parse_actor(actor.as_deref())?;
            let snap = spinning(env.manager(true)?, async |m| {
                m.snapshot(&id, name, &actor).await
            })
            .await?;
            show_snapshot(&snap, json)
        }
        Command::Snapshots(cmd) => {
            let m = env.manager(true)?;
            match cmd {
                args::SnapshotsCmd::List { actor, state } => {
                    let actor: Option<sandboxer_core::model::Actor> =
                        actor.as_deref().map(str::parse).transpose()?;
                    let states = state
                        .iter()
                        .map(|s| {
                            s.parse::<sandboxer_core::snapshot::SnapshotState>()
                                .map_err(|why| Error::invalid_input(format!("--state: {why}")))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let list = m.snapshots(actor.as_ref(), &states)?;
                    if json {
                        print_json(&serde_json::Value::Array(
                            list.iter().map(render::public_snapshot).collect(),
                        ));
                    } else {
                        out(&render::snapshot_table(&list));
                    }
                    Ok(exit::code::OK)
                }
                args::SnapshotsCmd::Get { id } => show_snapshot(&m.snapshot_record(&id)?, json),
                args::SnapshotsCmd::Delete { id } => {
                    show_snapshot(&m.delete_snapshot(&id).await?, json)
                }
            }
        }
        Command::Profiles(cmd) => {
            let m = env.manager(true)?;
            match cmd {
                args::ProfilesCmd::List => {
                    let list = m.catalog().list();
                    if json {
                        print_json(
                            &serde_json::to_value(render::profile_rows(&list, m.registry()))
                                .expect("json"),
                        );
                    } else {
                        out(&render::profile_table(&list, m.registry()));
                    }
                }
                args::ProfilesCmd::Show { id } => {
                    let p = m.catalog().require(&id)?;
                    if json {
                        print_json(&serde_json::to_value(p).expect("json"));
                    } else {
                        out(&render::profile_detail(p, m.registry()));
                    }
                }
            }
            Ok(exit::code::OK)
        }
        Command::Hosts(args::HostsCmd::Trust { name }) => {
            let m = env.manager(false)?;
            let spec = m.hosts().require(&name)?;
            if spec.is_local() {
                return Err(Error::invalid_input(format!(
                    "`{name}` is the built-in local host; it has no host key"
                )));
            }
            let known = sandboxer_transport::known_hosts_path(&spec, &env.config_dir);
            let fp = {
                let (spec, known) = (spec.clone(), known.clone());
                tokio::task::spawn_blocking(move || {
                    sandboxer_transport::trust_host_key(&spec, &known)
                })
                .await
                .map_err(|e| Error::internal(format!("trusting the host key: {e}")))??
            };
            if json {
                print_json(&serde_json::json!({
                    "host": name,
                    "address": spec.address,
                    "fingerprint": fp,
                    "known_hosts": known.display().to_string(),
                }));
            } else {
                out(&format!(
                    "trusted {name} ({}): {fp}\nwritten to {}",
                    spec.address,
                    known.display()
                ));
            }
            Ok(exit::code::OK)
        }
        Command::Hosts(args::HostsCmd::List) => {
            let m = env.manager(false)?;
            let rows = render::probe_hosts(&m).await;
            if json {
                print_json(&serde_json::to_value(&rows).expect("json"));
            } else {
                out(&render::host_table(&rows, m.hosts()));
            }
            Ok(exit::code::OK)
        }
        Command::Inspect(args::InspectCmd::Host { name }) => {
            let m = env.manager(false)?;
            let name = name.unwrap_or_else(|| m.hosts().default.clone());
            let spec = m.hosts().require(&name)?;
            let transport = m.connector().connect(&spec).await?;
            let inv = sandboxer_telemetry::gather(transport.as_ref()).await?;
            if json {
                print_json(&serde_json::to_value(&inv).expect("json"));
            } else {
                out(&render::inventory(&inv));
            }
            Ok(exit::code::OK)
        }
        Command::Credits(cmd) => credits(env, cmd, json).await,
        Command::Serve(a) => serve::run(env, a, json).await,
        Command::Tokens(cmd) => serve::tokens(env, cmd, json),
        Command::Events(cmd) => events_cmd::run(env, cmd, json).await,
        Command::Db(cmd) => db_cmd::run(env, cmd, json).await,
        Command::Completions { shell } => {
            let mut cmd = <args::Cli as clap::CommandFactory>::command();
            // Into memory first: the generator panics on a closed pipe.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "sandboxer", &mut script);
            write_stdout(&script)?;
            Ok(exit::code::OK)
        }
        Command::Man { dir } => man_pages(dir.as_deref()),
        Command::Inspect(args::InspectCmd::Stale(g)) => {
            let grace = parse_grace(&g.grace)?;
            let m = env.manager(false)?;
            let report = m.inspect_stale(grace).await?;
            if json {
                print_json(&serde_json::to_value(&report).expect("json"));
            } else {
                out(&render::stale(&report));
            }
            Ok(exit::code::OK)
        }
        Command::ReapStale { dry_run, grace } => {
            let grace = parse_grace(&grace.grace)?;
            let (m, pb) = with_spinner(env.manager(false)?);
            let r = m.reap_stale(grace, dry_run).await;
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
            let report = r?;
            if json {
                print_json(&serde_json::to_value(&report).expect("json"));
            } else {
                out(&render::reaped(&report));
            }
            Ok(if report.all_ok() {
                exit::code::OK
            } else {
                exit::code::PROVISION_FAILED
            })
        }
        Command::Route(args::RouteCmd::Explain(a)) => {
            let m = env.manager(true)?;
            let req = CreateRequest {
                profile: a.profile.clone(),
                inputs: BTreeMap::new(),
                ttl: parse_ttl(a.ttl.as_deref())?,
                constraints: constraints(&a.placement)?,
                actor: Some(parse_actor(a.actor.as_deref())?),
                idempotency_key: None,
                recreated_from: None,
                metadata: Default::default(),
                from_snapshot: None,
            };
            let d = m.explain(&req).await?;
            if json {
                print_json(&serde_json::to_value(&d).expect("json"));
            } else {
                out(&render::decision(&a.profile, &d));
            }
            Ok(exit::code::OK)
        }
    }
}

fn parse_grace(g: &str) -> Result<Duration> {
    sandboxer_core::duration::parse_duration(g)
        .map_err(|e| Error::invalid_input(format!("--grace: {e}")))
}

fn parse_state(s: &str) -> Result<sandboxer_core::lifecycle::State> {
    s.parse()
        .map_err(|why: String| Error::invalid_input(format!("--state {why}")))
}

/// `--no-wait`: finish the create in a detached `sandboxer __finish-create`
/// so this process can return now.
fn spawn_finisher(id: &str) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| Error::io("finding the sandboxer binary", e))?;
    std::process::Command::new(exe)
        .arg("__finish-create")
        .arg(id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io("starting the background provisioning", e))?;
    Ok(())
}

async fn credits(env: &Env, cmd: args::CreditsCmd, json: bool) -> Result<i32> {
    use sandboxer_core::credits::Micros;
    let m = env.manager(false)?;
    let ledger = env.ledger()?;
    match cmd {
        args::CreditsCmd::Balance { actor } => {
            let actor = parse_actor(
                actor
                    .as_deref()
                    .or(std::env::var("SANDBOXER_ACTOR").ok().as_deref()),
            )?;
            let acct = ledger.balance(&actor)?;
            if json {
                print_json(&sandboxer_api::views::Balance {
                    actor: &actor,
                    account: acct,
                });
            } else {
                out(&render::account(&actor, &acct));
            }
        }
        args::CreditsCmd::Grant {
            actor,
            amount,
            by,
            key,
        } => {
            let to: Actor = actor.parse()?;
            let by = parse_actor(by.as_deref())?;
            let amount = Micros::parse_amount(&amount).map_err(|e| e.context("credits grant"))?;
            if amount == Micros::ZERO {
                return Err(Error::invalid_input(
                    "credits grant: the amount must be above zero",
                ));
            }
            let applied = ledger.grant(&by, &to, amount, key.as_deref())?;
            let acct = ledger.balance(&to)?;
            if json {
                print_json(&sandboxer_api::views::GrantResult {
                    entry: applied.entry.clone(),
                    duplicate: applied.duplicate,
                    actor: &to,
                    account: acct,
                });
            } else {
                let again = if applied.duplicate {
                    " (already applied; nothing changed)"
                } else {
                    ""
                };
                out(&format!(
                    "granted {amount} to {to}{again}\n{}",
                    render::account(&to, &acct)
                ));
            }
        }
        args::CreditsCmd::Ledger { actor, sandbox } => {
            let filter = EntryFilter {
                actor: actor.as_deref().map(str::parse).transpose()?,
                sandbox_id: sandbox,
            };
            let entries = ledger.entries(&filter)?;
            if json {
                print_json(&serde_json::to_value(&entries).expect("json"));
            } else {
                out(&render::ledger(&entries));
            }
        }
        args::CreditsCmd::Usage { actor } => {
            let actor = parse_actor(
                actor
                    .as_deref()
                    .or(std::env::var("SANDBOXER_ACTOR").ok().as_deref()),
            )?;
            let rows = ledger.usage(&actor)?;
            if json {
                print_json(&sandboxer_api::views::Usage {
                    actor: &actor,
                    usage: rows,
                });
            } else {
                out(&render::usage(&actor, &rows));
            }
        }
        args::CreditsCmd::Check => {
            let report = ledger.check()?;
            let ok = report.is_ok();
            if json {
                print_json(&serde_json::to_value(&report).expect("json"));
            } else {
                out(&render::check(&report));
            }
            let _ = m;
            return Ok(if ok {
                exit::code::OK
            } else {
                exit::code::STORE
            });
        }
    }
    Ok(exit::code::OK)
}

/// `sandboxer man [DIR]`: every page into DIR, or sandboxer(1) to stdout.
fn man_pages(dir: Option<&Path>) -> Result<i32> {
    let cmd = <args::Cli as clap::CommandFactory>::command();
    match dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(|e| Error::io("rendering the man page", e))?;
            write_stdout(&out)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            clap_mangen::generate_to(cmd, dir)
                .map_err(|e| Error::io(format!("writing the man pages to {}", dir.display()), e))?;
        }
    }
    Ok(exit::code::OK)
}

/// Write `bytes` to stdout; a reader that went away (`| head`) is fine.
fn write_stdout(bytes: &[u8]) -> Result<()> {
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("writing to stdout", e))
        }
        _ => Ok(()),
    }
}
