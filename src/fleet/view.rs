//! What the supervisor shows the edge: which backends are up (for routing) and each
//! program's state (for metrics). Updated by the supervisor whenever a program changes state.

use std::time::Instant;

use super::child::State;
use crate::manifest::{BindAddr, Program};

/// One ship or bay, as the metrics endpoint shows it.
#[derive(Debug, Clone)]
pub struct ShipView {
    pub name: String,
    pub group: String,
    /// `ship`, `job` or `bay`.
    pub kind: &'static str,
    /// `waiting`, `starting`, `running`, `stopping`, `backoff`, `done` or `failed`.
    pub state: &'static str,
    /// Running and, for a program with a bind, its readiness probe passed.
    pub healthy: bool,
    pub restarts: u64,
    /// Process group while the program has one.
    pub pgid: Option<i32>,
    /// When it last came up.
    pub up_since: Option<Instant>,
}

pub const STATES: [&str; 7] = [
    "waiting", "starting", "running", "stopping", "backoff", "done", "failed",
];

impl ShipView {
    pub fn new(p: &Program) -> ShipView {
        ShipView {
            name: p.name.clone(),
            group: p.group().to_string(),
            kind: p.kind(),
            state: "waiting",
            healthy: false,
            restarts: 0,
            pgid: None,
            up_since: None,
        }
    }

    pub fn update(&mut self, state: &State, restarts: u64, pgid: Option<i32>) {
        self.state = match state {
            State::Waiting => "waiting",
            State::Starting { .. } => "starting",
            State::Running { .. } => "running",
            State::Stopping { .. } => "stopping",
            State::Backoff { .. } => "backoff",
            State::Done { .. } => "done",
            State::Failed { .. } => "failed",
        };
        self.healthy = matches!(state, State::Running { .. });
        self.up_since = match state {
            State::Running { since, .. } => Some(*since),
            _ => None,
        };
        self.restarts = restarts;
        self.pgid = pgid;
    }
}

/// The fleet, by program index (`Manifest::programs`).
#[derive(Debug, Clone)]
pub struct FleetView {
    /// The connect address of each program that is up and has a bind.
    pub backends: Vec<Option<BindAddr>>,
    pub ships: Vec<ShipView>,
    pub started: Instant,
}

impl FleetView {
    pub fn new(programs: &[Program], started: Instant) -> FleetView {
        FleetView {
            backends: vec![None; programs.len()],
            ships: programs.iter().map(ShipView::new).collect(),
            started,
        }
    }
}
