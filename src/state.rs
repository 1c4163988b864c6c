//! The migration state machine: the one place that says which states exist and which moves
//! between them are legal.
//!
//! `State` is what operators see (the API's `state` field); `Step` is finer-grained progress
//! inside `Running` and `CuttingOver`, for status lines and logs.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Accepted, waiting for a slot on its target.
    Queued,
    /// Inspecting, copying, or replaying.
    Running,
    /// Copy done and replay caught up; waiting for an operator's go to cut over.
    Postponed,
    CuttingOver,
    Completed,
    Failed,
    Cancelled,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Queued,
        State::Running,
        State::Postponed,
        State::CuttingOver,
        State::Completed,
        State::Failed,
        State::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Postponed => "postponed",
            State::CuttingOver => "cutting_over",
            State::Completed => "completed",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, State::Completed | State::Failed | State::Cancelled)
    }

    /// Whether `self -> next` is a legal move.
    pub fn can_move_to(self, next: State) -> bool {
        use State::*;
        match (self, next) {
            (s, n) if s == n => false,
            (s, _) if s.is_terminal() => false,
            // Failing and cancelling are always possible until the migration ended; a cancel
            // during the swap is refused by the engine, not here, because it depends on how far
            // the swap got.
            (_, Failed) | (_, Cancelled) => true,
            (Queued, Running) => true,
            (Running, Postponed) | (Running, CuttingOver) => true,
            (Postponed, CuttingOver) | (Postponed, Running) => true,
            // A cut-over attempt that gave up returns to waiting.
            (CuttingOver, Completed) | (CuttingOver, Running) | (CuttingOver, Postponed) => true,
            _ => false,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where inside its state a migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Pending,
    Inspecting,
    CreatingShadow,
    Copying,
    CatchingUp,
    WaitingForCutover,
    SwappingTables,
    CleaningUp,
    Done,
}

#[derive(Debug, thiserror::Error)]
#[error("a migration cannot go from {from} to {to}")]
pub struct InvalidTransition {
    pub from: State,
    pub to: State,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_are_final() {
        for t in [State::Completed, State::Failed, State::Cancelled] {
            for n in State::ALL {
                assert!(!t.can_move_to(n), "{t} -> {n}");
            }
        }
    }

    #[test]
    fn normal_path_and_shortcuts() {
        assert!(State::Queued.can_move_to(State::Running));
        assert!(State::Running.can_move_to(State::CuttingOver));
        assert!(State::Running.can_move_to(State::Postponed));
        assert!(State::Postponed.can_move_to(State::CuttingOver));
        assert!(State::CuttingOver.can_move_to(State::Completed));
        assert!(State::CuttingOver.can_move_to(State::Postponed));
        assert!(!State::Queued.can_move_to(State::Completed));
        assert!(!State::Running.can_move_to(State::Completed));
        assert!(!State::Queued.can_move_to(State::Postponed));
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
    }
}
