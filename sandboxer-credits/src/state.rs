//! The ledger's pure core: entries, accounts and the rules
//! ([`LedgerState::apply`]); the invariant check is [`crate::check`]. No I/O;
//! [`crate::DbLedger`] makes it durable.
//!
//! Money is [`Micros`] (integer micro-credits) everywhere. The amounts of
//! `hold`, `extend` and `settle` entries are derived by `apply` from the
//! price and the times, so a caller cannot get them wrong:
//!
//! - hold: `price_per_hour x (expires_at - created_at)`,
//! - extend: `price_per_hour x (new expiry - the expiry covered so far)`,
//! - settle: `price_per_hour x seconds`, capped at what the hold holds.
//!
//! Each of those rounds up to the micro-credit.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::{DateTime, Utc};
use sandboxer_core::credits::Micros;
use sandboxer_core::lifecycle::State;
use sandboxer_core::model::{is_sandbox_id, Actor, Sandbox};
use sandboxer_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "LedgerEntry")]
pub struct Entry {
    /// Derived from what the entry pays for (`hold_id` and its siblings),
    /// so a retried operation maps to the same id and is applied once.
    pub id: String,
    /// When it was written.
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: EntryKind,
}

/// What an entry does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntryKind {
    /// An operator (`adm:`) adds credits to an actor's account.
    Grant {
        actor: Actor,
        amount: Micros,
        by: Actor,
    },
    /// At create on a metered route: the price for the whole TTL moves from
    /// available to held.
    Hold {
        sandbox_id: String,
        actor: Actor,
        amount: Micros,
        price_per_hour: Micros,
        extension: String,
        host: String,
        profile: String,
        /// When the sandbox was recorded; metering counts from here.
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        /// Which route of the create it pays for: 1 for the first priced
        /// route, one more for each fallback priced after a voided hold.
        #[serde(default = "first_attempt", skip_serializing_if = "is_first_attempt")]
        attempt: u32,
    },
    /// extend-ttl: the extra time moves from available to held.
    Extend {
        sandbox_id: String,
        amount: Micros,
        expires_at: DateTime<Utc>,
    },
    /// At destroy, expiry or reaping: the cost of `seconds` is spent (never
    /// more than held) and the rest of the hold released.
    Settle {
        sandbox_id: String,
        seconds: u64,
        amount: Micros,
    },
    /// At pause: the running part is paid (`seconds` at the running
    /// price, never more than held), the rest of the hold released, and the
    /// paused price held from `paused_at` to `paused_until` (the end of the
    /// paused retention). `segment` counts the sandbox's pauses from 1.
    Pause {
        sandbox_id: String,
        segment: u32,
        seconds: u64,
        /// Spent for the run (derived).
        amount: Micros,
        paused_price_per_hour: Micros,
        paused_at: DateTime<Utc>,
        paused_until: DateTime<Utc>,
        /// Newly held for the pause (derived).
        held: Micros,
    },
    /// At resume: the paused part is paid (`paused_seconds` at the paused
    /// price), and the running price held from `resumed_at` to
    /// `expires_at`; refused as a whole when the balance cannot cover it.
    Resume {
        sandbox_id: String,
        segment: u32,
        paused_seconds: u64,
        /// Spent for the pause (derived).
        amount: Micros,
        resumed_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        /// Newly held for the run (derived).
        held: Micros,
    },
    /// A snapshot was deleted after being kept `seconds`: its storage is
    /// paid from what is available (storage is not held ahead, so it never
    /// takes more than the actor has).
    Storage {
        snapshot_id: String,
        actor: Actor,
        seconds: u64,
        price_per_hour: Micros,
        /// Paid (derived).
        amount: Micros,
    },
    /// Failed provisioning: the whole hold is released.
    Void {
        sandbox_id: String,
        /// The attempt of the hold it releases.
        #[serde(default = "first_attempt", skip_serializing_if = "is_first_attempt")]
        attempt: u32,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn first_attempt() -> u32 {
    1
}

fn is_first_attempt(n: &u32) -> bool {
    *n == 1
}

/// `<prefix>:<sandbox id>` for the first attempt, `<prefix>:<sandbox
/// id>:<attempt>` for a fallback route's.
fn attempt_id(prefix: &str, sandbox_id: &str, attempt: u32) -> String {
    if attempt <= 1 {
        format!("{prefix}:{sandbox_id}")
    } else {
        format!("{prefix}:{sandbox_id}:{attempt}")
    }
}

/// `grant:<key>`.
pub fn grant_id(key: &str) -> String {
    format!("grant:{key}")
}
/// `hold:<sandbox id>` (the first route's hold), `hold:<sandbox
/// id>:<attempt>` for a fallback route's after the first was voided.
pub fn hold_id(sandbox_id: &str, attempt: u32) -> String {
    attempt_id("hold", sandbox_id, attempt)
}
/// `extend:<sandbox id>:<new expiry in unix seconds>`.
pub fn extend_id(sandbox_id: &str, expires_at: DateTime<Utc>) -> String {
    format!("extend:{sandbox_id}:{}", expires_at.timestamp())
}
/// `settle:<sandbox id>`.
pub fn settle_id(sandbox_id: &str) -> String {
    format!("settle:{sandbox_id}")
}
/// `pause:<sandbox id>:<segment>`.
pub fn pause_id(sandbox_id: &str, segment: u32) -> String {
    format!("pause:{sandbox_id}:{segment}")
}
/// `storage:<snapshot id>`.
pub fn storage_id(snapshot_id: &str) -> String {
    format!("storage:{snapshot_id}")
}
/// `resume:<sandbox id>:<segment>`.
pub fn resume_id(sandbox_id: &str, segment: u32) -> String {
    format!("resume:{sandbox_id}:{segment}")
}
/// `void:<sandbox id>`, `void:<sandbox id>:<attempt>` for a fallback
/// route's hold.
pub fn void_id(sandbox_id: &str, attempt: u32) -> String {
    attempt_id("void", sandbox_id, attempt)
}

pub use sandboxer_core::billing::{seconds_between, HoldRequest};

impl Entry {
    /// A grant of `amount` to `to` by `by`, with id `grant:<key>`.
    pub fn grant(to: &Actor, amount: Micros, by: &Actor, key: &str, at: DateTime<Utc>) -> Entry {
        Entry {
            id: grant_id(key),
            at,
            kind: EntryKind::Grant {
                actor: to.clone(),
                amount,
                by: by.clone(),
            },
        }
    }

    /// The (first) hold for `req`.
    pub fn hold(req: &HoldRequest, at: DateTime<Utc>) -> Entry {
        Entry::hold_attempt(req, 1, at)
    }

    /// The hold for `req` that follows `current`, the sandbox's hold so
    /// far: the same attempt while it is open or settled (a retry, or a
    /// conflict when it asks for something else), the next one after a
    /// void (the create moved to a fallback route), the first without one.
    pub fn hold_after(req: &HoldRequest, current: Option<&Hold>, at: DateTime<Utc>) -> Entry {
        let attempt = match current {
            None => 1,
            Some(h) if h.state == HoldState::Voided => h.attempt + 1,
            Some(h) => h.attempt,
        };
        Entry::hold_attempt(req, attempt, at)
    }

    /// The hold for `req` as the create's `attempt`-th priced route.
    pub fn hold_attempt(req: &HoldRequest, attempt: u32, at: DateTime<Utc>) -> Entry {
        Entry {
            id: hold_id(&req.sandbox_id, attempt),
            at,
            kind: EntryKind::Hold {
                sandbox_id: req.sandbox_id.clone(),
                actor: req.actor.clone(),
                amount: req.amount(),
                price_per_hour: req.price_per_hour,
                extension: req.extension.clone(),
                host: req.host.clone(),
                profile: req.profile.clone(),
                created_at: req.created_at,
                expires_at: req.expires_at,
                attempt,
            },
        }
    }

    /// Extend the hold of `sandbox_id` to cover until `expires_at` (the
    /// amount is derived by [`LedgerState::apply`]).
    pub fn extend(sandbox_id: &str, expires_at: DateTime<Utc>, at: DateTime<Utc>) -> Entry {
        Entry {
            id: extend_id(sandbox_id, expires_at),
            at,
            kind: EntryKind::Extend {
                sandbox_id: sandbox_id.to_string(),
                amount: Micros::ZERO,
                expires_at,
            },
        }
    }

    /// Settle the hold of `sandbox_id` for `seconds` of use (the amount is
    /// derived by [`LedgerState::apply`]).
    pub fn settle(sandbox_id: &str, seconds: u64, at: DateTime<Utc>) -> Entry {
        Entry {
            id: settle_id(sandbox_id),
            at,
            kind: EntryKind::Settle {
                sandbox_id: sandbox_id.to_string(),
                seconds,
                amount: Micros::ZERO,
            },
        }
    }

    /// Pause the sandbox of the open hold `h`: pay its `seconds` of running,
    /// hold `paused_price_per_hour` until `paused_until`.
    pub fn pause(
        h: &Hold,
        seconds: u64,
        paused_price_per_hour: Micros,
        paused_until: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Entry {
        let segment = h.pauses + 1;
        Entry {
            id: pause_id(&h.sandbox_id, segment),
            at,
            kind: EntryKind::Pause {
                sandbox_id: h.sandbox_id.clone(),
                segment,
                seconds,
                amount: Micros::ZERO,
                paused_price_per_hour,
                paused_at: at,
                paused_until,
                held: Micros::ZERO,
            },
        }
    }

    /// Resume the sandbox of the paused hold `h`: pay its `paused_seconds`,
    /// hold the running price until `expires_at`.
    pub fn resume(
        h: &Hold,
        paused_seconds: u64,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Entry {
        let segment = h.pauses;
        Entry {
            id: resume_id(&h.sandbox_id, segment),
            at,
            kind: EntryKind::Resume {
                sandbox_id: h.sandbox_id.clone(),
                segment,
                paused_seconds,
                amount: Micros::ZERO,
                resumed_at: at,
                expires_at,
                held: Micros::ZERO,
            },
        }
    }

    /// Pay `actor`'s snapshot `snapshot_id`'s storage for `seconds`.
    pub fn storage(
        snapshot_id: &str,
        actor: &Actor,
        seconds: u64,
        price_per_hour: Micros,
        at: DateTime<Utc>,
    ) -> Entry {
        Entry {
            id: storage_id(snapshot_id),
            at,
            kind: EntryKind::Storage {
                snapshot_id: snapshot_id.to_string(),
                actor: actor.clone(),
                seconds,
                price_per_hour,
                amount: Micros::ZERO,
            },
        }
    }

    /// Release the whole (first) hold of `sandbox_id`.
    pub fn void(sandbox_id: &str, at: DateTime<Utc>) -> Entry {
        Entry::void_attempt(sandbox_id, 1, at)
    }

    /// Release the whole hold `h`, whichever attempt it is.
    pub fn void_of(h: &Hold, at: DateTime<Utc>) -> Entry {
        Entry::void_attempt(&h.sandbox_id, h.attempt, at)
    }

    fn void_attempt(sandbox_id: &str, attempt: u32, at: DateTime<Utc>) -> Entry {
        Entry {
            id: void_id(sandbox_id, attempt),
            at,
            kind: EntryKind::Void {
                sandbox_id: sandbox_id.to_string(),
                attempt,
            },
        }
    }

    /// The sandbox the entry is about (`None` for grants).
    pub fn sandbox_id(&self) -> Option<&str> {
        match &self.kind {
            EntryKind::Grant { .. } | EntryKind::Storage { .. } => None,
            EntryKind::Hold { sandbox_id, .. }
            | EntryKind::Extend { sandbox_id, .. }
            | EntryKind::Settle { sandbox_id, .. }
            | EntryKind::Pause { sandbox_id, .. }
            | EntryKind::Resume { sandbox_id, .. }
            | EntryKind::Void { sandbox_id, .. } => Some(sandbox_id),
        }
    }

    /// `grant`, `hold`, `extend`, `settle` or `void`.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            EntryKind::Grant { .. } => "grant",
            EntryKind::Hold { .. } => "hold",
            EntryKind::Extend { .. } => "extend",
            EntryKind::Settle { .. } => "settle",
            EntryKind::Pause { .. } => "pause",
            EntryKind::Storage { .. } => "storage",
            EntryKind::Resume { .. } => "resume",
            EntryKind::Void { .. } => "void",
        }
    }

    /// The amount the entry moves (zero for voids; what a pause or resume
    /// spent).
    pub fn amount(&self) -> Micros {
        match &self.kind {
            EntryKind::Grant { amount, .. }
            | EntryKind::Hold { amount, .. }
            | EntryKind::Extend { amount, .. }
            | EntryKind::Pause { amount, .. }
            | EntryKind::Resume { amount, .. }
            | EntryKind::Storage { amount, .. }
            | EntryKind::Settle { amount, .. } => *amount,
            EntryKind::Void { .. } => Micros::ZERO,
        }
    }

    /// The id this entry must have, from its content (`None` for grants,
    /// whose key is the caller's).
    fn expected_id(&self) -> Option<String> {
        match &self.kind {
            EntryKind::Grant { .. } => None,
            EntryKind::Hold {
                sandbox_id,
                attempt,
                ..
            } => Some(hold_id(sandbox_id, *attempt)),
            EntryKind::Extend {
                sandbox_id,
                expires_at,
                ..
            } => Some(extend_id(sandbox_id, *expires_at)),
            EntryKind::Settle { sandbox_id, .. } => Some(settle_id(sandbox_id)),
            EntryKind::Pause {
                sandbox_id,
                segment,
                ..
            } => Some(pause_id(sandbox_id, *segment)),
            EntryKind::Resume {
                sandbox_id,
                segment,
                ..
            } => Some(resume_id(sandbox_id, *segment)),
            EntryKind::Storage { snapshot_id, .. } => Some(storage_id(snapshot_id)),
            EntryKind::Void {
                sandbox_id,
                attempt,
            } => Some(void_id(sandbox_id, *attempt)),
        }
    }
}

/// One actor's balance. `granted = available + held + spent` always.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Account {
    /// Every credit ever granted.
    pub granted: Micros,
    /// What new holds can take.
    pub available: Micros,
    /// Held by open holds.
    pub held: Micros,
    /// Settled: paid for sandboxes that ran.
    pub spent: Micros,
}

/// Where a hold is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    Open,
    /// Its sandbox is paused: the run so far is paid, the paused price
    /// held.
    Paused,
    Settled,
    Voided,
}

impl HoldState {
    /// Open or paused: a settle (or void) is still to come.
    pub fn is_unresolved(self) -> bool {
        matches!(self, HoldState::Open | HoldState::Paused)
    }
}

impl fmt::Display for HoldState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HoldState::Open => "open",
            HoldState::Paused => "paused",
            HoldState::Settled => "settled",
            HoldState::Voided => "voided",
        })
    }
}

/// A sandbox's hold, with its extensions and resolution folded in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub sandbox_id: String,
    pub actor: Actor,
    /// Held in total (the hold plus every extension).
    pub amount: Micros,
    pub price_per_hour: Micros,
    pub extension: String,
    pub host: String,
    pub profile: String,
    pub created_at: DateTime<Utc>,
    /// The expiry the held amount covers.
    pub expires_at: DateTime<Utc>,
    /// When the hold entry was written.
    pub opened_at: DateTime<Utc>,
    /// Which priced route of the create it is (see [`EntryKind::Hold`]).
    #[serde(default = "first_attempt", skip_serializing_if = "is_first_attempt")]
    pub attempt: u32,
    /// How many times its sandbox was paused.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pauses: u32,
    /// The price per hour held while paused.
    #[serde(default, skip_serializing_if = "Micros::is_zero")]
    pub paused_price_per_hour: Micros,
    /// Spent at pauses and resumes so far (the settle adds the rest).
    #[serde(default, skip_serializing_if = "Micros::is_zero")]
    pub spent: Micros,
    /// Seconds paid at pauses and resumes so far.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub seconds_paid: u64,
    pub state: HoldState,
    /// Settled: the seconds paid for.
    pub seconds: Option<u64>,
    /// Settled: what was spent.
    pub cost: Option<Micros>,
    /// The settle or void entry that resolved the hold.
    pub resolved_by: Option<String>,
}

/// One sandbox in an actor's usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct UsageRow {
    pub sandbox_id: String,
    pub extension: String,
    pub host: String,
    pub profile: String,
    pub price_per_hour: Micros,
    /// Held in total (hold plus extensions).
    pub held: Micros,
    /// Settled: the seconds paid for.
    pub seconds: Option<u64>,
    /// Settled: what was spent (zero when voided).
    pub cost: Option<Micros>,
    pub state: HoldState,
    pub opened_at: DateTime<Utc>,
}

impl UsageRow {
    /// The usage row of hold `h`.
    pub fn of(h: &Hold) -> UsageRow {
        UsageRow {
            sandbox_id: h.sandbox_id.clone(),
            extension: h.extension.clone(),
            host: h.host.clone(),
            profile: h.profile.clone(),
            price_per_hour: h.price_per_hour,
            held: h.amount,
            seconds: h.seconds,
            cost: h.cost,
            state: h.state,
            opened_at: h.opened_at,
        }
    }
}

/// Which entries to list; an empty filter lists all.
#[derive(Debug, Clone, Default)]
pub struct EntryFilter {
    /// Entries of this actor: grants to it and its sandboxes' entries.
    pub actor: Option<Actor>,
    pub sandbox_id: Option<String>,
}

/// The outcome of [`LedgerState::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The entry as applied, amounts derived; for a duplicate, the original.
    pub entry: Entry,
    /// The id had been applied before: nothing changed.
    pub duplicate: bool,
}

/// A line of the ledger file that the rules refused when it was read back
/// (written by hand or by a faulty build). It is left out of the balances and
/// reported by [`check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub line: usize,
    pub id: String,
    pub message: String,
}

/// What became of a sandbox whose hold is open, as the sandbox store knows
/// it; the input of reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Still provisioning or running: leave the hold open.
    Live,
    /// Ended after existing `seconds`: settle.
    Ended { seconds: u64 },
    /// Provisioning failed: void.
    Failed,
    /// The store does not know it (a crash before it was recorded, or it
    /// was forgotten): void.
    Missing,
}

impl Fate {
    /// The fate of a sandbox from its record in the sandbox store (`None`:
    /// the store does not have it). `destroyed` is `Ended` after the seconds
    /// from `created_at` to `ended_at`; `failed` is `Failed`; anything still
    /// live, `destroying` included (its teardown will settle), is `Live`.
    pub fn of(record: Option<&Sandbox>) -> Fate {
        let Some(sbx) = record else {
            return Fate::Missing;
        };
        match sbx.state() {
            // The seconds since its last resume, or of the pause it ended
            // in (what the settle of an open or a paused hold counts).
            State::Destroyed => Fate::Ended {
                seconds: seconds_between(
                    sbx.paused_at.unwrap_or(sbx.running_since()),
                    sbx.ended_at.unwrap_or(sbx.updated_at),
                ),
            },
            State::Failed => Fate::Failed,
            State::Provisioning
            | State::Ready
            | State::Pausing
            | State::Paused
            | State::Resuming
            | State::Destroying => Fate::Live,
        }
    }
}

/// The ledger in memory: every applied entry, the accounts and the holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerState {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
    accounts: BTreeMap<Actor, Account>,
    holds: BTreeMap<String, Hold>,
    rejected: Vec<Rejected>,
}

fn too_large() -> Error {
    Error::invalid_input("the amount is too large for the ledger")
}

fn add(a: Micros, b: Micros) -> Result<Micros> {
    a.checked_add(b).ok_or_else(too_large)
}

fn sub(a: Micros, b: Micros) -> Result<Micros> {
    a.checked_sub(b).ok_or_else(too_large)
}

impl LedgerState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The state after applying `entries` in order; entries the rules
    /// refuse are recorded as [`Rejected`] (numbered from 1) and skipped.
    pub fn replay<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> LedgerState {
        let mut state = LedgerState::new();
        for (i, e) in entries.into_iter().enumerate() {
            if let Err(err) = state.apply(e) {
                state.note_rejected(i + 1, &e.id, err.message());
            }
        }
        state
    }

    /// Apply one entry, enforcing every rule. On error nothing changed.
    ///
    /// - An id applied before is a no-op returning the original entry
    ///   (`duplicate`), unless it is a grant or hold asking for something
    ///   else under the same id (`Conflict`).
    /// - Ids must be the ones derived from the content (`hold:<sbx>`, ...).
    /// - Grants: only `adm:` actors (`Forbidden`), positive amounts.
    /// - Holds and extends beyond what is available: `InsufficientCredits`,
    ///   naming the amount needed and the amount available.
    /// - Extend, settle and void need an open hold (`NotFound` without one,
    ///   `Conflict` when it was already settled or voided).
    /// - A settle spends `price x seconds`, at most what is held, and
    ///   releases the rest.
    pub fn apply(&mut self, entry: &Entry) -> Result<Applied> {
        if let Some(&i) = self.index.get(&entry.id) {
            let original = &self.entries[i];
            if !same_request(original, entry) {
                return Err(Error::conflict(format!(
                    "ledger entry `{}` was already written for a different request",
                    entry.id
                ))
                .with_hint("a retried operation must repeat the original exactly; use a new key for a new grant"));
            }
            return Ok(Applied {
                entry: original.clone(),
                duplicate: true,
            });
        }
        match entry.expected_id() {
            Some(expected) if expected != entry.id => {
                return Err(Error::invalid_input(format!(
                    "ledger entry `{}` must have the id `{expected}`",
                    entry.id
                )))
            }
            None => {
                let key = entry.id.strip_prefix("grant:").unwrap_or("");
                if key.is_empty() || key.len() > 200 || key.chars().any(char::is_control) {
                    return Err(Error::invalid_input(format!(
                        "grant id `{}` must be `grant:KEY`, KEY 1 to 200 printable characters",
                        entry.id
                    )));
                }
            }
            _ => {}
        }
        if let Some(sbx) = entry.sandbox_id() {
            if !is_sandbox_id(sbx) {
                return Err(Error::invalid_input(format!("`{sbx}` is not a sandbox id")));
            }
        }
        let canonical = match &entry.kind {
            EntryKind::Grant { actor, amount, by } => {
                self.apply_grant(actor, *amount, by)?;
                entry.clone()
            }
            EntryKind::Hold { .. } => self.apply_hold(entry)?,
            EntryKind::Extend {
                sandbox_id,
                expires_at,
                ..
            } => {
                let amount = self.apply_extend(sandbox_id, *expires_at)?;
                let mut e = entry.clone();
                if let EntryKind::Extend { amount: a, .. } = &mut e.kind {
                    *a = amount;
                }
                e
            }
            EntryKind::Settle {
                sandbox_id,
                seconds,
                ..
            } => {
                let amount = self.apply_settle(sandbox_id, *seconds, &entry.id)?;
                let mut e = entry.clone();
                if let EntryKind::Settle { amount: a, .. } = &mut e.kind {
                    *a = amount;
                }
                e
            }
            EntryKind::Pause { .. } | EntryKind::Resume { .. } => {
                self.apply_pause_or_resume(entry)?
            }
            EntryKind::Storage {
                actor,
                seconds,
                price_per_hour,
                ..
            } => {
                let acc = self.accounts.get(actor).copied().unwrap_or_default();
                let paid = price_per_hour
                    .per_hour_times_secs(*seconds)
                    .min(acc.available.max(Micros::ZERO));
                self.accounts.insert(
                    actor.clone(),
                    Account {
                        available: sub(acc.available, paid)?,
                        spent: add(acc.spent, paid)?,
                        ..acc
                    },
                );
                let mut e = entry.clone();
                if let EntryKind::Storage { amount, .. } = &mut e.kind {
                    *amount = paid;
                }
                e
            }
            EntryKind::Void {
                sandbox_id,
                attempt,
            } => {
                self.apply_void(sandbox_id, *attempt, &entry.id)?;
                entry.clone()
            }
        };
        self.index.insert(canonical.id.clone(), self.entries.len());
        self.entries.push(canonical.clone());
        Ok(Applied {
            entry: canonical,
            duplicate: false,
        })
    }

    fn apply_grant(&mut self, to: &Actor, amount: Micros, by: &Actor) -> Result<()> {
        if !by.is_admin() {
            return Err(Error::new(
                ErrorKind::Forbidden,
                format!("only adm actors may grant credits, and {by} is not one"),
            ));
        }
        if amount <= Micros::ZERO {
            return Err(Error::invalid_input(format!(
                "a grant must be positive, not {amount}"
            )));
        }
        let acc = self.accounts.get(to).copied().unwrap_or_default();
        let next = Account {
            granted: add(acc.granted, amount)?,
            available: add(acc.available, amount)?,
            ..acc
        };
        self.accounts.insert(to.clone(), next);
        Ok(())
    }

    fn apply_hold(&mut self, entry: &Entry) -> Result<Entry> {
        let EntryKind::Hold {
            sandbox_id,
            actor,
            price_per_hour,
            extension,
            host,
            profile,
            created_at,
            expires_at,
            attempt,
            ..
        } = &entry.kind
        else {
            unreachable!("apply_hold is called with holds")
        };
        match self.holds.get(sandbox_id) {
            // A fallback route's hold, after the one before it was voided.
            Some(h) if h.state == HoldState::Voided && *attempt == h.attempt + 1 => {}
            Some(h) => {
                return Err(Error::conflict(format!(
                    "sandbox {sandbox_id} already has a hold ({}, attempt {})",
                    h.state, h.attempt
                )))
            }
            None if *attempt != 1 => {
                return Err(Error::conflict(format!(
                    "sandbox {sandbox_id} has no hold before attempt {attempt}"
                )))
            }
            None => {}
        }
        if *price_per_hour <= Micros::ZERO {
            return Err(Error::invalid_input(format!(
                "a hold needs a positive price per hour, not {price_per_hour}"
            )));
        }
        if expires_at < created_at {
            return Err(Error::invalid_input(format!(
                "sandbox {sandbox_id} expires ({expires_at}) before it was created ({created_at})"
            )));
        }
        let req = HoldRequest {
            sandbox_id: sandbox_id.clone(),
            actor: actor.clone(),
            price_per_hour: *price_per_hour,
            extension: extension.clone(),
            host: host.clone(),
            profile: profile.clone(),
            created_at: *created_at,
            expires_at: *expires_at,
        };
        let amount = req.amount();
        let acc = self.accounts.get(actor).copied().unwrap_or_default();
        if acc.available < amount {
            let secs = seconds_between(*created_at, *expires_at);
            return Err(insufficient(
                actor,
                amount,
                acc.available,
                &format!(
                    "to hold sandbox {sandbox_id} ({price_per_hour} credits/h for {})",
                    sandboxer_core::duration::format_duration(std::time::Duration::from_secs(secs))
                ),
            ));
        }
        let next = Account {
            available: sub(acc.available, amount)?,
            held: add(acc.held, amount)?,
            ..acc
        };
        self.accounts.insert(actor.clone(), next);
        self.holds.insert(
            sandbox_id.clone(),
            Hold {
                sandbox_id: sandbox_id.clone(),
                actor: actor.clone(),
                amount,
                price_per_hour: *price_per_hour,
                extension: extension.clone(),
                host: host.clone(),
                profile: profile.clone(),
                created_at: *created_at,
                expires_at: *expires_at,
                opened_at: entry.at,
                attempt: *attempt,
                pauses: 0,
                paused_price_per_hour: Micros::ZERO,
                spent: Micros::ZERO,
                seconds_paid: 0,
                state: HoldState::Open,
                seconds: None,
                cost: None,
                resolved_by: None,
            },
        );
        Ok(Entry::hold_attempt(&req, *attempt, entry.at))
    }

    fn open_hold(&self, sandbox_id: &str) -> Result<&Hold> {
        let h = self
            .holds
            .get(sandbox_id)
            .ok_or_else(|| Error::not_found(format!("sandbox {sandbox_id} has no hold")))?;
        if h.state != HoldState::Open {
            return Err(Error::conflict(format!(
                "the hold of sandbox {sandbox_id} was already {} (by `{}`)",
                h.state,
                h.resolved_by.as_deref().unwrap_or("?")
            )));
        }
        Ok(h)
    }

    fn apply_extend(&mut self, sandbox_id: &str, expires_at: DateTime<Utc>) -> Result<Micros> {
        let h = self.open_hold(sandbox_id)?;
        let extra = h
            .price_per_hour
            .per_hour_times_secs(seconds_between(h.expires_at, expires_at));
        let acc = self.accounts.get(&h.actor).copied().unwrap_or_default();
        if acc.available < extra {
            return Err(insufficient(
                &h.actor,
                extra,
                acc.available,
                &format!(
                    "to extend sandbox {sandbox_id} to {}",
                    expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            ));
        }
        let next = Account {
            available: sub(acc.available, extra)?,
            held: add(acc.held, extra)?,
            ..acc
        };
        let total = add(h.amount, extra)?;
        let actor = h.actor.clone();
        self.accounts.insert(actor, next);
        let h = self.holds.get_mut(sandbox_id).expect("checked above");
        h.amount = total;
        h.expires_at = h.expires_at.max(expires_at);
        Ok(extra)
    }

    fn apply_settle(&mut self, sandbox_id: &str, seconds: u64, id: &str) -> Result<Micros> {
        let h = self.unresolved_hold(sandbox_id)?;
        // Seconds of the run since the last resume, or of the pause it
        // ended in.
        let price = if h.state == HoldState::Paused {
            h.paused_price_per_hour
        } else {
            h.price_per_hour
        };
        let cost = price.per_hour_times_secs(seconds).min(h.amount);
        let acc = self.accounts.get(&h.actor).copied().unwrap_or_default();
        let next = Account {
            available: add(acc.available, sub(h.amount, cost)?)?,
            held: sub(acc.held, h.amount)?,
            spent: add(acc.spent, cost)?,
            ..acc
        };
        let actor = h.actor.clone();
        self.accounts.insert(actor, next);
        let h = self.holds.get_mut(sandbox_id).expect("checked above");
        h.state = HoldState::Settled;
        h.seconds = Some(h.seconds_paid + seconds);
        h.cost = Some(add(h.spent, cost)?);
        h.resolved_by = Some(id.to_string());
        Ok(cost)
    }

    /// A hold that is open or paused (a settle ends either).
    fn unresolved_hold(&self, sandbox_id: &str) -> Result<&Hold> {
        match self.holds.get(sandbox_id) {
            Some(h) if h.state == HoldState::Paused => Ok(h),
            _ => self.open_hold(sandbox_id),
        }
    }

    fn apply_pause_or_resume(&mut self, entry: &Entry) -> Result<Entry> {
        let sandbox_id = entry
            .sandbox_id()
            .expect("pauses and resumes name a sandbox");
        let h = self
            .holds
            .get(sandbox_id)
            .ok_or_else(|| Error::not_found(format!("sandbox {sandbox_id} has no hold")))?
            .clone();
        let mut canonical = entry.clone();
        // (what it spends, what it holds next, the hold's next state)
        let (spent, held, paused) = match &mut canonical.kind {
            EntryKind::Pause {
                segment,
                seconds,
                amount,
                paused_price_per_hour,
                paused_at,
                paused_until,
                held,
                ..
            } => {
                if h.state != HoldState::Open || *segment != h.pauses + 1 {
                    return Err(Error::conflict(format!(
                        "the hold of sandbox {sandbox_id} is {} after {} pauses; pause {segment} does not follow",
                        h.state, h.pauses
                    )));
                }
                if paused_until < paused_at {
                    return Err(Error::invalid_input(format!(
                        "sandbox {sandbox_id}'s paused retention ends ({paused_until}) before its pause ({paused_at})"
                    )));
                }
                *amount = h.price_per_hour.per_hour_times_secs(*seconds).min(h.amount);
                *held = paused_price_per_hour
                    .per_hour_times_secs(seconds_between(*paused_at, *paused_until));
                (*amount, *held, true)
            }
            EntryKind::Resume {
                segment,
                paused_seconds,
                amount,
                resumed_at,
                expires_at,
                held,
                ..
            } => {
                if h.state != HoldState::Paused || *segment != h.pauses {
                    return Err(Error::conflict(format!(
                        "the hold of sandbox {sandbox_id} is {} after {} pauses; resume {segment} does not follow",
                        h.state, h.pauses
                    )));
                }
                if expires_at < resumed_at {
                    return Err(Error::invalid_input(format!(
                        "sandbox {sandbox_id} expires ({expires_at}) before it resumes ({resumed_at})"
                    )));
                }
                *amount = h
                    .paused_price_per_hour
                    .per_hour_times_secs(*paused_seconds)
                    .min(h.amount);
                *held = h
                    .price_per_hour
                    .per_hour_times_secs(seconds_between(*resumed_at, *expires_at));
                (*amount, *held, false)
            }
            _ => unreachable!("called with pauses and resumes"),
        };
        let acc = self.accounts.get(&h.actor).copied().unwrap_or_default();
        let freed = add(acc.available, sub(h.amount, spent)?)?;
        if freed < held {
            let what = if paused {
                format!("to hold sandbox {sandbox_id} while it is paused")
            } else {
                format!("to hold sandbox {sandbox_id} for the run it resumes")
            };
            return Err(insufficient(&h.actor, held, freed, &what));
        }
        let next = Account {
            available: sub(freed, held)?,
            held: add(sub(acc.held, h.amount)?, held)?,
            spent: add(acc.spent, spent)?,
            ..acc
        };
        self.accounts.insert(h.actor.clone(), next);
        let hold = self.holds.get_mut(sandbox_id).expect("read above");
        hold.amount = held;
        hold.spent = add(hold.spent, spent)?;
        match &canonical.kind {
            EntryKind::Pause {
                segment,
                seconds,
                paused_price_per_hour,
                paused_until,
                ..
            } => {
                hold.state = HoldState::Paused;
                hold.pauses = *segment;
                hold.seconds_paid += seconds;
                hold.paused_price_per_hour = *paused_price_per_hour;
                hold.expires_at = *paused_until;
            }
            EntryKind::Resume {
                paused_seconds,
                expires_at,
                ..
            } => {
                hold.state = HoldState::Open;
                hold.seconds_paid += paused_seconds;
                hold.expires_at = *expires_at;
            }
            _ => unreachable!("matched above"),
        }
        Ok(canonical)
    }

    fn apply_void(&mut self, sandbox_id: &str, attempt: u32, id: &str) -> Result<()> {
        let h = self.open_hold(sandbox_id)?;
        if h.attempt != attempt {
            return Err(Error::conflict(format!(
                "the open hold of sandbox {sandbox_id} is attempt {}, not {attempt}",
                h.attempt
            )));
        }
        let acc = self.accounts.get(&h.actor).copied().unwrap_or_default();
        let next = Account {
            available: add(acc.available, h.amount)?,
            held: sub(acc.held, h.amount)?,
            ..acc
        };
        let actor = h.actor.clone();
        self.accounts.insert(actor, next);
        let h = self.holds.get_mut(sandbox_id).expect("checked above");
        h.state = HoldState::Voided;
        h.cost = Some(Micros::ZERO);
        h.resolved_by = Some(id.to_string());
        Ok(())
    }

    /// The state one entry's rules read, and no more: the entry already
    /// written under its id (`prior`, for a retry), the accounts and the
    /// holds it touches. The database ledger applies each entry to such a
    /// state in the transaction that writes it.
    pub fn partial(
        prior: Option<Entry>,
        accounts: impl IntoIterator<Item = (Actor, Account)>,
        holds: impl IntoIterator<Item = Hold>,
    ) -> LedgerState {
        let mut s = LedgerState::new();
        if let Some(e) = prior {
            s.index.insert(e.id.clone(), 0);
            s.entries.push(e);
        }
        s.accounts = accounts.into_iter().collect();
        s.holds = holds
            .into_iter()
            .map(|h| (h.sandbox_id.clone(), h))
            .collect();
        s
    }

    /// Put the accounts as they were stored in place of the ones the
    /// entries gave, so that [`check`] compares the two.
    pub fn with_recorded_accounts(mut self, accounts: BTreeMap<Actor, Account>) -> LedgerState {
        self.accounts = accounts;
        self
    }

    /// Record a line that the rules refused when read back.
    pub fn note_rejected(&mut self, line: usize, id: &str, message: &str) {
        self.rejected.push(Rejected {
            line,
            id: id.to_string(),
            message: message.to_string(),
        });
    }

    /// Every applied entry, in order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The applied entry with this id.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.index.get(id).map(|&i| &self.entries[i])
    }

    /// The entries `filter` selects, in order.
    pub fn filtered(&self, filter: &EntryFilter) -> Vec<Entry> {
        self.entries
            .iter()
            .filter(|e| {
                let sbx_ok = match (&filter.sandbox_id, e.sandbox_id()) {
                    (None, _) => true,
                    (Some(want), Some(have)) => want == have,
                    (Some(_), None) => false,
                };
                let actor_ok = match &filter.actor {
                    None => true,
                    Some(want) => match &e.kind {
                        EntryKind::Grant { actor, .. } => actor == want,
                        _ => e
                            .sandbox_id()
                            .and_then(|s| self.holds.get(s))
                            .is_some_and(|h| &h.actor == want),
                    },
                };
                sbx_ok && actor_ok
            })
            .cloned()
            .collect()
    }

    /// The actor's account (all zero for an actor the ledger never saw).
    pub fn account(&self, actor: &Actor) -> Account {
        self.accounts.get(actor).copied().unwrap_or_default()
    }

    /// Every account, by actor.
    pub fn accounts(&self) -> &BTreeMap<Actor, Account> {
        &self.accounts
    }

    /// The hold of a sandbox, whatever its state.
    pub fn hold(&self, sandbox_id: &str) -> Option<&Hold> {
        self.holds.get(sandbox_id)
    }

    /// Every hold, by sandbox id.
    pub fn holds(&self) -> impl Iterator<Item = &Hold> {
        self.holds.values()
    }

    /// The holds neither settled nor voided.
    pub fn open_holds(&self) -> Vec<Hold> {
        self.holds
            .values()
            .filter(|h| h.state.is_unresolved())
            .cloned()
            .collect()
    }

    /// Lines refused when read back.
    pub fn rejected(&self) -> &[Rejected] {
        &self.rejected
    }

    /// One row per sandbox the actor held credits for, in hold order.
    pub fn usage(&self, actor: &Actor) -> Vec<UsageRow> {
        let mut rows: Vec<UsageRow> = self
            .holds
            .values()
            .filter(|h| &h.actor == actor)
            .map(UsageRow::of)
            .collect();
        rows.sort_by_key(|r| {
            self.holds
                .get(&r.sandbox_id)
                .and_then(|h| self.index.get(&hold_id(&h.sandbox_id, h.attempt)))
                .copied()
        });
        rows
    }

    /// The entries that resolve the open holds whose sandboxes have ended
    /// (settle) or failed or vanished (void), given each one's [`Fate`].
    pub fn reconcile_entries(&self, fate: &dyn Fn(&str) -> Fate, at: DateTime<Utc>) -> Vec<Entry> {
        self.holds
            .values()
            .filter(|h| h.state.is_unresolved())
            .filter_map(|h| match fate(&h.sandbox_id) {
                Fate::Live => None,
                Fate::Ended { seconds } => Some(Entry::settle(&h.sandbox_id, seconds, at)),
                Fate::Failed | Fate::Missing => Some(Entry::void_of(h, at)),
            })
            .collect()
    }
}

fn insufficient(actor: &Actor, needed: Micros, available: Micros, what: &str) -> Error {
    Error::new(
        ErrorKind::InsufficientCredits,
        format!(
            "insufficient credits: {actor} needs {needed} {what}, and has {available} available"
        ),
    )
    .with_hint(format!(
        "an operator can add credits: `sandboxer credits grant --actor {actor} AMOUNT`; \
         `sandboxer credits balance` shows what is held"
    ))
}

/// Whether `retry` asks for the same thing as `original` under the same id.
/// Only grants and holds carry a request that could differ; the others are
/// determined by their id (a later settle of the same sandbox with more
/// seconds is still the same settle).
fn same_request(original: &Entry, retry: &Entry) -> bool {
    match (&original.kind, &retry.kind) {
        (
            EntryKind::Grant {
                actor: a1,
                amount: m1,
                by: b1,
            },
            EntryKind::Grant {
                actor: a2,
                amount: m2,
                by: b2,
            },
        ) => a1 == a2 && m1 == m2 && b1 == b2,
        (
            EntryKind::Hold {
                sandbox_id: s1,
                actor: a1,
                price_per_hour: p1,
                extension: e1,
                host: h1,
                profile: f1,
                created_at: c1,
                expires_at: x1,
                ..
            },
            EntryKind::Hold {
                sandbox_id: s2,
                actor: a2,
                price_per_hour: p2,
                extension: e2,
                host: h2,
                profile: f2,
                created_at: c2,
                expires_at: x2,
                ..
            },
        ) => {
            s1 == s2
                && a1 == a2
                && p1 == p2
                && e1 == e2
                && h1 == h2
                && f1 == f2
                && c1 == c2
                && x1 == x2
        }
        (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

pub use crate::check::{check, CheckReport, Violation};

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }
    fn actor(s: &str) -> Actor {
        s.parse().unwrap()
    }
    fn credits(s: &str) -> Micros {
        Micros::parse_amount(s).unwrap()
    }
    fn hold_req(sbx: &str, who: &str, price: &str, ttl_secs: i64) -> HoldRequest {
        HoldRequest {
            sandbox_id: sbx.into(),
            actor: actor(who),
            price_per_hour: credits(price),
            extension: "ext.saas-stub".into(),
            host: "saas".into(),
            profile: "profile.saas".into(),
            created_at: t(0),
            expires_at: t(ttl_secs),
        }
    }
    fn funded(amount: &str) -> LedgerState {
        let mut s = LedgerState::new();
        s.apply(&Entry::grant(
            &actor("agt:a"),
            credits(amount),
            &actor("adm:ops"),
            "k1",
            t(0),
        ))
        .unwrap();
        s
    }

    #[test]
    fn only_adm_grants() {
        let mut s = LedgerState::new();
        let err = s
            .apply(&Entry::grant(
                &actor("agt:a"),
                credits("1"),
                &actor("agt:a"),
                "k",
                t(0),
            ))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Forbidden);
        assert_eq!(s, LedgerState::new());
        let err = s
            .apply(&Entry::grant(
                &actor("agt:a"),
                Micros::ZERO,
                &actor("adm:ops"),
                "k",
                t(0),
            ))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn hold_beyond_available_names_both_amounts() {
        let mut s = funded("1");
        let before = s.clone();
        let err = s
            .apply(&Entry::hold(&hold_req("sbx-a1", "agt:a", "2", 3600), t(1)))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InsufficientCredits);
        assert!(err.message().contains("needs 2 "), "{}", err.message());
        assert!(
            err.message().contains("has 1 available"),
            "{}",
            err.message()
        );
        assert_eq!(s, before, "a refused entry changes nothing");
    }

    #[test]
    fn settle_is_capped_and_releases_the_rest() {
        let mut s = funded("10");
        s.apply(&Entry::hold(&hold_req("sbx-a1", "agt:a", "2", 3600), t(1)))
            .unwrap();
        assert_eq!(s.account(&actor("agt:a")).held, credits("2"));
        // 15 minutes: 0.5 spent, 1.5 back.
        let a = s.apply(&Entry::settle("sbx-a1", 900, t(900))).unwrap();
        assert_eq!(a.entry.amount(), credits("0.5"));
        let acc = s.account(&actor("agt:a"));
        assert_eq!(
            (acc.available, acc.held, acc.spent),
            (credits("9.5"), Micros::ZERO, credits("0.5"))
        );
        // Two hours on a one-hour hold: capped at the 2 held.
        s.apply(&Entry::hold(&hold_req("sbx-a2", "agt:a", "2", 3600), t(1)))
            .unwrap();
        let a = s.apply(&Entry::settle("sbx-a2", 7200, t(7200))).unwrap();
        assert_eq!(a.entry.amount(), credits("2"));
        assert!(check(&s).is_ok(), "{:?}", check(&s));
    }

    #[test]
    fn a_pause_pays_the_run_and_holds_only_the_paused_price() {
        let mut s = funded("10");
        // 2 credits/h for an hour: 2 held.
        s.apply(&Entry::hold(&hold_req("sbx-p1", "agt:a", "2", 3600), t(0)))
            .unwrap();
        let h = s.hold("sbx-p1").unwrap().clone();
        // Paused after 15 minutes, 0.4 credits/h held for a 5 h retention.
        let p = s
            .apply(&Entry::pause(
                &h,
                900,
                credits("0.4"),
                t(900 + 5 * 3600),
                t(900),
            ))
            .unwrap();
        assert_eq!(p.entry.id, "pause:sbx-p1:1");
        assert_eq!(p.entry.amount(), credits("0.5"));
        let acc = s.account(&actor("agt:a"));
        assert_eq!(
            (acc.available, acc.held, acc.spent),
            (credits("7.5"), credits("2"), credits("0.5"))
        );
        // A second pause of the same run is a conflict; so is a settle's
        // void.
        let h = s.hold("sbx-p1").unwrap().clone();
        assert_eq!(h.state, HoldState::Paused);
        let again = Entry::pause(&h, 10, Micros::ZERO, t(1000), t(1000));
        assert_eq!(s.apply(&again).unwrap_err().kind(), ErrorKind::Conflict);
        // Resumed after an hour paused (0.4 paid), for 30 minutes (1 held).
        let r = s
            .apply(&Entry::resume(
                &h,
                3600,
                t(900 + 3600 + 1800),
                t(900 + 3600),
            ))
            .unwrap();
        assert_eq!(r.entry.id, "resume:sbx-p1:1");
        assert_eq!(r.entry.amount(), credits("0.4"));
        let acc = s.account(&actor("agt:a"));
        assert_eq!(
            (acc.available, acc.held, acc.spent),
            (credits("8.1"), credits("1"), credits("0.9"))
        );
        // Destroyed 10 minutes into the run: 1/3 of a credit.
        let done = s
            .apply(&Entry::settle("sbx-p1", 600, t(900 + 3600 + 600)))
            .unwrap();
        assert_eq!(done.entry.amount(), Micros(333_334));
        let h = s.hold("sbx-p1").unwrap();
        assert_eq!(h.state, HoldState::Settled);
        assert_eq!(h.cost, Some(Micros(900_000 + 333_334)));
        assert_eq!(h.seconds, Some(900 + 3600 + 600));
        assert!(check(&s).is_ok(), "{:?}", check(&s));
        // The replay of the entries arrives at the same state.
        assert_eq!(LedgerState::replay(s.entries()).accounts(), s.accounts());
    }

    #[test]
    fn a_resume_the_balance_cannot_cover_changes_nothing() {
        let mut s = funded("2");
        s.apply(&Entry::hold(&hold_req("sbx-p2", "agt:a", "2", 3600), t(0)))
            .unwrap();
        let h = s.hold("sbx-p2").unwrap().clone();
        s.apply(&Entry::pause(&h, 3600, Micros::ZERO, t(7200), t(3600)))
            .unwrap();
        let before = s.clone();
        let h = s.hold("sbx-p2").unwrap().clone();
        // All 2 credits were spent on the hour it ran: nothing covers a
        // second hour.
        let err = s
            .apply(&Entry::resume(&h, 60, t(3660 + 3600), t(3660)))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InsufficientCredits, "{err}");
        assert_eq!(s, before);
        // Destroyed while paused: the paused price (zero) is all it pays.
        let done = s.apply(&Entry::settle("sbx-p2", 60, t(3660))).unwrap();
        assert_eq!(done.entry.amount(), Micros::ZERO);
        assert_eq!(s.hold("sbx-p2").unwrap().cost, Some(credits("2")));
        assert!(check(&s).is_ok(), "{:?}", check(&s));
    }

    #[test]
    fn storage_is_paid_from_what_is_available_never_more() {
        let mut s = funded("1");
        let e = Entry::storage("snap-a1", &actor("agt:a"), 3 * 3600, credits("0.5"), t(0));
        assert_eq!(s.apply(&e).unwrap().entry.amount(), credits("1"));
        assert_eq!(s.account(&actor("agt:a")).available, Micros::ZERO);
        assert!(check(&s).is_ok(), "{:?}", check(&s));
    }

    #[test]
    fn a_fallback_route_takes_the_next_hold_only_after_a_void() {
        let mut s = funded("10");
        let first = hold_req("sbx-a1", "agt:a", "1", 3600);
        let second = HoldRequest {
            host: "elsewhere".into(),
            price_per_hour: credits("2"),
            ..first.clone()
        };
        s.apply(&Entry::hold(&first, t(1))).unwrap();
        // While the first is open, the next route's hold is a conflict.
        let next = Entry::hold_after(&second, s.hold("sbx-a1"), t(2));
        assert_eq!(next.id, "hold:sbx-a1");
        assert_eq!(s.apply(&next).unwrap_err().kind(), ErrorKind::Conflict);
        let skip = Entry::hold_attempt(&second, 3, t(2));
        assert_eq!(s.apply(&skip).unwrap_err().kind(), ErrorKind::Conflict);
        s.apply(&Entry::void_of(s.hold("sbx-a1").unwrap(), t(3)))
            .unwrap();
        let next = Entry::hold_after(&second, s.hold("sbx-a1"), t(4));
        assert_eq!(next.id, "hold:sbx-a1:2");
        s.apply(&next).unwrap();
        let h = s.hold("sbx-a1").unwrap();
        assert_eq!(
            (h.attempt, h.state, h.amount),
            (2, HoldState::Open, credits("2"))
        );
        assert_eq!(s.account(&actor("agt:a")).held, credits("2"));
        // The first attempt's void cannot release the second's hold.
        let stale = Entry::void("sbx-a1", t(5));
        assert!(s.apply(&stale).unwrap().duplicate);
        assert_eq!(s.hold("sbx-a1").unwrap().state, HoldState::Open);
        s.apply(&Entry::settle("sbx-a1", 1800, t(1800))).unwrap();
        assert_eq!(s.account(&actor("agt:a")).spent, credits("1"));
        let report = check(&s);
        assert!(report.is_ok(), "{report:?}");
        // Replayed from its entries alone, the ledger comes out the same.
        let again = LedgerState::replay(s.entries());
        assert_eq!(again.hold("sbx-a1"), s.hold("sbx-a1"));
        assert!(again.rejected().is_empty());
    }

    #[test]
    fn retries_are_applied_once() {
        let mut s = funded("10");
        let h = Entry::hold(&hold_req("sbx-a1", "agt:a", "1", 3600), t(1));
        s.apply(&h).unwrap();
        let first = s.apply(&Entry::settle("sbx-a1", 60, t(60))).unwrap();
        let after = s.clone();
        let again = s.apply(&Entry::settle("sbx-a1", 600, t(600))).unwrap();
        assert!(again.duplicate);
        assert_eq!(again.entry, first.entry);
        assert_eq!(s, after);
        // A void after the settle: the hold is resolved once.
        let err = s.apply(&Entry::void("sbx-a1", t(700))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        // The same id asking for something else.
        let other = Entry::hold(&hold_req("sbx-a1", "agt:a", "3", 3600), t(2));
        assert_eq!(s.apply(&other).unwrap_err().kind(), ErrorKind::Conflict);
        let regrant = Entry::grant(
            &actor("agt:a"),
            credits("99"),
            &actor("adm:ops"),
            "k1",
            t(3),
        );
        assert_eq!(s.apply(&regrant).unwrap_err().kind(), ErrorKind::Conflict);
    }

    #[test]
    fn extend_holds_the_extra_time_or_is_refused() {
        let mut s = funded("3");
        s.apply(&Entry::hold(&hold_req("sbx-a1", "agt:a", "1", 3600), t(1)))
            .unwrap();
        let a = s.apply(&Entry::extend("sbx-a1", t(7200), t(10))).unwrap();
        assert_eq!(a.entry.amount(), credits("1"));
        let err = s
            .apply(&Entry::extend("sbx-a1", t(4 * 3600), t(11)))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InsufficientCredits);
        assert!(err.message().contains("needs 2 ") && err.message().contains("has 1 available"));
        s.apply(&Entry::void("sbx-a1", t(12))).unwrap();
        assert_eq!(s.account(&actor("agt:a")).available, credits("3"));
        assert_eq!(
            s.apply(&Entry::extend("sbx-a1", t(9000), t(13)))
                .unwrap_err()
                .kind(),
            ErrorKind::Conflict
        );
        assert_eq!(
            s.apply(&Entry::settle("sbx-zz", 1, t(13)))
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn ids_are_derived() {
        let mut s = funded("3");
        let mut e = Entry::void("sbx-a1", t(1));
        e.id = "void:sbx-other".into();
        assert_eq!(s.apply(&e).unwrap_err().kind(), ErrorKind::InvalidInput);
        let mut g = Entry::grant(&actor("agt:a"), credits("1"), &actor("adm:ops"), "x", t(1));
        g.id = "grant:".into();
        assert_eq!(s.apply(&g).unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn reconcile_settles_ended_and_voids_failed_and_missing() {
        let mut s = funded("10");
        for sbx in ["sbx-live", "sbx-ended", "sbx-failed", "sbx-gone"] {
            s.apply(&Entry::hold(&hold_req(sbx, "agt:a", "1", 3600), t(1)))
                .unwrap();
        }
        let fate = |id: &str| match id {
            "sbx-live" => Fate::Live,
            "sbx-ended" => Fate::Ended { seconds: 1800 },
            "sbx-failed" => Fate::Failed,
            _ => Fate::Missing,
        };
        let todo = s.reconcile_entries(&fate, t(5000));
        let ids: Vec<&str> = todo.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            ["settle:sbx-ended", "void:sbx-failed", "void:sbx-gone"]
        );
        for e in &todo {
            s.apply(e).unwrap();
        }
        let acc = s.account(&actor("agt:a"));
        assert_eq!(
            (acc.available, acc.held, acc.spent),
            (credits("8.5"), credits("1"), credits("0.5"))
        );
        assert!(check(&s).is_ok());
    }

    #[test]
    fn check_finds_what_apply_would_refuse() {
        // Entries written around the rules (by hand, or a faulty build).
        let mut s = funded("1");
        let mut hold = Entry::hold(&hold_req("sbx-a1", "agt:a", "5", 3600), t(1));
        hold.at = t(1);
        s.index.insert(hold.id.clone(), s.entries.len());
        s.entries.push(hold);
        let mut settle = Entry::settle("sbx-a1", 3600, t(2));
        if let EntryKind::Settle { amount, .. } = &mut settle.kind {
            *amount = credits("7");
        }
        s.entries.push(settle.clone());
        let mut twice = Entry::void("sbx-a1", t(3));
        twice.id = "void:sbx-a1".into();
        s.entries.push(twice);
        s.entries.push(Entry::grant(
            &actor("agt:a"),
            credits("1"),
            &actor("agt:a"),
            "self",
            t(4),
        ));
        let report = check(&s);
        let rules: Vec<String> = report
            .violations
            .iter()
            .map(|v| {
                serde_json::to_value(v).unwrap()["rule"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        for rule in [
            "negative_balance",
            "settle_exceeds_hold",
            "hold_resolved_twice",
            "grant_by_non_admin",
            "account_mismatch",
        ] {
            assert!(
                rules.iter().any(|r| r == rule),
                "{rule} missing from {rules:?}"
            );
        }
        for v in &report.violations {
            assert!(!v.to_string().is_empty());
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Grant {
            by: usize,
            to: usize,
            amount: i64,
            key: usize,
        },
        Hold {
            sbx: usize,
            who: usize,
            price: i64,
            ttl: i64,
        },
        Extend {
            sbx: usize,
            to: i64,
        },
        Settle {
            sbx: usize,
            seconds: u64,
        },
        Void {
            sbx: usize,
        },
        /// Apply again an entry tried before (a retry, of a success or of a
        /// refusal).
        Retry {
            pick: usize,
        },
    }

    const ACTORS: [&str; 4] = ["adm:ops", "agt:a", "agt:b", "atm:c"];

    fn op() -> impl Strategy<Value = Op> {
        // Mostly valid operations, so that sequences get far; invalid ones
        // (non-adm grants, non-positive amounts, unknown holds) mixed in.
        let by = prop_oneof![3 => Just(0usize), 1 => 1..4usize];
        prop_oneof![
            3 => (by, 0..4usize, -100_000i64..20_000_000, 0..6usize)
                .prop_map(|(by, to, amount, key)| Op::Grant { by, to, amount, key }),
            4 => (0..6usize, 0..4usize, -10i64..3_000_000, -60i64..7200)
                .prop_map(|(sbx, who, price, ttl)| Op::Hold { sbx, who, price, ttl }),
            2 => (0..6usize, -600i64..14_400).prop_map(|(sbx, to)| Op::Extend { sbx, to }),
            3 => (0..6usize, 0u64..20_000).prop_map(|(sbx, seconds)| Op::Settle { sbx, seconds }),
            2 => (0..6usize).prop_map(|sbx| Op::Void { sbx }),
            2 => any::<usize>().prop_map(|pick| Op::Retry { pick }),
        ]
    }

    fn entry_for(op: &Op, step: i64, tried: &[Entry]) -> Option<Entry> {
        let sbx = |i: &usize| format!("sbx-p{i}");
        let at = t(step);
        Some(match op {
            Op::Grant {
                by,
                to,
                amount,
                key,
            } => Entry::grant(
                &actor(ACTORS[*to]),
                Micros(*amount),
                &actor(ACTORS[*by]),
                &format!("key{key}"),
                at,
            ),
            Op::Hold {
                sbx: i,
                who,
                price,
                ttl,
            } => {
                let mut req = hold_req(&sbx(i), ACTORS[*who], "0", 0);
                req.price_per_hour = Micros(*price);
                req.created_at = at;
                req.expires_at = at + chrono::Duration::seconds(*ttl);
                Entry::hold(&req, at)
            }
            Op::Extend { sbx: i, to } => Entry::extend(&sbx(i), t(*to), at),
            Op::Settle { sbx: i, seconds } => Entry::settle(&sbx(i), *seconds, at),
            Op::Void { sbx: i } => Entry::void(&sbx(i), at),
            Op::Retry { pick } => {
                if tried.is_empty() {
                    return None;
                }
                tried[pick % tried.len()].clone()
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn invariants_hold_and_replay_agrees(ops in proptest::collection::vec(op(), 1..120)) {
            let mut state = LedgerState::new();
            let mut tried: Vec<Entry> = Vec::new();
            for (step, op) in ops.iter().enumerate() {
                let Some(entry) = entry_for(op, step as i64, &tried) else { continue };
                let before = state.clone();
                match state.apply(&entry) {
                    Ok(applied) => {
                        if applied.duplicate {
                            prop_assert_eq!(&state, &before, "a duplicate changes nothing");
                            prop_assert_eq!(Some(&applied.entry), before.get(&entry.id));
                        } else {
                            prop_assert_eq!(state.entries().last(), Some(&applied.entry));
                            // Settles never exceed their hold.
                            if let EntryKind::Settle { sandbox_id, amount, .. } = &applied.entry.kind {
                                prop_assert!(*amount <= before.hold(sandbox_id).unwrap().amount);
                            }
                        }
                    }
                    Err(e) => {
                        prop_assert_eq!(&state, &before, "a refused entry changes nothing");
                        if e.kind() == ErrorKind::InsufficientCredits {
                            prop_assert!(e.message().contains("available"));
                        }
                    }
                }
                tried.push(entry);
                let report = check(&state);
                prop_assert!(report.is_ok(), "after {:?}: {:?}", op, report.violations);
                for acc in state.accounts().values() {
                    prop_assert!(acc.available >= Micros::ZERO && acc.held >= Micros::ZERO);
                    prop_assert_eq!(acc.granted.0, acc.available.0 + acc.held.0 + acc.spent.0);
                }
            }
            // Replaying the applied entries rebuilds the same state.
            prop_assert_eq!(&LedgerState::replay(state.entries()), &state);
            // So does replaying every attempt (refusals refused again).
            let again = LedgerState::replay(&tried);
            prop_assert_eq!(again.entries(), state.entries());
            prop_assert_eq!(again.accounts(), state.accounts());
            // And the entries survive the file format.
            for e in state.entries() {
                let line = serde_json::to_string(e).unwrap();
                prop_assert!(!line.contains('\n'));
                let back: Entry = serde_json::from_str(&line).unwrap();
                prop_assert_eq!(&back, e);
            }
        }
    }
}
