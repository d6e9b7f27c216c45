//! The command line, with clap derive.

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = concat!(
    "Examples:\n",
    "  sandboxer create                         # canary on the default host (local when none configured)\n",
    "  sandboxer create --profile profile.compose-e2e --input repo=/path/to/repo\n",
    "  sandboxer list\n",
    "  sandboxer destroy sbx-abc123\n",
    "\n",
    "Environment:\n",
    "  SANDBOXER_DATA_DIR     where sandboxer.db (the embedded database) lives\n",
    "                         (default ~/.local/share/sandboxer)\n",
    "  SANDBOXER_DATABASE_URL a shared PostgreSQL database (postgres://USER@HOST:PORT/DB)\n",
    "                         instead of the embedded one; the same as --database\n",
    "  SANDBOXER_CONFIG_DIR   hosts.toml, profiles/*.toml (default ~/.config/sandboxer)\n",
    "  SANDBOXER_HOST         force the placement host\n",
    "  SANDBOXER_ACTOR        who is asking (adm:NAME, agt:NAME, atm:NAME; default adm:$USER)\n",
    "  NO_COLOR               no colours\n",
    "\n",
);

/// sandboxer establishes sandboxes for agents and automations: it picks a
/// profile, an extension and a host, provisions, confirms the sandbox is
/// reachable, records every lifecycle step, and tears it down.
#[derive(Debug, Parser)]
#[command(name = "sandboxer", version, about, long_about = None,
          after_help = format!("{AFTER_HELP}{}", crate::exit::EXIT_CODES_HELP))]
pub struct Cli {
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Keep all state in this PostgreSQL database (postgres://USER@HOST:PORT/DB)
    /// instead of the embedded SQLite one in the data dir; several `serve`
    /// replicas can share it.
    #[arg(
        long,
        global = true,
        env = "SANDBOXER_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Establish a sandbox and wait until it is ready.
    #[command(after_help = "Examples:\n  \
        sandboxer create\n  \
        sandboxer create --ttl 2h --json\n  \
        sandboxer create --profile profile.compose-e2e --input repo=./my-repo --host sandboxer01\n  \
        sandboxer create --idempotency-key ci-run-4711 --no-wait")]
    Create(CreateArgs),

    /// Show one sandbox.
    #[command(after_help = "Example:\n  sandboxer get sbx-abc123 --json")]
    Get {
        /// The sandbox id (sbx-...).
        id: String,
    },

    /// List sandboxes (oldest first).
    ///
    /// With --json: a JSON array of records. On a terminal it is indented;
    /// piped or redirected, each record is one line of compact JSON (the
    /// same array, faster to write and easy to grep), as a large store is
    /// listed in a fraction of the time.
    #[command(
        after_help = "Examples:\n  sandboxer list\n  sandboxer list --live --json\n  sandboxer list --state ready --actor agt:harness\n  sandboxer list --json | jq '.[] | select(.state == \"ready\") | .id'"
    )]
    List(ListArgs),

    /// Tear a sandbox down; it ends `destroyed`.
    #[command(after_help = "Example:\n  sandboxer destroy sbx-abc123")]
    Destroy {
        /// The sandbox id.
        id: String,
    },

    /// Replace a sandbox with a new one of the same profile, inputs, host and
    /// actor; the old one ends `destroyed` with reason `recreated`.
    #[command(after_help = "Example:\n  sandboxer recreate sbx-abc123")]
    Recreate {
        /// The sandbox id.
        id: String,
        /// Return once provisioning of the new sandbox has started.
        #[arg(long)]
        no_wait: bool,
    },

    /// Move a sandbox's expiry later, within its profile's maximum TTL.
    #[command(
        name = "extend-ttl",
        after_help = "Example:\n  sandboxer extend-ttl sbx-abc123 30m"
    )]
    ExtendTtl {
        /// The sandbox id.
        id: String,
        /// How much longer: `90s`, `30m`, `2h`, `1h30m`, `1d`.
        by: String,
    },

    /// Pause a ready sandbox: nothing of it runs, its TTL stops and its
    /// profile's paused retention (default 7d) runs instead; a metered one
    /// pays for its run so far and holds only the paused price.
    #[command(after_help = "Example:\n  sandboxer pause sbx-abc123")]
    Pause {
        /// The sandbox id.
        id: String,
    },

    /// Resume a paused sandbox with the running time it had left, or a new
    /// TTL (its whole running time within the profile's maximum). A
    /// metered one holds the run first (exit 6 when the credits do not
    /// cover it; it stays paused).
    #[command(
        after_help = "Examples:\n  sandboxer resume sbx-abc123\n  sandboxer resume sbx-abc123 --ttl 1h"
    )]
    Resume {
        /// The sandbox id.
        id: String,
        /// Run this long from now instead of the time it had left.
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
    },

    /// Save a ready or paused sandbox as a snapshot (snap-...), to create
    /// new sandboxes from with `create --from-snapshot`.
    #[command(
        after_help = "Examples:\n  sandboxer snapshot sbx-abc123 --name warmed-up\n  sandboxer create --from-snapshot snap-xyz789"
    )]
    Snapshot {
        /// The sandbox id.
        id: String,
        /// A name for people.
        #[arg(long)]
        name: Option<String>,
        /// Who is asking (default adm:$USER).
        #[arg(long, env = "SANDBOXER_ACTOR", value_name = "ACTOR")]
        actor: Option<String>,
    },

    /// Snapshots: list, show, delete.
    #[command(subcommand)]
    Snapshots(SnapshotsCmd),

    /// The profile catalog: built-in and user profiles.
    #[command(subcommand)]
    Profiles(ProfilesCmd),

    /// Placement hosts (`local` and hosts.toml).
    #[command(subcommand)]
    Hosts(HostsCmd),

    /// Look at hosts.
    #[command(subcommand)]
    Inspect(InspectCmd),

    /// Routing decisions.
    #[command(subcommand)]
    Route(RouteCmd),

    /// Prepaid credits: balances, grants, the ledger, usage, the check.
    #[command(subcommand)]
    Credits(CreditsCmd),

    /// Serve the same API over HTTP (`/v1`, bearer tokens per actor); the
    /// server also runs the reaper and the State Hub event relay.
    #[command(
        after_help = "Examples:\n  sandboxer serve\n  sandboxer serve --bind 127.0.0.1:8787 --reap-interval 1m"
    )]
    Serve(ServeArgs),

    /// HTTP API tokens (stored hashed in tokens.toml in the config dir).
    #[command(subcommand)]
    Tokens(TokensCmd),

    /// State Hub lifecycle events: the outbox and its delivery.
    #[command(subcommand)]
    Events(EventsCmd),

    /// The database that holds all state: check its invariants, copy it to a shared one.
    #[command(
        subcommand,
        after_help = "Examples:\n  \
        sandboxer db check\n  \
        sandboxer db info --json\n  \
        sandboxer db copy --to postgres://sandboxer@db.internal:5432/sandboxer"
    )]
    Db(DbCmd),

    /// Print the shell completion script for bash, zsh, fish, elvish or
    /// powershell (generated from this build's commands and options).
    #[command(after_help = "Examples:\n  \
        sandboxer completions bash > /etc/bash_completion.d/sandboxer\n  \
        source <(sandboxer completions bash)\n  \
        sandboxer completions zsh > \"${fpath[1]}/_sandboxer\"\n  \
        sandboxer completions fish > ~/.config/fish/completions/sandboxer.fish")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Write the man pages (sandboxer(1) and one per command, e.g.
    /// sandboxer-create(1)) into a folder, or print sandboxer(1) to stdout.
    #[command(after_help = "Examples:\n  \
        sandboxer man /usr/local/share/man/man1\n  \
        sandboxer man | man -l -")]
    Man {
        /// The folder to write `sandboxer.1`, `sandboxer-create.1`, ... into.
        dir: Option<std::path::PathBuf>,
    },

    /// End every stale sandbox: expired ones are destroyed (reason
    /// `expired`), stuck ones and ghosts closed (reason `reaped`), orphans
    /// torn down. Idempotent; safe to run from cron while others run it too.
    #[command(
        name = "reap-stale",
        after_help = "Examples:\n  sandboxer reap-stale --dry-run\n  sandboxer reap-stale\n\n\
        Run it periodically for TTL enforcement, e.g. from cron:\n  \
        */5 * * * * sandboxer reap-stale --json >> ~/.local/state/sandboxer-reaper.log 2>&1"
    )]
    ReapStale {
        /// Say what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        grace: GraceArgs,
    },

    /// Finish a create started with --no-wait (run detached by sandboxer
    /// itself).
    #[command(name = "__finish-create", hide = true)]
    FinishCreate { id: String },
}

#[derive(Debug, Args)]
pub struct PlacementArgs {
    /// Place on this host and nowhere else (overrides the profile's
    /// placement).
    #[arg(long, env = "SANDBOXER_HOST", value_name = "NAME")]
    pub host: Option<String>,

    /// Refuse routes dearer than this many credits per hour.
    #[arg(long, value_name = "CREDITS")]
    pub max_price: Option<String>,

    /// Only use this extension (repeatable).
    #[arg(long, value_name = "EXT")]
    pub only: Vec<String>,

    /// Never use this extension (repeatable).
    #[arg(long, value_name = "EXT")]
    pub ignore: Vec<String>,

    /// Try only the first candidate; no fallback when it fails.
    #[arg(long)]
    pub no_fallback: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The profile (recipe) to establish [default: profile.sandbox-canary;
    /// with --from-snapshot, the snapshot's].
    #[arg(long, short = 'p', value_name = "ID")]
    pub profile: Option<String>,

    /// Restore this snapshot (snap-...) instead of starting fresh: the new
    /// sandbox has the snapshot's profile and is placed where the snapshot
    /// lives.
    #[arg(long, value_name = "SNAP")]
    pub from_snapshot: Option<String>,

    /// An input of the profile, NAME=VALUE (repeatable).
    #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
    pub inputs: Vec<String>,

    /// How long the sandbox lives (default: the profile's), e.g. `30m`, `2h`.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,

    /// Who is asking: adm:NAME, agt:NAME or atm:NAME (default adm:$USER).
    #[arg(long, env = "SANDBOXER_ACTOR", value_name = "ACTOR")]
    pub actor: Option<String>,

    /// Repeating a create with the same key and request returns the same
    /// sandbox instead of making another.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,

    /// Return as soon as provisioning has started (state `provisioning`).
    #[arg(long)]
    pub no_wait: bool,

    #[command(flatten)]
    pub placement: PlacementArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only sandboxes in this state (repeatable): provisioning, ready,
    /// pausing, paused, resuming, destroying, destroyed, failed.
    #[arg(long, value_name = "STATE")]
    pub state: Vec<String>,
    /// Only live sandboxes (not destroyed or failed).
    #[arg(long)]
    pub live: bool,
    /// Only this actor's sandboxes.
    #[arg(long, value_name = "ACTOR")]
    pub actor: Option<String>,
    /// Only this profile.
    #[arg(long, value_name = "ID")]
    pub profile: Option<String>,
    /// Only this host.
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotsCmd {
    /// Snapshots, oldest first.
    #[command(
        after_help = "Examples:\n  sandboxer snapshots list\n  sandboxer snapshots list --state ready --json"
    )]
    List {
        /// Only this actor's.
        #[arg(long, value_name = "ACTOR")]
        actor: Option<String>,
        /// Only in this state (repeatable): creating, ready, failed, deleted.
        #[arg(long, value_name = "STATE")]
        state: Vec<String>,
    },
    /// One snapshot.
    #[command(after_help = "Example:\n  sandboxer snapshots get snap-xyz789 --json")]
    Get {
        /// The snapshot id (snap-...).
        id: String,
    },
    /// Remove a snapshot from where it lives; its record ends `deleted`.
    #[command(after_help = "Example:\n  sandboxer snapshots delete snap-xyz789")]
    Delete {
        /// The snapshot id (snap-...).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProfilesCmd {
    /// Every profile: id, version, extensions, where it came from.
    List,
    /// One profile in full.
    #[command(after_help = "Example:\n  sandboxer profiles show profile.compose-e2e")]
    Show {
        /// The profile id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum HostsCmd {
    /// Every host with its settings and whether it answers now.
    List,
    /// Accept an SSH host's current host key: connect, read the key the host
    /// presents and write it to the known-hosts file (replacing an old key).
    /// Check the printed fingerprint against the host before trusting it.
    #[command(after_help = "Example:\n  sandboxer hosts trust sandboxer01")]
    Trust {
        /// The host (from hosts.toml).
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct GraceArgs {
    /// Leave alone anything younger than this (created, ready or ended within
    /// the window), except a ready sandbox past its TTL: its deadline is
    /// explicit and it is ended at once.
    #[arg(long, default_value = "2m", value_name = "DURATION")]
    pub grace: String,
}

#[derive(Debug, Subcommand)]
pub enum InspectCmd {
    /// Host telemetry: CPUs, load, memory, disk, kernel, docker, venues.
    #[command(
        after_help = "Examples:\n  sandboxer inspect host\n  sandboxer inspect host sandboxer01 --json"
    )]
    Host {
        /// The host (default: the default host).
        name: Option<String>,
    },
    /// Stale sandboxes: expired (past TTL), stuck (provisioning or destroying
    /// too long), orphans (resources on a host with no live record) and
    /// ghosts (ready records whose resources are gone). Changes nothing.
    #[command(
        after_help = "Examples:\n  sandboxer inspect stale\n  sandboxer inspect stale --grace 0s --json"
    )]
    Stale(GraceArgs),
}

#[derive(Debug, Subcommand)]
pub enum RouteCmd {
    /// Every candidate for a profile, chosen or rejected, and why.
    #[command(
        after_help = "Example:\n  sandboxer route explain --profile profile.burst --actor agt:harness"
    )]
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[arg(
        long,
        short = 'p',
        default_value = "profile.sandbox-canary",
        value_name = "ID"
    )]
    pub profile: String,
    /// The TTL the request would ask for.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// Who would ask.
    #[arg(long, env = "SANDBOXER_ACTOR", value_name = "ACTOR")]
    pub actor: Option<String>,
    #[command(flatten)]
    pub placement: PlacementArgs,
}

#[derive(Debug, Subcommand)]
pub enum CreditsCmd {
    /// An actor's account: available, held, spent, granted.
    #[command(after_help = "Example:\n  sandboxer credits balance --actor agt:harness")]
    Balance {
        /// Whose account (default: you, from SANDBOXER_ACTOR or adm:$USER).
        #[arg(long, value_name = "ACTOR")]
        actor: Option<String>,
    },
    /// Grant credits to an actor (only `adm` actors may grant).
    #[command(
        after_help = "Examples:\n  sandboxer credits grant --actor agt:harness 25\n  \
        sandboxer credits grant --actor agt:harness 0.5 --key invoice-1234"
    )]
    Grant {
        /// Who receives the credits.
        #[arg(long, value_name = "ACTOR")]
        actor: String,
        /// How many credits: a decimal with at most 6 places, e.g. `25` or `0.5`.
        amount: String,
        /// Who grants (default: SANDBOXER_ACTOR or adm:$USER); must be adm.
        #[arg(long, env = "SANDBOXER_ACTOR", value_name = "ACTOR")]
        by: Option<String>,
        /// Makes the grant idempotent: the same key is applied once.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
    /// The ledger's entries, oldest first.
    #[command(after_help = "Example:\n  sandboxer credits ledger --actor agt:harness --json")]
    Ledger {
        /// Only this actor's entries.
        #[arg(long, value_name = "ACTOR")]
        actor: Option<String>,
        /// Only this sandbox's entries.
        #[arg(long, value_name = "ID")]
        sandbox: Option<String>,
    },
    /// Per metered sandbox: route, seconds, price, cost.
    #[command(after_help = "Example:\n  sandboxer credits usage --actor agt:harness")]
    Usage {
        /// Whose usage (default: you).
        #[arg(long, value_name = "ACTOR")]
        actor: Option<String>,
    },
    /// Check the ledger's invariants (no balance below zero; granted =
    /// available + held + spent; a hold resolved once; a settle never above
    /// its hold). Exit 8 when any is broken.
    Check,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. A non-loopback address is refused while no
    /// token exists.
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    pub bind: String,
    /// How often the built-in reaper runs (TTL enforcement); `0s` turns it off.
    #[arg(long, default_value = "1m", value_name = "DURATION")]
    pub reap_interval: String,
    /// The reaper leaves alone anything younger than this (as `reap-stale
    /// --grace`); a ready sandbox past its TTL is ended at the next run
    /// whatever its age, so `--reap-interval` is the only lateness of TTLs.
    #[arg(long, default_value = "2m", value_name = "DURATION")]
    pub reap_grace: String,
    /// How often the server connects to every host of hosts.toml for
    /// `/metrics` (`sandboxer_host_up`, live and capacity per host); `0s`
    /// turns it off.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub probe_interval: String,
    /// A folder under which a `repo` input over HTTP may name a server-side
    /// path (repeatable). None by default: remote callers upload their repo
    /// (`POST /v1/uploads`). Symlinks are resolved before the check, and a
    /// path outside every root gets the same answer whatever exists there.
    #[arg(long = "repo-root", value_name = "DIR")]
    pub repo_roots: Vec<std::path::PathBuf>,
    /// The largest repo upload (`POST /v1/uploads`) the server takes;
    /// larger ones are refused with 413. An archive unpacks to at most four
    /// times this. Bytes, or with a unit: `100MiB`, `1GB`.
    #[arg(long, default_value = "100MiB", value_name = "SIZE")]
    pub max_upload: String,
    /// How long an upload that no create used is kept before the reaper
    /// removes it (an upload a sandbox used goes when its sandboxes end).
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub upload_retention: String,
    /// A request's head must arrive within this, counted from when the
    /// connection waits for it (at connect, and after each response on a
    /// keep-alive connection: so it is also the keep-alive idle timeout).
    /// Past it the connection is closed.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub head_timeout: String,
    /// A request's body must arrive within this after its head; past it the
    /// answer is 408 and the connection is closed.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub body_timeout: String,
    /// Connections open at once; past this a new connection is closed at
    /// once and the open ones are served as before.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,
}

#[derive(Debug, Subcommand)]
pub enum TokensCmd {
    /// Make a token for an actor; it is printed once, only its hash is kept.
    #[command(after_help = "Example:\n  sandboxer tokens add --actor agt:harness")]
    Add {
        /// The actor the token acts as.
        #[arg(long, value_name = "ACTOR")]
        actor: String,
        /// A name to find the token by later (default: generated).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Every token: name, actor, created (never the secret).
    List,
    /// Remove a token by name.
    Revoke {
        /// The token's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCmd {
    /// The outbox: how many events wait, the oldest, the hub URL, whether
    /// the hub is backing off, the last error, and each event's attempts.
    #[command(
        after_help = "Examples:\n  sandboxer events status\n  sandboxer events status --json"
    )]
    Status,
    /// Deliver every queued event to the State Hub now, ignoring the
    /// backoff; exit 12 when events remain after --timeout.
    #[command(
        after_help = "Example:\n  SANDBOXER_STATE_HUB_URL=http://127.0.0.1:9000 sandboxer events flush --timeout 1m"
    )]
    Flush {
        /// Give up after this long.
        #[arg(long, default_value = "30s", value_name = "DURATION")]
        timeout: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCmd {
    /// Check every invariant of the stored state: the credits ledger (balances
    /// recomputed from the entries, each hold resolved once) and the records
    /// against it (no ended sandbox with an open hold). Exit 8 when any is broken.
    Check,
    /// Where the database is, its schema version and how many rows it holds.
    Info,
    /// Copy this database into another one (a shared PostgreSQL), which must
    /// hold no records yet: every record, key, event, upload, token and ledger
    /// entry, in one transaction.
    Copy {
        /// The database to copy into (postgres://USER@HOST:PORT/DB, or the path
        /// of a new SQLite file).
        #[arg(long, value_name = "URL")]
        to: String,
    },
}
