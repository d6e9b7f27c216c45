//! The lifecycle state machine, pure: `step(state, event) -> (state, actions)`.
//!
//! ```text
//! provisioning -> ready -> destroying -> destroyed(reason)
//!      |  \______/ ^ \_______^   ^
//!      v          |  v            |
//!    failed   resuming  pausing --+-- (destroy from pausing, paused,
//!      |          ^  |            |    resuming)
//!      |          paused ---------+
//!      +--------(destroy)---------^
//! ```
//!
//! `pausing` and `resuming` are the steps while the extension works: a
//! failed pause goes back to `ready`, a failed resume back to `paused`, and
//! a pause or resume asked again of a record left in them (its process
//! died) tries again.
//!
//! A record's state changes only through [`step`] (see
//! `Sandbox::apply`), so an illegal transition cannot be written.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The state names consumers see in `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Provisioning,
    Ready,
    Pausing,
    Paused,
    Resuming,
    Destroying,
    Destroyed,
    Failed,
}

impl State {
    /// Destroyed or failed: nothing more happens to it.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Destroyed | State::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Provisioning => "provisioning",
            State::Ready => "ready",
            State::Pausing => "pausing",
            State::Paused => "paused",
            State::Resuming => "resuming",
            State::Destroying => "destroying",
            State::Destroyed => "destroyed",
            State::Failed => "failed",
        }
    }
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 8] = [
        State::Provisioning,
        State::Ready,
        State::Pausing,
        State::Paused,
        State::Resuming,
        State::Destroying,
        State::Destroyed,
        State::Failed,
    ];

    /// The state names, comma-separated (for messages).
    pub fn names() -> String {
        State::ALL.map(State::as_str).join(", ")
    }
}

impl std::str::FromStr for State {
    type Err = String;
    /// A state by its name; the error says which names there are.
    fn from_str(s: &str) -> Result<State, String> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a state; states: {}", State::names()))
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a sandbox ended (or is ending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndReason {
    /// Someone asked for it.
    Destroyed,
    /// Its TTL ran out.
    Expired,
    /// The reaper found it stale (stuck, ghost or orphan).
    Reaped,
    /// `recreate` replaced it.
    Recreated,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Destroyed => "destroyed",
            EndReason::Expired => "expired",
            EndReason::Reaped => "reaped",
            EndReason::Recreated => "recreated",
        }
    }
}

/// The full lifecycle position of a sandbox. Serialized as `state` and
/// `reason` fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Repr", into = "Repr")]
pub enum Lifecycle {
    Provisioning,
    Ready,
    /// The extension is pausing it.
    Pausing,
    /// Paused: not running, kept until its paused retention ends.
    Paused,
    /// The extension is resuming it.
    Resuming,
    Destroying(EndReason),
    Destroyed(EndReason),
    /// Provisioning failed (after rollback); the message says at which step.
    Failed(String),
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The extension confirmed reachability.
    Ready,
    /// Provisioning failed and was rolled back.
    ProvisionFailed(String),
    /// Tear down, for this reason.
    Destroy(EndReason),
    /// The extension finished tearing down.
    TornDown,
    /// Pause it (from `ready`; again from `pausing`).
    Pause,
    /// The extension paused it.
    Paused,
    /// The pause failed; it runs on.
    PauseFailed,
    /// Resume it (from `paused`; again from `resuming`).
    Resume,
    /// The extension resumed it.
    Resumed,
    /// The resume failed; it stays paused.
    ResumeFailed,
}

/// What the driver must do after a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Call the extension's teardown.
    Teardown,
    /// Settle a credits hold by the seconds the sandbox existed.
    SettleCredits,
    /// Release a credits hold entirely.
    VoidCredits,
}

/// An event that is not allowed in a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IllegalTransition {
    pub from: State,
    pub event: String,
}

impl fmt::Display for IllegalTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {} a sandbox that is {}", self.event, self.from)
    }
}

impl std::error::Error for IllegalTransition {}

impl Event {
    fn verb(&self) -> &'static str {
        match self {
            Event::Ready => "mark ready",
            Event::ProvisionFailed(_) => "mark failed",
            Event::Destroy(_) => "destroy",
            Event::TornDown => "finish tearing down",
            Event::Pause => "pause",
            Event::Paused => "mark paused",
            Event::PauseFailed => "end the pause of",
            Event::Resume => "resume",
            Event::Resumed => "mark resumed",
            Event::ResumeFailed => "end the resume of",
        }
    }
}

/// The transition function. Total over (state, event): every pair either
/// moves or is an [`IllegalTransition`].
pub fn step(
    from: &Lifecycle,
    event: &Event,
) -> Result<(Lifecycle, Vec<Action>), IllegalTransition> {
    use Lifecycle as L;
    let next = match (from, event) {
        (L::Provisioning, Event::Ready) => (L::Ready, vec![]),
        (L::Provisioning, Event::ProvisionFailed(msg)) => {
            (L::Failed(msg.clone()), vec![Action::VoidCredits])
        }
        (
            L::Provisioning | L::Ready | L::Pausing | L::Paused | L::Resuming | L::Failed(_),
            Event::Destroy(r),
        ) => (L::Destroying(*r), vec![Action::Teardown]),
        (L::Ready | L::Pausing, Event::Pause) => (L::Pausing, vec![]),
        (L::Pausing, Event::Paused) => (L::Paused, vec![Action::SettleCredits]),
        (L::Pausing, Event::PauseFailed) => (L::Ready, vec![]),
        (L::Paused | L::Resuming, Event::Resume) => (L::Resuming, vec![]),
        (L::Resuming, Event::Resumed) => (L::Ready, vec![]),
        (L::Resuming, Event::ResumeFailed) => (L::Paused, vec![]),
        // A retried destroy of a sandbox already tearing down keeps the first
        // reason and tears down again (teardown is idempotent).
        (L::Destroying(r), Event::Destroy(_)) => (L::Destroying(*r), vec![Action::Teardown]),
        (L::Destroying(r), Event::TornDown) => (L::Destroyed(*r), vec![Action::SettleCredits]),
        _ => {
            return Err(IllegalTransition {
                from: from.state(),
                event: event.verb().to_string(),
            })
        }
    };
    Ok(next)
}

impl Lifecycle {
    pub fn state(&self) -> State {
        match self {
            Lifecycle::Provisioning => State::Provisioning,
            Lifecycle::Ready => State::Ready,
            Lifecycle::Pausing => State::Pausing,
            Lifecycle::Paused => State::Paused,
            Lifecycle::Resuming => State::Resuming,
            Lifecycle::Destroying(_) => State::Destroying,
            Lifecycle::Destroyed(_) => State::Destroyed,
            Lifecycle::Failed(_) => State::Failed,
        }
    }

    pub fn reason(&self) -> Option<String> {
        match self {
            Lifecycle::Provisioning
            | Lifecycle::Ready
            | Lifecycle::Pausing
            | Lifecycle::Paused
            | Lifecycle::Resuming => None,
            Lifecycle::Destroying(r) | Lifecycle::Destroyed(r) => Some(r.as_str().to_string()),
            Lifecycle::Failed(msg) => Some(format!("failed: {msg}")),
        }
    }

    /// Whether resources may exist for it (everything but destroyed).
    pub fn is_live(&self) -> bool {
        !matches!(self, Lifecycle::Destroyed(_))
    }

    /// Terminal states: destroyed and failed (failed may still be destroyed
    /// to clean up, but nothing else happens to it).
    pub fn is_terminal(&self) -> bool {
        matches!(self, Lifecycle::Destroyed(_) | Lifecycle::Failed(_))
    }
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
struct Repr {
    state: State,
    /// `destroyed`, `expired`, `reaped`, `recreated` or `failed: ...`
    #[serde(default)]
    reason: Option<String>,
}

/// The schema of what it serializes as: `state` and `reason`.
impl schemars::JsonSchema for Lifecycle {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Lifecycle".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <Repr as schemars::JsonSchema>::json_schema(generator)
    }
}

impl From<Lifecycle> for Repr {
    fn from(l: Lifecycle) -> Self {
        Repr {
            state: l.state(),
            reason: l.reason(),
        }
    }
}

impl TryFrom<Repr> for Lifecycle {
    type Error = String;
    fn try_from(r: Repr) -> Result<Self, String> {
        let end_reason = |r: Option<String>| -> Result<EndReason, String> {
            match r.as_deref() {
                Some("destroyed") => Ok(EndReason::Destroyed),
                Some("expired") => Ok(EndReason::Expired),
                Some("reaped") => Ok(EndReason::Reaped),
                Some("recreated") => Ok(EndReason::Recreated),
                other => Err(format!("unknown end reason {other:?}")),
            }
        };
        Ok(match r.state {
            State::Provisioning => Lifecycle::Provisioning,
            State::Ready => Lifecycle::Ready,
            State::Pausing => Lifecycle::Pausing,
            State::Paused => Lifecycle::Paused,
            State::Resuming => Lifecycle::Resuming,
            State::Destroying => Lifecycle::Destroying(end_reason(r.reason)?),
            State::Destroyed => Lifecycle::Destroyed(end_reason(r.reason)?),
            State::Failed => {
                let msg = r.reason.unwrap_or_default();
                Lifecycle::Failed(msg.strip_prefix("failed: ").unwrap_or(&msg).to_string())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reason() -> impl Strategy<Value = EndReason> {
        prop_oneof![
            Just(EndReason::Destroyed),
            Just(EndReason::Expired),
            Just(EndReason::Reaped),
            Just(EndReason::Recreated),
        ]
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Ready),
            "[a-z ]{0,12}".prop_map(Event::ProvisionFailed),
            reason().prop_map(Event::Destroy),
            Just(Event::TornDown),
            Just(Event::Pause),
            Just(Event::Paused),
            Just(Event::PauseFailed),
            Just(Event::Resume),
            Just(Event::Resumed),
            Just(Event::ResumeFailed),
        ]
    }

    /// The allowed edges between state names, written out by hand: the
    /// property below checks `step` never leaves this table.
    fn allowed(from: State, to: State) -> bool {
        use State::*;
        matches!(
            (from, to),
            (Provisioning, Ready)
                | (Provisioning, Failed)
                | (Provisioning, Destroying)
                | (Ready, Destroying)
                | (Ready, Pausing)
                | (Pausing, Pausing)
                | (Pausing, Paused)
                | (Pausing, Ready)
                | (Pausing, Destroying)
                | (Paused, Resuming)
                | (Paused, Destroying)
                | (Resuming, Resuming)
                | (Resuming, Ready)
                | (Resuming, Paused)
                | (Resuming, Destroying)
                | (Failed, Destroying)
                | (Destroying, Destroying)
                | (Destroying, Destroyed)
        )
    }

    /// Shortest way to destroyed from any state.
    fn drive_to_destroyed(mut l: Lifecycle) -> Lifecycle {
        for _ in 0..3 {
            if let Lifecycle::Destroyed(_) = l {
                break;
            }
            let ev = match l {
                Lifecycle::Destroying(_) => Event::TornDown,
                _ => Event::Destroy(EndReason::Destroyed),
            };
            l = step(&l, &ev)
                .expect("the way to destroyed is always open")
                .0;
        }
        l
    }

    proptest! {
        #[test]
        fn no_illegal_transition_is_reachable(events in proptest::collection::vec(event(), 0..40)) {
            let mut l = Lifecycle::Provisioning;
            for ev in &events {
                match step(&l, ev) {
                    Ok((next, actions)) => {
                        prop_assert!(allowed(l.state(), next.state()),
                            "{:?} --{:?}--> {:?} is not an allowed edge", l, ev, next);
                        if next.state() == State::Destroying && !matches!(l, Lifecycle::Destroying(_)) {
                            prop_assert!(actions.contains(&Action::Teardown));
                        }
                        l = next;
                    }
                    Err(e) => prop_assert_eq!(e.from, l.state()),
                }
                // Every state reached can still reach destroyed.
                prop_assert!(matches!(drive_to_destroyed(l.clone()), Lifecycle::Destroyed(_)));
            }
        }

        #[test]
        fn destroyed_is_final(r in reason(), ev in event()) {
            prop_assert!(step(&Lifecycle::Destroyed(r), &ev).is_err());
        }

        #[test]
        fn serde_round_trips(events in proptest::collection::vec(event(), 0..10)) {
            let mut l = Lifecycle::Provisioning;
            for ev in &events {
                if let Ok((next, _)) = step(&l, ev) { l = next; }
            }
            let json = serde_json::to_string(&l).unwrap();
            let back: Lifecycle = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, l);
        }
    }
}
