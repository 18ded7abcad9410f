//! The computation's state machine (seed 001, agent-api.md §4) as an
//! explicit transition table.
//!
//! Unlike the Go agent's, this machine is plain data: [`StateMachine::fire`]
//! looks the (state, event) pair up in [`TRANSITIONS`] and either moves or
//! returns [`InvalidTransition`] to the caller. Nothing runs
//! asynchronously, nothing sleeps, no event is dropped, and an invalid
//! event leaves the machine as it was.
//!
//! | from | event | guard | to |
//! | --- | --- | --- | --- |
//! | Idle | Start | | ReceivingManifest |
//! | ReceivingManifest | ManifestReceived | | ReceivingAlgorithm |
//! | ReceivingAlgorithm | AlgorithmReceived | datasets pending | ReceivingData |
//! | ReceivingAlgorithm | AlgorithmReceived | no dataset pending | Running |
//! | ReceivingData | DataReceived | | Running |
//! | Running | RunComplete | | ConsumingResults |
//! | Running | RunFailed | | Failed |
//! | ConsumingResults | ResultsConsumed | | Complete |
//! | every state | Stop | | ReceivingManifest |
//!
//! `Stop` also advances the [generation](StateMachine::generation), so that
//! work begun before it (an upload, a run) can tell that its computation is
//! gone and must not touch the new one.

use std::fmt;

/// The agent's states; [`State::as_str`] is reported verbatim in
/// `AgentStateRes.state` and as `AgentEvent.event_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Before start.
    Idle,
    /// Waiting for a manifest.
    ReceivingManifest,
    /// Waiting for the algorithm.
    ReceivingAlgorithm,
    /// Waiting for the datasets.
    ReceivingData,
    /// The runner is running the algorithm.
    Running,
    /// Results are ready for the consumers.
    ConsumingResults,
    /// Every consumer has fetched the results.
    Complete,
    /// The run failed; `Result` returns its error.
    Failed,
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 8] = [
        State::Idle,
        State::ReceivingManifest,
        State::ReceivingAlgorithm,
        State::ReceivingData,
        State::Running,
        State::ConsumingResults,
        State::Complete,
        State::Failed,
    ];

    /// The name, as the Go agent reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::ReceivingManifest => "ReceivingManifest",
            State::ReceivingAlgorithm => "ReceivingAlgorithm",
            State::ReceivingData => "ReceivingData",
            State::Running => "Running",
            State::ConsumingResults => "ConsumingResults",
            State::Complete => "Complete",
            State::Failed => "Failed",
        }
    }

    /// The status of the event sent on entering this state (agent-api.md
    /// §4; the Go agent sends none for ReceivingManifest, which here is
    /// `InProgress` like the other receiving states).
    pub fn entry_status(self) -> EventStatus {
        match self {
            State::Idle => EventStatus::IdleState,
            State::ReceivingManifest | State::ReceivingAlgorithm | State::ReceivingData => {
                EventStatus::InProgress
            }
            State::Running => EventStatus::Starting,
            State::ConsumingResults => EventStatus::Ready,
            State::Complete => EventStatus::Completed,
            State::Failed => EventStatus::Failed,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What moves the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The agent started.
    Start,
    /// A valid manifest was accepted.
    ManifestReceived,
    /// The algorithm was accepted.
    AlgorithmReceived,
    /// The last pending dataset was accepted.
    DataReceived,
    /// The runner finished and the results are zipped.
    RunComplete,
    /// The run (or zipping its results) failed.
    RunFailed,
    /// Every declared consumer has fetched the results.
    ResultsConsumed,
    /// The management service stopped the computation.
    Stop,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// `AgentEvent.status` values (agent-api.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventStatus {
    /// `IdleState`.
    IdleState,
    /// `InProgress`.
    InProgress,
    /// `Ready`.
    Ready,
    /// `Completed`.
    Completed,
    /// `Terminated`.
    Terminated,
    /// `Warning`.
    Warning,
    /// `Starting`.
    Starting,
    /// `Failed`.
    Failed,
    /// `Stopped` (the `Stopped` event of StopComputation).
    Stopped,
}

impl EventStatus {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::IdleState => "IdleState",
            EventStatus::InProgress => "InProgress",
            EventStatus::Ready => "Ready",
            EventStatus::Completed => "Completed",
            EventStatus::Terminated => "Terminated",
            EventStatus::Warning => "Warning",
            EventStatus::Starting => "Starting",
            EventStatus::Failed => "Failed",
            EventStatus::Stopped => "Stopped",
        }
    }
}

/// A condition on the computation that picks between rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// No condition.
    Always,
    /// At least one declared dataset is still to be uploaded.
    DatasetsPending,
    /// Every declared dataset is in (or none is declared).
    NoDatasetsPending,
}

/// What the guards look at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Context {
    /// Whether any declared dataset is still to be uploaded.
    pub datasets_pending: bool,
}

impl Guard {
    fn holds(self, ctx: Context) -> bool {
        match self {
            Guard::Always => true,
            Guard::DatasetsPending => ctx.datasets_pending,
            Guard::NoDatasetsPending => !ctx.datasets_pending,
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// The state the row applies in.
    pub from: State,
    /// The event.
    pub event: Event,
    /// The condition.
    pub guard: Guard,
    /// The next state.
    pub to: State,
}

const fn row(from: State, event: Event, guard: Guard, to: State) -> Row {
    Row {
        from,
        event,
        guard,
        to,
    }
}

use Event as E;
use Guard as G;
use State as S;

/// The whole machine (see the module documentation for it as a table).
pub const TRANSITIONS: &[Row] = &[
    row(S::Idle, E::Start, G::Always, S::ReceivingManifest),
    row(
        S::ReceivingManifest,
        E::ManifestReceived,
        G::Always,
        S::ReceivingAlgorithm,
    ),
    row(
        S::ReceivingAlgorithm,
        E::AlgorithmReceived,
        G::DatasetsPending,
        S::ReceivingData,
    ),
    row(
        S::ReceivingAlgorithm,
        E::AlgorithmReceived,
        G::NoDatasetsPending,
        S::Running,
    ),
    row(S::ReceivingData, E::DataReceived, G::Always, S::Running),
    row(S::Running, E::RunComplete, G::Always, S::ConsumingResults),
    row(S::Running, E::RunFailed, G::Always, S::Failed),
    row(
        S::ConsumingResults,
        E::ResultsConsumed,
        G::Always,
        S::Complete,
    ),
    row(S::Idle, E::Stop, G::Always, S::ReceivingManifest),
    row(
        S::ReceivingManifest,
        E::Stop,
        G::Always,
        S::ReceivingManifest,
    ),
    row(
        S::ReceivingAlgorithm,
        E::Stop,
        G::Always,
        S::ReceivingManifest,
    ),
    row(S::ReceivingData, E::Stop, G::Always, S::ReceivingManifest),
    row(S::Running, E::Stop, G::Always, S::ReceivingManifest),
    row(
        S::ConsumingResults,
        E::Stop,
        G::Always,
        S::ReceivingManifest,
    ),
    row(S::Complete, E::Stop, G::Always, S::ReceivingManifest),
    row(S::Failed, E::Stop, G::Always, S::ReceivingManifest),
];

/// An event the current state has no row for; the machine did not move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event {event} is not valid in state {state}")]
pub struct InvalidTransition {
    /// The state the machine is (still) in.
    pub state: State,
    /// The event refused.
    pub event: Event,
}

/// A move the machine made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Before.
    pub from: State,
    /// The event.
    pub event: Event,
    /// After.
    pub to: State,
    /// The generation after the move.
    pub generation: u64,
}

/// The current state and generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateMachine {
    state: State,
    generation: u64,
}

impl Default for StateMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl StateMachine {
    /// A machine in `Idle`, generation 0.
    pub fn new() -> Self {
        Self {
            state: State::Idle,
            generation: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Counts `Stop`s: work tagged with an older generation belongs to a
    /// stopped computation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The row that `event` selects in the current state, if any.
    pub fn lookup(&self, event: Event, ctx: Context) -> Option<&'static Row> {
        TRANSITIONS
            .iter()
            .find(|r| r.from == self.state && r.event == event && r.guard.holds(ctx))
    }

    /// Applies `event`, or returns the error and stays.
    pub fn fire(&mut self, event: Event, ctx: Context) -> Result<Transition, InvalidTransition> {
        let row = self.lookup(event, ctx).ok_or(InvalidTransition {
            state: self.state,
            event,
        })?;
        let from = self.state;
        self.state = row.to;
        if event == Event::Stop {
            self.generation += 1;
        }
        Ok(Transition {
            from,
            event,
            to: row.to,
            generation: self.generation,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ALL_EVENTS: [Event; 8] = [
        E::Start,
        E::ManifestReceived,
        E::AlgorithmReceived,
        E::DataReceived,
        E::RunComplete,
        E::RunFailed,
        E::ResultsConsumed,
        E::Stop,
    ];

    fn pending(p: bool) -> Context {
        Context {
            datasets_pending: p,
        }
    }

    #[test]
    fn the_lifecycle_of_agent_api_4() {
        let mut m = StateMachine::new();
        let walk = [
            (E::Start, S::ReceivingManifest),
            (E::ManifestReceived, S::ReceivingAlgorithm),
            (E::AlgorithmReceived, S::ReceivingData),
            (E::DataReceived, S::Running),
            (E::RunComplete, S::ConsumingResults),
            (E::ResultsConsumed, S::Complete),
        ];
        for (e, to) in walk {
            let t = m.fire(e, pending(true)).unwrap();
            assert_eq!(t.to, to);
            assert_eq!(m.state(), to);
        }
        assert_eq!(m.generation(), 0);
    }

    #[test]
    fn without_datasets_the_algorithm_starts_the_run() {
        let mut m = StateMachine::new();
        m.fire(E::Start, pending(false)).unwrap();
        m.fire(E::ManifestReceived, pending(false)).unwrap();
        assert_eq!(
            m.fire(E::AlgorithmReceived, pending(false)).unwrap().to,
            S::Running
        );
    }

    #[test]
    fn an_invalid_event_is_an_error_and_the_machine_stays() {
        let mut m = StateMachine::new();
        m.fire(E::Start, pending(true)).unwrap();
        let before = m.clone();
        let e = m.fire(E::RunComplete, pending(true)).unwrap_err();
        assert_eq!(
            e,
            InvalidTransition {
                state: S::ReceivingManifest,
                event: E::RunComplete
            }
        );
        assert_eq!(
            e.to_string(),
            "event RunComplete is not valid in state ReceivingManifest"
        );
        assert_eq!(m, before);
        // It still works afterwards.
        assert_eq!(
            m.fire(E::ManifestReceived, pending(true)).unwrap().to,
            S::ReceivingAlgorithm
        );
    }

    #[test]
    fn stop_works_in_every_state_and_advances_the_generation() {
        for (i, s) in State::ALL.iter().enumerate() {
            let mut m = StateMachine {
                state: *s,
                generation: i as u64,
            };
            let t = m.fire(E::Stop, pending(true)).unwrap();
            assert_eq!(t.to, S::ReceivingManifest);
            assert_eq!(m.generation(), i as u64 + 1);
        }
    }

    #[test]
    fn complete_and_failed_have_no_exit_but_stop() {
        for s in [S::Complete, S::Failed] {
            for e in ALL_EVENTS {
                for p in [true, false] {
                    let m = StateMachine {
                        state: s,
                        generation: 0,
                    };
                    assert_eq!(m.lookup(e, pending(p)).is_some(), e == E::Stop, "{s} {e}");
                }
            }
        }
    }

    #[test]
    fn the_table_is_deterministic() {
        // At most one row matches any (state, event, context).
        for s in State::ALL {
            for e in ALL_EVENTS {
                for p in [true, false] {
                    let n = TRANSITIONS
                        .iter()
                        .filter(|r| r.from == s && r.event == e && r.guard.holds(pending(p)))
                        .count();
                    assert!(n <= 1, "{s} {e} pending={p}: {n} rows");
                }
            }
        }
    }

    #[test]
    fn names_are_the_go_agents() {
        let names: Vec<_> = State::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "Idle",
                "ReceivingManifest",
                "ReceivingAlgorithm",
                "ReceivingData",
                "Running",
                "ConsumingResults",
                "Complete",
                "Failed"
            ]
        );
    }
}
