//! The ledger's invariant check: recompute every balance and hold from the
//! entries alone and list each broken invariant ([`Violation`]): no balance
//! below zero, granted = available + held + spent, a hold resolved at most
//! once, a settle never above its hold. Pure, like [`crate::state`], whose
//! rules it checks from the outside.

use std::collections::BTreeMap;
use std::fmt;

use sandboxer_core::credits::Micros;
use sandboxer_core::model::Actor;
use serde::Serialize;

use crate::state::*;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Violation {
    /// A balance went below zero (after `entry`, or in the final accounts).
    NegativeBalance {
        actor: Actor,
        field: String,
        value: Micros,
        entry: String,
    },
    /// `granted != available + held + spent`.
    Unbalanced { actor: Actor, account: Account },
    /// The accounts kept while applying differ from a fresh recomputation
    /// from the entries.
    AccountMismatch {
        actor: Actor,
        recorded: Account,
        recomputed: Account,
    },
    /// More than one settle or void for one hold.
    HoldResolvedTwice {
        sandbox_id: String,
        entries: Vec<String>,
    },
    /// A settle spent more than its hold held.
    SettleExceedsHold {
        sandbox_id: String,
        held: Micros,
        settled: Micros,
    },
    /// A grant by an actor who is not `adm:`.
    GrantByNonAdmin { entry: String, by: Actor },
    /// An entry that refers to no hold, or to one already resolved, or a
    /// second hold for one sandbox.
    Dangling { entry: String, why: String },
    /// A line of the file that the rules refused when read back.
    Rejected {
        line: usize,
        id: String,
        message: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::NegativeBalance {
                actor,
                field,
                value,
                entry,
            } => write!(
                f,
                "{actor}: {field} is {value} (below zero) after `{entry}`"
            ),
            Violation::Unbalanced { actor, account: a } => write!(
                f,
                "{actor}: granted {} != available {} + held {} + spent {}",
                a.granted, a.available, a.held, a.spent
            ),
            Violation::AccountMismatch {
                actor,
                recorded: r,
                recomputed: c,
            } => write!(
                f,
                "{actor}: the balance kept ({}/{}/{}/{} granted/available/held/spent) differs from \
                 the entries ({}/{}/{}/{})",
                r.granted, r.available, r.held, r.spent, c.granted, c.available, c.held, c.spent
            ),
            Violation::HoldResolvedTwice {
                sandbox_id,
                entries,
            } => write!(
                f,
                "the hold of {sandbox_id} is resolved more than once: {}",
                entries.join(", ")
            ),
            Violation::SettleExceedsHold {
                sandbox_id,
                held,
                settled,
            } => write!(
                f,
                "the settle of {sandbox_id} spends {settled}, more than the {held} held"
            ),
            Violation::GrantByNonAdmin { entry, by } => {
                write!(f, "`{entry}` is a grant by {by}, who is not an adm actor")
            }
            Violation::Dangling { entry, why } => write!(f, "`{entry}`: {why}"),
            Violation::Rejected { line, id, message } => {
                write!(f, "line {line} (`{id}`) breaks the rules: {message}")
            }
        }
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct CheckReport {
    pub entries: usize,
    pub actors: usize,
    pub open_holds: usize,
    pub violations: Vec<Violation>,
}

impl CheckReport {
    /// No invariant is broken.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Check every invariant of `state`, by recomputing the balances from its
/// entries independently of [`LedgerState::apply`]:
///
/// - no balance below zero, after any entry;
/// - for every actor, `granted = available + held + spent`, and the kept
///   balance equals the recomputed one;
/// - a hold is resolved (settled or voided) at most once;
/// - a settle never exceeds its hold;
/// - only `adm:` actors grant;
/// - every line of the file obeyed the rules.
pub fn check(state: &LedgerState) -> CheckReport {
    struct H {
        actor: Actor,
        held: Micros,
        attempt: u32,
        voided: bool,
        paused: bool,
        resolutions: Vec<String>,
    }
    let mut violations = Vec::new();
    let mut accounts: BTreeMap<Actor, Account> = BTreeMap::new();
    let mut holds: BTreeMap<String, H> = BTreeMap::new();
    for e in state.entries() {
        match &e.kind {
            EntryKind::Grant { actor, amount, by } => {
                if !by.is_admin() {
                    violations.push(Violation::GrantByNonAdmin {
                        entry: e.id.clone(),
                        by: by.clone(),
                    });
                }
                touch(
                    &mut accounts,
                    actor,
                    &e.id,
                    amount.0 as i128,
                    0,
                    0,
                    &mut violations,
                );
            }
            EntryKind::Hold {
                sandbox_id,
                actor,
                amount,
                attempt,
                ..
            } => {
                // A fallback route's hold follows the voided hold of the
                // route before it; any other second hold is an error.
                let follows = match holds.get(sandbox_id) {
                    None => *attempt == 1,
                    Some(h) => h.voided && h.resolutions.len() == 1 && *attempt == h.attempt + 1,
                };
                if !follows {
                    violations.push(Violation::Dangling {
                        entry: e.id.clone(),
                        why: format!("a second hold for {sandbox_id}"),
                    });
                    continue;
                }
                holds.insert(
                    sandbox_id.clone(),
                    H {
                        actor: actor.clone(),
                        held: *amount,
                        attempt: *attempt,
                        voided: false,
                        paused: false,
                        resolutions: Vec::new(),
                    },
                );
                touch(
                    &mut accounts,
                    actor,
                    &e.id,
                    0,
                    amount.0 as i128,
                    0,
                    &mut violations,
                );
            }
            EntryKind::Extend {
                sandbox_id, amount, ..
            } => match holds.get_mut(sandbox_id) {
                Some(h) if h.resolutions.is_empty() => {
                    h.held = Micros(h.held.0.saturating_add(amount.0));
                    let actor = h.actor.clone();
                    touch(
                        &mut accounts,
                        &actor,
                        &e.id,
                        0,
                        amount.0 as i128,
                        0,
                        &mut violations,
                    );
                }
                Some(_) => violations.push(Violation::Dangling {
                    entry: e.id.clone(),
                    why: format!("extends the hold of {sandbox_id} after it was resolved"),
                }),
                None => violations.push(Violation::Dangling {
                    entry: e.id.clone(),
                    why: format!("{sandbox_id} has no hold"),
                }),
            },
            EntryKind::Storage { actor, amount, .. } => touch(
                &mut accounts,
                actor,
                &e.id,
                0,
                0,
                amount.0 as i128,
                &mut violations,
            ),
            EntryKind::Pause {
                sandbox_id,
                amount,
                held,
                ..
            }
            | EntryKind::Resume {
                sandbox_id,
                amount,
                held,
                ..
            } => {
                let pausing = matches!(e.kind, EntryKind::Pause { .. });
                let Some(h) = holds.get_mut(sandbox_id) else {
                    violations.push(Violation::Dangling {
                        entry: e.id.clone(),
                        why: format!("{sandbox_id} has no hold"),
                    });
                    continue;
                };
                if !h.resolutions.is_empty() || h.paused == pausing {
                    violations.push(Violation::Dangling {
                        entry: e.id.clone(),
                        why: format!(
                            "{} the hold of {sandbox_id} when it is {}",
                            if pausing { "pauses" } else { "resumes" },
                            if !h.resolutions.is_empty() {
                                "resolved"
                            } else if h.paused {
                                "paused"
                            } else {
                                "running"
                            }
                        ),
                    });
                    continue;
                }
                if *amount > h.held {
                    violations.push(Violation::SettleExceedsHold {
                        sandbox_id: sandbox_id.clone(),
                        held: h.held,
                        settled: *amount,
                    });
                }
                let (actor, before) = (h.actor.clone(), h.held);
                h.held = *held;
                h.paused = pausing;
                touch(
                    &mut accounts,
                    &actor,
                    &e.id,
                    0,
                    held.0 as i128 - before.0 as i128,
                    amount.0 as i128,
                    &mut violations,
                );
            }
            EntryKind::Settle { sandbox_id, .. } | EntryKind::Void { sandbox_id, .. } => {
                let (spent, voids) = match &e.kind {
                    EntryKind::Settle { amount, .. } => (*amount, None),
                    EntryKind::Void { attempt, .. } => (Micros::ZERO, Some(*attempt)),
                    _ => unreachable!("matched above"),
                };
                let Some(h) = holds.get_mut(sandbox_id) else {
                    violations.push(Violation::Dangling {
                        entry: e.id.clone(),
                        why: format!("{sandbox_id} has no hold"),
                    });
                    continue;
                };
                if voids.is_some_and(|a| a != h.attempt) {
                    violations.push(Violation::Dangling {
                        entry: e.id.clone(),
                        why: format!("voids a hold of {sandbox_id} that is not its current one"),
                    });
                    continue;
                }
                h.voided = voids.is_some();
                h.resolutions.push(e.id.clone());
                if h.resolutions.len() > 1 {
                    continue;
                }
                if spent > h.held {
                    violations.push(Violation::SettleExceedsHold {
                        sandbox_id: sandbox_id.clone(),
                        held: h.held,
                        settled: spent,
                    });
                }
                let (actor, held) = (h.actor.clone(), h.held);
                touch(
                    &mut accounts,
                    &actor,
                    &e.id,
                    0,
                    -(held.0 as i128),
                    spent.0 as i128,
                    &mut violations,
                );
            }
        }
    }
    for (sandbox_id, h) in &holds {
        if h.resolutions.len() > 1 {
            violations.push(Violation::HoldResolvedTwice {
                sandbox_id: sandbox_id.clone(),
                entries: h.resolutions.clone(),
            });
        }
    }
    let actors: std::collections::BTreeSet<&Actor> =
        accounts.keys().chain(state.accounts().keys()).collect();
    for actor in &actors {
        let recorded = state.account(actor);
        let recomputed = accounts.get(*actor).copied().unwrap_or_default();
        for (field, value) in [
            ("granted", recorded.granted),
            ("available", recorded.available),
            ("held", recorded.held),
            ("spent", recorded.spent),
        ] {
            if value < Micros::ZERO {
                violations.push(Violation::NegativeBalance {
                    actor: (*actor).clone(),
                    field: field.into(),
                    value,
                    entry: "(the balance kept)".into(),
                });
            }
        }
        let sum = recorded.available.0 as i128 + recorded.held.0 as i128 + recorded.spent.0 as i128;
        if recorded.granted.0 as i128 != sum {
            violations.push(Violation::Unbalanced {
                actor: (*actor).clone(),
                account: recorded,
            });
        }
        if recorded != recomputed {
            violations.push(Violation::AccountMismatch {
                actor: (*actor).clone(),
                recorded,
                recomputed,
            });
        }
    }
    for r in state.rejected() {
        violations.push(Violation::Rejected {
            line: r.line,
            id: r.id.clone(),
            message: r.message.clone(),
        });
    }
    CheckReport {
        entries: state.entries().len(),
        actors: actors.len(),
        open_holds: state.holds().filter(|h| h.state.is_unresolved()).count(),
        violations,
    }
}

/// Move an actor's recomputed balance by the given deltas (i128, so no sum
/// overflows; clamped back into Micros) and flag what went below zero.
#[allow(clippy::too_many_arguments)]
fn touch(
    accounts: &mut BTreeMap<Actor, Account>,
    actor: &Actor,
    entry: &str,
    granted: i128,
    held: i128,
    spent: i128,
    violations: &mut Vec<Violation>,
) {
    let a = accounts.entry(actor.clone()).or_default();
    let m = |v: i128| Micros(v.clamp(i64::MIN as i128, i64::MAX as i128) as i64);
    a.granted = m(a.granted.0 as i128 + granted);
    a.held = m(a.held.0 as i128 + held);
    a.spent = m(a.spent.0 as i128 + spent);
    a.available = m(a.granted.0 as i128 - a.held.0 as i128 - a.spent.0 as i128);
    for (field, value) in [
        ("available", a.available),
        ("held", a.held),
        ("spent", a.spent),
    ] {
        if value < Micros::ZERO {
            violations.push(Violation::NegativeBalance {
                actor: actor.clone(),
                field: field.into(),
                value,
                entry: entry.to_string(),
            });
        }
    }
}
