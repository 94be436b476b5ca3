//! What the subsystems tell each other. None of them calls another: each puts messages in
//! its outbox, and the root (`root.rs`) takes them after every event and timer of the
//! subsystem and hands them on: to the fleet view it keeps for the edge, and to every
//! subsystem that listens. A message names programs by [`ProgramId`].

use std::time::{Duration, Instant};

use super::health::{CheckFailure, Status};
use super::FleetView;
use crate::manifest::ids::ProgramId;
use crate::manifest::BindAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A program changed state (`state` is one of [`super::STATES`]); `up_since` is set
    /// while it runs.
    Program {
        id: ProgramId,
        state: &'static str,
        up_since: Option<Instant>,
        restarts: u64,
        pgid: Option<i32>,
        /// How its main process last ended (`exit code 1`, `killed by SIGKILL`).
        last_exit: Option<String>,
    },
    /// A program with a bind is up: requests may go to `addr`.
    BackendUp { id: ProgramId, addr: BindAddr },
    /// A program that was up is not any more: requests to it wait or are refused.
    BackendDown { id: ProgramId },
    /// A ship's health changed (`reason`: what the last check found).
    Health {
        id: ProgramId,
        status: Status,
        reason: String,
    },
    /// One health check of a ship ended, after `took` (for the metrics).
    Checked {
        id: ProgramId,
        took: Duration,
        failure: Option<CheckFailure>,
    },
    /// A bay docked and was moored: it is ready.
    Docked { id: ProgramId },
    /// A bay's docking link failed (protocol error, closed): restart it.
    BayFault { id: ProgramId, reason: String },
    /// A ship has stayed unhealthy longer than its `unhealthy_restart`: restart it.
    RestartUnhealthy { id: ProgramId, reason: String },
    /// A process that is no program's main process was reaped (the supervisor reaps
    /// every child; a sibling that started one learns how it ended).
    Reaped {
        pid: i32,
        success: bool,
        what: String,
    },
    /// The fleet's lifecycle state changed (one of `FLEET_STATES`).
    Fleet { state: &'static str },
    /// The fleet lands: stop taking requests (close the listeners) and finish those in
    /// flight within `grace`.
    StopServing { grace: Duration },
    /// Something the operator's hooks hear of (`on_event`, `webhook`): `kind` is one of
    /// [`EVENT_KINDS`]; `program` is None for the fleet's own; `detail` says what happened.
    Event {
        kind: &'static str,
        program: Option<String>,
        detail: String,
    },
    /// The operator asks for the fleet to land (`q` in the dashboard).
    Land { reason: String },
    /// The operator asks for the log files to be reopened (`mothership reopen`).
    Reopen,
    /// The operator asks (on the control socket) for `op` on these programs.
    Operate { ids: Vec<ProgramId>, op: Operation },
}

/// The kinds of [`Message::Event`].
pub const EVENT_KINDS: [&str; 10] = [
    "crash",
    "restart",
    "give-up",
    "not-ready",
    "unhealthy-restart",
    "ready",
    "stopped",
    "health",
    "memory",
    "landing",
];

/// What an operator may ask of programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Start a stopped (or ended, or failed) program.
    Start,
    /// Stop it gracefully; it stays down until started.
    Stop,
    /// Stop it gracefully and start it again once its dependencies allow.
    Restart,
    /// Send this signal to its main process.
    Signal(i32),
}

impl FleetView {
    /// Brings the view up to date with one message (those about other things pass).
    pub fn apply(&mut self, m: &Message) {
        match m {
            Message::Program {
                id,
                state,
                up_since,
                restarts,
                pgid,
                last_exit,
            } => {
                if let Some(s) = self.ships.get_mut(id.index()) {
                    s.update(state, *up_since, *restarts, *pgid);
                    s.last_exit.clone_from(last_exit);
                }
            }
            Message::BackendUp { id, addr } => {
                if let Some(b) = self.backends.get_mut(id.index()) {
                    *b = Some(addr.clone());
                }
            }
            Message::BackendDown { id } => {
                if let Some(b) = self.backends.get_mut(id.index()) {
                    *b = None;
                }
            }
            Message::Health { id, status, .. } => {
                if let Some(s) = self.ships.get_mut(id.index()) {
                    s.set_health(*status);
                }
            }
            Message::Checked { id, took, failure } => {
                if let Some(s) = self.ships.get_mut(id.index()) {
                    s.checks.observe(*took, *failure);
                }
            }
            Message::Fleet { state } => self.state = state,
            Message::RestartUnhealthy { .. }
            | Message::Docked { .. }
            | Message::BayFault { .. }
            | Message::StopServing { .. }
            | Message::Operate { .. }
            | Message::Land { .. }
            | Message::Reopen
            | Message::Event { .. }
            | Message::Reaped { .. } => {}
        }
    }

    /// The address of `id` while it is up, healthy or not.
    pub fn address(&self, id: ProgramId) -> Option<&BindAddr> {
        self.backends.get(id.index()).and_then(Option::as_ref)
    }

    /// The address requests to `id` go to, while it is up and not unhealthy.
    pub fn backend(&self, id: ProgramId) -> Option<&BindAddr> {
        let unhealthy = self
            .ships
            .get(id.index())
            .is_some_and(|s| s.health == Status::Unhealthy);
        if unhealthy {
            return None;
        }
        self.backends.get(id.index()).and_then(Option::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::ShipView;

    fn view() -> FleetView {
        let ship = |name: &str| ShipView {
            name: name.into(),
            group: "web".into(),
            tags: Vec::new(),
            deps: Vec::new(),
            kind: "ship",
            state: "waiting",
            healthy: false,
            has_check: false,
            health: crate::fleet::health::Status::Unknown,
            checks: Default::default(),
            restarts: 0,
            pgid: None,
            up_since: None,
            last_exit: None,
        };
        FleetView {
            backends: vec![None, None],
            ships: vec![ship("a"), ship("b")],
            started: Instant::now(),
            state: "running",
        }
    }

    #[test]
    fn messages_keep_the_view_up_to_date() {
        let mut v = view();
        let b = ProgramId::at(1);
        let addr = BindAddr::Tcp("127.0.0.1:9".parse().unwrap());
        let t = Instant::now();
        v.apply(&Message::Program {
            id: b,
            state: "running",
            up_since: Some(t),
            restarts: 2,
            pgid: Some(42),
            last_exit: Some("exit code 1".into()),
        });
        assert_eq!(v.ships[1].last_exit.as_deref(), Some("exit code 1"));
        v.apply(&Message::BackendUp {
            id: b,
            addr: addr.clone(),
        });
        assert_eq!(v.backend(b), Some(&addr));
        assert_eq!(v.backend(ProgramId::at(0)), None);
        assert_eq!(
            (
                v.ships[1].state,
                v.ships[1].healthy,
                v.ships[1].restarts,
                v.ships[1].pgid
            ),
            ("running", true, 2, Some(42))
        );
        assert_eq!(v.ships[0].state, "waiting", "the other is untouched");
        v.apply(&Message::BackendDown { id: b });
        assert_eq!(v.backend(b), None);
        // An id the view does not hold changes nothing.
        v.apply(&Message::BackendDown {
            id: ProgramId::at(9),
        });
        v.apply(&Message::StopServing {
            grace: Duration::from_secs(1),
        });
        assert_eq!(v.backends.len(), 2);
    }
}
