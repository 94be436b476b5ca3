//! What the supervisor shows the edge: which backends are up (for routing) and each
//! program's state (for metrics). Plain data, so that neither side depends on the other:
//! the supervisor fills it in whenever a program changes state, the edge reads it.

use std::time::Instant;

use super::health::{CheckStats, Status};
use crate::manifest::{BindAddr, Program};

/// One ship or bay, as the metrics endpoint shows it.
#[derive(Debug, Clone)]
pub struct ShipView {
    pub name: String,
    pub group: String,
    pub tags: Vec<String>,
    /// What it depends on (indexes of programs).
    pub deps: Vec<usize>,
    /// `ship`, `job` or `bay`.
    pub kind: &'static str,
    /// `waiting`, `starting`, `running`, `stopping`, `backoff`, `done`, `failed` or
    /// `stopped` (by the operator).
    pub state: &'static str,
    /// Up (ready) and, for a ship with a health check, its last verdict is healthy.
    pub healthy: bool,
    /// It has a health check.
    pub has_check: bool,
    /// What its health check found.
    pub health: Status,
    /// Its checks, for the metrics.
    pub checks: CheckStats,
    pub restarts: u64,
    /// Process group while the program has one.
    pub pgid: Option<i32>,
    /// When it last came up.
    pub up_since: Option<Instant>,
    /// How its main process last ended.
    pub last_exit: Option<String>,
}

/// The fleet's lifecycle states, as logs and `mothership_fleet_state` show them.
/// `mayday`: running, while a critical program is unhealthy or crash-looping.
pub const FLEET_STATES: [&str; 12] = [
    "initializing",
    "preflight",
    "electing",
    "prelaunch",
    "docking",
    "launching",
    "running",
    "mayday",
    "draining",
    "landed",
    "failed",
    "crashed",
];

pub const STATES: [&str; 8] = [
    "waiting", "starting", "running", "stopping", "backoff", "done", "failed", "stopped",
];

impl ShipView {
    pub fn new(p: &Program) -> ShipView {
        ShipView {
            name: p.name.clone(),
            group: p.group().to_string(),
            tags: p.tags.clone(),
            deps: p.deps.iter().map(|d| d.index()).collect(),
            kind: p.kind(),
            state: "waiting",
            healthy: false,
            has_check: p.health.is_some(),
            health: Status::Unknown,
            checks: CheckStats::default(),
            restarts: 0,
            pgid: None,
            up_since: None,
            last_exit: None,
        }
    }

    /// Its health check's verdict changed.
    pub fn set_health(&mut self, status: Status) {
        self.health = status;
        self.refresh();
    }

    fn refresh(&mut self) {
        self.healthy = self.up_since.is_some()
            && match self.health {
                Status::Healthy => true,
                Status::Unhealthy => false,
                Status::Unknown => !self.has_check,
            };
    }

    /// `state` is one of [`STATES`]; `up_since` is set while the program runs.
    pub fn update(
        &mut self,
        state: &'static str,
        up_since: Option<Instant>,
        restarts: u64,
        pgid: Option<i32>,
    ) {
        self.state = state;
        self.up_since = up_since;
        self.restarts = restarts;
        self.pgid = pgid;
        self.refresh();
    }
}

/// The fleet, by program index (`Manifest::programs`).
#[derive(Debug, Clone)]
pub struct FleetView {
    /// The connect address of each program that is up and has a bind.
    pub backends: Vec<Option<BindAddr>>,
    pub ships: Vec<ShipView>,
    pub started: Instant,
    /// The fleet's lifecycle state (one of [`FLEET_STATES`]).
    pub state: &'static str,
}

impl FleetView {
    pub fn new(programs: &[Program], started: Instant) -> FleetView {
        FleetView {
            backends: vec![None; programs.len()],
            ships: programs.iter().map(ShipView::new).collect(),
            started,
            state: "initializing",
        }
    }
}
