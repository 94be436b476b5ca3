//! The lifecycle of one supervised program as a pure state machine: `(state, event, now)`
//! in, new state and actions out. The loop performs the actions (spawn, signal a process
//! group, arm a timer); nothing here touches a process or a clock.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::manifest::units::signal_name;
use crate::manifest::Restart;
use crate::reactor::deadline::after;

/// First restart delay; each crash doubles it, up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest restart delay: a crash-looping program is retried at this pace for ever.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Uptime after which a crash is treated as a first crash again (backoff reset).
pub const STABLE_UPTIME: Duration = Duration::from_secs(10);
/// A program that declares no readiness and has no bind counts as up after running this
/// long.
pub const SETTLE: Duration = crate::manifest::health::SETTLE;
/// First delay between readiness probes of a bind; doubles up to [`PROBE_CAP`].
pub const PROBE_BASE: Duration = Duration::from_millis(20);
pub const PROBE_CAP: Duration = Duration::from_millis(1000);
/// A readiness probe that has not connected by then counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a program still not up after its start is reported (in probes).
const PROBE_REPORT_EVERY: u32 = 30;
/// After SIGKILL, how long to wait for the group before giving up on it.
pub const KILL_WAIT: Duration = Duration::from_secs(2);

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitInfo {
    Code(i32),
    Signal(i32),
}

impl ExitInfo {
    pub fn success(self) -> bool {
        self == ExitInfo::Code(0)
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitInfo::Code(c) => write!(f, "exit code {c}"),
            ExitInfo::Signal(s) => write!(f, "killed by {}", signal_name(*s)),
        }
    }
}

/// What the machine needs to know about the program (from the manifest).
#[derive(Clone, Debug)]
pub struct Policy {
    pub name: String,
    pub oneshot: bool,
    pub critical: bool,
    pub restart: Restart,
    pub crash_limit: u32,
    pub crash_window: Duration,
    pub grace: Duration,
    pub stop_signal: i32,
    /// How it is known to be ready.
    pub ready: Readiness,
    /// Not ready by then after a spawn (probed or told): the start failed, handled like a
    /// crash.
    pub ready_timeout: Duration,
}

/// How the machine learns that a started program is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// It asks for connects to its bind (`Action::Probe`) until one is accepted.
    Probe,
    /// It counts as ready after running this long.
    Settle(Duration),
    /// Someone else tells it (`Event::ProbeOk`): a health check, a notification.
    Told,
}

/// What a stopping program does once its processes are gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Stay down (the fleet is landing, or it was killed).
    Stay,
    /// Start again at once (a recycle: over `max_memory`, say).
    Start,
    /// Count a crash of the run that began at `since`, then restart per the policy (it
    /// was stopped for not becoming ready, or for staying unhealthy).
    Crash { since: Instant },
    /// Stay down until the operator starts it again (`mothership stop`).
    Hold,
    /// Wait to be started again once its dependencies allow (`mothership restart`).
    Wait,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Not started: waiting for its dependencies or the launch phase.
    Waiting,
    /// Spawned, not yet up (readiness probe or settle time pending); not ready by
    /// `deadline`, the start has failed.
    Starting {
        pid: i32,
        since: Instant,
        probes: u32,
        deadline: Instant,
    },
    /// Up: dependents may start.
    Running { pid: i32, since: Instant },
    /// Stop signal sent. `leader` is false once the main process is reaped but other
    /// members of its process group remain; `then` says what follows once all are gone.
    Stopping {
        pid: i32,
        leader: bool,
        killed: bool,
        then: Then,
    },
    /// Crashed; will be spawned again at `until`.
    Backoff { until: Instant },
    /// Ended and will not run again: a finished job, or a program whose restart policy
    /// says so. `exit` is None when it was stopped by the fleet.
    Done { exit: Option<ExitInfo> },
    /// Failed for good.
    Failed { reason: String },
    /// Stopped by the operator: stays down until started again, and is neither failed
    /// nor ended.
    Held,
}

impl State {
    /// The state's name, as metrics and logs show it (one of `fleet::view::STATES`).
    pub fn name(&self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Starting { .. } => "starting",
            State::Running { .. } => "running",
            State::Stopping { .. } => "stopping",
            State::Backoff { .. } => "backoff",
            State::Done { .. } => "done",
            State::Failed { .. } => "failed",
            State::Held => "stopped",
        }
    }

    /// When the program came up, while it runs.
    pub fn up_since(&self) -> Option<Instant> {
        match self {
            State::Running { since, .. } => Some(*since),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Dependencies satisfied (from `Waiting`): spawn now.
    Start,
    Spawned {
        pid: i32,
    },
    /// `permanent`: retrying cannot help (no such program, permission denied).
    SpawnFailed {
        error: String,
        permanent: bool,
    },
    /// A dependency failed for good (from `Waiting`): this program can never start.
    DependencyFailed {
        dependency: String,
    },
    /// The readiness probe connected.
    ProbeOk,
    /// The readiness probe failed; try again later.
    ProbeFailed,
    /// The main process was reaped. `group_alive`: other members of its group remain.
    Exited {
        exit: ExitInfo,
        group_alive: bool,
    },
    /// No process of the group is left.
    GroupGone,
    /// The one armed timer of this program fired.
    Timer,
    /// Graceful stop (fleet landing).
    Stop,
    /// Graceful stop, then start again at once (over `max_memory`, say); not a crash.
    Recycle,
    /// Stayed unhealthy too long: graceful stop, counted as a crash (restarted per its
    /// policy and backoff).
    Unhealthy {
        reason: String,
    },
    /// Starting or running, it broke in a way only a restart mends (a bay's docking
    /// link failed): graceful stop, counted as a crash.
    Fault {
        reason: String,
    },
    /// While starting: it asks for this much more time from now to become ready.
    Extend {
        by: Duration,
    },
    /// Immediate stop (second signal).
    Kill,
    /// The operator stops it: graceful stop, then down until [`Event::Release`].
    Hold,
    /// The operator starts it: from down (stopped, ended, failed) back to waiting, with
    /// its crash count forgotten.
    Release,
    /// The operator restarts it: graceful stop, then waiting for its dependencies as at
    /// launch; not a crash.
    Restart,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Spawn,
    /// Send a signal to the process group `pgid`.
    Signal {
        pgid: i32,
        sig: i32,
    },
    /// Arm the program's timer (replacing any armed one).
    ArmTimer(Instant),
    CancelTimer,
    /// Start a readiness probe (non-blocking connect to the bind).
    Probe,
    /// A critical program failed for good: the fleet must land with failure.
    FleetFailed(String),
}

pub type Actions = Vec<Action>;

/// What happened to a program, as the machine reports it (the supervisor logs it; the
/// same stream can feed metrics and, later, the control socket). Displayed as the text
/// that follows the program's name in the log.
#[derive(Clone, Debug, PartialEq)]
pub enum Happened {
    Started {
        pid: i32,
    },
    CannotStart {
        error: String,
    },
    WillNotStart {
        reason: String,
    },
    /// Up: ready after `after` (its bind accepted a connection, when `accepting`; else it
    /// was told), or (None) it settled.
    Up {
        after: Option<Duration>,
        accepting: bool,
    },
    StillNotAccepting {
        after: Duration,
    },
    /// Not ready within its `ready_timeout`: stopped, counted as a crash.
    NotReady {
        within: Duration,
    },
    /// Stopped for staying unhealthy (or its watchdog), counted as a crash.
    StoppingUnhealthy {
        reason: String,
    },
    Stopping {
        sig: i32,
        pgid: i32,
        grace: Duration,
    },
    MainEnded {
        exit: ExitInfo,
    },
    Stopped {
        exit: Option<ExitInfo>,
    },
    GraceOver {
        grace: Duration,
        pgid: i32,
    },
    Stuck {
        pgid: i32,
    },
    StartingAgain,
    Killing {
        pgid: i32,
    },
    Completed,
    JobFailed {
        exit: ExitInfo,
    },
    /// Exited and its restart policy keeps it down.
    Exited {
        exit: ExitInfo,
        restart: &'static str,
    },
    ExitedUnexpectedly {
        exit: ExitInfo,
        after: Duration,
    },
    GivingUp {
        reason: String,
    },
    CrashLoop {
        restarts: u64,
        every: Duration,
    },
    Restarting {
        delay: Duration,
    },
    /// Stopped by the operator: down until started.
    Held,
}

impl Happened {
    /// The kind of event the operator's hooks hear of it as (see
    /// `fleet::message::EVENT_KINDS`), if they do.
    pub fn event_kind(&self) -> Option<&'static str> {
        use Happened::*;
        match self {
            ExitedUnexpectedly { .. } | JobFailed { .. } | CannotStart { .. } => Some("crash"),
            Exited { exit, .. } if !exit.success() => Some("crash"),
            Restarting { .. } | CrashLoop { .. } => Some("restart"),
            GivingUp { .. } | WillNotStart { .. } => Some("give-up"),
            NotReady { .. } => Some("not-ready"),
            StoppingUnhealthy { .. } => Some("unhealthy-restart"),
            Up { .. } => Some("ready"),
            Held => Some("stopped"),
            _ => None,
        }
    }

    pub fn level(&self) -> log::Level {
        use Happened::*;
        match self {
            CannotStart { .. } | WillNotStart { .. } | Stuck { .. } | JobFailed { .. } => {
                log::Level::Error
            }
            GivingUp { .. } => log::Level::Error,
            Exited { exit, .. } if !exit.success() => log::Level::Error,
            StillNotAccepting { .. }
            | NotReady { .. }
            | StoppingUnhealthy { .. }
            | GraceOver { .. }
            | Killing { .. }
            | ExitedUnexpectedly { .. }
            | CrashLoop { .. } => log::Level::Warn,
            _ => log::Level::Info,
        }
    }
}

impl fmt::Display for Happened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Happened::*;
        match self {
            Started { pid } => write!(f, "started (pid {pid})"),
            CannotStart { error } => write!(f, "cannot start: {error}"),
            WillNotStart { reason } => write!(f, "will not start: {reason}"),
            Up {
                after: Some(d),
                accepting: true,
            } => write!(f, "up (accepting connections after {} ms)", d.as_millis()),
            Up { after: Some(d), .. } => write!(f, "up (ready after {} ms)", d.as_millis()),
            Up { after: None, .. } => write!(f, "up"),
            StillNotAccepting { after } => write!(
                f,
                "still not accepting connections on its bind after {} s",
                after.as_secs()
            ),
            NotReady { within } => write!(
                f,
                "not ready within its ready_timeout ({within:?}); stopping it, counted as a crash"
            ),
            StoppingUnhealthy { reason } => {
                write!(f, "{reason}; restarting it, counted as a crash")
            }
            Stopping { sig, pgid, grace } => write!(
                f,
                "stopping ({} to process group {pgid}, grace {grace:?})",
                signal_name(*sig)
            ),
            MainEnded { exit } => write!(
                f,
                "main process ended ({exit}); waiting for the rest of its process group"
            ),
            Stopped { exit: Some(exit) } => write!(f, "stopped ({exit})"),
            Stopped { exit: None } => write!(f, "stopped"),
            GraceOver { grace, pgid } => write!(
                f,
                "still running after the {grace:?} grace period; sending SIGKILL to process group {pgid}"
            ),
            Stuck { pgid } => write!(
                f,
                "process group {pgid} still has members after SIGKILL; giving up on it"
            ),
            StartingAgain => write!(f, "starting again"),
            Killing { pgid } => write!(f, "killing process group {pgid}"),
            Completed => write!(f, "completed"),
            JobFailed { exit } => write!(f, "failed ({exit})"),
            Exited { exit, restart } => {
                write!(f, "exited ({exit}); restart = \"{restart}\", not restarting")
            }
            ExitedUnexpectedly { exit, after } => write!(
                f,
                "exited unexpectedly ({exit}) after {:.1} s",
                after.as_secs_f64()
            ),
            GivingUp { reason } => write!(f, "{reason}; giving up"),
            CrashLoop { restarts, every } => write!(
                f,
                "crash loop ({restarts} restarts so far); retrying every ~{} s",
                every.as_secs()
            ),
            Restarting { delay } => write!(f, "restarting in {} ms", delay.as_millis()),
            Held => write!(f, "stays stopped until started"),
        }
    }
}

/// One supervised program.
#[derive(Debug)]
pub struct Child {
    pub policy: Policy,
    pub state: State,
    /// Restarts so far (for status and metrics).
    pub restarts: u64,
    /// How its main process last ended (for status).
    pub last_exit: Option<ExitInfo>,
    /// Consecutive quick crashes, the exponent of the backoff.
    attempt: u32,
    crashes: VecDeque<Instant>,
    rng: u64,
    /// Reported and not yet taken by the supervisor.
    happened: Vec<Happened>,
}

impl Child {
    pub fn new(policy: Policy, seed: u64) -> Self {
        Child {
            policy,
            state: State::Waiting,
            restarts: 0,
            last_exit: None,
            attempt: 0,
            crashes: VecDeque::new(),
            rng: seed | 1,
            happened: Vec::new(),
        }
    }

    /// Crashes within its crash window, as last counted.
    pub fn recent_crashes(&self) -> usize {
        self.crashes.len()
    }

    /// The pid of the main process, while there is one.
    pub fn pid(&self) -> Option<i32> {
        match self.state {
            State::Starting { pid, .. } | State::Running { pid, .. } => Some(pid),
            State::Stopping {
                pid, leader: true, ..
            } => Some(pid),
            _ => None,
        }
    }

    /// Process group whose members may still be alive.
    pub fn pgid(&self) -> Option<i32> {
        match self.state {
            State::Starting { pid, .. }
            | State::Running { pid, .. }
            | State::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// True when no process of this program is left and none will be started.
    pub fn is_down(&self) -> bool {
        matches!(
            self.state,
            State::Waiting
                | State::Backoff { .. }
                | State::Done { .. }
                | State::Failed { .. }
                | State::Held
        )
    }

    /// True when dependents may start: up, or a job that completed successfully.
    pub fn satisfies_dependents(&self) -> bool {
        match &self.state {
            State::Running { .. } => !self.policy.oneshot,
            State::Done { exit: Some(e) } => e.success(),
            _ => false,
        }
    }

    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed { .. })
    }

    /// What happened since the last call, oldest first (to report before the actions
    /// of the same event are carried out).
    pub fn take_happened(&mut self) -> Vec<Happened> {
        std::mem::take(&mut self.happened)
    }

    fn tell(&mut self, h: Happened) {
        self.happened.push(h);
    }

    /// Feeds one event; returns the actions the loop must perform.
    pub fn handle(&mut self, event: Event, now: Instant) -> Actions {
        if let Event::Exited { exit, .. } = &event {
            self.last_exit = Some(*exit);
        }
        let name = self.policy.name.clone();
        let mut out = Actions::new();
        let state = std::mem::replace(&mut self.state, State::Waiting);
        self.state = match (state, event) {
            (State::Waiting, Event::Start) | (State::Backoff { .. }, Event::Timer) => {
                out.push(Action::Spawn);
                State::Waiting
            }
            (State::Waiting, Event::Spawned { pid }) => {
                self.tell(Happened::Started { pid });
                if self.policy.oneshot {
                    State::Running { pid, since: now }
                } else {
                    let deadline = after(now, self.policy.ready_timeout);
                    let first = match self.policy.ready {
                        Readiness::Probe => {
                            out.push(Action::Probe);
                            after(now, PROBE_TIMEOUT).min(deadline)
                        }
                        Readiness::Settle(d) => after(now, d),
                        Readiness::Told => deadline,
                    };
                    out.push(Action::ArmTimer(first));
                    State::Starting {
                        pid,
                        since: now,
                        probes: 0,
                        deadline,
                    }
                }
            }
            (State::Waiting, Event::SpawnFailed { error, permanent }) => {
                self.tell(Happened::CannotStart {
                    error: error.clone(),
                });
                if self.policy.critical && permanent {
                    let reason = format!("critical {} could not be started: {error}", self.kind());
                    out.push(Action::FleetFailed(format!("{name}: {reason}")));
                    State::Failed { reason }
                } else {
                    self.after_crash(now, now, &mut out)
                }
            }
            (State::Waiting, Event::DependencyFailed { dependency }) => {
                let reason = format!("its dependency `{dependency}` has failed");
                self.tell(Happened::WillNotStart {
                    reason: reason.clone(),
                });
                if self.policy.critical {
                    out.push(Action::FleetFailed(format!(
                        "critical {} `{name}` cannot start: {reason}",
                        self.kind()
                    )));
                }
                State::Failed { reason }
            }
            (State::Starting { pid, since, .. }, Event::ProbeOk) => {
                out.push(Action::CancelTimer);
                self.tell(Happened::Up {
                    after: Some(now.saturating_duration_since(since)),
                    accepting: self.policy.ready == Readiness::Probe,
                });
                State::Running { pid, since }
            }
            (
                State::Starting {
                    pid,
                    since,
                    probes,
                    deadline,
                },
                Event::ProbeFailed,
            ) => {
                let delay = PROBE_BASE
                    .saturating_mul(1 << probes.min(10))
                    .min(PROBE_CAP);
                if probes > 0 && probes % PROBE_REPORT_EVERY == 0 {
                    self.tell(Happened::StillNotAccepting {
                        after: now.saturating_duration_since(since),
                    });
                }
                out.push(Action::ArmTimer(after(now, delay).min(deadline)));
                State::Starting {
                    pid,
                    since,
                    probes: probes + 1,
                    deadline,
                }
            }
            (
                State::Starting {
                    pid,
                    since,
                    deadline,
                    ..
                },
                Event::Timer,
            ) if !matches!(self.policy.ready, Readiness::Settle(_)) && now >= deadline => {
                let within = deadline.saturating_duration_since(since);
                self.tell(Happened::NotReady { within });
                self.stop(pid, Then::Crash { since }, now, &mut out)
            }
            (
                State::Starting {
                    pid,
                    since,
                    probes,
                    deadline,
                },
                Event::Extend { by },
            ) => {
                // The program asks for more time (EXTEND_TIMEOUT_USEC): from now, never
                // shortening what it had.
                let deadline = deadline.max(after(now, by));
                if self.policy.ready == Readiness::Told {
                    out.push(Action::ArmTimer(deadline));
                }
                State::Starting {
                    pid,
                    since,
                    probes,
                    deadline,
                }
            }
            (
                State::Starting {
                    pid,
                    since,
                    probes,
                    deadline,
                },
                Event::Timer,
            ) => match self.policy.ready {
                Readiness::Probe => {
                    // Time to retry, or the probe in flight timed out: start a new one.
                    out.push(Action::Probe);
                    out.push(Action::ArmTimer(after(now, PROBE_TIMEOUT).min(deadline)));
                    State::Starting {
                        pid,
                        since,
                        probes,
                        deadline,
                    }
                }
                Readiness::Settle(_) => {
                    self.tell(Happened::Up {
                        after: None,
                        accepting: false,
                    });
                    State::Running { pid, since }
                }
                // Only the deadline is armed: a timer from before is stale.
                Readiness::Told => {
                    out.push(Action::ArmTimer(deadline));
                    State::Starting {
                        pid,
                        since,
                        probes,
                        deadline,
                    }
                }
            },
            (
                State::Starting { pid, since, .. } | State::Running { pid, since },
                Event::Fault { reason },
            ) => {
                self.tell(Happened::StoppingUnhealthy { reason });
                self.stop(pid, Then::Crash { since }, now, &mut out)
            }
            (State::Running { pid, since }, Event::Unhealthy { reason }) => {
                self.tell(Happened::StoppingUnhealthy { reason });
                self.stop(pid, Then::Crash { since }, now, &mut out)
            }
            (
                State::Starting { pid, since, .. } | State::Running { pid, since },
                Event::Exited { exit, group_alive },
            ) => {
                out.push(Action::CancelTimer);
                if group_alive {
                    // What the main process left behind in its group goes with it.
                    out.push(Action::Signal {
                        pgid: pid,
                        sig: libc::SIGKILL,
                    });
                }
                self.after_exit(exit, since, now, &mut out)
            }
            (
                State::Starting { pid, .. } | State::Running { pid, .. },
                ev @ (Event::Stop | Event::Recycle),
            ) => {
                let then = if ev == Event::Stop {
                    Then::Stay
                } else {
                    Then::Start
                };
                self.stop(pid, then, now, &mut out)
            }
            (State::Starting { pid, .. } | State::Running { pid, .. }, Event::Kill) => {
                self.kill(pid, true, now, &mut out)
            }
            (
                State::Stopping {
                    pid,
                    leader,
                    killed: false,
                    ..
                },
                Event::Kill,
            ) => self.kill(pid, leader, now, &mut out),
            (
                State::Stopping {
                    pid, killed, then, ..
                },
                Event::Exited { exit, group_alive },
            ) => {
                if group_alive {
                    self.tell(Happened::MainEnded { exit });
                    State::Stopping {
                        pid,
                        leader: false,
                        killed,
                        then,
                    }
                } else {
                    out.push(Action::CancelTimer);
                    self.tell(Happened::Stopped { exit: Some(exit) });
                    self.stopped(then, now, &mut out)
                }
            }
            (
                State::Stopping {
                    leader: false,
                    then,
                    ..
                },
                Event::GroupGone,
            ) => {
                out.push(Action::CancelTimer);
                self.tell(Happened::Stopped { exit: None });
                self.stopped(then, now, &mut out)
            }
            (
                State::Stopping {
                    pid,
                    leader,
                    killed: false,
                    then,
                },
                Event::Timer,
            ) => {
                self.tell(Happened::GraceOver {
                    grace: self.policy.grace,
                    pgid: pid,
                });
                out.push(Action::Signal {
                    pgid: pid,
                    sig: libc::SIGKILL,
                });
                out.push(Action::ArmTimer(after(now, KILL_WAIT)));
                State::Stopping {
                    pid,
                    leader,
                    killed: true,
                    then,
                }
            }
            (State::Stopping { pid, .. }, Event::Timer) => {
                self.tell(Happened::Stuck { pgid: pid });
                // Not started again even after a recycle: the old one may still hold its
                // port or files.
                State::Done { exit: None }
            }
            (
                State::Stopping {
                    pid,
                    leader,
                    killed,
                    ..
                },
                Event::Stop,
            ) => {
                // Already stopping (a recycle): stay down afterwards.
                State::Stopping {
                    pid,
                    leader,
                    killed,
                    then: Then::Stay,
                }
            }
            (State::Stopping { pid, leader, .. }, Event::Kill) => {
                // Already killed: whatever was to follow, it stays down now.
                State::Stopping {
                    pid,
                    leader,
                    killed: true,
                    then: Then::Stay,
                }
            }
            (State::Waiting | State::Backoff { .. }, Event::Stop | Event::Kill) => {
                out.push(Action::CancelTimer);
                State::Done { exit: None }
            }
            // The operator's commands.
            (State::Starting { pid, .. } | State::Running { pid, .. }, Event::Hold) => {
                self.stop(pid, Then::Hold, now, &mut out)
            }
            (State::Starting { pid, .. } | State::Running { pid, .. }, Event::Restart) => {
                self.stop(pid, Then::Wait, now, &mut out)
            }
            (
                State::Stopping {
                    pid,
                    leader,
                    killed,
                    then,
                },
                ev @ (Event::Hold | Event::Restart),
            ) => State::Stopping {
                pid,
                leader,
                killed,
                // A landing's stop (or a kill) is not undone.
                then: match (then, ev) {
                    (Then::Stay, _) => Then::Stay,
                    (_, Event::Hold) => Then::Hold,
                    _ => Then::Wait,
                },
            },
            (
                State::Stopping {
                    pid,
                    leader,
                    killed,
                    then: Then::Hold,
                },
                Event::Release,
            ) => State::Stopping {
                pid,
                leader,
                killed,
                then: Then::Wait,
            },
            (
                State::Waiting
                | State::Backoff { .. }
                | State::Done { .. }
                | State::Failed { .. }
                | State::Held,
                Event::Hold,
            ) => {
                out.push(Action::CancelTimer);
                State::Held
            }
            (State::Backoff { .. }, Event::Restart) => {
                out.push(Action::CancelTimer);
                self.forget_crashes();
                State::Waiting
            }
            (
                State::Done { .. } | State::Failed { .. } | State::Held,
                Event::Release | Event::Restart,
            ) => {
                self.forget_crashes();
                State::Waiting
            }
            // Anything else is stale (a probe result after an exit, a timer already
            // replaced, a second Stop): ignore it.
            (s, _) => s,
        };
        out
    }

    /// Sends the stop signal to the group and waits up to the grace period; `then` says
    /// what follows once the group is gone.
    fn stop(&mut self, pid: i32, then: Then, now: Instant, out: &mut Actions) -> State {
        let sig = self.policy.stop_signal;
        self.tell(Happened::Stopping {
            sig,
            pgid: pid,
            grace: self.policy.grace,
        });
        out.push(Action::Signal { pgid: pid, sig });
        if sig != libc::SIGKILL && sig != libc::SIGCONT {
            out.push(Action::Signal {
                pgid: pid,
                sig: libc::SIGCONT,
            });
        }
        out.push(Action::ArmTimer(after(now, self.policy.grace)));
        State::Stopping {
            pid,
            leader: true,
            killed: sig == libc::SIGKILL,
            then,
        }
    }

    /// The program's processes are gone after a stop: down for good, started again after
    /// a recycle, or restarted as after a crash.
    fn stopped(&mut self, then: Then, now: Instant, out: &mut Actions) -> State {
        match then {
            Then::Crash { since } => self.after_crash(since, now, out),
            Then::Start => {
                self.restarts += 1;
                self.tell(Happened::StartingAgain);
                out.push(Action::ArmTimer(now));
                State::Backoff { until: now }
            }
            Then::Stay => State::Done { exit: None },
            Then::Hold => {
                self.tell(Happened::Held);
                State::Held
            }
            Then::Wait => {
                self.restarts += 1;
                self.forget_crashes();
                State::Waiting
            }
        }
    }

    /// A start or restart by the operator begins afresh: no backoff, no crash budget used.
    fn forget_crashes(&mut self) {
        self.attempt = 0;
        self.crashes.clear();
    }

    fn kill(&mut self, pid: i32, leader: bool, now: Instant, out: &mut Actions) -> State {
        self.tell(Happened::Killing { pgid: pid });
        out.push(Action::Signal {
            pgid: pid,
            sig: libc::SIGKILL,
        });
        out.push(Action::ArmTimer(after(now, KILL_WAIT)));
        State::Stopping {
            pid,
            leader,
            killed: true,
            then: Then::Stay,
        }
    }

    fn kind(&self) -> &'static str {
        if self.policy.oneshot {
            "job"
        } else {
            "ship"
        }
    }

    fn after_exit(
        &mut self,
        exit: ExitInfo,
        since: Instant,
        now: Instant,
        out: &mut Actions,
    ) -> State {
        let name = self.policy.name.clone();
        if self.policy.oneshot {
            if exit.success() {
                self.tell(Happened::Completed);
                return State::Done { exit: Some(exit) };
            }
            self.tell(Happened::JobFailed { exit });
            if self.policy.critical {
                out.push(Action::FleetFailed(format!(
                    "critical job `{name}` failed ({exit})"
                )));
            }
            return State::Failed {
                reason: exit.to_string(),
            };
        }
        let restart = match self.policy.restart {
            Restart::Always => true,
            Restart::OnFailure => !exit.success(),
            Restart::Never => false,
        };
        if !restart {
            self.tell(Happened::Exited {
                exit,
                restart: self.policy.restart.as_str(),
            });
            if exit.success() {
                return State::Done { exit: Some(exit) };
            }
            if self.policy.critical {
                out.push(Action::FleetFailed(format!(
                    "critical ship `{name}` exited ({exit})"
                )));
            }
            return State::Failed {
                reason: exit.to_string(),
            };
        }
        self.tell(Happened::ExitedUnexpectedly {
            exit,
            after: now.saturating_duration_since(since),
        });
        self.after_crash(since, now, out)
    }

    /// Counts a crash against the budget and either fails for good or schedules a restart.
    fn after_crash(&mut self, since: Instant, now: Instant, out: &mut Actions) -> State {
        let name = self.policy.name.clone();
        if now.saturating_duration_since(since) >= STABLE_UPTIME {
            self.attempt = 0;
        }
        self.crashes.push_back(now);
        while let Some(&t) = self.crashes.front() {
            if now.saturating_duration_since(t) > self.policy.crash_window {
                self.crashes.pop_front();
            } else {
                break;
            }
        }
        let recent = self.crashes.len() as u32;
        if self.policy.critical && recent >= self.policy.crash_limit {
            let reason = format!(
                "crashed {recent} times within {:?}",
                self.policy.crash_window
            );
            self.tell(Happened::GivingUp {
                reason: reason.clone(),
            });
            out.push(Action::FleetFailed(format!(
                "critical ship `{name}` {reason}"
            )));
            return State::Failed { reason };
        }
        // Bound the queue for non-critical programs that crash for ever.
        while self.crashes.len() > self.policy.crash_limit.max(1) as usize {
            self.crashes.pop_front();
        }
        let delay = self.backoff_delay();
        self.attempt = self.attempt.saturating_add(1);
        self.restarts += 1;
        if delay >= BACKOFF_CAP.mul_f64(0.75) {
            self.tell(Happened::CrashLoop {
                restarts: self.restarts,
                every: BACKOFF_CAP,
            });
        } else {
            self.tell(Happened::Restarting { delay });
        }
        let until = after(now, delay);
        out.push(Action::ArmTimer(until));
        State::Backoff { until }
    }

    /// `BACKOFF_BASE * 2^attempt`, capped, with +-20% jitter.
    fn backoff_delay(&mut self) -> Duration {
        let raw = BACKOFF_BASE
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(BACKOFF_CAP);
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        raw.mul_f64(0.8 + 0.4 * unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            name: "web".into(),
            oneshot: false,
            critical: true,
            restart: Restart::Always,
            crash_limit: 5,
            crash_window: Duration::from_secs(60),
            grace: Duration::from_secs(10),
            stop_signal: libc::SIGTERM,
            ready: Readiness::Settle(SETTLE),
            ready_timeout: Duration::from_secs(60),
        }
    }

    fn start(c: &mut Child, now: Instant, pid: i32) {
        assert_eq!(c.handle(Event::Start, now), vec![Action::Spawn]);
        c.handle(Event::Spawned { pid }, now);
    }

    fn timer_of(actions: &[Action]) -> Option<Instant> {
        actions.iter().find_map(|a| match a {
            Action::ArmTimer(t) => Some(*t),
            _ => None,
        })
    }

    #[test]
    fn a_program_told_of_its_readiness_fails_its_start_at_the_timeout() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(5);
        let mut c = Child::new(
            Policy {
                ready: Readiness::Told,
                ready_timeout: timeout,
                ..policy()
            },
            1,
        );
        assert_eq!(c.handle(Event::Start, t0), vec![Action::Spawn]);
        let a = c.handle(Event::Spawned { pid: 40 }, t0);
        assert_eq!(a, vec![Action::ArmTimer(t0 + timeout)], "only the deadline");
        // No probe: a timer before the deadline (stale) changes nothing.
        c.handle(Event::Timer, t0 + Duration::from_secs(1));
        assert!(matches!(c.state, State::Starting { .. }));
        let a = c.handle(Event::Timer, t0 + timeout);
        assert!(a.contains(&Action::Signal {
            pgid: 40,
            sig: libc::SIGTERM
        }));
        assert!(matches!(
            c.state,
            State::Stopping {
                then: Then::Crash { .. },
                ..
            }
        ));
        assert!(c
            .take_happened()
            .iter()
            .any(|h| matches!(h, Happened::NotReady { within } if *within == timeout)));
        let gone = Event::Exited {
            exit: ExitInfo::Signal(libc::SIGTERM),
            group_alive: false,
        };
        c.handle(gone, t0 + timeout);
        assert!(
            matches!(c.state, State::Backoff { .. }),
            "restarted as after a crash"
        );
        assert_eq!(c.restarts, 1);
        assert_eq!(c.crashes.len(), 1, "counted against the crash budget");

        // Told in time: up, and the deadline is gone with the state.
        let mut c = Child::new(
            Policy {
                ready: Readiness::Told,
                ready_timeout: timeout,
                ..policy()
            },
            1,
        );
        start(&mut c, t0, 41);
        c.handle(Event::ProbeOk, t0 + Duration::from_secs(2));
        assert!(matches!(c.state, State::Running { .. }));
        c.handle(Event::Timer, t0 + timeout);
        assert!(matches!(c.state, State::Running { .. }), "a stale timer");
    }

    #[test]
    fn a_program_may_ask_for_more_time_to_get_ready() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut c = Child::new(
            Policy {
                ready: Readiness::Told,
                ready_timeout: Duration::from_secs(5),
                ..policy()
            },
            1,
        );
        start(&mut c, t0, 70);
        let a = c.handle(
            Event::Extend {
                by: Duration::from_secs(3),
            },
            s(4),
        );
        assert_eq!(a, vec![Action::ArmTimer(s(7))]);
        // Never shortened: asking for less than is left changes nothing.
        c.handle(
            Event::Extend {
                by: Duration::from_secs(1),
            },
            s(5),
        );
        c.handle(Event::Timer, s(5));
        assert!(matches!(c.state, State::Starting { .. }), "extended");
        c.handle(Event::Timer, s(7));
        assert!(
            matches!(c.state, State::Stopping { .. }),
            "not ready in time"
        );
    }

    #[test]
    fn a_probed_bind_that_never_accepts_fails_at_the_timeout() {
        let t0 = Instant::now();
        let timeout = Duration::from_millis(2500);
        let mut c = Child::new(
            Policy {
                ready: Readiness::Probe,
                ready_timeout: timeout,
                ..policy()
            },
            1,
        );
        start(&mut c, t0, 50);
        let mut now = t0;
        let mut rounds = 0;
        while matches!(c.state, State::Starting { .. }) && rounds < 100 {
            let a = c.handle(Event::ProbeFailed, now);
            let at = timer_of(&a).expect("a retry or the deadline");
            assert!(at <= t0 + timeout, "never armed past the deadline");
            now = at;
            c.handle(Event::Timer, now);
            rounds += 1;
        }
        assert_eq!(now, t0 + timeout);
        assert!(matches!(
            c.state,
            State::Stopping {
                then: Then::Crash { .. },
                ..
            }
        ));
    }

    #[test]
    fn an_unhealthy_ship_is_stopped_and_restarted_as_after_a_crash() {
        let t0 = Instant::now();
        let mut c = Child::new(policy(), 1);
        start(&mut c, t0, 60);
        c.handle(Event::Timer, t0 + SETTLE);
        assert!(matches!(c.state, State::Running { .. }));
        let at = t0 + Duration::from_secs(30);
        let a = c.handle(
            Event::Unhealthy {
                reason: "GET /health: 500".into(),
            },
            at,
        );
        assert!(a.contains(&Action::Signal {
            pgid: 60,
            sig: libc::SIGTERM
        }));
        c.handle(
            Event::Exited {
                exit: ExitInfo::Code(0),
                group_alive: false,
            },
            at,
        );
        assert!(matches!(c.state, State::Backoff { .. }));
        assert_eq!((c.restarts, c.crashes.len()), (1, 1));
        // Not while it is still starting: unhealthy needs a ship that was up.
        let mut c = Child::new(policy(), 1);
        start(&mut c, t0, 61);
        c.handle(Event::Unhealthy { reason: "x".into() }, t0);
        assert!(matches!(c.state, State::Starting { .. }));
    }

    #[test]
    fn settles_then_runs() {
        let t0 = Instant::now();
        let mut c = Child::new(policy(), 7);
        assert_eq!(c.handle(Event::Start, t0), vec![Action::Spawn]);
        let a = c.handle(Event::Spawned { pid: 10 }, t0);
        assert_eq!(a, vec![Action::ArmTimer(t0 + SETTLE)]);
        assert!(!c.satisfies_dependents());
        c.handle(Event::Timer, t0 + SETTLE);
        assert!(c.satisfies_dependents());
        assert_eq!(c.pid(), Some(10));
    }

    #[test]
    fn probes_with_backoff_until_up() {
        let t0 = Instant::now();
        let mut c = Child::new(
            Policy {
                ready: Readiness::Probe,
                ..policy()
            },
            7,
        );
        c.handle(Event::Start, t0);
        assert_eq!(
            c.handle(Event::Spawned { pid: 10 }, t0),
            vec![Action::Probe, Action::ArmTimer(t0 + PROBE_TIMEOUT)]
        );
        let d1 = timer_of(&c.handle(Event::ProbeFailed, t0)).unwrap() - t0;
        c.handle(Event::Timer, t0);
        let d2 = timer_of(&c.handle(Event::ProbeFailed, t0)).unwrap() - t0;
        assert!(d2 > d1);
        for _ in 0..20 {
            c.handle(Event::ProbeFailed, t0);
        }
        let d = timer_of(&c.handle(Event::ProbeFailed, t0)).unwrap() - t0;
        assert_eq!(d, PROBE_CAP);
        c.handle(Event::ProbeOk, t0);
        assert!(matches!(c.state, State::Running { pid: 10, .. }));
    }

    #[test]
    fn crash_backoff_grows_with_jitter_and_caps() {
        let t0 = Instant::now();
        let mut c = Child::new(
            Policy {
                critical: false,
                ..policy()
            },
            42,
        );
        let mut now = t0;
        let mut delays = Vec::new();
        start(&mut c, now, 1);
        for i in 0..20 {
            let a = c.handle(
                Event::Exited {
                    exit: ExitInfo::Code(1),
                    group_alive: false,
                },
                now,
            );
            let until = timer_of(&a).expect("restart timer");
            delays.push(until - now);
            now = until;
            assert_eq!(
                c.handle(Event::Timer, now),
                vec![Action::Spawn],
                "crash {i}"
            );
            c.handle(Event::Spawned { pid: 2 + i }, now);
        }
        assert!(
            delays[0] >= BACKOFF_BASE.mul_f64(0.8) && delays[0] <= BACKOFF_BASE.mul_f64(1.2),
            "{delays:?}"
        );
        assert!(delays[3] > delays[1]);
        for d in &delays[12..] {
            assert!(
                *d <= BACKOFF_CAP.mul_f64(1.2) && *d >= BACKOFF_CAP.mul_f64(0.8),
                "{d:?}"
            );
        }
        assert_eq!(c.restarts, 20);
        assert!(!c.is_failed(), "non-critical programs are retried for ever");
    }

    #[test]
    fn stable_uptime_resets_backoff() {
        let t0 = Instant::now();
        let mut c = Child::new(
            Policy {
                critical: false,
                ..policy()
            },
            3,
        );
        let mut now = t0;
        start(&mut c, now, 1);
        for _ in 0..6 {
            let until = timer_of(&c.handle(
                Event::Exited {
                    exit: ExitInfo::Code(1),
                    group_alive: false,
                },
                now,
            ))
            .unwrap();
            now = until;
            c.handle(Event::Timer, now);
            c.handle(Event::Spawned { pid: 9 }, now);
        }
        now += STABLE_UPTIME + Duration::from_secs(1);
        let until = timer_of(&c.handle(
            Event::Exited {
                exit: ExitInfo::Code(1),
                group_alive: false,
            },
            now,
        ))
        .unwrap();
        assert!(until - now <= BACKOFF_BASE.mul_f64(1.2));
    }

    #[test]
    fn critical_crash_budget_fails_the_fleet() {
        let t0 = Instant::now();
        let mut c = Child::new(policy(), 5);
        let mut now = t0;
        start(&mut c, now, 1);
        for i in 0..5 {
            let a = c.handle(
                Event::Exited {
                    exit: ExitInfo::Signal(libc::SIGSEGV),
                    group_alive: false,
                },
                now,
            );
            if i < 4 {
                now = timer_of(&a).unwrap();
                c.handle(Event::Timer, now);
                c.handle(Event::Spawned { pid: 2 }, now);
            } else {
                assert!(matches!(a.last(), Some(Action::FleetFailed(_))), "{a:?}");
                assert!(c.is_failed());
                assert!(c.is_down());
            }
        }
    }

    #[test]
    fn crashes_outside_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut c = Child::new(
            Policy {
                crash_limit: 2,
                crash_window: Duration::from_secs(5),
                ..policy()
            },
            5,
        );
        let mut now = t0;
        start(&mut c, now, 1);
        for _ in 0..4 {
            now += Duration::from_secs(20);
            let a = c.handle(
                Event::Exited {
                    exit: ExitInfo::Code(1),
                    group_alive: false,
                },
                now,
            );
            assert!(
                !a.iter().any(|x| matches!(x, Action::FleetFailed(_))),
                "{a:?}"
            );
            now = timer_of(&a).unwrap();
            c.handle(Event::Timer, now);
            c.handle(Event::Spawned { pid: 3 }, now);
        }
    }

    #[test]
    fn oneshot_jobs() {
        let t0 = Instant::now();
        let mut ok = Child::new(
            Policy {
                oneshot: true,
                ..policy()
            },
            1,
        );
        start(&mut ok, t0, 5);
        assert!(!ok.satisfies_dependents());
        assert_eq!(
            ok.handle(
                Event::Exited {
                    exit: ExitInfo::Code(0),
                    group_alive: false
                },
                t0
            ),
            vec![Action::CancelTimer]
        );
        assert!(ok.satisfies_dependents() && ok.is_down());

        let mut bad = Child::new(
            Policy {
                oneshot: true,
                ..policy()
            },
            1,
        );
        start(&mut bad, t0, 5);
        let a = bad.handle(
            Event::Exited {
                exit: ExitInfo::Code(2),
                group_alive: false,
            },
            t0,
        );
        assert!(matches!(a.last(), Some(Action::FleetFailed(_))));

        let mut soft = Child::new(
            Policy {
                oneshot: true,
                critical: false,
                ..policy()
            },
            1,
        );
        start(&mut soft, t0, 5);
        let a = soft.handle(
            Event::Exited {
                exit: ExitInfo::Code(2),
                group_alive: false,
            },
            t0,
        );
        assert!(!a.iter().any(|x| matches!(x, Action::FleetFailed(_))));
        assert!(soft.is_failed());
    }

    #[test]
    fn restart_policies() {
        let t0 = Instant::now();
        let mut c = Child::new(
            Policy {
                restart: Restart::OnFailure,
                ..policy()
            },
            1,
        );
        start(&mut c, t0, 5);
        c.handle(
            Event::Exited {
                exit: ExitInfo::Code(0),
                group_alive: false,
            },
            t0,
        );
        assert_eq!(
            c.state,
            State::Done {
                exit: Some(ExitInfo::Code(0))
            }
        );

        let mut c = Child::new(
            Policy {
                restart: Restart::Never,
                critical: false,
                ..policy()
            },
            1,
        );
        start(&mut c, t0, 5);
        let a = c.handle(
            Event::Exited {
                exit: ExitInfo::Code(1),
                group_alive: false,
            },
            t0,
        );
        assert!(c.is_failed());
        assert!(!a
            .iter()
            .any(|x| matches!(x, Action::FleetFailed(_) | Action::ArmTimer(_))));
    }

    #[test]
    fn stop_then_grace_then_kill() {
        let t0 = Instant::now();
        let mut c = Child::new(policy(), 1);
        start(&mut c, t0, 50);
        let a = c.handle(Event::Stop, t0);
        assert_eq!(
            a,
            vec![
                Action::Signal {
                    pgid: 50,
                    sig: libc::SIGTERM
                },
                Action::Signal {
                    pgid: 50,
                    sig: libc::SIGCONT
                },
                Action::ArmTimer(t0 + Duration::from_secs(10)),
            ]
        );
        let t1 = t0 + Duration::from_secs(10);
        let a = c.handle(Event::Timer, t1);
        assert_eq!(
            a,
            vec![
                Action::Signal {
                    pgid: 50,
                    sig: libc::SIGKILL
                },
                Action::ArmTimer(t1 + KILL_WAIT)
            ]
        );
        c.handle(
            Event::Exited {
                exit: ExitInfo::Signal(libc::SIGKILL),
                group_alive: false,
            },
            t1,
        );
        assert_eq!(c.state, State::Done { exit: None });
        assert!(c.is_down());
        // nothing restarts a landed program
        assert!(c.handle(Event::Timer, t1).is_empty());
        assert!(c.handle(Event::Start, t1).is_empty());
    }

    #[test]
    fn stop_waits_for_the_rest_of_the_group() {
        let t0 = Instant::now();
        let mut c = Child::new(policy(), 1);
        start(&mut c, t0, 50);
        c.handle(Event::Stop, t0);
        c.handle(
            Event::Exited {
                exit: ExitInfo::Code(0),
                group_alive: true,
            },
            t0,
        );
        assert!(!c.is_down());
        assert_eq!(c.pid(), None);
        assert_eq!(c.pgid(), Some(50));
        assert_eq!(c.handle(Event::GroupGone, t0), vec![Action::CancelTimer]);
        assert!(c.is_down());
    }

    #[test]
    fn recycle_stops_gracefully_then_starts_again_without_backoff() {
        let t0 = Instant::now();
        let mut c = Child::new(policy(), 1);
        start(&mut c, t0, 50);
        c.handle(Event::Timer, t0 + SETTLE);
        let a = c.handle(Event::Recycle, t0);
        assert!(a.contains(&Action::Signal {
            pgid: 50,
            sig: libc::SIGTERM
        }));
        let a = c.handle(
            Event::Exited {
                exit: ExitInfo::Code(0),
                group_alive: false,
            },
            t0,
        );
        assert_eq!(a, vec![Action::CancelTimer, Action::ArmTimer(t0)]);
        assert_eq!(c.restarts, 1);
        assert_eq!(c.handle(Event::Timer, t0), vec![Action::Spawn]);
        c.handle(Event::Spawned { pid: 60 }, t0);
        assert_eq!(c.pid(), Some(60));
        // A landing during a recycle keeps the program down.
        c.handle(Event::Recycle, t0);
        c.handle(Event::Stop, t0);
        c.handle(
            Event::Exited {
                exit: ExitInfo::Code(0),
                group_alive: false,
            },
            t0,
        );
        assert_eq!(c.state, State::Done { exit: None });
        assert!(c.handle(Event::Timer, t0).is_empty());
    }

    #[test]
    fn a_recycle_whose_group_survives_sigkill_does_not_start_a_second_copy() {
        let t0 = Instant::now();
        let mut c = Child::new(policy(), 1);
        start(&mut c, t0, 50);
        c.handle(Event::Timer, t0 + SETTLE);
        c.handle(Event::Recycle, t0);
        c.handle(Event::Timer, t0 + Duration::from_secs(10)); // grace over: SIGKILL
        c.handle(Event::Timer, t0 + Duration::from_secs(13)); // still there: give up
        assert_eq!(c.state, State::Done { exit: None });
        assert_eq!(c.restarts, 0);
    }

    #[test]
    fn a_kill_during_a_recycle_keeps_the_program_down() {
        let t0 = Instant::now();
        let mut c = Child::new(policy(), 1);
        start(&mut c, t0, 50);
        c.handle(Event::Timer, t0 + SETTLE);
        c.handle(Event::Recycle, t0);
        c.handle(Event::Timer, t0 + Duration::from_secs(10)); // grace over: SIGKILL
        c.handle(Event::Kill, t0 + Duration::from_secs(11)); // the fleet is killed
        c.handle(
            Event::Exited {
                exit: ExitInfo::Signal(9),
                group_alive: false,
            },
            t0 + Duration::from_secs(11),
        );
        assert_eq!(c.state, State::Done { exit: None });
        assert_eq!(c.restarts, 0);
    }

    #[test]
    fn exit_while_stopping_is_not_a_crash() {
        let t0 = Instant::now();
        let mut c = Child::new(policy(), 1);
        start(&mut c, t0, 50);
        c.handle(Event::Stop, t0);
        let a = c.handle(
            Event::Exited {
                exit: ExitInfo::Code(143),
                group_alive: false,
            },
            t0,
        );
        assert_eq!(a, vec![Action::CancelTimer]);
        assert_eq!(c.restarts, 0);
    }

    #[test]
    fn kill_during_stop_and_waiting() {
        let t0 = Instant::now();
        let mut c = Child::new(policy(), 1);
        start(&mut c, t0, 50);
        c.handle(Event::Stop, t0);
        let a = c.handle(Event::Kill, t0);
        assert_eq!(
            a[0],
            Action::Signal {
                pgid: 50,
                sig: libc::SIGKILL
            }
        );
        let mut w = Child::new(policy(), 1);
        assert_eq!(w.handle(Event::Stop, t0), vec![Action::CancelTimer]);
        assert!(w.is_down());
        assert!(w.handle(Event::Start, t0).is_empty());
    }

    #[test]
    fn spawn_failure_of_critical_program_fails_the_fleet() {
        let t0 = Instant::now();
        let mut c = Child::new(policy(), 1);
        c.handle(Event::Start, t0);
        let a = c.handle(
            Event::SpawnFailed {
                error: "No such file".into(),
                permanent: true,
            },
            t0,
        );
        assert!(matches!(a.last(), Some(Action::FleetFailed(_))));
        // A transient failure (EAGAIN) of a critical program is retried like a crash.
        let mut t = Child::new(policy(), 1);
        t.handle(Event::Start, t0);
        let a = t.handle(
            Event::SpawnFailed {
                error: "Resource temporarily unavailable".into(),
                permanent: false,
            },
            t0,
        );
        assert!(matches!(a.last(), Some(Action::ArmTimer(_))), "{a:?}");
        let mut n = Child::new(
            Policy {
                critical: false,
                ..policy()
            },
            1,
        );
        n.handle(Event::Start, t0);
        let a = n.handle(
            Event::SpawnFailed {
                error: "No such file".into(),
                permanent: true,
            },
            t0,
        );
        assert!(matches!(a.last(), Some(Action::ArmTimer(_))));
    }

    #[test]
    fn crashed_program_group_is_cleaned_up() {
        let t0 = Instant::now();
        let mut c = Child::new(
            Policy {
                critical: false,
                ..policy()
            },
            1,
        );
        start(&mut c, t0, 77);
        let a = c.handle(
            Event::Exited {
                exit: ExitInfo::Code(1),
                group_alive: true,
            },
            t0,
        );
        assert!(a.contains(&Action::Signal {
            pgid: 77,
            sig: libc::SIGKILL
        }));
    }

    #[test]
    fn probe_in_flight_times_out_and_is_retried() {
        let t0 = Instant::now();
        let mut c = Child::new(
            Policy {
                ready: Readiness::Probe,
                ..policy()
            },
            7,
        );
        c.handle(Event::Start, t0);
        c.handle(Event::Spawned { pid: 10 }, t0);
        let t1 = t0 + PROBE_TIMEOUT;
        assert_eq!(
            c.handle(Event::Timer, t1),
            vec![Action::Probe, Action::ArmTimer(t1 + PROBE_TIMEOUT)]
        );
        assert!(matches!(c.state, State::Starting { .. }));
    }

    #[test]
    fn failed_dependency_fails_the_waiting_program() {
        let t0 = Instant::now();
        let mut c = Child::new(policy(), 1);
        let a = c.handle(
            Event::DependencyFailed {
                dependency: "db".into(),
            },
            t0,
        );
        assert!(
            matches!(a.last(), Some(Action::FleetFailed(r)) if r.contains("`db`")),
            "{a:?}"
        );
        assert!(c.is_failed() && c.is_down());
        let mut n = Child::new(
            Policy {
                critical: false,
                ..policy()
            },
            1,
        );
        assert!(n
            .handle(
                Event::DependencyFailed {
                    dependency: "db".into()
                },
                t0
            )
            .is_empty());
        assert!(n.is_failed());
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let t0 = Instant::now();
        let mut c = Child::new(
            Policy {
                grace: Duration::from_secs(u64::MAX / 2),
                ..policy()
            },
            1,
        );
        start(&mut c, t0, 5);
        let a = c.handle(Event::Stop, t0);
        assert!(matches!(a.last(), Some(Action::ArmTimer(t)) if *t > t0));
    }

    #[test]
    fn reports_what_happened_instead_of_logging() {
        let t0 = Instant::now();
        let mut c = Child::new(
            Policy {
                critical: false,
                ..policy()
            },
            1,
        );
        start(&mut c, t0, 10);
        assert_eq!(c.take_happened(), vec![Happened::Started { pid: 10 }]);
        c.handle(Event::Timer, t0 + SETTLE);
        assert_eq!(
            c.take_happened(),
            vec![Happened::Up {
                after: None,
                accepting: false
            }]
        );
        let later = t0 + Duration::from_millis(2500);
        let a = c.handle(
            Event::Exited {
                exit: ExitInfo::Code(3),
                group_alive: false,
            },
            later,
        );
        let h = c.take_happened();
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(
            h[0].to_string(),
            "exited unexpectedly (exit code 3) after 2.5 s"
        );
        assert_eq!(h[0].level(), log::Level::Warn);
        let delay = timer_of(&a).unwrap() - later;
        assert_eq!(h[1], Happened::Restarting { delay });
        assert!(c.take_happened().is_empty(), "taken once");
    }

    #[test]
    fn a_recycle_knows_it_starts_again_and_a_stop_turns_that_off() {
        let t0 = Instant::now();
        let mut c = Child::new(policy(), 1);
        start(&mut c, t0, 10);
        c.handle(Event::Recycle, t0);
        assert!(matches!(
            c.state,
            State::Stopping {
                then: Then::Start,
                ..
            }
        ));
        c.handle(Event::Stop, t0);
        assert!(matches!(
            c.state,
            State::Stopping {
                then: Then::Stay,
                ..
            }
        ));
        c.handle(
            Event::Exited {
                exit: ExitInfo::Signal(libc::SIGTERM),
                group_alive: false,
            },
            t0,
        );
        assert_eq!(c.state, State::Done { exit: None });
        let h = c.take_happened();
        assert_eq!(
            h.last().map(ToString::to_string).as_deref(),
            Some("stopped (killed by SIGTERM)")
        );
        // A stopped program is not started again.
        assert!(c.handle(Event::Start, t0).is_empty());
    }

    #[test]
    fn the_operator_stops_starts_and_restarts() {
        let t0 = Instant::now();
        let exited = |c: &mut Child| {
            c.handle(
                Event::Exited {
                    exit: ExitInfo::Signal(libc::SIGTERM),
                    group_alive: false,
                },
                t0,
            )
        };
        let mut c = Child::new(policy(), 1);
        start(&mut c, t0, 50);
        c.handle(Event::Timer, t0 + SETTLE);
        // Stop: graceful, then held; a crash elsewhere or a timer does not start it.
        let a = c.handle(Event::Hold, t0);
        assert!(a.contains(&Action::Signal {
            pgid: 50,
            sig: libc::SIGTERM
        }));
        exited(&mut c);
        assert_eq!(c.state, State::Held);
        assert_eq!(c.state.name(), "stopped");
        assert!(c.is_down() && !c.is_failed());
        assert!(c.handle(Event::Timer, t0).is_empty());
        assert!(c.handle(Event::Start, t0).is_empty());
        assert_eq!(c.state, State::Held);
        assert_eq!(c.restarts, 0, "a stop is not a restart");
        // Start: back to waiting, for the planner to start when its dependencies allow.
        c.handle(Event::Release, t0);
        assert_eq!(c.state, State::Waiting);
        assert_eq!(c.handle(Event::Start, t0), vec![Action::Spawn]);
        c.handle(Event::Spawned { pid: 60 }, t0);
        // Restart: graceful stop, then waiting, counted as a restart, not a crash.
        c.handle(Event::Restart, t0);
        exited(&mut c);
        assert_eq!((c.state.clone(), c.restarts), (State::Waiting, 1));
        assert_eq!(c.recent_crashes(), 0);
        // A failed program started by the operator forgets its crashes.
        let mut c = Child::new(
            Policy {
                restart: Restart::Never,
                ..policy()
            },
            1,
        );
        start(&mut c, t0, 70);
        c.handle(
            Event::Exited {
                exit: ExitInfo::Code(3),
                group_alive: false,
            },
            t0,
        );
        assert!(c.is_failed());
        c.handle(Event::Restart, t0);
        assert_eq!(c.state, State::Waiting);
        // Stopped while stopping for a restart: held; started while stopping to hold: it
        // starts once down.
        start(&mut c, t0, 80);
        c.handle(Event::Restart, t0);
        c.handle(Event::Hold, t0);
        exited(&mut c);
        assert_eq!(c.state, State::Held);
        c.handle(Event::Release, t0);
        start(&mut c, t0, 90);
        c.handle(Event::Hold, t0);
        c.handle(Event::Release, t0);
        exited(&mut c);
        assert_eq!(c.state, State::Waiting);
        // A landing's stop is not undone by the operator.
        start(&mut c, t0, 100);
        c.handle(Event::Stop, t0);
        c.handle(Event::Restart, t0);
        exited(&mut c);
        assert_eq!(c.state, State::Done { exit: None });
    }
}
